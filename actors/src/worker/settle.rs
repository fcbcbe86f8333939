//! Starting a transaction from a queued file (claim it, read its envelope
//! and state file again, reserve the room for its next state, measure its
//! body: [`prepare`], on a disk thread when one has room; then [`begin`] on
//! the connection) and turning the transaction's per-recipient
//! results into fates for the [`Settler`](crate::settler::Settler). The
//! connection logic (sockets, addresses, the session's events) is in
//! [`super::conn`].

use std::time::{Instant, SystemTime};

use postman::config::SiteShape;
use postman::dsn::RecipientReport;
use postman::queue::{self, BodyReader, Claimed, Marked, Queue, ReadError, Source};
use postman::smtp::{BodyMeasure, Class, Envelope, MessageResult, Session};
use slog::{debug, error, info, warn, Logger};

use super::body::{self, Body};
use super::disk::{File, Settlement};
use super::Shared;
use crate::mailbox::Postbox;
use crate::messages::{DispatcherMsg, Disposition, FileIdentity, PutOff, QueuedMessage};
use crate::records::{self, Status, Verdict};
use crate::settler::{Fate, RecipientFate};

/// The message being delivered on a connection, claimed for this process.
pub struct Job {
    pub msg: QueuedMessage,
    pub claimed: Claimed,
    pub body: Option<Body>,
}

/// What preparing a message needs besides its memory: where the queue is,
/// whose claims these are, the log and the dispatcher. The worker and its
/// disk threads each have one.
pub struct Ctx<'a> {
    pub queue: &'a Queue,
    pub owner: &'a str,
    pub log: &'a Logger,
    pub dispatcher: &'a Postbox<DispatcherMsg>,
}

impl Ctx<'_> {
    /// Tells the dispatcher. It never blocks on a worker or a disk thread,
    /// so a blocking send cannot deadlock; an error means it is gone.
    fn tell(&self, msg: DispatcherMsg) {
        let _ = self.dispatcher.send(msg);
    }
}

/// A message claimed, its envelope read again and its body measured: ready
/// to start on a connection.
pub struct Ready {
    pub msg: QueuedMessage,
    pub claimed: Claimed,
    pub body: Body,
    /// The measuring pass; `None` when the body could not be read (sending
    /// it then fails the attempt properly).
    pub measure: Option<BodyMeasure>,
}

/// Claims the message, reads its envelope and state file again (another
/// process may have recorded a new state since the scan), reserves the
/// room for its next state and measures its body. This is the disk work of starting a transaction, done on a disk
/// thread when one has room. On failure the message is disposed of here and
/// `None` returned.
pub fn prepare(
    ctx: &Ctx<'_>,
    memory: &mut body::Memory<'_>,
    msg: QueuedMessage,
    relay: &str,
) -> Option<Ready> {
    let (msg, claimed) = claim_file(ctx, msg, relay)?;
    let (msg, claimed, mut file, metadata) = open_claimed(ctx, msg, claimed, relay)?;
    let (mut msg, claimed, block_len) = read_claimed(ctx, msg, claimed, &mut file, &metadata)?;
    msg.identity = Some(FileIdentity::of(&metadata));
    if msg
        .retry
        .next_attempt
        .is_some_and(|at| at > SystemTime::now())
    {
        // Another process deferred it after our scan: not due yet.
        release(ctx, &msg, claimed);
        let disposition = Disposition::Deferred(Box::new(msg.clone()));
        tell_done(ctx, msg, disposition);
        return None;
    }
    let (msg, claimed) = reserve_state(ctx, msg, claimed, block_len, relay)?;
    let body_len = metadata.len().saturating_sub(msg.envelope.body_offset);
    let reader = match BodyReader::from_file(file, msg.envelope.body_offset) {
        Ok(body) => body,
        Err(e) => {
            cannot_open(ctx, msg, claimed, relay, &e);
            return None;
        }
    };
    // One streaming pass gives the size and 8-bit-ness that MAIL declares
    // (RFC 1870, RFC 6152) and keeps a small body in memory for sending.
    let (body, measured) = body::measure(reader, body_len, memory);
    let measure = match measured {
        Ok(measure) => Some(measure),
        Err(e) => {
            debug!(ctx.log, "cannot measure the message"; "queue_id" => &msg.id, "error" => %e);
            None
        }
    };
    Some(Ready {
        msg,
        claimed,
        body,
        measure,
    })
}

