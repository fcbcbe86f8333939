//! Delivery status notifications: the bounce, the delay warning and the
//! success ("relayed") notice sent to the envelope sender (DESIGN.md
//! "Outcomes", RFC 3461 §6). One `multipart/report;
//! report-type=delivery-status` message (RFC 3462) of three parts: a
//! human-readable `text/plain` report worded like Postfix's, the
//! machine-readable `message/delivery-status` (RFC 3464 §2), and the
//! original message: its header section as `text/rfc822-headers` (RFC 3462
//! §3), or, for a failure of a message sent with `RET=FULL`, the whole
//! message as `message/rfc822` ([`Returned`]). Status codes follow RFC
//! 3463; `Auto-Submitted: auto-replied` follows RFC 3834 §5; the message
//! goes out with the null sender (RFC 5321 §4.5.5), so it is never bounced
//! itself ([`should_bounce`]).
//!
//! Every line ends in CRLF, is at most 998 octets (RFC 5322 §2.1.1; header
//! fields are folded near 78) and holds only 7-bit characters: diagnostics
//! have control characters turned into spaces and non-ASCII characters into
//! `?`; a non-ASCII address is written as RFC 6533 `utf-8` xtext; original
//! headers that are not 7-bit or have overlong lines are sent
//! quoted-printable. The one exception is a returned whole message with an
//! 8-bit body: its part and the notification are labelled
//! `Content-Transfer-Encoding: 8bit` (RFC 2045 §6.4, RFC 6152), and a
//! message that cannot be sent so (8-bit headers, NUL, overlong lines) is
//! returned as headers only. Pure: the date and a unique token are
//! arguments.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::smtp::{Class, EnhancedCode, Outcome, Reply};

mod returned;

use returned::{returned_part, ThirdPart};

/// RFC 7505 §4.2: the domain publishes a null MX, it accepts no mail.
pub const STATUS_NULL_MX: EnhancedCode = code(5, 1, 10);
/// RFC 3463 §3.2 X.1.2: the destination domain does not exist.
pub const STATUS_NO_SUCH_DOMAIN: EnhancedCode = code(5, 1, 2);
/// RFC 3463 §3.5 X.4.7: delivery time expired. Reported with
/// `Action: failed` when the queue lifetime ran out, as Sendmail and
/// Postfix do: RFC 3463 calls it "useful only as a persistent transient
/// error", and `Action` already says the message was given up.
pub const STATUS_EXPIRED: EnhancedCode = code(4, 4, 7);
/// RFC 3463 §3.5 X.4.6: routing loop detected. The mail for a domain
/// loops back to this host (its MX is this host, or names it), as Postfix
/// reports `mail for <domain> loops back to myself`.
pub const STATUS_LOOP: EnhancedCode = code(5, 4, 6);
/// RFC 3463 §3.5 X.4.1: no answer from host.
pub const STATUS_NO_ANSWER: EnhancedCode = code(4, 4, 1);
/// RFC 3463 §3.5 X.4.2: bad connection (lost, timed out).
pub const STATUS_BAD_CONNECTION: EnhancedCode = code(4, 4, 2);
/// RFC 3463 §3.5 X.4.3: routing server failure, the DNS lookup of the
/// route failed.
pub const STATUS_ROUTING_SERVER: EnhancedCode = code(4, 4, 3);
/// RFC 3463 §3.5 X.4.4: unable to route, no mail host has an address.
pub const STATUS_UNROUTABLE: EnhancedCode = code(4, 4, 4);
/// RFC 3463 §3.1 X.0.0: permanent failure, no further detail.
pub const STATUS_PERMANENT: EnhancedCode = code(5, 0, 0);
/// RFC 3463 §3.1 X.0.0: transient failure, no further detail.
pub const STATUS_TRANSIENT: EnhancedCode = code(4, 0, 0);
/// RFC 3463 §3.1 X.0.0: success, no further detail.
pub const STATUS_SUCCESS: EnhancedCode = code(2, 0, 0);

const fn code(class: u8, subject: u16, detail: u16) -> EnhancedCode {
    EnhancedCode {
        class,
        subject,
        detail,
    }
}

