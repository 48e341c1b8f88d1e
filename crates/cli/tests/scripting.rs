//! Lua scripting through real `tandem server` processes and the `redis`
//! crate: `redis::Script` (EVALSHA, then EVAL on NOSCRIPT), redis-py's lock
//! release script, the script's effects (not the script) replicated so a
//! script calling TIME, SRANDMEMBER and SPOP leaves the same keys on two
//! followers and on the leader after kill -9 and restart, the time limit,
//! NOSCRIPT, CROSSSLOT and read-only runs on followers. Every wait is a
//! bounded poll.

mod common;

use common::cluster::Cluster;
use common::{tempdir, Resp, TestServer};

/// redis-py's `Lock.release` script (LUA_RELEASE_SCRIPT, simplified as in
/// the issue).
const RELEASE: &str =
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

fn error_text(r: Resp) -> String {
    match r {
        Resp::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn redis_crate_script_runs_by_sha_and_falls_back_to_eval_on_noscript() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    let script = redis::Script::new("redis.call('set', KEYS[1], ARGV[1]) return redis.call('strlen', KEYS[1])");
    let mut raw = server.raw();
    let exists = |raw: &mut common::Raw| raw.cmd(&["SCRIPT", "EXISTS", script.get_hash()]);
    assert_eq!(exists(&mut raw), Resp::Array(vec![Resp::Integer(0)]));
    // First call: EVALSHA answers NOSCRIPT, the crate sends EVAL (which caches).
    let n: i64 = script.key("greeting").arg("hello").invoke(&mut con).expect("script via EVAL");
    assert_eq!(n, 5);
    assert_eq!(exists(&mut raw), Resp::Array(vec![Resp::Integer(1)]));
    // Second call: EVALSHA hits the cache.
    let n: i64 = script.key("greeting").arg("hi").invoke(&mut con).expect("script via EVALSHA");
    assert_eq!(n, 2);
    assert_eq!(raw.cmd(&["SCRIPT", "FLUSH"]), Resp::Simple("OK".into()));
    assert_eq!(
        error_text(raw.cmd(&["EVALSHA", script.get_hash(), "0"])),
        "NOSCRIPT No matching script. Please use EVAL."
    );
    // SCRIPT LOAD caches by SHA1 and reports a syntax error at once.
    assert_eq!(raw.cmd(&["SCRIPT", "LOAD", "return 'x'"]).text(), raw_sha("return 'x'"));
    assert!(error_text(raw.cmd(&["SCRIPT", "LOAD", "return ("])).starts_with("ERR Error compiling script"));
    assert_eq!(error_text(raw.cmd(&["SCRIPT", "KILL"])), "NOTBUSY No scripts in execution right now.");
}

/// The SHA1 the server names a script by (via the redis crate).
fn raw_sha(body: &str) -> String {
    redis::Script::new(body).get_hash().to_string()
}

#[test]
fn redis_py_lock_release_script_deletes_only_the_owners_lock() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    let acquired: Option<String> =
        redis::cmd("SET").arg("lock:job").arg("token-a").arg("NX").arg("PX").arg(30_000).query(&mut con).unwrap();
    assert_eq!(acquired.as_deref(), Some("OK"));
    let release = redis::Script::new(RELEASE);
    let other: i64 = release.key("lock:job").arg("token-b").invoke(&mut con).unwrap();
    assert_eq!(other, 0, "another owner's token releases nothing");
    let held: Option<String> = redis::cmd("GET").arg("lock:job").query(&mut con).unwrap();
    assert_eq!(held.as_deref(), Some("token-a"));
    let mine: i64 = release.key("lock:job").arg("token-a").invoke(&mut con).unwrap();
    assert_eq!(mine, 1);
    let gone: Option<String> = redis::cmd("GET").arg("lock:job").query(&mut con).unwrap();
    assert_eq!(gone, None);
}

/// Draws with TIME, SRANDMEMBER and SPOP and stores what it saw: replaying
/// the script would store other values; replaying its effects cannot.
const RANDOM_SCRIPT: &str = "
local t = redis.call('time')
local m = redis.call('srandmember', KEYS[1])
local p = redis.call('spop', KEYS[1])
redis.call('set', KEYS[2], t[1] .. '.' .. t[2] .. ':' .. m .. ':' .. p .. ':' .. math.random(1000000))
return {t[1], t[2], m, p}";

fn values(node: &TestServer, keys: &[String]) -> Vec<Resp> {
    let mut raw = node.raw();
    let mut out: Vec<Resp> = keys.iter().map(|k| raw.cmd(&["GET", k])).collect();
    out.push(raw.cmd(&["SMEMBERS", "pool"]));
    if let Resp::Array(m) | Resp::Set(m) = out.last_mut().unwrap() {
        m.sort_by_key(|r| format!("{r:?}"));
    }
    out
}

