//! [`StorageError`]: every operating error of the storage crate.
//!
//! Owns the wording users see for disk trouble: each message names the file,
//! the byte offset where it applies, and what to do next. Programmer errors
//! (an out-of-order LSN, an oversized payload) are `assert!`s, never values
//! of this type.

use std::error::Error as StdError;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// An operating error of the storage layer: I/O failure, corruption, a
/// poisoned log, a request for data that is gone.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A system call on a file or directory failed (disk full, EIO,
    /// permission denied, ...). `op` says what was attempted.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted, e.g. "fdatasync" or "create segment".
        op: &'static str,
        /// The file or directory it was attempted on.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },

    /// A log segment holds a bad record (or header) that is not a torn tail:
    /// valid data follows it. Recovery stops here rather than skip entries.
    #[error(
        "corrupt log record in {} at byte offset {offset}: {reason}; run `tandem log repair --data-dir <data dir>` to truncate the log at this point (entries after it are lost)",
        path.display()
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad record (or header field) in that file.
        offset: u64,
        /// What check failed, with stored and computed values.
        reason: String,
    },

    /// A snapshot file failed its checks (truncated, bad checksum, bad header).
    #[error(
        "corrupt snapshot {} at byte offset {offset}: {reason}; delete it to fall back to an older snapshot, or restore from a backup",
        path.display()
    )]
    CorruptSnapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Byte offset where the check failed.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// An earlier write or fsync of the log failed. The log accepts no more
    /// durable writes until the process restarts and recovery re-reads what
    /// actually reached the disk.
    #[error(
        "replication log is poisoned: {cause}; nothing after durable lsn {durable_lsn} will become durable. Restart the node: recovery re-reads what actually reached the disk (a failed fsync is never retried, because the kernel may already have dropped the unwritten pages)"
    )]
    Poisoned {
        /// The failure that poisoned the log.
        cause: Arc<StorageError>,
        /// The durable LSN, frozen at the moment of the failure.
        durable_lsn: u64,
    },

    /// Entries were requested that the log no longer retains (truncated
    /// behind a snapshot): the reader needs a snapshot instead.
    #[error(
        "log entries from lsn {from_lsn} are no longer retained (oldest retained lsn is {first_lsn}); a snapshot is needed instead"
    )]
    NotRetained {
        /// The first LSN asked for.
        from_lsn: u64,
        /// The oldest LSN the log still holds.
        first_lsn: u64,
    },

    /// A caller-supplied callback (log replay, snapshot chunk loader)
    /// returned an error; iteration stopped there.
    #[error("{what}: {source}")]
    Callback {
        /// Where iteration stopped, e.g. "replay stopped at lsn 42".
        what: String,
        /// The callback's error.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// A request that cannot be carried out as asked, e.g. a repair offset
    /// past the end of the file.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// Why it was refused.
        reason: String,
    },
}

impl StorageError {
    /// Builds [`StorageError::Io`]: `op` failed on `path`.
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: io::Error) -> StorageError {
        StorageError::Io { op, path: path.into(), source }
    }

    /// True for [`StorageError::Corrupt`] and [`StorageError::CorruptSnapshot`].
    pub fn is_corruption(&self) -> bool {
        matches!(self, StorageError::Corrupt { .. } | StorageError::CorruptSnapshot { .. })
    }
}

pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt { path: path.into(), offset, reason: reason.into() }
}

pub(crate) fn corrupt_snapshot(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> StorageError {
    StorageError::CorruptSnapshot { path: path.into(), offset, reason: reason.into() }
}
