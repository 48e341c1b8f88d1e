//! Durability of acknowledged writes across crashes (kill -9), graceful
//! shutdown (SIGTERM) and restarts from snapshot + log, on the real binary.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{tempdir, TestServer};
use redis::Value;

/// Concurrent writer tasks (distinct keys each).
const WRITERS: usize = 16;
/// How long the load runs before the crash or the SIGTERM.
const LOAD_DURATION: Duration = Duration::from_millis(1500);
/// Bound on any single request, so a hung server fails the test.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Every this many SETs a writer also INCRs its counter.
const INCR_EVERY: u64 = 4;

/// What one writer saw acknowledged.
#[derive(Debug, Default)]
struct Acked {
    task: usize,
    /// Indexes `i` whose `SET k:{task}:{i} v:{task}:{i}` got `+OK`.
    sets: Vec<u64>,
    /// Value of the last `INCR c:{task}` whose reply arrived.
    counter_acked: i64,
    /// INCRs sent (acknowledged or not).
    counter_sent: i64,
    /// The first error, if the writer stopped on one.
    error: Option<String>,
}

async fn writer(url: String, task: usize, stop: Arc<AtomicBool>) -> Acked {
    let mut acked = Acked { task, ..Acked::default() };
    let client = redis::Client::open(url).expect("valid url");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let set = redis::cmd("SET").arg(format!("k:{task}:{i}")).arg(format!("v:{task}:{i}")).to_owned();
        match tokio::time::timeout(REQUEST_TIMEOUT, set.query_async::<Value>(&mut con)).await {
            Ok(Ok(Value::Okay)) => acked.sets.push(i),
            Ok(Ok(other)) => panic!("SET k:{task}:{i} answered {other:?}, expected OK"),
            Ok(Err(e)) => {
                acked.error = Some(e.to_string());
                break;
            }
            Err(_) => {
                acked.error = Some("timeout".into());
                break;
            }
        }
        if i.is_multiple_of(INCR_EVERY) {
            acked.counter_sent += 1;
            let incr = redis::cmd("INCR").arg(format!("c:{task}")).to_owned();
            match tokio::time::timeout(REQUEST_TIMEOUT, incr.query_async::<i64>(&mut con)).await {
                Ok(Ok(v)) => {
                    assert_eq!(v, acked.counter_sent, "INCR c:{task} before any crash must count every INCR");
                    acked.counter_acked = v;
                }
                Ok(Err(e)) => {
                    acked.error = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    acked.error = Some("timeout".into());
                    break;
                }
            }
        }
        i += 1;
    }
    acked
}

fn start_load(server: &TestServer) -> (Arc<AtomicBool>, Vec<tokio::task::JoinHandle<Acked>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..WRITERS).map(|t| tokio::spawn(writer(server.url(), t, stop.clone()))).collect();
    (stop, tasks)
}

/// Waits for the writers, which stop on the first error (the server is
/// gone); `stop` is raised only if one of them outlives the timeout.
async fn join_load(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<Acked>>) -> Vec<Acked> {
    let mut out = Vec::new();
    for t in tasks {
        let acked = match tokio::time::timeout(Duration::from_secs(20), t).await {
            Ok(joined) => joined.expect("writer does not panic"),
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                panic!("a writer still got replies 20 s after the server was stopped");
            }
        };
        out.push(acked);
    }
    out
}

