//! RESP2/RESP3 codec: turns bytes from a client into commands, bytes from a
//! server into [`Frame`]s, and frames into bytes for either protocol version.
//!
//! Pure and sans-IO: every function works on a buffer the caller owns and
//! never touches a socket, a clock or a global. It sits on the hot path of
//! every request, so it does not allocate per byte, does not use `format!`
//! for numbers, and hands out arguments that share the read buffer.
//!
//! Parsing is two passes, like mini-redis's `Frame::check`/`Frame::parse`:
//! the first pass walks the headers of a frame over `&[u8]` without
//! allocating and either finds where it ends or answers "not all here yet"
//! (`Ok(None)`); only then are the bytes split off the buffer, frozen, and
//! sliced into arguments. A large bulk that is still arriving costs one
//! header parse per call, never a scan of its payload.
//!
//! Every length is checked against [`Limits`] before anything is allocated or
//! reserved for it. After any [`ProtocolError`] the stream is out of sync:
//! reply with [`ProtocolError::to_frame`] and close the connection, as Redis
//! does. This module must never do I/O or panic on input from the network.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Largest bulk string accepted by default (`proto-max-bulk-len`): 64 KiB
/// under Redis's 512 MiB, so that the largest value with its key always fits
/// one log entry, one peer frame and one snapshot chunk
/// ([`crate::write::ENTRY_PAYLOAD_BYTES_MAX`]; decision 0012).
pub const BULK_BYTES_MAX: usize = crate::write::ENTRY_PAYLOAD_BYTES_MAX - crate::write::ENTRY_OVERHEAD_RESERVE_BYTES;
/// Largest element count of an array (or map pairs, set, push) accepted.
pub const ARRAY_LEN_MAX: usize = 1024 * 1024;
/// Longest inline command line (and simple-string reply line) accepted:
/// 64 KiB, Redis's `PROTO_INLINE_MAX_SIZE`.
pub const INLINE_BYTES_MAX: usize = 64 * 1024;
/// Deepest nesting of aggregate reply frames that [`parse_frame`] accepts;
/// bounds the parser's recursion so hostile input cannot overflow the stack.
pub const NESTING_DEPTH_MAX: usize = 64;
/// While a bulk is still arriving, reserve at most this much room for its
/// rest in one go, so a client that announces a large bulk and then stalls
/// does not make us hold its full size in memory.
const RESERVE_AHEAD_BYTES_MAX: usize = 1024 * 1024;
/// Longest decimal length/integer text: `i64::MIN` has 19 digits.
const DECIMAL_DIGITS_MAX: usize = 19;
/// Room for the text of any `f64` as written by [`encode`].
const DOUBLE_TEXT_BYTES_MAX: usize = 32;

/// One RESP value. RESP3-only variants are downgraded by [`encode`] when the
/// connection speaks RESP2.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`: a short status line; must not contain CR or LF (they are
    /// replaced by spaces when encoded).
    Simple(Bytes),
    /// `-ERR message`: the first word is the error code by convention.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`: binary-safe string.
    Bulk(Bytes),
    /// Absent value: `$-1` in RESP2, `_` in RESP3.
    Null,
    /// `*N`: ordered elements.
    Array(Vec<Frame>),
    /// Absent array: `*-1` in RESP2, `_` in RESP3.
    NullArray,
    /// RESP3 `%N`; RESP2: flat array `k1 v1 k2 v2 ..`.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~N`; RESP2: array.
    Set(Vec<Frame>),
    /// RESP3 `,1.5`; RESP2: bulk string with the same text (`inf`, `-inf`).
    Double(f64),
    /// RESP3 `#t`/`#f`; RESP2: integer 1/0.
    Boolean(bool),
    /// RESP3 `=15\r\ntxt:Some string`; RESP2: bulk string of `text`.
    Verbatim {
        /// Three-byte format such as `txt` or `mkd`.
        format: [u8; 3],
        /// The text, without the `fmt:` prefix.
        text: Bytes,
    },
    /// RESP3 `(12345678901234567890`: decimal digits; RESP2: bulk string.
    BigNumber(Bytes),
    /// RESP3 `>N` out-of-band message; RESP2: array.
    Push(Vec<Frame>),
    /// Pairs such as member/score (`ZRANGE .. WITHSCORES`, `HRANDFIELD ..
    /// WITHVALUES`): RESP3 an array of two-element arrays, RESP2 one flat
    /// array `k1 v1 k2 v2 ..` (Redis 7's shapes). Never decoded: a peer
    /// reads it back as arrays.
    Pairs(Vec<(Frame, Frame)>),
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    /// A status line from a static text, e.g. `Frame::simple("PONG")`.
    pub fn simple(text: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// An error reply; `message` starts with its code, e.g. `"ERR syntax error"`.
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(message.into())
    }
}

