//! TLS (issue 15 item 3): with `--tls-cert` and `--tls-key`, `redis-cli
//! --tls --cacert` and the `redis` crate over `rediss://` work and a
//! plain-text client gets no answer (its bytes fail the handshake; the
//! connection is closed); the `tandem` CLI reaches the HTTPS admin port with
//! `https://` addresses and `--tls-ca` / `TANDEM_TLS_CA`; with `--tls-ca`
//! peers speak mutual TLS. Certificates are generated at test time with
//! rcgen.

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

/// Runs `tandem ARGS` with extra environment variables; (success, stdout,
/// stderr).
fn tandem(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = std::process::Command::new(common::tandem_bin())
        .args(args)
        .env_remove("TANDEM_TLS_CA")
        .env_remove("TANDEM_ADMIN_ADDR")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tandem");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_reaches_an_https_admin_port_verifying_the_node_against_the_ca() {
    let certs_dir = tempdir();
    let (ca, cert, key) = certificates(certs_dir.path());
    let foreign_dir = tempdir();
    let (foreign_ca, _, _) = certificates(foreign_dir.path());
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    let https = format!("https://127.0.0.1:{}", server.admin_addr().port());

    // `status` with --tls-ca: the node's /status document over HTTPS.
    let (ok, out, err) = tandem(&["status", "--json", "--admin", &https, "--tls-ca", &ca], &[]);
    assert!(ok, "tandem status over https failed: {out} {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("status --json prints JSON");
    assert!(out.contains("\"role\""), "no /status document in {doc}");
    // `backup base` with TANDEM_TLS_CA: the node's snapshot and log pulled
    // over HTTPS into a repository that verifies; `keyspace list` too.
    let mut conn = tls_conn(&server, &ca).expect("a TLS connection with the CA");
    redis::cmd("SET").arg("k").arg("backed up").query::<()>(&mut conn).expect("SET over TLS");
    let repo = tempdir();
    let repo_path = repo.path().join("repo").display().to_string();
    let env = [("TANDEM_TLS_CA", ca.as_str())];
    let (ok, out, err) = tandem(&["backup", "base", "--repo", &repo_path, "--admin", &https], &env);
    assert!(ok, "tandem backup base over https failed: {out} {err}");
    let (ok, out, err) = tandem(&["backup", "verify", "--repo", &repo_path], &[]);
    assert!(ok, "the backup taken over https does not verify: {out} {err}");
    let (ok, out, err) = tandem(&["keyspace", "list", "--admin", &https], &env);
    assert!(ok && out.contains("default"), "tandem keyspace list over https: {out} {err}");

    // Without a CA the CLI says what it needs instead of trusting the node.
    let (ok, out, err) = tandem(&["status", "--admin", &https], &[]);
    assert!(!ok, "status over https without a CA succeeded: {out}");
    assert!(err.contains("--tls-ca") || out.contains("--tls-ca"), "unclear error without a CA: {out} {err}");
    // A CA that did not sign the node's certificate: refused.
    let (ok, out, err) = tandem(&["keyspace", "list", "--admin", &https, "--tls-ca", &foreign_ca], &[]);
    assert!(!ok, "a node signed by another CA was trusted: {out}");
    assert!(err.to_lowercase().contains("certificate"), "unclear error for a foreign CA: {err}");
    // A plain-HTTP address to the HTTPS port gets no answer.
    let plain = server.admin_addr().to_string();
    let (ok, out, _) = tandem(&["keyspace", "list", "--admin", &plain], &[]);
    assert!(!ok, "plain HTTP was answered by the HTTPS admin port: {out}");
}

/// A `redis` crate connection over `rediss://` trusting the CA file `ca`.
fn tls_conn(server: &TestServer, ca: &str) -> redis::RedisResult<redis::Connection> {
    let url = format!("rediss://127.0.0.1:{}/", server.client_addr().port());
    let root_cert = Some(std::fs::read(ca).unwrap());
    let client = redis::Client::build_with_tls(url.as_str(), redis::TlsCertificates { client_tls: None, root_cert })?;
    client.get_connection_with_timeout(Duration::from_secs(10))
}

#[test]
fn the_redis_crate_sets_and_gets_over_rediss_with_the_test_ca() {
    let certs_dir = tempdir();
    let (ca, cert, key) = certificates(certs_dir.path());
    let dir = tempdir();
    let server = TestServer::start(dir.path(), &["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("rediss://127.0.0.1:{}/", server.client_addr().port());
    let mut conn = tls_conn(&server, &ca).expect("a TLS connection with the CA");
    let value = vec![7u8; 300_000];
    redis::cmd("SET").arg("k").arg(&value).query::<()>(&mut conn).expect("SET over TLS");
    let got: Vec<u8> = redis::cmd("GET").arg("k").query(&mut conn).expect("GET over TLS");
    assert!(got == value, "GET over TLS returned {} bytes, not the value set", got.len());
    // The same URL without the CA: the node's certificate is not trusted.
    let untrusted = redis::Client::open(url.as_str()).unwrap().get_connection_with_timeout(Duration::from_secs(10));
    assert!(untrusted.is_err(), "a client without the CA trusted the node");
    // Plain `redis://` to the TLS port: no answer.
    let plain = redis::Client::open(server.url()).unwrap().get_connection_with_timeout(Duration::from_secs(5));
    let answered = plain.is_ok_and(|mut c| redis::cmd("PING").query::<String>(&mut c).is_ok());
    assert!(!answered, "a plain-text redis client was answered on the TLS port");
}
