//! Suspensions by the operator (`postman suspend` / `postman resume`): one
//! small file per suspended domain or site under
//! `.OTHER_SERVERS/.suspend/`, named `domain:<domain>` or `site:<suffix>`
//! (a site is named by a suffix of its MX host names, matched as shaping
//! rules match them), written through `.suspend/tmp/` and a rename. A
//! running postman watches the folder and applies the whole set; a
//! command works on the files alone, so both are safe beside each other.
//!
//! ```text
//! until: 1764250300        (unix seconds, or none: until resumed)
//! since: 1764249400
//! reason: migrating the provider's DNS
//! ```
//!
//! A suspension whose `until` has passed is ignored and its file removed
//! by the next command or scan: suspending defers mail, it never loses it
//! nor keeps it for ever by accident. Parsing is pure and total, and a
//! file is read with a size limit: a hostile file is reported, never a
//! panic, and never longer than [`MAX_UNTIL`].

use std::fmt;
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backoff::MAX_UNTIL;
use super::dirfd::{EntryKind, QueueDir};
use super::state::one_line;
use super::tmpfile::replace_synced;
use super::{valid_domain, Queue, TMP_DIR};
use crate::config::suffix_matches;

/// The folder of suspensions under `.OTHER_SERVERS` (a dot name: never a
/// domain).
pub const SUSPEND_DIR: &str = ".suspend";

/// The most bytes of a suspension file read: three short lines.
pub const MAX_SUSPEND_FILE: u64 = 4096;

/// The longest `--for`: ten years. A longer one is a typo; no `--for` at
/// all suspends until `postman resume`.
pub const MAX_SUSPEND_FOR: Duration = Duration::from_secs(3650 * 86_400);

/// What a suspension holds back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// One recipient domain (its queue folder name).
    Domain(String),
    /// Every site with an MX host name under this suffix (`google.com`
    /// holds `aspmx.l.google.com`), as `delivery.site."<suffix>"` matches.
    Site(String),
}

