//! Unit tests of the write contract: a write over its size budget changes
//! nothing; undo puts every kind of effect back exactly.

use bytes::Bytes;

use super::*;
use crate::command::{lookup, Handler};

const NOW: u64 = 1_000_000;

fn args(line: &[&[u8]]) -> Vec<Bytes> {
    line.iter().map(|a| Bytes::copy_from_slice(a)).collect()
}

fn write(store: &mut Store, batch: &mut Batch, line: &[&[u8]]) -> Frame {
    let args = args(line);
    let Handler::Write(f) = lookup(&args[0]).expect("known").handler else { panic!("not a write") };
    execute(f, store, NOW, &args, batch)
}

fn setup() -> Store {
    let mut store = Store::new(1);
    let mut batch = Batch::new(ENTRY_PAYLOAD_BYTES_MAX);
    for line in [
        &[&b"SET"[..], b"a", b"old-a"][..],
        &[b"SET", b"b", b"old-b", b"PX", b"5000"],
        &[b"SADD", b"s", b"x", b"y"],
        &[b"SADD", b"t", b"only"],
        &[b"HSET", b"h", b"f1", b"v1", b"f2", b"v2"],
        &[b"RPUSH", b"l", b"x", b"y", b"z"],
        &[b"ZADD", b"z", b"1", b"one", b"2", b"two"],
        &[b"PEXPIRE", b"h", b"50000"],
    ] {
        assert!(!matches!(write(&mut store, &mut batch, line), Frame::Error(_)));
        batch.commit();
    }
    store
}

#[test]
fn an_mset_over_the_budget_is_refused_whole_and_changes_nothing() {
    let mut store = setup();
    let before = store.digest();
    let mut batch = Batch::new(1000);
    let big = vec![b'v'; 600];
    let reply = write(&mut store, &mut batch, &[b"MSET", b"a", &big, b"b", &big, b"c", b"small"]);
    let Frame::Error(e) = reply else { panic!("not refused: {reply:?}") };
    assert!(e.starts_with("ERR ") && e.contains("nothing was changed") && e.contains("1000"), "{e}");
    assert!(batch.is_empty(), "no effect is left to log");
    assert_eq!(store.digest(), before, "the first key's effect was undone");
    assert!(matches!(store.get(b"a", NOW), Some((crate::store::ValueRef::Str(v), None)) if v == b"old-a"));
}

#[test]
fn an_hset_rpush_or_zadd_over_the_budget_is_refused_whole_and_changes_nothing() {
    let big = vec![b'v'; 600];
    let big2 = vec![b'w'; 600];
    let lines: Vec<Vec<&[u8]>> = vec![
        vec![b"HSET", b"h", b"f1", &big, b"f3", &big],
        vec![b"HSET", b"new-hash", b"f", &big, b"g", &big],
        vec![b"RPUSH", b"l", &big, &big],
        vec![b"LPUSH", b"new-list", &big, &big],
        vec![b"ZADD", b"z", b"5", &big, b"6", &big2],
        vec![b"ZADD", b"new-zset", b"5", &big, b"6", &big2],
    ];
    for line in &lines {
        let mut store = setup();
        let before = store.digest();
        let mut batch = Batch::new(1000);
        let reply = write(&mut store, &mut batch, line);
        let Frame::Error(e) = reply else { panic!("not refused: {reply:?}") };
        assert!(e.contains("nothing was changed"), "{e}");
        assert!(batch.is_empty());
        assert_eq!(store.digest(), before, "{:?}", String::from_utf8_lossy(line[0]));
        assert_eq!(store.len(), 7);
    }
}

#[test]
fn a_write_within_the_budget_is_applied_and_its_effects_returned() {
    let mut store = setup();
    let mut batch = Batch::new(2000);
    let big = vec![b'v'; 600];
    assert_eq!(write(&mut store, &mut batch, &[b"MSET", b"a", &big, b"b", &big]), Frame::Simple("OK".into()));
    assert_eq!(batch.effects().len(), 2);
    batch.commit();
    assert!(matches!(store.get(b"b", NOW), Some((crate::store::ValueRef::Str(v), None)) if v.len() == 600));
}

#[test]
fn the_budget_never_exceeds_what_one_log_entry_carries() {
    let batch = Batch::new(usize::MAX);
    assert_eq!(batch.bytes_max, ENTRY_PAYLOAD_BYTES_MAX);
    assert_eq!(crate::resp::BULK_BYTES_MAX + ENTRY_OVERHEAD_RESERVE_BYTES, ENTRY_PAYLOAD_BYTES_MAX);
}

