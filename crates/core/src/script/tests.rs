//! The conversion rules, the sandbox and the all-or-nothing outcome of a
//! script, on a store without a node.

use super::*;
use crate::effect::Effect;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn no_check(_: &CommandSpec, _: &[Bytes]) -> Result<(), String> {
    Ok(())
}

fn env(interrupt: Interrupt) -> Env<'static> {
    Env { now_ms: 1_700_000_000_123, seed: 7, key_check: &no_check, interrupt }
}

fn never() -> Interrupt {
    Arc::new(|| None)
}

/// Runs `body` as a writing script; returns the outcome and the effects.
fn eval(store: &mut Store, body: &str, keys: &[&str], argv: &[&str]) -> (Outcome, Vec<Effect>) {
    let mut batch = Batch::new(1 << 20);
    let keys: Vec<Bytes> = keys.iter().map(|k| b(k)).collect();
    let argv: Vec<Bytes> = argv.iter().map(|a| b(a)).collect();
    let out = run(
        body.as_bytes(),
        &sha1_hex(body.as_bytes()),
        &keys,
        &argv,
        Target::Write { store, batch: &mut batch },
        &env(never()),
    );
    let effects = batch.effects().to_vec();
    (out, effects)
}

fn reply(body: &str) -> Frame {
    eval(&mut Store::new(1), body, &[], &[]).0.reply
}

#[test]
fn lua_values_convert_to_resp_by_redis_rules() {
    assert_eq!(reply("return 42"), Frame::Integer(42));
    assert_eq!(reply("return 3.99"), Frame::Integer(3), "numbers are truncated to integers");
    assert_eq!(reply("return -3.99"), Frame::Integer(-3));
    assert_eq!(reply("return 'hi'"), Frame::Bulk(b("hi")));
    assert_eq!(reply("return true"), Frame::Integer(1));
    assert_eq!(reply("return false"), Frame::Null);
    assert_eq!(reply("return nil"), Frame::Null);
    assert_eq!(
        reply("return {1, 'a', {2}}"),
        Frame::Array(vec![Frame::Integer(1), Frame::Bulk(b("a")), Frame::Array(vec![Frame::Integer(2)])])
    );
    assert_eq!(
        reply("return {1, 2, nil, 4}"),
        Frame::Array(vec![Frame::Integer(1), Frame::Integer(2)]),
        "arrays stop at the first nil"
    );
    assert_eq!(reply("return {ok='FINE'}"), Frame::Simple(b("FINE")));
    assert_eq!(reply("return {err='MYERR bad'}"), Frame::Error("MYERR bad".into()));
    assert_eq!(reply("return redis.status_reply('DONE')"), Frame::Simple(b("DONE")));
    assert_eq!(reply("return redis.error_reply('E1 nope')"), Frame::Error("E1 nope".into()));
    assert_eq!(reply("return {a=1}"), Frame::Array(vec![]), "a table without array part is an empty array");
}

#[test]
fn command_replies_convert_to_lua_by_redis_rules() {
    let mut store = Store::new(1);
    let body = "redis.call('set', 'k', 'v')
        local s = redis.call('set', 'k', 'v')
        local missing = redis.call('get', 'nope')
        local n = redis.call('incr', 'n')
        redis.call('sadd', 's', 'x')
        local m = redis.call('smembers', 's')
        local e = redis.pcall('incr', 'k')
        return {s.ok, tostring(missing), type(n), n, m[1], e.err}";
    let (out, _) = eval(&mut store, body, &[], &[]);
    assert_eq!(
        out.reply,
        Frame::Array(vec![
            Frame::Bulk(b("OK")),
            Frame::Bulk(b("false")),
            Frame::Bulk(b("number")),
            Frame::Integer(1),
            Frame::Bulk(b("x")),
            Frame::Bulk(b("ERR value is not an integer or out of range")),
        ])
    );
}

