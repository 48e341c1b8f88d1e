//! `quorum`: stale reads for `W + R <= N` against `W + R > N` when one
//! replica is far away (slow), and how long a replica that missed writes
//! takes to catch up with read repair against anti-entropy alone. Drives
//! the real leaderless core (`tandem_core::replica::leaderless`: ring,
//! write and read coordinators, replica stores, versions, Merkle trees).
//!
//! Owns only the network, the workload and the counting; quorum decisions,
//! last-writer-wins and repair targets are the core's. Must never read a
//! real clock or RNG.

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_core::repl::NodeId;
use tandem_core::replica::leaderless::merkle::{self, Merkle};
use tandem_core::replica::leaderless::{
    Clock, ReadCoordinator, ReadOutcome, Record, ReplicaStore, Ring, Version, WriteCoordinator, WriteOutcome,
};

use super::plot::{percentile, Kind, Plot, Series};
use super::replication::{DISK_FSYNC, REGION_LINK};
use super::LabReport;
use crate::rng::{Latency, SimRng};
use crate::schedule::{Coded, Timeline};

/// Replicas per key (every key lives on all three nodes).
const N: u8 = 3;
/// Nodes 1 and 2 are in the US, node 3 in the EU (the slow replica: 100 ms away).
const EU_NODE: NodeId = 3;
/// A link inside one region.
const LOCAL_LINK: Latency = Latency { base_us: 500, jitter_us: 300, tail_chance: 0.01, tail_us: 5_000 };
/// Coordinator deadline (the node's default request timeout order).
const DEADLINE_US: u64 = 1_000_000;
/// Client operations per (W, R) in the stale-read part.
const STALE_OPS: u64 = 4_000;
/// Mean gap between client operations (µs).
const OP_GAP_US: u64 = 4_000;
/// Hot keys of the stale-read part.
const STALE_KEYS: u64 = 50;
/// Keys of the convergence part.
const CONV_KEYS: u64 = 1_000;
/// The EU replica is down for this long in the convergence part (ms).
const OUTAGE_MS: u64 = 30_000;
/// Writes and reads continue this long after it returns (ms).
const AFTER_MS: u64 = 30_000;
/// Anti-entropy round interval (the node's `anti_entropy_interval_ms` default).
const AE_INTERVAL_MS: u64 = 10_000;
/// Events one run may take.
const EVENTS_MAX: u64 = 3_000_000;

#[derive(Debug, Clone)]
enum Msg {
    Write { req: u64, rec: Record },
    Ack { req: u64, ok: bool },
    Read { req: u64, key: Bytes },
    ReadReply { req: u64, rec: Option<Record> },
}

enum Ev {
    Op,
    Deliver { from: NodeId, to: NodeId, msg: Msg },
    Timeout { req: u64 },
    Down(NodeId),
    Up(NodeId),
    AntiEntropy,
}

impl Coded for Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Op => 1,
            Ev::Deliver { from, to, .. } => 2 + from * 31 + to * 7,
            Ev::Timeout { req } => 3 + req * 11,
            Ev::Down(n) => 4 + n * 13,
            Ev::Up(n) => 5 + n * 13,
            Ev::AntiEntropy => 6,
        }
    }
}

enum Pending {
    Write { coord: WriteCoordinator, rec: Record, issued_us: u64 },
    Read { coord: ReadCoordinator, floor: Option<Version>, issued_us: u64, decided: bool },
}

struct Node {
    up: bool,
    store: ReplicaStore,
    clock: Clock,
}

/// What the convergence part watches: keys the EU replica missed, with the
/// newest version acknowledged while it was down, and when it got each.
#[derive(Default)]
struct Catchup {
    back_us: u64,
    target: BTreeMap<Bytes, Version>,
    converged_ms: Vec<f64>,
}

struct World {
    rng: SimRng,
    t: Timeline<Ev>,
    ring: Ring,
    nodes: BTreeMap<NodeId, Node>,
    w: u8,
    r: u8,
    read_repair: bool,
    keys: u64,
    /// Share of operations that are writes.
    write_share: f64,
    /// Reads favour low key numbers (a popularity skew) when set.
    skewed_reads: bool,
    /// Clients in the EU use node 3; in the convergence part all are in the US.
    eu_clients: bool,
    ops_left: u64,
    ops_until_us: u64,
    pending: BTreeMap<u64, (NodeId, Pending)>,
    next_req: u64,
    acked: BTreeMap<Bytes, Version>,
    write_ms: [Vec<f64>; 2],
    read_ms: [Vec<f64>; 2],
    reads: [u64; 2],
    stale: [u64; 2],
    writes_failed: u64,
    read_repairs: u64,
    ae_keys: u64,
    catchup: Option<Catchup>,
}

