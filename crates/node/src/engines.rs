//! The replicas of keyspaces that are not single-leader: one engine per
//! multi-leader or leaderless keyspace on this node.
//!
//! Owns the [`Engine`] seam (what the connection layer, the peer listener
//! and the admin port may ask of such a keyspace), the registry of running
//! engines ([`Engines`], kept equal to the keyspaces in force by
//! [`Engines::sync`]), what every engine is given ([`EngineEnv`]: its own
//! data directory, the node's id, peers, peer key, faults and metrics), and
//! [`dial`], the one way an engine opens an authenticated connection to a
//! peer for its keyspace.
//!
//! Single-leader keyspaces share the node's log and store
//! (docs/decisions/0010); a multi-leader or leaderless keyspace keeps its
//! data in its engine, under `<data_dir>/keyspaces/<name>/`, and its
//! replication and conflict decisions in a sans-IO replica in
//! `tandem_core`. This module decides nothing about replication and must
//! never hold a lock across an await.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use tandem_core::command::CommandSpec;
use tandem_core::keyspace::{KeyspaceDef, Keyspaces, Mode};
use tandem_core::repl::{NodeId, PeerMsg};
use tandem_core::resp::Frame;
use tandem_storage::log::FsyncPolicy;
use tokio::sync::watch;

use crate::connection::ClientState;
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::peer_auth::{PeerKey, PeerStream};
use crate::repl::wire;

/// A boxed future, for the object-safe [`Engine`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long [`dial`] waits for the TCP connection and the handshake.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// One multi-leader or leaderless keyspace's replica on this node, as the
/// rest of the node sees it.
pub trait Engine: Send + Sync + 'static {
    /// Runs one client command whose keys all belong to this keyspace
    /// (routing has checked that). The reply is released only once the
    /// write is as durable as the mode promises.
    fn execute<'a>(
        &'a self,
        client: &'a mut ClientState,
        spec: &'static CommandSpec,
        args: &'a [Bytes],
    ) -> BoxFuture<'a, Frame>;

    /// Serves a peer connection opened for this keyspace: the peer
    /// authenticated as `peer` and sent [`PeerMsg::KeyspaceHello`]; `buf`
    /// holds bytes already read after that message.
    fn serve_peer(self: Arc<Self>, stream: PeerStream, buf: BytesMut, peer: NodeId) -> BoxFuture<'static, ()>;

    /// This node's state of the keyspace, for `GET /keyspaces` and
    /// `tandem keyspace list` (the `state` object).
    fn status(&self) -> serde_json::Value;

    /// Live keys this node holds for the keyspace (what `keyspace drop`
    /// counts before it agrees).
    fn key_count(&self) -> u64;

    /// Stops the engine's tasks (the keyspace was dropped or the node is
    /// shutting down); its files stay.
    fn stop(&self);

    /// The keyspace's conflict feed, newest first: records with an id
    /// above `since`, at most `count`, as JSON objects (`id`, `at_ms`,
    /// `keyspace`, `key`, `policy`, `outcome`, `versions`). Engines that
    /// keep no feed return none.
    fn conflicts(&self, _since: u64, _count: usize) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// What every engine is given.
#[derive(Clone)]
pub struct EngineEnv {
    /// This node.
    pub node_id: NodeId,
    /// The node's data directory; an engine keeps its files under
    /// [`EngineEnv::dir_of`].
    pub data_dir: PathBuf,
    /// The node's fsync policy (`--fsync`): a write is acknowledged after
    /// this much local durability at least.
    pub fsync: FsyncPolicy,
    /// The cluster's members and their peer addresses (this node
    /// included), kept current from the cluster map.
    pub peers: watch::Receiver<BTreeMap<NodeId, SocketAddr>>,
    /// Proves this node to peers ([`dial`]).
    pub peer_key: PeerKey,
    /// Injected link faults: every engine stream consults them.
    pub faults: Arc<Faults>,
    /// The node's metrics registry.
    pub metrics: Arc<Metrics>,
    /// Becomes true when the node shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// How often a leaderless keyspace compares Merkle trees with each
    /// other replica (`--anti-entropy-interval-ms`).
    pub anti_entropy_interval_ms: u64,
    /// The backup repository (`--backup-repo`): multi-leader keyspaces
    /// archive their logs there.
    pub backup_repo: Option<PathBuf>,
    /// How often they do (`--archive-interval-ms`).
    pub archive_interval_ms: u64,
}

impl EngineEnv {
    /// The directory of keyspace `name`'s files.
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.data_dir.join("keyspaces").join(name)
    }
}

/// The running engines, by keyspace name.
pub struct Engines {
    env: EngineEnv,
    peers_tx: watch::Sender<BTreeMap<NodeId, SocketAddr>>,
    running: RwLock<BTreeMap<String, Running>>,
    /// The node's pub/sub hub: its peer stream ([`crate::pubsub::PEER_STREAM`])
    /// arrives like a keyspace's and dials peers with [`dial`].
    pub pubsub: Arc<crate::pubsub::Hub>,
}

/// A running engine and the definition it was started with.
type Running = (KeyspaceDef, Arc<dyn Engine>);

