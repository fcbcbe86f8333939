//! The I/O worker actor: owns a table of non-blocking SMTP connections and
//! multiplexes all of them in one `pselect(2)` loop, in the manner of mio's
//! examples. Each connection is driven by the sans-IO [`Session`](postman::smtp::Session) of the core
//! library; the worker adds sockets, time, the queue file and ownership.
//!
//! Every descriptor that goes into an `fd_set` is below `FD_SETSIZE`: a socket
//! that would not fit is closed at once and the attempt fails as a local
//! error, and queue files are moved above the limit (see `body`).

mod body;
mod conn;
mod disk;
mod finish;
mod hand_back;
mod job;
mod link;
mod prepare;
mod shared;
pub(crate) mod tls;
mod verify;

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::settler::Settler;
use crossbeam_channel::{Receiver, TryRecvError};
use link::Wake;
use nix::sys::select::{pselect, FdSet};
use nix::sys::time::TimeSpec;
use postman::config::Config;
use postman::queue::Queue;
use slog::{debug, error, info, Logger};

use crate::descriptors::FD_SETSIZE;
use crate::mailbox::Postbox;
use crate::messages::{ConnId, DispatcherMsg, WorkerMsg};
use conn::{candidates, Conn};
use finish::settle_here;
use hand_back::{hand_back, Reason};
use job::{Prepared, Ready};
pub use link::WorkerLink;
use shared::{ConnSettings, Shared, Stats};
pub use tls::certified;

/// How long in-flight transactions may run on after SIGTERM before their
/// connections are dropped (the messages stay queued).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The longest `pselect` sleeps with nothing due: a safety net, not a poll.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Socket reads go through one buffer per worker.
const READ_BUFFER: usize = 64 * 1024;

struct Slot {
    generation: u32,
    conn: Option<Conn>,
}

pub struct Worker {
    inbox: Receiver<WorkerMsg>,
    /// The disk threads' answers: connections' next messages, prepared.
    prepared: Receiver<Prepared>,
    wake: Arc<Wake>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
    shared: Shared,
    metrics_interval: Duration,
    /// Connection indices made ready by the last `pselect`, reused.
    ready: Vec<(u32, bool, bool)>,
}

impl Worker {
    /// Creates worker `id` and the link the dispatcher uses to reach it.
    /// It and its disk threads work on `queue` (each thread with its own
    /// handle set).
    pub fn new(
        id: usize,
        config: &Config,
        queue: Queue,
        dispatcher: Postbox<DispatcherMsg>,
        log: Logger,
        mailbox_capacity: usize,
        owner: &str,
    ) -> std::io::Result<(Worker, WorkerLink)> {
        let wake = Arc::new(Wake::new()?);
        let (tx, inbox) = crossbeam_channel::bounded(mailbox_capacity);
        // Each connection waits for at most one answer; answers for
        // connections already closed are few and drained every turn.
        let (answers_to, prepared) = crossbeam_channel::bounded(2 * FD_SETSIZE as usize);
        let body_budget = body::Budget::default();
        let answers = disk::Answers {
            to: answers_to,
            wake: Arc::clone(&wake),
            budget: body_budget.clone(),
        };
        let disk = disk::Disk::start(
            id,
            config,
            &queue,
            owner,
            dispatcher.clone(),
            &answers,
            log.clone(),
        )?;
        let worker = Worker {
            inbox,
            prepared,
            wake: Arc::clone(&wake),
            slots: Vec::new(),
            free: Vec::new(),
            live: 0,
            shared: Shared {
                worker: id,
                settings: ConnSettings::new(config, &log),
                settler: Settler::new(queue, config, owner, &format!("W{id}")).keeping_unrecorded(),
                disk,
                dispatcher,
                told: Cell::new(false),
                log,
                stats: Stats::default(),
                shutdown_deadline: None,
                read_buf: vec![0; READ_BUFFER],
                body_buf: Vec::with_capacity(body::CHUNK),
                body_budget,
                body_pool: body::Pool::default(),
                tls_reports: None,
            },
            metrics_interval: config.metrics_interval,
            ready: Vec::new(),
        };
        Ok((worker, WorkerLink::new(tx, wake)))
    }

    /// Sends each MX session's TLS outcome to `reports` (the TLS-RPT
    /// reporter's mailbox).
    pub fn report_tls_to(&mut self, reports: crossbeam_channel::Sender<postman::tlsrpt::Session>) {
        self.shared.tls_reports = Some(reports);
    }

