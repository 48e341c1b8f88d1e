//! `maxmemory` (issue 15 item 4): under `noeviction` a write that may grow
//! memory gets Redis's exact -OOM while reads and deletes keep working;
//! under `allkeys-lru` the leader evicts through its log, so the store
//! stays under the limit while far more is written and every follower ends
//! with exactly the leader's keys (followers never evict on their own);
//! under `volatile-ttl` only keys with a TTL are evicted, nearest first.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::cluster::Cluster;
use common::{eventually, http_get, metric, tempdir, TestServer};

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = redis::cmd("INFO").arg(section).query(con).expect("INFO");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} lacks {field}:\n{text}"))
        .trim()
        .to_string()
}

fn used_memory(con: &mut redis::Connection) -> u64 {
    info_field(con, "memory", "used_memory").parse().expect("used_memory is a number")
}

fn keys(con: &mut redis::Connection) -> BTreeSet<String> {
    redis::cmd("KEYS").arg("*").query::<Vec<String>>(con).expect("KEYS").into_iter().collect()
}

#[test]
fn noeviction_refuses_growing_writes_with_oom_and_keeps_serving_reads_and_deletes() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--maxmemory", "64kb", "--maxmemory-policy", "noeviction"]);
    let mut con = server.conn();
    let value = vec![b'v'; 4096];
    let mut written = 0;
    let err = loop {
        match redis::cmd("SET").arg(format!("key:{written}")).arg(&value).query::<()>(&mut con) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "64 KiB of 4 KiB values never hit the limit");
    };
    assert_eq!(err.code(), Some("OOM"), "{err}");
    assert!(err.to_string().contains("command not allowed when used memory > 'maxmemory'."), "{err}");
    assert!(written >= 10, "the limit was hit after only {written} writes");
    // Every write that may grow memory is refused; nothing was evicted.
    for cmd in [&["SADD", "s", "m"][..], &["APPEND", "key:0", "x"], &["LPUSH", "l", "x"], &["HSET", "h", "f", "v"]] {
        let e = redis::cmd(cmd[0]).arg(&cmd[1..]).query::<redis::Value>(&mut con).expect_err(cmd[0]);
        assert_eq!(e.code(), Some("OOM"), "{} answered {e}", cmd[0]);
    }
    let raw = server.raw().cmd(&["SET", "x", "y"]);
    assert_eq!(raw, common::Resp::Error(OOM.into()), "the exact Redis error text");
    assert_eq!(keys(&mut con).len(), written, "noeviction removes nothing");
    // Reads keep working.
    let got: Vec<u8> = redis::cmd("GET").arg("key:0").query(&mut con).unwrap();
    assert_eq!(got, value);
    assert_eq!(info_field(&mut con, "memory", "maxmemory"), (64 << 10).to_string());
    assert_eq!(info_field(&mut con, "memory", "maxmemory_policy"), "noeviction");
    assert_eq!(info_field(&mut con, "stats", "evicted_keys"), "0");
    // DEL frees memory, and then writes are accepted again.
    let deleted: i64 = redis::cmd("DEL").arg("key:0").arg("key:1").arg("key:2").query(&mut con).unwrap();
    assert_eq!(deleted, 3);
    let () = redis::cmd("SET").arg("after").arg("small").query(&mut con).expect("a write after DEL freed room");
    // CONFIG GET answers, CONFIG SET raises the limit at run time.
    let got: Vec<String> = redis::cmd("CONFIG").arg("GET").arg("maxmemory*").query(&mut con).unwrap();
    assert!(got.windows(2).any(|w| w == ["maxmemory", "65536"]), "{got:?}");
    assert!(got.windows(2).any(|w| w == ["maxmemory-policy", "noeviction"]), "{got:?}");
    let () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("10mb").query(&mut con).unwrap();
    for i in 0..20 {
        let () = redis::cmd("SET").arg(format!("more:{i}")).arg(&value).query(&mut con).expect("under the new limit");
    }
    let e = redis::cmd("CONFIG").arg("SET").arg("maxmemory-policy").arg("allkeys-lfu").query::<()>(&mut con);
    assert!(e.expect_err("unknown policy").to_string().contains("unknown maxmemory policy"));
    let metrics = http_get(server.admin_addr(), "/metrics").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let m = http_get(server.admin_addr(), "/metrics").unwrap();
            metric(&m, "tandem_maxmemory_bytes") == Some((10u64 << 20) as f64)
        }),
        "{metrics}"
    );
    assert!(metrics.contains("tandem_evicted_keys_total 0"), "{metrics}");
    server.assert_alive();
}

