//! Tests of the envelope block's writers: what they refuse, how they lay
//! out recipients, and that what they write reads back within the limit.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::queue::params::RcptParams;
use crate::queue::{parse_envelope, EnvelopeError};

fn at(secs: u64) -> Option<SystemTime> {
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

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
        let result = render_envelope(sender, &recipients, &BTreeMap::new(), None, &extra);
        assert!(
            result.is_err(),
            "render({sender:?}, {recipients:?}, {extra:?}) accepted"
        );
    }
}

#[test]
fn render_then_parse_with_extra() {
    let extra = vec![("X-Postman-Attempts".to_string(), "2".to_string())];
    let block = render_envelope(
        "",
        &strings(&["a@d.test"]),
        &BTreeMap::new(),
        at(42),
        &extra,
    )
    .expect("renders");
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
    let block =
        render_envelope("s@e.org", &rcpts, &BTreeMap::new(), at(7), &extra).expect("renders");
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
            render_envelope("s@e.org", &strings(&[bad]), &BTreeMap::new(), None, &[]).is_err(),
            "render refuses {bad:?}"
        );
    }
}

#[test]
fn recipients_are_one_compact_folded_field() {
    let few = render_envelope(
        "s@e.org",
        &strings(&["a@d.test", "b@d.test"]),
        &BTreeMap::new(),
        at(7),
        &[],
    )
    .expect("renders");
    assert_eq!(
        String::from_utf8(few).expect("ascii"),
        "X-Postman-From: <s@e.org>\r\nX-Postman-Date: 7\r\nX-Postman-To: a@d.test,b@d.test\r\n\r\n",
        "bare addresses, commas, one field"
    );
    let many: Vec<String> = (0..5000).map(|i| format!("user{i}@d.test")).collect();
    let block = render_envelope("s@e.org", &many, &BTreeMap::new(), None, &[]).expect("renders");
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
    let err = render_envelope("", &many, &BTreeMap::new(), None, &[])
        .expect_err("too large for one block");
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
    let blocks = render_envelopes("s@e.org", &many, &BTreeMap::new(), at(9), &extra, &retry)
        .expect("renders");
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

    let one = render_envelopes("s@e.org", &many[..3], &BTreeMap::new(), at(9), &[], &retry)
        .expect("renders");
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
    let blocks =
        render_envelopes("s@e.org", pending, &BTreeMap::new(), None, &[], &[]).expect("renders");
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
    let err = render_envelopes(
        "",
        &strings(&["a@d.test"]),
        &BTreeMap::new(),
        None,
        &[],
        &retry,
    )
    .expect_err("retry fields too large");
    assert!(
        matches!(err, EnvelopeError::WouldBeTooLarge { limit, .. } if limit == RETRY_HEADROOM),
        "{err}"
    );
}

/// Parameters by recipient, from `(recipient, "NOTIFY=… ORCPT=…")`.
fn params(items: &[(&str, &str)]) -> BTreeMap<String, RcptParams> {
    items
        .iter()
        .map(|(rcpt, text)| {
            let parsed = RcptParams::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            (rcpt.to_string(), parsed)
        })
        .collect()
}

#[test]
fn recipients_with_parameters_get_a_field_each_in_order() {
    let rcpts = strings(&["a@d.test", "b@d.test", "c@d.test", "d@d.test", "e@d.test"]);
    let with = params(&[
        (
            "b@d.test",
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@d.test",
        ),
        ("d@d.test", "notify=never"),
        ("nobody@d.test", "NOTIFY=DELAY"),
    ]);
    let extra = vec![
        ("X-Postman-Ret".to_string(), "HDRS".to_string()),
        ("X-Postman-Envid".to_string(), "QQ314159".to_string()),
        ("X-Postman-Requiretls".to_string(), "yes".to_string()),
    ];
    let block = render_envelope("s@e.org", &rcpts, &with, at(7), &extra).expect("renders");
    assert_eq!(
        String::from_utf8(block.clone()).expect("ascii"),
        "X-Postman-From: <s@e.org>\r\nX-Postman-Date: 7\r\n\
         X-Postman-To: a@d.test\r\n\
         X-Postman-To: <b@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b+2Bx@d.test\r\n\
         X-Postman-To: c@d.test\r\n\
         X-Postman-To: <d@d.test> NOTIFY=NEVER\r\n\
         X-Postman-To: e@d.test\r\n\
         X-Postman-Ret: HDRS\r\nX-Postman-Envid: QQ314159\r\nX-Postman-Requiretls: yes\r\n\r\n",
        "a field per recipient with parameters, runs of the rest bare; \
         a recipient not in the list is not written"
    );
    let env = parse_envelope(&block).expect("parses back");
    assert_eq!(env.recipients, rcpts, "order kept");
    let mut expected = with.clone();
    expected.remove("nobody@d.test");
    assert_eq!(env.rcpt_params, expected, "parameters kept");
    assert_eq!(env.params.envid.as_deref(), Some("QQ314159"), "ENVID");
    assert!(env.params.requiretls, "REQUIRETLS");
}

