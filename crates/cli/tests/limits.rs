//! Named limits and bad input on the real binary: past a limit the client
//! gets a clear error (or its connection is closed), only that connection is
//! affected, and the node keeps serving with its data intact.

mod common;

use std::time::Duration;

use common::{tempdir, Resp, TestServer};

/// How long to wait for the server to close an offending connection.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

struct Node {
    _dir: tempfile::TempDir,
    server: TestServer,
    /// A client connected before the bad input, used again after it.
    bystander: redis::Connection,
}

/// Starts a node with `args` and writes `keep = safe` (acknowledged).
fn node(args: &[&str]) -> Node {
    let dir = tempdir();
    let server = TestServer::start(dir.path(), args);
    let mut bystander = server.conn();
    let () = redis::cmd("SET").arg("keep").arg("safe").query(&mut bystander).unwrap();
    Node { _dir: dir, server, bystander }
}

impl Node {
    /// The node answers a fresh client, the bystander still works, and the
    /// acknowledged key is intact.
    fn assert_alive_and_intact(&mut self) {
        // Retried: with --clients-max 2 a just-closed connection may still
        // hold its slot for a moment.
        let alive = common::eventually(Duration::from_secs(5), || self.server.answers_ping());
        assert!(alive, "node does not answer PING on a fresh connection; stderr:\n{}", self.server.stderr());
        let v: Option<String> =
            redis::cmd("GET").arg("keep").query(&mut self.bystander).expect("bystander still served");
        assert_eq!(v.as_deref(), Some("safe"), "acknowledged key after bad input");
        assert!(!self.server.stderr().contains("panicked"), "the server panicked:\n{}", self.server.stderr());
    }

    /// Sends `bytes` on a fresh raw connection; returns what came back and
    /// whether the server closed the connection.
    fn send_raw(&self, bytes: &[u8]) -> (String, bool) {
        let mut r = self.server.raw();
        let _ = r.send(bytes); // the server may close before reading it all
        let (got, closed) = r.read_until_closed(CLOSE_TIMEOUT);
        (String::from_utf8_lossy(&got).into_owned(), closed)
    }
}

fn assert_error_then_closed(what: &str, (reply, closed): (String, bool), expected: &str) {
    assert_eq!(reply, format!("-{expected}\r\n"), "{what}: reply");
    assert!(closed, "{what}: the server must close the connection after a protocol error");
}

#[test]
fn oversized_bulk_gets_an_error_and_node_keeps_serving() {
    let mut n = node(&["--bulk-bytes-max", "1024"]);
    let at_limit = "x".repeat(1024);
    let () = redis::cmd("SET")
        .arg("big")
        .arg(&at_limit)
        .query(&mut n.bystander)
        .expect("a bulk of exactly the limit is accepted");
    // Only the header of a 2000-byte bulk: the error must not wait for the data.
    assert_error_then_closed(
        "bulk over --bulk-bytes-max",
        n.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n"),
        "ERR Protocol error: invalid bulk length",
    );
    n.assert_alive_and_intact();
    let k: Option<String> = redis::cmd("GET").arg("k").query(&mut n.bystander).unwrap();
    assert_eq!(k, None, "the refused SET wrote nothing");
}

#[test]
fn oversized_array_gets_an_error_and_node_keeps_serving() {
    let mut n = node(&["--array-len-max", "8"]);
    let added: i64 = redis::cmd("SADD")
        .arg("s")
        .arg(&["a", "b", "c", "d", "e", "f"])
        .query(&mut n.bystander)
        .expect("8 elements is within the limit");
    assert_eq!(added, 6);
    assert_error_then_closed(
        "array over --array-len-max",
        n.send_raw(b"*9\r\n"),
        "ERR Protocol error: invalid multibulk length",
    );
    assert_error_then_closed(
        "a huge array header",
        n.send_raw(b"*2147483648\r\n"),
        "ERR Protocol error: invalid multibulk length",
    );
    n.assert_alive_and_intact();
}

#[test]
fn oversized_inline_gets_an_error_and_node_keeps_serving() {
    let mut n = node(&["--inline-bytes-max", "64"]);
    let mut r = n.server.raw();
    r.send(b"SET inline yes\r\n").unwrap();
    assert_eq!(r.read().unwrap(), Resp::Simple("OK".into()), "a short inline command works");
    // No newline within the limit: the server must not buffer forever.
    assert_error_then_closed(
        "inline over --inline-bytes-max",
        n.send_raw("a".repeat(200).as_bytes()),
        "ERR Protocol error: too big inline request",
    );
    n.assert_alive_and_intact();
}

