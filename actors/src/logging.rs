//! The Logger actor: the drain thread that every other actor writes to.
//! Actors never print; the log stream is also the metrics interface. It
//! writes to standard error, or to `log.file`, which it reopens when asked
//! (SIGUSR1), so logrotate can move the file away.
//!
//! A record crosses to the thread as slog-async's [`AsyncRecord`] (its
//! owned copy of a record's values), as with slog-async's own drain; the
//! thread's loop is this module's, for three reasons. It sleeps on an
//! [`Inbox`], as every other actor does, where slog-async's blocking
//! receive spins and calls `sched_yield` four times before it parks, each
//! a context switch (see `mailbox`). Woken by a record, it lets the records of the next 10 ms
//! come and writes them with one `write(2)`. And while writes fail (a
//! full disk under `log.file`) it keeps the newest records, up to 1 MiB,
//! tries again every second, and says on standard error what it could
//! not write, where slog-json's fused drain panicked the logger
//! thread and then, through every actor's next record, the daemon.
//!
//! Every record's text is cleaned on its way in (module `clean`): cut to
//! a few KB, and in the `term` format with the characters a terminal acts
//! on escaped, for every value of every record rather than call by call.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use chrono::{DateTime, Local, SecondsFormat, Utc};
use crossbeam_channel::TryRecvError;
use postman::config::LogFormat;
use slog::{
    o, BorrowedKV, Drain, FnValue, Level, Logger, OwnedKVList, PushFnValue, Record, RecordStatic,
};
use slog_async::AsyncRecord;

use crate::mailbox::{self, Inbox, Postbox};

mod clean;

/// Records queued between the actors and the drain thread. Delivery records
/// must never be lost, so a full mailbox blocks the writer; 8192 records
/// absorb a burst of several thousand deliveries while the terminal or
/// disk catches up.
const LOG_CHANNEL_CAPACITY: usize = 8192;

/// Records formatted but not yet written are written at once when they
/// reach this size, even if more are waiting. A record is formatted whole
/// into the batch, and a batch goes out in as few `write(2)` calls as the
/// output takes.
const BATCH: usize = 64 * 1024;

/// How long the drain thread, woken by a record, lets others gather
/// before it writes: it wakes at most about a hundred times a second,
/// however many records come, and writes each batch at once.
const GATHER: Duration = Duration::from_millis(10);

/// While the log cannot be written (a full disk under `log.file`), the
/// newest records are kept, up to this many bytes (some 2,000 delivery
/// records), and a write is tried again [`RETRY`] after each failure.
const HOLD: usize = 1024 * 1024;
const RETRY: Duration = Duration::from_secs(1);

/// What the rest of the process may ask of the logger, lock-free.
#[derive(Clone)]
pub struct LogControl {
    /// Set by the signal thread on SIGUSR1: the drain reopens its file
    /// before its next write.
    pub reopen: Arc<AtomicBool>,
    /// Records formatted for the output so far (the logger's `metrics`).
    pub records: Arc<AtomicU64>,
    /// Records dropped while the output could not be written, beyond what
    /// is kept for a retry (the newest 1 MiB).
    pub dropped: Arc<AtomicU64>,
    /// Where the logger's own `metrics` record goes (`actor` = `logger`;
    /// another actor writes it, since the drain cannot log to itself).
    pub log: Logger,
}

/// Starts the drain thread. Keep the guard alive until every actor has been
/// joined: dropping it writes the remaining records and joins the thread.
pub fn start(
    format: LogFormat,
    debug: bool,
    file: Option<&Path>,
) -> anyhow::Result<(Logger, LogGuard, LogControl)> {
    let reopen = Arc::new(AtomicBool::new(false));
    let records = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let level = if debug { Level::Debug } else { Level::Info };
    let out: Box<dyn Write + Send> = match file {
        Some(path) => Box::new(ReopeningFile::open(path, Arc::clone(&reopen))?),
        None => Box::new(io::stderr()),
    };
    let counts = Counts {
        records: Arc::clone(&records),
        dropped: Arc::clone(&dropped),
    };
    let (root, guard) =
        spawn(format, level, out, counts).context("cannot start the logger thread")?;
    let control = LogControl {
        reopen,
        records,
        dropped,
        log: root.new(o!("actor" => "logger", "pid" => std::process::id())),
    };
    Ok((root, guard, control))
}

