//! Tests of the retry state in the envelope header block.

use super::*;
use crate::queue::parse_envelope;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A queue file's tie, for state blocks.
const TIE: crate::queue::Tie = crate::queue::Tie {
    size: 1234,
    hash: 0x0123_4567_89ab_cdef,
};

/// The one block a short recipient list renders to.
fn one_block(blocks: Result<Vec<Block>, EnvelopeError>) -> Vec<u8> {
    let mut blocks = blocks.expect("renders");
    assert_eq!(blocks.len(), 1, "one block: {blocks:?}");
    blocks.remove(0).bytes
}

fn envelope(block: &str) -> Envelope {
    parse_envelope(block.as_bytes()).unwrap_or_else(|e| panic!("test block {block:?}: {e}"))
}

const BASE: &str =
    "X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>\r\n";

#[test]
fn bare_envelope_is_a_fresh_state() {
    let env = envelope(&format!("{BASE}\r\n"));
    assert_eq!(
        RetryState::from_envelope(&env),
        Ok(RetryState::default()),
        "state of {BASE:?}"
    );
    assert!(
        RetryState::default().fields().is_empty(),
        "fresh state writes no field"
    );
}

#[test]
fn reads_every_field() {
    let block = format!(
        "{BASE}X-Postman-Attempts: 3\r\nx-postman-first-attempt: 1100\r\n\
         X-Postman-Last-Attempt: 1300\r\nX-Postman-Next-Attempt: 2500\r\n\
         X-Postman-Last-Error: host mx.d.test said: 451 try\r\n later\r\n\
         X-Postman-Delay-Warned: 1250\r\nX-Postman-Other: kept\r\n\
         X-Postman-Requiretls-Refused: 5.7.30\r\n\r\n"
    );
    let state = RetryState::from_envelope(&envelope(&block)).expect("valid state");
    let want = RetryState {
        attempts: 3,
        first_attempt: Some(at(1100)),
        last_attempt: Some(at(1300)),
        next_attempt: Some(at(2500)),
        last_error: Some("host mx.d.test said: 451 try later".into()),
        delay_warned: Some(at(1250)),
        requiretls_refused: Some(crate::smtp::Outcome::REQUIRETLS_UNSUPPORTED),
    };
    assert_eq!(state, want, "state of {block:?}");
}

#[test]
fn malformed_values_name_the_field() {
    let cases = [
        ("X-Postman-Attempts: three", ATTEMPTS, "\"three\""),
        (
            "X-Postman-Requiretls-Refused: five",
            REQUIRETLS_REFUSED,
            "enhanced status",
        ),
        ("X-Postman-Attempts: -1", ATTEMPTS, "count"),
        ("X-Postman-Attempts: 4294967296", ATTEMPTS, "count"),
        ("X-Postman-Attempts:", ATTEMPTS, "count"),
        (
            "X-Postman-First-Attempt: yesterday",
            FIRST_ATTEMPT,
            "unix seconds",
        ),
        ("X-Postman-Last-Attempt: 1.5", LAST_ATTEMPT, "unix seconds"),
        (
            "X-Postman-Next-Attempt: 99999999999999999999999",
            NEXT_ATTEMPT,
            "unix seconds",
        ),
        ("X-Postman-Delay-Warned: +5", DELAY_WARNED, "unix seconds"),
        (
            "X-Postman-Attempts: 1\r\nX-POSTMAN-ATTEMPTS: 2",
            ATTEMPTS,
            "appears twice",
        ),
    ];
    for (fields, header, text) in cases {
        let block = format!("{BASE}{fields}\r\n\r\n");
        let err = RetryState::from_envelope(&envelope(&block))
            .expect_err(&format!("{fields:?} must be refused"));
        assert_eq!(err.header, header, "header named for {fields:?}");
        let message = err.to_string();
        assert!(
            message.contains(header),
            "{fields:?}: {message:?} lacks {header}"
        );
        assert!(
            message.contains(text),
            "{fields:?}: {message:?} lacks {text:?}"
        );
    }
}

