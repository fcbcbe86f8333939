//! The envelope header block at the head of every queued file (DESIGN.md
//! "The queue on disk"): `X-Postman-From`, `X-Postman-Date`, `X-Postman-To`,
//! then an empty line. Field syntax and unfolding follow RFC 5322 §2.2 and
//! §2.2.3; dates are RFC 5322 §3.3 date-times or unix seconds; addresses are
//! the RFC 5321 §4.1.2 `Mailbox` form, with or without angle brackets.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::collections::{BTreeMap, HashMap, HashSet};

use super::mailbox::{domain_key, mailbox_problem, split_list, without_duplicates};
use super::params::{message_field, split_recipient_with_params, MsgParams, RcptParams};

/// The largest envelope header block accepted, empty line included. A file
/// with no empty line in its first MiB is not a queue file. Readers and
/// writers share it: postman never writes a block it would refuse to read
/// (see [`MAX_WRITTEN_BLOCK`]).
pub const MAX_ENVELOPE_BLOCK: usize = 1 << 20;

/// Room every block postman writes keeps for the retry fields a later
/// attempt adds (`X-Postman-Attempts` and the rest, at most about 1.2 KB
/// with a 900-byte last error): 4 KiB.
pub const RETRY_HEADROOM: usize = 4096;

/// The largest envelope block postman writes without its retry fields:
/// [`MAX_ENVELOPE_BLOCK`] less [`RETRY_HEADROOM`]. Recipients that do not
/// fit are split over several blocks, each a message of its own
/// ([`render_envelopes`](super::render_envelopes)).
pub const MAX_WRITTEN_BLOCK: usize = MAX_ENVELOPE_BLOCK - RETRY_HEADROOM;

/// How many characters of bad input an error quotes.
const QUOTE_MAX: usize = 80;

/// The envelope of one queued message, read from its header block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Envelope sender without angle brackets; "" is the null sender `<>`.
    pub sender: String,
    /// Recipients without angle brackets, in file order, exactly as written.
    pub recipients: Vec<String>,
    /// `X-Postman-Date`; `None` when absent (the caller uses the file mtime).
    pub arrival: Option<SystemTime>,
    /// Offset of the first byte of the message, just after the empty line.
    pub body_offset: u64,
    /// Other `X-Postman-*` fields (name as written, unfolded trimmed value),
    /// kept for retry state and written back as they are; the message
    /// parameters among them are also read into `params`.
    pub extra: Vec<(String, String)>,
    /// How many recipients were named again after their first mention (the
    /// same local part, the domain in any case) and left out of
    /// `recipients`: each recipient is sent once.
    pub duplicates: usize,
    /// RET, ENVID and REQUIRETLS, read from their fields (which stay in
    /// `extra`, so that every rewrite keeps them).
    pub params: MsgParams,
    /// The DSN parameters of the recipients that have any, by recipient
    /// as kept in `recipients` (a duplicate's go with it).
    pub rcpt_params: BTreeMap<String, RcptParams>,
}

impl Envelope {
    /// The DSN parameters of `recipient`, if it has any.
    pub fn recipient_params(&self, recipient: &str) -> Option<&RcptParams> {
        self.rcpt_params.get(recipient)
    }

    /// Checks that every recipient belongs to `folder`, the domain folder
    /// the file lies in (an A-label, lower-case): its domain, compared
    /// without regard to ASCII case and in A-label form, is the folder's.
    /// A recipient of another domain would be sent to the folder domain's
    /// servers (a receiving server's mistake, or a file moved by hand): the
    /// file is refused whole, naming it.
    pub fn check_folder(&self, folder: &str) -> Result<(), EnvelopeError> {
        match self
            .recipients
            .iter()
            .find(|rcpt| domain_key(rcpt).is_none_or(|domain| domain != folder))
        {
            Some(rcpt) => Err(EnvelopeError::ForeignRecipient {
                address: quote(rcpt),
                folder: quote(folder),
            }),
            None => Ok(()),
        }
    }
}