    pub fn run(mut self) {
        let mut next_metrics = Instant::now() + self.metrics_interval;
        let mut mailbox_open = true;
        loop {
            let now = Instant::now();
            self.drain_prepared(now);
            if mailbox_open {
                mailbox_open = self.drain_mailbox(now);
                if !mailbox_open && self.shared.shutdown_deadline.is_none() {
                    // The dispatcher is gone without a word: stop the same way.
                    self.begin_shutdown(now);
                }
            }
            if self.shared.shutdown_deadline.is_some() && self.live == 0 {
                break;
            }
            if let Some(deadline) = self.shared.shutdown_deadline {
                if now >= deadline {
                    self.abort_all(now);
                    continue;
                }
            }
            if !self.metrics_interval.is_zero() && now >= next_metrics {
                self.metrics();
                next_metrics = now + self.metrics_interval;
            }
            let mut wait = self.next_deadline().map_or(MAX_WAIT, |deadline| {
                deadline.saturating_duration_since(now).min(MAX_WAIT)
            });
            if !self.metrics_interval.is_zero() {
                wait = wait.min(next_metrics.saturating_duration_since(now));
            }
            // Held settlements go with the next preparation, or at the
            // end of the next turn, which comes soon.
            for settlement in self.shared.disk.end_turn(false) {
                settle_here(&mut self.shared, settlement);
            }
            if self.shared.disk.holding() {
                wait = wait.min(disk::HOLD_WAIT);
            }
            self.shared.wake_dispatcher();
            // From here a send writes the eventfd; one that came since the
            // drains above is waiting already, and the wait is only a poll.
            self.wake.sleeping();
            if !self.prepared.is_empty() || !self.inbox.is_empty() {
                wait = Duration::ZERO;
            }
            let woken = self.select(wait);
            self.wake.awake(woken);
            let now = Instant::now();
            self.service_ready(now);
            self.service_timeouts(now);
        }
        self.stop();
    }

    /// The end of [`Worker::run`]: every settlement reaches the dispatcher
    /// before `WorkerStopped`, and every message prepared for a connection
    /// that is gone goes back.
    fn stop(mut self) {
        for settlement in self.shared.disk.end_turn(true) {
            settle_here(&mut self.shared, settlement);
        }
        self.shared.wake_dispatcher();
        let disk = self.shared.disk.stop(&self.shared.log);
        while let Ok(answer) = self.prepared.try_recv() {
            if let Some(ready) = answer.ready {
                let Ready { msg, claimed, .. } = *ready;
                hand_back(&self.shared.ctx(), msg, Some(claimed), Reason::UNTRIED);
            }
        }
        // A last record, so a short run still reports its numbers.
        self.metrics();
        info!(self.shared.log, "worker stopped"; "settled_by_disk_thread" => disk.settled,
            "prepared_by_disk_thread" => disk.prepared,
            "disk_thread_busy_ms" => disk.busy.as_millis() as u64);
        self.shared.tell(DispatcherMsg::WorkerStopped {
            worker: self.shared.worker,
        });
        self.shared.wake_dispatcher();
    }

    /// Handles every waiting mailbox message. Returns false once the mailbox
    /// is closed.
    fn drain_mailbox(&mut self, now: Instant) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(WorkerMsg::Open {
                    site,
                    route,
                    job,
                    max_messages,
                    shape,
                    site_name,
                }) => {
                    let domain = job.domain.clone();
                    let settings = &self.shared.settings;
                    let (candidates, all) = candidates(&route, &domain, settings);
                    if candidates.len() < all {
                        debug!(self.shared.log, "more MX addresses than one attempt tries";
                            "domain" => &domain, "addresses" => all,
                            "tried" => settings.max_mx_addresses);
                    }
                    let conn = Conn::new(
                        site,
                        domain,
                        candidates,
                        *job,
                        max_messages,
                        shape,
                        site_name,
                    );
                    let index = self.insert(conn);
                    self.with_conn(index, now, |conn, shared, now| conn.start(shared, now));
                }
                Ok(WorkerMsg::Next { conn, job }) => {
                    let live = self.slots.get(conn.index as usize).is_some_and(|slot| {
                        slot.generation == conn.generation && slot.conn.is_some()
                    });
                    if live {
                        self.with_conn(conn.index, now, |c, shared, now| {
                            c.next(job.map(|job| *job), shared, now)
                        });
                    } else if let Some(job) = job {
                        // The connection closed while the dispatcher chose
                        // this message: hand it straight back, untried.
                        self.shared.tell(DispatcherMsg::NotTaken(job));
                    }
                }
                Ok(WorkerMsg::Shutdown) => self.begin_shutdown(now),
                Ok(WorkerMsg::Reload(config)) => self.reload(&config),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// Hands each prepared message to its connection; one whose connection
    /// closed meanwhile goes back, untried.
    fn drain_prepared(&mut self, now: Instant) {
        while let Ok(answer) = self.prepared.try_recv() {
            self.take_answer(answer, now);
        }
    }

