//! The append-only log of one multi-leader keyspace on this node:
//! `<data_dir>/keyspaces/<name>/multi-leader.log`, every record framed as
//! `u32 len | u32 crc32c | postcard(MlEntry)`.
//!
//! Owns the file: appending a batch (and making it durable per the node's
//! `--fsync` policy) and replaying it at start. A torn tail (a record cut
//! short by a crash, or the last record's checksum failing at the end of
//! the file) is cut off and reported; a bad checksum or an undecodable
//! record before the tail stops the keyspace with an error naming the file
//! and the offset. Never decides anything about replication.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tandem_core::replica::multi_leader::MlEntry;
use tandem_storage::log::FsyncPolicy;

/// Bytes of a record header (length, checksum).
const HEADER_BYTES: usize = 8;

/// Largest record accepted when reading (a longer length field is
/// corruption). Matches the peer frame bound: a record is one entry, and
/// an entry must fit in a peer frame to ship.
pub const RECORD_BYTES_MAX: usize = tandem_core::repl::msg::PEER_FRAME_BYTES_MAX - 4096;

/// The log file name inside the keyspace's directory.
pub const LOG_FILE: &str = "multi-leader.log";

/// The open log.
pub struct MlLog {
    file: File,
    path: PathBuf,
    fsync: FsyncPolicy,
    /// Written since the last fdatasync (everysec).
    dirty: bool,
}

/// Encodes one record.
pub fn encode_record(entry: &MlEntry, out: &mut Vec<u8>) {
    let payload = postcard::to_allocvec(entry).expect("an entry always encodes");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

impl MlLog {
    /// Opens (creating) the log in `dir` and returns every intact record.
    pub fn open(dir: &Path, fsync: FsyncPolicy) -> Result<(MlLog, Vec<MlEntry>), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(LOG_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let (entries, good_len) = parse(&path, &bytes)?;
        if good_len < bytes.len() {
            tracing::warn!(
                file = %path.display(),
                offset = good_len,
                cut_bytes = bytes.len() - good_len,
                "multi-leader log: torn tail cut off (a write interrupted by a crash)"
            );
            file.set_len(good_len as u64).map_err(|e| format!("truncating {}: {e}", path.display()))?;
            file.seek(SeekFrom::End(0)).map_err(|e| format!("seeking {}: {e}", path.display()))?;
            file.sync_data().map_err(|e| format!("fdatasync {}: {e}", path.display()))?;
        }
        Ok((MlLog { file, path, fsync, dirty: false }, entries))
    }

    /// Appends `bytes` (encoded records) and makes them as durable as the
    /// fsync policy promises before returning.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.file.write_all(bytes).map_err(|e| format!("writing {}: {e}", self.path.display()))?;
        match self.fsync {
            FsyncPolicy::Always | FsyncPolicy::Batch => self.sync(),
            FsyncPolicy::EverySec => {
                self.dirty = true;
                Ok(())
            }
            FsyncPolicy::Never => Ok(()),
        }
    }

    /// fdatasync now.
    pub fn sync(&mut self) -> Result<(), String> {
        self.dirty = false;
        self.file.sync_data().map_err(|e| format!("fdatasync {}: {e}", self.path.display()))
    }

    /// fdatasync if written since the last one (the everysec tick).
    pub fn sync_if_dirty(&mut self) -> Result<(), String> {
        if self.dirty {
            self.sync()
        } else {
            Ok(())
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses records; returns them and the length of the intact prefix.
fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<MlEntry>, usize), String> {
    let mut entries = Vec::new();
    let mut off = 0;
    while off < bytes.len() {
        if bytes.len() - off < HEADER_BYTES {
            return Ok((entries, off));
        }
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4 bytes"));
        let end = off + HEADER_BYTES + len;
        if len > RECORD_BYTES_MAX {
            return Err(corrupt(path, off, "record length past RECORD_BYTES_MAX"));
        }
        if end > bytes.len() {
            return Ok((entries, off));
        }
        let payload = &bytes[off + HEADER_BYTES..end];
        if crc32c::crc32c(payload) != crc {
            if end == bytes.len() {
                // The last record: a torn write.
                return Ok((entries, off));
            }
            return Err(corrupt(path, off, "checksum mismatch"));
        }
        let entry: MlEntry = postcard::from_bytes(payload).map_err(|e| corrupt(path, off, &e.to_string()))?;
        entries.push(entry);
        off = end;
    }
    Ok((entries, off))
}

fn corrupt(path: &Path, offset: usize, why: &str) -> String {
    format!(
        "multi-leader log {} is corrupt at offset {offset}: {why}; the keyspace will not start on this node \
         (move the file away to rebuild it from the other nodes)",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tandem_core::conflict::{Hlc, KeyValue};
    use tandem_core::keyspace::ConflictPolicy;

    use super::*;

    fn entry(seq: u64) -> MlEntry {
        MlEntry {
            origin: 1,
            seq,
            hlc: Hlc { physical_ms: seq, logical: 0, node: 1 },
            key: Bytes::from("k"),
            value: KeyValue::empty(ConflictPolicy::Crdt),
        }
    }

    #[test]
    fn log_replays_what_was_appended_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, got) = MlLog::open(dir.path(), FsyncPolicy::Batch).unwrap();
        assert!(got.is_empty());
        let mut buf = Vec::new();
        encode_record(&entry(1), &mut buf);
        encode_record(&entry(2), &mut buf);
        log.append(&buf).unwrap();
        // A torn third record.
        let mut torn = Vec::new();
        encode_record(&entry(3), &mut torn);
        log.append(&torn[..torn.len() - 3]).unwrap();
        drop(log);
        let (_, got) = MlLog::open(dir.path(), FsyncPolicy::Batch).unwrap();
        assert_eq!(got, vec![entry(1), entry(2)]);
        let len = std::fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() as usize;
        assert_eq!(len, buf.len());
    }

    #[test]
    fn corrupt_record_before_the_tail_is_reported_with_path_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = MlLog::open(dir.path(), FsyncPolicy::Batch).unwrap();
        let mut buf = Vec::new();
        encode_record(&entry(1), &mut buf);
        let second = buf.len();
        encode_record(&entry(2), &mut buf);
        encode_record(&entry(3), &mut buf);
        buf[second + HEADER_BYTES + 1] ^= 0xff;
        log.append(&buf).unwrap();
        drop(log);
        let err = MlLog::open(dir.path(), FsyncPolicy::Batch).err().unwrap();
        assert!(err.contains(LOG_FILE) && err.contains(&format!("offset {second}")), "{err}");
    }
}
