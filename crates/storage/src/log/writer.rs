//! The log's shared state and its writer thread.
//!
//! Owns the append queue, the open segment file, the LSN watermarks
//! (appended, written, synced, durable) and the poison flag. Appenders only
//! encode into the queue under a short lock; the single writer thread does
//! every write and fsync of the open segment. It never reads a payload and
//! never retries a failed write or fsync: the first failure poisons the log.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use super::format::{trusted_record_at, Scanner, Step, SEGMENT_HEADER_BYTES};
use super::recovery::set_len_synced;
use super::segment::{create_segment, index_due, open_for_append, IndexEntry, SegmentEntry};
use super::{FsyncPolicy, EVERYSEC_SYNC_INTERVAL};
use crate::error::corrupt;
use crate::fsutil::{io_err, sync_dir};
use crate::StorageError;

/// The writer keeps its spare batch buffer only up to this capacity, so a
/// burst does not pin memory forever.
const SPARE_BUFFER_BYTES_MAX: usize = 16 << 20;

/// Under `everysec` / `never`, records that no caller wrote with
/// `write_now` reach the OS within this interval.
pub(crate) const DEFERRED_WRITE_INTERVAL: Duration = Duration::from_millis(20);
/// Under `everysec` / `never`, an append wakes the writer thread anyway once
/// this many bytes wait in the queue (bounds the queue's memory).
pub(crate) const DEFERRED_WRITE_BYTES_MAX: usize = 1 << 20;

/// Most extra write rounds a group commit takes in before its fsync.
const GROUP_COMMIT_TOPUP_ROUNDS_MAX: usize = 16;
/// Longest a group commit delays its fsync to take in more records.
const GROUP_COMMIT_TOPUP_WINDOW: Duration = Duration::from_micros(200);

/// Records waiting for the writer thread.
pub(crate) struct Queue {
    /// Encoded records, in LSN order.
    pub buf: Vec<u8>,
    /// Last LSN appended (queued or written).
    pub last_lsn: u64,
    /// `flush()` wants everything up to here fsynced.
    pub sync_target: u64,
    /// The writer should drain, sync and exit.
    pub shutdown: bool,
}

/// The open segment, owned by whoever holds the `io` lock.
pub(crate) struct WriterIo {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
    pub first_lsn: u64,
    pub index_last: Option<u64>,
}

/// Callback type for fsync latency samples.
pub(crate) type FsyncObserver = Box<dyn Fn(Duration) + Send + Sync>;

/// State shared by `Log` handles and the writer thread.
///
/// Lock order: `layout` → `io` → `queue` → `segments` → `poison`.
/// Appenders take only `queue`; the writer takes `queue` alone, then `io`.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub policy: FsyncPolicy,
    pub segment_bytes_max: u64,
    pub queue: Mutex<Queue>,
    pub queue_cv: Condvar,
    pub io: Mutex<WriterIo>,
    pub segments: Mutex<Vec<SegmentEntry>>,
    /// Readers hold it shared; truncations hold it exclusively.
    pub layout: RwLock<()>,
    /// The failure that poisoned the log; waiters sleep on `durable_cv`.
    pub poison: Mutex<Option<Arc<StorageError>>>,
    pub durable_cv: Condvar,
    pub poisoned: AtomicBool,
    /// Under `batch`: waiters commit with `write_now` on their own thread
    /// (appends do not wake the writer thread).
    pub inline_commit: AtomicBool,
    pub last_lsn: AtomicU64,
    pub written_lsn: AtomicU64,
    pub synced_lsn: AtomicU64,
    pub durable_lsn: AtomicU64,
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub fsync_count: AtomicU64,
    pub fsync_nanos_total: AtomicU64,
    pub fsync_nanos_max: AtomicU64,
    pub started: Instant,
    /// Nanoseconds after `started` of the last fsync.
    pub last_sync_nanos: AtomicU64,
    pub on_durable: Box<dyn Fn(u64) + Send + Sync>,
    pub fsync_observer: RwLock<Option<FsyncObserver>>,
    #[cfg(test)]
    pub faults: Faults,
}

/// Fault injection for tests: block or fail writes and fsyncs.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Faults {
    /// Held by a test to stall the writer just before each fsync.
    pub sync_gate: Mutex<()>,
    pub fail_sync: AtomicBool,
    pub fail_write: AtomicBool,
    /// Added to every fsync, to model a slow disk.
    pub sync_delay_micros: AtomicU64,
}

