//! What the proxy knows about the cluster: one background task polls every
//! node's `INFO replication multileader` every poll interval (50 ms by
//! default) over its own RESP connection, all nodes in parallel, and
//! publishes a [`Snapshot`]: roles and applied LSNs, and for each
//! multi-leader keyspace its key prefix and every node's applied version
//! vector. A client task that meets READONLY or a dead leader calls
//! [`Topology::refresh`] to get a fresh snapshot at once.
//!
//! The leader is the node reporting `role:master`. If several do (a demoted
//! leader that has not noticed yet), the one the most followers follow
//! (their `master_host:master_port`) wins, then the highest `tandem_epoch`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tandem_core::conflict::VersionVector;
use tandem_core::resp::Frame;
use tandem_core::session::NodeView;
use tokio::sync::{watch, Notify};

use crate::backend::Backend;

/// How long one node's `INFO replication` may take before the node counts
/// as down for this poll.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(1000);

/// The role a node reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `role:master`.
    Leader,
    /// `role:slave`.
    Follower,
    /// Did not answer, or answered something unexpected.
    Unknown,
}

/// One node as last polled.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// Its client address (as given to `--nodes`).
    pub addr: String,
    /// Its role.
    pub role: Role,
    /// Applied LSN (leader: `master_repl_offset`; follower: `tandem_applied_lsn`).
    pub applied_lsn: u64,
    /// Follower's `tandem_staleness_ms` (0 on a leader).
    pub staleness_ms: u64,
    /// Follower's `master_link_status:up`.
    pub link_up: bool,
    /// The leader a follower names (`master_host:master_port`).
    pub follows: Option<String>,
    /// `tandem_epoch`.
    pub epoch: u64,
    /// Per multi-leader keyspace this node runs: its key prefix and this
    /// node's applied version vector (`INFO multileader`).
    pub ml: BTreeMap<String, MlKeyspaceState>,
}

/// One node's view of one multi-leader keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MlKeyspaceState {
    /// The keyspace's key prefix.
    pub prefix: Bytes,
    /// What this node has applied, per origin.
    pub applied: VersionVector,
}

/// The cluster as of one poll.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every node, in `--nodes` order.
    pub nodes: Vec<NodeState>,
    /// Index of the leader, if one is known.
    pub leader: Option<usize>,
    /// Number of polls so far.
    pub generation: u64,
}

impl Snapshot {
    /// The views the session core routes on.
    pub fn views(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, n)| NodeView {
                index,
                is_leader: self.leader == Some(index),
                applied_lsn: n.applied_lsn,
                staleness_ms: n.staleness_ms,
                healthy: self.leader == Some(index) || (n.role == Role::Follower && n.link_up),
            })
            .collect()
    }

    /// The leader's address.
    pub fn leader_addr(&self) -> Option<&str> {
        self.leader.map(|i| self.nodes[i].addr.as_str())
    }

    /// The multi-leader keyspace `key` belongs to as far as the nodes'
    /// reports tell (the longest multi-leader prefix it starts with). A
    /// longer single-leader prefix may still claim the key: the node then
    /// refuses `WAITVV` on it and the caller treats the key as
    /// single-leader.
    pub fn ml_keyspace_of(&self, key: &[u8]) -> Option<&str> {
        self.nodes
            .iter()
            .flat_map(|n| n.ml.iter())
            .filter(|(_, ks)| key.starts_with(&ks.prefix))
            .max_by_key(|(name, ks)| (ks.prefix.len(), name.as_str()))
            .map(|(name, _)| name.as_str())
    }

    /// Node `index`'s applied vector of multi-leader keyspace `keyspace`
    /// as last polled (empty if unknown).
    pub fn ml_applied(&self, index: usize, keyspace: &str) -> VersionVector {
        self.nodes.get(index).and_then(|n| n.ml.get(keyspace)).map(|k| k.applied.clone()).unwrap_or_default()
    }
}

/// Shared handle to the poller.
pub struct Topology {
    current: RwLock<Arc<Snapshot>>,
    updates: watch::Receiver<u64>,
    poll_now: Notify,
}

