//! Unit tests and scenario transcripts for the replicas.
//!
//! A transcript (`testdata/*.txt`, in the style of etcd raft's testdata)
//! is a list of blocks: a command line, `----`, and the outputs the replica
//! drained after it, one per line, in drain order. `TANDEM_REWRITE=1`
//! rewrites the expected text from the actual outputs (review the diff).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;

use super::single_leader::{decide_map, DurableState, MapDecision, RoleKey};
use super::*;
use crate::failover::{EpochHistory, LeaseConfig};
use crate::repl::AckLevel;

// ------------------------------------------------------------ transcripts

struct Script {
    replica: Option<SingleLeaderReplica>,
    now: u64,
}

fn args(words: &[&str]) -> BTreeMap<String, String> {
    words.iter().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.to_string(), v.replace(':', " "))).collect()
}

fn num(a: &BTreeMap<String, String>, key: &str) -> u64 {
    a.get(key).unwrap_or_else(|| panic!("missing {key}=")).parse().unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn num_or(a: &BTreeMap<String, String>, key: &str, default: u64) -> u64 {
    a.get(key).map_or(default, |v| v.parse().unwrap_or_else(|e| panic!("{key}: {e}")))
}

fn ids(v: &str) -> Vec<NodeId> {
    v.split(',').filter(|s| !s.is_empty()).map(|s| s.trim().parse().expect("node id")).collect()
}

fn history(v: &str) -> Vec<(Epoch, Lsn)> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(|p| {
            let (e, l) = p.split_once('@').expect("epoch@lsn");
            (e.parse().expect("epoch"), l.parse().expect("lsn"))
        })
        .collect()
}

fn entries(a: &BTreeMap<String, String>) -> Vec<WireEntry> {
    let (from, to) = a["lsns"].split_once("..").expect("lsns=a..b");
    let (from, to): (Lsn, Lsn) = (from.parse().expect("lsn"), to.parse().expect("lsn"));
    let epoch = num(a, "entry_epoch");
    (from..=to).map(|lsn| WireEntry { lsn, epoch, payload: Bytes::from(format!("e{lsn}")) }).collect()
}

fn show(out: &Output) -> String {
    match out {
        Output::Persist(p) => format!("persist {p:?}"),
        Output::Append(es) => format!(
            "append lsn {}..{} epochs {:?}",
            es.first().map_or(0, |e| e.lsn),
            es.last().map_or(0, |e| e.lsn),
            es.iter().map(|e| e.epoch).collect::<std::collections::BTreeSet<_>>()
        ),
        Output::Snapshot(s) => format!("snapshot {s:?}"),
        Output::Send { to, msg: PeerMsg::Entries { epoch, entries, leader_last_lsn, .. } } => format!(
            "send {to} Entries epoch {epoch} lsn {}..{} leader_last {leader_last_lsn}",
            entries.first().map_or(0, |e| e.lsn),
            entries.last().map_or(0, |e| e.lsn)
        ),
        Output::Send { to, msg: PeerMsg::Subscribe { epoch, last_lsn, history, .. } } => {
            format!("send {to} Subscribe epoch {epoch} last_lsn {last_lsn} history {history:?}")
        }
        Output::Send { to, msg: PeerMsg::Welcome { epoch, stream_from, diverged_after, history, .. } } => format!(
            "send {to} Welcome epoch {epoch} stream_from {stream_from} diverged_after {diverged_after:?} history \
             {history:?}"
        ),
        Output::Send { to, msg: PeerMsg::Heartbeat { epoch, leader_last_lsn, leader_durable_lsn, .. } } => {
            format!("send {to} Heartbeat epoch {epoch} last {leader_last_lsn} durable {leader_durable_lsn}")
        }
        Output::Send { to, msg } => format!("send {to} {msg:?}"),
        Output::Transmit(t) => format!("transmit {t:?}"),
        Output::Connect { to } => format!("connect {to}"),
        Output::Disconnect { peer } => format!("disconnect {peer}"),
        Output::Reply { token, reply } => format!("reply {token} {reply:?}"),
        Output::Timer { kind, at_ms: Some(at) } => format!("timer {kind:?} at {at}"),
        Output::Timer { kind, at_ms: None } => format!("timer {kind:?} off"),
        Output::Role(r) => format!("role {r:?}"),
    }
}

impl Script {
    fn r(&mut self) -> &mut SingleLeaderReplica {
        self.replica.as_mut().expect("`node` first")
    }

