//! Tests of bounce placement, each in its own temporary directory.

use super::*;
use crate::queue::{parse_envelope, Layout};
use std::fs;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::create(Layout::new(dir.path())).expect("open the queue");
    (dir, queue)
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn split_address_table() {
    let cases: &[(&str, Option<(&str, &str)>)] = &[
        ("user@Example.ORG", Some(("user", "example.org"))),
        ("User.Name@d.test.", Some(("User.Name", "d.test"))),
        ("\"a@b\"@d.test", Some(("\"a@b\"", "d.test"))),
        ("u@[192.0.2.1]", Some(("u", "[192.0.2.1]"))),
        ("", None),
        ("user", None),
        ("@d.test", None),
        ("user@", None),
        ("user@.", None),
    ];
    for (address, want) in cases {
        let got = split_address(address);
        let got = got.as_ref().map(|(l, d)| (*l, d.as_str()));
        assert_eq!(got, *want, "split_address({address:?})");
    }
}

#[test]
fn is_local_table() {
    let locals = vec!["example.org".to_string(), "mx.example.org".to_string()];
    let cases = [
        ("example.org", true),
        ("EXAMPLE.org", true),
        ("example.org.", true),
        ("mx.example.org", true),
        ("other.example.org", false),
        ("org", false),
        ("", false),
    ];
    for (domain, want) in cases {
        assert_eq!(is_local(domain, &locals), want, "is_local({domain:?})");
    }
    assert!(!is_local("example.org", &[]), "no local domains");
}

#[test]
fn deliver_local_writes_new_through_tmp() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let message = b"From: MAILER-DAEMON@h\r\nSubject: x\r\n\r\nbody\r\n";
    let path = deliver_local(&queue, "alice", message, "1700000000.P42Q1.h").expect("delivered");
    let mailbox = layout.root().join("alice");
    assert_eq!(path, mailbox.join("new").join("1700000000.P42Q1.h"), "path");
    assert_eq!(fs::read(&path).expect("read"), message, "contents");
    for sub in ["tmp", "new", "cur"] {
        assert!(mailbox.join(sub).is_dir(), "{sub} created");
    }
    assert!(names(&mailbox.join("tmp")).is_empty(), "tmp left empty");

    let err = deliver_local(&queue, "alice", b"other", "1700000000.P42Q1.h")
        .expect_err("same unique name");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "kind of {err}");
    assert_eq!(fs::read(&path).expect("read"), message, "first copy kept");
    assert!(
        names(&mailbox.join("tmp")).is_empty(),
        "tmp cleaned after refusal"
    );
}

#[test]
fn deliver_local_refuses_escaping_names() {
    let (dir, queue) = queue();
    let cases = [
        ("", "u1"),
        ("..", "u1"),
        (".", "u1"),
        ("a/b", "u1"),
        ("../etc", "u1"),
        (".OTHER_SERVERS", "u1"),
        ("nul\0", "u1"),
        ("alice", ""),
        ("alice", "../x"),
        ("alice", ".hidden"),
        ("alice", "a:2,S"),
    ];
    for (user, unique) in cases {
        let err = deliver_local(&queue, user, b"m", unique)
            .expect_err(&format!("user {user:?} unique {unique:?}"));
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "user {user:?} unique {unique:?}: {err}"
        );
    }
    assert_eq!(
        names(dir.path()),
        [".OTHER_SERVERS"],
        "nothing created but the queue"
    );
}

