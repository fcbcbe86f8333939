//! Writing the envelope header block (DESIGN.md "The queue on disk"): what
//! `postman enqueue`, a bounce and every retry-state rewrite put in front of
//! a message or in its state file, in the form [`parse_envelope`] reads
//! back. Field syntax and folding follow RFC 5322 §2.1.1 and §2.2.3; a
//! recipient's DSN parameters (RFC 3461 §4.1, §4.2) are written after its
//! address as on an RCPT command ([`super::params`]).
//!
//! [`parse_envelope`]: super::envelope::parse_envelope

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use super::envelope::{
    check_mailbox, is_postman_field_name, quote, EnvelopeError, FROM, MAX_ENVELOPE_BLOCK,
    MAX_WRITTEN_BLOCK, RETRY_HEADROOM, TO,
};
use super::params::{message_field, MsgParams, RcptParams};

/// The longest line postman folds a recipient list at, CRLF not counted
/// (RFC 5322 §2.1.1).
const MAX_LINE: usize = 998;

/// Renders an envelope header block, empty line included, that
/// [`parse_envelope`](super::parse_envelope) reads back: CRLF line ends,
/// the sender, the arrival as unix seconds, the recipients (see
/// [`render_envelopes`] for their form, and `params` for theirs), then the
/// `extra` fields. Refuses addresses, parameters and fields the parser
/// would refuse, so no field can smuggle a line break, and a block larger
/// than [`MAX_ENVELOPE_BLOCK`], which no reader would take back.
pub fn render_envelope(
    sender: &str,
    recipients: &[String],
    params: &BTreeMap<String, RcptParams>,
    arrival: Option<SystemTime>,
    extra: &[(String, String)],
) -> Result<Vec<u8>, EnvelopeError> {
    let envelope = Parts {
        sender,
        recipients,
        params,
        arrival,
        extra,
    };
    let mut blocks = render_split(&envelope, &[], MAX_ENVELOPE_BLOCK)?;
    match blocks.len() {
        1 => Ok(blocks.remove(0).bytes),
        _ => Err(EnvelopeError::WouldBeTooLarge {
            size: blocks.iter().map(|b| b.bytes.len()).sum(),
            limit: MAX_ENVELOPE_BLOCK,
        }),
    }
}

/// Renders the envelope blocks of a message to `recipients`, split so that
/// each block without the `retry` fields stays within [`MAX_WRITTEN_BLOCK`]
/// and with them within [`MAX_ENVELOPE_BLOCK`]: one block when they fit,
/// else one per share of the recipients, in order, each with the same
/// sender, arrival and fields. Each block becomes a message of its own.
///
/// Recipients keep their order. One with DSN parameters in `params` (keyed
/// by the recipient as given) gets a field of its own, `X-Postman-To:
/// <a@d.test> NOTIFY=NEVER`, never folded (at most about 800 octets for
/// an `rfc822` ORCPT); each run of the others goes bare (`a@d.test`, no
/// angle brackets) in one field, separated by commas alone, folded (CRLF
/// and one space) before a line would pass RFC 5322's 998 octets. No
/// receiving server spends fewer bytes on an address, and a subset of the
/// recipients has no more runs than the whole, so the pending part of a
/// block read back never needs more room than the whole did, folds and
/// the retry fields aside. `retry` (the fields of `RetryState`, written
/// last) must fit in [`RETRY_HEADROOM`].
pub fn render_envelopes(
    sender: &str,
    recipients: &[String],
    params: &BTreeMap<String, RcptParams>,
    arrival: Option<SystemTime>,
    extra: &[(String, String)],
    retry: &[(String, String)],
) -> Result<Vec<Block>, EnvelopeError> {
    let envelope = Parts {
        sender,
        recipients,
        params,
        arrival,
        extra,
    };
    render_split(&envelope, retry, MAX_WRITTEN_BLOCK)
}

/// The room to set aside for the state file of a message whose envelope
/// block in force is `block_len` bytes: enough for any share of its
/// recipients with the retry fields. Postman's own blocks only shrink as
/// recipients go, but another program's may be denser than what postman
/// writes: LF line ends, no space after the colon, a sender without angle
/// brackets. That is two octets on a line, whose shortest
/// (`X-Postman-To:a@b` and its LF) is 17 octets: one eighth covers it, and
/// the folds of a long list with it. The constant covers the sender's
/// brackets and the `X-Postman-Date` a state file always has.
pub fn room_for_state(block_len: u64) -> u64 {
    block_len + RETRY_HEADROOM as u64 + block_len / 8 + 64
}

