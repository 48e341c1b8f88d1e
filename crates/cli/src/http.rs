//! The one HTTP client of the CLI: every subcommand that talks to a node's
//! admin endpoint (`status`, `switchover`, `cluster`, `backup base`,
//! `dr drill`, `up`) goes through [`request`].
//!
//! Every request carries the admin token when one is configured
//! ([`crate::admin_auth`]).
//!
//! Plain HTTP/1.1 with `Connection: close` to a local admin port; bounded
//! response size; no retries (callers decide). It never interprets bodies
//! beyond the status line.

use std::io::{Read, Write};
use std::time::Duration;

/// Largest HTTP response accepted.
pub const RESPONSE_BYTES_MAX: u64 = 64 << 20;
/// Default read timeout of one request.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request; the status code and body of any answer.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let auth = crate::admin_auth::header()?;
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .take(RESPONSE_BYTES_MAX)
        .read_to_end(&mut response)
        .map_err(|e| format!("reading from {addr}{path}: {e}"))?;
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
