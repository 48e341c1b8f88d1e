//! The command mix: which operations a run sends and in what proportion,
//! parsed from text like `set`, `get`, `set:50,get:50`, `incr`, `ping` or
//! `set+wait:2` (SET then `WAIT 2 <timeout>` pipelined as one operation).

use crate::BenchError;

/// One kind of operation a client can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `SET key:NNNNNNNNNNNN <value>`
    Set,
    /// `GET key:NNNNNNNNNNNN`
    Get,
    /// `INCR counter:NNNNNNNNNNNN` (its own keys, so preloaded values never
    /// make it fail with "not an integer")
    Incr,
    /// `PING`
    Ping,
    /// `SET` then `WAIT replicas timeout`, sent together; one latency sample
    /// from the SET's send to the WAIT's reply: the cost of replication.
    SetWait { replicas: u32 },
}

impl Op {
    /// How many replies one operation gets.
    pub(crate) fn replies(self) -> u8 {
        match self {
            Op::SetWait { .. } => 2,
            _ => 1,
        }
    }

    fn name(self) -> String {
        match self {
            Op::Set => "set".into(),
            Op::Get => "get".into(),
            Op::Incr => "incr".into(),
            Op::Ping => "ping".into(),
            Op::SetWait { replicas } => format!("set+wait:{replicas}"),
        }
    }
}

/// One weighted entry of a mix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MixEntry {
    pub(crate) op: Op,
    pub(crate) weight: u32,
    /// Name in reports, e.g. `get` or `set+wait:2`.
    pub(crate) name: String,
}

/// The parsed mix: entries and the sum of their weights.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    pub(crate) entries: Vec<MixEntry>,
    total_weight: u64,
}

/// Upper bound on entries in a mix; more is surely a typo.
const MIX_ENTRIES_MAX: usize = 16;

impl Mix {
    /// Parses `op[:weight](,op[:weight])*` where op is `set`, `get`, `incr`,
    /// `ping` or `set+wait:N` (N replicas). Weights default to 1.
    pub(crate) fn parse(text: &str) -> Result<Mix, BenchError> {
        let invalid = |why: String| BenchError::InvalidOption(format!("mix {text:?}: {why}"));
        let mut entries = Vec::new();
        for item in text.split(',').map(str::trim) {
            let lower = item.to_ascii_lowercase();
            let mut parts = lower.split(':');
            let name = parts.next().unwrap_or_default();
            let op = match name {
                "set" => Op::Set,
                "get" => Op::Get,
                "incr" => Op::Incr,
                "ping" => Op::Ping,
                "set+wait" => {
                    let replicas = parts
                        .next()
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| invalid(format!("{item:?} needs a replica count, e.g. set+wait:1")))?;
                    Op::SetWait { replicas }
                }
                "" => return Err(invalid("empty entry".into())),
                other => {
                    return Err(invalid(format!("unknown command {other:?} (known: set, get, incr, ping, set+wait:N)")))
                }
            };
            let weight = match parts.next() {
                None => 1,
                Some(w) => w
                    .parse::<u32>()
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or_else(|| invalid(format!("weight {w:?} is not a positive integer")))?,
            };
            if parts.next().is_some() {
                return Err(invalid(format!("too many ':' in {item:?}")));
            }
            entries.push(MixEntry { op, weight, name: op.name() });
        }
        if entries.len() > MIX_ENTRIES_MAX {
            return Err(invalid(format!("more than {MIX_ENTRIES_MAX} entries")));
        }
        let total_weight = entries.iter().map(|e| u64::from(e.weight)).sum();
        Ok(Mix { entries, total_weight })
    }

    /// The entry index for a uniform draw `r` in `0..total_weight()`.
    pub(crate) fn pick(&self, mut r: u64) -> usize {
        for (index, entry) in self.entries.iter().enumerate() {
            if r < u64::from(entry.weight) {
                return index;
            }
            r -= u64::from(entry.weight);
        }
        self.entries.len() - 1
    }

    pub(crate) fn total_weight(&self) -> u64 {
        self.total_weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(text: &str) -> Vec<(Op, u32)> {
        Mix::parse(text).unwrap().entries.iter().map(|e| (e.op, e.weight)).collect()
    }

    #[test]
    fn mixes_parse_with_default_and_explicit_weights() {
        assert_eq!(ops("set"), [(Op::Set, 1)]);
        assert_eq!(ops("set:50, GET:50"), [(Op::Set, 50), (Op::Get, 50)]);
        assert_eq!(ops("incr,ping"), [(Op::Incr, 1), (Op::Ping, 1)]);
        assert_eq!(ops("set+wait:2"), [(Op::SetWait { replicas: 2 }, 1)]);
        assert_eq!(ops("set+wait:1:30,get:70"), [(Op::SetWait { replicas: 1 }, 30), (Op::Get, 70)]);
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        for (text, hint) in [
            ("", "empty entry"),
            ("set,", "empty entry"),
            ("sett", "unknown command"),
            ("set:0", "not a positive integer"),
            ("get:x", "not a positive integer"),
            ("set+wait", "replica count"),
            ("set+wait:x", "replica count"),
            ("get:1:2", "too many"),
        ] {
            let err = Mix::parse(text).unwrap_err().to_string();
            assert!(err.contains(hint), "{text:?}: {err}");
        }
    }

    #[test]
    fn pick_follows_the_weights() {
        let mix = Mix::parse("set:1,get:3").unwrap();
        assert_eq!(mix.total_weight(), 4);
        let picks: Vec<usize> = (0..4).map(|r| mix.pick(r)).collect();
        assert_eq!(picks, [0, 1, 1, 1]);
    }
}
