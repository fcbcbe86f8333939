//! Sites and their shaping rules: how many connections a receiving site
//! gets, how many messages ride on each, how fast messages and connections
//! may go, and when its throttle replies suspend it. A site is the set of
//! MX host names a route leads to; a rule (`[delivery.site."<suffix>"]`)
//! applies to a site when one of its host names ends in the rule's suffix,
//! label by label, as KumoMTA's `MXSuffix` and PowerMTA's mx-rollup match
//! providers. Keys a rule leaves out come from the `delivery.*` defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::smtp::{throttle, Reply, Stage};

/// The most events a [`Rate`] may count in its period: beyond a million a
/// second the interval between two is below a microsecond.
pub const MAX_RATE_COUNT: u32 = 1_000_000;
/// The longest period of a [`Rate`]: one day.
pub const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// `count` events per `per`: `"20/s"`, `"300/m"`, `"5000/h"`, or with a
/// multiple of the unit, `"10/5m"`. Enforced smoothly: one event every
/// [`Rate::interval`], not `count` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Events in each period, 1–[`MAX_RATE_COUNT`].
    pub count: u32,
    /// The period, a whole number of seconds up to [`MAX_RATE_PERIOD`].
    pub per: Duration,
}

impl Rate {
    /// The time between two events: `per / count`.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

/// Why a rate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// There is no `/` between the count and the unit.
    #[error("expected a count, '/' and a unit, such as \"20/s\", \"300/m\" or \"5000/h\"")]
    Shape,
    /// The count is not a whole number from 1 to [`MAX_RATE_COUNT`].
    #[error("the count must be a whole number from 1 to {MAX_RATE_COUNT}")]
    Count,
    /// The unit is not `s`, `m` or `h`, optionally after a multiple.
    #[error("the unit must be s, m or h (seconds, minutes, hours), optionally after a number, such as \"10/5m\"")]
    Unit,
    /// The period is longer than [`MAX_RATE_PERIOD`].
    #[error("the period must be at most a day (24h)")]
    Period,
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let (count, period) = text.split_once('/').ok_or(RateError::Shape)?;
        let count = count.trim();
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RateError::Count);
        }
        let count: u32 = count.parse().map_err(|_| RateError::Count)?;
        if !(1..=MAX_RATE_COUNT).contains(&count) {
            return Err(RateError::Count);
        }
        let period = period.trim();
        let digits = period.bytes().take_while(u8::is_ascii_digit).count();
        let (multiple, unit) = period.split_at(digits);
        let unit_secs: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            _ => return Err(RateError::Unit),
        };
        let multiple: u64 = match multiple {
            "" => 1,
            digits => match digits.parse() {
                Ok(0) | Err(_) => return Err(RateError::Unit),
                Ok(n) => n,
            },
        };
        let per = multiple
            .checked_mul(unit_secs)
            .map(Duration::from_secs)
            .filter(|per| *per <= MAX_RATE_PERIOD)
            .ok_or(RateError::Period)?;
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    /// `"20/s"`, `"300/m"`, `"5000/h"`, `"10/5m"`: the largest unit that
    /// divides the period.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.per.as_secs();
        let (multiple, unit) = if secs.is_multiple_of(3600) && secs > 0 {
            (secs / 3600, "h")
        } else if secs.is_multiple_of(60) && secs > 0 {
            (secs / 60, "m")
        } else {
            (secs, "s")
        };
        write!(f, "{}/", self.count)?;
        if multiple != 1 {
            write!(f, "{multiple}")?;
        }
        f.write_str(unit)
    }
}

