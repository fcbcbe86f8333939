//! What a connection plays: [`Script`], its [`Step`]s, the builder
//! methods, and [`reply_bytes`] for writing replies as text.

use std::sync::Arc;
use std::time::Duration;

use crate::certs::TestCert;

/// One thing the server does on a connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes as they are.
    Send(Vec<u8>),
    /// Read one command; it must start with `prefix` (ASCII case-insensitive),
    /// then write `reply`. A different command is recorded as a violation,
    /// answered `503` (`221` for QUIT) and the connection closed.
    Expect { prefix: String, reply: Vec<u8> },
    /// Read one command and answer as the polite server does (a DATA command
    /// includes reading its body and answering `250` after the dot).
    Default,
    /// Read a DATA body up to `CRLF.CRLF`, record it, then write `reply`.
    Body { reply: Vec<u8> },
    /// Read `STARTTLS`, answer `220`, and go on over TLS with this server
    /// configuration (RFC 3207). A different command is a violation, as
    /// for [`Step::Expect`].
    StartTls { config: Arc<rustls::ServerConfig> },
    /// Sleep without reading or writing.
    Stall(Duration),
    /// Close the connection.
    Close,
    /// Answer every further command politely until QUIT or end of input.
    Polite,
}

/// What one connection does, step by step.
#[derive(Debug, Clone)]
pub struct Script {
    pub(super) steps: Vec<Step>,
    pub(super) pipelining: bool,
    pub(super) overrides: Vec<(String, Vec<u8>)>,
    pub(super) greylist: Vec<(String, Vec<u8>)>,
    pub(super) rcpt_limit: Option<(usize, Vec<u8>)>,
}

impl Default for Script {
    fn default() -> Self {
        Script::polite()
    }
}

