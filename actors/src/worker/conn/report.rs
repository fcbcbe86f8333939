//! What a connection tells the TLS report (RFC 8460): once per MX host
//! address tried, what TLS came to (see [`postman::tlsrpt::observe`]).
//! Relays are not reported: the report is about the recipient domain's
//! own MX hosts.

use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use crossbeam_channel::TrySendError;
use postman::routing::split_route_key;
use postman::tlsrpt::{observe, Connection, Seen};

impl Conn {
    /// The session is ready for mail: TLS is up, or the server offered no
    /// STARTTLS though the policy would have used it.
    pub(super) fn report_established(&mut self, shared: &mut Shared) {
        let seen = match &self.state {
            State::Smtp { session, .. } => match session.tls() {
                Some(info) => Seen::Tls {
                    passed: info.verified,
                },
                None if self.tls_mode() != TlsMode::Disabled && !self.implicit_tls() => {
                    Seen::NoStarttls
                }
                // Plaintext by policy, or the retry after a failed
                // handshake, which was reported then.
                None => return,
            },
            _ => return,
        };
        self.report_tls(shared, seen);
    }

    /// What TLS came to on a fresh connection that its server ended: a
    /// failed handshake, or no STARTTLS where TLS was required.
    pub(super) fn seen_at_end(&mut self, tls_failed: bool) -> Option<Seen> {
        if tls_failed {
            let failure = self.tls_failure.take().unwrap_or_else(|| {
                postman::tlsrpt::HandshakeFailure::Other("TLS handshake failed".to_owned())
            });
            return Some(Seen::HandshakeFailed(failure));
        }
        let State::Smtp { session, .. } = &self.state else {
            return None;
        };
        let refused_starttls = !self.established
            && session.tls().is_none()
            && self.tls_mode() == TlsMode::Required
            && session.extensions().is_some_and(|e| !e.starttls);
        refused_starttls.then_some(Seen::NoStarttls)
    }

    /// Sends the session to the reporter, when TLS reports are on and the
    /// current address is an MX host's. Never waits: a full mailbox
    /// drops the session and counts it.
    pub(super) fn report_tls(&mut self, shared: &mut Shared, seen: Seen) {
        let Some(reports) = &shared.tls_reports else {
            return;
        };
        let Some(current) = &self.current else {
            return;
        };
        if current.hop.next_hop.is_some() {
            return;
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let domain = split_route_key(&self.domain).0.to_ascii_lowercase();
        let remote = match seen {
            Seen::Refused(_) => None,
            _ => Some(current.addr.ip()),
        };
        let conn = Connection {
            at,
            domain: &domain,
            host: &current.host,
            local: self.source.as_ref().map(|(ip, _)| *ip),
            remote,
        };
        let found = &current.found;
        let session = observe(&conn, &current.security, &found.sts, &found.dane, seen);
        match reports.try_send(session) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => shared.stats.tls_reports_dropped += 1,
        }
    }
}
