//! Peer authentication: the mutual challenge-response handshake that opens
//! every connection on the peer port (replication streams and control-plane
//! RPCs alike), keyed by the cluster secret.
//!
//! ```text
//! dialer   -> acceptor  Hello     magic | version | dialer id   | dialer nonce (32)
//! acceptor -> dialer    Challenge magic | version | acceptor id | acceptor nonce (32) | acceptor MAC (32)
//! dialer   -> acceptor  Proof     dialer MAC (32)
//! acceptor -> dialer    Verdict   1 byte (1: accepted, 0: refused, then close)
//! ```
//!
//! Each MAC is HMAC-SHA256 under the secret over a role label, both ids and
//! both nonces. Both nonces are fresh random bytes, so a recorded handshake
//! proves nothing on a new connection (the other side's nonce differs), and
//! the role labels keep one side's MAC from being reflected back as the
//! other's. MACs are compared in constant time.
//!
//! Every handshake message has a fixed size: nothing is read from an
//! unauthenticated peer but these [`PREAUTH_BYTES_MAX`] bytes, so junk on
//! the peer port costs no memory. After the handshake, the caller accepts
//! messages only on behalf of the id the peer authenticated as.
//!
//! With `--tls-ca` the handshake runs inside mutual TLS
//! ([`crate::tls::PeerTls`]): [`PeerKey::connect`] and
//! [`PeerKey::accept_tcp`] are the only ways to open or accept a peer
//! connection, so every peer link (replication, control plane, keyspace
//! engines) gets the same TLS and the same handshake. A dialer without a
//! certificate from the CA fails the TLS handshake, before any byte of the
//! peer protocol is read.
//!
//! This module must never read a peer message (`PeerMsg`) or decide what a
//! peer may do; it only says who is on the other end.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use subtle::ConstantTimeEq;
use tandem_core::repl::NodeId;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::PeerTls;

/// Starts every handshake message that names a node.
const MAGIC: &[u8; 8] = b"TNDMPEER";
/// Handshake version.
const VERSION: u8 = 1;
/// Random bytes each side contributes.
const NONCE_BYTES: usize = 32;
/// HMAC-SHA256 output.
const MAC_BYTES: usize = 32;
/// `Hello`: magic, version, node id, nonce.
const HELLO_BYTES: usize = 8 + 1 + 8 + NONCE_BYTES;
/// `Challenge`: magic, version, node id, nonce, MAC.
const CHALLENGE_BYTES: usize = 8 + 1 + 8 + NONCE_BYTES + MAC_BYTES;
/// `Proof`: the dialer's MAC.
const PROOF_BYTES: usize = MAC_BYTES;
/// Everything the acceptor reads from a peer before it is authenticated.
pub const PREAUTH_BYTES_MAX: usize = HELLO_BYTES + PROOF_BYTES;

const LABEL_ACCEPTOR: &[u8] = b"tandem peer auth v1: acceptor";
const LABEL_DIALER: &[u8] = b"tandem peer auth v1: dialer";

type HmacSha256 = Hmac<Sha256>;

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The socket failed or closed.
    #[error("peer handshake: {0}")]
    Io(#[from] std::io::Error),
    /// The mutual TLS handshake failed (no certificate, or one that does not
    /// chain to `--tls-ca`, or plain text on a TLS peer port).
    #[error("peer TLS handshake: {0}")]
    Tls(std::io::Error),
    /// The peer does not speak this handshake (junk, an old node, another
    /// service).
    #[error("peer handshake: not a Tandem peer handshake (bad magic or version)")]
    NotAPeer,
    /// The peer's MAC does not match: it does not hold this cluster's secret
    /// (or replayed a recorded handshake).
    #[error("peer handshake: node {0} did not prove it holds the cluster secret (wrong secret or a replay)")]
    BadProof(NodeId),
    /// The acceptor is not the node the dialer meant to reach.
    #[error("peer handshake: expected node {expected}, reached node {got}")]
    WrongNode {
        /// The node the dialer wanted.
        expected: NodeId,
        /// The node that answered.
        got: NodeId,
    },
    /// The acceptor refused the dialer's proof.
    #[error("peer handshake: node {0} refused our proof (the cluster secrets differ)")]
    Refused(NodeId),
}

