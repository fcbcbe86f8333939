//! Tests of the reply parser: valid and invalid lines, bounds, splits, and
//! the law that a parsed reply renders back to itself.

use proptest::prelude::*;

use super::*;

/// Every reply in `input`, or the first error.
fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
    let mut parser = ReplyParser::new();
    parser.push(input);
    let mut replies = Vec::new();
    while let Some(reply) = parser.next_reply()? {
        replies.push(reply);
    }
    Ok(replies)
}

fn code(n: u16) -> ReplyCode {
    ReplyCode::new(n).expect("test code in range")
}

fn reply(n: u16, enhanced: Option<(u8, u16, u16)>, lines: &[&str]) -> Reply {
    Reply {
        code: code(n),
        enhanced: enhanced.map(|(class, subject, detail)| EnhancedCode {
            class,
            subject,
            detail,
        }),
        lines: lines.iter().map(|l| (*l).to_owned()).collect(),
    }
}

#[test]
fn reply_codes() {
    let cases: [(&[u8], Option<u16>); 12] = [
        (b"200", Some(200)),
        (b"250", Some(250)),
        (b"599", Some(599)),
        (b"199", None),
        (b"600", None),
        (b"099", None),
        (b"+25", None),
        (b"25", None),
        (b"2500", None),
        (b" 25", None),
        (b"2a0", None),
        (b"", None),
    ];
    for (digits, want) in cases {
        let got = ReplyCode::from_digits(digits).map(ReplyCode::get);
        assert_eq!(got, want, "digits {:?}", String::from_utf8_lossy(digits));
    }
    let classes = [(250, 2, true, false, false), (354, 3, true, false, false)];
    let more = [(421, 4, false, true, false), (554, 5, false, false, true)];
    for (n, class, positive, transient, permanent) in classes.into_iter().chain(more) {
        let c = code(n);
        assert_eq!(c.class(), class, "class of {n}");
        assert_eq!(c.is_positive(), positive, "is_positive of {n}");
        assert_eq!(c.is_transient(), transient, "is_transient of {n}");
        assert_eq!(c.is_permanent(), permanent, "is_permanent of {n}");
    }
    assert_eq!(ReplyCode::new(199), None, "ReplyCode::new(199)");
    assert_eq!(
        "250".parse::<ReplyCode>().ok(),
        Some(code(250)),
        "parse \"250\""
    );
    assert!("+25".parse::<ReplyCode>().is_err(), "parse \"+25\"");
}

#[test]
fn enhanced_codes() {
    let cases = [
        ("2.0.0", Some((2, 0, 0))),
        ("5.1.1", Some((5, 1, 1))),
        ("4.7.123", Some((4, 7, 123))),
        ("5.123.999", Some((5, 123, 999))),
        ("3.0.0", None),
        ("5.1", None),
        ("5.1.1.1", None),
        ("5.1234.1", None),
        ("5..1", None),
        ("5.a.1", None),
        ("x.1.1", None),
        ("", None),
    ];
    for (text, want) in cases {
        let got = text
            .parse::<EnhancedCode>()
            .ok()
            .map(|e| (e.class, e.subject, e.detail));
        assert_eq!(got, want, "enhanced code {text:?}");
        if let Ok(parsed) = text.parse::<EnhancedCode>() {
            assert_eq!(parsed.to_string(), text, "display of {text:?}");
        }
    }
}

