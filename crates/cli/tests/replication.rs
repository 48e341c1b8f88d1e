//! Single-leader replication between real `tandem server` processes (issue
//! 3): log shipping to followers, catch-up after kill -9, snapshots for a
//! wiped or too-far-behind follower, ack policies with a dead follower,
//! WAIT / WAITLSN / LASTLSN, READONLY, lag reporting, REPLICAOF and the
//! cluster secret.
//!
//! Every test runs its own 3-node cluster on loopback (node 1 leads) in its
//! own temporary directories. Peer ports are fixed per cluster (they are
//! named in `--members`); client and admin ports are picked by the kernel.
//! Every wait is a bounded poll: a hung node fails the test, never hangs it.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{info, slave, Cluster, CONNECT};
use common::{eventually, metric, redis_cli_output, Raw, Resp, TestServer};

/// How long a follower may take to reach a given LSN (WAITLSN timeout).
const CATCH_UP: Duration = Duration::from_secs(20);

fn num(map: &BTreeMap<String, String>, field: &str) -> u64 {
    map.get(field)
        .unwrap_or_else(|| panic!("no {field} in {map:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{field} is not a number ({e}) in {map:?}"))
}

fn ok(r: Resp, what: &str) {
    assert_eq!(r, Resp::Simple("OK".into()), "{what}");
}

fn int(r: Resp, what: &str) -> i64 {
    match r {
        Resp::Integer(n) => n,
        other => panic!("{what}: expected an integer, got {other:?}"),
    }
}

/// `SET k v` on `raw`, expecting OK.
fn set(raw: &mut Raw, k: &str, v: &str) {
    ok(raw.cmd(&["SET", k, v]), &format!("SET {k} {v}"));
}

/// `GET k` as an optional string.
fn get(server: &TestServer, k: &str) -> Option<String> {
    match server.raw().cmd(&["GET", k]) {
        Resp::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Resp::Nil => None,
        other => panic!("GET {k}: {other:?}"),
    }
}

/// The leader's last LSN (`master_repl_offset`).
fn leader_last_lsn(leader: &TestServer) -> u64 {
    num(&info(leader), "master_repl_offset")
}

/// `WAITLSN lsn` on `server`; asserts it reached `lsn` within [`CATCH_UP`].
fn wait_lsn(cluster: &Cluster, id: u64, lsn: u64) -> u64 {
    let mut raw = cluster.node(id).raw();
    raw.set_read_timeout(CATCH_UP + Duration::from_secs(5));
    let got = int(raw.cmd(&["WAITLSN", &lsn.to_string(), &CATCH_UP.as_millis().to_string()]), "WAITLSN");
    assert!(
        got >= lsn as i64,
        "node {id} applied only up to LSN {got} of {lsn} within {CATCH_UP:?}\nits INFO: {:?}\n{}",
        info(cluster.node(id)),
        cluster.stderrs()
    );
    got as u64
}

/// Every key and value of a node (KEYS * then MGET).
fn dump(server: &TestServer) -> BTreeMap<String, String> {
    let mut raw = server.raw();
    let keys: Vec<String> = match raw.cmd(&["KEYS", "*"]) {
        Resp::Array(items) | Resp::Set(items) => items.iter().map(Resp::text).collect(),
        other => panic!("KEYS *: {other:?}"),
    };
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let mut args = vec!["MGET"];
        args.extend(chunk.iter().map(String::as_str));
        let Resp::Array(values) = raw.cmd(&args) else { panic!("MGET did not answer an array") };
        for (k, v) in chunk.iter().zip(values) {
            if v != Resp::Nil {
                out.insert(k.clone(), v.text());
            }
        }
    }
    out
}

fn dbsize(server: &TestServer) -> i64 {
    int(server.raw().cmd(&["DBSIZE"]), "DBSIZE")
}

