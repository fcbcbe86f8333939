//! File operations on the queue (DESIGN.md "The queue on disk"): reading a
//! queued file's envelope and body, listing domains and messages, and
//! moving a file aside without ever overwriting one. Every move is a
//! `rename(2)` inside one file system, so a crash leaves each file either
//! where it was or where it went; every file and folder is reached through
//! a [`QueueDir`], never through a link.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::dirfd::{EntryKind, QueueDir};
use super::envelope::{parse_envelope, BlockScan, Envelope, EnvelopeError, MAX_ENVELOPE_BLOCK};
use super::state::StateError;
use super::statefile::{move_state_beside, tie_of};
use super::{Queue, FAILED_DIR, QUARANTINE_DIR, TMP_DIR};

/// How much [`read_envelope`] reads at a time: envelopes are small.
const HEAD_CHUNK: usize = 4096;

/// The most bytes [`BodyReader::read_chunk`] returns at once.
pub const BODY_CHUNK: usize = 64 * 1024;

/// How many suffixed names to try before giving up on a set-aside target.
const MAX_SUFFIX: u32 = 10_000;

/// Why a queued file's envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading the file failed (`NotFound`: another process
    /// claimed or completed it; a refusal of [`super::dirfd`]: a link or
    /// special file).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file was read but its envelope header block is invalid: quarantine it.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The envelope parsed, but a retry field in it (or in its state
    /// file's block) does not: quarantine it.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Reads and parses the envelope header block of the queued file `name` in
/// `dir`, reading only as far as the empty line (at most
/// [`MAX_ENVELOPE_BLOCK`] bytes), never the whole message. A link or
/// special file is refused unopened.
pub fn read_envelope(dir: &QueueDir, name: impl AsRef<Path>) -> Result<Envelope, ReadError> {
    read_envelope_from(&mut dir.open_file(name)?.0)
}

/// [`read_envelope`] for a file already open at its start: one open serves
/// both the envelope and, after [`BodyReader::from_file`], the message.
pub fn read_envelope_from(file: &mut File) -> Result<Envelope, ReadError> {
    let (head, end) = read_head(file)?;
    Ok(parse_envelope(&head[..end.unwrap_or(head.len())])?)
}

