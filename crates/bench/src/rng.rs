//! A small seeded RNG for key and command choice. Not cryptographic; the
//! point is that a seed reproduces the same request stream and that drawing
//! a number costs a few nanoseconds.

/// SplitMix64 (Steele, Lea, Flood 2014): one u64 of state, passes BigCrush.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// An independent stream for client `index` of a run seeded with `seed`.
    pub(crate) fn for_client(seed: u64, index: usize) -> Self {
        let mut mixer = SplitMix64::new(seed ^ (index as u64).wrapping_mul(GOLDEN_GAMMA));
        SplitMix64::new(mixer.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; bias below 2^-64 * n).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_stream() {
        let a: Vec<u64> = (0..8).map(|_| 0).scan(SplitMix64::new(7), |r, _: u64| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..8).map(|_| 0).scan(SplitMix64::new(7), |r, _: u64| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        assert_ne!(SplitMix64::for_client(7, 0).next_u64(), SplitMix64::for_client(7, 1).next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = SplitMix64::new(1);
        let mut seen = [false; 10];
        for _ in 0..1000 {
            let v = rng.below(10);
            assert!(v < 10);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
