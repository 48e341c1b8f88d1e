//! Set command completions (`SPOP`, `SRANDMEMBER`, `SMISMEMBER`).
//!
//! Owns their replies and effects: `SPOP` picks its members on the leader
//! (from a generator seeded by the caller's `now_ms` and the key) and logs
//! them as an `SRem`, so replicas never draw a random number.
//!
//! Must never: read a clock or a global RNG, or change the store other
//! than through [`WriteCtx::emit`].

use bytes::Bytes;

use super::hash::{random_indexes, Rng};
use super::{bulk, error, int, parse_i64, ReadCtx, WriteCtx, NOT_INTEGER, SYNTAX, WRONGTYPE};
use crate::effect::Effect;
use crate::resp::Frame;
use crate::store::{SetValue, ValueRef};

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
        let members: Vec<&Box<[u8]>> = set.iter().collect();
        let mut rng = Rng::for_read(cx.now_ms, key);
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
    let mut rng = Rng::for_read(cx.now_ms, &args[1]);
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
    let members: Vec<&Box<[u8]>> = set.iter().collect();
    let picks = tri!(random_indexes(&mut rng, members.len(), count));
    Frame::Array(picks.into_iter().map(|i| bulk(members[i])).collect())
}

pub(super) fn smismember(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let set = tri!(set_of(cx, &args[1]));
    Frame::Array(args[2..].iter().map(|m| int(set.is_some_and(|s| s.contains(&m[..])) as i64)).collect())
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
}
