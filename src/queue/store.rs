//! File operations on the queue (DESIGN.md "The queue on disk"): reading a
//! queued file's envelope and body, listing domains and messages, removing a
//! delivered file, and moving a file aside without ever overwriting one.
//! Every move is a `rename(2)` or `link(2)` inside one file system, so a
//! crash leaves each file either where it was or where it went.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::envelope::{parse_envelope, BlockScan, Envelope, EnvelopeError, MAX_ENVELOPE_BLOCK};
use super::{Layout, FAILED_DIR, QUARANTINE_DIR, TMP_DIR};

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
    /// claimed or completed it).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file was read but its envelope header block is invalid: quarantine it.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// Reads and parses the envelope header block of the queued file at `path`,
/// reading only as far as the empty line (at most [`MAX_ENVELOPE_BLOCK`]
/// bytes), never the whole message.
pub fn read_envelope(path: &Path) -> Result<Envelope, ReadError> {
    read_envelope_from(&mut File::open(path)?)
}

/// [`read_envelope`] for a file already open at its start: one open serves
/// both the envelope and, after [`BodyReader::from_file`], the message.
pub fn read_envelope_from(file: &mut File) -> Result<Envelope, ReadError> {
    let mut buf = Vec::with_capacity(HEAD_CHUNK);
    let mut scan = BlockScan::default();
    loop {
        let old = buf.len();
        buf.resize(old + HEAD_CHUNK, 0);
        let n = loop {
            match file.read(&mut buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        buf.truncate(old + n);
        if let Some(end) = scan.feed(&buf) {
            return Ok(parse_envelope(&buf[..end])?);
        }
        if n == 0 || buf.len() > MAX_ENVELOPE_BLOCK {
            // Unterminated or too large: the parser names which.
            return Ok(parse_envelope(&buf)?);
        }
    }
}

/// The domain folders under `.OTHER_SERVERS`, sorted: directories (or links
/// to them) whose names do not start with a dot. Names come back as they are
/// on disk (check them with [`super::valid_domain`]); a name that is not
/// UTF-8 comes back lossily converted so that it fails loudly downstream
/// instead of being skipped in silence. `NotFound` when `.OTHER_SERVERS`
/// does not exist.
pub fn list_domains(layout: &Layout) -> io::Result<Vec<String>> {
    let mut domains = Vec::new();
    for entry in fs::read_dir(layout.remote_dir())? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let is_dir = match entry.file_type() {
            Ok(t) if t.is_symlink() => fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()),
            Ok(t) => t.is_dir(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if is_dir {
            domains.push(name);
        }
    }
    domains.sort();
    Ok(domains)
}

/// The queued messages of one domain folder, sorted by name: regular files
/// directly inside it. Skips `tmp`, dot-entries (`.failed`, `.quarantine`)
/// and any subdirectory or link. Non-UTF-8 names come back lossily converted
/// (see [`list_domains`]).
pub fn list_messages(domain_dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(domain_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == TMP_DIR {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_file() => names.push(name),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    names.sort();
    Ok(names)
}

/// Removes a delivered file. A file already gone counts as removed.
pub fn complete(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Moves a permanently failed message to `<domain>/.failed/<name>` and writes
/// `reason` to `<name>.reason` beside it. Returns the new path, which has a
/// `.N` suffix when the name was taken: nothing is ever overwritten.
pub fn set_aside_failed(
    layout: &Layout,
    domain: &str,
    name: &str,
    reason: &str,
) -> io::Result<PathBuf> {
    set_aside(layout, domain, name, reason, FAILED_DIR)
}

/// Puts a copy of `from` (a claimed file, say) into `<domain>/.failed/` as
/// `<name>` (or `<name>.N`) with `reason` beside it, leaving `from` as it is:
/// for a message from the null sender whose failed recipients cannot be
/// bounced while others are still pending.
pub fn copy_aside_failed(
    layout: &Layout,
    domain: &str,
    name: &str,
    from: &Path,
    reason: &str,
) -> io::Result<PathBuf> {
    check_component("domain", domain)?;
    check_component("file name", name)?;
    let dir = layout.domain_dir(domain).join(FAILED_DIR);
    fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{name}.{}.copy", std::process::id()));
    let copied = fs::copy(from, &tmp).and_then(|_| File::open(&tmp)?.sync_all());
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let target_name = match move_no_clobber(&tmp, &dir, name) {
        Ok(target_name) => target_name,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    write_reason(&dir, &target_name, reason)?;
    Ok(dir.join(target_name))
}

/// Moves a file that cannot be parsed to `<domain>/.quarantine/<name>` with
/// its reason in `<name>.reason`, never overwriting (see [`set_aside_failed`]).
pub fn quarantine(layout: &Layout, domain: &str, name: &str, reason: &str) -> io::Result<PathBuf> {
    set_aside(layout, domain, name, reason, QUARANTINE_DIR)
}

fn set_aside(
    layout: &Layout,
    domain: &str,
    name: &str,
    reason: &str,
    sub: &str,
) -> io::Result<PathBuf> {
    check_component("domain", domain)?;
    check_component("file name", name)?;
    let domain_dir = layout.domain_dir(domain);
    let source = domain_dir.join(name);
    let dir = domain_dir.join(sub);
    fs::create_dir_all(&dir)?;
    let target_name = move_no_clobber(&source, &dir, name)?;
    write_reason(&dir, &target_name, reason)?;
    Ok(dir.join(target_name))
}

/// A path component we are about to join: not empty, no `/`, not `.`/`..`.
fn check_component(what: &str, value: &str) -> io::Result<()> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid {what} {value:?} for a queue path"),
        ));
    }
    Ok(())
}

/// Moves `source` into `dir` under `name` or the first free `name.N`, where
/// free means neither it nor its `.reason` exists. `link(2)` fails with
/// `EEXIST` instead of replacing, so two processes can never clobber each
/// other; file systems without hard links fall back to check-then-rename.
fn move_no_clobber(source: &Path, dir: &Path, name: &str) -> io::Result<String> {
    for n in 0..MAX_SUFFIX {
        let candidate = if n == 0 {
            name.to_owned()
        } else {
            format!("{name}.{n}")
        };
        let target = dir.join(&candidate);
        if exists(&dir.join(reason_name(&candidate)))? {
            continue;
        }
        match fs::hard_link(source, &target) {
            Ok(()) => {
                complete(source)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            // The target folder exists, so this is the source that is gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
            Err(_) => {
                if exists(&target)? {
                    continue;
                }
                fs::rename(source, &target)?;
                return Ok(candidate);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name for {name:?} in {} after {MAX_SUFFIX} tries",
            dir.display()
        ),
    ))
}

fn exists(path: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn reason_name(name: &str) -> String {
    format!("{name}.reason")
}

/// Writes `<dir>/<name>.reason` through a dot-named temporary file and a
/// rename, so a reader never sees half a reason.
fn write_reason(dir: &Path, name: &str, reason: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{}.tmp", reason_name(name)));
    let mut file = File::create(&tmp)?;
    file.write_all(reason.as_bytes())?;
    if !reason.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(reason_name(name)))
}

/// Streams the message of a queued file, starting after its envelope block,
/// in chunks of at most [`BODY_CHUNK`] bytes into a reused buffer.
#[derive(Debug)]
pub struct BodyReader {
    file: File,
    body_offset: u64,
}

impl BodyReader {
    /// Opens `path` and positions it at `body_offset` (from [`Envelope`]).
    pub fn open(path: &Path, body_offset: u64) -> io::Result<Self> {
        Self::from_file(File::open(path)?, body_offset)
    }

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
    /// file. It is one `read(2)`: a shorter chunk is not the end, 0 is.
    /// (`read_to_end` here grew the buffer and read in small steps, about
    /// 20 calls per 100 KB.)
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
