//! How a connection's failures count: an address that failed, a
//! connection that ended before the message in hand was tried (the
//! dispatcher's [`policy::judge`] decides), a server that ended the
//! session, and the message going back when no address is left.

use super::*;

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
        let loops = self.loops > 0 && self.loops == self.failures.len();
        let reason = if loops {
            // Postfix's words; each address's story went to the log.
            format!("mail for {} loops back to myself", self.domain)
        } else if self.failures.is_empty() {
            "no address to connect to".to_owned()
        } else {
            self.failures.join("; ")
        };
        if let Some(job) = self.first.take() {
            // The dispatcher settles the attempt (retry state on the file,
            // the delivery records, expiry) and backs the domain off.
            let (relay, code, status) = match (&self.last_reply, &self.last_server) {
                _ if loops => (
                    self.last_server
                        .clone()
                        .unwrap_or_else(|| "none".to_owned()),
                    None,
                    Some(Outcome::LOOP),
                ),
                (Some((relay, reply)), _) => (relay.clone(), Some(reply.code), reply.enhanced),
                (None, Some(relay)) => (relay.clone(), None, None),
                (None, None) => ("none".to_owned(), None, None),
            };
            shared.stats.deferred += job.envelope.recipients.len() as u64;
            let throttle = self.last_throttle.clone();
            let reason = Reason::ConnectFailed {
                reason,
                relay,
                code,
                status,
                loops,
                throttle,
            };
            hand_back(&shared.ctx(), job, None, reason);
        }
    }

    /// The server ended the session: after a transaction, the messages
    /// still out go back untried when they return; on a fresh connection
    /// (before the server was ready, or after but before the first
    /// transaction: a 421, lines out of turn, a close) the address failed
    /// and the message in hand goes to the next one (see [`Conn::ended_early`]).
    pub(super) fn server_ended(&mut self, outcome: Outcome, shared: &mut Shared) {
        let tls_failed = self.handshaking();
        let established = self.established;
        let reason = format!("host {} {outcome}", self.relay);
        if self.ended_early(Ending::Server, reason, shared) != Verdict::FailedConnection {
            return;
        }
        if outcome.is_loop() {
            warn!(shared.log, "server names this host: no mail for it"; "domain" => &self.domain,
                "relay" => &self.relay, "reason" => %outcome.detail);
            self.loops += 1;
        }
        if let Some(reply) = outcome.reply {
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
