//! One client connection: reads RESP requests, dispatches them, and writes
//! replies in order.
//!
//! Owns the per-connection state (protocol version, auth, name) and the
//! input/output buffers with their limits. Pipelining: every complete
//! request in the input buffer is executed before the connection waits,
//! once, for the durability of the newest write among them, and then writes
//! all replies. A reply to a write is never sent before the log entry it
//! depends on is durable under the node's fsync policy.
//!
//! Must never: hold the database lock across an await, or buffer without a
//! bound.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tandem_core::command::tx::{self, QueueDecision};
use tandem_core::command::{self, CommandSpec, Flags, Handler};
use tandem_core::repl::{AckPolicy, Durability};
use tandem_core::resp::{self, Frame, Protocol, ProtocolError};
use tandem_core::Lsn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, watch};

use crate::clients::{ClientHandle, Unblock, FLAG_BLOCKED, FLAG_MULTI};

use crate::server::Shared;
use crate::tls::ClientStream;

/// Replies are written out once this many bytes are buffered, even in the
/// middle of a long pipeline, to bound memory and latency.
const REPLY_FLUSH_BYTES: usize = 64 * 1024;
/// Read buffer growth step.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// At most this many bytes are taken from the socket per read, and the
/// task yields to the event loop after a read this full: a large bulk
/// (hundreds of MB) arrives in many bounded steps, each costing at most
/// the page faults of 256 KiB of fresh buffer, with the lease renewals,
/// peer links and other clients served between them (decision 0028).
const READ_SLICE_BYTES: usize = 256 * 1024;

/// Per-connection state visible to node commands.
pub struct ClientState {
    /// Unique id (`CLIENT ID`).
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// What other connections see of this one (name, flags, last
    /// command) and the kill / unblock signals they send it.
    pub handle: Arc<ClientHandle>,
    /// The `MONITOR` feed, once the connection ran `MONITOR`.
    pub monitor: Option<broadcast::Receiver<Bytes>>,
    /// `CLIENT REPLY OFF`: replies are not sent (pushes still are).
    pub reply_off: bool,
    /// `CLIENT REPLY SKIP`: replies still to drop (that one and the next).
    pub reply_skip: u8,
    /// Reply protocol (`HELLO 3` switches to RESP3).
    pub protocol: Protocol,
    /// True once `AUTH` succeeded, or if no password is configured.
    pub authenticated: bool,
    /// When the connection was accepted.
    pub connected_at: Instant,
    /// Set by `QUIT`: close after this batch's replies.
    pub closing: bool,
    /// LSN of this connection's last write (`LASTLSN`).
    pub last_write_lsn: Lsn,
    /// Ack policy set by `ACKPOLICY SET` (None: the keyspace default).
    pub durability: Option<Durability>,
    /// Set by `(P)SUBSCRIBE` / `(P)UNSUBSCRIBE`: the connection enters
    /// subscribe mode starting with this request (`crate::pubsub`).
    pub subscribe: Option<Vec<Bytes>>,
    /// The open transaction (`MULTI` .. `EXEC`), if any.
    pub tx: Option<Transaction>,
    /// Keys this connection `WATCH`es, each with whether it was live then.
    pub watched: Vec<(Bytes, bool)>,
    /// Leaderless keyspaces: the `(W, R)` set by `CONSISTENCY W n R n`
    /// (`None`: each keyspace's own).
    pub consistency: Option<(u8, u8)>,
}

impl ClientState {
    /// Whether the reply to the command that just ran is dropped
    /// (`CLIENT REPLY OFF | SKIP`); counts a skipped reply down.
    pub fn reply_silenced(&mut self) -> bool {
        if self.reply_skip > 0 {
            self.reply_skip -= 1;
            return true;
        }
        self.reply_off
    }
}

