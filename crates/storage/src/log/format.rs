//! Byte layout of log segments and records, and a buffered record scanner.
//!
//! Owns the encoding only. It never opens directories, never decides what a
//! bad record means (torn tail or corruption: that is recovery's call) and
//! never looks inside a payload.
//!
//! Segment header (12 bytes): `TNDMLOG1` magic, u32 format version.
//! Record (24-byte header + payload), little-endian:
//! `u32 len | u32 crc32c | u64 lsn | u64 epoch | payload[len]`, where the
//! crc covers the bytes `lsn | epoch | payload` (contiguous on disk).

use std::fmt;
use std::io::{self, Read};

/// Magic bytes that open every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TNDMLOG1";
/// Segment format version written by this build (and the only one it reads).
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Bytes of the segment header: magic + version.
pub const SEGMENT_HEADER_BYTES: u64 = 12;
/// Bytes of a record header: len, crc, lsn, epoch.
pub const RECORD_HEADER_BYTES: usize = 24;
/// Largest payload one record may carry. A length field above it found on
/// disk is corruption, never an allocation.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 512 << 20;

/// The 12 header bytes of a new segment.
pub(crate) fn segment_header() -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h
}

/// Checks a segment header; on failure returns the offending offset and why.
pub(crate) fn check_segment_header(h: &[u8]) -> Result<(), (u64, String)> {
    if h[..8] != SEGMENT_MAGIC {
        return Err((0, format!("bad segment magic {:02x?} (expected {:?})", &h[..8], "TNDMLOG1")));
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != SEGMENT_FORMAT_VERSION {
        return Err((
            8,
            format!("unsupported segment format version {version} (this build reads version {SEGMENT_FORMAT_VERSION})"),
        ));
    }
    Ok(())
}

/// The crc32c a record with these fields carries.
pub(crate) fn record_crc(lsn: u64, epoch: u64, payload: &[u8]) -> u32 {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&lsn.to_le_bytes());
    head[8..].copy_from_slice(&epoch.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), payload)
}

/// Appends one encoded record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: u64, epoch: u64, crc: u32, payload: &[u8]) {
    buf.reserve(RECORD_HEADER_BYTES + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(&epoch.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The fixed fields of a record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordHeader {
    pub len: u32,
    pub crc: u32,
    pub lsn: u64,
    pub epoch: u64,
}

impl RecordHeader {
    /// Reads the header at the start of `b` (`b.len() >= RECORD_HEADER_BYTES`).
    pub fn read(b: &[u8]) -> RecordHeader {
        RecordHeader {
            len: u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")),
            crc: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            lsn: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            epoch: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }

    /// Bytes the whole record occupies on disk.
    pub fn record_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.len as usize
    }
}

/// Why a complete-looking record failed its checks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BadRecord {
    TooLong { len: u32 },
    CrcMismatch { stored: u32, computed: u32 },
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::TooLong { len } => {
                write!(f, "record length {len} exceeds the limit of {RECORD_PAYLOAD_BYTES_MAX} bytes")
            }
            BadRecord::CrcMismatch { stored, computed } => {
                write!(f, "crc mismatch (stored 0x{stored:08x}, computed 0x{computed:08x})")
            }
        }
    }
}

/// Result of looking at the bytes where a record should start.
pub(crate) enum Parsed {
    /// A whole record whose crc verifies.
    Record(RecordHeader),
    /// Fewer bytes than the record needs; `needed` is the total to look at.
    Incomplete { needed: usize },
    /// A record that fails its checks.
    Bad(BadRecord),
}

/// Parses (and crc-checks) the record at the start of `b`.
pub(crate) fn parse_record(b: &[u8]) -> Parsed {
    if b.len() < RECORD_HEADER_BYTES {
        return Parsed::Incomplete { needed: RECORD_HEADER_BYTES };
    }
    let h = RecordHeader::read(b);
    if h.len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Parsed::Bad(BadRecord::TooLong { len: h.len });
    }
    let size = h.record_bytes();
    if b.len() < size {
        return Parsed::Incomplete { needed: size };
    }
    let computed = crc32c::crc32c(&b[8..size]);
    if computed != h.crc {
        return Parsed::Bad(BadRecord::CrcMismatch { stored: h.crc, computed });
    }
    Parsed::Record(h)
}

/// `(lsn, size)` of a record in a buffer this process encoded itself.
pub(crate) fn trusted_record_at(bytes: &[u8], pos: usize) -> (u64, usize) {
    let h = RecordHeader::read(&bytes[pos..]);
    (h.lsn, h.record_bytes())
}

