//! The leader side of replication in the node: one actor task owns the
//! sans-IO `tandem_core::repl::Leader` and feeds it every input (appends,
//! local durability, follower acks, subscriptions, waits, time); it carries
//! out what the core asks (send entries from the backlog or log, snapshots,
//! heartbeats) and releases waiting writes.
//!
//! Owns: the peer listener's follower sessions and the actor. Never decides
//! when a write is acknowledged: that is the core's `poll_release`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tandem_core::failover::{LeaseConfig, LeaseKeeper};
use tandem_core::repl::leader::{LeaderConfig, Outcome, ReplicaStatus, Transmit};
use tandem_core::repl::{Durability, Leader, PeerMsg};
// Lease requests per lease period: the replica's constant.
use tandem_core::replica::single_leader::LEASE_REQUESTS_PER_LEASE;
use tandem_core::store::BUCKETS;
use tandem_core::Lsn;
use tokio::sync::{mpsc, oneshot, watch};

use super::wire::{read_frame, write_frame, WireError};
use crate::db::{mono_ms, unix_ms, Db};
use crate::faults::Faults;
use crate::metrics::Metrics;

/// Events queued to the actor (bounded: senders wait when it is busy).
const EVENTS_MAX: usize = 65_536;
/// Instructions queued per follower session; the core's in-flight byte
/// limit keeps entry batches far below it, heartbeats beyond it are dropped.
const SESSION_QUEUE_MAX: usize = 1024;

enum Event {
    Subscribe {
        from: u64,
        epoch: u64,
        last_lsn: Lsn,
        history: Vec<(u64, Lsn)>,
        client_addr: String,
        reply: oneshot::Sender<Subscribed>,
    },
    Ack {
        from: u64,
        session: u64,
        flushed: Lsn,
        applied: Lsn,
    },
    Disconnect {
        from: u64,
        session: u64,
    },
    Sent {
        to: u64,
        session: u64,
        last_lsn: Lsn,
        bytes: usize,
    },
    SnapshotSent {
        to: u64,
        session: u64,
        start_lsn: Lsn,
    },
    Wait {
        lsn: Lsn,
        durability: Durability,
        reply: oneshot::Sender<Outcome>,
    },
    WaitReplicas {
        lsn: Lsn,
        numreplicas: usize,
        timeout_ms: u64,
        reply: oneshot::Sender<Outcome>,
    },
    LeaseGrant {
        from: u64,
        session: u64,
        stamp_ms: u64,
    },
}

struct Subscribed {
    answer: PeerMsg,
    session: Option<(u64, mpsc::Receiver<Transmit>)>,
}

/// A follower as `INFO replication` shows it.
#[derive(Debug, Clone)]
pub struct ReplicaView {
    /// Progress as the core reports it.
    pub status: ReplicaStatus,
    /// The follower's client address, once it subscribed.
    pub client_addr: Option<String>,
}

/// Handle to the leader actor.
#[derive(Clone)]
pub struct LeaderHandle {
    events: mpsc::Sender<Event>,
    view: Arc<Mutex<Vec<ReplicaView>>>,
    stop: Arc<watch::Sender<bool>>,
    /// `mono_ms` reading until which the lease holds (`u64::MAX` without
    /// leases).
    lease_until: Arc<AtomicU64>,
}

impl LeaderHandle {
    /// Whether the leader holds its lease now (always true without leases).
    pub fn lease_valid(&self) -> bool {
        mono_ms() < self.lease_until.load(Ordering::Acquire)
    }

    /// Waits until `lsn` meets `durability` (or its timeout passes).
    /// `None`: the actor stopped (this node stopped leading) first.
    pub async fn wait(&self, lsn: Lsn, durability: Durability) -> Option<Outcome> {
        let (reply, rx) = oneshot::channel();
        self.events.send(Event::Wait { lsn, durability, reply }).await.ok()?;
        rx.await.ok()
    }

