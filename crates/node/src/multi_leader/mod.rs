//! Multi-leader keyspaces in the node: every node accepts writes to the
//! keyspace, acknowledges them after its own durability, and streams its
//! own writes to every other node.
//!
//! Owns the I/O around one [`MultiLeaderReplica`] per keyspace: the
//! keyspace's log file ([`log`]: appends made durable per `--fsync`,
//! replayed at start), one task per peer that dials it ([`engines::dial`])
//! and carries this node's writes, the connections peers dial to us
//! ([`Engine::serve_peer`]), the injected link faults (cut links, per-peer
//! one-way delay), metrics and the status JSON. Replication, versions,
//! conflicts and the feed are decided in the replica (`tandem_core`); this
//! module must never decide them, and never holds a lock across an await.
//!
//! Keys of a multi-leader keyspace live only here: `KEYS`, `SCAN` and
//! `DBSIZE` on the node do not see them.

pub mod archive;
pub mod log;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::peer_auth::PeerStream;
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde_json::json;
use tandem_core::command::CommandSpec;
use tandem_core::conflict::ConflictRecord;
use tandem_core::keyspace::{ConflictPolicy, KeyspaceDef, Mode};
use tandem_core::repl::{NodeId, PeerMsg};
use tandem_core::replica::multi_leader::{exec, FeedItem, MlMsg, MlOutput, MultiLeaderReplica, Stream};
use tandem_core::resp::Frame;
use tandem_storage::log::FsyncPolicy;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::connection::ClientState;
use crate::db::unix_ms;
use crate::engines::{self, BoxFuture, Engine, EngineEnv};
use crate::metrics::{ConflictLabel, OriginLabel};
use crate::repl::wire;

use self::log::{encode_record, MlLog};

/// Messages queued to one peer connection before it is closed as stuck
/// (it reconnects and resumes from the peer's progress).
const STREAM_QUEUE_MAX: usize = 1_024;

/// Bytes of log records written in one group commit.
const GROUP_COMMIT_BYTES_MAX: usize = 8 << 20;

/// How often heads are re-announced (lag figures), `everysec` fsyncs run
/// and cut links are noticed on idle connections.
const TICK: Duration = Duration::from_millis(250);

/// Wait between two dials of the same peer.
const REDIAL_BACKOFF: Duration = Duration::from_millis(200);

/// One queued message and when it was queued (the per-peer delay counts
/// from then, so delayed messages still go out back to back).
type Queued = (Instant, MlMsg);

/// An open connection: its generation (a newer one replaces it) and its
/// send queue.
type OpenStream = (u64, mpsc::Sender<Queued>);

/// The engine of one multi-leader keyspace.
pub struct MlEngine {
    name: String,
    prefix: Bytes,
    policy: ConflictPolicy,
    env: EngineEnv,
    replica: Mutex<MultiLeaderReplica>,
    waiters: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    next_token: AtomicU64,
    log_tx: mpsc::UnboundedSender<(u64, Vec<u8>)>,
    streams: Mutex<BTreeMap<(NodeId, StreamKey), OpenStream>>,
    next_gen: AtomicU64,
    /// Why the log cannot be written (the keyspace then refuses writes).
    failed: Mutex<Option<String>>,
    stopped: AtomicBool,
    stop_tx: watch::Sender<bool>,
    /// Sum of the replica's applied vector, bumped whenever it grows
    /// (what `WAITVV` waits on).
    applied_tx: watch::Sender<u64>,
    /// The log's archive in the backup repository (`--backup-repo`).
    archive: Option<Arc<archive::MlArchive>>,
}

/// Largest `WAITVV` timeout (a day), as for `WAITLSN`.
const WAITVV_TIMEOUT_MS_MAX: u64 = 86_400_000;

/// [`Stream`] as an ordered map key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StreamKey {
    Out,
    In,
}

impl From<Stream> for StreamKey {
    fn from(s: Stream) -> StreamKey {
        match s {
            Stream::Out => StreamKey::Out,
            Stream::In => StreamKey::In,
        }
    }
}

