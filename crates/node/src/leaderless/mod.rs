//! Leaderless keyspaces in the node: any node coordinates a request to any
//! key of the keyspace over its preference list of N replicas.
//!
//! Owns the I/O around the pure logic of
//! `tandem_core::replica::leaderless`: the keyspace's replica file
//! ([`log`], under `<data_dir>/keyspaces/<name>/`), peer connections (a
//! small pool per peer opened with [`crate::engines::dial`], one request
//! and one answer at a time on each), the client commands (GET, SET with
//! EX/PX/EXAT/PXAT, DEL, EXISTS, INCR/INCRBY/DECR/DECRBY), read repair,
//! the anti-entropy loop (Merkle roots, then leaves, then the versions of
//! the keys of differing leaves, then only the differing keys), hinted
//! handoff, and rebalancing (when the members change, the records whose
//! preference list gained a node are streamed to it, rate-limited, and the
//! records this node no longer owns are forgotten once every new owner made
//! them durable). It decides nothing itself: placement, quorum decisions, newest
//! version, repair targets and which overwrites discard a concurrent
//! version (the conflict feed, `GET /conflicts`) come from the core. It must never hold a
//! lock across an await, and never acknowledge a write before this node's
//! copy of it is as durable as `--fsync` promises.

pub mod log;
mod metrics;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::peer_auth::PeerStream;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tandem_core::command::CommandSpec;
use tandem_core::keyspace::{ConflictPolicy, KeyspaceDef, LeaderlessPolicy, Mode};
use tandem_core::repl::{NodeId, PeerMsg};
use tandem_core::replica::leaderless::feed::FeedItem;
use tandem_core::replica::leaderless::merkle::{self, Merkle};
use tandem_core::replica::leaderless::rebalance::REBALANCE_BATCH_KEYS;
use tandem_core::replica::leaderless::store::HINTS_MAX;
use tandem_core::replica::leaderless::{
    Clock, ConflictFeed, Hints, ReadCoordinator, ReadOutcome, Rebalance, Record, ReplicaStore, Ring, Seen, Version,
    WriteCoordinator, WriteOutcome,
};
use tandem_core::resp::Frame;
use tokio::sync::{mpsc, watch};

use self::log::{Entry, ReplicaLog};
pub use self::metrics::LeaderlessMetrics;
use crate::connection::ClientState;
use crate::engines::{dial, BoxFuture, Engine, EngineEnv};
use crate::metrics::ConflictLabel;
use crate::repl::wire;

/// How long a coordinator waits for W acks (R replies) before it answers
/// `-NOQUORUM` with the count it has.
pub const QUORUM_TIMEOUT_MS: u64 = 2_000;
/// Idle connections kept per peer.
const POOL_PER_PEER_MAX: usize = 8;
/// Keys exchanged with one peer in one anti-entropy round at most (the
/// rate limit): the rest waits for the next round.
pub const AE_KEYS_PER_ROUND_MAX: usize = 10_000;
/// Keys (and records) per anti-entropy or handoff message.
const AE_BATCH_KEYS: usize = 256;
/// Bytes of records per anti-entropy or handoff message, about.
const AE_BATCH_BYTES: usize = 4 << 20;
/// How often hints are offered back to their owners.
const HINT_HANDOFF_INTERVAL_MS: u64 = 1_000;
/// The keys a command may name at most (DEL / EXISTS): each is one quorum
/// read.
const KEYS_PER_COMMAND_MAX: usize = 1_000;

/// Keys streamed to new owners per second at most, per keyspace and node
/// (the rebalancing rate limit).
pub const REBALANCE_KEYS_PER_SECOND_MAX: u64 = 20_000;
/// How long rebalancing waits before it retries a new owner that failed.
const REBALANCE_RETRY_MS: u64 = 1_000;

/// The commands a leaderless keyspace answers.
const SUPPORTED: &str = "GET, SET [EX|PX|EXAT|PXAT], DEL, UNLINK, EXISTS, INCR, INCRBY, DECR, DECRBY";

/// One message between replicas of a leaderless keyspace: each request has
/// exactly one answer on the same connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Msg {
    /// Make `rec` durable here (as a hint for `hint_for` when set).
    Write { rec: Record, hint_for: Option<NodeId> },
    /// Answer to `Write` and `Push`.
    Ack { ok: bool, error: String },
    /// Your record of `key`.
    Read { key: Bytes },
    /// Answer to `Read`.
    ReadReply { rec: Option<Record> },
    /// Your Merkle tree over the keys both you and `with` replicate: its
    /// root and leaves.
    Tree { with: NodeId },
    /// Answer to `Tree`.
    TreeReply { root: u64, leaves: Vec<u64> },
    /// Your `(key, version)` of the keys both replicate in these leaves.
    Versions { with: NodeId, leaves: Vec<u32> },
    /// Answer to `Versions`.
    VersionsReply { entries: Vec<(Bytes, Version)> },
    /// Your records of these keys.
    Fetch { keys: Vec<Bytes> },
    /// Answer to `Fetch`.
    Records { recs: Vec<Record> },
    /// Apply these records (anti-entropy push, hint handoff).
    Push { recs: Vec<Record> },
}

