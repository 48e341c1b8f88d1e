//! The live dashboard on the admin port: `GET /` serves one self-contained
//! page (HTML, CSS and JavaScript embedded in the binary: no build step, no
//! CDN), and `GET /dashboard/state` the JSON it polls every second.
//!
//! Owns what the page shows and the one document it reads: this node's role
//! and epoch, the cluster's members and leader (from the map), every
//! replica's lag (`replicas`: on the leader from its own view of each
//! follower; on a follower of an automatic-failover cluster from a probe of
//! every member over the peer port, the same probe the failover
//! orchestrator sends, so every node's page shows every replica), the
//! keyspaces with their modes, the event log, the conflict feed (the same
//! ring `GET /conflicts` serves) and the archive's lag against its RPO
//! budget. The page's switchover button posts to the existing
//! `/switchover` after a confirmation.
//!
//! `/` itself carries no data and needs no token (a browser cannot send a
//! bearer header on navigation); the page asks for the admin token when the
//! node has one and sends it on every request. `/dashboard/state` is behind
//! the token like every other data route. This module only reads: it must
//! never change state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::server::Shared;

/// The page, embedded at build time.
const PAGE: &str = include_str!("dashboard.html");
/// Most events the state document carries (newest first).
const DASHBOARD_EVENTS_MAX: usize = 50;
/// Most conflict-feed records the state document carries (newest first).
pub const DASHBOARD_CONFLICTS_MAX: usize = 50;

/// `GET /` (the page). Mounted outside the token check.
pub fn page_routes() -> Router<Arc<Shared>> {
    Router::new().route("/", get(page))
}

/// `GET /dashboard/state`. Mounted behind the token check.
pub fn data_routes() -> Router<Arc<Shared>> {
    Router::new().route("/dashboard/state", get(state))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Everything the page needs is inline; it talks only to this node.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
        ],
        PAGE,
    )
}

async fn state(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    // Off the event loop: it takes the state lock (decision 0028).
    let mut doc = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || state_of(&shared)).await.unwrap_or_default()
    };
    let members: Vec<u64> =
        doc["members"].as_array().map(|m| m.iter().filter_map(|v| v.as_u64()).collect()).unwrap_or_default();
    let leader = doc["leader"].as_u64();
    doc["replicas"] = replicas_json(&shared, &doc["status"], &members, leader).await;
    Json(doc)
}

/// One row per member: its role, state and lag (entries and ms) as far as
/// this node can know it. On the leader, its own view of each follower
/// (what `/status` shows). Elsewhere, with automatic failover, a probe of
/// every member (its last LSN) measured against the leader's last LSN; the
/// time lag is then this node's commit time of the first entry the member
/// lacks (the leader's definition), `null` when that entry is no longer in
/// memory here. With static roles a follower knows only itself.
async fn replicas_json(
    shared: &Shared,
    status: &serde_json::Value,
    members: &[u64],
    leader: Option<u64>,
) -> serde_json::Value {
    use serde_json::json;
    let me = shared.config.node_id;
    let repl = &status["replication"];
    let now = crate::db::unix_ms();
    let mut rows = Vec::new();
    if status["role"] == "leader" {
        let followers = repl["followers"].as_array().cloned().unwrap_or_default();
        for &id in members {
            if id == me {
                rows.push(json!({ "id": id, "role": "leader", "state": "serving", "lag_lsn": 0, "lag_ms": 0, "source": "self" }));
            } else if let Some(f) = followers.iter().find(|f| f["id"].as_u64() == Some(id)) {
                rows.push(json!({ "id": id, "role": "follower", "state": f["state"], "lag_lsn": f["lag_lsn"], "lag_ms": f["lag_ms"], "source": "leader" }));
            } else {
                rows.push(json!({ "id": id, "role": "follower", "state": "not connected", "lag_lsn": null, "lag_ms": null, "source": "leader" }));
            }
        }
        return serde_json::Value::Array(rows);
    }
    let reports = match &shared.failover {
        Some(f) => f.probe(members).await,
        None => Default::default(),
    };
    let leader_last =
        leader.and_then(|l| reports.get(&l)).map(|r| r.last_lsn).or_else(|| repl["leader_last_lsn"].as_u64());
    for &id in members {
        let role = if Some(id) == leader {
            "leader"
        } else if id == me {
            status["role"].as_str().unwrap_or("unknown")
        } else {
            "follower"
        };
        if id == me && role == "follower" {
            rows.push(json!({ "id": id, "role": role, "state": repl["state"], "lag_lsn": repl["lag_lsn"], "lag_ms": repl["staleness_ms"], "source": "self" }));
            continue;
        }
        match reports.get(&id) {
            Some(r) => {
                let lag_lsn = leader_last.map(|l| l.saturating_sub(r.last_lsn));
                let lag_ms = match lag_lsn {
                    Some(0) => Some(0),
                    Some(_) => shared.db.commit_ms_of(r.last_lsn + 1).map(|c| now.saturating_sub(c)),
                    None => None,
                };
                let state = if Some(id) == leader {
                    if r.leading {
                        "serving"
                    } else {
                        "not leading"
                    }
                } else {
                    "answering"
                };
                rows.push(json!({ "id": id, "role": role, "state": state, "lag_lsn": lag_lsn, "lag_ms": lag_ms, "source": "probe" }));
            }
            None if shared.failover.is_some() => {
                rows.push(json!({ "id": id, "role": role, "state": "not answering", "lag_lsn": null, "lag_ms": null, "source": "probe" }));
            }
            None => {
                let state = if Some(id) == leader { "serving" } else { "static roles: see the leader's page" };
                let lag = if Some(id) == leader { json!(0) } else { serde_json::Value::Null };
                rows.push(
                    json!({ "id": id, "role": role, "state": state, "lag_lsn": lag, "lag_ms": lag, "source": "none" }),
                );
            }
        }
    }
    serde_json::Value::Array(rows)
}

