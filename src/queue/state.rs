//! Retry state of a queued message, kept in extra `X-Postman-*` fields of
//! its envelope header block (DESIGN.md "The queue on disk"). A file with
//! only `X-Postman-From`, `-Date` and `-To` is a message never tried: every
//! field here is optional. Values are unix seconds or one line of text, so
//! `postman queue` and a human with `head` can read them; the field syntax is
//! that of RFC 5322 §2.2, which [`render_envelopes`] writes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::envelope::{quote, Envelope, EnvelopeError};
use super::render::{render_envelopes, Block};
use super::statefile::{Tie, QUEUE_FILE_FIELD};
use crate::smtp::EnhancedCode;

/// Failed delivery attempts so far: a decimal count.
pub const ATTEMPTS: &str = "X-Postman-Attempts";
/// When the first attempt failed: unix seconds.
pub const FIRST_ATTEMPT: &str = "X-Postman-First-Attempt";
/// When the latest attempt failed: unix seconds.
pub const LAST_ATTEMPT: &str = "X-Postman-Last-Attempt";
/// Not to be tried before: unix seconds.
pub const NEXT_ATTEMPT: &str = "X-Postman-Next-Attempt";
/// Why the latest attempt failed: one line of text.
pub const LAST_ERROR: &str = "X-Postman-Last-Error";
/// When the delay-warning DSN was sent: unix seconds. Its presence means
/// "never send another".
pub const DELAY_WARNED: &str = "X-Postman-Delay-Warned";
/// The status of the latest attempt that found no server fit to take the
/// sender's REQUIRETLS mail (5.7.10, 5.7.30): the bounce at expiry gives
/// it, whatever the very last attempt met.
pub const REQUIRETLS_REFUSED: &str = "X-Postman-Requiretls-Refused";

/// Every field this module owns; [`RetryState::render_state`] replaces them
/// and keeps any other `X-Postman-*` extra as it was.
pub const STATE_FIELDS: [&str; 7] = [
    ATTEMPTS,
    FIRST_ATTEMPT,
    LAST_ATTEMPT,
    NEXT_ATTEMPT,
    LAST_ERROR,
    DELAY_WARNED,
    REQUIRETLS_REFUSED,
];

/// The longest `X-Postman-Last-Error` value kept, in bytes: the field line
/// stays under RFC 5322's 998 octets.
pub const MAX_ERROR_LEN: usize = 900;

/// What is known about earlier delivery attempts of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryState {
    /// Failed attempts so far (0: never tried).
    pub attempts: u32,
    /// When the first failed attempt ended.
    pub first_attempt: Option<SystemTime>,
    /// When the latest failed attempt ended.
    pub last_attempt: Option<SystemTime>,
    /// Not to be tried before this; `None`: as soon as possible.
    pub next_attempt: Option<SystemTime>,
    /// Why the latest attempt failed: one line, no control characters, at
    /// most [`MAX_ERROR_LEN`] bytes (see [`one_line`]).
    pub last_error: Option<String>,
    /// When the one delay-warning DSN was sent, if it was.
    pub delay_warned: Option<SystemTime>,
    /// The status of the latest attempt that found no server fit to take
    /// the sender's REQUIRETLS mail (5.7.10, 5.7.30,
    /// `X-Postman-Requiretls-Refused`): the bounce at expiry gives it.
    pub requiretls_refused: Option<EnhancedCode>,
}

/// A retry-state field whose value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} value {value} in the envelope header block: {reason}")]
pub struct StateError {
    /// The field, as this module spells it (e.g. `ATTEMPTS`).
    pub header: &'static str,
    /// The value, quoted.
    pub value: String,
    /// What was expected.
    pub reason: &'static str,
}

impl RetryState {
    /// Reads the retry fields among `envelope.extra` (names compared without
    /// regard to case). Missing fields leave the fresh defaults; a field
    /// given twice, or one whose value does not parse, is an error naming it.
    pub fn from_envelope(envelope: &Envelope) -> Result<RetryState, StateError> {
        let mut state = RetryState::default();
        let mut seen = [false; STATE_FIELDS.len()];
        for (name, value) in &envelope.extra {
            let Some(index) = STATE_FIELDS
                .iter()
                .position(|f| f.eq_ignore_ascii_case(name))
            else {
                continue;
            };
            let header = STATE_FIELDS[index];
            let bad = |reason| StateError {
                header,
                value: quote(value),
                reason,
            };
            if std::mem::replace(&mut seen[index], true) {
                return Err(bad("the field appears twice"));
            }
            let time = || parse_unix(value).ok_or_else(|| bad(UNIX_EXPECTED));
            match header {
                ATTEMPTS => {
                    state.attempts = parse_digits(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad("expected a count of attempts (0-4294967295)"))?;
                }
                FIRST_ATTEMPT => state.first_attempt = Some(time()?),
                LAST_ATTEMPT => state.last_attempt = Some(time()?),
                NEXT_ATTEMPT => state.next_attempt = Some(time()?),
                DELAY_WARNED => state.delay_warned = Some(time()?),
                REQUIRETLS_REFUSED => {
                    let code = value.parse::<EnhancedCode>();
                    state.requiretls_refused =
                        Some(code.map_err(|_| bad("expected an enhanced status code"))?);
                }
                _ => {
                    let line = one_line(value);
                    state.last_error = (!line.is_empty()).then_some(line);
                }
            }
        }
        Ok(state)
    }

