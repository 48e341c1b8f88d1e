//! Replication in the node: which role this node plays (leader or
//! follower), the peer listener, and the calls the connection layer makes
//! (`READONLY` decisions, waiting for a write's ack policy, `WAIT`).
//!
//! The decisions live in `tandem_core::repl`; this module wires them to
//! sockets and tasks. See `leader` and `follower`.

pub mod follower;
pub mod leader;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::RwLock;
use tandem_core::repl::leader::Outcome;
use tandem_core::repl::{AckPolicy, Durability, FollowerStatus, PeerMsg};
use tandem_core::Lsn;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::db::Db;
use crate::faults::Faults;
use crate::metrics::Metrics;
use follower::{FollowerHandle, FollowerParams};
use leader::{LeaderHandle, ReplicaView};

/// The first message on a peer connection must arrive within this.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The role a node plays.
pub enum Role {
    /// Accepts writes; streams to followers.
    Leader(LeaderHandle),
    /// Replicates from a leader; serves reads.
    Follower(FollowerHandle),
}

/// What `INFO`, `ROLE` and `/status` show about replication.
pub enum RoleView {
    /// This node leads.
    Leader {
        /// The followers.
        replicas: Vec<ReplicaView>,
    },
    /// This node follows.
    Follower {
        /// Its progress.
        status: FollowerStatus,
        /// The leader's peer address.
        leader_peer_addr: SocketAddr,
    },
}

/// Replication state of a node.
pub struct Replication {
    config: Config,
    db: Arc<Db>,
    metrics: Arc<Metrics>,
    role: RwLock<Role>,
    default_durability: Durability,
    secret_hash: u64,
    /// Injected link faults, consulted by every peer stream.
    pub faults: Arc<Faults>,
    /// The control plane, which answers `ControlHello` connections.
    control: RwLock<Option<Arc<crate::control::ControlPlane>>>,
}

impl Replication {
    /// Starts in the configured role: leader if no members are configured or
    /// `leader` names this node; otherwise follower of the configured
    /// leader.
    pub fn start(
        config: &Config,
        db: Arc<Db>,
        metrics: Arc<Metrics>,
        faults: Arc<Faults>,
    ) -> Result<Replication, String> {
        let default_durability = config.durability()?;
        let secret_hash = wire::secret_hash(config.cluster_secret.as_deref());
        let leader_id = if config.members.is_empty() { Some(config.node_id) } else { config.leader };
        let repl = Replication {
            config: config.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
            role: RwLock::new(Role::Leader(leader::start(
                db.clone(),
                metrics.clone(),
                config.node_id,
                config.client_addr.to_string(),
                Vec::new(),
                default_durability.clone(),
            ))),
            default_durability,
            secret_hash,
            faults,
            control: RwLock::new(None),
        };
        match leader_id {
            Some(id) if id == config.node_id => repl.become_leader(false)?,
            Some(id) => {
                let addr = config.member_addr(id).ok_or_else(|| format!("leader {id} is not among members"))?;
                repl.become_follower(addr);
            }
            None => tracing::info!("waiting for the control plane to choose a leader"),
        }
        Ok(repl)
    }

    /// Hands control connections (`ControlHello`) to `control`.
    pub fn set_control(&self, control: Arc<crate::control::ControlPlane>) {
        *self.control.write() = Some(control);
    }

    fn followers(&self) -> Vec<u64> {
        self.config.members.iter().map(|(id, _)| *id).filter(|id| *id != self.config.node_id).collect()
    }

    /// Becomes the leader. With `bump_epoch` (a promotion at run time) the
    /// epoch goes up by one, so the old leader's stream is refused
    /// everywhere.
    pub fn become_leader(&self, bump_epoch: bool) -> Result<(), String> {
        if bump_epoch {
            self.db.raise_epoch(self.db.epoch() + 1).map_err(|e| e.to_string())?;
        }
        let followers = self.followers();
        self.default_durability.policy.validate(&followers).map_err(|e| format!("ack policy: {e}"))?;
        let handle = leader::start(
            self.db.clone(),
            self.metrics.clone(),
            self.config.node_id,
            self.config.client_addr.to_string(),
            followers,
            self.default_durability.clone(),
        );
        let old = std::mem::replace(&mut *self.role.write(), Role::Leader(handle));
        stop(old);
        tracing::info!(epoch = self.db.epoch(), "leading");
        Ok(())
    }

    /// Follows the leader whose peer port is `leader_peer_addr`.
    pub fn become_follower(&self, leader_peer_addr: SocketAddr) {
        let handle = follower::start(
            self.db.clone(),
            self.metrics.clone(),
            FollowerParams {
                node_id: self.config.node_id,
                leader_peer_addr,
                client_addr: self.config.client_addr.to_string(),
                secret_hash: self.secret_hash,
                apply_delay: Duration::from_millis(self.config.apply_delay_ms),
                write_inline: matches!(
                    self.config.fsync,
                    tandem_storage::log::FsyncPolicy::EverySec | tandem_storage::log::FsyncPolicy::Never
                ),
            },
        );
        let old = std::mem::replace(&mut *self.role.write(), Role::Follower(handle));
        stop(old);
        tracing::info!(leader = %leader_peer_addr, "following");
    }

    /// True if this node accepts writes.
    pub fn is_leader(&self) -> bool {
        matches!(*self.role.read(), Role::Leader(_))
    }

