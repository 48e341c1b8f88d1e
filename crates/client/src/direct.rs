//! The proxy's routing as a library: an application holds a
//! [`DirectClient`] and talks to the nodes itself, with the same session
//! guarantees as a proxy connection (writes to the leader with `LASTLSN`
//! pipelined, reads routed by [`tandem_core::session`], token waits,
//! retry on a new leader). Its session token can be exported and imported
//! elsewhere (e.g. carried in a cookie between web processes).
//!
//! ```no_run
//! # async fn demo() {
//! use tandem_core::session::{Ryw, SessionConfig};
//! let config = SessionConfig { ryw: Ryw::Token { wait_ms: 100 }, ..SessionConfig::default() };
//! let mut db = tandem_client::DirectClient::connect(vec!["127.0.0.1:7379".into()], config).await;
//! db.cmd(&[b"SET", b"photo", b"new"]).await;
//! let token = db.export_token();
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tandem_core::resp::Frame;
use tandem_core::session::{SessionConfig, TokenError};

use crate::client::Client;
use crate::metrics::Metrics;
use crate::topology::Topology;
use crate::POLL_INTERVAL_MS_DEFAULT;

/// One application session over direct node connections. Owns a topology
/// poller (every 50 ms), stopped when the client is dropped.
pub struct DirectClient {
    inner: Client,
    metrics: Arc<Metrics>,
}

impl DirectClient {
    /// Starts polling `nodes` (client addresses) and returns once the first
    /// poll is done.
    pub async fn connect(nodes: Vec<String>, config: SessionConfig) -> DirectClient {
        let topology = Topology::start(nodes, Duration::from_millis(POLL_INTERVAL_MS_DEFAULT));
        topology.refresh().await;
        let metrics = Arc::new(Metrics::default());
        DirectClient { inner: Client::new(config, topology, metrics.clone()), metrics }
    }

    /// Runs one command (name first) and returns its reply; errors are
    /// [`Frame::Error`] replies, as a proxy connection would send them.
    /// `SESSION ...` commands work here too.
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Frame {
        if args.is_empty() {
            return Frame::Error("ERR empty command".into());
        }
        self.inner.handle(args.iter().map(|a| Bytes::copy_from_slice(a)).collect()).await
    }

    /// The session token, `tdm1:<last_write_lsn>:<highest_seen_lsn>`.
    pub fn export_token(&self) -> String {
        self.inner.session().export_token()
    }

    /// Merges a token exported by another session.
    pub fn import_token(&mut self, token: &str) -> Result<(), TokenError> {
        self.inner.session_mut().import_token(token)
    }

    /// This client's counters (same as `INFO proxy`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
