//! Tests of state files: the tie, reading a message with its state file,
//! and what start-up removes.

use super::*;
use crate::queue::{Layout, Queue};
use std::fs;
use std::time::UNIX_EPOCH;

const FILE: &[u8] = b"X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>, <b@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";
const BLOCK_LEN: usize = 89;

fn queue() -> (tempfile::TempDir, Queue, std::sync::Arc<QueueDir>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let layout = Layout::new(dir.path());
    fs::create_dir_all(layout.tmp_dir("d.test")).expect("mkdir");
    fs::write(layout.message_path("d.test", "m1"), FILE).expect("write m1");
    let queue = Queue::open(layout).expect("queue");
    let domain = queue.domain("d.test").expect("domain");
    (dir, queue, domain)
}

fn read(domain: &QueueDir, name: &str) -> Result<Queued, ReadError> {
    let (mut file, meta) = domain.open_file(name).expect("open");
    read_queued(domain, name, &mut file, meta.len(), "d.test")
}

fn tie() -> Tie {
    Tie::of(FILE.len() as u64, &FILE[..BLOCK_LEN])
}

/// A state block naming `tie`, with `to` pending and 2 attempts.
fn state(to: &str, tie: Tie) -> Vec<u8> {
    format!(
        "X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: {to}\r\nX-Postman-Attempts: 2\r\n{QUEUE_FILE_FIELD}: {}\r\n\r\n",
        tie.field_value()
    )
    .into_bytes()
}

fn put_state(queue: &Queue, name: &str, bytes: &[u8]) {
    let dir = queue.layout().domain_dir("d.test").join(STATE_DIR);
    fs::create_dir_all(&dir).expect("mkdir .state");
    fs::write(dir.join(name), bytes).expect("write state");
}

#[test]
fn the_tie_reads_back_and_fnv_is_fnv() {
    // The FNV-1a 64 test vectors of its authors.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    let t = Tie {
        size: 42,
        hash: 0xff,
    };
    assert_eq!(t.field_value(), "42 00000000000000ff");
    assert_eq!(Tie::parse(&t.field_value()), Some(t));
    for bad in ["", "42", "x 00ff", "42 zz", "-1 00"] {
        assert_eq!(Tie::parse(bad), None, "{bad:?}");
    }
    assert_eq!(
        &FILE[BLOCK_LEN - 4..BLOCK_LEN],
        b"\r\n\r\n",
        "the block's end"
    );
}

#[test]
fn a_message_is_its_own_block_or_its_state_file_when_that_names_it() {
    let (_dir, queue, domain) = queue();
    let own = read(&domain, "m1").expect("own");
    assert_eq!(own.source, Source::Own);
    assert_eq!(own.envelope.recipients, ["a@d.test", "b@d.test"]);
    assert_eq!(own.tie, tie());
    assert_eq!(own.block_len, BLOCK_LEN as u64);

    put_state(&queue, "m1", &state("b@d.test", tie()));
    let stated = read(&domain, "m1").expect("with state");
    assert_eq!(stated.source, Source::StateFile);
    assert_eq!(stated.envelope.recipients, ["b@d.test"], "pending");
    assert_eq!(stated.retry.attempts, 2, "retry");
    assert_eq!(
        stated.envelope.body_offset, BLOCK_LEN as u64,
        "the file's body"
    );
    assert!(
        stated
            .envelope
            .extra
            .iter()
            .all(|(n, _)| n != QUEUE_FILE_FIELD),
        "the tie is not an extra: {:?}",
        stated.envelope.extra
    );

    // (state file, why it is ignored)
    let other = Tie { size: 1, hash: 2 };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (state("b@d.test", other), "names another queue file"),
        (b"garbage\n\n".to_vec(), "not an X-Postman- header"),
        (b"\0\0\0\0".to_vec(), "no empty line"),
    ];
    for (bytes, why) in cases {
        put_state(&queue, "m1", &bytes);
        let q = read(&domain, "m1").expect("reads");
        match &q.source {
            Source::Ignored(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{why}: {other:?}"),
        }
        assert_eq!(q.envelope.recipients, ["a@d.test", "b@d.test"], "{why}");
    }
    // A link in its place is refused, never followed.
    let path = queue
        .layout()
        .domain_dir("d.test")
        .join(STATE_DIR)
        .join("m1");
    fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink("/etc/passwd", &path).expect("link");
    assert!(matches!(
        read(&domain, "m1").expect("reads").source,
        Source::Ignored(_)
    ));
}

