//! Settling a message after a delivery attempt (DESIGN.md "Outcomes"), as
//! a plan: which recipients stay queued, which outlived the queue lifetime,
//! whether a delay warning is due, which are bounced (RFC 3464) or set
//! aside because no bounce can go, whether a success notice is due, and
//! what retry state to record. Pure: the caller writes the notifications,
//! says what became of them, and carries out the [`End`].
//!
//! The sender's DSN wishes (RFC 3461 §4) decide who is reported: a failed
//! recipient only with NOTIFY absent or holding FAILURE, a delayed one
//! only with NOTIFY absent or holding DELAY, a delivered one only with
//! NOTIFY holding SUCCESS and only when the server that took it did not
//! advertise DSN (then it will not tell; RFC 3461 §5.2.2). A recipient not
//! reported is still logged, and a failed one is not tried again. RET=FULL
//! asks for the whole message in the failure notice, except for a
//! REQUIRETLS message (RFC 8689 §5: headers only).
//!
//! Call order: [`plan`]; one delivery record for each of
//! [`Plan::logged`]; when [`Plan::delay_warning`] is `Some`, write it and,
//! if that worked, call [`Plan::warned`]; when [`Plan::success`] is not
//! empty, write it; when [`Plan::bounce`] asks for one, write it and, if
//! that failed, call [`Plan::bounce_not_written`]; then [`Plan::end`].
//! Notifications come before the state is recorded or the message removed,
//! so that a crash in between can at worst repeat one, never lose one.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::dsn::{self, RecipientReport};
use crate::queue::params::{MsgParams, RcptParams, Ret};
use crate::queue::RetryState;
use crate::retry::{Schedule, Verdict};
use crate::smtp::{EnhancedCode, Outcome, ReplyCode};

/// What one attempt decided for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Accepted. `relayed` is the report for a success notice (`Action:
    /// relayed`) when the server did not advertise DSN, so that it took no
    /// NOTIFY and will send no such notice itself (RFC 3461 §5.2.2); `None`
    /// when it did (or no notice could be due).
    Delivered { relayed: Option<RecipientReport> },
    /// Try again later; the recipient's `text` says why.
    Deferred,
    /// Not taken in this transaction only for the server's limit of
    /// recipients per transaction (RFC 5321 §4.5.3.1.10), while others
    /// were delivered: no attempt is counted and, unless the message waits
    /// for another recipient anyway, it is sent again at once.
    Again,
    /// Permanently refused: reported in the bounce.
    Failed(RecipientReport),
}

/// One recipient's fate with what its delivery record shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientFate {
    /// The envelope recipient.
    pub recipient: String,
    /// What became of it.
    pub fate: Fate,
    /// The code of the reply that decided it; `None` when no reply did.
    pub code: Option<ReplyCode>,
    /// Its RFC 3463 status, the reply's or postman's own; `None`: the
    /// record shows the generic one of its kind.
    pub status: Option<EnhancedCode>,
    /// The server's reply or postman's diagnostic.
    pub text: String,
}

/// The message an attempt was about, besides its fates.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The envelope sender; empty or `<>` for the null sender.
    pub sender: &'a str,
    /// When it was queued.
    pub arrival: SystemTime,
    /// Its retry state in force before the attempt.
    pub retry: &'a RetryState,
    /// Its DSN parameters (RET, ENVID) and REQUIRETLS.
    pub params: &'a MsgParams,
    /// The DSN parameters of the recipients that have any.
    pub rcpt_params: &'a BTreeMap<String, RcptParams>,
}

impl Message<'_> {
    /// Whether the sender gets notifications at all: not the null sender.
    fn notifies(&self) -> bool {
        dsn::should_bounce(self.sender)
    }

    /// `report` with its recipient's ORCPT, for `Original-Recipient`.
    fn with_orcpt(&self, mut report: RecipientReport) -> RecipientReport {
        report.orcpt = self
            .rcpt_params
            .get(&report.address)
            .and_then(|p| p.orcpt.as_ref())
            .map(|o| o.for_report());
        report
    }

    /// Whether a failure of `recipient` goes in the bounce: always for the
    /// null sender, whose failures go to `.failed` for the postmaster
    /// (nobody asked for silence there); else as NOTIFY says.
    fn reports_failure(&self, recipient: &str) -> bool {
        !self.notifies() || RcptParams::wants_failure(self.rcpt_params.get(recipient))
    }
}