/// Preferred header line length (RFC 5322 §2.1.1 "SHOULD").
const FOLD_AT: usize = 78;
/// Hard line length limit without CRLF (RFC 5322 §2.1.1 "MUST").
const MAX_LINE: usize = 998;
/// Longest MIME boundary (RFC 2046 §5.1.1).
const MAX_BOUNDARY: usize = 70;

/// Which notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The recipients are given up: `Action: failed`, "Undelivered Mail
    /// Returned to Sender".
    Failure,
    /// A warning that the recipients are still being retried:
    /// `Action: delayed`, "Delayed Mail (still being retried)".
    Delay,
    /// The recipients, who asked with `NOTIFY=SUCCESS`, were accepted by a
    /// server that did not advertise DSN and so will not tell the sender
    /// itself (RFC 3461 §5.2.2): `Action: relayed`, "Successful Mail
    /// Delivery Report" (Postfix's wording).
    Success,
}

/// What a notification returns of the original message (RFC 3461 §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned<'a> {
    /// Its header section (see `queue::read_original_headers`), as
    /// `text/rfc822-headers`; empty leaves the third part out.
    Headers(&'a [u8]),
    /// The whole message, as `message/rfc822`; only its header section is
    /// returned when it cannot go as it is (see the module's
    /// documentation).
    Message(&'a [u8]),
}

/// Everything a notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report<'a> {
    /// Bounce or delay warning.
    pub kind: Kind,
    /// This host's name (`application.hostname`): `Reporting-MTA`, the
    /// `MAILER-DAEMON@` address, the `Message-ID` domain.
    pub reporting_mta: &'a str,
    /// The queue file's name, reported as `X-Postman-Queue-ID` (an RFC 3464
    /// extension field) for the operator; `None` leaves it out.
    pub queue_id: Option<&'a str>,
    /// The sender's envelope id (ENVID), printable (see
    /// `MsgParams::envid_printable`): `Original-Envelope-Id` (RFC 3464
    /// §2.2.1), only when the sender gave one (RFC 3461 §6.3).
    pub envid: Option<&'a str>,
    /// When the original message arrived (`X-Postman-Date`).
    pub arrival: SystemTime,
    /// The original envelope sender: the notification's `To`.
    pub original_sender: &'a str,
    /// The recipients reported on, in envelope order.
    pub recipients: &'a [RecipientReport],
    /// What the third part returns of the original message.
    pub returned: Returned<'a>,
    /// The notification's `Date` (now).
    pub date: SystemTime,
    /// A token unique to this notification: `Message-ID: <token@host>`,
    /// also the MIME boundary's start. Characters other than letters,
    /// digits, `.`, `-` and `_` become `_`.
    pub message_id: &'a str,
    /// For [`Kind::Delay`]: when the message expires (`Will-Retry-Until`,
    /// and "retried until it is N days old" in the text).
    pub will_retry_until: Option<SystemTime>,
}

/// One recipient's part of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientReport {
    /// The envelope recipient (`Final-Recipient`).
    pub address: String,
    /// The recipient as the sender first gave it, from its ORCPT, as
    /// `Orcpt::for_report` writes it (`Original-Recipient`, RFC 3464
    /// §2.3.1); only when ORCPT was queued (RFC 3461 §6.3(d)).
    pub orcpt: Option<String>,
    /// The RFC 3463 status (`Status`); see [`status_for`].
    pub status: EnhancedCode,
    /// Name of the remote host that answered (`Remote-MTA: dns; name`).
    pub remote_mta: Option<String>,
    /// The remote server's reply on one line, e.g. `550 5.1.1 no such
    /// user` (`Diagnostic-Code: smtp; …`). Without one, the reason is
    /// given as `Diagnostic-Code: X-Postman; …`.
    pub reply: Option<String>,
    /// The sentence for the human-readable part, e.g. `host mx.d.test
    /// said: 550 5.1.1 no such user (in reply to RCPT TO command)`.
    pub reason: String,
    /// When delivery to this recipient was last tried (`Last-Attempt-Date`).
    pub last_attempt: Option<SystemTime>,
}

