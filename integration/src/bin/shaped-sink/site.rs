//! What one receiving site is and what it did: its configuration (a cap on
//! connections at once, a message rate, greylisting), the shared state that
//! enforces it (a token bucket, the greylist), and its counters.
//!
//! The decisions are pure types that take `now` ([`TokenBucket`],
//! [`Greylist`]); [`Site`] holds them behind a lock for the connections of
//! the site, which all run on one thread.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a site answers a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A working SMTP server (within its limits).
    Serve,
    /// Accepts the connection and never says anything (a black-holed host
    /// behind a broken firewall or an overloaded server): the client waits
    /// for its greeting timeout.
    Blackhole,
}

/// Where the message rate is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RateAt {
    /// MAIL FROM is refused when the site is over its rate (Yahoo's
    /// `TSS04`, Microsoft's `4.7.650`): nothing was sent.
    Mail,
    /// The reply to the final dot refuses the message (Gmail's `4.7.28`):
    /// the client sent it for nothing.
    DataEnd,
}

/// A message rate over the whole site (all its connections).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Messages per second, sustained.
    pub per_second: f64,
    /// Messages that may come at once after a quiet spell.
    pub burst: f64,
    pub at: RateAt,
    /// The whole reply line(s) without CRLF, e.g. `421 4.7.28 ... rate
    /// limited`. A 421 closes the connection after it.
    pub reply: String,
}

/// Greylisting (RFC 6647): the first attempt of a (sender, recipient) pair
/// is answered 4xx at RCPT; one at least `delay_ms` later is accepted.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GreyConfig {
    pub delay_ms: u64,
    pub reply: String,
}

/// One site of the receiver's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    /// A label shared by sites reported together ("provider-a", "tail").
    #[serde(default)]
    pub group: String,
    /// The addresses it listens on (port from the receiver's config).
    pub addrs: Vec<std::net::IpAddr>,
    pub mode: Mode,
    /// Connections served at once; one more is greeted with `busy_reply`
    /// and closed (Exim's `smtp_accept_max`). None: no cap.
    #[serde(default)]
    pub max_connections: Option<u64>,
    #[serde(default = "default_busy")]
    pub busy_reply: String,
    #[serde(default)]
    pub rate: Option<RateConfig>,
    #[serde(default)]
    pub greylist: Option<GreyConfig>,
}

fn default_busy() -> String {
    "421 4.7.0 Too many concurrent SMTP connections; please try again later".into()
}

/// A token bucket: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(per_second: f64, burst: f64, now: Instant) -> TokenBucket {
        let burst = burst.max(1.0);
        TokenBucket {
            per_second,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes one token if there is one at `now`.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The greylist: when each key was first seen.
#[derive(Debug, Default)]
pub struct Greylist {
    first_seen: HashMap<String, Instant>,
}

impl Greylist {
    /// Whether `key` passes at `now`: seen at least `delay` ago. The first
    /// sight of a key is recorded and does not pass.
    pub fn pass(&mut self, key: &str, delay: Duration, now: Instant) -> bool {
        match self.first_seen.get(key) {
            Some(first) => now.saturating_duration_since(*first) >= delay,
            None => {
                self.first_seen.insert(key.to_owned(), now);
                false
            }
        }
    }
}

/// What a site counts.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted (the refused ones included).
    pub connections: AtomicU64,
    /// Connections greeted with the busy reply and closed.
    pub refused: AtomicU64,
    /// Connections open now, and the most at once (the served ones).
    pub active: AtomicU64,
    pub peak_active: AtomicU64,
    /// Throttle replies given (MAIL or final dot).
    pub throttled: AtomicU64,
    /// Greylisting replies given.
    pub greylisted: AtomicU64,
    /// Messages accepted (250 after the final dot), repeats included.
    pub messages: AtomicU64,
    /// Recipients accepted in a message for the first time.
    pub unique: AtomicU64,
}

/// The counters as numbers, for the stats file.
#[derive(Debug, Default, Clone, Serialize)]
pub struct CounterValues {
    pub connections: u64,
    pub refused: u64,
    pub peak_active: u64,
    pub throttled: u64,
    pub greylisted: u64,
    pub messages: u64,
    pub unique: u64,
}

impl CounterValues {
    /// Adds `other` in (peaks add too: sites of one group are distinct
    /// servers, so their peaks add up to the group's worst case).
    pub fn add(&mut self, other: &CounterValues) {
        self.connections += other.connections;
        self.refused += other.refused;
        self.peak_active += other.peak_active;
        self.throttled += other.throttled;
        self.greylisted += other.greylisted;
        self.messages += other.messages;
        self.unique += other.unique;
    }
}

