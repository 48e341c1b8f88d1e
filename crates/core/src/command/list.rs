//! List commands (`LPUSH`, `LRANGE`, `LMOVE`, `LMPOP`, `BLPOP`, ...).
//!
//! Owns the replies and row effects of the list group. Pushes and pops are
//! logged as what they did at one end (`LPush` with the elements, `LPop`
//! with the count), `LSET` as the element it sets; `LINSERT`, `LREM` and
//! `LTRIM`'s rare edits in the middle are logged as the whole resulting
//! list (`LReplace`). Every list effect carries the list's change count
//! (`seq`) so replaying it over a fuzzy snapshot that already holds it is
//! harmless; a change that empties a list is logged as `Del`.
//!
//! Blocking forms (`BLPOP`, `BRPOP`, `BLMOVE`, `BLMPOP`, `BRPOPLPUSH`)
//! execute here as their non-blocking attempt: they answer a null array
//! when every key is empty, and the node decides whether to wait (on the
//! leader, outside `MULTI`) and retries when a list effect is committed.
//!
//! Must never: read a clock, block, or change the store other than
//! through [`WriteCtx::emit`].

use bytes::Bytes;

use super::{bulk, error, int, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::resp::Frame;
use crate::store::{ListValue, ValueRef};

/// Most elements one list may hold: past it a push is refused.
pub const LIST_ELEMENTS_MAX: usize = u32::MAX as usize;
/// Largest `COUNT` of the pop forms (bounds one reply).
pub const POP_COUNT_MAX: i64 = 10_000_000;

fn list_of<'a>(cx: &'a ReadCtx<'_>, key: &[u8]) -> Result<Option<&'a ListValue>, Frame> {
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::List(l), _)) => Ok(Some(l)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

/// The list at `key` for a writer (expired keys are purged first), as
/// (length, change count).
fn list_state(cx: &mut WriteCtx<'_>, key: &Bytes) -> Result<Option<(usize, u64)>, Frame> {
    cx.purge_expired(key);
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::List(l), _)) => Ok(Some((l.items.len(), l.seq))),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

fn list_ref<'c>(cx: &'c WriteCtx<'_>, key: &[u8]) -> Option<&'c ListValue> {
    match cx.store.get(key, cx.now_ms) {
        Some((ValueRef::List(l), _)) => Some(l),
        _ => None,
    }
}

fn push_effect(cx: &mut WriteCtx<'_>, key: &Bytes, left: bool, items: Vec<Bytes>, seq: u64) {
    cx.emit(Effect::LPush { key: key.clone(), left, items, seq: seq + 1 });
}

/// Pops `count` elements from one end of the list at `key` (known to hold
/// `len` elements with change count `seq`) and returns them in pop order.
fn pop_n(cx: &mut WriteCtx<'_>, key: &Bytes, left: bool, count: usize, len: usize, seq: u64) -> Vec<Frame> {
    let count = count.min(len);
    let items: Vec<Frame> = {
        let l = list_ref(cx, key).expect("caller checked the list exists");
        if left {
            l.items.iter().take(count).map(bulk).collect()
        } else {
            l.items.iter().rev().take(count).map(bulk).collect()
        }
    };
    if count == len {
        cx.emit(Effect::Del { key: key.clone() });
    } else {
        cx.emit(Effect::LPop { key: key.clone(), left, count: count as u64, seq: seq + 1 });
    }
    items
}

fn push_generic(cx: &mut WriteCtx<'_>, args: &[Bytes], left: bool, only_existing: bool) -> Frame {
    let key = &args[1];
    let state = tri!(list_state(cx, key));
    let (len, seq) = match state {
        Some(s) => s,
        None if only_existing => return int(0),
        None => (0, 0),
    };
    let items: Vec<Bytes> = args[2..].to_vec();
    if len + items.len() > LIST_ELEMENTS_MAX {
        return error(format!("ERR a list holds at most {LIST_ELEMENTS_MAX} elements (LIST_ELEMENTS_MAX)"));
    }
    let n = items.len();
    push_effect(cx, key, left, items, seq);
    int((len + n) as i64)
}

pub(super) fn lpush(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    push_generic(cx, args, true, false)
}

pub(super) fn rpush(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    push_generic(cx, args, false, false)
}

pub(super) fn lpushx(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    push_generic(cx, args, true, true)
}

pub(super) fn rpushx(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    push_generic(cx, args, false, true)
}

