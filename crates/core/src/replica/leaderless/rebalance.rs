//! Rebalancing a leaderless keyspace when the ring changes with membership:
//! which of this node's records must be streamed to which new owners, and
//! which records this node may forget once the new owners hold them.
//!
//! A [`Rebalance`] is planned from the ring the node was last balanced for
//! (`from`) to the current one (`to`) over the records the node holds. A
//! record's *targets* are the members of its new preference list that were
//! not in its old one (they may lack it), plus, when this node is no longer
//! in the new preference list, every member of it (the node is about to
//! forget the key, so it makes sure all new owners hold it first). Every
//! holder plans its own records: a key held by several old owners is sent
//! by each of them (the receiver applies last-writer-wins, so duplicates
//! change nothing: the transfer is idempotent and can be resumed by
//! planning again at any time).
//!
//! The driver (the node, the simulator) takes [`Rebalance::batch`]es for a
//! target, sends them, and reports with [`Rebalance::on_stored`] once the
//! target made them durable; only then does a `(key, target)` pair count
//! as moved, and only once every target of a key this node leaves holds
//! its version (or a newer one) is the key returned for dropping. A record
//! that became newer here meanwhile is sent again instead. Planning with
//! `from == to` finds only the keys this node holds without owning them
//! (a write that reached it under an old ring): the periodic sweep.
//!
//! Pure: no clock, no I/O; iteration is over ordered maps only.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::lww::Version;
use super::ring::Ring;
use super::store::{Record, ReplicaStore};
use crate::repl::NodeId;

/// Records per rebalance message at most.
pub const REBALANCE_BATCH_KEYS: usize = 256;

/// The transfers one node still has to make after a ring change.
#[derive(Debug, Clone, Default)]
pub struct Rebalance {
    /// Key -> targets that have not confirmed it yet.
    todo: BTreeMap<Bytes, BTreeSet<NodeId>>,
    /// Keys this node no longer owns under the new ring.
    leaving: BTreeSet<Bytes>,
}

/// What [`Rebalance::on_stored`] concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// `(key, target)` pairs confirmed moved by this answer.
    pub moved: usize,
    /// Keys (at the version this node holds) that every new owner now
    /// holds and that this node no longer owns: safe to forget.
    pub drop: Vec<(Bytes, Version)>,
}

impl Rebalance {
    /// Plans `me`'s transfers for the records in `store` when the ring
    /// goes from `from` to `to` (N replicas per key).
    pub fn plan(me: NodeId, from: &Ring, to: &Ring, n: usize, store: &ReplicaStore) -> Rebalance {
        let mut todo = BTreeMap::new();
        let mut leaving = BTreeSet::new();
        for rec in store.iter() {
            let new = to.preference_list(&rec.key, n);
            let mut targets: BTreeSet<NodeId> = if new.contains(&me) {
                if from == to {
                    continue;
                }
                let old = from.preference_list(&rec.key, n);
                new.iter().copied().filter(|t| !old.contains(t)).collect()
            } else {
                if new.is_empty() {
                    continue; // no member at all: nowhere to go, keep it
                }
                leaving.insert(rec.key.clone());
                new.iter().copied().collect()
            };
            targets.remove(&me);
            if !targets.is_empty() {
                todo.insert(rec.key.clone(), targets);
            }
        }
        Rebalance { todo, leaving }
    }

    /// True when nothing is left to send.
    pub fn is_done(&self) -> bool {
        self.todo.is_empty()
    }

    /// `(key, target)` pairs still to confirm.
    pub fn remaining(&self) -> usize {
        self.todo.values().map(BTreeSet::len).sum()
    }

    /// Keys planned (to send to at least one target).
    pub fn keys(&self) -> usize {
        self.todo.len()
    }

    /// Nodes that still have keys to receive, ascending.
    pub fn targets(&self) -> Vec<NodeId> {
        let mut t: BTreeSet<NodeId> = BTreeSet::new();
        for ts in self.todo.values() {
            t.extend(ts.iter().copied());
        }
        t.into_iter().collect()
    }

