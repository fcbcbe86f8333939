//! The state file of a queued message: once its writer renamed it in, a
//! queue file is never written again; what changes (the recipients still
//! pending and the retry fields) lives in `<domain>/.state/<name>`, an
//! envelope block in the queue file's own format (DESIGN.md "The queue on
//! disk") and nothing after it. Recording an attempt then needs room for
//! that block only, never for a copy of the message, and a full disk can
//! never make postman send an accepted recipient again (issue 22).
//!
//! A state file names its queue file in `X-Postman-Queue-File: <size>
//! <hash>` (the file's size and the FNV-1a 64-bit hash of its own envelope
//! block): one that does not match is stale (left by a message of the same
//! name that is gone) and is ignored. A queue file without a state file,
//! whether a receiving server wrote it or an older postman rewrote it in
//! place, means what its own block says.
//!
//! State files are written through `<domain>/tmp/`, synced, renamed into
//! `.state/` and the folder synced: at any instant of a crash the old
//! state or the new one is in place. Before a transaction whose outcome
//! could leave part of the recipients delivered, the state file's space is
//! taken ([`reserve`]), so that a full disk is found before anything is
//! sent rather than after.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::dirfd::{refusal, EntryKind, QueueDir};
use super::envelope::{parse_envelope, Envelope, MAX_ENVELOPE_BLOCK};
use super::state::RetryState;
use super::store::{read_head, ReadError};
use super::tmpfile::create_tmp;
use super::{ACTIVE_DIR, HOLD_DIR, TMP_DIR};

/// The folder in each domain folder holding the state files.
pub const STATE_DIR: &str = ".state";

/// The field of a state file's block that names its queue file.
pub const QUEUE_FILE_FIELD: &str = "X-Postman-Queue-File";

/// How the temporary file of a reservation is named in `tmp/`:
/// `.state.<name>.<pid>.<n>.tmp`, so that recovery can find the one a
/// process left filled when it stopped.
const RESERVATION_PREFIX: &str = ".state.";

/// What ties a state file to its queue file: the queue file's size and the
/// FNV-1a hash of its envelope block's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tie {
    /// The queue file's size in bytes.
    pub size: u64,
    /// FNV-1a 64 of its envelope block, empty line included.
    pub hash: u64,
}

impl Tie {
    /// The tie of a queue file of `size` bytes whose block is `block`.
    pub fn of(size: u64, block: &[u8]) -> Tie {
        Tie {
            size,
            hash: fnv1a64(block),
        }
    }

    /// The value of [`QUEUE_FILE_FIELD`]: `<size> <hash in hex>`.
    pub fn field_value(&self) -> String {
        format!("{} {:016x}", self.size, self.hash)
    }

    /// Reads a [`QUEUE_FILE_FIELD`] value.
    pub fn parse(value: &str) -> Option<Tie> {
        let (size, hash) = value.trim().split_once(' ')?;
        Some(Tie {
            size: size.parse().ok()?,
            hash: u64::from_str_radix(hash.trim(), 16).ok()?,
        })
    }

    /// The tie a block names, if it names one.
    fn named_in(envelope: &Envelope) -> Option<Tie> {
        envelope
            .extra
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(QUEUE_FILE_FIELD))
            .and_then(|(_, value)| Tie::parse(value))
    }
}

/// FNV-1a, 64 bits (Fowler, Noll, Vo): small, and enough to tell a queue
/// file from another that took its name.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Where the envelope of a [`Queued`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The queue file's own block: it has no state file.
    Own,
    /// Its state file.
    StateFile,
    /// The queue file's own block: its state file was there but is not its
    /// own (or cannot be read as one), and was ignored for this reason.
    Ignored(String),
}

