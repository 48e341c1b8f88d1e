//! Continuous log archiving to the backup repository (`backup_repo`), the
//! archive lag it reports (the backup RPO), and the `rpo_max_ms` write
//! refusal.
//!
//! A plain thread (the repository may be a slow remote filesystem; a stalled
//! write must never block the tokio runtime) wakes every
//! `archive_interval_ms`, reads the durable log records the archive lacks
//! and appends them to this node's archive stream through
//! [`tandem_backup::archive::ArchiveWriter`] (data fsynced before its
//! manifest). While records are unshipped it holds the log: snapshots do not
//! truncate segments the archive still needs.
//!
//! Archive lag = 0 when everything appended is archived, otherwise the time
//! since the start of the last pass that completed (every entry committed
//! before that instant is in the archive). It never ships a record that is
//! not durable locally, and never archives a log that diverged from its
//! stream (a data directory restored or reset behind what the stream holds):
//! it stops and says why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use tandem_backup::archive::ArchiveWriter;
use tandem_backup::Repository;

use crate::config::Config;
use crate::db::{unix_ms, Db};
use crate::metrics::Metrics;
use crate::server::Shared;

/// Most record bytes read from the log (and appended) per step of a pass.
const ARCHIVE_BATCH_BYTES_MAX: usize = 8 << 20;
/// How long a pass waits for appended records to become durable before it
/// ends (they are shipped by the next pass).
const DURABLE_WAIT_MAX: Duration = Duration::from_millis(500);
/// Poll step while waiting for durability.
const DURABLE_POLL: Duration = Duration::from_millis(2);

/// The archiver's shared state: what it shipped, when it last caught up,
/// and its last error.
pub struct ArchiveState {
    repo_display: String,
    rpo_max_ms: u64,
    archived_lsn: AtomicU64,
    archived_commit_ms: AtomicU64,
    /// Unix ms at the start of the last pass that shipped everything then appended.
    caught_up_at_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    stop_tx: Mutex<Option<mpsc::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ArchiveState {
    /// Archive lag in ms given the node's last LSN and the time now.
    pub fn lag_ms(&self, last_lsn: u64, now_ms: u64) -> u64 {
        if self.archived_lsn.load(Ordering::Acquire) >= last_lsn {
            0
        } else {
            now_ms.saturating_sub(self.caught_up_at_ms.load(Ordering::Acquire))
        }
    }

    /// Asks the archiver for a last pass and waits for it (graceful shutdown).
    pub fn stop(&self) {
        drop(self.stop_tx.lock().take());
        if let Some(handle) = self.thread.lock().take() {
            if handle.join().is_err() {
                tracing::error!("the log archiver thread panicked");
            }
        }
    }

    /// The `archive` section of `/status`.
    /// `last_lsn` / `last_commit_ms`: the node's newest entry (what a loss
    /// right now would be measured against).
    pub fn status_json(&self, last_lsn: u64, last_commit_ms: u64) -> serde_json::Value {
        let now = unix_ms();
        serde_json::json!({
            "repository": self.repo_display,
            "archived_lsn": self.archived_lsn.load(Ordering::Acquire),
            "archived_commit_ms": self.archived_commit_ms.load(Ordering::Acquire),
            "last_lsn": last_lsn,
            "last_commit_ms": last_commit_ms,
            "lag_lsn": last_lsn.saturating_sub(self.archived_lsn.load(Ordering::Acquire)),
            "lag_ms": self.lag_ms(last_lsn, now),
            "rpo_max_ms": self.rpo_max_ms,
            "last_error": self.last_error.lock().clone(),
        })
    }
}

/// Starts the archiver if `backup_repo` is set.
pub fn start(config: &Config, db: Arc<Db>, metrics: Arc<Metrics>) -> Option<Arc<ArchiveState>> {
    let repo = config.backup_repo.clone()?;
    let (stop_tx, stop_rx) = mpsc::channel();
    let state = Arc::new(ArchiveState {
        repo_display: repo.display().to_string(),
        rpo_max_ms: config.rpo_max_ms,
        archived_lsn: AtomicU64::new(0),
        archived_commit_ms: AtomicU64::new(0),
        caught_up_at_ms: AtomicU64::new(unix_ms()),
        last_error: Mutex::new(None),
        stop_tx: Mutex::new(Some(stop_tx)),
        thread: Mutex::new(None),
    });
    // Hold the whole log until the first pass knows what the archive has.
    db.hold_log_from(0);
    let interval = Duration::from_millis(config.archive_interval_ms);
    let stream = Stream { repo, node_id: config.node_id, file_bytes_max: config.archive_file_bytes_max };
    let thread_state = state.clone();
    let handle = std::thread::Builder::new()
        .name("tandem-archiver".into())
        .spawn(move || run(stream, interval, db, metrics, thread_state, stop_rx))
        .expect("spawn the log archiver thread");
    *state.thread.lock() = Some(handle);
    Some(state)
}

/// Where this node archives to.
struct Stream {
    repo: std::path::PathBuf,
    node_id: u64,
    file_bytes_max: u64,
}

fn run(
    stream: Stream,
    interval: Duration,
    db: Arc<Db>,
    metrics: Arc<Metrics>,
    state: Arc<ArchiveState>,
    stop: mpsc::Receiver<()>,
) {
    let mut writer: Option<ArchiveWriter> = None;
    loop {
        let started_ms = unix_ms();
        let target = db.last_lsn();
        match pass(&stream, &db, &mut writer, target) {
            Ok(caught_up) => {
                let w = writer.as_ref().expect("a successful pass opened the writer");
                state.archived_lsn.store(w.archived_lsn(), Ordering::Release);
                state.archived_commit_ms.store(w.archived_commit_ms(), Ordering::Release);
                if caught_up {
                    state.caught_up_at_ms.store(started_ms, Ordering::Release);
                }
                db.hold_log_from(w.archived_lsn() + 1);
                if state.last_error.lock().take().is_some() {
                    tracing::info!(repository = %stream.repo.display(), "log archiving recovered");
                }
            }
            Err(e) => {
                // Reopen next time: the writer's view of the stream may be stale.
                writer = None;
                metrics.archive_failures.inc();
                let mut last = state.last_error.lock();
                if last.as_deref() != Some(e.as_str()) {
                    tracing::error!(repository = %stream.repo.display(), error = %e, "log archiving failed; retrying");
                }
                *last = Some(e);
            }
        }
        match stop.recv_timeout(interval) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Last pass: everything durable at shutdown goes out.
                let target = db.last_lsn();
                if let Err(e) = pass(&stream, &db, &mut writer, target) {
                    tracing::error!(error = %e, "final log archive pass failed");
                } else if let Some(w) = &writer {
                    state.archived_lsn.store(w.archived_lsn(), Ordering::Release);
                }
                return;
            }
        }
    }
}