    fn take_answer(&mut self, answer: Prepared, now: Instant) {
        if let Some(spare) = answer.spare {
            self.shared.body_pool.give(spare);
        }
        let conn = answer.conn;
        let live = self
            .slots
            .get(conn.index as usize)
            .is_some_and(|slot| slot.generation == conn.generation && slot.conn.is_some());
        if live {
            self.with_conn(conn.index, now, |c, shared, now| {
                c.prepared(answer.ready.map(|ready| *ready), shared, now);
            });
        } else if let Some(ready) = answer.ready {
            let Ready { msg, claimed, .. } = *ready;
            hand_back(&self.shared.ctx(), msg, Some(claimed), Reason::UNTRIED);
        }
    }

    /// New settings (SIGHUP): they apply to connections and transactions
    /// that start from now on; what runs keeps its settings.
    fn reload(&mut self, config: &Config) {
        let shared = &mut self.shared;
        shared.settings = ConnSettings::new(config, &shared.log);
        shared.settler.reload(config);
        shared.disk.reload(config);
        self.metrics_interval = config.metrics_interval;
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.shared.shutdown_deadline.is_some() {
            return;
        }
        self.shared.shutdown_deadline = Some(now + SHUTDOWN_GRACE);
        for index in 0..self.slots.len() as u32 {
            self.with_conn(index, now, |conn, shared, now| conn.shutdown(shared, now));
        }
    }

    fn abort_all(&mut self, now: Instant) {
        for index in 0..self.slots.len() as u32 {
            self.with_conn(index, now, |conn, shared, _| {
                conn.abort(shared, "postman stopped during delivery")
            });
        }
    }

