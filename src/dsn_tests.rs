//! Tests of delivery status notifications: each rendered message is parsed
//! back with a real MIME parser (mail-parser) and checked line by line.

use super::*;
use crate::smtp::{Scope, Stage};
use mail_parser::{MessageParser, MimeHeaders};

pub(super) const HOST: &str = "mx.example.org";
pub(super) const HEADERS: &[u8] =
    b"From: Sender <s@example.org>\r\nTo: a@d.test, b@d.test\r\nSubject: hello\r\nMessage-ID: <orig@example.org>\r\n";

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn reply(text: &str) -> Reply {
    text.parse()
        .unwrap_or_else(|e| panic!("test reply {text:?}: {e}"))
}

pub(super) fn failures() -> Vec<RecipientReport> {
    let rcpt = Outcome::from_reply(
        Class::Permanent,
        Scope::Recipient,
        Stage::Rcpt,
        reply("550 5.1.1 <a@d.test>: Recipient address rejected: User unknown"),
    );
    let null_mx = RecipientReport {
        address: "b@null.test".into(),
        orcpt: None,
        status: STATUS_NULL_MX,
        remote_mta: None,
        reply: None,
        reason: "Domain null.test does not accept mail (nullMX)".into(),
        last_attempt: Some(at(1_700_000_100)),
    };
    vec![
        RecipientReport::from_outcome(
            "a@d.test",
            &rcpt,
            Some("mx.d.test"),
            Some(at(1_700_000_050)),
        ),
        null_mx,
    ]
}

pub(super) fn report<'a>(
    kind: Kind,
    recipients: &'a [RecipientReport],
    headers: &'a [u8],
) -> Report<'a> {
    Report {
        kind,
        reporting_mta: HOST,
        queue_id: Some("m1700000000.P42"),
        arrival: at(1_700_000_000),
        original_sender: "s@example.org",
        recipients,
        envid: None,
        returned: Returned::Headers(headers),
        date: at(1_700_003_600),
        message_id: "1700003600.P42Q7",
        will_retry_until: Some(at(1_700_432_000)),
    }
}

/// Every line ends in CRLF, is at most 998 octets, and is 7-bit.
pub(super) fn check_lines(what: &str, message: &[u8]) {
    assert!(message.ends_with(b"\r\n"), "{what}: ends with CRLF");
    for (i, line) in message.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue; // after the final LF
        }
        let line = line
            .strip_suffix(b"\r")
            .unwrap_or_else(|| panic!("{what}: line {} has a bare LF", i + 1));
        assert!(
            !line.contains(&b'\r'),
            "{what}: line {} has a bare CR",
            i + 1
        );
        assert!(
            line.len() <= 998,
            "{what}: line {} is {} octets",
            i + 1,
            line.len()
        );
        assert!(
            line.iter().all(|&b| b < 0x80 && b != 0),
            "{what}: line {} is not 7-bit: {:?}",
            i + 1,
            String::from_utf8_lossy(line)
        );
    }
}

/// The field groups of a `message/delivery-status` body: unfolded
/// `(name, value)` lists, the per-message group first.
pub(super) fn status_groups(body: &str) -> Vec<Vec<(String, String)>> {
    body.split("\r\n\r\n")
        .filter(|g| !g.trim().is_empty())
        .map(|group| {
            let unfolded = group.replace("\r\n ", " ").replace("\r\n\t", " ");
            unfolded
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let (name, value) = l
                        .split_once(':')
                        .unwrap_or_else(|| panic!("status line {l:?} has no colon"));
                    (name.to_owned(), value.trim().to_owned())
                })
                .collect()
        })
        .collect()
}

