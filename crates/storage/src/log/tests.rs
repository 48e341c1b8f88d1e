//! Tests of the replication log: durability per policy, poisoning, recovery
//! (torn tail vs corruption), repair, truncation and catch-up reads.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use proptest::prelude::*;

use super::format::{RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use super::segment::{list_segments, segment_path};
use super::*;

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize * 31 + i * 7) as u8).collect()
}

fn open_log(dir: &Path, fsync: FsyncPolicy, segment_bytes_max: u64) -> Log {
    let recovered = recover(dir).expect("recover");
    Log::open(LogConfig { dir: dir.to_path_buf(), fsync, segment_bytes_max }, &recovered, Box::new(|_| {}))
        .expect("open")
}

/// Appends `lsn from..from+n` with payloads of `len` bytes.
fn append_n(log: &Log, from: u64, n: u64, len: usize) {
    for lsn in from..from + n {
        log.append(lsn, 1, &payload(lsn, len));
    }
}

fn replay_all(dir: &Path) -> Vec<Record> {
    let recovered = recover(dir).expect("recover");
    let mut out = Vec::new();
    recovered
        .replay(recovered.first_lsn(), |lsn, epoch, p| {
            out.push(Record { lsn, epoch, payload: p.to_vec() });
            Ok::<(), std::io::Error>(())
        })
        .expect("replay");
    out
}

/// Byte offset of record `index` (0-based) in a segment of equal-sized records.
fn record_offset(index: u64, payload_len: usize) -> u64 {
    SEGMENT_HEADER_BYTES + index * (RECORD_HEADER_BYTES + payload_len) as u64
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0xff;
    fs::write(path, bytes).unwrap();
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A segment size that holds exactly `n` records of `len` payload bytes.
fn seg_for(n: u64, len: usize) -> u64 {
    record_offset(n, len)
}

#[test]
fn log_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
    assert_send_sync::<StorageError>();
}

#[test]
fn fsync_policy_parses_and_displays() {
    for p in [FsyncPolicy::Always, FsyncPolicy::Batch, FsyncPolicy::EverySec, FsyncPolicy::Never] {
        assert_eq!(p.to_string().parse::<FsyncPolicy>().unwrap(), p);
    }
    assert_eq!(FsyncPolicy::default(), FsyncPolicy::Batch);
    let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
    assert!(err.to_string().contains("always, batch, everysec, never"), "{err}");
}

#[test]
fn empty_dir_recovers_to_empty_log_starting_at_lsn_1() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let recovered = recover(&dir).unwrap();
    assert_eq!((recovered.first_lsn(), recovered.last_lsn()), (1, 0));
    let log = open_log(&dir, FsyncPolicy::Batch, SEGMENT_BYTES_MAX_DEFAULT);
    assert_eq!((log.first_lsn(), log.last_lsn(), log.durable_lsn()), (1, 0, 0));
    append_n(&log, 1, 3, 10);
    log.close().unwrap();
    assert_eq!(replay_all(&dir).len(), 3);
}

#[test]
#[should_panic(expected = "log append out of order")]
fn append_with_an_lsn_gap_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    log.append(1, 1, b"a");
    log.append(3, 1, b"c");
}

#[test]
fn durable_lsn_never_passes_fsynced_records() {
    let tmp = tempfile::tempdir().unwrap();
    let published = Arc::new(Mutex::new(Vec::new()));
    let sink = published.clone();
    let recovered = recover(tmp.path()).unwrap();
    let log = Log::open(
        LogConfig {
            dir: tmp.path().to_path_buf(),
            fsync: FsyncPolicy::Batch,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
        },
        &recovered,
        Box::new(move |lsn| sink.lock().push(lsn)),
    )
    .unwrap();
    log.append(1, 1, b"first");
    log.wait_durable(1).unwrap();

    // Stall the writer just before its fsync: records reach the file but
    // must not count as durable.
    let gate = log.shared.faults.sync_gate.lock();
    append_n(&log, 2, 9, 20);
    wait_for("record 2 to be written", || log.shared.written_lsn.load(Ordering::Acquire) >= 2);
    let on_disk = fs::metadata(segment_path(tmp.path(), 1)).unwrap().len();
    assert!(on_disk > record_offset(1, 5), "record 2 is in the file");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(log.durable_lsn(), 1);
    assert_eq!(*published.lock(), vec![1]);

    drop(gate);
    log.wait_durable(10).unwrap();
    assert_eq!(log.durable_lsn(), 10);
    wait_for("on_durable(10)", || published.lock().last() == Some(&10));
    let published = published.lock().clone();
    assert!(published.windows(2).all(|w| w[0] < w[1]), "durable lsn only moves forward: {published:?}");
    assert_eq!(published.last(), Some(&10));
    log.close().unwrap();
}

