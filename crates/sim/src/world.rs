//! The simulated cluster: one leader, N followers, a network, disks,
//! clients, faults, and the checkers that judge every step.
//!
//! Owns the event loop over virtual time and the ground truth (what is on
//! each disk, applied in each store, connected on each link). It drives the
//! real `tandem_core::repl` cores, the real command execution and the real
//! store, and encodes every peer message with the real codec. Must never
//! let anything but the seed decide a draw, and never iterate a hash map.
//!
//! Node ids: the leader is 1, followers are 2..=N+1 (index `f` is node
//! `f + 2`).

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_core::command::{self, Handler};
use tandem_core::effect::LogEntry;
use tandem_core::repl::leader::ReplicaState;
use tandem_core::repl::msg::STREAM_FROM_SNAPSHOT;
use tandem_core::repl::{
    AckLevel, AckPolicy, Durability, Follower, FollowerState, Leader, LeaderConfig, NodeId, Outcome, PeerMsg, Release,
    Transmit, WireEntry,
};
use tandem_core::resp::Frame;
use tandem_core::script;
use tandem_core::store::{Store, BUCKETS};
use tandem_core::write::Batch;
use tandem_core::{Epoch, Lsn};

use crate::disk::Disk;
use crate::mix::Op;
use crate::rng::{Latency, SimRng};
use crate::schedule::{Coded, Timeline};
use crate::{SimConfig, SimReport};

/// Virtual unix time at the start of every run, so expiries look real.
pub const BASE_MS: u64 = 1_700_000_000_000;
/// The leader's epoch in every run (failover is out of scope here).
const EPOCH: Epoch = 1;
/// Largest snapshot chunk the simulated leader sends.
const SNAPSHOT_CHUNK_BYTES: usize = 4096;
/// Longest a side of a broken connection takes to notice.
const NOTICE_RESET_US_MAX: u64 = 20_000;
/// Reconnect backoff bounds.
const BACKOFF_MS_MIN: u64 = 5;
const BACKOFF_MS_MAX: u64 = 400;
/// Most events one run may process: a runaway loop is a failure, not a hang.
const EVENTS_MAX: u64 = 5_000_000;
/// The leader records its state digest after every `2^DIGEST_SAMPLE_SHIFT`th
/// LSN; followers compare theirs at those LSNs (a digest walks every bucket:
/// sampling keeps a thousand seeds fast).
const DIGEST_SAMPLE_SHIFT: u32 = 2;

type Check = Result<(), String>;

macro_rules! fail {
    ($($arg:tt)*) => { return Err(format!($($arg)*)) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Random clients and faults.
    Active,
    /// Faults stopped; waiting for convergence.
    Drain,
    /// Driven by a scenario test.
    Scripted,
}

#[derive(Debug)]
enum Event {
    Deliver { f: usize, to_leader: bool, conn: u64, bytes: Vec<u8> },
    CloseSide { f: usize, conn: u64, leader_side: bool },
    Connect { f: usize, incarnation: u64 },
    LeaderTimer,
    LeaderFsync { target: Lsn },
    FollowerFsync { f: usize, incarnation: u64, generation: u64, target: Lsn },
    FollowerApply { f: usize, incarnation: u64, generation: u64, upto: Lsn },
    ClientOp,
    Fault,
    Heal { f: usize },
    Restart { f: usize, incarnation: u64 },
    EndActive,
}

impl Coded for Event {
    fn code(&self) -> u64 {
        match self {
            Event::Deliver { f, to_leader, .. } => 1 + ((*f as u64) << 8) + ((*to_leader as u64) << 4),
            Event::CloseSide { f, leader_side, .. } => 2 + ((*f as u64) << 8) + ((*leader_side as u64) << 4),
            Event::Connect { f, .. } => 3 + ((*f as u64) << 8),
            Event::LeaderTimer => 4,
            Event::LeaderFsync { target } => 5 + (target << 8),
            Event::FollowerFsync { f, target, .. } => 6 + ((*f as u64) << 8) + (target << 16),
            Event::FollowerApply { f, upto, .. } => 7 + ((*f as u64) << 8) + (upto << 16),
            Event::ClientOp => 8,
            Event::Fault => 9,
            Event::Heal { f } => 10 + ((*f as u64) << 8),
            Event::Restart { f, .. } => 11 + ((*f as u64) << 8),
            Event::EndActive => 12,
        }
    }
}

/// What the leader core knows about a follower, recomputed independently
/// by the simulator from the calls it made (the checkers' model).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ViewState {
    Disconnected,
    Snapshot,
    Connected,
}

#[derive(Debug, Clone)]
struct ReplicaView {
    /// The connection the leader serves this follower on.
    conn: Option<u64>,
    state: ViewState,
    sent: Lsn,
    flushed: Lsn,
    applied: Lsn,
    /// The follower lost its disk and has not resubscribed: the leader's
    /// knowledge is stale and truth comparisons are skipped.
    disk_lost: bool,
}

impl ReplicaView {
    fn holds(&self, lsn: Lsn, level: AckLevel) -> bool {
        match level {
            AckLevel::Flush => self.flushed >= lsn,
            AckLevel::Apply => self.flushed >= lsn && self.applied >= lsn,
        }
    }
}

struct LeaderNode {
    core: Leader,
    store: Store,
    /// The whole log ever written, index `lsn - 1` (retention only limits
    /// what may be read for streaming).
    log: Vec<WireEntry>,
    commit_ms: Vec<u64>,
    /// Store digest after sampled LSNs (see [`DIGEST_SAMPLE_SHIFT`], and
    /// every snapshot point), index `lsn` (0: empty store).
    digests: Vec<Option<u64>>,
    first_retained: Lsn,
    synced: Lsn,
    fsync_target: Option<Lsn>,
    timer_at_ms: Option<u64>,
    fsync_latency: Latency,
    view: Vec<ReplicaView>,
}

struct FollowerNode {
    id: NodeId,
    up: bool,
    incarnation: u64,
    core: Option<Follower>,
    store: Store,
    disk: Disk,
    seen_epoch: Epoch,
    fsync_target: Option<Lsn>,
    /// The store reflects entries up to here (this incarnation).
    applied: Lsn,
    apply_scheduled: Lsn,
    apply_at_us: u64,
    /// Truth for the `apply` level: applied and not lost since.
    applied_high: Lsn,
    /// After a snapshot: the store is the leader's state only from here.
    consistent_lsn: Lsn,
    conn: Option<u64>,
    backoff_ms: u64,
    snapshot_rx: Option<(Lsn, Vec<Bytes>)>,
    fsync_latency: Latency,
    apply_latency: Latency,
    /// Test knob ([`Sim::set_apply_delay`]): extra delay before received
    /// entries are applied (0 unless set; draws nothing from the seed).
    apply_delay_us: u64,
}

struct Link {
    partitioned_until_us: Option<u64>,
    to_follower: Latency,
    to_leader: Latency,
    /// Per direction (0: to follower, 1: to leader): no overtaking (TCP).
    last_arrival_us: [u64; 2],
    /// The current connection id and whether it is broken.
    conn: Option<(u64, bool)>,
}

#[derive(Debug, Clone)]
enum WaitKind {
    Write(Durability),
    Replicas(usize),
}

#[derive(Debug, Clone)]
struct PendingWait {
    lsn: Lsn,
    kind: WaitKind,
    deadline_ms: Option<u64>,
}

/// A simulated cluster.
pub struct Sim {
    seed: u64,
    config: SimConfig,
    rng: SimRng,
    time: Timeline<Event>,
    phase: Phase,
    drain_deadline_us: u64,
    ops_issued: usize,
    loss_chance: f64,
    fault_gap_us: u64,
    leader: LeaderNode,
    followers: Vec<FollowerNode>,
    links: Vec<Link>,
    next_conn: u64,
    next_token: u64,
    waits: BTreeMap<u64, PendingWait>,
    outcomes: BTreeMap<u64, Outcome>,
    /// When each wait was released (virtual µs), for the lab's latencies.
    released_us: BTreeMap<u64, u64>,
    report: SimReport,
}

fn ids(followers: usize) -> Vec<NodeId> {
    (0..followers).map(|f| f as NodeId + 2).collect()
}

impl Sim {
    /// A cluster for `seed`. With `scripted`, no client or fault is
    /// scheduled: a scenario test drives it.
    pub fn new(seed: u64, config: &SimConfig, scripted: bool) -> Sim {
        Sim::new_inner(seed, config, scripted, false)
    }

    /// Lab constructor: like [`Sim::new`] (same draws from the seed), but
    /// the leader ships with the node's default batch and in-flight limits
    /// instead of the small ones the seed may draw to explore flow control.
    pub fn new_lab(seed: u64, config: &SimConfig) -> Sim {
        Sim::new_inner(seed, config, true, true)
    }

