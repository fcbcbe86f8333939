//! What is in the queue, for `postman queue`: every message of every domain
//! folder (ready, deferred, claimed by a running delivery, held), read from
//! its envelope block (with the sender's DSN and REQUIRETLS parameters) and
//! `X-Postman-*` retry fields without touching it,
//! and a per-domain summary with an age histogram in the manner of Postfix's
//! qshape. Files that cannot be parsed are listed with their error.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::HOLD_DIR;
use crate::queue::dirfd::{EntryKind, QueueDir};
use crate::queue::params::{MsgParams, RcptParams};
use crate::queue::{
    escape_name, list_domains, read_backoff, read_queued, DomainBackoff, Queue, ReadError,
    RetryState, ACTIVE_DIR, FAILED_DIR, QUARANTINE_DIR, TMP_DIR,
};

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Waiting in `<domain>/`, due now (or as soon as its domain's backoff
    /// ends).
    Ready,
    /// Waiting in `<domain>/` with an `X-Postman-Next-Attempt` in the future.
    Deferred,
    /// Claimed by a running postman: `<domain>/.active/<owner>/<name>`.
    Active,
    /// Put on hold by the operator: `<domain>/.hold/<name>`.
    Held,
}

impl State {
    /// The word `postman queue` prints (and its JSON `state` field).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Deferred => "deferred",
            State::Active => "active",
            State::Held => "held",
        }
    }
}

/// One message in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The domain folder.
    pub domain: String,
    /// The file name: with the domain, the queue id `domain/name`.
    pub name: String,
    /// Where it stands. A file that cannot be parsed is `Ready` in the
    /// queue folder (the daemon will quarantine it), else where it lies.
    pub state: State,
    /// For [`State::Active`]: who claimed it (`<host>.<pid>.<start>`).
    pub owner: Option<String>,
    /// Where the file is.
    pub path: PathBuf,
    /// The whole file's size in bytes.
    pub size: u64,
    /// `X-Postman-Date`, or the file's modification time without one (or
    /// when the file cannot be parsed).
    pub arrival: SystemTime,
    /// The envelope and retry state, or why they cannot be read.
    pub detail: Result<Detail, String>,
}

impl Entry {
    /// `domain/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.domain, self.name)
    }
}

/// What an entry's envelope block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detail {
    /// The envelope sender; "" is the null sender.
    pub sender: String,
    /// The recipients still to deliver.
    pub recipients: Vec<String>,
    /// The sender's RET, ENVID and REQUIRETLS.
    pub params: MsgParams,
    /// The DSN parameters of those of `recipients` that have any.
    pub rcpt_params: BTreeMap<String, RcptParams>,
    /// Earlier attempts.
    pub retry: RetryState,
}

