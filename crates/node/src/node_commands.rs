//! Commands that need the connection or the node, not just the keyspace:
//! handshake and auth, client bookkeeping, introspection (`INFO`, `CONFIG
//! GET`, `COMMAND`) and snapshots (`SAVE`, `BGSAVE`).
//!
//! Must never change the keyspace: data commands live in
//! `tandem_core::command`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tandem_core::command::{self, CommandSpec, COMMANDS};
use tandem_core::glob::glob_match;
use tandem_core::resp::{Frame, Protocol};

use tandem_core::command::tx;

use crate::connection::{reply, ClientState, Outcome, Transaction};
use crate::db::TxOutcome;
use crate::server::Shared;

/// Redis version Tandem reports to clients that branch on it.
pub const REDIS_COMPAT_VERSION: &str = "7.0.15";

fn simple(s: &str) -> Frame {
    Frame::Simple(Bytes::copy_from_slice(s.as_bytes()))
}

fn bulk(s: impl Into<Bytes>) -> Frame {
    Frame::Bulk(s.into())
}

fn err(s: impl Into<String>) -> Frame {
    Frame::Error(s.into())
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// Executes a command whose handler is `Node`.
pub async fn execute(shared: &Arc<Shared>, client: &mut ClientState, spec: &CommandSpec, args: &[Bytes]) -> Outcome {
    let frame = match spec.name {
        "ping" => match args.len() {
            1 => simple("PONG"),
            2 => Frame::Bulk(args[1].clone()),
            _ => command::wrong_arity("ping"),
        },
        "quit" => {
            client.closing = true;
            command::ok()
        }
        "select" => match &args[1][..] {
            b"0" => command::ok(),
            _ => err("ERR DB index is out of range"),
        },
        "auth" => auth(shared, client, args),
        "hello" => hello(shared, client, args),
        "client" => client_cmd(shared, client, args),
        "monitor" => {
            client.monitor = Some(shared.clients.start_monitor(&client.handle));
            command::ok()
        }
        "reset" => reset(shared, client),
        "slowlog" => slowlog(shared, args),
        "time" => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Frame::Array(vec![bulk(now.as_secs().to_string()), bulk(now.subsec_micros().to_string())])
        }
        "config" => config(shared, args),
        "function" => function(args),
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => return crate::scripting::eval(shared, spec, args).await,
        "script" => crate::scripting::script_command(shared, args),
        "command" => command_cmd(args),
        "info" => info_on_loop(shared, args).await,
        "save" => save(shared).await,
        "bgsave" => {
            shared.start_background_snapshot("BGSAVE");
            simple("Background saving started")
        }
        "lastsave" => Frame::Integer((shared.db.last_snapshot().1 / 1000) as i64),
        "lastlsn" => Frame::Integer(client.last_write_lsn as i64),
        "wait" => wait(shared, client, args).await,
        "waitlsn" => waitlsn(shared, args).await,
        "role" => role(shared),
        "replicaof" | "slaveof" => replicaof(shared, args),
        "ackpolicy" => ackpolicy(shared, client, args),
        "switchover" => switchover(shared, args).await,
        "sentinel" => crate::sentinel::command(shared, args),
        // On a key of a multi-leader or leaderless keyspace the keyspace's
        // engine answers these; here the key is single-leader.
        "siblings" | "resolve" | "waitvv" => err(format!(
            "ERR {} works on keys of a multi-leader or leaderless keyspace; '{}' belongs to a single-leader keyspace",
            spec.name.to_ascii_uppercase(),
            String::from_utf8_lossy(&args[1])
        )),
        "consistency" => consistency(client, args),
        "conflicts" => conflicts(shared, args),
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" => {
            // The connection enters subscribe mode and answers there.
            client.subscribe = Some(args.to_vec());
            return crate::connection::reply(Frame::Null);
        }
        "publish" => crate::pubsub::publish(shared, args),
        "pubsub" => crate::pubsub::pubsub_command(shared, args),
        "multi" => {
            client.tx = Some(Transaction::default());
            command::ok()
        }
        "discard" => match client.tx.take() {
            Some(_) => {
                unwatch_all(shared, client);
                command::ok()
            }
            None => err("ERR DISCARD without MULTI"),
        },
        "exec" => return exec(shared, client).await,
        "watch" => {
            let keys = &args[1..];
            if client.watched.len() + keys.len() > tx::WATCH_KEYS_MAX {
                err(format!("ERR a connection may watch at most {} keys (WATCH_KEYS_MAX)", tx::WATCH_KEYS_MAX))
            } else {
                let fresh: Vec<Bytes> =
                    keys.iter().filter(|k| !client.watched.iter().any(|(w, _)| w == *k)).cloned().collect();
                let live = shared.db.watch(client.id, &fresh);
                client.watched.extend(fresh.into_iter().zip(live));
                command::ok()
            }
        }
        "unwatch" => {
            unwatch_all(shared, client);
            command::ok()
        }
        other => err(format!("ERR command '{other}' is not available on this node")),
    };
    reply(frame)
}

fn unwatch_all(shared: &Shared, client: &mut ClientState) {
    if !client.watched.is_empty() {
        let keys: Vec<Bytes> = client.watched.drain(..).map(|(k, _)| k).collect();
        shared.db.unwatch(client.id, &keys);
    }
}

/// `EXEC`: the data commands run under one lock as one log entry; node
/// commands queued with them (`PING`, `INFO`, ...) run right after, in
/// their place in the reply.
async fn exec(shared: &Arc<Shared>, client: &mut ClientState) -> Outcome {
    let Some(t) = client.tx.take() else { return reply(err("ERR EXEC without MULTI")) };
    let watched = std::mem::take(&mut client.watched);
    let outcome = exec_queue(shared, client, &t, &watched).await;
    client.watched = watched;
    unwatch_all(shared, client);
    outcome
}

