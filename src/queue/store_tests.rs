//! Tests of the queue's file operations, each in its own temporary directory.

use super::*;
use crate::queue::{valid_domain, Layout};
use std::fs;
use std::os::unix::fs::symlink;

const BLOCK: &str = "X-Postman-From: <s@e.org>\r\nX-Postman-To: <a@d.test>\r\n\r\n";

fn queue() -> (tempfile::TempDir, Queue) {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::create(Layout::new(dir.path())).expect("open the queue");
    (dir, queue)
}

/// The domain folder `d.test` (made if missing) as a handle.
fn domain(queue: &Queue) -> std::sync::Arc<QueueDir> {
    queue.domain_create("d.test").expect("domain folder")
}

fn write(path: &Path, contents: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn read_envelope_and_body_from_a_real_file() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    // A body larger than several chunks, with line ends of both kinds.
    let body: Vec<u8> = (0..200_000u32)
        .flat_map(|i| {
            if i % 50 == 0 {
                b"\r\n".to_vec()
            } else {
                vec![b'a' + (i % 26) as u8]
            }
        })
        .collect();
    let path = layout.message_path("d.test", "m1");
    let mut contents = BLOCK.as_bytes().to_vec();
    contents.extend_from_slice(&body);
    write(&path, &contents);

    let (mut file, _) = domain(&queue).open_file("m1").expect("open");
    let env = read_envelope_from(&mut file).expect("envelope");
    assert_eq!(env.sender, "s@e.org", "sender of {}", path.display());
    assert_eq!(env.recipients, vec!["a@d.test".to_string()], "recipients");
    assert_eq!(env.body_offset, BLOCK.len() as u64, "body_offset");

    let mut reader = BodyReader::from_file(file, env.body_offset).expect("open body");
    let mut buf = Vec::new();
    let mut got = Vec::new();
    let mut chunks = 0;
    loop {
        let n = reader.read_chunk(&mut buf).expect("read chunk");
        assert_eq!(n, buf.len(), "returned length is the buffer's");
        assert!(n <= BODY_CHUNK, "chunk of {n} bytes exceeds {BODY_CHUNK}");
        if n == 0 {
            break;
        }
        chunks += 1;
        got.extend_from_slice(&buf);
    }
    assert_eq!(chunks, body.len().div_ceil(BODY_CHUNK), "number of chunks");
    assert!(
        got == body,
        "body read back differs ({} vs {} bytes)",
        got.len(),
        body.len()
    );
    assert_eq!(
        reader.read_chunk(&mut buf).expect("read at end"),
        0,
        "stays at end"
    );
}

#[test]
fn read_envelope_with_a_block_spanning_chunks() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    let path = layout.message_path("d.test", "big-head");
    let rcpts: Vec<String> = (0..500).map(|i| format!("<user{i}@d.test>")).collect();
    let block = format!(
        "X-Postman-From: <>\nX-Postman-To: {}\n\nbody",
        rcpts.join(",\n ")
    );
    write(&path, block.as_bytes());
    let env = read_envelope(&domain(&queue), "big-head").expect("envelope");
    assert_eq!(
        env.recipients.len(),
        500,
        "recipients of a {}-byte block",
        block.len()
    );
    assert_eq!(env.body_offset as usize, block.len() - 4, "body_offset");
}