/// Every message of `domain` (all domains when `None`), sorted by arrival,
/// oldest first, then by id. `now` decides ready against deferred. Missing
/// folders are an empty queue; a file that vanishes while it is read (a
/// delivery finished) is left out. A queue entry that is a link or special
/// file is listed, unopened, with what it is as its error; one whose name
/// is not UTF-8 under its name escaped ([`escape_name`]), with the same
/// note.
pub fn list_queue(queue: &Queue, domain: Option<&str>, now: SystemTime) -> io::Result<Vec<Entry>> {
    let domains = match domain {
        Some(d) => vec![d.to_owned()],
        None => match list_domains(queue) {
            Ok(domains) => domains,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        },
    };
    let mut entries = Vec::new();
    for domain in &domains {
        list_domain(queue, domain, now, &mut entries)?;
    }
    entries.sort_by(|a, b| {
        a.arrival
            .cmp(&b.arrival)
            .then_with(|| a.domain.cmp(&b.domain))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(entries)
}

fn list_domain(
    queue: &Queue,
    domain: &str,
    now: SystemTime,
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    let Some(dir) = or_none(queue.domain(domain))? else {
        return Ok(());
    };
    let place = |state, owner| Place {
        domain,
        domain_dir: &dir,
        state,
        owner,
        now,
    };
    for name in queue_entries(&dir)? {
        place(State::Ready, None).push(out, &dir, name);
    }
    if let Some(hold) = or_none(dir.dir(HOLD_DIR))? {
        for name in queue_entries(&hold)? {
            place(State::Held, None).push(out, &hold, name);
        }
    }
    let Some(active) = or_none(dir.dir(ACTIVE_DIR))? else {
        return Ok(());
    };
    for owner in active.entries()? {
        if owner.kind != EntryKind::Dir || owner.name.as_bytes().starts_with(b".") {
            continue;
        }
        let Some(owner_dir) = or_none(active.dir(&owner.name))? else {
            continue;
        };
        let owner = owner.name.to_string_lossy().into_owned();
        for name in queue_entries(&owner_dir)? {
            place(State::Active, Some(owner.clone())).push(out, &owner_dir, name);
        }
    }
    Ok(())
}

/// `Ok(None)` for `NotFound`: a folder that is not there is empty.
fn or_none<T>(result: io::Result<T>) -> io::Result<Option<T>> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// The names in `dir` that are queue entries: anything but folders, dot
/// names and `tmp`, sorted. Links and special files are included (they are
/// listed as what they are, never opened).
fn queue_entries(dir: &QueueDir) -> io::Result<Vec<OsString>> {
    let mut names: Vec<OsString> = dir
        .entries()?
        .into_iter()
        .filter(|e| e.kind != EntryKind::Dir && !e.name.as_bytes().starts_with(b"."))
        .map(|e| e.name)
        .filter(|name| name != TMP_DIR)
        .collect();
    names.sort();
    Ok(names)
}

/// Where the entries being listed lie.
struct Place<'a> {
    domain: &'a str,
    /// The domain folder, where the state files are.
    domain_dir: &'a QueueDir,
    state: State,
    owner: Option<String>,
    now: SystemTime,
}

impl Place<'_> {
    fn push(&self, out: &mut Vec<Entry>, dir: &QueueDir, name: OsString) {
        if let Some(entry) = self.read_entry(dir, name) {
            out.push(entry);
        }
    }

    /// Reads one file into an entry; `None` when it is gone.
    fn read_entry(&self, dir: &QueueDir, raw: OsString) -> Option<Entry> {
        let name = escape_name(&raw);
        let path = dir.display_path(&raw);
        let mut entry = Entry {
            domain: self.domain.to_owned(),
            name,
            state: self.state,
            owner: self.owner.clone(),
            path,
            size: 0,
            arrival: UNIX_EPOCH,
            detail: Err(String::new()),
        };
        let stat = match dir.stat(&raw) {
            Ok(Some(stat)) => stat,
            Ok(None) => return None,
            Err(e) => {
                entry.detail = Err(e.to_string());
                return Some(entry);
            }
        };
        entry.size = stat.len;
        entry.arrival = stat.modified;
        if raw.to_str().is_none() {
            entry.detail = Err(format!(
                "the file name {:?} is not UTF-8: a running postman renames it to {:?} and delivers it",
                raw.to_string_lossy(),
                entry.name
            ));
            return Some(entry);
        }
        let read = dir
            .open_file(&raw)
            .map_err(ReadError::Io)
            .and_then(|(mut file, meta)| {
                read_queued(
                    self.domain_dir,
                    &entry.name,
                    &mut file,
                    meta.len(),
                    self.domain,
                )
            });
        entry.detail = match read {
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => Err(e.to_string()),
            Ok(queued) => {
                let (envelope, retry) = (queued.envelope, queued.retry);
                entry.arrival = envelope.arrival.unwrap_or(stat.modified);
                if self.state == State::Ready && retry.next_attempt.is_some_and(|at| at > self.now)
                {
                    entry.state = State::Deferred;
                }
                Ok(Detail {
                    sender: envelope.sender,
                    recipients: envelope.recipients,
                    params: envelope.params,
                    rcpt_params: envelope.rcpt_params,
                    retry,
                })
            }
        };
        Some(entry)
    }
}

/// Upper bounds of the age buckets in minutes, as Postfix's qshape prints
/// them: a message of age `a` counts in the first bucket with `a < bound`;
/// the last bucket takes everything older.
pub const AGE_BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// The number of age columns: one per bound and one for older messages.
pub const AGE_COLUMNS: usize = AGE_BUCKETS.len() + 1;

/// One domain's line of `postman queue summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainSummary {
    /// The domain folder; `TOTAL` for the sum of all.
    pub domain: String,
    /// Messages per state.
    pub ready: u64,
    /// See [`State::Deferred`].
    pub deferred: u64,
    /// See [`State::Active`].
    pub active: u64,
    /// See [`State::Held`].
    pub held: u64,
    /// Messages per age bucket ([`AGE_BUCKETS`]).
    pub ages: [u64; AGE_COLUMNS],
    /// Total size in bytes.
    pub bytes: u64,
    /// Files set aside in `.failed/` (not counted in the total).
    pub failed: u64,
    /// Files set aside in `.quarantine/` (not counted in the total).
    pub quarantined: u64,
    /// The domain's backoff, when `<domain>/.backoff` says it waits.
    pub backoff: Option<DomainBackoff>,
}

