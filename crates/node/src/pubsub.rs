//! Pub/sub: the node-wide hub of channel and pattern subscriptions, the
//! subscribe mode of a client connection, and the forwarding of every
//! `PUBLISH` to the other members of the cluster.
//!
//! - `SUBSCRIBE`, `PSUBSCRIBE`, `UNSUBSCRIBE`, `PUNSUBSCRIBE` put a
//!   connection in subscribe mode ([`serve_subscribed`]); messages are
//!   pushed as Redis does (`message` / `pmessage` arrays in RESP2, `>`
//!   push frames in RESP3). In RESP2 only the (un)subscribe commands,
//!   `PING`, `QUIT` and `RESET` are allowed, with Redis's error; in RESP3
//!   every command runs.
//! - `PUBLISH` delivers to this node's subscribers (its reply counts them,
//!   as Redis Cluster counts only the receiving node's) and sends the
//!   message once to every other member over the authenticated peer port
//!   (a keyspace-style stream named [`PEER_STREAM`]). Nothing is logged:
//!   pub/sub is fire-and-forget, a message published while a link is down
//!   or its queue is full is lost for that node's subscribers.
//! - `+switch-master` (Sentinel clients) is an ordinary channel: the
//!   Sentinel watcher publishes to it on this node only.
//!
//! Limits: [`SUBSCRIPTIONS_PER_CONNECTION_MAX`] channels and patterns per
//! connection; a subscriber whose unsent messages pass
//! [`SUBSCRIBER_BUFFER_BYTES_MAX`] is disconnected (Redis's
//! `client-output-buffer-limit pubsub`); [`PEER_QUEUE_MAX`] messages wait
//! per peer link; a message is bounded by the request's bulk limit.
//!
//! Must never: block a publisher on a slow subscriber or a slow peer, hold
//! a lock across an await, or write to the log.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::peer_auth::PeerStream;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tandem_core::glob::glob_match;
use tandem_core::repl::{NodeId, PeerMsg};
use tandem_core::resp::{self, Frame, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch, Notify};

use crate::connection::ClientState;
use crate::engines::EngineEnv;
use crate::repl::wire;
use crate::server::Shared;

/// Channels plus patterns one connection may subscribe to.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 10_000;
/// Unsent message bytes a subscriber may have before it is disconnected
/// (Redis's default hard `client-output-buffer-limit pubsub` is 32 MB).
pub const SUBSCRIBER_BUFFER_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Messages queued for one peer link; past it new messages for that peer
/// are dropped (fire-and-forget).
pub const PEER_QUEUE_MAX: usize = 10_000;
/// The reserved keyspace name of the peer stream that carries published
/// messages (no keyspace can be named with a NUL byte).
pub const PEER_STREAM: &str = "\0pubsub";
/// Wait before redialing a peer whose link failed.
const REDIAL_DELAY: Duration = Duration::from_millis(300);
/// Requests a subscribed connection may buffer unparsed.
const SUBSCRIBED_INPUT_BYTES_MAX: usize = 1024 * 1024;
/// Per-message accounting overhead (frame headers).
const MESSAGE_OVERHEAD_BYTES: usize = 32;

/// One subscribed connection's mailbox.
#[derive(Clone)]
struct Mailbox {
    tx: mpsc::UnboundedSender<Frame>,
    /// Bytes queued or being written.
    pending: Arc<AtomicUsize>,
    /// Set (and notified) when the subscriber passed its buffer limit.
    killed: Arc<AtomicBool>,
    kill: Arc<Notify>,
}

impl Mailbox {
    /// Queues one message; false if the subscriber is (now) over its limit.
    fn offer(&self, frame: Frame, bytes: usize) -> bool {
        if self.killed.load(Ordering::Relaxed) {
            return false;
        }
        let now = self.pending.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if now > SUBSCRIBER_BUFFER_BYTES_MAX {
            self.killed.store(true, Ordering::Relaxed);
            self.kill.notify_one();
            return false;
        }
        self.tx.send(frame).is_ok()
    }
}

type Table = HashMap<Bytes, BTreeMap<u64, Mailbox>>;

