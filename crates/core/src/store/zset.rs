//! A sorted set that holds each member once.
//!
//! Owns the representation of a sorted-set value: the members in Redis's
//! order (score, then bytes) in one B-tree of `(Score, Member)` keys, and
//! a member -> score index that does **not** hold the member again. Each
//! index slot is 12 bytes: the score and a 32-bit tag of the member's
//! seeded xxh3 hash. A lookup probes the slots with the member's tag and
//! confirms each candidate against the B-tree (`(score, member)` present
//! there), so a tag collision costs one more B-tree probe, never a wrong
//! answer: a member has exactly one score, so only its own slot confirms.
//! (Decision 0033: the member was held twice before, 1.36x Redis's RSS.)
//!
//! Must never: let the two structures disagree (every change goes through
//! [`ZSetValue::insert`] / [`ZSetValue::remove`], the B-tree is read-only
//! outside), store a NaN score, or order `-0` apart from `0`.

use std::collections::BTreeSet;

use hashbrown::hash_table::HashTable;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::Member;

/// A score with a total order (scores are never NaN).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score(pub f64);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// One index slot: a member's score and its hash tag, 12 bytes (4-byte
/// aligned, so the table wastes no padding).
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// The score's bits, low word first.
    score: [u32; 2],
    /// The low 32 bits of the member's seeded xxh3.
    tag: u32,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 12);

impl Slot {
    fn new(score: f64, tag: u32) -> Slot {
        let bits = score.to_bits();
        Slot { score: [bits as u32, (bits >> 32) as u32], tag }
    }

    fn score(&self) -> f64 {
        f64::from_bits(self.score[0] as u64 | (self.score[1] as u64) << 32)
    }
}

