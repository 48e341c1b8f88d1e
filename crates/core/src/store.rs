//! The in-memory keyspace state of one node.
//!
//! Owns every key's value and expiry. It changes only through
//! [`Store::apply`] with a row [`Effect`], on the leader and on replay alike,
//! so a replica that applies the same log holds the same state. Reads take
//! `now_ms` from the caller and hide keys whose expiry has passed; the store
//! itself never deletes on a read and never reads a clock.
//!
//! Layout: a fixed number of hash-table buckets chosen by key hash. The
//! buckets keep resizes small (no stop-the-world rehash of the whole table),
//! give `SCAN` a stable cursor (a bucket index), and let a snapshot copy one
//! bucket at a time while writes continue between buckets (fuzzy snapshot:
//! correct because effects are replay-safe, see [`crate::effect`]).
//!
//! Memory: a string key and its value share one allocation (`kv`), so a key
//! costs one table slot of 40 bytes plus one heap block.

use bytes::Bytes;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3Builder};

use crate::effect::Effect;

/// Number of hash-table buckets the keyspace is split into.
pub const BUCKETS: usize = 1024;

/// A set value: members hashed with the store's seeded hasher.
pub type SetValue = hashbrown::HashSet<Box<[u8]>, Xxh3Builder>;

/// One key and its value.
struct Slot {
    /// For a string: key bytes followed by value bytes. For a set: the key.
    kv: Box<[u8]>,
    key_len: u32,
    /// Absolute expiry in unix ms; 0 means no expiry.
    expire_at_ms: u64,
    /// Present iff the value is a set.
    set: Option<Box<SetValue>>,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.kv[..self.key_len as usize]
    }
    fn expire(&self) -> Option<u64> {
        (self.expire_at_ms != 0).then_some(self.expire_at_ms)
    }
    fn is_live(&self, now_ms: u64) -> bool {
        self.expire_at_ms == 0 || self.expire_at_ms > now_ms
    }
    fn value(&self) -> ValueRef<'_> {
        match &self.set {
            Some(set) => ValueRef::Set(set),
            None => ValueRef::Str(&self.kv[self.key_len as usize..]),
        }
    }
}

/// A borrowed view of a live value.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// A string (bytes).
    Str(&'a [u8]),
    /// A set of members.
    Set(&'a SetValue),
}

impl ValueRef<'_> {
    /// Redis's name for the type (`TYPE` command).
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Str(_) => "string",
            ValueRef::Set(_) => "set",
        }
    }
}

/// A snapshot chunk could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed snapshot chunk at byte {offset}: {reason}")]
pub struct ChunkDecodeError {
    /// Offset within the chunk.
    pub offset: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// The keyspace state.
pub struct Store {
    buckets: Vec<HashTable<Slot>>,
    hash_seed: u64,
    keys: usize,
    keys_with_expiry: usize,
    /// Where the next active-expiry sweep starts (bucket index).
    expire_cursor: usize,
}

impl Store {
    /// An empty store. `hash_seed` keys the hash function (pass a random
    /// value in production against hash flooding, a fixed one in tests).
    pub fn new(hash_seed: u64) -> Store {
        Store {
            buckets: (0..BUCKETS).map(|_| HashTable::new()).collect(),
            hash_seed,
            keys: 0,
            keys_with_expiry: 0,
            expire_cursor: 0,
        }
    }

    /// The seed of the key hash.
    pub fn hash_seed(&self) -> u64 {
        self.hash_seed
    }

    /// Number of keys held, including expired keys not yet removed (like
    /// Redis's `DBSIZE`).
    pub fn len(&self) -> usize {
        self.keys
    }

    /// True if the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Number of keys that carry an expiry.
    pub fn keys_with_expiry(&self) -> usize {
        self.keys_with_expiry
    }

    fn hash(&self, key: &[u8]) -> u64 {
        xxh3_64_with_seed(key, self.hash_seed)
    }

    /// Bucket index from middle hash bits: hashbrown uses the low bits for
    /// the position and the top 7 bits as the tag, so those must vary
    /// inside a bucket.
    fn bucket_of(hash: u64) -> usize {
        ((hash >> 32) as usize) % BUCKETS
    }

    fn slot(&self, key: &[u8]) -> Option<&Slot> {
        let h = self.hash(key);
        self.buckets[Self::bucket_of(h)].find(h, |s| s.key() == key)
    }

    /// The live value and expiry of `key` at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: u64) -> Option<(ValueRef<'_>, Option<u64>)> {
        self.slot(key).filter(|s| s.is_live(now_ms)).map(|s| (s.value(), s.expire()))
    }

