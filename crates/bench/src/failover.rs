//! Failover RTO probe (`tandem bench-failover`): kill -9 the leader of a
//! replicated RESP cluster under a write load and measure how long until a
//! surviving node accepts a write, then check that every acknowledged write
//! is readable on the node that took over. Server-agnostic: it works against
//! Tandem and against Redis replicas promoted by Sentinel, because it only
//! uses `ROLE`, `SET`, `GET` and optionally `WAIT`.
//!
//! It owns: leader discovery, the write load and its record of acknowledged
//! writes, the SIGKILL, the probes of the survivors, the loss check and the
//! statistics over trials. It never starts, restarts or configures servers
//! (a user-provided hook does, see `tandem bench-failover --before-trial`),
//! and it never kills a process other than the pid given for the leader.
//!
//! Timing: T0 is taken just before `kill(pid, SIGKILL)`; T1 when the first
//! `+OK` to a probe SET arrives from any survivor; RTO = T1 - T0.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_core::resp::Frame;
use tokio::task::JoinSet;

use crate::conn::Conn;
use crate::BenchError;

/// Most nodes one trial watches.
pub const FAILOVER_NODES_MAX: usize = 16;
/// Most writer connections of the load.
pub const FAILOVER_WRITERS_MAX: usize = 256;
/// Most trials one run makes.
pub const FAILOVER_TRIALS_MAX: u32 = 10_000;
/// Most acknowledged writes one trial remembers; past it the load stops
/// writing (the loss check must cover every acknowledged write).
pub const ACKED_WRITES_MAX: usize = 5_000_000;
/// Lost keys named in a trial's report.
pub const LOST_KEYS_SHOWN: usize = 5;
/// GETs pipelined per round trip by the loss check.
const VERIFY_BATCH: usize = 512;
/// How long the loss check may take in all.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often leader discovery asks every node for its `ROLE`.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(50);
/// How long writers may take to notice their leader is gone after recovery
/// (a write without a reply is not acknowledged, so they are then aborted).
const WRITER_DRAIN: Duration = Duration::from_secs(2);

/// Where the pid of a node's process comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum PidSource {
    /// A fixed pid.
    Pid(u32),
    /// A file holding the pid, read at kill time (a restart hook may rewrite it).
    File(PathBuf),
}

impl PidSource {
    /// Reads the pid now.
    pub fn read(&self) -> Result<u32, String> {
        match self {
            PidSource::Pid(pid) => Ok(*pid),
            PidSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?;
                text.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("pid file {} does not hold a pid: {:?}", path.display(), text.trim()))
            }
        }
    }
}

/// `WAIT replicas timeout_ms` after each SET of the load: a write counts as
/// acknowledged only if WAIT answers at least `replicas`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WaitSpec {
    /// Replicas WAIT must reach.
    pub replicas: u32,
    /// WAIT's timeout argument.
    pub timeout_ms: u64,
}

/// Settings of one trial.
#[derive(Debug, Clone)]
pub struct FailoverOptions {
    /// Client address of every node, `host:port`.
    pub nodes: Vec<String>,
    /// The pid of each node's process, in the order of `nodes`.
    pub pids: Vec<PidSource>,
    /// Writer connections of the load.
    pub writers: usize,
    /// How long the load runs before the kill.
    pub warmup: Duration,
    /// Optional WAIT after each SET (Redis's nearest equivalent of `any 1`).
    pub wait: Option<WaitSpec>,
    /// How long to wait for exactly one node to report `master` before the kill.
    pub leader_timeout: Duration,
    /// How long after the kill a survivor must accept a write; later is a failed trial.
    pub recovery_timeout: Duration,
    /// Pause between two probe SETs on one survivor.
    pub probe_interval: Duration,
    /// Connect timeout of the load, discovery and probes, and read timeout of
    /// discovery (`ROLE`); probe SETs wait for their reply until the
    /// recovery deadline (see `Probe::run`).
    pub io_timeout: Duration,
    /// Password (AUTH) for servers that need one.
    pub password: Option<String>,
    /// Prefix of every key the trial writes; unique per trial.
    pub key_prefix: String,
}

