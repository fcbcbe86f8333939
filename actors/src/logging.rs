//! The Logger actor: the `slog-async` drain thread that every other actor
//! writes to. Actors never print; the log stream is also the metrics
//! interface. It writes to standard error, or to `log.file`, which it reopens
//! when asked (SIGUSR1), so logrotate can move the file away.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use postman::config::LogFormat;
use slog::{o, Drain, Logger, OwnedKVList, Record};

/// Records queued between the actors and the drain thread. Delivery records
/// must never be lost, so a full channel blocks the writer
/// ([`slog_async::OverflowStrategy::Block`]); 8192 records absorb a burst of
/// several thousand deliveries while the terminal or disk catches up.
const LOG_CHANNEL_CAPACITY: usize = 8192;

/// Big enough for any one record (a delivery record with a long reply is
/// under 2 KB), so each is written whole.
const LINE_BUFFER: usize = 16 * 1024;

/// What the rest of the process may ask of the logger, lock-free.
#[derive(Clone)]
pub struct LogControl {
    /// Set by the signal thread on SIGUSR1: the drain reopens its file
    /// before the next record.
    pub reopen: Arc<AtomicBool>,
    /// Records written so far (the logger's `metrics`).
    pub records: Arc<AtomicU64>,
    /// Where the logger's own `metrics` record goes (`actor` = `logger`;
    /// another actor writes it, since the drain cannot log to itself).
    pub log: Logger,
}

/// Starts the drain thread. Keep the guard alive until every actor has been
/// joined: dropping it flushes the remaining records and joins the thread.
pub fn start(
    format: LogFormat,
    debug: bool,
    file: Option<&Path>,
) -> anyhow::Result<(Logger, slog_async::AsyncGuard, LogControl)> {
    let reopen = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let level = if debug {
        slog::Level::Debug
    } else {
        slog::Level::Info
    };
    let out: Box<dyn Write + Send> = match file {
        Some(path) => Box::new(ReopeningFile::open(path, Arc::clone(&reopen))?),
        None => Box::new(io::stderr()),
    };
    // The formatters write a record piece by piece (the JSON one a token at
    // a time): unbuffered, that was over a hundred write(2) calls per
    // delivery. Both flush at the end of every record (slog-json with
    // `set_flush`, slog-term's decorator always), so a buffer makes it one
    // write a record, and a record is never left half in it. (A LineWriter
    // did the same but searched every piece for a newline: 1.5 % of the
    // process's samples.)
    let out = BufWriter::with_capacity(LINE_BUFFER, out);
    let (drain, guard) = match format {
        LogFormat::Json => {
            let drain = slog_json::Json::new(out)
                .add_default_keys()
                .set_flush(true)
                .build()
                .fuse();
            spawn(Counting::new(drain.filter_level(level).fuse(), &records))
        }
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(out);
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            spawn(Counting::new(drain.filter_level(level).fuse(), &records))
        }
    };
    let root = Logger::root(drain.fuse(), o!());
    let control = LogControl {
        reopen,
        records,
        log: root.new(o!("actor" => "logger", "pid" => std::process::id())),
    };
    Ok((root, guard, control))
}

fn spawn<D>(drain: D) -> (slog_async::Async, slog_async::AsyncGuard)
where
    D: Drain<Err = slog::Never, Ok = ()> + Send + 'static,
{
    slog_async::Async::new(drain)
        .chan_size(LOG_CHANNEL_CAPACITY)
        .overflow_strategy(slog_async::OverflowStrategy::Block)
        .thread_name("postman-logger".into())
        .build_with_guard()
}

/// Counts the records that reach the output.
struct Counting<D> {
    inner: D,
    records: Arc<AtomicU64>,
}

impl<D> Counting<D> {
    fn new(inner: D, records: &Arc<AtomicU64>) -> Counting<D> {
        Counting {
            inner,
            records: Arc::clone(records),
        }
    }
}

impl<D: Drain<Err = slog::Never, Ok = ()>> Drain for Counting<D> {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        self.records.fetch_add(1, Ordering::Relaxed);
        self.inner.log(record, values)
    }
}

/// An append-only log file that reopens its path when asked, so a rotated
/// file is let go and a new one started.
struct ReopeningFile {
    path: PathBuf,
    file: File,
    reopen: Arc<AtomicBool>,
}

impl ReopeningFile {
    fn open(path: &Path, reopen: Arc<AtomicBool>) -> anyhow::Result<ReopeningFile> {
        let file = append(path)
            .with_context(|| format!("cannot open the log file {} (log.file)", path.display()))?;
        Ok(ReopeningFile {
            path: path.to_owned(),
            file,
            reopen,
        })
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for ReopeningFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.reopen.swap(false, Ordering::AcqRel) {
            // If the new file cannot be opened, keep writing to the old one
            // rather than losing records.
            if let Ok(file) = append(&self.path) {
                self.file = file;
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
