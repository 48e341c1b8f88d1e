//! The sans-IO replica of one multi-leader keyspace on one node.
//!
//! Owns: every local write (origin = this node, a per-origin sequence
//! number, an HLC), the merged versions of the keyspace's keys, per-origin
//! progress (a version vector of sequence numbers applied and made
//! durable), the stream of this node's own writes to each peer (resumed
//! from the peer's durable progress), the acks of received writes, and the
//! bounded ring of conflict records.
//!
//! Inputs come through `handle_*` at `now_ms`; outputs leave through
//! [`MultiLeaderReplica::poll_output`] in the replica drain order: log
//! appends first, then messages, then replies (a reply is released only
//! once every log record it depends on is durable: the shell says so with
//! [`MultiLeaderReplica::handle_durable`]), then conflict notices.
//!
//! Two streams per pair of nodes: the one this node dials
//! ([`Stream::Out`]) carries its own writes to the peer and brings back the
//! peer's `Hello`/`Ack`; the one the peer dials ([`Stream::In`]) brings the
//! peer's writes and carries back this node's `Hello`/`Ack`. A node ships
//! only its own writes, and only once they are durable here, so a crash
//! never loses a write another node has seen.
//!
//! Must never: read a clock, do I/O, or wait for another node before it
//! acknowledges a write.

pub mod exec;

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::conflict::{apply, ConflictRecord, Hlc, HlcClock, KeyValue, VersionVector};
use crate::keyspace::ConflictPolicy;
use crate::repl::NodeId;
use crate::resp::Frame;

/// Most entries in one [`MlMsg::Entries`] message.
pub const ENTRIES_PER_BATCH_MAX: usize = 256;

/// Most entries sent to one peer and not yet acknowledged by it.
pub const IN_FLIGHT_ENTRIES_MAX: u64 = 4_096;

/// Most records the conflict feed keeps (oldest dropped first).
pub const CONFLICT_FEED_MAX: usize = 10_000;

/// Most bytes of one write's entry (the key's whole encoded state); a
/// write past it is refused, since every write ships the whole key.
pub const ENTRY_BYTES_MAX: usize = 64 << 20;

/// Most bytes of entries in one [`MlMsg::Entries`] message (at least one
/// entry goes in any message).
pub const BATCH_BYTES_MAX: usize = 64 << 20;

/// Most client requests waiting for local durability.
pub const PENDING_REPLIES_MAX: usize = 65_536;

/// One write of one key as it travels and as the log stores it: the key's
/// whole state after the write at its origin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlEntry {
    /// The node that accepted the write.
    pub origin: NodeId,
    /// Its position among the origin's writes to this keyspace (from 1).
    pub seq: u64,
    /// When, on the origin's HLC.
    pub hlc: Hlc,
    /// The key.
    pub key: Bytes,
    /// The key's versioned value after the write.
    pub value: KeyValue,
}

/// A message between the replicas of one keyspace (postcard-encoded in
/// the body of `PeerMsg::Keyspace`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MlMsg {
    /// Receiver to sender, first on a stream: "I have your writes up to
    /// `have` durably".
    Hello {
        /// The receiver's durable progress of the sender's writes.
        have: u64,
    },
    /// Sender to receiver: consecutive writes of the sender.
    Entries {
        /// The sender's newest durable write.
        head: u64,
        /// Its HLC time (ms), for the receiver's lag in ms.
        head_ms: u64,
        /// The writes (may be empty: a heartbeat of `head`).
        entries: Vec<MlEntry>,
    },
    /// Receiver to sender: durable up to `have`.
    Ack {
        /// The receiver's durable progress of the sender's writes.
        have: u64,
    },
}

/// Which of the two connections between this node and a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// The one this node dialed (its own writes go out on it).
    Out,
    /// The one the peer dialed (the peer's writes come in on it).
    In,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum MlOutput {
    /// Append `entry` to the keyspace's log as record `index` (indexes are
    /// consecutive from 1), then report durability with
    /// [`MultiLeaderReplica::handle_durable`].
    Append {
        /// The record's index in the log.
        index: u64,
        /// The record.
        entry: MlEntry,
    },
    /// Send `msg` on `stream` to `to` (dropped if it is not open: the
    /// protocol resumes from progress on the next open).
    Send {
        /// The peer.
        to: NodeId,
        /// Which connection.
        stream: Stream,
        /// The message.
        msg: MlMsg,
    },
    /// Answer client request `token`.
    Reply {
        /// The request.
        token: u64,
        /// The answer.
        frame: Frame,
    },
    /// A conflict was resolved (already in the feed); for metrics and logs.
    Conflict(ConflictRecord),
}

