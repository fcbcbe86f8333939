//! What the scanner does about each kind of inotify event, decided without
//! the event's side effects so that every kind is tested on its own.

use std::ffi::OsStr;

use nix::sys::inotify::AddWatchFlags;

use super::control::ControlDir;

/// What to do about a file or folder that came into a domain folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Incomplete {
    /// It is whole (renamed in, closed after writing): a file that does not
    /// parse is quarantined.
    Quarantine,
    /// It may still be being written: a file that does not parse is left
    /// for its `IN_CLOSE_WRITE` or the next rescan.
    Wait,
}

/// The folder an event's watch is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Watched {
    /// `.OTHER_SERVERS` itself.
    Root,
    /// A domain folder.
    Domain,
    /// One of the operator's control folders.
    Control(ControlDir),
}

/// The scanner's reaction to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reaction {
    /// Events were lost (`IN_Q_OVERFLOW`): scan the whole queue.
    Rescan,
    /// The watched folder went away or moved (`IN_IGNORED`): drop its
    /// watch; a control folder's contents are read again (they are gone).
    Unwatch,
    /// A new entry of `.OTHER_SERVERS`: a domain folder, a control folder,
    /// or something that should not be there.
    NewFolder,
    /// A file left a domain folder (delivered, claimed, deleted, held).
    Left,
    /// A file came into a domain folder, or a known one came back (a claim
    /// given back, a release from hold): read it.
    Arrived(Incomplete),
    /// The suspensions changed: read them all again.
    ReadSuspensions,
    /// A site backoff file was removed (`postman flush`).
    SiteBackoffCleared,
    /// A site backoff file was written.
    SiteBackoffSeen,
    /// Nothing to do.
    Ignore,
}

