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

use std::fs;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::rewrite::sync_parent;
use super::state::one_line;
use super::{Layout, TMP_DIR};

/// The file name inside the domain folder (a dot name: never a queue entry).
pub const BACKOFF_FILE: &str = ".backoff";

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

/// Reads `<domain>/.backoff`. `Ok(None)` when there is none; a file that
/// cannot be understood is `InvalidData` (the caller can ignore it: the
/// worst case is one early retry).
pub fn read_backoff(layout: &Layout, domain: &str) -> io::Result<Option<DomainBackoff>> {
    let path = layout.domain_dir(domain).join(BACKOFF_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
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
            "error" => error = value.to_owned(),
            _ => {}
        }
    }
    match (until, failures) {
        (Some(until), Some(failures)) => Ok(Some(DomainBackoff {
            until: UNIX_EPOCH + Duration::from_secs(until),
            failures,
            error,
        })),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} lacks an until: or failures: line", path.display()),
        )),
    }
}

/// Writes `<domain>/.backoff` crash-safely (tmp file, fsync, rename).
pub fn write_backoff(layout: &Layout, domain: &str, backoff: &DomainBackoff) -> io::Result<()> {
    let dir = layout.domain_dir(domain);
    let tmp_dir = dir.join(TMP_DIR);
    fs::create_dir_all(&tmp_dir)?;
    let tmp = tmp_dir.join(format!("{BACKOFF_FILE}.{}.tmp", std::process::id()));
    let until = backoff
        .until
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let text = format!(
        "until: {until}\nfailures: {}\nerror: {}\n",
        backoff.failures,
        one_line(&backoff.error)
    );
    let result = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        let target = dir.join(BACKOFF_FILE);
        fs::rename(&tmp, &target)?;
        sync_parent(&target)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes `<domain>/.backoff`; none is fine.
pub fn clear_backoff(layout: &Layout, domain: &str) -> io::Result<()> {
    match fs::remove_file(layout.domain_dir(domain).join(BACKOFF_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_backoff_reads_back_and_clears() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        assert_eq!(
            read_backoff(&layout, "d.test").unwrap(),
            None,
            "no file yet"
        );
        let backoff = DomainBackoff {
            until: UNIX_EPOCH + Duration::from_secs(1_764_250_300),
            failures: 3,
            error: "connect to mx.d.test[192.0.2.1]:25:\nConnection refused".into(),
        };
        write_backoff(&layout, "d.test", &backoff).unwrap();
        let read = read_backoff(&layout, "d.test").unwrap().unwrap();
        assert_eq!(read.until, backoff.until, "until survives");
        assert_eq!(read.failures, 3, "failures survive");
        assert_eq!(
            read.error, "connect to mx.d.test[192.0.2.1]:25: Connection refused",
            "the error is kept on one line"
        );
        let tmp = layout.domain_dir("d.test").join(TMP_DIR);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "no temp file left");
        clear_backoff(&layout, "d.test").unwrap();
        assert_eq!(read_backoff(&layout, "d.test").unwrap(), None, "cleared");
        clear_backoff(&layout, "d.test").unwrap();
    }

    #[test]
    fn a_garbled_backoff_is_invalid_data() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(root.path());
        fs::create_dir_all(layout.domain_dir("d.test")).unwrap();
        for text in ["", "until: soon\nfailures: 1\n", "failures: 2\n"] {
            fs::write(layout.domain_dir("d.test").join(BACKOFF_FILE), text).unwrap();
            let err = read_backoff(&layout, "d.test").unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{text:?}");
        }
    }
}
