//! Keyspaces: named groups of keys, selected by key prefix, each with one
//! replication mode and that mode's policy.
//!
//! Owns the definition of a keyspace ([`KeyspaceDef`]), the rules a set of
//! definitions must follow (names, prefixes, limits: [`Keyspaces::new`]),
//! and routing: which keyspace a key belongs to (the longest matching
//! prefix, else [`DEFAULT_KEYSPACE`]) and whether a command's keys all
//! belong to one keyspace ([`Keyspaces::route`]).
//!
//! Definitions live in the control plane's cluster map (or, for a node
//! without a control plane, in its config file); this module only says what
//! they mean. It must never do I/O or hold per-key state: a keyspace's data
//! lives in the store and its log like every other key.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::repl::{AckLevel, AckPolicy, Durability};

/// The keyspace of every key that matches no prefix: single-leader, with
/// the node's configured ack policy (Tandem's behaviour before keyspaces).
pub const DEFAULT_KEYSPACE: &str = "default";
/// Most keyspaces a cluster may define (bounds the map and routing work).
pub const KEYSPACES_MAX: usize = 256;
/// Longest keyspace name.
pub const KEYSPACE_NAME_BYTES_MAX: usize = 64;
/// Longest key prefix that selects a keyspace.
pub const KEYSPACE_PREFIX_BYTES_MAX: usize = 256;

/// How a keyspace is replicated, with the mode's policy.
///
/// Variants are only ever appended (the cluster map stores this enum by
/// variant index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// One leader appends to the log and streams it to followers.
    SingleLeader(SingleLeaderPolicy),
    /// Every node accepts writes and streams its own to every other node;
    /// concurrent writes are resolved by the keyspace's conflict policy.
    MultiLeader(MultiLeaderPolicy),
    /// No leader: each key lives on N nodes of a consistent-hash ring; a
    /// write waits for W of them, a read asks R.
    Leaderless(LeaderlessPolicy),
}

impl Mode {
    /// The mode's name as users type it (`--mode single-leader`).
    pub fn name(&self) -> &'static str {
        match self {
            Mode::SingleLeader(_) => "single-leader",
            Mode::MultiLeader(_) => "multi-leader",
            Mode::Leaderless(_) => "leaderless",
        }
    }

    /// True for the mode whose data lives in the node's shared log and
    /// store; the other modes each run their own replica per keyspace.
    pub fn is_single_leader(&self) -> bool {
        matches!(self, Mode::SingleLeader(_))
    }
}

/// What happens when two writes to one key are concurrent (neither saw the
/// other): shared by multi-leader and leaderless keyspaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConflictPolicy {
    /// Last writer wins: the highest hybrid-logical-clock timestamp, node id
    /// breaking ties; every discarded value goes to the conflict feed.
    #[default]
    Lww,
    /// Concurrent values are all kept as siblings until a client resolves
    /// them.
    Siblings,
    /// Per-type merges (counters, observed-remove sets and maps).
    Crdt,
}

impl ConflictPolicy {
    /// The policy's name as users type it (`--conflict lww`).
    pub fn name(self) -> &'static str {
        match self {
            ConflictPolicy::Lww => "lww",
            ConflictPolicy::Siblings => "siblings",
            ConflictPolicy::Crdt => "crdt",
        }
    }
}

impl fmt::Display for ConflictPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ConflictPolicy {
    type Err = KeyspaceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lww" => Ok(ConflictPolicy::Lww),
            "siblings" => Ok(ConflictPolicy::Siblings),
            "crdt" => Ok(ConflictPolicy::Crdt),
            other => Err(KeyspaceError::UnknownConflictPolicy(other.to_string())),
        }
    }
}

/// The policy of a multi-leader keyspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MultiLeaderPolicy {
    /// How concurrent writes to one key are resolved.
    pub conflict: ConflictPolicy,
}

/// Most replicas of a key in a leaderless keyspace.
pub const LEADERLESS_N_MAX: u8 = 16;

