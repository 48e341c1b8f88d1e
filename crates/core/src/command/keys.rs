//! Generic key commands beyond the basics (`RENAME`, `RENAMENX`, `COPY`,
//! `TOUCH`, `RANDOMKEY`, `EXPIRETIME`, `PEXPIRETIME`, `OBJECT`, `SORT`).
//!
//! Owns their replies and row effects. Moving or copying a value is logged
//! as the destination's whole resulting state (`Del` of the destination,
//! then the typed effects that rebuild the value, then its absolute
//! expiry) and, for a rename, `Del` of the source: every one of those is
//! replay-safe over a fuzzy snapshot, which a "rename a to b" effect would
//! not be (a snapshot may hold `b` from before and `a` from after the
//! rename). The price: a rename logs the value, so a collection larger than
//! the write's size budget cannot be renamed (the client gets the budget
//! error and nothing changes).
//!
//! Must never: read a clock or a global RNG, or change the store other
//! than through [`WriteCtx::emit`].

use bytes::Bytes;

use super::hash::Rng;
use super::{error, int, ok, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::glob::glob_match;
use crate::resp::Frame;
use crate::store::{ValueRef, BUCKETS};

/// Most elements `SORT` sorts (bounds the work and memory of one call).
pub const SORT_ELEMENTS_MAX: usize = 1_000_000;

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

/// The effects that make `dest` hold a copy of `value` with `expire_at_ms`,
/// whatever `dest` held before.
fn rebuild_effects(value: ValueRef<'_>, dest: &Bytes, expire_at_ms: Option<u64>) -> Vec<Effect> {
    let mut out = Vec::with_capacity(3);
    let key = dest.clone();
    match value {
        ValueRef::Str(v) => {
            out.push(Effect::Set { key, value: b(v), expire_at_ms });
            return out;
        }
        ValueRef::Set(s) => {
            out.push(Effect::Del { key: key.clone() });
            out.push(Effect::SAdd { key: key.clone(), members: s.iter().map(|m| b(m)).collect() });
        }
        ValueRef::Hash(h) => {
            out.push(Effect::Del { key: key.clone() });
            out.push(Effect::HSet { key: key.clone(), fields: h.iter().map(|(f, v)| (b(f), b(v))).collect() });
        }
        ValueRef::List(l) => {
            // After the Del the list is new: change count 0, so seq 1.
            out.push(Effect::Del { key: key.clone() });
            out.push(Effect::LReplace { key: key.clone(), items: l.items.iter().map(b).collect(), seq: 1 });
        }
        ValueRef::ZSet(z) => {
            out.push(Effect::Del { key: key.clone() });
            out.push(Effect::ZAdd {
                key: key.clone(),
                members: z.order().iter().map(|(s, m)| (s.0.to_bits(), b(m))).collect(),
            });
        }
    }
    if expire_at_ms.is_some() {
        out.push(Effect::Expire { key, expire_at_ms });
    }
    out
}

/// `RENAME` (`nx`: false) and `RENAMENX`.
fn rename_generic(cx: &mut WriteCtx<'_>, args: &[Bytes], nx: bool) -> Frame {
    let (src, dst) = (&args[1], &args[2]);
    cx.purge_expired(src);
    cx.purge_expired(dst);
    let Some((value, expiry)) = cx.store.get(src, cx.now_ms) else { return error("ERR no such key") };
    if src == dst {
        return if nx { int(0) } else { ok() };
    }
    let dst_exists = cx.store.get(dst, cx.now_ms).is_some();
    if nx && dst_exists {
        return int(0);
    }
    let mut effects = rebuild_effects(value, dst, expiry);
    if matches!(effects.first(), Some(Effect::Del { .. })) && !dst_exists {
        effects.remove(0);
    }
    for e in effects {
        cx.emit(e);
    }
    cx.emit(Effect::Del { key: src.clone() });
    if nx {
        int(1)
    } else {
        ok()
    }
}

pub(super) fn rename(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    rename_generic(cx, args, false)
}

pub(super) fn renamenx(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    rename_generic(cx, args, true)
}

pub(super) fn copy(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (src, dst) = (&args[1], &args[2]);
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        match &args[i].to_ascii_lowercase()[..] {
            b"replace" => replace = true,
            b"db" => {
                let Some(db) = args.get(i + 1) else { return error(SYNTAX) };
                match parse_i64(db) {
                    Some(0) => {}
                    Some(_) => return error("ERR DB index is out of range"),
                    None => return error(NOT_INTEGER),
                }
                i += 1;
            }
            _ => return error(SYNTAX),
        }
        i += 1;
    }
    if src == dst {
        return error("ERR source and destination objects are the same");
    }
    cx.purge_expired(src);
    cx.purge_expired(dst);
    let Some((value, expiry)) = cx.store.get(src, cx.now_ms) else { return int(0) };
    let dst_exists = cx.store.get(dst, cx.now_ms).is_some();
    if dst_exists && !replace {
        return int(0);
    }
    let mut effects = rebuild_effects(value, dst, expiry);
    if matches!(effects.first(), Some(Effect::Del { .. })) && !dst_exists {
        effects.remove(0);
    }
    for e in effects {
        cx.emit(e);
    }
    int(1)
}