impl Topology {
    /// Starts the poller task.
    pub fn start(addrs: Vec<String>, interval: Duration) -> Arc<Topology> {
        let (tx, rx) = watch::channel(0);
        let topo = Arc::new(Topology {
            current: RwLock::new(Arc::new(Snapshot::default())),
            updates: rx,
            poll_now: Notify::new(),
        });
        let t = topo.clone();
        tokio::spawn(async move { t.poll_loop(addrs, interval, tx).await });
        topo
    }

    /// The latest snapshot.
    pub fn current(&self) -> Arc<Snapshot> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks for a poll now and waits (bounded) until it is published.
    pub async fn refresh(&self) -> Arc<Snapshot> {
        let mut rx = self.updates.clone();
        rx.mark_unchanged();
        self.poll_now.notify_one();
        let _ = tokio::time::timeout(POLL_TIMEOUT * 2, rx.changed()).await;
        self.current()
    }

    async fn poll_loop(self: Arc<Self>, addrs: Vec<String>, interval: Duration, tx: watch::Sender<u64>) {
        let mut conns: Vec<Option<Backend>> = addrs.iter().map(|_| None).collect();
        let mut generation = 0;
        loop {
            if Arc::strong_count(&self) == 1 {
                // Every user (proxy or direct client) is gone: stop polling.
                return;
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (i, conn) in conns.iter_mut().enumerate() {
                let conn = conn.take();
                let addr = addrs[i].clone();
                tasks.spawn(async move { (i, poll_node(addr, conn).await) });
            }
            let mut nodes: Vec<NodeState> = addrs.iter().map(|a| unknown(a)).collect();
            while let Some(Ok((i, (state, conn)))) = tasks.join_next().await {
                nodes[i] = state;
                conns[i] = conn;
            }
            generation += 1;
            let leader = choose_leader(&nodes);
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Snapshot { nodes, leader, generation });
            let _ = tx.send(generation);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.poll_now.notified() => {}
            }
        }
    }
}

fn unknown(addr: &str) -> NodeState {
    NodeState {
        addr: addr.to_string(),
        role: Role::Unknown,
        applied_lsn: 0,
        staleness_ms: u64::MAX,
        link_up: false,
        follows: None,
        epoch: 0,
        ml: BTreeMap::new(),
    }
}

async fn poll_node(addr: String, conn: Option<Backend>) -> (NodeState, Option<Backend>) {
    let mut conn = match conn {
        Some(c) => c,
        None => match Backend::connect(&addr).await {
            Ok(c) => c,
            Err(_) => return (unknown(&addr), None),
        },
    };
    let cmd = [Bytes::from_static(b"INFO"), Bytes::from_static(b"replication"), Bytes::from_static(b"multileader")];
    let reply = tokio::time::timeout(POLL_TIMEOUT, conn.call(&[&cmd], Duration::ZERO)).await;
    let text = match reply {
        Ok(Ok(mut frames)) => match frames.pop() {
            Some(Frame::Bulk(b)) | Some(Frame::Verbatim { text: b, .. }) => String::from_utf8_lossy(&b).into_owned(),
            _ => return (unknown(&addr), Some(conn)),
        },
        _ => return (unknown(&addr), None),
    };
    (parse_info(&addr, &text), Some(conn))
}

/// Parses the text of `INFO replication multileader`.
pub fn parse_info(addr: &str, text: &str) -> NodeState {
    let mut n = unknown(addr);
    let (mut host, mut port) = (None, None);
    for line in text.lines() {
        let Some((k, v)) = line.trim_end().split_once(':') else { continue };
        let num = || v.parse::<u64>().unwrap_or(0);
        match k {
            "role" if v == "master" => {
                n.role = Role::Leader;
                n.staleness_ms = 0;
                n.link_up = true;
            }
            "role" if v == "slave" => n.role = Role::Follower,
            "master_repl_offset" if n.role == Role::Leader => n.applied_lsn = num(),
            "tandem_applied_lsn" => n.applied_lsn = num(),
            "tandem_staleness_ms" => n.staleness_ms = num(),
            "master_link_status" => n.link_up = v == "up",
            "master_host" => host = Some(v.to_string()),
            "master_port" => port = Some(v.to_string()),
            "tandem_epoch" => n.epoch = num(),
            _ => parse_ml_line(&mut n, k, v),
        }
    }
    if let (Some(h), Some(p)) = (host, port) {
        n.follows = Some(format!("{h}:{p}"));
    }
    n
}