    fn insert(&mut self, conn: Conn) -> u32 {
        self.live += 1;
        self.shared.stats.peak_connections = self.shared.stats.peak_connections.max(self.live);
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.generation = slot.generation.wrapping_add(1);
            slot.conn = Some(conn);
            index
        } else {
            self.slots.push(Slot {
                generation: 0,
                conn: Some(conn),
            });
            (self.slots.len() - 1) as u32
        }
    }

    /// Runs `f` on the connection in slot `index`, where it stays, then
    /// drives it; a connection that is finished leaves its slot, which is
    /// freed. The connection and the worker's shared state are separate
    /// fields, so both can be borrowed at once.
    fn with_conn(
        &mut self,
        index: u32,
        now: Instant,
        f: impl FnOnce(&mut Conn, &mut Shared, Instant),
    ) {
        let Some(slot) = self.slots.get_mut(index as usize) else {
            return;
        };
        // In place: a connection (its job, its message, its TLS state) is
        // large, and moving it out of its slot and back for every event was
        // 1 % of a worker's time with 250 connections.
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        conn.id = ConnId {
            index,
            generation: slot.generation,
        };
        f(conn, &mut self.shared, now);
        conn.drive(&mut self.shared, now);
        if conn.is_finished() {
            if let Some(mut conn) = slot.conn.take() {
                conn.finish(&mut self.shared);
            }
            self.live -= 1;
            self.free.push(index);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let conns = self
            .slots
            .iter()
            .filter_map(|slot| slot.conn.as_ref())
            .filter_map(Conn::deadline);
        let shutdown = self.shared.shutdown_deadline;
        conns.chain(shutdown).min()
    }

    /// One `pselect`: fills `self.ready` with the connections that can read
    /// or write, and says whether the wake-up descriptor fired.
    fn select(&mut self, wait: Duration) -> bool {
        let started = Instant::now();
        self.ready.clear();
        let mut woken = false;
        {
            let mut reads = FdSet::new();
            let mut writes = FdSet::new();
            let wake_fd = self.wake.as_fd();
            reads.insert(wake_fd);
            let mut highest = wake_fd.as_raw_fd();
            for slot in &self.slots {
                let Some(conn) = &slot.conn else { continue };
                let Some(fd) = conn.fd() else { continue };
                // Conn::start refuses descriptors at or above FD_SETSIZE, so
                // insert cannot panic; the check stays as a second line.
                if fd.as_raw_fd() >= FD_SETSIZE {
                    continue;
                }
                if conn.wants_read() {
                    reads.insert(fd);
                }
                if conn.wants_write() {
                    writes.insert(fd);
                }
                highest = highest.max(fd.as_raw_fd());
            }
            let timeout = TimeSpec::from_duration(wait);
            match pselect(highest + 1, &mut reads, &mut writes, None, &timeout, None) {
                Ok(_) => {
                    woken = reads.contains(wake_fd);
                    for (index, slot) in self.slots.iter().enumerate() {
                        let Some(conn) = &slot.conn else { continue };
                        let Some(fd) = conn.fd() else { continue };
                        if fd.as_raw_fd() >= FD_SETSIZE {
                            continue;
                        }
                        let readable = reads.contains(fd);
                        let writable = writes.contains(fd);
                        if readable || writable {
                            self.ready.push((index as u32, readable, writable));
                        }
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    error!(self.shared.log, "pselect failed"; "error" => %e);
                    // Do not spin on a persistent error.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        self.shared.stats.blocked += started.elapsed();
        woken
    }

    fn service_ready(&mut self, now: Instant) {
        let started = Instant::now();
        let ready = std::mem::take(&mut self.ready);
        for &(index, readable, writable) in &ready {
            self.with_conn(index, now, |conn, shared, now| {
                conn.on_ready(readable, writable, shared, now)
            });
        }
        self.ready = ready;
        self.shared.stats.working += started.elapsed();
    }

    fn service_timeouts(&mut self, now: Instant) {
        for index in 0..self.slots.len() as u32 {
            let due = self.slots[index as usize]
                .conn
                .as_ref()
                .and_then(Conn::deadline)
                .is_some_and(|deadline| deadline <= now);
            if due {
                self.with_conn(index, now, |conn, shared, now| conn.on_timeout(shared, now));
            }
        }
    }

    fn metrics(&self) {
        let s = &self.shared.stats;
        info!(self.shared.log, "metrics";
            "connections" => self.live,
            "peak_connections" => s.peak_connections,
            "connections_opened" => s.connections_opened,
            "connect_failures" => s.connect_failures,
            "transactions" => s.transactions,
            "untried" => s.untried,
            "tls_reports_dropped" => s.tls_reports_dropped,
            "sent" => s.sent,
            "deferred" => s.deferred,
            "bounced" => s.bounced,
            "bytes_written" => s.bytes_written,
            "bytes_read" => s.bytes_read,
            "blocked_ms" => s.blocked.as_millis() as u64,
            "working_ms" => s.working.as_millis() as u64,
            "mailbox" => self.inbox.len(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{Disposition, FileIdentity, QueuedMessage};
    use postman::config::Settings;
    use postman::queue::{self, RetryState};

    const FILE: &[u8] = b"X-Postman-From: <s@e.org>\r\nX-Postman-Date: 1000\r\nX-Postman-To: <a@d.test>\r\n\r\nSubject: x\r\n\r\nbody\r\n";

    /// A message prepared on a disk thread for a connection that has closed
    /// since (its slot empty or reused) goes back: the claim is released and
    /// the dispatcher gets the message untried.
    #[test]
    fn a_prepared_message_for_a_closed_connection_goes_back_untried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::defaults("mx.example.org");
        settings.application.maildir.path = dir.path().to_owned();
        let config = settings.validate().expect("valid settings");
        let layout = queue::Layout::new(dir.path());
        let path = layout.message_path("d.test", "m1");
        std::fs::create_dir_all(layout.tmp_dir("d.test")).expect("mkdir");
        std::fs::write(&path, FILE).expect("write");
        let metadata = std::fs::metadata(&path).expect("stat");
        let envelope =
            queue::parse_envelope(&std::fs::read(&path).expect("read")).expect("envelope");
        let msg = QueuedMessage {
            id: "m1".into(),
            domain: "d.test".into(),
            path: path.clone(),
            retry: RetryState::from_envelope(&envelope).expect("retry state"),
            envelope,
            arrival: std::time::UNIX_EPOCH,
            size: metadata.len(),
            identity: Some(FileIdentity::of(&metadata)),
            tie: None,
            route_key: None,
        };

        let (dispatcher, inbox) = crate::mailbox::bounded(64);
        let log = Logger::root(slog::Discard, slog::o!());
        let (mut worker, _link) = Worker::new(
            0,
            &config,
            queue::Queue::create(layout.clone()).expect("queue"),
            dispatcher,
            log,
            16,
            "owner",
        )
        .expect("worker");
        let ready = {
            let ctx = worker.shared.ctx();
            let mut pool = body::Pool::default();
            let mut buf = Vec::new();
            let mut memory = body::Memory {
                budget: &worker.shared.body_budget,
                pool: &mut pool,
                buf: &mut buf,
            };
            prepare::prepare(&ctx, &mut memory, msg, "mx.d.test[192.0.2.1]:25").expect("prepared")
        };
        assert!(!path.exists(), "claimed while prepared");

        let gone = ConnId {
            index: 3,
            generation: 7,
        };
        worker.take_answer(
            Prepared {
                conn: gone,
                ready: Some(Box::new(ready)),
                spare: None,
            },
            Instant::now(),
        );
        assert!(path.exists(), "the claim is released");
        match inbox.try_recv() {
            Ok(DispatcherMsg::Done {
                id,
                disposition: Disposition::Unused(_),
                ..
            }) => assert_eq!(id, "m1"),
            other => panic!("expected Done with Unused, got {other:?}"),
        }
        assert!(inbox.try_recv().is_err(), "nothing else");
        worker.shared.disk.stop(&worker.shared.log);
    }
}
