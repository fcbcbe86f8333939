//! See hostile_input.rs. Links, special files and odd names under the
//! queue root (issue 22, defects 3, 4, 5, 7, 9) and start-up recovery
//! beside a different message of the same name (defect 11). Whatever is
//! planted, nothing outside the root is read, written or removed, no FIFO
//! hangs a thread, and what is refused is logged once.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::stat::Mode;
use postman_integration::hostile::Script;
use postman_integration::queue::{queue_file, unix_now, write_queue_file};
use postman_integration::{
    postman, Config, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};

use super::common::{check, config, message, refusing, LOCAL_DOMAIN, STOP_WITHIN};

/// How long a `run --once` may take here: a few local deliveries.
const WITHIN: Duration = Duration::from_secs(30);

/// Domains whose MX is the one polite server.
const DOMAINS: [&str; 4] = ["d1.test", "d2.test", "d3.test", "evil.test"];

/// A queue, DNS for [`DOMAINS`] and `src.test` pointing at one polite
/// server, and a config for all of it.
struct Case {
    server: HostileServer,
    _dns: DnsServer,
    queue: TestQueue,
    config: Config,
}

impl Case {
    fn new() -> Case {
        Case::with(Script::polite())
    }

    /// Every connection to the server plays `script`.
    fn with(script: Script) -> Case {
        let net = TestNet::new();
        let server = HostileServer::start(net.addr(1), vec![script]);
        let mut zones = Zones::new().a("mx.files.test", net.ipv4(1));
        for domain in DOMAINS.iter().chain(&["src.test"]) {
            zones = zones.mx(domain, 10, "mx.files.test");
        }
        let dns = DnsServer::start(zones);
        let queue = TestQueue::new();
        let config = config(&queue, &net, &dns);
        Case {
            server,
            _dns: dns,
            queue,
            config,
        }
    }

    /// Queues a message `tag` from a@src.test to `u@<domain>` as
    /// `<domain>/<name>`; its Message-ID is `<tag@src.test>`.
    fn add(&self, domain: &str, name: &str, tag: &str) -> PathBuf {
        let to = format!("u@{domain}");
        self.queue
            .add(domain, name, "a@src.test", &[&to], &message(tag, "x\n"))
    }

    fn run(&self) -> RunOutput {
        let out = postman!().run_once_within(&self.config.write(), WITHIN);
        out.assert_success();
        out
    }

    fn postman(&self, args: &[&str]) -> RunOutput {
        let file = self.config.write();
        let path = file.path().to_string_lossy().into_owned();
        let mut all = vec![args[0], "--config", &path];
        all.extend_from_slice(&args[1..]);
        postman!().run(&all, WITHIN)
    }

    /// The Message-IDs the server received, without their angle brackets,
    /// sorted.
    fn received(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .server
            .message_ids()
            .iter()
            .map(|id| id.trim_matches(['<', '>']).to_owned())
            .collect();
        ids.sort();
        ids
    }
}

/// Every entry under `dir` (not following links) with what it holds: a
/// file's bytes, a link's target, `<dir>` or `<special>`; and its mtime.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let what = if meta.file_type().is_symlink() {
                format!(
                    "-> {}",
                    std::fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                stack.push(path.clone());
                "<dir>".to_owned()
            } else if meta.is_file() {
                String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned()
            } else {
                "<special>".to_owned()
            };
            out.insert(path, (what, meta.modified().ok()));
        }
    }
    out
}

