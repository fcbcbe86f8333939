//! The Dispatcher actor: owns per-domain state (ready and deferred messages,
//! the route, connection counts, backoff) and decides which worker opens which
//! connection and which messages ride on it.
//!
//! Fairness: domains with work wait in a round-robin queue and each turn opens
//! at most one connection, so a domain with 10,000 messages gets its
//! `max_connections_per_domain` connections while a domain with one message
//! still gets its turn at once. Reused connections ask for more of their own
//! domain (`WantMore`), bounded by `max_messages_per_connection`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
use postman::config::Config;
use postman::dsn::{self, RecipientReport};
use postman::queue::{self, Queue};
use postman::route::{Route, RouteError};
use postman::smtp::EnhancedCode;
use slog::{error, info, warn, Logger};

use crate::logging::LogControl;
use crate::mailbox::Inbox;
use crate::messages::{DispatcherMsg, Disposition, PutOff, QueuedMessage, ScannerMsg, WorkerMsg};
use crate::records::{self, Status, Verdict};
use crate::resolver::ResolveRequest;
use crate::settler::{self, Fate, RecipientFate, Settler};
use crate::worker::WorkerLink;

mod concurrency;
mod parked;
pub(crate) mod policy;
mod routes;

/// Route lookups in flight at once. The resolver's mailbox holds this many,
/// so a `try_send` into it never fails for want of room.
pub const MAX_LOOKUPS: usize = 256;

/// How soon the dispatcher retries handing a message to a worker whose
/// mailbox was full.
const BACKLOG_RETRY: Duration = Duration::from_millis(5);

enum RouteState {
    Unknown,
    Resolving,
    Known { route: Route, until: Instant },
    Failed { error: RouteError, until: Instant },
}

struct Domain {
    ready: VecDeque<QueuedMessage>,
    /// Ids in `ready`, to recognise a new version of a file.
    ready_ids: HashSet<String>,
    /// Ids of messages out with a worker.
    flying: HashSet<String>,
    /// Deferred messages by id, with the time they are due again.
    deferred: HashMap<String, (Instant, QueuedMessage)>,
    route: RouteState,
    connections: usize,
    /// How many connections the domain may have now (Postfix's destination
    /// concurrency): `delivery.initial_connections_per_domain` to start
    /// with, one more after as many answered attempts as the limit (1/n
    /// each; one cut off by a broken connection earns nothing), up to
    /// `max_connections_per_domain`; down to the other open connections
    /// when one fails while they are open; 1 after a failed round, so that
    /// a dead host is probed by one connection rather than hammered by
    /// twenty.
    limit: usize,
    /// Answered attempts since the limit last changed: at `limit` it rises
    /// by one.
    credit: usize,
    suspended_until: Option<Instant>,
    /// The last failed round was a mail loop (every address is this host's,
    /// or its server named this host): a message that expires meanwhile
    /// bounces with status 5.4.6.
    looping: bool,
    /// Failed connection rounds in a row (persisted in `<domain>/.backoff`):
    /// each makes the domain's backoff longer, one success resets it.
    failures: u32,
    in_runnable: bool,
    /// Its connections waiting for more of its mail (see `parked`).
    parked: usize,
}

impl Domain {
    fn take_ready(&mut self) -> Option<QueuedMessage> {
        let msg = self.ready.pop_front()?;
        self.ready_ids.remove(&msg.id);
        Some(msg)
    }

    fn drain_ready(&mut self) -> Vec<QueuedMessage> {
        self.ready_ids.clear();
        self.ready.drain(..).collect()
    }

    fn new(limit: usize) -> Domain {
        Domain {
            ready: VecDeque::new(),
            ready_ids: HashSet::new(),
            flying: HashSet::new(),
            deferred: HashMap::new(),
            route: RouteState::Unknown,
            connections: 0,
            limit,
            credit: 0,
            suspended_until: None,
            looping: false,
            failures: 0,
            in_runnable: false,
            parked: 0,
        }
    }
}

pub struct Dispatcher {
    inbox: Inbox<DispatcherMsg>,
    workers: Vec<WorkerLink>,
    resolver: Option<Sender<ResolveRequest>>,
    scanner: Sender<ScannerMsg>,
    settler: Settler,
    log_control: LogControl,
    config: Config,
    log: Logger,
    once: bool,

