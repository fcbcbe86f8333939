use super::*;
use crate::queue::admin::test_support::*;
use crate::queue::{Layout, Queue};
use std::fs;

use crate::queue::admin::HOLD_DIR;
use crate::queue::{FAILED_DIR, QUARANTINE_DIR, TMP_DIR};

#[test]
fn listing_shows_every_state_sorted_by_arrival() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    queued(
        &layout,
        "d1.test",
        "ready",
        &file("a@src.test", &["x@d1.test"], NOW - 30, ""),
    );
    queued(
        &layout,
        "d1.test",
        "deferred",
        &file(
            "a@src.test",
            &["y@d1.test", "z@d1.test"],
            NOW - 900,
            &deferred_extra(NOW + 300),
        ),
    );
    queued(
        &layout,
        "d1.test",
        "due",
        &file(
            "a@src.test",
            &["x@d1.test"],
            NOW - 2000,
            &deferred_extra(NOW - 1),
        ),
    );
    put(
        &layout,
        "d2.test",
        HOLD_DIR,
        "held",
        &file("", &["h@d2.test"], NOW - 100, ""),
    );
    put(
        &layout,
        "d2.test",
        &format!("{ACTIVE_DIR}/host.1.2"),
        "active",
        &file("b@src.test", &["c@d2.test"], NOW - 50, ""),
    );
    let garbage = queued(&layout, "d2.test", "garbage", b"not a queue file\n");
    let garbage_mtime = fs::metadata(&garbage).unwrap().modified().unwrap();
    // Never listed: the tmp folder, dot files, set-aside files.
    put(&layout, "d1.test", TMP_DIR, "half", b"X-Postman-From: <>\n");
    put(&layout, "d1.test", FAILED_DIR, "f1", b"x");
    put(&layout, "d1.test", "", ".dot", b"x");

    let entries = list_queue(&queue, None, at(NOW)).expect("list");
    let got: Vec<(String, &str)> = entries.iter().map(|e| (e.id(), e.state.as_str())).collect();
    let mut want = vec![
        ("d1.test/due".to_owned(), "ready"),
        ("d1.test/deferred".to_owned(), "deferred"),
        ("d2.test/held".to_owned(), "held"),
        ("d2.test/active".to_owned(), "active"),
        ("d1.test/ready".to_owned(), "ready"),
    ];
    // The unparseable file sorts by its mtime: now-ish, after the others.
    assert!(garbage_mtime > at(NOW), "test clock is in the past");
    want.push(("d2.test/garbage".to_owned(), "ready"));
    let want: Vec<(String, &str)> = want;
    assert_eq!(got, want, "ids and states, oldest first");

    let deferred = &entries[1];
    let detail = deferred.detail.as_ref().expect("deferred parses");
    assert_eq!(detail.sender, "a@src.test");
    assert_eq!(detail.recipients, ["y@d1.test", "z@d1.test"]);
    assert_eq!(detail.retry.attempts, 2, "attempts");
    assert_eq!(
        detail.retry.next_attempt,
        Some(at(NOW + 300)),
        "next attempt"
    );
    assert_eq!(
        detail.retry.last_error.as_deref(),
        Some("host mx.d1.test[192.0.2.1]:25 said: 451 4.7.1 try later"),
        "last error"
    );
    assert_eq!(
        deferred.arrival,
        at(NOW - 900),
        "arrival from X-Postman-Date"
    );
    assert_eq!(
        deferred.size,
        fs::metadata(&deferred.path).unwrap().len(),
        "size is the file's"
    );
    assert_eq!(
        entries[3].owner.as_deref(),
        Some("host.1.2"),
        "owner of the claim"
    );
    assert_eq!(
        entries[2].detail.as_ref().map(|d| d.sender.as_str()),
        Ok(""),
        "null sender"
    );
    let bad = entries[5].detail.as_ref().expect_err("garbage is an error");
    assert!(bad.contains("no empty line ends the envelope"), "{bad}");

    let only = list_queue(&queue, Some("d2.test"), at(NOW)).expect("list d2");
    assert!(
        only.iter().all(|e| e.domain == "d2.test") && only.len() == 3,
        "--domain d2.test: {only:#?}"
    );
    let none = list_queue(&queue, Some("nowhere.test"), at(NOW)).expect("missing domain");
    assert!(none.is_empty(), "a missing domain folder lists nothing");
}

