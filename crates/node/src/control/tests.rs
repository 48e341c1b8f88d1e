//! In-process control-plane tests: several `ControlPlane`s in one test
//! process, each with its own temp dir, `Faults` and real TCP listener on
//! 127.0.0.1 port 0. The listener here plays `handle_peer`'s part (accept,
//! answer the peer handshake,
//! read `ControlHello`, hand over); the process test covers the real one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::RwLock;
use tandem_core::repl::{AckPolicy, NodeId, PeerMsg};
use tempfile::TempDir;
use tokio::net::TcpListener;

use super::*;
use crate::faults::{FaultSpec, Faults};
use crate::peer_auth::PeerKey;
use crate::repl::wire;

/// Longest wait for the group to reach a state in these tests (2 shared
/// cores: elections can be slow).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
const SECRET: &str = "control-tests";

type Slot = Arc<RwLock<Option<Arc<ControlPlane>>>>;

struct TestNode {
    id: NodeId,
    addr: SocketAddr,
    dir: TempDir,
    faults: Arc<Faults>,
    slot: Slot,
    accept: tokio::task::JoinHandle<()>,
}

async fn accept_loop(listener: TcpListener, slot: Slot, key: PeerKey) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { return };
        let (slot, key) = (slot.clone(), key.clone());
        tokio::spawn(async move {
            let Ok((mut stream, peer)) = key.accept_tcp(stream).await else { return };
            let mut buf = BytesMut::new();
            let Ok(PeerMsg::ControlHello { node_id }) = wire::read_frame(&mut stream, &mut buf).await else {
                return;
            };
            let cp = slot.read().clone();
            match cp {
                Some(cp) if node_id == peer => cp.serve_connection(stream, buf, peer).await,
                _ => {
                    let _ = wire::write_frame(&mut stream, &PeerMsg::Refuse { reason: "refused".into() }).await;
                }
            }
        });
    }
}

struct Cluster {
    nodes: Vec<TestNode>,
}

impl Cluster {
    async fn new(n: u64) -> Cluster {
        let mut c = Cluster { nodes: Vec::new() };
        for id in 1..=n {
            c.bind(id).await;
        }
        let members = c.members();
        for node in &c.nodes {
            let cp = ControlPlane::start(c.config(node, members.clone(), false)).await.expect("start");
            *node.slot.write() = Some(cp);
        }
        c
    }

    async fn bind(&mut self, id: NodeId) -> &TestNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slot: Slot = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, slot.clone(), PeerKey::new(id, Some(SECRET))));
        let node = TestNode { id, addr, dir: TempDir::new().unwrap(), faults: Arc::default(), slot, accept };
        self.nodes.push(node);
        self.nodes.last().unwrap()
    }

    fn members(&self) -> Vec<(NodeId, SocketAddr)> {
        self.nodes.iter().map(|n| (n.id, n.addr)).collect()
    }

    fn config(&self, node: &TestNode, members: Vec<(NodeId, SocketAddr)>, join: bool) -> ControlConfig {
        let mut cfg = ControlConfig::new(node.id, members, node.dir.path().join("control"), node.faults.clone());
        cfg.cluster_secret = Some(SECRET.into());
        cfg.join = join;
        cfg
    }

    fn node(&self, id: NodeId) -> &TestNode {
        self.nodes.iter().find(|n| n.id == id).expect("node exists")
    }

    fn cp(&self, id: NodeId) -> Arc<ControlPlane> {
        self.node(id).slot.read().clone().expect("control plane running")
    }

    /// Waits until every node in `ids` names the same Raft leader, itself one of `ids`.
    async fn wait_leader(&self, ids: &[NodeId]) -> NodeId {
        wait_for("one agreed Raft leader", || {
            let leaders: Vec<_> = ids.iter().map(|id| self.cp(*id).raft_leader()).collect();
            match leaders[0] {
                Some(l) if ids.contains(&l) && leaders.iter().all(|x| *x == Some(l)) && self.cp(l).is_raft_leader() => {
                    Some(l)
                }
                _ => None,
            }
        })
        .await
    }

    /// Cuts every link between `island` and the other nodes, both ways.
    fn isolate(&self, island: NodeId) {
        let others: Vec<_> = self.nodes.iter().map(|n| n.id).filter(|id| *id != island).collect();
        self.node(island).faults.set(&FaultSpec { cut: others.clone(), delay_ms: 0, ..Default::default() });
        for id in others {
            self.node(id).faults.set(&FaultSpec { cut: vec![island], delay_ms: 0, ..Default::default() });
        }
    }

    fn heal(&self) {
        for n in &self.nodes {
            n.faults.set(&FaultSpec::default());
        }
    }

    async fn shutdown(self) {
        for n in &self.nodes {
            let cp = n.slot.write().take();
            if let Some(cp) = cp {
                cp.shutdown().await;
            }
            n.accept.abort();
        }
    }
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `id`'s map satisfies `pred`.
async fn wait_map(c: &Cluster, id: NodeId, what: &str, pred: impl Fn(&ClusterMap) -> bool) -> ClusterMap {
    let rx = c.cp(id).map();
    wait_for(what, || {
        let m = rx.borrow().clone();
        pred(&m).then_some(m)
    })
    .await
}

