//! Backups of a multi-leader keyspace between real `tandem server`
//! processes: every node archives its keyspace log (its own and every
//! received origin's writes) to the repository, and `tandem restore
//! --to-time T` / `--latest` brings back the merged state of exactly the
//! writes with HLC at or before T / all of them, beside the single-leader
//! keys. Every wait is a bounded poll.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::Cluster;
use common::{eventually, tempdir, Resp, TestServer};
use tandem_backup::time::format_rfc3339;

const CONVERGE: Duration = Duration::from_secs(30);

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::tandem_bin()).args(args).output().expect("run tandem");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The state compared: the set, the counter and the single-leader keys.
#[derive(Debug, PartialEq, Eq, Clone)]
struct State {
    set: Vec<String>,
    counter: String,
    single: Vec<String>,
}

fn state(node: &TestServer) -> State {
    let mut raw = node.raw();
    let set = match raw.cmd(&["SMEMBERS", "cart:s"]) {
        Resp::Array(v) | Resp::Set(v) => {
            let mut m: Vec<String> = v.iter().map(Resp::text).collect();
            m.sort();
            m
        }
        other => panic!("SMEMBERS: {other:?}"),
    };
    let counter = match raw.cmd(&["GET", "cart:n"]) {
        Resp::Nil => "nil".to_string(),
        r => r.text(),
    };
    let single = (0..6)
        .map(|i| match raw.cmd(&["GET", &format!("sl:{i}")]) {
            Resp::Nil => "nil".to_string(),
            r => r.text(),
        })
        .collect();
    State { set, counter, single }
}

fn ml_state(node: &TestServer) -> serde_json::Value {
    node.status()["multi_leader"]["carts"].clone()
}

/// Writes on every node: members `tag-<node>-<i>`, `INCRBY 1..`, and a
/// removal of what node 1 added in the previous round; the single-leader
/// keys on the leader.
fn round(cluster: &Cluster, tag: &str, remove: Option<&str>) {
    for id in 1..=3u64 {
        let mut raw = cluster.node(id).raw();
        for i in 0..5 {
            assert_eq!(raw.cmd(&["SADD", "cart:s", &format!("{tag}-{id}-{i}")]), Resp::Integer(1));
            raw.cmd(&["INCRBY", "cart:n", &format!("{}", id * 10 + i)]);
        }
        if let Some(r) = remove {
            raw.cmd(&["SREM", "cart:s", &format!("{r}-{id}-0")]);
        }
    }
    let mut leader = cluster.leader().raw();
    for i in 0..6 {
        assert_eq!(leader.cmd(&["SET", &format!("sl:{i}"), &format!("{tag}-{i}")]).text(), "OK");
    }
}

fn converged(cluster: &Cluster) -> State {
    let mut last = None;
    let ok = eventually(CONVERGE, || {
        let s: Vec<State> = (1..=3).map(|id| state(cluster.node(id))).collect();
        let same = s.iter().all(|x| *x == s[0]);
        last = Some(s);
        same
    });
    assert!(ok, "the nodes did not converge: {last:#?}");
    last.unwrap().remove(0)
}

/// Every node's multi-leader archive holds everything its log has.
fn wait_archived(cluster: &Cluster) {
    for id in 1..=3 {
        let node = cluster.node(id);
        let ok = eventually(CONVERGE, || {
            let st = ml_state(node);
            let applied: u64 = st["progress"].as_object().map_or(0, |p| p.values().filter_map(|v| v.as_u64()).sum());
            st["archive"]["pending_bytes"] == 0
                && st["archive"]["last_error"].is_null()
                && st["archive"]["archived_records"].as_u64() >= Some(applied)
        });
        assert!(ok, "node {id}'s multi-leader archive did not catch up: {}", ml_state(node));
    }
    let leader = cluster.leader();
    let ok = eventually(CONVERGE, || {
        let st = leader.status();
        st["archive"]["archived_lsn"].as_u64() == st["last_lsn"].as_u64()
    });
    assert!(ok, "the log archive did not catch up: {}", leader.status());
}