/// Starts the replica of leaderless keyspace `def` on this node: replays
/// its file, then runs anti-entropy and hinted handoff in the background.
pub fn start(env: &EngineEnv, def: &KeyspaceDef) -> Result<Arc<dyn Engine>, String> {
    let Mode::Leaderless(policy) = &def.mode else {
        return Err(format!("keyspace {:?} is not leaderless", def.name));
    };
    if policy.conflict != ConflictPolicy::Lww {
        return Err(format!(
            "keyspace {:?}: conflict policy {} is not built for leaderless keyspaces in this version (only lww); redefine it with --conflict lww",
            def.name, policy.conflict
        ));
    }
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| e.to_string())?;
    let dir = env.dir_of(&def.name);
    let (log, entries, torn) = ReplicaLog::open(&dir, env.fsync).map_err(|e| e.to_string())?;
    if torn > 0 {
        tracing::warn!(keyspace = def.name.as_str(), path = %log.path().display(), bytes = torn, "cut a torn tail off the replica file");
    }
    let mut state = State {
        store: ReplicaStore::new(),
        hints: Hints::new(),
        clock: Clock::new(env.node_id),
        balanced: None,
        rebalance_pending: 0,
        feed: ConflictFeed::new(),
    };
    for e in entries {
        match e {
            Entry::Record(rec) => {
                state.clock.observe(rec.version);
                state.store.apply(rec);
            }
            Entry::Hint { owner, rec } => {
                let _ = state.hints.store(owner, rec);
            }
            Entry::HintDelivered { owner, key, version } => state.hints.delivered(owner, &key, version),
            Entry::Forget { key, version } => {
                state.store.forget(&key, version);
            }
            Entry::Balanced { members } => state.balanced = Some(members),
        }
    }
    let (stop_tx, _) = watch::channel(false);
    let inner = Arc::new(Inner {
        env: env.clone(),
        name: def.name.clone(),
        policy: policy.clone(),
        state: Mutex::new(state),
        log: Mutex::new(log),
        pool: Mutex::new(BTreeMap::new()),
        ring: Mutex::new(Arc::new(Ring::new([]))),
        started: Instant::now(),
        stop_tx,
        metrics: env.metrics.leaderless.clone(),
    });
    runtime.spawn(inner.clone().anti_entropy_loop());
    runtime.spawn(inner.clone().handoff_loop());
    runtime.spawn(inner.clone().rebalance_loop());
    Ok(Arc::new(LeaderlessEngine { inner }))
}

/// The engine of one leaderless keyspace.
struct LeaderlessEngine {
    inner: Arc<Inner>,
}

/// What the engine's tasks share.
struct Inner {
    env: EngineEnv,
    name: String,
    policy: LeaderlessPolicy,
    state: Mutex<State>,
    log: Mutex<ReplicaLog>,
    pool: Mutex<BTreeMap<NodeId, Vec<(PeerStream, BytesMut)>>>,
    ring: Mutex<Arc<Ring>>,
    started: Instant,
    stop_tx: watch::Sender<bool>,
    metrics: LeaderlessMetrics,
}

/// This node's replica data.
struct State {
    store: ReplicaStore,
    hints: Hints,
    clock: Clock,
    /// The members this node last finished rebalancing for (from the
    /// replica file; `None`: never yet).
    balanced: Option<Vec<NodeId>>,
    /// `(key, new owner)` transfers still to make (for `GET /keyspaces`).
    rebalance_pending: usize,
    /// Concurrent versions this replica discarded (in memory: a restart
    /// starts an empty feed, as in multi-leader keyspaces).
    feed: ConflictFeed,
}

/// Wall-clock ms: versions and expiry times are compared across nodes.
fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn err(text: impl Into<String>) -> Frame {
    Frame::Error(text.into())
}

impl Engine for LeaderlessEngine {
    fn execute<'a>(
        &'a self,
        client: &'a mut ClientState,
        spec: &'static CommandSpec,
        args: &'a [Bytes],
    ) -> BoxFuture<'a, Frame> {
        let consistency = client.consistency;
        Box::pin(self.inner.clone().execute(consistency, spec.name, args))
    }

    fn serve_peer(self: Arc<Self>, stream: PeerStream, buf: BytesMut, peer: NodeId) -> BoxFuture<'static, ()> {
        Box::pin(self.inner.clone().serve_peer(stream, buf, peer))
    }

    fn status(&self) -> serde_json::Value {
        let st = self.inner.state.lock();
        let p = &self.inner.policy;
        serde_json::json!({
            "node": self.inner.env.node_id,
            "keys": st.store.live_count(wall_ms()),
            "records": st.store.len(),
            "digest": format!("{:016x}", st.store.digest()),
            "hints": st.hints.len(),
            "rebalance_pending": st.rebalance_pending,
            "balanced_for": st.balanced,
            "n": p.n, "w": p.w, "r": p.r, "sloppy": p.sloppy,
            "conflict": p.conflict.name(),
            "conflicts_total": st.feed.total(),
            "log_bytes": self.inner.log.lock().bytes(),
        })
    }

    fn key_count(&self) -> u64 {
        self.inner.state.lock().store.live_count(wall_ms())
    }

    fn stop(&self) {
        self.inner.stop_tx.send_replace(true);
    }

    fn conflicts(&self, since: u64, count: usize) -> Vec<serde_json::Value> {
        let st = self.inner.state.lock();
        st.feed.since(since, count).map(|i| feed_json(&self.inner.name, i)).collect()
    }
}

