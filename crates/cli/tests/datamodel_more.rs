//! The string, bitmap, key and set-algebra commands through a real
//! `tandem server`: a seeded random mix on a 3-node cluster must leave the
//! followers and a restarted leader (snapshot + log replay) equal to the
//! leader; moves across keyspaces are refused with CROSSSLOT.

mod common;

use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{tempdir, Resp, TestServer};
use redis::{Commands, Connection};

const CATCH_UP: Duration = Duration::from_secs(20);

/// A small deterministic generator (the test must reproduce from its seed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One random command of the new groups, as arguments.
fn random_command(rng: &mut Lcg) -> Vec<String> {
    let k = |rng: &mut Lcg, p: &str| format!("{p}{}", rng.below(6));
    let n = |rng: &mut Lcg, m: u64| rng.below(m).to_string();
    let c: Vec<String> = match rng.below(26) {
        0 => vec!["SETEX".into(), k(rng, "s"), "1000".into(), n(rng, 100)],
        1 => vec!["PSETEX".into(), k(rng, "s"), "900000".into(), n(rng, 100)],
        2 => vec!["GETEX".into(), k(rng, "s"), "PERSIST".into()],
        3 => vec!["GETSET".into(), k(rng, "s"), n(rng, 1000)],
        4 => vec!["MSETNX".into(), k(rng, "s"), "a".into(), k(rng, "s"), "b".into()],
        5 => vec!["INCRBYFLOAT".into(), k(rng, "f"), "1.25".into()],
        6 => vec!["SETRANGE".into(), k(rng, "s"), n(rng, 20), "xyz".into()],
        7 => vec!["SETBIT".into(), k(rng, "b"), n(rng, 200), n(rng, 2)],
        8 => vec![
            "BITOP".into(),
            ["AND", "OR", "XOR"][rng.below(3) as usize].into(),
            k(rng, "b"),
            k(rng, "b"),
            k(rng, "b"),
        ],
        9 => vec![
            "BITFIELD".into(),
            k(rng, "b"),
            "INCRBY".into(),
            "u8".into(),
            format!("#{}", rng.below(4)),
            n(rng, 300),
        ],
        10 => vec!["SADD".into(), k(rng, "t"), n(rng, 20), n(rng, 20), n(rng, 20)],
        11 => vec!["SINTERSTORE".into(), k(rng, "t"), k(rng, "t"), k(rng, "t")],
        12 => vec!["SUNIONSTORE".into(), k(rng, "t"), k(rng, "t"), k(rng, "t")],
        13 => vec!["SDIFFSTORE".into(), k(rng, "t"), k(rng, "t"), k(rng, "t")],
        14 => vec!["SMOVE".into(), k(rng, "t"), k(rng, "t"), n(rng, 20)],
        15 => vec!["RPUSH".into(), k(rng, "l"), n(rng, 50), n(rng, 50)],
        16 => vec!["RENAME".into(), k(rng, "l"), k(rng, "l")],
        17 => vec!["RENAMENX".into(), k(rng, "t"), k(rng, "t")],
        18 => vec!["COPY".into(), k(rng, "t"), k(rng, "t"), "REPLACE".into()],
        19 => vec!["COPY".into(), k(rng, "s"), k(rng, "s")],
        20 => vec!["SORT".into(), k(rng, "l"), "STORE".into(), k(rng, "l")],
        21 => vec!["HSET".into(), k(rng, "h"), n(rng, 5), n(rng, 5)],
        22 => vec!["RENAME".into(), k(rng, "h"), k(rng, "h")],
        23 => vec!["ZADD".into(), k(rng, "z"), n(rng, 10), n(rng, 10)],
        24 => vec!["COPY".into(), k(rng, "z"), k(rng, "z"), "REPLACE".into()],
        _ => vec!["EXPIRE".into(), k(rng, "t"), "100000".into()],
    };
    c
}

fn run_mix(con: &mut Connection, rng: &mut Lcg, n: usize) {
    for _ in 0..n {
        let args = random_command(rng);
        let mut cmd = redis::cmd(&args[0]);
        for a in &args[1..] {
            cmd.arg(a);
        }
        // WRONGTYPE and "no such key" are part of the mix; anything else
        // (a protocol failure, an unknown command) fails the test.
        match cmd.query::<redis::Value>(con) {
            Ok(_) => {}
            Err(e) if matches!(e.code(), Some("WRONGTYPE") | Some("ERR")) => {
                let text = e.to_string();
                assert!(
                    e.code() == Some("WRONGTYPE")
                        || text.contains("no such key")
                        || text.contains("not a valid float")
                        || text.contains("objects are the same"),
                    "{args:?}: {text}"
                );
            }
            Err(e) => panic!("{args:?}: {e}"),
        }
    }
}

