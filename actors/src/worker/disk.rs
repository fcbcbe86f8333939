//! The worker's disk thread: settles finished transactions (removes a
//! delivered file, rewrites a deferred one, writes a bounce) so that the
//! `pselect` loop never waits on the filesystem for them.
//!
//! Removing a written-out queue file costs about 0.15 ms of waiting on ext4
//! (the journal frees its blocks), against a few microseconds of CPU; done
//! inline, it stalls every other connection of the worker for that long
//! after each message. The disk thread is part of its worker, the way the
//! resolver thread is part of the dispatcher: it owns its own [`Settler`],
//! receives work through a bounded mailbox, and reports to the dispatcher
//! exactly as the worker would have.
//!
//! The mailbox is small on purpose. A message the server accepted stays
//! claimed until its file is settled, so what waits here is what a crash
//! would send twice; when the mailbox is full the worker settles inline,
//! which is also the backpressure.

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

/// The worker's handle on its disk thread.
pub struct Disk {
    tx: Option<Sender<Work>>,
    handle: Option<JoinHandle<Totals>>,
}

/// What the disk thread did, reported when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub settled: u64,
    pub busy: Duration,
}

impl Disk {
    /// Starts worker `id`'s disk thread.
    pub fn start(
        id: usize,
        config: &Config,
        owner: &str,
        dispatcher: Sender<DispatcherMsg>,
        log: Logger,
    ) -> std::io::Result<Disk> {
        let (tx, rx) = crossbeam_channel::bounded::<Work>(MAILBOX);
        let owner = owner.to_owned();
        let tag = format!("W{id}D");
        let mut settler = Settler::new(config, &owner, &tag);
        let handle = std::thread::Builder::new()
            .name(format!("postman-disk-{id}"))
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
        Ok(Disk {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Hands a settlement to the disk thread, or gives it back when its
    /// mailbox is full (or the thread is gone): then the caller settles it.
    pub fn try_settle(&self, settlement: Box<Settlement>) -> Result<(), Box<Settlement>> {
        let Some(tx) = &self.tx else {
            return Err(settlement);
        };
        match tx.try_send(Work::Settle(settlement)) {
            Ok(()) => Ok(()),
            // What comes back is what was sent: the settlement.
            Err(e) => match e.into_inner() {
                Work::Settle(s) => Err(s),
                Work::Reload(_) => Ok(()),
            },
        }
    }

    /// New settings (SIGHUP), applied after the settlements already queued.
    pub fn reload(&self, config: &Config) {
        if let Some(tx) = &self.tx {
            // Blocks at most until the thread takes one settlement.
            let _ = tx.send(Work::Reload(Box::new(config.clone())));
        }
    }

    /// Settles everything queued, then stops the thread. Called before the
    /// worker reports that it stopped, so every `Done` reaches the
    /// dispatcher before the worker's `WorkerStopped`.
    pub fn stop(&mut self, log: &Logger) -> Totals {
        self.tx = None;
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(totals)) => totals,
            Some(Err(_)) => {
                error!(log, "the disk thread panicked");
                Totals::default()
            }
            None => Totals::default(),
        }
    }
}
