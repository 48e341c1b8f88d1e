//! One replica of one keyspace on one node, behind one trait.
//!
//! Owns the shape every replication mode plugs into: the [`Replica`] trait
//! (handle an [`Input`] at `now_ms`, then drain [`Output`]s), the inputs a
//! replica takes (client writes and reads routed to it, peer messages,
//! timer expiries, durability notices, map changes and control-plane RPCs)
//! and the outputs it yields (durable state to persist, log entries to
//! append, messages to send, replies to release, timers to arm, role
//! changes for status). Modes add a type that implements [`Replica`]:
//! [`single_leader::SingleLeaderReplica`] today; multi-leader and
//! leaderless next.
//!
//! # The drain order
//! [`Replica::poll_output`] hands outputs out class by class, whatever the
//! order in which the replica produced them:
//!
//! 1. **persist** ([`Output::Persist`]: epochs, led epochs, rollbacks) and
//!    **append** ([`Output::Append`], [`Output::Snapshot`]): state that must
//!    be on disk (or in the log, for appends) before anything that reveals
//!    it leaves the node. A fence answer must not go out before the raised
//!    epoch is durable; a new leader must not take a write before it has
//!    recorded that it led the epoch; a follower rolls its divergent tail
//!    back before it takes the new leader's stream.
//! 2. **messages** ([`Output::Send`], [`Output::Transmit`],
//!    [`Output::Connect`], [`Output::Disconnect`]): to peers. After the
//!    persists, so that a peer never learns of state this node could lose
//!    in a crash.
//! 3. **releases** ([`Output::Reply`]): answers to clients and to the
//!    control plane. A write's ack is released only after the durability
//!    notices its policy needs came in as inputs (the replica never
//!    releases on its own appends), and after this batch's persists.
//! 4. **timers** ([`Output::Timer`]): arm (or re-arm) one timer per
//!    [`TimerKind`]. Last because executing them changes nothing anybody
//!    sees; they only decide when the shell calls back.
//! 5. **role changes** ([`Output::Role`]): for `ROLE`, `INFO`, `/status`
//!    and metrics, once the changes they describe have been carried out.
//!
//! The shell (`tandem-node` with tokio, `tandem-sim` with a virtual clock)
//! executes each output before it takes the next, and executes the
//! persists of a batch to completion (durably) before the messages of the
//! same batch.
//!
//! # What a replica must never do
//! Read a clock (time comes in as `now_ms`, from a monotonic clock), do
//! I/O, use a global RNG, or let hash-map iteration order reach an output.
//! Given the same inputs at the same times it yields the same outputs: the
//! transcripts in `testdata/` pin that.

pub mod leaderless;
pub mod multi_leader;
pub mod single_leader;

use std::collections::VecDeque;

use bytes::Bytes;

use crate::failover::FailoverRpc;
use crate::repl::{Durability, NodeId, Outcome, PeerMsg, Transmit, WireEntry};
use crate::{Epoch, Lsn};

pub use single_leader::{MapDecision, SingleLeaderConfig, SingleLeaderReplica};

/// A sans-IO replica of one keyspace: inputs in at `now_ms`, outputs out in
/// the documented drain order (see the module doc).
pub trait Replica {
    /// Takes one input at `now`.
    fn handle(&mut self, now: Now, input: Input);

    /// The next output, in drain order; `None` when nothing is pending.
    fn poll_output(&mut self) -> Option<Output>;

    /// The earliest armed timer, if any: the shell calls
    /// [`Replica::handle`] with [`Input::Timer`] no later than then.
    fn poll_timeout(&self) -> Option<(TimerKind, u64)>;

    /// What `ROLE`, `INFO` and `/status` show now.
    fn role(&self) -> RoleStatus;
}

/// The time an input arrives at, on the node's two clocks.
///
/// Leases and timers use `mono_ms` (a clock that never jumps); lag and
/// commit times use `unix_ms` (compared with other nodes' wall clocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic clock, ms. Timers are armed on this clock.
    pub mono_ms: u64,
    /// Wall clock, unix ms.
    pub unix_ms: u64,
}

impl Now {
    /// Both clocks at the same reading (the simulator and transcripts).
    pub fn at(ms: u64) -> Now {
        Now { mono_ms: ms, unix_ms: ms }
    }
}

