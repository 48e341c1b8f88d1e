//! The single-leader replica: one keyspace's leader or follower, and the
//! decisions that put it in that role.
//!
//! Owns today's sans-IO cores ([`Leader`], [`Follower`]), the lease keeper
//! (leader side) and grantor (follower side), and every role decision the
//! node used to make in tokio code: which role the cluster map names
//! ([`decide_map`]: lead, follow or stay idle; never lead an epoch twice),
//! fencing, switchover pauses, lease renewal ticks, leader-silence and
//! reconnect timers. Outputs leave through the drain order of
//! [`crate::replica`].
//!
//! Must never read a clock, do I/O, use an RNG or let hash-map iteration
//! order reach an output; rules about *when* failover is safe stay in
//! [`crate::failover`] and are only called from here.

use hashbrown::HashSet;

use super::{
    Input, MapView, Now, Output, Outputs, Persist, Refusal, Replica, Reply, RoleStatus, SnapshotStep, TimerKind,
};
use crate::failover::{
    may_lead, EpochHistory, FailoverRpc, FencedNode, LeaseConfig, LeaseGrantor, LeaseKeeper, NodeReport,
};
use crate::repl::msg::STREAM_FROM_SNAPSHOT;
use crate::repl::{Durability, Follower, Leader, LeaderConfig, NodeId, PeerMsg};
use crate::{Epoch, Lsn};

/// A follower drops a stream whose leader said nothing for this long.
pub const LEADER_SILENCE_MS_DEFAULT: u64 = 5_000;
/// First reconnect delay after a stream could not be set up; doubles.
pub const RECONNECT_BACKOFF_MS_MIN: u64 = 100;
/// Longest reconnect delay.
pub const RECONNECT_BACKOFF_MS_MAX: u64 = 2_000;
/// Lease requests per lease period: a lost one costs a quarter of the lease.
pub const LEASE_REQUESTS_PER_LEASE: u64 = 4;
/// Control-plane calls waiting for the log to be durable (fences, pauses).
pub const CONTROL_WAITING_MAX: usize = 64;

/// Settings of one single-leader replica.
#[derive(Debug, Clone)]
pub struct SingleLeaderConfig {
    /// This node.
    pub node_id: NodeId,
    /// Where clients reach this node (sent to followers, named in
    /// `READONLY` errors elsewhere).
    pub client_addr: String,
    /// Members, ascending (this node included); empty: standalone.
    pub members: Vec<NodeId>,
    /// The keyspace's default durability (ack policy, level, timeout).
    pub durability: Durability,
    /// Lease timing (automatic failover); `None`: static roles, no leases.
    pub lease: Option<LeaseConfig>,
    /// See [`LEADER_SILENCE_MS_DEFAULT`].
    pub leader_silence_ms: u64,
}

impl SingleLeaderConfig {
    /// A configuration with the defaults and no leases.
    pub fn new(node_id: NodeId, members: Vec<NodeId>) -> SingleLeaderConfig {
        let mut members = members;
        members.sort_unstable();
        members.dedup();
        SingleLeaderConfig {
            node_id,
            client_addr: format!("node-{node_id}"),
            members,
            durability: Durability::local(),
            lease: None,
            leader_silence_ms: LEADER_SILENCE_MS_DEFAULT,
        }
    }
}

/// What the node read from disk at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The persisted epoch (fence floor).
    pub epoch: Epoch,
    /// The last epoch this node started leading (0: never).
    pub led_epoch: Epoch,
    /// The last LSN in the log.
    pub last_lsn: Lsn,
    /// The last durable LSN.
    pub durable_lsn: Lsn,
    /// Where each epoch starts in the log.
    pub history: EpochHistory,
}

/// Which leadership a replica's role belongs to, so that a map that
/// changes nothing restarts nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKey {
    /// Leading at this epoch.
    Leading(Epoch),
    /// Following this node.
    Following(NodeId),
    /// Idle.
    Idle,
}

/// What a map means for this node's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapDecision {
    /// Nothing to do.
    Stay,
    /// Members changed while this node leads the map's epoch: restart the
    /// streams (same epoch) with the new follower set.
    Restream,
    /// Lead the map's epoch.
    Lead {
        /// The epoch.
        epoch: Epoch,
    },
    /// Follow this node.
    Follow {
        /// The leader.
        leader: NodeId,
    },
    /// Stop leading or following; why.
    Idle {
        /// Why.
        reason: String,
    },
    /// The map is unusable (names a leader that is not a member).
    Invalid(String),
}

