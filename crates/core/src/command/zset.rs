//! Sorted-set commands (`ZADD`, `ZRANGE` by rank/score/lex, `ZPOPMIN`,
//! `ZUNIONSTORE`, `BZPOPMIN`, ...).
//!
//! Owns the replies and row effects of the sorted-set group: a change is
//! logged as the members' resulting scores (`ZAdd`, so `ZINCRBY` logs the
//! score it produced) or as removed members (`ZRem`); the `*STORE` forms
//! log `Del` of the destination followed by the whole result.
//!
//! Must never: read a clock or a global RNG, block (the node waits for
//! the blocking forms), or change the store other than through
//! [`WriteCtx::emit`].

use bytes::Bytes;

use super::hash::{parse_f64, random_indexes, Rng};
use super::{bulk, error, int, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::resp::Frame;
use crate::store::{Member, Score, ValueRef, ZSetValue};

/// Most source keys of `ZUNION`/`ZINTER`/`ZDIFF` (bounds one command).
pub const ZSET_SOURCES_MAX: usize = 10_000;

fn zset_of<'a>(cx: &'a ReadCtx<'_>, key: &[u8]) -> Result<Option<&'a ZSetValue>, Frame> {
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::ZSet(z), _)) => Ok(Some(z)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

fn zset_for_write<'c>(cx: &'c mut WriteCtx<'_>, key: &Bytes) -> Result<Option<&'c ZSetValue>, Frame> {
    cx.purge_expired(key);
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::ZSet(z), _)) => Ok(Some(z)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

/// A score as Redis prints it.
pub(super) fn fmt_score(v: f64) -> Bytes {
    if v.is_infinite() {
        return Bytes::from_static(if v > 0.0 { b"inf" } else { b"-inf" });
    }
    Bytes::from(super::hash::format_f64(v))
}

/// A score reply: a RESP3 double, in RESP2 a bulk string in the same
/// `%.17g`-style text Redis prints.
fn score_frame(v: f64) -> Frame {
    Frame::Double(v)
}

pub(super) fn zadd(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (mut nx, mut xx, mut gt, mut lt, mut ch, mut incr) = (false, false, false, false, false, false);
    let mut i = 2;
    while i < args.len() {
        match &args[i].to_ascii_lowercase()[..] {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            b"ch" => ch = true,
            b"incr" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let pairs = &args[i..];
    if pairs.is_empty() || !pairs.len().is_multiple_of(2) {
        return error(SYNTAX);
    }
    if nx && xx {
        return error("ERR XX and NX options at the same time are not compatible");
    }
    if (gt && lt) || (nx && (gt || lt)) {
        return error("ERR GT, LT, and/or NX options at the same time are not compatible");
    }
    if incr && pairs.len() > 2 {
        return error("ERR INCR option supports a single increment-element pair");
    }
    let mut scores = Vec::with_capacity(pairs.len() / 2);
    for p in pairs.chunks(2) {
        match parse_f64(&p[0]) {
            Some(s) => scores.push((s, p[1].clone())),
            None => return error("ERR value is not a valid float"),
        }
    }
    let key = &args[1];
    let z = tri!(zset_for_write(cx, key));
    let mut out: Vec<(u64, Bytes)> = Vec::new();
    let (mut added, mut changed) = (0, 0);
    let mut seen: hashbrown::HashMap<Bytes, f64> = hashbrown::HashMap::new();
    let mut incr_result = None;
    for (score, member) in scores {
        let current = seen.get(&member).copied().or_else(|| z.and_then(|z| z.score(&member[..])));
        let new = match current {
            None if xx => continue,
            None => score,
            Some(_) if nx => continue,
            Some(cur) => {
                let new = if incr { cur + score } else { score };
                if new.is_nan() {
                    return error("ERR resulting score is not a number (NaN)");
                }
                if (gt && new <= cur) || (lt && new >= cur) {
                    continue;
                }
                new
            }
        };
        if current.is_none() {
            added += 1;
        } else if current != Some(new) {
            changed += 1;
        }
        incr_result = Some(new);
        if current != Some(new) {
            seen.insert(member.clone(), new);
            out.push((new.to_bits(), member));
        }
    }
    if !out.is_empty() {
        cx.emit(Effect::ZAdd { key: key.clone(), members: out });
    }
    if incr {
        return incr_result.map_or(Frame::Null, score_frame);
    }
    int(if ch { added + changed } else { added })
}

pub(super) fn zincrby(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(delta) = parse_f64(&args[2]) else { return error("ERR value is not a valid float") };
    let key = &args[1];
    let cur = tri!(zset_for_write(cx, key)).and_then(|z| z.score(&args[3][..])).unwrap_or(0.0);
    let new = cur + delta;
    if new.is_nan() {
        return error("ERR resulting score is not a number (NaN)");
    }
    cx.emit(Effect::ZAdd { key: key.clone(), members: vec![(new.to_bits(), args[3].clone())] });
    score_frame(new)
}

pub(super) fn zrem(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let key = &args[1];
    let Some(z) = tri!(zset_for_write(cx, key)) else { return int(0) };
    let mut seen = hashbrown::HashSet::new();
    let gone: Vec<Bytes> = args[2..].iter().filter(|m| z.contains(&m[..]) && seen.insert(&m[..])).cloned().collect();
    let n = gone.len() as i64;
    if n > 0 {
        cx.emit(Effect::ZRem { key: key.clone(), members: gone });
    }
    int(n)
}

pub(super) fn zcard(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(tri!(zset_of(cx, &args[1])).map_or(0, |z| z.len() as i64))
}

pub(super) fn zscore(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    tri!(zset_of(cx, &args[1])).and_then(|z| z.score(&args[2][..])).map_or(Frame::Null, score_frame)
}

pub(super) fn zmscore(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let z = tri!(zset_of(cx, &args[1]));
    Frame::Array(args[2..].iter().map(|m| z.and_then(|z| z.score(&m[..])).map_or(Frame::Null, score_frame)).collect())
}

fn rank_generic(cx: &ReadCtx<'_>, args: &[Bytes], rev: bool) -> Frame {
    let with_score = match args.get(3) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case(b"withscore") && args.len() == 4 => true,
        Some(_) => return error(SYNTAX),
    };
    let Some(z) = tri!(zset_of(cx, &args[1])) else {
        return if with_score { Frame::NullArray } else { Frame::Null };
    };
    let Some((below, score)) = z.rank(&args[2][..]) else {
        return if with_score { Frame::NullArray } else { Frame::Null };
    };
    let rank = if rev { z.len() - 1 - below } else { below } as i64;
    if with_score {
        Frame::Array(vec![int(rank), score_frame(score)])
    } else {
        int(rank)
    }
}

pub(super) fn zrank(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    rank_generic(cx, args, false)
}

pub(super) fn zrevrank(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    rank_generic(cx, args, true)
}

/// One end of a score range: value and exclusivity.
#[derive(Clone, Copy)]
struct ScoreBound {
    value: f64,
    exclusive: bool,
}

fn parse_score_bound(b: &[u8]) -> Option<ScoreBound> {
    let (exclusive, rest) = match b.first() {
        Some(b'(') => (true, &b[1..]),
        _ => (false, b),
    };
    parse_f64(rest).map(|value| ScoreBound { value, exclusive })
}

fn score_in(s: f64, min: ScoreBound, max: ScoreBound) -> bool {
    (if min.exclusive { s > min.value } else { s >= min.value })
        && (if max.exclusive { s < max.value } else { s <= max.value })
}

/// One end of a lex range.
#[derive(Clone)]
enum LexBound {
    Min,
    Max,
    Incl(Vec<u8>),
    Excl(Vec<u8>),
}

fn parse_lex_bound(b: &[u8]) -> Option<LexBound> {
    match b.first()? {
        b'-' if b.len() == 1 => Some(LexBound::Min),
        b'+' if b.len() == 1 => Some(LexBound::Max),
        b'[' => Some(LexBound::Incl(b[1..].to_vec())),
        b'(' => Some(LexBound::Excl(b[1..].to_vec())),
        _ => None,
    }
}

fn lex_above_min(m: &[u8], min: &LexBound) -> bool {
    match min {
        LexBound::Min => true,
        LexBound::Max => false,
        LexBound::Incl(v) => m >= &v[..],
        LexBound::Excl(v) => m > &v[..],
    }
}

fn lex_below_max(m: &[u8], max: &LexBound) -> bool {
    match max {
        LexBound::Min => false,
        LexBound::Max => true,
        LexBound::Incl(v) => m <= &v[..],
        LexBound::Excl(v) => m < &v[..],
    }
}

/// What a `ZRANGE`-family call selects.
enum RangeBy {
    Rank(i64, i64),
    Score(ScoreBound, ScoreBound),
    Lex(LexBound, LexBound),
}

/// The members selected, in reply order, as (member, score).
fn select<'z>(z: &'z ZSetValue, by: &RangeBy, rev: bool, limit: Option<(i64, i64)>) -> Vec<(&'z [u8], f64)> {
    let iter: Box<dyn Iterator<Item = &(Score, Member)>> =
        if rev { Box::new(z.order().iter().rev()) } else { Box::new(z.order().iter()) };
    let mut out: Vec<(&[u8], f64)> = match by {
        RangeBy::Rank(start, stop) => {
            let r = super::list::range_of(*start, *stop, z.len());
            iter.skip(r.start).take(r.len()).map(|(s, m)| (&m[..], s.0)).collect()
        }
        RangeBy::Score(min, max) => {
            iter.filter(|(s, _)| score_in(s.0, *min, *max)).map(|(s, m)| (&m[..], s.0)).collect()
        }
        RangeBy::Lex(min, max) => {
            iter.filter(|(_, m)| lex_above_min(m, min) && lex_below_max(m, max)).map(|(s, m)| (&m[..], s.0)).collect()
        }
    };
    if let Some((offset, count)) = limit {
        if offset < 0 {
            return Vec::new();
        }
        let offset = offset as usize;
        out = out.into_iter().skip(offset).take(if count < 0 { usize::MAX } else { count as usize }).collect();
    }
    out
}

fn reply_members(items: &[(&[u8], f64)], with_scores: bool) -> Frame {
    if with_scores {
        return Frame::Pairs(
            items.iter().map(|(m, s)| (Frame::Bulk(Bytes::copy_from_slice(m)), score_frame(*s))).collect(),
        );
    }
    Frame::Array(items.iter().map(|(m, _)| Frame::Bulk(Bytes::copy_from_slice(m))).collect())
}

/// Parsed `ZRANGE`-family arguments.
struct RangeArgs {
    by: RangeBy,
    rev: bool,
    limit: Option<(i64, i64)>,
    with_scores: bool,
}

/// Parses `min max [BYSCORE|BYLEX] [REV] [LIMIT o c] [WITHSCORES]` with the
/// legacy command's fixed `by`/`rev` (`None`: the modern `ZRANGE`).
fn parse_range(args: &[Bytes], legacy: Option<(u8, bool)>) -> Result<RangeArgs, Frame> {
    let (mut kind, mut rev) = legacy.unwrap_or((b'r', false));
    let (mut limit, mut with_scores) = (None, false);
    let mut i = 2;
    while i < args.len() {
        match &args[i].to_ascii_lowercase()[..] {
            b"withscores" if kind != b'l' => with_scores = true,
            b"limit" => {
                let (Some(o), Some(c)) = (args.get(i + 1), args.get(i + 2)) else { return Err(error(SYNTAX)) };
                let (Some(o), Some(c)) = (parse_i64(o), parse_i64(c)) else { return Err(error(NOT_INTEGER)) };
                limit = Some((o, c));
                i += 2;
            }
            b"byscore" if legacy.is_none() && kind == b'r' => kind = b's',
            b"bylex" if legacy.is_none() && kind == b'r' => kind = b'l',
            b"rev" if legacy.is_none() => rev = true,
            _ => return Err(error(SYNTAX)),
        }
        i += 1;
    }
    if limit.is_some() && kind == b'r' {
        return Err(error("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"));
    }
    if with_scores && kind == b'l' {
        return Err(error("ERR syntax error, WITHSCORES not supported in combination with BYLEX"));
    }
    // REV and the legacy *REV* forms take max before min.
    let (a, b) = if rev && kind != b'r' { (&args[1], &args[0]) } else { (&args[0], &args[1]) };
    let by = match kind {
        b'r' => match (parse_i64(a), parse_i64(b)) {
            (Some(s), Some(e)) => RangeBy::Rank(s, e),
            _ => return Err(error(NOT_INTEGER)),
        },
        b's' => match (parse_score_bound(a), parse_score_bound(b)) {
            (Some(min), Some(max)) => RangeBy::Score(min, max),
            _ => return Err(error("ERR min or max is not a float")),
        },
        _ => match (parse_lex_bound(a), parse_lex_bound(b)) {
            (Some(min), Some(max)) => RangeBy::Lex(min, max),
            _ => return Err(error("ERR min or max not valid string range item")),
        },
    };
    Ok(RangeArgs { by, rev, limit, with_scores })
}

fn range_generic(cx: &ReadCtx<'_>, args: &[Bytes], legacy: Option<(u8, bool)>) -> Frame {
    let r = tri!(parse_range(&args[2..], legacy));
    let Some(z) = tri!(zset_of(cx, &args[1])) else { return Frame::Array(Vec::new()) };
    reply_members(&select(z, &r.by, r.rev, r.limit), r.with_scores)
}

pub(super) fn zrange(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    range_generic(cx, args, None)
}
pub(super) fn zrevrange(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    range_generic(cx, args, Some((b'r', true)))
}
pub(super) fn zrangebyscore(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    range_generic(cx, args, Some((b's', false)))
}
pub(super) fn zrevrangebyscore(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    range_generic(cx, args, Some((b's', true)))
}
pub(super) fn zrangebylex(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    range_generic(cx, args, Some((b'l', false)))
}
pub(super) fn zrevrangebylex(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    range_generic(cx, args, Some((b'l', true)))
}

pub(super) fn zrangestore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let r = tri!(parse_range(&args[3..], None));
    if r.with_scores {
        return error(SYNTAX);
    }
    cx.purge_expired(&args[2]);
    let picked: Vec<(u64, Bytes)> = {
        let read = cx.read();
        match tri!(zset_of(&read, &args[2])) {
            Some(z) => select(z, &r.by, r.rev, r.limit)
                .into_iter()
                .map(|(m, s)| (s.to_bits(), Bytes::copy_from_slice(m)))
                .collect(),
            None => Vec::new(),
        }
    };
    store_result(cx, &args[1], picked)
}

