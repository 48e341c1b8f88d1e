//! Runs the bench against a tiny RESP server inside the test, so the
//! pipelining and the accounting are checked without a real server. The
//! fake answers SET `+OK` (or `-READONLY ..`), GET `$-1`, INCR `:1`, PING
//! `+PONG`, WAIT n `:n` (or fewer), AUTH `+OK`/`-WRONGPASS`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tandem_bench::{run, BenchError, BenchOptions, Phase};
use tandem_core::resp::{encode, parse_command, Frame, Limits, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default, Clone)]
struct Behaviour {
    readonly: bool,
    password: Option<String>,
    /// WAIT answers this many replicas at most.
    replicas: Option<i64>,
}

/// What the fake server saw.
#[derive(Default)]
struct Seen {
    commands: HashMap<String, u64>,
    /// Most commands that arrived in one read: pipelining depth at work.
    batch_max: usize,
    set_keys: HashSet<Vec<u8>>,
    connections: usize,
    /// Per connection, the command names in order (first few only).
    first_commands: Vec<Vec<String>>,
}

struct FakeServer {
    addr: String,
    seen: Arc<Mutex<Seen>>,
}

async fn start(behaviour: Behaviour) -> FakeServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen_by_server = seen.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let index = {
                let mut seen = seen_by_server.lock().unwrap();
                seen.connections += 1;
                seen.first_commands.push(Vec::new());
                seen.connections - 1
            };
            tokio::spawn(serve(socket, index, behaviour.clone(), seen_by_server.clone()));
        }
    });
    FakeServer { addr, seen }
}

async fn serve(mut socket: TcpStream, index: usize, behaviour: Behaviour, seen: Arc<Mutex<Seen>>) {
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    loop {
        // Room for a whole pipeline per read, so batches show pipelining.
        input.reserve(64 * 1024);
        match socket.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut batch = 0;
        while let Some(args) = parse_command(&mut input, &Limits::default()).unwrap() {
            batch += 1;
            let name = String::from_utf8_lossy(&args[0]).to_uppercase();
            let reply = answer(&name, &args, &behaviour);
            let mut seen = seen.lock().unwrap();
            *seen.commands.entry(name.clone()).or_default() += 1;
            if name == "SET" {
                seen.set_keys.insert(args[1].to_vec());
            }
            if seen.first_commands[index].len() < 4 {
                seen.first_commands[index].push(name);
            }
            encode(&reply, Protocol::Resp2, &mut output);
        }
        {
            let mut seen = seen.lock().unwrap();
            seen.batch_max = seen.batch_max.max(batch);
        }
        if socket.write_all_buf(&mut output).await.is_err() {
            return;
        }
    }
}

fn answer(name: &str, args: &[bytes::Bytes], behaviour: &Behaviour) -> Frame {
    match name {
        "SET" if behaviour.readonly => Frame::error("READONLY You can't write against a read only replica."),
        "SET" => Frame::ok(),
        "GET" => Frame::Null,
        "INCR" => Frame::Integer(1),
        "PING" => Frame::simple("PONG"),
        "WAIT" => {
            let asked: i64 = std::str::from_utf8(&args[1]).unwrap().parse().unwrap();
            Frame::Integer(behaviour.replicas.map_or(asked, |r| r.min(asked)))
        }
        "AUTH" => match &behaviour.password {
            Some(p) if p.as_bytes() == &args[args.len() - 1][..] => Frame::ok(),
            _ => Frame::error("WRONGPASS invalid username-password pair or user is disabled."),
        },
        _ => Frame::error("ERR unknown command"),
    }
}

fn options(server: &FakeServer) -> BenchOptions {
    BenchOptions {
        addr: server.addr.clone(),
        clients: 4,
        pipeline: 8,
        requests: 2_000,
        keyspace: 1_000,
        ..BenchOptions::default()
    }
}

