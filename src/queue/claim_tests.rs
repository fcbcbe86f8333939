//! Tests of claims, each in its own temporary directory.

use super::*;
use crate::queue::{parse_envelope, Envelope, Layout};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Barrier;
use std::time::UNIX_EPOCH;

const MESSAGE: &[u8] =
    b"X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";

fn queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::create(Layout::new(dir.path())).expect("open the queue");
    (dir, queue)
}

/// The envelope of the file at `path`, read without the queue's handles.
fn envelope_at(path: &Path) -> Envelope {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_envelope(&bytes).expect("envelope")
}

/// The names of the regular files in `domain`'s folder, sorted.
fn messages(layout: &Layout, domain: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(layout.domain_dir(domain))
        .expect("list")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn put(layout: &Layout, domain: &str, name: &str, contents: &[u8]) -> PathBuf {
    let path = layout.message_path(domain, name);
    fs::create_dir_all(layout.tmp_dir(domain)).expect("mkdir domain/tmp");
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn claimed(queue: &Queue, domain: &str, name: &str, owner: &str) -> Claimed {
    claim(queue, domain, name, owner)
        .unwrap_or_else(|e| panic!("claim {domain}/{name} for {owner}: {e}"))
        .unwrap_or_else(|| panic!("{domain}/{name} is gone"))
}

#[test]
fn claim_moves_the_file_out_of_sight() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let path = put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "host.42.1700000000");
    let want = layout
        .domain_dir("d.test")
        .join(".active/host.42.1700000000/m1");
    assert_eq!(c.path(), want, "claim path");
    assert_eq!(c.queue_path(), path, "queue path");
    assert_eq!(
        (c.domain(), c.name(), c.owner()),
        ("d.test", "m1", "host.42.1700000000"),
        "parts"
    );
    assert!(!path.exists(), "gone from the queue");
    assert_eq!(fs::read(c.path()).expect("read claim"), MESSAGE, "contents");
    assert!(
        messages(&layout, "d.test").is_empty(),
        "the scanner does not list claims"
    );
    assert!(
        claim(&queue, "d.test", "m1", "other.1.1")
            .expect("second claim")
            .is_none(),
        "already claimed"
    );
    assert!(
        claim(&queue, "d.test", "never", "o")
            .expect("missing")
            .is_none(),
        "never existed"
    );
    c.release().expect("release");
    assert_eq!(
        fs::read(&path).expect("read back"),
        MESSAGE,
        "released unchanged"
    );
}

#[test]
fn claim_refuses_bad_components() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let cases = [
        ("d.test", "m1", "a/b"),
        ("d.test", "m1", ""),
        ("d.test", "m1", ".."),
        ("d.test", "m1", "."),
        ("d.test", "m1", "nul\0"),
        ("d.test", "../m1", "o"),
        ("d.test", "", "o"),
        ("..", "m1", "o"),
    ];
    for (domain, name, owner) in cases {
        let err = claim(&queue, domain, name, owner)
            .expect_err(&format!("{domain:?} {name:?} {owner:?}"));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{owner:?}: {err}");
    }
    assert!(layout.message_path("d.test", "m1").exists(), "untouched");
}

#[test]
fn complete_removes_the_claim() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let path = put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "o1");
    let claim_path = c.path();
    c.complete().expect("complete");
    assert!(!claim_path.exists(), "claim removed");
    assert!(!path.exists(), "not back in the queue");
}

/// The claimed message as it stands, with its state file.
fn queued_of(c: &Claimed) -> Queued {
    let (mut file, meta) = c.open().expect("open the claim");
    c.read_queued(&mut file, meta.len())
        .expect("read the claim")
}

/// A state block for `c`'s message: `recipients` pending, one attempt.
fn state_for(c: &Claimed, recipients: &[&str]) -> Vec<u8> {
    let queued = queued_of(c);
    let mut state = queued.retry.clone();
    state.record_attempt(UNIX_EPOCH + Duration::from_secs(2000), "451 later");
    let recipients: Vec<String> = recipients.iter().map(|r| r.to_string()).collect();
    let arrival = queued.envelope.arrival.expect("dated");
    state
        .render_state(&queued.envelope, &recipients, arrival, queued.tie)
        .expect("block")
        .remove(0)
        .bytes
}

const TWO: &[u8] = b"X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>, <b@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";

