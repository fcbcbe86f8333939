//! Tests of claims, each in its own temporary directory.

use super::*;
use crate::queue::{list_messages, read_envelope, RetryState};
use std::sync::Barrier;
use std::time::UNIX_EPOCH;

const MESSAGE: &[u8] =
    b"X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";

fn queue() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    (dir, layout)
}

fn put(layout: &Layout, domain: &str, name: &str, contents: &[u8]) -> PathBuf {
    let path = layout.message_path(domain, name);
    fs::create_dir_all(layout.tmp_dir(domain)).expect("mkdir domain/tmp");
    fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn claimed(layout: &Layout, domain: &str, name: &str, owner: &str) -> Claimed {
    claim(layout, domain, name, owner)
        .unwrap_or_else(|e| panic!("claim {domain}/{name} for {owner}: {e}"))
        .unwrap_or_else(|| panic!("{domain}/{name} is gone"))
}

#[test]
fn claim_moves_the_file_out_of_sight() {
    let (_dir, layout) = queue();
    let path = put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "host.42.1700000000");
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
        list_messages(&layout.domain_dir("d.test"))
            .expect("list")
            .is_empty(),
        "the scanner does not list claims"
    );
    assert_eq!(
        claim(&layout, "d.test", "m1", "other.1.1").expect("second claim"),
        None,
        "already claimed"
    );
    assert_eq!(
        claim(&layout, "d.test", "never", "o").expect("missing"),
        None,
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
    let (_dir, layout) = queue();
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
        let err = claim(&layout, domain, name, owner)
            .expect_err(&format!("{domain:?} {name:?} {owner:?}"));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{owner:?}: {err}");
    }
    assert!(layout.message_path("d.test", "m1").exists(), "untouched");
}

#[test]
fn complete_removes_the_claim() {
    let (_dir, layout) = queue();
    let path = put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "o1");
    let claim_path = c.path().to_path_buf();
    c.complete().expect("complete");
    assert!(!claim_path.exists(), "claim removed");
    assert!(!path.exists(), "not back in the queue");
}

#[test]
fn rewrite_and_release_puts_the_new_version_back() {
    let (_dir, layout) = queue();
    let path = put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "o1");
    let env = read_envelope(c.path()).expect("envelope");
    let mut state = RetryState::from_envelope(&env).expect("state");
    state.record_attempt(UNIX_EPOCH + Duration::from_secs(2000), "451 later");
    let arrival = env.arrival.expect("dated");
    let block = state
        .render_block(&env, &env.recipients, arrival)
        .expect("block");
    let claim_path = c.path().to_path_buf();
    c.rewrite_and_release(&block, env.body_offset)
        .expect("rewrite and release");
    assert!(!claim_path.exists(), "claim removed");
    let back = read_envelope(&path).expect("new envelope");
    assert_eq!(
        RetryState::from_envelope(&back)
            .expect("state back")
            .attempts,
        1,
        "state written"
    );
    let contents = fs::read(&path).expect("read");
    assert!(
        contents.ends_with(b"Subject: x\r\n\r\nbody\r\n"),
        "body kept"
    );
    assert!(
        fs::read_dir(layout.tmp_dir("d.test"))
            .expect("tmp")
            .next()
            .is_none(),
        "tmp left empty"
    );
}

#[test]
fn failed_rewrite_releases_the_old_version() {
    let (_dir, layout) = queue();
    let path = put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "o1");
    let err = c
        .rewrite_and_release(b"X-Postman-From: <>\r\n\r\n", 1 << 40)
        .expect_err("offset beyond the end");
    assert_eq!(
        fs::read(&path).expect("read"),
        MESSAGE,
        "old version back after {err}"
    );
}

