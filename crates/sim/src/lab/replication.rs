//! Scenarios about single-leader acknowledgement: `sync-vs-async` (the
//! price of waiting for a distant replica, and the loss of not waiting) and
//! `failover` (what each ack policy loses across crashes and partitions).

use tandem_core::repl::{AckLevel, AckPolicy, Durability, Outcome};

use super::plot::{self, percentile, Kind, Plot, Series};
use super::LabReport;
use crate::failover::{run_failover_seed, FailoverConfig};
use crate::rng::Latency;
use crate::{Sim, SimConfig};

/// One-way latency between the two regions: 100 ms (200 ms round trip,
/// e.g. US east to EU west), 2 ms mean jitter, a rare 20 ms tail.
pub const REGION_LINK: Latency = Latency { base_us: 100_000, jitter_us: 2_000, tail_chance: 0.01, tail_us: 20_000 };
/// A disk's fsync: this machine's virtio disk, `append + fdatasync` p50
/// ~0.2 ms, p99 ~0.4 ms, rare multi-ms stalls (docs/benchmarks).
pub const DISK_FSYNC: Latency = Latency { base_us: 150, jitter_us: 60, tail_chance: 0.01, tail_us: 5_000 };
/// Writes per policy in `sync-vs-async`.
const WRITES: u64 = 2_000;
/// Virtual time between two writes (200 writes/s, one client at a time
/// would be slower under `all`: these are independent clients).
const WRITE_GAP_MS: u64 = 5;
/// How often (in writes) the "leader dies now" loss is evaluated.
const CRASH_PROBE_EVERY: u64 = 10;

/// The ack policies both scenarios compare, with their names.
fn policies() -> [(&'static str, AckPolicy); 3] {
    [("async", AckPolicy::Async), ("any 1", AckPolicy::Any(1)), ("all", AckPolicy::All)]
}

/// `sync-vs-async`.
pub fn sync_vs_async(seed: u64) -> Result<LabReport, String> {
    let mut rows = Vec::new();
    let mut cdfs = Vec::new();
    let mut loss_series = Vec::new();
    let mut summary = Vec::new();
    for (name, policy) in policies() {
        let config = SimConfig { followers: Some(2), faults: false, ..SimConfig::default() };
        let mut sim = Sim::new_lab(seed, &config);
        sim.set_profile(REGION_LINK, DISK_FSYNC);
        sim.run_for(1_000)?;
        let durability = Durability { policy: policy.clone(), level: AckLevel::Flush, timeout_ms: 5_000 };
        let mut issued: Vec<(u64, u64, u64)> = Vec::new(); // (token, issued µs, lsn)
        let mut lost_probes: Vec<f64> = Vec::new();
        for i in 0..WRITES {
            let at = sim.elapsed_us();
            let key = format!("photo:{}", i % 500);
            if let Some(token) = sim.write(&["SET", &key, &i.to_string()], &durability)? {
                issued.push((token, at, sim.leader_last_lsn()));
            }
            sim.run_for(WRITE_GAP_MS)?;
            if i % CRASH_PROBE_EVERY == CRASH_PROBE_EVERY - 1 {
                // If the leader died now, the best a failover can keep is
                // the most up-to-date follower's disk.
                let kept = (2..=3).map(|id| sim.follower_synced_lsn(id)).max().unwrap_or(0);
                let lost = issued
                    .iter()
                    .filter(|(t, _, lsn)| *lsn > kept && matches!(sim.outcome(*t), Some(Outcome::Acked)))
                    .count();
                lost_probes.push(lost as f64);
            }
        }
        sim.run_for(6_000)?;
        let mut latencies: Vec<f64> = issued
            .iter()
            .filter(|(t, _, _)| matches!(sim.outcome(*t), Some(Outcome::Acked)))
            .filter_map(|(t, at, _)| sim.released_at_us(*t).map(|r| (r - at) as f64 / 1000.0))
            .collect();
        latencies.sort_by(f64::total_cmp);
        let acked = latencies.len();
        let mean_lost = lost_probes.iter().sum::<f64>() / lost_probes.len().max(1) as f64;
        let max_lost = lost_probes.iter().copied().fold(0.0, f64::max);
        rows.push(vec![
            name.to_string(),
            format!("{acked}/{}", issued.len()),
            format!("{:.2}", percentile(&latencies, 50.0)),
            format!("{:.2}", percentile(&latencies, 99.0)),
            format!("{mean_lost:.1}"),
            format!("{max_lost:.0}"),
        ]);
        summary.push((name, percentile(&latencies, 50.0), mean_lost, max_lost));
        cdfs.push(Series { name: name.to_string(), points: plot::cdf(&latencies, 200) });
        loss_series.push(Series { name: name.to_string(), points: vec![(0.0, mean_lost)] });
    }
    let (async_p50, async_lost, async_max) = (summary[0].1, summary[0].2, summary[0].3);
    let any_p50 = summary[1].1;
    let reading = format!(
        "Waiting for a replica in the other region puts a round trip on every write: the median acknowledgement \
         goes from {async_p50:.2} ms (async: the leader's own fsync) to {any_p50:.1} ms (any 1), and `all` waits \
         for the slower of the two replicas. Not waiting has its price when the leader dies: with async, a crash at \
         a random moment loses {async_lost:.1} acknowledged writes on average (up to {async_max:.0}), the writes of \
         the last round trip that no follower had yet; under any 1 and all a crash loses none, because every \
         acknowledged write is already on a follower's disk. The lost async writes are not silent in Tandem: the \
         old leader writes them to a rollback file when it returns (see the failover scenario)."
    );
    Ok(LabReport {
        name: "sync-vs-async".into(),
        question: super::find("sync-vs-async").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), "a leader and 2 followers, each follower in another region".into()),
            ("link".into(), "100 ms one-way (200 ms round trip), 2 ms jitter, 1% of messages +0..20 ms".into()),
            ("disk".into(), "fsync ~0.2 ms p50, 1% stalls up to 5 ms (this machine's fdatasync)".into()),
            ("load".into(), format!("{WRITES} SETs per policy, one every {WRITE_GAP_MS} ms, ack level flush")),
            (
                "loss probe".into(),
                format!("every {CRASH_PROBE_EVERY} writes: acknowledged writes on no follower's disk"),
            ),
        ],
        columns: ["policy", "acked", "p50 ms", "p99 ms", "lost if leader dies (mean)", "(max)"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        plots: vec![
            Plot {
                title: "Write acknowledgement latency (CDF)".into(),
                x_label: "latency, ms (log scale)".into(),
                y_label: "fraction of writes".into(),
                kind: Kind::Lines,
                log_x: true,
                series: cdfs,
            },
            Plot {
                title: "Acknowledged writes lost if the leader dies at a random moment (mean)".into(),
                x_label: "ack policy".into(),
                y_label: "writes".into(),
                kind: Kind::Bars,
                log_x: false,
                series: loss_series,
            },
        ],
    })
}

