use bytes::Bytes;

use super::*;
use crate::effect::Effect;

fn store_with(keys: usize, expiring: impl Fn(usize) -> Option<u64>) -> Store {
    let mut s = Store::new(42);
    for i in 0..keys {
        s.apply(&Effect::Set {
            key: Bytes::from(format!("key{i}")),
            value: Bytes::from_static(b"value"),
            expire_at_ms: expiring(i),
        });
    }
    s
}

#[test]
fn policies_parse_by_their_redis_names() {
    for p in Policy::ALL {
        assert_eq!(p.name().parse::<Policy>().unwrap(), p);
    }
    assert_eq!("ALLKEYS-LRU".parse::<Policy>().unwrap(), Policy::AllkeysLru);
    assert!("allkeys-lfu".parse::<Policy>().unwrap_err().contains("noeviction, allkeys-lru"));
}

#[test]
fn noeviction_never_chooses_a_key() {
    let s = store_with(100, |_| None);
    assert_eq!(choose_victim(&s, Policy::NoEviction, 16, 7), None);
}

#[test]
fn an_empty_store_has_no_victim() {
    let s = Store::new(1);
    for p in Policy::ALL {
        assert_eq!(choose_victim(&s, p, 16, 7), None);
    }
}

#[test]
fn allkeys_lru_evicts_the_least_recently_used_of_a_sample_covering_all_keys() {
    let s = store_with(10, |_| None);
    // Read every key but key3, so key3 is the least recently used.
    for i in (0..10).filter(|&i| i != 3) {
        assert!(s.get(format!("key{i}").as_bytes(), 0).is_some());
    }
    for random in 0..20 {
        assert_eq!(choose_victim(&s, Policy::AllkeysLru, 16, random).as_deref(), Some(&b"key3"[..]), "random {random}");
    }
}

#[test]
fn allkeys_lru_over_many_keys_evicts_old_keys_not_recent_ones() {
    let s = store_with(5000, |_| None);
    // The last 1000 written keys are read again: they are the recent ones.
    for i in 4000..5000 {
        s.get(format!("key{i}").as_bytes(), 0);
    }
    for random in 0..200u64 {
        let victim = choose_victim(&s, Policy::AllkeysLru, 16, random.wrapping_mul(0x9E37_79B9_7F4A_7C15)).unwrap();
        let n: usize = std::str::from_utf8(&victim[3..]).unwrap().parse().unwrap();
        assert!(n < 4000, "a recently read key was evicted: key{n}");
    }
}

#[test]
fn volatile_policies_only_evict_keys_with_an_expiry() {
    let s = store_with(1000, |i| (i % 100 == 0).then_some(1_000_000 + i as u64));
    for random in 0..50u64 {
        for p in [Policy::VolatileLru, Policy::VolatileTtl] {
            let victim = choose_victim(&s, p, 16, random * 977).unwrap();
            let n: usize = std::str::from_utf8(&victim[3..]).unwrap().parse().unwrap();
            assert_eq!(n % 100, 0, "{p} chose key{n}, which has no expiry");
        }
    }
    let none = store_with(100, |_| None);
    assert_eq!(choose_victim(&none, Policy::VolatileTtl, 16, 1), None);
    assert_eq!(choose_victim(&none, Policy::VolatileLru, 16, 1), None);
}

#[test]
fn volatile_ttl_evicts_the_nearest_expiry_of_the_sample() {
    let s = store_with(8, |i| Some(1_000_000 - i as u64 * 1000));
    // Every key is in the sample (8 < 16): key7 expires first.
    assert_eq!(choose_victim(&s, Policy::VolatileTtl, 16, 5).as_deref(), Some(&b"key7"[..]));
}

#[test]
fn allkeys_random_spreads_its_choices() {
    let s = store_with(1000, |_| None);
    let chosen: std::collections::HashSet<Bytes> = (0..100u64)
        .filter_map(|r| choose_victim(&s, Policy::AllkeysRandom, 16, r.wrapping_mul(0x2545_F491_4F6C_DD1D)))
        .collect();
    assert!(chosen.len() > 50, "only {} different keys in 100 choices", chosen.len());
}
