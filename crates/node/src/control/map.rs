//! The cluster map: the only state the control plane replicates, and the
//! pure rules that change it.
//!
//! Owns [`ClusterMap`], the commands that change it ([`ControlCmd`]) and
//! their answers ([`ControlResp`]). Applying a command is a pure function of
//! the map, the command and its Raft log index, so every node that applies
//! the same log reaches the same map. This file must never do I/O, read a
//! clock or know about Raft's internals: the store feeds it committed
//! entries in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tandem_core::keyspace::{KeyspaceDef, Keyspaces};
use tandem_core::repl::{AckPolicy, NodeId};
use tandem_core::Epoch;

/// Where a member of the cluster is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's peer port (replication and control).
    pub peer_addr: SocketAddr,
}

/// The replicated cluster map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Raft log index of the last applied change (0 before any).
    pub version: u64,
    /// The voting members of the control plane, which are the data nodes.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// The data-plane leader of the single-leader keyspaces (they share one
    /// log, leader and epoch; see docs/decisions/0010); `None` until one is
    /// chosen, or after the leader was removed from the cluster.
    pub leader: Option<NodeId>,
    /// The single-leader epoch; 0 until a leader is chosen. Never decreases.
    pub epoch: Epoch,
    /// The default keyspace's ack policy; `None` means each node's own
    /// configuration. (Stored as its text form, as it always was.)
    pub ack_policy: Option<AckPolicy>,
    /// The keyspaces besides `default`, by name. (Missing in maps written
    /// before keyspaces existed: none.)
    #[serde(default)]
    pub keyspaces: BTreeMap<String, KeyspaceDef>,
}

/// A change to the cluster map, proposed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlCmd {
    /// Compare-and-set of the keyspace leader: applied only if
    /// `map.epoch == expected_epoch`, `epoch > map.epoch` and `leader` is a
    /// member.
    SetLeader {
        /// The new data-plane leader.
        leader: NodeId,
        /// Its epoch.
        epoch: Epoch,
        /// The epoch the proposer saw; a different one means someone else
        /// changed the leader first.
        expected_epoch: Epoch,
        /// Why (for logs and the operator).
        reason: String,
    },
    /// Sets the keyspace's default ack policy (`None`: node configuration).
    SetAckPolicy {
        /// The policy.
        policy: Option<AckPolicy>,
    },
    /// Defines a keyspace; refused if its name or prefix is taken or it is
    /// invalid (see `tandem_core::keyspace`).
    CreateKeyspace(KeyspaceDef),
    /// Removes a keyspace definition; its keys (if any) fall back to the
    /// keyspace their prefix matches next, usually `default`. The caller
    /// checks first that the keyspace is empty unless forced.
    DropKeyspace {
        /// The keyspace's name.
        name: String,
    },
}

/// The answer to a [`ControlCmd`] once it is committed and applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResp {
    /// The command changed the map; this is the map right after it.
    Applied(ClusterMap),
    /// The command's condition did not hold; the map is unchanged.
    Rejected {
        /// Which condition failed.
        reason: String,
        /// The map the condition was checked against.
        map: ClusterMap,
    },
}

impl ClusterMap {
    /// Applies `cmd`, committed at Raft log `index`.
    pub fn apply(&mut self, index: u64, cmd: &ControlCmd) -> ControlResp {
        match cmd {
            ControlCmd::SetLeader { leader, epoch, expected_epoch, reason } => {
                if let Some(why) = self.set_leader_refusal(*leader, *epoch, *expected_epoch) {
                    return ControlResp::Rejected { reason: why, map: self.clone() };
                }
                assert!(*epoch > self.epoch, "an epoch never decreases");
                tracing::info!(leader, epoch, reason = reason.as_str(), index, "cluster map: keyspace leader set");
                self.leader = Some(*leader);
                self.epoch = *epoch;
            }
            ControlCmd::SetAckPolicy { policy } => {
                tracing::info!(policy = ?policy.as_ref().map(|p| p.to_string()), index, "cluster map: ack policy set");
                self.ack_policy = policy.clone();
            }
            ControlCmd::CreateKeyspace(def) => {
                let mut all = self.keyspace_router();
                if let Err(e) = all.insert(def.clone()) {
                    return ControlResp::Rejected { reason: e.to_string(), map: self.clone() };
                }
                tracing::info!(
                    name = def.name.as_str(),
                    mode = def.mode.name(),
                    index,
                    "cluster map: keyspace created"
                );
                self.keyspaces.insert(def.name.clone(), def.clone());
            }
            ControlCmd::DropKeyspace { name } => {
                if self.keyspaces.remove(name).is_none() {
                    let reason = tandem_core::keyspace::KeyspaceError::Unknown(name.clone()).to_string();
                    return ControlResp::Rejected { reason, map: self.clone() };
                }
                tracing::info!(name = name.as_str(), index, "cluster map: keyspace dropped");
            }
        }
        self.version = index;
        ControlResp::Applied(self.clone())
    }

    /// The map's keyspaces as a router. The map only ever holds a set that
    /// passed validation, so this cannot fail.
    pub fn keyspace_router(&self) -> Keyspaces {
        Keyspaces::new(self.keyspaces.values().cloned()).expect("the map holds only validated keyspaces")
    }

