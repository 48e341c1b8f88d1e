//! Session guarantees in the simulator, across seeds: the anomalies happen
//! without a guarantee and never with one (see `tandem_sim::sessions`).
//!
//! Every seed runs clients of all five modes against one cluster; the seeds
//! run once per test binary and each test judges its mode.
//! `TANDEM_SIM_SEED=N` runs only seed N with every routing decision printed;
//! `TANDEM_SIM_SEEDS=N` runs N seeds (default 500) from
//! `TANDEM_SIM_SEED_START` (default 0).

use std::sync::OnceLock;
use std::time::Instant;

use tandem_sim::env_u64;
use tandem_sim::sessions::{run_sessions_seed, Mode, ModeCounts, SessionsConfig, SessionsReport};

#[derive(Clone, Copy)]
enum Anomaly {
    Miss,
    TimeTravel,
}

const SEEDS_DEFAULT: u64 = 500;

/// Every seed's report, computed once for all the tests of this binary.
fn reports() -> &'static [SessionsReport] {
    static REPORTS: OnceLock<Vec<SessionsReport>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        if let Some(seed) = env_u64("TANDEM_SIM_SEED") {
            let config = SessionsConfig { verbose: true, ..SessionsConfig::default() };
            let report = run_sessions_seed(seed, &config).unwrap_or_else(|f| panic!("{f}"));
            println!("{report}");
            return vec![report];
        }
        let count = env_u64("TANDEM_SIM_SEEDS").unwrap_or(SEEDS_DEFAULT);
        let start = env_u64("TANDEM_SIM_SEED_START").unwrap_or(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) as u64;
        let config = SessionsConfig::default();
        let began = Instant::now();
        let mut reports: Vec<SessionsReport> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let config = &config;
                    scope.spawn(move || {
                        let mut reports = Vec::new();
                        let mut seed = start + t;
                        while seed < start + count {
                            reports.push(run_sessions_seed(seed, config).unwrap_or_else(|f| {
                                panic!("{f}\n(session workload: TANDEM_SIM_SEED={seed} cargo test -p tandem-sim --test sessions -- --nocapture)")
                            }));
                            seed += threads;
                        }
                        reports
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("seed runner panicked")).collect()
        });
        reports.sort_by_key(|r| r.seed);
        println!("{} session seeds in {:.1?}", reports.len(), began.elapsed());
        reports
    })
}

fn single_seed() -> bool {
    env_u64("TANDEM_SIM_SEED").is_some()
}

/// Sums `field` of `mode` over every seed.
fn total(mode: Mode, field: fn(&ModeCounts) -> u64) -> u64 {
    reports().iter().map(|r| field(r.mode(mode))).sum()
}

fn summary(mode: Mode) -> String {
    let t = |f: fn(&ModeCounts) -> u64| total(mode, f);
    format!(
        "{} over {} seeds: {} own reads, {} counter reads, {} from followers, {} from the leader, {} waits ({} fell back), {} misses, {} time travel",
        mode.name(),
        reports().len(),
        t(|c| c.own_reads),
        t(|c| c.counter_reads),
        t(|c| c.follower_reads),
        t(|c| c.leader_reads),
        t(|c| c.waits),
        t(|c| c.wait_fallbacks),
        t(|c| c.misses),
        t(|c| c.time_travel),
    )
}

/// Fails with the lowest seed where `mode` saw an anomaly counted by
/// `field`, its first anomaly and the one-line command that replays it.
fn assert_never(mode: Mode, anomaly: Anomaly, test: &str) {
    let (what, field): (&str, fn(&ModeCounts) -> u64) = match anomaly {
        Anomaly::Miss => ("reads missed their own write", |c| c.misses),
        Anomaly::TimeTravel => ("reads went back in time", |c| c.time_travel),
    };
    println!("{}", summary(mode));
    if let Some(r) = reports().iter().find(|r| field(r.mode(mode)) > 0) {
        let c = r.mode(mode);
        let first = match anomaly {
            Anomaly::Miss => &c.first_miss,
            Anomaly::TimeTravel => &c.first_time_travel,
        };
        panic!(
            "{} {what} with {} on seed {} (first: {}); {r}\nreproduce with: TANDEM_SIM_SEED={} cargo test -p tandem-sim --test sessions -- --exact {test} --nocapture",
            total(mode, field),
            mode.name(),
            r.seed,
            first.as_deref().unwrap_or("?"),
            r.seed,
        );
    }
}