#[tokio::test]
async fn every_request_is_answered_and_counted_once() {
    let server = start(Behaviour::default()).await;
    let opts = BenchOptions { mix: "set:1,get:1,incr:1,ping:1".into(), ..options(&server) };
    let report = run(opts, |_| {}).await.unwrap();
    assert_eq!(report.ops, 2_000);
    assert_eq!(report.errors, 0);
    assert_eq!(report.commands.iter().map(|c| c.ops).sum::<u64>(), 2_000);
    for command in &report.commands {
        assert!(command.ops > 300, "{} got {} of 2000", command.name, command.ops);
    }
    let seen = server.seen.lock().unwrap();
    let served: u64 = seen.commands.values().sum();
    assert_eq!(served, 2_000, "server saw {:?}", seen.commands);
    assert_eq!(seen.connections, 4);
    assert!(report.latency.p50_us > 0.0);
    assert!(report.latency.p50_us <= report.latency.p99_us);
    assert!(report.latency.p99_us <= report.latency.max_us);
}

#[tokio::test]
async fn pipeline_keeps_that_many_requests_in_flight_and_no_more() {
    let server = start(Behaviour::default()).await;
    run(options(&server), |_| {}).await.unwrap();
    let batch_max = server.seen.lock().unwrap().batch_max;
    assert!(batch_max > 1, "requests were not pipelined");
    assert!(batch_max <= 8, "{batch_max} requests in flight with pipeline 8");

    let server = start(Behaviour::default()).await;
    let opts = BenchOptions { pipeline: 1, requests: 200, ..options(&server) };
    run(opts, |_| {}).await.unwrap();
    assert_eq!(server.seen.lock().unwrap().batch_max, 1);
}

#[tokio::test]
async fn error_replies_are_counted_by_their_first_word() {
    let server = start(Behaviour { readonly: true, ..Behaviour::default() }).await;
    let opts = BenchOptions { mix: "set:1,get:1".into(), ..options(&server) };
    let report = run(opts, |_| {}).await.unwrap();
    let set = &report.commands[0];
    assert_eq!(report.ops, 2_000);
    assert_eq!(report.errors, set.ops);
    assert_eq!(set.errors, set.ops);
    assert_eq!(report.commands[1].errors, 0);
    assert_eq!(report.errors_by_kind.get("READONLY"), Some(&set.ops));
    assert_eq!(report.errors_by_kind.len(), 1);
    assert!(report.render_text().contains("errors: READONLY"));
}

#[tokio::test]
async fn set_wait_is_one_operation_of_two_commands() {
    let server = start(Behaviour { replicas: Some(1), ..Behaviour::default() }).await;
    let opts = BenchOptions {
        mix: "set+wait:1:1,set+wait:2:1".into(),
        requests: 400,
        wait_timeout_ms: 10,
        ..options(&server)
    };
    let report = run(opts, |_| {}).await.unwrap();
    assert_eq!(report.ops, 400);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.commands["SET"], 400);
    assert_eq!(seen.commands["WAIT"], 400);
    assert!(seen.batch_max <= 16, "pipeline 8 of 2 commands each");
    // The fake reaches only one replica: every set+wait:2 falls short.
    assert_eq!(report.commands[0].errors, 0);
    assert_eq!(report.commands[1].errors, report.commands[1].ops);
    assert_eq!(report.errors_by_kind.get("WAIT_SHORT"), Some(&report.commands[1].ops));
}

#[tokio::test]
async fn preload_sets_every_key_once_before_measuring() {
    let server = start(Behaviour::default()).await;
    let opts = BenchOptions { mix: "get".into(), preload: true, keyspace: 500, requests: 300, ..options(&server) };
    let report = run(opts, |_| {}).await.unwrap();
    assert_eq!(report.preloaded_keys, 500);
    assert_eq!(report.ops, 300);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.commands["SET"], 500);
    assert_eq!(seen.set_keys.len(), 500, "every key exactly once");
    assert!(seen.set_keys.contains(&b"key:000000000000"[..]));
    assert!(seen.set_keys.contains(&b"key:000000000499"[..]));
    assert_eq!(seen.commands["GET"], 300);
}

