//! `maxmemory` eviction: the policies and the choice of the key to evict.
//!
//! Owns the decision "which key goes next" given the store and a random
//! number from the caller. Like Redis it is an approximation: it samples a
//! few keys (from a random bucket on) and evicts the best of the sample by
//! the policy, so no ordered index of all keys has to be kept.
//!
//! Must never: apply anything (the node turns the choice into an
//! `Effect::Evict` on the leader's log, so followers evict the same keys),
//! read a clock or draw randomness itself. See
//! docs/decisions/0019-maxmemory.md.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::store::{Store, BUCKETS};

/// Keys sampled per eviction by default (Redis's `maxmemory-samples` is 5;
/// more samples cost little here and evict closer to true LRU).
pub const SAMPLES_DEFAULT: usize = 16;
/// Most keys one eviction looks at while it searches for `samples`
/// candidates (a `volatile-*` policy over a store with few expiring keys
/// would otherwise walk the whole store under the lock).
pub const SCAN_KEYS_MAX: usize = 4096;

/// What the leader does when a write arrives while the store's used bytes
/// exceed `maxmemory` (Redis's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refuse writes that may grow memory with `-OOM`; reads and deletes
    /// keep working.
    #[default]
    NoEviction,
    /// Evict the least recently used key (approximated by sampling).
    AllkeysLru,
    /// Evict a random key.
    AllkeysRandom,
    /// Evict the least recently used key among those with an expiry.
    VolatileLru,
    /// Evict the key with the nearest expiry.
    VolatileTtl,
}

impl Policy {
    /// Every policy, in the order the docs list them.
    pub const ALL: [Policy; 5] =
        [Policy::NoEviction, Policy::AllkeysLru, Policy::AllkeysRandom, Policy::VolatileLru, Policy::VolatileTtl];

    /// Redis's name for the policy.
    pub fn name(self) -> &'static str {
        match self {
            Policy::NoEviction => "noeviction",
            Policy::AllkeysLru => "allkeys-lru",
            Policy::AllkeysRandom => "allkeys-random",
            Policy::VolatileLru => "volatile-lru",
            Policy::VolatileTtl => "volatile-ttl",
        }
    }

    fn volatile_only(self) -> bool {
        matches!(self, Policy::VolatileLru | Policy::VolatileTtl)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        Policy::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            let names: Vec<&str> = Policy::ALL.iter().map(|p| p.name()).collect();
            format!("unknown maxmemory policy {s:?} (one of {})", names.join(", "))
        })
    }
}

/// The key to evict next under `policy`, chosen among up to `samples`
/// candidates starting at a bucket picked by `random`; `None` if the policy
/// never evicts or no candidate was found (the write then gets `-OOM`).
pub fn choose_victim(store: &Store, policy: Policy, samples: usize, random: u64) -> Option<Bytes> {
    if policy == Policy::NoEviction || store.is_empty() || (policy.volatile_only() && store.keys_with_expiry() == 0) {
        return None;
    }
    let samples = samples.max(1);
    let start = (random % BUCKETS as u64) as usize;
    // For allkeys-random, which of the candidates to take.
    let pick = ((random >> 32) % samples as u64) as usize;
    let mut best: Option<(Bytes, u64)> = None;
    let mut candidates = 0usize;
    store.sample(start, SCAN_KEYS_MAX, |key, expire_at_ms, idle| {
        if policy.volatile_only() && expire_at_ms == 0 {
            return true;
        }
        // Higher score: evicted first.
        let score = match policy {
            Policy::AllkeysLru | Policy::VolatileLru => u64::from(idle),
            Policy::VolatileTtl => u64::MAX - expire_at_ms,
            Policy::AllkeysRandom => u64::from(candidates == pick.min(samples - 1)),
            Policy::NoEviction => 0,
        };
        if best.as_ref().is_none_or(|(_, s)| score > *s) {
            best = Some((Bytes::copy_from_slice(key), score));
        }
        candidates += 1;
        candidates < samples
    });
    best.map(|(k, _)| k)
}

#[cfg(test)]
mod tests;
