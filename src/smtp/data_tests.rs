//! Tests of dot-stuffing: fixed cases, and the laws (streamed equals
//! one-shot, no bare CR or LF, no early end of data, unstuffing returns the
//! normalised input).

use proptest::prelude::*;

use super::*;

fn one_shot(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.push(body, &mut out);
    stuffer.finish(&mut out);
    out
}

fn streamed(chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stuffer = DotStuffer::new();
    for chunk in chunks {
        stuffer.push(chunk, &mut out);
    }
    stuffer.finish(&mut out);
    out
}

/// What the body means line by line: every CRLF, bare CR or bare LF is one
/// line end, written CRLF; an open last line is closed.
fn normalise(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            _ => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Strips the terminator and the stuffed dots (RFC 5321 §4.5.2, receiver side).
fn unstuff(wire: &[u8]) -> Vec<u8> {
    let body = wire.strip_suffix(b".\r\n").unwrap_or(wire);
    let mut out = Vec::new();
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// True when `wire` holds a CR not followed by LF, or an LF not after CR.
fn has_bare_cr_or_lf(wire: &[u8]) -> bool {
    wire.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => wire.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || wire.get(i - 1) != Some(&b'\r'),
        _ => false,
    })
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fixed_cases() {
    let cases: [(&[u8], &[u8]); 17] = [
        (b"", b".\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a\n", b"a\r\n.\r\n"),
        (b"a\r", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b"..x\r\n", b"...x\r\n.\r\n"),
        (b"a.b\r\n.c", b"a.b\r\n..c\r\n.\r\n"),
        // The smuggling shapes: never an early CRLF.CRLF.
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"\r\r\n", b"\r\n\r\n.\r\n"),
        (b"\n\r", b"\r\n\r\n.\r\n"),
        (b"x\0\xff\r\n", b"x\0\xff\r\n.\r\n"),
    ];
    for (body, want) in cases {
        assert_eq!(
            show(&one_shot(body)),
            show(want),
            "stuffing {:?}",
            show(body)
        );
    }
}

#[test]
fn byte_at_a_time_equals_one_shot() {
    let body = b"Subject: x\n\n.\r\n..\r.\n\r\n.line\rend\r";
    let chunks: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(
        show(&streamed(&chunks)),
        show(&one_shot(body)),
        "body {:?} one byte at a time",
        show(body)
    );
}

#[test]
fn stuffer_is_reusable_after_finish() {
    let mut out = Vec::new();
    let mut stuffer = DotStuffer::new();
    stuffer.push(b"a\r", &mut out);
    stuffer.finish(&mut out);
    stuffer.push(b"\n.b", &mut out);
    stuffer.finish(&mut out);
    assert_eq!(
        show(&out),
        "a\r\n.\r\n\r\n..b\r\n.\r\n",
        "two bodies \"a\\r\" then \"\\n.b\""
    );
}

/// Bodies rich in the bytes that matter.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'.'),
            Just(b'\r'),
            Just(b'\n'),
            Just(b'a'),
            Just(b' '),
            any::<u8>()
        ],
        0..200,
    )
}

proptest! {
    #[test]
    fn streamed_equals_one_shot(body in body(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for at in points {
            chunks.push(&body[from..at]);
            from = at;
        }
        chunks.push(&body[from..]);
        prop_assert_eq!(show(&streamed(&chunks)), show(&one_shot(&body)), "body {:?} in chunks {:?}", show(&body), chunks);
    }

    #[test]
    fn no_bare_cr_or_lf(body in body()) {
        let wire = one_shot(&body);
        prop_assert!(!has_bare_cr_or_lf(&wire), "body {:?} gave {:?}", show(&body), show(&wire));
    }

    #[test]
    fn no_early_end_of_data(body in body()) {
        // As the server sees it: the line end before DATA's body, then the body.
        let mut stream = b"\r\n".to_vec();
        stream.extend_from_slice(&one_shot(&body));
        let first = stream.windows(5).position(|w| w == b"\r\n.\r\n");
        prop_assert_eq!(first, Some(stream.len() - 5), "body {:?} gave {:?}", show(&body), show(&stream));
    }

    #[test]
    fn unstuffing_returns_the_normalised_input(body in body()) {
        let wire = one_shot(&body);
        prop_assert_eq!(show(&unstuff(&wire)), show(&normalise(&body)), "body {:?}", show(&body));
    }
}

#[test]
fn line_ends_only_and_measure_fixed_cases() {
    let cases: [(&[u8], &[u8], bool); 6] = [
        (b"", b"", false),
        (b"a", b"a\r\n", false),
        (b".\n.\r\n..x", b".\r\n.\r\n..x\r\n", false),
        (b"a\rb\r\n\rc\n", b"a\r\nb\r\n\r\nc\r\n", false),
        (b"caf\xc3\xa9\n", b"caf\xc3\xa9\r\n", true),
        (b"\x80", b"\x80\r\n", true),
    ];
    for (body, want, eight_bit) in cases {
        let mut out = Vec::new();
        let mut normaliser = DotStuffer::line_ends_only();
        normaliser.push(body, &mut out);
        normaliser.end_line(&mut out);
        assert_eq!(show(&out), show(want), "BDAT form of {:?}", show(body));
        let mut measure = BodyMeasure::new();
        measure.push(body);
        assert_eq!(
            measure.size(),
            want.len() as u64,
            "size of {:?}",
            show(body)
        );
        assert_eq!(measure.eight_bit(), eight_bit, "8-bit of {:?}", show(body));
    }
}

/// `body` cut at `cuts`.
fn chunked<'a>(body: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::new();
    let mut from = 0;
    for at in points {
        chunks.push(&body[from..at]);
        from = at;
    }
    chunks.push(&body[from..]);
    chunks
}

proptest! {
    #[test]
    fn line_ends_only_is_the_normalised_input(body in body(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut out = Vec::new();
        let mut normaliser = DotStuffer::line_ends_only();
        for chunk in chunked(&body, &cuts) {
            normaliser.push(chunk, &mut out);
        }
        normaliser.end_line(&mut out);
        prop_assert_eq!(show(&out), show(&normalise(&body)), "body {:?}", show(&body));
    }

    #[test]
    fn measure_is_the_size_on_the_wire(body in body(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let mut measure = BodyMeasure::new();
        for chunk in chunked(&body, &cuts) {
            measure.push(chunk);
        }
        // RFC 1870 §3: line ends as CRLF, no stuffing, no terminator.
        prop_assert_eq!(measure.size(), normalise(&body).len() as u64, "size of {:?}", show(&body));
        prop_assert_eq!(measure.eight_bit(), body.iter().any(|&b| b >= 0x80), "8-bit of {:?}", show(&body));
        // And the stuffed DATA form is never smaller.
        prop_assert!(one_shot(&body).len() as u64 >= measure.size() + 3, "DATA form of {:?}", show(&body));
    }
}
