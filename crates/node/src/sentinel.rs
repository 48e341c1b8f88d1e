//! Leader discovery for Redis clients: every node answers the Sentinel
//! commands that Sentinel-aware clients (redis-py `Sentinel`, Jedis,
//! Lettuce) use to find the master and the replicas of a service, and
//! publishes `+switch-master` on the client port when the leader changes.
//!
//! - `SENTINEL get-master-addr-by-name NAME`, `SENTINEL masters`,
//!   `SENTINEL master NAME`, `SENTINEL replicas|slaves NAME`,
//!   `SENTINEL sentinels NAME`: answered from this node's own view of the
//!   replication role (a leader knows itself and its followers; a follower
//!   knows its leader). A view that cannot vouch for the leader (no lease,
//!   link down) flags the master `s_down`, so clients ask another node.
//! - `SUBSCRIBE +switch-master`: a minimal subscribe mode for that one
//!   channel (Tandem has no general pub/sub); the message is
//!   `NAME old-ip old-port new-ip new-port`, as Redis Sentinel sends it.
//!
//! The service name is `--sentinel-name` (default `tandem`). This module
//! only reports; it never changes roles (failover is the control plane's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tandem_core::resp::{self, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::connection::ClientState;
use crate::repl::RoleView;
use crate::server::Shared;

/// The one channel `SUBSCRIBE` offers.
pub const SWITCH_MASTER_CHANNEL: &str = "+switch-master";
/// How often a subscribed connection looks at the leader.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Requests a subscribed connection may buffer before it is closed.
const SUBSCRIBED_INPUT_BYTES_MAX: usize = 64 * 1024;

/// One node as Sentinel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    addr: SocketAddr,
    /// False: this view cannot vouch for it (`s_down`).
    up: bool,
    /// Applied LSN (`slave-repl-offset`).
    offset: u64,
}

/// This node's view: the master and the replicas it knows of.
#[derive(Debug, Default)]
struct View {
    master: Option<Member>,
    replicas: Vec<Member>,
    epoch: u64,
}

fn parse_addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

fn view(shared: &Shared) -> View {
    let epoch = shared.db.epoch();
    let me = shared.config.client_addr;
    match shared.repl.view() {
        RoleView::Leader { replicas } => {
            let up = shared.repl.is_leader() && (shared.control.is_none() || shared.repl.holds_lease());
            let replicas = replicas
                .iter()
                .filter_map(|r| {
                    Some(Member {
                        addr: parse_addr(r.client_addr.as_deref()?)?,
                        up: r.status.state.is_streaming_or_catching_up(),
                        offset: r.status.applied_lsn,
                    })
                })
                .collect();
            View { master: Some(Member { addr: me, up, offset: shared.db.last_lsn() }), replicas, epoch }
        }
        RoleView::Follower { status, .. } => {
            let streaming = status.state.as_str() == "streaming";
            let master = status.leader_client_addr.as_deref().and_then(parse_addr).map(|addr| Member {
                addr,
                up: streaming,
                offset: status.leader_last_lsn,
            });
            View { master, replicas: vec![Member { addr: me, up: streaming, offset: status.applied_lsn }], epoch }
        }
        RoleView::Idle { .. } => View { epoch, ..View::default() },
    }
}

fn bulk(s: impl ToString) -> Frame {
    Frame::Bulk(Bytes::from(s.to_string()))
}

/// A state as Redis Sentinel sends it: a map in RESP3, a flat array of
/// field/value pairs in RESP2 (the encoder downgrades).
fn fields(pairs: Vec<(&str, String)>) -> Frame {
    Frame::Map(pairs.into_iter().map(|(k, v)| (bulk(k), bulk(v))).collect())
}