    fn set_leader_refusal(&self, leader: NodeId, epoch: Epoch, expected_epoch: Epoch) -> Option<String> {
        if self.epoch != expected_epoch {
            return Some(format!("expected epoch {expected_epoch} but the map is at epoch {}", self.epoch));
        }
        if epoch <= self.epoch {
            return Some(format!("new epoch {epoch} is not above the map's epoch {}", self.epoch));
        }
        if !self.members.contains_key(&leader) {
            return Some(format!("node {leader} is not a member of the cluster"));
        }
        None
    }

    /// Replaces the members after a Raft membership change committed at
    /// `index`. A keyspace leader that is no longer a member is cleared (its
    /// epoch stays, so the next `SetLeader` still compares against it).
    pub fn set_members(&mut self, index: u64, members: BTreeMap<NodeId, MemberInfo>) {
        if let Some(leader) = self.leader {
            if !members.contains_key(&leader) {
                tracing::warn!(leader, index, "cluster map: the keyspace leader was removed from the cluster");
                self.leader = None;
            }
        }
        self.members = members;
        self.version = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_with_members(ids: &[NodeId]) -> ClusterMap {
        let mut map = ClusterMap::default();
        let members = ids
            .iter()
            .map(|id| (*id, MemberInfo { peer_addr: SocketAddr::from(([127, 0, 0, 1], 7000 + *id as u16)) }))
            .collect();
        map.set_members(1, members);
        map
    }

    fn set_leader(leader: NodeId, epoch: Epoch, expected_epoch: Epoch) -> ControlCmd {
        ControlCmd::SetLeader { leader, epoch, expected_epoch, reason: "test".into() }
    }

    #[test]
    fn control_map_set_leader_is_a_compare_and_set_on_the_epoch() {
        let mut map = map_with_members(&[1, 2, 3]);
        assert!(matches!(map.apply(2, &set_leader(1, 1, 0)), ControlResp::Applied(m) if m.leader == Some(1)));
        assert_eq!((map.leader, map.epoch, map.version), (Some(1), 1, 2));
        // A stale proposer (it saw epoch 0) loses, and the map is unchanged.
        match map.apply(3, &set_leader(2, 2, 0)) {
            ControlResp::Rejected { reason, map: seen } => {
                assert!(reason.contains("expected epoch 0"), "{reason}");
                assert_eq!(seen.leader, Some(1));
            }
            other => panic!("stale CAS applied: {other:?}"),
        }
        assert_eq!((map.leader, map.epoch, map.version), (Some(1), 1, 2));
    }

    #[test]
    fn control_map_refuses_non_increasing_epochs_and_non_members() {
        let mut map = map_with_members(&[1, 2, 3]);
        assert!(matches!(map.apply(2, &set_leader(1, 0, 0)), ControlResp::Rejected { .. }));
        match map.apply(3, &set_leader(9, 1, 0)) {
            ControlResp::Rejected { reason, .. } => assert!(reason.contains("not a member"), "{reason}"),
            other => panic!("non-member became leader: {other:?}"),
        }
        assert_eq!(map.leader, None);
    }

    #[test]
    fn control_map_keyspaces_are_created_validated_and_dropped() {
        use tandem_core::keyspace::{Mode, SingleLeaderPolicy};
        let mut map = map_with_members(&[1, 2, 3]);
        let def = |name: &str, prefix: &str| KeyspaceDef {
            name: name.into(),
            prefix: bytes::Bytes::copy_from_slice(prefix.as_bytes()),
            mode: Mode::SingleLeader(SingleLeaderPolicy::default()),
        };
        assert!(matches!(map.apply(2, &ControlCmd::CreateKeyspace(def("carts", "cart:"))), ControlResp::Applied(_)));
        match map.apply(3, &ControlCmd::CreateKeyspace(def("other", "cart:"))) {
            ControlResp::Rejected { reason, .. } => assert!(reason.contains("prefix"), "{reason}"),
            other => panic!("duplicate prefix accepted: {other:?}"),
        }
        assert_eq!(map.keyspace_router().of_key(b"cart:1").unwrap().name, "carts");
        assert!(matches!(
            map.apply(4, &ControlCmd::DropKeyspace { name: "nope".into() }),
            ControlResp::Rejected { .. }
        ));
        assert!(matches!(map.apply(5, &ControlCmd::DropKeyspace { name: "carts".into() }), ControlResp::Applied(_)));
        assert!(map.keyspaces.is_empty());
        // A map written before keyspaces existed still loads.
        let old = r#"{"version":3,"members":{},"leader":null,"epoch":0,"ack_policy":null}"#;
        let loaded: ClusterMap = serde_json::from_str(old).unwrap();
        assert!(loaded.keyspaces.is_empty());
    }

    #[test]
    fn control_map_removing_the_leader_clears_it_but_keeps_the_epoch() {
        let mut map = map_with_members(&[1, 2, 3]);
        map.apply(2, &set_leader(2, 5, 0));
        let mut members = map.members.clone();
        members.remove(&2);
        map.set_members(3, members);
        assert_eq!((map.leader, map.epoch, map.version), (None, 5, 3));
        assert!(matches!(map.apply(4, &set_leader(1, 6, 5)), ControlResp::Applied(_)));
    }
}
