//! Lua scripting (`EVAL`, `EVALSHA`, `EVAL_RO`, `EVALSHA_RO`): runs one
//! script on an embedded Lua 5.1 (`mlua`, vendored) against the store.
//!
//! Owns: the sandbox a script runs in (base, `table`, `string` and `math`
//! only; no `os`, `io`, `dofile`, `loadfile`, `load`, no bytecode through
//! `loadstring`; globals read-only, a read of a missing global is an
//! error; `math.random` drawn from a seed the caller passes), the `redis`
//! library (`call`, `pcall`, `error_reply`, `status_reply`, `sha1hex`,
//! `log`, `setresp`), Redis's Lua <-> RESP conversion rules, and the
//! all-or-nothing outcome: every `redis.call` write runs through the
//! caller's one write [`Batch`], so the script's row effects become ONE log
//! entry; a script that raises an error, is killed or runs past its time
//! limit is undone whole (decision 0025). Only effects are logged, never
//! the script, so `TIME`, `SRANDMEMBER` or `SPOP` in a script replay
//! identically on followers.
//!
//! Must never: read a clock or a global RNG (the caller passes `now_ms`, a
//! seed and an `interrupt` check that may read one), touch a socket or a
//! file, keep Lua state between scripts, or let an effect reach the store
//! outside the batch.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use mlua::chunk::ChunkMode;
use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, Variadic, VmState};

use crate::command::{self, CommandSpec, Handler, ReadCtx};
use crate::resp::Frame;
use crate::store::Store;
use crate::write::Batch;

/// Largest script body accepted by `EVAL` / `SCRIPT LOAD`.
pub const SCRIPT_BYTES_MAX: usize = 4 << 20;
/// Most `KEYS` plus `ARGV` entries one script call may pass.
pub const SCRIPT_ARGS_MAX: usize = 100_000;
/// Most memory one script's Lua state may allocate; past it the script
/// fails with Lua's "not enough memory" and is undone.
pub const SCRIPT_MEMORY_BYTES_MAX: usize = 256 << 20;
/// Lua VM instructions between two `interrupt` checks (time limit, `SCRIPT
/// KILL`).
pub const SCRIPT_HOOK_INSTRUCTIONS: u32 = 10_000;
/// Deepest nested table a script may return (deeper levels become nil).
pub const SCRIPT_REPLY_DEPTH_MAX: usize = 1_000;
/// Most `redis.log` lines one script may hand back to the node.
pub const SCRIPT_LOG_LINES_MAX: usize = 1_000;

/// `EVALSHA` of a script this node has not cached.
pub const NOSCRIPT: &str = "NOSCRIPT No matching script. Please use EVAL.";

/// The lower-case hex SHA1 of `body` (the name of a cached script).
pub fn sha1_hex(body: &[u8]) -> String {
    sha1_smol::Sha1::from(body).digest().to_string()
}

/// Compiles `body` without running it (`SCRIPT LOAD` reports a syntax
/// error at once, as Redis does).
pub fn compile_check(body: &[u8]) -> Result<(), String> {
    let lua = new_state(0).map_err(|e| format!("ERR cannot start the Lua interpreter: {e}"))?;
    lua.load(body)
        .set_name("@user_script")
        .set_mode(ChunkMode::Text)
        .into_function()
        .map(|_| ())
        .map_err(|e| format!("ERR Error compiling script (new function): {}", lua_error_text(&e)))
}

/// Where the script's `redis.call`s go.
pub enum Target<'a> {
    /// A script that may write: reads and writes hit `store`, writes are
    /// charged to `batch` (the caller commits or it was undone).
    Write {
        /// The keyspace.
        store: &'a mut Store,
        /// The write in progress (starts empty).
        batch: &'a mut Batch,
    },
    /// A read-only script (`EVAL_RO`, or any script on a follower): a
    /// write command answers `refusal` (as an error raised in the script).
    Read {
        /// The keyspace.
        store: &'a Store,
        /// The error a write command gets, e.g. `READONLY ...`.
        refusal: String,
    },
}

