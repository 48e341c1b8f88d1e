//! Durable Raft state of the control plane under `<data_dir>/control/`.
//!
//! Owns three files:
//! - `vote.json`: the last vote, replaced atomically (write, fsync, rename,
//!   fsync the directory) before `save_vote` returns.
//! - `raft.log`: an append-only record file (`u32 len | u32 crc32c |
//!   postcard record`); appends, truncations and purges are records, fsynced
//!   before openraft's flush callback is called. A purge rewrites the file
//!   with only the live entries.
//! - `state.json`: the applied state machine (cluster map, last applied log
//!   id, membership), replaced atomically after every applied batch. Snapshots
//!   are built from it on demand and kept in memory only: after a restart
//!   the persisted state is itself the snapshot.
//!
//! Every write happens inline, under the store's lock, in call order, so a
//! vote and a log append are never reordered. This file must never decide
//! anything about the map: applying a command is `map.rs`'s job.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{Cursor, Read, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    Entry, EntryPayload, LogId, LogState, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tandem_core::repl::NodeId;
use tokio::sync::watch;

use super::map::{ClusterMap, ControlResp, MemberInfo};
use super::TypeConfig;

/// Largest record accepted in `raft.log` (a control entry is a few hundred
/// bytes; a membership entry grows with the member count).
const LOG_RECORD_BYTES_MAX: usize = 16 << 20;
/// Record header: length and checksum.
const RECORD_HEADER_BYTES: usize = 8;
const LOG_FILE: &str = "raft.log";
const VOTE_FILE: &str = "vote.json";
const STATE_FILE: &str = "state.json";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

/// One record of `raft.log`.
#[derive(Debug, Serialize, Deserialize)]
enum LogRecord {
    /// Entries appended (consecutive).
    Append(Vec<Entry<TypeConfig>>),
    /// Entries from this index on were removed (a conflict with the leader).
    Truncate(u64),
    /// Entries up to this log id were removed (covered by the state machine).
    Purge(LogId<NodeId>),
}

/// The in-memory copy of the log and vote, with the open log file.
struct LogInner {
    dir: PathBuf,
    file: File,
    vote: Option<Vote<NodeId>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    purged: Option<LogId<NodeId>>,
    committed: Option<LogId<NodeId>>,
}

/// The Raft log and vote. Clones share the same state (a clone is the log
/// reader openraft hands to its replication tasks).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
    committed_index: Arc<AtomicU64>,
}

fn io_err(what: &str, path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what} {}: {e}", path.display()))
}

/// Writes `bytes` to `dir/name` atomically and durably.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let mut f = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| io_err("write", &tmp, e))?;
    f.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_err("rename to", &path, e))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err("fsync directory", dir, e))
}

