//! The data commands of a multi-leader keyspace: turns one client command
//! and the local versions of its keys into a reply and the new versions of
//! the keys it wrote (each a whole per-key state, merged locally and
//! shipped to the other nodes).
//!
//! Pure: time comes in as `now_ms`, timestamps from the caller's
//! [`HlcClock`]. Never decides durability or replication; never panics on
//! client input (every parse failure is an error reply).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::conflict::crdt::{format_float, number_with_counter};
use crate::conflict::{
    CrdtKind, CrdtValue, Hlc, HlcClock, KeyValue, LwwReg, MvReg, StrVal, VersionVector, SIBLINGS_PER_KEY_MAX,
};
use crate::keyspace::ConflictPolicy;
use crate::repl::NodeId;
use crate::resp::Frame;

/// Most elements (set members, hash fields, sorted-set members) one key of
/// a `crdt` keyspace may hold. Every write ships the key's whole state, so
/// this also bounds what one write sends.
pub const COLLECTION_ELEMENTS_MAX: usize = 10_000;

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const SYNTAX: &str = "ERR syntax error";

/// What one command did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOut {
    /// The reply (released once `writes` are durable).
    pub reply: Frame,
    /// New versions of the keys written, in argument order.
    pub writes: Vec<(Bytes, KeyValue)>,
}

impl ExecOut {
    fn read(reply: Frame) -> ExecOut {
        ExecOut { reply, writes: Vec::new() }
    }
}

/// The context of one command.
pub struct Ctx<'a> {
    /// The keyspace's name (for error texts).
    pub keyspace: &'a str,
    /// Its conflict policy.
    pub policy: ConflictPolicy,
    /// This node.
    pub node: NodeId,
    /// Wall time, unix ms.
    pub now_ms: u64,
    /// The node's HLC for this keyspace (ticked once per writing command).
    pub hlc: &'a mut HlcClock,
    /// The local versions of the keys.
    pub keys: &'a BTreeMap<Bytes, KeyValue>,
}

fn name_of(args: &[Bytes]) -> String {
    String::from_utf8_lossy(&args[0]).to_ascii_uppercase()
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    let v: f64 = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => s.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

fn arity(args: &[Bytes], min: usize) -> Result<(), Frame> {
    if args.len() < min {
        return Err(Frame::error(format!(
            "ERR wrong number of arguments for '{}' command",
            name_of(args).to_lowercase()
        )));
    }
    Ok(())
}

/// Runs one command. `args[0]` is the command name.
pub fn execute(ctx: &mut Ctx<'_>, args: &[Bytes]) -> ExecOut {
    if args.is_empty() {
        return ExecOut::read(Frame::error("ERR empty command"));
    }
    let r = match ctx.policy {
        ConflictPolicy::Crdt => crdt(ctx, args),
        ConflictPolicy::Lww | ConflictPolicy::Siblings => strings(ctx, args),
    };
    r.unwrap_or_else(ExecOut::read)
}

fn unsupported(ctx: &Ctx<'_>, args: &[Bytes]) -> Frame {
    let hint = match ctx.policy {
        ConflictPolicy::Crdt => "it has no conflict-free merge here",
        _ => "only string commands (GET SET DEL EXISTS EXPIRE TTL TYPE) have a merge under this policy; use --conflict crdt for counters, sets, hashes and sorted sets",
    };
    Frame::error(format!(
        "ERR {} is not supported in keyspace '{}' (multi-leader, conflict {}): {hint}",
        name_of(args),
        ctx.keyspace,
        ctx.policy
    ))
}

/// `SET key value [EX s | PX ms]`: the absolute expiry, if any.
fn set_expiry(now_ms: u64, opts: &[Bytes]) -> Result<Option<u64>, Frame> {
    let mut at = None;
    let mut i = 0;
    while i < opts.len() {
        let o = String::from_utf8_lossy(&opts[i]).to_ascii_uppercase();
        let unit = match o.as_str() {
            "EX" => 1000,
            "PX" => 1,
            _ => return Err(Frame::error(SYNTAX)),
        };
        let n = opts.get(i + 1).and_then(|b| parse_i64(b)).ok_or_else(|| Frame::error(NOT_INTEGER))?;
        if n <= 0 {
            return Err(Frame::error("ERR invalid expire time in 'set' command"));
        }
        at = Some(now_ms.saturating_add((n as u64).saturating_mul(unit)));
        i += 2;
    }
    Ok(at)
}

fn ttl_reply(at: Option<u64>, now_ms: u64, live: bool) -> Frame {
    match (live, at) {
        (false, _) => Frame::Integer(-2),
        (true, None) => Frame::Integer(-1),
        (true, Some(at)) => Frame::Integer((at.saturating_sub(now_ms).saturating_add(500) / 1000) as i64),
    }
}

fn str_live(v: &StrVal, now_ms: u64) -> bool {
    v.value.is_some() && v.expire_at_ms.is_none_or(|at| at > now_ms)
}

/// Encodes a causal context as `node:counter,node:counter`.
pub fn encode_context(vv: &VersionVector) -> String {
    vv.0.iter().map(|(n, c)| format!("{n}:{c}")).collect::<Vec<_>>().join(",")
}

/// Parses a context written by [`encode_context`].
pub fn parse_context(b: &[u8]) -> Option<VersionVector> {
    let s = std::str::from_utf8(b).ok()?;
    let mut vv = VersionVector::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (n, c) = part.split_once(':')?;
        vv.observe(n.trim().parse().ok()?, c.trim().parse().ok()?);
    }
    Some(vv)
}