/// One envelope block of [`render_envelopes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block, empty line included.
    pub bytes: Vec<u8>,
    /// Which of the recipients it names (indexes into the list given).
    pub recipients: Range<usize>,
}

/// What goes in every block but the retry fields.
struct Parts<'a> {
    sender: &'a str,
    recipients: &'a [String],
    params: &'a BTreeMap<String, RcptParams>,
    arrival: Option<SystemTime>,
    extra: &'a [(String, String)],
}

const TO_PREFIX: &str = "X-Postman-To: ";

/// A bare list `X-Postman-To` field being built, folded as it grows.
struct ToField {
    text: String,
    line_len: usize,
    count: usize,
}

impl ToField {
    fn new() -> ToField {
        ToField {
            text: TO_PREFIX.to_owned(),
            line_len: TO_PREFIX.len(),
            count: 0,
        }
    }

    /// The bytes `item` would add.
    fn cost(&self, item: &str) -> usize {
        if self.count == 0 {
            item.len()
        } else if self.line_len + 1 + item.len() > MAX_LINE {
            ",\r\n ".len() + item.len()
        } else {
            1 + item.len()
        }
    }

    fn push(&mut self, item: &str) {
        if self.count == 0 {
            self.line_len += item.len();
        } else if self.line_len + 1 + item.len() > MAX_LINE {
            self.text.push_str(",\r\n ");
            self.line_len = 1 + item.len();
        } else {
            self.text.push(',');
            self.line_len += 1 + item.len();
        }
        self.text.push_str(item);
        self.count += 1;
    }

    /// The field with its CRLF: what it adds to the block.
    fn len(&self) -> usize {
        self.text.len() + 2
    }
}

/// The `X-Postman-To` fields of one block being built: those finished,
/// then the bare list still open.
struct ToFields {
    done: String,
    list: ToField,
    count: usize,
}

impl ToFields {
    fn new() -> ToFields {
        ToFields {
            done: String::new(),
            list: ToField::new(),
            count: 0,
        }
    }

    /// The bytes the fields take, CRLFs included.
    fn len(&self) -> usize {
        self.done.len()
            + if self.list.count > 0 {
                self.list.len()
            } else {
                0
            }
    }

    /// The bytes `rcpt` would add, with its parameters' text if it has any.
    fn cost(&self, rcpt: &str, params: Option<&str>) -> usize {
        match params {
            // `X-Postman-To: <rcpt> params` and CRLF.
            Some(params) => TO_PREFIX.len() + rcpt.len() + 3 + params.len() + 2,
            None if self.list.count == 0 => TO_PREFIX.len() + rcpt.len() + 2,
            None => self.list.cost(rcpt),
        }
    }

    fn push(&mut self, rcpt: &str, params: Option<&str>) {
        match params {
            Some(params) => {
                self.close_list();
                for part in [TO_PREFIX, "<", rcpt, "> ", params, "\r\n"] {
                    self.done.push_str(part);
                }
            }
            None => self.list.push(rcpt),
        }
        self.count += 1;
    }

    fn close_list(&mut self) {
        if self.list.count > 0 {
            let list = std::mem::replace(&mut self.list, ToField::new());
            self.done.push_str(&list.text);
            self.done.push_str("\r\n");
        }
    }

    fn finish(mut self) -> String {
        self.close_list();
        self.done
    }
}

