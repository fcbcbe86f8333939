//! The Scanner actor: owns the view of the queue directory. A first full pass,
//! then inotify for new files and new domain folders, with a periodic rescan
//! as the safety net (a lost event, an overflowed inotify queue, a file
//! written over NFS). It reads only the envelope header block of each file.
//!
//! Both paths take every entry through the same decisions
//! ([`queue::plan_domain`], [`queue::plan_entry`], then an open that refuses
//! links and special files): a linked domain folder is never entered, a
//! link or FIFO renamed into a domain folder is quarantined unopened, and
//! a file whose name is not UTF-8 is renamed to an escaped name and then
//! delivered. What is refused is logged once (see the `refuse` module).

mod control;
mod events;
mod refuse;

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use postman::queue::dirfd::{EntryKind, QueueDir, RefusedKind};
use postman::queue::{self, Queue, Queued, ReadError, Source};
use slog::{error, info, warn, Logger};

use crate::descriptors::short_of_resources;
use crate::mailbox::Postbox;
use crate::messages::{DispatcherMsg, FileIdentity, QueuedMessage, ScannerMsg};
use events::{react, Incomplete, Reaction, Watched};

/// How often the scanner looks at its mailbox while waiting for inotify
/// events: the upper bound on how long a shutdown waits for it.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);

pub struct Scanner {
    queue: Queue,
    out: Postbox<DispatcherMsg>,
    inbox: Receiver<ScannerMsg>,
    log: Logger,
    once: bool,
    rescan_interval: Duration,
    /// Files reported to the dispatcher and not yet seen gone, per domain.
    known: HashMap<String, HashSet<String>>,
    /// Folder names already complained about, so a bad folder is reported
    /// once, not at every rescan.
    bad_folders: HashSet<OsString>,
    /// Entries that could be neither set aside nor renamed (a linked
    /// `.quarantine`, say), so that each is reported once.
    stuck: HashSet<(String, OsString)>,
    /// While a full scan runs: the domain folders it listed (at most
    /// [`SCAN_HELD`]), whose files it then reads through the handle it
    /// listed them with instead of checking the folder again per file.
    scanning: HashMap<String, Arc<QueueDir>>,
    inotify: Option<Inotify>,
    watches: HashMap<WatchDescriptor, Option<String>>,
    /// The operator's suspensions and the site backoffs (`control`).
    control: control::ControlView,
    metrics_interval: Duration,
    stats: Stats,
    /// While a full scan runs: when to log the next progress line.
    progress_at: Option<Instant>,
    /// When the scan last warned that it waits for a descriptor.
    shortage_warned: Option<Instant>,
    /// Since when no queue file could be opened for want of descriptors.
    short_since: Option<Instant>,
}

/// The scanner's counters, written as its `metrics` record.
#[derive(Default)]
struct Stats {
    /// Queue files reported to the dispatcher (new files and new versions).
    found: u64,
    /// Files quarantined because they could not be parsed.
    parse_errors: u64,
    /// Entries refused: links and special files quarantined (or left
    /// alone when even that was refused), folders not entered.
    refused: u64,
    /// Full scans done.
    scans: u64,
    /// How long the last full scan took.
    last_scan: Duration,
}

/// How many listed domain folders a full scan holds open for reading their
/// files; the rest are looked up again per file.
const SCAN_HELD: usize = 128;

/// How often a long full scan says how far it got: a queue of 100,000
/// files takes a while, and the operator should see it is working.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// While the process has no descriptor free, the scan tries a file again
/// this often, for at most [`SHORTAGE_WAIT`] of shortage before it logs
/// files as unreadable and goes on (the next rescan finds them).
const SHORTAGE_RETRY: Duration = Duration::from_millis(50);
const SHORTAGE_WAIT: Duration = Duration::from_secs(5);
/// At most one warning about the shortage this often.
const SHORTAGE_WARN_EVERY: Duration = Duration::from_secs(10);

/// The scanner stops: the dispatcher is gone or asked it to.
struct Stop;

