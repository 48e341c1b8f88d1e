//! `tandem switchover` and `tandem rollback list|show`: thin clients of a node's admin endpoint and of the
//! rollback files in a data directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::http_request;

/// `tandem switchover`.
#[derive(Args)]
pub struct SwitchoverArgs {
    /// The node that should lead.
    #[arg(long)]
    to: u64,
    /// Admin address of any node of the cluster (the first that answers of
    /// a comma-separated list).
    #[arg(long = "admin", alias = "admin-addr", default_value = crate::status_cmd::UP_ADMINS_DEFAULT, env = "TANDEM_ADMIN_ADDR")]
    admin: String,
    /// How long the target may take to catch up before the switchover is
    /// abandoned (the old leader then leads on), ms.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    #[command(flatten)]
    tls: crate::http::AdminTlsArgs,
}

/// `tandem rollback ...`.
#[derive(Subcommand)]
pub enum RollbackCommand {
    /// List the rollback files of a node: what it removed when it rejoined.
    List {
        /// The node's data directory.
        #[arg(long, default_value = "tandem-data", env = "TANDEM_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print one rollback file: every removed effect with its LSN, epoch and
    /// commit time.
    Show {
        /// The file (from `tandem rollback list`).
        file: PathBuf,
        /// Print the raw JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `tandem switchover`.
pub fn switchover(args: SwitchoverArgs) -> ExitCode {
    args.tls.install();
    let path = format!("/switchover?to={}&timeout_ms={}", args.to, args.timeout_ms);
    let mut result = Err(format!("no admin address in {:?}", args.admin));
    for addr in crate::http::split_addrs(&args.admin) {
        result = http_request("POST", &addr, &path, args.timeout_ms + 10_000);
        if !matches!(&result, Err(e) if e.starts_with("cannot connect")) {
            break;
        }
    }
    match result {
        Ok(body) => {
            println!("{}", body.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `tandem rollback ...`.
pub fn rollback(command: RollbackCommand) -> ExitCode {
    match command {
        RollbackCommand::List { data_dir } => match tandem_node::rollback::list(&data_dir) {
            Ok(files) if files.is_empty() => {
                println!("no rollback files in {}", data_dir.join(tandem_node::rollback::ROLLBACK_DIR).display());
                ExitCode::SUCCESS
            }
            Ok(files) => {
                for f in files {
                    let h = &f.header;
                    println!(
                        "{}\n  created {} by node {}: {} entries, LSN {}..{} (committed {} .. {}), not on node {} \
                         (epoch {}){}",
                        f.path.display(),
                        h.created,
                        h.node,
                        h.entries,
                        h.first_lsn,
                        h.last_lsn,
                        tandem_node::rollback::rfc3339(h.first_commit_ms),
                        tandem_node::rollback::rfc3339(h.last_commit_ms),
                        h.new_leader,
                        h.new_epoch,
                        if h.missing_entries > 0 {
                            format!("; {} entries were already folded into a snapshot", h.missing_entries)
                        } else {
                            String::new()
                        }
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        RollbackCommand::Show { file, json } => match tandem_node::rollback::read(&file) {
            Ok((header, lines)) => {
                if json {
                    println!("{}", serde_json::to_string(&header).unwrap_or_default());
                    for l in &lines {
                        println!("{l}");
                    }
                } else {
                    println!(
                        "# node {} removed {} entries (LSN {}..{}) on rejoining node {} at epoch {} ({})",
                        header.node,
                        header.entries,
                        header.first_lsn,
                        header.last_lsn,
                        header.new_leader,
                        header.new_epoch,
                        header.created
                    );
                    println!("{:>10} {:>6} {:<24} {:<9} {:<24} value", "lsn", "epoch", "commit_time", "op", "key");
                    for l in &lines {
                        let value =
                            l.get("value").or_else(|| l.get("members")).map_or(String::new(), |v| v.to_string());
                        println!(
                            "{:>10} {:>6} {:<24} {:<9} {:<24} {}",
                            l["lsn"],
                            l["epoch"],
                            l["commit_time"].as_str().unwrap_or(""),
                            l["op"].as_str().unwrap_or(""),
                            l.get("key").map_or(String::new(), |k| k.to_string()),
                            value
                        );
                    }
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
