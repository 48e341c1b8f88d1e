//! A hash value (field -> value) whose entries are each one heap block.
//!
//! Owns the hash's in-memory representation: a `hashbrown` table of
//! 32-byte slots, each holding `[LEB128 field len][field][value]` as a
//! [`SmallBytes<30>`]: inline in the slot when the pair takes at most 30
//! bytes (no heap block at all), else one heap block for the pair (one
//! allocator header instead of two boxes' two). Fields are hashed with
//! the store's seeded xxh3.
//!
//! Must never: expose its encoding outside the store (callers see
//! `(&[u8], &[u8])` pairs only), or iterate in an order that depends on
//! anything but the seed and the history of changes.

use hashbrown::hash_table::{Entry, HashTable};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::small_bytes::SmallBytes;

/// One field and its value: `[LEB128 field len][field][value]`.
#[derive(Debug, Clone)]
struct Packed(SmallBytes<30>);

impl Packed {
    fn new(field: &[u8], value: &[u8]) -> Packed {
        let mut head = [0u8; 10];
        let (mut n, mut at) = (field.len(), 0);
        while n >= 0x80 {
            head[at] = (n as u8) | 0x80;
            n >>= 7;
            at += 1;
        }
        head[at] = n as u8;
        Packed(SmallBytes::from_parts(&[&head[..=at], field, value]))
    }

    /// Where the field starts and ends.
    #[inline]
    fn split(&self) -> (usize, usize) {
        let b = self.0.as_slice();
        if b[0] < 0x80 {
            return (1, 1 + b[0] as usize);
        }
        let (mut n, mut shift, mut p) = (0usize, 0, 0);
        loop {
            let x = b[p];
            n |= ((x & 0x7f) as usize) << shift;
            p += 1;
            if x < 0x80 {
                break;
            }
            shift += 7;
        }
        (p, p + n)
    }

    #[inline]
    fn field(&self) -> &[u8] {
        let (s, e) = self.split();
        &self.0[s..e]
    }

    #[inline]
    fn value(&self) -> &[u8] {
        &self.0[self.split().1..]
    }
}

/// A hash of fields (see the module doc).
#[derive(Debug, Clone)]
pub struct PackedHash {
    table: HashTable<Packed>,
    seed: u64,
}

impl PackedHash {
    /// An empty hash whose fields hash with `seed`.
    pub fn new(seed: u64) -> PackedHash {
        PackedHash { table: HashTable::new(), seed }
    }

    /// An empty hash with room for `capacity` fields.
    pub fn with_capacity(capacity: usize, seed: u64) -> PackedHash {
        PackedHash { table: HashTable::with_capacity(capacity), seed }
    }

    fn hash(&self, field: &[u8]) -> u64 {
        xxh3_64_with_seed(field, self.seed)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True if it has no field.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The value of `field`.
    pub fn get(&self, field: &[u8]) -> Option<&[u8]> {
        self.table.find(self.hash(field), |e| e.field() == field).map(Packed::value)
    }

    /// True if `field` is present.
    pub fn contains_key(&self, field: &[u8]) -> bool {
        self.get(field).is_some()
    }

    /// Sets `field` to `value`; returns the value it replaced.
    pub fn insert(&mut self, field: &[u8], value: &[u8]) -> Option<Box<[u8]>> {
        let seed = self.seed;
        let packed = Packed::new(field, value);
        match self.table.entry(self.hash(field), |e| e.field() == field, |e| xxh3_64_with_seed(e.field(), seed)) {
            Entry::Occupied(mut o) => {
                let old = std::mem::replace(o.get_mut(), packed);
                Some(old.value().into())
            }
            Entry::Vacant(v) => {
                v.insert(packed);
                None
            }
        }
    }

    /// Removes `field`; returns its value.
    pub fn remove(&mut self, field: &[u8]) -> Option<Box<[u8]>> {
        self.remove_entry(field).map(|(_, v)| v)
    }

    /// Removes `field`; returns it and its value.
    #[allow(clippy::type_complexity)]
    pub fn remove_entry(&mut self, field: &[u8]) -> Option<(Box<[u8]>, Box<[u8]>)> {
        let o = self.table.find_entry(self.hash(field), |e| e.field() == field).ok()?;
        let (e, _) = o.remove();
        Some((e.field().into(), e.value().into()))
    }

    /// Every (field, value), in table order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.table.iter().map(|e| (e.field(), e.value()))
    }

    /// Every field, in table order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.table.iter().map(Packed::field)
    }

    /// Every value, in table order.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.table.iter().map(Packed::value)
    }

    /// Bytes this hash's heap blocks request (table slots and control
    /// bytes, entries too long to be inline), for measurements.
    pub fn heap_bytes(&self) -> usize {
        let buckets = if self.table.capacity() == 0 { 0 } else { (self.table.capacity() * 8 / 7).next_power_of_two() };
        buckets * (std::mem::size_of::<Packed>() + 1) + self.table.iter().map(|e| e.0.heap_len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A packed hash and a `HashMap` model given the same random sets and
    /// removes agree on every field, value and count; fields and values of
    /// any length (past one varint byte, empty) round-trip.
    #[test]
    fn packed_hash_behaves_like_a_map_of_fields() {
        let mut r = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: u64| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r % n
        };
        let mut h = PackedHash::new(7);
        let mut m = std::collections::HashMap::<Vec<u8>, Vec<u8>>::new();
        for step in 0..20_000u64 {
            let flen = if next(10) == 0 { 128 + next(200) as usize } else { next(6) as usize };
            let field: Vec<u8> = (0..flen).map(|k| (k as u64 + next(3)) as u8).collect();
            let value: Vec<u8> = (0..next(300) as usize).map(|k| (step as usize + k) as u8).collect();
            match next(3) {
                0 | 1 => assert_eq!(h.insert(&field, &value).map(|b| b.to_vec()), m.insert(field, value)),
                _ => assert_eq!(h.remove_entry(&field).map(|(f, v)| (f.to_vec(), v.to_vec())), m.remove_entry(&field)),
            }
            assert_eq!(h.len(), m.len());
            if step % 501 == 0 {
                let mut got: Vec<(Vec<u8>, Vec<u8>)> = h.iter().map(|(f, v)| (f.to_vec(), v.to_vec())).collect();
                let mut want: Vec<(Vec<u8>, Vec<u8>)> = m.iter().map(|(f, v)| (f.clone(), v.clone())).collect();
                got.sort();
                want.sort();
                assert_eq!(got, want);
                for (f, v) in &m {
                    assert_eq!(h.get(f), Some(&v[..]));
                }
            }
        }
    }
}
