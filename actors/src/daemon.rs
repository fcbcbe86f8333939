//! Wiring: builds the mailboxes, starts every actor on its own thread, turns
//! SIGINT/SIGTERM into a Shutdown message, and joins everything at the end.
//! Shutdown is "drop the senders, then join", as in ripgrep's parallel walker.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use crossbeam_channel::Receiver;
use nix::sys::signal::{SigSet, Signal};
use postman::config::{Config, Loaded, Settings};
use postman::queue::{self, Layout, Queue};
use slog::{error, info, o, warn, Logger};

use crate::dispatcher::{Dispatcher, MAX_LOOKUPS};
use crate::logging::LogControl;
use crate::mailbox::Postbox;
use crate::messages::{DispatcherMsg, ScannerMsg};
use crate::scanner::Scanner;
use crate::worker::{Worker, WorkerLink};

/// The dispatcher's mailbox. Everyone else sends into it; it is sized for a
/// burst of scanner findings plus one answer per open connection
/// (`delivery.max_connections` is at most 900), so workers rarely wait.
const DISPATCHER_MAILBOX: usize = 4096;

/// Each worker's mailbox. The dispatcher never blocks on it (a full mailbox
/// is kept in the dispatcher's backlog), so this only bounds memory.
const WORKER_MAILBOX: usize = 1024;

/// The signals postman handles (SIGINT/SIGTERM stop it, SIGHUP reloads the
/// settings, SIGUSR1 reopens the log file), blocked in the calling thread.
/// Call it before any other thread starts (the logger's included): threads
/// inherit the mask, so only the signal thread of [`run`] ever receives
/// them, through `sigwait`; no signal handler runs at all.
pub fn block_signals() -> anyhow::Result<SigSet> {
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .context("cannot block SIGINT, SIGTERM, SIGHUP and SIGUSR1")?;
    Ok(signals)
}

/// Loads the settings again for SIGHUP (the same file, environment and flags
/// as at the start).
pub type Reloader = Box<dyn FnMut() -> anyhow::Result<Loaded> + Send>;

/// What the process around the actors provides.
pub struct Runtime {
    /// From [`block_signals`].
    pub signals: SigSet,
    /// From [`crate::descriptors::prepare`], called before any other
    /// thread started.
    pub descriptors: crate::descriptors::Prepared,
    /// The logger's controls (file reopening, record count).
    pub log_control: LogControl,
    /// The settings in force at the start, to report what a reload changes.
    pub settings: Settings,
    pub reload: Reloader,
}

/// Runs postman until the queue is done (`once`) or a signal stops it.
pub fn run(config: Config, once: bool, runtime: Runtime, log: &Logger) -> anyhow::Result<()> {
    let queue = open_queue_root(&config)?;
    log_descriptors(&runtime.descriptors, log);
    let owner = postman::queue::owner::this_process();
    recover(&queue, log);

    let (dispatcher_tx, dispatcher_rx) = crate::mailbox::bounded(DISPATCHER_MAILBOX);
    let (scanner_tx, scanner_rx) = crossbeam_channel::bounded(1);
    let (resolver_tx, resolver_rx) = crossbeam_channel::bounded(MAX_LOOKUPS);

    let log_control = runtime.log_control.clone();
    spawn_signal_thread(runtime, dispatcher_tx.clone(), log.clone())?;

    let reporter = crate::reporter::start(&config, log)?;
    let (links, workers) = start_workers(
        &config,
        &queue,
        &dispatcher_tx,
        &owner,
        reporter.as_ref().map(|(tx, _)| tx),
        log,
    )?;
    // Only the workers hold the reporter's mailbox: it ends after them.
    let reporter = reporter.map(|(_, thread)| thread);

    let resolver = crate::resolver::start(
        &config,
        resolver_rx,
        dispatcher_tx.clone(),
        log.new(o!("actor" => "resolver")),
    )?;

    let dispatcher_queue = queue.share();
    let scanner = start_scanner(&config, queue, &dispatcher_tx, scanner_rx, once, log)?;

    info!(log, "postman started"; "threads" => config.threads, "once" => once,
        "maildir" => %config.maildir.display(), "hostname" => &config.hostname);
    let dispatcher = Dispatcher::new(
        dispatcher_rx,
        links,
        resolver_tx,
        scanner_tx,
        config,
        log.new(o!("actor" => "dispatcher")),
        once,
        dispatcher_queue,
        &owner,
        log_control,
    );
    // Only the actors hold the dispatcher's mailbox from here on.
    drop(dispatcher_tx);
    let dispatcher = std::thread::Builder::new()
        .name("postman-dispatcher".into())
        .spawn(move || dispatcher.run())
        .context("cannot start the dispatcher thread")?;

    let mut threads = vec![("dispatcher", dispatcher)];
    threads.extend(workers.into_iter().map(|worker| ("worker", worker)));
    threads.extend([("scanner", scanner), ("resolver", resolver)]);
    threads.extend(reporter.map(|thread| ("tls reporter", thread)));
    let panicked: Vec<&str> = threads
        .into_iter()
        .filter_map(|(name, thread)| thread.join().is_err().then_some(name))
        .collect();
    if !panicked.is_empty() {
        bail!("postman stopped after a crash in: {}", panicked.join(", "));
    }
    info!(log, "postman stopped");
    Ok(())
}