impl Target {
    /// `domain` or `site`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Domain(_) => "domain",
            Target::Site(_) => "site",
        }
    }

    /// The domain or suffix.
    pub fn name(&self) -> &str {
        match self {
            Target::Domain(name) | Target::Site(name) => name,
        }
    }

    /// `domain:<name>` or `site:<name>`.
    pub fn file_name(&self) -> String {
        format!("{}:{}", self.kind(), self.name())
    }

    /// The target a file name stands for; `None` for a name postman never
    /// writes (then the file is reported and left alone).
    pub fn from_file_name(file: &str) -> Option<Target> {
        let (kind, name) = file.split_once(':')?;
        if !valid_domain(name) {
            return None;
        }
        match kind {
            "domain" => Some(Target::Domain(name.to_owned())),
            "site" => Some(Target::Site(name.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Target {
    /// `domain a.example`, `site google.com`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// A domain or suffix as given on the command line, as a [`Target`] name:
/// lower-cased, a final dot dropped, an LDH name in A-label form. `None`
/// when it is not one.
pub fn target_name(given: &str) -> Option<String> {
    let name = given.trim().trim_end_matches('.').to_ascii_lowercase();
    valid_domain(&name).then_some(name)
}

/// One suspension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspension {
    pub target: Target,
    /// When it ends by itself; `None`: at `postman resume`.
    pub until: Option<SystemTime>,
    /// When it was made (for people).
    pub since: Option<SystemTime>,
    /// Why, one line.
    pub reason: String,
}

impl Suspension {
    /// Whether it still holds at `now`.
    pub fn lasts_at(&self, now: SystemTime) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// Why the contents of a suspension file, or a `--for`, were not
/// understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuspendError {
    /// The file has no `until:` line, or its value is neither unix
    /// seconds nor `none`.
    #[error("no valid until: line (expected until: <unix seconds> or until: none)")]
    NoUntil,
    /// The `until:` is after the year 9999.
    #[error("until: {0} is after the year 9999")]
    TooLate(u64),
    /// A `--for` that is not a number with an optional unit.
    #[error("invalid duration {0:?}: expected seconds, or a number with s, m, h or d (90, 90s, 15m, 2h, 1d)")]
    Duration(String),
    /// A `--for` of nothing.
    #[error("a suspension for 0 seconds ends at once: give a longer --for")]
    ZeroDuration,
    /// A `--for` longer than [`MAX_SUSPEND_FOR`].
    #[error("--for {0} is longer than ten years; leave --for out to suspend until postman resume")]
    TooLong(String),
}

fn unix(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn from_unix(secs: u64) -> Result<SystemTime, SuspendError> {
    if secs > MAX_UNTIL {
        return Err(SuspendError::TooLate(secs));
    }
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .ok_or(SuspendError::TooLate(secs))
}

/// Parses the contents of `target`'s file: `key: value` lines, unknown
/// keys and lines without a colon ignored, later lines winning. Pure and
/// total.
pub fn parse_suspension(target: Target, bytes: &[u8]) -> Result<Suspension, SuspendError> {
    let text = String::from_utf8_lossy(bytes);
    let mut until = None;
    let mut since = None;
    let mut reason = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "until" if value == "none" => until = Some(None),
            "until" => until = value.parse::<u64>().ok().map(Some),
            "since" => since = value.parse::<u64>().ok(),
            "reason" => reason = one_line(value),
            _ => {}
        }
    }
    let until = match until.ok_or(SuspendError::NoUntil)? {
        Some(secs) => Some(from_unix(secs)?),
        None => None,
    };
    Ok(Suspension {
        target,
        until,
        since: since.and_then(|secs| from_unix(secs).ok()),
        reason,
    })
}

/// Seconds since the epoch, a part of a second counting as one: a
/// suspension written for 3 s never ends before 3 s are over.
fn unix_ceil(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
    })
}

/// The contents of a suspension file, which [`parse_suspension`] reads
/// back (times to the second; `until` rounded up).
pub fn render_suspension(suspension: &Suspension) -> String {
    let until = suspension
        .until
        .map_or_else(|| "none".to_owned(), |t| unix_ceil(t).to_string());
    let mut text = format!("until: {until}\n");
    if let Some(since) = suspension.since {
        text.push_str(&format!("since: {}\n", unix(since)));
    }
    text.push_str(&format!("reason: {}\n", one_line(&suspension.reason)));
    text
}

/// A `--for`: seconds, or a number with `s`, `m`, `h` or `d`, at most
/// [`MAX_SUSPEND_FOR`].
pub fn parse_duration(given: &str) -> Result<Duration, SuspendError> {
    let text = given.trim();
    let bad = || SuspendError::Duration(given.to_owned());
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let secs = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| SuspendError::TooLong(given.to_owned()))?;
    if secs == 0 {
        return Err(SuspendError::ZeroDuration);
    }
    if secs > MAX_SUSPEND_FOR.as_secs() {
        return Err(SuspendError::TooLong(given.to_owned()));
    }
    Ok(Duration::from_secs(secs))
}

/// Of suspensions `a` and `b`, the one that ends later (`None`: never).
fn longer<'a>(a: &'a Suspension, b: &'a Suspension) -> &'a Suspension {
    match (a.until, b.until) {
        (None, _) => a,
        (_, None) => b,
        (Some(x), Some(y)) if y > x => b,
        _ => a,
    }
}

/// The suspension that holds the domain `domain` in `set`, if any.
pub fn holding_domain<'a>(set: &'a [Suspension], domain: &str) -> Option<&'a Suspension> {
    set.iter()
        .filter(|s| matches!(&s.target, Target::Domain(name) if name == domain))
        .reduce(longer)
}

/// The suspension that holds a site whose MX host names are `hosts`: of
/// the site suffixes in `set` that match one of them (as shaping rules
/// match, [`suffix_matches`]), the one that lasts longest.
pub fn holding_site<'a>(set: &'a [Suspension], hosts: &[String]) -> Option<&'a Suspension> {
    set.iter()
        .filter(|s| match &s.target {
            Target::Site(suffix) => hosts.iter().any(|host| suffix_matches(suffix, host)),
            Target::Domain(_) => false,
        })
        .reduce(longer)
}

/// The suspension files on disk.
#[derive(Debug, Default)]
pub struct SuspendFiles {
    /// Those that hold at the time asked, sorted by target.
    pub active: Vec<Suspension>,
    /// Those whose time is over (the caller removes them with
    /// [`remove_expired`]).
    pub expired: Vec<Suspension>,
    /// Files that cannot be read or understood, with why: ignored.
    pub bad: Vec<(String, io::Error)>,
}

