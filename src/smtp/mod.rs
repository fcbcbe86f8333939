//! The SMTP client protocol, sans-IO (RFC 5321, RFC 2920 PIPELINING, RFC 3463
//! and RFC 2034 enhanced status codes, RFC 1870 SIZE, RFC 6152 8BITMIME,
//! RFC 6531 SMTPUTF8, RFC 3030 CHUNKING, RFC 3207 STARTTLS, RFC 4954 AUTH,
//! RFC 8314 implicit TLS).
//!
//! * [`Session`]: the client state machine. It is fed bytes, instants and
//!   envelopes, and hands back bytes to send and [`Event`]s.
//! * [`ReplyParser`], [`Reply`], [`ReplyCode`], [`EnhancedCode`]: replies.
//! * [`Extensions`]: what an EHLO reply advertises.
//! * [`AuthConfig`], [`Mechanism`], [`Nonce`]: SMTP AUTH's credentials and
//!   SASL mechanisms (PLAIN, LOGIN, SCRAM-SHA-256).
//! * [`DotStuffer`]: the DATA body on the wire (and BDAT's line ends);
//!   [`BodyMeasure`]: a body's size and 8-bit-ness, known before MAIL.
//! * [`TlsMode`], [`TlsVerify`], [`IpPreference`], [`TlsInfo`]: how the
//!   client connects.
//! * [`Outcome`] and friends: what became of each recipient.
//! * [`names_host`]: whether a server names this host (a mail loop).
//! * [`throttle::is_throttle`]: whether a reply is a site limiting this
//!   client rather than a verdict on the message.

mod auth;
mod command;
mod data;
mod extensions;
mod loops;
mod outcome;
mod policy;
mod reply;
mod session;
pub mod throttle;

pub use auth::{AuthConfig, AuthError, Exchange, Mechanism, Nonce, MAX_ITERATIONS};
pub use command::{Command, MailParams};
pub use data::{BodyMeasure, DotStuffer};
pub use extensions::Extensions;
pub use loops::names_host;
pub use outcome::{Class, MessageResult, Outcome, RecipientResult, Scope, Stage};
pub use policy::{IpPreference, TlsInfo, TlsMode, TlsVerify};
pub use reply::{EnhancedCode, Reply, ReplyCode, ReplyError, ReplyParser, MAX_LINES, MAX_LINE_LEN};
pub use session::{
    Envelope, Event, Session, SessionConfig, SessionError, Timeouts, BDAT_CHUNK, BODY_HIGH_WATER,
};