fn tmp_names(layout: &Layout, domain: &str) -> Vec<String> {
    fs::read_dir(layout.tmp_dir(domain))
        .map(|d| {
            d.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_state_is_recorded_beside_the_queue_file_which_is_never_written() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let path = put(&layout, "d.test", "m1", TWO);
    let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("stat"));
    let mut c = claimed(&queue, "d.test", "m1", "o1");
    c.reserve(4096).expect("reserve");
    assert_eq!(tmp_names(&layout, "d.test").len(), 1, "the reservation");
    let state = state_for(&c, &["b@d.test"]);
    let claim_path = c.path();
    match c.record_and_release(&state, &[]) {
        Ok(Recorded::Released) => {}
        other => panic!("{other:?}"),
    }
    assert!(!claim_path.exists(), "claim given back");
    assert_eq!(
        fs::read(&path).expect("read"),
        TWO,
        "the queue file as it was"
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).expect("stat")),
        inode,
        "the same file"
    );
    assert_eq!(
        fs::read(layout.domain_dir("d.test").join(".state/m1")).expect("state file"),
        state,
        "the state file"
    );
    assert!(
        tmp_names(&layout, "d.test").is_empty(),
        "the reservation used"
    );
    let c = claimed(&queue, "d.test", "m1", "o1");
    let queued = queued_of(&c);
    assert_eq!(queued.source, crate::queue::Source::StateFile);
    assert_eq!(queued.envelope.recipients, ["b@d.test"], "pending");
    assert_eq!(queued.retry.attempts, 1, "retry state");
    assert_eq!(
        queued.envelope.body_offset,
        envelope_at(&c.path()).body_offset
    );
    c.complete().expect("complete");
    assert!(
        !layout.domain_dir("d.test").join(".state/m1").exists(),
        "the state file goes with the message"
    );
}

#[test]
fn a_state_that_cannot_be_recorded_keeps_the_claim_for_another_try() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", TWO);
    // `.state` is a file: no state file can be put there.
    fs::write(layout.domain_dir("d.test").join(".state"), b"in the way").expect("write");
    let mut c = claimed(&queue, "d.test", "m1", "o1");
    c.reserve(4096).expect("reserve");
    let state = state_for(&c, &["b@d.test"]);
    let Err(unrecorded) = c.record_and_release(&state, &[]) else {
        panic!("recorded through a file in the way");
    };
    let Unrecorded { claimed: c, error } = *unrecorded;
    assert!(c.path().exists(), "still claimed after {error}");
    assert!(c.reserved(), "the reservation kept");
    assert!(
        !messages(&layout, "d.test").contains(&"m1".to_owned()),
        "not back"
    );
    fs::remove_file(layout.domain_dir("d.test").join(".state")).expect("rm");
    match c.record_and_release(&state, &[]) {
        Ok(Recorded::Released) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        messages(&layout, "d.test").contains(&"m1".to_owned()),
        "back in the queue"
    );
    assert!(
        tmp_names(&layout, "d.test").is_empty(),
        "the reservation used"
    );
}

#[test]
fn recipients_beyond_one_block_go_on_as_a_second_name_of_the_file() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let path = put(&layout, "d.test", "m1", TWO);
    let c = claimed(&queue, "d.test", "m1", "o1");
    let state = state_for(&c, &["a@d.test"]);
    let split_state = state_for(&c, &["b@d.test"]);
    let split = vec![("m1-2".to_owned(), split_state.clone())];
    match c.record_and_release(&state, &split) {
        Ok(Recorded::Released) => {}
        other => panic!("{other:?}"),
    }
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&fs::metadata(p).expect("stat"));
    assert_eq!(
        ino(&layout.message_path("d.test", "m1-2")),
        ino(&path),
        "one file, two names"
    );
    for (name, rcpt) in [("m1", "a@d.test"), ("m1-2", "b@d.test")] {
        let c = claimed(&queue, "d.test", name, "o1");
        assert_eq!(queued_of(&c).envelope.recipients, [rcpt], "{name}");
        c.release().expect("release");
    }
}

