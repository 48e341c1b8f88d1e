//! Leaderless keyspaces between real `tandem server` processes (issue 12):
//! three nodes, a keyspace with N=3 W=2 R=2 from the config file. Any node
//! coordinates any key; with one node killed (-9) reads and writes go on;
//! with two killed a write fails with the count of replicas it reached;
//! once the nodes are back, anti-entropy makes every node's Merkle digest
//! (`GET /keyspaces`) equal. A second keyspace with a sloppy quorum (N=2)
//! keeps hints for a killed node and hands them back when it returns.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{eventually, metric, Resp, TestServer};

/// Anti-entropy interval the nodes run with in these tests.
const AE_INTERVAL_MS: &str = "300";
/// Bound for engines to come up and for anti-entropy to converge.
const CONVERGE: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[[keyspace]]
name = "carts"
prefix = "cart:"
mode = "leaderless"
n = 3
w = 2
r = 2

[[keyspace]]
name = "hinted"
prefix = "h:"
mode = "leaderless"
n = 2
w = 2
r = 1
sloppy = true
"#;

fn start_cluster() -> (Cluster, tempfile::TempDir) {
    let dir = common::tempdir();
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let path = config.to_str().unwrap().to_string();
    let c = Cluster::start(3, Some(1), |_| {
        vec!["--config".into(), path.clone(), "--anti-entropy-interval-ms".into(), AE_INTERVAL_MS.into()]
    });
    for id in 1..=3 {
        let up = eventually(CONVERGE, || state(c.node(id), "carts").get("digest").is_some());
        assert!(up, "node {id} runs no carts replica: {}", c.node(id).admin_get("/keyspaces"));
    }
    (c, dir)
}

/// This node's `state` object of keyspace `name` in `GET /keyspaces`.
fn state(node: &TestServer, name: &str) -> serde_json::Value {
    let Ok(text) = common::http_get(node.admin_addr(), "/keyspaces") else { return serde_json::Value::Null };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["keyspaces"]
        .as_array()
        .and_then(|ks| ks.iter().find(|k| k["name"] == name))
        .map(|k| k["state"].clone())
        .unwrap_or_default()
}