    /// Records one more failed attempt that ended at `now` because of
    /// `error`: counts it, sets the first and last attempt times, keeps the
    /// error as [`one_line`], and clears `next_attempt` (the caller sets it
    /// from the schedule, `retry::Schedule::verdict`).
    pub fn record_attempt(&mut self, now: SystemTime, error: &str) {
        self.attempts = self.attempts.saturating_add(1);
        self.first_attempt.get_or_insert(now);
        self.last_attempt = Some(now);
        self.next_attempt = None;
        let line = one_line(error);
        self.last_error = (!line.is_empty()).then_some(line);
    }

    /// The state as envelope extras, in [`STATE_FIELDS`] order, leaving out
    /// what is unset (a fresh state gives none).
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut push = |name: &str, value: String| out.push((name.to_owned(), value));
        if self.attempts > 0 {
            push(ATTEMPTS, self.attempts.to_string());
        }
        let times = [
            (FIRST_ATTEMPT, self.first_attempt),
            (LAST_ATTEMPT, self.last_attempt),
            (NEXT_ATTEMPT, self.next_attempt),
        ];
        for (name, when) in times {
            if let Some(when) = when {
                push(name, unix_secs(when).to_string());
            }
        }
        if let Some(error) = &self.last_error {
            let line = one_line(error);
            if !line.is_empty() {
                push(LAST_ERROR, line);
            }
        }
        if let Some(when) = self.delay_warned {
            push(DELAY_WARNED, unix_secs(when).to_string());
        }
        if let Some(code) = self.requiretls_refused {
            push(REQUIRETLS_REFUSED, code.to_string());
        }
        out
    }

    /// Renders the block of the state file of the message `envelope` (the
    /// envelope in force) tied to its queue file by `tie`: its sender,
    /// `recipients` (those still to deliver), `arrival`, the other
    /// `X-Postman-*` extras it carried, then this state and the
    /// `X-Postman-Queue-File` field. More than one block when the
    /// recipients do not fit in one ([`render_envelopes`]): the first is
    /// the message's, each other one the state of a new message with the
    /// same queue file.
    ///
    /// `arrival` is written even when the file had no `X-Postman-Date`: the
    /// caller then used the file's mtime. Pass `envelope.arrival` when it is
    /// set.
    pub fn render_state(
        &self,
        envelope: &Envelope,
        recipients: &[String],
        arrival: SystemTime,
        tie: Tie,
    ) -> Result<Vec<Block>, EnvelopeError> {
        let extra: Vec<(String, String)> = envelope
            .extra
            .iter()
            .filter(|(name, _)| {
                !STATE_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
                    && !name.eq_ignore_ascii_case(QUEUE_FILE_FIELD)
            })
            .cloned()
            .collect();
        let mut fields = self.fields();
        fields.push((QUEUE_FILE_FIELD.to_owned(), tie.field_value()));
        render_envelopes(
            &envelope.sender,
            recipients,
            &envelope.rcpt_params,
            Some(arrival),
            &extra,
            &fields,
        )
    }
}

const UNIX_EXPECTED: &str = "expected unix seconds";

/// `text` as one line for a header field or a log: every control character
/// (CR, LF, TAB, …) becomes a space, runs of spaces collapse, the ends are
/// trimmed, and the result is cut at a character boundary to at most
/// [`MAX_ERROR_LEN`] bytes.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_LEN));
    // Trimmed as the envelope parser trims a value (Unicode white space),
    // so what is written reads back the same.
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if (out.is_empty() && c.is_whitespace()) || (c == ' ' && out.ends_with(' ')) {
            continue;
        }
        if out.len() + c.len_utf8() > MAX_ERROR_LEN {
            break;
        }
        out.push(c);
    }
    let end = out.trim_end().len();
    out.truncate(end);
    out
}

/// Seconds since the epoch; times before it count as 0 (a clock that wrong
/// has bigger problems, and the value must stay parseable).
pub(crate) fn unix_secs(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn parse_digits(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_unix(value: &str) -> Option<SystemTime> {
    UNIX_EPOCH.checked_add(Duration::from_secs(parse_digits(value)?))
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