#[test]
fn enqueue_remote_writes_a_queue_file() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let arrival = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let message = b"Subject: bounce\r\n\r\nbody\r\n";
    let rcpts = vec!["s@e.org".to_string()];
    let path =
        enqueue_remote(&queue, "e.org", "", &rcpts, arrival, message, "b1").expect("enqueued");
    assert_eq!(path, layout.message_path("e.org", "b1"), "path");
    let env = parse_envelope(&fs::read(&path).expect("read")).expect("valid queue file");
    assert_eq!(env.sender, "", "null sender");
    assert_eq!(env.recipients, rcpts, "recipients");
    assert_eq!(env.arrival, Some(arrival), "arrival");
    let contents = fs::read(&path).expect("read");
    assert_eq!(
        &contents[env.body_offset as usize..],
        message,
        "message after block"
    );
    assert!(names(&layout.tmp_dir("e.org")).is_empty(), "tmp left empty");
    assert_eq!(
        crate::queue::list_messages(&queue.domain("e.org").expect("domain")).expect("list"),
        ["b1"],
        "listed"
    );

    let err =
        enqueue_remote(&queue, "e.org", "", &rcpts, arrival, b"x", "b1").expect_err("name taken");
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "kind of {err}");
    let cases: [(&str, &[String], &str); 5] = [
        ("E.org", &rcpts, "b2"),
        ("../e.org", &rcpts, "b2"),
        ("e.org", &[], "b2"),
        ("e.org", &rcpts, "tmp/b2"),
        ("e.org", &rcpts, ".b2"),
    ];
    for (domain, rcpts, unique) in cases {
        let err = enqueue_remote(&queue, domain, "", rcpts, arrival, b"x", unique)
            .expect_err(&format!("{domain:?} {rcpts:?} {unique:?}"));
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "{domain:?} {unique:?}: {err}"
        );
    }
    let bad_rcpt = vec!["no-at-sign".to_string()];
    let err = enqueue_remote(&queue, "e.org", "", &bad_rcpt, arrival, b"x", "b3")
        .expect_err("bad recipient");
    assert!(err.to_string().contains("no-at-sign"), "{err}");
}

#[test]
fn place_bounce_local_and_remote() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let locals = vec!["here.test".to_string()];
    let arrival = UNIX_EPOCH + Duration::from_secs(5);
    let local =
        place_bounce(&queue, &locals, "bob@HERE.test", arrival, b"m1", "u1").expect("local");
    assert_eq!(
        local,
        Placed::Local(layout.root().join("bob/new/u1")),
        "local placement"
    );
    let remote =
        place_bounce(&queue, &locals, "carol@Far.Test", arrival, b"m2", "u2").expect("remote");
    let path = layout.message_path("far.test", "u2");
    assert_eq!(remote, Placed::Remote(path.clone()), "remote placement");
    let contents = fs::read(&path).expect("read");
    let env = parse_envelope(&contents).expect("parses");
    assert_eq!(env.sender, "", "bounce has the null sender");
    assert_eq!(env.recipients, ["carol@Far.Test"], "recipient as written");

    for sender in ["", "nodomain"] {
        let err = place_bounce(&queue, &locals, sender, arrival, b"m", "u3")
            .expect_err(&format!("sender {sender:?}"));
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{sender:?}: {err}");
    }
}

#[test]
fn header_section_table() {
    let big_line = format!("X-Big: {}\r\n", "a".repeat(MAX_RETURNED_HEADERS));
    let many = "X-Line: 0123456789\r\n".repeat(MAX_RETURNED_HEADERS / 20 + 10);
    let cases: Vec<(&str, String, String)> = vec![
        (
            "crlf",
            "A: 1\r\nB: 2\r\n\r\nbody".into(),
            "A: 1\r\nB: 2\r\n".into(),
        ),
        ("lf", "A: 1\nB: 2\n\nbody\n".into(), "A: 1\nB: 2\n".into()),
        ("no body", "A: 1\r\n".into(), "A: 1\r\n".into()),
        (
            "no final break",
            "A: 1\r\nB: 2".into(),
            "A: 1\r\nB: 2".into(),
        ),
        ("empty", String::new(), String::new()),
        ("body only", "\r\nbody".into(), String::new()),
        ("first line too long", big_line.clone(), String::new()),
    ];
    for (what, message, want) in &cases {
        let got = header_section(message.as_bytes());
        assert_eq!(got, want.as_bytes(), "header_section of {what}");
    }
    let got = header_section(many.as_bytes());
    assert!(got.len() <= MAX_RETURNED_HEADERS, "{} bytes", got.len());
    assert!(got.len() > MAX_RETURNED_HEADERS - 20, "cut near the limit");
    assert!(got.ends_with(b"\r\n"), "cut after a whole line");
}

