//! The simulators' timeline: virtual time, the event queue (events due at a
//! virtual time, ties broken by scheduling order, so a seed replays
//! exactly), the trace hash and the trace lines. Every world drives its
//! events through a [`Timeline`]; it never interprets an event beyond its
//! [`Coded::code`].

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

/// An event that can be folded into a run's trace hash.
pub trait Coded {
    /// A number that identifies the event's kind and subject.
    fn code(&self) -> u64;
}

/// The virtual clock, event queue and trace of one simulated run, shared by
/// every world: events come out in `(time, scheduling order)`; every event
/// taken is counted and folded into a hash (two runs of a seed must hash the
/// same); trace lines are printed (verbose) or the last few kept for a
/// failure report.
pub struct Timeline<E> {
    now_us: u64,
    seq: u64,
    queue: std::collections::BinaryHeap<std::cmp::Reverse<Scheduled<E>>>,
    events: u64,
    hash: u64,
    verbose: bool,
    keep_tail: bool,
    tail: std::collections::VecDeque<String>,
}

/// Trace lines kept for a failure report.
pub const TRACE_TAIL_LINES: usize = 60;

impl<E: Coded> Timeline<E> {
    /// An empty timeline at virtual time 0.
    pub fn new(verbose: bool, keep_tail: bool) -> Timeline<E> {
        Timeline {
            now_us: 0,
            seq: 0,
            queue: Default::default(),
            events: 0,
            hash: 0,
            verbose,
            keep_tail,
            tail: Default::default(),
        }
    }

    /// Virtual microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Events taken so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The trace hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// `event` happens `delay_us` from now.
    pub fn schedule(&mut self, delay_us: u64, event: E) {
        self.seq += 1;
        self.queue.push(std::cmp::Reverse(Scheduled { at_us: self.now_us + delay_us, seq: self.seq, event }));
    }

    /// When the next event is due, if any.
    pub fn next_due_us(&self) -> Option<u64> {
        self.queue.peek().map(|std::cmp::Reverse(s)| s.at_us)
    }

    /// Takes the next event and moves the clock to it; an error past
    /// `events_max` events (a runaway loop).
    pub fn pop(&mut self, events_max: u64) -> Result<Option<E>, String> {
        let Some(std::cmp::Reverse(next)) = self.queue.pop() else { return Ok(None) };
        assert!(next.at_us >= self.now_us, "time went back");
        self.now_us = next.at_us;
        self.events += 1;
        if self.events > events_max {
            return Err(format!("more than {events_max} events: a runaway loop"));
        }
        self.mix(self.now_us);
        self.mix(next.event.code());
        Ok(Some(next.event))
    }

    /// Moves the clock forward to `at_us` (no event is due before it).
    pub fn advance_to(&mut self, at_us: u64) {
        debug_assert!(self.next_due_us().is_none_or(|due| due >= at_us));
        self.now_us = self.now_us.max(at_us);
    }

    /// Folds `x` into the trace hash.
    pub fn mix(&mut self, x: u64) {
        let h = (self.hash ^ x).wrapping_mul(0x0000_0100_0000_01b3);
        self.hash = h ^ (h >> 29);
    }

    /// A trace line at the current time (built only when it is used).
    pub fn trace(&mut self, line: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:>10.3} ms  {}", self.now_us as f64 / 1000.0, line());
        } else if self.keep_tail {
            if self.tail.len() == TRACE_TAIL_LINES {
                self.tail.pop_front();
            }
            let text = format!("{:>10.3} ms  {}", self.now_us as f64 / 1000.0, line());
            self.tail.push_back(text);
        }
    }

    /// The kept trace lines.
    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }
}
