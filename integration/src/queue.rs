//! Queue files for the tests, in the on-disk format of DESIGN.md.
//!
//! `<root>/.OTHER_SERVERS/<domain>/<name>` holds the envelope block
//! (`X-Postman-From`, `X-Postman-Date`, `X-Postman-To`), one empty line and
//! the message (RFC 5322). Files are written into `<domain>/tmp/` and renamed
//! into place, as a real writer does. [`QueueState`] lists what remains:
//! queued files, claims in `.active/<owner>/`, `.failed/` and `.quarantine/`
//! with their `.reason` files. [`envelope_fields`] and [`set_envelope_field`]
//! read and edit a queued file's envelope block (postman's retry state
//! travels there as more `X-Postman-*` fields).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The folder of remote domains under the queue root.
pub const REMOTE_DIR: &str = ".OTHER_SERVERS";
/// Where permanent failures are set aside, inside a domain folder.
pub const FAILED_DIR: &str = ".failed";
/// Where unparseable files are set aside, inside a domain folder.
pub const QUARANTINE_DIR: &str = ".quarantine";
/// Where claimed files wait, one folder per owner, inside a domain folder.
pub const ACTIVE_DIR: &str = ".active";

/// A queue root in a temporary directory, removed when dropped.
pub struct TestQueue {
    dir: tempfile::TempDir,
}

impl Default for TestQueue {
    fn default() -> Self {
        TestQueue::new()
    }
}

impl TestQueue {
    /// An empty queue (`<root>/.OTHER_SERVERS/` exists).
    pub fn new() -> TestQueue {
        let dir = tempfile::Builder::new()
            .prefix("postman-queue-")
            .tempdir()
            .expect("create a temporary queue root");
        std::fs::create_dir_all(dir.path().join(REMOTE_DIR)).expect("create .OTHER_SERVERS");
        TestQueue { dir }
    }

    /// The queue root (`application.maildir.path`).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `<root>/.OTHER_SERVERS/<domain>`.
    pub fn domain_dir(&self, domain: &str) -> PathBuf {
        self.root().join(REMOTE_DIR).join(domain)
    }

    /// Queues `message` from `from` to `to` (addresses without angle
    /// brackets, `""` for the null sender) as `<domain>/<name>`, dated now,
    /// with LF line ends in the envelope block.
    pub fn add(
        &self,
        domain: &str,
        name: &str,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> PathBuf {
        self.add_raw(
            domain,
            name,
            &queue_file(from, to, unix_now(), message, "\n"),
        )
    }

    /// Queues the exact `bytes` as `<domain>/<name>` (through `tmp/` and a
    /// rename), for malformed or hand-made files.
    pub fn add_raw(&self, domain: &str, name: &str, bytes: &[u8]) -> PathBuf {
        write_queue_file(&self.domain_dir(domain), name, bytes)
    }

    /// What is in the queue now.
    pub fn state(&self) -> QueueState {
        QueueState::read(self.root())
    }
}

/// Writes `bytes` to `<domain_dir>/tmp/<name>` and renames it to
/// `<domain_dir>/<name>`; returns the final path.
pub fn write_queue_file(domain_dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let tmp_dir = domain_dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir)
        .unwrap_or_else(|e| panic!("create {}: {e}", tmp_dir.display()));
    let tmp = tmp_dir.join(name);
    let dest = domain_dir.join(name);
    std::fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &dest)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), dest.display()));
    dest
}

