//! `delete-everywhere`: a `FLUSHALL` typed on the leader is replicated like
//! any write, so it reaches every replica within the replication lag; only
//! the archive (continuous log archiving for point-in-time recovery)
//! brings the data back. Runs the single-leader world ([`crate::Sim`]: the
//! real replication cores and command execution) with two followers in
//! another region, one of them applying late; the archive is modelled as
//! the node's archiver does it: every `archive_interval_ms` it ships the
//! leader's durable log records. The restore replays the archived row
//! effects onto an empty store, as `tandem backup restore --to-time` does
//! from an empty base.
//!
//! Must never read a real clock or RNG.

use std::collections::BTreeMap;

use tandem_core::effect::LogEntry;
use tandem_core::repl::{AckLevel, AckPolicy, Durability};
use tandem_core::store::{Store, ValueRef};

use super::plot::{Kind, Plot, Series};
use super::replication::{DISK_FSYNC, REGION_LINK};
use super::LabReport;
use crate::{Sim, SimConfig};

/// Keys the application writes.
const KEYS: u64 = 1_000;
/// Writes before the mistake.
const WRITES: u64 = 3_000;
/// Virtual ms between writes.
const GAP_MS: u64 = 5;
/// Follower 3 applies this much later than it receives (a busy replica).
const SLOW_APPLY_MS: u64 = 300;
/// The archiver's pass interval (the node's `archive_interval_ms` default).
const ARCHIVE_INTERVAL_MS: u64 = 1_000;
/// The restore target: this long before the `FLUSHALL`.
const RESTORE_BEFORE_MS: u64 = 1_000;
/// Longest wait for the flush to reach every follower.
const REACH_MAX_MS: u64 = 10_000;

/// The state a restore should give back: key → value, from the writes issued
/// (and committed: the leader executes on arrival) up to a time.
fn expected(issued: &[(u64, String, String)], until_ms: u64) -> BTreeMap<String, String> {
    issued.iter().filter(|(at, _, _)| *at <= until_ms).map(|(_, k, v)| (k.clone(), v.clone())).collect()
}

/// Restores the archive up to `to_ms` (commit time) or `to_lsn` onto an empty store.
fn restore(archive: &[(u64, LogEntry)], to_ms: u64, to_lsn: u64) -> Store {
    let mut store = Store::new(0);
    for (commit_ms, e) in archive {
        if *commit_ms > to_ms || e.lsn > to_lsn {
            break;
        }
        for effect in &e.effects {
            store.apply(effect);
        }
    }
    store
}

fn compare(store: &Store, want: &BTreeMap<String, String>, now_ms: u64) -> (u64, u64) {
    let mut matching = 0;
    for (k, v) in want {
        if let Some((ValueRef::Str(got), _)) = store.get(k.as_bytes(), now_ms) {
            matching += u64::from(got == v.as_bytes());
        }
    }
    (matching, store.len() as u64)
}

