//! SMTP replies: reply codes (RFC 5321 §4.2, §4.2.1), enhanced status codes
//! (RFC 3463, RFC 2034) and a streaming, bounded reply parser (RFC 5321
//! §4.5.3.1.5 line length, with a larger but fixed cap).
//!
//! The parser is fed bytes in any split and hands back whole replies. It is
//! strict about the code (exactly three digits, 200 to 599, then `' '`, `'-'`
//! or the end of the line) and lenient about the line end (CRLF or a bare LF),
//! like Postfix's `smtp_chat.c`. Its errors are sticky.

use std::fmt;
use std::str::FromStr;

/// The longest reply line accepted, line ending included. RFC 5321
/// §4.5.3.1.5 says 512; real servers exceed it, so accept more, but bounded.
pub const MAX_LINE_LEN: usize = 2048;

/// The most lines one reply may have: an EHLO reply has a dozen at most.
pub const MAX_LINES: usize = 128;

/// How much of a bad line an error quotes.
const QUOTE_LEN: usize = 80;

/// A reply code: three digits, the first from 2 to 5 (RFC 5321 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// 220 `<domain>` Service ready.
    pub const SERVICE_READY: ReplyCode = ReplyCode(220);
    /// 354 Start mail input.
    pub const START_MAIL_INPUT: ReplyCode = ReplyCode(354);
    /// 421 Service not available, closing transmission channel.
    pub const SERVICE_NOT_AVAILABLE: ReplyCode = ReplyCode(421);

    /// The code, if it lies in 200..=599.
    pub const fn new(code: u16) -> Option<ReplyCode> {
        if code >= 200 && code <= 599 {
            Some(ReplyCode(code))
        } else {
            None
        }
    }

    /// Parses exactly three ASCII digits; `+25`, `25` or `2500` are not codes.
    pub fn from_digits(digits: &[u8]) -> Option<ReplyCode> {
        match *digits {
            [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
                let value =
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
                ReplyCode::new(value)
            }
            _ => None,
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The first digit: 2, 3, 4 or 5.
    pub const fn class(self) -> u8 {
        (self.0 / 100) as u8
    }

    /// 2xx or 3xx.
    pub const fn is_positive(self) -> bool {
        self.class() <= 3
    }

    /// 4xx: try again later.
    pub const fn is_transient(self) -> bool {
        self.class() == 4
    }

    /// 5xx: do not try again.
    pub const fn is_permanent(self) -> bool {
        self.class() == 5
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for ReplyCode {
    type Err = ReplyError;

    fn from_str(s: &str) -> Result<ReplyCode, ReplyError> {
        ReplyCode::from_digits(s.as_bytes()).ok_or_else(|| ReplyError::Malformed {
            line: quote(s.as_bytes()),
        })
    }
}

/// An enhanced mail system status code, `class.subject.detail` (RFC 3463).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// One to three digits.
    pub subject: u16,
    /// One to three digits.
    pub detail: u16,
}

impl EnhancedCode {
    /// Parses an enhanced code at the start of `text` (followed by a space or
    /// the end) and returns it with the rest of the text after that space.
    pub fn parse_prefix(text: &str) -> Option<(EnhancedCode, &str)> {
        let (code, rest) = match text.find(' ') {
            Some(at) => (&text[..at], &text[at + 1..]),
            None => (text, ""),
        };
        code.parse().ok().map(|code| (code, rest))
    }
}

impl FromStr for EnhancedCode {
    type Err = ();

    /// Exactly `class "." 1*3digit "." 1*3digit` with class 2, 4 or 5.
    fn from_str(s: &str) -> Result<EnhancedCode, ()> {
        fn number(part: Option<&str>) -> Result<u16, ()> {
            match part {
                Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
                    p.parse().map_err(|_| ())
                }
                _ => Err(()),
            }
        }
        let mut parts = s.split('.');
        let class = match parts.next() {
            Some("2") => 2,
            Some("4") => 4,
            Some("5") => 5,
            _ => return Err(()),
        };
        let subject = number(parts.next())?;
        let detail = number(parts.next())?;
        if parts.next().is_some() {
            return Err(());
        }
        Ok(EnhancedCode {
            class,
            subject,
            detail,
        })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete reply, possibly of several lines.
///
/// `lines` holds the text after `"NNN-"`/`"NNN "` of each line. When the
/// first line's text starts with an enhanced code whose class equals the
/// reply's first digit, that code is kept in `enhanced` and stripped from
/// every line that repeats it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reply {
    /// The reply code shared by every line.
    pub code: ReplyCode,
    /// The RFC 3463 code of the first line, when present and consistent.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line, without code, enhanced code or line ending.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply without an enhanced code.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec![text.into()],
        }
    }

    /// The reply as the server would send it, CRLF line endings, enhanced
    /// code repeated on every line (RFC 5321 §4.2 `Reply-line` grammar).
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        let count = self.lines.len().max(1);
        for index in 0..count {
            let text = self.lines.get(index).map_or("", String::as_str);
            out.push_str(&self.code.to_string());
            let last = index + 1 == count;
            let mut body = String::new();
            if let Some(enhanced) = self.enhanced {
                body.push_str(&enhanced.to_string());
                if !text.is_empty() {
                    body.push(' ');
                }
            }
            body.push_str(text);
            if !last {
                out.push('-');
            } else if !body.is_empty() {
                out.push(' ');
            }
            out.push_str(&body);
            out.push_str("\r\n");
        }
        out
    }
}