    fn new_inner(seed: u64, config: &SimConfig, scripted: bool, default_flow: bool) -> Sim {
        let mut rng = SimRng::new(seed);
        let followers = config.followers.unwrap_or_else(|| *rng.pick(&[1, 2, 2, 3]));
        let mut leader_config = LeaderConfig::new(1, "sim:1".into(), ids(followers));
        let defaults = (leader_config.batch_bytes_max, leader_config.inflight_bytes_max);
        leader_config.batch_bytes_max = *rng.pick(&[150, 1000, 1 << 20]);
        leader_config.inflight_bytes_max = *rng.pick(&[300, 3000, 8 << 20]);
        if default_flow {
            (leader_config.batch_bytes_max, leader_config.inflight_bytes_max) = defaults;
        }
        leader_config.heartbeat_interval_ms = rng.range(20, 150);
        leader_config.default_durability.level = *rng.pick(&[AckLevel::Flush, AckLevel::Apply]);
        let disk_latency = |rng: &mut SimRng| Latency::random(rng, (50, 1500), (10, 1000), 20_000);
        let leader = LeaderNode {
            core: Leader::new(leader_config, EPOCH, 0, 0, BASE_MS),
            store: Store::new(seed ^ 1),
            log: Vec::new(),
            commit_ms: Vec::new(),
            digests: vec![Some(Store::new(0).digest())],
            first_retained: 1,
            synced: 0,
            fsync_target: None,
            timer_at_ms: None,
            fsync_latency: disk_latency(&mut rng),
            view: vec![
                ReplicaView {
                    conn: None,
                    state: ViewState::Disconnected,
                    sent: 0,
                    flushed: 0,
                    applied: 0,
                    disk_lost: false
                };
                followers
            ],
        };
        let mut nodes = Vec::new();
        let mut links = Vec::new();
        for f in 0..followers {
            nodes.push(FollowerNode {
                id: f as NodeId + 2,
                up: true,
                incarnation: 0,
                core: Some(Follower::new(f as NodeId + 2, 0, 0, 0, BASE_MS)),
                store: Store::new(seed ^ (f as u64 + 2)),
                disk: Disk::new(),
                seen_epoch: 0,
                fsync_target: None,
                applied: 0,
                apply_scheduled: 0,
                apply_at_us: 0,
                applied_high: 0,
                consistent_lsn: 0,
                conn: None,
                backoff_ms: BACKOFF_MS_MIN,
                snapshot_rx: None,
                fsync_latency: disk_latency(&mut rng),
                apply_latency: Latency::random(&mut rng, (0, 300), (1, 500), 10_000),
                apply_delay_us: 0,
            });
            let net = |rng: &mut SimRng| Latency::random(rng, (20, 3000), (5, 2000), 30_000);
            links.push(Link {
                partitioned_until_us: None,
                to_follower: net(&mut rng),
                to_leader: net(&mut rng),
                last_arrival_us: [0, 0],
                conn: None,
            });
        }
        let faults = config.faults && !scripted;
        let loss_chance = if faults { *rng.pick(&[0.0, 0.001, 0.005, 0.02]) } else { 0.0 };
        let fault_gap_us = rng.range(30_000, 300_000);
        let mut sim = Sim {
            seed,
            config: config.clone(),
            rng,
            time: Timeline::new(config.verbose, config.keep_trace_tail),
            phase: if scripted { Phase::Scripted } else { Phase::Active },
            drain_deadline_us: u64::MAX,
            ops_issued: 0,
            loss_chance,
            fault_gap_us,
            leader,
            followers: nodes,
            links,
            next_conn: 1,
            next_token: 1,
            waits: BTreeMap::new(),
            outcomes: BTreeMap::new(),
            released_us: BTreeMap::new(),
            report: SimReport { seed, followers, ..SimReport::default() },
        };
        for f in 0..followers {
            let delay = sim.rng.range(0, 2000);
            sim.schedule(delay, Event::Connect { f, incarnation: 0 });
        }
        if !scripted {
            sim.schedule(0, Event::ClientOp);
            if faults {
                let gap = sim.rng.exp(sim.fault_gap_us);
                sim.schedule(gap, Event::Fault);
            }
        }
        sim
    }

    // ------------------------------------------------------------ plumbing

    fn now_ms(&self) -> u64 {
        BASE_MS + self.time.now_us() / 1000
    }

    fn schedule(&mut self, delay_us: u64, event: Event) {
        self.time.schedule(delay_us, event);
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        self.time.trace(line);
    }

    fn mix(&mut self, x: u64) {
        self.time.mix(x);
    }

    /// The recent trace lines (when kept), for a failure report.
    pub fn trace_tail(&self) -> Vec<String> {
        self.time.tail()
    }

    /// Processes one event; `Ok(false)` when the queue is empty.
    fn step(&mut self) -> Result<bool, String> {
        let Some(event) = self.time.pop(EVENTS_MAX)? else { return Ok(false) };
        self.handle(event)?;
        self.report.events = self.time.events();
        self.report.trace_hash = self.time.hash();
        self.check_invariants()?;
        Ok(true)
    }

    fn handle(&mut self, event: Event) -> Check {
        match event {
            Event::Deliver { f, to_leader, conn, bytes } => self.deliver(f, to_leader, conn, &bytes),
            Event::CloseSide { f, conn, leader_side } => self.close_side(f, conn, leader_side),
            Event::Connect { f, incarnation } => self.connect(f, incarnation),
            Event::LeaderTimer => {
                self.leader.timer_at_ms = None;
                let now = self.now_ms();
                self.leader.core.handle_timeout(now);
                self.pump_leader()
            }
            Event::LeaderFsync { target } => self.leader_fsync_done(target),
            Event::FollowerFsync { f, incarnation, generation, target } => {
                self.follower_fsync_done(f, incarnation, generation, target)
            }
            Event::FollowerApply { f, incarnation, generation, upto } => {
                self.follower_apply(f, incarnation, generation, upto)
            }
            Event::ClientOp => self.client_op(),
            Event::Fault => self.fault(),
            Event::Heal { f } => {
                if self.links[f].partitioned_until_us.is_some_and(|until| until <= self.time.now_us()) {
                    self.links[f].partitioned_until_us = None;
                    self.trace(|| format!("heal link to node {}", f + 2));
                }
                Ok(())
            }
            Event::Restart { f, incarnation } => {
                if !self.followers[f].up && self.followers[f].incarnation == incarnation {
                    self.restart_follower(f);
                }
                Ok(())
            }
            Event::EndActive => {
                self.start_drain();
                Ok(())
            }
        }
    }

    // ------------------------------------------------------------ network

    fn send(&mut self, f: usize, to_leader: bool, conn: u64, msg: &PeerMsg) {
        let link = &self.links[f];
        if link.conn != Some((conn, false)) {
            return; // a dead socket swallows writes
        }
        let partitioned = link.partitioned_until_us.is_some();
        if partitioned || (self.loss_chance > 0.0 && self.rng.chance(self.loss_chance)) {
            self.trace(|| format!("link {}: {} lost, connection {conn} resets", f + 2, msg.kind()));
            self.break_conn(f);
            return;
        }
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        self.report.messages += 1;
        let dir = to_leader as usize;
        let latency = if to_leader { self.links[f].to_leader } else { self.links[f].to_follower };
        let arrive = (self.time.now_us() + latency.sample(&mut self.rng)).max(self.links[f].last_arrival_us[dir]);
        self.links[f].last_arrival_us[dir] = arrive;
        self.schedule(arrive - self.time.now_us(), Event::Deliver { f, to_leader, conn, bytes });
    }

    fn break_conn(&mut self, f: usize) {
        let Some((conn, false)) = self.links[f].conn else { return };
        self.links[f].conn = Some((conn, true));
        self.report.resets += 1;
        let d1 = self.rng.range(0, NOTICE_RESET_US_MAX);
        let d2 = self.rng.range(0, NOTICE_RESET_US_MAX);
        self.schedule(d1, Event::CloseSide { f, conn, leader_side: true });
        self.schedule(d2, Event::CloseSide { f, conn, leader_side: false });
    }

    fn close_side(&mut self, f: usize, conn: u64, leader_side: bool) -> Check {
        let now = self.now_ms();
        if leader_side {
            if self.leader.view[f].conn == Some(conn) {
                self.trace(|| format!("leader: connection {conn} to node {} closed", f + 2));
                self.leader.core.handle_disconnect(now, f as NodeId + 2);
                let v = &mut self.leader.view[f];
                v.conn = None;
                v.state = ViewState::Disconnected;
                self.pump_leader()?;
            }
        } else if self.followers[f].conn == Some(conn) {
            self.trace(|| format!("node {}: connection {conn} closed", f + 2));
            self.follower_lost_connection(f);
        }
        Ok(())
    }

