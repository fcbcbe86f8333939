//! Tests of what the sender's DSN wishes add to a notification: the
//! success ("relayed") notice, `Original-Envelope-Id` and
//! `Original-Recipient`, and the whole message returned for RET=FULL, each
//! rendered message parsed back with a real MIME parser (mail-parser).

use mail_parser::{MessageParser, MimeHeaders};

use super::tests::{at, check_lines, failures, get, reply, report, status_groups, HEADERS};
use super::*;

/// A message whose header section is 7-bit.
const MESSAGE: &[u8] =
    b"From: Sender <s@example.org>\r\nTo: a@d.test\r\nSubject: hello\r\n\r\nline one\r\nline two\r\n";

/// Lines end in CRLF and are at most 998 octets; 8-bit octets allowed.
fn check_8bit_lines(what: &str, message: &[u8]) {
    assert!(message.ends_with(b"\r\n"), "{what}: ends with CRLF");
    for (i, line) in message.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let line = line
            .strip_suffix(b"\r")
            .unwrap_or_else(|| panic!("{what}: line {} has a bare LF", i + 1));
        assert!(!line.contains(&b'\r'), "{what}: line {} bare CR", i + 1);
        assert!(!line.contains(&0), "{what}: line {} NUL", i + 1);
        assert!(line.len() <= 998, "{what}: line {} too long", i + 1);
    }
}

/// The success notice: its subject and wording, `Action: relayed` with the
/// server's 2.X.X status and reply, the ENVID right after `Reporting-MTA`
/// and the ORCPT before `Final-Recipient`.
#[test]
fn success_notice_structure() {
    let ok = reply("250 2.0.0 Ok: queued as 4711");
    let mut relayed = RecipientReport::relayed(
        "a@d.test",
        &ok,
        "mx.d.test",
        "mx.d.test[192.0.2.1]:25",
        at(1_700_000_050),
    );
    relayed.orcpt = Some("rfc822;First@d.test".to_owned());
    let plain = RecipientReport::relayed(
        "b@d.test",
        &reply("250 ok"),
        "mx.d.test",
        "mx.d.test[192.0.2.1]:25",
        at(1_700_000_050),
    );
    let rcpts = [relayed, plain];
    let mut r = report(Kind::Success, &rcpts, HEADERS);
    r.envid = Some("QQ314159 x");
    let bytes = render(&r);
    check_lines("success", &bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    assert_eq!(
        msg.subject(),
        Some("Successful Mail Delivery Report"),
        "subject"
    );
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    assert_eq!(ids.len(), 3, "three parts");
    let text = msg.parts[ids[0] as usize].text_contents().expect("text");
    for want in [
        "Your message was successfully delivered to the destination(s)",
        "<a@d.test>: delivery via mx.d.test[192.0.2.1]:25: 250 2.0.0 Ok: queued as 4711",
    ] {
        assert!(text.contains(want), "text lacks {want:?}: {text}");
    }
    assert!(!text.contains("could not"), "no failure wording: {text}");
    let status = msg.parts[ids[1] as usize].text_contents().expect("status");
    let groups = status_groups(status);
    assert_eq!(groups.len(), 3, "per-message group and two recipients");
    let names: Vec<&str> = groups[0].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..2],
        ["Reporting-MTA", "Original-Envelope-Id"],
        "ENVID right after Reporting-MTA"
    );
    assert_eq!(
        get(&groups[0], "Original-Envelope-Id"),
        Some("QQ314159 x"),
        "ENVID"
    );
    let first: Vec<&str> = groups[1].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        first[..3],
        ["Original-Recipient", "Final-Recipient", "Action"],
        "recipient field order"
    );
    let rows = [
        (
            &groups[1],
            Some("rfc822;First@d.test"),
            "rfc822; a@d.test",
            "2.0.0",
            "smtp; 250 2.0.0 Ok: queued as 4711",
        ),
        (
            &groups[2],
            None,
            "rfc822; b@d.test",
            "2.0.0",
            "smtp; 250 ok",
        ),
    ];
    for (group, orcpt, fin, st, diag) in rows {
        assert_eq!(
            get(group, "Original-Recipient"),
            orcpt,
            "{fin}: ORCPT only when queued"
        );
        assert_eq!(get(group, "Final-Recipient"), Some(fin), "{fin}");
        assert_eq!(get(group, "Action"), Some("relayed"), "{fin}: action");
        assert_eq!(get(group, "Status"), Some(st), "{fin}: status");
        assert_eq!(
            get(group, "Remote-MTA"),
            Some("dns; mx.d.test"),
            "{fin}: remote"
        );
        assert_eq!(
            get(group, "Diagnostic-Code"),
            Some(diag),
            "{fin}: diagnostic"
        );
        assert_eq!(get(group, "Will-Retry-Until"), None, "{fin}: no retry");
    }
}

