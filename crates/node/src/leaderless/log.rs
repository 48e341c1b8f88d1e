//! The local replica file of a leaderless keyspace: an append-only log of
//! versioned key writes, hints, keys forgotten after they moved to new
//! owners, and the membership last balanced for; replayed at start.
//!
//! Each record is framed as `len: u32 LE | crc32c: u32 LE | postcard body`.
//! At start the whole file is replayed: a torn tail (a frame cut short or
//! a bad checksum on the very last frame, what a crash in the middle of an
//! append leaves) is cut off and reported; a bad frame anywhere else stops
//! the keyspace with an error naming the file and offset, never skipped.
//! Appends are made durable per the node's fsync policy before the write
//! they carry is acknowledged. This module owns the bytes of that file
//! only; it decides nothing about versions.
//!
//! Files written before records carried a causal context (`seen`) are
//! still read: a frame that does not decode as an [`Entry`] is decoded in
//! the older layout ([`legacy`]) with an empty context.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tandem_core::repl::NodeId;
use tandem_core::replica::leaderless::{Record, Version};
use tandem_storage::log::FsyncPolicy;

/// The file's name in the keyspace's directory.
pub const FILE_NAME: &str = "replica.log";

/// Frame header: length and checksum.
const HEADER_BYTES: usize = 8;

/// A frame larger than this is corruption, not a record (the peer frame
/// limit bounds every record).
const ENTRY_BYTES_MAX: usize = tandem_core::repl::msg::PEER_FRAME_BYTES_MAX;

/// One entry of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A write this node holds as one of the key's replicas.
    Record(Record),
    /// A write this node holds for `owner` (sloppy quorum).
    Hint {
        /// The preference-list replica the write belongs to.
        owner: NodeId,
        /// The write.
        rec: Record,
    },
    /// `owner` made the hinted write of `key` at `version` durable.
    HintDelivered {
        /// The owner.
        owner: NodeId,
        /// The key.
        key: Bytes,
        /// The version delivered.
        version: Version,
    },
    /// This node forgot `key` at `version`: the key moved to its new
    /// owners after a ring change (rebalancing), no tombstone.
    Forget {
        /// The key.
        key: Bytes,
        /// The version forgotten (a newer one is kept on replay).
        version: Version,
    },
    /// This node finished rebalancing for a ring over these members: the
    /// ring the next membership change is planned from.
    Balanced {
        /// The members, ascending.
        members: Vec<NodeId>,
    },
}

/// The open file.
pub struct ReplicaLog {
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    bytes: u64,
}

/// Replaying or appending failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error on the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A frame in the middle of the file is corrupt.
    #[error("{path}: corrupt record at offset {offset}: {reason}; the file was left as is (restore the node from its peers or a backup)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The frame's offset.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl ReplicaLog {
    /// Opens (or creates) the file in `dir` and returns it with every entry
    /// in it, in order, and the length of a torn tail that was cut (0: none).
    pub fn open(dir: &Path, fsync: FsyncPolicy) -> Result<(ReplicaLog, Vec<Entry>, u64), LogError> {
        let path = dir.join(FILE_NAME);
        let io = |source| LogError::Io { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path).map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let (entries, good) = parse(&path, &data)?;
        let torn = data.len() as u64 - good;
        if torn > 0 {
            file.set_len(good).map_err(io)?;
            file.sync_all().map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
        }
        Ok((ReplicaLog { path, file, fsync, bytes: good }, entries, torn))
    }

    /// Appends `entries` and makes them durable per the fsync policy.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let mut out = Vec::new();
        for e in entries {
            let body = postcard::to_allocvec(e).expect("entries always encode");
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
            out.extend_from_slice(&body);
        }
        let io = |source| LogError::Io { path: self.path.clone(), source };
        self.file.write_all(&out).map_err(io)?;
        if matches!(self.fsync, FsyncPolicy::Always | FsyncPolicy::Batch) {
            self.file.sync_data().map_err(io)?;
        }
        self.bytes += out.len() as u64;
        Ok(())
    }

    /// The file's size.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Parses frames; returns the entries and the length of the good prefix.
