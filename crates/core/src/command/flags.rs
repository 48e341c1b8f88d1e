//! Command flags as a bitset.
//!
//! Owns: the set of Redis command flags Tandem knows (`write`, `readonly`,
//! `denyoom`, ...), their bit positions and their names as `COMMAND INFO`
//! prints them. The command table spells flags as Redis names them; they
//! are parsed into bits at compile time ([`Flags::parse`] is a `const fn`),
//! so a misspelt flag is a build error, not a check that silently fails,
//! and asking whether a command has a flag is one AND instead of a string
//! search.
//!
//! Must never: hold anything but flags (arity, key positions and handlers
//! live in [`super::CommandSpec`]).

use std::fmt;

/// A set of command flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u16);

/// Every known flag with its Redis name, in the order `COMMAND INFO` lists
/// them.
const NAMES: &[(Flags, &str)] = &[
    (Flags::WRITE, "write"),
    (Flags::READONLY, "readonly"),
    (Flags::DENYOOM, "denyoom"),
    (Flags::ADMIN, "admin"),
    (Flags::PUBSUB, "pubsub"),
    (Flags::NOSCRIPT, "noscript"),
    (Flags::BLOCKING, "blocking"),
    (Flags::LOADING, "loading"),
    (Flags::STALE, "stale"),
    (Flags::SKIP_MONITOR, "skip_monitor"),
    (Flags::FAST, "fast"),
    (Flags::NO_AUTH, "no_auth"),
    (Flags::MAY_REPLICATE, "may_replicate"),
    (Flags::NO_MANDATORY_KEYS, "no_mandatory_keys"),
];

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// May change the keyspace.
    pub const WRITE: Flags = Flags(1 << 0);
    /// Only reads the keyspace.
    pub const READONLY: Flags = Flags(1 << 1);
    /// May grow memory: refused with `-OOM` over `maxmemory`.
    pub const DENYOOM: Flags = Flags(1 << 2);
    /// An administrative command.
    pub const ADMIN: Flags = Flags(1 << 3);
    /// A pub/sub command.
    pub const PUBSUB: Flags = Flags(1 << 4);
    /// Not allowed inside a Lua script.
    pub const NOSCRIPT: Flags = Flags(1 << 5);
    /// May block the connection (BLPOP, ...).
    pub const BLOCKING: Flags = Flags(1 << 6);
    /// Allowed while the node is loading its data.
    pub const LOADING: Flags = Flags(1 << 7);
    /// Allowed on a replica that lost its leader.
    pub const STALE: Flags = Flags(1 << 8);
    /// Not shown to `MONITOR`.
    pub const SKIP_MONITOR: Flags = Flags(1 << 9);
    /// Constant or logarithmic time.
    pub const FAST: Flags = Flags(1 << 10);
    /// Allowed before the connection authenticated.
    pub const NO_AUTH: Flags = Flags(1 << 11);
    /// May replicate something even though it is not a write.
    pub const MAY_REPLICATE: Flags = Flags(1 << 12);
    /// Its key arguments are optional.
    pub const NO_MANDATORY_KEYS: Flags = Flags(1 << 13);

    /// The flags named in `names` (Redis's spelling). A `const fn` so the
    /// command table is checked when it is compiled: an unknown name panics
    /// at compile time.
    pub const fn parse(names: &[&str]) -> Flags {
        let mut bits = 0u16;
        let mut i = 0;
        while i < names.len() {
            bits |= Self::named(names[i]).0;
            i += 1;
        }
        Flags(bits)
    }

    /// The flag called `name`; panics (at compile time when used in a
    /// constant) on a name Tandem does not know.
    const fn named(name: &str) -> Flags {
        let mut i = 0;
        while i < NAMES.len() {
            if str_eq(NAMES[i].1, name) {
                return NAMES[i].0;
            }
            i += 1;
        }
        panic!("unknown command flag")
    }

    /// True if every flag of `other` is set here.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The union of both sets.
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// The Redis names of the flags set, in `COMMAND INFO` order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES.iter().filter(move |(flag, _)| self.contains(*flag)).map(|(_, name)| *name)
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_one_bit_and_one_name() {
        let mut seen = Flags::NONE;
        for (flag, name) in NAMES {
            assert_eq!(flag.0.count_ones(), 1, "{name}");
            assert!(!seen.contains(*flag), "{name} shares a bit");
            seen = seen.union(*flag);
            assert_eq!(Flags::parse(&[name]), *flag);
        }
    }

    #[test]
    fn parsed_flags_print_back_in_command_info_order() {
        let flags = Flags::parse(&["fast", "write", "denyoom"]);
        assert!(flags.contains(Flags::WRITE) && flags.contains(Flags::DENYOOM) && flags.contains(Flags::FAST));
        assert!(!flags.contains(Flags::READONLY));
        assert_eq!(flags.names().collect::<Vec<_>>(), ["write", "denyoom", "fast"]);
    }
}