/// Replaces `dst` with a sorted set of `members` (deleted if empty).
fn store_result(cx: &mut WriteCtx<'_>, dst: &Bytes, members: Vec<(u64, Bytes)>) -> Frame {
    cx.purge_expired(dst);
    let n = members.len() as i64;
    if cx.store.get(dst, cx.now_ms).is_some() {
        cx.emit(Effect::Del { key: dst.clone() });
    }
    if n > 0 {
        cx.emit(Effect::ZAdd { key: dst.clone(), members });
    }
    int(n)
}

fn count_generic(cx: &ReadCtx<'_>, args: &[Bytes], lex: bool) -> Frame {
    let by = if lex {
        match (parse_lex_bound(&args[2]), parse_lex_bound(&args[3])) {
            (Some(a), Some(b)) => RangeBy::Lex(a, b),
            _ => return error("ERR min or max not valid string range item"),
        }
    } else {
        match (parse_score_bound(&args[2]), parse_score_bound(&args[3])) {
            (Some(a), Some(b)) => RangeBy::Score(a, b),
            _ => return error("ERR min or max is not a float"),
        }
    };
    let Some(z) = tri!(zset_of(cx, &args[1])) else { return int(0) };
    int(select(z, &by, false, None).len() as i64)
}

pub(super) fn zcount(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    count_generic(cx, args, false)
}
pub(super) fn zlexcount(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    count_generic(cx, args, true)
}

