//! The queue's open handles: its root and `.OTHER_SERVERS` opened once, and
//! each domain folder and this process's claim folder in it opened on first
//! use and kept, so that claiming, reading and settling a message costs a
//! system call or two on descriptors already open instead of a walk down
//! the path from the root for every operation. Every handle is a
//! [`QueueDir`]: nothing below the root is reached through a link.
//!
//! A kept domain handle is checked against its name before each use (one
//! `lstat`): a folder removed and made again, or replaced by a link, is
//! opened afresh (or refused), and a folder moved away from the root is
//! not used any more. The kept handles of one [`Queue`] are bounded
//! ([`MAX_KEPT_DOMAINS`], or none for a process short of descriptors), and
//! all of them are closed when an open finds no descriptor free. Each
//! thread that works on the queue has its own [`Queue`] ([`Queue::share`]):
//! only the root and `.OTHER_SERVERS` handles are shared, read-only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use super::dirfd::{EntryKind, QueueDir};
use super::{Layout, ACTIVE_DIR, REMOTE_DIR};

/// How many domain folders one [`Queue`] keeps open by default (each with
/// at most its claim folder: two descriptors); beyond it the least
/// recently used is closed. See [`Queue::keeping_domains`].
pub const MAX_KEPT_DOMAINS: usize = 64;

