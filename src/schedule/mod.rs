//! The delivery scheduler, sans-IO: which message goes out over which
//! connection, when. The dispatcher actor feeds it what happens (a message
//! found, a route resolved, a connection that wants more, failed or closed)
//! with the time, and carries out the [`Action`]s it hands back; the
//! scheduler never reads a clock, a file or a socket.
//!
//! Two kinds of state. A **domain** keeps its queue (ready, out, waiting
//! for a time), its route and the backoff of a route that failed for now.
//! A **site** is where connections go: the domains whose MX host names are
//! the same share one (`route::site_name`), and everything about
//! connections belongs to it: the concurrency limit with slow start and
//! feedback, the pace of messages and connections, the backoff when no
//! server could be reached, suspension after throttling, and the
//! connections waiting for more mail (parked). A connection opened for one
//! domain carries the next ready message of any domain of its site.
//!
//! Fairness: sites with ready mail take turns, one new connection each per
//! turn, so a site with 10,000 messages gets its connections while a site
//! with one message is served at once; within a site, its domains take
//! turns for each message, and no domain has more than
//! `max_connections_per_domain` messages out at once.
//!
//! Call order: inputs as they happen ([`Scheduler::found`],
//! [`Scheduler::resolved`], [`Scheduler::want_more`], …), then
//! [`Scheduler::tick`] with the time, then drain [`Scheduler::poll_action`]
//! and sleep until [`Scheduler::poll_timeout`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::retry::Schedule;
use crate::route::{Route, RouteError};

mod domain;
mod site;
#[cfg(test)]
mod tests;

pub use domain::{Queued, RouteState};
pub use site::{
    Hold, Pace, Shape, Site, FIRST_THROTTLE_PAUSE, MAX_SLOWDOWN, PACE_WINDOW,
    RATE_RECOVERY_ANSWERS, SLOWDOWN_EVERY, THROTTLE_CEILING_TIME,
};

use domain::Domain;

/// How long no new connection is opened, and no open one gets a new
/// message, after work could not get a descriptor or buffer for a local
/// reason. Connections that close in the meantime free what was missing;
/// long enough not to spin on a shortage that lasts, short beside any
/// retry delay.
pub const LOCAL_LIMIT_PAUSE: Duration = Duration::from_millis(500);

/// How long a message put off for want of disk space waits: the disk fills
/// and empties slower than descriptors come and go, and each try claims
/// the file and writes a reservation.
pub const DISK_SPACE_WAIT: Duration = Duration::from_secs(30);

/// How often domains and sites with nothing to do are forgotten, so that a
/// daemon that has sent to a million domains over a year does not keep
/// them all. A domain is kept while its route is cached, a site while a
/// domain's route leads to it or it still holds something learned (a
/// backoff, a suspension, a throttle's ceiling).
pub const FORGET_EVERY: Duration = Duration::from_secs(60);

/// A site, by its id in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId(pub u32);

/// The process-wide limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections at once, all sites together.
    pub max_connections: usize,
    /// Messages of one domain out at once.
    pub max_connections_per_domain: usize,
    /// Route lookups in flight at once.
    pub max_lookups: usize,
    /// The backoff after failed rounds (`Schedule::backoff`).
    pub schedule: Schedule,
    /// Keep deferred messages for their time (a daemon); `false` (`--once`)
    /// leaves them on disk for the next run.
    pub keep_deferred: bool,
}

/// A site as a route lookup found it.
#[derive(Debug, Clone)]
pub struct SiteSpec {
    /// `route::site_name` (plus whatever the caller keeps apart).
    pub name: String,
    /// Its MX host names.
    pub hosts: Vec<String>,
    /// Its limits.
    pub shape: Shape,
    /// The backoff an earlier run left on disk, read only for a new site:
    /// failures so far, and how much of it is left at `now`.
    pub persisted: Option<(u32, Option<Duration>, String)>,
}

/// Why a connection failed on every address.
#[derive(Debug, Clone)]
pub struct ConnectFailure {
    /// Why, for logs and deferral records.
    pub error: String,
    /// The server throttled this client (`smtp::throttle`): its reply.
    pub throttle: Option<String>,
    /// Every address looped back to this host.
    pub loops: bool,
}

/// What a connection that failed on every address leaves the caller to do.
#[derive(Debug)]
pub enum AfterFailure<M> {
    /// The message went back to its queue untried (others to the site are
    /// open, or the site throttled).
    Untried,
    /// A failed attempt: the caller records it on the message (deferred,
    /// due no earlier than `until`, or bounced when expired). The site is
    /// backing off.
    Failed { msg: M, until: Instant },
}

/// A change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Throttled {
        site: String,
        limit: usize,
        reply: String,
    },
    Suspended {
        site: String,
        until: Instant,
        reason: String,
    },
    BackingOff {
        site: String,
        wait: Duration,
        failures: u32,
        error: String,
    },
    BackoffLifted {
        site: String,
    },
    /// A connection failed while others to the site were open: fewer.
    ConcurrencyCut {
        site: String,
        connections: usize,
        error: String,
    },
}

