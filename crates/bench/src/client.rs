//! What one client task does: preload a share of the keyspace, then keep
//! `pipeline` operations in flight until the run's budget or deadline is
//! spent, timing each operation from send to (last) reply.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use tandem_core::resp::Frame;

use crate::conn::Conn;
use crate::mix::{Mix, Op};
use crate::rng::SplitMix64;
use crate::BenchError;

/// Latency samples are nanoseconds; slower than this is recorded as this.
pub(crate) const LATENCY_NS_MAX: u64 = 120_000_000_000;
/// Significant digits kept by the latency histograms.
const LATENCY_SIGFIG: u8 = 3;
/// Preload sends at least this many SETs per round trip, whatever the
/// pipeline option, so filling a large keyspace does not take long.
const PRELOAD_BATCH_MIN: u64 = 64;
/// Digits of the number in `key:NNNNNNNNNNNN` (like redis-benchmark).
pub(crate) const KEY_DIGITS: usize = 12;
/// Error kind counted when `WAIT` answers fewer replicas than asked (only
/// possible with a non-zero WAIT timeout).
pub(crate) const WAIT_SHORT: &str = "WAIT_SHORT";

/// What every client of a run shares read-only.
pub(crate) struct Plan {
    pub(crate) mix: Mix,
    pub(crate) pipeline: usize,
    pub(crate) keyspace: u64,
    pub(crate) value: Bytes,
    pub(crate) seed: u64,
    /// `WAIT`'s timeout argument, as text.
    pub(crate) wait_timeout_ms: Vec<u8>,
}

/// Counters every client updates; read by the progress loop.
#[derive(Default)]
pub(crate) struct Shared {
    /// Requests still to send in request-count mode.
    pub(crate) budget: AtomicU64,
    /// Measured operations completed so far.
    pub(crate) measured_ops: AtomicU64,
    /// Warmup operations completed so far.
    pub(crate) warmup_ops: AtomicU64,
    /// Measured operations that got an error reply.
    pub(crate) errors: AtomicU64,
    /// Keys preloaded so far, and the next key to hand out for preloading.
    pub(crate) preloaded: AtomicU64,
    pub(crate) preload_next: AtomicU64,
    /// Set when the run should wind down early.
    pub(crate) stop: AtomicBool,
}

impl Shared {
    fn take_budget(&self) -> bool {
        self.budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(1)).is_ok()
    }
}

/// When measuring starts and, in duration mode, when sending stops.
#[derive(Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) measure_from: Instant,
    pub(crate) send_until: Option<Instant>,
}

/// One client's results, merged into the report at the end.
pub(crate) struct Tally {
    /// Per mix entry: latency of measured operations, in nanoseconds.
    pub(crate) latency_ns: Vec<Histogram<u32>>,
    pub(crate) ops: Vec<u64>,
    pub(crate) errors: Vec<u64>,
    /// Error replies by their first word (`READONLY`, `NOREPLICAS`, ..).
    pub(crate) errors_by_kind: HashMap<String, u64>,
}

impl Tally {
    fn new(entries: usize) -> Tally {
        Tally {
            latency_ns: (0..entries).map(|_| new_histogram()).collect(),
            ops: vec![0; entries],
            errors: vec![0; entries],
            errors_by_kind: HashMap::new(),
        }
    }
}

pub(crate) fn new_histogram<T: hdrhistogram::Counter>() -> Histogram<T> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGFIG).expect("constant histogram bounds are valid")
}

/// An operation sent and not yet fully answered.
struct InFlight {
    sent_at: Instant,
    entry: usize,
    op: Op,
    replies_left: u8,
    measured: bool,
    /// Kind of the first error reply this operation got.
    error: Option<String>,
}

/// Writes `prefix` + the key number zero-padded to [`KEY_DIGITS`] into `buf`.
fn key_text<'a>(prefix: &[u8], mut number: u64, buf: &'a mut [u8; 32]) -> &'a [u8] {
    let len = prefix.len() + KEY_DIGITS;
    buf[..prefix.len()].copy_from_slice(prefix);
    for slot in buf[prefix.len()..len].iter_mut().rev() {
        *slot = b'0' + (number % 10) as u8;
        number /= 10;
    }
    &buf[..len]
}

/// `number` in decimal, written into `buf` without allocating.
fn decimal(mut number: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            return &buf[start..];
        }
    }
}

/// SETs keys handed out in batches from `shared.preload_next` until the
/// keyspace is covered. Any error reply stops the run: a GET benchmark on a
/// half-filled keyspace would measure the wrong thing.
pub(crate) async fn preload(mut conn: Conn, plan: Arc<Plan>, shared: Arc<Shared>) -> Result<Conn, BenchError> {
    let batch = (plan.pipeline as u64).max(PRELOAD_BATCH_MIN);
    let mut key_buf = [0u8; 32];
    loop {
        let first = shared.preload_next.fetch_add(batch, Ordering::Relaxed);
        if first >= plan.keyspace || shared.stop.load(Ordering::Relaxed) {
            return Ok(conn);
        }
        let end = (first + batch).min(plan.keyspace);
        for number in first..end {
            let key = key_text(b"key:", number, &mut key_buf);
            conn.queue(&[b"SET", key, &plan.value]);
        }
        let mut left = end - first;
        while left > 0 {
            match conn.next_reply()? {
                Some(Frame::Error(message)) => {
                    return Err(BenchError::Preload { addr: conn.addr().to_string(), message })
                }
                Some(_) => left -= 1,
                None => conn.pump().await?,
            }
        }
        shared.preloaded.fetch_add(end - first, Ordering::Relaxed);
    }
}

