//! Peer protocol framing: `u32 length (LE) | PeerMsg::encode bytes`, with
//! the length checked against `PEER_FRAME_BYTES_MAX` before any buffer
//! grows, and the buffer grown only as bytes arrive (at most
//! [`READ_CHUNK_BYTES`] ahead), so a length header alone reserves nothing.
//! Frames are read only after the peer handshake (`crate::peer_auth`).
//! Reading is cancel-safe (bytes accumulate in the caller's buffer), so it
//! can sit in a `select!`.

use bytes::{Buf, BytesMut};
use tandem_core::repl::msg::PEER_FRAME_BYTES_MAX;
use tandem_core::repl::PeerMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frame header bytes.
const LEN_BYTES: usize = 4;
/// How far ahead of the bytes received the read buffer may grow: a
/// length header never reserves the frame's whole size up front.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a peer connection ended.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed or closed.
    #[error("peer connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    Closed,
    /// A frame longer than the limit.
    #[error("peer frame of {0} bytes exceeds PEER_FRAME_BYTES_MAX ({PEER_FRAME_BYTES_MAX})")]
    TooLarge(usize),
    /// A frame that is not a peer message.
    #[error("{0}")]
    Decode(#[from] tandem_core::repl::msg::DecodeError),
}

/// Takes one complete frame out of `buf`, if there is one.
pub fn take_frame(buf: &mut BytesMut) -> Result<Option<PeerMsg>, WireError> {
    if buf.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_le_bytes(buf[..LEN_BYTES].try_into().expect("4 bytes")) as usize;
    if len > PEER_FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < LEN_BYTES + len {
        return Ok(None);
    }
    buf.advance(LEN_BYTES);
    let frame = buf.split_to(len);
    Ok(Some(PeerMsg::decode(&frame)?))
}

