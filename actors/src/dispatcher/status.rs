//! The dispatcher's status snapshot for `postman queue summary`
//! (`.OTHER_SERVERS/.status`, [`postman::queue::Status`]): each site with
//! its domains, connections, limit, message rate and hold. Written at most
//! every [`STATUS_EVERY`] while it changes, every [`STATUS_REFRESH`]
//! regardless (so a reader can tell a live view from a stale one), and
//! once more as the dispatcher stops.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postman::queue::{self, Held, HoldKind, RateSource, SiteStatus, Status};
use postman::schedule::{Hold, Site, SiteId};
use slog::warn;

use super::Dispatcher;

/// How often the snapshot may be rewritten while something changes: an
/// operator looking at the summary sees the state of a few seconds ago.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// How often it is rewritten when nothing changed.
pub const STATUS_REFRESH: Duration = Duration::from_secs(30);

/// What was written last, and when the next look is due.
#[derive(Default)]
pub(super) struct StatusWriter {
    /// The next look; `None` before the first.
    next: Option<Instant>,
    /// The last snapshot written, `written` left out, and when.
    last: Option<(Status, Instant)>,
    /// A failed write was logged (once until one succeeds).
    warned: bool,
}

impl StatusWriter {
    /// When the dispatcher must wake for the next look.
    pub(super) fn due(&self, now: Instant) -> Instant {
        self.next.unwrap_or(now)
    }
}

/// `at` on the wall clock, `now` being `wall`.
fn wall_time(at: Instant, now: Instant, wall: SystemTime) -> SystemTime {
    wall + at.saturating_duration_since(now)
}

/// Where a site's message rate comes from, and its interval now.
fn rate(site: &Site) -> (Option<Duration>, Option<RateSource>) {
    let (base, source) = match (site.shape.message_interval, site.learned_interval) {
        (Some(rule), _) => (rule, RateSource::Rule),
        (None, Some(learned)) => (learned, RateSource::Learned),
        (None, None) => return (None, None),
    };
    (Some(base.saturating_mul(site.slowdown)), Some(source))
}

impl Dispatcher {
    /// Writes the snapshot when it is due and changed (or old), or at
    /// once when `running` is false (the dispatcher stops).
    pub(super) fn write_status(&mut self, now: Instant, running: bool) {
        if running && self.status.next.is_some_and(|next| now < next) {
            return;
        }
        self.status.next = Some(now + STATUS_EVERY);
        let wall = SystemTime::now();
        let mut status = self.snapshot(now, wall, running);
        let same = self.status.last.as_ref().is_some_and(|(last, at)| {
            *last == status && now.saturating_duration_since(*at) < STATUS_REFRESH
        });
        if same && running {
            return;
        }
        let text = queue::render_status(&Status {
            written: wall,
            ..status.clone()
        });
        match queue::write_status(&self.settler.queue, &text) {
            Ok(()) => {
                self.status.warned = false;
                status.written = UNIX_EPOCH;
                self.status.last = Some((status, now));
            }
            Err(e) => {
                if !self.status.warned {
                    warn!(self.log, "cannot write the status snapshot for postman queue summary";
                        "file" => queue::STATUS_FILE, "error" => %e);
                    self.status.warned = true;
                }
            }
        }
    }

    /// The snapshot at `now` (`written` left at the epoch, so that two
    /// compare equal when nothing changed).
    fn snapshot(&self, now: Instant, wall: SystemTime, running: bool) -> Status {
        let mut by_site = self.sched.domains_by_site();
        let mut sites = Vec::new();
        for (site, _, _) in self.sched.sites() {
            let Some(id) = self.sched.site_id(&site.name) else {
                continue;
            };
            let domains = by_site.remove(&id).unwrap_or_default();
            let (message_interval, rate) = rate(site);
            sites.push(SiteStatus {
                name: site.name.clone(),
                hosts: site.hosts.clone(),
                rule: site.shape.rule.clone(),
                domains,
                more_domains: 0,
                connections: site.connections,
                limit: site.limit,
                max_connections: site.shape.max_connections,
                message_interval,
                rate,
                held: self.held(id, site, now, wall),
            });
        }
        Status {
            written: UNIX_EPOCH,
            pid: std::process::id(),
            running,
            sites,
            more_sites: 0,
        }
    }

    /// Why the site takes no connection now, if so.
    fn held(&self, id: SiteId, site: &Site, now: Instant, wall: SystemTime) -> Option<Held> {
        let until = site.held_until(now)?;
        let (_, hold) = site.held.as_ref()?;
        Some(match (hold, self.operator.site(id)) {
            (Hold::Suspended { .. }, Some(s)) => Held {
                kind: HoldKind::Operator,
                until: s.until,
                failures: 0,
                reason: s.reason.clone(),
            },
            (Hold::Suspended { reason }, None) => Held {
                kind: HoldKind::Throttled,
                until: Some(wall_time(until, now, wall)),
                failures: 0,
                reason: reason.clone(),
            },
            (Hold::Backoff { failures, error }, _) => Held {
                kind: HoldKind::Backoff,
                until: Some(wall_time(until, now, wall)),
                failures: *failures,
                reason: error.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postman::schedule::Shape;

    #[test]
    fn a_site_rate_is_the_rule_or_the_learned_one_slowed() {
        let ms = Duration::from_millis;
        let site = |rule: Option<u64>, learned: Option<u64>, slowdown: u32| {
            let mut site = Site::new(
                "mx.test".into(),
                vec!["mx.test".into()],
                Shape {
                    message_interval: rule.map(ms),
                    ..Shape::default()
                },
            );
            site.learned_interval = learned.map(ms);
            site.slowdown = slowdown;
            site
        };
        let cases = [
            (site(None, None, 1), (None, None)),
            (
                site(Some(200), None, 1),
                (Some(ms(200)), Some(RateSource::Rule)),
            ),
            (
                site(Some(200), Some(50), 4),
                (Some(ms(800)), Some(RateSource::Rule)),
            ),
            (
                site(None, Some(50), 2),
                (Some(ms(100)), Some(RateSource::Learned)),
            ),
        ];
        for (site, want) in cases {
            assert_eq!(
                rate(&site),
                want,
                "{:?} {:?} {}",
                site.shape.message_interval,
                site.learned_interval,
                site.slowdown
            );
        }
    }
}
