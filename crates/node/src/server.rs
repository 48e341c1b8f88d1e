//! Starting and stopping a node: recovery, listeners, background tasks and
//! graceful shutdown.
//!
//! Owns the node's lifecycle. On shutdown it stops accepting, lets every
//! connection finish the requests it already read, flushes the log, takes a
//! snapshot if anything changed, and returns.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::control::ControlPlane;
use crate::db::{Db, DbError};
use crate::events::Events;
use crate::failover::Failover;
use crate::faults::Faults;
use crate::metrics::Metrics;

/// How often the leader sweeps for expired keys.
const EXPIRE_SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Most expired keys deleted per sweep (bounds the lock hold time).
const EXPIRE_SWEEP_KEYS_MAX: usize = 1000;
/// How long shutdown waits for connections to finish their requests.
const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Recovery or storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The control plane could not start.
    #[error("control plane: {0}")]
    Control(#[from] crate::control::ControlError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// What the listener is for.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// State shared by every task of a node.
pub struct Shared {
    /// The configuration the node runs with.
    pub config: Config,
    /// The database.
    pub db: Arc<Db>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// When the node started.
    pub started: Instant,
    /// Commands per second over the last second (INFO).
    pub ops_per_sec: AtomicU64,
    /// Replication: role, peers, ack waits.
    pub repl: Arc<crate::repl::Replication>,
    /// The control plane (automatic failover only).
    pub control: Option<Arc<ControlPlane>>,
    /// Automatic failover: map watcher, orchestrator, switchover.
    pub failover: Option<Arc<Failover>>,
    /// The log archiver (`backup_repo` set).
    pub archive: Option<Arc<crate::archive::ArchiveState>>,
    /// The keyspaces in force and the routing of commands to them.
    pub keyspaces: Arc<crate::keyspaces::KeyspaceTable>,
    /// TLS on the client and admin ports (`--tls-cert`), if configured.
    pub tls: Option<crate::tls::Tls>,
    /// The replicas of the multi-leader and leaderless keyspaces.
    pub engines: Arc<crate::engines::Engines>,
    /// The Lua script cache and the running script (`EVAL`, `SCRIPT`).
    pub scripts: crate::scripting::Scripts,
    /// Every client connection, the monitor feed, the slow log.
    pub clients: Arc<crate::clients::Clients>,
    next_client_id: AtomicU64,
    snapshot_running: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Starts a snapshot on a blocking thread unless one is running.
    pub fn start_background_snapshot(self: &Arc<Self>, reason: &'static str) {
        if self.snapshot_running.swap(true, Ordering::AcqRel) {
            return;
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || {
            match shared.db.snapshot() {
                Ok(report) => tracing::info!(
                    reason,
                    start_lsn = report.start_lsn,
                    keys = report.keys,
                    bytes = report.bytes,
                    segments_removed = report.segments_removed,
                    elapsed_ms = report.elapsed_ms,
                    "snapshot taken"
                ),
                Err(e) => {
                    shared.metrics.error("snapshot");
                    tracing::error!(reason, error = %e, "snapshot failed");
                }
            }
            shared.snapshot_running.store(false, Ordering::Release);
        });
    }
}

/// A random seed for the keyspace hash (against hash flooding). Taken from
/// the std hasher's per-process random keys; the core itself never draws
/// randomness.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Runs a node until `shutdown` resolves, then shuts it down gracefully.
/// `on_ready` is called once every listener is bound.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&Config),
) -> Result<(), NodeError> {
    let metrics = Arc::new(Metrics::new());
    if !config.members.is_empty() && config.cluster_secret.is_none() {
        tracing::warn!(
            "NO CLUSTER SECRET: this node has --members but no --cluster-secret-file, so any process that reaches \
             its peer port ({}) can pose as a member, receive every value and grant leases; set the same \
             --cluster-secret-file on every node (tandem up does this for you)",
            config.peer_addr
        );
    }
    tracing::info!(data_dir = %config.data_dir.display(), fsync = %config.fsync, "recovering");
    let (db, report) = Db::open(&config, random_seed(), metrics.clone())?;
    tracing::info!(
        snapshot_lsn = ?report.snapshot_lsn,
        snapshot_keys = report.snapshot_keys,
        replayed = report.replayed,
        last_lsn = report.last_lsn,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "recovered"
    );
    let db = Arc::new(db);
    let tls = crate::tls::Tls::load(&config).map_err(NodeError::Config)?;
    let client_listener = TcpListener::bind(config.client_addr).await.map_err(|source| NodeError::Bind {
        what: "client",
        addr: config.client_addr,
        source,
    })?;
    let admin_listener = TcpListener::bind(config.admin_addr).await.map_err(|source| NodeError::Bind {
        what: "admin",
        addr: config.admin_addr,
        source,
    })?;
    let peer_listener = TcpListener::bind(config.peer_addr).await.map_err(|source| NodeError::Bind {
        what: "peer",
        addr: config.peer_addr,
        source,
    })?;
    let mut config = config;
    // Report the bound ports (port 0 picks a free one; tests use it).
    config.client_addr = client_listener.local_addr().expect("bound listener has an address");
    config.admin_addr = admin_listener.local_addr().expect("bound listener has an address");
    config.peer_addr = peer_listener.local_addr().expect("bound listener has an address");
    let repl = Arc::new(
        crate::repl::Replication::start(
            &config,
            db.clone(),
            metrics.clone(),
            Arc::new(Faults::default()),
            Arc::new(Events::new(config.node_id)),
        )
        .map_err(NodeError::Config)?,
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // Automatic failover: the control plane (Raft over the cluster map) and
    // the failover tasks on top of it.
    let (control, failover) = if config.automatic_failover() {
        let control =
            ControlPlane::start(control_config(&config, repl.faults.clone(), repl.peer_key().tls().cloned())).await?;
        repl.set_control(control.clone());
        repl.events.forward_to(control.clone());
        let failover =
            Failover::start(&config, db.clone(), repl.clone(), control.clone(), metrics.clone(), shutdown_rx.clone());
        (Some(control), Some(failover))
    } else {
        (None, None)
    };
    let archive = crate::archive::start(&config, db.clone(), metrics.clone());
    // Keyspaces: the config file's, then (with a control plane) the map's.
    let keyspace_defs = config.keyspace_defs().map_err(NodeError::Config)?;
    let keyspaces = Arc::new(
        crate::keyspaces::KeyspaceTable::new(
            if control.is_some() { Vec::new() } else { keyspace_defs.clone() },
            config.durability().map_err(NodeError::Config)?,
        )
        .map_err(NodeError::Config)?,
    );
    let engines = Arc::new(crate::engines::Engines::new(
        crate::engines::EngineEnv {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            fsync: config.fsync,
            peers: watch::channel(Default::default()).1,
            peer_key: repl.peer_key().clone(),
            faults: repl.faults.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown_rx.clone(),
            anti_entropy_interval_ms: config.anti_entropy_interval_ms,
            backup_repo: config.backup_repo.clone(),
            archive_interval_ms: config.archive_interval_ms,
        },
        config.members.iter().copied().collect(),
    ));
    repl.set_engines(engines.clone());
    if control.is_none() {
        engines.sync(&keyspaces.current().router);
    }
    if let Some(control) = &control {
        tokio::spawn(crate::engines::follow_members(engines.clone(), control.map()));
        tokio::spawn(crate::keyspaces::follow_map(keyspaces.clone(), engines.clone(), control.map()));
        if !keyspace_defs.is_empty() {
            tokio::spawn(crate::keyspaces::seed_map(control.clone(), keyspace_defs));
        }
    }
    let shared = Arc::new(Shared {
        archive,
        keyspaces,
        tls,
        engines,
        config,
        db,
        metrics,
        started: Instant::now(),
        ops_per_sec: AtomicU64::new(0),
        repl: repl.clone(),
        control: control.clone(),
        failover,
        clients: Arc::new(crate::clients::Clients::new()),
        next_client_id: AtomicU64::new(1),
        snapshot_running: std::sync::atomic::AtomicBool::new(false),
        scripts: crate::scripting::Scripts::default(),
    });

    let admin = tokio::spawn(crate::admin::serve(shared.clone(), admin_listener, shutdown_rx.clone()));
    let background = tokio::spawn(background_tasks(shared.clone(), shutdown_rx.clone()));
    let peers = tokio::spawn(repl.clone().serve_peers(peer_listener, shutdown_rx.clone()));
    tokio::spawn(crate::sentinel::watch_switch_master(shared.clone(), shutdown_rx.clone()));
    tracing::info!(
        client = %shared.config.client_addr,
        admin = %shared.config.admin_addr,
        peer = %shared.config.peer_addr,
        node_id = shared.config.node_id,
        role = match repl.role_key() {
            crate::repl::RoleKey::Leading(_) => "leader",
            crate::repl::RoleKey::Following(_) => "follower",
            crate::repl::RoleKey::Idle => "idle (waiting for the control plane)",
        },
        "ready"
    );
    on_ready(&shared.config);

    // Every connection holds a clone of `drained_tx`; when all are gone,
    // `drained_rx.recv()` returns None.
    let (drained_tx, mut drained_rx) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = client_listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                accept(&shared, stream, addr, &shutdown_rx, &drained_tx);
            }
        }
    }

    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    drop(client_listener);
    let _ = shutdown_tx.send(true);
    drop(drained_tx);
    if tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, drained_rx.recv()).await.is_err() {
        tracing::warn!("some connections did not finish within {:?}", SHUTDOWN_DRAIN_TIMEOUT);
    }
    let _ = background.await;
    let _ = admin.await;
    let _ = peers.await;
    if let Some(cp) = &control {
        cp.shutdown().await;
    }
    repl.shutdown();
    shared.engines.stop_all();
    let db = shared.db.clone();
    let changed = db.entries_since_snapshot() > 0;
    tokio::task::spawn_blocking(move || -> Result<(), DbError> {
        db.log().flush()?;
        if changed {
            let report = db.snapshot()?;
            tracing::info!(start_lsn = report.start_lsn, keys = report.keys, "snapshot taken at shutdown");
        }
        Ok(())
    })
    .await
    .expect("shutdown task does not panic")?;
    if let Some(archive) = shared.archive.clone() {
        tokio::task::spawn_blocking(move || archive.stop()).await.expect("archiver stop does not panic");
    }
    tracing::info!("stopped");
    Ok(())
}

