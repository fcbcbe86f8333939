use super::*;
use crate::queue::admin::test_support::*;
use crate::queue::Queue;
use std::fs;

use crate::queue::parse_envelope;

#[test]
fn queue_ref_table() {
    // (given, Some((domain, name)) or None for an error)
    type Want = Option<(Option<&'static str>, &'static str)>;
    let cases: &[(&str, Want)] = &[
        ("d.test/m1", Some((Some("d.test"), "m1"))),
        ("D.Test/m1", Some((Some("d.test"), "m1"))),
        ("m1", Some((None, "m1"))),
        (
            "1764250000.123456P9Q1.host",
            Some((None, "1764250000.123456P9Q1.host")),
        ),
        ("", None),
        ("d.test/", None),
        ("/m1", None),
        ("bad_domain/m1", None),
        ("d.test/.hidden", None),
        (".hidden", None),
        ("d.test/tmp", None),
        ("tmp", None),
        ("d.test/a/b", None),
        ("../x", None),
    ];
    for (given, want) in cases {
        let got = QueueRef::parse(given);
        match (want, &got) {
            (Some((domain, name)), Ok(parsed)) => {
                assert_eq!(parsed.domain.as_deref(), *domain, "domain of {given:?}");
                assert_eq!(parsed.name, *name, "name of {given:?}");
            }
            (None, Err(e)) => assert!(
                e.to_string().contains(&format!("{given:?}")),
                "the error for {given:?} quotes it: {e}"
            ),
            _ => panic!("QueueRef::parse({given:?}) = {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn hold_and_release_move_the_file_and_report_what_they_did() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let bytes = file("a@src.test", &["x@d1.test"], NOW, "");
    let path = queued(&layout, "d1.test", "m1", &bytes);
    let hold_path = layout.domain_dir("d1.test").join(HOLD_DIR).join("m1");

    assert_eq!(hold(&queue, &r("m1")).expect("hold").1, Done::Held);
    assert!(!path.exists() && hold_path.exists(), "moved to .hold");
    assert_eq!(fs::read(&hold_path).unwrap(), bytes, "unchanged");
    assert_eq!(
        hold(&queue, &r("d1.test/m1")).expect("hold again").1,
        Done::AlreadyHeld
    );
    assert!(
        messages(&layout, "d1.test").is_empty(),
        "the scanner no longer lists it"
    );

    assert_eq!(
        release(&queue, &r("d1.test/m1")).expect("release").1,
        Done::Released
    );
    assert!(path.exists() && !hold_path.exists(), "moved back");
    assert_eq!(fs::read(&path).unwrap(), bytes, "unchanged");
    assert_eq!(
        release(&queue, &r("m1")).expect("release again").1,
        Done::NotHeld
    );
}

#[test]
fn a_linked_hold_folder_is_refused_and_nothing_goes_out_of_the_queue() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let bytes = file("a@src.test", &["x@d1.test"], NOW, "");
    let path = queued(&layout, "d1.test", "m1", &bytes);
    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), layout.domain_dir("d1.test").join(HOLD_DIR))
        .expect("link");
    match hold(&queue, &r("m1")) {
        Err(AdminError::Io { source, .. }) => assert!(
            crate::queue::dirfd::refusal(&source).is_some(),
            "a refusal: {source}"
        ),
        other => panic!("hold through a linked .hold: {other:?}"),
    }
    assert_eq!(fs::read(&path).unwrap(), bytes, "left where it was");
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing outside"
    );
}

#[test]
fn commands_refuse_missing_ambiguous_and_claimed_messages() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let bytes = file("a@src.test", &["x@d1.test"], NOW, "");
    queued(&layout, "d1.test", "twin", &bytes);
    queued(&layout, "d2.test", "twin", &bytes);
    let claimed = put(
        &layout,
        "d1.test",
        &format!("{ACTIVE_DIR}/host.7.9"),
        "busy",
        &bytes,
    );
    let ctx = BounceContext {
        hostname: "mx.test",
        local_domains: &[],
        owner: "me.1.1",
        now: at(NOW),
        token: "t1",
        bounce_size_limit: 0,
    };
    type Command = fn(&Queue, &QueueRef, &BounceContext<'_>) -> Result<(QueueId, Done), AdminError>;
    let commands: [(&str, Command); 4] = [
        ("hold", |l, r, _| hold(l, r)),
        ("release", |l, r, _| release(l, r)),
        ("delete", |l, r, _| delete(l, r)),
        ("bounce", bounce),
    ];
    for (what, command) in commands {
        match command(&queue, &r("nothere"), &ctx) {
            Err(AdminError::NotFound { given }) => assert_eq!(given, "nothere", "{what}"),
            other => panic!("{what} nothere: {other:?}"),
        }
        match command(&queue, &r("twin"), &ctx) {
            Err(AdminError::Ambiguous { ids, .. }) => {
                assert_eq!(ids, ["d1.test/twin", "d2.test/twin"], "{what}")
            }
            other => panic!("{what} twin: {other:?}"),
        }
        match command(&queue, &r("busy"), &ctx) {
            Err(e @ AdminError::Busy { .. }) => {
                assert!(e.to_string().contains("host.7.9"), "{what}: {e}")
            }
            other => panic!("{what} busy: {other:?}"),
        }
        assert_eq!(
            fs::read(&claimed).unwrap(),
            bytes,
            "{what}: the claim is untouched"
        );
    }
}