/// What a replica is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The control plane's map for this keyspace (also re-sent
    /// periodically; an unchanged map changes nothing).
    Map(MapView),
    /// A client asks to write: answered [`Reply::Proceed`] or
    /// [`Reply::Refused`]. The shell executes a proceeding write, appends
    /// and applies it, then says [`Input::Appended`].
    ClientWrite {
        /// Identifies the client's request.
        token: u64,
    },
    /// A client asks to read: answered [`Reply::Proceed`] or
    /// [`Reply::Refused`] (a leader serves reads only while it holds its
    /// lease).
    ClientRead {
        /// Identifies the client's request.
        token: u64,
    },
    /// A proceeding write is in the local log at `lsn` (and applied); its
    /// ack is released once `durability` holds ([`Reply::Write`]).
    Appended {
        /// The write's token.
        token: u64,
        /// Its LSN.
        lsn: Lsn,
        /// When it was committed (unix ms, for lag).
        commit_ms: u64,
        /// The ack policy it must meet.
        durability: Durability,
    },
    /// Redis `WAIT numreplicas timeout` for `lsn` ([`Reply::Write`] with
    /// [`Outcome::Replicas`]).
    Wait {
        /// Identifies the client's request.
        token: u64,
        /// The connection's last write.
        lsn: Lsn,
        /// Followers wanted.
        numreplicas: usize,
        /// 0: forever.
        timeout_ms: u64,
    },
    /// A message from a peer.
    Peer {
        /// Who sent it.
        from: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// The connection to (or from) `peer` is gone.
    Disconnected {
        /// The peer.
        peer: NodeId,
    },
    /// A timer armed with [`Output::Timer`] expired.
    Timer(TimerKind),
    /// The local log is durable up to `lsn`.
    Durable {
        /// Highest durable LSN.
        lsn: Lsn,
    },
    /// A follower applied entries up to `lsn` (committed at `commit_ms`).
    Applied {
        /// Highest applied LSN.
        lsn: Lsn,
        /// Its commit time.
        commit_ms: u64,
    },
    /// The shell executed a [`Transmit::Entries`]: it sent entries up to
    /// `last_lsn` (`bytes` long) to `to`.
    Sent {
        /// The follower.
        to: NodeId,
        /// Last LSN sent (the `from_lsn - 1` when nothing could be read).
        last_lsn: Lsn,
        /// Bytes sent.
        bytes: usize,
    },
    /// The shell executed a [`Transmit::Snapshot`] taken at `start_lsn`.
    SnapshotSent {
        /// The follower.
        to: NodeId,
        /// The snapshot's LSN.
        start_lsn: Lsn,
    },
    /// The shell installed the snapshot the replica asked for
    /// ([`SnapshotStep::End`]).
    SnapshotInstalled {
        /// The snapshot's LSN.
        start_lsn: Lsn,
    },
    /// The oldest LSN the local log still holds (after compaction).
    Retained {
        /// First LSN in the log.
        first_lsn: Lsn,
    },
    /// A control-plane RPC ([`FailoverRpc::Probe`], `Fence`, `Pause`,
    /// `Resume`); answered with [`Reply::Control`].
    Control {
        /// Identifies the call.
        token: u64,
        /// The request.
        rpc: FailoverRpc,
    },
}

/// The cluster map as one keyspace's replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapView {
    /// The leader the map names, if any.
    pub leader: Option<NodeId>,
    /// The map's epoch.
    pub epoch: Epoch,
    /// Members, ascending (empty: keep the configured ones).
    pub members: Vec<NodeId>,
}

/// The timers a replica arms; at most one of each is armed at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Leader: the core's next heartbeat or wait deadline.
    Leader,
    /// Leader: send the next round of lease requests.
    LeaseRenew,
    /// Leader: the lease runs out unless renewed (for status).
    LeaseExpiry,
    /// Follower: the leader has been silent too long; drop the stream.
    LeaderSilence,
    /// Follower: connect to the leader again.
    Reconnect,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Make this durable before anything after it (see [`Persist`]).
    Persist(Persist),
    /// Follower: append these entries to the log and apply them, then say
    /// [`Input::Applied`] and [`Input::Durable`] as those complete.
    Append(Vec<WireEntry>),
    /// Follower: one step of receiving a snapshot.
    Snapshot(SnapshotStep),
    /// Send `msg` to `to` on the open connection (dropped if there is
    /// none: the protocol recovers from lost messages).
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: PeerMsg,
    },
    /// Leader: read from the log and send (see [`Transmit`]).
    Transmit(Transmit),
    /// Follower: open a connection to `to` (then the `Send` that follows
    /// goes on it). On failure say [`Input::Disconnected`].
    Connect {
        /// The leader.
        to: NodeId,
    },
    /// Close the connection to `peer`.
    Disconnect {
        /// The peer.
        peer: NodeId,
    },
    /// Answer a request.
    Reply {
        /// The request's token.
        token: u64,
        /// The answer.
        reply: Reply,
    },
    /// Arm `kind` to fire at `at_ms` (replaces an armed one); `None`
    /// disarms it.
    Timer {
        /// Which timer.
        kind: TimerKind,
        /// When, on the clock `now_ms` comes from.
        at_ms: Option<u64>,
    },
    /// The role changed.
    Role(RoleStatus),
}