#[test]
fn random_mix_of_string_bitmap_key_and_set_commands_leaves_followers_equal_to_the_leader() {
    let mut c = Cluster::three(&[]);
    c.wait_streaming(&[2, 3]);
    let mut con = c.leader().conn();
    let mut rng = Lcg(0x7a6d);
    run_mix(&mut con, &mut rng, 600);
    let _: () = redis::cmd("SAVE").query(&mut con).unwrap();
    run_mix(&mut con, &mut rng, 600);
    let last = c.leader().last_lsn();
    let leader = c.leader().dump_keys();
    assert!(leader.len() > 10, "the mix left too little to compare: {leader:?}");
    for id in [2, 3] {
        c.node(id).wait_applied(last);
        assert_eq!(c.node(id).dump_keys(), leader, "node {id}");
    }
    // Recovery: the snapshot taken mid-mix, then the log replayed over it.
    c.node_mut(1).kill9();
    c.node_mut(1).restart();
    let deadline = Instant::now() + CATCH_UP;
    while Instant::now() < deadline && !c.node(1).answers_ping() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.node(1).dump_keys(), leader, "restarted node 1");
}

#[test]
fn new_commands_answer_like_redis_through_the_redis_crate() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut con = server.conn();
    let _: () = redis::cmd("SETEX").arg("k").arg(100).arg("v").query(&mut con).unwrap();
    assert_eq!(con.ttl::<_, i64>("k").unwrap(), 100);
    assert_eq!(con.getset::<_, _, String>("k", "w").unwrap(), "v");
    assert_eq!(con.incr::<_, _, f64>("f", 2.5f64).unwrap(), 2.5);
    assert_eq!(con.setrange::<_, _, i64>("k", 3, "xyz").unwrap(), 6);
    assert_eq!(con.getrange::<_, String>("k", 0, -1).unwrap(), "w\0\0xyz");
    assert!(!con.setbit::<_, bool>("bits", 9, true).unwrap());
    assert_eq!(con.bitcount::<_, i64>("bits").unwrap(), 1);
    let _: () = con.rename("bits", "bits2").unwrap();
    assert!(con.getbit::<_, bool>("bits2", 9).unwrap());
    let _: () = con.sadd("a", &["1", "2", "3"]).unwrap();
    let _: () = con.sadd("b", &["2", "3", "4"]).unwrap();
    let mut inter: Vec<String> = con.sinter(&["a", "b"]).unwrap();
    inter.sort();
    assert_eq!(inter, vec!["2", "3"]);
    let sorted: Vec<String> = redis::cmd("SORT").arg("a").arg("DESC").query(&mut con).unwrap();
    assert_eq!(sorted, vec!["3", "2", "1"]);
    let e = redis::cmd("RENAME").arg("nope").arg("x").query::<()>(&mut con).unwrap_err();
    assert!(e.to_string().contains("no such key"), "{e}");
    let lcs: String = redis::cmd("LCS").arg("k").arg("k").query(&mut con).unwrap();
    assert_eq!(lcs, "w\0\0xyz");
}

#[test]
fn rename_copy_and_sort_store_across_keyspaces_are_refused_with_crossslot() {
    let dir = tempdir();
    let config = dir.path().join("tandem.toml");
    std::fs::write(&config, "[[keyspace]]\nname = \"carts\"\nprefix = \"cart:\"\nack = \"async\"\n").unwrap();
    let data = tempdir();
    let node = TestServer::start(data.path(), &["--config", config.to_str().unwrap()]);
    let mut c = node.raw();
    assert_eq!(c.cmd(&["RPUSH", "plain", "3", "1"]), Resp::Integer(2));
    for req in [
        &["RENAME", "plain", "cart:1"][..],
        &["COPY", "plain", "cart:1"],
        &["SORT", "plain", "STORE", "cart:1"],
        &["SMOVE", "plain", "cart:1", "x"],
        &["SUNIONSTORE", "cart:1", "plain"],
    ] {
        let reply = c.cmd(req).text();
        assert!(reply.starts_with("CROSSSLOT"), "{req:?}: {reply}");
    }
    assert_eq!(c.cmd(&["EXISTS", "cart:1"]), Resp::Integer(0));
    assert_eq!(c.cmd(&["RENAME", "cart:a", "cart:b"]).text(), "ERR no such key");
    assert_eq!(c.cmd(&["SORT", "plain", "STORE", "sorted"]), Resp::Integer(2));
}
