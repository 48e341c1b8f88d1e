//! The control plane: a Raft group (openraft 0.9) among the nodes that
//! replicates the cluster map — members, the keyspace's ack policy, and the
//! keyspace's data-plane leader and epoch.
//!
//! Owns the Raft instance, bootstrapping (a pristine node not started with
//! `--join` initializes the group with every listed member), proposals
//! (forwarded to the Raft leader from any node), membership changes (learner,
//! catch up, then voter), the answering side of control connections, and the
//! application RPC hook the failover logic uses. Data never flows through
//! here; this module must never choose a data-plane leader by itself: it
//! only applies the `SetLeader` compare-and-set others propose.
//!
//! - [`map`]: the cluster map and its pure rules.
//! - [`store`]: the durable Raft log, vote and applied map.
//! - [`network`]: RPCs over the peer port, with link faults honoured.

pub mod map;
pub mod network;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tandem_core::repl::{NodeId, PeerMsg};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::faults::Faults;
use crate::repl::wire;
pub use map::{ClusterMap, ControlCmd, ControlResp, MemberInfo};
use network::{NetworkFactory, PeerPool, RpcReq, RpcResp};

openraft::declare_raft_types!(
    /// openraft's type configuration for the control plane.
    pub TypeConfig:
        D = ControlCmd,
        R = ControlResp,
        NodeId = NodeId,
        Node = BasicNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// Default Raft heartbeat interval.
pub const HEARTBEAT_MS_DEFAULT: u64 = 50;
/// Default lower bound of the randomized election timeout.
pub const ELECTION_TIMEOUT_MIN_MS_DEFAULT: u64 = 150;
/// Default upper bound of the randomized election timeout.
pub const ELECTION_TIMEOUT_MAX_MS_DEFAULT: u64 = 300;
/// How long a proposal keeps being retried while no Raft leader can take it.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts while no Raft leader is known.
const PROPOSE_RETRY_INTERVAL: Duration = Duration::from_millis(20);
/// How long one membership change may take (a learner catching up
/// included); past it the outcome is unknown (a learner may stay a learner).
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one proposal may wait for its commit, here or forwarded.
const FORWARD_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// RPCs one incoming control connection may have in progress at once.
const INCOMING_INFLIGHT_MAX: usize = 64;
/// Answers queued for one incoming control connection.
const INCOMING_QUEUE_FRAMES_MAX: usize = 256;
/// The name openraft logs for this group.
const CLUSTER_NAME: &str = "tandem-control";

/// The application RPC handler (failover probes, fencing): called with the
/// calling node and the request body, answers with the response body.
pub type AppHandler = Arc<dyn Fn(NodeId, Bytes) -> BoxFuture<'static, Bytes> + Send + Sync>;
/// A boxed, sendable future (the shape of `futures::future::BoxFuture`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a control-plane operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControlError {
    /// No Raft leader is known (an election is under way or no quorum).
    #[error("the control plane has no Raft leader (election in progress or no quorum)")]
    NoLeader,
    /// This node is not the Raft leader.
    #[error("node {me} is not the control-plane Raft leader (leader: {leader:?})")]
    NotLeader {
        /// This node.
        me: NodeId,
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// The request was not sent: the peer cannot be reached.
    #[error("node {peer} is unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: NodeId,
        /// Why.
        reason: String,
    },
    /// The request was not sent: the link is cut by fault injection.
    #[error("the link to node {peer} is cut (fault injection)")]
    Cut {
        /// The peer.
        peer: NodeId,
    },
    /// No answer in time; the request may or may not have taken effect.
    #[error("node {peer} did not answer within {timeout_ms} ms; the outcome is unknown")]
    Timeout {
        /// The peer.
        peer: NodeId,
        /// The timeout.
        timeout_ms: u64,
    },
    /// The connection closed while waiting; the outcome is unknown.
    #[error("the connection to node {peer} closed before it answered; the outcome is unknown")]
    ConnectionLost {
        /// The peer.
        peer: NodeId,
    },
    /// The node to act on is not a member.
    #[error("node {0} is not a member of the cluster")]
    UnknownMember(NodeId),
    /// No application handler is registered on the called node.
    #[error("node {0} has no application RPC handler registered")]
    NoAppHandler(NodeId),
    /// A malformed or unexpected message.
    #[error("control protocol error: {0}")]
    Protocol(String),
    /// openraft reported an error.
    #[error("raft: {0}")]
    Raft(String),
    /// Local storage failed.
    #[error("control plane storage: {0}")]
    Storage(String),
    /// The control plane is shut down.
    #[error("the control plane is shut down")]
    Shutdown,
}

