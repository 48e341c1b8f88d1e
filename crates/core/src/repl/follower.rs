//! The follower side of single-leader replication.
//!
//! Owns the checks on what the leader streams (epoch fencing, no gap, no
//! divergent duplicate), the follower's last / flushed / applied LSN, the
//! acks it owes the leader (coalesced: at most one pending), and what it
//! knows of the leader (id, client address, last LSN, clock) for
//! `-READONLY` replies, `INFO` and staleness.
//!
//! Must never: hold or read log entries or the store (the node appends and
//! applies what [`Follower::handle_entries`] accepts), report an LSN as
//! flushed or applied before the node says so, or accept an entry that does
//! not extend its log by exactly one.
//!
//! Errors from the leader's messages are values (`Err(reason)`): the node
//! sends `Refuse { reason }`, closes the connection, calls
//! [`Follower::handle_disconnect`] and resubscribes with backoff.

use std::collections::VecDeque;

use super::msg::{PeerMsg, WireEntry, STREAM_FROM_SNAPSHOT};
use super::NodeId;
use crate::failover::EpochHistory;
use crate::{Epoch, Lsn};

/// How many `(leader last LSN, when we learned it)` points a follower keeps
/// to estimate staleness. Past it the newest point is stretched, which can
/// only overestimate staleness.
pub const LEARNED_LSNS_MAX: usize = 1024;

/// How many epoch changes in the recent log a follower remembers to check
/// that re-sent (duplicate) entries match its own. Older duplicates are
/// skipped unchecked.
pub const EPOCH_RUNS_MAX: usize = 64;

/// Where a follower stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowerState {
    /// No connection to a leader (or not yet welcomed).
    Disconnected,
    /// Welcomed; a snapshot is announced but has not begun.
    AwaitingSnapshot,
    /// Receiving a snapshot; the node has discarded its state and log.
    Snapshot,
    /// Receiving entries.
    Streaming,
}

impl FollowerState {
    /// Lower-case name for `INFO`, `/status` and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            FollowerState::Disconnected => "disconnected",
            FollowerState::AwaitingSnapshot => "awaiting_snapshot",
            FollowerState::Snapshot => "snapshot",
            FollowerState::Streaming => "streaming",
        }
    }
}

/// A follower's view of its own replication, for `INFO`, `ROLE`, `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowerStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// Connection state.
    pub state: FollowerState,
    /// The leader it follows (or last followed), if known.
    pub leader_id: Option<NodeId>,
    /// That leader's client address, if known.
    pub leader_client_addr: Option<String>,
    /// The highest epoch seen.
    pub epoch: Epoch,
    /// Last LSN in the local log.
    pub last_lsn: Lsn,
    /// Last LSN on the local disk.
    pub flushed_lsn: Lsn,
    /// Last LSN applied (visible to reads).
    pub applied_lsn: Lsn,
    /// The newest leader last LSN heard of.
    pub leader_last_lsn: Lsn,
    /// The newest leader durable LSN heard of.
    pub leader_durable_lsn: Lsn,
    /// `leader_last_lsn - applied_lsn`.
    pub lsn_lag: u64,
    /// 0 when everything the leader announced is applied, else how long
    /// ago (local clock) this follower learned of the oldest LSN it has not
    /// applied: reads here may miss writes at least that old.
    pub staleness_ms: u64,
    /// When the leader was last heard from (local clock), if ever.
    pub last_contact_ms: Option<u64>,
    /// After a fuzzy snapshot, reads see one consistent log prefix only once
    /// `applied_lsn` reaches this LSN (0: always consistent).
    pub consistent_lsn: Lsn,
}

