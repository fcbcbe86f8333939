//! What a scanner does with each entry it finds in the queue, as pure
//! decisions over a name and what the entry is ([`EntryKind`], from a
//! listing or an `lstat`, never following a link): the full scan and the
//! change notifications of a running daemon take every entry through the
//! same two functions, so neither path can treat a link or a FIFO
//! differently from the other.
//!
//! * A domain folder must be a real directory with a UTF-8 name; a link
//!   or anything else is refused (left alone, and said once), since
//!   following it would lead out of the queue.
//! * In a domain folder, regular files are queue entries. A link, FIFO,
//!   socket or device renamed in is quarantined as it is, never opened. A
//!   name that is not UTF-8 is first renamed to [`escape_name`]'s form, so
//!   that the message is delivered, logged and listed like any other.
//!   Dot names, `tmp` and sub-folders are not queue entries.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use super::dirfd::{EntryKind, RefusedKind};
use super::{escape_name, TMP_DIR};

/// What to do with an entry of `.OTHER_SERVERS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPlan {
    /// Not a domain folder (a dot name): nothing to say.
    Skip,
    /// A domain folder to scan (its name may still be no valid domain:
    /// see [`super::valid_domain`]).
    Scan(String),
    /// Not followed or entered: say why, once.
    Refuse(DomainRefusal),
}

/// Why a domain folder is not scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRefusal {
    /// A link (to a folder outside the queue, perhaps).
    Link,
    /// A file, FIFO, socket or device where a folder should be.
    NotDirectory,
    /// A folder whose name is not UTF-8: no domain is spelt so. The name
    /// shown is escaped.
    NotUtf8(String),
}

impl DomainRefusal {
    /// The reason, for the log.
    pub fn describe(&self) -> String {
        match self {
            DomainRefusal::Link => {
                "a symbolic link: postman does not follow links in the queue".to_owned()
            }
            DomainRefusal::NotDirectory => "not a folder".to_owned(),
            DomainRefusal::NotUtf8(shown) => {
                format!("its name ({shown}) is not UTF-8, so it names no domain")
            }
        }
    }
}

/// Decides what to do with the entry `name` of `.OTHER_SERVERS`.
pub fn plan_domain(name: &OsStr, kind: EntryKind) -> DomainPlan {
    if name.as_bytes().starts_with(b".") {
        return DomainPlan::Skip;
    }
    match (kind, name.to_str()) {
        (EntryKind::Link, _) => DomainPlan::Refuse(DomainRefusal::Link),
        (EntryKind::File | EntryKind::Special, _) => {
            DomainPlan::Refuse(DomainRefusal::NotDirectory)
        }
        (EntryKind::Dir, None) => DomainPlan::Refuse(DomainRefusal::NotUtf8(escape_name(name))),
        (EntryKind::Dir, Some(name)) => DomainPlan::Scan(name.to_owned()),
    }
}

/// What to do with an entry of a domain folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPlan {
    /// Not a queue entry (a dot name, `tmp`, a sub-folder).
    Skip,
    /// A regular file with a UTF-8 name: read its envelope.
    Read(String),
    /// A regular file whose name is not UTF-8: rename it to `to` (or
    /// `to.N` when taken) in its folder, then read it.
    Rename {
        /// The name on disk.
        from: OsString,
        /// The escaped name.
        to: String,
    },
    /// A link or special file: move it, unopened, to `.quarantine/` as
    /// `name`.
    Quarantine {
        /// The name on disk.
        from: OsString,
        /// The name in `.quarantine/` (escaped when not UTF-8).
        name: String,
        /// What it is.
        kind: RefusedKind,
    },
}

