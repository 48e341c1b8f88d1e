//! The node's `maxmemory` setting: the limit and policy in force (changed
//! at run time by `CONFIG SET`), Redis's size syntax (`100mb`, `1gb`) and
//! the `-OOM` error text.
//!
//! Which key to evict is decided in `tandem_core::evict`; the evictions
//! themselves happen in `Db` under the state lock, as `Effect::Evict`
//! entries in the log, on the leader only. This module must never evict or
//! touch the store. See docs/decisions/0019-maxmemory.md.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use serde::{Deserialize, Deserializer, Serializer};
use tandem_core::evict::Policy;

/// What a write that may grow memory gets while the store is over the
/// limit and nothing can be evicted (Redis's exact text).
pub const OOM_ERROR: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// Most keys evicted in one pass (before one write, or one background
/// tick): bounds how long the state lock is held; the next write or tick
/// continues.
pub const EVICTIONS_PER_PASS_MAX: usize = 4096;

/// The limit and policy in force.
pub struct MemoryLimit {
    max_bytes: AtomicU64,
    policy: AtomicU8,
    samples: AtomicUsize,
    /// splitmix64 state: the random numbers eviction sampling starts from
    /// (seeded from the node's random seed; never a global RNG).
    random: AtomicU64,
}

impl MemoryLimit {
    /// A limit of `max_bytes` (0: none) under `policy`, sampling `samples`
    /// keys per eviction, with random numbers seeded by `seed`.
    pub fn new(max_bytes: u64, policy: Policy, samples: usize, seed: u64) -> MemoryLimit {
        MemoryLimit {
            max_bytes: AtomicU64::new(max_bytes),
            policy: AtomicU8::new(policy_index(policy)),
            samples: AtomicUsize::new(samples.max(1)),
            random: AtomicU64::new(seed),
        }
    }

    /// The limit in bytes (0: none).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// Changes the limit (`CONFIG SET maxmemory`).
    pub fn set_max_bytes(&self, bytes: u64) {
        self.max_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        Policy::ALL[self.policy.load(Ordering::Relaxed) as usize]
    }

    /// Changes the policy (`CONFIG SET maxmemory-policy`).
    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(policy_index(policy), Ordering::Relaxed);
    }

    /// Keys sampled per eviction.
    pub fn samples(&self) -> usize {
        self.samples.load(Ordering::Relaxed)
    }

    /// The next random number (splitmix64).
    pub fn next_random(&self) -> u64 {
        let mut z = self.random.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn policy_index(policy: Policy) -> u8 {
    Policy::ALL.iter().position(|p| *p == policy).expect("every policy is in ALL") as u8
}

/// Parses a size the way Redis's config does: a number of bytes with an
/// optional unit, case-insensitive: `b`, `k` (1000), `kb` (1024), `m`
/// (10^6), `mb` (2^20), `g` (10^9), `gb` (2^30).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let unit_bytes: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        other => return Err(format!("{text:?}: unknown unit {other:?} (b, k, kb, m, mb, g, gb)")),
    };
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a size (e.g. 100mb, 1gb, 1048576)"))?;
    n.checked_mul(unit_bytes).ok_or_else(|| format!("{text:?} is too large"))
}

/// Serde for a size: a number of bytes, or a string in [`parse_bytes`]'s
/// syntax.
pub mod bytes_serde {
    use super::*;

    /// Writes the number of bytes.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }

    /// Reads a number or a string like `"100mb"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Size {
            Number(u64),
            Text(String),
        }
        match Size::deserialize(d)? {
            Size::Number(n) => Ok(n),
            Size::Text(t) => parse_bytes(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// Serde for a policy by its Redis name.
pub mod policy_serde {
    use super::*;

    /// Writes the policy's name.
    pub fn serialize<S: Serializer>(p: &Policy, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    /// Reads a policy name.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_redis() {
        assert_eq!(parse_bytes("0").unwrap(), 0);
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("100mb").unwrap(), 100 << 20);
        assert_eq!(parse_bytes("1GB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("1g").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("64kb").unwrap(), 64 << 10);
        assert_eq!(parse_bytes("5k").unwrap(), 5000);
        assert!(parse_bytes("mb").is_err());
        assert!(parse_bytes("10tb").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999999999999gb").is_err());
    }

    #[test]
    fn policy_changes_at_run_time() {
        let m = MemoryLimit::new(10, Policy::NoEviction, 16, 1);
        for p in Policy::ALL {
            m.set_policy(p);
            assert_eq!(m.policy(), p);
        }
        assert_ne!(m.next_random(), m.next_random());
    }
}