/// One feed item as `GET /conflicts` shows it (the multi-leader format).
fn feed_json(keyspace: &str, item: &FeedItem) -> serde_json::Value {
    let r = &item.record;
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    serde_json::json!({
        "id": item.id,
        "at_ms": item.at_ms,
        "keyspace": keyspace,
        "key": text(&r.key),
        "field": r.field.as_ref().map(text),
        "policy": r.policy.name(),
        "outcome": r.outcome.name(),
        "versions": r.versions.iter().map(|v| serde_json::json!({
            "origin": v.origin,
            "hlc": format!("{}.{}@{}", v.hlc.physical_ms, v.hlc.logical, v.hlc.node),
            "value": v.value.as_ref().map(text),
            "truncated": v.truncated,
            "kept": v.kept,
        })).collect::<Vec<_>>(),
    })
}

impl Inner {
    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn stopped(&self) -> bool {
        *self.stop_tx.borrow() || *self.env.shutdown.borrow()
    }

    /// The ring over the current members (rebuilt when they change).
    fn ring(&self) -> Arc<Ring> {
        let members: Vec<NodeId> = self.env.peers.borrow().keys().copied().collect();
        let mut ring = self.ring.lock();
        if ring.members() != members.as_slice() {
            *ring = Arc::new(Ring::new(members));
        }
        ring.clone()
    }

    // ---- client commands ----

    async fn execute(self: Arc<Self>, consistency: Option<(u8, u8)>, name: &str, args: &[Bytes]) -> Frame {
        let n = self.policy.n;
        let (w, r) = consistency.unwrap_or((self.policy.w, self.policy.r));
        if w > n || r > n {
            return err(format!(
                "ERR CONSISTENCY W {w} R {r} exceeds keyspace '{}' N {n}: use CONSISTENCY RESET or smaller values",
                self.name
            ));
        }
        let keys = args.len().saturating_sub(1);
        if keys > KEYS_PER_COMMAND_MAX {
            return err(format!(
                "ERR {keys} keys in one command on leaderless keyspace '{}': at most {KEYS_PER_COMMAND_MAX}",
                self.name
            ));
        }
        match name {
            "get" => match self.quorum_read(args[1].clone(), r).await {
                Ok(rec) => rec.and_then(|r| r.live_value(wall_ms()).cloned()).map_or(Frame::Null, Frame::Bulk),
                Err(e) => err(e),
            },
            "set" => self.cmd_set(args, w).await,
            "del" | "unlink" => self.cmd_del(&args[1..], w, r).await,
            "exists" => {
                let mut count = 0;
                for key in &args[1..] {
                    match self.quorum_read(key.clone(), r).await {
                        Ok(rec) => count += i64::from(rec.is_some_and(|r| r.live_value(wall_ms()).is_some())),
                        Err(e) => return err(e),
                    }
                }
                Frame::Integer(count)
            }
            "incr" => self.cmd_incr(&args[1], Ok(1), w, r).await,
            "decr" => self.cmd_incr(&args[1], Ok(-1), w, r).await,
            "incrby" => self.cmd_incr(&args[1], parse_i64(&args[2]), w, r).await,
            "decrby" => {
                self.cmd_incr(&args[1], parse_i64(&args[2]).and_then(|d| d.checked_neg().ok_or(())), w, r).await
            }
            "siblings" | "resolve" => {
                err(format!("ERR keyspace '{}' resolves concurrent writes by lww: it keeps no siblings", self.name))
            }
            other => err(format!(
                "ERR '{}' is not supported on leaderless keyspace '{}' (supported: {SUPPORTED})",
                other.to_uppercase(),
                self.name
            )),
        }
    }

    async fn cmd_set(self: &Arc<Self>, args: &[Bytes], w: u8) -> Frame {
        let now = wall_ms();
        let mut expires_at_ms = None;
        let mut i = 3;
        while i < args.len() {
            let opt = String::from_utf8_lossy(&args[i]).to_ascii_uppercase();
            let unit_ms = match opt.as_str() {
                "EX" | "EXAT" => 1000,
                "PX" | "PXAT" => 1,
                _ => {
                    return err(format!(
                        "ERR SET option {opt} is not supported on leaderless keyspace '{}' (EX, PX, EXAT, PXAT are)",
                        self.name
                    ))
                }
            };
            let Some(Ok(v)) = args.get(i + 1).map(|a| parse_i64(a)) else {
                return err("ERR syntax error");
            };
            if v <= 0 || expires_at_ms.is_some() {
                return err(if v <= 0 { "ERR invalid expire time in 'set' command" } else { "ERR syntax error" });
            }
            let Some(ms) = (v as u64).checked_mul(unit_ms) else {
                return err("ERR invalid expire time in 'set' command");
            };
            expires_at_ms = Some(if opt.ends_with("AT") { ms } else { now.saturating_add(ms) });
            i += 2;
        }
        let (version, seen) = {
            let mut st = self.state.lock();
            let seen = st.store.get(&args[1]).map(Record::context).unwrap_or_default();
            (st.clock.next(now, None), seen)
        };
        let rec = Record { key: args[1].clone(), value: Some(args[2].clone()), expires_at_ms, version, seen };
        match self.quorum_write(rec, w).await.error_text() {
            None => Frame::Simple(Bytes::from_static(b"OK")),
            Some(e) => err(e),
        }
    }