    /// The next records for `target`, in key order: at most `max_keys`
    /// records and about `max_bytes` (at least one). Keys this node no
    /// longer holds (forgotten by tombstone GC) are struck off the plan.
    pub fn batch(&mut self, target: NodeId, store: &ReplicaStore, max_keys: usize, max_bytes: usize) -> Vec<Record> {
        let mut out = Vec::new();
        let mut size = 0;
        let mut gone = Vec::new();
        for (key, targets) in &self.todo {
            if !targets.contains(&target) {
                continue;
            }
            let Some(rec) = store.get(key) else {
                gone.push(key.clone());
                continue;
            };
            if out.len() >= max_keys || (!out.is_empty() && size + rec.size_bytes() > max_bytes) {
                break;
            }
            size += rec.size_bytes();
            out.push(rec.clone());
        }
        for k in gone {
            self.todo.remove(&k);
            self.leaving.remove(&k);
        }
        out
    }

    /// `target` made these `(key, version)`s durable (or held newer ones
    /// already). A key counts as moved to it only if this node holds no
    /// newer version by now; otherwise it stays planned and is sent again.
    pub fn on_stored(&mut self, target: NodeId, stored: &[(Bytes, Version)], store: &ReplicaStore) -> Stored {
        let mut out = Stored::default();
        for (key, version) in stored {
            let Some(targets) = self.todo.get_mut(key) else { continue };
            let mine = store.get(key).map(|r| r.version);
            if mine.is_some_and(|m| m > *version) || !targets.remove(&target) {
                continue;
            }
            out.moved += 1;
            if targets.is_empty() {
                self.todo.remove(key);
                if self.leaving.remove(key) {
                    if let Some(m) = mine {
                        out.drop.push((key.clone(), m));
                    }
                }
            }
        }
        out
    }

