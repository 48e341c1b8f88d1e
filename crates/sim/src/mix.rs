//! The data-model workload: a weighted random mix of every write command
//! group (strings, bitmaps, keys, sets, hashes, lists, sorted sets), of
//! transactions (several commands that must enter the log as one entry)
//! and of Lua scripts that read the clock and draw at random.
//!
//! Owns only the *choice* of operations, drawn from a [`SimRng`]: the
//! replication world executes them through the real command table, write
//! batches and script runner, and the process test
//! (`crates/cli/tests/datamodel_pitr.rs`) sends the same operations to a
//! real cluster. Key and member spaces are small on purpose: keys of one
//! type are often hit by commands of another (`WRONGTYPE` paths), members
//! collide, collections empty and disappear.
//!
//! Must never: execute anything, read a clock or use any randomness but
//! the generator it is given (a seed is the whole input).

use crate::rng::SimRng;

/// One client operation of the mix.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// One write command, as words (name first).
    Command(Vec<String>),
    /// `MULTI`, these commands, `EXEC`: one log entry or none.
    Transaction(Vec<Vec<String>>),
    /// `EVAL body numkeys keys.. argv..`.
    Script {
        /// The Lua source (one of [`SCRIPTS`]).
        body: &'static str,
        /// `KEYS`.
        keys: Vec<String>,
        /// `ARGV`.
        argv: Vec<String>,
    },
}

/// The scripts of the mix: each writes something that depends on time,
/// randomness or a read, so only logging its effects replays identically.
pub const SCRIPTS: &[&str] = &[
    // The leader's clock becomes a value.
    "local t = redis.call('TIME') redis.call('SET', KEYS[1], t[1] .. '.' .. t[2]) return t[1]",
    // A random member moves to a list (SRANDMEMBER, then a push).
    "local m = redis.call('SRANDMEMBER', KEYS[1]) if m then redis.call('RPUSH', KEYS[2], m) end return m",
    // SPOP inside a script, into a hash.
    "local m = redis.call('SPOP', KEYS[1]) if m then redis.call('HSET', KEYS[2], m, ARGV[1]) end return m",
    // math.random (seeded per run on the leader) into a sorted set.
    "redis.call('ZADD', KEYS[1], math.random(1, 1000), ARGV[1]) return redis.call('ZCARD', KEYS[1])",
    // A WRONGTYPE caught by pcall, then more writes: all of it is one entry.
    "local r = redis.pcall('INCR', KEYS[1]) redis.call('HINCRBY', KEYS[2], 'n', 1) \
     redis.call('LPUSH', KEYS[2] .. ':log', type(r) == 'table' and 'err' or tostring(r)) return 1",
    // A script that writes, then fails: every write is undone, nothing logged.
    "redis.call('SET', KEYS[1], ARGV[1]) redis.call('DEL', KEYS[2]) error('deliberate failure')",
    // Several groups at once.
    "redis.call('SADD', KEYS[1], ARGV[1]) redis.call('ZINCRBY', KEYS[2], 2.5, ARGV[1]) \
     redis.call('SETRANGE', KEYS[1] .. ':s', 3, ARGV[1]) return redis.call('SCARD', KEYS[1])",
];

/// Number of keys in each type's pool.
const POOL: u64 = 3;
/// Chance that a command takes a key of any type instead of its own.
const CROSS_TYPE_CHANCE: f64 = 0.12;

/// Key prefixes by type: strings, counters, bitmaps, sets, hashes, lists,
/// sorted sets.
const PREFIXES: &[&str] = &["s", "n", "b", "t", "h", "l", "z"];

/// Draws one operation; absolute times (`PEXPIREAT`, `GETEX PXAT`) are
/// drawn up to 3 s after `now_ms`.
pub fn random_op(r: &mut SimRng, now_ms: u64) -> Op {
    match r.below(100) {
        0..=5 => Op::Transaction((0..r.range(2, 5)).map(|_| random_command(r, now_ms)).collect()),
        6..=10 => random_script(r),
        _ => Op::Command(random_command(r, now_ms)),
    }
}

fn random_script(r: &mut SimRng) -> Op {
    let i = r.below(SCRIPTS.len() as u64) as usize;
    let keys = match i {
        0 => vec![key(r, "s")],
        1 => vec![key(r, "t"), key(r, "l")],
        2 => vec![key(r, "t"), key(r, "h")],
        3 => vec![key(r, "z")],
        4 => vec![key(r, "n"), key(r, "h")],
        5 => vec![key(r, "s"), key(r, "t")],
        _ => vec![key(r, "t"), key(r, "z")],
    };
    Op::Script { body: SCRIPTS[i], keys, argv: vec![member(r)] }
}