/// This node's identity on the peer port: its id and the cluster secret.
#[derive(Clone)]
pub struct PeerKey {
    me: NodeId,
    secret: std::sync::Arc<[u8]>,
    tls: Option<PeerTls>,
}

/// A peer connection: plain TCP, or TCP under mutual TLS (`--tls-ca`).
pub enum PeerStream {
    /// No `--tls-ca`: the cluster-secret handshake alone authenticates.
    Plain(TcpStream),
    /// Mutual TLS verified against the CA.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// The read half of a [`PeerStream`].
pub type PeerReader = tokio::io::ReadHalf<PeerStream>;
/// The write half of a [`PeerStream`] (flush after a burst: TLS buffers).
pub type PeerWriter = tokio::io::WriteHalf<PeerStream>;

impl PeerStream {
    /// Splits into a read half and a write half usable from two tasks.
    pub fn into_split(self) -> (PeerReader, PeerWriter) {
        tokio::io::split(self)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl std::fmt::Debug for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerKey").field("me", &self.me).field("secret", &"<redacted>").finish()
    }
}

impl PeerKey {
    /// The key of node `me` for `secret` (`None`: the empty secret, which
    /// anyone can use: the node warns about it at start).
    pub fn new(me: NodeId, secret: Option<&str>) -> PeerKey {
        PeerKey { me, secret: secret.unwrap_or("").as_bytes().into(), tls: None }
    }

    /// The same key with peer connections under mutual TLS (`Some`).
    pub fn with_tls(mut self, tls: Option<PeerTls>) -> PeerKey {
        self.tls = tls;
        self
    }

    /// Whether peer connections run under mutual TLS.
    pub fn tls(&self) -> Option<&PeerTls> {
        self.tls.as_ref()
    }

    /// Opens an authenticated connection to node `expected` at `addr`
    /// (`host:port`): TCP, mutual TLS when configured, then the handshake,
    /// all within `timeout`. Every peer dial goes through here.
    pub async fn connect(&self, addr: &str, expected: NodeId, timeout: Duration) -> Result<PeerStream, String> {
        let open = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect to {addr}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let mut stream = match &self.tls {
                None => PeerStream::Plain(tcp),
                Some(tls) => PeerStream::Tls(Box::new(tokio_rustls::TlsStream::Client(
                    tls.connect(tcp, addr).await.map_err(|e| format!("TLS to {addr}: {e}"))?,
                ))),
            };
            self.dial(&mut stream, expected).await.map_err(|e| format!("{addr}: {e}"))?;
            Ok(stream)
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| format!("connecting to {addr} timed out after {timeout:?}"))?
    }

    /// Acceptor side of a connection accepted on the peer port: mutual TLS
    /// when configured (the dialer's certificate must chain to the CA),
    /// then the handshake. Returns the stream and the node id the dialer
    /// proved. Every peer accept goes through here.
    pub async fn accept_tcp(&self, tcp: TcpStream) -> Result<(PeerStream, NodeId), AuthError> {
        let _ = tcp.set_nodelay(true);
        let mut stream = match &self.tls {
            None => PeerStream::Plain(tcp),
            Some(tls) => PeerStream::Tls(Box::new(tokio_rustls::TlsStream::Server(
                tls.accept(tcp).await.map_err(AuthError::Tls)?,
            ))),
        };
        let peer = self.accept(&mut stream).await?;
        Ok((stream, peer))
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.me
    }

