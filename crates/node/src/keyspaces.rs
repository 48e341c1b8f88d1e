//! Keyspaces in the node: which definitions are in force, which keyspace a
//! command belongs to (and the ack policy that follows from it), and the
//! admin routes that list, create and drop keyspaces.
//!
//! Owns [`KeyspaceTable`]: the definitions in force, taken from the cluster
//! map (kept current by [`follow_map`]) or, on a node without a control
//! plane, from the config file's `[[keyspace]]` tables. What a keyspace is
//! and how keys are routed is decided in `tandem_core::keyspace`; this
//! module must not re-decide it, and must never hold the database lock
//! while it waits (counting a keyspace's keys scans in short steps).
//!
//! All single-leader keyspaces of a node share its log, leader and epoch
//! (docs/decisions/0010-keyspaces.md); what differs per keyspace is the ack
//! policy a write waits for.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use bytes::Bytes;
use parking_lot::RwLock;
use serde::Deserialize;
use tandem_core::command::CommandSpec;
use tandem_core::keyspace::{
    self, ConflictPolicy, CrossKeyspace, KeyspaceDef, Keyspaces, Mode, ModeOptions, DEFAULT_KEYSPACE,
};
use tandem_core::repl::{AckLevel, AckPolicy, Durability};
use tokio::sync::watch;

use crate::control::{ClusterMap, ControlCmd, ControlPlane, ControlResp};
use crate::server::Shared;

/// Keys examined per lock hold while counting a keyspace's keys.
const COUNT_SCAN_STEP: usize = 1024;
/// How long a node keeps trying to seed the map with its config file's
/// keyspaces while the control plane has no leader yet.
const SEED_RETRY_FOR: Duration = Duration::from_secs(60);

/// The keyspaces in force on this node, with each one's durability resolved
/// against the node's configuration.
pub struct KeyspaceTable {
    current: RwLock<Arc<Resolved>>,
    /// False while only `default` exists: routing is then skipped entirely.
    any: AtomicBool,
    node_default: Durability,
}

/// One consistent set of keyspaces.
pub struct Resolved {
    /// The router.
    pub router: Keyspaces,
    /// Each keyspace's durability (node configuration filled in).
    pub durability: BTreeMap<String, Durability>,
}

/// Where a command goes: its keyspace (`None`: default) and the durability
/// its writes wait for unless the connection overrides it.
pub struct Route {
    /// The keyspace's name; `None` for `default`.
    pub keyspace: Option<String>,
    /// Its durability; `None` for `default` (the node's own) and for
    /// keyspaces that are not single-leader.
    pub durability: Option<Durability>,
    /// False when the keyspace is multi-leader or leaderless: the command
    /// goes to that keyspace's engine (`crate::engines`), not the shared
    /// log and store.
    pub single_leader: bool,
}

impl KeyspaceTable {
    /// A table holding `defs`, with policies resolved against `node_default`.
    pub fn new(defs: Vec<KeyspaceDef>, node_default: Durability) -> Result<KeyspaceTable, String> {
        let router = Keyspaces::new(defs).map_err(|e| e.to_string())?;
        let table = KeyspaceTable {
            current: RwLock::new(Arc::new(Resolved { router: Keyspaces::default(), durability: BTreeMap::new() })),
            any: AtomicBool::new(false),
            node_default,
        };
        table.set(router);
        Ok(table)
    }

    /// Puts `router` in force.
    pub fn set(&self, router: Keyspaces) {
        let durability = router
            .defs()
            .into_iter()
            .filter_map(|d| match &d.mode {
                Mode::SingleLeader(p) => Some((d.name.clone(), p.durability(&self.node_default))),
                _ => None,
            })
            .collect();
        let any = !router.is_empty();
        *self.current.write() = Arc::new(Resolved { router, durability });
        self.any.store(any, Ordering::Release);
    }

    /// The keyspaces in force now.
    pub fn current(&self) -> Arc<Resolved> {
        self.current.read().clone()
    }