/// What the drain thread counts, for [`LogControl`].
#[derive(Clone, Default)]
struct Counts {
    records: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// The drain thread writing records of `level` and above to `out`, and
/// the root logger that sends to it.
fn spawn(
    format: LogFormat,
    level: Level,
    out: Box<dyn Write + Send>,
    counts: Counts,
) -> io::Result<(Logger, LogGuard)> {
    let (postbox, inbox) = mailbox::bounded(LOG_CHANNEL_CAPACITY);
    let thread = std::thread::Builder::new()
        .name("postman-logger".into())
        .spawn(move || drain_thread(&inbox, format, out, &counts))?;
    let guard = LogGuard {
        postbox: postbox.clone(),
        thread: Some(thread),
    };
    let mode = match format {
        LogFormat::Term => clean::Mode::Escape,
        LogFormat::Json => clean::Mode::Cut,
    };
    Ok((
        Logger::root(
            ToLogger {
                level,
                mode,
                postbox,
            },
            o!(),
        ),
        guard,
    ))
}

enum LogMsg {
    /// A record and when it was made. Boxed: every slot of the mailbox is
    /// written when it is made, 8,192 of them.
    Record(Box<(SystemTime, AsyncRecord)>),
    /// Write what came before, then stop.
    Finish,
}

/// The drain behind every actor's `Logger`: records of the level wanted
/// go to the drain thread, cleaned, waiting for room when its mailbox is
/// full.
struct ToLogger {
    level: Level,
    /// How the texts of a record are cleaned for the format.
    mode: clean::Mode,
    postbox: Postbox<LogMsg>,
}

impl Drain for ToLogger {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        if record.level().is_at_least(self.level) {
            // Cleaned here, on the actor's thread, where slog-async's copy
            // of the record is made: a huge value is never copied whole.
            let msg = clean::text(record.msg(), self.mode);
            let kv = clean::Cleaned {
                kv: record.kv().0,
                mode: self.mode,
            };
            let values = clean::values(values, self.mode);
            let rstatic = RecordStatic {
                location: record.location(),
                level: record.level(),
                tag: record.tag(),
            };
            let cleaned = AsyncRecord::from(
                &Record::new(&rstatic, &format_args!("{msg}"), BorrowedKV(&kv)),
                &values,
            );
            // Fails only once the thread has stopped (the guard dropped):
            // nothing is left to write the record.
            let _ = self
                .postbox
                .send(LogMsg::Record(Box::new((SystemTime::now(), cleaned))));
        }
        Ok(())
    }

    fn is_enabled(&self, level: Level) -> bool {
        level.is_at_least(self.level)
    }
}

