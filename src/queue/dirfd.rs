//! One way to touch the queue: every file and folder postman opens, creates,
//! renames or removes under the queue root is reached from an open directory
//! descriptor, one path component at a time, and never through a symbolic
//! link or into a special file. Anyone who can write into the queue (the
//! receiving server's user, a careless operator) could otherwise point a
//! domain folder, `.active`, `.quarantine`, a mailbox or a queue file at
//! something outside the root, or leave a FIFO that hangs a blocking open.
//!
//! * Directories open with `O_DIRECTORY | O_NOFOLLOW` and `openat2`'s
//!   `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH` (Linux 5.6; older kernels walk
//!   the components with `openat(O_NOFOLLOW)` one by one), so no component of
//!   a relative path may be a link or `..`.
//! * Files open with `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY`, and an
//!   `fstat` of the open descriptor must say "regular file": a FIFO, socket
//!   or device is refused before anything reads from it.
//! * Renames, links and removals take a directory descriptor and a single
//!   name (`renameat`, `linkat` without `AT_SYMLINK_FOLLOW`, `unlinkat`), so
//!   they act on the entry itself, never on what a link points to.
//! * Metadata files are read with a size limit ([`QueueDir::read_small`]).
//!
//! What is refused comes back as an `io::Error` of kind `InvalidData` whose
//! inner error is a [`Refused`]; [`refusal`] finds it without matching text.
//! The queue root itself is the operator's setting and may be reached
//! through links ([`QueueDir::open_root`]); nothing below it is.

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;

/// Why an entry under the queue root was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedKind {
    /// A symbolic link (or a path through one).
    Link,
    /// A FIFO (named pipe): opening or reading it could block for ever.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character or block device (`/dev/zero` linked in, say).
    Device,
    /// A directory where a file was expected.
    Directory,
    /// Something other than a directory where a directory was expected.
    NotDirectory,
    /// A metadata file larger than its reader's limit.
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A relative path with an empty, `.`, `..` or absolute component.
    BadName,
}

impl RefusedKind {
    fn describe(self) -> String {
        match self {
            RefusedKind::Link => "a symbolic link".to_owned(),
            RefusedKind::Fifo => "a FIFO".to_owned(),
            RefusedKind::Socket => "a socket".to_owned(),
            RefusedKind::Device => "a device".to_owned(),
            RefusedKind::Directory => "a directory, not a file".to_owned(),
            RefusedKind::NotDirectory => "not a directory".to_owned(),
            RefusedKind::TooLarge { limit } => format!("larger than {limit} bytes"),
            RefusedKind::BadName => "not a plain relative path".to_owned(),
        }
    }
}

/// An entry under the queue root that postman will not follow, open or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is {}: postman does not follow links or open special files in the queue", path.display(), kind.describe())]
pub struct Refused {
    /// The entry, for the log.
    pub path: PathBuf,
    /// What it is.
    pub kind: RefusedKind,
}

/// The [`Refused`] inside `e`, if `e` is a refusal of this module.
pub fn refusal(e: &io::Error) -> Option<&Refused> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Refused>())
}

fn refused(path: PathBuf, kind: RefusedKind) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refused { path, kind })
}

/// What a directory entry is, as [`QueueDir::entries`] and
/// [`QueueDir::stat`] see it (never following a link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// A FIFO, socket or device.
    Special,
}

/// One entry of a directory listing. The name is as it is on disk, which
/// need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name, one path component.
    pub name: OsString,
    /// What it is.
    pub kind: EntryKind,
}

/// `lstat` of one entry, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub len: u64,
    /// Last modification.
    pub modified: SystemTime,
    /// Device and inode: equal for two names of one file.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// For [`EntryKind::Special`], which kind (else [`RefusedKind::Device`],
    /// unused).
    pub special: RefusedKind,
}

/// An open directory under (or at) the queue root. Cheap to hold; every
/// operation is relative to it.
#[derive(Debug)]
pub struct QueueDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// The flags every open of ours carries.
fn base_flags() -> OFlag {
    OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | base_flags()
}

