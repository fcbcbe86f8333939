//! A bounded crossbeam-channel mailbox whose owner sleeps without a
//! string of yields.
//!
//! crossbeam's blocking receive spins, then calls `sched_yield` up to four
//! times, before it parks; on a busy machine each yield is a context
//! switch, and the dispatcher made more of them than real sleeps. This
//! mailbox keeps the channel and its bound and only changes how the owner
//! waits: when the channel is empty it yields once (at a high message rate
//! the sender is often about to send again), then parks; every send
//! unparks it. After a yield that found nothing it parks at once for the
//! next 8 waits, as a yield at a low rate is only a switch. (The
//! measurements behind each choice: bench/results.md, "Measurements behind
//! the code".)
//!
//! The dispatcher, each worker's disk threads (two mailboxes each, one
//! owner: [`Inbox::beside`]) and the logger wait this way; the I/O
//! workers wait in `pselect` on an eventfd instead.
//!
//! `Thread::unpark` is one atomic swap while the owner is awake, and a
//! futex wake only when it is parked; a wake-up cannot be lost, because an
//! unpark that comes before the park makes the park return at once (the
//! thread's token), and the owner looks at the channel after every park.
//! Should something else on the owner's thread take the token (a blocking
//! crossbeam send parks the same way), the message it announced is already
//! in the channel, which the owner reads before it parks again.

use std::cell::Cell;
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError, SendError, Sender, TryRecvError, TrySendError,
};

/// How many waits park at once after a yield that found nothing.
const YIELDS_SKIPPED: u32 = 8;

/// A mailbox of at most `capacity` messages.
pub fn bounded<T>(capacity: usize) -> (Postbox<T>, Inbox<T>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let owner = Arc::new(OnceLock::new());
    (
        Postbox {
            tx: Some(tx),
            owner: Arc::clone(&owner),
        },
        Inbox::new(rx, owner),
    )
}

/// The sending side; cloned for every sender.
pub struct Postbox<T> {
    /// Always there but while the postbox is dropped: the sender must be
    /// gone before the owner is woken to see the mailbox disconnected.
    tx: Option<Sender<T>>,
    /// The thread that receives, once it has started to.
    owner: Arc<OnceLock<Thread>>,
}

impl<T> Clone for Postbox<T> {
    fn clone(&self) -> Self {
        Postbox {
            tx: self.tx.clone(),
            owner: Arc::clone(&self.owner),
        }
    }
}

impl<T> Postbox<T> {
    /// Sends, waiting for room while the mailbox is full; fails only when
    /// the owner is gone.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.send_quietly(msg)?;
        self.wake();
        Ok(())
    }

    /// Sends as [`Postbox::send`] does but leaves the owner asleep: a sender
    /// with several messages at once sends them so, then calls
    /// [`Postbox::wake`] once. A full mailbox wakes the owner before
    /// waiting for room, since only the owner makes room; every blocking
    /// send goes through here, so one sender's quiet messages filling the
    /// mailbox cannot leave another waiting on an owner that sleeps.
    pub fn send_quietly(&self, msg: T) -> Result<(), SendError<T>> {
        let Some(tx) = &self.tx else {
            return Err(SendError(msg));
        };
        match tx.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => {
                self.wake();
                tx.send(msg)
            }
            Err(TrySendError::Disconnected(msg)) => Err(SendError(msg)),
        }
    }

    /// Sends if there is room now.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        match &self.tx {
            Some(tx) => tx.try_send(msg)?,
            None => return Err(TrySendError::Disconnected(msg)),
        }
        self.wake();
        Ok(())
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wakes the owner if it sleeps, to look at its mailbox.
    pub fn wake(&self) {
        // Before the owner's first receive there is no thread to wake; it
        // looks at the channel before it ever parks.
        if let Some(owner) = self.owner.get() {
            owner.unpark();
        }
    }
}

impl<T> Drop for Postbox<T> {
    /// The last sender gone disconnects the mailbox: the owner must look,
    /// after the sender is gone (woken before, it could find the channel
    /// still connected and park again for good).
    fn drop(&mut self) {
        drop(self.tx.take());
        self.wake();
    }
}

/// The receiving side, used by one thread: the first to receive.
pub struct Inbox<T> {
    rx: Receiver<T>,
    owner: Arc<OnceLock<Thread>>,
    /// The last wait began with a yield ([`Inbox::sleep`]).
    yielded_last: Cell<bool>,
    /// Waits left that park at once, after a yield that found nothing.
    skip_yields: Cell<u32>,
}

impl<T> Inbox<T> {
    fn new(rx: Receiver<T>, owner: Arc<OnceLock<Thread>>) -> Inbox<T> {
        Inbox {
            rx,
            owner,
            yielded_last: Cell::new(false),
            skip_yields: Cell::new(0),
        }
    }

    /// The next message, waiting at most `timeout` for one.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut yielded = false;
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Ok(msg),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            if !self.sleep(&mut yielded, deadline) {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }

