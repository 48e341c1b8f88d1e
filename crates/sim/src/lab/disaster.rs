//! `disaster`: a whole region is lost, with the cluster and everything in
//! its data center. Three backup strategies, judged by the measured RPO
//! (what was acknowledged and is gone) and RTO (until the data serves again
//! from another region): nightly backups kept on the same site, nightly
//! backups copied off-site, and a nightly off-site base plus continuous
//! off-site log archiving (the node's archiver: a pass every
//! `archive_interval_ms` ships the durable records written before it began,
//! over a 100 ms link).
//!
//! The loss moment, the writes (a Poisson stream) and the uploads are drawn
//! from the seed; restore speeds are the measured ones of docs/benchmarks.
//! Must never read a real clock or RNG.

use super::plot::{cdf, percentile, Kind, Plot, Series};
use super::LabReport;
use crate::rng::{Latency, SimRng};

/// Regions lost per strategy (independent moments of the day).
const SAMPLES: u64 = 300;
/// The application's writes per second.
const WRITE_RATE: u64 = 200;
/// Bytes per archived record.
const RECORD_BYTES: u64 = 150;
/// The archiver's pass interval (ms; the node's default).
const ARCHIVE_INTERVAL_MS: u64 = 1_000;
/// Upload to the other region: 100 ms one way plus the bytes at 50 MB/s.
const UPLOAD_LINK: Latency = Latency { base_us: 100_000, jitter_us: 2_000, tail_chance: 0.01, tail_us: 200_000 };
const UPLOAD_MB_S: u64 = 50;
/// Backups run at midnight; a day in ms.
const DAY_MS: u64 = 24 * 3600 * 1000;
/// Provisioning replacement machines in the surviving region (s).
const PROVISION_S: f64 = 600.0;
/// Data set (MB), restore speed from a full base (MB/s) and log replay speed
/// (entries/s), as measured in docs/benchmarks.
const DATA_MB: f64 = 2_000.0;
const RESTORE_MB_S: f64 = 82.0;
const REPLAY_PER_S: f64 = 770_000.0;

struct Sample {
    rpo_s: f64,
    lost: u64,
    rto_s: f64,
}

/// Writes in `(from_ms, to_ms]` of a Poisson stream.
fn writes_between(rng: &mut SimRng, from_ms: u64, to_ms: u64) -> u64 {
    let span_ms = to_ms.saturating_sub(from_ms);
    if span_ms > 10_000 {
        // Hours of writes: the normal approximation of the Poisson count.
        let mean = (span_ms * WRITE_RATE) as f64 / 1000.0;
        let z = (0..12).map(|_| rng.unit()).sum::<f64>() - 6.0;
        return (mean + z * mean.sqrt()).max(0.0) as u64;
    }
    let mean_gap_us = 1_000_000 / WRITE_RATE;
    let mut t = from_ms * 1000;
    let mut n = 0;
    loop {
        t += 1 + rng.exp(mean_gap_us);
        if t > to_ms * 1000 {
            return n;
        }
        n += 1;
    }
}

/// Continuous archive: the last pass whose upload completed before `loss_ms`
/// bounds what survives.
fn archive_sample(rng: &mut SimRng, loss_ms: u64, phase_ms: u64) -> Sample {
    // Passes start at phase + k * interval; look at the last few before the loss.
    let k_last = (loss_ms.saturating_sub(phase_ms)) / ARCHIVE_INTERVAL_MS;
    let mut covered_ms = 0;
    for k in k_last.saturating_sub(5)..=k_last {
        let start = phase_ms + k * ARCHIVE_INTERVAL_MS;
        let bytes = WRITE_RATE * ARCHIVE_INTERVAL_MS / 1000 * RECORD_BYTES;
        let upload_ms = UPLOAD_LINK.sample(rng) / 1000 + bytes * 1000 / (UPLOAD_MB_S * 1_000_000);
        if start + upload_ms <= loss_ms {
            covered_ms = start;
        }
    }
    let lost = writes_between(rng, covered_ms, loss_ms);
    let entries_since_base = loss_ms / 1000 * WRITE_RATE;
    let rto_s = PROVISION_S + DATA_MB / RESTORE_MB_S + entries_since_base as f64 / REPLAY_PER_S;
    Sample { rpo_s: (loss_ms - covered_ms) as f64 / 1000.0, lost, rto_s }
}

/// Nightly backup copied off-site: the last midnight bounds what survives.
fn nightly_sample(rng: &mut SimRng, loss_ms: u64) -> Sample {
    // Loss times are within one day after midnight's backup.
    let lost = writes_between(rng, 0, loss_ms);
    Sample { rpo_s: loss_ms as f64 / 1000.0, lost, rto_s: PROVISION_S + DATA_MB / RESTORE_MB_S }
}

