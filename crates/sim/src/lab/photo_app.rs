//! `photo-app` (guided problem 1): a photo-sharing app with users in the
//! US, the EU and Asia on one single-leader keyspace led from the US, with
//! an asynchronous follower in each of the other regions. Each user
//! uploads a new profile photo, reloads their profile, then browses a few
//! feeds, and again. Every read is routed by the real session logic
//! (`tandem_core::session`: no guarantee, read-your-writes by token,
//! leader window, or leader only) over the cluster view a client polls
//! every 100 ms.
//!
//! Owns the workload, the log's delivery times and the counting. Must never
//! read a real clock or RNG.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use tandem_core::session::{NodeView, Route, Ryw, Session, SessionConfig, Target};

use super::plot::{percentile, Kind, Plot, Series};
use super::replication::{DISK_FSYNC, REGION_LINK};
use super::LabReport;
use crate::rng::{Latency, SimRng};

const REGIONS: [&str; 3] = ["US", "EU", "Asia"];
/// One-way latency from the US (the leader) to each region's node (ms).
const FROM_US_MS: [u64; 3] = [0, 100, 150];
/// Each region's follower applies this long after its fsync (a busy
/// follower in Asia; the US node is the leader).
const APPLY_LAG_MS: [u64; 3] = [0, 20, 120];
/// A client to its own region's node.
const LOCAL_LINK: Latency = Latency { base_us: 500, jitter_us: 300, tail_chance: 0.01, tail_us: 5_000 };
/// Users per region.
const USERS: u64 = 20;
/// Rounds (upload, reload, feeds) per user.
const ROUNDS: u64 = 30;
/// Feed reads after each reload.
const FEEDS: u64 = 3;
/// Think time between a user's actions (mean, ms).
const THINK_MS: u64 = 300;
/// How often a client refreshes its view of the cluster (ms).
const POLL_MS: u64 = 100;
/// Token read-your-writes: longest wait on the local follower.
const TOKEN_WAIT_MS: u64 = 200;
/// Leader window after a write.
const WINDOW_MS: u64 = 1_000;

fn link(region: usize) -> Latency {
    if region == 0 {
        LOCAL_LINK
    } else {
        Latency { base_us: FROM_US_MS[region] * 1000, ..REGION_LINK }
    }
}

/// The log: each write's commit time, and when each region's node applied
/// it (the US node is the leader: commit time).
#[derive(Default)]
struct Log {
    applied_us: [Vec<u64>; 3],
}

impl Log {
    /// The region's node's applied LSN at `t`.
    fn applied_at(&self, region: usize, t: u64) -> u64 {
        self.applied_us[region].partition_point(|a| *a <= t) as u64
    }
}

#[derive(Clone, Copy)]
enum Step {
    Upload,
    Commit { sent_us: u64 },
    Reload,
    Feed(u64),
}

struct Stats {
    upload_ms: [Vec<f64>; 3],
    reload_ms: [Vec<f64>; 3],
    feed_ms: [Vec<f64>; 3],
    reloads: [u64; 3],
    stale: [u64; 3],
    follower_reads: u64,
    reads: u64,
}

