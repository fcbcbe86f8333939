//! The mailbox rules of the envelope block (RFC 5321 §4.1.2, §4.5.3.1):
//! what makes an address usable and readable back, how an address list
//! splits, and when two recipients are the same. Lenient about the finer
//! grammar (the remote server judges that), strict about what could break
//! the SMTP command line, the log, or a list read back.

use std::borrow::Cow;

use super::admin::{MAX_DOMAIN, MAX_LOCAL_PART, MAX_MAILBOX};

/// The domain of `address` as queue folders are named: without a trailing
/// dot, lower-case, internationalised labels in A-label form (RFC 5890);
/// `None` when it cannot be one.
pub(super) fn domain_key(address: &str) -> Option<Cow<'_, str>> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_ascii() {
        if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            Some(Cow::Owned(domain.to_ascii_lowercase()))
        } else {
            Some(Cow::Borrowed(domain))
        }
    } else {
        idna::domain_to_ascii(domain).ok().map(Cow::Owned)
    }
}

/// `recipients` without the ones named again (the same local part, the
/// same [`domain_key`]), first mentions kept in order; and how many went.
pub(super) fn without_duplicates(recipients: Vec<String>) -> (Vec<String>, usize) {
    if recipients.len() < 2 {
        return (recipients, 0);
    }
    let mut seen = std::collections::HashSet::with_capacity(recipients.len());
    let before = recipients.len();
    let kept: Vec<String> = recipients
        .into_iter()
        .filter(|rcpt| {
            let (local, domain) = rcpt.rsplit_once('@').unwrap_or((rcpt.as_str(), ""));
            // A domain with no A-label form is only the same as itself
            // (two such domains once counted as one, and a recipient went).
            let domain = domain_key(rcpt)
                .map(Cow::into_owned)
                .ok_or_else(|| domain.to_owned());
            seen.insert((local.to_owned(), domain))
        })
        .collect();
    let dropped = before - kept.len();
    (kept, dropped)
}

/// Splits an address list on commas outside quoted strings and angle
/// brackets (an obsolete source route `<@a,@b:u@d>` holds commas).
pub(super) fn split_list(value: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped, mut depth) = (0, false, false, 0usize);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth = depth.saturating_sub(1),
            ',' if !quoted && depth == 0 => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items
}

/// What keeps `address` from being a usable `local@domain`, if anything.
/// Deliberately lenient about the finer grammar (the remote server judges
/// that), strict about what could break the SMTP command line or the log.
pub(super) fn mailbox_problem(address: &str) -> Option<&'static str> {
    const SPECIALS: &[char] = &['<', '>', '(', ')', '[', ']', ',', ';', ':', '\\', '"', '@'];
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Some("no @ (expected local@domain)");
    };
    if local.is_empty() {
        return Some("empty local part (expected local@domain)");
    }
    if domain.is_empty() {
        return Some("empty domain (expected local@domain)");
    }
    // RFC 5321 §4.5.3.1: no server need take more, and a local part is a
    // mailbox name when its domain is local (a longer one was once sent as a
    // 5,000-character RCPT and could never get its bounce).
    if local.len() > MAX_LOCAL_PART {
        return Some("local part longer than 64 octets (RFC 5321 §4.5.3.1.1)");
    }
    if domain.len() > MAX_DOMAIN {
        return Some("domain longer than 255 octets (RFC 5321 §4.5.3.1.2)");
    }
    if address.len() > MAX_MAILBOX {
        return Some("path longer than 256 octets with its angle brackets (RFC 5321 §4.5.3.1.3)");
    }
    if address.chars().any(char::is_control) {
        return Some("contains a control character");
    }
    // The reader trims every item of a list (Unicode white space too), so
    // such an address would not read back as written.
    if address.starts_with(char::is_whitespace) || address.ends_with(char::is_whitespace) {
        return Some("begins or ends with white space");
    }
    let quoted_local = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
    if quoted_local && !is_quoted_string(local) {
        return Some("a quoted local part holds an unescaped '\"' or a lone '\\'");
    }
    if !quoted_local && local.contains(|c: char| c == ' ' || SPECIALS.contains(&c)) {
        return Some("local part holds a space or special character (quote it)");
    }
    let literal = domain.starts_with('[') && domain.ends_with(']');
    let bad_domain_char = |c: char| {
        c == ' '
            || matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | '\\' | '"')
            || (!literal && matches!(c, '[' | ']' | ':'))
    };
    if domain.contains(bad_domain_char) {
        return Some("domain holds a space or special character");
    }
    None
}

/// `text` is one RFC 5321 §4.1.2 Quoted-string: `"` … `"` with every `"`
/// and `\\` inside escaped by a `\\` (a quoted-pair). Anything else (a
/// stray quote such as `"a"b>,c"`) would let a list of such addresses split
/// differently when read back.
fn is_quoted_string(text: &str) -> bool {
    let Some(inner) = text
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return false;
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let lone = match c {
            '"' => true,
            // A quoted-pair: the next character, whatever it is, is taken.
            '\\' => chars.next().is_none(),
            _ => false,
        };
        if lone {
            return false;
        }
    }
    true
}

#[cfg(test)]
#[path = "mailbox_tests.rs"]
mod tests;