/// Reads the claimed message again, its state file included: another
/// process may have recorded a new state (delivered some recipients) since
/// the scan. Returns the message updated and the length of the envelope
/// block in force. On failure the message is disposed of (unreadable:
/// quarantined; no descriptor: put off; else deferred) and `None` returned.
fn read_claimed(
    ctx: &Ctx<'_>,
    mut msg: QueuedMessage,
    claimed: Claimed,
    file: &mut std::fs::File,
    metadata: &std::fs::Metadata,
) -> Option<(QueuedMessage, Claimed, u64)> {
    match claimed.read_queued(file, metadata.len()) {
        Ok(queued) => {
            if let Source::Ignored(why) = &queued.source {
                warn!(ctx.log, "the message's state file is ignored: it is not this file's";
                    "queue_id" => &msg.id, "domain" => &msg.domain, "reason" => why);
            }
            msg.arrival = queued.envelope.arrival.unwrap_or(msg.arrival);
            msg.envelope = queued.envelope;
            msg.retry = queued.retry;
            msg.tie = Some(queued.tie);
            Some((msg, claimed, queued.block_len))
        }
        Err(ReadError::Io(e)) if super::short_of_resources(&e) => {
            put_off(ctx, msg, claimed, &e);
            None
        }
        Err(ReadError::Io(e)) => {
            error!(ctx.log, "cannot read claimed queue file"; "queue_id" => &msg.id, "error" => %e);
            release(ctx, &msg, claimed);
            let disposition = Disposition::Deferred(Box::new(msg.clone()));
            tell_done(ctx, msg, disposition);
            None
        }
        Err(e) => {
            quarantine(ctx, msg, claimed, &e.to_string());
            None
        }
    }
}

/// The room reserved for a state file whose block in force is `block_len`
/// bytes: a block of fewer recipients is smaller, but for the retry
/// fields, the tie and folding (another program's list may be denser).
fn reservation_len(block_len: u64) -> u64 {
    block_len + queue::RETRY_HEADROOM as u64 + block_len / 64
}

