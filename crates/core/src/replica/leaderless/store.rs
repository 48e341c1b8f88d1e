//! One node's replica data of a leaderless keyspace: the newest version of
//! each key it holds (values, tombstones, absolute expiry times), the Merkle
//! tree over them, and the hints it keeps for other nodes.
//!
//! Deletes are tombstones: a delete is a write of "no value" with a version,
//! so a replica that missed it cannot bring the old value back through
//! anti-entropy or read repair (the tombstone's newer version wins). A
//! tombstone is dropped [`TOMBSTONE_GRACE_MS`] after its write; a replica
//! cut off for longer than that may resurrect the key (documented in
//! docs/leaderless.md). TTLs are absolute wall-clock times, so every
//! replica expires a key at the same moment. Pure: times come in as
//! `now_ms`.
//!
//! Concurrent versions: each record carries its causal context
//! ([`Seen`]). When [`ReplicaStore::apply_resolving`] keeps one version of
//! a key over another that the kept one had not seen, that is a
//! last-writer-wins resolution of concurrent writes and it returns a
//! [`ConflictRecord`] for the conflict feed; the kept record's context then
//! covers the loser, so the same discarded version is reported at most
//! once by this replica, and not again by the replicas the merged record
//! reaches later (see docs/leaderless.md, "Conflicts").

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::lww::{self, Seen, Version};
use super::merkle::Merkle;
use crate::conflict::{ConflictRecord, ConflictVersion, Outcome, CONFLICT_VALUE_PREVIEW_BYTES_MAX};
use crate::keyspace::ConflictPolicy;
use crate::repl::NodeId;

/// How long a tombstone (or an expired record) is kept before it is
/// dropped: longer than any partition anti-entropy is expected to repair.
pub const TOMBSTONE_GRACE_MS: u64 = 24 * 60 * 60 * 1000;

/// Hints a node keeps for all other nodes together; past it, a sloppy write
/// that needs a hint fails over to the next fallback.
pub const HINTS_MAX: usize = 100_000;

/// One versioned write of one key, as replicas store and exchange it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// The value; `None` is a tombstone (the key was deleted).
    pub value: Option<Bytes>,
    /// Absolute expiry time, wall-clock ms (`SET .. EX`), if any.
    pub expires_at_ms: Option<u64>,
    /// The write's version.
    pub version: Version,
    /// The write's causal context: the versions of the key its coordinator
    /// had seen when it made it (besides its own).
    #[serde(default)]
    pub seen: Seen,
}

impl Record {
    /// The value a read sees at `now_ms`: none for tombstones and expired
    /// records.
    pub fn live_value(&self, now_ms: u64) -> Option<&Bytes> {
        match self.expires_at_ms {
            Some(at) if at <= now_ms => None,
            _ => self.value.as_ref(),
        }
    }

    /// When the record may be forgotten: a tombstone or expired record
    /// after the grace period; a live record never.
    fn forgettable(&self, now_ms: u64) -> bool {
        let dead_since = match (&self.value, self.expires_at_ms) {
            (None, _) => self.version.physical_ms,
            (Some(_), Some(at)) => at,
            (Some(_), None) => return false,
        };
        dead_since.saturating_add(TOMBSTONE_GRACE_MS) <= now_ms
    }

    /// Bytes the record takes in messages and memory (approximate).
    pub fn size_bytes(&self) -> usize {
        self.key.len() + self.value.as_ref().map_or(0, |v| v.len()) + 40 + self.seen.len() * 20
    }

    /// True when this write had seen version `v` of its key (its own
    /// version and the older ones of the same node included).
    pub fn covers(&self, v: Version) -> bool {
        (v.node == self.version.node && v <= self.version) || self.seen.covers(v)
    }

    /// The causal context a write that read this record carries: what this
    /// record saw plus the record itself.
    pub fn context(&self) -> Seen {
        let mut s = self.seen.clone();
        s.add(self.version);
        s
    }
}