impl Engines {
    /// A registry with no engine running yet. `peers` is the configured
    /// membership; [`Engines::set_peers`] follows the map's.
    pub fn new(mut env: EngineEnv, peers: BTreeMap<NodeId, SocketAddr>) -> Engines {
        let (peers_tx, peers_rx) = watch::channel(peers);
        env.peers = peers_rx;
        Engines { env, peers_tx, running: RwLock::new(BTreeMap::new()), pubsub: Arc::new(crate::pubsub::Hub::new()) }
    }

    /// What every engine is given (the members, the peer key, faults).
    pub fn env(&self) -> &EngineEnv {
        &self.env
    }

    /// The cluster's members changed.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        self.peers_tx.send_if_modified(|p| {
            let changed = *p != peers;
            *p = peers;
            changed
        });
    }

    /// Starts an engine for every multi-leader or leaderless keyspace of
    /// `router` that has none, and stops those whose keyspace is gone or
    /// was redefined.
    pub fn sync(&self, router: &Keyspaces) {
        let wanted: BTreeMap<&str, &KeyspaceDef> =
            router.defs().into_iter().filter(|d| !d.mode.is_single_leader()).map(|d| (d.name.as_str(), d)).collect();
        let mut running = self.running.write();
        running.retain(|name, (def, engine)| {
            let keep = wanted.get(name.as_str()).is_some_and(|w| *w == def);
            if !keep {
                tracing::info!(keyspace = name.as_str(), "stopping the keyspace's replica");
                engine.stop();
            }
            keep
        });
        for (name, def) in wanted {
            if running.contains_key(name) {
                continue;
            }
            match start(&self.env, def) {
                Ok(engine) => {
                    tracing::info!(keyspace = name, mode = def.mode.name(), "keyspace replica started");
                    running.insert(name.to_string(), (def.clone(), engine));
                }
                Err(e) => {
                    self.env.metrics.error("keyspace_engine");
                    tracing::error!(keyspace = name, mode = def.mode.name(), error = %e, "cannot start the keyspace's replica");
                }
            }
        }
    }

    /// The engine of keyspace `name`, if one runs here.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Engine>> {
        self.running.read().get(name).map(|(_, e)| e.clone())
    }

    /// Every running engine, by keyspace name.
    pub fn all(&self) -> Vec<(String, Arc<dyn Engine>)> {
        self.running.read().iter().map(|(n, (_, e))| (n.clone(), e.clone())).collect()
    }

    /// Stops every engine (node shutdown).
    pub fn stop_all(&self) {
        for (_, (_, engine)) in std::mem::take(&mut *self.running.write()) {
            engine.stop();
        }
    }
}

/// Starts the engine of one multi-leader or leaderless keyspace.
fn start(env: &EngineEnv, def: &KeyspaceDef) -> Result<Arc<dyn Engine>, String> {
    match &def.mode {
        Mode::SingleLeader(_) => Err("a single-leader keyspace runs in the shared log, not an engine".into()),
        Mode::MultiLeader(_) => crate::multi_leader::start(env, def),
        Mode::Leaderless(_) => crate::leaderless::start(env, def),
    }
}

/// Why [`dial`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The peer is not a member (or has no address).
    #[error("node {0} is not a cluster member")]
    UnknownPeer(NodeId),
    /// The link to the peer is cut by an injected fault.
    #[error("the link to node {0} is cut (injected fault)")]
    Cut(NodeId),
    /// Connecting or the handshake failed.
    #[error("connecting to node {peer} at {addr}: {reason}")]
    Connect {
        /// The peer.
        peer: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Opens an authenticated connection to `peer` for `keyspace`: TCP, the
/// peer handshake (the peer proves it is `peer`), then
/// [`PeerMsg::KeyspaceHello`]. Frames then go with [`wire::write_frame`]
/// and [`wire::read_frame`] as [`PeerMsg::Keyspace`].
pub async fn dial(env: &EngineEnv, peer: NodeId, keyspace: &str) -> Result<PeerStream, DialError> {
    if env.faults.is_cut(peer) {
        return Err(DialError::Cut(peer));
    }
    let addr = *env.peers.borrow().get(&peer).ok_or(DialError::UnknownPeer(peer))?;
    let fail = |reason: String| DialError::Connect { peer, addr, reason };
    let connect = async {
        let mut stream = env.peer_key.connect(&addr.to_string(), peer, DIAL_TIMEOUT).await.map_err(fail)?;
        let hello = PeerMsg::KeyspaceHello { node_id: env.node_id, keyspace: keyspace.to_string() };
        wire::write_frame(&mut stream, &hello).await.map_err(|e| fail(e.to_string()))?;
        Ok(stream)
    };
    tokio::time::timeout(DIAL_TIMEOUT, connect).await.map_err(|_| fail("timed out".into()))?
}

/// Keeps `engines`' peers equal to the cluster map's members.
pub async fn follow_members(engines: Arc<Engines>, mut map: watch::Receiver<crate::control::ClusterMap>) {
    loop {
        let peers = map.borrow_and_update().members.iter().map(|(id, m)| (*id, m.peer_addr)).collect();
        engines.set_peers(peers);
        if map.changed().await.is_err() {
            return;
        }
    }
}