type Poison = Arc<StorageError>;

fn poison_io(op: &'static str, path: &Path, e: io::Error) -> Poison {
    Arc::new(StorageError::io(path, op, e))
}

/// Turns the log-level error of a maintenance step into a poison cause.
fn poison_from(e: StorageError) -> Poison {
    Arc::new(e)
}

/// The writer thread's body.
pub(crate) fn run_writer(shared: Arc<Shared>) {
    let _guard = PanicGuard(&shared);
    let mut batch = Vec::new();
    loop {
        shared.wait_for_work();
        // Records leave the queue only under the `io` lock (here and in
        // `write_now`), so they reach the file in LSN order.
        let mut io = shared.io.lock();
        let (sync_target, shutdown) = {
            let mut q = shared.queue.lock();
            std::mem::swap(&mut q.buf, &mut batch);
            (q.sync_target, q.shutdown)
        };
        shared.process(&mut io, &batch, sync_target, shutdown);
        drop(io);
        batch.clear();
        if batch.capacity() > SPARE_BUFFER_BYTES_MAX {
            batch = Vec::new();
        }
        if shutdown {
            return;
        }
    }
}

/// Poisons the log if the writer thread panics, so nobody waits forever.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let e = io::Error::other("the log writer thread panicked");
            self.0.set_poison(poison_io("run the log writer for", &self.0.dir, e));
        }
    }
}

impl Shared {
    /// Waits until there are records to write, a sync to do, or shutdown.
    fn wait_for_work(&self) {
        let mut q = self.queue.lock();
        loop {
            let poisoned = self.poisoned.load(Ordering::Acquire);
            let unsynced = self.written_lsn.load(Ordering::Acquire) > self.synced_lsn.load(Ordering::Acquire);
            if q.shutdown || !q.buf.is_empty() || (!poisoned && unsynced && q.sync_target > self.synced_lsn()) {
                break;
            }
            let deferred = matches!(self.policy, FsyncPolicy::EverySec | FsyncPolicy::Never)
                || (self.policy == FsyncPolicy::Batch && self.inline_commit.load(Ordering::Relaxed));
            if deferred {
                // Appends do not wake this thread under these policies (the
                // node writes from its own thread, see `write_now`); pick up
                // stragglers and run the periodic fsync on a timer.
                let mut deadline = Instant::now() + DEFERRED_WRITE_INTERVAL;
                if !poisoned && unsynced && self.policy == FsyncPolicy::EverySec {
                    let sync_at = self.last_sync_at() + EVERYSEC_SYNC_INTERVAL;
                    if Instant::now() >= sync_at {
                        break;
                    }
                    deadline = deadline.min(sync_at);
                }
                self.queue_cv.wait_until(&mut q, deadline);
            } else {
                self.queue_cv.wait(&mut q);
            }
        }
    }

    /// Under `everysec` / `never`: writes whatever is queued to the OS from
    /// the calling thread, so a caller waiting for durability does not pay
    /// a hand-off to the writer thread and back (the write is to the page
    /// cache; Redis does the same from its event loop). Returns the durable
    /// LSN afterwards. Under `always` / `batch` it only wakes the writer.
    pub(crate) fn write_now(&self) -> Result<u64, StorageError> {
        let inline_sync = self.policy == FsyncPolicy::Batch && self.inline_commit.load(Ordering::Relaxed);
        if self.policy == FsyncPolicy::Always || (self.policy == FsyncPolicy::Batch && !inline_sync) {
            self.queue_cv.notify_one();
            return Ok(self.durable_lsn.load(Ordering::Acquire));
        }
        let mut io = self.io.lock();
        if self.poisoned.load(Ordering::Acquire) {
            return Err(self.poison_error_now());
        }
        let batch = {
            let mut q = self.queue.lock();
            if q.buf.is_empty() {
                return Ok(self.durable_lsn.load(Ordering::Acquire));
            }
            std::mem::take(&mut q.buf)
        };
        let written = self.write_records(&mut io, &batch).and_then(|lsn| {
            if inline_sync {
                // Group commit on the caller's thread: one fdatasync covers
                // everything appended so far; `sync` publishes it.
                self.sync(&mut io).map(|()| lsn)
            } else {
                self.publish_durable(lsn);
                Ok(lsn)
            }
        });
        match written {
            Ok(lsn) => Ok(lsn),
            Err(cause) => {
                self.set_poison(cause);
                Err(self.poison_error_now())
            }
        }
    }