#[test]
fn the_size_bound_covers_the_real_encoding() {
    let effects = vec![
        Effect::Set {
            key: Bytes::from(vec![1; 300]),
            value: Bytes::from(vec![2; 70_000]),
            expire_at_ms: Some(u64::MAX),
        },
        Effect::Del { key: Bytes::from_static(b"k") },
        Effect::Expire { key: Bytes::from_static(b"k"), expire_at_ms: None },
        Effect::SAdd { key: Bytes::from_static(b"s"), members: vec![Bytes::from(vec![3; 200]); 50] },
        Effect::SRem { key: Bytes::from_static(b"s"), members: vec![Bytes::from_static(b"m")] },
        Effect::HSet {
            key: Bytes::from_static(b"h"),
            fields: vec![(Bytes::from(vec![4; 100]), Bytes::from(vec![5; 300])); 7],
        },
        Effect::HDel { key: Bytes::from_static(b"h"), fields: vec![Bytes::from(vec![4; 100]); 3] },
        Effect::LPush {
            key: Bytes::from_static(b"l"),
            left: true,
            items: vec![Bytes::from(vec![6; 90]); 5],
            seq: u64::MAX,
        },
        Effect::LPop { key: Bytes::from_static(b"l"), left: false, count: u64::MAX, seq: u64::MAX },
        Effect::LSet {
            key: Bytes::from_static(b"l"),
            index: u64::MAX,
            value: Bytes::from(vec![7; 150]),
            seq: u64::MAX,
        },
        Effect::LReplace { key: Bytes::from_static(b"l"), items: vec![Bytes::from(vec![8; 20]); 9], seq: u64::MAX },
        Effect::ZAdd { key: Bytes::from_static(b"z"), members: vec![(u64::MAX, Bytes::from(vec![9; 40])); 6] },
        Effect::ZRem { key: Bytes::from_static(b"z"), members: vec![Bytes::from(vec![9; 40]); 2] },
        Effect::FlushAll,
    ];
    let bound = ENTRY_HEADER_BYTES_MAX + effects.iter().map(effect_bytes_bound).sum::<usize>();
    let entry = crate::effect::LogEntry { lsn: 1, epoch: 1, commit_ms: u64::MAX, effects };
    let mut out = Vec::new();
    entry.encode_payload(&mut out);
    assert!(out.len() <= bound, "encoded {} > bound {bound}", out.len());
}

/// Every kind of effect, applied and then rolled back, leaves the store
/// exactly as it was.
#[test]
fn rollback_restores_every_kind_of_effect() {
    let lines: Vec<Vec<&[u8]>> = vec![
        vec![b"SET", b"a", b"new"],
        vec![b"SET", b"s", b"string-over-a-set"],
        vec![b"DEL", b"a", b"b", b"s", b"missing"],
        vec![b"PEXPIRE", b"a", b"100"],
        vec![b"PERSIST", b"b"],
        vec![b"SADD", b"s", b"x", b"z", b"z", b"w"],
        vec![b"SADD", b"a", b"turns-into-a-set"],
        vec![b"SREM", b"s", b"x", b"nope"],
        vec![b"SREM", b"t", b"only"],
        vec![b"APPEND", b"a", b"-more"],
        vec![b"INCR", b"counter"],
        vec![b"FLUSHALL"],
        vec![b"GETDEL", b"b"],
        vec![b"HSET", b"h", b"f1", b"changed", b"f3", b"added", b"f1", b"twice"],
        vec![b"HSET", b"a", b"f", b"hash-over-a-string"],
        vec![b"HDEL", b"h", b"f2", b"nope"],
        vec![b"HDEL", b"h", b"f1", b"f2"],
        vec![b"HINCRBY", b"h", b"n", b"5"],
        vec![b"RPUSH", b"l", b"r1", b"r2"],
        vec![b"LPUSH", b"new-list", b"n1"],
        vec![b"LPOP", b"l", b"2"],
        vec![b"RPOP", b"l", b"3"],
        vec![b"LSET", b"l", b"1", b"set"],
        vec![b"LREM", b"l", b"0", b"y"],
        vec![b"LINSERT", b"l", b"BEFORE", b"y", b"ins"],
        vec![b"LTRIM", b"l", b"1", b"1"],
        vec![b"LMOVE", b"l", b"l2", b"LEFT", b"RIGHT"],
        vec![b"ZADD", b"z", b"3", b"one", b"4", b"four"],
        vec![b"ZADD", b"s", b"1", b"zset-over-a-set"],
        vec![b"ZINCRBY", b"z", b"2", b"two"],
        vec![b"ZREM", b"z", b"one", b"two"],
        vec![b"ZPOPMIN", b"z", b"1"],
        vec![b"DEL", b"h", b"l", b"z"],
    ];
    for line in &lines {
        let mut store = setup();
        let before = store.digest();
        let mut batch = Batch::new(ENTRY_PAYLOAD_BYTES_MAX);
        let _ = write(&mut store, &mut batch, line);
        batch.rollback(&mut store);
        assert_eq!(
            store.digest(),
            before,
            "rollback of {:?}",
            line.iter().map(|a| String::from_utf8_lossy(a)).collect::<Vec<_>>()
        );
        assert_eq!(store.keys_with_expiry(), 2);
        // The store still works normally after the undo.
        let _ = write(&mut store, &mut batch, &[b"SADD", b"s", b"again"]);
        batch.commit();
        assert!(store.get(b"s", NOW).is_some());
    }
    // Several effects of one transaction, undone newest first.
    let mut store = setup();
    let before = store.digest();
    let mut batch = Batch::new(ENTRY_PAYLOAD_BYTES_MAX);
    for line in &lines {
        let args = args(line);
        let Handler::Write(f) = lookup(&args[0]).expect("known").handler else { panic!() };
        let _ = run(f, &mut store, NOW, &args, &mut batch);
    }
    batch.rollback(&mut store);
    assert_eq!(store.digest(), before);
    assert_eq!(store.len(), 7);
}