impl fmt::Display for Reply {
    /// One line: `"550 5.1.1 first line text second line text"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            write!(f, " {line}")?;
        }
        Ok(())
    }
}

impl FromStr for Reply {
    type Err = ReplyError;

    /// Parses exactly one reply; a missing final line ending is tolerated.
    fn from_str(s: &str) -> Result<Reply, ReplyError> {
        let mut parser = ReplyParser::new();
        parser.push(s.as_bytes());
        if !s.ends_with('\n') {
            parser.push(b"\r\n");
        }
        let reply = parser.next_reply()?.ok_or(ReplyError::Incomplete)?;
        if parser.has_buffered() {
            return Err(ReplyError::TrailingData {
                rest: quote(parser.buffered()),
            });
        }
        Ok(reply)
    }
}

/// Why a reply could not be parsed. Every one of these is a protocol error:
/// the session treats it as a transient failure of the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line lacks a three-digit code 200-599 followed by ' ', '-' or the end.
    #[error(
        "reply line {line:?} does not start with a three-digit code 200-599 \
         followed by ' ', '-' or the end of the line"
    )]
    Malformed {
        /// The start of the offending line.
        line: String,
    },
    /// A continuation line carries another code than the reply's first line.
    #[error("reply line {line:?} has code {found}, but the reply started with {expected}")]
    CodeMismatch {
        /// The code of the reply's first line.
        expected: ReplyCode,
        /// The code of the offending line.
        found: ReplyCode,
        /// The start of the offending line.
        line: String,
    },
    /// A line is longer than the cap.
    #[error("reply line {start:?}... is longer than {limit} octets")]
    LineTooLong {
        /// The start of the offending line.
        start: String,
        /// The cap, line ending included.
        limit: usize,
    },
    /// A reply has more lines than the cap.
    #[error("reply has more than {limit} lines")]
    TooManyLines {
        /// The cap.
        limit: usize,
    },
    /// The text ends before the reply's last line (only from `str::parse`).
    #[error("the text ends before the last line of the reply")]
    Incomplete,
    /// There is text after the reply's last line (only from `str::parse`).
    #[error("unexpected text {rest:?} after the last line of the reply")]
    TrailingData {
        /// The start of the extra text.
        rest: String,
    },
}

/// The start of `bytes`, lossily decoded, for error messages.
fn quote(bytes: &[u8]) -> String {
    let end = bytes.len().min(QUOTE_LEN);
    String::from_utf8_lossy(bytes.get(..end).unwrap_or(bytes)).into_owned()
}

/// The lines of a reply read so far.
#[derive(Debug)]
struct Partial {
    code: ReplyCode,
    enhanced: Option<EnhancedCode>,
    lines: Vec<String>,
}

/// Frames server bytes into [`Reply`]s: feed with [`push`](Self::push), drain
/// with [`next_reply`](Self::next_reply). Bounded: a line may hold
/// [`MAX_LINE_LEN`] octets, a reply [`MAX_LINES`] lines.
#[derive(Debug, Default)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Start of the first unparsed byte in `buf`.
    pos: usize,
    /// Bytes from `pos` already known to hold no LF.
    scanned: usize,
    partial: Option<Partial>,
    error: Option<ReplyError>,
}

impl ReplyParser {
    /// An empty parser.
    pub fn new() -> ReplyParser {
        ReplyParser::default()
    }