#[test]
fn keys_and_argv_are_tables_and_numbers_become_arguments() {
    let mut store = Store::new(1);
    let (out, effects) = eval(
        &mut store,
        "redis.call('set', KEYS[1], ARGV[1] + 1) return {#KEYS, #ARGV, redis.call('get', KEYS[1])}",
        &["k"],
        &["41", "x"],
    );
    assert_eq!(out.reply, Frame::Array(vec![Frame::Integer(1), Frame::Integer(2), Frame::Bulk(b("42"))]));
    assert_eq!(effects, vec![Effect::Set { key: b("k"), value: b("42"), expire_at_ms: None }]);
}

#[test]
fn every_write_of_a_script_joins_one_batch() {
    let mut store = Store::new(1);
    let (out, effects) = eval(
        &mut store,
        "redis.call('set','a','1') redis.call('set','b','2') redis.call('del','a') return 1",
        &[],
        &[],
    );
    assert!(!out.failed);
    assert_eq!(effects.len(), 3, "{effects:?}");
}

#[test]
fn a_script_that_raises_after_writing_is_undone_whole() {
    let mut store = Store::new(1);
    let (out, effects) = eval(
        &mut store,
        "redis.call('set','a','1') redis.call('incr','a') redis.call('incr', 'nonint-later') error('boom')",
        &[],
        &[],
    );
    assert!(out.failed);
    assert!(matches!(&out.reply, Frame::Error(e) if e.contains("boom")), "{:?}", out.reply);
    assert!(effects.is_empty(), "the batch was rolled back: {effects:?}");
    assert!(store.get(b"a", 0).is_none(), "the store is as before the script");
}

#[test]
fn an_uncaught_redis_call_error_is_the_reply_as_is() {
    let mut store = Store::new(1);
    let (out, effects) = eval(&mut store, "redis.call('set','s','x') redis.call('sadd','s','m') return 1", &[], &[]);
    assert!(out.failed);
    assert_eq!(out.reply, Frame::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into()));
    assert!(effects.is_empty());
    assert!(store.get(b"s", 0).is_none());
}

#[test]
fn a_caught_error_keeps_the_script_and_its_writes() {
    let mut store = Store::new(1);
    let body = "redis.call('set','a','x') local ok = pcall(redis.call, 'incr', 'a') return ok";
    let (out, effects) = eval(&mut store, body, &[], &[]);
    assert!(!out.failed);
    assert_eq!(out.reply, Frame::Null, "pcall returned false");
    assert_eq!(effects.len(), 1);
}

#[test]
fn the_sandbox_has_no_os_io_or_bytecode_and_protects_globals() {
    for body in ["return os.time()", "return io.write('x')", "return dofile('/etc/passwd')", "return require('x')"] {
        let out = reply(body);
        assert!(matches!(&out, Frame::Error(e) if e.contains("nonexistent global")), "{body}: {out:?}");
    }
    let out = reply("x = 1 return x");
    assert!(matches!(&out, Frame::Error(e) if e.contains("Attempt to modify a readonly table")), "{out:?}");
    let out = reply("local f, e = loadstring(string.dump(function() return 1 end)) return e");
    assert!(matches!(&out, Frame::Bulk(e) if e.starts_with(b"loading precompiled bytecode")), "{out:?}");
    assert_eq!(reply("local t = {} t.x = 5 return t.x"), Frame::Integer(5), "locals are free");
    assert_eq!(reply("return loadstring('return 7')()"), Frame::Integer(7), "text chunks load");
}

#[test]
fn node_and_noscript_commands_are_refused_and_time_comes_from_the_caller() {
    let out = reply("return redis.pcall('eval', 'return 1', 0).err");
    assert_eq!(out, Frame::Bulk(b("ERR This Redis command is not allowed from script")));
    let out = reply("return redis.pcall('nosuchcmd').err");
    assert_eq!(out, Frame::Bulk(b("ERR Unknown Redis command called from script")));
    assert_eq!(
        reply("return redis.call('time')"),
        Frame::Array(vec![Frame::Bulk(b("1700000000")), Frame::Bulk(b("123000"))])
    );
    assert_eq!(reply("return redis.sha1hex('')"), Frame::Bulk(b("da39a3ee5e6b4b0d3255bfef95601890afd80709")));
}

