//! Many seeded histories, determinism, and readable scenarios.
//!
//! `TANDEM_SIM_SEED=N` runs only seed N with a verbose trace;
//! `TANDEM_SIM_SEEDS=N` runs N seeds (default 1000) starting at
//! `TANDEM_SIM_SEED_START` (default 0); `TANDEM_SIM_OPS=N` sets the client
//! operations per seed (default 200) for longer soak histories.

use std::time::Instant;

use tandem_core::repl::{AckLevel, Durability, Outcome, ReplicaState};
use tandem_sim::{env_u64, run_seed, run_seeds_parallel, Sim, SimConfig, SimReport};

const SEEDS_DEFAULT: u64 = 1000;

#[test]
fn replication_seeds() {
    let ops = env_u64("TANDEM_SIM_OPS").map_or(SimConfig::default().ops, |n| n as usize);
    if let Some(seed) = env_u64("TANDEM_SIM_SEED") {
        let config = SimConfig { verbose: true, ops, ..SimConfig::default() };
        match run_seed(seed, &config) {
            Ok(report) => println!("seed {seed} passed: {report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let count = env_u64("TANDEM_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let start = env_u64("TANDEM_SIM_SEED_START").unwrap_or(0);
    let config = SimConfig { ops, ..SimConfig::default() };
    let began = Instant::now();
    let reports = run_seeds_parallel(count, start, |seed| run_seed(seed, &config)).unwrap_or_else(|failures| {
        // Re-run the lowest failing seed keeping its last trace lines.
        let first = &failures[0];
        let detailed = run_seed(first.seed, &SimConfig { keep_trace_tail: true, ..config.clone() })
            .err()
            .unwrap_or_else(|| first.clone());
        panic!("{} seed runner(s) stopped at a failing seed; the lowest:\n{detailed}", failures.len());
    });
    let reports: Vec<&SimReport> = reports.iter().collect();
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(|r| f(r)).sum::<u64>();
    println!(
        "{} seeds passed in {:.1?}: {} events, {} writes ({} acked, {} timed out), {} WAITs, {} snapshots, {} crashes, {} partitions, {} resets",
        reports.len(),
        began.elapsed(),
        sum(|r| r.events),
        sum(|r| r.writes),
        sum(|r| r.acked),
        sum(|r| r.timed_out),
        sum(|r| r.waits),
        sum(|r| r.snapshots),
        sum(|r| r.crashes),
        sum(|r| r.partitions),
        sum(|r| r.resets),
    );
    println!(
        "data-model mix: {} transactions, {} scripts, {} error replies; {} fuzzy snapshots replayed",
        sum(|r| r.transactions),
        sum(|r| r.scripts),
        sum(|r| r.error_replies),
        sum(|r| r.fuzzy_replays),
    );
    assert_eq!(reports.len() as u64, count);
    // The faults must actually be exercised, or the seeds prove little.
    for (what, n) in [
        ("acked writes", sum(|r| r.acked)),
        ("timed out writes", sum(|r| r.timed_out)),
        ("snapshots", sum(|r| r.snapshots)),
        ("crashes", sum(|r| r.crashes)),
        ("partitions", sum(|r| r.partitions)),
        ("transactions", sum(|r| r.transactions)),
        ("scripts", sum(|r| r.scripts)),
        ("error replies (WRONGTYPE ...)", sum(|r| r.error_replies)),
        ("fuzzy snapshot replays", sum(|r| r.fuzzy_replays)),
    ] {
        assert!(n > 0 || count < 50, "no {what} in {count} seeds");
    }
}

#[test]
fn the_same_seed_gives_the_same_history() {
    let config = SimConfig::default();
    for seed in [3, 77, 12_345] {
        let a = run_seed(seed, &config).unwrap();
        let b = run_seed(seed, &config).unwrap();
        assert_eq!(a, b, "seed {seed}");
    }
    let a = run_seed(1, &config).unwrap();
    let b = run_seed(2, &config).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}

// ---------------------------------------------------------------- scenarios

fn cluster(seed: u64, followers: usize) -> Sim {
    let mut sim = Sim::new(seed, &SimConfig { followers: Some(followers), ..SimConfig::default() }, true);
    sim.run_for(100).unwrap();
    sim
}

fn durability(policy: &str, timeout_ms: u64) -> Durability {
    Durability { policy: policy.parse().unwrap(), level: AckLevel::Flush, timeout_ms }
}

fn set(sim: &mut Sim, key: &str, value: &str, d: &Durability) -> u64 {
    sim.write(&["set", key, value], d).unwrap().expect("a SET always changes the store")
}

#[test]
fn all_policy_fails_writes_while_a_follower_is_partitioned_and_recovers_after_heal() {
    let mut sim = cluster(1, 2);
    let all = durability("all", 300);

    let before = set(&mut sim, "a", "1", &all);
    sim.run_for(400).unwrap();
    assert_eq!(sim.outcome(before), Some(&Outcome::Acked));

    sim.partition(3);
    let during = set(&mut sim, "b", "2", &all);
    sim.run_for(400).unwrap();
    assert_eq!(
        sim.outcome(during),
        Some(&Outcome::TimedOut { have: 1, need: 2, durable_on_leader: true }),
        "durable on the leader and on node 2, never silently acked"
    );
    assert_eq!(sim.replica(3).state, ReplicaState::Disconnected);

    sim.heal(3);
    sim.run_for(1500).unwrap();
    let after = set(&mut sim, "c", "3", &all);
    sim.run_for(400).unwrap();
    assert_eq!(sim.outcome(after), Some(&Outcome::Acked));
    sim.converge(5000).unwrap();
    assert_eq!(sim.follower_get(3, "b").as_deref(), Some("2"), "the timed-out write still replicated");
}

#[test]
fn async_keeps_acknowledging_with_a_dead_follower() {
    let mut sim = cluster(2, 2);
    sim.crash(2);
    let tokens: Vec<u64> = (0..20).map(|i| set(&mut sim, &format!("k{i}"), "v", &durability("async", 200))).collect();
    sim.run_for(300).unwrap();
    for t in tokens {
        assert_eq!(sim.outcome(t), Some(&Outcome::Acked));
    }
    let r = sim.replica(2);
    assert_eq!((r.state, r.lsn_lag), (ReplicaState::Disconnected, sim.leader_last_lsn() - r.applied_lsn));
    assert!(r.lsn_lag >= 20 && r.time_lag_ms >= 300, "{r:?}");
    sim.restart(2);
    sim.converge(5000).unwrap();
    assert_eq!(sim.follower_get(2, "k19").as_deref(), Some("v"));
    assert_eq!(sim.replica(2).lsn_lag, 0);
}

#[test]
fn wiped_follower_receives_a_snapshot_then_the_log() {
    let mut sim = cluster(3, 2);
    for i in 0..50 {
        set(&mut sim, &format!("k{i}"), &format!("v{i}"), &durability("any 1", 500));
    }
    sim.converge(5000).unwrap();
    sim.truncate_leader_log();
    assert_eq!(sim.report().snapshots, 0);

    sim.wipe(2);
    sim.run_for(50).unwrap();
    for i in 50..60 {
        set(&mut sim, &format!("k{i}"), &format!("v{i}"), &durability("all", 2000));
    }
    sim.converge(5000).unwrap();
    assert_eq!(sim.report().snapshots, 1);
    assert_eq!(sim.follower_get(2, "k0").as_deref(), Some("v0"), "from the snapshot");
    assert_eq!(sim.follower_get(2, "k59").as_deref(), Some("v59"), "from the log after it");
}

#[test]
fn wait_reports_exact_replica_counts_while_one_follower_is_partitioned() {
    let mut sim = cluster(4, 3);
    sim.partition(4);
    set(&mut sim, "x", "1", &durability("async", 0));
    let wait_all = sim.wait(3, 300).unwrap();
    let wait_two = sim.wait(2, 0).unwrap();
    sim.run_for(400).unwrap();
    assert_eq!(sim.outcome(wait_two), Some(&Outcome::Replicas(2)));
    assert_eq!(sim.outcome(wait_all), Some(&Outcome::Replicas(2)), "released at its timeout with the exact count");
    let zero = sim.wait(0, 0).unwrap();
    assert!(matches!(sim.outcome(zero), Some(Outcome::Replicas(2))), "WAIT 0 answers at once");
}

#[test]
fn first_k_moves_to_the_next_member_when_the_first_is_down() {
    let mut sim = cluster(5, 2);
    sim.crash(2);
    sim.run_for(100).unwrap();
    let t = set(&mut sim, "y", "1", &durability("first 1 (2,3)", 500));
    sim.run_for(300).unwrap();
    assert_eq!(sim.outcome(t), Some(&Outcome::Acked), "node 3 is the first connected member");
}
