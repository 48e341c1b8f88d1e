//! Leaderless keyspaces in the simulator (issue 12): the real core types
//! (`tandem_core::replica::leaderless`: ring, coordinators, replica store,
//! hints, Merkle trees) on a seeded network of `members` nodes.
//!
//! Clients write (values and deletes) and read a few hot keys through
//! random coordinators while nodes crash and recover (at most `down_max`
//! at a time; a crashed node keeps what it made durable, as the node does
//! with its fsynced replica file; torn writes are not modelled here) and
//! replies take random, sometimes long, delays. With `partitions`, the
//! network also splits the nodes in two sides for a while (messages across
//! the cut are lost, so coordinators decide on their deadline); with `ttl`,
//! some writes carry an absolute expiry time (`SET .. PX`) that runs out
//! during the run. With `join`, a new member joins the cluster during the
//! writes: each node adopts the new ring at its own moment (as nodes learn
//! the cluster map at different times) and rebalances with the real
//! `Rebalance` (batches streamed as messages that can be lost to crashes
//! and partitions, keys forgotten once their new owners acked them). Then
//! every node comes back, partitions heal, hints are handed off,
//! rebalancing runs to its end and anti-entropy runs between every pair.
//!
//! # Checkers
//! 1. With `W + R > N`: every successful read returns a version at least as
//!    new as the newest write acknowledged before the read began (it may
//!    return a newer one, acknowledged or not); with `W + R <= N`, or with a
//!    sloppy quorum (whose acknowledged write may sit on fallback nodes
//!    only until handoff), or during a membership change (a coordinator on
//!    the new ring may ask new owners before the keys reached them), such
//!    stale reads are counted, not failed.
//! 2. With a sloppy quorum, after handoff every hinted write is at its
//!    owner (before anti-entropy, so handoff alone must do it).
//! 3. After heal + anti-entropy, all replicas of every key hold the same
//!    version, at least as new as the newest acknowledged write; a key
//!    whose newest acknowledged write was a delete reads as deleted (no
//!    resurrection); where that version is the acknowledged one, the
//!    replicas hold that very write, expiry time included, so every replica
//!    expires it at the same instant. With `join`, "all replicas" are the
//!    N owners under the new ring: each holds the key's latest
//!    acknowledged version (nothing was forgotten before its new owners
//!    had it), and no node outside them still holds the key.
//!
//! Never reads a real clock or RNG; iteration is over ordered maps only.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use tandem_core::repl::NodeId;
use tandem_core::replica::leaderless::merkle::{self, Merkle};
use tandem_core::replica::leaderless::rebalance::Rebalance;
use tandem_core::replica::leaderless::{
    quorum, Clock, Hints, ReadCoordinator, ReadOutcome, Record, ReplicaStore, Ring, Version, WriteCoordinator,
    WriteOutcome,
};

use crate::rng::SimRng;
use crate::schedule::{Coded, Timeline};
use crate::SimFailure;

/// One run's shape.
#[derive(Debug, Clone)]
pub struct LeaderlessConfig {
    /// Nodes in the cluster.
    pub members: u64,
    /// Replicas per key.
    pub n: u8,
    /// Write quorum.
    pub w: u8,
    /// Read quorum.
    pub r: u8,
    /// Sloppy quorum with hinted handoff.
    pub sloppy: bool,
    /// Nodes down at the same time at most.
    pub down_max: u64,
    /// Split the network in two sides from time to time.
    pub partitions: bool,
    /// Some writes carry an expiry time.
    pub ttl: bool,
    /// A new member (`members + 1`) joins during the writes.
    pub join: bool,
    /// Client operations.
    pub ops: u64,
    /// Distinct keys.
    pub keys: u64,
    /// Print every event.
    pub verbose: bool,
}