/// A queue file's bytes: envelope block with `eol` line ends, an empty
/// line, then `message` unchanged.
pub fn queue_file(from: &str, to: &[&str], date: u64, message: &[u8], eol: &str) -> Vec<u8> {
    let to = to
        .iter()
        .map(|a| format!("<{a}>"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = format!(
        "X-Postman-From: <{from}>{eol}X-Postman-Date: {date}{eol}X-Postman-To: {to}{eol}{eol}"
    )
    .into_bytes();
    out.extend_from_slice(message);
    out
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A message set aside with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The file's contents.
    pub bytes: Vec<u8>,
    /// The `<name>.reason` file's contents (`None` when it is missing).
    pub reason: Option<String>,
}

/// A snapshot of the queue, per domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Files waiting in `<domain>/`, sorted, per domain (domains with none
    /// are left out).
    pub queued: BTreeMap<String, Vec<String>>,
    /// `<domain>/.failed/<name>` per `(domain, name)`.
    pub failed: BTreeMap<(String, String), SetAside>,
    /// `<domain>/.quarantine/<name>` per `(domain, name)`.
    pub quarantined: BTreeMap<(String, String), SetAside>,
    /// Other regular files postman left in a domain's `tmp/` folder.
    pub tmp: BTreeMap<String, Vec<String>>,
    /// Claimed files, `<owner>/<name>`, sorted, per domain (domains with
    /// none are left out).
    pub active: BTreeMap<String, Vec<String>>,
}

impl QueueState {
    /// Reads the queue under `root`.
    pub fn read(root: &Path) -> QueueState {
        let mut state = QueueState::default();
        let remote = root.join(REMOTE_DIR);
        for domain in sorted_entries(&remote) {
            let dir = remote.join(&domain);
            // Dot folders (`.sites`) are postman's own, not domains.
            if !dir.is_dir() || domain.starts_with('.') {
                continue;
            }
            let queued: Vec<String> = sorted_entries(&dir)
                .into_iter()
                .filter(|n| !n.starts_with('.') && dir.join(n).is_file())
                .collect();
            if !queued.is_empty() {
                state.queued.insert(domain.clone(), queued);
            }
            let tmp: Vec<String> = sorted_entries(&dir.join("tmp"));
            if !tmp.is_empty() {
                state.tmp.insert(domain.clone(), tmp);
            }
            let active_dir = dir.join(ACTIVE_DIR);
            let active: Vec<String> = sorted_entries(&active_dir)
                .into_iter()
                .flat_map(|owner| {
                    sorted_entries(&active_dir.join(&owner))
                        .into_iter()
                        .map(move |name| format!("{owner}/{name}"))
                })
                .collect();
            if !active.is_empty() {
                state.active.insert(domain.clone(), active);
            }
            for (sub, map) in [
                (FAILED_DIR, &mut state.failed),
                (QUARANTINE_DIR, &mut state.quarantined),
            ] {
                let aside = dir.join(sub);
                for name in sorted_entries(&aside) {
                    if name.ends_with(".reason") || !aside.join(&name).is_file() {
                        continue;
                    }
                    let bytes = std::fs::read(aside.join(&name)).unwrap_or_default();
                    let reason = std::fs::read_to_string(aside.join(format!("{name}.reason"))).ok();
                    map.insert((domain.clone(), name), SetAside { bytes, reason });
                }
            }
        }
        state
    }

    /// Whether nothing is queued, claimed, failed, quarantined or left in
    /// `tmp/`.
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
            && self.active.is_empty()
            && self.failed.is_empty()
            && self.quarantined.is_empty()
            && self.tmp.is_empty()
    }

    /// Number of claimed files (in `.active/`), all domains.
    pub fn active_count(&self) -> usize {
        self.active.values().map(Vec::len).sum()
    }

    /// The names of the claimed files (without their owner folder), all
    /// domains.
    pub fn active_names(&self) -> Vec<String> {
        self.active
            .values()
            .flatten()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_owned())
            .collect()
    }

    /// Files still queued for `domain`.
    pub fn queued_in(&self, domain: &str) -> Vec<String> {
        self.queued.get(domain).cloned().unwrap_or_default()
    }

    /// Number of files still queued, all domains.
    pub fn queued_count(&self) -> usize {
        self.queued.values().map(Vec::len).sum()
    }

    /// Whether `<domain>/<name>` is still queued.
    pub fn is_queued(&self, domain: &str, name: &str) -> bool {
        self.queued
            .get(domain)
            .is_some_and(|v| v.iter().any(|n| n == name))
    }

    /// The failed entry `<domain>/.failed/<name>`, if any.
    pub fn failed_entry(&self, domain: &str, name: &str) -> Option<&SetAside> {
        self.failed.get(&(domain.to_string(), name.to_string()))
    }

    /// The quarantined entry `<domain>/.quarantine/<name>`, if any.
    pub fn quarantined_entry(&self, domain: &str, name: &str) -> Option<&SetAside> {
        self.quarantined
            .get(&(domain.to_string(), name.to_string()))
    }

    /// Where `<domain>/<name>` is now, in one word: "queued", "claimed",
    /// "failed", "quarantined" or "gone" (delivered, or lost).
    pub fn whereabouts(&self, domain: &str, name: &str) -> &'static str {
        let claimed = self
            .active
            .get(domain)
            .is_some_and(|v| v.iter().any(|p| p.rsplit('/').next() == Some(name)));
        if self.is_queued(domain, name) {
            "queued"
        } else if claimed {
            "claimed"
        } else if self.failed_entry(domain, name).is_some() {
            "failed"
        } else if self.quarantined_entry(domain, name).is_some() {
            "quarantined"
        } else {
            "gone"
        }
    }
}

