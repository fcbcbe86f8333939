//! The Dispatcher actor: carries out the scheduler's decisions
//! ([`postman::schedule`]: which site gets a connection, which message rides
//! on it, what waits) with its mailboxes and timers. It owns the route
//! lookups' requests, the workers' links and the settling of what never
//! reached a worker (a route that failed, a site that backs off, an
//! expired message).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender};
use postman::config::{Config, SiteShape};
use postman::queue::Queue;
use postman::routing::route_key;
use postman::schedule::{Limits, Scheduler, Shape, SiteId};
use slog::{error, info, Logger};

use crate::logging::LogControl;
use crate::mailbox::Inbox;
use crate::messages::{
    ConnId, DispatcherMsg, Disposition, PutOff, QueuedMessage, ScannerMsg, WorkerMsg,
};
use crate::resolver::ResolveRequest;
use crate::settler::{self, Settler};
use crate::worker::WorkerLink;

mod actions;
mod control;
mod failures;
pub(crate) mod policy;
mod status;

/// Route lookups in flight at once. The resolver's mailbox holds this many,
/// so a `try_send` into it never fails for want of room.
pub const MAX_LOOKUPS: usize = 256;

/// How soon the dispatcher retries handing a message to a worker whose
/// mailbox was full.
const BACKLOG_RETRY: Duration = Duration::from_millis(5);

/// How many sites the metrics name (the busiest by connections).
const METRICS_SITES: usize = 3;

/// A connection, across workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRef {
    pub worker: usize,
    pub conn: ConnId,
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
    sched: Scheduler<QueuedMessage, ConnRef>,
    /// The scheduler's keys of each domain's mail that a sender rule
    /// routes (`routing::route_key`), beside the domain's own: what is said
    /// of the domain (a file gone, its backoff lifted) is said of them too.
    sender_keys: HashMap<String, BTreeSet<String>>,
    /// The kinds of work put off in the current local pause that have had
    /// their warning (one each: connections, queue files, route lookups).
    warned_in_pause: Vec<PutOff>,
    scan_done: bool,
    shutting_down: bool,
    workers_running: usize,
    stats: Stats,
    /// The operator's suspensions, as applied (`control`).
    operator: control::Operator,
    /// The status snapshot for `postman queue summary` (`status`).
    status: status::StatusWriter,
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
    /// Connections that failed while others to their site were open.
    concurrency_cuts: u64,
    throttles: u64,
}

/// The scheduler's process-wide limits from the settings.
fn limits(config: &Config, once: bool) -> Limits {
    Limits {
        max_connections: config.max_connections,
        max_connections_per_domain: config.max_connections_per_domain,
        max_lookups: MAX_LOOKUPS,
        schedule: postman::retry::Schedule::from_config(config),
        keep_deferred: !once,
    }
}

/// The shaping rule of a site whose MX hosts are `hosts`
/// (`delivery.site."<suffix>"`, or the defaults).
pub fn site_rule(config: &Config, hosts: &[String]) -> SiteShape {
    let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
    config.sites.shape_for(&hosts)
}