    fn process(&self, io: &mut WriterIo, batch: &[u8], sync_target: u64, shutdown: bool) {
        if self.poisoned.load(Ordering::Acquire) {
            return; // Nothing written after a failure can be trusted.
        }
        if let Err(cause) = self.process_locked(io, batch, sync_target, shutdown) {
            self.set_poison(cause);
        }
    }

    fn process_locked(&self, io: &mut WriterIo, batch: &[u8], sync_target: u64, shutdown: bool) -> Result<(), Poison> {
        match self.policy {
            FsyncPolicy::Always => {
                // One write and one fdatasync per record: nothing is shared.
                let mut pos = 0;
                while pos < batch.len() {
                    let (_, size) = trusted_record_at(batch, pos);
                    self.write_records(io, &batch[pos..pos + size])?;
                    self.sync(io)?;
                    pos += size;
                }
            }
            FsyncPolicy::Batch => {
                // Group commit: everything queued since the last write shares
                // one write and one fdatasync.
                if !batch.is_empty() {
                    self.write_records(io, batch)?;
                    self.top_up(io)?;
                    self.sync(io)?;
                }
            }
            FsyncPolicy::EverySec | FsyncPolicy::Never => {
                if !batch.is_empty() {
                    let lsn = self.write_records(io, batch)?;
                    // Handed to the OS: survives a process crash.
                    self.publish_durable(lsn);
                }
            }
        }
        let unsynced = self.written_lsn.load(Ordering::Acquire) > self.synced_lsn();
        let requested = shutdown || sync_target > self.synced_lsn();
        let periodic =
            self.policy == FsyncPolicy::EverySec && Instant::now() >= self.last_sync_at() + EVERYSEC_SYNC_INTERVAL;
        if unsynced && (requested || periodic) {
            self.sync(io)?;
        }
        Ok(())
    }

    /// Group-commit top-up: while appenders keep adding records (the node's
    /// event loop is still working through a burst of requests), write them
    /// too before the fsync, so one fsync covers the whole burst. Stops at
    /// the first check that finds the queue empty, so an idle or
    /// single-writer log pays only one `yield_now`; bounded by
    /// `GROUP_COMMIT_TOPUP_ROUNDS_MAX` and `GROUP_COMMIT_TOPUP_WINDOW`.
    fn top_up(&self, io: &mut WriterIo) -> Result<(), Poison> {
        let deadline = Instant::now() + GROUP_COMMIT_TOPUP_WINDOW;
        let mut extra = Vec::new();
        for _ in 0..GROUP_COMMIT_TOPUP_ROUNDS_MAX {
            std::thread::yield_now();
            {
                let mut q = self.queue.lock();
                if q.buf.is_empty() || q.shutdown {
                    break;
                }
                std::mem::swap(&mut q.buf, &mut extra);
            }
            self.write_records(io, &extra)?;
            extra.clear();
            if Instant::now() >= deadline {
                break;
            }
        }
        Ok(())
    }

    /// Writes whole records to the open segment, rolling to a new segment
    /// before a record that would push a non-empty segment past
    /// `segment_bytes_max`. Returns the last LSN written.
    fn write_records(&self, io: &mut WriterIo, bytes: &[u8]) -> Result<u64, Poison> {
        let mut pos = 0;
        let mut last = 0;
        while pos < bytes.len() {
            let (lsn, size) = trusted_record_at(bytes, pos);
            if io.len > SEGMENT_HEADER_BYTES && io.len + size as u64 > self.segment_bytes_max {
                self.roll(io, lsn)?;
            }
            let run_start = pos;
            let mut seg_len = io.len;
            let mut new_index = Vec::new();
            while pos < bytes.len() {
                let (lsn, size) = trusted_record_at(bytes, pos);
                if pos > run_start && seg_len + size as u64 > self.segment_bytes_max {
                    break;
                }
                if index_due(io.index_last, seg_len) {
                    new_index.push(IndexEntry { lsn, offset: seg_len });
                    io.index_last = Some(seg_len);
                }
                seg_len += size as u64;
                pos += size;
                last = lsn;
            }
            #[cfg(test)]
            if self.faults.fail_write.load(Ordering::Relaxed) {
                return Err(poison_io("write segment", &io.path, io::Error::from_raw_os_error(28)));
            }
            io.file.write_all(&bytes[run_start..pos]).map_err(|e| poison_io("write segment", &io.path, e))?;
            io.len = seg_len;
            {
                let mut segs = self.segments.lock();
                let seg = segs.last_mut().expect("the open segment is listed");
                seg.len = seg_len;
                seg.index.extend(new_index);
            }
            self.written_lsn.store(last, Ordering::Release);
        }
        Ok(last)
    }

