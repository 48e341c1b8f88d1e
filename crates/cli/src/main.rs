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

mod backup_cmd;
mod bench_cmd;
mod bench_failover_cmd;
mod cluster_cmd;
mod dr_cmd;
mod failover_cmd;
mod keyspace_cmd;
mod proxy_cmd;
mod server_cmd;
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
    Status {
        /// Admin addresses, comma-separated (one node or all of them).
        #[arg(long, default_value = "127.0.0.1:7380", env = "TANDEM_ADMIN_ADDR")]
        admin_addr: String,
    },
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
    /// deleting every later entry. Prints what would be dropped; pass --yes
    /// to do it. Use only after a node refused to start with "corrupt log
    /// record", and only if no other copy (replica, backup) has the data.
    Repair {
        /// The node's data directory.
        #[arg(long, default_value = "tandem-data", env = "TANDEM_DATA_DIR")]
        data_dir: PathBuf,
        /// Really truncate.
        #[arg(long)]
        yes: bool,
    },
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TANDEM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
        Command::Status { admin_addr } => status(&admin_addr),
        Command::Switchover(args) => failover_cmd::switchover(args),
        Command::Rollback { command } => failover_cmd::rollback(command),
        Command::Cluster(args) => cluster_cmd::run(args),
        Command::Keyspace(args) => keyspace_cmd::run(args),
        Command::Backup { command } => backup_cmd::run(command),
        Command::Restore(args) => backup_cmd::run_restore(args),
        Command::Dr { command } => dr_cmd::run(command),
        Command::Log { command: LogCommand::Repair { data_dir, yes } } => {
            init_logging();
            repair(&data_dir, yes)
        }
    }
}

/// A minimal HTTP GET (the admin endpoint is local and plain HTTP/1.1).
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    http_request("GET", addr, path, 10_000)
}

/// A minimal HTTP request without a body; the response body on 200, else
/// the status line and body as the error.
fn http_request(method: &str, addr: &str, path: &str, timeout_ms: u64) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(std::time::Duration::from_millis(timeout_ms))).ok();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("reading from {addr}: {e}"))?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("malformed HTTP response")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}{path}: {}: {}", head.lines().next().unwrap_or(""), body.trim()));
    }
    Ok(body.to_string())
}

fn status(admin_addrs: &str) -> ExitCode {
    let addrs: Vec<&str> = admin_addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let mut failed = false;
    for addr in &addrs {
        match http_get(addr, "/status") {
            Ok(body) => match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body)),
                Err(_) => println!("{body}"),
            },
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    failover_cmd::print_events(&addrs);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
                println!("re-run with --yes to truncate the log there (every later entry is dropped)");
                return ExitCode::FAILURE;
            }
            match tandem_storage::log::repair_truncate(&log_dir, &path, offset) {
                Ok(report) => {
                    println!("truncated: {report:?}");
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
