//! Crash recovery and deliberate repair of the replication log.
//!
//! Owns the decision between a torn tail and corruption:
//! - A bad or incomplete record in the **last** segment with no valid record
//!   anywhere after it is a torn tail (a write the crash interrupted): the
//!   file is cut there, fsynced, a warning names file, offset and bytes
//!   dropped, and [`Recovery::torn_tail`] reports it.
//! - Anything else (a bad record followed by valid data, a bad record in an
//!   earlier segment, an LSN gap, a missing segment) is corruption:
//!   [`StorageError::Corrupt`] names the file and offset, and nothing is
//!   changed on disk. Only [`repair_truncate`], run deliberately by an
//!   operator, cuts the log at such a point.
//!
//! It never skips a bad record and never interprets a payload.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::format::{
    check_segment_header, count_valid_records, find_valid_record, segment_header, Scanner, Step,
    SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES,
};
use super::segment::{find_segment, list_segments, SegmentEntry};
use crate::error::corrupt;
use crate::fsutil::{io_err, sync_dir};
use crate::StorageError;

/// Read buffer for recovery scans and replay: big reads, few syscalls.
pub(crate) const RECOVERY_READ_BUFFER_BYTES: usize = 1 << 20;

/// A torn tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Where it was cut (its new length).
    pub offset: u64,
    /// Bytes removed from its end.
    pub bytes_dropped: u64,
}

/// What [`repair_truncate`] removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairReport {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Where it was cut.
    pub offset: u64,
    /// Bytes removed, counting whole later segments.
    pub bytes_dropped: u64,
    /// Records with a valid checksum found in the removed bytes (records
    /// damaged by the corruption itself cannot be counted).
    pub records_dropped: u64,
    /// Later segment files deleted.
    pub segments_removed: u64,
}

/// The verified state of a log directory, ready for replay and for
/// [`super::Log::open`].
///
/// LSNs start at 1. The log holds `first_lsn()..=last_lsn()`; it is empty
/// when `first_lsn() == last_lsn() + 1` (a brand-new log has first 1, last 0).
#[derive(Debug)]
pub struct Recovery {
    pub(crate) dir: PathBuf,
    pub(crate) segments: Vec<SegmentEntry>,
    first_lsn: u64,
    last_lsn: u64,
    last_epoch: u64,
    torn_tail: Option<TornTail>,
}

/// Scans every segment in `dir` in order, verifying each record's checksum
/// and LSN continuity; cuts a torn tail (see the module doc). A missing
/// directory is an empty log.
pub fn recover(dir: &Path) -> Result<Recovery, StorageError> {
    let files = list_segments(dir)?;
    let mut segments = Vec::with_capacity(files.len());
    let mut torn_tail = None;
    let mut last_epoch = 0;
    let mut next_lsn: Option<u64> = None;
    for (i, (first_lsn, path)) in files.iter().enumerate() {
        if *first_lsn == 0 {
            return Err(corrupt(path, 0, "segment name says lsn 0, but lsns start at 1"));
        }
        if let Some(expected) = next_lsn {
            if *first_lsn != expected {
                return Err(corrupt(
                    path,
                    0,
                    format!(
                        "segment starts at lsn {first_lsn} but the previous segment ends at lsn {} (a segment file is missing or misnamed)",
                        expected - 1
                    ),
                ));
            }
        }
        let is_last = i + 1 == files.len();
        let scan = scan_segment(path, *first_lsn, is_last)?;
        next_lsn = Some(scan.next_lsn);
        if let Some(epoch) = scan.last_epoch {
            last_epoch = epoch;
        }
        if scan.torn_tail.is_some() {
            torn_tail = scan.torn_tail;
        }
        segments.push(scan.entry);
    }
    Ok(Recovery {
        dir: dir.to_path_buf(),
        first_lsn: files.first().map_or(1, |(lsn, _)| *lsn),
        last_lsn: next_lsn.map_or(0, |n| n - 1),
        last_epoch,
        torn_tail,
        segments,
    })
}

struct SegmentScan {
    entry: SegmentEntry,
    next_lsn: u64,
    last_epoch: Option<u64>,
    torn_tail: Option<TornTail>,
}

