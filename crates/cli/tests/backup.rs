//! Process tests of backups and point-in-time recovery: real `tandem
//! server` processes, the real `tandem backup|restore|dr` commands, and
//! clients over RESP. Ports come from the kernel (port 0 / `free_ports`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::Cluster;
use common::{eventually, tandem_bin, tempdir, Resp, TestServer};
use tandem_backup::time::format_rfc3339;

const CATCH_UP: Duration = Duration::from_secs(15);

/// Runs `tandem <args>`; returns (success, stdout, stderr).
fn tandem(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tandem_bin()).args(args).output().expect("run tandem");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tandem_ok(args: &[&str]) -> String {
    let (ok, out, err) = tandem(args);
    assert!(ok, "tandem {args:?} failed\nstdout:\n{out}\nstderr:\n{err}");
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A node with `--backup-repo` and a short archive interval.
fn archived_node(dir: &Path, repo: &Path, extra: &[&str]) -> TestServer {
    let mut args = vec!["--backup-repo", s(repo), "--archive-interval-ms", "100"];
    args.extend_from_slice(extra);
    TestServer::start(dir, &args)
}

fn last_lsn(server: &TestServer) -> u64 {
    server.status()["last_lsn"].as_u64().expect("last_lsn")
}

/// Waits until the node's archive holds everything it appended.
fn wait_archived(server: &TestServer) -> u64 {
    let mut seen = 0;
    let ok = eventually(CATCH_UP, || {
        let st = server.status();
        seen = st["archive"]["archived_lsn"].as_u64().unwrap_or(0);
        seen == st["last_lsn"].as_u64().unwrap_or(u64::MAX)
    });
    assert!(ok, "the archive did not catch up (at lsn {seen}): {}", server.status());
    seen
}

fn set(server: &TestServer, k: &str, v: &str) {
    assert_eq!(server.raw().cmd(&["SET", k, v]), Resp::Simple("OK".into()));
}

/// Every key with its value (sets as sorted members joined by ',').
fn dump(server: &TestServer) -> BTreeMap<String, String> {
    let mut raw = server.raw();
    let Resp::Array(keys) = raw.cmd(&["KEYS", "*"]) else { panic!("KEYS * did not answer an array") };
    let mut out = BTreeMap::new();
    for key in keys.iter().map(Resp::text) {
        let value = match raw.cmd(&["TYPE", &key]) {
            Resp::Simple(t) if t == "set" => {
                let Resp::Array(m) = raw.cmd(&["SMEMBERS", &key]) else { panic!("SMEMBERS") };
                let mut m: Vec<String> = m.iter().map(Resp::text).collect();
                m.sort();
                m.join(",")
            }
            _ => raw.cmd(&["GET", &key]).text(),
        };
        out.insert(key, value);
    }
    out
}

fn dbsize(server: &TestServer) -> i64 {
    match server.raw().cmd(&["DBSIZE"]) {
        Resp::Integer(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}

/// Restores with `target` flags into a fresh directory and starts a node there.
fn restore_and_start(repo: &Path, target: &[&str]) -> (tempfile::TempDir, TestServer, String) {
    let dir = tempdir();
    let data = dir.path().join("restored");
    let mut args = vec!["restore", "--repo", s(repo), "--data-dir", s(&data)];
    args.extend_from_slice(target);
    let out = tandem_ok(&args);
    let server = TestServer::start(&data, &[]);
    (dir, server, out)
}

/// Starts a leader (node 1, archiving to `repo`) and two followers.
/// Leader + 2 followers; the leader archives to `repo`.
fn cluster_with_archive(repo: &Path) -> Cluster {
    let repo = s(repo).to_string();
    Cluster::start(3, Some(1), |id| {
        if id == 1 {
            vec!["--backup-repo".into(), repo.clone(), "--archive-interval-ms".into(), "100".into()]
        } else {
            vec![]
        }
    })
}

#[test]
fn flushall_replicates_everywhere_and_a_restore_to_one_second_before_it_brings_every_key_back() {
    let repo_dir = tempdir();
    let repo = repo_dir.path().join("repo");
    let cluster = cluster_with_archive(&repo);
    let nodes = &cluster.nodes;
    let leader = &nodes[0];
    let mut expected = BTreeMap::new();
    let mut raw = leader.raw();
    for i in 0..300 {
        let (k, v) = (format!("users:{i}"), format!("user-{i}-{}", i * 7));
        assert_eq!(raw.cmd(&["SET", &k, &v]), Resp::Simple("OK".into()));
        expected.insert(k, v);
    }
    // A base from a follower (a replica is a fine source, not a backup).
    let follower_admin = nodes[1].admin_addr().to_string();
    assert!(eventually(CATCH_UP, || last_lsn(&nodes[1]) == last_lsn(leader)));
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &follower_admin]);
    for i in 300..400 {
        let (k, v) = (format!("users:{i}"), format!("late-{i}"));
        assert_eq!(raw.cmd(&["SET", &k, &v]), Resp::Simple("OK".into()));
        expected.insert(k, v);
    }
    std::thread::sleep(Duration::from_millis(1100));
    let flush_ms = unix_ms();
    assert_eq!(raw.cmd(&["FLUSHALL"]), Resp::Simple("OK".into()));
    let lsn = last_lsn(leader);
    for (i, node) in nodes.iter().enumerate() {
        assert!(eventually(CATCH_UP, || last_lsn(node) == lsn), "node {} did not replicate the FLUSHALL", i + 1);
        assert_eq!(dbsize(node), 0, "node {} still holds keys: a replica is not a backup", i + 1);
    }
    wait_archived(leader);
    let to_time = format_rfc3339(flush_ms - 1000);
    let (_d, restored, out) = restore_and_start(&repo, &["--to-time", &to_time]);
    assert_eq!(dump(&restored), expected, "restore output: {out}");
    assert_eq!(last_lsn(&restored), lsn - 1, "everything but the FLUSHALL is back");
}

#[test]
fn restore_to_an_exact_lsn_reproduces_the_state_at_that_lsn() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = archived_node(&dir.path().join("data"), &repo, &[]);
    let mut raw = node.raw();
    let mut at_lsn = None;
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &node.admin_addr().to_string()]);
    for i in 0..400u64 {
        let k = format!("k:{}", i % 53);
        let reply = match i % 5 {
            0 => raw.cmd(&["DEL", &k]),
            1 => raw.cmd(&["SADD", "tags", &format!("t{}", i % 17)]),
            2 => raw.cmd(&["INCR", "counter"]),
            3 => raw.cmd(&["SREM", "tags", &format!("t{}", i % 13)]),
            _ => raw.cmd(&["SET", &k, &format!("v{i}")]),
        };
        assert!(!matches!(reply, Resp::Error(_)), "{reply:?}");
        if i == 250 {
            at_lsn = Some((last_lsn(&node), dump(&node)));
        }
    }
    let (lsn, reference) = at_lsn.unwrap();
    wait_archived(&node);
    let (_d, restored, _) = restore_and_start(&repo, &["--to-lsn", &lsn.to_string()]);
    assert_eq!(last_lsn(&restored), lsn);
    assert_eq!(dump(&restored), reference, "state at lsn {lsn}");
}

