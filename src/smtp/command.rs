//! SMTP client commands and their encoding (RFC 5321 §4.1.1, §4.1.2), with
//! the MAIL parameters of RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME) and
//! RFC 6531 (SMTPUTF8), STARTTLS (RFC 3207), BDAT (RFC 3030) and AUTH
//! (RFC 4954 §4).
//!
//! A line carrying credentials (an AUTH initial response, a response to a
//! challenge) holds them as a [`Secret`]: `encode` writes them, `Display`
//! and `Debug` print `****` or `<redacted>` instead.
//!
//! Addresses are written exactly as given, inside angle brackets; the session
//! refuses addresses holding control characters before they get here, so no
//! command can carry a second one.

use std::fmt;

use crate::secret::Secret;

/// One command the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO <domain>`.
    Ehlo(&'a str),
    /// `HELO <domain>`.
    Helo(&'a str),
    /// `MAIL FROM:<sender>` and its parameters; an empty sender is the
    /// null sender `<>`.
    MailFrom(&'a str, MailParams),
    /// `RCPT TO:<recipient>`.
    RcptTo(&'a str),
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `BDAT <size>`, or `BDAT <size> LAST` for the last chunk.
    Bdat {
        /// The chunk's length in octets.
        size: usize,
        /// This chunk ends the message.
        last: bool,
    },
    /// `AUTH <mechanism> [initial-response]`; an empty initial response
    /// goes out as `=` (RFC 4954 §4).
    Auth {
        /// The SASL mechanism's name.
        mechanism: &'a str,
        /// The initial response, base64.
        initial: Option<&'a Secret>,
    },
    /// A response to a 334 challenge: base64, possibly empty.
    AuthResponse(&'a Secret),
    /// `*`: the client cancels the AUTH exchange (RFC 4954 §4).
    AuthCancel,
}

/// The ESMTP parameters of a MAIL command, each used only when the server
/// advertised its extension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=<n>` (RFC 1870 §6).
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152 §3).
    pub eight_bit: bool,
    /// `SMTPUTF8` (RFC 6531 §3.4).
    pub smtputf8: bool,
}

impl MailParams {
    fn write(&self, out: &mut dyn fmt::Write) -> fmt::Result {
        if let Some(size) = self.size {
            write!(out, " SIZE={size}")?;
        }
        if self.eight_bit {
            out.write_str(" BODY=8BITMIME")?;
        }
        if self.smtputf8 {
            out.write_str(" SMTPUTF8")?;
        }
        Ok(())
    }
}

impl Command<'_> {
    /// Appends the command and its CRLF to `out`, without allocating.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (verb, argument): (&[u8], Option<&str>) = match *self {
            Command::Ehlo(name) => (b"EHLO ", Some(name)),
            Command::Helo(name) => (b"HELO ", Some(name)),
            Command::MailFrom(sender, _) => (b"MAIL FROM:<", Some(sender)),
            Command::RcptTo(recipient) => (b"RCPT TO:<", Some(recipient)),
            Command::Data => (b"DATA", None),
            Command::Rset => (b"RSET", None),
            Command::Quit => (b"QUIT", None),
            Command::StartTls => (b"STARTTLS", None),
            Command::AuthCancel => (b"*", None),
            Command::AuthResponse(response) => (b"", Some(response.expose())),
            Command::Auth { mechanism, initial } => {
                out.extend_from_slice(b"AUTH ");
                out.extend_from_slice(mechanism.as_bytes());
                match initial.map(Secret::expose) {
                    Some("") => out.extend_from_slice(b" ="),
                    Some(initial) => {
                        out.push(b' ');
                        out.extend_from_slice(initial.as_bytes());
                    }
                    None => {}
                }
                out.extend_from_slice(b"\r\n");
                return;
            }
            Command::Bdat { .. } => {
                // Rare and short: formatting is cheaper than special cases.
                out.extend_from_slice(self.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
                return;
            }
        };
        out.extend_from_slice(verb);
        if let Some(argument) = argument {
            out.extend_from_slice(argument.as_bytes());
            if matches!(self, Command::MailFrom(..) | Command::RcptTo(_)) {
                out.push(b'>');
            }
        }
        if let Command::MailFrom(_, params) = self {
            if *params != MailParams::default() {
                let mut text = String::new();
                // Writing to a String cannot fail.
                let _ = params.write(&mut text);
                out.extend_from_slice(text.as_bytes());
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

impl fmt::Display for Command<'_> {
    /// The command as sent, without CRLF, credentials masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(name) => write!(f, "EHLO {name}"),
            Command::Helo(name) => write!(f, "HELO {name}"),
            Command::MailFrom(sender, params) => {
                write!(f, "MAIL FROM:<{sender}>")?;
                params.write(f)
            }
            Command::RcptTo(recipient) => write!(f, "RCPT TO:<{recipient}>"),
            Command::Data => f.write_str("DATA"),
            Command::Rset => f.write_str("RSET"),
            Command::Quit => f.write_str("QUIT"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::Bdat { size, last: false } => write!(f, "BDAT {size}"),
            Command::Bdat { size, last: true } => write!(f, "BDAT {size} LAST"),
            Command::Auth {
                mechanism,
                initial: None,
            } => write!(f, "AUTH {mechanism}"),
            Command::Auth { mechanism, .. } => write!(f, "AUTH {mechanism} ****"),
            Command::AuthResponse(_) => f.write_str("****"),
            Command::AuthCancel => f.write_str("*"),
        }
    }
}

/// Why an address may not be sent: it would break the command line.
/// `None` when it is fine. The null sender is the empty sender.
pub(crate) fn address_problem(address: &str, null_allowed: bool) -> Option<&'static str> {
    if address.is_empty() && !null_allowed {
        Some("it is empty")
    } else if address.bytes().any(|b| b < 0x20 || b == 0x7f) {
        Some("it contains a control character")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        let none = MailParams::default();
        let cases = [
            (Command::Ehlo("client.example"), "EHLO client.example\r\n"),
            (Command::Helo("client.example"), "HELO client.example\r\n"),
            (Command::MailFrom("", none), "MAIL FROM:<>\r\n"),
            (
                Command::MailFrom("Some.One@Example.org", none),
                "MAIL FROM:<Some.One@Example.org>\r\n",
            ),
            (
                Command::MailFrom(
                    "a@b",
                    MailParams {
                        size: Some(1234),
                        ..none
                    },
                ),
                "MAIL FROM:<a@b> SIZE=1234\r\n",
            ),
            (
                Command::MailFrom(
                    "ü@b",
                    MailParams {
                        size: Some(0),
                        eight_bit: true,
                        smtputf8: true,
                    },
                ),
                "MAIL FROM:<ü@b> SIZE=0 BODY=8BITMIME SMTPUTF8\r\n",
            ),
            (
                Command::MailFrom(
                    "",
                    MailParams {
                        eight_bit: true,
                        ..none
                    },
                ),
                "MAIL FROM:<> BODY=8BITMIME\r\n",
            ),
            (Command::StartTls, "STARTTLS\r\n"),
            (
                Command::Bdat {
                    size: 0,
                    last: true,
                },
                "BDAT 0 LAST\r\n",
            ),
            (
                Command::Bdat {
                    size: 65536,
                    last: false,
                },
                "BDAT 65536\r\n",
            ),
            (
                Command::RcptTo("MixedCase@d.test"),
                "RCPT TO:<MixedCase@d.test>\r\n",
            ),
            (
                Command::RcptTo("\"a b\"@d.test"),
                "RCPT TO:<\"a b\"@d.test>\r\n",
            ),
            (Command::Data, "DATA\r\n"),
            (Command::Rset, "RSET\r\n"),
            (Command::Quit, "QUIT\r\n"),
        ];
        for (command, want) in cases {
            let mut out = Vec::new();
            command.encode(&mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "encoding {command:?}");
            assert_eq!(format!("{command}\r\n"), want, "display of {command:?}");
        }
    }

    /// The wire carries the credentials; `Display` and `Debug` never do.
    #[test]
    fn auth_lines_are_masked() {
        let secret = Secret::new("AHVzZXIAcGVuY2ls".into());
        let empty = Secret::new(String::new());
        let cases = [
            (
                Command::Auth {
                    mechanism: "PLAIN",
                    initial: Some(&secret),
                },
                "AUTH PLAIN AHVzZXIAcGVuY2ls\r\n",
                "AUTH PLAIN ****",
            ),
            (
                Command::Auth {
                    mechanism: "LOGIN",
                    initial: None,
                },
                "AUTH LOGIN\r\n",
                "AUTH LOGIN",
            ),
            (
                Command::Auth {
                    mechanism: "X",
                    initial: Some(&empty),
                },
                "AUTH X =\r\n",
                "AUTH X ****",
            ),
            (
                Command::AuthResponse(&secret),
                "AHVzZXIAcGVuY2ls\r\n",
                "****",
            ),
            (Command::AuthResponse(&empty), "\r\n", "****"),
            (Command::AuthCancel, "*\r\n", "*"),
        ];
        for (command, wire, display) in cases {
            let mut out = Vec::new();
            command.encode(&mut out);
            assert_eq!(String::from_utf8_lossy(&out), wire, "encoding {command}");
            assert_eq!(command.to_string(), display, "display of {command}");
            let debug = format!("{command:?}");
            assert!(!debug.contains("AHVzZXIAcGVuY2ls"), "debug {debug}");
        }
    }

    #[test]
    fn address_problems() {
        let cases = [
            ("a@b", false, None),
            ("", true, None),
            ("", false, Some("it is empty")),
            (
                "a@b\r\nRSET",
                false,
                Some("it contains a control character"),
            ),
            ("a\n@b", true, Some("it contains a control character")),
            ("a\0@b", false, Some("it contains a control character")),
            ("a\x7f@b", false, Some("it contains a control character")),
            ("ü@b", false, None),
        ];
        for (address, null_allowed, want) in cases {
            assert_eq!(
                address_problem(address, null_allowed),
                want,
                "address {address:?} (null allowed: {null_allowed})"
            );
        }
    }
}
