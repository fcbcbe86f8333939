//! The scheduler's inputs about connections: opening them, giving them
//! their next message, and what their ends and throttles say of a site.

use super::*;

/// A site's state when a connection of it is judged: how many of its
/// other connections are open.
fn others(site: &Site) -> usize {
    site.connections.saturating_sub(1)
}

impl<M: Queued, C: Copy + Eq> Scheduler<M, C> {
    /// Opens connections, one per site per turn, while there is room, and
    /// starts the route lookups that may run.
    pub(super) fn pump(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        if let Some(until) = self.paused_until {
            if until > now {
                return;
            }
            self.paused_until = None;
        }
        self.start_lookups();
        self.make_room(now);
        let mut turns = self.runnable.len();
        while turns > 0 && self.connections < self.limits.max_connections {
            turns -= 1;
            let Some(id) = self.runnable.pop_front() else {
                break;
            };
            let Some(entry) = self.entry(id) else {
                continue;
            };
            entry.in_runnable = false;
            if !entry.site.has_room(now) {
                continue;
            }
            if let Some(at) = entry.site.open_wait(now) {
                self.paced.push(Reverse((at, id)));
                continue;
            }
            let Some((name, job)) = self.next_job(id, now) else {
                continue;
            };
            let Some(RouteState::Known { route, .. }) = self.domains.get(&name).map(|d| &d.route)
            else {
                continue;
            };
            let route = route.clone();
            let Some(entry) = self.entry(id) else {
                continue;
            };
            entry.site.open(now);
            let max_messages = entry.site.shape.max_messages_per_connection;
            self.connections += 1;
            self.in_flight += 1;
            self.actions.push_back(Action::Open {
                site: id,
                route,
                job,
                max_messages,
            });
            let before = self.runnable.len();
            self.make_runnable(id);
            turns += self.runnable.len() - before;
        }
        // Domains whose route expired on their turn want it looked up now.
        self.start_lookups();
    }

    fn start_lookups(&mut self) {
        while self.lookups < self.limits.max_lookups {
            let Some(name) = self.lookups_wanted.pop_front() else {
                break;
            };
            let Some(d) = self.domains.get_mut(&name) else {
                continue;
            };
            d.lookup_wanted = false;
            if d.ready.is_empty() || matches!(d.route, RouteState::Resolving) {
                continue;
            }
            d.route = RouteState::Resolving;
            self.lookups += 1;
            self.actions.push_back(Action::Lookup { domain: name });
        }
    }

    /// The next message of the site, its domains taking turns: a domain
    /// with no message out beyond its cap and a route still valid. A
    /// domain whose route expired leaves the turns for a new lookup.
    fn next_job(&mut self, id: SiteId, now: Instant) -> Option<(String, M)> {
        let per_domain = self.limits.max_connections_per_domain;
        let rounds = self.entry(id)?.turns.len();
        for _ in 0..rounds {
            let name = self.entry(id)?.turns.pop_front()?;
            let Some(d) = self.domains.get_mut(&name) else {
                continue;
            };
            if d.ready.is_empty() {
                d.in_turns = false;
                continue;
            }
            if d.site(now) != Some(id) {
                d.in_turns = false;
                if !matches!(d.route, RouteState::Resolving) {
                    d.route = RouteState::Unknown;
                }
                self.want_lookup(&name);
                continue;
            }
            if d.connections >= per_domain {
                self.entry(id)?.turns.push_back(name);
                continue;
            }
            let msg = d.take_ready(id)?;
            if d.ready.is_empty() {
                d.in_turns = false;
            } else if let Some(entry) = self.sites.get_mut(&id) {
                entry.turns.push_back(name.clone());
            }
            self.ready_total -= 1;
            return Some((name, msg));
        }
        None
    }

    /// A message for an open connection of the site, if one may start now.
    fn next_for(&mut self, id: SiteId, now: Instant) -> Option<M> {
        if self.shutting_down || self.paused_until.is_some_and(|until| until > now) {
            return None;
        }
        let entry = self.entry(id)?;
        if entry.site.held_until(now).is_some() || entry.site.message_wait(now).is_some() {
            return None;
        }
        let (_, job) = self.next_job(id, now)?;
        self.entry(id)?.site.start_message(now);
        self.in_flight += 1;
        Some(job)
    }