/// The policy of a leaderless keyspace: `N` replicas per key, a write waits
/// for `W` of them, a read for `R`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderlessPolicy {
    /// Replicas of each key (its preference list's length).
    pub n: u8,
    /// Replicas that must make a write durable before it is acknowledged.
    pub w: u8,
    /// Replicas a read waits for.
    pub r: u8,
    /// Sloppy quorum: while a preference-list replica is down, its writes go
    /// to the next healthy node with a hint and are handed back later.
    pub sloppy: bool,
    /// How concurrent versions of a key are resolved.
    pub conflict: ConflictPolicy,
}

impl LeaderlessPolicy {
    /// Checks `1 <= W, R <= N <= LEADERLESS_N_MAX` (the member count is
    /// checked where the cluster map is known).
    pub fn validate(&self) -> Result<(), KeyspaceError> {
        let ok = self.n >= 1
            && self.n <= LEADERLESS_N_MAX
            && (1..=self.n).contains(&self.w)
            && (1..=self.n).contains(&self.r);
        if ok {
            Ok(())
        } else {
            Err(KeyspaceError::InvalidQuorum { n: self.n, w: self.w, r: self.r })
        }
    }

    /// True when a read need not overlap the latest acknowledged write
    /// (`W + R <= N`): reads may be stale.
    pub fn reads_may_be_stale(&self) -> bool {
        u16::from(self.w) + u16::from(self.r) <= u16::from(self.n)
    }
}

/// Everything a keyspace's mode may be given when it is created (the
/// fields of `tandem keyspace create`, `POST /keyspaces` and a
/// `[[keyspace]]` table); each mode takes its own and refuses the others'.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeOptions {
    /// Single-leader: ack policy.
    pub ack: Option<AckPolicy>,
    /// Single-leader: ack level.
    pub ack_level: Option<AckLevel>,
    /// Multi-leader and leaderless: conflict policy (default `lww`).
    pub conflict: Option<ConflictPolicy>,
    /// Leaderless: replicas per key (default 3).
    pub n: Option<u8>,
    /// Leaderless: write quorum (default a majority of N).
    pub w: Option<u8>,
    /// Leaderless: read quorum (default a majority of N).
    pub r: Option<u8>,
    /// Leaderless: sloppy quorum with hinted handoff.
    pub sloppy: bool,
}

/// The policy of a single-leader keyspace. `None` fields fall back to the
/// node's configuration (`ack`, `ack_level`, `ack_timeout_ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingleLeaderPolicy {
    /// When the leader acknowledges a write to this keyspace.
    pub ack: Option<AckPolicy>,
    /// What a follower must have done for its ack to count.
    pub ack_level: Option<AckLevel>,
}

impl SingleLeaderPolicy {
    /// This keyspace's durability, filling what it leaves open from `node`.
    pub fn durability(&self, node: &Durability) -> Durability {
        Durability {
            policy: self.ack.clone().unwrap_or_else(|| node.policy.clone()),
            level: self.ack_level.unwrap_or(node.level),
            timeout_ms: node.timeout_ms,
        }
    }
}

/// One keyspace: a name, the key prefix that selects it, and its mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyspaceDef {
    /// Unique name (`[A-Za-z0-9_.-]`, at most [`KEYSPACE_NAME_BYTES_MAX`]).
    pub name: String,
    /// Keys starting with these bytes belong here (unless a longer prefix
    /// of another keyspace matches too).
    pub prefix: Bytes,
    /// Replication mode and policy.
    pub mode: Mode,
}