    fn run(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let a = args(&words[1..]);
        let now = Now::at(self.now);
        let input = match words[0] {
            "node" => {
                let id = num(&a, "id");
                let mut config = SingleLeaderConfig::new(id, a.get("members").map_or(Vec::new(), |m| ids(m)));
                if let Some(lease) = a.get("lease") {
                    config.lease = Some(LeaseConfig {
                        lease_ms: lease.parse().expect("lease"),
                        clock_drift_percent: num_or(&a, "drift", 0),
                    });
                }
                if let Some(p) = a.get("policy") {
                    config.durability =
                        Durability { policy: p.parse().expect("policy"), level: AckLevel::Flush, timeout_ms: 0 };
                }
                let last = num_or(&a, "last", 0);
                let state = DurableState {
                    epoch: num_or(&a, "epoch", 0),
                    led_epoch: num_or(&a, "led", 0),
                    last_lsn: last,
                    durable_lsn: num_or(&a, "durable", last),
                    history: EpochHistory::from_pairs(a.get("history").map_or(Vec::new(), |h| history(h))),
                };
                self.replica = Some(SingleLeaderReplica::new(config, state, now));
                if let Some(l) = a.get("static") {
                    let leader = l.parse().ok();
                    self.r().start_static(now, leader);
                }
                return self.drain();
            }
            "time" => {
                self.now = num(&a, "ms");
                return String::new();
            }
            "map" => Input::Map(MapView {
                leader: a.get("leader").and_then(|l| l.parse().ok()),
                epoch: num(&a, "epoch"),
                members: a.get("members").map_or(Vec::new(), |m| ids(m)),
            }),
            "write" => Input::ClientWrite { token: num(&a, "token") },
            "read" => Input::ClientRead { token: num(&a, "token") },
            "appended" => Input::Appended {
                token: num(&a, "token"),
                lsn: num(&a, "lsn"),
                commit_ms: self.now,
                durability: Durability {
                    policy: a.get("policy").map_or("async", |p| p.as_str()).parse().expect("policy"),
                    level: AckLevel::Flush,
                    timeout_ms: num_or(&a, "timeout", 0),
                },
            },
            "lease-request" => Input::Peer {
                from: num(&a, "from"),
                msg: PeerMsg::LeaseRequest { epoch: num(&a, "epoch"), stamp_ms: num(&a, "stamp") },
            },
            "grant" => Input::Peer { from: num(&a, "from"), msg: PeerMsg::LeaseGrant { stamp_ms: num(&a, "stamp") } },
            "subscribe" => Input::Peer {
                from: num(&a, "from"),
                msg: PeerMsg::Subscribe {
                    node_id: num(&a, "from"),
                    epoch: num(&a, "epoch"),
                    last_lsn: num(&a, "last"),
                    client_addr: String::new(),
                    history: a.get("history").map_or(Vec::new(), |h| history(h)),
                },
            },
            "ack" => Input::Peer {
                from: num(&a, "from"),
                msg: PeerMsg::Ack { flushed_lsn: num(&a, "flushed"), applied_lsn: num(&a, "applied") },
            },
            "welcome" => Input::Peer {
                from: num(&a, "from"),
                msg: PeerMsg::Welcome {
                    leader_id: num(&a, "from"),
                    epoch: num(&a, "epoch"),
                    leader_client_addr: format!("node-{}", num(&a, "from")),
                    stream_from: a
                        .get("stream_from")
                        .map_or(crate::repl::msg::STREAM_FROM_SNAPSHOT, |s| s.parse().expect("stream_from")),
                    history: a.get("history").map_or(Vec::new(), |h| history(h)),
                    diverged_after: a.get("diverged_after").map(|d| d.parse().expect("diverged_after")),
                },
            },
            "entries" => Input::Peer {
                from: num(&a, "from"),
                msg: PeerMsg::Entries {
                    epoch: num(&a, "epoch"),
                    entries: entries(&a),
                    leader_last_lsn: num(&a, "leader_last"),
                    leader_now_ms: self.now,
                },
            },
            "snapshot-begin" => Input::Peer {
                from: num(&a, "from"),
                msg: PeerMsg::SnapshotBegin { epoch: num(&a, "epoch"), start_lsn: num(&a, "start") },
            },
            "snapshot-end" => {
                Input::Peer { from: num(&a, "from"), msg: PeerMsg::SnapshotEnd { end_lsn: num(&a, "end") } }
            }
            "snapshot-installed" => Input::SnapshotInstalled { start_lsn: num(&a, "start") },
            "disconnected" => Input::Disconnected { peer: num(&a, "peer") },
            "timer" => Input::Timer(match a["kind"].as_str() {
                "Leader" => TimerKind::Leader,
                "LeaseRenew" => TimerKind::LeaseRenew,
                "LeaseExpiry" => TimerKind::LeaseExpiry,
                "LeaderSilence" => TimerKind::LeaderSilence,
                "Reconnect" => TimerKind::Reconnect,
                other => panic!("unknown timer {other}"),
            }),
            "durable" => Input::Durable { lsn: num(&a, "lsn") },
            "applied" => Input::Applied { lsn: num(&a, "lsn"), commit_ms: self.now },
            "sent" => {
                Input::Sent { to: num(&a, "to"), last_lsn: num(&a, "last"), bytes: num_or(&a, "bytes", 10) as usize }
            }
            "probe" => Input::Control { token: num(&a, "token"), rpc: FailoverRpc::Probe },
            "fence" => {
                Input::Control { token: num(&a, "token"), rpc: FailoverRpc::Fence { old_epoch: num(&a, "old_epoch") } }
            }
            "pause" => Input::Control { token: num(&a, "token"), rpc: FailoverRpc::Pause { epoch: num(&a, "epoch") } },
            "resume" => {
                Input::Control { token: num(&a, "token"), rpc: FailoverRpc::Resume { epoch: num(&a, "epoch") } }
            }
            "status" => {
                let r = self.r();
                return format!(
                    "role {:?}\nkey {:?} epoch {} last_lsn {}\n",
                    r.role(),
                    r.role_key(),
                    r.epoch(),
                    r.last_lsn()
                );
            }
            other => panic!("unknown command {other}"),
        };
        self.r().handle(now, input);
        self.drain()
    }

