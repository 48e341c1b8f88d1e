//! `tandem bench-failover` against real processes: a static Tandem cluster
//! (`--leader 1`, no automatic failover) must be reported as "no new leader
//! within the timeout", quickly and without killing anything but the leader;
//! and Redis replicas promoted by a manual `REPLICAOF NO ONE` (the test plays
//! Sentinel) give a measured RTO, with lost acknowledged writes counted
//! exactly: none when WAIT reached every replica, all of them when the
//! promoted replica never had the data. Redis tests skip when redis-server is
//! not installed.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{eventually, free_ports, tandem_bin, tempdir, Raw, Resp};

/// How long one bench-failover run may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// Recovery timeout given to the tool in the negative test.
const RECOVERY_TIMEOUT_MS: u64 = 1500;
/// Warm-up with `WAIT`: Redis may answer the first WAITs after a fresh sync
/// only when the replicas' once-a-second REPLCONF ACK arrives.
const WAIT_WARMUP_MS: &str = "1500";
/// How long Redis processes may take to come up and sync.
const REDIS_READY: Duration = Duration::from_secs(10);

/// Runs `tandem bench-failover ARGS --json`, bounded by [`RUN_TIMEOUT`].
fn bench_failover(args: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = Command::new(tandem_bin())
        .arg("bench-failover")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tandem bench-failover");
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!("bench-failover hung for {RUN_TIMEOUT:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("collect output"), started.elapsed())
}

fn report(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("stdout is not one JSON document ({e}): {stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

fn process_alive(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    !status.is_empty() && !status.lines().any(|l| l.starts_with("State:") && l.contains('Z'))
}

#[test]
fn static_tandem_cluster_reports_no_new_leader_within_the_timeout() {
    let mut cluster = Cluster::start(3, Some(1), |_| vec!["--ack".into(), "any 1".into()]);
    // Followers must be streaming, or `any 1` writes would not be acknowledged.
    cluster.wait_streaming(&[2, 3]);
    let nodes = &mut cluster.nodes;
    let addrs: Vec<String> = nodes.iter().map(|n| n.client_addr().to_string()).collect();
    let pids: Vec<String> = nodes.iter().map(|n| n.pid().to_string()).collect();
    let (out, took) = bench_failover(&[
        "--nodes".into(),
        addrs.join(","),
        "--pids".into(),
        pids.join(","),
        "--warmup-ms".into(),
        "300".into(),
        "--recovery-timeout-ms".into(),
        RECOVERY_TIMEOUT_MS.to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit 2 means a trial failed; stderr:\n{stderr}");
    assert!(stderr.contains("FAILED: no new leader within 1500 ms"), "{stderr}");
    let r = report(&out);
    assert_eq!((r["trials"].as_u64(), r["failed"].as_u64(), r["errors"].as_u64()), (Some(1), Some(1), Some(0)));
    assert_eq!(r["rto_ms"]["median"], serde_json::Value::Null);
    let trial = &r["trial_reports"][0];
    assert_eq!(trial["outcome"], "no_new_leader");
    assert_eq!(trial["leader"], addrs[0].as_str(), "node 1 leads");
    assert!(trial["acked_writes"].as_u64().unwrap() > 0, "the load was acknowledged before the kill: {trial}");
    assert!(trial["probes"].as_u64().unwrap() > 10, "survivors were probed repeatedly: {trial}");
    assert!(took < Duration::from_secs(8), "a failed trial must end soon after its timeout, took {took:?}");
    assert!(!process_alive(nodes[0].pid()), "the leader was killed");
    for node in &nodes[1..] {
        assert!(process_alive(node.pid()), "a follower was killed");
        let reply = node.raw().cmd(&["SET", "after", "1"]);
        assert!(matches!(&reply, Resp::Error(e) if e.starts_with("READONLY")), "{reply:?}");
    }
    nodes[0].kill9();
}

// ------------------------------------------------------------------ Redis

/// One redis-server process, killed on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16, replicaof: Option<u16>) -> Redis {
        let dir = tempdir();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(primary) = replicaof {
            cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        let child = cmd.spawn().expect("spawn redis-server");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let redis = Redis { child, addr, _dir: dir };
        assert!(
            eventually(REDIS_READY, || Raw::try_connect(addr).is_ok_and(|mut c| c.try_cmd(&["PING"]).is_ok())),
            "redis-server on {addr} did not start"
        );
        redis
    }

    fn info_replication(&self) -> String {
        Raw::connect(self.addr).cmd(&["INFO", "replication"]).text()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_installed() -> bool {
    let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_ok();
    if !found {
        eprintln!("skipped: redis-server is not installed");
    }
    found
}

/// Primary + replica `a` (replicating) + replica `b`; `b` replicates the
/// primary when `b_replicates`, else a port where nothing listens (it stays
/// a read-only replica without data). Returns the processes once in sync.
fn redis_trio(b_replicates: bool) -> (Redis, Redis, Redis) {
    let ports = free_ports(4);
    let primary = Redis::start(ports[0], None);
    let a = Redis::start(ports[1], Some(ports[0]));
    let b = Redis::start(ports[2], Some(if b_replicates { ports[0] } else { ports[3] }));
    // `connected_slaves` counts replicas still waiting for their first sync;
    // WAIT only counts `state=online` ones.
    let want = if b_replicates { 2 } else { 1 };
    assert!(
        eventually(REDIS_READY, || primary.info_replication().matches("state=online").count() == want),
        "replicas did not sync: {}",
        primary.info_replication()
    );
    (primary, a, b)
}

/// Plays Sentinel: once the primary's process is dead, promotes `replica`.
fn promote_when_dead(primary_pid: u32, replica: SocketAddr) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let dead = eventually(RUN_TIMEOUT, || !process_alive(primary_pid));
        dead && Raw::connect(replica).cmd(&["REPLICAOF", "NO", "ONE"]) == Resp::Simple("OK".into())
    })
}

fn redis_args(primary: &Redis, a: &Redis, b: &Redis, warmup_ms: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--nodes".to_string(),
        format!("{},{},{}", primary.addr, a.addr, b.addr),
        "--pids".to_string(),
        format!("{},{},{}", primary.child.id(), a.child.id(), b.child.id()),
        "--warmup-ms".to_string(),
        warmup_ms.to_string(),
        "--recovery-timeout-ms".to_string(),
        "5000".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn redis_replica_promoted_by_hand_loses_no_write_acknowledged_by_wait_all() {
    if !redis_installed() {
        return;
    }
    let (mut primary, a, b) = redis_trio(true);
    let promoter = promote_when_dead(primary.child.id(), a.addr);
    let (out, _) = bench_failover(&redis_args(
        &primary,
        &a,
        &b,
        WAIT_WARMUP_MS,
        &["--wait-replicas", "2", "--wait-timeout-ms", "2000"],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(promoter.join().unwrap(), "the replica was not promoted; bench-failover said:\n{stderr}");
    let _ = primary.child.wait();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let r = report(&out);
    let trial = &r["trial_reports"][0];
    assert_eq!(trial["outcome"], "recovered", "{trial}");
    assert_eq!(trial["new_leader"], a.addr.to_string());
    assert!(trial["acked_writes"].as_u64().unwrap() > 0, "{trial}");
    assert_eq!(trial["lost_writes"], 0, "WAIT 2 put every acknowledged write on the promoted replica: {trial}");
    let rto = r["rto_ms"]["median"].as_f64().expect("a measured RTO");
    assert!(rto > 0.0 && rto < 5000.0, "{rto}");
}

#[test]
fn promoting_a_replica_without_the_data_counts_every_acknowledged_write_as_lost() {
    if !redis_installed() {
        return;
    }
    let (mut primary, a, b) = redis_trio(false);
    let promoter = promote_when_dead(primary.child.id(), b.addr);
    let (out, _) = bench_failover(&redis_args(&primary, &a, &b, "300", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(promoter.join().unwrap(), "the replica was not promoted; bench-failover said:\n{stderr}");
    let _ = primary.child.wait();
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    let r = report(&out);
    let trial = &r["trial_reports"][0];
    assert_eq!(trial["new_leader"], b.addr.to_string(), "{trial}");
    let acked = trial["acked_writes"].as_u64().unwrap();
    assert!(acked > 0, "{trial}");
    assert_eq!(trial["lost_writes"].as_u64(), Some(acked), "b never had any write: {trial}");
    assert_eq!(trial["lost_keys"].as_array().map(Vec::len), Some(5), "the first 5 lost keys are named: {trial}");
    assert_eq!((r["lost_writes"].as_u64(), r["trials_with_loss"].as_u64()), (Some(acked), Some(1)));
    assert!(stderr.contains(&format!("{acked} acked writes lost (e.g. rto:")), "{stderr}");
}