/// `delete-everywhere`.
pub fn delete_everywhere(seed: u64) -> Result<LabReport, String> {
    let config = SimConfig { followers: Some(2), faults: false, ..SimConfig::default() };
    let mut sim = Sim::new_lab(seed, &config);
    sim.set_profile(REGION_LINK, DISK_FSYNC);
    sim.set_apply_delay(3, SLOW_APPLY_MS);
    sim.run_for(1_000)?;
    let durability = Durability { policy: AckPolicy::Async, level: AckLevel::Flush, timeout_ms: 5_000 };
    let phase = seed % ARCHIVE_INTERVAL_MS;
    let mut archived_lsn = 0u64;
    let mut next_pass = sim.elapsed_ms() + phase;
    let mut issued: Vec<(u64, String, String)> = Vec::new();
    let mut lag_samples: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    // The archiver's passes, run alongside the workload.
    let archive_pass = |sim: &Sim, archived: &mut u64, next: &mut u64| {
        if sim.elapsed_ms() >= *next {
            *archived = sim.leader_synced_lsn();
            *next += ARCHIVE_INTERVAL_MS;
        }
    };
    for i in 0..WRITES {
        let key = format!("user:{}", (i * 7919) % KEYS);
        let value = format!("profile-{i}");
        issued.push((sim.elapsed_ms(), key.clone(), value.clone()));
        sim.write(&["SET", &key, &value], &durability)?;
        sim.run_for(GAP_MS)?;
        archive_pass(&sim, &mut archived_lsn, &mut next_pass);
        if i % 20 == 0 {
            for (j, id) in [2u64, 3].iter().enumerate() {
                lag_samples[j].push(sim.replica(*id).time_lag_ms as f64);
            }
        }
    }
    let keys_before = sim.leader_key_count() as u64;
    let flush_ms = sim.elapsed_ms();
    let lag_before: Vec<u64> = [2u64, 3].iter().map(|id| sim.replica(*id).time_lag_ms).collect();
    sim.write(&["FLUSHALL"], &durability)?;
    let flush_lsn = sim.leader_last_lsn();
    let mut reached: [Option<u64>; 2] = [None, None];
    let mut curve: [Vec<(f64, f64)>; 3] = Default::default();
    let t0 = flush_ms as f64;
    for (c, n) in
        curve.iter_mut().zip([keys_before, sim.follower_key_count(2) as u64, sim.follower_key_count(3) as u64])
    {
        c.push((-50.0, n as f64));
    }
    while reached.iter().any(Option::is_none) {
        let now = sim.elapsed_ms();
        if now > flush_ms + REACH_MAX_MS {
            return Err(format!(
                "delete-everywhere: the FLUSHALL (LSN {flush_lsn}) did not reach every follower in 10 s: applied {:?} {:?}, synced {} {}",
                sim.follower_applied_lsn(2),
                sim.follower_applied_lsn(3),
                sim.follower_synced_lsn(2),
                sim.follower_synced_lsn(3),
            ));
        }
        for (j, id) in [2u64, 3].iter().enumerate() {
            if reached[j].is_none() && sim.follower_applied_lsn(*id).is_some_and(|l| l >= flush_lsn) {
                reached[j] = Some(now - flush_ms);
            }
        }
        let counts =
            [sim.leader_key_count() as u64, sim.follower_key_count(2) as u64, sim.follower_key_count(3) as u64];
        for (c, n) in curve.iter_mut().zip(counts) {
            let last = c.last().map_or(0.0, |p| p.1);
            if last != n as f64 {
                c.push((now as f64 - t0, last));
                c.push((now as f64 - t0, n as f64));
            }
        }
        sim.run_for(1)?;
        archive_pass(&sim, &mut archived_lsn, &mut next_pass);
    }
    // Let the archiver catch up past the flush, then restore.
    sim.run_for(2 * ARCHIVE_INTERVAL_MS)?;
    while sim.elapsed_ms() >= next_pass {
        archived_lsn = sim.leader_synced_lsn();
        next_pass += ARCHIVE_INTERVAL_MS;
    }
    let end = sim.elapsed_ms() as f64 - t0;
    for c in curve.iter_mut() {
        let last = c.last().map_or(0.0, |p| p.1);
        c.push((end.min(1_500.0), last));
    }
    let left: Vec<u64> = [2u64, 3].iter().map(|id| sim.follower_key_count(*id) as u64).collect();
    let archive: Vec<(u64, LogEntry)> = sim
        .leader_log()
        .filter(|(_, e)| e.lsn <= archived_lsn)
        .map(|(ms, e)| LogEntry::decode_payload(e.lsn, e.epoch, &e.payload).map(|d| (ms, d)))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("delete-everywhere: archive entry does not decode: {e:?}"))?;
    let target_ms = flush_ms - RESTORE_BEFORE_MS;
    // Commit times are the leader's wall clock: find its offset from the
    // run's elapsed time through the FLUSHALL's own record.
    let flush_commit_ms = archive
        .iter()
        .find(|(_, e)| e.lsn == flush_lsn)
        .map(|(ms, _)| *ms)
        .ok_or("delete-everywhere: the archive lacks the FLUSHALL")?;
    let offset = flush_commit_ms - flush_ms;
    let now = sim.elapsed_ms();
    let by_time = restore(&archive, target_ms + offset, u64::MAX);
    let want_time = expected(&issued, target_ms);
    let (ok_time, n_time) = compare(&by_time, &want_time, now);
    let by_lsn = restore(&archive, u64::MAX, flush_lsn - 1);
    let want_lsn = expected(&issued, flush_ms);
    let (ok_lsn, n_lsn) = compare(&by_lsn, &want_lsn, now);
    let writes_after_target = issued.iter().filter(|(at, _, _)| *at > target_ms).count();
    let fmt_reach = |r: Option<u64>| r.map_or("never".into(), |v| v.to_string());
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let rows = vec![
        vec![
            "follower 2 (other region, 100 ms)".into(),
            format!("{:.0}", mean(&lag_samples[0])),
            lag_before[0].to_string(),
            fmt_reach(reached[0]),
            left[0].to_string(),
            "-".into(),
        ],
        vec![
            format!("follower 3 (other region, applies +{SLOW_APPLY_MS} ms)"),
            format!("{:.0}", mean(&lag_samples[1])),
            lag_before[1].to_string(),
            fmt_reach(reached[1]),
            left[1].to_string(),
            "-".into(),
        ],
        vec![
            format!("PITR to {RESTORE_BEFORE_MS} ms before the FLUSHALL"),
            "-".into(),
            "-".into(),
            "-".into(),
            n_time.to_string(),
            format!("{ok_time}/{} match", want_time.len()),
        ],
        vec![
            "PITR to the LSN just before the FLUSHALL".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            n_lsn.to_string(),
            format!("{ok_lsn}/{} match", want_lsn.len()),
        ],
    ];
    let reading = format!(
        "The leader held {keys_before} keys when FLUSHALL ran. Replication does not judge intent: the flush is one \
         more log record, and it emptied follower 2 {} ms later and the slow follower 3 {} ms later (the leader reported {} and {} \
         ms of lag just before, which includes the acknowledgement's way back). Replicas protect against losing a machine, not against a command: \
         {} and {} keys were left on them. The archive (shipped every {} ms) held the log past the flush; a restore \
         to one second before it rebuilt {n_time} keys, {ok_time} of the {} expected with the right value, at the \
         cost of the {writes_after_target} writes of that last second; restoring to the log position just before \
         the FLUSHALL instead gave back {n_lsn} keys ({ok_lsn} of {} right): the log is what makes the mistake \
         undoable, a replica is not.",
        fmt_reach(reached[0]),
        fmt_reach(reached[1]),
        lag_before[0],
        lag_before[1],
        left[0],
        left[1],
        ARCHIVE_INTERVAL_MS,
        want_time.len(),
        want_lsn.len(),
    );
    let names = ["leader", "follower 2", "follower 3 (slow apply)"];
    Ok(LabReport {
        name: "delete-everywhere".into(),
        question: super::find("delete-everywhere").map_or("", |s| s.question).into(),
        seed,
        setup: vec![
            ("cluster".into(), format!("a leader and 2 followers in another region (100 ms one way); follower 3 applies {SLOW_APPLY_MS} ms late")),
            ("workload".into(), format!("{WRITES} SETs on {KEYS} keys, one every {GAP_MS} ms (async), then FLUSHALL on the leader")),
            ("archive".into(), format!("continuous log archiving: every {ARCHIVE_INTERVAL_MS} ms the leader's durable records are shipped off-site")),
            ("restore".into(), "replay of the archived row effects onto an empty store, to a time and to a log position".into()),
        ],
        columns: ["replica / restore", "mean lag ms", "lag at flush ms", "flush applied after ms", "keys after", "values"]
            .map(String::from)
            .to_vec(),
        rows,
        reading,
        plots: vec![Plot {
            title: "Keys on each replica around the FLUSHALL (t=0)".into(),
            x_label: "ms after FLUSHALL".into(),
            y_label: "keys".into(),
            kind: Kind::Lines,
            log_x: false,
            series: names.iter().zip(curve).map(|(n, c)| Series { name: n.to_string(), points: c.to_vec() }).collect(),
        }],
    })
}
