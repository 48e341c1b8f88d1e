//! The coordinator of one leaderless request, as a sans-IO state machine.
//!
//! Any node coordinates any key: it sends the write (or read) to the key's
//! replicas, feeds each answer in (`on_ack` / `on_reply` / `on_failure`)
//! and the deadline (`on_timeout`), and gets a decision once: success at W
//! durable acks (R replies), or failure once every replica answered
//! without W (R) being met or the deadline passed, with the exact count
//! (a write that cannot reach W still waits for the pending answers, so
//! that the client learns how many replicas took it). A read's answer
//! is the newest version heard; the replicas that answered with an older
//! one (or none) are its read-repair targets. Never sends or waits itself.

use std::collections::BTreeMap;

use crate::repl::NodeId;

use super::store::Record;

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// W replicas made the write durable.
    Ok {
        /// Replicas that had acknowledged when the decision was made.
        acks: usize,
    },
    /// W was not reached (replicas failed or the deadline passed). The
    /// replicas that took the write keep it: nothing is rolled back.
    NoQuorum {
        /// Replicas that acknowledged.
        acks: usize,
        /// Replicas the write went to.
        replicas: usize,
        /// W.
        required: usize,
    },
}

impl WriteOutcome {
    /// The client's error for a failed write.
    pub fn error_text(&self) -> Option<String> {
        match self {
            WriteOutcome::Ok { .. } => None,
            WriteOutcome::NoQuorum { acks, replicas, required } => Some(format!(
                "NOQUORUM the write reached {acks} of {replicas} replicas, {required} required (it was not rolled back on them)"
            )),
        }
    }
}

/// Per-target state of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Pending,
    Failed,
    Acked,
    Replied(Option<Record>),
}

/// The state of one write.
#[derive(Debug, Clone)]
pub struct WriteCoordinator {
    targets: BTreeMap<NodeId, Answer>,
    replicas: usize,
    w: usize,
    deadline_ms: u64,
    decided: bool,
}

impl WriteCoordinator {
    /// A write to `targets` (the preference list) that needs `w` durable
    /// acks by `deadline_ms`.
    pub fn new(targets: &[NodeId], w: usize, deadline_ms: u64) -> WriteCoordinator {
        WriteCoordinator {
            targets: targets.iter().map(|t| (*t, Answer::Pending)).collect(),
            replicas: targets.len(),
            w,
            deadline_ms,
            decided: false,
        }
    }

    /// The deadline.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// A fallback node was sent the write in place of a failed replica
    /// (sloppy quorum): its ack counts towards W. Call before the failed
    /// replica's `on_failure`.
    pub fn add_fallback(&mut self, node: NodeId) {
        self.targets.entry(node).or_insert(Answer::Pending);
    }

    /// Acknowledgements so far.
    pub fn acks(&self) -> usize {
        self.targets.values().filter(|a| **a == Answer::Acked).count()
    }

    fn pending(&self) -> usize {
        self.targets.values().filter(|a| **a == Answer::Pending).count()
    }

    fn decide(&mut self, timed_out: bool) -> Option<WriteOutcome> {
        if self.decided {
            return None;
        }
        let acks = self.acks();
        let outcome = if acks >= self.w {
            WriteOutcome::Ok { acks }
        } else if timed_out || self.pending() == 0 {
            // W can no longer be reached only says the write failed; the
            // answers still pending make the reported count exact.
            WriteOutcome::NoQuorum { acks, replicas: self.replicas, required: self.w }
        } else {
            return None;
        };
        self.decided = true;
        Some(outcome)
    }

    /// `node` made the write durable.
    pub fn on_ack(&mut self, node: NodeId) -> Option<WriteOutcome> {
        if let Some(a) = self.targets.get_mut(&node) {
            if *a == Answer::Pending {
                *a = Answer::Acked;
            }
        }
        self.decide(false)
    }

    /// `node` could not be reached or refused.
    pub fn on_failure(&mut self, node: NodeId) -> Option<WriteOutcome> {
        if let Some(a) = self.targets.get_mut(&node) {
            if *a == Answer::Pending {
                *a = Answer::Failed;
            }
        }
        self.decide(false)
    }

