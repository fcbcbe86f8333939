//! How a connection's failures count: an address that failed, a
//! connection that ended before the message in hand was tried (the
//! dispatcher's [`policy::judge`] decides), a server that ended the
//! session, and the message going back when no address is left.

use super::*;
use crate::messages::FailedConnection;
use postman::smtp::Stage;
use postman::tls::{Action, POLICY_STATUS};
use postman::tlsrpt::Seen;

impl Conn {
    pub(super) fn address_failed(&mut self, shared: &mut Shared, reason: String) {
        debug!(shared.log, "address failed"; "domain" => &self.domain, "relay" => &self.relay,
            "reason" => &reason);
        shared.stats.connect_failures += 1;
        self.failures.push(reason);
        self.state = State::Idle;
    }

    /// The connection ends before the message in hand was tried (`first`,
    /// or one still out with a disk thread or the dispatcher, which comes
    /// back through [`Conn::prepared`] or [`Conn::next`]); the
    /// dispatcher's [`policy::judge`] says how that counts:
    ///
    /// * a failed connection: the address failed, the next one is tried
    ///   (at the next `drive`), and when none is left the dispatcher
    ///   defers the message with the reasons and backs the domain off;
    /// * untried: the message goes back, nothing recorded;
    /// * put off (a socket could not be had because this process is short
    ///   of descriptors or buffers): no server was asked, so the message
    ///   goes back untried and the domain is not backed off; what earlier
    ///   addresses of this round said is dropped with it, and the next
    ///   round asks them again.
    pub(super) fn ended_early(
        &mut self,
        ending: Ending,
        reason: String,
        shared: &mut Shared,
    ) -> Verdict {
        let carried = match &self.state {
            State::Smtp { session, .. } if session.transactions() > 0 => Carried::Transactions,
            _ => Carried::Nothing,
        };
        let verdict = policy::judge(carried, ending);
        match verdict {
            Verdict::FailedConnection => self.address_failed(shared, reason),
            Verdict::Untried => {
                debug!(shared.log, "connection ended"; "domain" => &self.domain,
                    "relay" => &self.relay, "reason" => &reason);
                if let Some(msg) = self.first.take() {
                    hand_back(&shared.ctx(), msg, None, Reason::UNTRIED);
                }
            }
            Verdict::PutOff => {
                self.state = State::Done;
                debug!(shared.log, "connection put off by a local limit"; "domain" => &self.domain,
                    "reason" => &reason, "earlier_failures" => self.failures.len());
                if let Some(job) = self.first.take() {
                    let reason = Reason::PutOff {
                        what: PutOff::Connection,
                        reason,
                    };
                    hand_back(&shared.ctx(), job, None, reason);
                }
            }
        }
        verdict
    }

    /// No address could take the message: it goes back to the dispatcher,
    /// which backs the domain off.
    pub(super) fn give_up(&mut self, shared: &mut Shared) {
        self.state = State::Done;
        if let Some(job) = self.first.take() {
            // The dispatcher settles the attempt (retry state on the file,
            // the delivery records, expiry) and backs the domain off.
            let mut reason = connect_failure(
                &self.domain,
                &self.failures,
                self.loops,
                self.last_reply.as_ref(),
                self.last_server.as_deref(),
                self.last_throttle.clone(),
                self.handshake_failed && job.envelope.params.requiretls,
            );
            if let Reason::ConnectFailed(failed) = &mut reason {
                if failed.status.is_none()
                    && self.policy_failures > 0
                    && self.policy_failures == self.failures.len()
                {
                    failed.status = Some(POLICY_STATUS);
                }
            }
            shared.stats.deferred += job.envelope.recipients.len() as u64;
            hand_back(&shared.ctx(), job, None, reason);
        }
    }