/// The conflict-feed record of a last-writer-wins resolution: `kept`
/// replaced (or stayed over) the concurrent `lost`.
pub fn discarded(kept: &Record, lost: &Record) -> ConflictRecord {
    let version = |r: &Record, kept: bool| {
        let truncated = r.value.as_ref().is_some_and(|v| v.len() > CONFLICT_VALUE_PREVIEW_BYTES_MAX);
        ConflictVersion {
            origin: r.version.node,
            hlc: r.version,
            value: r.value.as_ref().map(|v| v.slice(..v.len().min(CONFLICT_VALUE_PREVIEW_BYTES_MAX))),
            truncated,
            kept,
        }
    };
    ConflictRecord {
        key: kept.key.clone(),
        field: None,
        policy: ConflictPolicy::Lww,
        versions: vec![version(kept, true), version(lost, false)],
        outcome: Outcome::Discarded,
    }
}

/// What [`ReplicaStore::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The record was newer and replaced the key's version (or was new).
    Newer,
    /// The replica already had this version or a newer one.
    Stale,
}

/// One node's records of one keyspace.
#[derive(Debug, Clone, Default)]
pub struct ReplicaStore {
    records: BTreeMap<Bytes, Record>,
    merkle: Merkle,
    bytes: usize,
}

impl ReplicaStore {
    /// An empty replica.
    pub fn new() -> ReplicaStore {
        ReplicaStore::default()
    }

    /// The key's record (tombstones included).
    pub fn get(&self, key: &[u8]) -> Option<&Record> {
        self.records.get(key)
    }

    /// Applies a record under last-writer-wins.
    pub fn apply(&mut self, rec: Record) -> Applied {
        self.apply_resolving(rec).0
    }

    /// Applies a record under last-writer-wins and says whether that
    /// discarded a concurrent version (the incoming one or the one held):
    /// the record for the conflict feed. The kept record's context grows by
    /// the other's, so a version discarded here is never reported here
    /// again (nor where the kept record goes next).
    pub fn apply_resolving(&mut self, mut rec: Record) -> (Applied, Option<ConflictRecord>) {
        let Some(current) = self.records.get_mut(&rec.key) else {
            self.merkle.insert(&rec.key, rec.version);
            self.bytes += rec.size_bytes();
            self.records.insert(rec.key.clone(), rec);
            return (Applied::Newer, None);
        };
        if !lww::wins(rec.version, Some(current.version)) {
            let conflict =
                (rec.version != current.version && !current.covers(rec.version)).then(|| discarded(current, &rec));
            self.bytes -= current.size_bytes();
            current.seen.join(&rec.context());
            current.seen = without(&current.seen, current.version);
            self.bytes += current.size_bytes();
            return (Applied::Stale, conflict);
        }
        let conflict = (!rec.covers(current.version)).then(|| discarded(&rec, current));
        rec.seen.join(&current.context());
        rec.seen = without(&rec.seen, rec.version);
        if let Some(old) = self.records.remove(&rec.key) {
            self.merkle.remove(&old.key, old.version);
            self.bytes -= old.size_bytes();
        }
        self.merkle.insert(&rec.key, rec.version);
        self.bytes += rec.size_bytes();
        self.records.insert(rec.key.clone(), rec);
        (Applied::Newer, conflict)
    }

    /// Forgets `key` if this replica holds it at exactly `version` (no
    /// tombstone: the key moved to other owners, see `super::rebalance`);
    /// returns whether it did.
    pub fn forget(&mut self, key: &[u8], version: Version) -> bool {
        if self.records.get(key).is_none_or(|r| r.version != version) {
            return false;
        }
        if let Some(old) = self.records.remove(key) {
            self.merkle.remove(&old.key, old.version);
            self.bytes -= old.size_bytes();
        }
        true
    }

    /// Forgets tombstones and expired records older than the grace period;
    /// returns how many.
    pub fn gc(&mut self, now_ms: u64) -> usize {
        let dead: Vec<Bytes> = self.records.values().filter(|r| r.forgettable(now_ms)).map(|r| r.key.clone()).collect();
        for k in &dead {
            if let Some(old) = self.records.remove(k) {
                self.merkle.remove(&old.key, old.version);
                self.bytes -= old.size_bytes();
            }
        }
        dead.len()
    }

    /// Keys with a live value at `now_ms`.
    pub fn live_count(&self, now_ms: u64) -> u64 {
        self.records.values().filter(|r| r.live_value(now_ms).is_some()).count() as u64
    }

    /// Records held (tombstones and expired records included).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the replica holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The Merkle root over every record held: equal on two replicas that
    /// hold the same versions of the same keys.
    pub fn digest(&self) -> u64 {
        self.merkle.root()
    }

