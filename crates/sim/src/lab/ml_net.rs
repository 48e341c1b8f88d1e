//! A small network of real multi-leader replicas
//! ([`MultiLeaderReplica`]) for lab scenarios: one replica per region,
//! per-pair one-way latencies, a local fsync per append, FIFO links, a tick
//! every second. The scenario drives it in time order: [`MlNet::advance_to`]
//! runs everything due before a client operation, [`MlNet::command`] submits
//! one, and replies are recorded with the virtual time they were released.
//!
//! Owns only delivery and timing; replication and merging are the core's.
//! Must never read a real clock or RNG.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use bytes::Bytes;
use tandem_core::keyspace::ConflictPolicy;
use tandem_core::repl::NodeId;
use tandem_core::replica::multi_leader::{MlMsg, MlOutput, MultiLeaderReplica, Stream};
use tandem_core::resp::Frame;

use crate::rng::{Latency, SimRng};

/// Most internal events one network may run.
const EVENTS_MAX: u64 = 5_000_000;

enum Ev {
    Deliver { to: NodeId, from: NodeId, stream: Stream, msg: MlMsg },
    Durable { node: NodeId, index: u64 },
    Tick,
}

/// The network.
pub struct MlNet {
    rng: SimRng,
    nodes: Vec<MultiLeaderReplica>,
    /// One-way latency between two nodes (index `[a-1][b-1]`).
    links: Vec<Vec<Latency>>,
    fsync: Latency,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    evs: Vec<Option<Ev>>,
    seq: u64,
    now_us: u64,
    fifo: BTreeMap<(NodeId, NodeId), u64>,
    next_token: u64,
    /// Released replies: token → (frame, virtual µs).
    pub replies: BTreeMap<u64, (Frame, u64)>,
    events: u64,
}

impl MlNet {
    /// Nodes `1..=links.len()` under `policy`, every pair connected.
    pub fn new(seed: u64, policy: ConflictPolicy, links: Vec<Vec<Latency>>, fsync: Latency) -> MlNet {
        let ids: Vec<NodeId> = (1..=links.len() as u64).collect();
        let mut nodes: Vec<MultiLeaderReplica> =
            ids.iter().map(|id| MultiLeaderReplica::new(*id, "lab", policy, &ids)).collect();
        for &a in &ids {
            for &c in &ids {
                if a != c {
                    nodes[(a - 1) as usize].handle_open(c, Stream::Out);
                    nodes[(c - 1) as usize].handle_open(a, Stream::In);
                }
            }
        }
        let mut net = MlNet {
            rng: SimRng::new(seed),
            nodes,
            links,
            fsync,
            queue: BinaryHeap::new(),
            evs: Vec::new(),
            seq: 0,
            now_us: 0,
            fifo: BTreeMap::new(),
            next_token: 1,
            replies: BTreeMap::new(),
            events: 0,
        };
        net.push(1_000_000, Ev::Tick);
        net
    }

    fn push(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.evs.push(Some(ev));
        self.queue.push(Reverse((at_us, self.seq, self.evs.len() - 1)));
    }

    /// Replica `id`.
    pub fn node(&self, id: NodeId) -> &MultiLeaderReplica {
        &self.nodes[(id - 1) as usize]
    }

    /// Runs every event due up to `at_us`, then sets the clock there.
    /// `tick_until_us` bounds the periodic tick (so the queue can drain).
    pub fn advance_to(&mut self, at_us: u64, tick_until_us: u64) -> Result<(), String> {
        while let Some(Reverse((t, _, i))) = self.queue.peek().copied() {
            if t > at_us {
                break;
            }
            self.queue.pop();
            self.events += 1;
            if self.events > EVENTS_MAX {
                return Err(format!("multi-leader network: more than {EVENTS_MAX} events"));
            }
            self.now_us = t;
            let now_ms = t / 1000;
            let ev = self.evs[i].take().expect("each event runs once");
            let touched: Vec<NodeId> = match ev {
                Ev::Deliver { to, from, stream, msg } => {
                    self.nodes[(to - 1) as usize].handle_msg(now_ms, from, stream, msg);
                    vec![to]
                }
                Ev::Durable { node, index } => {
                    self.nodes[(node - 1) as usize].handle_durable(index);
                    vec![node]
                }
                Ev::Tick => {
                    for n in self.nodes.iter_mut() {
                        n.handle_tick();
                    }
                    if t < tick_until_us {
                        self.push(t + 1_000_000, Ev::Tick);
                    }
                    (1..=self.nodes.len() as u64).collect()
                }
            };
            for id in touched {
                self.drain(id);
            }
        }
        self.now_us = self.now_us.max(at_us);
        Ok(())
    }

    /// Runs until nothing is left to deliver.
    pub fn settle(&mut self) -> Result<(), String> {
        self.advance_to(u64::MAX, 0)
    }

    /// Submits `args` on node `id` now; its token.
    pub fn command(&mut self, id: NodeId, args: &[&str]) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
        self.nodes[(id - 1) as usize].handle_command(self.now_us / 1000, token, &args);
        self.drain(id);
        token
    }

    fn drain(&mut self, id: NodeId) {
        while let Some(out) = self.nodes[(id - 1) as usize].poll_output() {
            match out {
                MlOutput::Append { index, .. } => {
                    let at = self.now_us + self.fsync.sample(&mut self.rng);
                    self.push(at, Ev::Durable { node: id, index });
                }
                MlOutput::Send { to, stream, msg } => {
                    let back = if stream == Stream::Out { Stream::In } else { Stream::Out };
                    let lat = self.links[(id - 1) as usize][(to - 1) as usize].sample(&mut self.rng);
                    let at = (self.now_us + lat).max(self.fifo.get(&(id, to)).copied().unwrap_or(0));
                    self.fifo.insert((id, to), at);
                    self.push(at, Ev::Deliver { to, from: id, stream: back, msg });
                }
                MlOutput::Reply { token, frame } => {
                    self.replies.insert(token, (frame, self.now_us));
                }
                MlOutput::Conflict(_) => {}
            }
        }
    }
}
