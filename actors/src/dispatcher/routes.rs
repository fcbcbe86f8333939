//! The dispatcher's routes and the failures it settles itself: route
//! lookups and their answers, a domain's backoff after a failed round, and
//! the deferral or bounce of messages that never reached a worker.

use super::*;

/// Why a connection failed on every address (from
/// [`DispatcherMsg::ConnectFailed`]).
pub(super) struct Failure {
    pub(super) reason: String,
    /// The last server that answered, `none` if none did.
    pub(super) relay: String,
    /// Its reply code (0 without one) and enhanced code.
    pub(super) code: u16,
    pub(super) dsn: Option<String>,
    /// Every address looped back to this host.
    pub(super) loops: bool,
}

impl Dispatcher {
    /// A connection failed on every address: unless other connections to
    /// the domain are open (see [`Self::cut_concurrency`]), the domain
    /// backs off and the message is deferred like any failed attempt
    /// (retry state on the file, a record per recipient), or bounced once
    /// its lifetime is over: with status 5.4.6 when it loops back to this
    /// host, as Postfix does.
    pub(super) fn connect_failed(
        &mut self,
        domain: &str,
        job: QueuedMessage,
        failure: &Failure,
        now: Instant,
    ) {
        let Failure {
            reason,
            relay,
            code,
            dsn,
            loops,
        } = failure;
        let Some(job) = self.cut_concurrency(domain, job, relay, reason, now) else {
            return;
        };
        let until = self.back_off(domain, reason, now);
        self.domain(domain).looping = *loops;
        if *loops
            && self
                .settler
                .schedule
                .expired(job.arrival, SystemTime::now())
        {
            self.bounce_with(job, dsn::STATUS_LOOP, reason);
        } else {
            let disposition = self.settler.settle_all(
                job,
                |recipient| RecipientFate {
                    recipient: recipient.to_owned(),
                    fate: Fate::Deferred(reason.clone()),
                    code: *code,
                    dsn: dsn.clone(),
                    text: reason.clone(),
                },
                relay,
                &self.log,
            );
            match disposition {
                Disposition::Deferred(msg) => {
                    let due = settler::due_again(&msg.retry, self.config.retry_delay).max(until);
                    self.defer(*msg, due);
                }
                other => self.settled(other, now),
            }
        }
        self.suspend(domain, reason, until);
    }

    pub(super) fn lookup(&mut self, name: &str) {
        if self.lookups >= MAX_LOOKUPS {
            // Try again at the next pump; keep the domain in the queue.
            self.make_runnable(name);
            return;
        }
        let Some(resolver) = &self.resolver else {
            return;
        };
        match resolver.try_send(ResolveRequest {
            domain: name.to_owned(),
            max_hosts: self.config.max_mx_addresses,
        }) {
            Ok(()) => {
                self.lookups += 1;
                self.stats.lookups += 1;
                if let Some(d) = self.domains.get_mut(name) {
                    d.route = RouteState::Resolving;
                }
            }
            Err(TrySendError::Full(_)) => self.make_runnable(name),
            Err(TrySendError::Disconnected(_)) => {
                error!(self.log, "resolver is gone");
            }
        }
    }

    pub(super) fn resolved(
        &mut self,
        domain: String,
        route: Result<Route, RouteError>,
        until: Instant,
        now: Instant,
    ) {
        self.lookups = self.lookups.saturating_sub(1);
        if route.is_err() {
            self.stats.lookup_failures += 1;
        }
        let d = self.domain(&domain);
        match route {
            Ok(route) => {
                d.route = RouteState::Known { route, until };
                self.make_runnable(&domain);
            }
            Err(error) => {
                let until = match error {
                    // Retry a failed lookup when the messages come due again.
                    RouteError::Transient(_) => now,
                    RouteError::Permanent(_) => until,
                };
                d.route = RouteState::Failed {
                    error: error.clone(),
                    until,
                };
                self.route_failed(&domain, &error, now);
            }
        }
    }

    /// Applies a routing failure to every ready message of the domain.
    pub(super) fn route_failed(&mut self, name: &str, error: &RouteError, now: Instant) {
        let Some(d) = self.domains.get_mut(name) else {
            return;
        };
        let messages = d.drain_ready();
        d.looping = false;
        self.ready_total -= messages.len();
        self.release_all_parked(Some(name));
        match error {
            RouteError::Transient(reason) => {
                let until = self.back_off(name, reason, now);
                for msg in messages {
                    self.defer_logged(msg, until, reason);
                }
            }
            RouteError::Permanent(reason) => {
                for msg in messages {
                    self.bounce(msg, reason);
                }
            }
        }
    }

    /// No server of the domain could be reached: its ready messages wait
    /// for the end of the domain's backoff (`until`, from [`Self::back_off`]).
    pub(super) fn suspend(&mut self, name: &str, reason: &str, until: Instant) {
        let Some(d) = self.domains.get_mut(name) else {
            return;
        };
        let messages = d.drain_ready();
        self.ready_total -= messages.len();
        self.release_all_parked(Some(name));
        let reason = format!("delivery temporarily suspended: {reason}");
        for msg in messages {
            self.defer_logged(msg, until, &reason);
        }
    }

