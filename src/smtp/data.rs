//! The DATA body on the wire (RFC 5321 §4.1.4, §4.5.2, §2.3.8): dot-stuffing,
//! line-ending normalisation and the `CRLF.CRLF` terminator; the same
//! normalisation without stuffing for BDAT (RFC 3030 §2); and the measure
//! of a body that MAIL needs (RFC 1870 §3 size, RFC 6152 8-bit octets).
//!
//! Every bare CR and every bare LF becomes CRLF, so whatever a queue file
//! holds, the server sees only CRLF line ends and can never be tricked into
//! an early end of data ("SMTP smuggling": `\n.\n`, `\r\n.\r`, `\r.\r` are
//! all sent as stuffed lines). The stuffer streams: a body pushed in any
//! chunks comes out exactly as when pushed at once.

/// Streaming dot-stuffer and line-ending normaliser.
///
/// ```
/// use postman::smtp::DotStuffer;
/// let mut out = Vec::new();
/// let mut stuffer = DotStuffer::new();
/// stuffer.push(b"a\n.b\r", &mut out);
/// stuffer.push(b"\n.\n", &mut out);
/// stuffer.finish(&mut out);
/// assert_eq!(out, b"a\r\n..b\r\n..\r\n.\r\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotStuffer {
    /// Dots are doubled (DATA); otherwise only line ends change (BDAT).
    stuffing: bool,
    /// The next byte starts a line: a '.' there is doubled.
    at_line_start: bool,
    /// The last byte was a CR, already sent as CRLF: an LF right after it
    /// belongs to that line end.
    after_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> DotStuffer {
        DotStuffer::new()
    }
}

impl DotStuffer {
    /// A stuffer at the start of a body.
    pub const fn new() -> DotStuffer {
        DotStuffer {
            stuffing: true,
            at_line_start: true,
            after_cr: false,
        }
    }

    /// A normaliser for BDAT chunks: every line end becomes CRLF, dots are
    /// left alone (RFC 3030 §2: the chunk is length-framed).
    ///
    /// ```
    /// use postman::smtp::DotStuffer;
    /// let mut out = Vec::new();
    /// let mut normaliser = DotStuffer::line_ends_only();
    /// normaliser.push(b"a\n.\n.b", &mut out);
    /// normaliser.end_line(&mut out);
    /// assert_eq!(out, b"a\r\n.\r\n.b\r\n");
    /// ```
    pub const fn line_ends_only() -> DotStuffer {
        DotStuffer {
            stuffing: false,
            at_line_start: true,
            after_cr: false,
        }
    }

    /// True when the output so far ends a line (or is empty).
    pub fn at_line_start(&self) -> bool {
        self.at_line_start
    }

    /// True when the input so far ended with an LF (or was empty): text
    /// that starts a line may follow without passing through the stuffer.
    /// After a CR the stuffer still waits to drop the LF of its CRLF.
    pub fn between_lines(&self) -> bool {
        self.at_line_start && !self.after_cr
    }

