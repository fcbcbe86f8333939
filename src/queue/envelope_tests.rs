//! Tests of the envelope header block parser and renderer.

use super::*;
use proptest::prelude::*;

pub(super) fn at(secs: u64) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn parses_valid_blocks() {
    // (name, input, sender, recipients, arrival)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [&'a str], Option<SystemTime>);
    let cases: &[Case] = &[
        (
            "LF, three headers",
            "X-Postman-From: <s@example.org>\nX-Postman-Date: 1700000000\nX-Postman-To: <a@d1.test>\n\nbody",
            "s@example.org",
            &["a@d1.test"],
            at(1_700_000_000),
        ),
        (
            "CRLF",
            "X-Postman-From: <s@example.org>\r\nX-Postman-Date: 1700000000\r\nX-Postman-To: <a@d1.test>\r\n\r\nbody",
            "s@example.org",
            &["a@d1.test"],
            at(1_700_000_000),
        ),
        (
            "mixed line ends",
            "X-Postman-From: <s@example.org>\r\nX-Postman-To: <a@d1.test>\n\r\n",
            "s@example.org",
            &["a@d1.test"],
            None,
        ),
        (
            "multi-recipient header",
            "X-Postman-From: <s@e.org>\nX-Postman-To: <a@d1.test>, <b@d1.test>,<c@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test", "b@d1.test", "c@d1.test"],
            None,
        ),
        (
            "repeated To headers accumulate",
            "X-Postman-To: <a@d1.test>\nX-Postman-From: <s@e.org>\nX-Postman-To: <b@d1.test>, <c@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test", "b@d1.test", "c@d1.test"],
            None,
        ),
        (
            "folded To header",
            "X-Postman-From: <s@e.org>\nX-Postman-To: <a@d1.test>,\n <b@d1.test>,\n\t<c@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test", "b@d1.test", "c@d1.test"],
            None,
        ),
        (
            "folded From header, CRLF",
            "X-Postman-From:\r\n  <s@e.org>\r\nX-Postman-To: <a@d1.test>\r\n\r\n",
            "s@e.org",
            &["a@d1.test"],
            None,
        ),
        (
            "null sender",
            "X-Postman-From: <>\nX-Postman-To: <a@d1.test>\n\n",
            "",
            &["a@d1.test"],
            None,
        ),
        (
            "no angle brackets, stored without",
            "X-Postman-From: s@e.org\nX-Postman-To: a@d1.test, <b@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test", "b@d1.test"],
            None,
        ),
        (
            "header names case-insensitive, blanks before colon",
            "x-postman-from: <s@e.org>\nX-POSTMAN-TO : <a@d1.test>\nx-Postman-date: 0\n\n",
            "s@e.org",
            &["a@d1.test"],
            at(0),
        ),
        (
            "recipient case preserved",
            "X-Postman-From: <S@E.org>\nX-Postman-To: <Joe.Bloggs@D1.Test>\n\n",
            "S@E.org",
            &["Joe.Bloggs@D1.Test"],
            None,
        ),
        (
            "quoted local part with comma, space and @",
            "X-Postman-From: <s@e.org>\nX-Postman-To: <\"a, b@c\"@d1.test>, <x@[192.0.2.1]>\n\n",
            "s@e.org",
            &["\"a, b@c\"@d1.test", "x@[192.0.2.1]"],
            None,
        ),
        (
            "UTF-8 address (SMTPUTF8)",
            "X-Postman-From: <s@e.org>\nX-Postman-To: <jöran@bücher.example>\n\n",
            "s@e.org",
            &["jöran@bücher.example"],
            None,
        ),
        (
            "RFC 5322 date with weekday and numeric zone",
            "X-Postman-From: <s@e.org>\nX-Postman-Date: Tue, 14 Nov 2023 22:13:20 +0000\nX-Postman-To: <a@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test"],
            at(1_700_000_000),
        ),
        (
            "RFC 5322 date without weekday, other zone",
            "X-Postman-From: <s@e.org>\nX-Postman-Date: 14 Nov 2023 23:13:20 +0100\nX-Postman-To: <a@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test"],
            at(1_700_000_000),
        ),
        (
            "RFC 5322 obsolete zone name and comment",
            "X-Postman-From: <s@e.org>\nX-Postman-Date: Tue, 14 Nov 2023 17:13:20 EST (Eastern)\nX-Postman-To: <a@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test"],
            at(1_700_000_000),
        ),
        (
            "RFC 5322 date, GMT, no seconds, folded",
            "X-Postman-From: <s@e.org>\nX-Postman-Date: Tue, 14 Nov 2023\n 22:13 GMT\nX-Postman-To: <a@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test"],
            at(1_699_999_980),
        ),
        (
            "empty message after the block",
            "X-Postman-From: <s@e.org>\nX-Postman-To: <a@d1.test>\n\n",
            "s@e.org",
            &["a@d1.test"],
            None,
        ),
    ];
    for (name, input, sender, recipients, arrival) in cases {
        let env = parse_envelope(input.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(env.sender, *sender, "{name}: sender of {input:?}");
        assert_eq!(
            env.recipients,
            strings(recipients),
            "{name}: recipients of {input:?}"
        );
        assert_eq!(env.arrival, *arrival, "{name}: arrival of {input:?}");
        assert!(env.extra.is_empty(), "{name}: extra of {input:?}");
    }
}

