//! The node's view of all its client connections: the registry behind
//! `CLIENT LIST`, `CLIENT KILL` and `CLIENT UNBLOCK`, the `MONITOR` feed,
//! the `SLOWLOG`, and the per-command counters of `INFO commandstats`.
//!
//! Each connection registers a [`ClientHandle`] when it is accepted and
//! drops it when it ends ([`Registration`]); the handle carries what other
//! connections may read (name, last command, idle time, flags) and the two
//! signals they may send (kill, unblock). The connection itself keeps its
//! private state in `connection::ClientState`.
//!
//! Limits: [`SLOWLOG_ARGS_MAX`] arguments of [`SLOWLOG_ARG_BYTES_MAX`]
//! bytes each per slow-log entry; `slowlog-max-len` entries
//! ([`SLOWLOG_MAX_LEN_LIMIT`] at most); [`MONITOR_QUEUE_LINES`] lines
//! waiting per monitor (a monitor further behind skips lines and is told
//! how many).
//!
//! Must never: hold a lock across an await, block a command on a slow
//! monitor, or record a password (AUTH and HELLO arguments are redacted in
//! the feed and the slow log).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tandem_core::command::COMMANDS;
use tokio::sync::{broadcast, Notify};

/// Arguments kept per slow-log entry (Redis: 32); the last one kept says
/// how many more there were.
pub const SLOWLOG_ARGS_MAX: usize = 32;
/// Bytes kept per slow-log argument (Redis: 128).
pub const SLOWLOG_ARG_BYTES_MAX: usize = 128;
/// Default `slowlog-log-slower-than`, microseconds (Redis's).
pub const SLOWLOG_SLOWER_THAN_US_DEFAULT: i64 = 10_000;
/// Default `slowlog-max-len` (Redis's).
pub const SLOWLOG_MAX_LEN_DEFAULT: usize = 128;
/// The largest `slowlog-max-len` accepted.
pub const SLOWLOG_MAX_LEN_LIMIT: usize = 100_000;
/// Lines the monitor feed buffers for its slowest reader.
pub const MONITOR_QUEUE_LINES: usize = 4_096;

/// A connection in subscribe mode.
pub const FLAG_PUBSUB: u8 = 1;
/// A connection running `MONITOR`.
pub const FLAG_MONITOR: u8 = 2;
/// A connection waiting in a blocking command.
pub const FLAG_BLOCKED: u8 = 4;
/// A connection with an open `MULTI`.
pub const FLAG_MULTI: u8 = 8;

/// How `CLIENT UNBLOCK` ends a blocked command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unblock {
    /// As if its timeout passed (a null reply).
    Timeout,
    /// With `-UNBLOCKED`.
    Error,
}

/// What other connections may see of, and do to, one connection.
pub struct ClientHandle {
    /// `CLIENT ID`.
    pub id: u64,
    /// The client's address.
    pub addr: SocketAddr,
    /// The node's address the client connected to.
    pub laddr: Option<SocketAddr>,
    connected_at: Instant,
    name: Mutex<Option<Bytes>>,
    /// Index in `COMMANDS` of the last command (or `COMMANDS.len()`).
    last_command: AtomicUsize,
    last_active: Mutex<Instant>,
    flags: AtomicU8,
    resp: AtomicU8,
    killed: AtomicBool,
    kill: Notify,
    unblock: Mutex<Option<Unblock>>,
    unblock_notify: Notify,
}

impl ClientHandle {
    /// The name set by `CLIENT SETNAME` / `HELLO .. SETNAME`.
    pub fn name(&self) -> Option<Bytes> {
        self.name.lock().clone()
    }

    /// Sets (or clears) the name.
    pub fn set_name(&self, name: Option<Bytes>) {
        *self.name.lock() = name;
    }

    /// Records that the connection runs command `index` now.
    pub fn touch(&self, index: usize) {
        self.last_command.store(index, Ordering::Relaxed);
        *self.last_active.lock() = Instant::now();
    }

