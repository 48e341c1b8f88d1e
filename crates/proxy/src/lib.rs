//! # tandem-proxy: a RESP router with session guarantees
//!
//! Any Redis client connects to the proxy; the proxy sends writes to the
//! leader and spreads reads over followers, keeping per client connection
//! the guarantees it asked for (read-your-writes by token or leader window,
//! monotonic reads, bounded staleness, strong). The routing decisions are
//! made by the sans-IO [`tandem_core::session`]; this crate only does the
//! I/O around them. See `docs/session-guarantees.md`.
//!
//! The sessions themselves (topology polling, backend connections,
//! routing, the per-connection loop, counters) live in `tandem-client`,
//! which applications also use directly; this crate adds the listener,
//! the connection limit and the `/metrics` endpoint.
//!
//! This crate must never hold database logic: every command it does not
//! answer itself is executed by a node.

pub use tandem_client::{client, metrics, topology, POLL_INTERVAL_MS_DEFAULT};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_core::session::SessionConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Most client connections served at once; one more is answered with an
/// error and closed.
pub const CLIENT_CONNECTIONS_MAX: usize = 10_000;
/// Most nodes the proxy can be given (each client connection may open one
/// backend connection per node, so this also bounds the backend pool).
pub const NODES_MAX: usize = 16;

/// Why the proxy cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address is taken or invalid.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--nodes` is empty or too long.
    #[error("--nodes must list between 1 and {NODES_MAX} node client addresses (got {0})")]
    Nodes(usize),
}

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// RESP listen address for clients.
    pub listen: String,
    /// Client (RESP) addresses of the nodes.
    pub nodes: Vec<String>,
    /// The guarantees every new client connection starts with.
    pub session: SessionConfig,
    /// How often every node's `INFO replication` is polled.
    pub poll_interval_ms: u64,
    /// HTTP address for `GET /metrics` (Prometheus text); none: no HTTP.
    pub admin_addr: Option<String>,
}

async fn serve_metrics(listener: TcpListener, metrics: Arc<metrics::Metrics>) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                let mut out = String::new();
                metrics.render_prometheus(&mut out);
                ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!("metrics endpoint stopped: {e}");
    }
}

/// Binds the listener, starts the topology poller, calls `ready` with the
/// bound address, and serves clients until the task is dropped.
pub async fn run(config: ProxyConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), ProxyError> {
    if config.nodes.is_empty() || config.nodes.len() > NODES_MAX {
        return Err(ProxyError::Nodes(config.nodes.len()));
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|source| ProxyError::Listen { addr: config.listen.clone(), source })?;
    let local = listener.local_addr().map_err(|source| ProxyError::Listen { addr: config.listen.clone(), source })?;
    let metrics = Arc::new(metrics::Metrics::default());
    if let Some(addr) = &config.admin_addr {
        let admin =
            TcpListener::bind(addr).await.map_err(|source| ProxyError::Listen { addr: addr.clone(), source })?;
        tokio::spawn(serve_metrics(admin, metrics.clone()));
    }
    let topology = topology::Topology::start(config.nodes.clone(), Duration::from_millis(config.poll_interval_ms));
    // First poll before accepting, so the first request knows the leader.
    topology.refresh().await;
    ready(local);
    let slots = Arc::new(Semaphore::new(CLIENT_CONNECTIONS_MAX));
    loop {
        let (mut socket, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            use tokio::io::AsyncWriteExt;
            let _ = socket.write_all(b"-ERR max number of clients reached\r\n").await;
            continue;
        };
        let _ = socket.set_nodelay(true);
        let conn = client::Client::new(config.session, topology.clone(), metrics.clone());
        tokio::spawn(async move {
            conn.serve(socket).await;
            drop(permit);
        });
    }
}