fn remrange(cx: &mut WriteCtx<'_>, args: &[Bytes], kind: u8) -> Frame {
    let by = match kind {
        b'r' => match (parse_i64(&args[2]), parse_i64(&args[3])) {
            (Some(a), Some(b)) => RangeBy::Rank(a, b),
            _ => return error(NOT_INTEGER),
        },
        b's' => match (parse_score_bound(&args[2]), parse_score_bound(&args[3])) {
            (Some(a), Some(b)) => RangeBy::Score(a, b),
            _ => return error("ERR min or max is not a float"),
        },
        _ => match (parse_lex_bound(&args[2]), parse_lex_bound(&args[3])) {
            (Some(a), Some(b)) => RangeBy::Lex(a, b),
            _ => return error("ERR min or max not valid string range item"),
        },
    };
    let key = &args[1];
    let Some(z) = tri!(zset_for_write(cx, key)) else { return int(0) };
    let gone: Vec<Bytes> = select(z, &by, false, None).into_iter().map(|(m, _)| Bytes::copy_from_slice(m)).collect();
    let n = gone.len() as i64;
    if n > 0 {
        cx.emit(Effect::ZRem { key: key.clone(), members: gone });
    }
    int(n)
}

pub(super) fn zremrangebyrank(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    remrange(cx, args, b'r')
}
pub(super) fn zremrangebyscore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    remrange(cx, args, b's')
}
pub(super) fn zremrangebylex(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    remrange(cx, args, b'l')
}

