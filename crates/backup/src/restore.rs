//! Point-in-time restore: choose a base backup and a chain of record files
//! (the base's own log, then archive files of any node's stream) that covers
//! the target without a gap, replay them over the snapshot, and write an
//! ordinary data directory (`snapshots/snap-<lsn>.snap`, an empty `log/`,
//! `epoch`) that `tandem server --data-dir` starts from.
//!
//! Targets: `--latest` (everything archived), `--to-lsn N` (entries with
//! lsn <= N), `--to-time T` (entries whose leader commit time is <= T).
//! Every file is checked against its manifest crc before a byte of it is
//! applied; a corrupt file, a missing file or a gap is an error naming it.
//!
//! Crash-safe: the target directory is created first with a
//! [`RESTORE_MARKER_FILE`] in it (the server refuses such a directory), the
//! data is built in `<parent>/.<name>.restoring` and swapped into place only
//! when complete ([`RestoreDir`]).
//!
//! Never writes into a non-empty directory, never restores past a gap, and
//! never applies an entry beyond the target.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tandem_core::effect::LogEntry;
use tandem_core::store::{Store, BUCKETS};
use tandem_storage::snapshot::SnapshotWriter;
use tandem_storage::SnapshotReader;

use crate::archive::list_streams;
use crate::base::{list_bases, Base};
use crate::error::{corrupt, io_err};
use crate::multi_leader::{list_ml_streams, restore_ml, write_ml, MlRestoredKeyspace, MlStreams};
use crate::records::{commit_ms_of, file_checksum, read_checked, Records};
use crate::repo::{sync_dir, write_atomic, Repository};
use crate::time::format_rfc3339;
use crate::BackupError;

/// The progress callback fires at most once per this many replayed records.
pub const PROGRESS_EVERY_RECORDS: u64 = 1 << 16;
/// Most keys a restore reserves table room for up front (a log of updates to
/// few keys must not reserve room for every entry).
pub const RESERVE_KEYS_MAX: u64 = 32 << 20;
/// Hash seed of the store built during a restore (the node re-hashes on load).
const RESTORE_HASH_SEED: u64 = 0x7a6e_6465_6d21;

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Everything the repository holds.
    Latest,
    /// The state right after this LSN.
    Lsn(u64),
    /// Every entry committed at or before this unix ms.
    Time(u64),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Latest => write!(f, "latest"),
            Target::Lsn(n) => write!(f, "lsn {n}"),
            Target::Time(t) => write!(f, "time {}", format_rfc3339(*t)),
        }
    }
}

/// A record file in a restore chain.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// First LSN it holds.
    pub first_lsn: u64,
    /// Last LSN it holds.
    pub last_lsn: u64,
    /// Commit time of its first record (None: unknown).
    pub first_commit_ms: Option<u64>,
    /// Commit time of its last record (None: unknown).
    pub last_commit_ms: Option<u64>,
    /// Bytes the manifest covers.
    pub bytes: u64,
    /// Their crc32c.
    pub crc32c: u32,
}

/// A base and the files to replay after it.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The base backup.
    pub base: Base,
    /// Record files in LSN order, covering `base.start_lsn + 1` onwards.
    pub sources: Vec<Source>,
    /// The target.
    pub target: Target,
    /// Every node's archive of every multi-leader keyspace
    /// ([`crate::multi_leader`]).
    pub multi_leader: MlStreams,
}

/// Replay progress.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// Entries applied so far.
    pub replayed: u64,
    /// Last LSN applied.
    pub last_lsn: u64,
    /// Record-file bytes read so far.
    pub bytes_read: u64,
    /// Record-file bytes in the plan.
    pub bytes_total: u64,
}

/// The state a replay produced.
pub struct Restored {
    /// The keyspace.
    pub store: Store,
    /// Last LSN applied.
    pub last_lsn: u64,
    /// Its commit time.
    pub last_commit_ms: u64,
    /// Highest epoch seen.
    pub epoch: u64,
    /// What happened.
    pub report: RestoreReport,
    /// The restored log of each multi-leader keyspace.
    pub multi_leader: Vec<MlRestoredKeyspace>,
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    /// The target, as text.
    pub target: String,
    /// Base used.
    pub base_id: String,
    /// Snapshot bytes loaded.
    pub snapshot_bytes: u64,
    /// Keys loaded from the snapshot.
    pub snapshot_keys: u64,
    /// Entries replayed after it.
    pub replayed: u64,
    /// Record-file bytes read.
    pub log_bytes: u64,
    /// Last LSN of the result.
    pub last_lsn: u64,
    /// Commit time of that LSN (unix ms).
    pub last_commit_ms: u64,
    /// Keys in the result.
    pub keys: u64,
    /// Milliseconds spent loading the snapshot.
    pub load_ms: u64,
    /// Milliseconds spent replaying records.
    pub replay_ms: u64,
    /// Files replayed, in order.
    pub files: Vec<String>,
    /// Multi-leader keyspaces restored (records with HLC physical ms at or
    /// before the target time; for `--to-lsn`, that LSN's commit time).
    pub multi_leader: Vec<MlRestoredKeyspace>,
}