/// The I/O workers on their threads, and the dispatcher's links to them.
fn start_workers(
    config: &Config,
    queue: &Queue,
    dispatcher_tx: &Postbox<DispatcherMsg>,
    owner: &str,
    tls_reports: Option<&crossbeam_channel::Sender<postman::tlsrpt::Session>>,
    log: &Logger,
) -> anyhow::Result<(Vec<WorkerLink>, Vec<JoinHandle<()>>)> {
    let mut links = Vec::new();
    let mut workers = Vec::new();
    for id in 0..config.threads {
        let (worker, link) = Worker::new(
            id,
            config,
            queue.share(),
            dispatcher_tx.clone(),
            log.new(o!("actor" => "worker", "worker" => id)),
            WORKER_MAILBOX,
            owner,
        )
        .context("cannot create an I/O worker's eventfd")?;
        let mut worker = worker;
        if let Some(reports) = tls_reports {
            worker.report_tls_to(reports.clone());
        }
        links.push(link);
        workers.push(
            std::thread::Builder::new()
                .name(format!("postman-worker-{id}"))
                .spawn(move || worker.run())
                .context("cannot start an I/O worker thread")?,
        );
    }
    Ok((links, workers))
}

/// The scanner on its thread. It reads one file of each domain in turn and
/// claims nothing: it keeps as many domain folders as all the others
/// together.
fn start_scanner(
    config: &Config,
    queue: Queue,
    dispatcher_tx: &Postbox<DispatcherMsg>,
    scanner_rx: Receiver<ScannerMsg>,
    once: bool,
    log: &Logger,
) -> anyhow::Result<JoinHandle<()>> {
    let scanner = Scanner::new(
        queue.keeping_domains(crate::descriptors::kept_domains(1) * 2),
        dispatcher_tx.clone(),
        scanner_rx,
        log.new(o!("actor" => "scanner")),
        once,
        config.rescan_interval,
        config.metrics_interval,
    );
    std::thread::Builder::new()
        .name("postman-scanner".into())
        .spawn(move || scanner.run())
        .context("cannot start the scanner thread")
}

/// Opens the queue root and `.OTHER_SERVERS` in it (made when missing; a
/// link there is refused), for the scanner and the start-up work: the
/// handles stay open, above `FD_SETSIZE`.
fn open_queue_root(config: &Config) -> anyhow::Result<Queue> {
    let layout = Layout::new(config.maildir.clone());
    let root = layout.root().to_path_buf();
    // Who keeps domain folders open: the dispatcher, each worker and its
    // disk threads (the scanner has a share of its own).
    let holders = 1 + config.threads * (1 + config.disk_threads.max(1));
    let queue = Queue::create(layout).with_context(|| {
        format!(
            "cannot open the queue root {} (application.maildir.path) and {} in it",
            root.display(),
            queue::REMOTE_DIR
        )
    })?;
    Ok(queue
        .keeping(crate::descriptors::above_fd_setsize)
        .keeping_domains(crate::descriptors::kept_domains(holders)))
}

/// How old a file in a `tmp/` folder must be before it is taken for a
/// crashed writer's leftover and removed (the Maildir convention).
const TMP_MAX_AGE: Duration = Duration::from_secs(36 * 3600);