/// `text` as SMTP reply bytes: each `\n`-separated line ends in CRLF.
/// `"250-a\n250 b"` and `"250-a\r\n250 b\r\n"` give the same bytes.
pub fn reply_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    for line in text.trim_end_matches(['\r', '\n']).split('\n') {
        out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Script {
    /// No steps: the connection is closed as soon as it is accepted.
    pub fn new() -> Script {
        Script {
            steps: Vec::new(),
            pipelining: true,
            overrides: Vec::new(),
            greylist: Vec::new(),
            rcpt_limit: None,
        }
    }

    /// The polite server: `220` greeting, `250` to EHLO (advertising
    /// PIPELINING and 8BITMIME), MAIL, RCPT, RSET, NOOP, `354` to DATA,
    /// `250` after the dot, `221` to QUIT.
    pub fn polite() -> Script {
        Script::new()
            .greet("220 hostile.test ESMTP ready")
            .then_polite()
    }

    /// Whether the polite answer to EHLO advertises PIPELINING (default yes).
    pub fn pipelining(mut self, on: bool) -> Script {
        self.pipelining = on;
        self
    }

    /// Makes the polite answers ([`Step::Default`], [`Step::Polite`]) to
    /// commands starting with `prefix` (case-insensitive) be `reply` instead,
    /// for the whole connection: `Script::polite().answer("RCPT", "451 later")`
    /// refuses every recipient. An overridden DATA reads no body.
    pub fn answer(mut self, prefix: &str, reply: &str) -> Script {
        self.overrides
            .push((prefix.to_string(), reply_bytes(reply)));
        self
    }

    /// Greylisting: the first time the server (on any connection) receives
    /// a given command line starting with `prefix` (case-insensitive), the
    /// polite answer is `reply` instead; that same line is answered
    /// politely from then on. `Script::polite().greylist("RCPT TO:<grey",
    /// "451 4.7.1 greylisted")` defers each `grey…` recipient once. Like a
    /// real server, a script that greylists answers a DATA that follows no
    /// accepted recipient with `554 5.5.1 no valid recipients`.
    pub fn greylist(mut self, prefix: &str, reply: &str) -> Script {
        self.greylist.push((prefix.to_string(), reply_bytes(reply)));
        self
    }

    /// A limit of recipients per transaction (RFC 5321 §4.5.3.1.10): once
    /// `limit` RCPTs of the current transaction were accepted, the polite
    /// answer to the next ones is `reply` (`"452 4.5.3 Too many
    /// recipients"`). MAIL and RSET start a new count.
    pub fn max_recipients(mut self, limit: usize, reply: &str) -> Script {
        self.rcpt_limit = Some((limit, reply_bytes(reply)));
        self
    }

    /// Appends a step.
    pub fn step(mut self, step: Step) -> Script {
        self.steps.push(step);
        self
    }

    /// Sends a greeting (or any reply) given as text, see [`reply_bytes`].
    pub fn greet(self, text: &str) -> Script {
        self.step(Step::Send(reply_bytes(text)))
    }

    /// Sends raw bytes (malformed replies, bare LF, no line end at all).
    pub fn send_raw(self, bytes: &[u8]) -> Script {
        self.step(Step::Send(bytes.to_vec()))
    }

    /// Expects a command starting with `prefix` and answers `reply` (text, see
    /// [`reply_bytes`]).
    pub fn expect(self, prefix: &str, reply: &str) -> Script {
        self.expect_raw(prefix, &reply_bytes(reply))
    }

    /// Expects a command starting with `prefix` and answers raw bytes.
    pub fn expect_raw(self, prefix: &str, reply: &[u8]) -> Script {
        self.step(Step::Expect {
            prefix: prefix.to_string(),
            reply: reply.to_vec(),
        })
    }

    /// Expects a command starting with `prefix` and answers nothing yet
    /// (follow with [`Script::stall`] or [`Script::close`]).
    pub fn expect_silently(self, prefix: &str) -> Script {
        self.expect_raw(prefix, b"")
    }

    /// Expects STARTTLS, answers `220` and goes on over TLS with `cert`
    /// (see [`Step::StartTls`]). The EHLO reply before it should
    /// advertise STARTTLS; the client sends EHLO again over TLS.
    pub fn starttls(self, cert: &TestCert) -> Script {
        self.step(Step::StartTls {
            config: super::tls::server_config(cert),
        })
    }

    /// Reads one command and answers it politely.
    pub fn default_reply(self) -> Script {
        self.step(Step::Default)
    }

    /// The polite greeting and EHLO: `220`, then `250` to EHLO/HELO.
    pub fn hello(self) -> Script {
        self.greet("220 hostile.test ESMTP ready").default_reply()
    }

    /// Reads a DATA body (after a `354` sent by an earlier step), records it
    /// and answers `reply`.
    pub fn body(self, reply: &str) -> Script {
        self.step(Step::Body {
            reply: reply_bytes(reply),
        })
    }

    /// Reads a DATA body and answers nothing (follow with a stall or close).
    pub fn body_silently(self) -> Script {
        self.step(Step::Body { reply: Vec::new() })
    }

    /// Sleeps `ms` milliseconds without reading or answering.
    pub fn stall(self, ms: u64) -> Script {
        self.step(Step::Stall(Duration::from_millis(ms)))
    }

    /// Closes the connection.
    pub fn close(self) -> Script {
        self.step(Step::Close)
    }

    /// Answers everything politely from here on.
    pub fn then_polite(self) -> Script {
        self.step(Step::Polite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_bytes_normalises_line_ends() {
        for (text, want) in [
            ("250 ok", "250 ok\r\n"),
            ("250 ok\r\n", "250 ok\r\n"),
            ("250-a\n250 b", "250-a\r\n250 b\r\n"),
            ("250-a\r\n250 b\n", "250-a\r\n250 b\r\n"),
        ] {
            assert_eq!(reply_bytes(text), want.as_bytes(), "input {text:?}");
        }
    }
}