#[test]
fn body_offset_points_after_the_empty_line() {
    let cases: &[(&str, &str)] = &[
        (
            "X-Postman-From: <>\nX-Postman-To: <a@b.test>\n\n",
            "Subject: x\n\nhi\n",
        ),
        (
            "X-Postman-From: <>\r\nX-Postman-To: <a@b.test>\r\n\r\n",
            "Subject: x\r\n\r\nhi\r\n",
        ),
        ("X-Postman-From: <>\r\nX-Postman-To: <a@b.test>\r\n\r\n", ""),
        (
            "X-Postman-From: <>\nX-Postman-To: <a@b.test>\n\n",
            "\n\nstarts blank",
        ),
    ];
    for (block, body) in cases {
        let file = format!("{block}{body}");
        let env = parse_envelope(file.as_bytes()).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        assert_eq!(
            env.body_offset,
            block.len() as u64,
            "body_offset of {file:?}"
        );
        assert_eq!(&file[block.len()..], *body, "body of {file:?}");
    }
}

#[test]
fn keeps_other_postman_headers() {
    let input = "X-Postman-From: <s@e.org>\nX-Postman-Attempts: 3\nX-Postman-To: <a@d1.test>\nX-Postman-Next-Try:\n 1700000600\n\n";
    let env = parse_envelope(input.as_bytes()).expect("valid");
    assert_eq!(
        env.extra,
        vec![
            ("X-Postman-Attempts".to_string(), "3".to_string()),
            ("X-Postman-Next-Try".to_string(), "1700000600".to_string()),
        ],
        "extra of {input:?}"
    );
}