    /// Fdatasyncs the open segment; under `always`/`batch` that is what
    /// makes the written records durable.
    fn sync(&self, io: &mut WriterIo) -> Result<(), Poison> {
        let written = self.written_lsn.load(Ordering::Acquire);
        #[cfg(test)]
        {
            drop(self.faults.sync_gate.lock());
            let delay = self.faults.sync_delay_micros.load(Ordering::Relaxed);
            if delay > 0 {
                std::thread::sleep(Duration::from_micros(delay));
            }
            if self.faults.fail_sync.load(Ordering::Relaxed) {
                return Err(poison_io("fdatasync", &io.path, io::Error::from_raw_os_error(5)));
            }
        }
        let started = Instant::now();
        io.file.sync_data().map_err(|e| poison_io("fdatasync", &io.path, e))?;
        self.note_sync(started.elapsed());
        self.synced_lsn.store(written, Ordering::Release);
        if matches!(self.policy, FsyncPolicy::Always | FsyncPolicy::Batch) {
            self.publish_durable(written);
        } else {
            self.notify_waiters();
        }
        Ok(())
    }

    fn note_sync(&self, took: Duration) {
        let nanos = took.as_nanos().min(u64::MAX as u128) as u64;
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.fsync_nanos_total.fetch_add(nanos, Ordering::Relaxed);
        self.fsync_nanos_max.fetch_max(nanos, Ordering::Relaxed);
        let since_start = self.started.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.last_sync_nanos.store(since_start, Ordering::Relaxed);
        if let Some(observer) = &*self.fsync_observer.read() {
            observer(took);
        }
    }