fn region(node: NodeId) -> usize {
    usize::from(node == EU_NODE)
}

impl World {
    fn new(seed: u64, w: u8, r: u8) -> World {
        let nodes = (1..=u64::from(N))
            .map(|id| (id, Node { up: true, store: ReplicaStore::new(), clock: Clock::new(id) }))
            .collect();
        World {
            rng: SimRng::new(seed),
            t: Timeline::new(false, false),
            ring: Ring::new(1..=u64::from(N)),
            nodes,
            w,
            r,
            read_repair: true,
            keys: STALE_KEYS,
            write_share: 0.5,
            skewed_reads: false,
            eu_clients: true,
            ops_left: u64::MAX,
            ops_until_us: u64::MAX,
            pending: BTreeMap::new(),
            next_req: 1,
            acked: BTreeMap::new(),
            write_ms: [Vec::new(), Vec::new()],
            read_ms: [Vec::new(), Vec::new()],
            reads: [0; 2],
            stale: [0; 2],
            writes_failed: 0,
            read_repairs: 0,
            ae_keys: 0,
            catchup: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.t.now_us() / 1000
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let delay = if from == to {
            20
        } else if region(from) == region(to) {
            LOCAL_LINK.sample(&mut self.rng)
        } else {
            REGION_LINK.sample(&mut self.rng)
        };
        self.t.schedule(delay, Ev::Deliver { from, to, msg });
    }

    fn run(&mut self) -> Result<(), String> {
        while let Some(ev) = self.t.pop(EVENTS_MAX)? {
            self.step(ev);
        }
        Ok(())
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Op => self.op(),
            Ev::Deliver { from, to, msg } => self.deliver(from, to, msg),
            Ev::Timeout { req } => {
                let now = self.now_ms();
                self.decide(req, |p| match p {
                    Pending::Write { coord, .. } => Decision::Write(coord.on_timeout(now)),
                    Pending::Read { coord, .. } => Decision::Read(coord.on_timeout(now)),
                });
                self.pending.remove(&req);
            }
            Ev::Down(id) => self.nodes.get_mut(&id).expect("member").up = false,
            Ev::Up(id) => {
                self.nodes.get_mut(&id).expect("member").up = true;
                let now = self.t.now_us();
                if let Some(c) = self.catchup.as_mut() {
                    c.back_us = now;
                    c.target = self.acked.clone();
                    let store = &self.nodes[&id].store;
                    c.target.retain(|k, v| store.get(k).is_none_or(|r| r.version < *v));
                }
            }
            Ev::AntiEntropy => {
                self.anti_entropy();
                if self.t.now_us() < self.ops_until_us {
                    self.t.schedule(AE_INTERVAL_MS * 1000, Ev::AntiEntropy);
                }
            }
        }
    }

    fn key(&mut self, read: bool) -> Bytes {
        let i = if read && self.skewed_reads {
            // Popularity skew: a few keys get most reads.
            let u = self.rng.unit();
            ((u * u * u) * self.keys as f64) as u64
        } else {
            self.rng.below(self.keys)
        };
        Bytes::from(format!("k{}", i.min(self.keys - 1)))
    }

