//! The repository directory and its manifests.
//!
//! ```text
//! R/TANDEM-BACKUP-REPOSITORY           marker: "tandem backup repository v1"
//! R/base/<id>/manifest.json            a base backup: crc-enveloped JSON
//! R/base/<id>/snapshot.snap            the fuzzy snapshot (storage format)
//! R/base/<id>/log.seg                  records start_lsn+1..=end_lsn (segment format)
//! R/archive/node-<id>/<first lsn>.seg  archived log of one node (segment format)
//! R/archive/node-<id>/<first lsn>.json its manifest: lsn/time range, bytes, crc32c, sealed
//! ```
//!
//! Owns paths, the manifest envelope (`{"crc32c": N, "body": {...}}`, the crc
//! over the canonical JSON of `body`) and atomic publication (temp file,
//! fsync, rename, directory fsync). Never deletes anything except through
//! [`crate::maintain::prune`].

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{corrupt, io_err};
use crate::BackupError;

/// Name of the marker file that makes a directory a repository.
pub const MARKER_FILE: &str = "TANDEM-BACKUP-REPOSITORY";
/// Contents of the marker file.
const MARKER_TEXT: &str = "tandem backup repository v1\n";
/// Largest manifest this crate parses.
pub const MANIFEST_BYTES_MAX: u64 = 1 << 20;
/// Suffix of files being written (never read as data); the writer's pid follows.
pub const TEMP_SUFFIX: &str = ".tmp";
/// How long to wait for another process (a node and `tandem backup base`)
/// that is creating the same repository at the same moment to finish.
const CREATE_RACE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A backup repository rooted at a directory.
#[derive(Clone, Debug)]
pub struct Repository {
    root: PathBuf,
}

impl Repository {
    /// Opens the repository at `root`, creating it (and its marker) if the
    /// directory is missing or empty. A non-empty directory without the
    /// marker is refused, so a typo never scatters files into a random place.
    pub fn create_or_open(root: &Path) -> Result<Repository, BackupError> {
        let marker = root.join(MARKER_FILE);
        let deadline = std::time::Instant::now() + CREATE_RACE_WAIT;
        if !marker.exists() {
            let empty = loop {
                let names: Vec<String> = match fs::read_dir(root) {
                    Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(io_err("list", root)(e)),
                };
                // Another process may be creating it right now.
                let being_created = names.iter().all(|n| n.starts_with(MARKER_FILE) || n == "base" || n == "archive");
                if names.is_empty() || marker.exists() || !being_created || std::time::Instant::now() > deadline {
                    break names.is_empty() || marker.exists();
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            };
            if !empty {
                return Err(BackupError::Invalid(format!(
                    "{} is not empty and holds no {MARKER_FILE} file: not a backup repository",
                    root.display()
                )));
            }
            fs::create_dir_all(root).map_err(io_err("create repository directory", root))?;
            if !marker.exists() {
                write_atomic(&marker, MARKER_TEXT.as_bytes())?;
            }
        }
        let repo = Repository { root: root.to_path_buf() };
        for dir in [repo.base_root(), repo.archive_root()] {
            fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        }
        Ok(repo)
    }

    /// Opens an existing repository (its marker must be there).
    pub fn open(root: &Path) -> Result<Repository, BackupError> {
        if !root.join(MARKER_FILE).is_file() {
            return Err(BackupError::Invalid(format!(
                "{} is not a backup repository (no {MARKER_FILE} file); create one with `tandem backup base --repo {}`",
                root.display(),
                root.display()
            )));
        }
        Ok(Repository { root: root.to_path_buf() })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `R/base`.
    pub fn base_root(&self) -> PathBuf {
        self.root.join("base")
    }

    /// `R/archive`.
    pub fn archive_root(&self) -> PathBuf {
        self.root.join("archive")
    }

    /// `R/archive/node-<id>`: the archive stream of one node.
    pub fn stream_dir(&self, node_id: u64) -> PathBuf {
        self.archive_root().join(format!("node-{node_id}"))
    }
}

/// Writes `bytes` to `path` atomically and durably: `path.tmp`, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let tmp = temp_path(path);
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// `path` with [`TEMP_SUFFIX`] and this process's id appended (two
/// processes never share a temp file).
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!("{TEMP_SUFFIX}{}", std::process::id()));
    PathBuf::from(s)
}

/// fsyncs a directory so the names created or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Writes a manifest: `{"crc32c": N, "body": ...}` atomically.
pub fn write_manifest<T: Serialize>(path: &Path, body: &T) -> Result<(), BackupError> {
    let value = serde_json::to_value(body).expect("manifest types serialize");
    let canonical = serde_json::to_string(&value).expect("a JSON value serializes");
    let envelope = serde_json::json!({ "crc32c": crc32c::crc32c(canonical.as_bytes()), "body": value });
    let mut text = serde_json::to_string_pretty(&envelope).expect("a JSON value serializes");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Reads and checks a manifest written by [`write_manifest`].
pub fn read_manifest<T: DeserializeOwned>(path: &Path) -> Result<T, BackupError> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Missing { path: path.into(), reason: "a manifest is missing".into() })
        }
        Err(e) => return Err(io_err("stat", path)(e)),
    };
    if len > MANIFEST_BYTES_MAX {
        return Err(corrupt(path, 0, format!("manifest of {len} bytes exceeds the {MANIFEST_BYTES_MAX} limit")));
    }
    let text = fs::read(path).map_err(io_err("read", path))?;
    let envelope: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| corrupt(path, 0, format!("manifest is not JSON: {e}")))?;
    let stored = envelope.get("crc32c").and_then(|v| v.as_u64());
    let body = envelope.get("body").ok_or_else(|| corrupt(path, 0, "manifest has no body"))?;
    let canonical = serde_json::to_string(body).expect("a JSON value serializes");
    let computed = u64::from(crc32c::crc32c(canonical.as_bytes()));
    if stored != Some(computed) {
        return Err(corrupt(path, 0, format!("manifest crc32c {stored:?} does not match its body ({computed})")));
    }
    serde_json::from_value(body.clone()).map_err(|e| corrupt(path, 0, format!("manifest body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_edit_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        write_manifest(&path, &serde_json::json!({"end_lsn": 42})).unwrap();
        let v: serde_json::Value = read_manifest(&path).unwrap();
        assert_eq!(v["end_lsn"], 42);
        let text = fs::read_to_string(&path).unwrap().replace("42", "43");
        fs::write(&path, text).unwrap();
        let err = read_manifest::<serde_json::Value>(&path).unwrap_err();
        assert!(err.to_string().contains("m.json"), "{err}");
    }

    #[test]
    fn a_non_empty_foreign_directory_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        assert!(Repository::create_or_open(dir.path()).is_err());
        let fresh = dir.path().join("repo");
        Repository::create_or_open(&fresh).unwrap();
        Repository::open(&fresh).unwrap();
    }
}