/// The bounce a plan asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounce<'a> {
    /// Nothing failed.
    None,
    /// One failure notification of these recipients to the sender.
    ToSender(&'a [RecipientReport]),
    /// Recipients failed, but the message is from the null sender and a
    /// bounce is never bounced (RFC 5321 §4.5.5): a copy goes to `.failed`
    /// for the postmaster instead.
    NullSender,
}

/// What becomes of failed recipients whose bounce could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritten {
    /// The sender can never get one (the error is permanent, or the
    /// message outlived its queue lifetime waiting for its bounce): a double
    /// bounce. As for the null sender, a copy goes to `.failed`, and the
    /// refused recipients are not tried again.
    Never,
    /// Perhaps only for now (a full disk): without the bounce the sender
    /// would never hear of it, so those recipients stay queued and are
    /// tried again later, as Postfix defers a recipient whose bounce it
    /// cannot log.
    NotNow,
}

/// What becomes of the message once its notifications are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Nothing is pending: remove the queue file.
    Remove,
    /// Nothing is pending, but failed recipients got no bounce: set the
    /// file aside in `.failed` with this reason.
    SetAside(String),
    /// Recipients are pending: record their state and keep the message.
    Requeue(Requeue),
}

/// A message that stays queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    /// The recipients still to deliver, in envelope order (deferred ones
    /// first, then those whose bounce could not be written).
    pub pending: Vec<String>,
    /// The retry state to record with them; its `next_attempt` says when
    /// the message is due again.
    pub state: RetryState,
    /// Failed recipients got no bounce: before anything else, a copy of the
    /// message goes to `.failed` with this reason.
    pub copy_aside: Option<String>,
    /// Something became final since the state in force was read (a
    /// recipient delivered, or one refused and its bounce written): sent
    /// again as it stands on disk, the message would repeat it, so the new
    /// state must be recorded before it is sent again.
    pub finalized: bool,
    /// Only recipients over the server's limit per transaction are left:
    /// they go again at once, in a new transaction.
    pub at_once: bool,
}

/// The plan for settling one attempt; see the module's documentation for
/// the order of calls.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One delivery record each, in this order; the record's status
    /// follows the fate (an expired recipient's fate is a failure by now).
    pub logged: Vec<RecipientFate>,
    /// A delay warning is due now: one notification of these deferred
    /// recipients to the sender.
    pub delay_warning: Option<Vec<RecipientReport>>,
    /// A success notice is due (see [`success_notice`]) for these
    /// recipients; empty: none.
    pub success: Vec<RecipientReport>,
    /// The failed recipients to report, expired ones included (all of
    /// them for the null sender).
    failed: Vec<RecipientReport>,
    /// The failure notice returns the whole message (RET=FULL).
    full: bool,
    state: RetryState,
    pending: Vec<String>,
    /// How many of `pending` are there only for the server's limit.
    again: usize,
    recipients: usize,
    sender: String,
    /// Whether the sender gets notifications (not the null sender).
    notify: bool,
    /// Whether the failed recipients' copy goes to `.failed`.
    aside: bool,
    /// Why no bounce went out when one should have.
    no_bounce: Option<String>,
    now: SystemTime,
    expired: bool,
    min: Duration,
}

