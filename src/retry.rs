//! When to try a deferred message again, and when to give up on it
//! (DESIGN.md "Outcomes"; RFC 5321 §4.5.4.1 asks for a retry interval of at
//! least 30 minutes and a give-up time of at least 4–5 days). Exponential
//! backoff in the manner of Postfix's queue manager: `min_backoff` doubling
//! per failed attempt up to `max_backoff`; a message still undelivered
//! `max_queue_lifetime` after its arrival is bounced. Pure: `now` and the
//! random spread are arguments.

use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::queue::RetryState;

/// The largest share of a delay that the random spread takes off: a retry
/// comes between 80 % and 100 % of the exponential delay, so messages
/// deferred together (one host down) do not all come back at one instant,
/// and the delay never exceeds `max`.
pub const JITTER_SPREAD: f64 = 0.2;

/// The backoff schedule and queue lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Delay after the first failed attempt (`delivery.retry.min_backoff`).
    pub min: Duration,
    /// Longest delay (`delivery.retry.max_backoff`); a `max` below `min`
    /// counts as `min`.
    pub max: Duration,
    /// Time from arrival after which a deferred message is bounced
    /// (`delivery.max_queue_lifetime`).
    pub lifetime: Duration,
    /// Time from arrival at which one delay warning is due
    /// (`delivery.delay_warning`); `None`: never.
    pub delay_warning: Option<Duration>,
}

/// What to do with a message after a failed attempt left recipients
/// deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it queued and try again at `at` (never later than its expiry,
    /// so the last attempt happens at the deadline).
    Retry {
        /// When to try next: write it to `RetryState::next_attempt`.
        at: SystemTime,
        /// A delay-warning DSN is due now: send it, then set
        /// `RetryState::delay_warned`, so it is sent only once.
        warn: bool,
    },
    /// It has been queued for `lifetime`: bounce the deferred recipients.
    Expired,
}

impl Schedule {
    /// The schedule the configuration describes.
    pub fn from_config(config: &Config) -> Schedule {
        Schedule {
            min: config.retry_delay,
            max: config.max_backoff,
            lifetime: config.max_queue_lifetime,
            delay_warning: config.delay_warning,
        }
    }

    /// The delay before the next attempt when `attempts_so_far` attempts
    /// have failed, without spread: `min · 2^(attempts_so_far − 1)`, capped
    /// at `max` (0 attempts counts as 1). Never overflows.
    pub fn backoff(&self, attempts_so_far: u32) -> Duration {
        let cap = self.max.max(self.min);
        let mut delay = self.min;
        // At most ~64 doublings before `cap` or overflow stops it; zero
        // never grows, so check that too.
        for _ in 1..attempts_so_far {
            if delay >= cap || delay.is_zero() {
                break;
            }
            delay = delay.checked_mul(2).unwrap_or(cap);
        }
        delay.min(cap)
    }

    /// When to try again after `attempts_so_far` failed attempts, the last
    /// ending at `now`: `now + backoff · (1 − JITTER_SPREAD · jitter)`.
    /// `jitter` is the caller's random number in `[0, 1)`; values outside
    /// (or NaN) are clamped into it. Saturates instead of overflowing.
    pub fn next_attempt(&self, attempts_so_far: u32, now: SystemTime, jitter: f64) -> SystemTime {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let delay = self.backoff(attempts_so_far);
        let delay = delay.saturating_sub(delay.mul_f64(JITTER_SPREAD * jitter));
        add_saturating(now, delay)
    }

    /// When a message that arrived at `arrival` expires.
    pub fn expires_at(&self, arrival: SystemTime) -> SystemTime {
        add_saturating(arrival, self.lifetime)
    }

    /// Whether a message that arrived at `arrival` has been queued for its
    /// whole lifetime at `now`. An arrival in the future (a clock that went
    /// back) is not expired.
    pub fn expired(&self, arrival: SystemTime, now: SystemTime) -> bool {
        now >= self.expires_at(arrival)
    }

    /// Whether the one delay warning is due at `now` for a message that
    /// arrived at `arrival`: warnings are on, none was sent yet, the
    /// warning time has passed, and the message has not expired (then it
    /// bounces instead).
    pub fn warning_due(&self, arrival: SystemTime, state: &RetryState, now: SystemTime) -> bool {
        match self.delay_warning {
            Some(after) => {
                state.delay_warned.is_none()
                    && now >= add_saturating(arrival, after)
                    && !self.expired(arrival, now)
            }
            None => false,
        }
    }

    /// The verdict on a message after a failed attempt ending at `now`:
    /// `state` already counts that attempt (`RetryState::record_attempt`).
    /// Expired once `now` reaches `arrival + lifetime`; otherwise retried at
    /// [`Schedule::next_attempt`], but no later than the expiry, so a
    /// message gets one last attempt at its deadline before it bounces.
    pub fn verdict(
        &self,
        arrival: SystemTime,
        state: &RetryState,
        now: SystemTime,
        jitter: f64,
    ) -> Verdict {
        if self.expired(arrival, now) {
            return Verdict::Expired;
        }
        let at = self
            .next_attempt(state.attempts, now, jitter)
            .min(self.expires_at(arrival));
        Verdict::Retry {
            at,
            warn: self.warning_due(arrival, state, now),
        }
    }
}

/// `t + d`, or, when that is past the platform's `SystemTime` range (which
/// is finite and unspecified), a time at least half-way there: the step is
/// halved until it fits, and a zero step always does.
fn add_saturating(t: SystemTime, mut d: Duration) -> SystemTime {
    loop {
        if let Some(later) = t.checked_add(d) {
            return later;
        }
        d /= 2;
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