/// Without ENVID and ORCPT no `Original-*` field appears (RFC 3461 §6.3),
/// and a `utf-8` ORCPT stays 7-bit.
#[test]
fn original_fields_only_when_given() {
    let mut rcpts = failures();
    rcpts[1].orcpt = Some("utf-8;jösé@d.test".to_owned());
    let bytes = render(&report(Kind::Failure, &rcpts, HEADERS));
    check_lines("utf-8 ORCPT", &bytes);
    let msg = MessageParser::default().parse(&bytes).expect("parses");
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    let status = msg.parts[ids[1] as usize].text_contents().expect("status");
    let groups = status_groups(status);
    assert_eq!(get(&groups[0], "Original-Envelope-Id"), None, "no ENVID");
    assert_eq!(
        get(&groups[1], "Original-Recipient"),
        None,
        "no ORCPT for a"
    );
    assert_eq!(
        get(&groups[2], "Original-Recipient"),
        Some("utf-8;j\\x{F6}s\\x{E9}@d.test"),
        "RFC 6533 escapes for b"
    );
}

/// What the third part becomes for each original: the content type, the
/// part's and the message's transfer encodings, what the text promises,
/// and that the octets come back as given (line ends made CRLF).
#[test]
fn returned_message_table() {
    let long_line = {
        let mut m = b"Subject: long\r\n\r\n".to_vec();
        m.extend(std::iter::repeat_n(b'x', 999));
        m.extend_from_slice(b"\r\n");
        m
    };
    let latin1 = b"Subject: caf\r\n\r\ncaf\xe9 cr\xe8me\r\n".to_vec();
    let utf8 = "Subject: hi\r\n\r\nGrüße\r\n".as_bytes().to_vec();
    let with_boundary = b"Subject: b\r\n\r\n--1700003600.P42Q7/mx.example.org\r\n".to_vec();
    // (name, returned, type, part encoding, message 8bit, whole, the
    // returned octets expected, CRLF)
    type Row<'a> = (
        &'a str,
        Returned<'a>,
        &'a str,
        Option<&'a str>,
        bool,
        bool,
        Vec<u8>,
    );
    let rows: Vec<Row<'_>> = vec![
        (
            "headers",
            Returned::Headers(HEADERS),
            "text/rfc822-headers",
            None,
            false,
            false,
            HEADERS.to_vec(),
        ),
        (
            "7-bit message",
            Returned::Message(MESSAGE),
            "message/rfc822",
            None,
            false,
            true,
            MESSAGE.to_vec(),
        ),
        (
            "LF line ends made CRLF",
            Returned::Message(b"Subject: lf\n\nbody\n"),
            "message/rfc822",
            None,
            false,
            true,
            b"Subject: lf\r\n\r\nbody\r\n".to_vec(),
        ),
        (
            "8-bit UTF-8 body",
            Returned::Message(&utf8),
            "message/rfc822",
            Some("8bit"),
            true,
            true,
            utf8.clone(),
        ),
        (
            "8-bit Latin-1 body",
            Returned::Message(&latin1),
            "message/rfc822",
            Some("8bit"),
            true,
            true,
            latin1.clone(),
        ),
        (
            "8-bit header: headers only",
            Returned::Message("Subject: Grüße\r\n\r\nbody\r\n".as_bytes()),
            "text/rfc822-headers",
            Some("quoted-printable"),
            false,
            false,
            b"Subject: Gr=C3=BC=C3=9Fe\r\n".to_vec(),
        ),
        (
            "NUL in the body: headers only",
            Returned::Message(b"Subject: nul\r\n\r\na\0b\r\n"),
            "text/rfc822-headers",
            None,
            false,
            false,
            b"Subject: nul\r\n".to_vec(),
        ),
        (
            "overlong line: headers only",
            Returned::Message(&long_line),
            "text/rfc822-headers",
            None,
            false,
            false,
            b"Subject: long\r\n".to_vec(),
        ),
        (
            "the boundary in the message: another boundary",
            Returned::Message(&with_boundary),
            "message/rfc822",
            None,
            false,
            true,
            with_boundary.clone(),
        ),
    ];
    let rcpts = failures();
    for (name, returned, ctype, encoding, eight_bit, whole, octets) in rows {
        let mut r = report(Kind::Failure, &rcpts, b"");
        r.returned = returned;
        let bytes = render(&r);
        if eight_bit {
            check_8bit_lines(name, &bytes);
        } else {
            check_lines(name, &bytes);
        }
        let msg = MessageParser::default().parse(&bytes).expect("parses");
        let top = msg.root_part().content_transfer_encoding();
        assert_eq!(top, eight_bit.then_some("8bit"), "{name}: message encoding");
        let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
        assert_eq!(ids.len(), 3, "{name}: three parts");
        let part = &msg.parts[ids[2] as usize];
        let ct = part.content_type().expect("part type");
        let got = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
        assert_eq!(got, ctype, "{name}: part type");
        assert_eq!(
            part.content_transfer_encoding(),
            encoding,
            "{name}: part encoding"
        );
        // The raw octets of the part's body, between its blank line and
        // the closing boundary.
        let raw = &bytes[part.offset_body as usize..part.offset_end as usize];
        assert!(
            raw.starts_with(&octets) || raw == octets.as_slice(),
            "{name}: returned octets {:?} in {:?}",
            String::from_utf8_lossy(&octets),
            String::from_utf8_lossy(raw)
        );
        if whole {
            let inner = part.message().expect("an embedded message");
            assert!(inner.subject().is_some(), "{name}: embedded subject");
        }
        let text = msg.parts[ids[0] as usize].text_contents().expect("text");
        let promise = if whole {
            "It's attached below."
        } else {
            "Its headers are attached"
        };
        assert!(
            text.contains(promise),
            "{name}: text says {promise:?}: {text}"
        );
    }
}
