//! Where a bounce goes (DESIGN.md "Outcomes"): into the sender's local
//! Maildir when the sender's domain is local (the Maildir convention of
//! writing in `tmp/` and moving into `new/`), else into the remote queue as
//! a new message with the null sender (RFC 5321 §4.5.5: a notification is
//! sent with `MAIL FROM:<>`). Also reads the header section of a queued
//! message, which a DSN returns (RFC 3462 `text/rfc822-headers`).

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::envelope::render_envelope;
use super::rewrite::{create_tmp, sync_dir};
use super::{valid_domain, Layout, TMP_DIR};

/// The most of a message's header section returned by
/// [`read_original_headers`] (RFC 5322 sets no limit; a bounce need not
/// carry more).
pub const MAX_RETURNED_HEADERS: usize = 64 * 1024;

/// Where [`place_bounce`] put a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Delivered to a local Maildir: `<root>/<user>/new/<unique>`.
    Local(PathBuf),
    /// Queued for remote delivery: `<root>/.OTHER_SERVERS/<domain>/<unique>`.
    Remote(PathBuf),
}

/// Splits `local@domain` at its last `@`: the local part as written and the
/// domain lower-cased without a trailing dot. `None` for the null sender
/// `""` or anything without a non-empty local part and domain.
pub fn split_address(address: &str) -> Option<(&str, String)> {
    let (local, domain) = address.rsplit_once('@')?;
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    Some((local, domain.to_ascii_lowercase()))
}

/// Whether `domain` is one of `local_domains` (`Config::local_domains`,
/// lower-case), ignoring case and a trailing dot.
pub fn is_local(domain: &str, local_domains: &[String]) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    local_domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
}

/// Delivers `message` to the Maildir of `user`: written and synced as
/// `<root>/<user>/tmp/<unique>`, then moved to `<root>/<user>/new/<unique>`
/// without replacing an existing file (`AlreadyExists` when `unique` is
/// taken), and `new/` synced. Creates `tmp`, `new` and `cur` when missing.
///
/// `user` must be one path component that cannot reach outside the root or
/// into the queue: not empty, no `/` or NUL, not starting with `.` (which
/// also rules out `..` and `.OTHER_SERVERS`). `unique` follows the Maildir
/// rules: one component, no `:` (it starts the info suffix of `cur/`), not
/// starting with `.`; for example `<secs>.P<pid>Q<n>.<hostname>`.
///
/// `message` is written as given; Maildir readers accept CRLF or LF.
pub fn deliver_local(
    layout: &Layout,
    user: &str,
    message: &[u8],
    unique: &str,
) -> io::Result<PathBuf> {
    check_name("mailbox user", user)?;
    check_name("unique name", unique)?;
    if unique.contains(':') {
        return Err(invalid(format!(
            "invalid unique name {unique:?}: ':' starts a Maildir info suffix"
        )));
    }
    let mailbox = layout.root().join(user);
    for sub in ["tmp", "new", "cur"] {
        fs::create_dir_all(mailbox.join(sub))?;
    }
    let new = mailbox.join("new");
    place(&mailbox.join("tmp"), &new, unique, &[message])
}

/// Queues `message` for remote delivery to `recipients` of `domain`: an
/// envelope block (`sender`, "" for the null sender of a bounce; `arrival`)
/// and the message, written and synced in `<domain>/tmp/`, then moved to
/// `<domain>/<unique>` without replacing an existing file (`AlreadyExists`),
/// and the domain folder synced. Creates the folders when missing.
///
/// `domain` must be a queue folder name ([`valid_domain`]: lower-case
/// A-label); `unique` one component not starting with `.`. Addresses the
/// envelope cannot hold are `InvalidInput`.
pub fn enqueue_remote(
    layout: &Layout,
    domain: &str,
    sender: &str,
    recipients: &[String],
    arrival: SystemTime,
    message: &[u8],
    unique: &str,
) -> io::Result<PathBuf> {
    if !valid_domain(domain) {
        return Err(invalid(format!(
            "invalid queue domain {domain:?}: expected a lower-case domain in A-label form"
        )));
    }
    check_name("unique name", unique)?;
    let block = render_envelope(sender, recipients, Some(arrival), &[])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dir = layout.domain_dir(domain);
    place(&dir.join(TMP_DIR), &dir, unique, &[&block, message])
}

