//! `tandem dr drill`: a disaster-recovery drill that loses the primary site
//! on purpose and measures the recovery.
//!
//! Steps: (1) read `/status` of every `--admin` node: the newest LSN and its
//! commit time are the last acknowledged write the drill knows about;
//! (2) SIGKILL every `--pid` (the whole site is gone, nothing is flushed);
//! (3) `restore --latest` from the repository into a fresh `--data-dir`;
//! (4) start `tandem server` on it (kernel-chosen ports) and wait until it
//! answers PING; (5) print RPO (entries and seconds lost versus step 1) and
//! RTO (kill to first PONG) against `--rpo-target-ms` / `--rto-target-ms`.
//! Exit 0: both met; 1: a target missed; 2: the drill itself failed.
//!
//! Never touches a process or directory it was not named; the restored node
//! is stopped at the end unless `--keep-running`, on every exit path: an
//! error (a guard kills it on drop), SIGINT/SIGTERM/SIGHUP (a signal thread
//! kills it, then exits 130), and a closed stdout (`| head`: output lines
//! are dropped, the drill runs to its end and stops the node).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use tandem_backup::restore::Target;
use tandem_backup::time::format_rfc3339;
use tandem_backup::Repository;

use crate::backup_cmd::{http, restore_with_progress};

/// How long the restored node may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Poll step while waiting for the first PONG.
const PING_POLL: Duration = Duration::from_millis(5);

/// `tandem dr ...`.
#[derive(Subcommand)]
pub enum DrCommand {
    /// Kill the primary site, restore it from the backup repository into a
    /// fresh directory, start it, and report measured RPO and RTO against
    /// the targets (exit 1 if a target is missed, 2 if the drill failed).
    Drill(DrillArgs),
}

/// Flags of `tandem dr drill`.
#[derive(Args)]
pub struct DrillArgs {
    /// Backup repository directory.
    #[arg(long, env = "TANDEM_BACKUP_REPO")]
    repo: PathBuf,
    /// Admin addresses of the primary site's nodes (comma-separated or
    /// repeated); their newest LSN is the last acknowledged write RPO is
    /// measured against.
    #[arg(long = "admin", value_delimiter = ',')]
    admins: Vec<String>,
    /// Process ids of the primary site's nodes to SIGKILL (comma-separated
    /// or repeated).
    #[arg(long = "pid", value_delimiter = ',')]
    pids: Vec<i32>,
    /// Fresh directory to restore into [default: ./tandem-drill-<unix ms>].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// RPO target, ms of committed writes lost.
    #[arg(long, env = "TANDEM_RPO_TARGET_MS", default_value_t = 5_000)]
    rpo_target_ms: u64,
    /// RTO target, ms from the kill until the restored node answers.
    #[arg(long, env = "TANDEM_RTO_TARGET_MS", default_value_t = 60_000)]
    rto_target_ms: u64,
    /// Leave the restored node running (prints its addresses and pid).
    #[arg(long)]
    keep_running: bool,
    #[command(flatten)]
    tls: crate::http::AdminTlsArgs,
}

/// Runs `tandem dr ...`.
pub fn run(command: DrCommand) -> ExitCode {
    match command {
        DrCommand::Drill(args) => match drill(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("drill failed: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Newest `(lsn, commit_ms)` among the named nodes.
fn last_acknowledged(admins: &[String]) -> Result<(u64, u64), String> {
    let mut best = (0, 0);
    for addr in admins {
        let body = http(addr, "GET", "/status")?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("{addr}/status: {e}"))?;
        let lsn = v["last_lsn"].as_u64().unwrap_or(0);
        let commit_ms = v["last_commit_ms"].as_u64().unwrap_or(0);
        if lsn > best.0 {
            best = (lsn, commit_ms);
        }
    }
    Ok(best)
}

fn ping(addr: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    s.set_read_timeout(Some(Duration::from_secs(1))).ok();
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

/// Pid of the restored node while the drill owns it (0: none).
static RESTORED_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Kills the restored node when dropped, unless disarmed (`--keep-running`).
struct StopOnDrop(Option<std::process::Child>);

impl StopOnDrop {
    fn disarm(&mut self) -> Option<std::process::Child> {
        RESTORED_PID.store(0, std::sync::atomic::Ordering::SeqCst);
        self.0.take()
    }
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.disarm() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: SIGKILL the restored node (if any), exit 130.
fn stop_on_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
            else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            let pid = RESTORED_PID.swap(0, std::sync::atomic::Ordering::SeqCst);
            if pid > 0 {
                // SAFETY: kill(2) on the pid of the child this drill started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
                eprintln!("drill interrupted: stopped the restored node (pid {pid})");
            } else {
                eprintln!("drill interrupted");
            }
            std::process::exit(130);
        });
    });
}