fn pop_generic(cx: &mut WriteCtx<'_>, args: &[Bytes], left: bool) -> Frame {
    let key = &args[1];
    let count = match args.get(2) {
        None => None,
        Some(c) => match parse_i64(c) {
            Some(n) if (0..=POP_COUNT_MAX).contains(&n) => Some(n as usize),
            Some(n) if n >= 0 => return error(format!("ERR count exceeds POP_COUNT_MAX ({POP_COUNT_MAX})")),
            _ => return error("ERR value is out of range, must be positive"),
        },
    };
    if args.len() > 3 {
        return super::wrong_arity(if left { "lpop" } else { "rpop" });
    }
    let Some((len, seq)) = tri!(list_state(cx, key)) else {
        return if count.is_some() { Frame::NullArray } else { Frame::Null };
    };
    match count {
        None => pop_n(cx, key, left, 1, len, seq).pop().unwrap_or(Frame::Null),
        Some(0) => Frame::Array(Vec::new()),
        Some(n) => Frame::Array(pop_n(cx, key, left, n, len, seq)),
    }
}

pub(super) fn lpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    pop_generic(cx, args, true)
}

pub(super) fn rpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    pop_generic(cx, args, false)
}

pub(super) fn llen(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(tri!(list_of(cx, &args[1])).map_or(0, |l| l.items.len() as i64))
}

/// Resolves a Redis index (negative from the end) in a list of `len`.
fn index_of(i: i64, len: usize) -> Option<usize> {
    let i = if i < 0 { len as i64 + i } else { i };
    (0..len as i64).contains(&i).then_some(i as usize)
}

/// Resolves a `start stop` range (inclusive, negative from the end) to
/// `start..end`, empty if out of range.
pub(super) fn range_of(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let len_i = len as i64;
    let start = if start < 0 { (len_i + start).max(0) } else { start };
    let stop = if stop < 0 { len_i + stop } else { stop.min(len_i - 1) };
    if start > stop || start >= len_i {
        0..0
    } else {
        start as usize..stop as usize + 1
    }
}

pub(super) fn lrange(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let (Some(start), Some(stop)) = (parse_i64(&args[2]), parse_i64(&args[3])) else { return error(NOT_INTEGER) };
    let Some(l) = tri!(list_of(cx, &args[1])) else { return Frame::Array(Vec::new()) };
    let r = range_of(start, stop, l.items.len());
    Frame::Array(l.items.range(r).map(bulk).collect())
}

pub(super) fn lindex(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(i) = parse_i64(&args[2]) else { return error(NOT_INTEGER) };
    let Some(l) = tri!(list_of(cx, &args[1])) else { return Frame::Null };
    index_of(i, l.items.len()).map_or(Frame::Null, |i| bulk(&l.items[i]))
}

pub(super) fn lset(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(i) = parse_i64(&args[2]) else { return error(NOT_INTEGER) };
    let key = &args[1];
    let Some((len, seq)) = tri!(list_state(cx, key)) else { return error("ERR no such key") };
    let Some(index) = index_of(i, len) else { return error("ERR index out of range") };
    cx.emit(Effect::LSet { key: key.clone(), index: index as u64, value: args[3].clone(), seq: seq + 1 });
    super::ok()
}

/// Logs the list at `key` as a whole after an edit in the middle.
fn replace(cx: &mut WriteCtx<'_>, key: &Bytes, items: Vec<Bytes>, seq: u64) {
    if items.is_empty() {
        cx.emit(Effect::Del { key: key.clone() });
    } else {
        cx.emit(Effect::LReplace { key: key.clone(), items, seq: seq + 1 });
    }
}

fn items_of(cx: &WriteCtx<'_>, key: &[u8]) -> Vec<Bytes> {
    list_ref(cx, key).map(|l| l.items.iter().map(Bytes::copy_from_slice).collect()).unwrap_or_default()
}

pub(super) fn linsert(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let before = match &args[2].to_ascii_lowercase()[..] {
        b"before" => true,
        b"after" => false,
        _ => return error(SYNTAX),
    };
    let key = &args[1];
    let Some((len, seq)) = tri!(list_state(cx, key)) else { return int(0) };
    let mut items = items_of(cx, key);
    let Some(pos) = items.iter().position(|i| i == &args[3]) else { return int(-1) };
    if len + 1 > LIST_ELEMENTS_MAX {
        return error(format!("ERR a list holds at most {LIST_ELEMENTS_MAX} elements (LIST_ELEMENTS_MAX)"));
    }
    items.insert(if before { pos } else { pos + 1 }, args[4].clone());
    let n = items.len() as i64;
    replace(cx, key, items, seq);
    int(n)
}