#[test]
fn hold_never_replaces_a_held_file_of_the_same_name() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let path = queued(
        &layout,
        "d1.test",
        "m1",
        &file("a@src.test", &["x@d1.test"], NOW, ""),
    );
    let held = put(&layout, "d1.test", HOLD_DIR, "m1", b"older held copy");
    // A queued and a held copy: hold refuses, release refuses.
    match hold(&queue, &r("m1")) {
        Err(AdminError::Exists { path: taken, .. }) => assert_eq!(taken, held),
        other => panic!("hold with a held twin: {other:?}"),
    }
    match release(&queue, &r("m1")) {
        Err(AdminError::Exists { path: taken, .. }) => assert_eq!(taken, path),
        other => panic!("release with a queued twin: {other:?}"),
    }
    assert!(path.exists(), "queued copy kept");
    assert_eq!(
        fs::read(&held).unwrap(),
        b"older held copy",
        "held copy kept"
    );
}

#[test]
fn delete_removes_queued_and_held_messages() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let bytes = file("a@src.test", &["x@d1.test"], NOW, "");
    let q = queued(&layout, "d1.test", "q1", &bytes);
    let h = put(&layout, "d1.test", HOLD_DIR, "h1", &bytes);
    assert_eq!(
        delete(&queue, &r("q1")).expect("delete q1").1,
        Done::Deleted { held: false }
    );
    assert_eq!(
        delete(&queue, &r("d1.test/h1")).expect("delete h1").1,
        Done::Deleted { held: true }
    );
    assert!(!q.exists() && !h.exists(), "both gone");
    assert!(
        matches!(delete(&queue, &r("q1")), Err(AdminError::NotFound { .. })),
        "again"
    );
}

fn ctx<'a>(local: &'a [String], token: &'a str) -> BounceContext<'a> {
    BounceContext {
        hostname: "mx.postman.test",
        local_domains: local,
        owner: "me.1.1",
        now: at(NOW),
        token,
        bounce_size_limit: 50_000,
    }
}

#[test]
fn bounce_sends_one_dsn_to_a_remote_sender_and_removes_the_message() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let path = queued(
        &layout,
        "d1.test",
        "m1",
        &file(
            "alice@src.test",
            &["x@d1.test", "y@d1.test"],
            NOW - 60,
            &deferred_extra(NOW + 60),
        ),
    );
    let done = bounce(&queue, &r("m1"), &ctx(&[], "dsn1"))
        .expect("bounce")
        .1;
    let Done::Bounced {
        sender,
        recipients,
        placed: Placed::Remote(dsn_path),
    } = done
    else {
        panic!("bounced to a remote sender: {done:?}");
    };
    assert_eq!((sender.as_str(), recipients), ("alice@src.test", 2));
    assert!(!path.exists(), "the message is gone");
    assert_eq!(
        dsn_path,
        layout.message_path("src.test", "dsn1"),
        "queued for src.test"
    );
    let dsn = fs::read(&dsn_path).unwrap();
    let env = parse_envelope(&dsn).expect("the DSN is a queue file");
    assert_eq!(env.sender, "", "a DSN has the null sender");
    assert_eq!(env.recipients, ["alice@src.test"]);
    let text = String::from_utf8_lossy(&dsn);
    for want in [
        ADMIN_BOUNCE_REASON,
        "Status: 5.0.0",
        "Final-Recipient: rfc822; x@d1.test",
        "Final-Recipient: rfc822; y@d1.test",
        "X-Postman-Queue-ID: m1",
        "Subject: hello",
    ] {
        assert!(
            text.contains(want),
            "the DSN should contain {want:?}:\n{text}"
        );
    }
    assert!(
        !layout
            .domain_dir("d1.test")
            .join(ACTIVE_DIR)
            .join("me.1.1")
            .exists(),
        "the claim folder is removed"
    );
}

#[test]
fn bounce_to_a_local_sender_goes_to_its_maildir_and_held_messages_bounce_too() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let held = put(
        &layout,
        "d1.test",
        HOLD_DIR,
        "h1",
        &file("bob@here.test", &["x@d1.test"], NOW, ""),
    );
    let local = ["here.test".to_owned()];
    match bounce(&queue, &r("d1.test/h1"), &ctx(&local, "dsn2"))
        .expect("bounce")
        .1
    {
        Done::Bounced {
            placed: Placed::Local(p),
            ..
        } => assert_eq!(p, layout.root().join("bob/new/dsn2"), "into bob's Maildir"),
        other => panic!("local bounce: {other:?}"),
    }
    assert!(!held.exists(), "the held message is gone");
}

