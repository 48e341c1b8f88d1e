//! Counters of the proxy, shown by `INFO proxy` and, with `--admin-addr`,
//! as Prometheus text on `GET /metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use tandem_core::session::Reason;

/// Every counter; all monotonic since the proxy started.
#[derive(Default)]
pub struct Metrics {
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Writes sent to the leader.
    pub writes: AtomicU64,
    /// Reads served by the leader.
    pub reads_leader: AtomicU64,
    /// Reads served by a follower.
    pub reads_follower: AtomicU64,
    /// Reads per routing reason (index: position in [`Reason::ALL`]).
    pub reads_by_reason: [AtomicU64; Reason::ALL.len()],
    /// WAITLSN waits on a follower before a read.
    pub waits: AtomicU64,
    /// Reads sent to the leader after a wait fell short or a follower failed.
    pub fallbacks_leader: AtomicU64,
    /// Followers passed over because they were behind the session or too
    /// stale: reads that would have been stale.
    pub stale_reads_avoided: AtomicU64,
    /// Requests retried on a new leader after READONLY or a failed leader.
    pub retries: AtomicU64,
    /// Requests that failed with a backend error.
    pub backend_errors: AtomicU64,
}

/// Adds one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    /// Counts the routing reason of one read.
    pub fn count_reason(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            inc(&self.reads_by_reason[i]);
        }
    }

    /// The `# Proxy` section of `INFO`.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = write!(
            out,
            "# Proxy\r\nproxy_connections_total:{}\r\nproxy_writes:{}\r\nproxy_reads_leader:{}\r\nproxy_reads_follower:{}\r\nproxy_waits:{}\r\nproxy_fallbacks_leader:{}\r\nproxy_stale_reads_avoided:{}\r\nproxy_retries:{}\r\nproxy_backend_errors:{}\r\n",
            get(&self.connections),
            get(&self.writes),
            get(&self.reads_leader),
            get(&self.reads_follower),
            get(&self.waits),
            get(&self.fallbacks_leader),
            get(&self.stale_reads_avoided),
            get(&self.retries),
            get(&self.backend_errors),
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            let _ = write!(out, "proxy_reads_reason_{}:{}\r\n", r.as_str(), get(&self.reads_by_reason[i]));
        }
    }

    /// Prometheus text exposition of the same counters.
    pub fn render_prometheus(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut counter = |name: &str, help: &str, series: &[(&str, u64)]| {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for (labels, v) in series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter("tandem_proxy_connections_total", "Client connections accepted.", &[("", get(&self.connections))]);
        counter("tandem_proxy_writes_total", "Writes sent to the leader.", &[("", get(&self.writes))]);
        counter(
            "tandem_proxy_reads_total",
            "Reads by the node that served them.",
            &[("{target=\"leader\"}", get(&self.reads_leader)), ("{target=\"follower\"}", get(&self.reads_follower))],
        );
        let reasons: Vec<(String, u64)> = Reason::ALL
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{{reason=\"{}\"}}", r.as_str()), get(&self.reads_by_reason[i])))
            .collect();
        let reasons: Vec<(&str, u64)> = reasons.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        counter("tandem_proxy_read_routes_total", "Read routing decisions by reason.", &reasons);
        counter("tandem_proxy_waits_total", "WAITLSN waits on a follower before a read.", &[("", get(&self.waits))]);
        counter(
            "tandem_proxy_fallbacks_leader_total",
            "Reads sent to the leader after a short wait or a failed follower.",
            &[("", get(&self.fallbacks_leader))],
        );
        counter(
            "tandem_proxy_stale_reads_avoided_total",
            "Followers passed over because they were behind the session or too stale.",
            &[("", get(&self.stale_reads_avoided))],
        );
        counter("tandem_proxy_retries_total", "Requests retried on a new leader.", &[("", get(&self.retries))]);
        counter(
            "tandem_proxy_backend_errors_total",
            "Requests failed by a backend error.",
            &[("", get(&self.backend_errors))],
        );
    }
}
