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
//! Memory: a key costs one 24-byte table slot plus one heap block holding
//! `[expiry (8 bytes, only if the key has one)][key][value]`; a set, hash
//! or list key's block ends with the index of its value in the store's
//! object slab instead of a value.
//! Collections are compact (docs/decisions/0033-compact-collections.md):
//! a list is packed nodes ([`PackedList`]), a hash entry one inline-or-boxed
//! block ([`PackedHash`]), a set or sorted-set member inline when short
//! ([`Member`]).
//!
//! Memory accounting (`maxmemory`, docs/decisions/0019-maxmemory.md): the
//! store keeps a running estimate of the bytes its keys and values take
//! ([`Store::used_bytes`]): every slot and every collection element is
//! charged its length plus a fixed overhead when it enters and credited
//! when it leaves, so the estimate costs O(1) per changed element and never
//! walks the store (a whole collection is walked only when it is dropped or
//! moved whole, which costs that much anyway). Each slot also carries a
//! 32-bit access stamp from a store-wide counter (bumped by every `get` and
//! every write of the key), which the approximated LRU eviction compares.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3Builder};

use crate::effect::Effect;

mod packed_hash;
mod packed_list;
mod small_bytes;
mod zset;
pub use packed_hash::PackedHash;
pub use packed_list::PackedList;
pub use small_bytes::{Member, SmallBytes};
pub use zset::{Score, ZSetValue};

/// Number of hash-table buckets the keyspace is split into.
pub const BUCKETS: usize = 1024;

/// A set value: members (inline when short, see [`Member`]) hashed with
/// the store's seeded hasher.
pub type SetValue = hashbrown::HashSet<Member, Xxh3Builder>;
/// A hash value: field -> value, each pair packed in one heap block,
/// hashed with the store's seeded hasher (see [`PackedHash`]).
pub type HashValue = PackedHash;

/// A list value and its change counter.
#[derive(Debug, Default)]
pub struct ListValue {
    /// The elements, head first, packed (see [`PackedList`]).
    pub items: PackedList,
    /// Number of list effects that built this list since it was created:
    /// a list effect carries the value it sets, and is skipped when the
    /// list already went past it (replay over a fuzzy snapshot, see
    /// [`crate::effect`]).
    pub seq: u64,
}

/// A value held in the object slab.
enum Obj {
    Set(SetValue),
    Hash(HashValue),
    List(ListValue),
    ZSet(ZSetValue),
}

/// `Slot::meta` flag: the value is an object (the block ends with a slab
/// index).
const SET_FLAG: u32 = 1 << 31;
/// `Slot::meta` flag: the block starts with an 8-byte expiry.
const EXPIRY_FLAG: u32 = 1 << 30;
/// `Slot::meta` bits holding the key length.
const KEY_LEN_MASK: u32 = EXPIRY_FLAG - 1;
/// Longest key the store can hold (far above the protocol's bulk limit).
pub const KEY_BYTES_MAX: usize = KEY_LEN_MASK as usize;
/// Largest snapshot chunk the node writes or sends
/// ([`Store::encode_bucket_chunks`]): one log entry's worth, which every
/// value admitted by the write budget fits with its key.
pub const CHUNK_BYTES_MAX: usize = crate::write::ENTRY_PAYLOAD_BYTES_MAX;

/// One key and its value, in one heap block.
struct Slot {
    /// `[expire_at_ms: u64 LE if EXPIRY_FLAG][key][value | set index: u32 LE]`.
    kv: Box<[u8]>,
    /// Key length and flags.
    meta: u32,
    /// Access stamp (the store's access counter at the last read or write
    /// of the key), for approximated LRU eviction. Atomic because reads
    /// update it under a shared borrow; it sits in what was padding.
    lru: AtomicU32,
}

/// Bytes charged per key besides its key and value bytes: the table slot,
/// the heap block's allocator header and the table's spare capacity.
pub const KEY_OVERHEAD_BYTES: usize = 48;
/// Bytes charged per collection (set, hash, list, sorted set) besides its
/// elements: the slab entry and the empty container.
pub const OBJECT_OVERHEAD_BYTES: usize = 64;
/// Bytes charged per set member or list element besides its bytes (its box
/// and allocator header, the container's slot).
pub const ELEMENT_OVERHEAD_BYTES: usize = 40;
/// Bytes charged per list element besides its bytes (its length prefix
/// and its share of a packed node, see [`PackedList`]).
pub const LIST_ELEMENT_OVERHEAD_BYTES: usize = 2;
/// Bytes charged per hash field besides the field's and value's bytes (two
/// boxes and the table slot).
pub const FIELD_OVERHEAD_BYTES: usize = 64;
/// Bytes charged per sorted-set member besides its bytes (its key in the
/// ordered tree, its 12-byte index slot, and the spare room of both; see
/// [`ZSetValue`]).
pub const ZMEMBER_OVERHEAD_BYTES: usize = 96;

fn member_cost(m: &[u8]) -> usize {
    m.len() + ELEMENT_OVERHEAD_BYTES
}

fn list_element_cost(i: &[u8]) -> usize {
    i.len() + LIST_ELEMENT_OVERHEAD_BYTES
}

fn field_cost(f: &[u8], v: &[u8]) -> usize {
    f.len() + v.len() + FIELD_OVERHEAD_BYTES
}

fn zmember_cost(m: &[u8]) -> usize {
    m.len() + ZMEMBER_OVERHEAD_BYTES
}

// The memory budget per key depends on it.
const _: () = assert!(std::mem::size_of::<Slot>() == 24);

impl Slot {
    fn build(key: &[u8], expire_at_ms: u64, tail: &[u8], is_set: bool) -> Slot {
        assert!(key.len() <= KEY_BYTES_MAX, "key of {} bytes exceeds KEY_BYTES_MAX", key.len());
        let has_expiry = expire_at_ms != 0;
        let mut kv = Vec::with_capacity(8 * has_expiry as usize + key.len() + tail.len());
        if has_expiry {
            kv.extend_from_slice(&expire_at_ms.to_le_bytes());
        }
        kv.extend_from_slice(key);
        kv.extend_from_slice(tail);
        let meta = key.len() as u32 | if has_expiry { EXPIRY_FLAG } else { 0 } | if is_set { SET_FLAG } else { 0 };
        Slot { kv: kv.into_boxed_slice(), meta, lru: AtomicU32::new(0) }
    }

    /// Bytes this slot is charged (its object, if any, is charged apart).
    fn cost(&self) -> usize {
        self.kv.len() + KEY_OVERHEAD_BYTES
    }

    fn stamp(&self) -> u32 {
        self.lru.load(Ordering::Relaxed)
    }

    fn key_start(&self) -> usize {
        if self.meta & EXPIRY_FLAG != 0 {
            8
        } else {
            0
        }
    }

    fn key(&self) -> &[u8] {
        let start = self.key_start();
        &self.kv[start..start + (self.meta & KEY_LEN_MASK) as usize]
    }

    /// The value bytes (string) or the set index bytes (set).
    fn tail(&self) -> &[u8] {
        &self.kv[self.key_start() + (self.meta & KEY_LEN_MASK) as usize..]
    }

    fn is_set(&self) -> bool {
        self.meta & SET_FLAG != 0
    }

    fn set_index(&self) -> Option<usize> {
        self.is_set().then(|| u32::from_le_bytes(self.tail()[..4].try_into().expect("4 bytes")) as usize)
    }

    /// Absolute expiry in unix ms; 0 means none.
    fn expire_at_ms(&self) -> u64 {
        if self.meta & EXPIRY_FLAG != 0 {
            u64::from_le_bytes(self.kv[..8].try_into().expect("8 bytes"))
        } else {
            0
        }
    }

    fn expire(&self) -> Option<u64> {
        (self.meta & EXPIRY_FLAG != 0).then(|| self.expire_at_ms())
    }

    fn is_live(&self, now_ms: u64) -> bool {
        let at = self.expire_at_ms();
        at == 0 || at > now_ms
    }

    /// The same key and value with another expiry (0: none).
    fn with_expiry(&self, expire_at_ms: u64) -> Slot {
        let slot = Slot::build(self.key(), expire_at_ms, self.tail(), self.is_set());
        slot.lru.store(self.stamp(), Ordering::Relaxed);
        slot
    }

    fn value<'a>(&'a self, sets: &'a SetSlab) -> ValueRef<'a> {
        match self.set_index().map(|i| sets.get(i)) {
            Some(Obj::Set(s)) => ValueRef::Set(s),
            Some(Obj::Hash(h)) => ValueRef::Hash(h),
            Some(Obj::List(l)) => ValueRef::List(l),
            Some(Obj::ZSet(z)) => ValueRef::ZSet(z),
            None => ValueRef::Str(self.tail()),
        }
    }
}

