//! `EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO` and `SCRIPT`: the node's side
//! of Lua scripting (decision 0025).
//!
//! Owns: the script cache (SHA1 -> body, bounded by
//! [`SCRIPT_CACHE_MAX`], per node: not replicated, as `EVALSHA` falls back
//! to `EVAL` on `NOSCRIPT`), the time limit (`lua_time_limit_ms`) and
//! `SCRIPT KILL` as one interrupt check handed to the core, the choice of
//! a writing or a read-only run (`EVAL_RO`, or any script on a follower:
//! a write inside answers the follower's usual `READONLY` / redirect
//! error), and the keyspace check of every key a script touches (one
//! single-leader keyspace, `CROSSSLOT` otherwise). A writing script runs
//! through [`Db::execute_script`](crate::db::Db::execute_script): its
//! effects are one log entry, or nothing if it failed.
//!
//! Must never: run Lua itself (that is `tandem_core::script`), hold the
//! database lock across an await, or log a script body.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tandem_core::command::{self, CommandSpec};
use tandem_core::resp::Frame;
use tandem_core::script::{self, Env, Interrupt, Target, NOSCRIPT, SCRIPT_ARGS_MAX, SCRIPT_BYTES_MAX};

use crate::connection::{reply, Outcome};
use crate::server::Shared;

/// Default of `lua_time_limit_ms` (Redis's `lua-time-limit`).
pub const LUA_TIME_LIMIT_MS_DEFAULT: u64 = 5000;
/// Most scripts one node caches; past it `SCRIPT LOAD` is refused and
/// `EVAL` runs without caching (its `EVALSHA` then answers `NOSCRIPT`).
pub const SCRIPT_CACHE_MAX: usize = 10_000;

/// The write a read-only script tried.
const RO_WRITE: &str = "ERR Write commands are not allowed from read-only scripts.";

/// The script cache and the script running now.
#[derive(Default)]
pub struct Scripts {
    cache: Mutex<HashMap<String, Bytes>>,
    /// The kill flag of the running script, if one runs.
    running: Mutex<Option<Arc<AtomicBool>>>,
    /// Varies `math.random`'s seed from one script to the next.
    runs: AtomicU64,
}

impl Scripts {
    /// Caches `body` under its SHA1; false if the cache is full.
    fn insert(&self, sha: &str, body: &Bytes) -> bool {
        let mut cache = self.cache.lock();
        if cache.contains_key(sha) {
            return true;
        }
        if cache.len() >= SCRIPT_CACHE_MAX {
            return false;
        }
        cache.insert(sha.to_string(), body.clone());
        true
    }

    fn get(&self, sha: &str) -> Option<Bytes> {
        self.cache.lock().get(sha).cloned()
    }

    /// Scripts cached now.
    pub fn len(&self) -> usize {
        self.cache.lock().len()
    }

    /// True if none is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Clears the running-script slot when the run ends (also on panic).
struct RunningGuard<'a>(&'a Scripts);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        *self.0.running.lock() = None;
    }
}

fn err(s: impl Into<String>) -> Frame {
    Frame::Error(s.into())
}

