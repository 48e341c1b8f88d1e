//! Large writes never break durability (issue 10 item 5, issue 15 item 5):
//! every size limit is checked before any effect is applied, so a write over
//! a limit gets a clear error and changes nothing; a large valid write is
//! applied and logged together, snapshots carry it, and after a restart the
//! snapshot and the log agree. The node never panics on this path.
//!
//! Most tests use a small `--entry-bytes-max` so they stay fast and small;
//! one runs at the real default sizes (an `MSET` of two 300 MiB values).

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{eventually, tempdir, Resp, TestServer};

/// The per-write log budget the small tests run with.
const ENTRY_BYTES_MAX: usize = 1 << 20;

fn value(len: usize, fill: u8) -> Vec<u8> {
    vec![fill; len]
}

fn get_len(con: &mut redis::Connection, key: &str) -> Option<usize> {
    let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query(con).expect("GET");
    v.map(|v| v.len())
}

/// Held by the tests that move hundreds of MB, so they do not run at the
/// same time on a 2-core machine (each alone is what they pin down).
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// A client timeout for a request of `bytes`: the harness's default plus
/// one second per 10 MiB (a loaded 2-core machine moves and copies a few
/// tens of MB per second per copy).
fn size_timeout(bytes: usize) -> Duration {
    common::IO_TIMEOUT + Duration::from_secs((bytes >> 20) as u64 / 10)
}

fn assert_no_panic(server: &TestServer) {
    assert!(!server.stderr().contains("panicked"), "the server panicked:\n{}", server.stderr());
}

/// `MSET a <600 KiB> b <600 KiB> c small` under a 1 MiB budget: refused
/// whole, `a` keeps its old value, nothing reaches the log.
fn refused_mset(con: &mut redis::Connection) {
    let () = redis::cmd("SET").arg("a").arg("old").query(con).unwrap();
    let big = value(600 << 10, b'x');
    let err = redis::cmd("MSET")
        .arg("a")
        .arg(&big)
        .arg("b")
        .arg(&big)
        .arg("c")
        .arg("small")
        .query::<()>(con)
        .expect_err("an MSET over the entry budget is refused");
    let text = err.to_string();
    assert!(text.contains("nothing was changed") && text.contains(&ENTRY_BYTES_MAX.to_string()), "{text}");
    let a: Option<String> = redis::cmd("GET").arg("a").query(con).unwrap();
    assert_eq!(a.as_deref(), Some("old"), "the refused MSET changed a");
    assert_eq!(get_len(con, "b"), None);
    assert_eq!(get_len(con, "c"), None);
}

#[test]
fn an_oversized_mset_is_refused_whole_and_a_restart_agrees() {
    let dir = tempdir();
    let limit = ENTRY_BYTES_MAX.to_string();
    let mut server = TestServer::start(dir.path(), &["--entry-bytes-max", &limit]);
    let mut con = server.conn();
    refused_mset(&mut con);
    // A large write within the budget is applied and logged together.
    let () = redis::cmd("SET").arg("big").arg(value(900 << 10, b'y')).query(&mut con).unwrap();
    let keys: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(keys, 2, "a and big");
    // Replay from the log alone (crash) agrees.
    server.kill9();
    server.restart();
    let mut con = server.conn();
    assert_eq!(get_len(&mut con, "big"), Some(900 << 10));
    assert_eq!(redis::cmd("GET").arg("a").query::<Option<String>>(&mut con).unwrap().as_deref(), Some("old"));
    assert_eq!(get_len(&mut con, "b"), None);
    // A snapshot (SAVE, then shutdown's snapshot) carries it; restart agrees.
    let () = redis::cmd("SAVE").query(&mut con).expect("SAVE with a large value");
    refused_mset(&mut con);
    assert!(server.sigterm_and_wait().success(), "clean shutdown:\n{}", server.stderr());
    server.restart();
    let mut con = server.conn();
    assert_eq!(get_len(&mut con, "big"), Some(900 << 10));
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 2);
    assert_no_panic(&server);
}

#[test]
fn an_oversized_mset_on_a_leader_reaches_no_follower() {
    let limit = ENTRY_BYTES_MAX.to_string();
    let c = Cluster::three(&["--entry-bytes-max", &limit]);
    c.wait_streaming(&[2, 3]);
    let mut con = c.leader().conn();
    refused_mset(&mut con);
    let () = redis::cmd("SET").arg("big").arg(value(900 << 10, b'z')).query(&mut con).unwrap();
    let () = redis::cmd("SET").arg("after").arg("1").query(&mut con).unwrap();
    for id in [2, 3] {
        let mut f = c.node(id).conn();
        let ok = eventually(Duration::from_secs(10), || {
            redis::cmd("GET").arg("after").query::<Option<String>>(&mut f).unwrap().is_some()
        });
        assert!(ok, "follower {id} did not catch up\n{}", c.stderrs());
        assert_eq!(get_len(&mut f, "big"), Some(900 << 10), "follower {id}");
        assert_eq!(redis::cmd("GET").arg("a").query::<Option<String>>(&mut f).unwrap().as_deref(), Some("old"));
        assert_eq!(get_len(&mut f, "b"), None, "follower {id} got part of the refused MSET");
        assert_no_panic(c.node(id));
    }
    assert_no_panic(c.leader());
}