#[test]
fn group_commit_shares_fsyncs_across_concurrent_appenders() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(open_log(tmp.path(), FsyncPolicy::Batch, SEGMENT_BYTES_MAX_DEFAULT));
    // Model a disk whose fsync takes 1 ms, so batches form even on tmpfs.
    log.shared.faults.sync_delay_micros.store(1000, Ordering::Relaxed);
    let state = Arc::new(Mutex::new(0u64)); // the node's state lock
    let (threads, per_thread) = (8u64, 40u64);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (log, state) = (log.clone(), state.clone());
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    let lsn = {
                        let mut last = state.lock();
                        *last += 1;
                        log.append(*last, 1, &payload(*last, 32));
                        *last
                    };
                    log.wait_durable(lsn).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = log.stats();
    let appends = threads * per_thread;
    assert_eq!(stats.records_appended, appends);
    assert_eq!(stats.durable_lsn, appends);
    assert!(stats.fsync_count < appends / 2, "{} fsyncs for {appends} appends", stats.fsync_count);
    Arc::into_inner(log).unwrap().close().unwrap();
    assert_eq!(replay_all(tmp.path()).len() as u64, appends);
}

#[test]
fn always_policy_fsyncs_every_record_on_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Always, SEGMENT_BYTES_MAX_DEFAULT);
    let gate = log.shared.faults.sync_gate.lock();
    append_n(&log, 1, 20, 8); // all queued while the writer is stalled
    drop(gate);
    log.wait_durable(20).unwrap();
    assert!(log.stats().fsync_count >= 20, "{:?}", log.stats());
    log.close().unwrap();
}

#[test]
fn everysec_counts_written_records_durable_before_any_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::EverySec, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 5, 8);
    log.wait_durable(5).unwrap(); // written to the OS is enough
    assert!(log.stats().synced_lsn < 5 || log.stats().fsync_count > 0);
    wait_for("the periodic fsync", || log.stats().synced_lsn == 5);
    log.close().unwrap();
}

#[test]
fn write_now_makes_records_durable_from_the_calling_thread_under_everysec() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::EverySec, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 3, 8);
    assert_eq!(log.write_now().unwrap(), 3);
    assert_eq!(log.durable_lsn(), 3);
    // Interleaved with the writer thread, records still reach the file in order.
    for round in 0..200u64 {
        let from = 4 + round * 5;
        append_n(&log, from, 5, 8);
        if round % 2 == 0 {
            log.write_now().unwrap();
        }
    }
    log.close().unwrap();
    let lsns: Vec<u64> = replay_all(tmp.path()).iter().map(|r| r.lsn).collect();
    assert_eq!(lsns, (1..=1003).collect::<Vec<_>>());
}

#[test]
fn inline_batch_commit_is_durable_only_after_its_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, SEGMENT_BYTES_MAX_DEFAULT);
    log.set_inline_commit(true);
    append_n(&log, 1, 10, 8);
    let fsyncs = log.stats().fsync_count;
    assert_eq!(log.write_now().unwrap(), 10);
    let stats = log.stats();
    assert_eq!((stats.durable_lsn, stats.synced_lsn), (10, 10), "durable means fsynced under batch");
    assert_eq!(stats.fsync_count, fsyncs + 1, "one fsync covered all ten records");
    // Records nobody commits are committed by the writer thread.
    append_n(&log, 11, 2, 8);
    wait_for("the deferred commit", || log.stats().synced_lsn == 12);
    log.close().unwrap();
}

#[test]
fn records_nobody_writes_now_still_reach_the_os_under_everysec() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::EverySec, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 4, 8);
    wait_for("the deferred write", || log.durable_lsn() == 4);
    log.close().unwrap();
}