    /// The `-READONLY` error a follower answers to a write.
    pub fn readonly_error(&self) -> Option<String> {
        match &*self.role.read() {
            Role::Leader(_) => None,
            Role::Follower(f) => {
                let leader = f.status().leader_client_addr.unwrap_or_else(|| "unknown".into());
                Some(format!("READONLY You can't write against a read only replica. leader: {leader}"))
            }
        }
    }

    /// The keyspace's default durability.
    pub fn default_durability(&self) -> &Durability {
        &self.default_durability
    }

    /// Waits until the write at `lsn` meets `durability`. `Err` holds the
    /// error reply for the client.
    pub async fn wait_write(&self, lsn: Lsn, durability: &Durability) -> Result<(), String> {
        if durability.policy == AckPolicy::Async {
            return self.db.wait_durable(lsn).await;
        }
        let leader = match &*self.role.read() {
            Role::Leader(l) => l.clone(),
            Role::Follower(_) => {
                return Err("READONLY this node stopped leading before the write was acknowledged".into())
            }
        };
        let outcome = leader.wait(lsn, durability.clone()).await;
        match outcome {
            Outcome::Acked => Ok(()),
            Outcome::TimedOut { have, need, durable_on_leader } => Err(format!(
                "NOREPLICAS the write was applied on the leader{} and reached {have} of the {need} replicas its ack policy ({} {}) requires within {} ms; it was not rolled back",
                if durable_on_leader { " and is durable there" } else { " but is not yet durable there" },
                durability.policy,
                durability.level,
                durability.timeout_ms,
            )),
            Outcome::Replicas(_) => unreachable!("a write wait never ends as a WAIT"),
        }
    }

    /// Redis `WAIT numreplicas timeout` for a write at `lsn`.
    pub async fn wait_replicas(&self, lsn: Lsn, numreplicas: usize, timeout_ms: u64) -> Result<usize, String> {
        let leader = match &*self.role.read() {
            Role::Leader(l) => l.clone(),
            Role::Follower(_) => return Err("ERR WAIT cannot be used with replica instances.".into()),
        };
        Ok(leader.wait_replicas(lsn, numreplicas, timeout_ms).await)
    }

    /// What this node's replication looks like now.
    pub fn view(&self) -> RoleView {
        match &*self.role.read() {
            Role::Leader(l) => RoleView::Leader { replicas: l.replicas() },
            Role::Follower(f) => RoleView::Follower { status: f.status(), leader_peer_addr: f.leader_peer_addr },
        }
    }

    /// Stops the current role's tasks (at shutdown).
    pub fn shutdown(&self) {
        match &*self.role.read() {
            Role::Leader(l) => l.stop(),
            Role::Follower(f) => f.stop(),
        }
    }

    /// Accepts peer connections until shutdown.
    pub async fn serve_peers(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        loop {
            let (stream, addr) = tokio::select! {
                _ = shutdown.changed() => break,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "peer accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let repl = self.clone();
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = BytesMut::with_capacity(4096);
                let first =
                    match tokio::time::timeout(PEER_HANDSHAKE_TIMEOUT, wire::read_frame(&mut stream, &mut buf)).await {
                        Ok(Ok(msg)) => msg,
                        Ok(Err(e)) => return tracing::debug!(%addr, error = %e, "peer handshake failed"),
                        Err(_) => return tracing::debug!(%addr, "peer handshake timed out"),
                    };
                repl.handle_peer(stream, buf, first, addr).await;
            });
        }
    }

    async fn handle_peer(&self, mut stream: tokio::net::TcpStream, buf: BytesMut, first: PeerMsg, addr: SocketAddr) {
        let refuse = |reason: String| PeerMsg::Refuse { reason };
        if let PeerMsg::ControlHello { node_id, cluster_secret_hash } = first {
            let control = self.control.read().clone();
            let reason = match control {
                _ if cluster_secret_hash != self.secret_hash => {
                    tracing::warn!(%addr, node = node_id, "refused a control peer with the wrong cluster secret");
                    "wrong cluster secret".to_string()
                }
                Some(cp) => return cp.serve_connection(stream, buf, node_id).await,
                None => format!("node {} runs no control plane", self.config.node_id),
            };
            let _ = wire::write_frame(&mut stream, &refuse(reason)).await;
            return;
        }
        let PeerMsg::Subscribe { cluster_secret_hash, node_id, .. } = &first else {
            let _ = wire::write_frame(&mut stream, &refuse(format!("expected Subscribe, got {}", first.kind()))).await;
            return;
        };
        if *cluster_secret_hash != self.secret_hash {
            tracing::warn!(%addr, node = node_id, "refused a peer with the wrong cluster secret");
            let _ = wire::write_frame(&mut stream, &refuse("wrong cluster secret".into())).await;
            return;
        }
        let leader = match &*self.role.read() {
            Role::Leader(l) => Some(l.clone()),
            Role::Follower(_) => None,
        };
        match leader {
            Some(l) => l.serve_follower(self.db.clone(), self.metrics.clone(), stream, first).await,
            None => {
                let _ =
                    wire::write_frame(&mut stream, &refuse(format!("node {} is not the leader", self.config.node_id)))
                        .await;
            }
        }
    }
}

fn stop(role: Role) {
    match role {
        Role::Leader(l) => l.stop(),
        Role::Follower(f) => f.stop(),
    }
}
