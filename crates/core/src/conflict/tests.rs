//! Laws of every merge (commutative, associative, idempotent) over random
//! histories of concurrent writes, and the scenario guarantees of each
//! policy.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::repl::NodeId;

/// One random local operation at a node.
#[derive(Debug, Clone)]
enum Op {
    Set(u8),
    Del,
    Incr(i8),
    IncrFloat(i8),
    Sadd(u8),
    Srem(u8),
    Hset(u8, u8),
    Hdel(u8),
    Hincr(u8, i8),
    Zadd(u8, u8),
    Zincr(u8, i8),
    Expire(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::Set),
        Just(Op::Del),
        any::<i8>().prop_map(Op::Incr),
        any::<i8>().prop_map(Op::IncrFloat),
        (0u8..4).prop_map(Op::Sadd),
        (0u8..4).prop_map(Op::Srem),
        ((0u8..3), any::<u8>()).prop_map(|(f, v)| Op::Hset(f, v)),
        (0u8..3).prop_map(Op::Hdel),
        ((0u8..3), any::<i8>()).prop_map(|(f, v)| Op::Hincr(f, v)),
        ((0u8..3), any::<u8>()).prop_map(|(f, v)| Op::Zadd(f, v)),
        ((0u8..3), any::<i8>()).prop_map(|(f, v)| Op::Zincr(f, v)),
        (1u8..100).prop_map(Op::Expire),
    ]
}

fn b(x: u8) -> Bytes {
    Bytes::from(vec![b'a' + (x % 26)])
}

/// One step of a random history: which node writes what, then which
/// one-way sync (from, to) runs, if any.
type Step = (u8, Op, Option<(u8, u8)>);

/// Apply `op` locally at `node` to a value of `policy`.
fn local(v: &mut KeyValue, node: NodeId, clock: &mut HlcClock, now: u64, op: &Op) {
    let hlc = clock.tick(now);
    match v {
        KeyValue::Lww(r) => {
            let value = match op {
                Op::Del => None,
                Op::Set(x) => Some(b(*x)),
                _ => Some(Bytes::from(format!("{op:?}"))),
            };
            r.write(node, hlc, StrVal { value, expire_at_ms: None });
        }
        KeyValue::Siblings(r) => {
            let ctx = r.clock.clone();
            let value = match op {
                Op::Del => None,
                _ => Some(Bytes::from(format!("{op:?}"))),
            };
            r.write(node, &ctx, hlc, StrVal { value, expire_at_ms: None });
        }
        KeyValue::Crdt(c) => match op {
            Op::Set(x) => {
                c.reg.write(node, hlc, Some(b(*x)));
                c.ctr.reset_observed();
            }
            Op::Del => c.delete_observed(node, hlc),
            Op::Incr(by) => c.ctr.add(node, *by as i64).unwrap(),
            Op::IncrFloat(by) => c.ctr.add_float(node, *by as f64 / 4.0).unwrap(),
            Op::Sadd(x) => {
                c.set.add(node, b(*x));
            }
            Op::Srem(x) => {
                c.set.remove(&b(*x));
            }
            Op::Hset(f, x) => {
                let fld = c.hash.touch(node, b(*f));
                fld.reg.write(node, hlc, Some(b(*x)));
                fld.ctr.reset_observed();
            }
            Op::Hdel(f) => {
                c.hash.remove(&b(*f));
            }
            Op::Hincr(f, by) => {
                let fld = c.hash.touch(node, b(*f));
                fld.ctr.add(node, *by as i64).unwrap();
            }
            Op::Zadd(f, x) => {
                let fld = c.zset.touch(node, b(*f));
                fld.reg.write(node, hlc, Some(Bytes::from(x.to_string())));
                fld.ctr.reset_observed();
            }
            Op::Zincr(f, by) => {
                let fld = c.zset.touch(node, b(*f));
                fld.ctr.add_float(node, *by as f64).unwrap();
            }
            Op::Expire(s) => c.set_expiry(node, hlc, Some(now + *s as u64 * 1000)),
        },
    }
}