    async fn cmd_del(self: &Arc<Self>, keys: &[Bytes], w: u8, r: u8) -> Frame {
        let mut removed = 0;
        for key in keys {
            let current = match self.quorum_read(key.clone(), r).await {
                Ok(rec) => rec,
                Err(e) => return err(e),
            };
            let Some(current) = current else { continue };
            let live = current.live_value(wall_ms()).is_some();
            if current.value.is_none() {
                continue; // already a tombstone
            }
            let (version, seen) = self.next_version(key, Some(&current));
            let tomb = Record { key: key.clone(), value: None, expires_at_ms: None, version, seen };
            if let Some(e) = self.quorum_write(tomb, w).await.error_text() {
                return err(e);
            }
            removed += i64::from(live);
        }
        Frame::Integer(removed)
    }

    async fn cmd_incr(self: &Arc<Self>, key: &Bytes, delta: Result<i64, ()>, w: u8, r: u8) -> Frame {
        let Ok(delta) = delta else { return err("ERR value is not an integer or out of range") };
        let current = match self.quorum_read(key.clone(), r).await {
            Ok(rec) => rec,
            Err(e) => return err(e),
        };
        let now = wall_ms();
        let (old, expires_at_ms) = match current.as_ref().and_then(|r| r.live_value(now).map(|v| (v, r.expires_at_ms)))
        {
            Some((v, exp)) => match parse_i64(v) {
                Ok(i) => (i, exp),
                Err(()) => return err("ERR value is not an integer or out of range"),
            },
            None => (0, None),
        };
        let Some(new) = old.checked_add(delta) else { return err("ERR increment or decrement would overflow") };
        let (version, seen) = self.next_version(key, current.as_ref());
        let rec = Record { key: key.clone(), value: Some(Bytes::from(new.to_string())), expires_at_ms, version, seen };
        match self.quorum_write(rec, w).await.error_text() {
            None => Frame::Integer(new),
            Some(e) => err(e),
        }
    }

    /// A version for a write of `key` that read `read` (a read-modify-write)
    /// and its causal context: the version read and what it saw, and what
    /// this node's own replica holds of the key.
    fn next_version(&self, key: &[u8], read: Option<&Record>) -> (Version, Seen) {
        let mut st = self.state.lock();
        let mut seen = st.store.get(key).map(Record::context).unwrap_or_default();
        if let Some(r) = read {
            seen.join(&r.context());
        }
        (st.clock.next(wall_ms(), read.map(|r| r.version)), seen)
    }

    // ---- coordination ----

