//! # tandem-core: the sans-IO heart of Tandem
//!
//! Everything in this crate is pure logic: it takes `now` (milliseconds since
//! the Unix epoch, passed in by the caller), requests and messages, and hands
//! back replies, row effects to make durable and messages to send. It never
//! reads a clock, a socket, a file or a global RNG. This is what lets the
//! deterministic simulator drive the same code the real node runs.
//!
//! # Layout
//! - [`effect`]: row effects and log entries, the unit of the replication log.
//! - [`store`]: the in-memory keyspace state; applies effects, answers reads,
//!   encodes/decodes snapshot chunks.
//! - [`command`]: the command table (names, arity, flags) and the data
//!   commands' execution: turns a request into a reply plus row effects.
//! - [`encoding`]: Redis's compact-encoding thresholds and the encoding
//!   name `OBJECT ENCODING` reports from them.
//! - [`evict`]: `maxmemory` policies and the sampled choice of the key to
//!   evict.
//! - [`write`]: one write all or nothing: the size budget and undo behind
//!   `WriteCtx::emit`, and the entry point that runs a write command.
//! - [`resp`]: the RESP2/RESP3 wire codec.
//! - [`script`]: Lua scripts (`EVAL`) in a sandbox; their `redis.call`
//!   writes join one write batch, so only row effects are logged.
//! - [`glob`]: Redis-style glob matching for `KEYS` and `SCAN MATCH`.
//! - [`keyspace`]: keyspaces (name, key prefix, replication mode and
//!   policy) and routing a key or a command to its keyspace.
//! - [`failover`]: leader leases, fencing, promotion rules and the
//!   divergence point of a returning old leader.
//! - [`replica`]: one keyspace's replica behind one trait (inputs at `now`,
//!   outputs in one documented drain order); the single-leader replica that
//!   owns the leader/follower cores, leases and role decisions.
//! - [`conflict`]: clocks (HLC, version vectors), per-policy versioned
//!   values (LWW, siblings, CRDTs) and the merge that yields conflict records.
//! - [`session`]: session guarantees (read-your-writes, monotonic reads,
//!   bounded staleness): where a read may go.

pub mod command;
pub mod conflict;
pub mod effect;
pub mod encoding;
pub mod evict;
pub mod failover;
pub mod glob;
pub mod keyspace;
pub mod repl;
pub mod replica;
pub mod resp;
pub mod script;
pub mod session;
pub mod store;
pub mod write;

/// Log sequence number: position of an entry in the replication log. The
/// first entry has LSN 1; LSN 0 means "nothing".
pub type Lsn = u64;

/// Leadership generation. Every entry and replication message carries one; a
/// higher epoch fences a lower one.
pub type Epoch = u64;