impl FailoverOptions {
    /// Checks every option against its limit.
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |why: String| Err(BenchError::InvalidOption(why));
        if !(2..=FAILOVER_NODES_MAX).contains(&self.nodes.len()) {
            return invalid(format!("give 2..={FAILOVER_NODES_MAX} node addresses, got {}", self.nodes.len()));
        }
        if self.pids.len() != self.nodes.len() {
            return invalid(format!("give one pid per node: {} nodes, {} pids", self.nodes.len(), self.pids.len()));
        }
        if !(1..=FAILOVER_WRITERS_MAX).contains(&self.writers) {
            return invalid(format!("writers must be 1..={FAILOVER_WRITERS_MAX}, got {}", self.writers));
        }
        for (name, d) in [("recovery timeout", self.recovery_timeout), ("io timeout", self.io_timeout)] {
            if d.is_zero() {
                return invalid(format!("{name} must be more than 0"));
            }
        }
        if self.key_prefix.is_empty() {
            return invalid("key prefix must not be empty".into());
        }
        Ok(())
    }
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TrialOutcome {
    /// A survivor accepted a write `rto` after the kill.
    Recovered {
        /// The survivor that accepted first.
        new_leader: String,
        /// T1 - T0.
        rto: Duration,
        /// Acknowledged writes not readable (missing or another value) on `new_leader`.
        lost: u64,
        /// The first few lost keys.
        lost_keys: Vec<String>,
    },
    /// No survivor accepted a write within the recovery timeout.
    NoNewLeader {
        /// The recovery timeout that expired.
        waited: Duration,
        /// Acknowledged writes that no survivor can read back: lost whichever
        /// survivor leads next. `None` when a survivor could not be read.
        lost_everywhere: Option<u64>,
    },
}

/// The result of one trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialReport {
    /// The node that reported `master` and was killed.
    pub leader: String,
    /// Its pid.
    pub killed_pid: u32,
    /// Writes acknowledged by the old leader (SET `+OK`, and WAIT reached).
    pub acked_writes: u64,
    /// Writes answered with an error or a short WAIT before the kill.
    pub unacked_writes: u64,
    /// Probe SETs sent to survivors.
    pub probes: u64,
    /// How the trial ended.
    pub outcome: TrialOutcome,
}

impl TrialReport {
    /// The RTO, if a new leader appeared.
    pub fn rto(&self) -> Option<Duration> {
        match &self.outcome {
            TrialOutcome::Recovered { rto, .. } => Some(*rto),
            TrialOutcome::NoNewLeader { .. } => None,
        }
    }

    /// Lost acknowledged writes, if a new leader could be asked.
    pub fn lost(&self) -> Option<u64> {
        match &self.outcome {
            TrialOutcome::Recovered { lost, .. } => Some(*lost),
            TrialOutcome::NoNewLeader { .. } => None,
        }
    }

    /// Acknowledged writes lost: on the new leader when one appeared,
    /// otherwise those that no survivor holds (lost whoever leads next).
    pub fn lost_or_lost_everywhere(&self) -> Option<u64> {
        match &self.outcome {
            TrialOutcome::Recovered { lost, .. } => Some(*lost),
            TrialOutcome::NoNewLeader { lost_everywhere, .. } => *lost_everywhere,
        }
    }

    /// One human-readable line.
    pub fn render_line(&self, trial: u32) -> String {
        let head = format!(
            "trial {trial}: killed {} (pid {}), {} acked writes, {} unacked",
            self.leader, self.killed_pid, self.acked_writes, self.unacked_writes
        );
        match &self.outcome {
            TrialOutcome::Recovered { new_leader, rto, lost, lost_keys } => {
                let shown =
                    if lost_keys.is_empty() { String::new() } else { format!(" (e.g. {})", lost_keys.join(" ")) };
                format!(
                    "{head}; new leader {new_leader} after {:.1} ms, {} probes; {lost} acked writes lost{shown}",
                    ms(*rto),
                    self.probes
                )
            }
            TrialOutcome::NoNewLeader { waited, lost_everywhere } => format!(
                "{head}; FAILED: no new leader within {} ms ({} probes answered with errors or not at all); \
                 {} acked writes held by no survivor",
                waited.as_millis(),
                self.probes,
                lost_everywhere.map_or("?".to_string(), |n| n.to_string())
            ),
        }
    }

