//! The Maildir-style queue on disk (DESIGN.md "The queue on disk"): the
//! layout under `application.maildir.path`, the envelope header block of each
//! queued file, listing, completion, and setting files aside (permanent
//! failure, quarantine); claims shared by several processes, the state of
//! each message (its pending recipients and retry fields) in a state file
//! beside it, and bounce placement. Writers
//! create files in `<domain>/tmp/` and `rename(2)` them into `<domain>/`, so
//! a listed file is always whole. Every file and folder under the root is
//! reached through [`dirfd::QueueDir`] handles, kept by a [`Queue`]: no
//! link is followed and no special file opened.

pub mod admin;
mod backoff;
mod claim;
pub mod dirfd;
mod entry;
mod envelope;
mod handle;
mod local;
mod mailbox;
pub mod owner;
pub mod params;
mod render;
mod sites;
mod state;
mod statefile;
mod status;
mod store;
mod suspend;
mod tmpfile;
pub mod xtext;

pub use admin::HOLD_DIR;
pub use backoff::{
    clear_backoff, parse_backoff, read_backoff, read_backoff_in, render_backoff, write_backoff,
    BackoffError, DomainBackoff, BACKOFF_FILE, MAX_BACKOFF_FILE, MAX_UNTIL,
};
pub use claim::{
    claim, recover, recover_states, sweep_tmp, Claimed, Leftover, Marked, Recorded, Recovery,
    Sweep, Unrecorded, ACTIVE_DIR,
};
pub use entry::{plan_domain, plan_entry, DomainPlan, DomainRefusal, EntryPlan};
pub use envelope::{
    parse_envelope, Envelope, EnvelopeError, MAX_ENVELOPE_BLOCK, MAX_WRITTEN_BLOCK, RETRY_HEADROOM,
};
pub use handle::{Keep, Queue, MAX_KEPT_DOMAINS};
pub use local::{
    deliver_local, enqueue_remote, header_section, is_local, is_permanent, place_bounce,
    read_original_headers, read_original_message, split_address, Placed, MAX_RETURNED_HEADERS,
};
pub use render::{render_envelope, render_envelopes, room_for_state, Block};
pub use sites::{
    clear_site_backoff, list_site_backoffs, parse_site_backoff, read_site_backoff,
    remove_site_file, render_site_backoff, site_file_name, write_site_backoff, SiteBackoff,
    SiteFiles, MAX_SITE_FILE, SITES_DIR,
};
pub use state::{one_line, RetryState, StateError, MAX_ERROR_LEN, STATE_FIELDS};
pub use statefile::{
    adopt_reservation, fnv1a64, move_state_beside, read_queued, remove_state, remove_state_of,
    reserve, sweep_states, tie_of, write_state, Queued, Reservation, Source, StateSweep, Tie,
    Unwritten, QUEUE_FILE_FIELD, STATE_DIR,
};
pub use status::{
    parse_status, rate_text, read_status, render_status, write_status, Held, HoldKind, RateSource,
    SiteStatus, Status, StatusError, MAX_STATUS_DOMAINS, MAX_STATUS_FILE, STATUS_FILE,
};
pub use store::{
    escape_name, list_domains, list_messages, quarantine, quarantine_entry, read_envelope,
    read_envelope_from, rename_escaped, set_aside_failed, BodyReader, ReadError, BODY_CHUNK,
};
pub use suspend::{
    holding_domain, holding_site, list_suspensions, parse_duration, parse_suspension,
    read_suspension, remove_expired, remove_suspension, render_suspension, target_name,
    write_suspension, SuspendError, SuspendFiles, Suspension, Target, MAX_SUSPEND_FILE,
    MAX_SUSPEND_FOR, SUSPEND_DIR,
};

use std::path::{Path, PathBuf};

/// The folder under the queue root holding one folder per remote domain.
pub const REMOTE_DIR: &str = ".OTHER_SERVERS";
/// The folder inside a domain folder where writers build files.
pub const TMP_DIR: &str = "tmp";
/// Where [`set_aside_failed`] puts permanently failed messages.
pub const FAILED_DIR: &str = ".failed";
/// Where [`quarantine`] puts files that cannot be parsed.
pub const QUARANTINE_DIR: &str = ".quarantine";

