//! Segment files: naming, listing, creation, and the sparse offset index
//! that lets a reader seek near an LSN instead of scanning a whole segment.
//!
//! Never reads or validates records (that is [`super::format`] and
//! [`super::recovery`]); never deletes anything on its own.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::format::{segment_header, SEGMENT_HEADER_BYTES};
use crate::fsutil::{io_err, sync_dir};
use crate::StorageError;

/// One sparse-index entry per this many segment bytes.
pub(crate) const INDEX_STRIDE_BYTES: u64 = 64 << 10;
const SEGMENT_SUFFIX: &str = ".seg";
const SEGMENT_NAME_DIGITS: usize = 20;

/// `<dir>/<first_lsn as 20 digits>.seg`.
pub(crate) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SEGMENT_SUFFIX}"))
}

/// The first LSN a segment file name encodes, if it is a segment name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Segment files in `dir`, sorted by first LSN. A missing directory is an
/// empty log.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_segment_name(name) {
            Some(lsn) => out.push((lsn, entry.path())),
            None if name.ends_with(SEGMENT_SUFFIX) => tracing::warn!(
                file = %entry.path().display(),
                "ignoring a file that ends in .seg but is not named like a log segment"
            ),
            None => {}
        }
    }
    out.sort_unstable_by_key(|(lsn, _)| *lsn);
    Ok(out)
}

/// Creates a new segment holding only its header, opened for appending, and
/// fsyncs the directory so the new name survives a power loss. With
/// `sync_file` the header is fdatasynced too (for segments that may stay
/// empty; otherwise the first data fsync covers it).
pub(crate) fn create_segment(dir: &Path, first_lsn: u64, sync_file: bool) -> Result<(File, PathBuf), StorageError> {
    let path = segment_path(dir, first_lsn);
    let mut file =
        OpenOptions::new().append(true).create_new(true).open(&path).map_err(io_err("create segment", &path))?;
    file.write_all(&segment_header()).map_err(io_err("write segment header to", &path))?;
    if sync_file {
        file.sync_data().map_err(io_err("fdatasync", &path))?;
    }
    sync_dir(dir)?;
    Ok((file, path))
}

/// Opens an existing segment for appending.
pub(crate) fn open_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new().append(true).open(path).map_err(io_err("open segment for append", path))
}

/// A sparse-index entry: the record with `lsn` starts at byte `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub lsn: u64,
    pub offset: u64,
}

/// What the log knows about one segment file.
#[derive(Clone, Debug)]
pub(crate) struct SegmentEntry {
    /// LSN of its first record (also its file name), even while empty.
    pub first_lsn: u64,
    pub path: PathBuf,
    /// Bytes of valid data (header + whole records).
    pub len: u64,
    /// Sparse index: the first record, then one entry per stride.
    pub index: Vec<IndexEntry>,
}

impl SegmentEntry {
    /// A segment holding only its header.
    pub fn new(first_lsn: u64, path: PathBuf) -> SegmentEntry {
        SegmentEntry { first_lsn, path, len: SEGMENT_HEADER_BYTES, index: Vec::new() }
    }

    /// Notes that the record `lsn` starts at `offset`.
    pub fn observe(&mut self, lsn: u64, offset: u64) {
        if index_due(self.index.last().map(|e| e.offset), offset) {
            self.index.push(IndexEntry { lsn, offset });
        }
    }

    /// Offset of a record boundary at or before the record `lsn`.
    pub fn seek_hint(&self, lsn: u64) -> u64 {
        match self.index.partition_point(|e| e.lsn <= lsn) {
            0 => SEGMENT_HEADER_BYTES,
            i => self.index[i - 1].offset,
        }
    }
}

/// Whether a record starting at `offset` gets an index entry, given the
/// offset of the segment's last entry.
pub(crate) fn index_due(last_indexed: Option<u64>, offset: u64) -> bool {
    match last_indexed {
        None => true,
        Some(last) => offset >= last + INDEX_STRIDE_BYTES,
    }
}

/// Index of the segment that would hold `lsn`: the last one starting at or
/// before it.
pub(crate) fn find_segment(segments: &[SegmentEntry], lsn: u64) -> Option<usize> {
    segments.partition_point(|s| s.first_lsn <= lsn).checked_sub(1)
}
