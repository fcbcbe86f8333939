//! The operator's side of the queue (`postman queue`, `enqueue`, `flush`,
//! `hold`, `release`, `delete`, `bounce`), as file operations that are
//! safe while a postman daemon delivers from the same queue: what a running
//! delivery has claimed (`<domain>/.active/<owner>/<name>`) is never
//! touched, and every move is one `rename(2)`, so of an operator's move and
//! a daemon's claim exactly one wins.
//!
//! A held message lies in `<domain>/`[`HOLD_DIR`]`/<name>`: a dot folder, so
//! the scanner never lists it and no postman delivers it until it is
//! released, which moves it back to `<domain>/<name>`. Held messages keep
//! their envelope and retry state; their queue lifetime keeps running from
//! `X-Postman-Date` (a message released after `delivery.max_queue_lifetime`
//! gets one more attempt and bounces if that fails, as in Postfix).
//!
//! A queue id is `domain/name` (the domain folder and the file name) or a
//! bare name, looked for in every domain folder.

mod address;
mod by_site;
mod enqueue;
mod flush;
mod listing;

use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use address::{
    check_mailbox, parse_recipient, parse_sender, AddressError, Role, MAX_DOMAIN, MAX_LOCAL_PART,
    MAX_MAILBOX,
};
pub use by_site::{group_by_site, hosts_of_site_name, DomainLine, SiteGroup, SiteHold};
pub use enqueue::{
    enqueue, group_by_domain, unique_name, EnqueueError, Enqueued, SenderParams, Split,
};
pub use flush::{flush, flush_sites, FlushReport, SiteFlush};
pub use listing::{
    age_bucket, list_queue, summarize, Detail, DomainSummary, Entry, State, AGE_BUCKETS,
    AGE_COLUMNS,
};

use super::dirfd::{EntryKind, QueueDir};
use super::params::RcptParams;
use super::{
    claim, is_local, list_domains, place_bounce, read_original_headers, read_original_message,
    read_queued, remove_state_of, split_address, tie_of, valid_domain, Claimed, Placed, Queue,
    ACTIVE_DIR, TMP_DIR,
};
use crate::dsn::{self, Kind, RecipientReport, Report};
use crate::settle;

/// The folder inside a domain folder holding messages put on hold by
/// `postman hold` (Postfix's hold queue). A dot name: the scanner skips it.
pub const HOLD_DIR: &str = ".hold";

/// The reason a `postman bounce` gives each recipient.
pub const ADMIN_BOUNCE_REASON: &str = "message bounced by the administrator";

/// A message's queue id: its domain folder and file name, `domain/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId {
    /// The domain folder.
    pub domain: String,
    /// The file name.
    pub name: String,
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.name)
    }
}

/// A queue id as the operator wrote it: `domain/name` or a bare `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRef {
    /// The domain, lower-cased, when one was given.
    pub domain: Option<String>,
    /// The file name.
    pub name: String,
    /// The text as given, for messages.
    pub given: String,
}

impl QueueRef {
    /// Parses `domain/name` or `name`. The name must be one path component
    /// that can be a queue file (not empty, not starting with `.`, not
    /// `tmp`); the domain a queue folder name ([`valid_domain`] after
    /// lower-casing).
    pub fn parse(given: &str) -> Result<QueueRef, AdminError> {
        let bad = |reason| AdminError::BadId {
            given: given.to_owned(),
            reason,
        };
        let (domain, name) = match given.split_once('/') {
            Some((domain, name)) => {
                let domain = domain.to_ascii_lowercase();
                if !valid_domain(&domain) {
                    return Err(bad("the part before '/' is not a queue domain folder name"));
                }
                (Some(domain), name)
            }
            None => (None, given),
        };
        if name.is_empty() {
            return Err(bad("empty file name (expected domain/name or name)"));
        }
        if name.contains(['/', '\0']) || name.starts_with('.') || name == TMP_DIR {
            return Err(bad(
                "not a queue file name (one path component, not starting with '.', not tmp)",
            ));
        }
        Ok(QueueRef {
            domain,
            name: name.to_owned(),
            given: given.to_owned(),
        })
    }
}

