//! The continuous log archive: one stream per node,
//! `R/archive/node-<id>/<first lsn:020>.seg` files in segment format, each
//! with a `<first lsn:020>.json` manifest.
//!
//! [`ArchiveWriter`] appends durable log records to the open archive file,
//! fsyncs it, then atomically rewrites its manifest (bytes, crc32c, LSN and
//! commit-time range). Readers trust only the first `bytes` bytes a manifest
//! names, so a crash between the two writes is harmless; the writer cuts
//! such a tail when it resumes. A file is sealed at
//! [`ARCHIVE_FILE_BYTES_MAX`] and a new one starts.
//!
//! Never writes an LSN twice in a stream, never reorders, and never hides a
//! gap: a record that does not follow the archive starts a new file, and
//! `verify` reports the missing range.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{dir_entries, io_err};
use crate::records::{commit_ms_of, encode_record, file_header, FILE_HEADER_BYTES};
use crate::repo::{read_manifest, sync_dir, write_manifest, Repository};
use crate::BackupError;

/// An archive file is sealed (and the next one starts) once it holds this
/// many bytes.
pub const ARCHIVE_FILE_BYTES_MAX: u64 = 64 << 20;
const SEG_SUFFIX: &str = ".seg";
const META_SUFFIX: &str = ".json";

/// The manifest of one archive file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFileMeta {
    /// The node whose log this is.
    pub node_id: u64,
    /// LSN of the first record.
    pub first_lsn: u64,
    /// LSN of the last record.
    pub last_lsn: u64,
    /// Leader commit time (unix ms) of the first record.
    pub first_commit_ms: u64,
    /// Leader commit time (unix ms) of the last record.
    pub last_commit_ms: u64,
    /// Valid bytes (header + whole records); later bytes are ignored.
    pub bytes: u64,
    /// crc32c of those bytes.
    pub crc32c: u32,
    /// True once no more records will be appended.
    pub sealed: bool,
}

/// An archive file found in a stream directory.
#[derive(Clone, Debug)]
pub struct ArchiveFile {
    /// The `.seg` file.
    pub path: PathBuf,
    /// Its manifest.
    pub meta: ArchiveFileMeta,
}

/// `<dir>/<first_lsn:020>.seg`.
pub fn archive_seg_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SEG_SUFFIX}"))
}

fn meta_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{META_SUFFIX}"))
}

/// The manifest path of an archive `.seg` file.
pub fn meta_path_of(seg: &Path) -> PathBuf {
    seg.with_extension("json")
}

/// Every archive file of one stream directory, sorted by first LSN. A
/// manifest that does not verify is an error naming it; a `.seg` without a
/// manifest (a crash before its first manifest) is not listed.
pub fn list_stream(dir: &Path) -> Result<Vec<ArchiveFile>, BackupError> {
    let (files, mut bad) = list_stream_lenient(dir)?;
    match bad.is_empty() {
        true => Ok(files),
        false => Err(bad.swap_remove(0)),
    }
}

/// Like [`list_stream`], but a manifest that does not verify is returned
/// beside the good files instead of stopping the listing (for `verify`).
pub fn list_stream_lenient(dir: &Path) -> Result<(Vec<ArchiveFile>, Vec<BackupError>), BackupError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let (mut out, mut bad) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(digits) = name.strip_suffix(META_SUFFIX) else { continue };
        let Ok(first_lsn) = digits.parse::<u64>() else { continue };
        match read_manifest::<ArchiveFileMeta>(&entry.path()) {
            Ok(meta) => out.push(ArchiveFile { path: archive_seg_path(dir, first_lsn), meta }),
            Err(e) => bad.push(e),
        }
    }
    out.sort_by_key(|f| f.meta.first_lsn);
    Ok((out, bad))
}

