//! TLS on the client port (issue 15 item 3, part): with `--tls-cert` and
//! `--tls-key`, `redis-cli --tls --cacert` works and a plain-text client
//! gets no answer (its bytes fail the handshake; the connection is
//! closed). Certificates are generated at test time with rcgen.

mod common;

use std::time::Duration;

use common::{redis_cli_output, tempdir, Raw, TestServer};

/// A CA and a node certificate for 127.0.0.1 / localhost signed by it
/// (usable as a server and as a client certificate), written as PEM files:
/// (ca, cert, key).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tandem test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = [dir.join("ca.pem"), dir.join("node.pem"), dir.join("node.key")];
    std::fs::write(&paths[0], ca.pem()).unwrap();
    std::fs::write(&paths[1], cert.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    let [a, b, c] = paths.map(|p| p.display().to_string());
    (a, b, c)
}

#[test]
fn the_client_port_speaks_tls_to_redis_cli_and_refuses_plain_text() {
    let certs_dir = tempdir();
    let (ca, cert, key) = certificates(certs_dir.path());
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca]);
    let (ok, out, err) = redis_cli_output(server.client_addr(), &["--tls", "--cacert", &ca, "SET", "k", "over tls"]);
    if !ok && err.contains("not supported") {
        eprintln!("skipped: this redis-cli lacks TLS: {err}");
        return;
    }
    assert!(ok && out.trim() == "OK", "redis-cli --tls SET: {out} {err}");
    let (ok, out, err) = redis_cli_output(server.client_addr(), &["--tls", "--cacert", &ca, "GET", "k"]);
    assert!(ok && out.trim() == "over tls", "redis-cli --tls GET: {out} {err}");
    // A plain-text client: no reply, the connection is closed.
    let mut raw = Raw::connect(server.client_addr());
    raw.send(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let (bytes, closed) = raw.read_until_closed(Duration::from_secs(10));
    assert!(closed, "the TLS port kept a plain-text connection open");
    assert!(!String::from_utf8_lossy(&bytes).contains("PONG"), "a plain-text PING was answered: {bytes:?}");
    // A TLS client that does not trust the certificate is refused too.
    let (ok, _, _) = redis_cli_output(server.client_addr(), &["--tls", "PING"]);
    assert!(!ok, "redis-cli without the CA connected");
    // The admin port serves HTTPS only: a plain HTTP request gets no answer.
    assert!(common::http_get(server.admin_addr(), "/healthz").is_err(), "plain HTTP answered on the HTTPS admin port");
    // After all that the node still serves TLS clients.
    let (ok, out, err) = redis_cli_output(server.client_addr(), &["--tls", "--cacert", &ca, "PING"]);
    assert!(ok && out.trim() == "PONG", "the node stopped serving TLS clients: {out} {err}\n{}", server.stderr());
}

#[test]
fn a_tls_key_without_its_certificate_is_refused_at_start() {
    let dir = tempdir();
    let certs_dir = tempdir();
    let (_, _, key) = certificates(certs_dir.path());
    let failure = TestServer::try_start(dir.path(), &["--tls-key", &key]).err().expect("start refused");
    assert!(failure.stderr.contains("--tls-key needs --tls-cert"), "{}", failure.stderr);
}

/// Dials node `expected`'s peer port as node `me` with `secret`, under
/// mutual TLS with the given certificate files (`None`: plain TCP).
fn peer_dial(port: u16, me: u64, expected: u64, secret: &str, tls: Option<(&str, &str, &str)>) -> Result<(), String> {
    let mut config = tandem_node::Config::default();
    if let Some((ca, cert, key)) = tls {
        config.tls_ca = Some(ca.into());
        config.tls_cert = Some(cert.into());
        config.tls_key = Some(key.into());
    }
    let peer_tls = tandem_node::tls::PeerTls::load(&config)?;
    let key = tandem_node::peer_auth::PeerKey::new(me, Some(secret)).with_tls(peer_tls);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(key.connect(&format!("127.0.0.1:{port}"), expected, Duration::from_secs(10))).map(|_| ())
}

#[test]
fn peers_replicate_over_mutual_tls_and_refuse_a_foreign_or_missing_certificate() {
    let certs_dir = tempdir();
    let (ca, cert, key) = certificates(certs_dir.path());
    let foreign_dir = tempdir();
    let (_foreign_ca, foreign_cert, foreign_key) = certificates(foreign_dir.path());
    let secret = "mtls test secret";
    let flags: Vec<String> = ["--tls-cert", &cert, "--tls-key", &key, "--tls-ca", &ca, "--cluster-secret", secret]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let cluster = common::cluster::Cluster::start(3, Some(1), |_| flags.clone());
    let cli = |id: u64, args: &[&str]| {
        let mut all = vec!["--tls", "--cacert", ca.as_str()];
        all.extend_from_slice(args);
        redis_cli_output(cluster.node(id).client_addr(), &all)
    };
    let (ok, out, err) = cli(1, &["SET", "k", "over mtls"]);
    if !ok && err.contains("not supported") {
        eprintln!("skipped: this redis-cli lacks TLS: {err}");
        return;
    }
    assert!(ok && out.trim() == "OK", "SET on the leader: {out} {err}");
    for id in [2, 3] {
        let replicated = common::eventually(Duration::from_secs(20), || cli(id, &["GET", "k"]).1.trim() == "over mtls");
        assert!(replicated, "node {id} never got the write over mTLS peers\n{}", cluster.stderrs());
    }
    // The right secret is not enough: without TLS, or with a certificate
    // from another CA, the peer port refuses before the peer handshake.
    let port = cluster.peer_port(1);
    let plain = peer_dial(port, 2, 1, secret, None);
    assert!(plain.is_err(), "a plain-TCP peer was accepted on the mTLS peer port");
    let foreign = peer_dial(port, 2, 1, secret, Some((&ca, &foreign_cert, &foreign_key)));
    assert!(foreign.is_err(), "a peer with a foreign-CA certificate was accepted");
    assert!(
        common::eventually(Duration::from_secs(5), || cluster.node(1).stderr().contains("peer TLS handshake")),
        "the leader did not log the refused TLS handshake\n{}",
        cluster.node(1).stderr()
    );
    // A dialer that trusts another CA refuses the node's certificate too.
    let wrong_trust = peer_dial(port, 2, 1, secret, Some((&_foreign_ca, &foreign_cert, &foreign_key)));
    assert!(wrong_trust.is_err(), "a dialer trusting another CA accepted the node");
    // With the cluster's CA, certificate and secret, a dial succeeds (the
    // refusals above were about the certificates, not the test's dialer).
    peer_dial(port, 2, 1, secret, Some((&ca, &cert, &key))).expect("a peer with the cluster's certificate is accepted");
    // After all that, replication still works.
    let (ok, out, err) = cli(1, &["SET", "k2", "still"]);
    assert!(ok && out.trim() == "OK", "SET after the refusals: {out} {err}");
    assert!(common::eventually(Duration::from_secs(20), || cli(3, &["GET", "k2"]).1.trim() == "still"));
}

#[test]
fn a_tls_ca_without_a_certificate_is_refused_at_start() {
    let certs_dir = tempdir();
    let (ca, _, _) = certificates(certs_dir.path());
    let dir = tempdir();
    let failure = TestServer::try_start(dir.path(), &["--tls-ca", &ca]).err().expect("--tls-ca alone started");
    assert!(failure.stderr.contains("--tls-ca needs --tls-cert"), "unclear error: {}", failure.stderr);
}
