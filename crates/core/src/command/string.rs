//! String and bitmap commands beyond the basics (`SETEX`, `GETEX`,
//! `INCRBYFLOAT`, `SETRANGE`, `LCS`, `SETBIT`, `BITCOUNT`, `BITOP`,
//! `BITFIELD`, ...).
//!
//! Owns their replies and row effects. Every change to a string is logged
//! as the string's resulting whole value (`Set`, with the absolute expiry
//! the leader computed), so replay never re-runs arithmetic, reads a clock
//! or depends on the earlier bytes: a `SETBIT` or `SETRANGE` logs the whole
//! string it produced (bounded by the write's size budget).
//!
//! Must never: read a clock, or change the store other than through
//! [`WriteCtx::emit`].

use bytes::Bytes;

use super::hash::{format_f64, parse_f64};
use super::{bulk, error, int, ok, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, STRING_BYTES_MAX, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::resp::Frame;
use crate::store::ValueRef;

/// Largest `len(a) * len(b)` `LCS` computes (its table is that many cells
/// of 4 bytes): past it the command is refused instead of taking the
/// node's memory.
pub const LCS_CELLS_MAX: usize = 64 << 20;

/// Most sub-commands in one `BITFIELD`.
pub const BITFIELD_OPS_MAX: usize = 1024;

/// Largest bit offset `SETBIT`/`BITFIELD` accept (a 512 MiB string).
const BIT_OFFSET_MAX: u64 = (STRING_BYTES_MAX as u64) * 8 - 1;

const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// A string value and its absolute expiry (unix ms).
type WithExpiry<V> = (V, Option<u64>);

/// The string at `key` (missing: `None`) and its expiry.
fn string_of<'a>(cx: &'a ReadCtx<'_>, key: &[u8]) -> Result<Option<WithExpiry<&'a [u8]>>, Frame> {
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::Str(v), exp)) => Ok(Some((v, exp))),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

/// Like [`string_of`] for a write: purges an expired key first and copies
/// the value out.
fn string_for_write(cx: &mut WriteCtx<'_>, key: &Bytes) -> Result<Option<WithExpiry<Vec<u8>>>, Frame> {
    cx.purge_expired(key);
    Ok(string_of(&cx.read(), key)?.map(|(v, e)| (v.to_vec(), e)))
}

fn set_value(cx: &mut WriteCtx<'_>, key: &Bytes, value: Vec<u8>, expire_at_ms: Option<u64>) {
    cx.emit(Effect::Set { key: key.clone(), value: Bytes::from(value), expire_at_ms });
}

/// `SETEX` / `PSETEX`: `unit_ms` is 1000 or 1.
fn setex_generic(cx: &mut WriteCtx<'_>, args: &[Bytes], name: &str, unit_ms: u64) -> Frame {
    let Some(n) = parse_i64(&args[2]) else { return error(NOT_INTEGER) };
    let at = (n > 0)
        .then(|| (n as u64).checked_mul(unit_ms).and_then(|ms| ms.checked_add(cx.now_ms)))
        .flatten()
        .filter(|&at| at < i64::MAX as u64);
    let Some(at) = at else { return error(format!("ERR invalid expire time in '{name}' command")) };
    cx.emit(Effect::Set { key: args[1].clone(), value: args[3].clone(), expire_at_ms: Some(at) });
    ok()
}

pub(super) fn setex(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    setex_generic(cx, args, "setex", 1000)
}

pub(super) fn psetex(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    setex_generic(cx, args, "psetex", 1)
}

/// What `GETEX` does to the expiry.
enum GetexExpiry {
    Keep,
    Persist,
    At(u64),
}

pub(super) fn getex(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let mut what = GetexExpiry::Keep;
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        match &opt[..] {
            b"persist" if matches!(what, GetexExpiry::Keep) => what = GetexExpiry::Persist,
            b"ex" | b"px" | b"exat" | b"pxat" if matches!(what, GetexExpiry::Keep) => {
                let Some(raw) = args.get(i + 1) else { return error(SYNTAX) };
                let Some(n) = parse_i64(raw) else { return error(NOT_INTEGER) };
                let invalid = || error("ERR invalid expire time in 'getex' command");
                if n <= 0 {
                    return invalid();
                }
                let n = n as u64;
                let at = match &opt[..] {
                    b"ex" => n.checked_mul(1000).and_then(|ms| ms.checked_add(cx.now_ms)),
                    b"px" => n.checked_add(cx.now_ms),
                    b"exat" => n.checked_mul(1000),
                    _ => Some(n),
                };
                match at.filter(|&at| at < i64::MAX as u64) {
                    Some(at) => what = GetexExpiry::At(at),
                    None => return invalid(),
                }
                i += 1;
            }
            _ => return error(SYNTAX),
        }
        i += 1;
    }
    let key = &args[1];
    let Some((value, expiry)) = tri!(string_for_write(cx, key)) else { return Frame::Null };
    match what {
        GetexExpiry::Keep => {}
        GetexExpiry::Persist if expiry.is_some() => {
            cx.emit(Effect::Expire { key: key.clone(), expire_at_ms: None });
        }
        GetexExpiry::Persist => {}
        GetexExpiry::At(at) if at <= cx.now_ms => cx.emit(Effect::Del { key: key.clone() }),
        GetexExpiry::At(at) => cx.emit(Effect::Expire { key: key.clone(), expire_at_ms: Some(at) }),
    }
    Frame::Bulk(Bytes::from(value))
}

