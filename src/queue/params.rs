//! The sender's envelope wishes a receiving server accepted and queued
//! with the message: RFC 3461 DSN parameters (`NOTIFY` and `ORCPT` per
//! recipient, `RET` and `ENVID` per message) and RFC 8689 `REQUIRETLS`.
//! In the queue file they are written as on the SMTP command line:
//!
//! ```text
//! X-Postman-Ret: HDRS
//! X-Postman-Envid: QQ314159
//! X-Postman-Requiretls: yes
//! X-Postman-To: <a@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@d.test
//! X-Postman-To: <b@d.test> NOTIFY=NEVER
//! X-Postman-To: c@d.test, d@d.test
//! ```
//!
//! An `X-Postman-To` field whose `<address>` is followed by parameters
//! names that one recipient only (NOTIFY's list and an xtext ORCPT may hold
//! commas). Keywords are case-insensitive; an unknown one, a repeated one
//! or a malformed value is an error, so that a mistyped wish is never
//! silently dropped.

use super::xtext;

/// The longest ENVID, in characters (RFC 3461 §4.4).
pub const MAX_ENVID: usize = 100;
/// The longest ORCPT value, type included (RFC 3461 §4.2).
pub const MAX_ORCPT: usize = 500;

/// `X-Postman-Ret`.
pub const RET_FIELD: &str = "X-Postman-Ret";
/// `X-Postman-Envid`.
pub const ENVID_FIELD: &str = "X-Postman-Envid";
/// `X-Postman-Requiretls`.
pub const REQUIRETLS_FIELD: &str = "X-Postman-Requiretls";

/// NOTIFY (RFC 3461 §4.1): which notices the sender wants for a
/// recipient. All false is `NEVER`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Notify {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: Notify = Notify {
        success: false,
        failure: false,
        delay: false,
    };

    /// Reads `NEVER` or a comma list of `SUCCESS`, `FAILURE`, `DELAY`.
    pub fn parse(value: &str) -> Result<Notify, &'static str> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Ok(Notify::NEVER);
        }
        let mut notify = Notify::NEVER;
        for word in value.split(',') {
            let flag = if word.eq_ignore_ascii_case("SUCCESS") {
                &mut notify.success
            } else if word.eq_ignore_ascii_case("FAILURE") {
                &mut notify.failure
            } else if word.eq_ignore_ascii_case("DELAY") {
                &mut notify.delay
            } else if word.eq_ignore_ascii_case("NEVER") {
                return Err("NEVER may not be combined with other values");
            } else {
                return Err("NOTIFY takes NEVER or a list of SUCCESS, FAILURE, DELAY");
            };
            if *flag {
                return Err("a NOTIFY value is named twice");
            }
            *flag = true;
        }
        Ok(notify)
    }

    /// Whether this is `NEVER`.
    pub fn is_never(&self) -> bool {
        *self == Notify::NEVER
    }
}

impl std::fmt::Display for Notify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_never() {
            return f.write_str("NEVER");
        }
        let words = [
            (self.success, "SUCCESS"),
            (self.failure, "FAILURE"),
            (self.delay, "DELAY"),
        ];
        let mut first = true;
        for (_, word) in words.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(",")?;
            }
            f.write_str(word)?;
            first = false;
        }
        Ok(())
    }
}

/// ORCPT (RFC 3461 §4.2): the recipient as the sender first gave it, an
/// address type (`rfc822`, or `utf-8` of RFC 6533) and the address, kept
/// exactly as queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type as written (`rfc822`).
    pub addr_type: String,
    /// The address, encoded as written (xtext for `rfc822`).
    pub address: String,
}

