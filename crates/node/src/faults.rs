//! Link fault injection for the peer transport.
//!
//! Owns the node's set of injected faults: peers whose links are cut (every
//! replication and control frame to or from them is dropped, connections
//! to them are refused or closed) and an added one-way delay on every peer
//! frame this node sends. The kernel here has no `netem`, so partitions in
//! real-process tests are made by cutting links in each node's own
//! transport (`POST /faults` on the admin port).
//!
//! Every peer transport (replication streams, the control plane) must
//! consult this before sending and after receiving. This module must never
//! do I/O itself; it is a shared switchboard.

use std::collections::BTreeSet;
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
}

/// A snapshot of the injected faults (the `/faults` JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Peers whose links are cut, both directions.
    #[serde(default)]
    pub cut: Vec<NodeId>,
    /// Delay added before every peer frame this node sends, in ms.
    #[serde(default)]
    pub delay_ms: u64,
}

impl Faults {
    /// Whether the link to and from `peer` is cut.
    pub fn is_cut(&self, peer: NodeId) -> bool {
        let cut = self.cut.read();
        !cut.is_empty() && cut.contains(&peer)
    }

    /// The delay to add before sending a peer frame, if any.
    pub fn send_delay(&self) -> Option<Duration> {
        match self.delay_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Replaces the injected faults.
    pub fn set(&self, spec: &FaultSpec) {
        *self.cut.write() = spec.cut.iter().copied().collect();
        self.delay_ms.store(spec.delay_ms, Ordering::Relaxed);
        if spec == &FaultSpec::default() {
            tracing::warn!("link faults cleared");
        } else {
            tracing::warn!(cut = ?spec.cut, delay_ms = spec.delay_ms, "link faults injected");
        }
    }

    /// The injected faults now.
    pub fn spec(&self) -> FaultSpec {
        FaultSpec { cut: self.cut.read().iter().copied().collect(), delay_ms: self.delay_ms.load(Ordering::Relaxed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_links_are_reported_until_cleared() {
        let f = Faults::default();
        assert!(!f.is_cut(2));
        f.set(&FaultSpec { cut: vec![2, 3], delay_ms: 5 });
        assert!(f.is_cut(2) && f.is_cut(3) && !f.is_cut(1));
        assert_eq!(f.send_delay(), Some(Duration::from_millis(5)));
        f.set(&FaultSpec::default());
        assert!(!f.is_cut(2));
        assert_eq!(f.send_delay(), None);
    }
}
