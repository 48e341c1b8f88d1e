//! [`BackupError`]: every operating error of the backup crate, worded for the
//! operator: what failed, on which file (and offset), and what to do.

use std::path::PathBuf;

/// An operating error of a backup, restore or repository check.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A system call on a repository or data-directory file failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file does not match its checksum or its format.
    #[error("corrupt backup file {} at byte offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the check failed (0 for a whole-file checksum).
        offset: u64,
        /// Which check failed.
        reason: String,
    },
    /// A file a manifest lists is not there.
    #[error("missing backup file {}: {reason}", path.display())]
    Missing {
        /// The file that should exist.
        path: PathBuf,
        /// Who expects it.
        reason: String,
    },
    /// The archived log does not cover a range the request needs.
    #[error("gap in the archived log: lsn {from_lsn}..={to_lsn} is in no archive file ({reason})")]
    Gap {
        /// First missing LSN.
        from_lsn: u64,
        /// Last missing LSN (or the target when the archive simply ends).
        to_lsn: u64,
        /// Context: what needed it.
        reason: String,
    },
    /// The request cannot be satisfied from this repository.
    #[error("{0}")]
    Invalid(String),
    /// The storage layer failed (snapshot files).
    #[error(transparent)]
    Storage(#[from] tandem_storage::StorageError),
}

/// A closure turning an `io::Error` into [`BackupError::Io`].
pub(crate) fn io_err(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.into();
    move |source| BackupError::Io { op, path, source }
}

pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> BackupError {
    BackupError::Corrupt { path: path.into(), offset, reason: reason.into() }
}

/// The entries of directory `dir`; a missing directory has none.
pub(crate) fn dir_entries(dir: &std::path::Path) -> Result<Vec<std::fs::DirEntry>, BackupError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>().map_err(io_err("list", dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("list", dir)(e)),
    }
}