impl Default for LeaderlessConfig {
    fn default() -> Self {
        LeaderlessConfig {
            members: 5,
            n: 3,
            w: 2,
            r: 2,
            sloppy: false,
            down_max: 1,
            partitions: false,
            ttl: false,
            join: false,
            ops: 150,
            keys: 6,
            verbose: false,
        }
    }
}

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct LeaderlessReport {
    /// The seed.
    pub seed: u64,
    /// Writes acknowledged / failed (NOQUORUM).
    pub writes_acked: u64,
    /// Writes that failed.
    pub writes_failed: u64,
    /// Reads that succeeded and were judged.
    pub reads: u64,
    /// Reads older than the newest acknowledged write (only allowed with
    /// `W + R <= N`).
    pub stale_reads: u64,
    /// Hints stored and handed back.
    pub hints: u64,
    /// Read repairs sent.
    pub read_repairs: u64,
    /// Keys exchanged by the final anti-entropy.
    pub ae_keys: u64,
    /// Partitions that happened.
    pub partitions: u64,
    /// Messages lost to a partition.
    pub cut_messages: u64,
    /// Writes acknowledged with an expiry time.
    pub ttl_writes: u64,
    /// Acknowledged writes whose expiry time passed before the end.
    pub expired: u64,
    /// `(key, new owner)` transfers confirmed by rebalancing.
    pub rebalance_keys: u64,
    /// Keys forgotten by nodes that no longer own them.
    pub rebalance_forgotten: u64,
    /// Reads judged while the ring was changing (adoption to quiescence).
    pub reads_during_join: u64,
    /// Events run.
    pub events: u64,
}

impl fmt::Display for LeaderlessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} writes acked, {} failed, {} reads ({} stale), {} hints, {} read repairs, {} keys by anti-entropy, {} partitions ({} messages cut), {} TTL writes ({} expired), {} keys rebalanced ({} forgotten), {} events",
            self.seed,
            self.writes_acked,
            self.writes_failed,
            self.reads,
            self.stale_reads,
            self.hints,
            self.read_repairs,
            self.ae_keys,
            self.partitions,
            self.cut_messages,
            self.ttl_writes,
            self.expired,
            self.rebalance_keys,
            self.rebalance_forgotten,
            self.events
        )
    }
}

/// Coordinator deadline, virtual µs.
const DEADLINE_US: u64 = 100_000;
/// Events per run at most (a runaway loop otherwise).
const EVENTS_MAX: u64 = 1_000_000;

#[derive(Debug, Clone)]
enum Msg {
    Write {
        req: u64,
        rec: Record,
        hint_for: Option<NodeId>,
    },
    Ack {
        req: u64,
        ok: bool,
    },
    Read {
        req: u64,
        key: Bytes,
    },
    ReadReply {
        req: u64,
        rec: Option<Record>,
    },
    /// Rebalancing: records for their new owner.
    Push {
        recs: Vec<Record>,
    },
    /// The new owner made these durable.
    PushAck {
        stored: Vec<(Bytes, Version)>,
    },
}

#[derive(Debug)]
enum Ev {
    Op,
    Deliver {
        from: NodeId,
        to: NodeId,
        msg: Msg,
    },
    Timeout {
        req: u64,
    },
    Crash,
    Recover(NodeId),
    Partition,
    Heal,
    /// The new member joins: every node will adopt the new ring.
    Join,
    /// Node adopts the new ring.
    Adopt(NodeId),
    /// Node sends its next rebalance batches.
    RebalanceTick(NodeId),
}

impl Coded for Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Op => 1,
            Ev::Deliver { from, to, .. } => 2 + from * 31 + to * 7,
            Ev::Timeout { req } => 3 + req * 11,
            Ev::Crash => 4,
            Ev::Recover(n) => 5 + n * 13,
            Ev::Partition => 6,
            Ev::Heal => 7,
            Ev::Join => 8,
            Ev::Adopt(n) => 9 + n * 17,
            Ev::RebalanceTick(n) => 10 + n * 19,
        }
    }
}

struct SimNode {
    up: bool,
    store: ReplicaStore,
    hints: Hints,
    clock: Clock,
    skew_ms: u64,
    /// This node's view of the ring (it adopts a new one on its own time).
    ring: Ring,
    /// The ring this node last finished rebalancing for.
    balanced: Ring,
    /// Its current rebalance plan (from `balanced` to `ring`).
    plan: Option<Rebalance>,
    /// New owners with a batch in flight, and when it was sent (µs).
    inflight: BTreeMap<NodeId, u64>,
}

