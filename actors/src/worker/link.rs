//! The dispatcher's handle on one worker: the bounded mailbox plus the
//! eventfd that wakes the worker out of `pselect` after each batch of sends
//! ([`Wake`], which the worker's disk threads use too).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::messages::WorkerMsg;

/// What wakes a worker out of `pselect`: an eventfd among its descriptors,
/// written only while the worker waits there or is about to. A worker that
/// is awake drains its mailbox and its disk threads' answers before it
/// waits again, so a write then would only make its next `pselect` return
/// at once for nothing: a system call for the sender and a turn for the
/// worker.
///
/// No wake-up is lost: the sender puts its message in the channel, then
/// looks at `asleep`; the worker sets `asleep`, then looks at its channels,
/// and waits without a timeout only if both are empty. With a SeqCst fence
/// between the store and the load on each side, at least one of them sees
/// the other's store (the store-buffering case the fences forbid).
pub struct Wake {
    fd: EventFd,
    asleep: AtomicBool,
}

impl Wake {
    pub fn new() -> io::Result<Wake> {
        Ok(Wake {
            fd: EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?,
            asleep: AtomicBool::new(false),
        })
    }

    /// Called after sending the worker something: wakes it if it waits in
    /// `pselect` or is about to.
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) {
            // A full counter (EAGAIN) already means "wake up": ignore it.
            let _ = self.fd.write(1);
        }
    }

    /// The worker is about to wait: from here senders write. It must look at
    /// its channels after this, and not wait if they hold anything.
    pub fn sleeping(&self) {
        self.asleep.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The worker is back from `pselect`: it clears the counter if it was
    /// `woken`, before draining its channels, so that a send that lands
    /// after the drain finds it asleep again or is drained next turn.
    pub fn awake(&self, woken: bool) {
        self.asleep.store(false, Ordering::Relaxed);
        if woken {
            let _ = self.fd.read();
        }
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The worker's mailbox is gone: it stopped.
#[derive(Debug, thiserror::Error)]
#[error("worker mailbox is closed")]
pub struct Disconnected;

pub struct WorkerLink {
    tx: Sender<WorkerMsg>,
    wake: Arc<Wake>,
    /// Messages that found the mailbox full. The dispatcher must never block
    /// on a worker (the worker may be blocked sending to the dispatcher), so
    /// it keeps them here, in order, and retries shortly.
    backlog: VecDeque<WorkerMsg>,
    /// Connections the dispatcher has asked this worker to open and that are
    /// not yet closed: used to pick the least loaded worker.
    pub connections: usize,
}

impl WorkerLink {
    pub fn new(tx: Sender<WorkerMsg>, wake: Arc<Wake>) -> WorkerLink {
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
            self.wake.wake();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    /// Whether the eventfd is readable within `ms`.
    fn fired(wake: &Wake, ms: u16) -> bool {
        let mut fds = [PollFd::new(wake.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).expect("poll") > 0
    }

    #[test]
    fn only_a_worker_about_to_wait_is_written_to() {
        let wake = Wake::new().expect("eventfd");
        wake.wake();
        assert!(!fired(&wake, 0), "awake: nothing written");
        wake.sleeping();
        wake.wake();
        assert!(fired(&wake, 0), "waiting: written");
        wake.awake(true);
        assert!(!fired(&wake, 0), "cleared");
    }

    /// A worker that drains, says it is about to wait, looks once more and
    /// then waits up to 5 s is never left waiting with a message sent. The
    /// sender waits for each message to be taken before the next, so each
    /// is the last for a while: a lost wake-up shows as the whole timeout.
    #[test]
    fn no_wake_up_is_lost_to_a_sender_racing_the_worker() {
        const MESSAGES: u32 = 20_000;
        let wake = Arc::new(Wake::new().expect("eventfd"));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (taken, was_taken) = crossbeam_channel::bounded(1);
        let sender = {
            let wake = Arc::clone(&wake);
            std::thread::spawn(move || {
                for n in 0..MESSAGES {
                    tx.send(n).expect("send");
                    wake.wake();
                    if was_taken.recv().is_err() {
                        return;
                    }
                }
            })
        };
        let mut received = 0;
        while received < MESSAGES {
            while rx.try_recv().is_ok() {
                received += 1;
                taken.send(()).expect("taken");
            }
            if received == MESSAGES {
                break;
            }
            wake.sleeping();
            let ms = if rx.is_empty() { 5000 } else { 0 };
            let started = std::time::Instant::now();
            let woken = fired(&wake, ms);
            assert!(
                started.elapsed() < std::time::Duration::from_secs(4),
                "a wake-up was lost after {received} messages"
            );
            wake.awake(woken);
        }
        sender.join().expect("sender");
    }
}