    fn drain(&mut self) -> String {
        let mut s = String::new();
        while let Some(out) = self.r().poll_output() {
            let _ = writeln!(s, "{}", show(&out));
        }
        s
    }
}

/// Runs one transcript; returns the text with actual outputs.
fn run_transcript(text: &str) -> String {
    let mut script = Script { replica: None, now: 0 };
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
        assert_eq!(lines.next(), Some("----"), "expected ---- after `{line}`");
        out.push_str("----\n");
        // Skip the expected block (up to a blank line or the end).
        while lines.peek().is_some_and(|l| !l.trim().is_empty()) {
            lines.next();
        }
        out.push_str(&script.run(line));
    }
    out
}

fn transcript(name: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/replica/testdata").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let actual = run_transcript(&text);
    if std::env::var_os("TANDEM_REWRITE").is_some() {
        std::fs::write(&path, &actual).expect("rewrite");
        return;
    }
    if actual != text {
        let diff: Vec<String> = text
            .lines()
            .zip(actual.lines())
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .take(5)
            .map(|(i, (e, a))| format!("line {}:\n  expected: {e}\n  actual:   {a}", i + 1))
            .collect();
        panic!(
            "transcript {name} differs (TANDEM_REWRITE=1 rewrites it):\n{}\n--- actual ---\n{actual}",
            diff.join("\n")
        );
    }
}

#[test]
fn transcript_leader_loss_and_promotion() {
    transcript("leader_loss_and_promotion.txt");
}

#[test]
fn transcript_fencing_stops_the_old_leader() {
    transcript("fencing.txt");
}

#[test]
fn transcript_returning_old_leader_rolls_back_its_divergent_tail() {
    transcript("divergent_old_leader.txt");
}

#[test]
fn transcript_switchover_pauses_then_hands_over() {
    transcript("switchover.txt");
}

// ------------------------------------------------------------ unit tests

fn map(leader: Option<NodeId>, epoch: Epoch) -> MapView {
    MapView { leader, epoch, members: vec![1, 2, 3] }
}

#[test]
fn a_node_never_leads_an_epoch_it_led_before_restarting() {
    let d = decide_map(1, RoleKey::Following(2), &map(Some(1), 4), false, 4, 4);
    assert!(matches!(d, MapDecision::Idle { .. }), "{d:?}");
    assert_eq!(decide_map(1, RoleKey::Idle, &map(Some(1), 4), false, 4, 4), MapDecision::Stay);
    assert_eq!(decide_map(1, RoleKey::Idle, &map(Some(1), 5), false, 4, 4), MapDecision::Lead { epoch: 5 });
}

#[test]
fn a_fenced_node_ignores_the_map_it_fenced() {
    assert_eq!(decide_map(1, RoleKey::Idle, &map(Some(2), 3), false, 4, 0), MapDecision::Stay);
}

