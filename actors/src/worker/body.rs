//! Opening a queued message's body, measuring it, and sending it from the
//! file or, when small enough, from the copy the measuring pass kept (one
//! read of the file instead of two); a kept body that goes on the wire as
//! it is goes, but for its tail, from the file by `sendfile(2)`. The
//! descriptor is moved to
//! `FD_SETSIZE` or above: queue files never go into an `fd_set`, so they
//! should not take the low numbers that sockets need (900 connections each
//! with a file open would otherwise push sockets past the `select(2)` limit).

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::errno::Errno;
use nix::libc;
use nix::sys::sendfile::sendfile;
use nix::sys::socket::{send, MsgFlags};
use postman::queue::{BodyReader, Claimed};
use postman::smtp::BodyMeasure;

use crate::descriptors;

/// How much of a message is read from disk at a time.
pub const CHUNK: usize = 64 * 1024;

/// Opens a claimed queue file for reading (never through a link, never a
/// special file: [`Claimed::open`]), its descriptor moved above
/// FD_SETSIZE; with its metadata, from the open descriptor.
pub fn open(claimed: &Claimed) -> io::Result<(File, Metadata)> {
    let (file, metadata) = claimed.open()?;
    Ok((above_fd_setsize(file), metadata))
}

/// `file` on a descriptor above FD_SETSIZE, when there is room there.
fn above_fd_setsize(file: File) -> File {
    // No room above the limit (RLIMIT_NOFILE too low): the low number
    // still works, it only competes with sockets.
    descriptors::above_fd_setsize(file.as_fd()).map_or(file, File::from)
}

/// The end of a body written straight from its file still goes through
/// the session: at least this many octets, from a line start, so that
/// they and the terminator leave in one write instead of the terminator in
/// a segment of its own. Smaller bodies go through the session whole,
/// where copying them costs less than the write it saves.
pub const DIRECT_TAIL: usize = 4096;

/// Where the part of a verbatim body written straight from its file
/// ends: after the last LF at least [`DIRECT_TAIL`] octets before the end,
/// so the rest starts a line; 0 when there is none.
fn direct_end(body: &[u8]) -> usize {
    let head = &body[..body.len().saturating_sub(DIRECT_TAIL)];
    // Backwards: a line's length at most, where the tail starts.
    head.iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |at| at + 1)
}

/// Bodies up to this size are read once, kept in memory for sending after
/// the measuring pass, instead of being read from the file a second time.
pub const MAX_IN_MEMORY: usize = 1024 * 1024;

/// The most body bytes a worker keeps in memory at once; beyond it, bodies
/// are read from their files again to be sent.
pub const MEMORY_BUDGET: usize = 16 * 1024 * 1024;

/// A message body being sent: from its queue file, or from memory when the
/// measuring pass kept it.
pub enum Body {
    /// Read from the file again while it is sent. `sent` and `direct_end`
    /// as for `Memory`, in octets of the body: a body that goes on the wire
    /// as it is goes straight from the file up to `direct_end`, and the
    /// rest is read from where the direct part ended.
    File {
        reader: BodyReader,
        sent: u64,
        direct_end: u64,
        /// The reader's position is octet `sent`: a direct write does not
        /// move it, so it is moved before the next read.
        positioned: bool,
    },
    Memory {
        /// A pooled buffer: the body is `bytes[..len]`, the rest is
        /// whatever an earlier body left there.
        bytes: Vec<u8>,
        len: usize,
        sent: usize,
        /// The body needs no dot-stuffing or line-end change
        /// ([`BodyMeasure::is_verbatim`]), and its first `direct_end`
        /// octets may be written straight from the file
        /// ([`Body::direct_part`]): up to the last line end at least
        /// [`DIRECT_TAIL`] octets before the end, 0 when there is none (a
        /// small body, or one not verbatim). The tail goes from `bytes`.
        direct_end: usize,
        _held: Held,
        /// The queue file stays open until the message is settled (see
        /// [`Body::into_parts`]).
        file: BodyReader,
    },
}

