//! # tandem-client: sessions over a Tandem cluster
//!
//! An application (or `tandem proxy`, which is built on this crate) keeps
//! one [`client::Client`] per session: it learns the cluster's topology by
//! polling every node's `INFO replication`, sends writes to the leader with
//! `LASTLSN` pipelined after them, and routes reads with the sans-IO
//! [`tandem_core::session`] so that the session gets the guarantees it asked
//! for (read-your-writes by token or leader window, monotonic reads,
//! bounded staleness, strong). [`DirectClient`] is the application-facing
//! handle; its session token can be exported as a string and imported in
//! another process. See `docs/session-guarantees.md`.
//!
//! # Layout
//! - [`topology`]: polls every node's `INFO replication` and keeps the
//!   current leader, followers, applied LSNs and staleness.
//! - [`backend`]: one RESP connection to a node, with pipelined calls.
//! - [`client`]: one session: routes commands, answers `SESSION`, and can
//!   serve a RESP socket (the proxy's per-connection loop).
//! - [`direct`]: [`DirectClient`], the library handle for applications.
//! - [`metrics`]: counters shown by `INFO proxy` and `GET /metrics`.
//!
//! This crate must never hold database logic: every command it does not
//! answer itself is executed by a node.

pub mod backend;
pub mod client;
pub mod direct;
pub mod metrics;
pub mod topology;

pub use direct::DirectClient;
pub use tandem_core::session::{Balance, Ryw, SessionConfig, TokenError};

/// Most commands parsed from one client read before their replies are
/// written: bounds the memory of a pipelining client.
pub const PIPELINE_COMMANDS_MAX: usize = 1024;
/// Default topology poll interval.
pub const POLL_INTERVAL_MS_DEFAULT: u64 = 50;
