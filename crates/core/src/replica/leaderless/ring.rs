//! The consistent-hash ring of a leaderless keyspace: virtual nodes over the
//! cluster's member ids, and each key's preference list.
//!
//! Each member owns [`VNODES_PER_NODE`] points on a 64-bit ring (xxh3 of the
//! member id and the point's index, so every node computes the same ring
//! from the same members); a key hashes to a position and its preference
//! list is the first N *distinct* members met walking clockwise from it.
//! Adding or removing one member moves only the keys whose walk meets it:
//! about 1/members of them. Never depends on hash-map order or a process
//! seed.

use xxhash_rust::xxh3::xxh3_64;

use crate::repl::NodeId;

/// Points per member on the ring: enough that members' shares differ by a
/// few percent, few enough that building the ring is instant.
pub const VNODES_PER_NODE: usize = 128;

/// The ring over a set of members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// `(position, member)`, sorted by position.
    points: Vec<(u64, NodeId)>,
    members: Vec<NodeId>,
}

/// A key's position on the ring.
pub fn key_position(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Ring {
    /// The ring over `members` (order and duplicates do not matter).
    pub fn new(members: impl IntoIterator<Item = NodeId>) -> Ring {
        let mut ids: Vec<NodeId> = members.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut points = Vec::with_capacity(ids.len() * VNODES_PER_NODE);
        for &id in &ids {
            for i in 0..VNODES_PER_NODE as u64 {
                let mut seed = [0u8; 16];
                seed[..8].copy_from_slice(&id.to_be_bytes());
                seed[8..].copy_from_slice(&i.to_be_bytes());
                points.push((xxh3_64(&seed), id));
            }
        }
        points.sort_unstable();
        Ring { points, members: ids }
    }

    /// The members, ascending.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Every member once, in ring order from `key`'s position: the first N
    /// are its preference list, the rest are the fallbacks a sloppy quorum
    /// uses, nearest first.
    pub fn walk(&self, key: &[u8]) -> Vec<NodeId> {
        let mut out = Vec::with_capacity(self.members.len());
        if self.points.is_empty() {
            return out;
        }
        let pos = key_position(key);
        let start = self.points.partition_point(|(p, _)| *p < pos);
        for i in 0..self.points.len() {
            let (_, id) = self.points[(start + i) % self.points.len()];
            if !out.contains(&id) {
                out.push(id);
                if out.len() == self.members.len() {
                    break;
                }
            }
        }
        out
    }

    /// The key's N replicas (fewer if the ring has fewer members).
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        let mut w = self.walk(key);
        w.truncate(n);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(count: usize) -> Vec<Vec<u8>> {
        (0..count).map(|i| format!("user:{i}").into_bytes()).collect()
    }

    #[test]
    fn ring_preference_list_is_n_distinct_members_the_same_on_every_node() {
        let a = Ring::new([3, 1, 2, 4, 5]);
        let b = Ring::new([5, 4, 3, 2, 1, 1]);
        for k in keys(200) {
            let p = a.preference_list(&k, 3);
            assert_eq!(p, b.preference_list(&k, 3));
            assert_eq!(p.len(), 3);
            let mut d = p.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
        assert_eq!(Ring::new([1, 2]).preference_list(b"k", 3).len(), 2);
        assert!(Ring::new([]).preference_list(b"k", 3).is_empty());
    }

    #[test]
    fn ring_adding_a_member_moves_about_one_in_members_of_the_keys() {
        let ks = keys(20_000);
        let before = Ring::new(1..=4);
        let after = Ring::new(1..=5);
        // The primary (first) owner changes for about 1/5 of the keys, and
        // only to the new member.
        let mut moved = 0;
        for k in &ks {
            let (a, b) = (before.preference_list(k, 1)[0], after.preference_list(k, 1)[0]);
            if a != b {
                assert_eq!(b, 5, "a key moved between two old members");
                moved += 1;
            }
        }
        let share = moved as f64 / ks.len() as f64;
        assert!((0.14..0.26).contains(&share), "moved share {share}");
        // A key's replica set changes only by the new member taking one place.
        for k in ks.iter().take(2000) {
            let a = before.preference_list(k, 3);
            let b = after.preference_list(k, 3);
            let lost: Vec<_> = a.iter().filter(|x| !b.contains(x)).collect();
            assert!(lost.len() <= 1);
            if !lost.is_empty() {
                assert!(b.contains(&5));
            }
        }
    }

    #[test]
    fn ring_shares_are_balanced_across_members() {
        let ring = Ring::new(1..=3);
        let mut counts = [0usize; 3];
        for k in keys(30_000) {
            counts[ring.preference_list(&k, 1)[0] as usize - 1] += 1;
        }
        for c in counts {
            assert!((8_000..12_000).contains(&c), "unbalanced: {counts:?}");
        }
    }
}