    fn mac(
        &self,
        label: &[u8],
        dialer: NodeId,
        dialer_nonce: &[u8],
        acceptor: NodeId,
        acceptor_nonce: &[u8],
    ) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(label);
        mac.update(&dialer.to_le_bytes());
        mac.update(dialer_nonce);
        mac.update(&acceptor.to_le_bytes());
        mac.update(acceptor_nonce);
        mac.finalize().into_bytes().into()
    }

    /// Dialer side: proves this node to the peer at the other end of
    /// `stream`, which must prove it is node `expected` and holds the same
    /// secret.
    pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        expected: NodeId,
    ) -> Result<(), AuthError> {
        let nonce = fresh_nonce();
        let mut hello = Vec::with_capacity(HELLO_BYTES);
        hello.extend_from_slice(MAGIC);
        hello.push(VERSION);
        hello.extend_from_slice(&self.me.to_le_bytes());
        hello.extend_from_slice(&nonce);
        stream.write_all(&hello).await?;
        stream.flush().await?;

        let mut challenge = [0u8; CHALLENGE_BYTES];
        stream.read_exact(&mut challenge).await?;
        let (acceptor, acceptor_nonce, acceptor_mac) = parse_named(&challenge)?;
        let acceptor_mac = &acceptor_mac[..MAC_BYTES];
        let want = self.mac(LABEL_ACCEPTOR, self.me, &nonce, acceptor, acceptor_nonce);
        if !bool::from(want.ct_eq(acceptor_mac)) {
            return Err(AuthError::BadProof(acceptor));
        }
        if acceptor != expected {
            return Err(AuthError::WrongNode { expected, got: acceptor });
        }
        let proof = self.mac(LABEL_DIALER, self.me, &nonce, acceptor, acceptor_nonce);
        stream.write_all(&proof).await?;
        stream.flush().await?;
        let mut verdict = [0u8; 1];
        stream.read_exact(&mut verdict).await?;
        if verdict[0] != 1 {
            return Err(AuthError::Refused(acceptor));
        }
        Ok(())
    }

    /// Acceptor side: answers a dialer's handshake. Returns the node id the
    /// dialer proved (it holds the secret and this connection's fresh
    /// nonce); reads nothing else.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> Result<NodeId, AuthError> {
        let mut hello = [0u8; HELLO_BYTES];
        stream.read_exact(&mut hello).await?;
        let (dialer, dialer_nonce, _) = parse_named(&hello)?;
        let nonce = fresh_nonce();
        let mut challenge = Vec::with_capacity(CHALLENGE_BYTES);
        challenge.extend_from_slice(MAGIC);
        challenge.push(VERSION);
        challenge.extend_from_slice(&self.me.to_le_bytes());
        challenge.extend_from_slice(&nonce);
        challenge.extend_from_slice(&self.mac(LABEL_ACCEPTOR, dialer, dialer_nonce, self.me, &nonce));
        stream.write_all(&challenge).await?;
        stream.flush().await?;

        let mut proof = [0u8; PROOF_BYTES];
        stream.read_exact(&mut proof).await?;
        let want = self.mac(LABEL_DIALER, dialer, dialer_nonce, self.me, &nonce);
        if !bool::from(want.ct_eq(&proof)) {
            let _ = stream.write_all(&[0]).await;
            let _ = stream.flush().await;
            return Err(AuthError::BadProof(dialer));
        }
        stream.write_all(&[1]).await?;
        stream.flush().await?;
        Ok(dialer)
    }
}

/// Splits a `Hello` or `Challenge` into (node id, nonce, rest).
fn parse_named(bytes: &[u8]) -> Result<(NodeId, &[u8], &[u8]), AuthError> {
    if &bytes[..8] != MAGIC || bytes[8] != VERSION {
        return Err(AuthError::NotAPeer);
    }
    let id = NodeId::from_le_bytes(bytes[9..17].try_into().expect("8 bytes"));
    Ok((id, &bytes[17..17 + NONCE_BYTES], &bytes[17 + NONCE_BYTES..]))
}

/// 32 bytes from the operating system's CSPRNG. Nonces are never derived
/// from a seed: a predictable nonce would make a recorded handshake
/// replayable.
fn fresh_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce).expect("the operating system's random source is available");
    nonce
}

