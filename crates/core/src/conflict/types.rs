//! The replicated data types of the conflict layer, each a join
//! semilattice: `merge` is commutative, associative and idempotent, so
//! replicas that have seen the same writes hold the same state whatever the
//! order, duplication or batching of delivery.
//!
//! Owns: the last-writer-wins register, the multi-value register (siblings
//! under a dotted version vector), the PN-counter with observed reset, the
//! add-wins observed-remove set and the observed-remove map whose fields
//! carry a register and a counter. Never reads a clock or does I/O; a
//! merge only reports what it resolved through [`Resolved`].

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::clock::{Dot, Hlc, VersionVector};
use crate::repl::NodeId;

/// What one merge resolved between concurrent versions: the winner (if
/// any) and the versions it discarded, or the versions it kept side by
/// side. Turned into [`super::ConflictRecord`]s by the caller, which knows
/// the key and the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Field or member inside the key (hash field), if any.
    pub field: Option<Bytes>,
    /// The versions involved, each `(dot, hlc, value preview, kept)`.
    pub versions: Vec<(Dot, Hlc, Option<Bytes>, bool)>,
    /// What happened.
    pub outcome: super::Outcome,
}

/// A value that can be previewed in the conflict feed.
pub trait Preview {
    /// The bytes shown for this value (`None`: deleted).
    fn preview(&self) -> Option<Bytes>;
}

impl Preview for Option<Bytes> {
    fn preview(&self) -> Option<Bytes> {
        self.clone()
    }
}

/// One write of a register: its dot (who, which event), its HLC, its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamped<T> {
    /// The event that wrote it.
    pub dot: Dot,
    /// When (orders last-writer-wins).
    pub hlc: Hlc,
    /// The value written.
    pub value: T,
}

/// Last-writer-wins register: the write with the highest HLC (node id
/// breaking ties, inside [`Hlc`]'s order) plus the clock of every write this
/// state has seen, which tells a concurrent loser (its dot not seen by the
/// winner's side) from an overwritten older value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwReg<T> {
    /// The winning write (`None`: never written).
    pub winner: Option<Stamped<T>>,
    /// Every write seen.
    pub clock: VersionVector,
}

impl<T> Default for LwwReg<T> {
    fn default() -> Self {
        LwwReg { winner: None, clock: VersionVector::new() }
    }
}

impl<T: Clone + Preview> LwwReg<T> {
    /// The current value.
    pub fn get(&self) -> Option<&T> {
        self.winner.as_ref().map(|w| &w.value)
    }

    /// A local write by `node` at `hlc` (which must be newer than anything
    /// this node has seen: the caller ticks its clock).
    pub fn write(&mut self, node: NodeId, hlc: Hlc, value: T) {
        let dot = self.clock.next_dot(node);
        self.clock.add(dot);
        self.winner = Some(Stamped { dot, hlc, value });
    }

    /// Join with `other`; a concurrent loser is reported in `out`.
    pub fn merge(&mut self, other: &LwwReg<T>, field: Option<&Bytes>, out: &mut Vec<Resolved>) {
        if let Some(theirs) = &other.winner {
            let take = match &self.winner {
                None => true,
                Some(mine) => theirs.hlc > mine.hlc,
            };
            let (win, win_clock, lose) = if take {
                (Some(theirs), &other.clock, self.winner.as_ref())
            } else {
                (self.winner.as_ref(), &self.clock, Some(theirs))
            };
            if let (Some(w), Some(l)) = (win, lose) {
                if w.dot != l.dot && !win_clock.contains(l.dot) {
                    out.push(Resolved {
                        field: field.cloned(),
                        versions: vec![
                            (w.dot, w.hlc, w.value.preview(), true),
                            (l.dot, l.hlc, l.value.preview(), false),
                        ],
                        outcome: super::Outcome::Discarded,
                    });
                }
            }
            if take {
                self.winner = Some(theirs.clone());
            }
        }
        self.clock.merge(&other.clock);
    }
}