/// The node's subscriptions and its links to the other members.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<Table>,
    patterns: Mutex<Table>,
    peers: Mutex<HashMap<NodeId, mpsc::Sender<Bytes>>>,
    /// Messages dropped because a peer queue was full.
    pub dropped: AtomicUsize,
    /// Subscribers disconnected for passing their buffer limit.
    pub slow_disconnects: AtomicUsize,
}

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Delivers a message to this node's subscribers; returns how many
    /// received it (channel subscribers plus matching patterns).
    pub fn deliver_local(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let size = channel.len() + payload.len() + MESSAGE_OVERHEAD_BYTES;
        let mut count = 0;
        if let Some(subs) = self.channels.lock().get(channel) {
            for mb in subs.values() {
                let f = Frame::Push(vec![bulk("message"), Frame::Bulk(channel.clone()), Frame::Bulk(payload.clone())]);
                if mb.offer(f, size) {
                    count += 1;
                }
            }
        }
        for (pattern, subs) in self.patterns.lock().iter() {
            if !glob_match(pattern, channel) {
                continue;
            }
            for mb in subs.values() {
                let f = Frame::Push(vec![
                    bulk("pmessage"),
                    Frame::Bulk(pattern.clone()),
                    Frame::Bulk(channel.clone()),
                    Frame::Bulk(payload.clone()),
                ]);
                if mb.offer(f, size + pattern.len()) {
                    count += 1;
                }
            }
        }
        count
    }

    /// `PUBLISH`: delivers locally and forwards to every other member.
    pub fn publish(&self, env: &EngineEnv, channel: &Bytes, payload: &Bytes) -> usize {
        let body = encode_message(channel, payload);
        let members: Vec<NodeId> = env.peers.borrow().keys().copied().filter(|id| *id != env.node_id).collect();
        {
            let mut peers = self.peers.lock();
            peers.retain(|id, tx| members.contains(id) && !tx.is_closed());
            for id in members {
                let tx = peers.entry(id).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(PEER_QUEUE_MAX);
                    tokio::spawn(forward(env.clone(), id, rx));
                    tx
                });
                if tx.try_send(body.clone()).is_err() {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.deliver_local(channel, payload)
    }

    /// `PUBSUB CHANNELS [pattern]`: channels with a subscriber here.
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self
            .channels
            .lock()
            .iter()
            .filter(|(c, s)| !s.is_empty() && pattern.is_none_or(|p| glob_match(p, c)))
            .map(|(c, _)| c.clone())
            .collect();
        v.sort();
        v
    }

    /// `PUBSUB NUMSUB`: subscribers of one channel here.
    pub fn numsub(&self, channel: &Bytes) -> usize {
        self.channels.lock().get(channel).map_or(0, |s| s.len())
    }

    /// `PUBSUB NUMPAT`: distinct patterns subscribed here.
    pub fn numpat(&self) -> usize {
        self.patterns.lock().len()
    }

    fn add(table: &Mutex<Table>, key: &Bytes, id: u64, mb: &Mailbox) {
        table.lock().entry(key.clone()).or_default().insert(id, mb.clone());
    }

    fn remove(table: &Mutex<Table>, key: &Bytes, id: u64) {
        let mut t = table.lock();
        if let Some(s) = t.get_mut(key) {
            s.remove(&id);
            if s.is_empty() {
                t.remove(key);
            }
        }
    }

    /// Serves the inbound stream of messages a peer publishes.
    pub async fn serve_peer(self: Arc<Self>, mut stream: PeerStream, mut buf: BytesMut, peer: NodeId) {
        loop {
            match wire::read_frame(&mut stream, &mut buf).await {
                Ok(PeerMsg::Keyspace { body }) => match decode_message(body) {
                    Some((channel, payload)) => {
                        self.deliver_local(&channel, &payload);
                    }
                    None => {
                        tracing::warn!(peer, "closing a pub/sub stream: malformed message");
                        return;
                    }
                },
                Ok(other) => {
                    tracing::warn!(peer, kind = other.kind(), "closing a pub/sub stream: unexpected message");
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

fn encode_message(channel: &Bytes, payload: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + channel.len() + payload.len());
    b.put_u32(channel.len() as u32);
    b.put_slice(channel);
    b.put_slice(payload);
    b.freeze()
}

fn decode_message(mut body: Bytes) -> Option<(Bytes, Bytes)> {
    if body.len() < 4 {
        return None;
    }
    let n = body.get_u32() as usize;
    if body.len() < n {
        return None;
    }
    let channel = body.split_to(n);
    Some((channel, body))
}

/// One peer link: dials, then sends every queued message; redials after a
/// failure (messages queued meanwhile wait, up to [`PEER_QUEUE_MAX`]).
async fn forward(env: EngineEnv, peer: NodeId, mut rx: mpsc::Receiver<Bytes>) {
    let mut shutdown = env.shutdown.clone();
    let mut next: Option<Bytes> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut stream = match crate::engines::dial(&env, peer, PEER_STREAM).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer, error = %e, "pub/sub link down; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(REDIAL_DELAY) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        };
        loop {
            let body = match next.take() {
                Some(b) => b,
                None => tokio::select! {
                    m = rx.recv() => match m { Some(b) => b, None => return },
                    _ = shutdown.changed() => return,
                },
            };
            if env.faults.is_cut(peer) {
                break;
            }
            if wire::write_frame(&mut stream, &PeerMsg::Keyspace { body: body.clone() }).await.is_err() {
                // Resend this one on the next link: the stream broke
                // before or while it was written.
                next = Some(body);
                break;
            }
        }
    }
}

/// One connection's subscriptions, removed from the hub when dropped.
struct Subscriptions<'a> {
    hub: &'a Hub,
    id: u64,
    mailbox: Mailbox,
    channels: Vec<Bytes>,
    patterns: Vec<Bytes>,
}

impl Subscriptions<'_> {
    fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }

    fn confirm(&self, kind: &str, what: Option<&Bytes>) -> Frame {
        let what = what.map_or(Frame::Null, |b| Frame::Bulk(b.clone()));
        Frame::Push(vec![bulk(kind), what, Frame::Integer(self.count() as i64)])
    }

    /// Runs one of the four (un)subscribe commands; pushes its replies.
    fn apply(&mut self, name: &str, args: &[Bytes], out: &mut Vec<Frame>) {
        let pattern = name.starts_with('p');
        match name {
            "subscribe" | "psubscribe" => {
                for key in &args[1..] {
                    let list = if pattern { &self.patterns } else { &self.channels };
                    if !list.contains(key) {
                        if self.count() >= SUBSCRIPTIONS_PER_CONNECTION_MAX {
                            out.push(Frame::Error(format!(
                                "ERR a connection may subscribe to at most {SUBSCRIPTIONS_PER_CONNECTION_MAX} channels \
                                 and patterns (SUBSCRIPTIONS_PER_CONNECTION_MAX)"
                            )));
                            return;
                        }
                        let table = if pattern { &self.hub.patterns } else { &self.hub.channels };
                        Hub::add(table, key, self.id, &self.mailbox);
                        if pattern { &mut self.patterns } else { &mut self.channels }.push(key.clone());
                    }
                    out.push(self.confirm(name, Some(key)));
                }
            }
            _ => {
                let keys: Vec<Bytes> = if args.len() > 1 {
                    args[1..].to_vec()
                } else if pattern {
                    self.patterns.clone()
                } else {
                    self.channels.clone()
                };
                if keys.is_empty() {
                    out.push(self.confirm(name, None));
                }
                for key in keys {
                    let table = if pattern { &self.hub.patterns } else { &self.hub.channels };
                    Hub::remove(table, &key, self.id);
                    if pattern { &mut self.patterns } else { &mut self.channels }.retain(|k| k != &key);
                    out.push(self.confirm(name, Some(&key)));
                }
            }
        }
    }

    fn clear(&mut self) {
        for c in std::mem::take(&mut self.channels) {
            Hub::remove(&self.hub.channels, &c, self.id);
        }
        for p in std::mem::take(&mut self.patterns) {
            Hub::remove(&self.hub.patterns, &p, self.id);
        }
    }
}

