//! The peer protocol: messages between a leader and its followers.
//!
//! Owns the message set and its binary encoding (a version byte, then
//! postcard). Framing (a `u32` length prefix per message, checked against
//! [`PEER_FRAME_BYTES_MAX`] before reading the body) is the node's job; this
//! file must never touch a socket or decide what to send.
//!
//! Every connection first passes the node's peer handshake (mutual
//! challenge-response under the cluster secret, outside this message set),
//! which says which node is on the other end. Then a data connection goes:
//! follower sends `Subscribe`; leader answers `Welcome`
//! (or `Refuse` and closes); if `Welcome.stream_from` is
//! [`STREAM_FROM_SNAPSHOT`] a snapshot follows (`SnapshotBegin`,
//! `SnapshotChunk`*, `SnapshotEnd`); then `Entries` and `Heartbeat`s flow
//! from the leader and `Ack`s from the follower.
//!
//! A control-plane connection starts with `ControlHello` instead, then
//! carries `ControlRequest` / `ControlResponse` frames (see the node's
//! `control` module).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::{Epoch, Lsn};

/// Largest encoded message a peer may send or accept. It must hold one log
/// entry of the largest size the log accepts (512 MiB, the storage record
/// limit, which matches the 512 MiB string limit) plus framing, because an
/// entry is never split across messages; batches are otherwise kept near
/// `LeaderConfig::batch_bytes_max` (1 MiB by default).
pub const PEER_FRAME_BYTES_MAX: usize = (512 << 20) + (1 << 20);

/// `Welcome.stream_from` value meaning "a snapshot comes first; the stream
/// then continues after the snapshot's start LSN". A real stream always
/// starts at LSN 1 or later.
pub const STREAM_FROM_SNAPSHOT: Lsn = 0;

/// Version byte that starts every encoded message.
const PEER_MSG_FORMAT_V1: u8 = 1;

/// One log entry on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Position in the log.
    pub lsn: Lsn,
    /// Epoch of the leader that created the entry.
    pub epoch: Epoch,
    /// `LogEntry::encode_payload` bytes, opaque to replication.
    pub payload: Bytes,
}

