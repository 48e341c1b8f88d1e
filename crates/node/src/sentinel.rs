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
//! - `+switch-master`: [`watch_switch_master`] publishes on this node's
//!   pub/sub hub (`crate::pubsub`) when the leader changes; the message is
//!   `NAME old-ip old-port new-ip new-port`, as Redis Sentinel sends it.
//!
//! The service name is `--sentinel-name` (default `tandem`). This module
//! only reports; it never changes roles (failover is the control plane's).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tandem_core::resp::Frame;
use tokio::sync::watch;

use crate::repl::RoleView;
use crate::server::Shared;

/// The channel Sentinel clients subscribe to.
pub const SWITCH_MASTER_CHANNEL: &str = "+switch-master";
/// How often a subscribed connection looks at the leader.
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

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

/// Publishes `+switch-master` on this node's hub (local subscribers
/// only: every node runs its own watcher) whenever the leader this node
/// vouches for changes, until the node shuts down.
pub async fn watch_switch_master(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // The last leader this node knew of, up or not: a follower still
    // catching up already knows who leads, and a switch away from that
    // leader must be announced too.
    let mut last_master = view(&shared).master.map(|m| m.addr);
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let Some(master) = view(&shared).master else { continue };
        if !master.up {
            // Not announced until it serves; remember it only as the first.
            last_master.get_or_insert(master.addr);
            continue;
        }
        let new = master.addr;
        if let Some(old) = last_master.filter(|old| *old != new) {
            let payload =
                format!("{} {} {} {} {}", shared.config.sentinel_name, old.ip(), old.port(), new.ip(), new.port());
            shared
                .engines
                .pubsub
                .deliver_local(&Bytes::from_static(SWITCH_MASTER_CHANNEL.as_bytes()), &Bytes::from(payload));
        }
        last_master = Some(new);
    }
}
