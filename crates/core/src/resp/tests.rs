//! Tests of the RESP codec: exact bytes for each frame type, Redis's error
//! texts, limits, inline quoting, and properties over random input.

use super::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

fn limits() -> Limits {
    Limits::default()
}

fn command(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    parse_command(&mut BytesMut::from(input), &limits())
}

fn args(words: &[&str]) -> Vec<Bytes> {
    words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()
}

fn encoded(frame: &Frame, proto: Protocol) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(frame, proto, &mut out);
    out.to_vec()
}

fn frame(input: &[u8]) -> Result<Option<Frame>, ProtocolError> {
    parse_frame(&mut BytesMut::from(input), &limits())
}

fn double_text(value: f64) -> String {
    let mut buf = [0u8; DOUBLE_TEXT_BYTES_MAX];
    let len = format_double(value, &mut buf);
    String::from_utf8(buf[..len].to_vec()).unwrap()
}

// --- commands ---------------------------------------------------------------

#[test]
fn multibulk_command_parses_and_is_split_off_the_buffer() {
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n"[..]);
    let first = parse_command(&mut buf, &limits()).unwrap().unwrap();
    assert_eq!(first, args(&["GET", "k"]));
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
    let second = parse_command(&mut buf, &limits()).unwrap().unwrap();
    assert_eq!(second, args(&["PING"]));
    assert!(buf.is_empty());
    assert_eq!(parse_command(&mut buf, &limits()), Ok(None));
}

#[test]
fn command_args_share_the_read_buffer() {
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$5\r\nvalue\r\n"[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let parsed = parse_command(&mut buf, &limits()).unwrap().unwrap();
    for arg in parsed {
        assert!(range.contains(&(arg.as_ptr() as usize)), "argument was copied");
    }
}

#[test]
fn incomplete_command_consumes_nothing() {
    let whole = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
    for cut in 0..whole.len() {
        let mut buf = BytesMut::from(&whole[..cut]);
        assert_eq!(parse_command(&mut buf, &limits()), Ok(None), "cut at {cut}");
        assert_eq!(&buf[..], &whole[..cut]);
    }
}

#[test]
fn empty_multibulk_is_skipped_like_redis() {
    let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*-7\r\n*1\r\n$4\r\nPING\r\n"[..]);
    let parsed = parse_command(&mut buf, &limits()).unwrap().unwrap();
    assert_eq!(parsed, args(&["PING"]));
    let mut only_empty = BytesMut::from(&b"*0\r\n"[..]);
    assert_eq!(parse_command(&mut only_empty, &limits()), Ok(None));
    assert!(only_empty.is_empty());
}

#[test]
fn empty_bulk_argument_is_allowed() {
    assert_eq!(command(b"*2\r\n$3\r\nSET\r\n$0\r\n\r\n"), Ok(Some(args(&["SET", ""]))));
}

#[test]
fn garbage_lengths_are_errors_with_redis_texts() {
    let cases: &[(&[u8], &str)] = &[
        (b"*abc\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*99999999999999999999\r\n", "Protocol error: invalid multibulk length"),
        (b"*1\rX", "Protocol error: invalid multibulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$-0\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n+OK\r\n", "Protocol error: expected '$', got '+'"),
        (b"*1\r\n$2\r\nabcd", "Protocol error: bulk data not terminated by CRLF"),
        (b"set a \"b\r\n", "Protocol error: unbalanced quotes in request"),
    ];
    for (input, message) in cases {
        let err = command(input).unwrap_err();
        assert_eq!(err.to_string(), *message, "input {:?}", input.escape_ascii().to_string());
    }
}

#[test]
fn garbage_is_rejected_before_the_line_ends() {
    // No need to wait for CRLF to know `*x` is wrong.
    assert_eq!(command(b"*x"), Err(ProtocolError::InvalidMultibulkLength));
    assert_eq!(command(b"*1\r\n$1x"), Err(ProtocolError::InvalidBulkLength));
}

#[test]
fn protocol_error_reply_is_what_redis_sends() {
    assert_eq!(
        ProtocolError::InvalidBulkLength.to_frame(),
        Frame::Error("ERR Protocol error: invalid bulk length".into())
    );
}

