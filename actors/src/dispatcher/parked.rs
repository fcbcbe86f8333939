//! Connections waiting a moment for more of their domain's mail.
//!
//! A connection that asks for more (`WantMore`) when its domain has nothing
//! ready does not say goodbye at once: it waits up to
//! `delivery.connection_cache_time` (2 s unless set), and the
//! next message of its domain that becomes ready (found by a scan still in
//! progress, due again, handed back by another connection) goes over it
//! instead of over a new connection. Postfix's connection cache does the
//! same (`smtp_connection_cache_time_limit`, 2 s). A waiting connection
//! still counts against the limits; it gives its slot up at once when
//! another domain needs one, when this process runs short of descriptors,
//! when its domain is suspended, and when postman stops or `--once` has
//! nothing left to do.

use super::*;
use crate::messages::ConnId;

/// One connection waiting for more of its domain.
pub(super) struct Parked {
    worker: usize,
    conn: ConnId,
    domain: String,
    until: Instant,
}

impl Dispatcher {
    /// A connection asked for more of `domain`: the next ready message, or
    /// a wait for one when the domain may still get some, or goodbye.
    pub(super) fn want_more(&mut self, worker: usize, conn: ConnId, domain: String, now: Instant) {
        if let Some(job) = self.next_for(&domain, now) {
            self.send_worker(
                worker,
                WorkerMsg::Next {
                    conn,
                    job: Some(Box::new(job)),
                },
            );
            return;
        }
        let wait = self.config.connection_cache_time;
        let may_wait = !wait.is_zero()
            && !self.shutting_down
            && self.paused_until.is_none_or(|until| until <= now)
            && self
                .domains
                .get(&domain)
                .is_some_and(|d| d.suspended_until.is_none_or(|until| until <= now));
        if !may_wait {
            self.send_worker(worker, WorkerMsg::Next { conn, job: None });
            return;
        }
        if let Some(d) = self.domains.get_mut(&domain) {
            d.parked += 1;
        }
        self.parked.push_back(Parked {
            worker,
            conn,
            domain,
            until: now + wait,
        });
    }

    /// Gives the domain's ready messages to its waiting connections, the
    /// longest waiting first.
    pub(super) fn serve_parked(&mut self, name: &str, now: Instant) {
        while self
            .domains
            .get(name)
            .is_some_and(|d| d.parked > 0 && !d.ready.is_empty())
        {
            let Some(at) = self.parked.iter().position(|p| p.domain == name) else {
                break;
            };
            let Some(parked) = self.take_parked(at) else {
                break;
            };
            let job = self.next_for(name, now);
            let done = job.is_none();
            self.send_worker(
                parked.worker,
                WorkerMsg::Next {
                    conn: parked.conn,
                    job: job.map(Box::new),
                },
            );
            if done {
                break;
            }
        }
    }

    /// The time the longest waiting connection gives up.
    pub(super) fn next_parked_expiry(&self) -> Option<Instant> {
        self.parked.front().map(|p| p.until)
    }

    /// A reload shortened the wait: connections already waiting wait no
    /// longer than the new time from now. (Taking the earlier of the two
    /// keeps the queue in order of giving up: the old times were in order,
    /// and every later wait ends after `now + wait`.)
    pub(super) fn shorten_parked(&mut self, now: Instant) {
        let latest = now + self.config.connection_cache_time;
        for parked in &mut self.parked {
            parked.until = parked.until.min(latest);
        }
    }

    /// Says goodbye to connections that waited long enough.
    pub(super) fn expire_parked(&mut self, now: Instant) {
        while self.parked.front().is_some_and(|p| p.until <= now) {
            self.release_parked(0);
        }
    }

    /// Says goodbye to every waiting connection (of `domain` only, when
    /// given).
    pub(super) fn release_all_parked(&mut self, domain: Option<&str>) {
        let mut at = 0;
        while at < self.parked.len() {
            if domain.is_none_or(|name| self.parked[at].domain == name) {
                self.release_parked(at);
            } else {
                at += 1;
            }
        }
    }

    /// Connections are at `max_connections` while domains wait for one:
    /// as many waiting connections as there are such domains give their
    /// slots up, the longest waiting first. A domain counts when it has
    /// mail ready and room under its own limit; one at its limit would not
    /// take the slot, and its waiting connection would close for nothing.
    pub(super) fn make_room(&mut self) {
        if self.connections < self.config.max_connections || self.parked.is_empty() {
            return;
        }
        let wanting = self
            .runnable
            .iter()
            .filter(|name| {
                self.domains
                    .get(name.as_str())
                    .is_some_and(|d| !d.ready.is_empty() && d.connections < d.limit)
            })
            .count()
            .min(self.parked.len());
        for _ in 0..wanting {
            self.release_parked(0);
        }
    }

    /// A connection closed: if it was waiting, it waits no more.
    pub(super) fn closed_while_parked(&mut self, worker: usize, conn: ConnId) {
        if let Some(at) = self
            .parked
            .iter()
            .position(|p| p.worker == worker && p.conn == conn)
        {
            self.take_parked(at);
        }
    }

    fn release_parked(&mut self, at: usize) {
        if let Some(parked) = self.take_parked(at) {
            self.send_worker(
                parked.worker,
                WorkerMsg::Next {
                    conn: parked.conn,
                    job: None,
                },
            );
        }
    }

    fn take_parked(&mut self, at: usize) -> Option<Parked> {
        let parked = self.parked.remove(at)?;
        if let Some(d) = self.domains.get_mut(&parked.domain) {
            d.parked = d.parked.saturating_sub(1);
        }
        Some(parked)
    }
}
