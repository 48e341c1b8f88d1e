//! Pub/sub across the cluster (issue 13 item 5): a PUBLISH on any node
//! reaches subscribers on every node, with Redis's reply shapes in RESP2
//! and RESP3, Redis's subscribe-mode rules, a per-subscriber output buffer
//! limit, and links that come back after a node restarts.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{eventually, Raw, Resp, TestServer};

const DELIVERY: Duration = Duration::from_secs(10);

fn bulk(s: &str) -> Resp {
    Resp::Bulk(s.as_bytes().to_vec())
}

/// Reads messages until one satisfies `want` or `timeout` passes.
fn wait_message(pubsub: &mut redis::PubSub<'_>, timeout: Duration, want: impl Fn(&redis::Msg) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(msg) = pubsub.get_message() {
            if want(&msg) {
                return true;
            }
        }
    }
    false
}

fn publish(server: &TestServer, channel: &str, msg: &str) -> i64 {
    redis::cmd("PUBLISH").arg(channel).arg(msg).query(&mut server.conn()).unwrap()
}

#[test]
fn a_publish_on_any_node_reaches_channel_and_pattern_subscribers_on_every_node() {
    let c = Cluster::three(&[]);
    let mut sub_conn = redis::Client::open(c.node(2).url()).unwrap().get_connection().unwrap();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe("news").unwrap();
    pubsub.psubscribe("n*").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();

    // The reply counts this node's receivers only (as in Redis Cluster).
    assert_eq!(publish(c.node(1), "news", "from-1"), 0);
    let mut got = Vec::new();
    let deadline = Instant::now() + DELIVERY;
    while got.len() < 2 && Instant::now() < deadline {
        if let Ok(m) = pubsub.get_message() {
            got.push((
                m.get_pattern::<Option<String>>().unwrap(),
                m.get_channel_name().to_string(),
                m.get_payload::<String>().unwrap(),
            ));
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (None, "news".to_string(), "from-1".to_string()),
            (Some("n*".to_string()), "news".to_string(), "from-1".to_string())
        ],
        "{}",
        c.stderrs()
    );
    assert_eq!(publish(c.node(3), "nothing", "from-3"), 0);
    assert!(wait_message(&mut pubsub, DELIVERY, |m| m.get_channel_name() == "nothing"
        && m.get_pattern::<Option<String>>().unwrap().as_deref() == Some("n*")
        && m.get_payload::<String>().unwrap() == "from-3"));
    // On the subscriber's own node both subscriptions count.
    assert_eq!(publish(c.node(2), "news", "local"), 2);
    // A channel nobody matches reaches nobody, anywhere.
    assert_eq!(publish(c.node(1), "other", "x"), 0);

    let mut raw = Raw::connect(c.node(2).client_addr());
    assert_eq!(
        raw.cmd(&["PUBSUB", "NUMSUB", "news", "other"]),
        Resp::Array(vec![bulk("news"), Resp::Integer(1), bulk("other"), Resp::Integer(0)])
    );
    assert_eq!(raw.cmd(&["PUBSUB", "NUMPAT"]), Resp::Integer(1));
    assert_eq!(raw.cmd(&["PUBSUB", "CHANNELS"]), Resp::Array(vec![bulk("news")]));
    assert_eq!(raw.cmd(&["PUBSUB", "CHANNELS", "x*"]), Resp::Array(vec![]));
    let mut raw1 = Raw::connect(c.node(1).client_addr());
    assert_eq!(raw1.cmd(&["PUBSUB", "NUMSUB", "news"]), Resp::Array(vec![bulk("news"), Resp::Integer(0)]));
    assert_eq!(raw1.cmd(&["PUBSUB", "NUMPAT"]), Resp::Integer(0));
}

