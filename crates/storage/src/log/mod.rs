//! The replication log: an append-only, checksummed sequence of opaque
//! records `(lsn, epoch, payload)` kept in segment files, with group commit,
//! a choice of fsync policy, crash recovery and deliberate repair.
//!
//! It owns the bytes of `<dir>/<first_lsn as 20 digits>.seg` files and
//! nothing else. It must never interpret a payload, never skip a bad record
//! (a torn tail is cut and reported, corruption stops recovery with path and
//! offset), never swallow a write or fsync error, and never block an
//! appender on the disk.
//!
//! # Durability promise of each [`FsyncPolicy`]
//!
//! [`Log::durable_lsn`] (and `on_durable`) only ever covers records for
//! which the policy's promise holds:
//!
//! - `always`: each record is written and then fdatasynced on its own
//!   before it counts as durable. Survives a process crash, an OS crash and
//!   a power loss (if the drive honours cache flushes). One fsync per
//!   record; no sharing; slowest.
//! - `batch` (default): group commit. The writer thread drains everything
//!   queued since its last write, writes it with one write call, runs one
//!   fdatasync, then publishes the new durable LSN. Same promise as
//!   `always`; concurrent appenders share one fsync.
//! - `everysec`: a record counts as durable as soon as it is handed to the
//!   OS with write(2): by the caller that waits for it ([`Log::write_now`],
//!   no thread hand-off), or by the writer thread within
//!   `DEFERRED_WRITE_INTERVAL` (20 ms) for records nobody waits for. It
//!   survives a process crash; an OS crash or power loss can lose the
//!   durable records of about the last second (one sync interval plus the
//!   time of a slow fsync). An fdatasync runs about once a second while
//!   there are unsynced writes.
//! - `never`: the promise of `everysec` without the periodic fsync: the OS
//!   decides when data reaches the disk (on Linux typically within 30 s).
//!
//! Under every policy, [`Log::flush`] and [`Log::close`] fsync everything
//! queued, and a full segment is fdatasynced before the next one is
//! created, so only the last segment can ever end in a torn write.
//!
//! # Failure: the log is poisoned
//!
//! If a write or fsync fails (disk full, EIO), the log is poisoned: the
//! error is kept, [`Log::failed`] returns it, [`Log::flush`] and
//! [`Log::wait_durable`] return [`StorageError::Poisoned`], the durable LSN
//! never advances again and appended records are dropped (their LSNs are
//! still counted so that the caller's order checks hold). A failed fsync is
//! never retried: Linux may already have dropped the dirty pages and marked
//! them clean (the PostgreSQL "fsyncgate" lesson), so a later successful
//! fsync would lie. The node must refuse writes and restart; recovery
//! re-reads what actually reached the disk.
//!
//! # On-disk format
//!
//! A segment is a 12-byte header (`TNDMLOG1`, u32 version 1) followed by
//! records `u32 len | u32 crc32c(lsn, epoch, payload) | u64 lsn | u64 epoch |
//! payload`, all little-endian. LSNs increase by exactly 1 across the whole
//! log; a segment's name is the LSN of its first record (or, while it is
//! empty, the next LSN to be written).

mod format;
mod recovery;
mod segment;
#[cfg(test)]
mod tests;
mod writer;

use std::fmt;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

pub use format::{
    RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX, SEGMENT_FORMAT_VERSION, SEGMENT_HEADER_BYTES, SEGMENT_MAGIC,
};
pub use recovery::{recover, repair_plan, repair_truncate, Recovery, RepairReport, TornTail};

use format::{encode_record, record_crc, Scanner, Step};
use segment::{create_segment, find_segment, open_for_append, SegmentEntry};
use writer::{Queue, Shared, WriterIo};

use crate::error::corrupt;
use crate::fsutil::io_err;
use crate::StorageError;

/// Default for [`LogConfig::segment_bytes_max`]: 64 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// How often `everysec` fsyncs while there are unsynced writes.
pub const EVERYSEC_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Read buffer of [`Log::read_from`] (it grows only for a larger record).
const CATCH_UP_READ_BUFFER_BYTES: usize = 256 << 10;

/// When an appended record counts as durable (see the module doc for the
/// exact promise of each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FsyncPolicy {
    /// Write and fdatasync each record on its own.
    Always,
    /// Group commit: one write and one fdatasync per drained batch.
    #[default]
    Batch,
    /// Durable once written to the OS; fdatasync about once a second.
    EverySec,
    /// Durable once written to the OS; the OS decides when to flush.
    Never,
}