impl Body {
    /// Done with: a file body's descriptor closes, and a memory body's
    /// reservation is given back and its buffer returned for a pool.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        self.into_parts().0
    }

    /// The buffer, as [`Body::into_buffer`], and the queue file, still
    /// open. A delivered file's name is removed while it is open, so that
    /// freeing its blocks, the slow part, waits for this descriptor's close,
    /// which the disk thread that settles the message does.
    pub fn into_parts(self) -> (Option<Vec<u8>>, File) {
        match self {
            Body::File { reader, .. } => (None, reader.into_file()),
            Body::Memory { bytes, file, .. } => (Some(bytes), file.into_file()),
        }
    }

    /// What is left to write straight from the file, for a body that goes
    /// on the wire as it is: all of it but a tail of whole lines, which goes
    /// through the session with the terminator in one write (see
    /// [`DIRECT_TAIL`]), from memory or read from the file. `None` once that
    /// part is written, and for any other body. [`Body::advance`] says how
    /// much of it went.
    ///
    /// The file is the claimed one, which no writer touches (writers
    /// replace a queue file by a rename, and not in the claim's folder),
    /// and it is the file the body was measured from; the caller checks
    /// that it is still unchanged before the terminator goes.
    pub fn direct_part(&self) -> Option<DirectPart<'_>> {
        match self {
            Body::Memory {
                bytes,
                sent,
                direct_end,
                file,
                ..
            } if sent < direct_end => {
                let (file, body_offset) = file.file_and_offset();
                let copy = bytes.get(*sent..*direct_end)?;
                Some(DirectPart {
                    file,
                    offset: body_offset + *sent as u64,
                    len: copy.len(),
                    copy: Some(copy),
                })
            }
            Body::File {
                reader,
                sent,
                direct_end,
                ..
            } if sent < direct_end => {
                let (file, body_offset) = reader.file_and_offset();
                Some(DirectPart {
                    file,
                    offset: body_offset.checked_add(*sent)?,
                    len: usize::try_from(direct_end - sent).unwrap_or(usize::MAX),
                    copy: None,
                })
            }
            _ => None,
        }
    }

    /// The queue file.
    pub fn file(&self) -> &File {
        match self {
            Body::File { reader, .. } | Body::Memory { file: reader, .. } => {
                reader.file_and_offset().0
            }
        }
    }

    /// `n` octets of [`Body::direct_part`] were written.
    pub fn advance(&mut self, n: usize) {
        match self {
            Body::Memory { len, sent, .. } => *sent = sent.saturating_add(n).min(*len),
            Body::File {
                sent, positioned, ..
            } => {
                *sent = sent.saturating_add(n as u64);
                *positioned = false;
            }
        }
    }

    /// The next chunk to send, empty at the end. A file's chunk is read into
    /// `buf`; memory is lent as it is.
    pub fn next<'a>(&'a mut self, buf: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        match self {
            Body::File {
                reader,
                sent,
                positioned,
                ..
            } => {
                if !*positioned {
                    reader.seek_in_body(*sent)?;
                    *positioned = true;
                }
                let n = reader.read_chunk(buf)?;
                *sent = sent.saturating_add(n as u64);
                Ok(&buf[..n])
            }
            Body::Memory {
                bytes, len, sent, ..
            } => {
                let start = *sent;
                let end = (*len).min(start + CHUNK);
                *sent = end;
                Ok(bytes.get(start..end).unwrap_or_default())
            }
        }
    }
}

/// The part of a body to write straight from its queue file
/// ([`Body::direct_part`]).
pub struct DirectPart<'a> {
    pub file: &'a File,
    /// Where it starts in the file.
    pub offset: u64,
    pub len: usize,
    /// The same octets, as the measuring pass kept them; `None` for a body
    /// sent from its file.
    pub copy: Option<&'a [u8]>,
}

