//! `single-box`: one node against three. Two measurements:
//!
//! 1. Throughput: a closed-loop queueing simulation of 64 clients against
//!    1 or 3 nodes, each node one CPU with per-operation costs calibrated to
//!    docs/benchmarks (one node ~100k GET/s, ~50k SET/s); reads spread over
//!    every node, writes all go to the leader, and every follower pays to
//!    apply every write.
//! 2. Losing a machine: one node lost at a random moment of its nightly
//!    backup cycle (restore from that backup onto a new machine, at the
//!    measured restore speed) against three nodes, whose failover is run on
//!    the failover world (real failover cores: leases, fencing, promotion)
//!    with `any 1`.
//!
//! Must never read a real clock or RNG.

use tandem_core::repl::AckPolicy;

use super::plot::{percentile, Kind, Plot, Series};
use super::LabReport;
use crate::failover::{run_failover_seed, FailoverConfig};
use crate::rng::SimRng;

/// Clients in the throughput runs.
const CLIENTS: u64 = 64;
/// Client ↔ node round trip inside the data center (µs).
const RTT_US: u64 = 200;
/// CPU per GET (µs).
const GET_US: u64 = 10;
/// CPU per SET on the leader: execute, log append (µs).
const SET_US: u64 = 20;
/// CPU the leader spends shipping one write to one follower (µs).
const SHIP_US: u64 = 2;
/// CPU a follower spends applying one write (µs).
const APPLY_US: u64 = 8;
/// Virtual time per throughput run (µs).
const RUN_US: u64 = 1_000_000;
/// Nightly backups: a backup every 24 h.
const BACKUP_EVERY_S: u64 = 24 * 3600;
/// Average write rate of the application (writes/s) for the loss estimate.
const WRITE_RATE: u64 = 200;
/// Provisioning a replacement machine (s).
const PROVISION_S: u64 = 600;
/// Data set size (MB) and the measured restore speed from a full base (MB/s, docs/benchmarks).
const DATA_MB: u64 = 2_000;
const RESTORE_MB_S: u64 = 82;
/// Sampled machine-loss moments for the single node.
const LOSS_SAMPLES: u64 = 200;
/// Failover histories for the three-node cluster.
const FAILOVER_SEEDS: u64 = 20;

/// Throughput of `nodes` nodes for a share of writes: ops/s.
fn throughput(seed: u64, nodes: usize, write_share: f64) -> f64 {
    let mut rng = SimRng::new(seed);
    // Each node's CPU is free from `busy[n]` on.
    let mut busy = vec![0u64; nodes];
    // Each client's next request time (closed loop).
    let mut next: Vec<u64> = (0..CLIENTS).map(|c| c * 3).collect();
    let mut done = 0u64;
    let mut rr = 0usize;
    loop {
        let (c, at) = next.iter().copied().enumerate().min_by_key(|(i, t)| (*t, *i)).expect("clients");
        if at >= RUN_US {
            break;
        }
        let arrive = at + RTT_US / 2;
        let finish = if rng.chance(write_share) {
            let start = arrive.max(busy[0]);
            let cost = SET_US + SHIP_US * (nodes as u64 - 1);
            busy[0] = start + cost;
            for b in busy.iter_mut().skip(1) {
                // Followers apply the write when it reaches them.
                *b = (*b).max(start + cost + RTT_US / 2) + APPLY_US;
            }
            start + cost
        } else {
            rr = (rr + 1) % nodes;
            let start = arrive.max(busy[rr]);
            busy[rr] = start + GET_US;
            start + GET_US
        };
        next[c] = finish + RTT_US / 2;
        done += 1;
    }
    done as f64 * 1_000_000.0 / RUN_US as f64
}

