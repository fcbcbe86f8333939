//! Putting a new message into the queue (`postman enqueue`): one queue file
//! per destination domain, each with the envelope block (DESIGN.md "The
//! queue on disk") and the message exactly as given, built in
//! `<domain>/tmp/` and renamed into `<domain>/` under a Maildir-style
//! unique name. A domain whose recipients do not fit one envelope block
//! ([`crate::queue::MAX_WRITTEN_BLOCK`]) gets several files, each a message
//! of its own with a share of them.
//!
//! The message is streamed: read in chunks into the first file, then
//! copied from it into the others, never held in memory whole. Every block
//! is known before the first byte of the message is read.
//!
//! Unlike [`crate::queue::enqueue_remote`], which links the finished file
//! into place (`link(2)` never replaces, but makes no `IN_MOVED_TO` event),
//! the file is renamed with `RENAME_NOREPLACE`: a running postman's scanner
//! watches for `IN_MOVED_TO` and picks the message up at once instead of at
//! its next rescan. Names carry the time to the microsecond, the pid and a
//! per-process counter ([`unique_name`]), so no other writer can take the
//! same one; a taken name is an error, never replaced.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::QueueId;
use crate::queue::dirfd::QueueDir;
use crate::queue::params::{MsgParams, Notify, RcptParams};
use crate::queue::render_envelopes;
use crate::queue::tmpfile::create_tmp;
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
    /// Reading the message failed; nothing was queued.
    #[error("cannot read the message: {source} (nothing was queued)")]
    Read {
        /// Why.
        source: io::Error,
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

/// What [`enqueue`] queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The new messages, in domain order (a split domain's in recipient
    /// order).
    pub ids: Vec<QueueId>,
    /// The domains whose recipients were split over several messages.
    pub split: Vec<Split>,
}

/// One domain's recipients split over several messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The destination domain.
    pub domain: String,
    /// How many recipients it has.
    pub recipients: usize,
    /// How many messages they were split over.
    pub files: usize,
}

/// The recipients grouped by destination domain (lower-cased, a trailing
/// dot removed), each group in the order given, exact duplicates (after
/// lower-casing the domain) dropped.
pub fn group_by_domain(
    recipients: &[String],
) -> Result<BTreeMap<String, Vec<String>>, EnqueueError> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for address in recipients {
        let bad = || EnqueueError::BadRecipient {
            address: address.clone(),
        };
        let (local, domain) = split_address(address).ok_or_else(bad)?;
        if !valid_domain(&domain) {
            return Err(bad());
        }
        let normal = format!("{local}@{domain}");
        if seen.insert(normal.clone()) {
            groups.entry(domain).or_default().push(normal);
        }
    }
    Ok(groups)
}

/// What the sender asks of the delivery (RFC 3461 DSN, RFC 8689
/// REQUIRETLS), as sendmail's `-N`, `-R` and `-V` give it: written into
/// every file queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SenderParams {
    /// RET, ENVID (xtext) and REQUIRETLS.
    pub message: MsgParams,
    /// NOTIFY, for every recipient.
    pub notify: Option<Notify>,
}

/// One file to write: its domain and envelope block.
struct Planned {
    domain: String,
    block: Vec<u8>,
}

/// Queues the message read from `message` from `sender` ("" for the null
/// sender) to `recipients` (checked with `parse_recipient` first), with the
/// sender's `params`: one file
/// per destination domain (see [`group_by_domain`]), or several when its
/// recipients do not fit one envelope block, `X-Postman-Date` = `now`,
/// named by `next_name` (called once per file; see [`unique_name`]). Every
/// file is written and synced in its `tmp/` before the first is renamed
/// into the queue, so a failure while writing queues nothing.
pub fn enqueue(
    queue: &Queue,
    sender: &str,
    recipients: &[String],
    params: &SenderParams,
    message: &mut dyn Read,
    now: SystemTime,
    mut next_name: impl FnMut() -> String,
) -> Result<Enqueued, EnqueueError> {
    let groups = group_by_domain(recipients)?;
    if groups.is_empty() {
        return Err(EnqueueError::NoRecipients);
    }
    let fields = params.message.fields();
    let rcpt = RcptParams {
        notify: params.notify,
        orcpt: None,
    };
    let mut planned = Vec::new();
    let mut split = Vec::new();
    for (domain, rcpts) in &groups {
        let by_rcpt: BTreeMap<String, RcptParams> = match params.notify {
            Some(_) => rcpts.iter().map(|r| (r.clone(), rcpt.clone())).collect(),
            None => BTreeMap::new(),
        };
        let blocks = render_envelopes(sender, rcpts, &by_rcpt, Some(now), &fields, &[]).map_err(
            |source| EnqueueError::Envelope {
                domain: domain.clone(),
                source,
            },
        )?;
        if blocks.len() > 1 {
            split.push(Split {
                domain: domain.clone(),
                recipients: rcpts.len(),
                files: blocks.len(),
            });
        }
        planned.extend(blocks.into_iter().map(|b| Planned {
            domain: domain.clone(),
            block: b.bytes,
        }));
    }
    let mut written: Vec<Written> = Vec::with_capacity(planned.len());
    for plan in &planned {
        let done = write_one(queue, plan, message, written.first(), &mut next_name);
        match done {
            Ok(file) => written.push(file),
            Err(e) => {
                for file in &written {
                    let _ = file.tmp.remove_file(&file.tmp_name);
                }
                return Err(match e {
                    Failed::Read(source) => EnqueueError::Read { source },
                    Failed::Write(source) => EnqueueError::Io {
                        domain: plan.domain.clone(),
                        queued: Vec::new(),
                        source,
                    },
                });
            }
        }
    }
    let mut ids = Vec::new();
    let mut rest = written.into_iter();
    while let Some(file) = rest.next() {
        if let Err(source) = file.move_in() {
            let _ = file.tmp.remove_file(&file.tmp_name);
            for file in rest {
                let _ = file.tmp.remove_file(&file.tmp_name);
            }
            return Err(EnqueueError::Io {
                domain: file.id.domain,
                queued: ids,
                source,
            });
        }
        ids.push(file.id);
    }
    Ok(Enqueued { ids, split })
}

