//! Hashes and lists through a real `tandem server`: the `redis` crate,
//! blocking pops woken by another client's push, replication to followers
//! and recovery after a restart.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{tempdir, Resp, TestServer};
use redis::{Commands, Connection};

const CATCH_UP: Duration = Duration::from_secs(20);

/// A mix of hash and list writes; returns nothing, the state is compared.
fn write_mix(con: &mut Connection) {
    for i in 0..200 {
        let _: () = con.hset(format!("h{}", i % 7), format!("f{i}"), i).unwrap();
        let _: () = con.rpush(format!("l{}", i % 5), i).unwrap();
        if i % 3 == 0 {
            let _: Option<String> = con.lpop(format!("l{}", i % 5), None).unwrap();
            let _: i64 = con.hincr(format!("h{}", i % 7), "n", 2).unwrap();
        }
        if i % 50 == 0 {
            let _: () = redis::cmd("LTRIM").arg(format!("l{}", i % 5)).arg(1).arg(-2).query(con).unwrap();
            let _: i64 = con.hdel(format!("h{}", i % 7), format!("f{}", i.max(7) - 7)).unwrap();
        }
    }
}

/// Every hash and list of a node, as text.
fn dump(server: &TestServer) -> Vec<String> {
    let mut con = server.conn();
    let mut out = Vec::new();
    for i in 0..7 {
        let mut h: Vec<(String, String)> = con.hgetall::<_, Vec<(String, String)>>(format!("h{i}")).unwrap();
        h.sort();
        out.push(format!("h{i} {h:?}"));
    }
    for i in 0..5 {
        let l: Vec<String> = con.lrange(format!("l{i}"), 0, -1).unwrap();
        out.push(format!("l{i} {l:?}"));
    }
    out
}

#[test]
fn hash_and_list_commands_answer_like_redis_through_the_redis_crate() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    let _: () = con.hset_multiple("h", &[("a", "1"), ("b", "2")]).unwrap();
    assert_eq!(con.hget::<_, _, Option<String>>("h", "a").unwrap().as_deref(), Some("1"));
    assert_eq!(con.hincr::<_, _, _, i64>("h", "a", 5).unwrap(), 6);
    let mut all: Vec<(String, String)> = con.hgetall("h").unwrap();
    all.sort();
    assert_eq!(all, vec![("a".into(), "6".into()), ("b".into(), "2".into())]);
    assert_eq!(con.rpush::<_, _, i64>("l", &["x", "y", "z"]).unwrap(), 3);
    assert_eq!(con.lrange::<_, Vec<String>>("l", 0, -1).unwrap(), vec!["x", "y", "z"]);
    let t: String = redis::cmd("TYPE").arg("l").query(&mut con).unwrap();
    assert_eq!(t, "list");
    let e = redis::cmd("LPUSH").arg("h").arg("v").query::<i64>(&mut con).unwrap_err();
    assert_eq!(e.code(), Some("WRONGTYPE"));
    // RESP3 HGETALL is a map.
    let mut raw = server.raw();
    raw.cmd(&["HELLO", "3"]);
    assert!(matches!(raw.cmd(&["HGETALL", "h"]), Resp::Map(m) if m.len() == 2));
}