/// A folder outside the queue holding what a domain folder would: a queue
/// file, an old file in `tmp/`, and folders postman makes.
fn outside_queue_folder(tag: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("outside");
    let bytes = queue_file(
        "a@src.test",
        &["u@evil.test"],
        unix_now(),
        &message(tag, "must never be sent\n"),
        "\n",
    );
    std::fs::write(dir.path().join("m1"), &bytes).expect("write");
    std::fs::write(dir.path().join("garbage"), b"not a queue file\n").expect("write");
    std::fs::create_dir(dir.path().join("tmp")).expect("mkdir");
    let old = dir.path().join("tmp/old-leftover");
    std::fs::write(&old, b"older than 36 hours").expect("write");
    let long_ago = SystemTime::now() - Duration::from_secs(40 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .and_then(|f| f.set_modified(long_ago))
        .expect("age it");
    dir
}

/// How many log records have `msg`.
fn count(out: &str, msg: &str) -> usize {
    out.lines()
        .filter(|l| l.contains(&format!("\"msg\":\"{msg}\"")))
        .count()
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Makes `make(tmp)` in `<domain>/tmp/` and renames it to `<domain>/<name>`,
/// as a writer of the queue would put a file in.
fn rename_in(queue: &TestQueue, domain: &str, name: &str, make: impl FnOnce(&Path)) {
    let tmp = queue.domain_dir(domain).join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir tmp");
    let at = tmp.join(format!("{name}.planted"));
    make(&at);
    std::fs::rename(&at, queue.domain_dir(domain).join(name)).expect("rename in");
}

// ---- defect 3: .backoff read blindly ------------------------------------

/// `<domain>/.backoff` planted by `plant` (`what` names it) is refused or
/// rejected, logged with `why`, and taken as no backoff: both domains are
/// delivered, and `postman queue summary` and `postman flush` work over it.
fn assert_backoff_refused(what: &str, why: &str, plant: fn(&Path)) {
    let case = Case::new();
    case.add("d1.test", "m1", "backoff1");
    case.add("d2.test", "m2", "backoff2");
    let backoff = case.queue.domain_dir("d1.test").join(".backoff");
    plant(&backoff);
    let out = case.run();
    check(
        case.received() == ["backoff1@src.test", "backoff2@src.test"],
        &format!("{what}: both domains delivered"),
        &case.queue,
        &out,
    );
    check(
        out.stderr
            .lines()
            .any(|l| l.contains("ignoring an unreadable domain backoff file") && l.contains(why)),
        &format!("{what}: logged, saying {why:?}"),
        &case.queue,
        &out,
    );
    // The operator commands over the same file.
    let _ = std::fs::remove_file(&backoff);
    plant(&backoff);
    case.add("d1.test", "m3", "backoff3");
    let summary = case.postman(&["queue", "summary"]);
    summary.assert_success();
    check(
        summary.stdout.contains("d1.test"),
        &format!("{what}: queue summary lists the domain"),
        &case.queue,
        &summary,
    );
    let flush = case.postman(&["flush"]);
    flush.assert_success();
    assert!(
        std::fs::symlink_metadata(&backoff).is_err(),
        "{what}: flush removed the entry itself"
    );
}

/// A FIFO as `.backoff`: the dispatcher blocked opening it for ever.
#[test]
fn a_fifo_as_backoff_is_refused() {
    assert_backoff_refused("a FIFO", "is a FIFO", mkfifo);
}

/// A link to /dev/zero as `.backoff`: it was read until memory ran out.
#[test]
fn a_link_to_dev_zero_as_backoff_is_refused() {
    assert_backoff_refused("a link to /dev/zero", "is a symbolic link", |p| {
        symlink("/dev/zero", p).expect("link")
    });
    assert!(std::fs::metadata("/dev/zero").is_ok(), "still there");
}

/// An `until` past what a time can hold: the dispatcher, `flush` and
/// `queue summary` panicked adding it to the epoch.
#[test]
fn an_until_past_any_time_is_rejected() {
    assert_backoff_refused("an until past any time", "after the year 9999", |p| {
        std::fs::write(p, "until: 9223372036854775808\nfailures: 3\nerror: x\n").expect("write")
    });
}

// ---- defect 4: linked folders --------------------------------------------

/// A domain folder that is a link to a folder outside the queue: nothing
/// there is read, written or removed (its old tmp/ file survives the
/// sweep, its files are neither sent nor quarantined, no .active is made),
/// the folder is logged once however many rescans pass, and the rest of
/// the queue is delivered.
#[test]
fn a_linked_domain_folder_is_never_entered() {
    let mut case = Case::new();
    let outside = outside_queue_folder("outside1");
    let before = snapshot(outside.path());
    symlink(outside.path(), case.queue.domain_dir("evil.test")).expect("link");
    case.add("d1.test", "m1", "inside1");
    case.config.rescan_interval = 1;
    let mut daemon = postman!().spawn_daemon(&case.config.write());
    assert!(
        case.server.wait_bodies(1, Duration::from_secs(15)),
        "the real domain is delivered:\n{}",
        daemon.log_text()
    );
    // A few rescans.
    std::thread::sleep(Duration::from_millis(2500));
    daemon.terminate(STOP_WITHIN).expect("stops");
    let log = daemon.log_text();
    assert_eq!(case.received(), ["inside1@src.test"], "{log}");
    assert_eq!(
        snapshot(outside.path()),
        before,
        "outside untouched:\n{log}"
    );
    assert_eq!(
        count(
            &log,
            "queue folder refused: it is not entered and its mail is not delivered"
        ),
        1,
        "logged once:\n{log}"
    );
}

/// A linked `.quarantine` (an unparseable file would be moved through it)
/// and a linked `.active` (a claim would be made in it): each is refused,
/// nothing outside changes, and the files stay where they are.
#[test]
fn linked_quarantine_and_active_folders_are_refused() {
    let case = Case::new();
    let quarantine_out = tempfile::tempdir().expect("outside");
    let active_out = tempfile::tempdir().expect("outside");
    let (before_q, before_a) = (snapshot(quarantine_out.path()), snapshot(active_out.path()));
    case.queue
        .add_raw("d1.test", "garbage", b"no envelope here\n");
    symlink(
        quarantine_out.path(),
        case.queue.domain_dir("d1.test").join(".quarantine"),
    )
    .expect("link");
    case.add("d2.test", "m2", "claimed2");
    symlink(
        active_out.path(),
        case.queue.domain_dir("d2.test").join(".active"),
    )
    .expect("link");
    case.add("d3.test", "m3", "fine3");
    let out = case.run();
    assert_eq!(snapshot(quarantine_out.path()), before_q, "{}", out.stderr);
    assert_eq!(snapshot(active_out.path()), before_a, "{}", out.stderr);
    let state = case.queue.state();
    check(
        state.is_queued("d1.test", "garbage"),
        "the unparseable file stays where it is",
        &case.queue,
        &out,
    );
    check(
        state.is_queued("d2.test", "m2"),
        "the message that cannot be claimed stays queued",
        &case.queue,
        &out,
    );
    check(
        case.received() == ["fine3@src.test"],
        "the rest is delivered",
        &case.queue,
        &out,
    );
}

/// A bounce to a local sender whose mailbox `<root>/mallory` is a link to a
/// folder outside the queue: nothing is written there.
#[test]
fn a_bounce_to_a_linked_mailbox_writes_nothing_outside() {
    let mut case = Case::with(refusing("550 5.1.1 no such user"));
    case.config.local_domains = Some(vec![LOCAL_DOMAIN.to_owned()]);
    let outside = tempfile::tempdir().expect("outside");
    let before = snapshot(outside.path());
    symlink(outside.path(), case.queue.root().join("mallory")).expect("link");
    let sender = format!("mallory@{LOCAL_DOMAIN}");
    case.queue.add(
        "d3.test",
        "m3",
        &sender,
        &["nobody@d3.test"],
        &message("bounced3", "refused\n"),
    );
    let out = case.run();
    check(
        case.server.count_commands("RCPT") == 1,
        "the recipient was refused",
        &case.queue,
        &out,
    );
    assert_eq!(snapshot(outside.path()), before, "{}", out.stderr);
    check(
        out.stderr.contains("cannot write the bounce"),
        "the refused bounce is logged",
        &case.queue,
        &out,
    );
}

// ---- defect 7: links on the inotify path ---------------------------------

/// With the daemon running, a link to a queue file outside the root is
/// renamed into a domain folder (an `IN_MOVED_TO` event): it is
/// quarantined as the link it is, its target's contents are never sent,
/// and the target is untouched. A full scan treats it the same way.
#[test]
fn a_link_renamed_in_while_the_daemon_runs_is_quarantined_unread() {
    let case = Case::new();
    let outside = outside_queue_folder("secret7");
    let before = snapshot(outside.path());
    let target = outside.path().join("m1");
    let mut daemon = postman!().spawn_daemon(&case.config.write());
    assert!(
        daemon.wait_for(Duration::from_secs(10), |records| records
            .iter()
            .any(|r| r["msg"] == "queue scanned")),
        "the first scan ends:\n{}",
        daemon.log_text()
    );
    rename_in(&case.queue, "d1.test", "linked", |at| {
        symlink(&target, at).expect("link")
    });
    // A message behind it, to know the daemon got that far.
    case.add("d1.test", "after", "after7");
    assert!(
        case.server.wait_bodies(1, Duration::from_secs(15)),
        "the message after it is delivered:\n{}",
        daemon.log_text()
    );
    let quarantined = case.queue.domain_dir("d1.test").join(".quarantine/linked");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::symlink_metadata(&quarantined).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.terminate(STOP_WITHIN).expect("stops");
    let log = daemon.log_text();
    assert_eq!(case.received(), ["after7@src.test"], "{log}");
    assert!(
        std::fs::symlink_metadata(&quarantined).is_ok_and(|m| m.file_type().is_symlink()),
        "the link itself is in .quarantine:\n{log}"
    );
    assert_eq!(
        snapshot(outside.path()),
        before,
        "outside untouched:\n{log}"
    );
}

// ---- defect 5: a FIFO in place of a queued file ---------------------------

/// A FIFO renamed into a domain folder, and one renamed over a file the
/// scanner already reported (due two seconds later), with one disk thread:
/// neither hangs it, other domains keep being delivered, and SIGTERM stops
/// the daemon within its promise.
#[test]
fn a_fifo_in_the_queue_hangs_nothing() {
    let mut case = Case::new();
    case.config.extra = "disk_threads = 1\n".to_owned();
    case.config.threads = 1;
    // Reported at start, due in two seconds.
    let due = unix_now() + 2;
    let deferred = format!(
        "X-Postman-Attempts: 1\nX-Postman-First-Attempt: {0}\nX-Postman-Last-Attempt: {0}\nX-Postman-Next-Attempt: {due}\n",
        unix_now()
    );
    let mut bytes = queue_file(
        "a@src.test",
        &["u@d2.test"],
        unix_now(),
        &message("swapped5", "x\n"),
        "\n",
    );
    let split = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("block end")
        + 1;
    bytes.splice(split..split, deferred.bytes());
    write_queue_file(&case.queue.domain_dir("d2.test"), "m2", &bytes);
    let mut daemon = postman!().spawn_daemon(&case.config.write());
    assert!(
        daemon.wait_for(Duration::from_secs(10), |records| records
            .iter()
            .any(|r| r["msg"] == "queue scanned" && r["files"] == 1)),
        "m2 is reported:\n{}",
        daemon.log_text()
    );
    rename_in(&case.queue, "d1.test", "fifo", mkfifo);
    rename_in(&case.queue, "d2.test", "m2", mkfifo);
    // Past m2's due time, other domains still go out.
    std::thread::sleep(Duration::from_millis(2500));
    case.add("d3.test", "m3", "other5");
    assert!(
        case.server.wait_bodies(1, Duration::from_secs(15)),
        "another domain is delivered:\n{}",
        daemon.log_text()
    );
    let stopped = Instant::now();
    let status = daemon.terminate(STOP_WITHIN);
    let log = daemon.log_text();
    assert!(status.is_some(), "the daemon ignored SIGTERM:\n{log}");
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "stopped in {:?}:\n{log}",
        stopped.elapsed()
    );
    assert_eq!(case.received(), ["other5@src.test"], "{log}");
    for (domain, name) in [("d1.test", "fifo"), ("d2.test", "m2")] {
        let aside = case.queue.domain_dir(domain).join(".quarantine").join(name);
        assert!(
            std::fs::symlink_metadata(&aside).is_ok_and(|m| !m.is_file()),
            "{domain}/{name} quarantined as it is:\n{log}"
        );
    }
}

// ---- defect 9: names that are not UTF-8 ------------------------------------

/// A queue file whose name is not UTF-8 is listed by `postman queue`,
/// renamed to an escaped name (old and new in the log) and delivered; a
/// domain folder whose name is not UTF-8 is refused and said once.
#[test]
fn names_that_are_not_utf8_are_seen_renamed_and_delivered() {
    let case = Case::new();
    let raw = OsStr::from_bytes(b"caf\xe9");
    let bytes = queue_file(
        "a@src.test",
        &["u@d1.test"],
        unix_now(),
        &message("latin9", "x\n"),
        "\n",
    );
    let dir = case.queue.domain_dir("d1.test");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(raw), &bytes).expect("write");
    let odd_domain = case
        .queue
        .root()
        .join(".OTHER_SERVERS")
        .join(OsStr::from_bytes(b"d\xff.test"));
    std::fs::create_dir_all(&odd_domain).expect("mkdir");
    std::fs::write(odd_domain.join("m1"), &bytes).expect("write");

    let listing = case.postman(&["queue"]);
    listing.assert_success();
    check(
        listing.stdout.contains("caf\\xE9"),
        "postman queue shows it",
        &case.queue,
        &listing,
    );
    let out = case.run();
    check(
        case.received() == ["latin9@src.test"],
        "delivered once",
        &case.queue,
        &out,
    );
    check(
        count(
            &out.stderr,
            "queue file name is not UTF-8: renamed to deliver it",
        ) == 1
            && out.stderr.contains("caf\\\\xE9"),
        "the rename is logged with the new name",
        &case.queue,
        &out,
    );
    check(
        count(
            &out.stderr,
            "queue folder refused: it is not entered and its mail is not delivered",
        ) == 1,
        "the folder is refused, once",
        &case.queue,
        &out,
    );
    assert!(
        odd_domain.join("m1").exists(),
        "the refused folder is left alone"
    );
}