impl FsyncPolicy {
    /// The configuration spelling: "always", "batch", "everysec", "never".
    pub fn as_str(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::EverySec => "everysec",
            FsyncPolicy::Never => "never",
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown fsync policy name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown fsync policy {0:?} (expected one of: always, batch, everysec, never)")]
pub struct ParseFsyncPolicyError(
    /// The name that was not recognised.
    pub String,
);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "everysec" => Ok(FsyncPolicy::EverySec),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(ParseFsyncPolicyError(other.to_string())),
        }
    }
}

/// Where the log lives and how it syncs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// When a record counts as durable.
    pub fsync: FsyncPolicy,
    /// Roll to a new segment before a record would push a non-empty one
    /// past this size.
    pub segment_bytes_max: u64,
}

impl LogConfig {
    /// `dir` with the default policy (`batch`) and segment size (64 MiB).
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig { dir: dir.into(), fsync: FsyncPolicy::default(), segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT }
    }
}

/// One log record, as returned by [`Log::read_from`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its log sequence number.
    pub lsn: u64,
    /// The leadership epoch it was written in.
    pub epoch: u64,
    /// Opaque bytes from the layer above.
    pub payload: Vec<u8>,
}

/// Counters and watermarks of a [`Log`], for `/status` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Oldest retained LSN (`last_lsn + 1` when empty).
    pub first_lsn: u64,
    /// Last appended LSN.
    pub last_lsn: u64,
    /// Last LSN covered by the policy's durability promise.
    pub durable_lsn: u64,
    /// Last LSN known fdatasynced.
    pub synced_lsn: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of valid data in segment files.
    pub bytes_on_disk: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Encoded bytes appended since open.
    pub bytes_appended: u64,
    /// Encoded bytes waiting for the writer thread.
    pub queued_bytes: u64,
    /// Fdatasyncs of segment files since open.
    pub fsync_count: u64,
    /// Total time spent in those fdatasyncs.
    pub fsync_nanos_total: u64,
    /// Longest single fdatasync.
    pub fsync_nanos_max: u64,
    /// Whether a write or fsync failed (see [`Log::failed`]).
    pub poisoned: bool,
}

