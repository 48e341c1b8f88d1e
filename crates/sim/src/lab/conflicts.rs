//! `conflicts`: two regions writing the same keys of a multi-leader
//! keyspace, under `lww`, `siblings` and `crdt`, driving the real
//! [`MultiLeaderReplica`] of each region over a 100 ms (one-way) link.
//!
//! Owns only the workload and the counting; the merge rules are the core's.
//! Must never read a real clock or RNG.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use bytes::Bytes;
use tandem_core::conflict::{Hlc, KeyValue, Outcome};
use tandem_core::keyspace::ConflictPolicy;
use tandem_core::repl::NodeId;
use tandem_core::replica::multi_leader::{MlMsg, MlOutput, MultiLeaderReplica, Stream};
use tandem_core::resp::Frame;

use super::plot::{Kind, Plot, Series};
use super::LabReport;
use crate::rng::SimRng;

/// Keys both regions write.
const KEYS: u64 = 20;
/// Virtual seconds of writing.
const WRITE_MS: u64 = 10_000;
/// Mean gap between one region's writes (ms).
const GAP_MEAN_MS: u64 = 50;
/// One-way latency between the regions (ms), plus up to `JITTER_MS`.
const ONE_WAY_MS: u64 = 100;
/// Jitter on the link (ms).
const JITTER_MS: u64 = 10;
/// Most events one run may take.
const EVENTS_MAX: u64 = 2_000_000;

enum Ev {
    Write(NodeId),
    Deliver { to: NodeId, from: NodeId, stream: Stream, msg: MlMsg },
    Durable { node: NodeId, index: u64 },
    Tick,
}

