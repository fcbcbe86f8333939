//! Helpers for the tests of the operator's side of the queue: a queue in
//! a temporary folder, queue files with retry state, a fixed clock.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::QueueRef;
use crate::queue::{Layout, Queue};

/// The tests' "now".
pub const NOW: u64 = 1_764_250_000;

/// `NOW`-relative times: unix seconds as a `SystemTime`.
pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// An empty queue (`.OTHER_SERVERS` exists) in a temporary folder.
pub fn setup() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::create(Layout::new(dir.path())).expect("open the queue");
    (dir, queue)
}

/// The names of the queued files of `domain`, sorted.
pub fn messages(layout: &Layout, domain: &str) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(layout.domain_dir(domain)) {
        Ok(entries) => entries
            .map(|e| e.expect("entry"))
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A queue file from `from` to `to`, arrived at `date`, with `extra`
/// header lines (e.g. retry state) and a small message.
pub fn file(from: &str, to: &[&str], date: u64, extra: &str) -> Vec<u8> {
    let to: Vec<String> = to.iter().map(|a| format!("<{a}>")).collect();
    format!(
        "X-Postman-From: <{from}>\nX-Postman-Date: {date}\nX-Postman-To: {}\n{extra}\nSubject: hello\nMessage-ID: <m@src.test>\n\nbody line\n",
        to.join(", ")
    )
    .into_bytes()
}

/// Writes `bytes` as `<domain>/<sub>/<name>` (`sub` "" for the queue).
pub fn put(layout: &Layout, domain: &str, sub: &str, name: &str, bytes: &[u8]) -> PathBuf {
    let dir = layout.domain_dir(domain).join(sub);
    fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write");
    path
}

/// Writes `bytes` as the queued file `<domain>/<name>`.
pub fn queued(layout: &Layout, domain: &str, name: &str, bytes: &[u8]) -> PathBuf {
    put(layout, domain, "", name, bytes)
}

/// A parsed queue id.
pub fn r(given: &str) -> QueueRef {
    QueueRef::parse(given).unwrap_or_else(|e| panic!("parse {given:?}: {e}"))
}

/// Retry headers of a message tried twice, due again at `next`.
pub fn deferred_extra(next: u64) -> String {
    format!(
        "X-Postman-Attempts: 2\nX-Postman-First-Attempt: {}\nX-Postman-Last-Attempt: {}\nX-Postman-Next-Attempt: {next}\nX-Postman-Last-Error: host mx.d1.test[192.0.2.1]:25 said: 451 4.7.1 try later\n",
        NOW - 600,
        NOW - 60
    )
}