pub(super) fn lrem(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(count) = parse_i64(&args[2]) else { return error(NOT_INTEGER) };
    let key = &args[1];
    let Some((_, seq)) = tri!(list_state(cx, key)) else { return int(0) };
    let items = items_of(cx, key);
    let limit = if count == 0 { usize::MAX } else { count.unsigned_abs() as usize };
    let mut removed = 0usize;
    let mut keep = vec![true; items.len()];
    let order: Box<dyn Iterator<Item = usize>> =
        if count < 0 { Box::new((0..items.len()).rev()) } else { Box::new(0..items.len()) };
    for i in order {
        if removed == limit {
            break;
        }
        if items[i] == args[3] {
            keep[i] = false;
            removed += 1;
        }
    }
    if removed > 0 {
        let rest = items.into_iter().zip(keep).filter(|(_, k)| *k).map(|(i, _)| i).collect();
        replace(cx, key, rest, seq);
    }
    int(removed as i64)
}

pub(super) fn ltrim(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (Some(start), Some(stop)) = (parse_i64(&args[2]), parse_i64(&args[3])) else { return error(NOT_INTEGER) };
    let key = &args[1];
    let Some((len, seq)) = tri!(list_state(cx, key)) else { return super::ok() };
    let r = range_of(start, stop, len);
    if r.is_empty() {
        cx.emit(Effect::Del { key: key.clone() });
    } else {
        // Trims are pops at both ends: proportional to what goes.
        let mut seq = seq;
        if r.start > 0 {
            cx.emit(Effect::LPop { key: key.clone(), left: true, count: r.start as u64, seq: seq + 1 });
            seq += 1;
        }
        if r.end < len {
            cx.emit(Effect::LPop { key: key.clone(), left: false, count: (len - r.end) as u64, seq: seq + 1 });
        }
    }
    super::ok()
}

pub(super) fn lpos(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let (mut rank, mut count, mut maxlen): (i64, Option<usize>, usize) = (1, None, 0);
    let mut i = 3;
    while i < args.len() {
        let Some(val) = args.get(i + 1) else { return error(SYNTAX) };
        let Some(n) = parse_i64(val) else { return error(NOT_INTEGER) };
        match &args[i].to_ascii_lowercase()[..] {
            b"rank" => {
                if n == 0 || n == i64::MIN {
                    return error(
                        "ERR RANK can't be zero: use 1 to start from the first match, 2 from the second ... or use negative to start from the end of the list",
                    );
                }
                rank = n;
            }
            b"count" if n >= 0 => count = Some(n as usize),
            b"count" => return error("ERR COUNT can't be negative"),
            b"maxlen" if n >= 0 => maxlen = n as usize,
            b"maxlen" => return error("ERR MAXLEN can't be negative"),
            _ => return error(SYNTAX),
        }
        i += 2;
    }
    let l = tri!(list_of(cx, &args[1]));
    // One pass over the elements from the chosen end (an index per
    // element would cost a node walk each).
    let positions: Box<dyn Iterator<Item = (usize, &[u8])>> = match l {
        None => Box::new(std::iter::empty()),
        Some(l) if rank > 0 => Box::new(l.items.iter().enumerate()),
        Some(l) => Box::new(l.items.iter().enumerate().rev()),
    };
    let want = match count {
        Some(0) => usize::MAX,
        Some(c) => c,
        None => 1,
    };
    let mut skip = rank.unsigned_abs() - 1;
    let mut found = Vec::new();
    for (scanned, (p, item)) in positions.enumerate() {
        if maxlen > 0 && scanned >= maxlen {
            break;
        }
        if item == &args[2][..] {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            found.push(int(p as i64));
            if found.len() >= want {
                break;
            }
        }
    }
    match count {
        None => found.pop().unwrap_or(Frame::Null),
        Some(_) => Frame::Array(found),
    }
}

fn side(b: &[u8]) -> Option<bool> {
    match &b.to_ascii_lowercase()[..] {
        b"left" => Some(true),
        b"right" => Some(false),
        _ => None,
    }
}

/// Moves one element from `src` (end `from_left`) to `dst` (end `to_left`).
fn move_one(cx: &mut WriteCtx<'_>, src: &Bytes, dst: &Bytes, from_left: bool, to_left: bool) -> Frame {
    let Some((len, seq)) = tri!(list_state(cx, src)) else { return Frame::Null };
    let dst_state = tri!(list_state(cx, dst));
    let Some(Frame::Bulk(item)) = pop_n(cx, src, from_left, 1, len, seq).pop() else {
        unreachable!("a non-empty list pops one element")
    };
    // Same key: the pop changed its count (or deleted it).
    let dst_seq = if src == dst { list_ref(cx, dst).map_or(0, |l| l.seq) } else { dst_state.map_or(0, |s| s.1) };
    push_effect(cx, dst, to_left, vec![item.clone()], dst_seq);
    Frame::Bulk(item)
}