/// Checks a command's keys before it runs: `Err(text)` refuses it (e.g.
/// `CROSSSLOT`, or a key of a multi-leader keyspace).
pub type KeyCheck<'a> = &'a dyn Fn(&CommandSpec, &[Bytes]) -> Result<(), String>;
/// Polled every [`SCRIPT_HOOK_INSTRUCTIONS`] instructions and before each
/// `redis.call`: `Some(error text)` aborts the script (time limit passed,
/// `SCRIPT KILL`).
pub type Interrupt = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the script runs with besides its target.
pub struct Env<'a> {
    /// Current time, unix ms (`TIME`, expiries).
    pub now_ms: u64,
    /// Seed of `math.random` (and of nothing else).
    pub seed: u64,
    /// Key routing check for every `redis.call`.
    pub key_check: KeyCheck<'a>,
    /// Abort check (time limit, kill).
    pub interrupt: Interrupt,
}

/// A log line the script asked for (`redis.log`), for the node to emit.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// 0 debug, 1 verbose, 2 notice, 3 warning.
    pub level: u8,
    /// The text.
    pub message: String,
}

/// What running a script produced.
#[derive(Debug)]
pub struct Outcome {
    /// The reply to the client.
    pub reply: Frame,
    /// True if the script failed (raised, killed, timed out, over the write
    /// budget): with a [`Target::Write`] every effect was undone.
    pub failed: bool,
    /// `redis.log` lines, in order.
    pub log: Vec<LogLine>,
}

/// Runs `body` with `KEYS` = `keys`, `ARGV` = `argv`. With a
/// [`Target::Write`], on success the effects stay in the batch for the
/// caller to log as one entry; on failure they are already undone.
pub fn run(body: &[u8], sha: &str, keys: &[Bytes], argv: &[Bytes], target: Target<'_>, env: &Env<'_>) -> Outcome {
    let (store_mut, batch, read_store, refusal): (Option<&mut Store>, Option<&mut Batch>, Option<&Store>, String) =
        match target {
            Target::Write { store, batch } => (Some(store), Some(batch), None, String::new()),
            Target::Read { store, refusal } => (None, None, Some(store), refusal),
        };
    let host = Host {
        store_mut: RefCell::new(store_mut),
        batch: RefCell::new(batch),
        read_store,
        refusal,
        env,
        resp3: Cell::new(false),
        log: RefCell::new(Vec::new()),
        fatal: RefCell::new(None),
    };
    let result = host.execute(body, sha, keys, argv);
    let Host { store_mut, batch, log, fatal, .. } = host;
    let (reply, failed) = match (fatal.into_inner(), result) {
        // A kill, the time limit or a refused write wins over whatever the
        // script did with the error afterwards (pcall cannot swallow them).
        (Some(e), _) => (Frame::Error(e), true),
        (None, Ok(reply)) => (reply, false),
        (None, Err(e)) => (Frame::Error(e), true),
    };
    if failed {
        if let (Some(store), Some(batch)) = (store_mut.into_inner(), batch.into_inner()) {
            batch.rollback(store);
        }
    }
    Outcome { reply, failed, log: log.into_inner() }
}

/// The state the `redis` library's callbacks share during one run.
struct Host<'s, 'e> {
    store_mut: RefCell<Option<&'s mut Store>>,
    batch: RefCell<Option<&'s mut Batch>>,
    read_store: Option<&'s Store>,
    refusal: String,
    env: &'s Env<'e>,
    resp3: Cell<bool>,
    log: RefCell<Vec<LogLine>>,
    /// An error no `pcall` may swallow: the script is over.
    fatal: RefCell<Option<String>>,
}

/// The Lua error a script's uncaught `error("text")` becomes.
fn script_error(message: &str, sha: &str) -> String {
    let message = message.trim();
    // Keep an error code the script chose (`error({err="MY code"})` is
    // handled as a reply table; a plain string gets Redis's ERR prefix).
    format!("ERR {message} script: {sha}, on @user_script.")
}