/// Three replicas that each run a random history with random one-way
/// syncs in between; returns the three resulting states.
fn histories(policy: ConflictPolicy, steps: &[Step]) -> Vec<KeyValue> {
    let mut vals: Vec<KeyValue> = (0..3).map(|_| KeyValue::empty(policy)).collect();
    let mut clocks: Vec<HlcClock> = (1..=3).map(HlcClock::new).collect();
    for (i, (node, op, sync)) in steps.iter().enumerate() {
        let n = (*node % 3) as usize;
        // Skewed clocks: node 3 is 50 ms behind.
        let now = 1_000 + i as u64 * 10 - if n == 2 { 50 } else { 0 };
        local(&mut vals[n], n as NodeId + 1, &mut clocks[n], now, op);
        if let Some((from, to)) = sync {
            let (f, t) = ((*from % 3) as usize, (*to % 3) as usize);
            let src = vals[f].clone();
            let (merged, _) = apply(b"k", Some(vals[t].clone()), &src).unwrap();
            vals[t] = merged;
        }
    }
    vals
}

fn join(a: &KeyValue, b_: &KeyValue) -> KeyValue {
    apply(b"k", Some(a.clone()), b_).unwrap().0
}

fn policies() -> impl Strategy<Value = ConflictPolicy> {
    prop_oneof![Just(ConflictPolicy::Lww), Just(ConflictPolicy::Siblings), Just(ConflictPolicy::Crdt)]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0u8..3, op(), prop::option::of((0u8..3, 0u8..3))), 0..24)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_merge_is_commutative(policy in policies(), s in steps()) {
        let v = histories(policy, &s);
        prop_assert_eq!(join(&v[0], &v[1]), join(&v[1], &v[0]));
    }

    #[test]
    fn every_merge_is_associative(policy in policies(), s in steps()) {
        let v = histories(policy, &s);
        prop_assert_eq!(join(&join(&v[0], &v[1]), &v[2]), join(&v[0], &join(&v[1], &v[2])));
    }

    #[test]
    fn every_merge_is_idempotent(policy in policies(), s in steps()) {
        let v = histories(policy, &s);
        prop_assert_eq!(join(&v[0], &v[0]), v[0].clone());
        let j = join(&v[0], &v[1]);
        prop_assert_eq!(join(&j, &v[1]), j.clone());
    }

    #[test]
    fn or_set_add_concurrent_with_remove_keeps_the_element(pre in prop::collection::vec(0u8..4, 0..5), x in 0u8..4) {
        let mut a = OrSet::default();
        for p in &pre { a.add(1, b(*p)); }
        a.add(1, b(x));
        let mut c = a.clone();
        a.remove(&b(x));      // node 1 removes what it saw
        c.add(2, b(x));       // node 2 adds concurrently
        let mut m1 = a.clone(); m1.merge(&c);
        let mut m2 = c.clone(); m2.merge(&a);
        prop_assert!(m1.contains(&b(x)));
        prop_assert_eq!(m1, m2);
    }
}

#[test]
fn lww_keeps_the_highest_hlc_and_records_the_concurrent_loser() {
    let mut c1 = HlcClock::new(1);
    let mut c2 = HlcClock::new(2);
    let mut a = LwwReg::default();
    let mut b_ = LwwReg::default();
    a.write(1, c1.tick(100), StrVal { value: Some(Bytes::from("x")), expire_at_ms: None });
    b_.write(2, c2.tick(100), StrVal { value: Some(Bytes::from("y")), expire_at_ms: None });
    let (m, recs) = apply(b"k", Some(KeyValue::Lww(a)), &KeyValue::Lww(b_)).unwrap();
    let KeyValue::Lww(m) = m else { panic!() };
    // Same millisecond: node id 2 breaks the tie.
    assert_eq!(m.get().unwrap().value.as_deref(), Some(&b"y"[..]));
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].outcome, Outcome::Discarded);
    assert_eq!(recs[0].versions[1].value.as_deref(), Some(&b"x"[..]));
    assert!(!recs[0].versions[1].kept);
}