/// Why a keyspace definition (or a set of them) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyspaceError {
    /// The name is empty, too long, reserved or has a character outside
    /// `[A-Za-z0-9_.-]`.
    #[error("invalid keyspace name {0:?}: use 1 to {KEYSPACE_NAME_BYTES_MAX} characters of A-Z a-z 0-9 _ . - (and not 'default')")]
    InvalidName(String),
    /// The prefix is empty or too long.
    #[error("keyspace {name:?}: the prefix must be 1 to {KEYSPACE_PREFIX_BYTES_MAX} bytes (got {len})")]
    InvalidPrefix {
        /// The keyspace.
        name: String,
        /// The prefix's length.
        len: usize,
    },
    /// Two keyspaces share a name.
    #[error("keyspace {0:?} already exists")]
    DuplicateName(String),
    /// Two keyspaces share a prefix (routing would be ambiguous).
    #[error("keyspace {existing:?} already has the prefix {prefix:?}")]
    DuplicatePrefix {
        /// The keyspace that has it.
        existing: String,
        /// The prefix.
        prefix: String,
    },
    /// More than [`KEYSPACES_MAX`] keyspaces.
    #[error("a cluster holds at most {KEYSPACES_MAX} keyspaces")]
    TooMany,
    /// No keyspace of that name.
    #[error("no keyspace named {0:?}")]
    Unknown(String),
    /// An unknown `--mode`.
    #[error("unknown mode {0:?} (this version knows: single-leader, multi-leader, leaderless)")]
    UnknownMode(String),
    /// An unknown `--conflict`.
    #[error("unknown conflict policy {0:?} (lww, siblings or crdt)")]
    UnknownConflictPolicy(String),
    /// N, W, R out of range.
    #[error("invalid quorum N={n} W={w} R={r}: need 1 <= W <= N, 1 <= R <= N and N <= {LEADERLESS_N_MAX}")]
    InvalidQuorum {
        /// Replicas per key.
        n: u8,
        /// Write quorum.
        w: u8,
        /// Read quorum.
        r: u8,
    },
    /// An option that the chosen mode does not take.
    #[error("--{option} does not apply to a {mode} keyspace")]
    OptionNotForMode {
        /// The option's name.
        option: &'static str,
        /// The mode.
        mode: &'static str,
    },
}

/// A command whose keys belong to more than one keyspace; refused before it
/// runs, like Redis Cluster's `CROSSSLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossKeyspace {
    /// A key and its keyspace.
    pub first: (Bytes, String),
    /// A key of another keyspace.
    pub other: (Bytes, String),
}

impl CrossKeyspace {
    /// The RESP error text. The `CROSSSLOT` code is Redis Cluster's, so
    /// client libraries map it to the error they already have for it.
    pub fn to_resp(&self) -> String {
        format!(
            "CROSSSLOT Keys in request don't belong to the same keyspace: {:?} is in '{}', {:?} is in '{}'",
            String::from_utf8_lossy(&self.first.0),
            self.first.1,
            String::from_utf8_lossy(&self.other.0),
            self.other.1
        )
    }
}

impl fmt::Display for CrossKeyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_resp())
    }
}

/// Checks a keyspace name.
pub fn validate_name(name: &str) -> Result<(), KeyspaceError> {
    let ok = !name.is_empty()
        && name.len() <= KEYSPACE_NAME_BYTES_MAX
        && name != DEFAULT_KEYSPACE
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyspaceError::InvalidName(name.to_string()))
    }
}