/// One record of the conflict feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedItem {
    /// Increasing id (for `?since=`).
    pub id: u64,
    /// When it was resolved here (unix ms).
    pub at_ms: u64,
    /// What was resolved.
    pub record: ConflictRecord,
}

/// Per-peer state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerProgress {
    /// Our stream to it is open and it said `Hello`.
    pub out_ready: bool,
    /// Our writes sent to it (highest seq).
    pub sent: u64,
    /// Our writes it has durably (highest seq).
    pub acked: u64,
    /// Its stream to us is open.
    pub in_open: bool,
    /// Its newest write it told us about.
    pub head: u64,
    /// That write's HLC ms.
    pub head_ms: u64,
    /// HLC ms of its newest write applied here.
    pub applied_ms: u64,
}

/// The replica of one multi-leader keyspace on one node.
#[derive(Debug)]
pub struct MultiLeaderReplica {
    node: NodeId,
    keyspace: String,
    policy: ConflictPolicy,
    hlc: HlcClock,
    keys: BTreeMap<Bytes, KeyValue>,
    /// Our durable writes, seq `i + 1` at index `i`.
    own: Vec<MlEntry>,
    /// Encoded size of each of `own`.
    own_bytes: Vec<usize>,
    /// Our writes appended but not yet durable: (log index, entry).
    own_pending: VecDeque<(u64, MlEntry)>,
    /// Highest seq given to a write of ours.
    own_seq: u64,
    /// Log records handed out (the last index).
    log_index: u64,
    /// Durable up to this index.
    durable_index: u64,
    /// Per origin: highest seq applied (in memory).
    applied: VersionVector,
    /// Per origin: highest seq durable here.
    durable: VersionVector,
    /// Received writes waiting for durability: (log index, origin, seq).
    pending_acks: VecDeque<(u64, NodeId, u64)>,
    /// Replies waiting for durability: (log index needed, token, reply).
    pending_replies: VecDeque<(u64, u64, Frame)>,
    peers: BTreeMap<NodeId, PeerProgress>,
    feed: VecDeque<FeedItem>,
    feed_next_id: u64,
    conflicts_total: u64,
    appends: VecDeque<MlOutput>,
    messages: VecDeque<MlOutput>,
    replies: VecDeque<MlOutput>,
    notices: VecDeque<MlOutput>,
}

impl MultiLeaderReplica {
    /// A replica of `keyspace` (policy `policy`) on `node` with an empty
    /// log; replay the log with [`MultiLeaderReplica::recover`] before
    /// any other input.
    pub fn new(node: NodeId, keyspace: &str, policy: ConflictPolicy, peers: &[NodeId]) -> Self {
        MultiLeaderReplica {
            node,
            keyspace: keyspace.to_string(),
            policy,
            hlc: HlcClock::new(node),
            keys: BTreeMap::new(),
            own: Vec::new(),
            own_bytes: Vec::new(),
            own_pending: VecDeque::new(),
            own_seq: 0,
            log_index: 0,
            durable_index: 0,
            applied: VersionVector::new(),
            durable: VersionVector::new(),
            pending_acks: VecDeque::new(),
            pending_replies: VecDeque::new(),
            peers: peers.iter().filter(|p| **p != node).map(|p| (*p, PeerProgress::default())).collect(),
            feed: VecDeque::new(),
            feed_next_id: 1,
            conflicts_total: 0,
            appends: VecDeque::new(),
            messages: VecDeque::new(),
            replies: VecDeque::new(),
            notices: VecDeque::new(),
        }
    }

    /// Replays one durable log record (in log order) after a restart. No
    /// outputs, no conflict records (they were recorded the first time).
    pub fn recover(&mut self, entry: MlEntry) {
        self.log_index += 1;
        self.durable_index = self.log_index;
        self.hlc.observe(entry.hlc, 0);
        if entry.seq <= self.applied.get(entry.origin) {
            return;
        }
        self.merge(&entry, false, 0);
        self.applied.observe(entry.origin, entry.seq);
        self.durable.observe(entry.origin, entry.seq);
        if entry.origin == self.node {
            self.own_seq = entry.seq;
            self.own_bytes.push(encoded_len(&entry));
            self.own.push(entry);
        } else if let Some(p) = self.peers.get_mut(&entry.origin) {
            p.applied_ms = entry.hlc.physical_ms;
        }
    }

