//! Carrying out the scheduler's actions, and the inputs that need the
//! disk or the settings first (routes with their site, backoffs on disk,
//! local shortages).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::TrySendError;
use postman::queue::{self, DomainBackoff, SiteBackoff};
use postman::route::{Route, RouteError, SiteName};
use postman::routing::split_route_key;
use postman::schedule::{Action, Event, SiteId, SiteSpec};
use slog::{error, info, warn, Logger};

use super::{site_rule, site_shape, Dispatcher};
use crate::messages::{PutOff, QueuedMessage, WorkerMsg};
use crate::resolver::ResolveRequest;

impl Dispatcher {
    /// Carries out what the scheduler decided, until it has nothing more.
    pub(super) fn carry_out(&mut self, now: Instant) {
        while let Some(action) = self.sched.poll_action() {
            match action {
                Action::Lookup { domain } => self.lookup(domain, now),
                Action::Open {
                    site,
                    route,
                    job,
                    max_messages,
                } => self.open(site, route, job, max_messages),
                Action::Next { conn, job } => self.send_worker(
                    conn.worker,
                    WorkerMsg::Next {
                        conn: conn.conn,
                        job: job.map(Box::new),
                    },
                ),
                Action::Defer { msg, until, reason } => self.defer_logged(msg, until, &reason),
                Action::Bounce { msg, error } => self.bounce(msg, &error),
                Action::SaveSiteBackoff {
                    site,
                    failures,
                    wait,
                    error,
                } => self.save_site_backoff(site, failures, wait, error),
                Action::ClearSiteBackoff { site } => {
                    if let Err(e) = queue::clear_site_backoff(&self.settler.queue, &site) {
                        warn!(self.log, "cannot remove the site backoff file"; "site" => &site,
                            "error" => %e);
                    }
                }
                Action::SaveDomainBackoff {
                    domain,
                    failures,
                    wait,
                    error,
                } => self.save_domain_backoff(&domain, failures, wait, error),
                // A sender rule's route is not the domain's: its backoff
                // is not the domain's file either.
                Action::ClearDomainBackoff { domain } if split_route_key(&domain).1.is_some() => {}
                Action::ClearDomainBackoff { domain } => {
                    if let Err(e) = queue::clear_backoff(&self.settler.queue, &domain) {
                        warn!(self.log, "cannot remove the domain backoff file";
                            "domain" => &domain, "error" => %e);
                    }
                }
                Action::Log(event) => {
                    if matches!(event, Event::ConcurrencyCut { .. }) {
                        self.stats.concurrency_cuts += 1;
                    }
                    log_event(&self.log, &event, now);
                    if let Event::BackingOff { site, .. } = &event {
                        self.reassert_site(site, now);
                    }
                }
            }
        }
    }