/// Which RESP version a connection speaks (`HELLO 3` switches to RESP3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// The default for every new connection.
    #[default]
    Resp2,
    /// Adds maps, sets, doubles, booleans, verbatim strings, pushes, `_`.
    Resp3,
}

/// Size limits applied while parsing; past one the parser returns an error
/// instead of allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string, in bytes.
    pub bulk_bytes_max: usize,
    /// Largest element count of an aggregate.
    pub array_len_max: usize,
    /// Longest inline command line or simple-string reply line, in bytes.
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { bulk_bytes_max: BULK_BYTES_MAX, array_len_max: ARRAY_LEN_MAX, inline_bytes_max: INLINE_BYTES_MAX }
    }
}

/// Malformed or oversized input. The byte stream cannot be resynchronised
/// after one of these: answer with [`ProtocolError::to_frame`] and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` followed by garbage, or more elements than `array_len_max`.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` followed by garbage, a negative length in a command, or more
    /// bytes than `bulk_bytes_max`.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An inline command line longer than `inline_bytes_max`.
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// A command argument that does not start with `$`.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0).escape_default())]
    ExpectedBulk(u8),
    /// An inline command with an unterminated quote, or a closing quote
    /// followed by something other than a space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// Bulk payload not followed by `\r\n`.
    #[error("Protocol error: bulk data not terminated by CRLF")]
    BulkNotTerminated,
    /// A line with `\r` not followed by `\n`.
    #[error("Protocol error: line not terminated by CRLF")]
    LineNotTerminated,
    /// A status/error reply line longer than `inline_bytes_max`.
    #[error("Protocol error: too big line")]
    TooBigLine,
    /// A reply frame starting with a byte that is no RESP type.
    #[error("Protocol error: unknown frame type '{}'", char::from(*.0).escape_default())]
    UnknownFrameType(u8),
    /// `:` followed by something that is not an i64.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// `,` followed by something that is not a double.
    #[error("Protocol error: invalid double")]
    InvalidDouble,
    /// `#` followed by something other than `t` or `f`.
    #[error("Protocol error: invalid boolean")]
    InvalidBoolean,
    /// `=` whose payload does not start with a 3-byte format and `:`.
    #[error("Protocol error: invalid verbatim string")]
    InvalidVerbatim,
    /// `(` followed by something that is not a decimal integer.
    #[error("Protocol error: invalid big number")]
    InvalidBigNumber,
    /// Aggregates nested deeper than [`NESTING_DEPTH_MAX`].
    #[error("Protocol error: nesting too deep")]
    NestingTooDeep,
}

impl ProtocolError {
    /// The reply Redis sends before closing: `-ERR Protocol error: ...`.
    pub fn to_frame(&self) -> Frame {
        Frame::Error(format!("ERR {self}"))
    }
}

// ---------------------------------------------------------------------------
// Commands (client -> server)
// ---------------------------------------------------------------------------

/// Parse one client command (multibulk `*N\r\n$len\r\n...` or an inline
/// command line like `PING\r\n` / `set a "b c"\r\n`, with redis-style quoting).
///
/// `Ok(None)` means incomplete: read more bytes and call again. On success,
/// splits the consumed bytes off `buf` and returns argument `Bytes` that share
/// the buffer (zero-copy via `BytesMut::split_to` + `freeze`); an argument
/// kept for long (e.g. a stored value) pins that buffer, so copy small ones.
/// Empty commands (`*0`, `*-1`, blank lines) are consumed and skipped.
pub fn parse_command(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let step = if first == b'*' { parse_multibulk(buf, limits)? } else { parse_inline(buf, limits)? };
        match step {
            CommandStep::Incomplete { missing_bytes } => {
                // Make room for the rest of a bulk we know is coming, so the
                // caller's next read can take it in large pieces. Bounded:
                // the length was already checked against the limits.
                if missing_bytes > buf.capacity() - buf.len() {
                    buf.reserve(missing_bytes.min(RESERVE_AHEAD_BYTES_MAX));
                }
                return Ok(None);
            }
            CommandStep::Skipped => continue,
            CommandStep::Command(args) => return Ok(Some(args)),
        }
    }
}

