//! TLS on the client port (issue 15 item 3, part): with `--tls-cert` and
//! `--tls-key`, `redis-cli --tls --cacert` works and a plain-text client
//! gets no answer (its bytes fail the handshake; the connection is
//! closed). Certificates are generated at test time with rcgen.

mod common;

use std::time::Duration;

use common::{redis_cli_output, tempdir, Raw, TestServer};

/// A CA and a node certificate for 127.0.0.1 / localhost signed by it,
/// written as PEM files: (ca, cert, key).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "tandem test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
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
