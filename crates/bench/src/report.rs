//! The result of a run: throughput, errors by kind and latency percentiles,
//! overall and per command, as JSON or as a compact text table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

/// Latency percentiles of one set of operations, in microseconds, measured
/// from sending an operation to receiving its (last) reply. All zero when
/// there were no operations.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest operation.
    pub max_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
}

impl LatencySummary {
    pub(crate) fn from_histogram_ns(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            p50_us: us(histogram.value_at_quantile(0.50)),
            p90_us: us(histogram.value_at_quantile(0.90)),
            p99_us: us(histogram.value_at_quantile(0.99)),
            p999_us: us(histogram.value_at_quantile(0.999)),
            max_us: us(histogram.max()),
            mean_us: histogram.mean() / 1000.0,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "p50": self.p50_us,
            "p90": self.p90_us,
            "p99": self.p99_us,
            "p99.9": self.p999_us,
            "max": self.max_us,
            "mean": self.mean_us,
        })
    }
}

/// Results of one entry of the command mix.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandReport {
    /// Mix entry name: `set`, `get`, `incr`, `ping` or `set+wait:N`.
    pub name: String,
    /// Measured operations completed (error replies included).
    pub ops: u64,
    /// Operations that got an error reply.
    pub errors: u64,
    /// Their latency.
    pub latency: LatencySummary,
}

/// The result of [`crate::run`].
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Server address benchmarked.
    pub addr: String,
    /// Connections used.
    pub clients: usize,
    /// Operations kept in flight per connection.
    pub pipeline: usize,
    /// The command mix as given.
    pub mix: String,
    /// Number of distinct keys requests were spread over.
    pub keyspace: u64,
    /// Size of every SET value.
    pub value_bytes: usize,
    /// Keys SET before measuring (0 without preload).
    pub preloaded_keys: u64,
    /// Measured operations completed, error replies included.
    pub ops: u64,
    /// Measured operations that got an error reply.
    pub errors: u64,
    /// Errors by their first word, e.g. `READONLY`, `NOREPLICAS`, `ERR`.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Wall time of the measured part (after warmup).
    pub elapsed: Duration,
    /// `ops / elapsed`.
    pub ops_per_sec: f64,
    /// Latency of all measured operations.
    pub latency: LatencySummary,
    /// Per entry of the command mix, in mix order.
    pub commands: Vec<CommandReport>,
}

impl Report {
    /// Machine-readable form; latencies in microseconds, durations in seconds.
    pub fn to_json(&self) -> Value {
        json!({
            "addr": self.addr,
            "clients": self.clients,
            "pipeline": self.pipeline,
            "mix": self.mix,
            "keyspace": self.keyspace,
            "value_bytes": self.value_bytes,
            "preloaded_keys": self.preloaded_keys,
            "ops": self.ops,
            "errors": self.errors,
            "errors_by_kind": self.errors_by_kind,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ops_per_sec": self.ops_per_sec,
            "latency_us": self.latency.to_json(),
            "commands": self.commands.iter().map(|c| json!({
                "name": c.name,
                "ops": c.ops,
                "errors": c.errors,
                "latency_us": c.latency.to_json(),
            })).collect::<Vec<_>>(),
        })
    }

    /// A compact human-readable table.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tandem bench {}: {} clients, pipeline {}, mix {}, {} keys, {}-byte values",
            self.addr, self.clients, self.pipeline, self.mix, self.keyspace, self.value_bytes
        );
        if self.preloaded_keys > 0 {
            let _ = writeln!(out, "preloaded {} keys", self.preloaded_keys);
        }
        let _ = writeln!(
            out,
            "{} ops in {:.3} s: {:.0} ops/s, {} errors",
            self.ops,
            self.elapsed.as_secs_f64(),
            self.ops_per_sec,
            self.errors
        );
        let _ = writeln!(
            out,
            "{:<14} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (us)", "ops", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, ops: u64, l: &LatencySummary| {
            let _ = writeln!(
                out,
                "{:<14} {:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                name, ops, l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
            );
        };
        row("all", self.ops, &self.latency);
        if self.commands.len() > 1 {
            for command in &self.commands {
                row(&command.name, command.ops, &command.latency);
            }
        }
        if !self.errors_by_kind.is_empty() {
            let kinds: Vec<String> =
                self.errors_by_kind.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
            let _ = writeln!(out, "errors: {}", kinds.join(", "));
        }
        out
    }
}
