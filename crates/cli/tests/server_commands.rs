//! The server commands operators rely on, against a real `tandem server`
//! over raw RESP: TIME, CLIENT LIST / KILL / UNBLOCK across connections,
//! MONITOR, SLOWLOG, INFO cpu / commandstats, RESET. Expected shapes and
//! texts are Redis 7's.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{tempdir, Resp, TestServer};

fn ok() -> Resp {
    Resp::Simple("OK".into())
}

fn int_of(r: Resp) -> i64 {
    match r {
        Resp::Integer(n) => n,
        other => panic!("not an integer: {other:?}"),
    }
}

#[test]
fn time_answers_the_nodes_clock_in_seconds_and_microseconds() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut r = server.raw();
    let Resp::Array(parts) = r.cmd(&["TIME"]) else { panic!("TIME is an array") };
    assert_eq!(parts.len(), 2);
    let secs: u64 = parts[0].text().parse().unwrap();
    let micros: u64 = parts[1].text().parse().unwrap();
    assert!(micros < 1_000_000);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(secs.abs_diff(now) <= 2, "TIME {secs} vs wall clock {now}");
}

#[test]
fn client_list_shows_every_connection_and_client_kill_closes_the_chosen_one() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut admin = server.raw();
    let mut victim = server.raw();
    assert_eq!(victim.cmd(&["CLIENT", "SETNAME", "victim"]), ok());
    let victim_id = int_of(victim.cmd(&["CLIENT", "ID"]));
    let list = admin.cmd(&["CLIENT", "LIST"]).text();
    let line = list.lines().find(|l| l.contains("name=victim ")).unwrap_or_else(|| panic!("victim not listed: {list}"));
    assert!(line.starts_with(&format!("id={victim_id} ")), "{line}");
    assert!(line.contains("cmd=client"), "{line}");
    assert!(list.lines().count() >= 2, "{list}");
    let only = admin.cmd(&["CLIENT", "LIST", "ID", &victim_id.to_string()]).text();
    assert_eq!(only.lines().count(), 1, "{only}");

    // New form: by id; the caller itself is skipped by default.
    assert_eq!(int_of(admin.cmd(&["CLIENT", "KILL", "ID", &victim_id.to_string()])), 1);
    let (_, closed) = victim.read_until_closed(Duration::from_secs(5));
    assert!(closed, "CLIENT KILL must close the victim's connection");
    assert_eq!(int_of(admin.cmd(&["CLIENT", "KILL", "ID", &victim_id.to_string()])), 0);

    // Old form: by address, with Redis's error for an unknown one.
    let mut second = server.raw();
    let addr = second.cmd(&["CLIENT", "INFO"]).text();
    let addr = addr.split_whitespace().find_map(|kv| kv.strip_prefix("addr=")).unwrap().to_string();
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &addr]), ok());
    assert!(second.read_until_closed(Duration::from_secs(5)).1);
    assert_eq!(admin.cmd(&["CLIENT", "KILL", "127.0.0.1:1"]), Resp::Error("ERR No such client".into()));
    // SKIPME no: the caller may close itself.
    assert_eq!(int_of(admin.cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])), 0);
    server.assert_alive();
}

