//! Checking the addresses an operator hands to `postman enqueue` against
//! the RFC 5321 §4.1.2 `Mailbox` grammar, with the RFC 5321 §4.5.3.1 size
//! limits: a local part that is a `Dot-string` (atoms of `atext`, RFC 5322
//! §3.2.3, plus UTF-8 as RFC 6531 §3.3 allows; postman then asks for
//! SMTPUTF8) or a `Quoted-string`, and a domain of LDH labels (RFC 5321
//! `sub-domain`) or an address literal (RFC 5321 §4.1.3). Stricter than the
//! envelope parser, which must read whatever a receiving server wrote: an
//! address typed by hand is checked before it enters the queue.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::queue::envelope::quote;

/// The longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// The longest domain (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// The longest mailbox: a `Path` is at most 256 octets with its angle
/// brackets (RFC 5321 §4.5.3.1.3).
pub const MAX_MAILBOX: usize = 254;

/// Which envelope address an [`AddressError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `--from`: the envelope sender.
    Sender,
    /// `--to`: an envelope recipient.
    Recipient,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Recipient => "recipient",
        }
    }
}

/// An address that is not an RFC 5321 mailbox postman can queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {} address {address}: {reason}", role.as_str())]
pub struct AddressError {
    /// Sender or recipient.
    pub role: Role,
    /// The address as given, quoted.
    pub address: String,
    /// What is wrong, and how to fix it where that is clear.
    pub reason: &'static str,
}

/// Checks an envelope sender given on the command line and returns it
/// without angle brackets: `""` or `<>` is the null sender (returned as
/// `""`), anything else must be a mailbox ([`check_mailbox`]).
pub fn parse_sender(given: &str) -> Result<String, AddressError> {
    let bare = strip_brackets(given, Role::Sender)?;
    if bare.is_empty() {
        return Ok(String::new());
    }
    check_mailbox(bare).map_err(|reason| error(Role::Sender, given, reason))?;
    Ok(bare.to_owned())
}

/// Checks an envelope recipient given on the command line and returns it
/// without angle brackets, its domain lower-cased (the queue folder is
/// named after it). Refuses the null address and address literals: the
/// queue is organised by destination domain.
pub fn parse_recipient(given: &str) -> Result<String, AddressError> {
    let bare = strip_brackets(given, Role::Recipient)?;
    if bare.is_empty() {
        return Err(error(
            Role::Recipient,
            given,
            "the null address <> cannot be a recipient",
        ));
    }
    check_mailbox(bare).map_err(|reason| error(Role::Recipient, given, reason))?;
    let (local, domain) = split(bare).ok_or_else(|| error(Role::Recipient, given, NO_AT))?;
    if domain.starts_with('[') {
        return Err(error(
            Role::Recipient,
            given,
            "address literals cannot be queued (the queue has one folder per destination domain)",
        ));
    }
    Ok(format!("{local}@{}", domain.to_ascii_lowercase()))
}

/// Why `address` (without angle brackets) is not an RFC 5321 `Mailbox`,
/// if it is not: `Local-part "@" ( Domain / address-literal )` within the
/// size limits.
pub fn check_mailbox(address: &str) -> Result<(), &'static str> {
    let (local, domain) = split(address).ok_or(NO_AT)?;
    if local.is_empty() {
        return Err("empty local part (expected local@domain)");
    }
    if domain.is_empty() {
        return Err("empty domain (expected local@domain)");
    }
    check_local_part(local)?;
    if domain.starts_with('[') {
        check_address_literal(domain)?;
    } else {
        check_domain(domain)?;
    }
    if address.len() > MAX_MAILBOX {
        return Err("longer than 254 octets (RFC 5321 §4.5.3.1.3)");
    }
    Ok(())
}

const NO_AT: &str = "no @ (expected local@domain)";

fn error(role: Role, given: &str, reason: &'static str) -> AddressError {
    AddressError {
        role,
        address: quote(given),
        reason,
    }
}

