//! SMTP client commands and their encoding (RFC 5321 §4.1.1, §4.1.2), with
//! the MAIL parameters of RFC 1870 (SIZE), RFC 6152 (BODY=8BITMIME) and
//! RFC 6531 (SMTPUTF8), RFC 3461 (DSN: RET and ENVID on MAIL, NOTIFY and
//! ORCPT on RCPT), RFC 8689 (REQUIRETLS), STARTTLS (RFC 3207), BDAT (RFC
//! 3030) and AUTH (RFC 4954 §4).
//!
//! A line carrying credentials (an AUTH initial response, a response to a
//! challenge) holds them as a [`Secret`]: `encode` writes them, `Display`
//! and `Debug` print `****` or `<redacted>` instead.
//!
//! Addresses are written exactly as given, inside angle brackets; the session
//! refuses addresses holding control characters before they get here, so no
//! command can carry a second one.

use std::fmt::{self, Write as _};

use crate::queue::params::{RcptParams, Ret};
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
    MailFrom(&'a str, &'a MailParams),
    /// `RCPT TO:<recipient>`, with the recipient's DSN parameters when
    /// given (`NOTIFY=… ORCPT=…`, RFC 3461 §4.1, §4.2).
    RcptTo(&'a str, Option<&'a RcptParams>),
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
/// advertised its extension. They are written in Postfix's order, which
/// makes logs of the two easy to compare: `SIZE= BODY= SMTPUTF8 RET= ENVID=
/// REQUIRETLS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `SIZE=<n>` (RFC 1870 §6).
    pub size: Option<u64>,
    /// `BODY=8BITMIME` (RFC 6152 §3).
    pub eight_bit: bool,
    /// `SMTPUTF8` (RFC 6531 §3.4).
    pub smtputf8: bool,
    /// `RET=FULL|HDRS` (RFC 3461 §4.3).
    pub ret: Option<Ret>,
    /// `ENVID=<xtext>` (RFC 3461 §4.4), already xtext.
    pub envid: Option<String>,
    /// `REQUIRETLS` (RFC 8689 §4.1).
    pub requiretls: bool,
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
        if let Some(ret) = self.ret {
            write!(out, " RET={}", ret.as_str())?;
        }
        if let Some(envid) = &self.envid {
            write!(out, " ENVID={envid}")?;
        }
        if self.requiretls {
            out.write_str(" REQUIRETLS")?;
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
            Command::RcptTo(recipient, _) => (b"RCPT TO:<", Some(recipient)),
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
            if matches!(self, Command::MailFrom(..) | Command::RcptTo(..)) {
                out.push(b'>');
            }
        }
        // Writing to a String cannot fail.
        match self {
            Command::MailFrom(_, params) if **params != MailParams::default() => {
                let mut text = String::new();
                let _ = params.write(&mut text);
                out.extend_from_slice(text.as_bytes());
            }
            Command::RcptTo(_, Some(params)) if !params.is_empty() => {
                let mut text = String::new();
                let _ = write!(text, " {params}");
                out.extend_from_slice(text.as_bytes());
            }
            _ => {}
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
            Command::RcptTo(recipient, params) => {
                write!(f, "RCPT TO:<{recipient}>")?;
                match params {
                    Some(params) if !params.is_empty() => write!(f, " {params}"),
                    _ => Ok(()),
                }
            }
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
        let size = MailParams {
            size: Some(1234),
            ..MailParams::default()
        };
        let all_but_dsn = MailParams {
            size: Some(0),
            eight_bit: true,
            smtputf8: true,
            ..MailParams::default()
        };
        let eight_bit = MailParams {
            eight_bit: true,
            ..MailParams::default()
        };
        let everything = MailParams {
            ret: Some(Ret::Hdrs),
            envid: Some("QQ314159+2Bx".into()),
            requiretls: true,
            ..all_but_dsn.clone()
        };
        let ret_only = MailParams {
            ret: Some(Ret::Full),
            ..MailParams::default()
        };
        let requiretls = MailParams {
            requiretls: true,
            ..MailParams::default()
        };
        let notify_orcpt = RcptParams::parse("NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@d.test")
            .expect("test parameters parse");
        let never = RcptParams::parse("NOTIFY=NEVER").expect("test parameters parse");
        let empty = RcptParams::default();
        let cases = [
            (Command::Ehlo("client.example"), "EHLO client.example\r\n"),
            (Command::Helo("client.example"), "HELO client.example\r\n"),
            (Command::MailFrom("", &none), "MAIL FROM:<>\r\n"),
            (
                Command::MailFrom("Some.One@Example.org", &none),
                "MAIL FROM:<Some.One@Example.org>\r\n",
            ),
            (
                Command::MailFrom("a@b", &size),
                "MAIL FROM:<a@b> SIZE=1234\r\n",
            ),
            (
                Command::MailFrom("ü@b", &all_but_dsn),
                "MAIL FROM:<ü@b> SIZE=0 BODY=8BITMIME SMTPUTF8\r\n",
            ),
            (
                Command::MailFrom("", &eight_bit),
                "MAIL FROM:<> BODY=8BITMIME\r\n",
            ),
            (
                Command::MailFrom("ü@b", &everything),
                "MAIL FROM:<ü@b> SIZE=0 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159+2Bx \
                 REQUIRETLS\r\n",
            ),
            (
                Command::MailFrom("a@b", &ret_only),
                "MAIL FROM:<a@b> RET=FULL\r\n",
            ),
            (
                Command::MailFrom("a@b", &requiretls),
                "MAIL FROM:<a@b> REQUIRETLS\r\n",
            ),
            (
                Command::RcptTo("a+b@d.test", Some(&notify_orcpt)),
                "RCPT TO:<a+b@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@d.test\r\n",
            ),
            (
                Command::RcptTo("b@d.test", Some(&never)),
                "RCPT TO:<b@d.test> NOTIFY=NEVER\r\n",
            ),
            (
                Command::RcptTo("b@d.test", Some(&empty)),
                "RCPT TO:<b@d.test>\r\n",
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
                Command::RcptTo("MixedCase@d.test", None),
                "RCPT TO:<MixedCase@d.test>\r\n",
            ),
            (
                Command::RcptTo("\"a b\"@d.test", None),
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