pub(super) fn getset(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let old = tri!(string_for_write(cx, &args[1]));
    cx.emit(Effect::Set { key: args[1].clone(), value: args[2].clone(), expire_at_ms: None });
    old.map_or(Frame::Null, |(v, _)| Frame::Bulk(Bytes::from(v)))
}

pub(super) fn msetnx(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    if args.len().is_multiple_of(2) {
        return super::wrong_arity("msetnx");
    }
    for pair in args[1..].chunks(2) {
        cx.purge_expired(&pair[0]);
        if cx.store.get(&pair[0], cx.now_ms).is_some() {
            return int(0);
        }
    }
    for pair in args[1..].chunks(2) {
        cx.emit(Effect::Set { key: pair[0].clone(), value: pair[1].clone(), expire_at_ms: None });
    }
    int(1)
}

pub(super) fn incrbyfloat(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(delta) = parse_f64(&args[2]) else { return error("ERR value is not a valid float") };
    let key = &args[1];
    let (current, expiry) = match tri!(string_for_write(cx, key)) {
        None => (0.0, None),
        Some((v, exp)) => match parse_f64(&v) {
            Some(n) => (n, exp),
            None => return error("ERR value is not a valid float"),
        },
    };
    let next = current + delta;
    if !next.is_finite() {
        return error("ERR increment would produce NaN or Infinity");
    }
    // Row effect: the number it produced, as text (Redis logs a SET too).
    let text = format_f64(next);
    set_value(cx, key, text.clone().into_bytes(), expiry);
    Frame::Bulk(Bytes::from(text))
}

/// Redis's clamping of a `start`..`end` range (inclusive, negative from
/// the end) over `len` items: `None` for an empty range.
fn clamp_range(start: i64, end: i64, len: usize) -> Option<(usize, usize)> {
    let len = len as i64;
    if len == 0 || (start < 0 && end < 0 && start > end) {
        return None;
    }
    let start = if start < 0 { (len + start).max(0) } else { start };
    let end = if end < 0 { (len + end).max(0) } else { end.min(len - 1) };
    (start <= end).then_some((start as usize, end as usize))
}

pub(super) fn getrange(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let (Some(start), Some(end)) = (parse_i64(&args[2]), parse_i64(&args[3])) else { return error(NOT_INTEGER) };
    let v = tri!(string_of(cx, &args[1])).map_or(&[][..], |(v, _)| v);
    match clamp_range(start, end, v.len()) {
        Some((s, e)) => bulk(&v[s..=e]),
        None => Frame::Bulk(Bytes::new()),
    }
}

pub(super) fn setrange(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(offset) = parse_i64(&args[2]) else { return error(NOT_INTEGER) };
    if offset < 0 {
        return error("ERR offset is out of range");
    }
    let key = &args[1];
    let patch = &args[3];
    let current = tri!(string_for_write(cx, key));
    if patch.is_empty() {
        return int(current.map_or(0, |(v, _)| v.len() as i64));
    }
    let end = offset as u64 + patch.len() as u64;
    if end > STRING_BYTES_MAX as u64 {
        return error(TOO_BIG);
    }
    let (mut value, expiry) = current.unwrap_or_default();
    let (offset, end) = (offset as usize, end as usize);
    if value.len() < end {
        value.resize(end, 0);
    }
    value[offset..end].copy_from_slice(patch);
    let len = value.len() as i64;
    set_value(cx, key, value, expiry);
    int(len)
}

/// The longest common subsequence table of `a` and `b`: `t[i][j]` is the
/// LCS length of `a[..i]` and `b[..j]`, stored row-major in one vector.
fn lcs_table(a: &[u8], b: &[u8]) -> Vec<u32> {
    let w = b.len() + 1;
    let mut t = vec![0u32; (a.len() + 1) * w];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    t
}