    /// JSON form.
    pub fn to_json(&self, trial: u32) -> Value {
        let mut v = json!({
            "trial": trial,
            "leader": self.leader,
            "killed_pid": self.killed_pid,
            "acked_writes": self.acked_writes,
            "unacked_writes": self.unacked_writes,
            "probes": self.probes,
        });
        match &self.outcome {
            TrialOutcome::Recovered { new_leader, rto, lost, lost_keys } => {
                v["outcome"] = "recovered".into();
                v["new_leader"] = new_leader.as_str().into();
                v["rto_ms"] = ms(*rto).into();
                v["lost_writes"] = (*lost).into();
                v["lost_keys"] = lost_keys.clone().into();
            }
            TrialOutcome::NoNewLeader { waited, lost_everywhere } => {
                v["outcome"] = "no_new_leader".into();
                v["waited_ms"] = (waited.as_millis() as u64).into();
                v["lost_everywhere"] = (*lost_everywhere).into();
            }
        }
        v
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One percentile of RTO over trials, where a failed trial counts as longer
/// than any measured RTO (it is censored at the recovery timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RtoStat {
    /// A measured RTO.
    Measured(Duration),
    /// The rank fell on a failed trial: longer than the recovery timeout.
    Failed,
}

impl RtoStat {
    /// Milliseconds, or null for a failed trial.
    fn to_json(self) -> Value {
        match self {
            RtoStat::Measured(d) => json!(ms(d)),
            RtoStat::Failed => Value::Null,
        }
    }

    fn render(self, recovery_timeout: Duration) -> String {
        match self {
            RtoStat::Measured(d) => format!("{:.1}", ms(d)),
            RtoStat::Failed => format!(">{}", recovery_timeout.as_millis()),
        }
    }
}

/// The nearest-rank `q`-quantile (0 < q <= 1) of RTOs; `None` entries are
/// failed trials and rank above every measured one. `None` for no trials.
/// With 20 trials, p50 is the 10th fastest and p99 the slowest.
pub fn rto_percentile(rtos: &[Option<Duration>], q: f64) -> Option<RtoStat> {
    assert!(q > 0.0 && q <= 1.0, "quantile {q} outside (0, 1]");
    if rtos.is_empty() {
        return None;
    }
    let mut sorted: Vec<Option<Duration>> = rtos.to_vec();
    // `None` (failed) last: map to (is_failed, rto).
    sorted.sort_by_key(|r| (r.is_none(), *r));
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(match sorted[rank - 1] {
        Some(d) => RtoStat::Measured(d),
        None => RtoStat::Failed,
    })
}

/// Statistics over the trials of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RtoSummary {
    /// Trials run.
    pub trials: usize,
    /// Trials without a measured RTO: no new leader in time, or not run.
    pub failed: usize,
    /// Trials that could not be run (counted in `failed` too).
    pub errors: usize,
    /// Median RTO.
    pub median: Option<RtoStat>,
    /// 99th percentile RTO (nearest rank).
    pub p99: Option<RtoStat>,
    /// Slowest trial.
    pub max: Option<RtoStat>,
    /// Fastest measured RTO.
    pub min: Option<Duration>,
    /// Acknowledged writes over all trials.
    pub acked_writes: u64,
    /// Acknowledged writes lost over all recovered trials.
    pub lost_writes: u64,
    /// Recovered trials that lost at least one acknowledged write.
    pub trials_with_loss: usize,
}

impl RtoSummary {
    /// Summarizes trials; an `Err` is a trial that could not be run (no
    /// leader before the kill, ..) and counts as failed.
    pub fn from_trials(results: &[Result<TrialReport, String>]) -> RtoSummary {
        let reports: Vec<&TrialReport> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let rtos: Vec<Option<Duration>> = results.iter().map(|r| r.as_ref().ok().and_then(TrialReport::rto)).collect();
        RtoSummary {
            trials: results.len(),
            failed: rtos.iter().filter(|r| r.is_none()).count(),
            errors: results.len() - reports.len(),
            median: rto_percentile(&rtos, 0.5),
            p99: rto_percentile(&rtos, 0.99),
            max: rto_percentile(&rtos, 1.0),
            min: rtos.iter().flatten().min().copied(),
            acked_writes: reports.iter().map(|r| r.acked_writes).sum(),
            lost_writes: reports.iter().filter_map(|r| r.lost()).sum(),
            trials_with_loss: reports.iter().filter(|r| r.lost().unwrap_or(0) > 0).count(),
        }
    }

