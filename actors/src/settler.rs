//! Settling a message after an attempt, the same way wherever the attempt
//! ended (in a worker after a transaction, in the dispatcher after a routing
//! failure): delivered recipients leave the queue file, deferred ones stay
//! with their retry state rewritten crash-safely, failed ones get one bounce
//! (RFC 3464) to the sender, and the file goes when nothing is pending.
//!
//! Order matters for "never lose a message": the bounce is written before
//! the original is rewritten or removed, so a crash in between can at worst
//! repeat a bounce, never drop one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postman::config::Config;
use postman::dsn::{self, Kind, RecipientReport, Report};
use postman::queue::{self, Claimed, Queue, RetryState};
use postman::retry::{Schedule, Verdict};
use slog::{error, info, warn, Logger};

use crate::messages::{Disposition, QueuedMessage};
use crate::records::{self, Status, Verdict as Record};

/// What one attempt decided for one recipient.
pub enum Fate {
    Delivered,
    /// Try again later; the text says why.
    Deferred(String),
    /// Not taken in this transaction only for the server's limit of
    /// recipients per transaction (RFC 5321 §4.5.3.1.10), while others
    /// were delivered: no attempt is counted and, unless the message waits
    /// for another recipient anyway, it is sent again at once.
    Again,
    /// Permanently refused: reported in the bounce.
    Failed(RecipientReport),
}

/// One recipient's fate with what its log record shows.
pub struct RecipientFate {
    pub recipient: String,
    pub fate: Fate,
    /// The reply code, 0 without a reply.
    pub code: u16,
    pub dsn: Option<String>,
    /// The server's reply or postman's diagnostic.
    pub text: String,
}

/// Everything settling needs besides the message. Each worker, each of its
/// disk threads and the dispatcher own one: nothing here is shared.
pub struct Settler {
    /// The queue's handles, this owner's own: its kept domain folders are
    /// reused from one message to the next.
    pub queue: Queue,
    /// This process's claim owner, `<hostname>.<pid>.<start time>`.
    pub owner: String,
    pub schedule: Schedule,
    pub hostname: String,
    pub local_domains: Vec<String>,
    /// xorshift state for the retry jitter.
    rng: u64,
    /// For unique bounce names.
    serial: u64,
    tag: String,
}

impl Settler {
    /// A settler working on `queue` (its own handle set: see
    /// [`Queue::share`]).
    pub fn new(queue: Queue, config: &Config, owner: &str, tag: &str) -> Settler {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            ^ (u64::from(std::process::id()) << 32);
        Settler {
            queue,
            owner: owner.to_owned(),
            schedule: Schedule::from_config(config),
            hostname: config.hostname.clone(),
            local_domains: config.local_domains.clone(),
            rng: seed | 1,
            serial: 0,
            tag: tag.to_owned(),
        }
    }

    /// Takes the settings a reload may change (the retry schedule, the
    /// hostname, the local domains); the queue stays open, since
    /// `application.maildir.path` needs a restart.
    pub fn reload(&mut self, config: &Config) {
        self.schedule = Schedule::from_config(config);
        self.hostname = config.hostname.clone();
        self.local_domains = config.local_domains.clone();
    }

    /// A number in [0, 1) for spreading retries.
    pub fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn unique(&mut self, now: SystemTime) -> String {
        self.serial += 1;
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        format!(
            "{secs}.P{}{}Q{}.{}",
            std::process::id(),
            self.tag,
            self.serial,
            self.hostname
        )
    }