/// Parses a mode name (`single-leader`, `multi-leader`, `leaderless`) with
/// its policy, refusing options that belong to another mode.
pub fn parse_mode(mode: &str, o: ModeOptions) -> Result<Mode, KeyspaceError> {
    let refuse = |option: &'static str, mode: &'static str| Err(KeyspaceError::OptionNotForMode { option, mode });
    match mode.to_ascii_lowercase().as_str() {
        "single-leader" | "single_leader" => {
            let name = "single-leader";
            if o.conflict.is_some() {
                return refuse("conflict", name);
            }
            if o.n.is_some() || o.w.is_some() || o.r.is_some() || o.sloppy {
                return refuse("n/--w/--r/--sloppy", name);
            }
            Ok(Mode::SingleLeader(SingleLeaderPolicy { ack: o.ack, ack_level: o.ack_level }))
        }
        "multi-leader" | "multi_leader" => {
            let name = "multi-leader";
            if o.ack.is_some() || o.ack_level.is_some() {
                return refuse("ack/--ack-level", name);
            }
            if o.n.is_some() || o.w.is_some() || o.r.is_some() || o.sloppy {
                return refuse("n/--w/--r/--sloppy", name);
            }
            Ok(Mode::MultiLeader(MultiLeaderPolicy { conflict: o.conflict.unwrap_or_default() }))
        }
        "leaderless" => {
            if o.ack.is_some() || o.ack_level.is_some() {
                return refuse("ack/--ack-level", "leaderless");
            }
            let n = o.n.unwrap_or(3);
            let majority = n / 2 + 1;
            let policy = LeaderlessPolicy {
                n,
                w: o.w.unwrap_or(majority),
                r: o.r.unwrap_or(majority),
                sloppy: o.sloppy,
                conflict: o.conflict.unwrap_or_default(),
            };
            policy.validate()?;
            Ok(Mode::Leaderless(policy))
        }
        other => Err(KeyspaceError::UnknownMode(other.to_string())),
    }
}

/// A validated set of keyspaces and the router over them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keyspaces {
    /// Sorted by prefix length, longest first, so the first match is the
    /// longest prefix.
    by_prefix: Vec<KeyspaceDef>,
}

impl Keyspaces {
    /// Validates `defs` (names, prefixes, uniqueness, count).
    pub fn new(defs: impl IntoIterator<Item = KeyspaceDef>) -> Result<Keyspaces, KeyspaceError> {
        let mut out = Keyspaces::default();
        for def in defs {
            out.insert(def)?;
        }
        Ok(out)
    }

    /// Adds one keyspace after checking it against the others.
    pub fn insert(&mut self, def: KeyspaceDef) -> Result<(), KeyspaceError> {
        validate_name(&def.name)?;
        if def.prefix.is_empty() || def.prefix.len() > KEYSPACE_PREFIX_BYTES_MAX {
            return Err(KeyspaceError::InvalidPrefix { name: def.name.clone(), len: def.prefix.len() });
        }
        if self.by_prefix.iter().any(|d| d.name == def.name) {
            return Err(KeyspaceError::DuplicateName(def.name));
        }
        if let Some(d) = self.by_prefix.iter().find(|d| d.prefix == def.prefix) {
            return Err(KeyspaceError::DuplicatePrefix {
                existing: d.name.clone(),
                prefix: String::from_utf8_lossy(&def.prefix).into_owned(),
            });
        }
        if self.by_prefix.len() >= KEYSPACES_MAX {
            return Err(KeyspaceError::TooMany);
        }
        let at = self
            .by_prefix
            .iter()
            .position(|d| (d.prefix.len(), &d.name) < (def.prefix.len(), &def.name))
            .unwrap_or(self.by_prefix.len());
        self.by_prefix.insert(at, def);
        Ok(())
    }

    /// Removes the keyspace `name`.
    pub fn remove(&mut self, name: &str) -> Result<KeyspaceDef, KeyspaceError> {
        let at =
            self.by_prefix.iter().position(|d| d.name == name).ok_or_else(|| KeyspaceError::Unknown(name.into()))?;
        Ok(self.by_prefix.remove(at))
    }

    /// True when only the default keyspace exists (the routing fast path).
    pub fn is_empty(&self) -> bool {
        self.by_prefix.is_empty()
    }

    /// The defined keyspaces, sorted by name.
    pub fn defs(&self) -> Vec<&KeyspaceDef> {
        let mut defs: Vec<&KeyspaceDef> = self.by_prefix.iter().collect();
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        defs
    }

    /// The keyspace named `name`.
    pub fn get(&self, name: &str) -> Option<&KeyspaceDef> {
        self.by_prefix.iter().find(|d| d.name == name)
    }