/// Chooses the base and the record files for `target`.
pub fn plan(repo: &Repository, target: Target) -> Result<Plan, BackupError> {
    let bases = list_bases(repo)?;
    let Some(oldest) = bases.first() else {
        return Err(BackupError::Invalid(format!(
            "no base backup in {}: take one with `tandem backup base --repo {} --from <admin addr>`",
            repo.root().display(),
            repo.root().display()
        )));
    };
    let base = match target {
        Target::Latest => bases.last(),
        Target::Lsn(n) => bases.iter().rev().find(|b| b.manifest.end_lsn <= n),
        Target::Time(t) => bases.iter().rev().find(|b| b.manifest.end_commit_ms <= t),
    };
    let Some(base) = base.cloned() else {
        return Err(BackupError::Invalid(match target {
            Target::Time(t) => format!(
                "--to-time {} is before the oldest base backup: the earliest restorable time is {} (base {}, lsn {})",
                format_rfc3339(t),
                format_rfc3339(oldest.manifest.end_commit_ms),
                oldest.manifest.id,
                oldest.manifest.end_lsn
            ),
            _ => format!(
                "--to-lsn is before the oldest base backup: the earliest restorable lsn is {} (base {})",
                oldest.manifest.end_lsn, oldest.manifest.id
            ),
        }));
    };
    let candidates = candidates(repo, &base)?;
    let sources = chain(&base, &candidates, target)?;
    let multi_leader = list_ml_streams(repo)?;
    Ok(Plan { base, sources, target, multi_leader })
}

/// The base's own log file and every archive file of every stream.
pub(crate) fn candidates(repo: &Repository, base: &Base) -> Result<Vec<Source>, BackupError> {
    let mut out = vec![Source {
        path: base.log_path(),
        first_lsn: base.manifest.start_lsn + 1,
        last_lsn: base.manifest.end_lsn,
        first_commit_ms: None,
        last_commit_ms: Some(base.manifest.end_commit_ms),
        bytes: base.manifest.log.bytes,
        crc32c: base.manifest.log.crc32c,
    }];
    for (_, files) in list_streams(repo)? {
        out.extend(files.into_iter().filter(|f| f.meta.last_lsn >= f.meta.first_lsn).map(|f| Source {
            first_lsn: f.meta.first_lsn,
            last_lsn: f.meta.last_lsn,
            first_commit_ms: Some(f.meta.first_commit_ms),
            last_commit_ms: Some(f.meta.last_commit_ms),
            bytes: f.meta.bytes,
            crc32c: f.meta.crc32c,
            path: f.path,
        }));
    }
    Ok(out)
}

/// Greedy cover from `start_lsn + 1`: at each LSN take the file that reaches
/// furthest. Stops at the target or at the end of the archive; a hole with
/// data after it is a [`BackupError::Gap`].
pub(crate) fn chain(base: &Base, candidates: &[Source], target: Target) -> Result<Vec<Source>, BackupError> {
    let limit = match target {
        Target::Lsn(n) => n,
        _ => u64::MAX,
    };
    let mut next = base.manifest.start_lsn + 1;
    let mut out: Vec<Source> = Vec::new();
    while next <= limit {
        let best = candidates.iter().filter(|s| s.first_lsn <= next && s.last_lsn >= next).max_by_key(|s| s.last_lsn);
        if let Some(s) = best {
            let past_target = matches!(target, Target::Time(t) if next > base.manifest.end_lsn
                && s.first_lsn == next && s.first_commit_ms.is_some_and(|c| c > t));
            if past_target {
                break;
            }
            out.push(s.clone());
            next = s.last_lsn + 1;
            continue;
        }
        let later = candidates.iter().filter(|s| s.first_lsn > next).min_by_key(|s| s.first_lsn);
        let relevant = match (target, later) {
            (Target::Lsn(n), _) => Some(n),
            (Target::Time(t), Some(s)) if s.first_commit_ms.is_some_and(|c| c <= t) => Some(s.first_lsn - 1),
            (Target::Latest, Some(s)) => Some(s.first_lsn - 1),
            _ => None,
        };
        if let Some(to_lsn) = relevant {
            let to_lsn = later.map_or(to_lsn, |s| to_lsn.min(s.first_lsn - 1));
            return Err(BackupError::Gap {
                from_lsn: next,
                to_lsn,
                reason: format!(
                    "restoring {target} from base {}; the newest state reachable without the gap is lsn {} (--to-lsn {})",
                    base.manifest.id,
                    next - 1,
                    next - 1
                ),
            });
        }
        break;
    }
    Ok(out)
}

