//! The operator's controls the scanner watches beside the queue: the
//! suspensions in `.OTHER_SERVERS/.suspend/` (`postman suspend` /
//! `resume`), sent to the dispatcher as a whole set whenever it changes,
//! and the site backoffs in `.OTHER_SERVERS/.sites/`, whose removal
//! (`postman flush`) lifts the site's backoff. Both folders are watched
//! with inotify and read again at every full scan, the first one included,
//! so `--once` and a daemon that missed an event see them too.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::time::SystemTime;

use nix::sys::inotify::{AddWatchFlags, WatchDescriptor};
use postman::queue::dirfd::EntryKind;
use postman::queue::{self, Suspension, SITES_DIR, SUSPEND_DIR};
use slog::{info, warn};

use super::events::Reaction;
use super::{Scanner, Stop};
use crate::messages::DispatcherMsg;

/// A folder of the operator's controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ControlDir {
    /// `.suspend/`: the suspensions.
    Suspend,
    /// `.sites/`: the site backoffs.
    Sites,
}

impl ControlDir {
    fn name(self) -> &'static str {
        match self {
            ControlDir::Suspend => SUSPEND_DIR,
            ControlDir::Sites => SITES_DIR,
        }
    }

    fn of(name: &OsStr) -> Option<ControlDir> {
        [ControlDir::Suspend, ControlDir::Sites]
            .into_iter()
            .find(|dir| name == dir.name())
    }
}

/// What the scanner last saw of the controls.
#[derive(Default)]
pub(super) struct ControlView {
    /// The suspensions last sent; `None` before the first read.
    sent: Option<Vec<Suspension>>,
    /// The site backoff files seen at the last read (a rescan reports the
    /// ones gone since, in case their event was lost).
    site_files: HashSet<String>,
    /// Files already reported as unreadable, so each is said once.
    bad: HashSet<String>,
    /// Troubles with a folder already reported (a linked `.suspend`, say),
    /// so that a rescan does not say them again until they are over.
    troubles: HashSet<String>,
    /// The watches on the two folders.
    watches: Vec<(WatchDescriptor, ControlDir)>,
}

impl Scanner {
    /// Reads both folders (watching them, when they exist, from now on):
    /// at every full scan, before any queue file, so that the first
    /// messages found already meet their suspensions.
    pub(super) fn scan_control(&mut self) -> Result<(), Stop> {
        for dir in [ControlDir::Suspend, ControlDir::Sites] {
            self.watch_control(dir);
        }
        self.read_suspensions()?;
        self.read_site_files()
    }

    /// A new entry of `.OTHER_SERVERS`: when it is one of the control
    /// folders, watched and read (returns true).
    pub(super) fn control_folder_appeared(&mut self, name: &OsStr) -> Result<bool, Stop> {
        let Some(dir) = ControlDir::of(name) else {
            return Ok(false);
        };
        self.watch_control(dir);
        match dir {
            ControlDir::Suspend => self.read_suspensions()?,
            ControlDir::Sites => self.read_site_files()?,
        }
        Ok(true)
    }

    /// The control folder a watch is on, if it is one.
    pub(super) fn control_dir(&self, wd: WatchDescriptor) -> Option<ControlDir> {
        self.control
            .watches
            .iter()
            .find(|(watch, _)| *watch == wd)
            .map(|(_, dir)| *dir)
    }

    /// Carries out the reaction to an event in a control folder.
    pub(super) fn control_changed(
        &mut self,
        wd: WatchDescriptor,
        dir: ControlDir,
        reaction: Reaction,
        name: Option<&OsStr>,
    ) -> Result<(), Stop> {
        let name = name.and_then(OsStr::to_str);
        match (reaction, name) {
            (Reaction::Unwatch, _) => {
                // The folder went away: so did what was in it.
                self.control.watches.retain(|(watch, _)| *watch != wd);
                match dir {
                    ControlDir::Suspend => self.read_suspensions()?,
                    ControlDir::Sites => self.read_site_files()?,
                }
            }
            (Reaction::ReadSuspensions, _) => self.read_suspensions()?,
            (Reaction::SiteBackoffCleared, Some(name)) => {
                self.control.site_files.remove(name);
                self.send(DispatcherMsg::SiteBackoffCleared {
                    file: name.to_owned(),
                })?;
            }
            (Reaction::SiteBackoffSeen, Some(name)) => {
                self.control.site_files.insert(name.to_owned());
            }
            _ => {}
        }
        Ok(())
    }