/// parse(render(x)) == x for every mix of recipients with and without
/// parameters, and rendering what was read back gives the same bytes.
#[test]
fn every_mix_of_parameters_round_trips() {
    let all = ["a@d.test", "\"x, y\"@d.test", "c@d.test", "d@d.test"];
    let kinds = [
        None,
        Some("NOTIFY=NEVER"),
        Some("NOTIFY=DELAY,SUCCESS"),
        Some("ORCPT=rfc822;x+2C+20y@d.test"),
        Some("NOTIFY=FAILURE ORCPT=utf-8;caf\u{e9}@d.test"),
    ];
    // Every assignment of a kind to each of the four recipients.
    for code in 0..kinds.len().pow(all.len() as u32) {
        let mut with = BTreeMap::new();
        let mut rest = code;
        for rcpt in all {
            if let Some(text) = kinds[rest % kinds.len()] {
                with.insert(rcpt.to_string(), RcptParams::parse(text).expect("test"));
            }
            rest /= kinds.len();
        }
        let rcpts = strings(&all);
        let block = render_envelope("s@e.org", &rcpts, &with, at(1), &[]).expect("renders");
        let env = parse_envelope(&block).expect("parses back");
        assert_eq!(
            (&env.recipients, &env.rcpt_params),
            (&rcpts, &with),
            "mix {code}"
        );
        let again = render_envelope(&env.sender, &env.recipients, &env.rcpt_params, at(1), &[]);
        assert_eq!(again.as_ref(), Ok(&block), "mix {code} renders to itself");
    }
}

#[test]
fn parameters_and_fields_the_parser_would_refuse_are_refused() {
    let rcpts = strings(&["a@d.test"]);
    let orcpt = |addr_type: &str, address: &str| RcptParams {
        notify: None,
        orcpt: Some(crate::queue::params::Orcpt {
            addr_type: addr_type.to_owned(),
            address: address.to_owned(),
        }),
    };
    for (name, bad) in [
        ("line break", orcpt("rfc822", "a@d\r\nX-Postman-To: <x@y>")),
        ("space", orcpt("rfc822", "a b@d")),
        ("no type", orcpt("", "a@d")),
        ("type with a space", orcpt("rfc 822", "a@d")),
        ("not xtext", orcpt("rfc822", "a=b@d")),
    ] {
        let with = BTreeMap::from([("a@d.test".to_string(), bad)]);
        let err = render_envelope("s@e.org", &rcpts, &with, None, &[]).expect_err(name);
        assert!(
            matches!(err, EnvelopeError::BadParam { .. }),
            "{name}: {err}"
        );
    }
    for (name, value) in [
        ("X-Postman-Ret", "ALL"),
        ("X-Postman-Envid", "a b"),
        ("X-Postman-Envid", &"x".repeat(101)),
        ("X-Postman-Requiretls", "no"),
    ] {
        let extra = vec![(name.to_string(), value.to_string())];
        let err =
            render_envelope("s@e.org", &rcpts, &BTreeMap::new(), None, &extra).expect_err(value);
        assert!(
            matches!(err, EnvelopeError::BadParam { .. }),
            "{name}: {value}: {err}"
        );
    }
    let twice = vec![
        ("X-Postman-Ret".to_string(), "FULL".to_string()),
        ("x-postman-ret".to_string(), "HDRS".to_string()),
    ];
    let err =
        render_envelope("s@e.org", &rcpts, &BTreeMap::new(), None, &twice).expect_err("RET twice");
    assert!(matches!(err, EnvelopeError::DuplicateParam { .. }), "{err}");
}

