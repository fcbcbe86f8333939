//! The worker's disk threads (`queue.disk_threads` of them): they settle
//! finished transactions (remove a delivered file, record a deferred one's
//! state, write a bounce) so that the `pselect` loop never waits on the
//! filesystem for them, and hold on to the messages whose state could not
//! be recorded, trying again now and then (see `settler::kept`).
//!
//! Removing a written-out queue file waits on the filesystem's journal
//! (it frees the file's blocks) far longer than it uses the CPU; done
//! inline, it stalled every other connection of the worker after each
//! message. Several removals in flight at once also finish sooner in all
//! than one after another. The disk threads are part of their worker, the
//! way the resolver thread is part of the dispatcher: each owns its own
//! [`Settler`], receives work through a small bounded mailbox, and reports
//! to the dispatcher exactly as the worker would have. When every mailbox
//! is full the worker settles inline, which is the backpressure.
//!
//! A fully delivered file loses its name in the worker before it is handed
//! over ([`postman::queue::Claimed::remove_delivered`]), so a crash while it
//! waits here never sends it again. The worker still holds it open, so the
//! costly part of the removal, freeing its blocks, happens here when the
//! settlement closes it.
//!
//! They also prepare the next message of a connection (claim the file by a
//! rename, read its envelope and state file again, reserve the room for its
//! next state, measure and maybe keep its body): that
//! too waits on the filesystem, and done in the loop it was half of the
//! loop's working time. The answer goes back through the worker's
//! `prepared` channel and wakes it like a mailbox message. When every
//! mailbox is full the worker prepares the message itself.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};
use postman::config::Config;
use postman::queue::Queue;
use slog::{error, Logger};

use super::body::{self, Budget, Pool};
use super::hand_back::{hand_back, Ctx, Reason};
use super::job::{Preparation, Prepared, Ready, Settlement};
use super::link::Wake;
use super::prepare::prepare;
use crate::mailbox::{self, Inbox, Postbox};
use crate::messages::DispatcherMsg;
use crate::settler::{Kept, Settler};

/// Settlements waiting for the disk thread, per worker.
pub const MAILBOX: usize = 32;

/// The longest a worker holding settlements ([`Disk::hold`]) waits for its
/// next turn, which sends them.
pub const HOLD_WAIT: Duration = Duration::from_millis(2);

enum Work {
    Settle(Box<Settlement>),
    Prepare(Box<Preparation>),
    Reload(Box<Config>),
    /// Messages whose state could not be recorded, from the worker's own
    /// settler: kept and tried again here.
    Keep(Vec<Kept>),
}

/// What the disk threads need of their worker to prepare messages: where
/// answers go, how to wake it, and its budget for bodies kept in memory.
#[derive(Clone)]
pub struct Answers {
    pub to: Sender<Prepared>,
    pub wake: Arc<Wake>,
    pub budget: Budget,
}

/// The worker's handle on its disk threads.
pub struct Disk {
    threads: Vec<ThreadLink>,
    /// Settlements of delivered messages kept back to go with the next
    /// preparation, to the same thread ([`Disk::hold`]).
    #[expect(clippy::vec_box, reason = "each goes on as it is, in a Work::Settle")]
    held: Vec<Box<Settlement>>,
    /// How many of `held` were held before the worker's current turn:
    /// those go at its end ([`Disk::end_turn`]) if no preparation took
    /// them.
    held_before: usize,
}

/// The worker's link to one disk thread.
struct ThreadLink {
    tx: Postbox<Work>,
    /// Preparations have their own mailbox, taken first: a connection
    /// waits for each, while a settlement can wait behind it.
    prepare_tx: Postbox<Work>,
    handle: JoinHandle<Totals>,
}

/// What the disk threads did, reported when they stop.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    pub settled: u64,
    pub prepared: u64,
    pub busy: Duration,
}

impl Disk {
    /// Starts worker `id`'s disk threads, each with its own handles on
    /// `queue` ([`Queue::share`]).
    pub fn start(
        id: usize,
        config: &Config,
        queue: &Queue,
        owner: &str,
        dispatcher: Postbox<DispatcherMsg>,
        answers: &Answers,
        log: Logger,
    ) -> std::io::Result<Disk> {
        let mut threads = Vec::new();
        for n in 0..config.disk_threads.max(1) {
            let settler = Settler::new(queue.share(), config, owner, &format!("W{id}D{n}"))
                .keeping_unrecorded();
            threads.push(DiskThread::spawn(
                id,
                n,
                settler,
                dispatcher.clone(),
                answers.clone(),
                log.clone(),
            )?);
        }
        Ok(Disk {
            threads,
            held: Vec::new(),
            held_before: 0,
        })
    }