/// A transaction being queued.
#[derive(Default)]
pub struct Transaction {
    /// The queued commands, in order.
    pub queue: Vec<(&'static CommandSpec, Vec<Bytes>)>,
    /// A command was refused while queuing: `EXEC` answers `EXECABORT`.
    pub failed: bool,
    /// The durability of the keyspace the transaction writes (`None`: the
    /// default keyspace).
    pub durability: Option<Durability>,
}

/// What a dispatched request produced.
pub struct Outcome {
    /// The reply to send.
    pub reply: Frame,
    /// A log entry that must be durable before the reply is released.
    pub wait_lsn: Option<Lsn>,
}

/// Serves one connection until the client leaves, breaks the protocol, or
/// the node shuts down (after finishing the requests already read).
pub async fn serve<S: ClientStream>(
    shared: Arc<Shared>,
    mut stream: S,
    addr: SocketAddr,
    id: u64,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.tcp().set_nodelay(true);
    let registration = shared.clients.register(id, addr, stream.tcp().local_addr().ok());
    let mut client = ClientState {
        id,
        addr,
        handle: registration.handle.clone(),
        monitor: None,
        reply_off: false,
        reply_skip: 0,
        protocol: Protocol::Resp2,
        authenticated: shared.config.requirepass.is_none(),
        connected_at: Instant::now(),
        closing: false,
        last_write_lsn: 0,
        durability: None,
        subscribe: None,
        tx: None,
        watched: Vec::new(),
        consistency: None,
    };
    let limits = shared.config.resp_limits();
    let query_max = shared.config.limits.query_buffer_bytes_max;
    let reply_max = shared.config.limits.reply_buffer_bytes_max;
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut pending: Vec<(usize, Instant)> = Vec::new();

    'conn: loop {
        if input.capacity() - input.len() < READ_CHUNK_BYTES / 2 {
            input.reserve(READ_CHUNK_BYTES);
        }
        let mut slice = (&mut input).limit(READ_SLICE_BYTES);
        let read = tokio::select! {
            r = stream.read_buf(&mut slice) => r,
            _ = shutdown.changed() => break 'conn,
            _ = client.handle.killed() => break 'conn,
            line = next_monitor_line(&mut client.monitor) => {
                if let Some(line) = line {
                    output.extend_from_slice(&line);
                    // Take whatever else is queued, then write it out.
                    while let Some(line) = client.monitor.as_mut().and_then(|rx| rx.try_recv().ok()) {
                        output.extend_from_slice(&line);
                    }
                    if flush(&shared, &mut stream, &mut output, 0, &mut pending).await.is_err() {
                        break 'conn;
                    }
                }
                continue 'conn;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) if n >= READ_SLICE_BYTES => {
                // More is probably waiting (a large bulk or a deep
                // pipeline): let the rest of the loop run first. Without
                // this, tokio's budget lets one connection take 128 full
                // reads in a row (seconds of page faults for a 300 MB
                // bulk on a loaded machine), long enough to lose the lease.
                tokio::task::yield_now().await;
            }
            Ok(_) => {}
        }
        let mut wait_lsn: Lsn = 0;
        loop {
            let args = match resp::parse_command(&mut input, &limits) {
                Ok(Some(args)) => args,
                Ok(None) => break,
                Err(e) => {
                    // The byte stream can no longer be trusted: answer, close.
                    shared.metrics.error("protocol");
                    tracing::debug!(client = id, %addr, error = %e, "closing connection on protocol error");
                    resp::encode(&Frame::Error(protocol_error_text(&e)), client.protocol, &mut output);
                    let _ = flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await;
                    break 'conn;
                }
            };
            if args.is_empty() {
                continue;
            }
            let started = Instant::now();
            shared.clients.feed(&addr, &args);
            let (index, mut outcome, keyspace_durability) = dispatch(&shared, &mut client, &args).await;
            client.handle.touch(index);
            client.handle.set_flag(FLAG_MULTI, client.tx.is_some());
            client.handle.set_resp(if client.protocol == Protocol::Resp3 { 3 } else { 2 });
            let failed = matches!(outcome.reply, Frame::Error(_));
            shared.clients.record(index, started.elapsed().as_micros() as u64, failed, &args, &client.handle);
            if let Some(timeout_ms) = would_block(&client, index, &args, &outcome) {
                // Send what came before, then wait for a push.
                if flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await.is_err() {
                    break 'conn;
                }
                wait_lsn = 0;
                match block(&shared, &mut stream, &mut shutdown, &client.handle, index, &args, timeout_ms).await {
                    Some(o) => outcome = o,
                    None => break 'conn,
                }
            }
            if let Frame::Error(e) = &outcome.reply {
                shared.metrics.error(e.split(' ').next().unwrap_or("ERR"));
            }
            if let Some(request) = client.subscribe.take() {
                // Subscribe mode: answer what came before, then hand the
                // connection over until it unsubscribes from everything.
                pending.push((index, started));
                if flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await.is_err() {
                    break 'conn;
                }
                wait_lsn = 0;
                client.handle.set_flag(crate::clients::FLAG_PUBSUB, true);
                let stay = crate::pubsub::serve_subscribed(
                    &shared,
                    &mut stream,
                    &mut input,
                    &mut client,
                    request,
                    &mut shutdown,
                )
                .await;
                client.handle.set_flag(crate::clients::FLAG_PUBSUB, false);
                if !stay {
                    break 'conn;
                }
                continue;
            }
            let mut reply = outcome.reply;
            if let Some(lsn) = outcome.wait_lsn {
                client.last_write_lsn = lsn;
                // The connection's own policy, else its keyspace's, else the
                // node's (the default keyspace).
                let durability = client
                    .durability
                    .as_ref()
                    .or(keyspace_durability.as_ref())
                    .unwrap_or(shared.repl.default_durability());
                if durability.policy == AckPolicy::Async {
                    // Only local durability: the batch waits once, at flush.
                    wait_lsn = wait_lsn.max(lsn);
                } else {
                    // A replicated ack is decided per write: send what came
                    // before, then wait for this write's own outcome.
                    if flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await.is_err() {
                        break 'conn;
                    }
                    wait_lsn = 0;
                    let durability = durability.clone();
                    let waited = Instant::now();
                    let outcome = shared.repl.wait_write(lsn, &durability).await;
                    shared
                        .metrics
                        .ack_wait_seconds
                        .get_or_create(&crate::metrics::PolicyLabel { policy: durability.policy.to_string() })
                        .observe(waited.elapsed().as_secs_f64());
                    if let Err(e) = outcome {
                        shared.metrics.error(e.class());
                        reply = e.to_resp();
                    }
                }
            }
            if !client.reply_silenced() {
                resp::encode(&reply, client.protocol, &mut output);
            }
            pending.push((index, started));
            if output.len() > reply_max {
                shared.metrics.error("reply_buffer_limit");
                tracing::warn!(client = id, %addr, bytes = output.len(), limit = reply_max, "closing connection: reply buffer limit exceeded");
                break 'conn;
            }
            if client.closing {
                let _ = flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await;
                break 'conn;
            }
            if output.len() >= REPLY_FLUSH_BYTES {
                if flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await.is_err() {
                    break 'conn;
                }
                wait_lsn = 0;
            }
        }
        if input.len() > query_max {
            shared.metrics.error("query_buffer_limit");
            let msg = Frame::Error(format!(
                "ERR Protocol error: query buffer limit of {query_max} bytes exceeded (limits.query_buffer_bytes_max)"
            ));
            resp::encode(&msg, client.protocol, &mut output);
            let _ = flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await;
            break;
        }
        if flush(&shared, &mut stream, &mut output, wait_lsn, &mut pending).await.is_err() {
            break;
        }
    }
    if !client.watched.is_empty() {
        let keys: Vec<Bytes> = client.watched.drain(..).map(|(k, _)| k).collect();
        shared.db.unwatch(client.id, &keys);
    }
    shared.metrics.connections.dec();
}

