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

    /// Appends `input`, stuffed and normalised, to `out`. O(n): runs between
    /// line ends are copied whole.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16 + 2);
        loop {
            if self.after_cr {
                match input.split_first() {
                    None => return,
                    Some((b'\n', rest)) => {
                        input = rest;
                        self.after_cr = false;
                        continue;
                    }
                    Some(_) => self.after_cr = false,
                }
            }
            match input.iter().position(|&b| b == b'\r' || b == b'\n') {
                Some(at) => {
                    self.text(&input[..at], out);
                    out.extend_from_slice(b"\r\n");
                    self.at_line_start = true;
                    self.after_cr = input[at] == b'\r';
                    input = &input[at + 1..];
                }
                None => {
                    self.text(input, out);
                    return;
                }
            }
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

    /// A run of bytes holding no CR or LF.
    fn text(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if let Some(&first) = run.first() {
            if self.stuffing && self.at_line_start && first == b'.' {
                out.push(b'.');
            }
            out.extend_from_slice(run);
            self.at_line_start = false;
        }
    }
}

/// Measures a body in one streaming pass, before it is sent: its size as
/// RFC 1870 §3 counts it (every line end as CRLF, a CRLF added after an
/// open last line, no dot-stuffing: exactly what BDAT sends) and whether
/// it holds 8-bit octets (RFC 6152).
///
/// ```
/// use postman::smtp::BodyMeasure;
/// let mut measure = BodyMeasure::new();
/// measure.push(b"a\nb\r");
/// measure.push(b"\nc\xc3\xa9");
/// assert_eq!(measure.size(), 11); // a CRLF b CRLF c é (2 octets) CRLF
/// assert!(measure.eight_bit());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyMeasure {
    /// Octets of the complete lines so far and of the open one.
    size: u64,
    eight_bit: bool,
    /// The last octet was a CR, counted as CRLF: an LF next is part of it.
    after_cr: bool,
    /// The last octet ended a line (or nothing was pushed).
    at_line_start: bool,
}

impl BodyMeasure {
    /// Nothing measured yet.
    pub const fn new() -> BodyMeasure {
        BodyMeasure {
            size: 0,
            eight_bit: false,
            after_cr: false,
            at_line_start: true,
        }
    }

    /// The next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        let mut size = self.size;
        let mut after_cr = self.after_cr;
        let mut high = 0u8;
        for &b in chunk {
            high |= b;
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
            self.at_line_start = last == b'\n' || last == b'\r';
        }
        self.size = size;
        self.after_cr = after_cr;
        self.eight_bit |= high >= 0x80;
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
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