/// Checks, on the restarted node, that every acknowledged SET is there with
/// its value and that each counter is between its last acknowledged value
/// and the number of INCRs sent.
fn assert_acknowledged_writes_present(server: &TestServer, acked: &[Acked]) {
    let mut con = server.conn();
    let total: usize = acked.iter().map(|a| a.sets.len()).sum();
    assert!(total >= WRITERS, "the load acknowledged only {total} writes; the test proves nothing");
    eprintln!("checking {total} acknowledged SETs and {WRITERS} counters after restart");
    let mut missing = Vec::new();
    for a in acked {
        for chunk in a.sets.chunks(500) {
            let keys: Vec<String> = chunk.iter().map(|i| format!("k:{}:{i}", a.task)).collect();
            let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).expect("MGET");
            for (i, v) in chunk.iter().zip(values) {
                let expected = format!("v:{}:{i}", a.task);
                if v.as_deref() != Some(expected.as_str()) {
                    missing.push(format!("k:{}:{i} = {v:?} (expected {expected})", a.task));
                }
            }
        }
        let counter: Option<i64> = redis::cmd("GET").arg(format!("c:{}", a.task)).query(&mut con).expect("GET counter");
        let counter = counter.unwrap_or(0);
        assert!(
            counter >= a.counter_acked && counter <= a.counter_sent,
            "counter c:{} = {counter} after restart; last acknowledged INCR returned {}, {} INCRs were sent",
            a.task,
            a.counter_acked,
            a.counter_sent
        );
    }
    assert!(
        missing.is_empty(),
        "{} of {total} acknowledged writes lost or wrong after restart, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

async fn acknowledged_writes_survive_kill_9(fsync: &str) {
    let dir = tempdir();
    let mut server = TestServer::start(dir.path(), &["--fsync", fsync]);
    let (stop, tasks) = start_load(&server);
    tokio::time::sleep(LOAD_DURATION).await;
    server.kill9(); // mid-load: writers are still sending
    let acked = join_load(stop, tasks).await;
    let idle: Vec<_> = acked.iter().filter(|a| a.sets.is_empty()).map(|a| a.task).collect();
    assert!(idle.is_empty(), "writers {idle:?} got no write acknowledged before the kill");
    server.restart();
    assert_acknowledged_writes_present(&server, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_always() {
    acknowledged_writes_survive_kill_9("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_batch() {
    acknowledged_writes_survive_kill_9("batch").await;
}

/// `everysec` promises survival of a process crash (the write reached the
/// OS before the reply), not of a power loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9_under_everysec() {
    acknowledged_writes_survive_kill_9("everysec").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_and_exits_0() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--fsync", "batch"]);
    let (stop, tasks) = start_load(&server);
    tokio::time::sleep(LOAD_DURATION).await;
    let (mut server, status) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        let status = server.sigterm_and_wait();
        (server, status)
    })
    .await
    .expect("sigterm task");
    let acked = join_load(stop, tasks).await;
    assert!(status.success(), "SIGTERM during load: exit status {status}, expected 0; stderr:\n{}", server.stderr());
    let snapshots: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))
        .map(|d| d.flatten().filter(|e| e.metadata().map(|m| m.is_file() && m.len() > 0).unwrap_or(false)).collect())
        .unwrap_or_default();
    assert!(!snapshots.is_empty(), "no snapshot file in {}/snapshots after a graceful shutdown", dir.path().display());
    server.restart();
    assert_acknowledged_writes_present(&server, &acked);
}

#[test]
fn restart_replays_snapshot_plus_log() {
    let dir = tempdir();
    let mut server = TestServer::start(dir.path(), &["--snapshot-entries", "0"]);
    let mut expected: HashMap<String, String> = HashMap::new();
    {
        let mut con = server.conn();
        for i in 0..300 {
            let (k, v) = (format!("key:{i}"), format!("before-save:{i}"));
            let () = redis::cmd("SET").arg(&k).arg(&v).query(&mut con).unwrap();
            expected.insert(k, v);
        }
        let () = redis::cmd("SADD").arg("set").arg(&["a", "b", "c"]).query(&mut con).map(|_: i64| ()).unwrap();
        let saved: String = redis::cmd("SAVE").query(&mut con).expect("SAVE");
        assert_eq!(saved, "OK");
        // After the snapshot: new keys, overwrites, deletions, set changes.
        for i in 300..500 {
            let (k, v) = (format!("key:{i}"), format!("after-save:{i}"));
            let () = redis::cmd("SET").arg(&k).arg(&v).query(&mut con).unwrap();
            expected.insert(k, v);
        }
        for i in 0..50 {
            let (k, v) = (format!("key:{i}"), format!("overwritten:{i}"));
            let () = redis::cmd("SET").arg(&k).arg(&v).query(&mut con).unwrap();
            expected.insert(k, v);
        }
        for i in 50..100 {
            let k = format!("key:{i}");
            let n: i64 = redis::cmd("DEL").arg(&k).query(&mut con).unwrap();
            assert_eq!(n, 1);
            expected.remove(&k);
        }
        let _: i64 = redis::cmd("SREM").arg("set").arg("b").query(&mut con).unwrap();
        let _: i64 = redis::cmd("SADD").arg("set").arg("d").query(&mut con).unwrap();
    }
    server.kill9();
    server.restart();

    let mut con = server.conn();
    let keys: Vec<String> = (0..500).map(|i| format!("key:{i}")).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    for (k, v) in keys.iter().zip(values) {
        assert_eq!(v.as_ref(), expected.get(k), "{k} after restart from snapshot + log");
    }
    let mut members: Vec<String> = redis::cmd("SMEMBERS").arg("set").query(&mut con).unwrap();
    members.sort();
    assert_eq!(members, ["a", "c", "d"]);
    let dbsize: usize = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(dbsize, expected.len() + 1);

    let status = server.status();
    let snapshot_lsn = status["snapshot_lsn"].as_u64().expect("/status snapshot_lsn");
    let last_lsn = status["last_lsn"].as_u64().expect("/status last_lsn");
    assert!(snapshot_lsn > 0, "/status snapshot_lsn = {snapshot_lsn} after SAVE and restart: {status}");
    assert!(
        last_lsn > snapshot_lsn,
        "writes after SAVE must come from log replay: last_lsn {last_lsn} <= snapshot_lsn {snapshot_lsn}"
    );
    assert_eq!(status["keys"].as_u64(), Some(expected.len() as u64 + 1), "/status keys: {status}");
}