    /// A second mailbox of this one's owner: a send to either wakes it, so
    /// that one thread waits on both ([`Inbox::wait`]).
    pub fn beside<U>(&self, capacity: usize) -> (Postbox<U>, Inbox<U>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        (
            Postbox {
                tx: Some(tx),
                owner: Arc::clone(&self.owner),
            },
            Inbox::new(rx, Arc::clone(&self.owner)),
        )
    }

    /// For an owner with several mailboxes ([`Inbox::beside`]), found all
    /// empty: sleeps until a send to any of them, the last sender of one
    /// leaving, or a spurious wake-up, after which the owner looks at all
    /// of them again. `yielded` starts false for each wait: its first turn
    /// only yields (unless a recent yield found nothing), as
    /// [`Inbox::recv_timeout`] does.
    pub fn wait(&self, yielded: &mut bool) {
        self.sleep(yielded, None);
    }

    /// [`Inbox::wait`] that gives up at `deadline`: false when it has
    /// passed.
    pub fn wait_until(&self, yielded: &mut bool, deadline: Instant) -> bool {
        self.sleep(yielded, Some(deadline))
    }

    /// One turn of a wait, the mailboxes found empty: yields the first
    /// time (but for [`YIELDS_SKIPPED`] waits after a yield that found
    /// nothing), parks after. False when `deadline` has passed.
    fn sleep(&self, yielded: &mut bool, deadline: Option<Instant>) -> bool {
        let owner = self.owner.get_or_init(std::thread::current);
        debug_assert_eq!(
            owner.id(),
            std::thread::current().id(),
            "an Inbox is received from by one thread"
        );
        // Once per wait: often enough the next message comes while
        // the sender has the processor. When it did not, the next waits
        // park at once: at a low rate the yield is only a switch.
        if !*yielded {
            *yielded = true;
            match self.skip_yields.get() {
                0 => {
                    self.yielded_last.set(true);
                    std::thread::yield_now();
                    return true;
                }
                n => self.skip_yields.set(n - 1),
            }
        } else if self.yielded_last.replace(false) {
            self.skip_yields.set(YIELDS_SKIPPED);
        }
        match deadline {
            // Further than the clock can count: as good as forever.
            None => std::thread::park(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                std::thread::park_timeout(left);
            }
        }
        true
    }

