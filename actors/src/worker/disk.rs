//! The worker's disk threads (`queue.disk_threads` of them): they settle
//! finished transactions (remove a delivered file, rewrite a deferred one,
//! write a bounce) so that the `pselect` loop never waits on the
//! filesystem for them.
//!
//! Removing a written-out queue file costs 0.15–0.7 ms of waiting on ext4
//! (the journal frees its blocks) against ~30 µs of CPU; done inline, it
//! stalled every other connection of the worker that long after each
//! message. Several removals in flight at once also finish sooner in all
//! than one after another. The disk threads are part of their worker, the
//! way the resolver thread is part of the dispatcher: each owns its own
//! [`Settler`], receives work through a small bounded mailbox, and reports
//! to the dispatcher exactly as the worker would have. When every mailbox
//! is full the worker settles inline, which is the backpressure.
//!
//! A fully delivered file is marked delivered in the worker before it is
//! handed over ([`postman::queue::Claimed::mark_delivered`]), so a crash
//! while it waits here never sends it again.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use postman::config::Config;
use postman::queue::{Claimed, Delivered};
use slog::{error, Logger};

use crate::messages::{DispatcherMsg, Disposition, QueuedMessage};
use crate::settler::{RecipientFate, Settler};

/// Settlements waiting for the disk thread, per worker.
pub const MAILBOX: usize = 32;

/// The queue file of a finished transaction.
pub enum File {
    /// Still claimed: some recipient was not accepted, or marking failed.
    Claimed(Claimed),
    /// Every recipient accepted, and the file marked so: only removal is left.
    Delivered(Delivered),
}

/// One finished transaction, for the disk thread to settle.
pub struct Settlement {
    pub msg: QueuedMessage,
    pub file: File,
    pub fates: Vec<RecipientFate>,
    pub relay: String,
    /// Logs the delivery records: it carries the transaction's `tls`.
    pub log: Logger,
}

enum Work {
    Settle(Box<Settlement>),
    Reload(Box<Config>),
}

impl Settlement {
    /// Updates or removes the file, logs the delivery records, and says
    /// what the dispatcher should do with the message.
    pub fn settle(self, settler: &mut Settler) -> Disposition {
        match self.file {
            File::Claimed(claimed) => {
                settler.settle(self.msg, claimed, self.fates, &self.relay, &self.log)
            }
            File::Delivered(delivered) => {
                settler.settle_delivered(&self.msg, delivered, &self.fates, &self.relay, &self.log)
            }
        }
    }
}

/// The worker's handle on its disk threads.
pub struct Disk {
    threads: Vec<DiskThread>,
    /// The thread tried first for the next settlement.
    next: usize,
}

struct DiskThread {
    tx: Sender<Work>,
    handle: JoinHandle<Totals>,
}

/// What the disk threads did, reported when they stop.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub settled: u64,
    pub busy: Duration,
}

impl Disk {
    /// Starts worker `id`'s disk threads.
    pub fn start(
        id: usize,
        config: &Config,
        owner: &str,
        dispatcher: Sender<DispatcherMsg>,
        log: Logger,
    ) -> std::io::Result<Disk> {
        let mut threads = Vec::new();
        for n in 0..config.disk_threads.max(1) {
            threads.push(spawn(
                id,
                n,
                config,
                owner,
                dispatcher.clone(),
                log.clone(),
            )?);
        }
        Ok(Disk { threads, next: 0 })
    }

    /// Hands a settlement to a disk thread, or gives it back when their
    /// mailboxes are full (or they are gone): then the caller settles it.
    pub fn try_settle(&mut self, settlement: Box<Settlement>) -> Result<(), Box<Settlement>> {
        let mut work = Work::Settle(settlement);
        for k in 0..self.threads.len() {
            let n = (self.next + k) % self.threads.len();
            match self.threads[n].tx.try_send(work) {
                Ok(()) => {
                    self.next = (n + 1) % self.threads.len();
                    return Ok(());
                }
                Err(e) => work = e.into_inner(),
            }
        }
        match work {
            Work::Settle(s) => Err(s),
            Work::Reload(_) => Ok(()),
        }
    }

    /// New settings (SIGHUP), applied after the settlements already queued.
    pub fn reload(&self, config: &Config) {
        for thread in &self.threads {
            // Blocks at most until the thread takes one settlement.
            let _ = thread.tx.send(Work::Reload(Box::new(config.clone())));
        }
    }

    /// Settles everything queued, then stops the threads. Called before the
    /// worker reports that it stopped, so every `Done` reaches the
    /// dispatcher before the worker's `WorkerStopped`.
    pub fn stop(&mut self, log: &Logger) -> Totals {
        let mut totals = Totals::default();
        for thread in self.threads.drain(..) {
            drop(thread.tx);
            match thread.handle.join() {
                Ok(t) => {
                    totals.settled += t.settled;
                    totals.busy += t.busy;
                }
                Err(_) => error!(log, "a disk thread panicked"),
            }
        }
        totals
    }
}

fn spawn(
    id: usize,
    n: usize,
    config: &Config,
    owner: &str,
    dispatcher: Sender<DispatcherMsg>,
    log: Logger,
) -> std::io::Result<DiskThread> {
    let (tx, rx) = crossbeam_channel::bounded::<Work>(MAILBOX);
    let owner = owner.to_owned();
    let tag = format!("W{id}D{n}");
    let mut settler = Settler::new(config, &owner, &tag);
    let handle = std::thread::Builder::new()
        .name(format!("postman-disk-{id}.{n}"))
        .spawn(move || {
            let mut totals = Totals::default();
            for work in rx.iter() {
                match work {
                    Work::Settle(s) => {
                        let started = Instant::now();
                        let domain = s.msg.domain.clone();
                        let id = s.msg.id.clone();
                        let disposition = s.settle(&mut settler);
                        totals.busy += started.elapsed();
                        totals.settled += 1;
                        // The dispatcher never blocks on a worker or on
                        // us, so a blocking send cannot deadlock.
                        if dispatcher
                            .send(DispatcherMsg::Done {
                                domain,
                                id,
                                disposition,
                            })
                            .is_err()
                        {
                            error!(log, "the dispatcher is gone; settled files stay settled");
                        }
                    }
                    Work::Reload(config) => {
                        settler = Settler::new(&config, &owner, &tag);
                    }
                }
            }
            totals
        })?;
    Ok(DiskThread { tx, handle })
}

#[cfg(test)]
mod tests {
    use super::*;
    use postman::config::Settings;

    #[test]
    fn a_worker_starts_as_many_disk_threads_as_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::defaults("mx.example.org");
        settings.application.maildir.path = dir.path().to_owned();
        settings.queue.disk_threads = 3;
        let config = settings.validate().expect("valid settings");
        let (dispatcher, _inbox) = crossbeam_channel::unbounded();
        let log = Logger::root(slog::Discard, slog::o!());
        let mut disk = Disk::start(0, &config, "owner", dispatcher, log.clone()).expect("start");
        assert_eq!(disk.threads.len(), 3);
        let totals = disk.stop(&log);
        assert_eq!(totals.settled, 0);
        assert!(disk.threads.is_empty(), "stopped and joined");
    }
}