/// Every archive stream of the repository: `(node id, files)`.
pub fn list_streams(repo: &Repository) -> Result<Vec<(u64, Vec<ArchiveFile>)>, BackupError> {
    let root = repo.archive_root();
    let mut out = Vec::new();
    for entry in dir_entries(&root)? {
        let name = entry.file_name();
        let Some(id) = name.to_str().and_then(|n| n.strip_prefix("node-")).and_then(|n| n.parse().ok()) else {
            continue;
        };
        out.push((id, list_stream(&entry.path())?));
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// Appends a node's durable log records to its archive stream.
pub struct ArchiveWriter {
    dir: PathBuf,
    node_id: u64,
    /// The unsealed file being appended to.
    open: Option<ArchiveFileMeta>,
    /// Last LSN archived in this stream (0: none).
    archived_lsn: u64,
    /// Commit time of that LSN.
    archived_commit_ms: u64,
    file_bytes_max: u64,
    buf: Vec<u8>,
}

impl ArchiveWriter {
    /// Opens (creating) the stream of `node_id` in `repo` and resumes after
    /// its last archived record: an unsealed file is cut back to the bytes its
    /// manifest covers and appended to.
    pub fn open(repo: &Repository, node_id: u64) -> Result<ArchiveWriter, BackupError> {
        Self::open_with_limit(repo, node_id, ARCHIVE_FILE_BYTES_MAX)
    }

    /// [`Self::open`] with another seal size (`archive_file_bytes_max`).
    pub fn open_with_limit(repo: &Repository, node_id: u64, file_bytes_max: u64) -> Result<ArchiveWriter, BackupError> {
        let dir = repo.stream_dir(node_id);
        fs::create_dir_all(&dir).map_err(io_err("create archive directory", &dir))?;
        let files = list_stream(&dir)?;
        let mut w = ArchiveWriter {
            dir: dir.clone(),
            node_id,
            open: None,
            archived_lsn: 0,
            archived_commit_ms: 0,
            file_bytes_max,
            buf: Vec::new(),
        };
        if let Some(last) = files.last() {
            w.archived_lsn = last.meta.last_lsn;
            w.archived_commit_ms = last.meta.last_commit_ms;
            if !last.meta.sealed {
                let f = OpenOptions::new().write(true).open(&last.path).map_err(io_err("open", &last.path))?;
                f.set_len(last.meta.bytes).map_err(io_err("truncate", &last.path))?;
                f.sync_all().map_err(io_err("fsync", &last.path))?;
                w.open = Some(last.meta.clone());
            }
        }
        // Remove `.seg` files with no manifest (a crash before the first one).
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "seg") && !meta_path_of(&path).exists() {
                tracing::warn!(file = %path.display(), "removing an archive file that never got a manifest");
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(w)
    }

    /// Last LSN in this stream (0 if it is empty).
    pub fn archived_lsn(&self) -> u64 {
        self.archived_lsn
    }

    /// Commit time of [`Self::archived_lsn`] (0 if empty).
    pub fn archived_commit_ms(&self) -> u64 {
        self.archived_commit_ms
    }

    /// Appends `records` (`(lsn, epoch, payload)`, consecutive LSNs), durably:
    /// data fsynced, then the manifest published. A first LSN that does not
    /// follow the stream starts a new file (the gap stays visible).
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = (u64, u64, &'a [u8])>) -> Result<(), BackupError> {
        let mut batch_first: Option<(u64, u64)> = None;
        let mut last = None;
        self.buf.clear();
        for (lsn, epoch, payload) in records {
            if lsn <= self.archived_lsn {
                continue;
            }
            let expected = last.map_or(self.archived_lsn + 1, |(l, _)| l + 1);
            if lsn != expected {
                if let Some(last) = last {
                    self.flush_batch(batch_first.expect("set with last"), last)?;
                    batch_first = None;
                }
                if self.archived_lsn > 0 {
                    tracing::warn!(
                        stream = %self.dir.display(), expected, got = lsn,
                        "the log no longer holds the next lsn to archive: the archive has a gap"
                    );
                }
                self.seal()?;
            }
            let commit_ms = commit_ms_of(payload).unwrap_or(0);
            batch_first.get_or_insert((lsn, commit_ms));
            encode_record(&mut self.buf, lsn, epoch, payload);
            last = Some((lsn, commit_ms));
        }
        if let (Some(first), Some(last)) = (batch_first, last) {
            self.flush_batch(first, last)?;
        }
        Ok(())
    }

    /// Writes `self.buf` (records `first..=last`) to the open file.
    fn flush_batch(&mut self, first: (u64, u64), last: (u64, u64)) -> Result<(), BackupError> {
        let mut meta = match self.open.take() {
            Some(m) => m,
            None => self.start_file(first)?,
        };
        let path = archive_seg_path(&self.dir, meta.first_lsn);
        let mut f = OpenOptions::new().append(true).open(&path).map_err(io_err("open for append", &path))?;
        f.write_all(&self.buf).map_err(io_err("append to", &path))?;
        f.sync_data().map_err(io_err("fdatasync", &path))?;
        meta.bytes += self.buf.len() as u64;
        meta.crc32c = crc32c::crc32c_append(meta.crc32c, &self.buf);
        meta.last_lsn = last.0;
        meta.last_commit_ms = last.1;
        meta.sealed = meta.bytes >= self.file_bytes_max;
        write_manifest(&meta_path(&self.dir, meta.first_lsn), &meta)?;
        self.archived_lsn = last.0;
        self.archived_commit_ms = last.1;
        self.buf.clear();
        if !meta.sealed {
            self.open = Some(meta);
        }
        Ok(())
    }

    fn start_file(&mut self, first: (u64, u64)) -> Result<ArchiveFileMeta, BackupError> {
        let path = archive_seg_path(&self.dir, first.0);
        let header = file_header();
        let mut f = fs::File::create(&path).map_err(io_err("create archive file", &path))?;
        f.write_all(&header).map_err(io_err("write", &path))?;
        f.sync_data().map_err(io_err("fdatasync", &path))?;
        sync_dir(&self.dir)?;
        Ok(ArchiveFileMeta {
            node_id: self.node_id,
            first_lsn: first.0,
            last_lsn: first.0 - 1,
            first_commit_ms: first.1,
            last_commit_ms: first.1,
            bytes: FILE_HEADER_BYTES as u64,
            crc32c: crc32c::crc32c(&header),
            sealed: false,
        })
    }

    /// Seals the open file, if any.
    pub fn seal(&mut self) -> Result<(), BackupError> {
        if let Some(mut meta) = self.open.take() {
            meta.sealed = true;
            write_manifest(&meta_path(&self.dir, meta.first_lsn), &meta)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(commit_ms: u64) -> Vec<u8> {
        let mut p = Vec::new();
        tandem_core::effect::LogEntry { lsn: 0, epoch: 1, commit_ms, effects: vec![] }.encode_payload(&mut p);
        p
    }

    #[test]
    fn appends_resume_seal_and_a_gap_starts_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::create_or_open(dir.path()).unwrap();
        let p = payload(1000);
        let mut w = ArchiveWriter::open_with_limit(&repo, 7, 200).unwrap();
        w.append((1..=3).map(|l| (l, 1, p.as_slice()))).unwrap();
        drop(w);
        let mut w = ArchiveWriter::open_with_limit(&repo, 7, 200).unwrap();
        assert_eq!(w.archived_lsn(), 3);
        w.append((2..=6).map(|l| (l, 1, p.as_slice()))).unwrap();
        w.append((9..=9).map(|l| (l, 1, p.as_slice()))).unwrap();
        let files = list_stream(&repo.stream_dir(7)).unwrap();
        let ranges: Vec<_> = files.iter().map(|f| (f.meta.first_lsn, f.meta.last_lsn)).collect();
        assert_eq!(ranges, vec![(1, 6), (9, 9)]);
        assert!(files[0].meta.sealed);
        for f in &files {
            crate::records::read_checked(&f.path, f.meta.bytes, f.meta.crc32c).unwrap();
        }
    }
}
