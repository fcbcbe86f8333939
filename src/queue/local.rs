//! Where a bounce goes (DESIGN.md "Outcomes"): into the sender's local
//! Maildir when the sender's domain is local (the Maildir convention of
//! writing in `tmp/` and moving into `new/`), else into the remote queue as
//! a new message with the null sender (RFC 5321 §4.5.5: a notification is
//! sent with `MAIL FROM:<>`). Also reads the header section of a queued
//! message, which a DSN returns (RFC 3462 `text/rfc822-headers`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::SystemTime;

use super::dirfd::QueueDir;
use super::render::render_envelope;
use super::tmpfile::create_tmp;
use super::{valid_domain, Queue, TMP_DIR};

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
/// A mailbox or sub-folder that is a link is refused
/// ([`super::dirfd::refusal`]): nothing is written outside the root.
///
/// `user` must be one path component that cannot reach outside the root or
/// into the queue: not empty, no `/` or NUL, not starting with `.` (which
/// also rules out `..` and `.OTHER_SERVERS`). `unique` follows the Maildir
/// rules: one component, no `:` (it starts the info suffix of `cur/`), not
/// starting with `.`; for example `<secs>.P<pid>Q<n>.<hostname>`.
///
/// `message` is written as given; Maildir readers accept CRLF or LF.
pub fn deliver_local(
    queue: &Queue,
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
    let mailbox = queue.root().dir_create(user)?;
    let tmp = mailbox.dir_create("tmp")?;
    let new = mailbox.dir_create("new")?;
    mailbox.dir_create("cur")?;
    place(&tmp, &new, unique, &[message])
}

/// Queues `message` for remote delivery to `recipients` of `domain`: an
/// envelope block (`sender`, "" for the null sender of a bounce; `arrival`)
/// and the message, written and synced in `<domain>/tmp/`, then moved to
/// `<domain>/<unique>` without replacing an existing file (`AlreadyExists`),
/// and the domain folder synced. Creates the folders when missing; a
/// linked folder is refused.
///
/// `domain` must be a queue folder name ([`valid_domain`]: lower-case
/// A-label); `unique` one component not starting with `.`. Addresses the
/// envelope cannot hold are `InvalidInput`.
pub fn enqueue_remote(
    queue: &Queue,
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
    let block = render_envelope(sender, recipients, &BTreeMap::new(), Some(arrival), &[])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dir = queue.domain_create(domain)?;
    let tmp = dir.dir_create(TMP_DIR)?;
    place(&tmp, &dir, unique, &[&block, message])
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
    queue: &Queue,
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
        return deliver_local(queue, local, message, unique).map(Placed::Local);
    }
    enqueue_remote(
        queue,
        &domain,
        "",
        &[sender.to_owned()],
        arrival,
        message,
        unique,
    )
    .map(Placed::Remote)
}

/// The header section of the message in the open queued `file` (from
/// `body_offset`, the end of the envelope block; read with `pread`, so the
/// file's position does not matter): everything before the
/// first empty line, ending with that header section's last line break. At
/// most [`MAX_RETURNED_HEADERS`] bytes: a longer section is cut after its
/// last whole line within the limit. A message without an empty line is all
/// header section.
pub fn read_original_headers(file: &File, body_offset: u64) -> io::Result<Vec<u8>> {
    let buf = read_at_most(file, body_offset, MAX_RETURNED_HEADERS + 2)?;
    Ok(header_section(&buf).to_vec())
}

/// Reads the whole original message of a queue file open for reading
/// (from `body_offset` to its end, as [`read_original_headers`] reads),
/// when it is at most `limit` bytes; `None` when it is longer. Reads at
/// most `limit + 1` bytes, whatever the file's size.
pub fn read_original_message(
    file: &File,
    body_offset: u64,
    limit: usize,
) -> io::Result<Option<Vec<u8>>> {
    let buf = read_at_most(file, body_offset, limit.saturating_add(1))?;
    Ok((buf.len() <= limit).then_some(buf))
}

/// Up to `len` bytes of `file` from `offset` (fewer at its end), read with
/// `pread`.
fn read_at_most(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    let mut filled = 0;
    while filled < buf.len() {
        let at = offset.saturating_add(filled as u64);
        match file.read_at(&mut buf[filled..], at) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
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

/// Writes `parts` to a new file in `tmp_dir`, syncs it, renames it into
/// `dir` as `name` (never replacing: `AlreadyExists`) and syncs `dir`;
/// returns the new path. On failure the temporary file is removed.
fn place(tmp_dir: &QueueDir, dir: &QueueDir, name: &str, parts: &[&[u8]]) -> io::Result<PathBuf> {
    let (tmp, mut file) = create_tmp(tmp_dir, name)?;
    let result = (|| {
        for part in parts {
            file.write_all(part)?;
        }
        file.sync_all()?;
        drop(file);
        tmp_dir.rename_no_clobber(&tmp, dir, name)
    })();
    if let Err(e) = result {
        let _ = tmp_dir.remove_file(&tmp);
        return Err(e);
    }
    dir.sync()?;
    Ok(dir.display_path(name))
}

/// Whether a failed write of a bounce will fail the same way however often
/// it is tried, so that waiting is no use: the name is refused by postman
/// itself (`InvalidInput`: no mailbox name, no `local@domain`) or by the
/// kernel (`ENAMETOOLONG`; `EINVAL`, which is `InvalidInput` too). What an
/// operator can put right is not: something in the way of the mailbox (a
/// file, a link, refused by `dirfd` as `InvalidData`), permissions, a full
/// disk or quota, an I/O error, a lack of descriptors or memory; such a
/// bounce is tried again (until the message's queue lifetime ends), as
/// Postfix defers a mailbox it cannot write. Decided from the kind and
/// errno, never from the text.
pub fn is_permanent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
        || e.raw_os_error() == Some(nix::errno::Errno::ENAMETOOLONG as i32)
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