#[test]
fn a_released_or_finished_claim_gives_its_reservation_back() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", TWO);
    put(&layout, "d.test", "m2", TWO);
    let mut c = claimed(&queue, "d.test", "m1", "o1");
    c.reserve(10_000).expect("reserve");
    let names = tmp_names(&layout, "d.test");
    assert_eq!(names.len(), 1, "{names:?}");
    let reserved = fs::read(layout.tmp_dir("d.test").join(&names[0])).expect("read");
    assert_eq!(reserved.len(), 10_000, "its size");
    assert!(reserved.iter().all(|&b| b == 0), "zeros");
    c.release().expect("release");
    assert!(
        tmp_names(&layout, "d.test").is_empty(),
        "given back on release"
    );
    let mut c = claimed(&queue, "d.test", "m2", "o1");
    c.reserve(100).expect("reserve");
    let Marked::Removed(leftover) = c.remove_delivered() else {
        panic!("not removed");
    };
    assert_eq!(
        tmp_names(&layout, "d.test").len(),
        1,
        "until the leftover goes"
    );
    leftover.remove().expect("remove the leftover");
    assert!(
        tmp_names(&layout, "d.test").is_empty(),
        "given back when delivered"
    );
}

#[test]
fn recovery_puts_a_filled_reservation_in_place_and_drops_an_empty_one() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", TWO);
    put(&layout, "d.test", "m2", TWO);
    // m1: the state was written into the reservation, the rename failed,
    // and the process stopped.
    fs::write(layout.domain_dir("d.test").join(".state"), b"in the way").expect("write");
    let mut c = claimed(&queue, "d.test", "m1", "dead.1");
    c.reserve(4096).expect("reserve");
    let state = state_for(&c, &["b@d.test"]);
    let Err(unrecorded) = c.record_and_release(&state, &[]) else {
        panic!("recorded");
    };
    unrecorded.claimed.abandon();
    // m2: stopped before its transaction ended: an empty reservation.
    let mut c = claimed(&queue, "d.test", "m2", "dead.1");
    c.reserve(4096).expect("reserve");
    c.abandon();
    assert_eq!(tmp_names(&layout, "d.test").len(), 2, "both left");
    fs::remove_file(layout.domain_dir("d.test").join(".state")).expect("rm");

    let recovery = recover(&queue, |owner| owner == "dead.1").expect("recover");
    assert_eq!(recovery.adopted.len(), 1, "{recovery:?}");
    assert!(
        tmp_names(&layout, "d.test").is_empty(),
        "both reservations gone"
    );
    let c = claimed(&queue, "d.test", "m1", "o2");
    assert_eq!(
        queued_of(&c).envelope.recipients,
        ["b@d.test"],
        "m1's new state"
    );
    c.release().expect("release");
    let c = claimed(&queue, "d.test", "m2", "o2");
    assert_eq!(
        queued_of(&c).envelope.recipients,
        ["a@d.test", "b@d.test"],
        "m2 as it was"
    );
    c.release().expect("release");
}

#[test]
fn set_aside_a_claimed_file() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let first = claimed(&queue, "d.test", "m1", "o1")
        .set_aside_failed("bounce could not be placed")
        .expect("set aside");
    assert_eq!(
        first,
        layout.domain_dir("d.test").join(".failed/m1"),
        "path"
    );
    put(&layout, "d.test", "m1", MESSAGE);
    let second = claimed(&queue, "d.test", "m1", "o1")
        .set_aside_failed("again")
        .expect("set aside again");
    assert_eq!(
        second,
        layout.domain_dir("d.test").join(".failed/m1.1"),
        "suffixed"
    );
    let reason = fs::read_to_string(layout.domain_dir("d.test").join(".failed/m1.1.reason"))
        .expect("reason");
    assert_eq!(reason, "again\n", "reason file");
    assert_eq!(fs::read(&first).expect("first kept"), MESSAGE, "first kept");

    put(&layout, "d.test", "m2", MESSAGE);
    let q = claimed(&queue, "d.test", "m2", "o1")
        .quarantine("bad retry state")
        .expect("quarantine");
    assert_eq!(
        q,
        layout.domain_dir("d.test").join(".quarantine/m2"),
        "quarantined"
    );
    assert!(
        !layout.domain_dir("d.test").join(".active/o1/m2").exists(),
        "claim gone"
    );
}

