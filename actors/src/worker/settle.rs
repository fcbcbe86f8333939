//! Starting a transaction from a queued file (claim it, re-read its
//! envelope, open its body) and turning the transaction's per-recipient
//! results into fates for the [`Settler`](crate::settler::Settler). The
//! connection logic (sockets, addresses, the session's events) is in
//! [`super::conn`].

use std::time::{Instant, SystemTime};

use postman::dsn::RecipientReport;
use postman::queue::{self, BodyReader, Claimed, Marked, ReadError, RetryState};
use postman::smtp::{Class, MessageResult, Session};
use slog::{debug, error};

use super::body::{self, Body};
use super::disk::{File, Settlement};
use super::Shared;
use crate::messages::{DispatcherMsg, Disposition, QueuedMessage};
use crate::records::{self, Status, Verdict};
use crate::settler::{Fate, RecipientFate};

/// The message being delivered on a connection, claimed for this process.
pub struct Job {
    pub msg: QueuedMessage,
    pub claimed: Claimed,
    pub body: Option<Body>,
}

/// Claims the message, reads its envelope again (another process may have
/// changed it since the scan) and starts its transaction. On failure the
/// message is disposed of here and `None` returned.
pub fn start_job(
    session: &mut Session,
    mut msg: QueuedMessage,
    shared: &mut Shared,
    relay: &str,
    now: Instant,
) -> Option<Job> {
    let claimed = match queue::claim(
        &shared.settler.layout,
        &msg.domain,
        &msg.id,
        &shared.settler.owner,
    ) {
        Ok(Some(claimed)) => claimed,
        Ok(None) => {
            // Delivered, deleted or claimed by someone else since the scan.
            debug!(shared.log, "queue file gone before delivery"; "queue_id" => &msg.id,
                "domain" => &msg.domain);
            tell_done(shared, msg, Disposition::Finished);
            return None;
        }
        Err(e) => {
            error!(shared.log, "cannot claim queue file"; "queue_id" => &msg.id, "error" => %e);
            let reason = format!("cannot claim queue file: {e}");
            log_all(shared, &msg, relay, Status::Deferred, &reason);
            let disposition = Disposition::Deferred(msg.clone());
            tell_done(shared, msg, disposition);
            return None;
        }
    };
    // One open serves the envelope, the measuring pass and the sending.
    let mut file = match body::open(claimed.path()) {
        Ok(file) => file,
        Err(e) => {
            cannot_open(shared, msg, claimed, relay, &e);
            return None;
        }
    };
    match queue::read_envelope_from(&mut file) {
        Ok(envelope) => match RetryState::from_envelope(&envelope) {
            Ok(retry) => {
                msg.arrival = envelope.arrival.unwrap_or(msg.arrival);
                msg.envelope = envelope;
                msg.retry = retry;
            }
            Err(e) => {
                quarantine(shared, msg, claimed, &e.to_string());
                return None;
            }
        },
        Err(ReadError::Envelope(e)) => {
            quarantine(shared, msg, claimed, &e.to_string());
            return None;
        }
        Err(ReadError::Io(e)) => {
            error!(shared.log, "cannot read claimed queue file"; "queue_id" => &msg.id, "error" => %e);
            release(shared, &msg, claimed);
            let disposition = Disposition::Deferred(msg.clone());
            tell_done(shared, msg, disposition);
            return None;
        }
    }
    if msg
        .retry
        .next_attempt
        .is_some_and(|at| at > SystemTime::now())
    {
        // Another process deferred it after our scan: not due yet.
        release(shared, &msg, claimed);
        let disposition = Disposition::Deferred(msg.clone());
        tell_done(shared, msg, disposition);
        return None;
    }
    // The size now, not the scanner's: a rewrite since changed the block.
    let body_len = file.metadata().map_or(u64::MAX, |m| {
        m.len().saturating_sub(msg.envelope.body_offset)
    });
    let reader = match BodyReader::from_file(file, msg.envelope.body_offset) {
        Ok(body) => body,
        Err(e) => {
            cannot_open(shared, msg, claimed, relay, &e);
            return None;
        }
    };
    let (envelope, body) = super::conn::envelope_for(&msg, reader, body_len, session, shared);
    match session.start_message(envelope, now) {
        Ok(()) => Some(Job {
            msg,
            claimed,
            body: Some(body),
        }),
        Err(e) => {
            error!(shared.log, "cannot start transaction"; "queue_id" => &msg.id, "error" => %e);
            release(shared, &msg, claimed);
            let disposition = Disposition::Deferred(msg.clone());
            tell_done(shared, msg, disposition);
            None
        }
    }
}

