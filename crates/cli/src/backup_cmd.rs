//! `tandem backup base|list|verify|prune` and `tandem restore`.
//!
//! Parses arguments, moves bytes from a node's admin endpoint into the
//! repository (with progress on stderr) and prints results; every decision
//! about the repository is `tandem-backup`'s. Never writes into the
//! repository except through that crate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tandem_backup::base::{BaseSource, BaseWriter};
use tandem_backup::maintain;
use tandem_backup::restore::{self, Target};
use tandem_backup::time::{format_rfc3339, parse_rfc3339};
use tandem_backup::Repository;

/// Bytes requested per HTTP request while copying a snapshot or the log.
const PIECE_BYTES: u64 = 8 << 20;
/// Read timeout of admin HTTP requests (a base snapshot of a big store takes a while).
const HTTP_TIMEOUT: Duration = Duration::from_secs(600);
/// Progress lines are printed at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// `tandem backup ...`.
#[derive(Subcommand)]
pub enum BackupCommand {
    /// Take a consistent base backup from a running node (leader or
    /// follower) over its admin address while writes continue.
    Base {
        /// Backup repository directory (created if missing or empty).
        #[arg(long, env = "TANDEM_BACKUP_REPO")]
        repo: PathBuf,
        /// The node's admin (HTTP) address (`--from` is an old name).
        #[arg(long = "admin", alias = "from", default_value = "127.0.0.1:7380", env = "TANDEM_ADMIN_ADDR")]
        from: String,
        #[command(flatten)]
        tls: crate::http::AdminTlsArgs,
    },
    /// List base backups, archive streams, and what is restorable to which
    /// LSNs and times.
    List {
        /// Backup repository directory.
        #[arg(long, env = "TANDEM_BACKUP_REPO")]
        repo: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum (manifests, snapshots, every log record) and
    /// that the archived log has no gap. Exits 1 if anything is wrong.
    Verify {
        /// Backup repository directory.
        #[arg(long, env = "TANDEM_BACKUP_REPO")]
        repo: PathBuf,
    },
    /// Delete old base backups and the archive files only they needed, and
    /// the staging directories of `backup base` runs that died (no live
    /// process holds their lock). A base is kept if it is among the newest
    /// --keep or younger than --keep-within; the newest base is always kept.
    /// Without --keep and --keep-within only the dead staging directories
    /// are removed.
    Prune {
        /// Backup repository directory.
        #[arg(long, env = "TANDEM_BACKUP_REPO")]
        repo: PathBuf,
        /// Keep the newest N base backups.
        #[arg(long)]
        keep: Option<usize>,
        /// Keep base backups younger than this (e.g. 36h, 7d, 90m, 30s).
        #[arg(long)]
        keep_within: Option<String>,
    },
}

/// `tandem restore`: base backup + archived log replayed to a target, into
/// a new data directory that `tandem server --data-dir` starts from.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_time", "to_lsn", "latest"])))]
pub struct RestoreArgs {
    /// Backup repository directory.
    #[arg(long, env = "TANDEM_BACKUP_REPO")]
    repo: PathBuf,
    /// Data directory to create (must be missing, empty, or left by an
    /// interrupted restore). It holds a RESTORE-IN-PROGRESS marker, which
    /// `tandem server` refuses, until the restore is complete; the data is
    /// built in .<name>.restoring next to it and swapped in at the end.
    #[arg(long)]
    data_dir: PathBuf,
    /// Restore every entry committed at or before this RFC 3339 time
    /// (e.g. 2026-11-26T10:59:00Z).
    #[arg(long)]
    to_time: Option<String>,
    /// Restore up to and including this LSN.
    #[arg(long)]
    to_lsn: Option<u64>,
    /// Restore everything the repository holds.
    #[arg(long)]
    latest: bool,
}

/// Runs `tandem backup ...`.
pub fn run(command: BackupCommand) -> ExitCode {
    let result = match command {
        BackupCommand::Base { repo, from, tls } => {
            tls.install();
            base(&repo, &from)
        }
        BackupCommand::List { repo, json } => list(&repo, json),
        BackupCommand::Verify { repo } => verify(&repo),
        BackupCommand::Prune { repo, keep, keep_within } => prune(&repo, keep, keep_within.as_deref()),
    };
    finish(result)
}

/// Runs `tandem restore`.
pub fn run_restore(args: RestoreArgs) -> ExitCode {
    finish(restore_cmd(args))
}

fn finish(result: Result<bool, String>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One request to an admin endpoint whose answer must be 200; its body.
pub fn http(addr: &str, method: &str, path: &str) -> Result<Vec<u8>, String> {
    crate::http::ok_bytes(addr, method, path, HTTP_TIMEOUT)
}

struct Meter {
    started: Instant,
    last: Instant,
}

impl Meter {
    fn new() -> Meter {
        let now = Instant::now();
        Meter { started: now, last: now - PROGRESS_INTERVAL }
    }

    fn due(&mut self) -> bool {
        if self.last.elapsed() >= PROGRESS_INTERVAL {
            self.last = Instant::now();
            return true;
        }
        false
    }

    fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64().max(1e-6)
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// `tandem backup base`; also used by `tandem dr drill` and tests through the binary.
fn base(repo: &std::path::Path, from: &str) -> Result<bool, String> {
    let repo = Repository::create_or_open(repo).map_err(|e| e.to_string())?;
    let mut meter = Meter::new();
    eprintln!("base backup: asking {from} for a snapshot (writes continue)");
    let source: BaseSource = serde_json::from_slice(&http(from, "POST", "/backup/base")?)
        .map_err(|e| format!("{from}/backup/base: unexpected answer: {e}"))?;
    eprintln!(
        "base backup: node {} snapshot {} ({:.1} MiB), consistent at lsn {} once lsn {}..={} are copied",
        source.node_id,
        source.snapshot_name,
        source.snapshot_bytes as f64 / MIB,
        source.end_lsn,
        source.start_lsn + 1,
        source.end_lsn
    );
    let mut w = BaseWriter::begin(&repo, source.clone()).map_err(|e| e.to_string())?;
    while w.snapshot_bytes() < source.snapshot_bytes {
        let path = format!("/backup/file/{}?offset={}&len={PIECE_BYTES}", source.snapshot_name, w.snapshot_bytes());
        let piece = http(from, "GET", &path)?;
        if piece.is_empty() {
            return Err(format!(
                "{from}: snapshot {} ended early at byte {}",
                source.snapshot_name,
                w.snapshot_bytes()
            ));
        }
        w.write_snapshot(&piece).map_err(|e| e.to_string())?;
        if meter.due() {
            let done = w.snapshot_bytes() as f64;
            eprintln!(
                "base backup: snapshot {:.1}/{:.1} MiB ({:.0}%, {:.1} MB/s)",
                done / MIB,
                source.snapshot_bytes as f64 / MIB,
                100.0 * done / source.snapshot_bytes.max(1) as f64,
                done / 1e6 / meter.secs()
            );
        }
    }
    let mut log_bytes = 0u64;
    while w.next_lsn() <= source.end_lsn {
        let run = http(from, "GET", &format!("/backup/log?from={}&max_bytes={PIECE_BYTES}", w.next_lsn()))?;
        let kept = w.write_log(&run).map_err(|e| e.to_string())?;
        if kept == 0 {
            return Err(format!("{from}: the log did not deliver lsn {}", w.next_lsn()));
        }
        log_bytes += run.len() as u64;
        if meter.due() {
            eprintln!("base backup: log at lsn {}/{}", w.next_lsn() - 1, source.end_lsn);
        }
    }
    let published = w.finish().map_err(|e| e.to_string())?;
    let _ = http(from, "POST", &format!("/backup/done?name={}", source.snapshot_name));
    let total = source.snapshot_bytes + log_bytes;
    let secs = meter.secs();
    println!(
        "base backup {} done: lsn {}..={} (restorable from {}), {} keys, {:.1} MiB in {:.2} s ({:.1} MB/s)",
        published.manifest.id,
        published.manifest.start_lsn,
        published.manifest.end_lsn,
        format_rfc3339(published.manifest.end_commit_ms),
        published.manifest.keys,
        total as f64 / MIB,
        secs,
        total as f64 / 1e6 / secs
    );
    Ok(true)
}

fn list(repo: &std::path::Path, json: bool) -> Result<bool, String> {
    let repo = Repository::open(repo).map_err(|e| e.to_string())?;
    let listing = maintain::list(&repo).map_err(|e| e.to_string())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&listing).expect("listing serializes"));
        return Ok(true);
    }
    println!("base backups ({}):", listing.bases.len());
    for b in &listing.bases {
        let m = &b.manifest;
        println!(
            "  {}  node {}  lsn {}..={}  {} keys  {:.1} MiB  restorable from {} (lsn {}) to {} (lsn {}){}",
            m.id,
            m.node_id,
            m.start_lsn,
            m.end_lsn,
            m.keys,
            (m.snapshot.bytes + m.log.bytes) as f64 / MIB,
            format_rfc3339(m.end_commit_ms),
            m.end_lsn,
            format_rfc3339(b.restorable_to_ms),
            b.restorable_to_lsn,
            b.problem.as_ref().map(|p| format!("  PROBLEM: {p}")).unwrap_or_default()
        );
    }
    println!("archive streams ({}):", listing.streams.len());
    for s in &listing.streams {
        println!(
            "  node-{}  {} files  {:.1} MiB  lsn {}..={}  {} .. {}{}",
            s.node_id,
            s.files,
            s.bytes as f64 / MIB,
            s.first_lsn,
            s.last_lsn,
            format_rfc3339(s.first_commit_ms),
            format_rfc3339(s.last_commit_ms),
            if s.gaps.is_empty() { String::new() } else { format!("  GAPS: {:?}", s.gaps) }
        );
    }
    Ok(true)
}