    /// Time passed; decides (failure) once the deadline is reached.
    pub fn on_timeout(&mut self, now_ms: u64) -> Option<WriteOutcome> {
        self.decide(now_ms >= self.deadline_ms)
    }
}

/// How a read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadOutcome {
    /// R replicas answered; the newest record heard (tombstones included;
    /// `None` when none of them held the key).
    Ok {
        /// The newest record.
        newest: Option<Record>,
        /// Replies when the decision was made.
        replies: usize,
    },
    /// R was not reached.
    NoQuorum {
        /// Replies heard.
        replies: usize,
        /// Replicas asked.
        replicas: usize,
        /// R.
        required: usize,
    },
}

impl ReadOutcome {
    /// The client's error for a failed read.
    pub fn error_text(&self) -> Option<String> {
        match self {
            ReadOutcome::Ok { .. } => None,
            ReadOutcome::NoQuorum { replies, replicas, required } => {
                Some(format!("NOQUORUM the read heard from {replies} of {replicas} replicas, {required} required"))
            }
        }
    }
}

/// The state of one read.
#[derive(Debug, Clone)]
pub struct ReadCoordinator {
    targets: BTreeMap<NodeId, Answer>,
    r: usize,
    deadline_ms: u64,
    decided: bool,
}

impl ReadCoordinator {
    /// A read from `targets` that needs `r` replies by `deadline_ms`.
    pub fn new(targets: &[NodeId], r: usize, deadline_ms: u64) -> ReadCoordinator {
        ReadCoordinator {
            targets: targets.iter().map(|t| (*t, Answer::Pending)).collect(),
            r,
            deadline_ms,
            decided: false,
        }
    }

    /// The deadline.
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    fn replies(&self) -> usize {
        self.targets.values().filter(|a| matches!(a, Answer::Replied(_))).count()
    }

    /// True once every target answered or failed.
    pub fn all_answered(&self) -> bool {
        self.targets.values().all(|a| *a != Answer::Pending)
    }

    /// The newest record among the replies so far.
    pub fn newest(&self) -> Option<&Record> {
        self.targets
            .values()
            .filter_map(|a| match a {
                Answer::Replied(Some(r)) => Some(r),
                _ => None,
            })
            .max_by_key(|r| r.version)
    }

    fn decide(&mut self, timed_out: bool) -> Option<ReadOutcome> {
        if self.decided {
            return None;
        }
        let replies = self.replies();
        let pending = self.targets.values().filter(|a| **a == Answer::Pending).count();
        let outcome = if replies >= self.r {
            ReadOutcome::Ok { newest: self.newest().cloned(), replies }
        } else if timed_out || pending == 0 {
            ReadOutcome::NoQuorum { replies, replicas: self.targets.len(), required: self.r }
        } else {
            return None;
        };
        self.decided = true;
        Some(outcome)
    }

    /// `node` answered with its record of the key (`None`: it has none).
    pub fn on_reply(&mut self, node: NodeId, rec: Option<Record>) -> Option<ReadOutcome> {
        if let Some(a) = self.targets.get_mut(&node) {
            if *a == Answer::Pending {
                *a = Answer::Replied(rec);
            }
        }
        self.decide(false)
    }

    /// `node` could not be reached.
    pub fn on_failure(&mut self, node: NodeId) -> Option<ReadOutcome> {
        if let Some(a) = self.targets.get_mut(&node) {
            if *a == Answer::Pending {
                *a = Answer::Failed;
            }
        }
        self.decide(false)
    }

    /// Time passed; decides (failure) once the deadline is reached.
    pub fn on_timeout(&mut self, now_ms: u64) -> Option<ReadOutcome> {
        self.decide(now_ms >= self.deadline_ms)
    }

