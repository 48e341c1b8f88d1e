//! Multi-leader keyspaces in the repository: each node's archived copy of
//! a keyspace's log, and what a restore keeps of it.
//!
//! Layout (docs/backup.md, "Multi-leader keyspaces"):
//!
//! ```text
//! R/multi-leader/<keyspace>/node-<id>.log    records in the node's own log format
//! R/multi-leader/<keyspace>/node-<id>.json   manifest: bytes, crc32c of those bytes, records, last HLC ms
//! ```
//!
//! A record is `u32 len | u32 crc32c | postcard(MlEntry)`, exactly as in
//! `<data_dir>/keyspaces/<name>/multi-leader.log`. A node's file holds
//! every write the node had durably (its own and those it received from
//! every other origin), in its log's order; the file only grows, and
//! readers trust only the first `bytes` bytes its manifest names (a pass
//! that died before publishing its manifest leaves a tail the next pass
//! cuts).
//!
//! A restore takes the union of every node's file (one copy per
//! `(origin, seq)`), keeps the records whose HLC physical time is at or
//! before the target, sorts them by HLC (a linear extension of causality,
//! so each origin's writes stay in sequence order) and writes them as the
//! keyspace's log in the restored data directory; the node replays it at
//! start. Every record is the key's whole state at its origin, and merges
//! are joins, so the result is the converged state of exactly those
//! writes: siblings and CRDT state as they were.
//!
//! Must never: decide replication or merge anything itself (the node's
//! replica replays the log), or trust a byte it did not checksum.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tandem_core::replica::multi_leader::MlEntry;

use crate::error::{corrupt, dir_entries, io_err};
use crate::repo::{read_manifest, sync_dir, write_atomic, write_manifest, Repository};
use crate::BackupError;

/// Bytes of a record header (length, checksum).
const HEADER_BYTES: usize = 8;

/// Largest record accepted (a longer length field is corruption): the
/// node's own bound (a record must fit in a peer frame).
pub const ML_RECORD_BYTES_MAX: usize = tandem_core::repl::msg::PEER_FRAME_BYTES_MAX;

/// Largest archived file of one node and keyspace that a restore reads
/// into memory (multi-leader logs are not compacted yet).
pub const ML_ARCHIVE_FILE_BYTES_MAX: u64 = 4 << 30;

/// The log file name inside a restored keyspace directory (the node's
/// `multi_leader::log::LOG_FILE`).
pub const ML_LOG_FILE: &str = "multi-leader.log";

/// The manifest of one node's archived log of one keyspace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlArchiveManifest {
    /// The keyspace.
    pub keyspace: String,
    /// The node that archived it.
    pub node_id: u64,
    /// Bytes of the file that are published.
    pub bytes: u64,
    /// crc32c of those bytes.
    pub crc32c: u32,
    /// Records in those bytes.
    pub records: u64,
    /// The highest HLC physical ms among them (0: none).
    pub last_hlc_ms: u64,
}

/// `R/multi-leader`.
pub fn ml_root(repo: &Repository) -> PathBuf {
    repo.root().join("multi-leader")
}

/// A node's archive of one keyspace, open for appending.
pub struct MlArchiveWriter {
    log: PathBuf,
    manifest_path: PathBuf,
    manifest: MlArchiveManifest,
}

impl MlArchiveWriter {
    /// Opens (creating) node `node_id`'s archive of `keyspace` and returns
    /// the records it already holds (checked).
    pub fn open(
        repo: &Repository,
        keyspace: &str,
        node_id: u64,
    ) -> Result<(MlArchiveWriter, Vec<MlEntry>), BackupError> {
        let dir = ml_root(repo).join(keyspace);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let log = dir.join(format!("node-{node_id}.log"));
        let manifest_path = dir.join(format!("node-{node_id}.json"));
        let (manifest, entries) = if manifest_path.exists() {
            let m: MlArchiveManifest = read_manifest(&manifest_path)?;
            let entries = read_stream(&log, &m)?;
            (m, entries)
        } else {
            let m = MlArchiveManifest {
                keyspace: keyspace.to_string(),
                node_id,
                bytes: 0,
                crc32c: 0,
                records: 0,
                last_hlc_ms: 0,
            };
            (m, Vec::new())
        };
        Ok((MlArchiveWriter { log, manifest_path, manifest }, entries))
    }