/// Multi-value register: every write not overwritten by a write that saw
/// it survives as a sibling (a dotted version vector: each sibling's dot
/// plus one clock of everything seen).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvReg<T> {
    /// Surviving writes, ordered by dot.
    pub sibs: Vec<Stamped<T>>,
    /// Every write seen (the causal context handed to clients).
    pub clock: VersionVector,
}

impl<T> Default for MvReg<T> {
    fn default() -> Self {
        MvReg { sibs: Vec::new(), clock: VersionVector::new() }
    }
}

impl<T: Clone + Preview + PartialEq> MvReg<T> {
    /// A write by `node` that has seen `context`: replaces exactly the
    /// siblings `context` covers; any other sibling survives beside it.
    pub fn write(&mut self, node: NodeId, context: &VersionVector, hlc: Hlc, value: T) {
        self.clock.merge(context);
        let dot = self.clock.next_dot(node);
        self.sibs.retain(|s| !context.contains(s.dot));
        self.clock.add(dot);
        self.sibs.push(Stamped { dot, hlc, value });
        self.sibs.sort_by_key(|s| s.dot);
    }

    /// Join with `other`; siblings that newly sit beside each other are
    /// reported in `out`.
    pub fn merge(&mut self, other: &MvReg<T>, field: Option<&Bytes>, out: &mut Vec<Resolved>) {
        let mine_before = self.sibs.len();
        let mut kept: Vec<Stamped<T>> = self
            .sibs
            .iter()
            .filter(|s| other.sibs.iter().any(|o| o.dot == s.dot) || !other.clock.contains(s.dot))
            .cloned()
            .collect();
        let mut new_any = false;
        for o in &other.sibs {
            if !kept.iter().any(|s| s.dot == o.dot) && !self.clock.contains(o.dot) {
                kept.push(o.clone());
                new_any = true;
            }
        }
        kept.sort_by_key(|s| s.dot);
        self.clock.merge(&other.clock);
        if new_any && kept.len() > 1 && mine_before > 0 {
            out.push(Resolved {
                field: field.cloned(),
                versions: kept.iter().map(|s| (s.dot, s.hlc, s.value.preview(), true)).collect(),
                outcome: super::Outcome::Siblings,
            });
        }
        self.sibs = kept;
    }
}

/// One node's slot of a [`PnCounter`]: monotone sums of increments and
/// decrements (integer and float parts) and the part of them a reset
/// (DEL, SET) observed. Every field only grows; merge is the maximum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterSlot {
    /// Sum of integer increments.
    pub inc: u64,
    /// Sum of integer decrements.
    pub dec: u64,
    /// Sum of float increments (never negative).
    pub finc: f64,
    /// Sum of float decrements (never negative).
    pub fdec: f64,
    /// `inc` observed by the newest reset.
    pub r_inc: u64,
    /// `dec` observed by the newest reset.
    pub r_dec: u64,
    /// `finc` observed by the newest reset.
    pub r_finc: f64,
    /// `fdec` observed by the newest reset.
    pub r_fdec: f64,
}

impl CounterSlot {
    fn join(&mut self, o: &CounterSlot) {
        self.inc = self.inc.max(o.inc);
        self.dec = self.dec.max(o.dec);
        self.finc = self.finc.max(o.finc);
        self.fdec = self.fdec.max(o.fdec);
        self.r_inc = self.r_inc.max(o.r_inc);
        self.r_dec = self.r_dec.max(o.r_dec);
        self.r_finc = self.r_finc.max(o.r_finc);
        self.r_fdec = self.r_fdec.max(o.r_fdec);
    }
}

/// Why a counter refused an increment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterError {
    /// A node's monotone sum would pass `u64::MAX`.
    Overflow,
    /// The float amount is NaN or infinite.
    NotFinite,
}

