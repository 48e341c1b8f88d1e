//! `tandem proxy` in front of a real 3-node cluster (issue 6), driven by the
//! `redis` crate: first the anomalies exist (reads that miss the client's
//! own write, reads that go back in time), then each session guarantee makes
//! them zero.
//!
//! Node 1 leads; node 3 applies every batch 300 ms late (`--apply-delay-ms`),
//! node 2 does not, and the proxy balances round-robin, so reads alternate
//! between a fresh and a stale follower.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{eventually, free_ports, tandem_bin, TestServer, IO_TIMEOUT};

/// The delayed follower's apply delay.
const APPLY_DELAY_MS: &str = "300";
/// Write-then-read rounds per workload.
const RYW_ROUNDS: usize = 150;
/// How long the counter reader runs.
const TIME_TRAVEL_RUN: Duration = Duration::from_millis(1500);

/// Three nodes led by node 1; node 3 applies late.
fn start_cluster() -> Cluster {
    let c = Cluster::start(3, Some(1), |id| {
        if id == 3 {
            vec!["--apply-delay-ms".into(), APPLY_DELAY_MS.into()]
        } else {
            vec![]
        }
    });
    c.wait_streaming(&[2, 3]);
    c
}

/// A running `tandem proxy`.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    /// Starts a proxy in front of `cluster` with round-robin balance plus
    /// `flags`, and waits until it sees the leader and both followers up.
    fn start(cluster: &Cluster, flags: &[&str]) -> Proxy {
        let mut child = Command::new(tandem_bin())
            .args(["proxy", "--listen", "127.0.0.1:0", "--balance", "round-robin", "--nodes", &cluster.client_addrs()])
            .args(flags)
            .env("NO_COLOR", "1")
            .env("TANDEM_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tandem proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("read proxy ready line");
        let ready: serde_json::Value =
            serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("proxy ready line {line:?}: {e}"));
        let addr = ready["proxy_addr"].as_str().expect("proxy_addr").parse().expect("address");
        let proxy = Proxy { child, addr };
        let leader = cluster.nodes[0].client_addr().to_string();
        let ready = eventually(Duration::from_secs(15), || {
            let info = proxy.info();
            info.contains(&format!("proxy_leader:{leader}")) && info.matches("link_up=1").count() == 3
        });
        assert!(ready, "the proxy never saw the leader and two followers up: {}", proxy.info());
        proxy
    }

    fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        let con = client.get_connection_with_timeout(IO_TIMEOUT).expect("connect to the proxy");
        con.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        con
    }

    fn info(&self) -> String {
        redis::cmd("INFO").arg("proxy").query(&mut self.conn()).expect("INFO proxy")
    }

    fn counter(&self, name: &str) -> u64 {
        let info = self.info();
        let prefix = format!("{name}:");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in INFO proxy: {info}"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn session(con: &mut redis::Connection, args: &[&str]) {
    let r: String = redis::cmd("SESSION").arg(args).query(con).unwrap_or_else(|e| panic!("SESSION {args:?}: {e}"));
    assert_eq!(r, "OK");
}

/// Writes `k{i} = i` and reads it back on the same connection; returns how
/// many reads did not see the connection's own write.
fn ryw_misses(con: &mut redis::Connection, prefix: &str) -> usize {
    let mut misses = 0;
    for i in 0..RYW_ROUNDS {
        let key = format!("{prefix}{i}");
        let () = redis::cmd("SET").arg(&key).arg(i).query(con).expect("SET through the proxy");
        let got: Option<usize> = redis::cmd("GET").arg(&key).query(con).expect("GET through the proxy");
        if got != Some(i) {
            misses += 1;
        }
    }
    misses
}

/// A writer increments `key` on the leader directly while `reader` reads it
/// through the proxy; returns how many reads saw a smaller value than an
/// earlier read (went back in time).
fn time_travels(cluster: &Cluster, reader: &mut redis::Connection, key: &str) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let mut leader = cluster.nodes[0].conn();
        let key = key.to_string();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _: i64 = redis::cmd("INCR").arg(&key).query(&mut leader).expect("INCR on the leader");
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let (mut highest, mut travels, mut reads) = (0i64, 0, 0);
    let t0 = Instant::now();
    while t0.elapsed() < TIME_TRAVEL_RUN {
        let v: Option<i64> = redis::cmd("GET").arg(key).query(reader).expect("GET through the proxy");
        let v = v.unwrap_or(0);
        if v < highest {
            travels += 1;
        }
        highest = highest.max(v);
        reads += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(reads > 50, "only {reads} reads in {TIME_TRAVEL_RUN:?}");
    travels
}

