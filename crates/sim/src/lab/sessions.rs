//! `stale-read`: the profile-photo reload under each session guarantee.

use tandem_core::repl::{AckLevel, AckPolicy, Durability};

use super::plot::{Kind, Plot, Series};
use super::replication::DISK_FSYNC;
use super::LabReport;
use crate::rng::{Latency, SimRng};
use crate::sessions::{run_sessions_seed, Mode, SessionsConfig};
use crate::{Sim, SimConfig};

/// Virtual ms of the lag-over-time run.
const LAG_RUN_MS: u64 = 10_000;
/// The lag is sampled this often (ms).
const LAG_SAMPLE_MS: u64 = 50;

/// Each follower's lag as the leader reports it (`time_lag_ms`, what
/// `/status` and the dashboard show), over time, on the single-leader world
/// with the same apply delays and a steady write load.
fn lag_over_time(seed: u64, delays_ms: &[u64]) -> Result<Vec<Series>, String> {
    let config = SimConfig { followers: Some(delays_ms.len()), faults: false, ..SimConfig::default() };
    let mut sim = Sim::new_lab(seed, &config);
    let lan = Latency { base_us: 500, jitter_us: 300, tail_chance: 0.01, tail_us: 5_000 };
    sim.set_profile(lan, DISK_FSYNC);
    for (i, d) in delays_ms.iter().enumerate() {
        sim.set_apply_delay(i as u64 + 2, *d);
    }
    let durability = Durability { policy: AckPolicy::Async, level: AckLevel::Flush, timeout_ms: 5_000 };
    let mut rng = SimRng::new(seed ^ 0x1a6);
    let mut series: Vec<Series> = delays_ms
        .iter()
        .enumerate()
        .map(|(i, d)| Series { name: format!("follower {} (applies {d} ms late)", i + 2), points: Vec::new() })
        .collect();
    let start = sim.elapsed_ms();
    let mut next_sample = start;
    let mut i = 0u64;
    while sim.elapsed_ms() < start + LAG_RUN_MS {
        i += 1;
        sim.write(&["SET", &format!("photo:{}", i % 200), &i.to_string()], &durability)?;
        // A write every ~10 ms, with a busier stretch in the middle.
        let busy = (4_000..6_000).contains(&(sim.elapsed_ms() - start));
        let gap = 1 + rng.exp(if busy { 2 } else { 10 });
        sim.run_for(gap)?;
        while sim.elapsed_ms() >= next_sample {
            let t = (next_sample - start) as f64 / 1000.0;
            for (j, s) in series.iter_mut().enumerate() {
                s.points.push((t, sim.replica(j as u64 + 2).time_lag_ms as f64));
            }
            next_sample += LAG_SAMPLE_MS;
        }
    }
    Ok(series)
}

/// Seeds (independent histories) the scenario adds up.
const SEEDS: u64 = 20;

/// `stale-read`.
pub fn stale_read(seed: u64) -> Result<LabReport, String> {
    let config = SessionsConfig {
        followers: Some(2),
        clients_per_mode: 4,
        ops: 300,
        apply_delays_ms: vec![5, 120],
        ..SessionsConfig::default()
    };
    let mut totals = vec![(0u64, 0u64, 0u64, 0u64, 0u64); Mode::ALL.len()];
    for s in 0..SEEDS {
        let r = run_sessions_seed(seed.wrapping_mul(1000).wrapping_add(s), &config).map_err(|e| e.to_string())?;
        for (i, m) in Mode::ALL.iter().enumerate() {
            let c = r.mode(*m);
            let t = &mut totals[i];
            t.0 += c.own_reads;
            t.1 += c.misses;
            t.2 += c.time_travel;
            t.3 += c.follower_reads;
            t.4 += c.leader_reads;
        }
    }
    let lag = lag_over_time(seed, &config.apply_delays_ms)?;
    let lag_mean: Vec<f64> =
        lag.iter().map(|s| s.points.iter().map(|p| p.1).sum::<f64>() / s.points.len().max(1) as f64).collect();
    let lag_max: Vec<f64> = lag.iter().map(|s| s.points.iter().map(|p| p.1).fold(0.0, f64::max)).collect();
    let mut rows = Vec::new();
    let mut bars = Vec::new();
    for (m, (reads, misses, travel, follower, leader)) in Mode::ALL.iter().zip(&totals) {
        let rate = 100.0 * *misses as f64 / (*reads).max(1) as f64;
        let share = 100.0 * *follower as f64 / (*follower + *leader).max(1) as f64;
        rows.push(vec![
            m.name().to_string(),
            reads.to_string(),
            misses.to_string(),
            format!("{rate:.1}%"),
            travel.to_string(),
            format!("{share:.0}%"),
        ]);
        bars.push(Series { name: m.name().to_string(), points: vec![(0.0, rate)] });
    }
    let rate = |i: usize| 100.0 * totals[i].1 as f64 / totals[i].0.max(1) as f64;
    let share = |i: usize| 100.0 * totals[i].3 as f64 / (totals[i].3 + totals[i].4).max(1) as f64;
    let travel = |i: usize| totals[i].2;
    let reading = format!(
        "With reads spread over two followers, one of them 120 ms behind, {:.1}% of the reads of one's own last \
         write showed the old value (the old photo) when no guarantee was asked for. A session token \
         (read-your-writes: the reading replica waits until it holds the client's last write, else the leader \
         answers) measured {:.1}% with {:.0}% of reads still on followers; the leader window (the leader answers \
         for a while after a write) {:.1}%, with only {:.0}% of reads on followers. Read-your-writes is not \
         monotonic reads: counter reads went back in time {} times under the token and {} times without a \
         guarantee, {} times with monotonic reads, which pin a client to replicas at least as fresh as what it \
         last read. Leader-only (strong) reads are never stale and never use a follower. The lag behind these \
         numbers, as the leader reports it (plot): follower 2 {:.0} ms on average (at most {:.0}), follower 3 {:.0} \
         ms (at most {:.0}).",
        rate(0),
        rate(1),
        share(1),
        rate(2),
        share(2),
        travel(1),
        travel(0),
        travel(3),
        lag_mean[0],
        lag_max[0],
        lag_mean[1],
        lag_max[1],
    );
    Ok(LabReport {
        name: "stale-read".into(),
        question: super::find("stale-read").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), "a leader and 2 followers; follower 2 applies 5 ms late, follower 3 120 ms late".into()),
            (
                "clients".into(),
                format!("{} per guarantee, each writing its own key then reading it back", config.clients_per_mode),
            ),
            ("histories".into(), format!("{SEEDS} seeds of {} operations per client", config.ops)),
            (
                "guarantees".into(),
                format!("token waits up to {} ms; leader window {} ms", config.token_wait_ms, config.leader_window_ms),
            ),
        ],
        columns: ["guarantee", "own reads", "stale", "stale rate", "time travel", "follower share"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        plots: vec![
            Plot {
                title: "Reads that missed the client's own last write".into(),
                x_label: "session guarantee".into(),
                y_label: "percent of own reads".into(),
                kind: Kind::Bars,
                log_x: false,
                series: bars,
            },
            Plot {
                title: "Follower lag over time, as the leader reports it".into(),
                x_label: "seconds".into(),
                y_label: "time lag, ms".into(),
                kind: Kind::Lines,
                log_x: false,
                series: lag,
            },
        ],
    })
}