/// What the caller carries out.
#[derive(Debug)]
pub enum Action<M, C> {
    /// Look the domain's route up, then call [`Scheduler::resolved`].
    Lookup { domain: String },
    /// Open a connection to `site` over `route` with `job` as its first
    /// message, saying goodbye after `max_messages`.
    Open {
        site: SiteId,
        route: Route,
        job: M,
        max_messages: usize,
    },
    /// The answer to a connection waiting for more: a message, or goodbye.
    Next { conn: C, job: Option<M> },
    /// Not tried now: its domain or site waits until `until`. The caller
    /// writes a deferral record (or bounces it when its lifetime is over)
    /// and hands it back with [`Scheduler::defer`].
    Defer {
        msg: M,
        until: Instant,
        reason: String,
    },
    /// The domain's route failed for good: bounce.
    Bounce { msg: M, error: RouteError },
    /// Record a site's backoff on disk (so a restart keeps it).
    SaveSiteBackoff {
        site: String,
        failures: u32,
        wait: Duration,
        error: String,
    },
    /// The site's backoff is over: remove the record.
    ClearSiteBackoff { site: String },
    /// Record a domain's route backoff on disk.
    SaveDomainBackoff {
        domain: String,
        failures: u32,
        wait: Duration,
        error: String,
    },
    /// The domain's route backoff is over: remove the record.
    ClearDomainBackoff { domain: String },
    /// Log this.
    Log(Event),
}

struct SiteEntry {
    site: Site,
    /// Its domains with ready mail, in turn order.
    turns: VecDeque<String>,
    in_runnable: bool,
}

struct Parked<C> {
    conn: C,
    site: SiteId,
    until: Instant,
}

/// Totals for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub domains: usize,
    pub sites: usize,
    pub ready: usize,
    pub deferred: usize,
    pub in_flight: usize,
    pub connections: usize,
    pub parked: usize,
    pub lookups: usize,
}

/// See the module documentation.
pub struct Scheduler<M, C> {
    limits: Limits,
    domains: HashMap<String, Domain<M>>,
    /// By id; an id is never given twice, so one a message still carries
    /// after its site was forgotten finds nothing.
    sites: HashMap<SiteId, SiteEntry>,
    site_ids: HashMap<String, SiteId>,
    next_site: u32,
    /// When idle domains and sites are next forgotten ([`FORGET_EVERY`]).
    next_forget: Option<Instant>,
    runnable: VecDeque<SiteId>,
    lookups_wanted: VecDeque<String>,
    /// Messages waiting for a time: (due, domain, id). An entry whose
    /// message is gone or was rescheduled is skipped when it fires.
    timers: BinaryHeap<Reverse<(Instant, String, String)>>,
    /// Sites waiting for their pace: (when, site).
    paced: BinaryHeap<Reverse<(Instant, SiteId)>>,
    /// Connections waiting for more, the first to give up first.
    parked: VecDeque<Parked<C>>,
    actions: VecDeque<Action<M, C>>,
    connections: usize,
    in_flight: usize,
    ready_total: usize,
    lookups: usize,
    paused_until: Option<Instant>,
    shutting_down: bool,
}

mod conns;
mod flow;
mod report;

impl<M: Queued, C: Copy + Eq> Scheduler<M, C> {
    pub fn new(limits: Limits) -> Scheduler<M, C> {
        Scheduler {
            limits,
            domains: HashMap::new(),
            sites: HashMap::new(),
            site_ids: HashMap::new(),
            next_site: 0,
            next_forget: None,
            runnable: VecDeque::new(),
            lookups_wanted: VecDeque::new(),
            timers: BinaryHeap::new(),
            paced: BinaryHeap::new(),
            parked: VecDeque::new(),
            actions: VecDeque::new(),
            connections: 0,
            in_flight: 0,
            ready_total: 0,
            lookups: 0,
            paused_until: None,
            shutting_down: false,
        }
    }

    /// The next thing to carry out.
    pub fn poll_action(&mut self) -> Option<Action<M, C>> {
        self.actions.pop_front()
    }