#[test]
fn listing_shows_the_senders_parameters_of_the_envelope_in_force() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let own = format!(
        "X-Postman-From: <a@src.test>\nX-Postman-Date: {}\nX-Postman-Ret: FULL\n\
         X-Postman-Envid: QQ+2B1\nX-Postman-Requiretls: yes\n\
         X-Postman-To: <x@d1.test> NOTIFY=SUCCESS\n\
         X-Postman-To: <y@d1.test> NOTIFY=NEVER ORCPT=rfc822;y@d1.test\n\
         X-Postman-To: z@d1.test\n\nSubject: hi\n\nbody\n",
        NOW - 60
    );
    let path = queued(&layout, "d1.test", "m", own.as_bytes());
    let listed = |queue: &Queue| {
        let entries = list_queue(queue, None, at(NOW)).expect("list");
        assert_eq!(entries.len(), 1, "{entries:#?}");
        entries[0].detail.clone().expect("parses")
    };
    let detail = listed(&queue);
    assert_eq!(detail.params.ret, Some(crate::queue::params::Ret::Full));
    assert_eq!(detail.params.envid.as_deref(), Some("QQ+2B1"));
    assert!(detail.params.requiretls, "REQUIRETLS");
    assert_eq!(
        detail.rcpt_params.keys().collect::<Vec<_>>(),
        ["x@d1.test", "y@d1.test"],
        "recipients with parameters"
    );

    // x delivered: the state file in force lists y and z, y's NOTIFY kept.
    let env = crate::queue::parse_envelope(own.as_bytes()).expect("parses");
    let tie = crate::queue::Tie::of(
        fs::metadata(&path).expect("stat").len(),
        &own.as_bytes()[..env.body_offset as usize],
    );
    let pending = vec!["y@d1.test".to_owned(), "z@d1.test".to_owned()];
    let blocks = RetryState::default()
        .render_state(&env, &pending, at(NOW - 60), tie)
        .expect("renders");
    put(&layout, "d1.test", ".state", "m", &blocks[0].bytes);
    let detail = listed(&queue);
    assert_eq!(detail.recipients, pending, "from the state file");
    assert_eq!(
        detail
            .rcpt_params
            .get("y@d1.test")
            .and_then(|p| p.notify)
            .map(|n| n.to_string()),
        Some("NEVER".to_owned()),
        "y's NOTIFY"
    );
    assert!(!detail.rcpt_params.contains_key("x@d1.test"), "x is gone");
    assert!(
        detail.params.requiretls,
        "REQUIRETLS kept in the state file"
    );
    assert_eq!(detail.params.envid.as_deref(), Some("QQ+2B1"), "ENVID kept");
}

#[test]
fn listing_a_queue_without_its_remote_folder_is_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(Layout::new(dir.path())).expect("open");
    assert!(list_queue(&queue, None, at(NOW)).expect("list").is_empty());
}

#[test]
fn age_bucket_table() {
    let cases: &[(u64, usize)] = &[
        (0, 0),
        (299, 0),
        (300, 1),
        (599, 1),
        (600, 2),
        (20 * 60, 3),
        (79 * 60, 4),
        (80 * 60, 5),
        (319 * 60, 6),
        (639 * 60, 7),
        (1279 * 60, 8),
        (1280 * 60, 9),
        (5 * 86400, 9),
    ];
    for (age, want) in cases {
        assert_eq!(age_bucket(at(NOW), at(NOW - age)), *want, "age {age}s");
    }
    assert_eq!(age_bucket(at(NOW), at(NOW + 60)), 0, "from the future: new");
}

#[test]
fn summary_counts_states_ages_and_set_aside_files() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    for i in 0..3 {
        queued(
            &layout,
            "big.test",
            &format!("r{i}"),
            &file("a@src.test", &["x@big.test"], NOW - 60, ""),
        );
    }
    queued(
        &layout,
        "big.test",
        "d",
        &file(
            "a@src.test",
            &["x@big.test"],
            NOW - 3600,
            &deferred_extra(NOW + 60),
        ),
    );
    put(
        &layout,
        "small.test",
        HOLD_DIR,
        "h",
        &file("a@src.test", &["x@small.test"], NOW - 100_000, ""),
    );
    put(&layout, "aside.test", QUARANTINE_DIR, "q", b"x");
    put(&layout, "aside.test", QUARANTINE_DIR, "q.reason", b"why");
    put(&layout, "aside.test", FAILED_DIR, "f", b"x");
    fs::create_dir_all(layout.domain_dir("empty.test")).unwrap();
    crate::queue::write_backoff(
        &queue,
        "small.test",
        &DomainBackoff {
            until: at(NOW + 600),
            failures: 2,
            error: "connection refused".into(),
        },
    )
    .unwrap();

    let entries = list_queue(&queue, None, at(NOW)).unwrap();
    let domains = list_domains(&queue).unwrap();
    let lines = summarize(&queue, &entries, &domains, at(NOW));
    let names: Vec<&str> = lines.iter().map(|l| l.domain.as_str()).collect();
    assert_eq!(
        names,
        ["TOTAL", "big.test", "small.test", "aside.test"],
        "TOTAL first, then by size; empty.test left out"
    );
    let big = &lines[1];
    assert_eq!(
        (big.ready, big.deferred, big.held, big.active),
        (3, 1, 0, 0),
        "big.test states"
    );
    assert_eq!(big.ages[0], 3, "three messages under 5 minutes");
    assert_eq!(
        big.ages[age_bucket(at(NOW), at(NOW - 3600))],
        1,
        "one an hour old"
    );
    let small = &lines[2];
    assert_eq!(small.held, 1, "small.test held");
    assert_eq!(small.ages[AGE_COLUMNS - 1], 1, "over 1280 minutes");
    assert_eq!(
        small.backoff.as_ref().map(|b| b.failures),
        Some(2),
        "backoff shown"
    );
    let aside = &lines[3];
    assert_eq!(
        (aside.failed, aside.quarantined, aside.total()),
        (1, 1, 0),
        "aside.test"
    );
    let total = &lines[0];
    assert_eq!(total.total(), 5, "total messages");
    assert_eq!((total.failed, total.quarantined), (1, 1), "total set aside");
    assert_eq!(
        total.ages.iter().sum::<u64>(),
        5,
        "every message in one age column"
    );
}