#[test]
fn without_guarantees_reads_miss_own_writes_and_go_back_in_time() {
    let c = start_cluster();
    let p = Proxy::start(&c, &[]);
    let misses = ryw_misses(&mut p.conn(), "plain");
    assert!(misses > 0, "expected reads that miss the own write through a lagging follower, got none");
    let travels = time_travels(&c, &mut p.conn(), "plain_counter");
    assert!(travels > 0, "expected reads that go back in time between a fresh and a stale follower, got none");
    assert!(p.counter("proxy_reads_follower") > 0);
}

#[test]
fn token_read_your_writes_never_misses_an_own_write() {
    let c = start_cluster();
    let p = Proxy::start(&c, &[]);
    let mut con = p.conn();
    session(&mut con, &["SET", "RYW", "token", "100"]);
    assert_eq!(ryw_misses(&mut con, "token"), 0);
    assert!(p.counter("proxy_stale_reads_avoided") > 0, "{}", p.info());
    eprintln!("token: {}", p.info());
}

#[test]
fn leader_window_read_your_writes_never_misses_an_own_write() {
    let c = start_cluster();
    let p = Proxy::start(&c, &["--ryw", "leader-window", "--leader-window-ms", "2000"]);
    assert_eq!(ryw_misses(&mut p.conn(), "window"), 0);
    assert!(p.counter("proxy_reads_reason_leader_window") >= RYW_ROUNDS as u64, "{}", p.info());
}

#[test]
fn monotonic_reads_never_go_back_in_time() {
    let c = start_cluster();
    let p = Proxy::start(&c, &[]);
    let mut con = p.conn();
    session(&mut con, &["SET", "MONOTONIC", "on"]);
    assert_eq!(time_travels(&c, &mut con, "mono_counter"), 0);
    assert!(p.counter("proxy_reads_follower") > 0, "monotonic reads should still use followers: {}", p.info());
    eprintln!("monotonic: {}", p.info());
}

#[test]
fn strong_reads_never_miss_and_never_go_back_in_time() {
    let c = start_cluster();
    let p = Proxy::start(&c, &["--strong"]);
    assert_eq!(ryw_misses(&mut p.conn(), "strong"), 0);
    assert_eq!(time_travels(&c, &mut p.conn(), "strong_counter"), 0);
    assert_eq!(p.counter("proxy_reads_follower"), 0);
}

#[test]
fn writes_go_to_the_leader_and_an_exported_token_carries_read_your_writes_to_another_connection() {
    let c = start_cluster();
    let p = Proxy::start(&c, &[]);
    let mut a = p.conn();
    let () = redis::cmd("SET").arg("photo").arg("new").query(&mut a).unwrap();
    let on_leader: Option<String> = redis::cmd("GET").arg("photo").query(&mut c.nodes[0].conn()).unwrap();
    assert_eq!(on_leader.as_deref(), Some("new"), "the write did not reach the leader");
    let token: String = redis::cmd("SESSION").arg("TOKEN").query(&mut a).unwrap();
    assert!(token.starts_with("tdm1:"), "{token}");

    // Another connection (another process, in real life) imports the token
    // and reads through the proxy: it sees the write, even on the round
    // where the round-robin turn is the follower that applies 300 ms late.
    for round in 0..4 {
        let mut b = p.conn();
        session(&mut b, &["SET", "RYW", "token", "1000"]);
        session(&mut b, &["TOKEN", &token]);
        for _ in 0..round {
            let _: Option<String> = redis::cmd("GET").arg("other").query(&mut b).unwrap();
        }
        let got: Option<String> = redis::cmd("GET").arg("photo").query(&mut b).unwrap();
        assert_eq!(got.as_deref(), Some("new"), "round {round}: imported token did not carry read-your-writes");
    }

    let bad = redis::cmd("SESSION").arg("TOKEN").arg("tdm1:x").query::<String>(&mut p.conn()).unwrap_err();
    assert!(bad.to_string().contains("invalid session token"), "{bad}");
    assert!(p.counter("proxy_writes") >= 1);
}

#[test]
fn max_lag_keeps_reads_off_a_follower_beyond_the_bound_and_metrics_are_served_over_http() {
    let c = start_cluster();
    let admin = format!("127.0.0.1:{}", free_ports(1)[0]);
    let p = Proxy::start(&c, &["--max-lag-ms", "100", "--admin-addr", &admin]);
    // Keep node 3 visibly behind: each write is a batch it applies 300 ms
    // late; wait until its staleness is well beyond the 100 ms bound.
    let mut leader = c.nodes[0].conn();
    for i in 0..20 {
        let () = redis::cmd("SET").arg("lagging").arg(i).query(&mut leader).unwrap();
    }
    let behind = eventually(Duration::from_secs(5), || {
        let info = p.info();
        let line = info.lines().find(|l| l.starts_with("node2:")).unwrap_or("").to_string();
        let staleness = line.split(',').find_map(|f| f.strip_prefix("staleness_ms=")).and_then(|v| v.parse().ok());
        staleness.is_some_and(|ms: u64| ms > 150)
    });
    assert!(behind, "node 3 never looked stale to the proxy: {}", p.info());
    let mut con = p.conn();
    for _ in 0..50 {
        let _: Option<String> = redis::cmd("GET").arg("lagging").query(&mut con).unwrap();
    }
    assert!(p.counter("proxy_stale_reads_avoided") > 0, "{}", p.info());
    assert!(p.counter("proxy_reads_follower") > 0, "the fresh follower should still serve: {}", p.info());

    let metrics = common::http_get(admin.parse().unwrap(), "/metrics").expect("GET /metrics");
    assert!(metrics.contains("tandem_proxy_stale_reads_avoided_total "), "{metrics}");
    assert!(metrics.contains("tandem_proxy_reads_total{target=\"follower\"} "), "{metrics}");
}