#[test]
fn without_guarantees_the_anomalies_happen() {
    println!("{}", summary(Mode::Off));
    if single_seed() {
        return;
    }
    assert!(total(Mode::Off, |c| c.misses) > 0, "no read missed its own write without a guarantee");
    assert!(total(Mode::Off, |c| c.time_travel) > 0, "no read went back in time without a guarantee");
    assert!(total(Mode::Off, |c| c.follower_reads) > total(Mode::Off, |c| c.leader_reads));
}

#[test]
fn token_read_your_writes_never_misses_across_seeds() {
    assert_never(Mode::Token, Anomaly::Miss, "token_read_your_writes_never_misses_across_seeds");
    if !single_seed() {
        // The token must be doing work: followers serve, waits happen, some fall back.
        assert!(total(Mode::Token, |c| c.follower_reads) > 0);
        assert!(total(Mode::Token, |c| c.waits) > total(Mode::Token, |c| c.wait_fallbacks));
        assert!(total(Mode::Token, |c| c.wait_fallbacks) > 0);
    }
}

#[test]
fn leader_window_never_misses_across_seeds() {
    assert_never(Mode::LeaderWindow, Anomaly::Miss, "leader_window_never_misses_across_seeds");
    if !single_seed() {
        assert!(total(Mode::LeaderWindow, |c| c.follower_reads) > 0);
        assert!(total(Mode::LeaderWindow, |c| c.leader_reads) > 0);
    }
}

#[test]
fn monotonic_reads_never_go_back_in_time_across_seeds() {
    assert_never(Mode::Monotonic, Anomaly::TimeTravel, "monotonic_reads_never_go_back_in_time_across_seeds");
    if !single_seed() {
        assert!(total(Mode::Monotonic, |c| c.follower_reads) > 0);
    }
}

#[test]
fn strong_never_misses_nor_goes_back_across_seeds() {
    let test = "strong_never_misses_nor_goes_back_across_seeds";
    assert_never(Mode::Strong, Anomaly::Miss, test);
    assert_never(Mode::Strong, Anomaly::TimeTravel, test);
    assert_eq!(total(Mode::Strong, |c| c.follower_reads), 0);
}

#[test]
fn the_same_seed_gives_the_same_session_history() {
    let config = SessionsConfig::default();
    for seed in [5, 91, 4_242] {
        let a = run_sessions_seed(seed, &config).unwrap();
        let b = run_sessions_seed(seed, &config).unwrap();
        assert_eq!(a, b, "seed {seed}");
    }
    let a = run_sessions_seed(1, &config).unwrap();
    let b = run_sessions_seed(2, &config).unwrap();
    assert_ne!(a.trace_hash, b.trace_hash);
}

/// Exploration, not asserted: follower crashes lose what was applied but not
/// synced, so a stale topology snapshot may overstate a follower's applied
/// LSN; prints what each mode saw (`TANDEM_SIM_SEED=N`: one seed, verbose).
#[test]
#[ignore = "exploration with follower crashes; run with --ignored"]
fn with_follower_crashes_stale_topology_explored() {
    let config = SessionsConfig { crash_chance: 0.02, ..SessionsConfig::default() };
    if let Some(seed) = env_u64("TANDEM_SIM_SEED") {
        println!("{}", run_sessions_seed(seed, &SessionsConfig { verbose: true, ..config }).unwrap());
        return;
    }
    let reports: Vec<SessionsReport> =
        (0..env_u64("TANDEM_SIM_SEEDS").unwrap_or(300)).map(|s| run_sessions_seed(s, &config).unwrap()).collect();
    for mode in Mode::ALL {
        let misses: u64 = reports.iter().map(|r| r.mode(mode).misses).sum();
        let back: u64 = reports.iter().map(|r| r.mode(mode).time_travel).sum();
        let first_miss = reports.iter().find_map(|r| Some((r.seed, r.mode(mode).first_miss.clone()?)));
        let first_back = reports.iter().find_map(|r| Some((r.seed, r.mode(mode).first_time_travel.clone()?)));
        println!("{}: {misses} misses, {back} time travel\n  {first_miss:?}\n  {first_back:?}", mode.name());
    }
}
