//! The Redis command surface of a real `tandem server`, driven by real
//! clients: the `redis` crate (RESP2), raw TCP (exact error texts, RESP3)
//! and the real `redis-cli`. Expected values are Redis's own.

mod common;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{redis_cli, tempdir, Resp, TestServer};
use redis::{Connection, FromRedisValue, Value};

/// Runs `args` on `con` and converts the reply, panicking with the command
/// on a failure.
fn q<T: FromRedisValue>(con: &mut Connection, args: &[&str]) -> T {
    redis::cmd(args[0]).arg(&args[1..]).query(con).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs `args` and returns the server's error text (code + message).
fn q_err(con: &mut Connection, args: &[&str]) -> String {
    match redis::cmd(args[0]).arg(&args[1..]).query::<Value>(con) {
        Ok(v) => panic!("{args:?} answered {v:?}, expected an error"),
        Err(e) => format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
    }
}

fn err(text: &str) -> Resp {
    Resp::Error(text.to_string())
}

fn bulk(s: &str) -> Resp {
    Resp::Bulk(s.as_bytes().to_vec())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Node {
    _dir: tempfile::TempDir,
    server: TestServer,
}

fn node(args: &[&str]) -> Node {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), args);
    Node { _dir: dir, server }
}

#[test]
fn string_commands_behave_like_redis() {
    let n = node(&[]);
    let con = &mut n.server.conn();
    assert_eq!(q::<String>(con, &["SET", "s", "hello"]), "OK");
    assert_eq!(q::<Option<String>>(con, &["GET", "s"]).as_deref(), Some("hello"));
    assert_eq!(q::<Option<String>>(con, &["GET", "missing"]), None);
    assert_eq!(q::<i64>(con, &["APPEND", "s", " world"]), 11);
    assert_eq!(q::<i64>(con, &["APPEND", "new", "abc"]), 3);
    assert_eq!(q::<i64>(con, &["STRLEN", "s"]), 11);
    assert_eq!(q::<i64>(con, &["STRLEN", "missing"]), 0);
    // SET options.
    assert_eq!(q::<Option<String>>(con, &["SET", "s", "x", "NX"]), None);
    assert_eq!(q::<Option<String>>(con, &["SET", "nx", "1", "NX"]).as_deref(), Some("OK"));
    assert_eq!(q::<Option<String>>(con, &["SET", "xx", "1", "XX"]), None);
    assert_eq!(q::<i64>(con, &["EXISTS", "xx"]), 0);
    assert_eq!(q::<Option<String>>(con, &["SET", "nx", "2", "XX"]).as_deref(), Some("OK"));
    assert_eq!(q::<Option<String>>(con, &["SET", "nx", "3", "GET"]).as_deref(), Some("2"));
    assert_eq!(q::<Option<String>>(con, &["SET", "fresh", "v", "GET"]), None);
    assert_eq!(q::<Option<String>>(con, &["GET", "fresh"]).as_deref(), Some("v"));
    assert_eq!(q::<i64>(con, &["SETNX", "s", "no"]), 0);
    assert_eq!(q::<i64>(con, &["SETNX", "setnx", "yes"]), 1);
    assert_eq!(q::<Option<String>>(con, &["GETDEL", "setnx"]).as_deref(), Some("yes"));
    assert_eq!(q::<Option<String>>(con, &["GETDEL", "setnx"]), None);
    // Multi-key.
    assert_eq!(q::<String>(con, &["MSET", "a", "1", "b", "2", "c", "3"]), "OK");
    assert_eq!(
        q::<Vec<Option<String>>>(con, &["MGET", "a", "missing", "c"]),
        vec![Some("1".to_string()), None, Some("3".to_string())]
    );
    assert_eq!(q::<i64>(con, &["EXISTS", "a", "a", "missing", "b"]), 3);
    assert_eq!(q::<i64>(con, &["DEL", "a", "missing"]), 1);
    assert_eq!(q::<i64>(con, &["UNLINK", "b", "c", "c"]), 2);
    assert_eq!(q::<i64>(con, &["EXISTS", "a", "b", "c"]), 0);
    // Counters.
    assert_eq!(q::<i64>(con, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(con, &["INCRBY", "n", "41"]), 42);
    assert_eq!(q::<i64>(con, &["DECR", "n"]), 41);
    assert_eq!(q::<i64>(con, &["DECRBY", "n", "50"]), -9);
    assert_eq!(q::<i64>(con, &["INCRBY", "n", "-1"]), -10);
    assert_eq!(q::<Option<String>>(con, &["GET", "n"]).as_deref(), Some("-10"));
    assert_eq!(q::<String>(con, &["SET", "n", "100"]), "OK");
    assert_eq!(q::<i64>(con, &["INCR", "n"]), 101);
    // TYPE.
    assert_eq!(q::<String>(con, &["TYPE", "s"]), "string");
    assert_eq!(q::<String>(con, &["TYPE", "missing"]), "none");
    // Binary-safe values.
    let binary: Vec<u8> = (0..=255u8).collect();
    let () = redis::cmd("SET").arg("bin").arg(&binary).query(con).unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("bin").query(con).unwrap();
    assert_eq!(back, binary);
}

#[test]
fn set_commands_behave_like_redis() {
    let n = node(&[]);
    let con = &mut n.server.conn();
    assert_eq!(q::<i64>(con, &["SADD", "set", "a", "b", "c", "a"]), 3);
    assert_eq!(q::<i64>(con, &["SADD", "set", "a", "d"]), 1);
    assert_eq!(q::<i64>(con, &["SCARD", "set"]), 4);
    assert_eq!(q::<i64>(con, &["SCARD", "missing"]), 0);
    assert_eq!(q::<i64>(con, &["SISMEMBER", "set", "b"]), 1);
    assert_eq!(q::<i64>(con, &["SISMEMBER", "set", "z"]), 0);
    assert_eq!(q::<i64>(con, &["SISMEMBER", "missing", "z"]), 0);
    let members: HashSet<String> = q(con, &["SMEMBERS", "set"]);
    assert_eq!(members, ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect());
    assert_eq!(q::<Vec<String>>(con, &["SMEMBERS", "missing"]), Vec::<String>::new());
    assert_eq!(q::<String>(con, &["TYPE", "set"]), "set");
    assert_eq!(q::<i64>(con, &["SREM", "set", "a", "z"]), 1);
    assert_eq!(q::<i64>(con, &["SREM", "set", "b", "c", "d"]), 3);
    // A set emptied by SREM no longer exists.
    assert_eq!(q::<i64>(con, &["EXISTS", "set"]), 0);
    assert_eq!(q::<String>(con, &["TYPE", "set"]), "none");
    assert_eq!(q::<i64>(con, &["SREM", "missing", "a"]), 0);
}

#[test]
fn expiry_commands_follow_redis_semantics() {
    let n = node(&[]);
    let con = &mut n.server.conn();
    // SET PX: gone after it expires.
    assert_eq!(q::<String>(con, &["SET", "short", "v", "PX", "100"]), "OK");
    assert_eq!(q::<Option<String>>(con, &["GET", "short"]).as_deref(), Some("v"));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(q::<Option<String>>(con, &["GET", "short"]), None);
    assert_eq!(q::<i64>(con, &["EXISTS", "short"]), 0);
    assert_eq!(q::<i64>(con, &["TTL", "short"]), -2);
    assert!(q::<Vec<String>>(con, &["KEYS", "short"]).is_empty(), "KEYS must not list an expired key");

    // TTL / PTTL values.
    assert_eq!(q::<String>(con, &["SET", "k", "v", "EX", "100"]), "OK");
    let ttl: i64 = q(con, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "TTL after SET EX 100 = {ttl}");
    let pttl: i64 = q(con, &["PTTL", "k"]);
    assert!((99_000..=100_000).contains(&pttl), "PTTL after SET EX 100 = {pttl}");
    assert_eq!(q::<String>(con, &["SET", "plain", "v"]), "OK");
    assert_eq!(q::<i64>(con, &["TTL", "plain"]), -1);
    assert_eq!(q::<i64>(con, &["PTTL", "plain"]), -1);
    assert_eq!(q::<i64>(con, &["TTL", "missing"]), -2);
    assert_eq!(q::<i64>(con, &["PTTL", "missing"]), -2);

    // EXPIRE family.
    assert_eq!(q::<i64>(con, &["EXPIRE", "plain", "50"]), 1);
    assert!((49..=50).contains(&q::<i64>(con, &["TTL", "plain"])));
    assert_eq!(q::<i64>(con, &["EXPIRE", "missing", "50"]), 0);
    assert_eq!(q::<i64>(con, &["PEXPIRE", "plain", "20000"]), 1);
    assert!((19..=20).contains(&q::<i64>(con, &["TTL", "plain"])));
    assert_eq!(q::<i64>(con, &["EXPIRE", "plain", "500", "NX"]), 0, "NX: the key already has a TTL");
    assert_eq!(q::<i64>(con, &["EXPIRE", "plain", "500", "GT"]), 1);
    assert_eq!(q::<i64>(con, &["EXPIRE", "plain", "100", "GT"]), 0);
    assert_eq!(q::<i64>(con, &["PERSIST", "plain"]), 1);
    assert_eq!(q::<i64>(con, &["PERSIST", "plain"]), 0);
    assert_eq!(q::<i64>(con, &["TTL", "plain"]), -1);
    let at = (now_ms() / 1000 + 1000).to_string();
    assert_eq!(q::<i64>(con, &["EXPIREAT", "plain", &at]), 1);
    assert!((998..=1000).contains(&q::<i64>(con, &["TTL", "plain"])));
    let pat = (now_ms() + 30_000).to_string();
    assert_eq!(q::<i64>(con, &["PEXPIREAT", "plain", &pat]), 1);
    assert!((28..=30).contains(&q::<i64>(con, &["TTL", "plain"])));
    // An expiry in the past deletes the key.
    assert_eq!(q::<i64>(con, &["PEXPIREAT", "plain", "1000"]), 1);
    assert_eq!(q::<i64>(con, &["EXISTS", "plain"]), 0);
    assert_eq!(q::<String>(con, &["SET", "neg", "v"]), "OK");
    assert_eq!(q::<i64>(con, &["EXPIRE", "neg", "-1"]), 1);
    assert_eq!(q::<i64>(con, &["EXISTS", "neg"]), 0);

    // SET replaces the TTL unless KEEPTTL.
    assert_eq!(q::<String>(con, &["SET", "k", "v2", "KEEPTTL"]), "OK");
    assert!((98..=100).contains(&q::<i64>(con, &["TTL", "k"])), "KEEPTTL keeps the TTL");
    assert_eq!(q::<String>(con, &["SET", "k", "v3"]), "OK");
    assert_eq!(q::<i64>(con, &["TTL", "k"]), -1, "a plain SET clears the TTL");
    let exat = (now_ms() / 1000 + 60).to_string();
    assert_eq!(q::<String>(con, &["SET", "k", "v", "EXAT", &exat]), "OK");
    assert!((58..=60).contains(&q::<i64>(con, &["TTL", "k"])));
    let pxat = (now_ms() + 60_000).to_string();
    assert_eq!(q::<String>(con, &["SET", "k", "v", "PXAT", &pxat]), "OK");
    assert!((58..=60).contains(&q::<i64>(con, &["TTL", "k"])));
    // Counters keep their TTL (Redis: INCR does not touch the expiry).
    assert_eq!(q::<String>(con, &["SET", "ctr", "1", "EX", "100"]), "OK");
    assert_eq!(q::<i64>(con, &["INCR", "ctr"]), 2);
    assert!((99..=100).contains(&q::<i64>(con, &["TTL", "ctr"])), "INCR keeps the TTL");
    assert_eq!(q_err(con, &["SET", "k", "v", "EX", "0"]), "ERR invalid expire time in 'set' command");
    assert_eq!(q_err(con, &["SET", "k", "v", "PX", "-5"]), "ERR invalid expire time in 'set' command");
}

#[test]
fn error_replies_use_redis_texts() {
    let n = node(&[]);
    let mut r = n.server.raw();
    assert_eq!(r.cmd(&["SADD", "aset", "m"]), Resp::Integer(1));
    assert_eq!(r.cmd(&["SET", "astring", "abc"]), Resp::Simple("OK".into()));
    let wrongtype = err("WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(r.cmd(&["GET", "aset"]), wrongtype);
    assert_eq!(r.cmd(&["INCR", "aset"]), wrongtype);
    assert_eq!(r.cmd(&["APPEND", "aset", "x"]), wrongtype);
    assert_eq!(r.cmd(&["STRLEN", "aset"]), wrongtype);
    assert_eq!(r.cmd(&["SADD", "astring", "m"]), wrongtype);
    assert_eq!(r.cmd(&["SMEMBERS", "astring"]), wrongtype);
    assert_eq!(r.cmd(&["SISMEMBER", "astring", "m"]), wrongtype);
    assert_eq!(r.cmd(&["SET", "aset", "v", "GET"]), wrongtype);
    assert_eq!(r.cmd(&["GETDEL", "aset"]), wrongtype);
    // MGET never fails on a wrong type: it answers nil for that key.
    assert_eq!(r.cmd(&["MGET", "aset", "astring"]), Resp::Array(vec![Resp::Nil, bulk("abc")]));

    let not_integer = err("ERR value is not an integer or out of range");
    assert_eq!(r.cmd(&["INCR", "astring"]), not_integer);
    assert_eq!(r.cmd(&["INCRBY", "counter", "ten"]), not_integer);
    assert_eq!(r.cmd(&["DECRBY", "counter", "1.5"]), not_integer);
    assert_eq!(r.cmd(&["EXPIRE", "astring", "soon"]), not_integer);
    assert_eq!(r.cmd(&["SET", "k", "v", "EX", "ten"]), not_integer);
    assert_eq!(r.cmd(&["SET", "big", "9223372036854775807"]), Resp::Simple("OK".into()));
    assert_eq!(r.cmd(&["INCR", "big"]), err("ERR increment or decrement would overflow"));
    assert_eq!(r.cmd(&["GET", "big"]), bulk("9223372036854775807"), "a failed INCR changes nothing");

    assert_eq!(r.cmd(&["GET"]), err("ERR wrong number of arguments for 'get' command"));
    assert_eq!(r.cmd(&["get", "a", "b"]), err("ERR wrong number of arguments for 'get' command"));
    assert_eq!(r.cmd(&["SET", "k"]), err("ERR wrong number of arguments for 'set' command"));
    assert_eq!(r.cmd(&["MSET", "a", "1", "b"]), err("ERR wrong number of arguments for 'mset' command"));
    assert_eq!(r.cmd(&["SADD", "s"]), err("ERR wrong number of arguments for 'sadd' command"));
    assert_eq!(
        r.cmd(&["NOSUCHCMD", "x", "y"]),
        err("ERR unknown command 'NOSUCHCMD', with args beginning with: 'x' 'y' ")
    );
    assert_eq!(r.cmd(&["nosuchcmd"]), err("ERR unknown command 'nosuchcmd', with args beginning with: "));
    assert_eq!(r.cmd(&["SET", "k", "v", "NX", "XX"]), err("ERR syntax error"));
    assert_eq!(r.cmd(&["SET", "k", "v", "BOGUS"]), err("ERR syntax error"));
    assert_eq!(r.cmd(&["SELECT", "1"]), err("ERR DB index is out of range"));
    assert_eq!(r.cmd(&["SCAN", "notacursor"]), err("ERR invalid cursor"));
    // The connection is still usable after every error.
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn auth_is_required_with_requirepass() {
    let n = node(&["--requirepass", "s3cret"]);
    let mut r = n.server.raw();
    assert_eq!(r.cmd(&["GET", "k"]), err("NOAUTH Authentication required."));
    assert_eq!(r.cmd(&["SET", "k", "v"]), err("NOAUTH Authentication required."));
    assert_eq!(r.cmd(&["AUTH", "wrong"]), err("WRONGPASS invalid username-password pair or user is disabled."));
    assert_eq!(
        r.cmd(&["AUTH", "someone", "s3cret"]),
        err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(r.cmd(&["GET", "k"]), err("NOAUTH Authentication required."), "a failed AUTH does not authenticate");
    assert_eq!(r.cmd(&["AUTH", "s3cret"]), Resp::Simple("OK".into()));
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    assert_eq!(r.cmd(&["GET", "k"]), bulk("v"));

    // AUTH with the default user, and HELLO .. AUTH, on fresh connections.
    let mut r2 = n.server.raw();
    assert_eq!(r2.cmd(&["AUTH", "default", "s3cret"]), Resp::Simple("OK".into()));
    assert_eq!(r2.cmd(&["GET", "k"]), bulk("v"));
    let mut r3 = n.server.raw();
    match r3.cmd(&["HELLO", "3"]) {
        Resp::Error(e) => assert!(e.starts_with("NOAUTH"), "HELLO 3 without auth: {e}"),
        other => panic!("HELLO 3 without AUTH answered {other:?}"),
    }
    assert!(matches!(r3.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]), Resp::Map(_)));
    assert_eq!(r3.cmd(&["GET", "k"]), bulk("v"));

    // The redis crate authenticates from the URL.
    let url = format!("redis://:s3cret@{}/", n.server.client_addr());
    let mut con = redis::Client::open(url).unwrap().get_connection().expect("connect with password");
    assert_eq!(q::<Option<String>>(&mut con, &["GET", "k"]).as_deref(), Some("v"));
    let bad = redis::Client::open(format!("redis://:nope@{}/", n.server.client_addr())).unwrap();
    assert!(bad.get_connection().is_err(), "a wrong password must be refused");

    // Without requirepass, AUTH is an error with Redis's text.
    let open = node(&[]);
    assert_eq!(
        open.server.raw().cmd(&["AUTH", "x"]),
        err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")
    );
}

#[test]
fn hello_3_switches_the_connection_to_resp3() {
    let n = node(&[]);
    let mut r = n.server.raw();
    let Resp::Map(fields) = r.cmd(&["HELLO", "3"]) else { panic!("HELLO 3 must answer a RESP3 map") };
    let field = |name: &str| fields.iter().find(|(k, _)| *k == bulk(name)).map(|(_, v)| v.clone());
    assert_eq!(field("server"), Some(bulk("redis")));
    assert_eq!(field("proto"), Some(Resp::Integer(3)));
    assert!(matches!(field("version"), Some(Resp::Bulk(_))));
    assert!(matches!(field("id"), Some(Resp::Integer(_))));
    assert_eq!(field("mode"), Some(bulk("standalone")));
    assert_eq!(field("role"), Some(bulk("master")));

    // RESP3 types on the wire.
    r.send_cmd(&["GET", "missing"]).unwrap();
    assert_eq!(r.read_line().unwrap(), "_", "RESP3 null is `_`");
    assert_eq!(r.cmd(&["SADD", "s", "a", "b"]), Resp::Integer(2));
    let Resp::Set(members) = r.cmd(&["SMEMBERS", "s"]) else { panic!("SMEMBERS in RESP3 must be a set (~)") };
    assert_eq!(members.len(), 2);
    assert!(matches!(r.cmd(&["CONFIG", "GET", "maxclients"]), Resp::Map(m) if m.len() == 1));
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    assert_eq!(r.cmd(&["GET", "k"]), bulk("v"));

    // Back to RESP2.
    assert!(matches!(r.cmd(&["HELLO", "2"]), Resp::Array(a) if a.len() == 14), "HELLO 2 answers a flat array");
    r.send_cmd(&["GET", "missing"]).unwrap();
    assert_eq!(r.read_line().unwrap(), "$-1", "RESP2 null is `$-1`");
    assert_eq!(r.cmd(&["HELLO", "4"]), err("NOPROTO unsupported protocol version"));
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let n = node(&[]);
    let con = &mut n.server.conn();
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("INCR").arg("ctr");
    }
    let replies: Vec<i64> = pipe.query(con).unwrap();
    assert_eq!(replies, (1..=1000).collect::<Vec<i64>>());

    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET").arg(format!("p:{i}")).arg(i).ignore();
        pipe.cmd("GET").arg(format!("p:{i}"));
    }
    let values: Vec<i64> = pipe.query(con).unwrap();
    assert_eq!(values, (0..500).collect::<Vec<i64>>());

    // Raw: 1000 commands in one write, replies in order.
    let mut r = n.server.raw();
    let mut batch = Vec::new();
    for i in 0..1000 {
        batch.extend(common::encode_cmd(&["ECHO", &format!("m{i}")]));
    }
    r.send(&batch).unwrap();
    for i in 0..1000 {
        assert_eq!(r.read().unwrap(), bulk(&format!("m{i}")));
    }
}