    /// Appends encoded records (`u32 len | u32 crc32c | payload` each),
    /// fsyncs them, then publishes the manifest that covers them.
    pub fn append(&mut self, records: &[u8]) -> Result<(), BackupError> {
        if records.is_empty() {
            return Ok(());
        }
        let (payloads, _) = parse(&self.log, records)?;
        let mut last_hlc_ms = self.manifest.last_hlc_ms;
        for (off, p) in &payloads {
            let e = decode(&self.log, self.manifest.bytes + *off as u64, p)?;
            last_hlc_ms = last_hlc_ms.max(e.hlc.physical_ms);
        }
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.log)
            .map_err(io_err("open", &self.log))?;
        // Cut a tail an earlier pass wrote but never published.
        f.set_len(self.manifest.bytes).map_err(io_err("truncate", &self.log))?;
        f.seek(SeekFrom::End(0)).map_err(io_err("seek", &self.log))?;
        f.write_all(records).map_err(io_err("write", &self.log))?;
        f.sync_all().map_err(io_err("fsync", &self.log))?;
        if self.manifest.bytes == 0 {
            sync_dir(self.log.parent().unwrap_or(Path::new(".")))?;
        }
        let mut next = self.manifest.clone();
        next.bytes += records.len() as u64;
        next.crc32c = crc32c::crc32c_append(next.crc32c, records);
        next.records += payloads.len() as u64;
        next.last_hlc_ms = last_hlc_ms;
        write_manifest(&self.manifest_path, &next)?;
        self.manifest = next;
        Ok(())
    }

    /// What is published.
    pub fn manifest(&self) -> &MlArchiveManifest {
        &self.manifest
    }
}

/// Reads and checks the records a manifest covers.
pub fn read_stream(path: &Path, m: &MlArchiveManifest) -> Result<Vec<MlEntry>, BackupError> {
    if m.bytes > ML_ARCHIVE_FILE_BYTES_MAX {
        return Err(corrupt(path, 0, format!("{} bytes exceed ML_ARCHIVE_FILE_BYTES_MAX", m.bytes)));
    }
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && m.bytes == 0 => Vec::new(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::Missing { path: path.into(), reason: "listed by its manifest".into() })
        }
        Err(e) => return Err(io_err("read", path)(e)),
    };
    if (bytes.len() as u64) < m.bytes {
        return Err(corrupt(
            path,
            bytes.len() as u64,
            format!("file is shorter than the {} bytes its manifest names", m.bytes),
        ));
    }
    let bytes = &bytes[..m.bytes as usize];
    let crc = crc32c::crc32c(bytes);
    if crc != m.crc32c {
        return Err(corrupt(path, 0, format!("crc32c 0x{crc:08x}, the manifest says 0x{:08x}", m.crc32c)));
    }
    let (payloads, end) = parse(path, bytes)?;
    if end != bytes.len() {
        return Err(corrupt(path, end as u64, "a record is cut short inside the published bytes"));
    }
    payloads.iter().map(|(off, p)| decode(path, *off as u64, p)).collect()
}

/// Payloads with their offsets, and the length of the complete prefix.
type Parsed<'a> = (Vec<(usize, &'a [u8])>, usize);

/// Splits records into payloads (with their offsets), checking each crc;
/// returns the length of the complete prefix.
fn parse<'a>(path: &Path, bytes: &'a [u8]) -> Result<Parsed<'a>, BackupError> {
    let mut out = Vec::new();
    let mut off = 0;
    while bytes.len() - off >= HEADER_BYTES {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[off + 4..off + 8].try_into().expect("4 bytes"));
        if len > ML_RECORD_BYTES_MAX {
            return Err(corrupt(path, off as u64, "record length past ML_RECORD_BYTES_MAX"));
        }
        let end = off + HEADER_BYTES + len;
        if end > bytes.len() {
            break;
        }
        let payload = &bytes[off + HEADER_BYTES..end];
        if crc32c::crc32c(payload) != crc {
            return Err(corrupt(path, off as u64, "record checksum mismatch"));
        }
        out.push((off, payload));
        off = end;
    }
    Ok((out, off))
}

fn decode(path: &Path, offset: u64, payload: &[u8]) -> Result<MlEntry, BackupError> {
    postcard::from_bytes(payload).map_err(|e| corrupt(path, offset, format!("not a multi-leader record: {e}")))
}