pub(super) fn lmove(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (Some(from), Some(to)) = (side(&args[3]), side(&args[4])) else { return error(SYNTAX) };
    move_one(cx, &args[1], &args[2], from, to)
}

pub(super) fn rpoplpush(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    move_one(cx, &args[1], &args[2], false, true)
}

/// Parses `numkeys key.. LEFT|RIGHT [COUNT n]` of `LMPOP` from `args`
/// (starting at `numkeys`).
fn parse_mpop(args: &[Bytes]) -> Result<(&[Bytes], bool, usize), Frame> {
    let numkeys = match parse_i64(&args[0]) {
        Some(n) if n > 0 => n as usize,
        _ => return Err(error("ERR numkeys should be greater than 0")),
    };
    if args.len() < numkeys + 2 {
        return Err(error(SYNTAX));
    }
    let keys = &args[1..=numkeys];
    let left = side(&args[numkeys + 1]).ok_or_else(|| error(SYNTAX))?;
    let mut count = 1;
    match &args[numkeys + 2..] {
        [] => {}
        [c, n] if c.eq_ignore_ascii_case(b"count") => match parse_i64(n) {
            Some(n) if n > 0 && n <= POP_COUNT_MAX => count = n as usize,
            _ => return Err(error("ERR count should be greater than 0")),
        },
        _ => return Err(error(SYNTAX)),
    }
    Ok((keys, left, count))
}

fn mpop(cx: &mut WriteCtx<'_>, keys: &[Bytes], left: bool, count: usize) -> Frame {
    for key in keys {
        if let Some((len, seq)) = tri!(list_state(cx, key)) {
            let items = pop_n(cx, key, left, count, len, seq);
            return Frame::Array(vec![Frame::Bulk(key.clone()), Frame::Array(items)]);
        }
    }
    Frame::NullArray
}

pub(super) fn lmpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (keys, left, count) = tri!(parse_mpop(&args[1..]));
    mpop(cx, keys, left, count)
}

/// The timeout of a blocking list or sorted-set command, in ms (0: block
/// forever), with Redis's errors. `arg` is the timeout argument.
pub fn blocking_timeout_ms(arg: &[u8]) -> Result<u64, Frame> {
    let secs = super::hash::parse_f64(arg).ok_or_else(|| error("ERR timeout is not a float or out of range"))?;
    if secs < 0.0 {
        return Err(error("ERR timeout is negative"));
    }
    if !secs.is_finite() || secs * 1000.0 > i64::MAX as f64 / 2.0 {
        return Err(error("ERR timeout is out of range"));
    }
    Ok((secs * 1000.0).ceil() as u64)
}

/// Where the timeout argument of blocking command `name` is.
pub fn blocking_timeout_arg<'a>(name: &str, args: &'a [Bytes]) -> Option<&'a Bytes> {
    match name {
        "blpop" | "brpop" | "bzpopmin" | "bzpopmax" | "brpoplpush" | "blmove" => args.last(),
        "blmpop" | "bzmpop" => args.get(1),
        _ => None,
    }
}

fn bpop(cx: &mut WriteCtx<'_>, args: &[Bytes], left: bool) -> Frame {
    tri!(blocking_timeout_ms(&args[args.len() - 1]));
    for key in &args[1..args.len() - 1] {
        if let Some((len, seq)) = tri!(list_state(cx, key)) {
            let item = pop_n(cx, key, left, 1, len, seq).pop().unwrap_or(Frame::Null);
            return Frame::Array(vec![Frame::Bulk(key.clone()), item]);
        }
    }
    Frame::NullArray
}

pub(super) fn blpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    bpop(cx, args, true)
}

pub(super) fn brpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    bpop(cx, args, false)
}

pub(super) fn blmove(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    tri!(blocking_timeout_ms(&args[5]));
    let (Some(from), Some(to)) = (side(&args[3]), side(&args[4])) else { return error(SYNTAX) };
    match move_one(cx, &args[1], &args[2], from, to) {
        Frame::Null => Frame::NullArray,
        other => other,
    }
}

pub(super) fn brpoplpush(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    tri!(blocking_timeout_ms(&args[3]));
    match move_one(cx, &args[1], &args[2], false, true) {
        Frame::Null => Frame::NullArray,
        other => other,
    }
}

pub(super) fn blmpop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    tri!(blocking_timeout_ms(&args[1]));
    let (keys, left, count) = tri!(parse_mpop(&args[2..]));
    mpop(cx, keys, left, count)
}