impl DirectPart<'_> {
    /// Writes what of the part `socket` takes now: by `sendfile(2)` from
    /// the file or, when the file's filesystem cannot hand its pages to a
    /// socket (`EINVAL`, `ENOSYS`, `EOPNOTSUPP`), which would otherwise
    /// fail every such message for ever, by [`DirectPart::send_copy`]. A
    /// file that ends before the part does is an `UnexpectedEof` error.
    pub fn send(&self, socket: &impl AsFd, scratch: &mut Vec<u8>) -> io::Result<usize> {
        // An offset past off_t's range fails as EINVAL, and so goes by
        // send_copy, whose read fails.
        let mut offset = libc::off_t::try_from(self.offset).unwrap_or(libc::off_t::MAX);
        match sendfile(socket, self.file, Some(&mut offset), self.len) {
            Ok(0) if self.len > 0 => Err(shorter()),
            Ok(n) => Ok(n),
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                self.send_copy(socket, scratch)
            }
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Writes what of the part `socket` takes now from the copy in memory,
    /// or from a chunk of the file read into `scratch`.
    pub fn send_copy(&self, socket: &impl AsFd, scratch: &mut Vec<u8>) -> io::Result<usize> {
        let bytes = match self.copy {
            Some(copy) => copy,
            None => {
                scratch.resize(self.len.min(CHUNK), 0);
                let n = self.file.read_at(scratch, self.offset)?;
                if n == 0 && self.len > 0 {
                    return Err(shorter());
                }
                &scratch[..n]
            }
        };
        send(socket.as_fd().as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
    }
}

fn shorter() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the queue file is shorter than when it was measured",
    )
}

/// The most a pooled buffer may hold for reuse; a buffer grown for a larger
/// body is freed after it.
const POOLED_MAX: usize = 256 * 1024;

/// The most bytes a worker's pool keeps idle.
const POOL_BYTES: usize = 4 * 1024 * 1024;

/// Buffers for bodies kept in memory, reused from message to message. A
/// fresh buffer for every 100 KB body cost more than reading it: glibc
/// handed the freed memory back to the kernel, so each body's buffer was
/// faulted in and zeroed by the kernel, then zeroed again and copied into.
/// A pooled buffer is filled by `read(2)` straight away.
///
/// Each worker has one pool, on its own thread. A preparation handed to a
/// disk thread carries a buffer lent from it ([`Pool::lend`]), and the
/// buffer comes back to the worker with the prepared body or unused, so
/// it does not matter which disk thread does the work: with a pool per
/// disk thread, buffers collected in the pools of the threads that settled
/// while the thread that prepared allocated new ones.
#[derive(Default)]
pub struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

impl Pool {
    /// A buffer at least `len` bytes long (initialised: only growth is
    /// zeroed).
    fn take(&mut self, len: usize) -> Vec<u8> {
        let mut buf = match self.free.pop() {
            Some(buf) => {
                self.bytes -= buf.len();
                buf
            }
            None => Vec::new(),
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// A buffer to lend with a preparation, for the disk thread that does
    /// it to read the body into (see [`Pool`]); `None` when the pool has
    /// none, and the body then gets a new one.
    pub fn lend(&mut self) -> Option<Vec<u8>> {
        let buf = self.free.pop()?;
        self.bytes -= buf.len();
        Some(buf)
    }

    /// Takes back the buffer of a body that is done with, if it has room.
    pub fn recycle(&mut self, body: Body) {
        if let Some(buf) = body.into_buffer() {
            self.give(buf);
        }
    }

    /// Keeps `buf` for reuse, if it is not too large and the pool has room.
    pub fn give(&mut self, buf: Vec<u8>) {
        if buf.len() <= POOLED_MAX && self.bytes + buf.len() <= POOL_BYTES {
            self.bytes += buf.len();
            self.free.push(buf);
        }
    }
}

/// How many body bytes a worker holds in memory. Shared only between the
/// worker and the [`Held`] guards of its own jobs, all on the worker's
/// thread: the atomic is there so the worker stays `Send`, not for locking.
#[derive(Clone, Default)]
pub struct Budget(Arc<AtomicUsize>);

impl Budget {
    /// Reserves `n` bytes if the budget has room for them.
    pub fn reserve(&self, n: usize) -> Option<Held> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                (used + n <= MEMORY_BUDGET).then_some(used + n)
            })
            .ok()?;
        Some(Held {
            n,
            used: Arc::clone(&self.0),
        })
    }
}