    /// Read repair: the replicas that answered with an older version than
    /// the newest heard (or with none), and that newest record. Replicas
    /// that did not answer are left to anti-entropy.
    pub fn repair_targets(&self) -> (Vec<NodeId>, Option<Record>) {
        let Some(newest) = self.newest().cloned() else { return (Vec::new(), None) };
        let stale = self
            .targets
            .iter()
            .filter(|(_, a)| match a {
                Answer::Replied(Some(r)) => r.version < newest.version,
                Answer::Replied(None) => true,
                _ => false,
            })
            .map(|(n, _)| *n)
            .collect();
        (stale, Some(newest))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::replica::leaderless::Version;

    fn rec(ms: u64) -> Record {
        Record {
            key: Bytes::from_static(b"k"),
            value: Some(Bytes::from(ms.to_string())),
            expires_at_ms: None,
            version: Version { physical_ms: ms, logical: 0, node: 1 },
            seen: Default::default(),
        }
    }

    #[test]
    fn write_is_acknowledged_at_w_durable_acks() {
        let mut c = WriteCoordinator::new(&[1, 2, 3], 2, 100);
        assert_eq!(c.on_ack(1), None);
        assert_eq!(c.on_ack(2), Some(WriteOutcome::Ok { acks: 2 }));
        assert_eq!(c.on_ack(3), None, "decided once");
    }

    #[test]
    fn write_that_cannot_reach_w_fails_with_the_exact_count_once_all_answered() {
        let mut s = WriteCoordinator::new(&[1, 2, 3], 3, 100);
        assert_eq!(s.on_failure(3), None, "waits for the pending answers to count them");
        assert_eq!(s.on_ack(1), None);
        assert_eq!(s.on_ack(2), Some(WriteOutcome::NoQuorum { acks: 2, replicas: 3, required: 3 }));
        let mut c = WriteCoordinator::new(&[1, 2, 3], 2, 100);
        assert_eq!(c.on_ack(1), None);
        assert_eq!(c.on_failure(2), None);
        let out = c.on_failure(3).unwrap();
        assert_eq!(out, WriteOutcome::NoQuorum { acks: 1, replicas: 3, required: 2 });
        assert_eq!(
            out.error_text().unwrap(),
            "NOQUORUM the write reached 1 of 3 replicas, 2 required (it was not rolled back on them)"
        );
    }

    #[test]
    fn write_times_out_at_the_deadline_with_the_count_so_far() {
        let mut c = WriteCoordinator::new(&[1, 2, 3], 3, 100);
        c.on_ack(1);
        c.on_ack(2);
        assert_eq!(c.on_timeout(99), None);
        assert_eq!(c.on_timeout(100), Some(WriteOutcome::NoQuorum { acks: 2, replicas: 3, required: 3 }));
    }

    #[test]
    fn sloppy_fallback_ack_counts_towards_w() {
        let mut c = WriteCoordinator::new(&[1, 2, 3], 2, 100);
        c.on_ack(1);
        c.add_fallback(4);
        assert_eq!(c.on_failure(2), None);
        assert_eq!(c.on_failure(3), None);
        assert_eq!(c.on_ack(4), Some(WriteOutcome::Ok { acks: 2 }));
    }

    #[test]
    fn read_answers_the_newest_of_r_replies_and_names_stale_replicas() {
        let mut c = ReadCoordinator::new(&[1, 2, 3], 2, 100);
        assert_eq!(c.on_reply(1, Some(rec(5))), None);
        let out = c.on_reply(2, Some(rec(9))).unwrap();
        assert_eq!(out, ReadOutcome::Ok { newest: Some(rec(9)), replies: 2 });
        c.on_reply(3, None);
        let (stale, newest) = c.repair_targets();
        assert_eq!(stale, vec![1, 3]);
        assert_eq!(newest, Some(rec(9)));
        assert!(c.all_answered());
    }

    #[test]
    fn read_fails_with_the_count_when_r_is_unreachable() {
        let mut c = ReadCoordinator::new(&[1, 2, 3], 2, 100);
        c.on_reply(1, None);
        c.on_failure(2);
        let out = c.on_failure(3).unwrap();
        assert_eq!(out.error_text().unwrap(), "NOQUORUM the read heard from 1 of 3 replicas, 2 required");
    }
}
