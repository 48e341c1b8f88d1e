//! Link fault injection for the peer transport.
//!
//! Owns the node's set of injected faults: peers whose links are cut (every
//! replication and control frame to or from them is dropped, connections
//! to them are refused or closed) and an added one-way delay on the peer
//! frames this node sends: one for every peer (`"delay_ms": 100`) or one
//! per peer (`"delay_ms": {"2": 100, "3": 100}`, two regions 100 ms apart). The kernel here has no `netem`, so partitions in
//! real-process tests are made by cutting links in each node's own
//! transport (`POST /faults` on the admin port).
//!
//! Every peer transport (replication streams, the control plane) must
//! consult this before sending and after receiving. This module must never
//! do I/O itself; it is a shared switchboard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tandem_core::repl::NodeId;

/// The faults a node currently injects.
#[derive(Debug, Default)]
pub struct Faults {
    cut: RwLock<BTreeSet<NodeId>>,
    delay_ms: AtomicU64,
    delay_ms_by_peer: RwLock<BTreeMap<NodeId, u64>>,
}

/// A snapshot of the injected faults (the `/faults` JSON). `delay_ms` is
/// read as a number (every peer) or as an object of peer id to ms; it is
/// written back as `delay_ms` (the every-peer delay) and
/// `delay_ms_by_peer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFaultSpec")]
pub struct FaultSpec {
    /// Peers whose links are cut, both directions.
    pub cut: Vec<NodeId>,
    /// Delay added to every peer frame this node sends, in ms (peers in
    /// `delay_ms_by_peer` use theirs instead).
    pub delay_ms: u64,
    /// One-way delay to each listed peer, in ms.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub delay_ms_by_peer: BTreeMap<NodeId, u64>,
}

/// `delay_ms` as a client writes it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDelay {
    All(u64),
    // String keys: JSON object keys are strings, and an untagged enum
    // cannot turn them into numbers itself.
    PerPeer(BTreeMap<String, u64>),
}

#[derive(Deserialize)]
struct RawFaultSpec {
    #[serde(default)]
    cut: Vec<NodeId>,
    delay_ms: Option<RawDelay>,
    #[serde(default)]
    delay_ms_by_peer: BTreeMap<NodeId, u64>,
}

impl TryFrom<RawFaultSpec> for FaultSpec {
    type Error = String;

    fn try_from(r: RawFaultSpec) -> Result<FaultSpec, String> {
        let mut spec = FaultSpec { cut: r.cut, delay_ms: 0, delay_ms_by_peer: r.delay_ms_by_peer };
        match r.delay_ms {
            None => {}
            Some(RawDelay::All(ms)) => spec.delay_ms = ms,
            Some(RawDelay::PerPeer(m)) => {
                for (peer, ms) in m {
                    let id = peer.parse().map_err(|_| format!("delay_ms: {peer:?} is not a node id"))?;
                    spec.delay_ms_by_peer.insert(id, ms);
                }
            }
        }
        Ok(spec)
    }
}

impl FaultSpec {
    /// The largest delay in the spec (for the admin port's bound).
    pub fn delay_ms_max(&self) -> u64 {
        self.delay_ms_by_peer.values().copied().max().unwrap_or(0).max(self.delay_ms)
    }
}

impl Faults {
    /// Whether the link to and from `peer` is cut.
    pub fn is_cut(&self, peer: NodeId) -> bool {
        let cut = self.cut.read();
        !cut.is_empty() && cut.contains(&peer)
    }

    /// The one-way delay to add to a peer frame sent to `peer`, if any.
    pub fn send_delay(&self, peer: NodeId) -> Option<Duration> {
        let by_peer = self.delay_ms_by_peer.read();
        let ms = match by_peer.get(&peer) {
            Some(ms) => *ms,
            None => self.delay_ms.load(Ordering::Relaxed),
        };
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Replaces the injected faults.
    pub fn set(&self, spec: &FaultSpec) {
        *self.cut.write() = spec.cut.iter().copied().collect();
        self.delay_ms.store(spec.delay_ms, Ordering::Relaxed);
        *self.delay_ms_by_peer.write() = spec.delay_ms_by_peer.clone();
        if spec == &FaultSpec::default() {
            tracing::warn!("link faults cleared");
        } else {
            tracing::warn!(cut = ?spec.cut, delay_ms = spec.delay_ms, by_peer = ?spec.delay_ms_by_peer, "link faults injected");
        }
    }

    /// The injected faults now.
    pub fn spec(&self) -> FaultSpec {
        FaultSpec {
            cut: self.cut.read().iter().copied().collect(),
            delay_ms: self.delay_ms.load(Ordering::Relaxed),
            delay_ms_by_peer: self.delay_ms_by_peer.read().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_links_are_reported_until_cleared() {
        let f = Faults::default();
        assert!(!f.is_cut(2));
        f.set(&FaultSpec { cut: vec![2, 3], delay_ms: 5, ..Default::default() });
        assert!(f.is_cut(2) && f.is_cut(3) && !f.is_cut(1));
        assert_eq!(f.send_delay(2), Some(Duration::from_millis(5)));
        f.set(&FaultSpec::default());
        assert!(!f.is_cut(2));
        assert_eq!(f.send_delay(2), None);
    }

    #[test]
    fn per_peer_delay_is_read_from_an_object_and_applies_to_that_peer_only() {
        let spec: FaultSpec = serde_json::from_str(r#"{"delay_ms":{"2":100,"3":50}}"#).unwrap();
        let f = Faults::default();
        f.set(&spec);
        assert_eq!(f.send_delay(2), Some(Duration::from_millis(100)));
        assert_eq!(f.send_delay(3), Some(Duration::from_millis(50)));
        assert_eq!(f.send_delay(4), None);
        let scalar: FaultSpec = serde_json::from_str(r#"{"cut":[2],"delay_ms":7}"#).unwrap();
        assert_eq!(scalar.delay_ms, 7);
        let back: FaultSpec = serde_json::from_str(&serde_json::to_string(&f.spec()).unwrap()).unwrap();
        assert_eq!(back, spec);
    }
}
