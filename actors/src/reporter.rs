//! The TLS reporter (RFC 8460), on a thread of its own: it appends every
//! MX session the workers report to the day's journal under
//! `.OTHER_SERVERS/.tlsrpt/` (one JSON line, one `write`, so a restart
//! loses nothing and a crash tears at most the last line), and once a day
//! is over, at this host's offset into the first hour, sends each policy
//! domain that asks for reports (`_smtp._tls` TXT) its report: mailed
//! (DKIM-signed, through the queue) or POSTed over HTTPS. What was sent is
//! noted in `<day>.sent`, so that a restart sends nothing twice; a
//! destination that fails is tried again at each tick for a day
//! ([`outbox::RETRY_FOR`]). Workers never wait for it: their sessions
//! come through a bounded mailbox they do not block on.

mod deliver;

use std::fs::File;
use std::io::Write as _;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use postman::config::{Config, Tlsrpt};
use postman::queue::dirfd::QueueDir;
use postman::tlsrpt::outbox::{self, DayState};
use postman::tlsrpt::{Day, Session};
use slog::{error, info, warn, Logger};

use crate::descriptors::above_fd_setsize;

/// Sessions waiting for the reporter; a full mailbox drops them (counted
/// by the workers), never delays a delivery.
const MAILBOX: usize = 4096;

/// How often due days are looked for.
const TICK: Duration = Duration::from_secs(60);

/// The reporter's files: `.OTHER_SERVERS/.tlsrpt` under the queue root,
/// made when missing.
pub fn open_dir(config: &Config) -> std::io::Result<QueueDir> {
    let dir = QueueDir::open_root(&config.maildir)?
        .dir(".OTHER_SERVERS")?
        .dir_create(".tlsrpt")?;
    Ok(match above_fd_setsize(std::os::fd::AsFd::as_fd(&dir)) {
        Some(high) => dir.with_descriptor(high),
        None => dir,
    })
}

/// Starts the reporter when `tlsrpt.enabled`: the sender the workers
/// report to, and the thread, which ends once every sender is dropped.
pub fn start(
    config: &Config,
    log: &Logger,
) -> anyhow::Result<Option<(Sender<Session>, JoinHandle<()>)>> {
    let Some(tlsrpt) = config.tlsrpt.clone() else {
        return Ok(None);
    };
    let dir = open_dir(config).with_context(|| {
        format!(
            "cannot open {}/.OTHER_SERVERS/.tlsrpt for the TLS reports",
            config.maildir.display()
        )
    })?;
    let sender = deliver::Sender::new(config, tlsrpt.clone(), log.clone())?;
    let (tx, rx) = crossbeam_channel::bounded(MAILBOX);
    let log = log.new(slog::o!("actor" => "tlsrpt"));
    let mut reporter = Reporter {
        dir,
        offset: outbox::offset(&config.hostname),
        open: None,
        sender,
        tlsrpt,
        log,
    };
    let handle = std::thread::Builder::new()
        .name("postman-tlsrpt".into())
        .spawn(move || reporter.run(rx))
        .context("cannot start the TLS reporter thread")?;
    Ok(Some((tx, handle)))
}