impl Host<'_, '_> {
    fn execute(&self, body: &[u8], sha: &str, keys: &[Bytes], argv: &[Bytes]) -> Result<Frame, String> {
        let lua = new_state(self.env.seed).map_err(|e| format!("ERR cannot start the Lua interpreter: {e}"))?;
        let fatal_hook: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
        let interrupt = self.env.interrupt.clone();
        let seen = fatal_hook.clone();
        lua.set_hook(
            HookTriggers::new().every_nth_instruction(SCRIPT_HOOK_INSTRUCTIONS),
            move |_, _| match interrupt() {
                Some(e) => {
                    seen.borrow_mut().get_or_insert(e.clone());
                    Err(mlua::Error::RuntimeError(e))
                }
                None => Ok(VmState::Continue),
            },
        )
        .map_err(|e| format!("ERR {e}"))?;
        let result = lua.scope(|scope| {
            let redis: Table = lua.globals().get("redis")?;
            redis.set("pcall", scope.create_function(|lua, args: Variadic<Value>| self.call(lua, args))?)?;
            redis.set(
                "setresp",
                scope.create_function(|_, v: Value| match v {
                    Value::Integer(2) => {
                        self.resp3.set(false);
                        Ok(())
                    }
                    Value::Integer(3) => {
                        self.resp3.set(true);
                        Ok(())
                    }
                    _ => Err(mlua::Error::RuntimeError("RESP version must be 2 or 3.".into())),
                })?,
            )?;
            redis.set(
                "log",
                scope.create_function(|_, args: Variadic<Value>| {
                    let level = match args.first() {
                        Some(Value::Integer(l)) if (0..=3).contains(l) => *l as u8,
                        Some(Value::Number(l)) if (0.0..=3.0).contains(l) => *l as u8,
                        _ => return Err(mlua::Error::RuntimeError("Invalid debug level.".into())),
                    };
                    if args.len() < 2 {
                        return Err(mlua::Error::RuntimeError("redis.log() requires two arguments or more.".into()));
                    }
                    let parts: Vec<String> =
                        args[1..].iter().map(|v| lossy(&arg_bytes(v).unwrap_or_default())).collect();
                    let mut log = self.log.borrow_mut();
                    if log.len() < SCRIPT_LOG_LINES_MAX {
                        log.push(LogLine { level, message: parts.join(" ") });
                    }
                    Ok(())
                })?,
            )?;
            let globals = lua.globals();
            globals.set(
                "KEYS",
                lua.create_sequence_from(keys.iter().map(|k| lua.create_string(k)).collect::<mlua::Result<Vec<_>>>()?)?,
            )?;
            globals.set(
                "ARGV",
                lua.create_sequence_from(argv.iter().map(|a| lua.create_string(a)).collect::<mlua::Result<Vec<_>>>()?)?,
            )?;
            // Globals are read-only through the script's environment: a
            // proxy whose reads fall through to the real globals.
            let env: Table = lua.load(PROTECT_GLOBALS).set_name("=protect").call(globals)?;
            let f = match lua
                .load(body)
                .set_name("@user_script")
                .set_mode(ChunkMode::Text)
                .set_environment(env)
                .into_function()
            {
                Ok(f) => f,
                Err(e) => return Ok(Err(format!("ERR Error compiling script (new function): {}", lua_error_text(&e)))),
            };
            let runner: mlua::Function = lua.load(RUNNER).set_name("=runner").eval()?;
            let (ok, value): (bool, Value) = runner.call(f)?;
            if ok {
                Ok(Ok(lua_to_frame(&value, 0)))
            } else {
                Ok(Err(match value {
                    Value::Table(t) => match t.raw_get::<Value>("err")? {
                        Value::String(s) => lossy(&s.as_bytes()),
                        _ => script_error("unknown error", sha),
                    },
                    Value::String(s) => script_error(&lossy(&s.as_bytes()), sha),
                    Value::Error(e) => script_error(&lua_error_text(&e), sha),
                    other => script_error(&format!("{other:?}"), sha),
                }))
            }
        });
        if let Some(e) = fatal_hook.borrow_mut().take() {
            self.fatal.borrow_mut().get_or_insert(e);
        }
        match result {
            Ok(r) => r,
            Err(e) => Err(script_error(&lua_error_text(&e), sha)),
        }
    }

    /// `redis.pcall`: runs one command; an error reply becomes a table
    /// `{err=..}` (`redis.call`, in Lua, raises it). Only a fatal error (kill,
    /// time limit, write budget) is raised from here.
    fn call(&self, lua: &Lua, args: Variadic<Value>) -> mlua::Result<Value> {
        if let Some(e) = self.fatal.borrow().clone() {
            return Err(mlua::Error::RuntimeError(e));
        }
        if let Some(e) = (self.env.interrupt)() {
            self.fatal.borrow_mut().get_or_insert(e.clone());
            return Err(mlua::Error::RuntimeError(e));
        }
        let reply = match args.iter().map(arg_bytes).collect::<Option<Vec<Bytes>>>() {
            None => Frame::Error("ERR Lua redis lib command arguments must be strings or integers".into()),
            Some(argv) => self.dispatch(&argv),
        };
        if let Some(e) = self.fatal.borrow().clone() {
            return Err(mlua::Error::RuntimeError(e));
        }
        frame_to_lua(lua, &reply, self.resp3.get())
    }