    /// Appends `input`, stuffed and normalised, to `out`.
    ///
    /// The common case, text whose line ends are all CRLF already, is
    /// checked a block at a time with no branch per octet and then copied
    /// in runs between line-start dots, which only a search for `LF .`
    /// visits. From the first block with a bare CR or bare LF on, the
    /// general path jumps from line end to line end with memchr. A long
    /// input goes a segment at a time, so a bare line end costs the fast
    /// path only the rest of its segment.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 2);
        for segment in input.chunks(SEGMENT) {
            self.push_segment(segment, out);
        }
    }

    /// [`DotStuffer::push`] for one segment.
    fn push_segment(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if self.after_cr {
            match input.split_first() {
                None => return,
                Some((b'\n', rest)) => input = rest,
                Some(_) => {}
            }
            // The line end is out already, and the next byte starts a line.
            self.after_cr = false;
        }
        let (clean, rest) = input.split_at(crlf_prefix(input));
        self.push_crlf(clean, out);
        self.push_any(rest, out);
    }

    /// [`DotStuffer::push`] for `input` that starts with no LF and has no
    /// bare CR or bare LF, apart from a CR at its very end: only the dots
    /// at line starts are added, and the LF of a last CR.
    fn push_crlf(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        if self.stuffing {
            if self.at_line_start && input[0] == b'.' {
                out.push(b'.');
            }
            let mut copied = 0;
            for at in dot_line_finder().find_iter(input) {
                // input[at] is the LF, input[at + 1] the dot.
                out.extend_from_slice(&input[copied..=at]);
                out.push(b'.');
                copied = at + 1;
            }
            out.extend_from_slice(&input[copied..]);
        } else {
            out.extend_from_slice(input);
        }
        self.after_cr = last == b'\r';
        if self.after_cr {
            out.push(b'\n');
        }
        self.at_line_start = last == b'\r' || last == b'\n';
    }

    /// [`DotStuffer::push`] for any input. O(n) at memchr speed: the scan
    /// jumps from line end to line end, and input that goes out unchanged
    /// (text, CRLF) is copied in one piece up to the next byte that has to
    /// be added: a stuffed dot, or the CR or LF that completes a bare LF or
    /// bare CR.
    // Out of line: inlined into the segment loop, it ran a few per cent
    // slower on text with bare line ends.
    #[inline(never)]
    fn push_any(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        if self.after_cr {
            match input.first() {
                None => return,
                Some(b'\n') => i = 1,
                Some(_) => {}
            }
            self.after_cr = false;
        }
        // input[copied..i] goes out as it is; `i` is at a line start on
        // every turn of the loop after the first.
        let mut copied = i;
        let mut line_start = self.at_line_start;
        loop {
            if line_start && self.stuffing && input.get(i) == Some(&b'.') {
                out.extend_from_slice(&input[copied..i]);
                out.push(b'.');
                copied = i;
            }
            let Some(found) = memchr::memchr2(b'\r', b'\n', &input[i..]) else {
                break;
            };
            let at = i + found;
            i = at + 1;
            line_start = true;
            if input[at] == b'\n' {
                // A bare LF (a CRLF's LF is skipped with its CR): CR first.
                out.extend_from_slice(&input[copied..at]);
                out.push(b'\r');
                copied = at;
            } else {
                match input.get(i) {
                    Some(b'\n') => i += 1,
                    next => {
                        // A bare CR, or one whose LF may open the next chunk.
                        out.extend_from_slice(&input[copied..i]);
                        out.push(b'\n');
                        copied = i;
                        self.after_cr = next.is_none();
                    }
                }
            }
        }
        out.extend_from_slice(&input[copied..]);
        if let Some(&last) = input.last() {
            self.at_line_start = last == b'\r' || last == b'\n';
        }
    }

    /// Ends the body: CRLF if the last line is open, then `.` CRLF. The
    /// stuffer is ready for another body afterwards.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.end_line(out);
        out.extend_from_slice(b".\r\n");
    }

    /// Ends the body without a terminator: CRLF if the last line is open.
    /// The stuffer is ready for another body afterwards.
    pub fn end_line(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        *self = DotStuffer {
            stuffing: self.stuffing,
            ..DotStuffer::new()
        };
    }
}

/// Octets [`DotStuffer::push`] takes at a time: many check blocks, few
/// turns of its loop. Small in tests (and the blocks too), so that bodies
/// there span many segments and blocks.
const SEGMENT: usize = if cfg!(test) { 512 } else { 16 * 1024 };

/// Octet pairs [`crlf_prefix`] checks per block: enough to make the check
/// after each block cheap, few enough that a bare line end early in a
/// segment costs little before the general path takes over.
const CRLF_BLOCK: usize = if cfg!(test) { 64 } else { 1024 };
/// The first block is short: text with bare line ends mostly has one in
/// its first line, and then little is checked in vain.
const CRLF_FIRST_BLOCK: usize = if cfg!(test) { 16 } else { 128 };

/// How much of `chunk` is proper CRLF text, in whole blocks: no LF first,
/// every CR followed by an LF and every LF preceded by a CR (but a CR may
/// end it, its LF perhaps in the next chunk). Each block is checked
/// without a branch per octet, which the compiler vectorises.
fn crlf_prefix(chunk: &[u8]) -> usize {
    let Some(&first) = chunk.first() else {
        return 0;
    };
    if first == b'\n' {
        return 0;
    }
    // The pairs chunk[at], chunk[at + 1] from `clean` on are unchecked.
    let (mut clean, mut block) = (0, CRLF_FIRST_BLOCK);
    while clean + 1 < chunk.len() {
        let end = (clean + block).min(chunk.len() - 1);
        let mut bare = 0u8;
        for (&a, &b) in chunk[clean..end].iter().zip(&chunk[clean + 1..=end]) {
            bare |= u8::from(a == b'\r') ^ u8::from(b == b'\n');
        }
        if bare != 0 {
            return clean;
        }
        (clean, block) = (end, CRLF_BLOCK);
    }
    chunk.len()
}

