//! A cluster of `tandem server` processes on loopback for process tests:
//! fixed peer ports (named in `--members`), kernel-picked client and admin
//! ports, one temporary data directory per node; static roles (`--leader`)
//! or automatic failover (no `--leader`).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{eventually, free_ports, tempdir, Raw, Resp, TestServer};

/// The flags of cluster node `id`: kernel-picked client and admin ports,
/// the fixed peer port that `members` names.
pub fn node_args(id: u64, peer_port: u16, members: &str) -> Vec<String> {
    vec![
        "--node-id".into(),
        id.to_string(),
        "--client-addr".into(),
        "127.0.0.1:0".into(),
        "--admin-addr".into(),
        "127.0.0.1:0".into(),
        "--peer-addr".into(),
        format!("127.0.0.1:{peer_port}"),
        "--members".into(),
        members.into(),
    ]
}

/// How long a follower may take to (re)connect and stream.
pub const CONNECT: Duration = Duration::from_secs(15);
/// Generous bound for an election or a failover to complete on a loaded
/// 2-vCPU test machine.
pub const ELECT: Duration = Duration::from_secs(20);

/// A cluster of `tandem server` processes; node `id` is `nodes[id - 1]`.
pub struct Cluster {
    /// Node `id` is `nodes[id - 1]`.
    pub nodes: Vec<TestServer>,
    peer_ports: Vec<u16>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Starts `n` nodes led by `leader` (`None`: automatic failover, the
    /// nodes elect one); `extra(id)` gives node `id`'s own flags. Retries
    /// with new ports if a port was taken meanwhile.
    pub fn start(n: usize, leader: Option<u64>, extra: impl Fn(u64) -> Vec<String>) -> Cluster {
        let mut last = String::new();
        for _attempt in 0..5 {
            let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempdir()).collect();
            let peer_ports = free_ports(n);
            let members = peer_ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
                .collect::<Vec<_>>()
                .join(",");
            let mut nodes = Vec::new();
            let mut failure = None;
            for id in 1..=n as u64 {
                let mut args = node_args(id, peer_ports[id as usize - 1], &members);
                if let Some(l) = leader {
                    args.extend(["--leader".into(), l.to_string()]);
                }
                args.extend(extra(id));
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                match TestServer::try_start_bare(dirs[id as usize - 1].path(), &refs) {
                    Ok(s) => nodes.push(s),
                    Err(f) => {
                        failure = Some((id, f));
                        break;
                    }
                }
            }
            match failure {
                None => return Cluster { nodes, peer_ports, _dirs: dirs },
                Some((id, f)) if f.stderr.contains("in use") => {
                    last = format!("node {id}: {}", f.stderr);
                }
                Some((id, f)) => {
                    panic!("node {id} did not become ready (exit status {:?}); its stderr:\n{}", f.status, f.stderr)
                }
            }
        }
        panic!("could not start a cluster after 5 attempts (ports taken); last failure: {last}");
    }

    /// Three nodes, all with the same extra flags.
    pub fn three(extra: &[&str]) -> Cluster {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Cluster::start(3, Some(1), |_| extra.clone())
    }

    pub fn node(&self, id: u64) -> &TestServer {
        &self.nodes[id as usize - 1]
    }

    pub fn node_mut(&mut self, id: u64) -> &mut TestServer {
        &mut self.nodes[id as usize - 1]
    }

    pub fn leader(&self) -> &TestServer {
        self.node(1)
    }

    /// Every node's client address, comma-separated (for `--nodes`).
    pub fn client_addrs(&self) -> String {
        self.nodes.iter().map(|n| n.client_addr().to_string()).collect::<Vec<_>>().join(",")
    }

    pub fn peer_port(&self, id: u64) -> u16 {
        self.peer_ports[id as usize - 1]
    }

    /// Waits until each follower in `ids` reports `master_link_status:up`
    /// and the leader lists it online.
    pub fn wait_streaming(&self, ids: &[u64]) {
        for &id in ids {
            let ok = eventually(CONNECT, || {
                info(self.node(id)).get("master_link_status").map(String::as_str) == Some("up")
                    && slave(&info(self.leader()), id).is_some_and(|s| s["state"] == "online")
            });
            assert!(
                ok,
                "follower {id} is not streaming after {CONNECT:?}\nits INFO: {:?}\nleader INFO: {:?}\nits stderr:\n{}\nleader stderr:\n{}",
                info(self.node(id)),
                info(self.leader()),
                tail(&self.node(id).stderr()),
                tail(&self.leader().stderr())
            );
        }
    }

    /// The node that reports `role:master` with its lease held, if exactly
    /// one does (automatic failover).
    pub fn leader_id(&self) -> Option<u64> {
        let leaders: Vec<u64> = (1..=self.nodes.len() as u64)
            .filter(|&id| self.node(id).answers_ping())
            .filter(|&id| {
                let i = info(self.node(id));
                i.get("role").map(String::as_str) == Some("master")
                    && i.get("tandem_lease").map(String::as_str) == Some("held")
            })
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    /// Waits (up to [`ELECT`]) for a single leader other than `except`.
    pub fn wait_leader(&self, except: Option<u64>) -> u64 {
        let mut found = None;
        let ok = eventually(ELECT, || {
            found = self.leader_id().filter(|&l| Some(l) != except);
            found.is_some()
        });
        assert!(ok, "no leader (other than {except:?}) within {ELECT:?}\n{}", self.stderrs());
        found.expect("found")
    }

    /// Stderr of every node, for failure messages.
    pub fn stderrs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("---- node {} stderr (tail):\n{}", i + 1, tail(&n.stderr())))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last 40 lines of a log.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

// ------------------------------------------------------------------ helpers

/// `INFO replication` as field -> value.
pub fn info(server: &TestServer) -> BTreeMap<String, String> {
    let text = match Raw::try_connect(server.client_addr()).and_then(|mut r| r.try_cmd(&["INFO", "replication"])) {
        Ok(Resp::Bulk(b)) => String::from_utf8_lossy(&b).into_owned(),
        Ok(Resp::Other('=', s)) => s,
        Ok(other) => panic!("INFO replication answered {other:?}"),
        Err(_) => return BTreeMap::new(),
    };
    text.lines().filter_map(|l| l.trim_end().split_once(':')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The leader's `slaveN:` line for follower `id`, as field -> value.
pub fn slave(info: &BTreeMap<String, String>, id: u64) -> Option<BTreeMap<String, String>> {
    info.iter().filter(|(k, _)| k.starts_with("slave") && k[5..].chars().all(|c| c.is_ascii_digit())).find_map(
        |(_, v)| {
            let fields: BTreeMap<String, String> =
                v.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
            (fields.get("tandem_id").map(String::as_str) == Some(&id.to_string())).then_some(fields)
        },
    )
}
