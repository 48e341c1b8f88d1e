//! The control plane's transport over the node's peer port.
//!
//! Owns the RPC message set ([`RpcReq`] / [`RpcResp`], postcard-encoded into
//! `PeerMsg::ControlRequest` / `ControlResponse` bodies), the outgoing side
//! ([`PeerPool`]: one persistent, multiplexed connection per peer, opened
//! with the peer handshake (`crate::peer_auth`) and `ControlHello`, reopened
//! with backoff, a timeout per call), and
//! openraft's `RaftNetwork` on top of it. Every call honours the node's
//! injected link faults: nothing is sent to a cut peer, nothing is accepted
//! from one, and the injected delay is added before each send.
//!
//! The answering side lives in `mod.rs` (`ControlPlane::serve_connection`),
//! because answering needs the Raft instance. This file must never decide
//! anything about the cluster map.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tandem_core::repl::{NodeId, PeerMsg};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::map::{ClusterMap, ControlCmd, ControlResp};
use super::{ControlError, TypeConfig};
use crate::faults::Faults;
use crate::peer_auth::PeerKey;
use crate::repl::wire;

/// Largest RPC body accepted or sent (the map and its log are small; a
/// snapshot chunk is bounded by openraft's `snapshot_max_chunk_size`).
pub const CONTROL_BODY_BYTES_MAX: usize = 16 << 20;
/// How long opening a control connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// First wait before reconnecting to a peer that could not be reached.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest wait between reconnect attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Frames queued for one outgoing connection before callers wait.
const OUTGOING_QUEUE_FRAMES_MAX: usize = 256;

/// A control-plane RPC.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcReq {
    /// Raft log replication and heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft election.
    Vote(VoteRequest<NodeId>),
    /// Raft snapshot transfer (one chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal forwarded to the Raft leader.
    Forward(ControlCmd),
    /// Add a member, forwarded to the Raft leader.
    AddMember {
        /// The new node.
        id: NodeId,
        /// Its peer address.
        peer_addr: std::net::SocketAddr,
    },
    /// Remove a member, forwarded to the Raft leader.
    RemoveMember {
        /// The node to remove.
        id: NodeId,
    },
    /// An application RPC for the registered handler (failover probes, fencing).
    App(Bytes),
}

/// The answer to an [`RpcReq`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcResp {
    /// To `AppendEntries`.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `InstallSnapshot`.
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To `Forward`.
    Forward(Result<ControlResp, ControlError>),
    /// To `AddMember` / `RemoveMember`.
    Member(Result<ClusterMap, ControlError>),
    /// To `App`.
    App(Result<Bytes, ControlError>),
    /// The request could not be decoded or handled.
    Error(ControlError),
}

impl RpcReq {
    /// Encodes for a `ControlRequest` body.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encoding into a Vec cannot fail"))
    }
}

impl RpcResp {
    /// Encodes for a `ControlResponse` body.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_allocvec(self).expect("encoding into a Vec cannot fail"))
    }
}

/// Decodes an RPC body, refusing oversized ones.
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ControlError> {
    if body.len() > CONTROL_BODY_BYTES_MAX {
        return Err(ControlError::Protocol(format!(
            "control body of {} bytes exceeds CONTROL_BODY_BYTES_MAX ({CONTROL_BODY_BYTES_MAX})",
            body.len()
        )));
    }
    postcard::from_bytes(body).map_err(|e| ControlError::Protocol(format!("undecodable control message: {e}")))
}

/// Pending calls on one connection, by request id.
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Bytes>>>>;

/// The outgoing connection to one peer.
#[derive(Default)]
struct Link {
    tx: Option<mpsc::Sender<PeerMsg>>,
    task: Option<tokio::task::JoinHandle<()>>,
    backoff: Option<Duration>,
    retry_at: Option<Instant>,
}