    /// Hands a settlement to a disk thread, or gives it back when their
    /// mailboxes are full (or they are gone): then the caller settles it.
    pub fn try_settle(&mut self, settlement: Box<Settlement>) -> Result<(), Box<Settlement>> {
        match self.try_send(Work::Settle(settlement)) {
            Err(Work::Settle(s)) => Err(s),
            _ => Ok(()),
        }
    }

    /// Keeps the settlement of a delivered message
    /// ([`Settlement::finished_already`]: the dispatcher knows, and all
    /// that is left is closing the file and logging) to go with the next
    /// preparation, to the thread that prepares, or at the end of the
    /// worker's next turn at the latest ([`Disk::end_turn`]).
    ///
    /// A connection's next message is prepared a turn after its last one
    /// is settled (once the dispatcher has chosen it), so sent at once the
    /// two woke a disk thread each; together they wake one, which saves
    /// CPU (bench/results.md, "Measurements behind the code"). The cost
    /// is a delivery's record written a turn later (the worker waits at
    /// most [`HOLD_WAIT`] while it holds any), and its file's blocks freed
    /// as late.
    pub fn hold(&mut self, settlement: Box<Settlement>) {
        debug_assert!(settlement.finished_already());
        self.held.push(settlement);
    }

    /// Whether settlements are held: the worker then waits at most
    /// [`HOLD_WAIT`] for its next turn.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// The end of one of the worker's turns: settlements held since before
    /// it (`all`: every one) go to the thread with the least waiting. Those
    /// no thread has room for come back, for the worker to settle.
    #[expect(clippy::vec_box, reason = "they were boxed for a Work::Settle")]
    pub fn end_turn(&mut self, all: bool) -> Vec<Box<Settlement>> {
        let due = if all {
            self.held.len()
        } else {
            self.held_before
        };
        let mut unsent = Vec::new();
        // Taken out while the threads are tried, and put back, so that its
        // room is kept for the next message's settlement.
        let mut held = std::mem::take(&mut self.held);
        for settlement in held.drain(..due) {
            if let Err(settlement) = self.try_settle(settlement) {
                unsent.push(settlement);
            }
        }
        self.held = held;
        self.held_before = self.held.len();
        unsent
    }

    /// Hands the preparing of a connection's next message to a disk thread,
    /// with the settlements held ([`Disk::hold`]), or gives it back when
    /// their mailboxes are full (or they are gone): then the caller
    /// prepares it.
    pub fn try_prepare(&mut self, work: Box<Preparation>) -> Result<(), Box<Preparation>> {
        let n = match self.try_send(Work::Prepare(work)) {
            Err(Work::Prepare(p)) => return Err(p),
            Err(_) => return Ok(()),
            Ok(n) => n,
        };
        // To the same thread, woken by the preparation; what does not fit
        // stays held.
        let mut held = std::mem::take(&mut self.held);
        for settlement in held.drain(..) {
            if let Err(e) = self.threads[n].tx.try_send(Work::Settle(settlement)) {
                if let Work::Settle(settlement) = e.into_inner() {
                    self.held.push(settlement);
                }
            }
        }
        if self.held.is_empty() {
            // Its room kept for the next message's settlement.
            self.held = held;
        }
        self.held_before = self.held_before.min(self.held.len());
        Ok(())
    }