/// Loads the plan's snapshot and replays its chain; checks every file.
pub fn replay(plan: &Plan, progress: &mut dyn FnMut(&Progress)) -> Result<Restored, BackupError> {
    let base = &plan.base;
    let load_started = Instant::now();
    let snapshot_path = base.snapshot_path();
    let (len, crc) = file_checksum(&snapshot_path).map_err(|e| match e {
        BackupError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            BackupError::Missing { path: snapshot_path.clone(), reason: format!("listed by base {}", base.manifest.id) }
        }
        e => e,
    })?;
    let want = &base.manifest.snapshot;
    if len != want.bytes || crc != want.crc32c {
        return Err(corrupt(
            &snapshot_path,
            0,
            format!(
                "{len} bytes with crc32c 0x{crc:08x}, but the manifest says {} bytes with crc32c 0x{:08x}",
                want.bytes, want.crc32c
            ),
        ));
    }
    let mut store = Store::new(RESTORE_HASH_SEED);
    let entries: u64 = plan.sources.iter().map(|s| s.last_lsn + 1 - s.first_lsn).sum();
    store.reserve(base.manifest.keys.saturating_add(entries).min(RESERVE_KEYS_MAX) as usize);
    let mut decode_error = None;
    SnapshotReader::open(&snapshot_path)?.for_each_chunk(|chunk| {
        store.load_chunk(chunk).map(|_| ()).map_err(|e| {
            decode_error = Some(e.to_string());
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
        })
    })?;
    if let Some(e) = decode_error {
        return Err(corrupt(&snapshot_path, 0, e));
    }
    let snapshot_keys = store.len() as u64;
    let load_ms = load_started.elapsed().as_millis() as u64;

    let replay_started = Instant::now();
    let mut p = Progress {
        last_lsn: base.manifest.start_lsn,
        bytes_total: plan.sources.iter().map(|s| s.bytes).sum(),
        ..Progress::default()
    };
    let mut next = base.manifest.start_lsn + 1;
    let mut last_commit_ms = base.manifest.end_commit_ms;
    let mut epoch = base.manifest.epoch;
    let mut files = Vec::new();
    let mut effects = Vec::new();
    'files: for source in &plan.sources {
        // One buffer per file; every key and value replayed is a slice of it.
        let bytes = bytes::Bytes::from(read_checked(&source.path, source.bytes, source.crc32c)?);
        files.push(source.path.display().to_string());
        p.bytes_read += source.bytes;
        for rec in Records::of_file(&source.path, &bytes)? {
            let rec = rec?;
            if rec.lsn < next {
                continue;
            }
            if rec.lsn != next {
                return Err(corrupt(&source.path, rec.offset, format!("expected lsn {next}, found {}", rec.lsn)));
            }
            let commit_ms = commit_ms_of(rec.payload).unwrap_or(0);
            let done = match plan.target {
                Target::Lsn(n) => rec.lsn > n,
                Target::Time(t) => rec.lsn > base.manifest.end_lsn && commit_ms > t,
                Target::Latest => false,
            };
            if done {
                break 'files;
            }
            let payload = bytes.slice_ref(rec.payload);
            LogEntry::decode_effects_shared(&payload, &mut effects)
                .map_err(|e| corrupt(&source.path, rec.offset, format!("lsn {}: {e}", rec.lsn)))?;
            for effect in &effects {
                store.apply(effect);
            }
            last_commit_ms = commit_ms;
            epoch = epoch.max(rec.epoch);
            next += 1;
            p.replayed += 1;
            p.last_lsn = rec.lsn;
            if p.replayed.is_multiple_of(PROGRESS_EVERY_RECORDS) {
                progress(&p);
            }
        }
        if next <= source.last_lsn {
            return Err(corrupt(
                &source.path,
                source.bytes,
                format!("its manifest says it ends at lsn {} but its records end at lsn {}", source.last_lsn, next - 1),
            ));
        }
    }
    if next <= base.manifest.end_lsn {
        return Err(BackupError::Gap {
            from_lsn: next,
            to_lsn: base.manifest.end_lsn,
            reason: format!("base {} is consistent only at lsn {}", base.manifest.id, base.manifest.end_lsn),
        });
    }
    if let Target::Lsn(n) = plan.target {
        if next <= n {
            return Err(BackupError::Gap {
                from_lsn: next,
                to_lsn: n,
                reason: format!("--to-lsn {n} is past the end of the archived log"),
            });
        }
    }
    progress(&p);
    let ml_cutoff = match plan.target {
        Target::Latest => None,
        Target::Time(t) => Some(t),
        Target::Lsn(_) => Some(last_commit_ms),
    };
    let multi_leader = restore_ml(&plan.multi_leader, ml_cutoff)?;
    let report = RestoreReport {
        target: plan.target.to_string(),
        base_id: base.manifest.id.clone(),
        snapshot_bytes: base.manifest.snapshot.bytes,
        snapshot_keys,
        replayed: p.replayed,
        log_bytes: p.bytes_read,
        last_lsn: next - 1,
        last_commit_ms,
        keys: store.len() as u64,
        load_ms,
        replay_ms: replay_started.elapsed().as_millis() as u64,
        files,
        multi_leader: multi_leader.iter().map(|k| MlRestoredKeyspace { log: Vec::new(), ..k.clone() }).collect(),
    };
    Ok(Restored { store, last_lsn: next - 1, last_commit_ms, epoch, report, multi_leader })
}