    fn op(&mut self) {
        if self.ops_left == 0 || self.t.now_us() >= self.ops_until_us {
            return;
        }
        self.ops_left -= 1;
        let gap = 1 + self.rng.exp(OP_GAP_US);
        self.t.schedule(gap, Ev::Op);
        // Two thirds of the clients are in the US (nodes 1, 2), one third in the EU.
        let coordinator = if self.eu_clients && self.rng.chance(1.0 / 3.0) { EU_NODE } else { 1 + self.rng.below(2) };
        if !self.nodes[&coordinator].up {
            return;
        }
        // Once the missing replica is back, only reads: what repairs it is
        // read repair or anti-entropy, never a fresh write.
        let returned = self.catchup.as_ref().is_some_and(|c| c.back_us > 0);
        let write = self.rng.chance(self.write_share) && !returned;
        let key = self.key(!write);
        let req = self.next_req;
        self.next_req += 1;
        let now_us = self.t.now_us();
        let now_ms = self.now_ms();
        let targets = self.ring.preference_list(&key, usize::from(N));
        if write {
            let node = self.nodes.get_mut(&coordinator).expect("member");
            let version = node.clock.next(now_ms, None);
            let rec = Record {
                key,
                value: Some(Bytes::from(format!("v{req}"))),
                expires_at_ms: None,
                version,
                seen: Default::default(),
            };
            for &t in &targets {
                self.send(coordinator, t, Msg::Write { req, rec: rec.clone() });
            }
            let coord = WriteCoordinator::new(&targets, usize::from(self.w), (now_us + DEADLINE_US) / 1000);
            self.pending.insert(req, (coordinator, Pending::Write { coord, rec, issued_us: now_us }));
        } else {
            let floor = self.acked.get(&key).copied();
            for &t in &targets {
                self.send(coordinator, t, Msg::Read { req, key: key.clone() });
            }
            let coord = ReadCoordinator::new(&targets, usize::from(self.r), (now_us + DEADLINE_US) / 1000);
            self.pending.insert(req, (coordinator, Pending::Read { coord, floor, issued_us: now_us, decided: false }));
        }
        self.t.schedule(DEADLINE_US, Ev::Timeout { req });
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let up = self.nodes[&to].up;
        match msg {
            Msg::Write { req, rec } => {
                if up {
                    let node = self.nodes.get_mut(&to).expect("member");
                    node.clock.observe(rec.version);
                    let key = rec.key.clone();
                    let version = rec.version;
                    node.store.apply(rec);
                    self.note_applied(to, &key, version);
                }
                if req != 0 {
                    // Acknowledged once durable on this replica.
                    let fsync = if up { DISK_FSYNC.sample(&mut self.rng) } else { 0 };
                    let delay = fsync + self.link(to, from);
                    self.t.schedule(delay, Ev::Deliver { from: to, to: from, msg: Msg::Ack { req, ok: up } });
                }
            }
            Msg::Read { req, key } => {
                if up {
                    let rec = self.nodes[&to].store.get(&key).cloned();
                    self.send(to, from, Msg::ReadReply { req, rec });
                } else {
                    self.send(to, from, Msg::Ack { req, ok: false });
                }
            }
            Msg::Ack { req, ok } => {
                if !up {
                    return;
                }
                self.decide(req, |p| match p {
                    Pending::Write { coord, .. } if ok => Decision::Write(coord.on_ack(from)),
                    Pending::Write { coord, .. } => Decision::Write(coord.on_failure(from)),
                    Pending::Read { coord, .. } => Decision::Read(coord.on_failure(from)),
                });
            }
            Msg::ReadReply { req, rec } => {
                if !up {
                    return;
                }
                self.decide(req, |p| match p {
                    Pending::Read { coord, .. } => Decision::Read(coord.on_reply(from, rec)),
                    Pending::Write { .. } => Decision::None,
                });
            }
        }
    }

    fn link(&mut self, a: NodeId, b: NodeId) -> u64 {
        if a == b {
            20
        } else if region(a) == region(b) {
            LOCAL_LINK.sample(&mut self.rng)
        } else {
            REGION_LINK.sample(&mut self.rng)
        }
    }

    fn note_applied(&mut self, node: NodeId, key: &Bytes, version: Version) {
        let now = self.t.now_us();
        if node != EU_NODE {
            return;
        }
        if let Some(c) = self.catchup.as_mut() {
            if c.back_us > 0 && c.target.get(key).is_some_and(|t| version >= *t) {
                c.target.remove(key);
                c.converged_ms.push((now - c.back_us) as f64 / 1000.0);
            }
        }
    }

    fn decide(&mut self, req: u64, f: impl FnOnce(&mut Pending) -> Decision) {
        let Some((coordinator, p)) = self.pending.get_mut(&req) else { return };
        let coordinator = *coordinator;
        let now = self.t.now_us();
        let side = region(coordinator);
        match (f(p), p) {
            (Decision::Write(Some(WriteOutcome::Ok { .. })), Pending::Write { rec, issued_us, .. }) => {
                self.write_ms[side].push((now - *issued_us) as f64 / 1000.0);
                let (key, version) = (rec.key.clone(), rec.version);
                if self.acked.get(&key).is_none_or(|a| *a < version) {
                    self.acked.insert(key, version);
                }
                self.pending.remove(&req);
            }
            (Decision::Write(Some(_)), _) => {
                self.writes_failed += 1;
                self.pending.remove(&req);
            }
            (Decision::Read(Some(outcome)), Pending::Read { floor, issued_us, decided, .. }) => {
                *decided = true;
                if let ReadOutcome::Ok { newest, .. } = outcome {
                    self.read_ms[side].push((now - *issued_us) as f64 / 1000.0);
                    self.reads[side] += 1;
                    let got = newest.map(|r| r.version);
                    if floor.is_some_and(|f| got.is_none_or(|g| g < f)) {
                        self.stale[side] += 1;
                    }
                }
            }
            _ => {}
        }
        // Read repair once every replica answered: the core names the stale ones.
        if let Some((_, Pending::Read { coord, decided: true, .. })) = self.pending.get(&req) {
            if coord.all_answered() {
                let (stale, newest) = coord.repair_targets();
                self.pending.remove(&req);
                if let (true, Some(rec)) = (self.read_repair, newest) {
                    for t in stale {
                        self.read_repairs += 1;
                        self.send(coordinator, t, Msg::Write { req: 0, rec: rec.clone() });
                    }
                }
            }
        }
    }