/// Where a copy of a message lies inside its domain folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `<domain>/<name>`.
    Queued,
    /// `<domain>/.hold/<name>`.
    Held,
    /// `<domain>/.active/<owner>/<name>`: a delivery is in progress.
    Active {
        /// Who claimed it.
        owner: String,
    },
}

/// A message found by [`locate`]: its id and every place it lies (one,
/// except after a crash left a duplicate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The resolved id.
    pub id: QueueId,
    /// Where it is.
    pub places: Vec<Place>,
}

impl Located {
    fn has(&self, place: &Place) -> bool {
        self.places.contains(place)
    }

    fn active_owner(&self) -> Option<&str> {
        self.places.iter().find_map(|p| match p {
            Place::Active { owner } => Some(owner.as_str()),
            _ => None,
        })
    }
}

/// Why an operator's command could not be carried out for one id.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The id is not `domain/name` or `name`.
    #[error("invalid queue id {given:?}: {reason}")]
    BadId {
        /// The id as given.
        given: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// No message has that id (delivered, deleted, or mistyped).
    #[error("{given}: no such message in the queue (delivered, deleted, or mistyped?)")]
    NotFound {
        /// The id as given.
        given: String,
    },
    /// A bare name found in several domain folders.
    #[error("{given}: ambiguous, it is in several domains ({}); write domain/name", ids.join(", "))]
    Ambiguous {
        /// The id as given.
        given: String,
        /// The matching `domain/name`s.
        ids: Vec<String>,
    },
    /// A running postman is delivering the message.
    #[error("{id}: being delivered (claimed by {owner}); try again when the attempt ends")]
    Busy {
        /// The message.
        id: QueueId,
        /// The claim's owner.
        owner: String,
    },
    /// The name the message should move to is taken.
    #[error("{id}: {} already exists; move one of them aside by hand", path.display())]
    Exists {
        /// The message.
        id: QueueId,
        /// The taken path.
        path: PathBuf,
    },
    /// The message's envelope block cannot be read, so it cannot be bounced.
    #[error("{id}: cannot read its envelope: {reason}; delete it instead, or look at {}", path.display())]
    Unreadable {
        /// The message.
        id: QueueId,
        /// Where it is.
        path: PathBuf,
        /// The parse or read error.
        reason: String,
    },
    /// A file operation failed.
    #[error("{id}: cannot {action}: {source}")]
    Io {
        /// The message (or `domain/*`).
        id: String,
        /// What was being done.
        action: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

fn io_error(id: &QueueId, action: &'static str, source: io::Error) -> AdminError {
    AdminError::Io {
        id: id.to_string(),
        action,
        source,
    }
}

/// Finds the message `r` names: in its domain, or in every domain folder
/// for a bare name (more than one domain is [`AdminError::Ambiguous`]).
pub fn locate(queue: &Queue, r: &QueueRef) -> Result<Located, AdminError> {
    let domains = match &r.domain {
        Some(domain) => vec![domain.clone()],
        None => match list_domains(queue) {
            Ok(domains) => domains,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(AdminError::Io {
                    id: r.given.clone(),
                    action: "list the domain folders",
                    source,
                })
            }
        },
    };
    let mut found: Vec<Located> = Vec::new();
    for domain in domains {
        let places = places_in(queue, &domain, &r.name).map_err(|source| AdminError::Io {
            id: format!("{domain}/{}", r.name),
            action: "look for the message",
            source,
        })?;
        if !places.is_empty() {
            found.push(Located {
                id: QueueId {
                    domain,
                    name: r.name.clone(),
                },
                places,
            });
        }
    }
    match found.len() {
        0 => Err(AdminError::NotFound {
            given: r.given.clone(),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(AdminError::Ambiguous {
            given: r.given.clone(),
            ids: found.iter().map(|l| l.id.to_string()).collect(),
        }),
    }
}

fn places_in(queue: &Queue, domain: &str, name: &str) -> io::Result<Vec<Place>> {
    let dir = match queue.domain(domain) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut places = Vec::new();
    if is_file(&dir, name)? {
        places.push(Place::Queued);
    }
    if let Some(hold) = sub_dir(&dir, HOLD_DIR)? {
        if is_file(&hold, name)? {
            places.push(Place::Held);
        }
    }
    let Some(active) = sub_dir(&dir, ACTIVE_DIR)? else {
        return Ok(places);
    };
    for owner in active.entries()? {
        if owner.kind != EntryKind::Dir {
            continue;
        }
        if is_file(&active.dir(&owner.name)?, name)? {
            places.push(Place::Active {
                owner: owner.name.to_string_lossy().into_owned(),
            });
        }
    }
    Ok(places)
}

/// The folder `name` in `dir`; `None` when there is none (a link there is
/// refused).
fn sub_dir(dir: &QueueDir, name: &str) -> io::Result<Option<QueueDir>> {
    match dir.dir(name) {
        Ok(sub) => Ok(Some(sub)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `name` in `dir` is a regular file (a link is not).
fn is_file(dir: &QueueDir, name: &str) -> io::Result<bool> {
    Ok(dir.stat(name)?.is_some_and(|s| s.kind == EntryKind::File))
}

/// What a command did to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Moved to `.hold/`.
    Held,
    /// It was held already; nothing changed.
    AlreadyHeld,
    /// Moved from `.hold/` back into the queue.
    Released,
    /// It was queued and not held; nothing changed.
    NotHeld,
    /// Removed; `held` says whether it was on hold.
    Deleted {
        /// Whether the removed file was on hold.
        held: bool,
    },
    /// A DSN went to the sender and the message was removed.
    Bounced {
        /// The sender notified.
        sender: String,
        /// How many recipients the DSN names.
        recipients: usize,
        /// Where the DSN went.
        placed: Placed,
    },
    /// The message had the null sender: it was removed without a DSN (a
    /// bounce is never bounced).
    NullSenderDeleted,
    /// No recipient asked to hear of a failure (each one's NOTIFY lacks
    /// FAILURE, RFC 3461 §4.1): it was removed without a DSN.
    UnreportedDeleted,
}

/// The message is being delivered: the error to report, or `NotFound`
/// when it vanished entirely (delivered meanwhile).
fn gone_or_busy(queue: &Queue, id: &QueueId) -> AdminError {
    let r = QueueRef {
        domain: Some(id.domain.clone()),
        name: id.name.clone(),
        given: id.to_string(),
    };
    match locate(queue, &r) {
        Ok(located) => match located.active_owner() {
            Some(owner) => AdminError::Busy {
                id: id.clone(),
                owner: owner.to_owned(),
            },
            None => AdminError::NotFound {
                given: id.to_string(),
            },
        },
        Err(e) => e,
    }
}

/// Puts the message on hold: `<domain>/<name>` → `<domain>/.hold/<name>`.
/// A message being delivered is [`AdminError::Busy`]: hold it again when
/// the attempt ends (it comes back deferred, or is gone).
pub fn hold(queue: &Queue, r: &QueueRef) -> Result<(QueueId, Done), AdminError> {
    let located = locate(queue, r)?;
    let id = located.id.clone();
    hold_located(queue, located).map(|done| (id, done))
}

fn hold_located(queue: &Queue, located: Located) -> Result<Done, AdminError> {
    let id = located.id.clone();
    if !located.has(&Place::Queued) {
        if located.has(&Place::Held) {
            return Ok(Done::AlreadyHeld);
        }
        return Err(gone_or_busy(queue, &id));
    }
    let dir = domain_dir(queue, &id)?;
    let hold_dir = dir
        .dir_create(HOLD_DIR)
        .map_err(|e| io_error(&id, "create the hold folder", e))?;
    // A rename (RENAME_NOREPLACE): never over a held file of that name.
    match dir.rename_no_clobber(&id.name, &hold_dir, &id.name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone_or_busy(queue, &id)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(AdminError::Exists {
                path: hold_dir.display_path(&id.name),
                id,
            })
        }
        Err(e) => return Err(io_error(&id, "move it to the hold folder", e)),
    }
    sync_both(&hold_dir, &dir).map_err(|e| io_error(&id, "sync the queue folders", e))?;
    Ok(Done::Held)
}

/// The message's domain folder.
fn domain_dir(queue: &Queue, id: &QueueId) -> Result<Arc<QueueDir>, AdminError> {
    queue
        .domain(&id.domain)
        .map_err(|e| io_error(id, "open the domain folder", e))
}

/// Releases a held message: `<domain>/.hold/<name>` → `<domain>/<name>`,
/// where the next scan finds it with its retry state as it was (`postman
/// flush` makes it due at once).
pub fn release(queue: &Queue, r: &QueueRef) -> Result<(QueueId, Done), AdminError> {
    let located = locate(queue, r)?;
    let id = located.id.clone();
    release_located(queue, r, located).map(|done| (id, done))
}

fn release_located(queue: &Queue, r: &QueueRef, located: Located) -> Result<Done, AdminError> {
    let id = located.id.clone();
    if !located.has(&Place::Held) {
        if located.has(&Place::Queued) {
            return Ok(Done::NotHeld);
        }
        return Err(gone_or_busy(queue, &id));
    }
    let dir = domain_dir(queue, &id)?;
    let hold_dir = dir
        .dir(HOLD_DIR)
        .map_err(|e| io_error(&id, "open the hold folder", e))?;
    match hold_dir.rename_no_clobber(&id.name, &dir, &id.name) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AdminError::NotFound {
                given: r.given.clone(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(AdminError::Exists {
                path: dir.display_path(&id.name),
                id,
            })
        }
        Err(e) => return Err(io_error(&id, "move it back into the queue", e)),
    }
    sync_both(&dir, &hold_dir).map_err(|e| io_error(&id, "sync the queue folders", e))?;
    Ok(Done::Released)
}

/// Deletes a queued or held message (every copy of it outside a claim).
/// One being delivered is [`AdminError::Busy`].
pub fn delete(queue: &Queue, r: &QueueRef) -> Result<(QueueId, Done), AdminError> {
    let located = locate(queue, r)?;
    let id = located.id.clone();
    delete_located(queue, located).map(|done| (id, done))
}

fn delete_located(queue: &Queue, located: Located) -> Result<Done, AdminError> {
    let id = located.id.clone();
    let dir = domain_dir(queue, &id)?;
    let mut done = None;
    // Its state file goes with it: the one that names what is deleted.
    let tie_in = |from: &QueueDir| {
        from.open_file(&id.name)
            .ok()
            .and_then(|(mut file, meta)| tie_of(&mut file, meta.len()).ok().flatten())
    };
    let queued_tie = tie_in(&dir);
    let held_tie = dir.dir(HOLD_DIR).ok().and_then(|hold| tie_in(&hold));
    if located.has(&Place::Queued) {
        // unlink(2) is atomic against a daemon's claim: one of them wins.
        match dir.remove_file(&id.name) {
            Ok(()) => done = Some(Done::Deleted { held: false }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&id, "remove it", e)),
        }
    }
    if located.has(&Place::Held) {
        let removed = dir
            .dir(HOLD_DIR)
            .and_then(|hold| hold.remove_file(&id.name));
        match removed {
            Ok(()) => done = done.or(Some(Done::Deleted { held: true })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&id, "remove it from the hold folder", e)),
        }
    }
    match done {
        Some(done) => {
            for tie in [queued_tie, held_tie] {
                remove_state_of(&dir, &id.name, tie)
                    .map_err(|e| io_error(&id, "remove its state file", e))?;
            }
            dir.sync()
                .map_err(|e| io_error(&id, "sync the domain folder", e))?;
            Ok(done)
        }
        None => Err(gone_or_busy(queue, &id)),
    }
}

/// What [`bounce`] needs besides the message.
#[derive(Debug, Clone, Copy)]
pub struct BounceContext<'a> {
    /// `application.hostname`: the DSN's reporting MTA.
    pub hostname: &'a str,
    /// `application.local_domains`: senders there get the DSN in their
    /// Maildir.
    pub local_domains: &'a [String],
    /// The claim owner of this process (`<host>.<pid>.<start>`).
    pub owner: &'a str,
    /// The DSN's date.
    pub now: SystemTime,
    /// A unique token: the DSN's file name and Message-ID.
    pub token: &'a str,
    /// `delivery.bounce_size_limit`: the largest message returned whole
    /// to a sender who asked with RET=FULL.
    pub bounce_size_limit: usize,
}

/// Bounces a queued or held message now: every pending recipient whose
/// NOTIFY asks for failures (or who has none) is reported failed with
/// [`ADMIN_BOUNCE_REASON`] (status 5.0.0) in one DSN
/// to the sender (into its Maildir with [`place_bounce`] when its domain is
/// local, else queued from the null sender with [`enqueue()`]), then the
/// message is removed. A message
/// from the null sender is removed without a DSN ([`Done::NullSenderDeleted`]),
/// and so is one whose recipients all asked not to hear of failures
/// ([`Done::UnreportedDeleted`]).
/// The message is claimed first, so a running delivery is never disturbed
/// (that is [`AdminError::Busy`]); on any failure it is put back unchanged.
pub fn bounce(
    queue: &Queue,
    r: &QueueRef,
    ctx: &BounceContext<'_>,
) -> Result<(QueueId, Done), AdminError> {
    let located = locate(queue, r)?;
    let id = located.id.clone();
    bounce_located(queue, located, ctx).map(|done| (id, done))
}

fn bounce_located(
    queue: &Queue,
    located: Located,
    ctx: &BounceContext<'_>,
) -> Result<Done, AdminError> {
    let id = located.id.clone();
    let taken = if located.has(&Place::Queued) {
        match claim(queue, &id.domain, &id.name, ctx.owner) {
            Ok(Some(claimed)) => Some(Taken::Queued(claimed)),
            Ok(None) => None,
            Err(e) => return Err(io_error(&id, "claim it", e)),
        }
    } else {
        None
    };
    let taken = match taken {
        Some(taken) => taken,
        None if located.has(&Place::Held) => {
            let dir = domain_dir(queue, &id)?;
            let hold = dir
                .dir(HOLD_DIR)
                .map_err(|e| io_error(&id, "open the hold folder", e))?;
            Taken::Held(hold, id.name.clone(), dir)
        }
        None => return Err(gone_or_busy(queue, &id)),
    };
    let result = bounce_taken(queue, &id, &taken, ctx);
    let outcome = match result {
        Ok(done) => taken
            .remove()
            .map(|()| done)
            .map_err(|e| io_error(&id, "remove it after the bounce", e)),
        Err(e) => {
            if let Err(back) = taken.give_back() {
                return Err(io_error(&id, "put it back after a failed bounce", back));
            }
            Err(e)
        }
    };
    remove_owner_dir(queue, &id.domain, ctx.owner);
    outcome
}

fn bounce_taken(
    queue: &Queue,
    id: &QueueId,
    taken: &Taken,
    ctx: &BounceContext<'_>,
) -> Result<Done, AdminError> {
    let path = taken.path();
    let unreadable = |reason: String| AdminError::Unreadable {
        id: id.clone(),
        path: path.clone(),
        reason,
    };
    let (mut file, meta) = taken.open().map_err(|e| unreadable(e.to_string()))?;
    let dir = domain_dir(queue, id)?;
    let queued = read_queued(&dir, &id.name, &mut file, meta.len(), &id.domain)
        .map_err(|e| unreadable(e.to_string()))?;
    let (envelope, retry) = (queued.envelope, queued.retry);
    if !dsn::should_bounce(&envelope.sender) {
        return Ok(Done::NullSenderDeleted);
    }
    let arrival = match envelope.arrival {
        Some(arrival) => arrival,
        None => meta.modified().unwrap_or(UNIX_EPOCH),
    };
    let whole = if settle::returns_full(&envelope.params) {
        read_original_message(&file, envelope.body_offset, ctx.bounce_size_limit)
            .map_err(|e| io_error(id, "read it", e))?
    } else {
        None
    };
    let headers = match whole {
        Some(_) => Vec::new(),
        None => read_original_headers(&file, envelope.body_offset)
            .map_err(|e| io_error(id, "read its headers", e))?,
    };
    // As after a delivery attempt: only recipients whose NOTIFY asks for
    // failures are named (see `settle`).
    let reports: Vec<RecipientReport> = envelope
        .recipients
        .iter()
        .filter(|address| RcptParams::wants_failure(envelope.recipient_params(address)))
        .map(|address| RecipientReport {
            address: address.clone(),
            orcpt: envelope
                .recipient_params(address)
                .and_then(|p| p.orcpt.as_ref())
                .map(|o| o.for_report()),
            status: dsn::STATUS_PERMANENT,
            remote_mta: None,
            reply: None,
            reason: ADMIN_BOUNCE_REASON.to_owned(),
            last_attempt: retry.last_attempt,
        })
        .collect();
    if reports.is_empty() {
        return Ok(Done::UnreportedDeleted);
    }
    let envid = envelope.params.envid_printable();
    let report = Report {
        kind: Kind::Failure,
        reporting_mta: ctx.hostname,
        queue_id: Some(&id.name),
        arrival,
        original_sender: &envelope.sender,
        recipients: &reports,
        envid: envid.as_deref(),
        returned: match &whole {
            Some(message) => dsn::Returned::Message(message),
            None => dsn::Returned::Headers(&headers),
        },
        date: ctx.now,
        message_id: ctx.token,
        will_retry_until: None,
    };
    let message = dsn::render(&report);
    let placed = match split_address(&envelope.sender) {
        // A remote sender's notification is queued with a rename (see
        // `enqueue`) rather than `place_bounce`'s link, so that a running
        // postman's scanner sees it arrive (IN_MOVED_TO) and sends it at once.
        Some((_, domain)) if !is_local(&domain, ctx.local_domains) => {
            let done = enqueue(
                queue,
                "",
                std::slice::from_ref(&envelope.sender),
                &SenderParams::default(),
                &mut message.as_slice(),
                ctx.now,
                || ctx.token.to_owned(),
            )
            .map_err(|e| {
                io_error(
                    id,
                    "queue the bounce",
                    io::Error::new(io::ErrorKind::InvalidInput, e),
                )
            })?;
            let queued = done.ids.first().ok_or_else(|| {
                io_error(
                    id,
                    "queue the bounce",
                    io::Error::other("nothing was queued"),
                )
            })?;
            Placed::Remote(queue.layout().message_path(&queued.domain, &queued.name))
        }
        _ => place_bounce(
            queue,
            ctx.local_domains,
            &envelope.sender,
            ctx.now,
            &message,
            ctx.token,
        )
        .map_err(|e| io_error(id, "write the bounce", e))?,
    };
    Ok(Done::Bounced {
        sender: envelope.sender,
        recipients: reports.len(),
        placed,
    })
}

/// A message taken for a bounce.
enum Taken {
    /// Claimed from the queue: no delivery can start on it.
    Queued(Claimed),
    /// Read where it is held (the hold folder, the name, and the domain
    /// folder with its state file). No postman delivers from `.hold/`; it
    /// is not moved into a claim, because a crash would then leave it for
    /// the next start to put back into the queue, where it would be
    /// delivered. A crash at worst leaves it held after its bounce went out.
    Held(QueueDir, String, Arc<QueueDir>),
}

impl Taken {
    fn path(&self) -> PathBuf {
        match self {
            Taken::Queued(claimed) => claimed.path(),
            Taken::Held(hold, name, _) => hold.display_path(name),
        }
    }

    fn open(&self) -> io::Result<(File, Metadata)> {
        match self {
            Taken::Queued(claimed) => claimed.open(),
            Taken::Held(hold, name, _) => hold.open_file(name),
        }
    }

    fn remove(self) -> io::Result<()> {
        match self {
            Taken::Queued(claimed) => claimed.complete(),
            Taken::Held(hold, name, domain_dir) => {
                let tie = hold
                    .open_file(&name)
                    .ok()
                    .and_then(|(mut file, meta)| tie_of(&mut file, meta.len()).ok().flatten());
                hold.remove_file(&name)?;
                remove_state_of(&domain_dir, &name, tie)
            }
        }
    }

    fn give_back(self) -> io::Result<()> {
        match self {
            Taken::Queued(claimed) => claimed.release(),
            Taken::Held(..) => Ok(()),
        }
    }
}

fn sync_both(a: &QueueDir, b: &QueueDir) -> io::Result<()> {
    a.sync()?;
    b.sync()
}

/// Removes this process's empty claim folder in `domain` (best effort:
/// it is harmless when left, and fails when something is still in it).
pub(crate) fn remove_owner_dir(queue: &Queue, domain: &str, owner: &str) {
    if let Ok(active) = queue.domain(domain).and_then(|d| d.dir(ACTIVE_DIR)) {
        let _ = active.remove_dir(owner);
    }
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