    /// Sets or clears one of the `FLAG_*` bits.
    pub fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed);
        }
    }

    /// Whether a `FLAG_*` bit is set.
    pub fn has_flag(&self, flag: u8) -> bool {
        self.flags.load(Ordering::Relaxed) & flag != 0
    }

    /// Records the reply protocol (2 or 3) for `CLIENT LIST`.
    pub fn set_resp(&self, resp: u8) {
        self.resp.store(resp, Ordering::Relaxed);
    }

    /// Whether `CLIENT KILL` closed this connection.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Resolves once `CLIENT KILL` chose this connection.
    pub async fn killed(&self) {
        loop {
            if self.is_killed() {
                return;
            }
            self.kill.notified().await;
        }
    }

    /// Resolves with how to end the blocked command once `CLIENT UNBLOCK`
    /// chose this connection.
    pub async fn unblocked(&self) -> Unblock {
        loop {
            if let Some(u) = self.unblock.lock().take() {
                return u;
            }
            self.unblock_notify.notified().await;
        }
    }

    /// Clears a stale `CLIENT UNBLOCK` (one that arrived after the command
    /// ended on its own).
    pub fn clear_unblock(&self) {
        self.unblock.lock().take();
    }

    /// One `CLIENT LIST` line (without the newline).
    pub fn line(&self) -> String {
        let flags = self.flags.load(Ordering::Relaxed);
        let mut f = String::new();
        if flags & FLAG_PUBSUB != 0 {
            f.push('P');
        }
        if flags & FLAG_MONITOR != 0 {
            f.push('O');
        }
        if flags & FLAG_BLOCKED != 0 {
            f.push('b');
        }
        if flags & FLAG_MULTI != 0 {
            f.push('x');
        }
        if f.is_empty() {
            f.push('N');
        }
        let cmd = COMMANDS.get(self.last_command.load(Ordering::Relaxed)).map_or("NULL", |c| c.name);
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={f} db=0 sub=0 psub=0 ssub=0 multi={} qbuf=0 \
             qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={cmd} \
             user=default redir=-1 resp={}",
            self.id,
            self.addr,
            self.laddr.map(|a| a.to_string()).unwrap_or_default(),
            self.name().as_deref().map(String::from_utf8_lossy).unwrap_or_default(),
            self.connected_at.elapsed().as_secs(),
            self.last_active.lock().elapsed().as_secs(),
            if flags & FLAG_MULTI != 0 { 0 } else { -1 },
            self.resp.load(Ordering::Relaxed),
        )
    }
}

/// Removes its connection from the registry when dropped.
pub struct Registration {
    registry: Arc<Clients>,
    /// The registered handle.
    pub handle: Arc<ClientHandle>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.table.lock().remove(&self.handle.id);
        if self.handle.has_flag(FLAG_MONITOR) {
            self.registry.monitors.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// One slow-log entry.
#[derive(Clone, Debug)]
pub struct SlowEntry {
    /// Increasing id.
    pub id: u64,
    /// Unix time (seconds) the command ran.
    pub unix_secs: u64,
    /// Execution time, microseconds.
    pub micros: u64,
    /// The (truncated) arguments.
    pub args: Vec<Bytes>,
    /// The client's address.
    pub addr: String,
    /// The client's name.
    pub name: Bytes,
}

/// Calls and time of one command (`INFO commandstats`).
#[derive(Default)]
struct CommandStat {
    calls: AtomicU64,
    micros: AtomicU64,
    failed: AtomicU64,
}

/// The filters of `CLIENT KILL` (new form); unset ones match everything.
#[derive(Default, Debug)]
pub struct KillFilter {
    /// `ID id`.
    pub id: Option<u64>,
    /// `ADDR ip:port`.
    pub addr: Option<String>,
    /// `LADDR ip:port`.
    pub laddr: Option<String>,
    /// `TYPE normal|pubsub` (others match nothing: replicas are peers).
    pub kind: Option<String>,
    /// The calling connection, unless `SKIPME no`.
    pub skip: Option<u64>,
}

/// The order in which blocked clients retry: first blocked, first served
/// (Redis's rule). Each blocked client holds a [`Turn`]; after a change to
/// lists or sorted sets (generation `gen`), a client retries only once
/// every client that blocked before it has retried for that generation or
/// left.
#[derive(Default)]
pub struct Turns {
    /// Ticket -> the newest generation that client retried for.
    retried: Mutex<BTreeMap<u64, u64>>,
    next: AtomicU64,
    changed: Notify,
}

impl Turns {
    /// A place at the end of the queue.
    pub fn enter(&self) -> Turn<'_> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.retried.lock().insert(ticket, 0);
        Turn { turns: self, ticket }
    }
}

/// One blocked client's place in [`Turns`]; leaves the queue when dropped.
pub struct Turn<'a> {
    turns: &'a Turns,
    ticket: u64,
}