/// Asserts node `id` holds exactly what the leader holds.
fn assert_same_contents(cluster: &Cluster, id: u64, leader: &BTreeMap<String, String>) {
    let follower = dump(cluster.node(id));
    if &follower != leader {
        let missing: Vec<_> = leader.keys().filter(|k| !follower.contains_key(*k)).take(5).collect();
        let extra: Vec<_> = follower.keys().filter(|k| !leader.contains_key(*k)).take(5).collect();
        let differ: Vec<_> =
            leader.iter().filter(|(k, v)| follower.get(*k).is_some_and(|f| f != *v)).map(|(k, _)| k).take(5).collect();
        panic!(
            "node {id} differs from the leader: {} keys vs {}; missing e.g. {missing:?}; extra e.g. {extra:?}; different values e.g. {differ:?}",
            follower.len(),
            leader.len()
        );
    }
}

/// Writes `n` keys `{prefix}{i}` = `v{i}` on the leader in pipelined
/// batches; returns the LSN of the last one (LASTLSN).
fn write_keys(leader: &TestServer, prefix: &str, n: usize) -> u64 {
    let mut con = leader.conn();
    for start in (0..n).step_by(1000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 1000).min(n) {
            pipe.cmd("SET").arg(format!("{prefix}{i}")).arg(format!("v{i}-{}", "x".repeat(i % 50))).ignore();
        }
        pipe.query::<()>(&mut con).unwrap_or_else(|e| panic!("pipelined SETs {prefix}{start}..: {e}"));
    }
    let lsn: u64 = redis::cmd("LASTLSN").query(&mut con).expect("LASTLSN");
    assert!(lsn > 0, "LASTLSN after {n} writes is 0");
    lsn
}

/// Counts snapshots a node received: its metric, and its log line.
fn snapshots_received(server: &TestServer) -> (f64, bool) {
    let metrics = server.admin_get("/metrics");
    let m = metric(&metrics, "tandem_repl_snapshots_received_total").unwrap_or(0.0);
    (m, server.stderr().contains("snapshot installed"))
}

/// Keeps writing `load:{i}` on the leader from a thread until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Writer {
    fn start(addr: SocketAddr, prefix: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    set(&mut raw, &format!("{prefix}{}", i % 3000), &format!("v{i}"));
                    i += 1;
                    count.store(i, Ordering::Relaxed);
                }
                int(raw.cmd(&["LASTLSN"]), "LASTLSN") as u64
            })
        };
        Writer { stop, count, thread: Some(thread) }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until `more` further writes were acknowledged.
    fn wait_for_more(&self, more: u64) {
        let target = self.count() + more;
        assert!(
            eventually(Duration::from_secs(20), || self.count() >= target
                || self.thread.as_ref().is_some_and(|t| t.is_finished())),
            "the writer did not make {more} more writes"
        );
        assert!(!self.thread.as_ref().unwrap().is_finished(), "the writer thread stopped (panicked?)");
    }

    /// Stops the writer; returns the LSN of its last write.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("writer thread panicked")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn ten_thousand_writes_replicate_to_two_followers() {
    let c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let lsn = write_keys(c.leader(), "k", 10_000);
    assert!(lsn >= 10_000, "LASTLSN {lsn} after 10 000 writes");
    for id in [2, 3] {
        wait_lsn(&c, id, lsn);
    }
    let leader = dump(c.leader());
    assert_eq!(leader.len(), 10_000);
    assert_eq!(leader.get("k9999").map(String::as_str), Some(format!("v9999-{}", "x".repeat(9999 % 50)).as_str()));
    for id in [2, 3] {
        assert_same_contents(&c, id, &leader);
        assert_eq!(dbsize(c.node(id)), 10_000, "DBSIZE on node {id}");
    }
    assert_eq!(dbsize(c.leader()), 10_000);
}

#[test]
fn follower_killed_with_9_catches_up_after_restart() {
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let writer = Writer::start(c.leader().client_addr(), "load:");
    writer.wait_for_more(300);
    c.node_mut(2).kill9();
    writer.wait_for_more(1500);
    c.node_mut(2).restart();
    writer.wait_for_more(500);
    let lsn = writer.finish();
    let last = leader_last_lsn(c.leader());
    assert!(last >= lsn, "leader's master_repl_offset {last} < the writer's LASTLSN {lsn}");
    for id in [2, 3] {
        wait_lsn(&c, id, last);
    }
    let leader = dump(c.leader());
    assert!(!leader.is_empty());
    for id in [2, 3] {
        assert_same_contents(&c, id, &leader);
    }
    c.wait_streaming(&[2]);
}