/// The control plane's settings from the node's configuration.
fn control_config(
    config: &Config,
    faults: Arc<Faults>,
    peer_tls: Option<crate::tls::PeerTls>,
) -> crate::control::ControlConfig {
    crate::control::ControlConfig {
        node_id: config.node_id,
        members: config.members.clone(),
        dir: config.data_dir.join("control"),
        cluster_secret: config.cluster_secret.clone(),
        peer_tls,
        faults,
        heartbeat_ms: config.control_heartbeat_ms,
        election_timeout_min_ms: config.control_election_timeout_min_ms,
        election_timeout_max_ms: config.control_election_timeout_max_ms,
        join: config.join,
    }
}

fn accept(
    shared: &Arc<Shared>,
    stream: tokio::net::TcpStream,
    addr: std::net::SocketAddr,
    shutdown: &watch::Receiver<bool>,
    drained: &mpsc::Sender<()>,
) {
    shared.metrics.connections_total.inc();
    if shared.metrics.connections.get() as usize >= shared.config.limits.clients_max {
        shared.metrics.connections_rejected.inc();
        shared.metrics.error("clients_max");
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut stream = stream;
            let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
        });
        return;
    }
    shared.metrics.connections.inc();
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let (shared, shutdown, drained) = (shared.clone(), shutdown.clone(), drained.clone());
    tokio::spawn(async move {
        match shared.tls.clone() {
            // A plain-text client fails the handshake and is dropped.
            Some(tls) => {
                if let Some(stream) = tls.handshake(stream, addr).await {
                    crate::connection::serve(shared, stream, addr, id, shutdown).await;
                }
            }
            None => crate::connection::serve(shared, stream, addr, id, shutdown).await,
        }
        drop(drained);
    });
}