impl ControlError {
    /// True if the request certainly did not take effect and may be retried.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            ControlError::NoLeader
                | ControlError::NotLeader { .. }
                | ControlError::Unreachable { .. }
                | ControlError::Cut { .. }
        )
    }
}

/// How to start a control plane.
#[derive(Clone)]
pub struct ControlConfig {
    /// This node.
    pub node_id: NodeId,
    /// Every initial member with its peer address (this node included).
    pub members: Vec<(NodeId, SocketAddr)>,
    /// Where the Raft state lives (`<data_dir>/control`).
    pub dir: PathBuf,
    /// The cluster secret (`None`: the empty secret).
    pub cluster_secret: Option<String>,
    /// Mutual TLS on peer links (`--tls-ca`), `None`: plain TCP.
    pub peer_tls: Option<crate::tls::PeerTls>,
    /// The node's injected link faults.
    pub faults: Arc<Faults>,
    /// Raft heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound.
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound.
    pub election_timeout_max_ms: u64,
    /// Never initialize the group; wait to be added by `add_member`.
    pub join: bool,
}

impl ControlConfig {
    /// A configuration with the default timing.
    pub fn new(node_id: NodeId, members: Vec<(NodeId, SocketAddr)>, dir: PathBuf, faults: Arc<Faults>) -> Self {
        ControlConfig {
            node_id,
            members,
            dir,
            cluster_secret: None,
            peer_tls: None,
            faults,
            heartbeat_ms: HEARTBEAT_MS_DEFAULT,
            election_timeout_min_ms: ELECTION_TIMEOUT_MIN_MS_DEFAULT,
            election_timeout_max_ms: ELECTION_TIMEOUT_MAX_MS_DEFAULT,
            join: false,
        }
    }
}

/// What `/cluster` shows about the Raft group on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// This node.
    pub node_id: NodeId,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// Current Raft term.
    pub term: u64,
    /// The Raft leader this node knows of.
    pub raft_leader: Option<NodeId>,
    /// Last index in this node's Raft log.
    pub last_log_index: Option<u64>,
    /// Last index this node knows to be committed.
    pub committed: Option<u64>,
    /// Last index applied to this node's map.
    pub applied: Option<u64>,
    /// Voting members of the Raft group.
    pub voters: Vec<NodeId>,
    /// Learners (being added, not yet voting).
    pub learners: Vec<NodeId>,
}

/// A running control plane.
pub struct ControlPlane {
    me: NodeId,
    raft: Raft<TypeConfig>,
    pool: Arc<PeerPool>,
    faults: Arc<Faults>,
    key: crate::peer_auth::PeerKey,
    map_rx: watch::Receiver<ClusterMap>,
    committed: Arc<AtomicU64>,
    app: RwLock<Option<AppHandler>>,
    shutdown_tx: watch::Sender<bool>,
}

fn raft_err<E: std::fmt::Display>(e: E) -> ControlError {
    ControlError::Raft(e.to_string())
}