fn encode_record(rec: &LogRecord, out: &mut Vec<u8>) {
    let body = postcard::to_allocvec(rec).expect("encoding into a Vec cannot fail");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Reads every record of the log file. A torn tail (an incomplete or
/// mis-checksummed last record) is cut off; damage before the tail is an
/// error naming the file and offset.
fn read_records(path: &Path) -> std::io::Result<(Vec<LogRecord>, u64)> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(|e| io_err("read", path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io_err("open", path, e)),
    };
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let torn = |why: &str| {
            tracing::warn!(file = %path.display(), offset = at, why, "control log: torn tail cut");
        };
        if rest.len() < RECORD_HEADER_BYTES {
            torn("incomplete header");
            break;
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > LOG_RECORD_BYTES_MAX {
            return Err(io_err("corrupt record length", path, format!("{len} bytes at offset {at}")));
        }
        if rest.len() < RECORD_HEADER_BYTES + len {
            torn("incomplete record");
            break;
        }
        let body = &rest[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len];
        let is_last = rest.len() == RECORD_HEADER_BYTES + len;
        if crc32c::crc32c(body) != crc {
            if is_last {
                torn("bad checksum on the last record");
                break;
            }
            return Err(io_err("bad checksum", path, format!("record at offset {at}")));
        }
        let rec = postcard::from_bytes(body)
            .map_err(|e| io_err("undecodable record", path, format!("at offset {at}: {e}")))?;
        records.push(rec);
        at += RECORD_HEADER_BYTES + len;
    }
    Ok((records, at as u64))
}

impl LogStore {
    /// Opens (or creates) the log and vote in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<LogStore> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let vote_path = dir.join(VOTE_FILE);
        let vote = match std::fs::read(&vote_path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| io_err("parse", &vote_path, e))?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &vote_path, e)),
        };
        let log_path = dir.join(LOG_FILE);
        let (records, good_len) = read_records(&log_path)?;
        let mut entries = BTreeMap::new();
        let mut purged = None;
        for rec in records {
            match rec {
                LogRecord::Append(es) => entries.extend(es.into_iter().map(|e| (e.log_id.index, e))),
                LogRecord::Truncate(index) => drop(entries.split_off(&index)),
                LogRecord::Purge(log_id) => {
                    entries = entries.split_off(&(log_id.index + 1));
                    purged = Some(log_id);
                }
            }
        }
        let file =
            OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| io_err("open", &log_path, e))?;
        file.set_len(good_len).map_err(|e| io_err("cut the torn tail of", &log_path, e))?;
        Ok(LogStore {
            inner: Arc::new(Mutex::new(LogInner {
                dir: dir.to_path_buf(),
                file,
                vote,
                entries,
                purged,
                committed: None,
            })),
            committed_index: Arc::new(AtomicU64::new(0)),
        })
    }

    /// True if nothing was ever stored (no vote, no entry, no purge): a
    /// fresh node that may initialize the group.
    pub fn is_pristine(&self) -> bool {
        let inner = self.inner.lock();
        inner.vote.is_none() && inner.entries.is_empty() && inner.purged.is_none()
    }

    /// The last committed index this node knows (0 if none), for status.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }
}

impl LogInner {
    fn write_record(&mut self, rec: &LogRecord) -> std::io::Result<()> {
        let mut out = Vec::new();
        encode_record(rec, &mut out);
        let path = self.dir.join(LOG_FILE);
        self.file.write_all(&out).map_err(|e| io_err("append to", &path, e))?;
        self.file.sync_data().map_err(|e| io_err("fsync", &path, e))
    }