pub(super) fn touch(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(args[1..].iter().filter(|k| cx.store.get(k, cx.now_ms).is_some()).count() as i64)
}

/// `RANDOMKEY`: a key from a bucket drawn from a generator seeded by the
/// caller's `now_ms` (core never touches a global RNG). Not uniform over
/// keys (a key in a sparse bucket is likelier), like Redis's own sampling.
pub(super) fn randomkey(cx: &ReadCtx<'_>, _: &[Bytes]) -> Frame {
    if cx.store.is_empty() {
        return Frame::Null;
    }
    let mut rng = Rng::for_read(cx.store, cx.now_ms, b"randomkey");
    let start = rng.below(BUCKETS) as u64;
    for cursor in [start, 0] {
        let mut found: Vec<Bytes> = Vec::new();
        cx.store.scan(cursor, 1, cx.now_ms, |k| found.push(b(k)));
        if !found.is_empty() {
            let pick = rng.below(found.len());
            return Frame::Bulk(found.swap_remove(pick));
        }
    }
    Frame::Null
}

fn expiretime_ms(cx: &ReadCtx<'_>, key: &[u8]) -> i64 {
    match cx.store.get(key, cx.now_ms) {
        None => -2,
        Some((_, None)) => -1,
        Some((_, Some(at))) => at as i64,
    }
}

pub(super) fn expiretime(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    match expiretime_ms(cx, &args[1]) {
        ms if ms < 0 => int(ms),
        ms => int(ms / 1000),
    }
}

pub(super) fn pexpiretime(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(expiretime_ms(cx, &args[1]))
}

/// The encoding Redis 7.0 would report for this value under the store's
/// thresholds (Tandem stores every type in one representation; clients
/// and tests read this name, so it follows Redis's rules).
fn encoding_name(v: ValueRef<'_>, limits: &crate::encoding::EncodingLimits) -> &'static str {
    match v {
        ValueRef::Str(s) if s.len() <= 20 && parse_i64(s).is_some() => "int",
        ValueRef::Str(s) if s.len() <= 44 => "embstr",
        ValueRef::Str(_) => "raw",
        ValueRef::Set(s) if s.len() <= limits.set_intset_entries && s.iter().all(|m| parse_i64(m).is_some()) => {
            "intset"
        }
        ValueRef::Set(_) => "hashtable",
        ValueRef::Hash(h)
            if h.len() <= limits.hash_entries
                && h.iter().all(|(f, v)| f.len() <= limits.hash_value && v.len() <= limits.hash_value) =>
        {
            "listpack"
        }
        ValueRef::Hash(_) => "hashtable",
        ValueRef::List(_) => "quicklist",
        ValueRef::ZSet(z)
            if z.len() <= limits.zset_entries && z.order().iter().all(|(_, m)| m.len() <= limits.zset_value) =>
        {
            "listpack"
        }
        ValueRef::ZSet(_) => "skiplist",
    }
}

pub(super) fn object(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let sub = args[1].to_ascii_lowercase();
    if sub == b"help" {
        return Frame::Array(
            [
                "OBJECT <subcommand> [<arg> ...]. Subcommands are:",
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Not tracked by Tandem (no LFU policy): answers an error, like Redis without one.",
                "IDLETIME <key>",
                "    Always 0: Tandem does not track access times.",
                "REFCOUNT <key>",
                "    Always 1.",
            ]
            .iter()
            .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes())))
            .collect(),
        );
    }
    if args.len() != 3 || !matches!(&sub[..], b"encoding" | b"freq" | b"idletime" | b"refcount") {
        return error(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try OBJECT HELP.",
            String::from_utf8_lossy(&args[1])
        ));
    }
    let Some((value, _)) = cx.store.get(&args[2], cx.now_ms) else { return Frame::Null };
    match &sub[..] {
        b"encoding" => Frame::Bulk(Bytes::from_static(encoding_name(value, &cx.store.encoding_limits()).as_bytes())),
        b"freq" => error(
            "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
        ),
        b"idletime" => int(0),
        _ => int(1),
    }
}

