//! Leader discovery for Redis clients (issue 17): every node answers the
//! Sentinel commands, `+switch-master` is published on failover, redis-py's
//! `Sentinel` follows a failover, and `REPLICAOF host <client port>` is
//! refused with a clear error instead of a silent OK.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, ELECT};
use common::{eventually, Raw, Resp, TestServer};

/// `SENTINEL get-master-addr-by-name NAME` on `server` as "ip:port".
fn master_addr(server: &TestServer, name: &str) -> Option<String> {
    match Raw::try_connect(server.client_addr()).ok()?.try_cmd(&["SENTINEL", "get-master-addr-by-name", name]).ok()? {
        Resp::Array(items) => match &items[..] {
            [Resp::Bulk(ip), Resp::Bulk(port)] => {
                Some(format!("{}:{}", String::from_utf8_lossy(ip), String::from_utf8_lossy(port)))
            }
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn every_node_names_the_leader_to_sentinel_clients_and_publishes_switch_master_on_failover() {
    let mut c = Cluster::start(3, None, |_| vec!["--sentinel-name".into(), "orders".into()]);
    let old = c.wait_leader(None);
    let old_addr = c.node(old).client_addr().to_string();
    for id in 1..=3u64 {
        assert!(
            eventually(ELECT, || master_addr(c.node(id), "orders").as_deref() == Some(old_addr.as_str())),
            "node {id} does not name the leader {old_addr}: {:?}\n{}",
            master_addr(c.node(id), "orders"),
            c.stderrs()
        );
        assert_eq!(master_addr(c.node(id), "tandem"), None, "an unknown service name has no master");
    }
    // The redis crate speaks to it like to a Sentinel.
    let mut conn = c.node(old).conn();
    let masters: Vec<Vec<String>> = redis::cmd("SENTINEL").arg("masters").query(&mut conn).unwrap();
    assert_eq!(masters.len(), 1);
    let m = &masters[0];
    let field = |k: &str| m.iter().position(|x| x == k).map(|i| m[i + 1].clone());
    assert_eq!(field("name").as_deref(), Some("orders"));
    assert_eq!(field("flags").as_deref(), Some("master"));
    assert_eq!(format!("{}:{}", field("ip").unwrap(), field("port").unwrap()), old_addr);
    assert!(
        eventually(ELECT, || {
            let r: Vec<Vec<String>> =
                redis::cmd("SENTINEL").arg("replicas").arg("orders").query(&mut conn).unwrap_or_default();
            r.len() == 2 && r.iter().all(|s| s.contains(&"slave".to_string()))
        }),
        "the leader lists its two replicas"
    );
    let slaves: Vec<Vec<String>> = redis::cmd("SENTINEL").arg("slaves").arg("orders").query(&mut conn).unwrap();
    assert_eq!(slaves.len(), 2);
    let sentinels: Vec<Vec<String>> = redis::cmd("SENTINEL").arg("sentinels").arg("orders").query(&mut conn).unwrap();
    assert!(sentinels.is_empty());
    let master: Vec<String> = redis::cmd("SENTINEL").arg("master").arg("orders").query(&mut conn).unwrap();
    assert!(master.contains(&"orders".to_string()), "{master:?}");

    // A follower's subscriber hears the switch.
    let watcher = (1..=3u64).find(|&id| id != old).unwrap();
    let client = redis::Client::open(c.node(watcher).url()).unwrap();
    let mut sub_conn = client.get_connection().unwrap();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe("+switch-master").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    c.node_mut(old).kill9();
    let new = c.wait_leader(Some(old));
    let new_addr = c.node(new).client_addr().to_string();
    let deadline = Instant::now() + ELECT;
    let mut heard = None;
    while Instant::now() < deadline && heard.is_none() {
        if let Ok(msg) = pubsub.get_message() {
            assert_eq!(msg.get_channel_name(), "+switch-master");
            heard = Some(msg.get_payload::<String>().unwrap());
        }
    }
    let (old_ip, old_port) = old_addr.rsplit_once(':').unwrap();
    let (new_ip, new_port) = new_addr.rsplit_once(':').unwrap();
    assert_eq!(heard, Some(format!("orders {old_ip} {old_port} {new_ip} {new_port}")), "{}", c.stderrs());
    assert!(eventually(ELECT, || master_addr(c.node(watcher), "orders").as_deref() == Some(new_addr.as_str())));
}

#[test]
fn replicaof_a_client_port_is_refused_with_a_clear_error() {
    let c = Cluster::three(&[]);
    let leader_client = c.node(1).client_addr();
    let reply = c.node(2).raw().cmd(&["REPLICAOF", &leader_client.ip().to_string(), &leader_client.port().to_string()]);
    match reply {
        Resp::Error(e) => {
            assert!(e.contains("not the peer address of a cluster member") && e.contains("client port"), "{e}")
        }
        other => panic!("REPLICAOF <client port> answered {other:?}"),
    }
    // The peer port works.
    let reply = c.node(2).raw().cmd(&["REPLICAOF", "127.0.0.1", &c.peer_port(1).to_string()]);
    assert_eq!(reply, Resp::Simple("OK".into()));
}

const REDIS_PY_SCRIPT: &str = r#"
import sys, time
from redis.sentinel import Sentinel
nodes = [(h, int(p)) for h, p in (a.rsplit(":", 1) for a in sys.argv[1].split(","))]
sentinel = Sentinel(nodes, socket_timeout=1.0)
print("MASTER %s:%d" % sentinel.discover_master("tandem"), flush=True)
print("REPLICAS %d" % len(sentinel.discover_slaves("tandem")), flush=True)
master = sentinel.master_for("tandem", socket_timeout=1.0)
master.set("before", "1")
print("WROTE", flush=True)
sys.stdin.readline()  # the test kills the leader, then says go
deadline = time.time() + 30
while True:
    try:
        master.set("after", "2")
        break
    except Exception as e:
        if time.time() > deadline:
            raise
        time.sleep(0.1)
print("MASTER %s:%d" % sentinel.discover_master("tandem"), flush=True)
print("AFTER %s" % master.get("after").decode(), flush=True)
"#;

/// True if `python3 -c "import redis"` works, installing redis-py with pip
/// if it is missing and pip can reach PyPI.
fn redis_py_available() -> bool {
    let has = || {
        std::process::Command::new("python3")
            .args(["-c", "import redis.sentinel"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has() {
        return true;
    }
    let _ = std::process::Command::new("python3").args(["-m", "pip", "install", "-q", "redis"]).output();
    has()
}

#[test]
fn redis_py_sentinel_finds_the_leader_and_follows_a_failover() {
    if !redis_py_available() {
        eprintln!("SKIPPED: redis-py is not installed and `pip install redis` could not reach PyPI");
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    let mut c = Cluster::start(3, None, |_| Vec::new());
    let old = c.wait_leader(None);
    let old_addr = c.node(old).client_addr().to_string();
    assert!(eventually(ELECT, || (1..=3).all(|id| master_addr(c.node(id), "tandem").is_some())));
    let mut py = std::process::Command::new("python3")
        .args(["-c", REDIS_PY_SCRIPT, &c.client_addrs()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(py.stdout.take().unwrap());
    let mut line = || {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim().to_string()
    };
    assert_eq!(line(), format!("MASTER {old_addr}"));
    let replicas = line();
    assert!(replicas.starts_with("REPLICAS "), "{replicas}");
    assert_eq!(line(), "WROTE");
    c.node_mut(old).kill9();
    let new = c.wait_leader(Some(old));
    writeln!(py.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(line(), format!("MASTER {}", c.node(new).client_addr()));
    assert_eq!(line(), "AFTER 2");
    assert!(py.wait().unwrap().success());
}