    /// The next message if one is waiting.
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.rx.try_recv()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// No message waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_sent_while_the_owner_sleeps_wakes_it_at_once() {
        let (postbox, inbox) = bounded::<u32>(4);
        let receiver = std::thread::spawn(move || {
            let started = Instant::now();
            // Register as the owner first, then sleep for the message.
            assert_eq!(
                inbox.recv_timeout(Duration::from_millis(1)),
                Err(RecvTimeoutError::Timeout)
            );
            let got = inbox.recv_timeout(Duration::from_secs(30));
            (got, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        postbox.send(7).unwrap();
        let (got, waited) = receiver.join().unwrap();
        assert_eq!(got, Ok(7));
        assert!(waited < Duration::from_secs(10), "woken late: {waited:?}");
    }

    #[test]
    fn messages_sent_before_the_first_receive_are_there() {
        let (postbox, inbox) = bounded::<u32>(4);
        postbox.try_send(1).unwrap();
        postbox.send(2).unwrap();
        assert_eq!(inbox.len(), 2);
        assert_eq!(inbox.recv_timeout(Duration::from_secs(1)), Ok(1));
        assert_eq!(inbox.try_recv(), Ok(2));
        assert!(inbox.is_empty());
    }

    #[test]
    fn the_last_sender_gone_ends_a_long_wait() {
        let (postbox, inbox) = bounded::<u32>(1);
        let receiver = std::thread::spawn(move || {
            let started = Instant::now();
            let got = inbox.recv_timeout(Duration::from_secs(60));
            (got, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        drop(postbox);
        let (got, waited) = receiver.join().unwrap();
        assert_eq!(got, Err(RecvTimeoutError::Disconnected));
        assert!(waited < Duration::from_secs(10), "woken late: {waited:?}");
    }

    /// The same race run many times with no pause: the last sender may go
    /// at any point of the owner's wait, and the owner must always see the
    /// mailbox disconnected at once, not at the end of its timeout.
    #[test]
    fn the_last_sender_gone_at_any_moment_is_always_seen() {
        // Busy threads beside the race, so that the dropping thread is
        // preempted at every odd moment.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let busy: Vec<_> = (0..3)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        for _ in 0..2_000 {
            let (postbox, inbox) = bounded::<u32>(1);
            let receiver = std::thread::spawn(move || {
                let started = Instant::now();
                let got = inbox.recv_timeout(Duration::from_secs(5));
                (got, started.elapsed())
            });
            drop(postbox);
            let (got, waited) = receiver.join().unwrap();
            assert_eq!(got, Err(RecvTimeoutError::Disconnected));
            // A lost wake-up shows as the whole 5 s timeout.
            assert!(waited < Duration::from_secs(2), "woken late: {waited:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in busy {
            thread.join().unwrap();
        }
    }

    /// Quiet sends that fill the mailbox leave the owner asleep; a send
    /// that then waits for room must wake it, or both wait for ever.
    #[test]
    fn a_mailbox_filled_quietly_still_drains() {
        let (postbox, inbox) = bounded::<u32>(2);
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match inbox.recv_timeout(Duration::from_secs(20)) {
                    Ok(msg) => got.push(msg),
                    Err(RecvTimeoutError::Disconnected) => return got,
                    Err(RecvTimeoutError::Timeout) => panic!("never woken"),
                }
            }
        });
        // Long enough for the owner to park.
        std::thread::sleep(Duration::from_millis(100));
        postbox.send_quietly(1).unwrap();
        postbox.send_quietly(2).unwrap();
        let other = postbox.clone();
        let sender = std::thread::spawn(move || other.send(3));
        assert!(sender.join().unwrap().is_ok(), "the owner drained it");
        postbox.send_quietly(4).unwrap();
        postbox.wake();
        drop(postbox);
        assert_eq!(receiver.join().unwrap(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_full_mailbox_refuses_a_try_send() {
        let (postbox, _inbox) = bounded::<u32>(1);
        postbox.try_send(1).unwrap();
        assert_eq!(postbox.try_send(2), Err(TrySendError::Full(2)));
    }

    /// Many senders racing one sleeping owner: every message arrives and
    /// none waits for the timeout (a lost wake-up would show as a receive
    /// that takes the whole second).
    #[test]
    fn no_wake_up_is_lost_among_racing_senders() {
        const SENDERS: u32 = 4;
        const EACH: u32 = 2_000;
        let (postbox, inbox) = bounded::<u32>(8);
        let senders: Vec<_> = (0..SENDERS)
            .map(|_| {
                let postbox = postbox.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        postbox.send(i).unwrap();
                        if i % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        drop(postbox);
        let mut received = 0;
        let mut slowest = Duration::ZERO;
        loop {
            let started = Instant::now();
            match inbox.recv_timeout(Duration::from_secs(1)) {
                Ok(_) => received += 1,
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("a wake-up was lost"),
            }
            slowest = slowest.max(started.elapsed());
        }
        for sender in senders {
            sender.join().unwrap();
        }
        assert_eq!(received, SENDERS * EACH);
        assert!(
            slowest < Duration::from_millis(900),
            "slowest receive {slowest:?}"
        );
    }

    /// An owner waiting on two mailboxes is woken by a send to either,
    /// and by the last sender of the second leaving.
    #[test]
    fn a_send_to_the_mailbox_beside_wakes_the_owner() {
        let (first_tx, first) = bounded::<u32>(4);
        let (second_tx, second) = first.beside::<&str>(4);
        let (result_tx, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut yielded = false;
            loop {
                match second.try_recv() {
                    Ok(msg) => got.push(msg),
                    Err(TryRecvError::Disconnected) => break,
                    Err(TryRecvError::Empty) => first.wait(&mut yielded),
                }
            }
            let _ = result_tx.send((got, first.try_recv()));
        });
        std::thread::sleep(Duration::from_millis(100));
        second_tx.send("woken").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        first_tx.send(7).unwrap();
        drop(second_tx);
        // A wake-up lost would leave the owner parked for good.
        let (got, first_got) = result
            .recv_timeout(Duration::from_secs(10))
            .expect("the owner woke and saw the mailbox closed");
        assert_eq!(got, ["woken"]);
        assert_eq!(first_got, Ok(7), "the first mailbox kept its message");
    }

    /// A wait whose yield found nothing makes the next waits park at
    /// once; a yield that found a message keeps the owner yielding.
    #[test]
    fn a_yield_that_found_nothing_makes_the_next_waits_park_at_once() {
        let (postbox, inbox) = bounded::<u32>(4);
        // A wait whose yield is followed by a message: yielding goes on.
        let mut first_turn_done = false;
        inbox.wait(&mut first_turn_done);
        postbox.try_send(1).unwrap();
        assert_eq!(inbox.try_recv(), Ok(1));
        assert_eq!(inbox.skip_yields.get(), 0);
        // A wait whose yield finds nothing: it parks (the token of a wake
        // given beforehand lets the park return), and the next waits
        // skip the yield.
        let mut first_turn_done = false;
        inbox.wait(&mut first_turn_done);
        postbox.wake();
        inbox.wait(&mut first_turn_done);
        assert_eq!(inbox.skip_yields.get(), YIELDS_SKIPPED);
        for left in (0..YIELDS_SKIPPED).rev() {
            let mut first_turn_done = false;
            postbox.wake();
            inbox.wait(&mut first_turn_done);
            assert_eq!(inbox.skip_yields.get(), left, "parked at once");
        }
        // Then a yield is tried again.
        let mut first_turn_done = false;
        inbox.wait(&mut first_turn_done);
        assert!(inbox.yielded_last.get());
    }
}
