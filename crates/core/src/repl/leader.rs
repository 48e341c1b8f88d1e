//! The leader side of single-leader replication.
//!
//! Owns, per follower: connection state, what was sent, what was
//! acknowledged (flushed and applied LSN), back-pressure; and, per waiting
//! write or `WAIT`: whether its ack policy is met, and its timeout. It hands
//! the node what to send ([`Transmit`]) and which replies to release
//! ([`Release`]).
//!
//! Must never: read the log or the store (the node reads entries when it
//! executes a [`Transmit`]), count a follower as holding an entry it has not
//! acknowledged, or release an ack before the leader's own log is durable
//! up to that entry.
//!
//! Entries are shipped as soon as they are appended, before the leader's
//! own fsync: the follower's fsync then overlaps the leader's. A follower
//! may therefore hold entries the leader never made durable (if the leader
//! crashes before its fsync). Such a follower is never counted for an ack
//! (acks need the leader's durability too), a restarted leader is a new
//! `Leader` that refuses the follower's longer log, and the failover work
//! resolves the divergence with rollback files.
//!
//! Outputs are drained in this order by convention: `poll_transmit` until
//! `None`, then `poll_release` until `None`, then `poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::msg::{PeerMsg, STREAM_FROM_SNAPSHOT};
use super::policy::{AckLevel, AckPolicy, Durability, POLICY_MEMBERS_MAX};
use super::NodeId;
use crate::failover::{divergence_point, EpochHistory};
use crate::{Epoch, Lsn};

/// Default for [`LeaderConfig::batch_bytes_max`].
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default for [`LeaderConfig::inflight_bytes_max`].
pub const INFLIGHT_BYTES_MAX_DEFAULT: usize = 8 << 20;
/// Default for [`LeaderConfig::heartbeat_interval_ms`].
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 100;
/// Most followers a leader serves.
pub const FOLLOWERS_MAX: usize = POLICY_MEMBERS_MAX;
/// Most writes and `WAIT`s waiting or released-but-not-polled at once. The
/// node keeps far below it (connections times pipeline depth); going past
/// it is a programmer error.
pub const WAITERS_MAX: usize = 1 << 20;
/// How many recent `(lsn, commit_ms)` pairs the leader keeps to compute
/// time lag; a follower further behind is reported against the oldest one
/// kept (an underestimate of its lag).
pub const COMMIT_TIMES_MAX: usize = 1 << 16;
/// Most un-acknowledged `Entries` messages per follower, besides the byte
/// limit (so that many tiny batches cannot grow the bookkeeping).
pub const INFLIGHT_BATCHES_MAX: usize = 4096;

/// Settings of a leader.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// This node's id.
    pub node_id: NodeId,
    /// Where clients reach this node; sent to followers in `Welcome`.
    pub client_addr: String,
    /// The configured followers (members other than this node).
    pub followers: Vec<NodeId>,
    /// Target size of one `Entries` message (a larger entry goes alone).
    pub batch_bytes_max: usize,
    /// Un-acknowledged bytes per follower past which the leader stops
    /// sending to it (back-pressure).
    pub inflight_bytes_max: usize,
    /// A follower that was sent nothing for this long gets a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// Durability used by `WAIT` (its level) and by writes that name none.
    pub default_durability: Durability,
}

impl LeaderConfig {
    /// A configuration with every limit at its default and `async`/`flush`
    /// as the default durability.
    pub fn new(node_id: NodeId, client_addr: String, followers: Vec<NodeId>) -> LeaderConfig {
        LeaderConfig {
            node_id,
            client_addr,
            followers,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            inflight_bytes_max: INFLIGHT_BYTES_MAX_DEFAULT,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            default_durability: Durability::local(),
        }
    }
}

/// Where a follower stands, as seen by the leader (like
/// `pg_stat_replication.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaState {
    /// Not connected.
    Disconnected,
    /// Connected and receiving a snapshot.
    Snapshot,
    /// Connected and being sent entries it does not have yet.
    CatchingUp,
    /// Connected and has been sent everything at least once since.
    Streaming,
}

impl ReplicaState {
    /// Lower-case name for `INFO`, `/status` and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReplicaState::Disconnected => "disconnected",
            ReplicaState::Snapshot => "snapshot",
            ReplicaState::CatchingUp => "catching_up",
            ReplicaState::Streaming => "streaming",
        }
    }

    /// True if entries flow to the follower (what `first k` counts as
    /// connected).
    pub fn is_streaming_or_catching_up(&self) -> bool {
        matches!(self, ReplicaState::CatchingUp | ReplicaState::Streaming)
    }
}

/// One follower's progress, as the leader knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The follower's node id.
    pub id: NodeId,
    /// Connection state.
    pub state: ReplicaState,
    /// Last LSN sent on the current connection (or the last connection).
    pub sent_lsn: Lsn,
    /// Last LSN the follower reported on disk.
    pub flushed_lsn: Lsn,
    /// Last LSN the follower reported applied.
    pub applied_lsn: Lsn,
    /// Leader's last LSN minus `applied_lsn`.
    pub lsn_lag: u64,
    /// 0 if the follower applied everything; otherwise how long ago the
    /// leader committed the oldest entry the follower has not applied.
    pub time_lag_ms: u64,
    /// When the follower last acknowledged, if ever (leader's clock).
    pub last_ack_ms: Option<u64>,
}