/// The measured run for one connection.
pub(crate) async fn bench(
    mut conn: Conn,
    index: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    timing: Timing,
) -> Result<Tally, BenchError> {
    let mut rng = SplitMix64::for_client(plan.seed, index);
    let mut tally = Tally::new(plan.mix.entries.len());
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(plan.pipeline);
    let mut sending = true;
    loop {
        while sending && in_flight.len() < plan.pipeline {
            let now = Instant::now();
            let measured = match may_send(now, &timing, &shared) {
                Some(measured) => measured,
                None => {
                    sending = false;
                    break;
                }
            };
            let entry = plan.mix.pick(rng.below(plan.mix.total_weight()));
            let op = plan.mix.entries[entry].op;
            send(&mut conn, &plan, op, &mut rng);
            in_flight.push_back(InFlight {
                sent_at: now,
                entry,
                op,
                replies_left: op.replies(),
                measured,
                error: None,
            });
        }
        if in_flight.is_empty() {
            return Ok(tally);
        }
        conn.pump().await?;
        let now = Instant::now();
        let (mut measured_done, mut warmup_done, mut errors) = (0, 0, 0);
        while let Some(reply) = conn.next_reply()? {
            let Some(op) = in_flight.front_mut() else {
                return Err(BenchError::UnexpectedReply { addr: conn.addr().to_string(), reply: format!("{reply:?}") });
            };
            op.replies_left -= 1;
            if op.error.is_none() {
                op.error = error_kind(&reply, op.op, op.replies_left);
            }
            if op.replies_left > 0 {
                continue;
            }
            let op = in_flight.pop_front().expect("front exists");
            if !op.measured {
                warmup_done += 1;
                continue;
            }
            let latency_ns = now.duration_since(op.sent_at).as_nanos();
            let latency_ns = u64::try_from(latency_ns).unwrap_or(u64::MAX).clamp(1, LATENCY_NS_MAX);
            tally.latency_ns[op.entry].saturating_record(latency_ns);
            tally.ops[op.entry] += 1;
            measured_done += 1;
            if let Some(kind) = op.error {
                tally.errors[op.entry] += 1;
                *tally.errors_by_kind.entry(kind).or_default() += 1;
                errors += 1;
            }
        }
        shared.measured_ops.fetch_add(measured_done, Ordering::Relaxed);
        shared.warmup_ops.fetch_add(warmup_done, Ordering::Relaxed);
        shared.errors.fetch_add(errors, Ordering::Relaxed);
    }
}

/// `Some(measured?)` if another operation may be sent now, `None` when this
/// client is done sending.
fn may_send(now: Instant, timing: &Timing, shared: &Shared) -> Option<bool> {
    if shared.stop.load(Ordering::Relaxed) {
        return None;
    }
    if now < timing.measure_from {
        return Some(false);
    }
    match timing.send_until {
        Some(until) => (now < until).then_some(true),
        None => shared.take_budget().then_some(true),
    }
}

fn send(conn: &mut Conn, plan: &Plan, op: Op, rng: &mut SplitMix64) {
    let mut key_buf = [0u8; 32];
    match op {
        Op::Set => {
            let key = key_text(b"key:", rng.below(plan.keyspace), &mut key_buf);
            conn.queue(&[b"SET", key, &plan.value]);
        }
        Op::Get => {
            let key = key_text(b"key:", rng.below(plan.keyspace), &mut key_buf);
            conn.queue(&[b"GET", key]);
        }
        Op::Incr => {
            let key = key_text(b"counter:", rng.below(plan.keyspace), &mut key_buf);
            conn.queue(&[b"INCR", key]);
        }
        Op::Ping => conn.queue(&[b"PING"]),
        Op::SetWait { replicas } => {
            let key = key_text(b"key:", rng.below(plan.keyspace), &mut key_buf);
            conn.queue(&[b"SET", key, &plan.value]);
            let mut digits = [0u8; 20];
            let replicas = decimal(u64::from(replicas), &mut digits);
            conn.queue(&[b"WAIT", replicas, &plan.wait_timeout_ms]);
        }
    }
}

/// The error kind a reply stands for, if it is an error: the first word of
/// an error reply, or [`WAIT_SHORT`] for a WAIT that reached too few replicas.
fn error_kind(reply: &Frame, op: Op, replies_left: u8) -> Option<String> {
    match (reply, op) {
        (Frame::Error(message), _) => {
            let kind = message.split_whitespace().next().unwrap_or("ERR");
            Some(kind.to_string())
        }
        (Frame::Integer(acked), Op::SetWait { replicas }) if replies_left == 0 => {
            (*acked < i64::from(replicas)).then(|| WAIT_SHORT.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_like_redis_benchmark() {
        let mut buf = [0u8; 32];
        assert_eq!(key_text(b"key:", 42, &mut buf), b"key:000000000042");
        assert_eq!(key_text(b"counter:", 999_999_999_999, &mut buf), b"counter:999999999999");
        let mut digits = [0u8; 20];
        assert_eq!(decimal(0, &mut digits), b"0");
        assert_eq!(decimal(u64::MAX, &mut digits), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn errors_are_counted_by_their_first_word() {
        let readonly = Frame::Error("READONLY You can't write against a read only replica.".into());
        assert_eq!(error_kind(&readonly, Op::Set, 0).as_deref(), Some("READONLY"));
        assert_eq!(error_kind(&Frame::Error(String::new()), Op::Set, 0).as_deref(), Some("ERR"));
        assert_eq!(error_kind(&Frame::ok(), Op::Set, 0), None);
        let wait = Op::SetWait { replicas: 2 };
        assert_eq!(error_kind(&Frame::Integer(1), wait, 0).as_deref(), Some(WAIT_SHORT));
        assert_eq!(error_kind(&Frame::Integer(2), wait, 0), None);
    }
}