/// Seeds per policy in `failover`.
const FAILOVER_SEEDS: u64 = 60;

/// `failover`.
pub fn failover(seed: u64) -> Result<LabReport, String> {
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    let mut recovery = Vec::new();
    let mut totals = Vec::new();
    for (name, policy) in policies() {
        let config = FailoverConfig { nodes: Some(3), policy: Some(policy), ..FailoverConfig::default() };
        let (mut acked, mut failovers, mut crashes, mut lost, mut rolled_back) = (0, 0, 0, 0, 0);
        let mut rec: Vec<f64> = Vec::new();
        for s in 0..FAILOVER_SEEDS {
            let r = run_failover_seed(seed.wrapping_mul(1000).wrapping_add(s), &config).map_err(|e| e.to_string())?;
            acked += r.acked;
            failovers += r.failovers;
            crashes += r.leader_crashes;
            lost += r.acked_lost_to_rollback;
            rolled_back += r.rolled_back;
            rec.push(r.recovery_ms as f64);
        }
        rec.sort_by(f64::total_cmp);
        rows.push(vec![
            name.to_string(),
            acked.to_string(),
            crashes.to_string(),
            failovers.to_string(),
            lost.to_string(),
            rolled_back.to_string(),
            format!("{:.0}", percentile(&rec, 50.0)),
            format!("{:.0}", percentile(&rec, 99.0)),
        ]);
        totals.push((name, acked, lost, failovers));
        bars.push(Series { name: name.to_string(), points: vec![(0.0, lost as f64)] });
        recovery.push(Series { name: name.to_string(), points: plot::cdf(&rec, 100) });
    }
    let reading = format!(
        "Over {FAILOVER_SEEDS} simulated histories per policy (3 nodes; leader crashes, partitions, message loss, \
         clock drift), async acknowledged {} writes and lost {} of them in {} failovers: each lost write was \
         acknowledged by a leader that died or was cut off before any follower had it, and every one is in a \
         rollback record (the simulator's checker fails the run otherwise). any 1 lost {} and all lost {}: the \
         promotion rule only chooses a node that holds every acknowledged write. Recovery (from the last heal to \
         the next acknowledged write) is bounded by the lease and the failover timeout, the same for every policy.",
        totals[0].1, totals[0].2, totals[0].3, totals[1].2, totals[2].2
    );
    Ok(LabReport {
        name: "failover".into(),
        question: super::find("failover").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), "3 nodes, automatic failover with leases and fencing".into()),
            ("faults".into(), "random leader and follower crashes, partitions, message loss, clock drift".into()),
            ("histories".into(), format!("{FAILOVER_SEEDS} seeds per policy, derived from the lab seed")),
        ],
        columns: [
            "policy",
            "acked",
            "leader crashes",
            "failovers",
            "acked lost",
            "rolled back",
            "recovery p50 ms",
            "p99 ms",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        reading,
        plots: vec![
            Plot {
                title: "Acknowledged writes lost (all in rollback records)".into(),
                x_label: "ack policy".into(),
                y_label: "writes".into(),
                kind: Kind::Bars,
                log_x: false,
                series: bars,
            },
            Plot {
                title: "Recovery time after the last heal (CDF over histories)".into(),
                x_label: "ms".into(),
                y_label: "fraction of histories".into(),
                kind: Kind::Lines,
                log_x: false,
                series: recovery,
            },
        ],
    })
}
