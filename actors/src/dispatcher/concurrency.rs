//! How many connections each domain gets, and when work waits for this
//! process's own limits.
//!
//! * Per-domain concurrency feedback, as Postfix's: a domain starts with
//!   `delivery.initial_connections_per_domain` connections and earns one
//!   more per that many answered attempts; a connection that fails while
//!   others to the domain are open lowers the allowed number to those.
//! * Local shortages (no descriptor for a socket, a lookup or a queue
//!   file): the work is put off, untried, and new work pauses a moment.

use super::policy::{self, AfterFailure};
use super::*;

/// How long no new connection is opened, and no open one gets a new
/// message, after work could not get a descriptor or buffer for a local
/// reason (no descriptor below `FD_SETSIZE`, descriptors or buffers
/// exhausted). Connections that close in the meantime free what was
/// missing; long enough not to spin on a shortage that lasts, short beside
/// any retry delay.
pub(super) const LOCAL_LIMIT_PAUSE: Duration = Duration::from_millis(500);

/// How long a message put off for want of disk space waits before it is
/// tried again: the disk fills and empties slower than descriptors come
/// and go, and each try claims the file and writes a reservation.
pub(super) const DISK_SPACE_WAIT: Duration = Duration::from_secs(30);

impl Dispatcher {
    /// The connections a domain starts with: `initial_connections_per_domain`,
    /// at most `max_connections_per_domain`.
    pub(super) fn initial_connections(&self) -> usize {
        self.config
            .initial_connections_per_domain
            .min(self.config.max_connections_per_domain)
    }

    /// A server of the domain took a transaction: at least the starting
    /// concurrency (a domain on probation had one connection), and one
    /// success releases a backed-off domain. A server that greets and
    /// answers EHLO but ends the session before a transaction does not
    /// count: it would release the domain it just failed.
    pub(super) fn established(&mut self, domain: &str) {
        let initial = self.initial_connections();
        if let Some(d) = self.domains.get_mut(domain) {
            d.limit = d.limit.max(initial);
            d.looping = false;
            if d.failures > 0 {
                d.failures = 0;
                d.suspended_until = None;
                if let Err(e) = queue::clear_backoff(&self.settler.queue, domain) {
                    warn!(self.log, "cannot remove the domain backoff file"; "domain" => domain,
                        "error" => %e);
                }
            }
        }
        self.make_runnable(domain);
    }

    /// A message of the domain is back from its attempt. A server that
    /// answered is feedback to go faster: 1/n of a connection more for the
    /// domain's n; an attempt cut off by a broken connection earns nothing.
    pub(super) fn feedback(&mut self, domain: &str, id: &str, answered: bool) {
        let max = self.config.max_connections_per_domain;
        if let Some(d) = self.domains.get_mut(domain) {
            d.flying.remove(id);
            if answered && d.limit < max {
                d.credit += 1;
                if d.credit >= d.limit {
                    d.limit += 1;
                    d.credit = 0;
                }
            }
        }
    }

    /// A connection failed on every address. While other connections to
    /// the domain are open, that is a server that takes no more connections
    /// from us (a limit per client), not yet a dead domain: the domain's
    /// allowed connections go down to those, and the message waits for
    /// them, untried (`None`). Should they all fail too, the last failure
    /// backs the domain off: the job comes back for that.
    pub(super) fn cut_concurrency(
        &mut self,
        domain: &str,
        job: QueuedMessage,
        relay: &str,
        reason: &str,
        now: Instant,
    ) -> Option<QueuedMessage> {
        let Some(d) = self.domains.get_mut(domain) else {
            return Some(job);
        };
        d.flying.remove(&job.id);
        // This connection is counted until its Closed.
        let others = d.connections.saturating_sub(1);
        let AfterFailure::WaitForOthers { limit } = policy::after_failed_connection(others) else {
            return Some(job);
        };
        d.limit = limit;
        d.credit = 0;
        info!(self.log, "connection failed while others to the domain are open: fewer connections, the message waits for them";
            "domain" => domain, "queue_id" => &job.id, "connections" => others,
            "relay" => relay, "reason" => reason);
        self.stats.concurrency_cuts += 1;
        self.enqueue(job, now);
        None
    }

    /// A connection found no socket it could use, or its message's file
    /// could not be opened, for want of descriptors (see
    /// [`DispatcherMsg::LocalLimit`]): the message is ready again, as if
    /// never tried. The domain keeps its limit and is not backed off; a
    /// connection's slot is freed by its `Closed`.
    ///
    /// A full disk is not given back by closing connections: a message put
    /// off for disk space waits [`DISK_SPACE_WAIT`] in memory (nothing is
    /// recorded on its file), and `--once` leaves it for the next run
    /// rather than try it again and again until the disk has room.
    pub(super) fn local_limit(
        &mut self,
        domain: &str,
        job: QueuedMessage,
        what: PutOff,
        reason: &str,
        now: Instant,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(d) = self.domains.get_mut(domain) {
            d.flying.remove(&job.id);
        }
        self.pause_for_local_limit(what, domain, Some(&job.id), reason, now);
        if what.is_disk_space() {
            self.defer(job, now + DISK_SPACE_WAIT);
        } else {
            self.enqueue(job, now);
        }
    }

    /// A route lookup failed for want of sockets (see
    /// [`DispatcherMsg::LookupPutOff`]): the route is unknown again and is
    /// looked up after the pause; nothing is deferred.
    pub(super) fn lookup_put_off(&mut self, domain: &str, reason: &str, now: Instant) {
        self.lookups = self.lookups.saturating_sub(1);
        self.domain(domain).route = RouteState::Unknown;
        self.pause_for_local_limit(PutOff::RouteLookup, domain, None, reason, now);
        self.make_runnable(domain);
    }

    /// Work was put off for a shortage of this process's own: for
    /// [`LOCAL_LIMIT_PAUSE`] no connection opens and open ones get no new
    /// message (an idle one closes and gives its descriptor back), so that
    /// nothing spins on the shortage. Work put off before the pause began
    /// runs into the same shortage one after another: one warning per
    /// pause for each kind of work put off (a connection's warning does
    /// not hide that route lookups are short too), and the metrics'
    /// `local_limits` counts every put-off.
    fn pause_for_local_limit(
        &mut self,
        what: PutOff,
        domain: &str,
        queue_id: Option<&str>,
        reason: &str,
        now: Instant,
    ) {
        self.stats.local_limits += 1;
        let pausing = self.paused_until.is_none_or(|until| until <= now);
        if pausing {
            self.warned_in_pause.clear();
        }
        if !self.warned_in_pause.contains(&what) {
            self.warned_in_pause.push(what);
            let (limit, hint) = if what.is_disk_space() {
                ("disk space", "free space in the queue's file system")
            } else {
                ("descriptor", "if this persists, raise the descriptor limit (ulimit -n) or lower delivery.max_connections")
            };
            warn!(self.log, "local {} limit: {} put off, nothing deferred", limit, what.describe();
                "domain" => domain, "queue_id" => queue_id, "reason" => reason,
                "connections" => self.connections,
                "put_off_in_all" => self.stats.local_limits,
                "retry_in_ms" => LOCAL_LIMIT_PAUSE.as_millis() as u64,
                "hint" => hint);
        }
        if pausing {
            self.paused_until = Some(now + LOCAL_LIMIT_PAUSE);
            // Waiting connections hold descriptors that are short now.
            self.release_all_parked(None);
        }
    }
}