    /// The node's own durability (the `default` keyspace's).
    pub fn node_default(&self) -> &Durability {
        &self.node_default
    }

    /// Routes a command by its key arguments; refuses one whose keys span
    /// keyspaces. The fast path (only `default`) takes no lock.
    pub fn route(&self, spec: &CommandSpec, args: &[Bytes]) -> Result<Route, CrossKeyspace> {
        if !self.any.load(Ordering::Acquire) || !spec.has_keys() {
            return Ok(Route { keyspace: None, durability: None, single_leader: true });
        }
        let current = self.current();
        let def = current.router.route(spec.keys(args))?;
        Ok(match def {
            None => Route { keyspace: None, durability: None, single_leader: true },
            Some(d) => Route {
                keyspace: Some(d.name.clone()),
                durability: current.durability.get(&d.name).cloned(),
                single_leader: d.mode.is_single_leader(),
            },
        })
    }
}

/// Keeps `table` equal to the keyspaces of the control plane's map, and
/// `engines` running for its multi-leader and leaderless keyspaces.
pub async fn follow_map(
    table: Arc<KeyspaceTable>,
    engines: Arc<crate::engines::Engines>,
    mut map: watch::Receiver<ClusterMap>,
) {
    loop {
        let router = map.borrow_and_update().keyspace_router();
        if router != table.current().router {
            tracing::info!(keyspaces = router.defs().len(), "keyspaces changed");
            engines.sync(&router);
            table.set(router);
        }
        if map.changed().await.is_err() {
            return;
        }
    }
}