impl DomainSummary {
    /// Adds `line`'s counts to these (a total's).
    pub fn add_up(&mut self, line: &DomainSummary) {
        self.ready += line.ready;
        self.deferred += line.deferred;
        self.active += line.active;
        self.held += line.held;
        self.bytes += line.bytes;
        self.failed += line.failed;
        self.quarantined += line.quarantined;
        for (sum, n) in self.ages.iter_mut().zip(line.ages) {
            *sum += n;
        }
    }

    /// Messages in the queue: ready + deferred + active + held.
    pub fn total(&self) -> u64 {
        self.ready + self.deferred + self.active + self.held
    }

    fn add(&mut self, entry: &Entry, now: SystemTime) {
        match entry.state {
            State::Ready => self.ready += 1,
            State::Deferred => self.deferred += 1,
            State::Active => self.active += 1,
            State::Held => self.held += 1,
        }
        self.ages[age_bucket(now, entry.arrival)] += 1;
        self.bytes += entry.size;
    }
}

/// The age column of a message that arrived at `arrival`; one from the
/// future counts as new.
pub fn age_bucket(now: SystemTime, arrival: SystemTime) -> usize {
    let minutes = now
        .duration_since(arrival)
        .unwrap_or(Duration::ZERO)
        .as_secs()
        / 60;
    AGE_BUCKETS
        .iter()
        .position(|&bound| minutes < bound)
        .unwrap_or(AGE_BUCKETS.len())
}

/// The per-domain summary of `entries` (from [`list_queue`]) plus the set
/// aside files and backoffs of those domains: the `TOTAL` line first, then
/// the domains with the most messages first (ties by name). `domains` are
/// the domain folders to report even when they hold no message in the
/// queue (they may hold failed or quarantined files); domains without
/// anything to report are left out.
pub fn summarize(
    queue: &Queue,
    entries: &[Entry],
    domains: &[String],
    now: SystemTime,
) -> Vec<DomainSummary> {
    let mut per: std::collections::BTreeMap<&str, DomainSummary> = Default::default();
    for entry in entries {
        per.entry(&entry.domain)
            .or_insert_with(|| named(&entry.domain))
            .add(entry, now);
    }
    for domain in domains {
        let dir = queue.domain(domain).ok();
        let failed = count_set_aside(dir.as_deref(), FAILED_DIR);
        let quarantined = count_set_aside(dir.as_deref(), QUARANTINE_DIR);
        let backoff = read_backoff(queue, domain)
            .ok()
            .flatten()
            .filter(|b| b.until > now);
        if failed == 0
            && quarantined == 0
            && backoff.is_none()
            && !per.contains_key(domain.as_str())
        {
            continue;
        }
        let line = per.entry(domain).or_insert_with(|| named(domain));
        line.failed = failed;
        line.quarantined = quarantined;
        line.backoff = backoff;
    }
    let mut total = named("TOTAL");
    for line in per.values() {
        total.add_up(line);
    }
    let mut lines: Vec<DomainSummary> = per.into_values().collect();
    lines.sort_by(|a, b| {
        b.total()
            .cmp(&a.total())
            .then_with(|| a.domain.cmp(&b.domain))
    });
    lines.insert(0, total);
    lines
}

fn named(domain: &str) -> DomainSummary {
    DomainSummary {
        domain: domain.to_owned(),
        ..DomainSummary::default()
    }
}

/// Set-aside entries in `<domain>/<sub>`: anything but folders, `*.reason`
/// and dot names.
fn count_set_aside(dir: Option<&QueueDir>, sub: &str) -> u64 {
    let Some(entries) = dir
        .and_then(|d| d.dir(sub).ok())
        .and_then(|d| d.entries().ok())
    else {
        return 0;
    };
    entries
        .iter()
        .filter(|e| e.kind != EntryKind::Dir)
        .filter(|e| {
            !e.name.as_bytes().starts_with(b".") && !e.name.as_bytes().ends_with(b".reason")
        })
        .count() as u64
}

#[cfg(test)]
#[path = "listing_tests.rs"]
mod tests;
