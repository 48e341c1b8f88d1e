//! End-to-end tests of the library: base + archive → restore to an exact
//! LSN or time equals a reference replay; corruption and gaps are named.

use bytes::Bytes;
use tandem_core::effect::{Effect, LogEntry};
use tandem_core::store::{Store, BUCKETS};
use tandem_storage::snapshot::SnapshotWriter;

use crate::archive::{list_stream, ArchiveWriter};
use crate::base::{BaseSource, BaseWriter};
use crate::maintain::{list, prune, verify};
use crate::records::encode_record;
use crate::restore::{plan, replay, restore, Target};
use crate::{BackupError, Repository};

const T0_MS: u64 = 1_795_690_000_000;

/// Entry `lsn`: commit time T0 + 10 ms per lsn; sets, deletes, set adds and
/// one FLUSHALL at lsn 150 (the "DELETE FROM users" of the scenario).
fn entry(lsn: u64) -> LogEntry {
    let key = Bytes::from(format!("users:{}", lsn % 37));
    let effects = match lsn {
        150 => vec![Effect::FlushAll],
        l if l % 11 == 0 => vec![Effect::Del { key }],
        l if l % 7 == 0 => vec![Effect::SAdd { key: "tags".into(), members: vec![Bytes::from(format!("t{l}"))] }],
        l => vec![Effect::Set { key, value: Bytes::from(format!("v{l}")), expire_at_ms: None }],
    };
    LogEntry { lsn, epoch: 1, commit_ms: T0_MS + lsn * 10, effects }
}

fn payload(lsn: u64) -> Vec<u8> {
    let mut p = Vec::new();
    entry(lsn).encode_payload(&mut p);
    p
}

fn reference(upto: u64) -> Store {
    let mut s = Store::new(1);
    for lsn in 1..=upto {
        for e in &entry(lsn).effects {
            s.apply(e);
        }
    }
    s
}

/// A base taken at `start` (snapshot holds exactly the state at `start`),
/// consistent at `end`.
fn take_base(repo: &Repository, start: u64, end: u64) {
    let store = reference(start);
    let tmp = tempfile::tempdir().unwrap();
    let mut w = SnapshotWriter::create(tmp.path(), start).unwrap();
    let mut chunk = Vec::new();
    for b in 0..BUCKETS {
        chunk.clear();
        store.encode_bucket(b, &mut chunk);
        if !chunk.is_empty() {
            w.write_chunk(&chunk).unwrap();
        }
    }
    let info = w.finish(end, T0_MS + end * 10).unwrap();
    let source = BaseSource {
        node_id: 1,
        start_lsn: start,
        end_lsn: end,
        end_commit_ms: T0_MS + end * 10,
        epoch: 1,
        keys: store.len() as u64,
        snapshot_bytes: info.bytes,
        snapshot_name: "x".into(),
        created_unix_ms: T0_MS + end * 10,
    };
    let mut bw = BaseWriter::begin(repo, source).unwrap();
    let snap = std::fs::read(tandem_storage::snapshot::snapshot_path(tmp.path(), start)).unwrap();
    for piece in snap.chunks(1000) {
        bw.write_snapshot(piece).unwrap();
    }
    let mut run = Vec::new();
    for lsn in start + 1..=end + 5 {
        encode_record(&mut run, lsn, 1, &payload(lsn));
    }
    bw.write_log(&run).unwrap();
    bw.finish().unwrap();
}

fn archive(repo: &Repository, lsns: impl Iterator<Item = u64>) {
    let mut w = ArchiveWriter::open_with_limit(repo, 1, 4096).unwrap();
    let payloads: Vec<(u64, Vec<u8>)> = lsns.map(|l| (l, payload(l))).collect();
    // In batches, as a node ships them; a file seals between batches.
    for batch in payloads.chunks(20) {
        w.append(batch.iter().map(|(l, p)| (*l, 1, p.as_slice()))).unwrap();
    }
}

fn repo() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::create_or_open(&dir.path().join("repo")).unwrap();
    (dir, repo)
}

#[test]
fn restore_to_an_exact_lsn_equals_a_reference_replay() {
    let (_d, repo) = repo();
    take_base(&repo, 40, 55);
    archive(&repo, 1..=300);
    for n in [55, 56, 149, 150, 151, 300] {
        let restored = replay(&plan(&repo, Target::Lsn(n)).unwrap(), &mut |_| {}).unwrap();
        assert_eq!(restored.last_lsn, n);
        assert_eq!(restored.store.digest(), reference(n).digest(), "state at lsn {n}");
    }
    assert!(matches!(plan(&repo, Target::Lsn(54)), Err(BackupError::Invalid(_))));
    let err = plan(&repo, Target::Lsn(301)).unwrap_err();
    assert!(matches!(err, BackupError::Gap { from_lsn: 301, .. }), "{err}");
}