    /// A connection of `site` finished a transaction and may carry another:
    /// the next message of any of the site's domains, or a wait for one
    /// (up to the site's `connection_cache_time`), or goodbye (the site is
    /// over its limit, held, or postman is short of descriptors).
    /// `held`: the domain of the message it carried, which it counts
    /// against no longer.
    pub fn want_more(&mut self, conn: C, id: SiteId, held: Option<&str>, now: Instant) {
        self.unhold(held);
        let Some(entry) = self.entry(id) else {
            self.actions.push_back(Action::Next { conn, job: None });
            return;
        };
        let site = &entry.site;
        let over = site.connections > site.limit.min(site.shape.max_connections);
        let wait = site.shape.connection_cache_time;
        let held = site.held_until(now).is_some();
        let pace = site.message_wait(now);
        if !over {
            if let Some(job) = self.next_for(id, now) {
                self.actions.push_back(Action::Next {
                    conn,
                    job: Some(job),
                });
                return;
            }
        }
        let paused = self.paused_until.is_some_and(|until| until > now);
        if over || held || paused || self.shutting_down || wait.is_zero() {
            self.actions.push_back(Action::Next { conn, job: None });
            return;
        }
        if let Some(at) = pace {
            self.paced.push(Reverse((at, id)));
        }
        if let Some(entry) = self.entry(id) {
            entry.site.parked += 1;
        }
        let until = now + wait;
        let at = self.parked.partition_point(|p| p.until <= until);
        self.parked.insert(
            at,
            Parked {
                conn,
                site: id,
                until,
            },
        );
    }

    /// Gives the site's ready messages to its waiting connections, the
    /// longest waiting first.
    pub(super) fn serve_parked(&mut self, id: SiteId, now: Instant) {
        while self.entry(id).is_some_and(|e| e.site.parked > 0) {
            let Some(at) = self.parked.iter().position(|p| p.site == id) else {
                break;
            };
            let Some(job) = self.next_for(id, now) else {
                if let Some(pace) = self.entry(id).and_then(|e| e.site.message_wait(now)) {
                    self.paced.push(Reverse((pace, id)));
                }
                break;
            };
            if let Some(parked) = self.take_parked(at) {
                self.actions.push_back(Action::Next {
                    conn: parked.conn,
                    job: Some(job),
                });
            }
        }
    }

