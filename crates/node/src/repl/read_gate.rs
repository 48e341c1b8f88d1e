//! The read gate: whether this node may serve reads right now, decided by
//! one atomic load on the read hot path (no lock).
//!
//! A leader under leases serves reads only while it holds its lease: once
//! the lease is gone another node may already lead and have acknowledged
//! newer writes, so a read here could return an overwritten value (a stale
//! read from an old leader). Followers and idle nodes are replicas by design
//! and always pass the gate (session guarantees cover them); so does a
//! leader without leases (static roles).
//!
//! The gate packs `(role generation: 16 bits, open until: 48 bits of
//! mono_ms)` into one `AtomicU64`. Every role change starts a new
//! generation; the leader actor extends the gate only for its own
//! generation, so an actor that is still finishing after the node stopped
//! leading can never close the gate of the follower that replaced it.
//!
//! Must never: take a lock, read anything but the monotonic clock, or
//! decide lease arithmetic itself (`tandem_core::failover::LeaseKeeper`
//! does that; the leader actor hands the result here).

use std::sync::atomic::{AtomicU64, Ordering};

/// Low bits of the gate word: the `mono_ms` reading until which reads are
/// served; all ones means "no end" (a replica, or a leader without leases).
const UNTIL_MASK: u64 = (1 << 48) - 1;
/// Bits of the gate word above [`UNTIL_MASK`]: the role generation.
const GENERATION_SHIFT: u32 = 48;

/// See the module doc.
#[derive(Debug)]
pub struct ReadGate {
    word: AtomicU64,
    generations: AtomicU64,
}

impl Default for ReadGate {
    fn default() -> Self {
        ReadGate { word: AtomicU64::new(UNTIL_MASK), generations: AtomicU64::new(0) }
    }
}

impl ReadGate {
    fn next_generation(&self) -> u64 {
        (self.generations.fetch_add(1, Ordering::Relaxed) + 1) & 0xffff
    }

    /// A new role that always serves reads (follower, idle, leader without
    /// leases).
    pub fn open(&self) {
        let generation = self.next_generation();
        self.word.store(generation << GENERATION_SHIFT | UNTIL_MASK, Ordering::Release);
    }

    /// A new leader role under leases: reads are served until `until_ms`
    /// (`mono_ms`; 0 while no lease is held). Returns the generation the
    /// leader passes to [`ReadGate::extend`].
    pub fn lease_leader(&self, until_ms: u64) -> u64 {
        let generation = self.next_generation();
        self.word.store(generation << GENERATION_SHIFT | until_ms.min(UNTIL_MASK - 1), Ordering::Release);
        generation
    }

    /// A new role that serves no reads until [`ReadGate::reopen`] with the
    /// returned generation (a leader that stepped down, until it caught up
    /// with the new leader).
    pub fn close(&self) -> u64 {
        self.lease_leader(0)
    }

    /// Opens the gate if the role of `generation` is still current.
    pub fn reopen(&self, generation: u64) {
        let new = generation << GENERATION_SHIFT | UNTIL_MASK;
        let _ = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            (current >> GENERATION_SHIFT == generation).then_some(new)
        });
    }

    /// The leader of `generation` now holds its lease until `until_ms`.
    /// Ignored if the node changed roles since.
    pub fn extend(&self, generation: u64, until_ms: u64) {
        let new = generation << GENERATION_SHIFT | until_ms.min(UNTIL_MASK - 1);
        let _ = self.word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
            (current >> GENERATION_SHIFT == generation).then_some(new)
        });
    }

    /// True if a read may be served at `now_ms` (`mono_ms`).
    #[inline]
    pub fn is_open(&self, now_ms: impl FnOnce() -> u64) -> bool {
        let until = self.word.load(Ordering::Acquire) & UNTIL_MASK;
        until == UNTIL_MASK || now_ms() < until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_serves_reads_only_until_its_lease_ends() {
        let gate = ReadGate::default();
        assert!(gate.is_open(|| 5), "a fresh node is a replica");
        let generation = gate.lease_leader(0);
        assert!(!gate.is_open(|| 5), "no lease yet");
        gate.extend(generation, 100);
        assert!(gate.is_open(|| 99));
        assert!(!gate.is_open(|| 100), "the lease ended");
    }

    #[test]
    fn a_closed_gate_reopens_only_for_its_own_role() {
        let gate = ReadGate::default();
        let stepped_down = gate.close();
        assert!(!gate.is_open(|| 1));
        gate.reopen(stepped_down);
        assert!(gate.is_open(|| 1_000_000));
        let again = gate.close();
        let _leader = gate.lease_leader(0);
        gate.reopen(again);
        assert!(!gate.is_open(|| 1), "a stale reopen does not open a newer role's gate");
    }

    #[test]
    fn an_old_leader_actor_cannot_close_the_gate_of_the_next_role() {
        let gate = ReadGate::default();
        let old = gate.lease_leader(50);
        gate.open();
        gate.extend(old, 60);
        assert!(gate.is_open(|| 1_000_000), "the follower that replaced the leader keeps serving reads");
        let new = gate.lease_leader(0);
        gate.extend(old, 1_000);
        assert!(!gate.is_open(|| 10), "an old generation does not open a new leader's gate either");
        gate.extend(new, 1_000);
        assert!(gate.is_open(|| 10));
    }
}
