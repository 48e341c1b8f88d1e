//! A world of multi-leader replicas: the real
//! [`MultiLeaderReplica`](tandem_core::replica::multi_leader::MultiLeaderReplica)
//! on every node, random concurrent writes at every node, per-link FIFO
//! connections with random latency (so streams reorder against each
//! other), connection resets (message loss), partitions that heal, crashes
//! that drop unsynced log records and restarts that replay the synced log,
//! and skewed wall clocks.
//!
//! Checkers, after the faults stop and the world goes quiet:
//! 1. all replicas hold equal versions of every key;
//! 2. no acknowledged write is lost: every acked write is applied on every
//!    node, and under `crdt` every acked `SADD` of a never-removed member
//!    is present everywhere;
//! 3. every LWW discard is in the feed: each acked `lww` write that is not
//!    the final value and that no later write saw was reported as a
//!    discarded loser by some node;
//! 4. a `RESOLVE` (or `SET`) never removes a sibling it did not see: each
//!    write missing from the final siblings is covered by the context some
//!    other write was made with.
//!
//! Must never read a real clock or RNG; the seed is the whole input.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tandem_core::conflict::{Dot, Hlc, KeyValue, Outcome, VersionVector};
use tandem_core::keyspace::ConflictPolicy;
use tandem_core::repl::NodeId;
use tandem_core::replica::multi_leader::exec::{encode_context, parse_context};
use tandem_core::replica::multi_leader::{MlEntry, MlMsg, MlOutput, MultiLeaderReplica, Stream};
use tandem_core::resp::Frame;

use crate::rng::SimRng;
use crate::schedule::{Coded, Timeline};

/// Client operations per run.
const OPS: usize = 60;
/// Most events one run may take.
const EVENTS_MAX: u64 = 200_000;

#[derive(Debug)]
enum Ev {
    Op,
    Dial(NodeId, NodeId),
    Deliver { conn: (NodeId, NodeId), gen: u64, to: NodeId, stream: Stream, msg: MlMsg },
    Sync { node: NodeId, incarnation: u64 },
    Reset(NodeId, NodeId),
    Partition,
    Heal,
    Crash(NodeId),
    Restart(NodeId),
    Tick,
}

impl Coded for Ev {
    fn code(&self) -> u64 {
        match self {
            Ev::Op => 1,
            Ev::Dial(a, b) => 2 + a * 16 + b * 256,
            Ev::Deliver { to, .. } => 3 + to * 16,
            Ev::Sync { node, .. } => 4 + node * 16,
            Ev::Reset(a, b) => 5 + a * 16 + b * 256,
            Ev::Partition => 6,
            Ev::Heal => 7,
            Ev::Crash(n) => 8 + n * 16,
            Ev::Restart(n) => 9 + n * 16,
            Ev::Tick => 10,
        }
    }
}

struct Node {
    replica: Option<MultiLeaderReplica>,
    synced: Vec<MlEntry>,
    unsynced: Vec<(u64, MlEntry)>,
    incarnation: u64,
    skew_ms: i64,
    sync_pending: bool,
}