/// Pops up to `count` lowest (`max` false) or highest members of `key`.
fn pop_members(cx: &mut WriteCtx<'_>, key: &Bytes, max: bool, count: usize) -> Result<Vec<(Bytes, f64)>, Frame> {
    let Some(z) = zset_for_write(cx, key)? else { return Ok(Vec::new()) };
    let iter: Box<dyn Iterator<Item = &(Score, Member)>> =
        if max { Box::new(z.order().iter().rev()) } else { Box::new(z.order().iter()) };
    let picked: Vec<(Bytes, f64)> = iter.take(count).map(|(s, m)| (Bytes::copy_from_slice(m), s.0)).collect();
    if !picked.is_empty() {
        cx.emit(Effect::ZRem { key: key.clone(), members: picked.iter().map(|(m, _)| m.clone()).collect() });
    }
    Ok(picked)
}

fn zpop(cx: &mut WriteCtx<'_>, args: &[Bytes], max: bool) -> Frame {
    let count = match args.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(n) if n >= 0 => Some(n as usize),
            _ => return error("ERR value is out of range, must be positive"),
        },
    };
    if args.len() > 3 {
        return error(SYNTAX);
    }
    let picked = tri!(pop_members(cx, &args[1], max, count.unwrap_or(1)));
    if count.is_some() {
        // With a count, Redis 7 answers pairs (nested in RESP3).
        return Frame::Pairs(picked.into_iter().map(|(m, s)| (Frame::Bulk(m), score_frame(s))).collect());
    }
    Frame::Array(picked.into_iter().flat_map(|(m, s)| [Frame::Bulk(m), score_frame(s)]).collect())
}

