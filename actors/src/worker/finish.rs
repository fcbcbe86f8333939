//! Finishing a transaction: its per-recipient results become fates for
//! the [`Settler`](crate::settler::Settler), and the settlement goes to a
//! disk thread ([`finish_job`]); or it could not finish, and the message
//! goes back unchanged ([`abandon_job`], [`untried_job`]).

use std::time::SystemTime;

use postman::config::SiteShape;
use postman::dsn::RecipientReport;
use postman::queue::Marked;
use postman::smtp::{Class, MessageResult};
use slog::{error, info};

use super::hand_back::{give_back_throttled, log_all, release, tell_done};
use super::job::{Job, QueueFile, Settlement};
use super::shared::Shared;
use crate::messages::Disposition;
use crate::records::Status;
use crate::settler::{Fate, RecipientFate};

/// The reply of a transaction that says the site throttles this client
/// (`smtp::throttle`, with the site's own patterns), if one does.
pub fn throttle_of(result: &MessageResult, shape: &SiteShape) -> Option<String> {
    result.recipients.iter().find_map(|r| {
        let outcome = r.result.as_ref().err()?;
        let reply = outcome.reply.as_ref()?;
        shape
            .is_throttle(outcome.stage, reply)
            .then(|| reply.to_string().trim_end().to_owned())
    })
}

/// Turns the transaction's results into fates and settles the message.
pub fn finish_job(
    job: Job,
    result: MessageResult,
    shared: &mut Shared,
    relay: &str,
    throttle: Option<String>,
) {
    let host = relay.split('[').next().unwrap_or(relay).to_owned();
    let now = SystemTime::now();
    let again = result.send_again();
    let fates: Vec<RecipientFate> = result
        .recipients
        .into_iter()
        .zip(again)
        .map(|(r, again)| match r.result {
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
                    // Over the server's limit of recipients per transaction.
                    _ if again => Fate::Again,
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
    let open = job.body.map(|body| {
        let (buffer, open) = body.into_parts();
        if let Some(buffer) = buffer {
            shared.body_pool.give(buffer);
        }
        open
    });
    // Every recipient accepted (the common case): the file's name goes
    // here, so that a crash from now on cannot send it again. It is still
    // open, so freeing its blocks, which waits on the disk, happens when the
    // disk thread closes it.
    let all_delivered = fates.iter().all(|f| matches!(f.fate, Fate::Delivered));
    let file = if all_delivered {
        match job.claimed.remove_delivered() {
            Marked::Removed(leftover) => QueueFile::Removed(Some(leftover)),
            Marked::Failed(claimed, e) => {
                error!(shared.log, "cannot remove a delivered queue file"; "queue_id" => &job.msg.id,
                    "domain" => &job.msg.domain, "error" => %e);
                QueueFile::Claimed(claimed)
            }
        }
    } else {
        QueueFile::Claimed(job.claimed)
    };
    let settlement = Box::new(Settlement {
        msg: job.msg,
        file,
        fates,
        relay: relay.to_owned(),
        log: shared.log.clone(),
        open,
        throttle,
    });
    if settlement.finished_already() {
        shared.tell(settlement.finished());
        shared.disk.hold(settlement);
    } else if let Err(settlement) = shared.disk.try_settle(settlement) {
        settle_here(shared, settlement);
    }
}

/// Settles in the worker's own thread a settlement no disk thread has
/// room for, which also slows this worker to the pace of the disk.
pub fn settle_here(shared: &mut Shared, settlement: Box<Settlement>) {
    if let Some(done) = settlement.settle_for_dispatcher(&mut shared.settler) {
        shared.tell(done);
    }
    // A message whose state could not be recorded is kept by a disk
    // thread, which tries again on its own clock.
    let kept = shared.settler.take_kept();
    if !kept.is_empty() {
        shared.disk.keep(kept);
    }
}

/// The transaction could not finish (the connection broke without a result,
/// postman is stopping): the claim is released unchanged and the message
/// waits for its next turn. `reason`, when given, is logged per recipient.
pub fn abandon_job(shared: &mut Shared, job: Job, relay: &str, reason: Option<&str>) {
    if reason.is_some() {
        shared.stats.deferred += job.msg.envelope.recipients.len() as u64;
    }
    if let Some(body) = job.body {
        shared.body_pool.recycle(body);
    }
    let ctx = shared.ctx();
    if let Some(reason) = reason {
        log_all(&ctx, &job.msg, relay, Status::Deferred, reason);
    }
    release(&ctx, &job.msg, job.claimed);
    let disposition = Disposition::Deferred(Box::new(job.msg.clone()));
    tell_done(&ctx, job.msg, disposition);
}

/// The server never judged the message: its reused connection ended
/// before any reply but RSET's (see [`MessageResult::untried`]). Nothing is
/// recorded on the file; the claim is released and the message goes back
/// untried, for another connection.
pub fn untried_job(shared: &mut Shared, job: Job, relay: &str, throttle: Option<String>) {
    shared.stats.untried += 1;
    if let Some(body) = job.body {
        shared.body_pool.recycle(body);
    }
    let ctx = shared.ctx();
    info!(ctx.log, "reused connection ended before the message was tried; it goes back untried";
        "queue_id" => &job.msg.id, "domain" => &job.msg.domain, "relay" => relay);
    release(&ctx, &job.msg, job.claimed);
    give_back_throttled(&ctx, job.msg, throttle);
}