/// `single-box`.
pub fn single_box(seed: u64) -> Result<LabReport, String> {
    let mixes = [("reads (GET)", 0.0), ("90% reads", 0.1), ("writes (SET)", 1.0)];
    let mut tput = Vec::new();
    for (i, (_, w)) in mixes.iter().enumerate() {
        let one = throughput(seed.wrapping_add(i as u64), 1, *w);
        let three = throughput(seed.wrapping_add(i as u64), 3, *w);
        tput.push((one, three));
    }
    // One node: lost at a random moment of the backup cycle.
    let mut rng = SimRng::new(seed ^ 0x51_6e_61);
    let mut lost: Vec<f64> = (0..LOSS_SAMPLES).map(|_| (rng.below(BACKUP_EVERY_S) * WRITE_RATE) as f64).collect();
    lost.sort_by(f64::total_cmp);
    let rto_one_s = PROVISION_S + DATA_MB / RESTORE_MB_S;
    // Three nodes: the failover world.
    let config = FailoverConfig { nodes: Some(3), policy: Some(AckPolicy::Any(1)), ..FailoverConfig::default() };
    let (mut acked, mut lost3, mut failovers) = (0u64, 0u64, 0u64);
    let mut rec: Vec<f64> = Vec::new();
    for s in 0..FAILOVER_SEEDS {
        let r = run_failover_seed(seed.wrapping_mul(1000).wrapping_add(500 + s), &config).map_err(|e| e.to_string())?;
        acked += r.acked;
        lost3 += r.acked_lost_to_rollback;
        failovers += r.failovers;
        rec.push(r.recovery_ms as f64);
    }
    rec.sort_by(f64::total_cmp);
    let rto3_s = percentile(&rec, 99.0) / 1000.0;
    let month_s = 30.0 * 24.0 * 3600.0;
    let avail = |down_s: f64| 100.0 * (1.0 - down_s / month_s);
    let mut rows: Vec<Vec<String>> = mixes
        .iter()
        .zip(&tput)
        .map(|((name, _), (one, three))| {
            vec![
                format!("throughput, {name}"),
                format!("{one:.0} ops/s"),
                format!("{three:.0} ops/s"),
                format!("{:.2}x", three / one.max(1.0)),
            ]
        })
        .collect();
    rows.push(vec![
        "recovery after losing a machine".into(),
        format!("{rto_one_s} s (provision + restore)"),
        format!("p50 {:.1} s, p99 {:.1} s (last heal to next acked write)", percentile(&rec, 50.0) / 1000.0, rto3_s),
        "-".into(),
    ]);
    rows.push(vec![
        "acknowledged writes lost with it".into(),
        format!(
            "mean {:.0}, max {:.0} (since the nightly backup)",
            lost.iter().sum::<f64>() / lost.len() as f64,
            lost[lost.len() - 1]
        ),
        format!("{lost3} of {acked} (any 1, {failovers} failovers)"),
        "-".into(),
    ]);
    rows.push(vec![
        "availability, one machine lost a month".into(),
        format!("{:.3}%", avail(rto_one_s as f64)),
        format!("{:.5}%", avail(rto3_s)),
        "-".into(),
    ]);
    let reading = format!(
        "Adding two followers multiplied read throughput by {:.2} ({:.0} to {:.0} GET/s): reads can go to any node. \
         Writes did not scale: {:.0} SET/s on one node, {:.0} on three ({:.2}x), because every write still goes \
         through the one leader, which now also ships it twice, and each follower spends CPU applying it. At 90% \
         reads the gain was {:.2}x. What the two extra machines buy is surviving the loss of one: a single node \
         lost at a random moment of its nightly backup cycle lost {:.0} acknowledged writes on average (up to {:.0}) \
         and was down {} s while a new machine was provisioned and {DATA_MB} MB restored at the measured {RESTORE_MB_S} \
         MB/s; three nodes with any 1 lost {lost3} acknowledged writes over {failovers} failovers in the failover \
         world, and served writes again {:.1} s after the last fault healed (p99). The same machines on this 2-core host measured 1.46x for reads in \
         docs/benchmarks, where the three nodes shared two cores; here each node has its own CPU.",
        tput[0].1 / tput[0].0.max(1.0),
        tput[0].0,
        tput[0].1,
        tput[2].0,
        tput[2].1,
        tput[2].1 / tput[2].0.max(1.0),
        tput[1].1 / tput[1].0.max(1.0),
        lost.iter().sum::<f64>() / lost.len() as f64,
        lost[lost.len() - 1],
        rto_one_s,
        rto3_s,
    );
    let bars = |i: usize| -> Vec<Series> {
        vec![
            Series { name: "1 node".into(), points: vec![(0.0, tput[i].0)] },
            Series { name: "3 nodes".into(), points: vec![(0.0, tput[i].1)] },
        ]
    };
    let mut series = Vec::new();
    for (i, (name, _)) in mixes.iter().enumerate() {
        for (j, s) in bars(i).into_iter().enumerate() {
            series.push(Series {
                name: format!("{} {}", if j == 0 { "1n" } else { "3n" }, name.split(' ').next().unwrap_or("")),
                ..s
            });
        }
    }
    Ok(LabReport {
        name: "single-box".into(),
        question: super::find("single-box").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            (
                "throughput model".into(),
                format!("{CLIENTS} closed-loop clients, {RTT_US} µs round trip; per node one CPU: GET {GET_US} µs, SET {SET_US} µs + {SHIP_US} µs per follower, follower apply {APPLY_US} µs (about docs/benchmarks' single node)"),
            ),
            (
                "one node".into(),
                format!("nightly backup; lost at a random moment of the day ({LOSS_SAMPLES} samples, {WRITE_RATE} writes/s); new machine in {PROVISION_S} s, restore {DATA_MB} MB at {RESTORE_MB_S} MB/s"),
            ),
            ("three nodes".into(), format!("any 1, automatic failover: {FAILOVER_SEEDS} histories of the failover world (crashes, partitions)")),
        ],
        columns: ["measure", "1 node", "3 nodes", "3 / 1"].map(String::from).to_vec(),
        rows,
        reading,
        plots: vec![Plot {
            title: "Throughput: reads scale with nodes, writes do not".into(),
            x_label: "nodes and workload".into(),
            y_label: "ops/s".into(),
            kind: Kind::Bars,
            log_x: false,
            series,
        }],
    })
}