pub(super) fn zpopmin(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    zpop(cx, args, false)
}
pub(super) fn zpopmax(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    zpop(cx, args, true)
}

fn bzpop(cx: &mut WriteCtx<'_>, args: &[Bytes], max: bool) -> Frame {
    tri!(super::list::blocking_timeout_ms(&args[args.len() - 1]));
    for key in &args[1..args.len() - 1] {
        let picked = tri!(pop_members(cx, key, max, 1));
        if let Some((m, s)) = picked.into_iter().next() {
            return Frame::Array(vec![Frame::Bulk(key.clone()), Frame::Bulk(m), score_frame(s)]);
        }
    }
    Frame::NullArray
}

pub(super) fn bzpopmin(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    bzpop(cx, args, false)
}
pub(super) fn bzpopmax(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    bzpop(cx, args, true)
}

/// Parses `numkeys key.. MIN|MAX [COUNT n]` of `ZMPOP`.
fn parse_zmpop(args: &[Bytes]) -> Result<(&[Bytes], bool, usize), Frame> {
    let numkeys = match parse_i64(&args[0]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(error("ERR numkeys should be greater than 0")),
    };
    if args.len() < numkeys + 2 {
        return Err(error(SYNTAX));
    }
    let max = match &args[numkeys + 1].to_ascii_lowercase()[..] {
        b"min" => false,
        b"max" => true,
        _ => return Err(error(SYNTAX)),
    };
    let mut count = 1;
    match &args[numkeys + 2..] {
        [] => {}
        [c, n] if c.eq_ignore_ascii_case(b"count") => match parse_i64(n) {
            Some(n) if n > 0 => count = n as usize,
            _ => return Err(error("ERR count should be greater than 0")),
        },
        _ => return Err(error(SYNTAX)),
    }
    Ok((&args[1..=numkeys], max, count))
}

fn mpop(cx: &mut WriteCtx<'_>, keys: &[Bytes], max: bool, count: usize) -> Frame {
    for key in keys {
        let picked = tri!(pop_members(cx, key, max, count));
        if !picked.is_empty() {
            let items = picked.into_iter().map(|(m, s)| Frame::Array(vec![Frame::Bulk(m), score_frame(s)])).collect();
            return Frame::Array(vec![Frame::Bulk(key.clone()), Frame::Array(items)]);
        }
    }
    Frame::NullArray
}

pub(super) fn zmpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (keys, max, count) = tri!(parse_zmpop(&args[1..]));
    mpop(cx, keys, max, count)
}

pub(super) fn bzmpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    tri!(super::list::blocking_timeout_ms(&args[1]));
    let (keys, max, count) = tri!(parse_zmpop(&args[2..]));
    mpop(cx, keys, max, count)
}

pub(super) fn zrandmember(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let z = tri!(zset_of(cx, &args[1]));
    let mut rng = Rng::for_read(cx.store, cx.now_ms, &args[1]);
    let Some(raw) = args.get(2) else {
        return match z {
            Some(z) if !z.is_empty() => bulk(&z.order().iter().nth(rng.below(z.len())).expect("in range").1),
            _ => Frame::Null,
        };
    };
    let Some(count) = parse_i64(raw) else { return error(NOT_INTEGER) };
    let with_scores = match args.get(3) {
        None => false,
        Some(a) if a.eq_ignore_ascii_case(b"withscores") && args.len() == 4 => true,
        Some(_) => return error(SYNTAX),
    };
    let Some(z) = z else { return Frame::Array(Vec::new()) };
    let entries: Vec<&(Score, Member)> = z.order().iter().collect();
    let picks = tri!(random_indexes(&mut rng, entries.len(), count));
    let items: Vec<(&[u8], f64)> = picks.into_iter().map(|i| (&entries[i].1[..], entries[i].0 .0)).collect();
    reply_members(&items, with_scores)
}

