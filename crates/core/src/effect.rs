//! Row effects and log entries.
//!
//! A row effect is the *result* of a command, never the command itself:
//! `INCR` is logged as the integer it produced, `SET .. EX 10` and `EXPIRE`
//! as the absolute expiry time the leader computed when the command ran.
//! Replaying effects therefore never reads a clock or an RNG, so every
//! replica that applies the same log reaches the same state.
//!
//! Effects are also *replay-safe from any earlier point*: applying a suffix
//! of the log that starts before a key's captured state converges to the
//! same final state (every effect either replaces a key's whole state or
//! sets the state of individual set members, and a key's end is always
//! logged as a whole-state `Del`, even when a removal emptied a collection:
//! decision 0034). Fuzzy snapshots rely on this.
//!
//! This module must never hold anything that is not deterministic data.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Epoch, Lsn};

/// One change to the keyspace state, as stored in the replication log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Effect {
    /// The key now holds this string value with this absolute expiry
    /// (unix ms), replacing whatever it held.
    Set { key: Bytes, value: Bytes, expire_at_ms: Option<u64> },
    /// The key no longer exists.
    Del { key: Bytes },
    /// The key, if it exists, now expires at this time (`None`: never).
    Expire { key: Bytes, expire_at_ms: Option<u64> },
    /// These members are now in the set at `key` (a missing key, or a key
    /// of another type, becomes a new set).
    SAdd { key: Bytes, members: Vec<Bytes> },
    /// These members are no longer in the set at `key`; an empty set is
    /// removed.
    SRem { key: Bytes, members: Vec<Bytes> },
    /// Every key is gone.
    FlushAll,
    // New variants go at the END: postcard encodes the variant's position,
    // and old logs and snapshots must still decode.
    /// These fields of the hash at `key` now hold these values (a missing
    /// key, or a key of another type, becomes a new hash).
    HSet { key: Bytes, fields: Vec<(Bytes, Bytes)> },
    /// These fields are no longer in the hash at `key`; an empty hash is
    /// removed.
    HDel { key: Bytes, fields: Vec<Bytes> },
    /// These elements were pushed one by one at the head (`left`) or tail
    /// of the list at `key`, leaving its change count at `seq`. List
    /// effects are applied only to a list whose change count is below
    /// their `seq` (else the state already holds them), which makes them
    /// replay-safe; a missing key or another type starts a fresh list.
    LPush { key: Bytes, left: bool, items: Vec<Bytes>, seq: u64 },
    /// `count` elements were removed from the head (`left`) or tail. A pop
    /// that empties a list is logged as `Del` instead.
    LPop { key: Bytes, left: bool, count: u64, seq: u64 },
    /// The element at `index` (from the head) is now `value`.
    LSet { key: Bytes, index: u64, value: Bytes, seq: u64 },
    /// The list now holds exactly `items` (LINSERT, LREM: rare edits that
    /// are logged whole).
    LReplace { key: Bytes, items: Vec<Bytes>, seq: u64 },
    /// These members of the sorted set at `key` now have these scores
    /// (`f64::to_bits`; never NaN). A missing key, or another type, becomes
    /// a new sorted set.
    ZAdd { key: Bytes, members: Vec<(u64, Bytes)> },
    /// These members are no longer in the sorted set; an empty one is
    /// removed.
    ZRem { key: Bytes, members: Vec<Bytes> },
    /// The key no longer exists because the leader evicted it to stay
    /// under `maxmemory` (applied exactly like `Del`; marked apart so a
    /// follower, a restore and the rollback file can tell an eviction from
    /// a client's delete, and followers never choose evictions
    /// themselves).
    Evict { key: Bytes },
}

impl Effect {
    /// The key this effect changes, if it changes exactly one.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Effect::Set { key, .. }
            | Effect::Del { key }
            | Effect::Expire { key, .. }
            | Effect::SAdd { key, .. }
            | Effect::SRem { key, .. }
            | Effect::HSet { key, .. }
            | Effect::HDel { key, .. }
            | Effect::LPush { key, .. }
            | Effect::LPop { key, .. }
            | Effect::LSet { key, .. }
            | Effect::LReplace { key, .. }
            | Effect::ZAdd { key, .. }
            | Effect::ZRem { key, .. }
            | Effect::Evict { key } => Some(key),
            Effect::FlushAll => None,
        }
    }
}

/// One entry of the replication log: the effects of one command, applied
/// atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Position in the log.
    pub lsn: Lsn,
    /// Leadership generation of the leader that created the entry.
    pub epoch: Epoch,
    /// Leader's wall-clock time (unix ms) when it committed the entry; used
    /// for time lag and point-in-time recovery, never to decide a value.
    pub commit_ms: u64,
    /// The effects, applied in order.
    pub effects: Vec<Effect>,
}

/// The log payload could not be decoded: the bytes are not a log entry of a
/// format this build understands.
#[derive(Debug, thiserror::Error)]
#[error("undecodable log entry payload: {0}")]
pub struct DecodeError(String);

/// Version byte that starts every encoded payload, so the format can evolve.
const PAYLOAD_FORMAT_V1: u8 = 1;

