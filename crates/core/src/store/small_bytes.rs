//! A byte string stored inline when short, boxed when long.
//!
//! Owns the element type of sets, sorted sets and packed hash entries:
//! up to `N` bytes live inside the value itself (no heap block, no
//! allocator header, no pointer), longer ones in a `Box<[u8]>`.
//! `SmallBytes<22>` is 24 bytes, the size of a `Box<[u8]>` plus its
//! length-prefix word, and holds most set members and sorted-set members
//! without an allocation; `SmallBytes<30>` (32 bytes) holds a short hash
//! field with its value.
//!
//! It hashes, compares and orders exactly as the `[u8]` it holds, so a
//! table of them is looked up with a `&[u8]`.
//!
//! Must never: expose which form a value takes (callers see `[u8]`), or
//! hold a short value boxed (equality is by bytes, so it would still be
//! correct, only wasteful).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

/// Bytes inline up to `N` (at most 255), boxed past it.
#[derive(Clone)]
pub enum SmallBytes<const N: usize> {
    /// Short: the bytes and their length.
    Inline {
        /// How many of `buf` are used.
        len: u8,
        /// The bytes.
        buf: [u8; N],
    },
    /// Long: a heap block.
    Heap(Box<[u8]>),
}

/// A set or sorted-set member: inline up to 22 bytes, 24 bytes in all.
pub type Member = SmallBytes<22>;

// The element budgets in the module doc depend on these sizes.
const _: () = assert!(std::mem::size_of::<SmallBytes<22>>() == 24);
const _: () = assert!(std::mem::size_of::<SmallBytes<30>>() == 32);

impl<const N: usize> SmallBytes<N> {
    /// `b`, inline if it fits.
    #[inline]
    pub fn new(b: &[u8]) -> Self {
        if b.len() <= N {
            let mut buf = [0u8; N];
            buf[..b.len()].copy_from_slice(b);
            SmallBytes::Inline { len: b.len() as u8, buf }
        } else {
            SmallBytes::Heap(b.into())
        }
    }

    /// Builds the bytes in place from pieces (no intermediate copy when
    /// they fit inline).
    pub fn from_parts(parts: &[&[u8]]) -> Self {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total <= N {
            let mut buf = [0u8; N];
            let mut at = 0;
            for p in parts {
                buf[at..at + p.len()].copy_from_slice(p);
                at += p.len();
            }
            SmallBytes::Inline { len: total as u8, buf }
        } else {
            let mut v = Vec::with_capacity(total);
            for p in parts {
                v.extend_from_slice(p);
            }
            SmallBytes::Heap(v.into_boxed_slice())
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        match self {
            SmallBytes::Inline { len, buf } => &buf[..*len as usize],
            SmallBytes::Heap(b) => b,
        }
    }

    /// Heap bytes beyond the value itself (0 when inline).
    pub fn heap_len(&self) -> usize {
        match self {
            SmallBytes::Inline { .. } => 0,
            SmallBytes::Heap(b) => b.len(),
        }
    }

    /// The bytes as a box (for undo records and callers that keep them).
    pub fn into_box(self) -> Box<[u8]> {
        match self {
            SmallBytes::Inline { .. } => self.as_slice().into(),
            SmallBytes::Heap(b) => b,
        }
    }
}

impl<const N: usize> Deref for SmallBytes<N> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> AsRef<[u8]> for SmallBytes<N> {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> Borrow<[u8]> for SmallBytes<N> {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl<const N: usize> Hash for SmallBytes<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Exactly as `[u8]` hashes, so `&[u8]` lookups find it.
        self.as_slice().hash(state)
    }
}

impl<const N: usize> PartialEq for SmallBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> Eq for SmallBytes<N> {}

impl<const N: usize> PartialOrd for SmallBytes<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<const N: usize> Ord for SmallBytes<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl<const N: usize> std::fmt::Debug for SmallBytes<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", bytes::Bytes::copy_from_slice(self.as_slice()))
    }
}

impl<const N: usize> From<&[u8]> for SmallBytes<N> {
    fn from(b: &[u8]) -> Self {
        SmallBytes::new(b)
    }
}

impl<const N: usize> From<Box<[u8]>> for SmallBytes<N> {
    fn from(b: Box<[u8]>) -> Self {
        if b.len() <= N {
            SmallBytes::new(&b)
        } else {
            SmallBytes::Heap(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short and long values, at and around the inline limit, hash,
    /// compare and order exactly as their bytes.
    #[test]
    fn small_bytes_hash_compare_and_order_as_their_bytes() {
        use std::hash::BuildHasher;
        let build = xxhash_rust::xxh3::Xxh3Builder::new().with_seed(3);
        let values: Vec<Vec<u8>> = (0..40).map(|n| (0..n).map(|k| b'a' + (k % 3) as u8).collect()).collect();
        for a in &values {
            let sa = Member::new(a);
            assert_eq!(&sa[..], &a[..]);
            assert_eq!(matches!(sa, SmallBytes::Inline { .. }), a.len() <= 22);
            assert_eq!(build.hash_one(&sa), build.hash_one(&a[..]));
            assert_eq!(SmallBytes::<30>::from_parts(&[&a[..1.min(a.len())], &a[1.min(a.len())..]]).as_slice(), &a[..]);
            assert_eq!(&Member::from(Box::<[u8]>::from(&a[..])).into_box()[..], &a[..]);
            for b in &values {
                assert_eq!(sa.cmp(&Member::new(b)), a.cmp(b));
                assert_eq!(sa == Member::new(b), a == b);
            }
        }
        let mut set = hashbrown::HashSet::with_hasher(build);
        set.insert(Member::new(b"member:1"));
        set.insert(Member::new(&[7u8; 100]));
        assert!(set.contains(&b"member:1"[..]) && set.contains(&[7u8; 100][..]) && !set.contains(&b"x"[..]));
    }
}
