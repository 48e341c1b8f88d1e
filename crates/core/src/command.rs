//! The command table and the execution of data commands.
//!
//! Owns: which commands exist, their arity and flags (also served by
//! `COMMAND`), and, for commands that touch the keyspace, the logic that
//! turns a request into a reply plus the row effects to log. A write emits
//! effects through [`WriteCtx::emit`], which applies them to the store at
//! once (after charging them to the write's size budget, with an undo record:
//! see [`crate::write`]), so the leader's state is produced by exactly the
//! code that replays the log.
//!
//! Must never: read a clock (callers pass `now_ms`), touch a socket, or know
//! about connections. Commands that need a connection or node context
//! (`AUTH`, `HELLO`, `INFO`, `WAIT`, ...) are listed here with
//! [`Handler::Node`] and executed by the node.

use bytes::Bytes;

use crate::effect::Effect;
use crate::glob::glob_match;
use crate::resp::Frame;
use crate::store::{Store, ValueRef};
pub use flags::Flags;

/// `?` for handlers that answer a [`Frame`]: the value of an `Ok`, or
/// return the error reply. Shared by the command group modules below.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(f) => return f,
        }
    };
}

pub mod flags;
pub mod hash;
pub mod keys;
pub mod list;
pub mod set;
pub mod string;
pub mod tx;
pub mod zset;

/// Largest string value a command may create (Redis's proto-max-bulk-len).
pub const STRING_BYTES_MAX: usize = 512 * 1024 * 1024;

/// Longest command name accepted by [`lookup`].
const COMMAND_NAME_BYTES_MAX: usize = 32;

/// Executes a read-only data command.
pub type ReadFn = fn(&ReadCtx<'_>, &[Bytes]) -> Frame;
/// Executes a data command that may change the keyspace.
pub type WriteFn = fn(&mut WriteCtx<'_>, &[Bytes]) -> Frame;

/// How a command is executed.
#[derive(Clone, Copy)]
pub enum Handler {
    /// Reads the store only.
    Read(ReadFn),
    /// May emit row effects.
    Write(WriteFn),
    /// Needs connection or node state; executed by the node.
    Node,
}

/// One entry of the command table.
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: `n` exactly n arguments (name included), `-n` at least n.
    pub arity: i32,
    /// Redis command flags (`write`, `readonly`, `fast`, ...).
    pub flags: Flags,
    /// Position of the first key argument (0: none).
    pub first_key: i32,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i32,
    /// Step between key arguments.
    pub key_step: i32,
    /// Command group, for `COMMAND DOCS`.
    pub group: &'static str,
    /// One-line summary, for `COMMAND DOCS`.
    pub summary: &'static str,
    /// How to execute it.
    pub handler: Handler,
}

impl CommandSpec {
    /// Position of this command in [`COMMANDS`] (for per-command tables).
    pub fn index(&'static self) -> usize {
        let offset = self as *const CommandSpec as usize - COMMANDS.as_ptr() as usize;
        offset / std::mem::size_of::<CommandSpec>()
    }

    /// True if the command may change the keyspace (refused on followers).
    pub fn is_write(&self) -> bool {
        matches!(self.handler, Handler::Write(_))
    }

    /// True if `argc` (name included) satisfies the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        if self.arity >= 0 {
            argc == self.arity as usize
        } else {
            argc >= (-self.arity) as usize
        }
    }

    /// Position of the `numkeys` argument of a command whose keys follow a
    /// count (`ZUNION numkeys k..`, `ZUNIONSTORE dest numkeys k..`,
    /// `BLMPOP timeout numkeys k..`); `None` for the others.
    pub fn numkeys_position(&self) -> Option<usize> {
        match self.name {
            "zunion" | "zinter" | "zdiff" | "zintercard" | "sintercard" | "lmpop" | "zmpop" => Some(1),
            "zunionstore" | "zinterstore" | "zdiffstore" | "blmpop" | "bzmpop" => Some(2),
            "eval" | "evalsha" | "eval_ro" | "evalsha_ro" => Some(2),
            _ => None,
        }
    }

    /// True if the command names keys at all (fixed positions or a count).
    pub fn has_keys(&self) -> bool {
        self.first_key != 0 || self.numkeys_position().is_some()
    }

    /// The key arguments of `args` (a request of this command, name
    /// included): the fixed positions `first_key`, `last_key`, `key_step`,
    /// then the keys a `numkeys` count announces. Used to route a request to
    /// its keyspace. A count that is not a number, or runs past the
    /// arguments, yields what is there (the command itself reports the
    /// syntax error).
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> + 'a {
        let first = self.first_key.max(0) as usize;
        let last = if self.last_key < 0 {
            (args.len() as i64 + self.last_key as i64).max(0) as usize
        } else {
            (self.last_key as usize).min(args.len().saturating_sub(1))
        };
        let step = self.key_step.max(1) as usize;
        let range = if first == 0 || first > last { 0..0 } else { first..last + 1 };
        let counted = match self.numkeys_position() {
            Some(at) if at < args.len() => {
                let n = std::str::from_utf8(&args[at]).ok().and_then(|t| t.parse::<usize>().ok()).unwrap_or(0);
                at + 1..(at + 1).saturating_add(n).min(args.len())
            }
            _ => 0..0,
        };
        let stored = match self.name {
            "sort" => keys::sort_store_key(args),
            _ => None,
        };
        args[range].iter().step_by(step).chain(args[counted].iter()).chain(stored)
    }
}

/// Context of a read command.
pub struct ReadCtx<'a> {
    /// The keyspace.
    pub store: &'a Store,
    /// Current time, unix ms, from the caller.
    pub now_ms: u64,
}

/// Context of a write command. Its contract (size budget, undo, all or
/// nothing) is in [`crate::write`]; run commands through
/// [`crate::write::execute`].
pub struct WriteCtx<'a> {
    /// The keyspace.
    pub store: &'a mut Store,
    /// Current time, unix ms, from the caller.
    pub now_ms: u64,
    /// Effects emitted so far, their undo records and the size budget.
    pub batch: &'a mut crate::write::Batch,
}

impl WriteCtx<'_> {
    /// Charges `effect` to the write's size budget, then applies it to the
    /// store and records it for the log; an effect over the budget is not
    /// applied and the whole write is refused and undone (see
    /// [`crate::write`]).
    ///
    /// An effect that removes elements and thereby empties a collection
    /// (the store drops the key) is followed by an explicit `Del`: the
    /// key's end is then a reset point in the log, so replaying a suffix
    /// over a fuzzy snapshot that holds a *later* incarnation of the key
    /// (recreated without the old expiry, or as another type) wipes what
    /// the replayed effects of the old incarnation did to it (decision
    /// 0034).
    pub fn emit(&mut self, effect: Effect) {
        let shrinks = match &effect {
            Effect::SRem { key, .. }
            | Effect::HDel { key, .. }
            | Effect::ZRem { key, .. }
            | Effect::LPop { key, .. }
            | Effect::LReplace { key, .. } => Some(key.clone()),
            _ => None,
        };
        let existed = shrinks.as_ref().is_some_and(|key| self.store.contains(key));
        self.batch.emit(self.store, effect);
        if let Some(key) = shrinks.filter(|key| existed && !self.store.contains(key)) {
            self.batch.emit(self.store, Effect::Del { key });
        }
    }

    /// If `key` is present but expired, deletes it through the log first, so
    /// the command sees (and replicas replay) a missing key.
    fn purge_expired(&mut self, key: &Bytes) {
        if self.store.is_expired(key, self.now_ms) {
            self.emit(Effect::Del { key: key.clone() });
        }
    }

    fn read(&self) -> ReadCtx<'_> {
        ReadCtx { store: self.store, now_ms: self.now_ms }
    }
}