/// Waits for durability of `wait_lsn`, writes the buffered replies and
/// records the latency of each request they answer.
async fn flush(
    shared: &Shared,
    stream: &mut impl ClientStream,
    output: &mut BytesMut,
    wait_lsn: Lsn,
    pending: &mut Vec<(usize, Instant)>,
) -> std::io::Result<()> {
    if wait_lsn > 0 {
        if let Err(e) = shared.db.wait_durable(wait_lsn).await {
            // The replies claim success for writes that are not durable:
            // drop them all and tell the client instead.
            output.clear();
            shared.metrics.error(e.class());
            resp::encode(&e.to_resp(), Protocol::Resp2, output);
        }
    }
    if !output.is_empty() {
        stream.write_all(output).await?;
        output.clear();
    }
    let now = Instant::now();
    for (index, started) in pending.drain(..) {
        shared.metrics.command(index, now.duration_since(started).as_secs_f64());
    }
    Ok(())
}

fn protocol_error_text(e: &ProtocolError) -> String {
    let text = e.to_string();
    if text.starts_with("ERR ") {
        text
    } else {
        format!("ERR {text}")
    }
}

/// Executes one request. Returns the command's index in `COMMANDS` (or
/// `COMMANDS.len()` if unknown) for metrics, the outcome, and the
/// durability of the keyspace it touched (`None`: the default keyspace).
pub(crate) async fn dispatch(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    args: &[Bytes],
) -> (usize, Outcome, Option<Durability>) {
    let Some(spec) = command::lookup(&args[0]) else {
        abort_tx(client);
        return (command::COMMANDS.len(), reply(command::unknown_command(args)), None);
    };
    if !client.authenticated && !spec.flags.contains(Flags::NO_AUTH) {
        abort_tx(client);
        return (spec.index(), reply(Frame::Error("NOAUTH Authentication required.".into())), None);
    }
    if !spec.arity_ok(args.len()) {
        abort_tx(client);
        return (spec.index(), reply(command::wrong_arity(spec.name)), None);
    }
    let route = match shared.keyspaces.route(spec, args) {
        Ok(r) => r,
        Err(cross) => {
            abort_tx(client);
            return (spec.index(), reply(Frame::Error(cross.to_resp())), None);
        }
    };
    if !route.single_leader {
        // A multi-leader or leaderless keyspace: its own replica answers,
        // under its own rules (no leader, no lease, no shared log).
        let name = route.keyspace.unwrap_or_default();
        if spec.group == "scripting" {
            let e = format!("ERR scripts run on single-leader keyspaces only; keyspace '{name}' is not single-leader");
            return (spec.index(), reply(Frame::Error(e)), None);
        }
        if client.tx.is_some() {
            abort_tx(client);
            let e = format!("ERR MULTI cannot include commands on keyspace '{name}': it is not single-leader");
            return (spec.index(), reply(Frame::Error(e)), None);
        }
        let frame = match shared.engines.get(&name) {
            Some(engine) => engine.execute(client, spec, args).await,
            None => Frame::Error(format!(
                "TRYAGAIN keyspace '{name}' has no replica on node {} (starting, or failed to start: see its log)",
                shared.config.node_id
            )),
        };
        return (spec.index(), reply(frame), None);
    }
    if let Handler::Read(_) = spec.handler {
        // A leader that lost its lease must not answer from its (possibly
        // overwritten) state; `ECHO` and friends touch no key and pass.
        if let Some(e) = shared.repl.read_refusal() {
            if spec.flags.contains(Flags::READONLY) {
                return (spec.index(), reply(Frame::Error(e)), None);
            }
        }
    }
    if let Some(queued) = client.tx.as_ref().map(|t| t.queue.len()) {
        match tx::queue_decision(spec, queued) {
            Err(e) => {
                abort_tx(client);
                return (spec.index(), reply(e), None);
            }
            Ok(QueueDecision::RejectKeep(e)) => return (spec.index(), reply(e), None),
            Ok(QueueDecision::Queue) => {
                // A write a follower would refuse is refused now, with the
                // same READONLY as outside a transaction.
                if spec.is_write() {
                    if let Some(refusal) = shared.repl.write_refusal().await {
                        abort_tx(client);
                        return (spec.index(), reply(refusal.to_resp()), None);
                    }
                }
                if let Some(t) = client.tx.as_mut() {
                    t.queue.push((spec, args.to_vec()));
                    // EXEC acknowledges under the policy of the first
                    // keyspace (other than default) the transaction writes.
                    if t.durability.is_none() && spec.is_write() {
                        t.durability = route.durability.clone();
                    }
                }
                return (spec.index(), reply(Frame::Simple(Bytes::from_static(b"QUEUED"))), None);
            }
            Ok(QueueDecision::RunNow) => {}
        }
    }
    let tx_durability = if spec.name == "exec" { client.tx.as_ref().and_then(|t| t.durability.clone()) } else { None };
    if spec.is_write() {
        if let Some(refusal) = shared.repl.write_refusal().await {
            return (spec.index(), reply(refusal.to_resp()), None);
        }
        if let Some(e) = crate::archive::rpo_budget_error(shared) {
            return (spec.index(), reply(Frame::Error(e)), None);
        }
    }
    let outcome = match spec.handler {
        Handler::Node => crate::node_commands::execute(shared, client, spec, args).await,
        handler @ Handler::Write(_) if args_bytes(args) > crate::db::LARGE_WRITE_BYTES => {
            // A large write copies its value several times (store, log
            // entry, log record): on a blocking thread, so the event loop
            // keeps serving other clients and the peer links that renew the
            // leader lease meanwhile (decision 0028).
            let (db, args) = (shared.db.clone(), args.to_vec());
            let (frame, wait_lsn) = tokio::task::spawn_blocking(move || db.execute(handler, &args))
                .await
                .unwrap_or_else(|_| (Frame::Error("ERR the write's worker thread failed".into()), None));
            Outcome { reply: frame, wait_lsn }
        }
        handler => {
            let (frame, wait_lsn) = execute_on_loop(shared, handler, args).await;
            Outcome { reply: frame, wait_lsn }
        }
    };
    (spec.index(), outcome, route.durability.or(tx_durability))
}