enum Pending {
    Write { coord: WriteCoordinator, rec: Record, fallbacks: Vec<NodeId> },
    Read { coord: ReadCoordinator, floor: Option<Version>, decided: bool, repaired: bool },
}

struct World {
    cfg: LeaderlessConfig,
    rng: SimRng,
    t: Timeline<Ev>,
    /// The ring every node ends on (the new one once a member joined).
    ring: Ring,
    /// True from the join until the end of the run.
    joining: bool,
    nodes: BTreeMap<NodeId, SimNode>,
    pending: BTreeMap<u64, (NodeId, Pending)>,
    next_req: u64,
    /// Per key: the newest acknowledged write's record.
    acked: BTreeMap<Bytes, Record>,
    /// Every hint ever stored: (owner, key, version).
    hinted: Vec<(NodeId, Bytes, Version)>,
    report: LeaderlessReport,
    ops_left: u64,
    /// The side of each node while the network is split (`None`: whole).
    side: Option<BTreeMap<NodeId, bool>>,
}

impl World {
    fn now_ms(&self) -> u64 {
        self.t.now_us() / 1000
    }

    fn send(&mut self, from: NodeId, to: NodeId, msg: Msg) {
        let delay = if self.rng.chance(0.05) { self.rng.range(20_000, 80_000) } else { self.rng.range(200, 5_000) };
        self.t.schedule(delay, Ev::Deliver { from, to, msg });
    }

