//! One site: the receiving servers that domains share. Its concurrency
//! (slow start and feedback), its pace (message and connection rates), its
//! backoff after failed rounds and its suspension after throttling. Pure:
//! every method takes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::SiteShape;

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

impl From<&SiteShape> for Shape {
    /// The scheduler's part of a shaping rule (the throttle patterns are
    /// the connection's: `SiteShape::is_throttle`).
    fn from(rule: &SiteShape) -> Shape {
        Shape {
            rule: rule.rule.clone(),
            max_connections: rule.max_connections,
            initial_connections: rule.initial_connections,
            max_messages_per_connection: rule.max_messages_per_connection,
            message_interval: rule.max_message_rate.map(|rate| rate.interval()),
            connection_interval: rule.max_connection_rate.map(|rate| rate.interval()),
            connection_cache_time: rule.connection_cache_time,
            suspend_after_throttles: rule.suspend_after_throttles,
            throttle_suspend_time: rule.throttle_suspend_time,
        }
    }
}

/// How long a site that throttled a connection while no other was open
/// waits before the next, the first time: doubled for each throttle in a
/// row, up to the shape's `throttle_suspend_time`.
pub const FIRST_THROTTLE_PAUSE: Duration = Duration::from_secs(10);

/// How long the concurrency at which a site turned a connection away stays
/// its ceiling: feedback does not raise the limit past it meanwhile, so a
/// server that takes n connections from a client is asked for an n+1-th
/// once in this time, not after every n answers.
pub const THROTTLE_CEILING_TIME: Duration = Duration::from_secs(600);

/// Throttles closer together than this slow a site's rate down once: the
/// transactions already under way when a server starts refusing are
/// refused together, and each must not halve the rate again.
pub const SLOWDOWN_EVERY: Duration = Duration::from_secs(1);

/// A rate learned from throttling speeds up by this fraction (1/10) per
/// [`RATE_RECOVERY_ANSWERS`].
const LEARNED_SPEEDUP: u32 = 10;

/// Answers that undo one step of a throttle's slowdown (a halving, or a
/// tenth of a learned rate): additive increase, slower than the
/// multiplicative decrease, so that a site settles under its server's
/// limit instead of swinging across it.
pub const RATE_RECOVERY_ANSWERS: usize = 20;

/// The window over which the pace a site went at is measured when it
/// throttles: the messages started in it, per second, are the rate it
/// refused (halved by the slowdown).
pub const PACE_WINDOW: Duration = Duration::from_secs(1);

