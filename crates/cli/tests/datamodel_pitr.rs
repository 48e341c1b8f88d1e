//! Followers and a point-in-time restore agree with the leader after a
//! seeded random mix of every data-model write command: real `tandem
//! server` processes (a leader that archives its log, two followers), the
//! `redis` crate as the client, the real `tandem backup base` and `tandem
//! restore --to-time / --latest`.
//!
//! The mix is the simulator's (`tandem_sim::mix`): strings, bitmaps, keys,
//! sets, hashes, lists, sorted sets over small key pools (types collide,
//! `WRONGTYPE` is part of it), atomic pipelines (`MULTI`/`EXEC`), `EVAL`
//! scripts that call `TIME`, `SRANDMEMBER`, `SPOP` and `math.random`, plus
//! blocking pops (`BLPOP`, `BLMOVE`, `BZPOPMIN`) that a later push serves.
//! `TANDEM_MIX_SEED=n` replays another history.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{eventually, tandem_bin, tempdir, Resp, TestServer};
use redis::{Commands, Connection};
use tandem_backup::time::format_rfc3339;
use tandem_sim::mix::{self, Op};
use tandem_sim::rng::SimRng;

const CATCH_UP: Duration = Duration::from_secs(20);
/// Operations before the base backup, between the base and the restore
/// point T, and after T.
const OPS: [usize; 3] = [300, 1300, 1300];
/// One blocking pop served per this many operations.
const BLOCKING_EVERY: usize = 40;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn tandem_ok(args: &[&str]) -> String {
    let out = Command::new(tandem_bin()).args(args).output().expect("run tandem");
    assert!(
        out.status.success(),
        "tandem {args:?} failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into()
}

type Dump = common::KeyDump;

/// `dump` without the keys that expire at or before `cutoff_ms`: two
/// dumps taken at different moments agree only on keys alive at both.
fn alive_after(d: &Dump, cutoff_ms: u64) -> Dump {
    d.iter()
        .filter(|(_, (_, exp, _))| *exp < 0 || *exp as u64 > cutoff_ms)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the mix did, to show it exercised what it claims to.
#[derive(Debug, Default)]
struct Stats {
    commands: usize,
    transactions: usize,
    scripts: usize,
    blocking_served: usize,
    errors: BTreeMap<String, usize>,
}

fn query(cmd: &redis::Cmd, con: &mut Connection, stats: &mut Stats, what: &dyn std::fmt::Debug) {
    match cmd.query::<redis::Value>(con) {
        Ok(_) => {}
        Err(e) if e.kind() == redis::ErrorKind::IoError => panic!("{what:?}: {e}"),
        Err(e) => {
            // WRONGTYPE, "no such key", overflow, NaN, a script's own
            // error: part of the mix. A syntax error or an unknown command
            // means the mix and the server disagree: fail.
            let text = e.to_string();
            assert!(!text.contains("syntax error") && !text.contains("unknown command"), "{what:?}: {text}");
            let code = e.code().unwrap_or("?").to_string();
            *stats.errors.entry(code).or_default() += 1;
        }
    }
}

fn command(words: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd(&words[0]);
    for w in &words[1..] {
        cmd.arg(w);
    }
    cmd
}

/// A client blocks on an empty key, the mix's connection pushes to it,
/// and the blocked client must be served with what was pushed.
fn blocking_pop_served(leader: &TestServer, con: &mut Connection, i: usize, stats: &mut Stats) {
    let mut blocked = leader.raw();
    blocked.set_read_timeout(Duration::from_secs(10));
    let key = format!("q{}", i % 3);
    let _: () = con.del(&key).unwrap();
    let (block, push): (Vec<String>, Vec<String>) = match i % 3 {
        0 => (
            vec!["BLPOP".into(), key.clone(), "5".into()],
            vec!["RPUSH".into(), key.clone(), format!("job{i}"), "next".into()],
        ),
        1 => (
            vec!["BLMOVE".into(), key.clone(), "qdone".into(), "LEFT".into(), "RIGHT".into(), "5".into()],
            vec!["RPUSH".into(), key.clone(), format!("job{i}"), "next".into()],
        ),
        _ => (
            vec!["BZPOPMIN".into(), key.clone(), "5".into()],
            vec!["ZADD".into(), key.clone(), "1".into(), format!("job{i}"), "2".into(), "next".into()],
        ),
    };
    let refs: Vec<&str> = block.iter().map(String::as_str).collect();
    blocked.send_cmd(&refs).unwrap();
    let mut raw = leader.raw();
    let blocked_now = eventually(
        Duration::from_secs(5),
        || matches!(raw.cmd(&["INFO", "clients"]), Resp::Bulk(b) if String::from_utf8_lossy(&b).contains("blocked_clients:1")),
    );
    assert!(blocked_now, "{block:?} did not block");
    let _: i64 = command(&push).query(con).unwrap();
    let reply = blocked.read().unwrap();
    let served = match &reply {
        Resp::Array(items) => items.iter().any(|r| matches!(r, Resp::Bulk(b) if *b == format!("job{i}").into_bytes())),
        Resp::Bulk(b) => String::from_utf8_lossy(b) == format!("job{i}"),
        _ => false,
    };
    assert!(served, "{block:?} was answered {reply:?} after {push:?}");
    stats.blocking_served += 1;
}

fn run_mix(leader: &TestServer, con: &mut Connection, rng: &mut SimRng, n: usize, stats: &mut Stats) {
    for i in 0..n {
        if i % BLOCKING_EVERY == BLOCKING_EVERY - 1 {
            blocking_pop_served(leader, con, stats.commands + i, stats);
        }
        match mix::random_op(rng, unix_ms()) {
            Op::Command(words) => {
                query(&command(&words), con, stats, &words);
                stats.commands += 1;
            }
            Op::Transaction(commands) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for words in &commands {
                    pipe.add_command(command(words));
                }
                match pipe.query::<redis::Value>(con) {
                    Ok(_) => {}
                    Err(e) if e.kind() == redis::ErrorKind::IoError => panic!("{commands:?}: {e}"),
                    // A command that failed inside EXEC (WRONGTYPE): the
                    // others ran, as in Redis.
                    Err(e) => *stats.errors.entry(format!("in EXEC: {}", e.code().unwrap_or("?"))).or_default() += 1,
                }
                stats.transactions += 1;
            }
            Op::Script { body, keys, argv } => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(body).arg(keys.len());
                for a in keys.iter().chain(&argv) {
                    cmd.arg(a);
                }
                query(&cmd, con, stats, &keys);
                stats.scripts += 1;
            }
        }
    }
}

