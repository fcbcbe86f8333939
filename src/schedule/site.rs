//! One site: the receiving servers that domains share. Its concurrency
//! (slow start and feedback), its pace (message and connection rates), its
//! backoff after failed rounds and its suspension after throttling. Pure:
//! every method takes `now`.

use std::time::{Duration, Instant};

/// A site's limits, from the shaping rule that matches its MX host names
/// (`delivery.site."<suffix>"`) or the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The suffix of the rule that matched, for logs; `None`: the defaults.
    pub rule: Option<String>,
    /// Connections at once to the site, at most.
    pub max_connections: usize,
    /// Connections a new site (or one back from a backoff) may open before
    /// feedback raises the limit.
    pub initial_connections: usize,
    /// Transactions one connection carries before it says goodbye.
    pub max_messages_per_connection: usize,
    /// Least time between two messages started to the site, if limited.
    pub message_interval: Option<Duration>,
    /// Least time between two connections opened to the site, if limited.
    pub connection_interval: Option<Duration>,
    /// How long an idle connection waits for more of the site's mail.
    pub connection_cache_time: Duration,
    /// Throttles in a row (nothing delivered in between) that suspend the
    /// site; 0: never.
    pub suspend_after_throttles: u32,
    /// How long such a suspension lasts.
    pub throttle_suspend_time: Duration,
}

impl Default for Shape {
    fn default() -> Shape {
        Shape {
            rule: None,
            max_connections: 20,
            initial_connections: 5,
            max_messages_per_connection: 100,
            message_interval: None,
            connection_interval: None,
            connection_cache_time: Duration::from_secs(2),
            suspend_after_throttles: 5,
            throttle_suspend_time: Duration::from_secs(300),
        }
    }
}

/// How long a site that throttled a connection while no other was open
/// waits before the next, the first time: doubled for each throttle in a
/// row, up to the shape's `throttle_suspend_time`.
pub const FIRST_THROTTLE_PAUSE: Duration = Duration::from_secs(10);

/// The most a site's rates are slowed by throttling: 16 times the
/// configured interval.
pub const MAX_SLOWDOWN: u32 = 16;

/// Paces events at least `interval` apart, smoothly (a generic cell rate
/// algorithm without burst tolerance: each event moves the earliest time of
/// the next one on by the interval, counted from the later of that time and
/// now, so an idle site does not save up a burst).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pace {
    next: Option<Instant>,
}

impl Pace {
    /// The earliest time the next event may happen, when that is after `now`.
    pub fn wait(&self, now: Instant) -> Option<Instant> {
        self.next.filter(|next| *next > now)
    }

    /// Takes the turn at `now` (the caller checked [`Pace::wait`]).
    pub fn take(&mut self, now: Instant, interval: Duration) {
        let from = self.next.map_or(now, |next| next.max(now));
        self.next = Some(from + interval);
    }
}

/// Why a site takes no new connection now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// No server could be reached: the `failures`-th failed round in a row.
    Backoff { failures: u32, error: String },
    /// The site throttled this client, or an operator suspended it.
    Suspended { reason: String },
}

/// A site's state.
#[derive(Debug, Clone)]
pub struct Site {
    /// The site's name: its MX host names (see `route::site_name`).
    pub name: String,
    /// The MX host names, for shaping rules.
    pub hosts: Vec<String>,
    pub shape: Shape,
    /// Open connections (connecting, busy or waiting for more).
    pub connections: usize,
    /// Connections it may have now (Postfix's destination concurrency):
    /// `initial_connections` to start, one more after as many answered
    /// attempts as the limit, down when a connection fails or is
    /// throttled while others are open, 1 after a failed round.
    pub limit: usize,
    /// Answered attempts since the limit last changed.
    credit: usize,
    /// Failed connection rounds in a row (persisted): the backoff grows.
    pub failures: u32,
    /// Throttles in a row with nothing delivered in between.
    pub throttles: u32,
    /// The rates' slowdown after throttling: 1, 2, 4 … [`MAX_SLOWDOWN`].
    pub slowdown: u32,
    /// No new connection and no new message before this, and why.
    pub held: Option<(Instant, Hold)>,
    /// The last failed round looped back to this host.
    pub looping: bool,
    pub messages: Pace,
    pub opens: Pace,
    /// Connections waiting for more of its mail.
    pub parked: usize,
    /// Messages started over its connections (for metrics).
    pub started: u64,
    pub opened: u64,
    pub throttled: u64,
}