impl Turn<'_> {
    /// Waits until every client ahead has retried for generation `gen`.
    pub async fn wait(&self, gen: u64) {
        loop {
            let notified = self.turns.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.turns.retried.lock().range(..self.ticket).all(|(_, g)| *g >= gen) {
                return;
            }
            notified.await;
        }
    }

    /// Records that this client retried for generation `gen`.
    pub fn done(&self, gen: u64) {
        self.turns.retried.lock().insert(self.ticket, gen);
        self.turns.changed.notify_waiters();
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.turns.retried.lock().remove(&self.ticket);
        self.turns.changed.notify_waiters();
    }
}

/// The registry, the monitor feed, the slow log and the command counters.
pub struct Clients {
    table: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    monitors: AtomicUsize,
    feed: broadcast::Sender<Bytes>,
    slowlog: Mutex<VecDeque<SlowEntry>>,
    next_slow_id: AtomicU64,
    /// `slowlog-log-slower-than` (µs; negative: off; 0: everything).
    pub slower_than_us: AtomicI64,
    /// `slowlog-max-len`.
    pub slowlog_max_len: AtomicUsize,
    stats: Vec<CommandStat>,
    /// The order blocked clients retry in.
    pub turns: Turns,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    /// An empty registry.
    pub fn new() -> Clients {
        Clients {
            table: Mutex::new(BTreeMap::new()),
            monitors: AtomicUsize::new(0),
            feed: broadcast::channel(MONITOR_QUEUE_LINES).0,
            slowlog: Mutex::new(VecDeque::new()),
            next_slow_id: AtomicU64::new(0),
            slower_than_us: AtomicI64::new(SLOWLOG_SLOWER_THAN_US_DEFAULT),
            slowlog_max_len: AtomicUsize::new(SLOWLOG_MAX_LEN_DEFAULT),
            stats: (0..=COMMANDS.len()).map(|_| CommandStat::default()).collect(),
            turns: Turns::default(),
        }
    }

    /// Registers a connection.
    pub fn register(self: &Arc<Self>, id: u64, addr: SocketAddr, laddr: Option<SocketAddr>) -> Registration {
        let now = Instant::now();
        let handle = Arc::new(ClientHandle {
            id,
            addr,
            laddr,
            connected_at: now,
            name: Mutex::new(None),
            last_command: AtomicUsize::new(COMMANDS.len()),
            last_active: Mutex::new(now),
            flags: AtomicU8::new(0),
            resp: AtomicU8::new(2),
            killed: AtomicBool::new(false),
            kill: Notify::new(),
            unblock: Mutex::new(None),
            unblock_notify: Notify::new(),
        });
        self.table.lock().insert(id, handle.clone());
        Registration { registry: self.clone(), handle }
    }

    /// Every connection, by id.
    pub fn all(&self) -> Vec<Arc<ClientHandle>> {
        self.table.lock().values().cloned().collect()
    }