fn scan_segment(path: &Path, first_lsn: u64, is_last: bool) -> Result<SegmentScan, StorageError> {
    let mut file = File::open(path).map_err(io_err("open segment", path))?;
    let len = file.metadata().map_err(io_err("stat segment", path))?.len();
    let mut entry = SegmentEntry::new(first_lsn, path.to_path_buf());
    let header_problem = if len < SEGMENT_HEADER_BYTES {
        Some((0, format!("segment header is incomplete ({len} of {SEGMENT_HEADER_BYTES} bytes)")))
    } else {
        let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
        file.read_exact(&mut header).map_err(io_err("read segment header of", path))?;
        check_segment_header(&header).err()
    };
    if let Some((offset, reason)) = header_problem {
        // A crash between creating the last segment and its header reaching
        // the disk leaves a short or zero-filled header. Its name still
        // says which LSN comes next, so a fresh header loses nothing, as
        // long as no valid record follows. A plausible newer format version
        // is never cut (a downgrade must not destroy data).
        let foreign_version = offset == 8 && looks_like_a_newer_version(&file_prefix(path)?);
        let torn = is_last && !foreign_version && valid_record_after(path, 0, first_lsn)?.is_none();
        if !torn {
            return Err(corrupt(path, offset, reason));
        }
        rewrite_header(path)?;
        tracing::warn!(file = %path.display(), offset = 0, bytes_dropped = len, reason, "rewrote the torn header of the last log segment");
        let torn = TornTail { path: path.to_path_buf(), offset: 0, bytes_dropped: len };
        return Ok(SegmentScan { entry, next_lsn: first_lsn, last_epoch: None, torn_tail: Some(torn) });
    }

    let mut scanner = Scanner::new(file, SEGMENT_HEADER_BYTES, len, RECOVERY_READ_BUFFER_BYTES);
    let mut expected = first_lsn;
    let mut last_epoch = None;
    let (bad_offset, reason) = loop {
        match scanner.next().map_err(io_err("read segment", path))? {
            Step::Record { offset, header, .. } => {
                if header.lsn != expected {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("lsn discontinuity (expected lsn {expected}, found {})", header.lsn),
                    ));
                }
                entry.observe(header.lsn, offset);
                expected += 1;
                last_epoch = Some(header.epoch);
            }
            Step::End => {
                entry.len = len;
                return Ok(SegmentScan { entry, next_lsn: expected, last_epoch, torn_tail: None });
            }
            Step::Bad { offset, bad } => break (offset, bad.to_string()),
            Step::Truncated { offset, present, needed } => {
                break (offset, format!("record is incomplete ({present} bytes present, {needed} needed)"))
            }
        }
    };
    drop(scanner);
    if !is_last {
        return Err(corrupt(path, bad_offset, format!("{reason}; later segments follow, so this is not a torn tail")));
    }
    if let Some((lsn, at)) = valid_record_after(path, bad_offset, expected)? {
        return Err(corrupt(
            path,
            bad_offset,
            format!("{reason}; a valid record (lsn {lsn}) follows at byte offset {at}, so this is not a torn tail"),
        ));
    }
    cut_torn_tail(path, bad_offset, len, &reason)?;
    entry.len = bad_offset;
    let torn = TornTail { path: path.to_path_buf(), offset: bad_offset, bytes_dropped: len - bad_offset };
    Ok(SegmentScan { entry, next_lsn: expected, last_epoch, torn_tail: Some(torn) })
}

/// Segment versions up to this are taken for a real (newer) format and
/// never cut; a larger value in a damaged last segment is a torn header.
const SEGMENT_FORMAT_VERSION_PLAUSIBLE_MAX: u32 = u16::MAX as u32;

fn looks_like_a_newer_version(header: &[u8]) -> bool {
    let version = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    version > SEGMENT_FORMAT_VERSION && version <= SEGMENT_FORMAT_VERSION_PLAUSIBLE_MAX
}

fn file_prefix(path: &Path) -> Result<[u8; SEGMENT_HEADER_BYTES as usize], StorageError> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    File::open(path).and_then(|mut f| f.read_exact(&mut header)).map_err(io_err("read segment header of", path))?;
    Ok(header)
}

