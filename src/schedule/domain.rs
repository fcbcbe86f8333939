//! One recipient domain's queue: ready messages in arrival order, those
//! out with a connection, those waiting for a time, and its route.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::route::{Route, RouteError};

use super::SiteId;

/// A queued message as the scheduler sees it.
pub trait Queued {
    /// The queue id (the file name in its domain folder).
    fn id(&self) -> &str;
    /// The recipient domain (the folder).
    fn domain(&self) -> &str;
}

/// What is known of a domain's route.
#[derive(Debug, Clone)]
pub enum RouteState {
    Unknown,
    Resolving,
    Known {
        route: Route,
        site: SiteId,
        until: Instant,
    },
    Failed {
        error: RouteError,
        until: Instant,
    },
}

/// A domain's queue and route.
#[derive(Debug)]
pub struct Domain<M> {
    pub ready: VecDeque<M>,
    /// Ids in `ready`, to recognise a new version of a file.
    ready_ids: HashSet<String>,
    /// Ids of messages out with a connection, and the site it goes to.
    pub flying: HashMap<String, SiteId>,
    /// Connections that carry (or were just given) a message of the
    /// domain and have not asked for more since: at most
    /// `max_connections_per_domain`.
    pub connections: usize,
    /// Messages waiting for a time, by id.
    pub deferred: HashMap<String, (Instant, M)>,
    pub route: RouteState,
    /// In its site's round of domains with ready mail.
    pub in_turns: bool,
    /// Waiting for a route lookup slot.
    pub lookup_wanted: bool,
    /// Transient route failures in a row (persisted in `<domain>/.backoff`).
    pub failures: u32,
    /// No attempt before this: a route backoff, or an operator's suspension.
    pub held: Option<(Instant, String)>,
}

impl<M: Queued> Domain<M> {
    pub fn new() -> Domain<M> {
        Domain {
            ready: VecDeque::new(),
            ready_ids: HashSet::new(),
            flying: HashMap::new(),
            connections: 0,
            deferred: HashMap::new(),
            route: RouteState::Unknown,
            in_turns: false,
            lookup_wanted: false,
            failures: 0,
            held: None,
        }
    }

    pub fn push_ready(&mut self, msg: M) {
        self.ready_ids.insert(msg.id().to_owned());
        self.ready.push_back(msg);
    }

    /// The next ready message, out with a connection of `site` from now.
    pub fn take_ready(&mut self, site: SiteId) -> Option<M> {
        let msg = self.ready.pop_front()?;
        self.ready_ids.remove(msg.id());
        self.flying.insert(msg.id().to_owned(), site);
        self.connections += 1;
        Some(msg)
    }

    pub fn drain_ready(&mut self) -> Vec<M> {
        self.ready_ids.clear();
        self.ready.drain(..).collect()
    }

    /// Drops the ready copy of `id`; returns whether there was one.
    pub fn remove_ready(&mut self, id: &str) -> bool {
        if !self.ready_ids.remove(id) {
            return false;
        }
        self.ready.retain(|m| m.id() != id);
        true
    }

    /// The site of a route still valid at `now`.
    pub fn site(&self, now: Instant) -> Option<SiteId> {
        match &self.route {
            RouteState::Known { site, until, .. } if *until > now => Some(*site),
            _ => None,
        }
    }

    /// Nothing to do and nothing worth remembering at `now`: no message,
    /// no connection, no lookup, no hold or failure, and no cached route
    /// (an expired one is looked up again anyway).
    pub fn idle(&self, now: Instant) -> bool {
        let route_cached = match &self.route {
            RouteState::Unknown => false,
            RouteState::Resolving => true,
            RouteState::Known { until, .. } | RouteState::Failed { until, .. } => *until > now,
        };
        self.ready.is_empty()
            && self.flying.is_empty()
            && self.deferred.is_empty()
            && self.connections == 0
            && !self.in_turns
            && !self.lookup_wanted
            && self.failures == 0
            && self.held_until(now).is_none()
            && !route_cached
    }

    /// The hold at `now`, if it lasts.
    pub fn held_until(&self, now: Instant) -> Option<(Instant, &str)> {
        self.held
            .as_ref()
            .filter(|(until, _)| *until > now)
            .map(|(until, why)| (*until, why.as_str()))
    }
}
