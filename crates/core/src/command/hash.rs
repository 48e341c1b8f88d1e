//! Hash commands (`HSET`, `HGET`, `HINCRBYFLOAT`, `HSCAN`, ...).
//!
//! Owns the replies and row effects of the hash group: a change is logged
//! as the fields it sets (`HSet`, with resulting values, so `HINCRBY` logs
//! the number it produced) or removes (`HDel`), never as the command, and
//! proportional to the change rather than the whole hash.
//!
//! Must never: read a clock or a global RNG (`HRANDFIELD` draws from a
//! generator seeded by the caller's `now_ms`), or change the store other
//! than through [`WriteCtx::emit`].

use bytes::Bytes;

use super::{bulk, error, int, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::glob::glob_match;
use crate::resp::Frame;
use crate::store::{HashValue, ValueRef};

/// Largest `|count|` of `HRANDFIELD` with a negative count (repeats
/// allowed): bounds the reply built by one call.
pub const RANDOM_COUNT_MAX: i64 = 10_000_000;
/// Largest `COUNT` honoured by `HSCAN`.
const SCAN_COUNT_MAX: usize = 100_000;

fn hash_of<'a>(cx: &'a ReadCtx<'_>, key: &[u8]) -> Result<Option<&'a HashValue>, Frame> {
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::Hash(h), _)) => Ok(Some(h)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

fn hash_for_write<'c>(cx: &'c mut WriteCtx<'_>, key: &Bytes) -> Result<Option<&'c HashValue>, Frame> {
    cx.purge_expired(key);
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::Hash(h), _)) => Ok(Some(h)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

pub(super) fn hset(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    if !args.len().is_multiple_of(2) {
        return super::wrong_arity(&String::from_utf8_lossy(&args[0]).to_ascii_lowercase());
    }
    let key = &args[1];
    let existing = tri!(hash_for_write(cx, key));
    let mut added = 0;
    let mut seen = hashbrown::HashSet::with_capacity(args.len() / 2);
    for pair in args[2..].chunks(2) {
        if seen.insert(&pair[0][..]) && !existing.is_some_and(|h| h.contains_key(&pair[0][..])) {
            added += 1;
        }
    }
    let fields = args[2..].chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect();
    cx.emit(Effect::HSet { key: key.clone(), fields });
    if args[0].eq_ignore_ascii_case(b"hmset") {
        super::ok()
    } else {
        int(added)
    }
}

pub(super) fn hsetnx(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let key = &args[1];
    if tri!(hash_for_write(cx, key)).is_some_and(|h| h.contains_key(&args[2][..])) {
        return int(0);
    }
    cx.emit(Effect::HSet { key: key.clone(), fields: vec![(args[2].clone(), args[3].clone())] });
    int(1)
}

pub(super) fn hdel(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let key = &args[1];
    let Some(h) = tri!(hash_for_write(cx, key)) else { return int(0) };
    let mut seen = hashbrown::HashSet::new();
    let gone: Vec<Bytes> =
        args[2..].iter().filter(|f| h.contains_key(&f[..]) && seen.insert(&f[..])).cloned().collect();
    let n = gone.len() as i64;
    if n > 0 {
        cx.emit(Effect::HDel { key: key.clone(), fields: gone });
    }
    int(n)
}

pub(super) fn hincrby(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(delta) = parse_i64(&args[3]) else { return error(NOT_INTEGER) };
    let key = &args[1];
    let current = match tri!(hash_for_write(cx, key)).and_then(|h| h.get(&args[2][..])) {
        None => 0,
        Some(v) => match parse_i64(v) {
            Some(n) => n,
            None => return error("ERR hash value is not an integer"),
        },
    };
    let Some(next) = current.checked_add(delta) else {
        return error("ERR increment or decrement would overflow");
    };
    cx.emit(Effect::HSet { key: key.clone(), fields: vec![(args[2].clone(), Bytes::from(next.to_string()))] });
    int(next)
}

/// Parses a Redis float argument: no spaces, no NaN.
pub(super) fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return None;
    }
    let v: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

