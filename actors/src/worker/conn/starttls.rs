//! TLS on a connection (RFC 3207): wrapping the socket after the 220 to
//! STARTTLS (or before the greeting, under implicit TLS, RFC 8314), the
//! plaintext retry of opportunistic TLS after a failed STARTTLS handshake,
//! and how the delivery records name the TLS in use.

use super::*;
use postman::tls::{Applied, Check};

impl Conn {
    /// The session got 220 to STARTTLS, or began under implicit TLS
    /// (nothing read yet: `drive` runs right after the session is made):
    /// wrap the socket. The certificate and its name are checked whatever
    /// `verify` says (see [`TlsPolicy::connect`]), so that the session
    /// knows whether it may carry a message that requires TLS (RFC 8689).
    ///
    /// [`TlsPolicy::connect`]: crate::worker::tls::TlsPolicy::connect
    pub(super) fn start_tls(&mut self, shared: &mut Shared, now: Instant) {
        let State::Smtp { session, tls, .. } = &mut self.state else {
            return;
        };
        self.starting_tls = true;
        let Some(current) = self.current.as_ref() else {
            return;
        };
        let check = match &current.security.action {
            Action::Connect { check, .. } => check,
            Action::Refuse(_) => &Check::Any,
        };
        match shared.settings.tls.connect(&current.host, check) {
            Ok(stream) => *tls = Some(stream),
            Err(why) => {
                self.tls_failure = Some(why.handshake_failure());
                session.tls_failed(&why.to_string(), now);
            }
        }
    }

    /// True while a TLS handshake runs (or was about to) on the connection.
    pub(super) fn handshaking(&self) -> bool {
        match &self.state {
            State::Smtp { tls, .. } => {
                self.starting_tls && tls.as_ref().is_none_or(TlsStream::is_handshaking)
            }
            _ => false,
        }
    }

    /// The session runs over implicit TLS (RFC 8314): the handshake was
    /// the connection's first exchange, and its failure is never retried
    /// in plaintext.
    pub(super) fn implicit_tls(&self) -> bool {
        matches!(&self.state, State::Smtp { session, .. } if session.implicit_tls())
    }

    /// The message in hand, not yet started on a session, requires TLS
    /// (RFC 8689 REQUIRETLS).
    fn requires_tls(&self) -> bool {
        (self.first.as_ref()).is_some_and(|msg| msg.envelope.params.requiretls)
    }

    /// Opportunistic TLS: a host whose handshake failed is tried once more
    /// at the same address, without STARTTLS (Postfix does the same, so a
    /// broken TLS stack on the server does not stop its mail). Not for a
    /// message that requires TLS: it could not go in plaintext anyway.
    pub(super) fn retry_in_plaintext(&mut self, shared: &mut Shared) {
        let Some(current) = &self.current else {
            return;
        };
        if current.plaintext || self.tls_mode() != TlsMode::Opportunistic || self.requires_tls() {
            return;
        }
        warn!(shared.log, "TLS handshake failed; trying again without TLS";
            "domain" => &self.domain, "relay" => &self.relay,
            "reason" => self.failures.last().map_or("", String::as_str));
        self.candidates.push_front(Candidate {
            plaintext: true,
            ..current.clone()
        });
    }

    /// The worker's logger with this session's `tls`, kept in the
    /// `records_log` field while the session's TLS state stays the same.
    pub(super) fn records_log(&mut self, shared: &Shared) -> slog::Logger {
        let tls_on = matches!(&self.state, State::Smtp { session, .. } if session.tls().is_some());
        match &self.records_log {
            Some((on, log)) if *on == tls_on => log.clone(),
            _ => {
                let via = self.current.as_ref().map_or("mx", |c| c.hop.via.as_str());
                let source = self
                    .source
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |(ip, _)| ip.to_string());
                let log = shared.log.new(o!("tls" => self.tls_text(),
                    "site" => self.site_name.to_string(), "via" => via, "source" => source));
                self.records_log = Some((tls_on, log.clone()));
                log
            }
        }
    }

    /// How TLS was used, for the delivery record: the policy it ran under
    /// ([`Applied`]: `dane`, `mta-sts-enforce`, `opportunistic`, …), then
    /// `none`, or protocol, cipher and whether the certificate passed its
    /// check; only `none` under `tls.mode = "none"`.
    ///
    /// [`Applied`]: postman::tls::Applied
    fn tls_text(&self) -> String {
        let info = match &self.state {
            State::Smtp { session, .. } => session.tls().map(ToString::to_string),
            _ => None,
        };
        let info = info.unwrap_or_else(|| "none".to_owned());
        match self.current.as_ref().map(|c| c.security.applied) {
            Some(Applied::Plaintext) | None => info,
            Some(applied) => format!("{applied} {info}"),
        }
    }
}