#[test]
fn never_policy_syncs_only_on_flush() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 5, 8);
    log.wait_durable(5).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(log.stats().fsync_count, 0);
    log.flush().unwrap();
    assert_eq!(log.stats().synced_lsn, 5);
    assert_eq!(log.stats().fsync_count, 1);
    log.close().unwrap();
}

#[test]
fn fsync_error_poisons_log_and_freezes_durable_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 3, 8);
    log.wait_durable(3).unwrap();
    log.shared.faults.fail_sync.store(true, Ordering::Relaxed);
    log.append(4, 1, b"lost");
    let err = log.flush().unwrap_err();
    assert!(matches!(err, StorageError::Poisoned { durable_lsn: 3, .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("poisoned") && text.contains("fdatasync"), "{text}");
    assert!(log.failed().is_some());
    assert!(log.stats().poisoned);
    // Never retried: clearing the fault does not revive the log.
    log.shared.faults.fail_sync.store(false, Ordering::Relaxed);
    log.append(5, 1, b"also lost");
    assert!(log.wait_durable(5).is_err());
    assert_eq!(log.durable_lsn(), 3);
    assert!(log.close().is_err());
}

#[test]
fn write_error_poisons_log() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::EverySec, SEGMENT_BYTES_MAX_DEFAULT);
    log.shared.faults.fail_write.store(true, Ordering::Relaxed);
    log.append(1, 1, b"x");
    let err = log.wait_durable(1).unwrap_err();
    assert!(err.to_string().contains("write segment"), "{err}");
    assert_eq!(log.durable_lsn(), 0);
}

#[test]
fn fsync_observer_sees_every_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, SEGMENT_BYTES_MAX_DEFAULT);
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    log.set_fsync_observer(Box::new(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    }));
    append_n(&log, 1, 3, 8);
    log.flush().unwrap();
    let stats = log.stats();
    assert_eq!(seen.load(Ordering::Relaxed), stats.fsync_count);
    assert!(stats.fsync_nanos_total >= stats.fsync_nanos_max && stats.fsync_count > 0);
    log.close().unwrap();
}

#[test]
fn recovery_replays_across_segment_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(3, 40));
    append_n(&log, 1, 20, 40);
    log.close().unwrap();
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!(recovered.segments(), 7, "3 records per segment");
    assert_eq!((recovered.first_lsn(), recovered.last_lsn(), recovered.last_epoch()), (1, 20, 1));
    assert!(recovered.torn_tail().is_none());
    let records = replay_all(tmp.path());
    assert_eq!(records.len(), 20);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.lsn, i as u64 + 1);
        assert_eq!(r.payload, payload(r.lsn, 40));
    }
    // Appending after reopening continues in the last segment.
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(3, 40));
    append_n(&log, 21, 5, 40);
    log.close().unwrap();
    assert_eq!(replay_all(tmp.path()).len(), 25);
}

#[test]
fn oversize_record_gets_a_segment_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, 100);
    log.append(1, 1, &payload(1, 10));
    log.append(2, 1, &payload(2, 500));
    log.append(3, 1, &payload(3, 10));
    log.close().unwrap();
    let names: Vec<u64> = list_segments(tmp.path()).unwrap().into_iter().map(|(lsn, _)| lsn).collect();
    assert_eq!(names, vec![1, 2, 3]);
    assert_eq!(replay_all(tmp.path())[1].payload, payload(2, 500));
}

#[test]
fn replay_from_the_middle_starts_exactly_there() {
    let tmp = tempfile::tempdir().unwrap();
    // Large segments with a sparse index: lsn 3000 is found by seeking.
    let log = open_log(tmp.path(), FsyncPolicy::Never, 1 << 20);
    append_n(&log, 1, 5000, 100);
    log.close().unwrap();
    let recovered = recover(tmp.path()).unwrap();
    let mut seen = Vec::new();
    let n = recovered
        .replay(3000, |lsn, _, p| {
            assert_eq!(p, payload(lsn, 100).as_slice());
            seen.push(lsn);
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert_eq!(n, 2001);
    assert_eq!(seen, (3000..=5000).collect::<Vec<_>>());
}

#[test]
fn replay_callback_error_stops_replay_and_is_returned() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 10, 8);
    log.close().unwrap();
    let mut calls = 0;
    let err = recover(tmp.path())
        .unwrap()
        .replay(1, |lsn, _, _| {
            calls += 1;
            if lsn == 4 {
                return Err(std::io::Error::other("cannot decode"));
            }
            Ok(())
        })
        .unwrap_err();
    assert_eq!(calls, 4);
    assert!(matches!(err, StorageError::Callback { .. }));
    assert!(err.to_string().contains("lsn 4") && err.to_string().contains("cannot decode"), "{err}");
}

