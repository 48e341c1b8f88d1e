//! Tests of snapshot files: roundtrip, atomic publication, detection of
//! truncation and corruption, fallback, pruning.

use std::fs::{self, OpenOptions};
use std::path::Path;
use std::time::Instant;

use super::*;

fn chunk(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 131 + j * 17) as u8).collect()
}

fn write_snapshot(dir: &Path, start_lsn: u64, chunks: usize) -> SnapshotInfo {
    let mut w = SnapshotWriter::create(dir, start_lsn).unwrap();
    for i in 0..chunks {
        w.write_chunk(&chunk(i, 100 + i * 10)).unwrap();
    }
    w.finish(start_lsn + 5, 1_700_000_000_000 + start_lsn).unwrap()
}

fn load(reader: SnapshotReader) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .for_each_chunk(|c| {
            out.push(c.to_vec());
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    out
}

#[test]
fn snapshot_roundtrip() {
    let tmp = tempfile::tempdir().unwrap();
    let info = write_snapshot(tmp.path(), 42, 20);
    assert_eq!(info.path, snapshot_path(tmp.path(), 42));
    assert_eq!(info.chunks, 20);
    assert_eq!(info.bytes, fs::metadata(&info.path).unwrap().len());
    let reader = latest_valid(tmp.path()).unwrap().expect("a snapshot");
    assert_eq!(reader.meta(), SnapshotMeta { start_lsn: 42, end_lsn: 47, created_unix_ms: 1_700_000_000_042 });
    assert_eq!(reader.chunks(), 20);
    let chunks = load(reader);
    assert_eq!(chunks, (0..20).map(|i| chunk(i, 100 + i * 10)).collect::<Vec<_>>());
}

#[test]
fn empty_snapshot_roundtrips() {
    let tmp = tempfile::tempdir().unwrap();
    write_snapshot(tmp.path(), 1, 0);
    assert!(load(latest_valid(tmp.path()).unwrap().unwrap()).is_empty());
}

#[test]
fn empty_dir_has_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(latest_valid(tmp.path()).unwrap().is_none());
    assert!(latest_valid(&tmp.path().join("missing")).unwrap().is_none());
}

#[test]
fn truncated_snapshot_is_rejected_and_previous_used() {
    let tmp = tempfile::tempdir().unwrap();
    write_snapshot(tmp.path(), 10, 5);
    let newest = write_snapshot(tmp.path(), 20, 5);
    let file = OpenOptions::new().write(true).open(&newest.path).unwrap();
    file.set_len(newest.bytes - 40).unwrap();
    drop(file);

    let err = SnapshotReader::open(&newest.path).unwrap_err();
    assert!(matches!(err, StorageError::CorruptSnapshot { .. }), "{err}");
    assert!(err.to_string().contains(&newest.path.display().to_string()), "{err}");
    let reader = latest_valid(tmp.path()).unwrap().expect("the older snapshot");
    assert_eq!(reader.meta().start_lsn, 10);
    assert_eq!(load(reader).len(), 5);
}

#[test]
fn corrupt_chunk_in_newest_snapshot_falls_back_to_previous() {
    let tmp = tempfile::tempdir().unwrap();
    write_snapshot(tmp.path(), 10, 5);
    let newest = write_snapshot(tmp.path(), 20, 5);
    let mut bytes = fs::read(&newest.path).unwrap();
    let at = SNAPSHOT_HEADER_BYTES as usize + 8 + 100 + 8 + 3; // inside chunk 1
    bytes[at] ^= 0x01;
    fs::write(&newest.path, bytes).unwrap();

    match SnapshotReader::open(&newest.path).unwrap_err() {
        StorageError::CorruptSnapshot { offset, reason, .. } => {
            assert_eq!(offset, SNAPSHOT_HEADER_BYTES + 8 + 100);
            assert!(reason.contains("chunk crc mismatch"), "{reason}");
        }
        other => panic!("expected CorruptSnapshot, got {other}"),
    }
    assert_eq!(latest_valid(tmp.path()).unwrap().unwrap().meta().start_lsn, 10);
}

#[test]
fn no_valid_snapshot_is_an_error_not_none() {
    let tmp = tempfile::tempdir().unwrap();
    let only = write_snapshot(tmp.path(), 10, 3);
    let mut bytes = fs::read(&only.path).unwrap();
    bytes[0] = b'X';
    fs::write(&only.path, bytes).unwrap();
    let err = latest_valid(tmp.path()).unwrap_err();
    assert!(matches!(&err, StorageError::CorruptSnapshot { offset: 0, .. }), "{err}");
}

#[test]
fn renamed_snapshot_with_mismatched_start_lsn_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let info = write_snapshot(tmp.path(), 10, 1);
    fs::rename(&info.path, snapshot_path(tmp.path(), 99)).unwrap();
    let err = latest_valid(tmp.path()).unwrap_err();
    assert!(err.to_string().contains("file name says 99"), "{err}");
}

#[test]
fn unfinished_writer_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut w = SnapshotWriter::create(tmp.path(), 7).unwrap();
    w.write_chunk(b"half a snapshot").unwrap();
    drop(w);
    assert!(list(tmp.path()).unwrap().is_empty());
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 0, "temp file removed");
    assert!(latest_valid(tmp.path()).unwrap().is_none());
}

#[test]
fn stale_temp_files_are_ignored_and_removable() {
    let tmp = tempfile::tempdir().unwrap();
    write_snapshot(tmp.path(), 3, 2);
    fs::write(tmp.path().join("snap-00000000000000000009.snap.tmp"), b"interrupted").unwrap();
    assert_eq!(latest_valid(tmp.path()).unwrap().unwrap().meta().start_lsn, 3);
    assert_eq!(remove_temp_files(tmp.path()).unwrap(), 1);
    assert_eq!(list(tmp.path()).unwrap().len(), 1);
}

#[test]
fn prune_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    for lsn in [5, 15, 10, 20] {
        write_snapshot(tmp.path(), lsn, 1);
    }
    let kept = prune(tmp.path(), 2).unwrap();
    assert_eq!(kept.iter().map(|f| f.start_lsn).collect::<Vec<_>>(), vec![15, 20]);
    assert_eq!(list(tmp.path()).unwrap(), kept);
    assert_eq!(prune(tmp.path(), 5).unwrap().len(), 2);
}

#[test]
fn reader_survives_prune_of_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    write_snapshot(tmp.path(), 1, 4);
    let reader = latest_valid(tmp.path()).unwrap().unwrap();
    write_snapshot(tmp.path(), 2, 1);
    prune(tmp.path(), 1).unwrap();
    assert_eq!(load(reader).len(), 4);
}

#[test]
fn large_snapshot_loads_quickly() {
    // 32 MiB in 64 KiB chunks; the bound is loose because tests build
    // without optimisation.
    let tmp = tempfile::tempdir().unwrap();
    let data = vec![0x5au8; 64 << 10];
    let mut w = SnapshotWriter::create(tmp.path(), 1).unwrap();
    for _ in 0..512 {
        w.write_chunk(&data).unwrap();
    }
    w.finish(1, 0).unwrap();
    let started = Instant::now();
    let reader = latest_valid(tmp.path()).unwrap().unwrap();
    let mut bytes = 0usize;
    reader
        .for_each_chunk(|c| {
            bytes += c.len();
            Ok::<(), std::io::Error>(())
        })
        .unwrap();
    assert_eq!(bytes, 32 << 20);
    let took = started.elapsed();
    assert!(took.as_secs_f64() < 2.0, "verify + load of 32 MiB took {took:?}");
}