    fn follower_lost_connection(&mut self, f: usize) {
        let now = self.now_ms();
        let node = &mut self.followers[f];
        node.conn = None;
        node.snapshot_rx = None;
        if let Some(core) = node.core.as_mut() {
            core.handle_disconnect(now);
        }
        let backoff = node.backoff_ms;
        node.backoff_ms = (backoff * 2).min(BACKOFF_MS_MAX);
        let incarnation = node.incarnation;
        let jitter = self.rng.range(0, backoff * 500);
        self.schedule(backoff * 1000 + jitter, Event::Connect { f, incarnation });
    }

    fn connect(&mut self, f: usize, incarnation: u64) -> Check {
        let node = &self.followers[f];
        if !node.up || node.incarnation != incarnation || node.conn.is_some() {
            return Ok(());
        }
        if self.links[f].partitioned_until_us.is_some() {
            self.trace(|| format!("node {}: connect fails (partitioned)", f + 2));
            self.follower_lost_connection(f);
            return Ok(());
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        self.links[f].conn = Some((conn, false));
        self.followers[f].conn = Some(conn);
        let msg = self.followers[f].core.as_ref().expect("up").subscribe(format!("sim:{}", f + 2));
        self.trace(|| format!("node {}: connection {conn}: {msg:?}", f + 2));
        self.send(f, true, conn, &msg);
        Ok(())
    }

    fn deliver(&mut self, f: usize, to_leader: bool, conn: u64, bytes: &[u8]) -> Check {
        if self.links[f].conn != Some((conn, false)) {
            return Ok(());
        }
        let msg = match PeerMsg::decode(bytes) {
            Ok(msg) => msg,
            Err(e) => fail!("a message encoded by the core does not decode: {e}"),
        };
        if to_leader {
            self.leader_receive(f, conn, msg)
        } else {
            if !self.followers[f].up || self.followers[f].conn != Some(conn) {
                return Ok(());
            }
            self.follower_receive(f, conn, msg)
        }
    }

    // ------------------------------------------------------------ leader

    fn leader_receive(&mut self, f: usize, conn: u64, msg: PeerMsg) -> Check {
        let now = self.now_ms();
        let id = f as NodeId + 2;
        match msg {
            PeerMsg::Subscribe { node_id, epoch, last_lsn, history, .. } => {
                if node_id != id {
                    fail!("node {id} subscribed as node {node_id}");
                }
                let first_retained = self.leader.first_retained;
                let reply = self.leader.core.handle_subscribe(now, id, epoch, last_lsn, &history, first_retained);
                self.trace(|| format!("leader: subscribe from {id} last_lsn {last_lsn} -> {reply:?}"));
                let v = &mut self.leader.view[f];
                v.conn = Some(conn);
                v.disk_lost = false;
                match &reply {
                    PeerMsg::Welcome { stream_from, .. } if *stream_from == STREAM_FROM_SNAPSHOT => {
                        if last_lsn + 1 >= first_retained {
                            fail!(
                                "node {id} at lsn {last_lsn} got a snapshot though the log holds lsn {first_retained}"
                            );
                        }
                        *v = ReplicaView { state: ViewState::Snapshot, sent: 0, flushed: 0, applied: 0, ..v.clone() };
                    }
                    PeerMsg::Welcome { stream_from, .. } => {
                        if *stream_from != last_lsn + 1 {
                            fail!("node {id} at lsn {last_lsn} welcomed to stream from {stream_from}");
                        }
                        v.state = ViewState::Connected;
                        v.sent = last_lsn;
                        v.flushed = v.flushed.min(last_lsn);
                        v.applied = v.applied.min(last_lsn);
                    }
                    other => fail!("leader refused node {id} at lsn {last_lsn}: {other:?}"),
                }
                self.send(f, false, conn, &reply);
                self.pump_leader()
            }
            PeerMsg::Ack { flushed_lsn, applied_lsn } => {
                let v = &mut self.leader.view[f];
                if v.conn != Some(conn) {
                    fail!("ack from node {id} on connection {conn}, which the leader does not serve it on");
                }
                if v.state == ViewState::Connected {
                    if flushed_lsn > v.sent || applied_lsn > v.sent {
                        fail!(
                            "node {id} acked flushed {flushed_lsn} applied {applied_lsn} but was sent up to {}",
                            v.sent
                        );
                    }
                    v.flushed = v.flushed.max(flushed_lsn);
                    v.applied = v.applied.max(applied_lsn);
                }
                self.leader.core.handle_ack(now, id, flushed_lsn, applied_lsn);
                self.pump_leader()
            }
            PeerMsg::Refuse { reason } => fail!("node {id} refused the leader's stream: {reason}"),
            other => fail!("leader received a follower-bound message from node {id}: {other:?}"),
        }
    }

    /// Drains the leader's outputs and re-arms its timer.
    fn pump_leader(&mut self) -> Check {
        loop {
            let now = self.now_ms();
            let Some(t) = self.leader.core.poll_transmit(now) else { break };
            self.execute_transmit(t)?;
        }
        while let Some(release) = self.leader.core.poll_release() {
            self.check_release(&release)?;
            self.mix(release.token);
            self.trace(|| format!("leader: release {release:?}"));
            self.outcomes.insert(release.token, release.outcome);
            self.released_us.insert(release.token, self.time.now_us());
        }
        if let Some(at_ms) = self.leader.core.poll_timeout() {
            if !matches!(self.leader.timer_at_ms, Some(armed) if armed <= at_ms) {
                self.leader.timer_at_ms = Some(at_ms);
                let at_us = at_ms.saturating_sub(BASE_MS) * 1000;
                self.schedule(at_us.saturating_sub(self.time.now_us()), Event::LeaderTimer);
            }
        }
        Ok(())
    }

    fn execute_transmit(&mut self, t: Transmit) -> Check {
        let now = self.now_ms();
        match t {
            Transmit::Entries { to, from_lsn, max_bytes } => {
                let f = (to - 2) as usize;
                let v = self.leader.view[f].clone();
                let Some(conn) = v.conn.filter(|_| v.state == ViewState::Connected) else {
                    fail!("entries for node {to}, which the leader should not think connected: {v:?}");
                };
                if from_lsn != v.sent + 1 {
                    fail!("entries for node {to} from lsn {from_lsn}, but lsn {} was sent last", v.sent);
                }
                if from_lsn < self.leader.first_retained {
                    fail!(
                        "entries for node {to} from lsn {from_lsn}, already truncated (retained from {})",
                        self.leader.first_retained
                    );
                }
                let last = self.leader.core.last_lsn();
                let mut entries = Vec::new();
                let mut payload_bytes = 0;
                let mut lsn = from_lsn;
                while lsn <= last
                    && (entries.is_empty()
                        || payload_bytes + self.leader.log[lsn as usize - 1].payload.len() <= max_bytes)
                {
                    let e = self.leader.log[lsn as usize - 1].clone();
                    payload_bytes += e.payload.len();
                    entries.push(e);
                    lsn += 1;
                }
                let sent_to = lsn - 1;
                let msg = PeerMsg::Entries { epoch: EPOCH, entries, leader_last_lsn: last, leader_now_ms: now };
                let mut encoded = Vec::new();
                msg.encode(&mut encoded);
                self.trace(|| format!("leader: entries {from_lsn}..={sent_to} to {to} ({} bytes)", encoded.len()));
                self.send(f, false, conn, &msg);
                self.leader.core.handle_sent(now, to, sent_to, encoded.len());
                self.leader.view[f].sent = sent_to;
            }
            Transmit::Snapshot { to } => {
                let f = (to - 2) as usize;
                let v = self.leader.view[f].clone();
                let Some(conn) = v.conn.filter(|_| v.state == ViewState::Snapshot) else {
                    fail!("snapshot for node {to}, which is not waiting for one: {v:?}");
                };
                let start_lsn = self.leader.core.last_lsn();
                if self.leader.digests[start_lsn as usize].is_none() {
                    self.leader.digests[start_lsn as usize] = Some(self.leader.store.digest());
                }
                self.report.snapshots += 1;
                self.trace(|| format!("leader: snapshot at lsn {start_lsn} to {to}"));
                self.send(f, false, conn, &PeerMsg::SnapshotBegin { epoch: EPOCH, start_lsn });
                let mut chunk = Vec::new();
                for bucket in 0..BUCKETS {
                    self.leader.store.encode_bucket(bucket, &mut chunk);
                    if chunk.len() >= SNAPSHOT_CHUNK_BYTES || (bucket == BUCKETS - 1 && !chunk.is_empty()) {
                        let bytes = Bytes::from(std::mem::take(&mut chunk));
                        self.send(f, false, conn, &PeerMsg::SnapshotChunk { bytes });
                    }
                }
                self.send(f, false, conn, &PeerMsg::SnapshotEnd { end_lsn: start_lsn });
                self.leader.core.handle_snapshot_sent(now, to, start_lsn);
                let v = &mut self.leader.view[f];
                v.state = ViewState::Connected;
                v.sent = start_lsn;
            }
            Transmit::Heartbeat { to, msg } => {
                let f = (to - 2) as usize;
                let v = &self.leader.view[f];
                let Some(conn) = v.conn.filter(|_| v.state == ViewState::Connected) else {
                    fail!("heartbeat for node {to}, which the leader should not think connected");
                };
                self.trace(|| format!("leader: heartbeat to {to}"));
                self.send(f, false, conn, &msg);
            }
        }
        Ok(())
    }

    fn leader_fsync_start(&mut self) {
        if self.leader.fsync_target.is_some() || self.leader.synced == self.leader.core.last_lsn() {
            return;
        }
        let target = self.leader.core.last_lsn();
        self.leader.fsync_target = Some(target);
        let delay = self.leader.fsync_latency.sample(&mut self.rng);
        self.schedule(delay, Event::LeaderFsync { target });
    }

    fn leader_fsync_done(&mut self, target: Lsn) -> Check {
        self.leader.synced = target;
        self.leader.fsync_target = None;
        let now = self.now_ms();
        self.leader.core.handle_local_durable(now, target);
        self.trace(|| format!("leader: durable to {target}"));
        self.leader_fsync_start();
        self.pump_leader()
    }

    /// Runs a write command on the leader. Returns its LSN, or `None` if it
    /// changed nothing.
    fn leader_execute(&mut self, args: &[Bytes]) -> Result<Option<Lsn>, String> {
        let run = write_fn(args)?;
        let now = self.now_ms();
        let mut batch = Batch::new(tandem_core::write::ENTRY_PAYLOAD_BYTES_MAX);
        let reply = tandem_core::write::execute(run, &mut self.leader.store, now, args, &mut batch);
        self.count_error(&reply);
        let effects = batch.take_effects();
        self.trace(|| {
            format!("client: {:?} -> {reply:?}", args.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>())
        });
        if effects.is_empty() {
            self.report.noop_writes += 1;
            return Ok(None);
        }
        Ok(Some(self.leader_commit(effects)))
    }

    /// Runs one operation of the mix on the leader the way the node does:
    /// a command alone (`write::execute`), a transaction's commands on one
    /// batch (`write::run` each, all undone if one is refused), a script
    /// through the real Lua runner. Whatever effects remain are ONE entry.
    /// Returns its LSN, or `None` if nothing changed.
    fn leader_run_op(&mut self, op: &Op) -> Result<Option<Lsn>, String> {
        let words = |c: &[String]| c.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect::<Vec<Bytes>>();
        let now = self.now_ms();
        let mut batch = Batch::new(tandem_core::write::ENTRY_PAYLOAD_BYTES_MAX);
        match op {
            Op::Command(c) => return self.leader_execute(&words(c)),
            Op::Transaction(commands) => {
                let mut replies = Vec::new();
                for c in commands {
                    let args = words(c);
                    let run = write_fn(&args)?;
                    let reply = tandem_core::write::run(run, &mut self.leader.store, now, &args, &mut batch);
                    self.count_error(&reply);
                    replies.push(reply);
                    if batch.refusal().is_some() {
                        batch.rollback(&mut self.leader.store);
                        break;
                    }
                }
                self.trace(|| format!("client: MULTI {commands:?} EXEC -> {replies:?}"));
                if !batch.is_empty() {
                    self.report.transactions += 1;
                }
            }
            Op::Script { body, keys, argv } => {
                let sha = script::sha1_hex(body.as_bytes());
                let key_check = |_: &command::CommandSpec, _: &[Bytes]| Ok(());
                let env = script::Env {
                    now_ms: now,
                    seed: self.rng.next_u64(),
                    key_check: &key_check,
                    interrupt: std::sync::Arc::new(|| None),
                };
                let target = script::Target::Write { store: &mut self.leader.store, batch: &mut batch };
                let out = script::run(body.as_bytes(), &sha, &words(keys), &words(argv), target, &env);
                self.report.scripts += 1;
                self.count_error(&out.reply);
                if out.failed && !batch.is_empty() {
                    fail!("script {sha} failed ({:?}) but left {} effects", out.reply, batch.effects().len());
                }
                self.trace(|| format!("client: EVAL {sha} {keys:?} {argv:?} -> {:?}", out.reply));
            }
        }
        let effects = batch.take_effects();
        if effects.is_empty() {
            self.report.noop_writes += 1;
            return Ok(None);
        }
        Ok(Some(self.leader_commit(effects)))
    }

    fn count_error(&mut self, reply: &Frame) {
        if matches!(reply, Frame::Error(_)) {
            self.report.error_replies += 1;
        }
    }

    fn leader_commit(&mut self, effects: Vec<tandem_core::effect::Effect>) -> Lsn {
        let now = self.now_ms();
        let lsn = self.leader.core.last_lsn() + 1;
        let entry = LogEntry { lsn, epoch: EPOCH, commit_ms: now, effects };
        let mut payload = Vec::new();
        entry.encode_payload(&mut payload);
        self.leader.log.push(WireEntry { lsn, epoch: EPOCH, payload: Bytes::from(payload) });
        self.leader.commit_ms.push(now);
        let sampled = lsn.trailing_zeros() >= DIGEST_SAMPLE_SHIFT;
        self.leader.digests.push(sampled.then(|| self.leader.store.digest()));
        self.leader.core.handle_appended(now, lsn, now);
        self.mix(lsn);
        self.leader_fsync_start();
        lsn
    }

    // ------------------------------------------------------------ followers

    fn follower_receive(&mut self, f: usize, conn: u64, msg: PeerMsg) -> Check {
        let now = self.now_ms();
        let id = f as NodeId + 2;
        let kind = msg.kind();
        self.trace(|| format!("node {id}: received {}", summary(&msg)));
        let result = match msg {
            PeerMsg::Welcome { leader_id, epoch, leader_client_addr, stream_from, .. } => {
                let core = self.followers[f].core.as_mut().expect("up");
                let r = core.handle_welcome(now, leader_id, epoch, leader_client_addr, stream_from);
                if r.is_ok() {
                    self.followers[f].seen_epoch = epoch;
                    self.followers[f].backoff_ms = BACKOFF_MS_MIN;
                }
                r
            }
            PeerMsg::Entries { epoch, entries, leader_last_lsn, leader_now_ms } => {
                self.follower_entries(f, epoch, &entries, leader_last_lsn, leader_now_ms)?
            }
            PeerMsg::Heartbeat { epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms } => {
                let core = self.followers[f].core.as_mut().expect("up");
                core.handle_heartbeat(now, epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms)
            }
            PeerMsg::SnapshotBegin { epoch, start_lsn } => {
                let node = &mut self.followers[f];
                let r = node.core.as_mut().expect("up").handle_snapshot_begin(now, epoch, start_lsn);
                if r.is_ok() {
                    node.disk.discard();
                    node.store = Store::new(self.seed ^ (f as u64 + 2));
                    node.fsync_target = None;
                    node.applied = 0;
                    node.apply_scheduled = 0;
                    node.applied_high = 0;
                    node.snapshot_rx = Some((start_lsn, Vec::new()));
                }
                r
            }
            PeerMsg::SnapshotChunk { bytes } => {
                let node = &mut self.followers[f];
                let Some((_, chunks)) = node.snapshot_rx.as_mut() else { fail!("node {id}: chunk outside a snapshot") };
                if let Err(e) = node.store.load_chunk(&bytes) {
                    fail!("node {id}: snapshot chunk does not load: {e}");
                }
                chunks.push(bytes);
                Ok(())
            }
            PeerMsg::SnapshotEnd { end_lsn } => self.follower_snapshot_end(f, end_lsn)?,
            PeerMsg::Refuse { reason } => fail!("the leader refused node {id}: {reason}"),
            other => fail!("node {id} received a leader-bound message: {other:?}"),
        };
        if let Err(reason) = result {
            // A correct leader never sends what a correct follower refuses.
            fail!("node {id} refused a {kind} on connection {conn}: {reason}");
        }
        self.follower_send_ack(f);
        Ok(())
    }

    fn follower_entries(
        &mut self,
        f: usize,
        epoch: Epoch,
        entries: &[WireEntry],
        leader_last_lsn: Lsn,
        leader_now_ms: u64,
    ) -> Result<Result<(), String>, String> {
        let now = self.now_ms();
        let node = &mut self.followers[f];
        let fresh =
            match node.core.as_mut().expect("up").handle_entries(now, epoch, entries, leader_last_lsn, leader_now_ms) {
                Ok(fresh) => fresh.to_vec(),
                Err(reason) => return Ok(Err(reason)),
            };
        for e in fresh {
            // Checker 1: a follower's log is always a prefix of the leader's.
            match self.leader.log.get(e.lsn as usize - 1) {
                Some(mine) if *mine == e => {}
                other => fail!("node {}: entry {} is not the leader's entry {:?}", f + 2, e.lsn, other.map(|o| o.lsn)),
            }
            self.followers[f].disk.append(e);
        }
        let node = &mut self.followers[f];
        let last = node.disk.last_lsn();
        if last > node.apply_scheduled {
            node.apply_scheduled = last;
            let delay_us = node.apply_delay_us;
            let at = (self.time.now_us() + node.apply_latency.sample(&mut self.rng) + delay_us).max(node.apply_at_us);
            let node = &mut self.followers[f];
            node.apply_at_us = at;
            let (incarnation, generation) = (node.incarnation, node.disk.generation());
            self.schedule(at - self.time.now_us(), Event::FollowerApply { f, incarnation, generation, upto: last });
        }
        self.follower_fsync_start(f);
        Ok(Ok(()))
    }

    fn follower_snapshot_end(&mut self, f: usize, end_lsn: Lsn) -> Result<Result<(), String>, String> {
        let now = self.now_ms();
        let node = &mut self.followers[f];
        let Some((start_lsn, chunks)) = node.snapshot_rx.take() else {
            fail!("node {}: snapshot end without begin", f + 2)
        };
        if let Err(reason) = node.core.as_mut().expect("up").handle_snapshot_end(now, end_lsn) {
            return Ok(Err(reason));
        }
        node.disk.install_snapshot(start_lsn, chunks);
        node.applied = start_lsn;
        node.apply_scheduled = start_lsn;
        node.applied_high = start_lsn;
        node.consistent_lsn = end_lsn;
        let commit_ms = if start_lsn == 0 { 0 } else { self.leader.commit_ms[start_lsn as usize - 1] };
        node.core.as_mut().expect("up").handle_applied(start_lsn, commit_ms);
        // Checker 2 (the simulated snapshot is taken atomically).
        let digest = node.store.digest();
        if Some(digest) != self.leader.digests[start_lsn as usize] {
            fail!("node {}: state after a snapshot at lsn {start_lsn} differs from the leader's", f + 2);
        }
        self.follower_fsync_start(f);
        Ok(Ok(()))
    }

    fn follower_fsync_start(&mut self, f: usize) {
        let node = &mut self.followers[f];
        if node.fsync_target.is_some() || !node.up {
            return;
        }
        let Some(target) = node.disk.pending_sync() else { return };
        node.fsync_target = Some(target);
        let (incarnation, generation) = (node.incarnation, node.disk.generation());
        let delay = node.fsync_latency.sample(&mut self.rng);
        self.schedule(delay, Event::FollowerFsync { f, incarnation, generation, target });
    }

    fn follower_fsync_done(&mut self, f: usize, incarnation: u64, generation: u64, target: Lsn) -> Check {
        let node = &mut self.followers[f];
        if node.incarnation != incarnation || !node.up {
            return Ok(());
        }
        if node.disk.generation() == generation {
            node.fsync_target = None;
        }
        if node.disk.synced(generation, target) {
            node.core.as_mut().expect("up").handle_flushed(target);
            self.trace(|| format!("node {}: synced to {target}", f + 2));
        }
        self.follower_fsync_start(f);
        self.follower_send_ack(f);
        Ok(())
    }

    fn follower_apply(&mut self, f: usize, incarnation: u64, generation: u64, upto: Lsn) -> Check {
        let node = &mut self.followers[f];
        if node.incarnation != incarnation || !node.up || node.disk.generation() != generation {
            return Ok(());
        }
        while node.applied < upto {
            let lsn = node.applied + 1;
            let wire = node.disk.entry(lsn).expect("applied entries are on disk");
            let entry = match LogEntry::decode_payload(wire.lsn, wire.epoch, &wire.payload) {
                Ok(entry) => entry,
                Err(e) => fail!("node {}: entry {lsn} does not decode: {e}", f + 2),
            };
            for effect in &entry.effects {
                node.store.apply(effect);
            }
            node.applied = lsn;
            node.applied_high = node.applied_high.max(lsn);
            node.core.as_mut().expect("up").handle_applied(lsn, entry.commit_ms);
            if self.config.verbose {
                println!("{:>10.3} ms  node {}: applied {lsn}", self.time.now_us() as f64 / 1000.0, f + 2);
            }
            // Checker 2: applied state at x equals the leader's state at x.
            let want = self.leader.digests[lsn as usize];
            if lsn >= node.consistent_lsn && want.is_some() && Some(node.store.digest()) != want {
                fail!("node {}: state after applying lsn {lsn} differs from the leader's state at lsn {lsn}", f + 2);
            }
        }
        self.follower_send_ack(f);
        Ok(())
    }

    fn follower_send_ack(&mut self, f: usize) {
        let now = self.now_ms();
        let node = &mut self.followers[f];
        let (Some(conn), Some(core)) = (node.conn, node.core.as_mut()) else { return };
        if let Some(ack) = core.poll_ack(now) {
            self.trace(|| format!("node {}: sends {ack:?}", f + 2));
            self.send(f, true, conn, &ack);
        }
    }

    fn crash_follower(&mut self, f: usize) {
        let node = &mut self.followers[f];
        if !node.up {
            return;
        }
        node.up = false;
        node.incarnation += 1;
        node.core = None;
        node.conn = None;
        node.snapshot_rx = None;
        node.fsync_target = None;
        node.disk.crash();
        node.store = Store::new(0);
        self.report.crashes += 1;
        let kept = self.followers[f].disk.last_lsn();
        self.trace(|| format!("node {}: crash (disk keeps lsn {kept})", f + 2));
        self.break_conn(f);
    }

    fn restart_follower(&mut self, f: usize) {
        let now = self.now_ms();
        let seed = self.seed;
        let node = &mut self.followers[f];
        node.up = true;
        node.store = Store::new(seed ^ (f as u64 + 2) ^ node.incarnation);
        node.disk.recover(&mut node.store);
        let synced = node.disk.synced_lsn();
        node.applied = synced;
        node.apply_scheduled = synced;
        node.applied_high = synced;
        node.consistent_lsn = 0;
        node.backoff_ms = BACKOFF_MS_MIN;
        node.core = Some(Follower::new(node.id, node.seen_epoch, synced, synced, now));
        let incarnation = node.incarnation;
        self.trace(|| format!("node {}: restart at lsn {synced}", f + 2));
        let delay = self.rng.range(0, 5000);
        self.schedule(delay, Event::Connect { f, incarnation });
    }

    // ------------------------------------------------------------ clients and faults

    fn random_durability(&mut self) -> Durability {
        let ids = ids(self.followers.len());
        let nf = ids.len();
        let r = &mut self.rng;
        let policy = match r.below(10) {
            0..=2 => AckPolicy::Async,
            3..=5 => {
                let beyond = r.chance(0.1) as u64;
                AckPolicy::Any(r.range(0, nf as u64 + beyond) as usize)
            }
            6..=7 => {
                let mut among = ids.clone();
                for i in (1..among.len()).rev() {
                    among.swap(i, r.below(i as u64 + 1) as usize);
                }
                among.truncate(r.range(1, nf as u64) as usize);
                let k = r.range(1, among.len() as u64) as usize;
                AckPolicy::First { k, among }
            }
            _ => AckPolicy::All,
        };
        let level = *r.pick(&[AckLevel::Flush, AckLevel::Apply]);
        let satisfiable = policy.validate(&ids).is_ok();
        let timeout_ms = if satisfiable && r.chance(0.15) { 0 } else { *r.pick(&[1, 3, 10, 30, 100, 300, 1000, 3000]) };
        Durability { policy, level, timeout_ms }
    }

    fn client_op(&mut self) -> Check {
        self.ops_issued += 1;
        let roll = self.rng.below(100);
        if roll < 80 {
            let now = self.now_ms();
            let op = crate::mix::random_op(&mut self.rng, now);
            let durability = self.random_durability();
            self.write_op(&op, &durability)?;
        } else if roll < 95 {
            let nf = self.followers.len() as u64;
            let numreplicas = self.rng.range(0, nf + 1) as usize;
            let timeout_ms = if numreplicas as u64 <= nf && self.rng.chance(0.1) { 0 } else { self.rng.range(1, 1000) };
            self.wait(numreplicas, timeout_ms)?;
        } else {
            let now = self.now_ms();
            let keys = self.leader.store.collect_expired(now, 16);
            if !keys.is_empty() {
                let effects: Vec<_> = keys.into_iter().map(|key| tandem_core::effect::Effect::Del { key }).collect();
                for e in &effects {
                    self.leader.store.apply(e);
                }
                self.leader_commit(effects);
                self.pump_leader()?;
            }
        }
        if self.ops_issued < self.config.ops {
            let gap = self.rng.exp(self.config.op_gap_us);
            self.schedule(gap, Event::ClientOp);
        } else {
            let tail = self.rng.range(0, 200_000);
            self.schedule(tail, Event::EndActive);
        }
        Ok(())
    }

    fn fault(&mut self) -> Check {
        if self.phase != Phase::Active {
            return Ok(());
        }
        let f = self.rng.below(self.followers.len() as u64) as usize;
        match self.rng.below(100) {
            0..=24 => {
                let d = self.rng.range(20_000, 1_500_000);
                self.partition_for(f, d);
            }
            25..=44 => {
                self.trace(|| format!("fault: reset connection to node {}", f + 2));
                self.break_conn(f);
            }
            45..=69 => {
                self.crash_follower(f);
                let incarnation = self.followers[f].incarnation;
                let down = self.rng.range(10_000, 1_500_000);
                self.schedule(down, Event::Restart { f, incarnation });
            }
            70..=89 => self.retain_from(true),
            _ => {
                let net = Latency::random(&mut self.rng, (20, 20_000), (5, 20_000), 50_000);
                self.links[f].to_follower = net;
            }
        }
        let gap = self.rng.exp(self.fault_gap_us);
        self.schedule(gap, Event::Fault);
        Ok(())
    }

    fn partition_for(&mut self, f: usize, duration_us: u64) {
        let until = self.time.now_us().saturating_add(duration_us);
        let link = &mut self.links[f];
        link.partitioned_until_us = Some(link.partitioned_until_us.map_or(until, |u| u.max(until)));
        self.report.partitions += 1;
        self.trace(|| format!("fault: partition node {} for {} ms", f + 2, duration_us / 1000));
        self.break_conn(f);
        if duration_us != u64::MAX {
            self.schedule(duration_us, Event::Heal { f });
        }
    }

    /// Drops old entries from the leader's retained log, never past what a
    /// connected follower may still need or what is not durable.
    fn retain_from(&mut self, random: bool) {
        let needed = self.leader.core.oldest_needed_lsn().unwrap_or(u64::MAX);
        let limit = (self.leader.synced + 1).min(needed);
        if limit <= self.leader.first_retained {
            return;
        }
        let to = if random { self.rng.range(self.leader.first_retained, limit) } else { limit };
        self.leader.first_retained = to;
        self.trace(|| format!("leader: log retained from lsn {to}"));
    }

    fn start_drain(&mut self) {
        if self.phase != Phase::Active {
            return;
        }
        self.phase = Phase::Drain;
        self.loss_chance = 0.0;
        self.drain_deadline_us = self.time.now_us() + self.config.drain_ms_max * 1000;
        self.trace(|| "drain: faults stop".into());
        for f in 0..self.followers.len() {
            self.links[f].partitioned_until_us = None;
            if !self.followers[f].up {
                self.restart_follower(f);
            }
        }
    }

    // ------------------------------------------------------------ checkers

    fn check_release(&mut self, release: &Release) -> Check {
        let now = self.now_ms();
        let Some(w) = self.waits.remove(&release.token) else {
            fail!("release of unknown or already released token {}", release.token);
        };
        let lsn = w.lsn;
        let timed_out_by_clock = w.deadline_ms.is_some_and(|d| now >= d);
        match (&w.kind, &release.outcome) {
            (WaitKind::Write(d), Outcome::Acked) => {
                self.report.acked += 1;
                // Checker 3: the promised durability holds in ground truth.
                if self.leader.synced < lsn {
                    fail!(
                        "write at lsn {lsn} ({}) acked but the leader synced only to {}",
                        d.policy,
                        self.leader.synced
                    );
                }
                let (have, need, met) = self.policy_truth(lsn, d);
                if !met {
                    fail!(
                        "write at lsn {lsn} acked under '{} {}' but only {have} of {need} required followers hold it",
                        d.policy,
                        d.level
                    );
                }
            }
            (WaitKind::Write(d), Outcome::TimedOut { have, need, durable_on_leader }) => {
                self.report.timed_out += 1;
                if !timed_out_by_clock {
                    fail!("write at lsn {lsn} timed out before its deadline {:?} (now {now})", w.deadline_ms);
                }
                let (known_have, known_need, known_met) = self.policy_known(lsn, d);
                let durable = self.leader.synced >= lsn;
                if known_met && durable {
                    fail!("write at lsn {lsn} under '{}' timed out although it was met", d.policy);
                }
                if (*have, *need, *durable_on_leader) != (known_have, known_need, durable) {
                    fail!(
                        "write at lsn {lsn} under '{}' timed out with have {have} need {need} durable {durable_on_leader}, truth is have {known_have} need {known_need} durable {durable}",
                        d.policy
                    );
                }
                let (truth_have, _, _) = self.policy_truth(lsn, d);
                if *have > truth_have {
                    fail!("write at lsn {lsn} reports {have} followers holding it, only {truth_have} do");
                }
            }
            (WaitKind::Replicas(n), Outcome::Replicas(count)) => {
                self.report.waits_released += 1;
                // Checker 4: WAIT counts are exact at release.
                let level = self.leader.core.config().default_durability.level;
                let known = self.count_known(lsn, level);
                if *count != known {
                    fail!("WAIT for lsn {lsn} released with {count} replicas, the leader knows of {known}");
                }
                let truth = self.count_truth(lsn, level);
                if *count > truth {
                    fail!("WAIT for lsn {lsn} released with {count} replicas, only {truth} hold it");
                }
                if *count < *n && !timed_out_by_clock {
                    fail!("WAIT {n} for lsn {lsn} released early with {count}");
                }
            }
            (kind, outcome) => fail!("wait {kind:?} released with mismatched outcome {outcome:?}"),
        }
        Ok(())
    }

    fn follower_truth_holds(&self, f: usize, lsn: Lsn, level: AckLevel) -> bool {
        let v = &self.leader.view[f];
        if v.disk_lost {
            return v.holds(lsn, level);
        }
        let node = &self.followers[f];
        let synced = node.disk.synced_lsn() >= lsn;
        match level {
            AckLevel::Flush => synced,
            AckLevel::Apply => synced && node.applied_high >= lsn,
        }
    }

    fn count_truth(&self, lsn: Lsn, level: AckLevel) -> usize {
        (0..self.followers.len()).filter(|&f| self.follower_truth_holds(f, lsn, level)).count()
    }

    fn count_known(&self, lsn: Lsn, level: AckLevel) -> usize {
        self.leader.view.iter().filter(|v| v.holds(lsn, level)).count()
    }

    /// (have, need, met) by `holds`, with `first` choosing among the
    /// followers the leader sees connected.
    fn policy_eval(&self, d: &Durability, holds: impl Fn(usize) -> bool) -> (usize, usize, bool) {
        let n = self.followers.len();
        let count = (0..n).filter(|&f| holds(f)).count();
        match &d.policy {
            AckPolicy::Async => (count, 0, true),
            AckPolicy::Any(k) => (count, *k, count >= *k),
            AckPolicy::All => (count, n, count == n),
            AckPolicy::First { k, among } => {
                let chosen: Vec<usize> = among
                    .iter()
                    .map(|&id| (id - 2) as usize)
                    .filter(|&f| f < n && self.leader.view[f].state == ViewState::Connected)
                    .take(*k)
                    .collect();
                let have = chosen.iter().filter(|&&f| holds(f)).count();
                (have, *k, chosen.len() == *k && have == *k)
            }
        }
    }

    fn policy_truth(&self, lsn: Lsn, d: &Durability) -> (usize, usize, bool) {
        self.policy_eval(d, |f| self.follower_truth_holds(f, lsn, d.level))
    }

    fn policy_known(&self, lsn: Lsn, d: &Durability) -> (usize, usize, bool) {
        self.policy_eval(d, |f| self.leader.view[f].holds(lsn, d.level))
    }

    /// Run after every event.
    fn check_invariants(&mut self) -> Check {
        let now = self.now_ms();
        // Liveness of releases: nothing met or overdue is still waiting.
        for (token, w) in &self.waits {
            if w.deadline_ms.is_some_and(|d| d < now) {
                fail!("wait {token} for lsn {} is past its deadline {:?} and not released", w.lsn, w.deadline_ms);
            }
            let met = match &w.kind {
                WaitKind::Write(d) => self.leader.synced >= w.lsn && self.policy_known(w.lsn, d).2,
                WaitKind::Replicas(n) => {
                    self.count_known(w.lsn, self.leader.core.config().default_durability.level) >= *n
                }
            };
            if met {
                fail!("wait {token} for lsn {} ({:?}) is met but not released", w.lsn, w.kind);
            }
        }
        // Checker 5: reported progress and lag match the model and truth.
        let last = self.leader.core.last_lsn();
        for r in self.leader.core.replicas(now) {
            let f = (r.id - 2) as usize;
            let v = &self.leader.view[f];
            let connected = match r.state {
                ReplicaState::Disconnected => ViewState::Disconnected,
                ReplicaState::Snapshot => ViewState::Snapshot,
                ReplicaState::CatchingUp | ReplicaState::Streaming => ViewState::Connected,
            };
            if connected != v.state || r.flushed_lsn != v.flushed || r.applied_lsn != v.applied {
                fail!("leader reports node {} as {r:?}, the model says {v:?}", r.id);
            }
            if v.state == ViewState::Connected && r.sent_lsn != v.sent {
                fail!("leader reports node {} sent to {}, the model says {}", r.id, r.sent_lsn, v.sent);
            }
            if r.lsn_lag != last - v.applied {
                fail!("node {} lsn lag {} but leader last {last} - applied {}", r.id, r.lsn_lag, v.applied);
            }
            let want_time_lag = if v.applied >= last { 0 } else { now - self.leader.commit_ms[v.applied as usize] };
            if r.time_lag_ms != want_time_lag {
                fail!("node {} time lag {} ms, truth {want_time_lag} ms", r.id, r.time_lag_ms);
            }
            if !v.disk_lost {
                let node = &self.followers[f];
                let true_min = node.disk.synced_lsn().min(node.applied_high);
                if v.flushed > node.disk.synced_lsn() || v.flushed.min(v.applied) > true_min {
                    fail!(
                        "leader believes node {} flushed {} applied {}, its disk is synced to {} and applied {}",
                        r.id,
                        v.flushed,
                        v.applied,
                        node.disk.synced_lsn(),
                        node.applied_high
                    );
                }
            }
        }
        for node in &self.followers {
            let Some(core) = &node.core else { continue };
            let s = core.status(now);
            let in_snapshot = matches!(core.state(), FollowerState::AwaitingSnapshot | FollowerState::Snapshot);
            if s.last_lsn != node.disk.last_lsn() && !in_snapshot {
                fail!("node {} core says last lsn {}, its disk has {}", node.id, s.last_lsn, node.disk.last_lsn());
            }
            if s.lsn_lag != s.leader_last_lsn.saturating_sub(s.applied_lsn) || (s.lsn_lag == 0 && s.staleness_ms != 0) {
                fail!("node {} status is inconsistent: {s:?}", node.id);
            }
        }
        if self.phase == Phase::Drain && self.time.now_us() > self.drain_deadline_us {
            fail!("no convergence {} ms after faults stopped: {}", self.config.drain_ms_max, self.describe());
        }
        Ok(())
    }

    /// Checker 6: every follower holds and applied the leader's whole log.
    fn converged(&self) -> Result<bool, String> {
        let last = self.leader.core.last_lsn();
        if self.leader.synced != last || !self.waits.is_empty() {
            return Ok(false);
        }
        for (f, node) in self.followers.iter().enumerate() {
            let v = &self.leader.view[f];
            let caught_up = node.up
                && node.disk.synced_lsn() == last
                && node.applied == last
                && v.state == ViewState::Connected
                && v.flushed == last
                && v.applied == last;
            if !caught_up {
                return Ok(false);
            }
        }
        let want = self.leader.store.digest();
        for node in &self.followers {
            if node.store.digest() != want {
                fail!("node {} applied the whole log but its state differs from the leader's", node.id);
            }
            for e in node.disk.entries() {
                if self.leader.log[e.lsn as usize - 1] != *e {
                    fail!("node {} log differs from the leader's at lsn {}", node.id, e.lsn);
                }
            }
        }
        Ok(true)
    }

    /// Checker 7: a fuzzy snapshot of the leader, as the node takes one
    /// (bucket by bucket while writes continue), loaded and replayed from
    /// the LSN where the capture began, equals the leader's final state.
    /// The capture is rebuilt from the log: replay to `start`, then encode
    /// bucket ranges at increasing LSNs up to the end.
    fn check_fuzzy_snapshot(&mut self) -> Check {
        let last = self.leader.core.last_lsn();
        let mut entries = Vec::with_capacity(last as usize);
        for wire in &self.leader.log {
            match LogEntry::decode_payload(wire.lsn, wire.epoch, &wire.payload) {
                Ok(e) => entries.push(e.effects),
                Err(e) => fail!("leader entry {} does not decode: {e}", wire.lsn),
            }
        }
        let start = self.rng.range(0, last);
        let mut source = Store::new(self.seed ^ 0xf0f0);
        let apply = |store: &mut Store, upto: &mut Lsn, to: Lsn| {
            while *upto < to {
                for effect in &entries[*upto as usize] {
                    store.apply(effect);
                }
                *upto += 1;
            }
        };
        let mut at = 0;
        apply(&mut source, &mut at, start);
        let mut captured = Store::new(self.seed ^ 0x0f0f);
        let mut bucket = 0;
        while bucket < BUCKETS {
            let upto = (bucket + 1 + self.rng.below(BUCKETS as u64 / 2) as usize).min(BUCKETS);
            for b in bucket..upto {
                for chunk in source.encode_bucket_chunks(b, SNAPSHOT_CHUNK_BYTES) {
                    if let Err(e) = captured.load_chunk(&chunk) {
                        fail!("fuzzy snapshot chunk of bucket {b} does not load: {e}");
                    }
                }
            }
            bucket = upto;
            let to = self.rng.range(at, last);
            apply(&mut source, &mut at, to);
        }
        let mut replayed = start;
        apply(&mut captured, &mut replayed, last);
        self.report.fuzzy_replays += 1;
        if captured.digest() != self.leader.store.digest() {
            fail!(
                "a fuzzy snapshot begun at lsn {start} (captured up to lsn {at}) replayed to lsn {last} differs from \
                 the leader's state: {}",
                key_diff(&captured, &self.leader.store)
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        let now = self.now_ms();
        let mut out = format!(
            "leader last {} synced {} retained from {} waits {:?}; ",
            self.leader.core.last_lsn(),
            self.leader.synced,
            self.leader.first_retained,
            self.waits.keys().collect::<Vec<_>>()
        );
        for (f, node) in self.followers.iter().enumerate() {
            out.push_str(&format!(
                "node {}: up {} disk {}/{} applied {} conn {:?} view {:?} status {:?}; ",
                node.id,
                node.up,
                node.disk.synced_lsn(),
                node.disk.last_lsn(),
                node.applied,
                node.conn,
                self.leader.view[f],
                node.core.as_ref().map(|c| c.status(now))
            ));
        }
        out
    }

    // ------------------------------------------------------------ running

    /// Runs the random history to the end: clients and faults, then a drain
    /// until every follower converged.
    pub fn run_to_end(mut self) -> Result<SimReport, (String, u64, Vec<String>)> {
        let result = (|| loop {
            if self.phase == Phase::Drain && self.converged()? {
                return self.check_fuzzy_snapshot();
            }
            if !self.step()? {
                fail!("the event queue ran dry: {}", self.describe());
            }
        })();
        match result {
            Ok(()) => {
                self.report.final_lsn = self.leader.core.last_lsn();
                self.report.virtual_ms = self.time.now_us() / 1000;
                Ok(self.report)
            }
            Err(msg) => Err((msg, self.time.now_us() / 1000, self.trace_tail())),
        }
    }

    // ------------------------------------------------------------ scenario API

    /// Processes events for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) -> Result<(), String> {
        let until = self.time.now_us() + ms * 1000;
        while self.time.next_due_us().is_some_and(|at| at <= until) {
            self.step()?;
        }
        self.time.advance_to(until);
        Ok(())
    }

    /// Runs until every follower converged (at most `ms`).
    pub fn converge(&mut self, ms: u64) -> Result<(), String> {
        let until = self.time.now_us() + ms * 1000;
        while !self.converged()? {
            if self.time.now_us() > until || !self.step()? {
                fail!("no convergence within {ms} ms: {}", self.describe());
            }
        }
        Ok(())
    }

    /// A client write (`args` as words) with this durability; returns its
    /// wait token, or `None` if it changed nothing.
    pub fn write(&mut self, args: &[&str], durability: &Durability) -> Result<Option<u64>, String> {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        self.write_args(&args, durability)
    }

    fn write_args(&mut self, args: &[Bytes], durability: &Durability) -> Result<Option<u64>, String> {
        let Some(lsn) = self.leader_execute(args)? else { return Ok(None) };
        let token = self.next_token;
        self.wait_for_write(lsn, durability)?;
        Ok(Some(token))
    }

    /// Registers a client waiting for the write at `lsn` under `durability`.
    fn wait_for_write(&mut self, lsn: Lsn, durability: &Durability) -> Check {
        self.report.writes += 1;
        let now = self.now_ms();
        let token = self.next_token;
        self.next_token += 1;
        let deadline_ms = (durability.timeout_ms > 0).then(|| now + durability.timeout_ms);
        self.waits.insert(token, PendingWait { lsn, kind: WaitKind::Write(durability.clone()), deadline_ms });
        self.leader.core.wait_for(now, token, lsn, durability);
        self.pump_leader()
    }

    /// A client operation of the data-model mix with this durability.
    fn write_op(&mut self, op: &Op, durability: &Durability) -> Check {
        let Some(lsn) = self.leader_run_op(op)? else { return Ok(()) };
        self.wait_for_write(lsn, durability)
    }

    /// A client `WAIT numreplicas timeout_ms` after the newest write;
    /// returns its token.
    pub fn wait(&mut self, numreplicas: usize, timeout_ms: u64) -> Result<u64, String> {
        let now = self.now_ms();
        let lsn = self.leader.core.last_lsn();
        let token = self.next_token;
        self.next_token += 1;
        self.report.waits += 1;
        let deadline_ms = (timeout_ms > 0).then(|| now + timeout_ms);
        self.waits.insert(token, PendingWait { lsn, kind: WaitKind::Replicas(numreplicas), deadline_ms });
        self.leader.core.wait_replicas(now, token, lsn, numreplicas, timeout_ms);
        self.pump_leader()?;
        Ok(token)
    }

    /// How the wait `token` ended, if it did.
    pub fn outcome(&self, token: u64) -> Option<&Outcome> {
        self.outcomes.get(&token)
    }

    /// Cuts the link to follower `id` until [`Sim::heal`].
    pub fn partition(&mut self, id: NodeId) {
        self.partition_for((id - 2) as usize, u64::MAX);
    }

    /// Restores the link to follower `id`.
    pub fn heal(&mut self, id: NodeId) {
        self.links[(id - 2) as usize].partitioned_until_us = None;
    }

    /// Kills follower `id` (its unsynced writes are lost).
    pub fn crash(&mut self, id: NodeId) {
        self.crash_follower((id - 2) as usize);
    }

    /// Starts follower `id` again from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let f = (id - 2) as usize;
        if !self.followers[f].up {
            self.restart_follower(f);
        }
    }

    /// Kills follower `id`, erases its disk and starts it again empty.
    pub fn wipe(&mut self, id: NodeId) {
        let f = (id - 2) as usize;
        self.crash_follower(f);
        self.followers[f].disk.discard();
        self.followers[f].seen_epoch = 0;
        self.leader.view[f].disk_lost = true;
        self.restart_follower(f);
    }

    /// Drops every durable entry no connected follower needs from the
    /// leader's retained log.
    pub fn truncate_leader_log(&mut self) {
        self.retain_from(false);
    }

    /// The leader's view of follower `id`.
    pub fn replica(&self, id: NodeId) -> tandem_core::repl::ReplicaStatus {
        self.leader.core.replicas(self.now_ms()).into_iter().find(|r| r.id == id).expect("a follower")
    }

    /// The leader's last LSN.
    pub fn leader_last_lsn(&self) -> Lsn {
        self.leader.core.last_lsn()
    }

    /// The string value of `key` on follower `id` (reads are served there).
    pub fn follower_get(&self, id: NodeId, key: &str) -> Option<String> {
        let node = &self.followers[(id - 2) as usize];
        match node.store.get(key.as_bytes(), self.now_ms()) {
            Some((tandem_core::store::ValueRef::Str(v), _)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }

    /// What the run has counted so far.
    pub fn report(&self) -> &SimReport {
        &self.report
    }

    // ------------------------------------------------------------ session API (additive, see `sessions`)

    /// Test knob: follower `id` applies received entries `ms` later than
    /// its apply latency alone would (a follower whose apply is delayed on
    /// purpose). Takes effect for entries received from now on.
    pub fn set_apply_delay(&mut self, id: NodeId, ms: u64) {
        self.followers[(id - 2) as usize].apply_delay_us = ms * 1000;
    }

    /// Followers in the cluster.
    pub fn follower_count(&self) -> usize {
        self.followers.len()
    }

    /// Virtual time since the start of the run, in ms.
    pub fn elapsed_ms(&self) -> u64 {
        self.time.now_us() / 1000
    }

    /// Ground truth: the last LSN follower `id`'s store reflects (what its
    /// `LASTLSN` would answer), or `None` while it is down.
    pub fn follower_applied_lsn(&self, id: NodeId) -> Option<Lsn> {
        let node = &self.followers[(id - 2) as usize];
        node.up.then_some(node.applied)
    }

    // ------------------------------------------------------------ lab API (additive, see `lab`)

    /// Lab knob: every link's one-way latency (both directions) and every
    /// disk's fsync latency, replacing what the seed drew.
    pub fn set_profile(&mut self, link: crate::rng::Latency, fsync: crate::rng::Latency) {
        for l in &mut self.links {
            l.to_follower = link;
            l.to_leader = link;
        }
        self.leader.fsync_latency = fsync;
        for f in &mut self.followers {
            f.fsync_latency = fsync;
        }
    }

    /// Virtual time since the start of the run, in µs.
    pub fn elapsed_us(&self) -> u64 {
        self.time.now_us()
    }

    /// When the wait `token` was released (virtual µs), if it was.
    pub fn released_at_us(&self, token: u64) -> Option<u64> {
        self.released_us.get(&token).copied()
    }

    /// Ground truth: the highest LSN on follower `id`'s disk (what survives
    /// if it is promoted after the leader dies).
    pub fn follower_synced_lsn(&self, id: NodeId) -> Lsn {
        self.followers[(id - 2) as usize].disk.synced_lsn()
    }

    /// Lab read-only view: the leader's log so far, each entry with its
    /// commit time (virtual ms), as an archiver reading the log sees it.
    pub fn leader_log(&self) -> impl Iterator<Item = (u64, &WireEntry)> {
        self.leader.commit_ms.iter().copied().zip(self.leader.log.iter())
    }

    /// Ground truth: the highest LSN on the leader's disk.
    pub fn leader_synced_lsn(&self) -> Lsn {
        self.leader.synced
    }

    /// Keys in the leader's store (expired ones not yet removed included).
    pub fn leader_key_count(&self) -> usize {
        self.leader.store.len()
    }

    /// Keys in follower `id`'s store.
    pub fn follower_key_count(&self, id: NodeId) -> usize {
        self.followers[(id - 2) as usize].store.len()
    }

    /// The string value of `key` on the leader.
    pub fn leader_get(&self, key: &str) -> Option<String> {
        match self.leader.store.get(key.as_bytes(), self.now_ms()) {
            Some((tandem_core::store::ValueRef::Str(v), _)) => Some(String::from_utf8_lossy(v).into_owned()),
            _ => None,
        }
    }
}

/// The keys whose value or expiry differ between two stores, with both
/// sides (for a failure message).
fn key_diff(got: &Store, want: &Store) -> String {
    let mut keys = std::collections::BTreeSet::new();
    for store in [got, want] {
        store.scan(0, usize::MAX, 0, |k| {
            keys.insert(k.to_vec());
        });
    }
    let show = |s: &Store, k: &[u8]| format!("{:?}", s.get(k, 0));
    keys.iter()
        .filter(|k| show(got, k) != show(want, k))
        .map(|k| format!("\n  {}: got {} want {}", String::from_utf8_lossy(k), show(got, k), show(want, k)))
        .collect()
}

/// The write handler of the command `args` names.
fn write_fn(args: &[Bytes]) -> Result<command::WriteFn, String> {
    let Some(spec) = command::lookup(&args[0]) else { fail!("unknown command {:?}", args[0]) };
    let Handler::Write(run) = spec.handler else { fail!("{} is not a write", spec.name) };
    if !spec.arity_ok(args.len()) {
        fail!("bad arity for {}", spec.name);
    }
    Ok(run)
}

/// One line describing a message (entries and chunks are summarised).
fn summary(msg: &PeerMsg) -> String {
    match msg {
        PeerMsg::Entries { entries, leader_last_lsn, .. } => match (entries.first(), entries.last()) {
            (Some(a), Some(b)) => format!("entries {}..={} (leader last {leader_last_lsn})", a.lsn, b.lsn),
            _ => format!("no entries (leader last {leader_last_lsn})"),
        },
        PeerMsg::SnapshotChunk { bytes } => format!("snapshot chunk of {} bytes", bytes.len()),
        other => format!("{other:?}"),
    }
}
