//! The node's database: the keyspace state, the log it is made durable in,
//! and the one path every change takes.
//!
//! Owns: the `Store` behind a lock, LSN assignment, appending each write's
//! row effects to the log *while holding the lock* (so log order is apply
//! order), the durable-LSN watch that acknowledgements wait on, recovery at
//! start (snapshot + log replay), snapshots and log truncation.
//!
//! Must never: release an acknowledgement itself (the connection waits on
//! [`Db::wait_durable`]), or apply an effect that is not also appended to the
//! log.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tandem_core::command::tx::WatchTable;
use tandem_core::command::{Handler, ReadCtx};
use tandem_core::effect::{Effect, LogEntry};
use tandem_core::failover::EpochHistory;
use tandem_core::resp::Frame;
use tandem_core::store::{Store, BUCKETS, CHUNK_BYTES_MAX};
use tandem_core::write::{Batch, ENTRY_PAYLOAD_BYTES_MAX};
use tandem_core::{Epoch, Lsn};
use tandem_storage::log::{FsyncPolicy, Log, LogConfig, RECORD_PAYLOAD_BYTES_MAX};
use tandem_storage::snapshot;
use tokio::sync::watch;

use tandem_core::repl::{AckError, WireEntry};
use tandem_core::replica::Refusal;

use crate::backlog::Backlog;
use crate::config::Config;
use crate::metrics::Metrics;

/// Why the node could not start or continue.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The storage layer failed (I/O, corruption).
    #[error(transparent)]
    Storage(#[from] tandem_storage::StorageError),
    /// A log entry or snapshot chunk could not be decoded.
    #[error("{0}")]
    Decode(String),
}

/// True if the command in `args` may grow memory (Redis's `denyoom`
/// flag): refused with -OOM while the store is over `maxmemory`.
fn denies_oom(args: &[Bytes]) -> bool {
    args.first()
        .and_then(|name| tandem_core::command::lookup(name))
        .is_some_and(|spec| spec.flags.contains(tandem_core::command::Flags::DENYOOM))
}

/// Wall-clock time in unix milliseconds. The only clock the data path reads.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// An entry larger than this moves its encode buffer into the backlog
/// instead of copying it, and the node starts a new small buffer (a large
/// write must not pin its size in memory for the node's lifetime).
const PAYLOAD_BUFFER_KEEP_BYTES: usize = 1 << 20;

// One write's budget must fit one log record, and every snapshot chunk one
// snapshot file chunk and one peer frame (with the message's framing).
const _: () = assert!(ENTRY_PAYLOAD_BYTES_MAX <= RECORD_PAYLOAD_BYTES_MAX);
const _: () = assert!(CHUNK_BYTES_MAX <= snapshot::SNAPSHOT_CHUNK_BYTES_MAX);
const _: () = assert!(CHUNK_BYTES_MAX + 1024 <= tandem_core::repl::msg::PEER_FRAME_BYTES_MAX);

/// A write (or replicated batch) with more argument bytes than this is
/// executed on a blocking thread, never on the event loop; a larger frame
/// is encoded there too (decision 0028).
pub const LARGE_WRITE_BYTES: usize = 1 << 20;

/// Longest the event loop waits for the state lock ([`Db::try_execute`]):
/// a large write or replicated apply holds it for seconds, and a loop
/// blocked that long stops renewing the leader lease (decision 0028).
/// Past this the command runs on a blocking thread instead.
pub const LOOP_LOCK_WAIT: Duration = Duration::from_millis(5);

/// Monotonic milliseconds since the process started (never 0). Leases are
/// measured with this clock only: a wall clock can jump.
pub fn mono_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// File in the data directory that holds the epoch history, one
/// `epoch first_lsn` pair per line.
pub const EPOCH_HISTORY_FILE: &str = "epochs";

/// Reads the epoch history file; a missing file is an empty history.
fn read_history(path: &Path) -> Result<EpochHistory, DbError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(EpochHistory::default()),
        Err(e) => return Err(DbError::Storage(tandem_storage::StorageError::io(path, "read epoch history", e))),
    };
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace().map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next()) {
            (Some(Ok(e)), Some(Ok(l)), None) => pairs.push((e, l)),
            _ => {
                return Err(DbError::Decode(format!(
                    "{} line {}: expected 'epoch first_lsn', got {line:?}",
                    path.display(),
                    n + 1
                )))
            }
        }
    }
    Ok(EpochHistory::from_pairs(pairs))
}

/// Writes the epoch history atomically (temp file, fsync, rename).
fn write_history(path: &Path, history: &EpochHistory) -> Result<(), DbError> {
    let text: String = history.pairs().iter().map(|(e, l)| format!("{e} {l}\n")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| DbError::Storage(tandem_storage::StorageError::io(path, "write epoch history", e)))
}

/// State guarded by the database lock.
pub struct State {
    /// The keyspace.
    pub store: Store,
    /// LSN of the last entry applied (and appended).
    pub last_lsn: Lsn,
    /// Current epoch.
    pub epoch: Epoch,
    /// Commit time of the last entry; commit times never go backwards even
    /// if the wall clock does.
    pub last_commit_ms: u64,
    /// Where each epoch starts in the log (persisted in `<data>/epochs`).
    pub history: EpochHistory,
    /// Reused encode buffer.
    payload: Vec<u8>,
    /// The write in progress: effects, undo records, size budget (reused).
    batch: Batch,
}

/// What a snapshot did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotReport {
    /// Replay starts after this LSN.
    pub start_lsn: Lsn,
    /// The log is durable to at least this LSN.
    pub end_lsn: Lsn,
    /// Commit time of `end_lsn` (unix ms).
    pub end_commit_ms: u64,
    /// Keys written (approximate under concurrent writes).
    pub keys: usize,
    /// Bytes on disk.
    pub bytes: u64,
    /// Log segments deleted behind it.
    pub segments_removed: u64,
    /// How long it took.
    pub elapsed_ms: u64,
}