impl Drop for Subscriptions<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Is this command one of the four that enter or leave subscribe mode?
pub fn is_subscribe_command(name: &str) -> bool {
    matches!(name, "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe")
}

/// Serves a connection in subscribe mode, starting with `first` (one of
/// the four (un)subscribe commands), until it holds no subscription
/// (returns true: back to normal commands) or leaves, breaks the
/// protocol, passes its buffer limit or the node shuts down (false).
pub async fn serve_subscribed(
    shared: &Arc<Shared>,
    stream: &mut impl crate::tls::ClientStream,
    input: &mut BytesMut,
    client: &mut ClientState,
    first: Vec<Bytes>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let hub = &shared.engines.pubsub;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mailbox = Mailbox {
        tx,
        pending: Arc::new(AtomicUsize::new(0)),
        killed: Arc::new(AtomicBool::new(false)),
        kill: Arc::new(Notify::new()),
    };
    let kill = mailbox.kill.clone();
    let pending = mailbox.pending.clone();
    let mut subs = Subscriptions { hub, id: client.id, mailbox, channels: Vec::new(), patterns: Vec::new() };
    let mut output = BytesMut::new();
    let mut frames = Vec::new();
    let first_name = String::from_utf8_lossy(&first[0]).to_ascii_lowercase();
    subs.apply(&first_name, &first, &mut frames);
    let limits = shared.config.resp_limits();
    // Message bytes in `output` (released from `pending` once written).
    let mut out_msg_bytes = 0usize;
    let slow = |shared: &Arc<Shared>, client: &ClientState| {
        shared.engines.pubsub.slow_disconnects.fetch_add(1, Ordering::Relaxed);
        shared.metrics.error("pubsub_buffer_limit");
        tracing::warn!(client = client.id, addr = %client.addr, limit = SUBSCRIBER_BUFFER_BYTES_MAX,
            "closing a subscriber: its pub/sub output buffer limit was exceeded");
    };
    loop {
        for f in frames.drain(..) {
            resp::encode(&f, client.protocol, &mut output);
        }
        if !output.is_empty() {
            tokio::select! {
                r = stream.write_all(&output) => if r.is_err() { return false },
                _ = kill.notified() => { slow(shared, client); return false }
            }
            output.clear();
            pending.fetch_sub(out_msg_bytes, Ordering::AcqRel);
            out_msg_bytes = 0;
        }
        if client.closing {
            return false;
        }
        if subs.count() == 0 {
            return true;
        }
        match resp::parse_command(input, &limits) {
            Ok(Some(args)) if !args.is_empty() => {
                run_in_subscribe_mode(shared, client, &mut subs, &args, &mut frames).await;
                if subs.count() == 0 && !client.closing {
                    // Left subscribe mode: what follows are normal commands.
                    for f in frames.drain(..) {
                        resp::encode(&f, client.protocol, &mut output);
                    }
                    let ok = stream.write_all(&output).await.is_ok();
                    pending.fetch_sub(out_msg_bytes, Ordering::AcqRel);
                    return ok;
                }
                continue;
            }
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => {
                resp::encode(&Frame::Error(format!("ERR {e}")), client.protocol, &mut output);
                let _ = stream.write_all(&output).await;
                return false;
            }
        }
        if input.len() > SUBSCRIBED_INPUT_BYTES_MAX {
            return false;
        }
        tokio::select! {
            _ = shutdown.changed() => return false,
            _ = kill.notified() => { slow(shared, client); return false }
            r = stream.read_buf(input) => match r {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            },
            m = rx.recv() => {
                let Some(f) = m else { return false };
                out_msg_bytes += frame_bytes(&f);
                frames.push(f);
                // Take whatever else is ready, within a bound.
                while out_msg_bytes < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(f) => { out_msg_bytes += frame_bytes(&f); frames.push(f); }
                        Err(_) => break,
                    }
                }
            }
        }
    }
}

