//! `tandem`: the one binary. Subcommands:
//! - `server`: run a node;
//! - `up`: a local cluster of N node processes;
//! - `bench`: load-generate against any RESP server (Tandem or Redis);
//! - `lag`: replication lag from a leader to a follower;
//! - `bench-failover`: failover RTO and lost writes after kill -9 of the leader;
//! - `status`: print nodes' `/status` and their merged event log;
//! - `switchover`: move leadership to a chosen node, losing nothing;
//! - `rollback list|show`: what a node removed when it rejoined;
//! - `cluster show|add|remove`: the control plane's map and membership;
//! - `keyspace create|list|drop`: keyspaces and their replication policies;
//! - `log repair`: truncate a corrupt log deliberately;
//! - `backup base|list|verify|prune`, `restore`, `dr drill`: backups and
//!   point-in-time recovery (docs/backup.md).
//!
//! This crate only parses arguments, sets up logging and signals, and calls
//! the library crates; it holds no database logic.

mod admin_auth;
/// `println!` that never panics when stdout is closed (`tandem up | head`):
/// the line is dropped. For commands that must clean up before exiting;
/// the others die quietly of SIGPIPE like any Unix tool (see `main`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod backup_cmd;
mod bench_cmd;
mod bench_failover_cmd;
mod cluster_cmd;
mod dr_cmd;
mod failover_cmd;
mod http;
mod keyspace_cmd;
mod lab_cmd;
mod proxy_cmd;
mod server_cmd;
mod status_cmd;
mod up_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tandem: a replicated key-value database that speaks the Redis protocol.
#[derive(Parser)]
#[command(name = "tandem", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (RESP on --client-addr, HTTP admin on --admin-addr).
    Server(Box<server_cmd::ServerArgs>),
    /// Start a local cluster of N nodes (they elect a leader and fail over
    /// automatically; --static-leader: node 1 leads) and stop it on Ctrl-C.
    Up(up_cmd::UpArgs),
    /// Measure throughput and latency of any RESP server (Tandem or Redis).
    Bench(bench_cmd::BenchArgs),
    /// Measure replication lag: how long after a write is sent to the leader
    /// it is visible on a follower (any RESP pair: Tandem or Redis).
    Lag(bench_cmd::LagArgs),
    /// Measure failover: kill -9 the leader under a write load, time until a
    /// survivor accepts a write (RTO), count lost acknowledged writes (Tandem or Redis).
    BenchFailover(bench_failover_cmd::BenchFailoverArgs),
    /// Run the RESP proxy: writes to the leader, reads to followers, with
    /// per-connection session guarantees (read-your-writes, monotonic, max lag).
    Proxy(proxy_cmd::ProxyArgs),
    /// Print nodes' status (their `/status` documents) and the cluster's
    /// event log (failovers with their RTO, rollbacks, switchovers), merged
    /// by time.
    Status(status_cmd::StatusArgs),
    /// Move leadership to another node with zero writes lost: the leader
    /// pauses writes, the target catches up, the control plane switches.
    Switchover(failover_cmd::SwitchoverArgs),
    /// Read rollback files: entries a node removed when it rejoined a
    /// cluster whose new leader never had them.
    Rollback {
        #[command(subcommand)]
        command: failover_cmd::RollbackCommand,
    },
    /// The cluster map and membership (control plane): show, add, remove.
    Cluster(cluster_cmd::ClusterArgs),
    /// Keyspaces (key prefixes with their own replication policy): create,
    /// list, drop.
    Keyspace(keyspace_cmd::KeyspaceArgs),
    /// The replication trade-offs reproduced on the deterministic simulator
    /// with measured numbers and plots: list, run NAME, run --all --out DIR.
    Lab(lab_cmd::LabArgs),
    /// Backups: base backups from a running node, list, verify, prune.
    Backup {
        #[command(subcommand)]
        command: backup_cmd::BackupCommand,
    },
    /// Restore a base backup + archived log to a time, an LSN or the latest
    /// state, into a new data directory.
    Restore(backup_cmd::RestoreArgs),
    /// Disaster-recovery drills.
    Dr {
        #[command(subcommand)]
        command: dr_cmd::DrCommand,
    },
    /// Maintenance of the replication log on disk (node stopped).
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Find the first corrupt record in the log and truncate the log there,
    /// deleting every later entry. Without --yes (or with --dry-run) it only
    /// says what it would drop; --yes does it. Use only after a node refused to start with "corrupt log
    /// record", and only if no other copy (replica, backup) has the data.
    Repair {
        /// The node's data directory.
        #[arg(long, default_value = "tandem-data", env = "TANDEM_DATA_DIR")]
        data_dir: PathBuf,
        /// Really truncate.
        #[arg(long, conflicts_with = "dry_run")]
        yes: bool,
        /// Only say what would be dropped (the default without --yes).
        #[arg(long)]
        dry_run: bool,
    },
}

