//! The dispatcher's handle on one worker: the bounded mailbox plus the
//! eventfd that wakes the worker out of `pselect` after each batch of sends.

use std::collections::VecDeque;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use nix::sys::eventfd::EventFd;

use crate::messages::WorkerMsg;

/// The worker's mailbox is gone: it stopped.
#[derive(Debug, thiserror::Error)]
#[error("worker mailbox is closed")]
pub struct Disconnected;

pub struct WorkerLink {
    tx: Sender<WorkerMsg>,
    wake: Arc<EventFd>,
    /// Messages that found the mailbox full. The dispatcher must never block
    /// on a worker (the worker may be blocked sending to the dispatcher), so
    /// it keeps them here, in order, and retries shortly.
    backlog: VecDeque<WorkerMsg>,
    /// Connections the dispatcher has asked this worker to open and that are
    /// not yet closed: used to pick the least loaded worker.
    pub connections: usize,
}

impl WorkerLink {
    pub fn new(tx: Sender<WorkerMsg>, wake: Arc<EventFd>) -> WorkerLink {
        WorkerLink {
            tx,
            wake,
            backlog: VecDeque::new(),
            connections: 0,
        }
    }

    /// Queues `msg` for the worker; it goes at the next
    /// [`WorkerLink::flush_backlog`], which the dispatcher calls before it
    /// waits, so that everything it has for the worker after handling a
    /// batch of its mailbox costs one eventfd write, and one wake-up.
    pub fn send(&mut self, msg: WorkerMsg) {
        self.backlog.push_back(msg);
    }

    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Sends what the mailbox has room for, then wakes the worker once.
    pub fn flush_backlog(&mut self) -> Result<(), Disconnected> {
        let mut sent = false;
        let mut result = Ok(());
        while let Some(msg) = self.backlog.pop_front() {
            match self.tx.try_send(msg) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(msg)) => {
                    self.backlog.push_front(msg);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.backlog.clear();
                    result = Err(Disconnected);
                    break;
                }
            }
        }
        if sent {
            // A full counter (EAGAIN) already means "wake up": ignore it.
            let _ = self.wake.write(1);
        }
        result
    }
}
