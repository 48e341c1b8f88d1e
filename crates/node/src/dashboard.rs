//! The live dashboard on the admin port: `GET /` serves one self-contained
//! page (HTML, CSS and JavaScript embedded in the binary: no build step, no
//! CDN), and `GET /dashboard/state` the JSON it polls every second.
//!
//! Owns what the page shows and the one document it reads: this node's role
//! and epoch, the cluster's members and leader (from the map), per-replica
//! lag (on the leader: every follower; on a follower: its own), the
//! keyspaces with their modes, the event log and the archive's RPO. The
//! page's switchover button posts to the existing `/switchover` after a
//! confirmation.
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
    Json(state_of(&shared))
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
        "status": status,
        "keyspaces": crate::keyspaces::list_json(shared)["keyspaces"].clone(),
        "events": events,
    })
}