/// Starts the replica of multi-leader keyspace `def` on this node: replays
/// its log, then starts its log writer and its peer streams.
pub fn start(env: &EngineEnv, def: &KeyspaceDef) -> Result<Arc<dyn Engine>, String> {
    let Mode::MultiLeader(policy) = &def.mode else {
        return Err(format!("keyspace {:?} is not multi-leader", def.name));
    };
    let dir = env.dir_of(&def.name);
    let (mlog, entries) = MlLog::open(&dir, env.fsync)?;
    let peers: Vec<NodeId> = env.peers.borrow().keys().copied().collect();
    let mut replica = MultiLeaderReplica::new(env.node_id, &def.name, policy.conflict, &peers);
    let n = entries.len();
    let archive = env.backup_repo.as_ref().map(|repo| {
        archive::MlArchive::start(&def.name, env.node_id, repo.clone(), env.archive_interval_ms, entries.clone())
    });
    for e in entries {
        replica.recover(e);
    }
    tracing::info!(keyspace = def.name.as_str(), records = n, file = %mlog.path().display(), "multi-leader log replayed");
    let (log_tx, log_rx) = mpsc::unbounded_channel();
    let (stop_tx, _) = watch::channel(false);
    let (applied_tx, _) = watch::channel(replica.applied().total());
    let engine = Arc::new(MlEngine {
        name: def.name.clone(),
        prefix: def.prefix.clone(),
        policy: policy.conflict,
        env: env.clone(),
        replica: Mutex::new(replica),
        waiters: Mutex::new(HashMap::new()),
        next_token: AtomicU64::new(1),
        log_tx,
        streams: Mutex::new(BTreeMap::new()),
        next_gen: AtomicU64::new(1),
        failed: Mutex::new(None),
        stopped: AtomicBool::new(false),
        stop_tx,
        applied_tx,
        archive,
    });
    tokio::spawn(log_task(engine.clone(), mlog, log_rx));
    tokio::spawn(peers_task(engine.clone()));
    Ok(engine)
}

impl MlEngine {
    /// Carries out the replica's pending outputs. Called with the replica
    /// locked, so appends reach the log writer in index order; nothing here
    /// waits.
    fn dispatch(&self, r: &mut MultiLeaderReplica) {
        while let Some(out) = r.poll_output() {
            match out {
                MlOutput::Append { index, entry } => {
                    let mut bytes = Vec::new();
                    encode_record(&entry, &mut bytes);
                    let _ = self.log_tx.send((index, bytes));
                }
                MlOutput::Send { to, stream, msg } => self.send(to, stream, msg),
                MlOutput::Reply { token, frame } => {
                    if let Some(tx) = self.waiters.lock().remove(&token) {
                        let _ = tx.send(frame);
                    }
                }
                MlOutput::Conflict(rec) => self.count_conflict(&rec),
            }
        }
    }

    fn count_conflict(&self, rec: &ConflictRecord) {
        self.env
            .metrics
            .conflicts
            .get_or_create(&ConflictLabel { keyspace: self.name.clone(), policy: rec.policy.name().to_string() })
            .inc();
        tracing::debug!(keyspace = self.name.as_str(), key = %String::from_utf8_lossy(&rec.key), outcome = rec.outcome.name(), "conflict resolved");
    }

    fn send(&self, to: NodeId, stream: Stream, msg: MlMsg) {
        let mut streams = self.streams.lock();
        let key = (to, StreamKey::from(stream));
        if let Some((_, tx)) = streams.get(&key) {
            if tx.try_send((Instant::now(), msg)).is_err() {
                // Stuck or gone: drop it; the connection closes and the
                // stream resumes from the peer's progress on the next one.
                streams.remove(&key);
            }
        }
    }

    /// Runs `f` on the replica, then carries out what it produced.
    fn with_replica(&self, f: impl FnOnce(&mut MultiLeaderReplica)) {
        let mut r = self.replica.lock();
        f(&mut r);
        self.dispatch(&mut r);
        let total = r.applied().total();
        self.applied_tx.send_if_modified(|t| {
            let grew = total > *t;
            *t = total;
            grew
        });
    }