    /// A new connection for `site`, on the worker with the fewest.
    fn open(&mut self, site: SiteId, route: Route, job: QueuedMessage, max_messages: usize) {
        let worker = self
            .workers
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.connections)
            .map_or(0, |(i, _)| i);
        self.stats.connections_opened += 1;
        if let Some(link) = self.workers.get_mut(worker) {
            link.connections += 1;
        }
        let hosts = self.sched.site(site).map_or(&[][..], |s| &s.hosts[..]);
        let shape = Arc::new(site_rule(&self.config, hosts));
        let site_name: Arc<str> = self.sched.site(site).map_or("", |s| s.name.as_str()).into();
        self.send_worker(
            worker,
            WorkerMsg::Open {
                site,
                route,
                job: Box::new(job),
                max_messages,
                shape,
                site_name,
            },
        );
    }

    fn save_domain_backoff(&mut self, domain: &str, failures: u32, wait: Duration, error: String) {
        if split_route_key(domain).1.is_some() {
            return;
        }
        let backoff = DomainBackoff {
            until: SystemTime::now() + wait,
            failures,
            error,
        };
        if let Err(e) = queue::write_backoff(&self.settler.queue, domain, &backoff) {
            warn!(self.log, "cannot record the domain backoff on disk";
                "domain" => domain, "error" => %e);
        }
    }

    fn lookup(&mut self, key: String, now: Instant) {
        let Some(resolver) = &self.resolver else {
            // Stopping: the lookup is never answered, and nothing waits for it.
            self.sched.lookup_put_off(&key, now);
            return;
        };
        let (domain, rule) = split_route_key(&key);
        let request = ResolveRequest {
            decision: self.config.routing.decide_for(domain, rule.as_ref()),
            domain: domain.to_owned(),
            key,
            max_hosts: self.config.max_mx_addresses,
        };
        match resolver.try_send(request) {
            Ok(()) => self.stats.lookups += 1,
            // The mailbox holds MAX_LOOKUPS, the scheduler's limit: full
            // only if the resolver is stuck. Asked again after a pause.
            Err(TrySendError::Full(request)) => {
                self.sched.lookup_put_off(&request.key, now);
            }
            Err(TrySendError::Disconnected(_)) => error!(self.log, "resolver is gone"),
        }
    }

    /// A route lookup finished. The site's key is the MX host names, and
    /// for MX delivery what its transport security adds
    /// ([`postman::tls::site_suffix`]): a connection carries mail of every
    /// domain of its site, so domains whose TLS policies differ never
    /// share one.
    pub(super) fn resolved(
        &mut self,
        domain: String,
        route: Result<Route, RouteError>,
        site: SiteName,
        until: Instant,
        now: Instant,
    ) {
        let route = match route {
            Ok(route) => route,
            Err(error) => {
                self.stats.lookup_failures += 1;
                self.sched.resolved(&domain, Err(error), until, now);
                self.reassert_domain(&domain, now);
                return;
            }
        };
        let mut name = site.name;
        let (recipients, rule) = split_route_key(&domain);
        let by_mx = self
            .config
            .routing
            .decide_for(recipients, rule.as_ref())
            .hop
            .next_hop
            .is_none();
        if by_mx {
            // A relay's connections are the relay's, whatever the domain.
            let recipients = recipients.to_ascii_lowercase();
            name.push_str(&postman::tls::site_suffix(
                self.config.level_for(&recipients),
                self.config.tls_mode,
                self.config.tls_discovery,
                &recipients,
                &route,
            ));
        }
        let persisted = if self.sched.site_id(&name).is_none() {
            self.read_site_backoff(&name)
        } else {
            None
        };
        let new_site = self.sched.site_id(&name).is_none().then(|| name.clone());
        let spec = SiteSpec {
            shape: site_shape(&self.config, &site.hosts),
            name,
            hosts: site.hosts,
            persisted,
        };
        self.sched.resolved(&domain, Ok((route, spec)), until, now);
        self.operator_resolved(&domain, new_site.as_deref(), now);
    }

    /// The backoff an earlier run left for a site seen for the first time.
    fn read_site_backoff(&self, site: &str) -> Option<(u32, Option<std::time::Duration>, String)> {
        let longest = self.settler.schedule.max.max(self.settler.schedule.min);
        match queue::read_site_backoff(&self.settler.queue, site) {
            Ok(Some(found)) if found.site == site => {
                let left = found.backoff.remaining(SystemTime::now(), longest);
                if let Some(left) = left {
                    info!(self.log, "site still backing off from an earlier run"; "site" => site,
                        "seconds" => left.as_secs(), "failures" => found.backoff.failures,
                        "error" => &found.backoff.error);
                }
                Some((found.backoff.failures, left, found.backoff.error))
            }
            Ok(_) => None,
            Err(e) => {
                warn!(self.log, "ignoring an unreadable site backoff file"; "site" => site,
                    "error" => %e);
                None
            }
        }
    }

    fn save_site_backoff(
        &mut self,
        site: String,
        failures: u32,
        wait: std::time::Duration,
        error: String,
    ) {
        let domains = self
            .sched
            .site_id(&site)
            .map(|id| self.sched.domains_of(id))
            .unwrap_or_default();
        let record = SiteBackoff {
            site,
            backoff: DomainBackoff {
                until: SystemTime::now() + wait,
                failures,
                error,
            },
            domains,
        };
        if let Err(e) = queue::write_site_backoff(&self.settler.queue, &record) {
            warn!(self.log, "cannot record the site backoff on disk"; "site" => &record.site,
                "error" => %e);
        }
    }

    /// A domain seen for the first time: the route backoff an earlier run
    /// left on disk holds it.
    pub(super) fn restore_domain_backoff(&mut self, domain: &str, now: Instant) {
        let longest = self.settler.schedule.max.max(self.settler.schedule.min);
        match queue::read_backoff(&self.settler.queue, domain) {
            Ok(Some(backoff)) => {
                let left = backoff.remaining(SystemTime::now(), longest);
                if let Some(left) = left {
                    info!(self.log, "domain still backing off from an earlier run"; "domain" => domain,
                        "seconds" => left.as_secs(), "failures" => backoff.failures,
                        "error" => &backoff.error);
                }
                self.sched
                    .restore_domain(domain, backoff.failures, left, &backoff.error, now);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(self.log, "ignoring an unreadable domain backoff file"; "domain" => domain,
                    "error" => %e)
            }
        }
    }

    /// The domain's backoff file went away (`postman flush`, or another
    /// postman reached it): the domain and its site may be tried at once,
    /// and so may the messages of the site's domains that only waited for
    /// them (their files say they are due).
    pub(super) fn backoff_cleared(&mut self, domain: &str, now: Instant) {
        let mut domains = vec![domain.to_owned()];
        for key in self.keys_of(domain) {
            if self.sched.lift_domain(&key) {
                info!(self.log, "domain backoff lifted"; "domain" => &key);
            }
        }
        self.reassert_domain(domain, now);
        if let Some(site) = self.sched.site_of(domain, now) {
            if self.sched.lift_site(site, now) {
                let name = self
                    .sched
                    .site(site)
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                info!(self.log, "site backoff lifted"; "site" => &name, "domain" => domain);
                if let Err(e) = queue::clear_site_backoff(&self.settler.queue, &name) {
                    warn!(self.log, "cannot remove the site backoff file"; "site" => &name,
                        "error" => %e);
                }
                domains = self.sched.domains_of(site);
            }
        }
        self.release_due(domains, now);
    }

    /// Work was put off for a shortage of this process's own: one warning
    /// per pause for each kind of work put off (a connection's warning
    /// does not hide that route lookups are short too), and the metrics'
    /// `local_limits` counts every put-off.
    pub(super) fn warn_local_limit(
        &mut self,
        began: bool,
        what: PutOff,
        domain: &str,
        queue_id: Option<&str>,
        reason: &str,
    ) {
        self.stats.local_limits += 1;
        if began {
            self.warned_in_pause.clear();
        }
        if self.warned_in_pause.contains(&what) {
            return;
        }
        self.warned_in_pause.push(what);
        let (limit, hint) = if what.is_disk_space() {
            ("disk space", "free space in the queue's file system")
        } else {
            ("descriptor", "if this persists, raise the descriptor limit (ulimit -n) or lower delivery.max_connections")
        };
        warn!(self.log, "local {} limit: {} put off, nothing deferred", limit, what.describe();
            "domain" => domain, "queue_id" => queue_id, "reason" => reason,
            "connections" => self.sched.totals().connections,
            "put_off_in_all" => self.stats.local_limits,
            "retry_in_ms" => postman::schedule::LOCAL_LIMIT_PAUSE.as_millis() as u64,
            "hint" => hint);
    }
}

/// One log line for a change of a site, at info: what operators grep for.
fn log_event(log: &Logger, event: &Event, now: Instant) {
    match event {
        Event::Throttled { site, limit, reply } => {
            info!(log, "site throttled"; "site" => site, "limit" => limit, "reply" => reply)
        }
        Event::Suspended {
            site,
            until,
            reason,
        } => info!(log, "site suspended"; "site" => site,
            "until_seconds" => until.saturating_duration_since(now).as_secs(), "reason" => reason),
        Event::BackingOff {
            site,
            wait,
            failures,
            error,
        } => info!(log, "site backing off"; "site" => site, "seconds" => wait.as_secs(),
            "failures" => failures, "error" => error),
        Event::BackoffLifted { site } => info!(log, "site backoff lifted"; "site" => site),
        Event::ConcurrencyCut {
            site,
            connections,
            error,
        } => {
            info!(log, "connection failed while others to the site are open: fewer connections, the message waits for them";
            "site" => site, "connections" => connections, "reason" => error)
        }
    }
}