/// Outgoing control connections, one per peer, shared by every caller.
pub struct PeerPool {
    me: NodeId,
    key: PeerKey,
    faults: Arc<Faults>,
    links: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Link>>>>,
    pending: Mutex<HashMap<NodeId, Pending>>,
    next_id: AtomicU64,
}

impl PeerPool {
    /// A pool for node `me`.
    pub fn new(key: PeerKey, faults: Arc<Faults>) -> PeerPool {
        PeerPool {
            me: key.me(),
            key,
            faults,
            links: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn pending_of(&self, peer: NodeId) -> Pending {
        self.pending.lock().entry(peer).or_default().clone()
    }

    /// Sends `req` to `peer` at `addr` and waits up to `timeout` for the
    /// answer. `Unreachable` and `Cut` mean the request was not sent; `Timeout`
    /// and `ConnectionLost` mean its outcome is unknown.
    pub async fn call(
        &self,
        peer: NodeId,
        addr: &str,
        req: &RpcReq,
        timeout: Duration,
    ) -> Result<RpcResp, ControlError> {
        let body = req.encode();
        if body.len() > CONTROL_BODY_BYTES_MAX {
            return Err(ControlError::Protocol(format!("control request of {} bytes is too large", body.len())));
        }
        let deadline = Instant::now() + timeout;
        if self.faults.is_cut(peer) {
            return Err(ControlError::Cut { peer });
        }
        if let Some(delay) = self.faults.send_delay(peer) {
            tokio::time::sleep(delay).await;
        }
        let tx = tokio::time::timeout_at(deadline, self.sender(peer, addr))
            .await
            .map_err(|_| ControlError::Unreachable { peer, reason: "connecting timed out".into() })??;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (done_tx, done_rx) = oneshot::channel();
        let pending = self.pending_of(peer);
        pending.lock().insert(id, done_tx);
        let msg = PeerMsg::ControlRequest { id, body };
        if tokio::time::timeout_at(deadline, tx.send(msg)).await.map_or(true, |r| r.is_err()) {
            pending.lock().remove(&id);
            return Err(ControlError::Unreachable { peer, reason: "the connection closed before sending".into() });
        }
        let answer = match tokio::time::timeout_at(deadline, done_rx).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(_)) => return Err(ControlError::ConnectionLost { peer }),
            Err(_) => {
                pending.lock().remove(&id);
                return Err(ControlError::Timeout { peer, timeout_ms: timeout.as_millis() as u64 });
            }
        };
        decode(&answer)
    }

    /// The sender of the open connection to `peer`, opening one if needed.
    async fn sender(&self, peer: NodeId, addr: &str) -> Result<mpsc::Sender<PeerMsg>, ControlError> {
        let link = self.links.lock().entry(peer).or_default().clone();
        let mut link = link.lock().await;
        if let Some(tx) = link.tx.as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        if let Some(at) = link.retry_at.filter(|at| *at > Instant::now()) {
            let wait_ms = (at - Instant::now()).as_millis();
            return Err(ControlError::Unreachable { peer, reason: format!("reconnecting in {wait_ms} ms") });
        }
        match self.connect(peer, addr).await {
            Ok((tx, task)) => {
                *link = Link { tx: Some(tx.clone()), task: Some(task), backoff: None, retry_at: None };
                Ok(tx)
            }
            Err(reason) => {
                let backoff = link.backoff.map_or(RECONNECT_BACKOFF_MIN, |b| (b * 2).min(RECONNECT_BACKOFF_MAX));
                link.backoff = Some(backoff);
                link.retry_at = Some(Instant::now() + backoff);
                tracing::debug!(peer, addr, reason = reason.as_str(), "control connection failed");
                Err(ControlError::Unreachable { peer, reason })
            }
        }
    }

