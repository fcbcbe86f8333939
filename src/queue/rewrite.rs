//! Crash-safe replacement of a queued file's envelope block (DESIGN.md "The
//! queue on disk"): the new block and the old message body go to a fresh
//! file in `<domain>/tmp/`, which is fsynced and then `rename(2)`d over the
//! target, and the target's directory is fsynced. POSIX `rename` replaces
//! the target atomically, so at any instant of a crash the queue holds the
//! old file or the new one, never a mixture and never neither.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many temporary names to try before giving up (they only collide with
/// leftovers of a crashed process that had the same pid).
const MAX_TMP_TRIES: u64 = 1000;

/// Distinguishes the temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces the file at `path` by `new_block` followed by its own bytes from
/// `body_offset` on (the message after the old envelope block), copied in a
/// stream, never held in memory whole. The new file is built in `tmp_dir`
/// (`<domain>/tmp/`, created if missing; it must be on the same file
/// system), synced, renamed over `path`, and `path`'s directory is synced.
///
/// On any failure before the rename (no space, the body unreadable, a
/// `body_offset` beyond the end) the temporary file is removed and `path`
/// is untouched. An error from the final directory sync means the new
/// version is in place but may not survive a power cut.
///
/// The caller must own `path` (hold its claim): a rename over a path that
/// another process has meanwhile moved away would put the message back.
/// The new file takes `path`'s permission bits.
pub fn rewrite(path: &Path, tmp_dir: &Path, new_block: &[u8], body_offset: u64) -> io::Result<()> {
    replace(path, tmp_dir, new_block, body_offset, path)
}

/// Writes `new_block` + the body of `source` (from `body_offset`) to a
/// synced temporary file in `tmp_dir`, renames it to `target` (which may be
/// `source`), then syncs `target`'s directory. See [`rewrite`].
pub(crate) fn replace(
    source: &Path,
    tmp_dir: &Path,
    new_block: &[u8],
    body_offset: u64,
    target: &Path,
) -> io::Result<()> {
    let mut old = File::open(source)?;
    let meta = old.metadata()?;
    if body_offset > meta.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "body offset {body_offset} is beyond the end of {} ({} bytes): \
                 the envelope was read from another version of the file",
                source.display(),
                meta.len()
            ),
        ));
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (tmp_path, mut tmp) = create_tmp(tmp_dir, &name)?;
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
                    source.display(),
                    meta.len() - body_offset
                ),
            ));
        }
        tmp.sync_all()?;
        drop(tmp);
        fs::rename(&tmp_path, target)
    })();
    if let Err(e) = written {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp_path);
        return Err(e);
    }
    sync_parent(target)
}

