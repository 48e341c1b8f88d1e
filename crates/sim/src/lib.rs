//! # tandem-sim: deterministic simulation of Tandem's replication
//!
//! One `u64` seed and a virtual clock drive a leader and N followers built
//! from the real sans-IO cores (`tandem_core::repl`), the real command
//! execution and the real store, over a seeded network (per-link latency
//! distributions, message loss as connection resets, partitions that heal,
//! resets) and simulated disks (fsync latency, crashes that drop unsynced
//! writes). Checkers judge every step; a failing seed reproduces exactly.
//!
//! # Layout
//! - [`rng`]: the seeded generator and latency distributions.
//! - [`disk`]: a node's simulated log and synced watermark.
//! - [`schedule`]: the timeline every world runs on (virtual clock, event
//!   queue, trace hash, trace lines).
//! - [`mix`]: the data-model workload (every write command group,
//!   transactions, Lua scripts) the replication world's clients draw.
//! - [`world`]: the cluster, the event loop, faults, clients and checkers.
//! - [`failover`]: a separate world for leader failover: every node can lead,
//!   a control-plane register, leases under clock drift, fencing, rollback
//!   records; its own checkers (see the module doc).
//! - [`multi_leader`]: a world of multi-leader replicas (concurrent writes
//!   everywhere, partitions, resets, crashes, skew) and its convergence
//!   and conflict checkers.
//! - [`lab`]: `tandem lab`'s scenarios, measured on these worlds with
//!   fixed region latencies, rendered as text, JSON and HTML with SVG plots.
//! - [`sessions`]: clients routing reads with the real `tandem_core::session`
//!   over a stale topology, counting read-your-writes misses and time travel.
//!
//! # Checkers (run on every history)
//! 1. every follower's log is always a prefix of the leader's;
//! 2. a follower's state after applying LSN x equals the leader's at x;
//! 3. no ack is released before the durability its policy promises holds in
//!    ground truth (leader synced; required followers synced / applied), and
//!    a timed-out write reports exactly the counts the leader knew;
//! 4. `WAIT` counts are exact at release (and never above the truth);
//! 5. reported replica progress and lag (`lsn_lag`, `time_lag_ms`) match
//!    the model and never claim more than the followers' disks hold;
//! 6. after faults stop, every follower converges to the leader's last LSN
//!    and state; nothing met or overdue stays unreleased at any step;
//! 7. a fuzzy snapshot of the leader (buckets captured at increasing LSNs)
//!    plus a replay of the log from where the capture started equals the
//!    leader's final state.
//!
//! This crate must never read a real clock, a real RNG or iterate a hash
//! map: a seed is the whole input.

pub mod disk;
pub mod failover;
pub mod lab;
pub mod leader_reads;
pub mod leaderless;
pub mod mix;
pub mod multi_leader;
pub mod rng;
pub mod schedule;
pub mod sessions;
pub mod world;

use std::fmt;

pub use world::Sim;

/// What one run looks like.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Followers per cluster; `None`: drawn from the seed (1 to 3).
    pub followers: Option<usize>,
    /// Client operations (writes, `WAIT`s, expiry sweeps) per run.
    pub ops: usize,
    /// Mean virtual time between client operations.
    pub op_gap_us: u64,
    /// Inject faults (crashes, partitions, resets, loss, log truncation).
    pub faults: bool,
    /// Virtual time allowed for convergence once faults stop.
    pub drain_ms_max: u64,
    /// Print every step (for a single seed).
    pub verbose: bool,
    /// Keep the last trace lines for the failure report (slower).
    pub keep_trace_tail: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            followers: None,
            ops: 200,
            op_gap_us: 5_000,
            faults: true,
            drain_ms_max: 30_000,
            verbose: false,
            keep_trace_tail: false,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Followers in the cluster.
    pub followers: usize,
    /// Events processed.
    pub events: u64,
    /// Peer messages put on the wire.
    pub messages: u64,
    /// Writes that changed something (each waited on).
    pub writes: u64,
    /// Writes that changed nothing.
    pub noop_writes: u64,
    /// Writes acknowledged.
    pub acked: u64,
    /// Transactions (`MULTI`/`EXEC`) that changed something: one entry each.
    pub transactions: u64,
    /// Lua scripts run (their effects, if any, are one entry each).
    pub scripts: u64,
    /// Commands (alone, in a transaction or a script) answered an error,
    /// `WRONGTYPE` included.
    pub error_replies: u64,
    /// Fuzzy snapshots (buckets captured at different LSNs) rebuilt and
    /// replayed at the end of the run (checker 7).
    pub fuzzy_replays: u64,
    /// Writes that timed out.
    pub timed_out: u64,
    /// `WAIT`s issued.
    pub waits: u64,
    /// `WAIT`s released.
    pub waits_released: u64,
    /// Snapshots sent.
    pub snapshots: u64,
    /// Follower crashes.
    pub crashes: u64,
    /// Partitions.
    pub partitions: u64,
    /// Connection resets (faults, loss, partitions, crashes).
    pub resets: u64,
    /// The leader's last LSN at the end.
    pub final_lsn: u64,
    /// Virtual time at the end.
    pub virtual_ms: u64,
    /// Hash of every event and release: equal seeds give equal hashes.
    pub trace_hash: u64,
}