#[test]
fn math_random_is_drawn_from_the_callers_seed() {
    let a = reply("return {math.random(1000000), math.random(1000000)}");
    assert_eq!(a, reply("return {math.random(1000000), math.random(1000000)}"));
}

#[test]
fn a_read_only_target_refuses_writes_with_the_given_error() {
    let mut store = Store::new(1);
    store.apply(&Effect::Set { key: b("k"), value: b("v"), expire_at_ms: None });
    let run_ro = |body: &str| {
        run(
            body.as_bytes(),
            "sha",
            &[],
            &[],
            Target::Read { store: &store, refusal: "READONLY leader is node 1".into() },
            &env(never()),
        )
    };
    assert_eq!(run_ro("return redis.call('get', 'k')").reply, Frame::Bulk(b("v")));
    let out = run_ro("return redis.call('set', 'k', 'w')");
    assert!(out.failed);
    assert_eq!(out.reply, Frame::Error("READONLY leader is node 1".into()));
}

#[test]
fn an_interrupted_script_fails_with_the_interrupt_error_and_is_undone() {
    let mut store = Store::new(1);
    let mut batch = Batch::new(1 << 20);
    let body = "redis.call('set', 'a', '1') while true do end";
    let stop: Interrupt = Arc::new(|| Some("ERR time limit".into()));
    let out = run(body.as_bytes(), "sha", &[], &[], Target::Write { store: &mut store, batch: &mut batch }, &env(stop));
    // The first redis.call already sees the interrupt.
    assert!(out.failed);
    assert_eq!(out.reply, Frame::Error("ERR time limit".into()));
    assert!(batch.is_empty() && store.get(b"a", 0).is_none());

    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = calls.clone();
    let later: Interrupt = Arc::new(move || {
        (seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 2).then(|| "ERR time limit".to_string())
    });
    let body = "redis.call('set', 'a', '1') while true do pcall(function() end) end";
    let out =
        run(body.as_bytes(), "sha", &[], &[], Target::Write { store: &mut store, batch: &mut batch }, &env(later));
    assert!(out.failed, "pcall cannot swallow the time limit");
    assert_eq!(out.reply, Frame::Error("ERR time limit".into()));
    assert!(batch.is_empty() && store.get(b"a", 0).is_none());
}

#[test]
fn redis_log_lines_are_handed_back() {
    let (out, _) = eval(&mut Store::new(1), "redis.log(redis.LOG_WARNING, 'hello', 'there') return 1", &[], &[]);
    assert_eq!(out.log, vec![LogLine { level: 3, message: "hello there".into() }]);
}

#[test]
fn a_syntax_error_names_the_compile_step() {
    let out = reply("return (");
    assert!(matches!(&out, Frame::Error(e) if e.starts_with("ERR Error compiling script")), "{out:?}");
}

#[test]
fn doubles_maps_and_pairs_reach_lua_as_resp2_shapes() {
    let mut store = Store::new(1);
    let body = "redis.call('zadd', 'z', '3.5', 'a')
        redis.call('hset', 'h', 'f', 'v')
        local s = redis.call('zscore', 'z', 'a')
        local r = redis.call('zrange', 'z', '0', '-1', 'withscores')
        local all = redis.call('hgetall', 'h')
        return {type(s), s, r[1], r[2], all[1], all[2]}";
    let (out, _) = eval(&mut store, body, &[], &[]);
    assert_eq!(
        out.reply,
        Frame::Array(["string", "3.5", "a", "3.5", "f", "v"].iter().map(|s| Frame::Bulk(b(s))).collect())
    );
}