#[tokio::test]
async fn auth_is_sent_first_on_every_connection() {
    let server = start(Behaviour { password: Some("sesame".into()), ..Behaviour::default() }).await;
    let opts = BenchOptions { password: Some("sesame".into()), requests: 100, ..options(&server) };
    run(opts, |_| {}).await.unwrap();
    {
        let seen = server.seen.lock().unwrap();
        let first = |c: &Vec<String>| c.first().map(String::as_str) == Some("AUTH");
        assert!(seen.first_commands.iter().all(first), "{:?}", seen.first_commands);
    }

    let opts = BenchOptions { password: Some("wrong".into()), ..options(&server) };
    let err = run(opts, |_| {}).await.unwrap_err();
    assert!(matches!(err, BenchError::Auth { .. }), "{err}");
    assert!(err.to_string().contains("WRONGPASS"), "{err}");
}

#[tokio::test]
async fn duration_mode_runs_for_the_duration_and_reports_progress() {
    let server = start(Behaviour::default()).await;
    let opts = BenchOptions {
        mix: "ping".into(),
        duration: Some(Duration::from_millis(1_300)),
        warmup: Duration::from_millis(200),
        ..options(&server)
    };
    let mut reports = Vec::new();
    let report = run(opts, |p| reports.push(p.clone())).await.unwrap();
    assert!(report.ops > 0);
    assert!(report.elapsed >= Duration::from_millis(1_300), "{:?}", report.elapsed);
    assert!(report.elapsed < Duration::from_secs(5), "{:?}", report.elapsed);
    let measured: Vec<_> = reports.iter().filter(|p| p.phase == Phase::Measure).collect();
    assert!(!measured.is_empty(), "no progress while measuring: {reports:?}");
    assert!(measured[0].ops > 0 && measured[0].ops_per_sec > 0.0);
    // Warmup operations are sent but not measured.
    let served: u64 = server.seen.lock().unwrap().commands.values().sum();
    assert!(served > report.ops, "served {served}, measured {}", report.ops);
}

#[tokio::test]
async fn connection_refused_names_the_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let opts = BenchOptions { addr: addr.clone(), ..BenchOptions::default() };
    let err = run(opts, |_| {}).await.unwrap_err();
    assert!(matches!(err, BenchError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
}

#[tokio::test]
async fn invalid_options_are_rejected_before_connecting() {
    for opts in [
        BenchOptions { clients: 0, ..BenchOptions::default() },
        BenchOptions { pipeline: 0, ..BenchOptions::default() },
        BenchOptions { keyspace: 0, ..BenchOptions::default() },
        BenchOptions { mix: "flushall".into(), ..BenchOptions::default() },
        BenchOptions { user: Some("u".into()), ..BenchOptions::default() },
    ] {
        let err = run(opts, |_| {}).await.unwrap_err();
        assert!(matches!(err, BenchError::InvalidOption(_)), "{err}");
    }
}

#[tokio::test]
async fn report_renders_as_json_and_text() {
    let server = start(Behaviour::default()).await;
    let opts = BenchOptions { mix: "set:50,get:50".into(), requests: 500, ..options(&server) };
    let report = run(opts, |_| {}).await.unwrap();
    let json = report.to_json();
    assert_eq!(json["ops"], 500);
    assert_eq!(json["commands"][1]["name"], "get");
    assert!(json["latency_us"]["p99.9"].as_f64().unwrap() > 0.0);
    let text = report.render_text();
    assert!(text.contains("500 ops in"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("get ")), "{text}");
}

/// Against a real server: `TANDEM_BENCH_ADDR=127.0.0.1:6379 cargo test -p
/// tandem-bench real_server -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "needs a server at $TANDEM_BENCH_ADDR"]
async fn real_server_from_env() {
    let addr = std::env::var("TANDEM_BENCH_ADDR").expect("set TANDEM_BENCH_ADDR");
    for mix in ["set", "get", "incr", "ping", "set:50,get:50", "set+wait:0"] {
        let opts = BenchOptions {
            addr: addr.clone(),
            mix: mix.into(),
            pipeline: 16,
            preload: mix == "get",
            ..BenchOptions::default()
        };
        let report = run(opts, |p| eprintln!("{p:?}")).await.unwrap();
        eprintln!("{}", report.render_text());
        assert_eq!(report.ops, 100_000);
        assert_eq!(report.errors, 0, "{:?}", report.errors_by_kind);
    }
}
