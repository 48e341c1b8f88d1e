//! Process tests of the operator's tools on their bad days: a restore or a
//! base backup killed half-way, `tandem up --restart N` bringing a killed
//! node back, and `tandem dr drill` stopping the node it started on every
//! exit path (its stdout closed early, a signal).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, pids_with_arg, tandem_bin, tempdir, Group, Raw, Resp, TestServer};
use tandem_backup::base::{STAGING_LOCK_FILE, STAGING_PREFIX};
use tandem_backup::restore::{RestoreDir, RESTORE_MARKER_FILE};

const CATCH_UP: Duration = Duration::from_secs(20);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `tandem <args>`; returns (success, stdout, stderr).
fn tandem(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tandem_bin()).args(args).env_remove("TANDEM_ADMIN_ADDR").output().expect("run tandem");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn tandem_ok(args: &[&str]) -> String {
    let (ok, out, err) = tandem(args);
    assert!(ok, "tandem {args:?} failed\nstdout:\n{out}\nstderr:\n{err}");
    out
}

fn dbsize(server: &TestServer) -> i64 {
    match server.raw().cmd(&["DBSIZE"]) {
        Resp::Integer(n) => n,
        other => panic!("DBSIZE: {other:?}"),
    }
}

/// A node archiving to `repo` with a base backup and `keys` keys, all archived.
fn archived_node_with_keys(data: &Path, repo: &Path, keys: usize) -> TestServer {
    let node = TestServer::start(data, &["--backup-repo", s(repo), "--archive-interval-ms", "100"]);
    tandem_ok(&["backup", "base", "--repo", s(repo), "--admin", &node.admin_addr().to_string()]);
    let mut raw = node.raw();
    // Pipelined: one round trip per batch, not per key.
    for batch in (0..keys).collect::<Vec<_>>().chunks(500) {
        let mut bytes = Vec::new();
        for i in batch {
            bytes.extend(common::encode_cmd(&["SET", &format!("key:{i}"), &format!("value-{i}-{}", "x".repeat(64))]));
        }
        raw.send(&bytes).unwrap();
        for _ in batch {
            assert_eq!(raw.read().unwrap(), Resp::Simple("OK".into()));
        }
    }
    let archived = eventually(CATCH_UP, || {
        let st = node.status();
        st["archive"]["archived_lsn"].as_u64() == st["last_lsn"].as_u64()
    });
    assert!(archived, "the archive did not catch up: {}", node.status());
    node
}

#[test]
fn a_half_restored_directory_is_refused_by_the_server_with_its_path_and_a_rerun_restore_completes() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = archived_node_with_keys(&dir.path().join("data"), &repo, 100);
    drop(node);
    let target = dir.path().join("restored");
    // What a restore killed before it finished leaves: the claimed target
    // with its marker (the lock dies with the process).
    drop(RestoreDir::begin(&target).unwrap());
    assert!(target.join(RESTORE_MARKER_FILE).exists());
    let failure = TestServer::try_start(&target, &[]).err().expect("a half-restored directory must not start");
    assert!(
        failure.stderr.contains("half-restored") && failure.stderr.contains(s(&target)),
        "the refusal names the directory: {}",
        failure.stderr
    );
    // The same restore again starts over and completes.
    tandem_ok(&["restore", "--repo", s(&repo), "--data-dir", s(&target), "--latest"]);
    assert!(!target.join(RESTORE_MARKER_FILE).exists());
    let restored = TestServer::start(&target, &[]);
    assert_eq!(dbsize(&restored), 100);
}