impl Orcpt {
    /// Reads `<type>;<address>`.
    pub fn parse(value: &str) -> Result<Orcpt, &'static str> {
        if value.chars().count() > MAX_ORCPT {
            return Err("ORCPT is longer than 500 characters");
        }
        let (addr_type, address) = value
            .split_once(';')
            .ok_or("ORCPT must be <address type>;<address>")?;
        let atom = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if addr_type.is_empty() || !addr_type.chars().all(atom) {
            return Err("ORCPT's address type must be an atom such as rfc822");
        }
        if address.is_empty() {
            return Err("ORCPT has no address");
        }
        if addr_type.eq_ignore_ascii_case("rfc822") {
            if !xtext::is_valid(address) {
                return Err("ORCPT's rfc822 address is not xtext (RFC 3461 §4)");
            }
        } else if address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '=')
        {
            // RFC 6533's utf-8 forms: printable, UTF-8 allowed, no space.
            return Err("ORCPT's address holds a space, a control character or '='");
        }
        Ok(Orcpt {
            addr_type: addr_type.to_owned(),
            address: address.to_owned(),
        })
    }

    /// The address for a report's `Original-Recipient` field (RFC 3464
    /// §2.3.1): an `rfc822` address decoded when that gives printable
    /// ASCII, otherwise as queued.
    pub fn for_report(&self) -> String {
        if self.addr_type.eq_ignore_ascii_case("rfc822") {
            format!("{};{}", self.addr_type, xtext::printable(&self.address))
        } else {
            self.to_string()
        }
    }
}

impl std::fmt::Display for Orcpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{};{}", self.addr_type, self.address)
    }
}

/// A recipient's DSN parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    pub orcpt: Option<Orcpt>,
}

impl RcptParams {
    /// Reads the parameters after a recipient's address, separated by
    /// spaces: `NOTIFY=… ORCPT=…`.
    pub fn parse(text: &str) -> Result<RcptParams, String> {
        let mut params = RcptParams::default();
        for word in text.split_ascii_whitespace() {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not KEYWORD=value"))?;
            if key.eq_ignore_ascii_case("NOTIFY") {
                if params.notify.is_some() {
                    return Err("NOTIFY is given twice".into());
                }
                params.notify = Some(Notify::parse(value)?);
            } else if key.eq_ignore_ascii_case("ORCPT") {
                if params.orcpt.is_some() {
                    return Err("ORCPT is given twice".into());
                }
                params.orcpt = Some(Orcpt::parse(value)?);
            } else {
                return Err(format!(
                    "unknown recipient parameter {key:?} (NOTIFY and ORCPT are known)"
                ));
            }
        }
        Ok(params)
    }

    /// No parameter at all.
    pub fn is_empty(&self) -> bool {
        self.notify.is_none() && self.orcpt.is_none()
    }

    /// Whether the sender wants a failure notice (NOTIFY absent means the
    /// MTA's default, which is FAILURE: RFC 3461 §4.1).
    pub fn wants_failure(params: Option<&RcptParams>) -> bool {
        params.and_then(|p| p.notify).is_none_or(|n| n.failure)
    }

    /// Whether the sender wants delay notices (absent: postman's default,
    /// which sends them).
    pub fn wants_delay(params: Option<&RcptParams>) -> bool {
        params.and_then(|p| p.notify).is_none_or(|n| n.delay)
    }

    /// Whether the sender asked for a success notice.
    pub fn wants_success(params: Option<&RcptParams>) -> bool {
        params.and_then(|p| p.notify).is_some_and(|n| n.success)
    }
}

impl std::fmt::Display for RcptParams {
    /// As on RCPT and in the queue: `NOTIFY=… ORCPT=…`, those present.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        if let Some(notify) = &self.notify {
            write!(f, "NOTIFY={notify}")?;
            sep = " ";
        }
        if let Some(orcpt) = &self.orcpt {
            write!(f, "{sep}ORCPT={orcpt}")?;
        }
        Ok(())
    }
}

/// RET (RFC 3461 §4.3): what a failure notice returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    Full,
    Hdrs,
}

