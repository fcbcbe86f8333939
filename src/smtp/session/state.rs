//! The session's states, each named for what it waits for (the rustls way),
//! and the per-state table of timeouts and descriptions (Postfix keeps the
//! same table beside `smtp_proto.c`: RFC 5321 §4.5.3.2 timeouts, and texts
//! such as "sending end of data -- message may be sent more than once").
//!
//! Every answer is an exhaustive match, so a new state forces a decision.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Envelope, Timeouts};
use crate::smtp::auth::{AuthError, Exchange, Mechanism};
use crate::smtp::command::MailParams;
use crate::smtp::outcome::{Outcome, Stage};
use crate::smtp::reply::Reply;

/// A transaction command sent and not yet answered. Replies are matched
/// against a FIFO of these (RFC 2920 §3; Postfix's receiver state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    Rset,
    Mail,
    /// RCPT for the recipient at this index of the envelope.
    Rcpt(usize),
    Data,
    /// A BDAT chunk (RFC 3030); `true` for the one sent with LAST.
    Bdat(bool),
}

impl Pending {
    pub(super) fn stage(self) -> Stage {
        match self {
            Pending::Rset => Stage::Rset,
            Pending::Mail => Stage::Mail,
            Pending::Rcpt(_) => Stage::Rcpt,
            Pending::Data => Stage::Data,
            Pending::Bdat(false) => Stage::Bdat,
            Pending::Bdat(true) => Stage::DataEnd,
        }
    }

    pub(super) fn timeout(self, timeouts: &Timeouts) -> Duration {
        match self {
            Pending::Rset => timeouts.rset,
            Pending::Mail => timeouts.mail,
            Pending::Rcpt(_) => timeouts.rcpt,
            Pending::Data => timeouts.data,
            Pending::Bdat(false) => timeouts.data_block,
            Pending::Bdat(true) => timeouts.data_done,
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Pending::Rset => "sending RSET",
            Pending::Mail => "sending MAIL FROM",
            Pending::Rcpt(_) => "sending RCPT TO",
            Pending::Data => "sending DATA command",
            Pending::Bdat(false) => "sending message body",
            Pending::Bdat(true) => "sending end of data -- message may be sent more than once",
        }
    }
}

/// One message on its way: the envelope and what is known of each recipient.
#[derive(Debug)]
pub(super) struct Transaction {
    pub(super) envelope: Envelope,
    /// Per recipient, in envelope order: `None` until final. A recipient
    /// whose RCPT was accepted stays `None` until the reply after the dot.
    pub(super) results: Vec<Option<Result<Reply, Outcome>>>,
    /// Recipients whose RCPT got 2xx.
    pub(super) accepted: usize,
    /// MAIL was refused: later replies of a pipelined group are only drained.
    pub(super) mail_failed: bool,
    /// The ESMTP parameters MAIL carries.
    pub(super) params: MailParams,
    /// The body goes out in BDAT chunks, not after DATA (RFC 3030).
    pub(super) chunking: bool,
    /// A BDAT chunk was refused: no more body is taken, the replies of the
    /// chunks in flight are drained, and the message is done.
    pub(super) body_failed: bool,
    /// A RCPT was refused for the server's limit of recipients per
    /// transaction: without PIPELINING, the recipients not yet sent get
    /// the same answer unasked (RFC 5321 §4.5.3.1.10), for a later
    /// transaction.
    pub(super) over_limit: Option<Outcome>,
    /// Commands sent, replies awaited, oldest first.
    pub(super) pending: VecDeque<Pending>,
    /// The transaction began with RSET on a reused connection, and no
    /// reply but RSET's (or a 421 to MAIL) has come for it: should the
    /// connection end now, the server has not judged the message at all.
    pub(super) untried: bool,
}

impl Transaction {
    pub(super) fn new(envelope: Envelope) -> Transaction {
        let results = vec![None; envelope.recipients.len()];
        Transaction {
            envelope,
            results,
            accepted: 0,
            mail_failed: false,
            params: MailParams::default(),
            chunking: false,
            body_failed: false,
            over_limit: None,
            pending: VecDeque::new(),
            untried: false,
        }
    }

    /// True when the message body will (or did) go out: some recipient was
    /// accepted after an accepted MAIL.
    pub(super) fn sends_body(&self) -> bool {
        self.accepted > 0 && !self.mail_failed
    }

    /// The first recipient at or after `from` that still needs its RCPT.
    pub(super) fn next_rcpt(&self, from: usize) -> Option<usize> {
        (from..self.results.len()).find(|&i| matches!(self.results.get(i), Some(None)))
    }

    /// What to wait for now; never empty while in `AwaitReplies`.
    fn head(&self) -> Pending {
        self.pending.front().copied().unwrap_or(Pending::Mail)
    }
}