#[test]
fn a_restore_killed_at_any_moment_never_leaves_a_directory_that_starts_as_an_empty_node() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = archived_node_with_keys(&dir.path().join("data"), &repo, 20_000);
    drop(node);
    // Kill -9 at a few moments after the restore announced itself (it has
    // claimed its target by then): each time the directory is either
    // refused by the server or complete, never an empty node.
    let mut refused = 0;
    for (round, delay_ms) in [0u64, 20, 60, 150].into_iter().enumerate() {
        let target = dir.path().join(format!("restored-{round}"));
        let mut child = Command::new(tandem_bin())
            .args(["restore", "--repo", s(&repo), "--data-dir", s(&target), "--latest"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        assert!(line.starts_with("restore: target"), "{line}");
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        match TestServer::try_start(&target, &[]) {
            Err(f) => {
                assert!(f.stderr.contains("half-restored") && f.stderr.contains(s(&target)), "{}", f.stderr);
                refused += 1;
                tandem_ok(&["restore", "--repo", s(&repo), "--data-dir", s(&target), "--latest"]);
                assert_eq!(dbsize(&TestServer::start(&target, &[])), 20_000, "the rerun restore is complete");
                let staging = dir.path().join(format!(".restored-{round}.restoring"));
                assert!(!staging.exists(), "a completed restore leaves no staging directory");
            }
            // A kill after the swap but before the swapped-out directory was
            // removed may leave `.restored-N.restoring` behind (garbage, never
            // started as a node); what matters is that the target is whole.
            Ok(server) => assert_eq!(dbsize(&server), 20_000, "a directory that starts holds the whole restore"),
        }
    }
    eprintln!("{refused} of 4 kills landed before the restore finished");
}

#[test]
fn backup_prune_removes_the_staging_of_a_killed_base_backup_but_not_of_a_running_one() {
    let dir = tempdir();
    let repo = dir.path().join("repo");
    let node = archived_node_with_keys(&dir.path().join("data"), &repo, 2_000);
    let base_root = repo.join("base");
    // A base backup killed half-way (as many attempts as it takes to land
    // one before it finishes; what it leaves is all prune must clean).
    let mut child = Command::new(tandem_bin())
        .args(["backup", "base", "--repo", s(&repo), "--admin", &node.admin_addr().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    // Staging the test knows to be dead (a lock file nobody holds) and one
    // a live process (this test) holds locked, as a running backup does.
    let dead = base_root.join(format!("{STAGING_PREFIX}000000000000001-node1-lsn5"));
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join(STAGING_LOCK_FILE), b"").unwrap();
    std::fs::write(dead.join("snapshot.snap"), vec![0u8; 4096]).unwrap();
    let live = base_root.join(format!("{STAGING_PREFIX}000000000000002-node1-lsn6"));
    std::fs::create_dir_all(&live).unwrap();
    let lock = std::fs::File::create(live.join(STAGING_LOCK_FILE)).unwrap();
    lock.try_lock().unwrap();

    let out = tandem_ok(&["backup", "prune", "--repo", s(&repo)]);
    assert!(out.contains(s(&dead)), "prune names what it removed: {out}");
    let left: Vec<String> = std::fs::read_dir(&base_root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(STAGING_PREFIX))
        .collect();
    assert_eq!(left, vec![live.file_name().unwrap().to_string_lossy().into_owned()], "{out}");
    assert!(tandem_ok(&["backup", "verify", "--repo", s(&repo)]).contains("OK"));
    drop(lock);
    tandem_ok(&["backup", "prune", "--repo", s(&repo)]);
    assert!(!live.exists(), "once its writer is gone, the staging goes too");
    // The repository still takes and restores base backups.
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--admin", &node.admin_addr().to_string()]);
    let listed = tandem_ok(&["backup", "list", "--repo", s(&repo)]);
    assert!(listed.contains("base backups ("), "{listed}");
}

/// Who answers `ROLE` with `master` among `ports`.
fn leader_port(ports: &[u16]) -> Option<u16> {
    ports.iter().copied().find(|p| {
        let Ok(mut r) = Raw::try_connect(format!("127.0.0.1:{p}").parse().unwrap()) else { return false };
        matches!(r.try_cmd(&["ROLE"]), Ok(Resp::Array(a)) if a.first().map(Resp::text).as_deref() == Some("master"))
    })
}

#[test]
fn tandem_up_restart_brings_a_killed_node_back_and_it_rejoins_with_what_it_missed() {
    let dir = tempdir();
    let data = dir.path().join("cluster");
    let base = common::free_port_range(22, &[24700]);
    let ports: Vec<u16> = (0..3).map(|i| base + 10 * i).collect();
    let out_path = dir.path().join("up.out");
    let up_args = ["--nodes", "3", "--base-port", &base.to_string(), "--data-dir", s(&data)];
    let mut up = Group::spawn(
        Command::new(tandem_bin())
            .arg("up")
            .args(up_args)
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(Stdio::null()),
    );
    let printed = || std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(eventually(Duration::from_secs(60), || printed().contains("Ctrl-C stops the cluster")), "{}", printed());
    let mut leader = None;
    assert!(eventually(Duration::from_secs(30), || {
        leader = leader_port(&ports);
        leader.is_some()
    }));
    let leader = leader.unwrap();
    let victim_index = ports.iter().position(|p| *p != leader).unwrap();
    let (victim, victim_port) = (victim_index as u64 + 1, ports[victim_index]);
    // `up` prints each node's pid in its table: "node pid client admin peer".
    let text = printed();
    let pid: u32 = text
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == victim.to_string()).then(|| w.next()?.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no pid for node {victim} in:\n{text}"));
    // SAFETY: kill(2) on a node of the cluster this test started.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let leader_addr = format!("127.0.0.1:{leader}").parse().unwrap();
    let mut w = Raw::connect(leader_addr);
    assert_eq!(w.cmd(&["SET", "written-while-down", "yes"]), Resp::Simple("OK".into()));

    let mut restarted = Group::spawn(
        Command::new(tandem_bin())
            .args(["up", "--restart", &victim.to_string()])
            .args(up_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let victim_addr = format!("127.0.0.1:{victim_port}").parse().unwrap();
    let caught_up = eventually(CATCH_UP, || {
        let Ok(mut r) = Raw::try_connect(victim_addr) else { return false };
        matches!(r.try_cmd(&["GET", "written-while-down"]), Ok(Resp::Bulk(v)) if v == b"yes")
    });
    assert!(caught_up, "node {victim} restarted by `tandem up --restart` did not catch up");
    let role = Raw::connect(victim_addr).cmd(&["ROLE"]);
    assert!(matches!(&role, Resp::Array(a) if a[0].text() == "slave"), "node {victim} rejoined as {role:?}");
    let rejoined = eventually(CATCH_UP, || {
        let Resp::Bulk(info) = Raw::connect(leader_addr).cmd(&["INFO", "replication"]) else { return false };
        String::from_utf8_lossy(&info).contains("connected_slaves:2")
    });
    assert!(rejoined, "the leader does not count node {victim} among its followers again");
    assert!(restarted.stop() && up.stop(), "the nodes stop on SIGTERM");
}

/// A node with a base backup in `repo`, for drills.
fn drill_repo(dir: &Path) -> (TestServer, std::path::PathBuf) {
    let repo = dir.join("repo");
    (archived_node_with_keys(&dir.join("data"), &repo, 50), repo)
}

#[test]
fn dr_drill_stops_its_restored_node_when_its_stdout_is_closed_early() {
    let dir = tempdir();
    let (_node, repo) = drill_repo(dir.path());
    let drill_dir = dir.path().join("drill");
    let script = format!("'{}' dr drill --repo '{}' --data-dir '{}' | head -1", tandem_bin(), s(&repo), s(&drill_dir));
    let out = Command::new("sh").args(["-c", &script]).stderr(Stdio::piped()).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.trim(), "drill report", "head -1 saw the first line\n{stderr}");
    assert!(drill_dir.join("snapshots").is_dir(), "the drill restored into its directory\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // sh returns once every process of the pipeline exited.
    let left = pids_with_arg(s(&drill_dir));
    assert!(left.is_empty(), "the restored node (pids {left:?}) outlived the drill\n{stderr}");
}

#[test]
fn dr_drill_stops_its_restored_node_when_it_is_interrupted() {
    let dir = tempdir();
    let (_node, repo) = drill_repo(dir.path());
    let drill_dir = dir.path().join("drill");
    let mut drill = Group::spawn(
        Command::new(tandem_bin())
            .args(["dr", "drill", "--repo", s(&repo), "--data-dir", s(&drill_dir)])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    // The drill's own command line names the directory too.
    let drill_pid = drill.pid();
    let node_pids = || -> Vec<u32> { pids_with_arg(s(&drill_dir)).into_iter().filter(|p| *p != drill_pid).collect() };
    // SIGTERM to the drill alone as soon as its node runs (or it finished).
    let started =
        eventually(Duration::from_secs(60), || !node_pids().is_empty() || drill.wait(Duration::ZERO).is_some());
    assert!(started, "the drill neither started a node nor finished");
    // SAFETY: kill(2) on the drill process this test started.
    unsafe {
        libc::kill(drill.pid() as libc::pid_t, libc::SIGTERM);
    }
    let status = drill.wait(Duration::from_secs(30)).expect("the drill exits after SIGTERM");
    assert!(status.code() == Some(130) || status.success(), "{status}");
    let gone = eventually(Duration::from_secs(10), || node_pids().is_empty());
    assert!(gone, "the restored node outlived the interrupted drill: {:?}", node_pids());
}
