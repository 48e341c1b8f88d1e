//! Replication in the node: which role this node plays (leader or
//! follower), the peer listener, and the calls the connection layer makes
//! (`READONLY` decisions, waiting for a write's ack policy, `WAIT`).
//!
//! The decisions live in `tandem_core::repl`; this module wires them to
//! sockets and tasks. See `leader` and `follower`.

pub mod follower;
pub mod leader;
pub mod read_gate;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::RwLock;
use tandem_core::failover::{LeaseConfig, LeaseGrantor};
use tandem_core::repl::leader::Outcome;
use tandem_core::repl::{AckError, AckPolicy, Durability, FollowerStatus, NodeId, PeerMsg};
use tandem_core::replica::Refusal;
use tandem_core::{Epoch, Lsn};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::db::{mono_ms, Db};
use crate::events::Events;
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::peer_auth::PeerKey;
use follower::{FollowerHandle, FollowerParams};
use leader::{LeaderHandle, ReplicaView};

/// The peer handshake and the first message on a peer connection must
/// arrive within this.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Peer connections that may be in the handshake at once; more wait to be
/// accepted (junk connections cannot pile up tasks).
pub const PEER_PREAUTH_CONNECTIONS_MAX: usize = 64;
/// Longest a write waits for a switchover pause to end before it is told to
/// retry.
pub const SWITCHOVER_PAUSE_MAX: Duration = Duration::from_secs(5);

/// The role a node plays.
pub enum Role {
    /// Accepts writes; streams to followers.
    Leader(LeaderHandle),
    /// Replicates from a leader; serves reads.
    Follower(FollowerHandle),
    /// Neither: waiting for the control plane to name a leader, or fenced
    /// during a failover. Serves reads; refuses writes.
    Idle {
        /// Why, for `INFO` and errors.
        reason: String,
    },
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
    /// No leader to follow right now.
    Idle {
        /// Why.
        reason: String,
    },
}

/// Which leadership a node's role belongs to (the same key the sans-IO
/// replica decides on).
pub use tandem_core::replica::single_leader::RoleKey;

/// Replication state of a node.
pub struct Replication {
    config: Config,
    db: Arc<Db>,
    metrics: Arc<Metrics>,
    role: RwLock<Role>,
    role_key: parking_lot::Mutex<RoleKey>,
    default_durability: Durability,
    peer_key: PeerKey,
    /// Injected link faults, consulted by every peer stream.
    pub faults: Arc<Faults>,
    /// The control plane, which answers `ControlHello` connections.
    control: RwLock<Option<Arc<crate::control::ControlPlane>>>,
    /// The multi-leader and leaderless keyspaces' engines, which answer
    /// `KeyspaceHello` connections.
    engines: RwLock<Option<Arc<crate::engines::Engines>>>,
    /// Lease timing when automatic failover is on (`None`: static roles,
    /// no leases).
    pub lease: Option<LeaseConfig>,
    /// This node's lease grants to its leader (automatic failover only).
    pub grantor: Option<Arc<parking_lot::Mutex<LeaseGrantor>>>,
    /// The cluster event log.
    pub events: Arc<Events>,
    /// When this node started following its current leader (or went idle).
    role_since: parking_lot::Mutex<Instant>,
    /// Switchover: writes wait while this is true.
    paused: watch::Sender<bool>,
    /// Member ids, sorted (followers are the others).
    members: RwLock<Vec<NodeId>>,
    /// Whether reads may be served now (a leader only while it holds its
    /// lease); one atomic load per read.
    read_gate: Arc<read_gate::ReadGate>,
    /// Set while this node stepped down from leading under leases and has
    /// not yet caught up with the new leader: the read gate's generation to
    /// reopen once it has.
    catching_up: parking_lot::Mutex<Option<u64>>,
}

