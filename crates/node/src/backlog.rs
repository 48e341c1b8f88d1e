//! The replication backlog: the most recent log entries kept in memory, so
//! a leader streams to caught-up followers without reading its log files
//! (Redis's repl-backlog). Followers further behind are served from the log
//! on disk, and ones behind the log from a snapshot.
//!
//! Owns only recent encoded entries and their commit times; bounded by
//! `BACKLOG_BYTES_MAX`. Never decides what to send.

use std::collections::VecDeque;

use bytes::Bytes;
use tandem_core::repl::WireEntry;
use tandem_core::{Epoch, Lsn};

/// Memory the backlog of a clustered node may use (payloads plus per-entry
/// bookkeeping); the oldest entries are dropped first. A standalone node
/// keeps no backlog: no follower can subscribe to it.
pub const BACKLOG_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bookkeeping charged per entry besides its payload (the queue slot and
/// the payload allocation's header and rounding).
const ENTRY_OVERHEAD_BYTES: usize = std::mem::size_of::<Item>() + 32;

/// One entry in the backlog.
#[derive(Clone)]
struct Item {
    epoch: Epoch,
    commit_ms: u64,
    payload: Bytes,
}

/// Recent entries, consecutive by LSN.
pub struct Backlog {
    items: VecDeque<Item>,
    /// LSN of `items[0]`.
    first_lsn: Lsn,
    bytes: usize,
    capacity_bytes: usize,
}

impl Backlog {
    /// A backlog that keeps up to `capacity_bytes` (0: keeps nothing).
    pub fn new(capacity_bytes: usize) -> Backlog {
        Backlog { items: VecDeque::new(), first_lsn: 0, bytes: 0, capacity_bytes }
    }

    /// Appends the entry `lsn`, which must follow the last one (or start the
    /// backlog afresh after a gap, e.g. after a snapshot install).
    pub fn push(&mut self, lsn: Lsn, epoch: Epoch, commit_ms: u64, payload: Bytes) {
        if self.capacity_bytes == 0 {
            return;
        }
        if self.items.is_empty() || lsn != self.first_lsn + self.items.len() as u64 {
            self.clear();
            self.first_lsn = lsn;
        }
        self.bytes += payload.len() + ENTRY_OVERHEAD_BYTES;
        self.items.push_back(Item { epoch, commit_ms, payload });
        while self.bytes > self.capacity_bytes && self.items.len() > 1 {
            let old = self.items.pop_front().expect("non-empty");
            self.bytes -= old.payload.len() + ENTRY_OVERHEAD_BYTES;
            self.first_lsn += 1;
        }
    }

    /// Forgets everything (log reset).
    pub fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }

    /// Oldest LSN held, if any.
    pub fn first_lsn(&self) -> Option<Lsn> {
        (!self.items.is_empty()).then_some(self.first_lsn)
    }

    /// Commit time of entry `lsn`, if held.
    pub fn commit_ms(&self, lsn: Lsn) -> Option<u64> {
        self.item(lsn).map(|i| i.commit_ms)
    }

    fn item(&self, lsn: Lsn) -> Option<&Item> {
        lsn.checked_sub(self.first_lsn).and_then(|i| self.items.get(i as usize))
    }

    /// Entries from `from_lsn` on, up to about `max_bytes` (at least one),
    /// or `None` if `from_lsn` is no longer (or not yet) held.
    pub fn read(&self, from_lsn: Lsn, max_bytes: usize) -> Option<Vec<WireEntry>> {
        self.item(from_lsn)?;
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut lsn = from_lsn;
        while let Some(item) = self.item(lsn) {
            if !out.is_empty() && bytes + item.payload.len() > max_bytes {
                break;
            }
            bytes += item.payload.len();
            out.push(WireEntry { lsn, epoch: item.epoch, payload: item.payload.clone() });
            lsn += 1;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_serves_consecutive_entries_and_forgets_the_oldest_past_its_bound() {
        let mut b = Backlog::new(BACKLOG_BYTES_MAX);
        for lsn in 1..=10 {
            b.push(lsn, 1, 100 + lsn, Bytes::from(vec![0u8; 10]));
        }
        assert_eq!(b.first_lsn(), Some(1));
        let got = b.read(3, 25).unwrap();
        assert_eq!(got.iter().map(|e| e.lsn).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(b.commit_ms(10), Some(110));
        assert!(b.read(11, 100).is_none());
        b.push(20, 1, 0, Bytes::new());
        assert_eq!(b.first_lsn(), Some(20), "a gap restarts the backlog");
        let big = Bytes::from(vec![0u8; BACKLOG_BYTES_MAX / 2]);
        b.push(21, 1, 0, big.clone());
        b.push(22, 1, 0, big);
        assert_eq!(b.first_lsn(), Some(22));
    }

    #[test]
    fn a_zero_capacity_backlog_keeps_nothing() {
        let mut b = Backlog::new(0);
        b.push(1, 1, 0, Bytes::from_static(b"x"));
        assert_eq!(b.first_lsn(), None);
        assert!(b.read(1, 100).is_none());
    }
}
