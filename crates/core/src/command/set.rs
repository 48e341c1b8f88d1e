//! Set command completions (`SPOP`, `SRANDMEMBER`, `SMISMEMBER`, the
//! algebra `SINTER`/`SUNION`/`SDIFF` and their `STORE` forms,
//! `SINTERCARD`, `SMOVE`, `SSCAN`).
//!
//! Owns their replies and effects: `SPOP` picks its members on the leader
//! (from a generator seeded by the caller's `now_ms` and the key) and logs
//! them as an `SRem`, so replicas never draw a random number. A `STORE`
//! form logs `Del` of the destination and the whole result as one `SAdd`.
//!
//! Must never: read a clock or a global RNG, or change the store other
//! than through [`WriteCtx::emit`].

use bytes::Bytes;

use super::hash::{random_indexes, Rng};
use super::keys::scan_page;
use super::{bulk, error, int, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::resp::Frame;
use crate::store::{Member, SetValue, ValueRef};

fn set_of<'a>(cx: &'a ReadCtx<'_>, key: &[u8]) -> Result<Option<&'a SetValue>, Frame> {
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::Set(s), _)) => Ok(Some(s)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

pub(super) fn spop(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
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
    let key = &args[1];
    cx.purge_expired(key);
    let picked: Vec<Bytes> = {
        let read = cx.read();
        let Some(set) = tri!(set_of(&read, key)) else {
            return if count.is_some() { Frame::Set(Vec::new()) } else { Frame::Null };
        };
        let members: Vec<&Member> = set.iter().collect();
        let mut rng = Rng::for_read(cx.store, cx.now_ms, key);
        let want = count.unwrap_or(1).min(members.len()) as i64;
        tri!(random_indexes(&mut rng, members.len(), want))
            .into_iter()
            .map(|i| Bytes::copy_from_slice(members[i]))
            .collect()
    };
    if !picked.is_empty() {
        // Row effect: the members the leader drew, never "pop n at random".
        cx.emit(Effect::SRem { key: key.clone(), members: picked.clone() });
    }
    match count {
        None => picked.into_iter().next().map_or(Frame::Null, Frame::Bulk),
        Some(_) => Frame::Set(picked.into_iter().map(Frame::Bulk).collect()),
    }
}

pub(super) fn srandmember(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let set = tri!(set_of(cx, &args[1]));
    let mut rng = Rng::for_read(cx.store, cx.now_ms, &args[1]);
    let Some(raw) = args.get(2) else {
        return match set {
            Some(s) if !s.is_empty() => bulk(s.iter().nth(rng.below(s.len())).expect("in range")),
            _ => Frame::Null,
        };
    };
    if args.len() > 3 {
        return error(SYNTAX);
    }
    let Some(count) = parse_i64(raw) else { return error(NOT_INTEGER) };
    let Some(set) = set else { return Frame::Array(Vec::new()) };
    let members: Vec<&Member> = set.iter().collect();
    let picks = tri!(random_indexes(&mut rng, members.len(), count));
    Frame::Array(picks.into_iter().map(|i| bulk(members[i])).collect())
}

pub(super) fn smismember(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let set = tri!(set_of(cx, &args[1]));
    Frame::Array(args[2..].iter().map(|m| int(set.is_some_and(|s| s.contains(&m[..])) as i64)).collect())
}

/// Most source keys of one `SINTER`/`SUNION`/`SDIFF` (bounds one command).
pub const SET_SOURCES_MAX: usize = 10_000;

/// Which set algebra.
#[derive(Clone, Copy, PartialEq)]
enum Algebra {
    Inter,
    Union,
    Diff,
}

/// The result of `op` over the sets at `keys` (missing keys are empty;
/// any key of another type is WRONGTYPE, checked for all keys first).
fn algebra(cx: &ReadCtx<'_>, keys: &[Bytes], op: Algebra) -> Result<Vec<Bytes>, Frame> {
    if keys.len() > SET_SOURCES_MAX {
        return Err(error(format!("ERR at most {SET_SOURCES_MAX} source keys (SET_SOURCES_MAX)")));
    }
    let mut sets = Vec::with_capacity(keys.len());
    for k in keys {
        sets.push(set_of(cx, k)?);
    }
    let Some((first, rest)) = sets.split_first() else { return Ok(Vec::new()) };
    let out: Vec<Bytes> = match op {
        Algebra::Inter => {
            if sets.iter().any(Option::is_none) {
                return Ok(Vec::new());
            }
            // Walk the smallest set, probe the others.
            let smallest = sets.iter().flatten().min_by_key(|s| s.len()).expect("non-empty");
            smallest
                .iter()
                .filter(|m| sets.iter().flatten().all(|s| s.contains(&m[..])))
                .map(|m| Bytes::copy_from_slice(m))
                .collect()
        }
        Algebra::Union => {
            let mut seen: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::new();
            for s in sets.iter().flatten() {
                seen.extend(s.iter().map(|m| &m[..]));
            }
            seen.into_iter().map(Bytes::copy_from_slice).collect()
        }
        Algebra::Diff => match first {
            None => Vec::new(),
            Some(f) => f
                .iter()
                .filter(|m| !rest.iter().flatten().any(|s| s.contains(&m[..])))
                .map(|m| Bytes::copy_from_slice(m))
                .collect(),
        },
    };
    Ok(out)
}

fn algebra_reply(cx: &ReadCtx<'_>, args: &[Bytes], op: Algebra) -> Frame {
    let out = tri!(algebra(cx, &args[1..], op));
    Frame::Set(out.into_iter().map(Frame::Bulk).collect())
}

pub(super) fn sinter(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    algebra_reply(cx, args, Algebra::Inter)
}

pub(super) fn sunion(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    algebra_reply(cx, args, Algebra::Union)
}

pub(super) fn sdiff(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    algebra_reply(cx, args, Algebra::Diff)
}

fn algebra_store(cx: &mut WriteCtx<'_>, args: &[Bytes], op: Algebra) -> Frame {
    for k in &args[1..] {
        cx.purge_expired(k);
    }
    let out = tri!(algebra(&cx.read(), &args[2..], op));
    let dest = &args[1];
    let len = out.len() as i64;
    if cx.store.get(dest, cx.now_ms).is_some() {
        cx.emit(Effect::Del { key: dest.clone() });
    }
    if !out.is_empty() {
        cx.emit(Effect::SAdd { key: dest.clone(), members: out });
    }
    int(len)
}

pub(super) fn sinterstore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    algebra_store(cx, args, Algebra::Inter)
}

