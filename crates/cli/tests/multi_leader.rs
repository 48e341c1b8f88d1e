//! Multi-leader keyspaces between real `tandem server` processes: every
//! node takes writes while cut off from the others, and after the links
//! heal every node holds the merged state; a single-leader keyspace in the
//! same cluster still refuses writes on followers; a node killed with
//! SIGKILL keeps every write it acknowledged and ships the ones the others
//! never got. Partitions are cut in each node's own transport
//! (`POST /faults`, `--fault-injection`). Every wait is a bounded poll.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{admin_request, eventually, Resp, TestServer};

/// How long the cluster may take to elect, agree on the map, or converge.
const CONVERGE: Duration = Duration::from_secs(30);

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::tandem_bin()).args(args).output().expect("run tandem");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn faults(node: &TestServer, body: &str) {
    let (code, text) = admin_request(node.admin_addr(), "POST", "/faults", body, None);
    assert_eq!(code, 200, "POST /faults {body}: {text}");
}

fn members(node: &TestServer, key: &str) -> Vec<String> {
    match node.raw().cmd(&["SMEMBERS", key]) {
        Resp::Array(v) | Resp::Set(v) => {
            let mut m: Vec<String> = v.iter().map(Resp::text).collect();
            m.sort();
            m
        }
        other => panic!("SMEMBERS {key}: {other:?}"),
    }
}

fn engine_state(node: &TestServer) -> serde_json::Value {
    let ks: serde_json::Value = serde_json::from_str(&node.admin_get("/keyspaces")).expect("JSON");
    ks["keyspaces"].as_array().unwrap().iter().find(|k| k["name"] == "carts").cloned().unwrap_or_default()["state"]
        .clone()
}

/// A cluster of 3 with a `crdt` multi-leader keyspace `carts` (prefix
/// `cart:`) running on every node.
fn cluster_with_carts() -> Cluster {
    let cluster = Cluster::start(3, None, |_| vec!["--fault-injection".into()]);
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
        let node = cluster.node(id);
        assert!(
            eventually(CONVERGE, || engine_state(node)["engine"] == "multi-leader"),
            "node {id} runs no multi-leader replica: {}\n{}",
            node.admin_get("/keyspaces"),
            cluster.stderrs()
        );
    }
    cluster
}

