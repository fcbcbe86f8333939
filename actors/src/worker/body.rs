//! Opening a queued message's body for sending. The descriptor is moved to
//! `FD_SETSIZE` or above: queue files never go into an `fd_set`, so they
//! should not take the low numbers that sockets need (900 connections each
//! with a file open would otherwise push sockets past the `select(2)` limit).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{fcntl, FcntlArg};

use super::FD_SETSIZE;

/// How much of a message is read from disk at a time.
pub const CHUNK: usize = 64 * 1024;

/// Opens a queue file for reading, its descriptor moved above FD_SETSIZE.
pub fn open(path: &Path) -> io::Result<File> {
    let file = File::open(path)?;
    let file = match fcntl(&file, FcntlArg::F_DUPFD_CLOEXEC(FD_SETSIZE)) {
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else
        // owns; OwnedFd takes sole ownership and closes it on drop.
        Ok(fd) => File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
        // No room above the limit (RLIMIT_NOFILE too low): the low number
        // still works, it only competes with sockets.
        Err(_) => file,
    };
    debug_assert!(file.as_raw_fd() >= 0);
    Ok(file)
}