/// Encode a command as a multibulk array of bulk strings (for clients).
pub fn encode_command(args: &[&[u8]], out: &mut BytesMut) {
    let body: usize = args.iter().map(|a| a.len() + 16).sum();
    out.reserve(body + 16);
    put_header(out, b'*', args.len() as i64);
    for arg in args {
        put_bulk(out, b'$', arg);
    }
}

enum CommandStep {
    Incomplete { missing_bytes: usize },
    Skipped,
    Command(Vec<Bytes>),
}

fn parse_multibulk(buf: &mut BytesMut, limits: &Limits) -> Result<CommandStep, ProtocolError> {
    let (argc, end) = match check_multibulk(buf, limits)? {
        MultibulkCheck::Incomplete { missing_bytes } => return Ok(CommandStep::Incomplete { missing_bytes }),
        MultibulkCheck::Empty { end } => {
            let _ = buf.split_to(end);
            return Ok(CommandStep::Skipped);
        }
        MultibulkCheck::Complete { argc, end } => (argc, end),
    };
    let frozen = buf.split_to(end).freeze();
    // Second pass over headers that the first pass validated; the capacity
    // is backed by bytes that are present (each argument takes >= 6 bytes).
    let mut args = Vec::with_capacity(argc);
    let mut pos = skip_line(&frozen, 0);
    for _ in 0..argc {
        let (len, data_start) = read_checked_len(&frozen, pos + 1);
        args.push(frozen.slice(data_start..data_start + len));
        pos = data_start + len + 2;
    }
    Ok(CommandStep::Command(args))
}

enum MultibulkCheck {
    Incomplete { missing_bytes: usize },
    Empty { end: usize },
    Complete { argc: usize, end: usize },
}

/// First pass over `*N\r\n($len\r\ndata\r\n)*`: validates headers and limits,
/// finds the end. Never looks inside bulk payloads except their CRLF.
fn check_multibulk(buf: &[u8], limits: &Limits) -> Result<MultibulkCheck, ProtocolError> {
    const INCOMPLETE: MultibulkCheck = MultibulkCheck::Incomplete { missing_bytes: 0 };
    let Some((count, mut pos)) = read_decimal_line(buf, 1, ProtocolError::InvalidMultibulkLength)? else {
        return Ok(INCOMPLETE);
    };
    // Like Redis: `*0` and any negative count are an empty command.
    if count <= 0 {
        return Ok(MultibulkCheck::Empty { end: pos });
    }
    if count as u64 > limits.array_len_max as u64 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    for _ in 0..count {
        let Some(&kind) = buf.get(pos) else {
            return Ok(INCOMPLETE);
        };
        if kind != b'$' {
            return Err(ProtocolError::ExpectedBulk(kind));
        }
        let Some((len, data_start)) = read_decimal_line(buf, pos + 1, ProtocolError::InvalidBulkLength)? else {
            return Ok(INCOMPLETE);
        };
        let len = checked_bulk_len(len, limits)?;
        let end = data_start + len + 2;
        if buf.len() < end {
            return Ok(MultibulkCheck::Incomplete { missing_bytes: end - buf.len() });
        }
        if &buf[end - 2..end] != b"\r\n" {
            return Err(ProtocolError::BulkNotTerminated);
        }
        pos = end;
    }
    Ok(MultibulkCheck::Complete { argc: count as usize, end: pos })
}

fn checked_bulk_len(len: i64, limits: &Limits) -> Result<usize, ProtocolError> {
    if len < 0 || len as u64 > limits.bulk_bytes_max as u64 {
        return Err(ProtocolError::InvalidBulkLength);
    }
    Ok(len as usize)
}

/// Position just past the next `\n` at or after `pos` (input already checked).
fn skip_line(buf: &[u8], pos: usize) -> usize {
    pos + buf[pos..].iter().position(|&b| b == b'\n').unwrap_or(0) + 1
}

/// Reads a validated non-negative decimal up to `\r\n`: (value, next pos).
fn read_checked_len(buf: &[u8], mut pos: usize) -> (usize, usize) {
    let mut value = 0usize;
    while buf[pos] != b'\r' {
        value = value * 10 + usize::from(buf[pos] - b'0');
        pos += 1;
    }
    (value, pos + 2)
}