/// Bytes reserved from a [`Budget`], given back when dropped.
pub struct Held {
    n: usize,
    used: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.used.fetch_sub(self.n, Ordering::Relaxed);
    }
}

/// Measures `reader`'s body for MAIL (RFC 1870 size, RFC 6152 8-bit
/// octets) and says how to send it: from memory when it is at most
/// [`MAX_IN_MEMORY`] (`expected` is its length from the file's size) and the
/// budget has room, else from the file, rewound. `Err` when it could not be
/// read or rewound: the caller sends from the file, which then fails the
/// attempt properly.
pub fn measure(
    mut reader: BodyReader,
    expected: u64,
    memory: &mut Memory<'_>,
) -> (Body, io::Result<BodyMeasure>) {
    let held = usize::try_from(expected)
        .ok()
        .filter(|&n| n <= MAX_IN_MEMORY)
        .and_then(|n| memory.budget.reserve(n));
    if let Some(held) = held {
        match measure_in_memory(reader, held, memory.pool) {
            Ok(measured) => return measured,
            Err(rewound) => reader = rewound,
        }
    }
    measure_from_file(reader, expected, memory.buf)
}

/// Reads the body into a buffer of the pool while measuring it. `Err` with
/// the reader, rewound, when the file grew since the scan: it is measured
/// from the file instead.
fn measure_in_memory(
    mut reader: BodyReader,
    held: Held,
    pool: &mut Pool,
) -> Result<(Body, io::Result<BodyMeasure>), BodyReader> {
    let mut measure = BodyMeasure::new();
    // One byte more than expected, to notice a file that grew.
    let limit = held.n + 1;
    let mut bytes = pool.take(limit);
    let mut len = 0;
    while len < limit {
        match reader.read_into(&mut bytes[len..limit]) {
            Ok(0) => {
                let direct_end = if measure.is_verbatim() {
                    direct_end(&bytes[..len])
                } else {
                    0
                };
                let body = Body::Memory {
                    bytes,
                    len,
                    sent: 0,
                    direct_end,
                    _held: held,
                    file: reader,
                };
                return Ok((body, Ok(measure)));
            }
            Ok(n) => {
                measure.push(&bytes[len..len + n]);
                len += n;
            }
            Err(e) => {
                pool.give(bytes);
                return Ok((file_body(reader, 0), Err(e)));
            }
        }
    }
    pool.give(bytes);
    match reader.rewind() {
        Ok(()) => Err(reader),
        Err(e) => Ok((file_body(reader, 0), Err(e))),
    }
}

/// Measures the body from its file, chunk by chunk through `buf`, and
/// rewinds it for sending.
fn measure_from_file(
    mut reader: BodyReader,
    expected: u64,
    buf: &mut Vec<u8>,
) -> (Body, io::Result<BodyMeasure>) {
    let mut measure = BodyMeasure::new();
    // As `direct_end` does for a body in memory, chunk by chunk: after the
    // last LF at least DIRECT_TAIL octets before the end, when the file is
    // as long as `expected` says.
    let tail_from = expected.saturating_sub(DIRECT_TAIL as u64);
    let mut read = 0u64;
    let mut direct_end = 0u64;
    let result = (|| {
        loop {
            let n = reader.read_chunk(buf)?;
            if n == 0 {
                break;
            }
            measure.push(buf);
            if read < tail_from {
                let before = usize::try_from(tail_from - read).map_or(n, |b| b.min(n));
                if let Some(at) = buf[..before].iter().rposition(|&b| b == b'\n') {
                    direct_end = read + at as u64 + 1;
                }
            }
            read += n as u64;
        }
        reader.rewind()?;
        Ok(measure)
    })();
    let direct = match &result {
        Ok(measure) if measure.is_verbatim() && read == expected => direct_end,
        _ => 0,
    };
    (file_body(reader, direct), result)
}