#[test]
fn a_state_file_names_recipients_of_the_folder_only() {
    let (_dir, queue, domain) = queue();
    put_state(&queue, "m1", &state("victim@other.test", tie()));
    let err = read(&domain, "m1").expect_err("foreign recipient");
    assert!(err.to_string().contains("victim@other.test"), "{err}");
}

#[test]
fn state_files_move_and_go_only_with_their_own_message() {
    let (_dir, queue, domain) = queue();
    put_state(&queue, "m1", &state("b@d.test", tie()));
    let aside = domain.dir_create(".failed").expect("mkdir");
    move_state_beside(&domain, "m1", Some(Tie { size: 1, hash: 1 }), &aside, "m1")
        .expect("not moved");
    remove_state_of(&domain, "m1", Some(Tie { size: 1, hash: 1 })).expect("not removed");
    let state_path = queue.layout().domain_dir("d.test").join(".state/m1");
    assert!(state_path.exists(), "another message's state stays");
    move_state_beside(&domain, "m1", Some(tie()), &aside, "m1.1").expect("moved");
    assert!(!state_path.exists(), "moved away");
    assert!(
        queue
            .layout()
            .domain_dir("d.test")
            .join(".failed/m1.1.state")
            .exists(),
        "beside the message"
    );
}

#[test]
fn start_up_removes_stale_and_orphan_state_files_past_their_grace() {
    let (_dir, queue, domain) = queue();
    let layout = queue.layout().clone();
    let dir = layout.domain_dir("d.test");
    // m1 queued, with its own state; m2 held, m3 claimed, both with theirs;
    // m4 queued with another file's state; gone: no message at all.
    for (sub, name) in [(".hold", "m2"), (".active/o1", "m3"), ("", "m4")] {
        fs::create_dir_all(dir.join(sub)).expect("mkdir");
        fs::write(dir.join(sub).join(name), FILE).expect("write");
    }
    for name in ["m1", "m2", "m3", "gone"] {
        put_state(&queue, name, &state("b@d.test", tie()));
    }
    put_state(&queue, "m4", &state("b@d.test", Tie { size: 9, hash: 9 }));
    put_state(&queue, "young", &state("b@d.test", tie()));
    // The clock of the file system: the young one was written just now.
    let now = fs::metadata(dir.join(STATE_DIR).join("young"))
        .and_then(|m| m.modified())
        .expect("mtime");
    let old = set_back(&dir.join(STATE_DIR), &["m1", "m2", "m3", "m4", "gone"], now);
    let mut sweep = StateSweep::default();
    sweep_states(&domain, now, std::time::Duration::from_secs(60), &mut sweep);
    assert!(sweep.errors.is_empty(), "{:?}", sweep.errors);
    let names = |paths: &[std::path::PathBuf]| -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&sweep.orphans), ["gone"], "orphans");
    assert_eq!(names(&sweep.stale), ["m4"], "stale");
    let mut left: Vec<String> = fs::read_dir(dir.join(STATE_DIR))
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["m1", "m2", "m3", "young"], "{old:?}");
}

/// Sets the modification time of `names` in `dir` an hour before `now`.
fn set_back(dir: &std::path::Path, names: &[&str], now: std::time::SystemTime) -> Vec<String> {
    let hour_ago = now - std::time::Duration::from_secs(3600);
    let secs = hour_ago
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let times = [
        nix::sys::time::TimeSpec::new(secs, 0),
        nix::sys::time::TimeSpec::new(secs, 0),
    ];
    for name in names {
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &dir.join(name),
            &times[0],
            &times[1],
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("utimensat");
    }
    names.iter().map(|n| n.to_string()).collect()
}
