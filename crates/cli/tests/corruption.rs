//! Recovery from damaged log files on the real binary: a torn tail is cut
//! and reported, corruption in the middle stops the node with file and
//! offset, and `tandem log repair` truncates deliberately.
//!
//! Every server here runs with `--snapshot-entries 0` so the log is never
//! truncated behind a snapshot while the test holds offsets into it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{segments, tandem_bin, tempdir, TestServer};

/// Segment header: 8-byte magic + u32 version.
const SEGMENT_HEADER_BYTES: u64 = 12;
/// Record header: u32 len, u32 crc32c, u64 lsn, u64 epoch.
const RECORD_HEADER_BYTES: u64 = 24;
/// Keys written (one acknowledged SET, so one log record, each).
const KEYS: usize = 200;

fn start(dir: &Path) -> TestServer {
    TestServer::start(dir, &["--snapshot-entries", "0", "--fsync", "batch"])
}

/// Writes `key:0..KEYS` one acknowledged SET at a time, then crashes the
/// node so that everything lives in the log only.
fn write_keys_and_crash(server: &mut TestServer) {
    let mut con = server.conn();
    for i in 0..KEYS {
        let () = redis::cmd("SET").arg(format!("key:{i}")).arg(format!("value:{i}")).query(&mut con).unwrap();
    }
    drop(con);
    server.kill9();
}

fn only_segment(dir: &Path) -> PathBuf {
    let segs = segments(dir);
    assert!(!segs.is_empty(), "no log segment in {}/log", dir.display());
    segs[0].clone()
}

/// Byte offsets of the records of a segment, parsed from the documented
/// layout (header, then `u32 len | u32 crc | u64 lsn | u64 epoch | payload`).
fn record_offsets(seg: &Path) -> Vec<u64> {
    let bytes = std::fs::read(seg).unwrap();
    assert_eq!(&bytes[..8], b"TNDMLOG1", "segment magic of {}", seg.display());
    let mut offsets = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    while at + RECORD_HEADER_BYTES as usize <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + RECORD_HEADER_BYTES as usize + len > bytes.len() {
            break;
        }
        offsets.push(at as u64);
        at += RECORD_HEADER_BYTES as usize + len;
    }
    assert_eq!(at, bytes.len(), "{} does not parse as whole records", seg.display());
    offsets
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

fn present_keys(server: &TestServer) -> Vec<bool> {
    let mut con = server.conn();
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key:{i}")).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            None => false,
            Some(v) => {
                assert_eq!(v, &format!("value:{i}"), "key:{i}");
                true
            }
        })
        .collect()
}

/// Corrupts the payload of the record at index `index` of the first segment
/// and returns (segment, offset of that record).
fn corrupt_record(dir: &Path, index: usize) -> (PathBuf, u64) {
    let seg = only_segment(dir);
    let offsets = record_offsets(&seg);
    assert!(offsets.len() >= KEYS, "expected at least {KEYS} records in {}, found {}", seg.display(), offsets.len());
    let record = offsets[index];
    let payload_len = offsets[index + 1] - record - RECORD_HEADER_BYTES;
    assert!(payload_len > 2, "record {index} has a {payload_len}-byte payload");
    flip_byte(&seg, record + RECORD_HEADER_BYTES + 2);
    (seg, record)
}

#[test]
fn torn_tail_is_cut_and_node_starts() {
    let dir = tempdir();
    let mut server = start(dir.path());
    write_keys_and_crash(&mut server);
    let segs = segments(dir.path());
    let last = segs.last().expect("a log segment").clone();
    let intact_len = std::fs::metadata(&last).unwrap().len();
    // An interrupted append: garbage after the last whole record.
    let garbage: Vec<u8> = (0..37u8).map(|b| b.wrapping_mul(73) ^ 0xa5).collect();
    std::fs::OpenOptions::new().append(true).open(&last).unwrap().write_all(&garbage).unwrap();

    server.restart();
    assert!(present_keys(&server).iter().all(|p| *p), "every acknowledged key survives a torn tail");
    let stderr = server.stderr();
    assert!(
        stderr.contains("torn tail") && stderr.contains(&last.display().to_string()),
        "stderr must report the cut naming {}; got:\n{stderr}",
        last.display()
    );
    assert_eq!(std::fs::metadata(&last).unwrap().len(), intact_len, "the garbage is cut off exactly");

    // The cut log accepts new writes and recovers cleanly again.
    {
        let mut con = server.conn();
        let () = redis::cmd("SET").arg("after-cut").arg("yes").query(&mut con).unwrap();
    }
    server.kill9();
    server.restart();
    let v: Option<String> = redis::cmd("GET").arg("after-cut").query(&mut server.conn()).unwrap();
    assert_eq!(v.as_deref(), Some("yes"));
    assert!(!server.stderr().contains("torn tail"), "no torn tail on the second restart:\n{}", server.stderr());
}