#[test]
fn refuses_invalid_blocks() {
    const OK_FROM: &str = "X-Postman-From: <s@e.org>\n";
    const OK_TO: &str = "X-Postman-To: <a@d.test>\n";
    let too_big = format!("X-Postman-From: <>\n{}", "X-Postman-X: y\n".repeat(80_000));
    let long_bad = format!("{OK_FROM}{OK_TO}Subject: {}\n\n", "z".repeat(500));
    // (input, pattern expected, text the message must contain)
    type Case = (String, fn(&EnvelopeError) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            format!("{OK_FROM}{OK_TO}"),
            |e| matches!(e, EnvelopeError::Unterminated { .. }),
            "no empty line",
        ),
        (
            String::new(),
            |e| matches!(e, EnvelopeError::Unterminated { len: 0 }),
            "no empty line",
        ),
        (
            format!("X-Postman-From: <{}@local.test>\n{OK_TO}\n", "a".repeat(65)),
            |e| {
                matches!(
                    e,
                    EnvelopeError::BadAddress {
                        header: "X-Postman-From",
                        ..
                    }
                )
            },
            "64 octets",
        ),
        (
            format!(
                "{OK_FROM}X-Postman-To: a@d.test, {}@d.test\n\n",
                "b".repeat(300)
            ),
            |e| {
                matches!(
                    e,
                    EnvelopeError::BadAddress {
                        header: "X-Postman-To",
                        ..
                    }
                )
            },
            "64 octets",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@{}.test>\n\n", "d".repeat(260)),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "255 octets",
        ),
        (
            // 64 + 1 + 190 = 255 octets: each part fits, the path does not.
            format!(
                "{OK_FROM}X-Postman-To: <{}@{}.test>\n\n",
                "c".repeat(64),
                "e".repeat(185)
            ),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "256 octets",
        ),
        (
            too_big,
            |e| matches!(e, EnvelopeError::TooLarge { .. }),
            "1 MiB",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@d.test\0>\n\n"),
            |e| matches!(e, EnvelopeError::Nul { line: 2 }),
            "NUL byte",
        ),
        (
            // Found by the envelope fuzz target: a control in a field value
            // parsed, but no writer could put it back.
            format!("{OK_FROM}{OK_TO}X-Postman-Note: a\u{1b}[2Jb\n\n"),
            |e| matches!(e, EnvelopeError::Control { line: 3, .. }),
            "\\u{1b}",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@d.test>\u{9b}\n\n"),
            |e| matches!(e, EnvelopeError::Control { line: 2, .. }),
            "only TAB",
        ),
        (
            // Also from the fuzz target: a stray quote inside a quoted
            // local part made a list that split differently when read back.
            format!("{OK_FROM}X-Postman-To: <\"a\"b>,c\"@d.test>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "no @",
        ),
        (
            format!("X-Postman-From: <\"a\"b\"@d.test>\n{OK_TO}\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "unescaped",
        ),
        (
            format!("{OK_FROM}{OK_TO}Subject: hi\n\n"),
            |e| matches!(e, EnvelopeError::NotEnvelopeHeader { line: 3, .. }),
            "\"Subject: hi\"",
        ),
        (
            format!("{OK_FROM}no colon here\n{OK_TO}\n"),
            |e| matches!(e, EnvelopeError::NotEnvelopeHeader { line: 2, .. }),
            "not an X-Postman- header",
        ),
        (
            format!("{OK_FROM}X-Postman-: x\n{OK_TO}\n"),
            |e| matches!(e, EnvelopeError::NotEnvelopeHeader { .. }),
            "\"X-Postman-: x\"",
        ),
        (
            format!("{OK_FROM}X-Postman To: <a@d.test>\n\n"),
            |e| matches!(e, EnvelopeError::NotEnvelopeHeader { .. }),
            "X-Postman To",
        ),
        (
            long_bad,
            |e| matches!(e, EnvelopeError::NotEnvelopeHeader { .. }),
            "zzz\"…",
        ),
        (
            format!(" <a@d.test>\n{OK_FROM}{OK_TO}\n"),
            |e| matches!(e, EnvelopeError::OrphanContinuation { line: 1, .. }),
            "continuation line",
        ),
        (
            format!("{OK_TO}\n"),
            |e| matches!(e, EnvelopeError::MissingSender),
            "no X-Postman-From",
        ),
        (
            format!("{OK_FROM}\n"),
            |e| matches!(e, EnvelopeError::MissingRecipients),
            "no X-Postman-To",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-From: <t@e.org>\n\n"),
            |e| {
                matches!(
                    e,
                    EnvelopeError::DuplicateSender {
                        first_line: 1,
                        line: 3,
                        ..
                    }
                )
            },
            "\"<t@e.org>\"",
        ),
        (
            format!("{OK_FROM}X-Postman-To:\n\n"),
            |e| matches!(e, EnvelopeError::EmptyRecipient { line: 2, .. }),
            "empty recipient",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@d.test>,\n\n"),
            |e| matches!(e, EnvelopeError::EmptyRecipient { .. }),
            "stray comma",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <ad.test>\n\n"),
            |e| {
                matches!(
                    e,
                    EnvelopeError::BadAddress {
                        header: "X-Postman-To",
                        ..
                    }
                )
            },
            "\"<ad.test>\"",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <@d.test>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "empty local part",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "empty domain",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@d.test\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "unbalanced angle brackets",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a b@d.test>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "space",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@d test>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "domain holds",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <a@d.test> <b@d.test>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "<a@d.test> <b@d.test>",
        ),
        (
            format!("{OK_FROM}X-Postman-To: <>\n\n"),
            |e| matches!(e, EnvelopeError::BadAddress { .. }),
            "cannot be a recipient",
        ),
        (
            format!("X-Postman-From:\n{OK_TO}\n"),
            |e| {
                matches!(
                    e,
                    EnvelopeError::BadAddress {
                        header: "X-Postman-From",
                        ..
                    }
                )
            },
            "write <>",
        ),
        (
            // Any control but TAB stops the line before its address is read.
            format!("X-Postman-From: <a\x07@e.org>\n{OK_TO}\n"),
            |e| matches!(e, EnvelopeError::Control { line: 1, .. }),
            "control character",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-Date: yesterday\n\n"),
            |e| matches!(e, EnvelopeError::BadDate { line: 3, .. }),
            "\"yesterday\"",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-Date:\n\n"),
            |e| matches!(e, EnvelopeError::BadDate { .. }),
            "unparseable",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-Date: -5\n\n"),
            |e| matches!(e, EnvelopeError::BadDate { .. }),
            "\"-5\"",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-Date: 99999999999999999999999\n\n"),
            |e| matches!(e, EnvelopeError::BadDate { .. }),
            "unparseable",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-Date: Mon, 14 Nov 2023 22:13:20 +0000\n\n"),
            |e| matches!(e, EnvelopeError::BadDate { .. }),
            "unparseable",
        ),
        (
            format!("{OK_FROM}{OK_TO}X-Postman-Date: 1\nX-Postman-Date: 2\n\n"),
            |e| {
                matches!(
                    e,
                    EnvelopeError::DuplicateDate {
                        first_line: 3,
                        line: 4
                    }
                )
            },
            "twice",
        ),
    ];
    for (input, is_expected, text) in cases {
        let shown = quote(&input);
        let err = match parse_envelope(input.as_bytes()) {
            Ok(env) => panic!("{shown}: parsed as {env:?}"),
            Err(e) => e,
        };
        assert!(is_expected(&err), "{shown}: wrong error {err:?}");
        let message = err.to_string();
        assert!(
            message.contains(text),
            "{shown}: message {message:?} lacks {text:?}"
        );
        assert!(
            message.len() < 400,
            "{shown}: message too long: {message:?}"
        );
    }
}

#[test]
fn refuses_non_utf8_line() {
    let input = b"X-Postman-From: <s@e.org>\nX-Postman-To: <\xff@d.test>\n\n";
    let err = parse_envelope(input).expect_err("invalid UTF-8 accepted");
    assert!(
        matches!(err, EnvelopeError::NotUtf8 { line: 2, .. }),
        "non-UTF-8 line 2: {err:?}"
    );
}

#[test]
fn only_the_block_is_checked() {
    // NULs, bad UTF-8 and non-envelope lines after the empty line are the message's business.
    let input = b"X-Postman-From: <>\nX-Postman-To: <a@d.test>\n\nSubject: x\0\xff\n\n";
    let env = parse_envelope(input).expect("body content must not matter");
    assert_eq!(env.body_offset, 45, "body_offset of {input:?}");
}

#[test]
fn block_scan_is_incremental() {
    let input = b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\nbody";
    let want = BlockScan::default().feed(input);
    assert_eq!(want, Some(48), "one-shot scan of {input:?}");
    for split in 0..input.len() {
        let mut scan = BlockScan::default();
        let first = scan.feed(&input[..split]);
        let got = first.or_else(|| scan.feed(input));
        assert_eq!(got, want, "scan split at {split}");
    }
}

#[test]
fn quote_truncates_and_escapes() {
    assert_eq!(quote("a\"b\n"), "\"a\\\"b\\n\"", "escapes");
    let long = "x".repeat(200);
    let quoted = quote(&long);
    assert!(quoted.ends_with("\"…"), "truncation mark in {quoted}");
    assert_eq!(quoted.chars().count(), QUOTE_MAX + 3, "length of {quoted}");
}

fn local_part() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,20}",
        "\"[A-Za-z0-9 ,@<>()]{1,12}\"",
    ]
}