/// What one policy's run measured.
struct Run {
    acked: u64,
    discarded: u64,
    feed_records: u64,
    sibling_keys: u64,
    siblings: u64,
    cart_adds: u64,
    cart_present: u64,
    converged: bool,
}

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn run(seed: u64, policy: ConflictPolicy) -> Result<Run, String> {
    let mut rng = SimRng::new(seed);
    let ids = [1u64, 2u64];
    let mut nodes: Vec<MultiLeaderReplica> =
        ids.iter().map(|id| MultiLeaderReplica::new(*id, "lab", policy, &ids)).collect();
    let mut q: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut evs: Vec<Option<Ev>> = Vec::new();
    let mut seq = 0u64;
    let mut push = |q: &mut BinaryHeap<Reverse<(u64, u64, usize)>>, evs: &mut Vec<Option<Ev>>, at: u64, ev: Ev| {
        seq += 1;
        evs.push(Some(ev));
        q.push(Reverse((at, seq, evs.len() - 1)));
    };
    // Both directions open at time 0 (each node dials the other).
    for a in ids {
        for c in ids {
            if a != c {
                nodes[(a - 1) as usize].handle_open(c, Stream::Out);
                nodes[(c - 1) as usize].handle_open(a, Stream::In);
            }
        }
    }
    for id in ids {
        let at = rng.exp(GAP_MEAN_MS);
        push(&mut q, &mut evs, at, Ev::Write(id));
    }
    push(&mut q, &mut evs, 1_000, Ev::Tick);
    let mut fifo: BTreeMap<(NodeId, NodeId), u64> = BTreeMap::new();
    let mut tokens: BTreeMap<u64, Option<Bytes>> = BTreeMap::new();
    let mut next_token = 1u64;
    let mut acked = 0u64;
    let mut cart_acked: BTreeSet<Bytes> = BTreeSet::new();
    let mut writes_n = 0u64;
    let mut events = 0u64;
    let mut now;
    while let Some(Reverse((at, _, i))) = q.pop() {
        events += 1;
        if events > EVENTS_MAX {
            return Err(format!("conflicts: more than {EVENTS_MAX} events"));
        }
        now = at;
        let ev = evs[i].take().expect("each event runs once");
        let node = match ev {
            Ev::Write(id) => {
                writes_n += 1;
                let key = format!("k{}", rng.below(KEYS));
                let region = if id == 1 { "us" } else { "eu" };
                let (args, item) = match policy {
                    ConflictPolicy::Crdt => {
                        let item = format!("{region}-item{writes_n}");
                        (vec![b("SADD"), b(&format!("cart:{key}")), b(&item)], Some(b(&item)))
                    }
                    _ => (vec![b("SET"), b(&key), b(&format!("{region}-{writes_n}"))], None),
                };
                let token = next_token;
                next_token += 1;
                tokens.insert(token, item);
                nodes[(id - 1) as usize].handle_command(now, token, &args);
                if now < WRITE_MS {
                    let gap = 1 + rng.exp(GAP_MEAN_MS);
                    push(&mut q, &mut evs, now + gap, Ev::Write(id));
                }
                id
            }
            Ev::Deliver { to, from, stream, msg } => {
                nodes[(to - 1) as usize].handle_msg(now, from, stream, msg);
                to
            }
            Ev::Durable { node, index } => {
                nodes[(node - 1) as usize].handle_durable(index);
                node
            }
            Ev::Tick => {
                for n in nodes.iter_mut() {
                    n.handle_tick();
                }
                if now < WRITE_MS + 5_000 {
                    push(&mut q, &mut evs, now + 1_000, Ev::Tick);
                }
                for id in ids {
                    let n = &mut nodes[(id - 1) as usize];
                    while let Some(o) = n.poll_output() {
                        route(
                            &mut rng,
                            &mut q,
                            &mut evs,
                            &mut push,
                            &mut fifo,
                            &mut tokens,
                            &mut acked,
                            &mut cart_acked,
                            now,
                            id,
                            o,
                        );
                    }
                }
                continue;
            }
        };
        while let Some(o) = nodes[(node - 1) as usize].poll_output() {
            route(
                &mut rng,
                &mut q,
                &mut evs,
                &mut push,
                &mut fifo,
                &mut tokens,
                &mut acked,
                &mut cart_acked,
                now,
                node,
                o,
            );
        }
    }
    let converged = nodes[0].keys() == nodes[1].keys();
    // Distinct discarded versions across both feeds.
    let mut discarded: BTreeSet<(NodeId, Hlc)> = BTreeSet::new();
    let mut feed_records = 0u64;
    for n in &nodes {
        for item in n.conflicts(0, usize::MAX) {
            feed_records += 1;
            if item.record.outcome == Outcome::Discarded {
                for v in item.record.versions.iter().filter(|v| !v.kept) {
                    discarded.insert((v.origin, v.hlc));
                }
            }
        }
    }
    let (mut sibling_keys, mut siblings, mut cart_present) = (0u64, 0u64, 0u64);
    for v in nodes[0].keys().values() {
        if let KeyValue::Siblings(m) = v {
            siblings += m.sibs.len() as u64;
            if m.sibs.len() > 1 {
                sibling_keys += 1;
            }
        }
    }
    for item in &cart_acked {
        let held = nodes[0].keys().values().any(|v| matches!(v, KeyValue::Crdt(c) if c.set.contains(item)));
        cart_present += u64::from(held);
    }
    Ok(Run {
        acked,
        discarded: discarded.len() as u64,
        feed_records,
        sibling_keys,
        siblings,
        cart_adds: cart_acked.len() as u64,
        cart_present,
        converged,
    })
}

