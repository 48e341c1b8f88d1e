//! Session guarantees for reads from followers: where may this connection's
//! next read go so that it sees its own writes (read-your-writes), never goes
//! back in time (monotonic reads) and is never older than a bound (bounded
//! staleness)?
//!
//! Pure and sans-IO: a [`Session`] takes `now_ms` and a snapshot of the
//! cluster ([`NodeView`]s) and returns a [`Route`]; the caller (the proxy, a
//! client library, the simulator) does the I/O and reports back what it
//! learned with [`Session::on_write`] and [`Session::on_read_from`]. This
//! module never reads a clock, a socket or a global RNG.
//!
//! What the session remembers:
//! - `last_write_lsn`: the LSN of this session's last write (the leader's
//!   `LASTLSN` after it), for read-your-writes by token;
//! - `highest_seen_lsn`: an upper bound of the newest state any read or write
//!   of this session has observed, for monotonic reads;
//! - `last_write_ms`: when the last write was acknowledged, for the
//!   leader-window strategy.
//!
//! Multi-leader keyspaces have no single log, so an LSN cannot say what a
//! session has written or seen there. Per multi-leader keyspace the session
//! also keeps two version vectors (origin node -> sequence number of that
//! origin's writes): `written`, the writes this session made (for each
//! node it wrote through, that node's own sequence number right after the
//! write), and `seen`, the join of the applied vectors of every node that
//! served it (an upper bound of what its reads observed). A node may serve
//! a read of a key of that keyspace only once its applied vector
//! dominates what the guarantees ask for ([`Session::ml_required`]);
//! [`Session::route_ml_read`] picks such a node, or one to wait on.
//!
//! The session token ([`Session::export_token`]) is `tdm1:<last_write_lsn>:<highest_seen_lsn>`,
//! e.g. `tdm1:42:57`: a version tag and two decimal u64, followed by one
//! field per multi-leader keyspace the session used,
//! `:<keyspace>=<written>/<seen>` with each vector as `node.seq` pairs
//! joined by `,` (e.g. `tdm1:42:57:carts=1.5/1.5,2.3`). Importing merges
//! (takes the maximum of each LSN and the pointwise maximum of each
//! vector), so a token never weakens a session.

use std::collections::BTreeMap;
use std::fmt;

use crate::conflict::VersionVector;
use crate::repl::NodeId;
use crate::Lsn;

/// Version tag that starts every session token.
pub const TOKEN_PREFIX: &str = "tdm1";
/// How long a monotonic read (without token read-your-writes) may wait on
/// a follower to reach the highest LSN the session has seen.
pub const MONOTONIC_WAIT_MS: u64 = 20;
/// Longest token accepted by [`Session::import_token`], in bytes.
pub const TOKEN_BYTES_MAX: usize = 4096;
/// Most multi-leader keyspaces one token may carry.
pub const TOKEN_KEYSPACES_MAX: usize = 64;
/// Most origins in one version vector of a token.
pub const TOKEN_ORIGINS_MAX: usize = 64;

/// The read-your-writes strategy of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ryw {
    /// No read-your-writes: any eligible follower serves.
    Off,
    /// Serve only from a node whose applied LSN ≥ the session's last write;
    /// if none has it, wait on a follower up to `wait_ms` (WAITLSN), then the
    /// leader.
    Token {
        /// Longest wait on a follower before falling back to the leader.
        wait_ms: u64,
    },
    /// Read from the leader for `ms` after each write.
    LeaderWindow {
        /// Length of the window after a write, in milliseconds.
        ms: u64,
    },
}

/// How to pick among eligible followers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// The one with the highest applied LSN (ties: the lowest staleness).
    LeastLag,
    /// Each in turn (per session).
    RoundRobin,
}

/// The guarantees a session asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Read-your-writes strategy.
    pub ryw: Ryw,
    /// Never read from a node behind the highest LSN this session has seen.
    pub monotonic: bool,
    /// Only followers whose time lag (staleness) is within this bound.
    pub max_lag_ms: Option<u64>,
    /// Every read goes to the leader.
    pub strong: bool,
    /// How to spread reads over eligible followers.
    pub balance: Balance,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { ryw: Ryw::Off, monotonic: false, max_lag_ms: None, strong: false, balance: Balance::LeastLag }
    }
}

/// What the caller knows about one node right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// The caller's index of the node; returned in routes.
    pub index: usize,
    /// True for the current leader.
    pub is_leader: bool,
    /// Last LSN the node has applied (on the leader: its last LSN).
    pub applied_lsn: Lsn,
    /// How stale the node's data is, in ms (0 when caught up).
    pub staleness_ms: u64,
    /// False when the node did not answer the last poll or is not streaming.
    pub healthy: bool,
}