/// Runs a store command from the event loop. The loop waits for the state
/// lock only briefly: while a large write or apply holds it, the command
/// runs on a blocking thread (decision 0028).
async fn execute_on_loop(shared: &Shared, handler: Handler, args: &[Bytes]) -> (Frame, Option<Lsn>) {
    match shared.db.try_execute(handler, args) {
        Some(done) => done,
        None => {
            let (db, args) = (shared.db.clone(), args.to_vec());
            tokio::task::spawn_blocking(move || db.execute(handler, &args))
                .await
                .unwrap_or_else(|_| (Frame::Error("ERR the command's worker thread failed".into()), None))
        }
    }
}

/// Bytes in a command's arguments.
fn args_bytes(args: &[Bytes]) -> usize {
    args.iter().map(Bytes::len).sum()
}

/// The timeout (ms, 0: forever) if this outcome of a blocking list command
/// means "every key was empty" and the client should wait. Inside a
/// transaction a blocking command never waits (Redis).
fn would_block(client: &ClientState, index: usize, args: &[Bytes], outcome: &Outcome) -> Option<u64> {
    let spec = command::COMMANDS.get(index)?;
    if client.tx.is_some() || !spec.flags.contains(Flags::BLOCKING) || !matches!(outcome.reply, Frame::NullArray) {
        return None;
    }
    let arg = command::list::blocking_timeout_arg(spec.name, args)?;
    command::list::blocking_timeout_ms(arg).ok()
}