/// The follower's replication state machine.
#[derive(Debug)]
pub struct Follower {
    node_id: NodeId,
    epoch: Epoch,
    state: FollowerState,
    leader_id: Option<NodeId>,
    leader_client_addr: Option<String>,
    last_lsn: Lsn,
    flushed_lsn: Lsn,
    applied_lsn: Lsn,
    applied_commit_ms: u64,
    consistent_lsn: Lsn,
    /// Snapshot start LSN while in [`FollowerState::Snapshot`].
    snapshot_start_lsn: Lsn,
    leader_last_lsn: Lsn,
    leader_durable_lsn: Lsn,
    leader_now_ms: u64,
    last_contact_ms: Option<u64>,
    /// `(flushed, applied)` last sent on this connection; `None` forces an
    /// ack (a new connection tells the leader where it stands).
    acked: Option<(Lsn, Lsn)>,
    /// `(leader last LSN, local ms when learned)`, increasing LSNs, all
    /// above `applied_lsn`; bounded by [`LEARNED_LSNS_MAX`].
    learned: VecDeque<(Lsn, u64)>,
    /// `(first LSN, epoch)` runs of the log from `epochs_known_from` on;
    /// bounded by [`EPOCH_RUNS_MAX`].
    epoch_runs: VecDeque<(Lsn, Epoch)>,
    epochs_known_from: Lsn,
    /// Where each epoch starts in this log (sent in `Subscribe`).
    history: EpochHistory,
}

impl Follower {
    /// A follower whose log ends at `last_lsn`, durable up to
    /// `flushed_lsn`, having seen `epoch`. The node has replayed its log
    /// into the store, so everything up to `last_lsn` counts as applied.
    pub fn new(node_id: NodeId, epoch: Epoch, last_lsn: Lsn, flushed_lsn: Lsn, now_ms: u64) -> Follower {
        assert!(flushed_lsn <= last_lsn, "flushed lsn {flushed_lsn} is past the last lsn {last_lsn}");
        let _ = now_ms;
        Follower {
            node_id,
            epoch,
            state: FollowerState::Disconnected,
            leader_id: None,
            leader_client_addr: None,
            last_lsn,
            flushed_lsn,
            applied_lsn: last_lsn,
            applied_commit_ms: 0,
            consistent_lsn: 0,
            snapshot_start_lsn: 0,
            leader_last_lsn: 0,
            leader_durable_lsn: 0,
            leader_now_ms: 0,
            last_contact_ms: None,
            acked: None,
            learned: VecDeque::new(),
            epoch_runs: VecDeque::new(),
            epochs_known_from: last_lsn + 1,
            history: EpochHistory::default(),
        }
    }

    /// Sets where each epoch starts in this node's log (loaded from disk, or
    /// the leader's history after a snapshot).
    pub fn set_history(&mut self, history: EpochHistory) {
        self.history = history;
    }

    /// Where each epoch starts in this node's log, including the entries
    /// accepted so far; the node persists it when it changes.
    pub fn history(&self) -> &EpochHistory {
        &self.history
    }

    /// The first message of a connection to the leader.
    pub fn subscribe(&self, client_addr: String) -> PeerMsg {
        PeerMsg::Subscribe {
            node_id: self.node_id,
            epoch: self.epoch,
            last_lsn: self.last_lsn,
            client_addr,
            history: self.history.pairs().to_vec(),
        }
    }

    // ------------------------------------------------------------ inputs

    /// The leader accepted the subscription.
    pub fn handle_welcome(
        &mut self,
        now_ms: u64,
        leader_id: NodeId,
        epoch: Epoch,
        leader_client_addr: String,
        stream_from: Lsn,
    ) -> Result<(), String> {
        if self.state != FollowerState::Disconnected {
            return Err(format!("unexpected welcome while {}", self.state.as_str()));
        }
        if epoch < self.epoch {
            return Err(format!("leader {leader_id} is at epoch {epoch}, older than epoch {} seen here", self.epoch));
        }
        if stream_from != STREAM_FROM_SNAPSHOT && stream_from != self.last_lsn + 1 {
            return Err(format!(
                "leader {leader_id} would stream from lsn {stream_from} but this log ends at lsn {}",
                self.last_lsn
            ));
        }
        if epoch > self.epoch {
            // A new leadership: what the old leader announced means nothing.
            self.epoch = epoch;
            self.leader_last_lsn = 0;
            self.leader_durable_lsn = 0;
            self.learned.clear();
        }
        self.leader_id = Some(leader_id);
        self.leader_client_addr = Some(leader_client_addr);
        self.last_contact_ms = Some(now_ms);
        self.acked = None;
        self.state = if stream_from == STREAM_FROM_SNAPSHOT {
            FollowerState::AwaitingSnapshot
        } else {
            FollowerState::Streaming
        };
        Ok(())
    }

