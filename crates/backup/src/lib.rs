//! # tandem-backup: the backup repository
//!
//! A backup repository is a plain directory (local, or a mounted remote
//! filesystem: the off-site copy) holding base backups and the archived
//! replication log. Everything needed to restore a node to a point in time
//! lives in it; docs/backup.md documents the layout byte by byte.
//!
//! # Layout
//! - [`repo`]: the repository directory, its manifests (every file carries a
//!   crc32c in one), atomic file publication.
//! - [`records`]: reading and writing files of log records in the log's
//!   own segment format.
//! - [`archive`]: [`archive::ArchiveWriter`], the continuous log archive a
//!   node ships to (append, checksum, seal).
//! - [`base`]: [`base::BaseWriter`], publishing a base backup (a fuzzy
//!   snapshot plus the log range that makes it consistent).
//! - [`restore`]: choosing a base and an archive chain for a target, fast
//!   replay, writing an ordinary data directory.
//! - [`maintain`]: `list`, `verify` and `prune`.
//! - [`multi_leader`]: each node's archive of each multi-leader keyspace's log,
//!   and the HLC-cut union a restore writes back.
//! - [`time`]: RFC 3339 parsing and printing (UTC) for `--to-time`.
//!
//! # What this crate must never do
//! It never talks to the network and uses no async runtime (the node and the
//! CLI move bytes; this crate stores and checks them). It never trusts a
//! byte it did not checksum: a corrupt or missing file is an error naming
//! its path (and offset where one applies), never skipped.

#![warn(missing_docs)]

pub mod archive;
pub mod base;
pub mod error;
pub mod maintain;
pub mod multi_leader;
pub mod records;
pub mod repo;
pub mod restore;
pub mod time;

pub use error::BackupError;
pub use repo::Repository;

#[cfg(test)]
mod tests;
