//! The DATA body on the wire (RFC 5321 §4.1.4, §4.5.2, §2.3.8): dot-stuffing,
//! line-ending normalisation and the `CRLF.CRLF` terminator.
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
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }

    /// A run of bytes holding no CR or LF.
    fn text(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if let Some(&first) = run.first() {
            if self.at_line_start && first == b'.' {
                out.push(b'.');
            }
            out.extend_from_slice(run);
            self.at_line_start = false;
        }
    }
}

#[cfg(test)]
#[path = "data_tests.rs"]
mod tests;
