//! # tandem-node: the I/O shell of a Tandem node
//!
//! The only layer that touches tokio, sockets, files and clocks. It drives
//! the pure logic of `tandem-core` and the on-disk formats of
//! `tandem-storage`, and it makes log appends durable *before* it releases
//! the replies that depend on them.
//!
//! # Layout
//! - [`config`]: every setting and limit, with defaults.
//! - [`db`]: the keyspace behind its lock, the write path (apply + log
//!   append), durability waits, recovery, snapshots.
//! - [`server`]: lifecycle: listeners, background tasks, graceful shutdown.
//! - [`connection`]: one RESP client connection, pipelining and limits.
//! - [`node_commands`]: commands that need the connection or node
//!   (`HELLO`, `AUTH`, `INFO`, `CONFIG`, `COMMAND`, `CLIENT`, `SAVE`).
//! - [`scripting`]: `EVAL` / `EVALSHA` / `SCRIPT`: the script cache, the
//!   time limit and `SCRIPT KILL`, running a script as one write.
//! - [`admin`]: the HTTP endpoint (`/healthz`, `/status`, `/metrics`,
//!   `/faults`, `/cluster`, `/events`, `/switchover`, `/backup/*`).
//! - [`dashboard`]: the live dashboard page at the admin port's `/` and
//!   the `/dashboard/state` JSON it polls.
//! - [`failover`]: automatic failover around the control plane (map
//!   watcher, orchestrator, fencing, switchover).
//! - [`archive`]: continuous log archiving to the backup repository, the
//!   archive lag (backup RPO) and the `rpo_max_ms` write refusal.
//! - [`backup_http`]: the admin endpoints a base backup is taken through.
//! - [`faults`]: injected link faults (cut peers, added delay).
//! - [`keyspaces`]: the keyspaces in force (cluster map or config file),
//!   routing a command to its keyspace and ack policy, `/keyspaces`.
//! - [`engines`]: the replicas of multi-leader and leaderless keyspaces
//!   (one engine per keyspace), the seam the connection layer and the peer
//!   listener reach them through; [`multi_leader`] and [`leaderless`] are
//!   the two engines.
//! - [`conflicts_http`]: `GET /conflicts`, the conflict feed of the
//!   multi-leader and leaderless keyspaces.
//! - [`events`]: the event log (failovers, RTO, rollbacks) behind `/events`.
//! - [`rollback`]: rollback files (entries a node had to remove on rejoin).
//! - [`control`]: the control plane, a Raft group (openraft) over the
//!   cluster map, on the peer port.
//! - [`metrics`]: the Prometheus registry.
//! - [`peer_auth`]: the mutual challenge-response handshake that opens
//!   every peer connection (cluster secret, HMAC-SHA256, fresh nonces).

pub mod admin;
pub mod archive;
pub mod backlog;
pub mod backup_http;
pub mod clients;
pub mod config;
pub mod conflicts_http;
pub mod connection;
pub mod control;
pub mod dashboard;
pub mod db;
pub mod engines;
pub mod events;
pub mod failover;
pub mod faults;
pub mod keyspaces;
pub mod leaderless;
pub mod maxmemory;
pub mod metrics;
pub mod multi_leader;
pub mod node_commands;
pub mod peer_auth;
pub mod pubsub;
pub mod repl;
pub mod rollback;
pub mod scripting;
pub mod sentinel;
pub mod server;
pub mod tls;

pub use config::Config;
pub use server::run;
