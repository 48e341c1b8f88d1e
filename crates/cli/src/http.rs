//! The one HTTP client of the CLI: every subcommand that talks to a node's
//! admin endpoint (`status`, `switchover`, `cluster`, `keyspace`,
//! `backup base`, `dr drill`, `up`) goes through [`request`].
//!
//! Every request carries the admin token when one is configured
//! ([`crate::admin_auth`]). An admin address is `HOST:PORT` or
//! `http://HOST:PORT` (plain HTTP) or `https://HOST:PORT` (HTTPS, the
//! node's certificate verified against the CA named by `--tls-ca` or
//! `TANDEM_TLS_CA`, rustls with the `ring` provider, for the address's
//! host).
//!
//! HTTP/1.1 with `Connection: close`; bounded response size; no retries
//! (callers decide). It never interprets bodies beyond the status line,
//! and never sends a request over plain text to an `https://` address.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Largest HTTP response accepted.
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Default read timeout of one request.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// Most bytes read from the CA file (a CA bundle is a few KiB).
pub const CA_FILE_BYTES_MAX: u64 = 1 << 20;

/// The `--tls-ca` flag of every admin subcommand.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AdminTlsArgs {
    /// PEM CA certificate(s) that signed the node's admin certificate:
    /// needed for `https://HOST:PORT` admin addresses (nodes started with
    /// --tls-cert/--tls-key serve HTTPS only).
    #[arg(long = "tls-ca", env = "TANDEM_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,
}

impl AdminTlsArgs {
    /// Makes this CA the one every later `https://` request verifies
    /// against (the first call wins; a subcommand calls it once).
    pub fn install(&self) {
        if let Some(path) = &self.tls_ca {
            let _ = CA_PATH.set(path.clone());
        }
    }
}

static CA_PATH: OnceLock<PathBuf> = OnceLock::new();
static CLIENT_CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();

/// The CA file: `--tls-ca` of the running subcommand, else `TANDEM_TLS_CA`.
fn ca_path() -> Option<PathBuf> {
    CA_PATH.get().cloned().or_else(|| std::env::var_os("TANDEM_TLS_CA").filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// The rustls client configuration for `https://` admin addresses, built
/// once from the CA file.
fn client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    CLIENT_CONFIG
        .get_or_init(|| {
            let path = ca_path().ok_or_else(|| {
                "an https:// admin address needs the CA that signed the node's certificate: --tls-ca FILE \
                 (or TANDEM_TLS_CA)"
                    .to_string()
            })?;
            let mut pem = Vec::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(CA_FILE_BYTES_MAX).read_to_end(&mut pem))
                .map_err(|e| format!("cannot read the TLS CA (--tls-ca) {}: {e}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("the TLS CA {} is not PEM certificates: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("the TLS CA {} is not a usable CA certificate: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("the TLS CA {} holds no PEM certificate", path.display()));
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| format!("TLS: {e}"))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// An admin address split into whether it is HTTPS and its `HOST:PORT`.
fn parse_addr(addr: &str) -> (bool, &str) {
    let addr = addr.trim().trim_end_matches('/');
    if let Some(rest) = addr.strip_prefix("https://") {
        (true, rest)
    } else {
        (false, addr.strip_prefix("http://").unwrap_or(addr))
    }
}

/// The host part of `HOST:PORT` (brackets of an IPv6 literal removed).
fn host_of(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Reads a whole `Connection: close` response. Over TLS a server may close
/// the TCP connection without a `close_notify`; that is accepted once the
/// response is complete (its `Content-Length` bytes arrived).
fn read_response(mut stream: impl Read) -> std::io::Result<Vec<u8>> {
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(response),
            Ok(n) => {
                response.extend_from_slice(&chunk[..n]);
                if response.len() as u64 > RESPONSE_BYTES_MAX {
                    response.truncate(RESPONSE_BYTES_MAX as usize);
                    return Ok(response);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && complete(&response) => return Ok(response),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Whether `response` holds its head and all the body its
/// `Content-Length` announces.
fn complete(response: &[u8]) -> bool {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    length.is_some_and(|n| response.len() >= split + 4 + n)
}

/// One HTTP/1.1 request to `addr` (`HOST:PORT`, `http://..` or
/// `https://..`); the status code and body of any answer.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let auth = crate::admin_auth::header()?;
    let (https, host_port) = parse_addr(addr);
    let tcp = std::net::TcpStream::connect(host_port).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    tcp.set_read_timeout(Some(timeout)).ok();
    tcp.set_write_timeout(Some(timeout)).ok();
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let response = if https {
        let host = host_of(host_port);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{addr}: {host:?} is not a TLS server name: {e}"))?;
        let conn = rustls::ClientConnection::new(client_config()?, name).map_err(|e| format!("{addr}: TLS: {e}"))?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(head.as_bytes())
            .and_then(|()| tls.write_all(body.as_bytes()))
            .and_then(|()| tls.flush())
            .map_err(|e| format!("sending to {addr} (TLS): {e}"))?;
        read_response(tls).map_err(|e| format!("reading from {addr}{path} (TLS): {e}"))?
    } else {
        let mut tcp = tcp;
        tcp.write_all(head.as_bytes())
            .and_then(|()| tcp.write_all(body.as_bytes()))
            .map_err(|e| format!("sending to {addr}: {e}"))?;
        read_response(tcp).map_err(|e| format!("reading from {addr}{path}: {e}"))?
    };
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: malformed HTTP response"))?;
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(format!("{addr}{path}: chunked responses are not supported"));
    }
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: malformed HTTP status line"))?;
    Ok((code, response[split + 4..].to_vec()))
}

/// A request whose answer must be 200; its body. Any other status is an
/// error naming the address, the path, the status and the body.
pub fn ok_bytes(addr: &str, method: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let (code, body) = request(addr, method, path, None, timeout)?;
    if code != 200 {
        return Err(format!("{addr}{path}: HTTP {code}: {}", String::from_utf8_lossy(&body).trim()));
    }
    Ok(body)
}

/// `GET path`, answer 200, body as text.
pub fn get(addr: &str, path: &str) -> Result<String, String> {
    ok_bytes(addr, "GET", path, TIMEOUT_DEFAULT).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A comma-separated `--admin` list as addresses.
pub fn split_addrs(list: &str) -> Vec<String> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty()).map(String::from).collect()
}