/// A value of many peer-frame fragments (decision 0028: frames over 2 MiB
/// cross the wire in 1 MiB fragments, decoded and applied off the event
/// loop) reaches every follower byte for byte, a write after it too, and a
/// follower killed with -9 has it after restart.
#[test]
fn a_value_sent_in_fragments_is_intact_on_every_follower_and_after_kill_9() {
    let _heavy = heavy();
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let big: Vec<u8> = (0..(20usize << 20)).map(|i| (i % 251) as u8).collect();
    let mut con = c.leader().conn();
    let () = redis::cmd("SET").arg("big").arg(&big).query(&mut con).unwrap();
    let () = redis::cmd("SET").arg("after").arg("1").query(&mut con).unwrap();
    let intact = |server: &TestServer| {
        let mut f = server.conn();
        let caught_up = eventually(Duration::from_secs(30), || {
            redis::cmd("GET").arg("after").query::<Option<String>>(&mut f).unwrap().is_some()
        });
        caught_up && redis::cmd("GET").arg("big").query::<Option<Vec<u8>>>(&mut f).unwrap().as_deref() == Some(&big[..])
    };
    for id in [2, 3] {
        assert!(intact(c.node(id)), "follower {id} lacks the fragmented value\n{}", c.stderrs());
        assert_no_panic(c.node(id));
    }
    c.node_mut(2).kill9();
    c.node_mut(2).restart();
    assert!(intact(c.node(2)), "follower 2 lost the value in a kill -9\n{}", c.stderrs());
    assert_no_panic(c.leader());
}

/// The cases at the real default limits: two 300 MiB values in one
/// `MSET` (600 MiB of effects, over the 512 MiB log entry), and a bulk of
/// 536 870 880 bytes (over the default bulk limit, which leaves room for the
/// key in one entry).
#[test]
fn default_limits_refuse_a_600_mib_mset_whole_and_keep_serving() {
    let _heavy = heavy();
    let dir = tempdir();
    let mut server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    // Sending 600 MiB and reading the refusal takes longer than the
    // harness's 10 s on a loaded machine: the timeouts scale with the size.
    let timeout = size_timeout(600 << 20);
    con.set_read_timeout(Some(timeout)).unwrap();
    con.set_write_timeout(Some(timeout)).unwrap();
    let () = redis::cmd("SET").arg("a").arg("old").query(&mut con).unwrap();
    let big = value(300 << 20, b'v');
    let err = redis::cmd("MSET").arg("a").arg(&big).arg("b").arg(&big).query::<()>(&mut con).unwrap_err();
    assert!(err.to_string().contains("nothing was changed"), "{err}");
    drop(big);
    let mut other = server.conn();
    let a: Option<String> = redis::cmd("GET").arg("a").query(&mut other).unwrap();
    assert_eq!(a.as_deref(), Some("old"), "another connection must not see the refused MSET");
    // The old 512 MiB - 32 bytes SET: refused at the protocol level now.
    let mut raw = server.raw();
    let _ = raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870880\r\n");
    assert_eq!(raw.read().ok(), Some(Resp::Error("ERR Protocol error: invalid bulk length".into())));
    server.assert_alive();
    // A SAVE and a restart agree with what was acknowledged.
    let () = redis::cmd("SAVE").query(&mut other).expect("SAVE");
    server.kill9();
    server.restart();
    let mut con = server.conn();
    assert_eq!(redis::cmd("GET").arg("a").query::<Option<String>>(&mut con).unwrap().as_deref(), Some("old"));
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 1);
    assert_no_panic(&server);
}

/// The node whose `INFO replication` says master with its lease held.
fn lease_holder(c: &Cluster) -> u64 {
    let mut found = None;
    let ok = eventually(common::cluster::ELECT, || {
        found = (1..=3u64).find(|&id| {
            let i = common::cluster::info(c.node(id));
            i.get("role").map(String::as_str) == Some("master")
                && i.get("tandem_lease").map(String::as_str) == Some("held")
        });
        found.is_some()
    });
    assert!(ok, "no leader holds its lease\n{}", c.stderrs());
    found.expect("found")
}