#[test]
fn valid_replies() {
    let cases: Vec<(&str, Vec<Reply>)> = vec![
        ("250 ok\r\n", vec![reply(250, None, &["ok"])]),
        ("250\r\n", vec![reply(250, None, &[""])]),
        ("250 \r\n", vec![reply(250, None, &[""])]),
        ("250 ok\n", vec![reply(250, None, &["ok"])]),
        ("250 ok\r\r\n", vec![reply(250, None, &["ok\r"])]),
        (
            "220  two  spaces \r\n",
            vec![reply(220, None, &[" two  spaces "])],
        ),
        (
            "250-mx.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            vec![reply(250, None, &["mx.example", "PIPELINING", "8BITMIME"])],
        ),
        (
            "250-first\n250-\n250\n",
            vec![reply(250, None, &["first", "", ""])],
        ),
        (
            "550 5.1.1 no such user\r\n",
            vec![reply(550, Some((5, 1, 1)), &["no such user"])],
        ),
        (
            "550-5.1.1 no such\r\n550 5.1.1 user\r\n",
            vec![reply(550, Some((5, 1, 1)), &["no such", "user"])],
        ),
        (
            "550-5.1.1 no such\r\n550 user\r\n",
            vec![reply(550, Some((5, 1, 1)), &["no such", "user"])],
        ),
        (
            "550-5.1.1 no such\r\n550 5.7.1 other\r\n",
            vec![reply(550, Some((5, 1, 1)), &["no such", "5.7.1 other"])],
        ),
        ("250 2.0.0\r\n", vec![reply(250, Some((2, 0, 0)), &[""])]),
        // Class must match the reply's first digit.
        ("550 4.1.1 odd\r\n", vec![reply(550, None, &["4.1.1 odd"])]),
        ("250 2.0.0x\r\n", vec![reply(250, None, &["2.0.0x"])]),
        (
            "250 ok\r\n354 go\r\n",
            vec![reply(250, None, &["ok"]), reply(354, None, &["go"])],
        ),
        ("220 caf\u{e9}\r\n", vec![reply(220, None, &["caf\u{e9}"])]),
    ];
    for (input, want) in cases {
        let got = parse_all(input.as_bytes());
        assert_eq!(got, Ok(want), "parsing {input:?}");
    }
}

#[test]
fn invalid_replies() {
    let long = format!("250 {}\r\n", "x".repeat(MAX_LINE_LEN));
    let longest_ok = format!("250 {}\r\n", "x".repeat(MAX_LINE_LEN - 6));
    let too_long_by_one = format!("250 {}\r\n", "x".repeat(MAX_LINE_LEN - 5));
    let many = format!("{}250 end\r\n", "250-x\r\n".repeat(MAX_LINES));
    let most = format!("{}250 end\r\n", "250-x\r\n".repeat(MAX_LINES - 1));
    type Check = fn(&Result<Vec<Reply>, ReplyError>) -> bool;
    let malformed: Check = |r| matches!(r, Err(ReplyError::Malformed { .. }));
    let mismatch: Check = |r| matches!(r, Err(ReplyError::CodeMismatch { .. }));
    let too_long: Check = |r| matches!(r, Err(ReplyError::LineTooLong { .. }));
    let too_many: Check = |r| matches!(r, Err(ReplyError::TooManyLines { .. }));
    let fine: Check = |r| r.is_ok();
    let cases: Vec<(&str, Check)> = vec![
        ("+25 x\r\n", malformed),
        ("99 x\r\n", malformed),
        ("600 x\r\n", malformed),
        ("199 x\r\n", malformed),
        ("2500 x\r\n", malformed),
        ("250x\r\n", malformed),
        ("25\r\n", malformed),
        ("\r\n", malformed),
        (" 250 x\r\n", malformed),
        ("abc\r\n", malformed),
        ("250_ok\r\n", malformed),
        ("250-a\r\n251 b\r\n", mismatch),
        ("250-a\r\n550 b\r\n", mismatch),
        ("250-a\r\nnope\r\n", malformed),
        (&long, too_long),
        (&too_long_by_one, too_long),
        (&longest_ok, fine),
        (&many, too_many),
        (&most, fine),
    ];
    for (input, check) in cases {
        let got = parse_all(input.as_bytes());
        assert!(check(&got), "parsing {input:.40?}: got {got:.200?}");
    }
}

#[test]
fn over_long_line_is_caught_before_its_end() {
    let mut parser = ReplyParser::new();
    parser.push(b"250 ");
    parser.push(&vec![b'x'; MAX_LINE_LEN - 5]);
    assert_eq!(parser.next_reply(), Ok(None), "2047 octets without LF");
    parser.push(b"x");
    assert!(
        matches!(parser.next_reply(), Err(ReplyError::LineTooLong { .. })),
        "2048 octets without LF"
    );
}

#[test]
fn errors_are_sticky() {
    let mut parser = ReplyParser::new();
    parser.push(b"+25 x\r\n");
    let first = parser.next_reply();
    assert!(first.is_err(), "first call on \"+25 x\"");
    parser.push(b"250 fine\r\n");
    assert_eq!(parser.next_reply(), first, "second call after \"+25 x\"");
}