/// A write as the checkers see it.
#[derive(Debug, Clone)]
struct Write {
    key: Bytes,
    dot: Dot,
    hlc: Hlc,
    /// What the writer said it had seen (siblings: the context passed).
    context: VersionVector,
    acked: bool,
    origin_seq: (NodeId, u64),
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct MlReport {
    /// The seed.
    pub seed: u64,
    /// The policy drawn.
    pub policy: Option<ConflictPolicy>,
    /// Acknowledged writes.
    pub acked: usize,
    /// Conflict records emitted.
    pub conflicts: usize,
    /// Crashes injected.
    pub crashes: usize,
}

struct World {
    rng: SimRng,
    tl: Timeline<Ev>,
    policy: ConflictPolicy,
    nodes: Vec<Node>,
    ids: Vec<NodeId>,
    /// Open connections (dialer, acceptor) -> generation.
    conns: BTreeMap<(NodeId, NodeId), u64>,
    /// Last delivery time per (connection, receiver): FIFO per direction.
    fifo: BTreeMap<(NodeId, NodeId, NodeId), u64>,
    next_gen: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    faults_on: bool,
    ops_left: usize,
    next_token: u64,
    /// token -> indexes into `writes` it produced.
    tokens: BTreeMap<u64, Vec<usize>>,
    writes: Vec<Write>,
    /// Members added by SADD on `log` (never removed): token -> member.
    log_adds: BTreeMap<u64, Bytes>,
    acked_log: Vec<Bytes>,
    /// (origin, hlc) of every loser reported as discarded.
    discarded: BTreeSet<(NodeId, Hlc)>,
    report: MlReport,
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

impl World {
    fn node(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[(id - 1) as usize]
    }

    fn now_ms(&self, id: NodeId) -> u64 {
        let base = 1_700_000_000_000i64 + (self.tl.now_us() / 1000) as i64;
        (base + self.nodes[(id - 1) as usize].skew_ms) as u64
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        !self.cut.contains(&(a.min(b), a.max(b)))
    }

    fn alive(&self, id: NodeId) -> bool {
        self.nodes[(id - 1) as usize].replica.is_some()
    }

    /// Drains node `id`'s outputs into the world.
    fn drain(&mut self, id: NodeId) {
        while let Some(out) = self.node(id).replica.as_mut().and_then(|r| r.poll_output()) {
            self.route(id, out);
        }
    }

    fn command(&mut self, id: NodeId, args: &[Bytes]) -> (u64, Frame) {
        let token = self.next_token;
        self.next_token += 1;
        let now = self.now_ms(id);
        let policy = self.policy;
        let before = self.node(id).replica.as_ref().and_then(|r| r.key(&args[1]).cloned());
        let r = self.node(id).replica.as_mut().expect("alive");
        r.handle_command(now, token, args);
        // Capture the writes from the appends (they stay queued for drain).
        let mut outs = Vec::new();
        while let Some(o) = r.poll_output() {
            outs.push(o);
        }
        let mut reply = Frame::Null;
        let mut mine = Vec::new();
        for o in &outs {
            match o {
                MlOutput::Append { entry, .. } => {
                    if let Some(w) = describe(policy, id, entry, before.as_ref(), args) {
                        mine.push(self.writes.len());
                        self.writes.push(w);
                    }
                }
                MlOutput::Reply { token: t, frame } if *t == token => reply = frame.clone(),
                _ => {}
            }
        }
        self.tokens.insert(token, mine);
        for o in outs {
            self.route(id, o);
        }
        (token, reply)
    }

    /// Carries out one output of node `id`.
    fn route(&mut self, id: NodeId, out: MlOutput) {
        match out {
            MlOutput::Append { index, entry } => {
                let n = self.node(id);
                n.unsynced.push((index, entry));
                if !n.sync_pending {
                    n.sync_pending = true;
                    let inc = n.incarnation;
                    let d = self.rng.range(50, 3_000);
                    self.tl.schedule(d, Ev::Sync { node: id, incarnation: inc });
                }
            }
            MlOutput::Send { to, stream, msg } => {
                let conn = if stream == Stream::Out { (id, to) } else { (to, id) };
                let Some(gen) = self.conns.get(&conn).copied() else { return };
                let back = if stream == Stream::Out { Stream::In } else { Stream::Out };
                let lat = self.rng.range(200, 20_000);
                let at = (self.tl.now_us() + lat).max(self.fifo.get(&(conn.0, conn.1, to)).copied().unwrap_or(0));
                self.fifo.insert((conn.0, conn.1, to), at);
                self.tl.schedule(at - self.tl.now_us(), Ev::Deliver { conn, gen, to, stream: back, msg });
            }
            MlOutput::Reply { token, frame } => {
                if matches!(frame, Frame::Error(_)) {
                    return;
                }
                if let Some(ws) = self.tokens.remove(&token) {
                    for w in ws {
                        self.writes[w].acked = true;
                        self.report.acked += 1;
                    }
                }
                if let Some(m) = self.log_adds.remove(&token) {
                    self.acked_log.push(m);
                }
            }
            MlOutput::Conflict(rec) => {
                self.report.conflicts += 1;
                if rec.outcome == Outcome::Discarded {
                    for v in rec.versions.iter().filter(|v| !v.kept) {
                        self.discarded.insert((v.origin, v.hlc));
                    }
                }
            }
        }
    }