#[test]
fn an_unchanged_map_restarts_nothing() {
    assert_eq!(decide_map(1, RoleKey::Leading(3), &map(Some(1), 3), false, 3, 3), MapDecision::Stay);
    assert_eq!(decide_map(1, RoleKey::Following(2), &map(Some(2), 3), false, 3, 0), MapDecision::Stay);
    assert_eq!(decide_map(1, RoleKey::Leading(3), &map(Some(1), 3), true, 3, 3), MapDecision::Restream);
}

#[test]
fn a_map_naming_a_non_member_leader_is_not_followed() {
    assert!(matches!(decide_map(1, RoleKey::Idle, &map(Some(9), 3), false, 0, 0), MapDecision::Invalid(_)));
}

#[test]
fn outputs_drain_persists_then_messages_then_releases_then_timers_then_roles() {
    let mut q = Outputs::default();
    q.push(Output::Role(RoleStatus::Idle { reason: "x".into() }));
    q.push(Output::Timer { kind: TimerKind::Reconnect, at_ms: Some(1) });
    q.push(Output::Reply { token: 1, reply: Reply::Proceed });
    q.push(Output::Connect { to: 2 });
    q.push(Output::Persist(Persist::Epoch(3)));
    let order: Vec<&str> = std::iter::from_fn(|| q.pop())
        .map(|o| match o {
            Output::Persist(_) => "persist",
            Output::Connect { .. } => "message",
            Output::Reply { .. } => "release",
            Output::Timer { .. } => "timer",
            Output::Role(_) => "role",
            _ => "other",
        })
        .collect();
    assert_eq!(order, ["persist", "message", "release", "timer", "role"]);
}

#[test]
fn a_leader_without_a_majority_lease_refuses_writes_and_reads() {
    let lease = LeaseConfig { lease_ms: 1000, clock_drift_percent: 0 };
    let mut config = SingleLeaderConfig::new(1, vec![1, 2, 3]);
    config.lease = Some(lease);
    let mut r = SingleLeaderReplica::new(config, DurableState::default(), Now::at(5));
    r.handle(Now::at(5), Input::Map(map(Some(1), 1)));
    assert_eq!(r.write_refusal(Now::at(10)), Some(Refusal::NoLease));
    r.handle(Now::at(10), Input::Peer { from: 2, msg: PeerMsg::LeaseGrant { stamp_ms: 5 } });
    assert_eq!(r.write_refusal(Now::at(20)), None);
    r.handle(Now::at(20), Input::ClientRead { token: 7 });
    r.handle(Now::at(1500), Input::ClientRead { token: 8 });
    let replies: Vec<(u64, Reply)> = std::iter::from_fn(|| r.poll_output())
        .filter_map(|o| match o {
            Output::Reply { token, reply } => Some((token, reply)),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [(7, Reply::Proceed), (8, Reply::Refused(Refusal::NoLease))]);
}

#[test]
fn the_same_inputs_give_the_same_outputs() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/replica/testdata/leader_loss_and_promotion.txt"),
    )
    .expect("read");
    assert_eq!(run_transcript(&text), run_transcript(&text));
}

// ------------------------------------------------------------ a tiny shell

/// Three replicas wired by an in-memory network and logs, executing
/// outputs in drain order: the smallest shell that proves the object runs
/// replication end to end on its own.
struct Cluster {
    replicas: BTreeMap<NodeId, SingleLeaderReplica>,
    logs: BTreeMap<NodeId, Vec<WireEntry>>,
    wire: std::collections::VecDeque<(NodeId, NodeId, PeerMsg)>,
    inputs: std::collections::VecDeque<(NodeId, Input)>,
    replies: Vec<(NodeId, u64, Reply)>,
    now: u64,
}

impl Cluster {
    fn new(members: &[NodeId], leader: NodeId, policy: &str) -> Cluster {
        let mut c = Cluster {
            replicas: BTreeMap::new(),
            logs: BTreeMap::new(),
            wire: Default::default(),
            inputs: Default::default(),
            replies: Vec::new(),
            now: 1,
        };
        for &id in members {
            let mut config = SingleLeaderConfig::new(id, members.to_vec());
            config.durability =
                Durability { policy: policy.parse().expect("policy"), level: AckLevel::Flush, timeout_ms: 0 };
            let state = DurableState { epoch: 1, ..Default::default() };
            let mut r = SingleLeaderReplica::new(config, state, Now::at(c.now));
            r.start_static(Now::at(c.now), Some(leader));
            c.replicas.insert(id, r);
            c.logs.insert(id, Vec::new());
            c.execute(id);
        }
        c
    }

