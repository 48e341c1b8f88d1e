//! The control plane between real `tandem server` processes: nodes started
//! with `--members` and no `--leader` elect one Raft leader among themselves,
//! and membership changes by command (`tandem cluster add/remove`) keep the
//! map. Peer ports are fixed per cluster (named in `--members`); client and
//! admin ports are picked by the kernel. Every wait is a bounded poll.

mod common;

use std::time::Duration;

use common::{eventually, free_ports, tempdir, TestServer};

/// How long the group may take to elect and agree (2 shared cores).
const CONVERGE: Duration = Duration::from_secs(20);

fn cluster_json(node: &TestServer) -> Option<serde_json::Value> {
    common::http_get(node.admin_addr(), "/cluster").ok().and_then(|b| serde_json::from_str(&b).ok())
}

/// The Raft leader every node in `nodes` agrees on, if they do.
fn agreed_leader(nodes: &[&TestServer]) -> Option<u64> {
    let leaders: Vec<Option<u64>> =
        nodes.iter().map(|n| cluster_json(n).and_then(|v| v["status"]["raft_leader"].as_u64())).collect();
    let first = leaders[0]?;
    leaders.iter().all(|l| *l == Some(first)).then_some(first)
}

fn server_args(id: u64, peer_port: u16, members: &str, extra: &[&str]) -> Vec<String> {
    let mut args = common::cluster::node_args(id, peer_port, members);
    args.extend(["--cluster-secret".into(), "control-test".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start(dir: &std::path::Path, args: &[String]) -> TestServer {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    match TestServer::try_start_bare(dir, &refs) {
        Ok(s) => s,
        Err(f) => panic!("node did not become ready (exit status {:?}); its stderr:\n{}", f.status, f.stderr),
    }
}

fn cli(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(common::tandem_bin()).args(args).output().expect("run tandem");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Authenticates as node 99 on node 1's peer port with `secret`, then
/// sends `ControlHello` and one `ControlRequest`; returns the first frame
/// the node answers, or the handshake's error.
fn control_hello_answer(peer_port: u16, secret: Option<&str>) -> Result<Option<tandem_core::repl::PeerMsg>, String> {
    use tandem_core::repl::PeerMsg;
    let mut s = common::peer_connect(peer_port, 99, 1, secret)?;
    // Not a valid RPC body: the node must answer with an error, not close.
    let msgs = [
        PeerMsg::ControlHello { node_id: 99 },
        PeerMsg::ControlRequest { id: 7, body: bytes::Bytes::from_static(b"\xff\xff") },
    ];
    Ok(common::peer_exchange(&mut s, &msgs))
}

#[test]
fn control_three_servers_without_leader_elect_one_raft_leader_and_change_membership() {
    let ports = free_ports(4);
    let members3 = (1..=3).map(|i| format!("{i}=127.0.0.1:{}", ports[i - 1])).collect::<Vec<_>>().join(",");
    let dirs: Vec<_> = (0..4).map(|_| tempdir()).collect();
    let nodes: Vec<TestServer> = (1..=3u64)
        .map(|id| start(dirs[id as usize - 1].path(), &server_args(id, ports[id as usize - 1], &members3, &[])))
        .collect();
    let refs: Vec<&TestServer> = nodes.iter().collect();
    assert!(
        eventually(CONVERGE, || agreed_leader(&refs).is_some()),
        "no agreed Raft leader; /cluster answers: {:?}",
        refs.iter().map(|n| cluster_json(n)).collect::<Vec<_>>()
    );
    let leader = agreed_leader(&refs).unwrap();
    assert!((1..=3).contains(&leader));
    for n in &nodes {
        let v = cluster_json(n).unwrap();
        assert_eq!(v["status"]["voters"], serde_json::json!([1, 2, 3]), "{v}");
        assert_eq!(v["map"]["members"].as_object().map(|m| m.len()), Some(3), "{v}");
        assert!(n.stderr().contains("waiting for the control plane to choose a leader"));
    }
    // The failover orchestrator then places the data leader in the map.
    assert!(
        eventually(CONVERGE, || cluster_json(&nodes[0]).is_some_and(|v| !v["map"]["leader"].is_null())),
        "no data leader in the map: {:?}",
        cluster_json(&nodes[0])
    );

    // The peer port hands control connections to the control plane only
    // with the right cluster secret.
    use tandem_core::repl::PeerMsg;
    match control_hello_answer(ports[0], Some("wrong")) {
        Err(e) => assert!(e.contains("did not prove it holds the cluster secret"), "{e}"),
        other => panic!("a wrong secret was not refused: {other:?}"),
    }
    match control_hello_answer(ports[0], Some("control-test")) {
        Ok(Some(PeerMsg::ControlResponse { id: 7, body })) => assert!(!body.is_empty()),
        other => panic!("no control answer with the right secret: {other:?}"),
    }

    // A fourth node joins by command, through a follower's admin port.
    let members4 = format!("{members3},4=127.0.0.1:{}", ports[3]);
    let n4 = start(dirs[3].path(), &server_args(4, ports[3], &members4, &["--join"]));
    let via = nodes.iter().find(|n| cluster_json(n).unwrap()["status"]["state"] != "leader").unwrap();
    let via_admin = via.admin_addr().to_string();
    let (ok, out) = cli(&["cluster", "add", "4", &format!("127.0.0.1:{}", ports[3]), "--admin", &via_admin]);
    assert!(ok, "tandem cluster add failed: {out}");
    assert!(
        eventually(CONVERGE, || cluster_json(&n4)
            .is_some_and(|v| v["status"]["voters"] == serde_json::json!([1, 2, 3, 4])
                && v["map"]["members"].as_object().is_some_and(|m| m.len() == 4))),
        "node 4 did not join: {:?}",
        cluster_json(&n4)
    );

    // The data plane follows the map: node 4 receives writes.
    let data_leader = cluster_json(&n4).unwrap()["map"]["leader"].as_u64().unwrap();
    let leader_node = if data_leader == 4 { &n4 } else { &nodes[data_leader as usize - 1] };
    assert!(
        eventually(CONVERGE, || matches!(
            leader_node.raw().cmd(&["SET", "joined", "yes"]),
            common::Resp::Simple(ref s) if s == "OK"
        )),
        "the data leader does not accept writes after the join"
    );
    assert!(
        eventually(CONVERGE, || matches!(n4.raw().cmd(&["GET", "joined"]), common::Resp::Bulk(ref b) if b == b"yes")),
        "node 4 did not receive the write\n{}",
        n4.stderr()
    );

    // Remove node 1; the rest keep one leader and the map.
    let (ok, out) = cli(&["cluster", "remove", "1", "--admin", &n4.admin_addr().to_string()]);
    assert!(ok, "tandem cluster remove failed: {out}");
    let rest: Vec<&TestServer> = vec![&nodes[1], &nodes[2], &n4];
    assert!(eventually(CONVERGE, || agreed_leader(&rest).is_some_and(|l| l != 1)), "no leader after removal");
    let (ok, out) = cli(&["cluster", "show", "--admin", &n4.admin_addr().to_string()]);
    assert!(ok && out.contains("\"voters\""), "{out}");
    let v = cluster_json(&n4).unwrap();
    assert_eq!(v["status"]["voters"], serde_json::json!([2, 3, 4]), "{v}");
    assert_eq!(v["map"]["members"].as_object().map(|m| m.len()), Some(3), "{v}");
}