impl RecipientReport {
    /// The report for a recipient whose attempt ended in `outcome`, from
    /// `remote_mta` when it was reached: the status from the reply
    /// ([`status_for`]), the reply as the diagnostic, and the outcome's
    /// Postfix-like detail prefixed with the host.
    pub fn from_outcome(
        address: &str,
        outcome: &Outcome,
        remote_mta: Option<&str>,
        last_attempt: Option<SystemTime>,
    ) -> RecipientReport {
        let reason = match remote_mta {
            Some(host) if outcome.detail.starts_with("said:") => {
                format!("host {host} {}", outcome.detail)
            }
            Some(host) => format!("host {host}: {}", outcome.detail),
            None => outcome.detail.clone(),
        };
        RecipientReport {
            address: address.to_owned(),
            orcpt: None,
            status: outcome
                .status
                .unwrap_or_else(|| status_for(outcome.class, outcome.reply.as_ref())),
            remote_mta: remote_mta.map(str::to_owned),
            reply: outcome.reply.as_ref().map(Reply::to_string),
            reason,
            last_attempt,
        }
    }

    /// The report for a recipient given up because the message was queued
    /// for `lifetime` ([`STATUS_EXPIRED`]), with the last error seen
    /// (`RetryState::last_error`) as the reason.
    pub fn expired(
        address: &str,
        lifetime: Duration,
        last_error: Option<&str>,
        last_attempt: Option<SystemTime>,
    ) -> RecipientReport {
        let age = human_duration(lifetime);
        let reason = match last_error {
            Some(error) => format!("gave up after {age} in the queue; last error: {error}"),
            None => format!("gave up after {age} in the queue"),
        };
        RecipientReport {
            address: address.to_owned(),
            orcpt: None,
            status: STATUS_EXPIRED,
            remote_mta: None,
            reply: None,
            reason,
            last_attempt,
        }
    }

    /// The report for a recipient that `remote_mta` (reached at `relay`,
    /// `host[address]:port`) accepted with `reply` at `when`, for a success
    /// notice: the reply's status when it has a 2.X.X one, else 2.0.0, and
    /// Postfix's "delivery via" sentence.
    pub fn relayed(
        address: &str,
        reply: &Reply,
        remote_mta: &str,
        relay: &str,
        when: SystemTime,
    ) -> RecipientReport {
        let reply_text = reply.to_string();
        RecipientReport {
            address: address.to_owned(),
            orcpt: None,
            status: match reply.enhanced {
                Some(enhanced) if enhanced.class == 2 => enhanced,
                _ => STATUS_SUCCESS,
            },
            remote_mta: Some(remote_mta.to_owned()),
            reason: format!("delivery via {relay}: {}", reply_text.trim_end()),
            reply: Some(reply_text),
            last_attempt: Some(when),
        }
    }
}

/// Whether a failure to deliver mail from `sender` is reported to it: not
/// for the null sender (`""`, or `<>` as written), which is what every
/// notification carries, so a bounce is never bounced (RFC 5321 §4.5.5).
pub fn should_bounce(sender: &str) -> bool {
    !(sender.is_empty() || sender == "<>")
}

/// The RFC 3463 status for a failure of `class` with `reply`: the reply's
/// enhanced code when it has one of the matching class (5 for permanent, 4
/// for transient), else `5.0.0` or `4.0.0`.
pub fn status_for(class: Class, reply: Option<&Reply>) -> EnhancedCode {
    let (want, generic) = match class {
        Class::Permanent => (5, STATUS_PERMANENT),
        Class::Transient => (4, STATUS_TRANSIENT),
    };
    match reply.and_then(|r| r.enhanced) {
        Some(enhanced) if enhanced.class == want => enhanced,
        _ => generic,
    }
}