/// A state file younger than this is never removed at start-up, even when
/// no message has its name yet: another postman on the same queue may be
/// about to link one in under it (a split).
const STATE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Puts back the messages that dead postman processes of this host had
/// claimed, removes the state files of no message (or of another message
/// of the same name), and removes stale temporary files.
fn recover(queue: &Queue, log: &Logger) {
    match queue::recover(queue, postman::queue::owner::is_dead) {
        Ok(recovery) => {
            if !recovery.restored.is_empty()
                || !recovery.duplicates.is_empty()
                || !recovery.delivered.is_empty()
                || !recovery.renamed.is_empty()
            {
                info!(log, "recovered claims of a stopped postman";
                    "restored" => recovery.restored.len(), "duplicates" => recovery.duplicates.len(),
                    "renamed" => recovery.renamed.len(),
                    "delivered_removed" => recovery.delivered.len());
            }
            for state in &recovery.adopted {
                warn!(log, "a stopped postman's unrecorded state found in its reservation and put in place";
                    "path" => %state.display());
            }
            for (claim, to) in recovery.renamed {
                warn!(log, "a stopped postman's claim went back under a new name: another message has its name";
                    "claim" => %claim.display(), "path" => %to.display());
            }
            for (path, e) in recovery.errors {
                error!(log, "cannot recover a claimed message"; "path" => %path.display(), "error" => %e);
            }
        }
        Err(e) => error!(log, "cannot look for claims to recover"; "error" => %e),
    }
    match queue::recover_states(queue, SystemTime::now(), STATE_GRACE) {
        Ok(sweep) => {
            for path in sweep.stale {
                warn!(log, "removed a stale state file: it names another queue file than the message of its name";
                    "path" => %path.display());
            }
            if !sweep.orphans.is_empty() {
                info!(log, "removed state files of messages no longer queued"; "count" => sweep.orphans.len());
            }
            for (path, e) in sweep.errors {
                warn!(log, "cannot look at a state file"; "path" => %path.display(), "error" => %e);
            }
        }
        Err(e) => warn!(log, "cannot look for stale state files"; "error" => %e),
    }
    match queue::sweep_tmp(queue, SystemTime::now(), TMP_MAX_AGE) {
        Ok(sweep) => {
            if !sweep.removed.is_empty() {
                info!(log, "removed stale temporary files"; "count" => sweep.removed.len());
            }
            for (path, e) in sweep.errors {
                warn!(log, "cannot sweep a temporary folder"; "path" => %path.display(), "error" => %e);
            }
        }
        Err(e) => warn!(log, "cannot sweep temporary folders"; "error" => %e),
    }
}

fn log_descriptors(prepared: &crate::descriptors::Prepared, log: &Logger) {
    if let Some(e) = &prepared.limit_error {
        warn!(log, "cannot raise the descriptor limit"; "error" => e);
    }
    if let Some(e) = &prepared.table_error {
        warn!(log, "cannot grow the descriptor table ahead"; "error" => e);
    }
}

/// A thread that waits for the signals with `sigwait` and turns each into
/// a message: SIGINT/SIGTERM stop (a second one repeats the request
/// harmlessly), SIGHUP reloads the settings, SIGUSR1 reopens the log file. It
/// lives as long as the process.
fn spawn_signal_thread(
    mut runtime: Runtime,
    dispatcher: crate::mailbox::Postbox<DispatcherMsg>,
    log: Logger,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("postman-signals".into())
        .spawn(move || loop {
            let signal = match runtime.signals.wait() {
                Ok(signal) => signal,
                Err(e) => {
                    warn!(log, "sigwait failed"; "error" => %e);
                    return;
                }
            };
            let msg = match signal {
                Signal::SIGHUP => match (runtime.reload)() {
                    Ok(loaded) => {
                        report_changes(&log, &runtime.settings, &loaded.settings);
                        runtime.settings = loaded.settings;
                        DispatcherMsg::Reload(Box::new(loaded.config))
                    }
                    Err(e) => {
                        error!(log, "SIGHUP: the new settings are not valid, keeping the old ones";
                            "error" => format!("{e:#}"));
                        continue;
                    }
                },
                Signal::SIGUSR1 => {
                    info!(log, "SIGUSR1: reopening the log file");
                    runtime.log_control.reopen.store(true, Ordering::Release);
                    continue;
                }
                _ => {
                    info!(log, "signal received, stopping"; "signal" => signal.as_str());
                    DispatcherMsg::Shutdown
                }
            };
            if dispatcher.send(msg).is_err() {
                return;
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

/// The settings a reload cannot change in a running process.
const RESTART_ONLY: &[&str] = &[
    "application.threads",
    "application.maildir.path",
    "dns.nameservers",
    "dns.timeout",
    "dns.attempts",
    "log.format",
    "log.file",
    "queue.rescan_interval",
    "queue.disk_threads",
];

/// Logs each setting a reload changes, and which of them need a restart.
fn report_changes(log: &Logger, old: &Settings, new: &Settings) {
    let (old, new) = (flatten(old), flatten(new));
    let mut changed = 0;
    for (key, value) in &new {
        let before = old.get(key).map(String::as_str).unwrap_or("(unset)");
        if before != value {
            changed += 1;
            if RESTART_ONLY.contains(&key.as_str()) {
                warn!(log, "SIGHUP: setting changed, but it takes effect only after a restart";
                    "key" => key, "old" => before, "new" => value);
            } else {
                info!(log, "SIGHUP: setting changed"; "key" => key, "old" => before, "new" => value);
            }
        }
    }
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        changed += 1;
        info!(log, "SIGHUP: setting back to its default"; "key" => key);
    }
    info!(log, "SIGHUP: settings reloaded"; "changed" => changed);
}

/// `section.key = value` pairs of the settings, for comparing them.
fn flatten(settings: &Settings) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (key, value) in table {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(value) = toml::Value::try_from(settings) {
        walk("", &value, &mut out);
    }
    out
}
