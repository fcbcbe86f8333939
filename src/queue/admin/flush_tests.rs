use super::*;
use crate::queue::admin::test_support::*;
use std::fs;

use crate::queue::admin::HOLD_DIR;
use crate::queue::{ACTIVE_DIR, BACKOFF_FILE};
use std::os::unix::fs::MetadataExt;

#[test]
fn flush_makes_deferred_messages_due_and_clears_the_backoff() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let deferred_bytes = file(
        "a@src.test",
        &["x@d1.test"],
        NOW - 600,
        &deferred_extra(NOW + 3000),
    );
    let deferred = queued(&layout, "d1.test", "deferred", &deferred_bytes);
    let ready = queued(
        &layout,
        "d1.test",
        "ready",
        &file("a@src.test", &["x@d1.test"], NOW, ""),
    );
    let held_bytes = file(
        "a@src.test",
        &["x@d1.test"],
        NOW,
        &deferred_extra(NOW + 3000),
    );
    let held = put(&layout, "d1.test", HOLD_DIR, "held", &held_bytes);
    let bad = queued(&layout, "d1.test", "bad", b"garbage\n");
    crate::queue::write_backoff(
        &queue,
        "d1.test",
        &DomainBackoff {
            until: at(NOW + 600),
            failures: 3,
            error: "connection refused".into(),
        },
    )
    .unwrap();
    let ready_inode = fs::metadata(&ready).unwrap().ino();

    let report = flush(&queue, "d1.test", "me.1.1", at(NOW)).expect("flush");
    assert_eq!(report.flushed, ["deferred"], "flushed");
    assert!(report.busy.is_empty(), "busy: {:?}", report.busy);
    assert!(report.errors.is_empty(), "errors: {:?}", report.errors);
    assert_eq!(
        report.unreadable.len(),
        1,
        "the garbage file: {:?}",
        report.unreadable
    );
    assert_eq!(report.unreadable[0].0, "bad");
    assert_eq!(
        report.backoff_cleared.map(|b| b.failures),
        Some(3),
        "backoff reported"
    );
    assert!(
        !layout.domain_dir("d1.test").join(BACKOFF_FILE).exists(),
        "backoff removed"
    );

    // The queue file is never written: the state file says it is due.
    assert_eq!(
        fs::read(&deferred).unwrap(),
        deferred_bytes,
        "the queue file is as it was"
    );
    let dir = queue.domain("d1.test").unwrap();
    let (mut file, meta) = dir.open_file("deferred").unwrap();
    let queued = crate::queue::read_queued(&dir, "deferred", &mut file, meta.len(), "d1.test")
        .expect("reads with its state");
    assert_eq!(
        queued.source,
        crate::queue::Source::StateFile,
        "a state file"
    );
    let retry = queued.retry;
    assert_eq!(retry.next_attempt, None, "due now");
    assert_eq!(retry.attempts, 2, "attempts kept");
    assert!(retry.last_error.is_some(), "last error kept");
    assert_eq!(queued.envelope.arrival, Some(at(NOW - 600)), "arrival kept");
    assert_eq!(queued.envelope.recipients, ["x@d1.test"], "recipients kept");
    assert_eq!(
        fs::metadata(&ready).unwrap().ino(),
        ready_inode,
        "a due file is not rewritten"
    );
    assert_eq!(
        fs::read(&held).unwrap(),
        held_bytes,
        "held stays held and deferred"
    );
    assert!(
        bad.exists(),
        "the garbage file is left for the daemon to quarantine"
    );
    assert!(
        !layout
            .domain_dir("d1.test")
            .join(ACTIVE_DIR)
            .join("me.1.1")
            .exists(),
        "no claim left"
    );
    assert!(
        fs::read_dir(layout.tmp_dir("d1.test"))
            .unwrap()
            .next()
            .is_none(),
        "no temporary file left"
    );
    let again = flush(&queue, "d1.test", "me.1.1", at(NOW)).expect("flush again");
    assert!(
        again.flushed.is_empty() && again.backoff_cleared.is_none(),
        "{again:?}"
    );
    let missing = flush(&queue, "nowhere.test", "me.1.1", at(NOW)).expect_err("no folder");
    assert_eq!(missing.kind(), io::ErrorKind::NotFound);
}

#[test]
fn flush_sites_ends_every_site_backoff_or_those_of_a_domain() {
    use crate::queue::{list_site_backoffs, write_site_backoff, SiteBackoff, SITES_DIR};
    let (_dir, queue) = setup();
    let site = |name: &str, domains: &[&str]| SiteBackoff {
        site: name.into(),
        backoff: DomainBackoff {
            until: at(NOW + 600),
            failures: 2,
            error: "connection refused".into(),
        },
        domains: domains.iter().map(|d| d.to_string()).collect(),
    };
    let shared = site("mx.shared.test", &["d1.test", "d2.test"]);
    let other = site("mx1.other.test,mx2.other.test", &["d3.test"]);
    let named_none = site("mx.none.test", &[]);
    let write_all = || {
        for s in [&shared, &other, &named_none] {
            write_site_backoff(&queue, s).unwrap();
        }
    };
    write_all();
    let sites_dir = queue.layout().remote_dir().join(SITES_DIR);
    fs::write(sites_dir.join("garbage"), "no site here\n").unwrap();

    let report = flush_sites(&queue, Some("d2.test")).unwrap();
    let lifted: Vec<&str> = report.lifted.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(lifted, ["mx.shared.test"], "the site of d2.test");
    assert_eq!(report.lifted[0].1, shared);
    assert!(report.unreadable.is_empty() && report.errors.is_empty());
    let left = list_site_backoffs(&queue).unwrap();
    assert_eq!(left.found.len(), 2, "the others stay: {left:?}");
    assert_eq!(left.bad.len(), 1, "garbage stays for a domain's flush");

    let report = flush_sites(&queue, Some("nowhere.test")).unwrap();
    assert!(report.lifted.is_empty(), "{report:?}");

    let report = flush_sites(&queue, None).unwrap();
    let mut lifted: Vec<&str> = report.lifted.iter().map(|(f, _)| f.as_str()).collect();
    lifted.sort_unstable();
    assert_eq!(lifted, ["mx.none.test", "mx1.other.test,mx2.other.test"]);
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert_eq!(report.unreadable[0].0, "garbage");
    let left = list_site_backoffs(&queue).unwrap();
    assert!(left.found.is_empty() && left.bad.is_empty(), "{left:?}");
    assert!(sites_dir.join("tmp").is_dir(), "its tmp/ stays");

    // A link in .sites/ is removed, never followed.
    std::os::unix::fs::symlink("/dev/zero", sites_dir.join("mx.link.test")).unwrap();
    let report = flush_sites(&queue, None).unwrap();
    assert_eq!(report.unreadable.len(), 1, "{report:?}");
    assert!(fs::metadata("/dev/zero").is_ok());
    assert!(fs::symlink_metadata(sites_dir.join("mx.link.test")).is_err());

    let (_empty, fresh) = setup();
    let report = flush_sites(&fresh, None).unwrap();
    assert!(report.lifted.is_empty() && report.unreadable.is_empty());
}