/// Where a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A follower, now.
    Node(usize),
    /// A follower after `WAITLSN lsn wait_ms` there; if it returns less than
    /// `lsn`, the leader instead.
    WaitThenNode {
        /// The follower.
        node: usize,
        /// The LSN it must reach.
        lsn: Lsn,
        /// The longest wait.
        wait_ms: u64,
    },
    /// The leader.
    Leader,
}

/// Why a read goes where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A follower meets every requirement.
    FollowerEligible,
    /// A follower will have the session's LSN after a short wait.
    FollowerAfterWait,
    /// The session is `strong`.
    Strong,
    /// Inside the leader window after a write.
    LeaderWindow,
    /// No follower meets the LSN or lag requirements.
    NoEligibleFollower,
    /// There is no healthy follower at all.
    NoFollower,
}

impl Reason {
    /// Short stable name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::FollowerEligible => "eligible",
            Reason::FollowerAfterWait => "after_wait",
            Reason::Strong => "strong",
            Reason::LeaderWindow => "leader_window",
            Reason::NoEligibleFollower => "no_eligible_follower",
            Reason::NoFollower => "no_follower",
        }
    }

    /// Every reason, for metric tables.
    pub const ALL: [Reason; 6] = [
        Reason::FollowerEligible,
        Reason::FollowerAfterWait,
        Reason::Strong,
        Reason::LeaderWindow,
        Reason::NoEligibleFollower,
        Reason::NoFollower,
    ];
}

/// The decision for one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Where it goes.
    pub target: Target,
    /// Why.
    pub reason: Reason,
    /// Healthy followers passed over because they were behind the session's
    /// LSN or beyond `max_lag_ms`: each is a stale read avoided.
    pub stale_skipped: usize,
}

/// A malformed session token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ERR invalid session token {token:?}: {why}; expected {TOKEN_PREFIX}:<last_write_lsn>:<highest_seen_lsn>[:<keyspace>=<written>/<seen>]...")]
pub struct TokenError {
    /// The token as given (cut to 64 characters).
    pub token: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// One client session's routing state.
#[derive(Debug, Clone)]
pub struct Session {
    config: SessionConfig,
    last_write_lsn: Lsn,
    highest_seen_lsn: Lsn,
    last_write_ms: Option<u64>,
    round_robin_next: usize,
    /// Per multi-leader keyspace: what this session wrote and saw there.
    ml: BTreeMap<String, MlProgress>,
}

/// What a session wrote and saw in one multi-leader keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MlProgress {
    /// Per origin, the highest sequence number of the session's own writes
    /// (read-your-writes).
    pub written: VersionVector,
    /// The join of the applied vectors of the nodes that served the
    /// session (monotonic reads); dominates `written`.
    pub seen: VersionVector,
}

/// What the caller knows about one node's progress in one multi-leader
/// keyspace, beside its [`NodeView`].
#[derive(Debug, Clone, Copy)]
pub struct MlNodeView<'a> {
    /// The node (its index, leadership, health, staleness).
    pub node: NodeView,
    /// Its applied version vector of the keyspace (a lower bound: as last
    /// polled or observed).
    pub applied: &'a VersionVector,
}

/// Where a read of a multi-leader key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MlTarget {
    /// A follower, now.
    Node(usize),
    /// A follower after it has applied `required` (`WAITVV key required
    /// wait_ms`); if it has not in time, the leader, which must have it too
    /// (else the read fails with a clear error).
    WaitThenNode {
        /// The follower.
        node: usize,
        /// The vector it must dominate.
        required: VersionVector,
        /// The longest wait.
        wait_ms: u64,
    },
    /// The leader (the node this session's writes go to); it too must
    /// dominate `required` (empty: nothing to check).
    Leader {
        /// The vector it must dominate.
        required: VersionVector,
    },
}

/// The decision for one read of a multi-leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlRoute {
    /// Where it goes.
    pub target: MlTarget,
    /// Why.
    pub reason: Reason,
    /// Healthy followers passed over because their applied vector did not
    /// dominate the session's, or they were beyond `max_lag_ms`.
    pub stale_skipped: usize,
}