pub(super) fn sunionstore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    algebra_store(cx, args, Algebra::Union)
}

pub(super) fn sdiffstore(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    algebra_store(cx, args, Algebra::Diff)
}

pub(super) fn sintercard(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let numkeys = match parse_i64(&args[1]) {
        Some(n) if n > 0 => n as usize,
        Some(_) => return error("ERR numkeys should be greater than 0"),
        None => return error("ERR numkeys should be greater than 0"),
    };
    if numkeys > args.len() - 2 {
        return error("ERR Number of keys can't be greater than number of args");
    }
    let mut limit = 0usize;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if !args[i].eq_ignore_ascii_case(b"limit") {
            return error(SYNTAX);
        }
        match args.get(i + 1).and_then(|a| parse_i64(a)) {
            Some(n) if n >= 0 => limit = n as usize,
            _ => return error("ERR LIMIT can't be negative"),
        }
        i += 2;
    }
    let out = tri!(algebra(cx, &args[2..2 + numkeys], Algebra::Inter));
    let n = if limit > 0 { out.len().min(limit) } else { out.len() };
    int(n as i64)
}

pub(super) fn smove(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let (src, dst, member) = (&args[1], &args[2], &args[3]);
    cx.purge_expired(src);
    cx.purge_expired(dst);
    let read = cx.read();
    let from = tri!(set_of(&read, src));
    tri!(set_of(&read, dst));
    if !from.is_some_and(|s| s.contains(&member[..])) {
        return int(0);
    }
    if src == dst {
        return int(1);
    }
    cx.emit(Effect::SRem { key: src.clone(), members: vec![member.clone()] });
    cx.emit(Effect::SAdd { key: dst.clone(), members: vec![member.clone()] });
    int(1)
}

/// `SSCAN`: like `HSCAN`, the cursor is a position in the set's iteration
/// order (exact while the set is not resized during the scan).
pub(super) fn sscan(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let set = tri!(set_of(cx, &args[1]));
    let (cursor, pattern, count) = tri!(super::hash::parse_scan_args(&args[2..]));
    let mut out = Vec::new();
    let next = match set {
        None => 0,
        Some(s) => scan_page(s.iter(), s.len(), cursor, count, pattern, |m| &m[..], |m| out.push(bulk(m))),
    };
    Frame::Array(vec![Frame::Bulk(Bytes::from(next.to_string())), Frame::Array(out)])
}

#[cfg(test)]
mod tests {
    use super::super::tests::Harness;
    use super::*;

    #[test]
    fn spop_logs_the_members_it_drew_and_replays_identically() {
        let mut h = Harness::new();
        h.run("SADD s a b c d e");
        let Frame::Bulk(one) = h.run("SPOP s") else { panic!() };
        assert_eq!(h.run(&format!("SISMEMBER s {}", String::from_utf8_lossy(&one))), int(0));
        let Frame::Set(two) = h.run("SPOP s 2") else { panic!() };
        assert_eq!(two.len(), 2);
        assert_eq!(h.run("SCARD s"), int(2));
        assert!(matches!(h.log.last(), Some(Effect::SRem { members, .. }) if members.len() == 2));
        assert_eq!(h.replayed().digest(), h.store.digest());
        let Frame::Set(rest) = h.run("SPOP s 10") else { panic!() };
        assert_eq!(rest.len(), 2);
        assert_eq!(h.run("EXISTS s"), int(0));
        assert_eq!(h.run("SPOP s"), Frame::Null);
    }