    /// JSON form; RTOs in ms, null where the rank fell on a failed trial.
    pub fn to_json(&self) -> Value {
        let stat = |s: Option<RtoStat>| s.map_or(Value::Null, RtoStat::to_json);
        json!({
            "trials": self.trials,
            "recovered": self.trials - self.failed,
            "failed": self.failed,
            "errors": self.errors,
            "rto_ms": {
                "min": self.min.map(ms),
                "median": stat(self.median),
                "p99": stat(self.p99),
                "max": stat(self.max),
            },
            "acked_writes": self.acked_writes,
            "lost_writes": self.lost_writes,
            "trials_with_loss": self.trials_with_loss,
        })
    }

    /// One human-readable line.
    pub fn render_line(&self, recovery_timeout: Duration) -> String {
        let stat = |s: Option<RtoStat>| s.map_or("-".to_string(), |s| s.render(recovery_timeout));
        format!(
            "{} trials, {} failed ({} could not run; the others had no new leader within {} ms); \
             RTO ms: median {}  p99 {}  max {}; {} acked writes, {} lost in {} trials \
             (checked in the {} trials with a new leader)",
            self.trials,
            self.failed,
            self.errors,
            recovery_timeout.as_millis(),
            stat(self.median),
            stat(self.p99),
            stat(self.max),
            self.acked_writes,
            self.lost_writes,
            self.trials_with_loss,
            self.trials - self.failed
        )
    }
}

// ------------------------------------------------------------------ one trial

/// Runs one trial: find the leader, load it, kill it, probe the survivors,
/// check the acknowledged writes on the one that took over.
pub async fn run_trial(opts: &FailoverOptions) -> Result<TrialReport, BenchError> {
    opts.validate()?;
    let leader = find_leader(opts).await?;
    let pid = opts.pids[leader].read().map_err(BenchError::Failover)?;
    if !process_alive(pid) {
        return Err(BenchError::Failover(format!(
            "the leader {} has pid {pid}, but no such process runs (stale pid or pid file?)",
            opts.nodes[leader]
        )));
    }

    let load = Load::start(opts, &opts.nodes[leader]).await?;
    tokio::time::sleep(opts.warmup).await;
    if load.acked.lock().expect("acked lock").is_empty() {
        return Err(BenchError::Failover(format!(
            "the leader {} acknowledged no write during the {} ms warm-up (first error reply: {})",
            opts.nodes[leader],
            opts.warmup.as_millis(),
            load.first_error.lock().expect("error lock").as_deref().unwrap_or("none; no write got a reply in time")
        )));
    }

    let t0 = Instant::now();
    kill9(pid).map_err(BenchError::Failover)?;
    let survivors: Vec<String> =
        (0..opts.nodes.len()).filter(|&i| i != leader).map(|i| opts.nodes[i].clone()).collect();
    let probes = Arc::new(AtomicU64::new(0));
    let accepted = probe_survivors(opts, &survivors, t0, probes.clone()).await;
    let (acked, unacked) = load.finish().await;

    let outcome = match accepted {
        None => TrialOutcome::NoNewLeader {
            waited: opts.recovery_timeout,
            lost_everywhere: count_lost_everywhere(opts, &survivors, &acked).await,
        },
        Some((new_leader, t1)) => {
            let (lost, lost_keys) = count_lost(opts, &new_leader, &acked).await?;
            TrialOutcome::Recovered { new_leader, rto: t1.saturating_duration_since(t0), lost, lost_keys }
        }
    };
    Ok(TrialReport {
        leader: opts.nodes[leader].clone(),
        killed_pid: pid,
        acked_writes: acked.len() as u64,
        unacked_writes: unacked,
        probes: probes.load(Ordering::Relaxed),
        outcome,
    })
}

fn auth(opts: &FailoverOptions) -> Option<(Option<&str>, &str)> {
    opts.password.as_deref().map(|p| (None, p))
}