fn set_leader(leader: NodeId, epoch: u64, expected_epoch: u64) -> ControlCmd {
    ControlCmd::SetLeader { leader, epoch, expected_epoch, reason: "test".into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_group_elects_one_raft_leader() {
    let c = Cluster::new(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    for id in 1..=3 {
        let map = wait_map(&c, id, "three members in the map", |m| m.members.len() == 3).await;
        assert_eq!(map.members[&id].peer_addr, c.node(id).addr);
        assert_eq!((map.leader, map.epoch), (None, 0), "no data-plane leader is chosen by the control plane");
        let st = wait_for("status with a committed index", || {
            let st = c.cp(id).status();
            (st.committed.is_some() && st.applied.is_some()).then_some(st)
        })
        .await;
        assert_eq!(st.voters, vec![1, 2, 3]);
        assert!(st.learners.is_empty());
        assert_eq!(st.raft_leader, Some(leader));
        assert!(st.term >= 1 && st.applied <= st.committed && st.committed <= st.last_log_index, "{st:?}");
        assert_eq!(st.state, if id == leader { "leader" } else { "follower" });
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_set_leader_cas_applies_once_and_rejects_a_stale_expected_epoch() {
    let c = Cluster::new(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let cp = c.cp(leader);
    match cp.propose(set_leader(2, 1, 0)).await.unwrap() {
        ControlResp::Applied(m) => assert_eq!((m.leader, m.epoch), (Some(2), 1)),
        other => panic!("first SetLeader was not applied: {other:?}"),
    }
    // The same command again: its expected epoch is now stale.
    assert!(matches!(cp.propose(set_leader(2, 1, 0)).await.unwrap(), ControlResp::Rejected { .. }));
    match cp.propose(set_leader(3, 2, 0)).await.unwrap() {
        ControlResp::Rejected { reason, map } => {
            assert!(reason.contains("expected epoch 0"), "{reason}");
            assert_eq!((map.leader, map.epoch), (Some(2), 1));
        }
        other => panic!("stale CAS applied: {other:?}"),
    }
    for id in 1..=3 {
        wait_map(&c, id, "leader 2 at epoch 1 everywhere", |m| m.leader == Some(2) && m.epoch == 1).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_proposal_on_a_follower_is_forwarded_to_the_raft_leader() {
    let c = Cluster::new(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let policy = Some(AckPolicy::Any(1));
    let resp = c.cp(follower).propose(ControlCmd::SetAckPolicy { policy: policy.clone() }).await.unwrap();
    assert!(matches!(&resp, ControlResp::Applied(m) if m.ack_policy == policy), "{resp:?}");
    wait_map(&c, leader, "the policy on the leader", |m| m.ack_policy == policy).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_minority_cannot_commit_and_the_majority_still_can() {
    let c = Cluster::new(3).await;
    let old = c.wait_leader(&[1, 2, 3]).await;
    let majority: Vec<_> = (1..=3).filter(|id| *id != old).collect();
    c.isolate(old);
    // The isolated old leader cannot commit.
    let lost = Some(AckPolicy::Any(2));
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        c.cp(old).propose(ControlCmd::SetAckPolicy { policy: lost.clone() }),
    )
    .await;
    assert!(!matches!(attempt, Ok(Ok(ControlResp::Applied(_)))), "a minority committed: {attempt:?}");
    assert_ne!(c.cp(old).map().borrow().ack_policy, lost);
    // The majority elects a new leader and commits.
    let new = c.wait_leader(&majority).await;
    assert_ne!(new, old);
    let kept = Some(AckPolicy::All);
    let resp = c.cp(majority[0]).propose(ControlCmd::SetAckPolicy { policy: kept.clone() }).await.unwrap();
    assert!(matches!(resp, ControlResp::Applied(_)), "{resp:?}");
    // After healing, the old leader converges on the majority's map.
    c.heal();
    let map = wait_map(&c, old, "the healed node to converge", |m| m.ack_policy == kept).await;
    assert_eq!(map, c.cp(new).map().borrow().clone());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_restarted_node_keeps_its_map_and_rejoins() {
    let c = Cluster::new(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    c.cp(leader).propose(set_leader(1, 1, 0)).await.unwrap();
    let before = wait_map(&c, 3, "node 3 sees epoch 1", |m| m.epoch == 1).await;
    let cp3 = c.node(3).slot.write().take().unwrap();
    cp3.shutdown().await;
    drop(cp3);
    // Restart cut off from everyone: the map comes from node 3's own disk.
    c.isolate(3);
    let members = c.members();
    let cfg = c.config(c.node(3), members, false);
    let cp3 = ControlPlane::start(cfg).await.unwrap();
    assert_eq!(*cp3.map().borrow(), before, "the restarted node lost its map");
    *c.node(3).slot.write() = Some(cp3);
    c.heal();
    let leader = c.wait_leader(&[1, 2, 3]).await;
    c.cp(leader).propose(set_leader(2, 2, 1)).await.unwrap();
    wait_map(&c, 3, "the restarted node follows new changes", |m| m.epoch == 2 && m.leader == Some(2)).await;
    // Nothing is re-initialized: still one group of three voters.
    assert_eq!(c.cp(3).status().voters, vec![1, 2, 3]);
    c.nodes.iter().for_each(|n| assert!(n.dir.path().join("control").exists()));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_add_a_fourth_member_and_remove_one_without_losing_the_map() {
    let mut c = Cluster::new(3).await;
    let leader = c.wait_leader(&[1, 2, 3]).await;
    c.cp(leader).propose(set_leader(2, 7, 0)).await.unwrap();
    // Node 4 starts with --join: it never initializes, it waits to be added.
    let addr4 = c.bind(4).await.addr;
    let members = c.members();
    let cp4 = ControlPlane::start(c.config(c.node(4), members, true)).await.unwrap();
    *c.node(4).slot.write() = Some(cp4);
    assert!(c.cp(4).status().voters.is_empty(), "a joining node must not form its own group");
    // Added through a follower (forwarded to the Raft leader).
    let via = (1..=3).find(|id| *id != leader).unwrap();
    let map = c.cp(via).add_member(4, addr4).await.unwrap();
    assert_eq!(map.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let m4 = wait_map(&c, 4, "node 4 has the map", |m| m.members.len() == 4).await;
    assert_eq!((m4.leader, m4.epoch), (Some(2), 7));
    // Remove node 3 (maybe the Raft leader itself).
    let map = c.cp(4).remove_member(3).await.unwrap();
    assert_eq!(map.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
    let leader = c.wait_leader(&[1, 2, 4]).await;
    c.cp(leader).propose(set_leader(4, 8, 7)).await.unwrap();
    for id in [1, 2, 4] {
        let m = wait_map(&c, id, "the change after removal", |m| m.epoch == 8).await;
        assert_eq!((m.leader, m.members.len()), (Some(4), 3));
    }
    assert_eq!(c.cp(1).status().voters, vec![1, 2, 4]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_call_app_round_trip_and_errors() {
    let c = Cluster::new(3).await;
    c.wait_leader(&[1, 2, 3]).await;
    c.cp(2).set_app_handler(Arc::new(|from, body: Bytes| {
        Box::pin(async move { Bytes::from(format!("{from}:{}", String::from_utf8_lossy(&body))) })
    }));
    let timeout = Duration::from_secs(2);
    let answer = c.cp(1).call_app(2, Bytes::from_static(b"probe"), timeout).await.unwrap();
    assert_eq!(&answer[..], b"1:probe");
    assert_eq!(c.cp(1).call_app(3, Bytes::new(), timeout).await, Err(ControlError::NoAppHandler(3)));
    assert_eq!(c.cp(1).call_app(9, Bytes::new(), timeout).await, Err(ControlError::UnknownMember(9)));
    c.node(1).faults.set(&FaultSpec { cut: vec![2], delay_ms: 0, ..Default::default() });
    assert_eq!(c.cp(1).call_app(2, Bytes::new(), timeout).await, Err(ControlError::Cut { peer: 2 }));
    c.heal();
    // An injected delay is added before each send, in both directions.
    c.node(1).faults.set(&FaultSpec { cut: vec![], delay_ms: 100, ..Default::default() });
    c.node(2).faults.set(&FaultSpec { cut: vec![], delay_ms: 100, ..Default::default() });
    let t0 = std::time::Instant::now();
    c.cp(1).call_app(2, Bytes::from_static(b"slow"), timeout).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(200), "delay not applied: {:?}", t0.elapsed());
    c.shutdown().await;
}

/// openraft's own storage conformance suite against our log and state machine.
#[test]
fn control_store_passes_openraft_suite() {
    struct Builder;
    impl openraft::testing::StoreBuilder<TypeConfig, store::LogStore, store::StateMachineStore, TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(TempDir, store::LogStore, store::StateMachineStore), openraft::StorageError<NodeId>> {
            let dir = TempDir::new().unwrap();
            let log = store::LogStore::open(dir.path()).unwrap();
            let (sm, _) = store::StateMachineStore::open(dir.path()).unwrap();
            Ok((dir, log, sm))
        }
    }
    openraft::testing::Suite::test_all(Builder).unwrap();
}

/// The log survives a reopen: entries, truncation and purge replay the same.
#[tokio::test]
async fn control_log_store_reopens_with_the_same_entries() {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader};
    let dir = TempDir::new().unwrap();
    let entry = |i: u64| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(ControlCmd::SetAckPolicy { policy: Some(AckPolicy::Any(i as usize)) }),
    };
    {
        let mut log = store::LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=10).map(entry)).await.unwrap();
        log.truncate(entry(8).log_id).await.unwrap();
        log.purge(entry(3).log_id).await.unwrap();
        log.save_vote(&openraft::Vote::new(4, 2)).await.unwrap();
    }
    let mut log = store::LogStore::open(dir.path()).unwrap();
    let got: Vec<u64> = log.try_get_log_entries(0..100).await.unwrap().iter().map(|e| e.log_id.index).collect();
    assert_eq!(got, vec![4, 5, 6, 7]);
    assert_eq!(log.read_vote().await.unwrap(), Some(openraft::Vote::new(4, 2)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    // A torn tail (a half-written record) is cut, not fatal.
    drop(log);
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("raft.log")).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    let mut log = store::LogStore::open(dir.path()).unwrap();
    assert_eq!(log.try_get_log_entries(0..100).await.unwrap().len(), 4);
}