#[test]
fn read_original_headers_from_a_queue_file() {
    let (_dir, queue) = queue();
    let arrival = UNIX_EPOCH + Duration::from_secs(5);
    let mut message = b"From: a@b\r\nSubject: s\r\n\r\n".to_vec();
    message.extend(std::iter::repeat_n(b'x', 300_000));
    let path = enqueue_remote(
        &queue,
        "d.test",
        "a@b",
        &["c@d.test".into()],
        arrival,
        &message,
        "m",
    )
    .expect("enqueue");
    let env = parse_envelope(&fs::read(&path).expect("read")).expect("envelope");
    let file = fs::File::open(&path).expect("open");
    let headers = read_original_headers(&file, env.body_offset).expect("headers");
    assert_eq!(
        headers,
        b"From: a@b\r\nSubject: s\r\n",
        "headers of {}",
        path.display()
    );
}

/// The whole message comes back at or under the limit, `None` over it,
/// whatever the file's size.
#[test]
fn read_original_message_within_a_limit() {
    let (_dir, queue) = queue();
    let arrival = UNIX_EPOCH + Duration::from_secs(5);
    let message = b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
    let path = enqueue_remote(
        &queue,
        "d.test",
        "a@b",
        &["c@d.test".into()],
        arrival,
        &message,
        "m",
    )
    .expect("enqueue");
    let env = parse_envelope(&fs::read(&path).expect("read")).expect("envelope");
    let file = fs::File::open(&path).expect("open");
    let len = message.len();
    // (limit, whole message expected)
    let cases = [(len + 100, true), (len, true), (len - 1, false), (0, false)];
    for (limit, whole) in cases {
        let got = read_original_message(&file, env.body_offset, limit).expect("read");
        let want = whole.then(|| message.clone());
        assert_eq!(got, want, "limit {limit} for a {len}-byte message");
    }
}

#[test]
fn a_linked_mailbox_or_sub_folder_is_refused() {
    let (dir, queue) = queue();
    let outside = tempfile::tempdir().expect("outside");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("mallory")).expect("link");
    fs::create_dir_all(dir.path().join("bob")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), dir.path().join("bob/new")).expect("link");
    for user in ["mallory", "bob"] {
        let err = deliver_local(&queue, user, b"m", "u1").expect_err(user);
        assert!(
            crate::queue::dirfd::refusal(&err).is_some(),
            "{user}: a refusal, not {err}"
        );
    }
    assert!(names(outside.path()).is_empty(), "nothing written outside");
    assert!(
        names(&dir.path().join("bob/tmp")).is_empty(),
        "no temporary file left"
    );
}

#[test]
fn permanent_write_errors_by_kind_and_errno() {
    use nix::errno::Errno;
    let errno = |e: Errno| io::Error::from_raw_os_error(e as i32);
    let cases: Vec<(io::Error, bool)> = vec![
        (errno(Errno::ENAMETOOLONG), true),
        (errno(Errno::EINVAL), true),
        (
            io::Error::new(io::ErrorKind::InvalidInput, "no mailbox name"),
            true,
        ),
        (
            io::Error::new(io::ErrorKind::InvalidData, "a link in the way"),
            false,
        ),
        (errno(Errno::ELOOP), false),
        (errno(Errno::ENOTDIR), false),
        (errno(Errno::ENOSPC), false),
        (errno(Errno::EDQUOT), false),
        (errno(Errno::EIO), false),
        (errno(Errno::EMFILE), false),
        (errno(Errno::EACCES), false),
        (errno(Errno::EROFS), false),
        (errno(Errno::ENOENT), false),
        // The text does not count.
        (io::Error::other("File name too long"), false),
    ];
    for (e, want) in cases {
        assert_eq!(is_permanent(&e), want, "{e:?}");
    }
}
