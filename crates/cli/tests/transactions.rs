//! Transactions through a real `tandem server` and real clients: MULTI /
//! EXEC / DISCARD / WATCH with Redis's semantics, one transaction = one log
//! entry on the leader, on its followers and after a follower crash.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::Cluster;
use common::{tempdir, Raw, Resp, TestServer};

fn simple(s: &str) -> Resp {
    Resp::Simple(s.to_string())
}

fn bulk(s: &str) -> Resp {
    Resp::Bulk(s.as_bytes().to_vec())
}

#[test]
fn redis_crate_atomic_pipeline_runs_every_command_in_order() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    let (a, n, b): (String, i64, Option<String>) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("k")
        .arg("v")
        .cmd("INCR")
        .arg("n")
        .cmd("GET")
        .arg("k")
        .query(&mut con)
        .expect("MULTI/EXEC pipeline");
    assert_eq!((a.as_str(), n, b.as_deref()), ("OK", 1, Some("v")));
    // A command that fails at run time does not stop the others (Redis).
    let mut raw = server.raw();
    assert_eq!(raw.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(raw.cmd(&["SET", "s", "x"]), simple("QUEUED"));
    assert_eq!(raw.cmd(&["INCR", "s"]), simple("QUEUED"));
    assert_eq!(raw.cmd(&["PING"]), simple("QUEUED"));
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Resp::Array(vec![
            simple("OK"),
            Resp::Error("ERR value is not an integer or out of range".into()),
            simple("PONG")
        ])
    );
    assert_eq!(raw.cmd(&["EXEC"]), Resp::Error("ERR EXEC without MULTI".into()));
    assert_eq!(raw.cmd(&["DISCARD"]), Resp::Error("ERR DISCARD without MULTI".into()));
}

#[test]
fn a_queuing_error_makes_exec_answer_execabort_and_run_nothing() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut raw = server.raw();
    let before = server.last_lsn();
    assert_eq!(raw.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(raw.cmd(&["SET", "a", "1"]), simple("QUEUED"));
    assert!(matches!(raw.cmd(&["NOSUCHCOMMAND"]), Resp::Error(e) if e.starts_with("ERR unknown command")));
    assert_eq!(raw.cmd(&["GET"]), Resp::Error("ERR wrong number of arguments for 'get' command".into()));
    assert_eq!(raw.cmd(&["MULTI"]), Resp::Error("ERR MULTI calls can not be nested".into()));
    assert_eq!(raw.cmd(&["EXEC"]), Resp::Error("EXECABORT Transaction discarded because of previous errors.".into()));
    assert_eq!(raw.cmd(&["EXISTS", "a"]), Resp::Integer(0));
    assert_eq!(server.last_lsn(), before, "nothing was logged");
    // DISCARD drops the queue.
    assert_eq!(raw.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(raw.cmd(&["SET", "a", "1"]), simple("QUEUED"));
    assert_eq!(raw.cmd(&["DISCARD"]), simple("OK"));
    assert_eq!(raw.cmd(&["EXISTS", "a"]), Resp::Integer(0));
}

#[test]
fn watch_aborts_exec_when_another_connection_or_expiry_changes_the_key() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut a = server.raw();
    let mut b = server.raw();
    a.cmd(&["SET", "w", "1"]);
    assert_eq!(a.cmd(&["WATCH", "w"]), simple("OK"));
    assert_eq!(b.cmd(&["SET", "w", "1"]), simple("OK"), "same value still counts as a change");
    a.cmd(&["MULTI"]);
    a.cmd(&["SET", "w", "mine"]);
    assert_eq!(a.cmd(&["EXEC"]), Resp::Nil, "EXEC after a watched key changed answers a null array");
    assert_eq!(a.cmd(&["GET", "w"]), bulk("1"));
    // After EXEC nothing is watched any more.
    a.cmd(&["MULTI"]);
    a.cmd(&["SET", "w", "mine"]);
    assert_eq!(a.cmd(&["EXEC"]), Resp::Array(vec![simple("OK")]));
    // Untouched watched keys let EXEC run; UNWATCH forgets them.
    a.cmd(&["WATCH", "w", "other"]);
    b.cmd(&["SET", "unrelated", "x"]);
    a.cmd(&["MULTI"]);
    a.cmd(&["INCR", "counter"]);
    assert_eq!(a.cmd(&["EXEC"]), Resp::Array(vec![Resp::Integer(1)]));
    a.cmd(&["WATCH", "w"]);
    b.cmd(&["DEL", "w"]);
    assert_eq!(a.cmd(&["UNWATCH"]), simple("OK"));
    a.cmd(&["MULTI"]);
    a.cmd(&["INCR", "counter"]);
    assert_eq!(a.cmd(&["EXEC"]), Resp::Array(vec![Resp::Integer(2)]));
    // A watched key that expires in between aborts too.
    a.cmd(&["SET", "e", "v", "PX", "50"]);
    a.cmd(&["WATCH", "e"]);
    std::thread::sleep(Duration::from_millis(120));
    a.cmd(&["MULTI"]);
    a.cmd(&["SET", "e", "again"]);
    assert_eq!(a.cmd(&["EXEC"]), Resp::Nil);
    // WATCH inside MULTI is refused without aborting the transaction.
    a.cmd(&["MULTI"]);
    assert_eq!(a.cmd(&["WATCH", "x"]), Resp::Error("ERR WATCH inside MULTI is not allowed".into()));
    a.cmd(&["SET", "x", "1"]);
    assert_eq!(a.cmd(&["EXEC"]), Resp::Array(vec![simple("OK")]));
}

