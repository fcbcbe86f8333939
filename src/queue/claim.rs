//! Claims (DESIGN.md "The queue on disk"): several postman processes may
//! share one queue, so a message is claimed before delivery by an atomic
//! `rename(2)` of `<domain>/<name>` to `<domain>/.active/<owner>/<name>`.
//! POSIX guarantees that of two renames of one name exactly one succeeds;
//! the other finds the name gone. The scanner never lists dot-folders, so a
//! claimed file is invisible to every other process until it is released,
//! given back with its new state, completed, set aside, or recovered after
//! its owner died.
//!
//! The owner string is opaque here (the actors use
//! `<hostname>.<pid>.<process start time>`): it only has to be one path
//! component, never reused by another process incarnation (a claim renames
//! over a same-named leftover of the same owner), and recognisable as dead.
//!
//! A claim carries handles on its domain folder and its claim folder (the
//! ones its [`Queue`] keeps, or its own), so settling it never walks a path
//! again, never follows a link, and needs no new descriptor: a process out
//! of descriptors can still put a claim back.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::dirfd::{refusal, EntryKind, QueueDir};
use super::statefile::{
    adopt_reservation, read_queued, remove_state, reserve, sweep_states, tie_of, write_state,
    Queued, Reservation, StateSweep, Tie, STATE_DIR,
};
use super::store::ReadError;
use super::store::{
    check_component, move_no_clobber, read_envelope_from, set_aside_from, write_reason,
};
use super::tmpfile::create_tmp;
use super::{list_domains, Queue, FAILED_DIR, QUARANTINE_DIR, TMP_DIR};

/// The folder in each domain folder holding one folder per claiming owner.
pub const ACTIVE_DIR: &str = ".active";

/// Earlier versions marked a delivered claim by renaming it to
/// `<owner>/.delivered.<name>` before removing it; [`recover`] still removes
/// such a leftover instead of putting it back.
const DELIVERED_PREFIX: &str = ".delivered.";

/// How many suffixed names a claim going back beside a different file of
/// its name tries.
const MAX_SUFFIX: u32 = 10_000;

/// A message this process has claimed. Consume it with exactly one of
/// [`Claimed::release`], [`Claimed::complete`],
/// [`Claimed::record_and_release`], [`Claimed::set_aside_failed`] or
/// [`Claimed::quarantine`]; dropping it (or [`Claimed::abandon`]) leaves
/// the claim on disk for [`recover`] (after this owner dies).
#[derive(Debug)]
#[must_use = "a claim left on disk is only recovered after its owner dies"]
pub struct Claimed {
    domain: String,
    name: String,
    owner: String,
    domain_dir: Arc<QueueDir>,
    claims: Arc<QueueDir>,
    /// Room taken for the message's next state file ([`Claimed::reserve`]):
    /// given back whenever the claim ends without using it.
    reservation: Option<Reservation>,
}

/// What [`recover`] did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Claims moved back into their domain folder: the queue paths.
    pub restored: Vec<PathBuf>,
    /// Claims removed because the same message was already back in the
    /// queue under its name: the same file, the same bytes, or a rewrite
    /// of it (a crash between the two steps of an older postman's rewrite
    /// of a claimed file; the queue copy is the newer).
    pub duplicates: Vec<PathBuf>,
    /// Claims put back under a new name because a different message had
    /// taken theirs: (the claim, where it went). Both are kept.
    pub renamed: Vec<(PathBuf, PathBuf)>,
    /// Files an earlier version marked delivered (`.delivered.<name>`) and
    /// a crash kept it from removing: removed, not delivered again.
    pub delivered: Vec<PathBuf>,
    /// State files a stopped owner had written into its reservation but
    /// not put in place, put in place now ([`adopt_reservation`]).
    pub adopted: Vec<PathBuf>,
    /// Claims that could not be handled, with why (a link in the way is a
    /// refusal, [`super::dirfd::refusal`]); the rest went on.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Claims `<domain>/<name>` for `owner` by renaming it to