impl Replication {
    /// Starts in the configured role: leader if no members are configured or
    /// `leader` names this node; follower of the configured leader; or, with
    /// members and no leader (automatic failover), idle until the control
    /// plane names a leader.
    pub fn start(
        config: &Config,
        db: Arc<Db>,
        metrics: Arc<Metrics>,
        faults: Arc<Faults>,
        events: Arc<Events>,
    ) -> Result<Replication, String> {
        let default_durability = config.durability()?;
        let peer_key =
            PeerKey::new(config.node_id, config.cluster_secret.as_deref()).with_tls(crate::tls::PeerTls::load(config)?);
        let automatic = config.automatic_failover();
        let lease = automatic.then(|| config.lease_config());
        if let Some(l) = &lease {
            l.validate().map_err(|e| format!("lease: {e}"))?;
        }
        let grantor = lease.map(|l| Arc::new(parking_lot::Mutex::new(LeaseGrantor::new(l, db.epoch(), mono_ms()))));
        let repl = Replication {
            config: config.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
            role: RwLock::new(Role::Idle { reason: "starting".into() }),
            role_key: parking_lot::Mutex::new(RoleKey::Idle),
            default_durability,
            peer_key,
            faults,
            control: RwLock::new(None),
            engines: RwLock::new(None),
            lease,
            grantor,
            events,
            role_since: parking_lot::Mutex::new(Instant::now()),
            paused: watch::channel(false).0,
            members: RwLock::new({
                let mut ids: Vec<NodeId> = config.members.iter().map(|(id, _)| *id).collect();
                ids.sort_unstable();
                ids
            }),
            read_gate: Arc::default(),
            catching_up: parking_lot::Mutex::new(None),
        };
        let leader_id = if config.members.is_empty() { Some(config.node_id) } else { config.leader };
        match leader_id {
            Some(id) if id == config.node_id => repl.become_leader(None)?,
            Some(id) => {
                let addr = config.member_addr(id).ok_or_else(|| format!("leader {id} is not among members"))?;
                repl.become_follower(id, addr);
            }
            None => repl.become_idle("waiting for the control plane to choose a leader".into()),
        }
        Ok(repl)
    }

    /// Hands keyspace connections (`KeyspaceHello`) to `engines`.
    pub fn set_engines(&self, engines: Arc<crate::engines::Engines>) {
        *self.engines.write() = Some(engines);
    }

    /// The key that proves this node to peers.
    pub fn peer_key(&self) -> &PeerKey {
        &self.peer_key
    }

    /// Hands control connections (`ControlHello`) to `control`.
    pub fn set_control(&self, control: Arc<crate::control::ControlPlane>) {
        *self.control.write() = Some(control);
    }

    fn followers(&self) -> Vec<u64> {
        self.members.read().iter().copied().filter(|id| *id != self.config.node_id).collect()
    }

    /// The members a leader streams to (from the configuration, then from
    /// the control plane's map). Returns true if they changed.
    pub fn set_members(&self, members: Vec<NodeId>) -> bool {
        let mut current = self.members.write();
        if *current == members {
            return false;
        }
        *current = members;
        true
    }

    /// The role this node plays now.
    pub fn role_key(&self) -> RoleKey {
        *self.role_key.lock()
    }

    /// Becomes the leader. `epoch` (a promotion by the control plane) is the
    /// epoch to lead; `None` keeps the current epoch. The epoch and where its
    /// entries start are persisted first, so the old leader's stream is
    /// refused everywhere.
    pub fn become_leader(&self, epoch: Option<Epoch>) -> Result<(), String> {
        let epoch = epoch.unwrap_or_else(|| self.db.epoch());
        self.db.start_epoch(epoch).map_err(|e| e.to_string())?;
        let followers = self.followers();
        self.default_durability.policy.validate(&followers).map_err(|e| format!("ack policy: {e}"))?;
        // A new leadership has its own read gate (the lease), not a catch-up;
        // without leases reads are always served.
        *self.catching_up.lock() = None;
        if self.lease.is_none() {
            self.read_gate.open();
        }
        let handle = leader::start(
            self.db.clone(),
            self.metrics.clone(),
            self.config.node_id,
            self.config.client_addr.to_string(),
            followers,
            self.default_durability.clone(),
            self.lease.map(|l| (l, self.read_gate.clone())),
        );
        let _ = self.paused.send(false);
        self.db.stop_writes(false);
        let old = std::mem::replace(&mut *self.role.write(), Role::Leader(handle));
        *self.role_key.lock() = RoleKey::Leading(self.db.epoch());
        *self.role_since.lock() = Instant::now();
        stop(old);
        tracing::info!(epoch = self.db.epoch(), "leading");
        Ok(())
    }

    /// Follows node `leader_id`, whose peer port is `leader_peer_addr`.
    pub fn become_follower(&self, leader_id: NodeId, leader_peer_addr: SocketAddr) {
        self.metrics.lease_held.set(0);
        let handle = follower::start(
            self.db.clone(),
            self.metrics.clone(),
            FollowerParams {
                node_id: self.config.node_id,
                leader_peer_addr,
                client_addr: self.config.client_addr.to_string(),
                peer_key: self.peer_key.clone(),
                apply_delay: Duration::from_millis(self.config.apply_delay_ms),
                write_inline: matches!(
                    self.config.fsync,
                    tandem_storage::log::FsyncPolicy::EverySec | tandem_storage::log::FsyncPolicy::Never
                ),
                grantor: self.grantor.clone(),
                data_dir: self.config.data_dir.clone(),
                events: self.events.clone(),
                faults: self.faults.clone(),
                leader_id,
            },
        );
        self.open_reads_unless_stepping_down();
        let old = std::mem::replace(&mut *self.role.write(), Role::Follower(handle));
        *self.role_key.lock() = RoleKey::Following(leader_id);
        *self.role_since.lock() = Instant::now();
        stop(old);
        tracing::info!(leader = leader_id, addr = %leader_peer_addr, "following");
    }