    fn client_op(&mut self) {
        let alive: Vec<NodeId> = self.ids.iter().copied().filter(|i| self.alive(*i)).collect();
        if alive.is_empty() {
            return;
        }
        let id = *self.rng.pick(&alive);
        let key = format!("k{}", self.rng.below(3));
        let v = format!("v{}", self.next_token);
        let args: Vec<Bytes> = match self.policy {
            ConflictPolicy::Lww => match self.rng.below(5) {
                0 => vec![b("DEL"), b(&key)],
                _ => vec![b("SET"), b(&key), b(&v)],
            },
            ConflictPolicy::Siblings => match self.rng.below(6) {
                0 => vec![b("DEL"), b(&key)],
                1 | 2 => {
                    // A SIBLINGS read here, then RESOLVE with its context
                    // (other nodes' writes meanwhile are concurrent).
                    let r = self.node(id).replica.as_ref().expect("alive");
                    let ctx = match r.key(key.as_bytes()) {
                        Some(KeyValue::Siblings(m)) => m.clock.clone(),
                        _ => VersionVector::new(),
                    };
                    vec![b("RESOLVE"), b(&key), Bytes::from(encode_context(&ctx)), b(&v)]
                }
                _ => vec![b("SET"), b(&key), b(&v)],
            },
            ConflictPolicy::Crdt => match self.rng.below(10) {
                0 => vec![b("SADD"), b("log"), b(&v)],
                1 => vec![b("SADD"), b(&key), b(&format!("m{}", self.rng.below(4)))],
                2 => vec![b("SREM"), b(&key), b(&format!("m{}", self.rng.below(4)))],
                3 => vec![b("INCRBY"), b("ctr"), Bytes::from((self.rng.below(20) as i64 - 10).to_string())],
                4 => vec![b("HSET"), b("h"), b(&format!("f{}", self.rng.below(3))), b(&v)],
                5 => vec![b("HINCRBY"), b("h2"), b(&format!("f{}", self.rng.below(3))), b("2")],
                6 => vec![b("ZINCRBY"), b("z"), b("1.5"), b(&format!("m{}", self.rng.below(3)))],
                7 => vec![b("DEL"), b(&key)],
                8 => vec![b("EXPIRE"), b(&key), Bytes::from((1000 + self.rng.below(1000)).to_string())],
                _ => vec![b("SET"), b("s"), b(&v)],
            },
        };
        let (token, _) = self.command(id, &args);
        if args[0] == "SADD" && args[1] == "log" {
            // Acked later (or now, if already released).
            if self.tokens.contains_key(&token) {
                self.log_adds.insert(token, args[2].clone());
            } else {
                self.acked_log.push(args[2].clone());
            }
        }
    }