#[test]
fn a_split_keeps_each_recipients_parameters_with_it() {
    // 40,000 recipients, every third with parameters: about 1.9 MB.
    let many: Vec<String> = (0..40_000)
        .map(|i| format!("user{i:06}@dom.test"))
        .collect();
    let with: BTreeMap<String, RcptParams> = many
        .iter()
        .enumerate()
        .filter(|(i, _)| i.is_multiple_of(3))
        .map(|(i, rcpt)| {
            let text = format!("NOTIFY=NEVER ORCPT=rfc822;orig{i}@src.test");
            (rcpt.clone(), RcptParams::parse(&text).expect("test"))
        })
        .collect();
    let retry = vec![("X-Postman-Attempts".to_string(), "3".to_string())];
    let blocks = render_envelopes("s@e.org", &many, &with, at(9), &[], &retry).expect("renders");
    assert!(blocks.len() >= 2, "{} blocks", blocks.len());
    let mut next = 0;
    for (i, block) in blocks.iter().enumerate() {
        assert_eq!(block.recipients.start, next, "block {i} follows on");
        next = block.recipients.end;
        let base = block.bytes.len() - "X-Postman-Attempts: 3\r\n".len();
        assert!(base <= MAX_WRITTEN_BLOCK, "block {i}: {base} bytes");
        let env = parse_envelope(&block.bytes).expect("each block parses back");
        let share = &many[block.recipients.clone()];
        assert_eq!(env.recipients, share, "block {i}: recipients");
        let expected: BTreeMap<String, RcptParams> = with
            .iter()
            .filter(|(rcpt, _)| share.contains(rcpt))
            .map(|(r, p)| (r.clone(), p.clone()))
            .collect();
        assert_eq!(env.rcpt_params, expected, "block {i}: parameters");
    }
    assert_eq!(next, many.len(), "every recipient in a block");
    let first = &blocks[0];
    assert!(
        first.bytes.len() + 300 > MAX_WRITTEN_BLOCK,
        "the first block is full: {} bytes",
        first.bytes.len()
    );
}

#[test]
fn a_pending_subset_with_parameters_needs_no_more_room() {
    // A block as postman writes it, read back: any subset renders smaller.
    let all: Vec<String> = (0..3000).map(|i| format!("{i:x}@h.t")).collect();
    let with: BTreeMap<String, RcptParams> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 < 2)
        .map(|(_, r)| (r.clone(), RcptParams::parse("NOTIFY=NEVER").expect("test")))
        .collect();
    let written = render_envelope("s@e.org", &all, &with, at(1), &[]).expect("renders");
    let env = parse_envelope(&written).expect("parses");
    for (name, keep) in [
        (
            "every other",
            &(|i: usize| i.is_multiple_of(2)) as &dyn Fn(usize) -> bool,
        ),
        ("those with parameters", &|i: usize| i % 5 < 2),
        ("those without", &|i: usize| i % 5 >= 2),
        ("all but the first", &|i: usize| i > 0),
    ] {
        let pending: Vec<String> = env
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, r)| r.clone())
            .collect();
        let again =
            render_envelope("s@e.org", &pending, &env.rcpt_params, at(1), &[]).expect("renders");
        assert!(
            again.len() <= written.len(),
            "{name}: {} bytes from {}",
            again.len(),
            written.len()
        );
    }
}

#[test]
fn the_room_for_a_state_covers_any_block_a_receiving_server_writes() {
    // The densest forms: LF, no space after the colon, bare sender, one
    // recipient a field, parameters on most.
    let rcpts: Vec<String> = (0..8000).map(|i| format!("{i:x}@h.t")).collect();
    let mut dense = String::from("X-Postman-From:s@e.t\n");
    for (i, rcpt) in rcpts.iter().enumerate() {
        match i % 4 {
            0 => dense.push_str(&format!("X-Postman-To:{rcpt}\n")),
            1 => dense.push_str(&format!("X-Postman-To:<{rcpt}> NOTIFY=NEVER\n")),
            2 => dense.push_str(&format!("X-Postman-To:<{rcpt}> ORCPT=rfc822;{rcpt}\n")),
            _ => dense.push_str(&format!("X-Postman-To:<{rcpt}> notify=delay\n")),
        }
    }
    dense.push_str("X-Postman-Ret:FULL\nX-Postman-Envid:x\n\n");
    let env = parse_envelope(dense.as_bytes()).expect("parses");
    let retry = vec![
        ("X-Postman-Attempts".to_string(), "4294967295".to_string()),
        ("X-Postman-Last-Error".to_string(), "e".repeat(900)),
    ];
    let blocks = render_envelopes(
        &env.sender,
        &env.recipients,
        &env.rcpt_params,
        Some(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)),
        &env.extra,
        &retry,
    )
    .expect("renders");
    assert_eq!(blocks.len(), 1, "one block");
    let room = room_for_state(dense.len() as u64);
    assert!(
        blocks[0].bytes.len() as u64 <= room,
        "{} bytes rendered from {} read, {room} set aside",
        blocks[0].bytes.len(),
        dense.len()
    );
    assert!(
        blocks[0].bytes.len() > dense.len(),
        "the test's block is denser than postman's: {} from {}",
        blocks[0].bytes.len(),
        dense.len()
    );
}