/// Proposes the config file's keyspaces that the map lacks (a cluster's
/// static definitions), retrying while the control plane has no leader.
/// A keyspace the map already holds with another definition is left as the
/// map has it, with a warning: the map is the source of truth.
pub async fn seed_map(control: Arc<ControlPlane>, defs: Vec<KeyspaceDef>) {
    let started = tokio::time::Instant::now();
    let mut pending = defs;
    while !pending.is_empty() && started.elapsed() < SEED_RETRY_FOR {
        let map = control.map().borrow().clone();
        pending.retain(|def| match map.keyspaces.get(&def.name) {
            Some(existing) if existing == def => false,
            Some(_) => {
                tracing::warn!(
                    keyspace = def.name.as_str(),
                    "the config file defines this keyspace differently from the cluster map; the map's definition is in force"
                );
                false
            }
            None => true,
        });
        let Some(def) = pending.first().cloned() else { break };
        match control.propose(ControlCmd::CreateKeyspace(def.clone())).await {
            Ok(ControlResp::Applied(_)) => {
                tracing::info!(keyspace = def.name.as_str(), "keyspace from the config file added to the cluster map");
                pending.remove(0);
            }
            Ok(ControlResp::Rejected { reason, .. }) => {
                tracing::warn!(
                    keyspace = def.name.as_str(),
                    reason,
                    "the cluster map refused a keyspace from the config file"
                );
                pending.remove(0);
            }
            Err(e) => {
                tracing::debug!(error = %e, "seeding keyspaces: no control-plane leader yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The admin routes: `GET /keyspaces`, `POST /keyspaces`,
/// `DELETE /keyspaces/{name}[?force=true]`.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/keyspaces", get(list).post(create)).route("/keyspaces/{name}", delete(drop_keyspace))
}

fn policy_json(d: &Durability) -> serde_json::Value {
    serde_json::json!({ "ack": d.policy.to_string(), "ack_level": d.level.to_string(), "ack_timeout_ms": d.timeout_ms })
}

/// The JSON of a keyspace that is not single-leader: its definition and
/// its engine's state on this node.
fn engine_keyspace_json(shared: &Shared, def: &KeyspaceDef) -> serde_json::Value {
    let policy = match &def.mode {
        Mode::SingleLeader(_) => serde_json::Value::Null,
        Mode::MultiLeader(p) => serde_json::json!({ "conflict": p.conflict.name() }),
        Mode::Leaderless(p) => serde_json::json!({
            "n": p.n, "w": p.w, "r": p.r, "sloppy": p.sloppy, "conflict": p.conflict.name(),
        }),
    };
    let state = match shared.engines.get(&def.name) {
        Some(engine) => engine.status(),
        None => serde_json::json!({ "error": "this node runs no replica of the keyspace (see its log)" }),
    };
    serde_json::json!({
        "name": def.name,
        "prefix": String::from_utf8_lossy(&def.prefix),
        "mode": def.mode.name(),
        "policy": policy,
        "state": state,
    })
}

/// The JSON of one keyspace: definition, policy in force and this node's
/// view of its mode's state.
fn def_json(shared: &Shared, def: &KeyspaceDef) -> serde_json::Value {
    if !def.mode.is_single_leader() {
        return engine_keyspace_json(shared, def);
    }
    let current = shared.keyspaces.current();
    let d = current.durability.get(&def.name).cloned().unwrap_or_else(|| shared.keyspaces.node_default().clone());
    keyspace_json(shared, &def.name, &def.prefix, &d)
}

/// The JSON of one single-leader keyspace.
fn keyspace_json(shared: &Shared, name: &str, prefix: &[u8], durability: &Durability) -> serde_json::Value {
    // Lock-free mirrors (decision 0028).
    let (last_lsn, epoch) = (shared.db.last_lsn(), shared.db.epoch());
    let leader = match &shared.control {
        Some(c) => c.map().borrow().leader,
        None => shared.repl.is_leader().then_some(shared.config.node_id),
    };
    serde_json::json!({
        "name": name,
        "prefix": String::from_utf8_lossy(prefix),
        "mode": "single-leader",
        "policy": policy_json(durability),
        "state": {
            "leader": leader,
            "epoch": epoch,
            "last_lsn": last_lsn,
            "role": if shared.repl.is_leader() { "leader" } else { "follower" },
        },
    })
}

/// Every keyspace, `default` first.
pub fn list_json(shared: &Shared) -> serde_json::Value {
    let current = shared.keyspaces.current();
    let mut out = vec![keyspace_json(shared, DEFAULT_KEYSPACE, b"", shared.keyspaces.node_default())];
    for def in current.router.defs() {
        out.push(def_json(shared, def));
    }
    serde_json::json!({
        "node_id": shared.config.node_id,
        "source": if shared.control.is_some() { "cluster map" } else { "config file" },
        "keyspaces": out,
    })
}

async fn list(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(list_json(&shared))
}

/// The body of `POST /keyspaces` (what `tandem keyspace create` sends).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// The keyspace's name.
    pub name: String,
    /// Its key prefix.
    pub prefix: String,
    /// `single-leader`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Ack policy text (`async`, `any k`, `first k (..)`, `all`); none: the
    /// node's configuration.
    pub ack: Option<String>,
    /// `flush` or `apply`; none: the node's configuration.
    pub ack_level: Option<String>,
    /// Multi-leader and leaderless: `lww`, `siblings` or `crdt`.
    #[serde(default)]
    pub conflict: Option<String>,
    /// Leaderless: replicas per key.
    #[serde(default)]
    pub n: Option<u8>,
    /// Leaderless: write quorum.
    #[serde(default)]
    pub w: Option<u8>,
    /// Leaderless: read quorum.
    #[serde(default)]
    pub r: Option<u8>,
    /// Leaderless: sloppy quorum with hinted handoff.
    #[serde(default)]
    pub sloppy: bool,
}

fn default_mode() -> String {
    "single-leader".into()
}

type Reply = (StatusCode, Json<serde_json::Value>);

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    (status, Json(serde_json::json!({ "error": message.into() })))
}

/// Builds and checks a definition (the parts that need no map).
pub fn definition(req: &CreateRequest) -> Result<KeyspaceDef, String> {
    let ack = req.ack.as_deref().map(str::parse::<AckPolicy>).transpose().map_err(|e| e.to_string())?;
    let ack_level = req.ack_level.as_deref().map(str::parse::<AckLevel>).transpose().map_err(|e| e.to_string())?;
    let conflict = req.conflict.as_deref().map(str::parse::<ConflictPolicy>).transpose().map_err(|e| e.to_string())?;
    let options = ModeOptions { ack, ack_level, conflict, n: req.n, w: req.w, r: req.r, sloppy: req.sloppy };
    let mode = keyspace::parse_mode(&req.mode, options).map_err(|e| e.to_string())?;
    // Refused here, at create time, rather than by an engine that then
    // cannot start on any node.
    if let Mode::Leaderless(p) = &mode {
        if p.conflict != ConflictPolicy::Lww {
            return Err(format!(
                "conflict policy {} is not built for leaderless keyspaces in this version (only lww; siblings and \
                 crdt work in multi-leader keyspaces)",
                p.conflict
            ));
        }
    }
    let def = KeyspaceDef { name: req.name.clone(), prefix: Bytes::copy_from_slice(req.prefix.as_bytes()), mode };
    Keyspaces::new([def.clone()]).map_err(|e| e.to_string())?;
    Ok(def)
}

/// Refuses a policy the cluster's members cannot meet (e.g. `any 3` with
/// two followers, whoever leads; a leaderless N above the member count).
fn check_policy_against_members(def: &KeyspaceDef, map: &ClusterMap) -> Result<(), String> {
    let p = match &def.mode {
        Mode::SingleLeader(p) => p,
        Mode::MultiLeader(_) => return Ok(()),
        Mode::Leaderless(p) => {
            let members = map.members.len();
            if usize::from(p.n) > members {
                return Err(format!(
                    "keyspace {:?}: N={} replicas per key but the cluster has {members} members",
                    def.name, p.n
                ));
            }
            return Ok(());
        }
    };
    let Some(policy) = &p.ack else { return Ok(()) };
    for leader in map.members.keys() {
        let followers: Vec<u64> = map.members.keys().copied().filter(|id| id != leader).collect();
        policy.validate(&followers).map_err(|e| format!("keyspace {:?}: {e}", def.name))?;
    }
    Ok(())
}

async fn create(State(shared): State<Arc<Shared>>, Json(req): Json<CreateRequest>) -> Reply {
    let def = match definition(&req) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Some(control) = shared.control.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this node runs without a control plane (standalone or --leader): define keyspaces in its config file \
             ([[keyspace]] tables) and restart it",
        );
    };
    if let Err(e) = check_policy_against_members(&def, &control.map().borrow()) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    match control.propose(ControlCmd::CreateKeyspace(def.clone())).await {
        Ok(ControlResp::Applied(map)) => {
            let router = map.keyspace_router();
            shared.engines.sync(&router);
            shared.keyspaces.set(router);
            let mut body = def_json(&shared, &def);
            if let Mode::Leaderless(p) = &def.mode {
                if p.reads_may_be_stale() {
                    body["warning"] = serde_json::json!(format!(
                        "W + R <= N ({} + {} <= {}): a read need not overlap the latest acknowledged write, so \
                         reads may be stale",
                        p.w, p.r, p.n
                    ));
                }
            }
            (StatusCode::CREATED, Json(body))
        }
        Ok(ControlResp::Rejected { reason, .. }) => error(StatusCode::CONFLICT, reason),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the control plane did not commit the change: {e}")),
    }
}