pub(super) fn lcs(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let (mut want_len, mut want_idx, mut min_match, mut with_match_len) = (false, false, 0i64, false);
    let mut i = 3;
    while i < args.len() {
        match &args[i].to_ascii_lowercase()[..] {
            b"len" => want_len = true,
            b"idx" => want_idx = true,
            b"withmatchlen" => with_match_len = true,
            b"minmatchlen" => {
                let Some(n) = args.get(i + 1).and_then(|a| parse_i64(a)) else { return error(NOT_INTEGER) };
                min_match = n.max(0);
                i += 1;
            }
            _ => return error(SYNTAX),
        }
        i += 1;
    }
    if want_len && want_idx {
        return error("ERR If you want both the length and indexes, please just use IDX.");
    }
    let fetch = |k: &[u8]| match cx.store.get(k, cx.now_ms) {
        None => Ok(&[][..]),
        Some((ValueRef::Str(v), _)) => Ok(v),
        Some(_) => Err(error("ERR The specified keys must contain string values")),
    };
    let a = tri!(fetch(&args[1]));
    let b = tri!(fetch(&args[2]));
    if (a.len() + 1).saturating_mul(b.len() + 1) > LCS_CELLS_MAX {
        return error(format!(
            "ERR LCS of strings this long needs more than {LCS_CELLS_MAX} table cells (the LCS_CELLS_MAX limit)"
        ));
    }
    let t = lcs_table(a, b);
    let w = b.len() + 1;
    let total = t[a.len() * w + b.len()];
    if want_len {
        return int(total as i64);
    }
    // Walk back from the end, collecting the common string and the ranges
    // of matching runs (Redis reports them from the end backwards).
    let mut common = vec![0u8; total as usize];
    let mut at = total as usize;
    let mut matches: Vec<((usize, usize), (usize, usize))> = Vec::new();
    let mut run: Option<((usize, usize), (usize, usize))> = None;
    let (mut i, mut j) = (a.len(), b.len());
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] {
            at -= 1;
            common[at] = a[i - 1];
            let (ai, bj) = (i - 1, j - 1);
            run = match run {
                Some(((a0, a1), (b0, b1))) if a0 == ai + 1 && b0 == bj + 1 => Some(((ai, a1), (bj, b1))),
                Some(done) => {
                    matches.push(done);
                    Some(((ai, ai), (bj, bj)))
                }
                None => Some(((ai, ai), (bj, bj))),
            };
            i -= 1;
            j -= 1;
        } else if t[(i - 1) * w + j] > t[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    if let Some(done) = run {
        matches.push(done);
    }
    if !want_idx {
        return Frame::Bulk(Bytes::from(common));
    }
    let range = |(s, e): (usize, usize)| Frame::Array(vec![int(s as i64), int(e as i64)]);
    let list = matches
        .into_iter()
        .filter(|((a0, a1), _)| (a1 - a0 + 1) as i64 >= min_match)
        .map(|(ra, rb)| {
            let mut m = vec![range(ra), range(rb)];
            if with_match_len {
                m.push(int((ra.1 - ra.0 + 1) as i64));
            }
            Frame::Array(m)
        })
        .collect();
    Frame::Map(vec![
        (Frame::Bulk(Bytes::from_static(b"matches")), Frame::Array(list)),
        (Frame::Bulk(Bytes::from_static(b"len")), int(total as i64)),
    ])
}

// ------------------------------------------------------------------ bitmaps

fn parse_bit_offset(raw: &[u8]) -> Result<u64, Frame> {
    match parse_i64(raw) {
        Some(n) if n >= 0 && (n as u64) <= BIT_OFFSET_MAX => Ok(n as u64),
        _ => Err(error("ERR bit offset is not an integer or out of range")),
    }
}

fn get_bit(v: &[u8], offset: u64) -> u8 {
    let byte = (offset / 8) as usize;
    v.get(byte).map_or(0, |b| (b >> (7 - (offset % 8))) & 1)
}

pub(super) fn setbit(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let offset = tri!(parse_bit_offset(&args[2]));
    let bit = match &args[3][..] {
        b"0" => 0u8,
        b"1" => 1u8,
        _ => return error("ERR bit is not an integer or out of range"),
    };
    let key = &args[1];
    let (mut value, expiry) = tri!(string_for_write(cx, key)).unwrap_or_default();
    let byte = (offset / 8) as usize;
    if value.len() <= byte {
        value.resize(byte + 1, 0);
    }
    let mask = 1u8 << (7 - (offset % 8));
    let old = (value[byte] & mask != 0) as i64;
    if bit == 1 {
        value[byte] |= mask;
    } else {
        value[byte] &= !mask;
    }
    set_value(cx, key, value, expiry);
    int(old)
}

