//! The node's Prometheus metrics: one registry per node (several nodes may
//! share a test process), rendered in text format at `/metrics`.
//!
//! Owns the metric definitions and their names; never decides anything.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tandem_core::command::COMMANDS;

/// Label: a command name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// Lower-case command name.
    pub command: String,
}

/// Label: an ack policy (`async`, `any 1`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// The policy text.
    pub policy: String,
}

/// Labels of `tandem_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// The crate version.
    pub version: String,
}

/// Label: a replication role (`leader`, `follower`, `idle`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    /// The role.
    pub role: String,
}

/// Resident set size of this process in bytes (Linux `/proc/self/status`,
/// `VmRSS`), or 0 where it cannot be read.
pub fn rss_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Label: a follower.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabel {
    /// The follower's node id.
    pub replica: u64,
}

/// Label: a keyspace and its conflict policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConflictLabel {
    /// The keyspace.
    pub keyspace: String,
    /// Its conflict policy (`lww`, `siblings`, `crdt`).
    pub policy: String,
}

/// Label: a keyspace and an origin node of its writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    /// The keyspace.
    pub keyspace: String,
    /// The origin node.
    pub origin: u64,
}

/// Label: an error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// Kind, e.g. `WRONGTYPE`, `protocol`, `reply_buffer_limit`.
    pub kind: String,
}

fn lag_histogram() -> Histogram {
    // 0.1 ms .. ~100 s
    Histogram::new(exponential_buckets(0.000_1, 2.0, 21))
}

fn latency_histogram() -> Histogram {
    // 10 µs .. ~10 s
    Histogram::new(exponential_buckets(0.000_01, 2.0, 21))
}

