//! A fixed-depth Merkle tree over key buckets, for anti-entropy.
//!
//! A key falls in leaf `xxh3(key) >> (64 - DEPTH)`; a leaf's hash is the
//! wrapping sum of its entries' digests (xxh3 of key and version), so it is
//! updated in O(1) as records change and does not depend on insertion
//! order; inner nodes hash their two children; the root is the replica's
//! `digest`. Two replicas compare roots, then leaves ([`Merkle::diff_leaves`]),
//! then only the keys of differing leaves ([`diff_keys`]): exactly the keys
//! whose versions differ are transferred. Never reads anything but its
//! arguments.

use std::collections::BTreeMap;

use bytes::Bytes;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use super::lww::Version;

/// Depth of the tree: `2^DEPTH` leaves (8 KiB of leaf hashes to exchange).
pub const DEPTH: u32 = 10;
/// Number of leaves.
pub const LEAVES: usize = 1 << DEPTH;

/// The digest of one record: its key and version (two replicas holding the
/// same version of a key hold the same write).
pub fn entry_digest(key: &[u8], version: Version) -> u64 {
    xxh3_64_with_seed(&super::lww::version_bytes(version), xxh3_64(key))
}

/// The leaf a key falls in.
pub fn leaf_of(key: &[u8]) -> usize {
    (xxh3_64(key) >> (64 - DEPTH)) as usize
}

/// The tree: leaf hashes; inner nodes are computed on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merkle {
    leaves: Vec<u64>,
}

impl Default for Merkle {
    fn default() -> Self {
        Merkle { leaves: vec![0; LEAVES] }
    }
}

impl Merkle {
    /// An empty tree.
    pub fn new() -> Merkle {
        Merkle::default()
    }

    /// A tree over `(key, version)` entries.
    pub fn build<'a>(entries: impl IntoIterator<Item = (&'a [u8], Version)>) -> Merkle {
        let mut m = Merkle::new();
        for (k, v) in entries {
            m.insert(k, v);
        }
        m
    }

    /// Adds an entry.
    pub fn insert(&mut self, key: &[u8], version: Version) {
        let l = &mut self.leaves[leaf_of(key)];
        *l = l.wrapping_add(entry_digest(key, version));
    }

    /// Removes an entry that was inserted.
    pub fn remove(&mut self, key: &[u8], version: Version) {
        let l = &mut self.leaves[leaf_of(key)];
        *l = l.wrapping_sub(entry_digest(key, version));
    }

    /// The leaf hashes, in leaf order.
    pub fn leaves(&self) -> &[u64] {
        &self.leaves
    }

    /// The root hash: inner nodes hash their children up to one value.
    pub fn root(&self) -> u64 {
        let mut level: Vec<u64> = self.leaves.clone();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|p| {
                    let mut b = [0u8; 16];
                    b[..8].copy_from_slice(&p[0].to_be_bytes());
                    b[8..].copy_from_slice(&p[1].to_be_bytes());
                    xxh3_64(&b)
                })
                .collect();
        }
        level[0]
    }

    /// The leaves whose hashes differ from `other`'s (a peer's leaves; a
    /// malformed list of the wrong length differs everywhere).
    pub fn diff_leaves(&self, other: &[u64]) -> Vec<usize> {
        if other.len() != LEAVES {
            return (0..LEAVES).collect();
        }
        (0..LEAVES).filter(|&i| self.leaves[i] != other[i]).collect()
    }
}

/// The keys whose versions differ between two replicas' entries of the same
/// leaves (missing on one side counts as differing): exactly the keys to
/// exchange.
pub fn diff_keys(mine: &BTreeMap<Bytes, Version>, theirs: &BTreeMap<Bytes, Version>) -> Vec<Bytes> {
    let mut out: Vec<Bytes> = mine.iter().filter(|(k, v)| theirs.get(*k) != Some(v)).map(|(k, _)| k.clone()).collect();
    out.extend(theirs.keys().filter(|k| !mine.contains_key(*k)).cloned());
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(ms: u64) -> Version {
        Version { physical_ms: ms, logical: 0, node: 1 }
    }

    #[test]
    fn merkle_diff_finds_exactly_the_differing_keys() {
        let mut a: BTreeMap<Bytes, Version> = (0..5000).map(|i| (Bytes::from(format!("k{i}")), v(1))).collect();
        let mut b = a.clone();
        b.insert(Bytes::from("k17"), v(2)); // newer on b
        b.remove(&Bytes::from("k4000")); // missing on b
        a.insert(Bytes::from("only-a"), v(3)); // only on a
        let ta = Merkle::build(a.iter().map(|(k, v)| (k.as_ref(), *v)));
        let tb = Merkle::build(b.iter().map(|(k, v)| (k.as_ref(), *v)));
        assert_ne!(ta.root(), tb.root());
        let leaves = ta.diff_leaves(tb.leaves());
        assert!(leaves.len() <= 3);
        let in_leaves = |m: &BTreeMap<Bytes, Version>| -> BTreeMap<Bytes, Version> {
            m.iter().filter(|(k, _)| leaves.contains(&leaf_of(k))).map(|(k, v)| (k.clone(), *v)).collect()
        };
        let keys = diff_keys(&in_leaves(&a), &in_leaves(&b));
        let want: Vec<Bytes> = ["k17", "k4000", "only-a"].into_iter().map(Bytes::from).collect::<Vec<_>>();
        let mut want = want;
        want.sort();
        assert_eq!(keys, want);
    }

    #[test]
    fn merkle_equal_content_gives_equal_roots_in_any_order() {
        let entries: Vec<(Bytes, Version)> = (0..300).map(|i| (Bytes::from(format!("x{i}")), v(i))).collect();
        let fwd = Merkle::build(entries.iter().map(|(k, v)| (k.as_ref(), *v)));
        let rev = Merkle::build(entries.iter().rev().map(|(k, v)| (k.as_ref(), *v)));
        assert_eq!(fwd.root(), rev.root());
        assert!(fwd.diff_leaves(rev.leaves()).is_empty());
        let mut inc = Merkle::new();
        inc.insert(b"x1", v(0));
        inc.remove(b"x1", v(0));
        assert_eq!(inc, Merkle::new());
        assert_eq!(fwd.diff_leaves(&[1, 2]).len(), LEAVES);
    }
}
