//! Quorum arithmetic for leaderless keyspaces: what N, W and R promise.
//!
//! Pure functions; the coordinator ([`super::coordinator`]) uses them and
//! the admin port and docs quote them.

/// True when every read quorum intersects every write quorum (`W + R > N`):
/// a read then hears from at least one replica that took the latest
/// acknowledged write.
pub fn overlaps(n: u8, w: u8, r: u8) -> bool {
    u16::from(w) + u16::from(r) > u16::from(n)
}

/// How many of a key's N replicas may be down while both writes (W) and
/// reads (R) still succeed: `N - max(W, R)`.
pub fn tolerated_down(n: u8, w: u8, r: u8) -> u8 {
    n.saturating_sub(w.max(r))
}

/// Checks `1 <= W, R <= N`: the per-connection override (`CONSISTENCY`)
/// against the keyspace's N.
pub fn check(n: u8, w: u8, r: u8) -> Result<(), String> {
    if w == 0 || r == 0 || w > n || r > n {
        return Err(format!("W {w} and R {r} must each be between 1 and the keyspace's N {n}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_overlap_needs_w_plus_r_above_n() {
        assert!(overlaps(3, 2, 2));
        assert!(overlaps(3, 3, 1));
        assert!(!overlaps(3, 1, 2));
        assert!(!overlaps(3, 1, 1));
        assert!(overlaps(1, 1, 1));
        assert!(overlaps(255, 255, 255));
    }

    #[test]
    fn quorum_tolerates_n_minus_the_larger_quorum_down() {
        assert_eq!(tolerated_down(3, 2, 2), 1);
        assert_eq!(tolerated_down(5, 3, 3), 2);
        assert_eq!(tolerated_down(3, 3, 1), 0);
        assert_eq!(tolerated_down(3, 1, 1), 2);
    }

    #[test]
    fn quorum_override_must_fit_n() {
        assert!(check(3, 2, 2).is_ok());
        assert!(check(3, 4, 1).is_err());
        assert!(check(3, 0, 1).is_err());
    }
}