/// `ml_<name>:conflict=..,prefix=<escaped>,..` and
/// `ml_<name>_origin_<id>:applied=<seq>,..` lines of `INFO multileader`.
fn parse_ml_line(n: &mut NodeState, k: &str, v: &str) {
    let Some(rest) = k.strip_prefix("ml_") else { return };
    let field = |name: &str| v.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('='));
    if v.starts_with("conflict=") {
        if let Some(prefix) = field("prefix").and_then(unescape_prefix) {
            n.ml.entry(rest.to_string()).or_default().prefix = prefix;
        }
        return;
    }
    let Some((name, origin)) = rest.rsplit_once("_origin_") else { return };
    let (Ok(origin), Some(Ok(applied))) = (origin.parse::<u64>(), field("applied").map(str::parse::<u64>)) else {
        return;
    };
    n.ml.entry(name.to_string()).or_default().applied.observe(origin, applied);
}

/// Reverses the node's `%XX` escaping of a prefix.
fn unescape_prefix(s: &str) -> Option<Bytes> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    (!out.is_empty()).then(|| Bytes::from(out))
}

/// The leader: the only `role:master`, or among several the one followed by
/// the most followers, then the highest epoch, then the first listed.
pub fn choose_leader(nodes: &[NodeState]) -> Option<usize> {
    let followers_of = |addr: &str| nodes.iter().filter(|n| n.follows.as_deref() == Some(addr)).count();
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == Role::Leader)
        .max_by_key(|(i, n)| (followers_of(&n.addr), n.epoch, usize::MAX - i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_followers_info_replication() {
        let text = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7379\r\nmaster_link_status:up\r\ntandem_epoch:3\r\ntandem_applied_lsn:42\r\ntandem_staleness_ms:17\r\n";
        let n = parse_info("127.0.0.1:7389", text);
        assert_eq!((n.role, n.applied_lsn, n.staleness_ms, n.link_up, n.epoch), (Role::Follower, 42, 17, true, 3));
        assert_eq!(n.follows.as_deref(), Some("127.0.0.1:7379"));
    }

    #[test]
    fn parses_multi_leader_prefixes_and_applied_vectors() {
        let text = "# Replication\r\nrole:master\r\nmaster_repl_offset:7\r\n\r\n# Multileader\r\nml_keyspaces:2\r\nml_carts:conflict=crdt,prefix=cart:,own_writes=9,keys=2,conflicts_total=0,log_error=none\r\nml_carts_origin_1:applied=9,durable=9,head=9,lag_entries=0,lag_ms=0\r\nml_carts_origin_2:applied=3,durable=3,head=3,lag_entries=0,lag_ms=0\r\nml_carts_peer_2:stream_out=1,sent=9,acked=9,unshipped=0,unshipped_ms=0\r\nml_a_origin_b:conflict=lww,prefix=a%2Cb%25,own_writes=0,keys=0,conflicts_total=0,log_error=none\r\n";
        let n = parse_info("x:1", text);
        let carts = &n.ml["carts"];
        assert_eq!(carts.prefix.as_ref(), b"cart:");
        assert_eq!((carts.applied.get(1), carts.applied.get(2), carts.applied.get(3)), (9, 3, 0));
        // A keyspace whose name contains "_origin_" is a summary line.
        assert_eq!(n.ml["a_origin_b"].prefix.as_ref(), b"a,b%");
        let snap = Snapshot { nodes: vec![n], leader: Some(0), generation: 1 };
        assert_eq!(snap.ml_keyspace_of(b"cart:alice"), Some("carts"));
        assert_eq!(snap.ml_keyspace_of(b"user:1"), None);
        assert_eq!(snap.ml_applied(0, "carts").get(1), 9);
    }

    #[test]
    fn of_two_nodes_claiming_leadership_the_one_followers_follow_wins() {
        let leader = |addr: &str, epoch| NodeState { role: Role::Leader, epoch, ..unknown(addr) };
        let follower =
            |addr: &str, of: &str| NodeState { role: Role::Follower, follows: Some(of.into()), ..unknown(addr) };
        let nodes = vec![leader("a:1", 1), leader("b:1", 2), follower("c:1", "b:1")];
        assert_eq!(choose_leader(&nodes), Some(1));
        assert_eq!(choose_leader(&nodes[2..]), None);
    }
}
