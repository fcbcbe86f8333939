//! A domain's backoff on disk: `<domain>/.backoff`. When no server of a
//! domain could be reached, the whole domain waits (Postfix's "delivery
//! temporarily suspended") rather than each of its messages failing one by
//! one. The dispatcher keeps that wait in memory; this file makes it survive
//! a restart, so a restarted postman does not hammer a dead host with every
//! queued message at once. One small file per failing domain, written
//! through `tmp/` and a rename; it is removed by the first success.
//!
//! Format, one `key: value` line each:
//!
//! ```text
//! until: 1764250300
//! failures: 3
//! error: connect to mx.example[192.0.2.1]:25: Connection refused
//! ```
//!
//! The file is read through [`QueueDir::read_small`] with a limit of
//! [`MAX_BACKOFF_FILE`] bytes: a FIFO, a link (to `/dev/zero`, say), a
//! device or an oversized file is refused unread and counts as no
//! backoff. Parsing is a pure function over the bytes
//! ([`parse_backoff`]) with checked arithmetic: an `until` after the year
//! 9999 ([`MAX_UNTIL`]) is refused as invalid, and a wait that is longer
//! than postman itself would ever write is cut to the caller's longest
//! ([`DomainBackoff::remaining`]), so a hand-made file can neither crash
//! nor park a domain for ever.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dirfd::QueueDir;
use super::state::one_line;
use super::tmpfile::replace_synced;
use super::{Queue, TMP_DIR};

/// The file name inside the domain folder (a dot name: never a queue entry).
pub const BACKOFF_FILE: &str = ".backoff";

/// The most bytes of `.backoff` read: its three lines with a long error
/// take a few hundred.
pub const MAX_BACKOFF_FILE: u64 = 4096;

/// The latest `until:` accepted, 9999-12-31 23:59:59 UTC in unix seconds:
/// every date after it is a hand-made file, not a backoff postman wrote.
pub const MAX_UNTIL: u64 = 253_402_300_799;

/// A domain's backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainBackoff {
    /// No new connection to the domain before this.
    pub until: SystemTime,
    /// Failed connection rounds in a row: the backoff grows with it.
    pub failures: u32,
    /// Why the last round failed, one line.
    pub error: String,
}

impl DomainBackoff {
    /// How much longer the domain waits at `now`, at most `longest` (the
    /// longest backoff postman writes, `delivery.retry.max_backoff`): a
    /// file saying more was not written by postman's schedule, and must
    /// not park the domain for longer. `None` once it has ended.
    pub fn remaining(&self, now: SystemTime, longest: Duration) -> Option<Duration> {
        self.until
            .duration_since(now)
            .ok()
            .filter(|left| !left.is_zero())
            .map(|left| left.min(longest))
    }
}

/// Why the contents of a `.backoff` file were not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    /// A line postman always writes is missing or not a number.
    #[error("no valid {0}: line (expected until: <unix seconds> and failures: <count>)")]
    Missing(&'static str),
    /// The `until:` is after the year 9999 ([`MAX_UNTIL`]).
    #[error("until: {0} is after the year 9999")]
    TooLate(u64),
}

/// Parses the contents of a `.backoff` file: `key: value` lines, unknown
/// keys and lines without a colon ignored, later lines winning. Pure and
/// total: any bytes give a value or an error, never a panic.
pub fn parse_backoff(bytes: &[u8]) -> Result<DomainBackoff, BackoffError> {
    let text = String::from_utf8_lossy(bytes);
    let mut until = None;
    let mut failures = None;
    let mut error = String::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "until" => until = value.parse::<u64>().ok(),
            "failures" => failures = value.parse::<u32>().ok(),
            "error" => error = one_line(value),
            _ => {}
        }
    }
    let until = until.ok_or(BackoffError::Missing("until"))?;
    let failures = failures.ok_or(BackoffError::Missing("failures"))?;
    if until > MAX_UNTIL {
        return Err(BackoffError::TooLate(until));
    }
    let until = UNIX_EPOCH
        .checked_add(Duration::from_secs(until))
        .ok_or(BackoffError::TooLate(until))?;
    Ok(DomainBackoff {
        until,
        failures,
        error,
    })
}