    /// Sends `rec` to the key's N replicas and answers at W durable acks,
    /// or with the count on failure. With a sloppy quorum, a replica that
    /// cannot be reached is replaced by the next node on the ring, which
    /// keeps the write as a hint for it.
    async fn quorum_write(self: &Arc<Self>, rec: Record, w: u8) -> WriteOutcome {
        let started = Instant::now();
        let walk = self.ring().walk(&rec.key);
        let n = usize::from(self.policy.n).min(walk.len());
        let (pref, fallbacks) = walk.split_at(n);
        let mut fallbacks = fallbacks.iter().copied();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(QUORUM_TIMEOUT_MS);
        let mut coord = WriteCoordinator::new(pref, usize::from(w), self.mono_ms() + QUORUM_TIMEOUT_MS);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for &t in pref {
            self.spawn_write(t, rec.clone(), None, tx.clone());
        }
        let outcome = loop {
            let decided = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((t, _, Ok(())))) => coord.on_ack(t),
                Ok(Some((t, hint_for, Err(e)))) => {
                    tracing::debug!(keyspace = self.name.as_str(), node = t, error = %e, "replica write failed");
                    if self.policy.sloppy {
                        if let Some(f) = fallbacks.next() {
                            coord.add_fallback(f);
                            self.spawn_write(f, rec.clone(), Some(hint_for.unwrap_or(t)), tx.clone());
                        }
                    }
                    coord.on_failure(t)
                }
                Ok(None) | Err(_) => coord.on_timeout(coord.deadline_ms()),
            };
            if let Some(o) = decided {
                break o;
            }
        };
        self.metrics.write_seconds.observe(started.elapsed().as_secs_f64());
        if outcome.error_text().is_some() {
            self.metrics.noquorum.inc();
        }
        outcome
    }

    /// Writes `rec` to node `t` (this node included) in the background and
    /// reports `(t, hint_for, result)` on `tx`.
    fn spawn_write(
        self: &Arc<Self>,
        t: NodeId,
        rec: Record,
        hint_for: Option<NodeId>,
        tx: mpsc::UnboundedSender<(NodeId, Option<NodeId>, Result<(), String>)>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let res = me.write_to(t, rec, hint_for).await;
            let _ = tx.send((t, hint_for, res));
        });
    }

    async fn write_to(self: &Arc<Self>, t: NodeId, rec: Record, hint_for: Option<NodeId>) -> Result<(), String> {
        if t == self.env.node_id {
            return match hint_for {
                None => self.local_write(vec![rec]).await,
                Some(owner) => self.local_hint(owner, rec).await,
            };
        }
        match self.call(t, &Msg::Write { rec, hint_for }).await? {
            Msg::Ack { ok: true, .. } => Ok(()),
            Msg::Ack { error, .. } => Err(error),
            other => Err(format!("node {t} answered a write with {other:?}")),
        }
    }

    /// Asks the key's N replicas and answers with the newest version among
    /// the first R replies; then, in the background, waits for the other
    /// replies (until the deadline) and writes the newest version back to
    /// the replicas that answered with an older one (read repair).
    async fn quorum_read(self: &Arc<Self>, key: Bytes, r: u8) -> Result<Option<Record>, String> {
        let started = Instant::now();
        let pref = self.ring().preference_list(&key, usize::from(self.policy.n));
        let deadline = tokio::time::Instant::now() + Duration::from_millis(QUORUM_TIMEOUT_MS);
        let mut coord = ReadCoordinator::new(&pref, usize::from(r), self.mono_ms() + QUORUM_TIMEOUT_MS);
        let (tx, mut rx) = mpsc::unbounded_channel();
        for &t in &pref {
            let (me, key, tx) = (self.clone(), key.clone(), tx.clone());
            tokio::spawn(async move {
                let res = me.read_from(t, key).await;
                let _ = tx.send((t, res));
            });
        }
        drop(tx);
        let outcome = loop {
            let decided = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((t, Ok(rec)))) => coord.on_reply(t, rec),
                Ok(Some((t, Err(_)))) => coord.on_failure(t),
                Ok(None) | Err(_) => coord.on_timeout(coord.deadline_ms()),
            };
            if let Some(o) = decided {
                break o;
            }
        };
        self.metrics.read_seconds.observe(started.elapsed().as_secs_f64());
        if let Some(rec) = coord.newest() {
            self.state.lock().clock.observe(rec.version);
        }
        let me = self.clone();
        tokio::spawn(async move {
            while !coord.all_answered() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((t, Ok(rec)))) => drop(coord.on_reply(t, rec)),
                    Ok(Some((t, Err(_)))) => drop(coord.on_failure(t)),
                    Ok(None) | Err(_) => break,
                }
            }
            let (stale, newest) = coord.repair_targets();
            let Some(newest) = newest else { return };
            for t in stale {
                me.metrics.read_repairs.inc();
                if let Err(e) = me.write_to(t, newest.clone(), None).await {
                    tracing::debug!(node = t, error = %e, "read repair failed");
                }
            }
        });
        match outcome {
            ReadOutcome::Ok { newest, .. } => Ok(newest),
            failed => {
                self.metrics.noquorum.inc();
                Err(failed.error_text().unwrap_or_default())
            }
        }
    }

    async fn read_from(self: &Arc<Self>, t: NodeId, key: Bytes) -> Result<Option<Record>, String> {
        if t == self.env.node_id {
            return Ok(self.state.lock().store.get(&key).cloned());
        }
        match self.call(t, &Msg::Read { key }).await? {
            Msg::ReadReply { rec } => Ok(rec),
            other => Err(format!("node {t} answered a read with {other:?}")),
        }
    }

    // ---- this node's replica ----

    /// Makes the records that are newer than this node's durable, then
    /// applies them.
    async fn local_write(self: &Arc<Self>, recs: Vec<Record>) -> Result<(), String> {
        let newer: Vec<Entry> = {
            let st = self.state.lock();
            recs.iter()
                .filter(|r| st.store.get(&r.key).is_none_or(|c| c.version < r.version))
                .cloned()
                .map(Entry::Record)
                .collect()
        };
        if !newer.is_empty() {
            self.persist(newer).await?;
        }
        // Every record is applied, the stale ones too: keeping the held
        // version over a concurrent one is a resolution the feed records.
        let now = wall_ms();
        let mut st = self.state.lock();
        for rec in recs {
            st.clock.observe(rec.version);
            if let (_, Some(conflict)) = st.store.apply_resolving(rec) {
                self.env
                    .metrics
                    .conflicts
                    .get_or_create(&ConflictLabel {
                        keyspace: self.name.clone(),
                        policy: conflict.policy.name().to_string(),
                    })
                    .inc();
                tracing::debug!(keyspace = self.name.as_str(), key = %String::from_utf8_lossy(&conflict.key), "lww discarded a concurrent version");
                st.feed.push(conflict, now);
            }
        }
        Ok(())
    }

    async fn local_hint(self: &Arc<Self>, owner: NodeId, rec: Record) -> Result<(), String> {
        if self.state.lock().hints.len() >= HINTS_MAX {
            return Err(format!("node {} holds {HINTS_MAX} hints already", self.env.node_id));
        }
        self.persist(vec![Entry::Hint { owner, rec: rec.clone() }]).await?;
        self.state.lock().hints.store(owner, rec).map_err(|e| e.to_string())?;
        self.metrics.hints_stored.inc();
        Ok(())
    }

    async fn persist(self: &Arc<Self>, entries: Vec<Entry>) -> Result<(), String> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.log.lock().append(&entries)).await.map_err(|e| e.to_string())?.map_err(
            |e| {
                self.env.metrics.error("leaderless_log");
                tracing::error!(keyspace = self.name.as_str(), error = %e, "replica file append failed");
                e.to_string()
            },
        )
    }

    /// `(key, version)` of the records both `a` and `b` replicate, in key
    /// order: what the two compare in anti-entropy.
    fn shared_entries(&self, a: NodeId, b: NodeId, leaves: Option<&[u32]>) -> Vec<(Bytes, Version)> {
        let ring = self.ring();
        let n = usize::from(self.policy.n);
        let st = self.state.lock();
        st.store
            .iter()
            .filter(|r| leaves.is_none_or(|l| l.binary_search(&(merkle::leaf_of(&r.key) as u32)).is_ok()))
            .filter(|r| {
                let p = ring.preference_list(&r.key, n);
                p.contains(&a) && p.contains(&b)
            })
            .map(|r| (r.key.clone(), r.version))
            .collect()
    }

    // ---- peers ----

    /// One request to `peer` and its answer, on a pooled connection (a
    /// stale pooled connection is retried once on a fresh one).
    async fn call(self: &Arc<Self>, peer: NodeId, msg: &Msg) -> Result<Msg, String> {
        let body = Bytes::from(postcard::to_allocvec(msg).map_err(|e| e.to_string())?);
        let timeout = Duration::from_millis(QUORUM_TIMEOUT_MS);
        for _attempt in 0..2 {
            if self.env.faults.is_cut(peer) {
                return Err(format!("the link to node {peer} is cut (injected fault)"));
            }
            let pooled = self.pool.lock().get_mut(&peer).and_then(Vec::pop);
            let fresh = pooled.is_none();
            let (mut stream, mut buf) = match pooled {
                Some(c) => c,
                None => (dial(&self.env, peer, &self.name).await.map_err(|e| e.to_string())?, BytesMut::new()),
            };
            if let Some(d) = self.env.faults.send_delay(peer) {
                tokio::time::sleep(d).await;
            }
            let exchange = async {
                wire::write_frame(&mut stream, &PeerMsg::Keyspace { body: body.clone() }).await?;
                wire::read_frame(&mut stream, &mut buf).await
            };
            let reply = match tokio::time::timeout(timeout, exchange).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) if !fresh => {
                    tracing::debug!(node = peer, error = %e, "pooled connection failed; redialing");
                    continue;
                }
                Ok(Err(e)) => return Err(format!("node {peer}: {e}")),
                Err(_) => return Err(format!("node {peer} did not answer in {QUORUM_TIMEOUT_MS} ms")),
            };
            if self.env.faults.is_cut(peer) {
                return Err(format!("the link to node {peer} is cut (injected fault)"));
            }
            let PeerMsg::Keyspace { body } = reply else {
                return Err(format!("node {peer} refused the keyspace connection: {reply:?}"));
            };
            let answer: Msg =
                postcard::from_bytes(&body).map_err(|e| format!("node {peer}: undecodable answer: {e}"))?;
            let mut pool = self.pool.lock();
            let idle = pool.entry(peer).or_default();
            if idle.len() < POOL_PER_PEER_MAX {
                idle.push((stream, buf));
            }
            return Ok(answer);
        }
        Err(format!("node {peer}: connection failed twice"))
    }

    /// Answers the requests of one peer connection, one at a time.
    async fn serve_peer(self: Arc<Self>, mut stream: PeerStream, mut buf: BytesMut, peer: NodeId) {
        loop {
            let Ok(frame) = wire::read_frame(&mut stream, &mut buf).await else { return };
            if self.stopped() || self.env.faults.is_cut(peer) {
                return;
            }
            let PeerMsg::Keyspace { body } = frame else { return };
            let Ok(req) = postcard::from_bytes::<Msg>(&body) else {
                tracing::warn!(keyspace = self.name.as_str(), node = peer, "undecodable keyspace message; closing");
                return;
            };
            let answer = self.answer(peer, req).await;
            let body = Bytes::from(postcard::to_allocvec(&answer).expect("answers always encode"));
            if let Some(d) = self.env.faults.send_delay(peer) {
                tokio::time::sleep(d).await;
            }
            if wire::write_frame(&mut stream, &PeerMsg::Keyspace { body }).await.is_err() {
                return;
            }
        }
    }

    async fn answer(self: &Arc<Self>, peer: NodeId, req: Msg) -> Msg {
        let ack = |res: Result<(), String>| match res {
            Ok(()) => Msg::Ack { ok: true, error: String::new() },
            Err(error) => Msg::Ack { ok: false, error },
        };
        match req {
            Msg::Write { rec, hint_for: None } => ack(self.local_write(vec![rec]).await),
            Msg::Write { rec, hint_for: Some(owner) } => ack(self.local_hint(owner, rec).await),
            Msg::Push { recs } => ack(self.local_write(recs).await),
            Msg::Read { key } => Msg::ReadReply { rec: self.state.lock().store.get(&key).cloned() },
            Msg::Tree { with } => {
                let entries = self.shared_entries(self.env.node_id, with, None);
                let tree = Merkle::build(entries.iter().map(|(k, v)| (k.as_ref(), *v)));
                Msg::TreeReply { root: tree.root(), leaves: tree.leaves().to_vec() }
            }
            Msg::Versions { with, mut leaves } => {
                leaves.sort_unstable();
                let mut entries = self.shared_entries(self.env.node_id, with, Some(&leaves));
                entries.truncate(AE_KEYS_PER_ROUND_MAX);
                Msg::VersionsReply { entries }
            }
            Msg::Fetch { keys } => {
                let st = self.state.lock();
                Msg::Records {
                    recs: keys.iter().take(AE_BATCH_KEYS).filter_map(|k| st.store.get(k).cloned()).collect(),
                }
            }
            other => {
                tracing::warn!(node = peer, "unexpected keyspace request {other:?}");
                Msg::Ack { ok: false, error: "unexpected request".into() }
            }
        }
    }

    // ---- background ----

    /// Every `--anti-entropy-interval-ms`: forget old tombstones, then
    /// compare with each other replica and exchange only differing keys.
    async fn anti_entropy_loop(self: Arc<Self>) {
        let interval = Duration::from_millis(self.env.anti_entropy_interval_ms.max(1));
        let mut stop = self.stop_tx.subscribe();
        let mut shutdown = self.env.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
                _ = shutdown.changed() => return,
            }
            if self.stopped() {
                return;
            }
            let dropped = self.state.lock().store.gc(wall_ms());
            if dropped > 0 {
                tracing::debug!(keyspace = self.name.as_str(), dropped, "forgot tombstones past their grace period");
            }
            let peers: Vec<NodeId> =
                self.env.peers.borrow().keys().copied().filter(|p| *p != self.env.node_id).collect();
            for peer in peers {
                match self.anti_entropy_with(peer).await {
                    Ok((keys, bytes)) => {
                        self.metrics.ae_rounds.inc();
                        self.metrics.ae_keys.inc_by(keys as u64);
                        self.metrics.ae_bytes.inc_by(bytes as u64);
                        if keys > 0 {
                            tracing::info!(
                                keyspace = self.name.as_str(),
                                peer,
                                keys,
                                bytes,
                                "anti-entropy repaired keys"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::debug!(keyspace = self.name.as_str(), peer, error = %e, "anti-entropy round failed")
                    }
                }
            }
        }
    }

    /// One anti-entropy exchange with `peer`; returns the keys and bytes
    /// exchanged.
    async fn anti_entropy_with(self: &Arc<Self>, peer: NodeId) -> Result<(usize, usize), String> {
        let me = self.env.node_id;
        let mut bytes = 0usize;
        let mine = self.shared_entries(me, peer, None);
        let tree = Merkle::build(mine.iter().map(|(k, v)| (k.as_ref(), *v)));
        let Msg::TreeReply { root, leaves } = self.call(peer, &Msg::Tree { with: me }).await? else {
            return Err("unexpected answer to Tree".into());
        };
        bytes += 8 + leaves.len() * 8;
        if root == tree.root() {
            return Ok((0, bytes));
        }
        let differing: Vec<u32> = tree.diff_leaves(&leaves).into_iter().map(|l| l as u32).collect();
        bytes += differing.len() * 4;
        let Msg::VersionsReply { entries } =
            self.call(peer, &Msg::Versions { with: me, leaves: differing.clone() }).await?
        else {
            return Err("unexpected answer to Versions".into());
        };
        bytes += entries.iter().map(|(k, _)| k.len() + 20).sum::<usize>();
        let theirs: BTreeMap<Bytes, Version> = entries.into_iter().collect();
        let ours: BTreeMap<Bytes, Version> =
            mine.into_iter().filter(|(k, _)| differing.binary_search(&(merkle::leaf_of(k) as u32)).is_ok()).collect();
        let mut keys = merkle::diff_keys(&ours, &theirs);
        keys.truncate(AE_KEYS_PER_ROUND_MAX);
        let (pull, push): (Vec<Bytes>, Vec<Bytes>) =
            keys.iter().cloned().partition(|k| theirs.get(k).is_some_and(|t| ours.get(k).is_none_or(|o| t > o)));
        for batch in pull.chunks(AE_BATCH_KEYS) {
            let Msg::Records { recs } = self.call(peer, &Msg::Fetch { keys: batch.to_vec() }).await? else {
                return Err("unexpected answer to Fetch".into());
            };
            bytes += recs.iter().map(Record::size_bytes).sum::<usize>();
            self.local_write(recs).await?;
        }
        let recs: Vec<Record> = {
            let st = self.state.lock();
            push.iter().filter_map(|k| st.store.get(k).cloned()).collect()
        };
        for batch in batches(recs) {
            bytes += batch.iter().map(Record::size_bytes).sum::<usize>();
            match self.call(peer, &Msg::Push { recs: batch }).await? {
                Msg::Ack { ok: true, .. } => {}
                other => return Err(format!("push refused: {other:?}")),
            }
        }
        Ok((keys.len(), bytes))
    }

    /// Rebalancing: plans the transfers when the members change (from the
    /// members last balanced for) and otherwise every anti-entropy interval
    /// (a sweep for records this node holds without owning them), then
    /// streams them.
    async fn rebalance_loop(self: Arc<Self>) {
        let mut peers = self.env.peers.clone();
        let mut stop = self.stop_tx.subscribe();
        let mut shutdown = self.env.shutdown.clone();
        let sweep = Duration::from_millis(self.env.anti_entropy_interval_ms.max(1));
        loop {
            if self.stopped() {
                return;
            }
            let wait = match self.rebalance_round().await {
                Ok(()) => sweep,
                Err(e) => {
                    tracing::debug!(keyspace = self.name.as_str(), error = %e, "rebalancing paused");
                    Duration::from_millis(REBALANCE_RETRY_MS)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = peers.changed() => if r.is_err() { return },
                _ = stop.changed() => return,
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Plans for the current ring and streams until done; `Err` when a new
    /// owner could not take its keys (retried later) or the members
    /// changed meanwhile (planned again at once).
    async fn rebalance_round(self: &Arc<Self>) -> Result<(), String> {
        let ring = self.ring();
        let members = ring.members().to_vec();
        let n = usize::from(self.policy.n);
        let me = self.env.node_id;
        let balanced = self.state.lock().balanced.clone();
        let Some(from) = balanced else {
            // Never balanced: what it holds was placed for these members.
            self.persist(vec![Entry::Balanced { members: members.clone() }]).await?;
            self.state.lock().balanced = Some(members);
            return Ok(());
        };
        let change = from != members;
        let mut plan = {
            let st = self.state.lock();
            Rebalance::plan(me, &Ring::new(from.iter().copied()), &ring, n, &st.store)
        };
        if change {
            tracing::info!(
                keyspace = self.name.as_str(),
                from = ?from,
                to = ?members,
                keys = plan.keys(),
                transfers = plan.remaining(),
                "members changed: streaming keys to their new owners"
            );
        }
        let mut failed = Vec::new();
        for target in plan.targets() {
            if !members.contains(&target) {
                plan.forget_target(target);
                continue;
            }
            if let Err(e) = self.rebalance_to(&mut plan, target, &members).await {
                failed.push(format!("node {target}: {e}"));
                if self.ring().members() != members.as_slice() {
                    break;
                }
            }
        }
        self.state.lock().rebalance_pending = plan.remaining();
        if !plan.is_done() {
            return Err(format!("{} transfers left ({})", plan.remaining(), failed.join("; ")));
        }
        if change {
            self.persist(vec![Entry::Balanced { members: members.clone() }]).await?;
            self.state.lock().balanced = Some(members.clone());
            tracing::info!(keyspace = self.name.as_str(), members = ?members, "rebalancing done");
        }
        Ok(())
    }

    /// Streams `plan`'s keys for `target` in batches, at most
    /// [`REBALANCE_KEYS_PER_SECOND_MAX`]; forgets the keys this node left
    /// once every new owner holds them.
    async fn rebalance_to(
        self: &Arc<Self>,
        plan: &mut Rebalance,
        target: NodeId,
        members: &[NodeId],
    ) -> Result<(), String> {
        loop {
            if self.stopped() || self.ring().members() != members {
                return Err("interrupted".into());
            }
            let batch = {
                let st = self.state.lock();
                plan.batch(target, &st.store, REBALANCE_BATCH_KEYS, AE_BATCH_BYTES)
            };
            if batch.is_empty() {
                return Ok(());
            }
            let stored: Vec<(Bytes, Version)> = batch.iter().map(|r| (r.key.clone(), r.version)).collect();
            let sent = batch.len() as u64;
            match self.call(target, &Msg::Push { recs: batch }).await? {
                Msg::Ack { ok: true, .. } => {}
                Msg::Ack { error, .. } => return Err(error),
                other => return Err(format!("unexpected answer {other:?}")),
            }
            let done = {
                let st = self.state.lock();
                let done = plan.on_stored(target, &stored, &st.store);
                drop(st);
                done
            };
            self.metrics.rebalance_keys.inc_by(done.moved as u64);
            if !done.drop.is_empty() {
                let entries: Vec<Entry> = done
                    .drop
                    .iter()
                    .map(|(key, version)| Entry::Forget { key: key.clone(), version: *version })
                    .collect();
                self.persist(entries).await?;
                let mut st = self.state.lock();
                let forgotten = done.drop.iter().filter(|(k, v)| st.store.forget(k, *v)).count();
                drop(st);
                self.metrics.rebalance_forgotten.inc_by(forgotten as u64);
            }
            self.state.lock().rebalance_pending = plan.remaining();
            tokio::time::sleep(Duration::from_millis(sent * 1000 / REBALANCE_KEYS_PER_SECOND_MAX)).await;
        }
    }

    /// Offers hints back to their owners every second.
    async fn handoff_loop(self: Arc<Self>) {
        let mut stop = self.stop_tx.subscribe();
        let mut shutdown = self.env.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(HINT_HANDOFF_INTERVAL_MS)) => {}
                _ = stop.changed() => return,
                _ = shutdown.changed() => return,
            }
            if self.stopped() {
                return;
            }
            let owners = self.state.lock().hints.owners();
            for owner in owners {
                let recs = self.state.lock().hints.for_owner(owner, AE_BATCH_KEYS);
                let done: Vec<Entry> = recs
                    .iter()
                    .map(|r| Entry::HintDelivered { owner, key: r.key.clone(), version: r.version })
                    .collect();
                match self.call(owner, &Msg::Push { recs: recs.clone() }).await {
                    Ok(Msg::Ack { ok: true, .. }) => {
                        if self.persist(done).await.is_ok() {
                            let mut st = self.state.lock();
                            for r in &recs {
                                st.hints.delivered(owner, &r.key, r.version);
                            }
                            self.metrics.hints_delivered.inc_by(recs.len() as u64);
                            tracing::info!(
                                keyspace = self.name.as_str(),
                                owner,
                                hints = recs.len(),
                                "handed hints back"
                            );
                        }
                    }
                    Ok(other) => tracing::debug!(owner, "hint handoff refused: {other:?}"),
                    Err(e) => tracing::debug!(owner, error = %e, "hint handoff failed"),
                }
            }
        }
    }
}

/// Splits records into messages of at most [`AE_BATCH_KEYS`] records and
/// about [`AE_BATCH_BYTES`].
fn batches(recs: Vec<Record>) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut size = 0;
    for r in recs {
        let s = r.size_bytes();
        match out.last_mut() {
            Some(b) if b.len() < AE_BATCH_KEYS && size + s <= AE_BATCH_BYTES => {
                size += s;
                b.push(r);
            }
            _ => {
                size = s;
                out.push(vec![r]);
            }
        }
    }
    out
}

fn parse_i64(b: &[u8]) -> Result<i64, ()> {
    std::str::from_utf8(b).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(())
}
