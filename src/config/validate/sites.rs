//! Validation of the site keys: the `delivery.*` defaults of every site and
//! each `[delivery.site."<suffix>"]` rule, into [`SiteRules`]. An error
//! names the full key (`delivery.site."google.com".max_message_rate`) and
//! the layer it came from.

use regex::{Regex, RegexBuilder};

use super::*;
use crate::config::sites::{Rate, SiteRules, SiteSettings, SiteShape};

/// Most throttles in a row `suspend_after_throttles` may wait for.
const MAX_THROTTLES: u32 = 1000;
/// Bound of one compiled throttle pattern, and of its lazy DFA: the
/// regex crate's default (10 MB) times a few dozen rules, reloaded on
/// every SIGHUP, is more memory than patterns of a reply's words need.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The values of `[delivery]` that are the defaults of every site.
pub(super) struct SiteDefaults {
    /// What [`Validator::initial_connections`] made of the two names.
    pub(super) initial_connections: usize,
    pub(super) max_messages_per_connection: usize,
    pub(super) connection_cache_time: Duration,
}

impl Validator<'_> {
    /// The defaults of every site and each rule over them.
    pub(super) fn sites(
        &self,
        d: &DeliverySettings,
        inherited: SiteDefaults,
    ) -> Result<SiteRules, ConfigError> {
        let max_connections = self.within(
            "delivery.max_connections_per_site",
            d.max_connections_per_site,
            (1, MAX_CONNECTIONS),
            "no more connections than delivery.max_connections can ever be open",
        )?;
        let defaults = SiteShape {
            rule: None,
            max_connections,
            initial_connections: inherited.initial_connections.min(max_connections),
            max_messages_per_connection: inherited.max_messages_per_connection,
            max_message_rate: None,
            max_connection_rate: None,
            connection_cache_time: inherited.connection_cache_time,
            suspend_after_throttles: self.within(
                "delivery.suspend_after_throttles",
                d.suspend_after_throttles,
                (0, MAX_THROTTLES),
                "0 never suspends",
            )?,
            throttle_suspend_time: self.seconds(
                "delivery.throttle_suspend_time",
                d.throttle_suspend_time,
                (1, MAX_INTERVAL_SECS),
            )?,
            throttle_patterns: self.patterns("delivery.throttle_patterns", &d.throttle_patterns)?,
        };
        let mut rules: Vec<SiteShape> = Vec::with_capacity(d.site.len());
        for (written, settings) in &d.site {
            let rule = self.site_rule(written, settings, &defaults)?;
            if rules.iter().any(|other| other.rule == rule.rule) {
                return Err(self.invalid(
                    &format!("delivery.site.{written:?}"),
                    format!("{written:?}"),
                    "another table names the same suffix (suffixes are compared in \
                     lower case, without a final dot): merge the two",
                ));
            }
            rules.push(rule);
        }
        Ok(SiteRules::new(defaults, rules))
    }

    /// `delivery.initial_connections_per_site`, or its old name
    /// `delivery.initial_connections_per_domain` when only that one is set;
    /// both set to different values is an error, since one would be
    /// silently ignored.
    pub(super) fn initial_connections(&self, d: &DeliverySettings) -> Result<usize, ConfigError> {
        const NEW: &str = "delivery.initial_connections_per_site";
        const OLD: &str = "delivery.initial_connections_per_domain";
        let new = self.within(
            NEW,
            d.initial_connections_per_site,
            (1, MAX_CONNECTIONS),
            "",
        )?;
        let Some(old) = d.initial_connections_per_domain else {
            return Ok(new);
        };
        let old = self.within(OLD, old, (1, MAX_CONNECTIONS), "")?;
        if old == new || !self.is_set(NEW, new, DEFAULT_INITIAL_CONNECTIONS) {
            return Ok(old);
        }
        Err(self.invalid(
            OLD,
            old,
            format!(
                "it is the old name of {NEW}, which is set to {new}: \
                 remove {OLD} (slow start is per site now)"
            ),
        ))
    }

    /// Whether `key` was given by a layer other than the built-in defaults;
    /// without the layers (settings validated directly), whether it
    /// differs from `default`.
    fn is_set<T: PartialEq>(&self, key: &str, value: T, default: T) -> bool {
        match self.figment.and_then(|f| f.find_metadata(key)) {
            Some(metadata) => metadata.name != DEFAULTS_NAME,
            None => value != default,
        }
    }

    fn site_rule(
        &self,
        written: &str,
        s: &SiteSettings,
        defaults: &SiteShape,
    ) -> Result<SiteShape, ConfigError> {
        let table = format!("delivery.site.{written:?}");
        let key = |field: &str| format!("{table}.{field}");
        let suffix = self.suffix(&table, written)?;
        let max_connections = match s.max_connections {
            Some(n) => self.within(
                &key("max_connections"),
                n,
                (1, MAX_CONNECTIONS),
                "no more connections than delivery.max_connections can ever be open",
            )?,
            None => defaults.max_connections,
        };
        let initial_connections = match s.initial_connections {
            Some(n) => self.within(
                &key("initial_connections"),
                n,
                (1, max_connections),
                "no more than the site's max_connections",
            )?,
            None => defaults.initial_connections.min(max_connections),
        };
        let max_messages_per_connection = match s.max_messages_per_connection {
            Some(n) => self.within(&key("max_messages_per_connection"), n, (1, usize::MAX), "")?,
            None => defaults.max_messages_per_connection,
        };
        let connection_cache_time = match s.connection_cache_time {
            Some(secs) => self.seconds(
                &key("connection_cache_time"),
                secs,
                (0, MAX_CONNECTION_CACHE_SECS),
            )?,
            None => defaults.connection_cache_time,
        };
        let suspend_after_throttles = match s.suspend_after_throttles {
            Some(n) => self.within(
                &key("suspend_after_throttles"),
                n,
                (0, MAX_THROTTLES),
                "0 never suspends",
            )?,
            None => defaults.suspend_after_throttles,
        };
        let throttle_suspend_time = match s.throttle_suspend_time {
            Some(secs) => {
                self.seconds(&key("throttle_suspend_time"), secs, (1, MAX_INTERVAL_SECS))?
            }
            None => defaults.throttle_suspend_time,
        };
        let mut throttle_patterns = defaults.throttle_patterns.clone();
        throttle_patterns.extend(self.patterns(&key("throttle_patterns"), &s.throttle_patterns)?);
        Ok(SiteShape {
            rule: Some(suffix),
            max_connections,
            initial_connections,
            max_messages_per_connection,
            max_message_rate: self.rate(&key("max_message_rate"), s.max_message_rate.as_deref())?,
            max_connection_rate: self.rate(
                &key("max_connection_rate"),
                s.max_connection_rate.as_deref(),
            )?,
            connection_cache_time,
            suspend_after_throttles,
            throttle_suspend_time,
            throttle_patterns,
        })
    }

    /// A rule's suffix: a domain name in A-label form, lower-cased, a final
    /// dot dropped. An all-digit last label is refused: it could only be
    /// meant to match IP addresses, which are not host names.
    fn suffix(&self, table: &str, written: &str) -> Result<String, ConfigError> {
        let lower = written
            .strip_suffix('.')
            .unwrap_or(written)
            .to_ascii_lowercase();
        let numeric_tld = lower
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()));
        if valid_domain(&lower) && !numeric_tld {
            return Ok(lower);
        }
        let hint = match written.strip_prefix('.') {
            Some(rest) if valid_domain(&rest.to_ascii_lowercase()) => {
                format!(" (write {rest:?}: a suffix matches itself and the names under it)")
            }
            _ => String::new(),
        };
        Err(self.invalid(
            table,
            format!("{written:?}"),
            format!(
                "each site rule must be named by a domain name in A-label form (xn--… for \
                 IDNs), the suffix of the MX host names it applies to, such as \
                 [delivery.site.\"google.com\"]{hint}"
            ),
        ))
    }

    fn rate(&self, key: &str, text: Option<&str>) -> Result<Option<Rate>, ConfigError> {
        text.map(|text| {
            text.parse::<Rate>()
                .map_err(|e| self.invalid(key, format!("{text:?}"), e.to_string()))
        })
        .transpose()
    }

    /// Compiles each pattern, case-insensitive; an empty one would make
    /// every transient reply a throttle.
    fn patterns(&self, key: &str, patterns: &[String]) -> Result<Vec<Regex>, ConfigError> {
        patterns
            .iter()
            .map(|pattern| {
                if pattern.is_empty() {
                    return Err(self.invalid(
                        key,
                        "\"\"",
                        "an empty pattern matches every reply: remove it",
                    ));
                }
                RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .dfa_size_limit(PATTERN_SIZE_LIMIT)
                    .build()
                    .map_err(|e| {
                        self.invalid(
                            key,
                            format!("{pattern:?}"),
                            format!("not a regular expression (regex crate syntax): {e}"),
                        )
                    })
            })
            .collect()
    }
}