pub(super) fn get<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn failure_report_structure() {
    let rcpts = failures();
    let bytes = render(&report(Kind::Failure, &rcpts, HEADERS));
    check_lines("failure", &bytes);
    let msg = MessageParser::default()
        .parse(&bytes)
        .expect("mail-parser parses the DSN");

    assert_eq!(
        msg.subject(),
        Some("Undelivered Mail Returned to Sender"),
        "subject"
    );
    let from = msg.from().and_then(|a| a.first()).expect("From");
    assert_eq!(
        from.address(),
        Some("MAILER-DAEMON@mx.example.org"),
        "From address"
    );
    assert_eq!(from.name(), Some("Mail Delivery System"), "From name");
    let to = msg.to().and_then(|a| a.first()).expect("To");
    assert_eq!(to.address(), Some("s@example.org"), "To");
    assert_eq!(
        msg.message_id(),
        Some("1700003600.P42Q7@mx.example.org"),
        "Message-ID"
    );
    assert_eq!(
        msg.date().map(|d| d.to_timestamp()),
        Some(1_700_003_600),
        "Date"
    );
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied"),
        "Auto-Submitted"
    );
    let ct = msg.content_type().expect("Content-Type");
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "type"
    );
    assert_eq!(
        ct.attribute("report-type"),
        Some("delivery-status"),
        "report-type"
    );

    let root = msg.root_part();
    let ids = root.sub_parts().expect("multipart");
    assert_eq!(ids.len(), 3, "three parts");
    let parts: Vec<_> = ids.iter().map(|&id| &msg.parts[id as usize]).collect();
    let types: Vec<(String, Option<String>)> = parts
        .iter()
        .map(|p| {
            let ct = p.content_type().expect("part Content-Type");
            (ct.ctype().to_owned(), ct.subtype().map(str::to_owned))
        })
        .collect();
    assert_eq!(
        types,
        [
            ("text".to_owned(), Some("plain".to_owned())),
            ("message".to_owned(), Some("delivery-status".to_owned())),
            ("text".to_owned(), Some("rfc822-headers".to_owned())),
        ],
        "part types"
    );

    let text = parts[0].text_contents().expect("text part");
    assert!(
        text.starts_with("This is the mail system at host mx.example.org."),
        "{text}"
    );
    assert!(text.contains("could not\r\nbe delivered"), "{text}");
    assert!(
        text.contains(
            "<a@d.test>: host mx.d.test said: 550 5.1.1 <a@d.test>: Recipient address\r\n    rejected: User unknown (in reply to RCPT TO command)"
        ),
        "recipient a wrapped: {text}"
    );
    assert!(
        text.contains("<b@null.test>: Domain null.test does not accept mail (nullMX)"),
        "{text}"
    );

    let status = std::str::from_utf8(parts[1].contents()).expect("status is text");
    let groups = status_groups(status);
    assert_eq!(groups.len(), 3, "per-message + 2 recipients: {status}");
    assert_eq!(
        get(&groups[0], "Reporting-MTA"),
        Some("dns; mx.example.org"),
        "{status}"
    );
    assert_eq!(
        get(&groups[0], "X-Postman-Queue-ID"),
        Some("m1700000000.P42"),
        "{status}"
    );
    assert_eq!(
        get(&groups[0], "Arrival-Date"),
        Some("Tue, 14 Nov 2023 22:13:20 +0000"),
        "{status}"
    );
    let a = &groups[1];
    assert_eq!(
        get(a, "Final-Recipient"),
        Some("rfc822; a@d.test"),
        "{status}"
    );
    assert_eq!(get(a, "Action"), Some("failed"), "{status}");
    assert_eq!(get(a, "Status"), Some("5.1.1"), "{status}");
    assert_eq!(get(a, "Remote-MTA"), Some("dns; mx.d.test"), "{status}");
    assert_eq!(
        get(a, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 <a@d.test>: Recipient address rejected: User unknown"),
        "{status}"
    );
    assert_eq!(
        get(a, "Last-Attempt-Date"),
        Some("Tue, 14 Nov 2023 22:14:10 +0000"),
        "{status}"
    );
    assert_eq!(get(a, "Will-Retry-Until"), None, "no retry in a bounce");
    let b = &groups[2];
    assert_eq!(
        get(b, "Final-Recipient"),
        Some("rfc822; b@null.test"),
        "{status}"
    );
    assert_eq!(get(b, "Status"), Some("5.1.10"), "{status}");
    assert_eq!(get(b, "Remote-MTA"), None, "{status}");
    assert_eq!(
        get(b, "Diagnostic-Code"),
        Some("X-Postman; Domain null.test does not accept mail (nullMX)"),
        "{status}"
    );

    let headers = parts[2].text_contents().expect("headers part");
    assert_eq!(
        headers.as_bytes(),
        HEADERS,
        "original headers returned as they were"
    );
}