/// What the session waits for.
#[derive(Debug)]
pub(super) enum State {
    /// The 220 greeting.
    AwaitGreeting,
    /// The reply to EHLO.
    AwaitEhlo,
    /// The reply to HELO, after EHLO was refused.
    AwaitHelo,
    /// The reply to STARTTLS (RFC 3207 §4).
    AwaitStartTls,
    /// The driver's TLS handshake, after 220 to STARTTLS: any plaintext
    /// from the server now is an injection attempt (RFC 3207 §5).
    AwaitTls,
    /// The reply to AUTH or to a response of its SASL exchange (RFC 4954
    /// §4). Boxed: the exchange is large and the state is moved often.
    AwaitAuth(Box<Exchange>),
    /// The reply to `*`, after the mechanism gave up for `error`.
    AwaitAuthCancel {
        mechanism: Mechanism,
        error: AuthError,
    },
    /// Nothing: the caller may start a message or quit. `last` is the stage
    /// of the last reply, for failures while idle.
    Ready { last: Stage },
    /// Replies to RSET/MAIL/RCPT/DATA, in the order of `pending`.
    AwaitReplies(Transaction),
    /// The caller's body bytes (after 354, or BDAT chunks; replies to BDAT
    /// chunks already sent may arrive meanwhile).
    SendingBody(Transaction),
    /// The reply after the final dot.
    AwaitDataEnd(Transaction),
    /// The reply to QUIT.
    AwaitQuit,
    /// Nothing ever again.
    Closed { last: Stage },
}

impl State {
    /// The deadline of this wait, counted from when it began.
    pub(super) fn timeout(&self, timeouts: &Timeouts) -> Option<Duration> {
        match self {
            State::AwaitGreeting => Some(timeouts.greeting),
            // Postfix's smtp_starttls_timeout defaults to its
            // smtp_helo_timeout: one setting covers the whole handshake.
            // Postfix has no timeout of its own for AUTH either: the
            // EHLO one covers every step of the handshake.
            State::AwaitEhlo
            | State::AwaitHelo
            | State::AwaitStartTls
            | State::AwaitTls
            | State::AwaitAuth(_)
            | State::AwaitAuthCancel { .. } => Some(timeouts.ehlo),
            State::Ready { .. } => None,
            State::AwaitReplies(txn) => Some(txn.head().timeout(timeouts)),
            State::SendingBody(_) => Some(timeouts.data_block),
            State::AwaitDataEnd(_) => Some(timeouts.data_done),
            State::AwaitQuit => Some(timeouts.quit),
            State::Closed { .. } => None,
        }
    }

    /// Postfix-style: "conversation timed out while {describe}".
    pub(super) fn describe(&self) -> &'static str {
        match self {
            State::AwaitGreeting => "receiving the initial server greeting",
            State::AwaitEhlo => "performing the EHLO handshake",
            State::AwaitHelo => "performing the HELO handshake",
            State::AwaitStartTls => "sending STARTTLS",
            State::AwaitTls => "performing the TLS handshake",
            State::AwaitAuth(_) => "sending AUTH",
            State::AwaitAuthCancel { .. } => "cancelling AUTH",
            State::Ready { .. } => "waiting for the next message",
            State::AwaitReplies(txn) => txn.head().describe(),
            State::SendingBody(_) => "sending message body",
            State::AwaitDataEnd(_) => "sending end of data -- message may be sent more than once",
            State::AwaitQuit => "sending QUIT",
            State::Closed { .. } => "closing the session",
        }
    }

    /// The stage a failure now belongs to.
    pub(super) fn stage(&self) -> Stage {
        match self {
            State::AwaitGreeting => Stage::Greeting,
            State::AwaitEhlo => Stage::Ehlo,
            State::AwaitHelo => Stage::Helo,
            State::AwaitStartTls | State::AwaitTls => Stage::StartTls,
            State::AwaitAuth(_) | State::AwaitAuthCancel { .. } => Stage::Auth,
            State::Ready { last } | State::Closed { last } => *last,
            State::AwaitReplies(txn) => txn.head().stage(),
            State::SendingBody(txn) if txn.chunking => Stage::Bdat,
            State::SendingBody(_) => Stage::Data,
            State::AwaitDataEnd(_) => Stage::DataEnd,
            State::AwaitQuit => Stage::Quit,
        }
    }

    /// True when a reply from the server is expected now.
    pub(super) fn awaits_reply(&self) -> bool {
        match self {
            State::AwaitGreeting
            | State::AwaitEhlo
            | State::AwaitHelo
            | State::AwaitStartTls
            | State::AwaitAuth(_)
            | State::AwaitAuthCancel { .. }
            | State::AwaitReplies(_)
            | State::AwaitDataEnd(_)
            | State::AwaitQuit => true,
            State::SendingBody(txn) => !txn.pending.is_empty(),
            State::AwaitTls | State::Ready { .. } | State::Closed { .. } => false,
        }
    }

    /// The message in flight, if any.
    pub(super) fn into_transaction(self) -> Option<Transaction> {
        match self {
            State::AwaitReplies(txn) | State::SendingBody(txn) | State::AwaitDataEnd(txn) => {
                Some(txn)
            }
            State::AwaitGreeting
            | State::AwaitEhlo
            | State::AwaitHelo
            | State::AwaitStartTls
            | State::AwaitTls
            | State::AwaitAuth(_)
            | State::AwaitAuthCancel { .. }
            | State::Ready { .. }
            | State::AwaitQuit
            | State::Closed { .. } => None,
        }
    }
}
