//! Rollback files: the entries a returning old leader (or any node whose log
//! parted from the new leader's) had to remove, so that no write disappears
//! without a trace.
//!
//! Owns the file format and its reading and writing. A rollback file is
//! JSON lines in `<data_dir>/rollback/`: a header line, then one line per
//! effect with the entry's LSN, epoch and commit time, readable by a person
//! (`tandem rollback show`) and by a tool (`jq`, or [`read`]). Keys and
//! values are UTF-8 strings when they are valid UTF-8, else `{"hex": ..}`.
//!
//! Files are written atomically (temp, fsync, rename, directory fsync)
//! *before* the node discards the entries. This module never decides what
//! diverged; that is `tandem_core::failover::divergence_point`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tandem_core::effect::{Effect, LogEntry};
use tandem_core::{Epoch, Lsn};

/// Directory under the data directory.
pub const ROLLBACK_DIR: &str = "rollback";
/// First field of every header: the format and its version.
pub const ROLLBACK_FORMAT: &str = "tandem-rollback-v1";
/// Longest line `read` accepts (a 512 MiB value, hex-encoded, plus framing).
pub const ROLLBACK_LINE_BYTES_MAX: usize = (1 << 30) + 4096;

/// The first line of a rollback file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackHeader {
    /// Always [`ROLLBACK_FORMAT`].
    pub format: String,
    /// The node that removed the entries.
    pub node: u64,
    /// The leader whose log the node now follows.
    pub new_leader: u64,
    /// That leader's epoch.
    pub new_epoch: Epoch,
    /// The node's log agreed with the leader's up to here.
    pub kept_through_lsn: Lsn,
    /// First removed LSN.
    pub first_lsn: Lsn,
    /// Last removed LSN.
    pub last_lsn: Lsn,
    /// Removed entries.
    pub entries: u64,
    /// Removed entries that were no longer in the local log (already folded
    /// into a snapshot), so their effects cannot be listed.
    pub missing_entries: u64,
    /// Commit time of the first and last removed entry (unix ms).
    pub first_commit_ms: u64,
    /// See `first_commit_ms`.
    pub last_commit_ms: u64,
    /// When the file was written (unix ms) and as RFC 3339.
    pub created_ms: u64,
    /// See `created_ms`.
    pub created: String,
}

/// A rollback file on disk.
#[derive(Debug, Clone)]
pub struct RollbackFile {
    /// Its path.
    pub path: PathBuf,
    /// Its header.
    pub header: RollbackHeader,
}

/// Writes the removed `entries` (oldest first, after `kept_through_lsn`) to a
/// new rollback file in `data_dir/rollback/` and returns it.
#[allow(clippy::too_many_arguments)] // each is a field of the file's header
pub fn write(
    data_dir: &Path,
    node: u64,
    new_leader: u64,
    new_epoch: Epoch,
    kept_through_lsn: Lsn,
    last_lsn: Lsn,
    entries: &[LogEntry],
    created_ms: u64,
) -> std::io::Result<RollbackFile> {
    let dir = data_dir.join(ROLLBACK_DIR);
    std::fs::create_dir_all(&dir)?;
    let header = RollbackHeader {
        format: ROLLBACK_FORMAT.into(),
        node,
        new_leader,
        new_epoch,
        kept_through_lsn,
        first_lsn: kept_through_lsn + 1,
        last_lsn,
        entries: last_lsn - kept_through_lsn,
        missing_entries: (last_lsn - kept_through_lsn).saturating_sub(entries.len() as u64),
        first_commit_ms: entries.first().map_or(0, |e| e.commit_ms),
        last_commit_ms: entries.last().map_or(0, |e| e.commit_ms),
        created_ms,
        created: rfc3339(created_ms),
    };
    let name =
        format!("rollback-{created_ms}-node{node}-lsn{}-{last_lsn}-epoch{new_epoch}.jsonl", kept_through_lsn + 1);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        for entry in entries {
            for effect in &entry.effects {
                serde_json::to_writer(&mut out, &effect_line(entry, effect))?;
                out.write_all(b"\n")?;
            }
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(RollbackFile { path, header })
}

/// One effect as a JSON line.
fn effect_line(entry: &LogEntry, effect: &Effect) -> Value {
    let mut line = json!({
        "lsn": entry.lsn,
        "epoch": entry.epoch,
        "commit_ms": entry.commit_ms,
        "commit_time": rfc3339(entry.commit_ms),
    });
    let fields = match effect {
        Effect::Set { key, value, expire_at_ms } => {
            json!({"op": "set", "key": text(key), "value": text(value), "expire_at_ms": expire_at_ms})
        }
        Effect::Del { key } => json!({"op": "del", "key": text(key)}),
        Effect::Evict { key } => json!({"op": "evict", "key": text(key)}),
        Effect::Expire { key, expire_at_ms } => json!({"op": "expire", "key": text(key), "expire_at_ms": expire_at_ms}),
        Effect::SAdd { key, members } => {
            json!({"op": "sadd", "key": text(key), "members": members.iter().map(text).collect::<Vec<_>>()})
        }
        Effect::SRem { key, members } => {
            json!({"op": "srem", "key": text(key), "members": members.iter().map(text).collect::<Vec<_>>()})
        }
        Effect::FlushAll => json!({"op": "flushall"}),
        Effect::HSet { key, fields } => json!({"op": "hset", "key": text(key),
            "fields": fields.iter().map(|(f, v)| json!([text(f), text(v)])).collect::<Vec<_>>()}),
        Effect::HDel { key, fields } => {
            json!({"op": "hdel", "key": text(key), "fields": fields.iter().map(text).collect::<Vec<_>>()})
        }
        Effect::LPush { key, left, items, seq } => {
            json!({"op": if *left { "lpush" } else { "rpush" }, "key": text(key),
            "items": items.iter().map(text).collect::<Vec<_>>(), "seq": seq})
        }
        Effect::LPop { key, left, count, seq } => {
            json!({"op": if *left { "lpop" } else { "rpop" }, "key": text(key), "count": count, "seq": seq})
        }
        Effect::LSet { key, index, value, seq } => {
            json!({"op": "lset", "key": text(key), "index": index, "value": text(value), "seq": seq})
        }
        Effect::ZAdd { key, members } => json!({"op": "zadd", "key": text(key),
            "members": members.iter().map(|(b, m)| json!([f64::from_bits(*b), text(m)])).collect::<Vec<_>>()}),
        Effect::ZRem { key, members } => {
            json!({"op": "zrem", "key": text(key), "members": members.iter().map(text).collect::<Vec<_>>()})
        }
        Effect::LReplace { key, items, seq } => json!({"op": "lreplace", "key": text(key),
            "items": items.iter().map(text).collect::<Vec<_>>(), "seq": seq}),
    };
    if let (Value::Object(l), Value::Object(f)) = (&mut line, fields) {
        l.extend(f);
    }
    line
}

/// A key or value: a string when it is UTF-8, else `{"hex": ".."}`.
fn text(bytes: &Bytes) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => json!({ "hex": bytes.iter().map(|b| format!("{b:02x}")).collect::<String>() }),
    }
}

