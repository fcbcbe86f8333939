//! Claims (DESIGN.md "The queue on disk"): several postman processes may
//! share one queue, so a message is claimed before delivery by an atomic
//! `rename(2)` of `<domain>/<name>` to `<domain>/.active/<owner>/<name>`.
//! POSIX guarantees that of two renames of one name exactly one succeeds;
//! the other finds the name gone. The scanner never lists dot-folders, so a
//! claimed file is invisible to every other process until it is released,
//! rewritten back, completed, set aside, or recovered after its owner died.
//!
//! The owner string is opaque here (the actors use
//! `<hostname>.<pid>.<process start time>`): it only has to be one path
//! component, never reused by another process incarnation (a claim renames
//! over a same-named leftover of the same owner), and recognisable as dead.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::local::link_no_clobber;
use super::rewrite::{replace, sync_dir, sync_parent};
use super::{list_domains, Layout, FAILED_DIR, QUARANTINE_DIR, TMP_DIR};

/// The folder in each domain folder holding one folder per claiming owner.
pub const ACTIVE_DIR: &str = ".active";

/// Earlier versions marked a delivered claim by renaming it to
/// `<owner>/.delivered.<name>` before removing it; [`recover`] still removes
/// such a leftover instead of putting it back.
const DELIVERED_PREFIX: &str = ".delivered.";

/// How many suffixed names a set-aside tries before giving up.
const MAX_SUFFIX: u32 = 10_000;

/// A message this process has claimed. Consume it with exactly one of
/// [`Claimed::release`], [`Claimed::complete`],
/// [`Claimed::rewrite_and_release`], [`Claimed::set_aside_failed`] or
/// [`Claimed::quarantine`]; dropping it leaves the claim on disk for
/// [`recover`] (after this owner dies).
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a claim left on disk is only recovered after its owner dies"]
pub struct Claimed {
    domain: String,
    name: String,
    owner: String,
    path: PathBuf,
    queue_path: PathBuf,
    domain_dir: PathBuf,
}

/// What [`recover`] did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Claims moved back into their domain folder: the queue paths.
    pub restored: Vec<PathBuf>,
    /// Claims removed because a file of the same name was already back in
    /// the queue (a crash between the two steps of
    /// [`Claimed::rewrite_and_release`]; the queue copy is the newer).
    pub duplicates: Vec<PathBuf>,
    /// Files an earlier version marked delivered (`.delivered.<name>`) and
    /// a crash kept it from removing: removed, not delivered again.
    pub delivered: Vec<PathBuf>,
    /// Claims that could not be handled, with why; the rest went on.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Claims `<domain>/<name>` for `owner` by renaming it to