fn master_state(shared: &Shared, name: &str, v: &View, m: &Member) -> Frame {
    let members = shared.config.members.len().max(1);
    fields(vec![
        ("name", name.to_string()),
        ("ip", m.addr.ip().to_string()),
        ("port", m.addr.port().to_string()),
        ("runid", format!("tandem-node-{}", shared.config.node_id)),
        ("flags", if m.up { "master".into() } else { "master,s_down".into() }),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", "0".into()),
        ("last-ping-reply", "0".into()),
        ("down-after-milliseconds", shared.config.failover_timeout_ms.to_string()),
        ("info-refresh", "0".into()),
        ("role-reported", "master".into()),
        ("role-reported-time", "0".into()),
        ("config-epoch", v.epoch.to_string()),
        ("num-slaves", v.replicas.len().to_string()),
        ("num-other-sentinels", (members - 1).to_string()),
        ("quorum", (members / 2 + 1).to_string()),
        ("failover-timeout", shared.config.failover_timeout_ms.to_string()),
        ("parallel-syncs", "1".into()),
    ])
}

fn replica_state(master: Option<&Member>, r: &Member) -> Frame {
    fields(vec![
        ("name", r.addr.to_string()),
        ("ip", r.addr.ip().to_string()),
        ("port", r.addr.port().to_string()),
        ("runid", String::new()),
        ("flags", if r.up { "slave".into() } else { "slave,s_down".into() }),
        ("link-pending-commands", "0".into()),
        ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()),
        ("last-ok-ping-reply", "0".into()),
        ("last-ping-reply", "0".into()),
        ("role-reported", "slave".into()),
        ("role-reported-time", "0".into()),
        ("master-link-down-time", "0".into()),
        ("master-link-status", if r.up { "ok".into() } else { "err".into() }),
        ("master-host", master.map_or("?".into(), |m| m.addr.ip().to_string())),
        ("master-port", master.map_or("0".into(), |m| m.addr.port().to_string())),
        ("slave-priority", "100".into()),
        ("slave-repl-offset", r.offset.to_string()),
    ])
}

/// `SENTINEL subcommand ...`.
pub fn command(shared: &Shared, args: &[Bytes]) -> Frame {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    let name = &shared.config.sentinel_name;
    let asked = args.get(2).map(|n| String::from_utf8_lossy(n).into_owned());
    let known = |asked: &Option<String>| asked.as_deref() == Some(name.as_str());
    let v = view(shared);
    match sub.as_str() {
        "get-master-addr-by-name" if args.len() == 3 => match (&v.master, known(&asked)) {
            (Some(m), true) if m.up => Frame::Array(vec![bulk(m.addr.ip()), bulk(m.addr.port())]),
            _ => Frame::Null,
        },
        "masters" if args.len() == 2 => {
            Frame::Array(v.master.iter().map(|m| master_state(shared, name, &v, m)).collect())
        }
        "master" if args.len() == 3 => match (&v.master, known(&asked)) {
            (Some(m), true) => master_state(shared, name, &v, m),
            _ => Frame::Error("ERR No such master with that name".into()),
        },
        "replicas" | "slaves" if args.len() == 3 => {
            if !known(&asked) {
                return Frame::Error("ERR No such master with that name".into());
            }
            Frame::Array(v.replicas.iter().map(|r| replica_state(v.master.as_ref(), r)).collect())
        }
        // The other nodes answer these commands too, but this node does not
        // know their client addresses; clients need none to fail over.
        "sentinels" if args.len() == 3 => {
            if !known(&asked) {
                return Frame::Error("ERR No such master with that name".into());
            }
            Frame::Array(Vec::new())
        }
        "myid" if args.len() == 2 => bulk(format!("{:040x}", shared.config.node_id)),
        _ => Frame::Error(format!(
            "ERR Unknown sentinel subcommand or wrong number of arguments for '{sub}' (Tandem answers \
             get-master-addr-by-name, masters, master, replicas, slaves, sentinels, myid)"
        )),
    }
}

/// `SUBSCRIBE channel ...` outside subscribe mode: the channels, or the
/// error to answer.
pub fn subscribe_channels(args: &[Bytes]) -> Result<Vec<Bytes>, Frame> {
    for ch in &args[1..] {
        if &ch[..] != SWITCH_MASTER_CHANNEL.as_bytes() {
            return Err(Frame::Error(format!(
                "ERR only the {SWITCH_MASTER_CHANNEL} channel can be subscribed to (Tandem has no general \
                 pub/sub): '{}'",
                String::from_utf8_lossy(ch)
            )));
        }
    }
    Ok(args[1..].to_vec())
}