/// Renders the notification: a complete RFC 5322 message, CRLF line ends,
/// every line at most 998 octets, 7-bit. Send it with the null sender.
pub fn render(report: &Report<'_>) -> Vec<u8> {
    let host = ascii(report.reporting_mta);
    let token = token(report.message_id);
    let third = returned_part(report.kind, report.returned);
    let text = text_part(report, &host, &third);
    let status = status_part(report, &host);
    let boundary = boundary(
        &token,
        &host,
        &[text.as_bytes(), status.as_bytes(), &third.body],
    );

    let mut out = String::new();
    let subject = match report.kind {
        Kind::Failure => "Undelivered Mail Returned to Sender",
        Kind::Delay => "Delayed Mail (still being retried)",
        Kind::Success => "Successful Mail Delivery Report",
    };
    field(
        &mut out,
        "From",
        &format!("Mail Delivery System <MAILER-DAEMON@{host}>"),
    );
    field(
        &mut out,
        "To",
        &format!("<{}>", ascii(report.original_sender)),
    );
    field(&mut out, "Subject", subject);
    field(&mut out, "Date", &rfc5322_date(report.date));
    field(&mut out, "Message-ID", &format!("<{token}@{host}>"));
    field(&mut out, "Auto-Submitted", "auto-replied");
    field(&mut out, "MIME-Version", "1.0");
    field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    if third.eight_bit {
        // A multipart holding an 8bit part is 8bit itself (RFC 2045 §6.4).
        field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.push_str("\r\nThis is a MIME-encapsulated message.\r\n\r\n");

    let mut part = |description: &str, content_type: &str, extra: &str, body: &str| {
        let _ = write!(out, "--{boundary}\r\n");
        field(&mut out, "Content-Description", description);
        field(&mut out, "Content-Type", content_type);
        out.push_str(extra);
        out.push_str("\r\n");
        out.push_str(body);
        if !body.is_empty() && !body.ends_with("\r\n") {
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
    };
    part(
        match report.kind {
            Kind::Failure | Kind::Success => "Notification",
            Kind::Delay => "Delay notification",
        },
        "text/plain; charset=us-ascii",
        "",
        &text,
    );
    part("Delivery report", "message/delivery-status", "", &status);
    if third.body.is_empty() {
        let _ = write!(out, "--{boundary}--\r\n");
        return out.into_bytes();
    }
    let _ = write!(out, "--{boundary}\r\n");
    field(&mut out, "Content-Description", third.description);
    field(&mut out, "Content-Type", third.content_type);
    out.push_str(third.encoding);
    out.push_str("\r\n");
    // The body may be 8-bit and not UTF-8: bytes from here on. It ends
    // in CRLF (every line does).
    let mut out = out.into_bytes();
    out.extend_from_slice(&third.body);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The human-readable part, worded like Postfix's bounce templates.
fn text_part(report: &Report<'_>, host: &str, third: &ThirdPart) -> String {
    let mut lines: Vec<String> = vec![
        format!("This is the mail system at host {host}."),
        String::new(),
    ];
    match report.kind {
        Kind::Failure => {
            lines.push("I'm sorry to have to inform you that your message could not".into());
            if third.body.is_empty() {
                lines.push("be delivered to one or more recipients.".into());
            } else if third.whole {
                lines.push("be delivered to one or more recipients. It's attached below.".into());
            } else {
                lines.push(
                    "be delivered to one or more recipients. Its headers are attached".into(),
                );
                lines.push("below.".into());
            }
        }
        Kind::Success => {
            lines.push("Your message was successfully delivered to the destination(s)".into());
            lines.push("listed below. If the message was delivered to mailbox you will".into());
            lines.push("receive no further notifications. Otherwise you may still receive".into());
            lines.push("notifications of mail delivery errors from other systems.".into());
        }
        Kind::Delay => {
            let banner = "#".repeat(68);
            lines.push(banner.clone());
            lines.push(
                "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #".into(),
            );
            lines.push(banner);
            lines.push(String::new());
            let age = report
                .date
                .duration_since(report.arrival)
                .unwrap_or_default();
            lines.push(format!(
                "Your message could not be delivered for {}.",
                human_duration(age)
            ));
            if let Some(until) = report.will_retry_until {
                let lifetime = until.duration_since(report.arrival).unwrap_or_default();
                lines.push(format!(
                    "It will be retried until it is {} old.",
                    human_duration(lifetime)
                ));
            }
        }
    }
    // A success report asks for no help (Postfix's wording).
    if !matches!(report.kind, Kind::Success) {
        lines.push(String::new());
        lines.push("For further assistance, please send mail to postmaster.".into());
        lines.push(String::new());
        lines.push("If you do so, please include this problem report. You can".into());
        lines.push("delete your own text from the attached returned message.".into());
    }
    lines.push(String::new());
    lines.push("                   The mail system".into());
    recipient_sentences(report, &mut lines);
    let mut out = lines.join("\r\n");
    out.push_str("\r\n");
    out
}

/// One `<address>: reason` paragraph per recipient, wrapped.
fn recipient_sentences(report: &Report<'_>, lines: &mut Vec<String>) {
    for rcpt in report.recipients {
        lines.push(String::new());
        let sentence = format!("<{}>: {}", ascii(&rcpt.address), ascii(&rcpt.reason));
        lines.extend(wrap(&sentence, FOLD_AT, "    "));
    }
}

/// The `message/delivery-status` body (RFC 3464 §2.2, §2.3).
fn status_part(report: &Report<'_>, host: &str) -> String {
    let mut out = String::new();
    field(&mut out, "Reporting-MTA", &format!("dns; {host}"));
    if let Some(envid) = report.envid {
        field(&mut out, "Original-Envelope-Id", &ascii(envid));
    }
    if let Some(id) = report.queue_id {
        field(&mut out, "X-Postman-Queue-ID", &ascii(id));
    }
    field(&mut out, "Arrival-Date", &rfc5322_date(report.arrival));
    for rcpt in report.recipients {
        out.push_str("\r\n");
        if let Some(orcpt) = &rcpt.orcpt {
            field(&mut out, "Original-Recipient", &seven_bit_address(orcpt));
        }
        field(&mut out, "Final-Recipient", &address_field(&rcpt.address));
        let action = match report.kind {
            Kind::Failure => "failed",
            Kind::Delay => "delayed",
            Kind::Success => "relayed",
        };
        field(&mut out, "Action", action);
        field(&mut out, "Status", &rcpt.status.to_string());
        if let Some(remote) = &rcpt.remote_mta {
            field(&mut out, "Remote-MTA", &format!("dns; {}", ascii(remote)));
        }
        let diagnostic = match &rcpt.reply {
            Some(reply) => format!("smtp; {}", ascii(reply)),
            None => format!("X-Postman; {}", ascii(&rcpt.reason)),
        };
        field(&mut out, "Diagnostic-Code", &diagnostic);
        if let Some(when) = rcpt.last_attempt {
            field(&mut out, "Last-Attempt-Date", &rfc5322_date(when));
        }
        if report.kind == Kind::Delay {
            if let Some(until) = report.will_retry_until {
                field(&mut out, "Will-Retry-Until", &rfc5322_date(until));
            }
        }
    }
    out
}

/// A MIME boundary from the token and host, made of RFC 2046 `bchars`, at
/// most 70 long, and absent from every part (a suffix is added until so).
pub(crate) fn boundary(token: &str, host: &str, parts: &[&[u8]]) -> String {
    let base: String = format!("{token}/{host}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "'()+_,-./:=?".contains(c) {
                c
            } else {
                '.'
            }
        })
        .take(MAX_BOUNDARY - 8)
        .collect();
    let mut candidate = base.clone();
    let mut n = 0u32;
    let occurs = |part: &[u8], what: &[u8]| part.windows(what.len()).any(|w| w == what);
    while parts.iter().any(|p| occurs(p, candidate.as_bytes())) {
        n += 1;
        candidate = format!("{base}={n}");
    }
    candidate
}

/// The Message-ID token: letters, digits, `.`, `-`, `_`; others become `_`;
/// never empty, at most 64 characters.
pub(crate) fn token(raw: &str) -> String {
    let token: String = raw
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let token = token.trim_matches('.');
    if token.is_empty() {
        "dsn".to_owned()
    } else {
        token.replace("..", "._")
    }
}

/// `rfc822; addr` for a printable ASCII address, else RFC 6533 §3
/// `utf-8; ` xtext with `\x{HEX}` for everything that is not a QCHAR.
fn address_field(address: &str) -> String {
    let is_qchar = |c: char| matches!(c, '\x21'..='\x2a' | '\x2c'..='\x3c' | '\x3e'..='\x5b' | '\x5d'..='\x7e');
    if address.chars().all(|c| c.is_ascii_graphic()) {
        return format!("rfc822; {address}");
    }
    let mut out = String::from("utf-8; ");
    for c in address.chars() {
        if is_qchar(c) {
            out.push(c);
        } else {
            let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
        }
    }
    out
}

/// An `Original-Recipient` value kept 7-bit: an ORCPT of RFC 6533's
/// `utf-8` type may hold UTF-8, written here as its `\x{HEX}` form (RFC
/// 6533 §3); control characters become spaces.
fn seven_bit_address(orcpt: &str) -> String {
    let mut out = String::with_capacity(orcpt.len());
    for c in orcpt.chars() {
        match c {
            c if c.is_control() => out.push(' '),
            c if c.is_ascii() => out.push(c),
            c => {
                let _ = write!(out, "\\x{{{:X}}}", u32::from(c));
            }
        }
    }
    out
}

/// `text` made 7-bit and one line: control characters become spaces,
/// other non-ASCII characters `?`.
pub(crate) fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            c if c.is_control() => ' ',
            c if c.is_ascii() => c,
            _ => '?',
        })
        .collect()
}