/// A message of the peer protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// Follower to leader, first message of a connection: who I am and where
    /// my log ends.
    Subscribe {
        /// The follower's node id.
        node_id: NodeId,
        /// The highest epoch the follower has seen.
        epoch: Epoch,
        /// The last LSN in the follower's log.
        last_lsn: Lsn,
        /// Where clients reach the follower (for `INFO replication`).
        client_addr: String,
        /// Where each epoch starts in the follower's log
        /// ([`crate::failover::EpochHistory`] pairs), so the leader can find
        /// where the two logs part.
        history: Vec<(Epoch, Lsn)>,
    },
    /// Follower to leader: progress. Sent when either LSN advances.
    Ack {
        /// Everything up to here is on the follower's disk.
        flushed_lsn: Lsn,
        /// Everything up to here is applied (visible to reads).
        applied_lsn: Lsn,
    },
    /// Leader to follower: the subscription is accepted.
    Welcome {
        /// The leader's node id.
        leader_id: NodeId,
        /// The leader's epoch.
        epoch: Epoch,
        /// Where clients reach the leader (named in `-READONLY` replies).
        leader_client_addr: String,
        /// The first LSN the stream will carry (the follower's last LSN + 1),
        /// or [`STREAM_FROM_SNAPSHOT`].
        stream_from: Lsn,
        /// The leader's epoch history (the follower adopts it).
        history: Vec<(Epoch, Lsn)>,
        /// The follower's log holds entries after this LSN that the leader's
        /// log does not: the follower writes them to a rollback file and
        /// tells its core (`Follower::handle_rolled_back`) before it handles
        /// the `Welcome`; a snapshot follows ([`STREAM_FROM_SNAPSHOT`]), and
        /// the follower keeps its old log until the snapshot is installed.
        diverged_after: Option<Lsn>,
    },
    /// Leader to follower: consecutive log entries.
    Entries {
        /// The leader's epoch.
        epoch: Epoch,
        /// Consecutive entries, oldest first.
        entries: Vec<WireEntry>,
        /// The leader's last LSN when it sent this.
        leader_last_lsn: Lsn,
        /// The leader's clock when it sent this (unix ms).
        leader_now_ms: u64,
    },
    /// Leader to follower: liveness and progress when no entries flow.
    Heartbeat {
        /// The leader's epoch.
        epoch: Epoch,
        /// The leader's last LSN.
        leader_last_lsn: Lsn,
        /// The leader's durable LSN.
        leader_durable_lsn: Lsn,
        /// The leader's clock (unix ms).
        leader_now_ms: u64,
    },
    /// Leader to follower: a snapshot starts; the follower discards its state
    /// and log.
    SnapshotBegin {
        /// The leader's epoch.
        epoch: Epoch,
        /// The snapshot holds every entry up to here; the stream continues at
        /// `start_lsn + 1`.
        start_lsn: Lsn,
    },
    /// Leader to follower: one `Store::encode_bucket` chunk.
    SnapshotChunk {
        /// The chunk.
        bytes: Bytes,
    },
    /// Leader to follower: the snapshot is complete.
    SnapshotEnd {
        /// The snapshot is fuzzy: its state is consistent once the follower
        /// has applied up to here.
        end_lsn: Lsn,
    },
    /// Leader to follower: renew my lease. `stamp_ms` is the leader's
    /// monotonic clock; the follower echoes it in `LeaseGrant` unless it has
    /// fenced this epoch.
    LeaseRequest {
        /// The leader's epoch.
        epoch: Epoch,
        /// The leader's monotonic clock (ms) when it sent the request.
        stamp_ms: u64,
    },
    /// Follower to leader: the lease is granted for the request stamped
    /// `stamp_ms`.
    LeaseGrant {
        /// The echoed stamp.
        stamp_ms: u64,
    },
    /// Either side: the other side is refused; the connection is closed after
    /// this (stale epoch, divergent log, bad secret, protocol violation).
    Refuse {
        /// Why, for logs and for the operator.
        reason: String,
    },
    /// Control plane, first message of a control connection: who is calling.
    /// The connection then carries `ControlRequest`s from the caller and
    /// `ControlResponse`s back, multiplexed by `id`.
    ControlHello {
        /// The caller's node id (it must be the id the peer authenticated
        /// as in the node's peer handshake).
        node_id: NodeId,
    },
    /// Control plane: one RPC (the body is the control plane's own encoding).
    ControlRequest {
        /// Matches the response to the request on this connection.
        id: u64,
        /// The encoded RPC.
        body: Bytes,
    },
    /// Control plane: the answer to the `ControlRequest` with the same `id`.
    ControlResponse {
        /// The request's id.
        id: u64,
        /// The encoded answer.
        body: Bytes,
    },
    /// First message of a connection that belongs to one multi-leader or
    /// leaderless keyspace's replica: the rest of the connection carries
    /// [`PeerMsg::Keyspace`] frames in both directions, whose bodies only
    /// that keyspace's replica reads.
    KeyspaceHello {
        /// The caller's node id (it must be the id the peer authenticated
        /// as in the node's peer handshake).
        node_id: NodeId,
        /// The keyspace the connection is for.
        keyspace: String,
    },
    /// One message of a keyspace connection (the replica's own encoding).
    Keyspace {
        /// The encoded message.
        body: Bytes,
    },
}

/// A peer message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable peer message: {0}")]
pub struct DecodeError(String);