fn error_of(r: Resp) -> String {
    match r {
        Resp::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn any_node_coordinates_one_down_goes_on_two_down_fails_with_the_count_and_digests_converge() {
    let (mut c, _dir) = start_cluster();
    // Any node coordinates: write on one, read on the others.
    assert_eq!(c.node(1).raw().cmd(&["SET", "cart:1", "apple"]), Resp::Simple("OK".into()));
    for id in [2, 3] {
        assert_eq!(c.node(id).raw().cmd(&["GET", "cart:1"]), Resp::Bulk(b"apple".to_vec()));
    }
    assert_eq!(c.node(2).raw().cmd(&["INCRBY", "cart:n", "5"]), Resp::Integer(5));
    assert_eq!(c.node(3).raw().cmd(&["INCR", "cart:n"]), Resp::Integer(6));
    assert_eq!(c.node(3).raw().cmd(&["SET", "cart:gone", "x", "PX", "60000"]), Resp::Simple("OK".into()));
    assert_eq!(c.node(1).raw().cmd(&["DEL", "cart:gone", "cart:never"]), Resp::Integer(1));
    assert_eq!(c.node(2).raw().cmd(&["EXISTS", "cart:1", "cart:gone"]), Resp::Integer(1));
    // Not a leaderless command: a clear error naming the keyspace.
    let e = error_of(c.node(1).raw().cmd(&["LPUSH", "cart:l", "a"]));
    assert!(e.contains("not supported on leaderless keyspace 'carts'"), "{e}");
    // The default keyspace never sees these keys.
    assert_eq!(c.node(1).raw().cmd(&["DBSIZE"]), Resp::Integer(0));

    // One node down: N - max(W, R) = 1, so reads and writes go on anywhere.
    c.node_mut(3).kill9();
    assert_eq!(c.node(1).raw().cmd(&["SET", "cart:2", "pear"]), Resp::Simple("OK".into()));
    assert_eq!(c.node(2).raw().cmd(&["GET", "cart:2"]), Resp::Bulk(b"pear".to_vec()));
    assert_eq!(c.node(2).raw().cmd(&["GET", "cart:1"]), Resp::Bulk(b"apple".to_vec()));
    // A stricter W for this connection cannot be met with one node down.
    let mut strict = c.node(1).raw();
    assert_eq!(strict.cmd(&["CONSISTENCY", "W", "3", "R", "1"]), Resp::Simple("OK".into()));
    let e = error_of(strict.cmd(&["SET", "cart:3", "plum"]));
    assert!(e.starts_with("NOQUORUM the write reached 2 of 3 replicas, 3 required"), "{e}");

    // Two nodes down: the write reaches this node only and says so.
    c.node_mut(2).kill9();
    let e = error_of(c.node(1).raw().cmd(&["SET", "cart:4", "fig"]));
    assert!(e.starts_with("NOQUORUM the write reached 1 of 3 replicas, 2 required"), "{e}");
    let e = error_of(c.node(1).raw().cmd(&["GET", "cart:1"]));
    assert!(e.starts_with("NOQUORUM the read heard from 1 of 3 replicas, 2 required"), "{e}");
    let metrics = c.node(1).admin_get("/metrics");
    assert!(metric(&metrics, "tandem_leaderless_noquorum_total").unwrap_or(0.0) >= 2.0, "{metrics}");

    // Back up: anti-entropy brings every replica to the same digest, the
    // write that reached one replica included (it was not rolled back).
    c.node_mut(2).restart();
    c.node_mut(3).restart();
    let converged = eventually(CONVERGE, || {
        let s: Vec<serde_json::Value> = (1..=3).map(|id| state(c.node(id), "carts")).collect();
        s[0]["digest"].is_string() && s.iter().all(|x| x["digest"] == s[0]["digest"] && x["keys"] == s[0]["keys"])
    });
    let states: Vec<serde_json::Value> = (1..=3).map(|id| state(c.node(id), "carts")).collect();
    assert!(converged, "digests did not converge: {states:?}");
    assert_eq!(states[0]["keys"], 5, "{states:?}"); // cart:1, n, 2, 3, 4; not cart:gone
    assert_eq!(c.node(3).raw().cmd(&["GET", "cart:4"]), Resp::Bulk(b"fig".to_vec()));
    assert_eq!(c.node(3).raw().cmd(&["GET", "cart:gone"]), Resp::Nil);
    let total = |series: &str| -> f64 {
        (1..=3).map(|id| metric(&c.node(id).admin_get("/metrics"), series).unwrap_or(0.0)).sum()
    };
    assert!(total("tandem_leaderless_anti_entropy_rounds_total") > 0.0);
    assert!(total("tandem_leaderless_anti_entropy_keys_total") > 0.0, "anti-entropy exchanged no key");
}

#[test]
fn sloppy_quorum_keeps_hints_for_a_dead_replica_and_hands_them_back() {
    let (mut c, _dir) = start_cluster();
    c.node_mut(3).kill9();
    // N=2 W=2: every key whose preference list holds node 3 needs a
    // fallback node (the third) to take its write as a hint.
    for i in 0..20 {
        let key = format!("h:{i}");
        assert_eq!(c.node(1).raw().cmd(&["SET", &key, "v"]), Resp::Simple("OK".into()), "{key}");
    }
    let hints: u64 = (1..=2).map(|id| state(c.node(id), "hinted")["hints"].as_u64().unwrap_or(0)).sum();
    assert!(hints > 0, "no hints stored for node 3");
    c.node_mut(3).restart();
    let delivered = eventually(CONVERGE, || {
        (1..=2).all(|id| state(c.node(id), "hinted")["hints"] == 0)
            && state(c.node(3), "hinted")["keys"].as_u64() == Some(hints)
    });
    assert!(
        delivered,
        "hints not handed back: {:?}",
        (1..=3).map(|id| state(c.node(id), "hinted")).collect::<Vec<_>>()
    );
    let handed: f64 = (1..=2)
        .map(|id| metric(&c.node(id).admin_get("/metrics"), "tandem_leaderless_hints_delivered_total").unwrap_or(0.0))
        .sum();
    assert_eq!(handed as u64, hints);
}
