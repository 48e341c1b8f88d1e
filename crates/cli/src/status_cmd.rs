//! `tandem status`: a summary table of the nodes (role, epoch, lag,
//! archive lag, last event), then the cluster's event log; `--json` prints
//! the raw `/status` documents and the events instead.
//!
//! A thin client of the nodes' admin endpoints (`/status`, `/events`); it
//! never changes anything. A node that does not answer is a row that says
//! so, not a failure of the whole command (after a `kill -9` that is the
//! point of looking).

use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use crate::http;

/// The admin addresses `tandem up` gives its three nodes.
pub const UP_ADMINS_DEFAULT: &str = "127.0.0.1:7380,127.0.0.1:7390,127.0.0.1:7400";

/// Flags of `tandem status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Admin addresses of the nodes, comma-separated (one node is enough for
    /// the event log; list all for the table).
    #[arg(long = "admin", alias = "admin-addr", default_value = UP_ADMINS_DEFAULT, env = "TANDEM_ADMIN_ADDR")]
    admin: String,
    /// Print the nodes' `/status` documents and the events as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: crate::http::AdminTlsArgs,
}

/// One node's answer.
struct NodeStatus {
    addr: String,
    status: Result<Value, String>,
}

/// Runs `tandem status`.
pub fn run(args: StatusArgs) -> ExitCode {
    args.tls.install();
    let addrs = http::split_addrs(&args.admin);
    let nodes: Vec<NodeStatus> = addrs
        .iter()
        .map(|addr| NodeStatus {
            addr: addr.clone(),
            status: http::get(addr, "/status")
                .and_then(|b| serde_json::from_str(&b).map_err(|e| format!("{addr}/status: {e}"))),
        })
        .collect();
    let events = cluster_events(&addrs);
    let answered = nodes.iter().filter(|n| n.status.is_ok()).count();
    if args.json {
        let docs: Vec<Value> = nodes
            .iter()
            .map(|n| match &n.status {
                Ok(v) => v.clone(),
                Err(e) => serde_json::json!({ "admin_addr": n.addr, "error": e }),
            })
            .collect();
        let doc = serde_json::json!({ "nodes": docs, "events": events });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_table(&nodes, &events);
        print_events(&events);
    }
    if answered == 0 {
        eprintln!("error: no node answered at {}", args.admin);
        for n in &nodes {
            if let Err(e) = &n.status {
                eprintln!("  {}: {e}", n.addr);
            }
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The events of every node in `addrs` (each serves the replicated
/// cluster-wide log plus its own uncommitted events), merged by time.
pub fn cluster_events(addrs: &[String]) -> Vec<Value> {
    let mut events: Vec<Value> = Vec::new();
    for addr in addrs {
        if let Ok(Ok(list)) = http::get(addr, "/events").map(|b| serde_json::from_str::<Vec<Value>>(&b)) {
            events.extend(list);
        }
    }
    let key = |e: &Value| {
        (
            e["at_ms"].as_u64().unwrap_or(0),
            e["node"].as_u64().unwrap_or(0),
            e["kind"].as_str().unwrap_or("").to_string(),
            e["message"].as_str().unwrap_or("").to_string(),
        )
    };
    events.sort_by_key(key);
    events.dedup_by(|a, b| key(a) == key(b));
    events
}

fn lag_of(v: &Value) -> String {
    let r = &v["replication"];
    match v["role"].as_str() {
        Some("follower") => format!(
            "{} LSN / {} ms",
            r["lag_lsn"].as_u64().unwrap_or(0),
            r["staleness_ms"].as_u64().map_or("?".to_string(), |m| m.to_string())
        ),
        Some("leader") => {
            let worst = r["followers"].as_array().and_then(|f| f.iter().filter_map(|x| x["lag_lsn"].as_u64()).max());
            worst.map_or("-".to_string(), |w| format!("max {w} LSN"))
        }
        _ => "-".to_string(),
    }
}

fn archive_lag_of(v: &Value) -> String {
    let a = &v["archive"];
    if a.is_null() {
        return "-".to_string();
    }
    format!("{} LSN / {} ms", a["lag_lsn"].as_u64().unwrap_or(0), a["lag_ms"].as_u64().unwrap_or(0))
}

fn last_event_of(id: u64, events: &[Value]) -> String {
    events
        .iter()
        .rev()
        .find(|e| match e["subject"].as_u64() {
            Some(s) => s == id,
            None => e["node"].as_u64() == Some(id),
        })
        .map_or("-".to_string(), |e| format!("{} {}", e["at"].as_str().unwrap_or(""), e["kind"].as_str().unwrap_or("")))
}

fn print_table(nodes: &[NodeStatus], events: &[Value]) {
    let mut rows: Vec<[String; 7]> = vec![[
        "node".into(),
        "admin".into(),
        "role".into(),
        "epoch".into(),
        "lag".into(),
        "archive lag".into(),
        "last event".into(),
    ]];
    for n in nodes {
        rows.push(match &n.status {
            Ok(v) => {
                let id = v["node_id"].as_u64().unwrap_or(0);
                let mut role = v["role"].as_str().unwrap_or("?").to_string();
                if v["log_status"].as_str().is_some_and(|s| s != "ok") {
                    role.push_str(" (log failed)");
                }
                [
                    id.to_string(),
                    n.addr.clone(),
                    role,
                    v["epoch"].as_u64().unwrap_or(0).to_string(),
                    lag_of(v),
                    archive_lag_of(v),
                    last_event_of(id, events),
                ]
            }
            Err(e) => {
                let why = if e.contains("refused") { "down (connection refused)" } else { "unreachable" };
                ["?".into(), n.addr.clone(), why.into(), "-".into(), "-".into(), "-".into(), "-".into()]
            }
        });
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    for r in &rows {
        let line: Vec<String> = r.iter().zip(widths.iter()).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn print_events(events: &[Value]) {
    if events.is_empty() {
        println!("\nevents: none");
        return;
    }
    println!("\nevents (cluster-wide, oldest first):");
    for e in events {
        println!(
            "  {} [node {}] {}: {}",
            e["at"].as_str().unwrap_or(""),
            e["node"],
            e["kind"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        );
    }
}