fn summary(s: &[Sample]) -> (Vec<f64>, Vec<f64>, f64) {
    let mut rpo: Vec<f64> = s.iter().map(|x| x.rpo_s).collect();
    rpo.sort_by(f64::total_cmp);
    let mut rto: Vec<f64> = s.iter().map(|x| x.rto_s).collect();
    rto.sort_by(f64::total_cmp);
    let lost = s.iter().map(|x| x.lost as f64).sum::<f64>() / s.len().max(1) as f64;
    (rpo, rto, lost)
}

fn dur(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1} h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{s:.2} s")
    }
}

/// `disaster`.
pub fn disaster(seed: u64) -> Result<LabReport, String> {
    let mut rng = SimRng::new(seed ^ 0xD15A_57E5);
    let mut nightly = Vec::new();
    let mut archive = Vec::new();
    for _ in 0..SAMPLES {
        let loss_ms = rng.below(DAY_MS);
        let phase = rng.below(ARCHIVE_INTERVAL_MS);
        nightly.push(nightly_sample(&mut rng, loss_ms));
        archive.push(archive_sample(&mut rng, loss_ms, phase));
    }
    let (n_rpo, n_rto, n_lost) = summary(&nightly);
    let (a_rpo, a_rto, a_lost) = summary(&archive);
    let total_mean = nightly.iter().map(|s| s.lost).sum::<u64>() / SAMPLES;
    let rows = vec![
        vec![
            "nightly backup, same site".into(),
            "everything".into(),
            "everything".into(),
            "all data".into(),
            "never (the backups burned too)".into(),
        ],
        vec![
            "nightly backup, copied off-site".into(),
            dur(percentile(&n_rpo, 50.0)),
            dur(percentile(&n_rpo, 100.0)),
            format!("{n_lost:.0}"),
            dur(percentile(&n_rto, 50.0)),
        ],
        vec![
            format!("nightly base + continuous archive ({ARCHIVE_INTERVAL_MS} ms), off-site"),
            dur(percentile(&a_rpo, 50.0)),
            dur(percentile(&a_rpo, 100.0)),
            format!("{a_lost:.0}"),
            dur(percentile(&a_rto, 50.0)),
        ],
    ];
    let reading = format!(
        "A region lost at a random moment of the day, {SAMPLES} times. Backups kept in the same data center burn \
         with it: nothing to restore, whatever their schedule, and the three replicas in that region do not help \
         either. Copied off-site, the nightly backup lost a median of {} of acknowledged writes (up to {}), {n_lost:.0} \
         writes on average at {WRITE_RATE} writes/s, and took {} to serve again (new machines, then {DATA_MB:.0} MB \
         restored at {RESTORE_MB_S:.0} MB/s). With the log archived off-site every {ARCHIVE_INTERVAL_MS} ms, the \
         loss was {} at the median and {} at worst ({a_lost:.1} writes on average, against {total_mean}): the \
         archive interval plus the upload. Recovery took a little longer ({} median, up to {}) because the day's \
         log is replayed on top of the base at {REPLAY_PER_S:.0} entries/s. The RPO budget (`rpo_max_ms`) turns \
         that archive lag into a promise: writes are refused while the archive is further behind.",
        dur(percentile(&n_rpo, 50.0)),
        dur(percentile(&n_rpo, 100.0)),
        dur(percentile(&n_rto, 50.0)),
        dur(percentile(&a_rpo, 50.0)),
        dur(percentile(&a_rpo, 100.0)),
        dur(percentile(&a_rto, 50.0)),
        dur(percentile(&a_rto, 100.0)),
    );
    Ok(LabReport {
        name: "disaster".into(),
        question: super::find("disaster").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), "3 nodes in one region, lost whole at a random moment of the day".into()),
            ("writes".into(), format!("{WRITE_RATE}/s (Poisson), {RECORD_BYTES} bytes per log record")),
            ("backups".into(), "a base backup every midnight; same site, or copied to another region".into()),
            (
                "archive".into(),
                format!("a pass every {ARCHIVE_INTERVAL_MS} ms ships what was durable when it began, 100 ms away at {UPLOAD_MB_S} MB/s"),
            ),
            (
                "restore".into(),
                format!("{PROVISION_S:.0} s to provision, {DATA_MB:.0} MB base at {RESTORE_MB_S:.0} MB/s, log replay {REPLAY_PER_S:.0} entries/s (docs/benchmarks)"),
            ),
        ],
        columns: ["strategy", "RPO p50", "RPO max", "writes lost (mean)", "RTO p50"].map(String::from).to_vec(),
        rows,
        reading,
        plots: vec![Plot {
            title: "Data lost with the region (RPO), CDF over loss moments".into(),
            x_label: "seconds of acknowledged writes lost (log scale)".into(),
            y_label: "fraction of disasters".into(),
            kind: Kind::Lines,
            log_x: true,
            series: vec![
                Series { name: "nightly backup off-site".into(), points: cdf(&n_rpo, 100) },
                Series { name: "continuous archive off-site".into(), points: cdf(&a_rpo, 100) },
            ],
        }],
    })
}