/// The bytes a message was accounted for in [`Hub::deliver_local`].
fn frame_bytes(f: &Frame) -> usize {
    match f {
        Frame::Push(items) => {
            items.iter().skip(1).map(|i| if let Frame::Bulk(b) = i { b.len() } else { 0 }).sum::<usize>()
                + MESSAGE_OVERHEAD_BYTES
        }
        _ => 0,
    }
}

/// One request while subscribed.
async fn run_in_subscribe_mode(
    shared: &Arc<Shared>,
    client: &mut ClientState,
    subs: &mut Subscriptions<'_>,
    args: &[Bytes],
    out: &mut Vec<Frame>,
) {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    if is_subscribe_command(&name) {
        let min = if name.ends_with("unsubscribe") { 1 } else { 2 };
        if args.len() < min {
            out.push(Frame::Error(format!("ERR wrong number of arguments for '{name}' command")));
        } else {
            subs.apply(&name, args, out);
        }
        return;
    }
    match name.as_str() {
        "ping" if client.protocol == Protocol::Resp2 => {
            if args.len() > 2 {
                out.push(Frame::Error("ERR wrong number of arguments for 'ping' command".into()));
            } else {
                let payload = args.get(1).cloned().unwrap_or_default();
                out.push(Frame::Array(vec![bulk("pong"), Frame::Bulk(payload)]));
            }
        }
        "quit" => {
            out.push(Frame::Simple(Bytes::from_static(b"OK")));
            client.closing = true;
        }
        "reset" => {
            subs.clear();
            client.protocol = Protocol::Resp2;
            client.handle.set_name(None);
            out.push(Frame::Simple(Bytes::from_static(b"RESET")));
        }
        _ if client.protocol == Protocol::Resp2 => out.push(Frame::Error(format!(
            "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in \
             this context"
        ))),
        _ => {
            // RESP3: pushes and replies are told apart by their type, so
            // any command runs; a write's reply waits for its durability.
            let (_, outcome, _) = crate::connection::dispatch(shared, client, args).await;
            let mut reply = outcome.reply;
            if let Some(lsn) = outcome.wait_lsn {
                client.last_write_lsn = lsn;
                let durability = client.durability.clone().unwrap_or_else(|| shared.repl.default_durability().clone());
                if let Err(e) = shared.repl.wait_write(lsn, &durability).await {
                    reply = e.to_resp();
                }
            }
            if client.subscribe.take().is_some() {
                reply = Frame::Error("ERR nested subscribe".into());
            }
            if !client.reply_silenced() {
                out.push(reply);
            }
        }
    }
}