// --- limits -------------------------------------------------------------------

#[test]
fn bulk_over_the_limit_is_rejected_before_its_data_arrives() {
    let small = Limits { bulk_bytes_max: 10, ..Limits::default() };
    let mut buf = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
    assert_eq!(parse_command(&mut buf, &small), Err(ProtocolError::InvalidBulkLength));
    let mut at_limit = BytesMut::from(&b"*1\r\n$10\r\n0123456789\r\n"[..]);
    assert!(parse_command(&mut at_limit, &small).unwrap().is_some());
    assert_eq!(command(format!("*1\r\n${}\r\n", BULK_BYTES_MAX + 1).as_bytes()), Err(ProtocolError::InvalidBulkLength));
    assert_eq!(frame(format!("${}\r\n", BULK_BYTES_MAX + 1).as_bytes()), Err(ProtocolError::InvalidBulkLength));
}

#[test]
fn array_over_the_limit_is_rejected_before_its_elements_arrive() {
    assert_eq!(command(format!("*{}\r\n", ARRAY_LEN_MAX + 1).as_bytes()), Err(ProtocolError::InvalidMultibulkLength));
    assert_eq!(command(format!("*{}\r\n", ARRAY_LEN_MAX).as_bytes()), Ok(None));
    for kind in ['*', '%', '~', '>'] {
        assert_eq!(
            frame(format!("{kind}{}\r\n", ARRAY_LEN_MAX + 1).as_bytes()),
            Err(ProtocolError::InvalidMultibulkLength),
            "{kind}"
        );
    }
}

#[test]
fn announced_bulk_reserves_a_bounded_amount() {
    let mut buf = BytesMut::from(format!("*1\r\n${BULK_BYTES_MAX}\r\nab").as_bytes());
    assert_eq!(parse_command(&mut buf, &limits()), Ok(None));
    assert!(buf.capacity() <= buf.len() + RESERVE_AHEAD_BYTES_MAX + 64);
    assert!(buf.capacity() >= RESERVE_AHEAD_BYTES_MAX, "room made for the rest");
}

#[test]
fn inline_request_over_the_limit_is_rejected() {
    let small = Limits { inline_bytes_max: 8, ..Limits::default() };
    let mut at_limit = BytesMut::from(&b"PING 123"[..]);
    assert_eq!(parse_command(&mut at_limit, &small), Ok(None));
    let mut over = BytesMut::from(&b"PING 1234"[..]);
    let err = parse_command(&mut over, &small).unwrap_err();
    assert_eq!(err.to_string(), "Protocol error: too big inline request");
    // The verdict does not depend on whether the newline already arrived.
    let mut with_newline = BytesMut::from(&b"PING 1234\n"[..]);
    assert_eq!(parse_command(&mut with_newline, &small), Err(ProtocolError::TooBigInlineRequest));
    let huge = vec![b'a'; INLINE_BYTES_MAX + 1];
    assert_eq!(command(&huge), Err(ProtocolError::TooBigInlineRequest));
}

#[test]
fn deeply_nested_reply_is_rejected_not_a_stack_overflow() {
    let mut input = b"*1\r\n".repeat(NESTING_DEPTH_MAX + 1);
    input.extend_from_slice(b":1\r\n");
    assert_eq!(frame(&input), Err(ProtocolError::NestingTooDeep));
    let mut ok = b"*1\r\n".repeat(NESTING_DEPTH_MAX - 1);
    ok.extend_from_slice(b":1\r\n");
    assert!(frame(&ok).unwrap().is_some());
}

// --- inline commands -----------------------------------------------------------