/// `MEMORY USAGE key [SAMPLES n]`: the bytes the key and its value are
/// charged in `used_memory` (the store's estimate, see `INFO memory`);
/// every element is counted, so SAMPLES is accepted and not needed.
/// `MEMORY DOCTOR` / `STATS` / `MALLOC-STATS` / `PURGE` have no Tandem
/// meaning and are refused with an error that says so.
pub(super) fn memory(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let sub = args[1].to_ascii_lowercase();
    match &sub[..] {
        b"usage" if args.len() == 3 || (args.len() == 5 && args[3].eq_ignore_ascii_case(b"samples")) => {
            if args.len() == 5 && parse_i64(&args[4]).is_none_or(|n| n < 0) {
                return error("ERR value is out of range, must be positive");
            }
            cx.store.key_bytes(&args[2], cx.now_ms).map_or(Frame::Null, |b| int(b as i64))
        }
        b"usage" => error("ERR syntax error"),
        b"help" => Frame::Array(
            ["MEMORY <subcommand> [<arg> ...]. Subcommands are:", "USAGE <key> [SAMPLES <count>]"]
                .iter()
                .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes())))
                .collect(),
        ),
        _ => error(format!(
            "ERR unknown subcommand '{}' (Tandem answers MEMORY USAGE; see INFO memory). Try MEMORY HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

// -------------------------------------------------------------------- SORT

/// Parsed options of `SORT`.
#[derive(Default)]
struct SortOptions<'a> {
    by: Option<&'a Bytes>,
    no_sort: bool,
    limit: Option<(i64, i64)>,
    gets: Vec<&'a Bytes>,
    desc: bool,
    alpha: bool,
    store: Option<&'a Bytes>,
}

fn parse_sort(args: &[Bytes], readonly: bool) -> Result<SortOptions<'_>, Frame> {
    let mut o = SortOptions::default();
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        let next = |n: usize| args.get(i + n).ok_or_else(|| error(SYNTAX));
        match &opt[..] {
            b"asc" => o.desc = false,
            b"desc" => o.desc = true,
            b"alpha" => o.alpha = true,
            b"limit" => {
                let (off, cnt) = (next(1)?, next(2)?);
                let (Some(off), Some(cnt)) = (parse_i64(off), parse_i64(cnt)) else { return Err(error(NOT_INTEGER)) };
                o.limit = Some((off, cnt));
                i += 2;
            }
            b"store" if !readonly => {
                o.store = Some(next(1)?);
                i += 1;
            }
            b"by" => {
                let p = next(1)?;
                if !p.contains(&b'*') {
                    o.no_sort = true;
                } else {
                    o.by = Some(p);
                }
                i += 1;
            }
            b"get" => {
                o.gets.push(next(1)?);
                i += 1;
            }
            _ => return Err(error(SYNTAX)),
        }
        i += 1;
    }
    Ok(o)
}