#[allow(clippy::too_many_arguments)]
fn route<P>(
    rng: &mut SimRng,
    q: &mut BinaryHeap<Reverse<(u64, u64, usize)>>,
    evs: &mut Vec<Option<Ev>>,
    push: &mut P,
    fifo: &mut BTreeMap<(NodeId, NodeId), u64>,
    tokens: &mut BTreeMap<u64, Option<Bytes>>,
    acked: &mut u64,
    cart_acked: &mut BTreeSet<Bytes>,
    now: u64,
    id: NodeId,
    out: MlOutput,
) where
    P: FnMut(&mut BinaryHeap<Reverse<(u64, u64, usize)>>, &mut Vec<Option<Ev>>, u64, Ev),
{
    match out {
        MlOutput::Append { index, .. } => {
            // A local fsync of 1-4 ms (the measured SSD range of disk.rs's model).
            let d = 1 + rng.below(4);
            push(q, evs, now + d, Ev::Durable { node: id, index });
        }
        MlOutput::Send { to, stream, msg } => {
            let back = if stream == Stream::Out { Stream::In } else { Stream::Out };
            let at = (now + ONE_WAY_MS + rng.below(JITTER_MS + 1)).max(fifo.get(&(id, to)).copied().unwrap_or(0));
            fifo.insert((id, to), at);
            push(q, evs, at, Ev::Deliver { to, from: id, stream: back, msg });
        }
        MlOutput::Reply { token, frame } => {
            if let Some(item) = tokens.remove(&token) {
                if !matches!(frame, Frame::Error(_)) {
                    *acked += 1;
                    if let Some(item) = item {
                        cart_acked.insert(item);
                    }
                }
            }
        }
        MlOutput::Conflict(_) => {}
    }
}

/// `conflicts`.
pub fn conflicts(seed: u64) -> Result<LabReport, String> {
    let policies = [ConflictPolicy::Lww, ConflictPolicy::Siblings, ConflictPolicy::Crdt];
    let mut runs = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        runs.push(run(seed.wrapping_mul(31).wrapping_add(i as u64), *p)?);
    }
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    for (p, r) in policies.iter().zip(&runs) {
        let lost = match p {
            ConflictPolicy::Lww => r.discarded,
            ConflictPolicy::Siblings => 0,
            ConflictPolicy::Crdt => r.cart_adds - r.cart_present,
        };
        rows.push(vec![
            p.to_string(),
            r.acked.to_string(),
            r.feed_records.to_string(),
            r.discarded.to_string(),
            format!("{} in {} keys", r.siblings, r.sibling_keys),
            if *p == ConflictPolicy::Crdt { format!("{}/{}", r.cart_present, r.cart_adds) } else { "-".into() },
            lost.to_string(),
            if r.converged { "yes" } else { "NO" }.into(),
        ]);
        bars.push(Series { name: p.to_string(), points: vec![(0.0, lost as f64)] });
    }
    let (l, s, c) = (&runs[0], &runs[1], &runs[2]);
    let reading = format!(
        "Two regions {} ms apart wrote the same {KEYS} keys for {} s. Under last-writer-wins, {} of {} acknowledged \
         writes ({:.1}%) were silently overwritten by a concurrent write from the other region; every one of them is \
         in the conflict feed ({} records), which is the only trace they leave. Under siblings nothing was discarded: \
         {} keys ended with more than one value ({} values in all) waiting for the application to resolve them. The \
         CRDT cart kept {} of {} acknowledged item additions ({} lost). Replicas {} after the writes stopped.",
        ONE_WAY_MS,
        WRITE_MS / 1000,
        l.discarded,
        l.acked,
        100.0 * l.discarded as f64 / l.acked.max(1) as f64,
        l.feed_records,
        s.sibling_keys,
        s.siblings,
        c.cart_present,
        c.cart_adds,
        c.cart_adds - c.cart_present,
        if runs.iter().all(|r| r.converged) { "converged under every policy" } else { "did NOT all converge" },
    );
    Ok(LabReport {
        name: "conflicts".into(),
        question: super::find("conflicts").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("regions".into(), format!("us and eu, {ONE_WAY_MS}-{} ms one way", ONE_WAY_MS + JITTER_MS)),
            ("replicas".into(), "the real multi-leader replica core on each region; fsync 1-4 ms".into()),
            (
                "workload".into(),
                format!("each region writes one of {KEYS} shared keys every ~{GAP_MEAN_MS} ms for {} s (crdt: SADD to a shared cart)", WRITE_MS / 1000),
            ),
        ],
        columns: ["policy", "acked writes", "feed records", "discarded", "siblings", "cart items kept", "writes lost", "converged"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        plots: vec![Plot {
            title: "Acknowledged writes lost per conflict policy".into(),
            x_label: "policy".into(),
            y_label: "writes lost".into(),
            kind: Kind::Bars,
            log_x: false,
            series: bars,
        }],
    })
}
