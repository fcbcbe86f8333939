//! Crash-safe replacement of a queued file's envelope block (DESIGN.md "The
//! queue on disk"): the new block and the old message body go to a fresh
//! file in `<domain>/tmp/`, which is fsynced and then `rename(2)`d over the
//! target, and the target's directory is fsynced. POSIX `rename` replaces
//! the target atomically, so at any instant of a crash the queue holds the
//! old file or the new one, never a mixture and never neither. Every file
//! and folder is reached through a [`QueueDir`].

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use super::dirfd::QueueDir;
use super::store::move_no_clobber;
use super::TMP_DIR;

/// How many temporary names to try before giving up (they only collide with
/// leftovers of a crashed process that had the same pid).
const MAX_TMP_TRIES: u64 = 1000;

/// Distinguishes the temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces the file `name` in `dir` by `new_block` followed by its own
/// bytes from `body_offset` on (the message after the old envelope block),
/// copied in a stream, never held in memory whole. The new file is built in
/// `<dir>/tmp/` (created if missing), synced, renamed over `name`, and
/// `dir` is synced.
///
/// On any failure before the rename (no space, the body unreadable, a
/// `body_offset` beyond the end, a link or special file in the way) the
/// temporary file is removed and `name` is untouched. An error from the
/// final directory sync means the new version is in place but may not
/// survive a power cut.
///
/// The caller must own `name` (hold its claim): a rename over a name that
/// another process has meanwhile moved away would put the message back.
/// The new file takes the old one's permission bits.
pub fn rewrite(dir: &QueueDir, name: &str, new_block: &[u8], body_offset: u64) -> io::Result<()> {
    let tmp_dir = dir.dir_create(TMP_DIR)?;
    let source = Source { dir, name };
    replace(&source, &tmp_dir, new_block, body_offset, dir, Put::Replace).map(drop)
}

/// The file a new version is made from.
pub(crate) struct Source<'a> {
    pub dir: &'a QueueDir,
    pub name: &'a str,
}

/// How the new version goes into its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// Over the source's name (which the caller owns).
    Replace,
    /// Under the source's name, or `name.N` when that is taken: never over
    /// another file.
    NoClobber,
}

/// Writes `new_block` + the body of `source` (from `body_offset`) to a
/// synced temporary file in `tmp_dir`, moves it into `to` as `put` says,
/// then syncs `to`. Returns the name it went in under. See [`rewrite`].
pub(crate) fn replace(
    source: &Source<'_>,
    tmp_dir: &QueueDir,
    new_block: &[u8],
    body_offset: u64,
    to: &QueueDir,
    put: Put,
) -> io::Result<String> {
    let (mut old, meta) = source.dir.open_file(source.name)?;
    if body_offset > meta.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "body offset {body_offset} is beyond the end of {} ({} bytes): \
                 the envelope was read from another version of the file",
                source.dir.display_path(source.name).display(),
                meta.len()
            ),
        ));
    }
    let (tmp_name, mut tmp) = create_tmp(tmp_dir, source.name)?;
    let written = (|| {
        tmp.set_permissions(meta.permissions())?;
        tmp.write_all(new_block)?;
        old.seek(SeekFrom::Start(body_offset))?;
        let copied = io::copy(&mut old, &mut tmp)?;
        if copied != meta.len() - body_offset {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} changed while it was copied ({copied} body bytes instead of {})",
                    source.dir.display_path(source.name).display(),
                    meta.len() - body_offset
                ),
            ));
        }
        tmp.sync_all()?;
        drop(tmp);
        match put {
            Put::Replace => tmp_dir
                .rename(&tmp_name, to, source.name)
                .map(|()| source.name.to_owned()),
            Put::NoClobber => move_no_clobber(tmp_dir, &tmp_name, to, source.name),
        }
    })();
    match written {
        Ok(placed) => {
            to.sync()?;
            Ok(placed)
        }
        Err(e) => {
            // Best effort: the error that matters is the one being returned.
            let _ = tmp_dir.remove_file(&tmp_name);
            Err(e)
        }
    }
}