#[test]
fn partitioned_nodes_accept_writes_and_converge_to_the_merged_state_after_heal() {
    let cluster = cluster_with_carts();
    let n1 = cluster.node(1);
    assert_eq!(n1.raw().cmd(&["SADD", "cart:alice", "milk", "eggs"]), Resp::Integer(2));
    assert!(
        eventually(CONVERGE, || (2..=3).all(|id| members(cluster.node(id), "cart:alice") == ["eggs", "milk"])),
        "the first write did not reach every node"
    );

    // Cut node 1 from 2 and 3 (both directions).
    faults(n1, r#"{"cut":[2,3]}"#);
    faults(cluster.node(2), r#"{"cut":[1]}"#);
    faults(cluster.node(3), r#"{"cut":[1]}"#);

    // Both sides write; every write is acknowledged by its own node.
    let mut c1 = n1.raw();
    assert_eq!(c1.cmd(&["SREM", "cart:alice", "milk"]), Resp::Integer(1));
    assert_eq!(c1.cmd(&["INCRBY", "cart:visits", "5"]), Resp::Integer(5));
    assert_eq!(c1.cmd(&["SET", "cart:note", "from-1"]).text(), "OK");
    let mut c2 = cluster.node(2).raw();
    assert_eq!(c2.cmd(&["SADD", "cart:alice", "milk", "bread"]), Resp::Integer(1));
    assert_eq!(c2.cmd(&["INCRBY", "cart:visits", "7"]), Resp::Integer(7));
    let mut c3 = cluster.node(3).raw();
    assert_eq!(c3.cmd(&["DECRBY", "cart:visits", "2"]), Resp::Integer(5));
    assert_eq!(c3.cmd(&["SET", "cart:note", "from-3"]).text(), "OK");
    // Node 1 has not seen the other side.
    assert_eq!(members(n1, "cart:alice"), ["eggs"]);

    for id in 1..=3 {
        faults(cluster.node(id), "{}");
    }
    // Add wins over the concurrent remove; counters add up; the string is
    // last-writer-wins and the same everywhere.
    let converged = eventually(CONVERGE, || {
        (1..=3).all(|id| {
            let node = cluster.node(id);
            members(node, "cart:alice") == ["bread", "eggs", "milk"]
                && node.raw().cmd(&["GET", "cart:visits"]).text() == "10"
        })
    });
    assert!(converged, "nodes did not converge\n{}", cluster.stderrs());
    let notes: Vec<String> = (1..=3).map(|id| cluster.node(id).raw().cmd(&["GET", "cart:note"]).text()).collect();
    assert!(notes.iter().all(|n| *n == notes[0]), "{notes:?}");

    // The discarded string is in the conflict feed of a node that made the
    // decision, and counted.
    let feeds: Vec<String> = (1..=3).map(|id| cluster.node(id).admin_get("/conflicts")).collect();
    assert!(feeds.iter().any(|f| f.contains("cart:note") && f.contains("discarded")), "{feeds:?}");
    let metrics: String = (1..=3).map(|id| cluster.node(id).admin_get("/metrics")).collect();
    assert!(metrics.contains(r#"tandem_conflicts_total{keyspace="carts",policy="crdt"}"#), "{metrics}");
    match n1.raw().cmd(&["CONFLICTS", "COUNT", "5"]) {
        Resp::Array(_) => {}
        other => panic!("CONFLICTS: {other:?}"),
    }
}

#[test]
fn single_leader_keyspace_beside_a_multi_leader_one_still_refuses_writes_on_followers() {
    let cluster = cluster_with_carts();
    let mut leader = None;
    assert!(eventually(CONVERGE, || {
        leader = cluster.leader_id();
        leader.is_some()
    }));
    let follower = (1..=3).find(|id| Some(*id) != leader).unwrap();
    let mut c = cluster.node(follower).raw();
    let reply = c.cmd(&["SET", "plain", "1"]).text();
    assert!(reply.starts_with("READONLY"), "{reply}");
    // The same follower takes multi-leader writes.
    assert_eq!(c.cmd(&["SADD", "cart:bob", "tea"]), Resp::Integer(1));
    let reply = c.cmd(&["LPUSH", "cart:list", "x"]).text();
    assert!(reply.contains("keyspace 'carts'") && reply.contains("conflict crdt"), "{reply}");
}

#[test]
fn killed_node_keeps_acknowledged_writes_and_ships_its_unshipped_writes_on_return() {
    let mut cluster = cluster_with_carts();
    faults(cluster.node(3), r#"{"cut":[1,2]}"#);
    faults(cluster.node(1), r#"{"cut":[3]}"#);
    faults(cluster.node(2), r#"{"cut":[3]}"#);
    let mut c3 = cluster.node(3).raw();
    for i in 0..20 {
        assert_eq!(c3.cmd(&["SADD", "cart:carol", &format!("item{i}")]), Resp::Integer(1));
    }
    assert_eq!(c3.cmd(&["HSET", "cart:h", "qty", "3"]), Resp::Integer(1));
    // Node 3 dies before anything shipped; its peers never saw the writes.
    cluster.node_mut(3).kill9();
    assert_eq!(members(cluster.node(1), "cart:carol"), Vec::<String>::new());
    faults(cluster.node(1), "{}");
    faults(cluster.node(2), "{}");
    cluster.node_mut(3).restart();
    let n3 = cluster.node(3);
    assert_eq!(members(n3, "cart:carol").len(), 20, "acknowledged writes lost in the crash");
    assert_eq!(n3.raw().cmd(&["HGET", "cart:h", "qty"]).text(), "3");
    assert!(
        eventually(CONVERGE, || (1..=2).all(|id| members(cluster.node(id), "cart:carol").len() == 20
            && cluster.node(id).raw().cmd(&["HGET", "cart:h", "qty"]) == Resp::Bulk(b"3".to_vec()))),
        "node 3's writes did not ship after its restart\n{}",
        cluster.stderrs()
    );
    let state = engine_state(cluster.node(1));
    assert_eq!(state["origins"]["3"]["applied"], 21, "{state}");
}

fn info_multileader(node: &TestServer) -> String {
    node.raw().cmd(&["INFO", "multileader"]).text()
}

/// The value of `field` in the `INFO` line `line` (`name:a=1,b=2`).
fn info_field(info: &str, line: &str, field: &str) -> Option<u64> {
    let rest = info.lines().find_map(|l| l.strip_prefix(&format!("{line}:")))?;
    rest.split(',').find_map(|kv| kv.strip_prefix(&format!("{field}="))).and_then(|v| v.parse().ok())
}

#[test]
fn every_node_reports_per_origin_progress_and_lag_in_info_status_and_metrics() {
    let cluster = cluster_with_carts();
    let mut c1 = cluster.node(1).raw();
    for i in 0..4 {
        assert_eq!(c1.cmd(&["SADD", "cart:p", &format!("a{i}")]), Resp::Integer(1));
    }
    let mut c2 = cluster.node(2).raw();
    for i in 0..3 {
        assert!(matches!(c2.cmd(&["INCRBY", "cart:n", &i.to_string()]), Resp::Integer(_)));
    }
    // Every node applies 4 writes of origin 1 and 3 of origin 2, and says
    // so in INFO, /status and /metrics.
    for id in 1..=3 {
        let node = cluster.node(id);
        let caught_up = eventually(CONVERGE, || {
            let info = info_multileader(node);
            info_field(&info, "ml_carts_origin_1", "applied") == Some(4)
                && info_field(&info, "ml_carts_origin_2", "applied") == Some(3)
                && info_field(&info, "ml_carts_origin_2", "lag_entries") == Some(0)
        });
        assert!(caught_up, "node {id}: {}", info_multileader(node));
        let info = info_multileader(node);
        assert!(info.starts_with("# Multileader"), "{info}");
        assert_eq!(info_field(&info, "ml_carts_origin_3", "applied"), Some(0), "{info}");
        let status: serde_json::Value = serde_json::from_str(&node.admin_get("/status")).unwrap();
        let origins = &status["multi_leader"]["carts"]["origins"];
        assert_eq!(origins["1"]["applied"], 4, "{status}");
        assert_eq!(origins["2"]["applied"], 3, "{status}");
        assert!(origins["2"]["lag_ms"].is_u64(), "{status}");
        let metrics = eventually(CONVERGE, || {
            let m = node.admin_get("/metrics");
            m.contains(r#"tandem_origin_applied{keyspace="carts",origin="1"} 4"#)
                && m.contains(r#"tandem_origin_applied{keyspace="carts",origin="2"} 3"#)
                && m.contains(r#"tandem_origin_lag_entries{keyspace="carts",origin="1"} 0"#)
        });
        assert!(metrics, "node {id}: {}", node.admin_get("/metrics"));
    }
    // Cut node 3 off: node 1's writes wait for it, and node 1 reports how
    // many and for how long.
    faults(cluster.node(1), r#"{"cut":[3]}"#);
    faults(cluster.node(3), r#"{"cut":[1]}"#);
    for i in 0..5 {
        assert_eq!(c1.cmd(&["SADD", "cart:p", &format!("b{i}")]), Resp::Integer(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    let n1 = cluster.node(1);
    let behind = eventually(CONVERGE, || {
        let info = info_multileader(n1);
        info_field(&info, "ml_carts_peer_3", "unshipped") == Some(5)
            && info_field(&info, "ml_carts_peer_3", "unshipped_ms").is_some_and(|ms| ms >= 300)
            && info_field(&info, "ml_carts_peer_2", "unshipped") == Some(0)
    });
    assert!(behind, "{}", info_multileader(n1));
    let info3 = info_multileader(cluster.node(3));
    assert_eq!(info_field(&info3, "ml_carts_origin_1", "applied"), Some(4), "{info3}");
    faults(cluster.node(1), "{}");
    faults(cluster.node(3), "{}");
    let healed = eventually(CONVERGE, || {
        info_field(&info_multileader(cluster.node(3)), "ml_carts_origin_1", "applied") == Some(9)
            && info_field(&info_multileader(n1), "ml_carts_peer_3", "unshipped") == Some(0)
    });
    assert!(healed, "{}\n{}", info_multileader(n1), info_multileader(cluster.node(3)));
}