/// How postman treats one site: the `delivery.*` defaults, or a rule's
/// values over them.
#[derive(Clone, Debug)]
pub struct SiteShape {
    /// The suffix of the rule that matched; `None`: the defaults.
    pub rule: Option<String>,
    /// Connections open to the site at once (`max_connections`,
    /// `delivery.max_connections_per_site`), 1–900.
    pub max_connections: usize,
    /// Connections the site starts with before slow start earns it more
    /// (`initial_connections`, `delivery.initial_connections_per_site`),
    /// 1–`max_connections`.
    pub initial_connections: usize,
    /// Messages over one connection before it is closed
    /// (`max_messages_per_connection`), ≥ 1.
    pub max_messages_per_connection: usize,
    /// Messages (transactions) started on the whole site, at most; `None`:
    /// no limit.
    pub max_message_rate: Option<Rate>,
    /// Connections opened to the whole site, at most; `None`: no limit.
    pub max_connection_rate: Option<Rate>,
    /// How long a connection with nothing to carry waits for more mail of
    /// the site (`connection_cache_time`), 0–300 s.
    pub connection_cache_time: Duration,
    /// Throttle replies in a row, with no message delivered between, after
    /// which the site is suspended; 0: never.
    pub suspend_after_throttles: u32,
    /// How long such a suspension lasts (`throttle_suspend_time`).
    pub throttle_suspend_time: Duration,
    /// Patterns of replies that are throttles at this site beside the
    /// built-in ones (case-insensitive, matched against the reply as one
    /// line: `"421 4.7.0 text"`): `delivery.throttle_patterns`, then the
    /// rule's own.
    pub throttle_patterns: Vec<Regex>,
}

impl SiteShape {
    /// Whether `reply` to `stage` is this site limiting the client (see
    /// [`throttle::is_throttle`]), with the site's own patterns.
    pub fn is_throttle(&self, stage: Stage, reply: &Reply) -> bool {
        throttle::is_throttle(stage, reply, &self.throttle_patterns)
    }

    /// Whether this shape's rule applies to MX host `host`: `host` is the
    /// suffix or ends in `.` and the suffix (ASCII case ignored, a final
    /// dot ignored). The defaults apply to every host.
    pub fn matches(&self, host: &str) -> bool {
        match &self.rule {
            None => true,
            Some(suffix) => suffix_matches(suffix, host),
        }
    }
}

impl fmt::Display for SiteShape {
    /// One line of `key=value`, in the keys' own names and units, for
    /// `check-config` and logs: `max_connections=10 initial_connections=5
    /// max_messages_per_connection=50 max_message_rate=300/m
    /// max_connection_rate=none connection_cache_time=2s
    /// suspend_after_throttles=5 throttle_suspend_time=300s
    /// throttle_patterns=["slow down"]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn rate(rate: Option<Rate>) -> String {
            rate.map_or_else(|| "none".to_owned(), |rate| rate.to_string())
        }
        let patterns: Vec<&str> = self.throttle_patterns.iter().map(Regex::as_str).collect();
        write!(
            f,
            "max_connections={} initial_connections={} max_messages_per_connection={} \
             max_message_rate={} max_connection_rate={} connection_cache_time={}s \
             suspend_after_throttles={} throttle_suspend_time={}s throttle_patterns={:?}",
            self.max_connections,
            self.initial_connections,
            self.max_messages_per_connection,
            rate(self.max_message_rate),
            rate(self.max_connection_rate),
            self.connection_cache_time.as_secs(),
            self.suspend_after_throttles,
            self.throttle_suspend_time.as_secs(),
            patterns,
        )
    }
}

impl Default for SiteShape {
    /// The built-in defaults (those of `config/postman.toml`).
    fn default() -> SiteShape {
        SiteShape {
            rule: None,
            max_connections: 20,
            initial_connections: 5,
            max_messages_per_connection: 100,
            max_message_rate: None,
            max_connection_rate: None,
            connection_cache_time: Duration::from_secs(2),
            suspend_after_throttles: 5,
            throttle_suspend_time: Duration::from_secs(300),
            throttle_patterns: Vec::new(),
        }
    }
}

/// Shapes are equal when their values are, patterns compared as written
/// (`Regex` has no equality of its own).
impl PartialEq for SiteShape {
    fn eq(&self, other: &SiteShape) -> bool {
        self.rule == other.rule
            && self.max_connections == other.max_connections
            && self.initial_connections == other.initial_connections
            && self.max_messages_per_connection == other.max_messages_per_connection
            && self.max_message_rate == other.max_message_rate
            && self.max_connection_rate == other.max_connection_rate
            && self.connection_cache_time == other.connection_cache_time
            && self.suspend_after_throttles == other.suspend_after_throttles
            && self.throttle_suspend_time == other.throttle_suspend_time
            && self.throttle_patterns.len() == other.throttle_patterns.len()
            && self
                .throttle_patterns
                .iter()
                .zip(&other.throttle_patterns)
                .all(|(a, b)| a.as_str() == b.as_str())
    }
}

