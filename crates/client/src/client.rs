//! One client connection: parses its commands, answers the proxy's own
//! commands, and routes the rest. Per connection it keeps its
//! [`Session`] and, lazily, one backend connection per node it used.
//!
//! - writes go to the leader with `LASTLSN` pipelined after them, so the
//!   session learns its token without an extra round trip;
//! - reads are routed by [`Session::route_read`]; with monotonic reads on, `WAITLSN 0 0` is pipelined
//!   after each read so the session learns an upper bound of the state it
//!   saw (for monotonic reads); a token wait pipelines `WAITLSN lsn wait_ms`
//!   before the read and falls back to the leader if it comes back short;
//! - a key of a multi-leader keyspace (known from the topology poll) is
//!   handled the same way with version vectors instead of LSNs: after a
//!   write `WAITVV key - 0` is pipelined instead of `LASTLSN` (the reply is
//!   the writing node's applied vector, whose own component covers the
//!   write), reads are routed by [`Session::route_ml_read`], a wait
//!   pipelines `WAITVV key <vector> <wait_ms>` before the read, and the
//!   leader serves only after the same check (else a `TRYAGAIN` error);
//! - READONLY from the leader, or a leader that cannot be reached, makes the
//!   proxy refresh the topology and retry once on the new leader;
//! - commands that are neither reads nor writes of the data (node commands
//!   such as `INFO`, `WAITLSN`, `ROLE`) go to the leader.
//!
//! Transactions (`MULTI`/`EXEC`/`WATCH`) and blocking or pub/sub commands
//! are refused: they need one backend connection for their whole life.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tandem_core::command::{self, Handler};
use tandem_core::conflict::VersionVector;
use tandem_core::replica::multi_leader::exec::{encode_context, parse_context};
use tandem_core::resp::{self, Frame, Limits, Protocol};
use tandem_core::session::{Balance, MlNodeView, MlTarget, Route, Ryw, Session, SessionConfig, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::backend::{Backend, BackendError};
use crate::metrics::{inc, Metrics};
use crate::topology::{Snapshot, Topology};
use crate::PIPELINE_COMMANDS_MAX;

const NO_LEADER: &str = "CLUSTERDOWN tandem proxy: no node reports role:master; check the nodes given to --nodes";
const SESSION_USAGE: &str = "ERR usage: SESSION SET RYW off|token [wait_ms]|leader-window [ms] | SESSION SET MONOTONIC on|off | SESSION SET MAXLAG <ms>|off | SESSION SET STRONG on|off | SESSION SET BALANCE least-lag|round-robin | SESSION GET | SESSION TOKEN [token]";
/// Default WAITLSN bound for `SESSION SET RYW token` without a number.
const RYW_WAIT_MS_DEFAULT: u64 = 100;
/// Default window for `SESSION SET RYW leader-window` without a number.
const LEADER_WINDOW_MS_DEFAULT: u64 = 1000;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn err(text: impl Into<String>) -> Frame {
    Frame::Error(text.into())
}

fn ok() -> Frame {
    Frame::Simple(Bytes::from_static(b"OK"))
}

fn int_of(f: Option<&Frame>) -> Option<u64> {
    match f {
        Some(Frame::Integer(i)) if *i >= 0 => Some(*i as u64),
        _ => None,
    }
}

/// One client connection's state.
pub struct Client {
    session: Session,
    topology: Arc<Topology>,
    metrics: Arc<Metrics>,
    backends: HashMap<String, Backend>,
    /// Per node (by index): the highest applied LSN this connection has
    /// learned from its own pipelined WAITLSN replies; a lower bound of the
    /// node's applied LSN that is fresher than the last poll.
    /// Forgotten when the leader changes (a demoted leader may cut its log).
    observed_lsn: HashMap<usize, u64>,
    /// The leader `observed_lsn` was learned under.
    observed_leader: Option<usize>,
    /// Per (node index, multi-leader keyspace): the applied vector learned
    /// from this connection's own `WAITVV` replies (fresher than the poll).
    observed_vv: HashMap<(usize, String), VersionVector>,
    quit: bool,
}

impl Client {
    /// A new connection with the proxy's default guarantees.
    pub fn new(config: SessionConfig, topology: Arc<Topology>, metrics: Arc<Metrics>) -> Client {
        inc(&metrics.connections);
        Client {
            session: Session::new(config),
            topology,
            metrics,
            backends: HashMap::new(),
            observed_lsn: HashMap::new(),
            observed_leader: None,
            observed_vv: HashMap::new(),
            quit: false,
        }
    }

    /// This connection's session (token, settings).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// This connection's session, to change settings or import a token.
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Serves the connection until the client closes it or breaks protocol.
    pub async fn serve(mut self, mut socket: TcpStream) {
        let limits = Limits::default();
        let mut rbuf = BytesMut::with_capacity(16 * 1024);
        let mut wbuf = BytesMut::with_capacity(16 * 1024);
        let mut need_bytes = true;
        loop {
            if need_bytes {
                match socket.read_buf(&mut rbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            need_bytes = false;
            let mut handled = 0;
            loop {
                if handled == PIPELINE_COMMANDS_MAX {
                    // Write what we have; the rest of the buffer is parsed
                    // on the next turn, without reading more first.
                    break;
                }
                match resp::parse_command(&mut rbuf, &limits) {
                    Ok(Some(args)) if args.is_empty() => {}
                    Ok(Some(args)) => {
                        let reply = self.handle(args).await;
                        resp::encode(&reply, Protocol::Resp2, &mut wbuf);
                        handled += 1;
                        if self.quit {
                            break;
                        }
                    }
                    Ok(None) => {
                        need_bytes = true;
                        break;
                    }
                    Err(e) => {
                        resp::encode(&e.to_frame(), Protocol::Resp2, &mut wbuf);
                        let _ = socket.write_all(&wbuf).await;
                        return;
                    }
                }
            }
            if socket.write_all(&wbuf).await.is_err() || self.quit {
                return;
            }
            wbuf.clear();
        }
    }

    /// Executes one command as the proxy would for this connection and
    /// returns its reply. `args` must not be empty.
    pub async fn handle(&mut self, args: Vec<Bytes>) -> Frame {
        let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
        match name.as_str() {
            "session" => return self.session_command(&args),
            "ping" if args.len() <= 2 => {
                return args.get(1).map_or(Frame::Simple(Bytes::from_static(b"PONG")), |m| Frame::Bulk(m.clone()))
            }
            "quit" => {
                self.quit = true;
                return ok();
            }
            "hello" => return hello(&args),
            "info" if args.len() == 2 && args[1].eq_ignore_ascii_case(b"proxy") => return self.info_proxy(),
            "multi" | "exec" | "discard" | "watch" | "unwatch" | "subscribe" | "psubscribe" | "monitor" | "blpop"
            | "brpop" => {
                return err(format!(
                    "ERR '{name}' is not supported through tandem proxy; connect to the leader directly"
                ))
            }
            _ => {}
        }
        match command::lookup(&args[0]).map(|s| s.handler) {
            Some(Handler::Read(_)) => self.read(&args).await,
            Some(Handler::Write(_)) => self.write(&args).await,
            _ => self.on_leader(&args).await.map_or_else(|e| e, |mut f| f.swap_remove(0)),
        }
    }

    // ------------------------------------------------------------- writes

    async fn write(&mut self, args: &[Bytes]) -> Frame {
        inc(&self.metrics.writes);
        if let Some(key) = self.ml_key(args) {
            let probe = waitvv(&key, "-", 0);
            return match self.on_leader_pipeline(&[args, &probe]).await {
                Ok(replies) => {
                    match parse_waitvv(replies.get(1)) {
                        Some((ks, node, applied)) => {
                            self.session.on_ml_write(now_ms(), &ks, node, &applied);
                            if let Some(leader) = self.topology.current().leader {
                                self.observe_vv(leader, &ks, &applied);
                            }
                        }
                        // The key is single-leader after all (a longer
                        // single-leader prefix): its token is its LSN.
                        None => {
                            let lastlsn = [Bytes::from_static(b"LASTLSN")];
                            if let Ok(r) = self.on_leader(&lastlsn).await {
                                if let Some(lsn) = int_of(r.first()) {
                                    self.session.on_write(now_ms(), lsn);
                                }
                            }
                        }
                    }
                    replies.into_iter().next().unwrap_or(Frame::Null)
                }
                Err(e) => e,
            };
        }
        let lastlsn = [Bytes::from_static(b"LASTLSN")];
        match self.on_leader_pipeline(&[args, &lastlsn]).await {
            Ok(replies) => {
                if let Some(lsn) = int_of(replies.get(1)) {
                    self.session.on_write(now_ms(), lsn);
                }
                replies.into_iter().next().unwrap_or(Frame::Null)
            }
            Err(e) => e,
        }
    }

    /// Runs one command on the leader; see [`Client::on_leader_pipeline`].
    async fn on_leader(&mut self, args: &[Bytes]) -> Result<Vec<Frame>, Frame> {
        self.on_leader_pipeline(&[args]).await
    }

    /// Runs a pipeline on the leader. On READONLY (the node is no longer the
    /// leader) or when the leader cannot be connected to, refreshes the
    /// topology and retries once. A connection lost after sending is not
    /// retried (a write may have been applied): the client gets the error.
    async fn on_leader_pipeline(&mut self, cmds: &[&[Bytes]]) -> Result<Vec<Frame>, Frame> {
        let mut snap = self.topology.current();
        for attempt in 0..2 {
            if attempt == 1 {
                inc(&self.metrics.retries);
                snap = self.topology.refresh().await;
            }
            let Some(leader) = snap.leader_addr().map(str::to_string) else {
                if attempt == 0 {
                    continue;
                }
                return Err(err(NO_LEADER));
            };
            match self.call(&leader, cmds, Duration::ZERO).await {
                Ok(replies) if is_readonly(replies.first()) && attempt == 0 => continue,
                Ok(replies) => return Ok(replies),
                Err(BackendError::Connect { .. }) if attempt == 0 => continue,
                Err(e) => {
                    inc(&self.metrics.backend_errors);
                    return Err(err(format!("ERR tandem proxy: {e}")));
                }
            }
        }
        Err(err(NO_LEADER))
    }

    async fn call(&mut self, addr: &str, cmds: &[&[Bytes]], extra: Duration) -> Result<Vec<Frame>, BackendError> {
        let mut conn = match self.backends.remove(addr) {
            Some(c) => c,
            None => Backend::connect(addr).await?,
        };
        let replies = conn.call(cmds, extra).await?;
        self.backends.insert(addr.to_string(), conn);
        Ok(replies)
    }

    // -------------------------------------------------------------- reads

    async fn read(&mut self, args: &[Bytes]) -> Frame {
        let snap = self.topology.current();
        if snap.leader.is_none() && snap.nodes.iter().all(|n| n.role != crate::topology::Role::Follower) {
            return err(NO_LEADER);
        }
        if let Some(key) = self.ml_key(args) {
            if let Some(reply) = self.ml_read(args, &key).await {
                return reply;
            }
        }
        if snap.leader != self.observed_leader {
            self.observed_lsn.clear();
            self.observed_leader = snap.leader;
        }
        let mut views = snap.views();
        for v in &mut views {
            v.applied_lsn = v.applied_lsn.max(self.observed_lsn.get(&v.index).copied().unwrap_or(0));
        }
        let route = self.session.route_read(now_ms(), &views);
        self.count_route(&route);
        let applied = [Bytes::from_static(b"WAITLSN"), Bytes::from_static(b"0"), Bytes::from_static(b"0")];
        match route.target {
            Target::Node(i) if !self.session.config().monotonic => {
                // Without monotonic reads the exact LSN this read saw is not
                // needed: the topology's (lower-bound) applied LSN is
                // recorded instead, and the read costs no extra command.
                let addr = snap.nodes[i].addr.clone();
                if let Ok(replies) = self.call(&addr, &[args], Duration::ZERO).await {
                    inc(&self.metrics.reads_follower);
                    self.session.on_read_from(views[i].applied_lsn);
                    return replies.into_iter().next().unwrap_or(Frame::Null);
                }
            }
            Target::Node(i) => {
                let addr = snap.nodes[i].addr.clone();
                if let Ok(replies) = self.call(&addr, &[args, &applied], Duration::ZERO).await {
                    inc(&self.metrics.reads_follower);
                    return self.seen(Some(i), replies, 1);
                }
            }
            Target::WaitThenNode { node, lsn, wait_ms } => {
                inc(&self.metrics.waits);
                let addr = snap.nodes[node].addr.clone();
                let wait =
                    [Bytes::from_static(b"WAITLSN"), Bytes::from(lsn.to_string()), Bytes::from(wait_ms.to_string())];
                let res = self.call(&addr, &[&wait, args, &applied], Duration::from_millis(wait_ms)).await;
                if let Ok(mut replies) = res {
                    if int_of(replies.first()).is_some_and(|got| got >= lsn) {
                        inc(&self.metrics.reads_follower);
                        replies.remove(0);
                        return self.seen(Some(node), replies, 1);
                    }
                }
            }
            Target::Leader => return self.read_on_leader(args, &applied).await,
        }
        inc(&self.metrics.fallbacks_leader);
        self.read_on_leader(args, &applied).await
    }

    async fn read_on_leader(&mut self, args: &[Bytes], applied: &[Bytes]) -> Frame {
        inc(&self.metrics.reads_leader);
        if !self.session.config().monotonic {
            // As for followers: no extra command when nobody needs the LSN.
            return match self.on_leader(args).await {
                Ok(mut replies) => replies.swap_remove(0),
                Err(e) => e,
            };
        }
        match self.on_leader_pipeline(&[args, applied]).await {
            Ok(replies) => self.seen(None, replies, 1),
            Err(e) => e,
        }
    }

    /// Records the applied LSN at `replies[at]` as seen (and, for a
    /// follower, as a lower bound of its applied LSN) and returns the read's
    /// reply (the first).
    fn seen(&mut self, follower: Option<usize>, replies: Vec<Frame>, at: usize) -> Frame {
        if let Some(lsn) = int_of(replies.get(at)) {
            self.session.on_read_from(lsn);
            if let Some(node) = follower {
                let known = self.observed_lsn.entry(node).or_insert(0);
                *known = (*known).max(lsn);
            }
        }
        replies.into_iter().next().unwrap_or(Frame::Null)
    }

    // ------------------------------------------------ multi-leader keys

    /// The first key of `args` if it belongs to a multi-leader keyspace as
    /// far as the topology knows.
    fn ml_key(&self, args: &[Bytes]) -> Option<Bytes> {
        let spec = command::lookup(&args[0])?;
        let key = spec.keys(args).next()?.clone();
        self.topology.current().ml_keyspace_of(&key).is_some().then_some(key)
    }

    fn observe_vv(&mut self, node: usize, keyspace: &str, applied: &VersionVector) {
        self.observed_vv.entry((node, keyspace.to_string())).or_default().merge(applied);
    }

    /// A read of `key`, a key of a multi-leader keyspace. `None`: the node
    /// says the key is not multi-leader (read it as single-leader).
    async fn ml_read(&mut self, args: &[Bytes], key: &Bytes) -> Option<Frame> {
        let snap = self.topology.current();
        let ks = snap.ml_keyspace_of(key)?.to_string();
        let views = snap.views();
        let vectors: Vec<VersionVector> = (0..views.len())
            .map(|i| {
                let mut v = snap.ml_applied(i, &ks);
                if let Some(o) = self.observed_vv.get(&(i, ks.clone())) {
                    v.merge(o);
                }
                v
            })
            .collect();
        let ml_views: Vec<MlNodeView<'_>> =
            views.iter().zip(&vectors).map(|(node, applied)| MlNodeView { node: *node, applied }).collect();
        let route = self.session.route_ml_read(now_ms(), &ks, &ml_views);
        self.metrics.count_reason(route.reason);
        for _ in 0..route.stale_skipped {
            inc(&self.metrics.stale_reads_avoided);
        }
        let monotonic = self.session.config().monotonic;
        let after = waitvv(key, "-", 0);
        let (node, required, wait_ms) = match route.target {
            MlTarget::Node(i) => (Some(i), VersionVector::new(), 0),
            MlTarget::WaitThenNode { node, required, wait_ms } => {
                inc(&self.metrics.waits);
                (Some(node), required, wait_ms)
            }
            MlTarget::Leader { required } => (None, required, self.ml_wait_ms()),
        };
        if let Some(i) = node {
            let addr = snap.nodes[i].addr.clone();
            match self.ml_read_on(&addr, args, key, &required, wait_ms, monotonic.then_some(&after)).await {
                MlRead::Served(frame, seen) => {
                    inc(&self.metrics.reads_follower);
                    self.ml_seen(Some(i), &ks, seen);
                    return Some(frame);
                }
                MlRead::NotMultiLeader => return None,
                MlRead::Behind | MlRead::Failed => inc(&self.metrics.fallbacks_leader),
            }
        }
        // The leader, with the same check: every node takes writes, so the
        // leader has the session's writes only if they reached it.
        inc(&self.metrics.reads_leader);
        let Some(leader_addr) = snap.leader_addr().map(str::to_string) else { return Some(err(NO_LEADER)) };
        let required = self.session.ml_required(&ks);
        let wait_ms = if required.0.is_empty() { 0 } else { self.ml_wait_ms() };
        Some(match self.ml_read_on(&leader_addr, args, key, &required, wait_ms, monotonic.then_some(&after)).await {
            MlRead::Served(frame, seen) => {
                self.ml_seen(snap.leader, &ks, seen);
                frame
            }
            MlRead::NotMultiLeader => return None,
            MlRead::Behind => err(format!(
                "TRYAGAIN tandem: no node had applied this session's writes and reads of multi-leader keyspace '{ks}' (needs {}) within {wait_ms} ms; retry",
                encode_context(&required)
            )),
            MlRead::Failed => {
                inc(&self.metrics.backend_errors);
                err(format!("ERR tandem proxy: the read of keyspace '{ks}' failed on the leader {leader_addr}"))
            }
        })
    }

    /// How long a multi-leader read may wait on the leader for the
    /// session's vector (at least 1 ms: `WAITVV .. 0` would wait forever).
    fn ml_wait_ms(&self) -> u64 {
        match self.session.config().ryw {
            Ryw::Token { wait_ms } => wait_ms.max(1),
            _ => tandem_core::session::MONOTONIC_WAIT_MS,
        }
    }

    /// Records what a multi-leader read saw.
    fn ml_seen(&mut self, node: Option<usize>, ks: &str, seen: Option<VersionVector>) {
        if let Some(seen) = seen {
            if self.session.config().monotonic {
                self.session.on_ml_read_from(ks, &seen);
            }
            if let Some(i) = node {
                self.observe_vv(i, ks, &seen);
            }
        }
    }

    /// Runs one multi-leader read on `addr`: `WAITVV key required wait_ms`
    /// first when `required` is not empty, then the read, then `after`
    /// (the node's vector right after the read) if given.
    async fn ml_read_on(
        &mut self,
        addr: &str,
        args: &[Bytes],
        key: &Bytes,
        required: &VersionVector,
        wait_ms: u64,
        after: Option<&[Bytes; 4]>,
    ) -> MlRead {
        let check = (!required.0.is_empty()).then(|| waitvv(key, &encode_context(required), wait_ms.max(1)));
        let mut cmds: Vec<&[Bytes]> = Vec::with_capacity(3);
        if let Some(c) = &check {
            cmds.push(c);
        }
        cmds.push(args);
        if let Some(a) = after {
            cmds.push(a);
        }
        let Ok(mut replies) = self.call(addr, &cmds, Duration::from_millis(wait_ms)).await else {
            return MlRead::Failed;
        };
        let mut seen = None;
        if check.is_some() {
            let first = replies.remove(0);
            match parse_waitvv(Some(&first)) {
                Some((_, _, applied)) if applied.dominates(required) => seen = Some(applied),
                Some(_) => return MlRead::Behind,
                None => return MlRead::NotMultiLeader,
            }
        }
        if after.is_some() {
            match parse_waitvv(replies.get(1)) {
                Some((_, _, applied)) => seen = Some(applied),
                None => return MlRead::NotMultiLeader,
            }
        }
        MlRead::Served(replies.into_iter().next().unwrap_or(Frame::Null), seen)
    }

    fn count_route(&self, route: &Route) {
        self.metrics.count_reason(route.reason);
        for _ in 0..route.stale_skipped {
            inc(&self.metrics.stale_reads_avoided);
        }
    }

    // ------------------------------------------------- proxy's own commands

    fn info_proxy(&self) -> Frame {
        let mut out = String::new();
        self.metrics.render(&mut out);
        render_topology(&self.topology.current(), &mut out);
        Frame::Bulk(Bytes::from(out))
    }

    fn session_command(&mut self, args: &[Bytes]) -> Frame {
        let words: Vec<String> = args[1..].iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        let c = self.session.config_mut();
        let num = |s: Option<&&str>| s.and_then(|s| s.parse::<u64>().ok());
        match lower.as_slice() {
            ["get"] => return self.session_get(),
            ["token"] => return Frame::Bulk(Bytes::from(self.session.export_token())),
            ["token", _] => {
                return match self.session.import_token(&words[1]) {
                    Ok(()) => ok(),
                    Err(e) => err(e.to_string()),
                }
            }
            ["set", "ryw", "off"] => c.ryw = Ryw::Off,
            ["set", "ryw", "token", rest @ ..] if rest.len() <= 1 => {
                let Some(wait_ms) = num(rest.first()).or(rest.is_empty().then_some(RYW_WAIT_MS_DEFAULT)) else {
                    return err(SESSION_USAGE);
                };
                c.ryw = Ryw::Token { wait_ms }
            }
            ["set", "ryw", "leader-window", rest @ ..] if rest.len() <= 1 => {
                let Some(ms) = num(rest.first()).or(rest.is_empty().then_some(LEADER_WINDOW_MS_DEFAULT)) else {
                    return err(SESSION_USAGE);
                };
                c.ryw = Ryw::LeaderWindow { ms }
            }
            ["set", "monotonic", v @ ("on" | "off")] => c.monotonic = *v == "on",
            ["set", "strong", v @ ("on" | "off")] => c.strong = *v == "on",
            ["set", "maxlag", "off"] => c.max_lag_ms = None,
            ["set", "maxlag", ms] => match ms.parse() {
                Ok(ms) => c.max_lag_ms = Some(ms),
                Err(_) => return err(SESSION_USAGE),
            },
            ["set", "balance", "least-lag"] => c.balance = Balance::LeastLag,
            ["set", "balance", "round-robin"] => c.balance = Balance::RoundRobin,
            _ => return err(SESSION_USAGE),
        }
        ok()
    }

    fn session_get(&self) -> Frame {
        let c = self.session.config();
        let ryw = match c.ryw {
            Ryw::Off => "off".to_string(),
            Ryw::Token { wait_ms } => format!("token {wait_ms}"),
            Ryw::LeaderWindow { ms } => format!("leader-window {ms}"),
        };
        let pairs = [
            ("ryw", ryw),
            ("monotonic", if c.monotonic { "on" } else { "off" }.to_string()),
            ("maxlag", c.max_lag_ms.map_or("off".to_string(), |m| m.to_string())),
            ("strong", if c.strong { "on" } else { "off" }.to_string()),
            ("balance", if c.balance == Balance::LeastLag { "least-lag" } else { "round-robin" }.to_string()),
            ("last_write_lsn", self.session.last_write_lsn().to_string()),
            ("highest_seen_lsn", self.session.highest_seen_lsn().to_string()),
            ("token", self.session.export_token()),
        ];
        Frame::Array(
            pairs.into_iter().flat_map(|(k, v)| [Frame::Bulk(Bytes::from(k)), Frame::Bulk(Bytes::from(v))]).collect(),
        )
    }
}

/// How one multi-leader read on one node went.
enum MlRead {
    /// The read's reply, and the node's applied vector if it was asked.
    Served(Frame, Option<VersionVector>),
    /// The node had not applied the session's vector in time.
    Behind,
    /// The node refused `WAITVV`: the key is not multi-leader.
    NotMultiLeader,
    /// The connection failed.
    Failed,
}

/// `WAITVV key vector timeout_ms`.
fn waitvv(key: &Bytes, vector: &str, timeout_ms: u64) -> [Bytes; 4] {
    [
        Bytes::from_static(b"WAITVV"),
        key.clone(),
        Bytes::from(if vector.is_empty() { "-".to_string() } else { vector.to_string() }),
        Bytes::from(timeout_ms.to_string()),
    ]
}

/// A `WAITVV` reply: keyspace, node id, applied vector.
fn parse_waitvv(f: Option<&Frame>) -> Option<(String, u64, VersionVector)> {
    let Some(Frame::Array(items)) = f else { return None };
    match items.as_slice() {
        [Frame::Bulk(ks), Frame::Integer(node), Frame::Bulk(vv)] if *node >= 0 => {
            Some((String::from_utf8_lossy(ks).into_owned(), *node as u64, parse_context(vv)?))
        }
        _ => None,
    }
}

fn is_readonly(f: Option<&Frame>) -> bool {
    matches!(f, Some(Frame::Error(e)) if e.starts_with("READONLY"))
}

/// `HELLO [2]`: a minimal RESP2 handshake; RESP3 is refused.
fn hello(args: &[Bytes]) -> Frame {
    if args.len() >= 2 && args[1].as_ref() != b"2" {
        return err("NOPROTO tandem proxy speaks RESP2 only");
    }
    let b = |s: &'static str| Frame::Bulk(Bytes::from_static(s.as_bytes()));
    Frame::Array(vec![b("server"), b("tandem-proxy"), b("proto"), Frame::Integer(2), b("role"), b("proxy")])
}

fn render_topology(snap: &Snapshot, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "proxy_leader:{}\r\nproxy_topology_polls:{}\r\n",
        snap.leader_addr().unwrap_or(""),
        snap.generation
    );
    for (i, n) in snap.nodes.iter().enumerate() {
        let _ = write!(
            out,
            "node{i}:addr={},role={:?},applied_lsn={},staleness_ms={},link_up={}\r\n",
            n.addr, n.role, n.applied_lsn, n.staleness_ms, n.link_up as u8
        );
    }
}