/// Plans the settling of one attempt of `message` ending at `now`, whose
/// recipients' fates (one per recipient, in envelope order) are `fates`;
/// `jitter` in [0, 1) spreads the next attempt ([`Schedule::next_attempt`]).
pub fn plan(
    fates: Vec<RecipientFate>,
    message: Message<'_>,
    schedule: &Schedule,
    now: SystemTime,
    jitter: f64,
) -> Plan {
    let notify = message.notifies();
    let mut plan = Plan {
        logged: Vec::with_capacity(fates.len()),
        delay_warning: None,
        success: success_notice(&fates, message),
        failed: Vec::new(),
        full: returns_full(message.params),
        state: message.retry.clone(),
        pending: Vec::new(),
        again: 0,
        recipients: fates.len(),
        sender: message.sender.to_owned(),
        notify,
        aside: false,
        no_bounce: None,
        now,
        expired: schedule.expired(message.arrival, now),
        min: schedule.min,
    };
    // Recipients to send again at once wait (and expire) with the others
    // when some recipient is deferred.
    let waits = fates.iter().any(|f| f.fate == Fate::Deferred);
    let mut deferred = Vec::new();
    for f in fates {
        match &f.fate {
            Fate::Delivered { .. } => plan.logged.push(f),
            Fate::Again if !waits => {
                plan.pending.push(f.recipient);
                plan.again += 1;
            }
            Fate::Deferred | Fate::Again => {
                plan.pending.push(f.recipient.clone());
                deferred.push(f);
            }
            Fate::Failed(report) => {
                if message.reports_failure(&f.recipient) {
                    plan.failed.push(message.with_orcpt(report.clone()));
                }
                plan.logged.push(f);
            }
        }
    }
    if let Some(first) = deferred.first() {
        plan.state.record_attempt(now, &first.text);
        if let Some(status) = deferred
            .iter()
            .find_map(|f| f.status.filter(refuses_requiretls))
        {
            plan.state.requiretls_refused = Some(status);
        }
        match schedule.verdict(message.arrival, &plan.state, now, jitter) {
            Verdict::Retry { at, warn } => {
                plan.state.next_attempt = Some(at);
                if warn && notify {
                    let reports = delay_reports(&deferred, message, now);
                    plan.delay_warning = (!reports.is_empty()).then_some(reports);
                }
                plan.logged.extend(deferred);
            }
            Verdict::Expired => {
                plan.pending.clear();
                for f in deferred {
                    let expired = expire(f, schedule.lifetime, &plan.state, now);
                    match &expired.fate {
                        Fate::Failed(report) if message.reports_failure(&expired.recipient) => {
                            plan.failed.push(message.with_orcpt(report.clone()));
                        }
                        _ => {}
                    }
                    plan.logged.push(expired);
                }
            }
        }
    }
    plan.aside = !plan.failed.is_empty() && !notify;
    plan
}

/// Whether `status` says no server could take REQUIRETLS mail.
fn refuses_requiretls(status: &EnhancedCode) -> bool {
    [Outcome::REQUIRETLS_NO_TLS, Outcome::REQUIRETLS_UNSUPPORTED].contains(status)
}

/// The report of `recipient` of a message that outlived its lifetime: status
/// 4.4.7 and the last error; or, when an attempt found no server to honour
/// the sender's REQUIRETLS (RFC 8689 §5), that status (5.7.10, 5.7.30),
/// which says more than "expired" even when the last attempt met something
/// else (a refused connection).
pub fn expired_report(
    recipient: &str,
    lifetime: Duration,
    state: &RetryState,
    last_error: Option<&str>,
    now: SystemTime,
) -> RecipientReport {
    let mut report = RecipientReport::expired(recipient, lifetime, last_error, Some(now));
    if let Some(status) = state.requiretls_refused {
        report.status = status;
    }
    report
}

/// A deferred recipient's fate once the message outlived its lifetime (see
/// [`expired_report`]); this attempt's own REQUIRETLS refusal counts first.
fn expire(
    f: RecipientFate,
    lifetime: Duration,
    state: &RetryState,
    now: SystemTime,
) -> RecipientFate {
    let mut report = expired_report(
        &f.recipient,
        lifetime,
        state,
        state.last_error.as_deref(),
        now,
    );
    if let Some(status) = f.status.filter(refuses_requiretls) {
        report.status = status;
    }
    RecipientFate {
        text: format!("{}: {}", report.reason, f.text),
        status: Some(report.status),
        fate: Fate::Failed(report),
        ..f
    }
}

/// Whether a failure notice of a message with `params` returns the whole
/// message (size permitting): RET=FULL, but never for a REQUIRETLS
/// message (RFC 8689 §5: headers only, as Postfix's
/// `requiretls_redact_dsn`).
pub fn returns_full(params: &MsgParams) -> bool {
    params.ret == Some(Ret::Full) && !params.requiretls
}

/// The delay warning's part for each deferred recipient that wants one.
fn delay_reports(
    deferred: &[RecipientFate],
    message: Message<'_>,
    now: SystemTime,
) -> Vec<RecipientReport> {
    deferred
        .iter()
        .filter(|f| RcptParams::wants_delay(message.rcpt_params.get(&f.recipient)))
        .map(|f| {
            message.with_orcpt(RecipientReport {
                address: f.recipient.clone(),
                orcpt: None,
                status: dsn::STATUS_TRANSIENT,
                remote_mta: None,
                reply: None,
                reason: f.text.clone(),
                last_attempt: Some(now),
            })
        })
        .collect()
}

