//! What a sender does with its cached MTA-STS policy and the TXT answer it
//! has now (RFC 8461 §3.3, §5.1), and the cache entry's file form
//! (`.OTHER_SERVERS/.mta-sts/<domain>`), so that a restart keeps the
//! policies it learned: a policy protects only if an attacker who strips
//! the TXT record later cannot make the sender forget it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::policy::{Policy, PolicyError, Record};

/// A cached policy in use is fetched again after this long (RFC 8461
/// §3.3: "a suggested refresh frequency is once per day"), while it is
/// still used.
pub const REFRESH_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// After a failed fetch, the domain's policy is not fetched again for
/// this long: a broken policy host is not asked for every message.
pub const FETCH_RETRY: Duration = Duration::from_secs(5 * 60);

/// A policy as cached: its id, when it was fetched and until when it
/// holds (fetched + max_age, renewed by a refresh of the same id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    pub id: String,
    pub fetched: SystemTime,
    pub expires: SystemTime,
    pub policy: Policy,
}

/// The `_mta-sts` TXT lookup as the resolver answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    /// Exactly one valid record.
    Record(Record),
    /// No record, or none valid (RFC 8461 §3.1: no policy announced).
    NoRecord,
    /// The lookup failed (timeout, SERVFAIL): nothing is known.
    Failed,
}

/// What to do for a domain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Apply the cached policy.
    Use,
    /// Apply the cached policy, and fetch it again in the background to
    /// renew it ([`REFRESH_AFTER`]).
    Refresh,
    /// Fetch the policy before delivering. When the fetch fails, apply the
    /// cached policy if `fallback` (it has not expired: RFC 8461 §3.3
    /// says a sender MUST then apply it), else deliver as without one.
    Fetch { fallback: bool },
    /// The domain announces a policy, none is cached that could be used,
    /// and its last fetch failed less than [`FETCH_RETRY`] ago: deliver as
    /// without a policy, for the reason that fetch failed.
    FailedLately,
    /// No policy applies: deliver as without MTA-STS.
    NoPolicy,
}

impl Cached {
    /// A policy fetched at `now` for the record id `id`.
    pub fn new(id: String, policy: Policy, now: SystemTime) -> Cached {
        let expires = now + Duration::from_secs(policy.max_age);
        Cached {
            id,
            fetched: now,
            expires,
            policy,
        }
    }

    /// Whether it still holds at `now`.
    pub fn fresh(&self, now: SystemTime) -> bool {
        self.expires > now
    }
}

/// The decision for a domain with `cached` (if any) when its TXT lookup
/// answered `txt`; `failed_at` is the last failed fetch of its policy.
/// Removing the TXT record does not cancel a cached policy, and a fetch
/// that fails after the id changed keeps the old policy until it expires:
/// both are what an attacker on the path could cause.
pub fn decide(
    now: SystemTime,
    cached: Option<&Cached>,
    txt: &TxtAnswer,
    failed_at: Option<SystemTime>,
) -> Plan {
    let fresh = cached.filter(|c| c.fresh(now));
    let may_fetch = failed_at.is_none_or(|at| {
        now.duration_since(at)
            .is_ok_and(|since| since >= FETCH_RETRY)
    });
    match (txt, fresh) {
        (TxtAnswer::Record(record), Some(cached)) if record.id == cached.id => {
            let due = now
                .duration_since(cached.fetched)
                .is_ok_and(|age| age >= REFRESH_AFTER);
            if due && may_fetch {
                Plan::Refresh
            } else {
                Plan::Use
            }
        }
        (TxtAnswer::Record(_), fresh) if may_fetch => Plan::Fetch {
            fallback: fresh.is_some(),
        },
        (_, Some(_)) => Plan::Use,
        (TxtAnswer::Record(_), None) => Plan::FailedLately,
        (_, None) => Plan::NoPolicy,
    }
}

/// Why a cache file could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// A header line missing or malformed.
    #[error("the cache entry's {0} line is missing or malformed")]
    Header(&'static str),
    /// The policy stored in it no longer parses.
    #[error("the cached policy does not parse: {0}")]
    Policy(#[from] PolicyError),
}

impl Cached {
    /// The entry as a file: `id:`, `fetched:` and `expires:` (unix
    /// seconds), an empty line, the policy.
    pub fn encode(&self) -> String {
        format!(
            "id: {}\nfetched: {}\nexpires: {}\n\n{}",
            self.id,
            unix(self.fetched),
            unix(self.expires),
            self.policy
        )
    }

    /// Reads what [`Cached::encode`] wrote.
    pub fn decode(text: &str) -> Result<Cached, CacheError> {
        let (head, policy) = text.split_once("\n\n").ok_or(CacheError::Header("id"))?;
        let mut lines = head.lines();
        let mut field = |name: &'static str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix(": "))
                .ok_or(CacheError::Header(name))
        };
        let id = field("id")?.to_owned();
        let time = |text: &str, name| {
            text.parse::<u64>()
                .map(|s| UNIX_EPOCH + Duration::from_secs(s))
                .map_err(|_| CacheError::Header(name))
        };
        let fetched = time(field("fetched")?, "fetched")?;
        let expires = time(field("expires")?, "expires")?;
        let valid_id =
            !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid_id {
            return Err(CacheError::Header("id"));
        }
        Ok(Cached {
            id,
            fetched,
            expires,
            policy: Policy::parse(policy)?,
        })
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
