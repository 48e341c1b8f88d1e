//! Leaderless keyspaces between real `tandem server` processes (issue 12):
//! three nodes, a keyspace with N=3 W=2 R=2 from the config file. Any node
//! coordinates any key; with one node killed (-9) reads and writes go on;
//! with two killed a write fails with the count of replicas it reached;
//! once the nodes are back, anti-entropy makes every node's Merkle digest
//! (`GET /keyspaces`) equal. A second keyspace with a sloppy quorum (N=2)
//! keeps hints for a killed node and hands them back when it returns. A
//! third test adds a fourth member to a control-plane cluster (`tandem
//! cluster add`): the keys whose preference list now holds it are streamed
//! to it (rebalancing) and the nodes that left them forget them.

mod common;

use std::time::Duration;

use common::cluster::{node_args, Cluster};
use common::{admin_request, eventually, free_ports, metric, tempdir, Resp, TestServer, FAULT_INJECTION};
use tandem_core::replica::leaderless::Ring;

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

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::tandem_bin()).args(args).output().expect("run tandem");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn adding_a_member_streams_its_keys_to_it_and_reads_from_it_see_them() {
    // Three control-plane nodes (no --leader), a keyspace with N=2 W=2 R=1.
    let extra =
        || vec![FAULT_INJECTION.to_string(), "--anti-entropy-interval-ms".to_string(), AE_INTERVAL_MS.to_string()];
    let c = Cluster::start(3, None, |_| extra());
    let admin = c.node(1).admin_addr().to_string();
    let created = eventually(CONVERGE, || {
        cli(&[
            "keyspace",
            "create",
            "rb",
            "--prefix",
            "rb:",
            "--mode",
            "leaderless",
            "--n",
            "2",
            "--w",
            "2",
            "--r",
            "1",
            "--admin",
            &admin,
        ])
        .0
    });
    assert!(created, "{}", cli(&["keyspace", "list", "--admin", &admin]).1);
    for id in 1..=3 {
        assert!(eventually(CONVERGE, || state(c.node(id), "rb").get("digest").is_some()), "node {id} runs no rb");
    }
    const KEYS: usize = 300;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("rb:{i}")).collect();
    let mut client = c.node(1).raw();
    for k in &keys {
        assert_eq!(client.cmd(&["SET", k, &format!("v-{k}")]), Resp::Simple("OK".into()), "{k}");
    }

    // A fourth node joins the cluster by command.
    let port4 = free_ports(1)[0];
    let members4 = (1..=3)
        .map(|i| format!("{i}=127.0.0.1:{}", c.peer_port(i)))
        .chain([format!("4=127.0.0.1:{port4}")])
        .collect::<Vec<_>>()
        .join(",");
    let dir4 = tempdir();
    let mut args4 = node_args(4, port4, &members4);
    args4.push("--join".into());
    args4.extend(extra());
    let refs: Vec<&str> = args4.iter().map(String::as_str).collect();
    let n4 = TestServer::try_start_bare(dir4.path(), &refs).unwrap_or_else(|f| panic!("node 4: {}", f.stderr));
    let (ok, out) = cli(&["cluster", "add", "4", &format!("127.0.0.1:{port4}"), "--admin", &admin]);
    assert!(ok, "tandem cluster add failed: {out}");

    // Node 4 ends up with exactly the keys whose preference list (N=2) on
    // the four-member ring holds it, and the others forget the keys they
    // left: every key is on exactly two nodes again.
    let ring = Ring::new(1..=4);
    let mine: Vec<&String> = keys.iter().filter(|k| ring.preference_list(k.as_bytes(), 2).contains(&4)).collect();
    assert!(mine.len() > KEYS / 4, "node 4 owns only {} of {KEYS} keys", mine.len());
    let nodes: Vec<&TestServer> = vec![c.node(1), c.node(2), c.node(3), &n4];
    let records = |n: &TestServer| state(n, "rb")["records"].as_u64().unwrap_or(0);
    let converged = eventually(CONVERGE, || {
        records(&n4) == mine.len() as u64 && nodes.iter().map(|n| records(n)).sum::<u64>() == 2 * KEYS as u64
    });
    let states: Vec<serde_json::Value> = nodes.iter().map(|n| state(n, "rb")).collect();
    assert!(converged, "node 4 should hold {} keys and all {} records: {states:?}", mine.len(), 2 * KEYS);
    for (id, n) in nodes.iter().enumerate() {
        let want = keys.iter().filter(|k| ring.preference_list(k.as_bytes(), 2).contains(&(id as u64 + 1))).count();
        assert_eq!(records(n), want as u64, "node {} holds other keys than it owns: {states:?}", id + 1);
    }
    let moved: f64 = nodes
        .iter()
        .map(|n| metric(&n.admin_get("/metrics"), "tandem_leaderless_rebalance_keys_total").unwrap_or(0.0))
        .sum();
    assert!(moved >= mine.len() as f64, "tandem_leaderless_rebalance_keys_total {moved} < {}", mine.len());

    // Reads with R=1 coordinated by node 4 with its links cut: only its own
    // replica can answer, and it has the data.
    let (code, text) = admin_request(n4.admin_addr(), "POST", "/faults", r#"{"cut":[1,2,3]}"#, None);
    assert_eq!(code, 200, "{text}");
    let mut r1 = n4.raw();
    assert_eq!(r1.cmd(&["CONSISTENCY", "W", "1", "R", "1"]), Resp::Simple("OK".into()));
    for k in &mine {
        assert_eq!(r1.cmd(&["GET", k]), Resp::Bulk(format!("v-{k}").into_bytes()), "{k} on node 4");
    }
}