#[test]
fn a_write_after_a_leader_change_is_retried_once_on_the_new_leader() {
    let c = start_cluster();
    // Poll (almost) never: only the READONLY answer can make the proxy learn
    // of the new leader.
    let p = Proxy::start(&c, &["--poll-interval-ms", "600000"]);
    let mut a = p.conn();
    let () = redis::cmd("SET").arg("before").arg("1").query(&mut a).unwrap();

    let ok = |node: &TestServer, args: &[&str]| {
        let r: String = redis::cmd(args[0]).arg(&args[1..]).query(&mut node.conn()).unwrap();
        assert_eq!(r, "OK", "{args:?}");
    };
    let peer2 = c.peer_port(2).to_string();
    ok(&c.nodes[1], &["REPLICAOF", "NO", "ONE"]);
    ok(&c.nodes[0], &["REPLICAOF", "127.0.0.1", &peer2]);
    ok(&c.nodes[2], &["REPLICAOF", "127.0.0.1", &peer2]);

    let () = redis::cmd("SET").arg("after").arg("2").query(&mut a).expect("SET after the leader change");
    let on_new: Option<String> = redis::cmd("GET").arg("after").query(&mut c.nodes[1].conn()).unwrap();
    assert_eq!(on_new.as_deref(), Some("2"), "the retried write is not on the new leader");
    assert!(p.counter("proxy_retries") >= 1, "{}", p.info());
    assert!(p.info().contains(&format!("proxy_leader:{}", c.nodes[1].client_addr())), "{}", p.info());
}

#[test]
fn a_pipeline_deeper_than_the_proxy_batch_is_answered_in_full_and_in_order() {
    let c = start_cluster();
    let p = Proxy::start(&c, &[]);
    let mut raw = common::Raw::connect(p.addr);
    let n = 3 * 1024 + 7; // more than PIPELINE_COMMANDS_MAX
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(common::encode_cmd(&["SET", &format!("pipe{i}"), &i.to_string()]));
        bytes.extend(common::encode_cmd(&["PING", &i.to_string()]));
    }
    raw.send(&bytes).unwrap();
    for i in 0..n {
        assert_eq!(raw.read().unwrap(), common::Resp::Simple("OK".into()), "reply to SET {i}");
        assert_eq!(raw.read().unwrap(), common::Resp::Bulk(i.to_string().into_bytes()), "reply to PING {i}");
    }
}

#[test]
fn direct_client_library_reads_its_own_writes_from_followers_and_carries_its_token() {
    use tandem_client::DirectClient;
    use tandem_core::resp::Frame;
    use tandem_core::session::{Balance, Ryw, SessionConfig};

    let c = start_cluster();
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.client_addr().to_string()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let token_ryw =
            SessionConfig { ryw: Ryw::Token { wait_ms: 100 }, balance: Balance::RoundRobin, ..Default::default() };
        let mut db = DirectClient::connect(nodes.clone(), token_ryw).await;
        for i in 0..RYW_ROUNDS {
            let (key, val) = (format!("direct{i}"), i.to_string());
            assert_eq!(db.cmd(&[b"SET", key.as_bytes(), val.as_bytes()]).await, Frame::Simple("OK".into()));
            let got = db.cmd(&[b"GET", key.as_bytes()]).await;
            assert_eq!(got, Frame::Bulk(val.into()), "round {i}: the direct client missed its own write");
        }
        let follower_reads = db.metrics().reads_follower.load(Ordering::Relaxed);
        assert!(follower_reads > 0, "token reads should use followers");

        let token = db.export_token();
        let mut other = DirectClient::connect(nodes, token_ryw).await;
        other.import_token(&token).unwrap();
        for i in (0..RYW_ROUNDS).rev().take(4) {
            let key = format!("direct{i}");
            assert_eq!(other.cmd(&[b"GET", key.as_bytes()]).await, Frame::Bulk(i.to_string().into()));
        }
        assert!(other.import_token("nonsense").unwrap_err().to_string().contains("invalid session token"));
    });
}
