//! Versions and last-writer-wins for leaderless keyspaces, on the shared
//! hybrid logical clock of `crate::conflict` (issue 11).
//!
//! A [`Version`] is a [`crate::conflict::Hlc`]: wall time, logical counter,
//! then the writing node, totally ordered, so the newest wins everywhere in
//! any order of arrival. [`Clock`] wraps [`crate::conflict::HlcClock`] with
//! the one operation a coordinator needs (a version newer than what it
//! read). [`Seen`] is a write's causal context: which versions of the key
//! its coordinator had seen, so that a replica can tell a concurrent loser
//! (its version not seen by the winner) from an ordinary overwrite. This
//! module must never read a clock: it takes `now_ms`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::conflict::{Hlc, HlcClock};
use crate::repl::NodeId;

/// The version of one write of one key: the shared HLC timestamp.
pub type Version = Hlc;

/// A write's causal context: per writing node, the newest of that node's
/// versions of the key the write had seen. Versions of one node are totally
/// ordered (its clock only goes up), so seeing a node's version means seeing
/// every older version that node wrote: a version vector whose entries are
/// the versions themselves. At most one entry per member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen(BTreeMap<NodeId, Version>);

impl Seen {
    /// Nothing seen.
    pub fn new() -> Seen {
        Seen::default()
    }

    /// True when `v` (or a newer version of the same node) was seen.
    pub fn covers(&self, v: Version) -> bool {
        self.0.get(&v.node).is_some_and(|s| *s >= v)
    }

    /// Adds `v` to what was seen.
    pub fn add(&mut self, v: Version) {
        let e = self.0.entry(v.node).or_insert(v);
        if v > *e {
            *e = v;
        }
    }

    /// Everything `other` saw, too.
    pub fn join(&mut self, other: &Seen) {
        for v in other.0.values() {
            self.add(*v);
        }
    }

    /// The newest version seen of each node, by node.
    pub fn iter(&self) -> impl Iterator<Item = Version> + '_ {
        self.0.values().copied()
    }

    /// Entries (one per writing node).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A version's bytes, for digests.
pub fn version_bytes(v: Version) -> [u8; 20] {
    let mut out = [0u8; 20];
    out[..8].copy_from_slice(&v.physical_ms.to_be_bytes());
    out[8..12].copy_from_slice(&v.logical.to_be_bytes());
    out[12..].copy_from_slice(&v.node.to_be_bytes());
    out
}

/// A node's version source: every version it hands out is newer than every
/// version it handed out or observed before.
#[derive(Debug, Clone)]
pub struct Clock {
    hlc: HlcClock,
}

impl Clock {
    /// A clock for `node`.
    pub fn new(node: NodeId) -> Clock {
        Clock { hlc: HlcClock::new(node) }
    }

    /// Takes note of a version seen elsewhere (a read, a peer's write).
    pub fn observe(&mut self, v: Version) {
        if v > self.hlc.last() {
            self.hlc.observe(v, 0);
        }
    }

    /// A new version at `now_ms`, newer than everything seen so far and
    /// than `after` (the version a read-modify-write read).
    pub fn next(&mut self, now_ms: u64, after: Option<Version>) -> Version {
        match after {
            Some(a) => self.hlc.observe(a, now_ms),
            None => self.hlc.tick(now_ms),
        }
    }
}

/// True when `incoming` replaces `current` under last-writer-wins.
pub fn wins(incoming: Version, current: Option<Version>) -> bool {
    current.is_none_or(|c| incoming > c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ms: u64, logical: u32, node: NodeId) -> Version {
        Version { physical_ms: ms, logical, node }
    }

    #[test]
    fn clock_versions_increase_even_when_the_wall_clock_goes_back() {
        let mut c = Clock::new(1);
        let a = c.next(1000, None);
        let b = c.next(900, None);
        let d = c.next(1000, Some(v(5000, 3, 2)));
        assert!(a < b && b < d);
        assert!(d > v(5000, 3, 2));
        c.observe(v(9000, 0, 3));
        assert!(c.next(1, None) > v(9000, 0, 3));
    }

    #[test]
    fn seen_covers_a_nodes_older_versions_and_joins_per_node_maxima() {
        let mut s = Seen::new();
        s.add(v(5, 0, 1));
        assert!(s.covers(v(4, 9, 1)) && s.covers(v(5, 0, 1)));
        assert!(!s.covers(v(5, 1, 1)) && !s.covers(v(1, 0, 2)));
        let mut o = Seen::new();
        o.add(v(7, 0, 1));
        o.add(v(3, 0, 2));
        s.join(&o);
        assert!(s.covers(v(7, 0, 1)) && s.covers(v(3, 0, 2)));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn lww_newest_version_wins_whatever_the_arrival_order() {
        let old = v(1, 0, 2);
        let new = v(1, 0, 3);
        assert!(wins(new, Some(old)));
        assert!(!wins(old, Some(new)));
        assert!(!wins(new, Some(new)));
        assert!(wins(old, None));
    }
}