/// A PN-counter with observed reset: each node adds to its own slot; a
/// reset (DEL, SET) marks what it observed so that increments made
/// concurrently with it survive (observed-remove).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PnCounter {
    /// Per-node slots.
    pub slots: BTreeMap<NodeId, CounterSlot>,
}

impl PnCounter {
    /// Add an integer amount as `node`.
    pub fn add(&mut self, node: NodeId, by: i64) -> Result<(), CounterError> {
        let s = self.slots.entry(node).or_default();
        if by >= 0 {
            s.inc = s.inc.checked_add(by as u64).ok_or(CounterError::Overflow)?;
        } else {
            s.dec = s.dec.checked_add(by.unsigned_abs()).ok_or(CounterError::Overflow)?;
        }
        Ok(())
    }

    /// Add a float amount as `node`.
    pub fn add_float(&mut self, node: NodeId, by: f64) -> Result<(), CounterError> {
        if !by.is_finite() {
            return Err(CounterError::NotFinite);
        }
        let s = self.slots.entry(node).or_default();
        if by >= 0.0 {
            s.finc += by;
        } else {
            s.fdec += -by;
        }
        if !s.finc.is_finite() || !s.fdec.is_finite() {
            return Err(CounterError::NotFinite);
        }
        Ok(())
    }

    /// Reset what this state has observed (concurrent increments elsewhere
    /// survive).
    pub fn reset_observed(&mut self) {
        for s in self.slots.values_mut() {
            s.r_inc = s.inc;
            s.r_dec = s.dec;
            s.r_finc = s.finc;
            s.r_fdec = s.fdec;
        }
    }

    /// Whether anything was added since the last observed reset.
    pub fn active(&self) -> bool {
        self.slots.values().any(|s| s.inc > s.r_inc || s.dec > s.r_dec || s.finc > s.r_finc || s.fdec > s.r_fdec)
    }

    /// Whether any float amount was added since the last observed reset.
    pub fn has_float(&self) -> bool {
        self.slots.values().any(|s| s.finc > s.r_finc || s.fdec > s.r_fdec)
    }

    /// The integer part since the last observed reset.
    pub fn int_value(&self) -> i128 {
        self.slots.values().map(|s| (s.inc - s.r_inc.min(s.inc)) as i128 - (s.dec - s.r_dec.min(s.dec)) as i128).sum()
    }

    /// The float part since the last observed reset.
    pub fn float_value(&self) -> f64 {
        self.slots.values().map(|s| (s.finc - s.r_finc) - (s.fdec - s.r_fdec)).sum()
    }

    /// Join with `other` (pointwise maximum).
    pub fn merge(&mut self, other: &PnCounter) {
        for (n, o) in &other.slots {
            self.slots.entry(*n).or_default().join(o);
        }
    }
}

/// Add-wins observed-remove set: each element carries the dots of the adds
/// that made it present; a remove drops the dots it observed, so an add
/// concurrent with it (a dot the remover never saw) keeps the element.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    /// Present elements and their add dots.
    pub entries: BTreeMap<Bytes, BTreeSet<Dot>>,
    /// Every add seen.
    pub clock: VersionVector,
}

/// Keep the dots of `mine` that `their` state also has or never saw, and
/// the dots of `theirs` that this state never saw.
fn join_dots(
    mine: &BTreeSet<Dot>,
    my_clock: &VersionVector,
    theirs: &BTreeSet<Dot>,
    their_clock: &VersionVector,
) -> BTreeSet<Dot> {
    let mut out: BTreeSet<Dot> =
        mine.iter().filter(|d| theirs.contains(d) || !their_clock.contains(**d)).copied().collect();
    out.extend(theirs.iter().filter(|d| !my_clock.contains(**d)).copied());
    out
}

impl OrSet {
    /// Add `elem` as `node`; true if it was absent.
    pub fn add(&mut self, node: NodeId, elem: Bytes) -> bool {
        let dot = self.clock.next_dot(node);
        self.clock.add(dot);
        self.entries.insert(elem, BTreeSet::from([dot])).is_none()
    }