#[test]
fn torn_tail_is_cut_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 5, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 1);
    let good_len = fs::metadata(&path).unwrap().len();
    // A crash in the middle of writing record 6: its first 40 bytes landed.
    let mut torn = Vec::new();
    super::format::encode_record(&mut torn, 6, 1, super::format::record_crc(6, 1, &payload(6, 30)), &payload(6, 30));
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&torn[..40]).unwrap();

    let recovered = recover(tmp.path()).unwrap();
    assert_eq!(recovered.torn_tail(), Some(&TornTail { path: path.clone(), offset: good_len, bytes_dropped: 40 }));
    assert_eq!(recovered.last_lsn(), 5);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len, "the file was cut");
    let log = Log::open(
        LogConfig { dir: tmp.path().into(), fsync: FsyncPolicy::Batch, segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT },
        &recovered,
        Box::new(|_| {}),
    )
    .unwrap();
    log.append(6, 2, b"after the cut");
    log.close().unwrap();
    let records = replay_all(tmp.path());
    assert_eq!(records.len(), 6);
    assert_eq!(records[5].payload, b"after the cut");
    assert!(recover(tmp.path()).unwrap().torn_tail().is_none());
}

#[test]
fn zero_filled_tail_is_treated_as_torn() {
    // ext4 can leave a zero-filled extent after a crash.
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 5, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 1);
    OpenOptions::new().append(true).open(&path).unwrap().write_all(&[0u8; 4096]).unwrap();
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!(recovered.torn_tail().map(|t| t.bytes_dropped), Some(4096));
    assert_eq!(recovered.last_lsn(), 5);
}

#[test]
fn torn_segment_header_is_rewritten() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, seg_for(2, 10));
    append_n(&log, 1, 4, 10);
    log.close().unwrap();
    // A crash right after creating segment 5, before its header landed.
    fs::write(segment_path(tmp.path(), 5), b"TNDM").unwrap();
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!(recovered.last_lsn(), 4);
    assert_eq!(recovered.torn_tail().map(|t| (t.offset, t.bytes_dropped)), Some((0, 4)));
    let log = open_log(tmp.path(), FsyncPolicy::Never, seg_for(2, 10));
    append_n(&log, 5, 1, 10);
    log.close().unwrap();
    assert_eq!(replay_all(tmp.path()).len(), 5);
}

#[test]
fn mid_file_corruption_reports_path_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 10, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 1);
    let bad = record_offset(2, 30); // record lsn 3
    flip_byte(&path, bad + RECORD_HEADER_BYTES as u64 + 5); // a payload byte
    let before = fs::read(&path).unwrap();

    let err = recover(tmp.path()).unwrap_err();
    match &err {
        StorageError::Corrupt { path: p, offset, reason } => {
            assert_eq!((p, *offset), (&path, bad));
            assert!(reason.contains("crc mismatch (stored 0x"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    let text = err.to_string();
    let expected_start = format!("corrupt log record in {} at byte offset {bad}: crc mismatch", path.display());
    assert!(text.starts_with(&expected_start), "{text}");
    assert!(text.contains("tandem log repair"), "{text}");
    assert_eq!(fs::read(&path).unwrap(), before, "corruption is never cut automatically");
}

#[test]
fn oversized_length_field_is_corruption_not_an_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 10, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    let at = record_offset(4, 30) as usize;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = recover(tmp.path()).unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt { offset, .. } if *offset == at as u64), "{err}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn corruption_in_earlier_segment_is_not_treated_as_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, seg_for(3, 30));
    append_n(&log, 1, 9, 30);
    log.close().unwrap();
    // Damage the LAST record of the FIRST segment: nothing follows it in
    // that file, but later segments do.
    let first = segment_path(tmp.path(), 1);
    flip_byte(&first, record_offset(2, 30) + 30);
    let err = recover(tmp.path()).unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { path, offset, .. } if *path == first && *offset == record_offset(2, 30)),
        "{err}"
    );
    assert!(err.to_string().contains("later segments follow"), "{err}");

    // A truncated earlier segment is corruption too.
    let log_dir = tempfile::tempdir().unwrap();
    let log = open_log(log_dir.path(), FsyncPolicy::Never, seg_for(3, 30));
    append_n(&log, 1, 9, 30);
    log.close().unwrap();
    let first = segment_path(log_dir.path(), 1);
    OpenOptions::new().write(true).open(&first).unwrap().set_len(record_offset(2, 30) + 10).unwrap();
    assert!(matches!(recover(log_dir.path()), Err(StorageError::Corrupt { .. })));

    // So is a zeroed header of an earlier segment.
    let log_dir = tempfile::tempdir().unwrap();
    let log = open_log(log_dir.path(), FsyncPolicy::Never, seg_for(3, 30));
    append_n(&log, 1, 9, 30);
    log.close().unwrap();
    let second = segment_path(log_dir.path(), 4);
    let mut bytes = fs::read(&second).unwrap();
    bytes[..12].fill(0);
    fs::write(&second, bytes).unwrap();
    let err = recover(log_dir.path()).unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt { path, offset: 0, .. } if *path == second), "{err}");
}