#[test]
fn scan_returns_every_key() {
    let n = node(&[]);
    let con = &mut n.server.conn();
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET").arg(format!("scan:{i}")).arg(i).ignore();
    }
    pipe.cmd("SADD").arg("other").arg("x").ignore();
    let () = pipe.query(con).unwrap();

    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let (next, keys): (String, Vec<String>) =
            redis::cmd("SCAN").arg(&cursor).arg("COUNT").arg(100).query(con).unwrap();
        seen.extend(keys);
        rounds += 1;
        assert!(rounds < 10_000, "SCAN does not terminate");
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 1001, "SCAN must return every key present for the whole iteration");
    assert!(rounds > 1, "COUNT 100 over 1001 keys takes several rounds");

    let mut matched = HashSet::new();
    let mut cursor = "0".to_string();
    loop {
        let (next, keys): (String, Vec<String>) =
            redis::cmd("SCAN").arg(&cursor).arg("MATCH").arg("scan:1?").arg("COUNT").arg(50).query(con).unwrap();
        matched.extend(keys);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let expected: HashSet<String> = (10..20).map(|i| format!("scan:{i}")).collect();
    assert_eq!(matched, expected);
    let iter: HashSet<String> = redis::cmd("SCAN").cursor_arg(0).clone().iter(con).unwrap().collect();
    assert_eq!(iter.len(), 1001, "the redis crate's SCAN iterator sees every key");

    let mut keys: Vec<String> = q(con, &["KEYS", "scan:99*"]);
    keys.sort();
    assert_eq!(
        keys,
        [
            "scan:99", "scan:990", "scan:991", "scan:992", "scan:993", "scan:994", "scan:995", "scan:996", "scan:997",
            "scan:998", "scan:999"
        ]
    );
    assert_eq!(q::<i64>(con, &["DBSIZE"]), 1001);
    assert_eq!(q::<String>(con, &["FLUSHDB"]), "OK");
    assert_eq!(q::<i64>(con, &["DBSIZE"]), 0);
    assert_eq!(q::<String>(con, &["SET", "a", "1"]), "OK");
    assert_eq!(q::<String>(con, &["FLUSHALL"]), "OK");
    assert_eq!(q::<i64>(con, &["DBSIZE"]), 0);
}