/// Formats a float the way Redis's `INCRBYFLOAT` does: plain decimal, no
/// exponent, no trailing zeros.
pub(super) fn format_f64(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e17 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

pub(super) fn hincrbyfloat(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(delta) = parse_f64(&args[3]) else { return error("ERR value is not a valid float") };
    if !delta.is_finite() {
        return error("ERR value is NaN or Infinity");
    }
    let key = &args[1];
    let current = match tri!(hash_for_write(cx, key)).and_then(|h| h.get(&args[2][..])) {
        None => 0.0,
        Some(v) => match parse_f64(v) {
            Some(n) => n,
            None => return error("ERR hash value is not a float"),
        },
    };
    let next = current + delta;
    if !next.is_finite() {
        return error("ERR increment would produce NaN or Infinity");
    }
    let text = Bytes::from(format_f64(next));
    // Row effect: the resulting text, so replicas never redo float math.
    cx.emit(Effect::HSet { key: key.clone(), fields: vec![(args[2].clone(), text.clone())] });
    Frame::Bulk(text)
}

pub(super) fn hget(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    match tri!(hash_of(cx, &args[1])).and_then(|h| h.get(&args[2][..])) {
        Some(v) => bulk(v),
        None => Frame::Null,
    }
}

pub(super) fn hmget(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let h = tri!(hash_of(cx, &args[1]));
    Frame::Array(args[2..].iter().map(|f| h.and_then(|h| h.get(&f[..])).map_or(Frame::Null, bulk)).collect())
}

pub(super) fn hgetall(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let h = tri!(hash_of(cx, &args[1]));
    Frame::Map(h.map(|h| h.iter().map(|(f, v)| (bulk(f), bulk(v))).collect()).unwrap_or_default())
}

pub(super) fn hkeys(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let h = tri!(hash_of(cx, &args[1]));
    Frame::Array(h.map(|h| h.keys().map(bulk).collect()).unwrap_or_default())
}

pub(super) fn hvals(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let h = tri!(hash_of(cx, &args[1]));
    Frame::Array(h.map(|h| h.values().map(bulk).collect()).unwrap_or_default())
}

pub(super) fn hlen(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(tri!(hash_of(cx, &args[1])).map_or(0, |h| h.len() as i64))
}

pub(super) fn hexists(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(tri!(hash_of(cx, &args[1])).is_some_and(|h| h.contains_key(&args[2][..])) as i64)
}

pub(super) fn hstrlen(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(tri!(hash_of(cx, &args[1])).and_then(|h| h.get(&args[2][..])).map_or(0, |v| v.len() as i64))
}

/// A small deterministic generator (splitmix64) for the random reads.
pub(super) struct Rng(u64);

impl Rng {
    /// Seeded from the caller's time, the key and the store's call
    /// counter, so two calls in the same millisecond differ.
    pub(super) fn for_read(store: &crate::store::Store, now_ms: u64, key: &[u8]) -> Rng {
        let nonce = store.call_nonce().wrapping_mul(0xD6E8_FEB8_6659_FD93);
        Rng(now_ms ^ nonce ^ xxhash_rust::xxh3::xxh3_64(key).rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Picks elements for the `*RANDMEMBER` / `HRANDFIELD` count forms:
/// `count >= 0` distinct (at most `len`), `count < 0` `|count|` with
/// repeats. Returns indexes into `0..len`.
pub(super) fn random_indexes(rng: &mut Rng, len: usize, count: i64) -> Result<Vec<usize>, Frame> {
    if count < -RANDOM_COUNT_MAX {
        return Err(error("ERR value is out of range"));
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    if count < 0 {
        return Ok((0..count.unsigned_abs()).map(|_| rng.below(len)).collect());
    }
    let mut all: Vec<usize> = (0..len).collect();
    let take = (count as usize).min(len);
    for i in 0..take {
        let j = i + rng.below(len - i);
        all.swap(i, j);
    }
    all.truncate(take);
    Ok(all)
}

pub(super) fn hrandfield(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let h = tri!(hash_of(cx, &args[1]));
    let mut rng = Rng::for_read(cx.store, cx.now_ms, &args[1]);
    let Some(raw_count) = args.get(2) else {
        return match h {
            Some(h) if !h.is_empty() => bulk(h.iter().nth(rng.below(h.len())).map(|(f, _)| f).expect("in range")),
            _ => Frame::Null,
        };
    };
    let Some(count) = parse_i64(raw_count) else { return error(NOT_INTEGER) };
    let with_values = match args.get(3) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case(b"withvalues") && args.len() == 4 => true,
        Some(_) => return error(SYNTAX),
    };
    let Some(h) = h else { return Frame::Array(Vec::new()) };
    let entries: Vec<(&[u8], &[u8])> = h.iter().collect();
    let picks = tri!(random_indexes(&mut rng, entries.len(), count));
    if with_values {
        return Frame::Pairs(picks.into_iter().map(|i| (bulk(entries[i].0), bulk(entries[i].1))).collect());
    }
    Frame::Array(picks.into_iter().map(|i| bulk(entries[i].0)).collect())
}

/// Parses `cursor [MATCH p] [COUNT n]` of the `*SCAN` family.
pub(super) fn parse_scan_args(args: &[Bytes]) -> Result<(usize, Option<&Bytes>, usize), Frame> {
    let cursor = std::str::from_utf8(&args[0])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| error("ERR invalid cursor"))?;
    let (mut pattern, mut count) = (None, 10usize);
    let mut i = 1;
    while i < args.len() {
        let Some(val) = args.get(i + 1) else { return Err(error(SYNTAX)) };
        match &args[i].to_ascii_lowercase()[..] {
            b"match" => pattern = Some(val),
            b"count" => match parse_i64(val) {
                Some(n) if n >= 1 => count = (n as usize).min(SCAN_COUNT_MAX),
                Some(_) => return Err(error(SYNTAX)),
                None => return Err(error(NOT_INTEGER)),
            },
            _ => return Err(error(SYNTAX)),
        }
        i += 2;
    }
    Ok((usize::try_from(cursor).unwrap_or(usize::MAX), pattern, count))
}

/// `HSCAN`: the cursor is a position in the hash's iteration order. A hash
/// that does not grow or shrink during the scan is returned exactly once;
/// one that is resized may return fields twice or miss fields added or
/// removed meanwhile (weaker than Redis's reverse-binary cursor).
pub(super) fn hscan(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let h = tri!(hash_of(cx, &args[1]));
    let (cursor, pattern, count) = tri!(parse_scan_args(&args[2..]));
    let mut out = Vec::new();
    let mut next = 0;
    if let Some(h) = h {
        let end = cursor.saturating_add(count);
        for (f, v) in h.iter().skip(cursor).take(count) {
            if pattern.is_none_or(|p| glob_match(p, f)) {
                out.push(bulk(f));
                out.push(bulk(v));
            }
        }
        if end < h.len() {
            next = end;
        }
    }
    Frame::Array(vec![Frame::Bulk(Bytes::from(next.to_string())), Frame::Array(out)])
}

#[cfg(test)]
mod tests {
    use super::super::tests::Harness;
    use super::*;

    #[test]
    fn hset_counts_new_fields_and_logs_only_the_fields_it_sets() {
        let mut h = Harness::new();
        assert_eq!(h.run("HSET h a 1 b 2"), int(2));
        assert_eq!(h.run("HSET h a 3 c 4 c 5"), int(1));
        assert_eq!(h.run("HGET h a"), bulk(b"3"));
        assert_eq!(h.run("HGET h c"), bulk(b"5"));
        assert_eq!(h.run("HLEN h"), int(3));
        assert_eq!(h.run("HMSET h d 1"), super::super::ok());
        assert_eq!(h.run("HSET h a"), error("ERR wrong number of arguments for 'hset' command"));
        assert!(matches!(h.log.last(), Some(Effect::HSet { fields, .. }) if fields.len() == 1));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn hdel_removes_fields_and_the_empty_hash() {
        let mut h = Harness::new();
        h.run("HSET h a 1 b 2");
        assert_eq!(h.run("HDEL h a a x"), int(1));
        assert_eq!(h.run("HEXISTS h a"), int(0));
        assert_eq!(h.run("HDEL h b"), int(1));
        assert_eq!(h.run("EXISTS h"), int(0));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn hincrby_logs_the_result_and_refuses_overflow_and_non_integers() {
        let mut h = Harness::new();
        assert_eq!(h.run("HINCRBY h n 5"), int(5));
        assert_eq!(h.run("HINCRBY h n -7"), int(-2));
        h.run("HSET h s abc");
        assert_eq!(h.run("HINCRBY h s 1"), error("ERR hash value is not an integer"));
        h.run("HSET h big 9223372036854775807");
        assert_eq!(h.run("HINCRBY h big 1"), error("ERR increment or decrement would overflow"));
        assert_eq!(h.run("HINCRBYFLOAT h f 10.5"), bulk(b"10.5"));
        assert_eq!(h.run("HINCRBYFLOAT h f 0.5"), bulk(b"11"));
        assert_eq!(h.run("HINCRBYFLOAT h s 1"), error("ERR hash value is not a float"));
        assert_eq!(h.run("HINCRBYFLOAT h f x"), error("ERR value is not a valid float"));
        assert!(matches!(h.log.last(), Some(Effect::HSet { fields, .. }) if fields[0].1 == "11"));
    }

    #[test]
    fn hash_commands_on_a_string_answer_wrongtype() {
        let mut h = Harness::new();
        h.run("SET s v");
        for cmd in ["HSET s a 1", "HGET s a", "HGETALL s", "HDEL s a", "HINCRBY s a 1", "HLEN s", "HRANDFIELD s"] {
            assert_eq!(h.run(cmd), error(WRONGTYPE), "{cmd}");
        }
        h.run("HSET h a 1");
        assert_eq!(h.run("GET h"), error(WRONGTYPE));
        assert_eq!(h.run("TYPE h"), Frame::Simple("hash".into()));
    }

    #[test]
    fn hrandfield_distinct_and_repeating_forms() {
        let mut h = Harness::new();
        h.run("HSET h a 1 b 2 c 3");
        let Frame::Array(all) = h.run("HRANDFIELD h 10") else { panic!() };
        assert_eq!(all.len(), 3);
        let Frame::Array(rep) = h.run("HRANDFIELD h -10 WITHVALUES") else { panic!() };
        assert_eq!(rep.len(), 20);
        assert_eq!(h.run("HRANDFIELD h -9223372036854770000 WITHVALUES"), error("ERR value is out of range"));
        assert_eq!(h.run("HRANDFIELD missing"), Frame::Null);
    }

    #[test]
    fn hscan_returns_every_field_once_over_a_stable_hash() {
        let mut h = Harness::new();
        for i in 0..100 {
            h.run(&format!("HSET h f{i} v"));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = "0".to_string();
        loop {
            let Frame::Array(parts) = h.run(&format!("HSCAN h {cursor} COUNT 7")) else { panic!() };
            let Frame::Bulk(c) = &parts[0] else { panic!() };
            let Frame::Array(items) = &parts[1] else { panic!() };
            for pair in items.chunks(2) {
                assert!(seen.insert(format!("{:?}", pair[0])));
            }
            cursor = String::from_utf8_lossy(c).into_owned();
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
    }
}