fn confirm(kind: &str, channel: &Bytes, count: usize) -> Frame {
    Frame::Push(vec![bulk(kind), Frame::Bulk(channel.clone()), Frame::Integer(count as i64)])
}

/// Serves a connection in subscribe mode until it unsubscribes from every
/// channel (returns true: back to normal commands) or leaves, breaks the
/// protocol or the node shuts down (false). `channels` were just subscribed.
pub async fn serve_subscribed(
    shared: &Arc<Shared>,
    stream: &mut impl crate::tls::ClientStream,
    input: &mut BytesMut,
    client: &mut ClientState,
    channels: Vec<Bytes>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut output = BytesMut::new();
    let mut subscribed: Vec<Bytes> = Vec::new();
    for ch in channels {
        if !subscribed.contains(&ch) {
            subscribed.push(ch.clone());
        }
        resp::encode(&confirm("subscribe", &ch, subscribed.len()), client.protocol, &mut output);
    }
    let mut last_master = view(shared).master.map(|m| m.addr);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    let limits = shared.config.resp_limits();
    loop {
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return false;
            }
            output.clear();
        }
        if subscribed.is_empty() {
            return true;
        }
        // Requests already buffered first.
        match resp::parse_command(input, &limits) {
            Ok(Some(args)) if !args.is_empty() => {
                let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
                match name.as_str() {
                    "subscribe" if args.len() > 1 => match subscribe_channels(&args) {
                        Ok(chs) => {
                            for ch in chs {
                                if !subscribed.contains(&ch) {
                                    subscribed.push(ch.clone());
                                }
                                resp::encode(
                                    &confirm("subscribe", &ch, subscribed.len()),
                                    client.protocol,
                                    &mut output,
                                );
                            }
                        }
                        Err(e) => resp::encode(&e, client.protocol, &mut output),
                    },
                    "unsubscribe" => {
                        let chs: Vec<Bytes> = if args.len() > 1 { args[1..].to_vec() } else { subscribed.clone() };
                        for ch in chs {
                            subscribed.retain(|c| c != &ch);
                            resp::encode(&confirm("unsubscribe", &ch, subscribed.len()), client.protocol, &mut output);
                        }
                    }
                    "ping" => {
                        let payload = args.get(1).cloned().unwrap_or_default();
                        resp::encode(
                            &Frame::Array(vec![bulk("pong"), Frame::Bulk(payload)]),
                            client.protocol,
                            &mut output,
                        );
                    }
                    "quit" => {
                        resp::encode(&Frame::Simple(Bytes::from_static(b"OK")), client.protocol, &mut output);
                        let _ = stream.write_all(&output).await;
                        return false;
                    }
                    other => resp::encode(
                        &Frame::Error(format!(
                            "ERR Can't execute '{other}': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT are allowed in \
                             this context"
                        )),
                        client.protocol,
                        &mut output,
                    ),
                }
                continue;
            }
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(_) => return false,
        }
        if input.len() > SUBSCRIBED_INPUT_BYTES_MAX {
            return false;
        }
        tokio::select! {
            _ = shutdown.changed() => return false,
            r = stream.read_buf(input) => match r {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            },
            _ = tick.tick() => {
                let now = view(shared).master.filter(|m| m.up).map(|m| m.addr);
                if let Some(new) = now {
                    if let Some(old) = last_master.filter(|old| *old != new) {
                        let payload = format!(
                            "{} {} {} {} {}",
                            shared.config.sentinel_name,
                            old.ip(),
                            old.port(),
                            new.ip(),
                            new.port()
                        );
                        let msg = Frame::Push(vec![bulk("message"), bulk(SWITCH_MASTER_CHANNEL), bulk(payload)]);
                        if subscribed.iter().any(|c| &c[..] == SWITCH_MASTER_CHANNEL.as_bytes()) {
                            resp::encode(&msg, client.protocol, &mut output);
                        }
                    }
                    last_master = Some(new);
                }
            }
        }
    }
}