/// How `ZUNION`/`ZINTER` combine scores.
#[derive(Clone, Copy)]
enum Aggregate {
    Sum,
    Min,
    Max,
}

/// Computes `ZUNION` (`op` b'u'), `ZINTER` (b'i') or `ZDIFF` (b'd') of the
/// keys in `args` (`numkeys key.. [WEIGHTS w..] [AGGREGATE a]
/// [WITHSCORES]`). Returns the result and whether WITHSCORES was given.
fn combine(
    cx: &ReadCtx<'_>,
    args: &[Bytes],
    op: u8,
    allow_withscores: bool,
) -> Result<(Vec<(Bytes, f64)>, bool), Frame> {
    let numkeys = match parse_i64(&args[0]) {
        Some(n) if n > 0 && (n as usize) <= ZSET_SOURCES_MAX => n as usize,
        Some(n) if n > 0 => return Err(error(format!("ERR at most {ZSET_SOURCES_MAX} keys (ZSET_SOURCES_MAX)"))),
        _ => {
            let name = match op {
                b'u' => "zunion",
                b'i' => "zinter",
                _ => "zdiff",
            };
            let store = if allow_withscores { "" } else { "store" };
            return Err(error(format!("ERR at least 1 input key is needed for '{name}{store}' command")));
        }
    };
    if args.len() < numkeys + 1 {
        return Err(error(SYNTAX));
    }
    let keys = &args[1..=numkeys];
    let mut weights = vec![1.0; numkeys];
    let (mut agg, mut with_scores) = (Aggregate::Sum, false);
    let mut i = numkeys + 1;
    while i < args.len() {
        match &args[i].to_ascii_lowercase()[..] {
            b"weights" if op != b'd' => {
                if args.len() < i + 1 + numkeys {
                    return Err(error(SYNTAX));
                }
                for (k, w) in weights.iter_mut().enumerate() {
                    *w = parse_f64(&args[i + 1 + k]).ok_or_else(|| error("ERR weight value is not a float"))?;
                }
                i += numkeys;
            }
            b"aggregate" if op != b'd' => {
                agg = match args.get(i + 1).map(|a| a.to_ascii_lowercase()).as_deref() {
                    Some(b"sum") => Aggregate::Sum,
                    Some(b"min") => Aggregate::Min,
                    Some(b"max") => Aggregate::Max,
                    _ => return Err(error(SYNTAX)),
                };
                i += 1;
            }
            b"withscores" if allow_withscores => with_scores = true,
            _ => return Err(error(SYNTAX)),
        }
        i += 1;
    }
    // Sets count as sorted sets with score 1 (Redis).
    let mut sources: Vec<Option<Vec<(Bytes, f64)>>> = Vec::with_capacity(numkeys);
    for k in keys {
        sources.push(match cx.store.get(k, cx.now_ms) {
            None => None,
            Some((ValueRef::ZSet(z), _)) => {
                Some(z.order().iter().map(|(s, m)| (Bytes::copy_from_slice(m), s.0)).collect())
            }
            Some((ValueRef::Set(s), _)) => Some(s.iter().map(|m| (Bytes::copy_from_slice(m), 1.0)).collect()),
            Some(_) => return Err(error(WRONGTYPE)),
        });
    }
    let apply = |a: f64, b: f64| {
        let r = match agg {
            Aggregate::Sum => a + b,
            Aggregate::Min => a.min(b),
            Aggregate::Max => a.max(b),
        };
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let weigh = |s: f64, w: f64| {
        let r = s * w;
        if r.is_nan() {
            0.0
        } else {
            r
        }
    };
    let mut acc: hashbrown::HashMap<Bytes, f64> = hashbrown::HashMap::new();
    match op {
        b'u' => {
            for (src, w) in sources.iter().zip(&weights) {
                for (m, s) in src.iter().flatten() {
                    let v = weigh(*s, *w);
                    acc.entry(m.clone()).and_modify(|a| *a = apply(*a, v)).or_insert(v);
                }
            }
        }
        b'i' => {
            if let Some(Some(first)) = sources.first() {
                'member: for (m, s) in first {
                    let mut v = weigh(*s, weights[0]);
                    for (src, w) in sources.iter().zip(&weights).skip(1) {
                        let Some(src) = src else { break 'member };
                        match src.iter().find(|(x, _)| x == m) {
                            Some((_, s2)) => v = apply(v, weigh(*s2, *w)),
                            None => continue 'member,
                        }
                    }
                    acc.insert(m.clone(), v);
                }
            }
        }
        _ => {
            if let Some(Some(first)) = sources.first() {
                let others: hashbrown::HashSet<&Bytes> =
                    sources.iter().skip(1).flatten().flat_map(|s| s.iter().map(|(m, _)| m)).collect();
                for (m, s) in first {
                    if !others.contains(m) {
                        acc.insert(m.clone(), *s);
                    }
                }
            }
        }
    }
    let mut out: Vec<(Bytes, f64)> = acc.into_iter().collect();
    out.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok((out, with_scores))
}

fn combine_read(cx: &ReadCtx<'_>, args: &[Bytes], op: u8) -> Frame {
    let (items, with_scores) = tri!(combine(cx, &args[1..], op, true));
    let refs: Vec<(&[u8], f64)> = items.iter().map(|(m, s)| (&m[..], *s)).collect();
    reply_members(&refs, with_scores)
}

fn combine_store(cx: &mut WriteCtx<'_>, args: &[Bytes], op: u8) -> Frame {
    let (items, _) = tri!(combine(&cx.read(), &args[2..], op, false));
    store_result(cx, &args[1], items.into_iter().map(|(m, s)| (s.to_bits(), m)).collect())
}

pub(super) fn zunion(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    combine_read(cx, args, b'u')
}
pub(super) fn zinter(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    combine_read(cx, args, b'i')
}
pub(super) fn zdiff(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    combine_read(cx, args, b'd')
}
pub(super) fn zunionstore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    combine_store(cx, args, b'u')
}
pub(super) fn zinterstore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    combine_store(cx, args, b'i')
}
pub(super) fn zdiffstore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    combine_store(cx, args, b'd')
}