/// The contents of a `.backoff` file for `backoff`, which
/// [`parse_backoff`] reads back (a time before 1970 is written as 0).
pub fn render_backoff(backoff: &DomainBackoff) -> String {
    let until = backoff
        .until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "until: {until}\nfailures: {}\nerror: {}\n",
        backoff.failures,
        one_line(&backoff.error)
    )
}

/// Reads `<domain>/.backoff`. `Ok(None)` when there is none (or no domain
/// folder). A link, special file or a file over [`MAX_BACKOFF_FILE`] is a
/// refusal ([`super::dirfd::refusal`]), contents that cannot be understood
/// `InvalidData` with a [`BackoffError`] inside: the caller logs it and
/// goes on without a backoff (the worst case is one early retry).
pub fn read_backoff(queue: &Queue, domain: &str) -> io::Result<Option<DomainBackoff>> {
    let dir = match queue.domain(domain) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    read_backoff_in(&dir)
}

/// [`read_backoff`] from an open domain folder.
pub fn read_backoff_in(dir: &QueueDir) -> io::Result<Option<DomainBackoff>> {
    let Some(bytes) = dir.read_small(BACKOFF_FILE, MAX_BACKOFF_FILE)? else {
        return Ok(None);
    };
    parse_backoff(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `<domain>/.backoff` crash-safely (tmp file, fsync, rename over
/// whatever entry is there, which is never followed).
pub fn write_backoff(queue: &Queue, domain: &str, backoff: &DomainBackoff) -> io::Result<()> {
    let dir = queue.domain_create(domain)?;
    let tmp_dir = dir.dir_create(TMP_DIR)?;
    replace_synced(
        &tmp_dir,
        &dir,
        BACKOFF_FILE,
        render_backoff(backoff).as_bytes(),
    )
}

/// Removes `<domain>/.backoff` (the entry itself, whatever it is); none is
/// fine.
pub fn clear_backoff(queue: &Queue, domain: &str) -> io::Result<()> {
    let dir = match queue.domain(domain) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    match dir.remove_file(BACKOFF_FILE) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::dirfd::{refusal, RefusedKind};
    use crate::queue::Layout;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn queue() -> (tempfile::TempDir, Queue) {
        let root = tempfile::tempdir().unwrap();
        let queue = Queue::create(Layout::new(root.path())).unwrap();
        (root, queue)
    }

    #[test]
    fn written_backoff_reads_back_and_clears() {
        let (_root, queue) = queue();
        assert_eq!(read_backoff(&queue, "d.test").unwrap(), None, "no file yet");
        let backoff = DomainBackoff {
            until: UNIX_EPOCH + Duration::from_secs(1_764_250_300),
            failures: 3,
            error: "connect to mx.d.test[192.0.2.1]:25:\nConnection refused".into(),
        };
        write_backoff(&queue, "d.test", &backoff).unwrap();
        let read = read_backoff(&queue, "d.test").unwrap().unwrap();
        assert_eq!(read.until, backoff.until, "until survives");
        assert_eq!(read.failures, 3, "failures survive");
        assert_eq!(
            read.error, "connect to mx.d.test[192.0.2.1]:25: Connection refused",
            "the error is kept on one line"
        );
        let tmp = queue.layout().domain_dir("d.test").join(TMP_DIR);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "no temp file left");
        clear_backoff(&queue, "d.test").unwrap();
        assert_eq!(read_backoff(&queue, "d.test").unwrap(), None, "cleared");
        clear_backoff(&queue, "d.test").unwrap();
    }

    #[test]
    fn parse_table() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let ok = |until, failures, error: &str| {
            Ok(DomainBackoff {
                until: at(until),
                failures,
                error: error.to_owned(),
            })
        };
        let cases: Vec<(&[u8], Result<DomainBackoff, BackoffError>)> = vec![
            (b"until: 10\nfailures: 2\nerror: x\n", ok(10, 2, "x")),
            (b"failures:2\r\nuntil:10\r\n", ok(10, 2, "")),
            (b"until: 10\nfailures: 2\nuntil: 20\n", ok(20, 2, "")),
            (b"until: 10\nfailures: 2\nnoise\nother: 1\n", ok(10, 2, "")),
            (
                b"until: 10\nfailures: 2\nerror: caf\xe9\n",
                ok(10, 2, "caf\u{fffd}"),
            ),
            (b"until: 253402300799\nfailures: 1\n", ok(MAX_UNTIL, 1, "")),
            (b"", Err(BackoffError::Missing("until"))),
            (
                b"until: soon\nfailures: 1\n",
                Err(BackoffError::Missing("until")),
            ),
            (
                b"until: -1\nfailures: 1\n",
                Err(BackoffError::Missing("until")),
            ),
            (b"until: 10\n", Err(BackoffError::Missing("failures"))),
            (
                b"until: 10\nfailures: 4294967296\n",
                Err(BackoffError::Missing("failures")),
            ),
            (
                b"until: 9223372036854775808\nfailures: 1\n",
                Err(BackoffError::TooLate(9_223_372_036_854_775_808)),
            ),
            (
                b"until: 18446744073709551615\nfailures: 1\n",
                Err(BackoffError::TooLate(u64::MAX)),
            ),
            (
                b"until: 253402300800\nfailures: 1\n",
                Err(BackoffError::TooLate(MAX_UNTIL + 1)),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_backoff(bytes),
                want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn render_then_parse_is_the_same() {
        let backoff = DomainBackoff {
            until: UNIX_EPOCH + Duration::from_secs(MAX_UNTIL),
            failures: u32::MAX,
            error: "  two\nlines\t ".into(),
        };
        let once = parse_backoff(render_backoff(&backoff).as_bytes()).expect("parses");
        assert_eq!(once.error, "two lines", "one line");
        let twice = parse_backoff(render_backoff(&once).as_bytes()).expect("parses");
        assert_eq!(once, twice, "stable");
    }

    #[test]
    fn remaining_is_cut_to_the_longest_wait() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let longest = Duration::from_secs(4000);
        let backoff = |until| DomainBackoff {
            until: UNIX_EPOCH + Duration::from_secs(until),
            failures: 1,
            error: String::new(),
        };
        let cases = [
            (500, None),
            (1_000, None),
            (1_300, Some(Duration::from_secs(300))),
            (MAX_UNTIL, Some(longest)),
        ];
        for (until, want) in cases {
            assert_eq!(
                backoff(until).remaining(now, longest),
                want,
                "until {until}"
            );
        }
    }

    #[test]
    fn special_files_links_and_big_files_are_refused_unread() {
        let (_root, queue) = queue();
        let dir = queue.layout().domain_dir("d.test");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(BACKOFF_FILE);
        type Make = fn(&std::path::Path);
        let cases: [(&str, Make, RefusedKind); 3] = [
            (
                "a FIFO",
                |p| {
                    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
                },
                RefusedKind::Fifo,
            ),
            (
                "a link to /dev/zero",
                |p| symlink("/dev/zero", p).unwrap(),
                RefusedKind::Link,
            ),
            (
                "a big file",
                |p| fs::write(p, vec![b'x'; 10_000]).unwrap(),
                RefusedKind::TooLarge {
                    limit: MAX_BACKOFF_FILE,
                },
            ),
        ];
        for (what, make, want) in cases {
            make(&path);
            let e = read_backoff(&queue, "d.test").expect_err(what);
            assert_eq!(refusal(&e).map(|r| r.kind), Some(want), "{what}: {e}");
            clear_backoff(&queue, "d.test").expect("the entry itself is removed");
            assert!(fs::symlink_metadata(&path).is_err(), "{what}: removed");
        }
        assert!(fs::metadata("/dev/zero").is_ok(), "the target stays");
    }

    #[test]
    fn a_garbled_backoff_is_invalid_data() {
        let (_root, queue) = queue();
        let dir = queue.layout().domain_dir("d.test");
        fs::create_dir_all(&dir).unwrap();
        for text in ["", "until: soon\nfailures: 1\n", "failures: 2\n"] {
            fs::write(dir.join(BACKOFF_FILE), text).unwrap();
            let err = read_backoff(&queue, "d.test").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{text:?}");
            assert!(
                err.get_ref()
                    .and_then(|e| e.downcast_ref::<BackoffError>())
                    .is_some(),
                "{text:?}: typed"
            );
        }
    }
}
