//! Fuzzes the reader of a domain's `<domain>/.backoff` file
//! (`parse_backoff`, a pure function over the bytes read with a limit) and
//! its writer (`render_backoff`). Never a panic, and the laws the
//! dispatcher, `postman flush` and `postman queue summary` rely on:
//!
//! * an accepted `until` is never after the year 9999 (`MAX_UNTIL`), so
//!   adding it to the epoch, and the wait it leaves to an `Instant`, cannot
//!   overflow;
//! * `remaining` at any `now` is at most the longest wait asked for;
//! * the error is one line, as the writer keeps it;
//! * parse, render, parse gives the same backoff, and rendering that
//!   renders the same text (decode, re-encode, compare).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use postman::queue::{parse_backoff, render_backoff, MAX_UNTIL};

fuzz_target!(|input: &[u8]| {
    let Ok(backoff) = parse_backoff(input) else {
        return;
    };
    let until = backoff
        .until
        .duration_since(UNIX_EPOCH)
        .expect("until after 1970")
        .as_secs();
    assert!(until <= MAX_UNTIL, "until {until} past the year 9999");
    assert!(
        !backoff.error.contains(['\r', '\n']),
        "error {:?} is not one line",
        backoff.error
    );
    // Any now, from the epoch to the last second accepted.
    let now_secs = input
        .iter()
        .fold(0u64, |n, &b| n.wrapping_mul(31).wrapping_add(u64::from(b)));
    let now = UNIX_EPOCH + Duration::from_secs(now_secs % (MAX_UNTIL + 1));
    let longest = Duration::from_secs(4000);
    if let Some(left) = backoff.remaining(now, longest) {
        assert!(left <= longest && !left.is_zero(), "remaining {left:?}");
        // What the dispatcher does with it.
        let _ = std::time::Instant::now()
            .checked_add(left)
            .expect("fits an Instant");
    }
    let text = render_backoff(&backoff);
    let again = parse_backoff(text.as_bytes())
        .unwrap_or_else(|e| panic!("rendered {text:?} does not parse: {e}"));
    assert_eq!(again, backoff, "parse(render(b)) != b for {text:?}");
    assert_eq!(render_backoff(&again), text, "render is not stable");
});