/// Ships durable records up to `target`. Returns whether it got there.
fn pass(stream: &Stream, db: &Db, writer: &mut Option<ArchiveWriter>, target: u64) -> Result<bool, String> {
    if writer.is_none() {
        let repo = Repository::create_or_open(&stream.repo).map_err(|e| e.to_string())?;
        let w =
            ArchiveWriter::open_with_limit(&repo, stream.node_id, stream.file_bytes_max).map_err(|e| e.to_string())?;
        if w.archived_lsn() > db.last_lsn() {
            return Err(format!(
                "archive stream {} already holds lsn {} but this node's log ends at lsn {}: the data directory was \
                 restored or reset behind it; archiving is stopped (give this node another node_id or another backup_repo)",
                repo.stream_dir(stream.node_id).display(),
                w.archived_lsn(),
                db.last_lsn()
            ));
        }
        *writer = Some(w);
    }
    let w = writer.as_mut().expect("opened above");
    let waited_since = std::time::Instant::now();
    while w.archived_lsn() < target {
        let first_retained = db.first_retained_lsn();
        let from = (w.archived_lsn() + 1).max(first_retained);
        let records = match db.log().read_from(from, ARCHIVE_BATCH_BYTES_MAX) {
            Ok(r) => r,
            Err(e) => return Err(format!("reading the log from lsn {from}: {e}")),
        };
        if records.is_empty() {
            if waited_since.elapsed() > DURABLE_WAIT_MAX {
                return Ok(false);
            }
            std::thread::sleep(DURABLE_POLL);
            continue;
        }
        w.append(records.iter().map(|r| (r.lsn, r.epoch, r.payload.as_slice()))).map_err(|e| e.to_string())?;
    }
    Ok(true)
}

/// The `rpo_max_ms` check, called before a write command runs: an error
/// text while the archive lag exceeds the declared loss budget.
pub fn rpo_budget_error(shared: &Shared) -> Option<String> {
    let state = shared.archive.as_ref()?;
    if state.rpo_max_ms == 0 {
        return None;
    }
    let lag = state.lag_ms(shared.db.last_lsn(), unix_ms());
    if lag <= state.rpo_max_ms {
        return None;
    }
    let why = state.last_error.lock().clone().map(|e| format!(": {e}")).unwrap_or_default();
    Some(format!(
        "RPOBUDGET write refused: archive lag {lag} ms exceeds rpo_max_ms {} (backup repository {} is behind{why}); writes resume when it catches up",
        state.rpo_max_ms, state.repo_display
    ))
}

/// Copies the archive lag and LSN into the metrics.
pub fn refresh_metrics(shared: &Shared) {
    if let Some(state) = &shared.archive {
        let m = &shared.metrics;
        m.archive_lsn.set(state.archived_lsn.load(Ordering::Acquire) as i64);
        m.archive_lag_seconds.set(state.lag_ms(shared.db.last_lsn(), unix_ms()) as f64 / 1000.0);
    }
}
