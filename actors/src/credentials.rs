//! Reading `routing.password_file`, the SMTP AUTH credentials of each next
//! hop, only when no one else can read or change it: OpenSSH's refusal of
//! an "UNPROTECTED PRIVATE KEY FILE", applied to passwords.
//!
//! The file is opened without following a link (`O_NOFOLLOW`; the folders
//! on the way are the operator's choice, as the queue root is) and without
//! blocking on a FIFO (`O_NONBLOCK`), and what is checked is the open
//! descriptor (`fstat`), so the file read is the file checked. It must be
//! a regular file, of at most [`MAX_PASSWORD_FILE`] bytes, with no
//! permission for its group or others, owned by the user postman runs as
//! or by root. The text is parsed by the core ([`PasswordMap::parse`]); the
//! bytes read are wiped once parsed.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use postman::routing::{PasswordFileError, PasswordMap};
use zeroize::Zeroizing;

/// The largest password file read: 1 MiB is some ten thousand entries;
/// anything larger is not a password file.
pub const MAX_PASSWORD_FILE: u64 = 1 << 20;

/// Why the password file was not loaded. Each text names the file; the
/// caller adds the setting (`routing.password_file`). None shows a user
/// name or password.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file cannot be opened: missing, not permitted, …
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What `open(2)` said.
        source: io::Error,
    },
    /// The file is a symbolic link, which is not followed: whoever can
    /// change the link chooses what postman reads.
    #[error("{} is a symbolic link: name the file it points to", path.display())]
    Link {
        /// The link.
        path: PathBuf,
    },
    /// A directory, FIFO, socket or device.
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is ("a directory", …).
        kind: &'static str,
    },
    /// Its group or others have some permission on it.
    #[error("{} is {} (mode {:04o}): chmod 600 it", path.display(), exposure(*mode), mode)]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It belongs to another user, who could change it or its mode.
    #[error(
        "{} belongs to uid {owner}, not to uid {uid} that postman runs as (nor to root): \
         chown it",
        path.display()
    )]
    Owner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of postman.
        uid: u32,
    },
    /// More than [`MAX_PASSWORD_FILE`] bytes.
    #[error("{} is larger than {limit} bytes: is it the right file?", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// Reading it failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What `read(2)` said.
        source: io::Error,
    },
    /// Bytes that are not UTF-8 (SASL sends user names and passwords as
    /// UTF-8, RFC 4616).
    #[error("{}, line {line}: not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The line of the first such byte.
        line: usize,
    },
    /// An entry is wrong; `source` names its line.
    #[error("{}, {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        source: PasswordFileError,
    },
}

impl CredentialsError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            CredentialsError::Open { path, .. }
            | CredentialsError::Link { path }
            | CredentialsError::NotRegular { path, .. }
            | CredentialsError::Permissions { path, .. }
            | CredentialsError::Owner { path, .. }
            | CredentialsError::TooLarge { path, .. }
            | CredentialsError::Read { path, .. }
            | CredentialsError::NotUtf8 { path, .. }
            | CredentialsError::Parse { path, .. } => path,
        }
    }
}

/// How a mode's group and other bits expose a file, for the message.
fn exposure(mode: u32) -> &'static str {
    if mode & 0o044 != 0 {
        "readable by others"
    } else if mode & 0o022 != 0 {
        "writable by others"
    } else {
        "open to others"
    }
}

/// Reads and parses the password file at `path`, refusing one that is not
/// a regular file of its own or root's, or that others may read or change
/// (see the module's documentation). Call it at start-up and on each
/// reload: a refusal keeps the credentials loaded before.
pub fn load_password_file(path: &Path) -> Result<PasswordMap, CredentialsError> {
    let file = open(path)?;
    let meta = file.metadata().map_err(|source| CredentialsError::Open {
        path: path.to_owned(),
        source,
    })?;
    check(path, &meta, nix::unistd::geteuid().as_raw())?;
    let bytes = read(path, file, meta.len())?;
    let text = std::str::from_utf8(&bytes).map_err(|e| CredentialsError::NotUtf8 {
        path: path.to_owned(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    PasswordMap::parse(text).map_err(|source| CredentialsError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Opens `path` for reading, never following a link at its end and never
/// blocking (a FIFO without a writer).
fn open(path: &Path) -> Result<File, CredentialsError> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC
        | OFlag::O_NOCTTY;
    match nix::fcntl::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(File::from(fd)),
        // ELOOP is also "too many links on the way": ask the entry.
        Err(Errno::ELOOP) if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) => {
            Err(CredentialsError::Link {
                path: path.to_owned(),
            })
        }
        Err(e) => Err(CredentialsError::Open {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

/// Whether the open file's metadata allows reading passwords from it, for
/// a process of effective uid `euid`. Root's files are taken too: root can
/// change any file anyway, so trusting root adds no one (OpenSSH and sudo
/// do the same). Another user's are not, even for a postman running as
/// root: that user could change the file or its mode at any time.
fn check(path: &Path, meta: &Metadata, euid: u32) -> Result<(), CredentialsError> {
    let path = path.to_owned();
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("a device")
    };
    if let Some(kind) = kind {
        return Err(CredentialsError::NotRegular { path, kind });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialsError::Permissions { path, mode });
    }
    if meta.uid() != euid && meta.uid() != 0 {
        let owner = meta.uid();
        return Err(CredentialsError::Owner {
            path,
            owner,
            uid: euid,
        });
    }
    if meta.len() > MAX_PASSWORD_FILE {
        let limit = MAX_PASSWORD_FILE;
        return Err(CredentialsError::TooLarge { path, limit });
    }
    Ok(())
}

/// Reads the file whole, at most one byte past the limit (it may grow
/// after the check), into a buffer sized once so that no copy of the
/// passwords is left behind unwiped.
fn read(path: &Path, file: File, len: u64) -> Result<Zeroizing<Vec<u8>>, CredentialsError> {
    let limit = MAX_PASSWORD_FILE;
    let mut bytes = Zeroizing::new(Vec::with_capacity(len.min(limit) as usize + 1));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        let path = path.to_owned();
        return Err(CredentialsError::TooLarge { path, limit });
    }
    Ok(bytes)
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