fn drill(args: DrillArgs) -> Result<bool, String> {
    args.tls.install();
    stop_on_signals();
    let repo = Repository::open(&args.repo).map_err(|e| e.to_string())?;
    let data_dir = args.data_dir.unwrap_or_else(|| PathBuf::from(format!("tandem-drill-{}", unix_ms())));
    let (acked_lsn, acked_ms) = last_acknowledged(&args.admins)?;
    let killed_at = Instant::now();
    for pid in &args.pids {
        // SAFETY: kill(2) with a pid the operator named; no memory is shared.
        if unsafe { libc::kill(*pid, libc::SIGKILL) } != 0 {
            return Err(format!("cannot SIGKILL pid {pid}: {}", std::io::Error::last_os_error()));
        }
    }
    eprintln!(
        "drill: primary site lost ({} process(es) killed); last acknowledged write known: lsn {acked_lsn} at {}",
        args.pids.len(),
        format_rfc3339(acked_ms)
    );
    let (report, _) = restore_with_progress(&repo, &data_dir, Target::Latest)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the tandem binary: {e}"))?;
    let child = Command::new(exe)
        .args(["server", "--client-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--print-ready")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the restored node: {e}"))?;
    RESTORED_PID.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
    let mut guard = StopOnDrop(Some(child));
    let stdout = guard.0.as_mut().and_then(|c| c.stdout.take()).expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(READY_TIMEOUT).map_err(|_| "the restored node did not become ready".to_string())?;
    let ready: serde_json::Value =
        serde_json::from_str(&line).map_err(|_| format!("the restored node did not start: {line:?}"))?;
    let client = ready["client_addr"].as_str().unwrap_or_default().to_string();
    while !ping(&client) {
        if killed_at.elapsed() > READY_TIMEOUT {
            return Err("the restored node never answered PING".into());
        }
        std::thread::sleep(PING_POLL);
    }
    let rto_ms = killed_at.elapsed().as_millis() as u64;
    let lost_entries = acked_lsn.saturating_sub(report.last_lsn);
    let rpo_ms = if lost_entries == 0 { 0 } else { acked_ms.saturating_sub(report.last_commit_ms) };
    let rpo_ok = rpo_ms <= args.rpo_target_ms;
    let rto_ok = rto_ms <= args.rto_target_ms;
    outln!("drill report");
    outln!(
        "  restored:  lsn {} (committed {}) from base {}",
        report.last_lsn,
        format_rfc3339(report.last_commit_ms),
        report.base_id
    );
    outln!(
        "  RPO:       {lost_entries} entries and {:.3} s lost (target {:.3} s): {}",
        rpo_ms as f64 / 1000.0,
        args.rpo_target_ms as f64 / 1000.0,
        if rpo_ok { "met" } else { "MISSED" }
    );
    outln!(
        "  RTO:       {:.3} s until the restored node answered PING (target {:.3} s): {}",
        rto_ms as f64 / 1000.0,
        args.rto_target_ms as f64 / 1000.0,
        if rto_ok { "met" } else { "MISSED" }
    );
    outln!(
        "{}",
        serde_json::json!({
            "rpo_entries": lost_entries, "rpo_ms": rpo_ms, "rto_ms": rto_ms,
            "rpo_target_ms": args.rpo_target_ms, "rto_target_ms": args.rto_target_ms,
            "restored_lsn": report.last_lsn, "acknowledged_lsn": acked_lsn,
            "client_addr": client, "admin_addr": ready["admin_addr"], "data_dir": data_dir.display().to_string(),
        })
    );
    if args.keep_running {
        if let Some(child) = guard.disarm() {
            outln!("  restored node running: pid {} client {client}", child.id());
            std::mem::forget(child);
        }
    }
    drop(guard);
    Ok(rpo_ok && rto_ok)
}