#[test]
fn newer_segment_version_is_refused_never_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 3, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = recover(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("unsupported segment format version 2"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn bad_record_followed_by_valid_ones_in_last_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 10, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 1);
    // Damage the length field of record 8: the scanner cannot step over it.
    let at = record_offset(7, 30);
    flip_byte(&path, at);
    let err = recover(tmp.path()).unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt { offset, .. } if *offset == at), "{err}");
    assert!(err.to_string().contains("follows at byte offset"), "{err}");
}

#[test]
fn missing_segment_is_reported_as_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, seg_for(2, 10));
    append_n(&log, 1, 8, 10);
    log.close().unwrap();
    fs::remove_file(segment_path(tmp.path(), 3)).unwrap();
    let err = recover(tmp.path()).unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt { path, .. } if *path == segment_path(tmp.path(), 5)), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn repair_truncates_at_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, seg_for(5, 30));
    append_n(&log, 1, 15, 30);
    log.close().unwrap();
    let path = segment_path(tmp.path(), 6);
    let bad = record_offset(2, 30); // lsn 8
    flip_byte(&path, bad + 30);
    let (err_path, err_offset) = match recover(tmp.path()).unwrap_err() {
        StorageError::Corrupt { path, offset, .. } => (path, offset),
        other => panic!("expected Corrupt, got {other}"),
    };
    assert_eq!((&err_path, err_offset), (&path, bad));

    let report = repair_truncate(tmp.path(), &err_path, err_offset).unwrap();
    assert_eq!(report.segments_removed, 1);
    assert_eq!(report.records_dropped, 2 + 5, "lsn 9, 10 and the 5 of the last segment (lsn 8 is damaged)");
    assert_eq!(report.bytes_dropped, 3 * 54 + seg_for(5, 30));
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!(recovered.last_lsn(), 7);
    assert!(recovered.torn_tail().is_none());
    let log = open_log(tmp.path(), FsyncPolicy::Never, seg_for(5, 30));
    append_n(&log, 8, 1, 30);
    log.close().unwrap();
    assert_eq!(replay_all(tmp.path()).len(), 8);

    let outside = tmp.path().join("not-a-segment.seg");
    assert!(matches!(repair_truncate(tmp.path(), &outside, 12), Err(StorageError::InvalidRequest { .. })));
}

#[test]
fn truncate_before_keeps_records_at_and_after_lsn() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(2, 26));
    append_n(&log, 1, 20, 26);
    log.flush().unwrap();
    assert_eq!(log.stats().segments, 10);
    assert_eq!(log.truncate_before(8).unwrap(), 3, "segments [1,2] [3,4] [5,6]; [7,8] still holds 8");
    assert_eq!(log.first_lsn(), 7);
    assert_eq!(log.read_from(7, 1 << 20).unwrap().len(), 14);
    assert!(matches!(log.read_from(6, 1 << 20), Err(StorageError::NotRetained { from_lsn: 6, first_lsn: 7 })));
    assert_eq!(log.truncate_before(u64::MAX).unwrap(), 6, "never the open segment");
    assert_eq!(log.first_lsn(), 19);
    log.close().unwrap();
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!((recovered.first_lsn(), recovered.last_lsn()), (19, 20));
    assert!(matches!(
        recovered.replay(1, |_, _, _| Ok::<(), std::io::Error>(())),
        Err(StorageError::NotRetained { .. })
    ));
}

