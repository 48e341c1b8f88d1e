//! Files of log records in the log's own segment format (12-byte header
//! `TNDMLOG1` + u32 version, then `u32 len | u32 crc32c | u64 lsn | u64
//! epoch | payload` records; see docs/storage-format.md), as used by
//! archive files and a base backup's log file.
//!
//! Owns encoding, whole-file checksums and a record iterator that checks
//! every record's crc. It never decides what a gap means (that is the
//! caller's) and never interprets a payload beyond peeking its commit time.

use std::io::Read;
use std::path::Path;

use tandem_storage::log::{RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_FORMAT_VERSION, SEGMENT_MAGIC};

use crate::error::{corrupt, io_err};
use crate::BackupError;

/// Bytes of the segment header that opens every record file.
pub const FILE_HEADER_BYTES: usize = 12;
/// Largest record file this crate reads into memory; a manifest claiming
/// more is refused rather than allocated.
pub const RECORD_FILE_BYTES_MAX: u64 = 2 << 30;
/// Read buffer for whole-file checksums.
const CHECKSUM_READ_BUFFER_BYTES: usize = 1 << 20;
/// The payload format version `tandem-core` writes (a version byte, then
/// postcard with the commit time first).
const PAYLOAD_FORMAT_V1: u8 = 1;

/// The 12 header bytes of a record file.
pub fn file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
    h
}

/// Appends one encoded record to `buf`.
pub fn encode_record(buf: &mut Vec<u8>, lsn: u64, epoch: u64, payload: &[u8]) {
    let mut head = [0u8; 16];
    head[..8].copy_from_slice(&lsn.to_le_bytes());
    head[8..].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), payload);
    buf.reserve(RECORD_HEADER_BYTES + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(payload);
}

/// The commit time (unix ms) a `tandem-core` log payload carries, read
/// without decoding its effects. `None` if the payload is not format 1.
pub fn commit_ms_of(payload: &[u8]) -> Option<u64> {
    let (&version, rest) = payload.split_first()?;
    if version != PAYLOAD_FORMAT_V1 {
        return None;
    }
    // postcard encodes a u64 as a LEB128 varint of at most 10 bytes.
    let mut value = 0u64;
    for (i, &b) in rest.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// One record borrowed from a buffer.
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// Byte offset of the record in its file.
    pub offset: u64,
    /// Its LSN.
    pub lsn: u64,
    /// Its epoch.
    pub epoch: u64,
    /// The opaque payload.
    pub payload: &'a [u8],
}

/// Iterates the records of `bytes` (which start at file offset `base`),
/// checking each record's length and crc. An error names `path` and the
/// offset. LSN continuity is the caller's check.
pub struct Records<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
    base: u64,
}

impl<'a> Records<'a> {
    /// Records of a whole file image (`bytes` includes the 12-byte header,
    /// which is checked here).
    pub fn of_file(path: &'a Path, bytes: &'a [u8]) -> Result<Records<'a>, BackupError> {
        if bytes.len() < FILE_HEADER_BYTES || bytes[..FILE_HEADER_BYTES] != file_header() {
            return Err(corrupt(path, 0, "bad record file header (expected TNDMLOG1, version 1)"));
        }
        Ok(Records { path, bytes: &bytes[FILE_HEADER_BYTES..], pos: 0, base: FILE_HEADER_BYTES as u64 })
    }

    /// Records of a headerless run of encoded records (an HTTP body).
    pub fn of_run(path: &'a Path, bytes: &'a [u8]) -> Records<'a> {
        Records { path, bytes, pos: 0, base: 0 }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordRef<'a>, BackupError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() {
            return None;
        }
        let offset = self.base + self.pos as u64;
        if rest.len() < RECORD_HEADER_BYTES {
            self.pos = self.bytes.len();
            return Some(Err(corrupt(self.path, offset, "record header runs past the end of the file")));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let size = RECORD_HEADER_BYTES + len;
        if len > RECORD_PAYLOAD_BYTES_MAX || size > rest.len() {
            self.pos = self.bytes.len();
            return Some(Err(corrupt(self.path, offset, format!("record of {len} payload bytes runs past the end"))));
        }
        let computed = crc32c::crc32c(&rest[8..size]);
        if computed != crc {
            self.pos = self.bytes.len();
            return Some(Err(corrupt(
                self.path,
                offset,
                format!("record crc mismatch (stored 0x{crc:08x}, computed 0x{computed:08x})"),
            )));
        }
        self.pos += size;
        Some(Ok(RecordRef {
            offset,
            lsn: u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes")),
            epoch: u64::from_le_bytes(rest[16..24].try_into().expect("8 bytes")),
            payload: &rest[RECORD_HEADER_BYTES..size],
        }))
    }
}

/// Reads the first `bytes` bytes of `path` and checks them against `crc`
/// (the manifest's values). A shorter file or another checksum is
/// [`BackupError::Corrupt`] naming the file.
pub fn read_checked(path: &Path, bytes: u64, crc: u32) -> Result<Vec<u8>, BackupError> {
    if bytes > RECORD_FILE_BYTES_MAX {
        return Err(corrupt(
            path,
            0,
            format!("manifest claims {bytes} bytes, above the {RECORD_FILE_BYTES_MAX} limit"),
        ));
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Missing { path: path.into(), reason: "listed in its manifest".into() })
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let mut out = vec![0u8; bytes as usize];
    let mut got = 0;
    while got < out.len() {
        match file.read(&mut out[got..]) {
            Ok(0) => return Err(corrupt(path, got as u64, format!("file ends at {got} bytes, manifest says {bytes}"))),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read", path)(e)),
        }
    }
    let computed = crc32c::crc32c(&out);
    if computed != crc {
        return Err(corrupt(
            path,
            0,
            format!("file crc32c 0x{computed:08x} does not match the manifest's 0x{crc:08x}"),
        ));
    }
    Ok(out)
}

/// `(length, crc32c)` of a whole file, streamed.
pub fn file_checksum(path: &Path) -> Result<(u64, u32), BackupError> {
    let mut file = std::fs::File::open(path).map_err(io_err("open", path))?;
    let mut buf = vec![0u8; CHECKSUM_READ_BUFFER_BYTES];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((len, crc)),
            Ok(n) => {
                crc = crc32c::crc32c_append(crc, &buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("read", path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_a_flipped_byte_is_named_with_its_offset() {
        let mut buf = file_header().to_vec();
        encode_record(&mut buf, 1, 1, b"one");
        encode_record(&mut buf, 2, 1, b"two");
        let path = Path::new("x.seg");
        let got: Vec<_> = Records::of_file(path, &buf).unwrap().map(|r| r.unwrap().lsn).collect();
        assert_eq!(got, vec![1, 2]);
        let second = FILE_HEADER_BYTES + RECORD_HEADER_BYTES + 3;
        buf[second + RECORD_HEADER_BYTES] ^= 1;
        let err = Records::of_file(path, &buf).unwrap().nth(1).unwrap().unwrap_err();
        assert!(err.to_string().contains(&format!("offset {second}")), "{err}");
    }

    #[test]
    fn commit_time_is_peeked_from_a_core_payload() {
        let entry = tandem_core::effect::LogEntry { lsn: 3, epoch: 1, commit_ms: 1_795_690_740_123, effects: vec![] };
        let mut payload = Vec::new();
        entry.encode_payload(&mut payload);
        assert_eq!(commit_ms_of(&payload), Some(1_795_690_740_123));
        assert_eq!(commit_ms_of(&[9, 1]), None);
    }
}