impl Scanner {
    pub fn new(
        queue: Queue,
        out: Postbox<DispatcherMsg>,
        inbox: Receiver<ScannerMsg>,
        log: Logger,
        once: bool,
        rescan_interval: Duration,
        metrics_interval: Duration,
    ) -> Scanner {
        Scanner {
            queue,
            out,
            inbox,
            log,
            once,
            rescan_interval,
            metrics_interval,
            stats: Stats::default(),
            progress_at: None,
            shortage_warned: None,
            short_since: None,
            known: HashMap::new(),
            bad_folders: HashSet::new(),
            stuck: HashSet::new(),
            scanning: HashMap::new(),
            inotify: None,
            watches: HashMap::new(),
            control: control::ControlView::default(),
        }
    }

    pub fn run(mut self) {
        if !self.once {
            // Watch before the first scan, so a file renamed into the queue
            // during the scan is seen by one or the other.
            match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) {
                Ok(inotify) => self.inotify = Some(inotify),
                Err(e) => warn!(self.log, "inotify unavailable, relying on rescans";
                    "error" => %e, "rescan_interval" => self.rescan_interval.as_secs()),
            }
            self.watch(None);
        }
        let started = Instant::now();
        if self.full_scan().is_err() {
            return;
        }
        let files: usize = self.known.values().map(HashSet::len).sum();
        info!(self.log, "queue scanned"; "files" => files, "domains" => self.known.len(),
            "ms" => started.elapsed().as_millis() as u64);
        if self.once {
            self.metrics();
        }
        if self.out.send(DispatcherMsg::ScanDone).is_err() || self.once {
            return;
        }
        let _ = self.watch_loop();
    }

    fn watch_loop(&mut self) -> Result<(), Stop> {
        let mut next_rescan = Instant::now() + self.rescan_interval;
        let mut next_metrics = Instant::now() + self.metrics_interval;
        loop {
            match self.inbox.try_recv() {
                Ok(ScannerMsg::Shutdown) | Err(TryRecvError::Disconnected) => {
                    self.metrics();
                    return Err(Stop);
                }
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if !self.metrics_interval.is_zero() && now >= next_metrics {
                self.metrics();
                next_metrics = now + self.metrics_interval;
            }
            if now >= next_rescan {
                self.full_scan()?;
                next_rescan = now + self.rescan_interval;
            }
            let wait = SHUTDOWN_POLL.min(next_rescan.saturating_duration_since(now));
            let Some(inotify) = &self.inotify else {
                std::thread::sleep(wait);
                continue;
            };
            let ready = {
                let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
                match nix::poll::poll(&mut fds, timeout) {
                    Ok(n) => n > 0,
                    Err(nix::errno::Errno::EINTR) => false,
                    Err(e) => {
                        error!(self.log, "poll on inotify failed"; "error" => %e);
                        std::thread::sleep(wait);
                        false
                    }
                }
            };
            if ready {
                self.handle_events()?;
            }
        }
    }

    fn handle_events(&mut self) -> Result<(), Stop> {
        let Some(inotify) = &self.inotify else {
            return Ok(());
        };
        let events = match inotify.read_events() {
            Ok(events) => events,
            Err(nix::errno::Errno::EAGAIN) => return Ok(()),
            Err(e) => {
                error!(self.log, "reading inotify events failed"; "error" => %e);
                return Ok(());
            }
        };
        for event in events {
            let control = self.control_dir(event.wd);
            let domain = self.watches.get(&event.wd).cloned();
            let watched = match (control, &domain) {
                (Some(dir), _) => Some(Watched::Control(dir)),
                (None, Some(None)) => Some(Watched::Root),
                (None, Some(Some(_))) => Some(Watched::Domain),
                (None, None) => None,
            };
            let name = event.name.as_deref();
            match (
                react(event.mask, watched, name),
                control,
                domain.flatten(),
                name,
            ) {
                (Reaction::Rescan, ..) => {
                    warn!(self.log, "inotify queue overflowed, rescanning");
                    self.full_scan()?;
                }
                (reaction, Some(dir), ..) => self.control_changed(event.wd, dir, reaction, name)?,
                (Reaction::Unwatch, ..) => {
                    // The folder went away (or was moved): forget the watch.
                    self.watches.remove(&event.wd);
                }
                (Reaction::NewFolder, _, _, Some(name)) => self.root_entry(name)?,
                (Reaction::Left, _, Some(domain), Some(name)) => {
                    if let Some(name) = name.to_str() {
                        self.left(&domain, name)?;
                    }
                }
                (Reaction::Arrived(bad), _, Some(domain), Some(name)) => {
                    self.arrived(&domain, name, bad)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A new entry of `.OTHER_SERVERS`: a control folder, a domain folder,
    /// or a link or file where a folder should be.
    fn root_entry(&mut self, name: &OsStr) -> Result<(), Stop> {
        if !self.control_folder_appeared(name)? {
            self.new_folder(name)?;
        }
        Ok(())
    }

    /// An entry named in an event of `domain`'s folder: looked at (never
    /// followed) and taken as the full scan takes it.
    fn arrived(&mut self, domain: &str, name: &OsStr, bad: Incomplete) -> Result<(), Stop> {
        let Some(dir) = self.domain_dir(domain) else {
            return Ok(());
        };
        let stat = match dir.stat(name) {
            Ok(Some(stat)) => stat,
            Ok(None) => return Ok(()),
            Err(e) => {
                error!(self.log, "cannot look at a queue entry"; "domain" => domain,
                    "path" => %dir.display_path(name).display(), "error" => %e);
                return Ok(());
            }
        };
        let Some(name) = self.take(domain, &dir, name, stat.kind, stat.special)? else {
            return Ok(());
        };
        self.forget(domain, &name);
        self.consider_as(domain, &name, bad)
    }

    fn watch(&mut self, domain: Option<&str>) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        // A link is never watched: the folders are opened first, and a name
        // that became a link since is refused here too.
        let (path, mask) = match domain {
            None => (
                self.queue.layout().remote_dir(),
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_ONLYDIR
                    | AddWatchFlags::IN_DONT_FOLLOW,
            ),
            // Writers rename finished files into the folder (IN_MOVED_TO);
            // IN_CLOSE_WRITE catches one that writes in place. A file that
            // leaves (claimed by another process, held, deleted by the
            // administrator) is IN_MOVED_FROM or IN_DELETE.
            Some(d) => (
                self.queue.layout().domain_dir(d),
                AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_MOVED_FROM
                    | AddWatchFlags::IN_DELETE
                    | AddWatchFlags::IN_ONLYDIR
                    | AddWatchFlags::IN_DONT_FOLLOW,
            ),
        };
        match inotify.add_watch(&path, mask) {
            Ok(wd) => {
                self.watches.insert(wd, domain.map(str::to_owned));
            }
            Err(e) => warn!(self.log, "cannot watch queue folder, relying on rescans";
                "path" => %path.display(), "error" => %e),
        }
    }

    fn metrics(&self) {
        let known: usize = self.known.values().map(HashSet::len).sum();
        info!(self.log, "metrics";
            "files" => known,
            "domains" => self.known.len(),
            "found" => self.stats.found,
            "parse_errors" => self.stats.parse_errors,
            "refused" => self.stats.refused,
            "scans" => self.stats.scans,
            "scan_ms" => self.stats.last_scan.as_millis() as u64,
        );
    }

    /// Lists every domain folder and every file in it. Files no longer there
    /// are reported gone.
    fn full_scan(&mut self) -> Result<(), Stop> {
        let started = Instant::now();
        self.progress_at = Some(started + PROGRESS_EVERY);
        // The operator's controls first: the messages found next meet them.
        let result = self.scan_control().and_then(|()| self.full_scan_inner());
        self.progress_at = None;
        self.scanning.clear();
        self.stats.scans += 1;
        self.stats.last_scan = started.elapsed();
        result
    }

    fn full_scan_inner(&mut self) -> Result<(), Stop> {
        let entries = match self.queue.remote().and_then(|remote| remote.entries()) {
            Ok(entries) => entries,
            Err(e) => {
                error!(self.log, "cannot list the queue"; "path" => %self.queue.layout().remote_dir().display(),
                    "error" => %e);
                return Ok(());
            }
        };
        let mut domains = Vec::new();
        for entry in entries {
            match queue::plan_domain(&entry.name, entry.kind) {
                queue::DomainPlan::Skip => {}
                queue::DomainPlan::Scan(domain) => domains.push(domain),
                queue::DomainPlan::Refuse(why) => self.refuse_folder(&entry.name, &why),
            }
        }
        domains.sort();
        let mut seen_domains = HashSet::new();
        let mut listings = Vec::new();
        for domain in domains {
            let names = self.list_domain(&domain)?;
            listings.push((domain.clone(), names.into_iter()));
            seen_domains.insert(domain);
        }
        // Read the files one domain after the other in turn, so that a domain
        // with 10,000 files does not hold back the first message of the next
        // one while the queue is scanned.
        while !listings.is_empty() {
            for (domain, names) in &mut listings {
                if let Some(name) = names.next() {
                    self.consider(domain, &name)?;
                }
            }
            listings.retain(|(_, names)| names.len() > 0);
        }
        let vanished: Vec<String> = self
            .known
            .keys()
            .filter(|d| !seen_domains.contains(*d))
            .cloned()
            .collect();
        for domain in vanished {
            if let Some(ids) = self.known.remove(&domain) {
                for id in ids {
                    self.send(DispatcherMsg::Gone {
                        domain: domain.clone(),
                        id,
                    })?;
                }
            }
        }
        Ok(())
    }

    /// Lists one domain folder and reads every file not seen before.
    fn scan_domain(&mut self, domain: &str) -> Result<(), Stop> {
        for name in self.list_domain(domain)? {
            self.consider(domain, &name)?;
        }
        Ok(())
    }

    /// Lists one domain folder (watching it from now on) and reports the
    /// files seen before that are gone. Returns the name of every file in
    /// it to read; links, special files and names that are not UTF-8 are
    /// dealt with on the way ([`Scanner::take`]).
    fn list_domain(&mut self, domain: &str) -> Result<Vec<String>, Stop> {
        if !queue::valid_domain(domain) {
            if self.bad_folders.insert(OsString::from(domain)) {
                error!(self.log, "queue folder is not a lower-case domain name: its mail is not delivered";
                    "domain" => domain, "path" => %self.queue.layout().domain_dir(domain).display());
            }
            return Ok(Vec::new());
        }
        let names = match self.domain_dir(domain) {
            Some(dir) => {
                if !self.known.contains_key(domain) {
                    self.known.insert(domain.to_owned(), HashSet::new());
                    self.watch(Some(domain));
                }
                let names = self.take_all(domain, &dir)?;
                // As many as the queue keeps: none when descriptors are few.
                let held = SCAN_HELD.min(self.queue.keeps());
                if self.progress_at.is_some() && self.scanning.len() < held {
                    self.scanning.insert(domain.to_owned(), dir);
                }
                names
            }
            None => Vec::new(),
        };
        let present: HashSet<&str> = names.iter().map(String::as_str).collect();
        let gone: Vec<String> = self
            .known
            .get(domain)
            .map(|ids| {
                ids.iter()
                    .filter(|id| !present.contains(id.as_str()))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for id in gone {
            if let Some(ids) = self.known.get_mut(domain) {
                ids.remove(&id);
            }
            self.send(DispatcherMsg::Gone {
                domain: domain.to_owned(),
                id,
            })?;
        }
        Ok(names)
    }

    /// Every entry of `domain`'s folder `dir` through [`Scanner::take`]:
    /// the names to read.
    fn take_all(&mut self, domain: &str, dir: &QueueDir) -> Result<Vec<String>, Stop> {
        let entries = match dir.entries() {
            Ok(entries) => entries,
            Err(e) => {
                error!(self.log, "cannot list queue folder"; "path" => %dir.path().display(),
                    "error" => %e);
                return Ok(Vec::new());
            }
        };
        self.stuck
            .retain(|(d, name)| d != domain || entries.iter().any(|e| &e.name == name));
        let mut names = Vec::new();
        for entry in entries {
            let special = match entry.kind {
                EntryKind::Special => match dir.stat(&entry.name) {
                    Ok(Some(stat)) => stat.special,
                    _ => continue,
                },
                _ => RefusedKind::Device,
            };
            if let Some(name) = self.take(domain, dir, &entry.name, entry.kind, special)? {
                names.push(name);
            }
        }
        // In name order, as the writers' names are in time order.
        names.sort();
        Ok(names)
    }

    /// A file left a domain folder. The domain's `.backoff` going away
    /// (`postman flush`, or another process's success) lifts its backoff.
    fn left(&mut self, domain: &str, name: &str) -> Result<(), Stop> {
        if name == queue::BACKOFF_FILE {
            return self.send(DispatcherMsg::BackoffCleared {
                domain: domain.to_owned(),
            });
        }
        self.gone(domain, name)
    }

    /// Forgets `name` in `domain` and, if it was known, tells the
    /// dispatcher it is gone.
    fn gone(&mut self, domain: &str, name: &str) -> Result<(), Stop> {
        if self.forget(domain, name) {
            self.send(DispatcherMsg::Gone {
                domain: domain.to_owned(),
                id: name.to_owned(),
            })?;
        }
        Ok(())
    }

    /// Drops `name` from the files known in `domain`; says whether it was.
    fn forget(&mut self, domain: &str, name: &str) -> bool {
        self.known
            .get_mut(domain)
            .is_some_and(|ids| ids.remove(name))
    }

    /// Reads the envelope of a file not seen before and reports it, or
    /// quarantines it when it cannot be parsed.
    fn consider(&mut self, domain: &str, name: &str) -> Result<(), Stop> {
        self.consider_as(domain, name, Incomplete::Quarantine)
    }

    /// [`Self::consider`], saying what to do with a file that does not parse.
    fn consider_as(&mut self, domain: &str, name: &str, bad: Incomplete) -> Result<(), Stop> {
        if name.starts_with('.') || name == "tmp" {
            return Ok(());
        }
        if self.known.get(domain).is_some_and(|ids| ids.contains(name)) {
            return Ok(());
        }
        let path = self.queue.layout().message_path(domain, name);
        let (metadata, read) = match self.read(domain, name, &path) {
            Ok(read) => read,
            // Made a link or special file since it was looked at.
            Err(e) if queue::dirfd::refusal(&e).is_some() => {
                let kind = queue::dirfd::refusal(&e).map(|r| r.kind);
                if let Some(
                    kind @ (RefusedKind::Link
                    | RefusedKind::Fifo
                    | RefusedKind::Socket
                    | RefusedKind::Device),
                ) = kind
                {
                    self.refuse_entry(domain, OsStr::new(name), name, kind)?;
                }
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                error!(self.log, "cannot read queue file"; "queue_id" => name, "domain" => domain,
                    "error" => %e);
                return Ok(());
            }
        };
        match read {
            Ok(queued) => self.report(domain, name, path, &metadata, queued),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(ReadError::Io(e)) => {
                error!(self.log, "cannot read queue file"; "queue_id" => name, "domain" => domain,
                    "error" => %e);
                Ok(())
            }
            Err(ReadError::Envelope(_)) if bad == Incomplete::Wait => Ok(()),
            Err(e @ (ReadError::Envelope(_) | ReadError::State(_))) => {
                self.quarantine(domain, name, &e.to_string());
                Ok(())
            }
        }
    }

    /// Reports a file read whole to the dispatcher, and remembers it.
    fn report(
        &mut self,
        domain: &str,
        name: &str,
        path: PathBuf,
        metadata: &Metadata,
        queued: Queued,
    ) -> Result<(), Stop> {
        let Queued {
            envelope,
            retry,
            tie,
            source,
            ..
        } = queued;
        if let Source::Ignored(why) = source {
            warn!(self.log, "the message's state file is ignored: it is not this file's";
                "queue_id" => name, "domain" => domain, "reason" => why);
        }
        if envelope.duplicates > 0 {
            info!(self.log, "recipients named more than once are sent once";
                "queue_id" => name, "domain" => domain,
                "duplicates" => envelope.duplicates);
        }
        let arrival = envelope
            .arrival
            .or_else(|| metadata.modified().ok())
            .unwrap_or(std::time::UNIX_EPOCH);
        self.known
            .entry(domain.to_owned())
            .or_default()
            .insert(name.to_owned());
        self.stats.found += 1;
        if let Some(at) = self.progress_at.filter(|at| Instant::now() >= *at) {
            let files: usize = self.known.values().map(HashSet::len).sum();
            info!(self.log, "scanning the queue"; "files" => files, "domains" => self.known.len());
            self.progress_at = Some(at + PROGRESS_EVERY);
        }
        self.send(DispatcherMsg::Found(Box::new(QueuedMessage {
            id: name.to_owned(),
            domain: domain.to_owned(),
            path,
            envelope,
            arrival,
            size: metadata.len(),
            retry,
            identity: Some(FileIdentity::of(metadata)),
            tie: Some(tie),
            route_key: None,
        })))
    }

    /// Opens a queue file and reads its metadata: one path lookup, open
    /// then fstat. Non-blocking, so that a FIFO someone left here cannot
    /// hang the scan waiting for a writer. While the process is short of
    /// descriptors (connections and lookups hold them all), the scan waits
    /// for one rather than skip the file, which a run with `--once` would
    /// then never deliver; but a shortage that lasts [`SHORTAGE_WAIT`]
    /// stops the waiting until a file opens again, so that it costs the
    /// scan that long once, not per file.
    /// Opens and reads the queue file `name` of `domain` with its state
    /// file ([`queue::read_queued`]). A lack of descriptors for either is
    /// waited out (for at most [`SHORTAGE_WAIT`]): a file skipped would not
    /// be seen again before the next rescan, in a `--once` run never.
    fn read(
        &mut self,
        domain: &str,
        name: &str,
        path: &Path,
    ) -> io::Result<(std::fs::Metadata, Result<Queued, ReadError>)> {
        let (queue, listed) = (&self.queue, self.scanning.get(domain));
        let read = || {
            let dir = match listed {
                Some(dir) => Arc::clone(dir),
                None => queue.domain(domain)?,
            };
            let (mut file, metadata) = dir.open_file(name)?;
            match queue::read_queued(&dir, name, &mut file, metadata.len(), domain) {
                Err(ReadError::Io(e)) if short_of_resources(&e) => Err(e),
                read => Ok((metadata, read)),
            }
        };
        loop {
            let e = match read() {
                Err(e) if short_of_resources(&e) => e,
                result => {
                    if result.is_ok() {
                        self.short_since = None;
                    }
                    return result;
                }
            };
            let now = Instant::now();
            let since = *self.short_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= SHORTAGE_WAIT {
                return Err(e);
            }
            if self
                .shortage_warned
                .is_none_or(|at| now >= at + SHORTAGE_WARN_EVERY)
            {
                warn!(self.log, "local descriptor limit: the scan waits for a descriptor";
                    "path" => %path.display(), "error" => %e);
                self.shortage_warned = Some(now);
            }
            std::thread::sleep(SHORTAGE_RETRY);
        }
    }

    fn send(&self, msg: DispatcherMsg) -> Result<(), Stop> {
        self.out.send(msg).map_err(|_| Stop)
    }
}