#[test]
fn bounce_of_a_null_sender_message_deletes_it_without_a_dsn() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let path = queued(&layout, "d1.test", "m1", &file("", &["x@d1.test"], NOW, ""));
    assert_eq!(
        bounce(&queue, &r("m1"), &ctx(&[], "dsn3"))
            .expect("bounce")
            .1,
        Done::NullSenderDeleted
    );
    assert!(!path.exists(), "deleted");
    let domains = list_domains(&queue).unwrap();
    assert_eq!(domains, ["d1.test"], "no DSN folder was made");
    assert!(messages(&layout, "d1.test").is_empty());
}

/// The operator's bounce names only the recipients whose NOTIFY asks for
/// failures, with their ORCPT and the ENVID; when none does, the message
/// goes without a DSN.
#[test]
fn bounce_honours_notify() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let params = "X-Postman-Envid: env+2D9\n\
                  X-Postman-To: <n@d1.test> NOTIFY=NEVER\n\
                  X-Postman-To: <f@d1.test> NOTIFY=FAILURE ORCPT=rfc822;F+2Bx@d1.test\n";
    queued(
        &layout,
        "d1.test",
        "m1",
        &file("alice@src.test", &["x@d1.test"], NOW, params),
    );
    let done = bounce(&queue, &r("m1"), &ctx(&[], "dsn4"))
        .expect("bounce")
        .1;
    let Done::Bounced { recipients, .. } = done else {
        panic!("bounced: {done:?}");
    };
    assert_eq!(recipients, 2, "x (no NOTIFY) and f, not n");
    let dsn = fs::read(layout.message_path("src.test", "dsn4")).expect("the DSN");
    let text = String::from_utf8_lossy(&dsn);
    for want in [
        "Original-Envelope-Id: env-9",
        "Final-Recipient: rfc822; x@d1.test",
        "Original-Recipient: rfc822;F+x@d1.test",
        "Final-Recipient: rfc822; f@d1.test",
    ] {
        assert!(
            text.contains(want),
            "the DSN should contain {want:?}:\n{text}"
        );
    }
    assert!(!text.contains("n@d1.test"), "n asked for silence:\n{text}");

    let silent = format!(
        "X-Postman-From: <alice@src.test>\nX-Postman-Date: {NOW}\n\
         X-Postman-To: <n@d1.test> NOTIFY=SUCCESS,DELAY\n\nSubject: s\n\nbody\n"
    );
    let path = queued(&layout, "d1.test", "m2", silent.as_bytes());
    assert_eq!(
        bounce(&queue, &r("m2"), &ctx(&[], "dsn5"))
            .expect("bounce")
            .1,
        Done::UnreportedDeleted
    );
    assert!(!path.exists(), "deleted");
    assert!(!layout.message_path("src.test", "dsn5").exists(), "no DSN");
}

/// RET=FULL returns the whole message, but not for a REQUIRETLS message
/// (RFC 8689 §5) nor over the size limit.
#[test]
fn bounce_returns_what_ret_asks() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    // (name, message fields, size limit, whole message returned)
    let cases = [
        ("full", "X-Postman-Ret: FULL\n", 50_000, true),
        ("hdrs", "X-Postman-Ret: HDRS\n", 50_000, false),
        ("absent", "", 50_000, false),
        (
            "requiretls",
            "X-Postman-Ret: FULL\nX-Postman-Requiretls: yes\n",
            50_000,
            false,
        ),
        ("too big", "X-Postman-Ret: FULL\n", 20, false),
    ];
    for (i, (name, fields, limit, whole)) in cases.into_iter().enumerate() {
        let id = format!("r{i}");
        let token = format!("dsn-r{i}");
        queued(
            &layout,
            "d1.test",
            &id,
            &file("alice@src.test", &["x@d1.test"], NOW, fields),
        );
        let ctx = BounceContext {
            bounce_size_limit: limit,
            ..ctx(&[], &token)
        };
        let done = bounce(&queue, &r(&id), &ctx).expect("bounce").1;
        assert!(matches!(done, Done::Bounced { .. }), "{name}: {done:?}");
        let dsn = fs::read(layout.message_path("src.test", &token)).expect("the DSN");
        let text = String::from_utf8_lossy(&dsn);
        let (want, not) = if whole {
            ("Content-Type: message/rfc822", "text/rfc822-headers")
        } else {
            ("Content-Type: text/rfc822-headers", "message/rfc822")
        };
        assert!(text.contains(want), "{name}: {want:?} in\n{text}");
        assert!(!text.contains(not), "{name}: no {not:?} in\n{text}");
        assert_eq!(
            text.contains("body line"),
            whole,
            "{name}: the body\n{text}"
        );
    }
}

#[test]
fn bounce_of_an_unreadable_message_leaves_it_queued() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let path = queued(&layout, "d1.test", "bad", b"garbage without an envelope\n");
    match bounce(&queue, &r("bad"), &ctx(&[], "dsn4")) {
        Err(e @ AdminError::Unreadable { .. }) => {
            assert!(e.to_string().contains("delete it instead"), "{e}")
        }
        other => panic!("unreadable: {other:?}"),
    }
    assert_eq!(
        fs::read(&path).unwrap(),
        b"garbage without an envelope\n",
        "back in place"
    );
}