#[test]
fn restore_to_one_second_before_the_flushall_brings_every_key_back() {
    let (_d, repo) = repo();
    take_base(&repo, 10, 20);
    archive(&repo, 1..=200);
    let flush_ms = entry(150).commit_ms;
    let restored = replay(&plan(&repo, Target::Time(flush_ms - 1)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(restored.last_lsn, 149);
    assert_eq!(restored.store.digest(), reference(149).digest());
    assert!(restored.store.len() > 30);
    let err = plan(&repo, Target::Time(T0_MS)).unwrap_err();
    assert!(err.to_string().contains("before the oldest base backup"), "{err}");
}

#[test]
fn the_restored_data_directory_holds_the_state() {
    let (d, repo) = repo();
    take_base(&repo, 10, 20);
    archive(&repo, 1..=120);
    let data = d.path().join("data");
    let report = restore(&repo, &data, Target::Latest, &mut |_| {}).unwrap();
    assert_eq!(report.last_lsn, 120);
    let snap = tandem_storage::snapshot::latest_valid(&data.join("snapshots")).unwrap().unwrap();
    assert_eq!(snap.meta().start_lsn, 120);
    let mut store = Store::new(9);
    snap.for_each_chunk(|c| store.load_chunk(c).map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()))).unwrap();
    assert_eq!(store.digest(), reference(120).digest());
    assert!(restore(&repo, &data, Target::Latest, &mut |_| {}).unwrap_err().to_string().contains("not empty"));
}

