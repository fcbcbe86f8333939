//! Fuzzes what postman reads from an MTA-STS policy server and its DNS
//! record (RFC 8461), all of which a domain's owner, or anyone on the path
//! to its policy server before TLS checks it, controls:
//!
//! * the HTTPS response check (`mta_sts::http::response`) at each stream
//!   end: a body it accepts is never over `MAX_BODY`, and is a suffix of
//!   the input;
//! * the policy parser: a policy it accepts renders to a text that parses
//!   back to the same policy (decode, re-encode, compare), with max_age
//!   within the RFC's bound and mx patterns in enforce/testing mode;
//! * the `_mta-sts` TXT record parser, and MX pattern matching against the
//!   input's lines as host names, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postman::mta_sts::http::{response, End, MAX_BODY};
use postman::mta_sts::{Mode, Policy, Record, MAX_MAX_AGE};

fuzz_target!(|input: &[u8]| {
    for end in [End::Open, End::Closed, End::Cut] {
        if let Ok(Some(body)) = response(input, end) {
            assert!(body.len() <= MAX_BODY, "a body of {} bytes", body.len());
            assert!(input.ends_with(body) || input.len() >= body.len());
        }
    }
    let text = String::from_utf8_lossy(input);
    if let Ok(policy) = Policy::parse(&text) {
        assert!(policy.max_age <= MAX_MAX_AGE, "max_age {}", policy.max_age);
        if policy.mode != Mode::None {
            assert!(!policy.mx.is_empty(), "{:?} without mx", policy.mode);
        }
        let rendered = policy.to_string();
        let again = Policy::parse(&rendered)
            .unwrap_or_else(|e| panic!("rendered {rendered:?} does not parse: {e}"));
        assert_eq!(again, policy, "parse(render(p)) != p for {rendered:?}");
        for host in text.lines() {
            let _ = policy.matches(host);
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    if let Ok(record) = Record::from_txt(&lines) {
        assert!(
            !record.id.is_empty() && record.id.len() <= 32,
            "id {:?}",
            record.id
        );
    }
});
