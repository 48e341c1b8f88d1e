//! TLS on the client and admin ports (rustls with the `ring` provider).
//!
//! Owns loading the PEM files named by `--tls-cert`, `--tls-key` and
//! `--tls-ca` into rustls configurations, the TLS handshake of accepted
//! client connections (bounded in time and in number at once), and the
//! HTTPS listener the admin port serves through, and the mutual TLS of the
//! peer port ([`PeerTls`], with `--tls-ca`). With a certificate and
//! key, the client port speaks only TLS (a plain RESP client's bytes fail
//! the handshake and the connection is closed) and the admin port only
//! HTTPS. Clients are not asked for certificates (`AUTH` / `requirepass`
//! authenticates them). Peers are: with `--tls-ca`, every peer connection
//! is TLS both ways, the acceptor requires a client certificate chaining to
//! the CA and the dialer verifies the acceptor's certificate against the
//! same CA for the host of the peer address it dialed (decision 0023). See
//! docs/security.md.
//!
//! Must never: fall back to plain text on a port configured for TLS, or
//! read a file after start (certificates are loaded once).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;

/// How long an accepted connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections in the TLS handshake at once per port (past it new
/// connections are closed at once): handshakes cost CPU before anything is
/// authenticated.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Most bytes read from a PEM file (a certificate chain is a few KiB).
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// A client connection's byte stream: plain TCP or TLS over TCP.
pub trait ClientStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath (to peek for a hang-up; under TLS the
    /// peeked bytes are TLS records, which is all a hang-up check needs).
    fn tcp(&self) -> &TcpStream;
}

impl ClientStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// The TLS configuration of a node.
#[derive(Clone)]
pub struct Tls {
    /// Acceptor for the client and admin ports.
    pub acceptor: TlsAcceptor,
    handshakes: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(PEM_FILE_BYTES_MAX)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    Ok(bytes)
}

/// The certificates in a PEM file (at least one).
pub fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_pem(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {} is not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the {what} {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_pem(path, "TLS key (--tls-key)")?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("the TLS key (--tls-key) {} holds no usable PEM private key: {e}", path.display()))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads the node's certificate and key (`None` without `tls_cert`).
    pub fn load(config: &Config) -> Result<Option<Tls>, String> {
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Ok(None);
        };
        let certs = load_certs(cert, "TLS certificate (--tls-cert)")?;
        let key = load_key(key)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("TLS: the certificate and key do not make a server identity: {e}"))?;
        Ok(Some(Tls { acceptor: TlsAcceptor::from(Arc::new(server)), handshakes: Arc::new(AtomicUsize::new(0)) }))
    }

    /// Runs the TLS handshake of an accepted connection (bounded by
    /// [`HANDSHAKE_TIMEOUT`] and [`HANDSHAKES_IN_FLIGHT_MAX`]); `None` if it
    /// failed (a plain-text client, a client that does not trust the
    /// certificate, a timeout): the connection is dropped.
    pub async fn handshake(&self, stream: TcpStream, addr: SocketAddr) -> Option<TlsStream<TcpStream>> {
        if self.handshakes.fetch_add(1, Ordering::AcqRel) >= HANDSHAKES_IN_FLIGHT_MAX {
            self.handshakes.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(%addr, "TLS handshake refused: too many in flight");
            return None;
        }
        let _ = stream.set_nodelay(true);
        let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await;
        self.handshakes.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%addr, "TLS handshake timed out");
                None
            }
        }
    }
}

/// Mutual TLS on the peer port (`--tls-cert`, `--tls-key` and `--tls-ca`):
/// the node's certificate serves both as its server identity (when it
/// accepts) and as its client certificate (when it dials); the other side's
/// certificate must chain to the CA.
#[derive(Clone)]
pub struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls")
    }
}

impl PeerTls {
    /// Loads the peer-port TLS (`None` without `--tls-ca`: peers then
    /// speak plain TCP, authenticated by the cluster-secret handshake only).
    pub fn load(config: &Config) -> Result<Option<PeerTls>, String> {
        let Some(ca) = &config.tls_ca else { return Ok(None) };
        let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
            return Err("--tls-ca needs --tls-cert and --tls-key".into());
        };
        let mut roots = RootCertStore::empty();
        for c in load_certs(ca, "TLS CA (--tls-ca)")? {
            roots
                .add(c)
                .map_err(|e| format!("the TLS CA (--tls-ca) {} is not a usable CA certificate: {e}", ca.display()))?;
        }
        let roots = Arc::new(roots);
        let certs = load_certs(cert, "TLS certificate (--tls-cert)")?;
        let key = load_key(key)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| format!("TLS: the CA cannot verify peers: {e}"))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(|e| format!("TLS: the certificate and key do not make a peer identity: {e}"))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("TLS: the certificate and key do not make a peer client identity: {e}"))?;
        Ok(Some(PeerTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        }))
    }

    /// Acceptor side: the TLS handshake of an accepted peer connection; the
    /// dialer must present a certificate chaining to the CA.
    pub async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }

    /// Dialer side: the TLS handshake to the peer at `addr` (`host:port`),
    /// whose certificate must chain to the CA and name `host`.
    pub async fn connect(
        &self,
        stream: TcpStream,
        addr: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?} is not a TLS server name: {e}"))
        })?;
        self.connector.connect(name, stream).await
    }
}

/// Checks the TLS settings: a certificate needs its key and the reverse;
/// the files must load.
pub fn validate(config: &Config) -> Result<(), String> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
        (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        _ => {}
    }
    if config.tls_ca.is_some() && config.tls_cert.is_none() {
        return Err("--tls-ca needs --tls-cert and --tls-key".into());
    }
    PeerTls::load(config)?;
    Tls::load(config).map(|_| ())
}

/// An admin-port listener that hands axum only connections whose TLS
/// handshake succeeded. Handshakes run in their own tasks, so a slow or
/// silent client holds up nobody.
pub struct HttpsListener {
    incoming: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Starts accepting on `listener` with `tls`.
    pub fn new(listener: TcpListener, tls: Tls) -> HttpsListener {
        let local = listener.local_addr().expect("a bound listener has an address");
        let (tx, incoming) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, addr) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (tls, conn_tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Some(s) = tls.handshake(stream, addr).await {
                        let _ = conn_tx.send((s, addr)).await;
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        HttpsListener { incoming, local }
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(c) => c,
            // The accept task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
