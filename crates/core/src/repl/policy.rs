//! Ack policies and ack levels: when a leader may acknowledge a write.
//!
//! Owns the vocabulary (`async`, `any k`, `first k (a,b)`, `all`; `flush`,
//! `apply`), its text form (config files, commands, `INFO`) and the check of
//! a policy against the configured members. Deciding whether a given write
//! meets its policy is the leader's job ([`super::leader`]); this file must
//! never look at replica progress.
//!
//! Whatever the policy, the leader's own durability (its fsync) is always
//! required too: `async` means "do not wait for followers", not "do not wait
//! for the disk".

use std::fmt;
use std::str::FromStr;

use super::NodeId;

/// Largest `k` and longest `first` list a policy may name: far above any
/// cluster size Tandem supports, it only bounds parsing work.
pub const POLICY_MEMBERS_MAX: usize = 64;

/// How many followers must hold a write before it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AckPolicy {
    /// No follower: only the leader's own durability.
    Async,
    /// Any `k` of the configured followers.
    Any(usize),
    /// The first `k` members of `among`, in list order, that are currently
    /// connected (PostgreSQL's `FIRST k (..)`); if fewer than `k` of them are
    /// connected the write waits.
    First {
        /// How many of the chosen members must hold the write.
        k: usize,
        /// Candidates in priority order (no duplicates).
        among: Vec<NodeId>,
    },
    /// Every configured follower, connected or not: a dead follower makes
    /// `all` writes time out.
    All,
}

/// What "a follower holds the write" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckLevel {
    /// On the follower's disk (fsynced).
    Flush,
    /// On the follower's disk and applied there (visible to reads).
    Apply,
}

/// A write's durability requirement: a policy, a level and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Durability {
    /// How many followers must hold the write.
    pub policy: AckPolicy,
    /// What holding means.
    pub level: AckLevel,
    /// How long the leader waits before it answers "timed out" (0: forever).
    pub timeout_ms: u64,
}

impl Durability {
    /// `async`, `flush`, no timeout: what a single node gives.
    pub fn local() -> Durability {
        Durability { policy: AckPolicy::Async, level: AckLevel::Flush, timeout_ms: 0 }
    }
}

/// A policy or level could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyParseError(String);

const POLICY_FORMS: &str = "expected one of: async, any <k>, first <k> (<id>,<id>,...), all";

fn policy_err(input: &str, why: &str) -> PolicyParseError {
    PolicyParseError(format!("invalid ack policy '{input}': {why}; {POLICY_FORMS}"))
}

fn parse_count(input: &str, word: &str) -> Result<usize, PolicyParseError> {
    let k: usize = word.parse().map_err(|_| policy_err(input, &format!("'{word}' is not a count")))?;
    if k > POLICY_MEMBERS_MAX {
        return Err(policy_err(input, &format!("{k} is above the limit of {POLICY_MEMBERS_MAX}")));
    }
    Ok(k)
}

impl FromStr for AckPolicy {
    type Err = PolicyParseError;

    /// Case-insensitive; spaces around words, parentheses and commas are
    /// optional: `async`, `any 1`, `first 1 (2,3)`, `FIRST 2(2, 3, 4)`, `all`.
    fn from_str(input: &str) -> Result<AckPolicy, PolicyParseError> {
        let lower = input.trim().to_ascii_lowercase();
        let (head, list) = match lower.split_once('(') {
            Some((head, rest)) => {
                let inner = rest.trim_end().strip_suffix(')').ok_or_else(|| policy_err(input, "missing ')'"))?;
                (head, Some(inner))
            }
            None => (lower.as_str(), None),
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        match (words.as_slice(), list) {
            (["async"], None) => Ok(AckPolicy::Async),
            (["all"], None) => Ok(AckPolicy::All),
            (["any", k], None) => Ok(AckPolicy::Any(parse_count(input, k)?)),
            (["first", k], Some(list)) => {
                let k = parse_count(input, k)?;
                let mut among = Vec::new();
                for part in list.split(',').map(str::trim) {
                    let id: NodeId =
                        part.parse().map_err(|_| policy_err(input, &format!("'{part}' is not a node id")))?;
                    if among.contains(&id) {
                        return Err(policy_err(input, &format!("node {id} is listed twice")));
                    }
                    if among.len() == POLICY_MEMBERS_MAX {
                        return Err(policy_err(input, &format!("more than {POLICY_MEMBERS_MAX} members")));
                    }
                    among.push(id);
                }
                Ok(AckPolicy::First { k, among })
            }
            (["first", _], None) => Err(policy_err(input, "'first' needs a member list")),
            _ => Err(policy_err(input, "unrecognised")),
        }
    }
}

impl fmt::Display for AckPolicy {
    /// The canonical text form, accepted back by `parse`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckPolicy::Async => f.write_str("async"),
            AckPolicy::Any(k) => write!(f, "any {k}"),
            AckPolicy::First { k, among } => {
                write!(f, "first {k} (")?;
                for (i, id) in among.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{id}")?;
                }
                f.write_str(")")
            }
            AckPolicy::All => f.write_str("all"),
        }
    }
}

impl AckPolicy {
    /// Checks that the policy can ever be met by these followers: `k` is not
    /// above the number of candidates and `first` names only members. A
    /// policy that fails this check makes every write time out.
    pub fn validate(&self, followers: &[NodeId]) -> Result<(), String> {
        match self {
            AckPolicy::Async | AckPolicy::All => Ok(()),
            AckPolicy::Any(k) if *k > followers.len() => {
                Err(format!("ack policy '{self}' needs {k} followers but the cluster has {}", followers.len()))
            }
            AckPolicy::Any(_) => Ok(()),
            AckPolicy::First { k, among } => {
                if let Some(id) = among.iter().find(|id| !followers.contains(id)) {
                    return Err(format!("ack policy '{self}' names node {id}, which is not a follower"));
                }
                if *k > among.len() {
                    return Err(format!("ack policy '{self}' needs {k} followers but lists {}", among.len()));
                }
                Ok(())
            }
        }
    }
}