/// The part of an entry that goes into the storage payload (LSN and epoch
/// are framed by the storage layer itself).
#[derive(Serialize, Deserialize)]
struct PayloadV1<'a> {
    commit_ms: u64,
    #[serde(borrow)]
    effects: std::borrow::Cow<'a, [Effect]>,
}

impl LogEntry {
    /// Encodes the payload (commit time and effects) into `out`, replacing
    /// its contents. LSN and epoch are stored by the log's record framing.
    pub fn encode_payload(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(PAYLOAD_FORMAT_V1);
        let payload = PayloadV1 { commit_ms: self.commit_ms, effects: std::borrow::Cow::Borrowed(&self.effects) };
        let encoded = postcard::to_extend(&payload, std::mem::take(out)).expect("encoding into a Vec cannot fail");
        *out = encoded;
    }

    /// Decodes a payload written by [`LogEntry::encode_payload`].
    pub fn decode_payload(lsn: Lsn, epoch: Epoch, payload: &[u8]) -> Result<LogEntry, DecodeError> {
        match payload.split_first() {
            Some((&PAYLOAD_FORMAT_V1, rest)) => {
                let p: PayloadV1 = postcard::from_bytes(rest).map_err(|e| DecodeError(e.to_string()))?;
                Ok(LogEntry { lsn, epoch, commit_ms: p.commit_ms, effects: p.effects.into_owned() })
            }
            Some((v, _)) => Err(DecodeError(format!("unknown payload format version {v}"))),
            None => Err(DecodeError("empty payload".into())),
        }
    }
}

/// Reads the payload encoding of [`LogEntry::encode_payload`] by hand so
/// that keys and values are slices of one shared buffer (no copy, no
/// allocation per key): the fast path of bulk replay (restore).
struct SharedReader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl SharedReader<'_> {
    fn err(&self, what: &str) -> DecodeError {
        DecodeError(format!("{what} at payload byte {}", self.pos))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.err("payload ends early"))?;
        self.pos += 1;
        Ok(b)
    }

    /// A postcard (LEB128) varint of at most 10 bytes.
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.err("varint longer than 10 bytes"))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.err("byte string runs past the end"))?;
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.varint()?)),
            _ => Err(self.err("bad option tag")),
        }
    }

    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("bad bool")),
        }
    }

    fn pairs(&mut self) -> Result<Vec<(Bytes, Bytes)>, DecodeError> {
        let n = self.varint()? as usize;
        let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            out.push((self.bytes()?, self.bytes()?));
        }
        Ok(out)
    }

    fn scored(&mut self) -> Result<Vec<(u64, Bytes)>, DecodeError> {
        let n = self.varint()? as usize;
        let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            out.push((self.varint()?, self.bytes()?));
        }
        Ok(out)
    }

    fn members(&mut self) -> Result<Vec<Bytes>, DecodeError> {
        let n = self.varint()? as usize;
        // Each member takes at least one byte: bound the allocation by what is left.
        let mut out = Vec::with_capacity(n.min(self.buf.len() - self.pos));
        for _ in 0..n {
            out.push(self.bytes()?);
        }
        Ok(out)
    }
}

