//! Conflict detection and resolution for keyspaces where more than one node
//! accepts writes (multi-leader, leaderless).
//!
//! Owns: the clocks ([`Hlc`], [`VersionVector`], [`Dot`]), the versioned
//! value of one key under each [`ConflictPolicy`] ([`KeyValue`]), the merge
//! that folds a remote (or local) version of a key into the local one
//! ([`apply`]) and the [`ConflictRecord`]s that merge yields for the
//! conflict feed. Every merge is a join: commutative, associative,
//! idempotent (pinned by the property tests in `tests.rs`), so the order,
//! duplication and batching of delivery never change the converged state.
//!
//! Must never: read a clock (time comes in as `now_ms` / an [`Hlc`]), do
//! I/O, or let hash-map order reach a state or a record (ordered maps
//! only).
//!
//! Values travel as whole per-key states (state-based CRDTs), not deltas:
//! shipping a key ships everything known about it. Simple and robust to
//! loss and reordering; costs bandwidth on big collections (see
//! `docs/decisions/0016-multi-leader.md`).

pub mod clock;
pub mod crdt;
pub mod types;

#[cfg(test)]
mod tests;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use clock::{Dot, Hlc, HlcClock, VersionVector};
pub use crdt::{CrdtKind, CrdtValue};
pub use types::{LwwReg, MvReg, OrMap, OrSet, PnCounter, Preview, Resolved, Stamped};

use crate::keyspace::ConflictPolicy;
use crate::repl::NodeId;

/// Most siblings one key may hold from local writes under the `siblings`
/// policy. A local write that would pass it is refused (resolve first);
/// remote versions are always merged, since refusing them would stop the
/// replicas from converging.
pub const SIBLINGS_PER_KEY_MAX: usize = 64;

/// Most bytes of a value shown in a conflict record.
pub const CONFLICT_VALUE_PREVIEW_BYTES_MAX: usize = 64;

/// What a resolution did with the concurrent versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Last-writer-wins kept one version and discarded the others.
    Discarded,
    /// All versions were kept as siblings for a client to resolve.
    Siblings,
    /// A type-specific merge combined them (e.g. the longest TTL).
    Merged,
}

impl Outcome {
    /// The name shown in the feed.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Discarded => "discarded",
            Outcome::Siblings => "kept-as-siblings",
            Outcome::Merged => "merged",
        }
    }
}

/// A string value with its absolute expiry (the value of `lww` and
/// `siblings` keys). `value: None` is a deletion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrVal {
    /// The bytes, or `None` for a delete.
    pub value: Option<Bytes>,
    /// Absolute expiry (ms since the Unix epoch), if any.
    pub expire_at_ms: Option<u64>,
}

impl Preview for StrVal {
    fn preview(&self) -> Option<Bytes> {
        self.value.clone()
    }
}

impl Preview for Option<u64> {
    fn preview(&self) -> Option<Bytes> {
        Some(Bytes::from(match self {
            Some(at) => format!("expire_at_ms={at}"),
            None => "no expiry".to_string(),
        }))
    }
}

/// The versioned value of one key, one variant per policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    /// `lww`: one winning string.
    Lww(LwwReg<StrVal>),
    /// `siblings`: every concurrent string.
    Siblings(MvReg<StrVal>),
    /// `crdt`: per-type merge.
    Crdt(Box<CrdtValue>),
}

impl KeyValue {
    /// An empty value of `policy`.
    pub fn empty(policy: ConflictPolicy) -> KeyValue {
        match policy {
            ConflictPolicy::Lww => KeyValue::Lww(LwwReg::default()),
            ConflictPolicy::Siblings => KeyValue::Siblings(MvReg::default()),
            ConflictPolicy::Crdt => KeyValue::Crdt(Box::default()),
        }
    }

    /// The policy this value follows.
    pub fn policy(&self) -> ConflictPolicy {
        match self {
            KeyValue::Lww(_) => ConflictPolicy::Lww,
            KeyValue::Siblings(_) => ConflictPolicy::Siblings,
            KeyValue::Crdt(_) => ConflictPolicy::Crdt,
        }
    }
}

/// One version taking part in a conflict, as the feed shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictVersion {
    /// The node that wrote it.
    pub origin: NodeId,
    /// Its timestamp.
    pub hlc: Hlc,
    /// Its value, cut to [`CONFLICT_VALUE_PREVIEW_BYTES_MAX`] bytes
    /// (`None`: a delete).
    pub value: Option<Bytes>,
    /// Whether the value was cut.
    pub truncated: bool,
    /// Whether it survived the resolution.
    pub kept: bool,
}

/// One resolution of concurrent versions of a key: what the conflict feed
/// records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictRecord {
    /// The key.
    pub key: Bytes,
    /// The hash field or inner element, if the conflict was inside the key.
    pub field: Option<Bytes>,
    /// The keyspace's policy.
    pub policy: ConflictPolicy,
    /// The versions, winner(s) first.
    pub versions: Vec<ConflictVersion>,
    /// What was done.
    pub outcome: Outcome,
}

fn record(key: &[u8], policy: ConflictPolicy, r: Resolved) -> ConflictRecord {
    let versions = r
        .versions
        .into_iter()
        .map(|(dot, hlc, value, kept)| {
            let truncated = value.as_ref().is_some_and(|v| v.len() > CONFLICT_VALUE_PREVIEW_BYTES_MAX);
            ConflictVersion {
                origin: dot.node,
                hlc,
                value: value.map(|v| v.slice(..v.len().min(CONFLICT_VALUE_PREVIEW_BYTES_MAX))),
                truncated,
                kept,
            }
        })
        .collect();
    ConflictRecord { key: Bytes::copy_from_slice(key), field: r.field, policy, versions, outcome: r.outcome }
}

/// Why a version could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConflictError {
    /// The incoming version follows another policy than the local one (a
    /// keyspace's policy never changes, so this is a peer on another map).
    #[error("version of {key:?} follows policy {incoming}, the keyspace uses {local}")]
    PolicyMismatch {
        /// The key.
        key: String,
        /// The local policy.
        local: ConflictPolicy,
        /// The incoming version's policy.
        incoming: ConflictPolicy,
    },
}

/// Fold `incoming` (a remote version of `key`, or a local one) into `local`
/// (`None`: the key is new here). Returns the merged value and what the
/// merge resolved between concurrent versions, for the conflict feed.
pub fn apply(
    key: &[u8],
    local: Option<KeyValue>,
    incoming: &KeyValue,
) -> Result<(KeyValue, Vec<ConflictRecord>), ConflictError> {
    let policy = incoming.policy();
    let mut local = local.unwrap_or_else(|| KeyValue::empty(policy));
    let mut resolved = Vec::new();
    match (&mut local, incoming) {
        (KeyValue::Lww(l), KeyValue::Lww(r)) => l.merge(r, None, &mut resolved),
        (KeyValue::Siblings(l), KeyValue::Siblings(r)) => l.merge(r, None, &mut resolved),
        (KeyValue::Crdt(l), KeyValue::Crdt(r)) => l.merge(r, &mut resolved),
        (l, _) => {
            return Err(ConflictError::PolicyMismatch {
                key: String::from_utf8_lossy(key).into_owned(),
                local: l.policy(),
                incoming: policy,
            })
        }
    }
    let records = resolved.into_iter().map(|r| record(key, policy, r)).collect();
    Ok((local, records))
}
