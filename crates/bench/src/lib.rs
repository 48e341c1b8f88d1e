//! # tandem-bench: `tandem bench`, a RESP load generator
//!
//! Drives any RESP server (Tandem or Redis) with many connections, each
//! keeping a pipeline of requests in flight, and reports throughput, errors
//! by kind and latency percentiles from HDR histograms. It is a client: it
//! owns sockets and timers, and never links server code beyond the codec.
//!
//! # Layout
//! - [`run`] / [`BenchOptions`]: the entry point and its settings (the CLI
//!   maps its flags onto the options struct).
//! - `mix`: parses the command mix (`set:50,get:50`, `set+wait:2`, ..).
//! - `conn`: one TCP connection: write queue, read buffer, AUTH.
//! - `client`: one client task: preload, then the measured pipelined loop.
//! - [`Report`]: results, as JSON or a text table.
//! - `rng`: the seeded SplitMix64 that picks keys and commands.
//! - [`failover`]: `tandem bench-failover`, the kill -9 RTO and lost-writes probe.

mod client;
mod conn;
pub mod failover;
mod lag;
mod mix;
mod report;
mod rng;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use client::{Plan, Shared, Tally, Timing, KEY_DIGITS};
use conn::Conn;
pub use lag::{lag_probe, LagOptions, LagReport, LAG_TRIALS_MAX};
use mix::Mix;
pub use report::{CommandReport, LatencySummary, Report};

/// Most connections one run opens.
pub const CLIENTS_MAX: usize = 10_000;
/// Most operations one connection keeps in flight.
pub const PIPELINE_MAX: usize = 10_000;
/// Largest keyspace: keys are `key:` plus 12 decimal digits.
pub const KEYSPACE_MAX: u64 = 1_000_000_000_000;
/// Largest SET value: Redis's default `proto-max-bulk-len`.
pub const VALUE_BYTES_MAX: usize = tandem_core::resp::BULK_BYTES_MAX;
/// How often the progress callback is called.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Settings of one run. Plain data; [`BenchOptions::default`] matches
/// redis-benchmark's defaults where it has one.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Server address, `host:port`.
    pub addr: String,
    /// Connections, each a tokio task (default 50).
    pub clients: usize,
    /// Operations each connection keeps in flight (default 1).
    pub pipeline: usize,
    /// Measured operations in total (default 100000); ignored when
    /// `duration` is set.
    pub requests: u64,
    /// Run for this long instead of a request count.
    pub duration: Option<Duration>,
    /// Keys are drawn uniformly from `key:000000000000` up to
    /// `keyspace - 1` (default 100000).
    pub keyspace: u64,
    /// Bytes of every SET value (default 3).
    pub value_bytes: usize,
    /// Command mix: `set`, `get`, `incr`, `ping`, `set+wait:N` (SET then
    /// `WAIT N <wait_timeout_ms>` as one operation), with optional weights:
    /// `set:50,get:50`, `set+wait:1:30,get:70` (default `set`).
    pub mix: String,
    /// Send `AUTH [user] password` on every connection first.
    pub password: Option<String>,
    /// ACL user for AUTH (needs `password`).
    pub user: Option<String>,
    /// Run the mix this long before measuring (default 0).
    pub warmup: Duration,
    /// Seed of the key and command choice (default 0).
    pub seed: u64,
    /// SET every key of the keyspace once before measuring, e.g. for GET.
    pub preload: bool,
    /// WAIT's timeout for `set+wait:N`; 0 blocks until N replicas have the
    /// write, like Redis (default 0).
    pub wait_timeout_ms: u64,
    /// Give up connecting after this long (default 5 s).
    pub connect_timeout: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            addr: "127.0.0.1:6379".into(),
            clients: 50,
            pipeline: 1,
            requests: 100_000,
            duration: None,
            keyspace: 100_000,
            value_bytes: 3,
            mix: "set".into(),
            password: None,
            user: None,
            warmup: Duration::ZERO,
            seed: 0,
            preload: false,
            wait_timeout_ms: 0,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl BenchOptions {
    /// Checks every option against its limit; `run` does this first too.
    pub fn validate(&self) -> Result<(), BenchError> {
        self.check().map(|_| ())
    }

    fn check(&self) -> Result<Mix, BenchError> {
        let invalid = |why: String| Err(BenchError::InvalidOption(why));
        if !(1..=CLIENTS_MAX).contains(&self.clients) {
            return invalid(format!("clients must be 1..={CLIENTS_MAX}, got {}", self.clients));
        }
        if !(1..=PIPELINE_MAX).contains(&self.pipeline) {
            return invalid(format!("pipeline must be 1..={PIPELINE_MAX}, got {}", self.pipeline));
        }
        if !(1..=KEYSPACE_MAX).contains(&self.keyspace) {
            return invalid(format!("keyspace must be 1..={KEYSPACE_MAX}, got {}", self.keyspace));
        }
        if self.value_bytes > VALUE_BYTES_MAX {
            return invalid(format!("value size must be at most {VALUE_BYTES_MAX} bytes, got {}", self.value_bytes));
        }
        if self.duration == Some(Duration::ZERO) {
            return invalid("duration must be more than 0".into());
        }
        if self.user.is_some() && self.password.is_none() {
            return invalid("a user needs a password".into());
        }
        Mix::parse(&self.mix)
    }
}

