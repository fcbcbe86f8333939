//! Putting a new message into the queue (`postman enqueue`): one queue file
//! per destination domain, each with the envelope block (DESIGN.md "The
//! queue on disk") and the message exactly as given, built in
//! `<domain>/tmp/` and renamed into `<domain>/` under a Maildir-style
//! unique name.
//!
//! Unlike [`crate::queue::enqueue_remote`], which links the finished file
//! into place (`link(2)` never replaces, but makes no `IN_MOVED_TO` event),
//! the file is `rename(2)`d: a running postman's scanner watches for
//! `IN_MOVED_TO` and picks the message up at once instead of at its next
//! rescan. The rename never replaces a file of the same name
//! (`RENAME_NOREPLACE`); names carry the time to the microsecond, the pid
//! and a per-process counter ([`unique_name`]), so none should be taken.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::QueueId;
use crate::queue::dirfd::QueueDir;
use crate::queue::envelope::render_envelope;
use crate::queue::rewrite::create_tmp;
use crate::queue::{split_address, valid_domain, Queue, TMP_DIR};

/// Why a message could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// No recipient was given.
    #[error("no recipient: give at least one --to address")]
    NoRecipients,
    /// A recipient whose domain cannot name a queue folder.
    #[error(
        "recipient {address:?} has no usable domain: expected local@domain with a \
         lower-case A-label domain"
    )]
    BadRecipient {
        /// The recipient.
        address: String,
    },
    /// The envelope block could not be rendered for these addresses.
    #[error("cannot write the envelope for {domain}: {source}")]
    Envelope {
        /// The destination domain.
        domain: String,
        /// Why.
        source: crate::queue::EnvelopeError,
    },
    /// Writing a file failed; nothing was queued (`queued` is empty) or,
    /// if the final renames failed part of the way, only `queued` was.
    #[error("cannot queue the message for {domain}: {source}{}", partial(queued))]
    Io {
        /// The domain whose file failed.
        domain: String,
        /// The messages already in the queue (each is complete).
        queued: Vec<QueueId>,
        /// Why.
        source: io::Error,
    },
}

fn partial(queued: &[QueueId]) -> String {
    if queued.is_empty() {
        " (nothing was queued)".to_owned()
    } else {
        let ids: Vec<String> = queued.iter().map(QueueId::to_string).collect();
        format!(" (already queued: {})", ids.join(", "))
    }
}

/// The recipients grouped by destination domain (lower-cased, a trailing
/// dot removed), each group in the order given, exact duplicates (after
/// lower-casing the domain) dropped.
pub fn group_by_domain(
    recipients: &[String],
) -> Result<BTreeMap<String, Vec<String>>, EnqueueError> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for address in recipients {
        let bad = || EnqueueError::BadRecipient {
            address: address.clone(),
        };
        let (local, domain) = split_address(address).ok_or_else(bad)?;
        if !valid_domain(&domain) {
            return Err(bad());
        }
        let normal = format!("{local}@{domain}");
        let group = groups.entry(domain).or_default();
        if !group.contains(&normal) {
            group.push(normal);
        }
    }
    Ok(groups)
}

/// Queues `message` from `sender` ("" for the null sender) to `recipients`
/// (checked with `parse_recipient` first): one file per destination domain
/// (see [`group_by_domain`]), `X-Postman-Date` = `now`, named by
/// `next_name` (called once per file; see [`unique_name`]). Every file is
/// written and synced in its `tmp/` before the first is renamed into the
/// queue, so a failure while writing queues nothing. Returns the queue ids
/// in domain order.
pub fn enqueue(
    queue: &Queue,
    sender: &str,
    recipients: &[String],
    message: &[u8],
    now: SystemTime,
    mut next_name: impl FnMut() -> String,
) -> Result<Vec<QueueId>, EnqueueError> {
    let groups = group_by_domain(recipients)?;
    if groups.is_empty() {
        return Err(EnqueueError::NoRecipients);
    }
    let mut written: Vec<(QueueId, Written)> = Vec::new();
    let cleanup = |written: &[(QueueId, Written)]| {
        for (_, tmp) in written {
            let _ = tmp.tmp_dir.remove_file(&tmp.name);
        }
    };
    for (domain, rcpts) in &groups {
        let block = match render_envelope(sender, rcpts, Some(now), &[]) {
            Ok(block) => block,
            Err(source) => {
                cleanup(&written);
                return Err(EnqueueError::Envelope {
                    domain: domain.clone(),
                    source,
                });
            }
        };
        let name = next_name();
        match write_tmp(queue, domain, &name, &block, message) {
            Ok(tmp) => written.push((
                QueueId {
                    domain: domain.clone(),
                    name,
                },
                tmp,
            )),
            Err(source) => {
                cleanup(&written);
                return Err(EnqueueError::Io {
                    domain: domain.clone(),
                    queued: Vec::new(),
                    source,
                });
            }
        }
    }
    let mut queued = Vec::new();
    let mut rest = written.into_iter();
    while let Some((id, tmp)) = rest.next() {
        if let Err(source) = move_in(&id, &tmp) {
            let _ = tmp.tmp_dir.remove_file(&tmp.name);
            cleanup(&rest.collect::<Vec<_>>());
            return Err(EnqueueError::Io {
                domain: id.domain,
                queued,
                source,
            });
        }
        queued.push(id);
    }
    Ok(queued)
}

/// A file written and synced in `<domain>/tmp/`.
struct Written {
    domain_dir: Arc<QueueDir>,
    tmp_dir: QueueDir,
    name: String,
}

/// Writes and syncs the file in `<domain>/tmp/` (folders made as needed,
/// links refused).
fn write_tmp(
    queue: &Queue,
    domain: &str,
    name: &str,
    block: &[u8],
    message: &[u8],
) -> io::Result<Written> {
    let domain_dir = queue.domain_create(domain)?;
    let tmp_dir = domain_dir.dir_create(TMP_DIR)?;
    let (tmp, mut file) = create_tmp(&tmp_dir, name)?;
    let result = (|| {
        file.write_all(block)?;
        file.write_all(message)?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(Written {
            domain_dir,
            tmp_dir,
            name: tmp,
        }),
        Err(e) => {
            let _ = tmp_dir.remove_file(&tmp);
            Err(e)
        }
    }
}

/// Renames the finished file to `<domain>/<name>` unless that name is
/// taken (`AlreadyExists`), then syncs the domain folder.
fn move_in(id: &QueueId, tmp: &Written) -> io::Result<()> {
    tmp.tmp_dir
        .rename_no_clobber(&tmp.name, &tmp.domain_dir, &id.name)?;
    tmp.domain_dir.sync()
}

/// A Maildir-style unique file name: `<secs>.<micros>P<pid>Q<serial>.<host>`
/// (the `M`-less form of the Maildir spec's `#n`/`Pn`/`Qn` parts). `host`
/// is made safe as the Maildir convention says: `/` becomes `\057` and `:`
/// becomes `\072`; an empty host is `localhost`.
pub fn unique_name(now: SystemTime, pid: u32, serial: u64, host: &str) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let host = if host.is_empty() { "localhost" } else { host };
    let host = host
        .replace('/', "\\057")
        .replace(':', "\\072")
        .replace('\0', "");
    format!(
        "{}.{:06}P{pid}Q{serial}.{host}",
        since.as_secs(),
        since.subsec_micros()
    )
}

#[cfg(test)]
#[path = "enqueue_tests.rs"]
mod tests;