    /// The thread with the least work waiting takes `work` (the lowest
    /// numbered among equals; the next with room when its mailbox is full).
    /// Work stays on one thread while that thread keeps up and spreads when
    /// the disk holds it back. A strict turn woke every thread in turn for
    /// work one thread could do, costing CPU and context switches for no
    /// speed. The body buffers are the worker's (see
    /// [`body::Pool`]), so the uneven share does not strand them.
    /// Returns the thread's number.
    fn try_send(&mut self, mut work: Work) -> Result<usize, Work> {
        let count = self.threads.len();
        let waiting = |t: &ThreadLink| t.tx.len() + t.prepare_tx.len();
        let first = (0..count)
            .min_by_key(|&n| waiting(&self.threads[n]))
            .unwrap_or(0);
        for k in 0..count {
            let n = (first + k) % count;
            let thread = &self.threads[n];
            let tx = match work {
                Work::Prepare(_) => &thread.prepare_tx,
                Work::Settle(_) | Work::Reload(_) | Work::Keep(_) => &thread.tx,
            };
            match tx.try_send(work) {
                Ok(()) => return Ok(n),
                Err(e) => work = e.into_inner(),
            }
        }
        Err(work)
    }

    /// Hands messages kept claimed until their state is recorded to a disk
    /// thread, which tries again now and then (waiting for room in its
    /// mailbox: this is rare, and they must not be dropped).
    pub fn keep(&self, kept: Vec<Kept>) {
        if let Some(thread) = self.threads.first() {
            // A thread gone means postman is stopping: what it would have
            // kept stays claimed for recovery, as it would at its stop.
            let _ = thread.tx.send(Work::Keep(kept));
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
            drop(thread.prepare_tx);
            match thread.handle.join() {
                Ok(t) => {
                    totals.settled += t.settled;
                    totals.prepared += t.prepared;
                    totals.busy += t.busy;
                }
                Err(_) => error!(log, "a disk thread panicked"),
            }
        }
        totals
    }
}

/// One disk thread: prepares and settles what its worker hands it, and
/// keeps the messages whose state could not be recorded, trying again on
/// its own clock.
struct DiskThread {
    settler: Settler,
    dispatcher: Postbox<DispatcherMsg>,
    answers: Answers,
    log: Logger,
    /// Preparations, taken first ([`next_work`]).
    preparations: Inbox<Work>,
    /// Everything else.
    other: Inbox<Work>,
    /// Holds only the buffer lent with the preparation at hand: it goes
    /// back to the worker in the body or as the spare.
    lent: Pool,
    buf: Vec<u8>,
    totals: Totals,
}

