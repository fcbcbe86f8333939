//! Settling a message after an attempt, the same way wherever the attempt
//! ended (in a worker after a transaction, in the dispatcher after a routing
//! failure): delivered recipients leave the message's state, deferred ones
//! stay with their retry state recorded crash-safely in its state file (the
//! queue file is never written), failed ones get one bounce (RFC 3464) to
//! the sender, and the message goes when nothing is pending.
//!
//! Order matters for "never lose a message": the bounce is written before
//! the state is recorded or the message removed, so a crash in between can
//! at worst repeat a bounce, never drop one. A state that cannot be
//! recorded after part of the message became final keeps the message
//! claimed until it can be (see the `kept` module).

mod kept;

pub use kept::Kept;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postman::config::Config;
use postman::dsn::{self, Kind, RecipientReport, Report};
use postman::queue::{self, Claimed, Queue, Recorded, RetryState, Unrecorded};
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
    /// Whether messages whose new state cannot be recorded are kept
    /// claimed ([`Settler::keeping_unrecorded`]).
    keeps: bool,
    /// Those messages, tried again now and then ([`Settler::retry_kept`]).
    kept: Vec<kept::Kept>,
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
            keeps: false,
            kept: Vec::new(),
            rng: seed | 1,
            serial: 0,
            tag: tag.to_owned(),
        }
    }

    /// This settler keeps a message whose new state cannot be recorded
    /// after an attempt that made part of it final: claimed, and out of the
    /// dispatcher's hands, until the state is recorded (see
    /// [`Settler::retry_kept`]). The workers' settlers do; the
    /// dispatcher's, which settles only messages it never sent, need not.
    pub fn keeping_unrecorded(mut self) -> Settler {
        self.keeps = true;
        self
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

        // Why a copy goes to .failed instead of a bounce to the sender.
        let no_bounce = if failed.is_empty() {
            None
        } else {
            self.bounce_failed(&msg, &claimed, &failed, &mut state, &mut pending, now, log)
        };
        let keep_failed_copy = no_bounce.is_some();
        let no_bounce = no_bounce.flatten();

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

        // Something is final since the state in force was read (a recipient
        // delivered, or one refused and its bounce written): the new state
        // must be recorded before the message can be sent again.
        let finalized = pending.len() < msg.envelope.recipients.len();
        // Recipients over the server's limit, when they are all that is
        // left, go again at once; with a split, those of the new messages
        // too.
        let all_again = again > 0 && again == pending.len();
        let recording = self.record_state(&mut msg, claimed, pending, &state, finalized, log);
        msg.retry = state;
        match recording {
            Recording::Kept => Disposition::Finished,
            Recording::Recorded if all_again => {
                info!(log, "recipients over the server's limit per transaction go in a new transaction";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "recipients" => again);
                Disposition::Unused(Box::new(msg))
            }
            Recording::Recorded | Recording::NotRecorded => Disposition::Deferred(Box::new(msg)),
        }
    }

    /// Writes one bounce for the `failed` recipients. Says whether a copy
    /// goes to .failed instead (`Some`, with why no bounce was written
    /// when one should have been): for a message from the null sender, or
    /// one whose bounce can never be written. A bounce that cannot be
    /// written for now puts them back among the `pending`.
    #[allow(clippy::too_many_arguments)]
    fn bounce_failed(
        &mut self,
        msg: &QueuedMessage,
        claimed: &Claimed,
        failed: &[RecipientReport],
        state: &mut RetryState,
        pending: &mut Vec<String>,
        now: SystemTime,
        log: &Logger,
    ) -> Option<Option<String>> {
        if !dsn::should_bounce(&msg.envelope.sender) {
            // A bounce is never bounced: keep a copy for the postmaster.
            warn!(log, "undeliverable message from the null sender: no bounce is sent, the file is kept in .failed";
                "queue_id" => &msg.id, "domain" => &msg.domain);
            return Some(None);
        }
        match self.bounce(msg, claimed, failed, Kind::Failure, state, now) {
            Ok(()) => {
                info!(log, "bounce sent"; "queue_id" => &msg.id, "domain" => &msg.domain,
                    "to" => &msg.envelope.sender, "recipients" => failed.len());
                None
            }
            Err(e) if queue::is_permanent(&e) || self.schedule.expired(msg.arrival, now) => {
                // The sender can never get one (a local part that is no
                // mailbox name, a name too long), or the message outlived
                // its queue lifetime waiting for its bounce to be written: a
                // double bounce. As for the null sender, a copy goes to
                // .failed for the postmaster, and the refused recipients are
                // not tried again.
                error!(log, "the bounce can never reach the sender; the message is kept in .failed";
                    "queue_id" => &msg.id, "domain" => &msg.domain,
                    "to" => &msg.envelope.sender, "error" => %e);
                Some(Some(format!(
                    "no bounce could be written to <{}>: {e}",
                    msg.envelope.sender
                )))
            }
            Err(e) => {
                // Perhaps only for now (a full disk): without the bounce the
                // sender would never hear of it, so those recipients stay
                // queued and are tried again later, as Postfix defers a
                // recipient whose bounce it cannot log.
                error!(log, "cannot write the bounce; the failed recipients stay queued";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                pending.extend(failed.iter().map(|r| r.address.clone()));
                if state.next_attempt.is_none() {
                    state.record_attempt(now, &format!("cannot write the bounce: {e}"));
                    state.next_attempt = Some(now + self.schedule.min);
                }
                None
            }
        }
    }

    /// Records what is left of the message (its `pending` recipients and
    /// retry `state`) in its state file and gives the claim back
    /// ([`Claimed::record_and_release`]); the queue file is never written.
    /// Recipients beyond one envelope block go on as new messages of the
    /// same queue file. When the state cannot be recorded and something
    /// became final in this attempt (`finalized`), sending the message
    /// again would repeat it: a settler that keeps such messages holds on
    /// to the claim and tries again ([`Settler::retry_kept`]); otherwise the
    /// claim goes back with the old state.
    fn record_state(
        &mut self,
        msg: &mut QueuedMessage,
        claimed: Claimed,
        mut pending: Vec<String>,
        state: &RetryState,
        finalized: bool,
        log: &Logger,
    ) -> Recording {
        let arrival = msg.arrival;
        let rendered = msg
            .tie
            .ok_or_else(|| "the queue file's tie is unknown".to_owned())
            .and_then(|tie| {
                state
                    .render_state(&msg.envelope, &pending, arrival, tie)
                    .map_err(|e| e.to_string())
            });
        let blocks = match rendered {
            Ok(blocks) => blocks,
            Err(e) => {
                error!(log, "cannot render the message's new state; it keeps its old state";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => e);
                release(claimed, msg, log);
                return Recording::NotRecorded;
            }
        };
        let now = SystemTime::now();
        let split: Vec<(String, Vec<u8>)> = blocks[1..]
            .iter()
            .map(|b| (self.unique(now), b.bytes.clone()))
            .collect();
        match claimed.record_and_release(&blocks[0].bytes, &split) {
            Ok(recorded) => {
                if let Recorded::NotReleased(e) = recorded {
                    error!(log, "the message's new state is recorded, but its claim cannot be given back; the next start puts it back";
                        "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                }
                if !split.is_empty() {
                    let names: Vec<&str> = split.iter().map(|(n, _)| n.as_str()).collect();
                    warn!(log, "the pending recipients do not fit one envelope block: the rest go on as new messages of the same queue file";
                        "queue_id" => &msg.id, "domain" => &msg.domain, "new" => names.join(" "),
                        "limit" => queue::MAX_WRITTEN_BLOCK);
                }
                pending.truncate(blocks[0].recipients.end);
                msg.envelope.recipients = pending;
                msg.envelope.arrival = Some(arrival);
                Recording::Recorded
            }
            Err(unrecorded) if finalized && self.keeps => {
                let Unrecorded { claimed, error } = *unrecorded;
                error!(log, "cannot record the message's new state: it stays claimed, and is not sent again until its state is recorded";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %error,
                    "retry_in_s" => kept::RETRY_EVERY.as_secs());
                self.kept.push(kept::Kept::new(
                    msg.id.clone(),
                    msg.domain.clone(),
                    claimed,
                    blocks[0].bytes.clone(),
                    split,
                ));
                Recording::Kept
            }
            Err(unrecorded) => {
                let Unrecorded { claimed, error } = *unrecorded;
                error!(log, "cannot record the message's new state; it keeps its old state";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %error);
                release(claimed, msg, log);
                Recording::NotRecorded
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

/// What [`Settler::record_state`] did.
enum Recording {
    /// The new state is recorded.
    Recorded,
    /// It is not: the claim went back, with the old state.
    NotRecorded,
    /// It is not: the claim is kept, to record it later.
    Kept,
}

fn release(claimed: Claimed, msg: &QueuedMessage, log: &Logger) {
    if let Err(e) = claimed.release() {
        error!(log, "cannot release a claimed queue file; it is recovered at the next start";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
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
/// not be claimed, opened, read or recorded); without the fallback such a
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