/// Query of `DELETE /keyspaces/{name}`.
#[derive(Debug, Deserialize)]
pub struct DropQuery {
    /// Drop even if the keyspace holds keys (they fall back to `default`).
    #[serde(default)]
    pub force: bool,
}

/// Counts this node's keys that belong to keyspace `name`, scanning in
/// short lock holds.
pub async fn count_keys(shared: &Shared, router: &Keyspaces, name: &str) -> u64 {
    if let Some(engine) = shared.engines.get(name) {
        return engine.key_count();
    }
    let mut cursor = 0;
    let mut count = 0u64;
    loop {
        let now_ms = crate::db::unix_ms();
        cursor = shared.db.with_state(|s| {
            s.store.scan(cursor, COUNT_SCAN_STEP, now_ms, |key| {
                if router.key_in(key, name) {
                    count += 1;
                }
            })
        });
        if cursor == 0 {
            return count;
        }
        tokio::task::yield_now().await;
    }
}

async fn drop_keyspace(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Query<DropQuery>,
) -> Reply {
    let Some(control) = shared.control.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this node runs without a control plane: remove the keyspace from its config file and restart it",
        );
    };
    let router = control.map().borrow().keyspace_router();
    if router.get(&name).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no keyspace named {name:?}"));
    }
    let keys = count_keys(&shared, &router, &name).await;
    if keys > 0 && !q.force {
        return error(
            StatusCode::CONFLICT,
            format!(
                "keyspace {name:?} holds {keys} keys on node {}; drop it with --force (its keys then belong to the \
                 keyspace their prefix matches next, usually 'default'), or delete them first",
                shared.config.node_id
            ),
        );
    }
    match control.propose(ControlCmd::DropKeyspace { name: name.clone() }).await {
        Ok(ControlResp::Applied(map)) => {
            let router = map.keyspace_router();
            shared.engines.sync(&router);
            shared.keyspaces.set(router);
            (StatusCode::OK, Json(serde_json::json!({ "dropped": name, "keys": keys })))
        }
        Ok(ControlResp::Rejected { reason, .. }) => error(StatusCode::CONFLICT, reason),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("the control plane did not commit the change: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_default() -> Durability {
        Durability { policy: AckPolicy::Async, level: AckLevel::Flush, timeout_ms: 1000 }
    }

    #[test]
    fn a_write_routes_to_its_keyspace_policy_and_default_keys_keep_the_node_policy() {
        let req = CreateRequest {
            name: "inventory".into(),
            prefix: "inv:".into(),
            mode: "single-leader".into(),
            ack: Some("any 2".into()),
            ack_level: Some("apply".into()),
            ..CreateRequest::default()
        };
        let table = KeyspaceTable::new(vec![definition(&req).unwrap()], node_default()).unwrap();
        let set = tandem_core::command::lookup(b"set").unwrap();
        let args =
            |k: &str| vec![Bytes::from_static(b"set"), Bytes::copy_from_slice(k.as_bytes()), Bytes::from_static(b"v")];
        let r = table.route(set, &args("inv:1")).unwrap();
        assert_eq!(r.keyspace.as_deref(), Some("inventory"));
        assert_eq!(r.durability.unwrap().policy, AckPolicy::Any(2));
        let r = table.route(set, &args("other")).unwrap();
        assert!(r.keyspace.is_none() && r.durability.is_none());
        let mset = tandem_core::command::lookup(b"mset").unwrap();
        let args: Vec<Bytes> =
            ["mset", "inv:1", "a", "x", "b"].iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect();
        assert!(table.route(mset, &args).is_err());
    }

    #[test]
    fn a_leaderless_keyspace_with_a_conflict_policy_it_lacks_is_refused_at_create() {
        let mut req = CreateRequest {
            name: "votes".into(),
            prefix: "v:".into(),
            mode: "leaderless".into(),
            conflict: Some("siblings".into()),
            ..CreateRequest::default()
        };
        assert!(definition(&req).unwrap_err().contains("not built for leaderless"));
        req.conflict = Some("lww".into());
        assert!(definition(&req).is_ok());
        req.mode = "multi-leader".into();
        req.conflict = Some("siblings".into());
        assert!(definition(&req).is_ok());
    }

    #[test]
    fn a_bad_keyspace_request_is_refused_with_the_reason() {
        let mut req =
            CreateRequest { name: "x".into(), prefix: "x:".into(), mode: "ring".into(), ..CreateRequest::default() };
        assert!(definition(&req).unwrap_err().contains("unknown mode"));
        req.mode = "single-leader".into();
        req.ack = Some("most".into());
        assert!(definition(&req).is_err());
        req.ack = None;
        req.prefix = String::new();
        assert!(definition(&req).unwrap_err().contains("prefix"));
    }
}
