//! New queue files for the recipients that no longer fit one envelope
//! block (see `envelope::render_envelopes`): each gets a file of its own in
//! the domain folder, its block and then the message copied from the
//! original, written in `<domain>/tmp/`, synced, and renamed into place
//! under a fresh name, never replacing a file. Every such file is a message
//! of its own for retries and bounces, with the same body (and so the same
//! Message-ID) as the original.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use super::dirfd::QueueDir;
use super::{Queue, TMP_DIR};

/// How many names [`write_new`] tries for its temporary file before giving
/// up (they collide only with leftovers of a crashed process).
const MAX_TMP_TRIES: u32 = 1000;

/// Writes one new message per block of `blocks` into the folder of
/// `domain`: the block, then the message of `source` (an open queue file,
/// a claimed one say) from `body_offset` on, under a name from `next_name`. Every file is
/// written and synced in `tmp/` before the first is renamed in, so a full
/// disk queues none of them; returns their names in order.
///
/// A rename that fails after an earlier one succeeded leaves the earlier
/// files queued (and returns the error): their recipients are then in two
/// files, as after a crash between the split and the rewrite of the
/// original, and may be sent twice, never lost.
pub fn split_off(
    queue: &Queue,
    domain: &str,
    source: &mut File,
    body_offset: u64,
    blocks: &[&[u8]],
    mut next_name: impl FnMut() -> String,
) -> io::Result<Vec<String>> {
    let dir = queue.domain(domain)?;
    let tmp = dir.dir_create(TMP_DIR)?;
    let mut written: Vec<(String, String)> = Vec::with_capacity(blocks.len());
    for block in blocks {
        let name = next_name();
        let result = (|| {
            source.seek(SeekFrom::Start(body_offset))?;
            let mut head: &[u8] = block;
            write_new(&tmp, &name, &mut head, source)
        })();
        match result {
            Ok(tmp_name) => written.push((tmp_name, name)),
            Err(e) => {
                for (tmp_name, _) in &written {
                    let _ = tmp.remove_file(tmp_name);
                }
                return Err(e);
            }
        }
    }
    let mut names = Vec::with_capacity(written.len());
    let mut rest = written.into_iter();
    while let Some((tmp_name, name)) = rest.next() {
        if let Err(e) = tmp.rename_no_clobber(&tmp_name, &dir, &name) {
            let _ = tmp.remove_file(&tmp_name);
            for (tmp_name, _) in rest {
                let _ = tmp.remove_file(&tmp_name);
            }
            return Err(e);
        }
        names.push(name);
    }
    dir.sync()?;
    Ok(names)
}

/// Creates a new file in `tmp` named after `name`, writes `head` and then
/// all of `body` into it, syncs it, and returns its name. On failure the
/// file is removed.
pub(crate) fn write_new(
    tmp: &QueueDir,
    name: &str,
    head: &mut dyn Read,
    body: &mut dyn Read,
) -> io::Result<String> {
    let (tmp_name, mut file) = create_in(tmp, name)?;
    let result = (|| {
        io::copy(head, &mut file)?;
        io::copy(body, &mut file)?;
        file.flush()?;
        file.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp_name),
        Err(e) => {
            let _ = tmp.remove_file(&tmp_name);
            Err(e)
        }
    }
}

/// A new file in `tmp` named `<name>.<pid>.<n>.tmp` (`O_EXCL`).
pub(crate) fn create_in(tmp: &QueueDir, name: &str) -> io::Result<(String, File)> {
    let pid = std::process::id();
    let mut n = 0;
    loop {
        let tmp_name = format!("{name}.{pid}.{n}.tmp");
        match tmp.create_new(&tmp_name, 0o600) {
            Ok(file) => return Ok((tmp_name, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < MAX_TMP_TRIES => n += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{list_messages, read_envelope_from, render_envelope, Layout};
    use std::fs;

    const BODY: &[u8] = b"Subject: x\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";

    fn setup() -> (tempfile::TempDir, Queue, File, u64) {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = Layout::new(dir.path());
        fs::create_dir_all(layout.tmp_dir("d.test")).expect("mkdir");
        let block = render_envelope("s@e.org", &["a@d.test".into()], None, &[]).expect("block");
        let path = dir.path().join("original");
        fs::write(&path, [block.as_slice(), BODY].concat()).expect("write");
        let file = File::open(&path).expect("open");
        let queue = Queue::open(layout).expect("queue");
        (dir, queue, file, block.len() as u64)
    }

    fn tmp_is_empty(queue: &Queue) -> bool {
        fs::read_dir(queue.layout().tmp_dir("d.test"))
            .expect("ls tmp")
            .next()
            .is_none()
    }

    #[test]
    fn each_block_becomes_a_message_with_the_same_body() {
        let (_dir, queue, mut file, offset) = setup();
        let b1 = render_envelope("s@e.org", &["b@d.test".into()], None, &[]).expect("b1");
        let b2 = render_envelope("s@e.org", &["c@d.test".into()], None, &[]).expect("b2");
        let mut n = 0;
        let names = split_off(&queue, "d.test", &mut file, offset, &[&b1, &b2], || {
            n += 1;
            format!("new{n}")
        })
        .expect("split");
        assert_eq!(names, ["new1", "new2"], "names in order");
        for (name, rcpt) in [("new1", "b@d.test"), ("new2", "c@d.test")] {
            let path = queue.layout().message_path("d.test", name);
            let env = read_envelope_from(&mut File::open(&path).expect("open")).expect("reads");
            assert_eq!(env.recipients, [rcpt], "{name}");
            let bytes = fs::read(&path).expect("read");
            assert_eq!(&bytes[env.body_offset as usize..], BODY, "{name}: body");
        }
        assert!(tmp_is_empty(&queue), "tmp/ empty");
    }

    #[test]
    fn a_taken_name_is_never_replaced_and_nothing_is_left_in_tmp() {
        let (_dir, queue, mut file, offset) = setup();
        let taken = queue.layout().message_path("d.test", "taken");
        fs::write(&taken, b"precious").expect("write");
        let b1 = render_envelope("s@e.org", &["b@d.test".into()], None, &[]).expect("b1");
        let err = split_off(&queue, "d.test", &mut file, offset, &[&b1], || {
            "taken".to_owned()
        })
        .expect_err("name taken");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(fs::read(&taken).expect("read"), b"precious");
        let dir = queue.domain("d.test").expect("domain");
        assert_eq!(list_messages(&dir).expect("ls"), ["taken"]);
        assert!(tmp_is_empty(&queue), "tmp/ empty");
    }
}