    /// The server ended the session: after a transaction, the messages
    /// still out go back untried when they return; on a fresh connection
    /// (before the server was ready, or after but before the first
    /// transaction: a 421, lines out of turn, a close) the address failed
    /// and the message in hand goes to the next one (see [`Conn::ended_early`]).
    pub(super) fn server_ended(&mut self, outcome: Outcome, shared: &mut Shared) {
        // A failed STARTTLS handshake may be retried in plaintext; the
        // handshake of implicit TLS (RFC 8314 §3.3) never is.
        let tls_failed = self.handshaking() && !self.implicit_tls();
        self.handshake_failed |= self.handshaking();
        let enforced = self.current.as_ref().is_some_and(
            |c| matches!(&c.security.action, Action::Connect { check, .. } if check.enforced()),
        );
        let seen = self.seen_at_end(tls_failed);
        let established = self.established;
        let reason = format!("host {} {outcome}", self.relay);
        if self.ended_early(Ending::Server, reason, shared) != Verdict::FailedConnection {
            return;
        }
        // A certificate that failed an enforced check, or no STARTTLS where
        // TLS is required: the host failed a TLS policy.
        if (tls_failed && enforced) || matches!(seen, Some(Seen::NoStarttls)) {
            self.policy_failures += 1;
        }
        if let Some(seen) = seen {
            self.report_tls(shared, seen);
        }
        if outcome.is_loop() {
            warn!(shared.log, "server names this host: no mail for it"; "domain" => &self.domain,
                "relay" => &self.relay, "reason" => %outcome.detail);
            self.loops += 1;
        }
        if outcome.stage == Stage::Auth {
            // The relay refused our credentials (or we would not send
            // them): its other addresses would say the same, and each
            // failed login counts against the account. A fallback relay
            // has a hop of its own and is still tried.
            warn!(shared.log, "SMTP AUTH failed; not trying this relay's other addresses";
                "domain" => &self.domain, "relay" => &self.relay, "reason" => %outcome.detail);
            if let Some(hop) = self.current.as_ref().map(|c| Arc::clone(&c.hop)) {
                self.candidates.retain(|c| !Arc::ptr_eq(&c.hop, &hop));
            }
        }
        if let Some(mut reply) = outcome.reply {
            // The session's own status of a reply wins over the reply's (a
            // refused AUTH is deferred: 5.7.8 is reported as 4.7.8).
            if let Some(status) = outcome.status {
                reply.enhanced = Some(status);
            }
            self.last_throttle = self
                .shape
                .is_throttle(outcome.stage, &reply)
                .then(|| reply.to_string().trim_end().to_owned());
            self.last_reply = Some((self.relay.clone(), reply));
        }
        self.last_server = Some(self.relay.clone());
        if established {
            info!(shared.log, "server ended the connection before its first transaction";
                "domain" => &self.domain, "relay" => &self.relay, "reason" => %outcome.detail);
        }
        if tls_failed {
            self.retry_in_plaintext(shared);
        }
    }
}

