//! Tests of the queue's directory-descriptor operations against a real
//! temporary directory, with links, FIFOs and sockets planted in it.

use super::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;

fn root() -> (tempfile::TempDir, QueueDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = QueueDir::open_root(dir.path()).expect("open root");
    (dir, root)
}

fn kind_of(e: &io::Error) -> Option<RefusedKind> {
    refusal(e).map(|r| r.kind)
}

/// A directory outside the root, with a file in it, that links point at.
fn outside() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("outside");
    let file = dir.path().join("secret");
    fs::write(&file, b"outside the root").expect("write secret");
    (dir, file)
}

#[test]
fn the_root_itself_may_be_a_link() {
    let (real, _) = root();
    let holder = tempfile::tempdir().expect("holder");
    let link = holder.path().join("queue");
    symlink(real.path(), &link).expect("symlink root");
    let root = QueueDir::open_root(&link).expect("a linked root opens");
    fs::create_dir(real.path().join("d")).expect("mkdir");
    assert!(root.dir("d").is_ok(), "a folder under a linked root opens");
}

#[test]
fn links_are_refused_at_every_component_and_for_every_operation() {
    let (dir, root) = root();
    let (elsewhere, secret) = outside();
    fs::create_dir_all(dir.path().join("real/sub")).expect("mkdir");
    fs::write(dir.path().join("real/sub/f"), b"x").expect("write");
    symlink(elsewhere.path(), dir.path().join("linkdir")).expect("link to a folder");
    symlink(&secret, dir.path().join("real/linkfile")).expect("link to a file");
    symlink(dir.path().join("real"), dir.path().join("inner")).expect("link inside the root");

    let cases: Vec<(&str, io::Result<()>)> = vec![
        ("dir(linkdir)", root.dir("linkdir").map(drop)),
        ("dir(inner/sub)", root.dir("inner/sub").map(drop)),
        (
            "dir_create(linkdir/new)",
            root.dir_create("linkdir/new").map(drop),
        ),
        (
            "open_file(real/linkfile)",
            root.open_file("real/linkfile").map(drop),
        ),
        (
            "open_file(inner/sub/f)",
            root.open_file("inner/sub/f").map(drop),
        ),
        (
            "open_file(linkdir/secret)",
            root.open_file("linkdir/secret").map(drop),
        ),
        (
            "read_small(real/linkfile)",
            root.read_small("real/linkfile", 100).map(drop),
        ),
        (
            "create_new(linkdir/x)",
            root.create_new("linkdir/x", 0o600).map(drop),
        ),
        (
            "remove_file(linkdir/secret)",
            root.remove_file("linkdir/secret"),
        ),
        (
            "rename(linkdir/secret)",
            root.rename("linkdir/secret", &root, "real/stolen"),
        ),
        (
            "rename into linkdir",
            root.rename("real/sub/f", &root, "linkdir/f"),
        ),
        (
            "stat(linkdir/secret)",
            root.stat("linkdir/secret").map(drop),
        ),
    ];
    for (what, result) in cases {
        let e = result.expect_err(what);
        assert_eq!(kind_of(&e), Some(RefusedKind::Link), "{what}: {e}");
        assert!(
            e.to_string().contains("symbolic link"),
            "{what}: message {e}"
        );
    }
    assert_eq!(
        fs::read(&secret).expect("secret still there"),
        b"outside the root",
        "nothing outside was touched"
    );
    assert!(
        !elsewhere.path().join("new").exists(),
        "no folder made outside"
    );
    assert!(
        dir.path().join("real/sub/f").exists(),
        "the file did not move"
    );
}

#[test]
fn a_link_entry_is_moved_or_removed_as_itself() {
    let (dir, root) = root();
    let (_elsewhere, secret) = outside();
    fs::create_dir_all(dir.path().join("d/.quarantine")).expect("mkdir");
    symlink(&secret, dir.path().join("d/m1")).expect("link");
    let d = root.dir("d").expect("d");
    let q = d.dir(".quarantine").expect("quarantine");
    d.rename_no_clobber("m1", &q, "m1")
        .expect("moving a link moves the link");
    assert!(
        fs::symlink_metadata(dir.path().join("d/.quarantine/m1"))
            .expect("moved")
            .file_type()
            .is_symlink(),
        "still a link"
    );
    q.remove_file("m1")
        .expect("removing a link removes the link");
    assert!(secret.exists(), "its target is untouched");
}