impl Session {
    /// A fresh session that has seen nothing.
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            last_write_lsn: 0,
            highest_seen_lsn: 0,
            last_write_ms: None,
            round_robin_next: 0,
            ml: BTreeMap::new(),
        }
    }

    /// The guarantees asked for.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Changes the guarantees; what the session has seen is kept.
    pub fn config_mut(&mut self) -> &mut SessionConfig {
        &mut self.config
    }

    /// LSN of this session's last write (0: none).
    pub fn last_write_lsn(&self) -> Lsn {
        self.last_write_lsn
    }

    /// Highest LSN this session has observed (0: none).
    pub fn highest_seen_lsn(&self) -> Lsn {
        self.highest_seen_lsn
    }

    /// A write was acknowledged at `now_ms` and the leader reported `lsn` as
    /// this connection's last write LSN.
    pub fn on_write(&mut self, now_ms: u64, lsn: Lsn) {
        self.last_write_lsn = self.last_write_lsn.max(lsn);
        self.highest_seen_lsn = self.highest_seen_lsn.max(lsn);
        self.last_write_ms = Some(now_ms);
    }

    /// A read was served by a node whose applied LSN was at most
    /// `node_applied_lsn` when it answered (an upper bound, e.g. its applied
    /// LSN asked right after the read).
    pub fn on_read_from(&mut self, node_applied_lsn: Lsn) {
        self.highest_seen_lsn = self.highest_seen_lsn.max(node_applied_lsn);
    }

    /// The LSN a node must have applied to serve this session.
    pub fn required_lsn(&self) -> Lsn {
        let mut lsn = 0;
        if matches!(self.config.ryw, Ryw::Token { .. }) {
            lsn = self.last_write_lsn;
        }
        if self.config.monotonic {
            lsn = lsn.max(self.highest_seen_lsn);
        }
        lsn
    }

    /// Where the next read goes, given the cluster as known at `now_ms`.
    pub fn route_read(&mut self, now_ms: u64, nodes: &[NodeView]) -> Route {
        let leader = |reason, stale_skipped| Route { target: Target::Leader, reason, stale_skipped };
        if self.config.strong {
            return leader(Reason::Strong, 0);
        }
        if let (Ryw::LeaderWindow { ms }, Some(t)) = (self.config.ryw, self.last_write_ms) {
            if now_ms.saturating_sub(t) < ms {
                return leader(Reason::LeaderWindow, 0);
            }
        }
        let required = self.required_lsn();
        let max_lag_ms = self.config.max_lag_ms;
        let within_lag = move |n: &NodeView| !matches!(max_lag_ms, Some(max) if n.staleness_ms > max);
        let followers = || nodes.iter().filter(|n| !n.is_leader && n.healthy);
        if followers().next().is_none() {
            return leader(Reason::NoFollower, 0);
        }
        let eligible: Vec<&NodeView> = followers().filter(|n| n.applied_lsn >= required && within_lag(n)).collect();
        let stale_skipped = followers().count() - eligible.len();
        if let Some(node) = self.pick(&eligible) {
            return Route { target: Target::Node(node), reason: Reason::FollowerEligible, stale_skipped };
        }
        // Only an LSN requirement can be met by waiting.
        let wait_ms = self.wait_budget_ms();
        if required > 0 && wait_ms > 0 {
            let closest =
                followers().filter(|n| within_lag(n)).max_by_key(|n| (n.applied_lsn, u64::MAX - n.staleness_ms));
            if let Some(n) = closest {
                let target = Target::WaitThenNode { node: n.index, lsn: required, wait_ms };
                return Route { target, reason: Reason::FollowerAfterWait, stale_skipped };
            }
        }
        leader(Reason::NoEligibleFollower, stale_skipped)
    }

    /// How long a read may wait on a follower for the session's LSN: the
    /// token strategy's bound, else [`MONOTONIC_WAIT_MS`] for monotonic reads
    /// (whose LSN comes from what a caught-up follower already had, so a
    /// short wait usually suffices and spares the leader).
    fn wait_budget_ms(&self) -> u64 {
        match self.config.ryw {
            Ryw::Token { wait_ms } => wait_ms,
            _ if self.config.monotonic => MONOTONIC_WAIT_MS,
            _ => 0,
        }
    }

    fn pick(&mut self, eligible: &[&NodeView]) -> Option<usize> {
        match self.config.balance {
            Balance::LeastLag => {
                eligible.iter().max_by_key(|n| (n.applied_lsn, u64::MAX - n.staleness_ms)).map(|n| n.index)
            }
            Balance::RoundRobin => {
                if eligible.is_empty() {
                    return None;
                }
                let n = eligible[self.round_robin_next % eligible.len()].index;
                self.round_robin_next = self.round_robin_next.wrapping_add(1);
                Some(n)
            }
        }
    }

    // ------------------------------------------------ multi-leader keys

    /// A write to a key of multi-leader keyspace `keyspace` was acknowledged
    /// at `now_ms` by node `node`, whose applied vector right after it was
    /// `node_applied` (its own component covers the write).
    pub fn on_ml_write(&mut self, now_ms: u64, keyspace: &str, node: NodeId, node_applied: &VersionVector) {
        let seq = node_applied.get(node);
        let p = self.ml.entry(keyspace.to_string()).or_default();
        p.written.observe(node, seq);
        p.seen.observe(node, seq);
        self.last_write_ms = Some(now_ms);
    }

    /// A read of a key of `keyspace` was served by a node whose applied
    /// vector was `node_applied` right after it (an upper bound of what the
    /// read saw).
    pub fn on_ml_read_from(&mut self, keyspace: &str, node_applied: &VersionVector) {
        self.ml.entry(keyspace.to_string()).or_default().seen.merge(node_applied);
    }

    /// What this session wrote and saw in `keyspace` (none: never used it).
    pub fn ml_progress(&self, keyspace: &str) -> Option<&MlProgress> {
        self.ml.get(keyspace)
    }

    /// The vector a node's applied vector of `keyspace` must dominate to
    /// serve this session: its own writes (read-your-writes by token) joined
    /// with what it saw (monotonic reads).
    pub fn ml_required(&self, keyspace: &str) -> VersionVector {
        let mut required = VersionVector::new();
        if let Some(p) = self.ml.get(keyspace) {
            if matches!(self.config.ryw, Ryw::Token { .. }) {
                required.merge(&p.written);
            }
            if self.config.monotonic {
                required.merge(&p.seen);
            }
        }
        required
    }

    /// Where the next read of a key of multi-leader keyspace `keyspace`
    /// goes: like [`Session::route_read`], with "has applied the session's
    /// LSN" replaced by "its applied vector dominates
    /// [`Session::ml_required`]". The leader is no safer than a follower
    /// here (every node takes writes), so a leader target carries the
    /// requirement too and the caller checks it there.
    pub fn route_ml_read(&mut self, now_ms: u64, keyspace: &str, nodes: &[MlNodeView<'_>]) -> MlRoute {
        let required = self.ml_required(keyspace);
        let leader =
            |reason, stale_skipped, required| MlRoute { target: MlTarget::Leader { required }, reason, stale_skipped };
        if self.config.strong {
            return leader(Reason::Strong, 0, required);
        }
        if let (Ryw::LeaderWindow { ms }, Some(t)) = (self.config.ryw, self.last_write_ms) {
            if now_ms.saturating_sub(t) < ms {
                return leader(Reason::LeaderWindow, 0, required);
            }
        }
        let max_lag_ms = self.config.max_lag_ms;
        let within_lag = move |n: &NodeView| !matches!(max_lag_ms, Some(max) if n.staleness_ms > max);
        let followers = || nodes.iter().filter(|n| !n.node.is_leader && n.node.healthy);
        if followers().next().is_none() {
            return leader(Reason::NoFollower, 0, required);
        }
        let eligible: Vec<NodeView> =
            followers().filter(|n| n.applied.dominates(&required) && within_lag(&n.node)).map(|n| n.node).collect();
        let stale_skipped = followers().count() - eligible.len();
        let refs: Vec<&NodeView> = eligible.iter().collect();
        if let Some(node) = self.pick(&refs) {
            return MlRoute { target: MlTarget::Node(node), reason: Reason::FollowerEligible, stale_skipped };
        }
        let wait_ms = self.wait_budget_ms();
        if !required.0.is_empty() && wait_ms > 0 {
            // The follower missing the fewest of the required writes.
            let missing =
                |a: &VersionVector| -> u64 { required.0.iter().map(|(n, c)| c.saturating_sub(a.get(*n))).sum() };
            let closest = followers()
                .filter(|n| within_lag(&n.node))
                .min_by_key(|n| (missing(n.applied), n.node.staleness_ms, n.node.index));
            if let Some(n) = closest {
                let target = MlTarget::WaitThenNode { node: n.node.index, required, wait_ms };
                return MlRoute { target, reason: Reason::FollowerAfterWait, stale_skipped };
            }
        }
        leader(Reason::NoEligibleFollower, stale_skipped, required)
    }

    /// The session token: `tdm1:<last_write_lsn>:<highest_seen_lsn>`, then
    /// `:<keyspace>=<written>/<seen>` per multi-leader keyspace used.
    pub fn export_token(&self) -> String {
        let mut t = format!("{TOKEN_PREFIX}:{}:{}", self.last_write_lsn, self.highest_seen_lsn);
        for (ks, p) in &self.ml {
            t.push_str(&format!(":{ks}={}/{}", token_vector(&p.written), token_vector(&p.seen)));
        }
        t
    }

    /// Merges a token exported by another session: afterwards this session
    /// requires at least what the other had written and seen. The leader
    /// window does not travel in a token.
    pub fn import_token(&mut self, token: &str) -> Result<(), TokenError> {
        let parsed = parse_token_full(token)?;
        self.last_write_lsn = self.last_write_lsn.max(parsed.last_write_lsn);
        self.highest_seen_lsn = self.highest_seen_lsn.max(parsed.highest_seen_lsn).max(parsed.last_write_lsn);
        for (ks, p) in parsed.ml {
            let mine = self.ml.entry(ks).or_default();
            mine.written.merge(&p.written);
            mine.seen.merge(&p.seen);
            mine.seen.merge(&p.written);
        }
        Ok(())
    }
}