/// The table hash of a tag: spread so that hashbrown's control byte (top
/// 7 bits) and bucket index (low bits) both vary.
fn spread(tag: u32) -> u64 {
    (tag as u64 | (tag as u64) << 32).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A sorted set: members in (score, bytes) order, and each member's score.
#[derive(Debug)]
pub struct ZSetValue {
    /// Members ordered by score, then bytes (Redis's order).
    order: BTreeSet<(Score, Member)>,
    /// One slot per member: its score and hash tag (see the module doc).
    index: HashTable<Slot>,
    /// The store's hash seed.
    seed: u64,
}

impl ZSetValue {
    /// An empty sorted set hashing members with `seed`.
    pub fn new(seed: u64) -> ZSetValue {
        ZSetValue { order: BTreeSet::new(), index: HashTable::new(), seed }
    }

    fn tag(&self, member: &[u8]) -> u32 {
        xxh3_64_with_seed(member, self.seed) as u32
    }

    /// Sets `member`'s score (adds it if absent). `-0` is stored as `0`;
    /// the caller never passes NaN.
    pub fn insert(&mut self, member: &[u8], score: f64) {
        debug_assert!(!score.is_nan(), "NaN score");
        let score = if score == 0.0 { 0.0 } else { score }; // -0 sorts as 0
        let tag = self.tag(member);
        let mut probe = (Score(0.0), Member::new(member));
        let order = &mut self.order;
        let found = self.index.find_entry(spread(tag), |s| {
            s.tag == tag && {
                probe.0 = Score(s.score());
                order.contains(&probe)
            }
        });
        match found {
            Ok(mut slot) => {
                let old = slot.get().score();
                if old == score {
                    return;
                }
                *slot.get_mut() = Slot::new(score, tag);
                probe.0 = Score(old);
                let (_, m) = order.take(&probe).expect("an indexed member is in the order");
                order.insert((Score(score), m));
            }
            Err(absent) => {
                absent.into_table().insert_unique(spread(tag), Slot::new(score, tag), |s| spread(s.tag));
                order.insert((Score(score), probe.1));
            }
        }
    }

    /// Removes `member`; returns its score if it was there.
    pub fn remove(&mut self, member: &[u8]) -> Option<f64> {
        let tag = self.tag(member);
        let mut probe = (Score(0.0), Member::new(member));
        let order = &mut self.order;
        let slot = self
            .index
            .find_entry(spread(tag), |s| {
                s.tag == tag && {
                    probe.0 = Score(s.score());
                    order.contains(&probe)
                }
            })
            .ok()?;
        let (old, _) = slot.remove();
        probe.0 = Score(old.score());
        order.remove(&probe);
        Some(old.score())
    }

    /// `member`'s score, if it is in the set.
    pub fn score(&self, member: &[u8]) -> Option<f64> {
        let tag = self.tag(member);
        let mut probe = (Score(0.0), Member::new(member));
        self.index
            .find(spread(tag), |s| {
                s.tag == tag && {
                    probe.0 = Score(s.score());
                    self.order.contains(&probe)
                }
            })
            .map(Slot::score)
    }

    /// True if `member` is in the set.
    pub fn contains(&self, member: &[u8]) -> bool {
        self.score(member).is_some()
    }

    /// Number of members ordered before `member` (its rank from the
    /// lowest score), with its score; O(rank).
    pub fn rank(&self, member: &[u8]) -> Option<(usize, f64)> {
        let score = self.score(member)?;
        Some((self.order.range(..(Score(score), Member::new(member))).count(), score))
    }

    /// The members in order (score, then bytes); read-only.
    pub fn order(&self) -> &BTreeSet<(Score, Member)> {
        &self.order
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True if it has no member.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(z: &ZSetValue) -> Vec<(f64, Vec<u8>)> {
        z.order().iter().map(|(s, m)| (s.0, m.to_vec())).collect()
    }

    #[test]
    fn sorted_set_index_and_order_agree_through_updates_and_removes() {
        let mut z = ZSetValue::new(7);
        z.insert(b"a", 2.0);
        z.insert(b"b", 1.0);
        z.insert(b"a-long-member-over-twenty-two-bytes", 1.0);
        z.insert(b"a", 0.5);
        z.insert(b"c", -0.0);
        assert_eq!(z.len(), 4);
        assert_eq!(z.score(b"a"), Some(0.5));
        assert_eq!(z.score(b"c").map(f64::to_bits), Some(0.0f64.to_bits()));
        assert_eq!(z.score(b"a-long-member-over-twenty-two-bytes"), Some(1.0));
        assert_eq!(z.score(b"zz"), None);
        assert_eq!(
            members(&z),
            vec![
                (0.0, b"c".to_vec()),
                (0.5, b"a".to_vec()),
                (1.0, b"a-long-member-over-twenty-two-bytes".to_vec()),
                (1.0, b"b".to_vec())
            ]
        );
        assert_eq!(z.rank(b"b"), Some((3, 1.0)));
        assert_eq!(z.remove(b"a"), Some(0.5));
        assert_eq!(z.remove(b"a"), None);
        assert_eq!(z.score(b"a"), None);
        assert_eq!(z.len(), 3);
        assert_eq!(z.index.len(), 3);
    }

    #[test]
    fn sorted_set_lookup_is_exact_when_two_members_share_a_tag() {
        // Find two members whose 32-bit tags collide (about 10 such pairs
        // are expected among 300 000 names).
        let mut z = ZSetValue::new(1);
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..300_000u32)
            .map(|i| format!("m{i}"))
            .find_map(|m| seen.insert(z.tag(m.as_bytes()), m.clone()).map(|other| (other, m)))
            .expect("a tag collision among 300 000 members");
        let (a, b) = (a.as_bytes(), b.as_bytes());
        assert_eq!(z.tag(a), z.tag(b));
        z.insert(a, 1.0);
        assert_eq!(z.score(b), None, "a colliding absent member has no score");
        assert_eq!(z.remove(b), None);
        z.insert(b, 1.0); // same score: only the B-tree tells them apart
        assert_eq!((z.score(a), z.score(b), z.len()), (Some(1.0), Some(1.0), 2));
        z.insert(b, 2.0);
        assert_eq!((z.score(a), z.score(b)), (Some(1.0), Some(2.0)));
        z.insert(a, 3.0);
        assert_eq!((z.score(a), z.score(b)), (Some(3.0), Some(2.0)));
        assert_eq!(z.remove(a), Some(3.0));
        assert_eq!((z.score(a), z.score(b), z.len()), (None, Some(2.0), 1));
        assert_eq!(z.remove(b), Some(2.0));
        assert!(z.is_empty());
        assert_eq!(z.index.len(), 0);
    }

    #[test]
    fn sorted_set_many_members_keep_their_scores() {
        let mut z = ZSetValue::new(3);
        for i in 0..20_000u32 {
            z.insert(format!("m{i}").as_bytes(), (i % 3) as f64);
        }
        for i in (0..20_000u32).step_by(2) {
            z.insert(format!("m{i}").as_bytes(), 10.0 + i as f64);
        }
        for i in 0..20_000u32 {
            let want = if i % 2 == 0 { 10.0 + i as f64 } else { (i % 3) as f64 };
            assert_eq!(z.score(format!("m{i}").as_bytes()), Some(want), "m{i}");
            assert_eq!(z.remove(format!("m{i}").as_bytes()), Some(want));
        }
        assert!(z.is_empty());
        assert_eq!(z.index.len(), 0);
    }
}