#[test]
fn inline_commands_split_like_redis() {
    let cases: &[(&[u8], &[&[u8]])] = &[
        (b"PING\r\n", &[b"PING"]),
        (b"PING\n", &[b"PING"]),
        (b"  set   a  b \r\n", &[b"set", b"a", b"b"]),
        (b"set a \"b c\"\r\n", &[b"set", b"a", b"b c"]),
        (b"set a 'b c'\r\n", &[b"set", b"a", b"b c"]),
        (b"set a \"\"\r\n", &[b"set", b"a", b""]),
        (b"echo \"\\x41\\x7a\\n\\t\\\\\\\"\"\r\n", &[b"echo", b"Az\n\t\\\""]),
        (b"echo \"\\xZZ\"\r\n", &[b"echo", b"xZZ"]),
        (b"echo 'it\\'s'\r\n", &[b"echo", b"it's"]),
        (b"echo 'a\\nb'\r\n", &[b"echo", b"a\\nb"]),
        (b"echo ab\"c d\"\r\n", &[b"echo", b"abc d"]),
        (b"echo \"a\"\t\"b\"\r\n", &[b"echo", b"a", b"b"]),
        (b"echo \0a\0\0b\r\n", &[b"echo", b"a", b"b"]),
        (b"echo a\x0bb\r\n", &[b"echo", b"a\x0bb"]),
    ];
    for (input, expected) in cases {
        let got = command(input).unwrap().unwrap();
        let expected: Vec<Bytes> = expected.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        assert_eq!(got, expected, "input {:?}", input.escape_ascii().to_string());
    }
}

#[test]
fn unbalanced_inline_quotes_are_errors() {
    for input in [&b"set a \"b\r\n"[..], b"set a 'b\r\n", b"set a \"b\"c\r\n", b"set a 'b'c\r\n", b"echo \"abc\\\"\r\n"]
    {
        assert_eq!(
            command(input),
            Err(ProtocolError::UnbalancedQuotes),
            "input {:?}",
            input.escape_ascii().to_string()
        );
    }
}

#[test]
fn blank_inline_lines_are_skipped() {
    let mut buf = BytesMut::from(&b"\r\n\n   \r\nPING\r\n"[..]);
    assert_eq!(parse_command(&mut buf, &limits()), Ok(Some(args(&["PING"]))));
    assert!(buf.is_empty());
}