    /// One anti-entropy round: every pair of up nodes compares Merkle trees
    /// and ships the newer record of each differing key to the other side.
    fn anti_entropy(&mut self) {
        let ids: Vec<NodeId> = self.nodes.iter().filter(|(_, n)| n.up).map(|(id, _)| *id).collect();
        for &a in &ids {
            for &b in &ids {
                if a >= b {
                    continue;
                }
                let entries = |s: &ReplicaStore| -> BTreeMap<Bytes, Version> {
                    s.iter().map(|r| (r.key.clone(), r.version)).collect()
                };
                let (ea, eb) = (entries(&self.nodes[&a].store), entries(&self.nodes[&b].store));
                let ta = Merkle::build(ea.iter().map(|(k, v)| (k.as_ref(), *v)));
                let tb = Merkle::build(eb.iter().map(|(k, v)| (k.as_ref(), *v)));
                if ta.root() == tb.root() {
                    continue;
                }
                let leaves = ta.diff_leaves(tb.leaves());
                let only = |e: &BTreeMap<Bytes, Version>| -> BTreeMap<Bytes, Version> {
                    e.iter()
                        .filter(|(k, _)| leaves.contains(&merkle::leaf_of(k)))
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                };
                for key in merkle::diff_keys(&only(&ea), &only(&eb)) {
                    self.ae_keys += 1;
                    let (va, vb) = (ea.get(&key), eb.get(&key));
                    let (from, to) = if va > vb { (a, b) } else { (b, a) };
                    let rec = self.nodes[&from].store.get(&key).cloned().expect("the newer side holds it");
                    // The tree exchange costs a round trip before the records flow.
                    let rtt = self.link(from, to) + self.link(to, from);
                    let delay = rtt + self.link(from, to);
                    self.t.schedule(delay, Ev::Deliver { from, to, msg: Msg::Write { req: 0, rec } });
                }
            }
        }
    }
}

enum Decision {
    Write(Option<WriteOutcome>),
    Read(Option<ReadOutcome>),
    None,
}

/// The stale-read part for one (W, R).
struct StaleRun {
    w: u8,
    r: u8,
    write_p50: [f64; 2],
    read_p50: [f64; 2],
    reads: [u64; 2],
    stale: [u64; 2],
}

fn stale_run(seed: u64, w: u8, r: u8) -> Result<StaleRun, String> {
    let mut world = World::new(seed, w, r);
    world.ops_left = STALE_OPS;
    world.t.schedule(0, Ev::Op);
    world.run()?;
    let p50 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        percentile(v, 50.0)
    };
    let write_p50 = [p50(&mut world.write_ms[0]), p50(&mut world.write_ms[1])];
    let read_p50 = [p50(&mut world.read_ms[0]), p50(&mut world.read_ms[1])];
    Ok(StaleRun { w, r, write_p50, read_p50, reads: world.reads, stale: world.stale })
}

/// The convergence part for one repair mode.
struct ConvRun {
    missed: u64,
    converged_ms: Vec<f64>,
    left: u64,
    read_repairs: u64,
    ae_keys: u64,
}