    /// Every record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }
}

/// `seen` without the entry of `own`'s node when `own` covers it (a
/// record's own version stands for its node's entry).
fn without(seen: &Seen, own: Version) -> Seen {
    let mut out = Seen::new();
    for v in seen.iter() {
        if !(v.node == own.node && v <= own) {
            out.add(v);
        }
    }
    out
}

/// Writes this node holds for other nodes that were down when a sloppy
/// quorum wrote (hinted handoff): handed back when the owner answers again.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    by_owner: BTreeMap<NodeId, BTreeMap<Bytes, Record>>,
    count: usize,
}

/// The hint store is full ([`HINTS_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this node holds {HINTS_MAX} hints already")]
pub struct HintsFull;

impl Hints {
    /// No hints.
    pub fn new() -> Hints {
        Hints::default()
    }

    /// Keeps `rec` for `owner` (a newer hint for the same key replaces an
    /// older one).
    pub fn store(&mut self, owner: NodeId, rec: Record) -> Result<(), HintsFull> {
        let for_owner = self.by_owner.entry(owner).or_default();
        match for_owner.get(&rec.key) {
            Some(old) if old.version >= rec.version => Ok(()),
            Some(_) => {
                for_owner.insert(rec.key.clone(), rec);
                Ok(())
            }
            None if self.count >= HINTS_MAX => Err(HintsFull),
            None => {
                for_owner.insert(rec.key.clone(), rec);
                self.count += 1;
                Ok(())
            }
        }
    }

    /// Owners with pending hints, ascending.
    pub fn owners(&self) -> Vec<NodeId> {
        self.by_owner.iter().filter(|(_, h)| !h.is_empty()).map(|(o, _)| *o).collect()
    }

    /// Up to `limit` hints for `owner`, in key order.
    pub fn for_owner(&self, owner: NodeId, limit: usize) -> Vec<Record> {
        self.by_owner.get(&owner).map(|h| h.values().take(limit).cloned().collect()).unwrap_or_default()
    }

    /// `owner` has made `key` at `version` durable: forget the hint (unless
    /// a newer one came in meanwhile).
    pub fn delivered(&mut self, owner: NodeId, key: &[u8], version: Version) {
        if let Some(h) = self.by_owner.get_mut(&owner) {
            if h.get(key).is_some_and(|r| r.version <= version) {
                h.remove(key);
                self.count -= 1;
            }
        }
    }