/// `<domain>/.active/<owner>/<name>` (folders created on demand).
/// `Ok(None)` when the file is gone: another process claimed or completed
/// it. `InvalidInput` for a domain, name or owner that is not one path
/// component (empty, `.`, `..`, or holding `/` or NUL).
///
/// A claim needs no fsync: after a crash the file is either still in the
/// queue or in the claim folder, and [`recover`] handles the latter.
pub fn claim(
    layout: &Layout,
    domain: &str,
    name: &str,
    owner: &str,
) -> io::Result<Option<Claimed>> {
    check_component("domain", domain)?;
    check_component("file name", name)?;
    check_component("owner", owner)?;
    let domain_dir = layout.domain_dir(domain);
    let queue_path = layout.message_path(domain, name);
    let path = layout.remote_path(&[domain, ACTIVE_DIR, owner, name]);
    let owner_dir = || layout.remote_path(&[domain, ACTIVE_DIR, owner]);
    // The rename is tried first: the owner folder exists after the first
    // claim, so the common case is one system call. When the folder is
    // missing the rename fails with NotFound and the loop makes it; a
    // concurrent recovery may remove an empty owner folder between our mkdir
    // and our rename (only for dead owners, but be robust).
    for attempt in 0..3 {
        if attempt > 0 {
            fs::create_dir_all(owner_dir())?;
        }
        match fs::rename(&queue_path, &path) {
            Ok(()) => {
                return Ok(Some(Claimed {
                    domain: domain.to_owned(),
                    name: name.to_owned(),
                    owner: owner.to_owned(),
                    path,
                    queue_path,
                    domain_dir,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Either the file is gone (claimed or completed by someone
                // else) or the owner folder is missing.
                if fs::symlink_metadata(&queue_path).is_err() {
                    return Ok(None);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("claim folder {} keeps disappearing", owner_dir().display()),
    ))
}

impl Claimed {
    /// Where the claimed file is now: read its envelope and body here.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where it was, and where release puts it back: `<domain>/<name>`.
    pub fn queue_path(&self) -> &Path {
        &self.queue_path
    }

    /// The domain folder name.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The file name (the queue id).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who holds the claim.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Puts the file back into the queue unchanged. If a file of that name
    /// is already there (only after someone wrongly recovered this claim),
    /// the queue copy is kept and the claim removed.
    pub fn release(self) -> io::Result<()> {
        return_to_queue(&self.path, &self.queue_path).map(|_| ())
    }

    /// Removes a delivered file. Not synced: after a power cut the worst
    /// case is a duplicate delivery, which SMTP tolerates, never a loss.
    pub fn complete(self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes the name of a file every recipient accepted, so that a crash
    /// from now on cannot send it again: [`recover`] never sees it. Call it
    /// while a descriptor of the file is still open: then only the name goes
    /// now (one directory entry), and the file's blocks are freed at the
    /// last close, which is the slow part (ext4 waits on its journal, and on
    /// the device when mounted with `discard`) and can be left to another
    /// thread. Not synced, like [`Claimed::complete`]. A file already gone
    /// counts as removed. When removing fails the claim comes back unchanged
    /// with the error.
    pub fn remove_delivered(self) -> Marked {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Marked::Failed(self, e),
            _ => Marked::Removed,
        }
    }

    /// Writes the new version of the message (`new_block`, then the claimed
    /// file's body from `body_offset`) into the queue as `<domain>/<name>`,
    /// through `<domain>/tmp/` with fsyncs and a rename, then removes the
    /// claim. A crash at any instant leaves at least one copy: before the
    /// rename only the claim (recovered unchanged); between the rename and
    /// the unlink both, a duplicate that [`recover`] resolves by keeping the
    /// queue copy, the newer one.
    ///
    /// If writing the new version fails (no space, say), the claimed file
    /// is put back into the queue unchanged, as [`Claimed::release`] does,
    /// so the message is kept with its old state, and the write error is
    /// returned: the caller should still defer it in memory, or it would be
    /// retried at once.
    pub fn rewrite_and_release(self, new_block: &[u8], body_offset: u64) -> io::Result<()> {
        let tmp_dir = self.domain_dir.join(TMP_DIR);
        if let Err(e) = replace(
            &self.path,
            &tmp_dir,
            new_block,
            body_offset,
            &self.queue_path,
        ) {
            // The new version is not in the queue (a failed directory sync
            // after the rename is the exception: then both copies exist and
            // releasing keeps the queue's, the new one).
            let _ = return_to_queue(&self.path, &self.queue_path);
            return Err(e);
        }
        fs::remove_file(&self.path)?;
        sync_parent(&self.path)
    }

    /// Moves the claimed file to `<domain>/.failed/<name>` (a `.N` suffix
    /// when taken) with `reason` in `<name>.reason` beside it, as
    /// `queue::set_aside_failed` does for an unclaimed file.
    pub fn set_aside_failed(self, reason: &str) -> io::Result<PathBuf> {
        self.set_aside(FAILED_DIR, reason)
    }

    /// Moves the claimed file to `<domain>/.quarantine/<name>` with its
    /// reason, as `queue::quarantine` does for an unclaimed file.
    pub fn quarantine(self, reason: &str) -> io::Result<PathBuf> {
        self.set_aside(QUARANTINE_DIR, reason)
    }

    fn set_aside(self, sub: &str, reason: &str) -> io::Result<PathBuf> {
        let dir = self.domain_dir.join(sub);
        fs::create_dir_all(&dir)?;
        for n in 0..MAX_SUFFIX {
            let candidate = if n == 0 {
                self.name.clone()
            } else {
                format!("{}.{n}", self.name)
            };
            let reason_path = dir.join(format!("{candidate}.reason"));
            if fs::symlink_metadata(&reason_path).is_ok() {
                continue;
            }
            let target = dir.join(&candidate);
            match link_no_clobber(&self.path, &target) {
                Ok(()) => {
                    write_reason(&dir, &candidate, reason)?;
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "no free name for {:?} in {} after {MAX_SUFFIX} tries",
                self.name,
                dir.display()
            ),
        ))
    }
}

/// What [`Claimed::remove_delivered`] did.
#[derive(Debug)]
#[must_use = "a claim that could not be removed must still be settled"]
pub enum Marked {
    /// The name is gone; the file lives on while a descriptor is open.
    Removed,
    /// Not removed: the claim, unchanged, and why.
    Failed(Claimed, io::Error),
}

/// Moves every claim of a dead owner back into its domain folder:
/// `is_dead(owner)` is asked once per owner folder of each domain
/// (non-UTF-8 owner names are passed lossily converted). A claim whose name
/// is already back in the queue is removed instead (the queue copy wins;
/// see [`Claimed::rewrite_and_release`]), and so is a claim marked
/// delivered by an earlier version (`.delivered.<name>`). Nothing is ever overwritten. The
/// emptied owner folders are removed. Per-file failures are collected in
/// [`Recovery::errors`] and the rest goes on; only failing to list the
/// domains is an `Err` (`NotFound` when `.OTHER_SERVERS` is missing).
///
/// Run it at start-up (with `is_dead` true for this host's owners whose
/// process is gone, including a previous incarnation of this one) and now
/// and then for other hosts' owners on shared storage.
pub fn recover(layout: &Layout, is_dead: impl Fn(&str) -> bool) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    for domain in list_domains(layout)? {
        let domain_dir = layout.domain_dir(&domain);
        let active = domain_dir.join(ACTIVE_DIR);
        let owners = match fs::read_dir(&active) {
            Ok(owners) => owners,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                recovery.errors.push((active, e));
                continue;
            }
        };
        for owner in owners {
            let owner = match owner {
                Ok(owner) => owner,
                Err(e) => {
                    recovery.errors.push((active.clone(), e));
                    continue;
                }
            };
            let owner_dir = owner.path();
            if !owner_dir.is_dir() || !is_dead(&owner.file_name().to_string_lossy()) {
                continue;
            }
            recover_owner(&owner_dir, &domain_dir, &mut recovery);
        }
    }
    Ok(recovery)
}

fn recover_owner(owner_dir: &Path, domain_dir: &Path, recovery: &mut Recovery) {
    let entries = match fs::read_dir(owner_dir) {
        Ok(entries) => entries,
        Err(e) => {
            recovery.errors.push((owner_dir.to_path_buf(), e));
            return;
        }
    };
    let mut moved = false;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                recovery.errors.push((owner_dir.to_path_buf(), e));
                continue;
            }
        };
        let claim_path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(DELIVERED_PREFIX))
        {
            match fs::remove_file(&claim_path) {
                Ok(()) => recovery.delivered.push(claim_path),
                Err(e) => recovery.errors.push((claim_path, e)),
            }
            continue;
        }
        let queue_path = domain_dir.join(entry.file_name());
        match return_to_queue(&claim_path, &queue_path) {
            Ok(Returned::Restored) => {
                moved = true;
                recovery.restored.push(queue_path);
            }
            Ok(Returned::Duplicate) => recovery.duplicates.push(claim_path),
            Err(e) => recovery.errors.push((claim_path, e)),
        }
    }
    if moved {
        if let Err(e) = sync_dir(domain_dir) {
            recovery.errors.push((domain_dir.to_path_buf(), e));
        }
    }
    // Fails harmlessly when something is left in it.
    let _ = fs::remove_dir(owner_dir);
}

