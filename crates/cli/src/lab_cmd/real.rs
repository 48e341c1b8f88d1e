//! `tandem lab run NAME --real`: a scenario's workload, scaled down, run by
//! real clients against a real local cluster, its numbers printed beside
//! the simulated ones (`real ...` columns in the same table, JSON and HTML).
//!
//! Owns: a throwaway cluster started the way `tandem up` starts one (the
//! same `tandem server` flags, [`crate::up_cmd::node_server_args`]; data in
//! a fresh temporary directory, free 127.0.0.1 ports, fault injection on),
//! the region delays it injects through each node's `POST /faults`
//! (`delay_ms` per peer), the real clients of each workload, and the merge
//! of the real numbers into the simulated report.
//!
//! Must never touch a process it did not start: it kills only the pids it
//! spawned, and stops every node and removes its directory when done (also
//! on error). The real numbers depend on this machine and its load: unlike
//! the simulated ones they are not reproducible from the seed.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_sim::lab::plot::{cdf, percentile};
use tandem_sim::lab::{LabReport, Series};

use crate::up_cmd::{cluster_secret_file, node_server_args, NodeAddrs};

/// One-way delay between two regions, as in the simulated scenarios
/// (`REGION_LINK`: 100 ms, a 200 ms round trip).
const REGION_DELAY_MS: u64 = 100;
/// One-way delay between the nodes of the real `failover` run: two nearby
/// regions. The control plane's default election timeouts (150-300 ms) are
/// made for one site; across a 200 ms round trip a vote would outlast them.
const FAILOVER_DELAY_MS: u64 = 20;
/// How long a node may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to elect and stream.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Read/write timeout of one client request.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node gets to stop after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Writer connections of the `sync-vs-async` load.
const SVA_WRITERS: usize = 8;
/// How long the `sync-vs-async` load runs before the leader is killed.
const SVA_LOAD: Duration = Duration::from_millis(2_500);
/// Most writes one `sync-vs-async` writer makes (a bound on memory).
const SVA_WRITES_PER_WRITER_MAX: u64 = 50_000;
/// Keys asked per pipelined round trip by the loss check.
const VERIFY_BATCH: usize = 256;
/// Clients per guarantee in the real `stale-read` run.
const STALE_CLIENTS_PER_MODE: usize = 4;
/// Write-then-read operations per client in the real `stale-read` run.
const STALE_OPS: u64 = 40;
/// Pause between two bumps of a client's counter by the background writer.
const STALE_BUMP_EVERY: Duration = Duration::from_millis(5);
/// How long the real `failover` load runs before the kill.
const FAILOVER_WARMUP: Duration = Duration::from_millis(1_500);
/// How long a killed leader's replacement may take.
const FAILOVER_RECOVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the restarted old leader may take to report its rollback.
const ROLLBACK_WAIT: Duration = Duration::from_secs(8);

/// What a real run measured, to merge into the simulated report.
pub struct RealResult {
    /// Setup lines (shown as `real: what`).
    pub setup: Vec<(String, String)>,
    /// Extra column headers (each starts with `real`).
    pub columns: Vec<String>,
    /// Cells per simulated row, by the row's first cell.
    pub rows: Vec<(String, Vec<String>)>,
    /// A sentence or two that reads the real numbers.
    pub reading: String,
    /// Extra plot series: (index of the simulated plot, series).
    pub series: Vec<(usize, Series)>,
}

/// The real run of a scenario.
type RealFn = fn(u64) -> Result<RealResult, String>;

/// The real run of `name`, or why there is none.
pub fn runner(name: &str) -> Result<RealFn, String> {
    match name {
        "sync-vs-async" => Ok(sync_vs_async),
        "stale-read" => Ok(stale_read),
        "failover" => Ok(failover),
        other => Err(format!("{other}: not available with --real: {}", why_not(other))),
    }
}