#[test]
fn partial_input_waits() {
    let cases: [&[u8]; 5] = [b"", b"25", b"250 ok", b"250 ok\r", b"250-a\r\n250 b"];
    for input in cases {
        let mut parser = ReplyParser::new();
        parser.push(input);
        assert_eq!(
            parser.next_reply(),
            Ok(None),
            "partial input {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(
            parser.has_buffered(),
            !input.is_empty(),
            "has_buffered after {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_split_gives_the_same_replies() {
    let input = b"220-mx.example ESMTP\r\n220 ready\r\n250-mx\n250-PIPELINING\n250 SIZE 10\n\
                  550-5.1.1 a\r\n550 5.1.1 b\r\n354 go\r\n";
    let whole = parse_all(input);
    assert!(whole.is_ok(), "whole input parses: {whole:?}");
    for at in 0..=input.len() {
        let mut parser = ReplyParser::new();
        let mut got = Vec::new();
        for part in [&input[..at], &input[at..]] {
            parser.push(part);
            while let Ok(Some(reply)) = parser.next_reply() {
                got.push(reply);
            }
        }
        assert_eq!(Ok(got), whole, "input split at {at}");
    }
}

#[test]
fn display_and_wire() {
    let cases = [
        ("250 ok", "250 ok", "250 ok\r\n"),
        ("250", "250", "250\r\n"),
        (
            "550-5.1.1 first line text\r\n550 5.1.1 second line text",
            "550 5.1.1 first line text second line text",
            "550-5.1.1 first line text\r\n550 5.1.1 second line text\r\n",
        ),
        (
            "250-a\r\n250-\r\n250 b",
            "250 a b",
            "250-a\r\n250-\r\n250 b\r\n",
        ),
        ("250 2.0.0", "250 2.0.0", "250 2.0.0\r\n"),
    ];
    for (input, display, wire) in cases {
        let parsed: Reply = input
            .parse()
            .unwrap_or_else(|e| panic!("parsing {input:?}: {e}"));
        assert_eq!(parsed.to_string(), display, "display of {input:?}");
        assert_eq!(parsed.to_wire(), wire, "wire of {input:?}");
    }
    assert_eq!(
        "250 a\r\n250 b".parse::<Reply>().err(),
        Some(ReplyError::TrailingData {
            rest: "250 b\r\n".into()
        }),
        "two replies parsed as one"
    );
    assert_eq!(
        "250-a".parse::<Reply>().err(),
        Some(ReplyError::Incomplete),
        "continuation line alone"
    );
}

/// Reply text that cannot be mistaken for an enhanced code: starts with a
/// letter, printable ASCII after.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-zA-Z][ -~]{0,40}"]
}

fn any_reply() -> impl Strategy<Value = Reply> {
    (
        200u16..600,
        any::<bool>(),
        0u16..1000,
        0u16..1000,
        prop::collection::vec(text(), 1..6),
    )
        .prop_map(|(n, with_enhanced, subject, detail, lines)| {
            let code = ReplyCode::new(n).expect("strategy stays in range");
            let enhanced = (with_enhanced && code.class() != 3).then_some(EnhancedCode {
                class: code.class(),
                subject,
                detail,
            });
            Reply {
                code,
                enhanced,
                lines,
            }
        })
}

proptest! {
    #[test]
    fn reply_renders_back_to_itself(reply in any_reply()) {
        let wire = reply.to_wire();
        let parsed = parse_all(wire.as_bytes());
        prop_assert_eq!(parsed, Ok(vec![reply.clone()]), "wire {:?}", wire);
    }

    #[test]
    fn parsed_lines_render_back(lines in prop::collection::vec("[ -~]{0,30}", 1..5), n in 200u16..600) {
        let mut wire = String::new();
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            wire.push_str(&format!("{n}{sep}{line}\r\n"));
        }
        let first = parse_all(wire.as_bytes());
        prop_assert!(first.is_ok(), "wire {:?}: {:?}", wire, first);
        let first = first.unwrap_or_default();
        let rendered: String = first.iter().map(Reply::to_wire).collect();
        prop_assert_eq!(parse_all(rendered.as_bytes()), Ok(first), "wire {:?}", wire);
    }

    #[test]
    fn parser_never_panics_and_codes_stay_in_range(input in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(replies) = parse_all(&input) {
            for reply in replies {
                prop_assert!((200..600).contains(&reply.code.get()), "input {:?}", input);
                prop_assert!(reply.lines.len() <= MAX_LINES, "input {:?}", input);
            }
        }
    }
}