/// The scheduler's limits of a site whose MX hosts are `hosts`.
pub fn site_shape(config: &Config, hosts: &[String]) -> Shape {
    Shape::from(&site_rule(config, hosts))
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
        let sched = Scheduler::new(limits(&config, once));
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
            sched,
            sender_keys: HashMap::new(),
            warned_in_pause: Vec::new(),
            scan_done: false,
            shutting_down: false,
            workers_running,
            stats: Stats::default(),
            operator: control::Operator::default(),
            status: status::StatusWriter::default(),
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
            let mut wake = self
                .sched
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(3600));
            let metrics_every = self.config.metrics_interval;
            if !metrics_every.is_zero() {
                wake = wake.min(next_metrics);
            }
            if self.workers.iter().any(WorkerLink::has_backlog) {
                wake = wake.min(now + BACKLOG_RETRY);
            }
            wake = wake.min(self.status.due(now));
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
            self.sched.tick(now);
            self.carry_out(now);
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
            self.write_status(now, true);
        }
        self.write_status(Instant::now(), false);
        self.metrics();
        info!(self.log, "dispatcher stopped");
    }

    /// `--once` is done when the scan is complete and nothing is ready, in
    /// flight or waiting for DNS. Deferred messages wait for the next run.
    fn idle(&self) -> bool {
        self.scan_done && self.sched.idle()
    }

    fn handle(&mut self, msg: DispatcherMsg) {
        let now = Instant::now();
        match msg {
            DispatcherMsg::Found(msg) => self.found(*msg, now),
            DispatcherMsg::Gone { domain, id } => {
                for key in self.keys_of(&domain) {
                    self.sched.forget(&key, &id);
                }
            }
            DispatcherMsg::BackoffCleared { domain } => self.backoff_cleared(&domain, now),
            DispatcherMsg::Suspensions(set) => self.suspensions(set, now),
            DispatcherMsg::SiteBackoffCleared { file } => self.site_backoff_cleared(&file, now),
            DispatcherMsg::ScanDone => self.scan_done = true,
            DispatcherMsg::Resolved {
                domain,
                route,
                site,
                valid_until,
            } => self.resolved(domain, route, site, valid_until, now),
            DispatcherMsg::Established { site } => self.sched.established(site, now),
            DispatcherMsg::Done {
                domain,
                id,
                disposition,
                answered,
                throttle,
            } => self.done(&domain, &id, disposition, answered, throttle, now),
            DispatcherMsg::WantMore {
                worker,
                conn,
                site,
                held,
            } => self
                .sched
                .want_more(ConnRef { worker, conn }, site, held.as_deref(), now),
            DispatcherMsg::NotTaken(job) => self.sched.not_taken(*job, now),
            DispatcherMsg::ConnectFailed { job, failure, .. } => {
                self.connect_failed(*job, failure, now)
            }
            DispatcherMsg::LocalLimit {
                domain,
                job,
                what,
                reason,
            } => self.local_limit(&domain, *job, what, &reason, now),
            DispatcherMsg::LookupPutOff { domain, reason } => {
                let began = self.sched.lookup_put_off(&domain, now);
                self.warn_local_limit(began, PutOff::RouteLookup, &domain, None, &reason);
            }
            DispatcherMsg::Closed {
                worker,
                conn,
                site,
                held,
                proved,
            } => self.closed(ConnRef { worker, conn }, site, held.as_deref(), proved),
            DispatcherMsg::WorkerStopped { worker } => self.worker_stopped(worker),
            DispatcherMsg::Shutdown => self.shutdown_asked(),
            DispatcherMsg::Reload(config) => self.reload(*config, now),
        }
    }

    /// A message came back from its attempt (`throttle`: the server's
    /// throttle reply, if it gave one).
    fn done(
        &mut self,
        domain: &str,
        id: &str,
        disposition: Disposition,
        answered: bool,
        throttle: Option<String>,
        now: Instant,
    ) {
        if throttle.is_some() {
            self.stats.throttles += 1;
        }
        self.sched
            .returned(domain, id, answered, throttle.as_deref(), now);
        self.settled(disposition, now);
    }

    /// A worker could not take a message for want of a local resource.
    fn local_limit(
        &mut self,
        domain: &str,
        job: QueuedMessage,
        what: PutOff,
        reason: &str,
        now: Instant,
    ) {
        let id = job.id.clone();
        let began = self.sched.put_off(job, what.is_disk_space(), now);
        self.warn_local_limit(began, what, domain, Some(&id), reason);
    }

    fn worker_stopped(&mut self, worker: usize) {
        info!(self.log, "worker stopped"; "worker" => worker);
        self.workers_running = self.workers_running.saturating_sub(1);
    }

    /// SIGINT or SIGTERM; another one while stopping changes nothing.
    fn shutdown_asked(&mut self) {
        if !self.shutting_down {
            info!(self.log, "shutting down"; "in_flight" => self.sched.totals().in_flight);
            self.begin_shutdown();
        }
    }

    fn closed(&mut self, conn: ConnRef, site: SiteId, held: Option<&str>, proved: bool) {
        let worker = conn.worker;
        self.sched.closed(conn, site, held, proved);
        if let Some(link) = self.workers.get_mut(worker) {
            link.connections = link.connections.saturating_sub(1);
        }
    }

    /// The scanner found a message (or a new version): ready now, or at the
    /// time its file says. A domain seen for the first time takes the
    /// route backoff an earlier run left on disk.
    fn found(&mut self, mut msg: QueuedMessage, now: Instant) {
        self.stats.found += 1;
        if !self.config.routing.sender_relayhost.is_empty() {
            let decision = self
                .config
                .routing
                .decide(&msg.envelope.sender, &msg.domain);
            if let Some(rule) = decision.sender_rule {
                let key = route_key(&msg.domain, Some(&rule));
                let keys = self.sender_keys.entry(msg.domain.clone()).or_default();
                keys.insert(key.clone());
                msg.route_key = Some(key);
            }
        }
        if !self.sched.knows(msg.route_key()) {
            self.restore_domain_backoff(&msg.domain, now);
        }
        let due = if msg
            .retry
            .next_attempt
            .is_some_and(|at| at > SystemTime::now())
        {
            // Deferred earlier (perhaps by an earlier run): not due.
            self.stats.not_due += 1;
            Some(settler::due(&msg.retry, self.config.retry_delay))
        } else {
            None
        };
        self.sched.found(msg, due, now);
    }

    /// The scheduler's keys of `domain`'s mail: the domain, and those of
    /// its mail routed by a sender rule.
    pub(super) fn keys_of(&self, domain: &str) -> Vec<String> {
        let mut keys = vec![domain.to_owned()];
        if let Some(more) = self.sender_keys.get(domain) {
            keys.extend(more.iter().cloned());
        }
        keys
    }

    /// New settings from SIGHUP. Limits, site shapes, the retry schedule,
    /// local domains and the metrics interval apply at once; what the
    /// running threads were built with (threads, queue root, DNS servers,
    /// log output, rescan interval) stays until a restart (the signal
    /// thread said which).
    fn reload(&mut self, mut config: Config, now: Instant) {
        config.threads = self.config.threads;
        config.maildir = self.config.maildir.clone();
        config.nameservers = self.config.nameservers.clone();
        config.dns_timeout = self.config.dns_timeout;
        config.dns_attempts = self.config.dns_attempts;
        config.log_format = self.config.log_format;
        config.log_file = self.config.log_file.clone();
        config.rescan_interval = self.config.rescan_interval;
        self.settler.reload(&config);
        self.sched.set_limits(limits(&config, self.once));
        self.sched.reshape(|hosts| site_shape(&config, hosts), now);
        if config.routing != self.config.routing {
            self.sched.expire_routes(now);
        }
        for worker in 0..self.workers.len() {
            self.send_worker(worker, WorkerMsg::Reload(Box::new(config.clone())));
        }
        self.config = config;
    }

    fn send_worker(&mut self, worker: usize, msg: WorkerMsg) {
        match self.workers.get_mut(worker) {
            Some(link) => link.send(msg),
            None => error!(self.log, "no such worker"; "worker" => worker),
        }
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down = true;
        self.sched.shut_down();
        self.carry_out(Instant::now());
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
        let totals = self.sched.totals();
        let mut busiest: Vec<_> = self
            .sched
            .sites()
            .filter(|(site, ready, _)| site.connections > 0 || *ready > 0)
            .collect();
        busiest.sort_by_key(|(site, ready, _)| std::cmp::Reverse((site.connections, *ready)));
        let busiest: Vec<String> = busiest
            .iter()
            .take(METRICS_SITES)
            .map(|(site, ready, _)| {
                format!(
                    "{} ({} connections, limit {}, {} ready)",
                    site.name, site.connections, site.limit, ready
                )
            })
            .collect();
        let held = self
            .sched
            .sites()
            .filter(|(site, _, _)| site.held_until(Instant::now()).is_some())
            .count();
        info!(self.log, "metrics";
            "domains" => totals.domains,
            "sites" => totals.sites,
            "sites_held" => held,
            "busiest_sites" => busiest.join("; "),
            "ready" => totals.ready,
            "deferred" => totals.deferred,
            "in_flight" => totals.in_flight,
            "connections" => totals.connections,
            "idle_connections" => totals.parked,
            "lookups_in_flight" => totals.lookups,
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
            "throttles" => self.stats.throttles,
        );
    }
}