pub(super) fn getbit(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let offset = tri!(parse_bit_offset(&args[2]));
    let v = tri!(string_of(cx, &args[1])).map_or(&[][..], |(v, _)| v);
    int(get_bit(v, offset) as i64)
}

/// Parses the optional `start end [BYTE|BIT]` of `BITCOUNT` / `BITPOS`
/// and returns the bit range `[first, last]` it selects in a value of
/// `len` bytes (`None`: empty), and whether `end` was given.
fn bit_range(args: &[Bytes], len: usize) -> Result<(Option<(u64, u64)>, bool), Frame> {
    let Some(raw_start) = args.first() else {
        return Ok(((len > 0).then(|| (0, len as u64 * 8 - 1)), false));
    };
    let start = parse_i64(raw_start).ok_or_else(|| error(NOT_INTEGER))?;
    let (end, end_given) = match args.get(1) {
        Some(raw) => (parse_i64(raw).ok_or_else(|| error(NOT_INTEGER))?, true),
        None => (-1, false),
    };
    let bits = match args.get(2).map(|a| a.to_ascii_lowercase()) {
        None => false,
        Some(u) if u == b"byte" => false,
        Some(u) if u == b"bit" => true,
        Some(_) => return Err(error(SYNTAX)),
    };
    if args.len() > 3 {
        return Err(error(SYNTAX));
    }
    let units = if bits { len * 8 } else { len };
    let range =
        clamp_range(start, end, units).map(
            |(s, e)| {
                if bits {
                    (s as u64, e as u64)
                } else {
                    (s as u64 * 8, e as u64 * 8 + 7)
                }
            },
        );
    Ok((range, end_given))
}

pub(super) fn bitcount(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    if args.len() == 3 {
        return error(SYNTAX);
    }
    let v = tri!(string_of(cx, &args[1])).map_or(&[][..], |(v, _)| v);
    let (range, _) = tri!(bit_range(&args[2..], v.len()));
    let Some((first, last)) = range else { return int(0) };
    let count: u64 = (first..=last).map(|b| get_bit(v, b) as u64).sum();
    int(count as i64)
}

pub(super) fn bitpos(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let want = match &args[2][..] {
        b"0" => 0u8,
        b"1" => 1u8,
        _ => return error("ERR The bit argument must be 1 or 0."),
    };
    let found = match cx.store.get(&args[1], cx.now_ms) {
        None => None,
        Some((ValueRef::Str(v), _)) => Some(v),
        Some(_) => return error(WRONGTYPE),
    };
    let Some(v) = found else { return int(if want == 1 { -1 } else { 0 }) };
    let (range, end_given) = tri!(bit_range(&args[3..], v.len()));
    let Some((first, last)) = range else { return int(-1) };
    if let Some(pos) = (first..=last).find(|&b| get_bit(v, b) == want) {
        return int(pos as i64);
    }
    // Looking for a clear bit with no end given: the string is taken as
    // padded with zeros on the right (Redis).
    if want == 0 && !end_given {
        return int(last as i64 + 1);
    }
    int(-1)
}

pub(super) fn bitop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let op = args[1].to_ascii_lowercase();
    if !matches!(&op[..], b"and" | b"or" | b"xor" | b"not") {
        return error(SYNTAX);
    }
    if op == b"not" && args.len() != 4 {
        return error("ERR BITOP NOT must be called with a single source key.");
    }
    let dest = &args[2];
    let mut sources: Vec<Vec<u8>> = Vec::with_capacity(args.len() - 3);
    for k in &args[3..] {
        cx.purge_expired(k);
        match cx.store.get(k, cx.now_ms) {
            None => sources.push(Vec::new()),
            Some((ValueRef::Str(v), _)) => sources.push(v.to_vec()),
            Some(_) => return error(WRONGTYPE),
        }
    }
    let len = sources.iter().map(Vec::len).max().unwrap_or(0);
    let byte = |s: &Vec<u8>, i: usize| s.get(i).copied().unwrap_or(0);
    let out: Vec<u8> = (0..len)
        .map(|i| match &op[..] {
            b"not" => !byte(&sources[0], i),
            b"and" => sources.iter().fold(0xff, |acc, s| acc & byte(s, i)),
            b"or" => sources.iter().fold(0, |acc, s| acc | byte(s, i)),
            _ => sources.iter().fold(0, |acc, s| acc ^ byte(s, i)),
        })
        .collect();
    cx.purge_expired(dest);
    if out.is_empty() {
        if cx.store.get(dest, cx.now_ms).is_some() {
            cx.emit(Effect::Del { key: dest.clone() });
        }
    } else {
        set_value(cx, dest, out, None);
    }
    int(len as i64)
}

/// A `BITFIELD` integer type: `i<bits>` or `u<bits>`.
#[derive(Clone, Copy)]
struct FieldType {
    signed: bool,
    bits: u32,
}