/// Why a run could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An option is out of range or the mix does not parse.
    #[error("invalid bench option: {0}")]
    InvalidOption(String),
    /// The TCP connection could not be made (refused, unreachable, DNS).
    #[error("cannot connect to {addr}: {source} (is a server listening there?)")]
    Connect {
        /// The address given.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// Connecting took longer than `connect_timeout`.
    #[error("cannot connect to {addr}: no answer within {timeout_ms} ms")]
    ConnectTimeout {
        /// The address given.
        addr: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The server refused AUTH.
    #[error("{addr} refused AUTH: {message}")]
    Auth {
        /// The address given.
        addr: String,
        /// The server's error reply.
        message: String,
    },
    /// The connection broke during the run.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The address given.
        addr: String,
        /// The OS error.
        source: io::Error,
    },
    /// The server sent bytes that are not RESP.
    #[error("{addr} sent invalid RESP: {source}")]
    Protocol {
        /// The address given.
        addr: String,
        /// What was wrong.
        source: tandem_core::resp::ProtocolError,
    },
    /// The server sent a reply to a request that was never sent.
    #[error("{addr} sent a reply nobody asked for: {reply}")]
    UnexpectedReply {
        /// The address given.
        addr: String,
        /// The reply, debug-formatted.
        reply: String,
    },
    /// A failover trial could not be run (no leader, bad pid, ..).
    #[error("failover trial: {0}")]
    Failover(String),
    /// A SET of the preload phase got an error reply.
    #[error("preloading keys on {addr} failed: {message}")]
    Preload {
        /// The address given.
        addr: String,
        /// The server's error reply.
        message: String,
    },
}

/// Which part of a run a [`Progress`] report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Setting every key of the keyspace once.
    Preload,
    /// Running the mix without measuring.
    Warmup,
    /// Running the mix and measuring.
    Measure,
}

/// A progress report, delivered about every second.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The current phase.
    pub phase: Phase,
    /// Operations (keys, in preload) completed so far in this phase.
    pub ops: u64,
    /// What `ops` will reach: keyspace in preload, `requests` when measuring
    /// a request count; `None` otherwise.
    pub ops_total: Option<u64>,
    /// Operations per second since the previous report.
    pub ops_per_sec: f64,
    /// Error replies so far while measuring.
    pub errors: u64,
    /// Time since the phase began.
    pub elapsed: Duration,
}

/// Runs a benchmark: connects `clients` connections, optionally preloads the
/// keyspace, warms up, then measures until `requests` operations completed
/// or `duration` passed. Calls `progress` about once a second.
pub async fn run(opts: BenchOptions, mut progress: impl FnMut(&Progress)) -> Result<Report, BenchError> {
    let mix = opts.check()?;
    let addr: Arc<str> = opts.addr.as_str().into();
    let auth = opts.password.as_deref().map(|p| (opts.user.as_deref(), p));
    let mut conns = Vec::with_capacity(opts.clients);
    for _ in 0..opts.clients {
        conns.push(Conn::open(&addr, opts.connect_timeout, auth).await?);
    }
    let plan = Arc::new(Plan {
        mix,
        pipeline: opts.pipeline,
        keyspace: opts.keyspace,
        value: Bytes::from(vec![b'x'; opts.value_bytes]),
        seed: opts.seed,
        wait_timeout_ms: opts.wait_timeout_ms.to_string().into_bytes(),
    });
    debug_assert!(KEYSPACE_MAX <= 10u64.pow(KEY_DIGITS as u32));
    let shared = Arc::new(Shared::default());

    let mut preloaded_keys = 0;
    if opts.preload {
        let mut tasks = JoinSet::new();
        for conn in conns.drain(..) {
            tasks.spawn(client::preload(conn, plan.clone(), shared.clone()));
        }
        let started = Instant::now();
        let mut meter = Meter::default();
        conns = join_all(tasks, || {
            let done = shared.preloaded.load(Ordering::Relaxed);
            progress(&meter.report(Phase::Preload, done, Some(opts.keyspace), 0, started));
        })
        .await?;
        preloaded_keys = shared.preloaded.load(Ordering::Relaxed);
    }

    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let timing = Timing { measure_from, send_until: opts.duration.map(|d| measure_from + d) };
    shared.budget.store(opts.requests, Ordering::Relaxed);
    let mut tasks = JoinSet::new();
    for (index, conn) in conns.into_iter().enumerate() {
        tasks.spawn(client::bench(conn, index, plan.clone(), shared.clone(), timing));
    }
    let mut meter = Meter::default();
    let requests_total = opts.duration.is_none().then_some(opts.requests);
    let tallies = join_all(tasks, || {
        let report = if Instant::now() < measure_from {
            let done = shared.warmup_ops.load(Ordering::Relaxed);
            meter.report(Phase::Warmup, done, None, 0, start)
        } else {
            let done = shared.measured_ops.load(Ordering::Relaxed);
            let errors = shared.errors.load(Ordering::Relaxed);
            meter.report(Phase::Measure, done, requests_total, errors, measure_from)
        };
        progress(&report);
    })
    .await?;
    let elapsed = Instant::now().saturating_duration_since(measure_from);
    Ok(build_report(&opts, &plan, tallies, elapsed, preloaded_keys))
}