    /// Appends bytes from the server, in any split.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.pos > 0 && self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// True when bytes or lines have been received that do not yet form a
    /// whole reply (or were not drained yet).
    pub fn has_buffered(&self) -> bool {
        self.pos < self.buf.len() || self.partial.is_some()
    }

    /// The bytes received and not yet framed into lines.
    pub fn buffered(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// The next whole reply, `Ok(None)` when more bytes are needed. After an
    /// error, every call returns that error.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.parse_next();
        if let Err(error) = &result {
            self.error = Some(error.clone());
            self.buf = Vec::new();
            self.pos = 0;
            self.partial = None;
        }
        result
    }

    fn parse_next(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let rest = self.buf.get(self.pos..).unwrap_or_default();
            let from = self.scanned.min(rest.len());
            let Some(lf) = rest[from..].iter().position(|&b| b == b'\n') else {
                self.scanned = rest.len();
                if rest.len() >= MAX_LINE_LEN {
                    return Err(ReplyError::LineTooLong {
                        start: quote(rest),
                        limit: MAX_LINE_LEN,
                    });
                }
                if rest.is_empty() {
                    self.buf.clear();
                    self.pos = 0;
                    self.scanned = 0;
                }
                return Ok(None);
            };
            let end = from + lf;
            let full = &rest[..=end];
            if full.len() > MAX_LINE_LEN {
                return Err(ReplyError::LineTooLong {
                    start: quote(full),
                    limit: MAX_LINE_LEN,
                });
            }
            let line = full.strip_suffix(b"\n").unwrap_or(full);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let parsed = parse_line(line)?;
            if let Some(partial) = &self.partial {
                if partial.code != parsed.code {
                    return Err(ReplyError::CodeMismatch {
                        expected: partial.code,
                        found: parsed.code,
                        line: quote(line),
                    });
                }
                if partial.lines.len() >= MAX_LINES {
                    return Err(ReplyError::TooManyLines { limit: MAX_LINES });
                }
            }
            let (code, last) = (parsed.code, parsed.last);
            let text = String::from_utf8_lossy(parsed.text).into_owned();
            self.pos += end + 1;
            self.scanned = 0;
            if let Some(reply) = self.add_line(code, last, text) {
                return Ok(Some(reply));
            }
        }
    }

    /// Adds a checked line; returns the reply when it was the last.
    fn add_line(&mut self, code: ReplyCode, last: bool, text: String) -> Option<Reply> {
        // The enhanced code is cut off the front of the line's own string
        // (no second allocation for the rest: several replies a message).
        let cut = |mut text: String, rest_len: usize| {
            text.drain(..text.len() - rest_len);
            text
        };
        let partial = match self.partial.take() {
            None => {
                let (enhanced, text) = match EnhancedCode::parse_prefix(&text) {
                    Some((enhanced, rest)) if enhanced.class == code.class() => {
                        let rest_len = rest.len();
                        (Some(enhanced), cut(text, rest_len))
                    }
                    _ => (None, text),
                };
                Partial {
                    code,
                    enhanced,
                    lines: vec![text],
                }
            }
            Some(mut partial) => {
                let text = match (partial.enhanced, EnhancedCode::parse_prefix(&text)) {
                    (Some(first), Some((this, rest))) if first == this => {
                        let rest_len = rest.len();
                        cut(text, rest_len)
                    }
                    _ => text,
                };
                partial.lines.push(text);
                partial
            }
        };
        if last {
            Some(Reply {
                code: partial.code,
                enhanced: partial.enhanced,
                lines: partial.lines,
            })
        } else {
            self.partial = Some(partial);
            None
        }
    }
}

/// One reply line, split.
struct Line<'a> {
    code: ReplyCode,
    /// `' '` or a bare code: this line ends the reply.
    last: bool,
    text: &'a [u8],
}

/// `line` is without its line ending.
fn parse_line(line: &[u8]) -> Result<Line<'_>, ReplyError> {
    let malformed = || ReplyError::Malformed { line: quote(line) };
    let code = line
        .get(..3)
        .and_then(ReplyCode::from_digits)
        .ok_or_else(malformed)?;
    let (last, text) = match line.get(3..) {
        Some([]) | None => (true, &[][..]),
        Some([b' ', text @ ..]) => (true, text),
        Some([b'-', text @ ..]) => (false, text),
        Some(_) => return Err(malformed()),
    };
    Ok(Line { code, last, text })
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