/// The searcher for line-start dots in CRLF text, built once.
fn dot_line_finder() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::OnceLock<memchr::memmem::Finder<'static>> =
        std::sync::OnceLock::new();
    FINDER.get_or_init(|| memchr::memmem::Finder::new(b"\n."))
}

/// Octet pairs [`BodyMeasure`] counts per block: the largest multiple of
/// 32 (two SSE2 vectors) whose counts fit in a `u8`.
const MEASURE_BLOCK: usize = 224;

/// Measures a body in one streaming pass, before it is sent: its size as
/// RFC 1870 §3 counts it (every line end as CRLF, a CRLF added after an
/// open last line, no dot-stuffing: exactly what BDAT sends) and whether
/// it holds 8-bit octets (RFC 6152). It also tells whether the body can go
/// out after DATA exactly as it is ([`BodyMeasure::is_verbatim`]), so that
/// a sender may skip [`DotStuffer`] and its copy.
///
/// ```
/// use postman::smtp::BodyMeasure;
/// let mut measure = BodyMeasure::new();
/// measure.push(b"a\nb\r");
/// measure.push(b"\nc\xc3\xa9");
/// assert_eq!(measure.size(), 11); // a CRLF b CRLF c é (2 octets) CRLF
/// assert!(measure.eight_bit());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyMeasure {
    /// Octets of the complete lines so far and of the open one.
    size: u64,
    eight_bit: bool,
    /// The last octet was a CR, counted as CRLF: an LF next is part of it.
    after_cr: bool,
    /// The last octet ended a line (or nothing was pushed).
    at_line_start: bool,
    /// Octets pushed, as they are: equal to `size` while every line end
    /// so far is a CRLF.
    raw: u64,
    /// Some line starts with a dot: one first in the body or right after
    /// an LF.
    dot_line: bool,
}

impl Default for BodyMeasure {
    /// The same as [`BodyMeasure::new`]: at the start of a line.
    fn default() -> BodyMeasure {
        BodyMeasure::new()
    }
}

impl BodyMeasure {
    /// Nothing measured yet.
    pub const fn new() -> BodyMeasure {
        BodyMeasure {
            size: 0,
            eight_bit: false,
            after_cr: false,
            at_line_start: true,
            raw: 0,
            dot_line: false,
        }
    }

