//! Single-leader replication as pure state machines.
//!
//! The node drives these cores the way quinn-proto's users drive a
//! connection: inputs go in through `handle_*(now_ms, ..)`, outputs are
//! drained with `poll_*`, timers are data (`poll_timeout`), and getters take
//! `&self`. Time is always passed in as `now_ms`; nothing here reads a clock,
//! a socket, a file or an RNG, so the deterministic simulator (`tandem-sim`)
//! runs exactly this code.
//!
//! # Layout
//! - [`policy`]: ack policies (`async`, `any k`, `first k (..)`, `all`), ack
//!   levels (`flush`, `apply`) and their parsing.
//! - [`msg`]: the peer protocol messages and their binary encoding.
//! - [`leader`]: the leader side: who needs which entries, back-pressure,
//!   heartbeats, lag, and when a write's or a `WAIT`'s ack is released.
//! - [`follower`]: the follower side: checks the stream (epoch, gaps,
//!   duplicates), tracks flushed/applied LSNs, coalesces acks, staleness.
//!
//! # What the node must do around them
//! - Leader: append an entry to the log and apply it, then call
//!   [`Leader::handle_appended`]; report fsync progress with
//!   [`Leader::handle_local_durable`]; drain [`Leader::poll_transmit`] and
//!   execute each [`Transmit`] (read entries from the log and send them, then
//!   call [`Leader::handle_sent`]); release the replies that
//!   [`Leader::poll_release`] hands out; sleep until [`Leader::poll_timeout`]
//!   and call [`Leader::handle_timeout`].
//! - Follower: append and apply what [`Follower::handle_entries`] accepts,
//!   report [`Follower::handle_flushed`] / [`Follower::handle_applied`] as
//!   they complete, and send what [`Follower::poll_ack`] returns.
//! - Calls about a connection the node has already replaced (a follower that
//!   reconnected) must not reach the cores: the cores know a follower by its
//!   node id, not by its socket.
//!
//! This module must never do I/O, read time, or iterate a hash map in an
//! order that can be observed.

pub mod follower;
pub mod leader;
pub mod msg;
pub mod policy;

pub use follower::{Follower, FollowerState, FollowerStatus};
pub use leader::{Leader, LeaderConfig, Outcome, Release, ReplicaState, ReplicaStatus, Transmit};
pub use msg::{PeerMsg, WireEntry};
pub use policy::{AckError, AckLevel, AckPolicy, Durability};

/// Identifies a node of the cluster (its `--node-id`).
pub type NodeId = u64;