    /// Stops leading or following; serves reads only.
    pub fn become_idle(&self, reason: String) {
        self.metrics.lease_held.set(0);
        self.open_reads_unless_stepping_down();
        let old = std::mem::replace(&mut *self.role.write(), Role::Idle { reason: reason.clone() });
        *self.role_key.lock() = RoleKey::Idle;
        *self.role_since.lock() = Instant::now();
        stop(old);
        tracing::info!(reason, "idle");
    }

    /// Stops the follower driver and waits until it appends nothing more,
    /// leaving the node idle (used by a fence before it reports its log end).
    pub async fn become_idle_and_wait(&self, reason: String) {
        self.metrics.lease_held.set(0);
        self.open_reads_unless_stepping_down();
        let old = std::mem::replace(&mut *self.role.write(), Role::Idle { reason });
        *self.role_key.lock() = RoleKey::Idle;
        *self.role_since.lock() = Instant::now();
        match old {
            Role::Follower(f) => f.stop_and_wait().await,
            other => stop(other),
        }
    }

    /// Opens the read gate for a replica role, except when this node leaves
    /// (or already left) a leadership under leases: then reads stay refused
    /// until it has caught up with the new leader, because until then its
    /// state may hold values the new leader already overwrote and its
    /// clients, who read from a leader, expect the newest.
    fn open_reads_unless_stepping_down(&self) {
        let was_leading = matches!(*self.role.read(), Role::Leader(_)) && self.lease.is_some();
        let mut catching_up = self.catching_up.lock();
        if was_leading || catching_up.is_some() {
            *catching_up = Some(self.read_gate.close());
        } else {
            self.read_gate.open();
        }
    }

    /// How long this node has been in its current role.
    pub fn role_age(&self) -> Duration {
        self.role_since.lock().elapsed()
    }

    /// True if this node accepts writes (it leads; under leases it may still
    /// refuse them while its lease is not held).
    pub fn is_leader(&self) -> bool {
        matches!(*self.role.read(), Role::Leader(_))
    }

    /// True if this node leads and holds its lease.
    pub fn holds_lease(&self) -> bool {
        matches!(&*self.role.read(), Role::Leader(l) if l.lease_valid())
    }

    /// Why this node cannot serve a read now, as the error reply (`None`: it
    /// can). Only a leader that lost its lease refuses: another node may
    /// already lead and have acknowledged newer writes (see `read_gate` and
    /// docs/decisions/0011-stale-leader-reads-refused.md). The check is one
    /// atomic load; the error text is built only on refusal.
    #[inline]
    pub fn read_refusal(&self) -> Option<String> {
        if self.read_gate.is_open(mono_ms) {
            return None;
        }
        self.read_refusal_slow()
    }

    #[cold]
    fn read_refusal_slow(&self) -> Option<String> {
        let catching_up = *self.catching_up.lock();
        if let Some(generation) = catching_up {
            let caught_up = match &*self.role.read() {
                Role::Follower(f) => {
                    let s = f.status();
                    // `leader_last_lsn` is 0 from the welcome until the new
                    // leader's first entries or heartbeat say how far it is.
                    s.state == tandem_core::repl::FollowerState::Streaming
                        && (s.leader_last_lsn > 0 || s.applied_lsn == 0)
                        && s.applied_lsn >= s.leader_last_lsn
                        && s.applied_lsn >= s.consistent_lsn
                }
                Role::Leader(_) | Role::Idle { .. } => false,
            };
            if caught_up {
                self.read_gate.reopen(generation);
                let mut catching_up = self.catching_up.lock();
                if *catching_up == Some(generation) {
                    *catching_up = None;
                }
                return None;
            }
            return Some(format!(
                "TRYAGAIN this node stopped leading (it lost its lease) and has not yet caught up with the new \
                 leader, so it serves no reads until it has: its values may be overwritten already; {}",
                self.newer_leader_hint()
            ));
        }
        Some(format!(
            "TRYAGAIN this node led epoch {} but does not hold its lease (it cannot reach a majority of the \
             cluster), so it serves no reads or writes: another node may lead now and hold newer values; {}",
            self.db.epoch(),
            self.newer_leader_hint()
        ))
    }

