//! The per-recipient delivery record, in the spirit of Postfix's
//! `to=<…>, relay=…, delay=…, dsn=…, status=… (reply)` lines. Field names are
//! stable: log parsers and `postman stats` read them.

use std::time::SystemTime;

use slog::{info, Logger};

use crate::messages::QueuedMessage;

/// The status word of a delivery record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Deferred => "deferred",
            Status::Bounced => "bounced",
        }
    }
}

/// What the remote side (or postman itself) said about one recipient.
pub struct Verdict<'a> {
    pub status: Status,
    /// `host[ip]:port`, or `none` when no server was reached.
    pub relay: &'a str,
    /// The reply code, 0 when there was no reply.
    pub code: u16,
    /// The enhanced status code (RFC 3463) when the server gave one.
    pub dsn: Option<String>,
    /// The reply text, or postman's own diagnostic.
    pub reply: &'a str,
}

/// Writes one delivery record for `recipient` of `msg`.
pub fn log_recipient(log: &Logger, msg: &QueuedMessage, recipient: &str, verdict: &Verdict<'_>) {
    let delay = SystemTime::now()
        .duration_since(msg.arrival)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let dsn = verdict
        .dsn
        .clone()
        .unwrap_or_else(|| default_dsn(verdict.status).to_owned());
    info!(log, "delivery";
        "queue_id" => &msg.id,
        "domain" => &msg.domain,
        "from" => &msg.envelope.sender,
        "to" => recipient,
        "relay" => verdict.relay,
        "delay" => (delay * 100.0).round() / 100.0,
        "status" => verdict.status.as_str(),
        "code" => verdict.code,
        "dsn" => dsn,
        "reply" => verdict.reply,
    );
}

/// Logs the same verdict for every recipient of `msg`.
pub fn log_all(log: &Logger, msg: &QueuedMessage, verdict: &Verdict<'_>) {
    for recipient in &msg.envelope.recipients {
        log_recipient(log, msg, recipient, verdict);
    }
}

fn default_dsn(status: Status) -> &'static str {
    match status {
        Status::Sent => "2.0.0",
        Status::Deferred => "4.0.0",
        Status::Bounced => "5.0.0",
    }
}
