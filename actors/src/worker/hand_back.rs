//! Handing a message back to the dispatcher without a transaction's
//! result to settle, for a [`Reason`]: untried (its connection closed,
//! postman is stopping), put off for want of a local resource, deferred
//! (its file could not be read), finished (gone, quarantined), or its
//! connection failed on every address. One function does it all,
//! [`hand_back`]; the claim on its file is released first.

use std::cell::Cell;

use postman::queue::{Claimed, Queue};
use slog::{debug, error, Logger};

use super::job::Ready;
use crate::mailbox::Postbox;
use crate::messages::{DispatcherMsg, Disposition, FailedConnection, PutOff, QueuedMessage};
use crate::records::{self, Status, Verdict};
use crate::settler::Settler;

/// What preparing a message or handing it back needs: where the queue is,
/// whose claims these are, the log and the dispatcher. The worker and its
/// disk threads each have one.
pub struct Ctx<'a> {
    pub queue: &'a Queue,
    pub owner: &'a str,
    pub log: &'a Logger,
    dispatcher: &'a Postbox<DispatcherMsg>,
    /// In the worker's thread: set when the dispatcher was told something
    /// without being woken, which the worker does once a turn
    /// ([`Shared::wake_dispatcher`](super::shared::Shared::wake_dispatcher)).
    /// A disk thread has none and wakes it at once.
    told: Option<&'a Cell<bool>>,
}

impl<'a> Ctx<'a> {
    /// The context of whoever owns `settler` (the worker, or one of its
    /// disk threads): its queue and claim owner.
    pub fn new(
        settler: &'a Settler,
        log: &'a Logger,
        dispatcher: &'a Postbox<DispatcherMsg>,
        told: Option<&'a Cell<bool>>,
    ) -> Ctx<'a> {
        Ctx {
            queue: &settler.queue,
            owner: &settler.owner,
            log,
            dispatcher,
            told,
        }
    }

    /// Tells the dispatcher. It never blocks on a worker or a disk thread,
    /// so a blocking send cannot deadlock; failure means it is gone.
    pub fn tell(&self, msg: DispatcherMsg) {
        match self.told {
            Some(told) => {
                if self.dispatcher.send_quietly(msg).is_ok() {
                    told.set(true);
                }
            }
            None => {
                let _ = self.dispatcher.send(msg);
            }
        }
    }
}

/// Why a message goes back to the dispatcher without a transaction's
/// result to settle, which says what the dispatcher is told
/// ([`Reason::message`]).
#[derive(Debug)]
pub enum Reason<'a> {
    /// No server judged it: its connection closed or ended first, or
    /// postman is stopping. It is ready again at once; `throttle` is the
    /// reply that ended its connection by saying the site throttles this
    /// client, if one did.
    Untried { throttle: Option<String> },
    /// Put off for want of a resource of this process or host
    /// (descriptors, socket buffers, room for its state on the disk):
    /// nothing is wrong with it or its domain, and nothing is recorded.
    PutOff { what: PutOff, reason: String },
    /// Not tried this time for a reason of its own (its file could not be
    /// claimed, read or started, its transaction could not finish, or
    /// another process deferred it since the scan): it waits for its next
    /// turn, with a deferral record for each recipient when `record` says
    /// why.
    Deferred { record: Option<Record<'a>> },
    /// Nothing is left to do: its file is gone (delivered, deleted or
    /// claimed elsewhere since the scan) or quarantined.
    Finished,
    /// No address of its domain's servers could be brought to take it:
    /// the dispatcher settles it as a failed attempt and backs the site off.
    ConnectFailed(FailedConnection),
}

/// The deferral record of a message handed back: from where, and why.
#[derive(Debug)]
pub struct Record<'a> {
    pub relay: &'a str,
    pub reason: String,
}

