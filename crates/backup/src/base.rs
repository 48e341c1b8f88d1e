//! Base backups: `R/base/<id>/{snapshot.snap, log.seg, manifest.json}`.
//!
//! A base backup is a node's fuzzy snapshot (replay starts after
//! `start_lsn`) plus the log records `start_lsn+1..=end_lsn`, which make it
//! consistent at `end_lsn`: restoring it alone reproduces the state at
//! `end_lsn` exactly. [`BaseWriter`] receives both as byte streams (from the
//! node's admin endpoint), checksums them as they arrive, checks every
//! record and the snapshot's own trailer, and publishes the directory
//! atomically (staging directory, fsyncs, manifest, rename).
//!
//! Never publishes a base whose log does not reach `end_lsn` or whose
//! snapshot does not verify.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{corrupt, dir_entries, io_err};
use crate::records::{commit_ms_of, file_header, Records};
use crate::repo::{read_manifest, sync_dir, write_manifest, Repository};
use crate::BackupError;

/// File name of a base's snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot.snap";
/// File name of a base's log records.
pub const LOG_FILE: &str = "log.seg";
/// File name of a base's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Prefix of a base being written (never listed).
pub const STAGING_PREFIX: &str = ".staging-";
/// File in a staging directory that its writer holds locked (`flock`) for
/// its whole life: the kernel drops the lock when the writer exits, even by
/// kill -9, so `prune` can tell a live backup from a dead one.
pub const STAGING_LOCK_FILE: &str = "LOCK";

/// One file of a base backup and its checksum.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the base directory.
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// crc32c of the whole file.
    pub crc32c: u32,
}

/// `manifest.json` of a base backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseManifest {
    /// Directory name under `R/base`.
    pub id: String,
    /// The node it was taken from.
    pub node_id: u64,
    /// When it was taken (unix ms).
    pub created_unix_ms: u64,
    /// The snapshot's replay starts after this LSN.
    pub start_lsn: u64,
    /// The base is consistent at this LSN (snapshot + its log).
    pub end_lsn: u64,
    /// Leader commit time of `end_lsn` (unix ms): the earliest time it restores to.
    pub end_commit_ms: u64,
    /// Epoch at `end_lsn`.
    pub epoch: u64,
    /// The snapshot file.
    pub snapshot: FileEntry,
    /// The log records `start_lsn+1..=end_lsn`.
    pub log: FileEntry,
    /// Keys in the snapshot (approximate: it is fuzzy).
    pub keys: u64,
}

/// A published base backup.
#[derive(Clone, Debug)]
pub struct Base {
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: BaseManifest,
}

impl Base {
    /// Path of the snapshot file.
    pub fn snapshot_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.snapshot.name)
    }

    /// Path of the log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.log.name)
    }
}

/// Every published base of the repository, oldest (by `end_lsn`) first.
/// Staging directories are skipped; a base whose manifest does not verify
/// is an error naming it.
pub fn list_bases(repo: &Repository) -> Result<Vec<Base>, BackupError> {
    let root = repo.base_root();
    let mut out = Vec::new();
    for entry in dir_entries(&root)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(STAGING_PREFIX) || !entry.path().is_dir() {
            continue;
        }
        let manifest: BaseManifest = read_manifest(&entry.path().join(MANIFEST_FILE))?;
        out.push(Base { dir: entry.path(), manifest });
    }
    out.sort_by_key(|b| (b.manifest.end_lsn, b.manifest.created_unix_ms));
    Ok(out)
}

/// What the node says about the snapshot it took for a base backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseSource {
    /// The node's id.
    pub node_id: u64,
    /// Snapshot replay starts after this LSN.
    pub start_lsn: u64,
    /// Consistent once the log is replayed to this LSN.
    pub end_lsn: u64,
    /// Commit time of `end_lsn`.
    pub end_commit_ms: u64,
    /// Epoch at `end_lsn`.
    pub epoch: u64,
    /// Keys in the snapshot.
    pub keys: u64,
    /// Snapshot bytes.
    pub snapshot_bytes: u64,
    /// The snapshot's file name on the node.
    pub snapshot_name: String,
    /// When the snapshot was taken (unix ms).
    pub created_unix_ms: u64,
}

struct Sink {
    path: PathBuf,
    file: File,
    bytes: u64,
    crc: u32,
}