#[test]
fn a_script_with_time_and_randomness_leaves_identical_state_on_followers_and_after_leader_restart() {
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let mut raw = c.leader().raw();
    let members: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    let mut sadd = vec!["SADD", "pool"];
    sadd.extend(members.iter().map(String::as_str));
    assert_eq!(raw.cmd(&sadd), Resp::Integer(40));
    let mut keys = Vec::new();
    for i in 0..10 {
        let before = c.leader().last_lsn();
        let key = format!("drawn:{i}");
        let r = raw.cmd(&["EVAL", RANDOM_SCRIPT, "2", "pool", &key]);
        assert!(matches!(&r, Resp::Array(a) if a.len() == 4), "script answered {r:?}");
        assert_eq!(c.leader().last_lsn(), before + 1, "one script is one log entry");
        keys.push(key);
    }
    let expected = values(c.leader(), &keys);
    assert!(matches!(&expected[0], Resp::Bulk(_)), "{expected:?}");
    let lsn = c.leader().last_lsn();
    for id in [2, 3] {
        c.node(id).wait_applied(lsn);
        assert_eq!(values(c.node(id), &keys), expected, "follower {id} holds the leader's effects");
        // A follower runs scripts read-only: reads work, writes get READONLY.
        let mut f = c.node(id).raw();
        assert_eq!(f.cmd(&["EVAL_RO", "return redis.call('get', KEYS[1])", "1", &keys[0]]), expected[0]);
        let e = error_text(f.cmd(&["EVAL", "return redis.call('set', KEYS[1], 'x')", "1", &keys[0]]));
        assert!(e.starts_with("READONLY"), "{e}");
    }
    // kill -9 of the leader: its log replays the same effects.
    c.node_mut(1).kill9();
    c.node_mut(1).restart();
    assert_eq!(values(c.leader(), &keys), expected, "the restarted leader replays the effects");
}

#[test]
fn a_script_past_the_time_limit_is_aborted_and_none_of_its_writes_apply() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--lua-time-limit-ms", "200"]);
    let mut raw = server.raw();
    assert_eq!(
        raw.cmd(&["CONFIG", "GET", "lua-time-limit"]),
        Resp::Array(vec![Resp::Bulk(b"lua-time-limit".to_vec()), Resp::Bulk(b"200".to_vec())])
    );
    let lsn = server.last_lsn();
    let e = error_text(raw.cmd(&["EVAL", "redis.call('set', KEYS[1], '1') while true do end", "1", "spin"]));
    assert!(e.contains("lua-time-limit (200 ms)") && e.contains("none of its writes"), "{e}");
    assert_eq!(raw.cmd(&["GET", "spin"]), Resp::Nil);
    assert_eq!(server.last_lsn(), lsn, "nothing was logged");
    // pcall does not swallow the limit.
    let e = error_text(raw.cmd(&["EVAL", "while true do pcall(function() end) end", "0"]));
    assert!(e.contains("lua-time-limit"), "{e}");
    assert_eq!(raw.cmd(&["PING"]), Resp::Simple("PONG".into()));
    // A script that raises after writing leaves nothing either (decision 0025).
    let e = error_text(raw.cmd(&["EVAL", "redis.call('set', KEYS[1], 'x') error('late')", "1", "late"]));
    assert!(e.contains("late"), "{e}");
    assert_eq!(raw.cmd(&["GET", "late"]), Resp::Nil);
    assert_eq!(server.last_lsn(), lsn);
}

#[test]
fn a_script_spanning_keyspaces_is_crossslot_and_multi_leader_keys_are_refused() {
    let dir = tempdir();
    let config = dir.path().join("tandem.toml");
    std::fs::write(
        &config,
        "[[keyspace]]\nname = \"carts\"\nprefix = \"cart:\"\nack = \"async\"\n\n\
         [[keyspace]]\nname = \"likes\"\nprefix = \"like:\"\nmode = \"multi-leader\"\nconflict = \"crdt\"\n",
    )
    .unwrap();
    let data = tempdir();
    let server = TestServer::start(data.path(), &["--config", config.to_str().unwrap()]);
    let mut raw = server.raw();
    // Declared keys in two keyspaces: refused before it runs.
    let e = error_text(raw.cmd(&["EVAL", "return 1", "2", "cart:1", "other"]));
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    // A key the script touches outside its keyspace: refused, and the
    // script's earlier write is undone.
    let body = "redis.call('set', KEYS[1], 'x') redis.call('set', 'other', 'y') return 1";
    let e = error_text(raw.cmd(&["EVAL", body, "1", "cart:1"]));
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    assert_eq!(raw.cmd(&["GET", "cart:1"]), Resp::Nil);
    assert_eq!(raw.cmd(&["GET", "other"]), Resp::Nil);
    // Within one keyspace it runs.
    assert_eq!(raw.cmd(&["EVAL", "return redis.call('set', KEYS[1], 'x')", "1", "cart:1"]), Resp::Simple("OK".into()));
    assert_eq!(raw.cmd(&["EVAL", "return redis.call('get', 'cart:1')", "0"]), Resp::Bulk(b"x".to_vec()));
    // A multi-leader keyspace has no single log to put a script in.
    let e = error_text(raw.cmd(&["EVAL", "return 1", "1", "like:1"]));
    assert!(e.contains("single-leader keyspaces only"), "{e}");
    let e = error_text(raw.cmd(&["EVAL", "redis.call('set', 'x', '1') return redis.call('get', 'like:1')", "0"]));
    assert!(e.contains("single-leader keyspaces only"), "{e}");
    assert_eq!(raw.cmd(&["GET", "x"]), Resp::Nil, "the script's write was undone");
}