/// Flags that make the leader's log roll small segments, so that SAVE
/// truncates it and an old follower needs a snapshot.
const SMALL_SEGMENTS: &[&str] = &["--segment-bytes-max", "4096", "--snapshot-entries", "0"];

/// SAVE on the leader and check that it dropped old log segments.
fn save_and_truncate(c: &Cluster) {
    let before = common::segments(c.leader().data_dir()).len();
    ok(c.leader().raw().cmd(&["SAVE"]), "SAVE on the leader");
    let after = common::segments(c.leader().data_dir()).len();
    assert!(
        after < before,
        "SAVE did not truncate the leader's log ({before} segments before, {after} after); the test cannot force a snapshot"
    );
}

fn assert_snapshot_received(c: &Cluster, id: u64) {
    let (m, logged) = snapshots_received(c.node(id));
    assert!(
        m >= 1.0 && logged,
        "node {id} shows no received snapshot (tandem_repl_snapshots_received_total = {m}, 'snapshot installed' logged: {logged})\n{}",
        c.stderrs()
    );
    assert!(c.leader().stderr().contains("sending a snapshot"), "the leader did not log 'sending a snapshot'");
}

#[test]
fn wiped_follower_receives_a_snapshot_then_the_log() {
    let mut c = Cluster::three(SMALL_SEGMENTS);
    c.wait_streaming(&[2, 3]);
    write_keys(c.leader(), "a", 3000);
    save_and_truncate(&c);
    write_keys(c.leader(), "b", 200);

    // Wipe follower 2 and bring it back empty.
    let n2 = c.node_mut(2);
    n2.kill9();
    let dir = n2.data_dir().to_path_buf();
    std::fs::remove_dir_all(&dir).expect("wipe the follower");
    std::fs::create_dir_all(&dir).expect("recreate its data dir");
    n2.restart();
    c.wait_streaming(&[2]);

    // The log after the snapshot keeps flowing.
    let mut leader_raw = c.leader().raw();
    set(&mut leader_raw, "after", "snapshot");
    let lsn = int(leader_raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 2, lsn);
    wait_lsn(&c, 3, lsn);
    assert_eq!(get(c.node(2), "after").as_deref(), Some("snapshot"));
    let leader = dump(c.leader());
    assert_eq!(leader.len(), 3201);
    assert_same_contents(&c, 2, &leader);
    assert_same_contents(&c, 3, &leader);
    assert_snapshot_received(&c, 2);
}

#[test]
fn follower_too_far_behind_receives_a_snapshot() {
    let mut c = Cluster::three(SMALL_SEGMENTS);
    c.wait_streaming(&[2, 3]);
    let mut leader_raw = c.leader().raw();
    for i in 0..50 {
        set(&mut leader_raw, &format!("old{i}"), "before");
    }
    let lsn = int(leader_raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 2, lsn);
    c.node_mut(2).kill9();

    // While it is down: overwrite and delete keys it holds, write many more,
    // and truncate the log behind a snapshot.
    for i in 0..25 {
        set(&mut leader_raw, &format!("old{i}"), "after");
    }
    for i in 25..50 {
        assert_eq!(leader_raw.cmd(&["DEL", &format!("old{i}")]), Resp::Integer(1));
    }
    write_keys(c.leader(), "far", 3000);
    save_and_truncate(&c);
    write_keys(c.leader(), "tail", 100);

    c.node_mut(2).restart();
    c.wait_streaming(&[2]);
    set(&mut leader_raw, "last", "write");
    let lsn = int(leader_raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 2, lsn);
    let leader = dump(c.leader());
    assert_eq!(leader.len(), 25 + 3000 + 100 + 1);
    assert_same_contents(&c, 2, &leader);
    assert_eq!(get(c.node(2), "old30"), None, "a key deleted while the follower was down survived the snapshot");
    assert_eq!(get(c.node(2), "old3").as_deref(), Some("after"));
    assert_snapshot_received(&c, 2);
}