/// A delivery status notification postman wrote: a queue file with the null
/// sender (for a remote sender) or a Maildir message (for a local one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounce {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// The whole file.
    pub bytes: Vec<u8>,
}

impl Bounce {
    /// The file as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

impl TestQueue {
    /// The bounces queued for remote delivery to `sender`: files in the
    /// sender's domain folder from `<>` to `<sender>`.
    pub fn bounces_to(&self, sender: &str) -> Vec<Bounce> {
        let Some((_, domain)) = sender.rsplit_once('@') else {
            return Vec::new();
        };
        let dir = self.domain_dir(domain);
        sorted_entries(&dir)
            .into_iter()
            .filter(|n| !n.starts_with('.') && dir.join(n).is_file())
            .filter_map(|n| {
                let path = dir.join(n);
                let bytes = std::fs::read(&path).ok()?;
                let text = String::from_utf8_lossy(&bytes).to_lowercase();
                let head = text.split("\n\n").next().unwrap_or("").to_owned()
                    + text.split("\r\n\r\n").next().unwrap_or("");
                let from_null = head.contains("x-postman-from: <>");
                let to_sender = head.contains(&format!("<{}>", sender.to_lowercase()));
                (from_null && to_sender).then_some(Bounce { path, bytes })
            })
            .collect()
    }

    /// The messages delivered into the local Maildir of `user`
    /// (`<root>/<user>/new/`): bounces to local senders.
    pub fn maildir_messages(&self, user: &str) -> Vec<Bounce> {
        let dir = self.root().join(user).join("new");
        sorted_entries(&dir)
            .into_iter()
            .filter_map(|n| {
                let path = dir.join(n);
                let bytes = std::fs::read(&path).ok()?;
                Some(Bounce { path, bytes })
            })
            .collect()
    }
}

impl TestQueue {
    /// Where `<domain>/<name>` is now: in the queue, or claimed in
    /// `<domain>/.active/<owner>/`; `None` when it is in neither.
    pub fn locate(&self, domain: &str, name: &str) -> Option<PathBuf> {
        let dir = self.domain_dir(domain);
        let queued = dir.join(name);
        if queued.is_file() {
            return Some(queued);
        }
        let active = dir.join(ACTIVE_DIR);
        sorted_entries(&active)
            .into_iter()
            .map(|owner| active.join(owner).join(name))
            .find(|p| p.is_file())
    }