/// The log filter without `TANDEM_LOG`.
const LOG_FILTER_DEFAULT: &str = "info,openraft=off";

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // openraft reports every vote and every failed heartbeat to a dead peer;
    // that is debugging detail, not an operator's news (TANDEM_LOG=debug
    // shows it). Tandem's own failover events say what happened.
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new(LOG_FILTER_DEFAULT));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Rust ignores SIGPIPE, so `println!` panics on a closed pipe
    // (`tandem status | head`). Commands that only print get the Unix
    // default (exit quietly); the ones that own processes (`up`, `dr`,
    // `server`, `proxy`) keep it ignored and never panic on a write.
    if !matches!(cli.command, Command::Up(_) | Command::Dr { .. } | Command::Server(_) | Command::Proxy(_)) {
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Server(args) => {
            init_logging();
            server_cmd::run(*args)
        }
        Command::Bench(args) => bench_cmd::run(args),
        Command::Up(args) => up_cmd::run(args),
        Command::Lag(args) => bench_cmd::run_lag(args),
        Command::BenchFailover(args) => bench_failover_cmd::run(args),
        Command::Proxy(args) => {
            init_logging();
            proxy_cmd::run(args)
        }
        Command::Status(args) => status_cmd::run(args),
        Command::Switchover(args) => failover_cmd::switchover(args),
        Command::Rollback { command } => failover_cmd::rollback(command),
        Command::Cluster(args) => cluster_cmd::run(args),
        Command::Keyspace(args) => keyspace_cmd::run(args),
        Command::Lab(args) => lab_cmd::run(args),
        Command::Backup { command } => backup_cmd::run(command),
        Command::Restore(args) => backup_cmd::run_restore(args),
        Command::Dr { command } => dr_cmd::run(command),
        Command::Log { command: LogCommand::Repair { data_dir, yes, dry_run: _ } } => {
            init_logging();
            repair(&data_dir, yes)
        }
    }
}

/// A request without a body whose answer must be 200 (see [`http`]).
fn http_request(method: &str, addr: &str, path: &str, timeout_ms: u64) -> Result<String, String> {
    http::ok_bytes(addr, method, path, std::time::Duration::from_millis(timeout_ms))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn describe_repair(r: &tandem_storage::log::RepairReport) -> String {
    format!(
        "  cut {} at byte {}\n  drop {} bytes: {} intact record(s) after the damage (damaged records cannot be \
         counted) and {} later segment file(s)",
        r.path.display(),
        r.offset,
        r.bytes_dropped,
        r.records_dropped,
        r.segments_removed
    )
}

fn repair(data_dir: &std::path::Path, yes: bool) -> ExitCode {
    let log_dir = data_dir.join("log");
    match tandem_storage::log::recover(&log_dir) {
        Ok(r) => {
            println!("the log in {} is intact (last LSN {}); nothing to repair", log_dir.display(), r.last_lsn());
            ExitCode::SUCCESS
        }
        Err(tandem_storage::StorageError::Corrupt { path, offset, reason }) => {
            println!("corrupt record in {} at byte offset {offset}: {reason}", path.display());
            if !yes {
                match tandem_storage::log::repair_plan(&log_dir, &path, offset) {
                    Ok(plan) => println!("dry run: a repair would\n{}", describe_repair(&plan)),
                    Err(e) => eprintln!("error: {e}"),
                }
                println!("nothing changed; re-run with --yes to truncate the log there");
                return ExitCode::FAILURE;
            }
            match tandem_storage::log::repair_truncate(&log_dir, &path, offset) {
                Ok(report) => {
                    println!("repaired: the log now ends before the damage\n{}", describe_repair(&report));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