/// Looks up a `SORT` `BY`/`GET` pattern for `elem`: the first `*` replaced
/// by the element; `key->field` reads a hash field; `#` is the element.
fn lookup_pattern(cx: &ReadCtx<'_>, pattern: &[u8], elem: &[u8]) -> Option<Bytes> {
    if pattern == b"#" {
        return Some(b(elem));
    }
    let star = pattern.iter().position(|&c| c == b'*')?;
    let arrow = pattern.windows(2).rposition(|w| w == b"->").filter(|&a| a > star && a + 2 < pattern.len());
    let key_end = arrow.unwrap_or(pattern.len());
    let mut key = Vec::with_capacity(key_end + elem.len());
    key.extend_from_slice(&pattern[..star]);
    key.extend_from_slice(elem);
    key.extend_from_slice(&pattern[star + 1..key_end]);
    match (cx.store.get(&key, cx.now_ms)?.0, arrow) {
        (ValueRef::Str(v), None) => Some(b(v)),
        (ValueRef::Hash(h), Some(a)) => h.get(&pattern[a + 2..]).map(b),
        _ => None,
    }
}

/// Runs a `SORT` read: the reply elements (`None` is a nil from a `GET`).
fn sort_read(cx: &ReadCtx<'_>, key: &[u8], o: &SortOptions<'_>) -> Result<Vec<Option<Bytes>>, Frame> {
    let mut elems: Vec<Bytes> = match cx.store.get(key, cx.now_ms) {
        None => Vec::new(),
        Some((ValueRef::List(l), _)) => l.items.iter().map(b).collect(),
        Some((ValueRef::Set(s), _)) => s.iter().map(|m| b(m)).collect(),
        Some((ValueRef::ZSet(z), _)) => z.order().iter().map(|(_, m)| b(m)).collect(),
        Some(_) => return Err(error(WRONGTYPE)),
    };
    if elems.len() > SORT_ELEMENTS_MAX {
        return Err(error(format!("ERR SORT sorts at most {SORT_ELEMENTS_MAX} elements (SORT_ELEMENTS_MAX)")));
    }
    // A set has no order of its own: sort it even with BY nosort, so the
    // reply (and a STORE) is deterministic on every replica.
    let is_set = matches!(cx.store.get(key, cx.now_ms), Some((ValueRef::Set(_), _)));
    if !o.no_sort || is_set {
        let weight = |e: &Bytes| match o.by {
            Some(p) => lookup_pattern(cx, p, e),
            None => Some(e.clone()),
        };
        if o.alpha || (o.no_sort && is_set) {
            let mut keyed: Vec<(Option<Bytes>, Bytes)> = elems.drain(..).map(|e| (weight(&e), e)).collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            elems = keyed.into_iter().map(|(_, e)| e).collect();
        } else {
            let mut keyed: Vec<(f64, Bytes)> = Vec::with_capacity(elems.len());
            for e in elems.drain(..) {
                let score = match weight(&e) {
                    None => 0.0,
                    Some(w) => super::hash::parse_f64(&w)
                        .ok_or_else(|| error("ERR One or more scores can't be converted into double"))?,
                };
                keyed.push((score, e));
            }
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            elems = keyed.into_iter().map(|(_, e)| e).collect();
        }
        if o.desc {
            elems.reverse();
        }
    }
    if let Some((off, cnt)) = o.limit {
        let start = (off.max(0) as usize).min(elems.len());
        let end = if cnt < 0 { elems.len() } else { start.saturating_add(cnt as usize).min(elems.len()) };
        elems = elems[start..end].to_vec();
    }
    if o.gets.is_empty() {
        return Ok(elems.into_iter().map(Some).collect());
    }
    Ok(elems.iter().flat_map(|e| o.gets.iter().map(move |p| lookup_pattern(cx, p, e))).collect())
}

pub(super) fn sort(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let o = tri!(parse_sort(args, false));
    cx.purge_expired(&args[1]);
    let out = tri!(sort_read(&cx.read(), &args[1], &o));
    let Some(dest) = o.store else {
        return Frame::Array(out.into_iter().map(|e| e.map_or(Frame::Null, Frame::Bulk)).collect());
    };
    cx.purge_expired(dest);
    let len = out.len() as i64;
    let dest_exists = cx.store.get(dest, cx.now_ms).is_some();
    if dest_exists {
        cx.emit(Effect::Del { key: dest.clone() });
    }
    if !out.is_empty() {
        let items = out.into_iter().map(|e| e.unwrap_or_default()).collect();
        cx.emit(Effect::LReplace { key: dest.clone(), items, seq: 1 });
    }
    int(len)
}