    /// Every regular file under the root, as paths relative to it, sorted:
    /// what a test checks to prove that nothing was written anywhere. The
    /// status snapshot a run leaves for `postman queue summary`
    /// (`.OTHER_SERVERS/.status`) is postman's view of its sites, not
    /// mail, and is left out.
    pub fn all_files(&self) -> Vec<String> {
        let status = format!("{REMOTE_DIR}/.status");
        let mut out = Vec::new();
        collect_files(self.root(), self.root(), &mut out);
        out.retain(|f| *f != status);
        out.sort();
        out
    }
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for name in sorted_entries(dir) {
        let path = dir.join(&name);
        if path.is_dir() {
            collect_files(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

impl TestQueue {
    /// Everything under the root, with the envelope block of every file in
    /// the remote queue (queued, claimed, set aside), for assertion
    /// messages.
    pub fn describe(&self) -> String {
        let mut out = format!("{:#?}\n--- files ---\n", self.state());
        for f in self.all_files() {
            out.push_str(&f);
            out.push('\n');
            if f.starts_with(REMOTE_DIR) && !f.contains("/tmp/") {
                let bytes = std::fs::read(self.root().join(&f)).unwrap_or_default();
                let head = &bytes[..bytes.len() - message_part(&bytes).len()];
                for line in String::from_utf8_lossy(head).lines() {
                    out.push_str("    ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Makes a deferred message due now, as an operator's flush would: its
/// `X-Postman-Next-Attempt` is set one second into the past.
pub fn make_due(path: &Path) {
    let past = unix_now() - 1;
    set_envelope_field(path, "X-Postman-Next-Attempt", &past.to_string());
}

/// Unix seconds in envelope field `name`; panics naming the field when it
/// is missing or not a number.
pub fn field_secs(fields: &[(String, String)], name: &str) -> u64 {
    let value = field(fields, name).unwrap_or_else(|| panic!("no {name} in {fields:#?}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {value:?} is not unix seconds ({e}) in {fields:#?}"))
}

/// The fields of the envelope block at the start of `bytes` (up to the
/// first empty line), as `(name, value)` in file order, values trimmed and
/// folded lines joined (RFC 5322 §2.2.3). CRLF or LF line ends.
pub fn parse_envelope_fields(bytes: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) => fields.push((name.trim().to_owned(), value.trim().to_owned())),
            None => fields.push((line.to_owned(), String::new())),
        }
    }
    fields
}

/// The envelope fields in force for the queued file at `path` (see
/// [`parse_envelope_fields`]): its state file's (`<domain>/.state/<name>`)
/// when that names it, as postman reads it, else the file's own.
pub fn envelope_fields(path: &Path) -> Vec<(String, String)> {
    if let Some(state) = state_file_of(path) {
        let bytes =
            std::fs::read(&state).unwrap_or_else(|e| panic!("read {}: {e}", state.display()));
        return parse_envelope_fields(&bytes);
    }
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_envelope_fields(&bytes)
}

/// The field of a state file that names its queue file.
pub const QUEUE_FILE_FIELD: &str = "X-Postman-Queue-File";

/// The state file of the queued file at `path` (in its domain folder, held
/// or claimed), when there is one that names it (`X-Postman-Queue-File:
/// <size> <FNV-1a 64 of its envelope block>`).
pub fn state_file_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    let domain = path
        .ancestors()
        .find(|a| a.parent().and_then(Path::file_name) == Some(REMOTE_DIR.as_ref()))?;
    let state = domain.join(".state").join(name);
    let named = field(
        &parse_envelope_fields(&std::fs::read(&state).ok()?),
        QUEUE_FILE_FIELD,
    )?
    .to_owned();
    let bytes = std::fs::read(path).ok()?;
    let block = &bytes[..bytes.len() - message_part(&bytes).len()];
    let tie = format!("{} {:016x}", bytes.len(), fnv1a64(block));
    (named == tie).then_some(state)
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The value of envelope field `name` (case-insensitive) in `fields`.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The bytes after the envelope block of a queue file (the message).
pub fn message_part(bytes: &[u8]) -> &[u8] {
    for (i, w) in bytes.windows(2).enumerate() {
        if w == b"\n\n" {
            return &bytes[i + 2..];
        }
        if w == b"\n\r" && bytes.get(i + 2) == Some(&b'\n') {
            return &bytes[i + 3..];
        }
    }
    &[]
}

/// Sets envelope field `name` of the queued file at `path` to `value`
/// (replacing it where it is, or adding it at the end of the block), as an
/// operator's tool would: in its state file when it has one (see
/// [`state_file_of`]), else in the file itself; the new version is written
/// beside it and renamed over it, so postman never sees half a file. The
/// line ends and the message stay as they were.
pub fn set_envelope_field(path: &Path, name: &str, value: &str) {
    let state = state_file_of(path);
    let path = state.as_deref().unwrap_or(path);
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let body = message_part(&bytes);
    let block = &bytes[..bytes.len() - body.len()];
    let eol = if block.ends_with(b"\r\n\r\n") {
        "\r\n"
    } else {
        "\n"
    };
    let mut fields = parse_envelope_fields(&bytes);
    match fields
        .iter_mut()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
    {
        Some(field) => field.1 = value.to_owned(),
        None => fields.push((name.to_owned(), value.to_owned())),
    }
    let mut out = Vec::with_capacity(bytes.len() + name.len() + value.len());
    for (n, v) in &fields {
        out.extend_from_slice(format!("{n}: {v}{eol}").as_bytes());
    }
    out.extend_from_slice(eol.as_bytes());
    out.extend_from_slice(body);
    let tmp = path.with_file_name(format!(
        ".{}.edit",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    std::fs::write(&tmp, &out).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path)
        .unwrap_or_else(|e| panic!("rename {} to {}: {e}", tmp.display(), path.display()));
}

/// Names in `dir`, sorted; empty when `dir` does not exist.
fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Copies the tree at `from` into `to` (files and folders), creating `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("dir entry");
        let src = entry.path();
        let dst = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_fields_are_read_and_edited_in_place() {
        let q = TestQueue::new();
        let crlf = queue_file(
            "a@src.test",
            &["x@d.test"],
            1000,
            b"Subject: s\r\n\r\nbody\r\n",
            "\r\n",
        );
        let path = q.add_raw("d.test", "m1", &crlf);
        let fields = envelope_fields(&path);
        assert_eq!(field(&fields, "x-postman-date"), Some("1000"), "{fields:?}");
        assert_eq!(
            field(&fields, "X-Postman-To"),
            Some("<x@d.test>"),
            "{fields:?}"
        );
        set_envelope_field(&path, "X-Postman-Date", "7");
        set_envelope_field(&path, "X-Postman-Next-Attempt", "9");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            "X-Postman-From: <a@src.test>\r\nX-Postman-Date: 7\r\nX-Postman-To: <x@d.test>\r\n\
             X-Postman-Next-Attempt: 9\r\n\r\nSubject: s\r\n\r\nbody\r\n"
        );
        assert_eq!(message_part(&bytes), b"Subject: s\r\n\r\nbody\r\n");
        assert_eq!(q.locate("d.test", "m1"), Some(path.clone()));

        // A claimed file is found in its owner folder and counted.
        let claim = q.domain_dir("d.test").join(ACTIVE_DIR).join("host.1.2");
        std::fs::create_dir_all(&claim).unwrap();
        std::fs::rename(&path, claim.join("m1")).unwrap();
        assert_eq!(q.locate("d.test", "m1"), Some(claim.join("m1")));
        let s = q.state();
        assert_eq!(s.whereabouts("d.test", "m1"), "claimed");
        assert_eq!(s.active_names(), ["m1"]);
        assert!(!s.is_empty());
        assert_eq!(q.all_files(), [".OTHER_SERVERS/d.test/.active/host.1.2/m1"]);
    }

    #[test]
    fn written_files_are_listed_and_set_aside_ones_found() {
        let q = TestQueue::new();
        q.add(
            "d1.test",
            "m1",
            "a@src.test",
            &["x@d1.test", "y@d1.test"],
            b"Subject: hi\n\nbody\n",
        );
        q.add_raw("d2.test", "bad", b"garbage");
        let failed = q.domain_dir("d2.test").join(FAILED_DIR);
        std::fs::create_dir_all(&failed).unwrap();
        std::fs::write(failed.join("f1"), b"x").unwrap();
        std::fs::write(failed.join("f1.reason"), b"null MX").unwrap();

        let s = q.state();
        assert_eq!(s.queued_in("d1.test"), ["m1"]);
        assert_eq!(s.queued_in("d2.test"), ["bad"]);
        assert!(
            s.tmp.is_empty(),
            "tmp/ should be empty after the rename: {:?}",
            s.tmp
        );
        assert_eq!(s.whereabouts("d2.test", "f1"), "failed");
        assert_eq!(
            s.failed_entry("d2.test", "f1").unwrap().reason.as_deref(),
            Some("null MX")
        );
        assert_eq!(s.whereabouts("d1.test", "nope"), "gone");

        let bytes = std::fs::read(q.domain_dir("d1.test").join("m1")).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("X-Postman-From: <a@src.test>\nX-Postman-Date: "),
            "{text:?}"
        );
        assert!(
            text.ends_with("\nX-Postman-To: <x@d1.test>, <y@d1.test>\n\nSubject: hi\n\nbody\n"),
            "{text:?}"
        );
    }
}
