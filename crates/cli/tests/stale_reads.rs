//! No stale read from an old leader (issue 10 item 4): a leader that was
//! stopped (SIGSTOP) past the failover timeout, while another node was
//! promoted and overwrote a key, must never answer `GET` with the old
//! value once it runs again, and must stop presenting itself as master.
//!
//! The old leader refuses reads with `TRYAGAIN ... does not hold its lease`
//! until it rejoins as a follower; from then on it serves the new value.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::{info, Cluster, ELECT};
use common::{eventually, Resp, TestServer};

/// How long the old leader is polled after SIGCONT.
const POLL_AFTER_RESUME: Duration = Duration::from_secs(1);

fn signal(server: &TestServer, sig: &str) {
    let ok = Command::new("kill").arg(sig).arg(server.pid().to_string()).status().expect("run kill").success();
    assert!(ok, "kill {sig} {} failed", server.pid());
}

#[test]
fn a_resumed_old_leader_never_serves_an_overwritten_value() {
    let c = Cluster::start(3, None, |_| Vec::new());
    let old = c.wait_leader(None);
    let mut raw = c.node(old).raw();
    assert_eq!(raw.cmd(&["SET", "register", "old"]), Resp::Simple("OK".into()));
    raw.set_read_timeout(Duration::from_secs(30));

    signal(c.node(old), "-STOP");
    let new = {
        let mut found = None;
        let ok = eventually(ELECT, || {
            found = (1..=3u64).filter(|&id| id != old).find(|&id| {
                let i = info(c.node(id));
                i.get("role").map(String::as_str) == Some("master")
                    && i.get("tandem_lease").map(String::as_str) == Some("held")
            });
            found.is_some()
        });
        if !ok {
            signal(c.node(old), "-CONT");
        }
        assert!(ok, "no new leader while node {old} was stopped\n{}", c.stderrs());
        found.expect("found")
    };
    let acked = eventually(Duration::from_secs(5), || {
        c.node(new).raw().cmd(&["SET", "register", "new"]) == Resp::Simple("OK".into())
    });
    signal(c.node(old), "-CONT");
    assert!(acked, "the new leader {new} did not acknowledge the overwrite\n{}", c.stderrs());

    // Poll the old leader at a tight interval: every answer is the new
    // value or a refusal, never the overwritten one.
    let resumed = Instant::now();
    let (mut refusals, mut fresh, mut polls) = (0, 0, 0);
    let mut role_seen = Vec::new();
    while resumed.elapsed() < POLL_AFTER_RESUME {
        polls += 1;
        match raw.cmd(&["GET", "register"]) {
            Resp::Bulk(v) if v == b"new" => fresh += 1,
            Resp::Error(e) if e.starts_with("TRYAGAIN") && e.contains("lease") => refusals += 1,
            other => panic!(
                "the resumed old leader {old} answered GET with {other:?} {:?} after SIGCONT \
                 (overwritten by node {new})\n{}",
                resumed.elapsed(),
                c.stderrs()
            ),
        }
        if let Resp::Array(items) = raw.cmd(&["ROLE"]) {
            if let Some(Resp::Bulk(role)) = items.first() {
                role_seen.push(String::from_utf8_lossy(role).into_owned());
            }
        }
        if polls % 10 == 0 {
            let i = info(c.node(old));
            role_seen.push(i.get("role").cloned().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !role_seen.iter().any(|r| r == "master"),
        "the resumed old leader presented itself as master: {role_seen:?}\n{}",
        c.stderrs()
    );
    // It rejoins and then serves the new value.
    assert!(
        eventually(ELECT, || matches!(raw.cmd(&["GET", "register"]), Resp::Bulk(v) if v == b"new")),
        "the old leader never served the new value\n{}",
        c.stderrs()
    );
    role_seen.dedup();
    eprintln!("after SIGCONT: {polls} polls, {refusals} refused, {fresh} fresh, roles seen in order {role_seen:?}");
}