/// The replication log of one keyspace. `Send + Sync`; share it via `Arc`.
pub struct Log {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens the log that `recovered` describes (from [`recover`] on
    /// `config.dir`) and spawns its writer thread. An empty directory gets
    /// its first segment. The last segment is fdatasynced once, so
    /// everything recovered counts as durable.
    ///
    /// `on_durable(lsn)` is called from the writer thread each time
    /// [`Self::durable_lsn`] advances (and from a truncating caller's thread
    /// when a truncation moves it); it must be quick and must not call back
    /// into the log's truncation methods.
    pub fn open(
        config: LogConfig,
        recovered: &Recovery,
        on_durable: Box<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Log, StorageError> {
        assert_eq!(config.dir, recovered.dir, "Log::open needs the Recovery of the same directory");
        assert!(
            config.segment_bytes_max > SEGMENT_HEADER_BYTES,
            "segment_bytes_max {} leaves no room for records",
            config.segment_bytes_max
        );
        let dir = config.dir;
        std::fs::create_dir_all(&dir).map_err(io_err("create log directory", &dir))?;
        let last_lsn = recovered.last_lsn();
        let mut segments = recovered.segments.clone();
        if segments.is_empty() {
            let (_, path) = create_segment(&dir, last_lsn + 1, true)?;
            segments.push(SegmentEntry::new(last_lsn + 1, path));
        }
        let open = segments.last().expect("at least one segment");
        let file = open_for_append(&open.path)?;
        file.sync_data().map_err(io_err("fdatasync", &open.path))?;
        let io = WriterIo {
            file,
            path: open.path.clone(),
            len: open.len,
            first_lsn: open.first_lsn,
            index_last: open.index.last().map(|e| e.offset),
        };
        let shared = Arc::new(Shared {
            policy: config.fsync,
            segment_bytes_max: config.segment_bytes_max,
            queue: Mutex::new(Queue { buf: Vec::new(), last_lsn, sync_target: 0, shutdown: false }),
            queue_cv: Condvar::new(),
            io: Mutex::new(io),
            segments: Mutex::new(segments),
            layout: RwLock::new(()),
            poison: Mutex::new(None),
            durable_cv: Condvar::new(),
            poisoned: AtomicBool::new(false),
            inline_commit: AtomicBool::new(false),
            last_lsn: AtomicU64::new(last_lsn),
            written_lsn: AtomicU64::new(last_lsn),
            synced_lsn: AtomicU64::new(last_lsn),
            durable_lsn: AtomicU64::new(last_lsn),
            records_appended: AtomicU64::new(0),
            bytes_appended: AtomicU64::new(0),
            fsync_count: AtomicU64::new(0),
            fsync_nanos_total: AtomicU64::new(0),
            fsync_nanos_max: AtomicU64::new(0),
            started: Instant::now(),
            last_sync_nanos: AtomicU64::new(0),
            on_durable,
            fsync_observer: RwLock::new(None),
            #[cfg(test)]
            faults: Default::default(),
            dir,
        });
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("tandem-log-writer".into())
            .spawn(move || writer::run_writer(thread_shared))
            .map_err(io_err("spawn the log writer thread for", &shared.dir))?;
        Ok(Log { shared, writer: Mutex::new(Some(handle)) })
    }

    /// Queues a record; never blocks on the disk. `lsn` must be exactly
    /// `last_lsn() + 1` and the payload at most [`RECORD_PAYLOAD_BYTES_MAX`]
    /// (both asserted: programmer errors). Callers append under their own
    /// state lock so that log order is apply order; the lock here is short.
    pub fn append(&self, lsn: u64, epoch: u64, payload: &[u8]) {
        assert!(
            payload.len() <= RECORD_PAYLOAD_BYTES_MAX,
            "log payload of {} bytes exceeds RECORD_PAYLOAD_BYTES_MAX",
            payload.len()
        );
        let crc = record_crc(lsn, epoch, payload);
        let s = &*self.shared;
        let wake_writer = {
            let mut q = s.queue.lock();
            assert_eq!(lsn, q.last_lsn + 1, "log append out of order: expected lsn {}, got {lsn}", q.last_lsn + 1);
            if !s.poisoned.load(Ordering::Acquire) {
                encode_record(&mut q.buf, lsn, epoch, crc, payload);
            }
            q.last_lsn = lsn;
            s.last_lsn.store(lsn, Ordering::Release);
            // Under everysec / never the appender (or its waiter) writes with
            // `write_now`; waking the writer thread per append would only
            // cost a context switch.
            let woken_per_append = match s.policy {
                FsyncPolicy::Always => true,
                FsyncPolicy::Batch => !s.inline_commit.load(Ordering::Relaxed),
                FsyncPolicy::EverySec | FsyncPolicy::Never => false,
            };
            woken_per_append || q.buf.len() >= writer::DEFERRED_WRITE_BYTES_MAX
        };
        s.records_appended.fetch_add(1, Ordering::Relaxed);
        s.bytes_appended.fetch_add((RECORD_HEADER_BYTES + payload.len()) as u64, Ordering::Relaxed);
        if wake_writer {
            s.queue_cv.notify_one();
        }
    }

    /// Last appended (possibly still queued) LSN; 0 if the log never held one.
    pub fn last_lsn(&self) -> u64 {
        self.shared.last_lsn.load(Ordering::Acquire)
    }

    /// Last LSN covered by the fsync policy's durability promise.
    pub fn durable_lsn(&self) -> u64 {
        self.shared.durable_lsn.load(Ordering::Acquire)
    }

    /// Blocks until `durable_lsn() >= lsn`; fails if the log is poisoned.
    /// `lsn` must already be appended.
    pub fn wait_durable(&self, lsn: u64) -> Result<(), StorageError> {
        assert!(lsn <= self.last_lsn(), "wait_durable({lsn}) for an lsn not yet appended");
        self.shared.wait_until(|| self.durable_lsn() >= lsn)
    }

    /// Blocks until everything appended so far is written and fdatasynced,
    /// under every policy. Fails if the log is poisoned.
    pub fn flush(&self) -> Result<(), StorageError> {
        let s = &*self.shared;
        let target = {
            let mut q = s.queue.lock();
            q.sync_target = q.sync_target.max(q.last_lsn);
            q.last_lsn
        };
        s.queue_cv.notify_one();
        s.wait_until(|| s.synced_lsn() >= target)
    }

    /// Under `everysec` / `never`, writes the queued records to the OS from
    /// this thread (instead of waiting for the writer thread) and returns
    /// the durable LSN; under `always` / `batch`, only nudges the writer.
    /// A blocking `write(2)` to the page cache: fine on an event loop, as
    /// Redis does.
    pub fn write_now(&self) -> Result<u64, StorageError> {
        self.shared.write_now()
    }

    /// Under `batch`, lets callers group-commit on their own thread: appends
    /// stop waking the writer thread, and [`Log::write_now`] writes and
    /// fdatasyncs everything queued (records nobody commits are committed
    /// by the writer thread within `DEFERRED_WRITE_INTERVAL`). This is how
    /// Redis's event loop commits; a standalone node uses it.
    pub fn set_inline_commit(&self, on: bool) {
        self.shared.inline_commit.store(on, Ordering::Relaxed);
    }

    /// The failure that poisoned the log, if any (as
    /// [`StorageError::Poisoned`]). The node refuses writes while it is set.
    pub fn failed(&self) -> Option<StorageError> {
        let p = self.shared.poison.lock();
        p.as_ref().map(|cause| self.shared.poison_error(cause))
    }

    /// Sets a callback that receives the duration of every fdatasync (for a
    /// latency histogram). Called on the writer thread; keep it quick.
    pub fn set_fsync_observer(&self, observer: Box<dyn Fn(Duration) + Send + Sync>) {
        *self.shared.fsync_observer.write() = Some(observer);
    }

    /// Deletes whole segments whose every record has an LSN below `lsn`,
    /// oldest first; never the open (last) segment. Returns how many.
    pub fn truncate_before(&self, lsn: u64) -> Result<u64, StorageError> {
        let s = &*self.shared;
        let _layout = s.layout.write();
        let victims: Vec<PathBuf> = {
            let segs = s.segments.lock();
            let n = segs.windows(2).take_while(|w| w[1].first_lsn <= lsn).count();
            segs[..n].iter().map(|seg| seg.path.clone()).collect()
        };
        for (i, path) in victims.iter().enumerate() {
            if let Err(e) = std::fs::remove_file(path) {
                s.segments.lock().drain(..i);
                return Err(io_err("delete segment", path)(e));
            }
        }
        if !victims.is_empty() {
            s.segments.lock().drain(..victims.len());
            crate::fsutil::sync_dir(&s.dir)?;
            tracing::debug!(dir = %s.dir.display(), segments = victims.len(), before_lsn = lsn, "truncated log prefix");
        }
        Ok(victims.len() as u64)
    }

    /// Drops every record with an LSN above `lsn`, durably (truncate +
    /// fsync, later segments deleted + directory fsync), and sets
    /// `last_lsn`, `durable_lsn` (which may thus go backwards, and
    /// `on_durable` is told) to `lsn`; the next append is `lsn + 1`.
    /// Flushes first. Callers must not append concurrently (asserted). A
    /// failure part-way poisons the log.
    pub fn truncate_after(&self, lsn: u64) -> Result<(), StorageError> {
        self.flush()?;
        let s = &*self.shared;
        let _layout = s.layout.write();
        let mut io = s.io.lock();
        {
            let q = s.queue.lock();
            assert!(q.buf.is_empty(), "log append raced with truncate_after");
            if lsn >= q.last_lsn {
                return Ok(());
            }
        }
        if let Err(e) = s.cut_after(&mut io, lsn) {
            let e = Arc::new(e);
            s.set_poison(e.clone());
            return Err(s.poison_error(&e));
        }
        s.reset_watermarks(&mut s.queue.lock(), lsn);
        tracing::info!(dir = %s.dir.display(), after_lsn = lsn, "truncated log suffix");
        Ok(())
    }

    /// Drops every record and restarts the log so the next append is
    /// `last_lsn + 1` (e.g. after installing a snapshot at `last_lsn` that
    /// the log does not reach). Durable: the new empty segment's name
    /// carries the position. Flushes first; a failure part-way poisons the
    /// log.
    pub fn reset_to(&self, last_lsn: u64) -> Result<(), StorageError> {
        self.flush()?;
        let s = &*self.shared;
        let _layout = s.layout.write();
        let mut io = s.io.lock();
        assert!(s.queue.lock().buf.is_empty(), "log append raced with reset_to");
        let result = {
            let mut segs = s.segments.lock();
            s.replace_all(&mut io, &mut segs, last_lsn)
        };
        if let Err(e) = result {
            let e = Arc::new(e);
            s.set_poison(e.clone());
            return Err(s.poison_error(&e));
        }
        s.reset_watermarks(&mut s.queue.lock(), last_lsn);
        tracing::info!(dir = %s.dir.display(), last_lsn, "reset the log to start after lsn");
        Ok(())
    }

    /// Durable records with `lsn >= from_lsn`, in order, up to about
    /// `max_bytes` of encoded records (at least one if any is durable).
    /// Empty if `from_lsn` is past the durable LSN;
    /// [`StorageError::NotRetained`] if it is older than [`Self::first_lsn`].
    pub fn read_from(&self, from_lsn: u64, max_bytes: usize) -> Result<Vec<Record>, StorageError> {
        let s = &*self.shared;
        let _layout = s.layout.read();
        let from_lsn = from_lsn.max(1);
        let cap = self.durable_lsn();
        let first_lsn = self.first_lsn();
        if from_lsn < first_lsn {
            return Err(StorageError::NotRetained { from_lsn, first_lsn });
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut next = from_lsn;
        while next <= cap && (out.is_empty() || bytes < max_bytes) {
            let (path, offset) = {
                let segs = s.segments.lock();
                let seg = &segs[find_segment(&segs, next).expect("next >= first_lsn")];
                (seg.path.clone(), seg.seek_hint(next))
            };
            let before = next;
            self.read_segment(&path, offset, &mut next, cap, max_bytes, &mut bytes, &mut out)?;
            if next == before {
                return Err(corrupt(
                    &path,
                    offset,
                    format!("durable lsn {next} is missing from the segment that should hold it"),
                ));
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_segment(
        &self,
        path: &std::path::Path,
        offset: u64,
        next: &mut u64,
        cap: u64,
        max_bytes: usize,
        bytes: &mut usize,
        out: &mut Vec<Record>,
    ) -> Result<(), StorageError> {
        let mut file = File::open(path).map_err(io_err("open segment", path))?;
        let len = file.metadata().map_err(io_err("stat segment", path))?.len();
        file.seek(SeekFrom::Start(offset)).map_err(io_err("seek in segment", path))?;
        let mut scanner = Scanner::new(file, offset, len, CATCH_UP_READ_BUFFER_BYTES.min(max_bytes.max(4096)));
        while *next <= cap && (out.is_empty() || *bytes < max_bytes) {
            match scanner.next().map_err(io_err("read segment", path))? {
                Step::Record { header, .. } if header.lsn < *next => {}
                Step::Record { offset, header, payload } => {
                    if header.lsn != *next {
                        return Err(corrupt(
                            path,
                            offset,
                            format!("lsn discontinuity (expected lsn {next}, found {})", header.lsn),
                        ));
                    }
                    *bytes += header.record_bytes();
                    out.push(Record { lsn: header.lsn, epoch: header.epoch, payload: payload.to_vec() });
                    *next += 1;
                }
                Step::End => return Ok(()),
                Step::Bad { offset, bad } => return Err(corrupt(path, offset, bad.to_string())),
                Step::Truncated { offset, .. } => return Err(corrupt(path, offset, "durable record is incomplete")),
            }
        }
        Ok(())
    }

    /// Oldest retained LSN. LSNs start at 1; an empty log (new, or reset)
    /// reports `last_lsn() + 1`, so the log always holds
    /// `first_lsn()..=last_lsn()`.
    pub fn first_lsn(&self) -> u64 {
        self.shared.segments.lock()[0].first_lsn
    }

    /// Counters and watermarks.
    pub fn stats(&self) -> LogStats {
        let s = &*self.shared;
        let queued_bytes = s.queue.lock().buf.len() as u64;
        let (first_lsn, segments, bytes_on_disk) = {
            let segs = s.segments.lock();
            (segs[0].first_lsn, segs.len() as u64, segs.iter().map(|seg| seg.len).sum())
        };
        LogStats {
            first_lsn,
            last_lsn: self.last_lsn(),
            durable_lsn: self.durable_lsn(),
            synced_lsn: s.synced_lsn(),
            segments,
            bytes_on_disk,
            records_appended: s.records_appended.load(Ordering::Relaxed),
            bytes_appended: s.bytes_appended.load(Ordering::Relaxed),
            queued_bytes,
            fsync_count: s.fsync_count.load(Ordering::Relaxed),
            fsync_nanos_total: s.fsync_nanos_total.load(Ordering::Relaxed),
            fsync_nanos_max: s.fsync_nanos_max.load(Ordering::Relaxed),
            poisoned: s.poisoned.load(Ordering::Acquire),
        }
    }

    /// Flushes everything queued, stops the writer thread, and reports a
    /// flush failure or an earlier poisoning.
    pub fn close(self) -> Result<(), StorageError> {
        let flushed = self.flush();
        self.stop_writer();
        flushed?;
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Tells the writer to drain, sync and exit, and joins it.
    fn stop_writer(&self) {
        let Some(handle) = self.writer.lock().take() else {
            return;
        };
        self.shared.queue.lock().shutdown = true;
        self.shared.queue_cv.notify_one();
        if handle.join().is_err() {
            tracing::error!(dir = %self.shared.dir.display(), "the log writer thread panicked");
        }
    }
}

impl Drop for Log {
    /// Drains and syncs what is queued (errors poison; use [`Log::close`]
    /// to see them) and joins the writer thread.
    fn drop(&mut self) {
        self.stop_writer();
    }
}