#[test]
fn info_reports_redis_field_names() {
    let n = node(&["--clients-max", "77"]);
    let con = &mut n.server.conn();
    assert_eq!(q::<String>(con, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(q::<String>(con, &["SET", "t", "1", "EX", "100"]), "OK");
    let info: String = q(con, &["INFO"]);
    for field in [
        "redis_version:",
        "connected_clients:",
        "# Keyspace",
        "db0:keys=3",
        "role:master",
        "uptime_in_seconds:",
        "total_commands_processed:",
    ] {
        assert!(info.contains(field), "INFO lacks {field:?}:\n{info}");
    }
    assert!(info.contains("db0:keys=3,expires=1"), "INFO keyspace counts keys and expires:\n{info}");
    let keyspace: String = q(con, &["INFO", "keyspace"]);
    assert!(keyspace.contains("# Keyspace") && keyspace.contains("db0:keys=3"), "{keyspace}");
    assert!(!keyspace.contains("redis_version"), "INFO keyspace shows only that section:\n{keyspace}");
    let clients: String = q(con, &["INFO", "clients"]);
    let connected: i64 = clients
        .lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {clients}"));
    assert!(connected >= 1, "connected_clients = {connected}");

    assert_eq!(q::<Vec<String>>(con, &["CONFIG", "GET", "maxclients"]), ["maxclients", "77"]);
    assert_eq!(q::<Vec<String>>(con, &["CONFIG", "GET", "no-such-parameter"]), Vec::<String>::new());
}

#[test]
fn command_introspection_lists_the_commands() {
    let n = node(&[]);
    let con = &mut n.server.conn();
    let count: i64 = q(con, &["COMMAND", "COUNT"]);
    assert!(count >= 40, "COMMAND COUNT = {count}; every supported command is listed");
    let all: Vec<Value> = q(con, &["COMMAND"]);
    assert_eq!(all.len() as i64, count, "COMMAND lists COMMAND COUNT entries");

    let mut r = n.server.raw();
    let Resp::Array(info) = r.cmd(&["COMMAND", "INFO", "get", "nosuch"]) else {
        panic!("COMMAND INFO answers an array")
    };
    assert_eq!(info.len(), 2);
    let Resp::Array(get) = &info[0] else { panic!("COMMAND INFO get: {:?}", info[0]) };
    assert_eq!(get[0], bulk("get"));
    assert_eq!(get[1], Resp::Integer(2), "GET's arity");
    assert_eq!(info[1], Resp::Nil, "an unknown command's info is nil");

    let Resp::Array(docs) = r.cmd(&["COMMAND", "DOCS", "set"]) else {
        panic!("COMMAND DOCS answers an array in RESP2")
    };
    assert_eq!(docs.first(), Some(&bulk("set")));
    let Some(Resp::Array(doc)) = docs.get(1) else { panic!("COMMAND DOCS set: {docs:?}") };
    assert!(doc.contains(&bulk("summary")), "COMMAND DOCS set has a summary: {doc:?}");
}

#[test]
fn connection_commands_behave_like_redis() {
    let n = node(&[]);
    let mut r = n.server.raw();
    assert_eq!(r.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(r.cmd(&["PING", "hi"]), bulk("hi"));
    assert_eq!(r.cmd(&["ECHO", "hello world"]), bulk("hello world"));
    assert_eq!(r.cmd(&["SELECT", "0"]), Resp::Simple("OK".into()));
    let Resp::Integer(id) = r.cmd(&["CLIENT", "ID"]) else { panic!("CLIENT ID is an integer") };
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), Resp::Nil);
    assert_eq!(r.cmd(&["CLIENT", "SETNAME", "tester"]), Resp::Simple("OK".into()));
    assert_eq!(r.cmd(&["CLIENT", "GETNAME"]), bulk("tester"));
    assert_eq!(
        r.cmd(&["CLIENT", "SETNAME", "has space"]),
        err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    let info = r.cmd(&["CLIENT", "INFO"]).text();
    assert!(info.contains(&format!("id={id} ")) && info.contains("name=tester "), "CLIENT INFO: {info}");
    assert_eq!(r.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "tandem-tests"]), Resp::Simple("OK".into()));
    let Resp::Integer(other_id) = n.server.raw().cmd(&["CLIENT", "ID"]) else { panic!() };
    assert_ne!(other_id, id, "client ids are unique");

    // Snapshots on demand.
    assert_eq!(r.cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    assert_eq!(r.cmd(&["SAVE"]), Resp::Simple("OK".into()));
    let Resp::Integer(lastsave) = r.cmd(&["LASTSAVE"]) else { panic!("LASTSAVE is an integer") };
    let now = (now_ms() / 1000) as i64;
    assert!((now - 5..=now + 1).contains(&lastsave), "LASTSAVE {lastsave} right after SAVE, now {now}");
    assert_eq!(r.cmd(&["BGSAVE"]), Resp::Simple("Background saving started".into()));

    // QUIT answers OK and closes.
    assert_eq!(r.cmd(&["QUIT"]), Resp::Simple("OK".into()));
    let (rest, closed) = r.read_until_closed(Duration::from_secs(5));
    assert!(closed && rest.is_empty(), "QUIT closes the connection (got {rest:?}, closed {closed})");
    n.server.assert_alive();
}

#[test]
fn redis_cli_drives_a_real_server() {
    let n = node(&[]);
    let addr = n.server.client_addr();
    let cli = |args: &[&str]| redis_cli(addr, args).trim_end().to_string();
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello world");
    assert_eq!(cli(&["GET", "missing"]), "");
    assert_eq!(cli(&["INCR", "visits"]), "1");
    assert_eq!(cli(&["INCRBY", "visits", "9"]), "10");
    assert_eq!(cli(&["EXPIRE", "greeting", "100"]), "1");
    let ttl: i64 = cli(&["TTL", "greeting"]).parse().expect("TTL is a number");
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    assert_eq!(cli(&["SADD", "colours", "red", "green", "blue"]), "3");
    let mut members: Vec<String> = cli(&["SMEMBERS", "colours"]).lines().map(str::to_string).collect();
    members.sort();
    assert_eq!(members, ["blue", "green", "red"]);
    assert_eq!(cli(&["DBSIZE"]), "3");
    let keyspace = cli(&["INFO", "keyspace"]);
    assert!(keyspace.contains("db0:keys=3,expires=1"), "INFO keyspace via redis-cli: {keyspace}");
    assert!(cli(&["GET", "colours"]).contains("WRONGTYPE"), "errors reach redis-cli");
    // With -3, redis-cli negotiates RESP3 through HELLO.
    assert_eq!(cli(&["-3", "GET", "greeting"]), "hello world");
    assert_eq!(cli(&["DEL", "greeting", "visits", "colours"]), "3");
    assert_eq!(cli(&["DBSIZE"]), "0");
}