/// Why a scenario has no real run.
fn why_not(name: &str) -> &'static str {
    match name {
        "conflicts" => {
            "the scenario needs both regions' writes to the same key to overlap at chosen moments; on real processes \
             that depends on scheduling, not on the policy (crates/cli/tests/multi_leader.rs shows real conflicts)"
        }
        "quorum" => {
            "its slow replica and read-repair timings are measured against real processes by \
             scripts/bench-leaderless.sh (docs/benchmarks/leaderless.md), not by the lab"
        }
        "log-shipping" => {
            "statement replay is the counterfactual: Tandem only ships row effects, so there is no real mode to run"
        }
        "delete-everywhere" => {
            "it needs a base backup and a point-in-time restore, minutes of real time (see docs/backup.md)"
        }
        "single-box" => {
            "throughput scaling needs three machines; three nodes on this 2-core machine share the same CPUs"
        }
        "disaster" => "it spans days of nightly backups and the loss of a whole region",
        "photo-app" | "global-reviews" => {
            "it places clients in three regions; /faults delays links between nodes, not between a client and a node"
        }
        _ => "no real run is defined for this scenario",
    }
}

/// Adds the real numbers to `report`: `real ...` columns on every row,
/// `real: ...` setup lines, a sentence in the reading, and the real series
/// in the plots they belong to.
pub fn merge(report: &mut LabReport, real: RealResult) {
    let n = real.columns.len();
    report.columns.extend(real.columns);
    for row in &mut report.rows {
        match real.rows.iter().find(|(k, _)| Some(k) == row.first()) {
            Some((_, cells)) => row.extend(cells.iter().cloned()),
            None => row.extend(std::iter::repeat_n("-".to_string(), n)),
        }
    }
    for (k, v) in real.setup {
        report.setup.push((format!("real: {k}"), v));
    }
    report.reading.push_str(" Real cluster: ");
    report.reading.push_str(&real.reading);
    for (i, s) in real.series {
        if let Some(p) = report.plots.get_mut(i) {
            p.series.push(s);
        }
    }
}

// ------------------------------------------------------------ the cluster

struct Node {
    id: u64,
    args: Vec<String>,
    child: Option<Child>,
    client: String,
    admin: String,
}

/// A throwaway local cluster; stopped and removed on drop.
struct Cluster {
    dir: PathBuf,
    exe: PathBuf,
    nodes: Vec<Node>,
}