    /// When [`Scheduler::tick`] has something to do next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.timers.peek().map(|Reverse((at, _, _))| *at),
            self.paced.peek().map(|Reverse((at, _))| *at),
            self.parked.front().map(|p| p.until),
            self.paused_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Nothing ready, out or being looked up (`--once` is done when the
    /// scan is, too).
    pub fn idle(&self) -> bool {
        self.in_flight == 0 && self.ready_total == 0 && self.lookups == 0
    }

    pub fn totals(&self) -> Totals {
        Totals {
            domains: self.domains.len(),
            sites: self.sites.len(),
            ready: self.ready_total,
            deferred: self.domains.values().map(|d| d.deferred.len()).sum(),
            in_flight: self.in_flight,
            connections: self.connections,
            parked: self.parked.len(),
            lookups: self.lookups,
        }
    }

    /// A site by id.
    pub fn site(&self, id: SiteId) -> Option<&Site> {
        self.sites.get(&id).map(|entry| &entry.site)
    }

    /// A site's id by name.
    pub fn site_id(&self, name: &str) -> Option<SiteId> {
        self.site_ids.get(name).copied()
    }

    /// Every site with its ready messages and domains with ready mail.
    pub fn sites(&self) -> impl Iterator<Item = (&Site, usize, usize)> + '_ {
        self.sites.values().map(|entry| {
            let ready = entry
                .turns
                .iter()
                .filter_map(|name| self.domains.get(name))
                .map(|d| d.ready.len())
                .sum();
            (&entry.site, ready, entry.turns.len())
        })
    }

    /// The site a domain's valid route leads to.
    pub fn site_of(&self, domain: &str, now: Instant) -> Option<SiteId> {
        self.domains.get(domain)?.site(now)
    }

    /// New process-wide limits (a reload).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// New site limits (a reload): `shape` maps a site's host names to its
    /// shape. Waiting connections wait no longer than their new cache time.
    pub fn reshape(&mut self, shape: impl Fn(&[String]) -> Shape, now: Instant) {
        for entry in self.sites.values_mut() {
            let new = shape(&entry.site.hosts);
            entry.site.reshape(new);
        }
        for parked in &mut self.parked {
            if let Some(entry) = self.sites.get(&parked.site) {
                let latest = now + entry.site.shape.connection_cache_time;
                parked.until = parked.until.min(latest);
            }
        }
        self.parked.make_contiguous().sort_by_key(|p| p.until);
        for id in self.site_ids_in_order() {
            self.make_runnable(id);
        }
    }

    /// postman is stopping: no new work, waiting connections say goodbye.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
        self.release_parked(|_| true);
    }

    /// Time passed: messages due again come back, waiting connections
    /// that waited long enough say goodbye, sites whose pace allows it take
    /// their turn, and connections open while there is room.
    pub fn tick(&mut self, now: Instant) {
        self.release_due(now);
        while self.paced.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            if let Some(Reverse((_, site))) = self.paced.pop() {
                self.serve_parked(site, now);
                self.make_runnable(site);
            }
        }
        while self.parked.front().is_some_and(|p| p.until <= now) {
            if let Some(parked) = self.take_parked(0) {
                self.actions.push_back(Action::Next {
                    conn: parked.conn,
                    job: None,
                });
            }
        }
        if self.next_forget.is_none_or(|at| at <= now) {
            self.forget_idle(now);
            self.next_forget = Some(now + FORGET_EVERY);
        }
        self.pump(now);
    }

    /// Drops the domains and sites that have nothing to do and nothing
    /// worth remembering at `now`.
    fn forget_idle(&mut self, now: Instant) {
        self.domains.retain(|_, d| !d.idle(now));
        let used: std::collections::HashSet<SiteId> = self
            .domains
            .values()
            .filter_map(|d| d.site(now))
            .chain(self.parked.iter().map(|p| p.site))
            .collect();
        let site_ids = &mut self.site_ids;
        self.sites.retain(|id, entry| {
            let keep = used.contains(id)
                || entry.in_runnable
                || !entry.turns.is_empty()
                || !entry.site.idle(now);
            if !keep {
                site_ids.remove(&entry.site.name);
            }
            keep
        });
    }

    /// Site ids, oldest first (for a reproducible order).
    fn site_ids_in_order(&self) -> Vec<SiteId> {
        let mut ids: Vec<SiteId> = self.sites.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    fn entry(&mut self, id: SiteId) -> Option<&mut SiteEntry> {
        self.sites.get_mut(&id)
    }

    fn domain(&mut self, name: &str) -> &mut Domain<M> {
        self.domains
            .entry(name.to_owned())
            .or_insert_with(Domain::new)
    }

    fn make_runnable(&mut self, id: SiteId) {
        if let Some(entry) = self.sites.get_mut(&id) {
            if !entry.in_runnable && !entry.turns.is_empty() {
                entry.in_runnable = true;
                self.runnable.push_back(id);
            }
        }
    }

    fn release_due(&mut self, now: Instant) {
        while self
            .timers
            .peek()
            .is_some_and(|Reverse((due, _, _))| *due <= now)
        {
            let Some(Reverse((due, domain, id))) = self.timers.pop() else {
                break;
            };
            let Some(d) = self.domains.get_mut(&domain) else {
                continue;
            };
            if d.deferred.get(&id).is_some_and(|(at, _)| *at == due) {
                if let Some((_, msg)) = d.deferred.remove(&id) {
                    self.enqueue(msg, now);
                }
            }
        }
    }
}