/// Appends `name: value` CRLF, folded at spaces near [`FOLD_AT`] columns;
/// a word too long for one line is split so no line passes [`MAX_LINE`]
/// (the fold then adds a space inside it, the lesser harm). `value` must be
/// ASCII without line breaks.
pub(crate) fn field(out: &mut String, name: &str, value: &str) {
    let first = format!("{name}: {value}");
    for (i, line) in wrap(&first, FOLD_AT, " ").iter().enumerate() {
        if i == 0 {
            out.push_str(line);
        } else {
            out.push_str("\r\n");
            out.push_str(line);
        }
    }
    out.push_str("\r\n");
}

/// Splits `text` into lines near `width`, breaking at spaces (dropped at
/// the break; runs of spaces collapse) and starting each later line with
/// `indent`; a word that alone would pass [`MAX_LINE`] is cut.
pub(crate) fn wrap(text: &str, width: usize, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut has_word = false;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if has_word && line.len() + 1 + word.len() > width {
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
            has_word = false;
        }
        if has_word {
            line.push(' ');
        }
        // Only a word longer than a whole line gets here with `line` holding
        // no more than the indent, so each cut takes something.
        let mut rest = word;
        while line.len() + rest.len() > MAX_LINE {
            let take = floor_char_boundary(rest, MAX_LINE.saturating_sub(line.len()).max(1));
            line.push_str(&rest[..take]);
            lines.push(std::mem::replace(&mut line, indent.to_owned()));
            rest = &rest[take..];
        }
        line.push_str(rest);
        has_word = true;
    }
    if has_word {
        lines.push(line);
    }
    lines
}

/// The largest char boundary of `s` at or below `at`, but at least one
/// character in (so a cut always makes progress).
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    if i == 0 {
        s.chars().next().map_or(s.len(), char::len_utf8)
    } else {
        i
    }
}

/// An RFC 5322 §3.3 date in UTC (`+0000`), clamped to 1970–9999: a time
/// read from a queue file may be anything.
pub(crate) fn rfc5322_date(when: SystemTime) -> String {
    const MAX_SECS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = when
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(MAX_SECS))
        .min(MAX_SECS);
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc2822()
}

/// "45 minutes", "4.0 hours", "5.0 days": Postfix's wording in warnings.
fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 3600 {
        let minutes = secs / 60;
        format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
    } else if secs < 24 * 3600 {
        format!("{:.1} hours", secs as f64 / 3600.0)
    } else {
        format!("{:.1} days", secs as f64 / 86_400.0)
    }
}

#[cfg(test)]
#[path = "dsn_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "dsn_notify_tests.rs"]
mod notify_tests;