#[test]
fn mid_log_corruption_stops_the_node_naming_file_and_offset() {
    let dir = tempdir();
    let mut server = start(dir.path());
    write_keys_and_crash(&mut server);
    let (seg, record) = corrupt_record(dir.path(), 0);
    assert_eq!(record, SEGMENT_HEADER_BYTES);
    let damaged = std::fs::read(&seg).unwrap();

    let failure = match server.try_restart() {
        Ok(_) => panic!("the node started on a log with a bad checksum in its first record"),
        Err(f) => f,
    };
    let status = failure.status.expect("the node exits (it must not hang) on mid-log corruption");
    assert!(!status.success(), "exit status {status}, expected non-zero");
    let path = seg.display().to_string();
    assert!(
        failure.stderr.contains(&path) && failure.stderr.contains(&format!("byte offset {record}")),
        "stderr must name {path} and \"byte offset {record}\"; got:\n{}",
        failure.stderr
    );
    assert_eq!(std::fs::read(&seg).unwrap(), damaged, "a refused start must leave the log untouched");
}

#[test]
fn log_repair_truncates_at_the_corruption() {
    let dir = tempdir();
    let mut server = start(dir.path());
    write_keys_and_crash(&mut server);
    let index = KEYS / 2;
    let one_record_per_set = record_offsets(&only_segment(dir.path())).len() == KEYS;
    let (seg, record) = corrupt_record(dir.path(), index);
    assert!(server.try_restart().is_err(), "the node must refuse a corrupt log before repair");
    let data_dir = dir.path().to_str().unwrap();

    // Without --yes: reports, changes nothing, exits non-zero.
    let before = std::fs::read(&seg).unwrap();
    let dry = Command::new(tandem_bin()).args(["log", "repair", "--data-dir", data_dir]).output().unwrap();
    let dry_out = String::from_utf8_lossy(&dry.stdout).into_owned() + &String::from_utf8_lossy(&dry.stderr);
    assert!(!dry.status.success(), "repair without --yes must not report success: {dry_out}");
    assert!(dry_out.contains(&format!("byte offset {record}")), "repair names the offset {record}: {dry_out}");
    assert_eq!(std::fs::read(&seg).unwrap(), before, "repair without --yes changed the log");
    // --dry-run says, in words, what a repair would drop; it changes nothing.
    let plan =
        Command::new(tandem_bin()).args(["log", "repair", "--data-dir", data_dir, "--dry-run"]).output().unwrap();
    let plan_out = String::from_utf8_lossy(&plan.stdout).into_owned();
    assert!(plan_out.contains("dry run: a repair would") && plan_out.contains("intact record(s)"), "{plan_out}");
    assert!(plan_out.contains(&format!("at byte {record}")), "the plan names the cut: {plan_out}");
    assert_eq!(std::fs::read(&seg).unwrap(), before, "repair --dry-run changed the log");

    let real = Command::new(tandem_bin()).args(["log", "repair", "--data-dir", data_dir, "--yes"]).output().unwrap();
    let real_out = String::from_utf8_lossy(&real.stdout).into_owned() + &String::from_utf8_lossy(&real.stderr);
    assert!(real.status.success(), "tandem log repair --yes failed: {real_out}");
    assert!(real_out.contains("repaired: the log now ends before the damage"), "readable report: {real_out}");
    assert!(!real_out.contains("RepairReport {"), "no Rust debug struct in the output: {real_out}");
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), record, "the segment is truncated at the bad record");

    let server = TestServer::start(dir.path(), &["--snapshot-entries", "0"]);
    let present = present_keys(&server);
    let kept = present.iter().take_while(|p| **p).count();
    assert!(present[kept..].iter().all(|p| !*p), "repair keeps a prefix of the log: {present:?}");
    assert!(
        kept > 0 && kept <= index,
        "keys before the corruption are kept, none from it on: kept {kept}, bad record {index}"
    );
    if one_record_per_set {
        assert_eq!(kept, index, "every record before the bad one is kept");
    }
}

#[test]
fn a_damaged_epoch_history_stops_the_node_naming_the_file_and_line() {
    let dir = tempdir();
    let mut server = start(dir.path());
    write_keys_and_crash(&mut server);
    let history = dir.path().join("epochs");
    assert!(history.exists(), "a leader records where its epoch starts");
    std::fs::write(&history, "1 1\nnot a pair\n").unwrap();
    let failure = match server.try_restart() {
        Ok(_) => panic!("the node started with a damaged epoch history"),
        Err(f) => f,
    };
    assert!(!failure.status.expect("the node exits").success());
    let path = history.display().to_string();
    assert!(
        failure.stderr.contains(&path) && failure.stderr.contains("line 2"),
        "stderr must name {path} and line 2; got:\n{}",
        failure.stderr
    );
}