impl LogEntry {
    /// Decodes a payload's effects into `out` (cleared first) with every key,
    /// value and member a slice of `payload` (no copies); returns the commit
    /// time. Same format and result as [`LogEntry::decode_payload`].
    pub fn decode_effects_shared(payload: &Bytes, out: &mut Vec<Effect>) -> Result<u64, DecodeError> {
        out.clear();
        let mut r = SharedReader { buf: payload, pos: 0 };
        match r.u8() {
            Ok(PAYLOAD_FORMAT_V1) => {}
            Ok(v) => return Err(DecodeError(format!("unknown payload format version {v}"))),
            Err(_) => return Err(DecodeError("empty payload".into())),
        }
        let commit_ms = r.varint()?;
        let count = r.varint()?;
        for _ in 0..count {
            let effect = match r.varint()? {
                0 => Effect::Set { key: r.bytes()?, value: r.bytes()?, expire_at_ms: r.opt_u64()? },
                1 => Effect::Del { key: r.bytes()? },
                2 => Effect::Expire { key: r.bytes()?, expire_at_ms: r.opt_u64()? },
                3 => Effect::SAdd { key: r.bytes()?, members: r.members()? },
                4 => Effect::SRem { key: r.bytes()?, members: r.members()? },
                5 => Effect::FlushAll,
                6 => Effect::HSet { key: r.bytes()?, fields: r.pairs()? },
                7 => Effect::HDel { key: r.bytes()?, fields: r.members()? },
                8 => Effect::LPush { key: r.bytes()?, left: r.bool()?, items: r.members()?, seq: r.varint()? },
                9 => Effect::LPop { key: r.bytes()?, left: r.bool()?, count: r.varint()?, seq: r.varint()? },
                10 => Effect::LSet { key: r.bytes()?, index: r.varint()?, value: r.bytes()?, seq: r.varint()? },
                11 => Effect::LReplace { key: r.bytes()?, items: r.members()?, seq: r.varint()? },
                12 => Effect::ZAdd { key: r.bytes()?, members: r.scored()? },
                13 => Effect::ZRem { key: r.bytes()?, members: r.members()? },
                14 => Effect::Evict { key: r.bytes()? },
                tag => return Err(r.err(&format!("unknown effect tag {tag}"))),
            };
            out.push(effect);
        }
        Ok(commit_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_decoding_equals_serde_decoding() {
        let long = Bytes::from(vec![7u8; 300]);
        let entry = LogEntry {
            lsn: 9,
            epoch: 3,
            commit_ms: u64::MAX - 5,
            effects: vec![
                Effect::Set { key: "k".into(), value: long.clone(), expire_at_ms: Some(1 << 40) },
                Effect::Set { key: long.clone(), value: "".into(), expire_at_ms: None },
                Effect::Del { key: "d".into() },
                Effect::Expire { key: "e".into(), expire_at_ms: Some(0) },
                Effect::Expire { key: "e".into(), expire_at_ms: None },
                Effect::SAdd { key: "s".into(), members: (0..200).map(|i| Bytes::from(format!("m{i}"))).collect() },
                Effect::SRem { key: "s".into(), members: vec![] },
                Effect::FlushAll,
                Effect::HSet { key: "h".into(), fields: vec![("f".into(), long.clone()), ("g".into(), "".into())] },
                Effect::HDel { key: "h".into(), fields: vec!["f".into()] },
                Effect::LPush { key: "l".into(), left: true, items: vec!["a".into(), long.clone()], seq: 300 },
                Effect::LPop { key: "l".into(), left: false, count: 2, seq: u64::MAX },
                Effect::LSet { key: "l".into(), index: 7, value: "v".into(), seq: 1 },
                Effect::LReplace { key: "l".into(), items: vec![], seq: 2 },
                Effect::ZAdd { key: "z".into(), members: vec![((-2.5f64).to_bits(), "m".into()), (0, long.clone())] },
                Effect::ZRem { key: "z".into(), members: vec!["m".into()] },
                Effect::Evict { key: long.clone() },
            ],
        };
        let mut buf = Vec::new();
        entry.encode_payload(&mut buf);
        let shared = Bytes::from(buf.clone());
        let mut out = vec![Effect::FlushAll];
        let commit_ms = LogEntry::decode_effects_shared(&shared, &mut out).unwrap();
        let reference = LogEntry::decode_payload(9, 3, &buf).unwrap();
        assert_eq!((commit_ms, &out), (reference.commit_ms, &reference.effects));
        for cut in 0..buf.len() {
            let _ = LogEntry::decode_effects_shared(&shared.slice(..cut), &mut out);
        }
        assert!(LogEntry::decode_effects_shared(&Bytes::from_static(&[1, 5, 1, 9]), &mut out).is_err());
    }

    #[test]
    fn payload_roundtrip_preserves_every_effect() {
        let entry = LogEntry {
            lsn: 7,
            epoch: 2,
            commit_ms: 1_700_000_000_123,
            effects: vec![
                Effect::Set { key: "k".into(), value: "v".into(), expire_at_ms: Some(5) },
                Effect::Del { key: "d".into() },
                Effect::Expire { key: "e".into(), expire_at_ms: None },
                Effect::SAdd { key: "s".into(), members: vec!["a".into(), "b".into()] },
                Effect::SRem { key: "s".into(), members: vec!["a".into()] },
                Effect::FlushAll,
            ],
        };
        let mut buf = Vec::new();
        entry.encode_payload(&mut buf);
        assert_eq!(LogEntry::decode_payload(7, 2, &buf).unwrap(), entry);
    }

    /// Bytes of an entry written before hashes and lists existed (format
    /// v1, effects Set, SAdd and FlushAll): adding effect variants at the
    /// end must keep them decodable.
    #[test]
    fn an_entry_written_before_the_data_model_effects_still_decodes() {
        let old: &[u8] = &[1, 0xe8, 0x07, 3, 0, 1, b'k', 1, b'v', 1, 5, 3, 1, b's', 1, 1, b'm', 5];
        let entry = LogEntry::decode_payload(4, 1, old).unwrap();
        assert_eq!(entry.commit_ms, 1000);
        assert_eq!(
            entry.effects,
            vec![
                Effect::Set { key: "k".into(), value: "v".into(), expire_at_ms: Some(5) },
                Effect::SAdd { key: "s".into(), members: vec!["m".into()] },
                Effect::FlushAll,
            ]
        );
        let mut out = Vec::new();
        assert_eq!(LogEntry::decode_effects_shared(&Bytes::from_static(old), &mut out).unwrap(), 1000);
        assert_eq!(out, entry.effects);
    }

    #[test]
    fn unknown_payload_version_is_an_error_not_a_panic() {
        assert!(LogEntry::decode_payload(1, 1, &[99, 1, 2]).is_err());
        assert!(LogEntry::decode_payload(1, 1, &[]).is_err());
        assert!(LogEntry::decode_payload(1, 1, &[1, 0xff, 0xff]).is_err());
    }
}