/// What a connection that no address took says of it: why each address
/// failed (`failures`, of which `loops` looped back to this host), the
/// last reply a server gave before failing and from where, the last server
/// that failed after a session began, and the throttle reply, if one was.
/// When every address looped back, it is a mail loop in Postfix's words,
/// with status 4.4.6 and no reply code. `requiretls_without_tls`: the
/// message requires TLS (RFC 8689) and a TLS handshake failed; without a
/// reply's status, the status is 5.7.10, as the session gives a REQUIRETLS
/// message it refuses, so that the bounce at expiry says so.
fn connect_failure(
    domain: &str,
    failures: &[String],
    loops: usize,
    last_reply: Option<&(String, Reply)>,
    last_server: Option<&str>,
    throttle: Option<String>,
    requiretls_without_tls: bool,
) -> Reason<'static> {
    let looped = loops > 0 && loops == failures.len();
    let reason = if looped {
        // Postfix's words; each address's story went to the log.
        format!("mail for {domain} loops back to myself")
    } else if failures.is_empty() {
        "no address to connect to".to_owned()
    } else {
        failures.join("; ")
    };
    let (relay, code, status) = match (last_reply, last_server) {
        _ if looped => (last_server.unwrap_or("none"), None, Some(Outcome::LOOP)),
        (Some((relay, reply)), _) => (relay.as_str(), Some(reply.code), reply.enhanced),
        (None, Some(relay)) => (relay, None, None),
        (None, None) => ("none", None, None),
    };
    let status = status.or(requiretls_without_tls.then_some(Outcome::REQUIRETLS_NO_TLS));
    Reason::ConnectFailed(FailedConnection {
        reason,
        relay: relay.to_owned(),
        code,
        status,
        loops: looped,
        throttle,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postman::smtp::{EnhancedCode, ReplyCode};

    struct Case<'a> {
        name: &'a str,
        failures: Vec<String>,
        loops: usize,
        reply: Option<&'a (String, Reply)>,
        server: Option<&'a str>,
        requiretls_without_tls: bool,
        expected: &'a str,
    }

    /// The reason, relay, codes and loop flag of each way a connection
    /// can run out of addresses.
    #[test]
    fn a_connection_out_of_addresses_reports_the_last_server_that_spoke() {
        let code = |n| ReplyCode::new(n).expect("a reply code");
        let busy = Reply {
            enhanced: Some(EnhancedCode {
                class: 4,
                subject: 3,
                detail: 2,
            }),
            ..Reply::new(code(421), "busy")
        };
        let last_reply = ("mx2.d.test[192.0.2.2]:25".to_owned(), busy);
        let refused = "connect to mx1.d.test[192.0.2.1]:25: refused".to_owned();
        let looped = "mx1.d.test[127.0.0.1]:25 is this host".to_owned();
        let case = |name, failures: &[&String], loops, reply, server, expected| Case {
            name,
            failures: failures.iter().map(|f| f.to_string()).collect(),
            loops,
            reply,
            server,
            requiretls_without_tls: false,
            expected,
        };
        fn requiretls(c: Case<'_>) -> Case<'_> {
            Case {
                requiretls_without_tls: true,
                ..c
            }
        }
        let said = "host mx2 said 421".to_owned();
        let lost = "lost".to_owned();
        let names = "names this host".to_owned();
        let handshake = "host mx2 TLS handshake failed".to_owned();
        let mx2 = Some("mx2.d.test[192.0.2.2]:25");
        let cases = [
            case("no address", &[], 0, None, None,
                "no address to connect to | none | None None | false"),
            case("refused", &[&refused], 0, None, None,
                "connect to mx1.d.test[192.0.2.1]:25: refused | none | None None | false"),
            case("a reply", &[&refused, &said], 0, Some(&last_reply), mx2,
                r#"connect to mx1.d.test[192.0.2.1]:25: refused; host mx2 said 421 | mx2.d.test[192.0.2.2]:25 | Some(421) Some("4.3.2") | false"#),
            case("a server without a reply", &[&lost], 0, None, Some("mx3.d.test[192.0.2.3]:25"),
                "lost | mx3.d.test[192.0.2.3]:25 | None None | false"),
            case("every address loops", &[&looped], 1, None, None,
                r#"mail for d.test loops back to myself | none | None Some("4.4.6") | true"#),
            case("loops after a reply", &[&looped, &names], 2, Some(&last_reply), mx2,
                r#"mail for d.test loops back to myself | mx2.d.test[192.0.2.2]:25 | None Some("4.4.6") | true"#),
            case("one of two loops", &[&looped, &refused], 1, None, None,
                "mx1.d.test[127.0.0.1]:25 is this host; connect to mx1.d.test[192.0.2.1]:25: refused | none | None None | false"),
            requiretls(case("REQUIRETLS, a handshake failed", &[&handshake], 0, None, mx2,
                r#"host mx2 TLS handshake failed | mx2.d.test[192.0.2.2]:25 | None Some("5.7.10") | false"#)),
            requiretls(case("REQUIRETLS, a reply after", &[&handshake, &said], 0, Some(&last_reply), mx2,
                r#"host mx2 TLS handshake failed; host mx2 said 421 | mx2.d.test[192.0.2.2]:25 | Some(421) Some("4.3.2") | false"#)),
        ];
        for c in cases {
            let name = c.name;
            let Reason::ConnectFailed(FailedConnection {
                reason,
                relay,
                code,
                status,
                loops,
                throttle,
            }) = connect_failure(
                "d.test",
                &c.failures,
                c.loops,
                c.reply,
                c.server,
                None,
                c.requiretls_without_tls,
            )
            else {
                panic!("{name}: not a connect failure");
            };
            let code = code.map(ReplyCode::get);
            let status = status.map(|s| s.to_string());
            assert_eq!(
                format!("{reason} | {relay} | {code:?} {status:?} | {loops}"),
                c.expected,
                "{name}"
            );
            assert_eq!(throttle, None, "{name}");
        }
    }
}