fn parse_field_type(raw: &[u8]) -> Result<FieldType, Frame> {
    let bad =
        || error("ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.");
    let (signed, digits) = match raw.first().map(u8::to_ascii_lowercase) {
        Some(b'i') => (true, &raw[1..]),
        Some(b'u') => (false, &raw[1..]),
        _ => return Err(bad()),
    };
    let bits = parse_i64(digits).ok_or_else(bad)?;
    if bits < 1 || (signed && bits > 64) || (!signed && bits > 63) {
        return Err(bad());
    }
    Ok(FieldType { signed, bits: bits as u32 })
}

/// A `BITFIELD` offset: a bit number, or `#n` (n times the type's width).
fn parse_field_offset(raw: &[u8], ty: FieldType) -> Result<u64, Frame> {
    let bad = || error("ERR bit offset is not an integer or out of range");
    let (mul, digits) = match raw.first() {
        Some(b'#') => (ty.bits as u64, &raw[1..]),
        _ => (1, raw),
    };
    let n = parse_i64(digits).filter(|&n| n >= 0).ok_or_else(bad)? as u64;
    let off = n.checked_mul(mul).ok_or_else(bad)?;
    if off.saturating_add(ty.bits as u64 - 1) > BIT_OFFSET_MAX {
        return Err(bad());
    }
    Ok(off)
}

fn read_field(v: &[u8], offset: u64, ty: FieldType) -> i64 {
    let mut raw: u64 = 0;
    for b in 0..ty.bits as u64 {
        raw = (raw << 1) | get_bit(v, offset + b) as u64;
    }
    if ty.signed && ty.bits < 64 && raw & (1 << (ty.bits - 1)) != 0 {
        (raw | (u64::MAX << ty.bits)) as i64
    } else {
        raw as i64
    }
}

fn write_field(v: &mut Vec<u8>, offset: u64, ty: FieldType, value: i64) {
    let last_byte = ((offset + ty.bits as u64 - 1) / 8) as usize;
    if v.len() <= last_byte {
        v.resize(last_byte + 1, 0);
    }
    for b in 0..ty.bits as u64 {
        let bit = (value as u64 >> (ty.bits as u64 - 1 - b)) & 1;
        let pos = offset + b;
        let mask = 1u8 << (7 - (pos % 8));
        if bit == 1 {
            v[(pos / 8) as usize] |= mask;
        } else {
            v[(pos / 8) as usize] &= !mask;
        }
    }
}

/// `BITFIELD` overflow behaviour.
#[derive(Clone, Copy, PartialEq)]
enum Overflow {
    Wrap,
    Sat,
    Fail,
}

/// `value` (already computed in i128) fitted to `ty` under `mode`, or
/// `None` when `FAIL` refuses it.
fn fit(value: i128, ty: FieldType, mode: Overflow) -> Option<i64> {
    let (min, max): (i128, i128) =
        if ty.signed { (-(1i128 << (ty.bits - 1)), (1i128 << (ty.bits - 1)) - 1) } else { (0, (1i128 << ty.bits) - 1) };
    if (min..=max).contains(&value) {
        return Some(value as i64);
    }
    match mode {
        Overflow::Fail => None,
        Overflow::Sat => Some(if value > max { max } else { min } as i64),
        Overflow::Wrap => {
            let m = 1i128 << ty.bits;
            let mut w = value.rem_euclid(m);
            if ty.signed && w > max {
                w -= m;
            }
            Some(w as i64)
        }
    }
}