    /// The keyspace `key` belongs to; `None` is the default keyspace.
    pub fn of_key(&self, key: &[u8]) -> Option<&KeyspaceDef> {
        self.by_prefix.iter().find(|d| key.starts_with(&d.prefix))
    }

    /// The one keyspace all `keys` belong to (`None`: the default keyspace,
    /// also for a command without keys), or the first pair that differs.
    pub fn route<'k>(&self, keys: impl IntoIterator<Item = &'k Bytes>) -> Result<Option<&KeyspaceDef>, CrossKeyspace> {
        let mut first: Option<(&Bytes, Option<&KeyspaceDef>)> = None;
        for key in keys {
            let ks = self.of_key(key);
            match first {
                None => first = Some((key, ks)),
                Some((k0, ks0)) if ks0.map(|d| &d.name) != ks.map(|d| &d.name) => {
                    let name = |d: Option<&KeyspaceDef>| d.map_or(DEFAULT_KEYSPACE.to_string(), |d| d.name.clone());
                    return Err(CrossKeyspace { first: (k0.clone(), name(ks0)), other: (key.clone(), name(ks)) });
                }
                Some(_) => {}
            }
        }
        Ok(first.and_then(|(_, ks)| ks))
    }

    /// True if `key` belongs to the keyspace `name` (what `keyspace drop`
    /// counts before it agrees to drop a keyspace).
    pub fn key_in(&self, key: &[u8], name: &str) -> bool {
        self.of_key(key).is_some_and(|d| d.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, prefix: &str) -> KeyspaceDef {
        KeyspaceDef {
            name: name.into(),
            prefix: Bytes::copy_from_slice(prefix.as_bytes()),
            mode: Mode::SingleLeader(SingleLeaderPolicy::default()),
        }
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn keyspace_of_a_key_is_the_longest_matching_prefix_else_default() {
        let ks = Keyspaces::new([def("carts", "cart:"), def("vip_carts", "cart:vip:"), def("users", "u:")]).unwrap();
        assert_eq!(ks.of_key(b"cart:1").unwrap().name, "carts");
        assert_eq!(ks.of_key(b"cart:vip:1").unwrap().name, "vip_carts");
        assert_eq!(ks.of_key(b"u:7").unwrap().name, "users");
        assert!(ks.of_key(b"other").is_none());
        assert!(ks.of_key(b"cart").is_none());
    }

    #[test]
    fn a_command_spanning_two_keyspaces_is_refused_with_both_names() {
        let ks = Keyspaces::new([def("carts", "cart:")]).unwrap();
        assert_eq!(ks.route([&b("cart:1"), &b("cart:2")]).unwrap().unwrap().name, "carts");
        assert!(ks.route([&b("a"), &b("b")]).unwrap().is_none());
        assert!(ks.route(std::iter::empty()).unwrap().is_none());
        let err = ks.route([&b("a"), &b("cart:1")]).unwrap_err();
        let text = err.to_resp();
        assert!(text.starts_with("CROSSSLOT "), "{text}");
        assert!(text.contains("'default'") && text.contains("'carts'"), "{text}");
    }

    #[test]
    fn keyspace_definitions_are_validated() {
        let mut ks = Keyspaces::new([def("carts", "cart:")]).unwrap();
        assert_eq!(ks.insert(def("carts", "c2:")), Err(KeyspaceError::DuplicateName("carts".into())));
        assert!(matches!(ks.insert(def("c2", "cart:")), Err(KeyspaceError::DuplicatePrefix { .. })));
        assert!(matches!(ks.insert(def("default", "d:")), Err(KeyspaceError::InvalidName(_))));
        assert!(matches!(ks.insert(def("a b", "d:")), Err(KeyspaceError::InvalidName(_))));
        assert!(matches!(ks.insert(def("", "d:")), Err(KeyspaceError::InvalidName(_))));
        assert!(matches!(ks.insert(def("empty", "")), Err(KeyspaceError::InvalidPrefix { .. })));
        let long = "p".repeat(KEYSPACE_PREFIX_BYTES_MAX + 1);
        assert!(matches!(ks.insert(def("long", &long)), Err(KeyspaceError::InvalidPrefix { .. })));
        assert_eq!(ks.remove("nope"), Err(KeyspaceError::Unknown("nope".into())));
        assert_eq!(ks.remove("carts").unwrap().name, "carts");
        assert!(ks.is_empty());
    }

    #[test]
    fn each_mode_takes_its_own_options_and_refuses_the_others() {
        let ll = |n, w, r| ModeOptions { n: Some(n), w: Some(w), r: Some(r), ..ModeOptions::default() };
        let Mode::Leaderless(p) = parse_mode("leaderless", ll(3, 2, 2)).unwrap() else { panic!() };
        assert!(!p.reads_may_be_stale());
        let Mode::Leaderless(p) = parse_mode("leaderless", ll(3, 1, 1)).unwrap() else { panic!() };
        assert!(p.reads_may_be_stale());
        let Mode::Leaderless(p) = parse_mode("leaderless", ModeOptions::default()).unwrap() else { panic!() };
        assert_eq!((p.n, p.w, p.r, p.conflict), (3, 2, 2, ConflictPolicy::Lww));
        assert!(matches!(parse_mode("leaderless", ll(3, 4, 1)), Err(KeyspaceError::InvalidQuorum { .. })));
        assert!(matches!(parse_mode("leaderless", ll(3, 0, 1)), Err(KeyspaceError::InvalidQuorum { .. })));
        let crdt = ModeOptions { conflict: Some(ConflictPolicy::Crdt), ..ModeOptions::default() };
        assert_eq!(
            parse_mode("multi-leader", crdt.clone()).unwrap(),
            Mode::MultiLeader(MultiLeaderPolicy { conflict: ConflictPolicy::Crdt })
        );
        assert!(matches!(parse_mode("single-leader", crdt), Err(KeyspaceError::OptionNotForMode { .. })));
        let ack = ModeOptions { ack: Some(AckPolicy::All), ..ModeOptions::default() };
        assert!(matches!(parse_mode("multi-leader", ack), Err(KeyspaceError::OptionNotForMode { .. })));
        assert!(matches!("most".parse::<ConflictPolicy>(), Err(KeyspaceError::UnknownConflictPolicy(_))));
    }

    #[test]
    fn at_most_keyspaces_max_keyspaces() {
        let mut ks = Keyspaces::default();
        for i in 0..KEYSPACES_MAX {
            ks.insert(def(&format!("k{i}"), &format!("p{i}:"))).unwrap();
        }
        assert_eq!(ks.insert(def("one_more", "x:")), Err(KeyspaceError::TooMany));
    }

    #[test]
    fn a_keyspace_policy_falls_back_to_the_node_configuration() {
        let node = Durability { policy: AckPolicy::Async, level: AckLevel::Flush, timeout_ms: 900 };
        let p = SingleLeaderPolicy { ack: Some(AckPolicy::Any(2)), ack_level: None };
        assert_eq!(
            p.durability(&node),
            Durability { policy: AckPolicy::Any(2), level: AckLevel::Flush, timeout_ms: 900 }
        );
        assert_eq!(SingleLeaderPolicy::default().durability(&node), node);
    }

    #[test]
    fn a_keyspace_definition_round_trips_through_postcard() {
        let d = KeyspaceDef {
            name: "carts".into(),
            prefix: b("cart:"),
            mode: Mode::SingleLeader(SingleLeaderPolicy {
                ack: Some(AckPolicy::First { k: 1, among: vec![2, 3] }),
                ack_level: Some(AckLevel::Apply),
            }),
        };
        let bytes = postcard::to_allocvec(&d).unwrap();
        assert_eq!(postcard::from_bytes::<KeyspaceDef>(&bytes).unwrap(), d);
    }
}