macro_rules! cmd {
    ($name:literal, $arity:expr, [$($flag:literal),*], $fk:expr, $lk:expr, $st:expr, $group:literal, $summary:literal, $handler:expr) => {
        CommandSpec { name: $name, arity: $arity, flags: Flags::parse(&[$($flag),*]), first_key: $fk, last_key: $lk, key_step: $st,
                      group: $group, summary: $summary, handler: $handler }
    };
}

use Handler::{Node, Read, Write};

/// Every command Tandem knows, sorted by name (binary-searched by
/// [`lookup`]; a test keeps it sorted).
#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    cmd!("ackpolicy", -2, ["fast"], 0, 0, 0, "replication", "Sets or shows this connection's ack policy: ACKPOLICY SET <policy> [LEVEL flush|apply] [TIMEOUT ms] | GET | RESET.", Node),
    cmd!("append", 3, ["write", "denyoom"], 1, 1, 1, "string", "Appends a string to the value of a key.", Write(append)),
    cmd!("auth", -2, ["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0, "connection", "Authenticates the connection.", Node),
    cmd!("bgsave", -1, ["admin", "noscript"], 0, 0, 0, "server", "Takes a snapshot in the background.", Node),
    cmd!("bitcount", -2, ["readonly"], 1, 1, 1, "bitmap", "Counts the set bits of a string, optionally in a byte or bit range.", Read(string::bitcount)),
    cmd!("bitfield", -2, ["write", "denyoom"], 1, 1, 1, "bitmap", "Reads, sets and increments integer fields of a string.", Write(string::bitfield)),
    cmd!("bitfield_ro", -2, ["readonly", "fast"], 1, 1, 1, "bitmap", "Reads integer fields of a string.", Read(string::bitfield_ro)),
    cmd!("bitop", -4, ["write", "denyoom"], 2, -1, 1, "bitmap", "Bitwise AND, OR, XOR or NOT of strings, stored in a key.", Write(string::bitop)),
    cmd!("bitpos", -3, ["readonly"], 1, 1, 1, "bitmap", "Finds the first set or clear bit of a string.", Read(string::bitpos)),
    cmd!("blmove", 6, ["write", "denyoom", "blocking"], 1, 2, 1, "list", "Pops an element and pushes it to another list, waiting for one.", Write(list::blmove)),
    cmd!("blmpop", -5, ["write", "blocking"], 0, 0, 0, "list", "Pops elements from the first non-empty list, waiting for one.", Write(list::blmpop)),
    cmd!("blpop", -3, ["write", "blocking"], 1, -2, 1, "list", "Pops the head of the first non-empty list, waiting for one.", Write(list::blpop)),
    cmd!("brpop", -3, ["write", "blocking"], 1, -2, 1, "list", "Pops the tail of the first non-empty list, waiting for one.", Write(list::brpop)),
    cmd!("brpoplpush", 4, ["write", "denyoom", "blocking"], 1, 2, 1, "list", "Pops a tail and pushes it to another list, waiting for one.", Write(list::brpoplpush)),
    cmd!("bzmpop", -5, ["write", "blocking"], 0, 0, 0, "sorted-set", "Pops members from the first non-empty sorted set, waiting for one.", Write(zset::bzmpop)),
    cmd!("bzpopmax", -3, ["write", "blocking", "fast"], 1, -2, 1, "sorted-set", "Pops the highest member of the first non-empty sorted set, waiting for one.", Write(zset::bzpopmax)),
    cmd!("bzpopmin", -3, ["write", "blocking", "fast"], 1, -2, 1, "sorted-set", "Pops the lowest member of the first non-empty sorted set, waiting for one.", Write(zset::bzpopmin)),
    cmd!("client", -2, ["noscript", "loading", "stale"], 0, 0, 0, "connection", "Connection commands: ID, INFO, SETNAME, GETNAME, LIST, KILL, UNBLOCK.", Node),
    cmd!("command", -1, ["loading", "stale"], 0, 0, 0, "server", "Details about Tandem's commands.", Node),
    cmd!("config", -2, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "Reads configuration parameters (CONFIG GET).", Node),
    cmd!("conflicts", -1, ["readonly", "noscript"], 0, 0, 0, "conflicts", "The conflict feed of multi-leader and leaderless keyspaces, newest first: CONFLICTS [COUNT n].", Node),
    cmd!("consistency", -1, ["fast", "noscript"], 0, 0, 0, "conflicts", "Shows or overrides this connection's leaderless W and R: CONSISTENCY [W n R n | RESET].", Node),
    cmd!("copy", -3, ["write", "denyoom"], 1, 2, 1, "generic", "Copies a key's value (and expiry) to another key.", Write(keys::copy)),
    cmd!("dbsize", 1, ["readonly", "fast"], 0, 0, 0, "server", "Returns the number of keys.", Read(dbsize)),
    cmd!("decr", 2, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Decrements the integer value of a key by one.", Write(decr)),
    cmd!("decrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Decrements a number from the integer value of a key.", Write(decrby)),
    cmd!("del", -2, ["write"], 1, -1, 1, "generic", "Deletes one or more keys.", Write(del)),
    cmd!("discard", 1, ["noscript", "loading", "stale", "fast"], 0, 0, 0, "transactions", "Discards a transaction.", Node),
    cmd!("echo", 2, ["fast"], 0, 0, 0, "connection", "Returns the given string.", Read(echo)),
    cmd!("eval", -3, ["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys"], 0, 0, 0, "scripting", "Runs a Lua script; its writes are logged as one entry of row effects.", Node),
    cmd!("eval_ro", -3, ["readonly", "noscript", "stale", "skip_monitor", "no_mandatory_keys"], 0, 0, 0, "scripting", "Runs a read-only Lua script (also on followers).", Node),
    cmd!("evalsha", -3, ["noscript", "stale", "skip_monitor", "may_replicate", "no_mandatory_keys"], 0, 0, 0, "scripting", "Runs a cached Lua script by its SHA1.", Node),
    cmd!("evalsha_ro", -3, ["readonly", "noscript", "stale", "skip_monitor", "no_mandatory_keys"], 0, 0, 0, "scripting", "Runs a cached read-only Lua script by its SHA1 (also on followers).", Node),
    cmd!("exec", 1, ["noscript", "loading", "stale"], 0, 0, 0, "transactions", "Executes the queued commands of a transaction as one log entry.", Node),
    cmd!("exists", -2, ["readonly", "fast"], 1, -1, 1, "generic", "Counts how many of the given keys exist.", Read(exists)),
    cmd!("expire", -3, ["write", "fast"], 1, 1, 1, "generic", "Sets a key's time to live in seconds.", Write(expire)),
    cmd!("expireat", -3, ["write", "fast"], 1, 1, 1, "generic", "Sets a key's expiry to a unix time in seconds.", Write(expireat)),
    cmd!("expiretime", 2, ["readonly", "fast"], 1, 1, 1, "generic", "Returns a key's expiry as a unix time in seconds.", Read(keys::expiretime)),
    cmd!("flushall", -1, ["write"], 0, 0, 0, "server", "Removes every key.", Write(flushall)),
    cmd!("flushdb", -1, ["write"], 0, 0, 0, "server", "Removes every key (there is one database).", Write(flushall)),
    cmd!("function", -2, ["noscript"], 0, 0, 0, "scripting", "Redis 7 functions: FUNCTION FLUSH and LIST (Tandem has none; use EVAL).", Node),
    cmd!("get", 2, ["readonly", "fast"], 1, 1, 1, "string", "Returns the string value of a key.", Read(get)),
    cmd!("getbit", 3, ["readonly", "fast"], 1, 1, 1, "bitmap", "Returns a bit of a string.", Read(string::getbit)),
    cmd!("getdel", 2, ["write", "fast"], 1, 1, 1, "string", "Returns the string value of a key and deletes it.", Write(getdel)),
    cmd!("getex", -2, ["write", "fast"], 1, 1, 1, "string", "Returns a string and sets or removes its expiry.", Write(string::getex)),
    cmd!("getrange", 4, ["readonly"], 1, 1, 1, "string", "Returns a substring.", Read(string::getrange)),
    cmd!("getset", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Sets a string and returns the old one.", Write(string::getset)),
    cmd!("hdel", -3, ["write", "fast"], 1, 1, 1, "hash", "Deletes fields from a hash.", Write(hash::hdel)),
    cmd!("hello", -1, ["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0, "connection", "Handshake: protocol version, auth, client name.", Node),
    cmd!("hexists", 3, ["readonly", "fast"], 1, 1, 1, "hash", "Tells whether a field exists in a hash.", Read(hash::hexists)),
    cmd!("hget", 3, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the value of a hash field.", Read(hash::hget)),
    cmd!("hgetall", 2, ["readonly"], 1, 1, 1, "hash", "Returns every field and value of a hash.", Read(hash::hgetall)),
    cmd!("hincrby", 4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Increments the integer value of a hash field.", Write(hash::hincrby)),
    cmd!("hincrbyfloat", 4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Increments the float value of a hash field.", Write(hash::hincrbyfloat)),
    cmd!("hkeys", 2, ["readonly"], 1, 1, 1, "hash", "Returns every field of a hash.", Read(hash::hkeys)),
    cmd!("hlen", 2, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the number of fields of a hash.", Read(hash::hlen)),
    cmd!("hmget", -3, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the values of hash fields.", Read(hash::hmget)),
    cmd!("hmset", -4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Sets hash fields (deprecated form of HSET).", Write(hash::hset)),
    cmd!("hrandfield", -2, ["readonly"], 1, 1, 1, "hash", "Returns random fields of a hash.", Read(hash::hrandfield)),
    cmd!("hscan", -3, ["readonly"], 1, 1, 1, "hash", "Iterates over the fields of a hash.", Read(hash::hscan)),
    cmd!("hset", -4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Sets hash fields.", Write(hash::hset)),
    cmd!("hsetnx", 4, ["write", "denyoom", "fast"], 1, 1, 1, "hash", "Sets a hash field only if it does not exist.", Write(hash::hsetnx)),
    cmd!("hstrlen", 3, ["readonly", "fast"], 1, 1, 1, "hash", "Returns the length of a hash field value.", Read(hash::hstrlen)),
    cmd!("hvals", 2, ["readonly"], 1, 1, 1, "hash", "Returns every value of a hash.", Read(hash::hvals)),
    cmd!("incr", 2, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Increments the integer value of a key by one.", Write(incr)),
    cmd!("incrby", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Increments the integer value of a key by a number.", Write(incrby)),
    cmd!("incrbyfloat", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Increments the float value of a key.", Write(string::incrbyfloat)),
    cmd!("info", -1, ["loading", "stale"], 0, 0, 0, "server", "Information and statistics about the node.", Node),
    cmd!("keys", 2, ["readonly"], 0, 0, 0, "generic", "Returns all key names that match a pattern.", Read(keys)),
    cmd!("lastlsn", 1, ["fast"], 0, 0, 0, "replication", "LSN of this connection's last write (its session token).", Node),
    cmd!("lastsave", 1, ["fast"], 0, 0, 0, "server", "Unix time of the newest snapshot.", Node),
    cmd!("lcs", -3, ["readonly"], 1, 2, 1, "string", "Longest common subsequence of two strings.", Read(string::lcs)),
    cmd!("lindex", 3, ["readonly"], 1, 1, 1, "list", "Returns the element at an index of a list.", Read(list::lindex)),
    cmd!("linsert", 5, ["write", "denyoom"], 1, 1, 1, "list", "Inserts an element before or after another.", Write(list::linsert)),
    cmd!("llen", 2, ["readonly", "fast"], 1, 1, 1, "list", "Returns the length of a list.", Read(list::llen)),
    cmd!("lmove", 5, ["write", "denyoom"], 1, 2, 1, "list", "Pops an element and pushes it to another list.", Write(list::lmove)),
    cmd!("lmpop", -4, ["write"], 0, 0, 0, "list", "Pops elements from the first non-empty list.", Write(list::lmpop)),
    cmd!("lpop", -2, ["write", "fast"], 1, 1, 1, "list", "Pops elements from the head of a list.", Write(list::lpop)),
    cmd!("lpos", -3, ["readonly"], 1, 1, 1, "list", "Returns the positions of matching elements.", Read(list::lpos)),
    cmd!("lpush", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "Pushes elements to the head of a list.", Write(list::lpush)),
    cmd!("lpushx", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "Pushes to the head of a list only if it exists.", Write(list::lpushx)),
    cmd!("lrange", 4, ["readonly"], 1, 1, 1, "list", "Returns a range of elements of a list.", Read(list::lrange)),
    cmd!("lrem", 4, ["write"], 1, 1, 1, "list", "Removes elements equal to a value.", Write(list::lrem)),
    cmd!("lset", 4, ["write", "denyoom"], 1, 1, 1, "list", "Sets the element at an index.", Write(list::lset)),
    cmd!("ltrim", 4, ["write"], 1, 1, 1, "list", "Keeps only a range of a list.", Write(list::ltrim)),
    cmd!("memory", -2, ["readonly"], 2, 2, 1, "server", "MEMORY USAGE: the bytes a key and its value take.", Read(keys::memory)),
    cmd!("mget", -2, ["readonly", "fast"], 1, -1, 1, "string", "Returns the string values of one or more keys.", Read(mget)),
    cmd!("monitor", 1, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "Streams every command the node receives, as Redis prints it.", Node),
    cmd!("mset", -3, ["write", "denyoom"], 1, -1, 2, "string", "Sets the string values of one or more keys.", Write(mset)),
    cmd!("msetnx", -3, ["write", "denyoom"], 1, -1, 2, "string", "Sets several keys only if none exists.", Write(string::msetnx)),
    cmd!("multi", 1, ["noscript", "loading", "stale", "fast"], 0, 0, 0, "transactions", "Starts a transaction.", Node),
    cmd!("object", -2, ["readonly"], 2, 2, 1, "generic", "Internals of a key's value: ENCODING, FREQ, IDLETIME, REFCOUNT.", Read(keys::object)),
    cmd!("persist", 2, ["write", "fast"], 1, 1, 1, "generic", "Removes a key's expiry.", Write(persist)),
    cmd!("pexpire", -3, ["write", "fast"], 1, 1, 1, "generic", "Sets a key's time to live in milliseconds.", Write(pexpire)),
    cmd!("pexpireat", -3, ["write", "fast"], 1, 1, 1, "generic", "Sets a key's expiry to a unix time in milliseconds.", Write(pexpireat)),
    cmd!("pexpiretime", 2, ["readonly", "fast"], 1, 1, 1, "generic", "Returns a key's expiry as a unix time in milliseconds.", Read(keys::pexpiretime)),
    cmd!("ping", -1, ["fast"], 0, 0, 0, "connection", "Returns PONG or the given message.", Node),
    cmd!("psetex", 4, ["write", "denyoom"], 1, 1, 1, "string", "Sets a string with a time to live in milliseconds.", Write(string::psetex)),
    cmd!("psubscribe", -2, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, "pubsub", "Subscribes to channels matching glob patterns.", Node),
    cmd!("pttl", 2, ["readonly", "fast"], 1, 1, 1, "generic", "Returns a key's time to live in milliseconds.", Read(pttl)),
    cmd!("publish", 3, ["pubsub", "loading", "stale", "fast"], 0, 0, 0, "pubsub", "Posts a message to a channel on every node; replies with this node's receivers.", Node),
    cmd!("pubsub", -2, ["pubsub", "loading", "stale"], 0, 0, 0, "pubsub", "This node's channels and subscriber counts: CHANNELS [pattern], NUMSUB [channel ...], NUMPAT.", Node),
    cmd!("punsubscribe", -1, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, "pubsub", "Unsubscribes from patterns (all without arguments).", Node),
    cmd!("quit", -1, ["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0, "connection", "Closes the connection.", Node),
    cmd!("randomkey", 1, ["readonly"], 0, 0, 0, "generic", "Returns a random key name.", Read(keys::randomkey)),
    cmd!("rename", 3, ["write"], 1, 2, 1, "generic", "Renames a key.", Write(keys::rename)),
    cmd!("renamenx", 3, ["write", "fast"], 1, 2, 1, "generic", "Renames a key only if the new name does not exist.", Write(keys::renamenx)),
    cmd!("replicaof", 3, ["admin", "noscript", "stale"], 0, 0, 0, "replication", "Follows the leader at a peer address, or NO ONE to lead.", Node),
    cmd!("reset", 1, ["noscript", "loading", "stale", "fast", "no_auth"], 0, 0, 0, "connection", "Resets the connection: transaction, watches, protocol, name, monitor, ack policy.", Node),
    cmd!("resolve", 4, ["write", "denyoom"], 1, 1, 1, "conflicts", "Replaces the siblings a causal context covers with one value: RESOLVE key context value.", Node),
    cmd!("role", 1, ["noscript", "loading", "stale", "fast"], 0, 0, 0, "replication", "The node's replication role and progress.", Node),
    cmd!("rpop", -2, ["write", "fast"], 1, 1, 1, "list", "Pops elements from the tail of a list.", Write(list::rpop)),
    cmd!("rpoplpush", 3, ["write", "denyoom"], 1, 2, 1, "list", "Pops a tail and pushes it to the head of another list.", Write(list::rpoplpush)),
    cmd!("rpush", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "Pushes elements to the tail of a list.", Write(list::rpush)),
    cmd!("rpushx", -3, ["write", "denyoom", "fast"], 1, 1, 1, "list", "Pushes to the tail of a list only if it exists.", Write(list::rpushx)),
    cmd!("sadd", -3, ["write", "denyoom", "fast"], 1, 1, 1, "set", "Adds members to a set.", Write(sadd)),
    cmd!("save", 1, ["admin", "noscript"], 0, 0, 0, "server", "Takes a snapshot and truncates the log behind it.", Node),
    cmd!("scan", -2, ["readonly"], 0, 0, 0, "generic", "Iterates over the key names.", Read(scan)),
    cmd!("scard", 2, ["readonly", "fast"], 1, 1, 1, "set", "Returns the number of members of a set.", Read(scard)),
    cmd!("script", -2, ["noscript"], 0, 0, 0, "scripting", "The script cache: SCRIPT LOAD, EXISTS, FLUSH [ASYNC|SYNC], KILL.", Node),
    cmd!("sdiff", -2, ["readonly"], 1, -1, 1, "set", "Members of the first set not in the others.", Read(set::sdiff)),
    cmd!("sdiffstore", -3, ["write", "denyoom"], 1, -1, 1, "set", "Stores SDIFF in a key.", Write(set::sdiffstore)),
    cmd!("select", 2, ["loading", "stale", "fast"], 0, 0, 0, "connection", "Selects the database (only 0 exists).", Node),
    cmd!("sentinel", -2, ["admin", "loading", "stale"], 0, 0, 0, "sentinel", "Leader discovery for Sentinel-aware clients: get-master-addr-by-name, masters, master, replicas, sentinels.", Node),
    cmd!("set", -3, ["write", "denyoom"], 1, 1, 1, "string", "Sets the string value of a key, with optional expiry and conditions.", Write(set)),
    cmd!("setbit", 4, ["write", "denyoom"], 1, 1, 1, "bitmap", "Sets or clears a bit of a string.", Write(string::setbit)),
    cmd!("setex", 4, ["write", "denyoom"], 1, 1, 1, "string", "Sets a string with a time to live in seconds.", Write(string::setex)),
    cmd!("setnx", 3, ["write", "denyoom", "fast"], 1, 1, 1, "string", "Sets a key only if it does not exist.", Write(setnx)),
    cmd!("setrange", 4, ["write", "denyoom"], 1, 1, 1, "string", "Overwrites part of a string at an offset.", Write(string::setrange)),
    cmd!("siblings", 2, ["readonly"], 1, 1, 1, "conflicts", "The causal context and every concurrent value of a key (keyspaces with --conflict siblings).", Node),
    cmd!("sinter", -2, ["readonly"], 1, -1, 1, "set", "Intersection of sets.", Read(set::sinter)),
    cmd!("sintercard", -3, ["readonly"], 0, 0, 0, "set", "Size of the intersection of sets.", Read(set::sintercard)),
    cmd!("sinterstore", -3, ["write", "denyoom"], 1, -1, 1, "set", "Stores SINTER in a key.", Write(set::sinterstore)),
    cmd!("sismember", 3, ["readonly", "fast"], 1, 1, 1, "set", "Tells whether a member is in a set.", Read(sismember)),
    cmd!("slaveof", 3, ["admin", "noscript", "stale"], 0, 0, 0, "replication", "Alias of REPLICAOF.", Node),
    cmd!("slowlog", -2, ["admin", "noscript", "loading", "stale"], 0, 0, 0, "server", "The slow log: SLOWLOG GET [count] | LEN | RESET (slowlog-log-slower-than, slowlog-max-len).", Node),
    cmd!("smembers", 2, ["readonly"], 1, 1, 1, "set", "Returns all members of a set.", Read(smembers)),
    cmd!("smismember", -3, ["readonly", "fast"], 1, 1, 1, "set", "Tells whether each member is in a set.", Read(set::smismember)),
    cmd!("smove", 4, ["write", "fast"], 1, 2, 1, "set", "Moves a member from one set to another.", Write(set::smove)),
    cmd!("sort", -2, ["write", "denyoom"], 1, 1, 1, "generic", "Sorts a list, set or sorted set (BY, LIMIT, GET, ASC|DESC, ALPHA, STORE).", Write(keys::sort)),
    cmd!("sort_ro", -2, ["readonly"], 1, 1, 1, "generic", "Sorts a list, set or sorted set without storing.", Read(keys::sort_ro)),
    cmd!("spop", -2, ["write", "fast"], 1, 1, 1, "set", "Removes and returns random members.", Write(set::spop)),
    cmd!("srandmember", -2, ["readonly"], 1, 1, 1, "set", "Returns random members.", Read(set::srandmember)),
    cmd!("srem", -3, ["write", "fast"], 1, 1, 1, "set", "Removes members from a set.", Write(srem)),
    cmd!("sscan", -3, ["readonly"], 1, 1, 1, "set", "Iterates over the members of a set.", Read(set::sscan)),
    cmd!("strlen", 2, ["readonly", "fast"], 1, 1, 1, "string", "Returns the length of a string value.", Read(strlen)),
    cmd!("subscribe", -2, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, "pubsub", "Subscribes to channels (+switch-master included); messages published on any node arrive.", Node),
    cmd!("sunion", -2, ["readonly"], 1, -1, 1, "set", "Union of sets.", Read(set::sunion)),
    cmd!("sunionstore", -3, ["write", "denyoom"], 1, -1, 1, "set", "Stores SUNION in a key.", Write(set::sunionstore)),
    cmd!("switchover", -2, ["admin", "noscript"], 0, 0, 0, "replication", "Moves leadership to a node without losing a write: SWITCHOVER node-id [TIMEOUT ms].", Node),
    cmd!("time", 1, ["loading", "stale", "fast"], 0, 0, 0, "server", "The node's clock: unix seconds and microseconds.", Node),
    cmd!("touch", -2, ["readonly", "fast"], 1, -1, 1, "generic", "Counts the given keys that exist.", Read(keys::touch)),
    cmd!("ttl", 2, ["readonly", "fast"], 1, 1, 1, "generic", "Returns a key's time to live in seconds.", Read(ttl)),
    cmd!("type", 2, ["readonly", "fast"], 1, 1, 1, "generic", "Returns the type of a key's value.", Read(type_)),
    cmd!("unlink", -2, ["write", "fast"], 1, -1, 1, "generic", "Deletes one or more keys.", Write(del)),
    cmd!("unsubscribe", -1, ["pubsub", "noscript", "loading", "stale"], 0, 0, 0, "pubsub", "Unsubscribes from channels (all without arguments).", Node),
    cmd!("unwatch", 1, ["noscript", "loading", "stale", "fast"], 0, 0, 0, "transactions", "Forgets every watched key.", Node),
    cmd!("wait", 3, ["noscript"], 0, 0, 0, "generic", "Waits until numreplicas followers hold this connection's writes, or timeout ms.", Node),
    cmd!("waitlsn", 3, ["noscript", "stale"], 0, 0, 0, "replication", "Waits until this node applied an LSN, or timeout ms; returns the applied LSN.", Node),
    cmd!("waitvv", 4, ["readonly", "noscript", "stale"], 1, 1, 1, "replication", "Waits until this node applied a multi-leader keyspace up to a version vector (node:seq,..), or timeout ms: WAITVV key vector timeout_ms; returns keyspace, node id, applied vector.", Node),
    cmd!("watch", -2, ["noscript", "loading", "stale", "fast"], 1, -1, 1, "transactions", "Makes the next EXEC abort if one of these keys changes.", Node),
    cmd!("zadd", -4, ["write", "denyoom", "fast"], 1, 1, 1, "sorted-set", "Adds members or updates their scores.", Write(zset::zadd)),
    cmd!("zcard", 2, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Returns the number of members.", Read(zset::zcard)),
    cmd!("zcount", 4, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Counts members within a score range.", Read(zset::zcount)),
    cmd!("zdiff", -3, ["readonly"], 0, 0, 0, "sorted-set", "Members of the first sorted set not in the others.", Read(zset::zdiff)),
    cmd!("zdiffstore", -4, ["write", "denyoom"], 1, 1, 1, "sorted-set", "Stores ZDIFF in a key.", Write(zset::zdiffstore)),
    cmd!("zincrby", 4, ["write", "denyoom", "fast"], 1, 1, 1, "sorted-set", "Increments the score of a member.", Write(zset::zincrby)),
    cmd!("zinter", -3, ["readonly"], 0, 0, 0, "sorted-set", "Intersection of sorted sets.", Read(zset::zinter)),
    cmd!("zintercard", -3, ["readonly"], 0, 0, 0, "sorted-set", "Size of the intersection of sorted sets.", Read(zset::zintercard)),
    cmd!("zinterstore", -4, ["write", "denyoom"], 1, 1, 1, "sorted-set", "Stores ZINTER in a key.", Write(zset::zinterstore)),
    cmd!("zlexcount", 4, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Counts members within a lex range.", Read(zset::zlexcount)),
    cmd!("zmpop", -4, ["write"], 0, 0, 0, "sorted-set", "Pops members from the first non-empty sorted set.", Write(zset::zmpop)),
    cmd!("zmscore", -3, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Returns the scores of members.", Read(zset::zmscore)),
    cmd!("zpopmax", -2, ["write", "fast"], 1, 1, 1, "sorted-set", "Pops the highest members.", Write(zset::zpopmax)),
    cmd!("zpopmin", -2, ["write", "fast"], 1, 1, 1, "sorted-set", "Pops the lowest members.", Write(zset::zpopmin)),
    cmd!("zrandmember", -2, ["readonly"], 1, 1, 1, "sorted-set", "Returns random members.", Read(zset::zrandmember)),
    cmd!("zrange", -4, ["readonly"], 1, 1, 1, "sorted-set", "Returns members by rank, score or lex range.", Read(zset::zrange)),
    cmd!("zrangebylex", -4, ["readonly"], 1, 1, 1, "sorted-set", "Returns members in a lex range.", Read(zset::zrangebylex)),
    cmd!("zrangebyscore", -4, ["readonly"], 1, 1, 1, "sorted-set", "Returns members in a score range.", Read(zset::zrangebyscore)),
    cmd!("zrangestore", -5, ["write", "denyoom"], 1, 2, 1, "sorted-set", "Stores a ZRANGE result in a key.", Write(zset::zrangestore)),
    cmd!("zrank", -3, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Returns the rank of a member.", Read(zset::zrank)),
    cmd!("zrem", -3, ["write", "fast"], 1, 1, 1, "sorted-set", "Removes members.", Write(zset::zrem)),
    cmd!("zremrangebylex", 4, ["write"], 1, 1, 1, "sorted-set", "Removes members in a lex range.", Write(zset::zremrangebylex)),
    cmd!("zremrangebyrank", 4, ["write"], 1, 1, 1, "sorted-set", "Removes members in a rank range.", Write(zset::zremrangebyrank)),
    cmd!("zremrangebyscore", 4, ["write"], 1, 1, 1, "sorted-set", "Removes members in a score range.", Write(zset::zremrangebyscore)),
    cmd!("zrevrange", -4, ["readonly"], 1, 1, 1, "sorted-set", "Returns members by rank, highest first.", Read(zset::zrevrange)),
    cmd!("zrevrangebylex", -4, ["readonly"], 1, 1, 1, "sorted-set", "Returns members in a lex range, highest first.", Read(zset::zrevrangebylex)),
    cmd!("zrevrangebyscore", -4, ["readonly"], 1, 1, 1, "sorted-set", "Returns members in a score range, highest first.", Read(zset::zrevrangebyscore)),
    cmd!("zrevrank", -3, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Returns the rank of a member, highest first.", Read(zset::zrevrank)),
    cmd!("zscan", -3, ["readonly"], 1, 1, 1, "sorted-set", "Iterates over the members and scores of a sorted set.", Read(zset::zscan)),
    cmd!("zscore", 3, ["readonly", "fast"], 1, 1, 1, "sorted-set", "Returns the score of a member.", Read(zset::zscore)),
    cmd!("zunion", -3, ["readonly"], 0, 0, 0, "sorted-set", "Union of sorted sets.", Read(zset::zunion)),
    cmd!("zunionstore", -4, ["write", "denyoom"], 1, 1, 1, "sorted-set", "Stores ZUNION in a key.", Write(zset::zunionstore)),
];

/// Finds a command by name, case-insensitively.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if name.len() > COMMAND_NAME_BYTES_MAX {
        return None;
    }
    let mut buf = [0u8; COMMAND_NAME_BYTES_MAX];
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    COMMANDS.binary_search_by(|c| c.name.as_bytes().cmp(lower)).ok().map(|i| &COMMANDS[i])
}

// ---------------------------------------------------------------- replies

/// `+OK`.
pub fn ok() -> Frame {
    Frame::Simple("OK".into())
}

/// An error reply; `msg` starts with its code (`ERR`, `WRONGTYPE`, ...).
pub fn error(msg: impl Into<String>) -> Frame {
    Frame::Error(msg.into())
}

/// The error for a wrong argument count, in Redis's words.
pub fn wrong_arity(name: &str) -> Frame {
    error(format!("ERR wrong number of arguments for '{name}' command"))
}

/// The error for an unknown command, in Redis's words.
pub fn unknown_command(args: &[Bytes]) -> Frame {
    let name = String::from_utf8_lossy(args.first().map(|a| &a[..]).unwrap_or(b""));
    let mut msg = format!("ERR unknown command '{}', with args beginning with: ", truncate(&name, 128));
    for a in args.iter().skip(1).take(16) {
        msg.push_str(&format!("'{}' ", truncate(&String::from_utf8_lossy(a), 128)));
    }
    error(msg)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn bulk(b: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(b))
}

fn int(i: i64) -> Frame {
    Frame::Integer(i)
}

/// Parses a Redis integer argument strictly (no spaces, no `+`, no leading
/// zeros), like Redis's `string2ll`.
pub fn parse_i64(b: &[u8]) -> Option<i64> {
    if b.is_empty() || b.len() > 20 {
        return None;
    }
    let (neg, digits) = match b[0] {
        b'-' => (true, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() || (digits[0] == b'0' && (digits.len() > 1 || neg)) {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = (d - b'0') as i64;
        v = v.checked_mul(10)?;
        v = if neg { v.checked_sub(digit)? } else { v.checked_add(digit)? };
    }
    Some(v)
}

// ---------------------------------------------------------- read commands

fn echo(_: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    Frame::Bulk(args[1].clone())
}

fn dbsize(cx: &ReadCtx<'_>, _: &[Bytes]) -> Frame {
    int(cx.store.len() as i64)
}

fn get_string<'a>(cx: &'a ReadCtx<'_>, key: &[u8]) -> Result<Option<&'a [u8]>, Frame> {
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::Str(v), _)) => Ok(Some(v)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

fn get(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    match get_string(cx, &args[1]) {
        Ok(Some(v)) => bulk(v),
        Ok(None) => Frame::Null,
        Err(e) => e,
    }
}

fn mget(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    Frame::Array(
        args[1..]
            .iter()
            .map(|k| match cx.store.get(k, cx.now_ms) {
                Some((ValueRef::Str(v), _)) => bulk(v),
                _ => Frame::Null,
            })
            .collect(),
    )
}

fn strlen(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    match get_string(cx, &args[1]) {
        Ok(v) => int(v.map_or(0, |v| v.len() as i64)),
        Err(e) => e,
    }
}

fn exists(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(args[1..].iter().filter(|k| cx.store.get(k, cx.now_ms).is_some()).count() as i64)
}

fn pttl_ms(cx: &ReadCtx<'_>, key: &[u8]) -> i64 {
    match cx.store.get(key, cx.now_ms) {
        None => -2,
        Some((_, None)) => -1,
        Some((_, Some(at))) => (at - cx.now_ms) as i64,
    }
}

fn ttl(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    match pttl_ms(cx, &args[1]) {
        ms if ms < 0 => int(ms),
        ms => int((ms + 500) / 1000),
    }
}

fn pttl(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    int(pttl_ms(cx, &args[1]))
}

fn type_(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let name = cx.store.get(&args[1], cx.now_ms).map_or("none", |(v, _)| v.type_name());
    Frame::Simple(name.into())
}

fn keys(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = cx.store.scan(cursor, usize::MAX, cx.now_ms, |k| {
            if glob_match(&args[1], k) {
                out.push(bulk(k));
            }
        });
        if cursor == 0 {
            break;
        }
    }
    Frame::Array(out)
}

/// Largest `COUNT` honoured by `SCAN` (bounds the work of one call).
const SCAN_COUNT_MAX: usize = 100_000;

fn scan(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    let Some(cursor) = std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<u64>().ok()) else {
        return error("ERR invalid cursor");
    };
    let (mut pattern, mut count, mut type_filter): (Option<&Bytes>, usize, Option<String>) = (None, 10, None);
    let mut i = 2;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        let Some(val) = args.get(i + 1) else { return error(SYNTAX) };
        match &opt[..] {
            b"match" => pattern = Some(val),
            b"count" => match parse_i64(val) {
                Some(n) if n >= 1 => count = (n as usize).min(SCAN_COUNT_MAX),
                Some(_) => return error(SYNTAX),
                None => return error(NOT_INTEGER),
            },
            b"type" => type_filter = Some(String::from_utf8_lossy(val).to_ascii_lowercase()),
            _ => return error(SYNTAX),
        }
        i += 2;
    }
    let mut out = Vec::new();
    let next = cx.store.scan(cursor, count, cx.now_ms, |k| {
        if pattern.is_some_and(|p| !glob_match(p, k)) {
            return;
        }
        if let Some(t) = &type_filter {
            if cx.store.get(k, cx.now_ms).map(|(v, _)| v.type_name()) != Some(t.as_str()) {
                return;
            }
        }
        out.push(bulk(k));
    });
    Frame::Array(vec![Frame::Bulk(Bytes::from(next.to_string())), Frame::Array(out)])
}

fn with_set(cx: &ReadCtx<'_>, key: &[u8], f: impl FnOnce(Option<&crate::store::SetValue>) -> Frame) -> Frame {
    match cx.store.get(key, cx.now_ms) {
        None => f(None),
        Some((ValueRef::Set(s), _)) => f(Some(s)),
        Some(_) => error(WRONGTYPE),
    }
}

fn smembers(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    with_set(cx, &args[1], |s| {
        let members = s.map(|s| s.iter().map(|m| bulk(m)).collect()).unwrap_or_default();
        Frame::Set(members)
    })
}

fn sismember(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    with_set(cx, &args[1], |s| int(s.is_some_and(|s| s.contains(&args[2][..])) as i64))
}

fn scard(cx: &ReadCtx<'_>, args: &[Bytes]) -> Frame {
    with_set(cx, &args[1], |s| int(s.map_or(0, |s| s.len() as i64)))
}

// --------------------------------------------------------- write commands

/// Options of `SET`.
#[derive(Default)]
struct SetOptions {
    only_if_missing: bool,
    only_if_present: bool,
    return_old: bool,
    keep_ttl: bool,
    expire_at_ms: Option<u64>,
}

fn parse_set_options(now_ms: u64, args: &[Bytes]) -> Result<SetOptions, Frame> {
    let mut o = SetOptions::default();
    let mut expiry_given = false;
    let mut i = 0;
    while i < args.len() {
        let opt = args[i].to_ascii_lowercase();
        match &opt[..] {
            b"nx" if !o.only_if_present => o.only_if_missing = true,
            b"xx" if !o.only_if_missing => o.only_if_present = true,
            b"get" => o.return_old = true,
            b"keepttl" if !expiry_given => o.keep_ttl = true,
            b"ex" | b"px" | b"exat" | b"pxat" if !expiry_given && !o.keep_ttl => {
                let Some(raw) = args.get(i + 1) else { return Err(error(SYNTAX)) };
                let n = parse_i64(raw).ok_or_else(|| error(NOT_INTEGER))?;
                let invalid = || error("ERR invalid expire time in 'set' command");
                if n <= 0 {
                    return Err(invalid());
                }
                let n = n as u64;
                let at = match &opt[..] {
                    b"ex" => n.checked_mul(1000).and_then(|ms| ms.checked_add(now_ms)),
                    b"px" => n.checked_add(now_ms),
                    b"exat" => n.checked_mul(1000),
                    _ => Some(n),
                };
                o.expire_at_ms = Some(at.filter(|&at| at < i64::MAX as u64).ok_or_else(invalid)?);
                expiry_given = true;
                i += 1;
            }
            _ => return Err(error(SYNTAX)),
        }
        i += 1;
    }
    Ok(o)
}

fn set(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let opts = match parse_set_options(cx.now_ms, &args[3..]) {
        Ok(o) => o,
        Err(e) => return e,
    };
    let key = &args[1];
    cx.purge_expired(key);
    let (old, old_expiry) = match cx.store.get(key, cx.now_ms) {
        None => (None, None),
        Some((ValueRef::Str(v), exp)) => (Some(Bytes::copy_from_slice(v)), exp),
        Some((_, exp)) => {
            if opts.return_old {
                return error(WRONGTYPE);
            }
            (None, exp)
        }
    };
    let exists = cx.store.get(key, cx.now_ms).is_some();
    let reply_skipped = || if opts.return_old { old.clone().map_or(Frame::Null, Frame::Bulk) } else { Frame::Null };
    if (opts.only_if_missing && exists) || (opts.only_if_present && !exists) {
        return reply_skipped();
    }
    let expire_at_ms = if opts.keep_ttl { old_expiry } else { opts.expire_at_ms };
    // An absolute expiry already in the past (EXAT/PXAT): the key is gone.
    if expire_at_ms.is_some_and(|at| at <= cx.now_ms) {
        if exists {
            cx.emit(Effect::Del { key: key.clone() });
        }
    } else {
        cx.emit(Effect::Set { key: key.clone(), value: args[2].clone(), expire_at_ms });
    }
    if opts.return_old {
        old.map_or(Frame::Null, Frame::Bulk)
    } else {
        ok()
    }
}

fn setnx(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    cx.purge_expired(&args[1]);
    if cx.store.get(&args[1], cx.now_ms).is_some() {
        return int(0);
    }
    cx.emit(Effect::Set { key: args[1].clone(), value: args[2].clone(), expire_at_ms: None });
    int(1)
}

fn mset(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    if args.len().is_multiple_of(2) {
        return wrong_arity("mset");
    }
    for pair in args[1..].chunks(2) {
        cx.emit(Effect::Set { key: pair[0].clone(), value: pair[1].clone(), expire_at_ms: None });
    }
    ok()
}

fn getdel(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    cx.purge_expired(&args[1]);
    let reply = get(&cx.read(), args);
    if matches!(reply, Frame::Bulk(_)) {
        cx.emit(Effect::Del { key: args[1].clone() });
    }
    reply
}

fn del(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let mut deleted = 0;
    for key in &args[1..] {
        cx.purge_expired(key);
        if cx.store.get(key, cx.now_ms).is_some() {
            cx.emit(Effect::Del { key: key.clone() });
            deleted += 1;
        }
    }
    int(deleted)
}

fn incr_by(cx: &mut WriteCtx<'_>, key: &Bytes, delta: i64) -> Frame {
    cx.purge_expired(key);
    let (current, expiry) = match cx.store.get(key, cx.now_ms) {
        None => (0, None),
        Some((ValueRef::Str(v), exp)) => match parse_i64(v) {
            Some(n) => (n, exp),
            None => return error(NOT_INTEGER),
        },
        Some(_) => return error(WRONGTYPE),
    };
    let Some(next) = current.checked_add(delta) else {
        return error("ERR increment or decrement would overflow");
    };
    // Row effect: the resulting integer, never "add delta".
    cx.emit(Effect::Set { key: key.clone(), value: Bytes::from(next.to_string()), expire_at_ms: expiry });
    int(next)
}

fn incr(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    incr_by(cx, &args[1], 1)
}

fn decr(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    incr_by(cx, &args[1], -1)
}

fn incrby(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    match parse_i64(&args[2]) {
        Some(d) => incr_by(cx, &args[1], d),
        None => error(NOT_INTEGER),
    }
}

fn decrby(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    match parse_i64(&args[2]).and_then(i64::checked_neg) {
        Some(d) => incr_by(cx, &args[1], d),
        None => error(NOT_INTEGER),
    }
}

fn append(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let key = &args[1];
    cx.purge_expired(key);
    let (mut value, expiry) = match cx.store.get(key, cx.now_ms) {
        None => (Vec::new(), None),
        Some((ValueRef::Str(v), exp)) => (v.to_vec(), exp),
        Some(_) => return error(WRONGTYPE),
    };
    if value.len() + args[2].len() > STRING_BYTES_MAX {
        return error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
    }
    value.extend_from_slice(&args[2]);
    let len = value.len() as i64;
    cx.emit(Effect::Set { key: key.clone(), value: Bytes::from(value), expire_at_ms: expiry });
    int(len)
}

/// Conditions of the `EXPIRE` family (Redis 7).
#[derive(Default)]
struct ExpireCondition {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn expire_generic(
    cx: &mut WriteCtx<'_>,
    args: &[Bytes],
    name: &str,
    to_abs_ms: impl Fn(i64, u64) -> Option<i64>,
) -> Frame {
    let Some(n) = parse_i64(&args[2]) else { return error(NOT_INTEGER) };
    let mut cond = ExpireCondition::default();
    for opt in &args[3..] {
        match &opt.to_ascii_lowercase()[..] {
            b"nx" => cond.nx = true,
            b"xx" => cond.xx = true,
            b"gt" => cond.gt = true,
            b"lt" => cond.lt = true,
            _ => return error(format!("ERR Unsupported option {}", String::from_utf8_lossy(opt))),
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return error("ERR NX and XX, GT or LT options at the same time are not compatible");
    }
    if cond.gt && cond.lt {
        return error("ERR GT and LT options at the same time are not compatible");
    }
    // Only an overflow of the computation is an error (Redis): an absolute
    // time far in the future, such as `PEXPIREAT k 9223372036854770000`,
    // is a valid expiry.
    let Some(at) = to_abs_ms(n, cx.now_ms) else {
        return error(format!("ERR invalid expire time in '{name}' command"));
    };
    let key = &args[1];
    cx.purge_expired(key);
    let Some((_, current)) = cx.store.get(key, cx.now_ms) else { return int(0) };
    // A missing expiry counts as infinite for GT / LT, as in Redis.
    let allowed = match current {
        None => !cond.xx && !cond.gt,
        Some(cur) => !cond.nx && (!cond.gt || at > cur as i64) && (!cond.lt || at < cur as i64),
    };
    if !allowed {
        return int(0);
    }
    if at <= cx.now_ms as i64 {
        cx.emit(Effect::Del { key: key.clone() });
    } else {
        cx.emit(Effect::Expire { key: key.clone(), expire_at_ms: Some(at as u64) });
    }
    int(1)
}

fn expire(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    expire_generic(cx, args, "expire", |n, now| n.checked_mul(1000)?.checked_add(now as i64))
}

fn pexpire(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    expire_generic(cx, args, "pexpire", |n, now| n.checked_add(now as i64))
}

fn expireat(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    expire_generic(cx, args, "expireat", |n, _| n.checked_mul(1000))
}

fn pexpireat(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    expire_generic(cx, args, "pexpireat", |n, _| Some(n))
}

fn persist(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    cx.purge_expired(&args[1]);
    match cx.store.get(&args[1], cx.now_ms) {
        Some((_, Some(_))) => {
            cx.emit(Effect::Expire { key: args[1].clone(), expire_at_ms: None });
            int(1)
        }
        _ => int(0),
    }
}

fn flushall(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    match args.get(1).map(|a| a.to_ascii_lowercase()) {
        None => {}
        Some(m) if m == b"sync" || m == b"async" => {}
        Some(_) => return error(SYNTAX),
    }
    if args.len() > 2 {
        return error(SYNTAX);
    }
    cx.emit(Effect::FlushAll);
    ok()
}

fn set_members_checked<'c>(cx: &'c mut WriteCtx<'_>, key: &Bytes) -> Result<Option<&'c crate::store::SetValue>, Frame> {
    cx.purge_expired(key);
    match cx.store.get(key, cx.now_ms) {
        None => Ok(None),
        Some((ValueRef::Set(s), _)) => Ok(Some(s)),
        Some(_) => Err(error(WRONGTYPE)),
    }
}

fn sadd(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let key = &args[1];
    let existing = match set_members_checked(cx, key) {
        Ok(s) => s,
        Err(e) => return e,
    };
    // Deduplicate with a set: a command may carry up to ARRAY_LEN_MAX members.
    let mut seen = hashbrown::HashSet::with_capacity(args.len() - 2);
    let mut new: Vec<Bytes> = Vec::new();
    for m in &args[2..] {
        if !existing.is_some_and(|s| s.contains(&m[..])) && seen.insert(&m[..]) {
            new.push(m.clone());
        }
    }
    let added = new.len() as i64;
    if !new.is_empty() {
        cx.emit(Effect::SAdd { key: key.clone(), members: new });
    }
    int(added)
}

fn srem(cx: &mut WriteCtx<'_>, args: &[Bytes]) -> Frame {
    let key = &args[1];
    let existing = match set_members_checked(cx, key) {
        Ok(Some(s)) => s,
        Ok(None) => return int(0),
        Err(e) => return e,
    };
    let mut seen = hashbrown::HashSet::with_capacity(args.len() - 2);
    let mut gone: Vec<Bytes> = Vec::new();
    for m in &args[2..] {
        if existing.contains(&m[..]) && seen.insert(&m[..]) {
            gone.push(m.clone());
        }
    }
    let removed = gone.len() as i64;
    if !gone.is_empty() {
        cx.emit(Effect::SRem { key: key.clone(), members: gone });
    }
    int(removed)
}

#[cfg(test)]
mod tests;