#[test]
fn blpop_waits_for_a_push_from_another_client_and_times_out_with_nil() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut waiter = server.raw();
    waiter.set_read_timeout(Duration::from_secs(10));
    let started = Instant::now();
    assert_eq!(waiter.cmd(&["BLPOP", "q", "0.2"]), Resp::Nil, "timeout answers a null array");
    assert!(started.elapsed() >= Duration::from_millis(190));
    // Timeout 0 blocks until a push, which wakes it.
    waiter.send_cmd(&["BRPOP", "other", "q", "0"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut pusher = server.raw();
    assert_eq!(pusher.cmd(&["RPUSH", "q", "a", "b"]), Resp::Integer(2));
    assert_eq!(waiter.read().unwrap(), Resp::Array(vec![Resp::Bulk(b"q".to_vec()), Resp::Bulk(b"b".to_vec())]));
    assert_eq!(pusher.cmd(&["LRANGE", "q", "0", "-1"]), Resp::Array(vec![Resp::Bulk(b"a".to_vec())]));
    // BLMOVE moves atomically once the source gets an element.
    waiter.send_cmd(&["BLMOVE", "src", "dst", "LEFT", "RIGHT", "5"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    pusher.cmd(&["LPUSH", "src", "m"]);
    assert_eq!(waiter.read().unwrap(), Resp::Bulk(b"m".to_vec()));
    assert_eq!(pusher.cmd(&["LRANGE", "dst", "0", "-1"]), Resp::Array(vec![Resp::Bulk(b"m".to_vec())]));
    // A blocking pop inside MULTI never waits.
    waiter.cmd(&["MULTI"]);
    waiter.cmd(&["BLPOP", "empty", "0"]);
    assert_eq!(waiter.cmd(&["EXEC"]), Resp::Array(vec![Resp::Nil]));
    // A client that hangs up while blocked frees its slot and pops nothing.
    let mut gone = server.raw();
    gone.send_cmd(&["BLPOP", "late", "0"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(gone);
    std::thread::sleep(Duration::from_millis(200));
    pusher.cmd(&["RPUSH", "late", "kept"]);
    assert_eq!(pusher.cmd(&["LLEN", "late"]), Resp::Integer(1));
}

#[test]
fn hashes_and_lists_replicate_and_survive_a_snapshot_and_restart() {
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let mut con = c.leader().conn();
    write_mix(&mut con);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    write_mix(&mut con);
    let last = c.leader().last_lsn();
    let leader = dump(c.leader());
    for id in [2, 3] {
        c.node(id).wait_applied(last);
        assert_eq!(dump(c.node(id)), leader, "node {id}");
    }
    c.node_mut(1).kill9();
    c.node_mut(1).restart();
    // Recovery: snapshot + log replay (list effects over the snapshot).
    let deadline = Instant::now() + CATCH_UP;
    while Instant::now() < deadline && !c.node(1).answers_ping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(dump(c.node(1)), leader, "restarted node 1");
}

#[test]
fn sorted_sets_answer_like_redis_and_bzpopmin_wakes_on_zadd() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    let _: i64 = con.zadd_multiple("z", &[(1.0, "a"), (2.5, "b"), (3.0, "c")]).unwrap();
    let r: Vec<(String, f64)> = con.zrange_withscores("z", 0, -1).unwrap();
    assert_eq!(r, vec![("a".into(), 1.0), ("b".into(), 2.5), ("c".into(), 3.0)]);
    let r: Vec<String> = con.zrangebyscore("z", "(1", "+inf").unwrap();
    assert_eq!(r, vec!["b", "c"]);
    assert_eq!(con.zrank::<_, _, Option<i64>>("z", "c").unwrap(), Some(2));
    let mut waiter = server.raw();
    waiter.set_read_timeout(Duration::from_secs(10));
    waiter.send_cmd(&["BZPOPMIN", "empty", "0"]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let _: i64 = con.zadd("empty", "m", 7).unwrap();
    assert_eq!(
        waiter.read().unwrap(),
        Resp::Array(vec![Resp::Bulk(b"empty".to_vec()), Resp::Bulk(b"m".to_vec()), Resp::Bulk(b"7".to_vec())])
    );
}

#[test]
fn redis_benchmark_default_tests_exit_zero() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let addr = server.client_addr();
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string(), "-q", "-n", "2000"])
        .output()
        .expect("redis-benchmark (Debian's redis-tools) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "redis-benchmark failed: {:?}\n{stdout}\n{stderr}", out.status);
    for test in ["LPUSH", "HSET", "SPOP", "ZADD", "ZPOPMIN", "LRANGE_600", "MSET"] {
        assert!(stdout.contains(test), "{test} missing from:\n{stdout}");
    }
    server.assert_alive();
}
