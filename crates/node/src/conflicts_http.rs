//! `GET /conflicts`: the conflict feed of the node's multi-leader (and
//! leaderless) keyspaces, as JSON, newest first.
//!
//! Query: `since=ID` (records with a higher id; ids increase per keyspace),
//! `count=N` (at most [`CONFLICTS_COUNT_MAX`]), `keyspace=NAME`. Owns only
//! the route; the feed lives in each keyspace's replica.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::server::Shared;

/// Most records one request returns.
pub const CONFLICTS_COUNT_MAX: usize = 10_000;

/// Records returned when `count` is not given.
pub const CONFLICTS_COUNT_DEFAULT: usize = 100;

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    since: u64,
    count: Option<usize>,
    keyspace: Option<String>,
}

/// The route, to merge into the admin router.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/conflicts", get(conflicts))
}

async fn conflicts(State(shared): State<Arc<Shared>>, Query(p): Query<Params>) -> Json<serde_json::Value> {
    let count = p.count.unwrap_or(CONFLICTS_COUNT_DEFAULT).min(CONFLICTS_COUNT_MAX);
    let items = crate::multi_leader::conflicts(&shared.engines, p.keyspace.as_deref(), p.since, count);
    Json(serde_json::json!({ "conflicts": items }))
}