    fn dispatch(&self, args: &[Bytes]) -> Frame {
        let Some(first) = args.first() else {
            return Frame::Error("ERR Please specify at least one argument for this redis lib call".into());
        };
        let now_ms = self.env.now_ms;
        if first.eq_ignore_ascii_case(b"time") && args.len() == 1 {
            // The caller's clock: the script's writes carry what it saw, and
            // only they are logged.
            return Frame::Array(vec![
                Frame::Bulk(Bytes::from((now_ms / 1000).to_string())),
                Frame::Bulk(Bytes::from(((now_ms % 1000) * 1000).to_string())),
            ]);
        }
        let Some(spec) = command::lookup(first) else {
            return Frame::Error("ERR Unknown Redis command called from script".into());
        };
        if !spec.arity_ok(args.len()) {
            return Frame::Error("ERR Wrong number of args calling Redis command from script".into());
        }
        match spec.name {
            "ping" if args.len() <= 2 => {
                return args.get(1).map_or(Frame::simple("PONG"), |m| Frame::Bulk(m.clone()));
            }
            _ => {}
        }
        if spec.flags.contains(crate::command::Flags::NOSCRIPT) || matches!(spec.handler, Handler::Node) {
            return Frame::Error("ERR This Redis command is not allowed from script".into());
        }
        if spec.has_keys() {
            if let Err(e) = (self.env.key_check)(spec, args) {
                return Frame::Error(e);
            }
        }
        match spec.handler {
            Handler::Read(f) => match self.read_store {
                Some(store) => f(&ReadCtx { store, now_ms }, args),
                None => {
                    let store = self.store_mut.borrow();
                    f(&ReadCtx { store: store.as_deref().expect("a write target has a store"), now_ms }, args)
                }
            },
            Handler::Write(f) => {
                let mut store = self.store_mut.borrow_mut();
                let mut batch = self.batch.borrow_mut();
                let (Some(store), Some(batch)) = (store.as_deref_mut(), batch.as_deref_mut()) else {
                    return Frame::Error(self.refusal.clone());
                };
                let reply = crate::write::run(f, store, now_ms, args, batch);
                if let Some(e) = batch.refusal() {
                    // Over the write budget: the whole script is undone.
                    self.fatal.borrow_mut().get_or_insert(e);
                }
                reply
            }
            Handler::Node => unreachable!("refused above"),
        }
    }
}

/// Calls the script function under `pcall`: an uncaught error comes back
/// as a value (a `redis.call` error is its `{err=..}` table).
const RUNNER: &str = r#"
return function(f)
  local ok, res = pcall(f)
  return ok, res
end
"#;

/// Builds the read-only environment of the script: reads fall through to
/// the globals, a missing one is an error; writes are refused.
const PROTECT_GLOBALS: &str = r#"
local g = ...
local env = {}
setmetatable(env, {
  __index = function(_, k)
    local v = rawget(g, k)
    if v == nil then
      error("Script attempted to access nonexistent global variable '" .. tostring(k) .. "'", 2)
    end
    return v
  end,
  __newindex = function(_, k)
    error("Attempt to modify a readonly table", 2)
  end,
  __metatable = false,
})
return env
"#;

/// A fresh sandboxed Lua state with the `redis` table (callbacks are set
/// per run) and a seeded `math.random`.
fn new_state(seed: u64) -> mlua::Result<Lua> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())?;
    lua.set_memory_limit(SCRIPT_MEMORY_BYTES_MAX)?;
    let g = lua.globals();
    for name in ["dofile", "loadfile", "load", "module", "require", "newproxy", "gcinfo"] {
        g.raw_set(name, Value::Nil)?;
    }
    let state = Rc::new(Cell::new(seed));
    let next = move || {
        // splitmix64: deterministic for a given seed.
        let mut z = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let math: Table = g.get("math")?;
    math.set(
        "random",
        lua.create_function(move |_, args: Variadic<i64>| {
            let r = (next() >> 11) as f64 / (1u64 << 53) as f64;
            match args.len() {
                0 => Ok(Value::Number(r)),
                1 if args[0] >= 1 => Ok(Value::Integer((r * args[0] as f64) as i64 + 1)),
                2 if args[0] <= args[1] => Ok(Value::Integer((r * (args[1] - args[0] + 1) as f64) as i64 + args[0])),
                _ => Err(mlua::Error::RuntimeError("bad argument to 'random' (interval is empty)".into())),
            }
        })?,
    )?;
    math.set("randomseed", lua.create_function(|_, _: Variadic<Value>| Ok(()))?)?;
    lua.load(REDIS_LIB).set_name("=redis_lib").exec()?;
    register_sha1(&lua)?;
    Ok(lua)
}