/// Takes the room for the message's next state file before its
/// transaction, when that transaction can deliver part of it (two or more
/// recipients): a full disk is found now, before anything is sent, rather
/// than after, when not recording the outcome would send the accepted
/// recipients again. No room (`ENOSPC`, `EDQUOT`): the message goes back
/// untried, as for a lack of descriptors, and postman pauses; any other
/// failure defers it. `None` then.
fn reserve_state(
    ctx: &Ctx<'_>,
    msg: QueuedMessage,
    mut claimed: Claimed,
    block_len: u64,
    relay: &str,
) -> Option<(QueuedMessage, Claimed)> {
    if msg.envelope.recipients.len() < 2 {
        return Some((msg, claimed));
    }
    let e = match claimed.reserve(reservation_len(block_len)) {
        Ok(()) => return Some((msg, claimed)),
        Err(e) => e,
    };
    if no_space(&e) {
        warn!(ctx.log, "no room on the disk for the message's state file: it goes back untried";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
        release(ctx, &msg, claimed);
        ctx.tell(DispatcherMsg::LocalLimit {
            domain: msg.domain.clone(),
            job: Box::new(msg),
            what: PutOff::StateFileSpace,
            reason: format!("cannot reserve room for the state file: {e}"),
        });
    } else if super::short_of_resources(&e) {
        put_off(ctx, msg, claimed, &e);
    } else {
        error!(ctx.log, "cannot reserve room for the message's state file"; "queue_id" => &msg.id,
            "domain" => &msg.domain, "error" => %e);
        release(ctx, &msg, claimed);
        let reason = format!("cannot reserve room for the state file: {e}");
        log_all(ctx, &msg, relay, Status::Deferred, &reason);
        let disposition = Disposition::Deferred(Box::new(msg.clone()));
        tell_done(ctx, msg, disposition);
    }
    None
}

/// Whether `e` says the disk (or the user's quota) is full.
fn no_space(e: &std::io::Error) -> bool {
    use nix::libc::{EDQUOT, ENOSPC};
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// Claims `msg`'s file. On failure the message is disposed of (gone:
/// finished; no descriptor for the claim's folders: put off; else deferred)
/// and `None` returned.
fn claim_file(ctx: &Ctx<'_>, msg: QueuedMessage, relay: &str) -> Option<(QueuedMessage, Claimed)> {
    match queue::claim(ctx.queue, &msg.domain, &msg.id, ctx.owner) {
        Ok(Some(claimed)) => Some((msg, claimed)),
        Ok(None) => {
            // Delivered, deleted or claimed by someone else since the scan.
            debug!(ctx.log, "queue file gone before delivery"; "queue_id" => &msg.id,
                "domain" => &msg.domain);
            tell_done(ctx, msg, Disposition::Finished);
            None
        }
        Err(e) if super::short_of_resources(&e) => {
            // Nothing is wrong with the message or its domain.
            ctx.tell(DispatcherMsg::LocalLimit {
                domain: msg.domain.clone(),
                job: Box::new(msg),
                what: PutOff::QueueFile,
                reason: format!("cannot claim queue file: {e}"),
            });
            None
        }
        Err(e) => {
            error!(ctx.log, "cannot claim queue file"; "queue_id" => &msg.id, "error" => %e);
            let reason = format!("cannot claim queue file: {e}");
            log_all(ctx, &msg, relay, Status::Deferred, &reason);
            let disposition = Disposition::Deferred(Box::new(msg.clone()));
            tell_done(ctx, msg, disposition);
            None
        }
    }
}

/// Opens the claimed file: one open serves the envelope, the measuring
/// pass and the sending. A link or special file put in the message's place
/// is refused without being followed or blocking, and quarantined. On
/// failure the message is disposed of and `None` returned.
fn open_claimed(
    ctx: &Ctx<'_>,
    msg: QueuedMessage,
    claimed: Claimed,
    relay: &str,
) -> Option<(QueuedMessage, Claimed, std::fs::File, std::fs::Metadata)> {
    match body::open(&claimed) {
        Ok((file, metadata)) => Some((msg, claimed, file, metadata)),
        Err(e) if super::short_of_resources(&e) => {
            put_off(ctx, msg, claimed, &e);
            None
        }
        Err(e) if queue::dirfd::refusal(&e).is_some() => {
            quarantine(ctx, msg, claimed, &e.to_string());
            None
        }
        Err(e) => {
            cannot_open(ctx, msg, claimed, relay, &e);
            None
        }
    }
}

/// Starts the transaction of a prepared message on `session`. On failure
/// the claim is released and the message deferred, and `None` returned.
pub fn begin(
    session: &mut Session,
    ready: Ready,
    shared: &mut Shared,
    now: Instant,
) -> Option<Job> {
    let Ready {
        msg,
        claimed,
        body,
        measure,
    } = ready;
    let mut envelope = Envelope::new(msg.envelope.sender.clone(), msg.envelope.recipients.clone());
    if let Some(measure) = measure {
        envelope.size = Some(measure.size());
        envelope.eight_bit = measure.eight_bit();
    }
    let eight_bit_mime = session.extensions().is_some_and(|e| e.eight_bit_mime);
    if envelope.eight_bit && !eight_bit_mime {
        info!(shared.log, "8-bit message sent as is: the server does not offer 8BITMIME";
            "queue_id" => &msg.id, "domain" => &msg.domain);
    }
    match session.start_message(envelope, now) {
        Ok(()) => Some(Job {
            msg,
            claimed,
            body: Some(body),
        }),
        Err(e) => {
            error!(shared.log, "cannot start transaction"; "queue_id" => &msg.id, "error" => %e);
            shared.body_pool.recycle(body);
            let ctx = shared.ctx();
            release(&ctx, &msg, claimed);
            let disposition = Disposition::Deferred(Box::new(msg.clone()));
            tell_done(&ctx, msg, disposition);
            None
        }
    }
}

/// A prepared message that cannot start after all (its connection closed
/// or postman is stopping while it was prepared): the claim is released and
/// the message goes back untried.
pub fn put_back(ctx: &Ctx<'_>, ready: Ready) {
    debug!(ctx.log, "prepared message goes back untried: its connection closed or postman is stopping";
        "queue_id" => &ready.msg.id, "domain" => &ready.msg.domain);
    let msg = unclaim(ctx, ready);
    give_back_to(ctx, msg);
}

/// A prepared message that its connection keeps, for another server: the
/// claim is released and the message returned.
pub fn unclaim(ctx: &Ctx<'_>, ready: Ready) -> QueuedMessage {
    release(ctx, &ready.msg, ready.claimed);
    ready.msg
}

/// Prepares and starts the next transaction in the worker's own thread,
/// when no disk thread has room for the preparing.
pub fn start_job(
    session: &mut Session,
    msg: QueuedMessage,
    shared: &mut Shared,
    relay: &str,
    now: Instant,
) -> Option<Job> {
    let ready = {
        let ctx = Ctx {
            queue: &shared.settler.queue,
            owner: &shared.settler.owner,
            log: &shared.log,
            dispatcher: &shared.dispatcher,
        };
        let mut memory = body::Memory {
            budget: &shared.body_budget,
            pool: &mut shared.body_pool,
            buf: &mut shared.body_buf,
        };
        prepare(&ctx, &mut memory, msg, relay)?
    };
    begin(session, ready, shared, now)
}

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
            Marked::Removed(leftover) => File::Removed(Some(leftover)),
            Marked::Failed(claimed, e) => {
                error!(shared.log, "cannot remove a delivered queue file"; "queue_id" => &job.msg.id,
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

/// The claimed file cannot be opened for want of descriptors: nothing is
/// wrong with it or its domain. It goes back unchanged and the message
/// untried, to be taken up after the dispatcher's pause.
fn put_off(ctx: &Ctx<'_>, msg: QueuedMessage, claimed: Claimed, e: &std::io::Error) {
    release(ctx, &msg, claimed);
    ctx.tell(DispatcherMsg::LocalLimit {
        domain: msg.domain.clone(),
        job: Box::new(msg),
        what: PutOff::QueueFile,
        reason: format!("cannot open queue file: {e}"),
    });
}

/// The claimed file cannot be opened or read: it goes back, unchanged, and
/// the message waits for its next turn.
fn cannot_open(
    ctx: &Ctx<'_>,
    msg: QueuedMessage,
    claimed: Claimed,
    relay: &str,
    e: &std::io::Error,
) {
    error!(ctx.log, "cannot open queue file"; "queue_id" => &msg.id, "error" => %e);
    release(ctx, &msg, claimed);
    let reason = format!("cannot open queue file: {e}");
    log_all(ctx, &msg, relay, Status::Deferred, &reason);
    let disposition = Disposition::Deferred(Box::new(msg.clone()));
    tell_done(ctx, msg, disposition);
}

fn release(ctx: &Ctx<'_>, msg: &QueuedMessage, claimed: Claimed) {
    if let Err(e) = claimed.release() {
        error!(ctx.log, "cannot release a claimed queue file; it is recovered at the next start";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
    }
}

fn quarantine(ctx: &Ctx<'_>, msg: QueuedMessage, claimed: Claimed, reason: &str) {
    match claimed.quarantine(reason) {
        Ok(to) => error!(ctx.log, "quarantined"; "queue_id" => &msg.id, "domain" => &msg.domain,
            "reason" => reason, "path" => %to.display()),
        Err(e) => error!(ctx.log, "cannot quarantine an unreadable queue file";
            "queue_id" => &msg.id, "domain" => &msg.domain, "reason" => reason, "error" => %e),
    }
    tell_done(ctx, msg, Disposition::Finished);
}

fn tell_done(ctx: &Ctx<'_>, msg: QueuedMessage, disposition: Disposition) {
    ctx.tell(DispatcherMsg::Done {
        domain: msg.domain,
        id: msg.id,
        disposition,
        answered: false,
        throttle: None,
    });
}

pub fn log_all(ctx: &Ctx<'_>, msg: &QueuedMessage, relay: &str, status: Status, reason: &str) {
    records::log_all(
        ctx.log,
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
    give_back_to(&shared.ctx(), msg);
}

fn give_back_to(ctx: &Ctx<'_>, msg: QueuedMessage) {
    give_back_throttled(ctx, msg, None);
}

/// Returns an untried message, with the throttle reply that ended its
/// connection, if one did.
fn give_back_throttled(ctx: &Ctx<'_>, msg: QueuedMessage, throttle: Option<String>) {
    ctx.tell(DispatcherMsg::Done {
        domain: msg.domain.clone(),
        id: msg.id.clone(),
        disposition: Disposition::Unused(Box::new(msg)),
        answered: false,
        throttle,
    });
}
