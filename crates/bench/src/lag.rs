//! Replication lag probe: how long after a write is sent to the leader it
//! becomes visible on a follower. Works against any RESP leader/replica
//! pair (Tandem or Redis): SET a fresh value on the leader without waiting
//! for its reply, then poll GET on the follower until the value appears.
//! Run it while `tandem bench` saturates the leader to measure lag under
//! load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tandem_core::resp::Frame;

use crate::conn::Conn;
use crate::report::LatencySummary;
use crate::BenchError;

/// Most trials one probe run makes.
pub const LAG_TRIALS_MAX: u64 = 1_000_000;

/// What to probe.
#[derive(Debug, Clone)]
pub struct LagOptions {
    /// The leader's client address.
    pub leader: String,
    /// The follower's client address.
    pub follower: String,
    /// Number of writes to follow.
    pub trials: u64,
    /// Give up on one trial after this long (counted as a timeout).
    pub trial_timeout: Duration,
    /// Password, if the servers need one.
    pub password: Option<String>,
}

/// The result of a probe.
#[derive(Debug, Clone)]
pub struct LagReport {
    /// Trials whose write became visible.
    pub visible: u64,
    /// Trials that did not within `trial_timeout`.
    pub timeouts: u64,
    /// Send-to-visible latency.
    pub latency: LatencySummary,
    /// Mean GETs per trial.
    pub polls_mean: f64,
}

impl LagReport {
    /// JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "visible": self.visible,
            "timeouts": self.timeouts,
            "polls_mean": self.polls_mean,
            "lag_us": {
                "p50": self.latency.p50_us, "p90": self.latency.p90_us, "p99": self.latency.p99_us,
                "p99.9": self.latency.p999_us, "max": self.latency.max_us, "mean": self.latency.mean_us,
            },
        })
    }

    /// Human-readable lines.
    pub fn render_text(&self) -> String {
        format!(
            "{} writes visible on the follower, {} timeouts, {:.1} polls each\nlag (us): p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n",
            self.visible,
            self.timeouts,
            self.polls_mean,
            self.latency.p50_us,
            self.latency.p90_us,
            self.latency.p99_us,
            self.latency.p999_us,
            self.latency.max_us
        )
    }
}

/// Runs the probe.
pub async fn lag_probe(opts: LagOptions) -> Result<LagReport, BenchError> {
    if opts.trials == 0 || opts.trials > LAG_TRIALS_MAX {
        return Err(BenchError::InvalidOption(format!("trials must be 1..={LAG_TRIALS_MAX}")));
    }
    let auth = opts.password.as_deref().map(|p| (None, p));
    let timeout = Duration::from_secs(5);
    let mut leader = Conn::open(&Arc::from(opts.leader.as_str()), timeout, auth).await?;
    let mut follower = Conn::open(&Arc::from(opts.follower.as_str()), timeout, auth).await?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let (mut visible, mut timeouts, mut polls) = (0u64, 0u64, 0u64);
    let key = format!("tandem:lagprobe:{}", std::process::id());
    for trial in 0..opts.trials {
        let value = format!("{trial}");
        let sent = Instant::now();
        leader.queue(&[b"SET", key.as_bytes(), value.as_bytes()]);
        leader.flush().await?;
        let mut seen = false;
        while sent.elapsed() < opts.trial_timeout {
            polls += 1;
            if let Frame::Bulk(b) = follower.call(&[b"GET", key.as_bytes()]).await? {
                if b == value.as_bytes() {
                    seen = true;
                    break;
                }
            }
        }
        let ns = sent.elapsed().as_nanos() as u64;
        // Collect the leader's reply before the next trial.
        leader.recv().await?;
        if seen {
            visible += 1;
            hist.saturating_record(ns.max(1));
        } else {
            timeouts += 1;
        }
    }
    Ok(LagReport {
        visible,
        timeouts,
        latency: LatencySummary::from_histogram_ns(&hist),
        polls_mean: polls as f64 / opts.trials as f64,
    })
}