/// A key of type `prefix`, or now and then of any type.
fn key(r: &mut SimRng, prefix: &str) -> String {
    let prefix = if r.chance(CROSS_TYPE_CHANCE) { *r.pick(PREFIXES) } else { prefix };
    format!("{prefix}{}", r.below(POOL))
}

fn member(r: &mut SimRng) -> String {
    format!("m{}", r.below(8))
}

fn int(r: &mut SimRng, lo: i64, hi: i64) -> String {
    (lo + r.below((hi - lo + 1) as u64) as i64).to_string()
}

fn score(r: &mut SimRng) -> String {
    match r.below(20) {
        0 => "inf".into(),
        1 => "-inf".into(),
        2 => "1e300".into(),
        3 => format!("{}.5", r.below(10)),
        4 => "-0".into(),
        _ => int(r, -5, 20),
    }
}

fn w(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// Draws one write command, as words (see [`random_op`] for `now_ms`).
pub fn random_command(r: &mut SimRng, now_ms: u64) -> Vec<String> {
    let mut c: Vec<String> = match r.below(100) {
        0..=14 => string_command(r, now_ms),
        15..=21 => bitmap_command(r),
        22..=31 => key_command(r, now_ms),
        32..=44 => set_command(r),
        45..=58 => hash_command(r),
        59..=77 => list_command(r),
        _ => zset_command(r),
    };
    c[0] = c[0].to_ascii_lowercase();
    c
}

fn string_command(r: &mut SimRng, now_ms: u64) -> Vec<String> {
    let k = key(r, "s");
    let n = key(r, "n");
    let v = format!("v{}", r.below(100));
    match r.below(20) {
        0 | 1 => w(&["SET", &k, &v]),
        2 => w(&["SET", &k, &v, "PX", &int(r, 1, 400)]),
        3 => w(&["SET", &k, &v, "KEEPTTL", "GET"]),
        4 => w(&["SETEX", &k, &int(r, 1, 2), &v]),
        5 => w(&["PSETEX", &k, &int(r, 1, 500), &v]),
        6 => w(&["APPEND", &k, &v]),
        7 => w(&["INCR", &n]),
        8 => w(&["INCRBY", &n, &int(r, -100, 100)]),
        9 => w(&["DECR", &n]),
        10 => w(&["INCRBYFLOAT", &n, &format!("{}.{}", int(r, -3, 3), r.below(100))]),
        11 => w(&["SETRANGE", &k, &int(r, 0, 12), &v]),
        12 => match r.below(4) {
            0 => w(&["GETEX", &k, "PERSIST"]),
            1 => w(&["GETEX", &k, "PX", &int(r, 1, 400)]),
            2 => w(&["GETEX", &k, "EX", "1"]),
            _ => w(&["GETEX", &k, "PXAT", &(now_ms + r.range(0, 3000)).to_string()]),
        },
        13 => w(&["GETSET", &k, &v]),
        14 => w(&["GETDEL", &k]),
        15 => w(&["SETNX", &k, &v]),
        16 => {
            let k2 = key(r, "s");
            w(&["MSET", &k, &v, &k2, "x"])
        }
        17 => {
            let k2 = key(r, "s");
            w(&["MSETNX", &k, &v, &k2, "y"])
        }
        18 => w(&["SET", &n, &int(r, -50, 50)]),
        _ => w(&["SET", &k, &v, "NX", "EX", "1"]),
    }
}

fn bitmap_command(r: &mut SimRng) -> Vec<String> {
    let k = key(r, "b");
    match r.below(6) {
        0 | 1 => w(&["SETBIT", &k, &int(r, 0, 80), &int(r, 0, 1)]),
        2 => {
            let op = *r.pick(&["AND", "OR", "XOR"]);
            let (a, b) = (key(r, "b"), key(r, "b"));
            w(&["BITOP", op, &k, &a, &b])
        }
        3 => {
            let a = key(r, "b");
            w(&["BITOP", "NOT", &k, &a])
        }
        4 => {
            let ty = *r.pick(&["u8", "i5", "u4", "i16"]);
            let overflow = *r.pick(&["WRAP", "SAT", "FAIL"]);
            w(&["BITFIELD", &k, "OVERFLOW", overflow, "INCRBY", ty, &format!("#{}", r.below(4)), &int(r, -200, 200)])
        }
        _ => w(&["BITFIELD", &k, "SET", "u8", &int(r, 0, 40), &int(r, 0, 255), "GET", "u4", "0"]),
    }
}

fn key_command(r: &mut SimRng, now_ms: u64) -> Vec<String> {
    let prefix = *r.pick(PREFIXES);
    let k = key(r, prefix);
    let k2 = key(r, prefix);
    match r.below(14) {
        0 | 1 => w(&["DEL", &k]),
        2 => w(&["UNLINK", &k, &k2]),
        3 => w(&["RENAME", &k, &k2]),
        4 => w(&["RENAMENX", &k, &k2]),
        5 => w(&["COPY", &k, &k2]),
        6 => w(&["COPY", &k, &k2, "REPLACE"]),
        7 | 8 => w(&["PEXPIRE", &k, &int(r, 1, 500)]),
        9 => w(&["EXPIRE", &k, "1"]),
        10 => w(&["PEXPIREAT", &k, &(now_ms + r.range(0, 3000)).to_string()]),
        11 => w(&["PERSIST", &k]),
        12 => {
            let l = key(r, "l");
            let dest = key(r, "l");
            w(&["SORT", &l, "ALPHA", "STORE", &dest])
        }
        _ => {
            if r.chance(0.1) {
                w(&["FLUSHALL"])
            } else {
                w(&["DEL", &k, &k2])
            }
        }
    }
}

fn set_command(r: &mut SimRng) -> Vec<String> {
    let k = key(r, "t");
    let (a, b) = (key(r, "t"), key(r, "t"));
    match r.below(12) {
        0..=3 => {
            let (m1, m2, m3) = (member(r), member(r), member(r));
            w(&["SADD", &k, &m1, &m2, &m3])
        }
        4 => w(&["SREM", &k, &member(r)]),
        5 => w(&["SPOP", &k]),
        6 => w(&["SPOP", &k, &int(r, 0, 3)]),
        7 => w(&["SMOVE", &a, &b, &member(r)]),
        8 => w(&["SINTERSTORE", &k, &a, &b]),
        9 => w(&["SUNIONSTORE", &k, &a, &b]),
        10 => w(&["SDIFFSTORE", &k, &a, &b]),
        _ => w(&["SREM", &k, &member(r), &member(r)]),
    }
}

fn hash_command(r: &mut SimRng) -> Vec<String> {
    let k = key(r, "h");
    let f = format!("f{}", r.below(5));
    let v = format!("v{}", r.below(50));
    match r.below(10) {
        0..=2 => {
            let f2 = format!("f{}", r.below(5));
            w(&["HSET", &k, &f, &v, &f2, "x"])
        }
        3 => w(&["HSETNX", &k, &f, &v]),
        4 => w(&["HMSET", &k, &f, &v]),
        5 => w(&["HDEL", &k, &f]),
        6 => {
            let f2 = format!("f{}", r.below(5));
            w(&["HDEL", &k, &f, &f2])
        }
        7 => w(&["HINCRBY", &k, &format!("c{}", r.below(2)), &int(r, -10, 10)]),
        8 => w(&["HINCRBYFLOAT", &k, &format!("c{}", r.below(2)), &format!("{}.25", int(r, -3, 3))]),
        // A field holding a non-number makes HINCRBY answer an error.
        _ => w(&["HINCRBY", &k, &f, "1"]),
    }
}

fn list_command(r: &mut SimRng) -> Vec<String> {
    let k = key(r, "l");
    let v = format!("e{}", r.below(6));
    let side = |r: &mut SimRng| *r.pick(&["LEFT", "RIGHT"]);
    match r.below(20) {
        0..=2 => {
            let v2 = format!("e{}", r.below(6));
            w(&["LPUSH", &k, &v, &v2])
        }
        3..=5 => w(&["RPUSH", &k, &v]),
        6 => w(&["LPUSHX", &k, &v]),
        7 => w(&["RPUSHX", &k, &v]),
        8 => w(&["LPOP", &k]),
        9 => w(&["RPOP", &k, &int(r, 1, 3)]),
        10 => {
            let pivot = format!("e{}", r.below(6));
            let where_ = *r.pick(&["BEFORE", "AFTER"]);
            w(&["LINSERT", &k, where_, &pivot, &v])
        }
        11 => w(&["LSET", &k, &int(r, -3, 3), &v]),
        12 => w(&["LREM", &k, &int(r, -2, 2), &v]),
        13 => w(&["LTRIM", &k, &int(r, -4, 2), &int(r, -3, 5)]),
        14 | 15 => {
            let dst = key(r, "l");
            let (from, to) = (side(r), side(r));
            w(&["LMOVE", &k, &dst, from, to])
        }
        16 => {
            let dst = key(r, "l");
            w(&["RPOPLPUSH", &k, &dst])
        }
        17 => {
            let k2 = key(r, "l");
            let from = side(r);
            w(&["LMPOP", "2", &k, &k2, from, "COUNT", &int(r, 1, 3)])
        }
        18 => {
            // A move within one list (rotation).
            w(&["LMOVE", &k, &k, "RIGHT", "LEFT"])
        }
        _ => w(&["RPUSH", &k, &v, "e9", &v]),
    }
}

fn zset_command(r: &mut SimRng) -> Vec<String> {
    let k = key(r, "z");
    let m = member(r);
    let (a, b) = (key(r, "z"), key(r, "z"));
    match r.below(16) {
        0..=2 => {
            let (s1, s2, m2) = (score(r), score(r), member(r));
            w(&["ZADD", &k, &s1, &m, &s2, &m2])
        }
        3 => {
            const OPTIONS: &[&[&str]] = &[&["NX"], &["XX"], &["GT", "CH"], &["LT"], &["XX", "GT", "CH"], &["CH"]];
            let opts = r.pick(OPTIONS);
            let mut c = w(&["ZADD", &k]);
            c.extend(opts.iter().map(|s| s.to_string()));
            c.push(score(r));
            c.push(m);
            c
        }
        4 => w(&["ZADD", &k, "INCR", &score(r), &m]),
        5 => w(&["ZINCRBY", &k, &score(r), &m]),
        6 => w(&["ZREM", &k, &m, &member(r)]),
        7 => w(&["ZPOPMIN", &k]),
        8 => w(&["ZPOPMAX", &k, &int(r, 1, 3)]),
        9 => w(&["ZUNIONSTORE", &k, "2", &a, &b, "WEIGHTS", "1", &int(r, -2, 3)]),
        10 => {
            let agg = *r.pick(&["SUM", "MIN", "MAX"]);
            w(&["ZINTERSTORE", &k, "2", &a, &b, "AGGREGATE", agg])
        }
        11 => w(&["ZDIFFSTORE", &k, "2", &a, &b]),
        12 => match r.below(3) {
            0 => w(&["ZRANGESTORE", &k, &a, "0", &int(r, -2, 3)]),
            1 => w(&["ZRANGESTORE", &k, &a, "(1", "+inf", "BYSCORE", "LIMIT", "0", "3"]),
            _ => w(&["ZRANGESTORE", &k, &a, "[m2", "+", "BYLEX", "REV"]),
        },
        13 => w(&["ZREMRANGEBYSCORE", &k, "-inf", &int(r, -2, 5)]),
        14 => w(&["ZREMRANGEBYRANK", &k, "0", &int(r, -1, 1)]),
        _ => w(&["ZMPOP", "2", &a, &b, *r.pick(&["MIN", "MAX"]), "COUNT", "2"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every generated command exists, is a write, and has a valid arity:
    /// a typo in the mix would otherwise only show as noop writes.
    #[test]
    fn every_generated_command_is_a_known_write_of_valid_arity() {
        let mut r = SimRng::new(7);
        for _ in 0..20_000 {
            let commands = match random_op(&mut r, 1_700_000_000_000) {
                Op::Command(c) => vec![c],
                Op::Transaction(cs) => cs,
                Op::Script { .. } => continue,
            };
            for c in commands {
                let spec = tandem_core::command::lookup(c[0].as_bytes()).unwrap_or_else(|| panic!("{c:?}"));
                assert!(spec.is_write(), "{c:?}");
                assert!(spec.arity_ok(c.len()), "{c:?}");
            }
        }
    }

    /// Run on a store, the mix hits each group's error paths (WRONGTYPE,
    /// out of range, no such key) but never a syntax error: an option the
    /// server does not parse would silently shrink the workload.
    #[test]
    fn the_mix_parses_everywhere_and_exercises_wrongtype() {
        use bytes::Bytes;
        use tandem_core::command::Handler;
        use tandem_core::resp::Frame;
        let mut store = tandem_core::store::Store::new(1);
        let mut r = SimRng::new(11);
        let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
        let now = 1_700_000_000_000;
        for i in 0..20_000u64 {
            let Op::Command(c) = random_op(&mut r, now + i) else { continue };
            let args: Vec<Bytes> = c.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
            let Handler::Write(f) = tandem_core::command::lookup(&args[0]).unwrap().handler else { panic!() };
            let mut batch = tandem_core::write::Batch::new(tandem_core::write::ENTRY_PAYLOAD_BYTES_MAX);
            if let Frame::Error(e) = tandem_core::write::execute(f, &mut store, now + i, &args, &mut batch) {
                assert!(!e.contains("syntax") && !e.contains("unknown"), "{c:?}: {e}");
                *errors.entry(format!("{} {}", c[0], e.split(' ').next().unwrap_or(""))).or_default() += 1;
            }
        }
        println!("{errors:#?}");
        assert!(errors.keys().filter(|k| k.ends_with("WRONGTYPE")).count() > 20, "{errors:?}");
    }
}