fn conv_run(seed: u64, read_repair: bool) -> Result<ConvRun, String> {
    let mut world = World::new(seed, 2, 2);
    world.read_repair = read_repair;
    world.keys = CONV_KEYS;
    world.eu_clients = false;
    world.skewed_reads = true;
    world.write_share = 0.3;
    world.ops_until_us = (1_000 + OUTAGE_MS + AFTER_MS) * 1000;
    world.catchup = Some(Catchup::default());
    world.t.schedule(0, Ev::Op);
    world.t.schedule(1_000_000, Ev::Down(EU_NODE));
    world.t.schedule((1_000 + OUTAGE_MS) * 1000, Ev::Up(EU_NODE));
    // Anti-entropy rounds at a phase drawn from the seed (the same for both modes).
    let phase = SimRng::new(seed ^ 0xAE).below(AE_INTERVAL_MS) * 1000;
    world.t.schedule(phase, Ev::AntiEntropy);
    world.run()?;
    let c = world.catchup.take().expect("set above");
    let mut converged_ms = c.converged_ms;
    converged_ms.sort_by(f64::total_cmp);
    Ok(ConvRun {
        missed: converged_ms.len() as u64 + c.target.len() as u64,
        left: c.target.len() as u64,
        converged_ms,
        read_repairs: world.read_repairs,
        ae_keys: world.ae_keys,
    })
}

/// Time (ms) by which `share` of `missed` keys had converged, if they did.
fn time_to(c: &ConvRun, share: f64) -> Option<f64> {
    let need = ((c.missed as f64) * share).ceil() as usize;
    if need == 0 {
        return Some(0.0);
    }
    c.converged_ms.get(need - 1).copied()
}

fn pct(n: u64, d: u64) -> f64 {
    100.0 * n as f64 / d.max(1) as f64
}

fn ms_or_never(x: Option<f64>) -> String {
    x.map_or("never".into(), |v| format!("{v:.0}"))
}