impl ControlPlane {
    /// Opens the Raft state in `cfg.dir` and starts the Raft node. A
    /// pristine node not started with `join` initializes the group with
    /// every listed member (the same initialization on every node is safe).
    pub async fn start(cfg: ControlConfig) -> Result<Arc<ControlPlane>, ControlError> {
        let storage = |e: std::io::Error| ControlError::Storage(e.to_string());
        let log = store::LogStore::open(&cfg.dir).map_err(storage)?;
        let (sm, map_rx) = store::StateMachineStore::open(&cfg.dir).map_err(storage)?;
        let pristine = log.is_pristine();
        let committed = log.committed_index();
        let raft_config = openraft::Config {
            cluster_name: CLUSTER_NAME.into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_min_ms,
            election_timeout_max: cfg.election_timeout_max_ms,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ControlError::Raft(format!("invalid control-plane timing: {e}")))?;
        let key =
            crate::peer_auth::PeerKey::new(cfg.node_id, cfg.cluster_secret.as_deref()).with_tls(cfg.peer_tls.clone());
        let pool = Arc::new(PeerPool::new(key.clone(), cfg.faults.clone()));
        let raft = Raft::new(cfg.node_id, Arc::new(raft_config), NetworkFactory { pool: pool.clone() }, log, sm)
            .await
            .map_err(raft_err)?;
        let (shutdown_tx, _) = watch::channel(false);
        let cp = Arc::new(ControlPlane {
            me: cfg.node_id,
            raft,
            pool,
            faults: cfg.faults.clone(),
            key,
            map_rx,
            committed,
            app: RwLock::new(None),
            shutdown_tx,
        });
        if pristine && !cfg.join {
            let nodes: BTreeMap<NodeId, BasicNode> =
                cfg.members.iter().map(|(id, addr)| (*id, BasicNode { addr: addr.to_string() })).collect();
            tracing::info!(members = ?nodes.keys().collect::<Vec<_>>(), "control plane: initializing the Raft group");
            match cp.raft.initialize(nodes).await {
                Ok(()) => {}
                Err(RaftError::APIError(e)) => tracing::info!(reason = %e, "control plane already initialized"),
                Err(e) => return Err(raft_err(e)),
            }
        } else if pristine {
            tracing::info!("control plane: waiting to be added to the cluster (--join)");
        } else {
            tracing::info!("control plane: rejoining with the stored Raft state");
        }
        Ok(cp)
    }

    /// The cluster map; the receiver sees every applied change.
    pub fn map(&self) -> watch::Receiver<ClusterMap> {
        self.map_rx.clone()
    }