    /// The membership changed: peers not listed are forgotten, new ones
    /// start from nothing.
    pub fn set_peers(&mut self, peers: &[NodeId]) {
        self.peers.retain(|p, _| peers.contains(p));
        for p in peers {
            if *p != self.node {
                self.peers.entry(*p).or_default();
            }
        }
    }

    fn merge(&mut self, entry: &MlEntry, record: bool, now_ms: u64) {
        let local = self.keys.remove(&entry.key);
        match apply(&entry.key, local.clone(), &entry.value) {
            Ok((merged, records)) => {
                self.keys.insert(entry.key.clone(), merged);
                if record {
                    for r in records {
                        self.push_conflict(r, now_ms);
                    }
                }
            }
            Err(_) => {
                // A version of another policy: a peer on a different map.
                // Keep ours; the entry still counts as applied so the
                // stream does not stall on it.
                if let Some(l) = local {
                    self.keys.insert(entry.key.clone(), l);
                }
            }
        }
    }

    fn push_conflict(&mut self, record: ConflictRecord, now_ms: u64) {
        self.conflicts_total += 1;
        if self.feed.len() == CONFLICT_FEED_MAX {
            self.feed.pop_front();
        }
        self.feed.push_back(FeedItem { id: self.feed_next_id, at_ms: now_ms, record: record.clone() });
        self.feed_next_id += 1;
        self.notices.push_back(MlOutput::Conflict(record));
    }

    /// A client command (`args[0]` is its name) for keys of this keyspace.
    /// Its reply comes out as [`MlOutput::Reply`] once what it wrote (or
    /// what it read) is durable here.
    pub fn handle_command(&mut self, now_ms: u64, token: u64, args: &[Bytes]) {
        if self.pending_replies.len() >= PENDING_REPLIES_MAX {
            self.replies.push_back(MlOutput::Reply {
                token,
                frame: Frame::error(format!(
                    "BUSY keyspace '{}' has {PENDING_REPLIES_MAX} requests waiting for the disk (PENDING_REPLIES_MAX); retry",
                    self.keyspace
                )),
            });
            return;
        }
        let out = {
            let mut ctx = exec::Ctx {
                keyspace: &self.keyspace,
                policy: self.policy,
                node: self.node,
                now_ms,
                hlc: &mut self.hlc,
                keys: &self.keys,
            };
            exec::execute(&mut ctx, args)
        };
        for (key, value) in &out.writes {
            let bytes = postcard::experimental::serialized_size(value).unwrap_or(usize::MAX);
            if bytes > ENTRY_BYTES_MAX {
                self.replies.push_back(MlOutput::Reply {
                    token,
                    frame: Frame::error(format!(
                        "ERR the write would make {} a {bytes}-byte state, past ENTRY_BYTES_MAX ({ENTRY_BYTES_MAX}): every write ships the whole key",
                        String::from_utf8_lossy(key)
                    )),
                });
                return;
            }
        }
        for (key, value) in out.writes {
            self.own_seq += 1;
            let entry = MlEntry { origin: self.node, seq: self.own_seq, hlc: self.hlc.last(), key, value };
            self.keys.insert(entry.key.clone(), entry.value.clone());
            self.applied.observe(self.node, self.own_seq);
            self.log_index += 1;
            self.appends.push_back(MlOutput::Append { index: self.log_index, entry: entry.clone() });
            self.own_pending.push_back((self.log_index, entry));
        }
        if self.durable_index >= self.log_index {
            self.replies.push_back(MlOutput::Reply { token, frame: out.reply });
        } else {
            self.pending_replies.push_back((self.log_index, token, out.reply));
        }
    }

