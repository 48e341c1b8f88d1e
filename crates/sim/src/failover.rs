//! The failover world: every node can lead, a control plane promotes a new
//! leader when the old one is lost, and checkers judge every history.
//!
//! Owns a cluster of 3 or 5 nodes built from the real sans-IO cores
//! (`tandem_core::repl::{Leader, Follower}` and everything in
//! `tandem_core::failover`: `LeaseKeeper`, `LeaseGrantor`, `assess`,
//! `choose_leader`, `EpochHistory`), driven the way the node drives them:
//!
//! - each node has a monotonic clock running at a seeded constant rate within
//!   ±ρ of real time, a durable epoch (its fence floor), a log on a simulated
//!   [`Disk`] (crash loses the unsynced tail), a persisted epoch history and
//!   durable rollback records;
//! - the control plane is a linearizable `{leader, epoch}` register with
//!   compare-and-set, reachable only from the side of a partition that holds
//!   a majority of live members; an orchestrator on the lowest such node
//!   probes, fences and promotes;
//! - leaders accept client writes only while their lease is valid, followers
//!   grant leases and refuse to fence while a grant binds;
//! - faults: crashes and restarts of any node (leaders too), partitions
//!   (isolated leader that keeps its clients, isolated follower, random
//!   splits), message loss and delay, clock drift within the bound, leader
//!   log compaction (followers that fall behind it get a snapshot).
//!
//! Checkers, each named after the guarantee (their failure messages start
//! with the checker's name): one writer per epoch and lease safety in real time; no
//! acknowledged write lost under `any k` / `first k` / `all`; under `async`
//! every acknowledged write the final leader lacks is in a rollback record;
//! every log equals the leader's after healing; a leader is elected and a
//! write succeeds within a bound after the last fault.
//!
//! Payloads are unique write ids (replication treats payloads as opaque), so
//! a node's state is its log; a snapshot carries the leader's whole log.
//! Must never let anything but the seed decide a draw, read a real clock or
//! iterate a hash map.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tandem_core::failover::{
    assess, choose_leader, majority, may_lead, Assessment, EpochHistory, FailoverRpc, FencedNode, LeaseConfig,
    LeaseGrantor, LeaseKeeper, NodeReport,
};
use tandem_core::repl::msg::STREAM_FROM_SNAPSHOT;
use tandem_core::repl::{
    AckLevel, AckPolicy, Durability, Follower, FollowerState, Leader, LeaderConfig, NodeId, Outcome, PeerMsg, Transmit,
    WireEntry,
};
use tandem_core::{Epoch, Lsn};

use crate::disk::Disk;
use crate::rng::{Latency, SimRng};
use crate::schedule::{Coded, Timeline};
use crate::SimFailure;

/// How to replay one seed of the failover world.
pub const REPRO_FAILOVER: &str = "--test failover -- --exact failover_seeds --nocapture";

/// Every node's monotonic clock starts somewhere at or above this (ms).
const CLOCK_START_MS: u64 = 1_000_000;
/// How often the orchestrator probes the members (real ms).
const PROBE_INTERVAL_MS: u64 = 50;
/// How long the orchestrator collects `Report`s after a probe.
const PROBE_WAIT_MS: u64 = 25;
/// How long the orchestrator collects `Fenced` answers (covers an fsync).
const FENCE_WAIT_MS: u64 = 60;
/// Control-plane (Raft) round trip, real ms.
const CONTROL_DELAY_MS: (u64, u64) = (1, 10);
/// How often a node reads the map from the control plane.
const MAP_POLL_MS: u64 = 50;
/// A node's housekeeping tick (lease requests, core timers, reconnects).
const TICK_MS: u64 = 10;
/// Clients per run.
const CLIENTS: usize = 4;
/// Chance that a client sends a write to a random node instead of the one it
/// believes leads (clients with a stale or a fresher view of the cluster).
const CLIENT_WANDER_CHANCE: f64 = 0.15;
/// Mean gap between a client's writes (real ms).
const CLIENT_GAP_MS: u64 = 8;
/// A client gives up on a write after this long and tries another node.
const CLIENT_TIMEOUT_MS: u64 = 1_000;
/// A write that does not meet its ack policy within one of these (drawn per
/// seed) is answered with an error (the core's `TimedOut`).
const WRITE_TIMEOUTS_MS: [u64; 3] = [30, 100, 500];
/// Client link latency bounds (µs); client links are never partitioned.
const CLIENT_LATENCY_US: (u64, u64) = (50, 2_000);
/// Virtual time with clients and faults, by default.
pub const ACTIVE_MS_DEFAULT: u64 = 4_000;
/// After the last fault heals: a write must be acknowledged within this. The
/// slowest path is a failover timeout (up to 1.5 leases of 600 ms), a lease
/// that still binds (600 ms), restarts and probe rounds; 10 000 seeds
/// needed at most about 1.5 s.
pub const LIVENESS_MS_MAX: u64 = 3_000;
/// After the liveness write: every log must equal the leader's within this.
const CONVERGE_MS_MAX: u64 = 20_000;
/// Most events one run may process: a runaway loop is a failure, not a hang.
const EVENTS_MAX: u64 = 3_000_000;
/// Entries per snapshot chunk.
const SNAPSHOT_CHUNK_ENTRIES: usize = 64;
/// Longest a side of a broken connection takes to notice (µs).
const NOTICE_RESET_US_MAX: u64 = 20_000;
/// Resubscribe backoff bounds (ms).
const BACKOFF_MS_MIN: u64 = 5;
const BACKOFF_MS_MAX: u64 = 200;
/// A crashed node restarts after this long (real ms).
const RESTART_MS: (u64, u64) = (20, 1_500);
/// A partition lasts this long (real ms).
const PARTITION_MS: (u64, u64) = (100, 2_000);

type Check = Result<(), String>;

macro_rules! fail {
    ($($arg:tt)*) => { return Err(format!($($arg)*)) };
}

/// What one failover run looks like.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// Members (3 or 5); `None`: drawn from the seed.
    pub nodes: Option<usize>,
    /// The keyspace's ack policy; `None`: drawn from the seed among `async`,
    /// `any 1`, `all`, `first 1 (2,3)`.
    pub policy: Option<AckPolicy>,
    /// Virtual time with clients and faults.
    pub active_ms: u64,
    /// Print every step (for a single seed).
    pub verbose: bool,
    /// Keep the last trace lines for the failure report.
    pub keep_trace_tail: bool,
}

impl Default for FailoverConfig {
    fn default() -> FailoverConfig {
        FailoverConfig {
            nodes: None,
            policy: None,
            active_ms: ACTIVE_MS_DEFAULT,
            verbose: false,
            keep_trace_tail: false,
        }
    }
}

/// What a passing failover run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailoverReport {
    /// The seed.
    pub seed: u64,
    /// Members.
    pub nodes: usize,
    /// The ack policy, as text.
    pub policy: String,
    /// Clock drift bound, percent.
    pub drift_percent: u64,
    /// Events processed.
    pub events: u64,
    /// Writes a leader accepted (appended).
    pub accepted: u64,
    /// Writes acknowledged to their client.
    pub acked: u64,
    /// Writes answered with an error (not leader, no lease, timed out,
    /// leadership lost).
    pub refused: u64,
    /// Map changes (bootstrap and promotions).
    pub map_changes: u64,
    /// Promotions after a fence (failovers).
    pub failovers: u64,
    /// Fence requests refused because a lease still bound the follower.
    pub fences_bound: u64,
    /// Crashes (of any node).
    pub crashes: u64,
    /// Crashes of the node the map named leader.
    pub leader_crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Entries written to rollback records.
    pub rolled_back: u64,
    /// Acknowledged writes the final leader lacks (all in rollback records).
    pub acked_lost_to_rollback: u64,
    /// Snapshots sent.
    pub snapshots: u64,
    /// Log compactions (the log then starts after a snapshot).
    pub compactions: u64,
    /// Real ms from the last heal to the first acknowledged write.
    pub recovery_ms: u64,
    /// Virtual time at the end.
    pub virtual_ms: u64,
    /// Hash of every event: equal seeds give equal hashes.
    pub trace_hash: u64,
}

/// Runs one seeded failover history and judges it.
pub fn run_failover_seed(seed: u64, config: &FailoverConfig) -> Result<FailoverReport, SimFailure> {
    crate::run_caught(seed, REPRO_FAILOVER, || World::new(seed, config).run())
}

// ------------------------------------------------------------------ model

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Active,
    /// Faults healed; waiting for a leader and one acknowledged write.
    Recover,
    /// Waiting for every log to equal the leader's.
    Converge,
}

#[derive(Debug)]
enum Wire {
    /// A peer message on a replication connection.
    Stream { conn: u64, bytes: Vec<u8> },
    /// A lease request or grant (connectionless).
    Lease { bytes: Vec<u8> },
    /// Orchestrator RPC, tagged with its round.
    Rpc { round: u64, bytes: Vec<u8> },
}

#[derive(Debug)]
enum Event {
    Deliver { from: NodeId, to: NodeId, wire: Wire },
    CloseSide { conn: u64, node: NodeId },
    Tick { node: NodeId, incarnation: u64 },
    Fsync { node: NodeId, incarnation: u64, generation: u64, target: Lsn },
    MapLearn { node: NodeId, incarnation: u64, leader: Option<NodeId>, epoch: Epoch },
    OrchTick,
    OrchCollect { round: u64 },
    Cas { round: u64, expected: Epoch, leader: NodeId, epoch: Epoch, failover: bool },
    ClientOp { client: usize },
    ClientArrive { client: usize, write_id: u64, node: NodeId },
    ClientReply { client: usize, write_id: u64, ok: bool, hint: Option<NodeId> },
    ClientTimeout { client: usize, write_id: u64 },
    Fault,
    HealPartition { generation: u64 },
    Restart { node: NodeId, incarnation: u64 },
    EndActive,
}

