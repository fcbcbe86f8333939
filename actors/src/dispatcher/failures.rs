//! The failures the dispatcher settles itself: a connection that failed on
//! every address, and the deferral or bounce of messages that never reached
//! a worker (their route failed, their domain or site waits).

use std::time::{Instant, SystemTime};

use postman::dsn::{self, RecipientReport};
use postman::route::RouteError;
use postman::routing::split_route_key;
use postman::schedule::{AfterFailure, ConnectFailure};
use postman::settle;
use postman::smtp::EnhancedCode;
use slog::{o, Logger};

use super::Dispatcher;
use crate::messages::{Disposition, FailedConnection, QueuedMessage};
use crate::records::{self, Status, Verdict};
use crate::settler::{self, Fate, RecipientFate};

impl Dispatcher {
    /// A connection failed on every address. The scheduler decides: a
    /// throttle, or a failure while other connections to the site are
    /// open, sends the message back untried; otherwise the site backs off
    /// and the message is deferred like any failed attempt (retry state on
    /// the file, a record per recipient), or bounced once its lifetime is
    /// over: with status 5.4.6 when it loops back to this host, as Postfix
    /// does.
    pub(super) fn connect_failed(
        &mut self,
        job: QueuedMessage,
        failure: FailedConnection,
        now: Instant,
    ) {
        let FailedConnection {
            reason,
            relay,
            code,
            status,
            loops,
            throttle,
        } = failure;
        if throttle.is_some() {
            self.stats.throttles += 1;
        }
        let verdict = ConnectFailure {
            error: reason.clone(),
            throttle,
            loops,
        };
        let AfterFailure::Failed { msg: job, until } =
            self.sched.connect_failed(job, &verdict, now)
        else {
            return;
        };
        if loops
            && self
                .settler
                .schedule
                .expired(job.arrival, SystemTime::now())
        {
            self.bounce_with(job, dsn::STATUS_LOOP, &reason);
            return;
        }
        let log = self.records_log(job.route_key());
        let disposition = self.settler.settle_all(
            job,
            |recipient| RecipientFate {
                recipient: recipient.to_owned(),
                fate: Fate::Deferred,
                code,
                status,
                text: reason.clone(),
            },
            &relay,
            &log,
        );
        match disposition {
            Disposition::Deferred(msg) => {
                let due = settler::due_again(&msg.retry, self.config.retry_delay).max(until);
                self.stats.deferred += 1;
                self.sched.defer(*msg, due);
            }
            other => self.settled(other, now),
        }
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
            let now = Instant::now();
            let looping = self
                .sched
                .site_of(&msg.domain, now)
                .and_then(|site| self.sched.site(site))
                .is_some_and(|site| site.looping);
            if looping {
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
            let msg_retry = msg.retry.clone();
            let log = self.records_log(msg.route_key());
            let disposition = self.settler.settle_all(
                msg,
                |recipient| {
                    let report = settle::expired_report(
                        recipient,
                        lifetime,
                        &msg_retry,
                        Some(&last_error),
                        now,
                    );
                    RecipientFate {
                        recipient: recipient.to_owned(),
                        code: None,
                        status: Some(report.status),
                        text: format!("{}: {reason}", report.reason),
                        fate: Fate::Failed(report),
                    }
                },
                "none",
                &log,
            );
            self.settled(disposition, Instant::now());
            return;
        }
        records::log_all(
            &self.records_log(msg.route_key()),
            &msg,
            &Verdict {
                status: Status::Deferred,
                relay: "none",
                code: 0,
                dsn: None,
                reply: reason,
            },
        );
        self.stats.deferred += 1;
        self.sched.defer(msg, until);
    }

    /// A permanent routing failure (null MX, no such domain): every
    /// recipient fails and the sender gets a bounce.
    pub(super) fn bounce(&mut self, msg: QueuedMessage, error: &RouteError) {
        self.bounce_with(msg, error.status(), &error.to_string());
    }

    /// Every recipient fails with `status` and `reason`, and the sender
    /// gets a bounce.
    pub(super) fn bounce_with(&mut self, msg: QueuedMessage, status: EnhancedCode, reason: &str) {
        let now = SystemTime::now();
        let log = self.records_log(msg.route_key());
        let disposition = self.settler.settle_all(
            msg,
            |recipient| RecipientFate {
                recipient: recipient.to_owned(),
                code: None,
                status: Some(status),
                text: reason.to_owned(),
                fate: Fate::Failed(RecipientReport {
                    address: recipient.to_owned(),
                    orcpt: None,
                    status,
                    remote_mta: None,
                    reply: None,
                    reason: reason.to_owned(),
                    last_attempt: Some(now),
                }),
            },
            "none",
            &log,
        );
        self.settled(disposition, Instant::now());
    }

    /// What the dispatcher does after settling a message itself.
    pub(super) fn settled(&mut self, disposition: Disposition, now: Instant) {
        match disposition {
            Disposition::Finished => self.stats.finished += 1,
            Disposition::Deferred(msg) => {
                let due = settler::due_again(&msg.retry, self.config.retry_delay);
                self.stats.deferred += 1;
                self.sched.defer(*msg, due);
            }
            Disposition::Unused(msg) => self.sched.enqueue(*msg, now),
        }
    }
}

impl Dispatcher {
    /// The logger of a domain's delivery records: with its site, when its
    /// route is known.
    fn records_log(&self, domain: &str) -> Logger {
        let site = self
            .sched
            .site_of(domain, Instant::now())
            .and_then(|id| self.sched.site(id))
            .map(|site| site.name.clone());
        let (name, rule) = split_route_key(domain);
        let via = self
            .config
            .routing
            .decide_for(name, rule.as_ref())
            .hop
            .via
            .as_str();
        match site {
            Some(site) => self.log.new(o!("site" => site, "via" => via)),
            None => self.log.new(o!("via" => via)),
        }
    }
}