fn render_split(
    parts: &Parts<'_>,
    retry: &[(String, String)],
    limit: usize,
) -> Result<Vec<Block>, EnvelopeError> {
    let Parts {
        sender,
        recipients,
        params,
        arrival,
        extra,
    } = *parts;
    if !sender.is_empty() {
        check_mailbox(sender, FROM, 1)?;
    }
    let mut head = format!("X-Postman-From: <{sender}>\r\n");
    if let Some(when) = arrival {
        let secs = when
            .duration_since(UNIX_EPOCH)
            .map_err(|_| EnvelopeError::BadDate {
                line: 2,
                text: quote(&format!("{when:?}")),
            })?;
        head.push_str(&format!("X-Postman-Date: {}\r\n", secs.as_secs()));
    }
    if recipients.is_empty() {
        return Err(EnvelopeError::MissingRecipients);
    }
    // Line numbers as the parser would count them in the first block.
    let to_line = 1 + usize::from(arrival.is_some()) + 1;
    let tail = render_fields(extra, to_line + 1)?;
    let retry = render_fields(retry, to_line + 1 + extra.len())?;
    if retry.len() > RETRY_HEADROOM {
        return Err(EnvelopeError::WouldBeTooLarge {
            size: retry.len(),
            limit: RETRY_HEADROOM,
        });
    }
    // Everything but the recipients, the retry fields and the empty line
    // counts towards `limit`; the retry fields have their own room.
    let fixed = head.len() + tail.len() + 2;
    let mut fields = Vec::new();
    let mut to = ToFields::new();
    let mut start = 0;
    for (i, rcpt) in recipients.iter().enumerate() {
        if rcpt.is_empty() {
            return Err(EnvelopeError::EmptyRecipient {
                line: to_line,
                text: quote(rcpt),
            });
        }
        check_mailbox(rcpt, TO, to_line)?;
        let with = params_text(params.get(rcpt), to_line)?;
        let with = with.as_deref();
        if to.count > 0 && fixed + to.len() + to.cost(rcpt, with) > limit {
            fields.push((std::mem::replace(&mut to, ToFields::new()), start..i));
            start = i;
        }
        let size = fixed + to.len() + to.cost(rcpt, with);
        if size > limit {
            return Err(EnvelopeError::WouldBeTooLarge { size, limit });
        }
        to.push(rcpt, with);
    }
    fields.push((to, start..recipients.len()));
    Ok(fields
        .into_iter()
        .map(|(to, recipients)| {
            let to = to.finish();
            let mut out = String::with_capacity(fixed + to.len() + retry.len());
            out.push_str(&head);
            out.push_str(&to);
            out.push_str(&tail);
            out.push_str(&retry);
            out.push_str("\r\n");
            Block {
                bytes: out.into_bytes(),
                recipients,
            }
        })
        .collect())
}

/// A recipient's parameters as written after its address, `None` when it
/// has none. Refused unless they read back as given: their fields are
/// public, and an ORCPT holding a line break must not reach the file.
fn params_text(params: Option<&RcptParams>, line: usize) -> Result<Option<String>, EnvelopeError> {
    let Some(params) = params.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let text = params.to_string();
    let bad = |reason: String| EnvelopeError::BadParam {
        header: TO,
        line,
        text: quote(&text),
        reason,
    };
    match RcptParams::parse(&text) {
        Ok(back) if back == *params => Ok(Some(text)),
        Ok(_) => Err(bad("the parameters would not read back as given".to_owned())),
        Err(reason) => Err(bad(reason)),
    }
}

/// `extra` as field lines; `line` is the first one's number, for errors.
/// The message parameters among them (`X-Postman-Ret` and the rest) must
/// hold values the parser takes, each once.
fn render_fields(extra: &[(String, String)], line: usize) -> Result<String, EnvelopeError> {
    let mut out = String::new();
    let mut seen: Vec<(&'static str, usize)> = Vec::new();
    for (i, (name, value)) in extra.iter().enumerate() {
        let rendered = format!("{name}: {value}");
        let ok_name = is_postman_field_name(name)
            && !matches!(
                name.to_ascii_lowercase().as_str(),
                "x-postman-from" | "x-postman-to" | "x-postman-date"
            );
        if !ok_name || value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(EnvelopeError::NotEnvelopeHeader {
                line: line + i,
                text: quote(&rendered),
            });
        }
        if let Some(header) = message_field(name) {
            if let Some(&(_, first_line)) = seen.iter().find(|(h, _)| *h == header) {
                return Err(EnvelopeError::DuplicateParam {
                    header,
                    first_line,
                    line: line + i,
                });
            }
            seen.push((header, line + i));
            MsgParams::default()
                .set(header, value.trim())
                .map_err(|reason| EnvelopeError::BadParam {
                    header,
                    line: line + i,
                    text: quote(value),
                    reason: reason.to_owned(),
                })?;
        }
        out.push_str(&rendered);
        out.push_str("\r\n");
    }
    Ok(out)
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
