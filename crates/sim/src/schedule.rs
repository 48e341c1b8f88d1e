//! The simulators' event queue entry: an event due at a virtual time, with a
//! sequence number that breaks ties in scheduling order, so a seed replays
//! exactly. Ordered by `(at_us, seq)`; the worlds keep them in a
//! `BinaryHeap<Reverse<Scheduled<E>>>`. Never looks at the event itself.

/// An event due at `at_us` (virtual microseconds).
pub struct Scheduled<E> {
    /// When it is due.
    pub at_us: u64,
    /// Scheduling order, for ties.
    pub seq: u64,
    /// What happens.
    pub event: E,
}

impl<E> PartialEq for Scheduled<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}

impl<E> Eq for Scheduled<E> {}

impl<E> PartialOrd for Scheduled<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Scheduled<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}
