//! Fuzzes the envelope header block at the head of every queued file
//! (DESIGN.md "The queue on disk"): `parse_envelope` on any bytes, and
//! `render_envelope` on what it parsed and on made-up envelopes. Never a
//! panic, and the laws a queue file's reader and writers rely on:
//!
//! * `body_offset` is just after the empty line that ends the block, within
//!   the input and within `MAX_ENVELOPE_BLOCK`;
//! * no address or field value parsed holds CR, LF or NUL, so none can
//!   smuggle a line into a rewritten block or an SMTP command;
//! * there is a recipient, and every address is `local@domain` (the sender
//!   may be empty, the null sender);
//! * what parses renders (unless it is dated before 1970, which a block
//!   cannot say in unix seconds), to a block that parses to the same
//!   envelope (DSN parameters included), whose `body_offset` is the
//!   block's length, and that renders to itself (decode, re-encode,
//!   compare);
//! * whatever `render_envelope` accepts, made up from the input, parses
//!   back to what was rendered (field values trimmed, as every field is).
#![no_main]

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use libfuzzer_sys::fuzz_target;
use postman::queue::{parse_envelope, render_envelope, Envelope, MAX_ENVELOPE_BLOCK};

fn check_parsed(input: &[u8], envelope: &Envelope) {
    let offset = usize::try_from(envelope.body_offset).expect("offset fits usize");
    assert!(
        offset <= input.len(),
        "body_offset {offset} past {} bytes",
        input.len()
    );
    assert!(
        offset <= MAX_ENVELOPE_BLOCK,
        "body_offset {offset} past the limit"
    );
    let block = &input[..offset];
    assert!(
        block.ends_with(b"\n\n")
            || block.ends_with(b"\n\r\n")
            || block == b"\n"
            || block == b"\r\n",
        "the block does not end with an empty line: {:?}",
        String::from_utf8_lossy(&block[block.len().saturating_sub(16)..])
    );
    assert!(!envelope.recipients.is_empty(), "no recipient");
    let smuggles = |text: &str| text.contains(['\r', '\n', '\0']);
    for address in std::iter::once(&envelope.sender).chain(&envelope.recipients) {
        assert!(!smuggles(address), "address {address:?}");
    }
    for rcpt in &envelope.recipients {
        assert!(rcpt.contains('@'), "recipient {rcpt:?} is not local@domain");
    }
    assert!(
        envelope.sender.is_empty() || envelope.sender.contains('@'),
        "sender {:?}",
        envelope.sender
    );
    for (name, value) in &envelope.extra {
        assert!(
            !smuggles(name) && !smuggles(value),
            "field {name:?}: {value:?}"
        );
    }
}

/// `rendered` (from `envelope`) parses back to the same envelope, with the
/// block's length as its body offset, and renders to itself.
fn check_round_trip(envelope: &Envelope, rendered: &[u8]) {
    let back = parse_envelope(rendered).unwrap_or_else(|e| {
        panic!(
            "rendered block does not parse: {e}\n{envelope:?}\n{:?}",
            String::from_utf8_lossy(rendered)
        )
    });
    assert_eq!(
        back.body_offset,
        rendered.len() as u64,
        "body_offset of a rendered block"
    );
    assert_eq!(
        (
            &back.sender,
            &back.recipients,
            back.arrival,
            &back.extra,
            &back.params,
            &back.rcpt_params
        ),
        (
            &envelope.sender,
            &envelope.recipients,
            envelope.arrival,
            &envelope.extra,
            &envelope.params,
            &envelope.rcpt_params
        ),
        "round trip through {:?}",
        String::from_utf8_lossy(rendered)
    );
    let again = render_envelope(
        &back.sender,
        &back.recipients,
        &back.rcpt_params,
        back.arrival,
        &back.extra,
    )
    .unwrap_or_else(|e| panic!("a rendered block does not render again: {e}"));
    assert_eq!(again, rendered, "rendering is not stable");
}

/// An envelope made up from `input`: NUL-separated fields, the first the
/// sender, then recipients until an empty field, then `X-Postman-` field
/// names and values in pairs.
fn made_up(input: &[u8]) -> (String, Vec<String>, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(input);
    let mut parts = text.split('\0');
    let sender = parts.next().unwrap_or_default().to_owned();
    let recipients: Vec<String> = parts
        .by_ref()
        .take_while(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let rest: Vec<&str> = parts.collect();
    let extra = rest
        .chunks(2)
        .map(|pair| {
            (
                format!("X-Postman-{}", pair[0]),
                pair.get(1).copied().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (sender, recipients, extra)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(envelope) = parse_envelope(input) else {
            return;
        };
        check_parsed(input, &envelope);
        if envelope.arrival.is_some_and(|t| t < UNIX_EPOCH) {
            return;
        }
        // scripts/fuzz.sh keeps inputs to 8 KB, far below the limit, so the
        // rendered block is too.
        let rendered = render_envelope(
            &envelope.sender,
            &envelope.recipients,
            &envelope.rcpt_params,
            envelope.arrival,
            &envelope.extra,
        )
        .unwrap_or_else(|e| panic!("what parsed does not render: {e}\n{envelope:?}"));
        check_round_trip(&envelope, &rendered);
    } else {
        let (sender, recipients, extra) = made_up(input);
        let arrival = (mode & 2 != 0)
            .then(|| UNIX_EPOCH + std::time::Duration::from_secs(u64::from(mode) << 24));
        let none = BTreeMap::new();
        let Ok(rendered) = render_envelope(&sender, &recipients, &none, arrival, &extra) else {
            return;
        };
        let envelope = parse_envelope(&rendered).unwrap_or_else(|e| {
            panic!(
                "rendered block does not parse: {e}\n{:?}",
                String::from_utf8_lossy(&rendered)
            )
        });
        check_parsed(&rendered, &envelope);
        // Addresses come back as given, but for recipients named again
        // (the same local part, the same domain up to case, a trailing dot
        // and its A-label form), kept once: what comes back is the input
        // with some later mentions left out, the count of them says how
        // many, and no address is left twice.
        let mut rest = recipients.iter();
        let in_order = envelope
            .recipients
            .iter()
            .all(|kept| rest.any(|given| given == kept));
        let mut seen = std::collections::HashSet::new();
        let distinct = envelope.recipients.iter().all(|r| seen.insert(r));
        assert!(
            envelope.sender == sender
                && in_order
                && distinct
                && envelope.recipients.len() + envelope.duplicates == recipients.len(),
            "addresses {sender:?} {recipients:?} through {:?} came back as {:?} ({} duplicates)",
            String::from_utf8_lossy(&rendered),
            envelope.recipients,
            envelope.duplicates
        );
        let trimmed: Vec<(String, String)> = extra
            .iter()
            .map(|(name, value)| (name.clone(), value.trim().to_owned()))
            .collect();
        assert_eq!(envelope.extra, trimmed, "fields");
        let normal = render_envelope(
            &envelope.sender,
            &envelope.recipients,
            &envelope.rcpt_params,
            arrival,
            &envelope.extra,
        )
        .unwrap_or_else(|e| panic!("what parsed does not render: {e}\n{envelope:?}"));
        check_round_trip(&envelope, &normal);
    }
});