/// Creates a new, empty file in `dir` named after the target and this
/// process; `O_EXCL`, so two writers never share one.
pub(crate) fn create_tmp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let mut created_dir = false;
    let mut tries = 0;
    loop {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{name}.{pid}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created_dir => {
                fs::create_dir_all(dir)?;
                created_dir = true;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < MAX_TMP_TRIES => {
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Makes a rename or unlink in `path`'s directory durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// `fsync(2)` on a directory.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    const OLD: &[u8] =
        b"X-Postman-From: <s@e.org>\r\nX-Postman-To: <a@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";
    const OLD_OFFSET: u64 = 55;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let domain = dir.path().join("d.test");
        let tmp = domain.join("tmp");
        fs::create_dir_all(&tmp).expect("mkdir tmp");
        let path = domain.join("m1");
        fs::write(&path, OLD).expect("write m1");
        (dir, path, tmp)
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
        let (_dir, path, tmp) = setup();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let ino = fs::metadata(&path).expect("stat").ino();
        let block = b"X-Postman-From: <s@e.org>\r\nX-Postman-To: <a@d.test>\r\nX-Postman-Attempts: 1\r\n\r\n";
        rewrite(&path, &tmp, block, OLD_OFFSET).expect("rewrite");
        let mut want = block.to_vec();
        want.extend_from_slice(&OLD[OLD_OFFSET as usize..]);
        assert_eq!(fs::read(&path).expect("read"), want, "new contents");
        let meta = fs::metadata(&path).expect("stat");
        assert_ne!(meta.ino(), ino, "a new file was renamed in");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "mode kept");
        assert!(tmp_is_empty(&tmp), "no temporary file left");
    }

    #[test]
    fn streams_a_large_body() {
        let (_dir, path, tmp) = setup();
        let mut contents = OLD.to_vec();
        contents.extend((0..3_000_000u32).map(|i| b'a' + (i % 26) as u8));
        fs::write(&path, &contents).expect("write big");
        rewrite(
            &path,
            &tmp,
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
        let (_dir, path, tmp) = setup();
        fs::remove_dir(&tmp).expect("rmdir tmp");
        rewrite(
            &path,
            &tmp,
            b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n",
            OLD_OFFSET,
        )
        .expect("rewrite");
        assert!(tmp.is_dir(), "tmp created");
    }

    #[test]
    fn failures_leave_the_original_and_no_temporary_file() {
        let block: &[u8] = b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n";
        // (what, tmp folder to use: None = the domain's, body offset)
        let cases = [
            ("offset beyond the end", None, 10_000),
            // tmp is a file: no temporary file can be created (as root, a
            // read-only directory would not stop us).
            ("tmp is not a directory", Some("not-a-dir"), OLD_OFFSET),
        ];
        for (what, bad_tmp, offset) in cases {
            let (_dir, path, tmp) = setup();
            let use_tmp = match bad_tmp {
                Some(name) => {
                    let t = path.with_file_name(name);
                    fs::write(&t, b"").expect("write file");
                    t
                }
                None => tmp.clone(),
            };
            let result = rewrite(&path, &use_tmp, block, offset);
            assert!(result.is_err(), "{what}: must fail");
            assert_eq!(
                fs::read(&path).expect("read"),
                OLD,
                "{what}: original untouched"
            );
            assert!(tmp_is_empty(&tmp), "{what}: no temporary file left");
        }
    }

    #[test]
    fn failed_rename_removes_the_temporary_file() {
        // A rename across file systems fails (EXDEV) after the whole copy
        // was written and synced: the last step that can fail.
        let (_dir, path, tmp) = setup();
        let shm = Path::new("/dev/shm");
        let other_fs = match (fs::metadata(shm), fs::metadata(&tmp)) {
            (Ok(a), Ok(b)) => a.is_dir() && a.dev() != b.dev(),
            _ => false,
        };
        if !other_fs {
            return; // no second file system on this machine
        }
        let far_tmp = tempfile::tempdir_in(shm).expect("tempdir in /dev/shm");
        let block: &[u8] = b"X-Postman-From: <>\r\nX-Postman-To: <a@d.test>\r\n\r\n";
        let err = rewrite(&path, far_tmp.path(), block, OLD_OFFSET).expect_err("EXDEV");
        assert_eq!(
            fs::read(&path).expect("read"),
            OLD,
            "original untouched after {err}"
        );
        assert!(
            tmp_is_empty(far_tmp.path()),
            "temporary file removed after {err}"
        );
    }

    #[test]
    fn unreadable_body_removes_the_temporary_file() {
        // A directory opens but reading it fails (EISDIR) in the middle of
        // the copy, after the new block was written.
        let (_dir, path, tmp) = setup();
        let domain = path.parent().expect("domain dir");
        let dir_as_file = domain.join("sub");
        fs::create_dir(&dir_as_file).expect("mkdir");
        let err = rewrite(&dir_as_file, &tmp, b"X-Postman-From: <>\r\n\r\n", 0)
            .expect_err("a directory has no body");
        assert!(tmp_is_empty(&tmp), "temporary file removed after {err}");
        assert!(dir_as_file.is_dir(), "target untouched");
    }

    #[test]
    fn missing_original_is_not_found() {
        let (_dir, path, tmp) = setup();
        fs::remove_file(&path).expect("rm");
        let err = rewrite(&path, &tmp, b"", 0).expect_err("gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "kind of {err}");
        assert!(!path.exists(), "not resurrected");
    }
}
