//! Tests of the envelope block's writers: what they refuse, how they lay
//! out recipients, and that what they write reads back within the limit.

use super::tests::{at, strings};
use super::*;

#[test]
fn render_refuses_what_parse_refuses() {
    let rcpt = |s: &str| vec![s.to_string()];
    type Case = (&'static str, Vec<String>, Vec<(String, String)>);
    let cases: Vec<Case> = vec![
        ("a\r\nRCPT TO:<x@y>@e.org", rcpt("a@d.test"), vec![]),
        ("s@e.org", vec![], vec![]),
        ("s@e.org", rcpt(""), vec![]),
        ("s@e.org", rcpt("no-at"), vec![]),
        (
            "s@e.org",
            rcpt("a@d.test"),
            vec![("Subject".into(), "x".into())],
        ),
        (
            "s@e.org",
            rcpt("a@d.test"),
            vec![("X-Postman-To".into(), "<b@d.test>".into())],
        ),
        (
            "s@e.org",
            rcpt("a@d.test"),
            vec![("X-Postman-N".into(), "1\r\n\r\nbody".into())],
        ),
    ];
    for (sender, recipients, extra) in cases {
        let result = render_envelope(sender, &recipients, None, &extra);
        assert!(
            result.is_err(),
            "render({sender:?}, {recipients:?}, {extra:?}) accepted"
        );
    }
}

#[test]
fn render_then_parse_with_extra() {
    let extra = vec![("X-Postman-Attempts".to_string(), "2".to_string())];
    let block = render_envelope("", &strings(&["a@d.test"]), at(42), &extra).expect("renders");
    let env = parse_envelope(&block).expect("parses");
    assert_eq!(env.sender, "", "null sender");
    assert_eq!(env.arrival, at(42), "arrival");
    assert_eq!(env.extra, extra, "extra");
    assert_eq!(env.body_offset, block.len() as u64, "body_offset");
}

/// What the envelope fuzz target found: a TAB in a field value parses and
/// must render back; quoted local parts with commas, escaped quotes and
/// backslashes go through a compact list and come back the same.
#[test]
fn tabs_and_quoted_local_parts_render_back() {
    let extra = vec![("X-Postman-Note".to_string(), "a\tb".to_string())];
    let rcpts = strings(&[
        "\"a,b\"@d.test",
        "\"say \\\"hi\\\"\"@d.test",
        "\"back\\\\slash\"@d.test",
        "plain@d.test",
    ]);
    let block = render_envelope("s@e.org", &rcpts, at(7), &extra).expect("renders");
    let env = parse_envelope(&block).expect("parses back");
    assert_eq!(env.recipients, rcpts, "recipients");
    assert_eq!(env.extra, extra, "the TAB is kept");
    for bad in [
        "\"a\"b>,c\"@d.test",
        "\"a\\\"@d.test",
        "\"a\"\"@d.test",
        "\u{3000}a@d.test",
        "a@d.test\u{a0}",
    ] {
        assert!(
            render_envelope("s@e.org", &strings(&[bad]), None, &[]).is_err(),
            "render refuses {bad:?}"
        );
    }
}

#[test]
fn recipients_are_one_compact_folded_field() {
    let few = render_envelope("s@e.org", &strings(&["a@d.test", "b@d.test"]), at(7), &[])
        .expect("renders");
    assert_eq!(
        String::from_utf8(few).expect("ascii"),
        "X-Postman-From: <s@e.org>\r\nX-Postman-Date: 7\r\nX-Postman-To: a@d.test,b@d.test\r\n\r\n",
        "bare addresses, commas, one field"
    );
    let many: Vec<String> = (0..5000).map(|i| format!("user{i}@d.test")).collect();
    let block = render_envelope("s@e.org", &many, None, &[]).expect("renders");
    let text = String::from_utf8(block.clone()).expect("ascii");
    assert_eq!(text.matches("X-Postman-To").count(), 1, "one field");
    for line in text.split("\r\n") {
        assert!(line.len() <= MAX_LINE, "line of {} octets", line.len());
    }
    let env = parse_envelope(&block).expect("parses back");
    assert_eq!(env.recipients, many, "every recipient, in order");
}

#[test]
fn render_refuses_a_block_it_could_not_read_back() {
    // 60,000 addresses of 20 octets: 1.26 MB.
    let many: Vec<String> = (0..60_000)
        .map(|i| format!("user{i:06}@dom.test"))
        .collect();
    let err = render_envelope("", &many, None, &[]).expect_err("too large for one block");
    assert!(
        matches!(err, EnvelopeError::WouldBeTooLarge { limit, .. } if limit == MAX_ENVELOPE_BLOCK),
        "{err}"
    );
}

#[test]
fn render_envelopes_splits_what_does_not_fit() {
    let many: Vec<String> = (0..120_000)
        .map(|i| format!("user{i:06}@dom.test"))
        .collect();
    let extra = vec![("X-Postman-Note".to_string(), "kept".to_string())];
    let retry = vec![
        ("X-Postman-Attempts".to_string(), "3".to_string()),
        ("X-Postman-Last-Error".to_string(), "e".repeat(900)),
    ];
    let blocks = render_envelopes("s@e.org", &many, at(9), &extra, &retry).expect("renders");
    assert_eq!(blocks.len(), 3, "2.4 MB of recipients in blocks of 1 MiB");
    let mut next = 0;
    for (i, block) in blocks.iter().enumerate() {
        assert_eq!(block.recipients.start, next, "block {i} follows on");
        next = block.recipients.end;
        assert!(
            block.bytes.len() <= MAX_ENVELOPE_BLOCK,
            "block {i}: {} bytes",
            block.bytes.len()
        );
        let env = parse_envelope(&block.bytes).expect("each block parses back");
        assert_eq!(env.recipients, &many[block.recipients.clone()], "block {i}");
        assert_eq!(env.sender, "s@e.org", "block {i}: sender");
        assert_eq!(env.arrival, at(9), "block {i}: arrival");
        assert_eq!(env.extra.len(), 3, "block {i}: extra and retry fields");
    }
    assert_eq!(next, many.len(), "every recipient in a block");
    // The blocks are full but for the last: no more files than needed.
    let retry_len: usize = retry.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    for block in &blocks[..2] {
        let base = block.bytes.len() - retry_len;
        assert!(
            base <= MAX_WRITTEN_BLOCK && base + 30 > MAX_WRITTEN_BLOCK,
            "a full block holds {base} bytes"
        );
    }

    let one = render_envelopes("s@e.org", &many[..3], at(9), &[], &retry).expect("renders");
    assert_eq!(one.len(), 1, "a short list is one block");
    assert_eq!(one[0].recipients, 0..3, "all of it");
}

#[test]
fn a_pending_subset_never_needs_more_room_than_the_list_it_came_from() {
    // The tightest list a receiving server can write: bare, commas, LF,
    // one line. Rendered again (any subset, CRLF, folded), it grows by the
    // folds and a few octets at most, far less than the retry headroom.
    let all: Vec<String> = (0..100_000).map(|i| format!("{i:x}@h.t")).collect();
    let written = format!(
        "X-Postman-From:<s@e.org>\nX-Postman-To:{}\n\n",
        all.join(",")
    );
    let env = parse_envelope(written.as_bytes()).expect("parses");
    let pending = &env.recipients[100..];
    let blocks = render_envelopes("s@e.org", pending, None, &[], &[]).expect("renders");
    assert_eq!(blocks.len(), 1, "still one block");
    let growth = blocks[0].bytes.len() as i64 - written.len() as i64;
    let folds = written.len() as i64 / 900 * 4;
    assert!(growth < folds, "grew by {growth} octets");
}

#[test]
fn retry_fields_beyond_their_room_are_refused() {
    let retry = vec![(
        "X-Postman-Last-Error".to_string(),
        "e".repeat(RETRY_HEADROOM),
    )];
    let err = render_envelopes("", &strings(&["a@d.test"]), None, &[], &retry)
        .expect_err("retry fields too large");
    assert!(
        matches!(err, EnvelopeError::WouldBeTooLarge { limit, .. } if limit == RETRY_HEADROOM),
        "{err}"
    );
}