impl Sink {
    fn create(path: PathBuf) -> Result<Sink, BackupError> {
        let file = File::create(&path).map_err(io_err("create", &path))?;
        Ok(Sink { path, file, bytes: 0, crc: 0 })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.file.write_all(bytes).map_err(io_err("write", &self.path))?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn finish(self, name: &str) -> Result<FileEntry, BackupError> {
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        Ok(FileEntry { name: name.into(), bytes: self.bytes, crc32c: self.crc })
    }
}

/// Receives one base backup and publishes it.
pub struct BaseWriter {
    repo: Repository,
    source: BaseSource,
    id: String,
    staging: PathBuf,
    /// The locked [`STAGING_LOCK_FILE`] (unlocked when this writer drops).
    lock: File,
    snapshot: Sink,
    log: Sink,
    /// Next LSN the log stream must deliver.
    next_lsn: u64,
    end_commit_ms: u64,
}

impl BaseWriter {
    /// Starts a base backup of `source` in a staging directory.
    pub fn begin(repo: &Repository, source: BaseSource) -> Result<BaseWriter, BackupError> {
        let id = format!("{:015}-node{}-lsn{}", source.created_unix_ms, source.node_id, source.end_lsn);
        let staging = repo.base_root().join(format!("{STAGING_PREFIX}{id}"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err("remove stale staging directory", &staging))?;
        }
        fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
        let lock_path = staging.join(STAGING_LOCK_FILE);
        let lock = File::create(&lock_path).map_err(io_err("create", &lock_path))?;
        lock.try_lock().map_err(|e| {
            BackupError::Invalid(format!("cannot lock {}: {e} (is another backup of it running?)", lock_path.display()))
        })?;
        let snapshot = Sink::create(staging.join(SNAPSHOT_FILE))?;
        let mut log = Sink::create(staging.join(LOG_FILE))?;
        log.write(&file_header())?;
        Ok(BaseWriter {
            repo: repo.clone(),
            next_lsn: source.start_lsn + 1,
            end_commit_ms: source.end_commit_ms,
            source,
            id,
            staging,
            lock,
            snapshot,
            log,
        })
    }

    /// The base's id (its directory name once published).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Snapshot bytes received so far.
    pub fn snapshot_bytes(&self) -> u64 {
        self.snapshot.bytes
    }

    /// The next LSN the log stream must deliver.
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends the next piece of the snapshot file.
    pub fn write_snapshot(&mut self, bytes: &[u8]) -> Result<(), BackupError> {
        self.snapshot.write(bytes)
    }

    /// Appends a run of encoded log records (from the node), checking each
    /// record's crc and that LSNs continue from the last one; records past
    /// `end_lsn` are dropped. Returns how many were kept.
    pub fn write_log(&mut self, run: &[u8]) -> Result<u64, BackupError> {
        let label = PathBuf::from(format!("<log records from the node, lsn {}..>", self.next_lsn));
        let mut kept = 0;
        let mut buf = Vec::with_capacity(run.len());
        for rec in Records::of_run(&label, run) {
            let rec = rec?;
            if rec.lsn < self.next_lsn || rec.lsn > self.source.end_lsn {
                continue;
            }
            if rec.lsn != self.next_lsn {
                return Err(corrupt(&label, rec.offset, format!("expected lsn {}, got {}", self.next_lsn, rec.lsn)));
            }
            crate::records::encode_record(&mut buf, rec.lsn, rec.epoch, rec.payload);
            if let Some(ms) = commit_ms_of(rec.payload) {
                self.end_commit_ms = self.end_commit_ms.max(ms);
            }
            self.next_lsn += 1;
            kept += 1;
        }
        self.log.write(&buf)?;
        Ok(kept)
    }

    /// Checks completeness, fsyncs, writes the manifest and publishes the
    /// base under `R/base/<id>`.
    pub fn finish(self) -> Result<Base, BackupError> {
        let BaseWriter { repo, source, id, staging, lock, snapshot, log, next_lsn, end_commit_ms } = self;
        if next_lsn != source.end_lsn + 1 {
            return Err(BackupError::Invalid(format!(
                "base backup incomplete: the log reached lsn {} but the snapshot needs it to lsn {}",
                next_lsn - 1,
                source.end_lsn
            )));
        }
        let snapshot_path = snapshot.path.clone();
        let snapshot = snapshot.finish(SNAPSHOT_FILE)?;
        let log = log.finish(LOG_FILE)?;
        let reader = tandem_storage::SnapshotReader::open(&snapshot_path)?;
        let meta = reader.meta();
        if meta.start_lsn != source.start_lsn || meta.end_lsn != source.end_lsn {
            return Err(corrupt(
                &snapshot_path,
                0,
                format!(
                    "snapshot covers lsn {}..{} but the node announced {}..{}",
                    meta.start_lsn, meta.end_lsn, source.start_lsn, source.end_lsn
                ),
            ));
        }
        let manifest = BaseManifest {
            id: id.clone(),
            node_id: source.node_id,
            created_unix_ms: source.created_unix_ms,
            start_lsn: source.start_lsn,
            end_lsn: source.end_lsn,
            end_commit_ms,
            epoch: source.epoch,
            snapshot,
            log,
            keys: source.keys,
        };
        write_manifest(&staging.join(MANIFEST_FILE), &manifest)?;
        // The lock file is not part of the base; the handle stays locked
        // until the rename, so prune never mistakes this base for a dead one.
        let lock_path = staging.join(STAGING_LOCK_FILE);
        fs::remove_file(&lock_path).map_err(io_err("remove", &lock_path))?;
        sync_dir(&staging)?;
        let dir = repo.base_root().join(&id);
        fs::rename(&staging, &dir).map_err(io_err("publish base backup", &dir))?;
        sync_dir(&repo.base_root())?;
        drop(lock);
        Ok(Base { dir, manifest })
    }
}
