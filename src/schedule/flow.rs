//! The scheduler's inputs about messages and routes, and the operator's
//! suspensions.

use super::*;

impl<M: Queued, C: Copy + Eq> Scheduler<M, C> {
    // ----- messages -----

    /// The scanner found a message, or a new version of one: it replaces
    /// what is held for it and is ready at `due` (now when `None`).
    /// Returns false, and drops it, when the message is out with a
    /// connection: that attempt's result is newer.
    pub fn found(&mut self, msg: M, due: Option<Instant>, now: Instant) -> bool {
        let d = self.domain(msg.domain());
        if d.flying.contains_key(msg.id()) {
            return false;
        }
        d.deferred.remove(msg.id());
        if d.remove_ready(msg.id()) {
            self.ready_total -= 1;
        }
        match due.filter(|due| *due > now) {
            Some(due) => self.defer(msg, due),
            None => self.enqueue(msg, now),
        }
        true
    }

    /// A message is ready for an attempt now, or as soon as its domain and
    /// site may be tried.
    pub fn enqueue(&mut self, msg: M, now: Instant) {
        if self.shutting_down {
            return;
        }
        let name = msg.domain().to_owned();
        let d = self.domain(&name);
        if let Some((until, why)) = d.held_until(now) {
            let reason = why.to_owned();
            self.actions.push_back(Action::Defer { msg, until, reason });
            return;
        }
        if let RouteState::Failed { error, until } = &d.route {
            if error.is_permanent() && *until > now {
                let error = error.clone();
                self.actions.push_back(Action::Bounce { msg, error });
                return;
            }
        }
        let site = d.site(now);
        if let Some(site) = site {
            if let Some(entry) = self.sites.get(&site) {
                if let Some(until) = entry.site.held_until(now) {
                    let reason = entry.site.hold_reason();
                    self.actions.push_back(Action::Defer { msg, until, reason });
                    return;
                }
            }
        }
        let d = self.domain(&name);
        d.push_ready(msg);
        self.ready_total += 1;
        match site {
            Some(site) => self.join_turns(site, &name, now),
            None => self.want_lookup(&name),
        }
    }

    /// Keeps a message until `until` (a daemon; `--once` leaves it on disk).
    pub fn defer(&mut self, msg: M, until: Instant) {
        if !self.limits.keep_deferred || self.shutting_down {
            return;
        }
        let domain = msg.domain().to_owned();
        let id = msg.id().to_owned();
        self.timers
            .push(Reverse((until, domain.clone(), id.clone())));
        self.domain(&domain).deferred.insert(id, (until, msg));
    }

    /// The file left the queue.
    pub fn forget(&mut self, domain: &str, id: &str) {
        if let Some(d) = self.domains.get_mut(domain) {
            if d.remove_ready(id) {
                self.ready_total -= 1;
            }
            d.deferred.remove(id);
        }
    }

    /// Takes the domain's waiting messages that `pick` chooses (the caller
    /// enqueues those it wants tried now).
    pub fn take_deferred(&mut self, domain: &str, pick: impl Fn(&M) -> bool) -> Vec<M> {
        let Some(d) = self.domains.get_mut(domain) else {
            return Vec::new();
        };
        let ids: Vec<String> = d
            .deferred
            .iter()
            .filter(|(_, (_, m))| pick(m))
            .map(|(id, _)| id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| d.deferred.remove(id).map(|(_, m)| m))
            .collect()
    }

    /// Adds the domain to its site's turns (it has ready mail) and gives
    /// the mail to the site's waiting connections first.
    pub(super) fn join_turns(&mut self, site: SiteId, name: &str, now: Instant) {
        let Some(d) = self.domains.get_mut(name) else {
            return;
        };
        if !d.in_turns {
            d.in_turns = true;
            if let Some(entry) = self.entry(site) {
                entry.turns.push_back(name.to_owned());
            }
        }
        self.serve_parked(site, now);
        self.make_runnable(site);
    }

    pub(super) fn want_lookup(&mut self, name: &str) {
        let d = self.domain(name);
        if matches!(d.route, RouteState::Resolving) || d.lookup_wanted {
            return;
        }
        d.lookup_wanted = true;
        self.lookups_wanted.push_back(name.to_owned());
    }

    // ----- routes -----

    /// A route lookup finished: the route and its site (valid until
    /// `until`), or why there is none.
    pub fn resolved(
        &mut self,
        domain: &str,
        result: Result<(Route, SiteSpec), RouteError>,
        until: Instant,
        now: Instant,
    ) {
        self.lookups = self.lookups.saturating_sub(1);
        match result {
            Ok((route, spec)) => {
                let site = self.site_for(spec, now);
                let d = self.domain(domain);
                d.route = RouteState::Known { route, site, until };
                if d.failures > 0 {
                    d.failures = 0;
                    d.held = None;
                    self.actions.push_back(Action::ClearDomainBackoff {
                        domain: domain.to_owned(),
                    });
                }
                // Its ready mail, through the site's door.
                let ready = self.domain(domain).drain_ready();
                self.ready_total -= ready.len();
                for msg in ready {
                    self.enqueue(msg, now);
                }
            }
            Err(error) => self.route_failed(domain, error, until, now),
        }
    }

