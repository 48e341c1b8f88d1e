//! `stale-read`: the profile-photo reload under each session guarantee.

use super::plot::{Kind, Plot, Series};
use super::LabReport;
use crate::sessions::{run_sessions_seed, Mode, SessionsConfig};

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
         last read. Leader-only (strong) reads are never stale and never use a follower.",
        rate(0),
        rate(1),
        share(1),
        rate(2),
        share(2),
        travel(1),
        travel(0),
        travel(3)
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
        plots: vec![Plot {
            title: "Reads that missed the client's own last write".into(),
            x_label: "session guarantee".into(),
            y_label: "percent of own reads".into(),
            kind: Kind::Bars,
            log_x: false,
            series: bars,
        }],
    })
}