/// An inline command: one line, split like redis-cli / `sdssplitargs`.
fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<CommandStep, ProtocolError> {
    // Only look at `inline_bytes_max + 1` bytes so the verdict does not
    // depend on how the stream was split into reads.
    let window = &buf[..buf.len().min(limits.inline_bytes_max + 1)];
    let Some(newline) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.inline_bytes_max {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        return Ok(CommandStep::Incomplete { missing_bytes: 0 });
    };
    let line = buf.split_to(newline + 1).freeze();
    let mut content_end = newline;
    if content_end > 0 && line[content_end - 1] == b'\r' {
        content_end -= 1;
    }
    let args = split_inline_args(&line.slice(..content_end))?;
    if args.is_empty() {
        return Ok(CommandStep::Skipped);
    }
    Ok(CommandStep::Command(args))
}

/// C `isspace`: what `sdssplitargs` skips between arguments. NUL, which
/// ends a C string there, is a separator here, so every byte that ends an
/// unquoted argument is also skipped (and the split always makes progress).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0)
}

/// What ends an unquoted argument in `sdssplitargs`.
fn ends_bare_arg(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0)
}

/// Splits an inline line like Redis's `sdssplitargs`: blanks separate
/// arguments; `"..."` understands `\n \r \t \b \a \\ \" \xHH`; `'...'`
/// understands `\'`; a closing quote must be followed by a blank or the end.
/// Unquoted arguments are slices of `line`; quoted ones are copied.
fn split_inline_args(line: &Bytes) -> Result<Vec<Bytes>, ProtocolError> {
    let s = &line[..];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < s.len() && is_blank(s[i]) {
            i += 1;
        }
        if i == s.len() {
            return Ok(args);
        }
        let start = i;
        while i < s.len() && !ends_bare_arg(s[i]) && s[i] != b'"' && s[i] != b'\'' {
            i += 1;
        }
        if i == s.len() || ends_bare_arg(s[i]) {
            args.push(line.slice(start..i));
            continue;
        }
        // A quote: the bytes before it and the unescaped quoted part form
        // one argument, which ends at the closing quote.
        let mut owned = s[start..i].to_vec();
        i = if s[i] == b'"' {
            read_double_quoted(s, i + 1, &mut owned)?
        } else {
            read_single_quoted(s, i + 1, &mut owned)?
        };
        args.push(Bytes::from(owned));
    }
}

