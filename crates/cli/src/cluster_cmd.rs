//! `tandem cluster show|add|remove`: the control plane's membership
//! commands, sent to a node's admin HTTP endpoint (`GET /cluster`,
//! `POST /cluster/members`, `DELETE /cluster/members/{id}`).
//!
//! Only talks HTTP to one node and prints its JSON answer; any node will do
//! (it forwards membership changes to the Raft leader). It never touches a
//! data directory.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

/// How long to wait for the node's answer (a membership change waits for a
/// learner to catch up).
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `tandem cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Admin address of any node of the cluster (the first that answers of
    /// a comma-separated list).
    #[arg(long, alias = "admin-addr", global = true, default_value = crate::status_cmd::UP_ADMINS_DEFAULT, env = "TANDEM_ADMIN_ADDR")]
    admin: String,
    #[command(flatten)]
    tls: crate::http::AdminTlsArgs,
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Print the cluster map and this node's view of the Raft group.
    Show,
    /// Add a node (started with --join): it becomes a learner, catches up,
    /// then votes. Never re-add a node that only restarted.
    Add {
        /// The new node's id.
        id: u64,
        /// Its peer address (HOST:PORT).
        peer_addr: SocketAddr,
    },
    /// Remove a node from the cluster.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// One HTTP/1.1 request; returns the status code and body.
pub(crate) fn http(addrs: &str, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
    let mut result = Err(format!("no admin address in {addrs:?}"));
    for addr in crate::http::split_addrs(addrs) {
        result = crate::http::request(&addr, method, path, body, HTTP_TIMEOUT);
        if !matches!(&result, Err(e) if e.starts_with("cannot connect")) {
            break;
        }
    }
    let (code, body) = result?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// Runs `tandem cluster`.
pub fn run(args: ClusterArgs) -> ExitCode {
    args.tls.install();
    let result = match &args.command {
        ClusterCommand::Show => http(&args.admin, "GET", "/cluster", None),
        ClusterCommand::Add { id, peer_addr } => {
            let body = serde_json::json!({ "id": id, "peer_addr": peer_addr }).to_string();
            http(&args.admin, "POST", "/cluster/members", Some(&body))
        }
        ClusterCommand::Remove { id } => http(&args.admin, "DELETE", &format!("/cluster/members/{id}"), None),
    };
    match result {
        Ok((code, body)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(body);
            if code == 200 {
                println!("{pretty}");
                ExitCode::SUCCESS
            } else {
                eprintln!("error: HTTP {code}: {pretty}");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
