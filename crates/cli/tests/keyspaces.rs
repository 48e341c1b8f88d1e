//! Keyspaces between real `tandem server` processes: a keyspace created at
//! run time through one node's admin port is in force on every node, its
//! writes wait for its own ack policy while the default keyspace keeps the
//! node's, a command spanning keyspaces is refused whole, and a keyspace
//! that holds keys is dropped only with `--force`. Also the static setup:
//! `[[keyspace]]` tables in the config file of a node without a control
//! plane. Every wait is a bounded poll.

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::{eventually, TestServer};

/// How long the cluster may take to elect a leader and agree on the map.
const CONVERGE: Duration = Duration::from_secs(20);

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::tandem_bin()).args(args).output().expect("run tandem");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn keyspaces_json(node: &TestServer) -> serde_json::Value {
    serde_json::from_str(&node.admin_get("/keyspaces")).expect("/keyspaces is JSON")
}

fn keyspace_names(node: &TestServer) -> Vec<String> {
    keyspaces_json(node)["keyspaces"]
        .as_array()
        .expect("a keyspaces array")
        .iter()
        .map(|k| k["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The node `ROLE` calls master, once exactly one does.
fn leader_of(cluster: &Cluster) -> Option<u64> {
    let masters: Vec<u64> = (1..=cluster.nodes.len() as u64)
        .filter(|&id| {
            let mut c = cluster.node(id).raw();
            matches!(c.cmd(&["ROLE"]), common::Resp::Array(v) if v.first().map(|r| r.text()).as_deref() == Some("master"))
        })
        .collect();
    (masters.len() == 1).then(|| masters[0])
}

#[test]
fn keyspace_created_at_run_time_is_listed_everywhere_and_its_ack_policy_is_its_own() {
    let cluster = Cluster::start(3, None, |_| vec!["--ack-timeout-ms".into(), "1500".into()]);
    let mut leader = None;
    assert!(
        eventually(CONVERGE, || {
            leader = leader_of(&cluster);
            leader.is_some()
        }),
        "no leader elected\n{}",
        cluster.stderrs()
    );
    let leader = leader.unwrap();
    let admin = cluster.node(1).admin_addr().to_string();
    let (ok, out) = cli(&[
        "keyspace",
        "create",
        "inventory",
        "--prefix",
        "inv:",
        "--ack",
        "any 2",
        "--ack-level",
        "apply",
        "--admin",
        &admin,
    ]);
    assert!(ok, "keyspace create failed: {out}");
    for id in 1..=3 {
        let node = cluster.node(id);
        assert!(
            eventually(CONVERGE, || keyspace_names(node) == ["default", "inventory"]),
            "node {id} does not list the new keyspace: {}",
            node.admin_get("/keyspaces")
        );
    }
    let json = keyspaces_json(cluster.node(2));
    let inv = &json["keyspaces"][1];
    assert_eq!(inv["prefix"], "inv:");
    assert_eq!(inv["mode"], "single-leader");
    assert_eq!(inv["policy"]["ack"], "any 2");
    assert_eq!(inv["policy"]["ack_level"], "apply");
    assert_eq!(inv["state"]["leader"].as_u64(), Some(leader), "{json}");

    // With every follower up, both keyspaces take writes.
    let mut c = cluster.node(leader).raw();
    assert!(eventually(CONVERGE, || c.cmd(&["SET", "inv:apples", "10"]).text() == "OK"));
    assert_eq!(c.cmd(&["SET", "plain", "1"]).text(), "OK");

    // A command whose keys span two keyspaces is refused and changes nothing.
    let reply = c.cmd(&["MSET", "plain", "2", "inv:pears", "3"]).text();
    assert!(reply.starts_with("CROSSSLOT"), "{reply}");
    assert!(reply.contains("'default'") && reply.contains("'inventory'"), "{reply}");
    assert_eq!(c.cmd(&["GET", "plain"]).text(), "1");
    assert_eq!(c.cmd(&["EXISTS", "inv:pears"]), common::Resp::Integer(0));

    // One follower down: `any 2` writes fail with NOREPLICAS, default
    // (async) writes still succeed.
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    let mut cluster = cluster;
    cluster.node_mut(follower).kill9();
    let mut c = cluster.node(leader).raw();
    let reply = c.cmd(&["SET", "inv:apples", "9"]).text();
    assert!(reply.starts_with("NOREPLICAS"), "an `any 2` write with one follower down answered {reply:?}");
    assert!(reply.contains("1 of the 2"), "{reply}");
    assert_eq!(c.cmd(&["SET", "plain", "3"]).text(), "OK");
}

#[test]
fn keyspace_holding_keys_is_dropped_only_with_force_and_its_keys_stay() {
    let cluster = Cluster::start(3, None, |_| Vec::new());
    let mut leader = None;
    assert!(eventually(CONVERGE, || {
        leader = leader_of(&cluster);
        leader.is_some()
    }));
    let leader = leader.unwrap();
    let admin = cluster.node(leader).admin_addr().to_string();
    let (ok, out) = cli(&["keyspace", "create", "carts", "--prefix", "cart:", "--admin", &admin]);
    assert!(ok, "{out}");
    // Refused: bad names, taken prefixes, unmeetable policies.
    let (ok, out) = cli(&["keyspace", "create", "carts2", "--prefix", "cart:", "--admin", &admin]);
    assert!(!ok && out.contains("prefix"), "{out}");
    let (ok, out) = cli(&["keyspace", "create", "big", "--prefix", "b:", "--ack", "any 3", "--admin", &admin]);
    assert!(!ok && out.contains("any 3"), "{out}");

    let mut c = cluster.node(leader).raw();
    assert!(eventually(CONVERGE, || c.cmd(&["SET", "cart:1", "socks"]).text() == "OK"));
    let (ok, out) = cli(&["keyspace", "drop", "carts", "--admin", &admin]);
    assert!(!ok && out.contains("holds 1 keys"), "{out}");
    let (ok, out) = cli(&["keyspace", "drop", "carts", "--force", "--admin", &admin]);
    assert!(ok, "{out}");
    assert_eq!(keyspace_names(cluster.node(leader)), ["default"]);
    assert_eq!(c.cmd(&["GET", "cart:1"]).text(), "socks");
    let (ok, out) = cli(&["keyspace", "drop", "carts", "--admin", &admin]);
    assert!(!ok && out.contains("no keyspace"), "{out}");
}

#[test]
fn keyspaces_from_the_config_file_rule_a_node_without_a_control_plane() {
    let dir = common::tempdir();
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, "[[keyspace]]\nname = \"carts\"\nprefix = \"cart:\"\nack = \"async\"\n").unwrap();
    let data = common::tempdir();
    let node = TestServer::start(data.path(), &["--config", config.to_str().unwrap()]);
    assert_eq!(keyspace_names(&node), ["default", "carts"]);
    assert_eq!(keyspaces_json(&node)["source"], "config file");
    let mut c = node.raw();
    assert_eq!(c.cmd(&["SET", "cart:1", "x"]).text(), "OK");
    assert!(c.cmd(&["MGET", "cart:1", "other"]).text().starts_with("CROSSSLOT"));
    // Keys announced by a count are routed too.
    assert!(c.cmd(&["ZUNIONSTORE", "cart:out", "2", "cart:a", "other"]).text().starts_with("CROSSSLOT"));
    assert!(c.cmd(&["LMPOP", "2", "cart:a", "other", "LEFT"]).text().starts_with("CROSSSLOT"));
    assert_eq!(c.cmd(&["ZUNIONSTORE", "cart:out", "1", "cart:a"]), common::Resp::Integer(0));
    // Run-time changes need the control plane: refused with the reason.
    let (ok, out) = cli(&["keyspace", "create", "x", "--prefix", "x:", "--admin", &node.admin_addr().to_string()]);
    assert!(!ok && out.contains("config file"), "{out}");
}