impl PeerMsg {
    /// Encodes the message into `out` (appending): a version byte, then the
    /// postcard body.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(PEER_MSG_FORMAT_V1);
        let encoded = postcard::to_extend(self, std::mem::take(out)).expect("encoding into a Vec cannot fail");
        *out = encoded;
    }

    /// Decodes one message written by [`PeerMsg::encode`]; `bytes` is exactly
    /// one frame body.
    pub fn decode(bytes: &[u8]) -> Result<PeerMsg, DecodeError> {
        if bytes.len() > PEER_FRAME_BYTES_MAX {
            return Err(DecodeError(format!("{} bytes exceed PEER_FRAME_BYTES_MAX", bytes.len())));
        }
        match bytes.split_first() {
            Some((&PEER_MSG_FORMAT_V1, body)) => {
                let (msg, rest) = postcard::take_from_bytes(body).map_err(|e| DecodeError(e.to_string()))?;
                if !rest.is_empty() {
                    return Err(DecodeError(format!("{} trailing bytes after the message", rest.len())));
                }
                Ok(msg)
            }
            Some((v, _)) => Err(DecodeError(format!("unknown peer message format version {v}"))),
            None => Err(DecodeError("empty frame".into())),
        }
    }

    /// The message's name, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PeerMsg::Subscribe { .. } => "subscribe",
            PeerMsg::Ack { .. } => "ack",
            PeerMsg::Welcome { .. } => "welcome",
            PeerMsg::Entries { .. } => "entries",
            PeerMsg::Heartbeat { .. } => "heartbeat",
            PeerMsg::SnapshotBegin { .. } => "snapshot_begin",
            PeerMsg::SnapshotChunk { .. } => "snapshot_chunk",
            PeerMsg::SnapshotEnd { .. } => "snapshot_end",
            PeerMsg::LeaseRequest { .. } => "lease_request",
            PeerMsg::KeyspaceHello { .. } => "keyspace_hello",
            PeerMsg::Keyspace { .. } => "keyspace",
            PeerMsg::LeaseGrant { .. } => "lease_grant",
            PeerMsg::Refuse { .. } => "refuse",
            PeerMsg::ControlHello { .. } => "control_hello",
            PeerMsg::ControlRequest { .. } => "control_request",
            PeerMsg::ControlResponse { .. } => "control_response",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_message() -> Vec<PeerMsg> {
        vec![
            PeerMsg::Subscribe {
                node_id: 2,
                epoch: 3,
                last_lsn: 40,
                client_addr: "127.0.0.1:7392".into(),
                history: vec![(1, 1), (3, 30)],
            },
            PeerMsg::Ack { flushed_lsn: 9, applied_lsn: 8 },
            PeerMsg::Welcome {
                leader_id: 1,
                epoch: 3,
                leader_client_addr: "127.0.0.1:7382".into(),
                stream_from: 41,
                history: vec![(1, 1)],
                diverged_after: Some(40),
            },
            PeerMsg::LeaseRequest { epoch: 3, stamp_ms: 17 },
            PeerMsg::LeaseGrant { stamp_ms: 17 },
            PeerMsg::Entries {
                epoch: 3,
                entries: vec![
                    WireEntry { lsn: 41, epoch: 3, payload: Bytes::from_static(b"\x01abc") },
                    WireEntry { lsn: 42, epoch: 3, payload: Bytes::new() },
                ],
                leader_last_lsn: 50,
                leader_now_ms: 1_700_000_000_000,
            },
            PeerMsg::Heartbeat { epoch: 3, leader_last_lsn: 50, leader_durable_lsn: 49, leader_now_ms: 5 },
            PeerMsg::SnapshotBegin { epoch: 3, start_lsn: 50 },
            PeerMsg::SnapshotChunk { bytes: Bytes::from(vec![7u8; 300]) },
            PeerMsg::SnapshotEnd { end_lsn: 52 },
            PeerMsg::Refuse { reason: "stale epoch".into() },
            PeerMsg::ControlHello { node_id: 3 },
            PeerMsg::ControlRequest { id: 9, body: Bytes::from_static(b"vote") },
            PeerMsg::ControlResponse { id: 9, body: Bytes::new() },
        ]
    }

    #[test]
    fn every_message_roundtrips_through_its_encoding() {
        for msg in every_message() {
            let mut buf = vec![];
            msg.encode(&mut buf);
            assert_eq!(PeerMsg::decode(&buf).unwrap(), msg, "{}", msg.kind());
        }
    }

    #[test]
    fn encode_appends_so_a_caller_can_reserve_a_length_prefix() {
        let mut buf = vec![0, 0, 0, 0];
        PeerMsg::Ack { flushed_lsn: 1, applied_lsn: 1 }.encode(&mut buf);
        assert_eq!(PeerMsg::decode(&buf[4..]).unwrap(), PeerMsg::Ack { flushed_lsn: 1, applied_lsn: 1 });
    }

    #[test]
    fn garbage_unknown_versions_and_trailing_bytes_are_errors_not_panics() {
        assert!(PeerMsg::decode(&[]).is_err());
        assert!(PeerMsg::decode(&[2, 0]).is_err());
        assert!(PeerMsg::decode(&[1, 0xff, 0xff, 0xff]).is_err());
        let mut buf = vec![];
        PeerMsg::Ack { flushed_lsn: 1, applied_lsn: 1 }.encode(&mut buf);
        buf.push(0);
        assert!(PeerMsg::decode(&buf).unwrap_err().to_string().contains("trailing"));
        for msg in every_message() {
            let mut buf = vec![];
            msg.encode(&mut buf);
            for cut in 0..buf.len() {
                let _ = PeerMsg::decode(&buf[..cut]);
            }
        }
    }
}