#[test]
fn malformed_input_is_a_protocol_error_not_a_crash() {
    let mut n = node(&[]);
    assert_error_then_closed("*abc", n.send_raw(b"*abc\r\n"), "ERR Protocol error: invalid multibulk length");
    assert_error_then_closed("$-5", n.send_raw(b"*1\r\n$-5\r\n"), "ERR Protocol error: invalid bulk length");
    assert_error_then_closed("$abc", n.send_raw(b"*1\r\n$abc\r\n"), "ERR Protocol error: invalid bulk length");
    assert_error_then_closed("no $", n.send_raw(b"*1\r\nxyz\r\n"), "ERR Protocol error: expected '$', got 'x'");
    // Random garbage: whatever the server answers, it must survive it.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let prefixes: [&[u8]; 5] = [b"", b"*", b"*3\r\n$", b"*2\r\n$3\r\nGET\r\n", b"$"];
    for round in 0..15 {
        let mut blob = prefixes[round % prefixes.len()].to_vec();
        let len = 1 + (next() % 300) as usize;
        blob.extend((0..len).map(|_| next() as u8));
        let mut r = n.server.raw();
        let _ = r.send(&blob);
        let _ = r.read_until_closed(Duration::from_millis(150));
    }
    n.assert_alive_and_intact();
}

#[test]
fn too_many_clients_gets_max_clients_error() {
    let mut n = node(&["--clients-max", "2"]);
    // The bystander is client 1; this is client 2.
    let mut second = n.server.raw();
    assert_eq!(second.cmd(&["PING"]), Resp::Simple("PONG".into()));
    let mut third = n.server.raw();
    let (reply, closed) = third.read_until_closed(CLOSE_TIMEOUT);
    assert_eq!(String::from_utf8_lossy(&reply), "-ERR max number of clients reached\r\n");
    assert!(closed, "the refused connection is closed");
    // Existing clients are unaffected.
    assert_eq!(second.cmd(&["GET", "keep"]), Resp::Bulk(b"safe".to_vec()));
    // Once a client leaves, a new one gets in.
    drop(second);
    n.assert_alive_and_intact(); // retries a fresh PING until the slot is free
}

#[test]
fn reply_buffer_limit_closes_only_that_connection() {
    let mut n = node(&["--reply-buffer-bytes-max", "10000"]);
    let mut mset = redis::cmd("MSET");
    for i in 0..1000 {
        mset.arg(format!("fill:key:{i:08}")).arg(i);
    }
    let () = mset.query(&mut n.bystander).unwrap();
    let mut greedy = n.server.raw();
    greedy.send_cmd(&["KEYS", "*"]).unwrap();
    let (got, closed) = greedy.read_until_closed(CLOSE_TIMEOUT);
    assert!(closed, "a reply over --reply-buffer-bytes-max closes the connection");
    assert!(got.len() <= 10_000, "the server sent {} bytes, over the 10000-byte reply limit", got.len());
    n.assert_alive_and_intact();
    let size: i64 = redis::cmd("DBSIZE").query(&mut n.bystander).unwrap();
    assert_eq!(size, 1001, "no data lost");
    // A small reply still fits on a new connection.
    let mut small = n.server.raw();
    assert_eq!(small.cmd(&["GET", "fill:key:00000007"]), Resp::Bulk(b"7".to_vec()));
}

#[test]
fn query_buffer_limit_closes_only_that_connection() {
    let mut n = node(&["--query-buffer-bytes-max", "4096"]);
    let value = "v".repeat(3000);
    let () = redis::cmd("SET").arg("mid").arg(&value).query(&mut n.bystander).expect("a request under the limit works");
    let mut flood = n.server.raw();
    // A 100000-byte bulk announced, 20000 bytes sent: the unparsed request
    // outgrows the 4096-byte query buffer.
    let mut bytes = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 20_000));
    let _ = flood.send(&bytes);
    let (got, closed) = flood.read_until_closed(CLOSE_TIMEOUT);
    assert!(closed, "a request over --query-buffer-bytes-max closes the connection");
    let got = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || got.starts_with("-ERR"), "only an error may precede the close: {got:?}");
    n.assert_alive_and_intact();
    let k: Option<String> = redis::cmd("GET").arg("k").query(&mut n.bystander).unwrap();
    assert_eq!(k, None, "the refused request wrote nothing");
    let mid: Option<String> = redis::cmd("GET").arg("mid").query(&mut n.bystander).unwrap();
    assert_eq!(mid.as_deref(), Some(value.as_str()));
}