#[test]
fn a_transaction_replicates_to_followers_as_one_log_entry() {
    let c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let before = c.leader().last_lsn();
    let mut con = c.leader().conn();
    let mut pipe = redis::pipe();
    pipe.atomic();
    for i in 0..50 {
        pipe.cmd("SET").arg(format!("tx:{i}")).arg(i).ignore();
    }
    pipe.cmd("INCRBY").arg("tx:total").arg(50).ignore();
    pipe.query::<()>(&mut con).expect("transaction");
    let after = c.leader().last_lsn();
    assert_eq!(after, before + 1, "51 writes in one MULTI/EXEC are one log entry");
    for id in [2, 3] {
        c.node(id).wait_applied(after);
        let mut raw = c.node(id).raw();
        assert_eq!(raw.cmd(&["GET", "tx:49"]), bulk("49"));
        assert_eq!(raw.cmd(&["GET", "tx:total"]), bulk("50"));
        // Writes inside MULTI on a follower get the READONLY of outside.
        assert_eq!(raw.cmd(&["MULTI"]), simple("OK"));
        assert!(matches!(raw.cmd(&["SET", "x", "1"]), Resp::Error(e) if e.starts_with("READONLY")));
        assert_eq!(raw.cmd(&["GET", "tx:1"]), simple("QUEUED"));
        assert!(matches!(raw.cmd(&["EXEC"]), Resp::Error(e) if e.starts_with("EXECABORT")));
        // Read-only transactions run on a follower.
        raw.cmd(&["MULTI"]);
        raw.cmd(&["GET", "tx:1"]);
        assert_eq!(raw.cmd(&["EXEC"]), Resp::Array(vec![bulk("1")]));
    }
}

/// Every transaction writes the same value to `KEYS` keys, so a reader that
/// sees two different values saw half a transaction.
const KEYS: usize = 20;

fn mget_all(raw: &mut Raw) -> Option<Vec<Resp>> {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("half:{i}")).collect();
    let mut args = vec!["MGET"];
    args.extend(keys.iter().map(String::as_str));
    match raw.try_cmd(&args) {
        Ok(Resp::Array(v)) => Some(v),
        _ => None,
    }
}

fn assert_whole(values: &[Resp], whence: &str) {
    assert!(values.windows(2).all(|w| w[0] == w[1]), "{whence}: half a transaction is visible: {values:?}");
}