#[test]
fn resp2_subscribe_mode_allows_only_pubsub_commands_and_ping_answers_a_pong_array() {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut raw = Raw::connect(server.client_addr());
    // Unsubscribing with no subscription confirms with a null channel.
    assert_eq!(raw.cmd(&["UNSUBSCRIBE"]), Resp::Array(vec![bulk("unsubscribe"), Resp::Nil, Resp::Integer(0)]));
    raw.send_cmd(&["SUBSCRIBE", "a", "b"]).unwrap();
    assert_eq!(raw.read().unwrap(), Resp::Array(vec![bulk("subscribe"), bulk("a"), Resp::Integer(1)]));
    assert_eq!(raw.read().unwrap(), Resp::Array(vec![bulk("subscribe"), bulk("b"), Resp::Integer(2)]));
    assert_eq!(
        raw.cmd(&["PSUBSCRIBE", "h?llo"]),
        Resp::Array(vec![bulk("psubscribe"), bulk("h?llo"), Resp::Integer(3)])
    );
    match raw.cmd(&["GET", "k"]) {
        Resp::Error(e) => assert!(
            e.starts_with("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET"),
            "{e}"
        ),
        other => panic!("GET in subscribe mode: {other:?}"),
    }
    assert_eq!(raw.cmd(&["PING"]), Resp::Array(vec![bulk("pong"), bulk("")]));
    assert_eq!(raw.cmd(&["PING", "hi"]), Resp::Array(vec![bulk("pong"), bulk("hi")]));
    assert_eq!(publish(&server, "hello", "p"), 1);
    assert_eq!(raw.read().unwrap(), Resp::Array(vec![bulk("pmessage"), bulk("h?llo"), bulk("hello"), bulk("p")]));
    assert_eq!(raw.cmd(&["PUNSUBSCRIBE"]), Resp::Array(vec![bulk("punsubscribe"), bulk("h?llo"), Resp::Integer(2)]));
    raw.send_cmd(&["UNSUBSCRIBE"]).unwrap();
    assert_eq!(raw.read().unwrap(), Resp::Array(vec![bulk("unsubscribe"), bulk("a"), Resp::Integer(1)]));
    assert_eq!(raw.read().unwrap(), Resp::Array(vec![bulk("unsubscribe"), bulk("b"), Resp::Integer(0)]));
    // Out of subscribe mode: normal commands again.
    assert_eq!(raw.cmd(&["GET", "k"]), Resp::Nil);
    assert_eq!(raw.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn resp3_subscribers_get_push_frames_and_may_run_any_command() {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut raw = Raw::connect(server.client_addr());
    assert!(matches!(raw.cmd(&["HELLO", "3"]), Resp::Map(_)));
    raw.send_cmd(&["SUBSCRIBE", "c"]).unwrap();
    assert_eq!(raw.read_line().unwrap(), ">3", "a subscribe confirmation is a push frame");
    assert_eq!(raw.read().unwrap(), bulk("subscribe"));
    assert_eq!(raw.read().unwrap(), bulk("c"));
    assert_eq!(raw.read().unwrap(), Resp::Integer(1));
    assert_eq!(raw.cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));
    assert_eq!(raw.cmd(&["GET", "k"]), bulk("v"));
    assert_eq!(raw.cmd(&["PING"]), Resp::Simple("PONG".into()));
    assert_eq!(publish(&server, "c", "hi"), 1);
    assert_eq!(raw.read_line().unwrap(), ">3", "a message is a push frame");
    assert_eq!(raw.read().unwrap(), bulk("message"));
    assert_eq!(raw.read().unwrap(), bulk("c"));
    assert_eq!(raw.read().unwrap(), bulk("hi"));
}

#[test]
fn a_subscriber_that_stops_reading_is_disconnected_at_its_buffer_limit_and_the_node_keeps_serving() {
    let dir = common::tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut slow = Raw::connect(server.client_addr());
    assert_eq!(
        slow.cmd(&["SUBSCRIBE", "firehose"]),
        Resp::Array(vec![bulk("subscribe"), bulk("firehose"), Resp::Integer(1)])
    );
    // Never read again. 1 MiB messages: the 32 MiB limit plus what the
    // kernel buffers is passed well before 400 of them.
    let payload = "x".repeat(1024 * 1024);
    let mut conn = server.conn();
    let mut cut_after = None;
    for i in 0..400 {
        let n: i64 = redis::cmd("PUBLISH").arg("firehose").arg(&payload).query(&mut conn).unwrap();
        if n == 0 {
            cut_after = Some(i);
            break;
        }
    }
    assert!(cut_after.is_some_and(|i| i >= 8), "the slow subscriber was cut after {cut_after:?} messages");
    // The cut subscriber leaves the hub once its connection task ends.
    assert!(eventually(Duration::from_secs(10), || {
        let numsub: Vec<redis::Value> = redis::cmd("PUBSUB").arg("NUMSUB").arg("firehose").query(&mut conn).unwrap();
        numsub.get(1) == Some(&redis::Value::Int(0))
    }));
    assert!(server.wait_for_stderr("output buffer limit", Duration::from_secs(5)));
    let (_, closed) = slow.read_until_closed(Duration::from_secs(20));
    assert!(closed, "the slow subscriber's connection is closed");
    server.assert_alive();
}

#[test]
fn subscribers_keep_receiving_across_the_cluster_after_a_follower_restarts() {
    let mut c = Cluster::three(&[]);
    let mut sub_conn = redis::Client::open(c.node(2).url()).unwrap().get_connection().unwrap();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe("events").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    publish(c.node(3), "events", "before");
    assert!(wait_message(&mut pubsub, DELIVERY, |m| m.get_payload::<String>().unwrap() == "before"));

    // Node 3 restarts: its new process dials node 2 afresh.
    c.node_mut(3).restart();
    publish(c.node(3), "events", "after-3");
    assert!(
        wait_message(&mut pubsub, DELIVERY, |m| m.get_payload::<String>().unwrap() == "after-3"),
        "{}",
        c.stderrs()
    );
    drop(pubsub);
    drop(sub_conn);

    // Node 2 (the subscriber's node) restarts: node 1's link to it breaks
    // and is redialed. A message written into the dead link is lost
    // (fire-and-forget), so publish until one arrives.
    c.node_mut(2).restart();
    let mut sub_conn = redis::Client::open(c.node(2).url()).unwrap().get_connection().unwrap();
    let mut pubsub = sub_conn.as_pubsub();
    pubsub.subscribe("events").unwrap();
    pubsub.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut n = 0;
    let arrived = eventually(DELIVERY, || {
        n += 1;
        publish(c.node(1), "events", &format!("after-2-{n}"));
        wait_message(&mut pubsub, Duration::from_millis(300), |m| {
            m.get_payload::<String>().unwrap().starts_with("after-2-")
        })
    });
    assert!(arrived, "{}", c.stderrs());
}
