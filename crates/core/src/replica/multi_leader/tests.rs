//! Scenarios of the multi-leader replica over an in-memory network.

use bytes::Bytes;

use super::*;

/// Nodes 1..=n with logs, a network that can be cut, and replies.
struct Net {
    nodes: Vec<MultiLeaderReplica>,
    logs: Vec<Vec<MlEntry>>,
    replies: Vec<(NodeId, u64, Frame)>,
    cut: Vec<(NodeId, NodeId)>,
    /// Durability reports held back (node index) to test the ack rule.
    hold_durable: Option<usize>,
    now: u64,
}

impl Net {
    fn new(n: u64, policy: ConflictPolicy) -> Net {
        let ids: Vec<NodeId> = (1..=n).collect();
        let mut net = Net {
            nodes: ids.iter().map(|i| MultiLeaderReplica::new(*i, "ml", policy, &ids)).collect(),
            logs: vec![Vec::new(); n as usize],
            replies: Vec::new(),
            cut: Vec::new(),
            hold_durable: None,
            now: 1_000,
        };
        net.connect_all();
        net
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    fn connect_all(&mut self) {
        let n = self.nodes.len() as u64;
        for a in 1..=n {
            for b in 1..=n {
                if a != b && self.linked(a, b) {
                    // a dials b: b sees an incoming stream.
                    self.nodes[(a - 1) as usize].handle_open(b, Stream::Out);
                    self.nodes[(b - 1) as usize].handle_open(a, Stream::In);
                }
            }
        }
        self.run();
    }

    fn cmd(&mut self, node: NodeId, token: u64, args: &str) {
        let args: Vec<Bytes> = args.split(' ').map(|s| Bytes::from(s.to_string())).collect();
        self.now += 1;
        self.nodes[(node - 1) as usize].handle_command(self.now, token, &args);
        self.run();
    }

    fn run(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..self.nodes.len() {
                let mut appended = None;
                while let Some(out) = self.nodes[i].poll_output() {
                    progressed = true;
                    let me = i as NodeId + 1;
                    match out {
                        MlOutput::Append { index, entry } => {
                            self.logs[i].push(entry);
                            appended = Some(index);
                        }
                        MlOutput::Send { to, stream, msg } => {
                            if self.linked(me, to) {
                                let back = if stream == Stream::Out { Stream::In } else { Stream::Out };
                                let now = self.now;
                                self.nodes[(to - 1) as usize].handle_msg(now, me, back, msg);
                            }
                        }
                        MlOutput::Reply { token, frame } => self.replies.push((me, token, frame)),
                        MlOutput::Conflict(_) => {}
                    }
                }
                if let Some(idx) = appended {
                    if self.hold_durable != Some(i) {
                        self.nodes[i].handle_durable(idx);
                        progressed = true;
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn get(&mut self, node: NodeId, args: &str) -> Frame {
        self.cmd(node, 999, args);
        let (_, _, f) = self.replies.pop().expect("a reply");
        f
    }

    fn restart(&mut self, node: NodeId) {
        let n = self.nodes.len() as u64;
        let ids: Vec<NodeId> = (1..=n).collect();
        let policy = self.nodes[0].policy();
        let mut r = MultiLeaderReplica::new(node, "ml", policy, &ids);
        for e in self.logs[(node - 1) as usize].clone() {
            r.recover(e);
        }
        self.nodes[(node - 1) as usize] = r;
        for p in 1..=n {
            if p != node {
                self.nodes[(p - 1) as usize].handle_closed(node, Stream::Out);
                self.nodes[(p - 1) as usize].handle_closed(node, Stream::In);
            }
        }
        self.connect_all();
    }
}

fn set_of(f: Frame) -> Vec<Bytes> {
    match f {
        Frame::Set(v) => v
            .into_iter()
            .map(|x| match x {
                Frame::Bulk(b) => b,
                other => panic!("{other:?}"),
            })
            .collect(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn write_is_acknowledged_after_local_durability_and_never_waits_for_peers() {
    let mut net = Net::new(3, ConflictPolicy::Crdt);
    net.cut = vec![(1, 2), (1, 3)];
    net.hold_durable = Some(0);
    net.cmd(1, 1, "INCRBY c 5");
    assert!(net.replies.is_empty(), "no ack before the log is durable");
    let idx = net.logs[0].len() as u64;
    net.nodes[0].handle_durable(idx);
    net.hold_durable = None;
    net.run();
    assert_eq!(net.replies, vec![(1, 1, Frame::Integer(5))]);
}

#[test]
fn partitioned_crdt_writes_converge_to_the_merged_state_after_heal() {
    let mut net = Net::new(3, ConflictPolicy::Crdt);
    net.cmd(1, 1, "SADD s a b");
    net.cut = vec![(1, 2), (1, 3)];
    net.cmd(1, 2, "SREM s a");
    net.cmd(2, 3, "SADD s a c");
    net.cmd(1, 4, "INCRBY n 5");
    net.cmd(3, 5, "INCRBY n 7");
    net.cut.clear();
    net.connect_all();
    for node in 1..=3 {
        assert_eq!(set_of(net.get(node, "SMEMBERS s")), vec!["a", "b", "c"], "node {node}");
        assert_eq!(net.get(node, "GET n"), Frame::Bulk(Bytes::from("12")));
    }
    assert_eq!(net.nodes[0].keys(), net.nodes[1].keys());
    assert_eq!(net.nodes[1].keys(), net.nodes[2].keys());
}

#[test]
fn lww_discard_of_a_concurrent_write_goes_to_the_feed() {
    let mut net = Net::new(2, ConflictPolicy::Lww);
    net.cut = vec![(1, 2)];
    net.cmd(1, 1, "SET k one");
    net.cmd(2, 2, "SET k two");
    net.cut.clear();
    net.connect_all();
    assert_eq!(net.get(1, "GET k"), net.get(2, "GET k"));
    let total: u64 = net.nodes.iter().map(|n| n.conflicts_total()).sum();
    assert_eq!(total, 2, "each node records the discard it made");
    let item = net.nodes[0].conflicts(0, 10).next().unwrap();
    assert_eq!(item.record.outcome, crate::conflict::Outcome::Discarded);
}

#[test]
fn siblings_get_refuses_and_resolve_keeps_a_concurrent_sibling() {
    let mut net = Net::new(3, ConflictPolicy::Siblings);
    net.cut = vec![(1, 2), (1, 3), (2, 3)];
    net.cmd(1, 1, "SET k x");
    net.cmd(2, 2, "SET k y");
    net.cut = vec![(1, 3), (2, 3)];
    net.connect_all();
    match net.get(1, "GET k") {
        Frame::Error(e) => assert!(e.starts_with("CONFLICT k has 2 siblings"), "{e}"),
        other => panic!("{other:?}"),
    }
    let Frame::Array(sibs) = net.get(1, "SIBLINGS k") else { panic!() };
    let Frame::Bulk(ctx) = &sibs[0] else { panic!() };
    let ctx = String::from_utf8(ctx.to_vec()).unwrap();
    // Node 3 writes concurrently with the resolve.
    net.cmd(3, 3, "SET k z");
    net.cmd(1, 4, &format!("RESOLVE k {ctx} merged"));
    net.cut.clear();
    net.connect_all();
    let Frame::Array(sibs) = net.get(2, "SIBLINGS k") else { panic!() };
    let vals: Vec<Frame> = sibs[1..].to_vec();
    assert_eq!(vals, vec![Frame::Bulk(Bytes::from("merged")), Frame::Bulk(Bytes::from("z"))]);
}

#[test]
fn restarted_node_keeps_acknowledged_writes_and_ships_them_on_return() {
    let mut net = Net::new(2, ConflictPolicy::Crdt);
    net.cut = vec![(1, 2)];
    net.cmd(1, 1, "SADD s a");
    net.cmd(1, 2, "HSET h f 1");
    net.restart(1);
    assert_eq!(set_of(net.get(1, "SMEMBERS s")), vec!["a"]);
    net.cut.clear();
    net.connect_all();
    assert_eq!(set_of(net.get(2, "SMEMBERS s")), vec!["a"]);
    assert_eq!(net.get(2, "HGET h f"), Frame::Bulk(Bytes::from("1")));
    assert_eq!(net.nodes[1].applied().get(1), 2);
}

#[test]
fn reconnecting_peer_resumes_from_its_durable_progress_without_duplicates() {
    let mut net = Net::new(2, ConflictPolicy::Crdt);
    net.cmd(1, 1, "INCR c");
    net.cut = vec![(1, 2)];
    net.cmd(1, 2, "INCR c");
    net.cut.clear();
    net.connect_all();
    net.connect_all();
    assert_eq!(net.get(2, "GET c"), Frame::Bulk(Bytes::from("2")));
    assert_eq!(net.logs[1].len(), 2, "each write logged once on the receiver");
}

#[test]
fn unsupported_command_names_the_keyspace_and_policy() {
    let mut net = Net::new(1, ConflictPolicy::Lww);
    match net.get(1, "SADD s a") {
        Frame::Error(e) => assert!(e.contains("keyspace 'ml'") && e.contains("conflict lww"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn sender_reports_how_many_writes_a_cut_off_peer_lacks_and_for_how_long() {
    let mut net = Net::new(3, ConflictPolicy::Crdt);
    net.cut = vec![(1, 3)];
    net.cmd(1, 1, "INCRBY c 1");
    let first_ms = net.now;
    net.cmd(1, 2, "INCRBY c 2");
    let n1 = &net.nodes[0];
    assert_eq!(n1.unshipped(3), 2);
    assert_eq!(n1.unshipped_ms(3, first_ms + 500), 500, "age of the oldest write peer 3 lacks");
    assert_eq!(n1.unshipped(2), 0);
    assert_eq!(n1.unshipped_ms(2, first_ms + 500), 0);
    net.cut.clear();
    net.connect_all();
    assert_eq!(net.nodes[0].unshipped(3), 0);
    assert_eq!(net.nodes[0].unshipped_ms(3, first_ms + 500), 0);
    assert_eq!(net.nodes[2].applied().get(1), 2);
}