    async fn connect(
        &self,
        peer: NodeId,
        addr: &str,
    ) -> Result<(mpsc::Sender<PeerMsg>, tokio::task::JoinHandle<()>), String> {
        let mut stream = self.key.connect(addr, peer, CONNECT_TIMEOUT).await?;
        let hello = PeerMsg::ControlHello { node_id: self.me };
        wire::write_frame(&mut stream, &hello).await.map_err(|e| format!("hello to {addr}: {e}"))?;
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE_FRAMES_MAX);
        let task = tokio::spawn(run_link(stream, rx, self.pending_of(peer), self.faults.clone(), peer));
        Ok((tx, task))
    }

    /// Closes every connection (at shutdown).
    pub async fn shutdown(&self) {
        let links: Vec<_> = self.links.lock().drain().map(|(_, l)| l).collect();
        for link in links {
            let mut link = link.lock().await;
            link.tx = None;
            if let Some(task) = link.task.take() {
                task.abort();
            }
        }
        self.pending.lock().clear();
    }
}

/// Drives one outgoing connection: writes queued requests, routes responses
/// to their callers. Ends (failing every pending call) when the socket
/// fails, the peer refuses us, or the link to the peer is cut.
async fn run_link(
    stream: crate::peer_auth::PeerStream,
    mut rx: mpsc::Receiver<PeerMsg>,
    pending: Pending,
    faults: Arc<Faults>,
    peer: NodeId,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                if let Err(e) = wire::write_frame(&mut wr, &msg).await {
                    tracing::debug!(peer, error = %e, "control connection write failed");
                    break;
                }
            }
            frame = wire::read_frame(&mut rd, &mut buf) => match frame {
                Ok(PeerMsg::ControlResponse { id, body }) => {
                    if faults.is_cut(peer) {
                        tracing::debug!(peer, "control connection dropped: link cut");
                        break;
                    }
                    if let Some(done) = pending.lock().remove(&id) {
                        let _ = done.send(body);
                    }
                }
                Ok(PeerMsg::Refuse { reason }) => {
                    tracing::warn!(peer, reason = reason.as_str(), "peer refused the control connection");
                    break;
                }
                Ok(other) => {
                    tracing::warn!(peer, kind = other.kind(), "unexpected frame on a control connection");
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer, error = %e, "control connection closed");
                    break;
                }
            }
        }
    }
    // Dropping the senders fails the callers with ConnectionLost.
    pending.lock().clear();
}

/// Builds one [`PeerNetwork`] per Raft target.
pub struct NetworkFactory {
    /// The shared connections.
    pub pool: Arc<PeerPool>,
}

/// openraft's view of one peer.
pub struct PeerNetwork {
    pool: Arc<PeerPool>,
    target: NodeId,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        PeerNetwork { pool: self.pool.clone(), target, addr: node.addr.clone() }
    }
}

/// Maps a transport failure to openraft's error: unreachable peers make
/// openraft back off; the rest are network errors it retries.
fn rpc_error<E: std::error::Error>(e: ControlError) -> RPCError<NodeId, BasicNode, E> {
    match e {
        ControlError::Unreachable { .. } | ControlError::Cut { .. } => RPCError::Unreachable(Unreachable::new(&e)),
        _ => RPCError::Network(NetworkError::new(&e)),
    }
}

impl PeerNetwork {
    async fn call(&self, req: RpcReq, option: &RPCOption) -> Result<RpcResp, ControlError> {
        self.pool.call(self.target, &self.addr, &req, option.hard_ttl()).await
    }

    fn unexpected<E: std::error::Error>(&self, got: RpcResp) -> RPCError<NodeId, BasicNode, E> {
        let e = ControlError::Protocol(format!("unexpected answer from node {}: {got:?}", self.target));
        RPCError::Network(NetworkError::new(&e))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(RpcReq::AppendEntries(rpc), &option).await.map_err(rpc_error)? {
            RpcResp::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        match self.call(RpcReq::InstallSnapshot(rpc), &option).await.map_err(rpc_error)? {
            RpcResp::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(RpcReq::Vote(rpc), &option).await.map_err(rpc_error)? {
            RpcResp::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected(other)),
        }
    }
}