/// Creates a new, empty file in `dir` named after the target and this
/// process; `O_EXCL`, so two writers never share one. Returns its name.
pub(crate) fn create_tmp(dir: &QueueDir, name: &str) -> io::Result<(String, File)> {
    let pid = std::process::id();
    let mut tries = 0;
    loop {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = format!("{name}.{pid}.{n}.tmp");
        match dir.create_new(&tmp, 0o666) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < MAX_TMP_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    const OLD: &[u8] =
        b"X-Postman-From: <s@e.org>\r\nX-Postman-To: <a@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";
    const OLD_OFFSET: u64 = 55;

    /// A domain folder with `tmp/` and `m1`: the temporary root, the
    /// folder's path and handle.
    fn setup() -> (tempfile::TempDir, PathBuf, QueueDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let domain = dir.path().join("d.test");
        fs::create_dir_all(domain.join(TMP_DIR)).expect("mkdir tmp");
        fs::write(domain.join("m1"), OLD).expect("write m1");
        let handle = QueueDir::open_root(&domain).expect("open");
        (dir, domain, handle)
    }

    fn tmp_is_empty(tmp: &Path) -> bool {
        fs::read_dir(tmp).map_or(true, |mut d| d.next().is_none())
    }

    #[test]
    fn offset_constant_matches_the_block() {
        let env = crate::queue::parse_envelope(OLD).expect("parses");
        assert_eq!(env.body_offset, OLD_OFFSET, "body offset of OLD");
    }

    #[test]
    fn rewrites_block_and_keeps_body() {
        let (_dir, domain, handle) = setup();
        let path = domain.join("m1");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let ino = fs::metadata(&path).expect("stat").ino();
        let block = b"X-Postman-From: <s@e.org>\r\nX-Postman-To: <a@d.test>\r\nX-Postman-Attempts: 1\r\n\r\n";
        rewrite(&handle, "m1", block, OLD_OFFSET).expect("rewrite");
        let mut want = block.to_vec();
        want.extend_from_slice(&OLD[OLD_OFFSET as usize..]);
        assert_eq!(fs::read(&path).expect("read"), want, "new contents");
        let meta = fs::metadata(&path).expect("stat");
        assert_ne!(meta.ino(), ino, "a new file was renamed in");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "mode kept");
        assert!(
            tmp_is_empty(&domain.join(TMP_DIR)),
            "no temporary file left"
        );
    }

    #[test]
    fn streams_a_large_body() {
        let (_dir, domain, handle) = setup();
        let path = domain.join("m1");
        let mut contents = OLD.to_vec();
        contents.extend((0..3_000_000u32).map(|i| b'a' + (i % 26) as u8));
        fs::write(&path, &contents).expect("write big");
        rewrite(
            &handle,
            "m1",
            b"X-Postman-From: <>\nX-Postman-To: <a@d.test>\n\n",
            OLD_OFFSET,
        )
        .expect("rewrite big");
        let got = fs::read(&path).expect("read");
        assert_eq!(
            &got[45..],
            &contents[OLD_OFFSET as usize..],
            "body copied exactly"
        );
    }

    #[test]
    fn creates_a_missing_tmp_dir() {
        let (_dir, domain, handle) = setup();
        fs::remove_dir(domain.join(TMP_DIR)).expect("rmdir tmp");
        rewrite(
            &handle,
            "m1",
            b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n",
            OLD_OFFSET,
        )
        .expect("rewrite");
        assert!(domain.join(TMP_DIR).is_dir(), "tmp created");
    }

    #[test]
    fn failures_leave_the_original_and_no_temporary_file() {
        let block: &[u8] = b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n";
        let elsewhere = tempfile::tempdir().expect("elsewhere");
        // (what, how tmp/ is spoilt, body offset)
        type Spoil = fn(&Path, &Path);
        let cases: [(&str, Spoil, u64); 3] = [
            ("offset beyond the end", |_, _| {}, 10_000),
            (
                "tmp is not a directory",
                |tmp, _| {
                    fs::remove_dir(tmp).expect("rmdir");
                    fs::write(tmp, b"").expect("write file");
                },
                OLD_OFFSET,
            ),
            (
                "tmp is a link out of the queue",
                |tmp, outside| {
                    fs::remove_dir(tmp).expect("rmdir");
                    symlink(outside, tmp).expect("link");
                },
                OLD_OFFSET,
            ),
        ];
        for (what, spoil, offset) in cases {
            let (_dir, domain, handle) = setup();
            let tmp = domain.join(TMP_DIR);
            spoil(&tmp, elsewhere.path());
            let result = rewrite(&handle, "m1", block, offset);
            assert!(result.is_err(), "{what}: must fail");
            assert_eq!(
                fs::read(domain.join("m1")).expect("read"),
                OLD,
                "{what}: original untouched"
            );
            assert!(
                !tmp.is_dir() || tmp_is_empty(&tmp),
                "{what}: no temporary file left"
            );
            assert!(
                tmp_is_empty(elsewhere.path()),
                "{what}: nothing written outside"
            );
        }
    }

    #[test]
    fn failed_rename_removes_the_temporary_file() {
        // A rename across file systems fails (EXDEV) after the whole copy
        // was written and synced: the last step that can fail.
        let (_dir, domain, handle) = setup();
        let shm = Path::new("/dev/shm");
        let other_fs = match (fs::metadata(shm), fs::metadata(&domain)) {
            (Ok(a), Ok(b)) => a.is_dir() && a.dev() != b.dev(),
            _ => false,
        };
        if !other_fs {
            return; // no second file system on this machine
        }
        let far_tmp = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
        let far = QueueDir::open_root(far_tmp.path()).expect("open");
        let block: &[u8] = b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n";
        let source = Source {
            dir: &handle,
            name: "m1",
        };
        let err =
            replace(&source, &far, block, OLD_OFFSET, &handle, Put::Replace).expect_err("EXDEV");
        assert_eq!(
            fs::read(domain.join("m1")).expect("read"),
            OLD,
            "original untouched after {err}"
        );
        assert!(
            tmp_is_empty(far_tmp.path()),
            "temporary file removed after {err}"
        );
    }

    #[test]
    fn special_files_and_links_are_not_rewritten() {
        let (_dir, domain, handle) = setup();
        let (_outside, secret) = {
            let d = tempfile::tempdir().expect("outside");
            let f = d.path().join("secret");
            fs::write(&f, OLD).expect("write");
            (d, f)
        };
        symlink(&secret, domain.join("link")).expect("link");
        nix::unistd::mkfifo(
            &domain.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("mkfifo");
        fs::create_dir(domain.join("sub")).expect("mkdir");
        for name in ["link", "fifo", "sub"] {
            let err =
                rewrite(&handle, name, b"X-Postman-From: <>\r\n\r\n", 0).expect_err("refused");
            assert!(
                crate::queue::dirfd::refusal(&err).is_some(),
                "{name}: a refusal, not {err}"
            );
        }
        assert_eq!(
            fs::read(&secret).expect("read"),
            OLD,
            "the target untouched"
        );
        assert!(
            tmp_is_empty(&domain.join(TMP_DIR)),
            "no temporary file left"
        );
    }

    #[test]
    fn no_clobber_goes_under_a_free_name() {
        let (_dir, domain, handle) = setup();
        let claims = handle.dir_create(".active/me").expect("mkdir");
        handle.rename("m1", &claims, "m1").expect("claim");
        fs::write(domain.join("m1"), b"another message").expect("write");
        let tmp = handle.dir(TMP_DIR).expect("tmp");
        let source = Source {
            dir: &claims,
            name: "m1",
        };
        let block: &[u8] = b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n";
        let placed =
            replace(&source, &tmp, block, OLD_OFFSET, &handle, Put::NoClobber).expect("put");
        assert_eq!(placed, "m1.1", "the taken name is left alone");
        assert_eq!(
            fs::read(domain.join("m1")).expect("read"),
            b"another message",
            "the other file untouched"
        );
    }

    #[test]
    fn missing_original_is_not_found() {
        let (_dir, domain, handle) = setup();
        fs::remove_file(domain.join("m1")).expect("rm");
        let err = rewrite(&handle, "m1", b"", 0).expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "kind of {err}");
        assert!(!domain.join("m1").exists(), "not resurrected");
    }
}