    /// A server of the site took a transaction: its backoff is over.
    pub fn established(&mut self, id: SiteId, now: Instant) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        if entry.site.established(now) {
            let site = entry.site.name.clone();
            self.actions
                .push_back(Action::ClearSiteBackoff { site: site.clone() });
            self.actions
                .push_back(Action::Log(Event::BackoffLifted { site }));
        }
        self.make_runnable(id);
    }

    /// A message is back from its attempt (`answered`: the server judged
    /// it; `throttle`: the server's reply said this client sends too
    /// much). The caller then hands the message back (`enqueue`, `defer`)
    /// or is done with it.
    pub fn returned(
        &mut self,
        domain: &str,
        queue_id: &str,
        answered: bool,
        throttle: Option<&str>,
        now: Instant,
    ) {
        let Some(id) = self.land(domain, queue_id) else {
            return;
        };
        if let Some(d) = self.domains.get(domain) {
            if !d.ready.is_empty() && !d.in_turns {
                if let Some(site) = d.site(now) {
                    self.join_turns(site, domain, now);
                }
            }
        }
        match throttle {
            Some(reply) => self.throttled_transaction(id, reply, now),
            None if answered => {
                if let Some(entry) = self.entry(id) {
                    entry.site.answered(now);
                }
            }
            None => {}
        }
        self.make_runnable(id);
    }

    /// A message out with a connection is back: the site it went to.
    fn land(&mut self, domain: &str, queue_id: &str) -> Option<SiteId> {
        let site = self.domains.get_mut(domain)?.flying.remove(queue_id)?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(site)
    }

    /// A transaction of one of the site's open connections met a throttle.
    fn throttled_transaction(&mut self, id: SiteId, reply: &str, now: Instant) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        let open = entry.site.connections;
        let held = entry.site.throttle_transaction(now, open, reply);
        self.log_throttle(id, reply, held, now);
    }

    fn log_throttle(&mut self, id: SiteId, reply: &str, held: Option<Instant>, now: Instant) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        let site = entry.site.name.clone();
        let limit = entry.site.limit;
        self.actions.push_back(Action::Log(Event::Throttled {
            site: site.clone(),
            limit,
            reply: reply.to_owned(),
        }));
        if let Some(until) = held {
            let reason = format!("throttled: {reply}");
            self.actions.push_back(Action::Log(Event::Suspended {
                site,
                until,
                reason,
            }));
            self.hold_site(id, until, now);
        }
    }

    /// The site turned one of its connections away (counted until it
    /// closes).
    fn throttled(&mut self, id: SiteId, reply: &str, now: Instant) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        let others = others(&entry.site);
        let held = entry.site.throttle(now, others, reply);
        self.log_throttle(id, reply, held, now);
    }

    /// A connection failed on every address. A throttle, or a failure
    /// while other connections to the site are open (a server that takes
    /// no more from this client), sends the message back untried with
    /// fewer connections; otherwise the site backs off and the message is
    /// the caller's to record as a failed attempt.
    pub fn connect_failed(
        &mut self,
        job: M,
        failure: &ConnectFailure,
        now: Instant,
    ) -> AfterFailure<M> {
        let Some(id) = self.land(job.domain(), job.id()) else {
            return AfterFailure::Failed {
                msg: job,
                until: now,
            };
        };
        let schedule = self.limits.schedule;
        let Some(entry) = self.entry(id) else {
            return AfterFailure::Failed {
                msg: job,
                until: now,
            };
        };
        // This connection is counted until it closes.
        let others = others(&entry.site);
        if let Some(reply) = &failure.throttle {
            self.throttled(id, reply, now);
            self.enqueue(job, now);
            return AfterFailure::Untried;
        }
        if others > 0 {
            entry.site.cut(others);
            let site = entry.site.name.clone();
            self.actions.push_back(Action::Log(Event::ConcurrencyCut {
                site,
                connections: others,
                error: failure.error.clone(),
            }));
            self.enqueue(job, now);
            return AfterFailure::Untried;
        }
        let (until, new) = entry
            .site
            .back_off(now, |n| schedule.backoff(n), &failure.error);
        entry.site.looping = failure.loops;
        if new {
            let site = entry.site.name.clone();
            let failures = entry.site.failures;
            let wait = until.saturating_duration_since(now);
            let error = failure.error.clone();
            self.actions.push_back(Action::SaveSiteBackoff {
                site: site.clone(),
                failures,
                wait,
                error: error.clone(),
            });
            self.actions.push_back(Action::Log(Event::BackingOff {
                site,
                wait,
                failures,
                error,
            }));
        }
        self.hold_site(id, until, now);
        AfterFailure::Failed { msg: job, until }
    }

    /// Work was put off for a shortage of this process's own (a
    /// connection's descriptor or socket, or disk space for its message):
    /// the message is untried; for disk space it waits [`DISK_SPACE_WAIT`].
    /// Returns whether a pause began.
    pub fn put_off(&mut self, job: M, disk_space: bool, now: Instant) -> bool {
        self.land(job.domain(), job.id());
        let began = self.pause(now);
        if disk_space {
            self.defer(job, now + DISK_SPACE_WAIT);
        } else {
            self.enqueue(job, now);
        }
        began
    }

    /// For [`LOCAL_LIMIT_PAUSE`] no connection opens and open ones get no
    /// new message (a waiting one says goodbye and gives its descriptor
    /// back). Returns whether the pause began now.
    pub fn pause(&mut self, now: Instant) -> bool {
        let began = self.paused_until.is_none_or(|until| until <= now);
        if began {
            self.paused_until = Some(now + LOCAL_LIMIT_PAUSE);
            self.release_parked(|_| true);
        }
        began
    }

    /// Whether a local pause lasts at `now`.
    pub fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|until| until > now)
    }

    /// A connection of the site closed (`held`: the domain it still
    /// counted against; `proved`: a server judged a transaction on it, see
    /// [`Scheduler::established`]).
    pub fn closed(&mut self, conn: C, id: SiteId, held: Option<&str>, proved: bool) {
        self.unhold(held);
        if let Some(at) = self.parked.iter().position(|p| p.conn == conn) {
            self.take_parked(at);
        }
        self.connections = self.connections.saturating_sub(1);
        if let Some(entry) = self.entry(id) {
            entry.site.connections = entry.site.connections.saturating_sub(1);
            if !proved {
                entry.site.closed_unproven();
            }
        }
        self.make_runnable(id);
    }

    /// A connection counts against `held` no longer: the domain may have
    /// another.
    fn unhold(&mut self, held: Option<&str>) {
        let Some(d) = held.and_then(|name| self.domains.get_mut(name)) else {
            return;
        };
        d.connections = d.connections.saturating_sub(1);
        if let RouteState::Known { site, .. } = d.route {
            if d.in_turns {
                self.make_runnable(site);
            }
        }
    }

    /// A message given to a connection that had closed meanwhile: back,
    /// untried.
    pub fn not_taken(&mut self, job: M, now: Instant) {
        let domain = job.domain().to_owned();
        self.land(&domain, job.id());
        self.unhold(Some(&domain));
        self.enqueue(job, now);
    }

    /// No new connection or message for the site before `until`: its
    /// domains' ready messages wait (deferred, untried) and its waiting
    /// connections say goodbye.
    pub(super) fn hold_site(&mut self, id: SiteId, until: Instant, now: Instant) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        let reason = entry.site.hold_reason();
        let names: Vec<String> = entry.turns.drain(..).collect();
        for name in names {
            let Some(d) = self.domains.get_mut(&name) else {
                continue;
            };
            d.in_turns = false;
            let messages = d.drain_ready();
            self.ready_total -= messages.len();
            for msg in messages {
                let until = until.max(now);
                let reason = reason.clone();
                self.actions.push_back(Action::Defer { msg, until, reason });
            }
        }
        self.release_parked(|p| p.site == id);
    }

    /// Connections are at `max_connections` while sites wait for one: as
    /// many waiting connections as there are such sites say goodbye, the
    /// first to give up first. A site counts when it has room under its
    /// own limit and a domain with mail ready below its own cap: one at
    /// its cap would not take the slot, and the waiting connection would
    /// close for nothing.
    fn make_room(&mut self, now: Instant) {
        if self.connections < self.limits.max_connections || self.parked.is_empty() {
            return;
        }
        let per_domain = self.limits.max_connections_per_domain;
        let wanting = self
            .runnable
            .iter()
            .filter(|id| {
                self.sites.get(id).is_some_and(|e| {
                    e.site.has_room(now)
                        && e.turns.iter().any(|name| {
                            self.domains
                                .get(name)
                                .is_some_and(|d| !d.ready.is_empty() && d.connections < per_domain)
                        })
                })
            })
            .count()
            .min(self.parked.len());
        for _ in 0..wanting {
            if let Some(parked) = self.take_parked(0) {
                self.actions.push_back(Action::Next {
                    conn: parked.conn,
                    job: None,
                });
            }
        }
    }

    pub(super) fn release_parked(&mut self, which: impl Fn(&Parked<C>) -> bool) {
        let mut at = 0;
        while at < self.parked.len() {
            if which(&self.parked[at]) {
                if let Some(parked) = self.take_parked(at) {
                    self.actions.push_back(Action::Next {
                        conn: parked.conn,
                        job: None,
                    });
                }
            } else {
                at += 1;
            }
        }
    }

    pub(super) fn take_parked(&mut self, at: usize) -> Option<Parked<C>> {
        let parked = self.parked.remove(at)?;
        if let Some(entry) = self.entry(parked.site) {
            entry.site.parked = entry.site.parked.saturating_sub(1);
        }
        Some(parked)
    }
}