/// Connects and sends one command, both bounded by `timeout`.
async fn call_once(
    addr: &str,
    args: &[&[u8]],
    timeout: Duration,
    auth: Option<(Option<&str>, &str)>,
) -> Result<Frame, String> {
    let addr: Arc<str> = addr.into();
    let work = async {
        let mut conn = Conn::open(&addr, timeout, auth).await.map_err(|e| e.to_string())?;
        conn.call(args).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// The index of the one node whose `ROLE` says `master`, polling until
/// exactly one does or `leader_timeout` passes.
async fn find_leader(opts: &FailoverOptions) -> Result<usize, BenchError> {
    let deadline = Instant::now() + opts.leader_timeout;
    loop {
        let mut masters = Vec::new();
        let mut answers = Vec::new();
        for (index, addr) in opts.nodes.iter().enumerate() {
            let answer = call_once(addr, &[b"ROLE"], opts.io_timeout, auth(opts)).await;
            match &answer {
                Ok(Frame::Array(items)) if matches!(items.first(), Some(Frame::Bulk(r)) if &r[..] == b"master") => {
                    masters.push(index)
                }
                _ => {}
            }
            answers.push(format!("{addr}: {}", describe(&answer)));
        }
        if masters.len() == 1 {
            return Ok(masters[0]);
        }
        if Instant::now() >= deadline {
            let why = if masters.is_empty() { "no node reports" } else { "more than one node reports" };
            return Err(BenchError::Failover(format!(
                "{why} ROLE master after {} ms ({})",
                opts.leader_timeout.as_millis(),
                answers.join("; ")
            )));
        }
        tokio::time::sleep(DISCOVERY_INTERVAL).await;
    }
}

fn describe(answer: &Result<Frame, String>) -> String {
    match answer {
        Ok(Frame::Array(items)) => match items.first() {
            Some(Frame::Bulk(role)) => String::from_utf8_lossy(role).into_owned(),
            _ => "unexpected ROLE reply".into(),
        },
        Ok(Frame::Error(e)) => format!("error {e}"),
        Ok(other) => format!("unexpected reply {other:?}"),
        Err(e) => e.clone(),
    }
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

fn kill9(pid: u32) -> Result<(), String> {
    let raw = libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    if raw <= 0 {
        return Err(format!("refusing to kill pid {pid}"));
    }
    // SAFETY: kill(2) with a positive pid signals exactly that process.
    if unsafe { libc::kill(raw, libc::SIGKILL) } != 0 {
        return Err(format!("kill -9 {pid} failed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The write load on the leader: `writers` connections, each sending SET
/// (and WAIT) of unique keys one at a time and recording acknowledged ones.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<u64>,
    /// (writer, sequence) of every acknowledged write.
    acked: Arc<Mutex<Vec<(u32, u64)>>>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Load {
    async fn start(opts: &FailoverOptions, leader: &str) -> Result<Load, BenchError> {
        let addr: Arc<str> = leader.into();
        let mut conns = Vec::with_capacity(opts.writers);
        for _ in 0..opts.writers {
            conns.push(Conn::open(&addr, opts.io_timeout, auth(opts)).await?);
        }
        let mut load = Load {
            stop: Arc::new(AtomicBool::new(false)),
            tasks: JoinSet::new(),
            acked: Arc::new(Mutex::new(Vec::new())),
            first_error: Arc::new(Mutex::new(None)),
        };
        for (writer, conn) in conns.into_iter().enumerate() {
            let w = Writer {
                conn,
                writer: writer as u32,
                prefix: opts.key_prefix.clone(),
                wait: opts.wait,
                stop: load.stop.clone(),
                acked: load.acked.clone(),
                first_error: load.first_error.clone(),
            };
            load.tasks.spawn(w.run());
        }
        Ok(load)
    }

    /// Stops the writers (waiting at most [`WRITER_DRAIN`]) and returns the
    /// acknowledged writes and the count of unacknowledged replies.
    async fn finish(mut self) -> (Vec<(u32, u64)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut unacked = 0;
        let drained = tokio::time::timeout(WRITER_DRAIN, async {
            while let Some(joined) = self.tasks.join_next().await {
                unacked += joined.unwrap_or(0);
            }
        })
        .await;
        if drained.is_err() {
            self.tasks.abort_all();
        }
        let acked = std::mem::take(&mut *self.acked.lock().expect("acked lock"));
        (acked, unacked)
    }
}

struct Writer {
    conn: Conn,
    writer: u32,
    prefix: String,
    wait: Option<WaitSpec>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(u32, u64)>>>,
    first_error: Arc<Mutex<Option<String>>>,
}

impl Writer {
    /// Writes until stopped or the connection breaks; returns the writes
    /// that got an error reply or a short WAIT.
    async fn run(mut self) -> u64 {
        let mut unacked = 0;
        let wait_args = self.wait.map(|w| (w.replicas.to_string(), w.timeout_ms.to_string()));
        for seq in 0u64.. {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let key = write_key(&self.prefix, self.writer, seq);
            let value = write_value(seq);
            let ok = match self.conn.call(&[b"SET", key.as_bytes(), value.as_bytes()]).await {
                Err(_) => break, // the leader is gone: this write's outcome is unknown, not acknowledged
                Ok(Frame::Simple(s)) if s == "OK" => true,
                Ok(other) => {
                    self.note_error(format!("SET: {other:?}"));
                    false
                }
            };
            let ok = match (&wait_args, ok) {
                (Some((replicas, timeout)), true) => {
                    match self.conn.call(&[b"WAIT", replicas.as_bytes(), timeout.as_bytes()]).await {
                        Err(_) => break,
                        Ok(Frame::Integer(n)) if n >= i64::from(self.wait.map_or(0, |w| w.replicas)) => true,
                        Ok(other) => {
                            self.note_error(format!("WAIT: {other:?}"));
                            false
                        }
                    }
                }
                (_, ok) => ok,
            };
            if !ok {
                unacked += 1;
                continue;
            }
            let mut acked = self.acked.lock().expect("acked lock");
            if acked.len() >= ACKED_WRITES_MAX {
                break;
            }
            acked.push((self.writer, seq));
        }
        unacked
    }

    fn note_error(&self, what: String) {
        self.first_error.lock().expect("error lock").get_or_insert(what);
    }
}

fn write_key(prefix: &str, writer: u32, seq: u64) -> String {
    format!("{prefix}:{writer}:{seq}")
}

fn write_value(seq: u64) -> String {
    format!("v{seq}")
}

/// Probes every survivor concurrently; the first `+OK` wins. Returns the
/// survivor and the time its `+OK` arrived, or `None` after the recovery
/// timeout (measured from `t0`).
async fn probe_survivors(
    opts: &FailoverOptions,
    survivors: &[String],
    t0: Instant,
    probes: Arc<AtomicU64>,
) -> Option<(String, Instant)> {
    let deadline = t0 + opts.recovery_timeout;
    let mut tasks = JoinSet::new();
    for addr in survivors {
        let probe = Probe {
            addr: addr.as_str().into(),
            key: format!("{}:probe", opts.key_prefix),
            password: opts.password.clone(),
            interval: opts.probe_interval,
            io_timeout: opts.io_timeout,
            deadline,
            probes: probes.clone(),
        };
        tasks.spawn(probe.run());
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(found)) = joined {
            tasks.abort_all();
            return Some(found);
        }
    }
    None
}

struct Probe {
    addr: Arc<str>,
    key: String,
    password: Option<String>,
    interval: Duration,
    io_timeout: Duration,
    deadline: Instant,
    probes: Arc<AtomicU64>,
}

impl Probe {
    /// SETs on one survivor every `interval` until `+OK` or the deadline.
    /// Connection errors and error replies (`READONLY`) mean "not yet"; a
    /// broken connection is replaced on the next attempt. Connecting is
    /// bounded by `io_timeout`, but a sent SET waits for its reply until the
    /// deadline: a new leader may hold the reply until its ack policy is met
    /// (`any 1`), and that reply is the first acknowledged write. Each
    /// survivor has its own probe task, so one that hangs delays no other.
    async fn run(self) -> Option<(String, Instant)> {
        let auth = self.password.as_deref().map(|p| (None, p));
        let mut conn: Option<Conn> = None;
        while Instant::now() < self.deadline {
            if conn.is_none() {
                let connect_timeout = self.io_timeout.min(self.deadline.saturating_duration_since(Instant::now()));
                match tokio::time::timeout(connect_timeout, Conn::open(&self.addr, connect_timeout, auth)).await {
                    Ok(Ok(c)) => conn = Some(c),
                    Ok(Err(_)) | Err(_) => {
                        tokio::time::sleep(self.interval).await;
                        continue;
                    }
                }
            }
            let c = conn.as_mut().expect("connected above");
            self.probes.fetch_add(1, Ordering::Relaxed);
            let reply_timeout = self.deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(reply_timeout, c.call(&[b"SET", self.key.as_bytes(), b"1"])).await {
                Ok(Ok(Frame::Simple(s))) if s == "OK" => return Some((self.addr.to_string(), Instant::now())),
                Ok(Ok(_)) => {}                     // READONLY or another refusal: keep the connection
                Ok(Err(_)) | Err(_) => conn = None, // broken, or the deadline passed
            }
            tokio::time::sleep(self.interval).await;
        }
        None
    }
}

/// How many acknowledged writes no survivor can read back; `None` when a
/// survivor cannot be read (down, or refusing reads).
async fn count_lost_everywhere(opts: &FailoverOptions, survivors: &[String], acked: &[(u32, u64)]) -> Option<u64> {
    let mut missing: Vec<(u32, u64)> = acked.to_vec();
    for addr in survivors {
        let mut still = Vec::new();
        count_lost_into(opts, addr, &missing, &mut still).await.ok()?;
        missing = still;
    }
    Some(missing.len() as u64)
}

/// Reads every acknowledged write back from `addr`; returns how many are
/// missing or hold another value, and the first few such keys.
async fn count_lost(
    opts: &FailoverOptions,
    addr: &str,
    acked: &[(u32, u64)],
) -> Result<(u64, Vec<String>), BenchError> {
    count_lost_into(opts, addr, acked, &mut Vec::new()).await
}

/// [`count_lost`], also pushing each unreadable write onto `missing`.
async fn count_lost_into(
    opts: &FailoverOptions,
    addr: &str,
    acked: &[(u32, u64)],
    missing: &mut Vec<(u32, u64)>,
) -> Result<(u64, Vec<String>), BenchError> {
    let work = async {
        let mut conn = Conn::open(&addr.into(), opts.io_timeout, auth(opts)).await?;
        let (mut lost, mut lost_keys) = (0u64, Vec::new());
        for batch in acked.chunks(VERIFY_BATCH) {
            let keys: Vec<String> = batch.iter().map(|&(w, seq)| write_key(&opts.key_prefix, w, seq)).collect();
            for key in &keys {
                conn.queue(&[b"GET", key.as_bytes()]);
            }
            for (key, &(writer, seq)) in keys.iter().zip(batch) {
                let readable = match conn.recv().await? {
                    Frame::Bulk(value) => value == write_value(seq).as_bytes(),
                    Frame::Error(e) => {
                        return Err(BenchError::Failover(format!("GET {key} on the new leader {addr} failed: {e}")))
                    }
                    _ => false,
                };
                if !readable {
                    lost += 1;
                    missing.push((writer, seq));
                    if lost_keys.len() < LOST_KEYS_SHOWN {
                        lost_keys.push(key.clone());
                    }
                }
            }
        }
        Ok((lost, lost_keys))
    };
    tokio::time::timeout(VERIFY_TIMEOUT, work).await.unwrap_or_else(|_| {
        Err(BenchError::Failover(format!(
            "reading {} acknowledged writes back from {addr} took more than {VERIFY_TIMEOUT:?}",
            acked.len()
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_d(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn recovered(rto_ms: u64, acked: u64, lost: u64) -> TrialReport {
        TrialReport {
            leader: "a".into(),
            killed_pid: 1,
            acked_writes: acked,
            unacked_writes: 0,
            probes: 1,
            outcome: TrialOutcome::Recovered { new_leader: "b".into(), rto: ms_d(rto_ms), lost, lost_keys: Vec::new() },
        }
    }

    fn failed() -> TrialReport {
        TrialReport {
            outcome: TrialOutcome::NoNewLeader { waited: ms_d(10_000), lost_everywhere: None },
            ..recovered(0, 7, 0)
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        // 1..=20 ms in shuffled order.
        let rtos: Vec<Option<Duration>> = (1..=20u64).map(|i| Some(ms_d((i * 7) % 20 + 1))).collect();
        assert_eq!(rto_percentile(&rtos, 0.5), Some(RtoStat::Measured(ms_d(10))));
        assert_eq!(rto_percentile(&rtos, 0.99), Some(RtoStat::Measured(ms_d(20))));
        assert_eq!(rto_percentile(&rtos, 1.0), Some(RtoStat::Measured(ms_d(20))));
        assert_eq!(rto_percentile(&rtos, 0.05), Some(RtoStat::Measured(ms_d(1))));
        assert_eq!(rto_percentile(&[Some(ms_d(3))], 0.5), Some(RtoStat::Measured(ms_d(3))));
        assert_eq!(rto_percentile(&[], 0.5), None);
    }

    #[test]
    fn failed_trials_rank_above_every_measured_rto() {
        let mut rtos = vec![None; 9];
        rtos.extend((1..=11u64).map(|i| Some(ms_d(i * 100))));
        assert_eq!(rto_percentile(&rtos, 0.5), Some(RtoStat::Measured(ms_d(1000))));
        assert_eq!(rto_percentile(&rtos, 0.99), Some(RtoStat::Failed));
        rtos.extend([None, None]);
        assert_eq!(rto_percentile(&rtos, 0.5), Some(RtoStat::Measured(ms_d(1100))), "11 of 22 measured: rank 11");
        rtos.push(None);
        assert_eq!(rto_percentile(&rtos, 0.5), Some(RtoStat::Failed), "12 of 23 failed: the median is a failure");
    }

    #[test]
    fn summary_counts_losses_and_failures() {
        let reports = vec![
            Ok(recovered(800, 100, 0)),
            Ok(recovered(1200, 50, 3)),
            Ok(failed()),
            Ok(recovered(900, 10, 1)),
            Err("no node reports ROLE master".to_string()),
        ];
        let s = RtoSummary::from_trials(&reports);
        assert_eq!((s.trials, s.failed, s.errors), (5, 2, 1));
        assert_eq!(s.median, Some(RtoStat::Measured(ms_d(1200))), "3rd of 5: 800, 900, 1200, failed, failed");
        assert_eq!(s.max, Some(RtoStat::Failed));
        assert_eq!(s.min, Some(ms_d(800)));
        assert_eq!((s.acked_writes, s.lost_writes, s.trials_with_loss), (167, 4, 2));
        let j = s.to_json();
        assert_eq!(j["rto_ms"]["median"], json!(1200.0));
        assert_eq!(j["rto_ms"]["max"], Value::Null);
        assert_eq!(j["recovered"], json!(3));
        assert!(s.render_line(ms_d(10_000)).contains("max >10000"), "{}", s.render_line(ms_d(10_000)));
    }

    #[test]
    fn a_failed_trial_says_so() {
        let line = failed().render_line(3);
        assert!(line.contains("FAILED: no new leader within 10000 ms"), "{line}");
        assert_eq!(failed().to_json(3)["outcome"], json!("no_new_leader"));
        assert_eq!(failed().lost(), None);
    }

    #[test]
    fn pid_files_are_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("tandem-failover-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.pid");
        std::fs::write(&good, "4242\n").unwrap();
        assert_eq!(PidSource::File(good).read(), Ok(4242));
        let bad = dir.join("bad.pid");
        std::fs::write(&bad, "not a pid").unwrap();
        let err = PidSource::File(bad).read().unwrap_err();
        assert!(err.contains("does not hold a pid"), "{err}");
        let err = PidSource::File(dir.join("absent.pid")).read().unwrap_err();
        assert!(err.contains("cannot read pid file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(process_alive(std::process::id()));
        assert!(kill9(0).is_err(), "pid 0 would signal the whole process group");
    }

    #[test]
    fn options_are_checked() {
        let opts = FailoverOptions {
            nodes: vec!["a:1".into(), "b:2".into(), "c:3".into()],
            pids: vec![PidSource::Pid(1), PidSource::Pid(2)],
            writers: 4,
            warmup: ms_d(500),
            wait: None,
            leader_timeout: ms_d(1000),
            recovery_timeout: ms_d(1000),
            probe_interval: ms_d(5),
            io_timeout: ms_d(100),
            password: None,
            key_prefix: "rto".into(),
        };
        let err = opts.validate().unwrap_err().to_string();
        assert!(err.contains("one pid per node"), "{err}");
        let ok = FailoverOptions { pids: vec![PidSource::Pid(1); 3], ..opts.clone() };
        ok.validate().unwrap();
        assert!(FailoverOptions { writers: 0, ..ok.clone() }.validate().is_err());
        assert!(FailoverOptions { nodes: vec!["a:1".into()], pids: vec![PidSource::Pid(1)], ..ok }.validate().is_err());
    }
}