/// Moves a descriptor kept open for long to where the caller wants it (the
/// actors: above `FD_SETSIZE`); `None` leaves it where it is.
pub type Keep = fn(BorrowedFd<'_>) -> Option<OwnedFd>;

/// The queue under `application.maildir.path`, as open handles.
#[derive(Debug)]
pub struct Queue {
    layout: Layout,
    root: Arc<QueueDir>,
    /// `None` while `.OTHER_SERVERS` does not exist (an operator command on
    /// a queue no daemon has started on yet).
    remote: Option<Arc<QueueDir>>,
    keep: Option<Keep>,
    kept: RefCell<Kept>,
}

/// The domain folders kept open, with the order they were opened in.
#[derive(Debug)]
struct Kept {
    domains: HashMap<String, KeptDomain>,
    /// At most this many.
    max: usize,
    /// Counts uses: the entry used longest ago is closed first.
    serial: u64,
}

#[derive(Debug)]
struct KeptDomain {
    dir: Arc<QueueDir>,
    /// Device and inode of `dir`, compared with its name's before each use.
    identity: (u64, u64),
    /// `.active/<owner>` in it, for the one owner that last claimed there.
    claims: Option<(String, Arc<QueueDir>)>,
    serial: u64,
}

impl Kept {
    fn new(max: usize) -> RefCell<Kept> {
        RefCell::new(Kept {
            domains: HashMap::new(),
            max,
            serial: 0,
        })
    }
}

impl Queue {
    /// Opens the queue at `layout`'s root, and `.OTHER_SERVERS` when it
    /// exists (a link there is refused).
    pub fn open(layout: Layout) -> io::Result<Queue> {
        let root = QueueDir::open_root(layout.root())?;
        let remote = match root.dir(REMOTE_DIR) {
            Ok(remote) => Some(Arc::new(remote)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Queue {
            layout,
            root: Arc::new(root),
            remote,
            keep: None,
            kept: Kept::new(MAX_KEPT_DOMAINS),
        })
    }

    /// Opens the queue as [`Queue::open`] does, making `.OTHER_SERVERS`
    /// when it is missing.
    pub fn create(layout: Layout) -> io::Result<Queue> {
        let mut queue = Queue::open(layout)?;
        if queue.remote.is_none() {
            queue.remote = Some(Arc::new(queue.root.dir_create(REMOTE_DIR)?));
        }
        Ok(queue)
    }

    /// Descriptors this queue keeps open go where `keep` puts them: the
    /// root's and `.OTHER_SERVERS`' at once (call it before [`Queue::share`]),
    /// the rest as they are opened.
    pub fn keeping(self, keep: Keep) -> Queue {
        let moved = |dir: Arc<QueueDir>| match Arc::try_unwrap(dir) {
            Ok(dir) => Arc::new(kept_where(Some(keep), dir)),
            Err(shared) => shared,
        };
        Queue {
            root: moved(self.root),
            remote: self.remote.map(moved),
            keep: Some(keep),
            ..self
        }
    }

    /// Keeps at most `max` domain folders open (0: none, every operation
    /// opens what it needs and closes it again), for a process short of
    /// descriptors. The default is [`MAX_KEPT_DOMAINS`].
    pub fn keeping_domains(self, max: usize) -> Queue {
        Queue {
            kept: Kept::new(max),
            ..self
        }
    }

    /// How many domain folders this queue keeps open at most.
    pub fn keeps(&self) -> usize {
        self.kept.borrow().max
    }

    /// Another handle set on the same queue for another thread: the root
    /// and `.OTHER_SERVERS` are shared (no new descriptor), domain folders
    /// are kept by each on its own.
    pub fn share(&self) -> Queue {
        Queue {
            layout: self.layout.clone(),
            root: Arc::clone(&self.root),
            remote: self.remote.clone(),
            keep: self.keep,
            kept: Kept::new(self.kept.borrow().max),
        }
    }

    /// The paths of the queue, for messages.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The queue root (local mailboxes live here).
    pub fn root(&self) -> &QueueDir {
        &self.root
    }

    /// `.OTHER_SERVERS`; `NotFound` when it does not exist.
    pub fn remote(&self) -> io::Result<&QueueDir> {
        self.remote.as_deref().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} does not exist", self.layout.remote_dir().display()),
            )
        })
    }

    /// The domain folder `domain`, kept open from one call to the next
    /// while its name leads to it. `NotFound` when it does not exist; a link
    /// or anything but a folder is refused ([`super::dirfd::refusal`]).
    pub fn domain(&self, domain: &str) -> io::Result<Arc<QueueDir>> {
        let remote = self.remote()?;
        // The name must still lead to the folder kept: one lstat.
        let stat = remote.stat(domain)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} does not exist",
                    self.layout.domain_dir(domain).display()
                ),
            )
        })?;
        {
            let mut kept = self.kept.borrow_mut();
            let serial = kept.serial + 1;
            match kept.domains.get_mut(domain) {
                Some(k) if stat.kind == EntryKind::Dir && k.identity == (stat.dev, stat.ino) => {
                    k.serial = serial;
                    let dir = Arc::clone(&k.dir);
                    kept.serial = serial;
                    return Ok(dir);
                }
                Some(_) => {
                    kept.domains.remove(domain);
                }
                None => {}
            }
        }
        // `dir` refuses a link or a file with what it is.
        let dir = self.retrying(|| remote.dir(domain))?;
        self.keep_domain(domain, dir)
    }

    /// [`Queue::domain`], making the folder when it is missing (but not
    /// `.OTHER_SERVERS`: see [`Queue::create`]).
    pub fn domain_create(&self, domain: &str) -> io::Result<Arc<QueueDir>> {
        match self.domain(domain) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let remote = self.remote()?;
        let dir = self.retrying(|| remote.dir_create(domain))?;
        self.keep_domain(domain, dir)
    }

    /// `<domain>/.active/<owner>`, made when missing and kept open with its
    /// domain folder. `fresh` opens it again instead of using the kept one
    /// (after a claim found it gone).
    pub fn claims(&self, domain: &str, owner: &str, fresh: bool) -> io::Result<Arc<QueueDir>> {
        let dir = self.domain(domain)?;
        self.claims_in(domain, &dir, owner, fresh)
    }

    /// [`Queue::claims`] in `dir`, the folder [`Queue::domain`] just gave
    /// for `domain` (checked already: no second `lstat`).
    pub(crate) fn claims_in(
        &self,
        domain: &str,
        dir: &QueueDir,
        owner: &str,
        fresh: bool,
    ) -> io::Result<Arc<QueueDir>> {
        if !fresh {
            let kept = self.kept.borrow();
            let found = kept
                .domains
                .get(domain)
                .and_then(|k| k.claims.as_ref())
                .filter(|(o, _)| o == owner);
            if let Some((_, claims)) = found {
                return Ok(Arc::clone(claims));
            }
        }
        let claims = self.retrying(|| dir.dir_create(Path::new(ACTIVE_DIR).join(owner)))?;
        let claims = Arc::new(self.kept_dir(claims));
        if let Some(k) = self.kept.borrow_mut().domains.get_mut(domain) {
            k.claims = Some((owner.to_owned(), Arc::clone(&claims)));
        }
        Ok(claims)
    }

    /// Closes every kept domain folder.
    pub fn forget_all(&self) {
        self.kept.borrow_mut().domains.clear();
    }

    /// `open`, once more after closing every kept folder when the process
    /// ran out of descriptors: kept handles must never be what starves the
    /// rest of the process.
    fn retrying(&self, open: impl Fn() -> io::Result<QueueDir>) -> io::Result<QueueDir> {
        match open() {
            Err(e) if short_of_descriptors(&e) && !self.kept.borrow().domains.is_empty() => {
                self.forget_all();
                open()
            }
            other => other,
        }
    }

    fn keep_domain(&self, domain: &str, dir: QueueDir) -> io::Result<Arc<QueueDir>> {
        if self.kept.borrow().max == 0 {
            return Ok(Arc::new(dir));
        }
        let dir = self.kept_dir(dir);
        let identity = dir.identity()?;
        let dir = Arc::new(dir);
        let mut kept = self.kept.borrow_mut();
        if kept.domains.len() >= kept.max {
            let oldest = kept
                .domains
                .iter()
                .min_by_key(|(_, k)| k.serial)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                kept.domains.remove(&oldest);
            }
        }
        kept.serial += 1;
        let serial = kept.serial;
        kept.domains.insert(
            domain.to_owned(),
            KeptDomain {
                dir: Arc::clone(&dir),
                identity,
                claims: None,
                serial,
            },
        );
        Ok(dir)
    }

    fn kept_dir(&self, dir: QueueDir) -> QueueDir {
        if self.kept.borrow().max == 0 {
            return dir;
        }
        kept_where(self.keep, dir)
    }
}

