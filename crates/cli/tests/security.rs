//! Who may talk to a node: the peer handshake (cluster secret), the admin
//! token, the password file. Real `tandem server` processes; forged peers
//! are played by the test itself (raw sockets and the node's own handshake
//! code with a wrong or right secret).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::{info, slave, Cluster, CONNECT};
use common::{admin_request, peer_connect, peer_exchange, tempdir, Resp, TestServer};
use tandem_core::repl::PeerMsg;

const SECRET: &str = "the-cluster-secret";

/// Peak resident memory a node may reach while four connections pour junk
/// at its peer port (it reads a fixed-size handshake and closes each one).
const PEER_JUNK_RSS_BYTES_MAX: u64 = 96 << 20;
/// Virtual memory a node may add while authenticated peers send length
/// headers of maximum-size frames and nothing else (no reservation up front).
const PEER_HEADERS_VM_BYTES_MAX: u64 = 1 << 30;

fn secret_file(dir: &std::path::Path, secret: &str) -> String {
    let path = dir.join("secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// A static cluster (node 1 leads) whose nodes share SECRET from a file.
fn secret_cluster(n: usize) -> (Cluster, tempfile::TempDir) {
    let dir = tempdir();
    let file = secret_file(dir.path(), SECRET);
    let c = Cluster::start(n, Some(1), |_| vec!["--cluster-secret-file".into(), file.clone()]);
    (c, dir)
}

fn subscribe(node_id: u64) -> PeerMsg {
    PeerMsg::Subscribe { node_id, epoch: 0, last_lsn: 0, client_addr: "forged:1".into(), history: vec![] }
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn peer_without_the_cluster_secret_is_refused_before_any_message_is_processed() {
    let (c, _dir) = secret_cluster(2);
    c.wait_streaming(&[2]);
    let mut l = c.leader().raw();
    assert_eq!(l.cmd(&["SET", "secret-key", "secret-value"]), Resp::Simple("OK".into()));

    // 1. No handshake at all: a raw Subscribe frame (as member 2). The node
    // reads the fixed-size handshake, finds no magic, and closes: not one
    // frame comes back, least of all the log.
    let mut raw = TcpStream::connect(("127.0.0.1", c.peer_port(1))).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    tandem_node::repl::wire::encode_frame(&subscribe(2), &mut out);
    out.resize(out.len().max(200), 0);
    raw.write_all(&out).unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty(), "the node answered a peer without a handshake: {got:?}");

    // 2. The handshake with a wrong secret: refused on both sides.
    let err = peer_connect(c.peer_port(1), 2, 1, Some("not-the-secret")).unwrap_err();
    assert!(err.contains("did not prove it holds the cluster secret"), "{err}");
    // The forged peer never subscribed: node 2 is still the only follower,
    // online, and the leader logged both refusals.
    assert!(c.leader().wait_for_stderr("refused a peer connection", CONNECT), "{}", c.stderrs());
    let s = slave(&info(c.leader()), 2).expect("node 2 still listed");
    assert_eq!(s["state"], "online", "{s:?}");
    assert!(slave(&info(c.leader()), 3).is_none());
}

/// A recording of a successful handshake (what the dialer sent) replayed on
/// a new connection proves nothing: the node's nonce is new each time.
#[test]
fn replayed_peer_handshake_is_refused() {
    let (c, _dir) = secret_cluster(2);
    c.wait_streaming(&[2]);
    let port = c.peer_port(1);
    // Record a real handshake through a relay in this process.
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let recorder = std::thread::spawn(move || {
        let (mut from_dialer, _) = relay.accept().unwrap();
        let mut to_node = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut hello = [0u8; 49];
        from_dialer.read_exact(&mut hello).unwrap();
        to_node.write_all(&hello).unwrap();
        let mut challenge = [0u8; 81];
        to_node.read_exact(&mut challenge).unwrap();
        from_dialer.write_all(&challenge).unwrap();
        let mut proof = [0u8; 32];
        from_dialer.read_exact(&mut proof).unwrap();
        to_node.write_all(&proof).unwrap();
        let mut verdict = [0u8; 1];
        to_node.read_exact(&mut verdict).unwrap();
        from_dialer.write_all(&verdict).unwrap();
        (hello, proof, verdict[0])
    });
    peer_connect(relay_port, 3, 1, Some(SECRET)).expect("the relayed handshake succeeds");
    let (hello, proof, verdict) = recorder.join().unwrap();
    assert_eq!(verdict, 1, "the recorded handshake was accepted");

    // Replay it byte for byte on a new connection.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello).unwrap();
    let mut challenge = [0u8; 81];
    s.read_exact(&mut challenge).unwrap();
    s.write_all(&proof).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert_eq!(rest, vec![0], "a replayed proof must get the refusal byte and a closed connection");
    assert!(c.leader().wait_for_stderr("node 3 did not prove it holds the cluster secret", CONNECT));
}

/// With the secret, a peer is who it authenticated as: it cannot subscribe
/// or open a control connection for another id, and a non-member cannot
/// subscribe at all.
#[test]
fn authenticated_peer_cannot_act_as_another_member() {
    let (c, _dir) = secret_cluster(3);
    c.wait_streaming(&[2, 3]);
    let port = c.peer_port(1);
    // Authenticated as 9 (no member), subscribing as member 2.
    let mut s = peer_connect(port, 9, 1, Some(SECRET)).unwrap();
    match peer_exchange(&mut s, &[subscribe(2)]) {
        Some(PeerMsg::Refuse { reason }) => assert!(reason.contains("cannot speak for node 2"), "{reason}"),
        other => panic!("a Subscribe for another id was not refused: {other:?}"),
    }
    // Authenticated as 9, subscribing as itself: not a member.
    let mut s = peer_connect(port, 9, 1, Some(SECRET)).unwrap();
    match peer_exchange(&mut s, &[subscribe(9)]) {
        Some(PeerMsg::Refuse { reason }) => assert!(reason.contains("not a member"), "{reason}"),
        other => panic!("a non-member's Subscribe was not refused: {other:?}"),
    }
    // Authenticated as 2, opening a control connection as 3.
    let mut s = peer_connect(port, 2, 1, Some(SECRET)).unwrap();
    match peer_exchange(&mut s, &[PeerMsg::ControlHello { node_id: 3 }]) {
        Some(PeerMsg::Refuse { reason }) => assert!(reason.contains("cannot speak for node 3"), "{reason}"),
        other => panic!("a ControlHello for another id was not refused: {other:?}"),
    }
    // The real followers were never displaced.
    for id in [2, 3] {
        let s = slave(&info(c.leader()), id).expect("still listed");
        assert_eq!(s["state"], "online", "{s:?}");
    }
}

/// Junk on the peer port costs no memory: four connections each pouring
/// 256 MiB are read only as far as the fixed-size handshake. Authenticated
/// length headers of maximum-size frames reserve nothing up front.
#[test]
fn peer_port_junk_keeps_memory_bounded() {
    let (c, _dir) = secret_cluster(1);
    let pid = c.leader().pid();
    let port = c.peer_port(1);
    let junk: Vec<std::thread::JoinHandle<u64>> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut sent = 0u64;
                let chunk = vec![0x5au8; 1 << 20];
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return 0 };
                while sent < 256 << 20 {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                    sent += chunk.len() as u64;
                }
                sent
            })
        })
        .collect();
    for j in junk {
        j.join().unwrap();
    }
    let hwm = proc_status_kb(pid, "VmHWM:") * 1024;
    assert!(hwm < PEER_JUNK_RSS_BYTES_MAX, "peak RSS {hwm} bytes exceeds PEER_JUNK_RSS_BYTES_MAX");

    let vm_before = proc_status_kb(pid, "VmSize:") * 1024;
    let header = (tandem_core::repl::msg::PEER_FRAME_BYTES_MAX as u32).to_le_bytes();
    let held: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = peer_connect(port, 1, 1, Some(SECRET)).expect("handshake");
            s.write_all(&header).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let vm_after = proc_status_kb(pid, "VmSize:") * 1024;
    assert!(
        vm_after.saturating_sub(vm_before) < PEER_HEADERS_VM_BYTES_MAX,
        "50 length headers grew virtual memory from {vm_before} to {vm_after} bytes"
    );
    drop(held);
    assert!(c.leader().answers_ping());
}