/// A queued message as it stands.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The envelope in force: from the state file when it belongs to the
    /// queue file, else from the file's own block. Its `body_offset` is
    /// always the queue file's.
    pub envelope: Envelope,
    /// The retry state among the envelope's fields.
    pub retry: RetryState,
    /// What a state file of this queue file must name.
    pub tie: Tie,
    /// Where the envelope came from.
    pub source: Source,
    /// The length of the envelope block in force, in bytes (the state
    /// file's, or the queue file's own).
    pub block_len: u64,
}

/// Reads the queued message `name` of the domain folder `domain_dir`
/// (`folder` is its name), whose file is open at its start (wherever it
/// lies: in the folder, claimed in `.active/<owner>/`, or held) and `size`
/// bytes long: its own envelope block, and its state file when that names
/// it. The recipients are checked against `folder`
/// ([`Envelope::check_folder`]).
///
/// A state file that cannot be opened for a reason that may pass (no
/// descriptor free, an I/O error) is an error, never ignored: falling back
/// on the queue file's own block could send its recipients again. One that
/// is refused (a link, a special file, too large), does not parse or names
/// another file is ignored ([`Source::Ignored`]).
pub fn read_queued(
    domain_dir: &QueueDir,
    name: &str,
    file: &mut File,
    size: u64,
    folder: &str,
) -> Result<Queued, ReadError> {
    let (head, end) = read_head(file)?;
    let block = &head[..end.unwrap_or(head.len())];
    let own = parse_envelope(block)?;
    let tie = Tie::of(size, block);
    let own_len = block.len() as u64;
    let (envelope, source, block_len) = match read_state(domain_dir, name)? {
        None => (own, Source::Own, own_len),
        Some(Err(why)) => (own, Source::Ignored(why), own_len),
        Some(Ok(state)) if Tie::named_in(&state) == Some(tie) => {
            let len = state.body_offset;
            (in_force(own, state), Source::StateFile, len)
        }
        Some(Ok(_)) => (
            own,
            Source::Ignored(format!(
                "it names another queue file than this one ({QUEUE_FILE_FIELD}: {})",
                tie.field_value()
            )),
            own_len,
        ),
    };
    let retry = RetryState::from_envelope(&envelope)?;
    envelope.check_folder(folder)?;
    Ok(Queued {
        envelope,
        retry,
        tie,
        source,
        block_len,
    })
}

/// The state file of `name`: `None` when there is none, `Some(Err(why))`
/// when it is not one postman can use.
fn read_state(domain_dir: &QueueDir, name: &str) -> io::Result<Option<Result<Envelope, String>>> {
    let path = Path::new(STATE_DIR).join(name);
    match domain_dir.read_small(&path, MAX_ENVELOPE_BLOCK as u64) {
        Ok(None) => Ok(None),
        Ok(Some(bytes)) => Ok(Some(parse_envelope(&bytes).map_err(|e| e.to_string()))),
        Err(e) if refusal(&e).is_some() => Ok(Some(Err(e.to_string()))),
        Err(e) => Err(e),
    }
}

/// The envelope in force: the state file's, on the queue file's body.
fn in_force(own: Envelope, mut state: Envelope) -> Envelope {
    state
        .extra
        .retain(|(name, _)| !name.eq_ignore_ascii_case(QUEUE_FILE_FIELD));
    Envelope {
        arrival: state.arrival.or(own.arrival),
        body_offset: own.body_offset,
        ..state
    }
}

/// The tie of an open queue file (read from its start), or `None` when it
/// has no envelope block.
pub fn tie_of(file: &mut File, size: u64) -> io::Result<Option<Tie>> {
    file.seek(SeekFrom::Start(0))?;
    let (head, end) = read_head(file)?;
    Ok(end.map(|end| Tie::of(size, &head[..end])))
}

/// Space taken in `<domain>/tmp/` for the next state file of one message:
/// a temporary file already filled with zeros, so that writing the state
/// into it later needs no new blocks. Give it to [`write_state`], or
/// [`Reservation::discard`] it.
#[derive(Debug)]
#[must_use = "a reservation left behind takes space until the tmp/ sweep removes it"]
pub struct Reservation {
    tmp: QueueDir,
    tmp_name: String,
    file: File,
    len: u64,
    /// The state is written and synced in it: only the rename is left.
    filled: bool,
}

