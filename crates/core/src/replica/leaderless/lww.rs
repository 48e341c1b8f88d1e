//! Versions and last-writer-wins for leaderless keyspaces, on the shared
//! hybrid logical clock of `crate::conflict` (issue 11).
//!
//! A [`Version`] is a [`crate::conflict::Hlc`]: wall time, logical counter,
//! then the writing node, totally ordered, so the newest wins everywhere in
//! any order of arrival. [`Clock`] wraps [`crate::conflict::HlcClock`] with
//! the one operation a coordinator needs (a version newer than what it
//! read). This module must never read a clock: it takes `now_ms`.

use crate::conflict::{Hlc, HlcClock};
use crate::repl::NodeId;

/// The version of one write of one key: the shared HLC timestamp.
pub type Version = Hlc;

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
    fn lww_newest_version_wins_whatever_the_arrival_order() {
        let old = v(1, 0, 2);
        let new = v(1, 0, 3);
        assert!(wins(new, Some(old)));
        assert!(!wins(old, Some(new)));
        assert!(!wins(new, Some(new)));
        assert!(wins(old, None));
    }
}
