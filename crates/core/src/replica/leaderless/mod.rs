//! Leaderless replication (Dynamo style), as pure logic: where a key lives,
//! how one request is coordinated, how replicas compare and repair.
//!
//! Owns:
//! - [`ring`]: the consistent-hash ring with virtual nodes over member ids
//!   and each key's preference list (N distinct next nodes);
//! - [`quorum`]: N / W / R arithmetic (overlap, tolerated failures);
//! - [`coordinator`]: the sans-IO state machine of one client request
//!   (send to N, count durable acks or read replies, decide at W / R or on
//!   timeout with the exact count, newest version, read-repair targets);
//! - [`merkle`]: a fixed-depth hash tree over key buckets whose diff names
//!   exactly the differing leaves and keys;
//! - [`store`]: one node's replica data (versioned records, LWW apply,
//!   tombstones kept for a grace period, TTLs as absolute times) and its
//!   hints for other nodes (sloppy quorum);
//! - [`rebalance`]: after a ring change, which held records go to which
//!   new owners and which this node may forget once they hold them;
//! - [`lww`]: versions (the shared `crate::conflict::Hlc`), causal
//!   contexts ([`Seen`]) and last-writer-wins, the conflict policy
//!   leaderless keyspaces support;
//! - [`feed`]: the conflict feed of the concurrent versions a replica
//!   discarded (shown with multi-leader keyspaces' feeds).
//!
//! Nothing here reads a clock, does I/O or uses a global RNG: times come in
//! as `now_ms` (wall-clock milliseconds, because versions and expiry times
//! are compared across nodes), and every iteration that reaches an output
//! is over an ordered collection. The node shell (`tandem-node`) and the
//! simulator (`tandem-sim`) drive the very same types.

pub mod coordinator;
pub mod feed;
pub mod lww;
pub mod merkle;
pub mod quorum;
pub mod rebalance;
pub mod ring;
pub mod store;

pub use coordinator::{ReadCoordinator, ReadOutcome, WriteCoordinator, WriteOutcome};
pub use feed::ConflictFeed;
pub use lww::{Clock, Seen, Version};
pub use merkle::Merkle;
pub use rebalance::Rebalance;
pub use ring::Ring;
pub use store::{Hints, Record, ReplicaStore};