#[test]
fn recover_returns_dead_owners_claims_only() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    for name in ["a1", "a2", "b1", "c1"] {
        put(&layout, "d.test", name, MESSAGE);
    }
    put(&layout, "e.test", "e1", MESSAGE);
    let _ = claimed(&queue, "d.test", "a1", "dead.1");
    let _ = claimed(&queue, "d.test", "a2", "dead.1");
    let live = claimed(&queue, "d.test", "b1", "live.2");
    let _ = claimed(&queue, "e.test", "e1", "dead.1");
    // A crash between the rename and the unlink of an older postman's
    // rewrite: the claim and the (newer) queue copy both exist.
    let dup = claimed(&queue, "d.test", "c1", "dead.2");
    fs::write(layout.message_path("d.test", "c1"), rewritten()).expect("write queue copy");
    let dup_path = dup.path();

    let asked = std::cell::RefCell::new(Vec::new());
    let recovery = recover(&queue, |owner| {
        asked.borrow_mut().push(owner.to_owned());
        owner.starts_with("dead.")
    })
    .expect("recover");
    let mut restored = recovery.restored.clone();
    restored.sort();
    assert_eq!(
        restored,
        [
            layout.message_path("d.test", "a1"),
            layout.message_path("d.test", "a2"),
            layout.message_path("e.test", "e1"),
        ],
        "restored"
    );
    assert_eq!(recovery.duplicates, [dup_path.as_path()], "duplicates");
    assert!(recovery.errors.is_empty(), "errors: {:?}", recovery.errors);
    assert_eq!(
        fs::read(layout.message_path("d.test", "c1")).expect("c1"),
        rewritten(),
        "queue copy kept"
    );
    assert!(!dup_path.exists(), "duplicate claim removed");
    assert!(live.path().exists(), "live owner's claim untouched");
    assert!(
        !layout.domain_dir("d.test").join(".active/dead.1").exists(),
        "dead owner folder removed"
    );
    let mut asked = asked.into_inner();
    asked.sort();
    assert_eq!(
        asked,
        ["dead.1", "dead.1", "dead.2", "live.2"],
        "owners asked"
    );
    live.release().expect("release live");

    let again = recover(&queue, |_| true).expect("second recovery");
    assert!(
        again.restored.is_empty() && again.duplicates.is_empty(),
        "{again:?}"
    );
}

/// `MESSAGE` as a rewrite after a deferral writes it: a new block with
/// retry state, the same message after it.
fn rewritten() -> Vec<u8> {
    let mut bytes = b"X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>\r\nX-Postman-Attempts: 1\r\n\r\n".to_vec();
    bytes.extend_from_slice(b"Subject: x\r\n\r\nbody\r\n");
    bytes
}

#[test]
fn recover_keeps_a_different_message_of_the_same_name() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let other: &[u8] =
        b"X-Postman-From: <t@e.org>\r\nX-Postman-To: <b@d.test>\r\n\r\nSubject: other\r\n\r\nanother body\r\n";
    // (what the queue holds under the claim's name, whether the claim is
    // the same message and goes, or goes back as m1.1)
    let more_recipients: Vec<u8> = {
        let text = String::from_utf8(rewritten()).expect("utf-8");
        text.replace("<a@d.test>", "<a@d.test>, <z@d.test>")
            .into_bytes()
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("the same bytes", MESSAGE.to_vec(), true),
        ("a rewrite of it", rewritten(), true),
        ("another message", other.to_vec(), false),
        ("a recipient the claim lacks", more_recipients, false),
        ("garbage", b"garbage".to_vec(), false),
    ];
    for (what, queued, same) in cases {
        put(&layout, "d.test", "m1", MESSAGE);
        let c = claimed(&queue, "d.test", "m1", "dead.1");
        let claim_path = c.path();
        fs::write(layout.message_path("d.test", "m1"), &queued).expect("write");
        let recovery = recover(&queue, |_| true).expect("recover");
        assert!(recovery.errors.is_empty(), "{what}: {recovery:?}");
        assert_eq!(
            fs::read(layout.message_path("d.test", "m1")).expect("m1"),
            queued,
            "{what}: the queued file is untouched"
        );
        if same {
            assert_eq!(recovery.duplicates, [claim_path.as_path()], "{what}");
            assert_eq!(messages(&layout, "d.test"), ["m1"], "{what}");
        } else {
            let to = layout.message_path("d.test", "m1.1");
            assert_eq!(recovery.renamed, [(claim_path, to.clone())], "{what}");
            assert_eq!(fs::read(&to).expect("m1.1"), MESSAGE, "{what}: claim kept");
            fs::remove_file(&to).expect("clean up");
        }
        fs::remove_file(layout.message_path("d.test", "m1")).expect("clean up");
    }
}