impl Reason<'_> {
    /// Untried, with no throttle reply.
    pub const UNTRIED: Reason<'static> = Reason::Untried { throttle: None };

    /// What the dispatcher is told of `msg` handed back for this reason.
    pub fn message(self, msg: QueuedMessage) -> DispatcherMsg {
        let domain = msg.route_key().to_owned();
        let done = |id, disposition, throttle| DispatcherMsg::Done {
            domain,
            id,
            disposition,
            answered: false,
            throttle,
        };
        match self {
            Reason::Untried { throttle } => {
                done(msg.id.clone(), Disposition::Unused(Box::new(msg)), throttle)
            }
            Reason::Deferred { .. } => {
                done(msg.id.clone(), Disposition::Deferred(Box::new(msg)), None)
            }
            Reason::Finished => done(msg.id, Disposition::Finished, None),
            Reason::PutOff { what, reason } => DispatcherMsg::LocalLimit {
                domain: msg.route_key().to_owned(),
                job: Box::new(msg),
                what,
                reason,
            },
            Reason::ConnectFailed(failure) => DispatcherMsg::ConnectFailed {
                domain: msg.route_key().to_owned(),
                job: Box::new(msg),
                failure,
            },
        }
    }
}

/// Hands `msg` back to the dispatcher for `reason`. The claim on its file,
/// when it holds one, is released first, unchanged; then the deferral
/// record, if the reason has one, is logged.
pub fn hand_back(ctx: &Ctx<'_>, msg: QueuedMessage, claimed: Option<Claimed>, reason: Reason<'_>) {
    if let Some(claimed) = claimed {
        release(ctx, &msg, claimed);
    }
    match &reason {
        Reason::Deferred {
            record: Some(record),
        } => log_all(ctx, &msg, record.relay, Status::Deferred, &record.reason),
        Reason::Untried { .. } => {
            debug!(ctx.log, "message goes back untried"; "queue_id" => &msg.id, "domain" => &msg.domain)
        }
        _ => {}
    }
    ctx.tell(reason.message(msg));
}

/// A prepared message that its connection keeps, for another server: the
/// claim is released and the message returned.
pub fn unclaim(ctx: &Ctx<'_>, ready: Ready) -> QueuedMessage {
    release(ctx, &ready.msg, ready.claimed);
    ready.msg
}