/// Puts a node in the role the map names.
///
/// - No leader named, or this node fenced the map's epoch (its persisted
///   epoch is above it): stay as is, waiting for the control plane.
/// - This node is named: lead the map's epoch unless it already does, or
///   unless [`may_lead`] says no (it led this epoch before restarting: its
///   unsynced tail may be on followers), in which case it goes idle and
///   waits to be failed over to a new epoch.
/// - Another node is named: follow it unless it already does.
pub fn decide_map(
    me: NodeId,
    role: RoleKey,
    map: &MapView,
    members_changed: bool,
    durable_epoch: Epoch,
    led_epoch: Epoch,
) -> MapDecision {
    if members_changed && role == RoleKey::Leading(map.epoch) {
        return MapDecision::Restream;
    }
    let Some(leader) = map.leader else { return MapDecision::Stay };
    if durable_epoch > map.epoch {
        return MapDecision::Stay;
    }
    if leader == me {
        if role == RoleKey::Leading(map.epoch) {
            return MapDecision::Stay;
        }
        if !may_lead(map.epoch, durable_epoch, led_epoch) {
            if role == RoleKey::Idle {
                return MapDecision::Stay;
            }
            return MapDecision::Idle {
                reason: format!("this node led epoch {} before restarting; waiting for a new epoch", map.epoch),
            };
        }
        return MapDecision::Lead { epoch: map.epoch };
    }
    if role == RoleKey::Following(leader) {
        return MapDecision::Stay;
    }
    if !map.members.is_empty() && !map.members.contains(&leader) {
        return MapDecision::Invalid(format!("the map names leader {leader}, which is not a member"));
    }
    MapDecision::Follow { leader }
}

struct Leading {
    core: Leader,
    keeper: Option<LeaseKeeper>,
    lease_held: bool,
}

struct Following {
    core: Follower,
    leader: NodeId,
    /// The map epoch it follows at.
    epoch: Epoch,
    /// A connection is open (or being opened).
    connected: bool,
    /// Entries flowed on the current connection (a failure then retries
    /// at once rather than backing off).
    streamed: bool,
    backoff_ms: u64,
    /// When the leader was last heard from (monotonic).
    heard_ms: u64,
    /// When this node started following it (monotonic).
    since_ms: u64,
    /// A snapshot being received: its start LSN.
    snapshot_start: Option<Lsn>,
    /// The history the `Welcome` announced with a snapshot.
    welcome_history: Vec<(Epoch, Lsn)>,
}

enum Role {
    Idle { reason: String, since_ms: u64 },
    Leading(Box<Leading>),
    Following(Box<Following>),
}

/// One keyspace's single-leader replica on one node.
pub struct SingleLeaderReplica {
    config: SingleLeaderConfig,
    durable_epoch: Epoch,
    led_epoch: Epoch,
    last_lsn: Lsn,
    durable_lsn: Lsn,
    first_retained_lsn: Lsn,
    history: EpochHistory,
    grantor: Option<LeaseGrantor>,
    role: Role,
    paused: bool,
    /// Tokens of writes and `WAIT`s the leader core holds.
    waiting: HashSet<u64>,
    /// Fence answers owed once the log is durable to its end.
    fence_answers: Vec<u64>,
    /// Pause answers owed once the log is durable to its end.
    pause_answers: Vec<u64>,
    /// Armed timers, by kind (index of [`TimerKind`]).
    timers: [Option<u64>; 5],
    out: Outputs,
}

fn timer_index(kind: TimerKind) -> usize {
    match kind {
        TimerKind::Leader => 0,
        TimerKind::LeaseRenew => 1,
        TimerKind::LeaseExpiry => 2,
        TimerKind::LeaderSilence => 3,
        TimerKind::Reconnect => 4,
    }
}

const TIMER_KINDS: [TimerKind; 5] =
    [TimerKind::Leader, TimerKind::LeaseRenew, TimerKind::LeaseExpiry, TimerKind::LeaderSilence, TimerKind::Reconnect];

impl SingleLeaderReplica {
    /// A replica that starts idle (waiting for a map). The lease grantor,
    /// when leases are on, behaves as if it had granted a lease at `now`:
    /// a node that just restarted cannot know whether it granted one just
    /// before it stopped.
    pub fn new(config: SingleLeaderConfig, state: DurableState, now: Now) -> SingleLeaderReplica {
        let grantor = config.lease.map(|l| LeaseGrantor::new(l, state.epoch, now.mono_ms));
        SingleLeaderReplica {
            durable_epoch: state.epoch,
            led_epoch: state.led_epoch,
            last_lsn: state.last_lsn,
            durable_lsn: state.durable_lsn,
            first_retained_lsn: 1,
            history: state.history,
            grantor,
            role: Role::Idle {
                reason: "waiting for the control plane to choose a leader".into(),
                since_ms: now.mono_ms,
            },
            paused: false,
            waiting: HashSet::new(),
            fence_answers: Vec::new(),
            pause_answers: Vec::new(),
            timers: [None; 5],
            out: Outputs::default(),
            config,
        }
    }

