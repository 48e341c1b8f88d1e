//! Harness for process tests of the real `tandem` binary.
//!
//! - [`TestServer`]: one `tandem server` process on port 0 with its own data
//!   directory; start, crash (SIGKILL), graceful stop (SIGTERM), restart.
//! - [`http_get`]: a tiny blocking HTTP/1.1 GET for the admin endpoint.
//! - [`Raw`]: a raw RESP connection that returns exact reply frames
//!   (error texts, RESP3 types) where a client library would reinterpret them.
//! - [`redis_cli`]: runs the real `redis-cli` (fails loudly if absent).
//! - [`peer_connect`] / [`peer_exchange`]: the peer handshake and raw peer
//!   frames, for tests that pose as (or forge) a cluster member.
//! - [`admin_request`]: any admin call, with or without the admin token.
//!
//! `POST /faults` exists only on nodes started with `--fault-injection`
//! ([`FAULT_INJECTION`]); tests that inject link faults pass it.
//!
//! Every helper has a timeout: a hung server fails the test, never hangs it.

#![allow(dead_code)] // each test file uses a different subset

pub mod cluster;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a server may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping server may take to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);
/// Read timeout of raw and HTTP connections.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The flag that makes a node serve `POST /faults`.
pub const FAULT_INJECTION: &str = "--fault-injection";

/// How long [`TestServer::wait_applied`] waits for a node to catch up.
pub const CATCH_UP: Duration = Duration::from_secs(20);

/// Every key of a node: type, absolute expiry and value as text
/// ([`TestServer::dump_keys`]).
pub type KeyDump = std::collections::BTreeMap<String, (String, i64, String)>;

/// Why a server did not become ready.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status, if the process exited (None: it hung and was killed).
    pub status: Option<ExitStatus>,
    /// Everything it wrote to stderr (ANSI escapes removed).
    pub stderr: String,
}

/// One running `tandem server` process.
pub struct TestServer {
    child: Option<Child>,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    /// False when the caller passes every listener address itself
    /// ([`TestServer::try_start_bare`]).
    default_addrs: bool,
    client_addr: SocketAddr,
    admin_addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    stderr_thread: Option<JoinHandle<()>>,
}

/// The path of the binary under test.
pub fn tandem_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tandem")
}