impl QueueDir {
    /// Opens the queue root (`application.maildir.path`). The root is the
    /// operator's choice and may be a link or lie behind one; everything
    /// below it is reached through this descriptor.
    pub fn open_root(path: &Path) -> io::Result<QueueDir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(QueueDir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The directory's path, for messages only: operations use the descriptor.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path()` joined with `rel`, for messages.
    pub fn display_path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// A second handle on the same directory (a new descriptor).
    pub fn try_clone(&self) -> io::Result<QueueDir> {
        Ok(QueueDir {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
        })
    }

    /// This directory on `other`, a duplicate of its descriptor made by the
    /// caller: the actors move descriptors they keep open for long above
    /// `FD_SETSIZE` (`F_DUPFD_CLOEXEC`), which takes the `unsafe` the core
    /// forbids. `other` is kept only when it is this very directory (a
    /// directory of the same device and inode); else it is closed and
    /// `self` returned, so no handle can be swapped for another folder.
    pub fn with_descriptor(self, other: OwnedFd) -> QueueDir {
        let same = match (self.identity(), nix::sys::stat::fstat(&other)) {
            (Ok(ours), Ok(st)) => {
                kind_of_mode(st.st_mode) == EntryKind::Dir && ours == (st.st_dev, st.st_ino)
            }
            _ => false,
        };
        if same {
            QueueDir {
                fd: other,
                path: self.path,
            }
        } else {
            self
        }
    }

    /// Device and inode of this directory (`fstat`): equal to a
    /// [`Stat`] of the name it was opened by while that name still leads
    /// here.
    pub fn identity(&self) -> io::Result<(u64, u64)> {
        let st = nix::sys::stat::fstat(&self.fd).map_err(io::Error::from)?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Opens the directory `rel` below this one. Every component must be a
    /// real directory: a link anywhere is [`RefusedKind::Link`], a file is
    /// [`RefusedKind::NotDirectory`]; `NotFound` when it does not exist.
    pub fn dir(&self, rel: impl AsRef<Path>) -> io::Result<QueueDir> {
        let rel = rel.as_ref();
        check_relative(&self.path, rel)?;
        let fd = self
            .open_beneath(rel, dir_flags(), Mode::empty())
            .map_err(|e| self.classify(rel, e))?;
        Ok(QueueDir {
            fd,
            path: self.path.join(rel),
        })
    }

    /// Opens the directory `rel`, creating each missing component (mode
    /// 0777 less the umask, as `mkdir -p`). A component that exists as
    /// anything but a directory is refused as [`QueueDir::dir`] says.
    pub fn dir_create(&self, rel: impl AsRef<Path>) -> io::Result<QueueDir> {
        let rel = rel.as_ref();
        check_relative(&self.path, rel)?;
        match self.dir(rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let mut current = self.try_clone()?;
        for component in rel.components() {
            let name = component.as_os_str();
            // Two tries: a concurrent `mkdir -p` may create it between our
            // failed open and our mkdir (EEXIST), and then the open works.
            let mut tries = 0;
            current = loop {
                match current.dir(name) {
                    Ok(next) => break next,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && tries < 2 => {
                        tries += 1;
                        match nix::sys::stat::mkdirat(
                            &current.fd,
                            name,
                            Mode::from_bits_truncate(0o777),
                        ) {
                            Ok(()) | Err(Errno::EEXIST) => {}
                            Err(e) => return Err(io::Error::from(e)),
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
        }
        Ok(current)
    }

    /// Opens the regular file `rel` for reading, never following a link
    /// and never blocking on a FIFO: the open is non-blocking and the open
    /// descriptor's `fstat` must say "regular file", else the file is
    /// refused (its kind says what it was). Returns the file and its
    /// metadata. The file keeps `O_NONBLOCK`, which has no effect on a
    /// regular file (open(2): "this flag has no effect for regular files
    /// and block devices"): clearing it cost two `fcntl` calls per message.
    pub fn open_file(&self, rel: impl AsRef<Path>) -> io::Result<(File, Metadata)> {
        self.open_regular(rel.as_ref(), OFlag::O_RDONLY)
    }

    /// Opens the regular file `rel` for reading and writing (a reservation
    /// being filled in, say), with the checks of [`QueueDir::open_file`].
    pub fn open_file_rw(&self, rel: impl AsRef<Path>) -> io::Result<(File, Metadata)> {
        self.open_regular(rel.as_ref(), OFlag::O_RDWR)
    }

    fn open_regular(&self, rel: &Path, access: OFlag) -> io::Result<(File, Metadata)> {
        check_relative(&self.path, rel)?;
        let fd = self
            .open_beneath(
                rel,
                access | OFlag::O_NONBLOCK | base_flags(),
                Mode::empty(),
            )
            .map_err(|e| self.classify(rel, e))?;
        self.regular(rel, fd)
    }

    fn regular(&self, rel: &Path, fd: OwnedFd) -> io::Result<(File, Metadata)> {
        let file = File::from(fd);
        let meta = file.metadata()?;
        let kind = file_kind(&meta);
        if kind != EntryKind::File {
            let kind = match kind {
                EntryKind::Dir => RefusedKind::Directory,
                _ => special_kind(meta.mode()),
            };
            return Err(refused(self.path.join(rel), kind));
        }
        // Only a regular file gets this far, and O_NONBLOCK does nothing to
        // one: it stays set (a FIFO's reads would have blocked without it).
        Ok((file, meta))
    }

    /// Creates the new file `rel` for writing (`O_CREAT | O_EXCL`: an
    /// existing name, a link included, is `AlreadyExists`) with `mode` less
    /// the umask.
    pub fn create_new(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<File> {
        let rel = rel.as_ref();
        check_relative(&self.path, rel)?;
        let fd = self
            .open_beneath(
                rel,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | base_flags(),
                Mode::from_bits_truncate(mode),
            )
            .map_err(|e| self.classify(rel, e))?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `rel` for appending, creating it with `mode`
    /// (less the umask) when it is not there: a journal's writes, each one
    /// `write` at the end. A link or a special file is refused as
    /// [`QueueDir::open_file`] refuses it.
    pub fn open_append(&self, rel: impl AsRef<Path>, mode: u32) -> io::Result<File> {
        let rel = rel.as_ref();
        check_relative(&self.path, rel)?;
        let fd = self
            .open_beneath(
                rel,
                OFlag::O_WRONLY
                    | OFlag::O_APPEND
                    | OFlag::O_CREAT
                    | OFlag::O_NONBLOCK
                    | base_flags(),
                Mode::from_bits_truncate(mode),
            )
            .map_err(|e| self.classify(rel, e))?;
        Ok(self.regular(rel, fd)?.0)
    }

    /// Reads the regular file `rel` whole, refusing one of more than
    /// `limit` bytes ([`RefusedKind::TooLarge`]) without reading past it.
    /// `Ok(None)` when there is none.
    pub fn read_small(&self, rel: impl AsRef<Path>, limit: u64) -> io::Result<Option<Vec<u8>>> {
        let rel = rel.as_ref();
        let (file, meta) = match self.open_file(rel) {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if meta.len() > limit {
            return Err(refused(
                self.path.join(rel),
                RefusedKind::TooLarge { limit },
            ));
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        // The size may change under us: read at most one byte past the limit.
        file.take(limit + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > limit {
            return Err(refused(
                self.path.join(rel),
                RefusedKind::TooLarge { limit },
            ));
        }
        Ok(Some(buf))
    }

    /// The entries of this directory (`.` and `..` left out), unsorted,
    /// with what each is, never following a link. Names are as on disk.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        // A fresh open of "." has its own read position; a duplicated
        // descriptor would share ours and list nothing the second time.
        let fd = nix::fcntl::openat(&self.fd, ".", dir_flags(), Mode::empty())
            .map_err(io::Error::from)?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
        let mut entries = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(io::Error::from)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = OsStr::from_bytes(name).to_owned();
            let kind = match entry.file_type() {
                Some(nix::dir::Type::File) => EntryKind::File,
                Some(nix::dir::Type::Directory) => EntryKind::Dir,
                Some(nix::dir::Type::Symlink) => EntryKind::Link,
                Some(_) => EntryKind::Special,
                // The file system does not say (DT_UNKNOWN): ask lstat.
                None => match self.stat(&name) {
                    Ok(Some(stat)) => stat.kind,
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                },
            };
            entries.push(Entry { name, kind });
        }
        Ok(entries)
    }

    /// `lstat` of `rel` (the last component is not followed; the ones
    /// before it must be real directories). `Ok(None)` when it does not exist.
    pub fn stat(&self, rel: impl AsRef<Path>) -> io::Result<Option<Stat>> {
        let found = self.at(rel.as_ref(), |dir, name| {
            nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        });
        match found {
            Ok(st) => Ok(Some(Stat {
                kind: kind_of_mode(st.st_mode),
                len: st.st_size.max(0) as u64,
                modified: mtime(st.st_mtime, st.st_mtime_nsec),
                dev: st.st_dev,
                ino: st.st_ino,
                special: special_kind(st.st_mode),
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renames `from` (below this directory) to `to` below `to_dir`,
    /// replacing what is there (`renameat`). A link is moved as the link
    /// it is, never followed.
    pub fn rename(
        &self,
        from: impl AsRef<Path>,
        to_dir: &QueueDir,
        to: impl AsRef<Path>,
    ) -> io::Result<()> {
        self.between(
            from.as_ref(),
            to_dir,
            to.as_ref(),
            |from_dir, from, to_dir, to| nix::fcntl::renameat(from_dir, from, to_dir, to),
        )
    }

    /// Renames `from` to `to` below `to_dir` unless `to` exists
    /// (`AlreadyExists` then; nothing is ever replaced). Uses
    /// `RENAME_NOREPLACE`, or `link` then `unlink` where the file system
    /// lacks it (then a crash in between leaves both names of one file).
    pub fn rename_no_clobber(
        &self,
        from: impl AsRef<Path>,
        to_dir: &QueueDir,
        to: impl AsRef<Path>,
    ) -> io::Result<()> {
        self.between(
            from.as_ref(),
            to_dir,
            to.as_ref(),
            |from_dir, from, to_dir, to| {
                match rename_noreplace(from_dir, from, to_dir, to) {
                    Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
                    other => return other,
                }
                link(from_dir, from, to_dir, to)?;
                nix::unistd::unlinkat(from_dir, from, UnlinkatFlags::NoRemoveDir)
            },
        )
    }

    /// Makes `to` below `to_dir` a second name of `from` (`linkat` without
    /// following: a link gets a second name as a link). `AlreadyExists`
    /// when `to` exists.
    pub fn hard_link(
        &self,
        from: impl AsRef<Path>,
        to_dir: &QueueDir,
        to: impl AsRef<Path>,
    ) -> io::Result<()> {
        self.between(from.as_ref(), to_dir, to.as_ref(), link)
    }

    /// Removes the entry `rel` if it is not a directory (a link is removed
    /// itself, not its target). `NotFound` when it is not there.
    pub fn remove_file(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        self.at(rel.as_ref(), |dir, name| {
            nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)
        })
    }

    /// Removes the empty directory `rel`.
    pub fn remove_dir(&self, rel: impl AsRef<Path>) -> io::Result<()> {
        self.at(rel.as_ref(), |dir, name| {
            nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        })
    }

    /// `fsync(2)` of this directory: makes the renames and removals in it
    /// durable.
    pub fn sync(&self) -> io::Result<()> {
        nix::unistd::fsync(&self.fd).map_err(io::Error::from)
    }

    /// `op` on the folder holding the last component of `rel` (opened with
    /// no link on the way) and that component's name.
    fn at<T>(
        &self,
        rel: &Path,
        op: impl FnOnce(&OwnedFd, &OsStr) -> Result<T, Errno>,
    ) -> io::Result<T> {
        let (parent, name) = self.parent_of(rel)?;
        op(&parent.as_ref().unwrap_or(self).fd, name).map_err(io::Error::from)
    }

    /// `op` on the folders and names of both ends of a rename or link:
    /// `from` below this directory, `to` below `to_dir`.
    fn between<T>(
        &self,
        from: &Path,
        to_dir: &QueueDir,
        to: &Path,
        op: impl FnOnce(&OwnedFd, &OsStr, &OwnedFd, &OsStr) -> Result<T, Errno>,
    ) -> io::Result<T> {
        let (from_parent, from_name) = self.parent_of(from)?;
        let (to_parent, to_name) = to_dir.parent_of(to)?;
        let from_dir = &from_parent.as_ref().unwrap_or(self).fd;
        let to_dir = &to_parent.as_ref().unwrap_or(to_dir).fd;
        op(from_dir, from_name, to_dir, to_name).map_err(io::Error::from)
    }

    /// The directory holding the last component of `rel` (`None`: this
    /// one) and that component. Paths of one component need no open.
    fn parent_of<'a>(&self, rel: &'a Path) -> io::Result<(Option<QueueDir>, &'a OsStr)> {
        check_relative(&self.path, rel)?;
        let name = rel
            .file_name()
            .ok_or_else(|| refused(self.path.join(rel), RefusedKind::BadName))?;
        match rel.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => Ok((Some(self.dir(parent)?), name)),
            _ => Ok((None, name)),
        }
    }

    /// Opens `rel` below this directory with no link in any component.
    fn open_beneath(&self, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        let how = nix::fcntl::OpenHow::new().flags(flags).mode(mode).resolve(
            ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match nix::fcntl::openat2(&self.fd, rel, how) {
            // No openat2 (Linux before 5.6, or a seccomp filter): walk.
            Err(Errno::ENOSYS | Errno::EPERM) => self.open_walking(rel, flags, mode),
            other => other,
        }
    }

    /// `open_beneath` one `openat(O_NOFOLLOW)` per component.
    fn open_walking(&self, rel: &Path, flags: OFlag, mode: Mode) -> Result<OwnedFd, Errno> {
        let mut components: Vec<&OsStr> = rel.components().map(Component::as_os_str).collect();
        let last = components.pop().ok_or(Errno::EINVAL)?;
        let mut held: Option<OwnedFd> = None;
        for component in components {
            let at: BorrowedFd<'_> = held.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
            let next = nix::fcntl::openat(at, component, dir_flags(), Mode::empty())?;
            held = Some(next);
        }
        let at: BorrowedFd<'_> = held.as_ref().map_or(self.fd.as_fd(), |fd| fd.as_fd());
        nix::fcntl::openat(at, last, flags, mode)
    }

    /// Turns an open's errno into an `io::Error`, naming what was refused.
    /// `ELOOP` and `ENOTDIR` do not say whether a link was in the way
    /// (`O_DIRECTORY | O_NOFOLLOW` on a link is `ENOTDIR`), `ENXIO` is a
    /// FIFO or socket opened without a partner: an `lstat` of the entry
    /// tells, through the same no-link rules.
    fn classify(&self, rel: &Path, e: Errno) -> io::Error {
        let path = self.path.join(rel);
        match e {
            // RESOLVE_BENEATH: the path would leave this directory.
            Errno::EXDEV => refused(path, RefusedKind::Link),
            Errno::ELOOP | Errno::ENOTDIR | Errno::ENXIO | Errno::EISDIR => {
                let kind = match self.stat(rel) {
                    Ok(Some(stat)) => match stat.kind {
                        EntryKind::Link => RefusedKind::Link,
                        EntryKind::Dir => RefusedKind::Directory,
                        EntryKind::File => RefusedKind::NotDirectory,
                        EntryKind::Special => stat.special,
                    },
                    // A component on the way is what is wrong.
                    Err(e) if refusal(&e).is_some() => return e,
                    _ if e == Errno::ELOOP => RefusedKind::Link,
                    _ => RefusedKind::NotDirectory,
                };
                refused(path, kind)
            }
            e => io::Error::from(e),
        }
    }
}

impl AsFd for QueueDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `rel` must be a non-empty relative path of plain components.
fn check_relative(base: &Path, rel: &Path) -> io::Result<()> {
    let plain = !rel.as_os_str().is_empty()
        && rel.components().all(|c| matches!(c, Component::Normal(_)))
        // `components()` drops a trailing slash and "." in the middle.
        && !rel.as_os_str().as_bytes().ends_with(b"/")
        && !rel.as_os_str().as_bytes().split(|&b| b == b'/').any(|c| c.is_empty() || c == b".");
    if plain {
        Ok(())
    } else {
        Err(refused(base.join(rel), RefusedKind::BadName))
    }
}

/// A second name, never following a link (`linkat` without
/// `AT_SYMLINK_FOLLOW`).
fn link(from_dir: &OwnedFd, from: &OsStr, to_dir: &OwnedFd, to: &OsStr) -> Result<(), Errno> {
    nix::unistd::linkat(from_dir, from, to_dir, to, nix::fcntl::AtFlags::empty())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename_noreplace(
    from_dir: &OwnedFd,
    from: &OsStr,
    to_dir: &OwnedFd,
    to: &OsStr,
) -> Result<(), Errno> {
    nix::fcntl::renameat2(
        from_dir,
        from,
        to_dir,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename_noreplace(_: &OwnedFd, _: &OsStr, _: &OwnedFd, _: &OsStr) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

fn file_kind(meta: &Metadata) -> EntryKind {
    let t = meta.file_type();
    if t.is_file() {
        EntryKind::File
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_symlink() {
        EntryKind::Link
    } else {
        EntryKind::Special
    }
}

fn kind_of_mode(mode: nix::libc::mode_t) -> EntryKind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Link,
        _ => EntryKind::Special,
    }
}

fn special_kind(mode: u32) -> RefusedKind {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => RefusedKind::Fifo,
        SFlag::S_IFSOCK => RefusedKind::Socket,
        SFlag::S_IFLNK => RefusedKind::Link,
        _ => RefusedKind::Device,
    }
}

fn mtime(secs: i64, nsecs: i64) -> SystemTime {
    let nanos = u32::try_from(nsecs).unwrap_or(0).min(999_999_999);
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH
            .checked_add(Duration::new(secs, nanos))
            .unwrap_or(UNIX_EPOCH),
        // Before 1970: no queue file is that old; the epoch is close enough.
        Err(_) => UNIX_EPOCH,
    }
}

#[cfg(test)]
#[path = "dirfd_tests.rs"]
mod tests;
