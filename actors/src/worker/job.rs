//! The values a message passes through in a worker: a connection's next
//! message to prepare ([`Preparation`]) and the disk thread's answer
//! ([`Prepared`]), the message claimed and measured ([`Ready`]), the
//! transaction in flight ([`Job`]) and, once it is over, what is left to
//! settle ([`Settlement`], with its [`QueueFile`]).

use postman::queue::{Claimed, Leftover};
use postman::smtp::BodyMeasure;
use slog::Logger;

use super::body::Body;
use crate::messages::{ConnId, DispatcherMsg, Disposition, QueuedMessage};
use crate::settler::{RecipientFate, Settler};

/// A connection's next message, to be prepared
/// ([`prepare`](super::prepare::prepare)).
pub struct Preparation {
    pub conn: ConnId,
    pub msg: QueuedMessage,
    /// The connection's `host[ip]:port`, for the records of a failure.
    pub relay: String,
    /// A buffer lent from the worker's pool
    /// ([`Pool::lend`](super::body::Pool::lend)) for a body kept in memory;
    /// it comes back in the body or in [`Prepared::spare`].
    pub buffer: Option<Vec<u8>>,
}

/// The answer to a [`Preparation`]: the message ready to start, or `None`
/// when it was disposed of (gone, not due, unreadable, quarantined).
pub struct Prepared {
    pub conn: ConnId,
    /// Boxed: the worker's answer channel has room for two answers per
    /// possible connection, and a channel's slots are all written when
    /// it is made, so small slots keep start-up from touching megabytes.
    pub ready: Option<Box<Ready>>,
    /// The lent buffer, when the body did not take it: back to the pool.
    pub spare: Option<Vec<u8>>,
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

/// The message being delivered on a connection, claimed for this process.
pub struct Job {
    pub msg: QueuedMessage,
    pub claimed: Claimed,
    pub body: Option<Body>,
}

/// The queue file of a finished transaction.
pub enum QueueFile {
    /// Still claimed: some recipient was not accepted, or removing failed.
    Claimed(Claimed),
    /// Every recipient accepted, and the file's name removed: closing
    /// [`Settlement::open`] frees the rest, and its state file and
    /// reservation go with the [`Leftover`] (none in tests).
    Removed(Option<Leftover>),
}

/// One finished transaction, for the disk thread to settle.
pub struct Settlement {
    pub msg: QueuedMessage,
    pub file: QueueFile,
    pub fates: Vec<RecipientFate>,
    pub relay: String,
    /// Logs the delivery records: it carries the transaction's `tls`.
    pub log: Logger,
    /// The queue file, open since it was claimed; it closes when the
    /// settlement is done with, in the thread that settles it.
    pub open: Option<std::fs::File>,
    /// A reply of the transaction said the site throttles this client.
    pub throttle: Option<String>,
}

impl Settlement {
    /// Some recipient's fate is the server's reply (see
    /// [`DispatcherMsg::Done`]'s `answered`).
    pub fn answered(&self) -> bool {
        self.fates.iter().any(|f| f.code.is_some())
    }

    /// The outcome is known before settling: the file is gone, so the
    /// message is finished. The worker tells the dispatcher itself, with
    /// the connection's request for more in the same wake-up, and whoever
    /// settles only closes the file and logs.
    pub fn finished_already(&self) -> bool {
        matches!(self.file, QueueFile::Removed(_))
    }

    /// The [`DispatcherMsg::Done`] of a settlement that is
    /// [`Settlement::finished_already`].
    pub fn finished(&self) -> DispatcherMsg {
        DispatcherMsg::Done {
            domain: self.msg.route_key().to_owned(),
            id: self.msg.id.clone(),
            disposition: Disposition::Finished,
            answered: self.answered(),
            throttle: self.throttle.clone(),
        }
    }

    /// Settles ([`Settlement::settle`]) and gives the [`DispatcherMsg::Done`]
    /// to send, or `None` when the worker sent it already
    /// ([`Settlement::finished_already`]).
    pub fn settle_for_dispatcher(self, settler: &mut Settler) -> Option<DispatcherMsg> {
        if self.finished_already() {
            self.settle(settler);
            return None;
        }
        let domain = self.msg.domain.clone();
        let id = self.msg.id.clone();
        let answered = self.answered();
        let throttle = self.throttle.clone();
        let disposition = self.settle(settler);
        Some(DispatcherMsg::Done {
            domain,
            id,
            disposition,
            answered,
            throttle,
        })
    }

    /// Updates or removes the file, logs the delivery records, and says
    /// what the dispatcher should do with the message; then closes the
    /// file, which for a removed one frees its blocks.
    fn settle(self, settler: &mut Settler) -> Disposition {
        let Settlement {
            msg,
            file,
            fates,
            relay,
            log,
            open,
            throttle: _,
        } = self;
        let disposition = match file {
            QueueFile::Claimed(claimed) => settler.settle(msg, claimed, fates, &relay, &log),
            QueueFile::Removed(leftover) => {
                if let Some(Err(e)) = leftover.map(Leftover::remove) {
                    slog::warn!(log, "cannot remove a delivered message's state file; the next start does";
                        "queue_id" => &msg.id, "domain" => &msg.domain, "error" => %e);
                }
                settler.settle_removed(&msg, &fates, open.as_ref(), &relay, &log)
            }
        };
        drop(open);
        disposition
    }
}