impl Site {
    pub fn new(name: String, hosts: Vec<String>, shape: Shape) -> Site {
        let limit = shape
            .initial_connections
            .clamp(1, shape.max_connections.max(1));
        Site {
            name,
            hosts,
            shape,
            connections: 0,
            limit,
            credit: 0,
            failures: 0,
            throttles: 0,
            slowdown: 1,
            held: None,
            looping: false,
            messages: Pace::default(),
            opens: Pace::default(),
            parked: 0,
            started: 0,
            opened: 0,
            throttled: 0,
        }
    }

    fn initial(&self) -> usize {
        self.shape
            .initial_connections
            .clamp(1, self.shape.max_connections.max(1))
    }

    /// New limits (a reload): a lower maximum applies at once, a higher one
    /// is reached by feedback.
    pub fn reshape(&mut self, shape: Shape) {
        self.shape = shape;
        self.limit = self.limit.clamp(1, self.shape.max_connections.max(1));
    }

    /// The hold at `now`, if it still lasts.
    pub fn held_until(&self, now: Instant) -> Option<Instant> {
        self.held
            .as_ref()
            .map(|(until, _)| *until)
            .filter(|until| *until > now)
    }

    /// The reason of the current hold, for deferral records.
    pub fn hold_reason(&self) -> String {
        match &self.held {
            Some((_, Hold::Backoff { error, .. })) => {
                format!("delivery temporarily suspended: {error}")
            }
            Some((_, Hold::Suspended { reason })) => {
                format!("delivery to site {} suspended: {reason}", self.name)
            }
            None => String::from("delivery temporarily suspended"),
        }
    }

    fn interval(&self, base: Option<Duration>) -> Option<Duration> {
        base.map(|interval| interval.saturating_mul(self.slowdown))
    }

    /// When the next message may start, if later than `now`.
    pub fn message_wait(&self, now: Instant) -> Option<Instant> {
        self.interval(self.shape.message_interval)?;
        self.messages.wait(now)
    }