    fn last_sync_at(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_sync_nanos.load(Ordering::Relaxed))
    }

    /// Closes the full segment (fdatasync first, under every policy, so only
    /// the last segment can ever hold a torn tail) and opens the next one.
    fn roll(&self, io: &mut WriterIo, first_lsn: u64) -> Result<(), Poison> {
        if self.written_lsn.load(Ordering::Acquire) > self.synced_lsn() {
            self.sync(io)?;
        }
        let (file, path) = create_segment(&self.dir, first_lsn, false).map_err(poison_from)?;
        io.file = file;
        io.path = path.clone();
        io.len = SEGMENT_HEADER_BYTES;
        io.first_lsn = first_lsn;
        io.index_last = None;
        self.segments.lock().push(SegmentEntry::new(first_lsn, path));
        Ok(())
    }

    pub fn synced_lsn(&self) -> u64 {
        self.synced_lsn.load(Ordering::Acquire)
    }

    /// Advances the durable LSN, wakes waiters, tells the node.
    fn publish_durable(&self, lsn: u64) {
        if lsn <= self.durable_lsn.load(Ordering::Acquire) {
            return;
        }
        self.durable_lsn.store(lsn, Ordering::Release);
        // The node hears first, so a woken flush() finds its watch current.
        (self.on_durable)(lsn);
        self.notify_waiters();
    }

    pub fn notify_waiters(&self) {
        let _g = self.poison.lock();
        self.durable_cv.notify_all();
    }

    /// Records the first failure; every later durability wait fails.
    pub fn set_poison(&self, cause: Poison) {
        tracing::error!(error = %cause, durable_lsn = self.durable_lsn.load(Ordering::Acquire), "replication log poisoned");
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(cause);
        }
        self.poisoned.store(true, Ordering::Release);
        self.durable_cv.notify_all();
    }

    /// The current poison as an error (call only once poisoned).
    fn poison_error_now(&self) -> StorageError {
        let p = self.poison.lock();
        let cause = p.as_ref().expect("called only when poisoned");
        self.poison_error(cause)
    }

    /// The poison as a [`StorageError::Poisoned`], if any.
    pub fn poison_error(&self, cause: &Poison) -> StorageError {
        StorageError::Poisoned { cause: cause.clone(), durable_lsn: self.durable_lsn.load(Ordering::Acquire) }
    }

    /// Blocks until `done()` holds or the log is poisoned.
    pub fn wait_until(&self, mut done: impl FnMut() -> bool) -> Result<(), StorageError> {
        let mut p = self.poison.lock();
        loop {
            if let Some(cause) = &*p {
                return Err(self.poison_error(cause));
            }
            if done() {
                return Ok(());
            }
            self.durable_cv.wait(&mut p);
        }
    }

    /// Drops every record after `lsn` from disk (callers hold `layout` and
    /// `io`, and the queue is empty). Later segments go first (newest
    /// first, then a directory fsync) so a crash part-way leaves a
    /// contiguous log.
    pub fn cut_after(&self, io: &mut WriterIo, lsn: u64) -> Result<(), StorageError> {
        let mut segs = self.segments.lock();
        let keep = segs.partition_point(|s| s.first_lsn <= lsn + 1);
        if keep == 0 {
            return self.replace_all(io, &mut segs, lsn);
        }
        for seg in segs[keep..].iter().rev() {
            fs::remove_file(&seg.path).map_err(io_err("delete segment", &seg.path))?;
        }
        if keep < segs.len() {
            segs.truncate(keep);
            sync_dir(&self.dir)?;
        }
        let seg = segs.last_mut().expect("keep > 0");
        let offset = locate(seg, lsn + 1)?;
        if offset < seg.len {
            set_len_synced(&seg.path, offset)?;
            seg.len = offset;
            seg.index.retain(|e| e.lsn <= lsn);
        }
        if io.first_lsn != seg.first_lsn {
            io.file = open_for_append(&seg.path)?;
            io.path = seg.path.clone();
            io.first_lsn = seg.first_lsn;
        }
        io.len = seg.len;
        io.index_last = seg.index.last().map(|e| e.offset);
        Ok(())
    }

    /// Deletes every segment (newest first) and starts an empty one whose
    /// name says the next LSN is `last_lsn + 1`.
    pub fn replace_all(
        &self,
        io: &mut WriterIo,
        segs: &mut Vec<SegmentEntry>,
        last_lsn: u64,
    ) -> Result<(), StorageError> {
        while let Some(seg) = segs.last() {
            fs::remove_file(&seg.path).map_err(io_err("delete segment", &seg.path))?;
            segs.pop();
        }
        sync_dir(&self.dir)?;
        let (file, path) = create_segment(&self.dir, last_lsn + 1, true)?;
        segs.push(SegmentEntry::new(last_lsn + 1, path.clone()));
        *io = WriterIo { file, path, len: SEGMENT_HEADER_BYTES, first_lsn: last_lsn + 1, index_last: None };
        Ok(())
    }

    /// Sets every watermark to `lsn` after a truncation or reset and tells
    /// the node about the new durable LSN.
    pub fn reset_watermarks(&self, q: &mut Queue, lsn: u64) {
        q.last_lsn = lsn;
        q.sync_target = q.sync_target.min(lsn);
        self.last_lsn.store(lsn, Ordering::Release);
        self.written_lsn.store(lsn, Ordering::Release);
        self.synced_lsn.store(lsn, Ordering::Release);
        let old = self.durable_lsn.swap(lsn, Ordering::AcqRel);
        if old != lsn {
            (self.on_durable)(lsn);
        }
        self.notify_waiters();
    }
}

/// Byte offset where record `lsn` starts in `seg`, or `seg.len` if `lsn`
/// is one past its last record.
fn locate(seg: &SegmentEntry, lsn: u64) -> Result<u64, StorageError> {
    use std::io::{Seek, SeekFrom};
    let path = &seg.path;
    let start = seg.seek_hint(lsn);
    let mut file = File::open(path).map_err(io_err("open segment", path))?;
    file.seek(SeekFrom::Start(start)).map_err(io_err("seek in segment", path))?;
    let mut scanner = Scanner::new(file, start, seg.len, 64 << 10);
    loop {
        match scanner.next().map_err(io_err("read segment", path))? {
            Step::Record { offset, header, .. } if header.lsn >= lsn => {
                if header.lsn != lsn {
                    return Err(corrupt(
                        path,
                        offset,
                        format!("lsn discontinuity (expected lsn {lsn}, found {})", header.lsn),
                    ));
                }
                return Ok(offset);
            }
            Step::Record { .. } => {}
            Step::End => return Ok(seg.len),
            Step::Bad { offset, bad } => return Err(corrupt(path, offset, bad.to_string())),
            Step::Truncated { offset, .. } => return Err(corrupt(path, offset, "record is incomplete")),
        }
    }
}