#[test]
fn a_corrupted_archive_file_is_named_by_verify_and_by_restore() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let mut node = archived_node(&dir.path().join("data"), &repo, &[]);
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &node.admin_addr().to_string()]);
    for i in 0..200 {
        set(&node, &format!("k{i}"), "value");
    }
    wait_archived(&node);
    node.sigterm_and_wait();
    assert!(tandem(&["backup", "verify", "--repo", s(&repo)]).0);
    let seg: PathBuf = std::fs::read_dir(repo.join("archive/node-1"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("an archive file");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let name = seg.file_name().unwrap().to_str().unwrap().to_string();
    let (ok, out, _) = tandem(&["backup", "verify", "--repo", s(&repo)]);
    assert!(!ok && out.contains(&name), "verify must fail and name {name}:\n{out}");
    let target = dir.path().join("restored");
    let (ok, _, err) = tandem(&["restore", "--repo", s(&repo), "--data-dir", s(&target), "--latest"]);
    assert!(!ok && err.contains(&name), "restore must fail and name {name}:\n{err}");
}

#[test]
fn a_gap_in_the_archived_log_is_detected_by_verify_list_and_restore() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let mut node = archived_node(&dir.path().join("data"), &repo, &["--archive-file-bytes-max", "4096"]);
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &node.admin_addr().to_string()]);
    for i in 0..40 {
        for j in 0..20 {
            set(&node, &format!("k{i}-{j}"), "some value of a few bytes");
        }
        std::thread::sleep(Duration::from_millis(15));
    }
    wait_archived(&node);
    node.sigterm_and_wait();
    let mut segs: Vec<PathBuf> = std::fs::read_dir(repo.join("archive/node-1"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "expected several archive files, got {segs:?}");
    let victim = &segs[segs.len() / 2];
    std::fs::remove_file(victim).unwrap();
    std::fs::remove_file(victim.with_extension("json")).unwrap();
    let (ok, out, _) = tandem(&["backup", "verify", "--repo", s(&repo)]);
    assert!(!ok && out.contains("gap in the archived log"), "{out}");
    let list = tandem_ok(&["backup", "list", "--repo", s(&repo)]);
    assert!(list.contains("GAPS"), "{list}");
    let target = dir.path().join("restored");
    let (ok, _, err) = tandem(&["restore", "--repo", s(&repo), "--data-dir", s(&target), "--latest"]);
    assert!(!ok && err.contains("gap in the archived log"), "{err}");
}