// ---- defect 11: recovery beside another message of the same name -----------

/// A dead postman's claim `.active/<dead>/m1` beside a different queued
/// `m1`: recovery keeps both (the claim goes back as `m1.1`, logged), and
/// both are delivered.
#[test]
fn recovery_keeps_a_different_message_of_the_same_name() {
    let case = Case::new();
    case.add("d1.test", "m1", "queued11");
    let host = nix::unistd::gethostname()
        .expect("hostname")
        .into_string()
        .expect("UTF-8 hostname")
        .replace(['/', '\0'], "_");
    let dead = format!("{host}.4194304999.1");
    let claim_dir = case.queue.domain_dir("d1.test").join(".active").join(&dead);
    let bytes = queue_file(
        "a@src.test",
        &["v@d1.test"],
        unix_now(),
        &message("claimed11", "x\n"),
        "\n",
    );
    std::fs::create_dir_all(&claim_dir).expect("mkdir");
    std::fs::write(claim_dir.join("m1"), &bytes).expect("write");
    let out = case.run();
    check(
        case.received() == ["claimed11@src.test", "queued11@src.test"],
        "both messages delivered",
        &case.queue,
        &out,
    );
    check(
        out.stderr.contains("went back under a new name") && out.stderr.contains("m1.1"),
        "the rename is logged",
        &case.queue,
        &out,
    );
}