/// Issue 15 item 5: a 300 MB `SET` on the leader of a 3-node cluster with
/// automatic failover and the default 400 ms lease causes no failover (same
/// leader, same epoch everywhere) and the value reaches every node and
/// survives a follower's kill -9, while other clients read and `PING` on
/// the leader meanwhile. (The leader's lease may still lapse for a moment
/// on a loaded machine and be renewed at once: decision 0028.) Holds because nothing on the event loops waits for the state
/// lock the write (or a follower's apply) holds for seconds, the leader
/// sends lease requests while it encodes the frame and between its
/// fragments, and followers grant from their connection reader while they
/// decode and apply it (decision 0028). Before, the leader's loop sat in
/// the expiry sweep waiting for that lock, no lease request went out, and
/// a follower took over; then the loop read the whole bulk in one burst of
/// page-faulting reads and waited for that lock in the once-a-second
/// snapshot check (both fixed: decision 0028, third session).
#[test]
fn a_300_mb_set_never_costs_the_leader_its_leadership() {
    let _heavy = heavy();
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const SIZE: usize = 300_000_000;
    let c = Cluster::start(3, None, |_| Vec::new());
    let leader = lease_holder(&c);
    let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &followers {
        let streaming = eventually(common::cluster::CONNECT, || {
            common::cluster::info(c.node(id)).get("master_link_status").map(String::as_str) == Some("up")
                && common::cluster::slave(&common::cluster::info(c.node(leader)), id)
                    .is_some_and(|s| s["state"] == "online")
        });
        assert!(streaming, "follower {id} is not streaming\n{}", c.stderrs());
    }
    let epoch = |id: u64| common::cluster::info(c.node(id)).get("tandem_epoch").cloned();
    let epoch_before = epoch(leader).expect("the leader reports its epoch");
    let mut con = c.node(leader).conn();
    let () = redis::cmd("SET").arg("small").arg("1").query(&mut con).unwrap();
    // Other clients keep reading on the leader during the write.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, addr) = (stop.clone(), c.node(leader).client_addr());
        std::thread::spawn(move || {
            let mut r = common::Raw::connect(addr);
            let mut answers = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if r.try_cmd(&["GET", "small"]).is_ok() && r.try_cmd(&["PING"]).is_ok() {
                    answers += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            answers
        })
    };
    let timeout = size_timeout(SIZE);
    con.set_read_timeout(Some(timeout)).unwrap();
    con.set_write_timeout(Some(timeout)).unwrap();
    let () = redis::cmd("SET").arg("big").arg(vec![b'b'; SIZE]).query(&mut con).expect("the 300 MB SET");
    for id in 1..=3u64 {
        let mut f = c.node(id).conn();
        let has = eventually(timeout, || redis::cmd("STRLEN").arg("big").query::<usize>(&mut f).ok() == Some(SIZE));
        assert!(has, "node {id} lacks the 300 MB value\n{}", c.stderrs());
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "the leader answered no read during the write");
    assert_eq!(lease_holder(&c), leader, "leadership moved\n{}", c.stderrs());
    for id in 1..=3u64 {
        assert_eq!(epoch(id).as_ref(), Some(&epoch_before), "node {id}: the epoch changed (a failover)");
    }
    // The value is durable: the followers' logs hold it across kill -9.
    let mut c = c;
    let f = followers[0];
    c.node_mut(f).kill9();
    c.node_mut(f).restart();
    let mut con = c.node(f).conn();
    let has = eventually(timeout, || redis::cmd("STRLEN").arg("big").query::<usize>(&mut con).ok() == Some(SIZE));
    assert!(has, "follower {f} lost the value in a kill -9\n{}", c.stderrs());
}

/// Measurement, not a pass/fail guarantee (the machine is shared): a valid
/// 300 MB `SET` on the leader of a 3-node cluster under the default 400 ms
/// lease; prints the longest `PING` stall on the leader, how long the lease
/// was not held, and whether leadership moved.
/// `cargo test --release -p tandem --test large_writes -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_a_300_mb_set_against_the_lease() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    let c = Cluster::start(3, None, |_| Vec::new());
    let leader = (|| {
        for _ in 0..2000 {
            for id in 1..=3u64 {
                let i = common::cluster::info(c.node(id));
                if i.get("role").map(String::as_str) == Some("master")
                    && i.get("tandem_lease").map(String::as_str) == Some("held")
                {
                    return id;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no leader\n{}", c.stderrs());
    })();
    let addr = c.node(leader).client_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut r = common::Raw::connect(addr);
            let (mut worst, mut not_held_ms, mut last) = (Duration::ZERO, 0u128, Instant::now());
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = r.try_cmd(&["PING"]);
                worst = worst.max(t.elapsed());
                let lease = match r.try_cmd(&["INFO", "replication"]) {
                    Ok(Resp::Bulk(b)) => String::from_utf8_lossy(&b).contains("tandem_lease:held"),
                    _ => false,
                };
                if !lease {
                    not_held_ms += last.elapsed().as_millis();
                }
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(5));
            }
            (worst, not_held_ms)
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut con = c.node(leader).conn();
    let started = Instant::now();
    let reply: redis::RedisResult<()> = redis::cmd("SET").arg("big").arg(vec![b'b'; 300_000_000]).query(&mut con);
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (worst_ping, lease_not_held_ms) = pinger.join().unwrap();
    let still = common::cluster::info(c.node(leader)).get("role").cloned();
    eprintln!(
        "300 MB SET on leader {leader}: reply {reply:?} after {took:?}; longest PING stall {worst_ping:?}; lease not \
         held for ~{lease_not_held_ms} ms; leader afterwards role={still:?}"
    );
}