fn parse(path: &Path, data: &[u8]) -> Result<(Vec<Entry>, u64), LogError> {
    let mut entries = Vec::new();
    let mut off = 0usize;
    let corrupt =
        |offset: usize, reason: String| LogError::Corrupt { path: path.to_path_buf(), offset: offset as u64, reason };
    while off < data.len() {
        if data.len() - off < HEADER_BYTES {
            break; // torn header
        }
        let len = u32::from_le_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().expect("4 bytes"));
        if len > ENTRY_BYTES_MAX {
            return Err(corrupt(off, format!("length {len} exceeds {ENTRY_BYTES_MAX}")));
        }
        let end = off + HEADER_BYTES + len;
        if end > data.len() {
            break; // torn body
        }
        let body = &data[off + HEADER_BYTES..end];
        if crc32c::crc32c(body) != crc {
            if end == data.len() {
                break; // the last frame, half written
            }
            return Err(corrupt(off, "checksum mismatch".into()));
        }
        let entry = match postcard::from_bytes::<Entry>(body) {
            Ok(e) => e,
            Err(e) => match postcard::from_bytes::<legacy::Entry>(body) {
                Ok(old) => old.into(),
                Err(_) => return Err(corrupt(off, format!("undecodable: {e}"))),
            },
        };
        entries.push(entry);
        off = end;
    }
    Ok((entries, off as u64))
}

/// The layout of entries before records carried a causal context.
mod legacy {
    use bytes::Bytes;
    use serde::Deserialize;
    use tandem_core::repl::NodeId;
    use tandem_core::replica::leaderless::{Record as NewRecord, Seen, Version};

    #[derive(Deserialize)]
    pub struct Record {
        key: Bytes,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        version: Version,
    }

    impl From<Record> for NewRecord {
        fn from(r: Record) -> NewRecord {
            NewRecord {
                key: r.key,
                value: r.value,
                expires_at_ms: r.expires_at_ms,
                version: r.version,
                seen: Seen::new(),
            }
        }
    }

    #[derive(Deserialize)]
    pub enum Entry {
        Record(Record),
        Hint { owner: NodeId, rec: Record },
        HintDelivered { owner: NodeId, key: Bytes, version: Version },
        Forget { key: Bytes, version: Version },
        Balanced { members: Vec<NodeId> },
    }

    impl From<Entry> for super::Entry {
        fn from(e: Entry) -> super::Entry {
            match e {
                Entry::Record(r) => super::Entry::Record(r.into()),
                Entry::Hint { owner, rec } => super::Entry::Hint { owner, rec: rec.into() },
                Entry::HintDelivered { owner, key, version } => super::Entry::HintDelivered { owner, key, version },
                Entry::Forget { key, version } => super::Entry::Forget { key, version },
                Entry::Balanced { members } => super::Entry::Balanced { members },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str) -> Entry {
        Entry::Record(Record {
            key: Bytes::from(k.to_string()),
            value: Some(Bytes::from_static(b"v")),
            expires_at_ms: Some(7),
            version: Version { physical_ms: 1, logical: 2, node: 3 },
            seen: Default::default(),
        })
    }

    #[test]
    fn replica_log_reads_records_written_before_they_carried_a_context() {
        #[derive(Serialize)]
        struct OldRecord {
            key: Bytes,
            value: Option<Bytes>,
            expires_at_ms: Option<u64>,
            version: Version,
        }
        #[derive(Serialize)]
        enum OldEntry {
            Record(OldRecord),
        }
        let dir = tempfile::tempdir().unwrap();
        let old = OldEntry::Record(OldRecord {
            key: Bytes::from_static(b"a"),
            value: Some(Bytes::from_static(b"v")),
            expires_at_ms: Some(7),
            version: Version { physical_ms: 1, logical: 2, node: 3 },
        });
        let body = postcard::to_allocvec(&old).unwrap();
        let mut data = (body.len() as u32).to_le_bytes().to_vec();
        data.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        data.extend_from_slice(&body);
        std::fs::write(dir.path().join(FILE_NAME), &data).unwrap();
        let (mut log, e, torn) = ReplicaLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!((e, torn), (vec![rec("a")], 0));
        log.append(&[rec("b")]).unwrap();
        drop(log);
        let (_, e, _) = ReplicaLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        assert_eq!(e, vec![rec("a"), rec("b")]);
    }

    #[test]
    fn replica_log_replays_what_was_appended_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, e, torn) = ReplicaLog::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert!(e.is_empty() && torn == 0);
        log.append(&[rec("a"), rec("b")]).unwrap();
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1]).unwrap();
        drop(f);
        let (_log, e, torn) = ReplicaLog::open(dir.path(), FsyncPolicy::Always).unwrap();
        assert_eq!(e, vec![rec("a"), rec("b")]);
        assert_eq!(torn, 5);
    }

    #[test]
    fn replica_log_corruption_in_the_middle_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _, _) = ReplicaLog::open(dir.path(), FsyncPolicy::Never).unwrap();
        log.append(&[rec("a"), rec("b")]).unwrap();
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let mut data = std::fs::read(&path).unwrap();
        data[HEADER_BYTES + 1] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let err = ReplicaLog::open(dir.path(), FsyncPolicy::Never).err().unwrap().to_string();
        assert!(err.contains("replica.log") && err.contains("offset 0"), "{err}");
    }
}