/// Paths of the queue, derived from its root. Pure: nothing is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// A layout rooted at `root` (`application.maildir.path`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The queue root, holding local mailboxes and [`REMOTE_DIR`].
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/.OTHER_SERVERS`.
    pub fn remote_dir(&self) -> PathBuf {
        self.remote_path(&[])
    }

    /// `<root>/.OTHER_SERVERS/<domain>`.
    pub fn domain_dir(&self, domain: &str) -> PathBuf {
        self.remote_path(&[domain])
    }

    /// `<root>/.OTHER_SERVERS/<domain>/tmp`.
    pub fn tmp_dir(&self, domain: &str) -> PathBuf {
        self.remote_path(&[domain, TMP_DIR])
    }

    /// `<root>/.OTHER_SERVERS/<domain>/<name>`: a queued message.
    pub fn message_path(&self, domain: &str, name: &str) -> PathBuf {
        self.remote_path(&[domain, name])
    }

    /// `<root>/.OTHER_SERVERS/<parts>/…`, as `join` after `join` would make
    /// it, in one allocation: the scanner and every claim build paths for
    /// every message (each `join` copied the path so far and grew it).
    /// The parts are single path components.
    pub(crate) fn remote_path(&self, parts: &[&str]) -> PathBuf {
        let len = self.root.as_os_str().len()
            + 1
            + REMOTE_DIR.len()
            + parts.iter().map(|part| part.len() + 1).sum::<usize>();
        let mut path = PathBuf::with_capacity(len);
        path.push(&self.root);
        path.push(REMOTE_DIR);
        for part in parts {
            path.push(part);
        }
        path
    }
}

/// Whether `name` is a domain folder name the queue expects: a lower-case
/// LDH domain in A-label form (RFC 5890 §2.3.1, RFC 1123 §2.1), labels of
/// 1–63 characters not starting or ending with `-`, at most 253 in all, no
/// trailing dot. The scanner uses it to complain about stray folders.
pub fn valid_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_paths() {
        let layout = Layout::new("/q");
        assert_eq!(layout.root(), Path::new("/q"));
        assert_eq!(layout.remote_dir(), Path::new("/q/.OTHER_SERVERS"));
        assert_eq!(
            layout.domain_dir("d.test"),
            Path::new("/q/.OTHER_SERVERS/d.test")
        );
        assert_eq!(
            layout.tmp_dir("d.test"),
            Path::new("/q/.OTHER_SERVERS/d.test/tmp")
        );
        assert_eq!(
            layout.message_path("d.test", "m1"),
            Path::new("/q/.OTHER_SERVERS/d.test/m1")
        );
        // As joined, from a root with or without a trailing slash.
        for root in ["/q", "/q/", "q", "/var/mail/queue"] {
            let layout = Layout::new(root);
            let joined = Path::new(root).join(REMOTE_DIR).join("d.test").join("m1");
            let built = layout.message_path("d.test", "m1");
            assert_eq!(built, joined);
            assert_eq!(built.as_os_str(), joined.as_os_str());
            assert!(built.capacity() <= joined.as_os_str().len() + 1, "{root}");
        }
    }

    #[test]
    fn valid_domain_table() {
        let long_label = "a".repeat(63);
        let too_long_label = "a".repeat(64);
        let long_name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        let too_long_name = format!("{long_name}e");
        let cases: &[(&str, bool)] = &[
            ("example.org", true),
            ("localhost", true),
            ("xn--bcher-kva.example", true),
            ("a-b.c0.test", true),
            ("123.test", true),
            (&long_label, true),
            (&long_name, true),
            ("", false),
            ("Example.org", false),
            ("example.org.", false),
            (".example.org", false),
            ("a..b", false),
            ("-a.test", false),
            ("a-.test", false),
            ("a_b.test", false),
            ("bücher.example", false),
            ("a b.test", false),
            ("tmp/x", false),
            (&too_long_label, false),
            (&too_long_name, false),
        ];
        for (name, want) in cases {
            assert_eq!(valid_domain(name), *want, "valid_domain({name:?})");
        }
    }
}
