//! `tandem bench-failover`: maps flags onto `tandem_bench::failover`, runs
//! the optional per-trial hooks (which start and stop the servers; this
//! command never does), prints one line per trial and a summary on stderr
//! (stdout without --json), and the JSON report on stdout with --json.
//!
//! Exit status: 0 when every trial measured an RTO, 2 when some trial had no
//! new leader in time or could not run (its before-trial hook failed, no
//! leader before the kill, ..), 1 when the run itself failed (bad flags, a
//! failing after-trial hook).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use tandem_bench::failover::{self, FailoverOptions, PidSource, RtoSummary, WaitSpec, FAILOVER_TRIALS_MAX};

/// Environment variable telling a hook which trial (1-based) is next or done.
const TRIAL_ENV: &str = "TANDEM_FAILOVER_TRIAL";
/// Exit status of a run in which some trial had no RTO.
const EXIT_SOME_TRIALS_FAILED: u8 = 2;

/// Flags of `tandem bench-failover`.
#[derive(Args, Debug)]
pub struct BenchFailoverArgs {
    /// Client addresses of all nodes, comma-separated (Tandem or Redis).
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// The pid of each node's process, comma-separated, in the order of --nodes.
    #[arg(long, value_delimiter = ',', conflicts_with = "pid_files", required_unless_present = "pid_files")]
    pids: Vec<u32>,
    /// A pid file per node, comma-separated, in the order of --nodes; read at
    /// kill time, so a --before-trial hook may restart nodes and rewrite them.
    #[arg(long, value_delimiter = ',')]
    pid_files: Vec<PathBuf>,
    /// Writer connections of the load on the leader (SET of unique keys).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// How long the load runs before the kill, ms.
    #[arg(long, default_value_t = 1000)]
    warmup_ms: u64,
    /// Send `WAIT N <--wait-timeout-ms>` after each SET; a write counts as
    /// acknowledged only if WAIT reaches N (for Redis: the nearest
    /// equivalent of Tandem's `any N`).
    #[arg(long)]
    wait_replicas: Option<u32>,
    /// WAIT's timeout, ms (with --wait-replicas).
    #[arg(long, default_value_t = 1000, requires = "wait_replicas")]
    wait_timeout_ms: u64,
    /// How long to wait for exactly one node to report ROLE master before the kill, ms.
    #[arg(long, default_value_t = 10_000)]
    leader_timeout_ms: u64,
    /// A trial fails if no survivor accepts a write this long after the kill, ms.
    #[arg(long, default_value_t = 10_000)]
    recovery_timeout_ms: u64,
    /// Pause between two probe SETs on one survivor, ms.
    #[arg(long, default_value_t = 5)]
    probe_interval_ms: u64,
    /// Connect timeout (and ROLE read timeout), ms; a probe SET waits for its
    /// reply until the recovery timeout, as a new leader may hold it for its ack policy.
    #[arg(long, default_value_t = 200)]
    io_timeout_ms: u64,
    /// Trials to run.
    #[arg(long, default_value_t = 1)]
    trials: u32,
    /// Shell command run before each trial (env TANDEM_FAILOVER_TRIAL=n):
    /// must leave a fresh, ready cluster and its pid files behind. If it
    /// fails, that trial fails (the run goes on).
    #[arg(long)]
    before_trial: Option<String>,
    /// Shell command run after each trial (e.g. to stop the survivors).
    #[arg(long)]
    after_trial: Option<String>,
    /// Name of the system under test, copied into the JSON report.
    #[arg(long, default_value = "")]
    label: String,
    /// Password (AUTH) for servers that need one.
    #[arg(long, env = "TANDEM_BENCH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Print the report as JSON on stdout (trial lines go to stderr).
    #[arg(long)]
    json: bool,
}

/// Runs a shell hook with its stdout sent to our stderr (stdout may be JSON).
fn run_hook(name: &str, command: &str, trial: u32) -> Result<(), String> {
    let stdout = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("cannot pass stderr to the {name} hook: {e}"))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env(TRIAL_ENV, trial.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .status()
        .map_err(|e| format!("cannot run the {name} hook `{command}`: {e}"))?;
    if !status.success() {
        return Err(format!("the {name} hook `{command}` failed ({status}) in trial {trial}"));
    }
    Ok(())
}

/// Runs `tandem bench-failover`.
pub fn run(a: BenchFailoverArgs) -> ExitCode {
    if !(1..=FAILOVER_TRIALS_MAX).contains(&a.trials) {
        eprintln!("error: --trials must be 1..={FAILOVER_TRIALS_MAX}, got {}", a.trials);
        return ExitCode::FAILURE;
    }
    let pids = if a.pid_files.is_empty() {
        a.pids.iter().copied().map(PidSource::Pid).collect()
    } else {
        a.pid_files.iter().cloned().map(PidSource::File).collect()
    };
    let base = FailoverOptions {
        nodes: a.nodes.clone(),
        pids,
        writers: a.writers,
        warmup: Duration::from_millis(a.warmup_ms),
        wait: a.wait_replicas.map(|replicas| WaitSpec { replicas, timeout_ms: a.wait_timeout_ms }),
        leader_timeout: Duration::from_millis(a.leader_timeout_ms),
        recovery_timeout: Duration::from_millis(a.recovery_timeout_ms),
        probe_interval: Duration::from_millis(a.probe_interval_ms),
        io_timeout: Duration::from_millis(a.io_timeout_ms),
        password: a.password.clone(),
        key_prefix: "rto".into(),
    };
    if let Err(e) = base.validate() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let say = |line: &str| if a.json { eprintln!("{line}") } else { println!("{line}") };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let mut results: Vec<Result<failover::TrialReport, String>> = Vec::new();
    let mut trial_json = Vec::new();
    for trial in 1..=a.trials {
        // A hook that fails (e.g. nodes that refuse to start) fails this
        // trial, not the run: the report then says why for every trial.
        let started = match &a.before_trial {
            Some(hook) => run_hook("before-trial", hook, trial).map_err(|e| format!("cluster not started: {e}")),
            None => Ok(()),
        };
        let opts = FailoverOptions { key_prefix: format!("rto:{}:{trial}", std::process::id()), ..base.clone() };
        let result = started.and_then(|()| runtime.block_on(failover::run_trial(&opts)).map_err(|e| e.to_string()));
        match &result {
            Ok(report) => {
                say(&report.render_line(trial));
                trial_json.push(report.to_json(trial));
            }
            Err(e) => {
                say(&format!("trial {trial}: FAILED: {e}"));
                trial_json.push(serde_json::json!({ "trial": trial, "outcome": "error", "error": e }));
            }
        }
        results.push(result);
        if let Some(hook) = &a.after_trial {
            if let Err(e) = run_hook("after-trial", hook, trial) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let summary = RtoSummary::from_trials(&results);
    say(&summary.render_line(base.recovery_timeout));
    if a.json {
        let mut doc = summary.to_json();
        doc["label"] = a.label.as_str().into();
        doc["nodes"] = a.nodes.clone().into();
        doc["writers"] = a.writers.into();
        doc["wait_replicas"] = a.wait_replicas.into();
        doc["recovery_timeout_ms"] = a.recovery_timeout_ms.into();
        doc["trial_reports"] = trial_json.into();
        println!("{doc}");
    }
    if summary.failed > 0 {
        ExitCode::from(EXIT_SOME_TRIALS_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}