#[test]
fn unquoted_inline_args_share_the_read_buffer() {
    let mut buf = BytesMut::from(&b"SET key value\r\n"[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    for arg in parse_command(&mut buf, &limits()).unwrap().unwrap() {
        assert!(range.contains(&(arg.as_ptr() as usize)));
    }
}

// --- encoding -----------------------------------------------------------------

#[test]
fn each_frame_type_encodes_to_the_documented_bytes() {
    let verbatim = Frame::Verbatim { format: *b"txt", text: Bytes::from_static(b"Some string") };
    let map = Frame::Map(vec![(Frame::simple("a"), Frame::Integer(1))]);
    let cases: Vec<(Frame, &[u8], &[u8])> = vec![
        (Frame::ok(), b"+OK\r\n", b"+OK\r\n"),
        (Frame::error("ERR x"), b"-ERR x\r\n", b"-ERR x\r\n"),
        (Frame::Integer(-42), b":-42\r\n", b":-42\r\n"),
        (Frame::bulk("hi"), b"$2\r\nhi\r\n", b"$2\r\nhi\r\n"),
        (Frame::Null, b"$-1\r\n", b"_\r\n"),
        (Frame::NullArray, b"*-1\r\n", b"_\r\n"),
        (Frame::Array(vec![Frame::Integer(1), Frame::Null]), b"*2\r\n:1\r\n$-1\r\n", b"*2\r\n:1\r\n_\r\n"),
        (map, b"*2\r\n+a\r\n:1\r\n", b"%1\r\n+a\r\n:1\r\n"),
        (Frame::Set(vec![Frame::Integer(7)]), b"*1\r\n:7\r\n", b"~1\r\n:7\r\n"),
        (Frame::Push(vec![Frame::bulk("m")]), b"*1\r\n$1\r\nm\r\n", b">1\r\n$1\r\nm\r\n"),
        (Frame::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Frame::Double(f64::INFINITY), b"$3\r\ninf\r\n", b",inf\r\n"),
        (Frame::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (Frame::Boolean(true), b":1\r\n", b"#t\r\n"),
        (Frame::Boolean(false), b":0\r\n", b"#f\r\n"),
        (verbatim, b"$11\r\nSome string\r\n", b"=15\r\ntxt:Some string\r\n"),
        (Frame::BigNumber("-123".into()), b"$4\r\n-123\r\n", b"(-123\r\n"),
    ];
    for (frame, resp2, resp3) in cases {
        assert_eq!(encoded(&frame, Protocol::Resp2), resp2, "{frame:?} RESP2");
        assert_eq!(encoded(&frame, Protocol::Resp3), resp3, "{frame:?} RESP3");
    }
}

#[test]
fn integers_encode_across_the_whole_range() {
    for value in [0, 9, 10, -1, 1234567890, i64::MAX, i64::MIN] {
        let expected = format!(":{value}\r\n");
        assert_eq!(encoded(&Frame::Integer(value), Protocol::Resp2), expected.as_bytes());
    }
}

#[test]
fn line_frames_never_carry_cr_or_lf() {
    assert_eq!(encoded(&Frame::error("ERR a\r\nb"), Protocol::Resp2), b"-ERR a  b\r\n");
}

#[test]
fn doubles_are_formatted_like_redis() {
    let cases = [
        (1.0, "1"),
        (-2.0, "-2"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (2.5625, "2.5625"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e16, "10000000000000000"),
        (1e17, "1e+17"),
        (1e300, "1e+300"),
        (2.5e-7, "2.5e-07"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        (5e-324, "5e-324"),
        (0.0, "0"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
    ];
    for (value, text) in cases {
        assert_eq!(double_text(value), text, "{value:e}");
    }
}

#[test]
fn encode_command_writes_a_multibulk() {
    let mut out = BytesMut::new();
    encode_command(&[b"SET", b"k", b""], &mut out);
    assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
}

// --- reply frames ----------------------------------------------------------------

#[test]
fn resp3_reply_types_parse() {
    assert_eq!(frame(b"_\r\n"), Ok(Some(Frame::Null)));
    assert_eq!(frame(b"#t\r\n"), Ok(Some(Frame::Boolean(true))));
    assert_eq!(frame(b",-inf\r\n"), Ok(Some(Frame::Double(f64::NEG_INFINITY))));
    assert_eq!(frame(b",1e+300\r\n"), Ok(Some(Frame::Double(1e300))));
    assert_eq!(frame(b"!9\r\nERR oops!\r\n"), Ok(Some(Frame::Error("ERR oops!".into()))));
    assert_eq!(frame(b"|1\r\n+key\r\n+val\r\n:5\r\n"), Ok(Some(Frame::Integer(5))), "attributes are dropped");
    assert!(matches!(frame(b",nan\r\n"), Ok(Some(Frame::Double(v))) if v.is_nan()));
}

#[test]
fn malformed_replies_are_errors() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"?\r\n", ProtocolError::UnknownFrameType(b'?')),
        (b"#x\r\n", ProtocolError::InvalidBoolean),
        (b",abc\r\n", ProtocolError::InvalidDouble),
        (b":12a\r\n", ProtocolError::InvalidInteger),
        (b"=3\r\ntxt\r\n", ProtocolError::InvalidVerbatim),
        (b"=5\r\ntxt-a\r\n", ProtocolError::InvalidVerbatim),
        (b"(12x\r\n", ProtocolError::InvalidBigNumber),
        (b"$-2\r\n", ProtocolError::InvalidBulkLength),
        (b"*-2\r\n", ProtocolError::InvalidMultibulkLength),
        (b"%-1\r\n", ProtocolError::InvalidMultibulkLength),
        (b"+OK\rX", ProtocolError::LineNotTerminated),
        (b"_x\r\n", ProtocolError::LineNotTerminated),
    ];
    for (input, expected) in cases {
        assert_eq!(frame(input).as_ref(), Err(expected), "input {:?}", input.escape_ascii().to_string());
    }
}

#[test]
fn integer_frames_cover_i64() {
    assert_eq!(frame(b":-9223372036854775808\r\n"), Ok(Some(Frame::Integer(i64::MIN))));
    assert_eq!(frame(b":9223372036854775807\r\n"), Ok(Some(Frame::Integer(i64::MAX))));
    assert_eq!(frame(b":9223372036854775808\r\n"), Err(ProtocolError::InvalidInteger));
    assert_eq!(frame(b":-9223372036854775809\r\n"), Err(ProtocolError::InvalidInteger));
}

// --- properties ----------------------------------------------------------------

fn arb_leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        "[ -~]{0,16}".prop_map(|s| Frame::Simple(Bytes::from(s))),
        "[^\r\n]{0,16}".prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        vec(any::<u8>(), 0..32).prop_map(|v| Frame::Bulk(v.into())),
        Just(Frame::Null),
        Just(Frame::NullArray),
        any::<f64>().prop_filter("NaN never equals itself", |v| !v.is_nan()).prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        ("[a-z]{3}", vec(any::<u8>(), 0..32)).prop_map(|(format, text)| Frame::Verbatim {
            format: format.as_bytes().try_into().unwrap(),
            text: text.into(),
        }),
        "-?[1-9][0-9]{0,40}".prop_map(|s| Frame::BigNumber(s.into())),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    arb_leaf().prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Frame::Array),
            vec(inner.clone(), 0..6).prop_map(Frame::Set),
            vec(inner.clone(), 0..6).prop_map(Frame::Push),
            vec((inner.clone(), inner), 0..6).prop_map(Frame::Map),
        ]
    })
}