#[test]
fn special_files_are_refused_without_blocking() {
    let (dir, root) = root();
    nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let _listener =
        std::os::unix::net::UnixListener::bind(dir.path().join("sock")).expect("socket");
    fs::create_dir(dir.path().join("folder")).expect("mkdir");
    let cases = [
        ("fifo", RefusedKind::Fifo),
        ("sock", RefusedKind::Socket),
        ("folder", RefusedKind::Directory),
    ];
    for (name, want) in cases {
        let e = root.open_file(name).expect_err(name);
        assert_eq!(kind_of(&e), Some(want), "open_file({name}): {e}");
        let e = root.read_small(name, 10).expect_err(name);
        assert_eq!(kind_of(&e), Some(want), "read_small({name}): {e}");
    }
    // A FIFO cannot be opened for writing (no reader) without blocking either.
    let e = root.open_file_rw("fifo").expect_err("fifo rw");
    assert!(
        matches!(kind_of(&e), Some(RefusedKind::Fifo)),
        "open_file_rw(fifo): {e}"
    );
    let e = root.dir("fifo").expect_err("fifo as dir");
    assert_eq!(
        kind_of(&e),
        Some(RefusedKind::Fifo),
        "dir(fifo) says what it is: {e}"
    );
    fs::write(dir.path().join("plain"), b"").expect("write");
    let e = root.dir("plain").expect_err("file as dir");
    assert_eq!(
        kind_of(&e),
        Some(RefusedKind::NotDirectory),
        "dir(plain): {e}"
    );
}

#[test]
fn read_small_is_bounded() {
    let (dir, root) = root();
    fs::write(dir.path().join("small"), b"12345").expect("write");
    fs::write(dir.path().join("big"), vec![b'x'; 10_000]).expect("write");
    assert_eq!(
        root.read_small("small", 5).expect("at the limit"),
        Some(b"12345".to_vec())
    );
    let e = root.read_small("big", 4096).expect_err("over the limit");
    assert_eq!(
        kind_of(&e),
        Some(RefusedKind::TooLarge { limit: 4096 }),
        "{e}"
    );
    assert_eq!(
        root.read_small("none", 10).expect("missing"),
        None,
        "missing is None"
    );
}

#[test]
fn bad_relative_paths_are_refused() {
    let (_dir, root) = root();
    for rel in ["", "/etc", "..", "a/../b", "./a", "a/./b", "a//b", "a/"] {
        let e = root.open_file(rel).expect_err(rel);
        assert_eq!(
            kind_of(&e),
            Some(RefusedKind::BadName),
            "open_file({rel:?}): {e}"
        );
        let e = root.dir(rel).expect_err(rel);
        assert_eq!(kind_of(&e), Some(RefusedKind::BadName), "dir({rel:?}): {e}");
    }
}

#[test]
fn dir_create_makes_each_component_and_refuses_files_in_the_way() {
    let (dir, root) = root();
    let made = root.dir_create("a/b/c").expect("mkdir -p");
    assert_eq!(made.path(), dir.path().join("a/b/c"), "its path");
    assert!(dir.path().join("a/b/c").is_dir(), "made");
    root.dir_create("a/b/c").expect("again: nothing to do");
    fs::write(dir.path().join("a/file"), b"").expect("write");
    let e = root.dir_create("a/file/x").expect_err("a file in the way");
    assert_eq!(kind_of(&e), Some(RefusedKind::NotDirectory), "{e}");
}

#[test]
fn entries_list_names_and_kinds_without_following() {
    let (dir, root) = root();
    let (_elsewhere, secret) = outside();
    fs::write(dir.path().join("file"), b"").expect("write");
    fs::create_dir(dir.path().join("sub")).expect("mkdir");
    symlink(&secret, dir.path().join("link")).expect("link");
    nix::unistd::mkfifo(&dir.path().join("fifo"), Mode::from_bits_truncate(0o600)).expect("fifo");
    let odd = OsStr::from_bytes(b"caf\xe9");
    fs::write(dir.path().join(odd), b"").expect("non-UTF-8 name");
    for round in 0..2 {
        let mut got = root.entries().expect("entries");
        got.sort_by(|a, b| a.name.cmp(&b.name));
        let want = vec![
            Entry {
                name: odd.to_owned(),
                kind: EntryKind::File,
            },
            Entry {
                name: "fifo".into(),
                kind: EntryKind::Special,
            },
            Entry {
                name: "file".into(),
                kind: EntryKind::File,
            },
            Entry {
                name: "link".into(),
                kind: EntryKind::Link,
            },
            Entry {
                name: "sub".into(),
                kind: EntryKind::Dir,
            },
        ];
        assert_eq!(
            got, want,
            "listing, round {round} (a second listing sees the same)"
        );
    }
}