#[test]
fn a_follower_killed_mid_stream_never_shows_half_a_transaction() {
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let addr = c.leader().client_addr();
    let writer = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut con = redis::Client::open(format!("redis://{addr}/")).unwrap().get_connection().unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for k in 0..KEYS {
                    pipe.cmd("SET").arg(format!("half:{k}")).arg(i).ignore();
                }
                pipe.query::<()>(&mut con).expect("transaction on the leader");
                i += 1;
                done.store(i, Ordering::Relaxed);
            }
        })
    };
    let wait_more = |n: u64| {
        let target = done.load(Ordering::Relaxed) + n;
        while done.load(Ordering::Relaxed) < target {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    wait_more(200);
    let mut reader = c.node(2).raw();
    for _ in 0..200 {
        if let Some(v) = mget_all(&mut reader) {
            assert_whole(&v, "follower while streaming");
        }
    }
    c.node_mut(2).kill9();
    wait_more(300);
    c.node_mut(2).restart();
    let mut reader = c.node(2).raw();
    let v = mget_all(&mut reader).expect("MGET after restart");
    assert_whole(&v, "follower right after restart (log replay)");
    wait_more(300);
    for _ in 0..200 {
        if let Some(v) = mget_all(&mut reader) {
            assert_whole(&v, "follower after catching up");
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let last = c.leader().last_lsn();
    c.node(2).wait_applied(last);
    let leader = mget_all(&mut c.leader().raw()).unwrap();
    assert_eq!(mget_all(&mut c.node(2).raw()).unwrap(), leader);
}

/// EXEC runs on one write budget (`--entry-bytes-max`): a transaction
/// whose effects together exceed it is refused whole, logs nothing and
/// changes nothing; so is a single HSET/RPUSH/ZADD over the budget.
#[test]
fn a_transaction_or_collection_write_over_the_entry_budget_is_refused_whole_and_changes_nothing() {
    const LIMIT: usize = 1 << 20;
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--entry-bytes-max", &LIMIT.to_string()]);
    let mut raw = server.raw();
    assert_eq!(raw.cmd(&["SET", "a", "old"]), simple("OK"));
    assert_eq!(raw.cmd(&["HSET", "h", "f", "v"]), Resp::Integer(1));
    assert_eq!(raw.cmd(&["RPUSH", "l", "x"]), Resp::Integer(1));
    assert_eq!(raw.cmd(&["ZADD", "z", "1", "m"]), Resp::Integer(1));
    // Refused writes are not changes: a watcher's transaction still runs.
    let mut watcher = server.raw();
    assert_eq!(watcher.cmd(&["WATCH", "a", "b", "h", "l", "z"]), simple("OK"));
    let before = server.last_lsn();
    let big = "x".repeat(600 << 10);
    let refused = |r: Resp, what: &str| match r {
        Resp::Error(e) => assert!(e.contains("nothing was changed") && e.contains(&LIMIT.to_string()), "{what}: {e}"),
        other => panic!("{what} was not refused: {other:?}"),
    };
    // Each SET fits alone; together they do not.
    assert_eq!(raw.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(raw.cmd(&["SET", "a", &big]), simple("QUEUED"));
    assert_eq!(raw.cmd(&["SET", "b", &big]), simple("QUEUED"));
    refused(raw.cmd(&["EXEC"]), "EXEC");
    assert_eq!(raw.cmd(&["GET", "a"]), bulk("old"), "the first SET was undone");
    assert_eq!(raw.cmd(&["EXISTS", "b"]), Resp::Integer(0));
    // One collection write over the budget.
    refused(raw.cmd(&["HSET", "h", "f", &big, "g", &big]), "HSET");
    refused(raw.cmd(&["RPUSH", "l", &big, &big]), "RPUSH");
    refused(raw.cmd(&["ZADD", "z", "2", &big, "3", &format!("{big}y")]), "ZADD");
    assert_eq!(raw.cmd(&["HGETALL", "h"]), Resp::Array(vec![bulk("f"), bulk("v")]));
    assert_eq!(raw.cmd(&["LRANGE", "l", "0", "-1"]), Resp::Array(vec![bulk("x")]));
    assert_eq!(raw.cmd(&["ZRANGE", "z", "0", "-1", "WITHSCORES"]), Resp::Array(vec![bulk("m"), bulk("1")]));
    assert_eq!(server.last_lsn(), before, "nothing was logged");
    assert_eq!(watcher.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(watcher.cmd(&["GET", "a"]), simple("QUEUED"));
    assert_eq!(watcher.cmd(&["EXEC"]), Resp::Array(vec![bulk("old")]), "no watched key changed");
    // The same transaction within the budget commits as one entry.
    let half = "y".repeat(300 << 10);
    assert_eq!(raw.cmd(&["MULTI"]), simple("OK"));
    assert_eq!(raw.cmd(&["SET", "a", &half]), simple("QUEUED"));
    assert_eq!(raw.cmd(&["SET", "b", &half]), simple("QUEUED"));
    assert_eq!(raw.cmd(&["EXEC"]), Resp::Array(vec![simple("OK"), simple("OK")]));
    assert_eq!(server.last_lsn(), before + 1, "one log entry");
    assert_eq!(raw.cmd(&["STRLEN", "b"]), Resp::Integer(300 << 10));
}
