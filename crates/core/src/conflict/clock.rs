//! Clocks of the conflict layer: the hybrid logical clock that orders
//! writes across leaders for last-writer-wins, version vectors that detect
//! concurrency, and dots (one event of one node).
//!
//! Pure: the wall clock comes in as `now_ms`; nothing here reads a clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::repl::NodeId;

/// A hybrid logical clock timestamp: physical milliseconds, a logical
/// counter for events within one millisecond (or while the wall clock lags
/// a remote timestamp), and the node id, which breaks the remaining ties.
/// The derived order compares the fields in that order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (the highest seen, not always the
    /// local wall clock).
    pub physical_ms: u64,
    /// Events within the same `physical_ms`.
    pub logical: u32,
    /// The node that took the timestamp.
    pub node: NodeId,
}

/// One node's hybrid logical clock. `tick` stamps a local event, `observe`
/// folds in a remote timestamp so that anything this node does next is
/// ordered after it (causality implies a higher HLC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HlcClock {
    last: Hlc,
}

impl HlcClock {
    /// A clock for `node` that has seen nothing.
    pub fn new(node: NodeId) -> Self {
        HlcClock { last: Hlc { physical_ms: 0, logical: 0, node } }
    }

    /// The newest timestamp this clock issued or observed (as this node).
    pub fn last(&self) -> Hlc {
        self.last
    }

    /// A timestamp for a local event at wall time `now_ms`, higher than
    /// every timestamp this clock issued or observed.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        if now_ms > self.last.physical_ms {
            self.last.physical_ms = now_ms;
            self.last.logical = 0;
        } else {
            self.bump_logical();
        }
        self.last
    }

    /// Fold in a remote timestamp at wall time `now_ms`; returns the new
    /// local timestamp, higher than both `remote` and everything before.
    pub fn observe(&mut self, remote: Hlc, now_ms: u64) -> Hlc {
        let physical_ms = now_ms.max(self.last.physical_ms).max(remote.physical_ms);
        let logical = if physical_ms == self.last.physical_ms && physical_ms == remote.physical_ms {
            self.last.logical.max(remote.logical)
        } else if physical_ms == self.last.physical_ms {
            self.last.logical
        } else if physical_ms == remote.physical_ms {
            remote.logical
        } else {
            self.last.logical = 0;
            self.last.physical_ms = physical_ms;
            return self.last;
        };
        self.last.physical_ms = physical_ms;
        self.last.logical = logical;
        self.bump_logical();
        self.last
    }

    fn bump_logical(&mut self) {
        // Why: at u32::MAX events in one millisecond the clock moves into
        // the next millisecond rather than wrap (wrapping would order a
        // later event first).
        match self.last.logical.checked_add(1) {
            Some(l) => self.last.logical = l,
            None => {
                self.last.physical_ms += 1;
                self.last.logical = 0;
            }
        }
    }
}

/// One event of one node: the node's `counter`-th event (counters start at
/// 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The node that made the event.
    pub node: NodeId,
    /// Its position among that node's events (from 1).
    pub counter: u64,
}

/// Per-node counters: "has seen every event of node n up to counter c".
/// Absent nodes count as 0. Ordered map so iteration (and encoding) is
/// deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<NodeId, u64>);

impl VersionVector {
    /// The empty vector (has seen nothing).
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// The counter of `node` (0 if absent).
    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    /// Raise `node`'s counter to at least `counter`.
    pub fn observe(&mut self, node: NodeId, counter: u64) {
        if counter > self.get(node) {
            self.0.insert(node, counter);
        }
    }

    /// Record `dot` as seen.
    pub fn add(&mut self, dot: Dot) {
        self.observe(dot.node, dot.counter);
    }

    /// The next dot of `node` after everything this vector has seen.
    pub fn next_dot(&self, node: NodeId) -> Dot {
        Dot { node, counter: self.get(node) + 1 }
    }

    /// Whether this vector has seen `dot`.
    pub fn contains(&self, dot: Dot) -> bool {
        dot.counter <= self.get(dot.node)
    }

    /// Whether this vector has seen everything `other` has (`self >= other`).
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(n, c)| self.get(*n) >= *c)
    }

    /// Whether neither vector has seen everything the other has.
    pub fn concurrent(&self, other: &VersionVector) -> bool {
        !self.dominates(other) && !other.dominates(self)
    }

    /// The pointwise maximum (everything either has seen).
    pub fn merge(&mut self, other: &VersionVector) {
        for (n, c) in &other.0 {
            self.observe(*n, *c);
        }
    }

    /// Sum of all counters (events seen), for lag in entries.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hlc_orders_a_causally_later_event_after_a_remote_one_despite_skew() {
        let mut a = HlcClock::new(1);
        let mut b = HlcClock::new(2);
        // b's wall clock is 5 s ahead.
        let tb = b.tick(10_000);
        let ta = a.observe(tb, 5_000);
        assert!(ta > tb);
        assert!(a.tick(5_001) > ta);
    }

    #[test]
    fn hlc_ticks_strictly_increase_when_the_wall_clock_goes_back() {
        let mut a = HlcClock::new(1);
        let t1 = a.tick(1_000);
        let t2 = a.tick(900);
        assert!(t2 > t1);
    }

    #[test]
    fn version_vectors_detect_concurrency() {
        let mut a = VersionVector::new();
        a.observe(1, 2);
        let mut b = VersionVector::new();
        b.observe(2, 1);
        assert!(a.concurrent(&b));
        let mut m = a.clone();
        m.merge(&b);
        assert!(m.dominates(&a) && m.dominates(&b) && !m.concurrent(&a));
    }
}