impl Coded for Event {
    fn code(&self) -> u64 {
        match self {
            Event::Deliver { from, to, .. } => 1 + (from << 8) + (to << 16),
            Event::CloseSide { conn, node } => 2 + (node << 8) + (conn << 16),
            Event::Tick { node, .. } => 3 + (node << 8),
            Event::Fsync { node, target, .. } => 4 + (node << 8) + (target << 16),
            Event::MapLearn { node, epoch, .. } => 5 + (node << 8) + (epoch << 16),
            Event::OrchTick => 6,
            Event::OrchCollect { round } => 7 + (round << 8),
            Event::Cas { round, .. } => 8 + (round << 8),
            Event::ClientOp { client } => 9 + ((*client as u64) << 8),
            Event::ClientArrive { write_id, .. } => 10 + (write_id << 8),
            Event::ClientReply { write_id, .. } => 11 + (write_id << 8),
            Event::ClientTimeout { write_id, .. } => 12 + (write_id << 8),
            Event::Fault => 13,
            Event::HealPartition { generation } => 14 + (generation << 8),
            Event::Restart { node, .. } => 15 + (node << 8),
            Event::EndActive => 16,
        }
    }
}

struct LeaderRole {
    core: Leader,
    keeper: LeaseKeeper,
    epoch: Epoch,
    /// The connection each follower is served on.
    conns: BTreeMap<NodeId, u64>,
    /// Next lease request (node clock).
    next_lease_ms: u64,
    /// Writes waiting for their ack policy: token (write id) → client.
    waiting: BTreeMap<u64, usize>,
}

struct FollowerRole {
    core: Follower,
    leader: NodeId,
    epoch: Epoch,
    conn: Option<u64>,
    /// Earliest real time of the next subscription attempt.
    retry_at_us: u64,
    backoff_ms: u64,
    /// A snapshot being received: its start LSN and the entries so far.
    snapshot_rx: Option<(Lsn, Vec<WireEntry>)>,
    /// The leader's history from a `Welcome` that announced a snapshot.
    welcome_history: Option<EpochHistory>,
    /// Node clock when it started following this leader.
    since_ms: u64,
}

enum Role {
    Idle,
    Leading(Box<LeaderRole>),
    Following(Box<FollowerRole>),
}

struct Node {
    id: NodeId,
    up: bool,
    incarnation: u64,
    /// Clock rate in parts per million of real time.
    rate_ppm: u64,
    clock_start_ms: u64,
    /// The persisted epoch: the fence floor.
    durable_epoch: Epoch,
    /// The last epoch this node led (persisted before it accepts a write).
    led_epoch: Epoch,
    disk: Disk,
    /// Persisted with the log (cut back to the log on a crash).
    history: EpochHistory,
    /// Durable rollback records: entries removed from this log because the
    /// leader's log never had them.
    rollback: Vec<WireEntry>,
    grantor: LeaseGrantor,
    role: Role,
    /// The newest map this node has learned.
    map_seen: (Option<NodeId>, Epoch),
    fsync_target: Option<Lsn>,
    fsync_latency: Latency,
    /// Fence answers owed once the log is durable: (orchestrator, round).
    fence_replies: Vec<(NodeId, u64)>,
    /// Housekeeping ticks so far (the map is read every few).
    ticks: u64,
}

struct Conn {
    follower: NodeId,
    leader: NodeId,
    broken: bool,
}

struct Client {
    target: NodeId,
    /// The write in flight and when it was sent.
    busy: Option<u64>,
}

/// The orchestrator's round in progress. A round collects answers until all
/// asked nodes answered or its wait is over, whichever comes first.
enum Orch {
    Idle,
    Probing {
        round: u64,
        orch: NodeId,
        reports: BTreeMap<NodeId, NodeReport>,
    },
    Fencing {
        round: u64,
        orch: NodeId,
        old_epoch: Epoch,
        old_leader: NodeId,
        asked: usize,
        answered: usize,
        fenced: BTreeMap<NodeId, FencedNode>,
    },
}

/// Where and when a write was accepted and acknowledged.
#[derive(Debug, Clone, Copy)]
struct Acked {
    node: NodeId,
    epoch: Epoch,
    lsn: Lsn,
    at_us: u64,
}

struct World {
    rng: SimRng,
    time: Timeline<Event>,
    phase: Phase,
    phase_since_us: u64,
    lease: LeaseConfig,
    failover_timeout_ms: u64,
    write_timeout_ms: u64,
    policy: AckPolicy,
    members: Vec<NodeId>,
    nodes: Vec<Node>,
    /// Partition group per node (index `id - 1`); equal groups can talk.
    groups: Vec<u8>,
    partition_generation: u64,
    /// Per directed link: latency and the last arrival (no overtaking).
    links: BTreeMap<(NodeId, NodeId), (Latency, u64)>,
    loss_chance: f64,
    fault_gap_ms: u64,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    /// The control-plane register.
    map: (Option<NodeId>, Epoch),
    orch: Orch,
    next_round: u64,
    clients: Vec<Client>,
    next_write_id: u64,
    // ---- checkers' ground truth
    /// Which node accepted writes in each epoch.
    writer_of_epoch: BTreeMap<Epoch, NodeId>,
    /// The newest epoch in which any write was accepted, and when.
    newest_accepted: Option<(Epoch, NodeId, u64)>,
    /// Accepted, not yet answered: write id → (node, epoch, lsn).
    accepted: BTreeMap<u64, (NodeId, Epoch, Lsn)>,
    acked: BTreeMap<u64, Acked>,
    report: FailoverReport,
}

fn payload(write_id: u64) -> Bytes {
    Bytes::copy_from_slice(&write_id.to_le_bytes())
}

fn write_id_of(entry: &WireEntry) -> Option<u64> {
    entry.payload.as_ref().try_into().ok().map(u64::from_le_bytes)
}

/// A snapshot chunk: entries as `lsn, epoch, len, payload`, little endian.
fn encode_entries(entries: &[WireEntry]) -> Bytes {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.lsn.to_le_bytes());
        out.extend_from_slice(&e.epoch.to_le_bytes());
        out.extend_from_slice(&(e.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.payload);
    }
    Bytes::from(out)
}

fn decode_entries(mut bytes: &[u8]) -> Result<Vec<WireEntry>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 20 {
            fail!("snapshot chunk ends inside an entry header");
        }
        let lsn = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
        let epoch = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes")) as usize;
        if bytes.len() < 20 + len {
            fail!("snapshot chunk ends inside entry {lsn}");
        }
        out.push(WireEntry { lsn, epoch, payload: Bytes::copy_from_slice(&bytes[20..20 + len]) });
        bytes = &bytes[20 + len..];
    }
    Ok(out)
}

impl Node {
    fn clock_ms(&self, now_us: u64) -> u64 {
        self.clock_start_ms + (now_us as u128 * self.rate_ppm as u128 / 1_000_000_000) as u64
    }

    /// The whole log: the snapshot's entries, then the entries after it.
    fn full_log(&self) -> Vec<WireEntry> {
        let mut log = Vec::new();
        for chunk in self.disk.base_chunks() {
            log.extend(decode_entries(chunk).expect("the simulator wrote this chunk"));
        }
        log.extend(self.disk.entries().iter().cloned());
        log
    }

    fn leading(&self) -> Option<&LeaderRole> {
        match &self.role {
            Role::Leading(l) => Some(l),
            _ => None,
        }
    }
}

