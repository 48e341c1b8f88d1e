//! `tandem keyspace create|list|drop`: define keyspaces at run time through
//! any node's admin endpoint (`POST /keyspaces`, `GET /keyspaces`,
//! `DELETE /keyspaces/{name}`); the node commits the change to the cluster
//! map, so every node agrees.
//!
//! Only talks HTTP to one node and prints its answer; it never touches a
//! data directory.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cluster_cmd::http;

/// Arguments of `tandem keyspace`.
#[derive(Args, Debug)]
pub struct KeyspaceArgs {
    /// Admin address of any node of the cluster.
    #[arg(long, global = true, default_value = "127.0.0.1:7380", env = "TANDEM_ADMIN_ADDR")]
    admin: String,
    /// Print the node's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    tls: crate::http::AdminTlsArgs,
    #[command(subcommand)]
    command: KeyspaceCommand,
}

#[derive(Subcommand, Debug)]
enum KeyspaceCommand {
    /// Define a keyspace: keys starting with PREFIX get its replication mode
    /// and policy (the longest matching prefix wins; other keys stay in
    /// `default`).
    Create {
        /// The keyspace's name (A-Z a-z 0-9 _ . -).
        name: String,
        /// The key prefix that selects it.
        #[arg(long)]
        prefix: String,
        /// Replication mode: single-leader, multi-leader or leaderless.
        #[arg(long, default_value = "single-leader")]
        mode: String,
        /// Multi-leader and leaderless: how concurrent writes to one key
        /// are resolved: lww (default), siblings or crdt.
        #[arg(long)]
        conflict: Option<String>,
        /// Leaderless: replicas of each key (default 3).
        #[arg(long)]
        n: Option<u8>,
        /// Leaderless: replicas that must take a write before it is
        /// acknowledged (default a majority of N).
        #[arg(long)]
        w: Option<u8>,
        /// Leaderless: replicas a read waits for (default a majority of N).
        #[arg(long)]
        r: Option<u8>,
        /// Leaderless: sloppy quorum; writes for a down replica go to the
        /// next healthy node with a hint (hinted handoff).
        #[arg(long)]
        sloppy: bool,
        /// Ack policy of its writes: async, "any K", "first K (A,B,..)", all
        /// (default: the node's --ack).
        #[arg(long)]
        ack: Option<String>,
        /// What a follower's ack means: flush or apply (default: the node's
        /// --ack-level).
        #[arg(long)]
        ack_level: Option<String>,
    },
    /// List the keyspaces with their mode, policy and this node's state.
    List,
    /// Remove a keyspace definition. Refused while it holds keys, unless
    /// --force (its keys then belong to the keyspace their prefix matches
    /// next, usually `default`; nothing is deleted).
    Drop {
        /// The keyspace's name.
        name: String,
        /// Drop it even if it holds keys.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `tandem keyspace ...`.
pub fn run(args: KeyspaceArgs) -> ExitCode {
    args.tls.install();
    let result = match &args.command {
        KeyspaceCommand::Create { name, prefix, mode, ack, ack_level, conflict, n, w, r, sloppy } => {
            let body = serde_json::json!({
                "name": name, "prefix": prefix, "mode": mode, "ack": ack, "ack_level": ack_level,
                "conflict": conflict, "n": n, "w": w, "r": r, "sloppy": sloppy,
            });
            http(&args.admin, "POST", "/keyspaces", Some(&body.to_string()))
        }
        KeyspaceCommand::List => http(&args.admin, "GET", "/keyspaces", None),
        KeyspaceCommand::Drop { name, force } => {
            http(&args.admin, "DELETE", &format!("/keyspaces/{name}?force={force}"), None)
        }
    };
    let (code, body) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tandem keyspace: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body.clone()));
    if !(200..300).contains(&code) {
        let msg = json.get("error").and_then(|e| e.as_str()).unwrap_or(body.trim());
        eprintln!("tandem keyspace: {msg} (HTTP {code})");
        return ExitCode::FAILURE;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or(body));
        return ExitCode::SUCCESS;
    }
    match &args.command {
        KeyspaceCommand::List => print_table(json.get("keyspaces").and_then(|k| k.as_array()).map_or(&[][..], |v| v)),
        KeyspaceCommand::Create { .. } => {
            if let Some(w) = json.get("warning").and_then(|w| w.as_str()) {
                eprintln!("warning: {w}");
            }
            print_table(std::slice::from_ref(&json))
        }
        KeyspaceCommand::Drop { name, .. } => {
            let keys = json.get("keys").and_then(|k| k.as_u64()).unwrap_or(0);
            println!("dropped keyspace {name} ({keys} keys on that node now belong to the keyspace their prefix matches next)");
        }
    }
    ExitCode::SUCCESS
}

fn print_table(rows: &[serde_json::Value]) {
    let s = |v: &serde_json::Value, path: &[&str]| -> String {
        let mut cur = v;
        for p in path {
            cur = match cur.get(p) {
                Some(c) => c,
                None => return "-".into(),
            };
        }
        match cur {
            serde_json::Value::String(s) if s.is_empty() => "(any)".into(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        }
    };
    println!(
        "{:<16} {:<16} {:<14} {:<18} {:<6} {:>7} {:>6} {:>10}",
        "NAME", "PREFIX", "MODE", "ACK", "LEVEL", "LEADER", "EPOCH", "LAST_LSN"
    );
    for r in rows {
        println!(
            "{:<16} {:<16} {:<14} {:<18} {:<6} {:>7} {:>6} {:>10}",
            s(r, &["name"]),
            s(r, &["prefix"]),
            s(r, &["mode"]),
            policy_text(r, &s),
            s(r, &["policy", "ack_level"]),
            s(r, &["state", "leader"]),
            s(r, &["state", "epoch"]),
            s(r, &["state", "last_lsn"]),
        );
    }
}

/// The ACK column: a single-leader keyspace's ack policy, else the mode's
/// policy in short (`lww`, `N=3 W=2 R=2 lww`).
fn policy_text(r: &serde_json::Value, s: &dyn Fn(&serde_json::Value, &[&str]) -> String) -> String {
    match r.get("mode").and_then(|m| m.as_str()) {
        Some("multi-leader") => s(r, &["policy", "conflict"]),
        Some("leaderless") => format!(
            "N={} W={} R={} {}{}",
            s(r, &["policy", "n"]),
            s(r, &["policy", "w"]),
            s(r, &["policy", "r"]),
            s(r, &["policy", "conflict"]),
            if r.pointer("/policy/sloppy").and_then(|v| v.as_bool()) == Some(true) { " sloppy" } else { "" }
        ),
        _ => s(r, &["policy", "ack"]),
    }
}