/// Reads until one frame is complete (cancel-safe: partial bytes stay in
/// `buf`).
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut BytesMut) -> Result<PeerMsg, WireError> {
    loop {
        if let Some(msg) = take_frame(buf)? {
            return Ok(msg);
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES {
            buf.reserve(READ_CHUNK_BYTES);
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(WireError::Closed);
        }
    }
}

/// Length-word flag: the frame is one fragment of a larger frame (the
/// leader's sender cuts frames over [`FRAGMENT_BYTES`] so heartbeats and
/// lease requests can travel between the fragments, decision 0028).
pub const FRAGMENT_FLAG: u32 = 1 << 31;
/// Length-word flag, with [`FRAGMENT_FLAG`]: the last fragment.
pub const LAST_FRAGMENT_FLAG: u32 = 1 << 30;
/// Most bytes in one fragment.
pub const FRAGMENT_BYTES: usize = 1 << 20;

/// The length word of a fragment of `len` bytes.
pub fn fragment_header(len: usize, last: bool) -> [u8; LEN_BYTES] {
    debug_assert!(len <= FRAGMENT_BYTES);
    (len as u32 | FRAGMENT_FLAG | if last { LAST_FRAGMENT_FLAG } else { 0 }).to_le_bytes()
}

/// A frame read by [`read_frame_raw`].
pub enum RawFrame {
    /// A small frame, decoded.
    Msg(PeerMsg),
    /// The body of a frame larger than [`crate::db::LARGE_WRITE_BYTES`],
    /// not yet decoded: decoding copies every value, so the caller does it
    /// on a blocking thread ([`decode_blocking`]) while it goes on reading.
    Large(Vec<u8>),
}

/// Like [`read_frame`], but also takes fragmented frames (reassembled in
/// `partial`, bounded by `PEER_FRAME_BYTES_MAX`), and leaves a frame larger
/// than [`crate::db::LARGE_WRITE_BYTES`] undecoded, so the reader never
/// waits for a large decode and keeps taking the lease requests that follow
/// it (decision 0028). Cancel-safe like [`read_frame`] (bytes accumulate in
/// `buf` and `partial`). Only the follower's stream reader takes fragments.
pub async fn read_frame_raw<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    partial: &mut Vec<u8>,
) -> Result<RawFrame, WireError> {
    loop {
        if buf.len() >= LEN_BYTES {
            let word = u32::from_le_bytes(buf[..LEN_BYTES].try_into().expect("4 bytes"));
            if word & FRAGMENT_FLAG != 0 {
                let len = (word & !(FRAGMENT_FLAG | LAST_FRAGMENT_FLAG)) as usize;
                if len > FRAGMENT_BYTES {
                    return Err(WireError::TooLarge(len));
                }
                if buf.len() >= LEN_BYTES + len {
                    if partial.len() + len > PEER_FRAME_BYTES_MAX {
                        return Err(WireError::TooLarge(partial.len() + len));
                    }
                    buf.advance(LEN_BYTES);
                    partial.extend_from_slice(&buf.split_to(len));
                    if word & LAST_FRAGMENT_FLAG != 0 {
                        return raw(std::mem::take(partial));
                    }
                    continue;
                }
            } else {
                let len = word as usize;
                if len > crate::db::LARGE_WRITE_BYTES && len <= PEER_FRAME_BYTES_MAX && buf.len() >= LEN_BYTES + len {
                    buf.advance(LEN_BYTES);
                    return Ok(RawFrame::Large(buf.split_to(len).to_vec()));
                }
            }
        }
        // An incomplete fragment is not a frame: read more.
        let fragment_pending = buf.len() >= LEN_BYTES && buf[LEN_BYTES - 1] & 0x80 != 0;
        if !fragment_pending {
            if let Some(msg) = take_frame(buf)? {
                return Ok(RawFrame::Msg(msg));
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES {
            buf.reserve(READ_CHUNK_BYTES);
        }
        if reader.read_buf(buf).await? == 0 {
            return Err(WireError::Closed);
        }
    }
}

/// A reassembled frame body: decoded now if small, else left to the caller.
fn raw(frame: Vec<u8>) -> Result<RawFrame, WireError> {
    if frame.len() <= crate::db::LARGE_WRITE_BYTES {
        return Ok(RawFrame::Msg(PeerMsg::decode(&frame)?));
    }
    Ok(RawFrame::Large(frame))
}

/// Decodes a large frame body on a blocking thread.
pub fn decode_blocking(frame: Vec<u8>) -> tokio::task::JoinHandle<Result<PeerMsg, WireError>> {
    tokio::task::spawn_blocking(move || PeerMsg::decode(&frame).map_err(WireError::from))
}

/// Encodes `msg` as a frame into `out` (appending).
pub fn encode_frame(msg: &PeerMsg, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; LEN_BYTES]);
    let mut body = Vec::new();
    msg.encode(&mut body);
    out.extend_from_slice(&body);
    let len = (out.len() - start - LEN_BYTES) as u32;
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_le_bytes());
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(writer: &mut W, msg: &PeerMsg) -> Result<(), WireError> {
    let mut out = Vec::new();
    encode_frame(msg, &mut out);
    writer.write_all(&out).await?;
    // Under TLS the last record may sit in the session until flushed.
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let msgs = vec![
            PeerMsg::Ack { flushed_lsn: 5, applied_lsn: 4 },
            PeerMsg::Refuse { reason: "no".into() },
            PeerMsg::Heartbeat { epoch: 1, leader_last_lsn: 9, leader_durable_lsn: 9, leader_now_ms: 77 },
        ];
        let mut bytes = Vec::new();
        for m in &msgs {
            encode_frame(m, &mut bytes);
        }
        for split in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..split]);
            let mut got = Vec::new();
            while let Some(m) = take_frame(&mut buf).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&bytes[split..]);
            while let Some(m) = take_frame(&mut buf).unwrap() {
                got.push(m);
            }
            assert_eq!(got, msgs);
        }
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation() {
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert!(matches!(take_frame(&mut buf), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn a_length_header_alone_reserves_nothing() {
        let mut buf = BytesMut::from(&((PEER_FRAME_BYTES_MAX as u32).to_le_bytes())[..]);
        let before = buf.capacity();
        assert!(take_frame(&mut buf).unwrap().is_none());
        assert_eq!(buf.capacity(), before);
    }
}
