//! postman's core: everything protocol- and queue-shaped, with no threads,
//! no sockets and no clock it is not handed.
//!
//! * [`smtp`]: the client session state machine (RFC 5321, RFC 2920), reply
//!   parsing, EHLO extensions, DATA dot-stuffing.
//! * [`queue`]: the Maildir-style queue on disk: layout, envelope header block,
//!   completion, quarantine.
//! * [`route`]: MX policy (RFC 5321 §5.1, RFC 7505).
//! * [`routing`]: MX delivery or a configured next hop, per recipient.
//! * [`retry`]: backoff schedule and queue lifetime.
//! * [`schedule`]: which message goes over which connection, when (sites).
//! * [`settle`]: what an attempt's end makes of a message: records,
//!   notifications, the retry state to keep (a plan for the actors).
//! * [`dsn`]: delivery status notifications (RFC 3464, RFC 3462).
//! * [`config`]: settings, their figment loading and validation.
//! * [`terminal`]: what text must not reach a terminal raw.
//! * [`secret`]: passwords that never reach a log or an error.
//! * [`tlsrpt`]: TLS reports (RFC 8460): records, sessions, the daily
//!   report and its mail.
//! * [`dkim`]: DKIM signing (RFC 6376, RFC 8463) of postman's own reports.
#![forbid(unsafe_code)]

pub mod config;
pub mod dane;
pub mod dkim;
pub mod dsn;
pub mod mta_sts;
pub mod queue;
pub mod retry;
pub mod route;
pub mod routing;
pub mod schedule;
pub mod secret;
pub mod settle;
pub mod smtp;
pub mod terminal;
pub mod tls;
pub mod tlsrpt;