pub(super) fn zintercard(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let numkeys = match parse_i64(&args[1]) {
        Some(n) if n > 0 => n as usize,
        Some(0) => return error("ERR at least 1 input key is needed for 'zintercard' command"),
        _ => return error("ERR numkeys should be greater than 0"),
    };
    if args.len() < numkeys + 2 {
        return error(SYNTAX);
    }
    let mut limit = usize::MAX;
    match &args[numkeys + 2..] {
        [] => {}
        [l, n] if l.eq_ignore_ascii_case(b"limit") => match parse_i64(n) {
            Some(0) => {}
            Some(n) if n > 0 => limit = n as usize,
            _ => return error("ERR LIMIT can't be negative"),
        },
        _ => return error(SYNTAX),
    }
    let (items, _) = tri!(combine(cx, &args[1..numkeys + 2], b'i', false));
    int(items.len().min(limit) as i64)
}

/// `ZSCAN`: the cursor is a position in score order (exact while the set
/// does not change during the scan).
pub(super) fn zscan(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let z = tri!(zset_of(cx, &args[1]));
    let (cursor, pattern, count) = tri!(super::hash::parse_scan_args(&args[2..]));
    let mut out = Vec::new();
    let next = match z {
        None => 0,
        Some(z) => super::keys::scan_page(
            z.order().iter(),
            z.len(),
            cursor,
            count,
            pattern,
            |(_, m)| &m[..],
            |(s, m)| {
                out.push(bulk(m));
                // ZSCAN answers scores as strings, also in RESP3.
                out.push(Frame::Bulk(fmt_score(s.0)));
            },
        ),
    };
    Frame::Array(vec![Frame::Bulk(Bytes::from(next.to_string())), Frame::Array(out)])
}

#[cfg(test)]
mod tests {
    use super::super::tests::Harness;
    use super::*;

    fn arr(items: &[&str]) -> Frame {
        Frame::Array(items.iter().map(|s| bulk(s.as_bytes())).collect())
    }

