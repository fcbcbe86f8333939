//! The password file (`routing.password_file`): Postfix's
//! `smtp_sasl_password_maps` as the flat text `postmap(1)` reads, one
//! `next-hop whitespace user:password` entry a logical line. Parsed here
//! from text; opening it (no links, owner and mode checked) is the actors'
//! job. Errors name the line, never its user or password.
//!
//! As `postmap(1)` and `readlline(3)` read it: blank lines and lines whose
//! first non-blank is `#` are skipped, a line that starts with whitespace
//! continues the entry before it (joined without the newline), and key and
//! value are trimmed. As `smtp_sasl_glue.c` splits the value: at the first
//! `:`, so a password may hold `:` and blanks, a user no `:`.
//!
//! Stricter than Postfix, which warns and skips such lines: a line without
//! a value or a `:`, an empty user or password, a key that is not a next
//! hop, a key given twice, a continuation with nothing to continue, and a
//! NUL byte are errors, so a typo is found when the file is loaded instead
//! of as a `535` from the relay. An empty password is refused although
//! Postfix sends one: SASL PLAIN cannot carry it (RFC 4616 §2, `passwd =
//! 1*SAFE`), and no relay takes it.

use std::collections::btree_map::{self, BTreeMap};

use zeroize::Zeroizing;

use super::{NextHop, NextHopError};
use crate::secret::{Credentials, Secret};

/// The credentials of each next hop, by its password-file key
/// ([`NextHop::key`]): `[SMTP.Example.net]:587` and
/// `[smtp.example.net]:587` are one key, `[smtp.example.net]` another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PasswordMap {
    entries: BTreeMap<String, Credentials>,
}

/// What is wrong with a password file, and on which line (of the entry's
/// first physical line, counted from 1). The text never holds the user
/// name or the password, nor a key that may be one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordFileError {
    /// A key with nothing after it (or a line without whitespace).
    #[error("line {line}: expected a next hop, whitespace, then user:password")]
    NoValue {
        /// The entry's line.
        line: usize,
    },
    /// The value has no `:` to split it into user and password.
    #[error("line {line}: no ':' between user and password")]
    NoColon {
        /// The entry's line.
        line: usize,
    },
    /// Nothing before the value's first `:`.
    #[error("line {line}: empty user name before ':'")]
    EmptyUser {
        /// The entry's line.
        line: usize,
    },
    /// Nothing after the value's first `:`.
    #[error("line {line}: empty password after ':' (SASL needs one, RFC 4616)")]
    EmptyPassword {
        /// The entry's line.
        line: usize,
    },
    /// The key is not a next hop as Postfix writes one.
    #[error("line {line}: key {key:?} is not a next hop: {error}")]
    Key {
        /// The entry's line.
        line: usize,
        /// The key.
        key: String,
        /// Why it is not a next hop.
        error: NextHopError,
    },
    /// A `user@domain` or `@domain` key: Postfix's sender-dependent
    /// authentication, which postman does not do.
    #[error("line {line}: key {key:?} is a sender; only next hops ([host]:port) are keys here")]
    SenderKey {
        /// The entry's line.
        line: usize,
        /// The key.
        key: String,
    },
    /// The key is not a next hop, and is not shown because it may hold a
    /// password: it has a `:` no next hop has there, as in a line that
    /// reads `user:password [host]:587`.
    #[error("line {line}: the key is not a next hop (is the line \"[host]:port user:password\"?)")]
    HiddenKey {
        /// The entry's line.
        line: usize,
    },
    /// The same next hop (as [`NextHop::key`] writes it) on two lines.
    #[error("line {line}: {key} is given twice (first on line {first})")]
    Duplicate {
        /// The second entry's line.
        line: usize,
        /// The next hop's key.
        key: String,
        /// The first entry's line.
        first: usize,
    },
    /// A line that starts with whitespace, with no entry before it.
    #[error(
        "line {line}: starts with whitespace, which continues the entry before, \
         but there is none (keys start at the beginning of a line)"
    )]
    Continuation {
        /// The line.
        line: usize,
    },
    /// A NUL byte, which no user name or password may hold.
    #[error("line {line}: holds a NUL byte")]
    Nul {
        /// The entry's line.
        line: usize,
    },
}

impl PasswordFileError {
    /// The line the error is about (an entry's first line).
    pub fn line(&self) -> usize {
        match self {
            PasswordFileError::NoValue { line }
            | PasswordFileError::NoColon { line }
            | PasswordFileError::EmptyUser { line }
            | PasswordFileError::EmptyPassword { line }
            | PasswordFileError::Key { line, .. }
            | PasswordFileError::SenderKey { line, .. }
            | PasswordFileError::HiddenKey { line }
            | PasswordFileError::Duplicate { line, .. }
            | PasswordFileError::Continuation { line }
            | PasswordFileError::Nul { line } => *line,
        }
    }
}