#[test]
fn record_attempt_counts_and_keeps_the_first_time() {
    let mut state = RetryState {
        next_attempt: Some(at(5)),
        ..RetryState::default()
    };
    state.record_attempt(at(100), "connect to mx: refused");
    state.record_attempt(at(400), "451 4.3.0\r\nbusy");
    assert_eq!(state.attempts, 2, "attempts");
    assert_eq!(state.first_attempt, Some(at(100)), "first attempt kept");
    assert_eq!(state.last_attempt, Some(at(400)), "last attempt");
    assert_eq!(state.next_attempt, None, "next attempt cleared");
    assert_eq!(state.last_error.as_deref(), Some("451 4.3.0 busy"), "error");
    state.record_attempt(at(500), " \r\n");
    assert_eq!(state.last_error, None, "a blank error is no error");
    state.attempts = u32::MAX;
    state.record_attempt(at(600), "x");
    assert_eq!(state.attempts, u32::MAX, "attempts saturate");
}

#[test]
fn one_line_table() {
    let long = "é".repeat(MAX_ERROR_LEN);
    let cases: &[(&str, &str)] = &[
        ("", ""),
        ("plain", "plain"),
        ("  a\r\n b\tc\x00d\x1b[0m  ", "a b c d [0m"),
        ("a   b", "a b"),
        ("ünïcode stays", "ünïcode stays"),
        ("\u{3000}\u{a0}wide\u{2028}", "wide"),
        ("\x00\u{3000}x\u{85}", "x"),
    ];
    for (input, want) in cases {
        assert_eq!(one_line(input), *want, "one_line({input:?})");
    }
    let cut = one_line(&long);
    assert!(cut.len() <= MAX_ERROR_LEN, "cut to {} bytes", cut.len());
    assert_eq!(cut.len(), MAX_ERROR_LEN, "é is 2 bytes, 900 is even");
    let odd = format!("a{long}");
    let cut = one_line(&odd);
    assert_eq!(cut.len(), MAX_ERROR_LEN - 1, "cut at a char boundary");
}

#[test]
fn render_block_round_trips_and_keeps_unknown_extras() {
    let block = format!(
        "{BASE}X-Postman-To: <b@d.test>, <c@d.test>\r\nX-Postman-Attempts: 1\r\n\
         X-Postman-Queue-Note: from relay 7\r\nX-Postman-Last-Error: old\r\n\r\nSubject: hi\r\n\r\nbody\r\n"
    );
    let env = envelope(&block);
    let mut state = RetryState::from_envelope(&env).expect("state");
    state.record_attempt(
        at(2000),
        "host mx said: 452 full\n(in reply to RCPT TO command)",
    );
    state.next_attempt = Some(at(2600));
    let remaining = vec!["b@d.test".to_string(), "c@d.test".to_string()];
    let new_block = one_block(state.render_state(&env, &remaining, at(1000), TIE));
    let text = String::from_utf8(new_block.clone()).expect("ascii block");
    assert!(
        text.ends_with("\r\n\r\n"),
        "block ends with the empty line: {text:?}"
    );
    assert_eq!(
        text.matches("X-Postman-Attempts").count(),
        1,
        "old state field replaced: {text:?}"
    );
    assert!(
        text.contains("X-Postman-Queue-Note: from relay 7\r\n"),
        "unknown extra kept: {text:?}"
    );

    let back = parse_envelope(&new_block).expect("new block parses");
    assert_eq!(back.sender, "s@e.org", "sender");
    assert_eq!(back.recipients, remaining, "recipients");
    assert_eq!(back.arrival, Some(at(1000)), "arrival");
    assert_eq!(back.body_offset, new_block.len() as u64, "body offset");
    let state_back = RetryState::from_envelope(&back).expect("state back");
    assert_eq!(state_back, state, "state round trip through {text:?}");
    assert_eq!(state_back.attempts, 2, "attempts");
}

#[test]
fn render_block_pins_a_missing_arrival() {
    let env = envelope("X-Postman-From: <>\nX-Postman-To: <a@d.test>\n\n");
    assert_eq!(env.arrival, None, "no date in the original");
    let block = one_block(RetryState::default().render_state(&env, &env.recipients, at(77), TIE));
    let back = parse_envelope(&block).expect("parses");
    assert_eq!(back.arrival, Some(at(77)), "mtime arrival pinned");
    assert_eq!(back.sender, "", "null sender kept");
}