impl FromStr for AckLevel {
    type Err = PolicyParseError;

    /// `flush` or `apply`, case-insensitive.
    fn from_str(input: &str) -> Result<AckLevel, PolicyParseError> {
        match input.trim().to_ascii_lowercase().as_str() {
            "flush" => Ok(AckLevel::Flush),
            "apply" => Ok(AckLevel::Apply),
            _ => Err(PolicyParseError(format!("invalid ack level '{input}': expected flush or apply"))),
        }
    }
}

impl fmt::Display for AckLevel {
    /// `flush` or `apply`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckLevel::Flush => "flush",
            AckLevel::Apply => "apply",
        })
    }
}

/// Policies travel as their text form (`"any 1"`, `"first 1 (2,3)"`) in the
/// cluster map, the config file and the admin API, so every layer reads the
/// same typed value and a bad policy fails to decode instead of being
/// skipped.
impl serde::Serialize for AckPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AckPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for AckLevel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for AckLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a write that was applied on the leader was not acknowledged: the
/// typed form of the error a client gets, with the exact reply text in one
/// place ([`AckError::to_error_text`], [`AckError::to_resp`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckError {
    /// Applied in memory, but the log could not make it durable.
    NotDurable {
        /// The log's error.
        cause: String,
    },
    /// This node stopped leading before the write met its policy. `waited`:
    /// whether it had started waiting for followers (if so the write may
    /// still survive the leadership change).
    StoppedLeading {
        /// Whether the wait for followers had begun.
        waited: bool,
    },
    /// The policy was not met within its timeout.
    NoReplicas {
        /// Replicas that held the write in time.
        have: usize,
        /// Replicas the policy requires.
        need: usize,
        /// Whether the write is durable on the leader itself.
        durable_on_leader: bool,
        /// The write's durability (policy, level, timeout).
        durability: Durability,
    },
}

impl AckError {
    /// The RESP error text (without the leading `-`).
    pub fn to_error_text(&self) -> String {
        match self {
            AckError::NotDurable { cause } => {
                format!("MISCONF the write was applied in memory but could not be made durable: {cause}")
            }
            AckError::StoppedLeading { waited: false } => {
                "READONLY this node stopped leading before the write was acknowledged".into()
            }
            AckError::StoppedLeading { waited: true } => "READONLY this node stopped leading before the write met \
                                                          its ack policy; it was not acknowledged and may or may not \
                                                          survive the leadership change"
                .into(),
            AckError::NoReplicas { have, need, durable_on_leader, durability } => format!(
                "NOREPLICAS the write was applied on the leader{} and reached {have} of the {need} replicas its ack \
                 policy ({} {}) requires within {} ms; it was not rolled back",
                if *durable_on_leader { " and is durable there" } else { " but is not yet durable there" },
                durability.policy,
                durability.level,
                durability.timeout_ms,
            ),
        }
    }

    /// The error reply.
    pub fn to_resp(&self) -> crate::resp::Frame {
        crate::resp::Frame::Error(self.to_error_text())
    }

    /// The error class (the reply's first word), for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            AckError::NotDurable { .. } => "MISCONF",
            AckError::StoppedLeading { .. } => "READONLY",
            AckError::NoReplicas { .. } => "NOREPLICAS",
        }
    }
}

impl fmt::Display for AckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_error_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_case_insensitively_with_loose_spaces_and_print_canonically() {
        let cases = [
            ("async", AckPolicy::Async),
            ("  ASYNC ", AckPolicy::Async),
            ("any 1", AckPolicy::Any(1)),
            ("Any   2", AckPolicy::Any(2)),
            ("first 1 (2,3)", AckPolicy::First { k: 1, among: vec![2, 3] }),
            ("FIRST 2(2, 3 ,4 )", AckPolicy::First { k: 2, among: vec![2, 3, 4] }),
            ("all", AckPolicy::All),
        ];
        for (text, want) in cases {
            let got: AckPolicy = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string().parse::<AckPolicy>().unwrap(), want);
        }
        assert_eq!(AckPolicy::First { k: 1, among: vec![2, 3] }.to_string(), "first 1 (2,3)");
    }

    #[test]
    fn bad_policies_are_errors_that_list_the_accepted_forms() {
        for bad in ["", "sync", "any", "any x", "first 1", "first 1 (2,2)", "first 1 (2,", "all 2", "any 999"] {
            let err = bad.parse::<AckPolicy>().unwrap_err().to_string();
            assert!(err.contains("expected one of: async, any <k>"), "{bad}: {err}");
        }
    }

    #[test]
    fn levels_parse_and_print() {
        assert_eq!("FLUSH".parse::<AckLevel>().unwrap(), AckLevel::Flush);
        assert_eq!(" apply".parse::<AckLevel>().unwrap().to_string(), "apply");
        assert!("fsync".parse::<AckLevel>().unwrap_err().to_string().contains("flush or apply"));
    }

    #[test]
    fn validate_rejects_policies_no_cluster_state_can_meet() {
        let followers = [2, 3];
        assert!(AckPolicy::Any(2).validate(&followers).is_ok());
        assert!(AckPolicy::Any(3).validate(&followers).is_err());
        assert!(AckPolicy::First { k: 1, among: vec![3, 4] }.validate(&followers).is_err());
        assert!(AckPolicy::First { k: 3, among: vec![2, 3] }.validate(&followers).is_err());
        assert!(AckPolicy::All.validate(&[]).is_ok());
    }
}
