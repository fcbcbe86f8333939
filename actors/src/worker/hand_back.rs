//! Handing a message back to the dispatcher without a transaction's
//! result: untried (its connection closed, postman is stopping), put off
//! for want of a local resource, deferred (its file could not be read) or
//! finished (gone, quarantined). The claim on its file is released first.

use postman::queue::Claimed;
use slog::{debug, error, Logger};

use super::job::Ready;
use crate::mailbox::Postbox;
use crate::messages::{DispatcherMsg, Disposition, PutOff, QueuedMessage};
use crate::records::{self, Status, Verdict};
use crate::settler::Settler;
use postman::queue::Queue;

/// What preparing a message or handing it back needs: where the queue is,
/// whose claims these are, the log and the dispatcher. The worker and its
/// disk threads each have one.
pub struct Ctx<'a> {
    pub queue: &'a Queue,
    pub owner: &'a str,
    pub log: &'a Logger,
    pub dispatcher: &'a Postbox<DispatcherMsg>,
}

impl<'a> Ctx<'a> {
    /// The context of whoever owns `settler` (the worker, or one of its
    /// disk threads): its queue and claim owner.
    pub fn new(
        settler: &'a Settler,
        log: &'a Logger,
        dispatcher: &'a Postbox<DispatcherMsg>,
    ) -> Ctx<'a> {
        Ctx {
            queue: &settler.queue,
            owner: &settler.owner,
            log,
            dispatcher,
        }
    }

    /// Tells the dispatcher. It never blocks on a worker or a disk thread,
    /// so a blocking send cannot deadlock; an error means it is gone.
    pub fn tell(&self, msg: DispatcherMsg) {
        let _ = self.dispatcher.send(msg);
    }
}

/// A prepared message that cannot start after all (its connection closed
/// or postman is stopping while it was prepared): the claim is released and
/// the message goes back untried.
pub fn put_back(ctx: &Ctx<'_>, ready: Ready) {
    debug!(ctx.log, "prepared message goes back untried: its connection closed or postman is stopping";
        "queue_id" => &ready.msg.id, "domain" => &ready.msg.domain);
    let msg = unclaim(ctx, ready);
    give_back(ctx, msg);
}

/// A prepared message that its connection keeps, for another server: the
/// claim is released and the message returned.
pub fn unclaim(ctx: &Ctx<'_>, ready: Ready) -> QueuedMessage {
    release(ctx, &ready.msg, ready.claimed);
    ready.msg
}

/// The claimed file cannot be opened for want of descriptors: nothing is
/// wrong with it or its domain. It goes back unchanged and the message
/// untried, to be taken up after the dispatcher's pause.
pub fn put_off(ctx: &Ctx<'_>, msg: QueuedMessage, claimed: Claimed, e: &std::io::Error) {
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
pub fn cannot_open(
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

pub fn release(ctx: &Ctx<'_>, msg: &QueuedMessage, claimed: Claimed) {
    if let Err(e) = claimed.release() {
        error!(ctx.log, "cannot release a claimed queue file; it is recovered at the next start";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
    }
}

pub fn quarantine(ctx: &Ctx<'_>, msg: QueuedMessage, claimed: Claimed, reason: &str) {
    match claimed.quarantine(reason) {
        Ok(to) => error!(ctx.log, "quarantined"; "queue_id" => &msg.id, "domain" => &msg.domain,
            "reason" => reason, "path" => %to.display()),
        Err(e) => error!(ctx.log, "cannot quarantine an unreadable queue file";
            "queue_id" => &msg.id, "domain" => &msg.domain, "reason" => reason, "error" => %e),
    }
    tell_done(ctx, msg, Disposition::Finished);
}

pub fn tell_done(ctx: &Ctx<'_>, msg: QueuedMessage, disposition: Disposition) {
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
pub fn give_back(ctx: &Ctx<'_>, msg: QueuedMessage) {
    give_back_throttled(ctx, msg, None);
}

/// Returns an untried message, with the throttle reply that ended its
/// connection, if one did.
pub fn give_back_throttled(ctx: &Ctx<'_>, msg: QueuedMessage, throttle: Option<String>) {
    ctx.tell(DispatcherMsg::Done {
        domain: msg.domain.clone(),
        id: msg.id.clone(),
        disposition: Disposition::Unused(Box::new(msg)),
        answered: false,
        throttle,
    });
}