/// A vector as a token writes it: `node.seq` pairs joined by `,`.
fn token_vector(vv: &VersionVector) -> String {
    vv.0.iter().filter(|(_, c)| **c > 0).map(|(n, c)| format!("{n}.{c}")).collect::<Vec<_>>().join(",")
}

/// A whole parsed session token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedToken {
    /// `<last_write_lsn>`.
    pub last_write_lsn: Lsn,
    /// `<highest_seen_lsn>`.
    pub highest_seen_lsn: Lsn,
    /// Per multi-leader keyspace: written and seen vectors.
    pub ml: BTreeMap<String, MlProgress>,
}

/// Parses `tdm1:<last_write_lsn>:<highest_seen_lsn>` (any multi-leader
/// fields are checked and ignored: see [`parse_token_full`]).
pub fn parse_token(token: &str) -> Result<(Lsn, Lsn), TokenError> {
    parse_token_full(token).map(|t| (t.last_write_lsn, t.highest_seen_lsn))
}

/// Parses `tdm1:<last_write_lsn>:<highest_seen_lsn>[:<keyspace>=<written>/<seen>]...`.
pub fn parse_token_full(token: &str) -> Result<ParsedToken, TokenError> {
    let fail = |why| {
        let cut = token.char_indices().take_while(|(i, _)| *i < 64).map(|(_, c)| c).collect();
        Err(TokenError { token: cut, why })
    };
    if token.len() > TOKEN_BYTES_MAX {
        return fail("too long");
    }
    let mut parts = token.split(':');
    if parts.next() != Some(TOKEN_PREFIX) {
        return fail("unknown version tag");
    }
    let decimal = |p: &str| -> Option<u64> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    let (Some(last_write), Some(highest_seen)) = (parts.next().and_then(decimal), parts.next().and_then(decimal))
    else {
        return fail("an LSN is missing or not a decimal u64");
    };
    let mut out = ParsedToken { last_write_lsn: last_write, highest_seen_lsn: highest_seen, ml: BTreeMap::new() };
    for field in parts {
        let Some((ks, vectors)) = field.split_once('=') else {
            return fail("too many fields");
        };
        let name_ok = !ks.is_empty()
            && ks.len() <= crate::keyspace::KEYSPACE_NAME_BYTES_MAX
            && ks.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            return fail("a multi-leader field has an invalid keyspace name");
        }
        if out.ml.len() == TOKEN_KEYSPACES_MAX {
            return fail("more multi-leader keyspaces than TOKEN_KEYSPACES_MAX");
        }
        let Some((w, s)) = vectors.split_once('/') else {
            return fail("a multi-leader field is not <keyspace>=<written>/<seen>");
        };
        let vector = |text: &str| -> Option<VersionVector> {
            let mut vv = VersionVector::new();
            for pair in text.split(',').filter(|p| !p.is_empty()) {
                let (n, c) = pair.split_once('.')?;
                vv.observe(decimal(n)?, decimal(c)?);
            }
            (vv.0.len() <= TOKEN_ORIGINS_MAX).then_some(vv)
        };
        let (Some(written), Some(seen)) = (vector(w), vector(s)) else {
            return fail("a version vector is not <node>.<seq>,.. of decimal u64 (at most TOKEN_ORIGINS_MAX origins)");
        };
        let p = out.ml.entry(ks.to_string()).or_default();
        p.written.merge(&written);
        p.seen.merge(&seen);
    }
    Ok(out)
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            Target::Node(n) => write!(f, "node {n} ({})", self.reason.as_str()),
            Target::WaitThenNode { node, lsn, wait_ms } => {
                write!(f, "node {node} after WAITLSN {lsn} {wait_ms}, else the leader ({})", self.reason.as_str())
            }
            Target::Leader => write!(f, "leader ({})", self.reason.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEADER: usize = 0;

    fn node(index: usize, applied_lsn: Lsn, staleness_ms: u64) -> NodeView {
        NodeView { index, is_leader: index == LEADER, applied_lsn, staleness_ms, healthy: true }
    }

    /// Leader at 100; follower 1 caught up to 100; follower 2 behind at 50.
    fn cluster() -> Vec<NodeView> {
        vec![node(0, 100, 0), node(1, 100, 0), node(2, 50, 900)]
    }

    fn session(f: impl FnOnce(&mut SessionConfig)) -> Session {
        let mut c = SessionConfig::default();
        f(&mut c);
        Session::new(c)
    }

    #[test]
    fn without_guarantees_reads_may_go_to_a_follower_behind_the_own_write() {
        let mut s = session(|c| c.balance = Balance::RoundRobin);
        s.on_write(1000, 100);
        let targets: Vec<Target> = (0..2).map(|_| s.route_read(1000, &cluster()).target).collect();
        assert!(targets.contains(&Target::Node(2)), "{targets:?}");
    }

    #[test]
    fn read_your_writes_by_token_never_reads_from_a_follower_behind_the_write() {
        let mut s = session(|c| {
            c.ryw = Ryw::Token { wait_ms: 0 };
            c.balance = Balance::RoundRobin
        });
        s.on_write(1000, 100);
        for _ in 0..10 {
            let r = s.route_read(1000, &cluster());
            assert_eq!(r.target, Target::Node(1));
            assert_eq!(r.stale_skipped, 1);
        }
    }

    #[test]
    fn read_your_writes_by_token_waits_on_the_closest_follower_then_falls_back_to_the_leader() {
        let mut s = session(|c| c.ryw = Ryw::Token { wait_ms: 50 });
        s.on_write(1000, 120);
        let r = s.route_read(1000, &cluster());
        assert_eq!(r.target, Target::WaitThenNode { node: 1, lsn: 120, wait_ms: 50 });
        assert_eq!(r.reason, Reason::FollowerAfterWait);
        let mut no_wait = session(|c| c.ryw = Ryw::Token { wait_ms: 0 });
        no_wait.on_write(1000, 120);
        let r = no_wait.route_read(1000, &cluster());
        assert_eq!((r.target, r.reason), (Target::Leader, Reason::NoEligibleFollower));
    }

    #[test]
    fn leader_window_reads_from_the_leader_for_the_window_after_a_write() {
        let mut s = session(|c| c.ryw = Ryw::LeaderWindow { ms: 500 });
        assert_eq!(s.route_read(0, &cluster()).target, Target::Node(1), "no write yet: a follower");
        s.on_write(1000, 100);
        assert_eq!(s.route_read(1499, &cluster()).reason, Reason::LeaderWindow);
        assert_eq!(s.route_read(1500, &cluster()).target, Target::Node(1));
    }

    #[test]
    fn monotonic_reads_never_go_to_a_node_behind_the_highest_lsn_seen() {
        let mut s = session(|c| {
            c.monotonic = true;
            c.balance = Balance::RoundRobin
        });
        s.on_read_from(80);
        for _ in 0..10 {
            assert_eq!(s.route_read(0, &cluster()).target, Target::Node(1));
        }
        s.on_read_from(200);
        let r = s.route_read(0, &cluster());
        assert_eq!(r.target, Target::WaitThenNode { node: 1, lsn: 200, wait_ms: MONOTONIC_WAIT_MS });
    }

    #[test]
    fn token_without_a_wait_bound_and_a_follower_behind_goes_to_the_leader() {
        let mut s = session(|c| {
            c.ryw = Ryw::Token { wait_ms: 0 };
            c.monotonic = true
        });
        s.on_write(0, 200);
        assert_eq!(s.route_read(0, &cluster()).reason, Reason::NoEligibleFollower);
    }

    #[test]
    fn bounded_staleness_skips_followers_beyond_max_lag() {
        let mut s = session(|c| {
            c.max_lag_ms = Some(500);
            c.balance = Balance::RoundRobin
        });
        for _ in 0..4 {
            assert_eq!(s.route_read(0, &cluster()).target, Target::Node(1));
        }
        let mut all_lagging = cluster();
        all_lagging[1].staleness_ms = 600;
        let r = s.route_read(0, &all_lagging);
        assert_eq!((r.target, r.reason, r.stale_skipped), (Target::Leader, Reason::NoEligibleFollower, 2));
    }

    #[test]
    fn strong_reads_always_go_to_the_leader() {
        let mut s = session(|c| c.strong = true);
        assert_eq!(s.route_read(0, &cluster()).reason, Reason::Strong);
    }

    #[test]
    fn without_a_healthy_follower_reads_go_to_the_leader() {
        let mut s = session(|_| {});
        let mut nodes = cluster();
        nodes[1].healthy = false;
        nodes[2].healthy = false;
        assert_eq!(s.route_read(0, &nodes).reason, Reason::NoFollower);
    }

    #[test]
    fn least_lag_prefers_the_most_caught_up_follower() {
        let mut s = session(|_| {});
        for _ in 0..3 {
            assert_eq!(s.route_read(0, &cluster()).target, Target::Node(1));
        }
    }

    #[test]
    fn token_round_trip_carries_read_your_writes_to_another_session() {
        let mut a = session(|_| {});
        a.on_write(0, 100);
        a.on_read_from(110);
        let token = a.export_token();
        assert_eq!(token, "tdm1:100:110");
        let mut b = session(|c| c.ryw = Ryw::Token { wait_ms: 0 });
        b.import_token(&token).unwrap();
        assert_eq!((b.last_write_lsn(), b.highest_seen_lsn()), (100, 110));
        assert_eq!(b.route_read(0, &cluster()).target, Target::Node(1));
    }

    #[test]
    fn importing_a_token_never_weakens_a_session() {
        let mut s = session(|_| {});
        s.on_write(0, 500);
        s.import_token("tdm1:3:4").unwrap();
        assert_eq!((s.last_write_lsn(), s.highest_seen_lsn()), (500, 500));
    }

    #[test]
    fn malformed_tokens_are_refused_with_a_clear_error() {
        for bad in ["", "tdm1", "tdm1:1", "tdm2:1:2", "tdm1:x:2", "tdm1:1:2:3", "tdm1:-1:2", "tdm1:+1:2"] {
            let e = parse_token(bad).unwrap_err();
            assert!(e.to_string().contains("invalid session token"), "{bad}: {e}");
        }
        let long = format!("tdm1:1:{}", "9".repeat(TOKEN_BYTES_MAX));
        assert!(parse_token(&long).unwrap_err().to_string().contains("too long"));
        assert_eq!(parse_token("tdm1:0:18446744073709551615"), Ok((0, u64::MAX)));
    }

    // ------------------------------------------------ multi-leader keys

    fn vv(pairs: &[(NodeId, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (n, c) in pairs {
            v.observe(*n, *c);
        }
        v
    }

    /// Leader 0 (node id 1) took the session's write (1, 5); follower 1 has
    /// it, follower 2 does not.
    fn ml_views(vectors: &[VersionVector]) -> Vec<MlNodeView<'_>> {
        vectors.iter().enumerate().map(|(i, applied)| MlNodeView { node: node(i, 0, 0), applied }).collect()
    }

    #[test]
    fn multi_leader_read_your_writes_never_reads_from_a_node_without_the_write() {
        let mut s = session(|c| {
            c.ryw = Ryw::Token { wait_ms: 0 };
            c.balance = Balance::RoundRobin
        });
        s.on_ml_write(0, "carts", 1, &vv(&[(1, 5), (2, 9)]));
        // Only the writer's own component is required, not what it had
        // received from others.
        assert_eq!(s.ml_required("carts"), vv(&[(1, 5)]));
        let vectors = [vv(&[(1, 5)]), vv(&[(1, 5)]), vv(&[(1, 4), (2, 9)])];
        for _ in 0..10 {
            let r = s.route_ml_read(0, "carts", &ml_views(&vectors));
            assert_eq!((r.target, r.stale_skipped), (MlTarget::Node(1), 1));
        }
        // Another keyspace has no requirement.
        assert!(s.ml_required("other").0.is_empty());
    }

    #[test]
    fn multi_leader_read_waits_on_the_closest_node_else_goes_to_the_leader_with_the_requirement() {
        let mut s = session(|c| c.ryw = Ryw::Token { wait_ms: 80 });
        s.on_ml_write(0, "carts", 1, &vv(&[(1, 5)]));
        let vectors = [vv(&[(1, 5)]), vv(&[(1, 2)]), vv(&[(1, 4)])];
        let r = s.route_ml_read(0, "carts", &ml_views(&vectors));
        assert_eq!(r.target, MlTarget::WaitThenNode { node: 2, required: vv(&[(1, 5)]), wait_ms: 80 });
        assert_eq!(r.reason, Reason::FollowerAfterWait);
        let mut no_wait = session(|c| c.ryw = Ryw::Token { wait_ms: 0 });
        no_wait.on_ml_write(0, "carts", 1, &vv(&[(1, 5)]));
        let r = no_wait.route_ml_read(0, "carts", &ml_views(&vectors));
        assert_eq!(r.target, MlTarget::Leader { required: vv(&[(1, 5)]) });
        assert_eq!(r.reason, Reason::NoEligibleFollower);
    }

    #[test]
    fn multi_leader_monotonic_reads_never_go_to_a_node_behind_what_was_seen() {
        let mut s = session(|c| {
            c.monotonic = true;
            c.balance = Balance::RoundRobin
        });
        // A read served by a node that had (1,3),(2,7).
        s.on_ml_read_from("carts", &vv(&[(1, 3), (2, 7)]));
        let vectors = [vv(&[]), vv(&[(1, 3), (2, 6)]), vv(&[(1, 3), (2, 7), (3, 1)])];
        for _ in 0..6 {
            assert_eq!(s.route_ml_read(0, "carts", &ml_views(&vectors)).target, MlTarget::Node(2));
        }
        // Without the guarantee both followers serve.
        let mut off = session(|c| c.balance = Balance::RoundRobin);
        off.on_ml_read_from("carts", &vv(&[(1, 3), (2, 7)]));
        let targets: Vec<MlTarget> =
            (0..2).map(|_| off.route_ml_read(0, "carts", &ml_views(&vectors)).target).collect();
        assert!(targets.contains(&MlTarget::Node(1)), "{targets:?}");
    }

    #[test]
    fn multi_leader_strong_and_leader_window_reads_go_to_the_leader_with_the_requirement() {
        let mut s = session(|c| c.ryw = Ryw::LeaderWindow { ms: 100 });
        s.on_ml_write(1000, "carts", 1, &vv(&[(1, 5)]));
        let vectors = [vv(&[(1, 5)]), vv(&[]), vv(&[])];
        let r = s.route_ml_read(1050, "carts", &ml_views(&vectors));
        assert_eq!((r.target, r.reason), (MlTarget::Leader { required: VersionVector::new() }, Reason::LeaderWindow));
        let mut strong = session(|c| {
            c.strong = true;
            c.ryw = Ryw::Token { wait_ms: 10 }
        });
        strong.on_ml_write(0, "carts", 1, &vv(&[(1, 5)]));
        let r = strong.route_ml_read(0, "carts", &ml_views(&vectors));
        assert_eq!(r.target, MlTarget::Leader { required: vv(&[(1, 5)]) });
    }

    #[test]
    fn multi_leader_token_round_trip_carries_the_vectors_to_another_session() {
        let mut a = session(|_| {});
        a.on_write(0, 100);
        a.on_ml_write(0, "carts", 1, &vv(&[(1, 5)]));
        a.on_ml_read_from("carts", &vv(&[(1, 5), (2, 3)]));
        a.on_ml_write(0, "rev.iews-2", 2, &vv(&[(2, 1)]));
        let token = a.export_token();
        assert_eq!(token, "tdm1:100:100:carts=1.5/1.5,2.3:rev.iews-2=2.1/2.1");
        let mut b = session(|c| {
            c.ryw = Ryw::Token { wait_ms: 0 };
            c.monotonic = true
        });
        b.on_ml_write(0, "carts", 3, &vv(&[(3, 2)]));
        b.import_token(&token).unwrap();
        assert_eq!(b.ml_required("carts"), vv(&[(1, 5), (2, 3), (3, 2)]));
        assert_eq!(b.ml_progress("carts").unwrap().written, vv(&[(1, 5), (3, 2)]));
        assert_eq!(b.ml_required("rev.iews-2"), vv(&[(2, 1)]));
        // Importing an older token never weakens it.
        b.import_token("tdm1:0:0:carts=1.1/").unwrap();
        assert_eq!(b.ml_required("carts"), vv(&[(1, 5), (2, 3), (3, 2)]));
        // Old three-field tokens still parse.
        assert_eq!(parse_token("tdm1:4:5"), Ok((4, 5)));
    }

    #[test]
    fn malformed_multi_leader_token_fields_are_refused_with_a_clear_error() {
        for bad in [
            "tdm1:1:2:carts",
            "tdm1:1:2:carts=1.5",
            "tdm1:1:2:carts=1:5/",
            "tdm1:1:2:carts=x.5/",
            "tdm1:1:2:=1.5/1.5",
            "tdm1:1:2:ca rts=1.5/1.5",
            "tdm1:1:2:carts=1.-5/",
        ] {
            let e = parse_token_full(bad).unwrap_err();
            assert!(e.to_string().contains("invalid session token"), "{bad}: {e}");
        }
        let many: String = (0..=TOKEN_KEYSPACES_MAX).map(|i| format!(":k{i}=/")).collect();
        let e = parse_token_full(&format!("tdm1:0:0{many}")).unwrap_err();
        assert!(e.to_string().contains("TOKEN_KEYSPACES_MAX"), "{e}");
        let origins: Vec<String> = (1..=TOKEN_ORIGINS_MAX as u64 + 1).map(|n| format!("{n}.1")).collect();
        let e = parse_token_full(&format!("tdm1:0:0:k=/{}", origins.join(","))).unwrap_err();
        assert!(e.to_string().contains("TOKEN_ORIGINS_MAX"), "{e}");
    }
}