// ---- lww and siblings: strings only ----

/// The live values of a string key (lww: at most one; siblings: all
/// surviving siblings, `None` for a deleted or expired one) and its
/// context.
fn sibling_values(kv: Option<&KeyValue>, now_ms: u64) -> (Vec<Option<Bytes>>, VersionVector) {
    match kv {
        Some(KeyValue::Lww(r)) => {
            let v = r.get().filter(|v| str_live(v, now_ms)).and_then(|v| v.value.clone());
            (if v.is_some() { vec![v] } else { vec![] }, r.clock.clone())
        }
        Some(KeyValue::Siblings(m)) => {
            let vals: Vec<Option<Bytes>> =
                m.sibs.iter().map(|s| if str_live(&s.value, now_ms) { s.value.value.clone() } else { None }).collect();
            if vals.iter().all(|v| v.is_none()) {
                (vec![], m.clock.clone())
            } else {
                (vals, m.clock.clone())
            }
        }
        _ => (vec![], VersionVector::new()),
    }
}

fn the_value(ctx: &Ctx<'_>, key: &Bytes) -> Result<Option<(Bytes, Option<u64>)>, Frame> {
    match ctx.keys.get(key) {
        Some(KeyValue::Lww(r)) => Ok(r
            .get()
            .filter(|v| str_live(v, ctx.now_ms))
            .map(|v| (v.value.clone().unwrap_or_default(), v.expire_at_ms))),
        Some(KeyValue::Siblings(m)) => {
            let live: Vec<&StrVal> = m.sibs.iter().map(|s| &s.value).filter(|v| str_live(v, ctx.now_ms)).collect();
            if live.is_empty() {
                return Ok(None);
            }
            if m.sibs.len() > 1 {
                return Err(Frame::error(format!(
                    "CONFLICT {} has {} siblings; read them with SIBLINGS",
                    String::from_utf8_lossy(key),
                    m.sibs.len()
                )));
            }
            Ok(Some((live[0].value.clone().unwrap_or_default(), live[0].expire_at_ms)))
        }
        _ => Ok(None),
    }
}