fn verify(repo: &std::path::Path) -> Result<bool, String> {
    let repo = Repository::open(repo).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let r = maintain::verify(&repo).map_err(|e| e.to_string())?;
    for p in &r.problems {
        println!("PROBLEM: {p}");
    }
    println!(
        "verify: {} files, {:.1} MiB, {} log records checked in {:.2} s: {}",
        r.files_checked,
        r.bytes_checked as f64 / MIB,
        r.records_checked,
        started.elapsed().as_secs_f64(),
        if r.problems.is_empty() { "OK".to_string() } else { format!("{} problem(s)", r.problems.len()) }
    );
    Ok(r.problems.is_empty())
}

/// Parses `90s`, `15m`, `36h`, `7d`, `500ms` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{text:?} is not a duration like 7d, 36h, 15m, 90s"))?;
    let factor = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)")),
    };
    Ok(n * factor)
}

fn prune(repo: &std::path::Path, keep: Option<usize>, keep_within: Option<&str>) -> Result<bool, String> {
    let repo = Repository::open(repo).map_err(|e| e.to_string())?;
    let within = keep_within.map(parse_duration_ms).transpose()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let r = maintain::prune(&repo, keep, within, now).map_err(|e| e.to_string())?;
    for id in &r.removed_bases {
        println!("removed base {id}");
    }
    for f in &r.removed_archive_files {
        println!("removed archive file {f}");
    }
    for d in &r.removed_staging {
        println!("removed the staging directory of an interrupted base backup: {d}");
    }
    println!(
        "prune: kept {} base(s), removed {} base(s), {} archive file(s) and {} stale staging dir(s)",
        r.kept_bases.len(),
        r.removed_bases.len(),
        r.removed_archive_files.len(),
        r.removed_staging.len()
    );
    Ok(true)
}

