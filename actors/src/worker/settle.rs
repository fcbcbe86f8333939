//! Settling messages: starting a transaction from a queued file, and
//! applying a transaction's per-recipient results to the queue file and the
//! delivery log. The connection logic (sockets, addresses, the session's
//! events) is in [`super::conn`].

use std::io;
use std::time::Instant;

use postman::queue::{self, BodyReader};
use postman::smtp::{self, Class, MessageResult, Session};
use slog::{debug, error};

use super::{body, Shared};
use crate::messages::{DispatcherMsg, Disposition, QueuedMessage};
use crate::records::{self, Status, Verdict};

/// The message being delivered on a connection.
pub struct Job {
    pub msg: QueuedMessage,
    pub body: Option<BodyReader>,
}

/// Opens the message and starts its transaction. On failure the message is
/// disposed of here and `None` returned.
pub fn start_job(
    session: &mut Session,
    msg: QueuedMessage,
    shared: &mut Shared,
    relay: &str,
    now: Instant,
) -> Option<Job> {
    let body = match body::open(&msg.path, msg.envelope.body_offset) {
        Ok(body) => body,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // Deleted or delivered by someone else since the scan.
            debug!(shared.log, "queue file vanished"; "queue_id" => &msg.id, "domain" => &msg.domain);
            shared.tell(DispatcherMsg::Done {
                domain: msg.domain.clone(),
                disposition: Disposition::Finished,
            });
            return None;
        }
        Err(e) => {
            error!(shared.log, "cannot open queue file"; "queue_id" => &msg.id, "error" => %e);
            let reason = format!("cannot open queue file: {e}");
            log_all(shared, &msg, relay, Status::Deferred, &reason);
            shared.tell(DispatcherMsg::Done {
                domain: msg.domain.clone(),
                disposition: Disposition::Deferred(msg),
            });
            return None;
        }
    };
    let envelope = smtp::Envelope {
        sender: msg.envelope.sender.clone(),
        recipients: msg.envelope.recipients.clone(),
    };
    match session.start_message(envelope, now) {
        Ok(()) => Some(Job {
            msg,
            body: Some(body),
        }),
        Err(e) => {
            error!(shared.log, "cannot start transaction"; "queue_id" => &msg.id, "error" => %e);
            shared.tell(DispatcherMsg::Done {
                domain: msg.domain.clone(),
                disposition: Disposition::Deferred(msg),
            });
            None
        }
    }
}

/// Logs every recipient's result and settles the queue file: removed when
/// all were delivered, set aside when none is pending but some failed for
/// good, left in place (deferred) while any is pending.
pub fn finish_job(msg: QueuedMessage, result: MessageResult, shared: &mut Shared, relay: &str) {
    let domain = msg.domain.clone();
    let mut pending = false;
    let mut failed = Vec::new();
    for recipient in &result.recipients {
        let (status, code, dsn, text) = match &recipient.result {
            Ok(reply) => {
                shared.stats.sent += 1;
                (
                    Status::Sent,
                    reply.code.get(),
                    reply.enhanced.map(|e| e.to_string()),
                    reply.to_string(),
                )
            }
            Err(outcome) => {
                let status = match outcome.class {
                    Class::Transient => {
                        pending = true;
                        shared.stats.deferred += 1;
                        Status::Deferred
                    }
                    Class::Permanent => {
                        shared.stats.bounced += 1;
                        Status::Bounced
                    }
                };
                let text = format!("host {relay} {outcome}");
                if status == Status::Bounced {
                    failed.push(format!("<{}>: {text}", recipient.recipient));
                }
                (
                    status,
                    outcome.reply.as_ref().map_or(0, |r| r.code.get()),
                    outcome
                        .reply
                        .as_ref()
                        .and_then(|r| r.enhanced)
                        .map(|e| e.to_string()),
                    text,
                )
            }
        };
        records::log_recipient(
            &shared.log,
            &msg,
            &recipient.recipient,
            &Verdict {
                status,
                relay,
                code,
                dsn,
                reply: &text,
            },
        );
    }
    let disposition = if pending {
        // Per-recipient rewriting of the queue file belongs to the
        // durability work; until then the whole message waits, and
        // recipients already accepted may receive it again.
        Disposition::Deferred(msg)
    } else if failed.is_empty() {
        if let Err(e) = queue::complete(&msg.path) {
            error!(shared.log, "delivered, but cannot remove the queue file";
                "queue_id" => &msg.id, "error" => %e);
        }
        Disposition::Finished
    } else {
        let reason = failed.join("\n");
        if let Err(e) = queue::set_aside_failed(&shared.layout, &msg.domain, &msg.id, &reason) {
            error!(shared.log, "cannot set aside failed message; it stays queued";
                "queue_id" => &msg.id, "error" => %e);
        }
        Disposition::Finished
    };
    shared.tell(DispatcherMsg::Done {
        domain,
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

/// Returns an untried message to the dispatcher.
pub fn give_back(shared: &Shared, msg: QueuedMessage) {
    shared.tell(DispatcherMsg::Done {
        domain: msg.domain.clone(),
        disposition: Disposition::Unused(msg),
    });
}