    /// Redis `WAIT`: how many followers hold `lsn`.
    pub async fn wait_replicas(&self, lsn: Lsn, numreplicas: usize, timeout_ms: u64) -> usize {
        let (reply, rx) = oneshot::channel();
        if self.events.send(Event::WaitReplicas { lsn, numreplicas, timeout_ms, reply }).await.is_err() {
            return 0;
        }
        match rx.await {
            Ok(Outcome::Replicas(n)) => n,
            _ => 0,
        }
    }

    /// The followers' progress as of the actor's last step.
    pub fn replicas(&self) -> Vec<ReplicaView> {
        self.view.lock().clone()
    }

    /// Serves a follower that connected to the peer port.
    pub async fn serve_follower(
        &self,
        db: Arc<Db>,
        metrics: Arc<Metrics>,
        faults: Arc<Faults>,
        stream: crate::peer_auth::PeerStream,
        first: PeerMsg,
    ) {
        let PeerMsg::Subscribe { node_id, epoch, last_lsn, client_addr, history, .. } = first else {
            return;
        };
        if faults.is_cut(node_id) {
            tracing::debug!(follower = node_id, "dropped a subscription: link cut (fault injection)");
            return;
        }
        let (reply, rx) = oneshot::channel();
        let event = Event::Subscribe { from: node_id, epoch, last_lsn, history, client_addr, reply };
        if self.events.send(event).await.is_err() {
            return;
        }
        let Ok(subscribed) = rx.await else { return };
        let (mut reader, mut writer) = stream.into_split();
        if write_frame(&mut writer, &subscribed.answer).await.is_err() {
            return;
        }
        let Some((session, mut instructions)) = subscribed.session else {
            tracing::warn!(follower = node_id, answer = ?subscribed.answer, "refused a follower");
            return;
        };
        tracing::info!(follower = node_id, last_lsn, "follower subscribed");
        let events = self.events.clone();
        let reader_events = self.events.clone();
        let reader_faults = faults.clone();
        // Acks from the follower.
        let read_task = tokio::spawn(async move {
            let mut buf = BytesMut::with_capacity(4096);
            loop {
                let frame = read_frame(&mut reader, &mut buf).await;
                if reader_faults.is_cut(node_id) {
                    tracing::info!(follower = node_id, "link cut (fault injection); dropping the follower");
                    return;
                }
                match frame {
                    Ok(PeerMsg::Ack { flushed_lsn, applied_lsn }) => {
                        let ev = Event::Ack { from: node_id, session, flushed: flushed_lsn, applied: applied_lsn };
                        if reader_events.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(PeerMsg::LeaseGrant { stamp_ms }) => {
                        let ev = Event::LeaseGrant { from: node_id, session, stamp_ms };
                        if reader_events.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Ok(PeerMsg::Refuse { reason }) => {
                        tracing::warn!(follower = node_id, reason, "follower refused the stream");
                        return;
                    }
                    Ok(other) => {
                        tracing::warn!(follower = node_id, kind = other.kind(), "unexpected message from follower");
                        return;
                    }
                    Err(e) => {
                        tracing::info!(follower = node_id, error = %e, "follower connection ended");
                        return;
                    }
                }
            }
        });
        // Instructions from the actor.
        let mut out = Vec::with_capacity(1 << 20);
        let result: Result<(), WireError> = async {
            // Instructions taken off the queue while a fragmented frame was
            // being sent (everything but heartbeats waits its turn).
            let mut deferred: std::collections::VecDeque<Transmit> = std::collections::VecDeque::new();
            loop {
                let t = match deferred.pop_front() {
                    Some(t) => t,
                    None => match instructions.recv().await {
                        Some(t) => t,
                        None => break,
                    },
                };
                if faults.is_cut(node_id) || read_task.is_finished() {
                    return Ok(());
                }
                if let Some(d) = faults.send_delay(node_id) {
                    tokio::time::sleep(d).await;
                }
                match t {
                    Transmit::Entries { from_lsn, max_bytes, .. } => {
                        // Recent entries come from memory; older ones from the
                        // log files, on a blocking thread.
                        let read = match db.read_backlog(from_lsn, max_bytes) {
                            Some(entries) => Ok(Some(entries)),
                            None => {
                                let db = db.clone();
                                tokio::task::spawn_blocking(move || db.read_entries(from_lsn, max_bytes))
                                    .await
                                    .expect("log read does not panic")
                            }
                        };
                        let entries = match read {
                            Ok(Some(e)) => e,
                            Ok(None) => {
                                tracing::info!(follower = node_id, from_lsn, "log no longer holds what the follower needs; it will get a snapshot");
                                return Ok(());
                            }
                            Err(e) => {
                                tracing::error!(follower = node_id, error = %e, "reading the log for a follower failed");
                                return Ok(());
                            }
                        };
                        let last = entries.last().map_or(from_lsn.saturating_sub(1), |e| e.lsn);
                        let bytes: usize = entries.iter().map(|e| e.payload.len()).sum();
                        let msg = PeerMsg::Entries {
                            epoch: db.epoch(),
                            entries,
                            leader_last_lsn: db.last_lsn(),
                            leader_now_ms: unix_ms(),
                        };
                        out.clear();
                        if bytes > crate::db::LARGE_WRITE_BYTES {
                            // Encoding copies every payload: a large one on a
                            // blocking thread, so lease renewals and the other
                            // followers' streams go on; the lease requests
                            // queued meanwhile go out at once (decision 0028).
                            let mut buf = std::mem::take(&mut out);
                            let mut encode = tokio::task::spawn_blocking(move || {
                                super::wire::encode_frame(&msg, &mut buf);
                                buf
                            });
                            let mut open = true;
                            out = loop {
                                tokio::select! {
                                    done = &mut encode => break done.expect("frame encoding does not panic"),
                                    t = instructions.recv(), if open => match t {
                                        Some(Transmit::Heartbeat { msg, .. }) => write_frame(&mut writer, &msg).await?,
                                        Some(other) => deferred.push_back(other),
                                        None => open = false,
                                    },
                                }
                            };
                        } else {
                            super::wire::encode_frame(&msg, &mut out);
                        }
                        if out.len() > super::wire::FRAGMENT_BYTES * 2 {
                            // A large frame goes in fragments, with the
                            // heartbeats (lease requests) queued meanwhile
                            // sent between them: the lease never waits for
                            // a whole large entry to cross the wire.
                            let body = &out[4..];
                            let mut chunks = body.chunks(super::wire::FRAGMENT_BYTES).peekable();
                            while let Some(chunk) = chunks.next() {
                                let last = chunks.peek().is_none();
                                let header = super::wire::fragment_header(chunk.len(), last);
                                tokio::io::AsyncWriteExt::write_all(&mut writer, &header).await?;
                                tokio::io::AsyncWriteExt::write_all(&mut writer, chunk).await?;
                                while let Ok(t) = instructions.try_recv() {
                                    match t {
                                        Transmit::Heartbeat { msg, .. } => write_frame(&mut writer, &msg).await?,
                                        other => deferred.push_back(other),
                                    }
                                }
                            }
                        } else {
                            tokio::io::AsyncWriteExt::write_all(&mut writer, &out).await?;
                        }
                        tokio::io::AsyncWriteExt::flush(&mut writer).await?;
                        metrics.repl_bytes_sent.inc_by(out.len() as u64);
                        let _ = events.send(Event::Sent { to: node_id, session, last_lsn: last, bytes }).await;
                    }
                    Transmit::Snapshot { .. } => {
                        let start_lsn = send_snapshot(&db, &metrics, node_id, &mut writer).await?;
                        let _ = events.send(Event::SnapshotSent { to: node_id, session, start_lsn }).await;
                    }
                    Transmit::Heartbeat { msg, .. } => write_frame(&mut writer, &msg).await?,
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::info!(follower = node_id, error = %e, "stream to follower ended");
        }
        read_task.abort();
        let _ = self.events.send(Event::Disconnect { from: node_id, session }).await;
    }

    /// Stops the actor.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// Streams a fuzzy snapshot of the live store: `SnapshotBegin`, one chunk
/// per non-empty bucket (read lock held per bucket only), `SnapshotEnd`.
async fn send_snapshot(
    db: &Arc<Db>,
    metrics: &Metrics,
    follower: u64,
    writer: &mut crate::peer_auth::PeerWriter,
) -> Result<Lsn, WireError> {
    let start_lsn = db.last_lsn();
    tracing::info!(follower, start_lsn, "sending a snapshot");
    write_frame(writer, &PeerMsg::SnapshotBegin { epoch: db.epoch(), start_lsn }).await?;
    let mut sent_bytes = 0usize;
    for bucket in 0..BUCKETS {
        for chunk in db.bucket_chunks(bucket) {
            sent_bytes += chunk.len();
            write_frame(writer, &PeerMsg::SnapshotChunk { bytes: Bytes::from(chunk) }).await?;
        }
        if bucket % 128 == 127 {
            tracing::info!(
                follower,
                progress = format!("{}/{BUCKETS} buckets", bucket + 1),
                sent_bytes,
                "snapshot progress"
            );
        }
    }
    let end_lsn = db.last_lsn();
    write_frame(writer, &PeerMsg::SnapshotEnd { end_lsn }).await?;
    metrics.repl_snapshots_sent.inc();
    metrics.repl_bytes_sent.inc_by(sent_bytes as u64);
    tracing::info!(follower, start_lsn, end_lsn, sent_bytes, "snapshot sent");
    Ok(start_lsn)
}

/// Starts the leader actor.
pub fn start(
    db: Arc<Db>,
    metrics: Arc<Metrics>,
    node_id: u64,
    client_addr: String,
    followers: Vec<u64>,
    default_durability: Durability,
    lease: Option<(LeaseConfig, Arc<super::read_gate::ReadGate>)>,
) -> LeaderHandle {
    let (lease, read_gate) = lease.unzip();
    let (events_tx, events) = mpsc::channel(EVENTS_MAX);
    let keeper = lease.map(|cfg| LeaseKeeper::new(cfg, &followers, followers.len() + 1));
    let lease_until = Arc::new(AtomicU64::new(match &keeper {
        None => u64::MAX,
        Some(k) => k.valid_until().unwrap_or(0),
    }));
    // Reads follow the lease exactly like writes (see `read_gate`); without
    // leases the caller opened the gate.
    let read_gate = match (&keeper, read_gate) {
        (Some(k), Some(gate)) => Some((gate.lease_leader(k.valid_until().unwrap_or(0)), gate)),
        _ => None,
    };
    let view = Arc::new(Mutex::new(Vec::new()));
    let (stop, stop_rx) = watch::channel(false);
    let mut config = LeaderConfig::new(node_id, client_addr, followers);
    config.default_durability = default_durability;
    let mut core = Leader::new(config, db.epoch(), db.last_lsn(), db.durable_lsn(), unix_ms());
    core.set_history(db.history());
    let actor = Actor {
        core,
        db,
        metrics,
        sessions: BTreeMap::new(),
        next_session: 1,
        next_token: 1,
        waiting: BTreeMap::new(),
        client_addrs: BTreeMap::new(),
        view: view.clone(),
        lease: keeper.map(|k| (k, lease.expect("keeper implies config"))),
        lease_until: lease_until.clone(),
        lease_was_valid: false,
        read_gate,
    };
    tokio::spawn(actor.run(events, stop_rx));
    LeaderHandle { events: events_tx, view, stop: Arc::new(stop), lease_until }
}

struct Actor {
    core: Leader,
    db: Arc<Db>,
    metrics: Arc<Metrics>,
    /// Follower id -> (session id, instruction queue).
    sessions: BTreeMap<u64, (u64, mpsc::Sender<Transmit>)>,
    next_session: u64,
    next_token: u64,
    waiting: BTreeMap<u64, oneshot::Sender<Outcome>>,
    client_addrs: BTreeMap<u64, String>,
    view: Arc<Mutex<Vec<ReplicaView>>>,
    /// Lease keeping, when leases are on.
    lease: Option<(LeaseKeeper, LeaseConfig)>,
    lease_until: Arc<AtomicU64>,
    lease_was_valid: bool,
    /// The node's read gate and this leadership's generation in it (`None`
    /// without leases: the gate stays open).
    read_gate: Option<(u64, Arc<super::read_gate::ReadGate>)>,
}

impl Actor {
    async fn run(mut self, mut events: mpsc::Receiver<Event>, mut stop: watch::Receiver<bool>) {
        let mut applied = self.db.applied();
        let mut durable = self.db.durable();
        let mut seen_lsn = self.core.last_lsn();
        let mut view_refresh = tokio::time::interval(Duration::from_millis(100));
        let lease_every =
            self.lease.as_ref().map_or(3_600_000, |(_, c)| (c.lease_ms / LEASE_REQUESTS_PER_LEASE).max(1));
        let mut lease_tick = tokio::time::interval(Duration::from_millis(lease_every));
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.core.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep(Duration::from_millis(at.saturating_sub(unix_ms()))).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = applied.changed() => {
                    let last = *applied.borrow_and_update();
                    let now = unix_ms();
                    while seen_lsn < last {
                        seen_lsn += 1;
                        let commit_ms = self.db.commit_ms_of(seen_lsn).unwrap_or(now);
                        self.core.handle_appended(now, seen_lsn, commit_ms);
                    }
                }
                _ = durable.changed() => {
                    let lsn = *durable.borrow_and_update();
                    // Durability can only cover what the core has heard of.
                    self.core.handle_local_durable(unix_ms(), lsn.min(seen_lsn));
                }
                ev = events.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = sleep => self.core.handle_timeout(unix_ms()),
                _ = view_refresh.tick() => self.refresh_view(),
                _ = lease_tick.tick(), if self.lease.is_some() => self.request_leases(None),
            }
            self.drain();
        }
        // Waiting writes and WAITs see their channel close: the leader
        // stopped before their outcome was known.
        self.waiting.clear();
    }

    fn handle(&mut self, ev: Event) {
        let now = unix_ms();
        match ev {
            Event::Subscribe { from, epoch, last_lsn, history, client_addr, reply } => {
                let answer =
                    self.core.handle_subscribe(now, from, epoch, last_lsn, &history, self.db.first_retained_lsn());
                let session = if matches!(answer, PeerMsg::Welcome { .. }) {
                    let id = self.next_session;
                    self.next_session += 1;
                    let (tx, rx) = mpsc::channel(SESSION_QUEUE_MAX);
                    self.sessions.insert(from, (id, tx));
                    self.client_addrs.insert(from, client_addr);
                    // A new follower can renew the lease at once (after a
                    // promotion this is what lets writes start).
                    self.request_leases(Some(from));
                    Some((id, rx))
                } else {
                    None
                };
                let _ = reply.send(Subscribed { answer, session });
            }
            Event::Ack { from, session, flushed, applied } => {
                if self.is_current(from, session) {
                    self.core.handle_ack(now, from, flushed, applied);
                }
            }
            Event::Disconnect { from, session } => {
                if self.is_current(from, session) {
                    self.sessions.remove(&from);
                    self.core.handle_disconnect(now, from);
                    tracing::info!(follower = from, "follower disconnected");
                }
            }
            // Events of a replaced connection must not reach the core.
            Event::Sent { to, session, last_lsn, bytes } => {
                if self.is_current(to, session) {
                    self.core.handle_sent(now, to, last_lsn, bytes);
                }
            }
            Event::SnapshotSent { to, session, start_lsn } => {
                if self.is_current(to, session) {
                    self.core.handle_snapshot_sent(now, to, start_lsn);
                }
            }
            Event::Wait { lsn, durability, reply } => {
                let token = self.token(reply);
                self.core.wait_for(now, token, lsn, &durability);
            }
            Event::WaitReplicas { lsn, numreplicas, timeout_ms, reply } => {
                let token = self.token(reply);
                self.core.wait_replicas(now, token, lsn, numreplicas, timeout_ms);
            }
            Event::LeaseGrant { from, session, stamp_ms } => {
                if !self.is_current(from, session) {
                    return;
                }
                if let Some((keeper, _)) = &mut self.lease {
                    let was_valid = keeper.is_valid(mono_ms());
                    keeper.handle_grant(from, stamp_ms);
                    let until = keeper.valid_until().unwrap_or(0);
                    self.lease_until.store(until, Ordering::Release);
                    if let Some((generation, gate)) = &self.read_gate {
                        gate.extend(*generation, until);
                    }
                    if !was_valid && keeper.is_valid(mono_ms()) {
                        tracing::info!(epoch = self.core.epoch(), "leader lease acquired; accepting writes");
                        self.lease_was_valid = true;
                        self.metrics.lease_held.set(1);
                    }
                }
            }
        }
    }

    /// Sends a lease request stamped with the monotonic clock to one
    /// follower, or to every connected one (and notes a lost lease).
    fn request_leases(&mut self, only: Option<u64>) {
        let Some((keeper, _)) = &self.lease else { return };
        let now = mono_ms();
        let valid = keeper.is_valid(now);
        if only.is_none() {
            if self.lease_was_valid && !valid {
                tracing::warn!(
                    epoch = self.core.epoch(),
                    "leader lease expired: no majority renewed it in time; refusing writes until one does"
                );
            }
            self.lease_was_valid = valid;
            self.metrics.lease_held.set(i64::from(valid));
        }
        let msg = PeerMsg::LeaseRequest { epoch: self.core.epoch(), stamp_ms: now };
        for (&to, (_, queue)) in &self.sessions {
            if only.is_none_or(|id| id == to) {
                let _ = queue.try_send(Transmit::Heartbeat { to, msg: msg.clone() });
            }
        }
    }

    /// True if `session` is the follower's current connection.
    fn is_current(&self, follower: u64, session: u64) -> bool {
        self.sessions.get(&follower).is_some_and(|(s, _)| *s == session)
    }

    fn token(&mut self, reply: oneshot::Sender<Outcome>) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.waiting.insert(token, reply);
        token
    }

    /// Hands out everything the core produced.
    fn drain(&mut self) {
        while let Some(release) = self.core.poll_release() {
            if let Some(reply) = self.waiting.remove(&release.token) {
                let _ = reply.send(release.outcome);
            }
        }
        let now = unix_ms();
        while let Some(t) = self.core.poll_transmit(now) {
            let to = match &t {
                Transmit::Entries { to, .. } | Transmit::Snapshot { to } | Transmit::Heartbeat { to, .. } => *to,
            };
            let Some((_, queue)) = self.sessions.get(&to) else { continue };
            if queue.try_send(t).is_err() {
                // Only heartbeats can pile up (entries are bounded by the
                // in-flight limit); a session that stopped reading its queue
                // is dead and will disconnect.
                tracing::debug!(follower = to, "follower session queue full; instruction dropped");
            }
        }
    }

    fn refresh_view(&mut self) {
        let now = unix_ms();
        let replicas = self.core.replicas(now);
        for r in &replicas {
            self.metrics.observe_replica(r.id, r.lsn_lag, r.time_lag_ms);
        }
        *self.view.lock() = replicas
            .into_iter()
            .map(|status| ReplicaView { client_addr: self.client_addrs.get(&status.id).cloned(), status })
            .collect();
    }
}
