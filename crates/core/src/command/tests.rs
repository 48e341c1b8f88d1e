//! Unit tests of the data commands: replies, error texts and the row effects
//! they log.

use super::*;

const NOW: u64 = 1_000_000;

pub(super) struct Harness {
    pub(super) store: Store,
    pub(super) log: Vec<Effect>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Harness { store: Store::new(42), log: Vec::new() }
    }

    /// The reply as a RESP2 client sees it (scores as bulk strings, pairs
    /// flattened): what these tests were written against.
    pub(super) fn run_at(&mut self, now_ms: u64, line: &str) -> Frame {
        resp2_view(self.run_typed(now_ms, line))
    }

    /// The reply with its RESP3 types (doubles, pairs) kept.
    pub(super) fn run_typed(&mut self, now_ms: u64, line: &str) -> Frame {
        let args: Vec<Bytes> = line.split(' ').map(|s| Bytes::copy_from_slice(s.as_bytes())).collect();
        let spec = lookup(&args[0]).expect("known command");
        if !spec.arity_ok(args.len()) {
            return wrong_arity(spec.name);
        }
        match spec.handler {
            Handler::Read(f) => f(&ReadCtx { store: &self.store, now_ms }, &args),
            Handler::Write(f) => {
                let mut batch = crate::write::Batch::new(crate::write::ENTRY_PAYLOAD_BYTES_MAX);
                let reply = crate::write::execute(f, &mut self.store, now_ms, &args, &mut batch);
                self.log.extend(batch.take_effects());
                reply
            }
            Handler::Node => panic!("node command"),
        }
    }

    pub(super) fn run(&mut self, line: &str) -> Frame {
        self.run_at(NOW, line)
    }

    /// Runs a request whose arguments are raw bytes (binary values).
    pub(super) fn run_bytes(&mut self, args: &[&[u8]]) -> Frame {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        let spec = lookup(&args[0]).expect("known command");
        let Handler::Write(f) = spec.handler else { panic!("run_bytes runs write commands") };
        let mut batch = crate::write::Batch::new(crate::write::ENTRY_PAYLOAD_BYTES_MAX);
        let reply = crate::write::execute(f, &mut self.store, NOW, &args, &mut batch);
        self.log.extend(batch.take_effects());
        reply
    }

    /// The state a replica reaches by replaying this harness's log.
    pub(super) fn replayed(&self) -> Store {
        let mut s = Store::new(7);
        for e in &self.log {
            s.apply(e);
        }
        s
    }
}

