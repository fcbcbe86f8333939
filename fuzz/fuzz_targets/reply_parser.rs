//! Fuzzes the streaming reply parser (RFC 5321 §4.2, §4.5.3.1.5): any
//! bytes, fed in any split, never panic, and everything that comes out
//! keeps the parser's promises:
//!
//! * every reply code is three digits from 200 to 599, and an enhanced code
//!   has the reply's class;
//! * a reply has 1 to `MAX_LINES` lines, each shorter than `MAX_LINE_LEN`;
//! * what stays buffered is less than one line: the buffer is bounded;
//! * errors are sticky;
//! * the same bytes fed at once give the same replies (split-invariance);
//! * a reply rendered back to the wire parses to itself (decode, re-encode,
//!   compare), when its lines fit;
//! * an EHLO reply's keywords parse without panicking, and SIZE keeps a
//!   number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postman::smtp::{Extensions, Reply, ReplyError, ReplyParser, MAX_LINES, MAX_LINE_LEN};

/// Parses `chunks` in order; returns the replies and the error, if any.
fn parse(chunks: &[&[u8]]) -> (Vec<Reply>, Option<ReplyError>) {
    let mut parser = ReplyParser::new();
    let mut replies = Vec::new();
    for chunk in chunks {
        parser.push(chunk);
        loop {
            match parser.next_reply() {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => break,
                Err(error) => {
                    // Sticky: the same error again, whatever comes next.
                    parser.push(b"250 ok\r\n");
                    assert_eq!(parser.next_reply(), Err(error.clone()), "sticky error");
                    return (replies, Some(error));
                }
            }
        }
        assert!(
            parser.buffered().len() < MAX_LINE_LEN,
            "{} octets buffered without a line end",
            parser.buffered().len()
        );
    }
    (replies, None)
}

fn check_reply(reply: &Reply) {
    let code = reply.code.get();
    assert!((200..=599).contains(&code), "code {code}");
    if let Some(enhanced) = reply.enhanced {
        assert_eq!(
            enhanced.class,
            reply.code.class(),
            "enhanced class of {reply:?}"
        );
        assert!(
            enhanced.subject <= 999 && enhanced.detail <= 999,
            "{enhanced}"
        );
    }
    assert!(
        (1..=MAX_LINES).contains(&reply.lines.len()),
        "{} lines",
        reply.lines.len()
    );
    for line in &reply.lines {
        assert!(!line.contains('\n'), "a line holds LF: {line:?}");
    }
    // Re-encode and compare, when every re-encoded line fits the cap.
    let wire = reply.to_wire();
    if wire.split_inclusive('\n').all(|l| l.len() <= MAX_LINE_LEN) {
        let back: Reply = wire
            .parse()
            .unwrap_or_else(|e| panic!("{wire:?} from {reply:?} does not parse: {e}"));
        assert_eq!(&back, reply, "round trip through {wire:?}");
    }
    let _ = reply.to_string();
    if reply.code.get() == 250 {
        let extensions = Extensions::from_ehlo(reply);
        assert!(extensions.other.len() < reply.lines.len());
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks a chunk size, so splits vary with the input.
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let size = usize::from(first % 16) + 1;
    let chunks: Vec<&[u8]> = input.chunks(size).collect();
    let (replies, error) = parse(&chunks);
    for reply in &replies {
        check_reply(reply);
    }
    // Split-invariance: one push gives the same result.
    let (whole, whole_error) = parse(&[input]);
    assert_eq!(whole, replies, "replies depend on the split");
    assert_eq!(
        whole_error.is_some(),
        error.is_some(),
        "errors depend on the split"
    );
});