#[test]
fn rename_no_clobber_never_replaces() {
    let (dir, root) = root();
    fs::write(dir.path().join("a"), b"a").expect("write");
    fs::write(dir.path().join("b"), b"b").expect("write");
    let e = root
        .rename_no_clobber("a", &root, "b")
        .expect_err("b exists");
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    assert_eq!(fs::read(dir.path().join("b")).expect("b"), b"b", "b kept");
    assert_eq!(fs::read(dir.path().join("a")).expect("a"), b"a", "a kept");
    root.rename_no_clobber("a", &root, "c").expect("c is free");
    assert!(!dir.path().join("a").exists(), "a moved");
    assert_eq!(fs::read(dir.path().join("c")).expect("c"), b"a", "to c");
}

#[test]
fn create_write_stat_rename_remove() {
    let (dir, root) = root();
    root.dir_create("d/tmp").expect("mkdir");
    let d = root.dir("d").expect("d");
    let mut file = d.create_new("tmp/t1", 0o600).expect("create");
    file.write_all(b"hello").expect("write");
    drop(file);
    let e = d.create_new("tmp/t1", 0o600).expect_err("exists");
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    let stat = root.stat("d/tmp/t1").expect("stat").expect("there");
    assert_eq!((stat.kind, stat.len), (EntryKind::File, 5), "stat");
    root.rename("d/tmp/t1", &root, "d/m1").expect("rename");
    let (mut file, meta) = root.open_file("d/m1").expect("open");
    assert_eq!((meta.len(), meta.ino()), (5, stat.ino), "same file");
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read");
    assert_eq!(text, "hello", "contents");
    root.hard_link("d/m1", &d, "m2").expect("link");
    let e = root.hard_link("d/m1", &d, "m2").expect_err("exists");
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{e}");
    root.remove_file("d/m1").expect("remove");
    d.remove_file("m2").expect("remove");
    assert_eq!(root.stat("d/m1").expect("stat"), None, "gone");
    d.remove_dir("tmp").expect("rmdir");
    root.sync().expect("fsync");
    assert!(!dir.path().join("d/tmp").exists(), "removed");
}

#[test]
fn the_walk_for_old_kernels_refuses_links_too() {
    // `open_beneath` falls back to this when openat2 is missing.
    let (dir, root) = root();
    let (elsewhere, _secret) = outside();
    fs::create_dir_all(dir.path().join("real/sub")).expect("mkdir");
    fs::write(dir.path().join("real/sub/f"), b"x").expect("write");
    symlink(elsewhere.path(), dir.path().join("real/link")).expect("link");
    let file = OFlag::O_RDONLY | base_flags();
    assert!(
        root.open_walking(Path::new("real/sub/f"), file, Mode::empty())
            .is_ok(),
        "a plain path opens"
    );
    for rel in ["real/link/secret", "real/link"] {
        let e = root
            .open_walking(Path::new(rel), file, Mode::empty())
            .expect_err(rel);
        assert!(matches!(e, Errno::ELOOP | Errno::ENOTDIR), "{rel}: {e}");
        let e = root.classify(Path::new(rel), e);
        assert_eq!(
            kind_of(&e),
            Some(RefusedKind::Link),
            "{rel} classified: {e}"
        );
    }
}

#[test]
fn a_descriptor_is_taken_over_only_for_the_same_folder() {
    let (dir, root) = root();
    fs::create_dir(dir.path().join("a")).expect("mkdir");
    fs::create_dir(dir.path().join("b")).expect("mkdir");
    let a = root.dir("a").expect("a");
    let b = root.dir("b").expect("b");
    let dup = nix::unistd::dup(&a).expect("dup");
    let dup_raw = std::os::fd::AsRawFd::as_raw_fd(&dup);
    let a = a.with_descriptor(dup);
    assert_eq!(
        std::os::fd::AsRawFd::as_raw_fd(&a.fd),
        dup_raw,
        "a duplicate of the same folder is taken"
    );
    let other = nix::unistd::dup(&b).expect("dup");
    let other_raw = std::os::fd::AsRawFd::as_raw_fd(&other);
    let a = a.with_descriptor(other);
    assert_ne!(
        std::os::fd::AsRawFd::as_raw_fd(&a.fd),
        other_raw,
        "another folder's descriptor is not"
    );
    fs::write(dir.path().join("a/f"), b"x").expect("write");
    assert!(a.open_file("f").is_ok(), "still folder a");
}