/// Bytes a whole collection is charged (walks it: called only when the
/// collection enters or leaves the store whole).
fn obj_cost(obj: &Obj) -> usize {
    OBJECT_OVERHEAD_BYTES
        + match obj {
            Obj::Set(s) => s.iter().map(|m| member_cost(m)).sum::<usize>(),
            Obj::Hash(h) => h.iter().map(|(f, v)| field_cost(f, v)).sum(),
            Obj::List(l) => l.items.iter().map(list_element_cost).sum(),
            Obj::ZSet(z) => z.order().iter().map(|(_, m)| zmember_cost(m)).sum(),
        }
}

/// Set, hash and list values, addressed by index from their slots; freed
/// indexes are reused.
#[derive(Default)]
struct SetSlab {
    sets: Vec<Option<Obj>>,
    free: Vec<u32>,
    /// Bytes charged for the objects held (see [`obj_cost`]), kept current
    /// by insert/remove and by the in-place changes through `Store`.
    bytes: usize,
}

impl SetSlab {
    fn insert(&mut self, set: Obj) -> u32 {
        self.bytes += obj_cost(&set);
        match self.free.pop() {
            Some(i) => {
                self.sets[i as usize] = Some(set);
                i
            }
            None => {
                self.sets.push(Some(set));
                u32::try_from(self.sets.len() - 1).expect("fewer than 2^32 sets")
            }
        }
    }

    fn get(&self, i: usize) -> &Obj {
        self.sets[i].as_ref().expect("an object slot points at a live object")
    }

    fn get_mut(&mut self, i: usize) -> &mut Obj {
        self.sets[i].as_mut().expect("an object slot points at a live object")
    }

    fn remove(&mut self, i: usize) {
        self.take(i);
    }

    fn take(&mut self, i: usize) -> Obj {
        let obj = self.sets[i].take().expect("an object slot points at a live object");
        self.bytes -= obj_cost(&obj);
        self.free.push(i as u32);
        obj
    }
}