/// `SCRIPT LOAD | EXISTS | FLUSH [ASYNC|SYNC] | KILL`.
pub fn script_command(shared: &Shared, args: &[Bytes]) -> Frame {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let scripts = &shared.scripts;
    match (sub.as_str(), args.len()) {
        ("load", 3) => {
            let body = &args[2];
            if body.len() > SCRIPT_BYTES_MAX {
                return err(format!(
                    "ERR script of {} bytes is larger than {SCRIPT_BYTES_MAX} bytes (SCRIPT_BYTES_MAX)",
                    body.len()
                ));
            }
            // Redis compiles on LOAD: a syntax error is reported now.
            if let Err(e) = script::compile_check(body) {
                return err(e);
            }
            let sha = script::sha1_hex(body);
            if !scripts.insert(&sha, body) {
                return err(format!(
                    "ERR the script cache is full ({SCRIPT_CACHE_MAX} scripts, SCRIPT_CACHE_MAX); run SCRIPT FLUSH"
                ));
            }
            Frame::Bulk(Bytes::from(sha))
        }
        ("exists", n) if n >= 3 => {
            let cache = scripts.cache.lock();
            Frame::Array(
                args[2..]
                    .iter()
                    .map(
                        |s| Frame::Integer(cache.contains_key(&String::from_utf8_lossy(s).to_ascii_lowercase()) as i64),
                    )
                    .collect(),
            )
        }
        ("flush", 2) => {
            scripts.cache.lock().clear();
            command::ok()
        }
        ("flush", 3) if matches!(&args[2].to_ascii_lowercase()[..], b"async" | b"sync") => {
            scripts.cache.lock().clear();
            command::ok()
        }
        ("flush", _) => err("ERR SCRIPT FLUSH only support SYNC|ASYNC option"),
        ("kill", 2) => match scripts.running.lock().as_ref() {
            Some(kill) => {
                kill.store(true, Ordering::Release);
                command::ok()
            }
            None => err("NOTBUSY No scripts in execution right now."),
        },
        ("help", 2) => Frame::Array(
            [
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "FLUSH [ASYNC|SYNC]",
                "KILL",
                "LOAD <script>",
            ]
            .iter()
            .map(|l| Frame::Simple(Bytes::from_static(l.as_bytes())))
            .collect(),
        ),
        _ => err(format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try SCRIPT HELP.")),
    }
}

/// `EVAL script numkeys key.. arg..` and its `SHA` / `_RO` forms.
pub async fn eval(shared: &Arc<Shared>, spec: &CommandSpec, args: &[Bytes]) -> Outcome {
    let by_sha = spec.name.starts_with("evalsha");
    let read_only = spec.name.ends_with("_ro");
    let (body, sha) = if by_sha {
        let sha = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        match shared.scripts.get(&sha) {
            Some(body) => (body, sha),
            None => return reply(err(NOSCRIPT)),
        }
    } else {
        let body = args[1].clone();
        if body.len() > SCRIPT_BYTES_MAX {
            return reply(err(format!(
                "ERR script of {} bytes is larger than {SCRIPT_BYTES_MAX} bytes (SCRIPT_BYTES_MAX)",
                body.len()
            )));
        }
        let sha = script::sha1_hex(&body);
        // A full cache still runs the script, it just is not cached.
        shared.scripts.insert(&sha, &body);
        (body, sha)
    };
    let numkeys = match std::str::from_utf8(&args[2]).ok().and_then(|n| n.parse::<i64>().ok()) {
        Some(n) if n < 0 => return reply(err("ERR Number of keys can't be negative")),
        Some(n) if n as usize > args.len() - 3 => {
            return reply(err("ERR Number of keys can't be greater than number of args"))
        }
        Some(n) => n as usize,
        None => return reply(err("ERR value is not an integer or out of range")),
    };
    if args.len() - 3 > SCRIPT_ARGS_MAX {
        return reply(err(format!(
            "ERR a script may get at most {SCRIPT_ARGS_MAX} keys and arguments (SCRIPT_ARGS_MAX), got {}",
            args.len() - 3
        )));
    }
    let keys = &args[3..3 + numkeys];
    let argv = &args[3 + numkeys..];
    // Where writes go: a leader that may write runs the script as one
    // write; otherwise it runs read-only and a write inside answers why.
    let write_refusal = if read_only {
        Some(RO_WRITE.to_string())
    } else {
        match shared.repl.write_refusal().await {
            Some(refusal) => Some(refusal.to_error_text()),
            // The RPO budget refuses writes, not reads.
            None => crate::archive::rpo_budget_error(shared),
        }
    };
    if write_refusal.is_some() {
        if let Some(e) = shared.repl.read_refusal() {
            return reply(err(e));
        }
    }
    let declared = match shared.keyspaces.route(spec, args) {
        Ok(r) => r.keyspace,
        Err(cross) => return reply(err(cross.to_resp())),
    };
    // On a blocking thread: the script holds the state lock while it runs
    // and may wait for it behind a large write; the event loop that renews
    // the lease must do neither (decision 0028).
    let (shared, keys, argv) = (shared.clone(), keys.to_vec(), argv.to_vec());
    let has_keys = numkeys > 0;
    let (frame, wait_lsn) =
        tokio::task::spawn_blocking(move || run(&shared, &body, &sha, &keys, &argv, has_keys, declared, write_refusal))
            .await
            .unwrap_or_else(|_| (err("ERR the script's worker thread failed"), None));
    Outcome { reply: frame, wait_lsn }
}

/// Runs the script (synchronously: no await while the database lock is
/// held) with its interrupt check and key check.
#[allow(clippy::too_many_arguments)]
fn run(
    shared: &Arc<Shared>,
    body: &Bytes,
    sha: &str,
    keys: &[Bytes],
    argv: &[Bytes],
    has_keys: bool,
    declared: Option<String>,
    write_refusal: Option<String>,
) -> (Frame, Option<tandem_core::Lsn>) {
    let kill = Arc::new(AtomicBool::new(false));
    *shared.scripts.running.lock() = Some(kill.clone());
    let _running = RunningGuard(&shared.scripts);
    let limit_ms = shared.config.lua_time_limit_ms;
    let deadline = Instant::now() + Duration::from_millis(limit_ms);
    let sha_owned = sha.to_string();
    let interrupt: Interrupt = Arc::new(move || {
        if kill.load(Ordering::Acquire) {
            Some(format!(
                "ERR Script killed by user with SCRIPT KILL (script {sha_owned}); none of its writes were applied"
            ))
        } else if Instant::now() >= deadline {
            Some(format!(
                "ERR script {sha_owned} ran longer than lua-time-limit ({limit_ms} ms) and was aborted; none of its \
                 writes were applied (--lua-time-limit-ms)"
            ))
        } else {
            None
        }
    });
    // The keyspace of the script: that of its declared keys, else of the
    // first key it touches; every key must be in it, and it must be
    // single-leader.
    let fixed: RefCell<Option<Option<String>>> = RefCell::new(has_keys.then_some(declared));
    let key_check = |spec: &CommandSpec, args: &[Bytes]| -> Result<(), String> {
        let route = shared.keyspaces.route(spec, args).map_err(|c| c.to_resp())?;
        let name = route.keyspace.clone().unwrap_or_else(|| "default".into());
        if !route.single_leader {
            return Err(format!(
                "ERR scripts run on single-leader keyspaces only: the script touched a key of keyspace '{name}', which \
                 is multi-leader or leaderless"
            ));
        }
        let mut fixed = fixed.borrow_mut();
        match &*fixed {
            None => *fixed = Some(route.keyspace),
            Some(k) if *k != route.keyspace => {
                return Err(format!(
                    "CROSSSLOT Keys in request don't belong to the same keyspace: the script works on keyspace '{}' \
                     and touched a key of keyspace '{name}'",
                    k.as_deref().unwrap_or("default")
                ))
            }
            Some(_) => {}
        }
        Ok(())
    };
    let seed = shared.scripts.runs.fetch_add(1, Ordering::Relaxed) ^ crate::db::unix_ms().rotate_left(17);
    let outcome = match write_refusal {
        None => {
            let mut log = Vec::new();
            let (frame, lsn) = shared.db.execute_script(|store, batch, now_ms| {
                let env = Env { now_ms, seed, key_check: &key_check, interrupt: interrupt.clone() };
                let out = script::run(body, sha, keys, argv, Target::Write { store, batch }, &env);
                log = out.log;
                out.reply
            });
            emit_log(sha, &log);
            return (frame, lsn);
        }
        Some(refusal) => shared.db.with_state(|state| {
            let env = Env { now_ms: crate::db::unix_ms(), seed, key_check: &key_check, interrupt: interrupt.clone() };
            script::run(body, sha, keys, argv, Target::Read { store: &state.store, refusal }, &env)
        }),
    };
    emit_log(sha, &outcome.log);
    (outcome.reply, None)
}

/// `redis.log` lines go to the node's log.
fn emit_log(sha: &str, lines: &[script::LogLine]) {
    for line in lines {
        match line.level {
            0 => tracing::debug!(script = sha, "{}", line.message),
            1 | 2 => tracing::info!(script = sha, "{}", line.message),
            _ => tracing::warn!(script = sha, "{}", line.message),
        }
    }
}