/// Why an envelope header block was refused. Line numbers count from 1 at
/// the start of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// No empty line within the first [`MAX_ENVELOPE_BLOCK`] bytes.
    #[error(
        "envelope header block is larger than 1 MiB (no empty line in the first {limit} bytes): \
         not a postman queue file"
    )]
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The input ended before the empty line that closes the block.
    #[error(
        "no empty line ends the envelope header block ({len} bytes read): \
         the file is truncated or not a postman queue file"
    )]
    Unterminated {
        /// How many bytes were available.
        len: usize,
    },
    /// A NUL byte inside the header block.
    #[error("NUL byte in the envelope header block on line {line}")]
    Nul {
        /// The line holding the NUL.
        line: usize,
    },
    /// A control character other than TAB in a header line (CR only as
    /// part of a line end): no writer could put it back, so a rewrite of
    /// the block would fail for ever.
    #[error(
        "control character {character} in the envelope header block on line {line}: {text} \
         (only TAB may appear inside a field)"
    )]
    Control {
        /// The line holding it.
        line: usize,
        /// The character, escaped.
        character: String,
        /// The line, quoted.
        text: String,
    },
    /// A header line that is not valid UTF-8.
    #[error("line {line} of the envelope header block is not valid UTF-8: {text}")]
    NotUtf8 {
        /// The offending line.
        line: usize,
        /// The line, lossily decoded and quoted.
        text: String,
    },
    /// A line before the empty line that is not an `X-Postman-` field.
    #[error(
        "line {line} is not an X-Postman- header: {text} \
         (the envelope block must end with an empty line before the message)"
    )]
    NotEnvelopeHeader {
        /// The offending line.
        line: usize,
        /// The line, quoted.
        text: String,
    },
    /// A folded continuation line with no field before it.
    #[error("line {line} is a continuation line with no header before it: {text}")]
    OrphanContinuation {
        /// The offending line.
        line: usize,
        /// The line, quoted.
        text: String,
    },
    /// No `X-Postman-From` field.
    #[error("no X-Postman-From header (use `X-Postman-From: <>` for the null sender)")]
    MissingSender,
    /// `X-Postman-From` given more than once.
    #[error("X-Postman-From appears twice (line {first_line}: {first}, line {line}: {second})")]
    DuplicateSender {
        /// Line of the first field.
        first_line: usize,
        /// Value of the first field, quoted.
        first: String,
        /// Line of the second field.
        line: usize,
        /// Value of the second field, quoted.
        second: String,
    },
    /// No `X-Postman-To` field.
    #[error("no X-Postman-To header")]
    MissingRecipients,
    /// An `X-Postman-To` field with nothing in it, or an empty list item.
    #[error("X-Postman-To on line {line} has an empty recipient: {text} (stray comma?)")]
    EmptyRecipient {
        /// Line of the field.
        line: usize,
        /// The whole field value, quoted.
        text: String,
    },
    /// An address that is not `local@domain`.
    #[error("invalid address {text} in {header} on line {line}: {reason}")]
    BadAddress {
        /// `X-Postman-From` or `X-Postman-To`.
        header: &'static str,
        /// Line of the field.
        line: usize,
        /// The address, quoted.
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `X-Postman-Date` given more than once.
    #[error("X-Postman-Date appears twice (lines {first_line} and {line})")]
    DuplicateDate {
        /// Line of the first field.
        first_line: usize,
        /// Line of the second field.
        line: usize,
    },
    /// A block to be written would be larger than the reader accepts (or
    /// the retry fields larger than their room): nothing is written.
    #[error(
        "the envelope block would be {size} bytes, over the {limit} bytes postman \
         can read back"
    )]
    WouldBeTooLarge {
        /// The size the block would have, in bytes.
        size: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A recipient whose domain is not the folder's the file lies in.
    #[error(
        "recipient {address} is not of the domain {folder} whose folder holds the file \
         (each domain's recipients go in that domain's folder)"
    )]
    ForeignRecipient {
        /// The recipient, quoted.
        address: String,
        /// The folder, quoted.
        folder: String,
    },
    /// A DSN or REQUIRETLS parameter that is malformed or unknown.
    #[error("bad parameter in {header} on line {line}: {reason}: {text}")]
    BadParam {
        /// The field, as postman spells it.
        header: &'static str,
        /// Line of the field.
        line: usize,
        /// The parameters or value, quoted.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A message parameter field given more than once.
    #[error("{header} appears twice (lines {first_line} and {line})")]
    DuplicateParam {
        /// The field, as postman spells it.
        header: &'static str,
        /// Line of the first field.
        first_line: usize,
        /// Line of the second field.
        line: usize,
    },
    /// An `X-Postman-Date` that is neither unix seconds nor an RFC 5322 date.
    #[error(
        "unparseable X-Postman-Date {text} on line {line}: expected unix seconds or an \
         RFC 5322 date such as \"Tue, 1 Jul 2003 10:52:37 +0200\""
    )]
    BadDate {
        /// Line of the field.
        line: usize,
        /// The value, quoted.
        text: String,
    },
}