    /// When the next connection may open, if later than `now` (the
    /// connection's first message needs its turn too).
    pub fn open_wait(&self, now: Instant) -> Option<Instant> {
        let opens = self
            .interval(self.shape.connection_interval)
            .and_then(|_| self.opens.wait(now));
        match (opens, self.message_wait(now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// A message starts now.
    pub fn start_message(&mut self, now: Instant) {
        self.started += 1;
        if let Some(interval) = self.interval(self.shape.message_interval) {
            self.messages.take(now, interval);
        }
    }

    /// A connection opens now, with its first message.
    pub fn open(&mut self, now: Instant) {
        self.connections += 1;
        self.opened += 1;
        if let Some(interval) = self.interval(self.shape.connection_interval) {
            self.opens.take(now, interval);
        }
        self.start_message(now);
    }

    /// May another connection open (at `now`, under the site's own limits)?
    pub fn has_room(&self, now: Instant) -> bool {
        self.connections < self.limit.min(self.shape.max_connections)
            && self.held_until(now).is_none()
    }

    /// A server took a transaction: at least the starting concurrency, and
    /// the backoff is over. Returns whether a backoff was lifted.
    pub fn established(&mut self) -> bool {
        self.limit = self.limit.max(self.initial());
        self.looping = false;
        if self.failures == 0 {
            return false;
        }
        self.failures = 0;
        if matches!(self.held, Some((_, Hold::Backoff { .. }))) {
            self.held = None;
        }
        true
    }

    /// A message came back from its attempt. A server that answered is
    /// feedback to go faster: 1/n of a connection more for the site's n,
    /// and a throttle-slowed rate recovers one step per limit's worth of
    /// answers. A broken-off attempt says nothing.
    pub fn answered(&mut self) {
        self.throttles = 0;
        self.credit += 1;
        if self.credit >= self.limit {
            self.credit = 0;
            if self.slowdown > 1 {
                self.slowdown /= 2;
            } else if self.limit < self.shape.max_connections {
                self.limit += 1;
            }
        }
    }

    /// A connection failed on every address while `others` of the site's
    /// connections are open: fewer connections. Without others, the site
    /// backs off (see [`Site::back_off`]).
    pub fn cut(&mut self, others: usize) {
        self.limit = others.max(1);
        self.credit = 0;
    }

    /// A failed round: the site waits `wait` (from the retry schedule for
    /// its `failures + 1`-th failure, which the caller computed) with one
    /// connection allowed after. A second failure in the same round does
    /// not count again: returns the hold that lasts.
    pub fn back_off(
        &mut self,
        now: Instant,
        wait: impl FnOnce(u32) -> Duration,
        error: &str,
    ) -> (Instant, bool) {
        if let Some((until, Hold::Backoff { .. })) = &self.held {
            if *until > now {
                return (*until, false);
            }
        }
        self.failures = self.failures.saturating_add(1);
        self.limit = 1;
        self.credit = 0;
        let until = now + wait(self.failures);
        self.held = Some((
            until,
            Hold::Backoff {
                failures: self.failures,
                error: error.to_owned(),
            },
        ));
        (until, true)
    }

    /// The site said this client is sending too much (see
    /// `smtp::throttle`). Its rates slow down by half. While `others` of
    /// its connections are open, its concurrency comes down to those (a
    /// server limiting connections per client turned this one away: the
    /// limit settles at the server's). With none open, the site takes one
    /// connection and is held: for a moment, longer for each such throttle
    /// in a row, and for `throttle_suspend_time` after
    /// `suspend_after_throttles` in a row (nothing delivered in between).
    /// Returns the hold, if one began.
    pub fn throttle(&mut self, now: Instant, others: usize, reply: &str) -> Option<Instant> {
        self.throttled += 1;
        self.credit = 0;
        if self.shape.message_interval.is_some() || self.shape.connection_interval.is_some() {
            self.slowdown = (self.slowdown * 2).min(MAX_SLOWDOWN);
        }
        if others > 0 {
            self.limit = self.limit.min(others).max(1);
            return None;
        }
        self.limit = 1;
        self.throttles = self.throttles.saturating_add(1);
        let suspend_after = self.shape.suspend_after_throttles;
        let wait = if suspend_after > 0 && self.throttles >= suspend_after {
            self.throttle_suspend_time()
        } else {
            let doublings = self.throttles.saturating_sub(1).min(16);
            FIRST_THROTTLE_PAUSE
                .saturating_mul(1 << doublings)
                .min(self.throttle_suspend_time())
        };
        let until = now + wait;
        if self.held_until(now).is_some_and(|held| held >= until) {
            return None;
        }
        self.held = Some((
            until,
            Hold::Suspended {
                reason: format!("throttled: {reply}"),
            },
        ));
        Some(until)
    }

    fn throttle_suspend_time(&self) -> Duration {
        self.shape.throttle_suspend_time.max(FIRST_THROTTLE_PAUSE)
    }

    /// An operator suspended the site until `until` (or lifted it: `None`).
    pub fn suspend(&mut self, until: Option<Instant>, reason: &str) {
        match until {
            Some(until) => {
                self.held = Some((
                    until,
                    Hold::Suspended {
                        reason: reason.to_owned(),
                    },
                ))
            }
            None => {
                if matches!(self.held, Some((_, Hold::Suspended { .. }))) {
                    self.held = None;
                }
            }
        }
    }

    /// The backoff file went away (`postman flush`): try again at once.
    pub fn lift_backoff(&mut self) -> bool {
        let was = self.failures > 0 || matches!(self.held, Some((_, Hold::Backoff { .. })));
        self.failures = 0;
        if matches!(self.held, Some((_, Hold::Backoff { .. }))) {
            self.held = None;
        }
        self.limit = self.limit.max(self.initial());
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fake clock's origin: every other instant is this plus a duration.
    #[allow(clippy::disallowed_methods)] // the tests need one real Instant to start from
    fn base() -> Instant {
        Instant::now()
    }

    fn site(shape: Shape) -> Site {
        Site::new("mx.test".into(), vec!["mx.test".into()], shape)
    }

    #[test]
    fn a_pace_spaces_events_evenly_and_saves_no_burst() {
        let t0 = base();
        let ms = Duration::from_millis;
        let mut pace = Pace::default();
        assert_eq!(pace.wait(t0), None);
        pace.take(t0, ms(100));
        assert_eq!(pace.wait(t0), Some(t0 + ms(100)));
        assert_eq!(pace.wait(t0 + ms(100)), None);
        pace.take(t0 + ms(100), ms(100));
        // Idle for a second: the next event is one interval after it, not
        // ten at once.
        pace.take(t0 + ms(1200), ms(100));
        assert_eq!(pace.wait(t0 + ms(1200)), Some(t0 + ms(1300)));
    }

    #[test]
    fn feedback_raises_the_limit_by_one_per_limit_answers_up_to_the_maximum() {
        let shape = Shape {
            initial_connections: 2,
            max_connections: 3,
            ..Shape::default()
        };
        let mut s = site(shape);
        let mut limits = Vec::new();
        for _ in 0..8 {
            s.answered();
            limits.push(s.limit);
        }
        assert_eq!(limits, [2, 3, 3, 3, 3, 3, 3, 3]);
    }

    #[test]
    fn a_failed_round_backs_off_once_and_an_established_session_lifts_it() {
        let t0 = base();
        let mut s = site(Shape::default());
        let wait = |n: u32| Duration::from_secs(60 * u64::from(n));
        let (until, new) = s.back_off(t0, wait, "refused");
        assert!(new);
        assert_eq!(until, t0 + Duration::from_secs(60));
        assert_eq!((s.failures, s.limit), (1, 1));
        // Another connection of the same round: the same hold.
        assert_eq!(s.back_off(t0, wait, "refused"), (until, false));
        assert_eq!(s.failures, 1);
        // After it: the second round waits twice as long.
        let (until, _) = s.back_off(until, wait, "refused");
        assert_eq!(until, t0 + Duration::from_secs(60 + 120));
        assert!(s.established());
        assert_eq!((s.failures, s.held_until(t0), s.limit), (0, None, 5));
        assert!(!s.established());
    }

    #[test]
    fn throttling_brings_concurrency_down_to_the_others_and_slows_the_rate() {
        let t0 = base();
        let shape = Shape {
            max_connections: 20,
            initial_connections: 8,
            message_interval: Some(Duration::from_millis(100)),
            ..Shape::default()
        };
        // (others open, limit after, slowdown after)
        let cases = [(7, 7, 2), (3, 3, 4), (5, 3, 8), (1, 1, 16), (2, 1, 16)];
        let mut s = site(shape);
        for (others, limit, slowdown) in cases {
            let held = s.throttle(t0, others, "421 4.7.0 too many connections");
            assert_eq!(
                (s.limit, s.slowdown, held),
                (limit, slowdown, None),
                "after a throttle with {others} others open"
            );
        }
        assert_eq!(
            s.throttles, 0,
            "throttles beside open connections do not count"
        );
        assert_eq!(s.message_wait(t0), None);
        s.start_message(t0);
        assert_eq!(s.message_wait(t0), Some(t0 + Duration::from_millis(1600)));
    }

    #[test]
    fn a_lone_throttled_connection_pauses_the_site_longer_each_time() {
        let t0 = base();
        let shape = Shape {
            suspend_after_throttles: 0,
            throttle_suspend_time: Duration::from_secs(60),
            ..Shape::default()
        };
        let mut s = site(shape);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let until = s
                .throttle(now, 0, "421")
                .expect("a lone throttle holds the site");
            waits.push((until - now).as_secs());
            now = until;
        }
        assert_eq!(waits, [10, 20, 40, 60, 60]);
        // Answers reset the count.
        s.answered();
        assert_eq!(s.throttles, 0);
    }

    #[test]
    fn answers_undo_a_slowdown_before_they_raise_the_limit() {
        let shape = Shape {
            initial_connections: 2,
            message_interval: Some(Duration::from_millis(50)),
            ..Shape::default()
        };
        let mut s = site(shape);
        s.throttle(base(), 1, "450 4.7.28 rate limited");
        assert_eq!((s.limit, s.slowdown), (1, 2));
        s.answered();
        assert_eq!((s.limit, s.slowdown), (1, 1));
        s.answered();
        assert_eq!((s.limit, s.slowdown), (2, 1));
    }

    #[test]
    fn a_connection_needs_both_turns_and_room() {
        let t0 = base();
        let ms = Duration::from_millis;
        let shape = Shape {
            initial_connections: 1,
            message_interval: Some(ms(100)),
            connection_interval: Some(ms(500)),
            ..Shape::default()
        };
        let mut s = site(shape);
        assert!(s.has_room(t0));
        assert_eq!(s.open_wait(t0), None);
        s.open(t0);
        assert!(!s.has_room(t0));
        assert_eq!(s.open_wait(t0), Some(t0 + ms(500)));
        assert_eq!(s.message_wait(t0 + ms(100)), None);
    }
}
