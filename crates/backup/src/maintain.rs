//! `tandem backup list | verify | prune`: what is restorable and to which
//! times, whether every byte still matches its checksum and the log chain
//! has no gap, and retention by count and age.
//!
//! `list` and `verify` only read. `prune` deletes whole base directories and
//! sealed archive files that no kept base can need; it never deletes the
//! newest base or an unsealed (still growing) archive file.

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::archive::{list_stream_lenient, list_streams, meta_path_of, ArchiveFileMeta};
use crate::base::{list_bases, Base, BaseManifest, MANIFEST_FILE, STAGING_LOCK_FILE, STAGING_PREFIX};
use crate::error::io_err;
use crate::records::{file_checksum, read_checked, Records};
use crate::repo::{read_manifest, Repository};
use crate::restore::{candidates, chain, Target};
use crate::BackupError;

/// One base in a listing, with how far it can be rolled forward.
#[derive(Clone, Debug, Serialize)]
pub struct BaseSummary {
    /// Its manifest.
    pub manifest: BaseManifest,
    /// Newest LSN reachable from it without a gap.
    pub restorable_to_lsn: u64,
    /// Commit time of that LSN.
    pub restorable_to_ms: u64,
    /// Why it cannot be rolled forward further, if a gap stops it.
    pub problem: Option<String>,
}

/// One node's archive stream in a listing.
#[derive(Clone, Debug, Serialize)]
pub struct StreamSummary {
    /// The node.
    pub node_id: u64,
    /// Archive files.
    pub files: usize,
    /// Bytes in them.
    pub bytes: u64,
    /// First archived LSN.
    pub first_lsn: u64,
    /// Last archived LSN.
    pub last_lsn: u64,
    /// Commit time of the first.
    pub first_commit_ms: u64,
    /// Commit time of the last.
    pub last_commit_ms: u64,
    /// Missing LSN ranges inside the stream.
    pub gaps: Vec<(u64, u64)>,
}

/// `tandem backup list`.
#[derive(Clone, Debug, Serialize)]
pub struct Listing {
    /// Bases, oldest first.
    pub bases: Vec<BaseSummary>,
    /// Archive streams.
    pub streams: Vec<StreamSummary>,
}

/// What is restorable, and to which LSNs and times.
pub fn list(repo: &Repository) -> Result<Listing, BackupError> {
    let mut bases = Vec::new();
    for base in list_bases(repo)? {
        let cands = candidates(repo, &base)?;
        let (to_lsn, to_ms, problem) = match chain(&base, &cands, Target::Latest) {
            Ok(sources) => match sources.last() {
                Some(s) => (s.last_lsn, s.last_commit_ms.unwrap_or(base.manifest.end_commit_ms), None),
                None => (base.manifest.end_lsn, base.manifest.end_commit_ms, None),
            },
            Err(e) => (base.manifest.end_lsn, base.manifest.end_commit_ms, Some(e.to_string())),
        };
        bases.push(BaseSummary {
            manifest: base.manifest,
            restorable_to_lsn: to_lsn,
            restorable_to_ms: to_ms,
            problem,
        });
    }
    let mut streams = Vec::new();
    for (node_id, files) in list_streams(repo)? {
        let metas: Vec<&ArchiveFileMeta> = files.iter().map(|f| &f.meta).collect();
        let (Some(first), Some(last)) = (metas.first(), metas.last()) else { continue };
        streams.push(StreamSummary {
            node_id,
            files: metas.len(),
            bytes: metas.iter().map(|m| m.bytes).sum(),
            first_lsn: first.first_lsn,
            last_lsn: last.last_lsn,
            first_commit_ms: first.first_commit_ms,
            last_commit_ms: last.last_commit_ms,
            gaps: gaps(&metas),
        });
    }
    Ok(Listing { bases, streams })
}

/// LSN ranges missing between consecutive files of one stream.
fn gaps(metas: &[&ArchiveFileMeta]) -> Vec<(u64, u64)> {
    metas
        .windows(2)
        .filter(|w| w[1].first_lsn > w[0].last_lsn + 1)
        .map(|w| (w[0].last_lsn + 1, w[1].first_lsn - 1))
        .collect()
}

/// `tandem backup verify`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Files whose checksum was computed.
    pub files_checked: u64,
    /// Bytes read.
    pub bytes_checked: u64,
    /// Log records checked.
    pub records_checked: u64,
    /// Every problem found, each naming its file (and offset) or LSN range.
    pub problems: Vec<String>,
}