#[test]
fn allkeys_lru_keeps_memory_under_the_limit_and_followers_evict_the_same_keys() {
    const LIMIT: u64 = 256 << 10;
    let limit = LIMIT.to_string();
    let c = Cluster::three(&["--maxmemory", &limit, "--maxmemory-policy", "allkeys-lru"]);
    c.wait_streaming(&[2, 3]);
    let mut con = c.leader().conn();
    // A hot key, read between writes: LRU must keep it.
    let () = redis::cmd("SET").arg("hot").arg("keep me").query(&mut con).unwrap();
    let value = vec![b'x'; 2048];
    let writes = (3 * LIMIT as usize) / value.len();
    let mut peak = 0;
    for i in 0..writes {
        let () = redis::cmd("SET").arg(format!("key:{i}")).arg(&value).query(&mut con).expect("allkeys-lru never OOMs");
        let _: Option<String> = redis::cmd("GET").arg("hot").query(&mut con).unwrap();
        if i % 16 == 0 {
            peak = peak.max(used_memory(&mut con));
        }
    }
    // Before each write the leader evicts down to the limit, so the store
    // exceeds it by at most the one write that followed.
    assert!(peak <= LIMIT + 4096, "used_memory reached {peak}, limit {LIMIT}");
    // Between writes the background pass brings it under the limit.
    assert!(eventually(Duration::from_secs(5), || used_memory(&mut con) <= LIMIT), "{}", used_memory(&mut con));
    let evicted: u64 = info_field(&mut con, "stats", "evicted_keys").parse().unwrap();
    let leader_keys = keys(&mut con);
    assert!(evicted as usize >= writes / 2, "only {evicted} evictions for {writes} writes of 3x the limit");
    assert_eq!(leader_keys.len() + evicted as usize, writes + 1, "every key is either held or was evicted");
    assert!(leader_keys.contains("hot"), "LRU evicted the key read after every write");
    // Followers replay the leader's evictions: the same key set, no
    // eviction of their own.
    let mut last = BTreeSet::new();
    for id in [2, 3] {
        let mut f = c.node(id).conn();
        let same = eventually(Duration::from_secs(10), || {
            last = keys(&mut f);
            last == leader_keys
        });
        assert!(same, "follower {id} holds {} keys, the leader {}", last.len(), leader_keys.len());
        assert_eq!(info_field(&mut f, "stats", "evicted_keys"), "0", "follower {id} evicted on its own");
        assert!(used_memory(&mut f) <= LIMIT + 4096);
    }
    let metrics = http_get(c.leader().admin_addr(), "/metrics").unwrap();
    assert_eq!(metric(&metrics, "tandem_evicted_keys_total"), Some(evicted as f64), "{metrics}");
    assert_eq!(metric(&metrics, "tandem_maxmemory_bytes"), Some(LIMIT as f64));
}

/// `volatile-ttl`: past the limit the leader evicts only keys with a TTL,
/// the nearest expiry first, never a key without one; once no key with a
/// TTL is left, a growing write gets the same -OOM as `noeviction`.
#[test]
fn volatile_ttl_evicts_only_expiring_keys_nearest_first_then_answers_oom() {
    const LIMIT: u64 = 64 << 10;
    let dir = tempdir();
    let limit = LIMIT.to_string();
    let server = TestServer::start(dir.path(), &["--maxmemory", &limit, "--maxmemory-policy", "volatile-ttl"]);
    let mut con = server.conn();
    let value = vec![b'v'; 2048];
    for i in 0..8 {
        let () = redis::cmd("SET").arg(format!("keep:{i}")).arg(&value).query(&mut con).unwrap();
    }
    // The farthest expiry of all: a sample always holds a nearer one while
    // later keys with shorter TTLs exist.
    let () = redis::cmd("SET").arg("far").arg(&value).arg("EX").arg(1_000_000).query(&mut con).unwrap();
    let writes = (2 * LIMIT as usize) / value.len();
    for i in 0..writes {
        let () = redis::cmd("SET")
            .arg(format!("vol:{i}"))
            .arg(&value)
            .arg("EX")
            .arg(1000 + i)
            .query(&mut con)
            .expect("volatile-ttl evicts instead of refusing while keys with a TTL exist");
    }
    let held = keys(&mut con);
    let evicted: u64 = info_field(&mut con, "stats", "evicted_keys").parse().unwrap();
    assert!(evicted > 0, "nothing was evicted after writing twice the limit");
    assert!((0..8).all(|i| held.contains(&format!("keep:{i}"))), "a key without a TTL was evicted: {held:?}");
    assert!(held.contains("far"), "the key with the farthest expiry was evicted first: {held:?}");
    assert_eq!(held.len() + evicted as usize, 8 + 1 + writes, "every key is either held or was evicted");
    // Only keys without a TTL from here on: the volatile ones go, then -OOM.
    let mut persistent = 0;
    let err = loop {
        match redis::cmd("SET").arg(format!("more:{persistent}")).arg(&value).query::<()>(&mut con) {
            Ok(()) => persistent += 1,
            Err(e) => break e,
        }
        assert!(persistent < 200, "writes of keys without a TTL never hit the limit");
    };
    assert_eq!(err.code(), Some("OOM"), "{err}");
    let held = keys(&mut con);
    assert!(held.iter().all(|k| !k.starts_with("vol:") && k != "far"), "OOM while keys with a TTL remain: {held:?}");
    assert!((0..8).all(|i| held.contains(&format!("keep:{i}"))), "a key without a TTL was evicted: {held:?}");
    assert_eq!(held.iter().filter(|k| k.starts_with("more:")).count(), persistent);
    server.assert_alive();
}