    /// `WAITVV key vector timeout_ms`: waits (bounded) until this node's
    /// applied vector dominates `vector` (`node:seq,..`; empty or `-`: no
    /// wait), then answers `[keyspace, node id, applied vector]`. The
    /// session check behind read-your-writes and monotonic reads across
    /// nodes (`tandem_core::session::Session::route_ml_read`).
    async fn waitvv(&self, args: &[Bytes]) -> Frame {
        let text = &args[2];
        let required = if text.as_ref() == b"-" { Some(Default::default()) } else { exec::parse_context(text) };
        let Some(required) = required else {
            return Frame::error("ERR WAITVV vector must be node:seq pairs joined by ',' (or - for none)");
        };
        let Some(timeout_ms) = std::str::from_utf8(&args[3]).ok().and_then(|t| t.parse::<u64>().ok()) else {
            return Frame::error("ERR timeout is not an integer or out of range");
        };
        let deadline = Duration::from_millis(if timeout_ms == 0 {
            WAITVV_TIMEOUT_MS_MAX
        } else {
            timeout_ms.min(WAITVV_TIMEOUT_MS_MAX)
        });
        let mut changed = self.applied_tx.subscribe();
        let covered = || self.replica.lock().applied().dominates(&required);
        let _ = tokio::time::timeout(deadline, async {
            loop {
                changed.mark_unchanged();
                if covered() || self.stopped.load(Ordering::Relaxed) {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let r = self.replica.lock();
        Frame::Array(vec![
            Frame::Bulk(Bytes::from(self.name.clone())),
            Frame::Integer(r.node() as i64),
            Frame::Bulk(Bytes::from(exec::encode_context(r.applied()))),
        ])
    }

    fn fail_log(&self, why: String) {
        tracing::error!(keyspace = self.name.as_str(), error = %why, "multi-leader log write failed; the keyspace refuses writes on this node");
        self.env.metrics.error("multi_leader_log");
        *self.failed.lock() = Some(why.clone());
        for (_, tx) in self.waiters.lock().drain() {
            let _ = tx.send(Frame::error(format!("IOERR keyspace '{}': {why}", self.name)));
        }
    }

    fn feed_json(&self, item: &FeedItem) -> serde_json::Value {
        let r = &item.record;
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        json!({
            "id": item.id,
            "at_ms": item.at_ms,
            "keyspace": self.name,
            "key": text(&r.key),
            "field": r.field.as_ref().map(text),
            "policy": r.policy.name(),
            "outcome": r.outcome.name(),
            "versions": r.versions.iter().map(|v| json!({
                "origin": v.origin,
                "hlc": format!("{}.{}@{}", v.hlc.physical_ms, v.hlc.logical, v.hlc.node),
                "value": v.value.as_ref().map(text),
                "truncated": v.truncated,
                "kept": v.kept,
            })).collect::<Vec<_>>(),
        })
    }
}

impl Engine for MlEngine {
    fn execute<'a>(
        &'a self,
        _client: &'a mut ClientState,
        _spec: &'static CommandSpec,
        args: &'a [Bytes],
    ) -> BoxFuture<'a, Frame> {
        Box::pin(async move {
            if let Some(why) = self.failed.lock().clone() {
                return Frame::error(format!(
                    "IOERR keyspace '{}' cannot write its log on this node: {why}",
                    self.name
                ));
            }
            if self.stopped.load(Ordering::Relaxed) {
                return Frame::error(format!("TRYAGAIN keyspace '{}' is stopping on this node", self.name));
            }
            if _spec.name == "waitvv" {
                return self.waitvv(args).await;
            }
            let token = self.next_token.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().insert(token, tx);
            self.with_replica(|r| r.handle_command(unix_ms(), token, args));
            rx.await.unwrap_or_else(|_| Frame::error(format!("TRYAGAIN keyspace '{}' stopped", self.name)))
        })
    }

    fn serve_peer(self: Arc<Self>, stream: PeerStream, buf: BytesMut, peer: NodeId) -> BoxFuture<'static, ()> {
        Box::pin(run_conn(self, peer, Stream::In, stream, buf))
    }

    fn status(&self) -> serde_json::Value {
        let r = self.replica.lock();
        let now = unix_ms();
        let mut origins = serde_json::Map::new();
        let mut peers = serde_json::Map::new();
        // This node as an origin too: everything it wrote is applied here.
        let own = r.applied().get(r.node());
        let label = OriginLabel { keyspace: self.name.clone(), origin: r.node() };
        self.env.metrics.origin_applied.get_or_create(&label).set(own as i64);
        self.env.metrics.origin_lag_entries.get_or_create(&label).set(0);
        self.env.metrics.origin_lag_ms.get_or_create(&label).set(0);
        origins.insert(
            r.node().to_string(),
            json!({
                "applied": own,
                "durable": r.durable().get(r.node()),
                "head": own,
                "lag_entries": 0,
                "lag_ms": 0,
                "self": true,
            }),
        );
        for (id, p) in r.peers() {
            let applied = r.applied().get(*id);
            let lag_entries = p.head.saturating_sub(applied);
            let lag_ms = if lag_entries == 0 { 0 } else { p.head_ms.saturating_sub(p.applied_ms) };
            let label = OriginLabel { keyspace: self.name.clone(), origin: *id };
            self.env.metrics.origin_applied.get_or_create(&label).set(applied as i64);
            self.env.metrics.origin_lag_entries.get_or_create(&label).set(lag_entries as i64);
            self.env.metrics.origin_lag_ms.get_or_create(&label).set(lag_ms as i64);
            origins.insert(
                id.to_string(),
                json!({
                    "applied": applied,
                    "durable": r.durable().get(*id),
                    "head": p.head,
                    "lag_entries": lag_entries,
                    "lag_ms": lag_ms,
                    "stream_in": p.in_open,
                }),
            );
            peers.insert(
                id.to_string(),
                json!({
                    "stream_out": p.out_ready,
                    "sent": p.sent,
                    "acked": p.acked,
                    "unshipped": r.unshipped(*id),
                    "unshipped_ms": r.unshipped_ms(*id, now),
                }),
            );
        }
        json!({
            "engine": "multi-leader",
            "node": r.node(),
            "conflict": self.policy.name(),
            "prefix": String::from_utf8_lossy(&self.prefix),
            "prefix_escaped": escape_prefix(&self.prefix),
            "own_writes": r.applied().get(r.node()),
            "progress": r.applied().0.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "origins": origins,
            "peers": peers,
            "keys": r.live_keys(now),
            "conflicts_total": r.conflicts_total(),
            "log_error": self.failed.lock().clone(),
            "archive": self.archive.as_ref().map(|a| a.status_json()),
        })
    }

    fn key_count(&self) -> u64 {
        self.replica.lock().live_keys(unix_ms())
    }

    fn stop(&self) {
        if let Some(a) = &self.archive {
            a.close();
        }
        self.stopped.store(true, Ordering::Relaxed);
        let _ = self.stop_tx.send(true);
        self.streams.lock().clear();
    }

    fn conflicts(&self, since: u64, count: usize) -> Vec<serde_json::Value> {
        let r = self.replica.lock();
        r.conflicts(since, count).map(|i| self.feed_json(i)).collect()
    }
}

/// Writes appended records (group commit), then tells the replica what is
/// durable; also the periodic tick.
async fn log_task(engine: Arc<MlEngine>, mut log: MlLog, mut rx: mpsc::UnboundedReceiver<(u64, Vec<u8>)>) {
    let mut stop = engine.stop_tx.subscribe();
    let mut shutdown = engine.env.shutdown.clone();
    let mut tick = tokio::time::interval(TICK);
    // Records written but not yet fsynced (`everysec`): they go to the
    // archive only once durable.
    let mut unsynced: Vec<u8> = Vec::new();
    let to_archive_now = engine.env.fsync != FsyncPolicy::EverySec;
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some((mut last, mut buf)) = first else { return };
                while buf.len() < GROUP_COMMIT_BYTES_MAX {
                    match rx.try_recv() {
                        Ok((i, b)) => {
                            last = i;
                            buf.extend_from_slice(&b);
                        }
                        Err(_) => break,
                    }
                }
                let (l, res, buf) = match tokio::task::spawn_blocking(move || {
                    let res = log.append(&buf);
                    (log, res, buf)
                })
                .await
                {
                    Ok(x) => x,
                    Err(e) => {
                        engine.fail_log(format!("log writer panicked: {e}"));
                        return;
                    }
                };
                log = l;
                if let Err(e) = res {
                    engine.fail_log(e);
                    return;
                }
                if let Some(a) = &engine.archive {
                    if to_archive_now {
                        a.push(&buf);
                    } else {
                        unsynced.extend_from_slice(&buf);
                    }
                }
                engine.env.metrics.fsyncs.inc();
                engine.with_replica(|r| r.handle_durable(last));
            }
            _ = tick.tick() => {
                if let Err(e) = log.sync_if_dirty() {
                    engine.fail_log(e);
                    return;
                }
                if let Some(a) = &engine.archive {
                    if !unsynced.is_empty() && engine.env.fsync == FsyncPolicy::EverySec {
                        a.push(&std::mem::take(&mut unsynced));
                    }
                }
                engine.with_replica(|r| r.handle_tick());
                let _ = engine.status();
            }
            _ = stop.changed() => return,
            _ = shutdown.changed() => {
                if log.sync().is_ok() {
                    if let Some(a) = &engine.archive {
                        if !unsynced.is_empty() {
                            a.push(&std::mem::take(&mut unsynced));
                        }
                    }
                }
                if let Some(a) = &engine.archive {
                    a.close();
                }
                return;
            }
        }
    }
}