    fn watch_control(&mut self, dir: ControlDir) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        if self.control.watches.iter().any(|(_, d)| *d == dir) {
            return;
        }
        let path = self.queue.layout().remote_dir().join(dir.name());
        let mask = AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ONLYDIR
            | AddWatchFlags::IN_DONT_FOLLOW;
        let trouble = format!("watch {}", dir.name());
        match inotify.add_watch(&path, mask) {
            Ok(wd) => {
                self.control.watches.push((wd, dir));
                self.control.troubles.remove(&trouble);
            }
            // Not there yet: its creation in .OTHER_SERVERS is an event.
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => {
                if self.control.troubles.insert(trouble) {
                    warn!(self.log, "cannot watch a control folder, relying on rescans";
                        "path" => %path.display(), "error" => %e);
                }
            }
        }
    }

    /// Reads the suspensions, removes those whose time is over, and sends
    /// the set when it changed.
    fn read_suspensions(&mut self) -> Result<(), Stop> {
        let now = SystemTime::now();
        let trouble = "read .suspend".to_owned();
        let files = match queue::list_suspensions(&self.queue, now) {
            Ok(files) => files,
            Err(e) => {
                if self.control.troubles.insert(trouble) {
                    warn!(self.log, "cannot read the suspensions, keeping the last ones";
                        "path" => %self.suspend_path().display(), "error" => %e);
                }
                return Ok(());
            }
        };
        self.control.troubles.remove(&trouble);
        for (name, e) in &files.bad {
            if self.control.bad.insert(name.clone()) {
                warn!(self.log, "ignoring a suspension file"; "file" => name, "error" => %e,
                    "path" => %self.suspend_path().join(name).display());
            }
        }
        match queue::remove_expired(&self.queue, &files.expired, now) {
            Ok(removed) => {
                for s in removed {
                    info!(self.log, "suspension by the operator ended, file removed";
                        "kind" => s.target.kind(), "name" => s.target.name());
                }
            }
            Err(e) => warn!(self.log, "cannot remove a suspension whose time is over";
                "error" => %e),
        }
        if self.control.sent.as_ref() == Some(&files.active) {
            return Ok(());
        }
        self.control.sent = Some(files.active.clone());
        self.send(DispatcherMsg::Suspensions(files.active))
    }

    /// Lists `.sites/` and reports the files gone since the last look.
    fn read_site_files(&mut self) -> Result<(), Stop> {
        let trouble = "read .sites".to_owned();
        let listed = match self.queue.remote().and_then(|remote| remote.dir(SITES_DIR)) {
            Ok(dir) => dir.entries(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        let entries = match listed {
            Ok(entries) => entries,
            Err(e) => {
                if self.control.troubles.insert(trouble) {
                    warn!(self.log, "cannot read the site backoffs"; "error" => %e);
                }
                return Ok(());
            }
        };
        self.control.troubles.remove(&trouble);
        let now: HashSet<String> = entries
            .into_iter()
            .filter(|e| e.kind != EntryKind::Dir)
            .filter_map(|e| e.name.into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        let gone: Vec<String> = self.control.site_files.difference(&now).cloned().collect();
        self.control.site_files = now;
        for file in gone {
            self.send(DispatcherMsg::SiteBackoffCleared { file })?;
        }
        Ok(())
    }

    fn suspend_path(&self) -> std::path::PathBuf {
        self.queue.layout().remote_dir().join(SUSPEND_DIR)
    }
}