/// A file written and synced in its domain's `tmp/`.
struct Written {
    id: QueueId,
    dir: Arc<QueueDir>,
    tmp: QueueDir,
    tmp_name: String,
    /// Where the message starts in it.
    body_offset: u64,
}

impl Written {
    /// Renames the file to `<domain>/<name>` unless that name is taken
    /// (`AlreadyExists`), then syncs the domain folder.
    fn move_in(&self) -> io::Result<()> {
        self.tmp
            .rename_no_clobber(&self.tmp_name, &self.dir, &self.id.name)?;
        self.dir.sync()
    }
}

/// Why writing one file failed: the message could not be read, or the
/// file not written.
enum Failed {
    Read(io::Error),
    Write(io::Error),
}

/// Writes the file of `plan`: its block, then the message, streamed from
/// `message` for the first file and copied from `first` for the others.
fn write_one(
    queue: &Queue,
    plan: &Planned,
    message: &mut dyn Read,
    first: Option<&Written>,
    next_name: &mut impl FnMut() -> String,
) -> Result<Written, Failed> {
    let dir = queue.domain_create(&plan.domain).map_err(Failed::Write)?;
    let tmp = dir.dir_create(TMP_DIR).map_err(Failed::Write)?;
    let name = next_name();
    let mut head: &[u8] = &plan.block;
    let tmp_name = match first {
        None => {
            // A read error is told apart from a write error by where it
            // happened: `Tracked` notes it.
            let mut source = Tracked {
                inner: message,
                error: None,
            };
            match write_new(&tmp, &name, &mut head, &mut source) {
                Ok(tmp_name) => tmp_name,
                Err(e) => return Err(source.error.map_or(Failed::Write(e), Failed::Read)),
            }
        }
        Some(first) => {
            let (mut body, _) = first
                .tmp
                .open_file(&first.tmp_name)
                .map_err(Failed::Write)?;
            body.seek(SeekFrom::Start(first.body_offset))
                .map_err(Failed::Write)?;
            write_new(&tmp, &name, &mut head, &mut body).map_err(Failed::Write)?
        }
    };
    Ok(Written {
        id: QueueId {
            domain: plan.domain.clone(),
            name,
        },
        dir,
        tmp,
        tmp_name,
        body_offset: plan.block.len() as u64,
    })
}

/// Creates a new file in `tmp` named after `name`, writes `head` and then
/// all of `body` into it, syncs it, and returns its name. On failure the
/// file is removed.
fn write_new(
    tmp: &QueueDir,
    name: &str,
    head: &mut dyn Read,
    body: &mut dyn Read,
) -> io::Result<String> {
    let (tmp_name, mut file) = create_tmp(tmp, name)?;
    let result = (|| {
        io::copy(head, &mut file)?;
        io::copy(body, &mut file)?;
        file.flush()?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp_name),
        Err(e) => {
            let _ = tmp.remove_file(&tmp_name);
            Err(e)
        }
    }
}

/// A reader that keeps its error, so that a caller of `io::copy` can tell
/// a failed read from a failed write.
struct Tracked<'a> {
    inner: &'a mut dyn Read,
    error: Option<io::Error>,
}

impl Read for Tracked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                let kind = e.kind();
                self.error = Some(e);
                Err(kind.into())
            }
            other => other,
        }
    }
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