fn run(seed: u64, config: SessionConfig) -> Stats {
    let mut rng = SimRng::new(seed);
    let mut log = Log::default();
    let mut stats = Stats {
        upload_ms: Default::default(),
        reload_ms: Default::default(),
        feed_ms: Default::default(),
        reloads: [0; 3],
        stale: [0; 3],
        follower_reads: 0,
        reads: 0,
    };
    // Users: (region, session, own last write LSN, rounds left).
    let mut users: Vec<(usize, Session, u64, u64)> = Vec::new();
    let mut q: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut seq = 0u64;
    for region in 0..3 {
        for _ in 0..USERS {
            users.push((region, Session::new(config), 0, ROUNDS));
            steps.push(Step::Upload);
            seq += 1;
            q.push(Reverse((rng.below(2_000_000), seq, users.len() - 1)));
        }
    }
    while let Some(Reverse((t, _, u))) = q.pop() {
        let region = users[u].0;
        let (done, next) = match steps[u] {
            Step::Upload => {
                // Client → its node → the leader, where it commits on arrival.
                let to_leader =
                    LOCAL_LINK.sample(&mut rng) + if region == 0 { 0 } else { link(region).sample(&mut rng) };
                (t + to_leader, Step::Commit { sent_us: t })
            }
            Step::Commit { sent_us } => {
                let lsn = log.applied_us[0].len() as u64 + 1;
                log.applied_us[0].push(t);
                for (r, lag_ms) in APPLY_LAG_MS.iter().enumerate().skip(1) {
                    let prev = log.applied_us[r].last().copied().unwrap_or(0);
                    let at = t + link(r).sample(&mut rng) + DISK_FSYNC.sample(&mut rng) + lag_ms * 1000;
                    log.applied_us[r].push(at.max(prev));
                }
                let back = LOCAL_LINK.sample(&mut rng) + if region == 0 { 0 } else { link(region).sample(&mut rng) };
                let ack = t + DISK_FSYNC.sample(&mut rng) + back;
                stats.upload_ms[region].push((ack - sent_us) as f64 / 1000.0);
                users[u].1.on_write(ack / 1000, lsn);
                users[u].2 = lsn;
                (ack, Step::Reload)
            }
            Step::Reload | Step::Feed(_) => {
                let reload = matches!(steps[u], Step::Reload);
                // The client's view of the cluster, as of its last poll.
                let polled = t - t % (POLL_MS * 1000);
                let views = [
                    NodeView {
                        index: 0,
                        is_leader: true,
                        applied_lsn: log.applied_at(0, polled),
                        staleness_ms: 0,
                        healthy: true,
                    },
                    NodeView {
                        index: region,
                        is_leader: false,
                        applied_lsn: log.applied_at(region, polled),
                        staleness_ms: 0,
                        healthy: region != 0,
                    },
                ];
                let route: Route = users[u].1.route_read(t / 1000, &views);
                let local = LOCAL_LINK.sample(&mut rng);
                let to_leader = |rng: &mut SimRng| if region == 0 { 0 } else { 2 * link(region).sample(rng) };
                let (served_by_leader, served_at, done) = match route.target {
                    Target::Leader => {
                        let extra = to_leader(&mut rng);
                        (true, t + local / 2 + extra / 2, t + local + extra)
                    }
                    Target::Node(_) => (false, t + local / 2, t + local),
                    Target::WaitThenNode { lsn, wait_ms, .. } => {
                        let arrive = t + local / 2;
                        let have_at = log.applied_us[region].get(lsn as usize - 1).copied().unwrap_or(u64::MAX);
                        if have_at <= arrive + wait_ms * 1000 {
                            let at = have_at.max(arrive);
                            (false, at, at + local / 2)
                        } else {
                            let extra = to_leader(&mut rng);
                            let at = arrive + wait_ms * 1000 + extra / 2;
                            (true, at, at + extra / 2 + local / 2)
                        }
                    }
                };
                let node = if served_by_leader { 0 } else { region };
                let seen = log.applied_at(node, served_at);
                users[u].1.on_read_from(seen);
                stats.reads += 1;
                stats.follower_reads += u64::from(!served_by_leader);
                let ms = (done - t) as f64 / 1000.0;
                if reload {
                    stats.reloads[region] += 1;
                    stats.reload_ms[region].push(ms);
                    if seen < users[u].2 {
                        stats.stale[region] += 1;
                    }
                    (done, Step::Feed(0))
                } else {
                    stats.feed_ms[region].push(ms);
                    match steps[u] {
                        Step::Feed(n) if n + 1 < FEEDS => (done, Step::Feed(n + 1)),
                        _ => {
                            users[u].3 -= 1;
                            (done, Step::Upload)
                        }
                    }
                }
            }
        };
        if users[u].3 == 0 {
            continue;
        }
        steps[u] = next;
        let think = match next {
            Step::Commit { .. } => 0,
            Step::Reload => rng.exp(THINK_MS / 3) * 1000,
            _ => rng.exp(THINK_MS) * 1000,
        };
        seq += 1;
        q.push(Reverse((done + think, seq, u)));
    }
    stats
}

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 50.0)
}