/// Sends a bounce `message` to `sender` (the original envelope sender):
/// [`deliver_local`] to the sender's local part when its domain is one of
/// `local_domains`, else [`enqueue_remote`] with the null sender. Refuses
/// the null sender (`InvalidInput`: a bounce is never bounced, check
/// `dsn::should_bounce` first) and a sender without a domain.
///
/// The local part is used as the mailbox name as it is; a local part that
/// is not a safe path component (see [`deliver_local`]) is an error.
pub fn place_bounce(
    layout: &Layout,
    local_domains: &[String],
    sender: &str,
    arrival: SystemTime,
    message: &[u8],
    unique: &str,
) -> io::Result<Placed> {
    if sender.is_empty() {
        return Err(invalid(
            "a bounce is never bounced: the null sender gets no DSN".to_owned(),
        ));
    }
    let (local, domain) = split_address(sender)
        .ok_or_else(|| invalid(format!("sender {sender:?} is not local@domain")))?;
    if is_local(&domain, local_domains) {
        return deliver_local(layout, local, message, unique).map(Placed::Local);
    }
    enqueue_remote(
        layout,
        &domain,
        "",
        &[sender.to_owned()],
        arrival,
        message,
        unique,
    )
    .map(Placed::Remote)
}

/// The header section of the message in the queued file at `path` (from
/// `body_offset`, the end of the envelope block): everything before the
/// first empty line, ending with that header section's last line break. At
/// most [`MAX_RETURNED_HEADERS`] bytes: a longer section is cut after its
/// last whole line within the limit. A message without an empty line is all
/// header section.
pub fn read_original_headers(path: &Path, body_offset: u64) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(body_offset))?;
    let mut buf = Vec::new();
    file.take(MAX_RETURNED_HEADERS as u64 + 2)
        .read_to_end(&mut buf)?;
    Ok(header_section(&buf).to_vec())
}

/// The header section at the start of `message` (see
/// [`read_original_headers`]), bounded by [`MAX_RETURNED_HEADERS`].
pub fn header_section(message: &[u8]) -> &[u8] {
    let mut line_start = 0;
    while let Some(rel) = message[line_start..].iter().position(|&b| b == b'\n') {
        let lf = line_start + rel;
        let line = &message[line_start..lf];
        if line.is_empty() || line == b"\r" {
            return &message[..line_start];
        }
        if lf + 1 > MAX_RETURNED_HEADERS {
            return &message[..line_start];
        }
        line_start = lf + 1;
    }
    if message.len() <= MAX_RETURNED_HEADERS {
        message
    } else {
        &message[..line_start]
    }
}

/// Writes `parts` to a new file in `tmp_dir`, syncs it, links it into
/// `dir` as `name` (never replacing), removes the temporary name and syncs
/// `dir`. On failure the temporary file is removed.
fn place(tmp_dir: &Path, dir: &Path, name: &str, parts: &[&[u8]]) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let (tmp_path, mut file) = create_tmp(tmp_dir, name)?;
    let target = dir.join(name);
    let result = (|| {
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        drop(file);
        link_no_clobber(&tmp_path, &target)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    sync_dir(dir)?;
    Ok(target)
}

/// Moves `from` to `to` unless `to` exists (`AlreadyExists`): `link(2)`
/// then unlink, the Maildir way; a file system without hard links falls
/// back to check-then-rename.
pub(crate) fn link_no_clobber(from: &Path, to: &Path) -> io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) =>
        {
            Err(e)
        }
        Err(_) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists", to.display()),
                ));
            }
            fs::rename(from, to)
        }
    }
}

/// One path component that stays where it is joined: not empty, no `/` or
/// NUL, not starting with `.`.
fn check_name(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value.starts_with('.') || value.contains(['/', '\0']) {
        return Err(invalid(format!(
            "invalid {what} {value:?}: must be one path component, not empty, \
             without '/', not starting with '.'"
        )));
    }
    Ok(())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