/// A borrowed view of a live value.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// A string (bytes).
    Str(&'a [u8]),
    /// A set of members.
    Set(&'a SetValue),
    /// A hash of fields.
    Hash(&'a HashValue),
    /// A list.
    List(&'a ListValue),
    /// A sorted set.
    ZSet(&'a ZSetValue),
}

impl ValueRef<'_> {
    /// Redis's name for the type (`TYPE` command).
    pub fn type_name(&self) -> &'static str {
        match self {
            ValueRef::Str(_) => "string",
            ValueRef::Set(_) => "set",
            ValueRef::Hash(_) => "hash",
            ValueRef::List(_) => "list",
            ValueRef::ZSet(_) => "zset",
        }
    }
}

/// The kind of a slab object.
#[derive(PartialEq, Eq, Clone, Copy)]
enum ObjKind {
    Set,
    Hash,
    List,
    ZSet,
}

impl ObjKind {
    fn of(obj: &Obj) -> ObjKind {
        match obj {
            Obj::Set(_) => ObjKind::Set,
            Obj::Hash(_) => ObjKind::Hash,
            Obj::List(_) => ObjKind::List,
            Obj::ZSet(_) => ObjKind::ZSet,
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

/// A key removed from the store with its value, kept for an undo.
pub struct Taken {
    slot: Slot,
    obj: Option<Box<Obj>>,
}

impl std::fmt::Debug for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Taken {{ key_bytes: {}, object: {} }}", self.slot.key().len(), self.obj.is_some())
    }
}

/// A whole keyspace moved out by a `FlushAll`, kept for an undo.
pub struct Flushed {
    buckets: Vec<HashTable<Slot>>,
    sets: SetSlab,
    keys: usize,
    keys_with_expiry: usize,
    slot_bytes: usize,
}

impl std::fmt::Debug for Flushed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Flushed {{ keys: {} }}", self.keys)
    }
}

/// A hash field and its value before an effect (`None`: it was absent).
pub type FieldBefore = (Box<[u8]>, Option<Box<[u8]>>);

/// What undoes one applied effect (see [`Store::apply_undoable`]).
#[derive(Debug)]
pub enum Undo {
    /// The effect changed nothing.
    Nothing,
    /// Put the key back as it was (absent if `before` is `None`).
    Restore {
        /// The key.
        key: Bytes,
        /// Its state before, moved out.
        before: Option<Taken>,
    },
    /// Give the key its earlier expiry (`Some(0)`: none; `None`: the key
    /// was absent, nothing to undo).
    Expiry {
        /// The key.
        key: Bytes,
        /// Its expiry before.
        before: Option<u64>,
    },
    /// Take members out of / back into the set at `key`.
    SetMembers {
        /// The key.
        key: Bytes,
        /// Members the effect added.
        added: Vec<Box<[u8]>>,
        /// Members the effect removed.
        removed: Vec<Box<[u8]>>,
        /// The set's expiry, in case the effect removed the whole set.
        expire_at_ms: u64,
    },
    /// Give fields of the hash at `key` their earlier values (`None`: the
    /// field was absent), newest first.
    Fields {
        /// The key.
        key: Bytes,
        /// The hash's expiry, in case the effect removed the whole hash.
        expire_at_ms: u64,
        /// Each changed field and its value before, moved out.
        before: Vec<FieldBefore>,
    },
    /// Give members of the sorted set at `key` their earlier scores
    /// (`None`: not a member), newest first.
    Scores {
        /// The key.
        key: Bytes,
        /// The sorted set's expiry, in case the effect removed it.
        expire_at_ms: u64,
        /// Each changed member and its score before.
        before: Vec<(Box<[u8]>, Option<f64>)>,
    },
    /// Reverse one list effect and give the list its earlier change count.
    List {
        /// The key.
        key: Bytes,
        /// The list's expiry, in case the effect removed the whole list.
        expire_at_ms: u64,
        /// The change count before.
        seq: u64,
        /// What the effect did.
        change: ListUndo,
    },
    /// Put the whole keyspace back.
    Flush(Box<Flushed>),
}

/// How to reverse one list effect (see [`Undo::List`]).
#[derive(Debug)]
pub enum ListUndo {
    /// Nothing changed but the count.
    Nothing,
    /// Take `count` elements off the head (`left`) or tail.
    Pushed {
        /// Which end.
        left: bool,
        /// How many.
        count: usize,
    },
    /// Put these popped elements back, in pop order, at the head (`left`)
    /// or tail.
    Popped {
        /// Which end.
        left: bool,
        /// The elements, moved out.
        items: Vec<Box<[u8]>>,
    },
    /// Put `value` back at `index`.
    Set {
        /// The index.
        index: usize,
        /// The element before, moved out.
        value: Box<[u8]>,
    },
    /// Put the whole earlier element list back (it was replaced whole).
    Replaced(PackedList),
}

/// The keyspace state.
pub struct Store {
    buckets: Vec<HashTable<Slot>>,
    sets: SetSlab,
    hash_seed: u64,
    keys: usize,
    keys_with_expiry: usize,
    /// Where the next active-expiry sweep starts (bucket index).
    expire_cursor: usize,
    /// Bytes charged for the slots (keys, string values, expiries).
    slot_bytes: usize,
    /// Access counter behind the slots' LRU stamps (wraps; ages are
    /// compared with wrapping arithmetic).
    clock: AtomicU32,
    /// The thresholds behind the encoding names `OBJECT ENCODING` reports.
    encoding: crate::encoding::EncodingLimits,
    /// Counts calls to [`Store::call_nonce`]: random replies (`RANDOMKEY`,
    /// `SRANDMEMBER`, ...) differ between calls in the same millisecond.
    nonce: std::sync::atomic::AtomicU64,
}

impl Store {
    /// An empty store. `hash_seed` keys the hash function (pass a random
    /// value in production against hash flooding, a fixed one in tests).
    pub fn new(hash_seed: u64) -> Store {
        Store {
            buckets: (0..BUCKETS).map(|_| HashTable::new()).collect(),
            sets: SetSlab::default(),
            hash_seed,
            keys: 0,
            keys_with_expiry: 0,
            expire_cursor: 0,
            slot_bytes: 0,
            clock: AtomicU32::new(0),
            encoding: crate::encoding::EncodingLimits::default(),
            nonce: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A number that differs on every call (a counter): mixed into the
    /// seed of a command's random choices so that two calls in the same
    /// millisecond choose independently. Deterministic for a given
    /// sequence of calls (no clock, no OS randomness).
    pub fn call_nonce(&self) -> u64 {
        self.nonce.fetch_add(1, Ordering::Relaxed)
    }

    /// The encoding thresholds (`CONFIG GET hash-max-listpack-entries` ...).
    pub fn encoding_limits(&self) -> crate::encoding::EncodingLimits {
        self.encoding
    }

    /// Replaces the encoding thresholds (`CONFIG SET`; names only, no data
    /// changes).
    pub fn set_encoding_limits(&mut self, limits: crate::encoding::EncodingLimits) {
        self.encoding = limits;
    }

    /// The running estimate of the bytes the keys and values take (what
    /// `maxmemory` is compared with); see the module doc.
    pub fn used_bytes(&self) -> usize {
        self.slot_bytes + self.sets.bytes
    }

    /// The estimate recomputed by walking every key (tests and checkers
    /// compare it with [`Store::used_bytes`]; O(store)).
    pub fn used_bytes_walked(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.iter())
            .map(|s| s.cost() + s.set_index().map_or(0, |i| obj_cost(self.sets.get(i))))
            .sum()
    }

    /// The bytes `key` and its value are charged in the estimate behind
    /// [`Store::used_bytes`] (`MEMORY USAGE`); `None` if the key does not
    /// exist or has expired at `now_ms`.
    pub fn key_bytes(&self, key: &[u8], now_ms: u64) -> Option<usize> {
        self.get(key, now_ms)?;
        let slot = self.slot(key)?;
        Some(slot.cost() + slot.set_index().map_or(0, |i| obj_cost(self.sets.get(i))))
    }

    fn tick(&self) -> u32 {
        self.clock.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }

    /// Visits up to `max_slots` keys starting at bucket `start` (wrapping),
    /// with each key's expiry (0: none) and its idle age in accesses (how
    /// many reads and writes of any key happened since this key's last
    /// one), until `f` returns false. For eviction sampling
    /// (`crate::evict`).
    pub fn sample(&self, start: usize, max_slots: usize, mut f: impl FnMut(&[u8], u64, u32) -> bool) {
        let now = self.clock.load(Ordering::Relaxed);
        let mut seen = 0;
        for b in 0..BUCKETS {
            for slot in self.buckets[(start + b) % BUCKETS].iter() {
                seen += 1;
                if !f(slot.key(), slot.expire_at_ms(), now.wrapping_sub(slot.stamp())) || seen >= max_slots {
                    return;
                }
            }
        }
    }

    /// Makes room for about `keys` more keys at once (bulk loads: restore),
    /// so the tables do not rehash every key several times while growing.
    pub fn reserve(&mut self, keys: usize) {
        let seed = self.hash_seed;
        let per_bucket = keys / BUCKETS + 1;
        for bucket in &mut self.buckets {
            bucket.reserve(per_bucket, |s| xxh3_64_with_seed(s.key(), seed));
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
        let slot = self.slot(key).filter(|s| s.is_live(now_ms))?;
        slot.lru.store(self.tick(), Ordering::Relaxed);
        Some((slot.value(&self.sets), slot.expire()))
    }

    /// True if `key` is present, expired or not (no access is recorded).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.slot(key).is_some()
    }

    /// True if `key` is present but its expiry has passed at `now_ms`: a
    /// writer must delete it (with a `Del` effect) before reusing the key.
    pub fn is_expired(&self, key: &[u8], now_ms: u64) -> bool {
        self.slot(key).is_some_and(|s| !s.is_live(now_ms))
    }

    /// Applies one effect. Never fails: the leader validated the command,
    /// and replay must accept whatever the log says.
    pub fn apply(&mut self, effect: &Effect) {
        self.charged(effect, |s| s.apply_raw(effect))
    }

    /// Runs `f`, which applies `effect`, and charges the bytes the
    /// effect's elements gained or lost inside an existing collection
    /// (whole slots and collections are charged by `put`, `remove` and the
    /// slab). The elements touched are measured before and after, so the
    /// cost is that of the effect, never of the whole collection (except
    /// `LReplace`, which rewrites the whole list anyway).
    fn charged<R>(&mut self, effect: &Effect, f: impl FnOnce(&mut Self) -> R) -> R {
        let list_applies = match effect {
            Effect::LPush { key, seq, .. }
            | Effect::LPop { key, seq, .. }
            | Effect::LSet { key, seq, .. }
            | Effect::LReplace { key, seq, .. } => match self.existing(key, ObjKind::List) {
                Some((i, _)) => {
                    let Obj::List(list) = self.sets.get(i) else { unreachable!("kind checked") };
                    !(list.seq >= *seq && list.seq != 0)
                }
                None => true,
            },
            _ => true,
        };
        let before = if list_applies { self.touched_cost(effect, true) } else { 0 };
        let r = f(self);
        let after = if list_applies { self.touched_cost(effect, false) } else { 0 };
        self.sets.bytes = self.sets.bytes + after - before;
        r
    }

    /// The bytes charged for the elements `effect` touches in the
    /// collection at its key, if the key holds one of the effect's kind
    /// (`before`: measured before the effect is applied).
    fn touched_cost(&self, effect: &Effect, before: bool) -> usize {
        fn unique(m: impl Iterator<Item = Bytes>) -> Vec<Bytes> {
            let mut v: Vec<Bytes> = m.collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        let Some(key) = effect.key() else { return 0 };
        let kind = match effect {
            Effect::SAdd { .. } | Effect::SRem { .. } => ObjKind::Set,
            Effect::HSet { .. } | Effect::HDel { .. } => ObjKind::Hash,
            Effect::ZAdd { .. } | Effect::ZRem { .. } => ObjKind::ZSet,
            Effect::LPush { .. } | Effect::LPop { .. } | Effect::LSet { .. } | Effect::LReplace { .. } => ObjKind::List,
            _ => return 0,
        };
        let Some((i, _)) = self.existing(key, kind) else { return 0 };
        match (self.sets.get(i), effect) {
            (Obj::Set(set), Effect::SAdd { members, .. } | Effect::SRem { members, .. }) => {
                unique(members.iter().cloned()).iter().filter(|m| set.contains(&m[..])).map(|m| member_cost(m)).sum()
            }
            (Obj::Hash(hash), Effect::HSet { fields, .. }) => unique(fields.iter().map(|(f, _)| f.clone()))
                .iter()
                .filter_map(|f| hash.get(&f[..]).map(|v| field_cost(f, v)))
                .sum(),
            (Obj::Hash(hash), Effect::HDel { fields, .. }) => {
                unique(fields.iter().cloned()).iter().filter_map(|f| hash.get(&f[..]).map(|v| field_cost(f, v))).sum()
            }
            (Obj::ZSet(z), Effect::ZAdd { members, .. }) => unique(members.iter().map(|(_, m)| m.clone()))
                .iter()
                .filter(|m| z.contains(&m[..]))
                .map(|m| zmember_cost(m))
                .sum(),
            (Obj::ZSet(z), Effect::ZRem { members, .. }) => {
                unique(members.iter().cloned()).iter().filter(|m| z.contains(&m[..])).map(|m| zmember_cost(m)).sum()
            }
            (Obj::List(list), Effect::LPush { left, items, .. }) if !before => {
                let n = items.len().min(list.items.len());
                let ends: Box<dyn Iterator<Item = &[u8]>> =
                    if *left { Box::new(list.items.iter().take(n)) } else { Box::new(list.items.iter().rev().take(n)) };
                ends.map(list_element_cost).sum()
            }
            (Obj::List(list), Effect::LPop { left, count, .. }) if before => {
                let n = (*count).min(list.items.len() as u64) as usize;
                let ends: Box<dyn Iterator<Item = &[u8]>> =
                    if *left { Box::new(list.items.iter().take(n)) } else { Box::new(list.items.iter().rev().take(n)) };
                ends.map(list_element_cost).sum()
            }
            (Obj::List(list), Effect::LSet { index, .. }) => {
                list.items.get(*index as usize).map_or(0, list_element_cost)
            }
            (Obj::List(list), Effect::LReplace { .. }) => list.items.iter().map(list_element_cost).sum(),
            _ => 0,
        }
    }

    /// The bytes charged for the elements of the collection of `kind` at
    /// `key` (0 if it holds none). Walks it: for undo only.
    fn elements_cost(&self, key: &[u8], kind: ObjKind) -> usize {
        self.existing(key, kind).map_or(0, |(i, _)| obj_cost(self.sets.get(i)) - OBJECT_OVERHEAD_BYTES)
    }

    fn apply_raw(&mut self, effect: &Effect) {
        match effect {
            Effect::Set { key, value, expire_at_ms } => {
                self.put(Slot::build(key, expire_at_ms.unwrap_or(0), value, false));
            }
            Effect::Del { key } | Effect::Evict { key } => {
                self.remove(key);
            }
            Effect::Expire { key, expire_at_ms } => {
                let h = self.hash(key);
                let bucket = &mut self.buckets[Self::bucket_of(h)];
                if let Some(slot) = bucket.find_mut(h, |s| s.key() == &key[..]) {
                    let had = slot.expire_at_ms() != 0;
                    let at = expire_at_ms.unwrap_or(0);
                    if had && at != 0 {
                        slot.kv[..8].copy_from_slice(&at.to_le_bytes());
                    } else {
                        *slot = slot.with_expiry(at);
                    }
                    self.keys_with_expiry = self.keys_with_expiry + (at != 0) as usize - had as usize;
                    // The expiry takes 8 bytes in the slot's block.
                    self.slot_bytes = self.slot_bytes + 8 * (at != 0) as usize - 8 * had as usize;
                }
            }
            Effect::SAdd { key, members } => {
                let seed = self.hash_seed;
                let Obj::Set(set) = self.obj_or_create(key, ObjKind::Set, || {
                    Obj::Set(SetValue::with_hasher(Xxh3Builder::new().with_seed(seed)))
                }) else {
                    unreachable!("obj_or_create returns the asked kind")
                };
                for m in members {
                    set.insert(Member::new(m));
                }
            }
            Effect::SRem { key, members } => {
                if let Some(Obj::Set(set)) = self.obj_mut(key) {
                    for m in members {
                        set.remove(&m[..]);
                    }
                    if set.is_empty() {
                        self.remove(key);
                    }
                }
            }
            Effect::HSet { key, fields } => {
                let seed = self.hash_seed;
                let Obj::Hash(hash) = self.obj_or_create(key, ObjKind::Hash, || Obj::Hash(HashValue::new(seed))) else {
                    unreachable!("obj_or_create returns the asked kind")
                };
                for (f, v) in fields {
                    hash.insert(f, v);
                }
            }
            Effect::HDel { key, fields } => {
                if let Some(Obj::Hash(hash)) = self.obj_mut(key) {
                    for f in fields {
                        hash.remove(&f[..]);
                    }
                    if hash.is_empty() {
                        self.remove(key);
                    }
                }
            }
            Effect::ZAdd { key, members } => {
                let seed = self.hash_seed;
                let Obj::ZSet(z) = self.obj_or_create(key, ObjKind::ZSet, || Obj::ZSet(ZSetValue::new(seed))) else {
                    unreachable!("obj_or_create returns the asked kind")
                };
                for (bits, m) in members {
                    let score = f64::from_bits(*bits);
                    if !score.is_nan() {
                        z.insert(m, score);
                    }
                }
            }
            Effect::ZRem { key, members } => {
                if let Some(Obj::ZSet(z)) = self.obj_mut(key) {
                    for m in members {
                        z.remove(m);
                    }
                    if z.is_empty() {
                        self.remove(key);
                    }
                }
            }
            Effect::LPush { key, left, items, seq } => {
                if let Some(list) = self.list_for(key, *seq) {
                    for item in items {
                        let item = &item[..];
                        if *left {
                            list.items.push_front(item);
                        } else {
                            list.items.push_back(item);
                        }
                    }
                }
            }
            Effect::LPop { key, left, count, seq } => {
                if let Some(list) = self.list_for(key, *seq) {
                    for _ in 0..*count {
                        if *left {
                            list.items.pop_front();
                        } else {
                            list.items.pop_back();
                        }
                    }
                    if list.items.is_empty() {
                        self.remove(key);
                    }
                }
            }
            Effect::LSet { key, index, value, seq } => {
                if let Some(list) = self.list_for(key, *seq) {
                    list.items.set(*index as usize, value);
                    if list.items.is_empty() {
                        self.remove(key);
                    }
                }
            }
            Effect::LReplace { key, items, seq } => {
                if let Some(list) = self.list_for(key, *seq) {
                    list.items = items.iter().collect();
                    if list.items.is_empty() {
                        self.remove(key);
                    }
                }
            }
            Effect::FlushAll => {
                for b in &mut self.buckets {
                    *b = HashTable::new();
                }
                self.sets = SetSlab::default();
                self.keys = 0;
                self.keys_with_expiry = 0;
                self.slot_bytes = 0;
            }
        }
    }

    /// Applies one effect like [`Store::apply`] and returns what undoes it
    /// ([`Store::undo`]). The undo record holds what the effect displaced,
    /// moved out of the store (never copied, and never a copy of a whole
    /// collection): a replaced or deleted value, the members, fields or
    /// scores a collection gained or lost, the elements a list lost, a
    /// flushed keyspace.
    pub fn apply_undoable(&mut self, effect: &Effect) -> Undo {
        self.charged(effect, |s| s.apply_undoable_raw(effect))
    }

    fn apply_undoable_raw(&mut self, effect: &Effect) -> Undo {
        let undo = match effect {
            Effect::Set { key, .. } | Effect::Del { key } | Effect::Evict { key } => {
                Undo::Restore { key: key.clone(), before: self.take(key) }
            }
            Effect::Expire { key, .. } => {
                Undo::Expiry { key: key.clone(), before: self.slot(key).map(Slot::expire_at_ms) }
            }
            Effect::SAdd { key, members } => match self.existing(key, ObjKind::Set) {
                Some((i, _)) => {
                    let Obj::Set(set) = self.sets.get(i) else { unreachable!("kind checked") };
                    let mut added: Vec<Box<[u8]>> = members
                        .iter()
                        .filter(|m| !set.contains(&m[..]))
                        .map(|m| m.to_vec().into_boxed_slice())
                        .collect();
                    added.sort_unstable();
                    added.dedup();
                    Undo::SetMembers { key: key.clone(), added, removed: Vec::new(), expire_at_ms: 0 }
                }
                None => Undo::Restore { key: key.clone(), before: self.take(key) },
            },
            Effect::SRem { key, members } => match self.existing(key, ObjKind::Set) {
                Some((i, expire_at_ms)) => {
                    let Obj::Set(set) = self.sets.get_mut(i) else { unreachable!("kind checked") };
                    let removed = members.iter().filter_map(|m| set.take(&m[..]).map(Member::into_box)).collect();
                    // The members are out already; the effect below removes
                    // the key if the set is now empty.
                    Undo::SetMembers { key: key.clone(), added: Vec::new(), removed, expire_at_ms }
                }
                None => Undo::Nothing,
            },
            Effect::HSet { key, fields } => match self.existing(key, ObjKind::Hash) {
                Some((i, expire_at_ms)) => {
                    let Obj::Hash(hash) = self.sets.get_mut(i) else { unreachable!("kind checked") };
                    let before = fields
                        .iter()
                        .map(|(f, v)| {
                            let f: Box<[u8]> = f[..].into();
                            let old = hash.insert(&f, v);
                            (f, old)
                        })
                        .collect();
                    return Undo::Fields { key: key.clone(), expire_at_ms, before };
                }
                None => Undo::Restore { key: key.clone(), before: self.take(key) },
            },
            Effect::HDel { key, fields } => match self.existing(key, ObjKind::Hash) {
                Some((i, expire_at_ms)) => {
                    let Obj::Hash(hash) = self.sets.get_mut(i) else { unreachable!("kind checked") };
                    let before =
                        fields.iter().filter_map(|f| hash.remove_entry(&f[..]).map(|(f, v)| (f, Some(v)))).collect();
                    if hash.is_empty() {
                        self.remove(key);
                    }
                    return Undo::Fields { key: key.clone(), expire_at_ms, before };
                }
                None => Undo::Nothing,
            },
            Effect::ZAdd { key, members } => match self.existing(key, ObjKind::ZSet) {
                Some((i, expire_at_ms)) => {
                    let Obj::ZSet(z) = self.sets.get_mut(i) else { unreachable!("kind checked") };
                    let mut before = Vec::with_capacity(members.len());
                    for (bits, m) in members {
                        let score = f64::from_bits(*bits);
                        if !score.is_nan() {
                            before.push((Box::<[u8]>::from(&m[..]), z.score(&m[..])));
                            z.insert(m, score);
                        }
                    }
                    return Undo::Scores { key: key.clone(), expire_at_ms, before };
                }
                None => Undo::Restore { key: key.clone(), before: self.take(key) },
            },
            Effect::ZRem { key, members } => match self.existing(key, ObjKind::ZSet) {
                Some((i, expire_at_ms)) => {
                    let Obj::ZSet(z) = self.sets.get_mut(i) else { unreachable!("kind checked") };
                    let mut before = Vec::new();
                    for m in members {
                        if let Some(old) = z.score(&m[..]) {
                            z.remove(m);
                            before.push((Box::<[u8]>::from(&m[..]), Some(old)));
                        }
                    }
                    if z.is_empty() {
                        self.remove(key);
                    }
                    return Undo::Scores { key: key.clone(), expire_at_ms, before };
                }
                None => Undo::Nothing,
            },
            Effect::LPush { key, seq, .. }
            | Effect::LPop { key, seq, .. }
            | Effect::LSet { key, seq, .. }
            | Effect::LReplace { key, seq, .. } => match self.existing(key, ObjKind::List) {
                Some((i, expire_at_ms)) => {
                    let Obj::List(list) = self.sets.get_mut(i) else { unreachable!("kind checked") };
                    if list.seq >= *seq && list.seq != 0 {
                        return Undo::Nothing; // the list is past this effect: `apply` skips it
                    }
                    let seq_before = std::mem::replace(&mut list.seq, *seq);
                    let change = match effect {
                        Effect::LPush { left, items, .. } => {
                            for item in items {
                                let item = &item[..];
                                if *left {
                                    list.items.push_front(item);
                                } else {
                                    list.items.push_back(item);
                                }
                            }
                            ListUndo::Pushed { left: *left, count: items.len() }
                        }
                        Effect::LPop { left, count, .. } => {
                            let popped = (0..*count)
                                .map_while(|_| if *left { list.items.pop_front() } else { list.items.pop_back() })
                                .collect();
                            ListUndo::Popped { left: *left, items: popped }
                        }
                        Effect::LSet { index, value, .. } => match list.items.set(*index as usize, value) {
                            Some(old) => ListUndo::Set { index: *index as usize, value: old },
                            None => ListUndo::Nothing,
                        },
                        Effect::LReplace { items, .. } => {
                            ListUndo::Replaced(std::mem::replace(&mut list.items, items.iter().collect()))
                        }
                        _ => unreachable!("a list effect"),
                    };
                    if list.items.is_empty() {
                        self.remove(key);
                    }
                    return Undo::List { key: key.clone(), expire_at_ms, seq: seq_before, change };
                }
                None => Undo::Restore { key: key.clone(), before: self.take(key) },
            },
            Effect::FlushAll => Undo::Flush(Box::new(Flushed {
                buckets: std::mem::replace(&mut self.buckets, (0..BUCKETS).map(|_| HashTable::new()).collect()),
                sets: std::mem::take(&mut self.sets),
                keys: std::mem::take(&mut self.keys),
                keys_with_expiry: std::mem::take(&mut self.keys_with_expiry),
                slot_bytes: std::mem::take(&mut self.slot_bytes),
            })),
        };
        self.apply_raw(effect);
        undo
    }

    /// The slab index and expiry of the object of `kind` at `key`, if
    /// `key` holds one.
    fn existing(&self, key: &[u8], kind: ObjKind) -> Option<(usize, u64)> {
        let slot = self.slot(key)?;
        let i = slot.set_index().filter(|&i| ObjKind::of(self.sets.get(i)) == kind)?;
        Some((i, slot.expire_at_ms()))
    }

    /// The object of `kind` at `key` for an undo: the effect being undone
    /// may have removed the emptied key, which then comes back empty (the
    /// undo refills it) with its expiry.
    fn obj_for_undo(&mut self, key: &[u8], kind: ObjKind, expire_at_ms: u64) -> &mut Obj {
        let index = match self.existing(key, kind) {
            Some((i, _)) => i,
            None => {
                let seed = self.hash_seed;
                let obj = match kind {
                    ObjKind::Set => Obj::Set(SetValue::with_hasher(Xxh3Builder::new().with_seed(seed))),
                    ObjKind::Hash => Obj::Hash(HashValue::new(seed)),
                    ObjKind::List => Obj::List(ListValue::default()),
                    ObjKind::ZSet => Obj::ZSet(ZSetValue::new(seed)),
                };
                let i = self.sets.insert(obj);
                self.put(Slot::build(key, expire_at_ms, &i.to_le_bytes(), true));
                i as usize
            }
        };
        self.sets.get_mut(index)
    }

    /// Undoes one effect applied by [`Store::apply_undoable`]. Records must
    /// be undone newest first.
    pub fn undo(&mut self, undo: Undo) {
        // In-place element changes are charged by walking the collection
        // before and after (an undo is rare: a refused write).
        let kind = match &undo {
            Undo::SetMembers { key, .. } => Some((key.clone(), ObjKind::Set)),
            Undo::Fields { key, .. } => Some((key.clone(), ObjKind::Hash)),
            Undo::Scores { key, .. } => Some((key.clone(), ObjKind::ZSet)),
            Undo::List { key, .. } => Some((key.clone(), ObjKind::List)),
            _ => None,
        };
        let before = kind.as_ref().map_or(0, |(k, kind)| self.elements_cost(k, *kind));
        self.undo_raw(undo);
        let after = kind.as_ref().map_or(0, |(k, kind)| self.elements_cost(k, *kind));
        self.sets.bytes = self.sets.bytes + after - before;
    }

    fn undo_raw(&mut self, undo: Undo) {
        match undo {
            Undo::Nothing => {}
            Undo::Restore { key, before } => {
                self.remove(&key);
                if let Some(before) = before {
                    self.put_taken(before);
                }
            }
            Undo::Expiry { key, before } => {
                if let Some(at) = before {
                    self.apply(&Effect::Expire { key, expire_at_ms: (at != 0).then_some(at) });
                }
            }
            Undo::SetMembers { key, added, removed, expire_at_ms } => {
                if self.existing(&key, ObjKind::Set).is_none() && removed.is_empty() {
                    return;
                }
                let Obj::Set(set) = self.obj_for_undo(&key, ObjKind::Set, expire_at_ms) else {
                    unreachable!("obj_for_undo returns the asked kind")
                };
                for m in &added {
                    set.remove(&m[..]);
                }
                set.extend(removed.into_iter().map(Member::from));
            }
            Undo::Fields { key, expire_at_ms, before } => {
                let Obj::Hash(hash) = self.obj_for_undo(&key, ObjKind::Hash, expire_at_ms) else {
                    unreachable!("obj_for_undo returns the asked kind")
                };
                for (f, v) in before.into_iter().rev() {
                    match v {
                        Some(v) => hash.insert(&f, &v),
                        None => hash.remove(&f),
                    };
                }
                if hash.is_empty() {
                    self.remove(&key);
                }
            }
            Undo::Scores { key, expire_at_ms, before } => {
                let Obj::ZSet(z) = self.obj_for_undo(&key, ObjKind::ZSet, expire_at_ms) else {
                    unreachable!("obj_for_undo returns the asked kind")
                };
                for (m, score) in before.into_iter().rev() {
                    match score {
                        Some(s) => z.insert(&m, s),
                        None => {
                            z.remove(&m);
                        }
                    }
                }
                if z.is_empty() {
                    self.remove(&key);
                }
            }
            Undo::List { key, expire_at_ms, seq, change } => {
                let Obj::List(list) = self.obj_for_undo(&key, ObjKind::List, expire_at_ms) else {
                    unreachable!("obj_for_undo returns the asked kind")
                };
                list.seq = seq;
                match change {
                    ListUndo::Nothing => {}
                    ListUndo::Pushed { left, count } => {
                        for _ in 0..count {
                            if left {
                                list.items.pop_front();
                            } else {
                                list.items.pop_back();
                            }
                        }
                    }
                    ListUndo::Popped { left, items } => {
                        for item in items.into_iter().rev() {
                            if left {
                                list.items.push_front(&item);
                            } else {
                                list.items.push_back(&item);
                            }
                        }
                    }
                    ListUndo::Set { index, value } => {
                        list.items.set(index, &value);
                    }
                    ListUndo::Replaced(items) => list.items = items,
                }
                if list.items.is_empty() {
                    self.remove(&key);
                }
            }
            Undo::Flush(flushed) => {
                let Flushed { buckets, sets, keys, keys_with_expiry, slot_bytes } = *flushed;
                self.buckets = buckets;
                self.sets = sets;
                self.keys = keys;
                self.keys_with_expiry = keys_with_expiry;
                self.slot_bytes = slot_bytes;
            }
        }
    }

    /// Removes `key` and returns its slot and object, moved out.
    fn take(&mut self, key: &[u8]) -> Option<Taken> {
        let h = self.hash(key);
        let o = self.buckets[Self::bucket_of(h)].find_entry(h, |s| s.key() == key).ok()?;
        let (slot, _) = o.remove();
        self.keys -= 1;
        self.keys_with_expiry -= (slot.expire_at_ms() != 0) as usize;
        self.slot_bytes -= slot.cost();
        let obj = slot.set_index().map(|i| Box::new(self.sets.take(i)));
        Some(Taken { slot, obj })
    }

    /// Puts back what [`Store::take`] removed (the object gets a new index).
    fn put_taken(&mut self, taken: Taken) {
        let slot = match taken.obj {
            Some(obj) => {
                let i = self.sets.insert(*obj);
                Slot::build(taken.slot.key(), taken.slot.expire_at_ms(), &i.to_le_bytes(), true)
            }
            None => taken.slot,
        };
        self.put(slot);
    }

    /// The object held at `key`, if it holds one.
    fn obj_mut(&mut self, key: &[u8]) -> Option<&mut Obj> {
        let index = self.slot(key).and_then(Slot::set_index)?;
        Some(self.sets.get_mut(index))
    }

    /// The object of `kind` at `key`; a missing key or one of another type
    /// (only possible on replay over a fuzzy snapshot, or after a type
    /// change the log also holds) becomes a fresh `make()`, keeping no
    /// expiry.
    fn obj_or_create(&mut self, key: &[u8], kind: ObjKind, make: impl FnOnce() -> Obj) -> &mut Obj {
        let existing = self.slot(key).and_then(Slot::set_index).filter(|&i| ObjKind::of(self.sets.get(i)) == kind);
        let index = match existing {
            Some(i) => i,
            None => {
                let i = self.sets.insert(make());
                self.put(Slot::build(key, 0, &i.to_le_bytes(), true));
                i as usize
            }
        };
        self.sets.get_mut(index)
    }

    /// The list at `key` for a list effect that leaves it at change count
    /// `seq`: `None` if the list already went past it (the effect is in
    /// the state already); a missing key or another type starts a fresh
    /// list. The returned list's count is set to `seq`.
    fn list_for(&mut self, key: &[u8], seq: u64) -> Option<&mut ListValue> {
        let Obj::List(list) = self.obj_or_create(key, ObjKind::List, || Obj::List(ListValue::default())) else {
            unreachable!("obj_or_create returns the asked kind")
        };
        if list.seq >= seq && list.seq != 0 {
            return None;
        }
        list.seq = seq;
        Some(list)
    }

    /// Inserts or replaces a key (freeing the set a replaced slot held).
    fn put(&mut self, slot: Slot) {
        let h = self.hash(slot.key());
        let seed = self.hash_seed;
        let has_expiry = slot.expire_at_ms() != 0;
        slot.lru.store(self.tick(), Ordering::Relaxed);
        self.slot_bytes += slot.cost();
        let bucket = &mut self.buckets[Self::bucket_of(h)];
        match bucket.entry(h, |s| s.key() == slot.key(), |s| xxh3_64_with_seed(s.key(), seed)) {
            TableEntry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), slot);
                self.slot_bytes -= old.cost();
                self.keys_with_expiry =
                    self.keys_with_expiry + has_expiry as usize - (old.expire_at_ms() != 0) as usize;
                // A set replaced by a new set slot keeps no orphan: the new
                // slot's set was inserted fresh, so the old one is freed.
                if let Some(i) = old.set_index() {
                    if o.get().set_index() != Some(i) {
                        self.sets.remove(i);
                    }
                }
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
                self.keys_with_expiry -= (old.expire_at_ms() != 0) as usize;
                self.slot_bytes -= old.cost();
                if let Some(i) = old.set_index() {
                    self.sets.remove(i);
                }
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
    /// Format per key, little-endian: `u8 type | u64 expire_at_ms (0 =
    /// none) | u32 key_len | key | body`. Types and bodies: 0 string `u32
    /// len | bytes`; 1 set `u32 count | (u32 len | member)*`; 2 more of the
    /// collection at key (continuation of the set, hash, list or sorted set
    /// record just before it, same body as that type without its list
    /// `seq`); 3 hash `u32 count | (u32 len | field | u32 len | value)*`; 4
    /// list `u64 seq | u32 count | (u32 len | element)*` (continuations
    /// append at the tail); 5 sorted set `u32 count | (u64 score as f64
    /// bits | u32 len | member)*`. Unbounded: use
    /// [`Store::encode_bucket_chunks`] where a chunk has a size limit.
    pub fn encode_bucket(&self, index: usize, out: &mut Vec<u8>) {
        for chunk in self.encode_bucket_chunks(index, usize::MAX) {
            out.extend_from_slice(&chunk);
        }
    }

    /// Encodes bucket `index` as chunks of at most `chunk_bytes_max` bytes
    /// each (the format of [`Store::encode_bucket`]): a bucket of several
    /// large values spans chunks, and a set too large for one chunk is
    /// split into a type-1 record and type-2 continuations. Only a single
    /// string (or set member) with its key larger than the limit makes a
    /// longer chunk; the write budget ([`crate::write`]) keeps those within
    /// [`CHUNK_BYTES_MAX`]. No chunk is empty.
    pub fn encode_bucket_chunks(&self, index: usize, chunk_bytes_max: usize) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let mut out = Vec::new();
        for slot in self.buckets[index].iter() {
            let key = slot.key();
            let expire_at_ms = slot.expire_at_ms();
            let mut w = ChunkWriter { chunks: &mut chunks, out: &mut out, key, expire_at_ms, chunk_bytes_max };
            match slot.value(&self.sets) {
                ValueRef::Str(v) => {
                    w.head(0, 4 + v.len());
                    put_bytes(w.out, v);
                }
                ValueRef::Set(set) => w.collection(1, &[], set.iter(), |m| 4 + m.len(), |out, m| put_bytes(out, m)),
                ValueRef::Hash(hash) => w.collection(
                    3,
                    &[],
                    hash.iter(),
                    |(f, v)| 8 + f.len() + v.len(),
                    |out, (f, v)| {
                        put_bytes(out, f);
                        put_bytes(out, v);
                    },
                ),
                ValueRef::List(list) => {
                    w.collection(4, &list.seq.to_le_bytes(), list.items.iter(), |i| 4 + i.len(), put_bytes)
                }
                ValueRef::ZSet(z) => w.collection(
                    5,
                    &[],
                    z.order().iter(),
                    |(_, m)| 12 + m.len(),
                    |out, (score, m)| {
                        out.extend_from_slice(&score.0.to_bits().to_le_bytes());
                        put_bytes(out, m);
                    },
                ),
            }
        }
        if !out.is_empty() {
            chunks.push(out);
        }
        chunks
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
                    self.put(Slot::build(key, expire_at_ms, value, false));
                }
                1 => {
                    let count = r.u32()? as usize;
                    let mut set = SetValue::with_capacity_and_hasher(
                        count.min(chunk.len()),
                        Xxh3Builder::new().with_seed(self.hash_seed),
                    );
                    for _ in 0..count {
                        set.insert(Member::new(r.bytes()?));
                    }
                    let i = self.sets.insert(Obj::Set(set));
                    self.put(Slot::build(key, expire_at_ms, &i.to_le_bytes(), true));
                }
                3 => {
                    let count = r.u32()? as usize;
                    let mut hash = HashValue::with_capacity(count.min(chunk.len()), self.hash_seed);
                    for _ in 0..count {
                        let field = r.bytes()?;
                        hash.insert(field, r.bytes()?);
                    }
                    let i = self.sets.insert(Obj::Hash(hash));
                    self.put(Slot::build(key, expire_at_ms, &i.to_le_bytes(), true));
                }
                4 => {
                    let seq = r.u64()?;
                    let count = r.u32()? as usize;
                    let mut items = PackedList::new();
                    for _ in 0..count {
                        items.push_back(r.bytes()?);
                    }
                    let i = self.sets.insert(Obj::List(ListValue { items, seq }));
                    self.put(Slot::build(key, expire_at_ms, &i.to_le_bytes(), true));
                }
                5 => {
                    let count = r.u32()? as usize;
                    let mut z = ZSetValue::new(self.hash_seed);
                    for _ in 0..count {
                        let score = f64::from_bits(r.u64()?);
                        let member = r.bytes()?;
                        if score.is_nan() {
                            return Err(ChunkDecodeError { offset: r.pos, reason: "NaN score" });
                        }
                        z.insert(member, score);
                    }
                    let i = self.sets.insert(Obj::ZSet(z));
                    self.put(Slot::build(key, expire_at_ms, &i.to_le_bytes(), true));
                }
                2 => {
                    // More of the collection at key, split across records.
                    let count = r.u32()? as usize;
                    let Some(i) = self.slot(key).and_then(Slot::set_index) else {
                        return Err(ChunkDecodeError { offset: r.pos, reason: "continuation without its collection" });
                    };
                    // Charge what each element adds (a repeated element in
                    // a damaged chunk replaces, and is charged once).
                    let (mut plus, mut minus) = (0usize, 0usize);
                    match self.sets.get_mut(i) {
                        Obj::Set(set) => {
                            for _ in 0..count {
                                let m = r.bytes()?;
                                if set.insert(m.into()) {
                                    plus += member_cost(m);
                                }
                            }
                        }
                        Obj::Hash(hash) => {
                            for _ in 0..count {
                                let field = r.bytes()?;
                                let value = r.bytes()?;
                                plus += field_cost(field, value);
                                if let Some(old) = hash.insert(field, value) {
                                    minus += field_cost(field, &old);
                                }
                            }
                        }
                        Obj::List(list) => {
                            for _ in 0..count {
                                let item = r.bytes()?;
                                plus += list_element_cost(item);
                                list.items.push_back(item);
                            }
                        }
                        Obj::ZSet(z) => {
                            for _ in 0..count {
                                let score = f64::from_bits(r.u64()?);
                                let member = r.bytes()?;
                                if score.is_nan() {
                                    return Err(ChunkDecodeError { offset: r.pos, reason: "NaN score" });
                                }
                                if !z.contains(member) {
                                    plus += zmember_cost(member);
                                }
                                z.insert(member, score);
                            }
                        }
                    }
                    self.sets.bytes = self.sets.bytes + plus - minus;
                    continue;
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
                let mut h = xxh3_64_with_seed(slot.key(), 0) ^ slot.expire_at_ms().rotate_left(17);
                match slot.value(&self.sets) {
                    ValueRef::Str(v) => h ^= xxh3_64_with_seed(v, 1),
                    ValueRef::Set(s) => {
                        let mut m = 0u64;
                        for member in s.iter() {
                            m = m.wrapping_add(xxh3_64_with_seed(member, 2));
                        }
                        h ^= m.rotate_left(7) ^ 0x5e7;
                    }
                    ValueRef::Hash(hash) => {
                        let mut m = 0u64;
                        for (f, v) in hash.iter() {
                            m = m.wrapping_add(xxh3_64_with_seed(f, 3) ^ xxh3_64_with_seed(v, 4).rotate_left(11));
                        }
                        h ^= m.rotate_left(9) ^ 0x4a5;
                    }
                    ValueRef::ZSet(z) => {
                        let mut m = 0u64;
                        for (score, member) in z.order().iter() {
                            m = m.wrapping_add(xxh3_64_with_seed(member, 6) ^ score.0.to_bits().rotate_left(5));
                        }
                        h ^= m.rotate_left(15) ^ 0x25e7;
                    }
                    ValueRef::List(list) => {
                        let mut m = 0x11u64;
                        for item in list.items.iter() {
                            m = m.wrapping_mul(31).wrapping_add(xxh3_64_with_seed(item, 5));
                        }
                        h ^= m.rotate_left(13);
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

/// Appends the records of one key to snapshot chunks of a size limit
/// ([`Store::encode_bucket_chunks`]).
struct ChunkWriter<'a> {
    chunks: &'a mut Vec<Vec<u8>>,
    out: &'a mut Vec<u8>,
    key: &'a [u8],
    expire_at_ms: u64,
    chunk_bytes_max: usize,
}

impl ChunkWriter<'_> {
    /// Starts a record of `kind` whose body begins with `first` bytes,
    /// in a new chunk if the current one is not empty and would overflow.
    fn head(&mut self, kind: u8, first: usize) {
        if !self.out.is_empty() && self.out.len() + 1 + 8 + 4 + self.key.len() + first > self.chunk_bytes_max {
            self.chunks.push(std::mem::take(self.out));
        }
        self.out.push(kind);
        self.out.extend_from_slice(&self.expire_at_ms.to_le_bytes());
        put_bytes(self.out, self.key);
    }

    /// Writes a collection as a record of `kind` (with `prefix` before its
    /// count) holding as many items as fit the chunk (at least one, so
    /// every record progresses), then type-2 continuation records in new
    /// chunks until all items are written.
    fn collection<T>(
        &mut self,
        kind: u8,
        prefix: &[u8],
        items: impl Iterator<Item = T>,
        len: impl Fn(&T) -> usize,
        put: impl Fn(&mut Vec<u8>, T),
    ) {
        let mut items = items.peekable();
        let (mut kind, mut prefix) = (kind, prefix);
        loop {
            let first = prefix.len() + 4 + items.peek().map_or(0, &len);
            self.head(kind, first);
            self.out.extend_from_slice(prefix);
            let count_at = self.out.len();
            self.out.extend_from_slice(&0u32.to_le_bytes());
            let mut count = 0u32;
            while let Some(item) = items.peek() {
                if count > 0 && self.out.len() + len(item) > self.chunk_bytes_max {
                    break;
                }
                put(self.out, items.next().expect("peeked"));
                count += 1;
            }
            self.out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
            if items.peek().is_none() {
                break;
            }
            self.chunks.push(std::mem::take(self.out));
            kind = 2;
            prefix = &[];
        }
    }
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
        s.apply(&Effect::HSet { key: "hash".into(), fields: vec![("f".into(), "v".into())] });
        s.apply(&Effect::LPush { key: "list".into(), left: false, items: vec!["x".into(), "y".into()], seq: 4 });
        s.apply(&Effect::Expire { key: "list".into(), expire_at_ms: Some(99_999) });
        s.apply(&Effect::ZAdd { key: "z".into(), members: vec![(1.5f64.to_bits(), "m".into())] });
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
    fn replacing_or_deleting_a_set_frees_its_slab_entry() {
        let mut s = Store::new(5);
        s.apply(&Effect::SAdd { key: "a".into(), members: vec!["x".into()] });
        s.apply(&set("a", "now a string", None));
        s.apply(&Effect::SAdd { key: "b".into(), members: vec!["y".into()] });
        s.apply(&Effect::Del { key: "b".into() });
        s.apply(&Effect::SAdd { key: "c".into(), members: vec!["z".into()] });
        s.apply(&Effect::SRem { key: "c".into(), members: vec!["z".into()] });
        let live = s.sets.sets.iter().filter(|x| x.is_some()).count();
        assert_eq!(live, 0, "no set outlives its key");
        assert_eq!(s.sets.sets.len(), 1, "freed slab entries are reused");
        s.apply(&Effect::FlushAll);
        assert!(s.sets.sets.is_empty());
    }

    #[test]
    fn expiry_is_added_changed_and_removed_in_place_of_the_key() {
        let mut s = Store::new(5);
        s.apply(&set("k", "v", None));
        s.apply(&Effect::Expire { key: "k".into(), expire_at_ms: Some(100) });
        s.apply(&Effect::Expire { key: "k".into(), expire_at_ms: Some(200) });
        let (value, exp) = s.get(b"k", 150).unwrap();
        assert!(matches!(value, ValueRef::Str(b"v")));
        assert_eq!(exp, Some(200));
        s.apply(&Effect::Expire { key: "k".into(), expire_at_ms: None });
        assert_eq!(s.get(b"k", 10_000).unwrap().1, None);
        assert_eq!(s.keys_with_expiry(), 0);
    }

    #[test]
    fn chunks_under_a_size_limit_split_buckets_and_large_sets_and_roundtrip() {
        let mut s = Store::new(3);
        for i in 0..40 {
            s.apply(&set(&format!("k{i}"), &"v".repeat(50 + i), if i % 3 == 0 { Some(9_000_000) } else { None }));
        }
        let members: Vec<Bytes> = (0..300).map(|i| Bytes::from(format!("member-{i}"))).collect();
        s.apply(&Effect::SAdd { key: Bytes::from_static(b"big-set"), members });
        s.apply(&Effect::Expire { key: Bytes::from_static(b"big-set"), expire_at_ms: Some(8_000_000) });
        let limit = 256;
        let mut loaded = Store::new(99);
        let mut continuations = 0;
        for b in 0..BUCKETS {
            for chunk in s.encode_bucket_chunks(b, limit) {
                assert!(!chunk.is_empty());
                // A single string record may exceed the limit; everything
                // else respects it.
                assert!(chunk.len() <= limit || chunk.len() < 200, "chunk of {} bytes", chunk.len());
                continuations += chunk.windows(1).take(1).filter(|w| w[0] == 2).count();
                loaded.load_chunk(&chunk).expect("loads");
            }
        }
        assert!(continuations > 0, "the big set was split");
        assert_eq!(loaded.digest(), s.digest());
        assert_eq!(loaded.len(), s.len());
        assert_eq!(loaded.keys_with_expiry(), s.keys_with_expiry());
    }

    /// A hash, list or sorted set can grow past one chunk (one element per
    /// write); its snapshot splits into a typed record plus type-2
    /// continuations and loads back equal, expiry and list count included.
    #[test]
    fn large_hashes_lists_and_sorted_sets_span_chunks_and_roundtrip() {
        let mut s = Store::new(3);
        let b = |t: String| Bytes::from(t);
        s.apply(&Effect::HSet {
            key: "big-hash".into(),
            fields: (0..300).map(|i| (b(format!("field-{i}")), b(format!("value-{i}")))).collect(),
        });
        s.apply(&Effect::LPush {
            key: "big-list".into(),
            left: false,
            items: (0..300).map(|i| b(format!("element-{i}"))).collect(),
            seq: 41,
        });
        s.apply(&Effect::ZAdd {
            key: "big-zset".into(),
            members: (0..300).map(|i| ((i as f64 / 7.0).to_bits(), b(format!("member-{i}")))).collect(),
        });
        s.apply(&Effect::SAdd { key: "big-set".into(), members: (0..300).map(|i| b(format!("m-{i}"))).collect() });
        s.apply(&Effect::Expire { key: "big-list".into(), expire_at_ms: Some(7_000_000) });
        s.apply(&Effect::Expire { key: "big-hash".into(), expire_at_ms: Some(8_000_000) });
        let limit = 512;
        let mut loaded = Store::new(99);
        let mut kinds = std::collections::BTreeMap::<u8, usize>::new();
        for bucket in 0..BUCKETS {
            for chunk in s.encode_bucket_chunks(bucket, limit) {
                assert!(chunk.len() <= limit, "chunk of {} bytes", chunk.len());
                *kinds.entry(chunk[0]).or_default() += 1;
                loaded.load_chunk(&chunk).expect("loads");
            }
        }
        // Every collection was split: one head record (types 1, 3, 4, 5)
        // and many continuations (type 2) each starting a chunk.
        assert!(kinds.get(&2).copied().unwrap_or(0) >= 4 * 5, "{kinds:?}");
        for head in [1u8, 3, 4, 5] {
            assert!(kinds.contains_key(&head), "type {head} record: {kinds:?}");
        }
        assert_eq!(loaded.digest(), s.digest());
        assert_eq!((loaded.len(), loaded.keys_with_expiry()), (4, 2));
        let Some((ValueRef::List(l), Some(7_000_000))) = loaded.get(b"big-list", 0) else { panic!("list") };
        assert_eq!(l.seq, 41);
        assert_eq!(l.items.front(), Some(&b"element-0"[..]), "order kept across chunks");
        assert_eq!(l.items.back(), Some(&b"element-299"[..]));
        let mut unchunked = Store::new(5);
        let mut buf = Vec::new();
        for bucket in 0..BUCKETS {
            buf.clear();
            s.encode_bucket(bucket, &mut buf);
            unchunked.load_chunk(&buf).expect("loads");
        }
        assert_eq!(unchunked.digest(), s.digest());
    }

    /// Snapshots written before hashes, lists and sorted sets existed hold
    /// only strings (type 0), sets (type 1) and set continuations (type 2);
    /// they still load.
    #[test]
    fn a_snapshot_chunk_of_the_strings_and_sets_format_still_loads() {
        let mut chunk = Vec::new();
        let record = |out: &mut Vec<u8>, kind: u8, expire: u64, key: &[u8]| {
            out.push(kind);
            out.extend_from_slice(&expire.to_le_bytes());
            put_bytes(out, key);
        };
        record(&mut chunk, 0, 0, b"str");
        put_bytes(&mut chunk, b"value");
        record(&mut chunk, 0, 123_456, b"ttl");
        put_bytes(&mut chunk, b"v2");
        record(&mut chunk, 1, 654_321, b"set");
        chunk.extend_from_slice(&2u32.to_le_bytes());
        put_bytes(&mut chunk, b"a");
        put_bytes(&mut chunk, b"b");
        let mut more = Vec::new();
        record(&mut more, 2, 654_321, b"set");
        more.extend_from_slice(&1u32.to_le_bytes());
        put_bytes(&mut more, b"c");
        let mut s = Store::new(1);
        assert_eq!(s.load_chunk(&chunk).expect("old chunk"), 3);
        s.load_chunk(&more).expect("old continuation chunk");
        let mut want = Store::new(2);
        want.apply(&set("str", "value", None));
        want.apply(&set("ttl", "v2", Some(123_456)));
        want.apply(&Effect::SAdd { key: "set".into(), members: vec!["a".into(), "b".into(), "c".into()] });
        want.apply(&Effect::Expire { key: "set".into(), expire_at_ms: Some(654_321) });
        assert_eq!(s.digest(), want.digest());
        // A continuation with no collection before it is an error, not a panic.
        assert!(Store::new(1).load_chunk(&more).is_err());
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
        assert_replay_over_any_capture_converges(&log);
    }

    /// A fuzzy snapshot captures the store at some point of `log`, and
    /// replay starts at or before that point: the result must equal
    /// applying `log` once, for every such pair.
    fn assert_replay_over_any_capture_converges(log: &[Effect]) {
        let mut truth = Store::new(1);
        for e in log {
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
                assert_eq!(s.used_bytes(), s.used_bytes_walked(), "captured {captured_at} replay {replay_from}");
            }
        }
    }

    /// List effects are not idempotent by themselves; their change count
    /// makes a replay over a later fuzzy-snapshot state converge anyway.
    #[test]
    fn list_effects_replayed_over_a_later_state_converge() {
        let push = |left, items: &[&str], seq| Effect::LPush {
            key: "l".into(),
            left,
            items: items.iter().map(|i| Bytes::copy_from_slice(i.as_bytes())).collect(),
            seq,
        };
        let log = vec![
            push(true, &["a", "b"], 1),
            push(false, &["c"], 2),
            Effect::LPop { key: "l".into(), left: true, count: 1, seq: 3 },
            Effect::LSet { key: "l".into(), index: 0, value: "A".into(), seq: 4 },
            Effect::Del { key: "l".into() },
            push(false, &["x"], 1),
            Effect::HSet { key: "l".into(), fields: vec![("f".into(), "v".into())] },
            Effect::Del { key: "l".into() },
            push(true, &["p", "q", "r"], 1),
            Effect::LReplace { key: "l".into(), items: vec!["r".into(), "q".into()], seq: 2 },
            push(false, &["z"], 3),
            Effect::LPop { key: "l".into(), left: false, count: 1, seq: 4 },
        ];
        assert_replay_over_any_capture_converges(&log);
    }

    /// A random effect over a few keys of every type (duplicates inside an
    /// effect on purpose).
    fn random_effect(r: &mut u64) -> Effect {
        let mut next = |n: u64| {
            *r ^= *r << 13;
            *r ^= *r >> 7;
            *r ^= *r << 17;
            *r % n
        };
        let key: Bytes = format!("k{}", next(4)).into();
        let word = |next: &mut dyn FnMut(u64) -> u64| -> Bytes { "x".repeat(next(40) as usize + 1).into() };
        let words = |next: &mut dyn FnMut(u64) -> u64| -> Vec<Bytes> { (0..next(4) + 1).map(|_| word(next)).collect() };
        match next(15) {
            0 => Effect::Set { key, value: word(&mut next), expire_at_ms: (next(2) == 0).then_some(10_000) },
            1 => Effect::Del { key },
            2 => Effect::Expire { key, expire_at_ms: (next(2) == 0).then_some(10_000) },
            3 => Effect::SAdd { key, members: words(&mut next) },
            4 => Effect::SRem { key, members: words(&mut next) },
            5 => Effect::HSet {
                key,
                fields: words(&mut next).into_iter().map(|f| (f.clone(), word(&mut next))).collect(),
            },
            6 => Effect::HDel { key, fields: words(&mut next) },
            7 => {
                let members = words(&mut next);
                Effect::ZAdd { key, members: members.into_iter().map(|m| ((next(3) as f64).to_bits(), m)).collect() }
            }
            8 => Effect::ZRem { key, members: words(&mut next) },
            9 => Effect::LPush { key, left: next(2) == 0, items: words(&mut next), seq: next(8) + 1 },
            10 => Effect::LPop { key, left: next(2) == 0, count: next(3) + 1, seq: next(8) + 1 },
            11 => Effect::LSet { key, index: next(3), value: word(&mut next), seq: next(8) + 1 },
            12 => Effect::LReplace { key, items: words(&mut next), seq: next(8) + 1 },
            13 => Effect::Evict { key },
            _ => {
                if next(10) == 0 {
                    Effect::FlushAll
                } else {
                    Effect::Del { key }
                }
            }
        }
    }

    /// The running byte estimate always equals a full walk, whatever
    /// effects were applied, undone or replayed over any state.
    #[test]
    fn used_bytes_estimate_equals_a_full_walk_after_any_effects_and_undos() {
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let mut s = Store::new(3);
        for step in 0..5_000 {
            let batch: Vec<Effect> = (0..(step % 4) + 1).map(|_| random_effect(&mut r)).collect();
            if step % 3 == 0 {
                let undo: Vec<Undo> = batch.iter().map(|e| s.apply_undoable(e)).collect();
                assert_eq!(s.used_bytes(), s.used_bytes_walked(), "step {step} applied {batch:?}");
                if step % 2 == 0 {
                    for u in undo.into_iter().rev() {
                        s.undo(u);
                    }
                }
            } else {
                for e in &batch {
                    s.apply(e);
                }
            }
            assert_eq!(s.used_bytes(), s.used_bytes_walked(), "step {step} after {batch:?}");
        }
        // Snapshot chunks (split collections included) load with the same
        // estimate as the store they came from.
        let mut loaded = Store::new(11);
        for b in 0..BUCKETS {
            for chunk in s.encode_bucket_chunks(b, 64) {
                loaded.load_chunk(&chunk).unwrap();
            }
        }
        assert_eq!(loaded.digest(), s.digest());
        assert_eq!(loaded.used_bytes(), s.used_bytes());
        for key in ["k0", "k1", "k2", "k3"] {
            s.apply(&Effect::Del { key: key.into() });
        }
        assert_eq!(s.used_bytes(), 0, "an empty store is charged nothing");
    }

    #[test]
    fn used_bytes_counts_keys_values_and_elements() {
        let mut s = Store::new(1);
        s.apply(&set("key", &"v".repeat(1000), None));
        assert_eq!(s.used_bytes(), 3 + 1000 + KEY_OVERHEAD_BYTES);
        s.apply(&Effect::SAdd { key: "s".into(), members: vec!["ab".into(), "ab".into(), "cde".into()] });
        assert_eq!(
            s.used_bytes(),
            3 + 1000
                + KEY_OVERHEAD_BYTES
                + 1
                + 4
                + KEY_OVERHEAD_BYTES
                + OBJECT_OVERHEAD_BYTES
                + 5
                + 2 * ELEMENT_OVERHEAD_BYTES
        );
        s.apply(&Effect::FlushAll);
        assert_eq!(s.used_bytes(), 0);
    }
}