    /// What the cluster map says about a newer leader, for refusals.
    fn newer_leader_hint(&self) -> String {
        let Some(cp) = self.control.read().clone() else {
            return "leader: unknown; retry".into();
        };
        let map = cp.map().borrow().clone();
        match map.leader {
            Some(id) if id != self.config.node_id => {
                let peer = map.members.get(&id).map(|m| m.peer_addr.to_string()).unwrap_or_default();
                format!("leader: node {id} (epoch {}, peer address {peer}); retry there", map.epoch)
            }
            _ => "leader: unknown (a failover may be under way); retry".into(),
        }
    }

    /// The reason `ROLE`, `INFO` and `/status` give for a leader that lost
    /// its lease (it is shown as idle, not as master).
    fn leaseless_reason(&self) -> String {
        format!(
            "led epoch {} but lost its lease (cannot reach a majority); refusing reads and writes; {}",
            self.db.epoch(),
            self.newer_leader_hint()
        )
    }

    /// Switchover: holds new writes (they wait, see [`Self::write_refusal`])
    /// or lets them go again.
    pub fn set_paused(&self, paused: bool) {
        let _ = self.paused.send(paused);
    }

    /// Why this node cannot take a write now, as the error reply (`None`: it
    /// can). A write during a switchover pause waits for the pause to end
    /// (at most [`SWITCHOVER_PAUSE_MAX`]) and then sees the new role.
    pub async fn write_refusal(&self) -> Option<Refusal> {
        if *self.paused.borrow() {
            let mut rx = self.paused.subscribe();
            let _ = tokio::time::timeout(SWITCHOVER_PAUSE_MAX, rx.wait_for(|p| !*p)).await;
            if *self.paused.borrow() {
                return Some(Refusal::Paused);
            }
        }
        match &*self.role.read() {
            Role::Leader(l) if l.lease_valid() => None,
            Role::Leader(_) => Some(Refusal::NoLease),
            Role::Follower(f) => Some(Refusal::ReadOnly { leader: f.status().leader_client_addr, reason: None }),
            Role::Idle { reason } => Some(Refusal::ReadOnly { leader: None, reason: Some(reason.clone()) }),
        }
    }

    /// The keyspace's default durability.
    pub fn default_durability(&self) -> &Durability {
        &self.default_durability
    }

    /// Waits until the write at `lsn` meets `durability`. `Err` says why it
    /// was not acknowledged (its `to_resp` is the client's reply).
    pub async fn wait_write(&self, lsn: Lsn, durability: &Durability) -> Result<(), AckError> {
        if durability.policy == AckPolicy::Async {
            return self.db.wait_durable(lsn).await;
        }
        let leader = match &*self.role.read() {
            Role::Leader(l) => l.clone(),
            Role::Follower(_) | Role::Idle { .. } => return Err(AckError::StoppedLeading { waited: false }),
        };
        let outcome = leader.wait(lsn, durability.clone()).await;
        match outcome {
            Some(Outcome::Acked) => Ok(()),
            None => Err(AckError::StoppedLeading { waited: true }),
            Some(Outcome::TimedOut { have, need, durable_on_leader }) => {
                Err(AckError::NoReplicas { have, need, durable_on_leader, durability: durability.clone() })
            }
            Some(Outcome::Replicas(_)) => unreachable!("a write wait never ends as a WAIT"),
        }
    }

    /// Redis `WAIT numreplicas timeout` for a write at `lsn`.
    pub async fn wait_replicas(&self, lsn: Lsn, numreplicas: usize, timeout_ms: u64) -> Result<usize, String> {
        let leader = match &*self.role.read() {
            Role::Leader(l) => l.clone(),
            Role::Follower(_) | Role::Idle { .. } => {
                return Err("ERR WAIT cannot be used with replica instances.".into())
            }
        };
        Ok(leader.wait_replicas(lsn, numreplicas, timeout_ms).await)
    }

    /// What this node's replication looks like now.
    pub fn view(&self) -> RoleView {
        match &*self.role.read() {
            // A leader without its lease is no master: another node may
            // lead (and it refuses reads and writes until a majority renews).
            Role::Leader(l) if self.lease.is_some() && !l.lease_valid() => {
                RoleView::Idle { reason: self.leaseless_reason() }
            }
            Role::Leader(l) => RoleView::Leader { replicas: l.replicas() },
            Role::Follower(f) => RoleView::Follower { status: f.status(), leader_peer_addr: f.leader_peer_addr },
            Role::Idle { reason } => RoleView::Idle { reason: reason.clone() },
        }
    }