fn bulk_str(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn err_text(f: Frame) -> String {
    match f {
        Frame::Error(e) => e,
        other => panic!("expected error, got {other:?}"),
    }
}

#[test]
fn command_table_is_sorted_for_lookup() {
    for w in COMMANDS.windows(2) {
        assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
    }
    assert_eq!(lookup(b"GeT").unwrap().name, "get");
    for (i, c) in COMMANDS.iter().enumerate() {
        assert_eq!(c.index(), i);
    }
    assert!(lookup(b"nosuchcommand").is_none());
    assert!(lookup(&[b'a'; 100]).is_none());
}

#[test]
fn set_get_roundtrip_and_options() {
    let mut h = Harness::new();
    assert_eq!(h.run("SET k v"), ok());
    assert_eq!(h.run("GET k"), bulk_str("v"));
    assert_eq!(h.run("SET k w NX"), Frame::Null);
    assert_eq!(h.run("SET k w XX GET"), bulk_str("v"));
    assert_eq!(h.run("SET missing w XX"), Frame::Null);
    assert_eq!(h.run("GET missing"), Frame::Null);
    assert_eq!(err_text(h.run("SET k v NX XX")), "ERR syntax error");
    assert_eq!(err_text(h.run("SET k v EX 0")), "ERR invalid expire time in 'set' command");
    assert_eq!(err_text(h.run("SET k v EX abc")), "ERR value is not an integer or out of range");
    assert_eq!(err_text(h.run("SET k v EX 10 PX 10")), "ERR syntax error");
    assert_eq!(err_text(h.run("SET k v KEEPTTL EX 10")), "ERR syntax error");
}

#[test]
fn set_ex_logs_the_absolute_expiry_computed_when_it_ran() {
    let mut h = Harness::new();
    h.run("SET k v EX 10");
    assert_eq!(
        h.log.last().unwrap(),
        &Effect::Set { key: "k".into(), value: "v".into(), expire_at_ms: Some(NOW + 10_000) }
    );
    h.run("EXPIRE k 5");
    assert_eq!(h.log.last().unwrap(), &Effect::Expire { key: "k".into(), expire_at_ms: Some(NOW + 5_000) });
    h.run("SET k v2 KEEPTTL");
    assert_eq!(
        h.log.last().unwrap(),
        &Effect::Set { key: "k".into(), value: "v2".into(), expire_at_ms: Some(NOW + 5_000) }
    );
}

#[test]
fn incr_logs_the_resulting_integer_not_the_delta() {
    let mut h = Harness::new();
    assert_eq!(h.run("INCR c"), Frame::Integer(1));
    assert_eq!(h.run("INCRBY c 41"), Frame::Integer(42));
    assert_eq!(h.run("DECR c"), Frame::Integer(41));
    assert_eq!(h.run("DECRBY c 1"), Frame::Integer(40));
    assert_eq!(h.log.last().unwrap(), &Effect::Set { key: "c".into(), value: "40".into(), expire_at_ms: None });
    assert_eq!(h.replayed().digest(), h.store.digest());
}

#[test]
fn incr_errors_use_redis_texts() {
    let mut h = Harness::new();
    h.run("SET s abc");
    assert_eq!(err_text(h.run("INCR s")), "ERR value is not an integer or out of range");
    h.run("SET big 9223372036854775807");
    assert_eq!(err_text(h.run("INCR big")), "ERR increment or decrement would overflow");
    assert_eq!(err_text(h.run("INCRBY x 1.5")), "ERR value is not an integer or out of range");
    assert_eq!(err_text(h.run("DECRBY x -9223372036854775808")), "ERR value is not an integer or out of range");
    h.run("SADD set a");
    assert!(err_text(h.run("INCR set")).starts_with("WRONGTYPE"));
    h.run("SET z 007");
    assert_eq!(err_text(h.run("INCR z")), "ERR value is not an integer or out of range");
}

#[test]
fn expired_keys_are_never_returned_and_are_deleted_through_the_log() {
    let mut h = Harness::new();
    h.run("SET k v PX 100");
    assert_eq!(h.run_at(NOW + 99, "GET k"), bulk_str("v"));
    assert_eq!(h.run_at(NOW + 100, "GET k"), Frame::Null);
    assert_eq!(h.run_at(NOW + 100, "EXISTS k"), Frame::Integer(0));
    assert_eq!(h.run_at(NOW + 100, "TTL k"), Frame::Integer(-2));
    // A write that touches the expired key first logs its deletion.
    assert_eq!(h.run_at(NOW + 200, "INCR k"), Frame::Integer(1));
    assert_eq!(h.log[h.log.len() - 2], Effect::Del { key: "k".into() });
    assert_eq!(h.replayed().digest(), h.store.digest());
}

#[test]
fn ttl_pttl_persist_and_expire_conditions() {
    let mut h = Harness::new();
    h.run("SET k v");
    assert_eq!(h.run("TTL k"), Frame::Integer(-1));
    assert_eq!(h.run("EXPIRE k 100 XX"), Frame::Integer(0));
    assert_eq!(h.run("EXPIRE k 100 NX"), Frame::Integer(1));
    assert_eq!(h.run("TTL k"), Frame::Integer(100));
    assert_eq!(h.run("PTTL k"), Frame::Integer(100_000));
    assert_eq!(h.run("EXPIRE k 50 GT"), Frame::Integer(0));
    assert_eq!(h.run("EXPIRE k 50 LT"), Frame::Integer(1));
    assert_eq!(h.run("PERSIST k"), Frame::Integer(1));
    assert_eq!(h.run("PERSIST k"), Frame::Integer(0));
    assert_eq!(h.run("EXPIRE missing 10"), Frame::Integer(0));
    assert_eq!(
        err_text(h.run("EXPIRE k 10 NX XX")),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(h.run("PEXPIREAT k 1"), Frame::Integer(1));
    assert_eq!(h.run("EXISTS k"), Frame::Integer(0));
    assert_eq!(h.log.last().unwrap(), &Effect::Del { key: "k".into() });
    h.run("SET k v");
    assert_eq!(h.run(&format!("EXPIREAT k {}", NOW / 1000 + 60)), Frame::Integer(1));
    assert_eq!(h.run("TTL k"), Frame::Integer(60));
}

#[test]
fn wrongtype_is_reported_for_every_string_command_on_a_set() {
    let mut h = Harness::new();
    h.run("SADD s a b");
    for line in ["GET s", "APPEND s x", "STRLEN s", "INCR s", "GETDEL s", "SET s x GET"] {
        assert_eq!(
            err_text(h.run(line)),
            "WRONGTYPE Operation against a key holding the wrong kind of value",
            "{line}"
        );
    }
    h.run("SET str v");
    for line in ["SADD str a", "SREM str a", "SMEMBERS str", "SISMEMBER str a", "SCARD str"] {
        assert!(err_text(h.run(line)).starts_with("WRONGTYPE"), "{line}");
    }
    // Plain SET replaces any type, like Redis.
    assert_eq!(h.run("SET s x"), ok());
    assert_eq!(h.run("TYPE s"), Frame::Simple("string".into()));
}

#[test]
fn string_commands() {
    let mut h = Harness::new();
    assert_eq!(h.run("APPEND k ab"), Frame::Integer(2));
    assert_eq!(h.run("APPEND k cd"), Frame::Integer(4));
    assert_eq!(h.run("STRLEN k"), Frame::Integer(4));
    assert_eq!(h.run("SETNX k x"), Frame::Integer(0));
    assert_eq!(h.run("SETNX n x"), Frame::Integer(1));
    assert_eq!(h.run("MSET a 1 b 2"), ok());
    assert_eq!(
        h.run("MGET a b nope k"),
        Frame::Array(vec![bulk_str("1"), bulk_str("2"), Frame::Null, bulk_str("abcd")])
    );
    assert_eq!(h.run("GETDEL a"), bulk_str("1"));
    assert_eq!(h.run("GETDEL a"), Frame::Null);
    assert_eq!(h.run("DEL a b nope"), Frame::Integer(1));
    assert_eq!(h.run("EXISTS k k n"), Frame::Integer(3));
    assert_eq!(err_text(h.run("MSET a 1 b")), "ERR wrong number of arguments for 'mset' command");
    assert_eq!(h.replayed().digest(), h.store.digest());
}

#[test]
fn set_commands() {
    let mut h = Harness::new();
    assert_eq!(h.run("SADD s a b a"), Frame::Integer(2));
    assert_eq!(h.run("SADD s b c"), Frame::Integer(1));
    assert_eq!(h.run("SCARD s"), Frame::Integer(3));
    assert_eq!(h.run("SISMEMBER s a"), Frame::Integer(1));
    assert_eq!(h.run("SISMEMBER s z"), Frame::Integer(0));
    assert_eq!(h.run("SREM s a z a"), Frame::Integer(1));
    let Frame::Set(mut members) = h.run("SMEMBERS s") else { panic!() };
    members.sort_by_key(|f| format!("{f:?}"));
    assert_eq!(members, vec![bulk_str("b"), bulk_str("c")]);
    assert_eq!(h.run("SREM s b c"), Frame::Integer(2));
    assert_eq!(h.run("EXISTS s"), Frame::Integer(0));
    assert_eq!(h.run("TYPE s"), Frame::Simple("none".into()));
    assert_eq!(h.replayed().digest(), h.store.digest());
}

#[test]
fn keys_scan_dbsize_flushall() {
    let mut h = Harness::new();
    for i in 0..50 {
        h.run(&format!("SET user:{i} v"));
    }
    h.run("SET other v");
    assert_eq!(h.run("DBSIZE"), Frame::Integer(51));
    let Frame::Array(keys) = h.run("KEYS user:*") else { panic!() };
    assert_eq!(keys.len(), 50);
    let mut seen = 0;
    let mut cursor = "0".to_string();
    loop {
        let Frame::Array(parts) = h.run(&format!("SCAN {cursor} MATCH user:* COUNT 7")) else { panic!() };
        let (Frame::Bulk(c), Frame::Array(found)) = (&parts[0], &parts[1]) else { panic!() };
        seen += found.len();
        cursor = String::from_utf8(c.to_vec()).unwrap();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(seen, 50);
    assert_eq!(err_text(h.run("SCAN x")), "ERR invalid cursor");
    assert_eq!(h.run("FLUSHALL"), ok());
    assert_eq!(h.run("DBSIZE"), Frame::Integer(0));
    assert_eq!(h.log.last().unwrap(), &Effect::FlushAll);
}

#[test]
fn reads_never_emit_effects() {
    let mut h = Harness::new();
    h.run("SET k v PX 1");
    let before = h.log.len();
    for line in ["GET k", "MGET k", "EXISTS k", "TTL k", "PTTL k", "TYPE k", "KEYS *", "SCAN 0", "DBSIZE", "STRLEN k"] {
        h.run_at(NOW + 10, line);
    }
    assert_eq!(h.log.len(), before);
}

#[test]
fn parse_i64_is_strict_like_redis() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"-12"), Some(-12));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [&b""[..], b"-", b"+1", b" 1", b"01", b"-0", b"1.0", b"9223372036854775808", b"12a"] {
        assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn unknown_command_error_names_the_command_and_args() {
    let args: Vec<Bytes> = vec!["FOO".into(), "a".into(), "b".into()];
    assert_eq!(err_text(unknown_command(&args)), "ERR unknown command 'FOO', with args beginning with: 'a' 'b' ");
}

#[test]
fn pexpireat_far_in_the_future_is_accepted_and_overflow_is_refused() {
    let mut h = Harness::new();
    h.run("SET k v");
    assert_eq!(h.run("PEXPIREAT k 9223372036854770000"), Frame::Integer(1));
    assert_eq!(h.run("PTTL k"), Frame::Integer(9223372036854770000 - NOW as i64));
    assert_eq!(err_text(h.run("EXPIRE k 9223372036854770000")), "ERR invalid expire time in 'expire' command");
    assert_eq!(err_text(h.run("PEXPIRE k 9223372036854775807")), "ERR invalid expire time in 'pexpire' command");
    assert_eq!(h.replayed().digest(), h.store.digest());
}

#[test]
fn command_key_positions_come_from_the_command_table() {
    let keys = |line: &str| -> Vec<String> {
        let args: Vec<Bytes> = line.split(' ').map(|s| Bytes::copy_from_slice(s.as_bytes())).collect();
        let spec = lookup(&args[0]).unwrap();
        spec.keys(&args).map(|k| String::from_utf8_lossy(k).into_owned()).collect()
    };
    assert_eq!(keys("get a"), ["a"]);
    assert_eq!(keys("set a 1 EX 5"), ["a"]);
    assert_eq!(keys("mset a 1 b 2"), ["a", "b"]);
    assert_eq!(keys("del a b c"), ["a", "b", "c"]);
    assert_eq!(keys("ping"), Vec::<String>::new());
    assert_eq!(keys("zunion 2 a b WEIGHTS 1 2"), ["a", "b"]);
    assert_eq!(keys("zunionstore d 2 a b"), ["d", "a", "b"]);
    assert_eq!(keys("blmpop 0 2 a b LEFT"), ["a", "b"]);
    assert_eq!(keys("lmpop 3 a LEFT"), ["a", "LEFT"]);
    assert_eq!(keys("zmpop x a MIN"), Vec::<String>::new());
    assert_eq!(keys("blpop a b 0"), ["a", "b"]);
    assert_eq!(keys("keys *"), Vec::<String>::new());
}

/// `frame` as RESP2 shows it: doubles become bulk strings, pairs flat arrays.
fn resp2_view(frame: Frame) -> Frame {
    match frame {
        Frame::Double(_) => {
            let mut out = bytes::BytesMut::new();
            crate::resp::encode(&frame, crate::resp::Protocol::Resp2, &mut out);
            let text = std::str::from_utf8(&out).expect("ascii");
            let body = text.split("\r\n").nth(1).expect("a bulk string");
            Frame::Bulk(Bytes::copy_from_slice(body.as_bytes()))
        }
        Frame::Pairs(pairs) => {
            Frame::Array(pairs.into_iter().flat_map(|(a, b)| [resp2_view(a), resp2_view(b)]).collect())
        }
        Frame::Array(items) => Frame::Array(items.into_iter().map(resp2_view).collect()),
        other => other,
    }
}

#[test]
fn scores_are_doubles_and_scored_members_are_pairs_in_resp3() {
    let mut h = Harness::new();
    h.run("ZADD z 1.5 a 2 b");
    assert_eq!(h.run_typed(NOW, "ZSCORE z a"), Frame::Double(1.5));
    assert_eq!(
        h.run_typed(NOW, "ZRANGE z 0 -1 WITHSCORES"),
        Frame::Pairs(vec![
            (Frame::Bulk(Bytes::from_static(b"a")), Frame::Double(1.5)),
            (Frame::Bulk(Bytes::from_static(b"b")), Frame::Double(2.0)),
        ])
    );
    assert_eq!(h.run("ZSCORE z b"), Frame::Bulk(Bytes::from_static(b"2")));
}

/// A fuzzy snapshot holds each key as of some later point than where
/// replay starts. Replaying `log[from..]` over the state at any
/// `captured >= from` must give the state after the whole log.
fn assert_replay_over_later_captures_converges(log: &[Effect]) {
    let mut truth = Store::new(1);
    for e in log {
        truth.apply(e);
    }
    for captured in 0..=log.len() {
        for from in 0..=captured {
            let mut s = Store::new(2);
            for e in &log[..captured] {
                s.apply(e);
            }
            for e in &log[from..] {
                s.apply(e);
            }
            assert_eq!(s.digest(), truth.digest(), "captured after {captured} effects, replayed from {from}: {log:?}");
        }
    }
}

/// Found by the simulator's fuzzy-snapshot checker (seed 601): a set with
/// a TTL emptied by SPOP, then recreated as a list without one. Replayed
/// over a snapshot holding the list, the old EXPIRE hit the list and the
/// list's own push was skipped (its change count was already there), so
/// the replica kept a TTL the leader did not have.
#[test]
fn emptying_a_collection_logs_a_del_so_replay_over_a_later_incarnation_converges() {
    let scripts: &[&[&str]] = &[
        &["SADD t a b", "EXPIRE t 100", "SPOP t 2", "RPUSH t x"],
        &["SADD t a", "PEXPIRE t 500", "SREM t a", "SADD t b"],
        &["HSET h f v", "EXPIRE h 100", "HDEL h f", "HSET h g w"],
        &["ZADD z 1 a", "EXPIRE z 100", "ZREM z a", "ZADD z 2 b"],
        &["ZADD z 1 a 2 b", "EXPIRE z 100", "ZPOPMIN z 2", "SADD z m"],
        &["ZADD z 1 a", "EXPIRE z 100", "ZREMRANGEBYSCORE z -inf +inf", "ZADD z 3 c"],
        &["RPUSH l a b", "EXPIRE l 100", "LREM l 0 a", "LREM l 0 b", "RPUSH l c"],
        &["RPUSH l a b", "EXPIRE l 100", "LTRIM l 5 6", "RPUSH l c"],
        &["RPUSH l a", "EXPIRE l 100", "LPOP l", "RPUSH l c"],
        &["SADD s a", "EXPIRE s 100", "SMOVE s d a", "SADD s b"],
    ];
    for script in scripts {
        let mut h = Harness::new();
        for line in *script {
            let reply = h.run(line);
            assert!(!matches!(reply, Frame::Error(_)), "{line}: {reply:?}");
        }
        let key = script[0].split(' ').nth(1).unwrap();
        assert!(
            h.log.iter().any(|e| matches!(e, Effect::Del { key: k } if k == key)),
            "{script:?}: emptying {key} logged no Del: {:?}",
            h.log
        );
        assert_replay_over_later_captures_converges(&h.log);
    }
    // Removing from a missing key logs nothing (a WATCH on it stays clean).
    let mut h = Harness::new();
    assert_eq!(h.run("SREM nothing a"), Frame::Integer(0));
    assert!(h.log.is_empty(), "{:?}", h.log);
}