/// Keeps one dialing task per peer in the cluster map.
async fn peers_task(engine: Arc<MlEngine>) {
    let mut peers_rx = engine.env.peers.clone();
    let mut stop = engine.stop_tx.subscribe();
    let mut shutdown = engine.env.shutdown.clone();
    let mut running: BTreeMap<NodeId, tokio::task::JoinHandle<()>> = BTreeMap::new();
    loop {
        let ids: BTreeSet<NodeId> =
            peers_rx.borrow_and_update().keys().copied().filter(|id| *id != engine.env.node_id).collect();
        engine.with_replica(|r| r.set_peers(&ids.iter().copied().collect::<Vec<_>>()));
        running.retain(|id, h| {
            let keep = ids.contains(id);
            if !keep {
                h.abort();
            }
            keep
        });
        for id in ids {
            running.entry(id).or_insert_with(|| tokio::spawn(dial_loop(engine.clone(), id)));
        }
        tokio::select! {
            r = peers_rx.changed() => if r.is_err() { break },
            _ = stop.changed() => break,
            _ = shutdown.changed() => break,
        }
    }
    for (_, h) in running {
        h.abort();
    }
}

/// Dials `peer` again and again; each connection carries this node's
/// writes to it.
async fn dial_loop(engine: Arc<MlEngine>, peer: NodeId) {
    loop {
        if engine.stopped.load(Ordering::Relaxed) || *engine.env.shutdown.borrow() {
            return;
        }
        match engines::dial(&engine.env, peer, &engine.name).await {
            Ok(tcp) => run_conn(engine.clone(), peer, Stream::Out, tcp, BytesMut::new()).await,
            Err(e) => tracing::debug!(keyspace = engine.name.as_str(), peer, error = %e, "multi-leader dial failed"),
        }
        tokio::time::sleep(REDIAL_BACKOFF).await;
    }
}

