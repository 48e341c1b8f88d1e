//! The README's shell examples, run as a reader would run them, so they
//! cannot rot.
//!
//! Every block opened with ```` ```sh readme-test ```` in README.md is run,
//! in order, in one `bash` (variables carry over) in a fresh temporary
//! directory, under `set -e`: every line must exit 0. What the test changes,
//! and nothing more (the convention is also stated at the top of README.md):
//! - `tandem` is the binary under test (a shell function);
//! - `cargo ...` lines are skipped (the binary is already built);
//! - port numbers 7379..=7599 are moved by one offset to a range that is
//!   free here, and `tandem up` without `--base-port` gets the moved 7379;
//!   `TANDEM_ADMIN_ADDR` names the moved default admin ports, as the
//!   defaults of `tandem status` would on a machine of one's own;
//! - `tandem up ...` and `tandem server ...` lines (they run until stopped)
//!   are started in the background, with their output in a log file, and
//!   the script goes on once they answer PING (a whole `tandem up`: once its
//!   nodes are ready and a leader is elected).
//!
//! The script and everything it starts run in their own process group,
//! which is stopped (SIGTERM, then SIGKILL) when the test ends, pass or fail.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{tandem_bin, tempdir, Group};

/// The README, as compiled into this test (a change to it rebuilds the test).
const README: &str = include_str!("../../../README.md");
/// The info string of a block that is run.
const RUN_MARK: &str = "```sh readme-test";
/// The README's ports that are moved: 7379 (first node of `tandem up`) ..
const README_PORT_FIRST: u16 = 7379;
/// .. up to the restored server of the backup section.
const README_PORT_LAST: u16 = 7599;
/// Where the moved range may start: these first, then kernel-chosen ports.
const BASE_CANDIDATES: [u16; 3] = [24000, 24250, 24500];
/// How long the whole script may run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// One runnable block: the README line it starts on and its lines.
struct Block {
    line: usize,
    lines: Vec<String>,
}

fn runnable_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in readme.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == RUN_MARK => current = Some(Block { line: i + 1, lines: Vec::new() }),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.push(current.take().expect("in a block")),
            Some(b) => b.lines.push(line.to_string()),
        }
    }
    assert!(current.is_none(), "README.md: a ```sh readme-test block is never closed");
    blocks
}

/// Moves every 4-digit number in the README's port range by `base - 7379`.
fn move_ports(line: &str, base: u16) -> String {
    let mut out = String::with_capacity(line.len());
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        let digits: String = chars[start..i].iter().collect();
        match digits.parse::<u16>() {
            Ok(n) if digits.len() == 4 && (README_PORT_FIRST..=README_PORT_LAST).contains(&n) => {
                out.push_str(&(base + (n - README_PORT_FIRST)).to_string())
            }
            _ => out.push_str(&digits),
        }
    }
    out
}

/// The line as the script runs it.
fn rewrite(line: &str, base: u16) -> String {
    let trimmed = line.trim_start();
    if trimmed.starts_with("cargo ") {
        return format!(": skipped, the test runs the built binary: {}", shell_quote(trimmed));
    }
    let line = move_ports(line, base);
    let t = line.trim_start();
    if t.starts_with("tandem up ") || t.starts_with("tandem server ") {
        return format!("readme_background {t}");
    }
    line
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Shell functions the script runs with (see the module doc).
const PRELUDE: &str = r#"
set -eo pipefail
tandem() { "$TANDEM_BIN" "$@"; }
README_BACKGROUND=0
# readme_background tandem (up|server) ARGS...: start it in the background
# and wait until it answers.
readme_background() {
    shift
    local sub=$1; shift
    local args=("$@") base="" restart="" port="" nodes=3 prev=""
    for a in "${args[@]}"; do
        case "$prev" in
            --base-port) base=$a ;;
            --restart) restart=$a ;;
            --nodes) nodes=$a ;;
            --client-addr) port=${a##*:} ;;
        esac
        prev=$a
    done
    if [ "$sub" = up ]; then
        if [ -z "$base" ]; then base=$README_BASE; args=(--base-port "$base" "${args[@]}"); fi
        port=$(( base + 10 * ( ${restart:-1} - 1 ) ))
    fi
    README_BACKGROUND=$((README_BACKGROUND + 1))
    local log="background-$README_BACKGROUND.log"
    "$TANDEM_BIN" "$sub" "${args[@]}" > "$log" 2>&1 &
    local pid=$!
    echo "readme-test: started in the background (pid $pid, output in $log): tandem $sub ${args[*]}"
    local i
    for i in $(seq 1 600); do
        if ! kill -0 "$pid" 2>/dev/null; then echo "readme-test: it exited early:"; cat "$log"; return 1; fi
        if [ "$sub" = up ] && [ -z "$restart" ]; then
            grep -q "Ctrl-C stops the cluster" "$log" && break
        elif [ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ]; then
            break
        fi
        sleep 0.1
    done
    if [ "$sub" = up ] && [ -z "$restart" ] && ! grep -q -- --static-leader <<<"${args[*]}"; then
        # Until a leader is elected the next example would find none.
        for i in $(seq 1 600); do
            local n
            for n in $(seq 0 $((nodes - 1))); do
                if redis-cli -p $((base + 10 * n)) ROLE 2>/dev/null | head -1 | grep -qx master; then
                    echo "readme-test: node $((n + 1)) leads"; return 0
                fi
            done
            sleep 0.1
        done
        echo "readme-test: no leader elected"; cat "$log"; return 1
    fi
}
"#;