    /// The Raft leader this node knows of.
    pub fn raft_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// True if this node is the Raft leader.
    pub fn is_raft_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.me)
    }

    /// Proposes `cmd`; answers once it is committed and applied. From a
    /// non-leader the proposal is forwarded to the Raft leader. Retried while
    /// no leader is known, up to `PROPOSE_TIMEOUT`; never retried once it may
    /// have been sent (a `Timeout` leaves the outcome unknown: read the map).
    pub async fn propose(&self, cmd: ControlCmd) -> Result<ControlResp, ControlError> {
        self.with_leader(RpcReq::Forward(cmd.clone()), |resp| match resp {
            RpcResp::Forward(r) => r,
            other => Err(ControlError::Protocol(format!("unexpected answer to a proposal: {other:?}"))),
        })
        .await
    }

    /// Adds node `id` (reached at `peer_addr`): first as a learner that
    /// catches up, then as a voter. Runs on the Raft leader (forwarded).
    /// Never re-add a node that merely restarted: it rejoins by itself.
    pub async fn add_member(&self, id: NodeId, peer_addr: SocketAddr) -> Result<ClusterMap, ControlError> {
        self.with_leader(RpcReq::AddMember { id, peer_addr }, member_answer).await
    }

    /// Removes node `id` from the voters and from the cluster.
    pub async fn remove_member(&self, id: NodeId) -> Result<ClusterMap, ControlError> {
        self.with_leader(RpcReq::RemoveMember { id }, member_answer).await
    }

    /// Runs `req` on the Raft leader: locally if this node leads, else
    /// forwarded. Retries only while the request certainly had no effect.
    async fn with_leader<T>(
        &self,
        req: RpcReq,
        answer: impl Fn(RpcResp) -> Result<T, ControlError>,
    ) -> Result<T, ControlError> {
        let deadline = tokio::time::Instant::now() + PROPOSE_TIMEOUT;
        let call_timeout = match req {
            RpcReq::AddMember { .. } | RpcReq::RemoveMember { .. } => MEMBERSHIP_TIMEOUT,
            _ => FORWARD_CALL_TIMEOUT,
        };
        loop {
            let result = match self.raft_leader() {
                Some(leader) if leader == self.me => {
                    // A leader cut off from its quorum never commits: bound the wait.
                    match tokio::time::timeout(call_timeout, self.handle_local(&req)).await {
                        Ok(resp) => answer(resp),
                        Err(_) => {
                            Err(ControlError::Timeout { peer: self.me, timeout_ms: call_timeout.as_millis() as u64 })
                        }
                    }
                }
                Some(leader) => match self.leader_addr(leader) {
                    Some(addr) => self.pool.call(leader, &addr, &req, call_timeout).await.and_then(&answer),
                    None => Err(ControlError::UnknownMember(leader)),
                },
                None => Err(ControlError::NoLeader),
            };
            match result {
                Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(PROPOSE_RETRY_INTERVAL).await;
                }
                other => return other,
            }
        }
    }

    fn leader_addr(&self, id: NodeId) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())
    }

    /// Executes a leader-only request here (a forwarded one included). A
    /// non-leader answers `NotLeader`, so the caller retries elsewhere.
    async fn handle_local(&self, req: &RpcReq) -> RpcResp {
        match req {
            RpcReq::Forward(cmd) => RpcResp::Forward(self.write_local(cmd.clone()).await),
            RpcReq::AddMember { id, peer_addr } => RpcResp::Member(self.add_member_local(*id, *peer_addr).await),
            RpcReq::RemoveMember { id } => RpcResp::Member(self.remove_member_local(*id).await),
            other => RpcResp::Error(ControlError::Protocol(format!("not a leader request: {other:?}"))),
        }
    }

    fn client_write_err(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ControlError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ControlError::NotLeader { me: self.me, leader: f.leader_id }
            }
            RaftError::Fatal(openraft::error::Fatal::Stopped) => ControlError::Shutdown,
            other => raft_err(other),
        }
    }

    async fn write_local(&self, cmd: ControlCmd) -> Result<ControlResp, ControlError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok(r.data),
            Err(e) => Err(self.client_write_err(e)),
        }
    }

    async fn add_member_local(&self, id: NodeId, peer_addr: SocketAddr) -> Result<ClusterMap, ControlError> {
        if !self.is_raft_leader() {
            return Err(ControlError::NotLeader { me: self.me, leader: self.raft_leader() });
        }
        // The group's own membership must be committed first (openraft
        // refuses a change while another is in flight).
        self.raft
            .ensure_linearizable()
            .await
            .map_err(|e| ControlError::Raft(format!("before adding node {id}: {e}")))?;
        let node = BasicNode { addr: peer_addr.to_string() };
        tracing::info!(id, %peer_addr, "control plane: adding a learner");
        self.raft.add_learner(id, node, true).await.map_err(|e| self.client_write_err(e))?;
        tracing::info!(id, "control plane: learner caught up; promoting to voter");
        let change = ChangeMembers::AddVoterIds([id].into_iter().collect());
        self.raft.change_membership(change, false).await.map_err(|e| self.client_write_err(e))?;
        Ok(self.map_rx.borrow().clone())
    }

    async fn remove_member_local(&self, id: NodeId) -> Result<ClusterMap, ControlError> {
        if !self.is_raft_leader() {
            return Err(ControlError::NotLeader { me: self.me, leader: self.raft_leader() });
        }
        let known = self.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some();
        if !known {
            return Err(ControlError::UnknownMember(id));
        }
        tracing::info!(id, "control plane: removing a member");
        let change = ChangeMembers::RemoveVoters([id].into_iter().collect());
        self.raft.change_membership(change, false).await.map_err(|e| self.client_write_err(e))?;
        Ok(self.map_rx.borrow().clone())
    }

    /// Registers the handler for application RPCs (`call_app` from peers).
    pub fn set_app_handler(&self, h: AppHandler) {
        *self.app.write() = Some(h);
    }

    /// Sends an application RPC to `peer` over the control connection and
    /// waits up to `timeout` for its answer.
    pub async fn call_app(&self, peer: NodeId, body: Bytes, timeout: Duration) -> Result<Bytes, ControlError> {
        let addr = self.leader_addr(peer).ok_or(ControlError::UnknownMember(peer))?;
        match self.pool.call(peer, &addr, &RpcReq::App(body), timeout).await? {
            RpcResp::App(r) => r,
            RpcResp::Error(e) => Err(e),
            other => Err(ControlError::Protocol(format!("unexpected answer to an app call: {other:?}"))),
        }
    }

    /// The Raft group as this node sees it.
    pub fn status(&self) -> ControlStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let committed = match self.committed.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        };
        ControlStatus {
            node_id: self.me,
            state: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            raft_leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed,
            applied: m.last_applied.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }
    }

    /// Answers the RPCs arriving on an accepted control connection (after
    /// `handle_peer` checked its `ControlHello`) until it closes, the link
    /// to `peer` is cut, or the control plane shuts down.
    pub async fn serve_connection(self: Arc<Self>, stream: crate::peer_auth::PeerStream, buf: BytesMut, peer: NodeId) {
        if self.faults.is_cut(peer) {
            return tracing::debug!(peer, "control connection dropped: link cut");
        }
        let (mut rd, mut wr) = stream.into_split();
        let mut buf = buf;
        let (tx, mut rx) = mpsc::channel::<PeerMsg>(INCOMING_QUEUE_FRAMES_MAX);
        let writer = tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if wire::write_frame(&mut wr, &msg).await.is_err() {
                    break;
                }
            }
        });
        let inflight = Arc::new(Semaphore::new(INCOMING_INFLIGHT_MAX));
        let mut shutdown = self.shutdown_tx.subscribe();
        loop {
            let frame = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break,
                f = wire::read_frame(&mut rd, &mut buf) => f,
            };
            let (id, body) = match frame {
                Ok(PeerMsg::ControlRequest { id, body }) => (id, body),
                Ok(other) => {
                    tracing::warn!(peer, kind = other.kind(), "unexpected frame on a control connection");
                    break;
                }
                Err(e) => {
                    tracing::debug!(peer, error = %e, "incoming control connection closed");
                    break;
                }
            };
            if self.faults.is_cut(peer) {
                tracing::debug!(peer, "control connection dropped: link cut");
                break;
            }
            let Ok(permit) = inflight.clone().acquire_owned().await else { break };
            let (cp, tx) = (self.clone(), tx.clone());
            tokio::spawn(async move {
                let answer = cp.answer(peer, &body).await.encode();
                drop(permit);
                if cp.faults.is_cut(peer) {
                    return;
                }
                if let Some(delay) = cp.faults.send_delay(peer) {
                    tokio::time::sleep(delay).await;
                }
                let _ = tx.send(PeerMsg::ControlResponse { id, body: answer }).await;
            });
        }
        writer.abort();
    }

    /// The answer to one incoming RPC.
    async fn answer(&self, peer: NodeId, body: &[u8]) -> RpcResp {
        let req: RpcReq = match network::decode(body) {
            Ok(r) => r,
            Err(e) => return RpcResp::Error(e),
        };
        // A Raft message speaks for the node in its vote; it must be the
        // node this connection authenticated as.
        let voter = match &req {
            RpcReq::AppendEntries(r) => Some(r.vote.leader_id().voted_for()),
            RpcReq::Vote(r) => Some(r.vote.leader_id().voted_for()),
            RpcReq::InstallSnapshot(r) => Some(r.vote.leader_id().voted_for()),
            _ => None,
        };
        if let Some(claimed) = voter.filter(|v| *v != Some(peer)) {
            tracing::warn!(peer, ?claimed, "refused a Raft message sent on behalf of another node");
            return RpcResp::Error(ControlError::Protocol(format!(
                "authenticated as node {peer}, cannot send Raft messages for node {claimed:?}"
            )));
        }
        match req {
            RpcReq::AppendEntries(r) => RpcResp::AppendEntries(self.raft.append_entries(r).await),
            RpcReq::Vote(r) => RpcResp::Vote(self.raft.vote(r).await),
            RpcReq::InstallSnapshot(r) => RpcResp::InstallSnapshot(self.raft.install_snapshot(r).await),
            RpcReq::App(body) => {
                let handler = self.app.read().clone();
                match handler {
                    Some(h) => RpcResp::App(Ok(h(peer, body).await)),
                    None => RpcResp::App(Err(ControlError::NoAppHandler(self.me))),
                }
            }
            // The caller stops waiting after its own timeout; do not keep a
            // task parked longer than the longest one.
            leader_only => match tokio::time::timeout(MEMBERSHIP_TIMEOUT, self.handle_local(&leader_only)).await {
                Ok(resp) => resp,
                Err(_) => RpcResp::Error(ControlError::Timeout {
                    peer: self.me,
                    timeout_ms: MEMBERSHIP_TIMEOUT.as_millis() as u64,
                }),
            },
        }
    }

    /// This node's peer identity (tests answer the handshake with it).
    pub fn peer_key(&self) -> &crate::peer_auth::PeerKey {
        &self.key
    }

    /// Stops Raft and closes every control connection.
    pub async fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "control plane Raft task ended with an error");
        }
        self.pool.shutdown().await;
    }
}

fn member_answer(resp: RpcResp) -> Result<ClusterMap, ControlError> {
    match resp {
        RpcResp::Member(r) => r,
        RpcResp::Error(e) => Err(e),
        other => Err(ControlError::Protocol(format!("unexpected answer to a membership change: {other:?}"))),
    }
}
