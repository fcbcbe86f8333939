//! What the scanner refuses, and how it says so once: a domain folder that
//! is a link or no folder is never entered; a link or special file in a
//! domain folder is moved, unopened, to `.quarantine/` with its reason; a
//! file whose name is not UTF-8 is renamed to its escaped form. When even
//! that is refused (a linked `.quarantine`, say) the entry is left alone,
//! and the log says so once, not at every rescan.

use std::ffi::OsStr;
use std::sync::Arc;

use postman::queue::dirfd::{refusal, EntryKind, QueueDir, RefusedKind};
use postman::queue::{self, DomainRefusal, EntryPlan};
use slog::{error, warn};

use super::{Scanner, Stop};

impl Scanner {
    /// `domain`'s folder, kept open by the scanner's queue; `None` (said
    /// once when it is refused) when it cannot be opened.
    pub(super) fn domain_dir(&mut self, domain: &str) -> Option<Arc<QueueDir>> {
        match self.queue.domain(domain) {
            Ok(dir) => Some(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) if refusal(&e).is_some() => {
                let why = match refusal(&e).map(|r| r.kind) {
                    Some(RefusedKind::Link) => DomainRefusal::Link,
                    _ => DomainRefusal::NotDirectory,
                };
                self.refuse_folder(OsStr::new(domain), &why);
                None
            }
            Err(e) => {
                error!(self.log, "cannot open queue folder"; "domain" => domain,
                    "path" => %self.queue.layout().domain_dir(domain).display(), "error" => %e);
                None
            }
        }
    }

    /// A new entry of `.OTHER_SERVERS` (an inotify event): scanned when it
    /// is a domain folder, refused as the full scan refuses it otherwise.
    pub(super) fn new_folder(&mut self, name: &OsStr) -> Result<(), Stop> {
        let stat = match self.queue.remote().and_then(|remote| remote.stat(name)) {
            Ok(Some(stat)) => stat,
            _ => return Ok(()),
        };
        match queue::plan_domain(name, stat.kind) {
            queue::DomainPlan::Skip => Ok(()),
            queue::DomainPlan::Scan(domain) => self.scan_domain(&domain),
            queue::DomainPlan::Refuse(why) => {
                self.refuse_folder(name, &why);
                Ok(())
            }
        }
    }

    /// Says once that the entry `name` of `.OTHER_SERVERS` is not scanned.
    pub(super) fn refuse_folder(&mut self, name: &OsStr, why: &DomainRefusal) {
        if !self.bad_folders.insert(name.to_owned()) {
            return;
        }
        self.stats.refused += 1;
        let path = self.queue.layout().remote_dir().join(name);
        error!(self.log, "queue folder refused: it is not entered and its mail is not delivered";
            "folder" => queue::escape_name(name), "reason" => why.describe(),
            "path" => %path.display());
    }

    /// Takes the entry `name` (of `kind`) of `domain`'s folder `dir` as
    /// [`queue::plan_entry`] says; returns the name to read, if any.
    pub(super) fn take(
        &mut self,
        domain: &str,
        dir: &QueueDir,
        name: &OsStr,
        kind: EntryKind,
        special: RefusedKind,
    ) -> Result<Option<String>, Stop> {
        match queue::plan_entry(name, kind, special) {
            EntryPlan::Skip => Ok(None),
            EntryPlan::Read(name) => Ok(Some(name)),
            EntryPlan::Rename { from, to } => Ok(self.rename_not_utf8(domain, dir, &from, &to)),
            EntryPlan::Quarantine { from, name, kind } => {
                self.refuse_entry(domain, &from, &name, kind)?;
                Ok(None)
            }
        }
    }

    /// Renames a file whose name is not UTF-8 to its escaped form, so it
    /// is delivered like any other; returns the new name.
    fn rename_not_utf8(
        &mut self,
        domain: &str,
        dir: &QueueDir,
        from: &OsStr,
        to: &str,
    ) -> Option<String> {
        match queue::rename_escaped(dir, from, to) {
            Ok(renamed) => {
                warn!(self.log, "queue file name is not UTF-8: renamed to deliver it";
                    "domain" => domain, "from" => queue::escape_name(from), "queue_id" => &renamed,
                    "path" => %dir.display_path(&renamed).display());
                Some(renamed)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                if self.stuck.insert((domain.to_owned(), from.to_owned())) {
                    error!(self.log, "cannot rename a queue file whose name is not UTF-8; it is left alone";
                        "domain" => domain, "from" => to,
                        "path" => %dir.display_path(from).display(), "error" => %e);
                }
                None
            }
        }
    }

    /// Quarantines the link or special file `from` of `domain`'s folder,
    /// unopened, as `name`: a link is never followed, a FIFO never opened.
    /// A file reported before is gone for the dispatcher.
    pub(super) fn refuse_entry(
        &mut self,
        domain: &str,
        from: &OsStr,
        name: &str,
        kind: RefusedKind,
    ) -> Result<(), Stop> {
        let Some(dir) = self.domain_dir(domain) else {
            return Ok(());
        };
        let what = queue::dirfd::Refused {
            path: dir.display_path(from),
            kind,
        };
        let reason = what.to_string();
        match queue::quarantine_entry(&dir, from, name, &reason) {
            Ok(to) => {
                self.stats.refused += 1;
                error!(self.log, "queue entry refused and quarantined, unopened";
                    "queue_id" => name, "domain" => domain, "reason" => &reason,
                    "path" => %to.display());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                if self.stuck.insert((domain.to_owned(), from.to_owned())) {
                    self.stats.refused += 1;
                    error!(self.log, "queue entry refused; it cannot be quarantined either and is left alone, unopened";
                        "queue_id" => name, "domain" => domain, "reason" => &reason,
                        "error" => %e);
                }
            }
        }
        self.gone(domain, name)
    }

    /// Quarantines a file that cannot be parsed; a failure is said once.
    pub(super) fn quarantine(&mut self, domain: &str, name: &str, reason: &str) {
        match queue::quarantine(&self.queue, domain, name, reason) {
            Ok(to) => {
                self.stats.parse_errors += 1;
                error!(self.log, "quarantined"; "queue_id" => name, "domain" => domain,
                    "reason" => reason, "path" => %to.display())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                if self.stuck.insert((domain.to_owned(), name.into())) {
                    self.stats.parse_errors += 1;
                    error!(self.log, "cannot quarantine unparseable queue file; it stays in place";
                        "queue_id" => name, "domain" => domain, "reason" => reason,
                        "path" => %self.queue.layout().message_path(domain, name).display(),
                        "error" => %e)
                }
            }
        }
    }
}