/// `photo-app`.
pub fn photo_app(seed: u64) -> Result<LabReport, String> {
    let base = SessionConfig::default();
    let modes: [(&str, SessionConfig); 4] = [
        ("leader only", SessionConfig { strong: true, ..base }),
        ("local follower, no guarantee", base),
        ("local follower + token", SessionConfig { ryw: Ryw::Token { wait_ms: TOKEN_WAIT_MS }, ..base }),
        ("leader window", SessionConfig { ryw: Ryw::LeaderWindow { ms: WINDOW_MS }, ..base }),
    ];
    let mut rows = Vec::new();
    let mut stale_bars = Vec::new();
    let mut sums = Vec::new();
    let mut asia = Vec::new();
    for (i, (name, config)) in modes.iter().enumerate() {
        let mut s = run(seed.wrapping_mul(17).wrapping_add(i as u64), *config);
        let reloads: u64 = s.reloads.iter().sum();
        let stale: u64 = s.stale.iter().sum();
        let mut per_region = Vec::new();
        for r in 0..3 {
            per_region.push((p50(&mut s.upload_ms[r]), p50(&mut s.reload_ms[r]), p50(&mut s.feed_ms[r])));
        }
        for (r, region) in REGIONS.iter().enumerate() {
            rows.push(vec![
                name.to_string(),
                region.to_string(),
                format!("{:.1}", per_region[r].0),
                format!("{:.1}", per_region[r].1),
                format!("{:.1}", per_region[r].2),
                format!("{}/{}", s.stale[r], s.reloads[r]),
            ]);
        }
        let rate = 100.0 * stale as f64 / reloads.max(1) as f64;
        let share = 100.0 * s.follower_reads as f64 / s.reads.max(1) as f64;
        stale_bars.push(Series { name: name.to_string(), points: vec![(0.0, rate)] });
        sums.push((rate, share, per_region));
        asia.push((s.stale[2], s.reloads[2]));
    }
    let reading = format!(
        "Uploads always cross to the leader in the US: {:.0} ms from the EU and {:.0} ms from Asia against {:.1} ms \
         at home. Reads decide the rest. Leader-only reads are never stale but cost the same ocean for every feed \
         ({:.0} ms from Asia). Reading from the local follower with no guarantee makes feeds local ({:.1} ms from Asia) \
         and {:.1}% of the reloads right after an upload showed the old photo ({} of {} in Asia, where the follower is busy). A session token fixes that \
         ({:.1}% stale) while keeping {:.0}% of reads on followers: the reload waits on the local follower until the \
         upload has arrived ({:.0} ms p50 from Asia), feeds stay local. The leader window also gives {:.1}% stale, \
         but sends every read of the next {} s to the US ({:.0}% on followers).",
        sums[0].2[1].0,
        sums[0].2[2].0,
        sums[0].2[0].0,
        sums[0].2[2].2,
        sums[1].2[2].2,
        sums[1].0,
        asia[1].0,
        asia[1].1,
        sums[2].0,
        sums[2].1,
        sums[2].2[2].1,
        sums[3].0,
        WINDOW_MS / 1000,
        sums[3].1,
    );
    Ok(LabReport {
        name: "photo-app".into(),
        question: super::find("photo-app").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), format!(
                "single leader in the US; async followers in the EU (100 ms one way, applies {} ms late) and Asia (150 ms, a busy follower: {} ms late)",
                APPLY_LAG_MS[1], APPLY_LAG_MS[2]
            )),
            (
                "users".into(),
                format!("{USERS} per region; {ROUNDS} rounds of: upload a profile photo, reload the profile, browse {FEEDS} feeds; think time ~{THINK_MS} ms"),
            ),
            (
                "routing".into(),
                format!("the real session logic over a cluster view polled every {POLL_MS} ms; token waits up to {TOKEN_WAIT_MS} ms; leader window {} s", WINDOW_MS / 1000),
            ),
            ("stale".into(), "the reload did not show the photo just uploaded".into()),
        ],
        columns: ["reads", "region", "upload p50 ms", "reload p50 ms", "feed p50 ms", "stale reloads"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        plots: vec![Plot {
            title: "Reloads that showed the old profile photo".into(),
            x_label: "read routing".into(),
            y_label: "percent of reloads".into(),
            kind: Kind::Bars,
            log_x: false,
            series: stale_bars,
        }],
    })
}