#[test]
fn a_base_backup_under_concurrent_writes_is_consistent_at_the_lsn_it_claims() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = TestServer::start(&dir.path().join("data"), &[]);
    // One writer: the n-th write is `SET k:n n`, so the state at lsn E is
    // exactly k:1..=k:E.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, addr) = (stop.clone(), written.clone(), node.client_addr());
        std::thread::spawn(move || {
            let mut raw = common::Raw::connect(addr);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 2000 {
                n += 1;
                assert_eq!(raw.cmd(&["SET", &format!("k:{n}"), &n.to_string()]), Resp::Simple("OK".into()));
                written.store(n, Ordering::Relaxed);
            }
        })
    };
    assert!(eventually(CATCH_UP, || written.load(Ordering::Relaxed) > 500));
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &node.admin_addr().to_string()]);
    let during = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&tandem_ok(&["backup", "list", "--repo", s(&repo), "--json"])).unwrap();
    let end_lsn = list["bases"][0]["manifest"]["end_lsn"].as_u64().unwrap();
    let start_lsn = list["bases"][0]["manifest"]["start_lsn"].as_u64().unwrap();
    assert!(end_lsn > 500 && end_lsn <= during, "base claims lsn {end_lsn}; writes done by then: {during}");
    let (_d, restored, _) = restore_and_start(&repo, &["--to-lsn", &end_lsn.to_string()]);
    assert_eq!(dbsize(&restored) as u64, end_lsn, "exactly k:1..=k:{end_lsn} (snapshot from lsn {start_lsn})");
    let mut raw = restored.raw();
    for n in [1, start_lsn.max(1), end_lsn / 2, end_lsn] {
        assert_eq!(raw.cmd(&["GET", &format!("k:{n}")]), Resp::Bulk(n.to_string().into_bytes()));
    }
    assert_eq!(raw.cmd(&["GET", &format!("k:{}", end_lsn + 1)]), Resp::Nil);
}

