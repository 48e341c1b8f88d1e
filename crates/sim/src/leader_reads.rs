//! Checker: linearizable reads from the leader (issue 10 item 4).
//!
//! A leader serves a read only while its lease is valid on its own clock
//! (the node's read gate: `LeaseKeeper::is_valid`, the same rule as for
//! writes). Linearizability of those reads needs one thing beyond what the
//! leader itself wrote: once a write was acknowledged by the leader of a
//! newer epoch, no leader of an older epoch may serve a read any more, or
//! it could return the value that write overwrote (a stale read from an old
//! leader). Leases under clock drift within `clock_drift_percent` and
//! fencing are what make this hold; the checker judges every read the
//! simulated leaders serve against real (virtual) time.
//!
//! Self-contained: a world reports acknowledged writes and leader reads;
//! the checker keeps its own ground truth. Must never read anything but
//! what it is given.

use std::collections::BTreeMap;

use tandem_core::repl::NodeId;
use tandem_core::Epoch;

/// See the module doc.
#[derive(Debug, Default)]
pub struct LeaderReadChecker {
    /// Per epoch: real time (µs) of its first acknowledged write, and which
    /// write that was.
    first_ack: BTreeMap<Epoch, (u64, u64)>,
    /// Reads checked.
    pub reads: u64,
}

impl LeaderReadChecker {
    /// A write was acknowledged to its client at real time `at_us` by the
    /// leader of `epoch`.
    pub fn on_ack(&mut self, epoch: Epoch, write_id: u64, at_us: u64) {
        self.first_ack.entry(epoch).or_insert((at_us, write_id));
    }

    /// The leader `node` of `epoch` serves a read at real time `now_us`.
    /// Fails if a leader of a newer epoch acknowledged a write before.
    pub fn on_leader_read(&mut self, node: NodeId, epoch: Epoch, now_us: u64) -> Result<(), String> {
        self.reads += 1;
        let newer = self.first_ack.range(epoch + 1..).find(|(_, &(at_us, _))| at_us < now_us);
        match newer {
            Some((newer_epoch, (at_us, write_id))) => Err(format!(
                "leader-reads checker: node {node}, leader of epoch {epoch}, served a read at {:.3} ms (real time) \
                 after write {write_id} was acknowledged in the newer epoch {newer_epoch} at {:.3} ms: a stale read",
                now_us as f64 / 1000.0,
                *at_us as f64 / 1000.0
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_by_an_old_leader_after_a_newer_epoch_acked_fails() {
        let mut c = LeaderReadChecker::default();
        c.on_ack(1, 10, 100);
        assert!(c.on_leader_read(1, 1, 150).is_ok());
        c.on_ack(2, 11, 200);
        assert!(c.on_leader_read(1, 1, 199).is_ok(), "before the newer ack");
        let e = c.on_leader_read(1, 1, 201).unwrap_err();
        assert!(e.starts_with("leader-reads checker") && e.contains("write 11"), "{e}");
        assert!(c.on_leader_read(2, 2, 500).is_ok(), "the new leader reads fine");
    }
}