/// Turns the transaction's results into fates and settles the message.
pub fn finish_job(job: Job, result: MessageResult, shared: &mut Shared, relay: &str) {
    let host = relay.split('[').next().unwrap_or(relay).to_owned();
    let now = SystemTime::now();
    let fates: Vec<RecipientFate> = result
        .recipients
        .into_iter()
        .map(|r| match r.result {
            Ok(reply) => {
                shared.stats.sent += 1;
                RecipientFate {
                    recipient: r.recipient,
                    fate: Fate::Delivered,
                    code: reply.code.get(),
                    dsn: reply.enhanced.map(|e| e.to_string()),
                    text: reply.to_string(),
                }
            }
            Err(outcome) => {
                let text = format!("host {relay} {outcome}");
                let code = outcome.reply.as_ref().map_or(0, |r| r.code.get());
                let dsn = outcome
                    .reply
                    .as_ref()
                    .and_then(|r| r.enhanced)
                    .or(outcome.status)
                    .map(|e| e.to_string());
                let fate = match outcome.class {
                    Class::Transient => {
                        shared.stats.deferred += 1;
                        Fate::Deferred(text.clone())
                    }
                    Class::Permanent => {
                        shared.stats.bounced += 1;
                        Fate::Failed(RecipientReport::from_outcome(
                            &r.recipient,
                            &outcome,
                            Some(&host),
                            Some(now),
                        ))
                    }
                };
                RecipientFate {
                    recipient: r.recipient,
                    fate,
                    code,
                    dsn,
                    text,
                }
            }
        })
        .collect();
    // Every recipient accepted (the common case): the file is marked
    // delivered here, a cheap rename, so that a crash from now on cannot
    // send it again; its removal, which waits on the disk, is left to the
    // disk thread.
    let all_delivered = fates.iter().all(|f| matches!(f.fate, Fate::Delivered));
    let file = if all_delivered {
        match job.claimed.mark_delivered() {
            Marked::Delivered(delivered) => File::Delivered(delivered),
            Marked::Failed(claimed, e) => {
                error!(shared.log, "cannot mark a delivered queue file"; "queue_id" => &job.msg.id,
                    "domain" => &job.msg.domain, "error" => %e);
                File::Claimed(claimed)
            }
        }
    } else {
        File::Claimed(job.claimed)
    };
    let settlement = Box::new(Settlement {
        msg: job.msg,
        file,
        fates,
        relay: relay.to_owned(),
        log: shared.log.clone(),
    });
    // The body's descriptor closes here, before the file is settled.
    if let Some(body) = job.body {
        shared.body_pool.recycle(body);
    }
    if let Err(settlement) = shared.disk.try_settle(settlement) {
        // The disk thread is busy: settle here, which also slows this
        // worker to the pace of the disk.
        let domain = settlement.msg.domain.clone();
        let id = settlement.msg.id.clone();
        let disposition = settlement.settle(&mut shared.settler);
        shared.tell(DispatcherMsg::Done {
            domain,
            id,
            disposition,
        });
    }
}

/// The transaction could not finish (the connection broke without a result,
/// postman is stopping): the claim is released unchanged and the message
/// waits for its next turn. `reason`, when given, is logged per recipient.
pub fn abandon_job(shared: &mut Shared, job: Job, relay: &str, reason: Option<&str>) {
    if let Some(reason) = reason {
        log_all(shared, &job.msg, relay, Status::Deferred, reason);
        shared.stats.deferred += job.msg.envelope.recipients.len() as u64;
    }
    release(shared, &job.msg, job.claimed);
    let disposition = Disposition::Deferred(job.msg.clone());
    tell_done(shared, job.msg, disposition);
}

/// The claimed file cannot be opened or read: it goes back, unchanged, and
/// the message waits for its next turn.
fn cannot_open(
    shared: &Shared,
    msg: QueuedMessage,
    claimed: Claimed,
    relay: &str,
    e: &std::io::Error,
) {
    error!(shared.log, "cannot open queue file"; "queue_id" => &msg.id, "error" => %e);
    release(shared, &msg, claimed);
    let reason = format!("cannot open queue file: {e}");
    log_all(shared, &msg, relay, Status::Deferred, &reason);
    let disposition = Disposition::Deferred(msg.clone());
    tell_done(shared, msg, disposition);
}

fn release(shared: &Shared, msg: &QueuedMessage, claimed: Claimed) {
    if let Err(e) = claimed.release() {
        error!(shared.log, "cannot release a claimed queue file; it is recovered at the next start";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
    }
}

fn quarantine(shared: &Shared, msg: QueuedMessage, claimed: Claimed, reason: &str) {
    match claimed.quarantine(reason) {
        Ok(to) => error!(shared.log, "quarantined"; "queue_id" => &msg.id, "domain" => &msg.domain,
            "reason" => reason, "path" => %to.display()),
        Err(e) => error!(shared.log, "cannot quarantine an unreadable queue file";
            "queue_id" => &msg.id, "domain" => &msg.domain, "reason" => reason, "error" => %e),
    }
    tell_done(shared, msg, Disposition::Finished);
}

fn tell_done(shared: &Shared, msg: QueuedMessage, disposition: Disposition) {
    shared.tell(DispatcherMsg::Done {
        domain: msg.domain,
        id: msg.id,
        disposition,
    });
}

pub fn log_all(shared: &Shared, msg: &QueuedMessage, relay: &str, status: Status, reason: &str) {
    records::log_all(
        &shared.log,
        msg,
        &Verdict {
            status,
            relay,
            code: 0,
            dsn: None,
            reply: reason,
        },
    );
}

/// Returns an untried (unclaimed) message to the dispatcher.
pub fn give_back(shared: &Shared, msg: QueuedMessage) {
    shared.tell(DispatcherMsg::Done {
        domain: msg.domain.clone(),
        id: msg.id.clone(),
        disposition: Disposition::Unused(msg),
    });
}