/// Waits until the leader's archive holds everything it appended.
fn wait_archived(server: &TestServer) {
    let ok = eventually(CATCH_UP, || {
        let st = server.status();
        st["archive"]["archived_lsn"].as_u64() == st["last_lsn"].as_u64()
    });
    assert!(ok, "the archive did not catch up: {}", server.status());
}

/// Restores `repo` with `target` into a fresh directory, starts a node on
/// it and returns the node (and the directory that holds it).
fn restore(repo: &Path, target: &[&str]) -> (tempfile::TempDir, TestServer) {
    let dir = tempdir();
    let data = dir.path().join("restored");
    let mut args = vec!["restore", "--repo", s(repo), "--data-dir", s(&data)];
    args.extend_from_slice(target);
    tandem_ok(&args);
    let server = TestServer::start(&data, &[]);
    (dir, server)
}

fn assert_same(got: &Dump, want: &Dump, what: &str) {
    if got != want {
        let mut diff = Vec::new();
        for k in got.keys().chain(want.keys()).collect::<std::collections::BTreeSet<_>>() {
            if got.get(k) != want.get(k) {
                diff.push(format!("  {k}: got {:?}\n  {k}: want {:?}", got.get(k), want.get(k)));
            }
        }
        panic!("{what} differs from the leader on {} keys:\n{}", diff.len(), diff.join("\n"));
    }
}

