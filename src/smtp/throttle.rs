//! Throttle replies: a transient reply (RFC 5321 §4.2.1, 4yz) by which a
//! receiving site limits this client — too many connections at once, too
//! many messages in a while — rather than judging the message. Such a reply
//! is not a failure of the message: the scheduler lowers the site's
//! concurrency and rate, gives an untried message back, and suspends a site
//! that keeps throttling (KumoMTA's traffic-shaping automation, PowerMTA's
//! backoff mode).
//!
//! The built-in knowledge is deliberately narrow. A greylisting reply
//! (`450 4.2.0 Greylisted`, `451 4.7.1 Please try again later`) or a limit on
//! one recipient (`450 4.2.1 … receiving mail at a rate …`) is not a
//! throttle: slowing a whole provider down for it would be wrong. Operators
//! add what their providers send with `throttle_patterns`.

use std::sync::OnceLock;

use regex::{Regex, RegexBuilder};

use super::reply::{EnhancedCode, Reply, ReplyCode};
use super::Stage;

/// Whether `reply`, received at `stage`, is a throttle: a 4xx reply that is
/// a `421` to the greeting, EHLO or HELO (a server turning the connection
/// away before any message), or whose enhanced code is one providers use for
/// rate limiting, or whose text says so, or that matches one of `extra`
/// (the site's `throttle_patterns`, matched against the reply as one line:
/// `"421 4.7.0 text of every line"`). A 5xx reply never is.
pub fn is_throttle(stage: Stage, reply: &Reply, extra: &[Regex]) -> bool {
    if !reply.code.is_transient() {
        return false;
    }
    let before_any_message = matches!(stage, Stage::Greeting | Stage::Ehlo | Stage::Helo);
    if before_any_message && reply.code == ReplyCode::SERVICE_NOT_AVAILABLE {
        return true;
    }
    if reply.enhanced.is_some_and(is_throttle_code) {
        return true;
    }
    let line = reply.to_string();
    if extra.iter().any(|pattern| pattern.is_match(&line)) {
        return true;
    }
    !per_connection_text().is_match(&line) && throttle_text().is_match(&line)
}

/// A limit of messages per connection (Exim's "421 4.7.0 too many messages
/// in this connection", Yahoo's "Max message per connection reached",
/// Microsoft's "exceeded maximum number of messages per connection") is
/// not a throttle: the server asks for a new connection, not for less
/// mail, and the session already sends the message back untried to go
/// over another one.
fn per_connection_text() -> &'static Regex {
    static TEXT: OnceLock<Regex> = OnceLock::new();
    TEXT.get_or_init(|| {
        RegexBuilder::new(r"(?:in|on|per) (?:this |the )?(?:connection|session)")
            .case_insensitive(true)
            .build()
            // A constant pattern, checked by every test of this module.
            .expect("the per-connection pattern compiles")
    })
}

/// Enhanced codes that only ever mean "this client is being limited".
/// `4.7.0` is not one: it is the generic "security or policy" code, used as
/// much for greylisting and temporary errors as for limits, so it counts
/// only with a text that says so.
fn is_throttle_code(code: EnhancedCode) -> bool {
    match (code.class, code.subject, code.detail) {
        // Gmail: "421-4.7.28 … has been temporarily rate limited"
        // (support.google.com/mail/answer/81126, "unusual rate").
        (4, 7, 28) => true,
        // Microsoft 365 / Outlook.com: "451 4.7.500-699 (ASxxx) Access
        // denied, please try again later" is documented as IP throttling
        // (learn.microsoft.com, "Fix email delivery issues for error code
        // 451 4.7.500-699"); 4.7.650/4.7.651 "has been temporarily rate
        // limited due to IP reputation", 4.7.500 "Server busy".
        (4, 7, 500..=699) => true,
        _ => false,
    }
}

/// What the built-in texts look for, case-insensitively, in the one-line
/// form of a reply. Each alternative names the servers that send it.
const THROTTLE_TEXT: &[&str] = &[
    // Postfix anvil "Error: too many connections from <ip>", "too many new
    // TLS sessions"; Exim "Too many concurrent SMTP connections"; Sendmail
    // "Too many open connections"; GoDaddy "too many sessions from";
    // Rackspace "Too many concurrent connections from this client".
    r"too many (?:open |concurrent |simultaneous |smtp |new |tls )*(?:connections|sessions)",
    r"too many concurrent",
    // Microsoft "exceeded the maximum number of connections", "The maximum
    // number of concurrent connections per resource forest has exceeded a
    // limit", "exceed max concurrent connections".
    r"max(?:imum)? (?:number of )?(?:concurrent |simultaneous |server )*connections",
    // Sendmail "Connection rate limit exceeded"; Postfix's anvil words.
    r"connection rate",
    // Gmail "temporarily rate limited", Microsoft "rate limited due to IP
    // reputation", hosting "Mailbox rate limit reached", "ratelimit".
    r"rate[ -]?limit",
    r"throttl",
    // GMX/web.de "Too many messages have been received in a short period
    // of time"; Rackspace "Received too many messages from a new or
    // untrusted IP" (but not a limit per connection: see
    // `per_connection_text`).
    r"too many messages",
    // Postfix smtpd_client_message_rate_limit "Error: too much mail from".
    r"too much mail from",
    // Postfix smtpd_client_recipient_rate_limit (per client, not the
    // per-transaction "452 4.5.3 Too many recipients", which the session
    // handles by sending the rest on).
    r"too many recipients from",
    // "exceeded the sending rate", "message rate exceeded", Exchange
    // "Message submission rate for this client has exceeded the configured
    // limit".
    r"exceed\w*\W+(?:\w+\W+){0,6}?rate\b",
    r"\brate\W+(?:\w+\W+){0,6}?exceed",
    // Yahoo: [TS01]/[TS02] "temporarily deferred due to user complaints",
    // [TS03] "All messages from <ip> will be permanently deferred",
    // [TSS04]/[TSS05], [IPTS04]/[IPTS05] "temporarily deferred due to
    // unexpected volume or user complaints" (postmaster.yahooinc.com/error-codes;
    // Yahoo asks senders to stop for hours, KumoMTA suspends for 2 h).
    r"\[(?:ts0[1-3]|tss0[45]|ipts0[45])\]",
    // Outlook.com "RP-001 … Unfortunately, some messages from <ip> weren't
    // sent … We have limits for how many messages can be sent per hour".
    r"\brp-00[1-3]\b",
    // Microsoft "451 4.7.500 Server busy. Please try again later from
    // [ip]"; Postfix postscreen "All server ports are busy".
    r"server busy|too busy|ports are busy",
];

fn throttle_text() -> &'static Regex {
    static TEXT: OnceLock<Regex> = OnceLock::new();
    TEXT.get_or_init(|| {
        RegexBuilder::new(&THROTTLE_TEXT.join("|"))
            .case_insensitive(true)
            .build()
            // A constant pattern, checked by every test of this module.
            .expect("the built-in throttle patterns compile")
    })
}

#[cfg(test)]
#[path = "throttle_tests.rs"]
mod tests;