/// Finds the end of the header block incrementally, so a reader can feed a
/// growing buffer without rescanning it.
#[derive(Debug, Default)]
pub(crate) struct BlockScan {
    line_start: usize,
    pos: usize,
}

impl BlockScan {
    /// Scans the bytes of `buf` not seen before; returns the body offset
    /// (the first byte after the empty line) once the empty line is seen.
    /// `buf` must only ever grow between calls.
    pub(crate) fn feed(&mut self, buf: &[u8]) -> Option<usize> {
        while let Some(rel) = buf.get(self.pos..)?.iter().position(|&b| b == b'\n') {
            let lf = self.pos + rel;
            let line = &buf[self.line_start..lf];
            if line.is_empty() || line == b"\r" {
                return Some(lf + 1);
            }
            self.line_start = lf + 1;
            self.pos = lf + 1;
        }
        self.pos = buf.len();
        None
    }
}

/// Parses the envelope header block at the start of `block` (a prefix of a
/// queued file holding at least the block and its empty line; anything after
/// the empty line is ignored).
pub fn parse_envelope(block: &[u8]) -> Result<Envelope, EnvelopeError> {
    let body_offset = match BlockScan::default().feed(block) {
        Some(end) if end <= MAX_ENVELOPE_BLOCK => end,
        Some(_) => return Err(too_large()),
        None if block.len() >= MAX_ENVELOPE_BLOCK => return Err(too_large()),
        None => return Err(EnvelopeError::Unterminated { len: block.len() }),
    };
    let head = &block[..body_offset];
    if let Some(nul) = head.iter().position(|&b| b == 0) {
        let line = 1 + head[..nul].iter().filter(|&&b| b == b'\n').count();
        return Err(EnvelopeError::Nul { line });
    }

    let fields = unfold(head)?;
    let mut sender: Option<(usize, &str, String)> = None; // (line, raw, address)
    let mut recipients = Vec::new();
    let mut saw_to = false;
    let mut date: Option<(usize, SystemTime)> = None;
    let mut extra = Vec::new();
    let mut params = MsgParams::default();
    let mut param_lines: Vec<(&'static str, usize)> = Vec::new();
    // Indexes into `recipients` of those given with parameters.
    let mut with_params: Vec<(usize, RcptParams)> = Vec::new();
    for field in &fields {
        let value = field.value.trim();
        let name = ["x-postman-from", "x-postman-to", "x-postman-date"]
            .into_iter()
            .find(|known| field.name.eq_ignore_ascii_case(known));
        match name.unwrap_or_default() {
            "x-postman-from" => {
                if let Some((first_line, first, _)) = &sender {
                    return Err(EnvelopeError::DuplicateSender {
                        first_line: *first_line,
                        first: quote(first),
                        line: field.line,
                        second: quote(value),
                    });
                }
                let address = parse_address(value, FROM, field.line)?;
                sender = Some((field.line, value, address));
            }
            "x-postman-to" => {
                saw_to = true;
                if let Some((address, rest)) = split_recipient_with_params(value) {
                    let address = parse_address(address, TO, field.line)?;
                    let rcpt =
                        RcptParams::parse(rest).map_err(|reason| EnvelopeError::BadParam {
                            header: TO,
                            line: field.line,
                            text: quote(rest),
                            reason,
                        })?;
                    with_params.push((recipients.len(), rcpt));
                    recipients.push(address);
                    continue;
                }
                for item in split_list(value) {
                    if item.trim().is_empty() {
                        return Err(EnvelopeError::EmptyRecipient {
                            line: field.line,
                            text: quote(value),
                        });
                    }
                    recipients.push(parse_address(item, TO, field.line)?);
                }
            }
            "x-postman-date" => {
                if let Some((first_line, _)) = date {
                    return Err(EnvelopeError::DuplicateDate {
                        first_line,
                        line: field.line,
                    });
                }
                let when = parse_date(value).ok_or_else(|| EnvelopeError::BadDate {
                    line: field.line,
                    text: quote(value),
                })?;
                date = Some((field.line, when));
            }
            _ => {
                if let Some(header) = message_field(field.name) {
                    if let Some((_, first_line)) = param_lines.iter().find(|(h, _)| *h == header) {
                        return Err(EnvelopeError::DuplicateParam {
                            header,
                            first_line: *first_line,
                            line: field.line,
                        });
                    }
                    params
                        .set(header, value)
                        .map_err(|reason| EnvelopeError::BadParam {
                            header,
                            line: field.line,
                            text: quote(value),
                            reason: reason.to_owned(),
                        })?;
                    param_lines.push((header, field.line));
                }
                extra.push((field.name.to_owned(), value.to_owned()));
            }
        }
    }
    let (_, _, sender) = sender.ok_or(EnvelopeError::MissingSender)?;
    if !saw_to {
        return Err(EnvelopeError::MissingRecipients);
    }
    // A recipient's parameters go with its first mention, the one kept.
    // Looked up by hash: a list may have tens of thousands of them.
    let mut rcpt_params = BTreeMap::new();
    if !with_params.is_empty() {
        let mut first: HashMap<&str, usize> = HashMap::with_capacity(recipients.len());
        for (i, r) in recipients.iter().enumerate() {
            first.entry(r.as_str()).or_insert(i);
        }
        for (i, rcpt) in with_params {
            let address = &recipients[i];
            if first.get(address.as_str()) == Some(&i) && !rcpt.is_empty() {
                rcpt_params.insert(address.clone(), rcpt);
            }
        }
    }
    let (recipients, duplicates) = without_duplicates(recipients);
    if !rcpt_params.is_empty() {
        let kept: HashSet<&str> = recipients.iter().map(String::as_str).collect();
        rcpt_params.retain(|address, _| kept.contains(address.as_str()));
    }
    Ok(Envelope {
        sender,
        recipients,
        arrival: date.map(|(_, when)| when),
        body_offset: body_offset as u64,
        extra,
        duplicates,
        params,
        rcpt_params,
    })
}

pub(super) const FROM: &str = "X-Postman-From";
pub(super) const TO: &str = "X-Postman-To";

fn too_large() -> EnvelopeError {
    EnvelopeError::TooLarge {
        limit: MAX_ENVELOPE_BLOCK,
    }
}

/// One logical field after unfolding (RFC 5322 §2.2.3: the line break before
/// leading whitespace is removed, the whitespace kept).
/// One field of the envelope block, borrowed from it unless it was folded
/// over several lines (the scanner parses an envelope per queued file).
struct Field<'a> {
    line: usize,
    name: &'a str,
    value: Cow<'a, str>,
}

