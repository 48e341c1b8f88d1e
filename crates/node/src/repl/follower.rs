//! The follower side of replication in the node: connects to the leader's
//! peer port (reconnecting with backoff), subscribes with its epoch and last
//! LSN, installs a snapshot when told to, appends and applies streamed
//! entries, and acknowledges flushed and applied LSNs, all through the
//! sans-IO `tandem_core::repl::Follower`.
//!
//! Owns the connection to the leader. Never accepts a client write: the
//! connection layer answers `READONLY` on a follower.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::BytesMut;
use parking_lot::Mutex;
use tandem_core::failover::{EpochHistory, LeaseGrantor};
use tandem_core::repl::msg::STREAM_FROM_SNAPSHOT;
use tandem_core::repl::{Follower, FollowerStatus, PeerMsg, WireEntry};
use tandem_core::replica::single_leader;
use tandem_core::Lsn;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::wire::{decode_blocking, encode_frame, read_frame, read_frame_raw, write_frame, RawFrame, WireError};
use crate::db::{mono_ms, unix_ms, Db};
use crate::events::{EventFields, Events};
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::rollback;

/// First reconnect delay; doubles up to `RECONNECT_BACKOFF_MAX` (the
/// replica's limits, `tandem_core::replica::single_leader`).
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(single_leader::RECONNECT_BACKOFF_MS_MIN);
/// Longest reconnect delay.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(single_leader::RECONNECT_BACKOFF_MS_MAX);
/// A leader silent for this long is presumed gone; the follower reconnects.
const LEADER_SILENCE_TIMEOUT: Duration = Duration::from_millis(single_leader::LEADER_SILENCE_MS_DEFAULT);
/// Messages read from the leader but not yet processed.
const FOLLOWER_INBOX_MAX: usize = 4096;
/// Messages (acks, lease grants) queued for the connection writer; a grant
/// that finds the queue full is dropped (the next request gets one).
const FOLLOWER_OUTBOX_MAX: usize = 1024;

/// What the follower driver needs.
pub struct FollowerParams {
    /// This node.
    pub node_id: u64,
    /// The leader's peer address.
    pub leader_peer_addr: SocketAddr,
    /// This node's client address (told to the leader).
    pub client_addr: String,
    /// This node's peer identity (the handshake with the leader).
    pub peer_key: crate::peer_auth::PeerKey,
    /// Test knob: delay before applying each received batch.
    pub apply_delay: Duration,
    /// The fsync policy is everysec or never: write applied entries to the
    /// OS from this task (see `Log::write_now`).
    pub write_inline: bool,
    /// Lease grants to the leader, when leases are on (automatic failover).
    pub grantor: Option<Arc<Mutex<LeaseGrantor>>>,
    /// Where rollback files go and who records what happened.
    pub data_dir: PathBuf,
    /// The cluster event log.
    pub events: Arc<Events>,
    /// Injected link faults.
    pub faults: Arc<Faults>,
    /// The leader's node id (for faults and logs).
    pub leader_id: u64,
}

/// Handle to a running follower driver.
pub struct FollowerHandle {
    status: Arc<Mutex<FollowerStatus>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The leader's peer address.
    pub leader_peer_addr: SocketAddr,
}

impl FollowerHandle {
    /// The follower's view of its replication.
    pub fn status(&self) -> FollowerStatus {
        self.status.lock().clone()
    }

