//! Settling a message after an attempt, the same way wherever the attempt
//! ended (in a worker after a transaction, in the dispatcher after a routing
//! failure): delivered recipients leave the message's state, deferred ones
//! stay with their retry state recorded crash-safely in its state file (the
//! queue file is never written), failed ones get one bounce (RFC 3464) to
//! the sender, delivered ones one success notice when the sender asked for
//! it and the server will not send it (RFC 3461 §5.2.2), and the message
//! goes when nothing is pending. What to do is
//! decided by the core's plan ([`postman::settle`]); this module carries
//! it out: records, notifications, files, and the message's claim.
//!
//! Order matters for "never lose a message": the bounce is written before
//! the state is recorded or the message removed, so a crash in between can
//! at worst repeat a bounce, never drop one. A state that cannot be
//! recorded after part of the message became final keeps the message
//! claimed until it can be (see the `kept` module).

mod kept;

pub use kept::Kept;

use std::fs::File;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postman::config::Config;
use postman::dsn::{self, Kind, RecipientReport, Report, Returned};
use postman::queue::{self, Claimed, Queue, Recorded, RetryState, Unrecorded};
use postman::retry::Schedule;
use postman::settle::{self, Bounce, End, Plan, Requeue, Unwritten};
pub use postman::settle::{Fate, RecipientFate};
use postman::smtp::ReplyCode;
use slog::{error, info, warn, Logger};