    /// A route lookup could not run for want of sockets: the route is
    /// unknown again and is looked up after the pause.
    /// Returns whether a pause began.
    pub fn lookup_put_off(&mut self, domain: &str, now: Instant) -> bool {
        self.lookups = self.lookups.saturating_sub(1);
        self.domain(domain).route = RouteState::Unknown;
        let began = self.pause(now);
        self.want_lookup(domain);
        began
    }

    fn route_failed(&mut self, name: &str, error: RouteError, until: Instant, now: Instant) {
        let schedule = self.limits.schedule;
        let d = self
            .domains
            .entry(name.to_owned())
            .or_insert_with(Domain::new);
        let messages = d.drain_ready();
        self.ready_total -= messages.len();
        if error.is_permanent() {
            d.route = RouteState::Failed {
                error: error.clone(),
                until,
            };
            for msg in messages {
                let error = error.clone();
                self.actions.push_back(Action::Bounce { msg, error });
            }
            return;
        }
        // Looked up again when the messages come due.
        let reason = error.to_string();
        d.route = RouteState::Failed { error, until: now };
        d.failures = d.failures.saturating_add(1);
        let wait = schedule.backoff(d.failures);
        d.held = Some((now + wait, reason.clone()));
        self.actions.push_back(Action::SaveDomainBackoff {
            domain: name.to_owned(),
            failures: d.failures,
            wait,
            error: reason.clone(),
        });
        for msg in messages {
            self.actions.push_back(Action::Defer {
                msg,
                until: now + wait,
                reason: reason.clone(),
            });
        }
    }

    /// The site named in `spec`, made on first sight with the backoff an
    /// earlier run left.
    fn site_for(&mut self, spec: SiteSpec, now: Instant) -> SiteId {
        if let Some(id) = self.site_ids.get(&spec.name) {
            return *id;
        }
        let id = SiteId(self.next_site);
        self.next_site += 1;
        let mut site = Site::new(spec.name.clone(), spec.hosts, spec.shape);
        if let Some((failures, left, error)) = spec.persisted {
            site.failures = failures;
            if let Some(left) = left {
                site.limit = 1;
                site.held = Some((now + left, Hold::Backoff { failures, error }));
            }
        }
        self.site_ids.insert(spec.name, id);
        self.sites.insert(
            id,
            SiteEntry {
                site,
                turns: VecDeque::new(),
                in_runnable: false,
            },
        );
        id
    }

    /// The routing settings changed (SIGHUP): every route is looked up
    /// again before its next message starts, so that a changed relay or
    /// transport entry applies at once rather than when the DNS answer
    /// would have expired. Backoffs and failure counts stay.
    pub fn expire_routes(&mut self, now: Instant) {
        for d in self.domains.values_mut() {
            match &mut d.route {
                RouteState::Known { until, .. } => *until = (*until).min(now),
                RouteState::Failed { .. } => d.route = RouteState::Unknown,
                RouteState::Unknown | RouteState::Resolving => {}
            }
        }
    }

    /// A domain's route backoff ended early (its `.backoff` file was
    /// removed): it may be tried at once.
    pub fn lift_domain(&mut self, domain: &str) -> bool {
        let Some(d) = self.domains.get_mut(domain) else {
            return false;
        };
        let was = d.failures > 0 || d.held.is_some();
        d.failures = 0;
        d.held = None;
        if matches!(d.route, RouteState::Failed { .. }) {
            d.route = RouteState::Unknown;
        }
        was
    }

    /// A site's backoff ended early (`postman flush`).
    pub fn lift_site(&mut self, id: SiteId, now: Instant) -> bool {
        let lifted = self.entry(id).is_some_and(|e| e.site.lift_backoff(now));
        self.make_runnable(id);
        lifted
    }

    /// An operator suspends a site until `until`, or lifts the suspension.
    pub fn suspend_site(&mut self, id: SiteId, until: Option<Instant>, reason: &str, now: Instant) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        entry.site.suspend(until, reason);
        if let Some(until) = until {
            self.hold_site(id, until, now);
        } else {
            self.make_runnable(id);
        }
    }

    /// An operator suspends a domain until `until`, or lifts the suspension.
    pub fn suspend_domain(&mut self, name: &str, until: Option<Instant>, reason: &str) {
        let d = self
            .domains
            .entry(name.to_owned())
            .or_insert_with(Domain::new);
        match until {
            Some(until) => {
                d.held = Some((until, reason.to_owned()));
                let messages = d.drain_ready();
                self.ready_total -= messages.len();
                for msg in messages {
                    let reason = reason.to_owned();
                    self.actions.push_back(Action::Defer { msg, until, reason });
                }
            }
            None => d.held = None,
        }
    }

    /// The domains whose route leads to the site.
    pub fn domains_of(&self, id: SiteId) -> Vec<String> {
        let mut names: Vec<String> = self
            .domains
            .iter()
            .filter(|(_, d)| matches!(d.route, RouteState::Known { site, .. } if site == id))
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// Whether the domain has been seen.
    pub fn knows(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The route backoff an earlier run left for a domain seen for the
    /// first time: `failures` so far and, if it still lasts, how long.
    pub fn restore_domain(
        &mut self,
        name: &str,
        failures: u32,
        left: Option<Duration>,
        error: &str,
        now: Instant,
    ) {
        let d = self.domain(name);
        d.failures = failures;
        if let Some(left) = left {
            d.held = Some((
                now + left,
                format!("delivery temporarily suspended: {error}"),
            ));
        }
    }
}