/// Removes one pair of angle brackets around the whole address, if any.
fn strip_brackets(given: &str, role: Role) -> Result<&str, AddressError> {
    match (given.strip_prefix('<'), given.ends_with('>')) {
        (Some(rest), true) => Ok(&rest[..rest.len() - 1]),
        (None, false) => Ok(given),
        _ => Err(error(role, given, "unbalanced angle brackets")),
    }
}

/// Splits at the `@` before the domain: the last one, as a domain or an
/// address literal never holds `@` (a quoted local part may).
fn split(address: &str) -> Option<(&str, &str)> {
    address.rsplit_once('@')
}

fn check_local_part(local: &str) -> Result<(), &'static str> {
    if local.len() > MAX_LOCAL_PART {
        return Err("local part longer than 64 octets (RFC 5321 §4.5.3.1.1)");
    }
    if let Some(rest) = local.strip_prefix('"') {
        return check_quoted(rest);
    }
    for atom in local.split('.') {
        if atom.is_empty() {
            return Err(
                "empty atom in the local part (a leading, trailing or double dot): quote it",
            );
        }
        if !atom.chars().all(is_atext) {
            return Err("local part holds a space or special character: quote it, as \"a b\"@d");
        }
    }
    Ok(())
}

/// The rest of a `Quoted-string` after its opening quote: `QcontentSMTP`
/// (printable ASCII except `"` and `\`, or a backslash before any
/// printable ASCII character, space included; UTF-8 as RFC 6531 allows),
/// then the closing quote, which must end the local part.
fn check_quoted(rest: &str) -> Result<(), &'static str> {
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(' '..='~') => {}
                None => return Err("unterminated quoted local part"),
                Some(_) => {
                    return Err(
                        "backslash in a quoted local part must escape a printable character",
                    )
                }
            },
            '"' if chars.as_str().is_empty() => return Ok(()),
            '"' => return Err("unescaped '\"' inside a quoted local part"),
            ' '..='~' => {}
            c if !c.is_ascii() && !c.is_control() => {}
            _ => return Err("control character in the quoted local part"),
        }
    }
    Err("unterminated quoted local part")
}

/// RFC 5322 §3.2.3 `atext`, with RFC 6531's UTF-8 characters.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

/// RFC 5321 `Domain`: dot-separated `sub-domain`s, each a letter or digit,
/// then letters, digits and hyphens, not ending with a hyphen.
fn check_domain(domain: &str) -> Result<(), &'static str> {
    if domain.len() > MAX_DOMAIN {
        return Err("domain longer than 255 octets (RFC 5321 §4.5.3.1.2)");
    }
    if !domain.is_ascii() {
        return Err("non-ASCII domain: write it in A-label form (xn--…)");
    }
    if domain.ends_with('.') {
        return Err("domain ends with a dot");
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label in the domain (a leading or double dot)");
        }
        if label.len() > 63 {
            return Err("domain label longer than 63 octets");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("domain holds a character other than letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("domain label starts or ends with '-'");
        }
    }
    Ok(())
}

/// RFC 5321 §4.1.3: `[1.2.3.4]`, `[IPv6:…]` or `[tag:content]`.
fn check_address_literal(domain: &str) -> Result<(), &'static str> {
    let inner = domain
        .strip_prefix('[')
        .and_then(|d| d.strip_suffix(']'))
        .ok_or("address literal without its closing ']'")?;
    if let Some(v6) = strip_prefix_ignore_case(inner, "IPv6:") {
        return v6
            .parse::<Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| "invalid IPv6 address literal");
    }
    if let Some((tag, content)) = inner.split_once(':') {
        // General-address-literal: Standardized-tag ":" 1*dcontent.
        let tag_ok = !tag.is_empty()
            && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !tag.ends_with('-');
        let content_ok = !content.is_empty()
            && content
                .bytes()
                .all(|b| (33..=90).contains(&b) || (94..=126).contains(&b));
        return if tag_ok && content_ok {
            Ok(())
        } else {
            Err("invalid general address literal (expected [tag:content])")
        };
    }
    inner
        .parse::<Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| "invalid address literal (expected [192.0.2.1] or [IPv6:2001:db8::1])")
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
#[path = "address_tests.rs"]
mod tests;