    #[test]
    fn zadd_options_and_ranges_behave_like_redis() {
        let mut h = Harness::new();
        assert_eq!(h.run("ZADD z 1 a 2 b 3 c"), int(3));
        assert_eq!(h.run("ZADD z NX 10 a 4 d"), int(1));
        assert_eq!(h.run("ZADD z XX CH 5 a 9 e"), int(1));
        assert_eq!(h.run("ZADD z GT CH 1 a"), int(0));
        assert_eq!(h.run("ZADD z INCR 1.5 b"), bulk(b"3.5"));
        assert_eq!(h.run("ZADD z NX XX 1 a"), error("ERR XX and NX options at the same time are not compatible"));
        assert_eq!(h.run("ZADD z x a"), error("ERR value is not a valid float"));
        assert_eq!(h.run("ZRANGE z 0 -1"), arr(&["c", "b", "d", "a"]));
        assert_eq!(h.run("ZRANGE z 0 1 WITHSCORES"), arr(&["c", "3", "b", "3.5"]));
        assert_eq!(h.run("ZREVRANGE z 0 0"), arr(&["a"]));
        assert_eq!(h.run("ZRANGEBYSCORE z (3 5"), arr(&["b", "d", "a"]));
        assert_eq!(h.run("ZRANGE z 5 (3 BYSCORE REV LIMIT 0 2"), arr(&["a", "d"]));
        assert_eq!(h.run("ZCOUNT z -inf +inf"), int(4));
        assert_eq!(h.run("ZRANK z d"), int(2));
        assert_eq!(h.run("ZREVRANK z d"), int(1));
        assert_eq!(h.run("ZSCORE z a"), bulk(b"5"));
        assert_eq!(h.run("ZINCRBY z -10 a"), bulk(b"-5"));
        assert_eq!(h.run("ZPOPMIN z"), arr(&["a", "-5"]));
        assert_eq!(h.run("ZPOPMAX z 2"), arr(&["d", "4", "b", "3.5"]));
        assert_eq!(h.run("ZCARD z"), int(1));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn lex_ranges_and_removals() {
        let mut h = Harness::new();
        h.run("ZADD z 0 a 0 b 0 c 0 d");
        assert_eq!(h.run("ZRANGEBYLEX z [b (d"), arr(&["b", "c"]));
        assert_eq!(h.run("ZREVRANGEBYLEX z + - LIMIT 0 1"), arr(&["d"]));
        assert_eq!(h.run("ZLEXCOUNT z - +"), int(4));
        assert_eq!(h.run("ZREMRANGEBYLEX z - [b"), int(2));
        assert_eq!(h.run("ZREMRANGEBYRANK z 0 0"), int(1));
        assert_eq!(h.run("ZRANGE z 0 -1"), arr(&["d"]));
        assert_eq!(h.run("ZREM z d x"), int(1));
        assert_eq!(h.run("EXISTS z"), int(0));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn union_inter_diff_and_their_store_forms() {
        let mut h = Harness::new();
        h.run("ZADD a 1 x 2 y");
        h.run("ZADD b 10 y 20 z");
        h.run("SADD s x");
        assert_eq!(h.run("ZUNION 2 a b WITHSCORES"), arr(&["x", "1", "y", "12", "z", "20"]));
        assert_eq!(h.run("ZINTER 2 a b AGGREGATE MAX WITHSCORES"), arr(&["y", "10"]));
        assert_eq!(h.run("ZDIFF 2 a b"), arr(&["x"]));
        assert_eq!(h.run("ZUNIONSTORE d 2 a s WEIGHTS 2 3"), int(2));
        assert_eq!(h.run("ZRANGE d 0 -1 WITHSCORES"), arr(&["y", "4", "x", "5"]));
        assert_eq!(h.run("ZINTERSTORE d 2 a missing"), int(0));
        assert_eq!(h.run("EXISTS d"), int(0));
        assert_eq!(h.run("ZINTERCARD 2 a b"), int(1));
        assert_eq!(
            h.run("ZMPOP 2 none b MAX COUNT 5"),
            Frame::Array(vec![bulk(b"b"), Frame::Array(vec![arr(&["z", "20"]), arr(&["y", "10"])])])
        );
        assert_eq!(h.run("BZPOPMIN none a 0"), arr(&["a", "x", "1"]));
        assert_eq!(h.run("BZPOPMIN none 0"), Frame::NullArray);
        h.run("SET str v");
        assert_eq!(h.run("ZADD str 1 a"), error(WRONGTYPE));
        assert_eq!(h.run("ZUNION 1 str"), error(WRONGTYPE));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn zscan_pages_members_with_scores() {
        let mut h = Harness::new();
        h.run("ZADD z 1 a 2 b 3 c 1.5 d");
        let Frame::Array(v) = h.run("ZSCAN z 0 COUNT 2") else { panic!() };
        assert_eq!(v[0], Frame::Bulk("2".into()));
        assert_eq!(v[1], Frame::Array(vec![bulk(b"a"), bulk(b"1"), bulk(b"d"), bulk(b"1.5")]));
        let Frame::Array(v) = h.run("ZSCAN z 2 COUNT 2") else { panic!() };
        assert_eq!(v[0], Frame::Bulk("0".into()));
        let Frame::Array(v) = h.run("ZSCAN z 0 MATCH c") else { panic!() };
        assert_eq!(v[1], Frame::Array(vec![bulk(b"c"), bulk(b"3")]));
        h.run("SET s x");
        assert_eq!(h.run("ZSCAN s 0"), error(WRONGTYPE));
    }
}
