//! The simulator's only source of randomness: a seeded xoshiro256**.
//!
//! Owns random draws and the few distributions the simulator needs. Must
//! never be seeded from anything but the run's seed, so that a seed
//! reproduces a run exactly.

/// A small, fast, seeded generator (xoshiro256**, seeded by splitmix64).
#[derive(Debug, Clone)]
pub struct SimRng {
    s: [u64; 4],
}

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SimRng {
        let mut x = seed;
        SimRng { s: [splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x), splitmix64(&mut x)] }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `[lo, hi]`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "range({lo}, {hi})");
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Exponentially distributed with this mean, capped at 20 means.
    pub fn exp(&mut self, mean: u64) -> u64 {
        let draw = -(1.0 - self.unit()).ln() * mean as f64;
        (draw as u64).min(mean.saturating_mul(20))
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A latency distribution in microseconds: a floor, exponential jitter,
/// and a rare tail (a slow disk or a congested link).
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Smallest latency.
    pub base_us: u64,
    /// Mean of the exponential part.
    pub jitter_us: u64,
    /// Probability of a tail draw.
    pub tail_chance: f64,
    /// A tail draw adds up to this much.
    pub tail_us: u64,
}

impl Latency {
    /// A draw.
    pub fn sample(&self, rng: &mut SimRng) -> u64 {
        let mut us = self.base_us + rng.exp(self.jitter_us.max(1));
        if self.tail_chance > 0.0 && rng.chance(self.tail_chance) {
            us += rng.range(0, self.tail_us);
        }
        us
    }

    /// A random distribution within the bounds the simulator explores.
    pub fn random(rng: &mut SimRng, base_us: (u64, u64), jitter_us: (u64, u64), tail_us: u64) -> Latency {
        Latency {
            base_us: rng.range(base_us.0, base_us.1),
            jitter_us: rng.range(jitter_us.0, jitter_us.1),
            tail_chance: *rng.pick(&[0.0, 0.01, 0.05]),
            tail_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_different_seed_different_sequence() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = SimRng::new(42);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = SimRng::new(42);
        assert!(a.iter().all(|&x| x == r.next_u64()));
        assert_ne!(SimRng::new(43).next_u64(), a[0]);
    }

    #[test]
    fn bounded_draws_stay_in_bounds() {
        let mut r = SimRng::new(7);
        for _ in 0..10_000 {
            assert!(r.below(3) < 3);
            let x = r.range(5, 9);
            assert!((5..=9).contains(&x));
            assert!(r.exp(100) <= 2000);
        }
    }
}