/// Durable state the shell writes (and syncs) before the messages and
/// releases of the same batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// The fence floor: refuse every message of a lower epoch from now on.
    Epoch(Epoch),
    /// This node leads `epoch` from now on: persist the epoch, that
    /// entries from `first_lsn` on belong to it and, when `led`, that this
    /// node led it (it must never lead it again after a restart), before it
    /// takes a write.
    StartEpoch {
        /// The epoch.
        epoch: Epoch,
        /// Where its entries start.
        first_lsn: Lsn,
        /// Record the epoch as led (a promotion by the control plane).
        led: bool,
    },
    /// Save the entries after `kept` to a rollback file (the new leader
    /// never had them); a snapshot replaces the log afterwards.
    RollBack {
        /// The last LSN both logs agree on.
        kept: Lsn,
        /// The new leader.
        leader: NodeId,
        /// Its epoch.
        epoch: Epoch,
    },
}

/// Receiving a snapshot, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotStep {
    /// Start a fresh store; the stream resumes after `start_lsn`.
    Begin {
        /// The snapshot's LSN.
        start_lsn: Lsn,
        /// The leader's epoch.
        epoch: Epoch,
        /// The leader's epoch history (install it with the snapshot).
        history: Vec<(Epoch, Lsn)>,
    },
    /// Load one chunk into the fresh store.
    Chunk(Bytes),
    /// Persist the fresh store and swap it in; then say
    /// [`Input::SnapshotInstalled`].
    End {
        /// The snapshot's LSN.
        start_lsn: Lsn,
    },
}

/// An answer to a client or to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The write or read may go ahead here.
    Proceed,
    /// Refused; the error names why and where to go.
    Refused(Refusal),
    /// A write's or `WAIT`'s wait ended.
    Write(Outcome),
    /// A write's wait ended because this node stopped leading.
    StoppedLeading,
    /// The answer to an [`Input::Control`].
    Control(FailoverRpc),
}

/// Why a replica refuses a client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This node follows (or is idle): writes go to the leader.
    ReadOnly {
        /// The leader's client address, when known.
        leader: Option<String>,
        /// Why there is no leader here (idle), if so.
        reason: Option<String>,
    },
    /// This node leads but does not hold its lease.
    NoLease,
    /// Writes are paused for a switchover.
    Paused,
}

impl Refusal {
    /// The RESP error text (without the leading `-`).
    pub fn to_error_text(&self) -> String {
        match self {
            Refusal::ReadOnly { leader, reason: None } => format!(
                "READONLY You can't write against a read only replica. leader: {}",
                leader.as_deref().unwrap_or("unknown")
            ),
            Refusal::ReadOnly { leader, reason: Some(r) } => format!(
                "READONLY You can't write against a read only replica. leader: {} ({r})",
                leader.as_deref().unwrap_or("unknown")
            ),
            Refusal::NoLease => "TRYAGAIN this leader does not hold its lease (it cannot reach a majority of the \
                                 cluster), so it accepts no writes; a failover may be under way"
                .into(),
            Refusal::Paused => "TRYAGAIN writes are paused for a switchover; retry".into(),
        }
    }

    /// The error reply.
    pub fn to_resp(&self) -> crate::resp::Frame {
        crate::resp::Frame::Error(self.to_error_text())
    }
}

/// The role of a replica, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleStatus {
    /// Leads `epoch`.
    Leading {
        /// The epoch.
        epoch: Epoch,
        /// Whether it holds its lease (always, without leases).
        lease_held: bool,
    },
    /// Follows `leader`.
    Following {
        /// The leader.
        leader: NodeId,
        /// The map epoch it follows at.
        epoch: Epoch,
    },
    /// Neither; why.
    Idle {
        /// Why.
        reason: String,
    },
}

/// Pending outputs, one queue per drain class. Queues keep their capacity,
/// so steady-state traffic allocates nothing here.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    persist: VecDeque<Output>,
    messages: VecDeque<Output>,
    releases: VecDeque<Output>,
    timers: VecDeque<Output>,
    roles: VecDeque<Output>,
}

impl Outputs {
    /// Queues `out` in its drain class.
    pub(crate) fn push(&mut self, out: Output) {
        let q = match &out {
            Output::Persist(_) | Output::Append(_) | Output::Snapshot(_) => &mut self.persist,
            Output::Send { .. } | Output::Transmit(_) | Output::Connect { .. } | Output::Disconnect { .. } => {
                &mut self.messages
            }
            Output::Reply { .. } => &mut self.releases,
            Output::Timer { .. } => &mut self.timers,
            Output::Role(_) => &mut self.roles,
        };
        q.push_back(out);
    }

    /// The next output in drain order.
    pub(crate) fn pop(&mut self) -> Option<Output> {
        self.persist
            .pop_front()
            .or_else(|| self.messages.pop_front())
            .or_else(|| self.releases.pop_front())
            .or_else(|| self.timers.pop_front())
            .or_else(|| self.roles.pop_front())
    }
}

#[cfg(test)]
mod tests;