/// Stops the drain thread when dropped, after every record sent before.
pub struct LogGuard {
    postbox: Postbox<LogMsg>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if self.postbox.send(LogMsg::Finish).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The formatters write a record piece by piece (the JSON one a token at
/// a time); they write into this buffer, which the drain thread writes
/// out whole records at a time. Their flush does nothing: the thread
/// decides when to write.
#[derive(Clone, Default)]
struct Pending(Rc<RefCell<Vec<u8>>>);

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The formatter: JSON lines or slog-term's text.
type Format = Box<dyn Drain<Ok = (), Err = io::Error>>;

thread_local! {
    /// When the record being formatted on the drain thread was made.
    static MADE: Cell<Option<SystemTime>> = const { Cell::new(None) };
}

/// When the record being formatted was made: its time stamp, which the
/// formatters would otherwise take when they format it, up to
/// [`GATHER`] later.
fn made() -> SystemTime {
    MADE.with(Cell::get).unwrap_or_else(SystemTime::now)
}

fn formatter(format: LogFormat, pending: &Pending) -> Format {
    match format {
        // slog-json's default keys, the time stamp the record's own.
        LogFormat::Json => Box::new(
            slog_json::Json::new(pending.clone())
                .add_key_value(o!(
                    "ts" => FnValue(|_: &Record<'_>| {
                        DateTime::<Utc>::from(made()).to_rfc3339_opts(SecondsFormat::Nanos, true)
                    }),
                    "level" => FnValue(|record: &Record<'_>| record.level().as_short_str()),
                    "msg" => PushFnValue(|record: &Record<'_>, ser| ser.emit(record.msg())),
                ))
                .build(),
        ),
        // slog-term's local time stamp, of the record's own time.
        LogFormat::Term => {
            let decorator = slog_term::PlainDecorator::new(pending.clone());
            Box::new(
                slog_term::FullFormat::new(decorator)
                    .use_custom_timestamp(|w: &mut dyn Write| {
                        write!(
                            w,
                            "{}",
                            DateTime::<Local>::from(made()).format("%b %d %H:%M:%S%.3f")
                        )
                    })
                    .build(),
            )
        }
    }
}

fn drain_thread(
    inbox: &Inbox<LogMsg>,
    format: LogFormat,
    out: Box<dyn Write + Send>,
    counts: &Counts,
) {
    let pending = Pending::default();
    let json = format == LogFormat::Json;
    let format = formatter(format, &pending);
    let mut out = Output::new(out, HOLD, Arc::clone(&counts.dropped));
    let take = |boxed: Box<(SystemTime, AsyncRecord)>| {
        let (made, record) = *boxed;
        let before = pending.0.borrow().len();
        MADE.with(|cell| cell.set(Some(made)));
        if record.log_to(&format).is_ok() {
            if json {
                clean::json_escape_tail(&mut pending.0.borrow_mut(), before);
            }
            counts.records.fetch_add(1, Ordering::Relaxed);
        } else {
            // Half a record is no record.
            pending.0.borrow_mut().truncate(before);
        }
    };
    // Forever, as far as the clock can count: a send wakes it.
    while let Ok(LogMsg::Record(record)) = inbox.recv_timeout(Duration::MAX) {
        take(record);
        // The records of the next moment come along: a sleep, which a
        // send does not cut short as it would a park.
        std::thread::sleep(GATHER);
        loop {
            match inbox.try_recv() {
                Ok(LogMsg::Record(record)) => take(record),
                Ok(LogMsg::Finish) | Err(TryRecvError::Disconnected) => {
                    out.write(&pending, true);
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
            if pending.0.borrow().len() >= BATCH {
                out.write(&pending, false);
            }
        }
        out.write(&pending, false);
    }
    // Finished, or every sender gone.
    out.write(&pending, true);
}

/// Where the records go, and what to do while they cannot.
struct Output {
    out: Box<dyn Write + Send>,
    /// While writes fail, the newest records are kept, at most this many
    /// bytes of them, and tried again [`RETRY`] after the last failure.
    hold: usize,
    /// When the last write failed, while writes fail.
    failing: Option<Instant>,
    /// Records dropped beyond `hold`.
    dropped: Arc<AtomicU64>,
}

impl Output {
    fn new(out: Box<dyn Write + Send>, hold: usize, dropped: Arc<AtomicU64>) -> Output {
        Output {
            out,
            hold,
            failing: None,
            dropped,
        }
    }

    /// Writes the records waiting in `pending`, or what of them the
    /// output takes; the rest stays. While writes fail, a write is tried
    /// again only [`RETRY`] after the last failure, or at the `last`.
    fn write(&mut self, pending: &Pending, last: bool) {
        let mut batch = pending.0.borrow_mut();
        if batch.is_empty() {
            return;
        }
        if self.failing.is_some_and(|at| !last && at.elapsed() < RETRY) {
            self.trim(&mut batch);
            return;
        }
        let mut written = 0;
        let result = loop {
            if written == batch.len() {
                break self.out.flush();
            }
            match self.out.write(&batch[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        batch.drain(..written);
        match result {
            Ok(()) => {
                if self.failing.take().is_some() {
                    say("the log is written again");
                }
            }
            Err(e) => {
                if self.failing.is_none() {
                    say(&format!(
                        "cannot write the log ({e}); the newest {} KiB of records are kept \
                         and tried again every {} s",
                        self.hold / 1024,
                        RETRY.as_secs()
                    ));
                }
                self.failing = Some(Instant::now());
                self.trim(&mut batch);
            }
        }
    }

    /// Drops the oldest whole records beyond `hold` bytes, and says how
    /// many.
    fn trim(&self, batch: &mut Vec<u8>) {
        let Some(excess) = batch.len().checked_sub(self.hold).filter(|&n| n > 0) else {
            return;
        };
        let cut = batch[excess..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(batch.len(), |at| excess + at + 1);
        let lost = batch[..cut].iter().filter(|&&b| b == b'\n').count();
        batch.drain(..cut);
        self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        say(&format!(
            "the log still cannot be written; records lost: {lost}"
        ));
    }
}

/// A word about the log itself, on standard error (which may be the log
/// that fails: then it is lost too).
fn say(what: &str) {
    let _ = writeln!(io::stderr(), "postman: {what}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An output that keeps what is written and counts the `write(2)`s.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let mut inner = self.0.lock().expect("recorder");
            inner.0.extend_from_slice(buf);
            inner.1 += 1;
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Recorder {
        fn lines(&self) -> Vec<String> {
            let inner = self.0.lock().expect("recorder");
            String::from_utf8_lossy(&inner.0)
                .lines()
                .map(str::to_owned)
                .collect()
        }

        fn writes(&self) -> usize {
            self.0.lock().expect("recorder").1
        }

        fn text(&self) -> String {
            let inner = self.0.lock().expect("recorder");
            String::from_utf8(inner.0.clone()).expect("UTF-8")
        }
    }

    fn started(format: LogFormat, level: Level) -> (Logger, LogGuard, Recorder, Arc<AtomicU64>) {
        let out = Recorder::default();
        let counts = Counts::default();
        let records = Arc::clone(&counts.records);
        let (log, guard) =
            spawn(format, level, Box::new(out.clone()), counts).expect("logger thread");
        (log, guard, out, records)
    }

    /// A burst of records from several threads: every one written whole,
    /// each thread's in its order, many to a `write(2)`, all of them by
    /// the time the guard is dropped.
    #[test]
    fn a_burst_of_records_is_written_whole_in_few_writes() {
        let (log, guard, out, records) = started(LogFormat::Json, Level::Info);
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for n in 0..250 {
                        slog::info!(log, "delivery"; "thread" => t, "n" => n, "reply" => "250 2.0.0 Ok: queued as \"x\"");
                    }
                })
            })
            .collect();
        for sender in senders {
            sender.join().expect("sender");
        }
        drop(log);
        drop(guard);
        let lines = out.lines();
        assert_eq!(lines.len(), 1000);
        assert_eq!(records.load(Ordering::Relaxed), 1000);
        let mut next = [0u64; 4];
        for line in &lines {
            let record: serde_json::Value =
                serde_json::from_str(line).expect("one JSON record a line");
            assert_eq!(record["msg"], "delivery");
            assert_eq!(record["reply"], "250 2.0.0 Ok: queued as \"x\"");
            let t = record["thread"].as_u64().expect("thread") as usize;
            assert_eq!(record["n"].as_u64(), Some(next[t]), "thread {t} in order");
            next[t] += 1;
        }
        // Gathered: 1,000 records sent in a few milliseconds. Each write
        // is at most a batch, so never fewer than the bytes allow.
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        assert!(out.writes() >= bytes / BATCH, "{} writes", out.writes());
        assert!(
            out.writes() <= 100,
            "{} writes for 1,000 records",
            out.writes()
        );
    }

    /// A record's time stamp is when it was made, not when the drain
    /// thread formatted it, [`GATHER`] or more later.
    #[test]
    fn a_record_is_stamped_when_it_is_made() {
        let (log, guard, out, _) = started(LogFormat::Json, Level::Info);
        let before = SystemTime::now();
        slog::info!(log, "stamped");
        let after = SystemTime::now();
        drop(guard);
        let lines = out.lines();
        assert_eq!(lines.len(), 1);
        let record: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert_eq!(record["level"], "INFO");
        assert_eq!(record["msg"], "stamped");
        let ts = record["ts"].as_str().expect("ts");
        let ts: SystemTime = DateTime::parse_from_rfc3339(ts).expect("RFC 3339").into();
        assert!(
            before <= ts && ts <= after,
            "{ts:?} should be between {before:?} and {after:?}"
        );
    }

    /// Records below the level are never formatted or sent; the text
    /// format works the same way.
    #[test]
    fn records_below_the_level_are_left_out() {
        let (log, guard, out, records) = started(LogFormat::Term, Level::Info);
        slog::debug!(log, "not wanted"; "n" => 1);
        slog::info!(log, "wanted"; "n" => 2);
        slog::warn!(log, "wanted too"; "n" => 3);
        drop(guard);
        let lines = out.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("wanted") && lines[0].contains("n: 2"),
            "{lines:?}"
        );
        assert!(lines[1].contains("wanted too"), "{lines:?}");
        assert_eq!(records.load(Ordering::Relaxed), 2);
        // After the thread stopped, a record goes nowhere and blocks
        // nothing.
        slog::info!(log, "too late");
        assert_eq!(out.lines().len(), 2);
    }

    /// An output that fails with ENOSPC (and counts the failures) while
    /// its switch is on, and records what it takes when it is off.
    struct Flaky {
        full: Arc<AtomicBool>,
        out: Recorder,
        failures: Arc<AtomicU64>,
    }

    impl Flaky {
        /// One that fails until switched off, its switch, what it took
        /// and its count of failures.
        fn full() -> (Flaky, Arc<AtomicBool>, Recorder, Arc<AtomicU64>) {
            let flaky = Flaky {
                full: Arc::new(AtomicBool::new(true)),
                out: Recorder::default(),
                failures: Arc::new(AtomicU64::new(0)),
            };
            let (full, out, failures) = (
                Arc::clone(&flaky.full),
                flaky.out.clone(),
                Arc::clone(&flaky.failures),
            );
            (flaky, full, out, failures)
        }
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.full.load(Ordering::Relaxed) {
                self.failures.fetch_add(1, Ordering::Relaxed);
                Err(io::Error::from_raw_os_error(nix::libc::ENOSPC))
            } else {
                self.out.write(buf)
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// An output that fails for a while loses nothing: the records are
    /// kept and written, in order, once it takes them again.
    #[test]
    fn records_wait_while_the_output_fails() {
        let (out, full, recorder, failures) = Flaky::full();
        let (log, guard) = spawn(
            LogFormat::Json,
            Level::Info,
            Box::new(out),
            Counts::default(),
        )
        .expect("logger thread");
        slog::info!(log, "first");
        let deadline = Instant::now() + Duration::from_secs(10);
        while failures.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(failures.load(Ordering::Relaxed), 1, "tried once");
        slog::info!(log, "second");
        std::thread::sleep(GATHER * 3);
        full.store(false, Ordering::Relaxed);
        drop(guard);
        let lines = recorder.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains("first") && lines[1].contains("second"),
            "{lines:?}"
        );
    }

    /// While the output fails, what is kept is the newest whole records
    /// within the limit; once it works they go out.
    #[test]
    fn a_failing_output_keeps_the_newest_records_within_the_limit() {
        let (out, full, recorder, _) = Flaky::full();
        let dropped = Arc::new(AtomicU64::new(0));
        let mut out = Output::new(Box::new(out), 24, Arc::clone(&dropped));
        let pending = Pending::default();
        let add = |line: &str| pending.0.borrow_mut().extend_from_slice(line.as_bytes());
        add("record one\n");
        add("record two\n");
        out.write(&pending, false);
        assert_eq!(pending.0.borrow().as_slice(), b"record one\nrecord two\n");
        add("record three\n");
        // Not tried (within RETRY), but trimmed to the limit: whole
        // records, the oldest dropped.
        out.write(&pending, false);
        assert_eq!(pending.0.borrow().as_slice(), b"record three\n");
        assert_eq!(dropped.load(Ordering::Relaxed), 2, "counted");
        full.store(false, Ordering::Relaxed);
        out.write(&pending, true);
        assert!(pending.0.borrow().is_empty());
        assert_eq!(recorder.lines(), ["record three"]);
    }

    /// Every text of a record is cleaned: its message, its values and its
    /// loggers' values, in each format. `term` escapes what a terminal
    /// acts on; JSON stays valid, keeps the text exact and numbers as
    /// numbers; both cut a 10 MB value to a few KB.
    #[test]
    fn every_text_of_every_record_is_cleaned() {
        let hostile = "\x1b[31m\x07\0\r\u{9b}2J";
        let escaped = r"\x1b[31m\x07\0\r\u{9b}2J";
        let long = "z".repeat(10 << 20);
        let cut = "… [cut: 10485760 bytes]";
        for format in [LogFormat::Term, LogFormat::Json] {
            let (log, guard, out, _) = started(format, Level::Info);
            let child = log.new(o!("peer" => hostile.to_owned(), "n" => 7));
            slog::warn!(child, "said {}", hostile; "reply" => hostile, "shown" => %hostile, "long" => &long);
            drop((child, log, guard));
            let text = out.text();
            assert_eq!(
                text.matches('\n').count(),
                1,
                "{format:?}: one line: {text:?}"
            );
            assert!(
                text.len() < 2 * clean::LIMIT,
                "{format:?}: {} bytes",
                text.len()
            );
            assert!(
                !text.contains(['\x1b', '\x07', '\0', '\r', '\u{9b}']),
                "{format:?}: raw controls in {text:?}"
            );
            match format {
                LogFormat::Term => {
                    for field in [
                        format!("said {escaped}"),
                        format!("reply: {escaped}"),
                        format!("shown: {escaped}"),
                        format!("peer: {escaped}"),
                        "n: 7".to_owned(),
                        cut.to_owned(),
                    ] {
                        assert!(text.contains(&field), "term shows {field:?}: {text}");
                    }
                }
                LogFormat::Json => {
                    let record: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                    assert_eq!(record["msg"], format!("said {hostile}"));
                    for key in ["reply", "shown", "peer"] {
                        assert_eq!(record[key], hostile, "{key} exact in JSON");
                    }
                    assert_eq!(record["n"], 7, "a number stays a number");
                    let long = record["long"].as_str().expect("long");
                    assert!(long.starts_with("zzz") && long.ends_with(cut), "{long}");
                }
            }
        }
    }
}