    /// Remove `elem` (the adds observed here); true if it was present.
    pub fn remove(&mut self, elem: &[u8]) -> bool {
        self.entries.remove(elem).is_some()
    }

    /// Whether `elem` is present.
    pub fn contains(&self, elem: &[u8]) -> bool {
        self.entries.contains_key(elem)
    }

    /// Join with `other`.
    pub fn merge(&mut self, other: &OrSet) {
        let empty = BTreeSet::new();
        let keys: BTreeSet<Bytes> = self.entries.keys().chain(other.entries.keys()).cloned().collect();
        let mut entries = BTreeMap::new();
        for k in keys {
            let dots = join_dots(
                self.entries.get(&k).unwrap_or(&empty),
                &self.clock,
                other.entries.get(&k).unwrap_or(&empty),
                &other.clock,
            );
            if !dots.is_empty() {
                entries.insert(k, dots);
            }
        }
        self.entries = entries;
        self.clock.merge(&other.clock);
    }
}

/// One field of an [`OrMap`]: presence (add dots, add-wins), a
/// last-writer-wins value and a counter added on top of it (`HINCRBY`,
/// `ZINCRBY`). A removed field keeps its register and counter (a
/// tombstone) so that a concurrent increment survives without resurrecting
/// what the remove observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MapField {
    /// Add dots; empty means absent.
    pub dots: BTreeSet<Dot>,
    /// The last written value (`None`: a counter-only field).
    pub reg: LwwReg<Option<Bytes>>,
    /// Increments on top of `reg`.
    pub ctr: PnCounter,
}

/// Observed-remove map of fields (hashes: field -> value; sorted sets:
/// member -> score).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrMap {
    /// Fields, present or tombstoned.
    pub fields: BTreeMap<Bytes, MapField>,
    /// Every field add seen.
    pub clock: VersionVector,
}

impl OrMap {
    /// Whether `field` is present.
    pub fn contains(&self, field: &[u8]) -> bool {
        self.fields.get(field).is_some_and(|f| !f.dots.is_empty())
    }

    /// Present fields.
    pub fn present(&self) -> impl Iterator<Item = (&Bytes, &MapField)> {
        self.fields.iter().filter(|(_, f)| !f.dots.is_empty())
    }

    /// Mark `field` present as `node` and return it for the value update.
    pub fn touch(&mut self, node: NodeId, field: Bytes) -> &mut MapField {
        let dot = self.clock.next_dot(node);
        self.clock.add(dot);
        let f = self.fields.entry(field).or_default();
        f.dots = BTreeSet::from([dot]);
        f
    }

    /// Remove `field` (what was observed of it); true if it was present.
    pub fn remove(&mut self, field: &[u8]) -> bool {
        match self.fields.get_mut(field) {
            Some(f) if !f.dots.is_empty() => {
                f.dots.clear();
                f.ctr.reset_observed();
                true
            }
            _ => false,
        }
    }

    /// Join with `other`; concurrent value writes to one field are
    /// reported in `out`.
    pub fn merge(&mut self, other: &OrMap, out: &mut Vec<Resolved>) {
        let empty = MapField::default();
        let keys: BTreeSet<Bytes> = self.fields.keys().chain(other.fields.keys()).cloned().collect();
        let mut fields = BTreeMap::new();
        for k in keys {
            let mine = self.fields.get(&k).unwrap_or(&empty);
            let theirs = other.fields.get(&k).unwrap_or(&empty);
            let mut f = mine.clone();
            f.dots = join_dots(&mine.dots, &self.clock, &theirs.dots, &other.clock);
            f.reg.merge(&theirs.reg, Some(&k), out);
            f.ctr.merge(&theirs.ctr);
            fields.insert(k, f);
        }
        self.fields = fields;
        self.clock.merge(&other.clock);
    }
}