/// Restores into a fresh directory and starts a single node on it whose
/// config declares the keyspace (the cluster map is not in a backup).
fn restore(repo: &Path, target: &[&str]) -> (tempfile::TempDir, TestServer, String) {
    let dir = tempdir();
    let data = dir.path().join("restored");
    let mut args = vec!["restore", "--repo", s(repo), "--data-dir", s(&data)];
    args.extend_from_slice(target);
    let (ok, out) = cli(&args);
    assert!(ok, "tandem {args:?}: {out}");
    let config = dir.path().join("tandem.toml");
    std::fs::write(
        &config,
        "[[keyspace]]\nname = \"carts\"\nprefix = \"cart:\"\nmode = \"multi-leader\"\nconflict = \"crdt\"\n",
    )
    .unwrap();
    let server = TestServer::start(&data, &["--config", s(&config)]);
    (dir, server, out)
}

#[test]
fn pitr_restores_a_multi_leader_keyspace_to_the_merged_writes_of_every_origin_up_to_t() {
    let repo_dir = tempdir();
    let repo = repo_dir.path().join("repo");
    let repo_flag = s(&repo).to_string();
    let cluster = Cluster::start(3, None, |_| {
        vec!["--backup-repo".into(), repo_flag.clone(), "--archive-interval-ms".into(), "100".into()]
    });
    let admin = cluster.node(1).admin_addr().to_string();
    let mut created = (false, String::new());
    assert!(
        eventually(CONVERGE, || {
            created = cli(&[
                "keyspace",
                "create",
                "carts",
                "--prefix",
                "cart:",
                "--mode",
                "multi-leader",
                "--conflict",
                "crdt",
                "--admin",
                &admin,
            ]);
            created.0
        }),
        "keyspace create failed: {}",
        created.1
    );
    for id in 1..=3 {
        assert!(
            eventually(CONVERGE, || ml_state(cluster.node(id))["engine"] == "multi-leader"),
            "node {id} runs no multi-leader replica: {}",
            cluster.node(id).status()
        );
    }
    let leader_id = cluster.wait_leader(None);
    cluster.wait_streaming(&[1, 2, 3].into_iter().filter(|i| *i != leader_id).collect::<Vec<_>>());

    round(&cluster, "a", None);
    converged(&cluster);
    let (ok, out) = cli(&["backup", "base", "--repo", s(&repo), "--from", &cluster.leader().admin_addr().to_string()]);
    assert!(ok, "backup base: {out}");
    round(&cluster, "b", Some("a"));
    let at_t = converged(&cluster);
    std::thread::sleep(Duration::from_millis(30));
    let t_ms = unix_ms();
    std::thread::sleep(Duration::from_millis(30));
    round(&cluster, "c", Some("b"));
    let at_end = converged(&cluster);
    assert_ne!(at_t, at_end);
    assert_eq!(at_end.set.len(), 3 * 15 - 6, "{at_end:?}");
    wait_archived(&cluster);
    // Every node archived every origin's writes.
    for id in 1..=3 {
        let meta = repo.join("multi-leader").join("carts").join(format!("node-{id}.json"));
        assert!(meta.exists(), "no archive of node {id}: {}", meta.display());
    }

    let (_d1, at, out) = restore(&repo, &["--to-time", &format_rfc3339(t_ms)]);
    assert_eq!(state(&at), at_t, "the restore to T differs from the cluster at T\n{out}");
    drop(at);
    let (_d2, latest, out) = restore(&repo, &["--latest"]);
    assert_eq!(state(&latest), at_end, "the restore --latest differs from the cluster's end state\n{out}");
    // The restored node's own writes continue from the restored vector.
    let mut raw = latest.raw();
    assert_eq!(raw.cmd(&["SADD", "cart:s", "after-restore"]), Resp::Integer(1));
    assert!(matches!(raw.cmd(&["SISMEMBER", "cart:s", "a-2-1"]), Resp::Integer(1)));
}
