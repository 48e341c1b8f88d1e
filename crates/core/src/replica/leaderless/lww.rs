//! Versions and last-writer-wins: the minimal conflict policy of leaderless
//! keyspaces until the shared conflict module lands (issue 11).
//!
//! A [`Version`] is a hybrid logical clock reading plus the writing node:
//! ordered by wall time, then logical counter, then node id, so that any two
//! versions compare and the newest wins everywhere, in any order of
//! arrival. This module must never read a clock: [`Clock::next`] takes
//! `now_ms`.

use serde::{Deserialize, Serialize};

use crate::repl::NodeId;

/// The version of one write of one key: totally ordered (LWW).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Version {
    /// Wall-clock milliseconds of the coordinator when it wrote (or later,
    /// if it had seen a newer version).
    pub wall_ms: u64,
    /// Tie-breaker within one millisecond.
    pub logical: u32,
    /// The coordinating node: the last tie-breaker, so versions of two
    /// nodes never compare equal.
    pub node: NodeId,
}

impl Version {
    /// The version's bytes, for digests.
    pub fn to_bytes(self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..8].copy_from_slice(&self.wall_ms.to_be_bytes());
        out[8..12].copy_from_slice(&self.logical.to_be_bytes());
        out[12..].copy_from_slice(&self.node.to_be_bytes());
        out
    }
}

/// A hybrid logical clock: every version it hands out is newer than every
/// version it handed out or observed before.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    node: NodeId,
    last: Version,
}

impl Clock {
    /// A clock for `node`.
    pub fn new(node: NodeId) -> Clock {
        Clock { node, last: Version { wall_ms: 0, logical: 0, node } }
    }

    /// Takes note of a version seen elsewhere (a read, a peer's write).
    pub fn observe(&mut self, v: Version) {
        if v > self.last {
            self.last = Version { node: self.node, ..v };
        }
    }

    /// A new version at `now_ms`, newer than everything seen so far and
    /// than `after` (the version a read-modify-write read).
    pub fn next(&mut self, now_ms: u64, after: Option<Version>) -> Version {
        if let Some(a) = after {
            self.observe(a);
        }
        let v = if now_ms > self.last.wall_ms {
            Version { wall_ms: now_ms, logical: 0, node: self.node }
        } else {
            Version { wall_ms: self.last.wall_ms, logical: self.last.logical + 1, node: self.node }
        };
        self.last = v;
        v
    }
}

/// True when `incoming` replaces `current` under last-writer-wins.
pub fn wins(incoming: Version, current: Option<Version>) -> bool {
    current.is_none_or(|c| incoming > c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_versions_increase_even_when_the_wall_clock_goes_back() {
        let mut c = Clock::new(1);
        let a = c.next(1000, None);
        let b = c.next(900, None);
        let d = c.next(1000, Some(Version { wall_ms: 5000, logical: 3, node: 2 }));
        assert!(a < b && b < d);
        assert!(d > Version { wall_ms: 5000, logical: 3, node: 2 });
    }

    #[test]
    fn lww_newest_version_wins_whatever_the_arrival_order() {
        let old = Version { wall_ms: 1, logical: 0, node: 2 };
        let new = Version { wall_ms: 1, logical: 0, node: 3 };
        assert!(wins(new, Some(old)));
        assert!(!wins(old, Some(new)));
        assert!(!wins(new, Some(new)));
        assert!(wins(old, None));
    }
}