/// The parts of the `redis` library written in Lua, and the sandboxed
/// `loadstring` (text only).
const REDIS_LIB: &str = r#"
redis = {
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REDIS_VERSION = "7.0.15", REDIS_VERSION_NUM = 0x07000f,
}
local R = redis
function redis.call(...)
  local r = rawget(R, "pcall")(...)
  if type(r) == "table" and r.err ~= nil then error(r, 0) end
  return r
end
function redis.error_reply(msg)
  if type(msg) ~= "string" then error("wrong number or type of arguments", 2) end
  return { err = msg }
end
function redis.status_reply(msg)
  if type(msg) ~= "string" then error("wrong number or type of arguments", 2) end
  return { ok = msg }
end
local ls = loadstring
loadstring = function(s, name)
  if type(s) == "string" and string.byte(s, 1) == 27 then
    return nil, "loading precompiled bytecode is not allowed"
  end
  return ls(s, name)
end
"#;

/// Registers `redis.sha1hex` (pure Rust, no callback state).
fn register_sha1(lua: &Lua) -> mlua::Result<()> {
    let redis: Table = lua.globals().get("redis")?;
    redis.set(
        "sha1hex",
        lua.create_function(|_, v: Value| match arg_bytes(&v) {
            Some(b) => Ok(sha1_hex(&b)),
            None => Err(mlua::Error::RuntimeError("wrong number or type of arguments".into())),
        })?,
    )
}

/// The text of a Lua error without mlua's traceback decoration.
fn lua_error_text(e: &mlua::Error) -> String {
    match e {
        mlua::Error::RuntimeError(s) | mlua::Error::SyntaxError { message: s, .. } => s.clone(),
        mlua::Error::MemoryError(s) => format!("not enough memory: {s}"),
        mlua::Error::CallbackError { cause, .. } => lua_error_text(cause),
        mlua::Error::ExternalError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `redis.call` argument as bytes: strings as they are, numbers as Lua
/// prints them; anything else is refused (`None`).
fn arg_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::String(s) => Some(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Number(n) => Some(Bytes::from(number_text(*n))),
        _ => None,
    }
}

/// A Lua number as Lua 5.1 prints it (`%.14g`).
fn number_text(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 {
        return format!("{}", n as i64);
    }
    if n.is_nan() {
        return "nan".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let s = format!("{:.13e}", n);
    // Shortest of %.14g: trim the mantissa's trailing zeros.
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-5..14).contains(&exp) {
        let digits = (13 - exp).max(0) as usize;
        let t = format!("{:.*}", digits, n);
        let t = if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t };
        return t;
    }
    let mant = if mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
    format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
}

/// Lua -> RESP, Redis's rules: a number is an integer (truncated), a
/// string a bulk string, `true` the integer 1, `false` and `nil` a null
/// bulk, a table with `err` an error, with `ok` a status, any other table
/// an array up to its first nil; anything else a null.
pub fn lua_to_frame(v: &Value, depth: usize) -> Frame {
    match v {
        Value::Nil => Frame::Null,
        Value::Boolean(true) => Frame::Integer(1),
        Value::Boolean(false) => Frame::Null,
        Value::Integer(i) => Frame::Integer(*i),
        Value::Number(n) => Frame::Integer(if n.is_finite() { n.trunc() as i64 } else { 0 }),
        Value::String(s) => Frame::Bulk(Bytes::copy_from_slice(&s.as_bytes())),
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Frame::Error(lossy(&e.as_bytes()));
            }
            if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                return Frame::Simple(Bytes::from(lossy(&s.as_bytes()).replace(['\r', '\n'], " ")));
            }
            if let Ok(Value::Number(d)) = t.raw_get::<Value>("double") {
                return Frame::Double(d);
            }
            if depth >= SCRIPT_REPLY_DEPTH_MAX {
                return Frame::Null;
            }
            let mut out = Vec::new();
            for i in 1.. {
                match t.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(item) => out.push(lua_to_frame(&item, depth + 1)),
                }
            }
            Frame::Array(out)
        }
        Value::Error(e) => Frame::Error(format!("ERR {}", lua_error_text(e))),
        _ => Frame::Null,
    }
}