#[test]
fn a_corrupted_archive_file_is_named_by_verify_and_restore() {
    let (_d, repo) = repo();
    take_base(&repo, 10, 20);
    archive(&repo, 1..=300);
    assert!(verify(&repo).unwrap().problems.is_empty());
    let files = list_stream(&repo.stream_dir(1)).unwrap();
    let victim = files.iter().find(|f| f.meta.first_lsn > 20).unwrap();
    let mut bytes = std::fs::read(&victim.path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&victim.path, bytes).unwrap();
    let name = victim.path.file_name().unwrap().to_string_lossy().into_owned();
    let problems = verify(&repo).unwrap().problems;
    assert!(problems.iter().any(|p| p.contains(&name)), "{problems:?}");
    let err = replay(&plan(&repo, Target::Latest).unwrap(), &mut |_| {}).err().unwrap();
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn a_gap_in_the_archive_is_detected_by_verify_list_and_restore() {
    let (_d, repo) = repo();
    take_base(&repo, 10, 20);
    archive(&repo, 1..=100);
    archive(&repo, 130..=200);
    let problems = verify(&repo).unwrap().problems;
    assert!(problems.iter().any(|p| p.contains("lsn 101..=129")), "{problems:?}");
    assert_eq!(list(&repo).unwrap().streams[0].gaps, vec![(101, 129)]);
    let err = plan(&repo, Target::Latest).unwrap_err();
    assert!(matches!(err, BackupError::Gap { from_lsn: 101, to_lsn: 129, .. }), "{err}");
    // Up to the gap is still restorable.
    let restored = replay(&plan(&repo, Target::Lsn(100)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(restored.store.digest(), reference(100).digest());
}

#[test]
fn prune_keeps_the_newest_bases_and_the_archive_they_need() {
    let (_d, repo) = repo();
    take_base(&repo, 10, 20);
    take_base(&repo, 100, 110);
    take_base(&repo, 200, 210);
    archive(&repo, 1..=300);
    let report = prune(&repo, Some(2), None, T0_MS + 10_000).unwrap();
    assert_eq!(report.removed_bases.len(), 1);
    assert!(!report.removed_archive_files.is_empty());
    let listing = list(&repo).unwrap();
    assert_eq!(listing.bases.len(), 2);
    assert_eq!(listing.bases[0].restorable_to_lsn, 300);
    assert!(verify(&repo).unwrap().problems.is_empty(), "{:?}", verify(&repo).unwrap().problems);
    let restored = replay(&plan(&repo, Target::Lsn(111)).unwrap(), &mut |_| {}).unwrap();
    assert_eq!(restored.store.digest(), reference(111).digest());
}

#[test]
fn verify_reports_every_bad_file_not_just_the_first() {
    let (_d, repo) = repo();
    take_base(&repo, 10, 20);
    archive(&repo, 1..=300);
    let files = list_stream(&repo.stream_dir(1)).unwrap();
    assert!(files.len() >= 3);
    let manifest = crate::archive::meta_path_of(&files[0].path);
    let text = std::fs::read_to_string(&manifest).unwrap().replacen("\"sealed\": true", "\"sealed\": false", 1);
    std::fs::write(&manifest, text).unwrap();
    let mut seg = std::fs::read(&files[2].path).unwrap();
    seg[20] ^= 1;
    std::fs::write(&files[2].path, seg).unwrap();
    let problems = verify(&repo).unwrap().problems;
    let named = |p: &std::path::Path| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        problems.iter().any(|x| x.contains(&name))
    };
    assert!(named(&manifest) && named(&files[2].path), "{problems:?}");
}

#[test]
fn a_restore_that_dies_before_publishing_leaves_a_directory_the_server_refuses_and_a_rerun_completes() {
    use crate::restore::{refuse_half_restored, RestoreDir, RESTORE_MARKER_FILE};
    let (d, repo) = repo();
    take_base(&repo, 10, 20);
    archive(&repo, 1..=120);
    let data = d.path().join("restored");
    // A restore claims its target first; dropping it without publishing is
    // what a kill -9 mid-replay leaves (the lock goes with the process).
    let claimed = RestoreDir::begin(&data).unwrap();
    let staging = claimed.staging().to_path_buf();
    assert!(staging.join(RESTORE_MARKER_FILE).exists(), "the staging directory is marked too");
    let second = RestoreDir::begin(&data).err().expect("a second restore into a claimed target is refused");
    assert!(second.to_string().contains("another `tandem restore`"), "{second}");
    drop(claimed);
    let err = refuse_half_restored(&data).unwrap_err().to_string();
    assert!(err.contains("half-restored") && err.contains(&data.display().to_string()), "{err}");
    assert!(refuse_half_restored(&staging).is_err(), "the staging directory is refused too");

    let report = restore(&repo, &data, Target::Latest, &mut |_| {}).unwrap();
    assert_eq!(report.last_lsn, 120);
    refuse_half_restored(&data).unwrap();
    assert!(!staging.exists(), "the staging directory is gone after a complete restore");
    assert!(data.join("epoch").exists() && data.join("snapshots").is_dir());
}

#[test]
fn prune_removes_the_staging_of_a_dead_base_backup_and_never_a_live_one() {
    use crate::base::{STAGING_LOCK_FILE, STAGING_PREFIX};
    use crate::maintain::{prune_staging, STAGING_UNLOCKED_AGE_MS};
    let (_d, repo) = repo();
    take_base(&repo, 10, 20);
    let source = BaseSource {
        node_id: 2,
        start_lsn: 30,
        end_lsn: 40,
        end_commit_ms: T0_MS,
        epoch: 1,
        keys: 0,
        snapshot_bytes: 0,
        snapshot_name: "snap".into(),
        created_unix_ms: T0_MS + 5,
    };
    let live = BaseWriter::begin(&repo, source).unwrap();
    let live_dir = repo.base_root().join(format!("{STAGING_PREFIX}{}", live.id()));
    // A dead writer's directory: its lock file is there but nobody holds it.
    let dead_dir = repo.base_root().join(format!("{STAGING_PREFIX}000000000000001-node1-lsn9"));
    std::fs::create_dir_all(&dead_dir).unwrap();
    std::fs::write(dead_dir.join(STAGING_LOCK_FILE), b"").unwrap();
    std::fs::write(dead_dir.join("snapshot.snap"), b"half a snapshot").unwrap();
    // One without a lock file (an older version's): removed only when old.
    let unlocked_dir = repo.base_root().join(format!("{STAGING_PREFIX}000000000000002-node1-lsn9"));
    std::fs::create_dir_all(&unlocked_dir).unwrap();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let removed = prune_staging(&repo, now).unwrap();
    assert_eq!(removed, vec![dead_dir.display().to_string()]);
    assert!(live_dir.exists() && unlocked_dir.exists() && !dead_dir.exists());
    let removed = prune_staging(&repo, now + STAGING_UNLOCKED_AGE_MS + 1000).unwrap();
    assert_eq!(removed, vec![unlocked_dir.display().to_string()], "the live one is kept at any age");
    assert!(live_dir.exists());
    // prune without retention flags removes only dead staging; the base stays.
    drop(live);
    let report = prune(&repo, None, None, now).unwrap();
    assert_eq!(report.removed_staging, vec![live_dir.display().to_string()]);
    assert!(report.removed_bases.is_empty() && report.kept_bases.len() == 1);
    assert_eq!(list(&repo).unwrap().bases.len(), 1);
}