/// A random cluster secret (64 hex characters) for `tandem up`.
pub fn random_secret() -> String {
    fresh_nonce().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    async fn pair(
        dialer: PeerKey,
        acceptor: PeerKey,
        expected: NodeId,
    ) -> (Result<(), AuthError>, Result<NodeId, AuthError>) {
        let (mut a, mut b) = duplex(1024);
        // Each side closes its end when it is done, as a real socket would.
        tokio::join!(
            async {
                let r = dialer.dial(&mut a, expected).await;
                drop(a);
                r
            },
            async {
                let r = acceptor.accept(&mut b).await;
                drop(b);
                r
            }
        )
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ids() {
        let (d, a) = pair(PeerKey::new(2, Some("s")), PeerKey::new(1, Some("s")), 1).await;
        d.unwrap();
        assert_eq!(a.unwrap(), 2);
    }

    #[tokio::test]
    async fn wrong_secret_is_refused_on_both_sides() {
        let (d, a) = pair(PeerKey::new(2, Some("wrong")), PeerKey::new(1, Some("s")), 1).await;
        assert!(matches!(d, Err(AuthError::BadProof(1))), "{d:?}");
        assert!(a.is_err());
    }

    #[tokio::test]
    async fn dialer_refuses_an_acceptor_with_another_id() {
        let (d, _) = pair(PeerKey::new(2, Some("s")), PeerKey::new(3, Some("s")), 1).await;
        assert!(matches!(d, Err(AuthError::WrongNode { expected: 1, got: 3 })), "{d:?}");
    }

    #[tokio::test]
    async fn junk_is_not_a_peer() {
        let (mut a, mut b) = duplex(1024);
        a.write_all(&[7u8; HELLO_BYTES]).await.unwrap();
        let r = PeerKey::new(1, Some("s")).accept(&mut b).await;
        assert!(matches!(r, Err(AuthError::NotAPeer)), "{r:?}");
    }

    /// A recording of a whole successful dialer side, replayed byte for byte
    /// against a new connection, fails: the acceptor's nonce is new.
    #[tokio::test]
    async fn replayed_handshake_is_refused() {
        let key = PeerKey::new(2, Some("s"));
        let acceptor = PeerKey::new(1, Some("s"));
        let (mut a, mut b) = duplex(1024);
        let (d, r) = tokio::join!(key.dial(&mut a, 1), acceptor.accept(&mut b));
        d.unwrap();
        r.unwrap();
        // Record what a dialer sent by dialing through a tap.
        let (mut tap_dialer, mut tap_mid) = duplex(1024);
        let (mut mid_acceptor, mut acc) = duplex(1024);
        let record = tokio::spawn(async move {
            let mut hello = [0u8; HELLO_BYTES];
            tap_mid.read_exact(&mut hello).await.unwrap();
            mid_acceptor.write_all(&hello).await.unwrap();
            let mut ch = [0u8; CHALLENGE_BYTES];
            mid_acceptor.read_exact(&mut ch).await.unwrap();
            tap_mid.write_all(&ch).await.unwrap();
            let mut proof = [0u8; PROOF_BYTES];
            tap_mid.read_exact(&mut proof).await.unwrap();
            mid_acceptor.write_all(&proof).await.unwrap();
            let mut v = [0u8; 1];
            mid_acceptor.read_exact(&mut v).await.unwrap();
            tap_mid.write_all(&v).await.unwrap();
            (hello, proof)
        });
        let acc_task = {
            let acceptor = acceptor.clone();
            tokio::spawn(async move { acceptor.accept(&mut acc).await })
        };
        key.dial(&mut tap_dialer, 1).await.unwrap();
        assert_eq!(acc_task.await.unwrap().unwrap(), 2);
        let (hello, proof) = record.await.unwrap();
        // Replay to a fresh acceptor without the secret.
        let (mut attacker, mut victim) = duplex(1024);
        let victim_task = tokio::spawn(async move { acceptor.accept(&mut victim).await });
        attacker.write_all(&hello).await.unwrap();
        let mut ch = [0u8; CHALLENGE_BYTES];
        attacker.read_exact(&mut ch).await.unwrap();
        attacker.write_all(&proof).await.unwrap();
        let mut v = [0u8; 1];
        attacker.read_exact(&mut v).await.unwrap();
        assert_eq!(v[0], 0, "a replayed proof must be refused");
        assert!(matches!(victim_task.await.unwrap(), Err(AuthError::BadProof(2))));
    }
}