/// `BITFIELD` and `BITFIELD_RO` (`readonly`: only `GET` allowed).
fn bitfield_generic(cx: &mut WriteCtx<'_>, args: &[Bytes], readonly: bool) -> Frame {
    let key = &args[1];
    let (mut value, expiry) = tri!(string_for_write(cx, key)).unwrap_or_default();
    let mut replies = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut changed = false;
    let mut ops = 0usize;
    let mut i = 2;
    // Parse everything first: a syntax error anywhere changes nothing.
    let mut plan: Vec<(u8, FieldType, u64, i64, Overflow)> = Vec::new();
    while i < args.len() {
        ops += 1;
        if ops > BITFIELD_OPS_MAX {
            return error(format!("ERR BITFIELD takes at most {BITFIELD_OPS_MAX} sub-commands (BITFIELD_OPS_MAX)"));
        }
        let sub = args[i].to_ascii_lowercase();
        match &sub[..] {
            b"overflow" => {
                let Some(mode) = args.get(i + 1) else { return error(SYNTAX) };
                overflow = match &mode.to_ascii_lowercase()[..] {
                    b"wrap" => Overflow::Wrap,
                    b"sat" => Overflow::Sat,
                    b"fail" => Overflow::Fail,
                    _ => return error("ERR Invalid OVERFLOW type specified"),
                };
                i += 2;
            }
            b"get" | b"set" | b"incrby" => {
                let argc = if sub == b"get" { 3 } else { 4 };
                if i + argc > args.len() {
                    return error(SYNTAX);
                }
                if readonly && sub != b"get" {
                    return error("ERR BITFIELD_RO only supports the GET subcommand");
                }
                let ty = tri!(parse_field_type(&args[i + 1]));
                let off = tri!(parse_field_offset(&args[i + 2], ty));
                let n = if sub == b"get" { 0 } else { tri!(parse_i64(&args[i + 3]).ok_or_else(|| error(NOT_INTEGER))) };
                plan.push((sub[0], ty, off, n, overflow));
                i += argc;
            }
            _ => return error(SYNTAX),
        }
    }
    for (op, ty, off, n, mode) in plan {
        let old = read_field(&value, off, ty);
        match op {
            b'g' => replies.push(int(old)),
            b's' => match fit(n as i128, ty, mode) {
                Some(new) => {
                    write_field(&mut value, off, ty, new);
                    changed = true;
                    replies.push(int(old));
                }
                None => replies.push(Frame::Null),
            },
            _ => match fit(old as i128 + n as i128, ty, mode) {
                Some(new) => {
                    write_field(&mut value, off, ty, new);
                    changed = true;
                    replies.push(int(new));
                }
                None => replies.push(Frame::Null),
            },
        }
    }
    if changed {
        set_value(cx, key, value, expiry);
    }
    Frame::Array(replies)
}

pub(super) fn bitfield(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    bitfield_generic(cx, args, false)
}