    /// True if `key` is present but its expiry has passed at `now_ms`: a
    /// writer must delete it (with a `Del` effect) before reusing the key.
    pub fn is_expired(&self, key: &[u8], now_ms: u64) -> bool {
        self.slot(key).is_some_and(|s| !s.is_live(now_ms))
    }

    /// Applies one effect. Never fails: the leader validated the command,
    /// and replay must accept whatever the log says.
    pub fn apply(&mut self, effect: &Effect) {
        match effect {
            Effect::Set { key, value, expire_at_ms } => {
                let mut kv = Vec::with_capacity(key.len() + value.len());
                kv.extend_from_slice(key);
                kv.extend_from_slice(value);
                self.put(Slot {
                    kv: kv.into_boxed_slice(),
                    key_len: key.len() as u32,
                    expire_at_ms: expire_at_ms.unwrap_or(0),
                    set: None,
                });
            }
            Effect::Del { key } => {
                self.remove(key);
            }
            Effect::Expire { key, expire_at_ms } => {
                let h = self.hash(key);
                if let Some(slot) = self.buckets[Self::bucket_of(h)].find_mut(h, |s| s.key() == &key[..]) {
                    let had = slot.expire_at_ms != 0;
                    slot.expire_at_ms = expire_at_ms.unwrap_or(0);
                    let has = slot.expire_at_ms != 0;
                    self.keys_with_expiry = self.keys_with_expiry + has as usize - had as usize;
                }
            }
            Effect::SAdd { key, members } => {
                let h = self.hash(key);
                let seed = self.hash_seed;
                let bucket = &mut self.buckets[Self::bucket_of(h)];
                let slot = match bucket.find_mut(h, |s| s.key() == &key[..]) {
                    Some(slot) if slot.set.is_some() => slot,
                    _ => {
                        // Missing, or another type (only possible on replay
                        // from a fuzzy snapshot): becomes a fresh set.
                        self.put(Slot {
                            kv: key.to_vec().into_boxed_slice(),
                            key_len: key.len() as u32,
                            expire_at_ms: 0,
                            set: Some(Box::new(SetValue::with_hasher(Xxh3Builder::new().with_seed(seed)))),
                        });
                        self.buckets[Self::bucket_of(h)].find_mut(h, |s| s.key() == &key[..]).expect("just inserted")
                    }
                };
                let set = slot.set.as_mut().expect("slot is a set");
                for m in members {
                    set.insert(m.to_vec().into_boxed_slice());
                }
            }
            Effect::SRem { key, members } => {
                let h = self.hash(key);
                let bucket = &mut self.buckets[Self::bucket_of(h)];
                let mut now_empty = false;
                if let Some(slot) = bucket.find_mut(h, |s| s.key() == &key[..]) {
                    if let Some(set) = slot.set.as_mut() {
                        for m in members {
                            set.remove(&m[..]);
                        }
                        now_empty = set.is_empty();
                    }
                }
                if now_empty {
                    self.remove(key);
                }
            }
            Effect::FlushAll => {
                for b in &mut self.buckets {
                    *b = HashTable::new();
                }
                self.keys = 0;
                self.keys_with_expiry = 0;
            }
        }
    }