#[test]
fn lww_overwrite_of_a_seen_value_is_not_a_conflict() {
    let mut c1 = HlcClock::new(1);
    let mut a = LwwReg::default();
    a.write(1, c1.tick(100), StrVal { value: Some(Bytes::from("x")), expire_at_ms: None });
    let mut b_ = a.clone();
    b_.write(2, c1.tick(101), StrVal { value: Some(Bytes::from("y")), expire_at_ms: None });
    let (_, recs) = apply(b"k", Some(KeyValue::Lww(a)), &KeyValue::Lww(b_)).unwrap();
    assert!(recs.is_empty());
}

#[test]
fn resolve_replaces_exactly_the_siblings_its_context_covers() {
    let mut c = HlcClock::new(1);
    let sv = |s: &str| StrVal { value: Some(Bytes::from(s.to_string())), expire_at_ms: None };
    let mut a: MvReg<StrVal> = MvReg::default();
    let mut b_: MvReg<StrVal> = MvReg::default();
    a.write(1, &VersionVector::new(), c.tick(1), sv("x"));
    b_.write(2, &VersionVector::new(), c.tick(2), sv("y"));
    let (m, recs) = apply(b"k", Some(KeyValue::Siblings(a)), &KeyValue::Siblings(b_.clone())).unwrap();
    assert_eq!(recs[0].outcome, Outcome::Siblings);
    let KeyValue::Siblings(mut m) = m else { panic!() };
    assert_eq!(m.sibs.len(), 2);
    let ctx = m.clock.clone();
    // Concurrently with the resolve, node 3 writes z (not in ctx).
    let mut z = b_.clone();
    z.write(3, &b_.clock.clone(), c.tick(3), sv("z"));
    m.write(1, &ctx, c.tick(4), sv("resolved"));
    let (m, _) = apply(b"k", Some(KeyValue::Siblings(m)), &KeyValue::Siblings(z)).unwrap();
    let KeyValue::Siblings(m) = m else { panic!() };
    let vals: Vec<_> = m.sibs.iter().map(|s| s.value.value.clone().unwrap()).collect();
    assert_eq!(vals, vec![Bytes::from("resolved"), Bytes::from("z")]);
}

#[test]
fn crdt_counter_increment_concurrent_with_del_survives() {
    let mut c = HlcClock::new(1);
    let mut a = CrdtValue::default();
    a.ctr.add(1, 5).unwrap();
    let mut b_ = a.clone();
    a.delete_observed(1, c.tick(10));
    b_.ctr.add(2, 2).unwrap();
    a.merge(&b_, &mut Vec::new());
    assert_eq!(a.string_value(), Some(Bytes::from("2")));
}

#[test]
fn crdt_concurrent_expires_keep_the_longest_ttl() {
    let mut c = HlcClock::new(1);
    let mut a = CrdtValue::default();
    a.set.add(1, Bytes::from("m"));
    let mut b_ = a.clone();
    a.set_expiry(1, c.tick(10), Some(5_000));
    b_.set_expiry(2, c.tick(11), Some(9_000));
    let mut out = Vec::new();
    a.merge(&b_, &mut out);
    assert_eq!(a.expire_at_ms(), Some(9_000));
    assert_eq!(out[0].outcome, Outcome::Merged);
}

#[test]
fn crdt_set_counter_survives_concurrent_string_set() {
    let mut c = HlcClock::new(1);
    let mut a = CrdtValue::default();
    a.reg.write(1, c.tick(1), Some(Bytes::from("10")));
    let mut b_ = a.clone();
    a.reg.write(1, c.tick(2), Some(Bytes::from("100")));
    a.ctr.reset_observed();
    b_.ctr.add(2, 3).unwrap();
    a.merge(&b_, &mut Vec::new());
    assert_eq!(a.string_value(), Some(Bytes::from("103")));
}