/// Removes ANSI colour escapes (`ESC [ ... letter`) so stderr can be searched.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl TestServer {
    /// Starts a server on `data_dir` with `extra_args`; panics (showing the
    /// server's stderr) if it does not become ready.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> TestServer {
        match TestServer::try_start(data_dir, extra_args) {
            Ok(s) => s,
            Err(f) => {
                panic!("tandem server did not become ready (exit status {:?}); its stderr:\n{}", f.status, f.stderr)
            }
        }
    }

    /// Starts a server; returns its exit status and stderr if it exits (or
    /// hangs) before printing the ready line.
    pub fn try_start(data_dir: &Path, extra_args: &[&str]) -> Result<TestServer, StartFailure> {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        spawn(data_dir.to_path_buf(), extra_args, true)
    }

    /// Like [`TestServer::try_start`], but the harness adds no
    /// `--client-addr/--admin-addr/--peer-addr`: `args` must give the ones
    /// the test needs fixed (e.g. peer ports named in `--members`); a missing
    /// one takes the server's default. Restarts reuse the same `args`.
    pub fn try_start_bare(data_dir: &Path, args: &[&str]) -> Result<TestServer, StartFailure> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        spawn(data_dir.to_path_buf(), args, false)
    }

    /// The RESP address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `redis://127.0.0.1:PORT/` for the `redis` crate.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.client_addr)
    }

    /// A blocking `redis` crate client connection.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("valid url");
        let con = client.get_connection_with_timeout(IO_TIMEOUT).expect("connect to tandem");
        con.set_read_timeout(Some(IO_TIMEOUT)).expect("set read timeout");
        con
    }

    /// A raw RESP connection; on failure the panic shows whether the
    /// process is still running and its stderr.
    pub fn raw(&self) -> Raw {
        Raw::try_connect(self.client_addr).unwrap_or_else(|e| {
            let state = match self.child.as_ref().map(|c| std::fs::metadata(format!("/proc/{}", c.id())).is_ok()) {
                Some(true) => "process still running",
                Some(false) => "process gone",
                None => "process stopped by the test",
            };
            panic!("connect {}: {e} ({state}); stderr:\n{}", self.client_addr, self.stderr())
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The stderr of the current process so far (ANSI escapes removed).
    pub fn stderr(&self) -> String {
        strip_ansi(&self.stderr.lock().unwrap())
    }

    /// Waits until the current process's stderr contains `needle`.
    pub fn wait_for_stderr(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Crashes the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL on unix
            let _ = child.wait();
        }
        self.join_stderr();
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn sigterm_and_wait(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed", child.id());
        let status = wait_bounded(&mut child, EXIT_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tandem server did not exit within {EXIT_TIMEOUT:?} of SIGTERM; stderr:\n{}", self.stderr())
        });
        self.join_stderr();
        status
    }

    /// Starts a new process on the same data directory and flags (new
    /// ports). A process still running is first crashed with SIGKILL.
    pub fn restart(&mut self) {
        let fresh = self.try_restart().unwrap_or_else(|f| {
            panic!("tandem server did not restart (exit status {:?}); its stderr:\n{}", f.status, f.stderr)
        });
        *self = fresh;
    }

    /// Like [`TestServer::restart`], but returns the failure instead of
    /// panicking. `self` is left stopped either way; use the returned value.
    pub fn try_restart(&mut self) -> Result<TestServer, StartFailure> {
        self.kill9();
        spawn(self.data_dir.clone(), self.extra_args.clone(), self.default_addrs)
    }

    /// GET `path` from the admin endpoint; panics on a non-200 answer.
    pub fn admin_get(&self, path: &str) -> String {
        http_get(self.admin_addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `/status` as JSON.
    pub fn status(&self) -> serde_json::Value {
        let body = self.admin_get("/status");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"))
    }

    /// The last LSN in this node's log (`/status`).
    pub fn last_lsn(&self) -> u64 {
        self.status()["last_lsn"].as_u64().expect("last_lsn in /status")
    }

    /// Waits (`WAITLSN`, at most [`CATCH_UP`]) until this node applied
    /// `lsn`; panics if it did not.
    pub fn wait_applied(&self, lsn: u64) {
        let mut raw = self.raw();
        raw.set_read_timeout(CATCH_UP + Duration::from_secs(5));
        match raw.cmd(&["WAITLSN", &lsn.to_string(), &CATCH_UP.as_millis().to_string()]) {
            Resp::Integer(got) => assert!(got >= lsn as i64, "applied only {got} of {lsn}"),
            other => panic!("WAITLSN: {other:?}"),
        }
    }

    /// Every key as a client sees it: type, absolute expiry
    /// (`PEXPIRETIME`, -1 for none) and the whole value as text (members of
    /// sets and fields of hashes sorted). Keys that expire between `KEYS`
    /// and `TYPE` are left out.
    pub fn dump_keys(&self) -> KeyDump {
        use redis::Commands;
        let mut con = self.conn();
        let keys: Vec<String> = con.keys("*").unwrap();
        let mut out = KeyDump::new();
        for key in keys {
            let t: String = redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
            let exp: i64 = redis::cmd("PEXPIRETIME").arg(&key).query(&mut con).unwrap();
            let value = match t.as_str() {
                "string" => format!("{:?}", con.get::<_, Vec<u8>>(&key).unwrap()),
                "list" => format!("{:?}", con.lrange::<_, Vec<Vec<u8>>>(&key, 0, -1).unwrap()),
                "set" => {
                    let mut m: Vec<Vec<u8>> = con.smembers(&key).unwrap();
                    m.sort();
                    format!("{m:?}")
                }
                "hash" => {
                    let mut m: Vec<(Vec<u8>, Vec<u8>)> = con.hgetall(&key).unwrap();
                    m.sort();
                    format!("{m:?}")
                }
                "zset" => format!("{:?}", con.zrange_withscores::<_, Vec<(String, String)>>(&key, 0, -1).unwrap()),
                "none" => continue,
                other => panic!("unexpected type {other} of {key}"),
            };
            out.insert(key, (t, exp, value));
        }
        out
    }

    /// True if the node answers PING on a fresh connection.
    pub fn answers_ping(&self) -> bool {
        match Raw::try_connect(self.client_addr) {
            Ok(mut r) => matches!(r.try_cmd(&["PING"]), Ok(Resp::Simple(s)) if s == "PONG"),
            Err(_) => false,
        }
    }

    /// Asserts the node answers PING on a fresh connection.
    pub fn assert_alive(&self) {
        assert!(self.answers_ping(), "node does not answer PING on a fresh connection; stderr:\n{}", self.stderr());
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn join_stderr(&mut self) {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn(data_dir: PathBuf, extra_args: Vec<String>, default_addrs: bool) -> Result<TestServer, StartFailure> {
    let addrs: &[&str] = if default_addrs {
        &["--client-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--peer-addr", "127.0.0.1:0"]
    } else {
        &[]
    };
    let mut child = Command::new(tandem_bin())
        .arg("server")
        .arg("--data-dir")
        .arg(&data_dir)
        .args(addrs)
        .arg("--print-ready")
        .args(&extra_args)
        .env("NO_COLOR", "1")
        .env_remove("TANDEM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", tandem_bin()));

    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_thread = {
        let pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            while let Ok(n) = reader.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&line));
                line.clear();
            }
        })
    };
    let (ready_tx, ready_rx) = mpsc::channel::<Option<String>>();
    {
        let pipe = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = String::new();
            let first = match reader.read_line(&mut line) {
                Ok(n) if n > 0 => Some(line.clone()),
                _ => None,
            };
            let _ = ready_tx.send(first);
            // Keep draining so the server never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
        });
    }

    let failure = |child: &mut Child, hung: bool, stderr_thread: JoinHandle<()>, stderr: &Arc<Mutex<String>>| {
        let status = if hung {
            let _ = child.kill();
            let _ = child.wait();
            None
        } else {
            wait_bounded(child, EXIT_TIMEOUT).or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                None
            })
        };
        let _ = stderr_thread.join();
        StartFailure { status, stderr: strip_ansi(&stderr.lock().unwrap()) }
    };

    let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(Some(line)) => line,
        Ok(None) => return Err(failure(&mut child, false, stderr_thread, &stderr)),
        Err(_) => return Err(failure(&mut child, true, stderr_thread, &stderr)),
    };
    let ready: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(e) => {
            let mut f = failure(&mut child, true, stderr_thread, &stderr);
            f.stderr = format!("ready line is not JSON ({e}): {line:?}\n{}", f.stderr);
            return Err(f);
        }
    };
    let addr = |field: &str| -> SocketAddr {
        ready[field]
            .as_str()
            .unwrap_or_else(|| panic!("ready line has no {field}: {line}"))
            .parse()
            .unwrap_or_else(|e| panic!("ready line {field} is not an address ({e}): {line}"))
    };
    let (client_addr, admin_addr) = (addr("client_addr"), addr("admin_addr"));
    Ok(TestServer {
        child: Some(child),
        data_dir,
        extra_args,
        default_addrs,
        client_addr,
        admin_addr,
        stderr,
        stderr_thread: Some(stderr_thread),
    })
}