/// The database of one node.
pub struct Db {
    state: RwLock<State>,
    log: Log,
    durable: watch::Receiver<Lsn>,
    /// Durability waiters hand their entries to the OS (and under `batch`
    /// fsync them) on their own thread instead of waking the log writer:
    /// `everysec` / `never` always, `batch` on a standalone node (see
    /// `Log::set_inline_commit`).
    commit_inline: bool,
    /// Set once the log is poisoned, so durability waiters wake up and fail
    /// instead of waiting for an LSN that will never come.
    failed_tx: watch::Sender<bool>,
    snapshot_dir: PathBuf,
    /// Serialises snapshots.
    snapshot_lock: Mutex<()>,
    /// LSN covered by the newest snapshot.
    snapshot_lsn: AtomicU64,
    /// Unix ms of the newest snapshot.
    snapshot_unix_ms: AtomicU64,
    metrics: Arc<Metrics>,
    /// Recent entries for replication.
    backlog: Mutex<Backlog>,
    /// Last applied LSN (on a leader: last appended), for `WAITLSN` and the
    /// replication driver.
    applied_tx: watch::Sender<Lsn>,
    /// Where the epoch is persisted.
    epoch_path: PathBuf,
    /// Where the epoch history is persisted.
    history_path: PathBuf,
    /// Switchover: no write may commit while set (checked under the lock).
    writes_stopped: std::sync::atomic::AtomicBool,
    /// Snapshots never truncate the log at or past this LSN (the first
    /// entry the log archive still needs); `u64::MAX`: no archive.
    archive_floor: AtomicU64,
    /// `WATCH`ed keys; every committed, replicated or installed change is
    /// fed to it (under the state lock) so a watcher's `EXEC` can abort.
    watches: Mutex<WatchTable>,
    /// Bumped when a committed entry pushed to a list or added to a sorted
    /// set: wakes clients blocked in `BLPOP`, `BZPOPMIN` and friends (they
    /// retry; no polling).
    lists_changed: watch::Sender<u64>,
    /// Clients blocked right now (bounded by [`BLOCKED_CLIENTS_MAX`]).
    blocked: AtomicU64,
    /// `maxmemory`: the limit and policy in force.
    memory: crate::maxmemory::MemoryLimit,
    /// Mirrors of `State::epoch` and `State::last_lsn` (stored under the
    /// state lock when they change), so lease renewals and replication
    /// read them without waiting for a large write that holds the lock.
    epoch_now: AtomicU64,
    last_lsn_now: AtomicU64,
    /// Mirror of the epoch of the last log entry (failover reports).
    last_entry_epoch_now: AtomicU64,
}

/// Most clients that may block in `BLPOP`/`BRPOP`/`BLMOVE`/`BLMPOP` at
/// once; past it a blocking command that would wait answers an error.
pub const BLOCKED_CLIENTS_MAX: u64 = 10_000;

/// A blocked client's slot; frees it when dropped.
pub struct BlockedSlot<'a>(&'a AtomicU64);

impl Drop for BlockedSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a transaction's `EXEC` did.
pub enum TxOutcome {
    /// A watched key changed (or expired): nothing ran.
    Aborted,
    /// The node refuses writes now, or the transaction's effects exceed
    /// one write's budget (the error says why): nothing changed and nothing
    /// was logged.
    Refused(Frame),
    /// Every command ran, in order, as one log entry (`Some(lsn)` if it
    /// changed anything). `None` replies are node commands for the caller
    /// to run.
    Done(Vec<Option<Frame>>, Option<Lsn>),
}

/// What recovery found and did, for the startup log line.
#[derive(Debug)]
pub struct RecoveryReport {
    /// Snapshot loaded (its start LSN), if any.
    pub snapshot_lsn: Option<Lsn>,
    /// Keys loaded from the snapshot.
    pub snapshot_keys: usize,
    /// Log entries replayed after it.
    pub replayed: u64,
    /// Last LSN after recovery.
    pub last_lsn: Lsn,
    /// How long recovery took.
    pub elapsed: Duration,
}