#[test]
fn all_policy_with_a_dead_follower_fails_writes_with_the_clear_error_and_recovers_when_it_returns() {
    let mut c = Cluster::three(&["--ack", "all", "--ack-timeout-ms", "300"]);
    c.wait_streaming(&[2, 3]);
    let mut raw = c.leader().raw();
    set(&mut raw, "before", "1");

    c.node_mut(3).kill9();
    let t0 = Instant::now();
    let reply = raw.cmd(&["SET", "during", "2"]);
    let took = t0.elapsed();
    let Resp::Error(e) = &reply else { panic!("SET with ack=all and a dead follower answered {reply:?}") };
    assert!(e.starts_with("NOREPLICAS "), "error code: {e}");
    assert!(e.contains("durable there"), "the error does not say the write is durable on the leader: {e}");
    assert!(e.contains("reached 1 of the 2 replicas"), "the error does not say 1 of the 2 replicas: {e}");
    assert!(e.contains("300 ms"), "the error does not name the timeout: {e}");
    assert!(e.contains("not rolled back"), "{e}");
    assert!(took >= Duration::from_millis(250), "the write failed after {took:?}, before its 300 ms timeout");
    assert!(took < Duration::from_secs(5), "the write took {took:?} to fail with a 300 ms timeout");
    // Not rolled back: readable on the leader, and replicated to the survivor.
    assert_eq!(get(c.leader(), "during").as_deref(), Some("2"));
    let lsn = int(raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 2, lsn);
    assert_eq!(get(c.node(2), "during").as_deref(), Some("2"));

    c.node_mut(3).restart();
    let deadline = Instant::now() + CONNECT;
    let mut last = Resp::Nil;
    while Instant::now() < deadline {
        last = raw.cmd(&["SET", "after", "3"]);
        if last == Resp::Simple("OK".into()) {
            break;
        }
    }
    assert_eq!(
        last,
        Resp::Simple("OK".into()),
        "writes did not succeed again after the follower returned\n{}",
        c.stderrs()
    );
    set(&mut raw, "after2", "4");
    let lsn = int(raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 3, lsn);
    for k in ["before", "during", "after", "after2"] {
        assert!(get(c.node(3), k).is_some(), "the returned follower lacks {k}");
    }
}

#[test]
fn async_with_a_dead_follower_keeps_accepting_writes() {
    let mut c = Cluster::three(&["--ack", "async", "--ack-timeout-ms", "300"]);
    c.wait_streaming(&[2, 3]);
    c.node_mut(3).kill9();
    let mut raw = c.leader().raw();
    let t0 = Instant::now();
    for i in 0..200 {
        set(&mut raw, &format!("k{i}"), "v");
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "200 async writes took {:?}", t0.elapsed());
    let lsn = int(raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 2, lsn);
    // Even with no follower at all.
    c.node_mut(2).kill9();
    for i in 200..300 {
        set(&mut raw, &format!("k{i}"), "v");
    }
    assert_eq!(dbsize(c.leader()), 300);
}

#[test]
fn any_1_acknowledges_with_one_follower_down_and_the_write_is_on_the_survivor() {
    let mut c = Cluster::three(&["--ack", "any 1", "--ack-level", "apply", "--ack-timeout-ms", "5000"]);
    c.wait_streaming(&[2, 3]);
    c.node_mut(3).kill9();
    let mut leader = c.leader().raw();
    let mut survivor = c.node(2).raw();
    for i in 0..50 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        set(&mut leader, &k, &v);
        assert_eq!(
            survivor.cmd(&["GET", &k]),
            Resp::Bulk(v.into_bytes()),
            "after OK under any 1 / apply, the surviving follower does not have {k}"
        );
    }
}