// ------------------------------------------------------------------ HTTP

/// A blocking HTTP/1.1 GET; returns the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).map_err(|e| format!("read from {addr}: {e}"))?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) =
        response.split_once("\r\n\r\n").ok_or_else(|| format!("malformed HTTP response: {response:?}"))?;
    let status_line = head.lines().next().unwrap_or("");
    if !status_line.starts_with("HTTP/1.1 200") {
        return Err(format!("{addr}{path}: {status_line}"));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok(if chunked { dechunk(body) } else { body.to_string() })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of an unlabelled (or exactly labelled) Prometheus sample, e.g.
/// `metric(text, "tandem_log_fsyncs_total")` or
/// `metric(text, "tandem_commands_total{command=\"set\"}")`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

// ------------------------------------------------------------------ raw RESP

/// One RESP2/RESP3 reply frame, as received.
#[derive(Clone, Debug, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
    Map(Vec<(Resp, Resp)>),
    Set(Vec<Resp>),
    Double(String),
    Boolean(bool),
    Other(char, String),
}

impl Resp {
    /// The text of a bulk or simple string.
    pub fn text(&self) -> String {
        match self {
            Resp::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            other => panic!("not a string reply: {other:?}"),
        }
    }
}

/// A raw RESP connection with a read timeout.
pub struct Raw {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl Raw {
    /// Connects or panics.
    pub fn connect(addr: SocketAddr) -> Raw {
        Raw::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Connects.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Raw> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Raw { reader: BufReader::new(stream.try_clone()?), stream })
    }