/// Writes `val` to a string key with `context` (siblings) or over
/// everything (lww).
fn write_str(ctx: &mut Ctx<'_>, key: &Bytes, context: Option<&VersionVector>, val: StrVal) -> Result<KeyValue, Frame> {
    let hlc = ctx.hlc.tick(ctx.now_ms);
    match ctx.policy {
        ConflictPolicy::Lww => {
            let mut r = match ctx.keys.get(key) {
                Some(KeyValue::Lww(r)) => r.clone(),
                _ => LwwReg::default(),
            };
            r.write(ctx.node, hlc, val);
            Ok(KeyValue::Lww(r))
        }
        _ => {
            let mut m = match ctx.keys.get(key) {
                Some(KeyValue::Siblings(m)) => m.clone(),
                _ => MvReg::default(),
            };
            let full = m.clock.clone();
            m.write(ctx.node, context.unwrap_or(&full), hlc, val);
            if m.sibs.len() > SIBLINGS_PER_KEY_MAX {
                return Err(Frame::error(format!(
                    "ERR {} would hold {} siblings, past the limit of {SIBLINGS_PER_KEY_MAX} (SIBLINGS_PER_KEY_MAX); read them with SIBLINGS and RESOLVE with their context",
                    String::from_utf8_lossy(key),
                    m.sibs.len()
                )));
            }
            Ok(KeyValue::Siblings(m))
        }
    }
}

