//! Preparing a queued message for a transaction: claim its file, open it,
//! read its envelope and state file again, reserve the room for its next
//! state, measure its body ([`prepare`], on a disk thread when one has
//! room); then start it on the connection's session ([`begin`]). A message
//! that cannot be prepared is handed back here ([`super::hand_back`]).

use std::time::{Instant, SystemTime};

use postman::queue::{self, BodyReader, Claimed, ReadError, Source};
use postman::smtp::{Envelope, Session};
use slog::{debug, error, info, warn};

use super::body::{self, Pool};
use super::hand_back::{hand_back, quarantine, Ctx, Reason, Record};
use super::job::{Job, Ready};
use crate::descriptors::short_of_resources;
use crate::messages::{FileIdentity, PutOff, QueuedMessage};

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
        hand_back(ctx, msg, Some(claimed), Reason::Deferred { record: None });
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
        Err(ReadError::Io(e)) if short_of_resources(&e) => {
            hand_back(ctx, msg, Some(claimed), no_descriptor(&e));
            None
        }
        Err(ReadError::Io(e)) => {
            error!(ctx.log, "cannot read claimed queue file"; "queue_id" => &msg.id, "error" => %e);
            hand_back(ctx, msg, Some(claimed), Reason::Deferred { record: None });
            None
        }
        Err(e) => {
            quarantine(ctx, msg, claimed, &e.to_string());
            None
        }
    }
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
    let e = match claimed.reserve(queue::room_for_state(block_len)) {
        Ok(()) => return Some((msg, claimed)),
        Err(e) => e,
    };
    if no_space(&e) {
        warn!(ctx.log, "no room on the disk for the message's state file: it goes back untried";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
        let reason = Reason::PutOff {
            what: PutOff::StateFileSpace,
            reason: format!("cannot reserve room for the state file: {e}"),
        };
        hand_back(ctx, msg, Some(claimed), reason);
    } else if short_of_resources(&e) {
        hand_back(ctx, msg, Some(claimed), no_descriptor(&e));
    } else {
        error!(ctx.log, "cannot reserve room for the message's state file"; "queue_id" => &msg.id,
            "domain" => &msg.domain, "error" => %e);
        let reason = format!("cannot reserve room for the state file: {e}");
        let record = Some(Record { relay, reason });
        hand_back(ctx, msg, Some(claimed), Reason::Deferred { record });
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
            hand_back(ctx, msg, None, Reason::Finished);
            None
        }
        Err(e) if short_of_resources(&e) => {
            // Nothing is wrong with the message or its domain.
            let reason = Reason::PutOff {
                what: PutOff::QueueFile,
                reason: format!("cannot claim queue file: {e}"),
            };
            hand_back(ctx, msg, None, reason);
            None
        }
        Err(e) => {
            error!(ctx.log, "cannot claim queue file"; "queue_id" => &msg.id, "error" => %e);
            let reason = format!("cannot claim queue file: {e}");
            let record = Some(Record { relay, reason });
            hand_back(ctx, msg, None, Reason::Deferred { record });
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
        Err(e) if short_of_resources(&e) => {
            hand_back(ctx, msg, Some(claimed), no_descriptor(&e));
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

/// The claimed file cannot be opened for want of descriptors: nothing is
/// wrong with it or its domain. It goes back unchanged and the message
/// untried, to be taken up after the dispatcher's pause.
fn no_descriptor(e: &std::io::Error) -> Reason<'static> {
    Reason::PutOff {
        what: PutOff::QueueFile,
        reason: format!("cannot open queue file: {e}"),
    }
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
    let reason = format!("cannot open queue file: {e}");
    let record = Some(Record { relay, reason });
    hand_back(ctx, msg, Some(claimed), Reason::Deferred { record });
}

/// Starts the transaction of a prepared message on `session`. On failure
/// the claim is released, the body's buffer goes back to `pool` and the
/// message is deferred, and `None` returned.
pub fn begin(
    session: &mut Session,
    ready: Ready,
    ctx: &Ctx<'_>,
    pool: &mut Pool,
    now: Instant,
) -> Option<Job> {
    let Ready {
        msg,
        claimed,
        body,
        measure,
    } = ready;
    let mut envelope = Envelope::new(msg.envelope.sender.clone(), msg.envelope.recipients.clone());
    envelope.params = msg.envelope.params.clone();
    if !msg.envelope.rcpt_params.is_empty() {
        envelope.rcpt_params = (msg.envelope.recipients.iter())
            .map(|r| msg.envelope.recipient_params(r).cloned())
            .collect();
    }
    if let Some(measure) = measure {
        envelope.size = Some(measure.size());
        envelope.eight_bit = measure.eight_bit();
    }
    let eight_bit_mime = session.extensions().is_some_and(|e| e.eight_bit_mime);
    if envelope.eight_bit && !eight_bit_mime {
        info!(ctx.log, "8-bit message sent as is: the server does not offer 8BITMIME";
            "queue_id" => &msg.id, "domain" => &msg.domain);
    }
    match session.start_message(envelope, now) {
        Ok(()) => Some(Job {
            msg,
            claimed,
            body: Some(body),
        }),
        Err(e) => {
            error!(ctx.log, "cannot start transaction"; "queue_id" => &msg.id, "error" => %e);
            pool.recycle(body);
            hand_back(ctx, msg, Some(claimed), Reason::Deferred { record: None });
            None
        }
    }
}

/// Prepares and starts the next transaction in the worker's own thread,
/// when no disk thread has room for the preparing.
pub fn start_job(
    session: &mut Session,
    msg: QueuedMessage,
    ctx: &Ctx<'_>,
    memory: &mut body::Memory<'_>,
    relay: &str,
    now: Instant,
) -> Option<Job> {
    let ready = prepare(ctx, memory, msg, relay)?;
    begin(session, ready, ctx, memory.pool, now)
}