/// A base for the moved port range whose every port is free right now.
fn free_base() -> u16 {
    common::free_port_range(README_PORT_LAST - README_PORT_FIRST, &BASE_CANDIDATES)
}

/// The tail of every background log in `dir`, for a failure message.
fn background_logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".log")).collect())
        .unwrap_or_default();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out.push_str(&format!("\n--- last lines of {}:\n", log.display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[test]
fn readme_marks_its_runnable_examples_and_each_one_is_literal() {
    let blocks = runnable_blocks(README);
    assert!(
        blocks.len() >= 4,
        "README.md has {} ```sh readme-test blocks; the run, session, failover and backup examples should be",
        blocks.len()
    );
    for b in &blocks {
        for (i, line) in b.lines.iter().enumerate() {
            let code = line.split(" #").next().unwrap_or("");
            assert!(
                !code.contains('<') || code.contains("<<"),
                "README.md line {}: a runnable example has a placeholder: {line}",
                b.line + 1 + i
            );
        }
    }
    assert_eq!(
        move_ports("redis-cli -p 7389 GET k # 2026-11-26T10:59:00Z 17379", 24000),
        "redis-cli -p 24010 GET k # 2026-11-26T10:59:00Z 17379"
    );
}

#[test]
fn every_runnable_readme_example_exits_zero_when_run_in_order() {
    let blocks = runnable_blocks(README);
    let base = free_base();
    let mut script = String::from(PRELUDE);
    for b in &blocks {
        for (i, line) in b.lines.iter().enumerate() {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let n = b.line + 1 + i;
            script.push_str(&format!("echo {}\n", shell_quote(&format!("readme-test: README.md:{n}: {line}"))));
            script.push_str(&rewrite(line, base));
            script.push('\n');
        }
    }
    script.push_str("echo 'readme-test: every example exited 0'\n");

    let dir = tempdir();
    std::fs::write(dir.path().join("readme-examples.sh"), &script).unwrap();
    let output = std::fs::File::create(dir.path().join("script.out")).unwrap();
    let admins: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + 10 * i + 1)).collect();
    let mut group = Group::spawn(
        Command::new("bash")
            .arg("readme-examples.sh")
            .current_dir(dir.path())
            .env("TANDEM_BIN", tandem_bin())
            .env("README_BASE", base.to_string())
            .env("TANDEM_ADMIN_ADDR", admins.join(","))
            .env("NO_COLOR", "1")
            .env_remove("TANDEM_CONFIG")
            .env_remove("TANDEM_BACKUP_REPO")
            .env_remove("TANDEM_DATA_DIR")
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output),
    );
    let status = group.wait(SCRIPT_TIMEOUT);
    let mut out = String::new();
    let _ = std::fs::File::open(dir.path().join("script.out")).and_then(|mut f| f.read_to_string(&mut out));
    let logs = background_logs(dir.path());
    let stopped_by_sigterm = group.stop();
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("a README example failed ({s}); the run, last command last:\n{out}{logs}"),
        None => panic!("the README examples did not finish within {SCRIPT_TIMEOUT:?}:\n{out}{logs}"),
    }
    assert!(out.contains("every example exited 0"), "{out}");
    eprintln!("{out}"); // shown with --nocapture: what each example printed
    assert!(stopped_by_sigterm, "the background processes did not stop on SIGTERM{logs}");
}
