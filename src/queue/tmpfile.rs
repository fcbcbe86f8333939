//! Temporary files in a domain's `tmp/` (or another folder of the
//! queue): every writer builds a file there, syncs it, and renames it into
//! place, so that no reader ever sees half a file. A queue file is never
//! written again once renamed in (what changes about a message lives in
//! its state file, `statefile.rs`).

use std::fs::File;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};

use super::dirfd::QueueDir;

/// How many temporary names to try before giving up (they only collide with
/// leftovers of a crashed process that had the same pid).
const MAX_TMP_TRIES: u64 = 1000;

/// Distinguishes the temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

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

/// Puts `bytes` in `dir` as `name` crash-safely: written to a new file in
/// `tmp_dir`, synced, renamed over whatever entry `name` is (never
/// followed), and `dir` synced. On failure the temporary file is removed.
pub(crate) fn replace_synced(
    tmp_dir: &QueueDir,
    dir: &QueueDir,
    name: &str,
    bytes: &[u8],
) -> io::Result<()> {
    let (tmp, mut file) = create_tmp(tmp_dir, name)?;
    let result = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        tmp_dir.rename(&tmp, dir, name)?;
        dir.sync()
    })();
    if result.is_err() {
        let _ = tmp_dir.remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_new_and_never_shared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = QueueDir::open_root(dir.path()).expect("open");
        let (a, _) = create_tmp(&handle, "m1").expect("first");
        let (b, _) = create_tmp(&handle, "m1").expect("second");
        assert_ne!(a, b, "two names");
        let pid = std::process::id();
        for name in [&a, &b] {
            assert!(
                name.starts_with(&format!("m1.{pid}.")) && name.ends_with(".tmp"),
                "{name}"
            );
            assert!(dir.path().join(name).is_file(), "{name} made");
        }
    }
}