impl Cluster {
    /// Starts `n` nodes with `tandem up`'s flags plus fault injection and
    /// `extra`, and waits until each is ready.
    fn start(n: u64, static_leader: bool, extra: &[&str]) -> Result<Cluster, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the tandem binary: {e}"))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("tandem-lab-real-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cluster = Cluster { dir: dir.clone(), exe, nodes: Vec::new() };
        let secret = cluster_secret_file(&dir)?;
        // Free ports: hold every listener until all are chosen.
        let mut held = Vec::new();
        let mut port = || -> Result<String, String> {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
            let a = l.local_addr().map_err(|e| e.to_string())?;
            held.push(l);
            Ok(a.to_string())
        };
        let mut addrs = Vec::new();
        for _ in 0..n {
            addrs.push(NodeAddrs { client: port()?, admin: port()?, peer: port()? });
        }
        drop(held);
        let members: Vec<String> = addrs.iter().enumerate().map(|(i, a)| format!("{}={}", i + 1, a.peer)).collect();
        let members = members.join(",");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.push("--fault-injection".into());
        for (i, a) in addrs.iter().enumerate() {
            let id = i as u64 + 1;
            let args =
                node_server_args(id, &dir.join(format!("node-{id}")), a, &members, &secret, static_leader, &extra);
            cluster.nodes.push(Node { id, args, child: None, client: a.client.clone(), admin: a.admin.clone() });
        }
        let ids: Vec<u64> = (1..=n).collect();
        cluster.spawn(&ids)?;
        Ok(cluster)
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[id as usize - 1]
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node-{id}.log"))
    }

    /// Starts the given nodes (again) and waits until every one is ready.
    fn spawn(&mut self, ids: &[u64]) -> Result<(), String> {
        let mut ready = Vec::new();
        for &id in ids {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path(id))
                .map_err(|e| format!("cannot open {}: {e}", self.log_path(id).display()))?;
            let node = &mut self.nodes[id as usize - 1];
            let mut child = Command::new(&self.exe)
                .args(&node.args)
                .arg("--print-ready")
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(|e| format!("cannot start node {id}: {e}"))?;
            let stdout = child.stdout.take().expect("piped");
            let (tx, rx) = mpsc::channel::<()>();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.starts_with('{') {
                        let _ = tx.send(());
                    }
                }
            });
            node.child = Some(child);
            ready.push((id, rx));
        }
        for (id, rx) in ready {
            if rx.recv_timeout(READY_TIMEOUT).is_err() {
                return Err(format!("node {id} did not become ready within {READY_TIMEOUT:?}: {}", self.log_tail(id)));
            }
        }
        Ok(())
    }

    fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    fn pid(&self, id: u64) -> Option<u32> {
        self.node(id).child.as_ref().map(Child::id)
    }

    /// kill -9 of a node this cluster started.
    fn kill9(&mut self, id: u64) {
        if let Some(mut child) = self.nodes[id as usize - 1].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Marks a node killed by someone this run called (it is reaped here).
    fn reap(&mut self, pid: u32) -> Option<u64> {
        let node = self.nodes.iter_mut().find(|n| n.child.as_ref().map(Child::id) == Some(pid))?;
        let mut child = node.child.take()?;
        let _ = child.wait();
        Some(node.id)
    }

    fn status(&self, id: u64) -> Result<Value, String> {
        let text = crate::http::get(&self.node(id).admin, "/status")?;
        serde_json::from_str(&text).map_err(|e| format!("node {id} /status: {e}"))
    }

    /// `POST /faults` on node `id`.
    fn faults(&self, id: u64, body: &str) -> Result<(), String> {
        let (code, text) = crate::http::request(&self.node(id).admin, "POST", "/faults", Some(body), IO_TIMEOUT)?;
        if code != 200 {
            return Err(format!("node {id}: POST /faults {body}: HTTP {code}: {}", String::from_utf8_lossy(&text)));
        }
        Ok(())
    }

    /// Every node delays every frame it sends to every other node by `ms`
    /// (each node in its own region).
    fn delay_all(&self, ms: u64) -> Result<(), String> {
        for n in &self.nodes {
            let peers: Vec<String> =
                self.nodes.iter().filter(|p| p.id != n.id).map(|p| format!("\"{}\":{ms}", p.id)).collect();
            self.faults(n.id, &format!("{{\"delay_ms\":{{{}}}}}", peers.join(",")))?;
        }
        Ok(())
    }

    /// Waits until one node leads and every other one streams from it.
    fn wait_settled(&self) -> Result<u64, String> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            for n in &self.nodes {
                let Ok(s) = self.status(n.id) else { continue };
                if s["role"] != "leader" {
                    continue;
                }
                let followers = s["replication"]["followers"].as_array().cloned().unwrap_or_default();
                let streaming = followers.iter().filter(|f| f["state"] == "streaming").count();
                if streaming + 1 == self.nodes.len() {
                    return Ok(n.id);
                }
                last = format!("node {} leads; {streaming} of {} followers streaming", n.id, self.nodes.len() - 1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("the real cluster did not settle within {SETTLE_TIMEOUT:?} ({last})"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            if let Some(child) = &n.child {
                // SAFETY: kill(2) with a pid this cluster spawned and not yet reaped.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------ a RESP client

/// One reply, as much as the workloads need (payloads are shown through
/// `Debug` in error messages only).
#[derive(Debug)]
#[allow(dead_code)]
enum Reply {
    Text(String),
    Int(i64),
    Nil,
    Error(String),
    Array(Vec<Reply>),
}

/// A blocking RESP connection.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: &str) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.set_nodelay(true).ok();
        s.set_read_timeout(Some(IO_TIMEOUT)).ok();
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn { reader: BufReader::new(s), writer })
    }

    fn send(&mut self, args: &[&str]) -> Result<(), String> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).map_err(|e| e.to_string())
    }

    fn read(&mut self) -> Result<Reply, String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(1.min(line.len()));
        let num = || rest.parse::<i64>().map_err(|_| format!("bad RESP line {line:?}"));
        match kind {
            "+" => Ok(Reply::Text(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => Ok(Reply::Int(num()?)),
            "_" => Ok(Reply::Nil),
            "$" => {
                let len = num()?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                let mut buf = vec![0u8; len as usize + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf).map_err(|e| e.to_string())?;
                buf.truncate(len as usize);
                Ok(Reply::Text(String::from_utf8_lossy(&buf).into_owned()))
            }
            "*" => {
                let len = num()?;
                if len < 0 {
                    return Ok(Reply::Nil);
                }
                (0..len).map(|_| self.read()).collect::<Result<Vec<_>, _>>().map(Reply::Array)
            }
            _ => Err(format!("unexpected RESP line {line:?}")),
        }
    }

    fn cmd(&mut self, args: &[&str]) -> Result<Reply, String> {
        self.send(args)?;
        self.read()
    }
}

/// Which of `keys` node `addr` holds (pipelined `EXISTS`).
fn present(addr: &str, keys: &[String]) -> Result<Vec<bool>, String> {
    let mut c = Conn::open(addr)?;
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(VERIFY_BATCH) {
        for k in chunk {
            c.send(&["EXISTS", k])?;
        }
        for _ in chunk {
            match c.read()? {
                Reply::Int(n) => out.push(n > 0),
                other => return Err(format!("EXISTS on {addr}: {other:?}")),
            }
        }
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ------------------------------------------------------------ sync-vs-async

/// The ack policies of `sync-vs-async` and `failover`: (row name, `--ack`).
const POLICIES: [(&str, &str); 3] = [("async", "async"), ("any 1", "any 1"), ("all", "all")];

/// Per policy: a static 3-node cluster, every node in its own region
/// (100 ms one-way), 8 writers for 2.5 s, then kill -9 of the leader and a
/// check of which acknowledged writes either follower holds.
fn sync_vs_async(_seed: u64) -> Result<RealResult, String> {
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let mut summary = Vec::new();
    for (name, ack) in POLICIES {
        let mut c = Cluster::start(3, true, &["--ack", ack, "--ack-level", "flush"])?;
        let leader = c.wait_settled()?;
        c.delay_all(REGION_DELAY_MS)?;
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let writers: Vec<_> = (0..SVA_WRITERS)
            .map(|w| {
                let (addr, stop, errors) = (c.node(leader).client.clone(), stop.clone(), errors.clone());
                std::thread::spawn(move || -> Vec<(String, f64)> {
                    let mut acked = Vec::new();
                    let Ok(mut conn) = Conn::open(&addr) else { return acked };
                    for i in 0..SVA_WRITES_PER_WRITER_MAX {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let key = format!("lab:{w}:{i}");
                        let t = Instant::now();
                        match conn.cmd(&["SET", &key, &i.to_string()]) {
                            Ok(Reply::Text(_)) => acked.push((key, ms(t.elapsed()))),
                            Ok(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(SVA_LOAD);
        c.kill9(leader);
        stop.store(true, Ordering::Relaxed);
        let acked: Vec<(String, f64)> = writers.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect();
        let keys: Vec<String> = acked.iter().map(|(k, _)| k.clone()).collect();
        // The followers apply what reached them; ask until the count holds.
        let followers: Vec<u64> = (1..=3).filter(|&id| id != leader).collect();
        let mut lost = usize::MAX;
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(200));
            let mut held = vec![false; keys.len()];
            for &f in &followers {
                for (h, p) in held.iter_mut().zip(present(&c.node(f).client, &keys)?) {
                    *h |= p;
                }
            }
            let now = held.iter().filter(|h| !**h).count();
            if now == lost {
                break;
            }
            lost = now;
        }
        let mut lat: Vec<f64> = acked.iter().map(|(_, l)| *l).collect();
        lat.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
        rows.push((
            name.to_string(),
            vec![acked.len().to_string(), format!("{p50:.2}"), format!("{p99:.2}"), lost.to_string()],
        ));
        series.push((0, Series { name: format!("{name} (real)"), points: cdf(&lat, 200) }));
        summary.push((name, acked.len(), p50, lost));
    }
    let reading = format!(
        "on {} real nodes ({REGION_DELAY_MS} ms one-way between every pair, injected with /faults), {} writers \
         acknowledged {} writes under async at p50 {:.2} ms and lost {} of them to a kill -9 of the leader; any 1: \
         {} writes at p50 {:.1} ms, {} lost; all: {} writes at p50 {:.1} ms, {} lost.",
        3,
        SVA_WRITERS,
        summary[0].1,
        summary[0].2,
        summary[0].3,
        summary[1].1,
        summary[1].2,
        summary[1].3,
        summary[2].1,
        summary[2].2,
        summary[2].3
    );
    Ok(RealResult {
        setup: vec![
            ("cluster".into(), "3 `tandem server` processes on 127.0.0.1 per policy, node 1 leads (static roles)".into()),
            ("link".into(), format!("{REGION_DELAY_MS} ms one-way on every peer link (POST /faults delay_ms per peer)")),
            (
                "load".into(),
                format!(
                    "{SVA_WRITERS} connections writing SETs back to back for {:.1} s, ack level flush, then kill -9 of the leader",
                    SVA_LOAD.as_secs_f64()
                ),
            ),
        ],
        columns: ["real acked", "real p50 ms", "real p99 ms", "real lost at kill -9"].map(String::from).to_vec(),
        rows,
        reading,
        series,
    })
}

// ------------------------------------------------------------ stale-read

/// A static 3-node cluster, follower 2 a region 5 ms away and follower 3
/// one 120 ms away (the simulated apply delays as one-way link delays);
/// per guarantee 4 clients (the proxy's routing, `tandem_client`) each
/// write their own key and read it back, and read a counter a background
/// writer keeps bumping.
fn stale_read(seed: u64) -> Result<RealResult, String> {
    use tandem_sim::sessions::{Mode, SessionsConfig};
    let c = Cluster::start(3, true, &[])?;
    let leader = c.wait_settled()?;
    let delays = [(2u64, 5u64), (3, 120)];
    let body: Vec<String> = delays.iter().map(|(id, d)| format!("\"{id}\":{d}")).collect();
    c.faults(leader, &format!("{{\"delay_ms\":{{{}}}}}", body.join(",")))?;
    let config = SessionsConfig::default();
    let nodes: Vec<String> = c.nodes.iter().map(|n| n.client.clone()).collect();
    let leader_addr = c.node(leader).client.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let totals = runtime.block_on(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for (mi, mode) in Mode::ALL.iter().enumerate() {
            for ci in 0..STALE_CLIENTS_PER_MODE {
                let (nodes, session, leader_addr) = (nodes.clone(), mode.session_config(&config), leader_addr.clone());
                let gap_max = config.op_gap_ms_max;
                let mut rng = seed ^ ((mi as u64) << 32) ^ ci as u64 ^ 0x5eed;
                tasks.spawn(async move {
                    let own = format!("photo:{mi}:{ci}");
                    let ctr = format!("ctr:{mi}:{ci}");
                    let done = Arc::new(AtomicBool::new(false));
                    // The background writer: not this client's session.
                    let bumper = {
                        let (done, ctr, addr) = (done.clone(), ctr.clone(), leader_addr.clone());
                        tokio::task::spawn_blocking(move || {
                            let Ok(mut conn) = Conn::open(&addr) else { return };
                            while !done.load(Ordering::Relaxed) {
                                if conn.cmd(&["INCR", &ctr]).is_err() {
                                    return;
                                }
                                std::thread::sleep(STALE_BUMP_EVERY);
                            }
                        })
                    };
                    let mut db = tandem_client::DirectClient::connect(nodes, session).await;
                    let (mut reads, mut stale, mut travel, mut last_ctr) = (0u64, 0u64, 0u64, 0i64);
                    let as_int = |f: &tandem_core::resp::Frame| -> Option<i64> {
                        match f {
                            tandem_core::resp::Frame::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
                            tandem_core::resp::Frame::Null => Some(0),
                            _ => None,
                        }
                    };
                    for j in 1..=STALE_OPS as i64 {
                        let v = j.to_string();
                        db.cmd(&[&b"SET"[..], own.as_bytes(), v.as_bytes()]).await;
                        let got = db.cmd(&[&b"GET"[..], own.as_bytes()]).await;
                        reads += 1;
                        if as_int(&got).is_none_or(|g| g < j) {
                            stale += 1;
                        }
                        if let Some(n) = as_int(&db.cmd(&[&b"GET"[..], ctr.as_bytes()]).await) {
                            if n < last_ctr {
                                travel += 1;
                            }
                            last_ctr = last_ctr.max(n);
                        }
                        // SplitMix64 step for the pause between operations.
                        rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        let mut z = rng;
                        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                        tokio::time::sleep(Duration::from_millis((z ^ (z >> 31)) % (gap_max + 1))).await;
                    }
                    done.store(true, Ordering::Relaxed);
                    let _ = bumper.await;
                    let m = db.metrics();
                    let (f, l) = (m.reads_follower.load(Ordering::Relaxed), m.reads_leader.load(Ordering::Relaxed));
                    (mi, reads, stale, travel, f, l)
                });
            }
        }
        let mut totals = vec![(0u64, 0u64, 0u64, 0u64, 0u64); Mode::ALL.len()];
        while let Some(r) = tasks.join_next().await {
            let Ok((mi, reads, stale, travel, f, l)) = r else { continue };
            let t = &mut totals[mi];
            t.0 += reads;
            t.1 += stale;
            t.2 += travel;
            t.3 += f;
            t.4 += l;
        }
        totals
    });
    drop(c);
    let mut rows = Vec::new();
    let mut series = Vec::new();
    let rate = |t: &(u64, u64, u64, u64, u64)| 100.0 * t.1 as f64 / t.0.max(1) as f64;
    for (m, t) in Mode::ALL.iter().zip(&totals) {
        let share = 100.0 * t.3 as f64 / (t.3 + t.4).max(1) as f64;
        rows.push((
            m.name().to_string(),
            vec![t.0.to_string(), t.1.to_string(), format!("{:.1}%", rate(t)), t.2.to_string(), format!("{share:.0}%")],
        ));
        series.push((0, Series { name: format!("{} (real)", m.name()), points: vec![(0.0, rate(t))] }));
    }
    let reading = format!(
        "with follower 3 120 ms away, {:.1}% of real own reads were stale without a guarantee, {:.1}% with the \
         token, {:.1}% with the leader window and {:.1}% with leader-only reads; counter reads went back in time \
         {} times without a guarantee and {} times with monotonic reads.",
        rate(&totals[0]),
        rate(&totals[1]),
        rate(&totals[2]),
        rate(&totals[4]),
        totals[0].2,
        totals[3].2
    );
    Ok(RealResult {
        setup: vec![
            ("cluster".into(), "3 `tandem server` processes on 127.0.0.1, node 1 leads (static roles), async".into()),
            ("link".into(), "leader to follower 2: 5 ms one-way, to follower 3: 120 ms (POST /faults delay_ms)".into()),
            (
                "clients".into(),
                format!(
                    "{STALE_CLIENTS_PER_MODE} per guarantee (tandem_client::DirectClient, the proxy's routing), {STALE_OPS} \
                     write-then-read operations each; a background writer bumps each client's counter every {} ms",
                    STALE_BUMP_EVERY.as_millis()
                ),
            ),
        ],
        columns: ["real own reads", "real stale", "real stale rate", "real time travel", "real follower share"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        series,
    })
}

// ------------------------------------------------------------ failover

/// Per policy: a 3-node cluster with automatic failover, 20 ms one-way
/// between nodes; `tandem bench-failover`'s trial (4 writers, kill -9 of
/// the leader, RTO to the first write a survivor accepts, acknowledged
/// writes missing on it); then the old leader restarts and its rollback
/// event says how many entries it set aside.
fn failover(seed: u64) -> Result<RealResult, String> {
    use tandem_bench::failover::{run_trial, FailoverOptions, PidSource};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut rows = Vec::new();
    let mut summary = Vec::new();
    for (name, ack) in POLICIES {
        let mut c = Cluster::start(3, false, &["--ack", ack, "--ack-level", "flush"])?;
        c.wait_settled()?;
        c.delay_all(FAILOVER_DELAY_MS)?;
        let opts = FailoverOptions {
            nodes: c.nodes.iter().map(|n| n.client.clone()).collect(),
            pids: c.nodes.iter().map(|n| PidSource::Pid(c.pid(n.id).unwrap_or(0))).collect(),
            writers: 4,
            warmup: FAILOVER_WARMUP,
            wait: None,
            leader_timeout: SETTLE_TIMEOUT,
            recovery_timeout: FAILOVER_RECOVERY_TIMEOUT,
            probe_interval: Duration::from_millis(10),
            io_timeout: Duration::from_secs(2),
            password: None,
            key_prefix: format!("lab-real:{seed}:{}", ack.replace(' ', "-")),
        };
        let trial = runtime.block_on(run_trial(&opts)).map_err(|e| format!("failover trial ({name}): {e}"))?;
        let killed = c.reap(trial.killed_pid);
        let rto = trial.rto();
        // With no new leader (under `all` while a node is down) a write is
        // lost when no survivor holds it.
        let lost = trial.lost_or_lost_everywhere();
        // A failover is a survivor leading, whether or not it could
        // acknowledge a write (under `all` it cannot while a node is down).
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let new_leader = loop {
            let found = c
                .nodes
                .iter()
                .filter(|n| Some(n.id) != killed)
                .map(|n| n.id)
                .find(|&id| c.status(id).is_ok_and(|s| s["role"] == "leader"));
            if found.is_some() || rto.is_none() && Instant::now() > deadline || rto.is_some() {
                break found;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // The old leader comes back and sets aside what the new one lacks.
        let mut rolled_back: Option<u64> = None;
        if let Some(id) = killed {
            c.spawn(&[id])?;
            let deadline = Instant::now() + ROLLBACK_WAIT;
            loop {
                let events: Vec<Value> = crate::http::get(&c.node(id).admin, "/events")
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok())
                    .unwrap_or_default();
                let rb: u64 = events
                    .iter()
                    .filter(|e| e["kind"] == "rollback" && e["node"].as_u64() == Some(id))
                    .filter_map(|e| e["lost_writes"].as_u64())
                    .sum();
                let following = c.status(id).is_ok_and(|s| s["role"] == "follower");
                if rb > 0 || (following && lost.unwrap_or(0) == 0) {
                    rolled_back = Some(rb);
                    break;
                }
                if Instant::now() > deadline {
                    rolled_back = following.then_some(rb);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let cell = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        rows.push((
            name.to_string(),
            vec![
                trial.acked_writes.to_string(),
                u64::from(new_leader.is_some()).to_string(),
                cell(lost),
                cell(rolled_back),
                rto.map_or("none".to_string(), |r| format!("{:.0}", ms(r))),
            ],
        ));
        summary.push((name, trial.acked_writes, lost, rolled_back, rto, new_leader.is_some()));
    }
    let part = |i: usize| {
        let (name, acked, lost, rb, rto, elected) = summary[i];
        let rto = match (rto, elected) {
            (Some(r), _) => format!("RTO {:.0} ms", ms(r)),
            (None, true) => format!(
                "a new leader was elected but acknowledged no write within {} s (the killed node is down and the \
                 policy waits for it)",
                FAILOVER_RECOVERY_TIMEOUT.as_secs()
            ),
            (None, false) => "no new leader".to_string(),
        };
        format!(
            "{name}: {acked} acknowledged, {} lost, {} in the rollback file, {rto}",
            lost.map_or("?".into(), |v| v.to_string()),
            rb.map_or("?".into(), |v| v.to_string()),
        )
    };
    let reading = format!(
        "one kill -9 of the leader per policy under 4 writers ({FAILOVER_DELAY_MS} ms one-way between nodes): {}; {}; {}.",
        part(0),
        part(1),
        part(2)
    );
    Ok(RealResult {
        setup: vec![
            ("cluster".into(), "3 `tandem server` processes on 127.0.0.1 per policy, automatic failover".into()),
            ("link".into(), format!("{FAILOVER_DELAY_MS} ms one-way on every peer link (POST /faults delay_ms per peer)")),
            (
                "fault".into(),
                format!(
                    "4 writers for {:.1} s, then kill -9 of the leader (tandem bench-failover's trial); the old leader restarts",
                    FAILOVER_WARMUP.as_secs_f64()
                ),
            ),
        ],
        columns: ["real acked", "real failovers", "real acked lost", "real rolled back", "real RTO ms"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        series: Vec::new(),
    })
}
