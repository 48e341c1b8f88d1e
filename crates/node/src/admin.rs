//! The admin HTTP endpoint: `/healthz`, `/status` (JSON), `/metrics`
//! (Prometheus text), `/faults` (link fault injection, only with
//! `fault_injection`) and `/cluster` (the control plane's map and
//! membership commands).
//!
//! With an admin token configured, every route but `/healthz` answers 401
//! unless the request carries `Authorization: Bearer <token>` (compared in
//! constant time); see docs/security.md.
//!
//! It reports, and it passes operator commands (faults, membership,
//! switchover, base backups through [`crate::backup_http`]) to the module
//! that owns them; it never changes data itself.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::faults::FaultSpec;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::server::{refresh_gauges, Shared};

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// This node's id.
    pub node_id: u64,
    /// `leader` (single node: always) or `follower`.
    pub role: &'static str,
    /// Current epoch.
    pub epoch: u64,
    /// Last appended LSN.
    pub last_lsn: u64,
    /// Leader commit time (unix ms) of the last LSN.
    pub last_commit_ms: u64,
    /// Last durable LSN.
    pub durable_lsn: u64,
    /// LSN covered by the newest snapshot.
    pub snapshot_lsn: u64,
    /// Keys held.
    pub keys: usize,
    /// Fsync policy.
    pub fsync: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Bytes in the data directory (log + snapshots).
    pub data_dir_bytes: u64,
    /// The data directory.
    pub data_dir: String,
    /// Client (RESP) address.
    pub client_addr: String,
    /// Open client connections.
    pub connections: i64,
    /// Log health: `ok`, or the error that stopped writes.
    pub log_status: String,
    /// Replication: on a leader its followers, on a follower its progress.
    pub replication: serde_json::Value,
    /// Log archiving to the backup repository (null when off).
    pub archive: serde_json::Value,
    /// Each multi-leader keyspace by name: per-origin progress and lag
    /// (the `state` that `GET /keyspaces` shows).
    pub multi_leader: serde_json::Map<String, serde_json::Value>,
}

/// Serves the admin endpoint until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    let tls = shared.tls.clone();
    let app = router(shared);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    let served = match tls {
        Some(tls) => axum::serve(crate::tls::HttpsListener::new(listener, tls), app).with_graceful_shutdown(stop).await,
        None => axum::serve(listener, app).with_graceful_shutdown(stop).await,
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "admin endpoint failed");
    }
}

/// Most peers one `POST /faults` may cut.
pub const FAULT_CUT_PEERS_MAX: usize = 64;
/// Largest delay `POST /faults` may inject, ms.
pub const FAULT_DELAY_MS_MAX: u64 = 60_000;
/// Largest `POST /faults` body, bytes.
const FAULT_BODY_BYTES_MAX: usize = 4096;

/// Every admin route, behind the token check (all but `/healthz`).
fn router(shared: Arc<Shared>) -> Router {
    let mut guarded = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/events", get(events))
        .route("/switchover", axum::routing::post(switchover))
        .route("/cluster", get(get_cluster))
        .route("/cluster/members", axum::routing::post(add_member))
        .route("/cluster/members/{id}", axum::routing::delete(remove_member))
        .merge(crate::backup_http::routes())
        .merge(crate::keyspaces::routes())
        .merge(crate::dashboard::data_routes())
        .merge(crate::conflicts_http::routes());
    if shared.config.fault_injection {
        guarded = guarded.route(
            "/faults",
            get(get_faults).post(set_faults).layer(axum::extract::DefaultBodyLimit::max(FAULT_BODY_BYTES_MAX)),
        );
    }
    let guarded = guarded.layer(axum::middleware::from_fn_with_state(shared.clone(), require_token));
    // A load balancer probes these without credentials; they reveal only
    // whether this node serves (and takes writes).
    // The dashboard page holds no data; it asks for the token itself.
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::dashboard::page_routes())
        .merge(guarded)
        .with_state(shared)
}