impl Reservation {
    /// The bytes reserved.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing is reserved (never: [`reserve`] takes at least one
    /// byte).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Gives the space back.
    pub fn discard(self) {
        // Best effort: a leftover goes with the tmp/ sweep.
        let _ = self.tmp.remove_file(&self.tmp_name);
    }

    /// Leaves the file where it is for [`adopt_reservation`] (a process
    /// that stops with a state it could not put in place).
    pub fn keep_for_recovery(self) {}
}

/// Reserves `len` bytes (at least one) for the next state file of `name`
/// in the domain folder `domain_dir`: a file in its `tmp/`, filled with
/// zeros. `ENOSPC` or `EDQUOT` when the disk has no room for them; then
/// nothing is left behind.
pub fn reserve(domain_dir: &QueueDir, name: &str, len: u64) -> io::Result<Reservation> {
    let tmp = domain_dir.dir_create(TMP_DIR)?;
    let (tmp_name, mut file) = create_tmp(&tmp, &format!("{RESERVATION_PREFIX}{name}"))?;
    let len = len.max(1);
    let filled = (|| {
        let zeros = vec![0u8; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        // Written, so the blocks are taken: a file system that only counts
        // them at write-back (delayed allocation) still says ENOSPC here.
        file.flush()
    })();
    match filled {
        Ok(()) => Ok(Reservation {
            tmp,
            tmp_name,
            file,
            len,
            filled: false,
        }),
        Err(e) => {
            let _ = tmp.remove_file(&tmp_name);
            Err(e)
        }
    }
}

/// A state file that could not be written, with what is needed to try
/// again: the reservation, when there was one, is given back (with the
/// block in it when only the rename failed).
#[derive(Debug)]
pub struct Unwritten {
    /// Why.
    pub error: io::Error,
    /// The reservation, to try again with.
    pub reservation: Option<Reservation>,
}

/// Records `block` as the state file of `name` in `domain_dir`: written
/// into `reservation` in place when there is one (from its start, then cut
/// to length), else into a new file in `tmp/`; synced; renamed over
/// `.state/<name>`; `.state/` synced. On failure nothing in `.state/` has
/// changed and the reservation comes back.
pub fn write_state(
    domain_dir: &QueueDir,
    name: &str,
    block: &[u8],
    reservation: Option<Reservation>,
) -> Result<(), Unwritten> {
    let mut reservation = match reservation {
        Some(r) => r,
        None => {
            let tmp = domain_dir.dir_create(TMP_DIR).map_err(unwritten)?;
            let (tmp_name, file) =
                create_tmp(&tmp, &format!("{RESERVATION_PREFIX}{name}")).map_err(unwritten)?;
            Reservation {
                tmp,
                tmp_name,
                file,
                len: 0,
                filled: false,
            }
        }
    };
    if !reservation.filled {
        let written = (|| {
            reservation.file.seek(SeekFrom::Start(0))?;
            reservation.file.write_all(block)?;
            reservation.file.set_len(block.len() as u64)?;
            reservation.file.sync_all()
        })();
        if let Err(error) = written {
            return Err(Unwritten {
                error,
                reservation: Some(reservation),
            });
        }
        reservation.filled = true;
    }
    let placed = domain_dir.dir_create(STATE_DIR).and_then(|states| {
        reservation
            .tmp
            .rename(&reservation.tmp_name, &states, name)?;
        states.sync()
    });
    match placed {
        Ok(()) => Ok(()),
        Err(error) => Err(Unwritten {
            error,
            reservation: Some(reservation),
        }),
    }
}

fn unwritten(error: io::Error) -> Unwritten {
    Unwritten {
        error,
        reservation: None,
    }
}

/// Removes the state file of `name`, if any (the message is gone).
pub fn remove_state(domain_dir: &QueueDir, name: &str) -> io::Result<()> {
    match domain_dir.remove_file(Path::new(STATE_DIR).join(name)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes the state file of `name` when it is the one of the queue file
/// tied by `tie` (a message deleted from where it was held, say, while
/// another of its name may be claimed).
pub fn remove_state_of(domain_dir: &QueueDir, name: &str, tie: Option<Tie>) -> io::Result<()> {
    let Some(tie) = tie else {
        return Ok(());
    };
    match read_state(domain_dir, name)? {
        Some(Ok(state)) if Tie::named_in(&state) == Some(tie) => remove_state(domain_dir, name),
        _ => Ok(()),
    }
}

/// Moves the state file of `name` to `<to>/<target>.state`, beside the
/// message set aside there as `<target>`, when it is that message's (its
/// tie is `tie`): so the postmaster sees which recipients were pending.
/// A state file of another message stays where it is.
pub fn move_state_beside(
    domain_dir: &QueueDir,
    name: &str,
    tie: Option<Tie>,
    to: &QueueDir,
    target: &str,
) -> io::Result<()> {
    let path = Path::new(STATE_DIR).join(name);
    let Some(tie) = tie else {
        return Ok(());
    };
    let ours = match read_state(domain_dir, name)? {
        Some(Ok(state)) => Tie::named_in(&state) == Some(tie),
        _ => false,
    };
    if !ours {
        return Ok(());
    }
    match domain_dir.rename_no_clobber(&path, to, format!("{target}.state")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The reservations a process left in `tmp/` for `name` holding a whole
/// state block that names `tie`: the newest is put in place as the state
/// file of `name` (it records an attempt whose state could not be renamed
/// into `.state/` before the process stopped), and every reservation of
/// `name` is removed. Returns whether one was put in place.
pub fn adopt_reservation(domain_dir: &QueueDir, name: &str, tie: Tie) -> io::Result<bool> {
    let tmp = match domain_dir.dir(TMP_DIR) {
        Ok(tmp) => tmp,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let prefix = format!("{RESERVATION_PREFIX}{name}.");
    let mut best: Option<(std::time::SystemTime, String)> = None;
    let mut all = Vec::new();
    for entry in tmp.entries()? {
        if entry.kind != EntryKind::File {
            continue;
        }
        let Some(tmp_name) = entry.name.to_str() else {
            continue;
        };
        let Some(rest) = tmp_name.strip_prefix(&prefix) else {
            continue;
        };
        // `<pid>.<n>.tmp`: another message's name may start with ours.
        let parts: Vec<&str> = rest.split('.').collect();
        let ours = parts.len() == 3
            && parts[2] == "tmp"
            && parts[..2]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if !ours {
            continue;
        }
        all.push(tmp_name.to_owned());
        let filled = match tmp.read_small(tmp_name, MAX_ENVELOPE_BLOCK as u64) {
            Ok(Some(bytes)) => parse_envelope(&bytes)
                .ok()
                .is_some_and(|state| Tie::named_in(&state) == Some(tie)),
            _ => false,
        };
        if !filled {
            continue;
        }
        let modified = tmp.stat(tmp_name)?.map(|s| s.modified);
        if let Some(modified) = modified {
            if best.as_ref().is_none_or(|(when, _)| modified > *when) {
                best = Some((modified, tmp_name.to_owned()));
            }
        }
    }
    let adopted = match &best {
        Some((_, tmp_name)) => {
            let states = domain_dir.dir_create(STATE_DIR)?;
            tmp.rename(tmp_name, &states, name)?;
            states.sync()?;
            true
        }
        None => false,
    };
    for tmp_name in all {
        if best.as_ref().is_some_and(|(_, b)| *b == tmp_name) {
            continue;
        }
        let _ = tmp.remove_file(&tmp_name);
    }
    Ok(adopted)
}

/// What [`sweep_states`] removed.
#[derive(Debug, Default)]
pub struct StateSweep {
    /// State files of no message: neither in the domain folder, nor held,
    /// nor claimed by any owner.
    pub orphans: Vec<PathBuf>,
    /// State files that name another queue file than the message of their
    /// name (left by an earlier message of that name).
    pub stale: Vec<PathBuf>,
    /// What could not be looked at or removed, with why.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// Removes the state files of the domain folder `domain_dir` that belong
/// to no message ([`StateSweep`]), last changed before `now - grace`: a
/// younger one may be another process's, written for a message it is
/// about to link in under that name (a split), which start-up recovery on
/// shared storage must not take away.
pub fn sweep_states(
    domain_dir: &QueueDir,
    now: SystemTime,
    grace: Duration,
    sweep: &mut StateSweep,
) {
    let states = match domain_dir.dir(STATE_DIR) {
        Ok(states) => states,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            sweep.errors.push((domain_dir.display_path(STATE_DIR), e));
            return;
        }
    };
    let entries = match states.entries() {
        Ok(entries) => entries,
        Err(e) => {
            sweep.errors.push((states.path().to_path_buf(), e));
            return;
        }
    };
    let cutoff = now.checked_sub(grace).unwrap_or(std::time::UNIX_EPOCH);
    for entry in entries {
        let path = states.display_path(&entry.name);
        let Some(name) = entry.name.to_str() else {
            continue;
        };
        let old = match states.stat(name) {
            Ok(Some(stat)) => stat.modified < cutoff,
            Ok(None) => continue,
            Err(e) => {
                sweep.errors.push((path, e));
                continue;
            }
        };
        if !old {
            continue;
        }
        let verdict = match (entry.kind, read_state(domain_dir, name)) {
            (EntryKind::File, Ok(Some(Ok(state)))) => match Tie::named_in(&state) {
                Some(tie) => belongs(domain_dir, name, tie),
                None => Ok(Belongs::Stale),
            },
            (EntryKind::File, Ok(None)) => continue,
            (_, Err(e)) if refusal(&e).is_none() => Err(e),
            // Not a state file postman could use: a link, a special file,
            // a folder, or a block that does not parse.
            _ => Ok(Belongs::Stale),
        };
        let list = match verdict {
            Ok(Belongs::Yes) => continue,
            Ok(Belongs::Stale) => &mut sweep.stale,
            Ok(Belongs::Orphan) => &mut sweep.orphans,
            Err(e) => {
                sweep.errors.push((path, e));
                continue;
            }
        };
        let removed = if entry.kind == EntryKind::Dir {
            states.remove_dir(&entry.name)
        } else {
            states.remove_file(&entry.name)
        };
        match removed {
            Ok(()) => list.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => sweep.errors.push((path, e)),
        }
    }
}

enum Belongs {
    Yes,
    Stale,
    Orphan,
}

/// Whether a message `name` whose queue file `tie` names lies in the
/// domain folder, is held, or is claimed by any owner.
fn belongs(domain_dir: &QueueDir, name: &str, tie: Tie) -> io::Result<Belongs> {
    let mut places = vec![PathBuf::from(name), Path::new(HOLD_DIR).join(name)];
    match domain_dir.dir(ACTIVE_DIR) {
        Ok(active) => {
            for owner in active.entries()? {
                if owner.kind == EntryKind::Dir {
                    places.push(Path::new(ACTIVE_DIR).join(&owner.name).join(name));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound || refusal(&e).is_some() => {}
        Err(e) => return Err(e),
    }
    let mut found = false;
    for place in places {
        let (mut file, meta) = match domain_dir.open_file(&place) {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound || refusal(&e).is_some() => continue,
            Err(e) => return Err(e),
        };
        found = true;
        if tie_of(&mut file, meta.len())? == Some(tie) {
            return Ok(Belongs::Yes);
        }
    }
    Ok(if found {
        Belongs::Stale
    } else {
        Belongs::Orphan
    })
}

#[cfg(test)]
#[path = "statefile_tests.rs"]
mod tests;