    /// Stops the current role's tasks (at shutdown).
    pub fn shutdown(&self) {
        match &*self.role.read() {
            Role::Leader(l) => l.stop(),
            Role::Follower(f) => f.stop(),
            Role::Idle { .. } => {}
        }
    }

    /// Accepts peer connections until shutdown.
    pub async fn serve_peers(self: Arc<Self>, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let preauth = Arc::new(tokio::sync::Semaphore::new(PEER_PREAUTH_CONNECTIONS_MAX));
        loop {
            let permit = tokio::select! {
                _ = shutdown.changed() => break,
                p = preauth.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
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
            let repl = self.clone();
            tokio::spawn(async move {
                // Nothing but the TLS handshake (with `--tls-ca`) and the
                // fixed-size peer handshake is read before the peer proves
                // it holds the cluster secret (and a certificate of the CA).
                let (mut stream, peer) =
                    match tokio::time::timeout(PEER_HANDSHAKE_TIMEOUT, repl.peer_key.accept_tcp(stream)).await {
                        Ok(Ok(accepted)) => accepted,
                        Ok(Err(e)) => {
                            repl.metrics.error("peer_auth");
                            return tracing::warn!(%addr, error = %e, "refused a peer connection");
                        }
                        Err(_) => return tracing::debug!(%addr, "peer handshake timed out"),
                    };
                let mut buf = BytesMut::with_capacity(4096);
                let first =
                    match tokio::time::timeout(PEER_HANDSHAKE_TIMEOUT, wire::read_frame(&mut stream, &mut buf)).await {
                        Ok(Ok(msg)) => msg,
                        Ok(Err(e)) => return tracing::debug!(%addr, peer, error = %e, "peer's first message failed"),
                        Err(_) => return tracing::debug!(%addr, peer, "peer's first message timed out"),
                    };
                drop(permit);
                repl.handle_peer(stream, buf, first, addr, peer).await;
            });
        }
    }

    /// Serves a connection whose peer authenticated as node `peer`: its
    /// first message must speak for `peer` and no other node.
    async fn handle_peer(
        &self,
        mut stream: crate::peer_auth::PeerStream,
        buf: BytesMut,
        first: PeerMsg,
        addr: SocketAddr,
        peer: NodeId,
    ) {
        let refuse = |reason: String| PeerMsg::Refuse { reason };
        let claimed = match &first {
            PeerMsg::ControlHello { node_id }
            | PeerMsg::Subscribe { node_id, .. }
            | PeerMsg::KeyspaceHello { node_id, .. } => Some(*node_id),
            _ => None,
        };
        if let Some(claimed) = claimed.filter(|c| *c != peer) {
            tracing::warn!(%addr, peer, claimed, "refused a peer speaking for another node");
            self.metrics.error("peer_impersonation");
            let reason = format!("authenticated as node {peer}, cannot speak for node {claimed}");
            let _ = wire::write_frame(&mut stream, &refuse(reason)).await;
            return;
        }
        if let PeerMsg::ControlHello { .. } = first {
            let control = self.control.read().clone();
            let reason = match control {
                Some(cp) => return cp.serve_connection(stream, buf, peer).await,
                None => format!("node {} runs no control plane", self.config.node_id),
            };
            let _ = wire::write_frame(&mut stream, &refuse(reason)).await;
            return;
        }
        if let PeerMsg::KeyspaceHello { keyspace, .. } = &first {
            if keyspace == crate::pubsub::PEER_STREAM {
                let hub = self.engines.read().as_ref().map(|e| e.pubsub.clone());
                if let Some(hub) = hub {
                    return hub.serve_peer(stream, buf, peer).await;
                }
            }
            let engine = self.engines.read().as_ref().and_then(|e| e.get(keyspace));
            let reason = match engine {
                Some(engine) => return engine.serve_peer(stream, buf, peer).await,
                None => format!("node {} runs no replica of keyspace {keyspace:?}", self.config.node_id),
            };
            let _ = wire::write_frame(&mut stream, &refuse(reason)).await;
            return;
        }
        let PeerMsg::Subscribe { .. } = &first else {
            let _ = wire::write_frame(&mut stream, &refuse(format!("expected Subscribe, got {}", first.kind()))).await;
            return;
        };
        let leader = match &*self.role.read() {
            Role::Leader(l) => Some(l.clone()),
            Role::Follower(_) | Role::Idle { .. } => None,
        };
        match leader {
            Some(l) => {
                l.serve_follower(self.db.clone(), self.metrics.clone(), self.faults.clone(), stream, first).await
            }
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
        Role::Idle { .. } => {}
    }
}
