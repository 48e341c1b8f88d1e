//! The simulated disk of one node: a log (optionally on top of a snapshot)
//! and a synced watermark.
//!
//! Owns what survives a crash: everything up to the synced LSN, and a
//! snapshot once a sync covered it. A crash drops the unsynced tail (and an
//! unsynced snapshot together with everything after it). Must never decide
//! when a sync happens or how long it takes: the world schedules that.

use bytes::Bytes;
use tandem_core::repl::WireEntry;
use tandem_core::store::Store;
use tandem_core::Lsn;

/// One node's log on disk.
#[derive(Debug, Default)]
pub struct Disk {
    /// The snapshot the log starts after (0: none).
    base_lsn: Lsn,
    base_chunks: Vec<Bytes>,
    /// A sync has covered the snapshot.
    base_synced: bool,
    /// Entries `base_lsn + 1 ..`.
    entries: Vec<WireEntry>,
    synced_lsn: Lsn,
    /// Bumped whenever the contents are discarded, so syncs started before
    /// do not complete onto the new contents.
    generation: u64,
}

impl Disk {
    /// An empty disk.
    pub fn new() -> Disk {
        Disk { base_synced: true, ..Disk::default() }
    }

    /// The last LSN written (synced or not).
    pub fn last_lsn(&self) -> Lsn {
        self.base_lsn + self.entries.len() as Lsn
    }

    /// Everything up to here survives a crash.
    pub fn synced_lsn(&self) -> Lsn {
        self.synced_lsn
    }

    /// Whether a sync has covered the snapshot the log starts after.
    pub fn snapshot_synced(&self) -> bool {
        self.base_synced
    }

    /// The generation (see the field doc).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The snapshot LSN the log starts after.
    pub fn base_lsn(&self) -> Lsn {
        self.base_lsn
    }

    /// The snapshot's chunks, as written by [`Disk::install_snapshot`].
    pub fn base_chunks(&self) -> &[Bytes] {
        &self.base_chunks
    }

    /// Entries after the snapshot.
    pub fn entries(&self) -> &[WireEntry] {
        &self.entries
    }

    /// The entry at `lsn`, if written and not below the snapshot.
    pub fn entry(&self, lsn: Lsn) -> Option<&WireEntry> {
        if lsn <= self.base_lsn {
            return None;
        }
        self.entries.get((lsn - self.base_lsn - 1) as usize)
    }

    /// Appends the next entry.
    pub fn append(&mut self, entry: WireEntry) {
        assert_eq!(entry.lsn, self.last_lsn() + 1, "disk append out of order");
        self.entries.push(entry);
    }

    /// Removes every entry after `lsn` (they went to a rollback file);
    /// everything if `lsn` is below the snapshot. The cut is durable at once
    /// and syncs in flight no longer count.
    pub fn truncate_after(&mut self, lsn: Lsn) {
        if lsn < self.base_lsn {
            self.discard();
            return;
        }
        self.entries.truncate((lsn - self.base_lsn) as usize);
        self.synced_lsn = self.synced_lsn.min(lsn);
        self.generation += 1;
    }

    /// Log compaction: folds the synced entries up to `lsn` into a new
    /// snapshot (`chunks`, holding everything up to `lsn`), so the log no
    /// longer holds them for streaming. Durable at once, like the synced
    /// entries it replaces.
    pub fn compact(&mut self, lsn: Lsn, chunks: Vec<Bytes>) {
        assert!(self.base_synced, "compaction over an unsynced snapshot");
        assert!(self.base_lsn <= lsn && lsn <= self.synced_lsn, "compaction past the synced log");
        self.entries.drain(..(lsn - self.base_lsn) as usize);
        self.base_lsn = lsn;
        self.base_chunks = chunks;
    }

    /// Throws everything away (a snapshot is coming, or the disk was wiped).
    pub fn discard(&mut self) {
        *self = Disk { generation: self.generation + 1, base_synced: true, ..Disk::default() };
    }

    /// Writes a received snapshot onto an empty disk; durable at the next
    /// sync.
    pub fn install_snapshot(&mut self, start_lsn: Lsn, chunks: Vec<Bytes>) {
        assert!(self.entries.is_empty() && self.base_lsn == 0, "snapshot onto a non-empty disk");
        self.base_lsn = start_lsn;
        self.base_chunks = chunks;
        self.base_synced = false;
    }

    /// Replaces the whole disk with a received snapshot in one durable step,
    /// as the node does (the snapshot file is written aside and fsynced,
    /// then swapped in): before it, the old log is intact; after it, the
    /// snapshot is durable.
    pub fn replace_with_snapshot(&mut self, start_lsn: Lsn, chunks: Vec<Bytes>) {
        self.discard();
        self.install_snapshot(start_lsn, chunks);
        self.base_synced = true;
        self.synced_lsn = start_lsn;
    }

    /// What a sync started now would make durable: the last LSN, if
    /// anything (entries or a snapshot) is not synced yet.
    pub fn pending_sync(&self) -> Option<Lsn> {
        let target = self.last_lsn();
        let snapshot_pending = self.base_lsn > self.synced_lsn;
        (target != self.synced_lsn || snapshot_pending).then_some(target)
    }

    /// A sync of everything written up to `target` (in `generation`)
    /// completed.
    pub fn synced(&mut self, generation: u64, target: Lsn) -> bool {
        if generation != self.generation || target <= self.synced_lsn && self.base_synced {
            return false;
        }
        assert!(target <= self.last_lsn(), "sync past the written log");
        self.base_synced = true;
        self.synced_lsn = self.synced_lsn.max(target);
        true
    }

    /// The process died: unsynced writes are gone.
    pub fn crash(&mut self) {
        if !self.base_synced {
            self.discard();
            return;
        }
        let keep = (self.synced_lsn - self.base_lsn) as usize;
        self.entries.truncate(keep);
    }

    /// Rebuilds the store from what is on disk (after a crash: all synced).
    /// Returns the highest epoch seen.
    pub fn recover(&self, store: &mut Store) -> u64 {
        for chunk in &self.base_chunks {
            store.load_chunk(chunk).expect("the simulator wrote this chunk");
        }
        let mut epoch = 0;
        for e in &self.entries {
            let entry = tandem_core::effect::LogEntry::decode_payload(e.lsn, e.epoch, &e.payload)
                .expect("the simulator wrote this payload");
            for effect in &entry.effects {
                store.apply(effect);
            }
            epoch = epoch.max(e.epoch);
        }
        epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lsn: Lsn) -> WireEntry {
        WireEntry { lsn, epoch: 1, payload: Bytes::new() }
    }

    #[test]
    fn a_crash_keeps_exactly_the_synced_prefix() {
        let mut d = Disk::new();
        for lsn in 1..=5 {
            d.append(entry(lsn));
        }
        assert!(d.synced(0, 3));
        d.crash();
        assert_eq!((d.last_lsn(), d.synced_lsn()), (3, 3));
    }

    #[test]
    fn an_unsynced_snapshot_is_lost_with_everything_after_it() {
        let mut d = Disk::new();
        d.append(entry(1));
        d.discard();
        assert!(!d.synced(0, 1), "a sync of the discarded contents does not count");
        d.install_snapshot(10, vec![]);
        d.append(entry(11));
        d.crash();
        assert_eq!((d.last_lsn(), d.synced_lsn(), d.base_lsn()), (0, 0, 0));
        d.install_snapshot(10, vec![]);
        assert!(d.synced(d.generation(), 10));
        d.append(entry(11));
        d.crash();
        assert_eq!((d.last_lsn(), d.synced_lsn()), (10, 10));
    }
}