impl Eq for SiteShape {}

/// Whether `host` is `suffix` or lies under it, label-wise: `google.com`
/// matches `aspmx.l.google.com` and `google.com`, never `notgoogle.com`.
pub fn suffix_matches(suffix: &str, host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).as_bytes();
    let suffix = suffix.as_bytes();
    if host.len() < suffix.len() {
        return false;
    }
    let (head, tail) = host.split_at(host.len() - suffix.len());
    tail.eq_ignore_ascii_case(suffix) && (head.is_empty() || head.ends_with(b"."))
}

/// The defaults and every rule, validated: what
/// `[delivery]` and its `[delivery.site."<suffix>"]` tables say.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SiteRules {
    defaults: SiteShape,
    /// Longest suffix first, then by name, so the first match is the one
    /// that applies.
    rules: Vec<SiteShape>,
}

impl SiteRules {
    /// Rules over `defaults`; each rule's `rule` must be `Some(suffix)`
    /// (lower-case, no final dot), as validation makes them. A rule
    /// without a suffix is dropped: it could only shadow the defaults.
    pub fn new(defaults: SiteShape, rules: Vec<SiteShape>) -> SiteRules {
        let mut rules: Vec<SiteShape> = rules.into_iter().filter(|r| r.rule.is_some()).collect();
        rules.sort_by(|a, b| {
            let (a, b) = (
                a.rule.as_deref().unwrap_or(""),
                b.rule.as_deref().unwrap_or(""),
            );
            b.len().cmp(&a.len()).then_with(|| a.cmp(b))
        });
        SiteRules { defaults, rules }
    }

    /// The shape for a site whose MX host names are `hosts`: the rule whose
    /// suffix is the longest that matches any of them, label-wise
    /// (`"google.com"` matches `aspmx.l.google.com` and `google.com`, never
    /// `notgoogle.com`), its unset keys from the defaults; else the defaults.
    pub fn shape_for(&self, hosts: &[&str]) -> SiteShape {
        self.rules
            .iter()
            .find(|rule| hosts.iter().any(|host| rule.matches(host)))
            .unwrap_or(&self.defaults)
            .clone()
    }

    /// The shape of a site no rule matches.
    pub fn defaults(&self) -> &SiteShape {
        &self.defaults
    }

    /// Every rule, in the order they are tried: longest suffix first.
    pub fn rules(&self) -> &[SiteShape] {
        &self.rules
    }
}

/// One `[delivery.site."<suffix>"]` table as written: every key optional,
/// an unset one taken from the `delivery.*` defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSettings {
    /// Connections open to the site at once (Postfix's
    /// `<transport>_destination_concurrency_limit`, KumoMTA's
    /// `connection_limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections the site starts with (Postfix's
    /// `initial_destination_concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_connections: Option<usize>,
    /// Messages per connection (KumoMTA's `max_deliveries_per_connection`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_per_connection: Option<usize>,
    /// `"20/s"`, `"300/m"`, `"5000/h"`: messages started on the site
    /// (KumoMTA's `max_message_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_rate: Option<String>,
    /// Connections opened to the site (KumoMTA's `max_connection_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connection_rate: Option<String>,
    /// Seconds an idle connection waits for more mail of the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_cache_time: Option<u64>,
    /// Throttles in a row before the site is suspended; 0: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend_after_throttles: Option<u32>,
    /// Seconds a suspension lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_suspend_time: Option<u64>,
    /// More throttle patterns (regular expressions, case-insensitive),
    /// added to `delivery.throttle_patterns`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttle_patterns: Vec<String>,
}

#[cfg(test)]
#[path = "sites_tests.rs"]
mod tests;