/// One site: its configuration, the state that enforces it, its counters.
pub struct Site {
    pub config: SiteConfig,
    pub counters: Counters,
    bucket: Option<Mutex<TokenBucket>>,
    greylist: Mutex<Greylist>,
}

/// Which connection a site lets in.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    Serve,
    /// Over the cap: greet with the busy reply and close.
    Busy,
}

impl Site {
    pub fn new(config: SiteConfig, now: Instant) -> Site {
        let bucket = config
            .rate
            .as_ref()
            .map(|r| Mutex::new(TokenBucket::new(r.per_second, r.burst, now)));
        Site {
            config,
            counters: Counters::default(),
            bucket,
            greylist: Mutex::new(Greylist::default()),
        }
    }

    /// Counts a new connection and says whether it is served. A served one
    /// must be given back with [`Site::leave`].
    pub fn admit(&self) -> Admission {
        let c = &self.counters;
        c.connections.fetch_add(1, Ordering::Relaxed);
        let active = c.active.fetch_add(1, Ordering::Relaxed) + 1;
        if self.config.max_connections.is_some_and(|max| active > max) {
            c.active.fetch_sub(1, Ordering::Relaxed);
            c.refused.fetch_add(1, Ordering::Relaxed);
            return Admission::Busy;
        }
        c.peak_active.fetch_max(active, Ordering::Relaxed);
        Admission::Serve
    }

    /// Counts a connection that no cap applies to (a black hole's); give
    /// it back with [`Site::leave`] too.
    pub fn admit_uncapped(&self) {
        let c = &self.counters;
        c.connections.fetch_add(1, Ordering::Relaxed);
        let active = c.active.fetch_add(1, Ordering::Relaxed) + 1;
        c.peak_active.fetch_max(active, Ordering::Relaxed);
    }

    /// A served connection ended.
    pub fn leave(&self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
    }

    /// The throttle reply when a message at `at` is over the site's rate;
    /// None when it may go on (and then it used its token).
    pub fn over_rate(&self, at: RateAt, now: Instant) -> Option<&str> {
        let rate = self.config.rate.as_ref().filter(|r| r.at == at)?;
        let bucket = self.bucket.as_ref()?;
        if lock(bucket).take(now) {
            None
        } else {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
            Some(&rate.reply)
        }
    }

    /// The greylisting reply for `sender` → `recipient` at `now`, if any.
    pub fn greylisted(&self, sender: &str, recipient: &str, now: Instant) -> Option<&str> {
        let grey = self.config.greylist.as_ref()?;
        let key = format!("{}\0{}", sender, recipient.to_ascii_lowercase());
        if lock(&self.greylist).pass(&key, Duration::from_millis(grey.delay_ms), now) {
            None
        } else {
            self.counters.greylisted.fetch_add(1, Ordering::Relaxed);
            Some(&grey.reply)
        }
    }

    pub fn values(&self) -> CounterValues {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterValues {
            connections: get(&c.connections),
            refused: get(&c.refused),
            peak_active: get(&c.peak_active),
            throttled: get(&c.throttled),
            greylisted: get(&c.greylisted),
            messages: get(&c.messages),
            unique: get(&c.unique),
        }
    }
}

/// Locks `m`; a connection task that panicked while holding it leaves the
/// state as it was, which is still usable for counting.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_gives_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0, t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms refill one token at 10/s.
        assert!(!b.take(t0 + Duration::from_millis(50)));
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // A long pause fills it to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(later)).count(), 3);
    }

    #[test]
    fn greylist_passes_a_retry_after_the_delay_only() {
        let t0 = Instant::now();
        let mut g = Greylist::default();
        let delay = Duration::from_secs(1);
        assert!(!g.pass("a", delay, t0));
        assert!(!g.pass("a", delay, t0 + Duration::from_millis(999)));
        assert!(g.pass("a", delay, t0 + Duration::from_secs(1)));
        assert!(!g.pass("b", delay, t0 + Duration::from_secs(5)));
    }

    fn site(max: Option<u64>) -> Site {
        let config = SiteConfig {
            name: "s".into(),
            group: String::new(),
            addrs: vec![],
            mode: Mode::Serve,
            max_connections: max,
            busy_reply: default_busy(),
            rate: None,
            greylist: None,
        };
        Site::new(config, Instant::now())
    }

    #[test]
    fn a_capped_site_refuses_past_its_cap_and_frees_a_slot_on_leave() {
        let s = site(Some(2));
        assert_eq!(s.admit(), Admission::Serve);
        assert_eq!(s.admit(), Admission::Serve);
        assert_eq!(s.admit(), Admission::Busy);
        s.leave();
        assert_eq!(s.admit(), Admission::Serve);
        let v = s.values();
        assert_eq!((v.connections, v.refused, v.peak_active), (4, 1, 2));
    }
}