impl Ret {
    pub fn parse(value: &str) -> Result<Ret, &'static str> {
        if value.eq_ignore_ascii_case("FULL") {
            Ok(Ret::Full)
        } else if value.eq_ignore_ascii_case("HDRS") {
            Ok(Ret::Hdrs)
        } else {
            Err("RET takes FULL or HDRS")
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Hdrs => "HDRS",
        }
    }
}

/// The message's parameters: RET, ENVID (RFC 3461) and REQUIRETLS (RFC
/// 8689).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MsgParams {
    pub ret: Option<Ret>,
    /// The envelope id, xtext as queued.
    pub envid: Option<String>,
    /// Every hop must use verified TLS and pass the wish on.
    pub requiretls: bool,
}

/// Which message parameter a field is, if any.
pub(super) fn message_field(name: &str) -> Option<&'static str> {
    [RET_FIELD, ENVID_FIELD, REQUIRETLS_FIELD]
        .into_iter()
        .find(|field| name.eq_ignore_ascii_case(field))
}

impl MsgParams {
    /// Takes the value of `field` (one of [`message_field`]'s) into these
    /// parameters; `Err` says what is wrong with it.
    pub(super) fn set(&mut self, field: &str, value: &str) -> Result<(), &'static str> {
        match field {
            RET_FIELD => self.ret = Some(Ret::parse(value)?),
            ENVID_FIELD => {
                if value.chars().count() > MAX_ENVID {
                    return Err("ENVID is longer than 100 characters");
                }
                if value.is_empty() || !xtext::is_valid(value) {
                    return Err("ENVID is not xtext (RFC 3461 §4)");
                }
                self.envid = Some(value.to_owned());
            }
            REQUIRETLS_FIELD => {
                if !value.eq_ignore_ascii_case("yes") {
                    return Err("X-Postman-Requiretls takes yes (leave the field out for no)");
                }
                self.requiretls = true;
            }
            _ => return Err("not a message parameter"),
        }
        Ok(())
    }

    /// The fields that write these parameters back, in the queue's order.
    pub fn fields(&self) -> Vec<(String, String)> {
        let mut fields = Vec::new();
        if let Some(ret) = self.ret {
            fields.push((RET_FIELD.to_owned(), ret.as_str().to_owned()));
        }
        if let Some(envid) = &self.envid {
            fields.push((ENVID_FIELD.to_owned(), envid.clone()));
        }
        if self.requiretls {
            fields.push((REQUIRETLS_FIELD.to_owned(), "yes".to_owned()));
        }
        fields
    }

    /// The ENVID of plain `text` as typed by a person (`postman enqueue
    /// --envid`), xtext-encoded; `Err` says why it cannot be one.
    pub fn envid_from_text(text: &str) -> Result<String, &'static str> {
        if text.is_empty() {
            return Err("the envelope id is empty");
        }
        let encoded = xtext::encode(text.as_bytes());
        if encoded.chars().count() > MAX_ENVID {
            return Err(
                "the envelope id is longer than 100 characters once xtext-encoded (RFC 3461 §4.4)",
            );
        }
        Ok(encoded)
    }

    /// The ENVID for a human or a report (see [`xtext::printable`]).
    pub fn envid_printable(&self) -> Option<String> {
        self.envid.as_deref().map(xtext::printable)
    }
}

/// Splits an `X-Postman-To` value that names one recipient with
/// parameters: `<address>` then whitespace then the parameters. `None`
/// when the value is a plain list.
pub(super) fn split_recipient_with_params(value: &str) -> Option<(&str, &str)> {
    let value = value.trim();
    if !value.starts_with('<') {
        return None;
    }
    let (mut quoted, mut escaped) = (false, false);
    let close = value.char_indices().find_map(|(i, c)| {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
        None
    })?;
    let (address, rest) = value.split_at(close + 1);
    if !rest.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let rest = rest.trim();
    // A comma or another address: a list (a missing comma is its error).
    if rest.is_empty() || rest.starts_with([',', '<']) {
        return None;
    }
    Some((address, rest))
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;