fn suspend_dir(queue: &Queue, create: bool) -> io::Result<Option<QueueDir>> {
    let remote = match queue.remote() {
        Err(e) if e.kind() == io::ErrorKind::NotFound && !create => return Ok(None),
        other => other?,
    };
    if create {
        return remote.dir_create(SUSPEND_DIR).map(Some);
    }
    match remote.dir(SUSPEND_DIR) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

fn read_in(dir: &QueueDir, target: Target) -> io::Result<Option<Suspension>> {
    let Some(bytes) = dir.read_small(target.file_name(), MAX_SUSPEND_FILE)? else {
        return Ok(None);
    };
    parse_suspension(target, &bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads `target`'s suspension, expired or not; `Ok(None)` when there is
/// none.
pub fn read_suspension(queue: &Queue, target: &Target) -> io::Result<Option<Suspension>> {
    match suspend_dir(queue, false)? {
        Some(dir) => read_in(&dir, target.clone()),
        None => Ok(None),
    }
}

/// Every suspension on disk, sorted out at `now` ([`SuspendFiles`]).
/// Folders, dot names and `tmp` are not suspensions; any other name postman
/// does not write is reported in `bad`.
pub fn list_suspensions(queue: &Queue, now: SystemTime) -> io::Result<SuspendFiles> {
    let mut files = SuspendFiles::default();
    let Some(dir) = suspend_dir(queue, false)? else {
        return Ok(files);
    };
    for entry in dir.entries()? {
        let name = entry.name.to_string_lossy().into_owned();
        if entry.kind == EntryKind::Dir || name.starts_with('.') {
            continue;
        }
        let Some(target) = Target::from_file_name(&name) else {
            let why = "not a suspension postman writes (domain:<domain> or site:<suffix>)";
            files
                .bad
                .push((name, io::Error::new(io::ErrorKind::InvalidData, why)));
            continue;
        };
        match read_in(&dir, target) {
            Ok(Some(s)) if s.lasts_at(now) => files.active.push(s),
            Ok(Some(s)) => files.expired.push(s),
            Ok(None) => {}
            Err(e) => files.bad.push((name, e)),
        }
    }
    files.active.sort_by(|a, b| a.target.cmp(&b.target));
    files.expired.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(files)
}

/// Writes a suspension crash-safely, replacing one of the same target.
pub fn write_suspension(queue: &Queue, suspension: &Suspension) -> io::Result<()> {
    let Some(dir) = suspend_dir(queue, true)? else {
        return Ok(());
    };
    let name = suspension.target.file_name();
    let tmp_dir = dir.dir_create(TMP_DIR)?;
    replace_synced(
        &tmp_dir,
        &dir,
        &name,
        render_suspension(suspension).as_bytes(),
    )
}

/// Removes `target`'s suspension; returns what it said, `None` when there
/// was none. A file that cannot be understood is removed all the same
/// (and reported as none).
pub fn remove_suspension(queue: &Queue, target: &Target) -> io::Result<Option<Suspension>> {
    let Some(dir) = suspend_dir(queue, false)? else {
        return Ok(None);
    };
    let was = read_in(&dir, target.clone()).ok().flatten();
    match dir.remove_file(target.file_name()) {
        Ok(()) => Ok(was),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes the files of `expired` suspensions that are still expired at
/// `now` (read again first: one made anew since the listing stays).
/// Returns those removed.
pub fn remove_expired(
    queue: &Queue,
    expired: &[Suspension],
    now: SystemTime,
) -> io::Result<Vec<Suspension>> {
    let mut removed = Vec::new();
    let Some(dir) = suspend_dir(queue, false)? else {
        return Ok(removed);
    };
    for old in expired {
        match read_in(&dir, old.target.clone()) {
            Ok(Some(s)) if !s.lasts_at(now) => {}
            _ => continue,
        }
        match dir.remove_file(old.target.file_name()) {
            Ok(()) => removed.push(old.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

#[cfg(test)]
#[path = "suspend_tests.rs"]
mod tests;