/// `PUBLISH channel message`.
pub fn publish(shared: &Shared, args: &[Bytes]) -> Frame {
    let n = shared.engines.pubsub.publish(shared.engines.env(), &args[1], &args[2]);
    Frame::Integer(n as i64)
}

/// `PUBSUB CHANNELS [pattern] | NUMSUB [channel ...] | NUMPAT | HELP`
/// (this node's subscribers only, as in Redis Cluster).
pub fn pubsub_command(shared: &Shared, args: &[Bytes]) -> Frame {
    let hub = &shared.engines.pubsub;
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match sub.as_str() {
        "channels" if args.len() <= 3 => {
            Frame::Array(hub.channels(args.get(2).map(|p| &p[..])).into_iter().map(Frame::Bulk).collect())
        }
        "numsub" => Frame::Array(
            args[2..].iter().flat_map(|c| [Frame::Bulk(c.clone()), Frame::Integer(hub.numsub(c) as i64)]).collect(),
        ),
        "numpat" if args.len() == 2 => Frame::Integer(hub.numpat() as i64),
        "help" if args.len() == 2 => Frame::Array(
            [
                "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CHANNELS [<pattern>]",
                "    Return the currently active channels matching a <pattern> (default: '*').",
                "NUMPAT",
                "    Return number of subscriptions to patterns.",
                "NUMSUB [<channel> ...]",
                "    Return the number of subscribers for the specified channels, excluding",
                "    pattern subscriptions(default: no channels).",
            ]
            .iter()
            .map(|s| Frame::Simple(Bytes::copy_from_slice(s.as_bytes())))
            .collect(),
        ),
        _ => Frame::Error(format!("ERR unknown subcommand or wrong number of arguments for '{sub}'. Try PUBSUB HELP.")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_message_decodes_to_its_channel_and_payload() {
        let body = encode_message(&Bytes::from_static(b"news"), &Bytes::from_static(b"hello\0world"));
        let (c, p) = decode_message(body).unwrap();
        assert_eq!((&c[..], &p[..]), (&b"news"[..], &b"hello\0world"[..]));
        assert!(decode_message(Bytes::from_static(b"\0\0\0\x09ab")).is_none());
    }

    #[test]
    fn a_subscriber_past_its_buffer_limit_is_cut_off_and_not_counted() {
        let hub = Hub::new();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mb = Mailbox {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            killed: Arc::new(AtomicBool::new(false)),
            kill: Arc::new(Notify::new()),
        };
        let ch = Bytes::from_static(b"c");
        Hub::add(&hub.channels, &ch, 1, &mb);
        Hub::add(&hub.patterns, &Bytes::from_static(b"c*"), 1, &mb);
        let big = Bytes::from(vec![0u8; 1024 * 1024]);
        let mut delivered = 0;
        for _ in 0..40 {
            delivered += hub.deliver_local(&ch, &big);
        }
        assert!(mb.killed.load(Ordering::Relaxed));
        assert!(delivered < 40, "delivered {delivered}");
        assert_eq!(hub.deliver_local(&ch, &Bytes::new()), 0);
    }
}