/// Removes files in each domain's `tmp/` last modified before
/// `now - max_age`: leftovers of writers that crashed (Maildir's rule is
/// 36 hours; no writer takes that long). Returns what it removed. `now`
/// is the caller's clock; file times come from the file system.
pub fn sweep_tmp(layout: &Layout, now: SystemTime, max_age: Duration) -> io::Result<Vec<PathBuf>> {
    let Some(cutoff) = now.checked_sub(max_age) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for domain in list_domains(layout)? {
        let tmp = layout.tmp_dir(&domain);
        let entries = match fs::read_dir(&tmp) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
                match fs::remove_file(entry.path()) {
                    Ok(()) => removed.push(entry.path()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

enum Returned {
    Restored,
    Duplicate,
}

/// Moves a claim back to `queue_path` unless a file is there already, in
/// which case the claim is removed (the queue copy wins).
fn return_to_queue(claim_path: &Path, queue_path: &Path) -> io::Result<Returned> {
    match link_no_clobber(claim_path, queue_path) {
        Ok(()) => Ok(Returned::Restored),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(claim_path)?;
            Ok(Returned::Duplicate)
        }
        Err(e) => Err(e),
    }
}

/// A path component we are about to join: not empty, no `/` or NUL, not
/// `.` or `..`.
fn check_component(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} {value:?}: must be one path component without '/'"),
        ));
    }
    Ok(())
}

/// Writes `<dir>/<name>.reason` through a dot-named temporary file and a
/// rename, so a reader never sees half a reason.
fn write_reason(dir: &Path, name: &str, reason: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.reason.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(reason.as_bytes())?;
    if !reason.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(format!("{name}.reason")))
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
