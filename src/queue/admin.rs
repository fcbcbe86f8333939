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
mod enqueue;
mod flush;
mod listing;

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use address::{
    check_mailbox, parse_recipient, parse_sender, AddressError, Role, MAX_DOMAIN, MAX_LOCAL_PART,
    MAX_MAILBOX,
};
pub use enqueue::{enqueue, group_by_domain, unique_name, EnqueueError};
pub use flush::{flush, FlushReport};
pub use listing::{
    age_bucket, list_queue, summarize, Detail, DomainSummary, Entry, State, AGE_BUCKETS,
    AGE_COLUMNS,
};

use super::rewrite::sync_dir;
use super::{
    claim, is_local, list_domains, place_bounce, read_envelope, read_original_headers,
    split_address, valid_domain, Claimed, Layout, Placed, RetryState, ACTIVE_DIR, TMP_DIR,
};
use crate::dsn::{self, Kind, RecipientReport, Report};

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
pub fn locate(layout: &Layout, r: &QueueRef) -> Result<Located, AdminError> {
    let domains = match &r.domain {
        Some(domain) => vec![domain.clone()],
        None => match list_domains(layout) {
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
        let places = places_in(layout, &domain, &r.name).map_err(|source| AdminError::Io {
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

fn places_in(layout: &Layout, domain: &str, name: &str) -> io::Result<Vec<Place>> {
    let dir = layout.domain_dir(domain);
    let mut places = Vec::new();
    if is_file(&dir.join(name))? {
        places.push(Place::Queued);
    }
    if is_file(&dir.join(HOLD_DIR).join(name))? {
        places.push(Place::Held);
    }
    let active = dir.join(ACTIVE_DIR);
    let owners = match fs::read_dir(&active) {
        Ok(owners) => owners,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(places),
        Err(e) => return Err(e),
    };
    for owner in owners {
        let owner = owner?;
        if is_file(&owner.path().join(name))? {
            places.push(Place::Active {
                owner: owner.file_name().to_string_lossy().into_owned(),
            });
        }
    }
    Ok(places)
}

fn is_file(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(meta.is_file()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
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
}

/// The message is being delivered: the error to report, or `NotFound`
/// when it vanished entirely (delivered meanwhile).
fn gone_or_busy(layout: &Layout, id: &QueueId) -> AdminError {
    let r = QueueRef {
        domain: Some(id.domain.clone()),
        name: id.name.clone(),
        given: id.to_string(),
    };
    match locate(layout, &r) {
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
pub fn hold(layout: &Layout, r: &QueueRef) -> Result<(QueueId, Done), AdminError> {
    let located = locate(layout, r)?;
    let id = located.id.clone();
    hold_located(layout, located).map(|done| (id, done))
}

fn hold_located(layout: &Layout, located: Located) -> Result<Done, AdminError> {
    let id = located.id.clone();
    if !located.has(&Place::Queued) {
        if located.has(&Place::Held) {
            return Ok(Done::AlreadyHeld);
        }
        return Err(gone_or_busy(layout, &id));
    }
    let dir = layout.domain_dir(&id.domain);
    let hold_dir = dir.join(HOLD_DIR);
    fs::create_dir_all(&hold_dir).map_err(|e| io_error(&id, "create the hold folder", e))?;
    match rename_no_clobber(&dir.join(&id.name), &hold_dir.join(&id.name)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone_or_busy(layout, &id)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(AdminError::Exists {
                path: hold_dir.join(&id.name),
                id,
            })
        }
        Err(e) => return Err(io_error(&id, "move it to the hold folder", e)),
    }
    sync_both(&hold_dir, &dir).map_err(|e| io_error(&id, "sync the queue folders", e))?;
    Ok(Done::Held)
}

/// Releases a held message: `<domain>/.hold/<name>` → `<domain>/<name>`,
/// where the next scan finds it with its retry state as it was (`postman
/// flush` makes it due at once).
pub fn release(layout: &Layout, r: &QueueRef) -> Result<(QueueId, Done), AdminError> {
    let located = locate(layout, r)?;
    let id = located.id.clone();
    release_located(layout, r, located).map(|done| (id, done))
}

fn release_located(layout: &Layout, r: &QueueRef, located: Located) -> Result<Done, AdminError> {
    let id = located.id.clone();
    if !located.has(&Place::Held) {
        if located.has(&Place::Queued) {
            return Ok(Done::NotHeld);
        }
        return Err(gone_or_busy(layout, &id));
    }
    let dir = layout.domain_dir(&id.domain);
    let hold_dir = dir.join(HOLD_DIR);
    match rename_no_clobber(&hold_dir.join(&id.name), &dir.join(&id.name)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AdminError::NotFound {
                given: r.given.clone(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(AdminError::Exists {
                path: dir.join(&id.name),
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
pub fn delete(layout: &Layout, r: &QueueRef) -> Result<(QueueId, Done), AdminError> {
    let located = locate(layout, r)?;
    let id = located.id.clone();
    delete_located(layout, located).map(|done| (id, done))
}

fn delete_located(layout: &Layout, located: Located) -> Result<Done, AdminError> {
    let id = located.id.clone();
    let dir = layout.domain_dir(&id.domain);
    let mut done = None;
    if located.has(&Place::Queued) {
        // unlink(2) is atomic against a daemon's claim: one of them wins.
        match fs::remove_file(dir.join(&id.name)) {
            Ok(()) => done = Some(Done::Deleted { held: false }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&id, "remove it", e)),
        }
    }
    if located.has(&Place::Held) {
        match fs::remove_file(dir.join(HOLD_DIR).join(&id.name)) {
            Ok(()) => done = done.or(Some(Done::Deleted { held: true })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&id, "remove it from the hold folder", e)),
        }
    }
    match done {
        Some(done) => {
            sync_dir(&dir).map_err(|e| io_error(&id, "sync the domain folder", e))?;
            Ok(done)
        }
        None => Err(gone_or_busy(layout, &id)),
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
}

/// Bounces a queued or held message now: every pending recipient is
/// reported failed with [`ADMIN_BOUNCE_REASON`] (status 5.0.0) in one DSN
/// to the sender (into its Maildir with [`place_bounce`] when its domain is
/// local, else queued from the null sender with [`enqueue()`]), then the
/// message is removed. A message
/// from the null sender is removed without a DSN ([`Done::NullSenderDeleted`]).
/// The message is claimed first, so a running delivery is never disturbed
/// (that is [`AdminError::Busy`]); on any failure it is put back unchanged.
pub fn bounce(
    layout: &Layout,
    r: &QueueRef,
    ctx: &BounceContext<'_>,
) -> Result<(QueueId, Done), AdminError> {
    let located = locate(layout, r)?;
    let id = located.id.clone();
    bounce_located(layout, located, ctx).map(|done| (id, done))
}

fn bounce_located(
    layout: &Layout,
    located: Located,
    ctx: &BounceContext<'_>,
) -> Result<Done, AdminError> {
    let id = located.id.clone();
    let taken = if located.has(&Place::Queued) {
        match claim(layout, &id.domain, &id.name, ctx.owner) {
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
            Taken::Held(layout.domain_dir(&id.domain).join(HOLD_DIR).join(&id.name))
        }
        None => return Err(gone_or_busy(layout, &id)),
    };
    let result = bounce_taken(layout, &id, &taken, ctx);
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
    remove_owner_dir(layout, &id.domain, ctx.owner);
    outcome
}

fn bounce_taken(
    layout: &Layout,
    id: &QueueId,
    taken: &Taken,
    ctx: &BounceContext<'_>,
) -> Result<Done, AdminError> {
    let path = taken.path();
    let unreadable = |reason: String| AdminError::Unreadable {
        id: id.clone(),
        path: path.to_path_buf(),
        reason,
    };
    let envelope = read_envelope(path).map_err(|e| unreadable(e.to_string()))?;
    let retry = RetryState::from_envelope(&envelope).map_err(|e| unreadable(e.to_string()))?;
    if !dsn::should_bounce(&envelope.sender) {
        return Ok(Done::NullSenderDeleted);
    }
    let arrival = match envelope.arrival {
        Some(arrival) => arrival,
        None => fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH),
    };
    let headers = read_original_headers(path, envelope.body_offset)
        .map_err(|e| io_error(id, "read its headers", e))?;
    let reports: Vec<RecipientReport> = envelope
        .recipients
        .iter()
        .map(|address| RecipientReport {
            address: address.clone(),
            status: dsn::STATUS_PERMANENT,
            remote_mta: None,
            reply: None,
            reason: ADMIN_BOUNCE_REASON.to_owned(),
            last_attempt: retry.last_attempt,
        })
        .collect();
    let report = Report {
        kind: Kind::Failure,
        reporting_mta: ctx.hostname,
        queue_id: Some(&id.name),
        arrival,
        original_sender: &envelope.sender,
        recipients: &reports,
        original_headers: &headers,
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
            let ids = enqueue(
                layout,
                "",
                std::slice::from_ref(&envelope.sender),
                &message,
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
            let queued = ids.first().ok_or_else(|| {
                io_error(
                    id,
                    "queue the bounce",
                    io::Error::other("nothing was queued"),
                )
            })?;
            Placed::Remote(layout.message_path(&queued.domain, &queued.name))
        }
        _ => place_bounce(
            layout,
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
    /// Read where it is held. No postman delivers from `.hold/`; it is not
    /// moved into a claim, because a crash would then leave it for the
    /// next start to put back into the queue, where it would be delivered.
    /// A crash at worst leaves it held after its bounce went out.
    Held(PathBuf),
}

impl Taken {
    fn path(&self) -> &Path {
        match self {
            Taken::Queued(claimed) => claimed.path(),
            Taken::Held(path) => path,
        }
    }

    fn remove(self) -> io::Result<()> {
        match self {
            Taken::Queued(claimed) => claimed.complete(),
            Taken::Held(path) => fs::remove_file(path),
        }
    }

    fn give_back(self) -> io::Result<()> {
        match self {
            Taken::Queued(claimed) => claimed.release(),
            Taken::Held(_) => Ok(()),
        }
    }
}

/// Renames `from` to `to` unless `to` exists (`AlreadyExists`). A rename
/// (not a link, as elsewhere in the queue) so that the scanner's inotify
/// watch sees `IN_MOVED_TO`. The check and the rename are two steps; every
/// caller moves a name that only it can create at that moment (a file it
/// holds, under a name unique to the message), so nothing can appear in
/// between.
pub(crate) fn rename_no_clobber(from: &Path, to: &Path) -> io::Result<()> {
    match fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", to.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::rename(from, to),
        Err(e) => Err(e),
    }
}

fn sync_both(a: &Path, b: &Path) -> io::Result<()> {
    sync_dir(a)?;
    sync_dir(b)
}

/// Removes this process's empty claim folder in `domain` (best effort:
/// it is harmless when left, and fails when something is still in it).
pub(crate) fn remove_owner_dir(layout: &Layout, domain: &str, owner: &str) {
    let _ = fs::remove_dir(layout.domain_dir(domain).join(ACTIVE_DIR).join(owner));
}

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