struct Reporter {
    dir: QueueDir,
    /// This host's offset into the hour after midnight.
    offset: u64,
    /// Today's journal, open for appending.
    open: Option<(Day, File)>,
    sender: deliver::Sender,
    tlsrpt: Tlsrpt,
    log: Logger,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Reporter {
    fn run(&mut self, inbox: Receiver<Session>) {
        info!(self.log, "TLS reports on"; "submitter" => &self.tlsrpt.submitter.domain,
            "from" => &self.tlsrpt.from);
        self.tick();
        let mut next_tick = std::time::Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(std::time::Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(session) => self.record(&session),
                Err(RecvTimeoutError::Timeout) => {
                    self.tick();
                    next_tick = std::time::Instant::now() + TICK;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some((_, file)) = self.open.take() {
            let _ = file.sync_data();
        }
    }

    /// Appends `session` to its day's journal.
    fn record(&mut self, session: &Session) {
        let Some(day) = Day::of(session.at) else {
            return;
        };
        if self.open.as_ref().is_none_or(|(open, _)| *open != day) {
            self.open = match self.open_journal(day) {
                Ok(file) => Some((day, file)),
                Err(e) => {
                    error!(self.log, "cannot open the TLS report journal"; "day" => %day,
                        "error" => %e);
                    None
                }
            };
        }
        if let Some((_, file)) = &mut self.open {
            if let Err(e) = file.write_all(&session.to_line()) {
                error!(self.log, "cannot write the TLS report journal"; "day" => %day,
                    "error" => %e);
            }
        }
    }

    /// Opens `day`'s journal for appending; a last line a crash tore is
    /// ended first, so that the next line stands on its own.
    fn open_journal(&self, day: Day) -> std::io::Result<File> {
        let name = outbox::journal_name(day);
        let mut file = self.dir.open_append(&name, 0o600)?;
        let (reader, meta) = self.dir.open_file(&name)?;
        let mut last = [b'\n'];
        if meta.len() > 0 {
            std::os::unix::fs::FileExt::read_exact_at(&reader, &mut last, meta.len() - 1)?;
        }
        let torn = last[0] != b'\n';
        if torn {
            file.write_all(b"\n")?;
        }
        Ok(file)
    }

    /// Sends the reports of every day that is due.
    fn tick(&mut self) {
        let now = now_secs();
        let entries = match self.dir.entries() {
            Ok(entries) => entries,
            Err(e) => {
                error!(self.log, "cannot list the TLS report journals"; "error" => %e);
                return;
            }
        };
        let mut days: Vec<Day> = entries
            .iter()
            .filter_map(|entry| entry.name.to_str().and_then(outbox::journal_day))
            .collect();
        days.sort();
        for day in days {
            match outbox::day_state(day, now, self.offset) {
                DayState::Wait => {}
                DayState::Send => {
                    if self.open.as_ref().is_some_and(|(open, _)| *open == day) {
                        self.open = None;
                    }
                    self.sender.send_day(&self.dir, day, false);
                }
                DayState::GiveUp => {
                    warn!(self.log, "TLS reports not sent within a day; given up"; "day" => %day,
                        "pending" => self.sender.pending(&self.dir, day).join(", "));
                    deliver::close_day(&self.dir, day, &self.log);
                }
            }
        }
    }
}

/// `postman tls-report [--day YYYY-MM-DD]`: sends the reports of `day`
/// (default: yesterday, UTC) now, and says what became of each. A day not
/// over yet is sent as counted so far and noted nowhere, so that its whole
/// report still goes out after its end.
pub fn send_now(config: &Config, day: Option<&str>, log: &Logger) -> anyhow::Result<String> {
    let Some(tlsrpt) = config.tlsrpt.clone() else {
        anyhow::bail!(
            "TLS reports are off: set tlsrpt.enabled = true (and its from and dkim_* keys)"
        );
    };
    let now = now_secs();
    let day = match day {
        Some(text) => outbox::journal_day(&format!("{text}.jsonl"))
            .with_context(|| format!("--day {text:?}: not a date of the form YYYY-MM-DD"))?,
        None => Day::of(now.saturating_sub(24 * 60 * 60)).context("the clock is before 1970")?,
    };
    let dir = open_dir(config).with_context(|| {
        format!(
            "cannot open {}/.OTHER_SERVERS/.tlsrpt",
            config.maildir.display()
        )
    })?;
    let early = day.end().is_none_or(|end| now < end);
    let mut sender = deliver::Sender::new(config, tlsrpt, log.clone())?;
    let outcomes = sender.send_day(&dir, day, early);
    let mut out = String::new();
    if outcomes.is_empty() {
        out.push_str(&format!("{day}: no report to send\n"));
    }
    for o in outcomes {
        let result = match &o.result {
            Ok(()) => "sent".to_owned(),
            Err(why) => format!("not sent: {why}"),
        };
        out.push_str(&format!("{day} {} {} {result}\n", o.domain, o.destination));
    }
    if early {
        out.push_str(&format!(
            "{day} is not over: its whole report is sent again after its end\n"
        ));
    }
    Ok(out)
}