/// `<domain>/.active/<owner>/<name>` (folders created on demand; a link
/// anywhere on the way is refused). `Ok(None)` when the file is gone:
/// another process claimed or completed it. `InvalidInput` for a domain,
/// name or owner that is not one path component (empty, `.`, `..`, or
/// holding `/` or NUL).
///
/// The entry is moved as it is: a link or special file renamed into the
/// queue becomes a claim of a link, which [`Claimed::open`] refuses and
/// [`Claimed::quarantine`] sets aside unopened.
///
/// A claim needs no fsync: after a crash the file is either still in the
/// queue or in the claim folder, and [`recover`] handles the latter.
pub fn claim(queue: &Queue, domain: &str, name: &str, owner: &str) -> io::Result<Option<Claimed>> {
    check_component("domain", domain)?;
    check_component("file name", name)?;
    check_component("owner", owner)?;
    let domain_dir = match queue.domain(domain) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    // The rename is tried first: the claim folder is kept open after the
    // first claim, so the common case is one system call. When the folder
    // went away (a concurrent recovery may remove an empty owner folder,
    // only for dead owners, but be robust) it is made again.
    let mut fresh = false;
    for _ in 0..3 {
        let claims = queue.claims_in(domain, &domain_dir, owner, fresh)?;
        match domain_dir.rename(name, &claims, name) {
            Ok(()) => {
                return Ok(Some(Claimed {
                    domain: domain.to_owned(),
                    name: name.to_owned(),
                    owner: owner.to_owned(),
                    domain_dir,
                    claims,
                    reservation: None,
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Either the file is gone (claimed or completed by someone
                // else) or the claim folder is.
                if domain_dir.stat(name)?.is_none() {
                    return Ok(None);
                }
                fresh = true;
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "claim folder {} keeps disappearing",
            domain_dir.display_path(ACTIVE_DIR).join(owner).display()
        ),
    ))
}

impl Claimed {
    /// Where the claimed file is now, for messages: read it with
    /// [`Claimed::open`].
    pub fn path(&self) -> PathBuf {
        self.claims.display_path(&self.name)
    }

    /// Where it was, and where release puts it back: `<domain>/<name>`,
    /// for messages.
    pub fn queue_path(&self) -> PathBuf {
        self.domain_dir.display_path(&self.name)
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

    /// Opens the claimed file for reading, with its metadata. A link or
    /// special file is refused unopened and never blocks
    /// ([`QueueDir::open_file`]): quarantine the claim then.
    pub fn open(&self) -> io::Result<(File, Metadata)> {
        self.claims.open_file(&self.name)
    }

    /// Puts the file back into the queue unchanged. If a file of that name
    /// is already there (only after someone wrongly recovered this claim,
    /// or wrote another message under its name), the queue copy is kept
    /// and the claim removed when they are the same message; else the claim
    /// goes back under a new name, and both are kept.
    pub fn release(mut self) -> io::Result<()> {
        self.discard_reservation();
        return_to_queue(&self.claims, OsStr::new(&self.name), &self.domain_dir).map(drop)
    }

    /// Removes a delivered file, then its state file and the room reserved
    /// for it. Not synced: after a power cut the worst case is a duplicate
    /// delivery, which SMTP tolerates, never a loss.
    pub fn complete(mut self) -> io::Result<()> {
        match self.claims.remove_file(&self.name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => {
                let removed = remove_state(&self.domain_dir, &self.name);
                self.discard_reservation();
                removed
            }
        }
    }

    fn discard_reservation(&mut self) {
        if let Some(reservation) = self.reservation.take() {
            reservation.discard();
        }
    }

    /// Removes the name of a file every recipient accepted, so that a crash
    /// from now on cannot send it again: [`recover`] never sees it. Call it
    /// while a descriptor of the file is still open: then only the name goes
    /// now (one directory entry), and the file's blocks are freed at the
    /// last close, which is the slow part (ext4 waits on its journal, and on
    /// the device when mounted with `discard`) and can be left to another
    /// thread. Not synced, like [`Claimed::complete`]. A file already gone
    /// counts as removed. Its state file and reservation are left for
    /// [`Leftover::remove`], on that thread too. When removing fails the
    /// claim comes back unchanged with the error.
    pub fn remove_delivered(mut self) -> Marked {
        match self.claims.remove_file(&self.name) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Marked::Failed(self, e),
            _ => Marked::Removed(Leftover {
                reservation: self.reservation.take(),
                domain_dir: self.domain_dir,
                name: self.name,
            }),
        }
    }

    /// Reads the claimed message as it stands, from its file open at its
    /// start and `size` bytes long: see [`read_queued`].
    pub fn read_queued(&self, file: &mut File, size: u64) -> Result<Queued, ReadError> {
        read_queued(&self.domain_dir, &self.name, file, size, &self.domain)
    }

    /// Reserves `len` bytes for the message's next state file ([`reserve`]),
    /// kept with the claim for [`Claimed::record_and_release`] and given
    /// back when the claim ends otherwise. `ENOSPC` or `EDQUOT` when the
    /// disk has no room: then nothing is reserved.
    pub fn reserve(&mut self, len: u64) -> io::Result<()> {
        self.discard_reservation();
        self.reservation = Some(reserve(&self.domain_dir, &self.name, len)?);
        Ok(())
    }

    /// Whether room is reserved for the next state file.
    pub fn reserved(&self) -> bool {
        self.reservation.is_some()
    }

    /// Records what an attempt left of the message and puts it back into
    /// the queue: each of `split` (a new name and the block of its state,
    /// for recipients beyond one block) gets its state file and then a
    /// second name of the queue file, never replacing anything; then
    /// `state` becomes the message's state file (through `reservation`
    /// when given, see [`write_state`]), and only then is the claim
    /// released. The queue file itself is never written.
    ///
    /// On failure the claim is kept and comes back, with the reservation,
    /// to be tried again: nothing in the queue says less than before, and
    /// the splits made so far are kept (trying again finds them).
    pub fn record_and_release(
        mut self,
        state: &[u8],
        split: &[(String, Vec<u8>)],
    ) -> Result<Recorded, Box<Unrecorded>> {
        for (new_name, block) in split {
            let linked = match self.domain_dir.stat(new_name) {
                // Made by an earlier try.
                Ok(Some(_)) => Ok(()),
                Ok(None) => write_state(&self.domain_dir, new_name, block, None)
                    .map_err(|u| u.error)
                    .and_then(|()| {
                        self.claims
                            .hard_link(&self.name, &self.domain_dir, new_name)
                    }),
                Err(e) => Err(e),
            };
            if let Err(error) = linked {
                return Err(Box::new(Unrecorded {
                    claimed: self,
                    error,
                }));
            }
        }
        let reservation = self.reservation.take();
        if let Err(u) = write_state(&self.domain_dir, &self.name, state, reservation) {
            self.reservation = u.reservation;
            return Err(Box::new(Unrecorded {
                claimed: self,
                error: u.error,
            }));
        }
        if !split.is_empty() {
            let _ = self.domain_dir.sync();
        }
        Ok(match self.release() {
            Ok(()) => Recorded::Released,
            Err(e) => Recorded::NotReleased(e),
        })
    }

    /// Stops holding the claim without ending it, as a process that stops
    /// does: the file stays in `.active/<owner>/` for [`recover`] at the
    /// next start, and the reservation in `tmp/`, which recovery puts in
    /// place when it holds the message's newest state (it was written but
    /// not renamed).
    pub fn abandon(mut self) {
        if let Some(reservation) = self.reservation.take() {
            reservation.keep_for_recovery();
        }
    }

    /// Moves the claimed file to `<domain>/.failed/<name>` (a `.N` suffix
    /// when taken) with `reason` in `<name>.reason` beside it, as
    /// `queue::set_aside_failed` does for an unclaimed file.
    pub fn set_aside_failed(self, reason: &str) -> io::Result<PathBuf> {
        self.set_aside(reason, FAILED_DIR)
    }

    /// Moves the claimed entry to `<domain>/.quarantine/<name>` with its
    /// reason, as `queue::quarantine` does for an unclaimed file. A link or
    /// special file moves as it is, unopened.
    pub fn quarantine(self, reason: &str) -> io::Result<PathBuf> {
        self.set_aside(reason, QUARANTINE_DIR)
    }

    fn set_aside(mut self, reason: &str, dir: &str) -> io::Result<PathBuf> {
        self.discard_reservation();
        set_aside_from(&self.claims, &self.name, &self.domain_dir, reason, dir)
    }

    /// Puts a copy of the claimed file into `<domain>/.failed/` as `<name>`
    /// (or `<name>.N`) with `reason` beside it, leaving the claim as it is:
    /// for a message from the null sender whose failed recipients cannot be
    /// bounced while others are still pending.
    pub fn copy_aside_failed(&self, reason: &str) -> io::Result<PathBuf> {
        let dir = self.domain_dir.dir_create(FAILED_DIR)?;
        let (mut from, _) = self.open()?;
        let (tmp, mut to) = create_tmp(&dir, &format!(".{}", self.name))?;
        let copied = io::copy(&mut from, &mut to).and_then(|_| to.sync_all());
        drop(to);
        let placed = copied.and_then(|()| move_no_clobber(&dir, &tmp, &dir, &self.name));
        let target = match placed {
            Ok(target) => target,
            Err(e) => {
                let _ = dir.remove_file(&tmp);
                return Err(e);
            }
        };
        write_reason(&dir, &target, reason)?;
        Ok(dir.display_path(target))
    }
}

/// What [`Claimed::record_and_release`] did when the state was recorded.
#[derive(Debug)]
pub enum Recorded {
    /// The message is back in the queue.
    Released,
    /// Its state is recorded but the claim could not be put back (recovery
    /// does it at the next start).
    NotReleased(io::Error),
}

/// A state [`Claimed::record_and_release`] could not record: the claim,
/// still held (with its reservation, holding the state when only its
/// rename failed), to try again with, and why.
#[derive(Debug)]
pub struct Unrecorded {
    /// The claim, unchanged.
    pub claimed: Claimed,
    /// Why the state could not be recorded.
    pub error: io::Error,
}

/// What [`Claimed::remove_delivered`] did.
#[derive(Debug)]
#[must_use = "a claim that could not be removed must still be settled"]
pub enum Marked {
    /// The name is gone; the file lives on while a descriptor is open.
    /// What is left of the message goes with [`Leftover::remove`].
    Removed(Leftover),
    /// Not removed: the claim, unchanged, and why.
    Failed(Claimed, io::Error),
}

/// What is left of a delivered message once its queue file lost its name:
/// its state file and the room reserved for the next one. Removing them
/// waits on the disk like the removal of the file did, so it is a step of
/// its own, for a thread that may wait ([`Leftover::remove`]).
#[derive(Debug)]
#[must_use = "a state file left behind stays until the next start"]
pub struct Leftover {
    domain_dir: Arc<QueueDir>,
    name: String,
    reservation: Option<Reservation>,
}

impl Leftover {
    /// Removes the message's state file, then gives back the room reserved
    /// (the order of [`Claimed::complete`]). A state file left behind by a
    /// failure or a crash belongs to no message: it is ignored, and goes
    /// at the next start.
    pub fn remove(self) -> io::Result<()> {
        let removed = remove_state(&self.domain_dir, &self.name);
        if let Some(reservation) = self.reservation {
            reservation.discard();
        }
        removed
    }
}

/// Moves every claim of a dead owner back into its domain folder:
/// `is_dead(owner)` is asked once per owner folder of each domain
/// (non-UTF-8 owner names are passed lossily converted). A claim whose
/// name is already back in the queue is removed when the queue holds the
/// same message (the same file, the same bytes, or an older postman's
/// rewrite of it) and else goes back under a new name,
/// so two different messages are both kept; a claim marked delivered by an
/// earlier version (`.delivered.<name>`) is removed. Nothing is ever
/// overwritten, and no link is followed: a linked `.active` or owner folder
/// is left alone. The emptied owner folders are removed. Per-file failures
/// are collected in [`Recovery::errors`] and the rest goes on; only failing
/// to list the domains is an `Err` (`NotFound` when `.OTHER_SERVERS` is
/// missing).
///
/// Run it at start-up (with `is_dead` true for this host's owners whose
/// process is gone, including a previous incarnation of this one) and now
/// and then for other hosts' owners on shared storage.
pub fn recover(queue: &Queue, is_dead: impl Fn(&str) -> bool) -> io::Result<Recovery> {
    let mut recovery = Recovery::default();
    for domain in list_domains(queue)? {
        let path = queue.layout().domain_dir(&domain).join(ACTIVE_DIR);
        let active = match queue
            .domain(&domain)
            .and_then(|d| d.dir(ACTIVE_DIR).map(|a| (d, a)))
        {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                recovery.errors.push((path, e));
                continue;
            }
        };
        let (domain_dir, active) = active;
        let owners = match active.entries() {
            Ok(owners) => owners,
            Err(e) => {
                recovery.errors.push((path, e));
                continue;
            }
        };
        for owner in owners {
            if owner.kind != EntryKind::Dir || !is_dead(&owner.name.to_string_lossy()) {
                continue;
            }
            match active.dir(&owner.name) {
                Ok(owner_dir) => recover_owner(&owner_dir, &domain_dir, &mut recovery),
                Err(e) => recovery.errors.push((active.display_path(&owner.name), e)),
            }
            // Fails harmlessly when something is left in it.
            let _ = active.remove_dir(&owner.name);
        }
    }
    Ok(recovery)
}

fn recover_owner(owner_dir: &QueueDir, domain_dir: &QueueDir, recovery: &mut Recovery) {
    let entries = match owner_dir.entries() {
        Ok(entries) => entries,
        Err(e) => {
            recovery.errors.push((owner_dir.path().to_path_buf(), e));
            return;
        }
    };
    let mut moved = false;
    for entry in entries {
        // A link or special file moves back as it is (the scanner then
        // quarantines it); folders stay.
        if entry.kind == EntryKind::Dir {
            continue;
        }
        let claim_path = owner_dir.display_path(&entry.name);
        if entry
            .name
            .as_bytes()
            .starts_with(DELIVERED_PREFIX.as_bytes())
        {
            match owner_dir.remove_file(&entry.name) {
                Ok(()) => recovery.delivered.push(claim_path),
                Err(e) => recovery.errors.push((claim_path, e)),
            }
            continue;
        }
        // A state its owner wrote into the space it had reserved, but could
        // not put in place before it stopped, is this message's newest.
        let tie = claim_tie(owner_dir, &entry.name);
        if let (Some(tie), Some(name)) = (tie, entry.name.to_str()) {
            match adopt_reservation(domain_dir, name, tie) {
                Ok(true) => recovery
                    .adopted
                    .push(domain_dir.display_path(STATE_DIR).join(name)),
                Ok(false) => {}
                Err(e) => recovery.errors.push((claim_path.clone(), e)),
            }
        }
        match return_to_queue(owner_dir, &entry.name, domain_dir) {
            Ok(Returned::Renamed(to)) => {
                // Its state file goes with it.
                if let (Some(tie), Some(name), Some(to)) = (tie, entry.name.to_str(), to.to_str()) {
                    if let Err(e) = rename_state(domain_dir, name, tie, to) {
                        recovery.errors.push((claim_path.clone(), e));
                    }
                }
                moved = true;
                recovery
                    .renamed
                    .push((claim_path, domain_dir.display_path(to)));
            }
            Ok(Returned::Restored) => {
                moved = true;
                recovery.restored.push(domain_dir.display_path(&entry.name));
            }
            Ok(Returned::Duplicate) => recovery.duplicates.push(claim_path),
            Err(e) => recovery.errors.push((claim_path, e)),
        }
    }
    if moved {
        if let Err(e) = domain_dir.sync() {
            recovery.errors.push((domain_dir.path().to_path_buf(), e));
        }
    }
}

/// The tie of the claim `name` in `owner_dir`, when it is a queue file.
fn claim_tie(owner_dir: &QueueDir, name: &OsStr) -> Option<Tie> {
    let (mut file, meta) = owner_dir.open_file(name).ok()?;
    tie_of(&mut file, meta.len()).ok().flatten()
}

/// Renames the state file of `name` to `to`'s when it is the one of the
/// queue file tied by `tie` (a claim that went back under a new name).
fn rename_state(domain_dir: &QueueDir, name: &str, tie: Tie, to: &str) -> io::Result<()> {
    let states = match domain_dir.dir(STATE_DIR) {
        Ok(states) => states,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(bytes) = states.read_small(name, super::MAX_ENVELOPE_BLOCK as u64)? else {
        return Ok(());
    };
    let ours = super::parse_envelope(&bytes).ok().is_some_and(|state| {
        state.extra.iter().any(|(field, value)| {
            field.eq_ignore_ascii_case(super::QUEUE_FILE_FIELD) && Tie::parse(value) == Some(tie)
        })
    });
    if ours {
        states.rename_no_clobber(name, &states, to)?;
        states.sync()?;
    }
    Ok(())
}

/// The state files of every domain that belong to no message, last changed
/// before `now - grace`, removed ([`sweep_states`]): run it at start-up,
/// after [`recover`].
pub fn recover_states(queue: &Queue, now: SystemTime, grace: Duration) -> io::Result<StateSweep> {
    let mut sweep = StateSweep::default();
    for domain in list_domains(queue)? {
        match queue.domain(&domain) {
            Ok(dir) => sweep_states(&dir, now, grace, &mut sweep),
            Err(e) => sweep.errors.push((queue.layout().domain_dir(&domain), e)),
        }
    }
    Ok(sweep)
}

/// What [`sweep_tmp`] did.
#[derive(Debug, Default)]
pub struct Sweep {
    /// The stale files removed.
    pub removed: Vec<PathBuf>,
    /// `tmp/` folders or files that could not be looked at or removed,
    /// with why (a linked `tmp/` is a refusal, left alone).
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Removes regular files in each domain's `tmp/` last modified before
/// `now - max_age`: leftovers of writers that crashed (Maildir's rule is
/// 36 hours; no writer takes that long). A linked `tmp/` is never entered
/// and a link in it never followed (nor removed). `now` is the caller's
/// clock; file times come from the file system. Only failing to list the
/// domains is an `Err`.
pub fn sweep_tmp(queue: &Queue, now: SystemTime, max_age: Duration) -> io::Result<Sweep> {
    let mut sweep = Sweep::default();
    let Some(cutoff) = now.checked_sub(max_age) else {
        return Ok(sweep);
    };
    for domain in list_domains(queue)? {
        let path = queue.layout().tmp_dir(&domain);
        let tmp = match queue.domain(&domain).and_then(|d| d.dir(TMP_DIR)) {
            Ok(tmp) => tmp,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                sweep.errors.push((path, e));
                continue;
            }
        };
        let entries = match tmp.entries() {
            Ok(entries) => entries,
            Err(e) => {
                sweep.errors.push((path, e));
                continue;
            }
        };
        for entry in entries.into_iter().filter(|e| e.kind == EntryKind::File) {
            let stale = match tmp.stat(&entry.name) {
                Ok(Some(stat)) => stat.kind == EntryKind::File && stat.modified < cutoff,
                Ok(None) => false,
                Err(e) => {
                    sweep.errors.push((tmp.display_path(&entry.name), e));
                    false
                }
            };
            if !stale {
                continue;
            }
            match tmp.remove_file(&entry.name) {
                Ok(()) => sweep.removed.push(tmp.display_path(&entry.name)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => sweep.errors.push((tmp.display_path(&entry.name), e)),
            }
        }
    }
    Ok(sweep)
}

enum Returned {
    Restored,
    Duplicate,
    /// Put back under this name, beside a different message of its own.
    Renamed(OsString),
}

/// Moves the claim `name` back into `domain_dir` unless a file is there
/// already. Then the claim is removed if the queue holds the same message
/// ([`same_message`]), else it goes back as `<name>.N`, the first free.
fn return_to_queue(claims: &QueueDir, name: &OsStr, domain_dir: &QueueDir) -> io::Result<Returned> {
    match claims.rename_no_clobber(name, domain_dir, name) {
        Ok(()) => return Ok(Returned::Restored),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if same_message(claims, name, domain_dir)? {
        claims.remove_file(name)?;
        return Ok(Returned::Duplicate);
    }
    for n in 1..MAX_SUFFIX {
        let mut candidate = name.to_owned();
        candidate.push(format!(".{n}"));
        match claims.rename_no_clobber(name, domain_dir, &candidate) {
            Ok(()) => return Ok(Returned::Renamed(candidate)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name for {} in {} after {MAX_SUFFIX} tries",
            name.to_string_lossy(),
            domain_dir.path().display()
        ),
    ))
}

/// Whether the claim `name` and the queued file of that name are one
/// message, so that removing the claim loses nothing: the same file (same
/// device and inode), the same bytes, or the queue copy a rewrite of the
/// claim (the same sender and message after the envelope block, its
/// recipients among the claim's: a rewrite only ever drops recipients).
/// Links and special files are never the same as anything but themselves,
/// and are never opened.
fn same_message(claims: &QueueDir, name: &OsStr, domain_dir: &QueueDir) -> io::Result<bool> {
    let (Some(claim), Some(queued)) = (claims.stat(name)?, domain_dir.stat(name)?) else {
        return Ok(false);
    };
    if (claim.dev, claim.ino) == (queued.dev, queued.ino) {
        return Ok(true);
    }
    if claim.kind != EntryKind::File || queued.kind != EntryKind::File {
        return Ok(false);
    }
    let open = |dir: &QueueDir| match dir.open_file(name) {
        Ok((file, _)) => Ok(Some(file)),
        Err(e) if refusal(&e).is_some() => Ok(None),
        Err(e) => Err(e),
    };
    let (Some(mut claim_file), Some(mut queued_file)) = (open(claims)?, open(domain_dir)?) else {
        return Ok(false);
    };
    if claim.len == queued.len && same_bytes(&mut claim_file, 0, &mut queued_file, 0)? {
        return Ok(true);
    }
    claim_file.rewind()?;
    queued_file.rewind()?;
    let (Ok(old), Ok(new)) = (
        read_envelope_from(&mut claim_file),
        read_envelope_from(&mut queued_file),
    ) else {
        return Ok(false);
    };
    let rewritten = old.sender == new.sender
        && new.recipients.iter().all(|r| old.recipients.contains(r))
        && claim.len.checked_sub(old.body_offset) == queued.len.checked_sub(new.body_offset);
    Ok(rewritten
        && same_bytes(
            &mut claim_file,
            old.body_offset,
            &mut queued_file,
            new.body_offset,
        )?)
}

/// Whether `a` from `a_from` and `b` from `b_from` hold the same bytes to
/// their ends.
fn same_bytes(a: &mut File, a_from: u64, b: &mut File, b_from: u64) -> io::Result<bool> {
    a.seek(SeekFrom::Start(a_from))?;
    b.seek(SeekFrom::Start(b_from))?;
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(a, &mut x)?;
        let m = read_full(b, &mut y)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
#[path = "claim_tests.rs"]
mod tests;