/// Waits until the command can pop something (retrying it each time a
/// committed entry pushed to a list), its timeout passes (null array), the
/// node stops leading (its error), or the client goes away (`None`).
async fn block(
    shared: &Arc<Shared>,
    stream: &mut impl ClientStream,
    shutdown: &mut watch::Receiver<bool>,
    handle: &ClientHandle,
    index: usize,
    args: &[Bytes],
    timeout_ms: u64,
) -> Option<Outcome> {
    let spec = &command::COMMANDS[index];
    let _slot = match shared.db.block_slot() {
        Ok(s) => s,
        Err(e) => return Some(reply(Frame::Error(e))),
    };
    handle.clear_unblock();
    handle.set_flag(FLAG_BLOCKED, true);
    let _blocked = BlockedFlag(handle);
    let mut changes = shared.db.lists_changed();
    let mut gen = *changes.borrow_and_update();
    let turn = shared.clients.turns.enter();
    let mut first = true;
    let deadline = (timeout_ms > 0).then(|| tokio::time::Instant::now() + std::time::Duration::from_millis(timeout_ms));
    // Watch the socket for a hang-up only until the client sends more
    // (pipelined) bytes: those wait in the kernel until we answer.
    let mut watch_socket = true;
    loop {
        // A push may have landed between the first attempt and subscribing.
        // After that, clients that blocked earlier retry first.
        if !first {
            tokio::select! {
                _ = turn.wait(gen) => {}
                _ = shutdown.changed() => return None,
            }
        }
        first = false;
        if let Some(refusal) = shared.repl.write_refusal().await {
            return Some(reply(refusal.to_resp()));
        }
        let (frame, wait_lsn) = execute_on_loop(shared, spec.handler, args).await;
        turn.done(gen);
        if !keeps_waiting(shared, spec.name, args, &frame).await {
            return Some(Outcome { reply: frame, wait_lsn });
        }
        loop {
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let mut probe = [0u8; 1];
            tokio::select! {
                r = changes.changed() => {
                    if r.is_err() {
                        return Some(reply(Frame::NullArray));
                    }
                    gen = *changes.borrow_and_update();
                    break;
                }
                _ = sleep => return Some(reply(Frame::NullArray)),
                _ = shutdown.changed() => return None,
                _ = handle.killed() => return None,
                how = handle.unblocked() => return Some(reply(match how {
                    Unblock::Timeout => Frame::NullArray,
                    Unblock::Error => Frame::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()),
                })),
                r = stream.tcp().peek(&mut probe), if watch_socket => match r {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => watch_socket = false,
                },
            }
        }
    }
}