/// All metrics of one node.
pub struct Metrics {
    registry: Registry,
    /// Commands executed, by command.
    pub ops: Family<CommandLabel, Counter>,
    /// Command latency (until the reply is released), by command.
    pub latency: Family<CommandLabel, Histogram, fn() -> Histogram>,
    /// Errors returned or connections closed, by kind.
    pub errors: Family<ErrorLabel, Counter>,
    /// Open client connections.
    pub connections: Gauge,
    /// Client connections accepted since start.
    pub connections_total: Counter,
    /// Connections refused at the limit.
    pub connections_rejected: Counter,
    /// Log fsyncs.
    pub fsyncs: Counter,
    /// Log fsync latency.
    pub fsync_seconds: Histogram,
    /// Log bytes on disk.
    pub log_bytes: Gauge,
    /// Log segment files.
    pub log_segments: Gauge,
    /// Last appended LSN.
    pub last_lsn: Gauge,
    /// Last durable LSN.
    pub durable_lsn: Gauge,
    /// Keys held.
    pub keys: Gauge,
    /// Snapshots taken.
    pub snapshots: Counter,
    /// Keys removed by active expiry.
    pub expired_keys: Counter,
    /// Keys evicted to stay under `maxmemory` (on the leader that chose them).
    pub evicted_keys: Counter,
    /// The `maxmemory` limit in force (0: none).
    pub maxmemory_bytes: Gauge,
    /// The store's running estimate of its keys' and values' bytes.
    pub used_memory_bytes: Gauge,
    /// Commands processed (for INFO), kept outside the registry for speed.
    pub commands_processed: AtomicU64,
    /// Bytes sent to followers.
    pub repl_bytes_sent: Counter,
    /// Snapshots sent to followers.
    pub repl_snapshots_sent: Counter,
    /// Snapshots received from the leader.
    pub repl_snapshots_received: Counter,
    /// Entries received from the leader and applied.
    pub repl_entries_applied: Counter,
    /// Per follower: LSN distance to the leader.
    pub replica_lag_lsn: Family<ReplicaLabel, Gauge>,
    /// Per follower: time lag, sampled every 100 ms.
    pub replica_lag_seconds: Family<ReplicaLabel, Histogram, fn() -> Histogram>,
    /// Failovers this node orchestrated (promotions after a lost leader).
    pub failovers: Counter,
    /// Switchovers this node orchestrated.
    pub switchovers: Counter,
    /// Recovery time of the last failover this node orchestrated, seconds.
    pub failover_rto_seconds: Histogram,
    /// Entries this node removed into rollback files on rejoin.
    pub rollback_entries: Counter,
    /// 1 while this node leads and holds its lease.
    pub lease_held: Gauge,
    /// Last LSN shipped to the backup repository's log archive.
    pub archive_lsn: Gauge,
    /// Archive lag: age of the oldest entry not yet in the archive (the backup RPO).
    pub archive_lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Failed archive passes (repository unreachable, disk full, ...).
    pub archive_failures: Counter,
    /// Per-command handles into `ops` and `latency`, indexed like
    /// `COMMANDS` (last slot: unknown commands), so the hot path does no
    /// label allocation or map lookup.
    per_command: Vec<(Counter, Histogram)>,
    /// Constant 1, labelled with the version.
    pub build_info: Family<BuildLabel, Gauge>,
    /// 1 for this node's current role, 0 for the others.
    pub role: Family<RoleLabel, Gauge>,
    /// This node's epoch.
    pub epoch: Gauge,
    /// How long writes waited for their ack policy (replicas), by policy.
    pub ack_wait_seconds: Family<PolicyLabel, Histogram, fn() -> Histogram>,
    /// Resident memory of the process.
    pub memory_rss_bytes: Gauge,
    /// Conflicts resolved (discarded, kept as siblings, merged), by
    /// keyspace and policy.
    pub conflicts: Family<ConflictLabel, Counter>,
    /// Multi-leader keyspaces: per origin, its writes not yet applied here.
    pub origin_lag_entries: Family<OriginLabel, Gauge>,
    /// Multi-leader keyspaces: per origin, its writes applied here (the
    /// node's progress: one component of its version vector).
    pub origin_applied: Family<OriginLabel, Gauge>,
    /// Multi-leader keyspaces: per origin, HLC ms between its newest write
    /// and the newest one applied here.
    pub origin_lag_ms: Family<OriginLabel, Gauge>,
    /// Leaderless keyspaces (`tandem_leaderless_*`).
    pub leaderless: crate::leaderless::LeaderlessMetrics,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tandem");
        let m = Metrics {
            ops: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            errors: Family::default(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            connections_rejected: Counter::default(),
            fsyncs: Counter::default(),
            fsync_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 21)),
            log_bytes: Gauge::default(),
            log_segments: Gauge::default(),
            last_lsn: Gauge::default(),
            durable_lsn: Gauge::default(),
            keys: Gauge::default(),
            snapshots: Counter::default(),
            expired_keys: Counter::default(),
            evicted_keys: Counter::default(),
            maxmemory_bytes: Gauge::default(),
            used_memory_bytes: Gauge::default(),
            commands_processed: AtomicU64::new(0),
            per_command: Vec::new(),
            archive_lsn: Gauge::default(),
            archive_lag_seconds: Gauge::default(),
            archive_failures: Counter::default(),
            repl_bytes_sent: Counter::default(),
            repl_snapshots_sent: Counter::default(),
            repl_snapshots_received: Counter::default(),
            repl_entries_applied: Counter::default(),
            replica_lag_lsn: Family::default(),
            replica_lag_seconds: Family::new_with_constructor(lag_histogram as fn() -> Histogram),
            failovers: Counter::default(),
            switchovers: Counter::default(),
            failover_rto_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            rollback_entries: Counter::default(),
            lease_held: Gauge::default(),
            registry: Registry::default(),
            build_info: Family::default(),
            role: Family::default(),
            epoch: Gauge::default(),
            ack_wait_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            memory_rss_bytes: Gauge::default(),
            conflicts: Family::default(),
            origin_lag_entries: Family::default(),
            origin_applied: Family::default(),
            origin_lag_ms: Family::default(),
            leaderless: Default::default(),
        };
        let names = COMMANDS.iter().map(|c| c.name).chain(std::iter::once("unknown"));
        let per_command = names
            .map(|name| {
                let label = CommandLabel { command: name.to_string() };
                (m.ops.get_or_create(&label).clone(), m.latency.get_or_create(&label).clone())
            })
            .collect();
        registry.register("commands", "Commands executed, by command", m.ops.clone());
        registry.register("command_latency_seconds", "Command latency until the reply is released", m.latency.clone());
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register("connections", "Open client connections", m.connections.clone());
        registry.register("connections_accepted", "Client connections accepted", m.connections_total.clone());
        registry.register("connections_rejected", "Connections refused at clients_max", m.connections_rejected.clone());
        registry.register("log_fsyncs", "Log fsync calls", m.fsyncs.clone());
        registry.register("log_fsync_seconds", "Log fsync latency", m.fsync_seconds.clone());
        registry.register("log_bytes", "Log bytes on disk", m.log_bytes.clone());
        registry.register("log_segments", "Log segment files", m.log_segments.clone());
        registry.register("last_lsn", "Last appended log sequence number", m.last_lsn.clone());
        registry.register("durable_lsn", "Last durable log sequence number", m.durable_lsn.clone());
        registry.register("keys", "Keys held", m.keys.clone());
        registry.register("snapshots", "Snapshots taken", m.snapshots.clone());
        registry.register("repl_sent_bytes", "Bytes sent to followers", m.repl_bytes_sent.clone());
        registry.register("repl_snapshots_sent", "Snapshots sent to followers", m.repl_snapshots_sent.clone());
        registry.register(
            "repl_snapshots_received",
            "Snapshots received from the leader",
            m.repl_snapshots_received.clone(),
        );
        registry.register("repl_entries_applied", "Entries received and applied", m.repl_entries_applied.clone());
        registry.register("replica_lag_lsn", "Per follower: LSNs behind the leader", m.replica_lag_lsn.clone());
        registry.register(
            "replica_lag_seconds",
            "Per follower: time lag sampled every 100 ms",
            m.replica_lag_seconds.clone(),
        );
        registry.register("archive_lsn", "Last LSN shipped to the log archive", m.archive_lsn.clone());
        registry.register(
            "archive_lag_seconds",
            "Age of the oldest log entry not yet in the backup repository (the backup RPO)",
            m.archive_lag_seconds.clone(),
        );
        registry.register("archive_failures", "Log archive passes that failed", m.archive_failures.clone());
        registry.register("expired_keys", "Keys removed by active expiry", m.expired_keys.clone());
        registry.register("evicted_keys", "Keys evicted by this node to stay under maxmemory", m.evicted_keys.clone());
        registry.register("maxmemory_bytes", "The maxmemory limit in force (0: none)", m.maxmemory_bytes.clone());
        registry.register(
            "used_memory_bytes",
            "The store's estimate of its keys' and values' bytes (what maxmemory limits)",
            m.used_memory_bytes.clone(),
        );
        registry.register("failovers", "Failovers this node orchestrated", m.failovers.clone());
        registry.register("switchovers", "Switchovers this node orchestrated", m.switchovers.clone());
        registry.register(
            "failover_rto_seconds",
            "Recovery time of failovers this node orchestrated (leader last heard until promotion)",
            m.failover_rto_seconds.clone(),
        );
        registry.register(
            "rollback_entries",
            "Entries removed into rollback files on rejoin",
            m.rollback_entries.clone(),
        );
        registry.register("lease_held", "1 while this node leads and holds its lease", m.lease_held.clone());
        m.build_info.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("build_info", "Constant 1, labelled with the version", m.build_info.clone());
        registry.register("role", "1 for this node's current role (leader, follower, idle)", m.role.clone());
        registry.register("epoch", "This node's epoch", m.epoch.clone());
        registry.register(
            "ack_wait_seconds",
            "How long writes waited for replicas to meet their ack policy, by policy",
            m.ack_wait_seconds.clone(),
        );
        registry.register("memory_rss_bytes", "Resident memory of the process", m.memory_rss_bytes.clone());
        registry.register(
            "conflicts",
            "Conflicts resolved in multi-leader and leaderless keyspaces, by keyspace and policy",
            m.conflicts.clone(),
        );
        registry.register(
            "origin_lag_entries",
            "Multi-leader keyspaces: per origin, writes not yet applied here",
            m.origin_lag_entries.clone(),
        );
        registry.register(
            "origin_applied",
            "Multi-leader keyspaces: per origin, its writes applied here (this node's progress)",
            m.origin_applied.clone(),
        );
        registry.register(
            "origin_lag_ms",
            "Multi-leader keyspaces: per origin, ms between its newest write and the newest applied here",
            m.origin_lag_ms.clone(),
        );
        m.leaderless.register(&mut registry);
        Metrics { registry, per_command, ..m }
    }

    /// Counts one error of `kind`.
    pub fn error(&self, kind: &str) {
        self.errors.get_or_create(&ErrorLabel { kind: kind.to_string() }).inc();
    }

    /// Records one executed command (by its index in `COMMANDS`, or
    /// `COMMANDS.len()` for an unknown command) and its latency.
    pub fn command(&self, index: usize, seconds: f64) {
        let (ops, latency) = &self.per_command[index.min(self.per_command.len() - 1)];
        ops.inc();
        latency.observe(seconds);
        self.commands_processed.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one sample of a follower's lag.
    pub fn observe_replica(&self, id: u64, lsn_lag: u64, time_lag_ms: u64) {
        let label = ReplicaLabel { replica: id };
        self.replica_lag_lsn.get_or_create(&label).set(lsn_lag as i64);
        self.replica_lag_seconds.get_or_create(&label).observe(time_lag_ms as f64 / 1000.0);
    }

    /// Renders the registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
