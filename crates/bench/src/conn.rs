//! One client connection: a TCP stream with TCP_NODELAY, a read buffer that
//! replies are parsed from, and a write buffer of encoded requests that is
//! flushed while replies are read, so a deep pipeline never deadlocks with a
//! server that stops reading while its replies are not being drained.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tandem_core::resp::{encode_command, parse_frame, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// Read buffer room kept free before each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

pub(crate) struct Conn {
    stream: TcpStream,
    read_buf: BytesMut,
    /// Encoded requests not yet written to the socket.
    pub(crate) write_buf: BytesMut,
    addr: Arc<str>,
    limits: Limits,
}

impl Conn {
    /// Connects, sets TCP_NODELAY and, with a password, authenticates.
    pub(crate) async fn open(
        addr: &Arc<str>,
        timeout: Duration,
        auth: Option<(Option<&str>, &str)>,
    ) -> Result<Conn, BenchError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(&**addr)).await {
            Err(_) => {
                return Err(BenchError::ConnectTimeout {
                    addr: addr.to_string(),
                    timeout_ms: timeout.as_millis() as u64,
                })
            }
            Ok(Err(source)) => return Err(BenchError::Connect { addr: addr.to_string(), source }),
            Ok(Ok(stream)) => stream,
        };
        stream.set_nodelay(true).map_err(|source| BenchError::Io { addr: addr.to_string(), source })?;
        let mut conn = Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            write_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            addr: addr.clone(),
            limits: Limits::default(),
        };
        if let Some((user, password)) = auth {
            let reply = match user {
                Some(user) => conn.call(&[b"AUTH", user.as_bytes(), password.as_bytes()]).await?,
                None => conn.call(&[b"AUTH", password.as_bytes()]).await?,
            };
            if let Frame::Error(message) = reply {
                return Err(BenchError::Auth { addr: addr.to_string(), message });
            }
        }
        Ok(conn)
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Appends one command to the write buffer (sent by the next `pump`).
    pub(crate) fn queue(&mut self, args: &[&[u8]]) {
        encode_command(args, &mut self.write_buf);
    }

    /// The next complete reply already received, if any.
    pub(crate) fn next_reply(&mut self) -> Result<Option<Frame>, BenchError> {
        parse_frame(&mut self.read_buf, &self.limits)
            .map_err(|source| BenchError::Protocol { addr: self.addr.to_string(), source })
    }

    /// Writes queued requests and waits until some reply bytes arrive.
    pub(crate) async fn pump(&mut self) -> Result<(), BenchError> {
        let result = self.pump_io().await;
        result.map_err(|source| BenchError::Io { addr: self.addr.to_string(), source })
    }

    async fn pump_io(&mut self) -> io::Result<()> {
        if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK_BYTES / 4 {
            self.read_buf.reserve(READ_CHUNK_BYTES);
        }
        let (mut reader, mut writer) = self.stream.split();
        loop {
            let read = if self.write_buf.is_empty() {
                reader.read_buf(&mut self.read_buf).await?
            } else {
                // Both futures are cancel safe: a dropped write wrote nothing.
                tokio::select! {
                    written = writer.write_buf(&mut self.write_buf) => {
                        written?;
                        continue;
                    }
                    read = reader.read_buf(&mut self.read_buf) => read?,
                }
            };
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
            }
            return Ok(());
        }
    }

    /// Writes every queued request now, without waiting for replies.
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        let buf = self.write_buf.split();
        self.stream.write_all(&buf).await.map_err(|source| BenchError::Io { addr: self.addr.to_string(), source })
    }

    /// Waits for the next reply.
    pub(crate) async fn recv(&mut self) -> Result<Frame, BenchError> {
        loop {
            if let Some(reply) = self.next_reply()? {
                return Ok(reply);
            }
            self.pump().await?;
        }
    }

    /// Sends one command and waits for its reply (for AUTH; not the hot path).
    pub(crate) async fn call(&mut self, args: &[&[u8]]) -> Result<Frame, BenchError> {
        self.queue(args);
        loop {
            if let Some(reply) = self.next_reply()? {
                return Ok(reply);
            }
            self.pump().await?;
        }
    }
}