fn faults(node: &TestServer, body: &str) {
    let (code, text) = admin_request(node.admin_addr(), "POST", "/faults", body, None);
    assert_eq!(code, 200, "POST /faults {body}: {text}");
}

/// This node's conflict-feed records of keyspace `keyspace` and `key`.
fn conflicts_of(node: &TestServer, keyspace: &str, key: &str) -> Vec<serde_json::Value> {
    let text = node.admin_get(&format!("/conflicts?keyspace={keyspace}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["conflicts"].as_array().cloned().unwrap_or_default().into_iter().filter(|c| c["key"] == key).collect()
}

#[test]
fn lww_loser_of_a_partition_is_in_the_conflict_feed_once_and_a_plain_overwrite_is_not() {
    let dir = common::tempdir();
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let path = config.to_str().unwrap().to_string();
    let c = Cluster::start(3, Some(1), |_| {
        vec![
            FAULT_INJECTION.into(),
            "--config".into(),
            path.clone(),
            "--anti-entropy-interval-ms".into(),
            AE_INTERVAL_MS.into(),
        ]
    });
    for id in 1..=3 {
        assert!(eventually(CONVERGE, || state(c.node(id), "carts").get("digest").is_some()), "node {id} runs no carts");
    }
    let converged = |c: &Cluster| {
        eventually(CONVERGE, || {
            let s: Vec<serde_json::Value> = (1..=3).map(|id| state(c.node(id), "carts")).collect();
            s[0]["digest"].is_string() && s.iter().all(|x| x["digest"] == s[0]["digest"])
        })
    };

    // An overwrite through another coordinator once every replica holds the
    // first value is no conflict.
    assert_eq!(c.node(1).raw().cmd(&["SET", "cart:plain", "a"]), Resp::Simple("OK".into()));
    assert!(converged(&c), "digests did not converge after the first write");
    assert_eq!(c.node(2).raw().cmd(&["SET", "cart:plain", "b"]), Resp::Simple("OK".into()));

    // Both sides of a partition write the same key.
    faults(c.node(1), r#"{"cut":[3]}"#);
    faults(c.node(2), r#"{"cut":[3]}"#);
    faults(c.node(3), r#"{"cut":[1,2]}"#);
    assert_eq!(c.node(1).raw().cmd(&["SET", "cart:both", "left"]), Resp::Simple("OK".into()));
    let mut lonely = c.node(3).raw();
    assert_eq!(lonely.cmd(&["CONSISTENCY", "W", "1", "R", "1"]), Resp::Simple("OK".into()));
    std::thread::sleep(Duration::from_millis(5)); // a later wall-clock ms: "right" wins
    assert_eq!(lonely.cmd(&["SET", "cart:both", "right"]), Resp::Simple("OK".into()));
    for id in 1..=3 {
        faults(c.node(id), "{}");
    }
    // Anti-entropy (and read repair) bring the two versions together.
    assert!(converged(&c), "digests did not converge after the heal");
    for id in 1..=3 {
        assert_eq!(c.node(id).raw().cmd(&["GET", "cart:both"]), Resp::Bulk(b"right".to_vec()), "node {id}");
    }
    // Each node that discarded "left" records it once (nodes 1 and 2 held
    // it; node 3 may never have seen it); at least one did.
    let mut recorded = 0;
    for id in 1..=3 {
        let feed = conflicts_of(c.node(id), "carts", "cart:both");
        assert!(feed.len() <= 1, "node {id} recorded the loser more than once: {feed:?}");
        for rec in &feed {
            assert_eq!(rec["policy"], "lww");
            assert_eq!(rec["outcome"], "discarded");
            assert_eq!(rec["versions"][0]["value"], "right");
            assert_eq!(rec["versions"][0]["kept"], true);
            assert_eq!(rec["versions"][1]["value"], "left");
            assert_eq!(rec["versions"][1]["kept"], false);
            assert_eq!(rec["versions"][1]["origin"], 1);
        }
        recorded += feed.len();
        assert!(conflicts_of(c.node(id), "carts", "cart:plain").is_empty(), "node {id}: a plain overwrite in the feed");
        let metrics = c.node(id).admin_get("/metrics");
        let counted = metric(&metrics, r#"tandem_conflicts_total{keyspace="carts",policy="lww"}"#).unwrap_or(0.0);
        assert_eq!(counted as usize, feed.len(), "node {id}: metric and feed disagree");
        if !feed.is_empty() {
            // The CONFLICTS command shows the same feed.
            match c.node(id).raw().cmd(&["CONFLICTS"]) {
                Resp::Array(items) => assert!(
                    items.iter().any(|i| i.text().contains("cart:both") && i.text().contains("left")),
                    "{items:?}"
                ),
                other => panic!("CONFLICTS answered {other:?}"),
            }
        }
    }
    assert!(recorded >= 1, "no node recorded the discarded version");
}