#[test]
fn rpo_max_ms_refuses_writes_while_the_archive_is_behind_and_accepts_them_again() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = archived_node(&dir.path().join("data"), &repo, &["--rpo-max-ms", "400"]);
    set(&node, "a", "1");
    wait_archived(&node);
    // The repository becomes unwritable: its stream directory is replaced
    // by a plain file (fails even for root).
    let stream = repo.join("archive/node-1");
    let away = repo.join("archive/moved-away");
    std::fs::rename(&stream, &away).unwrap();
    std::fs::write(&stream, b"not a directory").unwrap();
    set(&node, "b", "2");
    let mut refused = Resp::Nil;
    assert!(eventually(CATCH_UP, || {
        refused = node.raw().cmd(&["SET", "c", "3"]);
        matches!(&refused, Resp::Error(e) if e.starts_with("RPOBUDGET write refused: archive lag"))
    }));
    let Resp::Error(text) = &refused else { unreachable!() };
    assert!(text.contains("exceeds rpo_max_ms 400") && text.contains("writes resume when it catches up"), "{text}");
    let m = node.admin_get("/metrics");
    assert!(common::metric(&m, "tandem_archive_lag_seconds").unwrap() > 0.4, "{m}");
    // Reads still work.
    assert_eq!(node.raw().cmd(&["GET", "a"]), Resp::Bulk(b"1".to_vec()));
    std::fs::remove_file(&stream).unwrap();
    std::fs::rename(&away, &stream).unwrap();
    assert!(eventually(CATCH_UP, || node.raw().cmd(&["SET", "c", "3"]) == Resp::Simple("OK".into())));
    wait_archived(&node);
}

#[test]
fn dr_drill_reports_rpo_and_rto_and_exits_non_zero_when_a_target_is_missed() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = archived_node(&dir.path().join("data"), &repo, &[]);
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &node.admin_addr().to_string()]);
    for i in 0..100 {
        set(&node, &format!("k{i}"), "v");
    }
    wait_archived(&node);
    let (admin, pid) = (node.admin_addr().to_string(), node.pid().to_string());
    let drill_dir = dir.path().join("drill1");
    let (ok, out, err) = tandem(&[
        "dr",
        "drill",
        "--repo",
        s(&repo),
        "--admin",
        &admin,
        "--pid",
        &pid,
        "--data-dir",
        s(&drill_dir),
        "--rpo-target-ms",
        "1000",
        "--rto-target-ms",
        "60000",
    ]);
    assert!(ok, "drill should meet its targets\n{out}\n{err}");
    assert!(out.contains("RPO:       0 entries") && out.contains("RTO:"), "{out}");
    let out = Command::new(tandem_bin())
        .args(["dr", "drill", "--repo", s(&repo), "--data-dir", s(&dir.path().join("drill2")), "--rto-target-ms", "0"])
        .output()
        .unwrap();
    let (code, text) = (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned());
    assert!(
        code == Some(1) && text.contains("RTO") && text.contains("MISSED"),
        "an RTO target of 0 ms cannot be met\n{text}"
    );
}

#[test]
fn dr_drill_counts_the_writes_the_archive_had_not_shipped_as_lost() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    // The first archive pass runs at start; the next one only after 10 minutes.
    let node =
        TestServer::start(&dir.path().join("data"), &["--backup-repo", s(&repo), "--archive-interval-ms", "600000"]);
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &node.admin_addr().to_string()]);
    std::thread::sleep(Duration::from_millis(20));
    for i in 0..50 {
        set(&node, &format!("k{i}"), "v");
    }
    let (admin, pid) = (node.admin_addr().to_string(), node.pid().to_string());
    let out = Command::new(tandem_bin())
        .args(["dr", "drill", "--repo", s(&repo), "--admin", &admin, "--pid", &pid])
        .args(["--data-dir", s(&dir.path().join("drill")), "--rpo-target-ms", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "an unshipped write misses an RPO target of 0\n{text}");
    assert!(text.contains("RPO:       50 entries") && text.contains("MISSED"), "{text}");
}