/// What a RESP3 peer reads back: `_` does not say whether it was an array.
fn read_back_resp3(frame: &Frame) -> Frame {
    let all = |items: &[Frame]| items.iter().map(read_back_resp3).collect::<Vec<_>>();
    match frame {
        Frame::NullArray => Frame::Null,
        Frame::Array(items) => Frame::Array(all(items)),
        Frame::Set(items) => Frame::Set(all(items)),
        Frame::Push(items) => Frame::Push(all(items)),
        Frame::Map(pairs) => Frame::Map(pairs.iter().map(|(k, v)| (read_back_resp3(k), read_back_resp3(v))).collect()),
        Frame::Pairs(pairs) => Frame::Array(
            pairs.iter().map(|(k, v)| Frame::Array(vec![read_back_resp3(k), read_back_resp3(v)])).collect(),
        ),
        other => other.clone(),
    }
}

/// What a RESP2 peer reads back: the documented downgrade.
fn read_back_resp2(frame: &Frame) -> Frame {
    let all = |items: &[Frame]| Frame::Array(items.iter().map(read_back_resp2).collect());
    match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => all(items),
        Frame::Map(pairs) | Frame::Pairs(pairs) => {
            Frame::Array(pairs.iter().flat_map(|(k, v)| [read_back_resp2(k), read_back_resp2(v)]).collect())
        }
        Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
        Frame::Double(v) => Frame::Bulk(double_text(*v).into()),
        Frame::Verbatim { text, .. } => Frame::Bulk(text.clone()),
        Frame::BigNumber(digits) => Frame::Bulk(digits.clone()),
        other => other.clone(),
    }
}

/// Feeds `stream` in pieces cut at `cuts`, draining `parse` after each piece.
fn feed_in_pieces<T>(
    stream: &[u8],
    cuts: &[Index],
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<T>, ProtocolError>,
) -> Vec<T> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut from = 0;
    for to in points {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        while let Some(item) = parse(&mut buf).expect("valid stream") {
            out.push(item);
        }
    }
    assert!(buf.is_empty(), "bytes left over: {:?}", &buf[..]);
    out
}

/// One command in a client's byte stream, in one of the forms clients use.
#[derive(Debug, Clone)]
enum Wire {
    Multibulk(Vec<Vec<u8>>),
    Inline(Vec<String>),
    Empty,
}

fn arb_wire() -> impl Strategy<Value = Wire> {
    prop_oneof![
        4 => vec(vec(any::<u8>(), 0..40), 1..6).prop_map(Wire::Multibulk),
        1 => vec("[a-zA-Z0-9:_]{1,8}", 1..4).prop_map(Wire::Inline),
        1 => Just(Wire::Empty),
    ]
}