fn strings(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<ExecOut, Frame> {
    let now = ctx.now_ms;
    match name_of(args).as_str() {
        "GET" => {
            arity(args, 2)?;
            Ok(ExecOut::read(the_value(ctx, &args[1])?.map_or(Frame::Null, |(v, _)| Frame::Bulk(v))))
        }
        "SET" => {
            arity(args, 3)?;
            let at = set_expiry(now, &args[3..])?;
            let kv = write_str(ctx, &args[1], None, StrVal { value: Some(args[2].clone()), expire_at_ms: at })?;
            Ok(ExecOut { reply: Frame::ok(), writes: vec![(args[1].clone(), kv)] })
        }
        "DEL" => {
            arity(args, 2)?;
            let mut writes = Vec::new();
            for key in &args[1..] {
                if !sibling_values(ctx.keys.get(key), now).0.is_empty() && !writes.iter().any(|(k, _)| k == key) {
                    let kv = write_str(ctx, key, None, StrVal { value: None, expire_at_ms: None })?;
                    writes.push((key.clone(), kv));
                }
            }
            Ok(ExecOut { reply: Frame::Integer(writes.len() as i64), writes })
        }
        "EXISTS" => {
            arity(args, 2)?;
            let n = args[1..].iter().filter(|k| !sibling_values(ctx.keys.get(*k), now).0.is_empty()).count();
            Ok(ExecOut::read(Frame::Integer(n as i64)))
        }
        "EXPIRE" | "PEXPIRE" => {
            arity(args, 3)?;
            let unit = if name_of(args) == "EXPIRE" { 1000 } else { 1 };
            let n = parse_i64(&args[2]).ok_or_else(|| Frame::error(NOT_INTEGER))?;
            let Some((v, _)) = the_value(ctx, &args[1])? else {
                return Ok(ExecOut::read(Frame::Integer(0)));
            };
            let val = if n <= 0 {
                StrVal { value: None, expire_at_ms: None }
            } else {
                StrVal { value: Some(v), expire_at_ms: Some(now.saturating_add((n as u64).saturating_mul(unit))) }
            };
            let kv = write_str(ctx, &args[1], None, val)?;
            Ok(ExecOut { reply: Frame::Integer(1), writes: vec![(args[1].clone(), kv)] })
        }
        "TTL" | "PTTL" => {
            arity(args, 2)?;
            let v = the_value(ctx, &args[1])?;
            let f = ttl_reply(v.as_ref().and_then(|(_, at)| *at), now, v.is_some());
            Ok(ExecOut::read(match (name_of(args).as_str(), f) {
                ("PTTL", Frame::Integer(s)) if s >= 0 => {
                    Frame::Integer(v.and_then(|(_, at)| at).map_or(-1, |at| at.saturating_sub(now) as i64))
                }
                (_, f) => f,
            }))
        }
        "TYPE" => {
            arity(args, 2)?;
            let live = !sibling_values(ctx.keys.get(&args[1]), now).0.is_empty();
            Ok(ExecOut::read(Frame::Simple(Bytes::from_static(if live { b"string" } else { b"none" }))))
        }
        "SIBLINGS" => {
            arity(args, 2)?;
            if ctx.policy != ConflictPolicy::Siblings {
                return Err(needs_siblings(ctx, args));
            }
            let (vals, vv) = sibling_values(ctx.keys.get(&args[1]), now);
            let mut out = vec![Frame::Bulk(Bytes::from(encode_context(&vv)))];
            out.extend(vals.into_iter().map(|v| v.map_or(Frame::Null, Frame::Bulk)));
            Ok(ExecOut::read(Frame::Array(out)))
        }
        "RESOLVE" => {
            arity(args, 4)?;
            if ctx.policy != ConflictPolicy::Siblings {
                return Err(needs_siblings(ctx, args));
            }
            let context = parse_context(&args[2]).ok_or_else(|| {
                Frame::error("ERR invalid context: pass the first element of the SIBLINGS reply (node:counter,..)")
            })?;
            let kv =
                write_str(ctx, &args[1], Some(&context), StrVal { value: Some(args[3].clone()), expire_at_ms: None })?;
            Ok(ExecOut { reply: Frame::ok(), writes: vec![(args[1].clone(), kv)] })
        }
        _ => Err(unsupported(ctx, args)),
    }
}

fn needs_siblings(ctx: &Ctx<'_>, args: &[Bytes]) -> Frame {
    Frame::error(format!(
        "ERR {} needs a keyspace with --conflict siblings; keyspace '{}' uses conflict {}",
        name_of(args),
        ctx.keyspace,
        ctx.policy
    ))
}

// ---- crdt ----

/// The local state of a `crdt` key for reading (`None` if absent or
/// expired).
fn crdt_read<'k>(ctx: &'k Ctx<'_>, key: &Bytes) -> Option<&'k CrdtValue> {
    match ctx.keys.get(key) {
        Some(KeyValue::Crdt(c)) if c.kind(ctx.now_ms).is_some() => Some(c),
        _ => None,
    }
}

/// The local state of a `crdt` key to write to, with what has expired
/// removed first (as if deleted when it expired), and the write's HLC.
fn crdt_write(ctx: &mut Ctx<'_>, key: &Bytes) -> (CrdtValue, Hlc) {
    let hlc = ctx.hlc.tick(ctx.now_ms);
    let mut c = match ctx.keys.get(key) {
        Some(KeyValue::Crdt(c)) => (**c).clone(),
        _ => CrdtValue::default(),
    };
    if c.expired(ctx.now_ms) {
        c.delete_observed(ctx.node, hlc);
    }
    (c, hlc)
}

fn expect_kind(ctx: &Ctx<'_>, key: &Bytes, want: CrdtKind) -> Result<(), Frame> {
    match crdt_read(ctx, key).and_then(|c| c.kind(ctx.now_ms)) {
        None => Ok(()),
        Some(k) if k == want => Ok(()),
        Some(_) => Err(Frame::error(WRONGTYPE)),
    }
}

fn too_many(key: &Bytes) -> Frame {
    Frame::error(format!(
        "ERR {} would hold more than {COLLECTION_ELEMENTS_MAX} elements (COLLECTION_ELEMENTS_MAX of a crdt keyspace)",
        String::from_utf8_lossy(key)
    ))
}

fn one(key: &Bytes, c: CrdtValue, reply: Frame) -> ExecOut {
    ExecOut { reply, writes: vec![(key.clone(), KeyValue::Crdt(Box::new(c)))] }
}

fn field_value(f: &crate::conflict::types::MapField) -> Bytes {
    let base = f.reg.get().cloned().flatten();
    if f.ctr.active() {
        number_with_counter(base.as_deref(), &f.ctr)
    } else {
        base.unwrap_or_default()
    }
}

fn score_of(f: &crate::conflict::types::MapField) -> f64 {
    let base = f.reg.get().cloned().flatten();
    let b = base.as_deref().and_then(parse_f64).unwrap_or(0.0);
    b + f.ctr.int_value() as f64 + f.ctr.float_value()
}

fn crdt(ctx: &mut Ctx<'_>, args: &[Bytes]) -> Result<ExecOut, Frame> {
    let now = ctx.now_ms;
    let node = ctx.node;
    let cmd = name_of(args);
    match cmd.as_str() {
        "GET" => {
            arity(args, 2)?;
            match crdt_read(ctx, &args[1]) {
                None => Ok(ExecOut::read(Frame::Null)),
                Some(c) if c.kind(now) == Some(CrdtKind::String) => {
                    Ok(ExecOut::read(c.string_value().map_or(Frame::Null, Frame::Bulk)))
                }
                Some(_) => Err(Frame::error(WRONGTYPE)),
            }
        }
        "SET" => {
            arity(args, 3)?;
            let at = set_expiry(now, &args[3..])?;
            let (mut c, hlc) = crdt_write(ctx, &args[1]);
            if c.kind(now).is_some_and(|k| k != CrdtKind::String) {
                c.delete_observed(node, hlc);
            }
            c.reg.write(node, hlc, Some(args[2].clone()));
            c.ctr.reset_observed();
            c.set_expiry(node, hlc, at);
            Ok(one(&args[1], c, Frame::ok()))
        }
        "DEL" => {
            arity(args, 2)?;
            let mut writes = Vec::new();
            for key in &args[1..] {
                if crdt_read(ctx, key).is_some() && !writes.iter().any(|(k, _)| k == key) {
                    let (mut c, hlc) = crdt_write(ctx, key);
                    c.delete_observed(node, hlc);
                    writes.push((key.clone(), KeyValue::Crdt(Box::new(c))));
                }
            }
            Ok(ExecOut { reply: Frame::Integer(writes.len() as i64), writes })
        }
        "EXISTS" => {
            arity(args, 2)?;
            let n = args[1..].iter().filter(|k| crdt_read(ctx, k).is_some()).count();
            Ok(ExecOut::read(Frame::Integer(n as i64)))
        }
        "TYPE" => {
            arity(args, 2)?;
            let t: &'static [u8] = match crdt_read(ctx, &args[1]).and_then(|c| c.kind(now)) {
                None => b"none",
                Some(CrdtKind::String) => b"string",
                Some(CrdtKind::Hash) => b"hash",
                Some(CrdtKind::Set) => b"set",
                Some(CrdtKind::ZSet) => b"zset",
            };
            Ok(ExecOut::read(Frame::Simple(Bytes::from_static(t))))
        }
        "EXPIRE" | "PEXPIRE" => {
            arity(args, 3)?;
            let unit = if cmd == "EXPIRE" { 1000 } else { 1 };
            let n = parse_i64(&args[2]).ok_or_else(|| Frame::error(NOT_INTEGER))?;
            if crdt_read(ctx, &args[1]).is_none() {
                return Ok(ExecOut::read(Frame::Integer(0)));
            }
            let (mut c, hlc) = crdt_write(ctx, &args[1]);
            if n <= 0 {
                c.delete_observed(node, hlc);
            } else {
                c.set_expiry(node, hlc, Some(now.saturating_add((n as u64).saturating_mul(unit))));
            }
            Ok(one(&args[1], c, Frame::Integer(1)))
        }
        "TTL" | "PTTL" => {
            arity(args, 2)?;
            let c = crdt_read(ctx, &args[1]);
            let at = c.and_then(|c| c.expire_at_ms());
            Ok(ExecOut::read(match (cmd.as_str(), c, at) {
                ("PTTL", Some(_), Some(at)) => Frame::Integer(at.saturating_sub(now) as i64),
                _ => ttl_reply(at, now, c.is_some()),
            }))
        }
        "INCR" | "DECR" | "INCRBY" | "DECRBY" => {
            let by = match cmd.as_str() {
                "INCR" => {
                    arity(args, 2)?;
                    1
                }
                "DECR" => {
                    arity(args, 2)?;
                    -1
                }
                _ => {
                    arity(args, 3)?;
                    let n = parse_i64(&args[2]).ok_or_else(|| Frame::error(NOT_INTEGER))?;
                    if cmd == "DECRBY" {
                        n.checked_neg().ok_or_else(|| Frame::error(NOT_INTEGER))?
                    } else {
                        n
                    }
                }
            };
            expect_kind(ctx, &args[1], CrdtKind::String)?;
            let cur = match crdt_read(ctx, &args[1]).and_then(|c| c.string_value()) {
                None => 0,
                Some(v) => parse_i64(&v).ok_or_else(|| Frame::error(NOT_INTEGER))?,
            };
            let new = cur.checked_add(by).ok_or_else(|| Frame::error("ERR increment or decrement would overflow"))?;
            let (mut c, _) = crdt_write(ctx, &args[1]);
            c.ctr.add(node, by).map_err(|_| Frame::error("ERR increment or decrement would overflow"))?;
            Ok(one(&args[1], c, Frame::Integer(new)))
        }
        "INCRBYFLOAT" => {
            arity(args, 3)?;
            let by = parse_f64(&args[2]).filter(|v| v.is_finite()).ok_or_else(|| Frame::error(NOT_FLOAT))?;
            expect_kind(ctx, &args[1], CrdtKind::String)?;
            let cur = match crdt_read(ctx, &args[1]).and_then(|c| c.string_value()) {
                None => 0.0,
                Some(v) => parse_f64(&v).ok_or_else(|| Frame::error(NOT_FLOAT))?,
            };
            if !(cur + by).is_finite() {
                return Err(Frame::error("ERR increment would produce NaN or Infinity"));
            }
            let (mut c, _) = crdt_write(ctx, &args[1]);
            c.ctr.add_float(node, by).map_err(|_| Frame::error("ERR increment would produce NaN or Infinity"))?;
            let v = c.string_value().unwrap_or_default();
            Ok(one(&args[1], c, Frame::Bulk(v)))
        }
        "SADD" | "SREM" => {
            arity(args, 3)?;
            expect_kind(ctx, &args[1], CrdtKind::Set)?;
            if cmd == "SREM" && crdt_read(ctx, &args[1]).is_none() {
                return Ok(ExecOut::read(Frame::Integer(0)));
            }
            let (mut c, _) = crdt_write(ctx, &args[1]);
            let mut n = 0;
            for m in &args[2..] {
                let changed = if cmd == "SADD" { c.set.add(node, m.clone()) } else { c.set.remove(m) };
                n += changed as i64;
            }
            if c.set.entries.len() > COLLECTION_ELEMENTS_MAX {
                return Err(too_many(&args[1]));
            }
            Ok(one(&args[1], c, Frame::Integer(n)))
        }
        "SMEMBERS" => {
            arity(args, 2)?;
            expect_kind(ctx, &args[1], CrdtKind::Set)?;
            let m = crdt_read(ctx, &args[1])
                .map(|c| c.set.entries.keys().cloned().map(Frame::Bulk).collect())
                .unwrap_or_default();
            Ok(ExecOut::read(Frame::Set(m)))
        }
        "SISMEMBER" => {
            arity(args, 3)?;
            expect_kind(ctx, &args[1], CrdtKind::Set)?;
            let b = crdt_read(ctx, &args[1]).is_some_and(|c| c.set.contains(&args[2]));
            Ok(ExecOut::read(Frame::Integer(b as i64)))
        }
        "SCARD" => {
            arity(args, 2)?;
            expect_kind(ctx, &args[1], CrdtKind::Set)?;
            let n = crdt_read(ctx, &args[1]).map_or(0, |c| c.set.entries.len());
            Ok(ExecOut::read(Frame::Integer(n as i64)))
        }
        "HSET" => {
            arity(args, 4)?;
            if !args.len().is_multiple_of(2) {
                return Err(Frame::error("ERR wrong number of arguments for 'hset' command"));
            }
            expect_kind(ctx, &args[1], CrdtKind::Hash)?;
            let (mut c, hlc) = crdt_write(ctx, &args[1]);
            let mut n = 0;
            for pair in args[2..].chunks(2) {
                n += !c.hash.contains(&pair[0]) as i64;
                let f = c.hash.touch(node, pair[0].clone());
                f.reg.write(node, hlc, Some(pair[1].clone()));
                f.ctr.reset_observed();
            }
            if c.hash.present().count() > COLLECTION_ELEMENTS_MAX {
                return Err(too_many(&args[1]));
            }
            Ok(one(&args[1], c, Frame::Integer(n)))
        }
        "HGET" => {
            arity(args, 3)?;
            expect_kind(ctx, &args[1], CrdtKind::Hash)?;
            let v = crdt_read(ctx, &args[1])
                .and_then(|c| c.hash.fields.get(&args[2]).filter(|f| !f.dots.is_empty()).map(field_value));
            Ok(ExecOut::read(v.map_or(Frame::Null, Frame::Bulk)))
        }
        "HGETALL" => {
            arity(args, 2)?;
            expect_kind(ctx, &args[1], CrdtKind::Hash)?;
            let m = crdt_read(ctx, &args[1])
                .map(|c| c.hash.present().map(|(k, f)| (Frame::Bulk(k.clone()), Frame::Bulk(field_value(f)))).collect())
                .unwrap_or_default();
            Ok(ExecOut::read(Frame::Map(m)))
        }
        "HDEL" | "ZREM" => {
            arity(args, 3)?;
            let kind = if cmd == "HDEL" { CrdtKind::Hash } else { CrdtKind::ZSet };
            expect_kind(ctx, &args[1], kind)?;
            if crdt_read(ctx, &args[1]).is_none() {
                return Ok(ExecOut::read(Frame::Integer(0)));
            }
            let (mut c, _) = crdt_write(ctx, &args[1]);
            let map = if cmd == "HDEL" { &mut c.hash } else { &mut c.zset };
            let n = args[2..].iter().filter(|f| map.remove(f)).count();
            Ok(one(&args[1], c, Frame::Integer(n as i64)))
        }
        "HINCRBY" => {
            arity(args, 4)?;
            let by = parse_i64(&args[3]).ok_or_else(|| Frame::error(NOT_INTEGER))?;
            expect_kind(ctx, &args[1], CrdtKind::Hash)?;
            let cur = crdt_read(ctx, &args[1])
                .and_then(|c| c.hash.fields.get(&args[2]).filter(|f| !f.dots.is_empty()).map(field_value));
            let cur = match cur {
                None => None,
                Some(v) => Some(parse_i64(&v).ok_or_else(|| Frame::error("ERR hash value is not an integer"))?),
            };
            let new = cur
                .unwrap_or(0)
                .checked_add(by)
                .ok_or_else(|| Frame::error("ERR increment or decrement would overflow"))?;
            let (mut c, hlc) = crdt_write(ctx, &args[1]);
            let f = c.hash.touch(node, args[2].clone());
            if cur.is_none() {
                // A fresh field starts from 0, not from a removed value.
                f.reg.write(node, hlc, None);
                f.ctr.reset_observed();
            }
            f.ctr.add(node, by).map_err(|_| Frame::error("ERR increment or decrement would overflow"))?;
            if c.hash.present().count() > COLLECTION_ELEMENTS_MAX {
                return Err(too_many(&args[1]));
            }
            Ok(one(&args[1], c, Frame::Integer(new)))
        }
        "ZADD" => {
            arity(args, 4)?;
            if !args.len().is_multiple_of(2) {
                return Err(Frame::error(
                    "ERR syntax error (ZADD in a crdt keyspace takes score member pairs; NX XX GT LT CH INCR are not supported)",
                ));
            }
            let mut pairs = Vec::new();
            for pair in args[2..].chunks(2) {
                let s = parse_f64(&pair[0]).ok_or_else(|| Frame::error(NOT_FLOAT))?;
                pairs.push((s, pair[1].clone()));
            }
            expect_kind(ctx, &args[1], CrdtKind::ZSet)?;
            let (mut c, hlc) = crdt_write(ctx, &args[1]);
            let mut n = 0;
            for (s, m) in pairs {
                n += !c.zset.contains(&m) as i64;
                let f = c.zset.touch(node, m);
                f.reg.write(node, hlc, Some(Bytes::from(format_float(s))));
                f.ctr.reset_observed();
            }
            if c.zset.present().count() > COLLECTION_ELEMENTS_MAX {
                return Err(too_many(&args[1]));
            }
            Ok(one(&args[1], c, Frame::Integer(n)))
        }
        "ZINCRBY" => {
            arity(args, 4)?;
            let by = parse_f64(&args[2]).filter(|v| v.is_finite()).ok_or_else(|| Frame::error(NOT_FLOAT))?;
            expect_kind(ctx, &args[1], CrdtKind::ZSet)?;
            let present = crdt_read(ctx, &args[1]).is_some_and(|c| c.zset.contains(&args[3]));
            let (mut c, hlc) = crdt_write(ctx, &args[1]);
            let f = c.zset.touch(node, args[3].clone());
            if !present {
                f.reg.write(node, hlc, None);
                f.ctr.reset_observed();
            }
            f.ctr.add_float(node, by).map_err(|_| Frame::error("ERR resulting score is not a number (NaN)"))?;
            let s = score_of(f);
            if c.zset.present().count() > COLLECTION_ELEMENTS_MAX {
                return Err(too_many(&args[1]));
            }
            Ok(one(&args[1], c, Frame::Bulk(Bytes::from(format_float(s)))))
        }
        "ZSCORE" => {
            arity(args, 3)?;
            expect_kind(ctx, &args[1], CrdtKind::ZSet)?;
            let s = crdt_read(ctx, &args[1])
                .and_then(|c| c.zset.fields.get(&args[2]).filter(|f| !f.dots.is_empty()).map(score_of));
            Ok(ExecOut::read(s.map_or(Frame::Null, |s| Frame::Bulk(Bytes::from(format_float(s))))))
        }
        "ZRANGE" => {
            arity(args, 4)?;
            let with_scores = match args.get(4) {
                None => false,
                Some(o) if o.eq_ignore_ascii_case(b"WITHSCORES") && args.len() == 5 => true,
                Some(_) => return Err(Frame::error(SYNTAX)),
            };
            let (start, stop) = match (parse_i64(&args[2]), parse_i64(&args[3])) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(Frame::error(NOT_INTEGER)),
            };
            expect_kind(ctx, &args[1], CrdtKind::ZSet)?;
            let mut all: Vec<(f64, Bytes)> = crdt_read(ctx, &args[1])
                .map(|c| c.zset.present().map(|(m, f)| (score_of(f), m.clone())).collect())
                .unwrap_or_default();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            let len = all.len() as i64;
            let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
            let (s, e) = (norm(start), norm(stop).min(len - 1));
            let mut out = Vec::new();
            if s <= e {
                for (score, m) in &all[s as usize..=e as usize] {
                    out.push(Frame::Bulk(m.clone()));
                    if with_scores {
                        out.push(Frame::Bulk(Bytes::from(format_float(*score))));
                    }
                }
            }
            Ok(ExecOut::read(Frame::Array(out)))
        }
        "SIBLINGS" | "RESOLVE" => Err(needs_siblings(ctx, args)),
        _ => Err(unsupported(ctx, args)),
    }
}