/// RESP -> Lua, Redis's rules (RESP2 unless `resp3`): an integer is a
/// number, a bulk string a string, a null `false` (RESP3: nil), a status a
/// table `{ok=..}`, an error a table `{err=..}`, an array a table; RESP2
/// flattens maps and sets into arrays and doubles into strings.
pub fn frame_to_lua(lua: &Lua, f: &Frame, resp3: bool) -> mlua::Result<Value> {
    Ok(match f {
        Frame::Integer(i) => Value::Integer(*i),
        Frame::Bulk(b) => Value::String(lua.create_string(b)?),
        Frame::Verbatim { text, .. } | Frame::BigNumber(text) => Value::String(lua.create_string(text)?),
        Frame::Null | Frame::NullArray => {
            if resp3 {
                Value::Nil
            } else {
                Value::Boolean(false)
            }
        }
        Frame::Simple(s) => {
            let t = lua.create_table()?;
            t.set("ok", lua.create_string(s)?)?;
            Value::Table(t)
        }
        Frame::Error(e) => {
            let t = lua.create_table()?;
            t.set("err", e.as_str())?;
            Value::Table(t)
        }
        Frame::Boolean(b) => {
            if resp3 {
                Value::Boolean(*b)
            } else {
                Value::Integer(*b as i64)
            }
        }
        Frame::Double(d) => {
            if resp3 {
                let t = lua.create_table()?;
                t.set("double", *d)?;
                Value::Table(t)
            } else {
                Value::String(lua.create_string(double_text(*d))?)
            }
        }
        Frame::Array(items) | Frame::Push(items) => seq(lua, items.iter(), resp3)?,
        Frame::Set(items) => {
            if resp3 {
                let set = lua.create_table()?;
                for item in items {
                    set.set(frame_to_lua(lua, item, resp3)?, true)?;
                }
                let t = lua.create_table()?;
                t.set("set", set)?;
                Value::Table(t)
            } else {
                seq(lua, items.iter(), resp3)?
            }
        }
        Frame::Map(pairs) => {
            if resp3 {
                let map = lua.create_table()?;
                for (k, v) in pairs {
                    map.set(frame_to_lua(lua, k, resp3)?, frame_to_lua(lua, v, resp3)?)?;
                }
                let t = lua.create_table()?;
                t.set("map", map)?;
                Value::Table(t)
            } else {
                seq(lua, pairs.iter().flat_map(|(k, v)| [k, v]), resp3)?
            }
        }
        Frame::Pairs(pairs) => {
            if resp3 {
                let t = lua.create_table()?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    let pair =
                        lua.create_sequence_from([frame_to_lua(lua, k, resp3)?, frame_to_lua(lua, v, resp3)?])?;
                    t.raw_set(i + 1, pair)?;
                }
                Value::Table(t)
            } else {
                seq(lua, pairs.iter().flat_map(|(k, v)| [k, v]), resp3)?
            }
        }
    })
}

/// A double as RESP2 sends it (a bulk string of its text).
fn double_text(d: f64) -> Bytes {
    let mut buf = bytes::BytesMut::new();
    crate::resp::encode(&Frame::Double(d), crate::resp::Protocol::Resp2, &mut buf);
    // `$<len>\r\n<text>\r\n`
    let text = buf[..].split(|&b| b == b'\n').nth(1).unwrap_or_default();
    Bytes::copy_from_slice(text.strip_suffix(b"\r").unwrap_or(text))
}

fn seq<'f>(lua: &Lua, items: impl Iterator<Item = &'f Frame>, resp3: bool) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    for (i, item) in items.enumerate() {
        t.raw_set(i + 1, frame_to_lua(lua, item, resp3)?)?;
    }
    Ok(Value::Table(t))
}

#[cfg(test)]
mod tests;