#[test]
fn the_same_file_under_both_names_is_one_message() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "dead.1");
    fs::hard_link(c.path(), layout.message_path("d.test", "m1")).expect("link");
    let recovery = recover(&queue, |_| true).expect("recover");
    assert_eq!(recovery.duplicates.len(), 1, "{recovery:?}");
    assert_eq!(messages(&layout, "d.test"), ["m1"]);
}

#[test]
fn recovery_and_sweeps_do_not_follow_links() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let outside = tempfile::tempdir().expect("outside");
    fs::create_dir_all(outside.path().join("dead.1")).expect("mkdir");
    fs::write(outside.path().join("dead.1/m9"), MESSAGE).expect("write");
    fs::write(outside.path().join("old"), b"x").expect("write");
    fs::create_dir_all(layout.domain_dir("d.test")).expect("mkdir");
    symlink(outside.path(), layout.domain_dir("d.test").join(ACTIVE_DIR)).expect("link");
    symlink(outside.path(), layout.tmp_dir("d.test")).expect("link");
    // A linked domain folder is not even listed.
    symlink(outside.path(), layout.domain_dir("e.test")).expect("link");
    let recovery = recover(&queue, |_| true).expect("recover");
    assert!(recovery.restored.is_empty(), "{recovery:?}");
    assert_eq!(recovery.errors.len(), 1, "the linked .active: {recovery:?}");
    let far_future = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    let sweep = sweep_tmp(&queue, far_future, Duration::from_secs(1)).expect("sweep");
    assert!(sweep.removed.is_empty(), "{sweep:?}");
    assert_eq!(sweep.errors.len(), 1, "the linked tmp: {sweep:?}");
    assert!(
        outside.path().join("old").exists(),
        "nothing removed outside"
    );
    assert!(
        outside.path().join("dead.1/m9").exists(),
        "nothing moved outside"
    );
    assert!(messages(&layout, "d.test").is_empty(), "nothing came in");
}

#[test]
fn a_claimed_link_or_fifo_is_refused_and_quarantined_unopened() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let outside = tempfile::tempdir().expect("outside");
    let secret = outside.path().join("secret");
    fs::write(&secret, MESSAGE).expect("write");
    put(&layout, "d.test", "m0", MESSAGE);
    symlink(&secret, layout.message_path("d.test", "link")).expect("link");
    nix::unistd::mkfifo(
        &layout.message_path("d.test", "fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    for name in ["link", "fifo"] {
        let c = claimed(&queue, "d.test", name, "me.1");
        let e = c.open().expect_err("refused");
        assert!(refusal(&e).is_some(), "{name}: {e}");
        let to = c.quarantine(&e.to_string()).expect("quarantine");
        assert_eq!(
            to,
            layout.domain_dir("d.test").join(".quarantine").join(name)
        );
        assert!(
            fs::symlink_metadata(&to).is_ok_and(|m| !m.is_file()),
            "{name}: moved as it is"
        );
    }
    assert_eq!(fs::read(&secret).expect("secret"), MESSAGE, "untouched");
}

#[test]
fn a_linked_failed_folder_is_refused_and_the_claim_stays() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let outside = tempfile::tempdir().expect("outside");
    symlink(outside.path(), layout.domain_dir("d.test").join(".failed")).expect("link");
    let c = claimed(&queue, "d.test", "m1", "me.1");
    let claim_path = c.path();
    let e = c.set_aside_failed("550").expect_err("linked .failed");
    assert!(refusal(&e).is_some(), "{e}");
    assert_eq!(
        fs::read(&claim_path).expect("claim"),
        MESSAGE,
        "the claim stays"
    );
    assert_eq!(
        fs::read_dir(outside.path()).expect("list").count(),
        0,
        "nothing outside"
    );
}

#[test]
fn recover_without_a_queue_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(Layout::new(dir.path())).expect("open");
    let err = recover(&queue, |_| true).expect_err("no .OTHER_SERVERS");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
}