use crate::messages::{Disposition, QueuedMessage};
use crate::records::{self, Status, Verdict as Record};

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
    /// The largest message a failure notice returns whole
    /// (`delivery.bounce_size_limit`).
    pub bounce_size_limit: usize,
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
            bounce_size_limit: config.bounce_size_limit,
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
    /// hostname, the local domains, the bounce size limit); the queue stays
    /// open, since `application.maildir.path` needs a restart.
    pub fn reload(&mut self, config: &Config) {
        self.schedule = Schedule::from_config(config);
        self.hostname = config.hostname.clone();
        self.local_domains = config.local_domains.clone();
        self.bounce_size_limit = config.bounce_size_limit;
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
    /// should do with the message. What to do is [`settle::plan`]'s; this
    /// carries it out in its order: records, notifications, then the file.
    pub fn settle(
        &mut self,
        msg: QueuedMessage,
        claimed: Claimed,
        fates: Vec<RecipientFate>,
        relay: &str,
        log: &Logger,
    ) -> Disposition {
        let now = SystemTime::now();
        let jitter = self.jitter();
        let mut plan = settle::plan(fates, message_of(&msg), &self.schedule, now, jitter);
        for f in &plan.logged {
            self.record(log, &msg, f, relay);
        }
        self.warn_delay(&msg, &claimed, &mut plan, now, log);
        if !plan.success.is_empty() {
            let written = claimed.open().and_then(|(file, _)| {
                self.notify(&msg, &file, &plan.success, Kind::Success, false, now)
            });
            self.log_success(&msg, plan.success.len(), written, log);
        }
        self.bounce_failed(&msg, &claimed, &mut plan, now, log);
        let result = match plan.end() {
            End::Requeue(requeue) => return self.requeue(msg, claimed, requeue, log),
            End::Remove => claimed.complete(),
            End::SetAside(reason) => claimed.set_aside_failed(&reason).map(|_| ()),
        };
        if let Err(e) = result {
            error!(log, "cannot remove or set aside a settled queue file";
                "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
        }
        Disposition::Finished
    }

    /// Writes the delay warning the plan asks for, if any.
    fn warn_delay(
        &mut self,
        msg: &QueuedMessage,
        claimed: &Claimed,
        plan: &mut Plan,
        now: SystemTime,
        log: &Logger,
    ) {
        let Some(reports) = &plan.delay_warning else {
            return;
        };
        let written = claimed
            .open()
            .and_then(|(file, _)| self.notify(msg, &file, reports, Kind::Delay, false, now));
        match written {
            Ok(()) => {
                plan.warned();
                info!(log, "delay warning sent"; "queue_id" => &msg.id, "to" => &msg.envelope.sender);
            }
            Err(e) => {
                warn!(log, "cannot write the delay warning"; "queue_id" => &msg.id, "error" => %e)
            }
        }
    }

    /// Writes the one bounce of the failed recipients the plan asks for,
    /// and tells the plan when it cannot be written.
    fn bounce_failed(
        &mut self,
        msg: &QueuedMessage,
        claimed: &Claimed,
        plan: &mut Plan,
        now: SystemTime,
        log: &Logger,
    ) {
        let written = match plan.bounce() {
            Bounce::None => return,
            Bounce::NullSender => {
                warn!(log, "undeliverable message from the null sender: no bounce is sent, the file is kept in .failed";
                    "queue_id" => &msg.id, "domain" => &msg.domain);
                return;
            }
            Bounce::ToSender(reports) => {
                let full = plan.returns_full();
                claimed
                    .open()
                    .and_then(|(file, _)| {
                        self.notify(msg, &file, reports, Kind::Failure, full, now)
                    })
                    .map(|()| reports.len())
            }
        };
        let e = match written {
            Ok(recipients) => {
                info!(log, "bounce sent"; "queue_id" => &msg.id, "domain" => &msg.domain,
                    "to" => &msg.envelope.sender, "recipients" => recipients);
                return;
            }
            Err(e) => e,
        };
        match plan.bounce_not_written(queue::is_permanent(&e), &e.to_string()) {
            Unwritten::Never => {
                error!(log, "the bounce can never reach the sender; the message is kept in .failed";
                    "queue_id" => &msg.id, "domain" => &msg.domain,
                    "to" => &msg.envelope.sender, "error" => %e);
            }
            Unwritten::NotNow => {
                error!(log, "cannot write the bounce; the failed recipients stay queued";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
            }
        }
    }

    /// Keeps the message queued for its pending recipients, as the plan
    /// says: a copy of it aside first when failed recipients got no
    /// bounce, then their state recorded.
    fn requeue(
        &mut self,
        mut msg: QueuedMessage,
        claimed: Claimed,
        requeue: Requeue,
        log: &Logger,
    ) -> Disposition {
        let Requeue {
            pending,
            state,
            copy_aside,
            finalized,
            at_once,
        } = requeue;
        if let Some(reason) = copy_aside {
            // Others are still pending, so the file stays queued: the
            // failed recipients' copy goes to .failed for the postmaster.
            if let Err(e) = claimed.copy_aside_failed(&reason) {
                error!(log, "cannot keep a copy of a failed message from the null sender";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
            }
        }
        let again = pending.len();
        let recording = self.record_state(&mut msg, claimed, pending, &state, finalized, log);
        msg.retry = state;
        match recording {
            Recording::Kept => Disposition::Finished,
            Recording::Recorded if at_once => {
                info!(log, "recipients over the server's limit per transaction go in a new transaction";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "recipients" => again);
                Disposition::Unused(Box::new(msg))
            }
            Recording::Recorded | Recording::NotRecorded => Disposition::Deferred(Box::new(msg)),
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
    /// is already removed ([`Claimed::remove_delivered`]), still `open`
    /// when the transaction had it open: one record per recipient, then
    /// the success notice due ([`settle::success_notice`]). That notice
    /// comes after the removal, unlike the others: a crash in between loses
    /// it rather than delivering the message twice.
    pub fn settle_removed(
        &mut self,
        msg: &QueuedMessage,
        fates: &[RecipientFate],
        open: Option<&File>,
        relay: &str,
        log: &Logger,
    ) -> Disposition {
        for f in fates {
            self.record(log, msg, f, relay);
        }
        let success = settle::success_notice(fates, message_of(msg));
        if !success.is_empty() {
            let now = SystemTime::now();
            let written = match open {
                Some(file) => self.notify(msg, file, &success, Kind::Success, false, now),
                // Nothing of the message can be returned: the notice goes
                // without it.
                None => {
                    self.write_notice(msg, &success, Kind::Success, Returned::Headers(&[]), now)
                }
            };
            self.log_success(msg, success.len(), written, log);
        }
        Disposition::Finished
    }

    /// Logs what became of a success notice to `recipients` recipients.
    fn log_success(
        &self,
        msg: &QueuedMessage,
        recipients: usize,
        written: std::io::Result<()>,
        log: &Logger,
    ) {
        match written {
            Ok(()) => info!(log, "success notice sent"; "queue_id" => &msg.id,
                "domain" => &msg.domain, "to" => &msg.envelope.sender, "recipients" => recipients),
            // The recipients are delivered: nothing to try again.
            Err(e) => warn!(log, "cannot write the success notice"; "queue_id" => &msg.id,
                "domain" => &msg.domain, "error" => %e),
        }
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

    /// One delivery record for `f`, its status by its fate.
    fn record(&self, log: &Logger, msg: &QueuedMessage, f: &RecipientFate, relay: &str) {
        let status = match f.fate {
            Fate::Delivered { .. } => Status::Sent,
            Fate::Deferred | Fate::Again => Status::Deferred,
            Fate::Failed(_) => Status::Bounced,
        };
        records::log_recipient(
            log,
            msg,
            &f.recipient,
            &Record {
                status,
                relay,
                code: f.code.map_or(0, ReplyCode::get),
                dsn: f.status.map(|s| s.to_string()),
                reply: &f.text,
            },
        );
    }

    /// Writes one notification to the sender, returning from the queue
    /// file `file` the whole message when `full` and it is within
    /// `delivery.bounce_size_limit`, else its headers.
    fn notify(
        &mut self,
        msg: &QueuedMessage,
        file: &File,
        reports: &[RecipientReport],
        kind: Kind,
        full: bool,
        now: SystemTime,
    ) -> std::io::Result<()> {
        let offset = msg.envelope.body_offset;
        let whole = if full {
            queue::read_original_message(file, offset, self.bounce_size_limit)?
        } else {
            None
        };
        let headers = match whole {
            Some(_) => Vec::new(),
            None => queue::read_original_headers(file, offset)?,
        };
        let returned = match &whole {
            Some(message) => Returned::Message(message),
            None => Returned::Headers(&headers),
        };
        self.write_notice(msg, reports, kind, returned, now)
    }

    /// Writes one notification to the sender: into its Maildir when its
    /// domain is local, else queued for remote delivery with the null sender.
    fn write_notice(
        &mut self,
        msg: &QueuedMessage,
        reports: &[RecipientReport],
        kind: Kind,
        returned: Returned<'_>,
        now: SystemTime,
    ) -> std::io::Result<()> {
        let token = self.unique(now);
        let envid = msg.envelope.params.envid_printable();
        let report = Report {
            kind,
            reporting_mta: &self.hostname,
            queue_id: Some(&msg.id),
            envid: envid.as_deref(),
            arrival: msg.arrival,
            original_sender: &msg.envelope.sender,
            recipients: reports,
            returned,
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

/// The message as the settle plan sees it.
fn message_of(msg: &QueuedMessage) -> settle::Message<'_> {
    settle::Message {
        sender: &msg.envelope.sender,
        arrival: msg.arrival,
        retry: &msg.retry,
        params: &msg.envelope.params,
        rcpt_params: &msg.envelope.rcpt_params,
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

/// When a deferred message is due again, as an `Instant` for the
/// dispatcher's timers ([`settle::until_due`]).
pub fn due(state: &RetryState, fallback: Duration) -> Instant {
    Instant::now() + settle::until_due(state, SystemTime::now(), fallback)
}

/// When a message that was just worked on and kept is due again, as an
/// `Instant` ([`settle::until_due_again`]).
pub fn due_again(state: &RetryState, fallback: Duration) -> Instant {
    Instant::now() + settle::until_due_again(state, SystemTime::now(), fallback)
}