/// Name of the file that marks a data directory (and its staging twin) as
/// written by a restore that has not finished. `tandem server` refuses to
/// start from a directory holding it ([`refuse_half_restored`]).
pub const RESTORE_MARKER_FILE: &str = "RESTORE-IN-PROGRESS";
/// Suffix of the staging directory a restore builds next to its target
/// (`<parent>/.<name>.restoring`).
pub const RESTORE_STAGING_SUFFIX: &str = ".restoring";

/// A clear error if `data_dir` holds [`RESTORE_MARKER_FILE`]: a restore into
/// it was interrupted (kill -9, power loss, disk full) and the directory is
/// not a node's data. Called by `tandem server` before it opens anything.
pub fn refuse_half_restored(data_dir: &Path) -> Result<(), BackupError> {
    let marker = data_dir.join(RESTORE_MARKER_FILE);
    match fs::symlink_metadata(&marker) {
        Ok(_) => Err(BackupError::Invalid(format!(
            "{} is a half-restored data directory: a `tandem restore` into it did not finish ({} exists). \
             Rerun the restore with the same --data-dir (it starts over), or delete the directory; \
             it is not started as a node because it would come up empty",
            data_dir.display(),
            marker.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("check for a restore marker in", &marker)(e)),
    }
}

/// A restore in progress into `target`: the target exists from the start and
/// holds [`RESTORE_MARKER_FILE`] (locked while this value lives, so a second
/// restore into it is refused); the data is built in a staging directory
/// next to it and swapped into place only when complete
/// ([`RestoreDir::publish`]). Killed at any point, the target either holds
/// the marker (the server refuses it) or the complete restored data.
pub struct RestoreDir {
    target: PathBuf,
    staging: PathBuf,
    /// The open, locked marker file in `target`.
    _lock: fs::File,
}

/// Writes the marker file in `dir` and returns it open and locked.
fn write_marker(dir: &Path, text: &str) -> Result<fs::File, BackupError> {
    let path = dir.join(RESTORE_MARKER_FILE);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(BackupError::Invalid(format!(
                "another `tandem restore` is writing into {} right now (it holds {})",
                dir.display(),
                path.display()
            )))
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    use std::io::Write;
    file.set_len(0).map_err(io_err("truncate", &path))?;
    file.write_all(text.as_bytes()).map_err(io_err("write", &path))?;
    file.sync_all().map_err(io_err("fsync", &path))?;
    Ok(file)
}

impl RestoreDir {
    /// Claims `target` for a restore: it must be missing, empty, or left by
    /// an interrupted restore (only the marker in it). Creates it with the
    /// marker (durably) before anything else, and a fresh staging directory.
    pub fn begin(target: &Path) -> Result<RestoreDir, BackupError> {
        let Some(name) = target.file_name() else {
            return Err(BackupError::Invalid(format!("{} is not a directory name to restore into", target.display())));
        };
        if let Ok(entries) = fs::read_dir(target) {
            let others: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != RESTORE_MARKER_FILE)
                .collect();
            if !others.is_empty() {
                return Err(BackupError::Invalid(format!(
                    "{} is not empty (it holds {}): restore writes only into a new or empty directory",
                    target.display(),
                    others.join(", ")
                )));
            }
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let staging = parent.join(format!(".{}{RESTORE_STAGING_SUFFIX}", name.to_string_lossy()));
        fs::create_dir_all(target).map_err(io_err("create", target))?;
        let started = format!(
            "tandem restore (pid {}) is writing this directory; its data is built in {}\n",
            std::process::id(),
            staging.display()
        );
        let lock = write_marker(target, &started)?;
        sync_dir(target)?;
        sync_dir(&parent)?;
        if staging.exists() {
            // Left by an earlier restore into the same target that was
            // killed; the lock above says no restore is using it now.
            fs::remove_dir_all(&staging).map_err(io_err("remove the stale restore staging directory", &staging))?;
        }
        fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
        drop(write_marker(&staging, &started)?);
        Ok(RestoreDir { target: target.to_path_buf(), staging, _lock: lock })
    }

    /// The directory the data is built in.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// Writes `restored` into the staging directory, then puts it in place
    /// of the target (atomically where the filesystem can exchange two
    /// directories) and removes the marker.
    pub fn publish(self, restored: &Restored) -> Result<(), BackupError> {
        write_contents(restored, &self.staging)?;
        let staged_marker = self.staging.join(RESTORE_MARKER_FILE);
        fs::remove_file(&staged_marker).map_err(io_err("remove", &staged_marker))?;
        sync_dir(&self.staging)?;
        let parent = self.staging.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        if exchange(&self.staging, &self.target).is_ok() {
            // The target is complete; the staging path now holds the old
            // target (the marker alone).
            sync_dir(&parent)?;
            fs::remove_dir_all(&self.staging).map_err(io_err("remove", &self.staging))?;
        } else {
            // No atomic exchange on this filesystem: the target is missing
            // for the moment between these two steps (a crash there leaves
            // no target and the complete staging directory).
            let marker = self.target.join(RESTORE_MARKER_FILE);
            fs::remove_file(&marker).map_err(io_err("remove", &marker))?;
            fs::remove_dir(&self.target).map_err(io_err("remove", &self.target))?;
            fs::rename(&self.staging, &self.target).map_err(io_err("rename into place", &self.target))?;
        }
        sync_dir(&parent)
    }
}

/// Swaps two directories atomically (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call; no memory is shared.
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// No atomic exchange outside Linux: the caller falls back to remove + rename.
#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "no atomic directory exchange"))
}

/// Writes the files of a restored data directory into `dir` (which exists).
fn write_contents(restored: &Restored, dir: &Path) -> Result<(), BackupError> {
    let snapshots = dir.join("snapshots");
    let log = dir.join("log");
    for d in [&snapshots, &log] {
        fs::create_dir_all(d).map_err(io_err("create", d))?;
    }
    let mut writer = SnapshotWriter::create(&snapshots, restored.last_lsn)?;
    for bucket in 0..BUCKETS {
        for chunk in restored.store.encode_bucket_chunks(bucket, tandem_core::store::CHUNK_BYTES_MAX) {
            writer.write_chunk(&chunk)?;
        }
    }
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    writer.finish(restored.last_lsn, now_ms)?;
    write_ml(&restored.multi_leader, dir)?;
    write_atomic(&dir.join("epoch"), format!("{}\n", restored.epoch.max(1)).as_bytes())?;
    let info = serde_json::to_string_pretty(&restored.report).expect("report serializes");
    write_atomic(&dir.join("restored-from-backup.json"), info.as_bytes())?;
    for d in [&snapshots, &log, &dir.to_path_buf()] {
        sync_dir(d)?;
    }
    Ok(())
}

/// Writes `restored` as a fresh data directory at `data_dir`, which must be
/// missing or empty (or left by an interrupted restore), through a
/// [`RestoreDir`].
pub fn write_data_dir(restored: &Restored, data_dir: &Path) -> Result<(), BackupError> {
    RestoreDir::begin(data_dir)?.publish(restored)
}

/// Plan, replay and write: the whole `tandem restore`.
pub fn restore(
    repo: &Repository,
    data_dir: &Path,
    target: Target,
    progress: &mut dyn FnMut(&Progress),
) -> Result<RestoreReport, BackupError> {
    let dir = RestoreDir::begin(data_dir)?;
    let plan = plan(repo, target)?;
    let restored = replay(&plan, progress)?;
    dir.publish(&restored)?;
    Ok(restored.report)
}
