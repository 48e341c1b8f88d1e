//! One node's conflict feed of one leaderless keyspace: the
//! last-writer-wins resolutions its replica made (see
//! [`super::store::ReplicaStore::apply_resolving`]), newest last, with
//! increasing ids, in the item format of multi-leader keyspaces so that
//! `GET /conflicts` and `CONFLICTS` show both alike.
//!
//! Owns the bounded list only ([`CONFLICT_FEED_MAX`], oldest dropped
//! first) and the running total; never decides what a conflict is, never
//! reads a clock (`now_ms` comes in).

use std::collections::VecDeque;

use crate::conflict::ConflictRecord;
pub use crate::replica::multi_leader::{FeedItem, CONFLICT_FEED_MAX};

/// The feed.
#[derive(Debug, Clone)]
pub struct ConflictFeed {
    items: VecDeque<FeedItem>,
    next_id: u64,
    total: u64,
}

impl Default for ConflictFeed {
    fn default() -> Self {
        ConflictFeed { items: VecDeque::new(), next_id: 1, total: 0 }
    }
}

impl ConflictFeed {
    /// An empty feed.
    pub fn new() -> ConflictFeed {
        ConflictFeed::default()
    }

    /// Records a resolution made at `now_ms`.
    pub fn push(&mut self, record: ConflictRecord, now_ms: u64) {
        if self.items.len() == CONFLICT_FEED_MAX {
            self.items.pop_front();
        }
        self.items.push_back(FeedItem { id: self.next_id, at_ms: now_ms, record });
        self.next_id += 1;
        self.total += 1;
    }

    /// Newest first: items with an id above `since`, at most `count`.
    pub fn since(&self, since: u64, count: usize) -> impl Iterator<Item = &FeedItem> {
        self.items.iter().rev().take_while(move |f| f.id > since).take(count)
    }

    /// Resolutions recorded since start (including those dropped from the
    /// list).
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::replica::leaderless::store::{discarded, Record};
    use crate::replica::leaderless::Version;

    #[test]
    fn feed_keeps_the_newest_items_with_increasing_ids() {
        let rec = |ms| Record {
            key: Bytes::from_static(b"k"),
            value: Some(Bytes::from_static(b"v")),
            expires_at_ms: None,
            version: Version { physical_ms: ms, logical: 0, node: 1 },
            seen: Default::default(),
        };
        let mut f = ConflictFeed::new();
        for i in 0..(CONFLICT_FEED_MAX as u64 + 5) {
            f.push(discarded(&rec(i + 1), &rec(i)), i);
        }
        assert_eq!(f.total(), CONFLICT_FEED_MAX as u64 + 5);
        let ids: Vec<u64> = f.since(CONFLICT_FEED_MAX as u64 + 2, 10).map(|i| i.id).collect();
        assert_eq!(ids, vec![CONFLICT_FEED_MAX as u64 + 5, CONFLICT_FEED_MAX as u64 + 4, CONFLICT_FEED_MAX as u64 + 3]);
        assert_eq!(f.since(0, usize::MAX).count(), CONFLICT_FEED_MAX);
    }
}