impl PasswordMap {
    /// Reads a password file's text; see the module's documentation for
    /// the format.
    pub fn parse(text: &str) -> Result<PasswordMap, PasswordFileError> {
        let mut entries = BTreeMap::new();
        let mut first_lines = BTreeMap::new();
        for (line, entry) in logical_lines(text)? {
            let (hop, credentials) = parse_entry(line, &entry)?;
            let key = hop.key();
            if let Some(&first) = first_lines.get(&key) {
                return Err(PasswordFileError::Duplicate { line, key, first });
            }
            first_lines.insert(key.clone(), line);
            entries.insert(key, credentials);
        }
        Ok(PasswordMap { entries })
    }

    /// The credentials for `hop`, looked up by its key as written (a
    /// `[host]:587` entry is not used for `[host]`, as in Postfix).
    pub fn get(&self, hop: &NextHop) -> Option<&Credentials> {
        self.entries.get(&hop.key())
    }

    /// Each key (as [`NextHop::key`] writes it) with its credentials, in
    /// key order; the password formats as `<redacted>`.
    pub fn iter(&self) -> btree_map::Iter<'_, String, Credentials> {
        self.entries.iter()
    }

    /// How many next hops have credentials.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file had no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// C's `isspace` in the "C" locale, which Postfix splits and trims by.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r')
}

/// The entries of `text` with the number of each one's first line:
/// comments and blank lines left out, continuation lines joined to the
/// entry before them (`readlline(3)`), even across a comment. The copies
/// hold passwords: they are wiped when dropped, as a [`Secret`] is.
fn logical_lines(text: &str) -> Result<Vec<(usize, Zeroizing<String>)>, PasswordFileError> {
    let mut entries: Vec<(usize, Zeroizing<String>)> = Vec::new();
    for (index, physical) in text.split('\n').enumerate() {
        let line = index + 1;
        // A file written on Windows: its CR would end up inside a joined
        // password.
        let physical = physical.strip_suffix('\r').unwrap_or(physical);
        let content = physical.trim_start_matches(is_space);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if physical.starts_with(is_space) {
            match entries.last_mut() {
                Some((_, entry)) => {
                    // A new string, not a grown one: growing would leave
                    // the old buffer behind unwiped.
                    let mut joined = String::with_capacity(entry.len() + physical.len());
                    joined.push_str(entry);
                    joined.push_str(physical);
                    *entry = Zeroizing::new(joined);
                }
                None => return Err(PasswordFileError::Continuation { line }),
            }
        } else {
            entries.push((line, Zeroizing::new(physical.to_owned())));
        }
    }
    Ok(entries)
}

/// One entry: `key whitespace user:password`.
fn parse_entry(line: usize, entry: &str) -> Result<(NextHop, Credentials), PasswordFileError> {
    if entry.contains('\0') {
        return Err(PasswordFileError::Nul { line });
    }
    let (key, value) = entry
        .split_once(is_space)
        .ok_or(PasswordFileError::NoValue { line })?;
    let value = value.trim_matches(is_space);
    if value.is_empty() {
        return Err(PasswordFileError::NoValue { line });
    }
    let hop = match NextHop::parse(key) {
        Ok(hop) => hop,
        Err(_) if !safe_to_show(key) => return Err(PasswordFileError::HiddenKey { line }),
        Err(_) if key.contains('@') => {
            let key = key.to_owned();
            return Err(PasswordFileError::SenderKey { line, key });
        }
        Err(error) => {
            let key = key.to_owned();
            return Err(PasswordFileError::Key { line, key, error });
        }
    };
    let (user, password) = value
        .split_once(':')
        .ok_or(PasswordFileError::NoColon { line })?;
    if user.is_empty() {
        return Err(PasswordFileError::EmptyUser { line });
    }
    if password.is_empty() {
        return Err(PasswordFileError::EmptyPassword { line });
    }
    let credentials = Credentials {
        user: user.to_owned(),
        password: Secret::new(password.to_owned()),
    };
    Ok((hop, credentials))
}

/// Whether a key can be quoted in an error without showing a password:
/// each `:` outside brackets is one a next hop has there, followed by a
/// number below 65536, a service name or a bracket (`[host]:587`,
/// `smtp:[host]`, `[host]:submission`). A `user:password` written first is
/// not, unless the password is such a number (then, with a user that is a
/// host name, it even reads as a valid next hop).
fn safe_to_show(key: &str) -> bool {
    let outside: String = match key.split_once('[') {
        Some((before, inside)) => match inside.split_once(']') {
            Some((_, after)) => format!("{before}{after}"),
            None => format!("{before}{inside}"),
        },
        None => key.to_owned(),
    };
    outside.split(':').skip(1).all(|part| {
        part.is_empty()
            || (part.bytes().all(|b| b.is_ascii_digit()) && part.parse::<u16>().is_ok())
            || ["smtp", "submission", "submissions", "smtps"].contains(&&*part.to_ascii_lowercase())
    })
}

#[cfg(test)]
#[path = "password_tests.rs"]
mod tests;