/// Checks every checksum in the repository (manifests, snapshots, every
/// log record) and that the log chains have no gap. Problems are collected,
/// not fatal, so one run reports all of them.
pub fn verify(repo: &Repository) -> Result<VerifyReport, BackupError> {
    let mut r = VerifyReport::default();
    let base_root = repo.base_root();
    let mut bases = Vec::new();
    for entry in fs::read_dir(&base_root).map_err(io_err("list", &base_root))? {
        let entry = entry.map_err(io_err("list", &base_root))?;
        if !entry.path().is_dir() || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match read_manifest::<BaseManifest>(&entry.path().join(MANIFEST_FILE)) {
            Ok(manifest) => bases.push(Base { dir: entry.path(), manifest }),
            Err(e) => r.problems.push(e.to_string()),
        }
    }
    for base in &bases {
        verify_base(base, &mut r);
    }
    let archive_root = repo.archive_root();
    for entry in fs::read_dir(&archive_root).map_err(io_err("list", &archive_root))? {
        let entry = entry.map_err(io_err("list", &archive_root))?;
        if entry.path().is_dir() {
            verify_stream(&entry.path(), &mut r);
        }
    }
    if r.problems.is_empty() {
        for base in &bases {
            if let Err(e) = candidates(repo, base).and_then(|c| chain(base, &c, Target::Latest)) {
                r.problems.push(e.to_string());
            }
        }
    }
    Ok(r)
}

fn verify_base(base: &Base, r: &mut VerifyReport) {
    let m = &base.manifest;
    let snap = base.snapshot_path();
    match file_checksum(&snap) {
        Ok((len, crc)) if len == m.snapshot.bytes && crc == m.snapshot.crc32c => {
            r.files_checked += 1;
            r.bytes_checked += len;
            let chunks = tandem_storage::SnapshotReader::open(&snap)
                .and_then(|s| s.for_each_chunk(|_| Ok::<(), std::io::Error>(())));
            if let Err(e) = chunks {
                r.problems.push(e.to_string());
            }
        }
        Ok((len, crc)) => r.problems.push(format!(
            "corrupt backup file {}: {len} bytes with crc32c 0x{crc:08x}, manifest says {} bytes with crc32c 0x{:08x}",
            snap.display(),
            m.snapshot.bytes,
            m.snapshot.crc32c
        )),
        Err(e) => r.problems.push(e.to_string()),
    }
    check_records(&base.log_path(), m.log.bytes, m.log.crc32c, m.start_lsn + 1, m.end_lsn, r);
}

fn verify_stream(dir: &Path, r: &mut VerifyReport) {
    let files = match list_stream_lenient(dir) {
        Ok((files, bad)) => {
            r.problems.extend(bad.iter().map(|e| e.to_string()));
            files
        }
        Err(e) => {
            r.problems.push(e.to_string());
            return;
        }
    };
    for f in &files {
        check_records(&f.path, f.meta.bytes, f.meta.crc32c, f.meta.first_lsn, f.meta.last_lsn, r);
    }
    for w in files.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if b.meta.first_lsn > a.meta.last_lsn + 1 {
            r.problems.push(format!(
                "gap in the archived log {}: lsn {}..={} is missing between {} and {}",
                dir.display(),
                a.meta.last_lsn + 1,
                b.meta.first_lsn - 1,
                a.path.display(),
                b.path.display()
            ));
        } else if b.meta.first_lsn <= a.meta.last_lsn {
            r.problems.push(format!(
                "archive files {} and {} overlap (lsn {}..={})",
                a.path.display(),
                b.path.display(),
                b.meta.first_lsn,
                a.meta.last_lsn
            ));
        }
    }
}

/// Checks a record file against its manifest, every record's crc and that
/// it holds exactly `first..=last`.
fn check_records(path: &Path, bytes: u64, crc: u32, first: u64, last: u64, r: &mut VerifyReport) {
    let data = match read_checked(path, bytes, crc) {
        Ok(d) => d,
        Err(e) => {
            r.problems.push(e.to_string());
            return;
        }
    };
    r.files_checked += 1;
    r.bytes_checked += bytes;
    let mut next = first;
    let records = match Records::of_file(path, &data) {
        Ok(recs) => recs,
        Err(e) => {
            r.problems.push(e.to_string());
            return;
        }
    };
    for rec in records {
        match rec {
            Ok(rec) if rec.lsn == next => {
                next += 1;
                r.records_checked += 1;
            }
            Ok(rec) => {
                r.problems.push(format!(
                    "{} at byte offset {}: expected lsn {next}, found lsn {}",
                    path.display(),
                    rec.offset,
                    rec.lsn
                ));
                return;
            }
            Err(e) => {
                r.problems.push(e.to_string());
                return;
            }
        }
    }
    if next != last + 1 {
        r.problems.push(format!("{}: records end at lsn {} but its manifest says {last}", path.display(), next - 1));
    }
}

