//! SMTP AUTH in the session (RFC 4954): after the greeting phase (EHLO, and
//! STARTTLS when used) and before [`Event::Ready`](super::Event::Ready),
//! when the session has credentials. Never pipelined (RFC 4954 §4).
//!
//! Every failure here is a transient failure of the host, whatever the
//! server's code: a rejected password is the operator's to fix, and the mail
//! waits for it (Postfix's `smtp_sasl_auth_soft_bounce`, on by default). The
//! outcome's stage is [`Stage::Auth`], which is how a driver tells an AUTH
//! failure apart. Credentials are never sent on a connection without TLS
//! unless the configuration allows it, and never appear in a text: the
//! commands carrying them are [`Secret`](crate::secret::Secret)s, and the
//! output buffer is wiped once AUTH is over.

use std::time::Instant;

use super::{Session, State};
use crate::smtp::auth::{AuthConfig, AuthError, Exchange, Mechanism};
use crate::smtp::command::Command;
use crate::smtp::outcome::{Class, Outcome, Scope, Stage};
use crate::smtp::reply::{EnhancedCode, Reply, ReplyCode};

/// `235 Authentication succeeded` (RFC 4954 §6).
const AUTHENTICATED: u16 = 235;
/// `334` carries a challenge (RFC 4954 §4).
const CHALLENGE: u16 = 334;

/// Status of an AUTH failure without a usable enhanced code: RFC 3463
/// X.7.0, other security status.
const STATUS_AUTH: EnhancedCode = EnhancedCode {
    class: 4,
    subject: 7,
    detail: 0,
};

/// Status of AUTH refused on a connection without TLS: RFC 5248's X.7.10,
/// encryption needed.
const STATUS_NEEDS_TLS: EnhancedCode = EnhancedCode {
    class: 4,
    subject: 7,
    detail: 10,
};

impl Session {
    /// The greeting phase is over (`last` was its last stage): AUTH when
    /// the session has credentials, else ready.
    pub(super) fn greeted(&mut self, last: Stage, now: Instant) {
        let Some(auth) = &self.config.auth else {
            return self.ready(last);
        };
        if self.tls.is_none() && !auth.allow_plaintext {
            let detail =
                "was reached without TLS, and AUTH needs TLS: the credentials were not sent";
            return self.auth_failed(detail.to_owned(), STATUS_NEEDS_TLS, true);
        }
        let offered = self
            .extensions
            .as_ref()
            .map_or(&[][..], |e| e.auth.as_slice());
        let Some(mechanism) = Mechanism::choose(offered, &auth.credentials) else {
            let detail = no_mechanism(offered, auth);
            return self.auth_failed(detail, STATUS_AUTH, true);
        };
        let (exchange, initial) = Exchange::start(mechanism, &auth.credentials, &auth.nonce);
        Command::Auth {
            mechanism: mechanism.name(),
            initial: initial.as_ref(),
        }
        .encode(self.out.buf());
        self.enter(State::AwaitAuth(Box::new(exchange)), now);
    }

    /// A reply to AUTH or to a response: the next step, success, or the
    /// server's refusal.
    pub(super) fn on_auth(&mut self, mut exchange: Box<Exchange>, reply: Reply, now: Instant) {
        match reply.code.get() {
            CHALLENGE => {
                let challenge = reply.lines.first().map_or("", String::as_str);
                match exchange.respond(challenge) {
                    Ok(response) => {
                        Command::AuthResponse(&response).encode(self.out.buf());
                        self.enter(State::AwaitAuth(exchange), now);
                    }
                    Err(error) => {
                        Command::AuthCancel.encode(self.out.buf());
                        let mechanism = exchange.mechanism();
                        self.enter(State::AwaitAuthCancel { mechanism, error }, now);
                    }
                }
            }
            AUTHENTICATED => match exchange.finish(&reply.lines.join(" ")) {
                Ok(()) => {
                    self.out.wipe();
                    self.ready(Stage::Auth);
                }
                Err(error) => {
                    let detail = mechanism_failed(exchange.mechanism(), &error);
                    self.auth_failed(detail, STATUS_AUTH, true);
                }
            },
            _ => self.auth_refused(reply),
        }
    }

    /// The server answered the `*` that cancelled the exchange: the session
    /// ends with the mechanism's reason, whatever the answer.
    pub(super) fn on_auth_cancelled(
        &mut self,
        mechanism: Mechanism,
        error: &AuthError,
        reply: Reply,
    ) {
        let quit = reply.code != ReplyCode::SERVICE_NOT_AVAILABLE;
        self.auth_failed(mechanism_failed(mechanism, error), STATUS_AUTH, quit);
    }

    /// The server refused AUTH (535, 454, 534, 538, 421, …): transient
    /// whatever its code, with postman's status of the same subject and
    /// detail (`5.7.8` is deferred as `4.7.8`, as Postfix's soft bounce does).
    fn auth_refused(&mut self, reply: Reply) {
        self.out.wipe();
        let quit = reply.code != ReplyCode::SERVICE_NOT_AVAILABLE;
        let status = reply
            .enhanced
            .map_or(STATUS_AUTH, |code| EnhancedCode { class: 4, ..code });
        let outcome = Outcome::from_reply(Class::Transient, Scope::Destination, Stage::Auth, reply)
            .with_status(status);
        self.end(None, Some(outcome), quit);
    }

    /// Ends the session before or after AUTH with a failure of postman's
    /// own finding.
    fn auth_failed(&mut self, detail: String, status: EnhancedCode, quit: bool) {
        self.out.wipe();
        let outcome =
            Outcome::without_reply(Class::Transient, Scope::Destination, Stage::Auth, detail)
                .with_status(status);
        self.end(None, Some(outcome), quit);
    }
}

/// Why no mechanism fits: what the server offers, and what postman does.
fn no_mechanism(offered: &[String], auth: &AuthConfig) -> String {
    if offered.is_empty() {
        return "does not offer AUTH, and this route has credentials to send".to_owned();
    }
    let known: Vec<&str> = Mechanism::PREFERENCE.iter().map(|m| m.name()).collect();
    let scram = Mechanism::ScramSha256;
    let unprepared =
        offered.iter().any(|o| o == scram.name()) && !scram.can_send(&auth.credentials);
    let why = if unprepared {
        "; SCRAM needs a user name and password of printable ASCII"
    } else {
        ""
    };
    format!(
        "offers no AUTH mechanism postman uses (it offers {}; postman uses {}{why})",
        offered.join(" "),
        known.join(" ")
    )
}

fn mechanism_failed(mechanism: Mechanism, error: &AuthError) -> String {
    format!("failed SASL {mechanism} authentication: {error}")
}
