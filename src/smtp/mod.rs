//! The SMTP client protocol, sans-IO (RFC 5321, RFC 2920 PIPELINING, RFC 3463
//! and RFC 2034 enhanced status codes, RFC 1870 SIZE).
//!
//! * [`Session`]: the client state machine. It is fed bytes, instants and
//!   envelopes, and hands back bytes to send and [`Event`]s.
//! * [`ReplyParser`], [`Reply`], [`ReplyCode`], [`EnhancedCode`]: replies.
//! * [`Extensions`]: what an EHLO reply advertises.
//! * [`DotStuffer`]: the DATA body on the wire.
//! * [`Outcome`] and friends: what became of each recipient.

mod command;
mod data;
mod extensions;
mod outcome;
mod reply;
mod session;

pub use command::Command;
pub use data::DotStuffer;
pub use extensions::Extensions;
pub use outcome::{Class, MessageResult, Outcome, RecipientResult, Scope, Stage};
pub use reply::{EnhancedCode, Reply, ReplyCode, ReplyError, ReplyParser, MAX_LINES, MAX_LINE_LEN};
pub use session::{
    Envelope, Event, Session, SessionConfig, SessionError, Timeouts, BODY_HIGH_WATER,
};