/// Something the node must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Read entries from `from_lsn` on (at least one, up to about
    /// `max_bytes`) and send them in one `PeerMsg::Entries`, then call
    /// [`Leader::handle_sent`] (also when nothing could be read). If the
    /// log no longer holds `from_lsn`, disconnect the follower instead: it
    /// resubscribes and gets a snapshot.
    Entries {
        /// The follower.
        to: NodeId,
        /// First LSN to send.
        from_lsn: Lsn,
        /// Batch size target.
        max_bytes: usize,
    },
    /// Send a snapshot (`SnapshotBegin`, chunks, `SnapshotEnd`), then call
    /// [`Leader::handle_snapshot_sent`] with its start LSN. The log must
    /// still hold the entry after that LSN (take a newer snapshot if not).
    Snapshot {
        /// The follower.
        to: NodeId,
    },
    /// Send this `PeerMsg::Heartbeat`.
    Heartbeat {
        /// The follower.
        to: NodeId,
        /// The message.
        msg: PeerMsg,
    },
}

/// A waiting write or `WAIT` is settled: the node answers its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The token given to [`Leader::wait_for`] or [`Leader::wait_replicas`].
    pub token: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// How a wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The write is durable on the leader and its policy is met.
    Acked,
    /// The timeout passed first. The write is in the leader's log (and
    /// applied there); it may still reach more followers later.
    TimedOut {
        /// Followers that count for the policy and hold the write.
        have: usize,
        /// How many the policy needs.
        need: usize,
        /// Whether the write is durable on the leader.
        durable_on_leader: bool,
    },
    /// A `WAIT` ended: this many followers hold the LSN at the default ack
    /// level (exact when released).
    Replicas(usize),
}

/// Bookkeeping for one follower.
#[derive(Debug)]
struct Replica {
    id: NodeId,
    state: ReplicaState,
    sent_lsn: Lsn,
    flushed_lsn: Lsn,
    applied_lsn: Lsn,
    last_ack_ms: Option<u64>,
    /// When anything (entries, heartbeat, welcome) was last sent to it.
    last_sent_ms: u64,
    /// A `Transmit::Snapshot` is still to be handed out.
    snapshot_due: bool,
    /// A `Transmit::Entries` was handed out and `handle_sent` not yet called.
    entries_outstanding: bool,
    /// Un-acknowledged batches: (last LSN of the batch, bytes).
    inflight: VecDeque<(Lsn, usize)>,
    inflight_bytes: usize,
}

impl Replica {
    fn new(id: NodeId) -> Replica {
        Replica {
            id,
            state: ReplicaState::Disconnected,
            sent_lsn: 0,
            flushed_lsn: 0,
            applied_lsn: 0,
            last_ack_ms: None,
            last_sent_ms: 0,
            snapshot_due: false,
            entries_outstanding: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
        }
    }

    fn holds(&self, lsn: Lsn, level: AckLevel) -> bool {
        match level {
            AckLevel::Flush => self.flushed_lsn >= lsn,
            AckLevel::Apply => self.flushed_lsn >= lsn && self.applied_lsn >= lsn,
        }
    }

    fn reset_connection(&mut self) {
        self.state = ReplicaState::Disconnected;
        self.snapshot_due = false;
        self.entries_outstanding = false;
        self.inflight.clear();
        self.inflight_bytes = 0;
    }
}

#[derive(Debug)]
enum WaitKind {
    Write(Durability),
    Replicas(usize),
}

#[derive(Debug)]
struct Waiter {
    lsn: Lsn,
    kind: WaitKind,
    deadline_ms: Option<u64>,
}

/// The leader's replication state machine.
#[derive(Debug)]
pub struct Leader {
    config: LeaderConfig,
    epoch: Epoch,
    last_lsn: Lsn,
    durable_lsn: Lsn,
    created_ms: u64,
    /// Sorted by id.
    replicas: Vec<Replica>,
    /// Recent `(lsn, commit_ms)`, consecutive LSNs, bounded by
    /// [`COMMIT_TIMES_MAX`].
    commit_times: VecDeque<(Lsn, u64)>,
    /// By token; bounded by [`WAITERS_MAX`].
    waiters: BTreeMap<u64, Waiter>,
    /// `(deadline_ms, token)` of the waiters that have a timeout.
    deadlines: BTreeSet<(u64, u64)>,
    /// Settled waits not yet polled; at most one per waiter.
    releases: VecDeque<Release>,
    /// Where each epoch starts in the leader's log; empty when the node does
    /// not track it (then a follower ahead of the leader is refused).
    history: EpochHistory,
}

