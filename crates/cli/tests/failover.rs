//! Automatic failover between real `tandem server` processes (issue 4):
//! election without `--leader`, kill -9 of the leader under `any 1` load,
//! a partitioned leader losing its lease, rollback files for lost `async`
//! writes, and switchover with zero loss.
//!
//! Partitions are made with link fault injection in each node's peer
//! transport (`POST /faults`), since the kernel here has no `netem`. Every
//! wait is a bounded poll; timings are liveness bounds, not benchmarks (the
//! RTO benchmark is `scripts/bench-failover.sh`).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{info, Cluster, ELECT};
use common::{eventually, http_get, Raw, Resp, TestServer};

/// Lease for these tests (the default); the leader holds it ~82 % of this.
const LEASE_MS: u64 = 400;

fn auto_cluster(extra: &[&str]) -> Cluster {
    let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    extra.push(common::FAULT_INJECTION.into());
    Cluster::start(3, None, |_| extra.clone())
}

fn post(server: &TestServer, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(server.admin_addr()).expect("connect admin");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Cuts every peer link between `id` and the other nodes, both ways.
fn isolate(c: &Cluster, id: u64) {
    let others: Vec<u64> = (1..=c.nodes.len() as u64).filter(|&o| o != id).collect();
    let list = others.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    post(c.node(id), "/faults", &format!("{{\"cut\":[{list}]}}"));
    for o in others {
        post(c.node(o), "/faults", &format!("{{\"cut\":[{id}]}}"));
    }
}

fn heal(c: &Cluster) {
    for n in &c.nodes {
        post(n, "/faults", "{}");
    }
}

fn get(server: &TestServer, key: &str) -> Option<String> {
    match server.raw().cmd(&["GET", key]) {
        Resp::Bulk(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    }
}

/// Keys acknowledged by a background writer.
struct Writers {
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Writes unique keys to whichever node leads, from `n` threads; keeps
/// the keys that were acknowledged with `+OK`.
fn start_writers(c: &Cluster, n: usize, prefix: &str) -> Writers {
    let addrs: Vec<_> = c.nodes.iter().map(|s| s.client_addr()).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads = (0..n)
        .map(|t| {
            let (addrs, acked, stop, prefix) = (addrs.clone(), acked.clone(), stop.clone(), prefix.to_string());
            std::thread::spawn(move || {
                let mut i = 0u64;
                let mut target = 0usize;
                let mut conn: Option<Raw> = None;
                while !stop.load(Ordering::Relaxed) {
                    if conn.is_none() {
                        conn = Raw::try_connect(addrs[target]).ok();
                        if let Some(r) = &conn {
                            r.set_read_timeout(Duration::from_secs(3));
                        }
                    }
                    let Some(r) = conn.as_mut() else {
                        target = (target + 1) % addrs.len();
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let key = format!("{prefix}:{t}:{i}");
                    match r.try_cmd(&["SET", &key, "v"]) {
                        Ok(Resp::Simple(s)) if s == "OK" => {
                            acked.lock().unwrap().push(key);
                            i += 1;
                        }
                        Ok(_) | Err(_) => {
                            // READONLY, TRYAGAIN, NOREPLICAS or a dead node:
                            // try the next node.
                            i += 1;
                            conn = None;
                            target = (target + 1) % addrs.len();
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                }
            })
        })
        .collect();
    Writers { acked, stop, threads }
}

impl Writers {
    fn count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Arc::try_unwrap(self.acked).map(|m| m.into_inner().unwrap()).unwrap_or_default()
    }
}

/// Every key in `keys` is readable on `server` (reads through one
/// pipelined connection).
fn missing_on(server: &TestServer, keys: &[String]) -> Vec<String> {
    let mut raw = server.raw();
    keys.iter().filter(|k| !matches!(raw.cmd(&["GET", k]), Resp::Bulk(_))).cloned().collect()
}

fn events(c: &Cluster) -> String {
    c.nodes.iter().filter_map(|n| http_get(n.admin_addr(), "/events").ok()).collect::<Vec<_>>().join("\n")
}

// ------------------------------------------------------------------ tests

#[test]
fn nodes_without_a_leader_elect_one_and_replicate_to_the_others() {
    let c = auto_cluster(&[]);
    let l = c.wait_leader(None);
    let mut raw = c.node(l).raw();
    for i in 0..100 {
        assert_eq!(raw.cmd(&["SET", &format!("k{i}"), "v"]), Resp::Simple("OK".into()));
    }
    for id in (1..=3).filter(|&id| id != l) {
        assert!(
            eventually(ELECT, || get(c.node(id), "k99").is_some()),
            "node {id} did not receive the writes\n{}",
            c.stderrs()
        );
        // Followers refuse writes naming the leader.
        match c.node(id).raw().cmd(&["SET", "x", "y"]) {
            Resp::Error(e) => assert!(e.starts_with("READONLY"), "{e}"),
            other => panic!("a follower accepted a write: {other:?}"),
        }
    }
    assert!(events(&c).contains("bootstrap"), "no bootstrap event: {}", events(&c));
}

#[test]
fn killing_the_leader_promotes_a_follower_and_loses_no_acknowledged_any_1_write() {
    let mut c = auto_cluster(&["--ack", "any 1"]);
    let old = c.wait_leader(None);
    let writers = start_writers(&c, 4, "kill");
    assert!(eventually(ELECT, || writers.count() > 200), "writes do not get acknowledged\n{}", c.stderrs());
    let killed_at = Instant::now();
    c.node_mut(old).kill9();
    let new = c.wait_leader(Some(old));
    let before = writers.count();
    assert!(
        eventually(ELECT, || writers.count() > before + 100),
        "the new leader {new} does not acknowledge writes\n{}",
        c.stderrs()
    );
    let rto = killed_at.elapsed();
    let acked = writers.stop();
    let missing = missing_on(c.node(new), &acked);
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes are not on the new leader {new}, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let ev = events(&c);
    assert!(ev.contains("promoted"), "no promotion event: {ev}");
    eprintln!("failover after kill -9: new leader {new}, writes flowing again after {rto:?}");
}

#[test]
fn a_partitioned_leader_stops_accepting_writes_within_its_lease() {
    let c = auto_cluster(&[]);
    let old = c.wait_leader(None);
    let mut raw = c.node(old).raw();
    assert_eq!(raw.cmd(&["SET", "before", "1"]), Resp::Simple("OK".into()));
    let cut_at = Instant::now();
    isolate(&c, old);
    // Within the lease (plus scheduling slack) the old leader refuses.
    let refused = eventually(
        Duration::from_millis(LEASE_MS * 3),
        || matches!(raw.cmd(&["SET", "during", "1"]), Resp::Error(e) if e.starts_with("TRYAGAIN")),
    );
    let refused_after = cut_at.elapsed();
    assert!(refused, "the isolated leader still accepts writes after {refused_after:?}\n{}", c.stderrs());
    // The majority side elects a new leader that accepts writes.
    let new = c.wait_leader(Some(old));
    assert_eq!(c.node(new).raw().cmd(&["SET", "after", "1"]), Resp::Simple("OK".into()));
    // And the old leader still refuses while isolated.
    assert!(matches!(raw.cmd(&["SET", "during2", "1"]), Resp::Error(_)));
    heal(&c);
    assert!(
        eventually(ELECT, || get(c.node(old), "after").is_some()),
        "the old leader did not rejoin as a follower\n{}",
        c.stderrs()
    );
    assert!(info(c.node(old)).get("role").map(String::as_str) == Some("slave"));
    eprintln!("isolated leader refused writes {refused_after:?} after its links were cut");
}

#[test]
fn returning_old_leader_saves_exactly_its_lost_async_writes_in_a_rollback_file() {
    // A long lease gives the isolated leader time to acknowledge writes that
    // never reach anyone (async); they must all be in its rollback file.
    let c = auto_cluster(&["--lease-ms", "1500", "--failover-timeout-ms", "1500"]);
    let old = c.wait_leader(None);
    let mut raw = c.node(old).raw();
    assert_eq!(raw.cmd(&["SET", "kept", "1"]), Resp::Simple("OK".into()));
    for id in (1..=3).filter(|&id| id != old) {
        assert!(eventually(ELECT, || get(c.node(id), "kept").is_some()));
    }
    isolate(&c, old);
    let mut lost = BTreeSet::new();
    for i in 0..1_000_000 {
        let key = format!("lost{i}");
        match raw.cmd(&["SET", &key, "x"]) {
            Resp::Simple(s) if s == "OK" => {
                lost.insert(key);
            }
            _ => break,
        }
    }
    assert!(!lost.is_empty(), "the isolated leader acknowledged nothing before its lease ran out");
    let new = c.wait_leader(Some(old));
    assert_eq!(c.node(new).raw().cmd(&["SET", "new", "1"]), Resp::Simple("OK".into()));
    heal(&c);
    assert!(eventually(ELECT, || get(c.node(old), "new").is_some()), "the old leader did not rejoin\n{}", c.stderrs());
    // Its lost writes are gone from it ...
    assert!(lost.iter().all(|k| get(c.node(old), k).is_none()));
    // ... and listed, exactly, in its rollback file.
    let files = tandem_node::rollback::list(c.node(old).data_dir()).expect("list rollback files");
    assert_eq!(files.len(), 1, "{files:?}");
    let (header, lines) = tandem_node::rollback::read(&files[0].path).expect("read rollback file");
    let keys: BTreeSet<String> = lines.iter().filter_map(|l| l["key"].as_str().map(str::to_string)).collect();
    assert_eq!(keys, lost, "the rollback file must list exactly the acknowledged writes the new leader lacks");
    assert_eq!(header.entries as usize, lost.len());
    assert!(events(&c).contains("rollback"), "no rollback event");
    // The CLI reads it too.
    let out = std::process::Command::new(common::tandem_bin())
        .args(["rollback", "list", "--data-dir"])
        .arg(c.node(old).data_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains(&format!("{} entries", lost.len())), "{text}");
}

#[test]
fn switchover_moves_leadership_and_loses_no_write() {
    let c = auto_cluster(&["--ack", "any 1"]);
    let old = c.wait_leader(None);
    let target = (1..=3).find(|&id| id != old).unwrap();
    let writers = start_writers(&c, 4, "sw");
    assert!(eventually(ELECT, || writers.count() > 200));
    // Through the CLI, against a node that is not the target.
    let out = std::process::Command::new(common::tandem_bin())
        .args(["switchover", "--to", &target.to_string(), "--admin-addr"])
        .arg(c.node(old).admin_addr().to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "switchover failed: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        c.stderrs()
    );
    let new = c.wait_leader(Some(old));
    assert_eq!(new, target);
    let before = writers.count();
    assert!(eventually(ELECT, || writers.count() > before + 100), "writes do not resume\n{}", c.stderrs());
    let acked = writers.stop();
    let missing = missing_on(c.node(new), &acked);
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost in a switchover: {:?}",
        missing.len(),
        &missing[..5.min(missing.len())]
    );
    // The old leader follows and holds everything too.
    assert!(eventually(ELECT, || missing_on(c.node(old), &acked[acked.len() - 10..]).is_empty()));
    assert!(tandem_node::rollback::list(c.node(old).data_dir()).unwrap().is_empty(), "a switchover rolled back writes");
    assert!(events(&c).contains("switchover"));
    // And back again through RESP, asked on a third node.
    let third = (1..=3).find(|&id| id != old && id != new).unwrap();
    match c.node(third).raw().cmd(&["SWITCHOVER", &old.to_string(), "TIMEOUT", "5000"]) {
        Resp::Simple(s) => assert!(s.starts_with(&format!("OK node {old} leads epoch")), "{s}"),
        other => panic!("SWITCHOVER answered {other:?}\n{}", c.stderrs()),
    }
    assert_eq!(c.wait_leader(Some(new)), old);
    assert!(missing_on(c.node(old), &acked).is_empty(), "a write went missing in the switchover back");
    // Bad input gets a clear error.
    match c.node(third).raw().cmd(&["SWITCHOVER", "99"]) {
        Resp::Error(e) => assert!(e.contains("not a member"), "{e}"),
        other => panic!("SWITCHOVER to a stranger answered {other:?}"),
    }
}

fn epoch_of(server: &TestServer) -> u64 {
    info(server).get("tandem_epoch").and_then(|e| e.parse().ok()).unwrap_or(0)
}

#[test]
fn a_leader_restarted_at_once_never_leads_its_old_epoch_again() {
    let mut c = auto_cluster(&["--ack", "any 1"]);
    let old = c.wait_leader(None);
    let old_epoch = epoch_of(c.node(old));
    let mut raw = c.node(old).raw();
    for i in 0..50 {
        assert_eq!(raw.cmd(&["SET", &format!("r{i}"), "v"]), Resp::Simple("OK".into()));
    }
    drop(raw);
    // Back before the failover timeout: the map still names it.
    c.node_mut(old).restart();
    let mut new = None;
    assert!(
        eventually(ELECT, || {
            new = c.leader_id().filter(|&l| epoch_of(c.node(l)) > old_epoch);
            new.is_some()
        }),
        "no leader of a newer epoch than {old_epoch}\n{}",
        c.stderrs()
    );
    let new = new.unwrap();
    // The restarted process never led the old epoch (it may lead a newer one).
    let restarted = c.node(old).stderr();
    assert!(
        !restarted.contains(&format!("leading epoch={old_epoch}\n"))
            && !restarted.ends_with(&format!("leading epoch={old_epoch}")),
        "the restarted node led its old epoch {old_epoch} again:\n{restarted}"
    );
    let mut writes = c.node(new).raw();
    assert!(eventually(ELECT, || matches!(writes.cmd(&["SET", "after", "1"]), Resp::Simple(_))));
    for id in 1..=3 {
        assert!(
            eventually(ELECT, || missing_on(c.node(id), &["r49".to_string(), "after".to_string()]).is_empty()),
            "node {id} does not hold every acknowledged write\n{}",
            c.stderrs()
        );
    }
}

/// `/events` of one node, parsed.
fn events_of(server: &TestServer) -> Vec<serde_json::Value> {
    http_get(server.admin_addr(), "/events").ok().and_then(|b| serde_json::from_str(&b).ok()).unwrap_or_default()
}

#[test]
fn the_event_log_is_cluster_wide_and_survives_the_loss_of_the_node_that_recorded_it() {
    let mut c = auto_cluster(&[]);
    let old = c.wait_leader(None);
    // The bootstrap election is in every node's log, whoever recorded it.
    for id in 1..=3u64 {
        assert!(
            eventually(ELECT, || events_of(c.node(id)).iter().any(|e| e["kind"] == "bootstrap")),
            "node {id} has no bootstrap event: {:?}\n{}",
            events_of(c.node(id)),
            c.stderrs()
        );
    }
    c.node_mut(old).kill9();
    let new = c.wait_leader(Some(old));
    let promoted = |s: &TestServer| events_of(s).into_iter().find(|e| e["kind"] == "promoted");
    let mut recorder = 0;
    assert!(
        eventually(ELECT, || {
            recorder = promoted(c.node(new)).and_then(|e| e["node"].as_u64()).unwrap_or(0);
            recorder != 0
        }),
        "no promoted event on node {new}\n{}",
        c.stderrs()
    );
    let witness = (1..=3u64).find(|&id| id != old && id != recorder).expect("a third node");
    assert!(
        eventually(ELECT, || promoted(c.node(witness)).is_some()),
        "the promotion never reached node {witness}'s replicated log"
    );
    // Lose the node that recorded the promotion as well: the last node still
    // tells the story, and so do both after they restart.
    if recorder != old {
        c.node_mut(recorder).kill9();
    }
    assert!(promoted(c.node(witness)).is_some(), "the promotion vanished with node {recorder}");
    c.node_mut(old).restart();
    if recorder != old {
        c.node_mut(recorder).restart();
    }
    let admins = c.nodes.iter().map(|n| n.admin_addr().to_string()).collect::<Vec<_>>().join(",");
    let out = std::process::Command::new(common::tandem_bin()).args(["status", "--admin", &admins]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "tandem status failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    let first = text.lines().next().unwrap_or("");
    assert!(first.starts_with("node") && first.contains("role") && first.contains("last event"), "{text}");
    assert!(text.contains("bootstrap:") && text.contains("promoted:"), "events missing after restarts:\n{text}");
    assert!(
        !text.contains(&format!("node {old} (leader of epoch 1) lost: last heard at")) || text.contains("promoted"),
        "{text}"
    );
    // --json is the raw documents; a closed pipe is no panic.
    let json = std::process::Command::new(common::tandem_bin())
        .args(["status", "--json", "--admin", &admins])
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status --json is JSON");
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(3), "{doc}");
    let piped = std::process::Command::new("sh")
        .args(["-c", &format!("{} status --admin {admins} | head -1", common::tandem_bin())])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&piped.stderr);
    assert!(!err.contains("panicked"), "tandem status | head panicked: {err}");
}

#[test]
fn healthz_fails_for_a_leader_without_its_lease_and_readyz_is_true_only_where_writes_go() {
    let c = auto_cluster(&["--ack", "any 1"]);
    let old = c.wait_leader(None);
    let follower = (1..=3u64).find(|&id| id != old).unwrap();
    assert_eq!(http_get(c.node(old).admin_addr(), "/healthz").as_deref(), Ok("ok\n"));
    assert!(http_get(c.node(old).admin_addr(), "/readyz").is_ok(), "the leader takes writes");
    assert_eq!(http_get(c.node(follower).admin_addr(), "/healthz").as_deref(), Ok("ok\n"));
    let not_ready = http_get(c.node(follower).admin_addr(), "/readyz").unwrap_err();
    assert!(not_ready.contains("503"), "a follower is not ready for writes: {not_ready}");
    // Metrics: build info, role, epoch, the ack wait by policy, memory.
    assert_eq!(c.node(old).raw().cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    let metrics = http_get(c.node(old).admin_addr(), "/metrics").unwrap();
    for series in [
        "tandem_build_info{version=",
        "tandem_role{role=\"leader\"} 1",
        "tandem_epoch ",
        "tandem_ack_wait_seconds_count{policy=\"any 1\"} 1",
        "tandem_memory_rss_bytes ",
    ] {
        assert!(metrics.contains(series), "/metrics lacks {series}:\n{metrics}");
    }
    let memory = match c.node(old).raw().cmd(&["INFO", "memory"]) {
        Resp::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO memory answered {other:?}"),
    };
    let field = |name: &str| -> u64 {
        memory.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    };
    assert!(field("used_memory_rss:") > 1 << 20, "used_memory_rss is a real number: {memory}");
    assert!(field("used_memory:") > 0, "used_memory counts the key written: {memory}");
    assert!(memory.contains("used_memory_human:"), "{memory}");
    // Cut off, the leader loses its lease: unhealthy, with the reason.
    isolate(&c, old);
    let mut last = String::new();
    let failed = eventually(ELECT, || match http_get(c.node(old).admin_addr(), "/healthz") {
        Ok(body) => {
            last = body;
            false
        }
        Err(e) => {
            last = e;
            true
        }
    });
    assert!(failed && last.contains("503"), "an isolated leader stays healthy: {last}");
    heal(&c);
}