/// `EMFILE` or `ENFILE`.
fn short_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE)
    )
}

/// `dir` on the descriptor `keep` makes for it, if any.
fn kept_where(keep: Option<Keep>, dir: QueueDir) -> QueueDir {
    match keep.and_then(|keep| keep(std::os::fd::AsFd::as_fd(&dir))) {
        Some(moved) => dir.with_descriptor(moved),
        None => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::dirfd::{refusal, RefusedKind};
    use std::fs;
    use std::os::unix::fs::symlink;

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::create(Layout::new(dir.path())).expect("open");
        (dir, queue)
    }

    #[test]
    fn a_domain_folder_is_kept_while_its_name_leads_to_it() {
        let (dir, queue) = queue();
        let remote = dir.path().join(REMOTE_DIR);
        fs::create_dir(remote.join("d.test")).expect("mkdir");
        let first = queue.domain("d.test").expect("open");
        let again = queue.domain("d.test").expect("kept");
        assert!(Arc::ptr_eq(&first, &again), "the kept handle is reused");
        // Removed and made again: a new folder, opened afresh.
        fs::remove_dir(remote.join("d.test")).expect("rmdir");
        fs::create_dir(remote.join("d.test")).expect("mkdir again");
        let fresh = queue.domain("d.test").expect("reopened");
        assert!(!Arc::ptr_eq(&first, &fresh), "a new folder, a new handle");
        // Replaced by a link: refused, even though a handle was kept.
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        fs::remove_dir(remote.join("d.test")).expect("rmdir");
        symlink(elsewhere.path(), remote.join("d.test")).expect("link");
        let e = queue.domain("d.test").expect_err("a link");
        assert_eq!(refusal(&e).map(|r| r.kind), Some(RefusedKind::Link), "{e}");
        fs::remove_file(remote.join("d.test")).expect("rm link");
        let e = queue.domain("d.test").expect_err("gone");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }

    #[test]
    fn claims_folders_are_made_kept_and_refused_through_links() {
        let (dir, queue) = queue();
        let domain = dir.path().join(REMOTE_DIR).join("d.test");
        fs::create_dir(&domain).expect("mkdir");
        let claims = queue.claims("d.test", "me", false).expect("made");
        assert!(domain.join(ACTIVE_DIR).join("me").is_dir(), "made on disk");
        let again = queue.claims("d.test", "me", false).expect("kept");
        assert!(Arc::ptr_eq(&claims, &again), "kept");
        let other = queue.claims("d.test", "you", false).expect("another owner");
        assert!(!Arc::ptr_eq(&claims, &other), "not the same owner's");
        fs::create_dir(dir.path().join(REMOTE_DIR).join("e.test")).expect("mkdir");
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        symlink(
            elsewhere.path(),
            dir.path().join(REMOTE_DIR).join("e.test").join(ACTIVE_DIR),
        )
        .expect("link");
        let e = queue
            .claims("e.test", "me", false)
            .expect_err("linked .active");
        assert_eq!(refusal(&e).map(|r| r.kind), Some(RefusedKind::Link), "{e}");
        assert_eq!(
            fs::read_dir(elsewhere.path()).expect("list").count(),
            0,
            "nothing made outside"
        );
    }

    #[test]
    fn kept_domains_are_bounded_and_the_least_recently_used_goes() {
        let (dir, queue) = queue();
        let queue = queue.keeping_domains(4);
        for n in 0..6 {
            let name = format!("d{n}.test");
            fs::create_dir(dir.path().join(REMOTE_DIR).join(&name)).expect("mkdir");
            queue.domain(&name).expect("open");
            // d0 stays in use.
            queue.domain("d0.test").expect("d0");
        }
        let kept = queue.kept.borrow();
        let mut names: Vec<&String> = kept.domains.keys().collect();
        names.sort();
        assert_eq!(
            names,
            ["d0.test", "d3.test", "d4.test", "d5.test"],
            "bounded, least recently used first out"
        );
    }

    #[test]
    fn keeping_none_opens_and_closes_each_time() {
        let (dir, queue) = queue();
        let queue = queue.keeping_domains(0);
        fs::create_dir(dir.path().join(REMOTE_DIR).join("d.test")).expect("mkdir");
        let first = queue.domain("d.test").expect("open");
        let again = queue.domain("d.test").expect("open");
        assert!(!Arc::ptr_eq(&first, &again), "nothing kept");
        assert!(queue.kept.borrow().domains.is_empty(), "nothing kept");
        let shared = queue.share();
        assert!(
            shared.domain("d.test").is_ok() && shared.kept.borrow().max == 0,
            "a share keeps as its origin does"
        );
    }

    #[test]
    fn a_missing_remote_folder_is_not_found_until_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Queue::open(Layout::new(dir.path())).expect("open");
        let e = queue.domain("d.test").expect_err("no .OTHER_SERVERS");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let e = queue
            .domain_create("d.test")
            .expect_err("no .OTHER_SERVERS");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        symlink(elsewhere.path(), dir.path().join(REMOTE_DIR)).expect("link");
        let e = Queue::open(Layout::new(dir.path())).expect_err("linked .OTHER_SERVERS");
        assert_eq!(refusal(&e).map(|r| r.kind), Some(RefusedKind::Link), "{e}");
    }
}
