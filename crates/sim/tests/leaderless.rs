//! Leaderless quorums in the simulator, across seeds (see
//! `tandem_sim::leaderless` for the checkers). `TANDEM_SIM_SEEDS=N` runs N
//! seeds per scenario (default 1000); `TANDEM_SIM_SEED=N` runs seed N of
//! each scenario with a trace.

use tandem_sim::env_u64;
use tandem_sim::leaderless::{run_leaderless_seed, LeaderlessConfig, LeaderlessReport};
use tandem_sim::run_seeds_parallel;

const SEEDS_DEFAULT: u64 = 1000;

fn run(cfg: LeaderlessConfig) -> Vec<LeaderlessReport> {
    if let Some(seed) = env_u64("TANDEM_SIM_SEED") {
        let cfg = LeaderlessConfig { verbose: true, ..cfg };
        let r = run_leaderless_seed(seed, &cfg).unwrap_or_else(|f| panic!("{f:?}"));
        println!("{r}");
        return vec![r];
    }
    let count = env_u64("TANDEM_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
    let start = env_u64("TANDEM_SIM_SEED_START").unwrap_or(0);
    run_seeds_parallel(count, start, |seed| run_leaderless_seed(seed, &cfg)).unwrap_or_else(|failures| {
        let f = &failures[0];
        panic!(
            "seed {} failed at {} ms: {}\nlast trace lines:\n{}\nreplay: TANDEM_SIM_SEED={} cargo test -p tandem-sim {}",
            f.seed,
            f.at_ms,
            f.message,
            f.trace_tail.join("\n"),
            f.seed,
            f.repro
        )
    })
}

fn sum(reports: &[LeaderlessReport], f: impl Fn(&LeaderlessReport) -> u64) -> u64 {
    reports.iter().map(f).sum()
}

#[test]
fn overlapping_quorums_read_the_latest_acknowledged_write_and_replicas_converge() {
    // N=3 W=2 R=2 on five nodes, at most N - max(W, R) = 1 down at a time.
    let reports = run(LeaderlessConfig::default());
    let reads = sum(&reports, |r| r.reads);
    assert!(reads > 0 && sum(&reports, |r| r.writes_acked) > 0);
    assert_eq!(sum(&reports, |r| r.stale_reads), 0);
    assert!(sum(&reports, |r| r.read_repairs) > 0, "no read repair ever happened");
    println!("W+R>N: {reads} reads, 0 stale; {} keys repaired by anti-entropy", sum(&reports, |r| r.ae_keys));
}

#[test]
fn non_overlapping_quorums_read_stale_values_and_the_rate_is_measured() {
    let cfg = LeaderlessConfig { w: 1, r: 1, down_max: 2, ..LeaderlessConfig::default() };
    let reports = run(cfg);
    let (reads, stale) = (sum(&reports, |r| r.reads), sum(&reports, |r| r.stale_reads));
    assert!(stale > 0, "W+R<=N never read a stale value in {reads} reads");
    println!("W+R<=N (N=3 W=1 R=1): {stale} stale of {reads} reads = {:.2}%", 100.0 * stale as f64 / reads as f64);
}

#[test]
fn sloppy_quorum_hands_hinted_writes_to_their_owner_after_heal() {
    let cfg = LeaderlessConfig { sloppy: true, w: 3, r: 1, ..LeaderlessConfig::default() };
    let reports = run(cfg);
    assert!(sum(&reports, |r| r.hints) > 0, "no hint was ever stored");
    let (reads, stale) = (sum(&reports, |r| r.reads), sum(&reports, |r| r.stale_reads));
    println!(
        "sloppy N=3 W=3 R=1: {} hints, all handed to their owners; {stale} stale of {reads} reads before handoff",
        sum(&reports, |r| r.hints)
    );
}

#[test]
fn partitions_and_ttls_keep_overlapping_quorums_fresh_and_replicas_converge_with_the_same_expiry() {
    // N=3 W=2 R=2 on five nodes; the network splits in two random sides
    // from time to time (messages across the cut are lost) besides one
    // crash at a time; 40 % of the values carry an absolute expiry time.
    let cfg = LeaderlessConfig { partitions: true, ttl: true, ..LeaderlessConfig::default() };
    let reports = run(cfg);
    let (reads, stale) = (sum(&reports, |r| r.reads), sum(&reports, |r| r.stale_reads));
    assert_eq!(stale, 0);
    assert!(sum(&reports, |r| r.partitions) > 0 && sum(&reports, |r| r.cut_messages) > 0, "no partition cut a message");
    assert!(sum(&reports, |r| r.expired) > 0, "no acknowledged TTL write expired during a run");
    println!(
        "partitions + TTL N=3 W=2 R=2: {} partitions cut {} messages; {reads} reads, 0 stale; {} writes failed; {} TTL writes, {} expired",
        sum(&reports, |r| r.partitions),
        sum(&reports, |r| r.cut_messages),
        sum(&reports, |r| r.writes_failed),
        sum(&reports, |r| r.ttl_writes),
        sum(&reports, |r| r.expired)
    );
}

#[test]
fn sloppy_quorum_under_partitions_still_hands_every_hint_to_its_owner() {
    let cfg = LeaderlessConfig { sloppy: true, partitions: true, ttl: true, w: 3, r: 1, ..LeaderlessConfig::default() };
    let reports = run(cfg);
    assert!(sum(&reports, |r| r.hints) > 0, "no hint was ever stored");
    assert!(sum(&reports, |r| r.cut_messages) > 0, "no partition cut a message");
    println!(
        "sloppy + partitions N=3 W=3 R=1: {} hints handed over, {} messages cut",
        sum(&reports, |r| r.hints),
        sum(&reports, |r| r.cut_messages)
    );
}

#[test]
fn membership_change_during_writes_leaves_every_new_owner_with_the_latest_acknowledged_write() {
    // N=3 W=2 R=2 on five nodes; a sixth joins during the writes, each node
    // adopting the new ring on its own time, with crashes and partitions.
    // After quiescence the N owners of every key under the new ring hold its
    // latest acknowledged version and no other node holds the key.
    let cfg = LeaderlessConfig { join: true, partitions: true, ..LeaderlessConfig::default() };
    let reports = run(cfg);
    let moved = sum(&reports, |r| r.rebalance_keys);
    assert!(moved > 0, "rebalancing never moved a key");
    assert!(sum(&reports, |r| r.rebalance_forgotten) > 0, "no node ever forgot a key it left");
    let (during, stale) = (sum(&reports, |r| r.reads_during_join), sum(&reports, |r| r.stale_reads));
    println!(
        "join N=3 W=2 R=2: {moved} keys moved, {} forgotten; {stale} stale of {during} reads while the ring changed",
        sum(&reports, |r| r.rebalance_forgotten)
    );
}

#[test]
fn membership_change_with_one_replica_per_key_moves_every_key_by_rebalancing_alone() {
    // N=1: no two nodes share a key, so anti-entropy cannot help: only the
    // streamed transfers bring a key to its new owner, and a node may forget
    // a key only once the new owner acknowledged it.
    let cfg = LeaderlessConfig { join: true, members: 3, n: 1, w: 1, r: 1, keys: 12, ..LeaderlessConfig::default() };
    let reports = run(cfg);
    assert!(sum(&reports, |r| r.rebalance_keys) > 0, "rebalancing never moved a key");
    assert!(sum(&reports, |r| r.rebalance_forgotten) > 0, "no node ever forgot a key it left");
    println!(
        "join N=1: {} keys moved, {} forgotten",
        sum(&reports, |r| r.rebalance_keys),
        sum(&reports, |r| r.rebalance_forgotten)
    );
}