    /// Static roles (no control plane): lead the persisted epoch when
    /// `leader` is this node (or there are no members), else follow it.
    pub fn start_static(&mut self, now: Now, leader: Option<NodeId>) {
        let me = self.config.node_id;
        match leader {
            _ if self.config.members.is_empty() => self.lead(now, self.durable_epoch, false),
            Some(id) if id == me => self.lead(now, self.durable_epoch, false),
            Some(id) => self.follow(now, id, self.durable_epoch),
            None => {}
        }
        self.arm_timers(now);
    }

    /// The role's key.
    pub fn role_key(&self) -> RoleKey {
        match &self.role {
            Role::Idle { .. } => RoleKey::Idle,
            Role::Leading(l) => RoleKey::Leading(l.core.epoch()),
            Role::Following(f) => RoleKey::Following(f.leader),
        }
    }

    /// The persisted epoch (fence floor).
    pub fn epoch(&self) -> Epoch {
        self.durable_epoch
    }

    /// The last LSN in the local log.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The leader core, when leading (status views).
    pub fn leader(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leading(l) => Some(&l.core),
            _ => None,
        }
    }

    /// The follower core, when following (status views).
    pub fn follower(&self) -> Option<&Follower> {
        match &self.role {
            Role::Following(f) => Some(&f.core),
            _ => None,
        }
    }

    /// Why a write cannot go ahead here now (`None`: it can).
    pub fn write_refusal(&self, now: Now) -> Option<Refusal> {
        if self.paused {
            return Some(Refusal::Paused);
        }
        match &self.role {
            Role::Leading(l) if self.lease_valid(l, now) => None,
            Role::Leading(_) => Some(Refusal::NoLease),
            Role::Following(f) => {
                Some(Refusal::ReadOnly { leader: f.core.leader_client_addr().map(str::to_string), reason: None })
            }
            Role::Idle { reason, .. } => Some(Refusal::ReadOnly { leader: None, reason: Some(reason.clone()) }),
        }
    }

    fn lease_valid(&self, l: &Leading, now: Now) -> bool {
        l.keeper.as_ref().is_none_or(|k| k.is_valid(now.mono_ms))
    }

    /// What this node tells the control plane.
    pub fn report(&self, now: Now) -> NodeReport {
        let since_grant = self.grantor.as_ref().map_or(0, |g| g.since_grant_ms(now.mono_ms));
        let (leading, lease_valid, since_role) = match &self.role {
            Role::Leading(l) => (true, self.lease_valid(l, now), 0),
            Role::Following(f) => (false, false, now.mono_ms.saturating_sub(f.since_ms)),
            Role::Idle { since_ms, .. } => (false, false, now.mono_ms.saturating_sub(*since_ms)),
        };
        NodeReport {
            epoch: self.durable_epoch,
            leading,
            lease_valid,
            since_leader_ms: if leading { 0 } else { since_grant.min(since_role) },
            last_entry_epoch: self.history.last_epoch(self.last_lsn),
            last_lsn: self.last_lsn,
        }
    }

    // ------------------------------------------------------------ roles

    fn apply_map(&mut self, now: Now, map: MapView) {
        let members_changed = !map.members.is_empty() && map.members != self.config.members;
        if members_changed {
            self.config.members = map.members.clone();
        }
        let decision =
            decide_map(self.config.node_id, self.role_key(), &map, members_changed, self.durable_epoch, self.led_epoch);
        match decision {
            MapDecision::Stay | MapDecision::Invalid(_) => {}
            MapDecision::Restream => {
                let epoch = map.epoch;
                self.lead(now, epoch, false);
            }
            MapDecision::Lead { epoch } => {
                if let Some(g) = &mut self.grantor {
                    g.raise_floor(epoch);
                }
                self.lead(now, epoch, true);
            }
            MapDecision::Follow { leader } => {
                if let Some(g) = &mut self.grantor {
                    g.raise_floor(map.epoch);
                }
                self.follow(now, leader, map.epoch);
            }
            MapDecision::Idle { reason } => self.go_idle(now, reason),
        }
    }

    /// Leads `epoch`: persists the epoch start (and, for a promotion, that
    /// this node led it) before anything else of this batch.
    fn lead(&mut self, now: Now, epoch: Epoch, promoted: bool) {
        self.end_role();
        let first_lsn = self.last_lsn + 1;
        self.durable_epoch = self.durable_epoch.max(epoch);
        if promoted {
            self.led_epoch = epoch;
        }
        self.history.record(epoch, first_lsn);
        self.out.push(Output::Persist(Persist::StartEpoch { epoch, first_lsn, led: promoted }));
        let followers: Vec<NodeId> =
            self.config.members.iter().copied().filter(|&id| id != self.config.node_id).collect();
        let mut lc = LeaderConfig::new(self.config.node_id, self.config.client_addr.clone(), followers.clone());
        lc.default_durability = self.config.durability.clone();
        let mut core = Leader::new(lc, epoch, self.last_lsn, self.durable_lsn, now.unix_ms);
        core.set_history(self.history.clone());
        let keeper = self.config.lease.map(|l| LeaseKeeper::new(l, &followers, followers.len() + 1));
        let lease_held = keeper.as_ref().is_none_or(|k| k.is_valid(now.mono_ms));
        self.paused = false;
        self.role = Role::Leading(Box::new(Leading { core, keeper, lease_held }));
        self.out.push(Output::Role(RoleStatus::Leading { epoch, lease_held }));
        if self.config.lease.is_some() {
            self.renew_leases(now);
        }
        self.pump(now);
    }

    fn follow(&mut self, now: Now, leader: NodeId, epoch: Epoch) {
        self.end_role();
        let mut core =
            Follower::new(self.config.node_id, self.durable_epoch, self.last_lsn, self.durable_lsn, now.unix_ms);
        core.set_history(self.history.clone());
        self.role = Role::Following(Box::new(Following {
            core,
            leader,
            epoch,
            connected: false,
            streamed: false,
            backoff_ms: RECONNECT_BACKOFF_MS_MIN,
            heard_ms: now.mono_ms,
            since_ms: now.mono_ms,
            snapshot_start: None,
            welcome_history: Vec::new(),
        }));
        self.out.push(Output::Role(RoleStatus::Following { leader, epoch }));
        self.connect(now);
    }

    fn go_idle(&mut self, now: Now, reason: String) {
        self.end_role();
        self.role = Role::Idle { reason: reason.clone(), since_ms: now.mono_ms };
        self.out.push(Output::Role(RoleStatus::Idle { reason }));
    }

    /// Ends the current role: a leader's waiting writes are told it stopped
    /// leading (in token order), connections close.
    fn end_role(&mut self) {
        let old = std::mem::replace(&mut self.role, Role::Idle { reason: String::new(), since_ms: 0 });
        match old {
            Role::Idle { .. } => {}
            Role::Leading(l) => {
                let mut tokens: Vec<u64> = self.waiting.drain().collect();
                tokens.sort_unstable();
                for token in tokens {
                    self.out.push(Output::Reply { token, reply: Reply::StoppedLeading });
                }
                for &peer in l.core.config().followers.iter() {
                    self.out.push(Output::Disconnect { peer });
                }
                for token in self.pause_answers.drain(..) {
                    self.out.push(Output::Reply {
                        token,
                        reply: Reply::Control(FailoverRpc::Error("this node stopped leading".into())),
                    });
                }
            }
            Role::Following(f) => {
                if f.connected {
                    self.out.push(Output::Disconnect { peer: f.leader });
                }
            }
        }
        self.paused = false;
    }

    fn connect(&mut self, now: Now) {
        let Role::Following(f) = &mut self.role else { return };
        if f.connected {
            return;
        }
        f.connected = true;
        f.streamed = false;
        f.heard_ms = now.mono_ms;
        f.core.set_history(self.history.clone());
        let msg = f.core.subscribe(self.config.client_addr.clone());
        let to = f.leader;
        self.out.push(Output::Connect { to });
        self.out.push(Output::Send { to, msg });
    }

    /// The stream to the leader ended: reconnect at once if entries
    /// flowed, else after a doubling backoff.
    fn stream_ended(&mut self, now: Now) {
        let Role::Following(f) = &mut self.role else { return };
        if !f.connected {
            return;
        }
        f.core.handle_disconnect(now.unix_ms);
        f.connected = false;
        f.snapshot_start = None;
        let delay = if f.streamed { 0 } else { f.backoff_ms };
        f.backoff_ms =
            if f.streamed { RECONNECT_BACKOFF_MS_MIN } else { (f.backoff_ms * 2).min(RECONNECT_BACKOFF_MS_MAX) };
        let leader = f.leader;
        self.out.push(Output::Disconnect { peer: leader });
        self.set_timer(TimerKind::Reconnect, Some(now.mono_ms + delay));
    }

    // ------------------------------------------------------------ leader

    fn renew_leases(&mut self, now: Now) {
        let Role::Leading(l) = &mut self.role else { return };
        let Some(lease) = self.config.lease else { return };
        let msg = PeerMsg::LeaseRequest { epoch: l.core.epoch(), stamp_ms: now.mono_ms };
        for &to in l.core.config().followers.iter() {
            self.out.push(Output::Send { to, msg: msg.clone() });
        }
        let every = (lease.lease_ms / LEASE_REQUESTS_PER_LEASE).max(1);
        self.set_timer(TimerKind::LeaseRenew, Some(now.mono_ms + every));
    }

    /// Drains the leader core: transmits, then releases.
    fn pump(&mut self, now: Now) {
        let Role::Leading(l) = &mut self.role else { return };
        while let Some(t) = l.core.poll_transmit(now.unix_ms) {
            self.out.push(Output::Transmit(t));
        }
        while let Some(r) = l.core.poll_release() {
            self.waiting.remove(&r.token);
            self.out.push(Output::Reply { token: r.token, reply: Reply::Write(r.outcome) });
        }
    }

    fn note_lease(&mut self, now: Now) {
        let Role::Leading(l) = &mut self.role else { return };
        let Some(keeper) = &l.keeper else { return };
        let held = keeper.is_valid(now.mono_ms);
        let until = keeper.valid_until();
        let epoch = l.core.epoch();
        if held != l.lease_held {
            l.lease_held = held;
            self.out.push(Output::Role(RoleStatus::Leading { epoch, lease_held: held }));
        }
        self.set_timer(TimerKind::LeaseExpiry, until.filter(|_| held));
    }

    // ------------------------------------------------------------ peers

    fn peer(&mut self, now: Now, from: NodeId, msg: PeerMsg) {
        match msg {
            PeerMsg::LeaseRequest { epoch, stamp_ms } => self.lease_request(now, from, epoch, stamp_ms),
            PeerMsg::LeaseGrant { stamp_ms } => {
                if let Role::Leading(l) = &mut self.role {
                    if let Some(k) = &mut l.keeper {
                        k.handle_grant(from, stamp_ms);
                    }
                    self.note_lease(now);
                }
            }
            PeerMsg::Subscribe { node_id, epoch, last_lsn, history, .. } => {
                let first_retained = self.first_retained_lsn;
                let reply = match &mut self.role {
                    Role::Leading(l) => {
                        l.core.handle_subscribe(now.unix_ms, node_id, epoch, last_lsn, &history, first_retained)
                    }
                    _ => PeerMsg::Refuse { reason: format!("node {} is not the leader", self.config.node_id) },
                };
                let refused = matches!(reply, PeerMsg::Refuse { .. });
                self.out.push(Output::Send { to: from, msg: reply });
                if refused {
                    self.out.push(Output::Disconnect { peer: from });
                }
                if let Role::Leading(l) = &mut self.role {
                    if !refused {
                        // A new follower can renew the lease at once.
                        if let Some(lease) = self.config.lease {
                            let _ = lease;
                            let msg = PeerMsg::LeaseRequest { epoch: l.core.epoch(), stamp_ms: now.mono_ms };
                            self.out.push(Output::Send { to: from, msg });
                        }
                    }
                }
                self.pump(now);
            }
            PeerMsg::Ack { flushed_lsn, applied_lsn } => {
                if let Role::Leading(l) = &mut self.role {
                    l.core.handle_ack(now.unix_ms, from, flushed_lsn, applied_lsn);
                }
                self.pump(now);
            }
            other => self.follower_receive(now, from, other),
        }
    }

    /// A lease request: a leader of a lower epoch steps down; the grantor
    /// grants or refuses.
    fn lease_request(&mut self, now: Now, from: NodeId, epoch: Epoch, stamp_ms: u64) {
        if let Role::Leading(l) = &self.role {
            if l.core.epoch() >= epoch {
                return;
            }
            self.go_idle(now, format!("node {from} asks for a lease at epoch {epoch}, above this leader's"));
        }
        let Some(g) = &mut self.grantor else {
            // A node without leases refuses the stream that asks for them.
            self.stream_ended(now);
            return;
        };
        if g.handle_request(now.mono_ms, epoch) {
            self.out.push(Output::Send { to: from, msg: PeerMsg::LeaseGrant { stamp_ms } });
        } else if matches!(&self.role, Role::Following(f) if f.leader == from) {
            self.stream_ended(now);
        }
    }

    fn follower_receive(&mut self, now: Now, from: NodeId, msg: PeerMsg) {
        let Role::Following(f) = &mut self.role else { return };
        if f.leader != from || !f.connected {
            return;
        }
        f.heard_ms = now.mono_ms;
        let result: Result<(), String> = match msg {
            PeerMsg::Welcome { leader_id, epoch, leader_client_addr, stream_from, history, diverged_after } => {
                if let Some(kept) = diverged_after {
                    if kept < self.last_lsn {
                        self.out.push(Output::Persist(Persist::RollBack { kept, leader: leader_id, epoch }));
                    }
                    f.core.handle_rolled_back(kept);
                }
                let r = f.core.handle_welcome(now.unix_ms, leader_id, epoch, leader_client_addr, stream_from);
                if r.is_ok() {
                    if epoch > self.durable_epoch {
                        self.durable_epoch = epoch;
                        self.out.push(Output::Persist(Persist::Epoch(epoch)));
                    }
                    if stream_from == STREAM_FROM_SNAPSHOT {
                        f.welcome_history = history;
                    }
                }
                r
            }
            PeerMsg::Entries { epoch, entries, leader_last_lsn, leader_now_ms } => {
                match f.core.handle_entries(now.unix_ms, epoch, &entries, leader_last_lsn, leader_now_ms) {
                    Ok(fresh) => {
                        if !fresh.is_empty() {
                            f.streamed = true;
                            self.last_lsn = fresh.last().map_or(self.last_lsn, |e| e.lsn);
                            for e in fresh {
                                self.history.record(e.epoch, e.lsn);
                            }
                            let fresh = fresh.to_vec();
                            self.out.push(Output::Append(fresh));
                        }
                        if epoch > self.durable_epoch {
                            self.durable_epoch = epoch;
                            self.out.push(Output::Persist(Persist::Epoch(epoch)));
                        }
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            PeerMsg::Heartbeat { epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms } => {
                f.core.handle_heartbeat(now.unix_ms, epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms)
            }
            PeerMsg::SnapshotBegin { epoch, start_lsn } => {
                let r = f.core.handle_snapshot_begin(now.unix_ms, epoch, start_lsn);
                if r.is_ok() {
                    f.snapshot_start = Some(start_lsn);
                    let history = f.welcome_history.clone();
                    self.out.push(Output::Snapshot(SnapshotStep::Begin { start_lsn, epoch, history }));
                }
                r
            }
            PeerMsg::SnapshotChunk { bytes } => {
                if f.snapshot_start.is_some() {
                    self.out.push(Output::Snapshot(SnapshotStep::Chunk(bytes)));
                    Ok(())
                } else {
                    Err("a snapshot chunk outside a snapshot".into())
                }
            }
            PeerMsg::SnapshotEnd { end_lsn } => match f.snapshot_start {
                Some(start_lsn) => {
                    let r = f.core.handle_snapshot_end(now.unix_ms, end_lsn);
                    if r.is_ok() {
                        f.streamed = true;
                        self.out.push(Output::Snapshot(SnapshotStep::End { start_lsn }));
                    }
                    r
                }
                None => Err("a snapshot end outside a snapshot".into()),
            },
            PeerMsg::Refuse { reason } => Err(format!("the leader ended the stream: {reason}")),
            other => Err(format!("unexpected {} in the stream", other.kind())),
        };
        if result.is_err() {
            self.stream_ended(now);
        } else {
            self.poll_ack(now);
        }
    }

    fn poll_ack(&mut self, now: Now) {
        let Role::Following(f) = &mut self.role else { return };
        if f.snapshot_start.is_some() {
            // Nothing to acknowledge until the snapshot is installed.
            return;
        }
        if let Some(ack) = f.core.poll_ack(now.unix_ms) {
            let to = f.leader;
            self.out.push(Output::Send { to, msg: ack });
        }
    }

    // ------------------------------------------------------------ control

    fn control(&mut self, now: Now, token: u64, rpc: FailoverRpc) {
        let reply = match rpc {
            FailoverRpc::Probe => FailoverRpc::Report(self.report(now)),
            FailoverRpc::Fence { old_epoch } => match self.fence(now, token, old_epoch) {
                Some(r) => r,
                None => return,
            },
            FailoverRpc::Pause { epoch } => match &self.role {
                Role::Leading(l) if l.core.epoch() == epoch => {
                    if self.pause_answers.len() >= CONTROL_WAITING_MAX {
                        FailoverRpc::Error("too many pause requests waiting".into())
                    } else {
                        self.paused = true;
                        self.pause_answers.push(token);
                        self.answer_durable();
                        return;
                    }
                }
                _ => FailoverRpc::Error(format!(
                    "node {} is not the leader of epoch {epoch} (epoch {})",
                    self.config.node_id, self.durable_epoch
                )),
            },
            FailoverRpc::Resume { epoch } => {
                if matches!(&self.role, Role::Leading(l) if l.core.epoch() == epoch) {
                    self.paused = false;
                }
                FailoverRpc::Resumed
            }
            other => FailoverRpc::Error(format!("unexpected request {other:?}")),
        };
        self.out.push(Output::Reply { token, reply: Reply::Control(reply) });
    }

    /// Fences `old_epoch` if no grant binds this node any more: persists
    /// the new floor, drops its role, and answers once the log is durable.
    fn fence(&mut self, now: Now, token: u64, old_epoch: Epoch) -> Option<FailoverRpc> {
        let Some(g) = &mut self.grantor else {
            return Some(FailoverRpc::Error("this node runs without automatic failover".into()));
        };
        if g.floor_epoch() <= old_epoch {
            let floor = match g.try_fence(now.mono_ms, old_epoch) {
                Ok(floor) => floor,
                Err(bound) => return Some(FailoverRpc::Bound { remaining_ms: bound.remaining_ms }),
            };
            self.durable_epoch = self.durable_epoch.max(floor);
            self.out.push(Output::Persist(Persist::Epoch(floor)));
            self.go_idle(now, format!("fenced epoch {old_epoch}; a new leader is being chosen"));
        }
        if self.fence_answers.len() >= CONTROL_WAITING_MAX {
            return Some(FailoverRpc::Error("too many fence requests waiting".into()));
        }
        self.fence_answers.push(token);
        self.answer_durable();
        None
    }

    /// Sends the fence and pause answers owed once the log is durable.
    fn answer_durable(&mut self) {
        if self.durable_lsn < self.last_lsn {
            return;
        }
        let last_lsn = self.last_lsn;
        let fenced = FencedNode { last_entry_epoch: self.history.last_epoch(last_lsn), last_lsn };
        for token in self.fence_answers.drain(..) {
            self.out.push(Output::Reply { token, reply: Reply::Control(FailoverRpc::Fenced(fenced)) });
        }
        for token in self.pause_answers.drain(..) {
            self.out.push(Output::Reply { token, reply: Reply::Control(FailoverRpc::Paused { last_lsn }) });
        }
    }

    // ------------------------------------------------------------ timers

    fn set_timer(&mut self, kind: TimerKind, at_ms: Option<u64>) {
        let slot = &mut self.timers[timer_index(kind)];
        if *slot != at_ms {
            *slot = at_ms;
            self.out.push(Output::Timer { kind, at_ms });
        }
    }

    /// Arms the timers the role needs now and disarms the others.
    fn arm_timers(&mut self, now: Now) {
        let mut want: [Option<u64>; 5] = [None; 5];
        match &self.role {
            Role::Leading(l) => {
                // The core's deadlines are on the wall clock; timers on the
                // monotonic one.
                want[timer_index(TimerKind::Leader)] =
                    l.core.poll_timeout().map(|at| now.mono_ms + at.saturating_sub(now.unix_ms));
                want[timer_index(TimerKind::LeaseRenew)] = self.timers[timer_index(TimerKind::LeaseRenew)];
                if l.lease_held {
                    want[timer_index(TimerKind::LeaseExpiry)] =
                        l.keeper.as_ref().and_then(|k| k.valid_until()).filter(|&u| u != u64::MAX);
                }
            }
            Role::Following(f) => {
                if f.connected {
                    want[timer_index(TimerKind::LeaderSilence)] = Some(f.heard_ms + self.config.leader_silence_ms);
                } else {
                    want[timer_index(TimerKind::Reconnect)] =
                        self.timers[timer_index(TimerKind::Reconnect)].or(Some(now.mono_ms));
                }
            }
            Role::Idle { .. } => {}
        }
        for kind in TIMER_KINDS {
            self.set_timer(kind, want[timer_index(kind)]);
        }
    }

    fn timer(&mut self, now: Now, kind: TimerKind) {
        match self.timers[timer_index(kind)] {
            Some(at) if at <= now.mono_ms || kind == TimerKind::Leader => {}
            _ => return,
        }
        self.timers[timer_index(kind)] = None;
        match kind {
            TimerKind::Leader => {
                if let Role::Leading(l) = &mut self.role {
                    l.core.handle_timeout(now.unix_ms);
                }
                self.pump(now);
            }
            TimerKind::LeaseRenew => self.renew_leases(now),
            TimerKind::LeaseExpiry => self.note_lease(now),
            TimerKind::LeaderSilence => {
                if matches!(&self.role, Role::Following(f) if f.connected) {
                    self.stream_ended(now);
                }
            }
            TimerKind::Reconnect => self.connect(now),
        }
    }
}

impl Replica for SingleLeaderReplica {
    fn handle(&mut self, now: Now, input: Input) {
        match input {
            Input::Map(map) => self.apply_map(now, map),
            Input::ClientWrite { token } => {
                let reply = match self.write_refusal(now) {
                    None => Reply::Proceed,
                    Some(r) => Reply::Refused(r),
                };
                self.out.push(Output::Reply { token, reply });
            }
            Input::ClientRead { token } => {
                let reply = match &self.role {
                    Role::Leading(l) if !self.lease_valid(l, now) => Reply::Refused(Refusal::NoLease),
                    _ => Reply::Proceed,
                };
                self.out.push(Output::Reply { token, reply });
            }
            Input::Appended { token, lsn, commit_ms, durability } => {
                self.last_lsn = self.last_lsn.max(lsn);
                match &mut self.role {
                    Role::Leading(l) => {
                        l.core.handle_appended(now.unix_ms, lsn, commit_ms);
                        l.core.wait_for(now.unix_ms, token, lsn, &durability);
                        self.waiting.insert(token);
                        self.pump(now);
                    }
                    _ => self.out.push(Output::Reply { token, reply: Reply::StoppedLeading }),
                }
            }
            Input::Wait { token, lsn, numreplicas, timeout_ms } => match &mut self.role {
                Role::Leading(l) => {
                    l.core.wait_replicas(now.unix_ms, token, lsn.min(l.core.last_lsn()), numreplicas, timeout_ms);
                    self.waiting.insert(token);
                    self.pump(now);
                }
                _ => self.out.push(Output::Reply { token, reply: Reply::StoppedLeading }),
            },
            Input::Peer { from, msg } => self.peer(now, from, msg),
            Input::Disconnected { peer } => match &mut self.role {
                Role::Leading(l) => {
                    l.core.handle_disconnect(now.unix_ms, peer);
                    self.pump(now);
                }
                Role::Following(f) if f.leader == peer => self.stream_ended(now),
                _ => {}
            },
            Input::Timer(kind) => self.timer(now, kind),
            Input::Durable { lsn } => {
                let lsn = lsn.min(self.last_lsn);
                self.durable_lsn = self.durable_lsn.max(lsn);
                match &mut self.role {
                    Role::Leading(l) => {
                        l.core.handle_local_durable(now.unix_ms, lsn);
                        self.pump(now);
                    }
                    Role::Following(f) => {
                        f.core.handle_flushed(lsn.min(f.core.last_lsn()));
                        self.poll_ack(now);
                    }
                    Role::Idle { .. } => {}
                }
                self.answer_durable();
            }
            Input::Applied { lsn, commit_ms } => {
                if let Role::Following(f) = &mut self.role {
                    f.core.handle_applied(lsn.min(f.core.last_lsn()), commit_ms);
                }
                self.poll_ack(now);
            }
            Input::Sent { to, last_lsn, bytes } => {
                if let Role::Leading(l) = &mut self.role {
                    l.core.handle_sent(now.unix_ms, to, last_lsn, bytes);
                }
                self.pump(now);
            }
            Input::SnapshotSent { to, start_lsn } => {
                if let Role::Leading(l) = &mut self.role {
                    l.core.handle_snapshot_sent(now.unix_ms, to, start_lsn);
                }
                self.pump(now);
            }
            Input::SnapshotInstalled { start_lsn } => {
                self.last_lsn = start_lsn;
                self.durable_lsn = start_lsn;
                if let Role::Following(f) = &mut self.role {
                    f.snapshot_start = None;
                    self.history = EpochHistory::from_pairs(std::mem::take(&mut f.welcome_history));
                    self.history.truncate_after(start_lsn);
                    f.core.handle_flushed(start_lsn);
                    f.core.handle_applied(start_lsn, 0);
                }
                self.poll_ack(now);
            }
            Input::Retained { first_lsn } => self.first_retained_lsn = first_lsn,
            Input::Control { token, rpc } => self.control(now, token, rpc),
        }
        self.arm_timers(now);
    }

    fn poll_output(&mut self) -> Option<Output> {
        self.out.pop()
    }

    fn poll_timeout(&self) -> Option<(TimerKind, u64)> {
        TIMER_KINDS.iter().filter_map(|&k| self.timers[timer_index(k)].map(|at| (k, at))).min_by_key(|&(_, at)| at)
    }

    fn role(&self) -> RoleStatus {
        match &self.role {
            Role::Idle { reason, .. } => RoleStatus::Idle { reason: reason.clone() },
            Role::Leading(l) => RoleStatus::Leading { epoch: l.core.epoch(), lease_held: l.lease_held },
            Role::Following(f) => RoleStatus::Following { leader: f.leader, epoch: f.epoch },
        }
    }
}