async fn exec_queue(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    t: &Transaction,
    watched: &[(Bytes, bool)],
) -> Outcome {
    if t.failed {
        return reply(err(tx::EXECABORT));
    }
    if t.queue.iter().any(|(spec, _)| spec.is_write()) {
        if let Some(refusal) = shared.repl.write_refusal().await {
            return reply(refusal.to_resp());
        }
        if let Some(e) = crate::archive::rpo_budget_error(shared) {
            return reply(err(e));
        }
    }
    // On a blocking thread: it waits for the state lock, which a large
    // write holds for seconds, and the event loop must not (decision 0028).
    let outcome = {
        let (db, id, watched) = (shared.db.clone(), client.id, watched.to_vec());
        let queue: Vec<(command::Handler, Vec<Bytes>)> =
            t.queue.iter().map(|(spec, a)| (spec.handler, a.clone())).collect();
        tokio::task::spawn_blocking(move || {
            let commands: Vec<(command::Handler, &[Bytes])> = queue.iter().map(|(h, a)| (*h, &a[..])).collect();
            db.execute_tx(id, &watched, &commands)
        })
        .await
        .unwrap_or_else(|_| TxOutcome::Refused(err("ERR EXEC's worker thread failed")))
    };
    match outcome {
        TxOutcome::Aborted => reply(Frame::NullArray),
        TxOutcome::Refused(e) => reply(e),
        TxOutcome::Done(replies, lsn) => {
            let mut out = Vec::with_capacity(replies.len());
            for (r, (spec, a)) in replies.into_iter().zip(&t.queue) {
                out.push(match r {
                    Some(frame) => frame,
                    None => Box::pin(execute(shared, client, spec, a)).await.reply,
                });
            }
            Outcome { reply: Frame::Array(out), wait_lsn: lsn }
        }
    }
}

fn check_password(shared: &Shared, user: Option<&[u8]>, pass: &[u8]) -> Result<(), Frame> {
    let Some(expected) = &shared.config.requirepass else {
        return Err(err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ));
    };
    let user_ok = user.is_none_or(|u| u == b"default");
    // Constant-time comparison so the password cannot be guessed by timing.
    let pass_ok =
        expected.len() == pass.len() && expected.bytes().zip(pass).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if user_ok && pass_ok {
        Ok(())
    } else {
        Err(err("WRONGPASS invalid username-password pair or user is disabled."))
    }
}

fn auth(shared: &Shared, client: &mut ClientState, args: &[Bytes]) -> Frame {
    let result = match args.len() {
        2 => check_password(shared, None, &args[1]),
        3 => check_password(shared, Some(&args[1]), &args[2]),
        _ => return err("ERR syntax error"),
    };
    match result {
        Ok(()) => {
            client.authenticated = true;
            command::ok()
        }
        Err(e) => e,
    }
}