impl Db {
    /// Recovers the state from `config.data_dir` (newest valid snapshot, then
    /// log replay) and opens the log for appends.
    pub fn open(config: &Config, hash_seed: u64, metrics: Arc<Metrics>) -> Result<(Db, RecoveryReport), DbError> {
        let started = Instant::now();
        let log_dir = config.data_dir.join("log");
        let snapshot_dir = config.data_dir.join("snapshots");
        std::fs::create_dir_all(&log_dir).map_err(|e| io_err(&log_dir, e))?;
        std::fs::create_dir_all(&snapshot_dir).map_err(|e| io_err(&snapshot_dir, e))?;

        // A crash while a snapshot was being written leaves a temp file.
        snapshot::remove_temp_files(&snapshot_dir)?;
        let mut store = Store::new(hash_seed);
        let mut snapshot_lsn = None;
        let mut snapshot_unix_ms = 0;
        if let Some(reader) = snapshot::latest_valid(&snapshot_dir)? {
            let meta = reader.meta();
            snapshot_lsn = Some(meta.start_lsn);
            snapshot_unix_ms = meta.created_unix_ms;
            let mut decode_error = None;
            reader.for_each_chunk(|chunk| {
                store.load_chunk(chunk).map(|_| ()).map_err(|e| {
                    decode_error = Some(e.to_string());
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
                })
            })?;
            if let Some(e) = decode_error {
                return Err(DbError::Decode(e));
            }
        }
        let snapshot_keys = store.len();

        let recovery = tandem_storage::log::recover(&log_dir)?;
        let from = snapshot_lsn.unwrap_or(0) + 1;
        let mut last_lsn = snapshot_lsn.unwrap_or(0);
        let mut epoch = 1;
        let mut last_commit_ms = 0;
        let mut replayed = 0u64;
        let history_path = config.data_dir.join(EPOCH_HISTORY_FILE);
        let mut history = read_history(&history_path)?;
        recovery.replay(from, |lsn, entry_epoch, payload| {
            history.record(entry_epoch, lsn);
            let entry = LogEntry::decode_payload(lsn, entry_epoch, payload)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("log entry {lsn}: {e}")))?;
            for effect in &entry.effects {
                store.apply(effect);
            }
            last_lsn = lsn;
            epoch = entry_epoch;
            last_commit_ms = entry.commit_ms;
            replayed += 1;
            Ok::<(), std::io::Error>(())
        })?;
        if recovery.last_lsn() > last_lsn {
            last_lsn = recovery.last_lsn();
        }
        if recovery.first_lsn() > from {
            return Err(DbError::Decode(format!(
                "the log in {} starts at LSN {} but the snapshot needs it from LSN {from}: log segments are missing",
                log_dir.display(),
                recovery.first_lsn()
            )));
        }

        // The epoch survives restarts even when no entry carries it yet.
        let epoch_path = config.data_dir.join("epoch");
        if let Ok(text) = std::fs::read_to_string(&epoch_path) {
            let stored: Epoch = text.trim().parse().map_err(|_| {
                DbError::Decode(format!("{} does not hold an epoch number: {text:?}", epoch_path.display()))
            })?;
            epoch = epoch.max(stored);
        }
        let (durable_tx, durable_rx) = watch::channel(last_lsn);
        let fsync_metrics = metrics.clone();
        let log = Log::open(
            LogConfig { dir: log_dir, fsync: config.fsync, segment_bytes_max: config.segment_bytes_max },
            &recovery,
            Box::new(move |lsn| {
                durable_tx.send_replace(lsn);
            }),
        )?;
        if log.last_lsn() < last_lsn {
            // The log ends before the snapshot (e.g. every segment was
            // truncated behind it): continue numbering after the snapshot.
            log.reset_to(last_lsn)?;
        }
        // A standalone node commits on its event loop like Redis; a leader
        // keeps fsyncs on the writer thread so that entries reach followers
        // while its own fsync runs.
        let standalone_batch =
            config.fsync == FsyncPolicy::Batch && config.members.is_empty() && config.io_threads <= 1;
        log.set_inline_commit(standalone_batch);
        let commit_inline = standalone_batch || matches!(config.fsync, FsyncPolicy::EverySec | FsyncPolicy::Never);
        log.set_fsync_observer(Box::new(move |elapsed| {
            fsync_metrics.fsyncs.inc();
            fsync_metrics.fsync_seconds.observe(elapsed.as_secs_f64());
        }));
        let last_entry_epoch = history.last_epoch(last_lsn);
        let db = Db {
            state: RwLock::new(State {
                store,
                last_lsn,
                epoch,
                last_commit_ms,
                history,
                payload: Vec::with_capacity(4096),
                batch: Batch::new(config.limits.entry_bytes_max),
            }),
            log,
            durable: durable_rx,
            failed_tx: watch::channel(false).0,
            commit_inline,
            snapshot_dir,
            snapshot_lock: Mutex::new(()),
            snapshot_lsn: AtomicU64::new(snapshot_lsn.unwrap_or(0)),
            snapshot_unix_ms: AtomicU64::new(snapshot_unix_ms),
            metrics,
            backlog: Mutex::new(Backlog::new(if config.members.is_empty() {
                0
            } else {
                crate::backlog::BACKLOG_BYTES_MAX
            })),
            applied_tx: watch::channel(last_lsn).0,
            epoch_now: AtomicU64::new(epoch),
            last_lsn_now: AtomicU64::new(last_lsn),
            last_entry_epoch_now: AtomicU64::new(last_entry_epoch),
            epoch_path,
            history_path,
            writes_stopped: std::sync::atomic::AtomicBool::new(false),
            archive_floor: AtomicU64::new(u64::MAX),
            watches: Mutex::new(WatchTable::default()),
            lists_changed: watch::channel(0).0,
            blocked: AtomicU64::new(0),
            memory: crate::maxmemory::MemoryLimit::new(
                config.maxmemory,
                config.maxmemory_policy,
                config.maxmemory_samples,
                hash_seed.rotate_left(29) ^ 0x6d61_786d_656d,
            ),
        };
        let report = RecoveryReport { snapshot_lsn, snapshot_keys, replayed, last_lsn, elapsed: started.elapsed() };
        Ok((db, report))
    }

    /// Executes a data command. Returns the reply and, for a write that
    /// changed something, the LSN that must be durable before the reply is
    /// released.
    pub fn execute(&self, handler: Handler, args: &[Bytes]) -> (Frame, Option<Lsn>) {
        self.execute_waiting(handler, args, None).expect("an unbounded wait always gets the lock")
    }

    /// [`Self::execute`] for the event loop: waits at most
    /// [`LOOP_LOCK_WAIT`] for the state lock. `None`: a large write or
    /// apply holds it (nothing was done); run [`Self::execute`] on a
    /// blocking thread instead, so the loop (and the lease renewals on it)
    /// never waits seconds for the lock (decision 0028).
    pub fn try_execute(&self, handler: Handler, args: &[Bytes]) -> Option<(Frame, Option<Lsn>)> {
        self.execute_waiting(handler, args, Some(LOOP_LOCK_WAIT))
    }

    fn execute_waiting(
        &self,
        handler: Handler,
        args: &[Bytes],
        wait: Option<Duration>,
    ) -> Option<(Frame, Option<Lsn>)> {
        match handler {
            Handler::Read(f) => {
                let state = match wait {
                    None => self.state.read(),
                    Some(w) => self.state.try_read_for(w)?,
                };
                Some((f(&ReadCtx { store: &state.store, now_ms: unix_ms() }, args), None))
            }
            Handler::Write(f) => self.write_waiting(
                wait,
                || denies_oom(args),
                // All or nothing: a write over a limit is refused and undone
                // inside `execute`, before anything is logged.
                |store, batch, now_ms| Ok(tandem_core::write::execute(f, store, now_ms, args, batch)),
            ),
            Handler::Node => unreachable!("node commands are executed by the connection"),
        }
    }

    /// Runs `f` (a Lua script, `crate::scripting`) on the store and an empty
    /// write batch under the state write lock, like one write command:
    /// refused while the log failed or writes are stopped, `maxmemory`
    /// enforced first, and whatever effects `f` leaves in the batch are
    /// committed as ONE log entry (a failed script left none: it undid
    /// them itself). Returns the reply and the LSN to wait for.
    pub fn execute_script(&self, f: impl FnOnce(&mut Store, &mut Batch, u64) -> Frame) -> (Frame, Option<Lsn>) {
        self.write_with(
            || true,
            |store, batch, now_ms| {
                debug_assert!(batch.is_empty(), "a batch starts empty");
                let reply = f(store, batch, now_ms);
                if let Some(e) = batch.refusal() {
                    batch.rollback(store);
                    return Err(Frame::Error(e));
                }
                Ok(reply)
            },
        )
    }

    /// The one write path under the state write lock: refused while the
    /// log failed or writes are stopped, `maxmemory` enforced first (for
    /// commands `denyoom` says may grow memory), then `run` fills the batch
    /// at `now_ms`, and whatever effects it leaves are committed as ONE log
    /// entry. `Err` from `run` is a refusal that left nothing behind.
    fn write_with(
        &self,
        denyoom: impl FnOnce() -> bool,
        run: impl FnOnce(&mut Store, &mut Batch, u64) -> Result<Frame, Frame>,
    ) -> (Frame, Option<Lsn>) {
        self.write_waiting(None, denyoom, run).expect("an unbounded wait always gets the lock")
    }

    /// [`Self::write_with`], waiting at most `wait` for the state lock
    /// (`None`: it was not free in time, nothing was done).
    fn write_waiting(
        &self,
        wait: Option<Duration>,
        denyoom: impl FnOnce() -> bool,
        run: impl FnOnce(&mut Store, &mut Batch, u64) -> Result<Frame, Frame>,
    ) -> Option<(Frame, Option<Lsn>)> {
        if let Some(e) = self.log.failed() {
            return Some((Frame::Error(format!("MISCONF the log cannot be written, writes are refused: {e}")), None));
        }
        let mut state = match wait {
            None => self.state.write(),
            Some(w) => self.state.try_write_for(w)?,
        };
        if self.writes_stopped.load(Ordering::Acquire) {
            return Some((Refusal::Paused.to_resp(), None));
        }
        let now_ms = unix_ms().max(state.last_commit_ms);
        let state = &mut *state;
        if let Err(oom) = self.make_room(state, now_ms, denyoom) {
            return Some((Frame::Error(oom.into()), None));
        }
        let reply = match run(&mut state.store, &mut state.batch, now_ms) {
            Ok(reply) => reply,
            Err(refused) => return Some((refused, None)),
        };
        if state.batch.is_empty() {
            return Some((reply, None));
        }
        Some(match self.commit(state, now_ms) {
            Ok(lsn) => (reply, Some(lsn)),
            Err(e) => (Frame::Error(e), None),
        })
    }

    /// `WATCH`: `client` watches `keys`. Returns, per key, whether it was
    /// live (a key missing or expired now is "stale": its expiry cleanup
    /// does not abort the transaction, as in Redis).
    pub fn watch(&self, client: u64, keys: &[Bytes]) -> Vec<bool> {
        let state = self.state.read();
        let now_ms = unix_ms();
        let mut watches = self.watches.lock();
        keys.iter()
            .map(|k| {
                let live = state.store.get(k, now_ms).is_some();
                watches.watch(client, k.clone(), !live);
                live
            })
            .collect()
    }

    /// `UNWATCH` (also after `EXEC`/`DISCARD` and on disconnect).
    pub fn unwatch(&self, client: u64, keys: &[Bytes]) {
        self.watches.lock().unwatch(client, keys);
    }

    /// `EXEC`: runs `commands` in order under one lock, so no other write
    /// interleaves, and commits all their effects as ONE log entry (a
    /// follower or a restore applies all of it or none). Aborts without
    /// running anything if a key in `watched` (key, was live when
    /// watched) changed or expired since `WATCH`. Runs on one write batch
    /// (`tandem_core::write`): over the budget, the whole transaction is
    /// undone and refused.
    pub fn execute_tx(&self, client: u64, watched: &[(Bytes, bool)], commands: &[(Handler, &[Bytes])]) -> TxOutcome {
        let writes = commands.iter().any(|(h, _)| matches!(h, Handler::Write(_)));
        if writes {
            if let Some(e) = self.log.failed() {
                return TxOutcome::Refused(Frame::Error(format!(
                    "MISCONF the log cannot be written, writes are refused: {e}"
                )));
            }
        }
        let mut state = self.state.write();
        if writes && self.writes_stopped.load(Ordering::Acquire) {
            return TxOutcome::Refused(Refusal::Paused.to_resp());
        }
        let now_ms = unix_ms().max(state.last_commit_ms);
        let changed = self.watches.lock().is_dirty(client);
        let expired = watched.iter().any(|(k, live)| *live && state.store.get(k, now_ms).is_none());
        if changed || expired {
            return TxOutcome::Aborted;
        }
        // One batch for the whole transaction (see `tandem_core::write`):
        // each command runs into it without deciding; if any effect does not
        // fit, every effect already applied is undone and EXEC answers the
        // refusal alone, with nothing changed and nothing logged.
        let state = &mut *state;
        if writes {
            let deny = || commands.iter().any(|(h, args)| matches!(h, Handler::Write(_)) && denies_oom(args));
            if let Err(oom) = self.make_room(state, now_ms, deny) {
                return TxOutcome::Refused(Frame::Error(oom.into()));
            }
        }
        debug_assert!(state.batch.is_empty(), "a batch starts empty");
        let mut replies = Vec::with_capacity(commands.len());
        for (handler, args) in commands {
            replies.push(match handler {
                Handler::Read(f) => Some(f(&ReadCtx { store: &state.store, now_ms }, args)),
                Handler::Write(f) => {
                    let reply = tandem_core::write::run(*f, &mut state.store, now_ms, args, &mut state.batch);
                    if let Some(e) = state.batch.refusal() {
                        state.batch.rollback(&mut state.store);
                        return TxOutcome::Refused(Frame::Error(e));
                    }
                    Some(reply)
                }
                Handler::Node => None,
            });
        }
        let lsn = if state.batch.is_empty() {
            None
        } else {
            match self.commit(state, now_ms) {
                Ok(lsn) => Some(lsn),
                Err(e) => return TxOutcome::Refused(Frame::Error(e)),
            }
        };
        TxOutcome::Done(replies, lsn)
    }

    /// A receiver that changes whenever a committed entry pushed to a list.
    pub fn lists_changed(&self) -> watch::Receiver<u64> {
        self.lists_changed.subscribe()
    }

    /// Takes a blocked-client slot, or says why not.
    pub fn block_slot(&self) -> Result<BlockedSlot<'_>, String> {
        if self.blocked.fetch_add(1, Ordering::AcqRel) >= BLOCKED_CLIENTS_MAX {
            self.blocked.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "ERR too many blocked clients: at most {BLOCKED_CLIENTS_MAX} may wait at once (BLOCKED_CLIENTS_MAX)"
            ));
        }
        Ok(BlockedSlot(&self.blocked))
    }

    /// Clients blocked now.
    pub fn blocked_clients(&self) -> u64 {
        self.blocked.load(Ordering::Acquire)
    }

    /// Feeds changed keys to the watch table. Called with the state lock held.
    fn touch_watched(&self, effects: &[Effect]) {
        if effects.iter().any(|e| matches!(e, Effect::LPush { .. } | Effect::LReplace { .. } | Effect::ZAdd { .. })) {
            self.lists_changed.send_modify(|n| *n += 1);
        }
        let mut watches = self.watches.lock();
        if !watches.is_empty() {
            for e in effects {
                watches.touch(e);
            }
        }
    }

    /// Assigns the next LSN to the batch's effects (already applied to the
    /// store) and appends them to the log, or, if the encoded entry does not
    /// fit one log record, undoes them and returns the error for the client
    /// (the budget in `tandem_core::write` makes that unreachable; this is
    /// the backstop that keeps applying and logging together). Called with
    /// the state lock held.
    fn commit(&self, state: &mut State, now_ms: u64) -> Result<Lsn, String> {
        let lsn = state.last_lsn + 1;
        let entry = LogEntry { lsn, epoch: state.epoch, commit_ms: now_ms, effects: state.batch.take_effects() };
        let mut payload = std::mem::take(&mut state.payload);
        entry.encode_payload(&mut payload);
        state.batch.restore_effects(entry.effects);
        if payload.len() > RECORD_PAYLOAD_BYTES_MAX {
            let len = payload.len();
            payload.clear();
            state.payload = payload;
            state.batch.rollback(&mut state.store);
            return Err(format!(
                "ERR this write's log entry is {len} bytes, more than one log record carries \
                 ({RECORD_PAYLOAD_BYTES_MAX} bytes); nothing was changed"
            ));
        }
        // Only committed effects reach watchers and blocked pops.
        self.touch_watched(state.batch.effects());
        state.batch.commit();
        self.log.append(lsn, state.epoch, &payload);
        if payload.len() > PAYLOAD_BUFFER_KEEP_BYTES {
            // A large entry: hand the buffer itself to the backlog (no copy
            // of the value under the lock) and start a small one.
            self.backlog.lock().push(lsn, state.epoch, now_ms, Bytes::from(payload));
            payload = Vec::with_capacity(4096);
        } else {
            self.backlog.lock().push(lsn, state.epoch, now_ms, Bytes::copy_from_slice(&payload));
            if payload.capacity() > PAYLOAD_BUFFER_KEEP_BYTES {
                payload = Vec::with_capacity(4096);
            }
        }
        state.payload = payload;
        state.last_lsn = lsn;
        self.publish(state);
        state.last_commit_ms = now_ms;
        self.applied_tx.send_replace(lsn);
        Ok(lsn)
    }

    /// Applies entries received from the leader: appends each to the local
    /// log with its own LSN and epoch and applies its effects. The entries
    /// must follow the local log (the replication core checked that).
    /// Returns the last LSN and its commit time.
    pub fn apply_replicated(&self, entries: &[WireEntry]) -> Result<(Lsn, u64), String> {
        if let Some(e) = self.log.failed() {
            return Err(format!("the local log failed: {e}"));
        }
        // Decoding copies every value: done before the state lock is taken,
        // so a large batch holds the lock (which reads on the event loop
        // wait for) only to apply and log it (decision 0028).
        let mut decoded = Vec::with_capacity(entries.len());
        for wire in entries {
            if wire.payload.len() > RECORD_PAYLOAD_BYTES_MAX {
                // Checked before anything is applied: the local log could not
                // hold it, so the entry must not reach the store either.
                return Err(format!(
                    "entry {} is {} bytes, more than one log record carries ({RECORD_PAYLOAD_BYTES_MAX})",
                    wire.lsn,
                    wire.payload.len()
                ));
            }
            decoded.push(
                LogEntry::decode_payload(wire.lsn, wire.epoch, &wire.payload)
                    .map_err(|e| format!("entry {}: {e}", wire.lsn))?,
            );
        }
        let mut state = self.state.write();
        let mut last = (state.last_lsn, state.last_commit_ms);
        for (wire, entry) in entries.iter().zip(decoded) {
            if wire.lsn <= state.last_lsn {
                continue; // already have it (a resend after reconnect)
            }
            if wire.lsn != state.last_lsn + 1 {
                return Err(format!("entry {} does not follow local LSN {}", wire.lsn, state.last_lsn));
            }
            for effect in &entry.effects {
                state.store.apply(effect);
            }
            self.touch_watched(&entry.effects);
            self.log.append(wire.lsn, wire.epoch, &wire.payload);
            self.backlog.lock().push(wire.lsn, wire.epoch, entry.commit_ms, wire.payload.clone());
            state.last_lsn = wire.lsn;
            state.epoch = state.epoch.max(wire.epoch);
            self.publish(&state);
            state.last_commit_ms = state.last_commit_ms.max(entry.commit_ms);
            if state.history.epoch_at(wire.lsn) != Some(wire.epoch) {
                state.history.record(wire.epoch, wire.lsn);
                self.publish(&state);
                write_history(&self.history_path, &state.history).map_err(|e| e.to_string())?;
            }
            last = (wire.lsn, entry.commit_ms);
        }
        self.applied_tx.send_replace(state.last_lsn);
        Ok(last)
    }

    /// Replaces the whole state with `store`, which holds a leader's
    /// snapshot that is complete once entries after `start_lsn` are
    /// replayed. Persists it as a local snapshot first, so a crash at any
    /// point leaves either the old state or the new one. Blocking.
    pub fn install_snapshot(
        &self,
        store: Store,
        start_lsn: Lsn,
        epoch: Epoch,
        history: &EpochHistory,
    ) -> Result<(), DbError> {
        let _guard = self.snapshot_lock.lock();
        let mut writer = snapshot::SnapshotWriter::create(&self.snapshot_dir, start_lsn)?;
        for bucket in 0..BUCKETS {
            for chunk in store.encode_bucket_chunks(bucket, CHUNK_BYTES_MAX) {
                writer.write_chunk(&chunk)?;
            }
        }
        let created_unix_ms = unix_ms();
        writer.finish(start_lsn, created_unix_ms)?;
        let mut state = self.state.write();
        self.log.reset_to(start_lsn)?;
        self.backlog.lock().clear();
        state.store = store;
        self.touch_watched(&[Effect::FlushAll]);
        state.last_lsn = start_lsn;
        state.epoch = state.epoch.max(epoch);
        self.publish(&state);
        let mut adopted = history.clone();
        adopted.truncate_after(start_lsn);
        write_history(&self.history_path, &adopted)?;
        state.history = adopted;
        self.publish(&state);
        self.snapshot_lsn.store(start_lsn, Ordering::Relaxed);
        self.snapshot_unix_ms.store(created_unix_ms, Ordering::Relaxed);
        drop(state);
        snapshot::prune(&self.snapshot_dir, 1)?;
        self.applied_tx.send_replace(start_lsn);
        Ok(())
    }

    /// A fresh store with this node's hash seed, for a snapshot install.
    pub fn new_store(&self) -> Store {
        let (seed, limits) = self.with_state(|s| (s.store.hash_seed(), s.store.encoding_limits()));
        let mut store = Store::new(seed);
        store.set_encoding_limits(limits);
        store
    }

    /// The encoding thresholds `OBJECT ENCODING` reports with.
    pub fn encoding_limits(&self) -> tandem_core::encoding::EncodingLimits {
        self.with_state(|s| s.store.encoding_limits())
    }

    /// Replaces the encoding thresholds (`CONFIG SET`: names only, no data
    /// changes, nothing logged: like Redis, a node-local setting).
    pub fn set_encoding_limits(&self, limits: tandem_core::encoding::EncodingLimits) {
        self.state.write().store.set_encoding_limits(limits);
    }

    /// Entries from `from_lsn` on (about `max_bytes`), from memory if
    /// recent, else from the log on disk (blocking read). `Ok(None)`: the
    /// log no longer holds `from_lsn` (the follower needs a snapshot).
    pub fn read_entries(&self, from_lsn: Lsn, max_bytes: usize) -> Result<Option<Vec<WireEntry>>, DbError> {
        if let Some(entries) = self.backlog.lock().read(from_lsn, max_bytes) {
            return Ok(Some(entries));
        }
        match self.log.read_from(from_lsn, max_bytes) {
            Ok(records) => Ok(Some(
                records
                    .into_iter()
                    .map(|r| WireEntry { lsn: r.lsn, epoch: r.epoch, payload: Bytes::from(r.payload) })
                    .collect(),
            )),
            Err(tandem_storage::StorageError::NotRetained { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Entries from `from_lsn` on if the in-memory backlog still holds it.
    pub fn read_backlog(&self, from_lsn: Lsn, max_bytes: usize) -> Option<Vec<WireEntry>> {
        self.backlog.lock().read(from_lsn, max_bytes)
    }

    /// Commit time of entry `lsn` if it is still in memory.
    pub fn commit_ms_of(&self, lsn: Lsn) -> Option<u64> {
        self.backlog.lock().commit_ms(lsn)
    }

    /// Oldest LSN this node can still stream from its log.
    pub fn first_retained_lsn(&self) -> Lsn {
        self.log.first_lsn()
    }

    /// A watch of the last applied LSN.
    pub fn applied(&self) -> watch::Receiver<Lsn> {
        self.applied_tx.subscribe()
    }

    /// A watch of the last durable LSN.
    pub fn durable(&self) -> watch::Receiver<Lsn> {
        self.durable.clone()
    }

    /// Current epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch_now.load(Ordering::Acquire)
    }

    /// Stores the lock-free mirrors of the epoch and last LSN; called
    /// under the state lock after either changes.
    fn publish(&self, state: &State) {
        self.epoch_now.store(state.epoch, Ordering::Release);
        self.last_lsn_now.store(state.last_lsn, Ordering::Release);
        self.last_entry_epoch_now.store(state.history.last_epoch(state.last_lsn), Ordering::Release);
    }

    /// Raises the epoch to `epoch` (never lowers it) and persists it.
    pub fn raise_epoch(&self, epoch: Epoch) -> Result<(), DbError> {
        let mut state = self.state.write();
        if epoch <= state.epoch {
            return Ok(());
        }
        let tmp = self.epoch_path.with_extension("tmp");
        std::fs::write(&tmp, format!("{epoch}\n"))
            .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|_| std::fs::rename(&tmp, &self.epoch_path))
            .map_err(|e| DbError::Storage(tandem_storage::StorageError::io(&self.epoch_path, "write epoch", e)))?;
        state.epoch = epoch;
        self.publish(&state);
        Ok(())
    }

    /// Starts leading at `epoch`: persists the epoch and records that the
    /// epoch's entries start after the current log end.
    pub fn start_epoch(&self, epoch: Epoch) -> Result<(), DbError> {
        self.raise_epoch(epoch)?;
        let mut state = self.state.write();
        let first = state.last_lsn + 1;
        let before = state.history.clone();
        state.history.record(epoch, first);
        self.publish(&state);
        if state.history != before {
            write_history(&self.history_path, &state.history)?;
        }
        Ok(())
    }

    /// The decoded log entries after `lsn` up to the end of the log, and the
    /// last LSN. Entries the log no longer holds (folded into a snapshot)
    /// are left out. Blocking.
    pub fn entries_after(&self, lsn: Lsn) -> Result<(Vec<LogEntry>, Lsn), DbError> {
        let last = self.last_lsn();
        let mut out = Vec::new();
        let mut from = lsn + 1;
        while from <= last {
            let Some(batch) = self.read_entries(from, 1 << 20)? else {
                from = self.first_retained_lsn().max(from + 1);
                continue;
            };
            if batch.is_empty() {
                break;
            }
            for wire in &batch {
                let entry = LogEntry::decode_payload(wire.lsn, wire.epoch, &wire.payload)
                    .map_err(|e| DbError::Decode(format!("log entry {}: {e}", wire.lsn)))?;
                out.push(entry);
            }
            from = batch.last().expect("non-empty").lsn + 1;
        }
        Ok((out, last))
    }

    /// Stops (or allows again) every write from committing; returns the
    /// last LSN once no write can commit any more (taking the lock waits
    /// out a write in progress).
    pub fn stop_writes(&self, stopped: bool) -> Lsn {
        self.writes_stopped.store(stopped, Ordering::Release);
        self.state.write().last_lsn
    }

    /// Where each epoch starts in the log.
    pub fn history(&self) -> EpochHistory {
        self.with_state(|s| s.history.clone())
    }

    /// The epoch of the last entry in the log (0 for an empty log).
    pub fn last_entry_epoch(&self) -> Epoch {
        self.last_entry_epoch_now.load(Ordering::Acquire)
    }

    /// Deletes up to `max` expired keys through the log (active expiry).
    /// Returns how many were deleted and the LSN of the entry, if any.
    /// Runs on the event loop: skips this round if the state lock is not
    /// free within [`LOOP_LOCK_WAIT`] (a large write holds it).
    pub fn expire_sweep(&self, max: usize) -> usize {
        if self.log.failed().is_some() {
            return 0;
        }
        let Some(mut state) = self.state.try_write_for(LOOP_LOCK_WAIT) else {
            return 0;
        };
        if self.writes_stopped.load(Ordering::Acquire) {
            return 0;
        }
        let now_ms = unix_ms().max(state.last_commit_ms);
        let keys = state.store.collect_expired(now_ms, max);
        if keys.is_empty() {
            return 0;
        }
        let state = &mut *state;
        let mut n = 0;
        for key in keys {
            // Keys past one entry's budget wait for the next sweep.
            if !state.batch.try_emit(&mut state.store, Effect::Del { key }) {
                break;
            }
            n += 1;
        }
        if n > 0 && self.commit(state, now_ms).is_err() {
            return 0;
        }
        n
    }

    /// The `maxmemory` limit and policy in force.
    pub fn memory(&self) -> &crate::maxmemory::MemoryLimit {
        &self.memory
    }

    /// The store's running estimate of its bytes (`used_memory`).
    pub fn used_bytes(&self) -> u64 {
        self.state.read().store.used_bytes() as u64
    }

    /// Before a write on the leader: while the store is over `maxmemory`,
    /// evicts keys under the policy (one log entry of `Evict` effects,
    /// committed before the write's own entry); if it is still over, a
    /// command that may grow memory (`denyoom()`) is refused with -OOM.
    /// Called with the state lock held.
    fn make_room(&self, state: &mut State, now_ms: u64, denyoom: impl FnOnce() -> bool) -> Result<(), &'static str> {
        let limit = self.memory.max_bytes();
        if limit == 0 || state.store.used_bytes() as u64 <= limit {
            return Ok(());
        }
        self.evict(state, now_ms, limit);
        if state.store.used_bytes() as u64 > limit && denyoom() {
            return Err(crate::maxmemory::OOM_ERROR);
        }
        Ok(())
    }

    /// Evicts up to [`crate::maxmemory::EVICTIONS_PER_PASS_MAX`] keys while
    /// the store is over `limit`, as one log entry. Returns how many.
    /// Called with the state lock held, on the leader only.
    fn evict(&self, state: &mut State, now_ms: u64, limit: u64) -> usize {
        let policy = self.memory.policy();
        let mut n = 0;
        while n < crate::maxmemory::EVICTIONS_PER_PASS_MAX && state.store.used_bytes() as u64 > limit {
            let random = self.memory.next_random();
            let Some(key) = tandem_core::evict::choose_victim(&state.store, policy, self.memory.samples(), random)
            else {
                break;
            };
            if !state.batch.try_emit(&mut state.store, Effect::Evict { key }) {
                break;
            }
            n += 1;
        }
        if n == 0 || self.commit(state, now_ms).is_err() {
            return 0;
        }
        self.metrics.evicted_keys.inc_by(n as u64);
        n
    }

    /// Evicts keys while the store is over `maxmemory` (the leader's
    /// background pass, so the store gets under the limit between writes
    /// too). Returns how many.
    /// Like [`Self::expire_sweep`], skipped while a large write holds the
    /// state lock.
    pub fn evict_sweep(&self) -> usize {
        let limit = self.memory.max_bytes();
        if limit == 0 || self.log.failed().is_some() {
            return 0;
        }
        let Some(mut state) = self.state.try_write_for(LOOP_LOCK_WAIT) else {
            return 0;
        };
        if self.writes_stopped.load(Ordering::Acquire) || state.store.used_bytes() as u64 <= limit {
            return 0;
        }
        let now_ms = unix_ms().max(state.last_commit_ms);
        self.evict(&mut state, now_ms, limit)
    }

    /// Waits until `lsn` is durable under the fsync policy. Returns an error
    /// text if the log failed, in which case the write must not be reported
    /// as successful.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), AckError> {
        let mut rx = self.durable.clone();
        let mut failed = self.failed_tx.subscribe();
        if *rx.borrow() < lsn && self.commit_inline {
            // Durable once in the OS: write it from here rather than hand it
            // to the writer thread and wait to be woken. Yield first, so the
            // other connections with requests ready append theirs and one
            // write(2) covers them all (Redis's once-per-loop AOF write).
            tokio::task::yield_now().await;
            if *rx.borrow() < lsn {
                let _ = self.log.write_now();
            }
        }
        loop {
            if *rx.borrow_and_update() >= lsn {
                return Ok(());
            }
            if *failed.borrow_and_update() {
                let cause = self.log.failed().map(|e| e.to_string()).unwrap_or_default();
                return Err(AckError::NotDurable { cause });
            }
            tokio::select! {
                _ = rx.changed() => {}
                _ = failed.changed() => {}
            }
        }
    }

    /// Checks the log's health and wakes durability waiters if it failed.
    /// Called periodically by the node.
    pub fn check_log_health(&self) {
        if self.log.failed().is_some() && !*self.failed_tx.borrow() {
            tracing::error!(error = %self.log.failed().map(|e| e.to_string()).unwrap_or_default(),
                "the log failed: writes are refused until the node is restarted");
            self.failed_tx.send_replace(true);
        }
    }

    /// Reads with the state lock held.
    pub fn with_state<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read())
    }

    /// [`Self::with_state`] for the event loop: `None` if the lock is not
    /// free within [`LOOP_LOCK_WAIT`] (a large write or apply holds it).
    pub fn try_with_state<R>(&self, f: impl FnOnce(&State) -> R) -> Option<R> {
        self.state.try_read_for(LOOP_LOCK_WAIT).map(|s| f(&s))
    }

    /// The log (for stats and flushing).
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// Last durable LSN.
    pub fn durable_lsn(&self) -> Lsn {
        *self.durable.borrow()
    }

    /// LSN and time of the newest snapshot.
    pub fn last_snapshot(&self) -> (Lsn, u64) {
        (self.snapshot_lsn.load(Ordering::Relaxed), self.snapshot_unix_ms.load(Ordering::Relaxed))
    }

    /// Entries appended since the newest snapshot.
    pub fn entries_since_snapshot(&self) -> u64 {
        // The lock-free mirror: this runs on the event loop every second,
        // and a large write holds the state lock for seconds (decision 0028).
        self.last_lsn().saturating_sub(self.snapshot_lsn.load(Ordering::Relaxed))
    }

    /// Bucket `bucket` of the live store encoded as a snapshot chunk (read
    /// lock held only for this bucket): the unit of a fuzzy snapshot sent to
    /// a follower.
    pub fn bucket_chunks(&self, bucket: usize) -> Vec<Vec<u8>> {
        self.with_state(|s| s.store.encode_bucket_chunks(bucket, CHUNK_BYTES_MAX))
    }

    /// Last applied (on a leader: appended) LSN.
    pub fn last_lsn(&self) -> Lsn {
        self.last_lsn_now.load(Ordering::Acquire)
    }

    /// Keeps the log from `lsn` on (the log archive has not shipped it yet):
    /// snapshots truncate only segments wholly before it.
    pub fn hold_log_from(&self, lsn: Lsn) {
        self.archive_floor.store(lsn, Ordering::Release);
    }

    /// Takes a fuzzy snapshot: one bucket at a time under the read lock
    /// (writes proceed between buckets), records the LSN it starts from,
    /// waits until the log is durable past everything the snapshot may
    /// contain, publishes it, then truncates the log behind the older of the
    /// two snapshots kept. Blocking: call from a blocking thread.
    pub fn snapshot(&self) -> Result<SnapshotReport, DbError> {
        let _guard = self.snapshot_lock.lock();
        let started = Instant::now();
        let start_lsn = self.with_state(|s| s.last_lsn);
        let mut writer = snapshot::SnapshotWriter::create(&self.snapshot_dir, start_lsn)?;
        let mut keys = 0;
        for bucket in 0..BUCKETS {
            for chunk in self.bucket_chunks(bucket) {
                writer.write_chunk(&chunk)?;
            }
        }
        let (end_lsn, end_commit_ms) = self.with_state(|s| {
            keys = s.store.len();
            (s.last_lsn, s.last_commit_ms)
        });
        // Everything the snapshot holds must be in the durable log first,
        // or a crash could leave state that the log (and replicas) lack.
        self.log.flush()?;
        let created_unix_ms = unix_ms();
        let info = writer.finish(end_lsn, created_unix_ms)?;
        self.snapshot_lsn.store(start_lsn, Ordering::Relaxed);
        self.snapshot_unix_ms.store(created_unix_ms, Ordering::Relaxed);
        // Keep two snapshots; the log must still cover the older one, which
        // is the fallback if the newest turns out unreadable.
        let kept = snapshot::prune(&self.snapshot_dir, 2)?;
        let oldest_kept = kept.iter().map(|m| m.start_lsn).min().unwrap_or(start_lsn);
        let keep_from = (oldest_kept + 1).min(self.archive_floor.load(Ordering::Acquire));
        let segments_removed = self.log.truncate_before(keep_from)?;
        self.metrics.snapshots.inc();
        Ok(SnapshotReport {
            start_lsn,
            end_lsn,
            end_commit_ms,
            keys,
            bytes: info.bytes,
            segments_removed,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }
}

fn io_err(path: &Path, e: std::io::Error) -> DbError {
    DbError::Storage(tandem_storage::StorageError::io(path, "create directory", e))
}