#[test]
fn set_aside_a_claimed_file() {
    let (_dir, layout) = queue();
    put(&layout, "d.test", "m1", MESSAGE);
    let first = claimed(&layout, "d.test", "m1", "o1")
        .set_aside_failed("bounce could not be placed")
        .expect("set aside");
    assert_eq!(
        first,
        layout.domain_dir("d.test").join(".failed/m1"),
        "path"
    );
    put(&layout, "d.test", "m1", MESSAGE);
    let second = claimed(&layout, "d.test", "m1", "o1")
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
    let q = claimed(&layout, "d.test", "m2", "o1")
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
    let (_dir, layout) = queue();
    for name in ["a1", "a2", "b1", "c1"] {
        put(&layout, "d.test", name, MESSAGE);
    }
    put(&layout, "e.test", "e1", MESSAGE);
    let _ = claimed(&layout, "d.test", "a1", "dead.1");
    let _ = claimed(&layout, "d.test", "a2", "dead.1");
    let live = claimed(&layout, "d.test", "b1", "live.2");
    let _ = claimed(&layout, "e.test", "e1", "dead.1");
    // A crash between the rename and the unlink of rewrite_and_release:
    // the claim and the (newer) queue copy both exist.
    let dup = claimed(&layout, "d.test", "c1", "dead.2");
    fs::write(layout.message_path("d.test", "c1"), b"newer").expect("write queue copy");
    let dup_path = dup.path().to_path_buf();

    let asked = std::cell::RefCell::new(Vec::new());
    let recovery = recover(&layout, |owner| {
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
        b"newer",
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

    let again = recover(&layout, |_| true).expect("second recovery");
    assert!(
        again.restored.is_empty() && again.duplicates.is_empty(),
        "{again:?}"
    );
}

#[test]
fn recover_without_a_queue_is_not_found() {
    let (_dir, layout) = queue();
    let err = recover(&layout, |_| true).expect_err("no .OTHER_SERVERS");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
}

#[test]
fn two_claimers_race_and_exactly_one_wins() {
    let (_dir, layout) = queue();
    const FILES: usize = 200;
    for i in 0..FILES {
        put(&layout, "d.test", &format!("m{i}"), MESSAGE);
    }
    let barrier = Barrier::new(2);
    let wins: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["p1", "p2"]
            .into_iter()
            .map(|owner| {
                let (layout, barrier) = (&layout, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..FILES)
                        .filter_map(|i| {
                            let name = format!("m{i}");
                            claim(layout, "d.test", &name, owner)
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
    let (_dir, layout) = queue();
    let old = layout.tmp_dir("d.test").join("old.tmp");
    put(&layout, "d.test", "m1", MESSAGE);
    fs::write(&old, b"half").expect("write old");
    let mtime = fs::metadata(&old).expect("stat").modified().expect("mtime");
    let removed = sweep_tmp(
        &layout,
        mtime + Duration::from_secs(100),
        Duration::from_secs(200),
    )
    .expect("sweep young");
    assert!(removed.is_empty(), "young file kept: {removed:?}");
    let removed = sweep_tmp(
        &layout,
        mtime + Duration::from_secs(300),
        Duration::from_secs(200),
    )
    .expect("sweep old");
    assert_eq!(removed, [old.as_path()], "old file removed");
    assert!(
        layout.message_path("d.test", "m1").exists(),
        "queue file untouched"
    );
}

#[test]
fn a_delivered_mark_left_by_an_earlier_version_is_removed_by_recovery() {
    let (_dir, layout) = queue();
    put(&layout, "d.test", "m1", MESSAGE);
    put(&layout, "d.test", "m2", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "dead.1");
    // What the earlier mark was: a rename inside the claim folder.
    let want = layout
        .domain_dir("d.test")
        .join(".active/dead.1/.delivered.m1");
    fs::rename(c.path(), &want).expect("mark as earlier versions did");
    // Crash here: the mark is removed, never put back into the queue.
    let _ = claimed(&layout, "d.test", "m2", "dead.1");
    let recovery = recover(&layout, |_| true).expect("recover");
    assert_eq!(recovery.delivered, [want.as_path()], "{recovery:?}");
    assert_eq!(
        recovery.restored,
        [layout.message_path("d.test", "m2")],
        "{recovery:?}"
    );
    assert!(!want.exists(), "marked file removed");
    assert_eq!(
        list_messages(&layout.domain_dir("d.test")).expect("list"),
        ["m2"],
        "only the undelivered message is back"
    );
}

#[test]
fn a_delivered_file_loses_its_name_at_once_and_its_data_at_the_last_close() {
    let (_dir, layout) = queue();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "dead.1");
    let path = c.path().to_path_buf();
    let mut open = fs::File::open(&path).expect("open claimed file");
    assert!(matches!(c.remove_delivered(), Marked::Removed));
    assert!(!path.exists(), "the name is gone at once");
    // Crash here: nothing is left for recovery to put back.
    let recovery = recover(&layout, |_| true).expect("recover");
    assert!(
        recovery.restored.is_empty() && recovery.delivered.is_empty(),
        "{recovery:?}"
    );
    assert!(list_messages(&layout.domain_dir("d.test"))
        .expect("list")
        .is_empty());
    // The open descriptor still reads the whole file until it is closed.
    let mut content = Vec::new();
    io::Read::read_to_end(&mut open, &mut content).expect("read removed file");
    assert_eq!(content, MESSAGE);
}

#[test]
fn a_delivered_file_already_gone_counts_as_removed() {
    let (_dir, layout) = queue();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "live.1");
    fs::remove_file(c.path()).expect("remove claimed file");
    assert!(matches!(c.remove_delivered(), Marked::Removed));
}

#[test]
fn a_failed_removal_gives_the_claim_back() {
    let (_dir, layout) = queue();
    put(&layout, "d.test", "m1", MESSAGE);
    let c = claimed(&layout, "d.test", "m1", "live.1");
    // Something not a file took the claimed name: unlink(2) refuses it,
    // even for root.
    fs::remove_file(c.path()).expect("remove claimed file");
    fs::create_dir(c.path()).expect("a directory in its place");
    match c.remove_delivered() {
        Marked::Failed(c, e) => {
            assert_ne!(e.kind(), io::ErrorKind::NotFound, "{e}");
            assert_eq!(c.name(), "m1");
        }
        Marked::Removed => panic!("removed a directory as a delivered file"),
    }
}