fn unfold(head: &[u8]) -> Result<Vec<Field<'_>>, EnvelopeError> {
    let mut fields: Vec<Field<'_>> = Vec::with_capacity(4);
    // `head` ends with the empty line; split_inclusive leaves it last.
    for (index, raw) in head.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.is_empty() {
            break;
        }
        let text = std::str::from_utf8(raw).map_err(|_| EnvelopeError::NotUtf8 {
            line,
            text: quote(&String::from_utf8_lossy(raw)),
        })?;
        if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\t') {
            return Err(EnvelopeError::Control {
                line,
                character: c.escape_debug().to_string(),
                text: quote(text),
            });
        }
        if text.starts_with([' ', '\t']) {
            match fields.last_mut() {
                Some(field) => field.value.to_mut().push_str(text),
                None => {
                    return Err(EnvelopeError::OrphanContinuation {
                        line,
                        text: quote(text),
                    })
                }
            }
            continue;
        }
        let not_ours = || EnvelopeError::NotEnvelopeHeader {
            line,
            text: quote(text),
        };
        let (name, value) = text.split_once(':').ok_or_else(not_ours)?;
        // RFC 5322 §4.5.3 (obsolete syntax) allows blanks before the colon.
        let name = name.trim_end_matches([' ', '\t']);
        if !is_postman_field_name(name) {
            return Err(not_ours());
        }
        fields.push(Field {
            line,
            name,
            value: Cow::Borrowed(value),
        });
    }
    Ok(fields)
}