#[test]
fn truncate_after_drops_suffix_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let durable_seen = Arc::new(AtomicU64::new(0));
    let sink = durable_seen.clone();
    let recovered = recover(tmp.path()).unwrap();
    let config = LogConfig { dir: tmp.path().into(), fsync: FsyncPolicy::Batch, segment_bytes_max: seg_for(3, 20) };
    let log = Log::open(config.clone(), &recovered, Box::new(move |lsn| sink.store(lsn, Ordering::SeqCst))).unwrap();
    append_n(&log, 1, 10, 20);
    log.truncate_after(5).unwrap(); // mid-segment [4,5,6], later segments deleted
    assert_eq!((log.last_lsn(), log.durable_lsn()), (5, 5));
    assert_eq!(durable_seen.load(Ordering::SeqCst), 5, "the node is told durable moved back");
    assert_eq!(log.read_from(1, usize::MAX).unwrap().len(), 5);
    // What is on disk right now, without closing: exactly 1..=5.
    let on_disk = recover(tmp.path()).unwrap();
    assert_eq!(on_disk.last_lsn(), 5);
    assert_eq!(on_disk.segments(), 2);

    log.append(6, 2, b"new leader's 6");
    log.wait_durable(6).unwrap();
    log.truncate_after(3).unwrap(); // exactly at a segment boundary
    log.append(4, 3, b"newer 4");
    log.close().unwrap();
    let records = replay_all(tmp.path());
    assert_eq!(records.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    assert_eq!((records[3].epoch, records[3].payload.as_slice()), (3, &b"newer 4"[..]));
}

#[test]
fn truncate_after_below_first_lsn_restarts_the_log_there() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(2, 10));
    append_n(&log, 1, 10, 10);
    log.flush().unwrap();
    log.truncate_before(9).unwrap();
    assert_eq!(log.first_lsn(), 9);
    log.truncate_after(4).unwrap();
    assert_eq!((log.first_lsn(), log.last_lsn()), (5, 4));
    log.append(5, 2, b"5");
    log.close().unwrap();
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!((recovered.first_lsn(), recovered.last_lsn()), (5, 5));
}

#[test]
fn reset_to_restarts_the_log_after_a_snapshot_position() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(2, 10));
    append_n(&log, 1, 5, 10);
    log.reset_to(1000).unwrap();
    assert_eq!((log.first_lsn(), log.last_lsn(), log.durable_lsn()), (1001, 1000, 1000));
    assert!(log.read_from(1001, 100).unwrap().is_empty());
    log.close().unwrap();
    // The position survives a restart even with no record after it.
    let recovered = recover(tmp.path()).unwrap();
    assert_eq!((recovered.first_lsn(), recovered.last_lsn()), (1001, 1000));
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(2, 10));
    append_n(&log, 1001, 3, 10);
    log.close().unwrap();
    assert_eq!(replay_all(tmp.path()).first().map(|r| r.lsn), Some(1001));
}

#[test]
fn read_from_returns_only_durable_records() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, SEGMENT_BYTES_MAX_DEFAULT);
    append_n(&log, 1, 3, 10);
    log.wait_durable(3).unwrap();
    let gate = log.shared.faults.sync_gate.lock();
    append_n(&log, 4, 3, 10);
    wait_for("record 4 to be written", || log.shared.written_lsn.load(Ordering::Acquire) >= 4);
    let records = log.read_from(1, usize::MAX).unwrap();
    assert_eq!(records.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(log.read_from(4, usize::MAX).unwrap().is_empty());
    drop(gate);
    log.wait_durable(6).unwrap();
    assert_eq!(log.read_from(4, usize::MAX).unwrap().len(), 3);
    log.close().unwrap();
}