/// A checker failed (or a core panicked) on a seed.
#[derive(Debug, Clone)]
pub struct SimFailure {
    /// The seed.
    pub seed: u64,
    /// Virtual time of the failure.
    pub at_ms: u64,
    /// What went wrong.
    pub message: String,
    /// The last trace lines, if kept.
    pub trace_tail: Vec<String>,
    /// What follows `cargo test -p tandem-sim` to replay this seed.
    pub repro: &'static str,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at {} ms: {}; reproduce with: TANDEM_SIM_SEED={} cargo test --release -p tandem-sim {}",
            self.seed, self.at_ms, self.message, self.seed, self.repro
        )?;
        for line in &self.trace_tail {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// Runs one seeded history with clients and faults, then drains it, and
/// judges it with every checker.
pub fn run_seed(seed: u64, config: &SimConfig) -> Result<SimReport, SimFailure> {
    run_caught(seed, REPRO_REPLICATION, || Sim::new(seed, config, false).run_to_end())
}

/// How to replay one seed of [`run_seed`].
pub(crate) const REPRO_REPLICATION: &str = "-- --exact replication_seeds";

/// Runs one seed's history, turning a checker's failure `(message, virtual
/// ms, trace tail)` or a panic into a [`SimFailure`] naming the seed.
pub(crate) fn run_caught<T>(
    seed: u64,
    repro: &'static str,
    run: impl FnOnce() -> Result<T, (String, u64, Vec<String>)>,
) -> Result<T, SimFailure> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err((message, at_ms, trace_tail))) => Err(SimFailure { seed, at_ms, message, trace_tail, repro }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(SimFailure { seed, at_ms: 0, message: format!("panicked: {message}"), trace_tail: vec![], repro })
        }
    }
}

/// Reads a numeric environment knob (`TANDEM_SIM_SEED`, `TANDEM_SIM_SEEDS`,
/// ...) of the seed tests; a value that is not a number is a test error.
pub fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

/// Runs seeds `start..start + count` over up to four threads and returns
/// every report, or the failures sorted by seed (each thread stops at its
/// first failing seed). The caller re-runs the lowest failing seed with a
/// trace.
pub fn run_seeds_parallel<R: Send>(
    count: u64,
    start: u64,
    run: impl Fn(u64) -> Result<R, SimFailure> + Sync,
) -> Result<Vec<R>, Vec<SimFailure>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4) as u64;
    let run = &run;
    let results: Vec<Result<Vec<R>, SimFailure>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut reports = Vec::new();
                    let mut seed = start + t;
                    while seed < start + count {
                        reports.push(run(seed)?);
                        seed += threads;
                    }
                    Ok(reports)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("seed runner panicked")).collect()
    });
    let mut failures = Vec::new();
    let mut reports = Vec::new();
    for r in results {
        match r {
            Ok(mut rs) => reports.append(&mut rs),
            Err(f) => failures.push(f),
        }
    }
    if failures.is_empty() {
        Ok(reports)
    } else {
        failures.sort_by_key(|f| f.seed);
        Err(failures)
    }
}
