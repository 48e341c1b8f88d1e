//! One RESP2 connection from the proxy to a node. A call writes a whole
//! pipeline of commands in one write and reads exactly one reply per
//! command; every call has a deadline, so a hung node fails the request
//! instead of hanging the client.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tandem_core::resp::{self, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long a node may take to answer a call, on top of any WAITLSN wait in it.
pub const REPLY_TIMEOUT: Duration = Duration::from_millis(10_000);

/// Why a call failed. After any of these the connection is dropped.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Could not connect (nothing was sent).
    #[error("cannot connect to {addr}: {why}")]
    Connect {
        /// Node address.
        addr: String,
        /// The cause.
        why: String,
    },
    /// The connection failed after the request was (maybe) sent.
    #[error("connection to {addr} failed: {why}")]
    Io {
        /// Node address.
        addr: String,
        /// The cause.
        why: String,
    },
}

/// A connection to one node.
pub struct Backend {
    addr: String,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
}

impl Backend {
    /// Connects to `addr` (bounded by [`CONNECT_TIMEOUT`]).
    pub async fn connect(addr: &str) -> Result<Backend, BackendError> {
        let fail = |why: String| BackendError::Connect { addr: addr.to_string(), why };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(_) => return Err(fail(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        let _ = stream.set_nodelay(true);
        Ok(Backend { addr: addr.to_string(), stream, rbuf: BytesMut::with_capacity(16 * 1024), wbuf: BytesMut::new() })
    }

    /// The node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `commands` in one write and returns their replies in order.
    /// `extra_wait` is added to the deadline (for a WAITLSN in the pipeline).
    pub async fn call(&mut self, commands: &[&[Bytes]], extra_wait: Duration) -> Result<Vec<Frame>, BackendError> {
        self.wbuf.clear();
        for cmd in commands {
            let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_ref()).collect();
            resp::encode_command(&args, &mut self.wbuf);
        }
        let deadline = REPLY_TIMEOUT + extra_wait;
        match tokio::time::timeout(deadline, self.exchange(commands.len())).await {
            Ok(r) => r,
            Err(_) => Err(self.io(format!("no reply within {deadline:?}"))),
        }
    }

    async fn exchange(&mut self, replies: usize) -> Result<Vec<Frame>, BackendError> {
        if let Err(e) = self.stream.write_all(&self.wbuf).await {
            return Err(self.io(e.to_string()));
        }
        let limits = Limits::default();
        let mut out = Vec::with_capacity(replies);
        while out.len() < replies {
            match resp::parse_frame(&mut self.rbuf, &limits) {
                Ok(Some(frame)) => out.push(frame),
                Ok(None) => match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) => return Err(self.io("closed by the node".into())),
                    Ok(_) => {}
                    Err(e) => return Err(self.io(e.to_string())),
                },
                Err(e) => return Err(self.io(format!("bad reply: {e}"))),
            }
        }
        Ok(out)
    }

    fn io(&self, why: String) -> BackendError {
        BackendError::Io { addr: self.addr.clone(), why }
    }
}