    fn execute(&mut self, id: NodeId) {
        while let Some(out) = self.replicas.get_mut(&id).expect("node").poll_output() {
            match out {
                Output::Append(entries) => {
                    let last = entries.last().map_or(0, |e| e.lsn);
                    self.logs.get_mut(&id).expect("log").extend(entries);
                    self.inputs.push_back((id, Input::Applied { lsn: last, commit_ms: self.now }));
                    self.inputs.push_back((id, Input::Durable { lsn: last }));
                }
                Output::Send { to, msg } => self.wire.push_back((id, to, msg)),
                Output::Transmit(Transmit::Entries { to, from_lsn, .. }) => {
                    let log = &self.logs[&id];
                    let entries: Vec<WireEntry> = log.iter().filter(|e| e.lsn >= from_lsn).take(64).cloned().collect();
                    let last_lsn = entries.last().map_or(from_lsn - 1, |e| e.lsn);
                    let epoch = self.replicas[&id].epoch();
                    let msg =
                        PeerMsg::Entries { epoch, entries, leader_last_lsn: log.len() as Lsn, leader_now_ms: self.now };
                    self.wire.push_back((id, to, msg));
                    self.inputs.push_back((id, Input::Sent { to, last_lsn, bytes: 10 }));
                }
                Output::Transmit(Transmit::Heartbeat { to, msg }) => self.wire.push_back((id, to, msg)),
                Output::Transmit(Transmit::Snapshot { .. }) | Output::Snapshot(_) => panic!("no snapshot expected"),
                Output::Reply { token, reply } => self.replies.push((id, token, reply)),
                Output::Persist(_)
                | Output::Connect { .. }
                | Output::Disconnect { .. }
                | Output::Timer { .. }
                | Output::Role(_) => {}
            }
        }
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            if let Some((id, input)) = self.inputs.pop_front() {
                self.replicas.get_mut(&id).expect("node").handle(Now::at(self.now), input);
                self.execute(id);
            } else if let Some((from, to, msg)) = self.wire.pop_front() {
                self.replicas.get_mut(&to).expect("node").handle(Now::at(self.now), Input::Peer { from, msg });
                self.execute(to);
            } else {
                return;
            }
            self.now += 1;
        }
        panic!("the cluster never settled");
    }

    fn write(&mut self, leader: NodeId, token: u64, policy: &str) {
        self.replicas.get_mut(&leader).expect("leader").handle(Now::at(self.now), Input::ClientWrite { token });
        self.execute(leader);
        assert_eq!(self.replies.pop(), Some((leader, token, Reply::Proceed)));
        let lsn = self.logs[&leader].len() as Lsn + 1;
        let epoch = self.replicas[&leader].epoch();
        self.logs.get_mut(&leader).expect("log").push(WireEntry {
            lsn,
            epoch,
            payload: Bytes::from(format!("w{token}")),
        });
        let durability = Durability { policy: policy.parse().expect("policy"), level: AckLevel::Flush, timeout_ms: 0 };
        self.inputs.push_back((leader, Input::Appended { token, lsn, commit_ms: self.now, durability }));
        self.inputs.push_back((leader, Input::Durable { lsn }));
    }
}

#[test]
fn replicas_alone_replicate_and_release_acks_only_when_the_policy_holds() {
    let mut c = Cluster::new(&[1, 2, 3], 1, "all");
    c.settle();
    for token in 1..=20 {
        c.write(1, token, "all");
    }
    c.settle();
    let acked: Vec<u64> =
        c.replies.iter().filter(|(_, _, r)| *r == Reply::Write(Outcome::Acked)).map(|(_, t, _)| *t).collect();
    assert_eq!(acked, (1..=20).collect::<Vec<u64>>());
    assert_eq!(c.logs[&2], c.logs[&1]);
    assert_eq!(c.logs[&3], c.logs[&1]);
    assert_eq!(c.logs[&1].len(), 20);
}

#[test]
fn a_write_under_all_is_not_acked_while_a_follower_never_subscribed() {
    let mut c = Cluster::new(&[1, 2, 3], 1, "all");
    c.wire.retain(|(from, _, _)| *from != 3);
    c.settle();
    c.write(1, 1, "all");
    c.settle();
    assert!(!c.replies.iter().any(|(_, t, r)| *t == 1 && *r == Reply::Write(Outcome::Acked)), "{:?}", c.replies);
    c.write(1, 2, "any 1");
    c.settle();
    assert!(c.replies.iter().any(|(_, t, r)| *t == 2 && *r == Reply::Write(Outcome::Acked)), "{:?}", c.replies);
}