    /// Applies one attempt's per-recipient fates to the claimed file, logs
    /// one delivery record per recipient, and says what the dispatcher
    /// should do with the message.
    pub fn settle(
        &mut self,
        mut msg: QueuedMessage,
        claimed: Claimed,
        fates: Vec<RecipientFate>,
        relay: &str,
        log: &Logger,
    ) -> Disposition {
        let now = SystemTime::now();
        let mut pending = Vec::new();
        let mut failed = Vec::new();
        let mut first_reason = None;
        let mut deferred_records = Vec::new();
        // Recipients to send again at once: they wait (and expire) with
        // the others when some recipient is deferred.
        let waits = fates.iter().any(|f| matches!(f.fate, Fate::Deferred(_)));
        let mut again = 0;
        for f in fates {
            match f.fate {
                Fate::Delivered => {
                    self.record(log, &msg, &f, relay, Status::Sent);
                }
                Fate::Again if !waits => {
                    pending.push(f.recipient.clone());
                    again += 1;
                }
                Fate::Deferred(_) | Fate::Again => {
                    let reason = match &f.fate {
                        Fate::Deferred(reason) => reason,
                        _ => &f.text,
                    };
                    first_reason.get_or_insert_with(|| reason.clone());
                    pending.push(f.recipient.clone());
                    deferred_records.push(f);
                }
                Fate::Failed(ref report) => {
                    self.record(log, &msg, &f, relay, Status::Bounced);
                    failed.push(report.clone());
                }
            }
        }

        let mut state = msg.retry.clone();
        if let Some(reason) = &first_reason {
            state.record_attempt(now, reason);
            let jitter = self.jitter();
            match self.schedule.verdict(msg.arrival, &state, now, jitter) {
                Verdict::Retry { at, warn } => {
                    state.next_attempt = Some(at);
                    for f in &deferred_records {
                        self.record(log, &msg, f, relay, Status::Deferred);
                    }
                    if warn {
                        self.warn_delay(&msg, &claimed, &deferred_records, &mut state, now, log);
                    }
                }
                Verdict::Expired => {
                    for f in deferred_records.drain(..) {
                        let report = RecipientReport::expired(
                            &f.recipient,
                            self.schedule.lifetime,
                            state.last_error.as_deref(),
                            Some(now),
                        );
                        let expired = RecipientFate {
                            text: format!("{}: {}", report.reason, f.text),
                            dsn: Some(report.status.to_string()),
                            fate: Fate::Failed(report.clone()),
                            ..f
                        };
                        self.record(log, &msg, &expired, relay, Status::Bounced);
                        failed.push(report);
                    }
                    pending.clear();
                }
            }
        }

        let mut keep_failed_copy = false;
        // Why the sender got no bounce, for the `.reason` of the copy kept.
        let mut no_bounce = None;
        if !failed.is_empty() {
            if dsn::should_bounce(&msg.envelope.sender) {
                match self.bounce(&msg, &claimed, &failed, Kind::Failure, &mut state, now) {
                    Ok(()) => {
                        info!(log, "bounce sent"; "queue_id" => &msg.id, "domain" => &msg.domain,
                            "to" => &msg.envelope.sender, "recipients" => failed.len());
                    }
                    Err(e)
                        if queue::is_permanent(&e) || self.schedule.expired(msg.arrival, now) =>
                    {
                        // The sender can never get one (a local part that is
                        // no mailbox name, a name too long), or the message
                        // outlived its queue lifetime waiting for its bounce
                        // to be written: a double bounce. As for the null sender, a copy goes
                        // to .failed for the postmaster, and the refused
                        // recipients are not tried again.
                        error!(log, "the bounce can never reach the sender; the message is kept in .failed";
                            "queue_id" => &msg.id, "domain" => &msg.domain,
                            "to" => &msg.envelope.sender, "error" => %e);
                        keep_failed_copy = true;
                        no_bounce = Some(format!(
                            "no bounce could be written to <{}>: {e}",
                            msg.envelope.sender
                        ));
                    }
                    Err(e) => {
                        // Perhaps only for now (a full disk): without the
                        // bounce the sender would never hear of it, so those
                        // recipients stay queued and are tried again later,
                        // as Postfix defers a recipient whose bounce it
                        // cannot log.
                        error!(log, "cannot write the bounce; the failed recipients stay queued";
                            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                        pending.extend(failed.iter().map(|r| r.address.clone()));
                        if state.next_attempt.is_none() {
                            state.record_attempt(now, &format!("cannot write the bounce: {e}"));
                            state.next_attempt = Some(now + self.schedule.min);
                        }
                    }
                }
            } else {
                // A bounce is never bounced: keep a copy for the postmaster.
                warn!(log, "undeliverable message from the null sender: no bounce is sent, the file is kept in .failed";
                    "queue_id" => &msg.id, "domain" => &msg.domain);
                keep_failed_copy = true;
            }
        }

        if keep_failed_copy && !pending.is_empty() {
            // Others are still pending, so the file stays queued: the
            // failed recipients' copy goes to .failed for the postmaster.
            let reason = failed_reason(&failed, no_bounce.as_deref());
            if let Err(e) = claimed.copy_aside_failed(&reason) {
                error!(log, "cannot keep a copy of a failed message from the null sender";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
            }
        }

        if pending.is_empty() {
            let result = if keep_failed_copy {
                claimed
                    .set_aside_failed(&failed_reason(&failed, no_bounce.as_deref()))
                    .map(|_| ())
            } else {
                claimed.complete()
            };
            if let Err(e) = result {
                error!(log, "cannot remove or set aside a settled queue file";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
            }
            return Disposition::Finished;
        }

        let arrival = msg.arrival;
        let mut rewritten = false;
        // Recipients over the server's limit, when they are all that is
        // left, go again at once; with a split, those of the new files too.
        let all_again = again > 0 && again == pending.len();
        match state.render_blocks(&msg.envelope, &pending, arrival) {
            Ok(blocks) => {
                let first = &blocks[0];
                let rest: Vec<&[u8]> = blocks[1..].iter().map(|b| b.bytes.as_slice()).collect();
                if !rest.is_empty() && !self.split_rest(&msg, &claimed, &rest, log) {
                    if let Err(e) = claimed.release() {
                        error!(log, "cannot release a claimed queue file";
                            "queue_id" => &msg.id, "error" => %e);
                    }
                } else {
                    match claimed.rewrite_and_release(&first.bytes, msg.envelope.body_offset) {
                        Ok(()) => {
                            rewritten = true;
                            msg.envelope.body_offset = first.bytes.len() as u64;
                            pending.truncate(first.recipients.end);
                            msg.envelope.recipients = pending;
                            msg.envelope.arrival = Some(arrival);
                        }
                        Err(e) => {
                            error!(log, "cannot rewrite the queue file; it keeps its old state";
                            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e)
                        }
                    }
                }
            }
            Err(e) => {
                error!(log, "cannot render the new envelope; the file keeps its old state";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                if let Err(e) = claimed.release() {
                    error!(log, "cannot release a claimed queue file";
                        "queue_id" => &msg.id, "error" => %e);
                }
            }
        }
        msg.retry = state;
        // Only recipients over the server's limit are left, and the file
        // says the others are done: they go in a new transaction now.
        if rewritten && all_again {
            info!(log, "recipients over the server's limit per transaction go in a new transaction";
                "queue_id" => &msg.id, "domain" => &msg.domain, "recipients" => again);
            return Disposition::Unused(Box::new(msg));
        }
        Disposition::Deferred(Box::new(msg))
    }

    /// Queues the pending recipients that do not fit the file's new
    /// envelope block (`rest`, one block each) as new messages beside it,
    /// with the same body. On failure the claim is released, the file keeps
    /// its old state, and false comes back.
    fn split_rest(
        &mut self,
        msg: &QueuedMessage,
        claimed: &Claimed,
        rest: &[&[u8]],
        log: &Logger,
    ) -> bool {
        let now = SystemTime::now();
        let mut names: Vec<String> = (0..rest.len()).map(|_| self.unique(now)).collect();
        names.reverse();
        let result = claimed.open().and_then(|(mut source, _)| {
            queue::split_off(
                &self.queue,
                &msg.domain,
                &mut source,
                msg.envelope.body_offset,
                rest,
                || names.pop().unwrap_or_default(),
            )
        });
        match result {
            Ok(names) => {
                warn!(log, "the pending recipients do not fit one envelope block: the rest go on as new queue files";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "new" => names.join(" "),
                    "limit" => queue::MAX_WRITTEN_BLOCK);
                true
            }
            Err(e) => {
                error!(log, "cannot split the pending recipients into new queue files; the file keeps its old state";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                false
            }
        }
    }

    /// Settles a message whose every recipient was accepted and whose file
    /// is already removed ([`Claimed::remove_delivered`]): one record per
    /// recipient.
    pub fn settle_removed(
        &mut self,
        msg: &QueuedMessage,
        fates: &[RecipientFate],
        relay: &str,
        log: &Logger,
    ) -> Disposition {
        for f in fates {
            self.record(log, msg, f, relay, Status::Sent);
        }
        Disposition::Finished
    }

    /// Settles every recipient of an unattempted message the same way (a
    /// routing failure, an expiry found by the dispatcher).
    pub fn settle_all(
        &mut self,
        msg: QueuedMessage,
        fate: impl Fn(&str) -> RecipientFate,
        relay: &str,
        log: &Logger,
    ) -> Disposition {
        let claimed = match queue::claim(&self.queue, &msg.domain, &msg.id, &self.owner) {
            Ok(Some(claimed)) => claimed,
            // Gone, or someone else has it: not ours to settle.
            Ok(None) => return Disposition::Finished,
            Err(e) => {
                error!(log, "cannot claim queue file; it waits for its next turn";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                return Disposition::Deferred(Box::new(msg));
            }
        };
        let fates = msg.envelope.recipients.iter().map(|r| fate(r)).collect();
        self.settle(msg, claimed, fates, relay, log)
    }

    fn record(
        &self,
        log: &Logger,
        msg: &QueuedMessage,
        f: &RecipientFate,
        relay: &str,
        status: Status,
    ) {
        records::log_recipient(
            log,
            msg,
            &f.recipient,
            &Record {
                status,
                relay,
                code: f.code,
                dsn: f.dsn.clone(),
                reply: &f.text,
            },
        );
    }

    fn warn_delay(
        &mut self,
        msg: &QueuedMessage,
        claimed: &Claimed,
        deferred: &[RecipientFate],
        state: &mut RetryState,
        now: SystemTime,
        log: &Logger,
    ) {
        if !dsn::should_bounce(&msg.envelope.sender) {
            return;
        }
        let reports: Vec<RecipientReport> = deferred
            .iter()
            .map(|f| RecipientReport {
                address: f.recipient.clone(),
                status: dsn::STATUS_TRANSIENT,
                remote_mta: None,
                reply: None,
                reason: f.text.clone(),
                last_attempt: Some(now),
            })
            .collect();
        match self.bounce(msg, claimed, &reports, Kind::Delay, state, now) {
            Ok(()) => {
                state.delay_warned = Some(now);
                info!(log, "delay warning sent"; "queue_id" => &msg.id, "to" => &msg.envelope.sender);
            }
            Err(e) => {
                warn!(log, "cannot write the delay warning"; "queue_id" => &msg.id, "error" => %e)
            }
        }
    }

    /// Writes one notification to the sender: into its Maildir when its
    /// domain is local, else queued for remote delivery with the null sender.
    fn bounce(
        &mut self,
        msg: &QueuedMessage,
        claimed: &Claimed,
        reports: &[RecipientReport],
        kind: Kind,
        _state: &mut RetryState,
        now: SystemTime,
    ) -> std::io::Result<()> {
        let (file, _) = claimed.open()?;
        let headers = queue::read_original_headers(&file, msg.envelope.body_offset)?;
        let token = self.unique(now);
        let report = Report {
            kind,
            reporting_mta: &self.hostname,
            queue_id: Some(&msg.id),
            arrival: msg.arrival,
            original_sender: &msg.envelope.sender,
            recipients: reports,
            original_headers: &headers,
            date: now,
            message_id: &token,
            will_retry_until: matches!(kind, Kind::Delay)
                .then(|| self.schedule.expires_at(msg.arrival)),
        };
        let message = dsn::render(&report);
        queue::place_bounce(
            &self.queue,
            &self.local_domains,
            &msg.envelope.sender,
            now,
            &message,
            &token,
        )
        .map(|_| ())
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

/// When a deferred message is due again, as an `Instant` for the
/// dispatcher's timers: its `X-Postman-Next-Attempt`, or `fallback` from now.
pub fn due(state: &RetryState, fallback: Duration) -> Instant {
    let now = Instant::now();
    match state.next_attempt {
        Some(at) => {
            now + at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        }
        None => now + fallback,
    }
}

/// When a message that was just worked on and kept is due again: at its
/// `X-Postman-Next-Attempt` while that is ahead, else `fallback` from now.
/// A next attempt already past means none could be recorded (the file could
/// not be claimed, opened, read or rewritten); without the fallback such a
/// message would go round as fast as its trouble repeats, in a daemon
/// that never idles, instead of waiting like a message that was tried.
pub fn due_again(state: &RetryState, fallback: Duration) -> Instant {
    let now = Instant::now();
    let ahead = state
        .next_attempt
        .and_then(|at| at.duration_since(SystemTime::now()).ok())
        .filter(|wait| !wait.is_zero());
    now + ahead.unwrap_or(fallback)
}