/// Drains every frame or command out of `buf`; errors end the drain.
fn drain_never_panics(mut buf: BytesMut) {
    let limits = Limits { bulk_bytes_max: 1 << 16, array_len_max: 1 << 10, inline_bytes_max: 1 << 10 };
    let mut frames = buf.clone();
    while let Ok(Some(_)) = parse_command(&mut buf, &limits) {}
    while let Ok(Some(_)) = parse_frame(&mut frames, &limits) {}
}

fn resp_ish_byte() -> impl Strategy<Value = u8> {
    prop_oneof![prop::sample::select(b"*$+-:_,#!=(%~>|\r\n\"' \\x-0123456789tf".to_vec()), any::<u8>(),]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_frame_round_trips_through_resp3(frame in arb_frame()) {
        let mut buf = BytesMut::from(&encoded(&frame, Protocol::Resp3)[..]);
        let parsed = parse_frame(&mut buf, &limits()).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(parsed, read_back_resp3(&frame));
    }

    #[test]
    fn every_frame_downgrades_to_resp2_shapes(frame in arb_frame()) {
        let bytes = encoded(&frame, Protocol::Resp2);
        let mut buf = BytesMut::from(&bytes[..]);
        let parsed = parse_frame(&mut buf, &limits()).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(&parsed, &read_back_resp2(&frame));
        // Only RESP2 type bytes on the wire: re-encoding the parsed frame as
        // RESP2 gives the same bytes.
        prop_assert_eq!(encoded(&parsed, Protocol::Resp2), bytes);
    }

    #[test]
    fn any_split_of_the_byte_stream_gives_the_same_frames(
        wires in vec(arb_wire(), 1..8),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = BytesMut::new();
        let mut expected: Vec<Vec<Bytes>> = Vec::new();
        for wire in &wires {
            match wire {
                Wire::Multibulk(words) => {
                    let refs: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
                    encode_command(&refs, &mut stream);
                    expected.push(words.iter().map(|w| Bytes::copy_from_slice(w)).collect());
                }
                Wire::Inline(words) => {
                    stream.extend_from_slice(words.join(" ").as_bytes());
                    stream.extend_from_slice(b"\r\n");
                    expected.push(words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect());
                }
                Wire::Empty => stream.extend_from_slice(b"*0\r\n"),
            }
        }
        let got = feed_in_pieces(&stream, &cuts, |buf| parse_command(buf, &limits()));
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn any_split_of_a_reply_stream_gives_the_same_frames(
        frames in vec(arb_frame(), 1..6),
        cuts in vec(any::<Index>(), 0..12),
    ) {
        let mut stream = BytesMut::new();
        for frame in &frames {
            encode(frame, Protocol::Resp3, &mut stream);
        }
        let got = feed_in_pieces(&stream, &cuts, |buf| parse_frame(buf, &limits()));
        let expected: Vec<Frame> = frames.iter().map(read_back_resp3).collect();
        prop_assert_eq!(got, expected);
    }
}

proptest! {
    // Garbage is cheap to try; try more of it.
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        drain_never_panics(BytesMut::from(&bytes[..]));
    }

    #[test]
    fn resp_like_garbage_never_panics(bytes in vec(resp_ish_byte(), 0..256)) {
        drain_never_panics(BytesMut::from(&bytes[..]));
    }

    #[test]
    fn corrupted_valid_streams_never_panic(
        frame in arb_frame(),
        words in vec(vec(any::<u8>(), 0..16), 1..4),
        flips in vec((any::<Index>(), resp_ish_byte()), 1..4),
    ) {
        let mut stream = encoded(&frame, Protocol::Resp3);
        let refs: Vec<&[u8]> = words.iter().map(Vec::as_slice).collect();
        let mut command = BytesMut::new();
        encode_command(&refs, &mut command);
        stream.extend_from_slice(&command);
        for (at, byte) in flips {
            let i = at.index(stream.len());
            stream[i] = byte;
        }
        drain_never_panics(BytesMut::from(&stream[..]));
    }
}