#[test]
fn read_from_respects_max_bytes_but_returns_at_least_one_record() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Batch, seg_for(4, 100));
    append_n(&log, 1, 20, 100);
    log.flush().unwrap();
    let one = log.read_from(5, 1).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0], Record { lsn: 5, epoch: 1, payload: payload(5, 100) });
    let some = log.read_from(3, 5 * 124).unwrap();
    assert_eq!(some.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![3, 4, 5, 6, 7], "crosses a segment boundary");
    assert_eq!(log.read_from(1, usize::MAX).unwrap().len(), 20);
    assert!(log.read_from(21, usize::MAX).unwrap().is_empty());
    log.close().unwrap();
}

#[test]
#[ignore = "throughput check; run with --release -- --ignored"]
fn replay_sustains_over_a_million_small_records_per_second() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open_log(tmp.path(), FsyncPolicy::Never, SEGMENT_BYTES_MAX_DEFAULT);
    let n = 2_000_000;
    let p = [7u8; 40];
    for lsn in 1..=n {
        log.append(lsn, 1, &p);
    }
    log.close().unwrap();
    let started = Instant::now();
    let recovered = recover(tmp.path()).unwrap();
    let scanned = started.elapsed();
    let mut sum = 0u64;
    let replayed = recovered.replay(1, |_, _, p| {
        sum += p.len() as u64;
        Ok::<(), std::io::Error>(())
    });
    let total = started.elapsed();
    assert_eq!(replayed.unwrap(), n);
    let rate = n as f64 / total.as_secs_f64();
    eprintln!("recover {scanned:?}, recover+replay {total:?} of {n} records: {rate:.0} records/s");
    assert!(rate > 1_000_000.0);
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever prefix of the log's bytes survives a crash (plus optional
    /// zeros or garbage after it), recovery yields exactly a prefix of what
    /// was appended, and the log can continue from there.
    #[test]
    fn recovery_after_any_cut_yields_a_prefix_of_appends(
        sizes in proptest::collection::vec(0usize..200, 1..40),
        cut in any::<proptest::sample::Index>(),
        tail_kind in 0u8..3,
        garbage in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let log = open_log(dir, FsyncPolicy::Never, 400);
        let appended: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, len)| payload(i as u64 + 1, *len)).collect();
        for (i, p) in appended.iter().enumerate() {
            log.append(i as u64 + 1, 7, p);
        }
        log.close().unwrap();

        // Cut the concatenated segment bytes at one point: that segment is
        // shortened, every later one disappears (as after a crash).
        let files = segment_files(dir);
        let lens: Vec<u64> = files.iter().map(|p| fs::metadata(p).unwrap().len()).collect();
        let total: u64 = lens.iter().sum();
        let mut at = cut.index(total as usize + 1) as u64;
        let mut victim = files.len() - 1;
        for (i, len) in lens.iter().enumerate() {
            if at <= *len { victim = i; break; }
            at -= len;
        }
        for p in &files[victim + 1..] {
            fs::remove_file(p).unwrap();
        }
        let file = OpenOptions::new().write(true).open(&files[victim]).unwrap();
        file.set_len(at.min(lens[victim])).unwrap();
        drop(file);
        let mut f = OpenOptions::new().append(true).open(&files[victim]).unwrap();
        match tail_kind {
            1 => f.write_all(&vec![0u8; garbage.len()]).unwrap(),
            2 => f.write_all(&garbage).unwrap(),
            _ => {}
        }
        drop(f);

        let recovered = recover(dir).unwrap();
        let records = replay_all(dir);
        prop_assert_eq!(records.len() as u64, recovered.last_lsn());
        prop_assert!(records.len() <= appended.len());
        for (i, r) in records.iter().enumerate() {
            prop_assert_eq!(r.lsn, i as u64 + 1);
            prop_assert_eq!(r.epoch, 7);
            prop_assert_eq!(&r.payload, &appended[i]);
        }

        let next = recovered.last_lsn() + 1;
        let log = Log::open(LogConfig { dir: dir.into(), fsync: FsyncPolicy::Never, segment_bytes_max: 400 }, &recovered, Box::new(|_| {})).unwrap();
        log.append(next, 8, b"continues");
        log.close().unwrap();
        let again = recover(dir).unwrap();
        prop_assert!(again.torn_tail().is_none());
        prop_assert_eq!(again.last_lsn(), next);
    }
}