    /// The connection with this id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientHandle>> {
        self.table.lock().get(&id).cloned()
    }

    /// Closes every connection the filter matches; returns how many.
    pub fn kill(&self, f: &KillFilter) -> usize {
        let mut n = 0;
        for h in self.all() {
            let kind_ok = match f.kind.as_deref() {
                None => true,
                Some("normal") => !h.has_flag(FLAG_PUBSUB),
                Some("pubsub") => h.has_flag(FLAG_PUBSUB),
                Some(_) => false,
            };
            let matches = f.id.is_none_or(|id| id == h.id)
                && f.addr.as_deref().is_none_or(|a| a == h.addr.to_string())
                && f.laddr.as_deref().is_none_or(|a| h.laddr.is_some_and(|l| l.to_string() == a))
                && kind_ok
                && f.skip != Some(h.id);
            if matches && !h.killed.swap(true, Ordering::AcqRel) {
                h.kill.notify_one();
                n += 1;
            }
        }
        n
    }

    /// `CLIENT UNBLOCK`: true if the connection was blocked.
    pub fn unblock(&self, id: u64, how: Unblock) -> bool {
        match self.get(id) {
            Some(h) if h.has_flag(FLAG_BLOCKED) => {
                *h.unblock.lock() = Some(how);
                h.unblock_notify.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Turns `MONITOR` on for a connection; returns its feed.
    pub fn start_monitor(&self, handle: &ClientHandle) -> broadcast::Receiver<Bytes> {
        if !handle.has_flag(FLAG_MONITOR) {
            handle.set_flag(FLAG_MONITOR, true);
            self.monitors.fetch_add(1, Ordering::Relaxed);
        }
        self.feed.subscribe()
    }

    /// Turns `MONITOR` off (`RESET`).
    pub fn stop_monitor(&self, handle: &ClientHandle) {
        if handle.has_flag(FLAG_MONITOR) {
            handle.set_flag(FLAG_MONITOR, false);
            self.monitors.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether anyone monitors (so that callers format lines only then).
    pub fn monitored(&self) -> bool {
        self.monitors.load(Ordering::Relaxed) > 0
    }

    /// Sends one command to every monitor, as Redis prints it:
    /// `+1339518083.107412 [0 127.0.0.1:60866] "set" "k" "v"`.
    pub fn feed(&self, addr: &SocketAddr, args: &[Bytes]) {
        if !self.monitored() {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut line = format!("+{}.{:06} [0 {addr}]", now.as_secs(), now.subsec_micros());
        for a in redacted(args) {
            line.push(' ');
            repr(&mut line, &a);
        }
        line.push_str("\r\n");
        let _ = self.feed.send(Bytes::from(line));
    }

    /// Counts one executed command and, if it was slow enough, logs it.
    pub fn record(&self, index: usize, micros: u64, failed: bool, args: &[Bytes], handle: &ClientHandle) {
        let s = &self.stats[index.min(self.stats.len() - 1)];
        s.calls.fetch_add(1, Ordering::Relaxed);
        s.micros.fetch_add(micros, Ordering::Relaxed);
        if failed {
            s.failed.fetch_add(1, Ordering::Relaxed);
        }
        let threshold = self.slower_than_us.load(Ordering::Relaxed);
        if threshold < 0 || micros < threshold as u64 || index >= COMMANDS.len() {
            return;
        }
        let max_len = self.slowlog_max_len.load(Ordering::Relaxed);
        let mut kept: Vec<Bytes> = redacted(args)
            .into_iter()
            .take(SLOWLOG_ARGS_MAX)
            .map(|a| {
                if a.len() > SLOWLOG_ARG_BYTES_MAX {
                    let mut v = a[..SLOWLOG_ARG_BYTES_MAX].to_vec();
                    v.extend_from_slice(format!("... ({} more bytes)", a.len() - SLOWLOG_ARG_BYTES_MAX).as_bytes());
                    Bytes::from(v)
                } else {
                    a
                }
            })
            .collect();
        if args.len() > SLOWLOG_ARGS_MAX {
            kept[SLOWLOG_ARGS_MAX - 1] =
                Bytes::from(format!("... ({} more arguments)", args.len() - SLOWLOG_ARGS_MAX + 1));
        }
        let entry = SlowEntry {
            id: self.next_slow_id.fetch_add(1, Ordering::Relaxed),
            unix_secs: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            micros,
            args: kept,
            addr: handle.addr.to_string(),
            name: handle.name().unwrap_or_default(),
        };
        let mut log = self.slowlog.lock();
        log.push_front(entry);
        log.truncate(max_len);
    }

    /// The newest `count` slow-log entries (all if `None`).
    pub fn slowlog(&self, count: Option<usize>) -> Vec<SlowEntry> {
        let log = self.slowlog.lock();
        log.iter().take(count.unwrap_or(usize::MAX)).cloned().collect()
    }

    /// Entries in the slow log.
    pub fn slowlog_len(&self) -> usize {
        self.slowlog.lock().len()
    }

    /// `SLOWLOG RESET`.
    pub fn slowlog_reset(&self) {
        self.slowlog.lock().clear();
    }

    /// Applies a new `slowlog-max-len` at once.
    pub fn set_slowlog_max_len(&self, n: usize) {
        self.slowlog_max_len.store(n, Ordering::Relaxed);
        self.slowlog.lock().truncate(n);
    }

    /// `CONFIG RESETSTAT`: zeroes the command counters.
    pub fn reset_stats(&self) {
        for s in &self.stats {
            s.calls.store(0, Ordering::Relaxed);
            s.micros.store(0, Ordering::Relaxed);
            s.failed.store(0, Ordering::Relaxed);
        }
    }

    /// The `# Commandstats` section of `INFO`.
    pub fn commandstats(&self) -> String {
        let mut out = String::from("# Commandstats\r\n");
        for (spec, s) in COMMANDS.iter().zip(&self.stats) {
            let calls = s.calls.load(Ordering::Relaxed);
            if calls == 0 {
                continue;
            }
            let micros = s.micros.load(Ordering::Relaxed);
            let _ = write!(
                out,
                "cmdstat_{}:calls={calls},usec={micros},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
                spec.name,
                micros as f64 / calls as f64,
                s.failed.load(Ordering::Relaxed),
            );
        }
        out.push_str("\r\n");
        out
    }
}

/// The arguments as the feed and the slow log may show them: `AUTH` and
/// `HELLO .. AUTH` passwords replaced by `(redacted)`.
fn redacted(args: &[Bytes]) -> Vec<Bytes> {
    let hidden = Bytes::from_static(b"(redacted)");
    let name = args.first().map(|a| a.to_ascii_lowercase()).unwrap_or_default();
    match &name[..] {
        b"auth" => args.iter().enumerate().map(|(i, a)| if i == 0 { a.clone() } else { hidden.clone() }).collect(),
        b"hello" => {
            let mut out = args.to_vec();
            for i in 1..out.len() {
                if out[i - 1].eq_ignore_ascii_case(b"auth") {
                    // HELLO 3 AUTH user pass: hide the password (and user).
                    out[i] = hidden.clone();
                    if i + 1 < out.len() {
                        out[i + 1] = hidden.clone();
                    }
                }
            }
            out
        }
        _ => args.to_vec(),
    }
}

/// Quotes `bytes` as Redis's `sdscatrepr` does.
fn repr(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            7 => out.push_str("\\a"),
            8 => out.push_str("\\b"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
}

/// `used_cpu_sys` and `used_cpu_user` of this process, seconds.
pub fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(ru.ru_stime), secs(ru.ru_utime))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(reg: &Arc<Clients>, id: u64) -> Registration {
        reg.register(id, format!("127.0.0.1:{}", 1000 + id).parse().unwrap(), None)
    }

    #[test]
    fn monitor_lines_quote_like_redis_and_never_show_a_password() {
        let mut s = String::new();
        repr(&mut s, b"a\"b\\c\n\x01 ");
        assert_eq!(s, r#""a\"b\\c\n\x01 ""#);
        let args = [Bytes::from_static(b"AUTH"), Bytes::from_static(b"secret")];
        assert_eq!(redacted(&args)[1], Bytes::from_static(b"(redacted)"));
        let hello: Vec<Bytes> =
            ["HELLO", "3", "AUTH", "default", "pw"].iter().map(|s| Bytes::from(s.to_string())).collect();
        assert!(!redacted(&hello).iter().any(|a| &a[..] == b"pw"));
    }

    #[test]
    fn slowlog_keeps_the_newest_entries_up_to_its_length_with_truncated_arguments() {
        let reg = Arc::new(Clients::new());
        let r = handle(&reg, 1);
        reg.slower_than_us.store(0, Ordering::Relaxed);
        reg.set_slowlog_max_len(2);
        let set = command_index("set");
        for i in 0..3u64 {
            let big = Bytes::from(vec![b'x'; 200]);
            reg.record(set, i, false, &[Bytes::from_static(b"set"), Bytes::from(i.to_string()), big], &r.handle);
        }
        let log = reg.slowlog(None);
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].id, 2);
        assert!(log[0].args[2].ends_with(b"... (72 more bytes)"));
        let many: Vec<Bytes> = (0..40).map(|i| Bytes::from(i.to_string())).collect();
        reg.record(set, 5, false, &many, &r.handle);
        let e = &reg.slowlog(Some(1))[0];
        assert_eq!(e.args.len(), SLOWLOG_ARGS_MAX);
        assert_eq!(&e.args[SLOWLOG_ARGS_MAX - 1][..], b"... (9 more arguments)");
        reg.slower_than_us.store(-1, Ordering::Relaxed);
        reg.record(set, 1_000_000, false, &many, &r.handle);
        assert_eq!(reg.slowlog_len(), 2);
    }

    #[test]
    fn kill_matches_filters_and_skips_the_caller_and_a_dropped_client_leaves_the_list() {
        let reg = Arc::new(Clients::new());
        let a = handle(&reg, 1);
        let b = handle(&reg, 2);
        assert_eq!(reg.kill(&KillFilter { skip: Some(1), ..Default::default() }), 1);
        assert!(b.handle.is_killed() && !a.handle.is_killed());
        assert_eq!(reg.kill(&KillFilter { addr: Some("127.0.0.1:1001".into()), ..Default::default() }), 1);
        drop(b);
        assert_eq!(reg.all().len(), 1);
    }

    fn command_index(name: &str) -> usize {
        COMMANDS.iter().position(|c| c.name == name).unwrap()
    }
}
