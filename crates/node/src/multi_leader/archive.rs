//! Archiving one multi-leader keyspace's log to the backup repository
//! (`--backup-repo`): `R/multi-leader/<keyspace>/node-<id>.log`
//! (`tandem_backup::multi_leader`).
//!
//! Owns a plain thread (the repository may be a slow remote filesystem; a
//! stalled write must never block the runtime) that wakes every
//! `archive_interval_ms` and appends the records the log writer handed it
//! once they were durable locally, so every origin's writes that reached
//! this node are archived (own and received). At start it compares the
//! replayed log with what the archive holds per origin and queues what the
//! archive lacks (records written while the repository was unreachable or
//! before archiving was switched on). A failed pass keeps the records and
//! retries; `/status` shows the error. Never archives a record that is not
//! durable locally, never decides anything about replication.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;
use tandem_backup::multi_leader::MlArchiveWriter;
use tandem_backup::Repository;
use tandem_core::replica::multi_leader::MlEntry;

use super::log::encode_record;

/// Sleep step of the archiver thread while it waits for the next pass.
const POLL: Duration = Duration::from_millis(20);

/// Records waiting for the archive, and what was shipped.
pub struct MlArchive {
    keyspace: String,
    node_id: u64,
    repo: PathBuf,
    interval: Duration,
    pending: Mutex<Vec<u8>>,
    /// Records of the replayed log, kept until the archive is opened (then
    /// those it lacks are queued first).
    replayed: Mutex<Option<Vec<MlEntry>>>,
    archived_records: AtomicU64,
    archived_bytes: AtomicU64,
    last_error: Mutex<Option<String>>,
    closing: AtomicBool,
}

impl MlArchive {
    /// Starts archiving keyspace `keyspace` of node `node_id` into `repo`;
    /// `replayed` is the log as replayed at start.
    pub fn start(
        keyspace: &str,
        node_id: u64,
        repo: PathBuf,
        interval_ms: u64,
        replayed: Vec<MlEntry>,
    ) -> Arc<MlArchive> {
        let a = Arc::new(MlArchive {
            keyspace: keyspace.to_string(),
            node_id,
            repo,
            interval: Duration::from_millis(interval_ms.max(1)),
            pending: Mutex::new(Vec::new()),
            replayed: Mutex::new(Some(replayed)),
            archived_records: AtomicU64::new(0),
            archived_bytes: AtomicU64::new(0),
            last_error: Mutex::new(None),
            closing: AtomicBool::new(false),
        });
        let t = a.clone();
        let name = format!("ml-archive-{keyspace}");
        if let Err(e) = std::thread::Builder::new().name(name).spawn(move || t.run()) {
            *a.last_error.lock() = Some(format!("cannot start the archiver thread: {e}"));
        }
        a
    }

    /// Records now durable in the local log.
    pub fn push(&self, records: &[u8]) {
        self.pending.lock().extend_from_slice(records);
    }

    /// Ends after a last pass.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The `archive` part of the keyspace's status.
    pub fn status_json(&self) -> serde_json::Value {
        json!({
            "repo": self.repo.display().to_string(),
            "archived_records": self.archived_records.load(Ordering::Acquire),
            "archived_bytes": self.archived_bytes.load(Ordering::Acquire),
            "pending_bytes": self.pending.lock().len(),
            "last_error": self.last_error.lock().clone(),
        })
    }

    fn run(self: Arc<Self>) {
        let mut writer: Option<MlArchiveWriter> = None;
        loop {
            let closing = self.closing.load(Ordering::Acquire);
            if writer.is_none() {
                match self.open() {
                    Ok(w) => writer = Some(w),
                    Err(e) => self.fail(e),
                }
            }
            if let Some(w) = writer.as_mut() {
                let batch = std::mem::take(&mut *self.pending.lock());
                if !batch.is_empty() {
                    match w.append(&batch) {
                        Ok(()) => {
                            self.archived_records.store(w.manifest().records, Ordering::Release);
                            self.archived_bytes.store(w.manifest().bytes, Ordering::Release);
                            *self.last_error.lock() = None;
                        }
                        Err(e) => {
                            // Keep them, in order, ahead of newer records.
                            let mut p = self.pending.lock();
                            let newer = std::mem::replace(&mut *p, batch);
                            p.extend_from_slice(&newer);
                            drop(p);
                            self.fail(e.to_string());
                            writer = None;
                        }
                    }
                }
            }
            if closing {
                return;
            }
            let mut waited = Duration::ZERO;
            while waited < self.interval && !self.closing.load(Ordering::Acquire) {
                std::thread::sleep(POLL);
                waited += POLL;
            }
        }
    }

    /// Opens the repository and this node's archive of the keyspace, and
    /// queues the replayed records it lacks (per origin, by sequence).
    fn open(&self) -> Result<MlArchiveWriter, String> {
        let repo = Repository::create_or_open(&self.repo).map_err(|e| e.to_string())?;
        let (w, archived) = MlArchiveWriter::open(&repo, &self.keyspace, self.node_id).map_err(|e| e.to_string())?;
        let mut have: BTreeMap<u64, u64> = BTreeMap::new();
        for e in &archived {
            let s = have.entry(e.origin).or_default();
            *s = (*s).max(e.seq);
        }
        self.archived_records.store(w.manifest().records, Ordering::Release);
        self.archived_bytes.store(w.manifest().bytes, Ordering::Release);
        if let Some(replayed) = self.replayed.lock().take() {
            let mut missing = Vec::new();
            for e in replayed.iter().filter(|e| e.seq > have.get(&e.origin).copied().unwrap_or(0)) {
                encode_record(e, &mut missing);
            }
            let mut p = self.pending.lock();
            let newer = std::mem::replace(&mut *p, missing);
            p.extend_from_slice(&newer);
        }
        Ok(w)
    }

    fn fail(&self, why: String) {
        tracing::warn!(keyspace = self.keyspace.as_str(), error = %why, "multi-leader archive pass failed; retrying");
        *self.last_error.lock() = Some(why);
    }
}