#[test]
fn two_claimers_race_and_exactly_one_wins() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    const FILES: usize = 200;
    for i in 0..FILES {
        put(&layout, "d.test", &format!("m{i}"), MESSAGE);
    }
    let barrier = Barrier::new(2);
    let wins: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["p1", "p2"]
            .into_iter()
            .map(|owner| {
                let (queue, barrier) = (queue.share(), &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..FILES)
                        .filter_map(|i| {
                            let name = format!("m{i}");
                            claim(&queue, "d.test", &name, owner)
                                .unwrap_or_else(|e| panic!("{owner} claim {name}: {e}"))
                                .map(|c| c.name().to_owned())
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("claimer thread"))
            .collect()
    });
    let total = wins[0].len() + wins[1].len();
    assert_eq!(
        total,
        FILES,
        "every file claimed exactly once ({} + {})",
        wins[0].len(),
        wins[1].len()
    );
    for name in &wins[0] {
        assert!(!wins[1].contains(name), "{name} claimed twice");
    }
    let active = layout.domain_dir("d.test").join(ACTIVE_DIR);
    // A claimer that won nothing never made its directory.
    let claims = |owner: &str| match fs::read_dir(active.join(owner)) {
        Ok(dir) => dir.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => panic!("{owner}: {e}"),
    };
    let on_disk = claims("p1") + claims("p2");
    assert_eq!(on_disk, FILES, "claims on disk");
}

#[test]
fn sweep_tmp_removes_only_old_leftovers() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let old = layout.tmp_dir("d.test").join("old.tmp");
    put(&layout, "d.test", "m1", MESSAGE);
    fs::write(&old, b"half").expect("write old");
    let mtime = fs::metadata(&old).expect("stat").modified().expect("mtime");
    let removed = sweep_tmp(
        &queue,
        mtime + Duration::from_secs(100),
        Duration::from_secs(200),
    )
    .expect("sweep young");
    assert!(removed.removed.is_empty(), "young file kept: {removed:?}");
    let removed = sweep_tmp(
        &queue,
        mtime + Duration::from_secs(300),
        Duration::from_secs(200),
    )
    .expect("sweep old");
    assert_eq!(removed.removed, [old.as_path()], "old file removed");
    assert!(removed.errors.is_empty(), "{removed:?}");
    assert!(
        layout.message_path("d.test", "m1").exists(),
        "queue file untouched"
    );
}

#[test]
fn a_delivered_mark_left_by_an_earlier_version_is_removed_by_recovery() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    put(&layout, "d.test", "m2", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "dead.1");
    // What the earlier mark was: a rename inside the claim folder.
    let want = layout
        .domain_dir("d.test")
        .join(".active/dead.1/.delivered.m1");
    fs::rename(c.path(), &want).expect("mark as earlier versions did");
    // Crash here: the mark is removed, never put back into the queue.
    let _ = claimed(&queue, "d.test", "m2", "dead.1");
    let recovery = recover(&queue, |_| true).expect("recover");
    assert_eq!(recovery.delivered, [want.as_path()], "{recovery:?}");
    assert_eq!(
        recovery.restored,
        [layout.message_path("d.test", "m2")],
        "{recovery:?}"
    );
    assert!(!want.exists(), "marked file removed");
    assert_eq!(
        messages(&layout, "d.test"),
        ["m2"],
        "only the undelivered message is back"
    );
}

#[test]
fn a_delivered_file_loses_its_name_at_once_and_its_data_at_the_last_close() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "dead.1");
    let path = c.path();
    let mut open = fs::File::open(&path).expect("open claimed file");
    assert!(matches!(c.remove_delivered(), Marked::Removed(_)));
    assert!(!path.exists(), "the name is gone at once");
    // Crash here: nothing is left for recovery to put back.
    let recovery = recover(&queue, |_| true).expect("recover");
    assert!(
        recovery.restored.is_empty() && recovery.delivered.is_empty(),
        "{recovery:?}"
    );
    assert!(messages(&layout, "d.test").is_empty());
    // The open descriptor still reads the whole file until it is closed.
    let mut content = Vec::new();
    io::Read::read_to_end(&mut open, &mut content).expect("read removed file");
    assert_eq!(content, MESSAGE);
}

#[test]
fn a_delivered_file_already_gone_counts_as_removed() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "live.1");
    fs::remove_file(c.path()).expect("remove claimed file");
    assert!(matches!(c.remove_delivered(), Marked::Removed(_)));
}

#[test]
fn a_failed_removal_gives_the_claim_back() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&queue, "d.test", "m1", "live.1");
    // Something not a file took the claimed name: unlink(2) refuses it,
    // even for root.
    fs::remove_file(c.path()).expect("remove claimed file");
    fs::create_dir(c.path()).expect("a directory in its place");
    match c.remove_delivered() {
        Marked::Failed(c, e) => {
            assert_ne!(e.kind(), io::ErrorKind::NotFound, "{e}");
            assert_eq!(c.name(), "m1");
        }
        Marked::Removed(_) => panic!("removed a directory as a delivered file"),
    }
}