/// Runs one connection with `peer` until it fails, the link is cut or the
/// engine stops.
async fn run_conn(engine: Arc<MlEngine>, peer: NodeId, stream: Stream, tcp: PeerStream, mut buf: BytesMut) {
    if engine.env.faults.is_cut(peer) {
        return;
    }
    let (mut rd, mut wr) = tcp.into_split();
    let (tx, mut rx) = mpsc::channel::<Queued>(STREAM_QUEUE_MAX);
    let gen = engine.next_gen.fetch_add(1, Ordering::Relaxed);
    let key = (peer, StreamKey::from(stream));
    engine.streams.lock().insert(key, (gen, tx));
    engine.with_replica(|r| r.handle_open(peer, stream));
    let faults = engine.env.faults.clone();
    let writer = async {
        while let Some((queued_at, msg)) = rx.recv().await {
            if faults.is_cut(peer) {
                return;
            }
            if let Some(d) = faults.send_delay(peer) {
                tokio::time::sleep_until(queued_at + d).await;
            }
            let body = match postcard::to_allocvec(&msg) {
                Ok(b) => Bytes::from(b),
                Err(_) => return,
            };
            if wire::write_frame(&mut wr, &PeerMsg::Keyspace { body }).await.is_err() {
                return;
            }
        }
    };
    let reader = async {
        loop {
            let msg = match wire::read_frame(&mut rd, &mut buf).await {
                Ok(PeerMsg::Keyspace { body }) => body,
                Ok(_) | Err(_) => return,
            };
            if faults.is_cut(peer) {
                return;
            }
            let Ok(msg) = postcard::from_bytes::<MlMsg>(&msg) else {
                tracing::warn!(keyspace = engine.name.as_str(), peer, "undecodable multi-leader message; closing");
                return;
            };
            engine.with_replica(|r| r.handle_msg(unix_ms(), peer, stream, msg));
        }
    };
    let cut_watch = async {
        let mut t = tokio::time::interval(TICK);
        loop {
            t.tick().await;
            if faults.is_cut(peer) {
                return;
            }
        }
    };
    let mut stop = engine.stop_tx.subscribe();
    let mut shutdown = engine.env.shutdown.clone();
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
        _ = cut_watch => {}
        _ = stop.changed() => {}
        _ = shutdown.changed() => {}
    }
    let mine = {
        let mut streams = engine.streams.lock();
        let mine = streams.get(&key).is_some_and(|(g, _)| *g == gen);
        if mine {
            streams.remove(&key);
        }
        mine
    };
    if mine {
        engine.with_replica(|r| r.handle_closed(peer, stream));
    }
}