    /// The log is durable up to record `index`.
    pub fn handle_durable(&mut self, index: u64) {
        if index <= self.durable_index {
            return;
        }
        self.durable_index = index.min(self.log_index);
        while self.own_pending.front().is_some_and(|(i, _)| *i <= self.durable_index) {
            let (_, e) = self.own_pending.pop_front().expect("checked");
            self.durable.observe(self.node, e.seq);
            self.own_bytes.push(encoded_len(&e));
            self.own.push(e);
        }
        while self.pending_replies.front().is_some_and(|(i, _, _)| *i <= self.durable_index) {
            let (_, token, frame) = self.pending_replies.pop_front().expect("checked");
            self.replies.push_back(MlOutput::Reply { token, frame });
        }
        let mut acked: BTreeMap<NodeId, u64> = BTreeMap::new();
        while self.pending_acks.front().is_some_and(|(i, _, _)| *i <= self.durable_index) {
            let (_, origin, seq) = self.pending_acks.pop_front().expect("checked");
            self.durable.observe(origin, seq);
            acked.insert(origin, seq);
        }
        for (origin, have) in acked {
            self.messages.push_back(MlOutput::Send { to: origin, stream: Stream::In, msg: MlMsg::Ack { have } });
        }
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.pump(p);
        }
    }

    /// A stream to or from `peer` opened. On an incoming one this node
    /// says how much of the peer's writes it has.
    pub fn handle_open(&mut self, peer: NodeId, stream: Stream) {
        let have = self.durable.get(peer);
        let Some(p) = self.peers.get_mut(&peer) else { return };
        match stream {
            Stream::Out => p.out_ready = false,
            Stream::In => {
                p.in_open = true;
                self.messages.push_back(MlOutput::Send { to: peer, stream, msg: MlMsg::Hello { have } });
            }
        }
    }

    /// A stream to or from `peer` closed.
    pub fn handle_closed(&mut self, peer: NodeId, stream: Stream) {
        if let Some(p) = self.peers.get_mut(&peer) {
            match stream {
                Stream::Out => p.out_ready = false,
                Stream::In => p.in_open = false,
            }
        }
    }

    /// A message from `peer` on `stream`.
    pub fn handle_msg(&mut self, now_ms: u64, peer: NodeId, stream: Stream, msg: MlMsg) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        match (stream, msg) {
            (Stream::Out, MlMsg::Hello { have }) => {
                let have = have.min(self.own.len() as u64);
                let p = self.peers.get_mut(&peer).expect("checked");
                p.out_ready = true;
                p.sent = have;
                p.acked = have;
                self.pump(peer);
                if self.peers[&peer].sent == have {
                    // Nothing to send: tell the peer our head anyway.
                    self.send_entries(peer, Vec::new());
                }
            }
            (Stream::Out, MlMsg::Ack { have }) => {
                let p = self.peers.get_mut(&peer).expect("checked");
                p.acked = p.acked.max(have.min(p.sent));
                self.pump(peer);
            }
            (Stream::In, MlMsg::Entries { head, head_ms, entries }) => {
                self.receive(now_ms, peer, head, head_ms, entries)
            }
            // Anything else is a confused peer; the stream protocol resumes
            // from progress, so ignoring it loses nothing.
            _ => {}
        }
    }

    fn receive(&mut self, now_ms: u64, peer: NodeId, head: u64, head_ms: u64, entries: Vec<MlEntry>) {
        for e in entries {
            // A stream carries the sender's own writes, consecutively.
            if e.origin != peer || e.seq <= self.applied.get(peer) {
                continue;
            }
            if e.seq != self.applied.get(peer) + 1 {
                break;
            }
            self.hlc.observe(e.hlc, now_ms);
            self.merge(&e, true, now_ms);
            self.applied.observe(peer, e.seq);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.applied_ms = e.hlc.physical_ms;
            }
            self.log_index += 1;
            self.pending_acks.push_back((self.log_index, peer, e.seq));
            self.appends.push_back(MlOutput::Append { index: self.log_index, entry: e });
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            if head >= p.head {
                p.head = head;
                p.head_ms = head_ms;
            }
        }
    }

    /// Sends `peer` our durable writes it lacks, within the in-flight bound.
    fn pump(&mut self, peer: NodeId) {
        loop {
            let Some(p) = self.peers.get(&peer) else { return };
            if !p.out_ready || p.sent >= self.own.len() as u64 || p.sent - p.acked >= IN_FLIGHT_ENTRIES_MAX {
                return;
            }
            let room = (IN_FLIGHT_ENTRIES_MAX - (p.sent - p.acked)) as usize;
            let from = p.sent as usize;
            let mut to = from;
            let mut bytes = 0;
            while to < self.own.len()
                && to - from < ENTRIES_PER_BATCH_MAX.min(room)
                && (to == from || bytes + self.own_bytes[to] <= BATCH_BYTES_MAX)
            {
                bytes += self.own_bytes[to];
                to += 1;
            }
            let batch = self.own[from..to].to_vec();
            self.peers.get_mut(&peer).expect("checked").sent = to as u64;
            self.send_entries(peer, batch);
        }
    }

    fn send_entries(&mut self, peer: NodeId, entries: Vec<MlEntry>) {
        let head = self.own.len() as u64;
        let head_ms = self.own.last().map_or(0, |e| e.hlc.physical_ms);
        self.messages.push_back(MlOutput::Send {
            to: peer,
            stream: Stream::Out,
            msg: MlMsg::Entries { head, head_ms, entries },
        });
    }

    /// Tell every peer our head (a heartbeat for their lag figures).
    pub fn handle_tick(&mut self) {
        let peers: Vec<NodeId> = self.peers.iter().filter(|(_, p)| p.out_ready).map(|(id, _)| *id).collect();
        for p in peers {
            if self.peers[&p].sent >= self.own.len() as u64 {
                self.send_entries(p, Vec::new());
            }
        }
    }

    /// The next output: appends, then messages, then replies, then
    /// conflict notices.
    pub fn poll_output(&mut self) -> Option<MlOutput> {
        self.appends
            .pop_front()
            .or_else(|| self.messages.pop_front())
            .or_else(|| self.replies.pop_front())
            .or_else(|| self.notices.pop_front())
    }

    /// The conflict feed, newest first: records with id above `since`, at
    /// most `count`.
    pub fn conflicts(&self, since: u64, count: usize) -> impl Iterator<Item = &FeedItem> {
        self.feed.iter().rev().take_while(move |f| f.id > since).take(count)
    }

    /// Conflicts resolved here since start (including those the ring
    /// dropped).
    pub fn conflicts_total(&self) -> u64 {
        self.conflicts_total
    }

    /// Per-origin progress applied here.
    pub fn applied(&self) -> &VersionVector {
        &self.applied
    }

    /// Per-origin progress durable here.
    pub fn durable(&self) -> &VersionVector {
        &self.durable
    }

    /// Per-peer stream state.
    pub fn peers(&self) -> &BTreeMap<NodeId, PeerProgress> {
        &self.peers
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The keyspace's policy.
    pub fn policy(&self) -> ConflictPolicy {
        self.policy
    }

    /// The versioned value of `key` (tests, the simulator's checkers).
    pub fn key(&self, key: &[u8]) -> Option<&KeyValue> {
        self.keys.get(key)
    }

    /// Every key's versioned value.
    pub fn keys(&self) -> &BTreeMap<Bytes, KeyValue> {
        &self.keys
    }

    /// Keys that read as present at `now_ms`.
    pub fn live_keys(&self, now_ms: u64) -> u64 {
        let mut n = 0;
        for key in self.keys.keys() {
            let args = [Bytes::from_static(b"EXISTS"), key.clone()];
            let mut hlc = self.hlc;
            let mut ctx = exec::Ctx {
                keyspace: &self.keyspace,
                policy: self.policy,
                node: self.node,
                now_ms,
                hlc: &mut hlc,
                keys: &self.keys,
            };
            if exec::execute(&mut ctx, &args).reply == Frame::Integer(1) {
                n += 1;
            }
        }
        n
    }

    /// Our writes not yet durable on `peer`.
    pub fn unshipped(&self, peer: NodeId) -> u64 {
        self.own_seq - self.peers.get(&peer).map_or(0, |p| p.acked)
    }

    /// How long (ms, on our HLC's physical part) the oldest of our durable
    /// writes that `peer` does not have durably has waited: `peer`'s lag
    /// behind us as this node sees it (0 when it has all of them).
    pub fn unshipped_ms(&self, peer: NodeId, now_ms: u64) -> u64 {
        let acked = self.peers.get(&peer).map_or(0, |p| p.acked) as usize;
        self.own.get(acked).map_or(0, |e| now_ms.saturating_sub(e.hlc.physical_ms))
    }
}

fn encoded_len(e: &MlEntry) -> usize {
    postcard::experimental::serialized_size(e).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests;