    /// Sends `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a command as a RESP array of bulk strings.
    pub fn send_cmd(&mut self, args: &[&str]) -> std::io::Result<()> {
        self.send(&encode_cmd(args))
    }

    /// Sends a command and reads its reply, panicking on I/O errors.
    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        self.try_cmd(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// Sends a command and reads its reply.
    pub fn try_cmd(&mut self, args: &[&str]) -> std::io::Result<Resp> {
        self.send_cmd(args)?;
        self.read()
    }

    /// Reads one reply frame.
    pub fn read(&mut self) -> std::io::Result<Resp> {
        read_frame(&mut self.reader)
    }

    /// Reads one raw line (without its CRLF): the exact bytes of a reply's
    /// first line, e.g. `_` (RESP3 null) versus `$-1` (RESP2 null).
    pub fn read_line(&mut self) -> std::io::Result<String> {
        read_line(&mut self.reader)
    }

    /// Sets the read timeout.
    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).expect("set read timeout");
    }

    /// Reads until the server closes the connection (or `timeout` passes).
    /// Returns the bytes received and whether the connection was closed
    /// (EOF or reset) within the timeout.
    pub fn read_until_closed(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (got, false);
            }
            self.stream.set_read_timeout(Some(left)).ok();
            // Drain what the BufReader already holds first.
            let n = {
                let pending = self.reader.buffer().len();
                if pending > 0 {
                    got.extend_from_slice(self.reader.buffer());
                    self.reader.consume(pending);
                    continue;
                }
                self.reader.get_mut().read(&mut buf)
            };
            match n {
                Ok(0) => return (got, true),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    return (got, false)
                }
                Err(_) => return (got, true), // reset: closed
            }
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode_cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    if !line.ends_with(b"\r\n") {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("line without CRLF: {line:?}")));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn read_frame(r: &mut impl BufRead) -> std::io::Result<Resp> {
    let line = read_line(r)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {line:?}"));
    let (kind, rest) = line.split_at(1.min(line.len()));
    let int = |s: &str| s.parse::<i64>().map_err(|_| bad("bad integer"));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_string()),
        "-" => Resp::Error(rest.to_string()),
        ":" => Resp::Integer(int(rest)?),
        "_" => Resp::Nil,
        "," => Resp::Double(rest.to_string()),
        "#" => Resp::Boolean(rest == "t"),
        "(" => Resp::Other('(', rest.to_string()),
        "$" | "=" | "!" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf)?;
            buf.truncate(n as usize);
            match kind {
                "$" => Resp::Bulk(buf),
                "!" => Resp::Error(String::from_utf8_lossy(&buf).into_owned()),
                _ => Resp::Other('=', String::from_utf8_lossy(&buf).into_owned()),
            }
        }
        "*" | "~" | ">" => {
            let n = int(rest)?;
            if n < 0 {
                return Ok(Resp::Nil);
            }
            let items = (0..n).map(|_| read_frame(r)).collect::<std::io::Result<Vec<_>>>()?;
            if kind == "~" {
                Resp::Set(items)
            } else {
                Resp::Array(items)
            }
        }
        "%" | "|" => {
            let n = int(rest)?;
            let mut pairs = Vec::new();
            for _ in 0..n {
                let k = read_frame(r)?;
                let v = read_frame(r)?;
                pairs.push((k, v));
            }
            if kind == "|" {
                // An attribute precedes the real reply: skip it.
                return read_frame(r);
            }
            Resp::Map(pairs)
        }
        _ => return Err(bad("unknown frame type")),
    })
}

// ------------------------------------------------------------------ redis-cli

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` and returns its stdout.
/// Panics with an install hint if `redis-cli` is not installed: CI installs
/// it, so a missing binary is a broken environment, not a skip.
pub fn redis_cli(addr: SocketAddr, args: &[&str]) -> String {
    let (ok, stdout, stderr) = redis_cli_output(addr, args);
    assert!(ok, "redis-cli {args:?} failed: {stderr}");
    stdout
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT ARGS...` without judging its exit
/// status (an error reply may make redis-cli exit non-zero); returns
/// (success, stdout, stderr). Panics if `redis-cli` is not installed.
pub fn redis_cli_output(addr: SocketAddr, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output();
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-cli is not installed; this test needs the real redis-cli: run `apt-get install -y redis-tools`"
        ),
        Err(e) => panic!("cannot run redis-cli: {e}"),
    };
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `n` distinct free TCP ports on 127.0.0.1 (bound at once, then released:
/// another process may take one before the caller binds it, so callers
/// retry a start that fails).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect()
}