#[test]
fn wait_returns_the_number_of_followers_holding_the_write() {
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let mut raw = c.leader().raw();
    set(&mut raw, "x", "1");
    assert_eq!(raw.cmd(&["WAIT", "2", "5000"]), Resp::Integer(2), "WAIT 2 with both followers up");

    let t0 = Instant::now();
    let n = int(raw.cmd(&["WAIT", "0", "0"]), "WAIT 0 0");
    assert!(t0.elapsed() < Duration::from_millis(500), "WAIT 0 0 took {:?}", t0.elapsed());
    assert!((0..=2).contains(&n), "WAIT 0 0 = {n}");

    c.node_mut(3).kill9();
    set(&mut raw, "y", "2");
    let t0 = Instant::now();
    assert_eq!(raw.cmd(&["WAIT", "2", "500"]), Resp::Integer(1), "WAIT 2 500 with one follower dead");
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(450), "WAIT 2 500 returned after {took:?}");
    assert!(took < Duration::from_secs(3), "WAIT 2 500 returned after {took:?}");
    assert_eq!(raw.cmd(&["WAIT", "1", "5000"]), Resp::Integer(1), "WAIT 1 with one follower up");

    match c.node(2).raw().cmd(&["WAIT", "1", "100"]) {
        Resp::Error(e) => assert!(e.starts_with("ERR"), "WAIT on a follower: {e}"),
        other => panic!("WAIT on a follower answered {other:?}, expected an error"),
    }
}

#[test]
fn write_on_a_follower_answers_readonly_naming_the_leader() {
    let c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let leader_addr = c.leader().client_addr().to_string();
    for id in [2, 3] {
        match c.node(id).raw().cmd(&["SET", "k", "v"]) {
            Resp::Error(e) => {
                assert!(e.starts_with("READONLY You can't write against a read only replica."), "node {id}: {e}");
                assert!(e.contains(&leader_addr), "node {id}'s READONLY does not name the leader {leader_addr}: {e}");
            }
            other => panic!("SET on follower {id} answered {other:?}"),
        }
    }
    let (_, out, err) = redis_cli_output(c.node(2).client_addr(), &["SET", "k", "v"]);
    assert!(out.contains("READONLY You can't write against a read only replica."), "redis-cli: {out:?} {err:?}");
    assert!(out.contains(&leader_addr), "redis-cli: {out:?}");
    assert_eq!(get(c.node(2), "k"), None, "a refused write reached the follower");
    assert_eq!(get(c.leader(), "k"), None);
}

#[test]
fn waitlsn_and_lastlsn_form_a_session_token() {
    let c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let mut raw = c.leader().raw();
    assert_eq!(raw.cmd(&["LASTLSN"]), Resp::Integer(0), "LASTLSN before any write");
    set(&mut raw, "s", "v1");
    let n = int(raw.cmd(&["LASTLSN"]), "LASTLSN");
    assert!(n > 0, "LASTLSN after a write: {n}");
    for id in [2, 3] {
        let mut f = c.node(id).raw();
        let got = int(f.cmd(&["WAITLSN", &n.to_string(), "1000"]), "WAITLSN");
        assert!(got >= n, "WAITLSN {n} on node {id} returned {got}");
        assert_eq!(f.cmd(&["GET", "s"]), Resp::Bulk(b"v1".to_vec()), "node {id} after WAITLSN");
    }
    set(&mut raw, "s", "v2");
    let m = int(raw.cmd(&["LASTLSN"]), "LASTLSN");
    assert!(m > n, "LASTLSN did not advance: {n} then {m}");
    // Another connection's token is its own.
    assert_eq!(c.leader().raw().cmd(&["LASTLSN"]), Resp::Integer(0));
    let mut f = c.node(2).raw();
    assert!(int(f.cmd(&["WAITLSN", &m.to_string(), "1000"]), "WAITLSN") >= m);
    assert_eq!(f.cmd(&["GET", "s"]), Resp::Bulk(b"v2".to_vec()));
    // A token no node has reached: WAITLSN times out and says where it is.
    let t0 = Instant::now();
    let got = int(f.cmd(&["WAITLSN", &(m + 1000).to_string(), "200"]), "WAITLSN");
    assert!(got >= m && got < m + 1000, "WAITLSN beyond the end returned {got}");
    assert!(t0.elapsed() >= Duration::from_millis(150), "WAITLSN 200 ms returned after {:?}", t0.elapsed());
}