/// One step of a [`Scanner`].
pub(crate) enum Step<'a> {
    /// A valid record starting at `offset`.
    Record { offset: u64, header: RecordHeader, payload: &'a [u8] },
    /// A record at `offset` that fails its checks.
    Bad { offset: u64, bad: BadRecord },
    /// A record at `offset` that runs past the end of the file.
    Truncated { offset: u64, present: u64, needed: u64 },
    /// Clean end of the file.
    End,
}

/// Reads records sequentially with big reads into one reusable buffer:
/// no syscall and no allocation per record (the buffer only grows for a
/// record larger than itself).
pub(crate) struct Scanner<R> {
    src: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    /// File length; nothing at or past it is trusted to exist.
    limit: u64,
}

impl<R: Read> Scanner<R> {
    /// `src` must be positioned at `offset`; `limit` is the file length.
    pub fn new(src: R, offset: u64, limit: u64, buf_bytes: usize) -> Scanner<R> {
        Scanner { src, buf: vec![0; buf_bytes.max(RECORD_HEADER_BYTES)], start: 0, end: 0, offset, limit }
    }

    /// The next record, bad record, or end.
    pub fn next(&mut self) -> io::Result<Step<'_>> {
        loop {
            match parse_record(&self.buf[self.start..self.end]) {
                Parsed::Record(header) => {
                    let at = self.start;
                    let size = header.record_bytes();
                    let offset = self.offset;
                    self.start += size;
                    self.offset += size as u64;
                    let payload = &self.buf[at + RECORD_HEADER_BYTES..at + size];
                    return Ok(Step::Record { offset, header, payload });
                }
                Parsed::Bad(bad) => return Ok(Step::Bad { offset: self.offset, bad }),
                Parsed::Incomplete { needed } => {
                    let in_file = self.limit.saturating_sub(self.offset);
                    let buffered = (self.end - self.start) as u64;
                    if in_file < needed as u64 {
                        if in_file == 0 && buffered == 0 {
                            return Ok(Step::End);
                        }
                        return Ok(Step::Truncated { offset: self.offset, present: in_file, needed: needed as u64 });
                    }
                    if !self.fill(needed)? {
                        // The file shrank under us.
                        let present = (self.end - self.start) as u64;
                        return Ok(Step::Truncated { offset: self.offset, present, needed: needed as u64 });
                    }
                }
            }
        }
    }

    /// Makes at least `needed` bytes available from `start`; false at EOF.
    fn fill(&mut self, needed: usize) -> io::Result<bool> {
        if self.start + needed > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if needed > self.buf.len() {
                self.buf.resize(needed, 0);
            }
        }
        while self.end - self.start < needed {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(false),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Searches `tail` (the bytes from a bad record's offset to the end of its
/// file) for any valid record after its first byte whose lsn is plausible
/// (at least `lsn_min`). Returns `(lsn, position in tail)` of the first one.
///
/// The lsn window filters out nearly every false candidate before a crc is
/// computed, so this stays linear in the tail length.
pub(crate) fn find_valid_record(tail: &[u8], lsn_min: u64) -> Option<(u64, usize)> {
    let lsn_max = lsn_min.saturating_add((tail.len() / RECORD_HEADER_BYTES) as u64);
    let last_start = tail.len().checked_sub(RECORD_HEADER_BYTES)?;
    (1..=last_start).find_map(|i| {
        let h = RecordHeader::read(&tail[i..]);
        if h.lsn < lsn_min || h.lsn > lsn_max || h.record_bytes() > tail.len() - i {
            return None;
        }
        match parse_record(&tail[i..]) {
            Parsed::Record(h) => Some((h.lsn, i)),
            _ => None,
        }
    })
}

/// Counts valid records in `bytes`, resynchronising byte by byte after
/// garbage. Used to report what a repair drops.
pub(crate) fn count_valid_records(bytes: &[u8], lsn_min: u64) -> u64 {
    let mut count = 0;
    let mut pos = 0;
    let mut expected = lsn_min;
    while pos + RECORD_HEADER_BYTES <= bytes.len() {
        if let Parsed::Record(h) = parse_record(&bytes[pos..]) {
            if h.lsn >= expected {
                count += 1;
                expected = h.lsn + 1;
                pos += h.record_bytes();
                continue;
            }
        }
        match find_valid_record(&bytes[pos..], expected) {
            Some((_, i)) => pos += i,
            None => break,
        }
    }
    count
}