/// The first valid record after the bad one at `offset`, as `(lsn, offset)`.
fn valid_record_after(path: &Path, offset: u64, lsn_min: u64) -> Result<Option<(u64, u64)>, StorageError> {
    let tail = read_from_offset(path, offset)?;
    Ok(find_valid_record(&tail, lsn_min).map(|(lsn, i)| (lsn, offset + i as u64)))
}

fn read_from_offset(path: &Path, offset: u64) -> Result<Vec<u8>, StorageError> {
    let mut file = File::open(path).map_err(io_err("open segment", path))?;
    file.seek(SeekFrom::Start(offset)).map_err(io_err("seek in segment", path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err("read segment", path))?;
    Ok(bytes)
}

fn cut_torn_tail(path: &Path, offset: u64, len: u64, reason: &str) -> Result<(), StorageError> {
    set_len_synced(path, offset)?;
    tracing::warn!(
        file = %path.display(),
        offset,
        bytes_dropped = len - offset,
        reason,
        "cut a torn tail off the replication log (a write interrupted by a crash; it was never durable)"
    );
    Ok(())
}

/// Truncates `path` to `len` bytes and fsyncs it.
pub(crate) fn set_len_synced(path: &Path, len: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new().write(true).open(path).map_err(io_err("open segment for truncation", path))?;
    file.set_len(len).map_err(io_err("truncate segment", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

fn rewrite_header(path: &Path) -> Result<(), StorageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("open segment for header rewrite", path))?;
    file.write_all(&segment_header()).map_err(io_err("write segment header to", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

impl Recovery {
    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Oldest LSN on disk; `last_lsn() + 1` when the log is empty.
    pub fn first_lsn(&self) -> u64 {
        self.first_lsn
    }

    /// Newest valid LSN on disk; 0 for a log that never held a record.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Epoch of the newest record; 0 when the log holds no record.
    pub fn last_epoch(&self) -> u64 {
        self.last_epoch
    }

    /// Number of segment files.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// The torn tail that was cut, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn_tail.as_ref()
    }

    /// Streams every record with `lsn >= from_lsn` (up to [`Self::last_lsn`])
    /// to `f(lsn, epoch, payload)`, in order, re-verifying checksums. Reads
    /// with a 1 MiB buffer per segment; `payload` borrows that buffer, so no
    /// record is allocated. Returns the number of records passed to `f`.
    ///
    /// `from_lsn` 0 means 1. Asking for LSNs older than [`Self::first_lsn`]
    /// is [`StorageError::NotRetained`]; an error from `f` stops the replay
    /// and comes back as [`StorageError::Callback`]. Call before appending to
    /// or truncating the log opened from this recovery.
    pub fn replay<E, F>(&self, from_lsn: u64, mut f: F) -> Result<u64, StorageError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: FnMut(u64, u64, &[u8]) -> Result<(), E>,
    {
        let from_lsn = from_lsn.max(1);
        if from_lsn > self.last_lsn {
            return Ok(0);
        }
        if from_lsn < self.first_lsn {
            return Err(StorageError::NotRetained { from_lsn, first_lsn: self.first_lsn });
        }
        let start = find_segment(&self.segments, from_lsn).expect("from_lsn >= first_lsn has a segment");
        let mut next = from_lsn;
        for seg in &self.segments[start..] {
            if next > self.last_lsn {
                break;
            }
            next = replay_segment(seg, next, self.last_lsn, &mut f)?;
        }
        if next <= self.last_lsn {
            let path = &self.segments.last().expect("non-empty log").path;
            return Err(corrupt(path, 0, format!("lsn {next} vanished after recovery verified it")));
        }
        Ok(next - from_lsn)
    }
}

/// Replays records `next..=last` that live in `seg`; returns the next LSN.
fn replay_segment<E, F>(seg: &SegmentEntry, mut next: u64, last: u64, f: &mut F) -> Result<u64, StorageError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    F: FnMut(u64, u64, &[u8]) -> Result<(), E>,
{
    let path = &seg.path;
    let offset = seg.seek_hint(next);
    let mut file = File::open(path).map_err(io_err("open segment", path))?;
    file.seek(SeekFrom::Start(offset)).map_err(io_err("seek in segment", path))?;
    let mut scanner = Scanner::new(file, offset, seg.len, RECOVERY_READ_BUFFER_BYTES);
    loop {
        match scanner.next().map_err(io_err("read segment", path))? {
            Step::Record { offset, header, payload } => {
                if header.lsn < next {
                    continue;
                }
                if header.lsn != next {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("lsn discontinuity (expected lsn {next}, found {})", header.lsn),
                    ));
                }
                f(header.lsn, header.epoch, payload).map_err(|e| StorageError::Callback {
                    what: format!("log replay stopped at lsn {next} ({})", path.display()),
                    source: e.into(),
                })?;
                next += 1;
                if next > last {
                    return Ok(next);
                }
            }
            Step::End => return Ok(next),
            Step::Bad { offset, bad } => {
                return Err(corrupt(path, offset, format!("{bad} (the file changed after recovery verified it)")))
            }
            Step::Truncated { offset, .. } => {
                return Err(corrupt(path, offset, "record is incomplete (the file changed after recovery verified it)"))
            }
        }
    }
}

/// What [`repair_truncate`] would drop, without changing anything (the
/// `--dry-run` of `tandem log repair`).
pub fn repair_plan(dir: &Path, path: &Path, offset: u64) -> Result<RepairReport, StorageError> {
    let files = list_segments(dir)?;
    let Some(idx) = files.iter().position(|(_, p)| p == path) else {
        return Err(StorageError::InvalidRequest {
            reason: format!("{} is not a segment of the log in {}", path.display(), dir.display()),
        });
    };
    let first_lsn = files[idx].0;
    let len = fs::metadata(path).map_err(io_err("stat segment", path))?.len();
    if offset > len {
        return Err(StorageError::InvalidRequest {
            reason: format!("offset {offset} is past the end of {} ({len} bytes)", path.display()),
        });
    }
    let cut = offset.max(SEGMENT_HEADER_BYTES);
    let mut bytes_dropped = len.saturating_sub(cut);
    let mut records_dropped = if cut < len { count_valid_records(&read_from_offset(path, cut)?, first_lsn) } else { 0 };
    let later = &files[idx + 1..];
    for (lsn, later_path) in later {
        let bytes = read_from_offset(later_path, 0)?;
        bytes_dropped += bytes.len() as u64;
        let records = bytes.get(SEGMENT_HEADER_BYTES as usize..).unwrap_or_default();
        records_dropped += count_valid_records(records, *lsn);
    }
    Ok(RepairReport {
        path: path.to_path_buf(),
        offset,
        bytes_dropped,
        records_dropped,
        segments_removed: later.len() as u64,
    })
}

/// Deliberately cuts the log at `offset` of the segment `path` (normally the
/// offset a [`StorageError::Corrupt`] named) and deletes every later segment.
/// Every entry after that point is lost; the report says how many. An
/// offset inside the segment header keeps a fresh header, so the log still
/// knows which LSN comes next. Run it only with the node stopped.
pub fn repair_truncate(dir: &Path, path: &Path, offset: u64) -> Result<RepairReport, StorageError> {
    let report = repair_plan(dir, path, offset)?;
    let files = list_segments(dir)?;
    let idx = files.iter().position(|(_, p)| p == path).expect("repair_plan found the segment");
    let later = &files[idx + 1..];
    let RepairReport { bytes_dropped, records_dropped, .. } = report;
    // Newest first, so a crash part-way leaves a contiguous log.
    for (_, later_path) in later.iter().rev() {
        fs::remove_file(later_path).map_err(io_err("delete segment", later_path))?;
    }
    if !later.is_empty() {
        sync_dir(dir)?;
    }
    if offset < SEGMENT_HEADER_BYTES {
        rewrite_header(path)?;
    } else {
        set_len_synced(path, offset)?;
    }
    tracing::warn!(
        file = %path.display(),
        offset,
        bytes_dropped,
        records_dropped,
        segments_removed = later.len(),
        "repaired the replication log by truncating it; entries after this point are lost"
    );
    Ok(report)
}