/// The archive panel: how far the log archive is behind this node's log
/// (entries and ms), the RPO budget (`rpo_max_ms`, `null` when none is
/// set) and whether the lag is within it; `configured: false` without an
/// archive.
fn archive_json(status: &serde_json::Value) -> serde_json::Value {
    let a = &status["archive"];
    if a.is_null() {
        return serde_json::json!({ "configured": false });
    }
    let lag_ms = a["lag_ms"].as_u64().unwrap_or(0);
    let budget = a["rpo_max_ms"].as_u64().filter(|&b| b > 0);
    serde_json::json!({
        "configured": true,
        "repository": a["repository"],
        "archived_lsn": a["archived_lsn"],
        "last_lsn": a["last_lsn"],
        "lag_lsn": a["lag_lsn"],
        "lag_ms": lag_ms,
        "rpo_max_ms": budget,
        "within_budget": budget.map(|b| lag_ms <= b),
        "last_error": a["last_error"],
    })
}

/// The document the page polls.
pub fn state_of(shared: &Shared) -> serde_json::Value {
    let status = crate::admin::status_of(shared);
    let (members, leader, map_epoch) = match &shared.control {
        Some(cp) => {
            let map = cp.map().borrow().clone();
            (map.members.keys().copied().collect::<Vec<_>>(), map.leader, Some(map.epoch))
        }
        None => {
            let mut ids: Vec<u64> = shared.config.members.iter().map(|(id, _)| *id).collect();
            if ids.is_empty() {
                ids.push(shared.config.node_id);
            }
            let leader = shared.config.leader.or_else(|| shared.repl.is_leader().then_some(shared.config.node_id));
            (ids, leader, None)
        }
    };
    let status = serde_json::to_value(&status).expect("the status serializes");
    let mut events = crate::admin::events_of(shared);
    events.reverse();
    events.truncate(DASHBOARD_EVENTS_MAX);
    serde_json::json!({
        "now_ms": crate::db::unix_ms(),
        "node_id": shared.config.node_id,
        "automatic_failover": shared.control.is_some(),
        "admin_token_required": shared.config.admin_token.is_some(),
        "leader": leader,
        "map_epoch": map_epoch,
        "members": members,
        "archive": archive_json(&status),
        "status": status,
        "keyspaces": crate::keyspaces::list_json(shared)["keyspaces"].clone(),
        "events": events,
        "conflicts": crate::multi_leader::conflicts(&shared.engines, None, 0, DASHBOARD_CONFLICTS_MAX),
    })
}