#[cfg(test)]
mod tests {
    use super::super::tests::Harness;
    use super::*;

    fn arr(items: &[&str]) -> Frame {
        Frame::Array(items.iter().map(|s| bulk(s.as_bytes())).collect())
    }

    #[test]
    fn push_pop_range_behave_like_redis() {
        let mut h = Harness::new();
        assert_eq!(h.run("LPUSH l a b c"), int(3));
        assert_eq!(h.run("RPUSH l d"), int(4));
        assert_eq!(h.run("LRANGE l 0 -1"), arr(&["c", "b", "a", "d"]));
        assert_eq!(h.run("LRANGE l -2 100"), arr(&["a", "d"]));
        assert_eq!(h.run("LINDEX l -1"), bulk(b"d"));
        assert_eq!(h.run("LPOP l"), bulk(b"c"));
        assert_eq!(h.run("RPOP l 2"), arr(&["d", "a"]));
        assert_eq!(h.run("LLEN l"), int(1));
        assert_eq!(h.run("LPOP l 5"), arr(&["b"]));
        assert_eq!(h.run("EXISTS l"), int(0));
        assert_eq!(h.run("LPOP l 5"), Frame::NullArray);
        assert_eq!(h.run("LPUSHX l x"), int(0));
        assert_eq!(h.run("LPOP l -1"), error("ERR value is out of range, must be positive"));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn edits_in_the_middle_and_trims() {
        let mut h = Harness::new();
        h.run("RPUSH l a b a c a");
        assert_eq!(h.run("LREM l -2 a"), int(2));
        assert_eq!(h.run("LRANGE l 0 -1"), arr(&["a", "b", "c"]));
        assert_eq!(h.run("LINSERT l BEFORE c x"), int(4));
        assert_eq!(h.run("LINSERT l AFTER zz x"), int(-1));
        assert_eq!(h.run("LSET l 0 A"), super::super::ok());
        assert_eq!(h.run("LSET l 9 A"), error("ERR index out of range"));
        assert_eq!(h.run("LSET nokey 0 A"), error("ERR no such key"));
        assert_eq!(h.run("LTRIM l 1 2"), super::super::ok());
        assert_eq!(h.run("LRANGE l 0 -1"), arr(&["b", "x"]));
        assert_eq!(h.run("LPOS l x"), int(1));
        assert_eq!(h.run("LPOS l q"), Frame::Null);
        assert_eq!(h.replayed().digest(), h.store.digest());
        assert_eq!(h.run("LTRIM l 5 9"), super::super::ok());
        assert_eq!(h.run("EXISTS l"), int(0));
    }

    #[test]
    fn lpos_rank_count_maxlen() {
        let mut h = Harness::new();
        h.run("RPUSH l a b c 1 2 3 c c");
        assert_eq!(h.run("LPOS l c RANK 2"), int(6));
        assert_eq!(h.run("LPOS l c RANK -1"), int(7));
        assert_eq!(h.run("LPOS l c COUNT 0"), Frame::Array(vec![int(2), int(6), int(7)]));
        assert_eq!(h.run("LPOS l c COUNT 0 MAXLEN 7"), Frame::Array(vec![int(2), int(6)]));
        assert!(matches!(h.run("LPOS l c RANK 0"), Frame::Error(e) if e.starts_with("ERR RANK can't be zero")));
    }

    #[test]
    fn moves_and_multi_pops() {
        let mut h = Harness::new();
        h.run("RPUSH a 1 2 3");
        assert_eq!(h.run("LMOVE a b LEFT RIGHT"), bulk(b"1"));
        assert_eq!(h.run("RPOPLPUSH a a"), bulk(b"3"));
        assert_eq!(h.run("LRANGE a 0 -1"), arr(&["3", "2"]));
        assert_eq!(h.run("LMPOP 2 missing a RIGHT COUNT 5"), Frame::Array(vec![bulk(b"a"), arr(&["2", "3"])]));
        assert_eq!(h.run("LMPOP 1 a LEFT"), Frame::NullArray);
        assert_eq!(h.run("BLPOP none b 0"), arr(&["b", "1"]));
        assert_eq!(h.run("BLPOP none 0"), Frame::NullArray);
        assert_eq!(h.run("BLPOP none -1"), error("ERR timeout is negative"));
        assert_eq!(h.run("BLPOP none x"), error("ERR timeout is not a float or out of range"));
        h.run("SET s v");
        assert_eq!(h.run("LPUSH s a"), error(WRONGTYPE));
        assert_eq!(h.run("LMOVE s b LEFT LEFT"), error(WRONGTYPE));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }
}