/// Turns counters into per-interval rates for progress reports.
#[derive(Default)]
struct Meter {
    phase: Option<Phase>,
    last_ops: u64,
    last_at: Option<Instant>,
}

impl Meter {
    fn report(
        &mut self,
        phase: Phase,
        ops: u64,
        ops_total: Option<u64>,
        errors: u64,
        phase_start: Instant,
    ) -> Progress {
        let now = Instant::now();
        if self.phase != Some(phase) {
            *self = Meter { phase: Some(phase), last_ops: 0, last_at: Some(phase_start) };
        }
        let since = now.saturating_duration_since(self.last_at.unwrap_or(phase_start));
        let ops_per_sec =
            if since.is_zero() { 0.0 } else { ops.saturating_sub(self.last_ops) as f64 / since.as_secs_f64() };
        self.last_ops = ops;
        self.last_at = Some(now);
        Progress { phase, ops, ops_total, ops_per_sec, errors, elapsed: now.saturating_duration_since(phase_start) }
    }
}

/// Waits for every task, calling `tick` every [`PROGRESS_INTERVAL`]. The
/// first error wins; dropping the set aborts the other tasks.
async fn join_all<T: 'static>(
    mut tasks: JoinSet<Result<T, BenchError>>,
    mut tick: impl FnMut(),
) -> Result<Vec<T>, BenchError> {
    let mut results = Vec::with_capacity(tasks.len());
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => return Ok(results),
                Some(Ok(Ok(result))) => results.push(result),
                Some(Ok(Err(err))) => return Err(err),
                Some(Err(join_error)) if join_error.is_panic() => {
                    std::panic::resume_unwind(join_error.into_panic())
                }
                Some(Err(join_error)) => panic!("bench task cancelled: {join_error}"),
            },
            _ = ticker.tick() => tick(),
        }
    }
}

fn build_report(
    opts: &BenchOptions,
    plan: &Plan,
    tallies: Vec<Tally>,
    elapsed: Duration,
    preloaded_keys: u64,
) -> Report {
    let entries = plan.mix.entries.len();
    let mut per_entry: Vec<Histogram<u64>> = (0..entries).map(|_| client::new_histogram()).collect();
    let mut ops = vec![0u64; entries];
    let mut errors = vec![0u64; entries];
    let mut errors_by_kind = std::collections::BTreeMap::new();
    for tally in tallies {
        for (entry, histogram) in tally.latency_ns.iter().enumerate() {
            for bucket in histogram.iter_recorded() {
                per_entry[entry].saturating_record_n(bucket.value_iterated_to(), u64::from(bucket.count_at_value()));
            }
            ops[entry] += tally.ops[entry];
            errors[entry] += tally.errors[entry];
        }
        for (kind, count) in tally.errors_by_kind {
            *errors_by_kind.entry(kind).or_insert(0) += count;
        }
    }
    let mut all: Histogram<u64> = client::new_histogram();
    for histogram in &per_entry {
        // Same bounds on both sides, so adding cannot fail.
        let _ = all.add(histogram);
    }
    let commands = plan
        .mix
        .entries
        .iter()
        .enumerate()
        .map(|(entry, mix_entry)| CommandReport {
            name: mix_entry.name.clone(),
            ops: ops[entry],
            errors: errors[entry],
            latency: LatencySummary::from_histogram_ns(&per_entry[entry]),
        })
        .collect();
    let ops_total: u64 = ops.iter().sum();
    let ops_per_sec = if elapsed.is_zero() { 0.0 } else { ops_total as f64 / elapsed.as_secs_f64() };
    Report {
        addr: opts.addr.clone(),
        clients: opts.clients,
        pipeline: opts.pipeline,
        mix: opts.mix.clone(),
        keyspace: opts.keyspace,
        value_bytes: opts.value_bytes,
        preloaded_keys,
        ops: ops_total,
        errors: errors.iter().sum(),
        errors_by_kind,
        elapsed,
        ops_per_sec,
        latency: LatencySummary::from_histogram_ns(&all),
        commands,
    }
}