#[test]
fn followers_and_a_pitr_restore_agree_with_the_leader_after_a_random_mix_of_every_write_command() {
    let began = Instant::now();
    let seed = std::env::var("TANDEM_MIX_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xd47a_u64);
    let repo_dir = tempdir();
    let repo = repo_dir.path().join("repo");
    let repo_flag = s(&repo).to_string();
    let cluster = Cluster::start(3, Some(1), |id| {
        if id == 1 {
            vec!["--backup-repo".into(), repo_flag.clone(), "--archive-interval-ms".into(), "100".into()]
        } else {
            vec![]
        }
    });
    cluster.wait_streaming(&[2, 3]);
    let leader = cluster.leader();
    let mut con = leader.conn();
    let mut rng = SimRng::new(seed);
    let mut stats = Stats::default();

    run_mix(leader, &mut con, &mut rng, OPS[0], &mut stats);
    tandem_ok(&["backup", "base", "--repo", s(&repo), "--from", &leader.admin_addr().to_string()]);
    run_mix(leader, &mut con, &mut rng, OPS[1], &mut stats);

    // The restore point T: the leader's state then, and the LSN range T
    // falls in (the node's expiry cycle may log deletes meanwhile).
    let lsn_before_t = leader.last_lsn();
    let at_t = leader.dump_keys();
    std::thread::sleep(Duration::from_millis(5));
    let t_ms = unix_ms();
    std::thread::sleep(Duration::from_millis(5));
    let lsn_after_t = leader.last_lsn();

    run_mix(leader, &mut con, &mut rng, OPS[2], &mut stats);
    let last = leader.last_lsn();
    let final_leader = leader.dump_keys();
    println!("seed {seed:#x}: {stats:?}, {} keys at T, {} at the end, last lsn {last}", at_t.len(), final_leader.len());
    assert!(at_t.len() >= 15 && final_leader.len() >= 15, "the mix left too little to compare");
    assert!(stats.transactions > 50 && stats.scripts > 50 && stats.blocking_served > 50, "{stats:?}");
    assert!(stats.errors.get("WRONGTYPE").is_some_and(|&n| n > 20), "types should collide: {stats:?}");

    // (a) Both followers hold exactly the leader's keys, types, values and
    // expiries.
    let mut follower_dumps = Vec::new();
    for id in [2, 3] {
        cluster.node(id).wait_applied(last);
        follower_dumps.push((id, cluster.node(id).dump_keys()));
    }
    let cutoff = unix_ms() + 500;
    for (id, d) in &follower_dumps {
        assert_same(&alive_after(d, cutoff), &alive_after(&final_leader, cutoff), &format!("follower {id}"));
    }

    // (b) A restore to T gives exactly the leader's state at T; --latest
    // gives the final state.
    wait_archived(leader);
    let (_d1, restored) = restore(&repo, &["--to-time", &format_rfc3339(t_ms)]);
    let restored_lsn = restored.last_lsn();
    assert!(
        (lsn_before_t..=lsn_after_t).contains(&restored_lsn),
        "restored to lsn {restored_lsn}, T lies between lsn {lsn_before_t} and {lsn_after_t}"
    );
    let got = restored.dump_keys();
    let cutoff = unix_ms() + 500;
    assert_same(&alive_after(&got, cutoff), &alive_after(&at_t, cutoff), "the restore to T");
    drop(restored);

    let (_d2, latest) = restore(&repo, &["--latest"]);
    assert!(latest.last_lsn() >= last, "--latest restored only to lsn {}", latest.last_lsn());
    let got = latest.dump_keys();
    let cutoff = unix_ms() + 500;
    assert_same(&alive_after(&got, cutoff), &alive_after(&final_leader, cutoff), "the restore --latest");
    println!("done in {:.1?}", began.elapsed());
}
