//! Tandem's bytes on disk: the replication log and snapshots.
//!
//! # Layout
//! - [`log`]: segment files of checksummed records, the writer thread with
//!   group commit and the four fsync policies, crash recovery (torn tails
//!   are cut and reported, corruption stops recovery with path and offset)
//!   and the deliberate repair tool.
//! - [`snapshot`]: checksummed snapshot files made of opaque chunks,
//!   published atomically (temp file, fsync, rename, directory fsync).
//! - [`error`]: [`StorageError`], the one operating-error type of this crate.
//!
//! # What this crate must never do
//! It never interprets a log payload or a snapshot chunk: both are opaque
//! byte slices produced by other crates, so it never knows what a command,
//! a key or a keyspace is. It does no networking and uses no async runtime:
//! the log writer is a plain `std` thread and locks come from `parking_lot`.
//! It never swallows an I/O error: a failed write or fsync poisons the log.

#![warn(missing_docs)]

pub mod error;
mod fsutil;
pub mod log;
pub mod snapshot;

pub use error::StorageError;
pub use log::{
    recover, repair_truncate, FsyncPolicy, Log, LogConfig, LogStats, Record, Recovery, RepairReport, TornTail,
};
pub use snapshot::{SnapshotFile, SnapshotInfo, SnapshotMeta, SnapshotReader, SnapshotWriter};