/// Refuses a request without the admin token (when one is configured).
async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(token) = &shared.config.admin_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !token_matches(token, given) {
            shared.metrics.error("admin_unauthorized");
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "this admin port needs the admin token: send Authorization: Bearer <token> (the tandem CLI sends \
                 --admin-token-file / TANDEM_ADMIN_TOKEN)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Constant-time comparison (the length is not secret).
fn token_matches(token: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    token.len() == given.len() && bool::from(token.as_bytes().ct_eq(given.as_bytes()))
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Builds the status document.
pub fn status_of(shared: &Shared) -> Status {
    let (keys, last_lsn, epoch, last_commit_ms) =
        shared.db.with_state(|s| (s.store.len(), s.last_lsn, s.epoch, s.last_commit_ms));
    let (role, replication) = replication_json(shared);
    Status {
        node_id: shared.config.node_id,
        role,
        epoch,
        last_lsn,
        last_commit_ms,
        durable_lsn: shared.db.durable_lsn(),
        snapshot_lsn: shared.db.last_snapshot().0,
        keys,
        fsync: shared.config.fsync.to_string(),
        uptime_seconds: shared.started.elapsed().as_secs(),
        data_dir_bytes: dir_bytes(&shared.config.data_dir),
        data_dir: shared.config.data_dir.display().to_string(),
        client_addr: shared.config.client_addr.to_string(),
        connections: shared.metrics.connections.get(),
        log_status: shared.db.log().failed().map_or_else(|| "ok".to_string(), |e| e.to_string()),
        replication,
        archive: shared.archive.as_ref().map_or(serde_json::Value::Null, |a| a.status_json(last_lsn, last_commit_ms)),
        multi_leader: crate::multi_leader::status_all(&shared.engines),
    }
}

fn replication_json(shared: &Shared) -> (&'static str, serde_json::Value) {
    use crate::repl::RoleView;
    match shared.repl.view() {
        RoleView::Leader { replicas } => {
            let d = shared.repl.default_durability();
            let followers: Vec<_> = replicas
                .iter()
                .map(|r| {
                    let s = &r.status;
                    serde_json::json!({
                        "id": s.id,
                        "client_addr": r.client_addr,
                        "state": s.state.as_str(),
                        "sent_lsn": s.sent_lsn,
                        "flushed_lsn": s.flushed_lsn,
                        "applied_lsn": s.applied_lsn,
                        "lag_lsn": s.lsn_lag,
                        "lag_ms": s.time_lag_ms,
                        "last_ack_ms": s.last_ack_ms,
                    })
                })
                .collect();
            let policy = serde_json::json!({
                "ack": d.policy.to_string(), "ack_level": d.level.to_string(), "ack_timeout_ms": d.timeout_ms,
            });
            ("leader", serde_json::json!({ "followers": followers, "default_ack_policy": policy }))
        }
        RoleView::Follower { status, leader_peer_addr } => (
            "follower",
            serde_json::json!({
                "state": status.state.as_str(),
                "leader_id": status.leader_id,
                "leader_client_addr": status.leader_client_addr,
                "leader_peer_addr": leader_peer_addr.to_string(),
                "flushed_lsn": status.flushed_lsn,
                "applied_lsn": status.applied_lsn,
                "leader_last_lsn": status.leader_last_lsn,
                "lag_lsn": status.lsn_lag,
                "staleness_ms": status.staleness_ms,
                "consistent_lsn": status.consistent_lsn,
            }),
        ),
        RoleView::Idle { reason } => ("idle", serde_json::json!({ "reason": reason })),
    }
}

/// Why this node cannot serve, if it cannot: its log failed, or it leads
/// without holding its lease (a partitioned leader). A node that is still
/// loading has no admin endpoint yet (it binds after recovery), which a
/// load balancer sees as down too.
pub fn unhealthy_reason(shared: &Shared) -> Option<String> {
    if let Some(e) = shared.db.log().failed() {
        return Some(format!("the log failed: {e}"));
    }
    // `is_leader`, not the role view: a leader without its lease is shown
    // as idle (it must not look like a master) but is still the one that
    // lost its lease.
    if shared.repl.is_leader() && shared.control.is_some() && !shared.repl.holds_lease() {
        return Some("this leader does not hold its lease (it cannot reach a majority)".into());
    }
    None
}

/// `GET /healthz`: 200 `ok` while the node serves; 503 with the reason when
/// its log failed or it leads without its lease.
async fn healthz(State(shared): State<Arc<Shared>>) -> (axum::http::StatusCode, String) {
    match unhealthy_reason(&shared) {
        None => (axum::http::StatusCode::OK, "ok\n".into()),
        Some(why) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")),
    }
}

/// `GET /readyz`: 200 when this node takes writes now (the leader, holding
/// its lease, log healthy, not paused); 503 with the reason otherwise.
async fn readyz(State(shared): State<Arc<Shared>>) -> (axum::http::StatusCode, String) {
    if let Some(why) = unhealthy_reason(&shared) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"));
    }
    match shared.repl.write_refusal().await {
        None => (axum::http::StatusCode::OK, "ready: takes writes\n".into()),
        Some(refusal) => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", refusal.to_error_text()))
        }
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> Result<Json<Status>, axum::http::StatusCode> {
    // On a blocking thread: it takes the state lock (held for seconds by a
    // large write) and walks the data directory; the event loop that
    // renews the lease must not wait for either (decision 0028).
    tokio::task::spawn_blocking(move || status_of(&shared))
        .await
        .map(Json)
        .map_err(|_| axum::http::StatusCode::INTERNAL_SERVER_ERROR)
}

/// `GET /events`: the cluster's event log (failovers, RTO, rollbacks,
/// switchovers, the bootstrap election) from the replicated cluster map,
/// merged with this node's own events not yet committed there; oldest first.
async fn events(State(shared): State<Arc<Shared>>) -> Json<Vec<crate::events::Event>> {
    Json(events_of(&shared))
}

/// The events `/events` serves.
pub fn events_of(shared: &Shared) -> Vec<crate::events::Event> {
    let replicated: Vec<crate::events::Event> = shared
        .control
        .as_ref()
        .map_or_else(Vec::new, |cp| cp.map().borrow().events.iter().map(crate::events::Event::from_cluster).collect());
    crate::events::merge([replicated, shared.repl.events.list()])
}

/// Query of `POST /switchover`.
#[derive(Debug, serde::Deserialize)]
struct SwitchoverQuery {
    to: u64,
    #[serde(default)]
    timeout_ms: u64,
}

/// `POST /switchover?to=N[&timeout_ms=T]`: moves leadership to node N with
/// zero writes lost (from any node of the cluster).
async fn switchover(
    State(shared): State<Arc<Shared>>,
    axum::extract::Query(q): axum::extract::Query<SwitchoverQuery>,
) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let Some(failover) = &shared.failover else {
        return (StatusCode::CONFLICT, "switchover needs automatic failover (members and no --leader)\n".into());
    };
    match failover.switchover(q.to, q.timeout_ms).await {
        Ok(tandem_core::failover::FailoverRpc::SwitchedOver { epoch, lsn, paused_ms }) => (
            StatusCode::OK,
            format!(
                "node {} leads epoch {epoch}; every write up to LSN {lsn} is on it; writes paused {paused_ms} ms\n",
                q.to
            ),
        ),
        Ok(other) => (StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}\n")),
        Err(e) => (StatusCode::CONFLICT, format!("switchover failed: {e}\n")),
    }
}

/// `GET /faults`: the injected link faults.
async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<FaultSpec> {
    Json(shared.repl.faults.spec())
}

/// `POST /faults` with a JSON `FaultSpec` (`{"cut":[2,3],"delay_ms":0}`,
/// or a per-peer one-way delay `{"delay_ms":{"2":100,"3":100}}`):
/// replaces the injected link faults; `{}` clears them.
async fn set_faults(State(shared): State<Arc<Shared>>, Json(spec): Json<FaultSpec>) -> axum::response::Response {
    if spec.cut.len() > FAULT_CUT_PEERS_MAX
        || spec.delay_ms_max() > FAULT_DELAY_MS_MAX
        || spec.delay_ms_by_peer.len() > FAULT_CUT_PEERS_MAX
    {
        let msg = format!(
            "a fault spec cuts at most {FAULT_CUT_PEERS_MAX} peers (FAULT_CUT_PEERS_MAX) and delays at most \
             {FAULT_DELAY_MS_MAX} ms (FAULT_DELAY_MS_MAX); got {} peers and {} ms",
            spec.cut.len(),
            spec.delay_ms_max()
        );
        return (axum::http::StatusCode::BAD_REQUEST, msg).into_response();
    }
    shared.repl.faults.set(&spec);
    Json(shared.repl.faults.spec()).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    // Off the loop: the gauges take the log's queue lock (decision 0028).
    let body = tokio::task::spawn_blocking(move || {
        refresh_gauges(&shared);
        crate::archive::refresh_metrics(&shared);
        shared.metrics.render()
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
}

/// `POST /cluster/members` body.
#[derive(Debug, serde::Deserialize)]
pub struct AddMember {
    /// The new node's id.
    pub id: u64,
    /// Its peer address.
    pub peer_addr: std::net::SocketAddr,
}

type ClusterReply = (axum::http::StatusCode, Json<serde_json::Value>);

fn control_of(shared: &Shared) -> Result<Arc<crate::control::ControlPlane>, ClusterReply> {
    shared.control.clone().ok_or_else(|| {
        let msg = "this node runs no control plane (it needs --members and no --leader)";
        (axum::http::StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": msg })))
    })
}

fn cluster_reply(result: Result<crate::control::ClusterMap, crate::control::ControlError>) -> ClusterReply {
    use crate::control::ControlError;
    match result {
        Ok(map) => (axum::http::StatusCode::OK, Json(serde_json::json!({ "map": map }))),
        Err(e) => {
            let code = match e {
                ControlError::UnknownMember(_) => axum::http::StatusCode::NOT_FOUND,
                ControlError::NoLeader | ControlError::Unreachable { .. } | ControlError::Cut { .. } => {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
                _ => axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            };
            (code, Json(serde_json::json!({ "error": e.to_string() })))
        }
    }
}

/// `GET /cluster`: the cluster map and this node's view of the Raft group.
async fn get_cluster(State(shared): State<Arc<Shared>>) -> ClusterReply {
    match control_of(&shared) {
        Ok(cp) => {
            let map = cp.map().borrow().clone();
            (axum::http::StatusCode::OK, Json(serde_json::json!({ "map": map, "status": cp.status() })))
        }
        Err(reply) => reply,
    }
}

/// `POST /cluster/members` with `{"id":4,"peer_addr":"127.0.0.1:7411"}`:
/// adds a node (learner, catch up, voter); answers the new map.
async fn add_member(State(shared): State<Arc<Shared>>, Json(req): Json<AddMember>) -> ClusterReply {
    match control_of(&shared) {
        Ok(cp) => cluster_reply(cp.add_member(req.id, req.peer_addr).await),
        Err(reply) => reply,
    }
}

/// `DELETE /cluster/members/{id}`: removes a node; answers the new map.
async fn remove_member(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<u64>,
) -> ClusterReply {
    match control_of(&shared) {
        Ok(cp) => cluster_reply(cp.remove_member(id).await),
        Err(reply) => reply,
    }
}