/// A body sent from its file, of which the first `direct_end` octets may
/// go straight from it.
fn file_body(reader: BodyReader, direct_end: u64) -> Body {
    Body::File {
        reader,
        sent: 0,
        direct_end,
        positioned: true,
    }
}

/// What [`measure`] needs of the worker: the memory budget, the pool of
/// buffers, and the scratch buffer for reading a file in chunks.
pub struct Memory<'a> {
    pub budget: &'a Budget,
    pub pool: &'a mut Pool,
    pub buf: &'a mut Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    const HEAD: &[u8] = b"X-Postman-From: <s@e.org>\r\n\r\n";

    fn queue_file(body: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m1");
        std::fs::write(&path, [HEAD, body].concat()).expect("write");
        (dir, path)
    }

    fn reader(path: &Path) -> BodyReader {
        let file = File::open(path).expect("open");
        BodyReader::from_file(file, HEAD.len() as u64).expect("open")
    }

    fn send_all(mut body: Body) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            let chunk = body.next(&mut buf).expect("next");
            if chunk.is_empty() {
                return out;
            }
            out.extend_from_slice(chunk);
        }
    }

    /// A worker's side of [`measure`].
    #[derive(Default)]
    struct Worker {
        budget: Budget,
        pool: Pool,
        buf: Vec<u8>,
    }

    impl Worker {
        fn measure(&mut self, path: &Path, expected: usize) -> (Body, io::Result<BodyMeasure>) {
            let mut memory = Memory {
                budget: &self.budget,
                pool: &mut self.pool,
                buf: &mut self.buf,
            };
            measure(reader(path), expected as u64, &mut memory)
        }

        fn used(&self) -> usize {
            self.budget.0.load(Ordering::Relaxed)
        }
    }

    fn body_of(len: usize) -> Vec<u8> {
        (0..len).map(|i| b"ab\r\n.c\x80"[i % 7]).collect()
    }

    fn reference(body: &[u8]) -> BodyMeasure {
        let mut m = BodyMeasure::new();
        m.push(body);
        m
    }

    #[test]
    fn a_small_body_is_read_once_and_sent_from_memory() {
        let text = body_of(150_000);
        let (_dir, path) = queue_file(&text);
        let mut worker = Worker::default();
        let (body, measured) = worker.measure(&path, text.len());
        assert!(matches!(body, Body::Memory { .. }), "kept in memory");
        assert_eq!(measured.expect("measured"), reference(&text));
        assert_eq!(worker.used(), text.len(), "reserved");
        assert_eq!(send_all(body), text, "sent as read");
        assert_eq!(worker.used(), 0, "given back");
    }

    #[test]
    fn only_a_body_in_wire_form_is_written_straight_from_its_file() {
        let mut worker = Worker::default();
        // 1,000 lines of 17 octets: the last 241 lines (4,097 octets) are
        // the tail.
        let wire = b"Subject: x\r\nab.\r\n".repeat(500);
        let direct = wire.len() - 241 * 17;
        let (_dir, path) = queue_file(&wire);
        let (mut body, _) = worker.measure(&path, wire.len());
        // What the direct part says the file holds.
        let direct_part = |body: &Body| {
            body.direct_part().map(|part| {
                let mut bytes = vec![0; part.len];
                part.file
                    .read_exact_at(&mut bytes, part.offset)
                    .expect("read");
                bytes
            })
        };
        assert_eq!(
            direct_part(&body).as_deref(),
            Some(&wire[..direct]),
            "all but a tail"
        );
        assert!(wire.len() - direct >= DIRECT_TAIL && wire[direct - 1] == b'\n');
        body.advance(10);
        assert_eq!(
            direct_part(&body).as_deref(),
            Some(&wire[10..direct]),
            "the rest"
        );
        body.advance(direct - 10);
        assert!(
            body.direct_part().is_none(),
            "the tail goes through the session"
        );
        let mut buf = Vec::new();
        assert_eq!(body.next(&mut buf).expect("next"), &wire[direct..]);

        let small = b"Subject: x\r\n\r\nhello\r\n".repeat(100);
        let (_dir3, path3) = queue_file(&small);
        let (body, _) = worker.measure(&path3, small.len());
        assert!(
            body.direct_part().is_none(),
            "small: all through the session"
        );

        let stuffed = body_of(1000);
        let (_dir2, path2) = queue_file(&stuffed);
        let (body, _) = worker.measure(&path2, stuffed.len());
        assert!(matches!(body, Body::Memory { .. }));
        assert!(body.direct_part().is_none(), "dots and bare line ends");
    }

    /// Sends `part` over loopback TCP and gives what arrived.
    fn sent_over_tcp(part: &DirectPart<'_>) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let n = part.send(&client, &mut Vec::new())?;
        drop(client);
        let mut got = Vec::new();
        server.read_to_end(&mut got).expect("read");
        assert_eq!(got.len(), n, "what send said it wrote");
        Ok(got)
    }

    /// The direct part goes from the file, not from the copy (here they
    /// differ, to tell them apart); from the copy when the file cannot be
    /// spliced (a directory stands in for such a filesystem); and a file
    /// shorter than the part is an error, not an empty write.
    #[test]
    fn a_direct_part_goes_from_its_file_or_else_from_its_copy() {
        let (dir, path) = queue_file(b"from the file\r\n");
        let file = File::open(&path).expect("open");
        let offset = HEAD.len() as u64;
        let part = DirectPart {
            file: &file,
            offset,
            len: 15,
            copy: Some(b"from the copy\r\n"),
        };
        assert_eq!(sent_over_tcp(&part).expect("sent"), b"from the file\r\n");

        let folder = File::open(dir.path()).expect("open the folder");
        let part = DirectPart {
            file: &folder,
            offset: 0,
            len: 15,
            copy: Some(b"from the copy\r\n"),
        };
        assert_eq!(sent_over_tcp(&part).expect("sent"), b"from the copy\r\n");

        let part = DirectPart {
            file: &file,
            offset: offset + 100,
            len: 16,
            copy: Some(b"beyond the end\r\n"),
        };
        let e = sent_over_tcp(&part).expect_err("past the end");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_recycled_buffer_carries_nothing_of_the_body_before() {
        let mut worker = Worker::default();
        let long = body_of(150_000);
        let (_dir, path) = queue_file(&long);
        let (body, _) = worker.measure(&path, long.len());
        worker.pool.recycle(body);
        assert_eq!(worker.pool.free.len(), 1, "kept for the next body");

        let short: Vec<u8> = b"short\r\n.\r\n".repeat(70);
        let (_dir2, path2) = queue_file(&short);
        let (body, measured) = worker.measure(&path2, short.len());
        assert!(matches!(body, Body::Memory { .. }));
        assert_eq!(worker.pool.free.len(), 0, "the pooled buffer was used");
        assert_eq!(measured.expect("measured"), reference(&short));
        assert_eq!(send_all(body), short, "only the new body is sent");

        // A file longer than its size said is noticed in a pooled buffer
        // that has room for more, and sent whole from the file.
        let (body, _) = worker.measure(&path, long.len());
        worker.pool.recycle(body);
        let (body, measured) = worker.measure(&path, 100_000);
        assert!(matches!(body, Body::File { .. }), "grew past the size");
        assert_eq!(measured.expect("measured"), reference(&long));
        assert_eq!(send_all(body), long);
        assert_eq!(worker.pool.free.len(), 1, "the buffer went back");
    }

    #[test]
    fn the_pool_keeps_neither_large_buffers_nor_too_many() {
        let mut pool = Pool::default();
        pool.give(vec![0; POOLED_MAX + 1]);
        assert!(pool.free.is_empty(), "too large to keep");
        for _ in 0..POOL_BYTES / POOLED_MAX + 3 {
            pool.give(vec![0; POOLED_MAX]);
        }
        assert_eq!(pool.free.len(), POOL_BYTES / POOLED_MAX);
        assert_eq!(pool.bytes, POOL_BYTES);
        let buf = pool.take(10);
        assert_eq!(buf.len(), POOLED_MAX, "a kept buffer is reused whole");
        assert_eq!(pool.bytes, POOL_BYTES - POOLED_MAX);
    }

    /// A body too large for memory that goes on the wire as it is goes
    /// straight from its file too, but for a tail of whole lines, which is
    /// read from where the direct part ended; one written partly straight
    /// and partly through the session reads on from where it is.
    #[test]
    fn a_large_body_in_wire_form_goes_straight_from_its_file() {
        let wire = b"Subject: x\r\nab.\r\n".repeat(MAX_IN_MEMORY / 17 + 1000);
        let tail = wire.len()
            - wire[..wire.len() - DIRECT_TAIL]
                .iter()
                .rposition(|&b| b == b'\n')
                .expect("a line end")
            - 1;
        let direct = wire.len() - tail;
        let (_dir, path) = queue_file(&wire);
        let mut worker = Worker::default();
        let (mut body, _) = worker.measure(&path, wire.len());
        assert!(matches!(body, Body::File { .. }), "too large for memory");
        let part = body.direct_part().expect("a direct part");
        assert_eq!((part.offset, part.len), (HEAD.len() as u64, direct));
        assert!(part.copy.is_none(), "no copy in memory");
        let mut scratch = Vec::new();
        // Without sendfile: a chunk read from the file.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let client =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let n = part.send_copy(&client, &mut scratch).expect("sent");
        assert_eq!(n, CHUNK, "one chunk");
        let mut got = vec![0; n];
        std::io::Read::read_exact(&mut server, &mut got).expect("read");
        assert_eq!(got, &wire[..n]);

        body.advance(n);
        let mut buf = Vec::new();
        let next = body.next(&mut buf).expect("next").to_vec();
        assert_eq!(
            next,
            &wire[n..n + next.len()],
            "read on from the direct writes"
        );
        body.advance(direct - n - next.len());
        assert!(body.direct_part().is_none(), "the tail is left");
        assert_eq!(send_all(body), &wire[direct..], "the tail, from the file");

        let stuffed = body_of(MAX_IN_MEMORY + 1);
        let (_dir2, path2) = queue_file(&stuffed);
        let (body, _) = worker.measure(&path2, stuffed.len());
        assert!(body.direct_part().is_none(), "not in wire form");
    }

    #[test]
    fn a_large_body_or_a_full_budget_is_sent_from_the_file() {
        let text = body_of(MAX_IN_MEMORY + 1);
        let (_dir, path) = queue_file(&text);
        let mut worker = Worker::default();
        let (body, measured) = worker.measure(&path, text.len());
        assert!(matches!(body, Body::File { .. }), "too large for memory");
        assert_eq!(measured.expect("measured"), reference(&text));
        assert_eq!(send_all(body), text, "sent from the rewound file");

        let small = body_of(1000);
        let (_dir2, path2) = queue_file(&small);
        let held = worker
            .budget
            .reserve(MEMORY_BUDGET - 500)
            .expect("most of the budget");
        let (body, measured) = worker.measure(&path2, 1000);
        assert!(matches!(body, Body::File { .. }), "no room in the budget");
        assert_eq!(measured.expect("measured"), reference(&small));
        assert_eq!(send_all(body), small);
        drop(held);
        assert_eq!(worker.used(), 0);
    }

    #[test]
    fn a_body_longer_than_expected_is_measured_and_sent_whole_from_the_file() {
        let text = body_of(200_000);
        let (_dir, path) = queue_file(&text);
        let mut worker = Worker::default();
        // The size said 100,000: the file holds more.
        let (body, measured) = worker.measure(&path, 100_000);
        assert!(matches!(body, Body::File { .. }));
        assert_eq!(
            measured.expect("measured"),
            reference(&text),
            "measured whole, once"
        );
        assert_eq!(worker.used(), 0, "reservation given back");
        assert_eq!(send_all(body), text);
    }
}