/// `CONFLICTS [COUNT n]` and `GET /conflicts`: the feeds of every keyspace
/// that keeps one, newest first.
pub fn conflicts(
    engines: &engines::Engines,
    keyspace: Option<&str>,
    since: u64,
    count: usize,
) -> Vec<serde_json::Value> {
    let mut all: Vec<serde_json::Value> = engines
        .all()
        .into_iter()
        .filter(|(name, _)| keyspace.is_none_or(|k| k == name))
        .flat_map(|(_, e)| e.conflicts(since, count))
        .collect();
    all.sort_by_key(|v| std::cmp::Reverse((v["at_ms"].as_u64().unwrap_or(0), v["id"].as_u64().unwrap_or(0))));
    all.truncate(count);
    all
}

/// The `state` of every multi-leader keyspace on this node, by name (what
/// `/status` shows as `multi_leader`): per-origin progress and lag.
pub fn status_all(engines: &engines::Engines) -> serde_json::Map<String, serde_json::Value> {
    engines
        .all()
        .into_iter()
        .map(|(name, e)| (name, e.status()))
        .filter(|(_, s)| s["engine"] == "multi-leader")
        .collect()
}

/// `INFO multileader`: per multi-leader keyspace one summary line, then
/// one line per origin with its progress here and the lag behind it, e.g.
/// `ml_carts_origin_2:applied=10,durable=10,head=12,lag_entries=2,lag_ms=30`
/// (this node's view: the origin's head as last announced to it), then one
/// line per peer with this node's own writes that peer lacks, e.g.
/// `ml_carts_peer_3:stream_out=0,sent=4,acked=4,unshipped=5,unshipped_ms=812`
/// (the peer's lag behind this node, seen from here: it stays true while
/// the peer is cut off and cannot announce anything).
pub fn info_section(engines: &engines::Engines) -> String {
    use std::fmt::Write as _;
    let all = status_all(engines);
    let mut out = format!("# Multileader\r\nml_keyspaces:{}\r\n", all.len());
    for (name, s) in &all {
        let _ = write!(
            out,
            "ml_{name}:conflict={},prefix={},own_writes={},keys={},conflicts_total={},log_error={}\r\n",
            s["conflict"].as_str().unwrap_or(""),
            s["prefix_escaped"].as_str().unwrap_or(""),
            s["own_writes"],
            s["keys"],
            s["conflicts_total"],
            s["log_error"].as_str().unwrap_or("none"),
        );
        let Some(origins) = s["origins"].as_object() else { continue };
        for (id, o) in origins {
            let _ = write!(
                out,
                "ml_{name}_origin_{id}:applied={},durable={},head={},lag_entries={},lag_ms={}\r\n",
                o["applied"], o["durable"], o["head"], o["lag_entries"], o["lag_ms"],
            );
        }
        let Some(peers) = s["peers"].as_object() else { continue };
        for (id, p) in peers {
            let _ = write!(
                out,
                "ml_{name}_peer_{id}:stream_out={},sent={},acked={},unshipped={},unshipped_ms={}\r\n",
                u8::from(p["stream_out"] == true),
                p["sent"],
                p["acked"],
                p["unshipped"],
                p["unshipped_ms"],
            );
        }
    }
    out.push_str("\r\n");
    out
}

/// A key prefix as `INFO multileader` shows it: printable ASCII as is,
/// every other byte and `%`, `,`, `=` as `%XX` (so `tandem-client` can
/// parse it back and route by it).
pub fn escape_prefix(prefix: &[u8]) -> String {
    let mut out = String::with_capacity(prefix.len());
    for &b in prefix {
        if b.is_ascii_graphic() && !matches!(b, b'%' | b',' | b'=') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