/// `X-Postman-` followed by at least one RFC 5322 ftext character.
pub(super) fn is_postman_field_name(name: &str) -> bool {
    const PREFIX: &str = "x-postman-";
    name.len() > PREFIX.len()
        && name.is_char_boundary(PREFIX.len())
        && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Parses one address as written (with or without angle brackets) into the
/// bare `local@domain`, or "" for `<>` in `X-Postman-From`.
fn parse_address(raw: &str, header: &'static str, line: usize) -> Result<String, EnvelopeError> {
    let raw = raw.trim();
    let bad = |reason| EnvelopeError::BadAddress {
        header,
        line,
        text: quote(raw),
        reason,
    };
    let inner = match (raw.strip_prefix('<'), raw.ends_with('>')) {
        (Some(rest), true) => &rest[..rest.len() - 1],
        (None, false) => raw,
        _ => return Err(bad("unbalanced angle brackets")),
    };
    if inner.is_empty() {
        return match header {
            FROM if raw == "<>" => Ok(String::new()),
            FROM => Err(bad("empty sender (write <> for the null sender)")),
            _ => Err(bad("the null address <> cannot be a recipient")),
        };
    }
    match mailbox_problem(inner) {
        Some(reason) => Err(bad(reason)),
        None => Ok(inner.to_owned()),
    }
}

pub(super) fn check_mailbox(
    address: &str,
    header: &'static str,
    line: usize,
) -> Result<(), EnvelopeError> {
    match mailbox_problem(address) {
        None => Ok(()),
        Some(reason) => Err(EnvelopeError::BadAddress {
            header,
            line,
            text: quote(address),
            reason,
        }),
    }
}

/// Unix seconds, or an RFC 5322 §3.3 date-time (weekday optional, numeric or
/// obsolete alphabetic zones, trailing comments).
fn parse_date(value: &str) -> Option<SystemTime> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = value.parse().ok()?;
        return UNIX_EPOCH.checked_add(Duration::from_secs(secs));
    }
    let parsed = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let secs = parsed.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// Quotes bad input for an error message: escaped, at most [`QUOTE_MAX`]
/// characters, "…" when cut.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