/// Parses the restore target flags.
pub fn target_of(to_time: Option<&str>, to_lsn: Option<u64>) -> Result<Target, String> {
    Ok(match (to_time, to_lsn) {
        (Some(t), _) => Target::Time(parse_rfc3339(t)?),
        (None, Some(n)) => Target::Lsn(n),
        (None, None) => Target::Latest,
    })
}

/// Restores with a progress line; shared with `tandem dr drill`.
pub fn restore_with_progress(
    repo: &Repository,
    data_dir: &std::path::Path,
    target: Target,
) -> Result<(restore::RestoreReport, f64), String> {
    let mut meter = Meter::new();
    // The target exists (with its in-progress marker) before any work, so a
    // restore killed at any point never leaves a directory that starts as
    // an empty node.
    let dir = restore::RestoreDir::begin(data_dir).map_err(|e| e.to_string())?;
    eprintln!("restore: target {target} into {} (built in {})", data_dir.display(), dir.staging().display());
    let plan = restore::plan(repo, target).map_err(|e| e.to_string())?;
    let cpu_before = cpu_seconds();
    let restored = restore::replay(&plan, &mut |p| {
        if meter.due() {
            eprintln!(
                "restore: replayed {} entries, at lsn {}, {:.1}/{:.1} MiB of log ({:.0} entries/s)",
                p.replayed,
                p.last_lsn,
                p.bytes_read as f64 / MIB,
                p.bytes_total as f64 / MIB,
                p.replayed as f64 / meter.secs()
            );
        }
    })
    .map_err(|e| e.to_string())?;
    let load_and_replay_cpu_s = cpu_seconds() - cpu_before;
    dir.publish(&restored).map_err(|e| e.to_string())?;
    let report = restored.report.clone();
    // The process ends right after: freeing millions of keys one by one
    // would only add seconds to the measured restore time.
    std::mem::forget(restored);
    Ok((report, load_and_replay_cpu_s))
}

/// CPU seconds (user + system) this process has used: on a shared machine
/// wall-clock rates understate the work done per CPU second.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass; no other memory is touched.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn restore_cmd(args: RestoreArgs) -> Result<bool, String> {
    let repo = Repository::open(&args.repo).map_err(|e| e.to_string())?;
    let target = if args.latest { Target::Latest } else { target_of(args.to_time.as_deref(), args.to_lsn)? };
    let started = Instant::now();
    let (r, replay_cpu_s) = restore_with_progress(&repo, &args.data_dir, target)?;
    let replay_s = (r.replay_ms as f64 / 1000.0).max(1e-3);
    println!(
        "restored (target {}) to lsn {} (committed {}): base {} ({} keys, {:.1} MiB loaded in {} ms) + {} entries replayed \
         ({:.1} MiB in {} ms, {:.0} entries/s; load + replay used {:.2} s CPU), {} keys, total {:.2} s wall, {:.2} s CPU; start it with: tandem server --data-dir {}",
        r.target,
        r.last_lsn,
        format_rfc3339(r.last_commit_ms),
        r.base_id,
        r.snapshot_keys,
        r.snapshot_bytes as f64 / MIB,
        r.load_ms,
        r.replayed,
        r.log_bytes as f64 / MIB,
        r.replay_ms,
        r.replayed as f64 / replay_s,
        replay_cpu_s,
        r.keys,
        started.elapsed().as_secs_f64(),
        cpu_seconds(),
        args.data_dir.display()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration_ms("90s").unwrap(), 90_000);
        assert_eq!(parse_duration_ms("250ms").unwrap(), 250);
        assert!(parse_duration_ms("7 weeks").is_err());
        assert!(parse_duration_ms("d").is_err());
    }
}