/// Active expiry, automatic snapshots and gauge refresh.
async fn background_tasks(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut sweep = tokio::time::interval(EXPIRE_SWEEP_INTERVAL);
    let mut second = tokio::time::interval(Duration::from_secs(1));
    let mut last_commands = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = sweep.tick() => {
                shared.db.check_log_health();
                // Only the leader deletes expired keys (through the log);
                // followers hide them on reads and replay the leader's Dels.
                if !shared.repl.holds_lease() {
                    continue;
                }
                let n = shared.db.expire_sweep(EXPIRE_SWEEP_KEYS_MAX);
                shared.metrics.expired_keys.inc_by(n as u64);
                shared.db.evict_sweep();
            }
            _ = second.tick() => {
                let commands = shared.metrics.commands_processed.load(Ordering::Relaxed);
                shared.ops_per_sec.store(commands - last_commands, Ordering::Relaxed);
                last_commands = commands;
                // Off the loop: it takes the log's queue lock, which a
                // large write holds while it copies its record (decision 0028).
                let gauges = shared.clone();
                let _ = tokio::task::spawn_blocking(move || refresh_gauges(&gauges)).await;
                let every = shared.config.snapshot_entries;
                if every > 0 && shared.db.entries_since_snapshot() >= every {
                    shared.start_background_snapshot("snapshot_entries reached");
                }
            }
        }
    }
}

/// Copies slowly changing values into gauges.
pub fn refresh_gauges(shared: &Shared) {
    let m = &shared.metrics;
    let stats = shared.db.log().stats();
    m.log_bytes.set(stats.bytes_on_disk as i64);
    m.log_segments.set(stats.segments as i64);
    // Skipped (the gauges keep their values) while a large write holds the
    // state lock: this runs on the event loop (decision 0028).
    if let Some((keys, last_lsn, used)) =
        shared.db.try_with_state(|s| (s.store.len(), s.last_lsn, s.store.used_bytes()))
    {
        m.keys.set(keys as i64);
        m.last_lsn.set(last_lsn as i64);
        m.used_memory_bytes.set(used as i64);
    }
    m.durable_lsn.set(shared.db.durable_lsn() as i64);
    m.epoch.set(shared.db.epoch() as i64);
    let role = match shared.repl.view() {
        crate::repl::RoleView::Leader { .. } => "leader",
        crate::repl::RoleView::Follower { .. } => "follower",
        crate::repl::RoleView::Idle { .. } => "idle",
    };
    for r in ["leader", "follower", "idle"] {
        m.role.get_or_create(&crate::metrics::RoleLabel { role: r.to_string() }).set(i64::from(r == role));
    }
    m.memory_rss_bytes.set(crate::metrics::rss_bytes() as i64);
    m.maxmemory_bytes.set(shared.db.memory().max_bytes() as i64);
}