    #[test]
    fn srandmember_and_smismember() {
        let mut h = Harness::new();
        h.run("SADD s a b c");
        let Frame::Array(v) = h.run("SRANDMEMBER s -7") else { panic!() };
        assert_eq!(v.len(), 7);
        let Frame::Array(v) = h.run("SRANDMEMBER s 7") else { panic!() };
        assert_eq!(v.len(), 3);
        assert_eq!(h.run("SMISMEMBER s a x"), Frame::Array(vec![int(1), int(0)]));
        assert!(h.log.len() == 1, "reads log nothing");
    }
    fn sorted(f: Frame) -> Vec<Frame> {
        let (Frame::Set(mut v) | Frame::Array(mut v)) = f else { panic!("{f:?}") };
        v.sort_by_key(|f| format!("{f:?}"));
        v
    }

    fn bs(items: &[&str]) -> Vec<Frame> {
        items.iter().map(|s| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))).collect()
    }

    #[test]
    fn sinter_sunion_sdiff_and_their_store_forms() {
        let mut h = Harness::new();
        h.run("SADD a 1 2 3 4");
        h.run("SADD b 3 4 5");
        h.run("SADD c 4 5 6");
        assert_eq!(sorted(h.run("SINTER a b c")), bs(&["4"]));
        assert_eq!(sorted(h.run("SINTER a nope")), bs(&[]));
        assert_eq!(sorted(h.run("SUNION a b nope")), bs(&["1", "2", "3", "4", "5"]));
        assert_eq!(sorted(h.run("SDIFF a b c")), bs(&["1", "2"]));
        assert_eq!(sorted(h.run("SDIFF nope a")), bs(&[]));
        assert_eq!(h.run("SINTERSTORE d a b"), int(2));
        assert_eq!(sorted(h.run("SMEMBERS d")), bs(&["3", "4"]));
        assert_eq!(h.run("SUNIONSTORE d a c"), int(6));
        assert_eq!(h.run("SDIFFSTORE d a a"), int(0));
        assert_eq!(h.run("EXISTS d"), int(0));
        h.run("SET str x");
        assert_eq!(h.run("SINTER nope str"), error(WRONGTYPE));
        assert_eq!(h.run("SUNIONSTORE d a str"), error(WRONGTYPE));
        // The destination may be one of the sources.
        assert_eq!(h.run("SINTERSTORE a a b"), int(2));
        assert_eq!(sorted(h.run("SMEMBERS a")), bs(&["3", "4"]));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn sintercard_counts_with_a_limit() {
        let mut h = Harness::new();
        h.run("SADD a 1 2 3 4");
        h.run("SADD b 2 3 4 5");
        assert_eq!(h.run("SINTERCARD 2 a b"), int(3));
        assert_eq!(h.run("SINTERCARD 2 a b LIMIT 2"), int(2));
        assert_eq!(h.run("SINTERCARD 2 a b LIMIT 0"), int(3));
        assert_eq!(h.run("SINTERCARD 1 nope"), int(0));
        assert_eq!(h.run("SINTERCARD 0 a"), error("ERR numkeys should be greater than 0"));
        assert_eq!(h.run("SINTERCARD 3 a b"), error("ERR Number of keys can't be greater than number of args"));
        assert_eq!(h.run("SINTERCARD 2 a b LIMIT -1"), error("ERR LIMIT can't be negative"));
    }

    #[test]
    fn smove_moves_one_member_and_checks_both_types() {
        let mut h = Harness::new();
        h.run("SADD a x y");
        assert_eq!(h.run("SMOVE a b x"), int(1));
        assert_eq!(h.run("SISMEMBER b x"), int(1));
        assert_eq!(h.run("SISMEMBER a x"), int(0));
        assert_eq!(h.run("SMOVE a b nope"), int(0));
        assert_eq!(h.run("SMOVE a a y"), int(1));
        assert_eq!(h.run("SMOVE a b y"), int(1));
        assert_eq!(h.run("EXISTS a"), int(0));
        h.run("SET s v");
        assert_eq!(h.run("SMOVE b s x"), error(WRONGTYPE));
        assert_eq!(h.run("SMOVE s b x"), error(WRONGTYPE));
        assert_eq!(h.replayed().digest(), h.store.digest());
    }

    #[test]
    fn sscan_returns_every_member_once_over_a_stable_set() {
        let mut h = Harness::new();
        let members: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        h.run(&format!("SADD s {}", members.join(" ")));
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let Frame::Array(v) = h.run(&format!("SSCAN s {cursor} COUNT 7")) else { panic!() };
            let Frame::Bulk(c) = &v[0] else { panic!() };
            let Frame::Array(page) = &v[1] else { panic!() };
            seen.extend(page.iter().cloned());
            cursor = String::from_utf8_lossy(c).into_owned();
            if cursor == "0" {
                break;
            }
        }
        assert_eq!(seen.len(), 100);
        let Frame::Array(v) = h.run("SSCAN s 0 MATCH m1? COUNT 1000") else { panic!() };
        assert!(matches!(&v[1], Frame::Array(p) if p.len() == 10));
        assert_eq!(h.run("SSCAN nope 0"), Frame::Array(vec![Frame::Bulk("0".into()), Frame::Array(vec![])]));
    }
}