fn hello(shared: &Shared, client: &mut ClientState, args: &[Bytes]) -> Frame {
    let mut protocol = client.protocol;
    let mut i = 1;
    if let Some(v) = args.get(1) {
        protocol = match &v[..] {
            b"2" => Protocol::Resp2,
            b"3" => Protocol::Resp3,
            _ if command::parse_i64(v).is_some() => return err("NOPROTO unsupported protocol version"),
            _ => return err("ERR Protocol version is not an integer or out of range"),
        };
        i = 2;
    }
    let mut name = None;
    while i < args.len() {
        match &lower(&args[i])[..] {
            "auth" if i + 2 < args.len() => {
                if let Err(e) = check_password(shared, Some(&args[i + 1]), &args[i + 2]) {
                    return e;
                }
                client.authenticated = true;
                i += 3;
            }
            "setname" if i + 1 < args.len() => {
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => return err(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(&args[i]))),
        }
    }
    if !client.authenticated {
        return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    if name.is_some() {
        client.handle.set_name(name);
    }
    client.protocol = protocol;
    Frame::Map(vec![
        (bulk("server"), bulk("redis")),
        (bulk("version"), bulk(REDIS_COMPAT_VERSION)),
        (bulk("proto"), Frame::Integer(if protocol == Protocol::Resp3 { 3 } else { 2 })),
        (bulk("id"), Frame::Integer(client.id as i64)),
        (bulk("mode"), bulk("standalone")),
        (bulk("role"), bulk(if shared.repl.is_leader() { "master" } else { "replica" })),
        (bulk("modules"), Frame::Array(vec![])),
    ])
}

fn client_cmd(shared: &Shared, client: &mut ClientState, args: &[Bytes]) -> Frame {
    let sub = lower(&args[1]);
    let txt = |s: String| Frame::Verbatim { format: *b"txt", text: Bytes::from(s) };
    match (sub.as_str(), args.len()) {
        ("id", 2) => Frame::Integer(client.id as i64),
        ("getname", 2) => client.handle.name().map_or(Frame::Null, Frame::Bulk),
        ("setname", 3) => {
            if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                return err("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            client.handle.set_name((!args[2].is_empty()).then(|| args[2].clone()));
            command::ok()
        }
        ("info", 2) => txt(format!("{}\n", client.handle.line())),
        ("list", _) => client_list(shared, &args[2..]),
        ("kill", 3) => {
            // The old form: CLIENT KILL ip:port.
            let addr = String::from_utf8_lossy(&args[2]).into_owned();
            let filter = crate::clients::KillFilter { addr: Some(addr), ..Default::default() };
            match shared.clients.kill(&filter) {
                0 => err("ERR No such client"),
                _ => command::ok(),
            }
        }
        ("kill", n) if n >= 4 && n % 2 == 0 => match kill_filter(client, &args[2..]) {
            Ok(filter) => Frame::Integer(shared.clients.kill(&filter) as i64),
            Err(e) => e,
        },
        ("unblock", 3 | 4) => {
            let Some(id) = parse_u64(&args[2]) else { return err("ERR value is not an integer or out of range") };
            let how = match args.get(3).map(|a| lower(a)).as_deref() {
                None | Some("timeout") => crate::clients::Unblock::Timeout,
                Some("error") => crate::clients::Unblock::Error,
                Some(_) => return err("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR"),
            };
            Frame::Integer(i64::from(shared.clients.unblock(id, how)))
        }
        // Library identification (redis-py, the redis crate) and client-side
        // behaviour flags: accepted, nothing to do.
        ("setinfo", 4) | ("no-evict", 3) | ("no-touch", 3) => command::ok(),
        ("reply", 3) => match &lower(&args[2])[..] {
            "on" => {
                client.reply_off = false;
                client.reply_skip = 0;
                command::ok()
            }
            "off" => {
                client.reply_off = true;
                command::ok()
            }
            "skip" => {
                // This reply and the next command's.
                client.reply_skip = 2;
                command::ok()
            }
            _ => err("ERR syntax error"),
        },
        ("id" | "getname" | "setname" | "info" | "setinfo" | "kill" | "unblock", _) => {
            err(format!("ERR wrong number of arguments for 'client|{sub}' command"))
        }
        _ => err(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

/// `CLIENT LIST [TYPE normal|pubsub|master|replica] [ID id ...]`.
fn client_list(shared: &Shared, opts: &[Bytes]) -> Frame {
    let mut kind: Option<String> = None;
    let mut ids: Option<Vec<u64>> = None;
    let mut i = 0;
    while i < opts.len() {
        match &lower(&opts[i])[..] {
            "type" if i + 1 < opts.len() => {
                let k = lower(&opts[i + 1]);
                if !matches!(&k[..], "normal" | "pubsub" | "master" | "replica" | "slave") {
                    return err(format!("ERR Unknown client type '{}'", String::from_utf8_lossy(&opts[i + 1])));
                }
                kind = Some(k);
                i += 2;
            }
            "id" if i + 1 < opts.len() => {
                let mut list = Vec::new();
                for a in &opts[i + 1..] {
                    match parse_u64(a) {
                        Some(id) if id > 0 => list.push(id),
                        _ => return err("ERR Invalid client ID"),
                    }
                }
                ids = Some(list);
                i = opts.len();
            }
            _ => return err("ERR syntax error"),
        }
    }
    let mut out = String::new();
    for h in shared.clients.all() {
        let pubsub = h.has_flag(crate::clients::FLAG_PUBSUB);
        let keep_kind = match kind.as_deref() {
            None => true,
            Some("normal") => !pubsub,
            Some("pubsub") => pubsub,
            Some(_) => false,
        };
        if keep_kind && ids.as_ref().is_none_or(|l| l.contains(&h.id)) {
            out.push_str(&h.line());
            out.push('\n');
        }
    }
    Frame::Verbatim { format: *b"txt", text: Bytes::from(out) }
}

/// The filters of `CLIENT KILL <filter> <value> ...`.
fn kill_filter(client: &ClientState, opts: &[Bytes]) -> Result<crate::clients::KillFilter, Frame> {
    let mut f = crate::clients::KillFilter { skip: Some(client.id), ..Default::default() };
    for pair in opts.chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match &lower(&pair[0])[..] {
            "id" => match parse_u64(&pair[1]) {
                Some(id) if id > 0 => f.id = Some(id),
                _ => return Err(err("ERR client-id should be greater than 0")),
            },
            "addr" => f.addr = Some(value),
            "laddr" => f.laddr = Some(value),
            "type" => {
                let k = value.to_ascii_lowercase();
                if !matches!(&k[..], "normal" | "pubsub" | "master" | "replica" | "slave") {
                    return Err(err(format!("ERR Unknown client type '{value}'")));
                }
                f.kind = Some(k);
            }
            "user" => {
                if value != "default" {
                    return Err(err(format!("ERR No such user '{value}'")));
                }
            }
            "skipme" => match &value.to_ascii_lowercase()[..] {
                "yes" => f.skip = Some(client.id),
                "no" => f.skip = None,
                _ => return Err(err("ERR syntax error")),
            },
            _ => return Err(err("ERR syntax error")),
        }
    }
    Ok(f)
}

/// `RESET`: the connection as if it had just connected (authentication
/// kept, as in Redis 7 only when no password is set).
fn reset(shared: &Shared, client: &mut ClientState) -> Frame {
    client.tx = None;
    unwatch_all(shared, client);
    client.protocol = Protocol::Resp2;
    client.handle.set_name(None);
    client.durability = None;
    client.consistency = None;
    client.reply_off = false;
    client.reply_skip = 0;
    if client.monitor.take().is_some() {
        shared.clients.stop_monitor(&client.handle);
    }
    client.authenticated = shared.config.requirepass.is_none();
    Frame::Simple(Bytes::from_static(b"RESET"))
}

/// `SLOWLOG GET [count] | LEN | RESET | HELP`.
fn slowlog(shared: &Shared, args: &[Bytes]) -> Frame {
    match (&lower(&args[1])[..], args.len()) {
        ("get", 2 | 3) => {
            let count = match args.get(2).map(|a| command::parse_i64(a)) {
                None => Some(10),
                Some(Some(-1)) => None,
                Some(Some(n)) if n >= 0 => Some(n as usize),
                Some(_) => return err("ERR count should be greater than or equal to -1"),
            };
            let entries = shared.clients.slowlog(count);
            Frame::Array(
                entries
                    .into_iter()
                    .map(|e| {
                        Frame::Array(vec![
                            Frame::Integer(e.id as i64),
                            Frame::Integer(e.unix_secs as i64),
                            Frame::Integer(e.micros as i64),
                            Frame::Array(e.args.into_iter().map(Frame::Bulk).collect()),
                            bulk(e.addr),
                            Frame::Bulk(e.name),
                        ])
                    })
                    .collect(),
            )
        }
        ("len", 2) => Frame::Integer(shared.clients.slowlog_len() as i64),
        ("reset", 2) => {
            shared.clients.slowlog_reset();
            command::ok()
        }
        ("help", 2) => Frame::Array(
            [
                "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "GET [<count>]",
                "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
                "LEN",
                "    Return the length of the slowlog.",
                "RESET",
                "    Reset the slowlog.",
            ]
            .iter()
            .map(|s| Frame::Simple(Bytes::from(s.to_string())))
            .collect(),
        ),
        (sub, _) => err(format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try SLOWLOG HELP.")),
    }
}

/// The parameters `CONFIG GET` answers, with their current values.
fn config_params(shared: &Shared) -> Vec<(&'static str, String)> {
    let c = &shared.config;
    let appendfsync = match c.fsync.to_string().as_str() {
        "batch" => "always".to_string(),
        other => other.to_string(),
    };
    let mut params = vec![
        ("appendfsync", appendfsync),
        ("appendonly", "yes".into()),
        ("bind", c.client_addr.ip().to_string()),
        ("databases", "1".into()),
        ("dir", c.data_dir.display().to_string()),
        ("maxclients", c.limits.clients_max.to_string()),
        ("maxmemory", shared.db.memory().max_bytes().to_string()),
        ("maxmemory-policy", shared.db.memory().policy().to_string()),
        ("maxmemory-samples", shared.db.memory().samples().to_string()),
        ("lua-time-limit", c.lua_time_limit_ms.to_string()),
        ("busy-reply-threshold", c.lua_time_limit_ms.to_string()),
        ("port", c.client_addr.port().to_string()),
        ("proto-max-bulk-len", c.limits.bulk_bytes_max.to_string()),
        ("client-query-buffer-limit", c.limits.query_buffer_bytes_max.to_string()),
        ("save", "".into()),
        ("slowlog-log-slower-than", shared.clients.slower_than_us.load(Ordering::Relaxed).to_string()),
        ("slowlog-max-len", shared.clients.slowlog_max_len.load(Ordering::Relaxed).to_string()),
        ("timeout", "0".into()),
        ("tandem-fsync", c.fsync.to_string()),
        ("tandem-snapshot-entries", c.snapshot_entries.to_string()),
    ];
    let limits = shared.db.encoding_limits();
    params.extend(
        tandem_core::encoding::SETTINGS
            .iter()
            .chain(tandem_core::encoding::ALIASES.iter().map(|(alias, _)| alias))
            .map(|name| (*name, limits.get(name).unwrap_or_default())),
    );
    params
}

fn config(shared: &Shared, args: &[Bytes]) -> Frame {
    match &lower(&args[1])[..] {
        "get" if args.len() >= 3 => {
            let params = config_params(shared);
            let mut out = Vec::new();
            for (name, value) in &params {
                if args[2..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes())) {
                    out.push((bulk(*name), bulk(value.clone())));
                }
            }
            Frame::Map(out)
        }
        "set" => config_set(shared, args),
        "resetstat" => {
            shared.clients.reset_stats();
            command::ok()
        }
        _ => err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&args[1])
        )),
    }
}

/// `CONFIG SET maxmemory BYTES | maxmemory-policy NAME | hash-max-listpack-entries N ...`: the only
/// settings that change at run time (on this node only; the next write or
/// background pass on a leader applies them). Every pair is checked before
/// any is applied.
fn config_set(shared: &Shared, args: &[Bytes]) -> Frame {
    if args.len() < 4 || !args.len().is_multiple_of(2) {
        return command::wrong_arity("config|set");
    }
    let mut max = None;
    let mut policy = None;
    let mut slower_than = None;
    let mut slowlog_len = None;
    let mut limits = shared.db.encoding_limits();
    let mut limits_changed = false;
    for pair in args[2..].chunks(2) {
        let value = String::from_utf8_lossy(&pair[1]);
        let name = lower(&pair[0]);
        match limits.set(&name, &value) {
            Ok(true) => {
                limits_changed = true;
                continue;
            }
            Ok(false) => {}
            Err(e) => return err(format!("ERR CONFIG SET failed (possibly related to argument '{name}') - {e}")),
        }
        match &name[..] {
            "maxmemory" => match crate::maxmemory::parse_bytes(&value) {
                Ok(v) => max = Some(v),
                Err(e) => {
                    return err(format!("ERR CONFIG SET failed (possibly related to argument 'maxmemory') - {e}"))
                }
            },
            "maxmemory-policy" => match value.parse() {
                Ok(p) => policy = Some(p),
                Err(e) => {
                    return err(format!(
                        "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - {e}"
                    ))
                }
            },
            // Tandem has no save points (snapshots follow
            // `snapshot_entries`); turning them off is what is asked.
            "save" if value.trim().is_empty() => {}
            "slowlog-log-slower-than" => match value.parse::<i64>() {
                Ok(v) if v >= -1 => slower_than = Some(v),
                _ => {
                    return err(
                        "ERR CONFIG SET failed (possibly related to argument 'slowlog-log-slower-than') - argument \
                         must be an integer >= -1 (microseconds)",
                    )
                }
            },
            "slowlog-max-len" => match value.parse::<usize>() {
                Ok(v) if v <= crate::clients::SLOWLOG_MAX_LEN_LIMIT => slowlog_len = Some(v),
                _ => {
                    return err(format!(
                        "ERR CONFIG SET failed (possibly related to argument 'slowlog-max-len') - argument must be \
                         an integer from 0 to {}",
                        crate::clients::SLOWLOG_MAX_LEN_LIMIT
                    ))
                }
            },
            other => {
                return err(format!(
                    "ERR CONFIG SET of '{other}' is not supported: only maxmemory, maxmemory-policy, slowlog-* and the encoding \
                     thresholds (hash-max-listpack-*, ...) change at run time; the other settings come from the config \
                     file, flags and TANDEM_* variables (restart the node)"
                ))
            }
        }
    }
    if limits_changed {
        shared.db.set_encoding_limits(limits);
    }
    if let Some(v) = slower_than {
        shared.clients.slower_than_us.store(v, Ordering::Relaxed);
    }
    if let Some(v) = slowlog_len {
        shared.clients.set_slowlog_max_len(v);
    }
    let memory = shared.db.memory();
    if let Some(v) = max {
        memory.set_max_bytes(v);
        shared.metrics.maxmemory_bytes.set(v as i64);
    }
    if let Some(p) = policy {
        memory.set_policy(p);
    }
    command::ok()
}

/// `FUNCTION`: Tandem has no Redis 7 functions (scripts run with EVAL),
/// so the library list is empty and FLUSH has nothing to remove; every
/// other subcommand, which would load or call a function, is refused.
fn function(args: &[Bytes]) -> Frame {
    match (&lower(&args[1])[..], args.len()) {
        ("flush", 2) => command::ok(),
        ("flush", 3) if matches!(&lower(&args[2])[..], "async" | "sync") => command::ok(),
        ("list", _) => Frame::Array(vec![]),
        ("stats", 2) => Frame::Map(vec![(bulk("running_script"), Frame::Null), (bulk("engines"), Frame::Map(vec![]))]),
        (sub, _) => err(format!(
            "ERR FUNCTION {} is not supported: Tandem has no Redis functions; use EVAL / EVALSHA",
            sub.to_ascii_uppercase()
        )),
    }
}

fn command_info(spec: &CommandSpec) -> Frame {
    Frame::Array(vec![
        bulk(spec.name),
        Frame::Integer(spec.arity as i64),
        Frame::Set(spec.flags.names().map(simple).collect()),
        Frame::Integer(spec.first_key as i64),
        Frame::Integer(spec.last_key as i64),
        Frame::Integer(spec.key_step as i64),
        Frame::Set(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
        Frame::Array(vec![]),
    ])
}

fn command_docs(spec: &CommandSpec) -> Frame {
    Frame::Map(vec![
        (bulk("summary"), bulk(spec.summary)),
        (bulk("since"), bulk("1.0.0")),
        (bulk("group"), bulk(spec.group)),
        (bulk("arguments"), Frame::Array(vec![])),
    ])
}

fn command_cmd(args: &[Bytes]) -> Frame {
    let Some(sub) = args.get(1).map(|s| lower(s)) else {
        return Frame::Array(COMMANDS.iter().map(command_info).collect());
    };
    let named = || args[2..].iter().filter_map(|n| command::lookup(n));
    match sub.as_str() {
        "count" => Frame::Integer(COMMANDS.len() as i64),
        "info" if args.len() == 2 => Frame::Array(COMMANDS.iter().map(command_info).collect()),
        "info" => {
            Frame::Array(args[2..].iter().map(|n| command::lookup(n).map_or(Frame::Null, command_info)).collect())
        }
        "docs" if args.len() == 2 => Frame::Map(COMMANDS.iter().map(|c| (bulk(c.name), command_docs(c))).collect()),
        "docs" => Frame::Map(named().map(|c| (bulk(c.name), command_docs(c))).collect()),
        "list" => Frame::Array(COMMANDS.iter().map(|c| bulk(c.name)).collect()),
        _ => err(format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

async fn save(shared: &Arc<Shared>) -> Frame {
    let db = shared.db.clone();
    match tokio::task::spawn_blocking(move || db.snapshot()).await {
        Ok(Ok(report)) => {
            tracing::info!(?report, "snapshot taken (SAVE)");
            command::ok()
        }
        Ok(Err(e)) => err(format!("ERR snapshot failed: {e}")),
        Err(e) => err(format!("ERR snapshot task failed: {e}")),
    }
}

/// Bytes the way Redis prints them (`1.50M`).
fn human_bytes(b: u64) -> String {
    let units = [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, size) in units {
        if b >= size {
            return format!("{:.2}{u}", b as f64 / size as f64);
        }
    }
    format!("{b}B")
}

/// What `INFO` reads under the state lock: keys, keys with a TTL, the
/// store's memory estimate.
type InfoCounts = (usize, usize, u64);

fn info_counts(s: &crate::db::State) -> InfoCounts {
    (s.store.len(), s.store.keys_with_expiry(), s.store.used_bytes() as u64)
}

/// `INFO` from the event loop: rendered on a blocking thread, because it
/// takes the state lock and the log's queue lock, which a large write
/// holds for seconds, and the loop (and the lease renewals on it) must
/// never wait for them (decision 0028).
async fn info_on_loop(shared: &Arc<Shared>, args: &[Bytes]) -> Frame {
    let (shared, args) = (shared.clone(), args.to_vec());
    tokio::task::spawn_blocking(move || info(&shared, &args))
        .await
        .unwrap_or_else(|_| err("ERR INFO's worker thread failed"))
}

/// Renders `INFO [section ...]` with Redis's field names where Redis has
/// them, plus Tandem's own fields. Waits for the state lock: not for the
/// event loop (use `info_on_loop`).
pub fn info(shared: &Shared, args: &[Bytes]) -> Frame {
    let counts = shared.db.with_state(info_counts);
    info_with(shared, args, counts)
}

fn info_with(shared: &Shared, args: &[Bytes], (keys, expires, used): InfoCounts) -> Frame {
    let wanted: Vec<String> = args[1..].iter().map(|a| lower(a)).collect();
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    // Redis leaves these out of a plain INFO and of INFO default.
    let want_extra = |s: &str| wanted.iter().any(|w| w == s || w == "all" || w == "everything");
    let m = &shared.metrics;
    // Lock-free mirrors (decision 0028).
    let (last_lsn, epoch) = (shared.db.last_lsn(), shared.db.epoch());
    let durable_lsn = shared.db.durable_lsn();
    let mut out = String::new();
    if want("server") {
        let uptime = shared.started.elapsed().as_secs();
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_COMPAT_VERSION}\r\ntandem_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\nuptime_in_days:{}\r\nexecutable:tandem\r\nconfig_file:\r\ntandem_node_id:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            shared.config.client_addr.port(),
            uptime / 86_400,
            shared.config.node_id,
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:{}\r\n\r\n",
            m.connections.get(),
            shared.config.limits.clients_max,
            shared.db.blocked_clients()
        );
    }
    if want("memory") {
        // used_memory is the store's running estimate of its keys and
        // values (what maxmemory limits, docs/decisions/0019-maxmemory.md);
        // Redis counts allocator bytes. The process's resident set is
        // used_memory_rss.
        let rss = crate::metrics::rss_bytes();
        let memory = shared.db.memory();
        let max = memory.max_bytes();
        let _ = write!(
            out,
            "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nmaxmemory:{max}\r\nmaxmemory_human:{}\r\nmaxmemory_policy:{}\r\nevicted_keys:{}\r\ntandem_memory_source:store_estimate\r\n\r\n",
            human_bytes(used),
            human_bytes(rss),
            human_bytes(max),
            memory.policy(),
            m.evicted_keys.get(),
        );
    }
    if want("persistence") {
        let (snap_lsn, snap_ms) = shared.db.last_snapshot();
        let log = shared.db.log().stats();
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:{}\r\nrdb_last_save_time:{}\r\naof_enabled:1\r\naof_last_write_status:{}\r\ntandem_fsync_policy:{}\r\ntandem_last_lsn:{last_lsn}\r\ntandem_durable_lsn:{durable_lsn}\r\ntandem_snapshot_lsn:{snap_lsn}\r\ntandem_log_bytes:{}\r\ntandem_log_segments:{}\r\n\r\n",
            last_lsn.saturating_sub(snap_lsn),
            snap_ms / 1000,
            if shared.db.log().failed().is_some() { "err" } else { "ok" },
            shared.config.fsync,
            log.bytes_on_disk,
            log.segments,
        );
    }
    if want("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:{}\r\n\r\n",
            m.connections_total.get(),
            m.commands_processed.load(Ordering::Relaxed),
            shared.ops_per_sec.load(Ordering::Relaxed),
            m.connections_rejected.get(),
            m.expired_keys.get(),
            m.evicted_keys.get(),
        );
    }
    if want("replication") {
        out.push_str(&replication_info(shared, last_lsn, epoch));
    }
    if want("cpu") {
        let (sys, user) = crate::clients::cpu_seconds();
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\n\r\n"
        );
    }
    if want_extra("commandstats") {
        out.push_str(&shared.clients.commandstats());
    }
    if want("multileader") {
        out.push_str(&crate::multi_leader::info_section(&shared.engines));
    }
    if want("keyspace") {
        out.push_str("# Keyspace\r\n");
        if keys > 0 {
            let _ = write!(out, "db0:keys={keys},expires={expires},avg_ttl=0\r\n");
        }
        out.push_str("\r\n");
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    Frame::Verbatim { format: *b"txt", text: Bytes::from(out) }
}

fn parse_u64(b: &[u8]) -> Option<u64> {
    command::parse_i64(b).and_then(|n| u64::try_from(n).ok())
}

const TIMEOUT_NOT_INTEGER: &str = "ERR timeout is not an integer or out of range";

async fn wait(shared: &Shared, client: &ClientState, args: &[Bytes]) -> Frame {
    let Some(numreplicas) = parse_u64(&args[1]) else { return err("ERR value is not an integer or out of range") };
    let Some(timeout_ms) = parse_u64(&args[2]) else { return err(TIMEOUT_NOT_INTEGER) };
    match shared.repl.wait_replicas(client.last_write_lsn, numreplicas as usize, timeout_ms).await {
        Ok(n) => Frame::Integer(n as i64),
        Err(e) => err(e),
    }
}

/// Largest `WAITLSN` timeout (a day): bounds how long a connection can park.
const WAITLSN_TIMEOUT_MS_MAX: u64 = 86_400_000;

async fn waitlsn(shared: &Shared, args: &[Bytes]) -> Frame {
    let Some(lsn) = parse_u64(&args[1]) else { return err("ERR LSN is not an integer or out of range") };
    let Some(timeout_ms) = parse_u64(&args[2]) else { return err(TIMEOUT_NOT_INTEGER) };
    let mut applied = shared.db.applied();
    let deadline = std::time::Duration::from_millis(if timeout_ms == 0 {
        WAITLSN_TIMEOUT_MS_MAX
    } else {
        timeout_ms.min(WAITLSN_TIMEOUT_MS_MAX)
    });
    let _ = tokio::time::timeout(deadline, applied.wait_for(|a| *a >= lsn)).await;
    let now = *applied.borrow();
    Frame::Integer(now as i64)
}

fn role(shared: &Shared) -> Frame {
    use crate::repl::RoleView;
    match shared.repl.view() {
        RoleView::Leader { replicas } => {
            let last = shared.db.last_lsn();
            let list = replicas
                .iter()
                .filter(|r| r.status.state.is_streaming_or_catching_up())
                .map(|r| {
                    let (ip, port) = split_addr(r.client_addr.as_deref().unwrap_or(""));
                    Frame::Array(vec![bulk(ip), bulk(port), bulk(r.status.applied_lsn.to_string())])
                })
                .collect();
            Frame::Array(vec![bulk("master"), Frame::Integer(last as i64), Frame::Array(list)])
        }
        RoleView::Follower { status, .. } => {
            let (ip, port) = split_addr(status.leader_client_addr.as_deref().unwrap_or(""));
            let state = match status.state {
                tandem_core::repl::FollowerState::Streaming => "connected",
                tandem_core::repl::FollowerState::Disconnected => "connect",
                _ => "sync",
            };
            Frame::Array(vec![
                bulk("slave"),
                bulk(ip),
                Frame::Integer(port.parse().unwrap_or(0)),
                bulk(state),
                Frame::Integer(status.applied_lsn as i64),
            ])
        }
        RoleView::Idle { .. } => Frame::Array(vec![
            bulk("slave"),
            bulk(""),
            Frame::Integer(0),
            bulk("connect"),
            Frame::Integer(shared.db.last_lsn() as i64),
        ]),
    }
}

/// `SWITCHOVER node-id [TIMEOUT ms]`: moves leadership through the control
/// plane (from any node); answers with what happened.
async fn switchover(shared: &Shared, args: &[Bytes]) -> Frame {
    let Some(failover) = &shared.failover else {
        return err("ERR SWITCHOVER needs automatic failover (members and no --leader); use REPLICAOF");
    };
    let Some(to) = std::str::from_utf8(&args[1]).ok().and_then(|t| t.parse::<u64>().ok()) else {
        return err("ERR node id is not a number");
    };
    let timeout_ms = match args.len() {
        2 => 0,
        4 if lower(&args[2]) == "timeout" => match std::str::from_utf8(&args[3]).ok().and_then(|t| t.parse().ok()) {
            Some(ms) => ms,
            None => return err("ERR timeout is not an integer or out of range"),
        },
        _ => return err("ERR syntax error; use SWITCHOVER <node-id> [TIMEOUT ms]"),
    };
    match failover.switchover(to, timeout_ms).await {
        Ok(tandem_core::failover::FailoverRpc::SwitchedOver { epoch, lsn, paused_ms }) => {
            Frame::Simple(Bytes::from(format!(
                "OK node {to} leads epoch {epoch}; every write up to LSN {lsn} is on it; writes paused {paused_ms} ms"
            )))
        }
        Ok(other) => err(format!("ERR unexpected answer {other:?}")),
        Err(e) => err(format!("ERR switchover failed: {e}")),
    }
}

fn split_addr(addr: &str) -> (String, String) {
    match addr.rsplit_once(':') {
        Some((ip, port)) => (ip.to_string(), port.to_string()),
        None => (addr.to_string(), String::new()),
    }
}

fn replicaof(shared: &Shared, args: &[Bytes]) -> Frame {
    if shared.config.automatic_failover() {
        return err(
            "ERR this cluster fails over automatically (no --leader): the control plane places the leader; use \
             SWITCHOVER <node-id> to move it",
        );
    }
    if lower(&args[1]) == "no" && lower(&args[2]) == "one" {
        if shared.repl.is_leader() {
            return simple("OK");
        }
        return match shared.repl.become_leader(Some(shared.db.epoch() + 1)) {
            Ok(()) => simple("OK"),
            Err(e) => err(format!("ERR cannot lead: {e}")),
        };
    }
    let (host, port) = (String::from_utf8_lossy(&args[1]), String::from_utf8_lossy(&args[2]));
    let Ok(port) = port.parse::<u16>() else { return err("ERR Invalid master port") };
    let addr = match (host.as_ref(), port).to_socket_addrs_first() {
        Some(a) => a,
        None => return err(format!("ERR cannot resolve {host}:{port}")),
    };
    let leader_id = shared.config.members.iter().find(|(_, a)| *a == addr).map_or(0, |(id, _)| *id);
    if leader_id == 0 && !shared.config.members.is_empty() {
        // A Redis user types the leader's client port; replication runs on
        // peer ports. Following an address that is no member's peer port
        // would answer OK and silently never replicate.
        let peers: Vec<String> = shared.config.members.iter().map(|(id, a)| format!("node {id}: {a}")).collect();
        return err(format!(
            "ERR {host}:{port} is not the peer address of a cluster member (REPLICAOF takes the leader's peer \
             port, not its client port; members: {})",
            peers.join(", ")
        ));
    }
    shared.repl.become_follower(leader_id, addr);
    simple("OK")
}

trait FirstAddr {
    fn to_socket_addrs_first(&self) -> Option<std::net::SocketAddr>;
}

impl FirstAddr for (&str, u16) {
    fn to_socket_addrs_first(&self) -> Option<std::net::SocketAddr> {
        use std::net::ToSocketAddrs;
        self.to_socket_addrs().ok()?.next()
    }
}

fn ackpolicy(shared: &Shared, client: &mut ClientState, args: &[Bytes]) -> Frame {
    use tandem_core::repl::{AckLevel, AckPolicy, Durability};
    match lower(&args[1]).as_str() {
        "get" if args.len() == 2 => {
            let d = client.durability.as_ref().unwrap_or(shared.repl.default_durability());
            Frame::Map(vec![
                (bulk("policy"), bulk(d.policy.to_string())),
                (bulk("level"), bulk(d.level.to_string())),
                (bulk("timeout_ms"), Frame::Integer(d.timeout_ms as i64)),
                (bulk("source"), bulk(if client.durability.is_some() { "connection" } else { "keyspace default" })),
            ])
        }
        "reset" if args.len() == 2 => {
            client.durability = None;
            command::ok()
        }
        "set" if args.len() >= 3 => {
            let default = shared.repl.default_durability();
            let policy: AckPolicy = match String::from_utf8_lossy(&args[2]).parse() {
                Ok(p) => p,
                Err(e) => return err(format!("ERR {e}")),
            };
            let mut d = Durability { policy, level: default.level, timeout_ms: default.timeout_ms };
            let mut i = 3;
            while i < args.len() {
                let Some(value) = args.get(i + 1) else { return err("ERR syntax error") };
                match lower(&args[i]).as_str() {
                    "level" => match String::from_utf8_lossy(value).parse::<AckLevel>() {
                        Ok(l) => d.level = l,
                        Err(e) => return err(format!("ERR {e}")),
                    },
                    "timeout" => match parse_u64(value) {
                        Some(t) => d.timeout_ms = t,
                        None => return err(TIMEOUT_NOT_INTEGER),
                    },
                    _ => return err("ERR syntax error"),
                }
                i += 2;
            }
            client.durability = Some(d);
            command::ok()
        }
        _ => err("ERR syntax error; use ACKPOLICY SET <policy> [LEVEL flush|apply] [TIMEOUT ms] | GET | RESET"),
    }
}

/// `INFO replication`, with Redis's field names plus Tandem's own.
fn replication_info(shared: &Shared, last_lsn: u64, epoch: u64) -> String {
    use crate::repl::RoleView;
    let mut out = String::from("# Replication\r\n");
    match shared.repl.view() {
        RoleView::Leader { replicas } => {
            let connected: Vec<_> = replicas.iter().filter(|r| r.status.state.is_streaming_or_catching_up()).collect();
            let _ = write!(out, "role:master\r\nconnected_slaves:{}\r\n", connected.len());
            for (i, r) in replicas.iter().enumerate() {
                let (ip, port) = split_addr(r.client_addr.as_deref().unwrap_or(""));
                let st = &r.status;
                let lag_s = st.time_lag_ms / 1000;
                let _ = write!(
                    out,
                    "slave{i}:ip={ip},port={port},state={},offset={},lag={lag_s},tandem_id={},sent_lsn={},flushed_lsn={},applied_lsn={},lag_lsn={},lag_ms={}\r\n",
                    if st.state.is_streaming_or_catching_up() { "online" } else { st.state.as_str() },
                    st.applied_lsn,
                    st.id,
                    st.sent_lsn,
                    st.flushed_lsn,
                    st.applied_lsn,
                    st.lsn_lag,
                    st.time_lag_ms,
                );
            }
            let d = shared.repl.default_durability();
            let _ = write!(
                out,
                "master_repl_offset:{last_lsn}\r\ntandem_epoch:{epoch}\r\ntandem_ack_policy:{}\r\ntandem_ack_level:{}\r\ntandem_ack_timeout_ms:{}\r\ntandem_lease:{}\r\n\r\n",
                d.policy,
                d.level,
                d.timeout_ms,
                match (&shared.repl.lease, shared.repl.holds_lease()) {
                    (None, _) => "off",
                    (Some(_), true) => "held",
                    (Some(_), false) => "not held",
                }
            );
        }
        RoleView::Follower { status, leader_peer_addr } => {
            let (ip, port) = split_addr(status.leader_client_addr.as_deref().unwrap_or(""));
            let link = if status.state == tandem_core::repl::FollowerState::Streaming { "up" } else { "down" };
            let last_io = status.last_contact_ms.map_or(-1, |t| (crate::db::unix_ms().saturating_sub(t) / 1000) as i64);
            let _ = write!(
                out,
                "role:slave\r\nmaster_host:{ip}\r\nmaster_port:{port}\r\nmaster_link_status:{link}\r\nmaster_last_io_seconds_ago:{last_io}\r\nmaster_sync_in_progress:{}\r\nslave_repl_offset:{}\r\nslave_read_only:1\r\nmaster_repl_offset:{}\r\ntandem_epoch:{epoch}\r\ntandem_state:{}\r\ntandem_leader_peer_addr:{leader_peer_addr}\r\ntandem_flushed_lsn:{}\r\ntandem_applied_lsn:{}\r\ntandem_leader_last_lsn:{}\r\ntandem_lag_lsn:{}\r\ntandem_staleness_ms:{}\r\n\r\n",
                matches!(status.state, tandem_core::repl::FollowerState::Snapshot | tandem_core::repl::FollowerState::AwaitingSnapshot) as u8,
                status.applied_lsn,
                last_lsn,
                status.state.as_str(),
                status.flushed_lsn,
                status.applied_lsn,
                status.leader_last_lsn,
                status.lsn_lag,
                status.staleness_ms,
            );
        }
        RoleView::Idle { reason } => {
            let _ = write!(
                out,
                "role:slave\r\nmaster_host:\r\nmaster_port:0\r\nmaster_link_status:down\r\nmaster_last_io_seconds_ago:-1\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:{last_lsn}\r\nslave_read_only:1\r\nmaster_repl_offset:{last_lsn}\r\ntandem_epoch:{epoch}\r\ntandem_state:idle\r\ntandem_idle_reason:{reason}\r\ntandem_applied_lsn:{last_lsn}\r\n\r\n",
            );
        }
    }
    out
}

/// `CONSISTENCY [W n R n | RESET]`: shows or overrides, for this
/// connection, the W and R of every leaderless keyspace it writes or reads.
/// `CONFLICTS [COUNT n]`: the newest conflict records of every
/// multi-leader (and leaderless) keyspace on this node, newest first, one
/// JSON object per element (the `GET /conflicts` format).
fn conflicts(shared: &Shared, args: &[Bytes]) -> Frame {
    use crate::conflicts_http::{CONFLICTS_COUNT_DEFAULT, CONFLICTS_COUNT_MAX};
    let count = match args.len() {
        1 => CONFLICTS_COUNT_DEFAULT,
        3 if lower(&args[1]) == "count" => {
            match std::str::from_utf8(&args[2]).ok().and_then(|s| s.parse::<usize>().ok()) {
                Some(n) if (1..=CONFLICTS_COUNT_MAX).contains(&n) => n,
                _ => return err(format!("ERR COUNT must be an integer from 1 to {CONFLICTS_COUNT_MAX}")),
            }
        }
        _ => return err("ERR syntax error: CONFLICTS [COUNT n]"),
    };
    let items = crate::multi_leader::conflicts(&shared.engines, None, 0, count);
    Frame::Array(items.into_iter().map(|v| Frame::Bulk(Bytes::from(v.to_string()))).collect())
}

fn consistency(client: &mut ClientState, args: &[Bytes]) -> Frame {
    let show = |c: &Option<(u8, u8)>| match c {
        Some((w, r)) => Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"w")),
            Frame::Integer(i64::from(*w)),
            Frame::Bulk(Bytes::from_static(b"r")),
            Frame::Integer(i64::from(*r)),
        ]),
        None => Frame::Bulk(Bytes::from_static(b"keyspace defaults")),
    };
    match args.len() {
        1 => show(&client.consistency),
        2 if args[1].eq_ignore_ascii_case(b"reset") => {
            client.consistency = None;
            command::ok()
        }
        5 if args[1].eq_ignore_ascii_case(b"w") && args[3].eq_ignore_ascii_case(b"r") => {
            let parse = |b: &Bytes| std::str::from_utf8(b).ok().and_then(|t| t.parse::<u8>().ok()).filter(|n| *n >= 1);
            match (parse(&args[2]), parse(&args[4])) {
                (Some(w), Some(r)) => {
                    client.consistency = Some((w, r));
                    command::ok()
                }
                _ => err("ERR W and R must be integers from 1 to N"),
            }
        }
        _ => err("ERR syntax error: CONSISTENCY [W n R n | RESET]"),
    }
}