    /// Entries arrived. On `Ok` the returned entries (the input minus
    /// leading duplicates of entries already in the log) extend the log by
    /// exactly one LSN each: the node appends them to its log and applies
    /// them, then calls [`Follower::handle_flushed`] /
    /// [`Follower::handle_applied`] as those complete. On `Err` nothing
    /// changed.
    pub fn handle_entries<'e>(
        &mut self,
        now_ms: u64,
        epoch: Epoch,
        entries: &'e [WireEntry],
        leader_last_lsn: Lsn,
        leader_now_ms: u64,
    ) -> Result<&'e [WireEntry], String> {
        if self.state != FollowerState::Streaming {
            return Err(format!("entries arrived while {}", self.state.as_str()));
        }
        if epoch < self.epoch {
            return Err(format!("entries from epoch {epoch}, older than epoch {} seen here", self.epoch));
        }
        let skip = self.check_entries(epoch, entries)?;
        let fresh = &entries[skip..];
        let new_last = fresh.last().map_or(self.last_lsn, |e| e.lsn);
        if leader_last_lsn < new_last {
            return Err(format!("entries up to lsn {new_last} but the leader says its log ends at {leader_last_lsn}"));
        }
        self.epoch = epoch;
        for e in fresh {
            if !matches!(self.epoch_runs.back(), Some(&(_, run_epoch)) if run_epoch == e.epoch) {
                if self.epoch_runs.len() == EPOCH_RUNS_MAX {
                    self.epoch_runs.pop_front();
                    self.epochs_known_from = self.epoch_runs.front().map_or(e.lsn, |&(lsn, _)| lsn);
                }
                self.epoch_runs.push_back((e.lsn, e.epoch));
                self.history.record(e.epoch, e.lsn);
            }
        }
        self.last_lsn = new_last;
        self.note_leader(now_ms, leader_last_lsn, leader_now_ms);
        Ok(fresh)
    }

    /// Validates `entries` against the log; returns how many leading ones
    /// are duplicates.
    fn check_entries(&self, epoch: Epoch, entries: &[WireEntry]) -> Result<usize, String> {
        let Some(first) = entries.first() else { return Ok(0) };
        if first.lsn == 0 || first.lsn > self.last_lsn + 1 {
            return Err(format!("gap: this log ends at lsn {} but entries start at lsn {}", self.last_lsn, first.lsn));
        }
        let mut skip = 0;
        let mut last_epoch = self.epoch_of(self.last_lsn);
        for (i, e) in entries.iter().enumerate() {
            if i > 0 && e.lsn != entries[i - 1].lsn + 1 {
                return Err(format!("entries are not consecutive: lsn {} follows lsn {}", e.lsn, entries[i - 1].lsn));
            }
            if e.epoch > epoch {
                return Err(format!("entry {} has epoch {}, newer than its message's epoch {epoch}", e.lsn, e.epoch));
            }
            if e.lsn <= self.last_lsn {
                match self.epoch_of(e.lsn) {
                    Some(mine) if mine != e.epoch => {
                        return Err(format!(
                            "divergent log: entry {} has epoch {mine} here but {} on the leader",
                            e.lsn, e.epoch
                        ));
                    }
                    _ => skip += 1,
                }
                continue;
            }
            if last_epoch.is_some_and(|le| e.epoch < le) {
                return Err(format!("entry {} goes back to epoch {}", e.lsn, e.epoch));
            }
            last_epoch = Some(e.epoch);
        }
        Ok(skip)
    }

    /// The epoch of the entry at `lsn`, if remembered.
    fn epoch_of(&self, lsn: Lsn) -> Option<Epoch> {
        if lsn < self.epochs_known_from || lsn == 0 {
            return None;
        }
        self.epoch_runs.iter().rev().find(|&&(first, _)| first <= lsn).map(|&(_, epoch)| epoch)
    }

    /// A heartbeat arrived. `Err` if it comes from an older epoch.
    pub fn handle_heartbeat(
        &mut self,
        now_ms: u64,
        epoch: Epoch,
        leader_last_lsn: Lsn,
        leader_durable_lsn: Lsn,
        leader_now_ms: u64,
    ) -> Result<(), String> {
        if epoch < self.epoch {
            return Err(format!("heartbeat from epoch {epoch}, older than epoch {} seen here", self.epoch));
        }
        self.epoch = epoch;
        self.leader_durable_lsn = self.leader_durable_lsn.max(leader_durable_lsn);
        self.note_leader(now_ms, leader_last_lsn, leader_now_ms);
        Ok(())
    }

    fn note_leader(&mut self, now_ms: u64, leader_last_lsn: Lsn, leader_now_ms: u64) {
        self.last_contact_ms = Some(now_ms);
        self.leader_now_ms = self.leader_now_ms.max(leader_now_ms);
        if leader_last_lsn <= self.leader_last_lsn {
            return;
        }
        self.leader_last_lsn = leader_last_lsn;
        if leader_last_lsn <= self.applied_lsn {
            return;
        }
        if self.learned.len() == LEARNED_LSNS_MAX {
            // Keep the older time for the newer LSN: overestimates only.
            self.learned.back_mut().expect("full").0 = leader_last_lsn;
        } else {
            self.learned.push_back((leader_last_lsn, now_ms));
        }
    }

    /// A snapshot begins: the node discards its state and log, so the last,
    /// flushed and applied LSNs restart from 0 (the one place they go back;
    /// fsync results for the discarded log must not be reported after this).
    /// Entries resume at `start_lsn + 1` after the end.
    pub fn handle_snapshot_begin(&mut self, now_ms: u64, epoch: Epoch, start_lsn: Lsn) -> Result<(), String> {
        if self.state != FollowerState::AwaitingSnapshot {
            return Err(format!("snapshot begins while {}", self.state.as_str()));
        }
        if epoch < self.epoch {
            return Err(format!("snapshot from epoch {epoch}, older than epoch {} seen here", self.epoch));
        }
        if start_lsn < self.last_lsn {
            return Err(format!("snapshot at lsn {start_lsn} is older than this log, which ends at {}", self.last_lsn));
        }
        self.epoch = epoch;
        self.state = FollowerState::Snapshot;
        self.snapshot_start_lsn = start_lsn;
        // The log is gone: if the connection drops before the end, the next
        // subscription must say so (the simulator found this, seed 1670).
        self.last_lsn = 0;
        self.flushed_lsn = 0;
        self.applied_lsn = 0;
        self.consistent_lsn = 0;
        self.epoch_runs.clear();
        self.epochs_known_from = 1;
        self.last_contact_ms = Some(now_ms);
        Ok(())
    }

    /// The snapshot is complete; the stream continues at its start LSN + 1.
    /// The node then persists it and reports it with
    /// [`Follower::handle_flushed`] and [`Follower::handle_applied`] at the
    /// start LSN.
    pub fn handle_snapshot_end(&mut self, now_ms: u64, end_lsn: Lsn) -> Result<(), String> {
        if self.state != FollowerState::Snapshot {
            return Err(format!("snapshot ends while {}", self.state.as_str()));
        }
        let start_lsn = self.snapshot_start_lsn;
        if end_lsn < start_lsn {
            return Err(format!("snapshot ends at lsn {end_lsn}, before its start at {start_lsn}"));
        }
        self.last_lsn = start_lsn;
        self.consistent_lsn = end_lsn;
        self.epochs_known_from = start_lsn + 1;
        self.state = FollowerState::Streaming;
        self.acked = None;
        self.last_contact_ms = Some(now_ms);
        Ok(())
    }

    /// The leader's `Welcome` said this log parts from its own after `lsn`
    /// (`diverged_after`); the node moved every entry after `lsn` to its
    /// rollback file. Call it before [`Follower::handle_welcome`]: as far as
    /// the stream is concerned the log ends at `lsn` now, so the snapshot
    /// that follows may start below the old end (the leader's log can be
    /// shorter than the divergent one).
    pub fn handle_rolled_back(&mut self, lsn: Lsn) {
        if lsn >= self.last_lsn {
            return;
        }
        self.last_lsn = lsn;
        self.flushed_lsn = self.flushed_lsn.min(lsn);
        self.applied_lsn = self.applied_lsn.min(lsn);
        while self.epoch_runs.back().is_some_and(|&(first, _)| first > lsn) {
            self.epoch_runs.pop_back();
        }
        self.epochs_known_from = self.epochs_known_from.min(lsn + 1);
        self.history.truncate_after(lsn);
    }

    /// The connection to the leader is gone.
    pub fn handle_disconnect(&mut self, _now_ms: u64) {
        self.state = FollowerState::Disconnected;
        self.acked = None;
    }

    /// The local log is durable up to `lsn`. Ignored during a snapshot.
    pub fn handle_flushed(&mut self, lsn: Lsn) {
        if self.in_snapshot() {
            return;
        }
        assert!(lsn <= self.last_lsn, "flushed lsn {lsn} is past the last lsn {}", self.last_lsn);
        self.flushed_lsn = self.flushed_lsn.max(lsn);
    }

    /// Entries up to `lsn` (the last one committed by the leader at
    /// `commit_ms`) are applied. Ignored during a snapshot.
    pub fn handle_applied(&mut self, lsn: Lsn, commit_ms: u64) {
        if self.in_snapshot() {
            return;
        }
        assert!(lsn <= self.last_lsn, "applied lsn {lsn} is past the last lsn {}", self.last_lsn);
        if lsn > self.applied_lsn {
            self.applied_lsn = lsn;
            self.applied_commit_ms = commit_ms;
            while self.learned.front().is_some_and(|&(learned, _)| learned <= lsn) {
                self.learned.pop_front();
            }
        }
    }

    fn in_snapshot(&self) -> bool {
        matches!(self.state, FollowerState::AwaitingSnapshot | FollowerState::Snapshot)
    }

    // ------------------------------------------------------------ outputs

    /// An `Ack` if flushed or applied advanced since the last one (or the
    /// connection is new). At most one is pending: calling late coalesces.
    pub fn poll_ack(&mut self, _now_ms: u64) -> Option<PeerMsg> {
        if self.state != FollowerState::Streaming {
            return None;
        }
        let now = (self.flushed_lsn, self.applied_lsn);
        if self.acked == Some(now) {
            return None;
        }
        self.acked = Some(now);
        Some(PeerMsg::Ack { flushed_lsn: now.0, applied_lsn: now.1 })
    }

    // ------------------------------------------------------------ getters

    /// Everything `INFO`, `ROLE` and `/status` show.
    pub fn status(&self, now_ms: u64) -> FollowerStatus {
        FollowerStatus {
            node_id: self.node_id,
            state: self.state,
            leader_id: self.leader_id,
            leader_client_addr: self.leader_client_addr.clone(),
            epoch: self.epoch,
            last_lsn: self.last_lsn,
            flushed_lsn: self.flushed_lsn,
            applied_lsn: self.applied_lsn,
            leader_last_lsn: self.leader_last_lsn,
            leader_durable_lsn: self.leader_durable_lsn,
            lsn_lag: self.leader_last_lsn.saturating_sub(self.applied_lsn),
            staleness_ms: self.staleness_ms(now_ms),
            last_contact_ms: self.last_contact_ms,
            consistent_lsn: self.consistent_lsn,
        }
    }

    fn staleness_ms(&self, now_ms: u64) -> u64 {
        if self.applied_lsn >= self.leader_last_lsn {
            return 0;
        }
        self.learned.front().map_or(0, |&(_, learned_ms)| now_ms.saturating_sub(learned_ms))
    }

    /// Connection state.
    pub fn state(&self) -> FollowerState {
        self.state
    }

    /// The highest epoch seen.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Last LSN in the local log.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn
    }

    /// Last LSN on the local disk.
    pub fn flushed_lsn(&self) -> Lsn {
        self.flushed_lsn
    }

    /// Last LSN applied (what `WAITLSN` waits for).
    pub fn applied_lsn(&self) -> Lsn {
        self.applied_lsn
    }

    /// Commit time (leader's clock) of the entry at `applied_lsn`, if the
    /// node reported one.
    pub fn applied_commit_ms(&self) -> u64 {
        self.applied_commit_ms
    }

    /// The leader's clock as of its newest message.
    pub fn leader_now_ms(&self) -> u64 {
        self.leader_now_ms
    }

    /// The leader's client address, for `-READONLY` replies.
    pub fn leader_client_addr(&self) -> Option<&str> {
        self.leader_client_addr.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const T0: u64 = 5_000;

    fn entry(lsn: Lsn, epoch: Epoch) -> WireEntry {
        WireEntry { lsn, epoch, payload: Bytes::from(vec![lsn as u8]) }
    }

    fn streaming(last_lsn: Lsn) -> Follower {
        let mut f = Follower::new(2, 1, last_lsn, last_lsn, T0);
        f.handle_welcome(T0, 1, 1, "leader:1".into(), last_lsn + 1).unwrap();
        f
    }

    #[test]
    fn follower_refuses_a_gap_and_a_lower_epoch() {
        let mut f = streaming(0);
        f.handle_entries(T0, 1, &[entry(1, 1), entry(2, 1)], 2, T0).unwrap();
        let gap = f.handle_entries(T0, 1, &[entry(4, 1)], 4, T0).unwrap_err();
        assert!(gap.contains("gap"), "{gap}");
        let hole = f.handle_entries(T0, 1, &[entry(3, 1), entry(5, 1)], 5, T0).unwrap_err();
        assert!(hole.contains("not consecutive"), "{hole}");
        f.handle_entries(T0, 2, &[entry(3, 2)], 3, T0).unwrap();
        let old = f.handle_entries(T0, 1, &[entry(4, 1)], 4, T0).unwrap_err();
        assert!(old.contains("older than epoch 2"), "{old}");
        let back = f.handle_entries(T0, 2, &[entry(4, 1)], 4, T0).unwrap_err();
        assert!(back.contains("goes back to epoch 1"), "{back}");
        assert!(f.handle_heartbeat(T0, 1, 9, 9, T0).is_err());
        assert_eq!(f.last_lsn(), 3, "refused messages change nothing");
        let mut g = Follower::new(2, 3, 0, 0, T0);
        assert!(g.handle_welcome(T0, 1, 2, "x".into(), 1).unwrap_err().contains("older than epoch 3"));
    }

    #[test]
    fn duplicate_entries_are_skipped_idempotently() {
        let mut f = streaming(0);
        let batch = [entry(1, 1), entry(2, 1), entry(3, 1)];
        assert_eq!(f.handle_entries(T0, 1, &batch, 3, T0).unwrap().len(), 3);
        assert!(f.handle_entries(T0, 1, &batch, 3, T0).unwrap().is_empty());
        let overlap = [entry(2, 1), entry(3, 1), entry(4, 1)];
        assert_eq!(f.handle_entries(T0, 1, &overlap, 4, T0).unwrap(), &overlap[2..]);
        assert_eq!(f.last_lsn(), 4);
    }

    #[test]
    fn a_duplicate_from_another_epoch_is_a_divergent_log() {
        let mut f = streaming(0);
        f.handle_entries(T0, 1, &[entry(1, 1), entry(2, 1)], 2, T0).unwrap();
        let err = f.handle_entries(T0, 2, &[entry(2, 2), entry(3, 2)], 3, T0).unwrap_err();
        assert!(err.contains("divergent"), "{err}");
    }

    #[test]
    fn acks_are_coalesced_and_sent_only_when_progress_advances() {
        let mut f = streaming(0);
        assert_eq!(f.poll_ack(T0), Some(PeerMsg::Ack { flushed_lsn: 0, applied_lsn: 0 }), "new connection");
        assert_eq!(f.poll_ack(T0), None);
        f.handle_entries(T0, 1, &[entry(1, 1), entry(2, 1)], 2, T0).unwrap();
        f.handle_applied(1, T0);
        f.handle_applied(2, T0);
        f.handle_flushed(2);
        assert_eq!(f.poll_ack(T0), Some(PeerMsg::Ack { flushed_lsn: 2, applied_lsn: 2 }));
        assert_eq!(f.poll_ack(T0), None);
        f.handle_disconnect(T0);
        assert_eq!(f.poll_ack(T0), None, "no connection, no ack");
    }

    #[test]
    fn staleness_is_zero_when_caught_up_and_counts_from_when_the_lsn_was_learned() {
        let mut f = streaming(0);
        f.handle_entries(T0, 1, &[entry(1, 1)], 1, T0).unwrap();
        assert_eq!(f.status(T0 + 50).staleness_ms, 50);
        f.handle_heartbeat(T0 + 20, 1, 3, 1, T0 + 20).unwrap();
        f.handle_applied(1, T0);
        let s = f.status(T0 + 70);
        assert_eq!((s.staleness_ms, s.lsn_lag, s.leader_last_lsn), (50, 2, 3));
        f.handle_entries(T0 + 80, 1, &[entry(2, 1), entry(3, 1)], 3, T0 + 80).unwrap();
        f.handle_applied(3, T0);
        assert_eq!(f.status(T0 + 90).staleness_ms, 0);
    }

    #[test]
    fn snapshot_discards_progress_and_streaming_resumes_after_its_start_lsn() {
        let mut f = Follower::new(2, 1, 3, 3, T0);
        f.handle_welcome(T0, 1, 1, "leader:1".into(), STREAM_FROM_SNAPSHOT).unwrap();
        assert!(f.handle_entries(T0, 1, &[entry(4, 1)], 4, T0).is_err(), "no entries before the snapshot");
        assert_eq!(f.poll_ack(T0), None);
        f.handle_snapshot_begin(T0, 1, 10).unwrap();
        assert_eq!((f.last_lsn(), f.flushed_lsn(), f.applied_lsn()), (0, 0, 0));
        f.handle_flushed(3);
        assert_eq!(f.flushed_lsn(), 0, "a flush of the discarded log is ignored");
        f.handle_snapshot_end(T0, 12).unwrap();
        f.handle_applied(10, T0);
        f.handle_flushed(10);
        assert_eq!(f.poll_ack(T0), Some(PeerMsg::Ack { flushed_lsn: 10, applied_lsn: 10 }));
        assert_eq!(f.status(T0).consistent_lsn, 12);
        assert!(f.handle_entries(T0, 1, &[entry(11, 1)], 12, T0).unwrap().len() == 1);
    }

    #[test]
    fn a_snapshot_cut_short_resubscribes_with_an_empty_log() {
        let mut f = Follower::new(2, 1, 3, 3, T0);
        f.handle_welcome(T0, 1, 1, "leader:1".into(), STREAM_FROM_SNAPSHOT).unwrap();
        f.handle_snapshot_begin(T0, 1, 10).unwrap();
        f.handle_disconnect(T0);
        assert!(matches!(f.subscribe("me".into()), PeerMsg::Subscribe { last_lsn: 0, .. }));
        f.handle_welcome(T0, 1, 1, "leader:1".into(), 1).unwrap();
    }

    #[test]
    fn a_divergent_follower_takes_a_snapshot_shorter_than_its_old_log() {
        // Found by the failover simulator (seed 0): the old log ends at 6,
        // the new leader's at 5, and they part after 3.
        let mut f = Follower::new(2, 1, 6, 6, T0);
        f.handle_welcome(T0, 1, 2, "leader:1".into(), STREAM_FROM_SNAPSHOT).unwrap();
        let mut g = Follower::new(2, 1, 6, 6, T0);
        g.handle_welcome(T0, 1, 2, "leader:1".into(), STREAM_FROM_SNAPSHOT).unwrap();
        assert!(g.handle_snapshot_begin(T0, 2, 5).is_err(), "without the rollback the old end still counts");
        f.handle_rolled_back(3);
        assert_eq!((f.last_lsn(), f.flushed_lsn(), f.applied_lsn()), (3, 3, 3));
        f.handle_snapshot_begin(T0, 2, 5).unwrap();
        f.handle_snapshot_end(T0, 5).unwrap();
        f.handle_entries(T0, 2, &[entry(6, 2)], 6, T0).unwrap();
        assert_eq!(f.last_lsn(), 6);
    }

    #[test]
    fn welcome_must_continue_this_log() {
        let mut f = Follower::new(2, 1, 5, 5, T0);
        assert!(f.handle_welcome(T0, 1, 1, "x".into(), 3).unwrap_err().contains("ends at lsn 5"));
        f.handle_welcome(T0, 1, 1, "x".into(), 6).unwrap();
        assert!(f.handle_welcome(T0, 1, 1, "x".into(), 6).is_err(), "already welcomed");
        assert_eq!(f.status(T0).leader_client_addr.as_deref(), Some("x"));
    }
}