    domains: HashMap<String, Domain>,
    runnable: VecDeque<String>,
    /// Timers for deferred messages: (due, domain, id). An entry whose
    /// message is gone or was rescheduled is skipped when it fires.
    timers: BinaryHeap<Reverse<(Instant, String, String)>>,
    connections: usize,
    in_flight: usize,
    ready_total: usize,
    lookups: usize,
    /// After a local limit: no new connection (nor route lookup, which takes
    /// sockets too) before this time.
    paused_until: Option<Instant>,
    /// The kinds of work put off in the current pause that have had
    /// their warning (one each: connections, queue files, route lookups).
    warned_in_pause: Vec<PutOff>,
    scan_done: bool,
    shutting_down: bool,
    workers_running: usize,
    /// Idle connections waiting a moment for more of their domain, the
    /// longest waiting first.
    parked: VecDeque<parked::Parked>,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    found: u64,
    not_due: u64,
    finished: u64,
    deferred: u64,
    connections_opened: u64,
    lookups: u64,
    lookup_failures: u64,
    local_limits: u64,
    /// Connections that failed while others to their domain were open.
    concurrency_cuts: u64,
}

impl Dispatcher {
    // Every argument is one mailbox end or setting the dispatcher takes
    // ownership of; a struct around them would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inbox: Inbox<DispatcherMsg>,
        workers: Vec<WorkerLink>,
        resolver: Sender<ResolveRequest>,
        scanner: Sender<ScannerMsg>,
        config: Config,
        log: Logger,
        once: bool,
        queue: Queue,
        owner: &str,
        log_control: LogControl,
    ) -> Dispatcher {
        let workers_running = workers.len();
        let settler = Settler::new(queue, &config, owner, "D");
        Dispatcher {
            inbox,
            workers,
            resolver: Some(resolver),
            scanner,
            settler,
            log_control,
            config,
            log,
            once,
            domains: HashMap::new(),
            runnable: VecDeque::new(),
            timers: BinaryHeap::new(),
            connections: 0,
            in_flight: 0,
            ready_total: 0,
            lookups: 0,
            paused_until: None,
            warned_in_pause: Vec::new(),
            scan_done: false,
            shutting_down: false,
            workers_running,
            parked: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    pub fn run(mut self) {
        let mut next_metrics = Instant::now() + self.config.metrics_interval;
        loop {
            // What the last turn has for the workers goes now, one wake-up
            // each, before this thread sleeps.
            for (index, worker) in self.workers.iter_mut().enumerate() {
                if worker.flush_backlog().is_err() {
                    error!(self.log, "worker mailbox closed"; "worker" => index);
                }
            }
            let now = Instant::now();
            let mut wake = self.next_timer().unwrap_or(now + Duration::from_secs(3600));
            let metrics_every = self.config.metrics_interval;
            if !metrics_every.is_zero() {
                wake = wake.min(next_metrics);
            }
            if self.workers.iter().any(WorkerLink::has_backlog) {
                wake = wake.min(now + BACKLOG_RETRY);
            }
            if let Some(until) = self.paused_until {
                wake = wake.min(until);
            }
            if let Some(until) = self.next_parked_expiry() {
                wake = wake.min(until);
            }
            match self.inbox.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(msg) => {
                    self.handle(msg);
                    // Take whatever else is waiting before deciding anything:
                    // cheaper than a pump per message under load.
                    while let Ok(msg) = self.inbox.try_recv() {
                        self.handle(msg);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let now = Instant::now();
            self.release_due(now);
            self.expire_parked(now);
            self.pump(now);
            if self.once && !self.shutting_down && self.idle() {
                info!(self.log, "nothing left to do now"; "deferred" => self.stats.deferred,
                    "finished" => self.stats.finished);
                self.begin_shutdown();
            }
            if self.shutting_down && self.workers_running == 0 {
                break;
            }
            if !metrics_every.is_zero() && now >= next_metrics {
                self.metrics();
                next_metrics = now + metrics_every;
            }
        }
        self.metrics();
        info!(self.log, "dispatcher stopped");
    }

    /// `--once` is done when the scan is complete and nothing is ready, in
    /// flight or waiting for DNS. Deferred messages wait for the next run.
    fn idle(&self) -> bool {
        self.scan_done && self.in_flight == 0 && self.ready_total == 0 && self.lookups == 0
    }

    fn handle(&mut self, msg: DispatcherMsg) {
        let now = Instant::now();
        match msg {
            DispatcherMsg::Found(msg) => {
                let msg = *msg;
                self.stats.found += 1;
                if !self.refresh(&msg) {
                    return;
                }
                if msg
                    .retry
                    .next_attempt
                    .is_some_and(|at| at > SystemTime::now())
                {
                    // Deferred earlier (perhaps by an earlier run): not due.
                    self.stats.not_due += 1;
                    let due = settler::due(&msg.retry, self.config.retry_delay);
                    self.defer(msg, due);
                } else {
                    self.enqueue(msg, now);
                }
            }
            DispatcherMsg::Gone { domain, id } => self.forget(&domain, &id),
            DispatcherMsg::BackoffCleared { domain } => self.backoff_cleared(&domain, now),
            DispatcherMsg::ScanDone => self.scan_done = true,
            DispatcherMsg::Resolved {
                domain,
                route,
                valid_until,
            } => self.resolved(domain, route, valid_until, now),
            DispatcherMsg::Established { domain } => self.established(&domain),
            DispatcherMsg::Done {
                domain,
                id,
                disposition,
                answered,
            } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.feedback(&domain, &id, answered);
                self.settled(disposition, now);
            }
            DispatcherMsg::WantMore {
                worker,
                conn,
                domain,
            } => self.want_more(worker, conn, domain, now),
            DispatcherMsg::ConnectFailed {
                domain,
                job,
                reason,
                relay,
                code,
                dsn,
                loops,
            } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let failure = routes::Failure {
                    reason,
                    relay,
                    code,
                    dsn,
                    loops,
                };
                self.connect_failed(&domain, *job, &failure, now);
            }
            DispatcherMsg::LocalLimit {
                domain,
                job,
                what,
                reason,
            } => self.local_limit(&domain, *job, what, &reason, now),
            DispatcherMsg::LookupPutOff { domain, reason } => {
                self.lookup_put_off(&domain, &reason, now)
            }
            DispatcherMsg::Closed {
                worker,
                conn,
                domain,
            } => {
                self.closed_while_parked(worker, conn);
                self.connections = self.connections.saturating_sub(1);
                if let Some(link) = self.workers.get_mut(worker) {
                    link.connections = link.connections.saturating_sub(1);
                }
                if let Some(d) = self.domains.get_mut(&domain) {
                    d.connections = d.connections.saturating_sub(1);
                }
                self.make_runnable(&domain);
            }
            DispatcherMsg::WorkerStopped { worker } => {
                info!(self.log, "worker stopped"; "worker" => worker);
                self.workers_running = self.workers_running.saturating_sub(1);
            }
            DispatcherMsg::Shutdown => {
                if !self.shutting_down {
                    info!(self.log, "shutting down"; "in_flight" => self.in_flight);
                    self.begin_shutdown();
                }
            }
            DispatcherMsg::Reload(config) => self.reload(*config),
        }
    }

    /// New settings from SIGHUP. Limits, the retry schedule, local domains
    /// and the metrics interval apply at once; what the running threads were
    /// built with (threads, queue root, DNS servers, log output, rescan
    /// interval) stays until a restart (the signal thread said which).
    fn reload(&mut self, mut config: Config) {
        config.threads = self.config.threads;
        config.maildir = self.config.maildir.clone();
        config.nameservers = self.config.nameservers.clone();
        config.dns_timeout = self.config.dns_timeout;
        config.dns_attempts = self.config.dns_attempts;
        config.log_format = self.config.log_format;
        config.log_file = self.config.log_file.clone();
        config.rescan_interval = self.config.rescan_interval;
        self.settler.reload(&config);
        let per_domain = config.max_connections_per_domain;
        for d in self.domains.values_mut() {
            // A lower maximum applies at once; a higher one is reached by
            // the feedback, and a domain on probation keeps its single
            // connection.
            d.limit = d.limit.min(per_domain);
        }
        for worker in 0..self.workers.len() {
            self.send_worker(worker, WorkerMsg::Reload(Box::new(config.clone())));
        }
        self.config = config;
        self.shorten_parked(Instant::now());
        let names: Vec<String> = self.domains.keys().cloned().collect();
        for name in names {
            self.make_runnable(&name);
        }
    }

    /// The domain's state, created on first use with the backoff an
    /// earlier run left on disk (so a restart keeps a dead domain waiting).
    fn domain(&mut self, name: &str) -> &mut Domain {
        let limit = self.initial_connections();
        let queue = &self.settler.queue;
        let longest = self.settler.schedule.max.max(self.settler.schedule.min);
        let log = &self.log;
        self.domains.entry(name.to_owned()).or_insert_with(|| {
            let mut d = Domain::new(limit);
            match queue::read_backoff(queue, name) {
                Ok(Some(backoff)) => {
                    d.failures = backoff.failures;
                    // At most the longest backoff postman writes: a file
                    // saying more was not written by its schedule.
                    if let Some(left) = backoff.remaining(SystemTime::now(), longest) {
                        d.suspended_until = Some(Instant::now() + left);
                        d.limit = 1;
                        info!(log, "domain still backing off from an earlier run"; "domain" => name,
                            "seconds" => left.as_secs(), "failures" => backoff.failures,
                            "error" => backoff.error);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    warn!(log, "ignoring an unreadable domain backoff file"; "domain" => name,
                    "error" => %e)
                }
            }
            d
        })
    }

    /// A message is ready for an attempt now (or as soon as its domain's
    /// suspension ends).
    fn enqueue(&mut self, msg: QueuedMessage, now: Instant) {
        if self.shutting_down {
            return;
        }
        let name = msg.domain.clone();
        let domain = self.domain(&name);
        if let Some(until) = domain.suspended_until.filter(|until| *until > now) {
            let reason = "delivery temporarily suspended after a failed connection".to_owned();
            self.defer_logged(msg, until, &reason);
            return;
        }
        let waiting = domain.parked > 0;
        domain.ready_ids.insert(msg.id.clone());
        domain.ready.push_back(msg);
        self.ready_total += 1;
        if waiting {
            self.serve_parked(&name, now);
        }
        self.make_runnable(&name);
    }

    fn make_runnable(&mut self, name: &str) {
        if let Some(d) = self.domains.get_mut(name) {
            if !d.in_runnable && !d.ready.is_empty() {
                d.in_runnable = true;
                self.runnable.push_back(name.to_owned());
            }
        }
    }

    /// Takes in a new version of a file: drops what is held for it (ready
    /// or deferred) so the caller can queue the new one. Returns false when
    /// the message is in flight: the worker's result will be newer.
    fn refresh(&mut self, msg: &QueuedMessage) -> bool {
        let Some(d) = self.domains.get_mut(&msg.domain) else {
            return true;
        };
        if d.flying.contains(&msg.id) {
            return false;
        }
        d.deferred.remove(&msg.id);
        if d.ready_ids.remove(&msg.id) {
            let before = d.ready.len();
            d.ready.retain(|m| m.id != msg.id);
            self.ready_total -= before - d.ready.len();
        }
        true
    }

    /// The domain's backoff file went away (`postman flush`, or another
    /// postman reached it): it may be tried at once, and so may the messages
    /// that only waited for it.
    fn backoff_cleared(&mut self, domain: &str, now: Instant) {
        let limit = self.initial_connections();
        let Some(d) = self.domains.get_mut(domain) else {
            return;
        };
        if d.failures == 0 && d.suspended_until.is_none() {
            return;
        }
        info!(self.log, "domain backoff lifted"; "domain" => domain);
        d.failures = 0;
        d.suspended_until = None;
        d.limit = limit;
        let wall = SystemTime::now();
        let waiting: Vec<String> = d
            .deferred
            .iter()
            .filter(|(_, (_, m))| m.retry.next_attempt.is_none_or(|at| at <= wall))
            .map(|(id, _)| id.clone())
            .collect();
        let released: Vec<QueuedMessage> = waiting
            .iter()
            .filter_map(|id| d.deferred.remove(id).map(|(_, m)| m))
            .collect();
        for msg in released {
            self.enqueue(msg, now);
        }
    }

    fn forget(&mut self, domain: &str, id: &str) {
        if let Some(d) = self.domains.get_mut(domain) {
            if d.ready_ids.remove(id) {
                let before = d.ready.len();
                d.ready.retain(|m| m.id != id);
                self.ready_total -= before - d.ready.len();
            }
            d.deferred.remove(id);
        }
    }

    /// Opens connections, one per domain per turn, while there is room.
    fn pump(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        if let Some(until) = self.paused_until {
            if until > now {
                return;
            }
            self.paused_until = None;
        }
        self.make_room();
        let mut turns = self.runnable.len();
        while turns > 0 && self.connections < self.config.max_connections {
            turns -= 1;
            let Some(name) = self.runnable.pop_front() else {
                break;
            };
            let Some(d) = self.domains.get_mut(&name) else {
                continue;
            };
            d.in_runnable = false;
            if d.ready.is_empty() || d.connections >= d.limit {
                continue;
            }
            match &d.route {
                RouteState::Known { until, .. } | RouteState::Failed { until, .. }
                    if *until <= now =>
                {
                    d.route = RouteState::Unknown;
                }
                _ => {}
            }
            match &d.route {
                RouteState::Resolving => {}
                RouteState::Unknown => self.lookup(&name),
                RouteState::Failed { error, .. } => {
                    let error = error.clone();
                    self.route_failed(&name, &error, now);
                }
                RouteState::Known { route, .. } => {
                    let route = route.clone();
                    let Some(job) = d.take_ready() else {
                        continue;
                    };
                    d.flying.insert(job.id.clone());
                    d.connections += 1;
                    let more = !d.ready.is_empty() && d.connections < d.limit;
                    self.ready_total -= 1;
                    self.open(&name, route, job);
                    if more {
                        self.make_runnable(&name);
                        turns += 1;
                    }
                }
            }
        }
    }

    fn open(&mut self, domain: &str, route: Route, job: QueuedMessage) {
        let worker = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.connections)
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.connections += 1;
        self.in_flight += 1;
        self.stats.connections_opened += 1;
        if let Some(link) = self.workers.get_mut(worker) {
            link.connections += 1;
        }
        self.send_worker(
            worker,
            WorkerMsg::Open {
                domain: domain.to_owned(),
                route,
                job: Box::new(job),
            },
        );
    }

    fn send_worker(&mut self, worker: usize, msg: WorkerMsg) {
        match self.workers.get_mut(worker) {
            Some(link) => link.send(msg),
            None => error!(self.log, "no such worker"; "worker" => worker),
        }
    }

    /// The next message for a connection that asked for more of its domain.
    fn next_for(&mut self, domain: &str, now: Instant) -> Option<QueuedMessage> {
        if self.shutting_down {
            return None;
        }
        // Short of descriptors: an idle connection closes rather than
        // take a message now (see `pause_for_local_limit`).
        if self.paused_until.is_some_and(|until| until > now) {
            return None;
        }
        let d = self.domains.get_mut(domain)?;
        if d.suspended_until.is_some_and(|until| until > now) {
            return None;
        }
        let job = d.take_ready()?;
        d.flying.insert(job.id.clone());
        self.ready_total -= 1;
        self.in_flight += 1;
        Some(job)
    }

    fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((due, _, _))| *due)
    }

    fn release_due(&mut self, now: Instant) {
        while let Some(Reverse((due, _, _))) = self.timers.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, domain, id))) = self.timers.pop() else {
                break;
            };
            let Some(d) = self.domains.get_mut(&domain) else {
                continue;
            };
            if d.deferred.get(&id).is_some_and(|(at, _)| *at == due) {
                if let Some((_, msg)) = d.deferred.remove(&id) {
                    if d.suspended_until.is_some_and(|until| until <= now) {
                        d.suspended_until = None;
                    }
                    self.enqueue(msg, now);
                }
            }
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.release_all_parked(None);
        let _ = self.scanner.try_send(ScannerMsg::Shutdown);
        // Closing the resolver's mailbox ends its thread once lookups finish.
        self.resolver = None;
        for worker in 0..self.workers.len() {
            self.send_worker(worker, WorkerMsg::Shutdown);
        }
    }

    fn metrics(&self) {
        // The logger cannot time itself: its counts are reported here,
        // under its own actor name. A full mailbox makes writers wait, so
        // records are dropped only when the output fails for long.
        info!(self.log_control.log, "metrics";
            "records" => self.log_control.records.load(Ordering::Relaxed),
            "dropped" => self.log_control.dropped.load(Ordering::Relaxed));
        let deferred: usize = self.domains.values().map(|d| d.deferred.len()).sum();
        info!(self.log, "metrics";
            "domains" => self.domains.len(),
            "ready" => self.ready_total,
            "deferred" => deferred,
            "in_flight" => self.in_flight,
            "connections" => self.connections,
            "idle_connections" => self.parked.len(),
            "lookups_in_flight" => self.lookups,
            "mailbox" => self.inbox.len(),
            "found" => self.stats.found,
            "not_due" => self.stats.not_due,
            "finished" => self.stats.finished,
            "deferrals" => self.stats.deferred,
            "connections_opened" => self.stats.connections_opened,
            "dns_lookups" => self.stats.lookups,
            "dns_failures" => self.stats.lookup_failures,
            "local_limits" => self.stats.local_limits,
            "concurrency_cuts" => self.stats.concurrency_cuts,
        );
    }
}