#[test]
fn client_unblock_ends_a_blocked_pop_with_a_timeout_or_an_error() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut admin = server.raw();
    let mut blocked = server.raw();
    let id = int_of(blocked.cmd(&["CLIENT", "ID"])).to_string();
    assert_eq!(int_of(admin.cmd(&["CLIENT", "UNBLOCK", &id])), 0, "not blocked yet");
    blocked.send_cmd(&["BLPOP", "nothing", "0"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !admin.cmd(&["CLIENT", "LIST", "ID", &id]).text().contains("flags=b") {
        assert!(std::time::Instant::now() < deadline, "the client never showed as blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(int_of(admin.cmd(&["CLIENT", "UNBLOCK", &id])), 1);
    assert_eq!(blocked.read().unwrap(), Resp::Nil);
    blocked.send_cmd(&["BLPOP", "nothing", "0"]).unwrap();
    while int_of(admin.cmd(&["CLIENT", "UNBLOCK", &id, "ERROR"])) == 0 {
        assert!(std::time::Instant::now() < deadline, "the client never blocked again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(blocked.read().unwrap(), Resp::Error("UNBLOCKED client unblocked via CLIENT UNBLOCK".into()));
    assert_eq!(blocked.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn monitor_streams_other_clients_commands_and_hides_passwords() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut mon = server.raw();
    assert_eq!(mon.cmd(&["MONITOR"]), ok());
    let mut c = server.raw();
    assert_eq!(c.cmd(&["SET", "k", "va\"l"]), ok());
    let _ = c.cmd(&["AUTH", "secret-password"]);
    let first = mon.read_line().unwrap();
    assert!(first.starts_with('+') && first.ends_with(r#"] "SET" "k" "va\"l""#), "{first}");
    let second = mon.read_line().unwrap();
    assert!(second.contains(r#""AUTH" "(redacted)""#) && !second.contains("secret"), "{second}");
    // RESET leaves monitor mode; the connection works as before.
    assert_eq!(mon.cmd(&["RESET"]), Resp::Simple("RESET".into()));
    assert_eq!(c.cmd(&["SET", "k2", "v"]), ok());
    assert_eq!(mon.cmd(&["PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn slowlog_records_commands_over_the_threshold_and_info_counts_every_command() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut r = server.raw();
    assert_eq!(r.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]), ok());
    assert_eq!(r.cmd(&["SLOWLOG", "RESET"]), ok());
    assert_eq!(r.cmd(&["SET", "slow", "x"]), ok());
    let Resp::Array(entries) = r.cmd(&["SLOWLOG", "GET", "1"]) else { panic!("SLOWLOG GET is an array") };
    let Resp::Array(entry) = &entries[0] else { panic!("an entry is an array") };
    assert_eq!(entry.len(), 6);
    assert_eq!(
        entry[3],
        Resp::Array(vec![Resp::Bulk(b"SET".to_vec()), Resp::Bulk(b"slow".to_vec()), Resp::Bulk(b"x".to_vec())])
    );
    assert!(int_of(r.cmd(&["SLOWLOG", "LEN"])) >= 1);
    assert_eq!(r.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]), ok());
    assert_eq!(r.cmd(&["SLOWLOG", "RESET"]), ok());
    r.cmd(&["GET", "slow"]);
    assert_eq!(int_of(r.cmd(&["SLOWLOG", "LEN"])), 0);
    assert!(matches!(r.cmd(&["CONFIG", "SET", "slowlog-max-len", "-5"]), Resp::Error(_)));
    let Resp::Array(cfg) = r.cmd(&["CONFIG", "GET", "slowlog-*"]) else { panic!() };
    assert_eq!(cfg.len(), 4);

    let stats = r.cmd(&["INFO", "commandstats"]).text();
    let set = stats.lines().find(|l| l.starts_with("cmdstat_set:")).unwrap_or_else(|| panic!("{stats}"));
    assert!(set.contains("calls=1,") && set.contains("usec_per_call="), "{set}");
    let cpu = r.cmd(&["INFO", "cpu"]).text();
    assert!(cpu.contains("used_cpu_user:") && cpu.contains("used_cpu_sys:"), "{cpu}");
    assert!(!r.cmd(&["INFO"]).text().contains("cmdstat_"), "plain INFO leaves commandstats out, as Redis");
    assert_eq!(r.cmd(&["CONFIG", "RESETSTAT"]), ok());
    assert!(!r.cmd(&["INFO", "commandstats"]).text().contains("cmdstat_set:"));
}

fn wait_blocked(r: &mut common::Raw, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = r.cmd(&["INFO", "clients"]).text();
        if info.contains(&format!("blocked_clients:{n}\r")) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never {n} blocked clients: {info}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn blocked_clients_are_served_in_the_order_they_blocked_and_a_wrong_type_keeps_them_waiting() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    let mut r = server.raw();
    let mut waiters: Vec<common::Raw> = (0..4).map(|_| server.raw()).collect();
    for (i, w) in waiters.iter_mut().enumerate() {
        w.send_cmd(&["BLPOP", "q", "0"]).unwrap();
        wait_blocked(&mut r, i + 1);
    }
    // The key becomes a string, then a list again: nobody may wake with an
    // error in between.
    assert_eq!(r.cmd(&["SET", "q", "not-a-list"]), ok());
    assert_eq!(r.cmd(&["DEL", "q"]), Resp::Integer(1));
    assert_eq!(int_of(r.cmd(&["RPUSH", "q", "a", "b", "c"])), 3);
    for (w, want) in waiters.iter_mut().zip(["a", "b", "c"]) {
        let got = w.read().unwrap();
        assert_eq!(got, Resp::Array(vec![Resp::Bulk(b"q".to_vec()), Resp::Bulk(want.as_bytes().to_vec())]));
    }
    wait_blocked(&mut r, 1);
    assert_eq!(int_of(r.cmd(&["RPUSH", "q", "d"])), 1);
    assert_eq!(waiters[3].read().unwrap(), Resp::Array(vec![Resp::Bulk(b"q".to_vec()), Resp::Bulk(b"d".to_vec())]));
}