/// Encodes one record in the log format.
pub fn encode_record(entry: &MlEntry, out: &mut Vec<u8>) {
    let payload = postcard::to_allocvec(entry).expect("an entry always encodes");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Every node's archive of every multi-leader keyspace: keyspace → (node
/// id → (log path, manifest)).
pub type MlStreams = BTreeMap<String, BTreeMap<u64, (PathBuf, MlArchiveManifest)>>;

/// Lists the archived multi-leader keyspaces (manifests checked).
pub fn list_ml_streams(repo: &Repository) -> Result<MlStreams, BackupError> {
    let mut out = MlStreams::new();
    for ks in dir_entries(&ml_root(repo))? {
        let Some(name) = ks.file_name().to_str().map(str::to_string) else { continue };
        if !ks.path().is_dir() {
            continue;
        }
        let mut nodes = BTreeMap::new();
        for f in dir_entries(&ks.path())? {
            let fname = f.file_name().to_string_lossy().into_owned();
            let Some(id) =
                fname.strip_prefix("node-").and_then(|s| s.strip_suffix(".json")).and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            let m: MlArchiveManifest = read_manifest(&f.path())?;
            nodes.insert(id, (ks.path().join(format!("node-{id}.log")), m));
        }
        out.insert(name, nodes);
    }
    Ok(out)
}

/// What a restore kept of one multi-leader keyspace.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct MlRestoredKeyspace {
    /// The keyspace.
    pub keyspace: String,
    /// Records kept (distinct writes).
    pub records: u64,
    /// Records of the archive past the target (not restored).
    pub skipped_after_target: u64,
    /// Writes kept per origin (the restored version vector).
    pub origins: BTreeMap<u64, u64>,
    /// The newest HLC physical ms kept.
    pub last_hlc_ms: u64,
    /// The nodes whose archives were read.
    pub from_nodes: Vec<u64>,
    /// The restored log, in log format (not serialized into the report).
    #[serde(skip)]
    pub log: Vec<u8>,
}

/// Builds the restored log of every archived multi-leader keyspace:
/// records with HLC physical ms `<= cutoff_ms` (None: all).
pub fn restore_ml(streams: &MlStreams, cutoff_ms: Option<u64>) -> Result<Vec<MlRestoredKeyspace>, BackupError> {
    let mut out = Vec::new();
    for (keyspace, nodes) in streams {
        let mut seen = BTreeSet::new();
        let mut kept = Vec::new();
        let mut skipped = BTreeSet::new();
        for (path, m) in nodes.values() {
            for e in read_stream(path, m)? {
                if cutoff_ms.is_some_and(|t| e.hlc.physical_ms > t) {
                    skipped.insert((e.origin, e.seq));
                    continue;
                }
                if seen.insert((e.origin, e.seq)) {
                    kept.push(e);
                }
            }
        }
        kept.sort_by(|a, b| a.hlc.cmp(&b.hlc).then(a.origin.cmp(&b.origin)).then(a.seq.cmp(&b.seq)));
        let mut origins = BTreeMap::new();
        let mut log = Vec::new();
        let mut last_hlc_ms = 0;
        for e in &kept {
            let n: &mut u64 = origins.entry(e.origin).or_default();
            *n = (*n).max(e.seq);
            last_hlc_ms = last_hlc_ms.max(e.hlc.physical_ms);
            encode_record(e, &mut log);
        }
        out.push(MlRestoredKeyspace {
            keyspace: keyspace.clone(),
            records: kept.len() as u64,
            skipped_after_target: skipped.len() as u64,
            origins,
            last_hlc_ms,
            from_nodes: nodes.keys().copied().collect(),
            log,
        });
    }
    Ok(out)
}

/// Writes each restored keyspace's log into `dir/keyspaces/<name>/`.
pub fn write_ml(restored: &[MlRestoredKeyspace], dir: &Path) -> Result<(), BackupError> {
    if restored.is_empty() {
        return Ok(());
    }
    let root = dir.join("keyspaces");
    for k in restored {
        let d = root.join(&k.keyspace);
        fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        write_atomic(&d.join(ML_LOG_FILE), &k.log)?;
        sync_dir(&d)?;
    }
    sync_dir(&root)
}
