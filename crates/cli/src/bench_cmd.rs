//! `tandem bench`: maps flags onto `tandem_bench::BenchOptions`, shows
//! progress on stderr, prints the report (text or JSON) on stdout.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tandem_bench::{BenchOptions, Phase, Progress};

/// Flags of `tandem bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server address (Tandem or Redis).
    #[arg(long, default_value = "127.0.0.1:7379")]
    addr: String,
    /// Connections, one task each.
    #[arg(long, short = 'c', default_value_t = 50)]
    clients: usize,
    /// Requests each connection keeps in flight.
    #[arg(long, short = 'P', default_value_t = 1)]
    pipeline: usize,
    /// Measured requests in total (ignored with --duration).
    #[arg(long, short = 'n', default_value_t = 100_000)]
    requests: u64,
    /// Measure for this many seconds instead of a request count.
    #[arg(long)]
    duration: Option<f64>,
    /// Keys are drawn uniformly from key:000000000000 .. keyspace-1 (16-byte keys).
    #[arg(long, short = 'r', default_value_t = 100_000)]
    keyspace: u64,
    /// Bytes of every SET value.
    #[arg(long, short = 'd', default_value_t = 3)]
    value_size: usize,
    /// Command mix: set, get, incr, ping, set+wait:N (SET then WAIT N as one
    /// operation), with optional weights: set:50,get:50.
    #[arg(long, short = 't', default_value = "set")]
    mix: String,
    /// SET every key of the keyspace once before measuring (for GET).
    #[arg(long)]
    preload: bool,
    /// Run the mix for this many seconds before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Password (AUTH) for servers that need one.
    #[arg(long, env = "TANDEM_BENCH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seed of the key and command choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Timeout of WAIT in set+wait:N, ms (0: block like Redis).
    #[arg(long, default_value_t = 0)]
    wait_timeout_ms: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn show_progress(p: &Progress) {
    let phase = match p.phase {
        Phase::Preload => "preload",
        Phase::Warmup => "warmup",
        Phase::Measure => "measure",
    };
    let total = p.ops_total.map(|t| format!("/{t}")).unwrap_or_default();
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{phase}: {}{total} ops, {:.0} ops/s, {} errors, {:.1}s   ",
        p.ops,
        p.ops_per_sec,
        p.errors,
        p.elapsed.as_secs_f64()
    );
    let _ = err.flush();
}

/// Runs `tandem bench`.
pub fn run(a: BenchArgs) -> ExitCode {
    let opts = BenchOptions {
        addr: a.addr,
        clients: a.clients,
        pipeline: a.pipeline,
        requests: a.requests,
        duration: a.duration.map(Duration::from_secs_f64),
        keyspace: a.keyspace,
        value_bytes: a.value_size,
        mix: a.mix,
        password: a.password,
        warmup: Duration::from_secs_f64(a.warmup),
        seed: a.seed,
        preload: a.preload,
        wait_timeout_ms: a.wait_timeout_ms,
        ..BenchOptions::default()
    };
    let quiet = a.quiet;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(tandem_bench::run(opts, |p| {
        if !quiet {
            show_progress(p)
        }
    }));
    if !quiet {
        eprintln!();
    }
    print_outcome(result.map(|r| (r.to_json(), r.render_text())), a.json)
}

/// Flags of `tandem lag`.
#[derive(Args, Debug)]
pub struct LagArgs {
    /// The leader's client address.
    #[arg(long)]
    leader: String,
    /// The follower's client address.
    #[arg(long)]
    follower: String,
    /// Writes to follow.
    #[arg(long, default_value_t = 1000)]
    trials: u64,
    /// Give up on one write after this many ms.
    #[arg(long, default_value_t = 5000)]
    trial_timeout_ms: u64,
    /// Password (AUTH) for servers that need one.
    #[arg(long, env = "TANDEM_BENCH_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `tandem lag`.
pub fn run_lag(a: LagArgs) -> ExitCode {
    let opts = tandem_bench::LagOptions {
        leader: a.leader,
        follower: a.follower,
        trials: a.trials,
        trial_timeout: Duration::from_millis(a.trial_timeout_ms),
        password: a.password,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(tandem_bench::lag_probe(opts));
    print_outcome(result.map(|r| (r.to_json(), r.render_text())), a.json)
}

/// Prints a report (JSON or text) or the error, and picks the exit code.
fn print_outcome(result: Result<(serde_json::Value, String), tandem_bench::BenchError>, json: bool) -> ExitCode {
    match result {
        Ok((as_json, as_text)) => {
            if json {
                println!("{as_json}");
            } else {
                print!("{as_text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