/// Reads the start of an open file as far as the empty line that ends its
/// envelope block (at most a little over [`MAX_ENVELOPE_BLOCK`] bytes):
/// the bytes read, and where the block ends when it does (`None`: the file
/// ended first, or the block is too large; the parser says which).
pub(crate) fn read_head(file: &mut File) -> io::Result<(Vec<u8>, Option<usize>)> {
    let mut buf = Vec::with_capacity(HEAD_CHUNK);
    let mut scan = BlockScan::default();
    loop {
        let old = buf.len();
        buf.resize(old + HEAD_CHUNK, 0);
        let n = loop {
            match file.read(&mut buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        buf.truncate(old + n);
        if let Some(end) = scan.feed(&buf) {
            return Ok((buf, Some(end)));
        }
        if n == 0 || buf.len() > MAX_ENVELOPE_BLOCK {
            return Ok((buf, None));
        }
    }
}

/// The domain folders under `.OTHER_SERVERS`, sorted: real directories
/// (never links) whose names are UTF-8 and do not start with a dot. Check
/// the names with [`super::valid_domain`]; the scanner looks at the
/// entries itself to report what is left out. `NotFound` when
/// `.OTHER_SERVERS` does not exist.
pub fn list_domains(queue: &Queue) -> io::Result<Vec<String>> {
    let mut domains = names_of(queue.remote()?, EntryKind::Dir)?;
    domains.sort();
    Ok(domains)
}

/// The queued messages of one domain folder, sorted by name: regular files
/// (never links or special files) directly inside it whose names are
/// UTF-8. Skips `tmp` and dot-entries (`.failed`, `.quarantine`).
pub fn list_messages(dir: &QueueDir) -> io::Result<Vec<String>> {
    let mut names = names_of(dir, EntryKind::File)?;
    names.retain(|name| name != TMP_DIR);
    names.sort();
    Ok(names)
}

/// The UTF-8 names in `dir` of entries of `kind` not starting with a dot.
pub(crate) fn names_of(dir: &QueueDir, kind: EntryKind) -> io::Result<Vec<String>> {
    Ok(dir
        .entries()?
        .into_iter()
        .filter(|e| e.kind == kind && !e.name.as_bytes().starts_with(b"."))
        .filter_map(|e| e.name.into_string().ok())
        .collect())
}

/// A name made UTF-8: each byte of `name` that is not part of valid UTF-8
/// becomes `\xNN` (and a backslash stays a backslash), so a file whose
/// name is not UTF-8 can be renamed to something every tool, log and
/// `postman queue` can show, and told apart from others like it.
pub fn escape_name(name: &OsStr) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for chunk in name.as_bytes().utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// Moves a permanently failed message to `<domain>/.failed/<name>` and writes
/// `reason` to `<name>.reason` beside it. Returns the new path, which has a
/// `.N` suffix when the name was taken: nothing is ever overwritten.
pub fn set_aside_failed(
    queue: &Queue,
    domain: &str,
    name: &str,
    reason: &str,
) -> io::Result<PathBuf> {
    set_aside(&*queue.domain(domain)?, name, reason, FAILED_DIR)
}

/// Moves a queue entry that cannot be delivered as it is (unparseable, a
/// link, a special file) to `<domain>/.quarantine/<name>` with its reason
/// in `<name>.reason`, never overwriting (see [`set_aside_failed`]). The
/// entry itself moves; a link is never followed, a special file never
/// opened.
pub fn quarantine(queue: &Queue, domain: &str, name: &str, reason: &str) -> io::Result<PathBuf> {
    set_aside(&*queue.domain(domain)?, name, reason, QUARANTINE_DIR)
}

/// Moves `name` from `from` to `<domain_dir>/<sub>/` under a free name with
/// `reason` beside it; returns the new path.
pub(crate) fn set_aside_from(
    from: &QueueDir,
    name: &str,
    domain_dir: &QueueDir,
    reason: &str,
    sub: &str,
) -> io::Result<PathBuf> {
    check_component("file name", name)?;
    let dir = domain_dir.dir_create(sub)?;
    // Whose the state file is can only be told before the move (a link or
    // special file has none: it is never opened).
    let tie = match from.open_file(name) {
        Ok((mut file, meta)) => tie_of(&mut file, meta.len()).ok().flatten(),
        Err(_) => None,
    };
    let target = move_no_clobber(from, name, &dir, name)?;
    write_reason(&dir, &target, reason)?;
    // The pending recipients go with it, for the postmaster.
    move_state_beside(domain_dir, name, tie, &dir, &target)?;
    Ok(dir.display_path(target))
}

fn set_aside(domain_dir: &QueueDir, name: &str, reason: &str, sub: &str) -> io::Result<PathBuf> {
    set_aside_from(domain_dir, name, domain_dir, reason, sub)
}

/// Moves the entry `from` of the domain folder `dir` (a link, a special
/// file, whatever it is: it is never opened) to `.quarantine/<name>` (or
/// `<name>.N`) with `reason` beside it; returns the new path. `name` is
/// `from` as UTF-8 ([`escape_name`]).
pub fn quarantine_entry(
    dir: &QueueDir,
    from: &OsStr,
    name: &str,
    reason: &str,
) -> io::Result<PathBuf> {
    check_component("file name", name)?;
    let quarantine = dir.dir_create(QUARANTINE_DIR)?;
    let target = move_no_clobber(dir, from, &quarantine, name)?;
    write_reason(&quarantine, &target, reason)?;
    Ok(quarantine.display_path(target))
}

/// Renames the entry `from` of `dir`, whose name is not UTF-8, to `to` (its
/// [`escape_name`]) or the first free `to.N`; returns the name it got.
/// Never replaces anything.
pub fn rename_escaped(dir: &QueueDir, from: &OsStr, to: &str) -> io::Result<String> {
    check_component("file name", to)?;
    move_no_clobber(dir, from, dir, to)
}

/// A path component we are about to use: not empty, no `/`, not `.`/`..`.
pub(crate) fn check_component(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} {value:?} for a queue path"),
        ));
    }
    Ok(())
}