    /// Suspends the whole domain for a backoff that grows with each failed
    /// round (the retry schedule's, from `delivery.retry.min_backoff` to
    /// `max_backoff`) and records it on disk. Returns when it ends.
    pub(super) fn back_off(&mut self, name: &str, reason: &str, now: Instant) -> Instant {
        let schedule = &self.settler.schedule;
        let d = self
            .domains
            .entry(name.to_owned())
            .or_insert_with(|| Domain::new(1));
        if let Some(until) = d.suspended_until.filter(|until| *until > now) {
            // Another connection of the same round failed: one round, one
            // failure.
            return until;
        }
        d.failures = d.failures.saturating_add(1);
        d.limit = 1;
        let wait = schedule.backoff(d.failures);
        let until = now + wait;
        d.suspended_until = Some(until);
        let backoff = queue::DomainBackoff {
            until: SystemTime::now() + wait,
            failures: d.failures,
            error: reason.to_owned(),
        };
        if let Err(e) = queue::write_backoff(&self.settler.queue, name, &backoff) {
            warn!(self.log, "cannot record the domain backoff on disk"; "domain" => name, "error" => %e);
        }
        until
    }

    /// Parks a message that was not attempted (its domain is suspended or
    /// its route failed for now), with a deferral record; one whose queue
    /// lifetime is over is bounced instead (as a mail loop while the domain
    /// loops back to this host).
    pub(super) fn defer_logged(&mut self, msg: QueuedMessage, until: Instant, reason: &str) {
        if self
            .settler
            .schedule
            .expired(msg.arrival, SystemTime::now())
        {
            if self.domains.get(&msg.domain).is_some_and(|d| d.looping) {
                let reason = format!("mail for {} loops back to myself", msg.domain);
                self.bounce_with(msg, dsn::STATUS_LOOP, &reason);
                return;
            }
            let lifetime = self.settler.schedule.lifetime;
            let last_error = msg
                .retry
                .last_error
                .clone()
                .unwrap_or_else(|| reason.to_owned());
            let now = SystemTime::now();
            let disposition = self.settler.settle_all(
                msg,
                |recipient| {
                    let report =
                        RecipientReport::expired(recipient, lifetime, Some(&last_error), Some(now));
                    RecipientFate {
                        recipient: recipient.to_owned(),
                        code: 0,
                        dsn: Some(report.status.to_string()),
                        text: format!("{}: {reason}", report.reason),
                        fate: Fate::Failed(report),
                    }
                },
                "none",
                &self.log,
            );
            self.settled(disposition, Instant::now());
            return;
        }
        records::log_all(
            &self.log,
            &msg,
            &Verdict {
                status: Status::Deferred,
                relay: "none",
                code: 0,
                dsn: None,
                reply: reason,
            },
        );
        self.defer(msg, until);
    }

    /// Parks a message until `until`. In `--once` mode it simply stays on
    /// disk for the next run.
    pub(super) fn defer(&mut self, msg: QueuedMessage, until: Instant) {
        self.stats.deferred += 1;
        if self.once || self.shutting_down {
            return;
        }
        let domain = msg.domain.clone();
        let id = msg.id.clone();
        self.timers
            .push(Reverse((until, domain.clone(), id.clone())));
        self.domain(&domain).deferred.insert(id, (until, msg));
    }

    /// A permanent routing failure (null MX, no such domain): every
    /// recipient fails and the sender gets a bounce.
    pub(super) fn bounce(&mut self, msg: QueuedMessage, reason: &str) {
        self.bounce_with(msg, route_status(reason), reason);
    }

    /// Every recipient fails with `status` and `reason`, and the sender
    /// gets a bounce.
    pub(super) fn bounce_with(&mut self, msg: QueuedMessage, status: EnhancedCode, reason: &str) {
        let now = SystemTime::now();
        let disposition = self.settler.settle_all(
            msg,
            |recipient| RecipientFate {
                recipient: recipient.to_owned(),
                code: 0,
                dsn: Some(status.to_string()),
                text: reason.to_owned(),
                fate: Fate::Failed(RecipientReport {
                    address: recipient.to_owned(),
                    status,
                    remote_mta: None,
                    reply: None,
                    reason: reason.to_owned(),
                    last_attempt: Some(now),
                }),
            },
            "none",
            &self.log,
        );
        self.settled(disposition, Instant::now());
    }

    /// What the dispatcher does after settling a message itself.
    pub(super) fn settled(&mut self, disposition: Disposition, now: Instant) {
        match disposition {
            Disposition::Finished => self.stats.finished += 1,
            Disposition::Deferred(msg) => {
                let due = settler::due_again(&msg.retry, self.config.retry_delay);
                self.defer(*msg, due);
            }
            Disposition::Unused(msg) => self.enqueue(*msg, now),
        }
    }
}

/// The RFC 3463 status of a permanent routing failure, from its reason.
fn route_status(reason: &str) -> EnhancedCode {
    if reason.contains("null MX") {
        dsn::STATUS_NULL_MX
    } else if reason.contains("does not exist") {
        dsn::STATUS_NO_SUCH_DOMAIN
    } else {
        dsn::STATUS_PERMANENT
    }
}