pub(super) fn bitfield_ro(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    // Runs the same parser on a scratch copy of the store's view: a
    // read-only command must not emit, and with GET only it never does.
    let v = tri!(string_of(cx, &args[1])).map_or(&[][..], |(v, _)| v);
    let mut replies = Vec::new();
    let mut i = 2;
    while i < args.len() {
        if replies.len() >= BITFIELD_OPS_MAX {
            return error(format!("ERR BITFIELD takes at most {BITFIELD_OPS_MAX} sub-commands (BITFIELD_OPS_MAX)"));
        }
        if args[i].to_ascii_lowercase() != b"get" {
            return error("ERR BITFIELD_RO only supports the GET subcommand");
        }
        if i + 3 > args.len() {
            return error(SYNTAX);
        }
        let ty = tri!(parse_field_type(&args[i + 1]));
        let off = tri!(parse_field_offset(&args[i + 2], ty));
        replies.push(int(read_field(v, off, ty)));
        i += 3;
    }
    Frame::Array(replies)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Harness;
    use super::*;

    fn b(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn e(f: Frame) -> String {
        match f {
            Frame::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn setex_and_psetex_log_an_absolute_expiry_and_refuse_non_positive_times() {
        let mut h = Harness::new();
        assert_eq!(h.run("SETEX k 10 v"), ok());
        assert_eq!(h.run("PTTL k"), int(10_000));
        assert!(matches!(h.log.last(), Some(Effect::Set { expire_at_ms: Some(at), .. }) if *at == 1_010_000));
        assert_eq!(h.run("PSETEX k 5 v"), ok());
        assert_eq!(h.run("PTTL k"), int(5));
        assert_eq!(e(h.run("SETEX k 0 v")), "ERR invalid expire time in 'setex' command");
        assert_eq!(e(h.run("PSETEX k -1 v")), "ERR invalid expire time in 'psetex' command");
        assert_eq!(e(h.run("SETEX k x v")), NOT_INTEGER);
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn getex_changes_the_expiry_and_getset_drops_it() {
        let mut h = Harness::new();
        h.run("SET k v EX 100");
        assert_eq!(h.run("GETEX k"), b("v"));
        assert_eq!(h.run("TTL k"), int(100));
        assert_eq!(h.run("GETEX k PX 500"), b("v"));
        assert_eq!(h.run("PTTL k"), int(500));
        assert_eq!(h.run("GETEX k PERSIST"), b("v"));
        assert_eq!(h.run("PTTL k"), int(-1));
        assert_eq!(h.run("GETEX k EXAT 1"), b("v"));
        assert_eq!(h.run("EXISTS k"), int(0));
        assert_eq!(h.run("GETEX nope EX 1"), Frame::Null);
        assert_eq!(e(h.run("GETEX k EX 1 PX 2")), SYNTAX);
        h.run("SET k v EX 100");
        assert_eq!(h.run("GETSET k w"), b("v"));
        assert_eq!(h.run("TTL k"), int(-1));
        assert_eq!(h.run("GETSET new x"), Frame::Null);
        h.run("SADD s a");
        assert_eq!(e(h.run("GETSET s x")), WRONGTYPE);
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn msetnx_sets_all_or_nothing() {
        let mut h = Harness::new();
        assert_eq!(h.run("MSETNX a 1 b 2"), int(1));
        assert_eq!(h.run("MSETNX b 3 c 4"), int(0));
        assert_eq!(h.run("EXISTS c"), int(0));
        assert_eq!(h.run("GET b"), b("2"));
        assert_eq!(e(h.run("MSETNX a 1 b")), "ERR wrong number of arguments for 'msetnx' command");
    }

    #[test]
    fn incrbyfloat_logs_the_number_it_produced_and_keeps_the_ttl() {
        let mut h = Harness::new();
        h.run("SET f 10.5 EX 100");
        assert_eq!(h.run("INCRBYFLOAT f 0.1"), b("10.6"));
        assert_eq!(h.run("INCRBYFLOAT f -5"), b("5.6"));
        assert_eq!(h.run("TTL f"), int(100));
        assert_eq!(h.run("INCRBYFLOAT n 3"), b("3"));
        assert_eq!(h.run("INCRBYFLOAT n 2.0e2"), b("203"));
        assert!(matches!(h.log.last(), Some(Effect::Set { value, .. }) if &value[..] == b"203"));
        h.run("SET s abc");
        assert_eq!(e(h.run("INCRBYFLOAT s 1")), "ERR value is not a valid float");
        assert_eq!(e(h.run("INCRBYFLOAT n x")), "ERR value is not a valid float");
        h.run("SET big 1.7e308");
        assert_eq!(e(h.run("INCRBYFLOAT big 1.7e308")), "ERR increment would produce NaN or Infinity");
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn getrange_and_setrange_follow_redis_index_rules() {
        let mut h = Harness::new();
        h.run("SET k Hello-World");
        assert_eq!(h.run("GETRANGE k 0 4"), b("Hello"));
        assert_eq!(h.run("GETRANGE k -5 -1"), b("World"));
        assert_eq!(h.run("GETRANGE k 5 3"), b(""));
        assert_eq!(h.run("GETRANGE k -1 -5"), b(""));
        assert_eq!(h.run("GETRANGE k 0 100"), b("Hello-World"));
        assert_eq!(h.run("GETRANGE k -100 2"), b("Hel"));
        assert_eq!(h.run("GETRANGE nope 0 -1"), b(""));
        assert_eq!(h.run("SETRANGE k 6 Redis"), int(11));
        assert_eq!(h.run("GET k"), b("Hello-Redis"));
        assert_eq!(h.run("SETRANGE pad 3 x"), int(4));
        assert_eq!(h.run("GET pad"), Frame::Bulk(Bytes::from_static(b"\0\0\0x")));
        assert_eq!(h.run("SETRANGE empty 5 "), int(0));
        assert_eq!(h.run("EXISTS empty"), int(0));
        assert_eq!(e(h.run("SETRANGE k -1 x")), "ERR offset is out of range");
        assert_eq!(e(h.run("SETRANGE k 536870911 xx")), TOO_BIG);
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn lcs_string_len_and_idx() {
        let mut h = Harness::new();
        h.run("MSET a ohmytext b mynewtext");
        assert_eq!(h.run("LCS a b"), b("mytext"));
        assert_eq!(h.run("LCS a b LEN"), int(6));
        let Frame::Map(m) = h.run("LCS a b IDX MINMATCHLEN 4 WITHMATCHLEN") else { panic!() };
        let r = |s, e| Frame::Array(vec![int(s), int(e)]);
        assert_eq!(m[0].1, Frame::Array(vec![Frame::Array(vec![r(4, 7), r(5, 8), int(4)])]));
        assert_eq!(m[1].1, int(6));
        let Frame::Map(m) = h.run("LCS a b IDX") else { panic!() };
        assert_eq!(
            m[0].1,
            Frame::Array(vec![Frame::Array(vec![r(4, 7), r(5, 8)]), Frame::Array(vec![r(2, 3), r(0, 1)])])
        );
        h.run("SADD s x");
        assert_eq!(e(h.run("LCS a s")), "ERR The specified keys must contain string values");
    }

    #[test]
    fn setbit_getbit_bitcount_bitpos() {
        let mut h = Harness::new();
        assert_eq!(h.run("SETBIT k 7 1"), int(0));
        assert_eq!(h.run("SETBIT k 7 1"), int(1));
        assert_eq!(h.run("GET k"), Frame::Bulk(Bytes::from_static(b"\x01")));
        assert_eq!(h.run("GETBIT k 7"), int(1));
        assert_eq!(h.run("GETBIT k 100"), int(0));
        assert_eq!(e(h.run("SETBIT k 7 2")), "ERR bit is not an integer or out of range");
        assert_eq!(e(h.run("SETBIT k -1 1")), "ERR bit offset is not an integer or out of range");
        assert_eq!(e(h.run("SETBIT k 4294967296 1")), "ERR bit offset is not an integer or out of range");
        h.run("SET s foobar");
        assert_eq!(h.run("BITCOUNT s"), int(26));
        assert_eq!(h.run("BITCOUNT s 0 0"), int(4));
        assert_eq!(h.run("BITCOUNT s 1 1"), int(6));
        assert_eq!(h.run("BITCOUNT s 1 1 BYTE"), int(6));
        assert_eq!(h.run("BITCOUNT s 5 30 BIT"), int(17));
        assert_eq!(h.run("BITCOUNT nope"), int(0));
        assert_eq!(e(h.run("BITCOUNT s 0")), SYNTAX);
        h.run_bytes(&[b"SET", b"p", b"\xff\xf0\x00"]);
        assert_eq!(h.run("BITPOS p 0"), int(12));
        assert_eq!(h.run("BITPOS p 1 2"), int(-1));
        assert_eq!(h.run("BITPOS p 1 1"), int(8));
        assert_eq!(h.run("BITPOS p 0 1 1 BYTE"), int(12));
        h.run_bytes(&[b"SET", b"f", b"\xff\xff"]);
        assert_eq!(h.run("BITPOS f 0"), int(16));
        assert_eq!(h.run("BITPOS f 0 0 -1"), int(-1));
        assert_eq!(h.run("BITPOS nope 0"), int(0));
        assert_eq!(h.run("BITPOS nope 1"), int(-1));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn bitop_and_or_xor_not() {
        let mut h = Harness::new();
        h.run("SET a foof");
        h.run("SET b abcdef");
        assert_eq!(h.run("BITOP AND d a b"), int(6));
        assert_eq!(h.run("GET d"), Frame::Bulk(Bytes::from_static(b"`bcd\0\0")));
        assert_eq!(h.run("BITOP OR d a b"), int(6));
        assert_eq!(h.run("GET d"), b("goofef"));
        h.run_bytes(&[b"SET", b"x", b"\x0f"]);
        assert_eq!(h.run("BITOP NOT d x"), int(1));
        assert_eq!(h.run("GET d"), Frame::Bulk(Bytes::from_static(b"\xf0")));
        assert_eq!(h.run("BITOP XOR d x x"), int(1));
        assert_eq!(h.run("GET d"), Frame::Bulk(Bytes::from_static(b"\0")));
        assert_eq!(h.run("BITOP AND d nope1 nope2"), int(0));
        assert_eq!(h.run("EXISTS d"), int(0));
        assert_eq!(e(h.run("BITOP NOT d a b")), "ERR BITOP NOT must be called with a single source key.");
        assert_eq!(e(h.run("BITOP NAND d a b")), SYNTAX);
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn bitfield_get_set_incrby_with_overflow_modes() {
        let mut h = Harness::new();
        assert_eq!(h.run("BITFIELD k SET i8 0 100 GET i8 0"), Frame::Array(vec![int(0), int(100)]));
        assert_eq!(h.run("BITFIELD k INCRBY i8 0 100"), Frame::Array(vec![int(-56)]));
        assert_eq!(h.run("BITFIELD k OVERFLOW SAT INCRBY i8 0 -100"), Frame::Array(vec![int(-128)]));
        assert_eq!(h.run("BITFIELD k OVERFLOW FAIL INCRBY i8 0 -1"), Frame::Array(vec![Frame::Null]));
        assert_eq!(h.run("BITFIELD k SET u4 #1 15 GET u4 #1 GET u8 0"), Frame::Array(vec![int(0), int(15), int(143)]));
        assert_eq!(h.run("BITFIELD k OVERFLOW WRAP INCRBY u2 100 5"), Frame::Array(vec![int(1)]));
        assert_eq!(h.run("BITFIELD_RO k GET u4 #1"), Frame::Array(vec![int(15)]));
        assert_eq!(e(h.run("BITFIELD_RO k SET u4 0 1")), "ERR BITFIELD_RO only supports the GET subcommand");
        assert!(e(h.run("BITFIELD k GET u64 0")).starts_with("ERR Invalid bitfield type"));
        assert_eq!(
            h.run("BITFIELD w SET i64 0 -1 GET i64 0 GET u63 1"),
            Frame::Array(vec![int(0), int(-1), int(i64::MAX)])
        );
        assert_eq!(h.replayed().digest(), h.store.digest());
    }
}