/// Moves `from_name` in `from` into `dir` under `name` or the first free
/// `name.N`, where free means neither it nor its `.reason` exists; returns
/// the name used. `RENAME_NOREPLACE` never replaces, so two processes can
/// never clobber each other.
pub(crate) fn move_no_clobber(
    from: &QueueDir,
    from_name: impl AsRef<Path>,
    dir: &QueueDir,
    name: &str,
) -> io::Result<String> {
    let from_name = from_name.as_ref();
    for n in 0..MAX_SUFFIX {
        let candidate = if n == 0 {
            name.to_owned()
        } else {
            format!("{name}.{n}")
        };
        if dir.stat(reason_name(&candidate))?.is_some() {
            continue;
        }
        match from.rename_no_clobber(from_name, dir, &candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name for {name:?} in {} after {MAX_SUFFIX} tries",
            dir.path().display()
        ),
    ))
}

fn reason_name(name: &str) -> String {
    format!("{name}.reason")
}

/// Writes `<dir>/<name>.reason` through a dot-named temporary file and a
/// rename, so a reader never sees half a reason.
pub(crate) fn write_reason(dir: &QueueDir, name: &str, reason: &str) -> io::Result<()> {
    let tmp = format!(".{}.{}.tmp", reason_name(name), std::process::id());
    // A leftover of a crash of an earlier process with our pid.
    match dir.remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let written = (|| {
        let mut file = dir.create_new(&tmp, 0o666)?;
        file.write_all(reason.as_bytes())?;
        if !reason.ends_with('\n') {
            file.write_all(b"\n")?;
        }
        file.sync_all()?;
        drop(file);
        dir.rename(&tmp, dir, reason_name(name))
    })();
    if written.is_err() {
        let _ = dir.remove_file(&tmp);
    }
    written
}

/// Streams the message of a queued file, starting after its envelope block,
/// in chunks of at most [`BODY_CHUNK`] bytes into a reused buffer.
#[derive(Debug)]
pub struct BodyReader {
    file: File,
    body_offset: u64,
}

impl BodyReader {
    /// Uses an already open file (for example one just claimed).
    pub fn from_file(mut file: File, body_offset: u64) -> io::Result<Self> {
        file.seek(SeekFrom::Start(body_offset))?;
        Ok(BodyReader { file, body_offset })
    }

    /// The open file, and where the body starts in it.
    pub fn file_and_offset(&self) -> (&File, u64) {
        (&self.file, self.body_offset)
    }

    /// The open file, to be closed when the caller chooses.
    pub fn into_file(self) -> File {
        self.file
    }

    /// Goes to octet `at` of the message (0 is its first).
    pub fn seek_in_body(&mut self, at: u64) -> io::Result<()> {
        let to = self.body_offset.checked_add(at).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset past the end of a file")
        })?;
        self.file.seek(SeekFrom::Start(to)).map(|_| ())
    }

    /// Goes back to the first byte of the message (after a measuring pass).
    pub fn rewind(&mut self) -> io::Result<()> {
        self.file
            .seek(SeekFrom::Start(self.body_offset))
            .map(|_| ())
    }

    /// Replaces what `buf` holds with the next chunk of up to
    /// [`BODY_CHUNK`] bytes; returns its length, 0 only at the end of the
    /// file. It is one `read(2)`: a shorter chunk is not the end, 0 is
    /// (`read_to_end` grows the buffer and reads in small steps).
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        // Only bytes beyond what the last chunk left are zeroed.
        buf.resize(BODY_CHUNK, 0);
        match self.read_into(buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(n)
            }
            Err(e) => {
                buf.clear();
                Err(e)
            }
        }
    }

    /// Reads the next bytes of the message into `buf`, as much as one
    /// `read(2)` gives (retried only when interrupted); 0 only at the end of
    /// the file or when `buf` is empty. For a caller that keeps the body in
    /// a buffer of its own, which is then neither zeroed nor copied again.
    pub fn read_into(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.file.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