#[test]
fn render_block_refuses_no_recipients() {
    let env = envelope(&format!("{BASE}\r\n"));
    let err = RetryState::default()
        .render_state(&env, &[], at(1), TIE)
        .expect_err("no recipients left is the caller's job (complete the file)");
    assert_eq!(err, EnvelopeError::MissingRecipients, "error");
}

proptest::proptest! {
    /// Any state, with any error text, survives the envelope block.
    #[test]
    fn any_state_round_trips(
        attempts in proptest::num::u32::ANY,
        times in proptest::collection::vec(proptest::option::of(0u64..1 << 40), 4),
        error in "(\\PC|[\\s\\x00-\\x1f\u{85}\u{a0}\u{2028}\u{3000}]){0,1200}",
        refused in proptest::bool::ANY,
    ) {
        let t = |i: usize| times[i].map(at);
        let mut state = RetryState {
            attempts,
            first_attempt: t(0),
            last_attempt: t(1),
            next_attempt: t(2),
            last_error: None,
            delay_warned: t(3),
            requiretls_refused: refused.then_some(crate::smtp::Outcome::REQUIRETLS_NO_TLS),
        };
        let line = one_line(&error);
        state.last_error = (!line.is_empty()).then_some(line);
        let env = envelope(&format!("{BASE}\r\n"));
        let block = one_block(state.render_state(&env, &env.recipients, at(1000), TIE));
        let back = parse_envelope(&block).expect("parses");
        proptest::prop_assert_eq!(RetryState::from_envelope(&back), Ok(state));
    }
}

#[test]
fn the_largest_state_fits_the_room_kept_for_it() {
    let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
    let state = RetryState {
        attempts: u32::MAX,
        first_attempt: Some(far),
        last_attempt: Some(far),
        next_attempt: Some(far),
        last_error: Some("é".repeat(MAX_ERROR_LEN)),
        delay_warned: Some(far),
        requiretls_refused: Some(crate::smtp::Outcome::REQUIRETLS_UNSUPPORTED),
    };
    let size: usize = state
        .fields()
        .iter()
        .map(|(name, value)| name.len() + ": ".len() + value.len() + "\r\n".len())
        .sum();
    assert!(
        size <= crate::queue::RETRY_HEADROOM,
        "{size} bytes of retry fields"
    );
}

#[test]
fn a_partial_delivery_keeps_the_parameters_of_those_left() {
    let block = "X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\n\
         X-Postman-Ret: FULL\r\nX-Postman-Envid: QQ+2B1\r\nX-Postman-Requiretls: yes\r\n\
         X-Postman-To: <a@d.test> NOTIFY=SUCCESS ORCPT=rfc822;a@d.test\r\n\
         X-Postman-To: <b@d.test> NOTIFY=NEVER\r\n\
         X-Postman-To: c@d.test\r\n\r\n";
    let env = envelope(block);
    let mut state = RetryState::default();
    state.record_attempt(at(2000), "451 try later");
    // a was delivered; b and c wait.
    let pending = vec!["b@d.test".to_string(), "c@d.test".to_string()];
    let new_block = one_block(state.render_state(&env, &pending, at(1000), TIE));
    let text = String::from_utf8(new_block.clone()).expect("ascii");
    assert!(
        text.contains("X-Postman-To: <b@d.test> NOTIFY=NEVER\r\n"),
        "b keeps NOTIFY=NEVER: {text:?}"
    );
    assert!(!text.contains("a@d.test"), "a is gone: {text:?}");
    let back = parse_envelope(&new_block).expect("parses");
    assert_eq!(back.recipients, pending, "recipients of {text:?}");
    assert_eq!(
        back.recipient_params("b@d.test"),
        env.recipient_params("b@d.test"),
        "b's parameters in {text:?}"
    );
    assert_eq!(back.recipient_params("c@d.test"), None, "c has none");
    assert_eq!(back.params, env.params, "RET, ENVID and REQUIRETLS kept");
    assert_eq!(RetryState::from_envelope(&back), Ok(state), "state");

    // Read back and rendered again with every recipient: the same block.
    let again = one_block(
        RetryState::from_envelope(&back)
            .expect("state")
            .render_state(&back, &back.recipients, at(1000), TIE),
    );
    assert_eq!(
        again, new_block,
        "a state file rewritten as it stands is unchanged"
    );
}