#[test]
fn lag_is_visible_in_info_replication_and_status() {
    // Node 3 waits 200 ms before applying each batch it receives, so a
    // burst of writes (about one batch each) keeps it visibly behind for
    // about 2 s.
    let c =
        Cluster::start(3, Some(1), |id| if id == 3 { vec!["--apply-delay-ms".into(), "200".into()] } else { vec![] });
    c.wait_streaming(&[2, 3]);
    let mut raw = c.leader().raw();
    for i in 0..10 {
        set(&mut raw, &format!("burst{i}"), "v");
    }
    let lsn = int(raw.cmd(&["LASTLSN"]), "LASTLSN") as u64;

    // While node 3 catches up: sample the leader's INFO and /status and
    // node 3's own INFO.
    let (mut info_lsn, mut info_ms, mut status_lsn, mut follower_lsn) = (0u64, 0u64, 0u64, 0u64);
    let mut follower_sample = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let leader_info = info(c.leader());
        if let Some(s) = slave(&leader_info, 3) {
            info_lsn = info_lsn.max(num(&s, "lag_lsn"));
            info_ms = info_ms.max(num(&s, "lag_ms"));
        }
        let status = c.leader().status();
        if let Some(f) = status["replication"]["followers"].as_array().and_then(|fs| fs.iter().find(|f| f["id"] == 3)) {
            status_lsn = status_lsn.max(f["lag_lsn"].as_u64().unwrap_or(0));
        }
        let fi = info(c.node(3));
        follower_lsn = follower_lsn.max(fi.get("tandem_lag_lsn").and_then(|v| v.parse().ok()).unwrap_or(0));
        if follower_sample.is_empty() && info_lsn >= 5 {
            follower_sample = format!(
                "when the leader reported lag_lsn {info_lsn} for it, node 3's INFO said: {:?}",
                fi.iter().filter(|(k, _)| k.starts_with("tandem_")).collect::<Vec<_>>()
            );
        }
        let applied: u64 = fi.get("tandem_applied_lsn").and_then(|v| v.parse().ok()).unwrap_or(0);
        if applied >= lsn || (info_lsn > 0 && info_ms > 0 && status_lsn > 0 && follower_lsn > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(info_lsn > 0, "INFO replication on the leader never showed lag_lsn > 0 for the delayed follower");
    assert!(info_ms > 0, "INFO replication on the leader never showed lag_ms > 0 for the delayed follower");
    assert!(status_lsn > 0, "/status never showed lag_lsn > 0 for the delayed follower: {}", c.leader().status());

    // Settled: every lag reads 0.
    wait_lsn(&c, 3, lsn);
    let settled = eventually(Duration::from_secs(10), || {
        let i = info(c.leader());
        let f = info(c.node(3));
        [2, 3].iter().all(|&id| slave(&i, id).is_some_and(|s| s["lag_lsn"] == "0" && s["lag_ms"] == "0"))
            && f.get("tandem_lag_lsn").map(String::as_str) == Some("0")
    });
    assert!(
        settled,
        "lag did not settle to 0: leader INFO {:?}; follower 3 INFO {:?}; /status {}",
        info(c.leader()),
        info(c.node(3)),
        c.leader().status()
    );
    let status = c.leader().status();
    let f = status["replication"]["followers"].as_array().and_then(|fs| fs.iter().find(|f| f["id"] == 3)).cloned();
    assert_eq!(f.as_ref().map(|f| f["lag_lsn"].clone()), Some(serde_json::json!(0)), "/status: {status}");

    // The follower knows it is behind, too.
    assert!(follower_lsn > 0, "the delayed follower's INFO never showed tandem_lag_lsn > 0; {follower_sample}");
}

#[test]
fn replicaof_no_one_promotes_a_follower_and_raises_the_epoch() {
    let c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let mut l = c.leader().raw();
    set(&mut l, "old", "epoch1");
    let lsn = int(l.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 2, lsn);
    wait_lsn(&c, 3, lsn);
    let i = info(c.node(2));
    assert_eq!(i.get("tandem_epoch").map(String::as_str), Some("1"), "{i:?}");

    let mut n2 = c.node(2).raw();
    ok(n2.cmd(&["REPLICAOF", "NO", "ONE"]), "REPLICAOF NO ONE on node 2");
    set(&mut n2, "new", "epoch2");
    let i = info(c.node(2));
    assert_eq!(i.get("role").map(String::as_str), Some("master"), "{i:?}");
    assert_eq!(i.get("tandem_epoch").map(String::as_str), Some("2"), "{i:?}");
    assert_eq!(get(c.node(2), "old").as_deref(), Some("epoch1"), "the promoted node lost the old data");

    let mut n3 = c.node(3).raw();
    ok(n3.cmd(&["REPLICAOF", "127.0.0.1", &c.peer_port(2).to_string()]), "REPLICAOF node 2 on node 3");
    let lsn = int(n2.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 3, lsn);
    assert_eq!(get(c.node(3), "new").as_deref(), Some("epoch2"));
    assert_eq!(get(c.node(3), "old").as_deref(), Some("epoch1"));
    set(&mut n2, "newer", "x");
    let lsn = int(n2.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 3, lsn);
    assert_eq!(get(c.node(3), "newer").as_deref(), Some("x"));
    let i = info(c.node(3));
    assert_eq!(i.get("role").map(String::as_str), Some("slave"), "{i:?}");
    assert_eq!(i.get("tandem_epoch").map(String::as_str), Some("2"), "{i:?}");
    assert_eq!(i.get("master_port"), Some(&c.node(2).client_addr().port().to_string()), "{i:?}");
    match n3.cmd(&["SET", "k", "v"]) {
        Resp::Error(e) => {
            assert!(e.contains(&c.node(2).client_addr().to_string()), "READONLY names the old leader: {e}")
        }
        other => panic!("SET on node 3 answered {other:?}"),
    }
    // Node 2 lists node 3 as its follower.
    assert!(
        eventually(CONNECT, || slave(&info(c.node(2)), 3).is_some_and(|s| s["state"] == "online")),
        "node 2 does not list node 3: {:?}",
        info(c.node(2))
    );
}

#[test]
fn wrong_cluster_secret_is_refused() {
    let c = Cluster::start(3, Some(1), |id| {
        let secret = if id == 2 { "not-the-secret" } else { "the-secret" };
        vec!["--cluster-secret".into(), secret.into()]
    });
    c.wait_streaming(&[3]);
    assert!(
        c.leader().wait_for_stderr("refused a peer connection", CONNECT),
        "the leader did not log a refusal of the wrong secret\n{}",
        c.stderrs()
    );
    assert!(
        c.node(2).wait_for_stderr("did not prove it holds the cluster secret", CONNECT),
        "the refused follower does not log why it cannot replicate\n{}",
        c.stderrs()
    );
    let mut l = c.leader().raw();
    set(&mut l, "k", "v");
    let lsn = int(l.cmd(&["LASTLSN"]), "LASTLSN") as u64;
    wait_lsn(&c, 3, lsn);
    let got = int(c.node(2).raw().cmd(&["WAITLSN", &lsn.to_string(), "500"]), "WAITLSN");
    assert!(got < lsn as i64, "the follower with the wrong secret applied LSN {got}");
    assert_eq!(get(c.node(2), "k"), None, "the follower with the wrong secret replicated");
    assert_eq!(l.cmd(&["WAIT", "2", "300"]), Resp::Integer(1));
    let i = info(c.node(2));
    assert_eq!(i.get("master_link_status").map(String::as_str), Some("down"), "{i:?}");
    let s = slave(&info(c.leader()), 2);
    assert!(s.as_ref().is_none_or(|s| s["state"] != "online"), "the leader lists node 2 online: {s:?}");
}