pub fn release(ctx: &Ctx<'_>, msg: &QueuedMessage, claimed: Claimed) {
    if let Err(e) = claimed.release() {
        error!(ctx.log, "cannot release a claimed queue file; it is recovered at the next start";
            "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
    }
}

/// Sets an unreadable file aside; the message is finished.
pub fn quarantine(ctx: &Ctx<'_>, msg: QueuedMessage, claimed: Claimed, reason: &str) {
    match claimed.quarantine(reason) {
        Ok(to) => error!(ctx.log, "quarantined"; "queue_id" => &msg.id, "domain" => &msg.domain,
            "reason" => reason, "path" => %to.display()),
        Err(e) => error!(ctx.log, "cannot quarantine an unreadable queue file";
            "queue_id" => &msg.id, "domain" => &msg.domain, "reason" => reason, "error" => %e),
    }
    hand_back(ctx, msg, None, Reason::Finished);
}

fn log_all(ctx: &Ctx<'_>, msg: &QueuedMessage, relay: &str, status: Status, reason: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> QueuedMessage {
        QueuedMessage::for_test("m1", &["a@d.test", "b@d.test"])
    }

    /// The dispatcher's message in one line, for comparing: which
    /// variant, and what it carries besides the message itself (which
    /// must be the one handed back).
    fn summary(told: DispatcherMsg) -> String {
        let disposition = |d: Disposition| match d {
            Disposition::Finished => "finished".to_owned(),
            Disposition::Deferred(m) => format!("deferred {}", m.id),
            Disposition::Unused(m) => format!("unused {}", m.id),
        };
        match told {
            DispatcherMsg::Done {
                domain,
                id,
                disposition: d,
                answered,
                throttle,
            } => format!(
                "done {domain}/{id}: {}, answered {answered}, throttle {throttle:?}",
                disposition(d)
            ),
            DispatcherMsg::LocalLimit {
                domain,
                job,
                what,
                reason,
            } => format!("put off {domain}/{}: {}, {reason}", job.id, what.describe()),
            DispatcherMsg::ConnectFailed {
                domain,
                job,
                failure: f,
            } => format!(
                "connect failed {domain}/{}: {} at {}, {:?} {:?}, loops {}, throttle {:?}",
                job.id, f.reason, f.relay, f.code, f.status, f.loops, f.throttle
            ),
            other => format!("unexpected {other:?}"),
        }
    }

    /// Each reason tells the dispatcher one thing: untried is ready again
    /// at once (with the throttle that ended its connection), deferred
    /// waits for its next turn, finished is forgotten, put off pauses new
    /// work, a failed connection is settled as a failed attempt. None of
    /// them says the server answered.
    #[test]
    fn each_reason_tells_the_dispatcher_what_became_of_the_message() {
        let record = Record {
            relay: "mx.d.test[192.0.2.1]:25",
            reason: "cannot open queue file: EIO".into(),
        };
        let cases: Vec<(Reason<'_>, &str)> = vec![
            (
                Reason::UNTRIED,
                "done d.test/m1: unused m1, answered false, throttle None",
            ),
            (
                Reason::Untried {
                    throttle: Some("421 4.7.0 slow down".into()),
                },
                "done d.test/m1: unused m1, answered false, throttle Some(\"421 4.7.0 slow down\")",
            ),
            (
                Reason::Deferred { record: None },
                "done d.test/m1: deferred m1, answered false, throttle None",
            ),
            (
                Reason::Deferred {
                    record: Some(record),
                },
                "done d.test/m1: deferred m1, answered false, throttle None",
            ),
            (
                Reason::Finished,
                "done d.test/m1: finished, answered false, throttle None",
            ),
            (
                Reason::PutOff {
                    what: PutOff::QueueFile,
                    reason: "cannot open queue file: EMFILE".into(),
                },
                "put off d.test/m1: queue file, cannot open queue file: EMFILE",
            ),
            (
                Reason::PutOff {
                    what: PutOff::StateFileSpace,
                    reason: "no room".into(),
                },
                "put off d.test/m1: state file space, no room",
            ),
            (
                Reason::ConnectFailed(FailedConnection {
                    reason: "connect to mx[192.0.2.1]:25: refused".into(),
                    relay: "none".into(),
                    code: None,
                    status: None,
                    loops: false,
                    throttle: None,
                }),
                "connect failed d.test/m1: connect to mx[192.0.2.1]:25: refused at none, None None, loops false, throttle None",
            ),
        ];
        for (reason, expected) in cases {
            let what = format!("{reason:?}");
            assert_eq!(summary(reason.message(queued())), expected, "{what}");
        }
    }

    /// Whatever the reason, a claim held is released (the file is back in
    /// its place, for the dispatcher to hand out again) and the
    /// dispatcher is told once.
    #[test]
    fn a_held_claim_is_released_and_the_dispatcher_told_once() {
        const FILE: &[u8] =
            b"X-Postman-From: <s@e.org>\r\nX-Postman-To: <a@d.test>\r\n\r\nbody\r\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = postman::config::Settings::defaults("mx.example.org");
        settings.application.maildir.path = dir.path().to_owned();
        let config = settings.validate().expect("valid settings");
        let layout = postman::queue::Layout::new(dir.path());
        let path = layout.message_path("d.test", "m1");
        std::fs::create_dir_all(layout.tmp_dir("d.test")).expect("mkdir");
        std::fs::write(&path, FILE).expect("write");
        let queue = Queue::create(layout).expect("queue");
        let settler = Settler::new(queue, &config, "owner", "T");
        let (dispatcher, inbox) = crate::mailbox::bounded(8);
        let log = Logger::root(slog::Discard, slog::o!());
        let ctx = Ctx::new(&settler, &log, &dispatcher, None);
        let record = Record {
            relay: "none",
            reason: "cannot open queue file: EIO".into(),
        };
        let cases = [
            (Reason::UNTRIED, "done d.test/m1: unused"),
            (
                Reason::Deferred {
                    record: Some(record),
                },
                "done d.test/m1: deferred",
            ),
            (
                Reason::PutOff {
                    what: PutOff::QueueFile,
                    reason: "EMFILE".into(),
                },
                "put off d.test/m1",
            ),
        ];
        for (reason, expected) in cases {
            let claimed = postman::queue::claim(ctx.queue, "d.test", "m1", ctx.owner)
                .expect("claim")
                .expect("the file is there");
            assert!(!path.exists(), "claimed: {expected}");
            hand_back(&ctx, queued(), Some(claimed), reason);
            assert!(path.exists(), "released: {expected}");
            let told = summary(inbox.try_recv().expect("the dispatcher is told"));
            assert!(told.starts_with(expected), "{told}");
            assert!(inbox.try_recv().is_err(), "once");
        }
    }
}
