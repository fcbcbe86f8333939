//! The third part of a notification: what it returns of the original
//! message (RFC 3462 §3 `text/rfc822-headers`, RFC 2046 §5.2.1
//! `message/rfc822`), made to fit a mail's lines (RFC 5322 §2.1.1) and
//! 7-bit where it can be (RFC 2045 §6.7 quoted-printable for headers; an
//! 8-bit body goes as `8bit`, RFC 6152).

use std::fmt::Write as _;

use super::{Kind, Returned, MAX_LINE};

/// The third part, returning the original message; an empty body leaves
/// it out.
pub(super) struct ThirdPart {
    pub(super) description: &'static str,
    pub(super) content_type: &'static str,
    /// Its `Content-Transfer-Encoding` field with CRLF, or empty.
    pub(super) encoding: &'static str,
    pub(super) body: Vec<u8>,
    /// The whole message, not only its headers.
    pub(super) whole: bool,
    /// The part is `8bit`.
    pub(super) eight_bit: bool,
}

/// What `returned` becomes in a notification of `kind`: the whole message
/// as `message/rfc822` when it can go as it is (a 7-bit header section, no
/// NUL, no line over 998 octets; an 8-bit body is labelled `8bit`), else
/// its header section as `text/rfc822-headers`.
pub(super) fn returned_part(kind: Kind, returned: Returned<'_>) -> ThirdPart {
    let original = match returned {
        Returned::Message(message) => {
            if let Some(part) = whole_message_part(message) {
                return part;
            }
            crate::queue::header_section(message)
        }
        Returned::Headers(headers) => headers,
    };
    let headers = headers_part(original);
    ThirdPart {
        description: match kind {
            Kind::Failure | Kind::Delay => "Undelivered Message Headers",
            Kind::Success => "Message Headers",
        },
        content_type: "text/rfc822-headers",
        encoding: if headers.quoted_printable {
            "Content-Transfer-Encoding: quoted-printable\r\n"
        } else {
            ""
        },
        body: headers.body.into_bytes(),
        whole: false,
        eight_bit: false,
    }
}

/// The whole message as a `message/rfc822` part with CRLF line ends, or
/// `None` when it cannot be one: RFC 2046 §5.2.1 allows only 7bit, 8bit or
/// binary there, so 8-bit headers (which would need `message/global`), NUL
/// bytes and lines over 998 octets are out.
fn whole_message_part(message: &[u8]) -> Option<ThirdPart> {
    let header_len = crate::queue::header_section(message).len();
    if message[..header_len].iter().any(|&b| b >= 0x80) {
        return None;
    }
    let lines = split_lines(message);
    if lines.iter().any(|l| l.len() > MAX_LINE || l.contains(&0)) {
        return None;
    }
    let eight_bit = !message.is_ascii();
    let mut body = Vec::with_capacity(message.len() + lines.len());
    for line in lines {
        // UTF-8 or not, an 8bit part carries the octets as they are.
        body.extend_from_slice(line);
        body.extend_from_slice(b"\r\n");
    }
    Some(ThirdPart {
        description: "Undelivered Message",
        content_type: "message/rfc822",
        encoding: if eight_bit {
            "Content-Transfer-Encoding: 8bit\r\n"
        } else {
            ""
        },
        body,
        whole: true,
        eight_bit,
    })
}

/// A header section made ready for `text/rfc822-headers`.
struct HeadersPart {
    body: String,
    /// It had to be quoted-printable.
    quoted_printable: bool,
}

/// The original header section with CRLF line ends; quoted-printable when
/// it holds 8-bit or NUL bytes or lines over 998 octets.
fn headers_part(original: &[u8]) -> HeadersPart {
    let lines: Vec<&[u8]> = split_lines(original);
    let plain = lines
        .iter()
        .all(|l| l.len() <= MAX_LINE && l.iter().all(|&b| b != 0 && b < 0x80));
    let mut body = String::new();
    for line in &lines {
        if plain {
            // All ASCII: from_utf8 cannot fail.
            body.push_str(&String::from_utf8_lossy(line));
        } else {
            quoted_printable_line(line, &mut body);
        }
        body.push_str("\r\n");
    }
    HeadersPart {
        body,
        quoted_printable: !plain,
    }
}

/// Lines of `bytes` without their ends (LF, CRLF, or a lone CR), the last
/// one included even without an end; nothing for empty input.
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                lines.push(&bytes[start..i]);
                start = i + 1;
            }
            b'\r' => {
                lines.push(&bytes[start..i]);
                if bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < bytes.len() {
        lines.push(&bytes[start..]);
    }
    lines
}

/// Appends one line quoted-printable (RFC 2045 §6.7): soft breaks keep
/// each encoded line within 76 characters; blanks at the end are encoded.
fn quoted_printable_line(line: &[u8], out: &mut String) {
    const MAX_QP: usize = 76;
    let mut width = 0;
    for (i, &b) in line.iter().enumerate() {
        let last = i + 1 == line.len();
        let literal = matches!(b, 33..=60 | 62..=126) || (matches!(b, b' ' | b'\t') && !last);
        let len = if literal { 1 } else { 3 };
        // Leave room for the soft break's "=" unless this ends the line.
        let room = if last { MAX_QP } else { MAX_QP - 1 };
        if width + len > room {
            out.push_str("=\r\n");
            width = 0;
        }
        if literal {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "={b:02X}");
        }
        width += len;
    }
}
