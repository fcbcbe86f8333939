use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use postman::routing::NextHop;

use super::*;

const GOOD: &str = "# relays\n[smtp.example.net]:587 relay-user:s3cret-pw\n";

/// A password file in a fresh folder with `text` and `mode`.
fn file(text: &[u8], mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("relay-passwords");
    fs::write(&path, text).expect("written");
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    (dir, path)
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[test]
fn loads_a_file_only_its_owner_can_read() {
    for mode in [0o600, 0o400, 0o700] {
        let (_dir, path) = file(GOOD.as_bytes(), mode);
        let map = load_password_file(&path).unwrap_or_else(|e| panic!("{mode:o}: {e}"));
        let hop = NextHop::parse("[smtp.example.net]:587").expect("a next hop");
        let credentials = map.get(&hop).expect("an entry");
        assert_eq!(credentials.user, "relay-user");
        assert_eq!(credentials.password.expose(), "s3cret-pw");
    }
}

#[test]
fn refuses_a_file_others_may_read_or_change() {
    let table = [
        (0o644, "is readable by others (mode 0644): chmod 600 it"),
        (0o640, "is readable by others (mode 0640): chmod 600 it"),
        (0o604, "is readable by others (mode 0604): chmod 600 it"),
        (0o620, "is writable by others (mode 0620): chmod 600 it"),
        (0o610, "is open to others (mode 0610): chmod 600 it"),
    ];
    for (mode, want) in table {
        let (_dir, path) = file(GOOD.as_bytes(), mode);
        let e = load_password_file(&path).expect_err("refused");
        assert!(
            matches!(e, CredentialsError::Permissions { mode: m, .. } if m == mode),
            "{mode:o}: {e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{} {want}", path.display()),
            "{mode:o}"
        );
        assert_eq!(e.path(), path);
    }
}

#[test]
fn refuses_what_is_not_a_regular_file() {
    let (dir, target) = file(GOOD.as_bytes(), 0o600);
    let link = dir.path().join("link");
    symlink(&target, &link).expect("a link");
    let e = load_password_file(&link).expect_err("a link");
    assert!(matches!(e, CredentialsError::Link { .. }), "{e:?}");
    let shown = e.to_string();
    assert!(shown.starts_with(&link.display().to_string()), "{shown}");
    assert!(shown.contains("symbolic link"), "{shown}");

    let folder = dir.path().join("folder");
    fs::create_dir(&folder).expect("a folder");
    fs::set_permissions(&folder, fs::Permissions::from_mode(0o700)).expect("chmod");
    let e = load_password_file(&folder).expect_err("a folder");
    assert_eq!(
        e.to_string(),
        format!("{} is a directory, not a regular file", folder.display())
    );

    // A FIFO without a writer: refused at once, not waited on.
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).expect("a FIFO");
    let e = load_password_file(&fifo).expect_err("a FIFO");
    assert!(
        matches!(e, CredentialsError::NotRegular { kind: "a FIFO", .. }),
        "{e:?}"
    );
}

#[test]
fn a_missing_file_names_the_path_and_the_error() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("nowhere");
    let e = load_password_file(&path).expect_err("missing");
    match &e {
        CredentialsError::Open { source, .. } => {
            assert_eq!(source.kind(), io::ErrorKind::NotFound, "{e:?}");
        }
        _ => panic!("{e:?}"),
    }
    let shown = e.to_string();
    let want = format!("cannot open {}: No such file or directory", path.display());
    assert!(shown.starts_with(&want), "{shown}");
}

#[test]
fn refuses_another_users_file() {
    let (_dir, path) = file(GOOD.as_bytes(), 0o600);
    // Tests may run as root or not: make the file someone's other than
    // root's, and check it as its owner and as someone else.
    let owner = if euid() == 0 {
        std::os::unix::fs::chown(&path, Some(4242), None).expect("chown");
        4242
    } else {
        euid()
    };
    let meta = fs::metadata(&path).expect("metadata");
    assert!(check(&path, &meta, owner).is_ok());
    let e = check(&path, &meta, owner + 1).expect_err("another user's");
    assert_eq!(
        e.to_string(),
        format!(
            "{} belongs to uid {owner}, not to uid {} that postman runs as (nor to root): chown it",
            path.display(),
            owner + 1
        )
    );
    if euid() == 0 {
        // Root's own file is taken whoever postman runs as.
        let (_dir, path) = file(GOOD.as_bytes(), 0o600);
        let meta = fs::metadata(&path).expect("metadata");
        assert!(check(&path, &meta, 4242).is_ok());
    }
}

#[test]
fn refuses_a_file_too_large_to_be_one() {
    let (_dir, path) = file(b"", 0o600);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(MAX_PASSWORD_FILE + 1).expect("grown");
    let e = load_password_file(&path).expect_err("too large");
    assert!(matches!(e, CredentialsError::TooLarge { .. }), "{e:?}");
    assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
}

#[test]
fn errors_in_the_text_name_file_and_line_but_no_password() {
    let table: [(&[u8], &str); 3] = [
        (
            b"[a.example] u:p\n[b.example] relay-user-s3cret-pw\n",
            ", line 2: no ':' between user and password",
        ),
        (
            b"[a.example] u:p\n\n[b.example] relay-user:s3cret-\xff\n",
            ", line 3: not UTF-8 text",
        ),
        (
            b"relay-user:s3cret-pw [a.example]\n",
            ", line 1: the key is not a next hop (is the line \"[host]:port user:password\"?)",
        ),
    ];
    for (text, want) in table {
        let (_dir, path) = file(text, 0o600);
        let e = load_password_file(&path).expect_err("refused");
        let shown = e.to_string();
        assert_eq!(shown, format!("{}{want}", path.display()));
        assert!(!format!("{shown} {e:?}").contains("s3cret"), "{e:?}");
    }
}