impl Leader {
    /// A leader at `epoch` whose log ends at `last_lsn`, durable up to
    /// `durable_lsn`.
    pub fn new(config: LeaderConfig, epoch: Epoch, last_lsn: Lsn, durable_lsn: Lsn, now_ms: u64) -> Leader {
        let mut ids = config.followers.clone();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), config.followers.len(), "followers listed twice: {:?}", config.followers);
        assert!(ids.len() <= FOLLOWERS_MAX, "{} followers exceed FOLLOWERS_MAX", ids.len());
        assert!(!ids.contains(&config.node_id), "the leader {} is listed as its own follower", config.node_id);
        assert!(durable_lsn <= last_lsn, "durable lsn {durable_lsn} is past the last lsn {last_lsn}");
        assert!(config.batch_bytes_max > 0 && config.inflight_bytes_max > 0, "byte limits must be positive");
        Leader {
            replicas: ids.into_iter().map(Replica::new).collect(),
            config,
            epoch,
            last_lsn,
            durable_lsn,
            created_ms: now_ms,
            commit_times: VecDeque::new(),
            waiters: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            releases: VecDeque::new(),
            history: EpochHistory::default(),
        }
    }

    /// Sets where each epoch starts in the leader's log (its own epoch must
    /// already be recorded). With a history, a subscriber whose log parts
    /// from the leader's is told where (`Welcome.diverged_after`) and gets a
    /// snapshot.
    pub fn set_history(&mut self, history: EpochHistory) {
        self.history = history;
    }

    fn replica_mut(&mut self, id: NodeId) -> Option<&mut Replica> {
        self.replicas.binary_search_by_key(&id, |r| r.id).ok().map(|i| &mut self.replicas[i])
    }

    // ------------------------------------------------------------ inputs

    /// A follower subscribed. Returns the answer to send: `Welcome` (then a
    /// snapshot if `stream_from` is [`STREAM_FROM_SNAPSHOT`]) or `Refuse`
    /// (then close). `first_retained_lsn` is the oldest LSN the leader's log
    /// still holds. A subscription from a connected follower replaces its
    /// old connection.
    pub fn handle_subscribe(
        &mut self,
        now_ms: u64,
        from: NodeId,
        epoch: Epoch,
        last_lsn: Lsn,
        sub_history: &[(Epoch, Lsn)],
        first_retained_lsn: Lsn,
    ) -> PeerMsg {
        let (leader_epoch, leader_last) = (self.epoch, self.last_lsn);
        let Some(r) = self.replica_mut(from) else {
            return PeerMsg::Refuse { reason: format!("node {from} is not a member of this cluster") };
        };
        if epoch > leader_epoch {
            r.reset_connection();
            return PeerMsg::Refuse {
                reason: format!(
                    "stale leader: the follower has seen epoch {epoch}, this leader is at epoch {leader_epoch}"
                ),
            };
        }
        let diverged_after = if self.history.pairs().is_empty() || last_lsn == 0 {
            None
        } else {
            let sub = EpochHistory::from_pairs(sub_history.to_vec());
            let p = divergence_point(&self.history, leader_last, &sub, last_lsn);
            (p < last_lsn).then_some(p)
        };
        let Some(r) = self.replica_mut(from) else { unreachable!("checked above") };
        if diverged_after.is_none() && last_lsn > leader_last {
            r.reset_connection();
            return PeerMsg::Refuse {
                reason: format!(
                    "divergent log: the follower's log ends at lsn {last_lsn}, past this leader's last lsn {leader_last}"
                ),
            };
        }
        r.reset_connection();
        r.last_sent_ms = now_ms;
        // The follower's log ends at last_lsn now (it may have lost an
        // unsynced tail, or been wiped): never count beyond it, nor beyond
        // the divergence point.
        let kept = diverged_after.unwrap_or(last_lsn);
        r.flushed_lsn = r.flushed_lsn.min(kept);
        r.applied_lsn = r.applied_lsn.min(kept);
        // A divergent follower gets a snapshot. It keeps its whole old log
        // (and reports it if it is fenced meanwhile) until the snapshot is
        // complete and installed in one step, so it never holds nothing
        // (decision 0009; the failover simulator lost an acknowledged write,
        // seed 101525, when a divergent follower emptied its log first).
        let stream_from = if diverged_after.is_some() || last_lsn + 1 < first_retained_lsn {
            // It discards its state and log for the snapshot.
            r.state = ReplicaState::Snapshot;
            r.snapshot_due = true;
            r.flushed_lsn = 0;
            r.applied_lsn = 0;
            r.sent_lsn = 0;
            STREAM_FROM_SNAPSHOT
        } else {
            r.sent_lsn = last_lsn;
            r.state = if last_lsn == leader_last { ReplicaState::Streaming } else { ReplicaState::CatchingUp };
            last_lsn + 1
        };
        self.settle();
        PeerMsg::Welcome {
            leader_id: self.config.node_id,
            epoch: self.epoch,
            leader_client_addr: self.config.client_addr.clone(),
            stream_from,
            history: self.history.pairs().to_vec(),
            diverged_after,
        }
    }

    /// A follower acknowledged. Values past what was sent to it are
    /// clamped (a follower cannot hold what it was never sent); acks while
    /// it is disconnected or receiving a snapshot are ignored.
    pub fn handle_ack(&mut self, now_ms: u64, from: NodeId, flushed_lsn: Lsn, applied_lsn: Lsn) {
        let Some(r) = self.replica_mut(from) else { return };
        if !r.state.is_streaming_or_catching_up() {
            return;
        }
        r.flushed_lsn = r.flushed_lsn.max(flushed_lsn.min(r.sent_lsn));
        r.applied_lsn = r.applied_lsn.max(applied_lsn.min(r.sent_lsn));
        r.last_ack_ms = Some(now_ms);
        let received = r.flushed_lsn.max(r.applied_lsn);
        while let Some(&(lsn, bytes)) = r.inflight.front() {
            if lsn > received {
                break;
            }
            r.inflight.pop_front();
            r.inflight_bytes -= bytes;
        }
        self.settle();
    }

    /// The connection to a follower is gone. What it acknowledged stays
    /// counted: it is on its disk.
    pub fn handle_disconnect(&mut self, _now_ms: u64, from: NodeId) {
        let Some(r) = self.replica_mut(from) else { return };
        r.reset_connection();
        self.settle();
    }

    /// Entry `lsn` (committed at `commit_ms`, leader's clock) is in the log
    /// and applied on the leader.
    pub fn handle_appended(&mut self, _now_ms: u64, lsn: Lsn, commit_ms: u64) {
        assert_eq!(lsn, self.last_lsn + 1, "appended lsn {lsn} does not follow the last lsn {}", self.last_lsn);
        self.last_lsn = lsn;
        if self.commit_times.len() == COMMIT_TIMES_MAX {
            self.commit_times.pop_front();
        }
        self.commit_times.push_back((lsn, commit_ms));
    }

    /// The leader's own log is durable up to `lsn`.
    pub fn handle_local_durable(&mut self, _now_ms: u64, lsn: Lsn) {
        assert!(lsn <= self.last_lsn, "durable lsn {lsn} is past the last lsn {}", self.last_lsn);
        assert!(lsn >= self.durable_lsn, "durable lsn went back from {} to {lsn}", self.durable_lsn);
        if lsn > self.durable_lsn {
            self.durable_lsn = lsn;
            self.settle();
        }
    }

    /// The node executed a `Transmit::Entries` for `to`: entries up to
    /// `last_lsn_sent` are on their way (`bytes` on the wire). With nothing
    /// read, pass the LSN before `from_lsn` and 0 bytes.
    pub fn handle_sent(&mut self, now_ms: u64, to: NodeId, last_lsn_sent: Lsn, bytes: usize) {
        let last_lsn = self.last_lsn;
        assert!(last_lsn_sent <= last_lsn, "sent lsn {last_lsn_sent} is past the last lsn {last_lsn}");
        let Some(r) = self.replica_mut(to) else { return };
        if !r.state.is_streaming_or_catching_up() {
            return;
        }
        assert!(last_lsn_sent >= r.sent_lsn, "sent lsn to {to} went back from {} to {last_lsn_sent}", r.sent_lsn);
        r.entries_outstanding = false;
        if last_lsn_sent > r.sent_lsn {
            r.inflight.push_back((last_lsn_sent, bytes));
            r.inflight_bytes += bytes;
            r.sent_lsn = last_lsn_sent;
            r.last_sent_ms = now_ms;
        }
        if r.sent_lsn == last_lsn {
            r.state = ReplicaState::Streaming;
        }
    }

    /// The node finished sending `to` a snapshot holding every entry up to
    /// `start_lsn`; entries continue at `start_lsn + 1`.
    pub fn handle_snapshot_sent(&mut self, now_ms: u64, to: NodeId, start_lsn: Lsn) {
        let last_lsn = self.last_lsn;
        assert!(start_lsn <= last_lsn, "snapshot lsn {start_lsn} is past the last lsn {last_lsn}");
        let Some(r) = self.replica_mut(to) else { return };
        if r.state != ReplicaState::Snapshot {
            return;
        }
        r.sent_lsn = start_lsn;
        r.last_sent_ms = now_ms;
        r.state = if start_lsn == last_lsn { ReplicaState::Streaming } else { ReplicaState::CatchingUp };
        self.settle();
    }

    /// Registers a write at `lsn` that is answered when `durability` is met
    /// (and the leader's log is durable up to `lsn`) or when its timeout
    /// passes. The answer comes out of [`Leader::poll_release`], possibly
    /// at once.
    pub fn wait_for(&mut self, now_ms: u64, token: u64, lsn: Lsn, durability: &Durability) {
        let waiter = Waiter {
            lsn,
            kind: WaitKind::Write(durability.clone()),
            deadline_ms: (durability.timeout_ms > 0).then(|| now_ms.saturating_add(durability.timeout_ms)),
        };
        self.register(token, waiter);
    }

    /// Redis `WAIT`: released with [`Outcome::Replicas`] once
    /// `numreplicas` followers hold `lsn` at the default ack level, or when
    /// the timeout passes (0: no timeout). `numreplicas` 0 releases at once.
    /// The leader's own durability is not part of the count; a follower
    /// that acknowledged `lsn` and then disconnected still counts (the entry
    /// is on its disk).
    pub fn wait_replicas(&mut self, now_ms: u64, token: u64, lsn: Lsn, numreplicas: usize, timeout_ms: u64) {
        let waiter = Waiter {
            lsn,
            kind: WaitKind::Replicas(numreplicas),
            deadline_ms: (timeout_ms > 0).then(|| now_ms.saturating_add(timeout_ms)),
        };
        self.register(token, waiter);
    }

    fn register(&mut self, token: u64, waiter: Waiter) {
        assert!(waiter.lsn <= self.last_lsn, "wait for lsn {} past the last lsn {}", waiter.lsn, self.last_lsn);
        assert!(self.waiters.len() + self.releases.len() < WAITERS_MAX, "more than WAITERS_MAX waits outstanding");
        assert!(!self.waiters.contains_key(&token), "wait token {token} is already in use");
        if let Some(outcome) = self.settled(&waiter) {
            self.releases.push_back(Release { token, outcome });
            return;
        }
        if let Some(deadline) = waiter.deadline_ms {
            self.deadlines.insert((deadline, token));
        }
        self.waiters.insert(token, waiter);
    }

    /// Time passed: releases the waits whose timeout is due.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        while let Some(&(deadline, token)) = self.deadlines.first() {
            if deadline > now_ms {
                break;
            }
            self.deadlines.pop_first();
            let waiter = self.waiters.remove(&token).expect("every deadline has a waiter");
            let outcome = match &waiter.kind {
                WaitKind::Write(d) => {
                    let (have, need, _) = self.policy_progress(waiter.lsn, d);
                    Outcome::TimedOut { have, need, durable_on_leader: self.durable_lsn >= waiter.lsn }
                }
                WaitKind::Replicas(_) => Outcome::Replicas(self.count_holding(waiter.lsn, self.default_level())),
            };
            self.releases.push_back(Release { token, outcome });
        }
    }

    // ------------------------------------------------------------ outputs

    /// The next thing to send, if any. Per follower, in id order: a due
    /// snapshot, then entries (unless back-pressured or a batch is already
    /// being sent), then a heartbeat if nothing was sent for
    /// `heartbeat_interval_ms`.
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        let (last_lsn, durable_lsn, epoch) = (self.last_lsn, self.durable_lsn, self.epoch);
        let (batch_max, inflight_max, interval) =
            (self.config.batch_bytes_max, self.config.inflight_bytes_max, self.config.heartbeat_interval_ms);
        for r in &mut self.replicas {
            if r.snapshot_due {
                r.snapshot_due = false;
                return Some(Transmit::Snapshot { to: r.id });
            }
            if !r.state.is_streaming_or_catching_up() {
                continue;
            }
            let room = r.inflight_bytes < inflight_max && r.inflight.len() < INFLIGHT_BATCHES_MAX;
            if !r.entries_outstanding && r.sent_lsn < last_lsn && room {
                r.entries_outstanding = true;
                let max_bytes = batch_max.min(inflight_max - r.inflight_bytes);
                return Some(Transmit::Entries { to: r.id, from_lsn: r.sent_lsn + 1, max_bytes });
            }
            if now_ms >= r.last_sent_ms.saturating_add(interval) {
                r.last_sent_ms = now_ms;
                let msg = PeerMsg::Heartbeat {
                    epoch,
                    leader_last_lsn: last_lsn,
                    leader_durable_lsn: durable_lsn,
                    leader_now_ms: now_ms,
                };
                return Some(Transmit::Heartbeat { to: r.id, msg });
            }
        }
        None
    }

    /// The next settled wait, in the order they settled.
    pub fn poll_release(&mut self) -> Option<Release> {
        self.releases.pop_front()
    }

    /// The earliest time at which [`Leader::handle_timeout`] or
    /// [`Leader::poll_transmit`] has something to do (a wait's timeout or a
    /// heartbeat).
    pub fn poll_timeout(&self) -> Option<u64> {
        let wait = self.deadlines.first().map(|&(deadline, _)| deadline);
        let heartbeat = self
            .replicas
            .iter()
            .filter(|r| r.state.is_streaming_or_catching_up())
            .map(|r| r.last_sent_ms.saturating_add(self.config.heartbeat_interval_ms))
            .min();
        match (wait, heartbeat) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ------------------------------------------------------------ getters

    /// Every configured follower's progress, sorted by id.
    pub fn replicas(&self, now_ms: u64) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| ReplicaStatus {
                id: r.id,
                state: r.state,
                sent_lsn: r.sent_lsn,
                flushed_lsn: r.flushed_lsn,
                applied_lsn: r.applied_lsn,
                lsn_lag: self.last_lsn.saturating_sub(r.applied_lsn),
                time_lag_ms: self.time_lag_ms(r.applied_lsn, now_ms),
                last_ack_ms: r.last_ack_ms,
            })
            .collect()
    }

    /// The last LSN in the leader's log.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// The leader's log is durable up to here.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// The leader's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The configuration.
    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// How many writes and `WAIT`s are waiting.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// The oldest LSN a connected follower may still need re-sent (its
    /// flushed LSN + 1), or `None` with no follower connected. Truncating
    /// the log past it makes that follower need a snapshot if it reconnects.
    pub fn oldest_needed_lsn(&self) -> Option<Lsn> {
        self.replicas.iter().filter(|r| r.state != ReplicaState::Disconnected).map(|r| r.flushed_lsn + 1).min()
    }

    // ------------------------------------------------------------ policy

    fn default_level(&self) -> AckLevel {
        self.config.default_durability.level
    }

    /// 0 when `applied` is the last LSN, else now minus the commit time of
    /// the entry after `applied` (or of the oldest one still known; or the
    /// leader's start when none is known).
    fn time_lag_ms(&self, applied: Lsn, now_ms: u64) -> u64 {
        if applied >= self.last_lsn {
            return 0;
        }
        let commit_ms = match self.commit_times.front() {
            None => self.created_ms,
            Some(&(oldest, oldest_ms)) if applied + 1 < oldest => oldest_ms,
            Some(&(oldest, _)) => self.commit_times[(applied + 1 - oldest) as usize].1,
        };
        now_ms.saturating_sub(commit_ms)
    }

    fn count_holding(&self, lsn: Lsn, level: AckLevel) -> usize {
        self.replicas.iter().filter(|r| r.holds(lsn, level)).count()
    }

    /// (followers that count and hold `lsn`, followers needed, met).
    fn policy_progress(&self, lsn: Lsn, d: &Durability) -> (usize, usize, bool) {
        match &d.policy {
            AckPolicy::Async => (self.count_holding(lsn, d.level), 0, true),
            AckPolicy::Any(k) => {
                let have = self.count_holding(lsn, d.level);
                (have, *k, have >= *k)
            }
            AckPolicy::All => {
                let have = self.count_holding(lsn, d.level);
                (have, self.replicas.len(), have == self.replicas.len())
            }
            AckPolicy::First { k, among } => {
                let mut chosen = 0;
                let mut have = 0;
                for (i, id) in among.iter().enumerate() {
                    if chosen == *k {
                        break;
                    }
                    if among[..i].contains(id) {
                        continue;
                    }
                    let Ok(at) = self.replicas.binary_search_by_key(id, |r| r.id) else { continue };
                    let r = &self.replicas[at];
                    if r.state.is_streaming_or_catching_up() {
                        chosen += 1;
                        have += r.holds(lsn, d.level) as usize;
                    }
                }
                (have, *k, chosen == *k && have == *k)
            }
        }
    }

    /// The outcome if the wait is met now.
    fn settled(&self, w: &Waiter) -> Option<Outcome> {
        match &w.kind {
            // Cheap test first: under load most writes wait for the fsync.
            WaitKind::Write(_) if self.durable_lsn < w.lsn => None,
            WaitKind::Write(d) => self.policy_progress(w.lsn, d).2.then_some(Outcome::Acked),
            WaitKind::Replicas(n) => {
                let count = self.count_holding(w.lsn, self.default_level());
                (count >= *n).then_some(Outcome::Replicas(count))
            }
        }
    }

    /// Releases every wait that is met now, in token order.
    fn settle(&mut self) {
        let met: Vec<(u64, Outcome)> =
            self.waiters.iter().filter_map(|(&token, w)| self.settled(w).map(|o| (token, o))).collect();
        for (token, outcome) in met {
            let w = self.waiters.remove(&token).expect("met waiter exists");
            if let Some(deadline) = w.deadline_ms {
                self.deadlines.remove(&(deadline, token));
            }
            self.releases.push_back(Release { token, outcome });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000;

    fn durability(policy: &str, level: AckLevel, timeout_ms: u64) -> Durability {
        Durability { policy: policy.parse().unwrap(), level, timeout_ms }
    }

    fn leader_with(followers: &[NodeId]) -> Leader {
        let mut config = LeaderConfig::new(1, "127.0.0.1:7381".into(), followers.to_vec());
        config.inflight_bytes_max = 1000;
        config.batch_bytes_max = 400;
        Leader::new(config, 1, 0, 0, T0)
    }

    fn connect(l: &mut Leader, id: NodeId) {
        let msg = l.handle_subscribe(T0, id, 1, 0, &[], 1);
        assert!(matches!(msg, PeerMsg::Welcome { stream_from: 1, .. }), "{msg:?}");
    }

    /// Appends `n` entries and hands each follower everything (as a node
    /// would); returns the last LSN.
    fn append_and_send(l: &mut Leader, now: u64, n: u64) -> Lsn {
        for _ in 0..n {
            let lsn = l.last_lsn() + 1;
            l.handle_appended(now, lsn, now);
        }
        while let Some(t) = l.poll_transmit(now) {
            if let Transmit::Entries { to, .. } = t {
                l.handle_sent(now, to, l.last_lsn(), 10);
            }
        }
        l.last_lsn()
    }

    fn releases(l: &mut Leader) -> Vec<Release> {
        std::iter::from_fn(|| l.poll_release()).collect()
    }

    #[test]
    fn all_policy_waits_for_a_disconnected_follower_and_times_out_with_counts() {
        let mut l = leader_with(&[2, 3]);
        connect(&mut l, 2);
        let lsn = append_and_send(&mut l, T0, 1);
        l.handle_local_durable(T0, lsn);
        l.wait_for(T0, 7, lsn, &durability("all", AckLevel::Flush, 500));
        l.handle_ack(T0 + 1, 2, lsn, lsn);
        assert!(releases(&mut l).is_empty(), "node 3 never connected");
        assert_eq!(l.poll_timeout(), Some(T0 + 100), "heartbeat comes first");
        l.handle_timeout(T0 + 499);
        assert!(releases(&mut l).is_empty());
        l.handle_timeout(T0 + 500);
        assert_eq!(
            releases(&mut l),
            vec![Release { token: 7, outcome: Outcome::TimedOut { have: 1, need: 2, durable_on_leader: true } }]
        );
    }

    #[test]
    fn first_k_skips_disconnected_members_in_list_order() {
        let mut l = leader_with(&[2, 3, 4]);
        connect(&mut l, 3);
        connect(&mut l, 4);
        let lsn = append_and_send(&mut l, T0, 1);
        l.handle_local_durable(T0, lsn);
        // 2 is down, so the first connected member of (2,3,4) is 3: an ack
        // from 4 does not count, one from 3 does.
        l.wait_for(T0, 1, lsn, &durability("first 1 (2,3,4)", AckLevel::Flush, 0));
        l.handle_ack(T0, 4, lsn, lsn);
        assert!(releases(&mut l).is_empty());
        l.handle_ack(T0, 3, lsn, lsn);
        assert_eq!(releases(&mut l), vec![Release { token: 1, outcome: Outcome::Acked }]);

        // Now 2 connects: it is first in the list, so it must hold the next
        // write even though 3 and 4 already do.
        connect(&mut l, 2);
        let lsn = append_and_send(&mut l, T0, 1);
        l.handle_local_durable(T0, lsn);
        l.wait_for(T0, 2, lsn, &durability("first 1 (2,3,4)", AckLevel::Flush, 0));
        l.handle_ack(T0, 3, lsn, lsn);
        l.handle_ack(T0, 4, lsn, lsn);
        assert!(releases(&mut l).is_empty());
        // When 2 drops, 3 becomes the first connected member and holds it.
        l.handle_disconnect(T0, 2);
        assert_eq!(releases(&mut l), vec![Release { token: 2, outcome: Outcome::Acked }]);
    }

    #[test]
    fn first_k_waits_while_fewer_than_k_members_are_connected() {
        let mut l = leader_with(&[2, 3]);
        connect(&mut l, 2);
        let lsn = append_and_send(&mut l, T0, 1);
        l.handle_local_durable(T0, lsn);
        l.handle_ack(T0, 2, lsn, lsn);
        l.wait_for(T0, 1, lsn, &durability("first 2 (2,3)", AckLevel::Flush, 50));
        assert!(releases(&mut l).is_empty());
        l.handle_timeout(T0 + 50);
        assert_eq!(
            releases(&mut l),
            vec![Release { token: 1, outcome: Outcome::TimedOut { have: 1, need: 2, durable_on_leader: true } }]
        );
    }

    #[test]
    fn leader_durability_is_required_even_for_async() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        let lsn = append_and_send(&mut l, T0, 1);
        l.wait_for(T0, 1, lsn, &durability("async", AckLevel::Flush, 0));
        l.wait_for(T0, 2, lsn, &durability("any 1", AckLevel::Flush, 10));
        l.handle_ack(T0, 2, lsn, lsn);
        assert!(releases(&mut l).is_empty(), "the follower's copy is not enough");
        l.handle_timeout(T0 + 10);
        assert_eq!(
            releases(&mut l),
            vec![Release { token: 2, outcome: Outcome::TimedOut { have: 1, need: 1, durable_on_leader: false } }]
        );
        l.handle_local_durable(T0 + 11, lsn);
        assert_eq!(releases(&mut l), vec![Release { token: 1, outcome: Outcome::Acked }]);
    }

    #[test]
    fn apply_level_needs_both_flushed_and_applied() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        let lsn = append_and_send(&mut l, T0, 1);
        l.handle_local_durable(T0, lsn);
        l.wait_for(T0, 1, lsn, &durability("any 1", AckLevel::Apply, 0));
        l.handle_ack(T0, 2, 0, lsn);
        assert!(releases(&mut l).is_empty(), "applied but not flushed");
        l.handle_ack(T0, 2, lsn, lsn);
        assert_eq!(releases(&mut l), vec![Release { token: 1, outcome: Outcome::Acked }]);
    }

    #[test]
    fn back_pressure_stops_transmit_at_inflight_bytes_max() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        for lsn in 1..=10 {
            l.handle_appended(T0, lsn, T0);
        }
        let mut sent = 0;
        while let Some(t) = l.poll_transmit(T0) {
            let Transmit::Entries { to, from_lsn, max_bytes } = t else { panic!("{t:?}") };
            assert!(max_bytes <= 400);
            // Every batch is one entry of 300 bytes.
            l.handle_sent(T0, to, from_lsn, 300);
            sent += 1;
        }
        assert_eq!(sent, 4, "1000-byte window: sends until 1200 bytes are in flight");
        l.handle_ack(T0, 2, 2, 0);
        let t = l.poll_transmit(T0).unwrap();
        assert_eq!(t, Transmit::Entries { to: 2, from_lsn: 5, max_bytes: 400 });
        l.handle_sent(T0, 2, 6, 600);
        assert_eq!(l.poll_transmit(T0), None, "window full again");
    }

    #[test]
    fn one_batch_at_a_time_until_the_node_reports_it_sent() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        l.handle_appended(T0, 1, T0);
        assert!(matches!(l.poll_transmit(T0), Some(Transmit::Entries { from_lsn: 1, .. })));
        l.handle_appended(T0, 2, T0);
        assert_eq!(l.poll_transmit(T0), None);
        l.handle_sent(T0, 2, 1, 10);
        assert!(matches!(l.poll_transmit(T0), Some(Transmit::Entries { from_lsn: 2, .. })));
    }

    #[test]
    fn wait_counts_followers_holding_the_lsn_exactly() {
        let mut l = leader_with(&[2, 3, 4]);
        for id in [2, 3, 4] {
            connect(&mut l, id);
        }
        let lsn = append_and_send(&mut l, T0, 2);
        l.wait_replicas(T0, 1, lsn, 0, 0);
        assert_eq!(releases(&mut l), vec![Release { token: 1, outcome: Outcome::Replicas(0) }]);
        l.wait_replicas(T0, 2, lsn, 2, 100);
        l.handle_ack(T0, 2, lsn, lsn);
        l.handle_ack(T0, 3, lsn - 1, lsn - 1);
        assert!(releases(&mut l).is_empty());
        l.handle_timeout(T0 + 100);
        assert_eq!(releases(&mut l), vec![Release { token: 2, outcome: Outcome::Replicas(1) }]);
        l.wait_replicas(T0 + 100, 3, lsn - 1, 2, 0);
        assert_eq!(releases(&mut l), vec![Release { token: 3, outcome: Outcome::Replicas(2) }]);
    }

    #[test]
    fn subscribe_behind_the_retained_log_gets_a_snapshot_then_entries() {
        let mut l = leader_with(&[2]);
        for lsn in 1..=20 {
            l.handle_appended(T0, lsn, T0);
        }
        let msg = l.handle_subscribe(T0, 2, 1, 3, &[], 10);
        assert!(matches!(msg, PeerMsg::Welcome { stream_from: STREAM_FROM_SNAPSHOT, .. }), "{msg:?}");
        assert_eq!(l.replicas(T0)[0].state, ReplicaState::Snapshot);
        assert_eq!(l.poll_transmit(T0), Some(Transmit::Snapshot { to: 2 }));
        assert_eq!(l.poll_transmit(T0), None);
        l.handle_ack(T0, 2, 3, 3);
        assert_eq!(l.replicas(T0)[0].flushed_lsn, 0, "the follower discarded its log for the snapshot");
        l.handle_snapshot_sent(T0, 2, 15);
        assert_eq!(l.poll_transmit(T0), Some(Transmit::Entries { to: 2, from_lsn: 16, max_bytes: 400 }));
        // A follower right at the edge of the retained log streams.
        let msg = l.handle_subscribe(T0, 2, 1, 9, &[], 10);
        assert!(matches!(msg, PeerMsg::Welcome { stream_from: 10, .. }), "{msg:?}");
    }

    #[test]
    fn subscriber_whose_log_parts_from_the_leaders_is_told_where_and_gets_a_snapshot() {
        let mut l = leader_with(&[2]);
        for lsn in 1..=80 {
            l.handle_appended(T0, lsn, T0);
        }
        l.set_history(EpochHistory::from_pairs(vec![(1, 1), (2, 51)]));
        // An old leader of epoch 1 that wrote 51..60 nobody received.
        let msg = l.handle_subscribe(T0, 2, 1, 60, &[(1, 1)], 1);
        assert!(
            matches!(msg, PeerMsg::Welcome { stream_from: STREAM_FROM_SNAPSHOT, diverged_after: Some(50), .. }),
            "{msg:?}"
        );
        assert_eq!(l.poll_transmit(T0), Some(Transmit::Snapshot { to: 2 }));
        // A follower that is merely behind streams on.
        let msg = l.handle_subscribe(T0, 2, 1, 40, &[(1, 1)], 1);
        assert!(matches!(msg, PeerMsg::Welcome { stream_from: 41, diverged_after: None, .. }), "{msg:?}");
    }

    #[test]
    fn subscribe_refuses_unknown_members_newer_epochs_and_longer_logs() {
        let mut l = leader_with(&[2]);
        l.handle_appended(T0, 1, T0);
        for (from, epoch, last, want) in
            [(9, 1, 0, "not a member"), (2, 2, 0, "stale leader"), (2, 1, 2, "divergent log")]
        {
            match l.handle_subscribe(T0, from, epoch, last, &[], 1) {
                PeerMsg::Refuse { reason } => assert!(reason.contains(want), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(l.replicas(T0)[0].state, ReplicaState::Disconnected);
    }

    #[test]
    fn resubscribing_forgets_acks_past_the_followers_log() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        let lsn = append_and_send(&mut l, T0, 5);
        l.handle_ack(T0, 2, lsn, lsn);
        // The follower comes back with a shorter log (wiped down to 2).
        l.handle_subscribe(T0, 2, 1, 2, &[], 1);
        let r = &l.replicas(T0)[0];
        assert_eq!((r.flushed_lsn, r.applied_lsn, r.sent_lsn), (2, 2, 2));
    }

    #[test]
    fn acks_beyond_what_was_sent_are_clamped() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        l.handle_appended(T0, 1, T0);
        l.handle_appended(T0, 2, T0);
        l.handle_ack(T0, 2, 2, 2);
        assert_eq!(l.replicas(T0)[0].flushed_lsn, 0);
    }

    #[test]
    fn heartbeats_go_out_when_nothing_else_was_sent_for_an_interval() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        assert_eq!(l.poll_transmit(T0 + 99), None);
        assert_eq!(l.poll_timeout(), Some(T0 + 100));
        let t = l.poll_transmit(T0 + 100).unwrap();
        assert_eq!(
            t,
            Transmit::Heartbeat {
                to: 2,
                msg: PeerMsg::Heartbeat {
                    epoch: 1,
                    leader_last_lsn: 0,
                    leader_durable_lsn: 0,
                    leader_now_ms: T0 + 100
                }
            }
        );
        assert_eq!(l.poll_timeout(), Some(T0 + 200));
        l.handle_disconnect(T0 + 150, 2);
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn lag_is_the_lsn_distance_and_the_age_of_the_oldest_unapplied_entry() {
        let mut l = leader_with(&[2]);
        connect(&mut l, 2);
        for (lsn, at) in [(1, T0), (2, T0 + 10), (3, T0 + 20)] {
            l.handle_appended(at, lsn, at);
        }
        while let Some(t) = l.poll_transmit(T0 + 20) {
            if let Transmit::Entries { to, .. } = t {
                l.handle_sent(T0 + 20, to, 3, 30);
            }
        }
        l.handle_ack(T0 + 25, 2, 1, 1);
        let r = &l.replicas(T0 + 30)[0];
        assert_eq!((r.lsn_lag, r.time_lag_ms, r.last_ack_ms), (2, 20, Some(T0 + 25)));
        l.handle_ack(T0 + 31, 2, 3, 3);
        let r = &l.replicas(T0 + 40)[0];
        assert_eq!((r.lsn_lag, r.time_lag_ms, r.state), (0, 0, ReplicaState::Streaming));
    }

    #[test]
    fn timeouts_release_in_deadline_order_and_met_waits_never_time_out() {
        let mut l = leader_with(&[2]);
        let lsn = append_and_send(&mut l, T0, 1);
        l.wait_for(T0, 1, lsn, &durability("any 1", AckLevel::Flush, 30));
        l.wait_for(T0, 2, lsn, &durability("any 1", AckLevel::Flush, 20));
        l.wait_for(T0, 3, lsn, &durability("async", AckLevel::Flush, 10));
        l.handle_local_durable(T0 + 5, lsn);
        assert_eq!(releases(&mut l), vec![Release { token: 3, outcome: Outcome::Acked }]);
        assert_eq!(l.poll_timeout(), Some(T0 + 20));
        l.handle_timeout(T0 + 40);
        let tokens: Vec<u64> = releases(&mut l).iter().map(|r| r.token).collect();
        assert_eq!(tokens, vec![2, 1]);
        assert_eq!(l.waiting(), 0);
    }
}