/// `tandem backup prune`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    /// Bases deleted.
    pub removed_bases: Vec<String>,
    /// Archive files deleted.
    pub removed_archive_files: Vec<String>,
    /// Bases kept.
    pub kept_bases: Vec<String>,
    /// Staging directories of dead `tandem backup base` runs deleted.
    pub removed_staging: Vec<String>,
}

/// A staging directory without a lock file (written by an older version, or
/// caught in the instant before its writer created the lock) is removed only
/// once it has not changed for this long.
pub const STAGING_UNLOCKED_AGE_MS: u64 = 60 * 60 * 1000;

/// Deletes `R/base/.staging-*` directories no live `tandem backup base`
/// owns: their [`STAGING_LOCK_FILE`] is not locked (the writer died, e.g.
/// by kill -9), or they have no lock file and are older than
/// [`STAGING_UNLOCKED_AGE_MS`]. A staging directory whose writer still runs
/// is never touched. Returns the removed paths.
pub fn prune_staging(repo: &Repository, now_ms: u64) -> Result<Vec<String>, BackupError> {
    let root = repo.base_root();
    let mut removed = Vec::new();
    for entry in crate::error::dir_entries(&root)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = entry.path();
        if !name.starts_with(STAGING_PREFIX) || !dir.is_dir() {
            continue;
        }
        let lock_path = dir.join(STAGING_LOCK_FILE);
        let stale = match fs::File::open(&lock_path) {
            // try_lock succeeds only when no process holds the lock.
            Ok(lock) => lock.try_lock().is_ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let modified_ms = fs::metadata(&dir)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(now_ms, |d| d.as_millis() as u64);
                now_ms.saturating_sub(modified_ms) > STAGING_UNLOCKED_AGE_MS
            }
            Err(e) => return Err(io_err("open", &lock_path)(e)),
        };
        if stale {
            fs::remove_dir_all(&dir).map_err(io_err("remove stale staging directory", &dir))?;
            removed.push(dir.display().to_string());
        }
    }
    Ok(removed)
}

/// Removes dead staging directories ([`prune_staging`]); without `keep` and
/// `keep_within_ms` that is all it does. Keeps a base if it
/// is among the newest `keep` or younger than `keep_within_ms` (at
/// `now_ms`); the newest base is always kept. Deletes the other bases, then sealed archive files that end at or before the
/// oldest kept base's `end_lsn` (no kept base can need them).
pub fn prune(
    repo: &Repository,
    keep: Option<usize>,
    keep_within_ms: Option<u64>,
    now_ms: u64,
) -> Result<PruneReport, BackupError> {
    let mut report = PruneReport { removed_staging: prune_staging(repo, now_ms)?, ..PruneReport::default() };
    let bases = list_bases(repo)?;
    if keep.is_none() && keep_within_ms.is_none() {
        // No retention asked for: only the dead staging directories go.
        report.kept_bases = bases.iter().map(|b| b.manifest.id.clone()).collect();
        return Ok(report);
    }
    let n = bases.len();
    let mut oldest_kept_end = None;
    for (i, base) in bases.iter().enumerate() {
        let by_count = keep.is_some_and(|k| i + k >= n);
        let by_age = keep_within_ms.is_some_and(|w| base.manifest.created_unix_ms + w >= now_ms);
        if by_count || by_age || i + 1 == n {
            oldest_kept_end.get_or_insert(base.manifest.end_lsn);
            report.kept_bases.push(base.manifest.id.clone());
        } else {
            fs::remove_dir_all(&base.dir).map_err(io_err("remove base backup", &base.dir))?;
            report.removed_bases.push(base.manifest.id.clone());
        }
    }
    let Some(floor) = oldest_kept_end else { return Ok(report) };
    for (_, files) in list_streams(repo)? {
        for f in files.into_iter().filter(|f| f.meta.sealed && f.meta.last_lsn <= floor) {
            let meta = meta_path_of(&f.path);
            fs::remove_file(&meta).map_err(io_err("remove", &meta))?;
            fs::remove_file(&f.path).map_err(io_err("remove", &f.path))?;
            report.removed_archive_files.push(f.path.display().to_string());
        }
    }
    Ok(report)
}