    /// Hints held.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when no hint is held.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: Option<&str>, ms: u64) -> Record {
        Record {
            key: Bytes::from(key.to_string()),
            value: value.map(|v| Bytes::from(v.to_string())),
            expires_at_ms: None,
            version: Version { physical_ms: ms, logical: 0, node: 1 },
            seen: Default::default(),
        }
    }

    #[test]
    fn tombstone_beats_the_older_value_so_a_delete_is_not_resurrected() {
        let mut s = ReplicaStore::new();
        assert_eq!(s.apply(rec("k", Some("v"), 10)), Applied::Newer);
        assert_eq!(s.apply(rec("k", None, 20)), Applied::Newer);
        assert_eq!(s.apply(rec("k", Some("v"), 10)), Applied::Stale);
        assert_eq!(s.get(b"k").unwrap().live_value(30), None);
        assert_eq!(s.live_count(30), 0);
        assert_eq!(s.gc(20 + TOMBSTONE_GRACE_MS - 1), 0);
        assert_eq!(s.gc(20 + TOMBSTONE_GRACE_MS), 1);
        assert!(s.is_empty());
        assert_eq!(s.digest(), ReplicaStore::new().digest());
    }

    fn by(node: NodeId, value: &str, ms: u64, seen: &[Version]) -> Record {
        let mut s = Seen::new();
        for v in seen {
            s.add(*v);
        }
        Record {
            key: Bytes::from_static(b"k"),
            value: Some(Bytes::from(value.to_string())),
            expires_at_ms: None,
            version: Version { physical_ms: ms, logical: 0, node },
            seen: s,
        }
    }

    #[test]
    fn lww_reports_a_concurrent_loser_once_whichever_version_arrives_first() {
        let base = by(1, "base", 5, &[]);
        // Both sides of a partition overwrote `base`, neither saw the other.
        let a = by(1, "left", 10, &[base.version]);
        let b = by(3, "right", 20, &[base.version]);
        for order in [[&a, &b], [&b, &a]] {
            let mut s = ReplicaStore::new();
            assert_eq!(s.apply_resolving(base.clone()), (Applied::Newer, None));
            assert_eq!(s.apply_resolving(order[0].clone()).1, None, "an overwrite of a seen version is no conflict");
            let (_, c) = s.apply_resolving(order[1].clone());
            let c = c.expect("the concurrent loser is reported");
            assert_eq!(c.outcome, Outcome::Discarded);
            assert_eq!(c.policy, ConflictPolicy::Lww);
            assert_eq!((c.versions[0].kept, c.versions[0].value.as_deref()), (true, Some(&b"right"[..])));
            assert_eq!((c.versions[1].kept, c.versions[1].value.as_deref()), (false, Some(&b"left"[..])));
            assert_eq!(c.versions[1].hlc, a.version);
            // Delivered again (hint retry, anti-entropy, read repair): not again.
            assert_eq!(s.apply_resolving(a.clone()).1, None);
            assert_eq!(s.apply_resolving(b.clone()).1, None);
            assert_eq!(s.get(b"k").unwrap().version, b.version);
        }
    }

    #[test]
    fn lww_kept_record_carries_the_loser_so_replicas_it_reaches_later_do_not_report_it_again() {
        let a = by(1, "left", 10, &[]);
        let b = by(3, "right", 20, &[]);
        let mut x = ReplicaStore::new();
        x.apply_resolving(a.clone());
        assert!(x.apply_resolving(b.clone()).1.is_some(), "x discards a");
        let merged = x.get(b"k").unwrap().clone();
        assert!(merged.covers(a.version) && merged.covers(b.version));
        // y held `a` too; the merged record (read repair from x) saw it.
        let mut y = ReplicaStore::new();
        y.apply_resolving(a.clone());
        assert_eq!(y.apply_resolving(merged).1, None);
        // A later write that read the merged value overwrites it quietly.
        let c = by(2, "next", 30, &[a.version, b.version]);
        assert_eq!(y.apply_resolving(c).1, None);
        // The digest does not depend on contexts: x and y hold b and c.
        x.apply_resolving(by(2, "next", 30, &[]));
        assert_eq!(x.digest(), y.digest());
    }

    #[test]
    fn lww_overwrite_by_the_same_coordinator_or_a_reader_is_not_a_conflict() {
        let mut s = ReplicaStore::new();
        s.apply_resolving(by(1, "a", 10, &[]));
        assert_eq!(s.apply_resolving(by(1, "b", 11, &[])).1, None, "one node's versions are ordered");
        let read = s.get(b"k").unwrap().context();
        assert_eq!(s.apply_resolving(by(2, "c", 12, &read.iter().collect::<Vec<_>>())).1, None);
        assert!(s.apply_resolving(by(3, "d", 13, &[])).1.is_some(), "a blind write that saw nothing is concurrent");
        assert!(s.apply_resolving(by(4, "e", 9, &[])).1.is_some(), "an older concurrent arrival is discarded");
    }

    #[test]
    fn ttl_is_an_absolute_time_every_replica_agrees_on() {
        let mut r = rec("k", Some("v"), 10);
        r.expires_at_ms = Some(100);
        assert_eq!(r.live_value(99).map(|b| b.as_ref()), Some(&b"v"[..]));
        assert_eq!(r.live_value(100), None);
    }

    #[test]
    fn hints_are_kept_per_owner_and_forgotten_once_delivered() {
        let mut h = Hints::new();
        h.store(3, rec("a", Some("1"), 1)).unwrap();
        h.store(3, rec("a", Some("2"), 2)).unwrap();
        h.store(2, rec("b", Some("1"), 1)).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h.owners(), vec![2, 3]);
        assert_eq!(h.for_owner(3, 10)[0].value.as_deref(), Some(&b"2"[..]));
        h.delivered(3, b"a", Version { physical_ms: 1, logical: 0, node: 1 });
        assert_eq!(h.len(), 2, "an older delivery does not drop a newer hint");
        h.delivered(3, b"a", Version { physical_ms: 2, logical: 0, node: 1 });
        assert_eq!(h.owners(), vec![2]);
    }
}