    /// Stops following (the driver exits at its next step).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Stops following and waits until the driver appends nothing more.
    pub async fn stop_and_wait(&self) {
        self.stop();
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Starts following.
pub fn start(db: Arc<Db>, metrics: Arc<Metrics>, params: FollowerParams) -> FollowerHandle {
    let core = Follower::new(params.node_id, db.epoch(), db.last_lsn(), db.durable_lsn(), unix_ms());
    let status = Arc::new(Mutex::new(core.status(unix_ms())));
    let (stop, stop_rx) = watch::channel(false);
    let leader_peer_addr = params.leader_peer_addr;
    let task = tokio::spawn(run(db, metrics, params, status.clone(), stop_rx));
    FollowerHandle { status, stop, task: Mutex::new(Some(task)), leader_peer_addr }
}

async fn run(
    db: Arc<Db>,
    metrics: Arc<Metrics>,
    params: FollowerParams,
    status: Arc<Mutex<FollowerStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = RECONNECT_BACKOFF_MIN;
    // Failed attempts in a row: logged at the 1st, 2nd, 4th, 8th, ... with
    // the count, so a dead leader does not flood the log.
    let mut failures: u64 = 0;
    loop {
        let mut core = Follower::new(params.node_id, db.epoch(), db.last_lsn(), db.durable_lsn(), unix_ms());
        *status.lock() = core.status(unix_ms());
        let session = tokio::select! {
            _ = stop.changed() => return,
            r = session(&db, &metrics, &params, &mut core, &status) => r,
        };
        core.handle_disconnect(unix_ms());
        *status.lock() = core.status(unix_ms());
        match session {
            Ok(()) => return,
            Err(SessionEnd::Streamed(e)) => {
                tracing::warn!(leader = %params.leader_peer_addr, error = %e, "replication stream ended; reconnecting");
                backoff = RECONNECT_BACKOFF_MIN;
                failures = 0;
            }
            Err(SessionEnd::NoStream(e)) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(leader = %params.leader_peer_addr, error = %e, failures, retry_in_ms = backoff.as_millis() as u64, "cannot replicate from the leader (logged again after twice as many failures)");
                } else {
                    tracing::debug!(leader = %params.leader_peer_addr, error = %e, failures, "cannot replicate from the leader");
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

enum SessionEnd {
    /// Ended after entries flowed: reconnect at once.
    Streamed(String),
    /// Could not get a stream going: back off.
    NoStream(String),
}

async fn session(
    db: &Arc<Db>,
    metrics: &Metrics,
    params: &FollowerParams,
    core: &mut Follower,
    status: &Mutex<FollowerStatus>,
) -> Result<(), SessionEnd> {
    let no_stream = |e: String| SessionEnd::NoStream(e);
    if params.faults.is_cut(params.leader_id) {
        return Err(no_stream(format!("the link to node {} is cut (fault injection)", params.leader_id)));
    }
    let stream = params
        .peer_key
        .connect(&params.leader_peer_addr.to_string(), params.leader_id, Duration::from_secs(5))
        .await
        .map_err(no_stream)?;
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    core.set_history(db.history());
    write_frame(&mut writer, &core.subscribe(params.client_addr.clone()))
        .await
        .map_err(|e| no_stream(e.to_string()))?;
    let welcome = read_frame(&mut reader, &mut buf).await.map_err(|e| no_stream(e.to_string()))?;
    let PeerMsg::Welcome { leader_id, epoch, leader_client_addr, stream_from, history, diverged_after } = welcome
    else {
        return Err(no_stream(match welcome {
            PeerMsg::Refuse { reason } => format!("the leader refused: {reason}"),
            other => format!("expected Welcome, got {}", other.kind()),
        }));
    };
    if let Some(kept) = diverged_after {
        // Before anything is discarded, the entries the leader never had go
        // to a rollback file.
        save_rollback(db, metrics, params, leader_id, epoch, kept).await.map_err(no_stream)?;
        // The divergent entries stay in the local log (and a fence would
        // still report them) until the snapshot that follows replaces it.
        core.handle_rolled_back(kept);
    }
    core.handle_welcome(unix_ms(), leader_id, epoch, leader_client_addr, stream_from).map_err(no_stream)?;
    db.raise_epoch(epoch).map_err(|e| no_stream(e.to_string()))?;
    tracing::info!(leader = leader_id, epoch, stream_from, "following");
    if stream_from == STREAM_FROM_SNAPSHOT {
        let history = EpochHistory::from_pairs(history);
        receive_snapshot(db, metrics, core, &history, &mut reader, &mut buf).await.map_err(no_stream)?;
    }
    *status.lock() = core.status(unix_ms());

    // A reader task keeps taking frames off the socket while this loop
    // applies, so the follower learns how far the leader is (lag,
    // staleness) even while applying is slow. The leader's in-flight byte
    // limit bounds what can pile up in the inbox. The reader answers lease
    // requests itself (the grant is stamped when the request arrives), and
    // a writer task owns the socket's write half: a grant never waits for a
    // large frame to be decoded or applied (decision 0028).
    let (inbox_tx, mut inbox) = mpsc::channel::<Result<Inbound, String>>(FOLLOWER_INBOX_MAX);
    let (out_tx, out_rx) = mpsc::channel::<PeerMsg>(FOLLOWER_OUTBOX_MAX);
    let _writer_task = AbortOnDrop(tokio::spawn(write_loop(writer, out_rx, params.faults.clone(), params.leader_id)));
    let lease = LeaseAnswerer {
        grantor: params.grantor.clone(),
        faults: params.faults.clone(),
        leader_id: params.leader_id,
        out: out_tx.clone(),
    };
    let _reader_task = AbortOnDrop(tokio::spawn(async move {
        let mut partial = Vec::new();
        loop {
            let msg =
                match tokio::time::timeout(LEADER_SILENCE_TIMEOUT, read_frame_raw(&mut reader, &mut buf, &mut partial))
                    .await
                {
                    Ok(Ok(RawFrame::Msg(PeerMsg::LeaseRequest { epoch, stamp_ms }))) => {
                        match lease.answer(epoch, stamp_ms) {
                            Ok(()) => continue,
                            Err(e) => Err(e),
                        }
                    }
                    Ok(Ok(RawFrame::Msg(msg))) => Ok(Inbound::Msg(msg)),
                    Ok(Ok(RawFrame::Large(body))) => Ok(Inbound::Decoding(decode_blocking(body))),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no word from the leader for {LEADER_SILENCE_TIMEOUT:?}")),
                };
            let end = msg.is_err();
            if inbox_tx.send(msg).await.is_err() || end {
                return;
            }
        }
    }));
    stream_loop(db, metrics, params, core, status, &out_tx, &mut inbox).await.map_err(SessionEnd::Streamed)
}

/// Aborts a task when dropped: the session's reader (which grants leases)
/// and writer never outlive it, however the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the reader hands the stream loop, in stream order.
enum Inbound {
    /// A decoded message.
    Msg(PeerMsg),
    /// A large frame being decoded on a blocking thread; the messages after
    /// it wait until it is done.
    Decoding(tokio::task::JoinHandle<Result<PeerMsg, WireError>>),
}

/// Answers the leader's lease requests from the connection reader.
struct LeaseAnswerer {
    grantor: Option<Arc<Mutex<LeaseGrantor>>>,
    faults: Arc<Faults>,
    leader_id: u64,
    out: mpsc::Sender<PeerMsg>,
}

impl LeaseAnswerer {
    /// Grants (the stamp goes back through the writer) or says why the
    /// stream must end.
    fn answer(&self, epoch: u64, stamp_ms: u64) -> Result<(), String> {
        if self.faults.is_cut(self.leader_id) {
            return Err(format!("the link to node {} is cut (fault injection)", self.leader_id));
        }
        let Some(grantor) = &self.grantor else {
            return Err("the leader asks for leases but this node runs without them".into());
        };
        let mut grantor = grantor.lock();
        if !grantor.handle_request(mono_ms(), epoch) {
            let floor = grantor.floor_epoch();
            return Err(format!("refusing the lease of epoch {epoch}: this node fenced it (now at epoch {floor})"));
        }
        drop(grantor);
        let _ = self.out.try_send(PeerMsg::LeaseGrant { stamp_ms });
        Ok(())
    }
}

/// Writes what the session sends the leader (acks, lease grants), after
/// the injected link delay if any. Ends when the socket fails or the
/// session drops its senders.
async fn write_loop(
    mut writer: crate::peer_auth::PeerWriter,
    mut queue: mpsc::Receiver<PeerMsg>,
    faults: Arc<Faults>,
    leader_id: u64,
) {
    let mut out = Vec::with_capacity(256);
    while let Some(msg) = queue.recv().await {
        out.clear();
        encode_frame(&msg, &mut out);
        while let Ok(msg) = queue.try_recv() {
            encode_frame(&msg, &mut out);
        }
        if let Some(d) = faults.send_delay(leader_id) {
            tokio::time::sleep(d).await;
        }
        if writer.write_all(&out).await.is_err() || writer.flush().await.is_err() {
            return;
        }
    }
}

/// Entries received but not yet applied: (when they may be applied, entries).
type PendingApply = VecDeque<(tokio::time::Instant, Vec<WireEntry>)>;

/// A large batch applied on a blocking thread: its last LSN and commit time.
type ApplyTask = tokio::task::JoinHandle<Result<(Lsn, u64), String>>;

async fn stream_loop(
    db: &Arc<Db>,
    metrics: &Metrics,
    params: &FollowerParams,
    core: &mut Follower,
    status: &Mutex<FollowerStatus>,
    out: &mpsc::Sender<PeerMsg>,
    inbox: &mut mpsc::Receiver<Result<Inbound, String>>,
) -> Result<(), String> {
    let mut durable = db.durable();
    let mut pending: PendingApply = VecDeque::new();
    // A large batch being applied on a blocking thread (its entry count):
    // the loop keeps taking messages meanwhile.
    let mut applying: Option<(ApplyTask, u64)> = None;
    // A large frame being decoded: later messages wait in the inbox.
    let mut decoding: Option<tokio::task::JoinHandle<Result<PeerMsg, WireError>>> = None;
    loop {
        let next_ready = pending.front().map(|(at, _)| *at);
        tokio::select! {
            done = async { (&mut applying.as_mut().expect("guarded").0).await }, if applying.is_some() => {
                let count = applying.take().expect("guarded").1;
                let (last, commit_ms) = done.map_err(|e| format!("applying entries failed: {e}"))??;
                if core.epoch() > db.epoch() {
                    db.raise_epoch(core.epoch()).map_err(|e| e.to_string())?;
                }
                metrics.repl_entries_applied.inc_by(count);
                core.handle_applied(last, commit_ms);
            }
            msg = async { decoding.as_mut().expect("guarded").await }, if decoding.is_some() => {
                decoding = None;
                let msg = msg.map_err(|e| format!("decoding a frame failed: {e}"))?.map_err(|e| e.to_string())?;
                receive(core, params, &mut pending, msg)?;
                take_arrived(core, params, &mut pending, &mut decoding, inbox)?;
            }
            msg = inbox.recv(), if decoding.is_none() => {
                let msg = msg.ok_or("the connection reader stopped")??;
                take(core, params, &mut pending, &mut decoding, msg)?;
                // Take in whatever else already arrived before applying.
                take_arrived(core, params, &mut pending, &mut decoding, inbox)?;
            }
            _ = tokio::time::sleep_until(next_ready.unwrap_or_else(tokio::time::Instant::now)), if next_ready.is_some() => {}
            _ = durable.changed() => {}
        }
        let now = tokio::time::Instant::now();
        while applying.is_none() && pending.front().is_some_and(|(at, _)| *at <= now) {
            let (_, batch) = pending.pop_front().expect("non-empty");
            let (bytes, count) = (batch.iter().map(|e| e.payload.len()).sum::<usize>(), batch.len() as u64);
            if bytes > crate::db::LARGE_WRITE_BYTES {
                // Applying copies every value: a large batch on a blocking
                // thread, finished in the select above, so this follower
                // keeps taking messages meanwhile (decision 0028).
                let db = db.clone();
                applying = Some((tokio::task::spawn_blocking(move || db.apply_replicated(&batch)), count));
                break;
            }
            let (last, commit_ms) = db.apply_replicated(&batch)?;
            if core.epoch() > db.epoch() {
                db.raise_epoch(core.epoch()).map_err(|e| e.to_string())?;
            }
            metrics.repl_entries_applied.inc_by(count);
            core.handle_applied(last, commit_ms);
        }
        // Under everysec / never an entry is on "disk" once the OS has it:
        // write it from here instead of waking the log writer thread.
        if params.write_inline {
            let _ = db.log().write_now();
        }
        // Only what is both in the local log and durable counts as flushed.
        core.handle_flushed((*durable.borrow_and_update()).min(db.last_lsn()).min(core.last_lsn()));
        if let Some(ack) = core.poll_ack(unix_ms()) {
            out.send(ack).await.map_err(|_| "the connection writer stopped".to_string())?;
        }
        *status.lock() = core.status(unix_ms());
    }
}

/// Takes one item from the reader: a message into the core, or a large
/// frame whose decode the loop waits for before it takes anything else.
fn take(
    core: &mut Follower,
    params: &FollowerParams,
    pending: &mut PendingApply,
    decoding: &mut Option<tokio::task::JoinHandle<Result<PeerMsg, WireError>>>,
    item: Inbound,
) -> Result<(), String> {
    if params.faults.is_cut(params.leader_id) {
        return Err(format!("the link to node {} is cut (fault injection)", params.leader_id));
    }
    match item {
        Inbound::Msg(msg) => receive(core, params, pending, msg),
        Inbound::Decoding(task) => {
            *decoding = Some(task);
            Ok(())
        }
    }
}

/// Takes what already arrived, up to the next large frame being decoded.
fn take_arrived(
    core: &mut Follower,
    params: &FollowerParams,
    pending: &mut PendingApply,
    decoding: &mut Option<tokio::task::JoinHandle<Result<PeerMsg, WireError>>>,
    inbox: &mut mpsc::Receiver<Result<Inbound, String>>,
) -> Result<(), String> {
    while decoding.is_none() {
        match inbox.try_recv() {
            Ok(item) => take(core, params, pending, decoding, item?)?,
            Err(_) => break,
        }
    }
    Ok(())
}

/// Takes one message from the leader into the core; entries are queued to
/// be applied (at once, or after the test knob's delay). Lease requests
/// never get here: the connection reader answers them.
fn receive(
    core: &mut Follower,
    params: &FollowerParams,
    pending: &mut PendingApply,
    msg: PeerMsg,
) -> Result<(), String> {
    let now = unix_ms();
    match msg {
        PeerMsg::Entries { epoch, entries, leader_last_lsn, leader_now_ms } => {
            let fresh = core.handle_entries(now, epoch, &entries, leader_last_lsn, leader_now_ms)?;
            if !fresh.is_empty() {
                pending.push_back((tokio::time::Instant::now() + params.apply_delay, fresh.to_vec()));
            }
            Ok(())
        }
        PeerMsg::Heartbeat { epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms } => {
            core.handle_heartbeat(now, epoch, leader_last_lsn, leader_durable_lsn, leader_now_ms)
        }
        PeerMsg::Refuse { reason } => Err(format!("the leader ended the stream: {reason}")),
        other => Err(format!("unexpected {} in the stream", other.kind())),
    }
}

/// Writes the entries after `kept` (which the new leader's log does not
/// hold) to a rollback file and records the event. The snapshot that follows
/// discards them.
async fn save_rollback(
    db: &Arc<Db>,
    metrics: &Metrics,
    params: &FollowerParams,
    leader_id: u64,
    epoch: u64,
    kept: Lsn,
) -> Result<(), String> {
    let db2 = db.clone();
    let (entries, last) = tokio::task::spawn_blocking(move || db2.entries_after(kept))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading the divergent entries for the rollback file: {e}"))?;
    if last <= kept {
        return Ok(());
    }
    // A retry after an interrupted snapshot finds the same divergence: the
    // file already exists.
    let existing = rollback::list(&params.data_dir).unwrap_or_default();
    if existing
        .iter()
        .any(|f| f.header.kept_through_lsn == kept && f.header.last_lsn == last && f.header.new_epoch == epoch)
    {
        return Ok(());
    }
    // Writing the file formats every removed value (a large one takes
    // seconds): on a blocking thread, never on the event loop.
    let (dir, node_id) = (params.data_dir.clone(), params.node_id);
    let file = tokio::task::spawn_blocking(move || {
        rollback::write(&dir, node_id, leader_id, epoch, kept, last, &entries, unix_ms())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("writing the rollback file in {}: {e}", params.data_dir.display()))?;
    let h = &file.header;
    metrics.rollback_entries.inc_by(h.entries);
    params.events.record(
        "rollback",
        format!(
            "node {} rejoined as a follower of node {leader_id} (epoch {epoch}): {} entries (LSN {}..{}, committed {} .. {}) \
             were not on node {leader_id}; saved to {}",
            params.node_id,
            h.entries,
            h.first_lsn,
            h.last_lsn,
            rollback::rfc3339(h.first_commit_ms),
            rollback::rfc3339(h.last_commit_ms),
            file.path.display()
        ),
        EventFields { lost_writes: Some(h.entries), lsn_range: Some((h.first_lsn, h.last_lsn)), ..Default::default() },
    );
    Ok(())
}

/// Receives a snapshot into a fresh store, persists it, then swaps it in.
async fn receive_snapshot(
    db: &Arc<Db>,
    metrics: &Metrics,
    core: &mut Follower,
    history: &EpochHistory,
    reader: &mut crate::peer_auth::PeerReader,
    buf: &mut BytesMut,
) -> Result<(), String> {
    // Lease requests may arrive before the snapshot starts and between its
    // chunks; a follower without a state does not grant them.
    let msg = loop {
        match read_frame(reader, buf).await.map_err(|e| e.to_string())? {
            PeerMsg::LeaseRequest { .. } => continue,
            other => break other,
        }
    };
    let PeerMsg::SnapshotBegin { epoch, start_lsn } = msg else {
        return Err(format!("expected SnapshotBegin, got {}", msg.kind()));
    };
    core.handle_snapshot_begin(unix_ms(), epoch, start_lsn)?;
    tracing::info!(start_lsn, "receiving a snapshot from the leader");
    let mut store = db.new_store();
    let (mut chunks, mut bytes) = (0u64, 0usize);
    let end_lsn = loop {
        match read_frame(reader, buf).await.map_err(|e| e.to_string())? {
            PeerMsg::SnapshotChunk { bytes: chunk } => {
                store.load_chunk(&chunk).map_err(|e| format!("snapshot chunk {chunks}: {e}"))?;
                chunks += 1;
                bytes += chunk.len();
                if chunks % 256 == 0 {
                    tracing::info!(chunks, bytes, keys = store.len(), "snapshot progress");
                }
            }
            PeerMsg::SnapshotEnd { end_lsn } => break end_lsn,
            PeerMsg::LeaseRequest { .. } => {}
            other => return Err(format!("unexpected {} during a snapshot", other.kind())),
        }
    };
    core.handle_snapshot_end(unix_ms(), end_lsn)?;
    let keys = store.len();
    let db2 = db.clone();
    let history = history.clone();
    tokio::task::spawn_blocking(move || db2.install_snapshot(store, start_lsn, epoch, &history))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    metrics.repl_snapshots_received.inc();
    core.handle_flushed(start_lsn);
    core.handle_applied(start_lsn, 0);
    tracing::info!(start_lsn, end_lsn, keys, bytes, "snapshot installed");
    Ok(())
}