/// The reaction to an event with `mask` on a watch of `watched` (`None`:
/// a watch already dropped), about an entry `name` of it (`None` for an
/// event about the folder itself).
pub(super) fn react(
    mask: AddWatchFlags,
    watched: Option<Watched>,
    name: Option<&OsStr>,
) -> Reaction {
    if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
        return Reaction::Rescan;
    }
    let Some(watched) = watched else {
        return Reaction::Ignore;
    };
    if mask.contains(AddWatchFlags::IN_IGNORED) {
        return Reaction::Unwatch;
    }
    let Some(name) = name else {
        return Reaction::Ignore;
    };
    let removed = mask.intersects(AddWatchFlags::IN_MOVED_FROM | AddWatchFlags::IN_DELETE);
    let moved_in = mask.intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO);
    match watched {
        Watched::Root if moved_in => Reaction::NewFolder,
        Watched::Root => Reaction::Ignore,
        // Subfolders of a domain (tmp/, .active/, .hold/ …) are not queue
        // entries.
        Watched::Domain if mask.contains(AddWatchFlags::IN_ISDIR) => Reaction::Ignore,
        Watched::Domain if removed => Reaction::Left,
        // A file created to be written in place is not whole yet, and its
        // IN_CLOSE_WRITE follows: no quarantine from here.
        Watched::Domain if mask.contains(AddWatchFlags::IN_CREATE) => {
            Reaction::Arrived(Incomplete::Wait)
        }
        Watched::Domain => Reaction::Arrived(Incomplete::Quarantine),
        // Control files have UTF-8 names; a writer's temporary file starts
        // with a dot.
        Watched::Control(_)
            if name
                .to_str()
                .is_none_or(|name| name.starts_with('.') || name == postman::queue::TMP_DIR) =>
        {
            Reaction::Ignore
        }
        Watched::Control(ControlDir::Suspend) => Reaction::ReadSuspensions,
        Watched::Control(ControlDir::Sites) if removed => Reaction::SiteBackoffCleared,
        Watched::Control(ControlDir::Sites) => Reaction::SiteBackoffSeen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_event() {
        use AddWatchFlags as F;
        use Reaction as R;
        let domain = Some(Watched::Domain);
        let root = Some(Watched::Root);
        let suspend = Some(Watched::Control(ControlDir::Suspend));
        let sites = Some(Watched::Control(ControlDir::Sites));
        let cases: &[(AddWatchFlags, Option<Watched>, Option<&str>, Reaction)] = &[
            // Lost events: whatever the watch, scan everything.
            (F::IN_Q_OVERFLOW, None, None, R::Rescan),
            (F::IN_Q_OVERFLOW, domain, Some("m1"), R::Rescan),
            // An event of a watch already dropped.
            (F::IN_CREATE, None, Some("m1"), R::Ignore),
            // The folder itself went away or moved.
            (F::IN_IGNORED, domain, None, R::Unwatch),
            (F::IN_IGNORED, suspend, None, R::Unwatch),
            (F::IN_IGNORED, root, None, R::Unwatch),
            // Events about the folder itself, with no entry named.
            (F::IN_DELETE_SELF, domain, None, R::Ignore),
            // .OTHER_SERVERS: a new domain (or control) folder.
            (
                F::IN_CREATE | F::IN_ISDIR,
                root,
                Some("a.test"),
                R::NewFolder,
            ),
            (
                F::IN_MOVED_TO | F::IN_ISDIR,
                root,
                Some("a.test"),
                R::NewFolder,
            ),
            // A link or file put where a folder should be: looked at.
            (F::IN_CREATE, root, Some("b.test"), R::NewFolder),
            (F::IN_DELETE | F::IN_ISDIR, root, Some("a.test"), R::Ignore),
            // A domain folder's files.
            (
                F::IN_MOVED_TO,
                domain,
                Some("m1"),
                R::Arrived(Incomplete::Quarantine),
            ),
            (
                F::IN_CLOSE_WRITE,
                domain,
                Some("m1"),
                R::Arrived(Incomplete::Quarantine),
            ),
            (
                F::IN_CREATE,
                domain,
                Some("m1"),
                R::Arrived(Incomplete::Wait),
            ),
            (F::IN_DELETE, domain, Some("m1"), R::Left),
            (F::IN_MOVED_FROM, domain, Some("m1"), R::Left),
            // Its subfolders are not queue entries.
            (
                F::IN_CREATE | F::IN_ISDIR,
                domain,
                Some(".active"),
                R::Ignore,
            ),
            (
                F::IN_MOVED_FROM | F::IN_ISDIR,
                domain,
                Some("tmp"),
                R::Ignore,
            ),
            // The operator's suspensions: any change, all read again.
            (
                F::IN_MOVED_TO,
                suspend,
                Some("site:example.com"),
                R::ReadSuspensions,
            ),
            (
                F::IN_DELETE,
                suspend,
                Some("domain:a.test"),
                R::ReadSuspensions,
            ),
            (F::IN_CREATE, suspend, Some(".tmp-1"), R::Ignore),
            (F::IN_CREATE, suspend, Some("tmp"), R::Ignore),
            // Site backoffs: a removal is `postman flush`.
            (
                F::IN_DELETE,
                sites,
                Some("mx.example.com"),
                R::SiteBackoffCleared,
            ),
            (
                F::IN_MOVED_FROM,
                sites,
                Some("mx.example.com"),
                R::SiteBackoffCleared,
            ),
            (
                F::IN_MOVED_TO,
                sites,
                Some("mx.example.com"),
                R::SiteBackoffSeen,
            ),
            (F::IN_DELETE, sites, Some(".new"), R::Ignore),
        ];
        // A control file whose name is not UTF-8 is none of postman's.
        use std::os::unix::ffi::OsStrExt;
        let odd = OsStr::from_bytes(b"site:\xff");
        assert_eq!(react(F::IN_CREATE, suspend, Some(odd)), R::Ignore);
        // A domain folder's file with such a name is read (and renamed).
        assert_eq!(
            react(F::IN_MOVED_TO, domain, Some(odd)),
            R::Arrived(Incomplete::Quarantine)
        );
        for (mask, watched, name, want) in cases {
            assert_eq!(
                react(*mask, *watched, name.map(OsStr::new)),
                *want,
                "{mask:?} on {watched:?} about {name:?}"
            );
        }
    }
}