/// From just after an opening `"`; returns the position after the closing one.
fn read_double_quoted(s: &[u8], mut i: usize, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match s.get(i) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') => {
                let hex = (s.get(i + 2).and_then(|&b| hex_value(b))).zip(s.get(i + 3).and_then(|&b| hex_value(b)));
                match (s.get(i + 1), hex) {
                    (Some(b'x'), Some((hi, lo))) => {
                        out.push((hi << 4) | lo);
                        i += 4;
                    }
                    (Some(&c), _) => {
                        out.push(match c {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    }
                    (None, _) => return Err(ProtocolError::UnbalancedQuotes),
                }
            }
            Some(b'"') => return closing_quote_end(s, i),
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// From just after an opening `'`; returns the position after the closing one.
fn read_single_quoted(s: &[u8], mut i: usize, out: &mut Vec<u8>) -> Result<usize, ProtocolError> {
    loop {
        match s.get(i) {
            None => return Err(ProtocolError::UnbalancedQuotes),
            Some(b'\\') if s.get(i + 1) == Some(&b'\'') => {
                out.push(b'\'');
                i += 2;
            }
            Some(b'\'') => return closing_quote_end(s, i),
            Some(&c) => {
                out.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote at `i` must be followed by a blank or the end of line.
fn closing_quote_end(s: &[u8], i: usize) -> Result<usize, ProtocolError> {
    match s.get(i + 1) {
        Some(&next) if !is_blank(next) => Err(ProtocolError::UnbalancedQuotes),
        _ => Ok(i + 1),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reads a decimal i64 terminated by `\r\n` starting at `pos`, strictly like
/// Redis's `string2ll` (no `+`, no spaces, no leading zeros, no `-0`).
/// `Ok(None)` when the line has not fully arrived. Fails as soon as the bytes
/// seen cannot start a valid number, so garbage is rejected without waiting.
fn read_decimal_line(buf: &[u8], pos: usize, err: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    let mut i = pos;
    let negative = buf.get(i) == Some(&b'-');
    if negative {
        i += 1;
    }
    let digits_start = i;
    let mut magnitude: u64 = 0;
    loop {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        match b {
            b'0'..=b'9' => {
                let leading_zero = i > digits_start && buf[digits_start] == b'0';
                if leading_zero || i - digits_start == DECIMAL_DIGITS_MAX {
                    return Err(err);
                }
                magnitude = magnitude * 10 + u64::from(b - b'0');
                i += 1;
            }
            b'\r' => break,
            _ => return Err(err),
        }
    }
    let digits = i - digits_start;
    if digits == 0 || (negative && magnitude == 0) {
        return Err(err);
    }
    match buf.get(i + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(err),
    }
    let value = if negative {
        // 19 digits fit in u64; i64::MIN's magnitude is i64::MAX + 1.
        if magnitude > i64::MAX as u64 + 1 {
            return Err(err);
        }
        (magnitude as i64).wrapping_neg()
    } else {
        i64::try_from(magnitude).map_err(|_| err)?
    };
    Ok(Some((value, i + 2)))
}

// ---------------------------------------------------------------------------
// Frames (any direction; used by clients and tests)
// ---------------------------------------------------------------------------

/// Parse one reply/any frame (used by clients such as `tandem bench` and
/// tests). `Ok(None)` = incomplete, read more. RESP2 and RESP3 are accepted
/// in the same stream; RESP3 attributes (`|`) are read and dropped; a blob
/// error (`!`) becomes [`Frame::Error`]. On success the consumed bytes are
/// split off `buf` and bulk payloads share them.
pub fn parse_frame(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let mut check = FrameReader { buf: &buf[..], pos: 0, limits, source: None, missing_bytes: 0 };
    if check.frame(0)?.is_none() {
        let missing_bytes = check.missing_bytes;
        if missing_bytes > buf.capacity() - buf.len() {
            buf.reserve(missing_bytes.min(RESERVE_AHEAD_BYTES_MAX));
        }
        return Ok(None);
    }
    let end = check.pos;
    let frozen = buf.split_to(end).freeze();
    let mut build = FrameReader { buf: &frozen, pos: 0, limits, source: Some(&frozen), missing_bytes: 0 };
    match build.frame(0)? {
        Some(frame) => Ok(Some(frame)),
        // The first pass saw a whole frame in these same bytes.
        None => unreachable!("frame checked complete but incomplete on build"),
    }
}

/// Returns `Ok(None)` from the enclosing function when the input is short.
macro_rules! ready {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// One recursive-descent parser for both passes: with `source == None` it
/// only validates and measures (returning placeholder frames, allocating
/// nothing); with `source` set it builds frames sliced from `source`.
struct FrameReader<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    source: Option<&'a Bytes>,
    /// When a bulk is incomplete: how many more bytes it needs.
    missing_bytes: usize,
}

impl FrameReader<'_> {
    fn frame(&mut self, depth: usize) -> Result<Option<Frame>, ProtocolError> {
        let Some(&kind) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        match kind {
            b'+' => {
                let (start, end) = ready!(self.line());
                Ok(Some(self.build(|src| Frame::Simple(src.slice(start..end)))))
            }
            b'-' => {
                let (start, end) = ready!(self.line());
                Ok(Some(self.build(|src| Frame::Error(lossy(&src[start..end])))))
            }
            b':' => {
                let value = ready!(self.decimal(ProtocolError::InvalidInteger));
                Ok(Some(Frame::Integer(value)))
            }
            b'$' => {
                let len = ready!(self.decimal(ProtocolError::InvalidBulkLength));
                if len == -1 {
                    return Ok(Some(Frame::Null));
                }
                let (start, end) = ready!(self.bulk(len));
                Ok(Some(self.build(|src| Frame::Bulk(src.slice(start..end)))))
            }
            b'!' => {
                let len = ready!(self.decimal(ProtocolError::InvalidBulkLength));
                let (start, end) = ready!(self.bulk(len));
                Ok(Some(self.build(|src| Frame::Error(lossy(&src[start..end])))))
            }
            b'=' => self.verbatim(),
            b'_' => {
                ready!(self.empty_line());
                Ok(Some(Frame::Null))
            }
            b'#' => {
                let (start, end) = ready!(self.line());
                match &self.buf[start..end] {
                    b"t" => Ok(Some(Frame::Boolean(true))),
                    b"f" => Ok(Some(Frame::Boolean(false))),
                    _ => Err(ProtocolError::InvalidBoolean),
                }
            }
            b',' => {
                let (start, end) = ready!(self.line());
                let value = std::str::from_utf8(&self.buf[start..end])
                    .ok()
                    .and_then(|text| text.parse::<f64>().ok())
                    .ok_or(ProtocolError::InvalidDouble)?;
                Ok(Some(Frame::Double(value)))
            }
            b'(' => {
                let (start, end) = ready!(self.line());
                if !is_big_number(&self.buf[start..end]) {
                    return Err(ProtocolError::InvalidBigNumber);
                }
                Ok(Some(self.build(|src| Frame::BigNumber(src.slice(start..end)))))
            }
            b'*' => {
                let len = ready!(self.decimal(ProtocolError::InvalidMultibulkLength));
                if len == -1 {
                    return Ok(Some(Frame::NullArray));
                }
                let items = ready!(self.items(len, depth));
                Ok(Some(Frame::Array(items)))
            }
            b'~' => {
                let len = ready!(self.decimal(ProtocolError::InvalidMultibulkLength));
                Ok(Some(Frame::Set(ready!(self.items(len, depth)))))
            }
            b'>' => {
                let len = ready!(self.decimal(ProtocolError::InvalidMultibulkLength));
                Ok(Some(Frame::Push(ready!(self.items(len, depth)))))
            }
            b'%' => {
                let len = ready!(self.decimal(ProtocolError::InvalidMultibulkLength));
                Ok(Some(Frame::Map(ready!(self.pairs(len, depth)))))
            }
            b'|' => {
                // Attributes annotate the next frame; nothing here uses them.
                let len = ready!(self.decimal(ProtocolError::InvalidMultibulkLength));
                ready!(self.pairs(len, depth));
                self.frame(depth + 1)
            }
            other => Err(ProtocolError::UnknownFrameType(other)),
        }
    }

    /// Builds a frame from the source bytes, or a placeholder when checking.
    fn build(&self, make: impl FnOnce(&Bytes) -> Frame) -> Frame {
        match self.source {
            Some(src) => make(src),
            None => Frame::Null,
        }
    }

    fn aggregate_len(&self, len: i64, depth: usize) -> Result<usize, ProtocolError> {
        if depth >= NESTING_DEPTH_MAX {
            return Err(ProtocolError::NestingTooDeep);
        }
        if len < 0 || len as u64 > self.limits.array_len_max as u64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        Ok(len as usize)
    }

    fn items(&mut self, len: i64, depth: usize) -> Result<Option<Vec<Frame>>, ProtocolError> {
        let len = self.aggregate_len(len, depth)?;
        // Capacity only in the build pass, where the whole frame is present
        // and so backs every element with at least 3 bytes.
        let mut items = match self.source {
            Some(_) => Vec::with_capacity(len),
            None => Vec::new(),
        };
        for _ in 0..len {
            let item = ready!(self.frame(depth + 1));
            if self.source.is_some() {
                items.push(item);
            }
        }
        Ok(Some(items))
    }

    fn pairs(&mut self, len: i64, depth: usize) -> Result<Option<Vec<(Frame, Frame)>>, ProtocolError> {
        let len = self.aggregate_len(len, depth)?;
        let mut pairs = match self.source {
            Some(_) => Vec::with_capacity(len),
            None => Vec::new(),
        };
        for _ in 0..len {
            let key = ready!(self.frame(depth + 1));
            let value = ready!(self.frame(depth + 1));
            if self.source.is_some() {
                pairs.push((key, value));
            }
        }
        Ok(Some(pairs))
    }

    fn verbatim(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let len = ready!(self.decimal(ProtocolError::InvalidBulkLength));
        let (start, end) = ready!(self.bulk(len));
        if end - start < 4 || self.buf[start + 3] != b':' {
            return Err(ProtocolError::InvalidVerbatim);
        }
        let format = [self.buf[start], self.buf[start + 1], self.buf[start + 2]];
        Ok(Some(self.build(|src| Frame::Verbatim { format, text: src.slice(start + 4..end) })))
    }

    fn decimal(&mut self, err: ProtocolError) -> Result<Option<i64>, ProtocolError> {
        let (value, next) = ready!(read_decimal_line(self.buf, self.pos, err));
        self.pos = next;
        Ok(Some(value))
    }

    /// The payload range of a bulk of `len` bytes at `pos`, checked against
    /// the limit before anything else.
    fn bulk(&mut self, len: i64) -> Result<Option<(usize, usize)>, ProtocolError> {
        let len = checked_bulk_len(len, self.limits)?;
        let start = self.pos;
        let end = start + len;
        if self.buf.len() < end + 2 {
            self.missing_bytes = end + 2 - self.buf.len();
            return Ok(None);
        }
        if &self.buf[end..end + 2] != b"\r\n" {
            return Err(ProtocolError::BulkNotTerminated);
        }
        self.pos = end + 2;
        Ok(Some((start, end)))
    }

    /// A text line up to `\r\n`, at most `inline_bytes_max` long.
    fn line(&mut self) -> Result<Option<(usize, usize)>, ProtocolError> {
        let start = self.pos;
        let window_end = self.buf.len().min(start.saturating_add(self.limits.inline_bytes_max + 1));
        let Some(offset) = self.buf[start..window_end].iter().position(|&b| b == b'\r') else {
            if window_end - start > self.limits.inline_bytes_max {
                return Err(ProtocolError::TooBigLine);
            }
            return Ok(None);
        };
        let end = start + offset;
        match self.buf.get(end + 1) {
            None => Ok(None),
            Some(b'\n') => {
                self.pos = end + 2;
                Ok(Some((start, end)))
            }
            Some(_) => Err(ProtocolError::LineNotTerminated),
        }
    }

    /// The `\r\n` right after a type byte that carries no data (`_`).
    fn empty_line(&mut self) -> Result<Option<()>, ProtocolError> {
        let (start, end) = ready!(self.line());
        if start != end {
            return Err(ProtocolError::LineNotTerminated);
        }
        Ok(Some(()))
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_big_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// Encode `frame` for a connection speaking `proto`, appending to `out`.
/// For RESP2, RESP3 types are downgraded: Map -> flat array, Set/Push ->
/// array, Null -> `$-1`, Boolean -> integer 0/1, Double -> bulk string,
/// Verbatim -> bulk text, BigNumber -> bulk string.
pub fn encode(frame: &Frame, proto: Protocol, out: &mut BytesMut) {
    let resp3 = proto == Protocol::Resp3;
    match frame {
        Frame::Simple(text) => put_line(out, b'+', text),
        Frame::Error(message) => put_line(out, b'-', message.as_bytes()),
        Frame::Integer(value) => put_header(out, b':', *value),
        Frame::Bulk(data) => put_bulk(out, b'$', data),
        Frame::Null if resp3 => out.put_slice(b"_\r\n"),
        Frame::Null => out.put_slice(b"$-1\r\n"),
        Frame::NullArray if resp3 => out.put_slice(b"_\r\n"),
        Frame::NullArray => out.put_slice(b"*-1\r\n"),
        Frame::Array(items) => put_items(out, b'*', items, proto),
        Frame::Set(items) => put_items(out, if resp3 { b'~' } else { b'*' }, items, proto),
        Frame::Push(items) => put_items(out, if resp3 { b'>' } else { b'*' }, items, proto),
        Frame::Map(pairs) => {
            if resp3 {
                put_header(out, b'%', pairs.len() as i64);
            } else {
                put_header(out, b'*', 2 * pairs.len() as i64);
            }
            for (key, value) in pairs {
                encode(key, proto, out);
                encode(value, proto, out);
            }
        }
        Frame::Pairs(pairs) => {
            put_header(out, b'*', if resp3 { pairs.len() } else { 2 * pairs.len() } as i64);
            for (key, value) in pairs {
                if resp3 {
                    out.put_slice(b"*2\r\n");
                }
                encode(key, proto, out);
                encode(value, proto, out);
            }
        }
        Frame::Double(value) => {
            let mut text = [0u8; DOUBLE_TEXT_BYTES_MAX];
            let len = format_double(*value, &mut text);
            if resp3 {
                put_line(out, b',', &text[..len]);
            } else {
                put_bulk(out, b'$', &text[..len]);
            }
        }
        Frame::Boolean(value) if resp3 => out.put_slice(if *value { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Boolean(value) => out.put_slice(if *value { b":1\r\n" } else { b":0\r\n" }),
        Frame::Verbatim { format, text } if resp3 => {
            out.reserve(text.len() + 32);
            put_header(out, b'=', text.len() as i64 + 4);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Frame::Verbatim { text, .. } => put_bulk(out, b'$', text),
        Frame::BigNumber(digits) if resp3 => put_line(out, b'(', digits),
        Frame::BigNumber(digits) => put_bulk(out, b'$', digits),
    }
}

fn put_items(out: &mut BytesMut, kind: u8, items: &[Frame], proto: Protocol) {
    put_header(out, kind, items.len() as i64);
    for item in items {
        encode(item, proto, out);
    }
}

/// `<kind><decimal>\r\n`, digits written by hand into a stack buffer.
fn put_header(out: &mut BytesMut, kind: u8, value: i64) {
    let mut digits = [0u8; 20];
    let len = write_i64(value, &mut digits);
    out.reserve(len + 3);
    out.put_u8(kind);
    out.put_slice(&digits[digits.len() - len..]);
    out.put_slice(b"\r\n");
}

fn put_bulk(out: &mut BytesMut, kind: u8, data: &[u8]) {
    out.reserve(data.len() + 24);
    put_header(out, kind, data.len() as i64);
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A one-line frame; CR and LF inside would end the line early and
/// desynchronise the peer, so they become spaces (what Redis does for errors).
fn put_line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        for &b in text {
            out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
    } else {
        out.put_slice(text);
    }
    out.put_slice(b"\r\n");
}

/// Writes `value` right-aligned into `buf`; returns the number of bytes.
fn write_i64(value: i64, buf: &mut [u8; 20]) -> usize {
    let mut magnitude = value.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if value < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    buf.len() - i
}

/// Formats a double like Redis: `inf`, `-inf`, `nan`; otherwise the shortest
/// digits that parse back to the same value, positional from 1e-4 up to
/// 1e17 (`3`, `1.5`, `0.0001`) and `%g`-style outside (`1e+300`, `2.5e-07`).
/// Returns the length written; no heap allocation.
fn format_double(value: f64, buf: &mut [u8; DOUBLE_TEXT_BYTES_MAX]) -> usize {
    let mut out = StackText { buf, len: 0 };
    if value.is_nan() {
        out.push(b"nan");
        return out.len;
    }
    if value.is_infinite() {
        out.push(if value > 0.0 { b"inf" } else { b"-inf" });
        return out.len;
    }
    // `{:e}` gives the shortest round-trip digits: `-1.2345e-7`.
    let mut sci_buf = [0u8; DOUBLE_TEXT_BYTES_MAX];
    let mut sci = StackText { buf: &mut sci_buf, len: 0 };
    let _ = fmt::write(&mut sci, format_args!("{value:e}"));
    let sci_len = sci.len;
    let sci = &sci_buf[..sci_len];
    let (negative, sci) = match sci.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, sci),
    };
    let e_at = sci.iter().position(|&b| b == b'e').unwrap_or(sci.len());
    let exponent = parse_small_exponent(&sci[(e_at + 1).min(sci.len())..]);
    let mut digits = [0u8; DOUBLE_TEXT_BYTES_MAX];
    let mut digit_count = 0;
    for &b in sci[..e_at].iter().filter(|b| b.is_ascii_digit()) {
        digits[digit_count] = b;
        digit_count += 1;
    }
    let digits = &digits[..digit_count];
    if negative {
        out.push(b"-");
    }
    if (-4..17).contains(&exponent) {
        if exponent >= 0 {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                out.push(digits);
                for _ in digits.len()..int_len {
                    out.push(b"0");
                }
            } else {
                out.push(&digits[..int_len]);
                out.push(b".");
                out.push(&digits[int_len..]);
            }
        } else {
            out.push(b"0.");
            for _ in 0..(-exponent - 1) {
                out.push(b"0");
            }
            out.push(digits);
        }
    } else {
        out.push(&digits[..1]);
        if digits.len() > 1 {
            out.push(b".");
            out.push(&digits[1..]);
        }
        out.push(if exponent < 0 { b"e-" } else { b"e+" });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push(b"0");
        }
        let mut exp_digits = [0u8; 20];
        let len = write_i64(i64::from(magnitude), &mut exp_digits);
        out.push(&exp_digits[20 - len..]);
    }
    out.len
}

fn parse_small_exponent(text: &[u8]) -> i32 {
    let (negative, digits) = match text.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let magnitude = digits.iter().fold(0i32, |acc, &b| acc * 10 + i32::from(b - b'0'));
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// A fixed-size text buffer on the stack; writes past its end are dropped
/// (callers size it for the longest text they produce).
struct StackText<'a> {
    buf: &'a mut [u8; DOUBLE_TEXT_BYTES_MAX],
    len: usize,
}

impl StackText<'_> {
    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }
}

impl fmt::Write for StackText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