    fn open_conn(&mut self, a: NodeId, bnode: NodeId) {
        if !self.alive(a) || !self.alive(bnode) || !self.linked(a, bnode) || self.conns.contains_key(&(a, bnode)) {
            return;
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        self.conns.insert((a, bnode), gen);
        self.node(a).replica.as_mut().expect("alive").handle_open(bnode, Stream::Out);
        self.node(bnode).replica.as_mut().expect("alive").handle_open(a, Stream::In);
        self.drain(a);
        self.drain(bnode);
    }

    fn close_conn(&mut self, a: NodeId, bnode: NodeId) {
        if self.conns.remove(&(a, bnode)).is_none() {
            return;
        }
        if let Some(r) = self.node(a).replica.as_mut() {
            r.handle_closed(bnode, Stream::Out);
        }
        if let Some(r) = self.node(bnode).replica.as_mut() {
            r.handle_closed(a, Stream::In);
        }
        let d = self.rng.range(10_000, 200_000);
        self.tl.schedule(d, Ev::Dial(a, bnode));
    }

    fn close_all_of(&mut self, id: NodeId) {
        let conns: Vec<(NodeId, NodeId)> = self.conns.keys().copied().filter(|(a, b2)| *a == id || *b2 == id).collect();
        for (a, b2) in conns {
            self.close_conn(a, b2);
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Op => {
                if self.ops_left > 0 {
                    self.ops_left -= 1;
                    self.client_op();
                    let d = self.rng.exp(20_000);
                    self.tl.schedule(d, Ev::Op);
                } else {
                    self.faults_on = false;
                }
            }
            Ev::Dial(a, b2) => {
                if self.alive(a) && self.alive(b2) && !self.linked(a, b2) {
                    let d = self.rng.range(50_000, 200_000);
                    self.tl.schedule(d, Ev::Dial(a, b2));
                } else {
                    self.open_conn(a, b2);
                }
            }
            Ev::Deliver { conn, gen, to, stream, msg } => {
                if self.conns.get(&conn) != Some(&gen) {
                    return;
                }
                let from = if conn.0 == to { conn.1 } else { conn.0 };
                let now = self.now_ms(to);
                if let Some(r) = self.node(to).replica.as_mut() {
                    r.handle_msg(now, from, stream, msg);
                }
                self.drain(to);
            }
            Ev::Sync { node, incarnation } => {
                let n = self.node(node);
                if n.incarnation != incarnation {
                    return;
                }
                n.sync_pending = false;
                let batch = std::mem::take(&mut n.unsynced);
                let Some(last) = batch.last().map(|(i, _)| *i) else { return };
                n.synced.extend(batch.into_iter().map(|(_, e)| e));
                n.replica.as_mut().expect("alive").handle_durable(last);
                self.drain(node);
            }
            Ev::Reset(a, b2) => {
                if self.faults_on {
                    self.close_conn(a, b2);
                }
            }
            Ev::Partition => {
                if self.faults_on {
                    let a = *self.rng.pick(&self.ids.clone());
                    let others: Vec<NodeId> = self.ids.iter().copied().filter(|x| *x != a).collect();
                    for o in others {
                        self.cut.insert((a.min(o), a.max(o)));
                        self.close_conn(a, o);
                        self.close_conn(o, a);
                    }
                    let d = self.rng.range(100_000, 2_000_000);
                    self.tl.schedule(d, Ev::Heal);
                }
            }
            Ev::Heal => self.cut.clear(),
            Ev::Crash(id) => {
                if self.faults_on && self.alive(id) {
                    self.report.crashes += 1;
                    self.close_all_of(id);
                    let n = self.node(id);
                    n.replica = None;
                    n.unsynced.clear();
                    n.incarnation += 1;
                    n.sync_pending = false;
                    // Replies it owed are lost with it.
                    let d = self.rng.range(100_000, 1_000_000);
                    self.tl.schedule(d, Ev::Restart(id));
                }
            }
            Ev::Restart(id) => {
                if self.alive(id) {
                    // Already brought back (the end of the faults).
                    return;
                }
                let ids = self.ids.clone();
                let policy = self.policy;
                let n = self.node(id);
                let mut r = MultiLeaderReplica::new(id, "sim", policy, &ids);
                for e in n.synced.clone() {
                    r.recover(e);
                }
                n.replica = Some(r);
                for o in ids.into_iter().filter(|o| *o != id) {
                    self.tl.schedule(1_000, Ev::Dial(id, o));
                    self.tl.schedule(1_000, Ev::Dial(o, id));
                }
            }
            Ev::Tick => {
                for id in self.ids.clone() {
                    if let Some(r) = self.node(id).replica.as_mut() {
                        r.handle_tick();
                    }
                    self.drain(id);
                }
                if self.faults_on {
                    // Faults, drawn while the run is young.
                    let ids = self.ids.clone();
                    if self.rng.chance(0.05) {
                        let a = *self.rng.pick(&ids);
                        let c = *self.rng.pick(&ids);
                        if a != c {
                            self.tl.schedule(0, Ev::Reset(a, c));
                        }
                    }
                    if self.rng.chance(0.02) {
                        self.tl.schedule(0, Ev::Partition);
                    }
                    if self.rng.chance(0.02) {
                        let a = *self.rng.pick(&ids);
                        self.tl.schedule(0, Ev::Crash(a));
                    }
                    self.tl.schedule(100_000, Ev::Tick);
                }
            }
        }
    }
}

/// The write an appended entry made, for the checkers.
fn describe(
    policy: ConflictPolicy,
    node: NodeId,
    e: &MlEntry,
    before: Option<&KeyValue>,
    args: &[Bytes],
) -> Option<Write> {
    let (dot, hlc, context) = match (&e.value, policy) {
        (KeyValue::Lww(r), _) => {
            let w = r.winner.as_ref()?;
            let mut ctx = r.clock.clone();
            // What it saw is the clock before its own dot.
            ctx.0.insert(node, w.dot.counter - 1);
            (w.dot, w.hlc, ctx)
        }
        (KeyValue::Siblings(m), _) => {
            let own = m.clock.get(node);
            let s = m.sibs.iter().find(|s| s.dot == Dot { node, counter: own })?;
            let ctx = if args[0].eq_ignore_ascii_case(b"RESOLVE") {
                parse_context(&args[2]).unwrap_or_default()
            } else {
                match before {
                    Some(KeyValue::Siblings(b)) => b.clock.clone(),
                    _ => VersionVector::new(),
                }
            };
            (s.dot, s.hlc, ctx)
        }
        _ => (Dot { node, counter: e.seq }, e.hlc, VersionVector::new()),
    };
    Some(Write { key: e.key.clone(), dot, hlc, context, acked: false, origin_seq: (e.origin, e.seq) })
}

/// Runs one seed; `Err` names the broken guarantee.
pub fn run_ml_seed(seed: u64, verbose: bool) -> Result<MlReport, String> {
    let mut rng = SimRng::new(seed);
    let n = 2 + rng.below(3);
    let policy = match rng.below(3) {
        0 => ConflictPolicy::Lww,
        1 => ConflictPolicy::Siblings,
        _ => ConflictPolicy::Crdt,
    };
    let ids: Vec<NodeId> = (1..=n).collect();
    let nodes = ids
        .iter()
        .map(|id| Node {
            replica: Some(MultiLeaderReplica::new(*id, "sim", policy, &ids)),
            synced: Vec::new(),
            unsynced: Vec::new(),
            incarnation: 0,
            skew_ms: rng.range(0, 1_000) as i64 - 500,
            sync_pending: false,
        })
        .collect();
    let mut w = World {
        rng,
        tl: Timeline::new(verbose, false),
        policy,
        nodes,
        ids: ids.clone(),
        conns: BTreeMap::new(),
        fifo: BTreeMap::new(),
        next_gen: 1,
        cut: BTreeSet::new(),
        faults_on: true,
        ops_left: OPS,
        next_token: 1,
        tokens: BTreeMap::new(),
        writes: Vec::new(),
        log_adds: BTreeMap::new(),
        acked_log: Vec::new(),
        discarded: BTreeSet::new(),
        report: MlReport { seed, policy: Some(policy), ..MlReport::default() },
    };
    for a in &ids {
        for c in &ids {
            if a != c {
                w.tl.schedule(0, Ev::Dial(*a, *c));
            }
        }
    }
    w.tl.schedule(1, Ev::Op);
    w.tl.schedule(100_000, Ev::Tick);
    while let Some(ev) = w.tl.pop(EVENTS_MAX)? {
        w.handle(ev);
        if !w.faults_on && w.ops_left == 0 {
            // Faults are over: heal, bring everyone back, reconnect.
            w.cut.clear();
            for id in ids.clone() {
                if !w.alive(id) {
                    w.handle(Ev::Restart(id));
                }
            }
            for a in ids.clone() {
                for c in ids.clone() {
                    if a != c {
                        w.open_conn(a, c);
                    }
                }
            }
        }
    }
    check(&w).map_err(|e| format!("seed {seed} ({policy}, {n} nodes): {e}"))?;
    Ok(w.report)
}

fn check(w: &World) -> Result<(), String> {
    let replicas: Vec<&MultiLeaderReplica> = w.nodes.iter().map(|n| n.replica.as_ref().expect("restarted")).collect();
    // 1. convergence.
    for r in &replicas[1..] {
        if r.keys() != replicas[0].keys() {
            let key = r.keys().iter().find(|(k, v)| replicas[0].key(k) != Some(*v)).map(|(k, _)| k.clone());
            return Err(format!(
                "replicas differ after quiescence on {key:?}: peers {:?} / {:?}, conns {:?}; node {} (applied {:?}) has {:?}, node {} (applied {:?}) has {:?}",
                replicas[0].peers(),
                r.peers(),
                w.conns,
                replicas[0].node(),
                replicas[0].applied(),
                key.as_ref().and_then(|k| replicas[0].key(k)),
                r.node(),
                r.applied(),
                key.as_ref().and_then(|k| r.key(k)),
            ));
        }
    }
    // 2. no acknowledged write lost.
    for wr in w.writes.iter().filter(|x| x.acked) {
        for r in &replicas {
            if r.applied().get(wr.origin_seq.0) < wr.origin_seq.1 {
                return Err(format!(
                    "acked write {:?} of key {:?} is not applied on node {}",
                    wr.origin_seq,
                    wr.key,
                    r.node()
                ));
            }
        }
    }
    if w.policy == ConflictPolicy::Crdt {
        if let Some(KeyValue::Crdt(c)) = replicas[0].key(b"log") {
            for m in &w.acked_log {
                if !c.set.contains(m) {
                    return Err(format!("acked SADD log {m:?} is missing"));
                }
            }
        } else if !w.acked_log.is_empty() {
            return Err("acked SADDs to `log` but the key is missing".into());
        }
    }
    // 3 and 4: per key, writes that did not survive.
    for wr in w.writes.iter().filter(|x| x.acked) {
        let seen_by_other = w.writes.iter().any(|o| o.key == wr.key && o.dot != wr.dot && o.context.contains(wr.dot));
        match (w.policy, replicas[0].key(&wr.key)) {
            (ConflictPolicy::Lww, Some(KeyValue::Lww(r))) => {
                let won = r.winner.as_ref().is_some_and(|x| x.dot == wr.dot);
                if !won && !seen_by_other && !w.discarded.contains(&(wr.dot.node, wr.hlc)) {
                    return Err(format!("lww write {:?} of {:?} was discarded without a feed record", wr.dot, wr.key));
                }
            }
            (ConflictPolicy::Siblings, Some(KeyValue::Siblings(m))) => {
                let kept = m.sibs.iter().any(|s| s.dot == wr.dot);
                if !kept && !seen_by_other {
                    return Err(format!(
                        "sibling {:?} of {:?} was removed by a write that never saw it",
                        wr.dot, wr.key
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}