#[test]
fn delay_warning_report() {
    let deferred = Outcome::from_reply(
        Class::Transient,
        Scope::Recipient,
        Stage::Rcpt,
        reply("450 4.2.0 <a@d.test>: greylisted"),
    );
    let rcpts = [RecipientReport::from_outcome(
        "a@d.test",
        &deferred,
        Some("mx.d.test"),
        Some(at(1_700_003_000)),
    )];
    let bytes = render(&report(Kind::Delay, &rcpts, HEADERS));
    check_lines("delay", &bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    assert_eq!(
        msg.subject(),
        Some("Delayed Mail (still being retried)"),
        "subject"
    );
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    let text = msg.parts[ids[0] as usize].text_contents().expect("text");
    assert!(text.contains("# THIS IS A WARNING ONLY."), "{text}");
    assert!(
        text.contains("could not be delivered for 1.0 hours."),
        "age in {text}"
    );
    assert!(
        text.contains("retried until it is 5.0 days old."),
        "lifetime in {text}"
    );
    let status = std::str::from_utf8(msg.parts[ids[1] as usize].contents()).expect("status");
    let groups = status_groups(status);
    let a = &groups[1];
    assert_eq!(get(a, "Action"), Some("delayed"), "{status}");
    assert_eq!(get(a, "Status"), Some("4.2.0"), "{status}");
    assert_eq!(
        get(a, "Will-Retry-Until"),
        Some("Sun, 19 Nov 2023 22:13:20 +0000"),
        "{status}"
    );
}

#[test]
fn hostile_inputs_stay_7bit_and_short() {
    let long_reply = format!("550 5.7.1 {}", "x".repeat(3000));
    let words = "blocked ".repeat(400);
    let rcpts = [
        RecipientReport {
            address: "jösé@bücher.example".into(),
            orcpt: None,
            status: STATUS_PERMANENT,
            remote_mta: Some("mx.bücher.example".into()),
            reply: Some(long_reply),
            reason: format!("host mx said: ünïcödé\r\nInjected: header\x00 {words}"),
            last_attempt: None,
        },
        RecipientReport::expired(
            "c+tag=x@d.test",
            Duration::from_secs(432_000),
            Some("connect to mx.d.test[192.0.2.1]:25: Connection refused"),
            Some(at(1_700_000_000)),
        ),
    ];
    // 8-bit, NUL, overlong and bare-CR original headers.
    let mut headers = b"Subject: gr\xc3\xbc\xc3\x9fe\r\nX-Long: ".to_vec();
    headers.extend(std::iter::repeat_n(b'y', 1500));
    headers.extend_from_slice(b"\r\nX-Nul: a\x00b\rX-Bare: cr\n");
    let mut r = report(Kind::Failure, &rcpts, &headers);
    r.original_sender = "sénder@example.org";
    r.message_id = "token with spaces/and\"quotes\"";
    let bytes = render(&r);
    check_lines("hostile", &bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    assert_eq!(
        msg.message_id(),
        Some("token_with_spaces_and_quotes_@mx.example.org"),
        "sanitised Message-ID"
    );
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    assert_eq!(ids.len(), 3, "three parts");
    let text = msg.parts[ids[0] as usize].text_contents().expect("text");
    assert!(
        !text.contains("\r\nInjected:"),
        "no header injection: {text}"
    );
    assert!(
        text.contains("host mx said: ?n?c?d? Injected: header "),
        "{text}"
    );

    let status = std::str::from_utf8(msg.parts[ids[1] as usize].contents()).expect("status");
    let groups = status_groups(status);
    assert_eq!(groups.len(), 3, "{status}");
    assert_eq!(
        get(&groups[1], "Final-Recipient"),
        Some("utf-8; j\\x{F6}s\\x{E9}@b\\x{FC}cher.example"),
        "RFC 6533 xtext"
    );
    let diag = get(&groups[1], "Diagnostic-Code").expect("diagnostic");
    assert!(diag.starts_with("smtp; 550 5.7.1 xxx"), "{diag}");
    assert_eq!(
        diag.matches('x').count(),
        3000,
        "long word kept whole, only split"
    );
    let c = &groups[2];
    assert_eq!(
        get(c, "Final-Recipient"),
        Some("rfc822; c+tag=x@d.test"),
        "plain ASCII address kept"
    );
    assert_eq!(get(c, "Status"), Some("4.4.7"), "expired");
    assert_eq!(get(c, "Action"), Some("failed"), "expired is failed");
    assert_eq!(
        get(c, "Diagnostic-Code"),
        Some(
            "X-Postman; gave up after 5.0 days in the queue; last error: connect to \
             mx.d.test[192.0.2.1]:25: Connection refused"
        ),
        "{status}"
    );

    let part = &msg.parts[ids[2] as usize];
    assert_eq!(
        part.content_transfer_encoding(),
        Some("quoted-printable"),
        "8-bit headers are encoded"
    );
    let decoded = part.text_contents().expect("decoded headers");
    assert!(decoded.starts_with("Subject: grüße\r\n"), "{decoded:?}");
    assert!(decoded.contains(&"y".repeat(1500)), "long line restored");
    assert!(
        decoded.contains("X-Nul: a\u{0}b\r\nX-Bare: cr\r\n"),
        "{decoded:?}"
    );
}

#[test]
fn boundary_never_occurs_in_the_parts() {
    let rcpts = failures();
    // Headers that contain the boundary the report would pick.
    let headers = b"X-Trap: --1700003600.P42Q7/mx.example.org\r\n";
    let bytes = render(&report(Kind::Failure, &rcpts, headers));
    check_lines("trap", &bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    assert_eq!(ids.len(), 3, "the trap did not split a part");
    let got = msg.parts[ids[2] as usize].text_contents().expect("headers");
    assert_eq!(got.as_bytes(), headers, "trap header intact");
}

#[test]
fn empty_headers_leave_out_the_third_part() {
    let rcpts = failures();
    let bytes = render(&report(Kind::Failure, &rcpts, b""));
    check_lines("no headers", &bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    assert_eq!(ids.len(), 2, "text and status only");
    let text = msg.parts[ids[0] as usize].text_contents().expect("text");
    assert!(
        !text.contains("attached below"),
        "no attachment promised: {text}"
    );
}

#[test]
fn should_bounce_table() {
    let cases = [
        ("", false),
        ("<>", false),
        ("s@example.org", true),
        ("MAILER-DAEMON@example.org", true),
    ];
    for (sender, want) in cases {
        assert_eq!(should_bounce(sender), want, "should_bounce({sender:?})");
    }
}

#[test]
fn status_for_table() {
    let cases = [
        (Class::Permanent, Some("550 5.1.1 no such user"), "5.1.1"),
        (Class::Permanent, Some("550 no code"), "5.0.0"),
        (Class::Permanent, Some("554 4.4.1 wrong class"), "5.0.0"),
        (Class::Transient, Some("451 4.7.1 greylisted"), "4.7.1"),
        (Class::Transient, Some("421 busy"), "4.0.0"),
        (
            Class::Transient,
            Some("550 5.1.1 refused but retried"),
            "4.0.0",
        ),
        (Class::Permanent, None, "5.0.0"),
        (Class::Transient, None, "4.0.0"),
    ];
    for (class, text, want) in cases {
        let reply = text.map(reply);
        assert_eq!(
            status_for(class, reply.as_ref()).to_string(),
            want,
            "status_for({class:?}, {text:?})"
        );
    }
}

#[test]
fn from_outcome_without_a_reply() {
    let lost = Outcome::without_reply(
        Class::Transient,
        Scope::Destination,
        Stage::Greeting,
        "lost connection while receiving the initial server greeting",
    );
    let r = RecipientReport::from_outcome("a@d.test", &lost, Some("mx.d.test"), None);
    assert_eq!(
        r.reason, "host mx.d.test: lost connection while receiving the initial server greeting",
        "reason"
    );
    assert_eq!(r.reply, None, "no reply");
    assert_eq!(r.status, STATUS_TRANSIENT, "status");
    let r = RecipientReport::from_outcome("a@d.test", &lost, None, None);
    assert_eq!(r.reason, lost.detail, "reason without host");
}

#[test]
fn helpers_table() {
    let wraps: &[(&str, usize, Vec<&str>)] = &[
        ("a b c", 78, vec!["a b c"]),
        ("aaaa bbbb cccc", 9, vec!["aaaa bbbb", "  cccc"]),
        ("  lots   of   space  ", 78, vec!["lots of space"]),
        ("", 78, vec![]),
    ];
    for (text, width, want) in wraps {
        assert_eq!(wrap(text, *width, "  "), *want, "wrap({text:?}, {width})");
    }
    let long = "z".repeat(2500);
    let lines = wrap(&format!("Name: {long}"), 78, " ");
    assert!(
        lines.iter().all(|l| l.len() <= MAX_LINE),
        "hard limit: {:?}",
        lines.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(lines.concat().matches('z').count(), 2500, "nothing lost");

    let durations = [
        (59, "0 minutes"),
        (60, "1 minute"),
        (3599, "59 minutes"),
        (14_400, "4.0 hours"),
        (432_000, "5.0 days"),
    ];
    for (secs, want) in durations {
        assert_eq!(
            human_duration(Duration::from_secs(secs)),
            want,
            "human_duration({secs})"
        );
    }
    let dates = [
        (at(0), "Thu, 1 Jan 1970 00:00:00 +0000"),
        (at(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000"),
        (
            at(u64::from(u32::MAX) * 1000),
            "Fri, 31 Dec 9999 23:59:59 +0000",
        ),
        (
            UNIX_EPOCH - Duration::from_secs(5),
            "Thu, 1 Jan 1970 00:00:00 +0000",
        ),
    ];
    for (when, want) in dates {
        assert_eq!(rfc5322_date(when), want, "date of {when:?}");
    }
    let tokens = [
        ("abc.DEF-1_2", "abc.DEF-1_2"),
        ("", "dsn"),
        ("...", "dsn"),
        ("a..b", "a._b"),
        ("ü@x", "__x"),
    ];
    for (raw, want) in tokens {
        assert_eq!(token(raw), want, "token({raw:?})");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    /// Whatever the diagnostics, addresses and headers hold, the DSN stays
    /// 7-bit with short CRLF lines and parses into its three parts.
    #[test]
    fn any_input_renders_a_well_formed_report(
        address in "\\PC{1,80}",
        reason in "\\PC{0,2000}",
        reply in proptest::option::of("[ -~\\t\\r\\nÀ-ÿ]{0,1500}"),
        remote in proptest::option::of("\\PC{1,40}"),
        headers in proptest::collection::vec(proptest::num::u8::ANY, 1..3000),
        token in "\\PC{0,100}",
    ) {
        let rcpts = [RecipientReport {
            address,
            orcpt: None,
            status: STATUS_PERMANENT,
            remote_mta: remote,
            reply,
            reason,
            last_attempt: Some(at(1)),
        }];
        let mut r = report(Kind::Failure, &rcpts, &headers);
        r.message_id = &token;
        let bytes = render(&r);
        check_lines("proptest", &bytes);
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        let ids = msg.root_part().sub_parts().expect("multipart");
        proptest::prop_assert_eq!(ids.len(), 3);
    }
}