#[test]
fn read_envelope_errors() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    match read_envelope(&domain(&queue), "gone") {
        Err(ReadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
        other => panic!("missing file: {other:?}"),
    }

    type Case = (&'static str, Vec<u8>, fn(&EnvelopeError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "truncated",
            b"X-Postman-From: <>\nX-Postman-To: <a@d.test>\n".to_vec(),
            |e| matches!(e, EnvelopeError::Unterminated { .. }),
        ),
        (
            "raw message",
            b"Received: x\nSubject: y\n\nbody".to_vec(),
            |e| matches!(e, EnvelopeError::NotEnvelopeHeader { line: 1, .. }),
        ),
        ("huge", vec![b'x'; 3 * MAX_ENVELOPE_BLOCK], |e| {
            matches!(e, EnvelopeError::TooLarge { .. })
        }),
    ];
    for (name, contents, is_expected) in cases {
        let path = layout.message_path("d.test", name);
        write(&path, &contents);
        match read_envelope(&domain(&queue), name) {
            Err(ReadError::Envelope(e)) => assert!(is_expected(&e), "{name}: wrong error {e:?}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn list_domains_and_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    let remote = layout.remote_dir();
    let none = Queue::open(layout.clone()).expect("open");
    assert_eq!(
        list_domains(&none).map_err(|e| e.kind()),
        Err(io::ErrorKind::NotFound),
        "no .OTHER_SERVERS yet"
    );
    let queue = Queue::create(layout.clone()).expect("create");
    for d in ["b.test", "a.test", "Bad_Name", ".hidden"] {
        fs::create_dir_all(remote.join(d).join("tmp")).expect("mkdir");
    }
    write(&remote.join("stray-file"), b"x");
    symlink(remote.join("a.test"), remote.join("c.test")).expect("symlink");
    fs::create_dir(remote.join(std::ffi::OsStr::from_bytes(b"caf\xe9.test"))).expect("mkdir");

    let domains = list_domains(&queue).expect("list domains");
    assert_eq!(
        domains,
        ["Bad_Name", "a.test", "b.test"],
        "domains: no link, no name that is not UTF-8"
    );
    let valid: Vec<&String> = domains.iter().filter(|d| valid_domain(d)).collect();
    assert_eq!(valid, ["a.test", "b.test"], "valid domains");

    let dir = layout.domain_dir("a.test");
    for name in ["m2", "m1", ".dotfile", "tmp/inside-tmp"] {
        write(&dir.join(name), BLOCK.as_bytes());
    }
    fs::create_dir_all(dir.join(".failed")).expect("mkdir .failed");
    fs::create_dir_all(dir.join("subdir")).expect("mkdir subdir");
    write(&dir.join(".failed/old"), b"x");
    symlink(dir.join("m1"), dir.join("link")).expect("symlink");
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    write(
        &dir.join(std::ffi::OsStr::from_bytes(b"m\xff")),
        BLOCK.as_bytes(),
    );
    assert_eq!(
        list_messages(&queue.domain("a.test").expect("a.test")).expect("list"),
        ["m1", "m2"],
        "messages of {}",
        dir.display()
    );
    assert_eq!(
        queue.domain("nope.test").map(drop).map_err(|e| e.kind()),
        Err(io::ErrorKind::NotFound),
        "missing domain folder"
    );
}

#[test]
fn escape_name_table() {
    let cases: &[(&[u8], &str)] = &[
        (b"m1", "m1"),
        (b"caf\xc3\xa9", "caf\u{e9}"),
        (b"caf\xe9", "caf\\xE9"),
        (b"\xff\xfe", "\\xFF\\xFE"),
        (b"a\\b\x80", "a\\b\\x80"),
        (b"\xe2\x82", "\\xE2\\x82"),
    ];
    for (raw, want) in cases {
        assert_eq!(
            escape_name(OsStr::from_bytes(raw)),
            *want,
            "escape_name({raw:?})"
        );
    }
}

type SetAside = fn(&Queue, &str, &str, &str) -> io::Result<PathBuf>;

#[test]
fn set_aside_moves_with_reason_and_never_overwrites() {
    let cases: &[(&str, SetAside, &str)] = &[
        ("failed", set_aside_failed, ".failed"),
        ("quarantine", quarantine, ".quarantine"),
    ];
    for (what, set_aside, sub) in cases {
        let (_dir, queue) = queue();
        let layout = queue.layout().clone();
        let domain_dir = layout.domain_dir("d.test");
        let target_dir = domain_dir.join(sub);
        let mut expected = Vec::new();
        for (round, want_name) in ["m1", "m1.1", "m1.2"].iter().enumerate() {
            let contents = format!("{BLOCK}round {round}");
            write(&domain_dir.join("m1"), contents.as_bytes());
            let reason = format!("reason {round}");
            let moved = set_aside(&queue, "d.test", "m1", &reason)
                .unwrap_or_else(|e| panic!("{what} round {round}: {e}"));
            assert_eq!(
                moved,
                target_dir.join(want_name),
                "{what} round {round}: target"
            );
            assert!(
                !domain_dir.join("m1").exists(),
                "{what} round {round}: source left"
            );
            let reason_path = target_dir.join(format!("{want_name}.reason"));
            assert_eq!(
                read(&reason_path),
                format!("{reason}\n"),
                "{what} round {round}: reason"
            );
            expected.push((moved, contents));
        }
        for (path, contents) in &expected {
            assert_eq!(
                &read(path),
                contents,
                "{what}: {} overwritten",
                path.display()
            );
        }
        // An orphan reason file also blocks its name.
        write(&target_dir.join("m9.reason"), b"orphan\n");
        write(&domain_dir.join("m9"), BLOCK.as_bytes());
        let moved = set_aside(&queue, "d.test", "m9", "new\n").expect("set aside m9");
        assert_eq!(
            moved,
            target_dir.join("m9.1"),
            "{what}: orphan reason respected"
        );
        assert_eq!(
            read(&target_dir.join("m9.reason")),
            "orphan\n",
            "{what}: orphan kept"
        );
        assert_eq!(
            read(&target_dir.join("m9.1.reason")),
            "new\n",
            "{what}: newline not doubled"
        );
        // No temporary file is left behind, and the folder is invisible to listing.
        let leftovers: Vec<_> = fs::read_dir(&target_dir)
            .expect("read target dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{what}: temporary files left: {leftovers:?}"
        );
        assert!(
            list_messages(&queue.domain("d.test").expect("d.test"))
                .expect("list")
                .is_empty(),
            "{what}: listed"
        );
    }
}

#[test]
fn set_aside_errors() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    fs::create_dir_all(layout.domain_dir("d.test")).expect("mkdir");
    let missing = quarantine(&queue, "d.test", "gone", "x").map_err(|e| e.kind());
    // A linked .quarantine is refused: nothing goes out of the queue.
    let outside = tempfile::tempdir().expect("outside");
    fs::create_dir_all(layout.domain_dir("e.test")).expect("mkdir");
    symlink(
        outside.path(),
        layout.domain_dir("e.test").join(QUARANTINE_DIR),
    )
    .expect("link");
    write(&layout.message_path("e.test", "m1"), b"x");
    let e = quarantine(&queue, "e.test", "m1", "x").expect_err("linked .quarantine");
    assert!(crate::queue::dirfd::refusal(&e).is_some(), "{e}");
    assert!(
        layout.message_path("e.test", "m1").exists(),
        "left in place"
    );
    assert_eq!(
        fs::read_dir(outside.path()).expect("list").count(),
        0,
        "nothing outside"
    );
    assert_eq!(missing, Err(io::ErrorKind::NotFound), "source missing");
    for (domain, name) in [("d.test", "../x"), ("d.test", ""), ("d.test", "..")] {
        let result = set_aside_failed(&queue, domain, name, "x").map_err(|e| e.kind());
        assert_eq!(
            result,
            Err(io::ErrorKind::InvalidInput),
            "({domain:?}, {name:?})"
        );
    }
    let result = set_aside_failed(&queue, "..", "m1", "x");
    assert!(
        result
            .as_ref()
            .is_err_and(|e| crate::queue::dirfd::refusal(e).is_some()),
        "(.., m1): {result:?}"
    );
}

#[test]
fn copy_aside_failed_keeps_the_source_and_never_overwrites() {
    let (_dir, queue) = queue();
    let layout = queue.layout().clone();
    write(
        &layout.message_path("d.test", "m1"),
        b"X-Postman-From: <>\n\nbody\n",
    );
    let claimed = crate::queue::claim(&queue, "d.test", "m1", "me.1")
        .expect("claim")
        .expect("there");
    let source = claimed.path();
    let first = claimed.copy_aside_failed("<a@d.test>: 550").unwrap();
    let second = claimed.copy_aside_failed("<b@d.test>: 550").unwrap();
    assert_ne!(first, second, "the second copy gets its own name");
    assert_eq!(
        fs::read(&first).unwrap(),
        fs::read(&source).unwrap(),
        "a faithful copy"
    );
    assert!(source.exists(), "the source stays");
    let reason = fs::read_to_string(second.with_file_name("m1.1.reason")).unwrap();
    assert!(reason.contains("<b@d.test>"), "{reason}");
    let failed = layout.domain_dir("d.test").join(".failed");
    let leftovers: Vec<_> = fs::read_dir(&failed)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary copy left");
    claimed.complete().expect("complete");
}