    /// The next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        let Some((&first, rest)) = chunk.split_first() else {
            return;
        };
        self.eight_bit = self.eight_bit || !chunk.is_ascii();
        // Every octet counts one and every line end two: each CR and each
        // LF one more, and a CRLF (its CR maybe in the chunk before) two
        // less. Counting whole blocks of octet pairs without a branch is
        // what the compiler vectorises; five times faster than visiting
        // each line end with memchr on 78-octet lines.
        let mut ends = u64::from(first == b'\r' || first == b'\n');
        let mut crlfs = u64::from(self.after_cr && first == b'\n');
        for (before, block) in chunk.chunks(MEASURE_BLOCK).zip(rest.chunks(MEASURE_BLOCK)) {
            let (mut block_ends, mut block_crlfs) = (0u8, 0u8);
            for (&a, &b) in before.iter().zip(block) {
                block_ends += u8::from((b == b'\r') | (b == b'\n'));
                block_crlfs += u8::from((a == b'\r') & (b == b'\n'));
            }
            ends += u64::from(block_ends);
            crlfs += u64::from(block_crlfs);
        }
        // A dot after an LF, or first in the body. One after a CR alone
        // starts a line too, but a bare CR already makes a body not
        // verbatim. Once one is found, the rest need not be looked for;
        // the search is memchr's, much faster than a third count above.
        if !self.dot_line {
            self.dot_line = (self.at_line_start && !self.after_cr && first == b'.')
                || dot_line_finder().find(chunk).is_some();
        }
        // A CRLF's LF is in this chunk, so it is in the length.
        self.size += chunk.len() as u64 + ends - 2 * crlfs;
        self.raw += chunk.len() as u64;
        let last = chunk[chunk.len() - 1];
        self.after_cr = last == b'\r';
        self.at_line_start = last == b'\r' || last == b'\n';
    }

    /// The size on the wire, the CRLF that closes an open last line included.
    pub fn size(&self) -> u64 {
        if self.at_line_start {
            self.size
        } else {
            self.size + 2
        }
    }

    /// Some octet had its high bit set.
    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// The body is sent after DATA exactly as it is: every line ends in
    /// CRLF, the last one included, and no line starts with a dot, so
    /// [`DotStuffer`] would copy it unchanged (an empty body qualifies).
    ///
    /// ```
    /// use postman::smtp::BodyMeasure;
    /// let verbatim = |body: &[u8]| {
    ///     let mut measure = BodyMeasure::new();
    ///     measure.push(body);
    ///     measure.is_verbatim()
    /// };
    /// assert!(verbatim(b"Subject: x\r\n\r\nhello.\r\n"));
    /// assert!(!verbatim(b"a\r\n.b\r\n"), "a line-start dot is doubled");
    /// assert!(!verbatim(b"a\nb\r\n"), "a bare LF becomes CRLF");
    /// assert!(!verbatim(b"a\r\nb"), "an open last line is closed");
    /// ```
    pub fn is_verbatim(&self) -> bool {
        // A bare CR or LF counts two octets in `size` and one in `raw`; a
        // CR still waiting for its LF is counted as bare until it comes.
        self.at_line_start && !self.dot_line && self.size == self.raw
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;

/// The fast paths above against the byte-at-a-time code they replaced:
/// same output and same state after every chunk, for bodies heavy in the
/// bytes that matter, cut anywhere.
#[cfg(test)]
mod fast_path_tests {
    use proptest::prelude::*;

    use super::*;

    /// `DotStuffer::push` as it was: a scan for each line end, a check of
    /// each run's first byte.
    fn reference_push(stuffer: &mut DotStuffer, mut input: &[u8], out: &mut Vec<u8>) {
        loop {
            if stuffer.after_cr {
                match input.split_first() {
                    None => return,
                    Some((b'\n', rest)) => {
                        input = rest;
                        stuffer.after_cr = false;
                        continue;
                    }
                    Some(_) => stuffer.after_cr = false,
                }
            }
            let end = input.iter().position(|&b| b == b'\r' || b == b'\n');
            let run = &input[..end.unwrap_or(input.len())];
            if let Some(&first) = run.first() {
                if stuffer.stuffing && stuffer.at_line_start && first == b'.' {
                    out.push(b'.');
                }
                out.extend_from_slice(run);
                stuffer.at_line_start = false;
            }
            let Some(at) = end else {
                return;
            };
            out.extend_from_slice(b"\r\n");
            stuffer.at_line_start = true;
            stuffer.after_cr = input[at] == b'\r';
            input = &input[at + 1..];
        }
    }

    /// `BodyMeasure::push` as it was: one match per octet.
    fn reference_measure(measure: &mut BodyMeasure, chunk: &[u8]) {
        let mut size = measure.size;
        let mut after_cr = measure.after_cr;
        let mut after_lf = measure.at_line_start && !measure.after_cr;
        let mut high = 0u8;
        for &b in chunk {
            high |= b;
            measure.dot_line |= b == b'.' && after_lf;
            after_lf = b == b'\n';
            match b {
                b'\n' if after_cr => after_cr = false,
                b'\n' => size += 2,
                b'\r' => {
                    size += 2;
                    after_cr = true;
                }
                _ => {
                    size += 1;
                    after_cr = false;
                }
            }
        }
        if let Some(&last) = chunk.last() {
            measure.at_line_start = last == b'\n' || last == b'\r';
        }
        measure.size = size;
        measure.raw += chunk.len() as u64;
        measure.after_cr = after_cr;
        measure.eight_bit |= high >= 0x80;
    }

    /// Bodies of line ends, dots, 8-bit octets and runs of text long
    /// enough for memchr's vector loops.
    fn mixed_body() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            3 => Just(b"\r".to_vec()),
            3 => Just(b"\n".to_vec()),
            3 => Just(b"\r\n".to_vec()),
            3 => Just(b".".to_vec()),
            2 => (0x80..=0xffu8).prop_map(|b| vec![b]),
            2 => (1..100usize).prop_map(|n| vec![b'a'; n]),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        prop::collection::vec(piece, 0..200).prop_map(|pieces| pieces.concat())
    }

    /// A CRLF line: empty, short, or longer than a check block; perhaps
    /// with a dot first (or nothing but dots) and 8-bit octets or dots
    /// inside.
    fn crlf_line() -> impl Strategy<Value = Vec<u8>> {
        let len = prop_oneof![3 => 0..8usize, 3 => 8..100usize, 1 => 100..700usize];
        (
            0..3usize,
            len,
            any::<prop::sample::Index>(),
            prop::sample::select(&b"x.\xe9"[..]),
        )
            .prop_map(|(dots, len, at, inner)| {
                let mut line = vec![b'.'; dots];
                line.extend(std::iter::repeat_n(b'x', len));
                if len > 0 {
                    line[dots + at.index(len)] = inner;
                }
                line.extend_from_slice(b"\r\n");
                line
            })
    }

    /// Text whose line ends are all CRLF, the fast path's case; it may end
    /// in an open line, or in a CR whose LF never comes.
    fn crlf_body() -> impl Strategy<Value = Vec<u8>> {
        (prop::collection::vec(crlf_line(), 0..40), 0..4usize).prop_map(|(lines, cut)| {
            let mut body = lines.concat();
            match cut {
                1 if body.ends_with(b"\r\n") => body.truncate(body.len() - 1),
                2 => body.extend_from_slice(b".x"),
                3 => body.extend_from_slice(b"x"),
                _ => {}
            }
            body
        })
    }

    /// Mixed bodies; CRLF bodies; and CRLF bodies with a bare line end or
    /// other mixed octets somewhere in them, where the fast path hands over
    /// to the general one.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let spoilt = (crlf_body(), mixed_body(), crlf_body(), 0..4usize).prop_map(
            |(before, mixed, after, bare)| {
                let spoiler: &[u8] = match bare {
                    0 => b"\n",
                    1 => b"\r",
                    2 => b"\n.",
                    _ => &mixed,
                };
                [&before[..], spoiler, &after[..]].concat()
            },
        );
        prop_oneof![1 => mixed_body(), 2 => crlf_body(), 2 => spoilt]
    }

    /// Where to cut a body: anywhere, or where a chunk split matters most,
    /// right after a CR or right before a dot.
    fn cuts() -> impl Strategy<Value = Vec<(bool, prop::sample::Index)>> {
        prop::collection::vec(any::<(bool, prop::sample::Index)>(), 0..12)
    }

    /// `body` cut at `cuts`, empty chunks included.
    fn chunked<'a>(body: &'a [u8], cuts: &[(bool, prop::sample::Index)]) -> Vec<&'a [u8]> {
        let tricky: Vec<usize> = (1..body.len())
            .filter(|&at| body[at - 1] == b'\r' || body[at] == b'.')
            .collect();
        let mut points: Vec<usize> = cuts
            .iter()
            .map(|&(tricky_cut, at)| match tricky_cut && !tricky.is_empty() {
                true => tricky[at.index(tricky.len())],
                false => at.index(body.len() + 1),
            })
            .collect();
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

    fn show(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn stuffers_agree(start: DotStuffer, chunks: &[&[u8]]) -> Result<(), TestCaseError> {
        let (mut fast, mut reference) = (start.clone(), start);
        let (mut fast_out, mut reference_out) = (Vec::new(), Vec::new());
        for (n, chunk) in chunks.iter().enumerate() {
            fast.push(chunk, &mut fast_out);
            reference_push(&mut reference, chunk, &mut reference_out);
            prop_assert_eq!(
                show(&fast_out),
                show(&reference_out),
                "output after chunk {} of {:?}",
                n,
                chunks
            );
            prop_assert_eq!(&fast, &reference, "state after chunk {} of {:?}", n, chunks);
        }
        fast.finish(&mut fast_out);
        // finish() is not on the fast path: it serves both.
        reference.finish(&mut reference_out);
        prop_assert_eq!(
            show(&fast_out),
            show(&reference_out),
            "finished {:?}",
            chunks
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn stuffer_equals_reference(body in body(), cuts in cuts()) {
            let chunks = chunked(&body, &cuts);
            stuffers_agree(DotStuffer::new(), &chunks)?;
            stuffers_agree(DotStuffer::line_ends_only(), &chunks)?;
        }

        #[test]
        fn measure_equals_reference(body in body(), cuts in cuts()) {
            let (mut fast, mut reference) = (BodyMeasure::new(), BodyMeasure::new());
            for (n, chunk) in chunked(&body, &cuts).into_iter().enumerate() {
                fast.push(chunk);
                reference_measure(&mut reference, chunk);
                prop_assert_eq!(&fast, &reference, "after chunk {} ({:?}) of {:?}", n, show(chunk), show(&body));
            }
        }

        /// A body is verbatim exactly when stuffing it changes nothing but
        /// the terminator added at its end.
        #[test]
        fn verbatim_is_what_the_stuffer_leaves_alone(body in body(), cuts in cuts()) {
            let mut measure = BodyMeasure::new();
            let (mut stuffer, mut out) = (DotStuffer::new(), Vec::new());
            for chunk in chunked(&body, &cuts) {
                measure.push(chunk);
                stuffer.push(chunk, &mut out);
            }
            stuffer.finish(&mut out);
            let unchanged = out == [body.as_slice(), b".\r\n"].concat();
            prop_assert_eq!(measure.is_verbatim(), unchanged, "{:?}", show(&body));
        }
    }
}