/// The most message starts remembered for [`PACE_WINDOW`].
const PACE_SAMPLES: usize = 1024;

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

    /// No event before `at`.
    pub fn delay_to(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |next| next.max(at)));
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
    /// Connections opened on which no server has judged a transaction
    /// yet. While one is, answers do not raise the limit: the newest
    /// connection is the probe of whether the server takes one more, and a
    /// limit grown before its greeting opens connections the server may
    /// turn away all at once (a slow greeting under load let 10 busy
    /// connections raise the limit from 11 to 17 before the 421 came).
    unproven: usize,
    /// The concurrency the site turned a connection away above, and until
    /// when feedback keeps under it ([`THROTTLE_CEILING_TIME`]).
    pub ceiling: Option<(usize, Instant)>,
    /// Failed connection rounds in a row (persisted): the backoff grows.
    pub failures: u32,
    /// Throttles in a row with nothing delivered in between.
    pub throttles: u32,
    /// The rates' slowdown after throttling: 1, 2, 4 … [`MAX_SLOWDOWN`].
    pub slowdown: u32,
    /// When the slowdown last doubled ([`SLOWDOWN_EVERY`]).
    slowed_at: Option<Instant>,
    /// A site without a message rate of its own that throttled gets one:
    /// the pace it went at then (its slowdown halves it), sped up again
    /// by answers (additive increase, multiplicative decrease).
    pub learned_interval: Option<Duration>,
    /// Answers since the rate last recovered a step.
    rate_credit: usize,
    /// The last message starts, for the pace ([`PACE_WINDOW`]).
    starts: VecDeque<Instant>,
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
            unproven: 0,
            ceiling: None,
            failures: 0,
            throttles: 0,
            slowdown: 1,
            slowed_at: None,
            learned_interval: None,
            rate_credit: 0,
            starts: VecDeque::new(),
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

    /// Nothing open and nothing learned that still matters at `now`: no
    /// connection, no hold, no failed round, no throttle's ceiling.
    pub fn idle(&self, now: Instant) -> bool {
        self.connections == 0
            && self.parked == 0
            && self.failures == 0
            && self.held_until(now).is_none()
            && self.ceiling.is_none_or(|(_, until)| until <= now)
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

    /// The least time between two messages: the rule's, else a learned
    /// one.
    fn message_base(&self) -> Option<Duration> {
        self.shape.message_interval.or(self.learned_interval)
    }

    /// When the next message may start, if later than `now`.
    pub fn message_wait(&self, now: Instant) -> Option<Instant> {
        self.interval(self.message_base())?;
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
        if self.starts.len() == PACE_SAMPLES {
            self.starts.pop_front();
        }
        self.starts.push_back(now);
        if let Some(interval) = self.interval(self.message_base()) {
            self.messages.take(now, interval);
        }
    }

    /// A connection opens now, with its first message.
    pub fn open(&mut self, now: Instant) {
        self.connections += 1;
        self.unproven += 1;
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

    /// A server took a transaction: at least the starting concurrency (no
    /// more than a throttle's ceiling allows), and the backoff is over.
    /// Returns whether a backoff was lifted.
    pub fn established(&mut self, now: Instant) -> bool {
        self.unproven = self.unproven.saturating_sub(1);
        self.restore_initial(now);
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
    /// feedback to go faster while the site uses all its n connections:
    /// 1/n of a connection more,
    /// and a throttle-slowed rate recovers one step per limit's worth of
    /// answers. A broken-off attempt says nothing.
    /// Not past a ceiling a throttle set, while it lasts.
    /// A rate slowed by throttling recovers first, one step per
    /// [`RATE_RECOVERY_ANSWERS`].
    pub fn answered(&mut self, now: Instant) {
        self.throttles = 0;
        if self.slowdown > 1 || self.learned_interval.is_some() {
            self.rate_credit += 1;
            if self.rate_credit >= RATE_RECOVERY_ANSWERS {
                self.rate_credit = 0;
                if self.slowdown > 1 {
                    self.slowdown /= 2;
                } else if let Some(learned) = self.learned_interval {
                    let faster = learned - learned / LEARNED_SPEEDUP;
                    self.learned_interval = (faster >= Duration::from_millis(1)).then_some(faster);
                }
            }
            return;
        }
        // Only a site that uses all its connections learns whether it could
        // take more (RFC 7661's window validation): answers over fewer say
        // nothing about one more, and a limit grown on them opens a burst
        // of connections at once when mail piles up.
        if self.connections < self.limit || self.unproven > 0 {
            return;
        }
        self.credit += 1;
        if self.credit >= self.limit {
            self.credit = 0;
            let ceiling = self
                .ceiling
                .filter(|(_, until)| *until > now)
                .map_or(usize::MAX, |(ceiling, _)| ceiling);
            if self.limit < self.shape.max_connections.min(ceiling) {
                self.limit += 1;
            }
        }
    }

    /// A connection closed before a server judged a transaction on it
    /// (see [`Site::established`]): it is no longer the probe.
    pub fn closed_unproven(&mut self) {
        self.unproven = self.unproven.saturating_sub(1);
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

    /// The site turned a connection away as too much (see
    /// `smtp::throttle`). While `others` of
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
        // Turned away for its connections: concurrency is the answer; a
        // connection rate of the rule's slows down too.
        if self.shape.connection_interval.is_some() {
            self.slow_down(now);
        }
        let ceiling = self
            .ceiling
            .filter(|(_, until)| *until > now)
            .map_or(others, |(ceiling, _)| ceiling.min(others))
            .max(1);
        self.ceiling = Some((ceiling, now + THROTTLE_CEILING_TIME));
        if others > 0 {
            self.limit = self.limit.min(others).max(1);
            return None;
        }
        if self.held_until(now).is_some() {
            // The rest of a wave already answered: one hold for it.
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
        self.held = Some((
            until,
            Hold::Suspended {
                reason: format!("throttled: {reply}"),
            },
        ));
        Some(until)
    }

    /// Halves the site's rates, once in [`SLOWDOWN_EVERY`] (returns whether
    /// it did). A site with no message rate of its own learns one: half
    /// the pace it went at.
    fn slow_down(&mut self, now: Instant) -> bool {
        if self
            .slowed_at
            .is_some_and(|at| now.saturating_duration_since(at) < SLOWDOWN_EVERY)
        {
            return false;
        }
        self.slowed_at = Some(now);
        self.rate_credit = 0;
        if self.shape.message_interval.is_none() && self.learned_interval.is_none() {
            // The pace it went at over the last window: the messages
            // started in it, evenly spread.
            let from = now.checked_sub(PACE_WINDOW);
            let recent = self
                .starts
                .iter()
                .filter(|at| from.is_none_or(|from| **at >= from))
                .count()
                .max(1);
            self.learned_interval = Some(PACE_WINDOW / recent as u32);
            self.slowdown = 1;
        }
        // What the server counted in its window still counts: the next
        // message waits for the window to pass.
        self.messages.delay_to(now + PACE_WINDOW);
        self.slowdown = (self.slowdown * 2).min(MAX_SLOWDOWN);
        true
    }

    /// A transaction on an open connection met a throttle reply (a rate
    /// limit at MAIL or RCPT, say): the connection goes on, slower. The
    /// rates halve (a site without a rate of its own learns one), one
    /// connection fewer is allowed than are open, and a site that keeps
    /// throttling (`suspend_after_throttles` waves in a row, nothing
    /// delivered in between) is suspended. Returns the hold, if one began.
    pub fn throttle_transaction(
        &mut self,
        now: Instant,
        open: usize,
        reply: &str,
    ) -> Option<Instant> {
        self.throttled += 1;
        self.credit = 0;
        self.limit = self.limit.min(open).saturating_sub(1).max(1);
        if !self.slow_down(now) || self.held_until(now).is_some() {
            return None;
        }
        self.throttles = self.throttles.saturating_add(1);
        let suspend_after = self.shape.suspend_after_throttles;
        if suspend_after == 0 || self.throttles < suspend_after {
            return None;
        }
        let until = now + self.throttle_suspend_time();
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
    pub fn lift_backoff(&mut self, now: Instant) -> bool {
        let was = self.failures > 0 || matches!(self.held, Some((_, Hold::Backoff { .. })));
        self.failures = 0;
        if matches!(self.held, Some((_, Hold::Backoff { .. }))) {
            self.held = None;
        }
        self.restore_initial(now);
        was
    }

    /// Back to the starting concurrency after a failed round, but not over
    /// the concurrency a server turned a connection away above: a server
    /// that took this connection may still refuse a third.
    fn restore_initial(&mut self, now: Instant) {
        let initial = match self.ceiling.filter(|(_, until)| *until > now) {
            Some((ceiling, _)) => self.initial().min(ceiling),
            None => self.initial(),
        };
        self.limit = self.limit.max(initial);
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
            s.connections = s.limit;
            s.answered(base());
            limits.push(s.limit);
        }
        assert_eq!(limits, [2, 3, 3, 3, 3, 3, 3, 3]);
    }

    /// A server slow to greet: the site's newest connection waits for it
    /// while the others answer fast. Until a server judges a transaction
    /// on that connection (or it closes), the limit stays: one probe at a
    /// time, as a server that takes n connections turns the n+1-th away
    /// only when it greets.
    #[test]
    fn answers_do_not_raise_the_limit_while_a_new_connection_is_unproven() {
        let t0 = base();
        let shape = Shape {
            initial_connections: 3,
            max_connections: 20,
            ..Shape::default()
        };
        let mut s = site(shape);
        for _ in 0..3 {
            s.open(t0);
        }
        for _ in 0..100 {
            s.answered(t0);
        }
        assert_eq!(s.limit, 3, "nothing proven, nothing learned");
        for _ in 0..3 {
            s.established(t0);
        }
        for _ in 0..3 {
            s.answered(t0);
        }
        assert_eq!(s.limit, 4);
        s.open(t0);
        for _ in 0..100 {
            s.answered(t0);
        }
        assert_eq!(s.limit, 4, "the fourth connection has not been greeted");
        s.closed_unproven();
        s.connections -= 1;
        s.open(t0);
        s.established(t0);
        for _ in 0..4 {
            s.answered(t0);
        }
        assert_eq!(s.limit, 5, "the probe that closed is not waited for");
    }

    #[test]
    fn answers_over_fewer_connections_than_the_limit_do_not_raise_it() {
        let shape = Shape {
            initial_connections: 2,
            max_connections: 20,
            ..Shape::default()
        };
        let mut s = site(shape);
        s.connections = 1;
        for _ in 0..100 {
            s.answered(base());
        }
        assert_eq!(
            s.limit, 2,
            "one connection in use says nothing about a third"
        );
        s.connections = 2;
        s.answered(base());
        s.answered(base());
        assert_eq!(s.limit, 3);
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
        assert!(s.established(t0));
        assert_eq!((s.failures, s.held_until(t0), s.limit), (0, None, 5));
        assert!(!s.established(t0));
    }

    #[test]
    fn an_established_session_does_not_lift_concurrency_over_a_throttles_ceiling() {
        let t0 = base();
        let shape = Shape {
            max_connections: 20,
            initial_connections: 4,
            ..Shape::default()
        };
        let mut s = site(shape);
        assert_eq!(s.limit, 4);
        // Two of four connections turned away: the server takes two.
        s.throttle(t0, 3, "421 4.7.0 Too many concurrent SMTP connections");
        s.throttle(t0, 2, "421 4.7.0 Too many concurrent SMTP connections");
        assert_eq!(s.limit, 2);
        // One of the two that got in: still two, not the initial four.
        s.established(t0 + Duration::from_millis(5));
        assert_eq!(s.limit, 2);
        // Once the ceiling is over, a session restores the initial four.
        s.established(t0 + THROTTLE_CEILING_TIME);
        assert_eq!(s.limit, 4);
    }

    #[test]
    fn a_connection_turned_away_brings_concurrency_down_to_the_others() {
        let t0 = base();
        let shape = Shape {
            max_connections: 20,
            initial_connections: 8,
            message_interval: Some(Duration::from_millis(100)),
            ..Shape::default()
        };
        // (others open, limit after)
        let cases = [(7, 7), (3, 3), (5, 3), (1, 1), (2, 1)];
        let mut s = site(shape);
        for (others, limit) in cases {
            let held = s.throttle(t0, others, "421 4.7.0 too many connections");
            assert_eq!((s.limit, held), (limit, None), "after {others} others open");
        }
        assert_eq!(
            s.throttles, 0,
            "throttles beside open connections do not count"
        );
        assert_eq!(s.slowdown, 1, "the message rate is not the answer to that");
        // Rate throttles of transactions under way together slow the rate
        // once.
        for _ in 0..4 {
            s.throttle_transaction(t0, 3, "450 4.7.1 too much mail");
        }
        assert_eq!(s.slowdown, 2);
        assert_eq!(
            s.message_wait(t0),
            Some(t0 + PACE_WINDOW),
            "the window passes"
        );
        let after = t0 + PACE_WINDOW;
        s.start_message(after);
        assert_eq!(
            s.message_wait(after),
            Some(after + Duration::from_millis(200))
        );
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
        s.answered(base());
        assert_eq!(s.throttles, 0);
    }

    #[test]
    fn answers_undo_a_slowdown_before_they_raise_the_limit() {
        let shape = Shape {
            initial_connections: 1,
            message_interval: Some(Duration::from_millis(50)),
            ..Shape::default()
        };
        let mut s = site(shape);
        let t0 = base();
        s.throttle_transaction(t0, 1, "450 4.7.28 rate limited");
        assert_eq!((s.limit, s.slowdown), (1, 2));
        let later = t0 + THROTTLE_CEILING_TIME;
        for _ in 0..RATE_RECOVERY_ANSWERS {
            s.answered(later);
        }
        assert_eq!((s.limit, s.slowdown), (1, 1), "the rate first");
        s.connections = 1;
        s.answered(later);
        assert_eq!((s.limit, s.slowdown), (2, 1), "then the concurrency");
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

    #[test]
    fn a_throttle_sets_a_ceiling_that_feedback_keeps_under_for_a_while() {
        let t0 = base();
        let shape = Shape {
            initial_connections: 5,
            max_connections: 20,
            ..Shape::default()
        };
        let mut s = site(shape);
        // A server that takes two: the third was turned away.
        s.throttle(t0, 2, "421 4.7.0 too many connections");
        s.connections = 2;
        assert_eq!(
            (s.limit, s.ceiling),
            (2, Some((2, t0 + THROTTLE_CEILING_TIME)))
        );
        for _ in 0..100 {
            s.answered(t0 + Duration::from_secs(1));
        }
        assert_eq!(s.limit, 2, "no probe past the ceiling while it lasts");
        let later = t0 + THROTTLE_CEILING_TIME;
        for _ in 0..2 {
            s.answered(later);
        }
        assert_eq!(s.limit, 3, "then one more");
    }

    #[test]
    fn a_site_without_a_rate_learns_one_from_throttling_and_speeds_up_again() {
        let t0 = base();
        let ms = Duration::from_millis;
        let mut s = site(Shape {
            initial_connections: 2,
            ..Shape::default()
        });
        // Twenty messages 50 ms apart (a second's worth before the
        // throttle), then the server says too much.
        for i in 0..20 {
            s.start_message(t0 + ms(50 * i));
        }
        assert_eq!(s.message_wait(t0 + ms(950)), None, "no rate yet");
        s.throttle_transaction(
            t0 + ms(1000),
            2,
            "450 4.7.1 Error: too much mail from 192.0.2.1",
        );
        assert_eq!((s.learned_interval, s.slowdown), (Some(ms(50)), 2));
        assert_eq!(s.message_wait(t0 + ms(1000)), Some(t0 + ms(2000)));
        s.start_message(t0 + ms(2000));
        assert_eq!(
            s.message_wait(t0 + ms(2000)),
            Some(t0 + ms(2100)),
            "half the pace"
        );
        // Answers undo the slowdown, then speed the learned pace up by a
        // tenth per step, until it is gone.
        let mut answers = 0;
        while s.learned_interval.is_some() && answers < 10_000 {
            s.answered(t0 + THROTTLE_CEILING_TIME);
            answers += 1;
        }
        assert_eq!(s.slowdown, 1);
        assert!(
            s.learned_interval.is_none() && answers > 20 * RATE_RECOVERY_ANSWERS,
            "{answers} answers"
        );
    }

    #[test]
    fn a_wave_of_throttles_while_held_counts_once() {
        let t0 = base();
        let mut s = site(Shape::default());
        let first = s.throttle(t0, 0, "450 4.7.1 too much mail");
        assert_eq!(first, Some(t0 + FIRST_THROTTLE_PAUSE));
        for _ in 0..5 {
            assert_eq!(s.throttle(t0, 0, "450 4.7.1 too much mail"), None);
        }
        assert_eq!((s.throttles, s.held_until(t0)), (1, first));
    }

    #[test]
    fn a_throttled_transaction_slows_the_site_without_holding_it() {
        let t0 = base();
        let mut s = site(Shape {
            initial_connections: 4,
            suspend_after_throttles: 3,
            ..Shape::default()
        });
        s.start_message(t0);
        s.start_message(t0 + Duration::from_millis(10));
        // (at, open connections, limit after, hold)
        let cases = [
            (0, 4, 3, false),
            (0, 3, 2, false),
            (1, 2, 1, false),
            (2, 1, 1, true),
        ];
        for (at, open, limit, hold) in cases {
            let at = t0 + SLOWDOWN_EVERY * at;
            let held = s.throttle_transaction(at, open, "450 4.7.28 rate limited");
            assert_eq!(
                (s.limit, held.is_some()),
                (limit, hold),
                "at {at:?}, {open} open"
            );
        }
        assert_eq!(s.throttles, 3, "three waves");
        assert_eq!(s.learned_interval, Some(Duration::from_millis(500)));
    }
}