/// `quorum`.
pub fn quorum(seed: u64) -> Result<LabReport, String> {
    let configs = [(1u8, 1u8), (2, 1), (1, 2), (2, 2), (3, 1)];
    let mut runs = Vec::new();
    for (i, (w, r)) in configs.iter().enumerate() {
        runs.push(stale_run(seed.wrapping_mul(97).wrapping_add(i as u64), *w, *r)?);
    }
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    for s in &runs {
        let reads = s.reads[0] + s.reads[1];
        let stale = s.stale[0] + s.stale[1];
        let overlap = u16::from(s.w) + u16::from(s.r) > u16::from(N);
        rows.push(vec![
            format!("W={} R={}", s.w, s.r),
            if overlap { "> N".into() } else { "<= N".into() },
            format!("{:.1}", s.write_p50[0]),
            format!("{:.1}", s.write_p50[1]),
            format!("{:.1}", s.read_p50[0]),
            format!("{:.1}", s.read_p50[1]),
            reads.to_string(),
            stale.to_string(),
            format!("{:.1}%", pct(stale, reads)),
            format!("{:.1}%", pct(s.stale[1], s.reads[1])),
        ]);
        bars.push(Series { name: format!("W{} R{}", s.w, s.r), points: vec![(0.0, pct(stale, reads))] });
    }
    let conv_seed = seed.wrapping_mul(97).wrapping_add(50);
    let rr = conv_run(conv_seed, true)?;
    let ae = conv_run(conv_seed, false)?;
    for (name, c) in [("read repair + anti-entropy", &rr), ("anti-entropy only", &ae)] {
        rows.push(vec![
            format!("W=2 R=2, {name}"),
            "> N".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            format!("{} keys missed", c.missed),
            format!("50% at {} ms", ms_or_never(time_to(c, 0.5))),
            format!("90% at {} ms", ms_or_never(time_to(c, 0.9))),
            format!("all at {} ms", ms_or_never(time_to(c, 1.0))),
        ]);
    }
    let step = |c: &ConvRun| -> Vec<(f64, f64)> {
        let mut pts = vec![(0.0, 0.0)];
        let n = c.converged_ms.len();
        let every = n.div_ceil(300).max(1);
        for (i, t) in c.converged_ms.iter().enumerate() {
            if i % every == every - 1 || i + 1 == n {
                pts.push((t / 1000.0, pct(i as u64 + 1, c.missed)));
            }
        }
        if let Some(last) = pts.last().copied() {
            pts.push(((AFTER_MS as f64) / 1000.0, last.1));
        }
        pts
    };
    let low = runs.iter().filter(|s| u16::from(s.w) + u16::from(s.r) <= u16::from(N));
    let (lr, ls) = low.fold((0, 0), |(r, s), x| (r + x.reads[0] + x.reads[1], s + x.stale[0] + x.stale[1]));
    let high = runs.iter().filter(|s| u16::from(s.w) + u16::from(s.r) > u16::from(N));
    let (hr, hs) = high.fold((0, 0), |(r, s), x| (r + x.reads[0] + x.reads[1], s + x.stale[0] + x.stale[1]));
    let one = &runs[0];
    let w3 = &runs[4];
    let rr50 = time_to(&rr, 0.5).unwrap_or(f64::NAN);
    let ae50 = time_to(&ae, 0.5).unwrap_or(f64::NAN);
    let reading = format!(
        "With N=3 and the third replica 100 ms away, the quorums that do not overlap (W+R<=N) returned a value older \
         than the newest acknowledged write in {:.1}% of {lr} reads (W=1 R=1: {:.1}%, {:.1}% of the EU clients' reads, \
         which their nearby replica answers before the US writes reach it). The overlapping ones (W+R>N) returned \
         {hs} stale reads out of {hr}: every read quorum meets every write quorum. The price is paid in the far \
         region: at W=2 R=2 an EU read waits {:.0} ms (it needs a US replica), and at W=3 R=1 every write waits \
         {:.0} ms in the US for the EU replica. When the EU replica came back after {} s down it had missed {} of \
         {CONV_KEYS} keys. With read repair, half of them were fixed {:.0} ms after its return (popular keys are read, \
         and repaired, first) and 90% after {} ms; with anti-entropy alone nothing moves until the next Merkle round \
         ({} s interval): half after {:.0} ms. {} ({} ms with read repair, {} ms without). Repair traffic: {} read repairs and {} \
         keys by anti-entropy with read repair on; {} keys by anti-entropy alone.",
        pct(ls, lr),
        pct(one.stale[0] + one.stale[1], one.reads[0] + one.reads[1]),
        pct(one.stale[1], one.reads[1]),
        runs[3].read_p50[1],
        w3.write_p50[0],
        OUTAGE_MS / 1000,
        rr.missed,
        rr50,
        ms_or_never(time_to(&rr, 0.9)),
        AE_INTERVAL_MS / 1000,
        ae50,
        if time_to(&rr, 1.0) >= time_to(&ae, 0.5) {
            "The last keys waited for anti-entropy either way: read repair only fixes what someone reads"
        } else {
            "Read repair alone fixed every missed key before anti-entropy got to them"
        },
        ms_or_never(time_to(&rr, 1.0)),
        ms_or_never(time_to(&ae, 1.0)),
        rr.read_repairs,
        rr.ae_keys,
        ae.ae_keys,
    );
    if rr.left > 0 || ae.left > 0 {
        return Err(format!("quorum: {} / {} keys never converged", rr.left, ae.left));
    }
    Ok(LabReport {
        name: "quorum".into(),
        question: super::find("quorum").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), "3 nodes, N=3: nodes 1 and 2 in the US (0.5-2 ms apart), node 3 in the EU, 100 ms one way".into()),
            ("replicas".into(), "the real leaderless core: ring, coordinators, LWW stores, Merkle anti-entropy; fsync ~0.2 ms".into()),
            (
                "stale part".into(),
                format!("{STALE_OPS} operations per (W, R), half writes, on {STALE_KEYS} hot keys, one every ~{} ms, 2/3 of clients in the US, 1/3 in the EU", OP_GAP_US / 1000),
            ),
            (
                "convergence part".into(),
                format!("W=2 R=2, US clients only; node 3 down {} s while {CONV_KEYS} keys are written, then {} s of popularity-skewed reads only; anti-entropy every {} s", OUTAGE_MS / 1000, AFTER_MS / 1000, AE_INTERVAL_MS / 1000),
            ),
            ("stale".into(), "a read older than the newest write acknowledged before it began".into()),
        ],
        columns: [
            "quorum",
            "W+R",
            "write p50 US ms",
            "write p50 EU ms",
            "read p50 US ms",
            "read p50 EU ms",
            "reads",
            "stale",
            "stale rate",
            "stale rate EU",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        reading,
        plots: vec![
            Plot {
                title: "Stale reads per quorum (N=3, one replica 100 ms away)".into(),
                x_label: "W, R".into(),
                y_label: "percent of reads".into(),
                kind: Kind::Bars,
                log_x: false,
                series: bars,
            },
            Plot {
                title: "Missed keys repaired on the returning replica".into(),
                x_label: "seconds after it returned".into(),
                y_label: "percent of missed keys".into(),
                kind: Kind::Lines,
                log_x: false,
                series: vec![
                    Series { name: "read repair + anti-entropy".into(), points: step(&rr) },
                    Series { name: "anti-entropy only".into(), points: step(&ae) },
                ],
            },
        ],
    })
}