    fn put(&mut self, slot: Slot) {
        let h = self.hash(slot.key());
        let seed = self.hash_seed;
        let has_expiry = slot.expire_at_ms != 0;
        let bucket = &mut self.buckets[Self::bucket_of(h)];
        match bucket.entry(h, |s| s.key() == slot.key(), |s| xxh3_64_with_seed(s.key(), seed)) {
            TableEntry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), slot);
                self.keys_with_expiry = self.keys_with_expiry + has_expiry as usize - (old.expire_at_ms != 0) as usize;
            }
            TableEntry::Vacant(v) => {
                v.insert(slot);
                self.keys += 1;
                self.keys_with_expiry += has_expiry as usize;
            }
        }
    }

    fn remove(&mut self, key: &[u8]) -> bool {
        let h = self.hash(key);
        match self.buckets[Self::bucket_of(h)].find_entry(h, |s| s.key() == key) {
            Ok(o) => {
                let (old, _) = o.remove();
                self.keys -= 1;
                self.keys_with_expiry -= (old.expire_at_ms != 0) as usize;
                true
            }
            Err(_) => false,
        }
    }

    /// Calls `f` with every live key of the buckets from `cursor` on, until
    /// at least `count` keys were visited or the end is reached. Returns the
    /// next cursor (0 when the scan is complete), like Redis `SCAN`: a key
    /// present for the whole scan is returned at least once.
    pub fn scan(&self, cursor: u64, count: usize, now_ms: u64, mut f: impl FnMut(&[u8])) -> u64 {
        let mut bucket = cursor as usize;
        let mut visited = 0usize;
        while bucket < BUCKETS {
            for slot in self.buckets[bucket].iter().filter(|s| s.is_live(now_ms)) {
                f(slot.key());
                visited += 1;
            }
            bucket += 1;
            if visited >= count {
                break;
            }
        }
        if bucket >= BUCKETS {
            0
        } else {
            bucket as u64
        }
    }

    /// Up to `max` keys whose expiry has passed, sampled from a rotating
    /// position so repeated sweeps cover the whole keyspace. The caller
    /// deletes them through `Del` effects (on the leader only).
    pub fn collect_expired(&mut self, now_ms: u64, max: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        if self.keys_with_expiry == 0 {
            return out;
        }
        // Bound the work per sweep: at most a quarter of the buckets.
        for _ in 0..BUCKETS / 4 {
            let b = self.expire_cursor;
            self.expire_cursor = (self.expire_cursor + 1) % BUCKETS;
            for slot in self.buckets[b].iter() {
                if !slot.is_live(now_ms) {
                    out.push(Bytes::copy_from_slice(slot.key()));
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// Encodes bucket `index` as a snapshot chunk into `out` (appending).
    /// Format per key: `u8 type (0 string, 1 set) | u64 expire_at_ms (0 =
    /// none) | u32 key_len | key | string: u32 len | bytes ; set: u32 count |
    /// (u32 len | member)*`, little-endian.
    pub fn encode_bucket(&self, index: usize, out: &mut Vec<u8>) {
        for slot in self.buckets[index].iter() {
            out.push(slot.set.is_some() as u8);
            out.extend_from_slice(&slot.expire_at_ms.to_le_bytes());
            put_bytes(out, slot.key());
            match (&slot.set, slot.value()) {
                (Some(set), _) => {
                    out.extend_from_slice(&(set.len() as u32).to_le_bytes());
                    for m in set.iter() {
                        put_bytes(out, m);
                    }
                }
                (None, ValueRef::Str(v)) => put_bytes(out, v),
                (None, ValueRef::Set(_)) => unreachable!("a slot without a set is a string"),
            }
        }
    }

    /// Loads a chunk written by [`Store::encode_bucket`], replacing any key
    /// it contains.
    pub fn load_chunk(&mut self, chunk: &[u8]) -> Result<usize, ChunkDecodeError> {
        let mut r = Reader { buf: chunk, pos: 0 };
        let mut loaded = 0;
        while r.pos < chunk.len() {
            let kind = r.u8()?;
            let expire_at_ms = r.u64()?;
            let key = r.bytes()?;
            match kind {
                0 => {
                    let value = r.bytes()?;
                    let mut kv = Vec::with_capacity(key.len() + value.len());
                    kv.extend_from_slice(key);
                    kv.extend_from_slice(value);
                    self.put(Slot { kv: kv.into_boxed_slice(), key_len: key.len() as u32, expire_at_ms, set: None });
                }
                1 => {
                    let count = r.u32()? as usize;
                    let mut set = SetValue::with_capacity_and_hasher(
                        count.min(chunk.len()),
                        Xxh3Builder::new().with_seed(self.hash_seed),
                    );
                    for _ in 0..count {
                        set.insert(r.bytes()?.to_vec().into_boxed_slice());
                    }
                    self.put(Slot {
                        kv: key.to_vec().into_boxed_slice(),
                        key_len: key.len() as u32,
                        expire_at_ms,
                        set: Some(Box::new(set)),
                    });
                }
                _ => return Err(ChunkDecodeError { offset: r.pos - 1, reason: "unknown value type" }),
            }
            loaded += 1;
        }
        Ok(loaded)
    }

    /// A digest of the whole live state at `now_ms`, independent of hash
    /// seed and insertion order: equal stores give equal digests. Used by
    /// tests and checkers to compare replicas.
    pub fn digest(&self) -> u64 {
        let mut acc = 0u64;
        for bucket in &self.buckets {
            for slot in bucket.iter() {
                let mut h = xxh3_64_with_seed(slot.key(), 0) ^ slot.expire_at_ms.rotate_left(17);
                match slot.value() {
                    ValueRef::Str(v) => h ^= xxh3_64_with_seed(v, 1),
                    ValueRef::Set(s) => {
                        let mut m = 0u64;
                        for member in s.iter() {
                            m = m.wrapping_add(xxh3_64_with_seed(member, 2));
                        }
                        h ^= m.rotate_left(7) ^ 0x5e7;
                    }
                }
                acc = acc.wrapping_add(h.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            }
        }
        acc ^ self.keys as u64
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ChunkDecodeError> {
        if self.buf.len() - self.pos < n {
            return Err(ChunkDecodeError { offset: self.pos, reason: "truncated" });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ChunkDecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, ChunkDecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64, ChunkDecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self) -> Result<&'a [u8], ChunkDecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str, exp: Option<u64>) -> Effect {
        Effect::Set {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            expire_at_ms: exp,
        }
    }

    #[test]
    fn expired_keys_are_never_returned() {
        let mut s = Store::new(1);
        s.apply(&set("a", "1", Some(100)));
        assert!(s.get(b"a", 99).is_some());
        assert!(s.get(b"a", 100).is_none());
        assert!(s.is_expired(b"a", 100));
        assert_eq!(s.collect_expired(100, 10), vec![Bytes::from_static(b"a")]);
    }

    #[test]
    fn counters_track_keys_and_expiries() {
        let mut s = Store::new(1);
        s.apply(&set("a", "1", Some(100)));
        s.apply(&set("a", "2", None));
        s.apply(&Effect::SAdd { key: "s".into(), members: vec!["x".into()] });
        assert_eq!((s.len(), s.keys_with_expiry()), (2, 0));
        s.apply(&Effect::Expire { key: "s".into(), expire_at_ms: Some(5) });
        assert_eq!(s.keys_with_expiry(), 1);
        s.apply(&Effect::SRem { key: "s".into(), members: vec!["x".into()] });
        assert_eq!((s.len(), s.keys_with_expiry()), (1, 0));
        s.apply(&Effect::FlushAll);
        assert!(s.is_empty());
    }

    #[test]
    fn snapshot_chunks_roundtrip_to_an_equal_digest() {
        let mut s = Store::new(7);
        for i in 0..5000 {
            s.apply(&set(&format!("k{i}"), &format!("v{i}"), (i % 3 == 0).then_some(10_000 + i)));
        }
        s.apply(&Effect::SAdd { key: "set".into(), members: vec!["a".into(), "b".into()] });
        let mut t = Store::new(99);
        let mut buf = Vec::new();
        for b in 0..BUCKETS {
            buf.clear();
            s.encode_bucket(b, &mut buf);
            t.load_chunk(&buf).unwrap();
        }
        assert_eq!(s.digest(), t.digest());
        assert_eq!(s.len(), t.len());
        assert_eq!(s.keys_with_expiry(), t.keys_with_expiry());
    }

    #[test]
    fn truncated_chunk_is_an_error() {
        let mut s = Store::new(7);
        s.apply(&set("key", "value", None));
        let mut buf = Vec::new();
        for b in 0..BUCKETS {
            s.encode_bucket(b, &mut buf);
        }
        buf.pop();
        assert!(Store::new(1).load_chunk(&buf).is_err());
    }

    #[test]
    fn scan_visits_every_key_once_when_nothing_changes() {
        let mut s = Store::new(3);
        for i in 0..3000 {
            s.apply(&set(&format!("k{i}"), "v", None));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        loop {
            cursor = s.scan(cursor, 100, 0, |k| assert!(seen.insert(k.to_vec())));
            if cursor == 0 {
                break;
            }
        }
        assert_eq!(seen.len(), 3000);
    }

    /// Fuzzy snapshots are correct only if replaying effects from an earlier
    /// point onto a later captured state converges to the final state.
    #[test]
    fn replaying_a_log_suffix_over_a_later_state_converges() {
        let log = vec![
            Effect::SAdd { key: "k".into(), members: vec!["x".into()] },
            Effect::Del { key: "k".into() },
            set("k", "s", Some(50)),
            Effect::Expire { key: "k".into(), expire_at_ms: None },
            Effect::SAdd { key: "k".into(), members: vec!["y".into()] },
            Effect::SRem { key: "k".into(), members: vec!["y".into()] },
            set("k", "t", None),
        ];
        let mut truth = Store::new(1);
        for e in &log {
            truth.apply(e);
        }
        for captured_at in 0..=log.len() {
            for replay_from in 0..=captured_at {
                let mut s = Store::new(1);
                for e in &log[..captured_at] {
                    s.apply(e);
                }
                for e in &log[replay_from..] {
                    s.apply(e);
                }
                assert_eq!(s.digest(), truth.digest(), "captured {captured_at} replay {replay_from}");
            }
        }
    }
}