/// Whether a retried blocking command should keep waiting: nothing to pop
/// yet, or its source key now holds another type (Redis keeps such a
/// client blocked until a list or sorted set appears). A wrong-type
/// *destination* of `BRPOPLPUSH` / `BLMOVE` is the client's error.
async fn keeps_waiting(shared: &Shared, name: &str, args: &[Bytes], frame: &Frame) -> bool {
    match frame {
        Frame::NullArray => true,
        Frame::Error(e) if e.starts_with("WRONGTYPE") => {
            if matches!(name, "brpoplpush" | "blmove") {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let is_list =
                    |s: &crate::db::State| s.store.get(&args[1], now).is_some_and(|(v, _)| v.type_name() == "list");
                let source_is_list = match shared.db.try_with_state(is_list) {
                    Some(found) => found,
                    // A large write holds the lock: off the loop (decision 0028).
                    None => {
                        let (db, key) = (shared.db.clone(), args[1].clone());
                        tokio::task::spawn_blocking(move || {
                            db.with_state(|s| s.store.get(&key, now).is_some_and(|(v, _)| v.type_name() == "list"))
                        })
                        .await
                        .unwrap_or(false)
                    }
                };
                !source_is_list
            } else {
                true
            }
        }
        _ => false,
    }
}

/// Clears a connection's blocked flag when its blocking command ends.
struct BlockedFlag<'a>(&'a ClientHandle);

impl Drop for BlockedFlag<'_> {
    fn drop(&mut self) {
        self.0.set_flag(FLAG_BLOCKED, false);
    }
}

/// The next `MONITOR` line (never, if the connection does not monitor).
/// A monitor too far behind is told how many lines it missed.
async fn next_monitor_line(rx: &mut Option<broadcast::Receiver<Bytes>>) -> Option<Bytes> {
    let Some(rx) = rx.as_mut() else { return std::future::pending().await };
    match rx.recv().await {
        Ok(line) => Some(line),
        Err(broadcast::error::RecvError::Lagged(n)) => {
            Some(Bytes::from(format!("-ERR MONITOR fell behind: {n} commands were not shown\r\n")))
        }
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// A command was refused while a transaction is open: its `EXEC` aborts.
fn abort_tx(client: &mut ClientState) {
    if let Some(t) = client.tx.as_mut() {
        t.failed = true;
    }
}

/// An outcome that needs no durability wait.
pub fn reply(frame: Frame) -> Outcome {
    Outcome { reply: frame, wait_lsn: None }
}