impl World {
    fn new(seed: u64, config: &FailoverConfig) -> World {
        let mut rng = SimRng::new(seed);
        let n = config.nodes.unwrap_or_else(|| *rng.pick(&[3, 3, 5, 5]));
        let members: Vec<NodeId> = (1..=n as NodeId).collect();
        let policy = config.policy.clone().unwrap_or_else(|| match rng.below(4) {
            0 => AckPolicy::Async,
            1 => AckPolicy::Any(1),
            2 => AckPolicy::All,
            _ => AckPolicy::First { k: 1, among: vec![2, 3] },
        });
        let drift_percent = *rng.pick(&[0, 5, 10, 10, 25]);
        let lease = LeaseConfig { lease_ms: *rng.pick(&[150, 300, 600]), clock_drift_percent: drift_percent };
        lease.validate().expect("simulated lease settings are valid");
        // Shorter than the lease too: then only the followers' lease promise
        // (`try_fence` refusing while bound) keeps two leaders apart.
        let failover_timeout_ms = lease.lease_ms * *rng.pick(&[1, 2, 4, 8, 12]) / 8;
        let write_timeout_ms = *rng.pick(&WRITE_TIMEOUTS_MS);
        let mut nodes = Vec::new();
        for &id in &members {
            let lo = 1_000_000 * (100 - drift_percent) / 100;
            let hi = 1_000_000 * (100 + drift_percent) / 100;
            // Some nodes sit exactly at the bound: the worst case.
            let rate_ppm = match rng.below(5) {
                0 => lo,
                1 => hi,
                _ => rng.range(lo, hi),
            };
            let clock_start_ms = CLOCK_START_MS + rng.below(1_000_000);
            nodes.push(Node {
                id,
                up: true,
                incarnation: 0,
                rate_ppm,
                clock_start_ms,
                durable_epoch: 0,
                led_epoch: 0,
                disk: Disk::new(),
                history: EpochHistory::default(),
                rollback: Vec::new(),
                grantor: LeaseGrantor::new(lease, 0, clock_start_ms),
                role: Role::Idle,
                map_seen: (None, 0),
                fsync_target: None,
                fsync_latency: Latency::random(&mut rng, (50, 1500), (10, 1000), 20_000),
                fence_replies: Vec::new(),
                ticks: id,
            });
        }
        let mut links = BTreeMap::new();
        for &a in &members {
            for &b in &members {
                if a != b {
                    links.insert((a, b), (Latency::random(&mut rng, (50, 3000), (5, 2000), 30_000), 0));
                }
            }
        }
        let loss_chance = *rng.pick(&[0.0, 0.001, 0.005, 0.02]);
        let fault_gap_ms = rng.range(100, 600);
        let clients = (0..CLIENTS).map(|_| Client { target: *rng.pick(&members), busy: None }).collect::<Vec<Client>>();
        let report = FailoverReport { seed, nodes: n, policy: policy.to_string(), drift_percent, ..Default::default() };
        let mut w = World {
            rng,
            time: Timeline::new(config.verbose, config.keep_trace_tail),
            phase: Phase::Active,
            phase_since_us: 0,
            lease,
            failover_timeout_ms,
            write_timeout_ms,
            policy,
            members: members.clone(),
            nodes,
            groups: vec![0; n],
            partition_generation: 0,
            links,
            loss_chance,
            fault_gap_ms,
            conns: BTreeMap::new(),
            next_conn: 1,
            map: (None, 0),
            orch: Orch::Idle,
            next_round: 1,
            clients,
            next_write_id: 1,
            writer_of_epoch: BTreeMap::new(),
            newest_accepted: None,
            accepted: BTreeMap::new(),
            acked: BTreeMap::new(),
            report,
        };
        for &id in &members {
            let delay = w.rng.range(0, TICK_MS * 1000);
            w.schedule(delay, Event::Tick { node: id, incarnation: 0 });
        }
        w.schedule(0, Event::OrchTick);
        for client in 0..CLIENTS {
            let delay = w.rng.range(0, 20_000);
            w.schedule(delay, Event::ClientOp { client });
        }
        let gap = w.rng.exp(w.fault_gap_ms * 1000);
        w.schedule(gap, Event::Fault);
        w.schedule(config.active_ms * 1000, Event::EndActive);
        w
    }

    // ------------------------------------------------------------ plumbing

    fn schedule(&mut self, delay_us: u64, event: Event) {
        self.time.schedule(delay_us, event);
    }

    fn trace(&mut self, line: impl FnOnce() -> String) {
        self.time.trace(line);
    }

    fn mix(&mut self, x: u64) {
        self.time.mix(x);
    }

    fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    fn clock(&self, id: NodeId) -> u64 {
        self.node(id).clock_ms(self.time.now_us())
    }

    fn can_talk(&self, a: NodeId, b: NodeId) -> bool {
        self.groups[a as usize - 1] == self.groups[b as usize - 1]
    }

    /// Whether `id` is up and on a side of the partitions that holds a
    /// majority of live members (so it reaches the control plane).
    fn reaches_control(&self, id: NodeId) -> bool {
        if !self.node(id).up {
            return false;
        }
        let side = self.members.iter().filter(|&&m| self.node(m).up && self.can_talk(id, m)).count();
        side >= majority(self.members.len())
    }

    fn control_delay_us(&mut self) -> u64 {
        self.rng.range(CONTROL_DELAY_MS.0 * 1000, CONTROL_DELAY_MS.1 * 1000)
    }

    fn run(mut self) -> Result<FailoverReport, (String, u64, Vec<String>)> {
        let result = (|| {
            while let Some(event) = self.time.pop(EVENTS_MAX)? {
                self.handle(event)?;
                if self.progress()? {
                    return Ok(());
                }
            }
            fail!("the event queue ran dry")
        })();
        self.report.virtual_ms = self.time.now_us() / 1000;
        self.report.events = self.time.events();
        self.report.trace_hash = self.time.hash();
        match result {
            Ok(()) => Ok(self.report),
            Err(message) => {
                let at = self.time.now_us() / 1000;
                let message = format!("{message} [{}]", self.describe());
                Err((message, at, self.time.tail()))
            }
        }
    }