/// The rollback files in `data_dir`, oldest first.
pub fn list(data_dir: &Path) -> Result<Vec<RollbackFile>, String> {
    let dir = data_dir.join(ROLLBACK_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "jsonl") {
            files.push(RollbackFile { header: read_header(&path)?, path });
        }
    }
    files.sort_by_key(|f| (f.header.created_ms, f.path.clone()));
    Ok(files)
}

/// Reads a rollback file's header.
pub fn read_header(path: &Path) -> Result<RollbackHeader, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut first = String::new();
    std::io::BufReader::new(std::io::Read::take(file, ROLLBACK_LINE_BYTES_MAX as u64))
        .read_line(&mut first)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let header: RollbackHeader =
        serde_json::from_str(&first).map_err(|e| format!("{} line 1 is not a rollback header: {e}", path.display()))?;
    if header.format != ROLLBACK_FORMAT {
        return Err(format!("{}: unknown format {:?}", path.display(), header.format));
    }
    Ok(header)
}

/// Reads a whole rollback file: the header and one JSON value per effect.
pub fn read(path: &Path) -> Result<(RollbackHeader, Vec<Value>), String> {
    let header = read_header(path)?;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate().skip(1) {
        let line = line.map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        if line.len() > ROLLBACK_LINE_BYTES_MAX {
            return Err(format!("{} line {} exceeds ROLLBACK_LINE_BYTES_MAX", path.display(), n + 1));
        }
        lines.push(serde_json::from_str(&line).map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?);
    }
    Ok((header, lines))
}

/// Unix ms as RFC 3339 UTC with milliseconds (`2026-11-26T15:42:55.123Z`).
pub fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_707_775_123), "2026-11-26T15:42:55.123Z");
    }

    #[test]
    fn rollback_file_round_trips_every_effect() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![
            LogEntry {
                lsn: 11,
                epoch: 3,
                commit_ms: 1000,
                effects: vec![
                    Effect::Set { key: "k".into(), value: Bytes::from_static(b"\xff\x00"), expire_at_ms: Some(9) },
                    Effect::Del { key: "d".into() },
                ],
            },
            LogEntry {
                lsn: 12,
                epoch: 3,
                commit_ms: 1001,
                effects: vec![Effect::SAdd { key: "s".into(), members: vec!["a".into()] }, Effect::FlushAll],
            },
        ];
        let f = write(dir.path(), 1, 2, 4, 10, 12, &entries, 5000).unwrap();
        assert_eq!(f.header.entries, 2);
        assert_eq!(f.header.missing_entries, 0);
        let listed = list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].header, f.header);
        let (header, lines) = read(&f.path).unwrap();
        assert_eq!(header.first_lsn, 11);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["op"], "set");
        assert_eq!(lines[0]["value"]["hex"], "ff00");
        assert_eq!(lines[0]["expire_at_ms"], 9);
        assert_eq!(lines[1]["key"], "d");
        assert_eq!(lines[2]["members"][0], "a");
        assert_eq!(lines[3]["op"], "flushall");
        assert_eq!(lines[3]["lsn"], 12);
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(dir.path().join(ROLLBACK_DIR)).unwrap().count(), 1);
    }

    #[test]
    fn a_file_that_is_not_a_rollback_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(ROLLBACK_DIR)).unwrap();
        let bad = dir.path().join(ROLLBACK_DIR).join("x.jsonl");
        std::fs::write(&bad, "{not json\n").unwrap();
        let err = list(dir.path()).unwrap_err();
        assert!(err.contains("x.jsonl"), "{err}");
    }
}