fn domain() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9-]{1,10}(\\.[A-Za-z0-9-]{1,10}){0,3}",
        "\\[(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\\.(1?[0-9]?[0-9])){3}\\]",
    ]
}

fn address() -> impl Strategy<Value = String> {
    (local_part(), domain()).prop_map(|(l, d)| format!("{l}@{d}"))
}

proptest! {
    #[test]
    fn rendered_envelope_parses_back(
        sender in prop_oneof![Just(String::new()), address()],
        recipients in prop::collection::vec(address(), 1..6),
        arrival in prop::option::of(0u64..4_000_000_000),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let arrival = arrival.map(|s| UNIX_EPOCH + Duration::from_secs(s));
        let mut file = crate::queue::render_envelope(&sender, &recipients, &BTreeMap::new(), arrival, &[]).expect("renders");
        let block_len = file.len();
        file.extend_from_slice(&body);
        let env = parse_envelope(&file).expect("parses back");
        prop_assert_eq!(&env.sender, &sender);
        prop_assert_eq!(&env.recipients, &recipients);
        prop_assert_eq!(env.arrival, arrival);
        prop_assert_eq!(env.body_offset, block_len as u64);
    }

    #[test]
    fn hand_written_list_parses_back(
        recipients in prop::collection::vec(address(), 1..6),
        brackets in prop::collection::vec(any::<bool>(), 6),
        per_line in 1usize..4,
        crlf in any::<bool>(),
        fold in any::<bool>(),
    ) {
        // Several recipients a header, with or without brackets, folded or not.
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut block = format!("X-Postman-From: <>{eol}");
        for chunk in recipients.chunks(per_line) {
            let items: Vec<String> = chunk.iter().zip(&brackets)
                .map(|(a, &b)| if b { format!("<{a}>") } else { a.clone() })
                .collect();
            let sep = if fold { format!(",{eol}\t") } else { ", ".to_string() };
            block.push_str(&format!("X-Postman-To: {}{eol}", items.join(&sep)));
        }
        block.push_str(eol);
        let env = parse_envelope(block.as_bytes()).expect("parses");
        prop_assert_eq!(&env.recipients, &recipients);
        prop_assert_eq!(env.body_offset, block.len() as u64);
    }

    #[test]
    fn parse_never_panics(input in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_envelope(&input);
    }
}

#[test]
fn recipients_of_another_domain_are_refused_by_their_folder() {
    // (recipients, folder, the recipient refused)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("a@h.test, b@H.Test, c@h.test.", "h.test", None),
        ("jöran@bücher.example", "xn--bcher-kva.example", None),
        (
            "a@h.test, <victim@d1.test>",
            "h.test",
            Some("victim@d1.test"),
        ),
        ("a@sub.h.test", "h.test", Some("a@sub.h.test")),
        ("a@[192.0.2.1]", "h.test", Some("a@[192.0.2.1]")),
    ];
    for (list, folder, refused) in cases {
        let block = format!("X-Postman-From: <>\nX-Postman-To: {list}\n\n");
        let env = parse_envelope(block.as_bytes()).expect("parses");
        match (env.check_folder(folder), refused) {
            (Ok(()), None) => {}
            (Err(e), Some(address)) => {
                let text = e.to_string();
                assert!(
                    text.contains(address) && text.contains(folder),
                    "{list} in {folder}: {text}"
                );
            }
            (got, _) => panic!("{list} in {folder}: {got:?}"),
        }
    }
}