    fn describe(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                let role = match &n.role {
                    Role::Idle => "idle".to_string(),
                    Role::Leading(l) => format!("leading e{}", l.epoch),
                    Role::Following(f) => format!("following {} e{}", f.leader, f.epoch),
                };
                format!(
                    "node {} {} epoch {} last {} synced {} history {:?} {role}",
                    n.id,
                    if n.up { "up" } else { "down" },
                    n.durable_epoch,
                    n.disk.last_lsn(),
                    n.disk.synced_lsn(),
                    n.history.pairs()
                )
            })
            .collect();
        format!(
            "policy {}, lease {} ms, failover timeout {} ms, drift {} %, map {:?}; {}",
            self.policy,
            self.lease.lease_ms,
            self.failover_timeout_ms,
            self.lease.clock_drift_percent,
            self.map,
            nodes.join("; ")
        )
    }

    fn handle(&mut self, event: Event) -> Check {
        match event {
            Event::Deliver { from, to, wire } => self.deliver(from, to, wire),
            Event::CloseSide { conn, node } => self.close_side(conn, node),
            Event::Tick { node, incarnation } => self.tick(node, incarnation),
            Event::Fsync { node, incarnation, generation, target } => {
                self.fsync_done(node, incarnation, generation, target)
            }
            Event::MapLearn { node, incarnation, leader, epoch } => {
                let n = self.node(node);
                if !n.up || n.incarnation != incarnation {
                    return Ok(());
                }
                self.learn_map(node, leader, epoch)
            }
            Event::OrchTick => self.orch_tick(),
            Event::OrchCollect { round } => self.orch_collect(round),
            Event::Cas { round, expected, leader, epoch, failover } => {
                self.cas(round, expected, leader, epoch, failover);
                Ok(())
            }
            Event::ClientOp { client } => {
                self.client_op(client);
                Ok(())
            }
            Event::ClientArrive { client, write_id, node } => self.client_arrive(client, write_id, node),
            Event::ClientReply { client, write_id, ok, hint } => {
                self.client_reply(client, write_id, ok, hint);
                Ok(())
            }
            Event::ClientTimeout { client, write_id } => {
                if self.clients[client].busy == Some(write_id) {
                    self.trace(|| format!("client {client}: write {write_id} timed out"));
                    self.clients[client].busy = None;
                    self.clients[client].target = *self.rng.pick(&self.members);
                    self.next_client_op(client);
                }
                Ok(())
            }
            Event::Fault => {
                if self.phase == Phase::Active {
                    self.fault();
                    let gap = self.rng.exp(self.fault_gap_ms * 1000);
                    self.schedule(gap, Event::Fault);
                }
                Ok(())
            }
            Event::HealPartition { generation } => {
                if generation == self.partition_generation {
                    self.heal_partitions();
                }
                Ok(())
            }
            Event::Restart { node, incarnation } => {
                if !self.node(node).up && self.node(node).incarnation == incarnation {
                    self.restart(node);
                }
                Ok(())
            }
            Event::EndActive => {
                self.end_active();
                Ok(())
            }
        }
    }

    // ------------------------------------------------------------ network

    /// Puts a message on the wire from `from` to `to`. Stream messages on a
    /// broken connection vanish; a partition or a loss breaks the connection.
    fn send(&mut self, from: NodeId, to: NodeId, wire: Wire) {
        if let Wire::Stream { conn, .. } = &wire {
            let conn = *conn;
            if self.conns.get(&conn).is_none_or(|c| c.broken) {
                return;
            }
            if !self.can_talk(from, to) || (self.loss_chance > 0.0 && self.rng.chance(self.loss_chance)) {
                self.trace(|| format!("link {from}->{to}: lost, connection {conn} resets"));
                self.break_conn(conn);
                return;
            }
        } else if !self.can_talk(from, to) || (self.loss_chance > 0.0 && self.rng.chance(self.loss_chance)) {
            return;
        }
        if from == to {
            self.schedule(0, Event::Deliver { from, to, wire });
            return;
        }
        let (latency, last) = self.links[&(from, to)];
        let arrive = (self.time.now_us() + latency.sample(&mut self.rng)).max(last);
        self.links.get_mut(&(from, to)).expect("every pair has a link").1 = arrive;
        self.schedule(arrive - self.time.now_us(), Event::Deliver { from, to, wire });
    }

    fn send_peer(&mut self, from: NodeId, to: NodeId, conn: u64, msg: &PeerMsg) {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        self.send(from, to, Wire::Stream { conn, bytes });
    }

    fn send_lease(&mut self, from: NodeId, to: NodeId, msg: &PeerMsg) {
        let mut bytes = Vec::new();
        msg.encode(&mut bytes);
        self.send(from, to, Wire::Lease { bytes });
    }

    fn send_rpc(&mut self, from: NodeId, to: NodeId, round: u64, msg: &FailoverRpc) {
        self.send(from, to, Wire::Rpc { round, bytes: msg.encode() });
    }

    fn break_conn(&mut self, conn: u64) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.broken {
            return;
        }
        c.broken = true;
        let (a, b) = (c.follower, c.leader);
        let d1 = self.rng.range(0, NOTICE_RESET_US_MAX);
        let d2 = self.rng.range(0, NOTICE_RESET_US_MAX);
        self.schedule(d1, Event::CloseSide { conn, node: a });
        self.schedule(d2, Event::CloseSide { conn, node: b });
    }

    fn close_side(&mut self, conn: u64, id: NodeId) -> Check {
        let now = self.clock(id);
        let node = self.node_mut(id);
        if !node.up {
            return Ok(());
        }
        match &mut node.role {
            Role::Leading(l) => {
                let Some((&f, _)) = l.conns.iter().find(|(_, &c)| c == conn) else { return Ok(()) };
                l.conns.remove(&f);
                l.core.handle_disconnect(now, f);
                self.pump_leader(id)?;
            }
            Role::Following(f) if f.conn == Some(conn) => {
                self.follower_lost_connection(id);
            }
            _ => {}
        }
        if self.conns.get(&conn).is_some_and(|c| c.broken) {
            let c = &self.conns[&conn];
            let other = if c.follower == id { c.leader } else { c.follower };
            let other_done = match &self.node(other).role {
                Role::Leading(l) => !l.conns.values().any(|&c| c == conn),
                Role::Following(f) => f.conn != Some(conn),
                Role::Idle => true,
            };
            if other_done {
                self.conns.remove(&conn);
            }
        }
        Ok(())
    }

    fn follower_lost_connection(&mut self, id: NodeId) {
        let now = self.clock(id);
        let now_us = self.time.now_us();
        let jitter = self.rng.range(0, 1000);
        let node = self.node_mut(id);
        // Like the node, each connection starts from what the disk holds (an
        // interrupted snapshot left the old log in place).
        let (epoch, last, synced, history) =
            (node.durable_epoch, node.disk.last_lsn(), node.disk.synced_lsn(), node.history.clone());
        let Role::Following(f) = &mut node.role else { return };
        f.conn = None;
        f.snapshot_rx = None;
        f.welcome_history = None;
        f.core.handle_disconnect(now);
        if !matches!(f.core.state(), FollowerState::Disconnected) || f.core.last_lsn() != last {
            f.core = Follower::new(id, epoch, last, synced.min(last), now);
            f.core.set_history(history);
        }
        f.retry_at_us = now_us + f.backoff_ms * 1000 + jitter * f.backoff_ms / 2;
        f.backoff_ms = (f.backoff_ms * 2).min(BACKOFF_MS_MAX);
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, wire: Wire) -> Check {
        if !self.node(to).up {
            // A crashed process resets the connections that reach it.
            if let Wire::Stream { conn, .. } = wire {
                self.break_conn(conn);
            }
            return Ok(());
        }
        match wire {
            Wire::Stream { conn, bytes } => {
                if self.conns.get(&conn).is_none_or(|c| c.broken) {
                    return Ok(());
                }
                if !self.can_talk(from, to) {
                    self.break_conn(conn);
                    return Ok(());
                }
                let msg = match PeerMsg::decode(&bytes) {
                    Ok(msg) => msg,
                    Err(e) => fail!("a message encoded by the core does not decode: {e}"),
                };
                if self.conns[&conn].leader == to {
                    self.leader_receive(to, from, conn, msg)
                } else {
                    self.follower_receive(to, conn, msg)
                }
            }
            Wire::Lease { bytes } => {
                if !self.can_talk(from, to) {
                    return Ok(());
                }
                match PeerMsg::decode(&bytes) {
                    Ok(PeerMsg::LeaseRequest { epoch, stamp_ms }) => self.lease_request(to, from, epoch, stamp_ms),
                    Ok(PeerMsg::LeaseGrant { stamp_ms }) => {
                        if let Role::Leading(l) = &mut self.node_mut(to).role {
                            l.keeper.handle_grant(from, stamp_ms);
                        }
                        Ok(())
                    }
                    Ok(other) => fail!("a lease message that is not one: {other:?}"),
                    Err(e) => fail!("a lease message does not decode: {e}"),
                }
            }
            Wire::Rpc { round, bytes } => {
                if !self.can_talk(from, to) {
                    return Ok(());
                }
                let msg = match FailoverRpc::decode(&bytes) {
                    Ok(msg) => msg,
                    Err(e) => fail!("{e}"),
                };
                self.rpc(to, from, round, msg)
            }
        }
    }

    // ------------------------------------------------------------ node

    fn tick(&mut self, id: NodeId, incarnation: u64) -> Check {
        let node = self.node(id);
        if !node.up || node.incarnation != incarnation {
            return Ok(());
        }
        let now = node.clock_ms(self.time.now_us());
        // Timers run on the node's clock: a fast clock ticks more often.
        let next = TICK_MS * 1_000_000_000 / node.rate_ppm;
        self.schedule(next, Event::Tick { node: id, incarnation });
        let node = self.node_mut(id);
        node.ticks += 1;
        let poll_map = node.ticks.is_multiple_of(MAP_POLL_MS / TICK_MS);
        if poll_map && self.reaches_control(id) {
            let (leader, epoch) = self.map;
            let delay = self.control_delay_us();
            self.schedule(delay, Event::MapLearn { node: id, incarnation, leader, epoch });
        }
        let now_us = self.time.now_us();
        let lease_every = self.lease.lease_ms / 4;
        let mut lease_epoch = None;
        let mut resubscribe = false;
        let leading = match &mut self.node_mut(id).role {
            Role::Leading(l) => {
                if now >= l.next_lease_ms {
                    l.next_lease_ms = now + lease_every;
                    lease_epoch = Some(l.epoch);
                }
                l.core.handle_timeout(now);
                true
            }
            Role::Following(f) => {
                resubscribe = f.conn.is_none() && now_us >= f.retry_at_us;
                false
            }
            Role::Idle => false,
        };
        if let Some(epoch) = lease_epoch {
            let msg = PeerMsg::LeaseRequest { epoch, stamp_ms: now };
            for to in self.members.clone() {
                if to != id {
                    self.send_lease(id, to, &msg);
                }
            }
        }
        if leading {
            self.pump_leader(id)?;
        }
        if resubscribe {
            self.subscribe(id);
        }
        Ok(())
    }

    /// The node learned the map (from the control plane).
    fn learn_map(&mut self, id: NodeId, leader: Option<NodeId>, epoch: Epoch) -> Check {
        let node = self.node_mut(id);
        if epoch < node.map_seen.1 {
            return Ok(());
        }
        node.map_seen = (leader, epoch);
        let Some(leader) = leader else { return Ok(()) };
        // A leader of an older epoch stops as soon as it learns a newer one.
        if let Role::Leading(l) = &node.role {
            if l.epoch < epoch || leader != id {
                let why = format!("learned map epoch {epoch} (leader {leader})");
                self.step_down(id, &why);
            }
        }
        let node = self.node(id);
        if epoch < node.durable_epoch {
            // Fenced past this map: wait for the control plane to promote.
            return Ok(());
        }
        if leader == id {
            let leading_now = matches!(&node.role, Role::Leading(l) if l.epoch == epoch);
            if !leading_now && may_lead(epoch, node.durable_epoch, node.led_epoch) {
                self.become_leader(id, epoch);
            }
            return Ok(());
        }
        let following_now = matches!(&node.role, Role::Following(f) if f.leader == leader && f.epoch == epoch);
        if !following_now {
            self.raise_epoch(id, epoch);
            self.follow(id, leader, epoch);
        }
        Ok(())
    }

    /// Persists a higher epoch (the node learned it).
    fn raise_epoch(&mut self, id: NodeId, epoch: Epoch) {
        let node = self.node_mut(id);
        if epoch > node.durable_epoch {
            node.durable_epoch = epoch;
            node.grantor.raise_floor(epoch);
        }
    }

    fn become_leader(&mut self, id: NodeId, epoch: Epoch) {
        self.drop_role(id);
        let now = self.clock(id);
        let others: Vec<NodeId> = self.members.iter().copied().filter(|&m| m != id).collect();
        let lease = self.lease;
        let n = self.members.len();
        let node = self.node_mut(id);
        node.durable_epoch = node.durable_epoch.max(epoch);
        node.led_epoch = epoch;
        node.grantor.raise_floor(epoch);
        let last = node.disk.last_lsn();
        node.history.record(epoch, last + 1);
        let mut core = Leader::new(
            LeaderConfig::new(id, format!("sim:{id}"), others.clone()),
            epoch,
            last,
            node.disk.synced_lsn(),
            now,
        );
        core.set_history(node.history.clone());
        node.role = Role::Leading(Box::new(LeaderRole {
            core,
            keeper: LeaseKeeper::new(lease, &others, n),
            epoch,
            conns: BTreeMap::new(),
            next_lease_ms: now,
            waiting: BTreeMap::new(),
        }));
        self.trace(|| format!("node {id}: leads epoch {epoch} from lsn {last}"));
        self.fsync_start(id);
    }

    fn follow(&mut self, id: NodeId, leader: NodeId, epoch: Epoch) {
        self.drop_role(id);
        let now = self.clock(id);
        let node = self.node_mut(id);
        let mut core = Follower::new(id, node.durable_epoch, node.disk.last_lsn(), node.disk.synced_lsn(), now);
        core.set_history(node.history.clone());
        node.role = Role::Following(Box::new(FollowerRole {
            core,
            leader,
            epoch,
            conn: None,
            retry_at_us: 0,
            backoff_ms: BACKOFF_MS_MIN,
            snapshot_rx: None,
            welcome_history: None,
            since_ms: now,
        }));
        self.trace(|| format!("node {id}: follows {leader} at epoch {epoch}"));
        self.subscribe(id);
    }

    /// Ends the node's current role: a leader answers its waiting writes with
    /// an error; connections are dropped.
    fn drop_role(&mut self, id: NodeId) {
        let role = std::mem::replace(&mut self.node_mut(id).role, Role::Idle);
        match role {
            Role::Idle => {}
            Role::Leading(l) => {
                for conn in l.conns.values() {
                    self.break_conn(*conn);
                }
                for (write_id, client) in l.waiting {
                    self.accepted.remove(&write_id);
                    self.reply_client(client, write_id, id, false);
                }
            }
            Role::Following(f) => {
                if let Some(conn) = f.conn {
                    self.break_conn(conn);
                }
            }
        }
    }

    fn step_down(&mut self, id: NodeId, why: &str) {
        self.trace(|| format!("node {id}: stops leading: {why}"));
        self.drop_role(id);
    }

    fn subscribe(&mut self, id: NodeId) {
        let conn = self.next_conn;
        let node = self.node_mut(id);
        let Role::Following(f) = &mut node.role else { return };
        if f.conn.is_some() {
            return;
        }
        let leader = f.leader;
        f.conn = Some(conn);
        let msg = f.core.subscribe(format!("sim:{id}"), 0);
        self.next_conn += 1;
        self.conns.insert(conn, Conn { follower: id, leader, broken: false });
        self.trace(|| format!("node {id}: subscribes to {leader} on connection {conn}: {msg:?}"));
        self.send_peer(id, leader, conn, &msg);
    }

    fn lease_request(&mut self, id: NodeId, from: NodeId, epoch: Epoch, stamp_ms: u64) -> Check {
        let now = self.clock(id);
        if let Role::Leading(l) = &self.node(id).role {
            if l.epoch < epoch {
                self.step_down(id, &format!("lease request from node {from} at epoch {epoch}"));
            } else {
                return Ok(());
            }
        }
        let granted = self.node_mut(id).grantor.handle_request(now, epoch);
        if granted {
            self.send_lease(id, from, &PeerMsg::LeaseGrant { stamp_ms });
        }
        Ok(())
    }

    fn rpc(&mut self, id: NodeId, from: NodeId, round: u64, msg: FailoverRpc) -> Check {
        match msg {
            FailoverRpc::Probe => {
                let report = self.node_report(id);
                self.send_rpc(id, from, round, &FailoverRpc::Report(report));
            }
            FailoverRpc::Fence { old_epoch } => self.fence(id, from, round, old_epoch),
            FailoverRpc::Report(r) => {
                let members = self.members.len();
                if let Orch::Probing { round: cur, orch, reports } = &mut self.orch {
                    if *cur == round && *orch == id {
                        reports.insert(from, r);
                        if reports.len() == members {
                            self.orch_collect(round)?;
                        }
                    }
                }
            }
            FailoverRpc::Fenced(f) => {
                if let Orch::Fencing { round: cur, orch, fenced, answered, asked, .. } = &mut self.orch {
                    if *cur == round && *orch == id {
                        fenced.insert(from, f);
                        *answered += 1;
                        if answered == asked {
                            self.orch_collect(round)?;
                        }
                    }
                }
            }
            FailoverRpc::Bound { remaining_ms } => {
                self.report.fences_bound += 1;
                self.trace(|| format!("orchestrator: node {from} is bound for {remaining_ms} ms"));
                if let Orch::Fencing { round: cur, orch, answered, asked, .. } = &mut self.orch {
                    if *cur == round && *orch == id {
                        *answered += 1;
                        if answered == asked {
                            self.orch_collect(round)?;
                        }
                    }
                }
            }
            other => fail!("unexpected failover message {other:?}"),
        }
        Ok(())
    }

    fn node_report(&self, id: NodeId) -> NodeReport {
        let node = self.node(id);
        let now = node.clock_ms(self.time.now_us());
        let last = node.disk.last_lsn();
        let (leading, lease_valid, since_leader_ms) = match &node.role {
            Role::Leading(l) => (true, l.keeper.is_valid(now), 0),
            Role::Following(f) => (false, false, node.grantor.since_grant_ms(now).min(now - f.since_ms)),
            Role::Idle => (false, false, node.grantor.since_grant_ms(now)),
        };
        NodeReport {
            epoch: node.durable_epoch,
            leading,
            lease_valid,
            since_leader_ms,
            last_entry_epoch: node.history.last_epoch(last),
            last_lsn: last,
        }
    }

    fn fence(&mut self, id: NodeId, orch: NodeId, round: u64, old_epoch: Epoch) {
        let now = self.clock(id);
        let node = self.node_mut(id);
        match node.grantor.try_fence(now, old_epoch) {
            Err(bound) => {
                self.send_rpc(id, orch, round, &FailoverRpc::Bound { remaining_ms: bound.remaining_ms });
            }
            Ok(floor) => {
                node.durable_epoch = node.durable_epoch.max(floor);
                let stale = match &node.role {
                    Role::Leading(l) => l.epoch <= old_epoch,
                    Role::Following(f) => f.epoch <= old_epoch,
                    Role::Idle => false,
                };
                if stale {
                    self.trace(|| format!("node {id}: fenced epoch {old_epoch}, drops its role"));
                    self.drop_role(id);
                }
                self.node_mut(id).fence_replies.push((orch, round));
                self.fsync_start(id);
                self.answer_fences(id);
            }
        }
    }

    /// Sends the `Fenced` answers owed once the log is durable to its end.
    fn answer_fences(&mut self, id: NodeId) {
        let node = self.node(id);
        if node.fence_replies.is_empty() || node.disk.synced_lsn() < node.disk.last_lsn() {
            return;
        }
        let last = node.disk.last_lsn();
        let answer = FencedNode { last_entry_epoch: node.history.last_epoch(last), last_lsn: last };
        let replies = std::mem::take(&mut self.node_mut(id).fence_replies);
        for (orch, round) in replies {
            self.send_rpc(id, orch, round, &FailoverRpc::Fenced(answer));
        }
    }

    // ------------------------------------------------------------ disk

    fn fsync_start(&mut self, id: NodeId) {
        let node = self.node(id);
        if node.fsync_target.is_some() || !node.up {
            return;
        }
        let Some(target) = node.disk.pending_sync() else { return };
        let (incarnation, generation) = (node.incarnation, node.disk.generation());
        let latency = node.fsync_latency;
        let delay = latency.sample(&mut self.rng);
        self.node_mut(id).fsync_target = Some(target);
        self.schedule(delay, Event::Fsync { node: id, incarnation, generation, target });
    }

    fn fsync_done(&mut self, id: NodeId, incarnation: u64, generation: u64, target: Lsn) -> Check {
        let now = self.clock(id);
        let node = self.node_mut(id);
        if node.incarnation != incarnation || !node.up {
            return Ok(());
        }
        if node.disk.generation() == generation {
            node.fsync_target = None;
        }
        if node.disk.synced(generation, target) {
            match &mut node.role {
                Role::Leading(l) => l.core.handle_local_durable(now, target.max(l.core.durable_lsn())),
                Role::Following(f) => f.core.handle_flushed(target),
                Role::Idle => {}
            }
        }
        self.fsync_start(id);
        self.answer_fences(id);
        match &self.node(id).role {
            Role::Leading(_) => self.pump_leader(id)?,
            Role::Following(_) => self.follower_send_ack(id),
            Role::Idle => {}
        }
        Ok(())
    }

    fn crash(&mut self, id: NodeId) {
        if !self.node(id).up {
            return;
        }
        if self.map.0 == Some(id) {
            self.report.leader_crashes += 1;
        }
        self.report.crashes += 1;
        let role = std::mem::replace(&mut self.node_mut(id).role, Role::Idle);
        match role {
            Role::Leading(l) => {
                for (write_id, _) in l.waiting {
                    self.accepted.remove(&write_id);
                }
                for conn in l.conns.values() {
                    self.break_conn(*conn);
                }
            }
            Role::Following(f) => {
                if let Some(conn) = f.conn {
                    self.break_conn(conn);
                }
            }
            Role::Idle => {}
        }
        let node = self.node_mut(id);
        node.up = false;
        node.incarnation += 1;
        node.fsync_target = None;
        node.fence_replies.clear();
        node.disk.crash();
        let kept = node.disk.last_lsn();
        node.history.truncate_after(kept);
        let incarnation = node.incarnation;
        self.trace(|| format!("node {id}: crash (disk keeps lsn {kept})"));
        let delay = self.rng.range(RESTART_MS.0, RESTART_MS.1) * 1000;
        if self.phase == Phase::Active {
            self.schedule(delay, Event::Restart { node: id, incarnation });
        }
    }

    fn restart(&mut self, id: NodeId) {
        let now = self.clock(id);
        let lease = self.lease;
        let node = self.node_mut(id);
        node.up = true;
        node.grantor = LeaseGrantor::new(lease, node.durable_epoch, now);
        node.map_seen = (None, 0);
        let incarnation = node.incarnation;
        let kept = node.disk.last_lsn();
        self.trace(|| format!("node {id}: restarts with lsn {kept}"));
        self.schedule(0, Event::Tick { node: id, incarnation });
    }

    // ------------------------------------------------------------ leader

    fn leader_receive(&mut self, id: NodeId, from: NodeId, conn: u64, msg: PeerMsg) -> Check {
        let now = self.clock(id);
        let node = self.node_mut(id);
        let Role::Leading(l) = &mut node.role else {
            // Not leading (any more): refuse and close.
            if matches!(msg, PeerMsg::Subscribe { .. }) {
                let refuse = PeerMsg::Refuse { reason: format!("node {id} is not leading") };
                self.send_peer(id, from, conn, &refuse);
            }
            self.break_conn(conn);
            return Ok(());
        };
        match msg {
            PeerMsg::Subscribe { node_id, epoch, last_lsn, history, .. } => {
                if node_id != from {
                    fail!("node {from} subscribed as node {node_id}");
                }
                let first_retained = node.disk.base_lsn() + 1;
                let reply = l.core.handle_subscribe(now, from, epoch, last_lsn, &history, first_retained);
                self.trace(|| format!("node {id}: subscribe from {from} at lsn {last_lsn} -> {reply:?}"));
                match reply {
                    PeerMsg::Welcome { .. } => {
                        let Role::Leading(l) = &mut self.node_mut(id).role else { unreachable!("leading") };
                        if let Some(old) = l.conns.insert(from, conn) {
                            self.break_conn(old);
                        }
                        self.send_peer(id, from, conn, &reply);
                        self.pump_leader(id)?;
                    }
                    refuse => {
                        self.send_peer(id, from, conn, &refuse);
                        self.break_conn(conn);
                        if epoch > self.node(id).leading().map_or(0, |l| l.epoch) {
                            self.step_down(id, &format!("subscriber {from} has seen epoch {epoch}"));
                        }
                    }
                }
            }
            PeerMsg::Ack { flushed_lsn, applied_lsn } => {
                if l.conns.get(&from) == Some(&conn) {
                    l.core.handle_ack(now, from, flushed_lsn, applied_lsn);
                    self.pump_leader(id)?;
                }
            }
            PeerMsg::Refuse { reason } => {
                self.trace(|| format!("node {id}: node {from} refused the stream: {reason}"));
                self.break_conn(conn);
            }
            other => fail!("node {id} (leading) received a follower-bound message from node {from}: {other:?}"),
        }
        Ok(())
    }

    fn pump_leader(&mut self, id: NodeId) -> Check {
        let now = self.clock(id);
        loop {
            let Role::Leading(l) = &mut self.node_mut(id).role else { return Ok(()) };
            let Some(t) = l.core.poll_transmit(now) else { break };
            self.execute_transmit(id, t)?;
        }
        let mut releases = Vec::new();
        if let Role::Leading(l) = &mut self.node_mut(id).role {
            while let Some(r) = l.core.poll_release() {
                let client = l.waiting.remove(&r.token).expect("every release has a waiting write");
                releases.push((client, r));
            }
        }
        for (client, r) in releases {
            self.mix(r.token);
            let ok = matches!(r.outcome, Outcome::Acked);
            if !ok {
                self.accepted.remove(&r.token);
            }
            self.trace(|| format!("node {id}: write {} -> {:?}", r.token, r.outcome));
            self.reply_client(client, r.token, id, ok);
        }
        Ok(())
    }

    fn execute_transmit(&mut self, id: NodeId, t: Transmit) -> Check {
        let now = self.clock(id);
        let node = self.node(id);
        let Some(l) = node.leading() else { unreachable!("pump only runs while leading") };
        let epoch = l.epoch;
        match t {
            Transmit::Entries { to, from_lsn, max_bytes } => {
                let Some(&conn) = l.conns.get(&to) else { fail!("node {id}: entries for {to}, not connected") };
                let last = l.core.last_lsn();
                if node.disk.entry(from_lsn).is_none() {
                    // Below the snapshot the log starts after: the follower
                    // resubscribes and gets a snapshot.
                    self.break_conn(conn);
                    if let Role::Leading(l) = &mut self.node_mut(id).role {
                        l.conns.remove(&to);
                        l.core.handle_disconnect(now, to);
                    }
                    return Ok(());
                }
                let mut entries = Vec::new();
                let mut bytes = 0;
                let mut lsn = from_lsn;
                while lsn <= last {
                    let e = node.disk.entry(lsn).expect("the leader's log holds every lsn up to its last");
                    if !entries.is_empty() && bytes + e.payload.len() > max_bytes {
                        break;
                    }
                    bytes += e.payload.len();
                    entries.push(e.clone());
                    lsn += 1;
                }
                let sent_to = lsn - 1;
                let msg = PeerMsg::Entries { epoch, entries, leader_last_lsn: last, leader_now_ms: now };
                let mut encoded = Vec::new();
                msg.encode(&mut encoded);
                self.send(id, to, Wire::Stream { conn, bytes: encoded.clone() });
                if let Role::Leading(l) = &mut self.node_mut(id).role {
                    l.core.handle_sent(now, to, sent_to, encoded.len());
                }
            }
            Transmit::Snapshot { to } => {
                let Some(&conn) = l.conns.get(&to) else { fail!("node {id}: snapshot for {to}, not connected") };
                let start = l.core.last_lsn();
                let log = node.full_log();
                if log.len() as Lsn != start {
                    fail!("node {id}: its log holds {} entries but ends at lsn {start}", log.len());
                }
                self.report.snapshots += 1;
                self.trace(|| format!("node {id}: snapshot at lsn {start} to {to}"));
                self.send_peer(id, to, conn, &PeerMsg::SnapshotBegin { epoch, start_lsn: start });
                for chunk in log.chunks(SNAPSHOT_CHUNK_ENTRIES) {
                    self.send_peer(id, to, conn, &PeerMsg::SnapshotChunk { bytes: encode_entries(chunk) });
                }
                self.send_peer(id, to, conn, &PeerMsg::SnapshotEnd { end_lsn: start });
                if let Role::Leading(l) = &mut self.node_mut(id).role {
                    l.core.handle_snapshot_sent(now, to, start);
                }
            }
            Transmit::Heartbeat { to, msg } => {
                let Some(&conn) = l.conns.get(&to) else { fail!("node {id}: heartbeat for {to}, not connected") };
                self.send_peer(id, to, conn, &msg);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ follower

    fn follower_receive(&mut self, id: NodeId, conn: u64, msg: PeerMsg) -> Check {
        let now = self.clock(id);
        let durable_epoch = self.node(id).durable_epoch;
        let Role::Following(f) = &mut self.node_mut(id).role else { return Ok(()) };
        if f.conn != Some(conn) {
            return Ok(());
        }
        let leader = f.leader;
        let kind = msg.kind();
        // A node refuses every replication message from below its epoch.
        let msg_epoch = match &msg {
            PeerMsg::Welcome { epoch, .. }
            | PeerMsg::Entries { epoch, .. }
            | PeerMsg::Heartbeat { epoch, .. }
            | PeerMsg::SnapshotBegin { epoch, .. } => Some(*epoch),
            _ => None,
        };
        let result: Result<(), String> = if msg_epoch.is_some_and(|e| e < durable_epoch) {
            Err(format!("{kind} from epoch {} below this node's epoch {durable_epoch}", msg_epoch.unwrap_or(0)))
        } else {
            match msg {
                PeerMsg::Welcome { leader_id, epoch, leader_client_addr, stream_from, history, diverged_after } => {
                    // Roll back first (the stream continues after the
                    // divergence point), but never on a stale leader's word.
                    let fresh_leader = epoch >= f.core.epoch() && f.core.state() == FollowerState::Disconnected;
                    if let (Some(p), true) = (diverged_after, fresh_leader) {
                        if !self.roll_back_after(id, p) {
                            self.break_conn(conn);
                            return Ok(());
                        }
                    }
                    let Role::Following(f) = &mut self.node_mut(id).role else { unreachable!("following") };
                    let r = f.core.handle_welcome(now, leader_id, epoch, leader_client_addr, stream_from);
                    if r.is_ok() {
                        f.backoff_ms = BACKOFF_MS_MIN;
                        if stream_from == STREAM_FROM_SNAPSHOT {
                            f.welcome_history = Some(EpochHistory::from_pairs(history));
                        }
                        self.raise_epoch(id, epoch);
                    }
                    r
                }
                PeerMsg::Entries { epoch, entries, leader_last_lsn, leader_now_ms } => {
                    match f.core.handle_entries(now, epoch, &entries, leader_last_lsn, leader_now_ms) {
                        Ok(fresh) => {
                            let fresh = fresh.to_vec();
                            let history = f.core.history().clone();
                            if let Some(last) = fresh.last() {
                                f.core.handle_applied(last.lsn, 0);
                            }
                            let node = self.node_mut(id);
                            for e in fresh {
                                node.disk.append(e);
                            }
                            node.history = history;
                            self.fsync_start(id);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
                PeerMsg::Heartbeat { epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms } => {
                    f.core.handle_heartbeat(now, epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms)
                }
                PeerMsg::SnapshotBegin { epoch, start_lsn } => {
                    // The old log stays until the snapshot is installed.
                    let r = f.core.handle_snapshot_begin(now, epoch, start_lsn);
                    if r.is_ok() {
                        f.snapshot_rx = Some((start_lsn, Vec::new()));
                    }
                    r
                }
                PeerMsg::SnapshotChunk { bytes } => match (&mut f.snapshot_rx, decode_entries(&bytes)) {
                    (Some((_, got)), Ok(entries)) => {
                        got.extend(entries);
                        Ok(())
                    }
                    (None, _) => Err("snapshot chunk outside a snapshot".into()),
                    (_, Err(e)) => fail!("node {id}: {e}"),
                },
                PeerMsg::SnapshotEnd { end_lsn } => self.snapshot_end(id, end_lsn)?,
                PeerMsg::Refuse { reason } => {
                    self.trace(|| format!("node {id}: leader {leader} refused: {reason}"));
                    self.break_conn(conn);
                    return Ok(());
                }
                other => fail!("node {id} (following) received a leader-bound message: {other:?}"),
            }
        };
        if let Err(reason) = result {
            self.trace(|| format!("node {id}: refuses a {kind} from {leader}: {reason}"));
            self.check_refusal(id, &reason)?;
            self.send_peer(id, leader, conn, &PeerMsg::Refuse { reason });
            self.break_conn(conn);
            return Ok(());
        }
        self.follower_send_ack(id);
        Ok(())
    }

    /// A follower refused a leader's message. Only epoch refusals are
    /// legitimate (a leader may keep sending after a newer epoch fenced it);
    /// anything else means a correct leader sent what a correct follower
    /// must refuse.
    fn check_refusal(&self, id: NodeId, reason: &str) -> Check {
        if reason.contains("older than epoch") || reason.contains("below this node's epoch") {
            return Ok(());
        }
        fail!("replication stream checker: node {id} refused its leader's stream: {reason}")
    }

    /// `Welcome.diverged_after = p`: every entry after `p` goes to the
    /// durable rollback records. Like the node, the log itself is kept as it
    /// is (and reported if the node is fenced) until the snapshot that
    /// follows is complete and replaces it in one step (decision 0009).
    /// Returns false if the node cannot take the rollback now.
    fn roll_back_after(&mut self, id: NodeId, p: Lsn) -> bool {
        let node = self.node(id);
        let rolled: Vec<WireEntry> =
            node.disk.entries().iter().filter(|e| e.lsn > p && !node.rollback.contains(e)).cloned().collect();
        let count = rolled.len();
        self.report.rolled_back += count as u64;
        let node = self.node_mut(id);
        node.rollback.extend(rolled);
        if let Role::Following(f) = &mut node.role {
            f.core.handle_rolled_back(p);
        }
        self.trace(|| format!("node {id}: saves {count} entries after lsn {p} to its rollback records"));
        true
    }

    fn snapshot_end(&mut self, id: NodeId, end_lsn: Lsn) -> Result<Check, String> {
        let now = self.clock(id);
        let Role::Following(f) = &mut self.node_mut(id).role else { unreachable!("following") };
        let Some((start, entries)) = f.snapshot_rx.take() else {
            return Ok(Err("snapshot end without a begin".into()));
        };
        if let Err(e) = f.core.handle_snapshot_end(now, end_lsn) {
            return Ok(Err(e));
        }
        if entries.len() as Lsn != start || entries.iter().enumerate().any(|(i, e)| e.lsn != i as Lsn + 1) {
            fail!("node {id}: a snapshot at lsn {start} carried {} entries out of order", entries.len());
        }
        let history = f.welcome_history.take().unwrap_or_default();
        f.core.set_history(history.clone());
        f.core.handle_applied(start, 0);
        let node = self.node_mut(id);
        let chunks = entries.chunks(SNAPSHOT_CHUNK_ENTRIES).map(encode_entries).collect();
        node.disk.replace_with_snapshot(start, chunks);
        node.fsync_target = None;
        node.history = history;
        self.fsync_start(id);
        Ok(Ok(()))
    }

    fn follower_send_ack(&mut self, id: NodeId) {
        let now = self.clock(id);
        let Role::Following(f) = &mut self.node_mut(id).role else { return };
        let (Some(conn), leader) = (f.conn, f.leader) else { return };
        if let Some(ack) = f.core.poll_ack(now) {
            self.send_peer(id, leader, conn, &ack);
        }
    }

    // ------------------------------------------------------------ control plane

    fn orch_tick(&mut self) -> Check {
        self.schedule(PROBE_INTERVAL_MS * 1000, Event::OrchTick);
        if !matches!(self.orch, Orch::Idle) {
            return Ok(());
        }
        let Some(orch) = self.members.iter().copied().find(|&m| self.reaches_control(m)) else { return Ok(()) };
        let round = self.next_round;
        self.next_round += 1;
        self.orch = Orch::Probing { round, orch, reports: BTreeMap::new() };
        for m in self.members.clone() {
            self.send_rpc(orch, m, round, &FailoverRpc::Probe);
        }
        self.schedule(PROBE_WAIT_MS * 1000, Event::OrchCollect { round });
        Ok(())
    }

    fn orch_collect(&mut self, round: u64) -> Check {
        match std::mem::replace(&mut self.orch, Orch::Idle) {
            Orch::Probing { round: cur, orch, reports } if cur == round => {
                if !self.reaches_control(orch) {
                    return Ok(());
                }
                let (leader, epoch) = self.map;
                match assess(&self.members, leader, epoch, &reports, self.failover_timeout_ms) {
                    Assessment::Healthy | Assessment::Wait(_) => {}
                    Assessment::Bootstrap { leader, epoch: new_epoch } => {
                        self.trace(|| format!("orchestrator {orch}: bootstrap {leader} at epoch {new_epoch}"));
                        let delay = self.control_delay_us();
                        let cas = Event::Cas { round, expected: epoch, leader, epoch: new_epoch, failover: false };
                        self.schedule(delay, cas);
                    }
                    Assessment::Fence { old_epoch, targets } => {
                        let old_leader = leader.expect("fencing needs a leader");
                        self.trace(|| format!("orchestrator {orch}: fence epoch {old_epoch} on {targets:?}"));
                        let round = self.next_round;
                        self.next_round += 1;
                        let asked = targets.len();
                        self.orch = Orch::Fencing {
                            round,
                            orch,
                            old_epoch,
                            old_leader,
                            asked,
                            answered: 0,
                            fenced: BTreeMap::new(),
                        };
                        for t in targets {
                            self.send_rpc(orch, t, round, &FailoverRpc::Fence { old_epoch });
                        }
                        self.schedule(FENCE_WAIT_MS * 1000, Event::OrchCollect { round });
                    }
                }
            }
            Orch::Fencing { round: cur, orch, old_epoch, old_leader, fenced, .. } if cur == round => {
                if !self.reaches_control(orch) {
                    return Ok(());
                }
                match choose_leader(&self.policy, &self.members, old_leader, &fenced) {
                    Ok(leader) => {
                        self.trace(|| format!("orchestrator {orch}: promote {leader} (fenced {fenced:?})"));
                        let delay = self.control_delay_us();
                        let cas =
                            Event::Cas { round, expected: old_epoch, leader, epoch: old_epoch + 1, failover: true };
                        self.schedule(delay, cas);
                    }
                    Err(why) => self.trace(|| format!("orchestrator {orch}: no promotion: {why}")),
                }
            }
            other => self.orch = other,
        }
        Ok(())
    }

    /// The control plane's compare-and-set on the map.
    fn cas(&mut self, round: u64, expected: Epoch, leader: NodeId, epoch: Epoch, failover: bool) {
        let orch_ok = self.members.iter().any(|&m| self.reaches_control(m));
        if !orch_ok || self.map.1 != expected {
            let map = self.map;
            self.trace(|| format!("control plane: round {round} compare-and-set refused (map {map:?})"));
            return;
        }
        self.map = (Some(leader), epoch);
        self.report.map_changes += 1;
        if failover {
            self.report.failovers += 1;
        }
        self.trace(|| format!("control plane: map is now leader {leader} epoch {epoch}"));
        for m in self.members.clone() {
            if self.reaches_control(m) {
                let delay = self.control_delay_us();
                let incarnation = self.node(m).incarnation;
                self.schedule(delay, Event::MapLearn { node: m, incarnation, leader: Some(leader), epoch });
            }
        }
    }

    // ------------------------------------------------------------ clients

    fn client_op(&mut self, client: usize) {
        let stop = match self.phase {
            Phase::Active => false,
            // After the heal only client 0 writes, until one write is acked.
            Phase::Recover => client != 0,
            Phase::Converge => true,
        };
        if stop || self.clients[client].busy.is_some() {
            return;
        }
        let write_id = self.next_write_id;
        self.next_write_id += 1;
        let node = if self.rng.chance(CLIENT_WANDER_CHANCE) {
            *self.rng.pick(&self.members)
        } else {
            self.clients[client].target
        };
        self.clients[client].busy = Some(write_id);
        let delay = self.rng.range(CLIENT_LATENCY_US.0, CLIENT_LATENCY_US.1);
        self.schedule(delay, Event::ClientArrive { client, write_id, node });
        self.schedule(CLIENT_TIMEOUT_MS * 1000, Event::ClientTimeout { client, write_id });
    }

    fn next_client_op(&mut self, client: usize) {
        let gap = self.rng.exp(CLIENT_GAP_MS * 1000);
        self.schedule(gap, Event::ClientOp { client });
    }

    fn client_arrive(&mut self, client: usize, write_id: u64, id: NodeId) -> Check {
        let node = self.node(id);
        if !node.up {
            return Ok(()); // the client times out
        }
        let now = node.clock_ms(self.time.now_us());
        let hint = node.map_seen.0;
        let Some(l) = node.leading() else {
            self.reply_client(client, write_id, hint.unwrap_or(id), false);
            return Ok(());
        };
        if !l.keeper.is_valid(now) {
            self.trace(|| format!("node {id}: refuses write {write_id}: no valid lease"));
            self.reply_client(client, write_id, id, false);
            return Ok(());
        }
        let epoch = l.epoch;
        self.check_lease_safety(id, epoch, write_id)?;
        let durability =
            Durability { policy: self.policy.clone(), level: AckLevel::Flush, timeout_ms: self.write_timeout_ms };
        let node = self.node_mut(id);
        let Role::Leading(l) = &mut node.role else { unreachable!("leading") };
        let lsn = l.core.last_lsn() + 1;
        node.disk.append(WireEntry { lsn, epoch, payload: payload(write_id) });
        l.core.handle_appended(now, lsn, now);
        l.core.wait_for(now, write_id, lsn, &durability);
        l.waiting.insert(write_id, client);
        self.accepted.insert(write_id, (id, epoch, lsn));
        self.report.accepted += 1;
        self.mix(lsn);
        self.trace(|| format!("node {id}: accepts write {write_id} at lsn {lsn} epoch {epoch}"));
        self.fsync_start(id);
        self.pump_leader(id)
    }

    /// Checker 1 (one writer per epoch, lease safety in real time).
    fn check_lease_safety(&mut self, id: NodeId, epoch: Epoch, write_id: u64) -> Check {
        if let Some(&other) = self.writer_of_epoch.get(&epoch) {
            if other != id {
                fail!(
                    "one-writer-per-epoch checker: node {id} accepted write {write_id} in epoch {epoch}, in which \
                     node {other} accepted writes"
                );
            }
        }
        self.writer_of_epoch.insert(epoch, id);
        if let Some((newer, node, at_us)) = self.newest_accepted {
            if newer > epoch {
                fail!(
                    "lease-safety checker: node {id} accepted write {write_id} in epoch {epoch} after node {node} \
                     accepted a write in epoch {newer} at {:.3} ms (real time)",
                    at_us as f64 / 1000.0
                );
            }
        }
        if self.newest_accepted.is_none_or(|(e, _, _)| epoch > e) {
            self.newest_accepted = Some((epoch, id, self.time.now_us()));
        }
        Ok(())
    }

    fn reply_client(&mut self, client: usize, write_id: u64, hint: NodeId, ok: bool) {
        let delay = self.rng.range(CLIENT_LATENCY_US.0, CLIENT_LATENCY_US.1);
        self.schedule(delay, Event::ClientReply { client, write_id, ok, hint: Some(hint) });
    }

    fn client_reply(&mut self, client: usize, write_id: u64, ok: bool, hint: Option<NodeId>) {
        if self.clients[client].busy != Some(write_id) {
            return;
        }
        self.clients[client].busy = None;
        if ok {
            let (node, epoch, lsn) = self.accepted.remove(&write_id).expect("an acked write was accepted");
            self.acked.insert(write_id, Acked { node, epoch, lsn, at_us: self.time.now_us() });
            self.report.acked += 1;
            if self.phase == Phase::Recover {
                self.report.recovery_ms = (self.time.now_us() - self.phase_since_us) / 1000;
                self.trace(|| format!("liveness: write {write_id} acked after the heal"));
                self.phase = Phase::Converge;
                self.phase_since_us = self.time.now_us();
            }
        } else {
            self.report.refused += 1;
            self.clients[client].target = match hint {
                Some(h) if self.rng.chance(0.8) => h,
                _ => *self.rng.pick(&self.members),
            };
        }
        self.next_client_op(client);
    }

    // ------------------------------------------------------------ faults

    fn fault(&mut self) {
        let leader = self.map.0;
        let pick = self.rng.below(100);
        let random_node = *self.rng.pick(&self.members);
        match pick {
            // Crash the leader (most failovers start here).
            0..=24 => {
                let id = leader.unwrap_or(random_node);
                self.crash(id);
            }
            // Crash any node.
            25..=44 => self.crash(random_node),
            // Isolate the leader: it keeps its clients, loses its peers.
            45..=64 => {
                let id = leader.unwrap_or(random_node);
                self.partition(&[id]);
            }
            // Isolate a follower (or any node).
            65..=79 => self.partition(&[random_node]),
            // Log compaction on the leader (followers that fall behind it
            // then get a snapshot).
            80..=85 => {
                let id = leader.unwrap_or(random_node);
                self.compact(id);
            }
            // A random split.
            86..=93 => {
                let side: Vec<NodeId> = self.members.iter().copied().filter(|_| self.rng.chance(0.5)).collect();
                self.partition(&side);
            }
            _ => self.heal_partitions(),
        }
    }

    /// A leader folds the oldest part of its log into a snapshot, never past
    /// what a majority of members (itself included) has on disk: a later
    /// promotion always picks a node holding such entries, so they are never
    /// rolled back, while an entry a majority lacks may be, and a rollback
    /// lists log entries, which a snapshot no longer has.
    fn compact(&mut self, id: NodeId) {
        let now = self.clock(id);
        let node = self.node(id);
        let Some(l) = node.leading() else { return };
        let mut on_disk: Vec<Lsn> = l.core.replicas(now).iter().map(|r| r.flushed_lsn).collect();
        on_disk.push(node.disk.synced_lsn());
        on_disk.sort_unstable_by(|a, b| b.cmp(a));
        let on_a_majority = on_disk[majority(self.members.len()) - 1];
        let (base, synced) = (node.disk.base_lsn(), on_a_majority.min(node.disk.synced_lsn()));
        if !node.disk.snapshot_synced() || synced <= base {
            return;
        }
        let upto = self.rng.range(base, synced);
        let node = self.node(id);
        let log = node.full_log();
        let chunks = log[..upto as usize].chunks(SNAPSHOT_CHUNK_ENTRIES).map(encode_entries).collect();
        self.node_mut(id).disk.compact(upto, chunks);
        self.report.compactions += 1;
        self.trace(|| format!("node {id}: compacts its log up to lsn {upto}"));
    }

    fn partition(&mut self, side: &[NodeId]) {
        if side.is_empty() || side.len() == self.members.len() {
            return;
        }
        self.report.partitions += 1;
        self.partition_generation += 1;
        let group = self.partition_generation as u8 | 1;
        for &id in side {
            self.groups[id as usize - 1] = group;
        }
        let groups = self.groups.clone();
        self.trace(|| format!("partition: {side:?} cut off ({groups:?})"));
        let generation = self.partition_generation;
        let lasts = self.rng.range(PARTITION_MS.0, PARTITION_MS.1) * 1000;
        self.schedule(lasts, Event::HealPartition { generation });
    }

    fn heal_partitions(&mut self) {
        if self.groups.iter().any(|&g| g != 0) {
            self.trace(|| "partitions heal".into());
        }
        self.groups.iter_mut().for_each(|g| *g = 0);
    }

    fn end_active(&mut self) {
        self.trace(|| "faults stop: heal, restart every node, one client writes until acked".into());
        self.phase = Phase::Recover;
        self.phase_since_us = self.time.now_us();
        self.loss_chance = 0.0;
        self.heal_partitions();
        for id in self.members.clone() {
            if !self.node(id).up {
                self.restart(id);
            }
        }
        if self.clients[0].busy.is_none() {
            self.next_client_op(0);
        }
    }

    // ------------------------------------------------------------ checkers

    /// Phase changes and the end-of-run checkers. `Ok(true)`: the run is done.
    fn progress(&mut self) -> Result<bool, String> {
        match self.phase {
            Phase::Active => Ok(false),
            Phase::Recover => {
                if self.time.now_us() - self.phase_since_us > LIVENESS_MS_MAX * 1000 {
                    fail!(
                        "liveness checker: no write was acknowledged within {LIVENESS_MS_MAX} ms after the last \
                         fault healed"
                    );
                }
                Ok(false)
            }
            Phase::Converge => {
                if !self.converged() {
                    if self.time.now_us() - self.phase_since_us > CONVERGE_MS_MAX * 1000 {
                        fail!("convergence checker: logs still differ {CONVERGE_MS_MAX} ms after the heal");
                    }
                    return Ok(false);
                }
                self.final_checks()?;
                Ok(true)
            }
        }
    }

    /// Every node follows the map's leader and holds its whole log, synced;
    /// no client write is in flight.
    fn converged(&self) -> bool {
        let Some(leader) = self.map.0 else { return false };
        let l = self.node(leader);
        let Some(role) = l.leading() else { return false };
        if role.epoch != self.map.1 || !role.waiting.is_empty() || self.clients.iter().any(|c| c.busy.is_some()) {
            return false;
        }
        let last = l.disk.last_lsn();
        self.nodes.iter().all(|n| {
            n.up && n.disk.last_lsn() == last
                && n.disk.synced_lsn() == last
                && (n.id == leader
                    || matches!(&n.role, Role::Following(f)
                        if f.leader == leader && f.conn.is_some() && f.core.state() == FollowerState::Streaming))
        })
    }

    fn final_checks(&mut self) -> Check {
        let leader = self.map.0.expect("converged");
        let final_log = self.node(leader).full_log();
        // Checker 4: every log equals the leader's.
        for n in &self.nodes {
            let log = n.full_log();
            if let Some(i) = (0..final_log.len()).find(|&i| log.get(i) != final_log.get(i)) {
                fail!(
                    "convergence checker: node {}'s entry at lsn {} is {:?}, the leader {leader}'s is {:?}",
                    n.id,
                    i + 1,
                    log.get(i).map(|e| (e.epoch, write_id_of(e))),
                    final_log.get(i).map(|e| (e.epoch, write_id_of(e)))
                );
            }
        }
        let mut in_log = BTreeSet::new();
        for e in &final_log {
            let Some(id) = write_id_of(e) else { fail!("entry {} has a payload the simulator did not write", e.lsn) };
            if !in_log.insert(id) {
                fail!("convergence checker: write {id} appears twice in the leader's log");
            }
        }
        let rolled: BTreeSet<u64> = self.nodes.iter().flat_map(|n| n.rollback.iter().filter_map(write_id_of)).collect();
        for (&write_id, a) in &self.acked {
            if in_log.contains(&write_id) {
                continue;
            }
            let what = format!(
                "write {write_id} acknowledged by node {} in epoch {} at lsn {} ({:.3} ms)",
                a.node,
                a.epoch,
                a.lsn,
                a.at_us as f64 / 1000.0
            );
            if self.policy != AckPolicy::Async {
                fail!(
                    "no-acked-write-lost checker ({}): {what} is not in the final leader {leader}'s log",
                    self.policy
                );
            }
            if !rolled.contains(&write_id) {
                fail!("async rollback checker: {what} is neither in the final leader {leader}'s log nor in any rollback record");
            }
            self.report.acked_lost_to_rollback += 1;
        }
        Ok(())
    }
}