/// A fresh temporary data directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("tandem-test-").tempdir().expect("create tempdir")
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log segment files of a data directory, oldest first.
pub fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "seg")).collect())
        .unwrap_or_default();
    segs.sort();
    segs
}

// ------------------------------------------------------------------ peers

/// Opens a connection to a node's peer port and runs the peer handshake as
/// node `me` with `secret`, expecting to reach node `expected`. Returns the
/// authenticated (blocking) stream, or the handshake's error.
pub fn peer_connect(peer_port: u16, me: u64, expected: u64, secret: Option<&str>) -> Result<TcpStream, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", peer_port)).await.map_err(|e| e.to_string())?;
        let key = tandem_node::peer_auth::PeerKey::new(me, secret);
        tokio::time::timeout(IO_TIMEOUT, key.dial(&mut s, expected))
            .await
            .map_err(|_| "peer handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let s = s.into_std().map_err(|e| e.to_string())?;
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
        Ok(s)
    })
}

/// Writes `msgs` as peer frames and returns the first frame the node
/// answers (`None`: it closed the connection without one).
pub fn peer_exchange(s: &mut TcpStream, msgs: &[tandem_core::repl::PeerMsg]) -> Option<tandem_core::repl::PeerMsg> {
    use tandem_node::repl::wire;
    let mut out = Vec::new();
    for m in msgs {
        wire::encode_frame(m, &mut out);
    }
    s.write_all(&out).ok()?;
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(msg) = wire::take_frame(&mut buf).expect("a well-formed frame") {
            return Some(msg);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// An HTTP/1.1 request to an admin port with an optional bearer token;
/// returns the status code and the body.
pub fn admin_request(addr: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect to the admin port");
    stream.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send to the admin port");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (code, body.to_string())
}

// ------------------------------------------------------------------ process groups

/// How long a process group may take to stop after SIGTERM.
pub const GROUP_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A command started in a process group of its own (`tandem up`, a shell
/// script): everything it starts stays in the group, and the whole group is
/// stopped when this is dropped, pass or fail.
pub struct Group {
    child: Child,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> Group {
        use std::os::unix::process::CommandExt;
        let child = cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        Group { child }
    }

    /// The leader's pid (also the group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the leader to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_bounded(&mut self.child, timeout)
    }

    /// True while any process of the group lives.
    pub fn alive(&self) -> bool {
        // SAFETY: kill(2) with signal 0 only checks; the group is ours.
        unsafe { libc::kill(-(self.child.id() as libc::pid_t), 0) == 0 }
    }

    /// SIGTERM to the group (nodes stop gracefully), SIGKILL to whatever
    /// is left after [`GROUP_STOP_TIMEOUT`]. True if SIGTERM was enough.
    pub fn stop(&mut self) -> bool {
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group this harness created.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let _ = self.wait(GROUP_STOP_TIMEOUT);
        let stopped = eventually(GROUP_STOP_TIMEOUT, || !self.alive());
        if !stopped {
            // SAFETY: as above.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
        stopped
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.child.try_wait();
        if self.alive() {
            self.stop();
        }
    }
}

/// Pids of the running processes whose command line has an argument equal
/// to `arg` (e.g. a test's unique data directory).
pub fn pids_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
                .unwrap_or(true);
            !zombie && cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
        })
        .collect()
}

/// A base port such that `base..=base + span` are all free right now
/// (for `tandem up --base-port`, whose ports are fixed): first from
/// `preferred`, then around kernel-chosen ports.
pub fn free_port_range(span: u16, preferred: &[u16]) -> u16 {
    let all_free = |base: u16| (base..=base + span).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
    let kernel_chosen = (0..20).map(|_| free_ports(1)[0].clamp(20_000, 65_000 - span));
    preferred.iter().copied().chain(kernel_chosen).find(|b| all_free(*b)).expect("no free range of ports")
}