impl DiskThread {
    /// Starts disk thread `n` of worker `id`, and gives the worker's link
    /// to it.
    fn spawn(
        id: usize,
        n: usize,
        settler: Settler,
        dispatcher: Postbox<DispatcherMsg>,
        answers: Answers,
        log: Logger,
    ) -> std::io::Result<ThreadLink> {
        let (prepare_tx, preparations) = mailbox::bounded::<Work>(MAILBOX);
        let (tx, other) = preparations.beside::<Work>(MAILBOX);
        let thread = DiskThread {
            settler,
            dispatcher,
            answers,
            log,
            preparations,
            other,
            lent: Pool::default(),
            buf: Vec::with_capacity(body::CHUNK),
            totals: Totals::default(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("postman-disk-{id}.{n}"))
            .spawn(move || thread.run())?;
        Ok(ThreadLink {
            tx,
            prepare_tx,
            handle,
        })
    }

    /// Works until both mailboxes are closed and empty; what it still
    /// keeps then stays claimed, for the next start to recover.
    fn run(mut self) -> Totals {
        while let Some(work) = next_work(
            &self.preparations,
            &self.other,
            self.settler.next_kept_retry(),
        ) {
            match work {
                None => self.settler.retry_kept(Instant::now(), &self.log),
                Some(Work::Prepare(p)) => self.prepare(*p),
                Some(Work::Settle(s)) => self.settle(s),
                Some(Work::Reload(config)) => self.settler.reload(&config),
                Some(Work::Keep(kept)) => self.settler.add_kept(kept),
            }
        }
        self.settler.abandon_kept(&self.log);
        self.totals
    }

    /// Prepares a connection's next message and answers the worker.
    fn prepare(&mut self, p: Preparation) {
        let started = Instant::now();
        let ctx = Ctx::new(&self.settler, &self.log, &self.dispatcher, None);
        if let Some(buffer) = p.buffer {
            self.lent.give(buffer);
        }
        let mut memory = body::Memory {
            budget: &self.answers.budget,
            pool: &mut self.lent,
            buf: &mut self.buf,
        };
        let ready = prepare(&ctx, &mut memory, p.msg, &p.relay);
        self.totals.busy += started.elapsed();
        self.totals.prepared += 1;
        // The channel holds more answers than the worker can have
        // connections waiting for one: this never blocks.
        match self.answers.to.send(Prepared {
            conn: p.conn,
            ready: ready.map(Box::new),
            spare: self.lent.lend(),
        }) {
            Ok(()) => self.answers.wake.wake(),
            Err(e) => {
                // The worker is gone: nothing will start it.
                if let Some(ready) = e.into_inner().ready {
                    let Ready { msg, claimed, .. } = *ready;
                    hand_back(&ctx, msg, Some(claimed), Reason::UNTRIED);
                }
            }
        }
    }

    /// Settles a finished transaction and tells the dispatcher, unless the
    /// worker did ([`Settlement::finished_already`]).
    fn settle(&mut self, settlement: Box<Settlement>) {
        let started = Instant::now();
        let done = settlement.settle_for_dispatcher(&mut self.settler);
        self.totals.busy += started.elapsed();
        self.totals.settled += 1;
        // The dispatcher never blocks on a worker or on us, so a blocking
        // send cannot deadlock.
        if done.is_some_and(|done| self.dispatcher.send(done).is_err()) {
            error!(
                self.log,
                "the dispatcher is gone; settled files stay settled"
            );
        }
    }
}

/// The next work for a disk thread, a preparation first when one waits;
/// `Some(None)` when `until` passes first (a kept message is due for
/// another try); `None` once both mailboxes are closed and empty. The two
/// are one owner's ([`Inbox::beside`]): it sleeps as the dispatcher does,
/// without crossbeam's spinning and string of yields, which were 0.9
/// `sched_yield` calls and a contended lock of the channel's wakers per
/// message.
fn next_work<T>(prepare: &Inbox<T>, other: &Inbox<T>, until: Option<Instant>) -> Option<Option<T>> {
    let mut yielded = false;
    loop {
        let prepare_closed = match prepare.try_recv() {
            Ok(work) => return Some(Some(work)),
            Err(TryRecvError::Empty) => false,
            Err(TryRecvError::Disconnected) => true,
        };
        match other.try_recv() {
            Ok(work) => return Some(Some(work)),
            Err(TryRecvError::Disconnected) if prepare_closed => return None,
            Err(_) => match until {
                None => prepare.wait(&mut yielded),
                Some(until) => {
                    if !prepare.wait_until(&mut yielded, until) {
                        return Some(None);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::job::QueueFile;
    use super::*;
    use crate::messages::{ConnId, QueuedMessage};
    use postman::config::Settings;

    #[test]
    fn preparations_go_first_and_both_mailboxes_drain_after_close() {
        let (prepare_tx, prepare) = mailbox::bounded(8);
        let (other_tx, other) = prepare.beside(8);
        for n in [1, 2, 3] {
            other_tx.send(n).expect("send");
        }
        prepare_tx.send(10).expect("send");
        assert_eq!(
            next_work(&prepare, &other, None),
            Some(Some(10)),
            "the preparation first"
        );
        assert_eq!(next_work(&prepare, &other, None), Some(Some(1)));
        prepare_tx.send(11).expect("send");
        assert_eq!(
            next_work(&prepare, &other, None),
            Some(Some(11)),
            "again ahead of 2 and 3"
        );
        // Stopping: the preparations' mailbox closes first, then the other;
        // what they hold is still done, then the thread ends.
        prepare_tx.send(12).expect("send");
        drop(prepare_tx);
        drop(other_tx);
        let rest: Vec<i32> =
            std::iter::from_fn(|| next_work(&prepare, &other, None).flatten()).collect();
        assert_eq!(rest, [12, 2, 3]);
    }

    #[test]
    fn with_one_mailbox_closed_the_thread_waits_on_the_other() {
        let (prepare_tx, prepare) = mailbox::bounded(8);
        let (other_tx, other) = prepare.beside::<i32>(8);
        drop(other_tx);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            prepare_tx.send(7).expect("send");
        });
        assert_eq!(
            next_work(&prepare, &other, None),
            Some(Some(7)),
            "waited, did not end"
        );
        sender.join().expect("sender");
        assert_eq!(
            next_work(&prepare, &other, None),
            None,
            "both closed and empty"
        );
    }

    #[test]
    fn a_kept_message_due_wakes_the_thread_without_work() {
        let (_prepare_tx, prepare) = mailbox::bounded::<i32>(8);
        let (_other_tx, other) = prepare.beside::<i32>(8);
        let until = Instant::now() + Duration::from_millis(30);
        assert_eq!(
            next_work(&prepare, &other, Some(until)),
            Some(None),
            "timed out"
        );
        assert!(Instant::now() >= until, "not before it was due");
    }

    fn queued(id: &str) -> QueuedMessage {
        QueuedMessage::for_test(id, &["u@d.test"])
    }

    fn preparation(n: u32) -> Box<Preparation> {
        Box::new(Preparation {
            conn: ConnId {
                index: n,
                generation: 0,
            },
            msg: queued(&format!("p{n}")),
            relay: "none".into(),
            buffer: None,
        })
    }

    fn settlement(n: u32, log: &Logger) -> Box<Settlement> {
        Box::new(Settlement {
            msg: queued(&format!("s{n}")),
            file: QueueFile::Removed(None),
            fates: Vec::new(),
            relay: "none".into(),
            log: log.clone(),
            open: None,
            throttle: None,
        })
    }

    type Mailboxes = Vec<(Inbox<Work>, Inbox<Work>)>;

    /// A `Disk` of two threads that do nothing, and their mailboxes
    /// (preparations, settlements) of 8 each.
    fn idle_disk() -> (Disk, Mailboxes) {
        let mut mailboxes = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..2 {
            let (prepare_tx, preparations) = mailbox::bounded(8);
            let (tx, settlements) = preparations.beside(8);
            let handle = std::thread::spawn(Totals::default);
            threads.push(ThreadLink {
                tx,
                prepare_tx,
                handle,
            });
            mailboxes.push((preparations, settlements));
        }
        let disk = Disk {
            threads,
            held: Vec::new(),
            held_before: 0,
        };
        (disk, mailboxes)
    }

    /// Thread `n`'s preparations and settlements waiting.
    fn waiting_in(mailboxes: &Mailboxes, n: usize) -> (usize, usize) {
        let (preparations, settlements) = &mailboxes[n];
        (preparations.len(), settlements.len())
    }

    /// Work goes to the thread with the least waiting, the first among
    /// equals, so one thread that keeps up gets it all; a full mailbox
    /// sends it to the next.
    #[test]
    fn work_goes_to_the_thread_with_the_least_waiting() {
        let (mut disk, mailboxes) = idle_disk();
        let log = Logger::root(slog::Discard, slog::o!());
        let waiting = |n: usize| waiting_in(&mailboxes, n);
        let take_all = || {
            for (p, s) in &mailboxes {
                while p.try_recv().is_ok() || s.try_recv().is_ok() {}
            }
        };
        // A thread that takes each piece of work before the next comes
        // gets all of it.
        for n in 0..4 {
            assert!(disk.try_prepare(preparation(n)).is_ok());
            assert_eq!((waiting(0), waiting(1)), ((1, 0), (0, 0)), "p{n}");
            take_all();
            assert!(disk.try_settle(settlement(n, &log)).is_ok());
            assert_eq!((waiting(0), waiting(1)), ((0, 1), (0, 0)), "s{n}");
            take_all();
        }
        // While the first has work waiting, the second takes the next.
        assert!(disk.try_settle(settlement(10, &log)).is_ok());
        assert!(disk.try_prepare(preparation(11)).is_ok());
        assert!(disk.try_settle(settlement(12, &log)).is_ok());
        assert_eq!(waiting(0), (0, 2));
        assert_eq!(waiting(1), (1, 0));
        take_all();
        // The least loaded thread's mailbox is full: the other takes it.
        for n in 0..8 {
            assert!(disk.threads[0]
                .prepare_tx
                .try_send(Work::Prepare(preparation(20 + n)))
                .is_ok());
            assert!(disk.threads[1]
                .tx
                .try_send(Work::Settle(settlement(30 + n, &log)))
                .is_ok());
        }
        assert!(disk.threads[1]
            .prepare_tx
            .try_send(Work::Prepare(preparation(40)))
            .is_ok());
        assert!(disk.try_prepare(preparation(41)).is_ok());
        assert_eq!(waiting(0), (8, 0));
        assert_eq!(waiting(1), (2, 8));
        take_all();
        disk.stop(&log);
    }

    /// A delivered message's settlement waits for the next preparation and
    /// goes to the same thread, or goes at the end of the turn after the
    /// one it was held in.
    #[test]
    fn a_held_settlement_goes_with_the_next_preparation_or_a_turn_later() {
        let (mut disk, mailboxes) = idle_disk();
        let log = Logger::root(slog::Discard, slog::o!());
        let waiting = |n: usize| waiting_in(&mailboxes, n);
        // Thread 0 is busy: the preparation and what is held go to 1.
        assert!(disk.try_settle(settlement(1, &log)).is_ok());
        disk.hold(settlement(2, &log));
        disk.hold(settlement(3, &log));
        assert!(disk.holding());
        assert!(disk.end_turn(false).is_empty());
        assert_eq!((waiting(0), waiting(1)), ((0, 1), (0, 0)), "held this turn");
        assert!(disk.try_prepare(preparation(4)).is_ok());
        assert_eq!((waiting(0), waiting(1)), ((0, 1), (1, 2)), "together");
        assert!(!disk.holding());

        // No preparation comes: held through the turn it was held in, sent
        // at the end of the next.
        disk.hold(settlement(5, &log));
        assert!(disk.end_turn(false).is_empty());
        assert_eq!(waiting(0).1 + waiting(1).1, 3, "still held");
        assert!(disk.end_turn(false).is_empty());
        assert_eq!(waiting(0).1 + waiting(1).1, 4, "sent");
        assert!(!disk.holding());

        // Stopping sends all, and when every mailbox is full they come
        // back for the worker to settle.
        let mut n = 10;
        while disk.try_settle(settlement(n, &log)).is_ok() {
            n += 1;
        }
        assert_eq!(waiting(0).1 + waiting(1).1, 16, "all full");
        disk.hold(settlement(20, &log));
        let back = disk.end_turn(true);
        assert_eq!(back.len(), 1, "no room");
        assert_eq!(back[0].msg.id, "s20");
        disk.stop(&log);
    }

    /// Worker 0's disk threads over the queue in `dir`, and where their
    /// answers to preparations arrive.
    fn start_disk(
        dir: &std::path::Path,
        threads: usize,
    ) -> (Disk, crossbeam_channel::Receiver<Prepared>, Logger) {
        let mut settings = Settings::defaults("mx.example.org");
        settings.application.maildir.path = dir.to_owned();
        settings.queue.disk_threads = threads;
        let config = settings.validate().expect("valid settings");
        let (dispatcher, _inbox) = crate::mailbox::bounded(64);
        let (to, prepared) = crossbeam_channel::bounded(1);
        let answers = Answers {
            to,
            wake: Arc::new(Wake::new().expect("eventfd")),
            budget: Budget::default(),
        };
        let log = Logger::root(slog::Discard, slog::o!());
        let queue = Queue::create(postman::queue::Layout::new(dir)).expect("queue");
        let disk = Disk::start(
            0,
            &config,
            &queue,
            "owner",
            dispatcher,
            &answers,
            log.clone(),
        )
        .expect("start");
        (disk, prepared, log)
    }

    #[test]
    fn a_worker_starts_as_many_disk_threads_as_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut disk, _prepared, log) = start_disk(dir.path(), 3);
        assert_eq!(disk.threads.len(), 3);
        let totals = disk.stop(&log);
        assert_eq!(totals.settled, 0);
        assert!(disk.threads.is_empty(), "stopped and joined");
    }

    /// The buffer lent with a preparation comes back to the worker when
    /// no body took it (here the file is gone), so it is not lost to a
    /// disk thread.
    #[test]
    fn a_lent_buffer_that_no_body_took_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut disk, prepared, log) = start_disk(dir.path(), 1);
        let mut preparation = preparation(1);
        preparation.msg.path = dir.path().join("gone");
        preparation.buffer = Some(vec![7; 4096]);
        assert!(disk.try_prepare(preparation).is_ok());
        let answer = prepared
            .recv_timeout(Duration::from_secs(10))
            .expect("an answer");
        assert!(answer.ready.is_none(), "nothing to send");
        assert_eq!(answer.spare.map(|b| b.len()), Some(4096), "the buffer");
        disk.stop(&log);
    }
}
