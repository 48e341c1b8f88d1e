//! Small filesystem helpers shared by the log and snapshot modules.
//!
//! Owns nothing on disk by itself; it never decides what to write.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::StorageError;

/// Maps an `io::Error` into [`StorageError::Io`] naming `op` and `path`.
pub(crate) fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StorageError + 'a {
    move |source| StorageError::Io { op, path: path.to_path_buf(), source }
}

/// Fsyncs a directory so that created, renamed or deleted entries in it
/// survive a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}
