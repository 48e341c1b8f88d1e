//! The metrics of leaderless keyspaces (all of them on this node together),
//! registered in the node's registry by `crate::metrics`. Never decides
//! anything.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Quorum latencies, repairs, anti-entropy and hints.
#[derive(Clone)]
pub struct LeaderlessMetrics {
    /// Time from a write's start to its quorum decision.
    pub write_seconds: Histogram,
    /// Time from a read's start to its quorum decision.
    pub read_seconds: Histogram,
    /// Stale replicas a coordinator wrote the newest version back to.
    pub read_repairs: Counter,
    /// Requests that failed with `-NOQUORUM`.
    pub noquorum: Counter,
    /// Anti-entropy exchanges completed (one per peer per interval).
    pub ae_rounds: Counter,
    /// Keys found differing and exchanged by anti-entropy.
    pub ae_keys: Counter,
    /// Bytes exchanged by anti-entropy (tree leaves, versions, records).
    pub ae_bytes: Counter,
    /// Hints this node stored for down replicas.
    pub hints_stored: Counter,
    /// Hints this node handed back to their owners.
    pub hints_delivered: Counter,
    /// `(key, new owner)` transfers after a ring change that the new owner
    /// made durable (rebalancing).
    pub rebalance_keys: Counter,
    /// Keys this node forgot after every new owner held them.
    pub rebalance_forgotten: Counter,
}

impl Default for LeaderlessMetrics {
    fn default() -> Self {
        LeaderlessMetrics {
            write_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            read_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 18)),
            read_repairs: Counter::default(),
            noquorum: Counter::default(),
            ae_rounds: Counter::default(),
            ae_keys: Counter::default(),
            ae_bytes: Counter::default(),
            hints_stored: Counter::default(),
            hints_delivered: Counter::default(),
            rebalance_keys: Counter::default(),
            rebalance_forgotten: Counter::default(),
        }
    }
}

impl LeaderlessMetrics {
    /// Registers every metric under `tandem_leaderless_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("leaderless");
        r.register(
            "write_quorum_seconds",
            "Leaderless writes: time to the quorum decision",
            self.write_seconds.clone(),
        );
        r.register("read_quorum_seconds", "Leaderless reads: time to the quorum decision", self.read_seconds.clone());
        r.register("read_repairs", "Stale replicas written back by read repair", self.read_repairs.clone());
        r.register("noquorum", "Leaderless requests that failed with NOQUORUM", self.noquorum.clone());
        r.register("anti_entropy_rounds", "Anti-entropy exchanges completed", self.ae_rounds.clone());
        r.register("anti_entropy_keys", "Keys exchanged by anti-entropy", self.ae_keys.clone());
        r.register("anti_entropy_bytes", "Bytes exchanged by anti-entropy", self.ae_bytes.clone());
        r.register("hints_stored", "Hints stored for down replicas (sloppy quorum)", self.hints_stored.clone());
        r.register("hints_delivered", "Hints handed back to their owners", self.hints_delivered.clone());
        r.register(
            "rebalance_keys",
            "Keys streamed to a new owner after a ring change and made durable there",
            self.rebalance_keys.clone(),
        );
        r.register(
            "rebalance_forgotten",
            "Keys this node forgot once their new owners held them",
            self.rebalance_forgotten.clone(),
        );
    }
}
