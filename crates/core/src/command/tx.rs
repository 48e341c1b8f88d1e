//! Transactions (`MULTI` / `EXEC` / `DISCARD` / `WATCH` / `UNWATCH`): the
//! pure decisions.
//!
//! Owns: which commands may be queued and what an error at queuing time
//! does to the transaction ([`queue_decision`]), and the watch table
//! ([`WatchTable`]): which connection watches which key, and which
//! connections' watched keys were changed since (so their `EXEC` aborts).
//! The node keeps each connection's queue, feeds every committed or
//! replicated effect to [`WatchTable::touch`], and runs a transaction's
//! commands under one lock so they enter the log as one entry.
//!
//! Must never: run a command, hold a connection, or read a clock.

use bytes::Bytes;
use hashbrown::{HashMap, HashSet};

use super::CommandSpec;
use crate::effect::Effect;
use crate::resp::Frame;

/// Most commands one transaction may queue; past it the command is refused
/// and the transaction aborts at `EXEC` (the queue lives in node memory).
pub const TX_QUEUE_COMMANDS_MAX: usize = 100_000;
/// Most keys one connection may watch.
pub const WATCH_KEYS_MAX: usize = 10_000;

/// `EXEC` after a refused command.
pub const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// What to do with a command that arrives while a transaction is open.
#[derive(Debug, PartialEq)]
pub enum QueueDecision {
    /// Run it now (it controls the transaction itself).
    RunNow,
    /// Answer with this error and leave the transaction as it is.
    RejectKeep(Frame),
    /// Queue it and answer `+QUEUED`.
    Queue,
}

/// Decides the fate of command `spec` (already known, authenticated and of
/// valid arity) inside an open transaction that already holds `queued`
/// commands. Errors that should abort the transaction (unknown command,
/// arity, READONLY) are found by the node before this is called.
pub fn queue_decision(spec: &CommandSpec, queued: usize) -> Result<QueueDecision, Frame> {
    Ok(match spec.name {
        "exec" | "discard" | "quit" | "reset" => QueueDecision::RunNow,
        "multi" => QueueDecision::RejectKeep(Frame::Error("ERR MULTI calls can not be nested".into())),
        "watch" => QueueDecision::RejectKeep(Frame::Error("ERR WATCH inside MULTI is not allowed".into())),
        "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "wait" | "waitlsn" | "switchover"
        | "replicaof" | "slaveof" | "save" | "hello" | "auth" | "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => {
            return Err(Frame::Error("ERR Command not allowed inside a transaction".into()))
        }
        _ if queued >= TX_QUEUE_COMMANDS_MAX => {
            return Err(Frame::Error(format!(
                "ERR transaction queue limit of {TX_QUEUE_COMMANDS_MAX} commands reached (TX_QUEUE_COMMANDS_MAX)"
            )))
        }
        _ => QueueDecision::Queue,
    })
}

/// One connection watching one key.
#[derive(Debug, Clone, Copy)]
struct Watcher {
    client: u64,
    /// The key was missing or already expired when watched: deleting it
    /// (expiry cleanup) is not a change, as in Redis.
    stale: bool,
}

/// Who watches which key, and whose transactions must abort.
#[derive(Default)]
pub struct WatchTable {
    keys: HashMap<Bytes, Vec<Watcher>>,
    dirty: HashSet<u64>,
}

impl WatchTable {
    /// True if no connection watches anything (the cheap check before
    /// touching effects on the write path).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `client` watches `key`; `stale`: the key was missing or expired.
    pub fn watch(&mut self, client: u64, key: Bytes, stale: bool) {
        let watchers = self.keys.entry(key).or_default();
        if !watchers.iter().any(|w| w.client == client) {
            watchers.push(Watcher { client, stale });
        }
    }

    /// `client` stops watching `keys` and forgets whether it was dirty.
    pub fn unwatch(&mut self, client: u64, keys: &[Bytes]) {
        for key in keys {
            if let Some(watchers) = self.keys.get_mut(key) {
                watchers.retain(|w| w.client != client);
                if watchers.is_empty() {
                    self.keys.remove(key);
                }
            }
        }
        self.dirty.remove(&client);
    }

    /// True if a key `client` watches changed since it watched it.
    pub fn is_dirty(&self, client: u64) -> bool {
        self.dirty.contains(&client)
    }

    /// Records that `effect` changed the keyspace.
    pub fn touch(&mut self, effect: &Effect) {
        if self.keys.is_empty() {
            return;
        }
        match effect.key() {
            Some(key) => {
                let deleting = matches!(effect, Effect::Del { .. } | Effect::Evict { .. });
                if let Some(watchers) = self.keys.get(key) {
                    for w in watchers {
                        if !(deleting && w.stale) {
                            self.dirty.insert(w.client);
                        }
                    }
                }
            }
            None => {
                for w in self.keys.values().flatten() {
                    if !w.stale {
                        self.dirty.insert(w.client);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> &'static CommandSpec {
        super::super::lookup(name.as_bytes()).unwrap()
    }

    #[test]
    fn a_write_to_a_watched_key_makes_only_its_watchers_dirty() {
        let mut t = WatchTable::default();
        t.watch(1, "a".into(), false);
        t.watch(2, "b".into(), false);
        t.touch(&Effect::Set { key: "a".into(), value: "v".into(), expire_at_ms: None });
        assert!(t.is_dirty(1));
        assert!(!t.is_dirty(2));
        t.unwatch(1, &["a".into()]);
        assert!(!t.is_dirty(1), "unwatch forgets the dirty mark");
        t.unwatch(2, &["b".into()]);
        assert!(t.is_empty());
    }

    #[test]
    fn deleting_a_key_that_was_stale_when_watched_is_not_a_change() {
        let mut t = WatchTable::default();
        t.watch(1, "gone".into(), true);
        t.touch(&Effect::Del { key: "gone".into() });
        assert!(!t.is_dirty(1));
        t.touch(&Effect::Set { key: "gone".into(), value: "v".into(), expire_at_ms: None });
        assert!(t.is_dirty(1));
    }

    #[test]
    fn flushall_touches_every_live_watched_key() {
        let mut t = WatchTable::default();
        t.watch(1, "a".into(), false);
        t.watch(2, "b".into(), true);
        t.touch(&Effect::FlushAll);
        assert!(t.is_dirty(1));
        assert!(!t.is_dirty(2));
    }

    #[test]
    fn nested_multi_and_watch_are_refused_without_aborting() {
        assert!(matches!(queue_decision(spec("multi"), 0), Ok(QueueDecision::RejectKeep(_))));
        assert!(matches!(queue_decision(spec("watch"), 0), Ok(QueueDecision::RejectKeep(_))));
        assert_eq!(queue_decision(spec("exec"), 0), Ok(QueueDecision::RunNow));
        assert_eq!(queue_decision(spec("set"), 0), Ok(QueueDecision::Queue));
        assert!(queue_decision(spec("set"), TX_QUEUE_COMMANDS_MAX).is_err());
    }

    #[test]
    fn a_script_cannot_be_queued_in_a_transaction() {
        // EVAL runs as its own write; queued, it would escape the EXEC entry.
        for name in ["eval", "evalsha", "eval_ro", "evalsha_ro"] {
            assert!(queue_decision(spec(name), 0).is_err(), "{name}");
        }
    }
}