/// Decides what to do with the entry `name` of a domain folder; `special`
/// says which kind a [`EntryKind::Special`] is (a FIFO, say).
pub fn plan_entry(name: &OsStr, kind: EntryKind, special: RefusedKind) -> EntryPlan {
    let bytes = name.as_bytes();
    if bytes.starts_with(b".") || bytes == TMP_DIR.as_bytes() {
        return EntryPlan::Skip;
    }
    let refused = match kind {
        EntryKind::Dir => return EntryPlan::Skip,
        EntryKind::File => None,
        EntryKind::Link => Some(RefusedKind::Link),
        EntryKind::Special => Some(special),
    };
    match (refused, name.to_str()) {
        (Some(kind), _) => EntryPlan::Quarantine {
            from: name.to_owned(),
            name: escape_name(name),
            kind,
        },
        (None, Some(name)) => EntryPlan::Read(name.to_owned()),
        (None, None) => EntryPlan::Rename {
            from: name.to_owned(),
            to: escape_name(name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(bytes: &[u8]) -> &OsStr {
        OsStr::from_bytes(bytes)
    }

    #[test]
    fn domain_table() {
        let cases: &[(&[u8], EntryKind, DomainPlan)] = &[
            (b"d.test", EntryKind::Dir, DomainPlan::Scan("d.test".into())),
            (
                b"Bad_Name",
                EntryKind::Dir,
                DomainPlan::Scan("Bad_Name".into()),
            ),
            (b".hidden", EntryKind::Dir, DomainPlan::Skip),
            (b".hidden", EntryKind::Link, DomainPlan::Skip),
            (
                b"d.test",
                EntryKind::Link,
                DomainPlan::Refuse(DomainRefusal::Link),
            ),
            (
                b"d.test",
                EntryKind::File,
                DomainPlan::Refuse(DomainRefusal::NotDirectory),
            ),
            (
                b"d.test",
                EntryKind::Special,
                DomainPlan::Refuse(DomainRefusal::NotDirectory),
            ),
            (
                b"caf\xe9.test",
                EntryKind::Dir,
                DomainPlan::Refuse(DomainRefusal::NotUtf8("caf\\xE9.test".into())),
            ),
            (
                b"caf\xe9.test",
                EntryKind::Link,
                DomainPlan::Refuse(DomainRefusal::Link),
            ),
        ];
        for (name, kind, want) in cases {
            assert_eq!(
                plan_domain(os(name), *kind),
                *want,
                "{:?} as {kind:?}",
                os(name)
            );
        }
    }

    #[test]
    fn entry_table() {
        let fifo = RefusedKind::Fifo;
        let cases: &[(&[u8], EntryKind, EntryPlan)] = &[
            (b"m1", EntryKind::File, EntryPlan::Read("m1".into())),
            (b".backoff", EntryKind::File, EntryPlan::Skip),
            (b".backoff", EntryKind::Special, EntryPlan::Skip),
            (b"tmp", EntryKind::Dir, EntryPlan::Skip),
            (b"tmp", EntryKind::Link, EntryPlan::Skip),
            (b"sub", EntryKind::Dir, EntryPlan::Skip),
            (
                b"m1",
                EntryKind::Link,
                EntryPlan::Quarantine {
                    from: "m1".into(),
                    name: "m1".into(),
                    kind: RefusedKind::Link,
                },
            ),
            (
                b"m1",
                EntryKind::Special,
                EntryPlan::Quarantine {
                    from: "m1".into(),
                    name: "m1".into(),
                    kind: fifo,
                },
            ),
            (
                b"m\xff1",
                EntryKind::File,
                EntryPlan::Rename {
                    from: os(b"m\xff1").to_owned(),
                    to: "m\\xFF1".into(),
                },
            ),
            (
                b"m\xff1",
                EntryKind::Special,
                EntryPlan::Quarantine {
                    from: os(b"m\xff1").to_owned(),
                    name: "m\\xFF1".into(),
                    kind: fifo,
                },
            ),
        ];
        for (name, kind, want) in cases {
            assert_eq!(
                plan_entry(os(name), *kind, fifo),
                *want,
                "{:?} as {kind:?}",
                os(name)
            );
        }
    }
}
