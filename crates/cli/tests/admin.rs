//! The admin HTTP endpoint of the real binary: `/healthz`, `/status` and
//! `/metrics` report what the node actually did.

mod common;

use std::time::Duration;

use common::{eventually, http_get, metric, tempdir, TestServer};

#[test]
fn healthz_answers_ok() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &[]);
    assert_eq!(server.admin_get("/healthz").trim(), "ok");
    let missing = http_get(server.admin_addr(), "/no-such-page");
    assert!(missing.as_ref().is_err_and(|e| e.contains("404")), "unknown admin path: {missing:?}");
}

#[test]
fn status_reports_keys_fsync_and_lsns() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--fsync", "batch"]);
    let fresh = server.status();
    for field in [
        "node_id",
        "role",
        "epoch",
        "last_lsn",
        "durable_lsn",
        "snapshot_lsn",
        "keys",
        "fsync",
        "uptime_seconds",
        "data_dir_bytes",
    ] {
        assert!(fresh.get(field).is_some(), "/status lacks {field}: {fresh}");
    }
    assert_eq!(fresh["keys"], 0);
    assert_eq!(fresh["role"], "leader");
    assert_eq!(fresh["fsync"], "batch");

    let mut con = server.conn();
    for i in 0..100 {
        let () = redis::cmd("SET").arg(format!("k{i}")).arg(i).query(&mut con).unwrap();
    }
    let _: i64 = redis::cmd("SADD").arg("set").arg(&["a", "b"]).query(&mut con).unwrap();
    let _: i64 = redis::cmd("DEL").arg("k0").query(&mut con).unwrap();

    let status = server.status();
    assert_eq!(status["keys"], 100, "99 strings + 1 set: {status}");
    let last_lsn = status["last_lsn"].as_u64().expect("last_lsn");
    assert!(last_lsn >= 102, "102 acknowledged writes, last_lsn = {last_lsn}");
    assert!(status["data_dir_bytes"].as_u64().unwrap() > 0, "{status}");
    // Every write was acknowledged, so it is durable: nothing is pending.
    let settled = eventually(Duration::from_secs(5), || {
        let s = server.status();
        s["last_lsn"] == s["durable_lsn"]
    });
    assert!(settled, "durable_lsn never caught up with last_lsn: {}", server.status());
    assert_eq!(server.status()["durable_lsn"].as_u64(), Some(last_lsn), "no write happened since");

    let dir2 = tempdir();
    let always = TestServer::start(dir2.path(), &["--fsync", "always"]);
    assert_eq!(always.status()["fsync"], "always");
}

#[test]
fn metrics_count_commands_errors_and_fsyncs() {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--fsync", "batch"]);
    let mut con = server.conn();
    for i in 0..50 {
        let () = redis::cmd("SET").arg(format!("k{i}")).arg(i).query(&mut con).unwrap();
    }
    for i in 0..10 {
        let _: Option<String> = redis::cmd("GET").arg(format!("k{i}")).query(&mut con).unwrap();
    }
    let _: i64 = redis::cmd("SADD").arg("set").arg("m").query(&mut con).unwrap();
    assert!(redis::cmd("GET").arg("set").query::<Option<String>>(&mut con).is_err(), "WRONGTYPE expected");

    let mut text = String::new();
    let counted = eventually(Duration::from_secs(5), || {
        text = server.admin_get("/metrics");
        metric(&text, "tandem_commands_total{command=\"set\"}").is_some_and(|v| v >= 50.0)
            && metric(&text, "tandem_commands_total{command=\"get\"}").is_some_and(|v| v >= 11.0)
    });
    assert!(counted, "tandem_commands_total must count 50 SETs and 11 GETs:\n{text}");
    let fsyncs = metric(&text, "tandem_log_fsyncs_total");
    assert!(
        fsyncs.is_some_and(|v| v > 0.0),
        "tandem_log_fsyncs_total must be > 0 under --fsync batch after writes: {fsyncs:?}\n{text}"
    );
    let wrongtype = metric(&text, "tandem_errors_total{kind=\"WRONGTYPE\"}");
    assert!(wrongtype.is_some_and(|v| v >= 1.0), "tandem_errors_total{{kind=\"WRONGTYPE\"}}: {wrongtype:?}\n{text}");
    assert!(text.contains("# TYPE tandem_commands counter"), "Prometheus TYPE line for tandem_commands");
}