    fn step(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Op => self.op(),
            Ev::Crash => {
                let down = self.nodes.values().filter(|n| !n.up).count() as u64;
                if down < self.cfg.down_max {
                    let id = self.rng.range(1, self.nodes.len() as u64);
                    if let Some(n) = self.nodes.get_mut(&id) {
                        if n.up {
                            n.up = false;
                            self.t.trace(|| format!("crash {id}"));
                            let back = self.rng.range(20_000, 200_000);
                            self.t.schedule(back, Ev::Recover(id));
                        }
                    }
                }
                if self.ops_left > 0 {
                    let next = self.rng.range(10_000, 100_000);
                    self.t.schedule(next, Ev::Crash);
                }
                Ok(())
            }
            Ev::Recover(id) => {
                self.nodes.get_mut(&id).expect("member").up = true;
                self.t.trace(|| format!("recover {id}"));
                Ok(())
            }
            Ev::Timeout { req } => {
                let now = self.t.now_us();
                self.decide(req, |p| match p {
                    Pending::Write { coord, .. } => Decision::Write(coord.on_timeout(now)),
                    Pending::Read { coord, .. } => Decision::Read(coord.on_timeout(now)),
                })
            }
            Ev::Deliver { from, to, msg } => {
                if self.side.as_ref().is_some_and(|s| s[&from] != s[&to]) {
                    self.report.cut_messages += 1;
                    self.t.trace(|| format!("cut {from}->{to}: {msg:?}"));
                    return Ok(());
                }
                self.deliver(from, to, msg)
            }
            Ev::Partition => {
                if self.side.is_none() {
                    // Each node falls on one side at random; both sides
                    // may hold a coordinator and some replicas of a key.
                    let side: BTreeMap<NodeId, bool> =
                        self.nodes.keys().map(|&id| (id, self.rng.chance(0.5))).collect();
                    self.t.trace(|| format!("partition {side:?}"));
                    self.side = Some(side);
                    self.report.partitions += 1;
                    let heal = self.rng.range(20_000, 150_000);
                    self.t.schedule(heal, Ev::Heal);
                }
                if self.ops_left > 0 {
                    let next = self.rng.range(30_000, 200_000);
                    self.t.schedule(next, Ev::Partition);
                }
                Ok(())
            }
            Ev::Heal => {
                self.t.trace(|| "heal".to_string());
                self.side = None;
                Ok(())
            }
            Ev::Join => {
                let new = self.cfg.members + 1;
                self.ring = Ring::new(1..=new);
                self.joining = true;
                self.t.trace(|| format!("member {new} joins"));
                let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
                for id in ids {
                    // Each node learns the new map at its own moment.
                    let at = self.rng.range(0, 30_000);
                    self.t.schedule(at, Ev::Adopt(id));
                }
                Ok(())
            }
            Ev::Adopt(id) => {
                let ring = self.ring.clone();
                let node = self.nodes.get_mut(&id).expect("member");
                node.ring = ring;
                node.plan = None; // planned again on the next tick, from `balanced`
                self.t.trace(|| format!("node {id} adopts the new ring"));
                self.t.schedule(0, Ev::RebalanceTick(id));
                Ok(())
            }
            Ev::RebalanceTick(id) => self.rebalance_tick(id),
        }
    }

    /// One rebalancing step of node `id`: plan if needed (a change plan
    /// from the ring it last balanced for, else a sweep), then one batch to
    /// every new owner with none in flight.
    fn rebalance_tick(&mut self, id: NodeId) -> Result<(), String> {
        let n = usize::from(self.cfg.n);
        let now = self.t.now_us();
        let node = self.nodes.get_mut(&id).expect("member");
        if !node.up {
            node.plan = None;
            node.inflight.clear();
        } else {
            if node.plan.as_ref().is_none_or(Rebalance::is_done) {
                if node.plan.is_some() {
                    node.balanced = node.ring.clone();
                }
                node.plan = Some(Rebalance::plan(id, &node.balanced, &node.ring, n, &node.store));
            }
            node.inflight.retain(|_, sent| now < *sent + DEADLINE_US);
            let plan = node.plan.as_mut().expect("planned");
            let mut out = Vec::new();
            for t in plan.targets() {
                if !node.inflight.contains_key(&t) {
                    let recs = plan.batch(t, &node.store, 4, usize::MAX);
                    if !recs.is_empty() {
                        node.inflight.insert(t, now);
                        out.push((t, recs));
                    }
                }
            }
            for (t, recs) in out {
                self.t.trace(|| format!("rebalance {id}->{t}: {} records", recs.len()));
                self.send(id, t, Msg::Push { recs });
            }
        }
        let busy = self.nodes[&id].plan.as_ref().is_some_and(|p| !p.is_done()) || self.ops_left > 0;
        if self.joining && busy {
            self.t.schedule(5_000, Ev::RebalanceTick(id));
        }
        Ok(())
    }

    fn op(&mut self) -> Result<(), String> {
        if self.ops_left == 0 {
            return Ok(());
        }
        self.ops_left -= 1;
        let next = self.rng.range(500, 3_000);
        self.t.schedule(next, Ev::Op);
        let up: Vec<NodeId> =
            self.nodes.iter().filter(|(id, n)| n.up && n.ring.members().contains(id)).map(|(id, _)| *id).collect();
        let coordinator = up[self.rng.below(up.len() as u64) as usize];
        let key = Bytes::from(format!("k{}", self.rng.below(self.cfg.keys)));
        let req = self.next_req;
        self.next_req += 1;
        let now = self.t.now_us();
        let walk = self.nodes[&coordinator].ring.walk(&key);
        let n = usize::from(self.cfg.n);
        let pref: Vec<NodeId> = walk[..n].to_vec();
        if self.rng.chance(0.55) {
            let node = self.nodes.get_mut(&coordinator).expect("member");
            let version = node.clock.next(self.t.now_us() / 1000 + node.skew_ms, None);
            let value = if self.rng.chance(0.2) { None } else { Some(Bytes::from(format!("v{req}"))) };
            // An absolute expiry time from the coordinator's (skewed) clock,
            // as the node turns `SET .. PX ms` into one.
            let expires_at_ms = (self.cfg.ttl && value.is_some() && self.rng.chance(0.4))
                .then(|| version.physical_ms + self.rng.range(5, 300));
            // The causal context: what the coordinator's own replica holds.
            let seen = node.store.get(&key).map(Record::context).unwrap_or_default();
            let rec = Record { key, value, expires_at_ms, version, seen };
            self.t.trace(|| format!("write {req} via {coordinator}: {rec:?}"));
            for &t in &pref {
                self.send(coordinator, t, Msg::Write { req, rec: rec.clone(), hint_for: None });
            }
            let coord = WriteCoordinator::new(&pref, usize::from(self.cfg.w), now + DEADLINE_US);
            self.pending.insert(req, (coordinator, Pending::Write { coord, rec, fallbacks: walk[n..].to_vec() }));
        } else {
            let floor = self.acked.get(&key).map(|r| r.version);
            self.t.trace(|| format!("read {req} via {coordinator}: {key:?} floor {floor:?}"));
            for &t in &pref {
                self.send(coordinator, t, Msg::Read { req, key: key.clone() });
            }
            let coord = ReadCoordinator::new(&pref, usize::from(self.cfg.r), now + DEADLINE_US);
            self.pending.insert(req, (coordinator, Pending::Read { coord, floor, decided: false, repaired: false }));
        }
        self.t.schedule(DEADLINE_US, Ev::Timeout { req });
        Ok(())
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, msg: Msg) -> Result<(), String> {
        let up = self.nodes[&to].up;
        match msg {
            Msg::Write { req, rec, hint_for } => {
                // A down node refuses the connection: the coordinator learns
                // of the failure one network delay later.
                if up {
                    let node = self.nodes.get_mut(&to).expect("member");
                    match hint_for {
                        None => {
                            node.clock.observe(rec.version);
                            node.store.apply(rec);
                        }
                        Some(owner) => {
                            self.hinted.push((owner, rec.key.clone(), rec.version));
                            self.report.hints += 1;
                            let _ = node.hints.store(owner, rec);
                        }
                    }
                }
                self.send(to, from, Msg::Ack { req, ok: up });
                Ok(())
            }
            Msg::Read { req, key } => {
                let rec = if up { self.nodes[&to].store.get(&key).cloned() } else { None };
                match up {
                    true => self.send(to, from, Msg::ReadReply { req, rec }),
                    false => self.send(to, from, Msg::Ack { req, ok: false }),
                }
                Ok(())
            }
            Msg::Ack { req, ok } => {
                if !up {
                    return Ok(()); // the coordinator crashed: its client saw no answer
                }
                let sloppy = self.cfg.sloppy;
                let mut resend = None;
                let r = self.decide(req, |p| match p {
                    Pending::Write { coord, rec, fallbacks } if ok => {
                        let _ = rec;
                        let _ = fallbacks;
                        Decision::Write(coord.on_ack(from))
                    }
                    Pending::Write { coord, rec, fallbacks } => {
                        if sloppy && !fallbacks.is_empty() {
                            let f = fallbacks.remove(0);
                            coord.add_fallback(f);
                            resend = Some((f, rec.clone()));
                        }
                        Decision::Write(coord.on_failure(from))
                    }
                    Pending::Read { coord, .. } => Decision::Read(coord.on_failure(from)),
                });
                if let Some((f, rec)) = resend {
                    // The hint names the replica the fallback stands in for:
                    // the first preference-list replica that failed.
                    let owner = from;
                    self.send(to, f, Msg::Write { req, rec, hint_for: Some(owner) });
                }
                r
            }
            Msg::Push { recs } => {
                if up {
                    let node = self.nodes.get_mut(&to).expect("member");
                    let stored = recs.iter().map(|r| (r.key.clone(), r.version)).collect();
                    for rec in recs {
                        node.clock.observe(rec.version);
                        node.store.apply(rec);
                    }
                    self.send(to, from, Msg::PushAck { stored });
                }
                Ok(())
            }
            Msg::PushAck { stored } => {
                let node = self.nodes.get_mut(&to).expect("member");
                if !up {
                    return Ok(());
                }
                node.inflight.remove(&from);
                if let Some(plan) = node.plan.as_mut() {
                    let done = plan.on_stored(from, &stored, &node.store);
                    self.report.rebalance_keys += done.moved as u64;
                    for (k, v) in done.drop {
                        if node.store.forget(&k, v) {
                            self.report.rebalance_forgotten += 1;
                            self.t.trace(|| format!("node {to} forgets {k:?} {v:?}"));
                        }
                    }
                }
                Ok(())
            }
            Msg::ReadReply { req, rec } => {
                if !up {
                    return Ok(());
                }
                self.decide(req, |p| match p {
                    Pending::Read { coord, .. } => Decision::Read(coord.on_reply(from, rec)),
                    Pending::Write { .. } => Decision::None,
                })
            }
        }
    }

    /// Feeds an answer to request `req` and acts on a decision.
    fn decide(&mut self, req: u64, f: impl FnOnce(&mut Pending) -> Decision) -> Result<(), String> {
        let Some((coordinator, p)) = self.pending.get_mut(&req) else { return Ok(()) };
        let coordinator = *coordinator;
        let decision = f(p);
        match (decision, p) {
            (Decision::Write(Some(WriteOutcome::Ok { .. })), Pending::Write { rec, .. }) => {
                self.report.writes_acked += 1;
                let rec = rec.clone();
                if rec.expires_at_ms.is_some() {
                    self.report.ttl_writes += 1;
                }
                self.t.trace(|| format!("write {req} acked"));
                if self.acked.get(&rec.key).is_none_or(|a| a.version < rec.version) {
                    self.acked.insert(rec.key.clone(), rec);
                }
                self.pending.remove(&req);
            }
            (Decision::Write(Some(_)), _) => {
                self.report.writes_failed += 1;
                self.pending.remove(&req);
            }
            (Decision::Read(Some(outcome)), Pending::Read { floor, decided, .. }) => {
                *decided = true;
                if let ReadOutcome::Ok { newest, .. } = outcome {
                    self.report.reads += 1;
                    self.report.reads_during_join += u64::from(self.joining);
                    let got = newest.map(|r| r.version);
                    if floor.is_some_and(|f| got.is_none_or(|g| g < f)) {
                        self.report.stale_reads += 1;
                        // A sloppy quorum's write may sit on fallbacks only, so
                        // overlap holds only for strict quorums (Dynamo).
                        if quorum::overlaps(self.cfg.n, self.cfg.w, self.cfg.r) && !self.cfg.sloppy && !self.joining {
                            return Err(format!("read {req} returned {got:?}, older than the acknowledged {floor:?}"));
                        }
                    }
                }
            }
            _ => {}
        }
        // Read repair once every replica answered.
        if let Some((_, Pending::Read { coord, decided: true, repaired, .. })) = self.pending.get_mut(&req) {
            if coord.all_answered() && !*repaired {
                *repaired = true;
                let (stale, newest) = coord.repair_targets();
                if let Some(rec) = newest {
                    for t in stale {
                        self.report.read_repairs += 1;
                        self.send(coordinator, t, Msg::Write { req: u64::MAX, rec: rec.clone(), hint_for: None });
                    }
                }
                self.pending.remove(&req);
            }
        }
        Ok(())
    }

    /// Everyone back; hints handed off; then anti-entropy between every
    /// pair; then the convergence checks.
    fn heal_and_check(&mut self) -> Result<(), String> {
        for n in self.nodes.values_mut() {
            n.up = true;
        }
        self.side = None;
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for &holder in &ids {
            for owner in self.nodes[&holder].hints.owners() {
                let recs = self.nodes[&holder].hints.for_owner(owner, usize::MAX);
                for rec in recs {
                    let (k, v) = (rec.key.clone(), rec.version);
                    self.nodes.get_mut(&owner).expect("member").store.apply(rec);
                    self.nodes.get_mut(&holder).expect("member").hints.delivered(owner, &k, v);
                }
            }
        }
        for (owner, key, version) in &self.hinted {
            let at = self.nodes[owner].store.get(key).map(|r| r.version);
            if at.is_none_or(|a| a < *version) {
                return Err(format!("hinted write {key:?} {version:?} never reached its owner {owner}"));
            }
        }
        let n = usize::from(self.cfg.n);
        self.finish_rebalancing(&ids, n)?;
        for &a in &ids {
            for &b in &ids {
                if a < b {
                    self.anti_entropy(a, b, n);
                }
            }
        }
        for i in 0..self.cfg.keys {
            let key = Bytes::from(format!("k{i}"));
            let pref = self.ring.preference_list(&key, n);
            if let Some(extra) = ids.iter().find(|id| !pref.contains(id) && self.nodes[id].store.get(&key).is_some()) {
                return Err(format!("node {extra} still holds {key:?} though it is not among its owners {pref:?}"));
            }
            let recs: Vec<Option<&Record>> = pref.iter().map(|p| self.nodes[p].store.get(&key)).collect();
            // Contexts (`seen`) record each replica's merge history and may
            // differ; the data must not.
            let data = |r: &Option<&Record>| r.map(|r| (r.value.clone(), r.expires_at_ms, r.version));
            if recs.iter().any(|r| data(r) != data(&recs[0])) {
                return Err(format!("replicas of {key:?} differ after anti-entropy: {recs:?}"));
            }
            if let Some(acked) = self.acked.get(&key) {
                let Some(now) = recs[0] else { return Err(format!("{key:?} lost its acknowledged write")) };
                if now.version < acked.version {
                    return Err(format!(
                        "{key:?} holds {:?}, older than the acknowledged {:?}",
                        now.version, acked.version
                    ));
                }
                if acked.value.is_none() && now.version == acked.version && now.value.is_some() {
                    return Err(format!("{key:?} was resurrected"));
                }
                if now.version == acked.version
                    && (&now.value, now.expires_at_ms) != (&acked.value, acked.expires_at_ms)
                {
                    return Err(format!("{key:?} holds {now:?} under the version of the acknowledged {acked:?}"));
                }
                if let Some(at) = acked.expires_at_ms.filter(|_| now.version == acked.version) {
                    if at <= self.now_ms() {
                        self.report.expired += 1;
                    }
                    // Every replica shows the value until `at` and none from `at` on.
                    for p in &pref {
                        let r = self.nodes[p].store.get(&key);
                        let (before, after) = (r.and_then(|r| r.live_value(at - 1)), r.and_then(|r| r.live_value(at)));
                        if before.is_none() || after.is_some() {
                            return Err(format!(
                                "{key:?} expiring at {at} ms is {before:?} / {after:?} on {p} around it"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Quiescence: every node on the final ring, rebalancing driven to its
    /// end with the same core calls (plan, batch, on_stored, forget), every
    /// batch delivered.
    fn finish_rebalancing(&mut self, ids: &[NodeId], n: usize) -> Result<(), String> {
        for id in ids {
            let ring = self.ring.clone();
            let node = self.nodes.get_mut(id).expect("member");
            node.ring = ring;
            node.plan = None;
            node.inflight.clear();
        }
        for round in 0.. {
            if round > 10_000 {
                return Err("rebalancing does not finish".into());
            }
            let mut busy = false;
            for &id in ids {
                let node = self.nodes.get_mut(&id).expect("member");
                let mut plan = Rebalance::plan(id, &node.balanced, &node.ring, n, &node.store);
                node.balanced = node.ring.clone();
                busy |= !plan.is_done();
                while !plan.is_done() {
                    for t in plan.targets() {
                        let recs = plan.batch(t, &self.nodes[&id].store, 4, usize::MAX);
                        let stored: Vec<(Bytes, Version)> = recs.iter().map(|r| (r.key.clone(), r.version)).collect();
                        let target = self.nodes.get_mut(&t).expect("member");
                        for rec in recs {
                            target.store.apply(rec);
                        }
                        let node = self.nodes.get_mut(&id).expect("member");
                        let done = plan.on_stored(t, &stored, &node.store);
                        self.report.rebalance_keys += done.moved as u64;
                        for (k, v) in done.drop {
                            self.report.rebalance_forgotten += u64::from(node.store.forget(&k, v));
                        }
                    }
                }
            }
            if !busy {
                return Ok(());
            }
        }
        Ok(())
    }

    /// One Merkle exchange between `a` and `b` over the keys both replicate.
    fn anti_entropy(&mut self, a: NodeId, b: NodeId, n: usize) {
        let shared = |s: &ReplicaStore| -> BTreeMap<Bytes, Version> {
            s.iter()
                .filter(|r| {
                    let p = self.ring.preference_list(&r.key, n);
                    p.contains(&a) && p.contains(&b)
                })
                .map(|r| (r.key.clone(), r.version))
                .collect()
        };
        let (ea, eb) = (shared(&self.nodes[&a].store), shared(&self.nodes[&b].store));
        let ta = Merkle::build(ea.iter().map(|(k, v)| (k.as_ref(), *v)));
        let tb = Merkle::build(eb.iter().map(|(k, v)| (k.as_ref(), *v)));
        if ta.root() == tb.root() {
            return;
        }
        let leaves = ta.diff_leaves(tb.leaves());
        let only = |e: &BTreeMap<Bytes, Version>| -> BTreeMap<Bytes, Version> {
            e.iter().filter(|(k, _)| leaves.contains(&merkle::leaf_of(k))).map(|(k, v)| (k.clone(), *v)).collect()
        };
        for key in merkle::diff_keys(&only(&ea), &only(&eb)) {
            self.report.ae_keys += 1;
            let ra = self.nodes[&a].store.get(&key).cloned();
            let rb = self.nodes[&b].store.get(&key).cloned();
            if let Some(r) = ra {
                self.nodes.get_mut(&b).expect("member").store.apply(r);
            }
            if let Some(r) = rb {
                self.nodes.get_mut(&a).expect("member").store.apply(r);
            }
        }
    }
}

enum Decision {
    Write(Option<WriteOutcome>),
    Read(Option<ReadOutcome>),
    None,
}

/// Runs one seed.
pub fn run_leaderless_seed(seed: u64, cfg: &LeaderlessConfig) -> Result<LeaderlessReport, SimFailure> {
    let mut rng = SimRng::new(seed);
    // With `join`, the joining member runs from the start (empty, outside
    // the ring, never a coordinator until it joins).
    let count = cfg.members + u64::from(cfg.join);
    let nodes = (1..=count)
        .map(|id| {
            let skew_ms = rng.below(5);
            let ring = Ring::new(1..=cfg.members);
            let node = SimNode {
                up: true,
                store: ReplicaStore::new(),
                hints: Hints::new(),
                clock: Clock::new(id),
                skew_ms,
                balanced: ring.clone(),
                ring,
                plan: None,
                inflight: BTreeMap::new(),
            };
            (id, node)
        })
        .collect::<BTreeMap<NodeId, SimNode>>();
    let mut w = World {
        cfg: cfg.clone(),
        rng,
        t: Timeline::new(cfg.verbose, true),
        ring: Ring::new(1..=cfg.members),
        joining: false,
        nodes,
        pending: BTreeMap::new(),
        next_req: 1,
        acked: BTreeMap::new(),
        hinted: Vec::new(),
        report: LeaderlessReport { seed, ..Default::default() },
        ops_left: cfg.ops,
        side: None,
    };
    w.t.schedule(0, Ev::Op);
    w.t.schedule(5_000, Ev::Crash);
    if cfg.partitions {
        w.t.schedule(10_000, Ev::Partition);
    }
    if cfg.join {
        // Somewhere in the first half of the writes.
        let at = w.rng.range(20_000, 200_000);
        w.t.schedule(at, Ev::Join);
    }
    let fail = |w: &World, message: String| SimFailure {
        seed,
        at_ms: w.now_ms(),
        message,
        trace_tail: w.t.tail(),
        repro: "--test leaderless (TANDEM_SIM_SEED=<seed>)",
    };
    loop {
        match w.t.pop(EVENTS_MAX) {
            Ok(Some(ev)) => {
                if let Err(e) = w.step(ev) {
                    return Err(fail(&w, e));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(fail(&w, e)),
        }
    }
    if let Err(e) = w.heal_and_check() {
        return Err(fail(&w, e));
    }
    w.report.events = w.t.events();
    Ok(w.report)
}