pub(super) fn sort_ro(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let o = tri!(parse_sort(args, true));
    let out = tri!(sort_read(cx, &args[1], &o));
    Frame::Array(out.into_iter().map(|e| e.map_or(Frame::Null, Frame::Bulk)).collect())
}

/// The `SORT` destination key of a request (`STORE dest`), for routing.
pub fn sort_store_key(args: &[Bytes]) -> Option<&Bytes> {
    let at = args.iter().skip(2).position(|a| a.eq_ignore_ascii_case(b"store"))? + 2;
    args.get(at + 1)
}

/// Used by the `*SCAN` commands over one collection: `cursor` is a position
/// in the collection's iteration order.
pub(super) fn scan_page<'a, T: 'a>(
    items: impl Iterator<Item = T> + 'a,
    len: usize,
    cursor: usize,
    count: usize,
    pattern: Option<&Bytes>,
    name: impl Fn(&T) -> &[u8],
    mut emit: impl FnMut(T),
) -> usize {
    let end = cursor.saturating_add(count);
    for item in items.skip(cursor).take(count) {
        if pattern.is_none_or(|p| glob_match(p, name(&item))) {
            emit(item);
        }
    }
    if end < len {
        end
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Harness;
    use super::*;

    fn bs(s: &str) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn rename_moves_every_type_with_its_expiry_and_replays_identically() {
        let mut h = Harness::new();
        h.run("SET s v EX 100");
        h.run("SADD set a b");
        h.run("HSET h f 1 g 2");
        h.run("RPUSH l a b c");
        h.run("ZADD z 1 a 2 b");
        h.run("EXPIRE z 50");
        for (from, to) in [("s", "s2"), ("set", "set2"), ("h", "h2"), ("l", "l2"), ("z", "z2")] {
            assert_eq!(h.run(&format!("RENAME {from} {to}")), ok());
            assert_eq!(h.run(&format!("EXISTS {from}")), int(0));
        }
        assert_eq!(h.run("TTL s2"), int(100));
        assert_eq!(h.run("TTL z2"), int(50));
        assert_eq!(h.run("LRANGE l2 0 -1"), Frame::Array(vec![bs("a"), bs("b"), bs("c")]));
        assert_eq!(h.run("ZSCORE z2 b"), bs("2"));
        assert_eq!(h.run("HGET h2 g"), bs("2"));
        // Over an existing destination of another type.
        h.run("SET dst x");
        assert_eq!(h.run("RENAME l2 dst"), ok());
        assert_eq!(h.run("TYPE dst"), Frame::Simple("list".into()));
        assert_eq!(h.run("RPUSH dst d"), int(4));
        assert_eq!(h.run("RENAME nope x"), error("ERR no such key"));
        assert_eq!(h.run("RENAME s2 s2"), ok());
        assert_eq!(h.run("RENAMENX s2 s2"), int(0));
        assert_eq!(h.run("RENAMENX s2 h2"), int(0));
        assert_eq!(h.run("RENAMENX s2 s3"), int(1));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn copy_keeps_the_source_and_needs_replace_over_an_existing_key() {
        let mut h = Harness::new();
        h.run("RPUSH l a b");
        h.run("SET d x");
        assert_eq!(h.run("COPY l d"), int(0));
        assert_eq!(h.run("COPY l d REPLACE"), int(1));
        assert_eq!(h.run("LRANGE d 0 -1"), Frame::Array(vec![bs("a"), bs("b")]));
        assert_eq!(h.run("LLEN l"), int(2));
        assert_eq!(h.run("COPY nope d2"), int(0));
        assert_eq!(h.run("COPY l l"), error("ERR source and destination objects are the same"));
        assert_eq!(h.run("COPY l d DB 1"), error("ERR DB index is out of range"));
        assert_eq!(h.run("COPY l e DB 0"), int(1));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn touch_randomkey_expiretime_object() {
        let mut h = Harness::new();
        assert_eq!(h.run("RANDOMKEY"), Frame::Null);
        h.run("SET a 1");
        h.run("SET b 2 PXAT 5000000");
        assert_eq!(h.run("TOUCH a b c"), int(2));
        assert!(matches!(h.run("RANDOMKEY"), Frame::Bulk(k) if &k[..] == b"a" || &k[..] == b"b"));
        assert_eq!(h.run("EXPIRETIME a"), int(-1));
        assert_eq!(h.run("EXPIRETIME c"), int(-2));
        assert_eq!(h.run("EXPIRETIME b"), int(5000));
        assert_eq!(h.run("PEXPIRETIME b"), int(5_000_000));
        assert_eq!(h.run("OBJECT ENCODING a"), bs("int"));
        h.run("SET long aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(h.run("OBJECT ENCODING long"), bs("raw"));
        h.run("SADD s 1 2");
        assert_eq!(h.run("OBJECT ENCODING s"), bs("intset"));
        h.run("SADD s x");
        assert_eq!(h.run("OBJECT ENCODING s"), bs("hashtable"));
        h.run("ZADD z 1 a");
        assert_eq!(h.run("OBJECT ENCODING z"), bs("listpack"));
        assert_eq!(h.run("OBJECT ENCODING nope"), Frame::Null);
        assert_eq!(h.run("OBJECT IDLETIME a"), int(0));
        assert!(matches!(h.run("OBJECT FREQ a"), Frame::Error(e) if e.contains("LFU")));
        assert!(matches!(h.run("OBJECT NOPE a"), Frame::Error(e) if e.contains("OBJECT HELP")));
    }

    #[test]
    fn sort_numeric_alpha_by_get_limit_and_store() {
        let mut h = Harness::new();
        h.run("RPUSH l 3 1 2 10");
        let arr = |v: &[&str]| Frame::Array(v.iter().map(|s| bs(s)).collect());
        assert_eq!(h.run("SORT l"), arr(&["1", "2", "3", "10"]));
        assert_eq!(h.run("SORT l DESC LIMIT 1 2"), arr(&["3", "2"]));
        assert_eq!(h.run("SORT l ALPHA"), arr(&["1", "10", "2", "3"]));
        h.run("MSET w_1 30 w_2 20 w_3 10 w_10 40");
        h.run("HSET o_1 name one");
        assert_eq!(h.run("SORT l BY w_*"), arr(&["3", "2", "1", "10"]));
        assert_eq!(h.run("SORT l BY nosort"), arr(&["3", "1", "2", "10"]));
        assert_eq!(
            h.run("SORT l LIMIT 0 2 GET # GET o_*->name"),
            Frame::Array(vec![bs("1"), bs("one"), bs("2"), Frame::Null])
        );
        assert_eq!(h.run("SORT l STORE dst"), int(4));
        assert_eq!(h.run("LRANGE dst 0 -1"), arr(&["1", "2", "3", "10"]));
        assert_eq!(h.run("SORT_RO l DESC"), arr(&["10", "3", "2", "1"]));
        assert_eq!(h.run("SORT_RO l STORE x"), error(SYNTAX));
        h.run("RPUSH bad a 1");
        assert_eq!(h.run("SORT bad"), error("ERR One or more scores can't be converted into double"));
        h.run("SADD s c a b");
        assert_eq!(h.run("SORT s ALPHA"), arr(&["a", "b", "c"]));
        h.run("SET str x");
        assert_eq!(h.run("SORT str"), error(WRONGTYPE));
        assert_eq!(h.run("SORT nope STORE dst"), int(0));
        assert_eq!(h.run("EXISTS dst"), int(0));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn sort_store_destination_is_routed_with_the_source() {
        let spec = crate::command::lookup(b"sort").unwrap();
        let args: Vec<Bytes> = ["SORT", "a", "DESC", "STORE", "b"].iter().map(|s| Bytes::from(s.to_string())).collect();
        let keys: Vec<&Bytes> = spec.keys(&args).collect();
        assert_eq!(keys, vec![&args[1], &args[4]]);
    }
}
