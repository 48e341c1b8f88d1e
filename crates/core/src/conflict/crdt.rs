//! The value of one key in a `crdt` keyspace: a product of the per-type
//! lattices, merged component by component.
//!
//! Merge rules (also in `docs/multi-leader.md`):
//! - strings: last-writer-wins register; `INCR`-family amounts go to a
//!   PN-counter added on top of the register's integer (a `SET` resets the
//!   counter it observed, so a concurrent increment survives on top of it);
//! - sets: add-wins observed-remove set;
//! - hashes: observed-remove map, field values LWW, `HINCRBY` amounts as a
//!   counter on top;
//! - sorted sets: observed-remove map of members, `ZADD` score LWW,
//!   `ZINCRBY` amounts as a counter on top;
//! - `DEL` removes what it observed in every component;
//! - TTL: a multi-value register of absolute expiries; concurrent
//!   `EXPIRE`s both survive and the longest wins (no expiry is longest).
//!
//! A key written concurrently as two types holds both; reads see one, by
//! the fixed priority string, hash, set, sorted set ([`CrdtValue::kind`]).
//! Never reads a clock: `now_ms` and HLCs come in.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::types::{LwwReg, MvReg, OrMap, OrSet, PnCounter, Resolved};
use super::{Hlc, Outcome};
use crate::repl::NodeId;

/// The type a `crdt` key reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrdtKind {
    /// A string (register plus counter).
    String,
    /// A hash.
    Hash,
    /// A set.
    Set,
    /// A sorted set.
    ZSet,
}

/// The state of one key in a `crdt` keyspace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CrdtValue {
    /// String register (`None` written by DEL or by a counter start).
    pub reg: LwwReg<Option<Bytes>>,
    /// Counter added on top of `reg`.
    pub ctr: PnCounter,
    /// Set members.
    pub set: OrSet,
    /// Hash fields.
    pub hash: OrMap,
    /// Sorted-set members (register: score as text).
    pub zset: OrMap,
    /// Absolute expiry siblings (`None`: no expiry).
    pub ttl: MvReg<Option<u64>>,
}

impl CrdtValue {
    /// Join with `other`.
    pub fn merge(&mut self, other: &CrdtValue, out: &mut Vec<Resolved>) {
        self.reg.merge(&other.reg, None, out);
        self.ctr.merge(&other.ctr);
        self.set.merge(&other.set);
        self.hash.merge(&other.hash, out);
        self.zset.merge(&other.zset, out);
        let mut ttl = Vec::new();
        self.ttl.merge(&other.ttl, None, &mut ttl);
        out.extend(ttl.into_iter().map(|mut r| {
            r.outcome = Outcome::Merged;
            r.field = Some(Bytes::from_static(b"(ttl: longest wins)"));
            r
        }));
    }

    /// The absolute expiry in force: none if any surviving expiry is none,
    /// else the latest.
    pub fn expire_at_ms(&self) -> Option<u64> {
        let mut at = None;
        for s in &self.ttl.sibs {
            match s.value {
                None => return None,
                Some(t) => at = Some(at.map_or(t, |a: u64| a.max(t))),
            }
        }
        at
    }

    /// Whether the key has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expire_at_ms().is_some_and(|at| at <= now_ms)
    }

    /// Whether the string component holds a value.
    pub fn has_string(&self) -> bool {
        matches!(self.reg.get(), Some(Some(_))) || self.ctr.active()
    }

    /// The type the key reads as at `now_ms` (`None`: absent or expired).
    pub fn kind(&self, now_ms: u64) -> Option<CrdtKind> {
        if self.expired(now_ms) {
            return None;
        }
        if self.has_string() {
            Some(CrdtKind::String)
        } else if self.hash.present().next().is_some() {
            Some(CrdtKind::Hash)
        } else if !self.set.entries.is_empty() {
            Some(CrdtKind::Set)
        } else if self.zset.present().next().is_some() {
            Some(CrdtKind::ZSet)
        } else {
            None
        }
    }

    /// The string value: the register, plus the counter when one is
    /// active (then the register must read as a number; a non-number base
    /// counts as 0).
    pub fn string_value(&self) -> Option<Bytes> {
        let base = self.reg.get().cloned().flatten();
        if !self.ctr.active() {
            return base;
        }
        Some(number_with_counter(base.as_deref(), &self.ctr))
    }

    /// Remove everything this state observed (`DEL`), as `node` at `hlc`.
    pub fn delete_observed(&mut self, node: NodeId, hlc: Hlc) {
        if matches!(self.reg.get(), Some(Some(_))) {
            self.reg.write(node, hlc, None);
        }
        self.ctr.reset_observed();
        self.set.entries.clear();
        let fields: Vec<Bytes> = self.hash.present().map(|(k, _)| k.clone()).collect();
        for f in fields {
            self.hash.remove(&f);
        }
        let members: Vec<Bytes> = self.zset.present().map(|(k, _)| k.clone()).collect();
        for m in members {
            self.zset.remove(&m);
        }
        if !self.ttl.sibs.is_empty() {
            let ctx = self.ttl.clock.clone();
            self.ttl.write(node, &ctx, hlc, None);
        }
    }

    /// Set the expiry (replacing the expiries this state observed).
    pub fn set_expiry(&mut self, node: NodeId, hlc: Hlc, at_ms: Option<u64>) {
        if at_ms.is_none() && self.ttl.sibs.is_empty() {
            return;
        }
        let ctx = self.ttl.clock.clone();
        self.ttl.write(node, &ctx, hlc, at_ms);
    }
}

/// A register's text plus a counter, formatted like Redis formats
/// `INCRBY` / `INCRBYFLOAT` results.
pub fn number_with_counter(base: Option<&[u8]>, ctr: &PnCounter) -> Bytes {
    let text = base.and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("0");
    if ctr.has_float() || text.parse::<i64>().is_err() {
        let b: f64 = text.parse().unwrap_or(0.0);
        let v = b + ctr.int_value() as f64 + ctr.float_value();
        Bytes::from(format_float(v))
    } else {
        let b: i128 = text.parse().unwrap_or(0);
        Bytes::from((b + ctr.int_value()).to_string())
    }
}

/// A float as Redis prints `INCRBYFLOAT` results (no trailing zeros, no
/// exponent for ordinary magnitudes).
pub fn format_float(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e17 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.17}");
        let s = s.trim_end_matches('0');
        s.trim_end_matches('.').to_string()
    }
}