    /// `target` is no longer a member: nothing more is sent to it. Keys
    /// whose only remaining target it was are kept (not dropped): the next
    /// plan, over the ring without it, decides again.
    pub fn forget_target(&mut self, target: NodeId) {
        self.todo.retain(|k, ts| {
            ts.remove(&target);
            if ts.is_empty() {
                self.leaving.remove(k);
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ms: u64) -> Version {
        Version { physical_ms: ms, logical: 0, node: 1 }
    }

    fn rec(key: &str, ms: u64) -> Record {
        Record {
            key: Bytes::from(key.to_string()),
            value: Some(Bytes::from_static(b"x")),
            expires_at_ms: None,
            version: v(ms),
            seen: Default::default(),
        }
    }

    fn store_of(keys: &[String]) -> ReplicaStore {
        let mut s = ReplicaStore::new();
        for k in keys {
            s.apply(rec(k, 1));
        }
        s
    }

    /// Keys sent per target, keys dropped, pairs moved.
    type Drained = (BTreeMap<NodeId, Vec<Bytes>>, Vec<(Bytes, Version)>, usize);

    fn drain(rb: &mut Rebalance, store: &ReplicaStore) -> Drained {
        let mut sent: BTreeMap<NodeId, Vec<Bytes>> = BTreeMap::new();
        let mut dropped = Vec::new();
        let mut moved = 0;
        while !rb.is_done() {
            for t in rb.targets() {
                let b = rb.batch(t, store, 7, usize::MAX);
                let stored: Vec<(Bytes, Version)> = b.iter().map(|r| (r.key.clone(), r.version)).collect();
                sent.entry(t).or_default().extend(stored.iter().map(|(k, _)| k.clone()));
                let s = rb.on_stored(t, &stored, store);
                moved += s.moved;
                dropped.extend(s.drop);
            }
        }
        (sent, dropped, moved)
    }

    #[test]
    fn rebalance_sends_each_key_to_exactly_its_new_owners_and_drops_what_this_node_left() {
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let (from, to) = (Ring::new(1..=3), Ring::new(1..=4));
        let n = 2;
        let mut all_sent: BTreeMap<(Bytes, NodeId), usize> = BTreeMap::new();
        for me in 1..=3 {
            // `me` holds the keys it owned under the old ring.
            let held: Vec<String> =
                keys.iter().filter(|k| from.preference_list(k.as_bytes(), n).contains(&me)).cloned().collect();
            let store = store_of(&held);
            let mut rb = Rebalance::plan(me, &from, &to, n, &store);
            let (sent, dropped, moved) = drain(&mut rb, &store);
            assert_eq!(moved, sent.values().map(Vec::len).sum::<usize>());
            let dropped_keys: BTreeSet<Bytes> = dropped.iter().map(|(k, _)| k.clone()).collect();
            for (t, ks) in &sent {
                for k in ks {
                    assert!(to.preference_list(k, n).contains(t), "{k:?} sent to {t}, not a new owner");
                    if *t != 4 {
                        // An old owner only gets a key from a node that leaves it.
                        assert!(dropped_keys.contains(k), "{k:?} sent to the old owner {t}");
                        continue;
                    }
                    *all_sent.entry((k.clone(), *t)).or_default() += 1;
                }
            }
            for (k, ver) in &dropped {
                assert_eq!(*ver, v(1));
                assert!(!to.preference_list(k, n).contains(&me), "dropped a key it still owns");
                assert!(sent[&4].contains(k), "dropped a key before the new owner had it");
            }
            let leaving = held.iter().filter(|k| !to.preference_list(k.as_bytes(), n).contains(&me)).count();
            assert_eq!(dropped.len(), leaving);
        }
        // Node 4 gets every key whose new preference list holds it, and
        // only those.
        let want: BTreeSet<Bytes> = keys
            .iter()
            .filter(|k| to.preference_list(k.as_bytes(), n).contains(&4))
            .map(|k| Bytes::from(k.clone()))
            .collect();
        let got: BTreeSet<Bytes> = all_sent.keys().map(|(k, _)| k.clone()).collect();
        assert_eq!(got, want);
        let share = want.len() as f64 / keys.len() as f64;
        assert!((0.35..0.65).contains(&share), "about N/members of the keys move: {share}");
    }

    #[test]
    fn rebalance_resends_a_key_written_meanwhile_and_keeps_it_until_confirmed() {
        let (from, to) = (Ring::new([1, 2]), Ring::new([3]));
        let mut store = store_of(&["a".to_string(), "b".to_string()]);
        let mut rb = Rebalance::plan(1, &from, &to, 1, &store);
        assert_eq!(rb.targets(), vec![3]);
        assert_eq!(rb.keys(), 2);
        let b = rb.batch(3, &store, 10, usize::MAX);
        assert_eq!(b.len(), 2);
        // A newer write of "a" arrives before the answer.
        store.apply(rec("a", 5));
        let s = rb.on_stored(3, &[(Bytes::from("a"), v(1)), (Bytes::from("b"), v(1))], &store);
        assert_eq!(s, Stored { moved: 1, drop: vec![(Bytes::from("b"), v(1))] });
        assert!(!rb.is_done());
        let b = rb.batch(3, &store, 10, usize::MAX);
        assert_eq!(b, vec![rec("a", 5)]);
        // Duplicate answers are harmless (idempotent).
        let s = rb.on_stored(3, &[(Bytes::from("a"), v(5)), (Bytes::from("b"), v(1))], &store);
        assert_eq!(s.moved, 1);
        assert!(rb.is_done());
    }

    #[test]
    fn rebalance_with_an_unchanged_ring_finds_only_keys_this_node_does_not_own() {
        let ring = Ring::new(1..=4);
        let keys: Vec<String> = (0..500).map(|i| format!("s{i}")).collect();
        let store = store_of(&keys);
        let rb = Rebalance::plan(1, &ring, &ring, 2, &store);
        let foreign = keys.iter().filter(|k| !ring.preference_list(k.as_bytes(), 2).contains(&1)).count();
        assert_eq!(rb.keys(), foreign);
        assert!(rb.targets().iter().all(|t| *t != 1));
        // Forgetting a target keeps its keys: nothing is dropped unconfirmed.
        let mut rb2 = rb.clone();
        for t in rb.targets() {
            rb2.forget_target(t);
        }
        assert!(rb2.is_done());
        assert!(rb2.leaving.is_empty());
    }

    #[test]
    fn rebalance_batches_respect_the_key_and_byte_limits() {
        let ring = Ring::new([2]);
        let keys: Vec<String> = (0..50).map(|i| format!("b{i:02}")).collect();
        let store = store_of(&keys);
        let mut rb = Rebalance::plan(1, &ring, &ring, 1, &store);
        assert_eq!(rb.batch(2, &store, 10, usize::MAX).len(), 10);
        assert_eq!(rb.batch(2, &store, 100, 1).len(), 1, "at least one record, past the byte limit");
        let per = rec("b00", 1).size_bytes();
        assert_eq!(rb.batch(2, &store, 100, per * 3).len(), 3);
    }
}