/// The recipients of one attempt's `fates` that a success notice reports
/// (`Action: relayed`), in envelope order: those delivered to a server
/// without DSN ([`Fate::Delivered`]'s `relayed`) whose NOTIFY holds
/// SUCCESS; none for the null sender. The plan's [`Plan::success`]; also
/// for an attempt that delivered every recipient, settled without a plan.
pub fn success_notice(fates: &[RecipientFate], message: Message<'_>) -> Vec<RecipientReport> {
    if !message.notifies() {
        return Vec::new();
    }
    fates
        .iter()
        .filter_map(|f| match &f.fate {
            Fate::Delivered {
                relayed: Some(report),
            } if RcptParams::wants_success(message.rcpt_params.get(&f.recipient)) => {
                Some(message.with_orcpt(report.clone()))
            }
            _ => None,
        })
        .collect()
}

impl Plan {
    /// The delay warning was written: it is not sent again.
    pub fn warned(&mut self) {
        self.state.delay_warned = Some(self.now);
    }

    /// Whether the bounce returns the whole message (RET=FULL, not for a
    /// REQUIRETLS message), size permitting; else its headers.
    pub fn returns_full(&self) -> bool {
        self.full
    }

    /// The bounce to write, if any: none when every failed recipient asked
    /// not to hear of it (NOTIFY without FAILURE).
    pub fn bounce(&self) -> Bounce<'_> {
        if self.failed.is_empty() {
            Bounce::None
        } else if !self.notify {
            Bounce::NullSender
        } else {
            Bounce::ToSender(&self.failed)
        }
    }

    /// The bounce [`Plan::bounce`] asked for could not be written, for
    /// `error`, which `permanent` says can never go away (a local part
    /// that is no mailbox name, a name too long). Says which way the
    /// failed recipients go.
    pub fn bounce_not_written(&mut self, permanent: bool, error: &str) -> Unwritten {
        if permanent || self.expired {
            self.aside = true;
            self.no_bounce = Some(format!(
                "no bounce could be written to <{}>: {error}",
                self.sender
            ));
            return Unwritten::Never;
        }
        self.pending
            .extend(self.failed.iter().map(|r| r.address.clone()));
        if self.state.next_attempt.is_none() {
            // Nothing else set a time: the bounce is tried again after the
            // shortest backoff, as an attempt that failed.
            self.state
                .record_attempt(self.now, &format!("cannot write the bounce: {error}"));
            self.state.next_attempt = Some(self.now + self.min);
        }
        Unwritten::NotNow
    }

    /// What becomes of the message, its notifications written.
    pub fn end(self) -> End {
        let aside = self
            .aside
            .then(|| failed_reason(&self.failed, self.no_bounce.as_deref()));
        if self.pending.is_empty() {
            return match aside {
                Some(reason) => End::SetAside(reason),
                None => End::Remove,
            };
        }
        End::Requeue(Requeue {
            finalized: self.pending.len() < self.recipients,
            at_once: self.again > 0 && self.again == self.pending.len(),
            pending: self.pending,
            state: self.state,
            copy_aside: aside,
        })
    }
}

/// The `.reason` text for failed recipients: one `<address>: why` a line,
/// then why no bounce went out, when one should have.
fn failed_reason(failed: &[RecipientReport], no_bounce: Option<&str>) -> String {
    failed
        .iter()
        .map(|r| format!("<{}>: {}", r.address, r.reason))
        .chain(no_bounce.map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n")
}

/// How long from `now` until a message with retry state `state` is due:
/// until its `next_attempt` (at once when that is past), or `fallback`
/// when it has none.
pub fn until_due(state: &RetryState, now: SystemTime, fallback: Duration) -> Duration {
    match state.next_attempt {
        Some(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        None => fallback,
    }
}

/// How long from `now` until a message that was just worked on and kept
/// is due again: until its `next_attempt` while that is ahead, else
/// `fallback`. A next attempt already past means none could be recorded
/// (the file could not be claimed, opened, read or recorded); without the
/// fallback such a message would go round as fast as its trouble repeats,
/// in a daemon that never idles, instead of waiting like a message that
/// was tried.
pub fn until_due_again(state: &RetryState, now: SystemTime, fallback: Duration) -> Duration {
    state
        .next_attempt
        .and_then(|at| at.duration_since(now).ok())
        .filter(|wait| !wait.is_zero())
        .unwrap_or(fallback)
}

#[cfg(test)]
#[path = "settle_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "settle_notify_tests.rs"]
mod notify_tests;