#[test]
fn members_without_a_cluster_secret_warn_loudly() {
    let c = Cluster::start(1, Some(1), |_| vec![]);
    assert!(c.leader().stderr().contains("NO CLUSTER SECRET"), "{}", c.leader().stderr());
}

#[test]
fn admin_routes_need_the_token_except_healthz() {
    let dir = tempdir();
    let token = "admin-token-for-tests";
    let file = dir.path().join("admin-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let data = tempdir();
    let node = TestServer::start(data.path(), &["--admin-token-file", file.to_str().unwrap()]);
    let a = node.admin_addr();
    let mut l = node.raw();
    assert_eq!(l.cmd(&["SET", "k", "v"]), Resp::Simple("OK".into()));

    assert_eq!(admin_request(a, "GET", "/healthz", "", None).0, 200);
    for (method, path) in [
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/events"),
        ("GET", "/cluster"),
        ("GET", "/keyspaces"),
        ("GET", "/backup/log?from=1"),
        ("GET", "/backup/file/x?offset=0&len=1"),
        ("POST", "/backup/base"),
        ("POST", "/switchover?to=2"),
        ("POST", "/cluster/members"),
        ("DELETE", "/cluster/members/2"),
    ] {
        let (code, body) = admin_request(a, method, path, "", None);
        assert_eq!(code, 401, "{method} {path} without the token answered {code}: {body}");
        let (code, _) = admin_request(a, method, path, "", Some("wrong-token"));
        assert_eq!(code, 401, "{method} {path} with a wrong token answered {code}");
    }
    let (code, body) = admin_request(a, "GET", "/status", "", Some(token));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"node_id\""), "{body}");
    let (code, body) = admin_request(a, "GET", "/backup/log?from=1", "", Some(token));
    assert_eq!(code, 200, "{body}");
    // /faults does not exist without --fault-injection, token or not.
    assert_eq!(admin_request(a, "POST", "/faults", "{}", Some(token)).0, 404);

    // The CLI sends the token from TANDEM_ADMIN_TOKEN(_FILE).
    let cli = |env: Option<(&str, &str)>| {
        let mut cmd = std::process::Command::new(common::tandem_bin());
        cmd.args(["status", "--admin-addr", &a.to_string()])
            .env_remove("TANDEM_ADMIN_TOKEN")
            .env_remove("TANDEM_ADMIN_TOKEN_FILE");
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = cli(None);
    assert!(!out.status.success(), "tandem status without the token succeeded");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(cli(Some(("TANDEM_ADMIN_TOKEN", token))).status.success());
    assert!(cli(Some(("TANDEM_ADMIN_TOKEN_FILE", file.to_str().unwrap()))).status.success());

    // The backup CLI too.
    let repo = tempdir();
    let backup = |with_token: bool| {
        let mut cmd = std::process::Command::new(common::tandem_bin());
        cmd.args(["backup", "base", "--repo", repo.path().to_str().unwrap(), "--from", &a.to_string()])
            .env_remove("TANDEM_ADMIN_TOKEN_FILE");
        if with_token {
            cmd.env("TANDEM_ADMIN_TOKEN", token);
        } else {
            cmd.env_remove("TANDEM_ADMIN_TOKEN");
        }
        cmd.output().unwrap()
    };
    assert!(!backup(false).status.success(), "a base backup without the token succeeded");
    let out = backup(true);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn non_loopback_admin_without_a_token_is_refused_at_start() {
    let data = tempdir();
    let f = match TestServer::try_start_bare(
        data.path(),
        &["--client-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0", "--admin-addr", "0.0.0.0:0"],
    ) {
        Ok(_) => panic!("a node with a non-loopback admin port and no token started"),
        Err(f) => f,
    };
    assert!(f.stderr.contains("not a loopback address") && f.stderr.contains("admin token"), "{}", f.stderr);
    // With a token it starts.
    let data = tempdir();
    TestServer::try_start_bare(
        data.path(),
        &[
            "--client-addr",
            "127.0.0.1:0",
            "--peer-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "0.0.0.0:0",
            "--admin-token",
            "t",
        ],
    )
    .map_err(|f| f.stderr)
    .expect("starts with a token");
}

#[test]
fn fault_injection_input_is_bounded() {
    let data = tempdir();
    let node = TestServer::start(data.path(), &[common::FAULT_INJECTION]);
    let a = node.admin_addr();
    let (code, body) = admin_request(a, "POST", "/faults", "{\"cut\":[2],\"delay_ms\":5}", None);
    assert_eq!(code, 200, "{body}");
    let many: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
    let (code, body) = admin_request(a, "POST", "/faults", &format!("{{\"cut\":[{}]}}", many.join(",")), None);
    assert!(code == 400 || code == 413, "a 1000-peer fault spec answered {code}: {body}");
    let (code, body) = admin_request(a, "POST", "/faults", "{\"delay_ms\":99999999}", None);
    assert_eq!(code, 400, "{body}");
    let (code, body) = admin_request(a, "GET", "/faults", "", None);
    assert_eq!(code, 200);
    assert!(body.contains("\"cut\":[2]"), "the refused specs changed nothing: {body}");
}

#[test]
fn requirepass_file_keeps_the_password_out_of_ps() {
    let dir = tempdir();
    let pass = "pass-from-a-file";
    let file = dir.path().join("pass");
    std::fs::write(&file, format!("{pass}\n")).unwrap();
    let data = tempdir();
    let node = TestServer::start(data.path(), &["--requirepass-file", file.to_str().unwrap()]);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", node.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(pass), "the password is on the command line");
    let mut c = node.raw();
    match c.cmd(&["GET", "k"]) {
        Resp::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
        other => panic!("an unauthenticated GET answered {other:?}"),
    }
    assert_eq!(c.cmd(&["AUTH", pass]), Resp::Simple("OK".into()));
    assert_eq!(c.cmd(&["GET", "k"]), Resp::Nil);
}

#[test]
fn tandem_up_generates_a_private_cluster_secret() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempdir();
    let data = dir.path().join("up");
    let base = common::free_ports(1)[0].min(65000 - 30);
    let mut child = std::process::Command::new(common::tandem_bin())
        .args(["up", "--nodes", "1", "--base-port", &base.to_string(), "--data-dir", data.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let path = data.join("cluster-secret");
    let ok = common::eventually(Duration::from_secs(20), || path.exists());
    // SAFETY: kill(2) on the child we spawned.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = child.wait();
    assert!(ok, "tandem up wrote no cluster secret");
    let secret = std::fs::read_to_string(&path).unwrap();
    assert_eq!(secret.trim().len(), 64, "{secret:?}");
    assert!(secret.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}