    /// Rewrites the log file with only the live entries (after a purge).
    fn rewrite(&mut self) -> std::io::Result<()> {
        let mut out = Vec::new();
        if let Some(p) = self.purged {
            encode_record(&LogRecord::Purge(p), &mut out);
        }
        if !self.entries.is_empty() {
            encode_record(&LogRecord::Append(self.entries.values().cloned().collect()), &mut out);
        }
        write_atomic(&self.dir, LOG_FILE, &out)?;
        let path = self.dir.join(LOG_FILE);
        self.file = OpenOptions::new().append(true).open(&path).map_err(|e| io_err("reopen", &path, e))?;
        Ok(())
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        Ok(self.inner.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let inner = self.inner.lock();
        let last = inner.entries.values().next_back().map(|e| e.log_id).or(inner.purged);
        Ok(LogState { last_purged_log_id: inner.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        let bytes = serde_json::to_vec(vote).expect("a vote serializes");
        write_atomic(&inner.dir, VOTE_FILE, &bytes).map_err(|e| StorageIOError::write_vote(&e))?;
        inner.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.inner.lock().committed = committed;
        self.committed_index.store(committed.map_or(0, |c| c.index), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let mut inner = self.inner.lock();
        // Durable before the callback: openraft counts this node's vote for
        // these entries only after it.
        let written = inner.write_record(&LogRecord::Append(entries.clone()));
        if let Err(e) = &written {
            tracing::error!(error = %e, "control log append failed");
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(StorageIOError::write_logs(e).into());
        }
        inner.entries.extend(entries.into_iter().map(|e| (e.log_id.index, e)));
        drop(inner);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        inner.write_record(&LogRecord::Truncate(log_id.index)).map_err(|e| StorageIOError::write_logs(&e))?;
        inner.entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut inner = self.inner.lock();
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        inner.purged = Some(log_id);
        inner.rewrite().map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

/// The applied state: what `state.json` and every snapshot hold.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmState {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    map: ClusterMap,
}

struct SmInner {
    dir: PathBuf,
    state: SmState,
    map_tx: watch::Sender<ClusterMap>,
    snapshots_built: u64,
    /// The last snapshot built or installed (meta and bytes), served again
    /// by `get_current_snapshot` until a newer one replaces it.
    current: Option<(SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>)>,
}

/// The state machine: the cluster map, persisted after every apply. Clones
/// share the same state (a clone is the snapshot builder).
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<SmInner>>,
}

/// The members of a Raft membership as cluster-map members (voters only:
/// a learner that is catching up is not a member yet).
fn members_of(m: &openraft::Membership<NodeId, openraft::BasicNode>) -> BTreeMap<NodeId, MemberInfo> {
    m.voter_ids()
        .filter_map(|id| {
            let node = m.get_node(&id)?;
            match node.addr.parse() {
                Ok(peer_addr) => Some((id, MemberInfo { peer_addr })),
                Err(e) => {
                    tracing::error!(id, addr = node.addr.as_str(), error = %e, "member with an unparsable address");
                    None
                }
            }
        })
        .collect()
}

impl StateMachineStore {
    /// Opens (or creates) the applied state in `dir`; the returned receiver
    /// sees the map after every apply.
    pub fn open(dir: &Path) -> std::io::Result<(StateMachineStore, watch::Receiver<ClusterMap>)> {
        std::fs::create_dir_all(dir).map_err(|e| io_err("create", dir, e))?;
        let path = dir.join(STATE_FILE);
        let state: SmState = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io_err("parse", &path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SmState::default(),
            Err(e) => return Err(io_err("read", &path, e)),
        };
        let (map_tx, map_rx) = watch::channel(state.map.clone());
        let inner = SmInner { dir: dir.to_path_buf(), state, map_tx, snapshots_built: 0, current: None };
        Ok((StateMachineStore { inner: Arc::new(Mutex::new(inner)) }, map_rx))
    }
}

impl SmInner {
    fn persist(&self) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.state).expect("the state serializes");
        write_atomic(&self.dir, STATE_FILE, &bytes)
    }

    fn snapshot(&mut self) -> Snapshot<TypeConfig> {
        self.snapshots_built += 1;
        let data = serde_json::to_vec(&self.state).expect("the state serializes");
        let last = self.state.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.state.membership.clone(),
            snapshot_id: format!("{}-{}", last.map_or(0, |l| l.index), self.snapshots_built),
        };
        self.current = Some((meta.clone(), data.clone()));
        Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        Ok(self.inner.lock().snapshot())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>)> {
        let inner = self.inner.lock();
        Ok((inner.state.last_applied, inner.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<ControlResp>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut inner = self.inner.lock();
        let mut replies = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            inner.state.last_applied = Some(entry.log_id);
            let reply = match &entry.payload {
                EntryPayload::Blank => ControlResp::Applied(inner.state.map.clone()),
                EntryPayload::Normal(cmd) => inner.state.map.apply(index, cmd),
                EntryPayload::Membership(m) => {
                    inner.state.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    inner.state.map.set_members(index, members_of(m));
                    ControlResp::Applied(inner.state.map.clone())
                }
            };
            replies.push(reply);
        }
        inner.persist().map_err(|e| StorageIOError::write_state_machine(&e))?;
        let map = inner.state.map.clone();
        inner.map_tx.send_replace(map);
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let state: SmState = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut inner = self.inner.lock();
        inner.state = state;
        inner.current = Some((meta.clone(), snapshot.get_ref().clone()));
        inner.persist().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let map = inner.state.map.clone();
        inner.map_tx.send_replace(map);
        tracing::info!(last = ?meta.last_log_id, "control plane installed a snapshot of the cluster map");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let mut inner = self.inner.lock();
        if let Some((meta, data)) = &inner.current {
            return Ok(Some(Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) }));
        }
        // After a restart nothing was built yet: the persisted state is a
        // valid snapshot at its last applied entry.
        if inner.state.last_applied.is_none() {
            return Ok(None);
        }
        Ok(Some(inner.snapshot()))
    }
}
