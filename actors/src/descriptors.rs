//! The process's descriptors, set up once before any other thread starts:
//! the limit raised, and the kernel's descriptor table grown to its
//! working size at once.
//!
//! Growing the table while several threads share it is slow: the kernel
//! waits for an RCU grace period (`expand_fdtable` calls
//! `synchronize_rcu` when the table is shared), and every thread that
//! opens a descriptor meanwhile waits too: the first queue file or DNS
//! socket moved above `FD_SETSIZE` did that in the middle of start-up, on
//! the way to the first delivery, and would again each time the table
//! doubled. While the process has one thread the same growth costs
//! microseconds, and the table never shrinks.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// `FD_SETSIZE` on Linux: `select(2)` cannot watch a descriptor at or above it.
pub const FD_SETSIZE: i32 = 1024;

/// Whether an operation failed for want of a resource of this process or
/// host, not because of a server, a domain or a file: the process's or the
/// system's descriptor table full, no memory for socket buffers. Such a
/// failure puts the work off for a moment; it is never an attempt.
pub fn short_of_resources(e: &io::Error) -> bool {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
}

/// How many descriptors postman asks for: sockets stay below FD_SETSIZE,
/// queue files, the log and DNS sockets go above it.
pub const WANTED: u64 = 8192;

/// The table is grown to cover this many descriptors (or the limit, if
/// lower): the sockets below `FD_SETSIZE`, and above it a queue file per
/// connection (at most 900), the resolver's sockets and the queue folders
/// kept open ([`KEPT_FOLDERS`] and the scanner's). Beyond it the kernel
/// grows the table itself, as before.
pub const TABLE: u64 = 4096;

/// What [`prepare`] did, for the log once there is one.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The limit could not be read, or raised to [`WANTED`].
    pub limit_error: Option<String>,
    /// The table could not be grown (the process goes on without it).
    pub table_error: Option<String>,
}

/// Raises `RLIMIT_NOFILE` to [`WANTED`] (as far as the hard limit lets it)
/// and grows the descriptor table to [`TABLE`] entries. Call it before any
/// other thread starts; later it still works, only slower.
pub fn prepare() -> Prepared {
    let mut prepared = Prepared::default();
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < WANTED => {
            let wanted = WANTED.min(hard);
            match setrlimit(Resource::RLIMIT_NOFILE, wanted, hard) {
                Ok(()) => wanted,
                Err(e) => {
                    prepared.limit_error = Some(format!(
                        "cannot raise RLIMIT_NOFILE from {soft} to {wanted} (hard limit {hard}): {e}"
                    ));
                    soft
                }
            }
        }
        Ok((soft, _)) => soft,
        Err(e) => {
            prepared.limit_error = Some(format!("cannot read RLIMIT_NOFILE: {e}"));
            return prepared;
        }
    };
    // The highest descriptor the table must hold; a duplicate there makes
    // the kernel size the table for it, and closing it keeps the size.
    let top = TABLE.min(soft).saturating_sub(1);
    let Ok(top) = i32::try_from(top) else {
        return prepared;
    };
    let grown = File::open("/").and_then(|root| {
        // Closed at once: the table keeps its size.
        drop(duplicate_from(root.as_fd(), top)?);
        Ok(())
    });
    prepared.table_error = grown.err().map(|e| e.to_string());
    prepared
}

/// A duplicate of `fd` numbered `FD_SETSIZE` or above, for a descriptor
/// kept open for long (the queue's folder handles, [`postman::queue::Keep`]):
/// the numbers below are the sockets'. `None` when there is no room up
/// there (a low `RLIMIT_NOFILE`); the caller keeps the low one then.
pub fn above_fd_setsize(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    duplicate_from(fd, FD_SETSIZE).ok()
}

/// A close-on-exec duplicate of `fd` at the lowest free number from `low`
/// up (`F_DUPFD_CLOEXEC`): the crate's one `unsafe`, where a descriptor
/// number becomes an owned descriptor.
fn duplicate_from(fd: BorrowedFd<'_>, low: RawFd) -> nix::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(low))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else
    // owns; OwnedFd takes sole ownership and closes it on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The descriptors all the queue's handle sets together may keep open for
/// domain folders: a quarter of [`TABLE`], above `FD_SETSIZE` beside the
/// connections' queue files.
pub const KEPT_FOLDERS: usize = 1024;

/// How many domain folders each of `holders` handle sets of the queue
/// keeps open ([`postman::queue::Queue::keeping_domains`]): an equal share
/// of [`KEPT_FOLDERS`] (two descriptors a domain: the folder and this
/// process's claim folder in it), at most
/// [`postman::queue::MAX_KEPT_DOMAINS`]. None where descriptors are few (a
/// limit below [`TABLE`]), since every kept folder is one less for a
/// connection, a lookup or a queue file.
pub fn kept_domains(holders: usize) -> usize {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) if soft >= TABLE => {
            (KEPT_FOLDERS / (2 * holders.max(1))).min(postman::queue::MAX_KEPT_DOMAINS)
        }
        _ => 0,
    }
}

/// The size of this process's descriptor table (`FDSize` in
/// `/proc/self/status`), for the test.
#[cfg(test)]
fn table_size() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("FDSize:"))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_grown_to_its_working_size_at_once() {
        let prepared = prepare();
        assert_eq!(prepared.table_error, None);
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("the limit");
        let wanted = TABLE.min(soft);
        let size = table_size().expect("FDSize in /proc/self/status");
        assert!(size >= wanted, "FDSize {size}, wanted at least {wanted}");
        // Nothing is left open up there.
        let top = format!("/proc/self/fd/{}", wanted - 1);
        assert!(!std::path::Path::new(&top).exists(), "{top} is open");
    }
}
