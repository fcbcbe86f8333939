//! MTA-STS (RFC 8461): a domain's published demand that mail to it go only
//! over verified TLS to the MX hosts it names. This is the pure part: the
//! TXT record and policy parsers, MX matching, and the cache decision; the
//! resolver actor does the lookups, the HTTPS fetch and the cache files.

mod cache;
pub mod http;
pub(crate) mod policy;

pub use cache::{decide, CacheError, Cached, Plan, TxtAnswer, FETCH_RETRY, REFRESH_AFTER};
pub use policy::{Mode, MxPattern, Policy, PolicyError, Record, RecordError, MAX_MAX_AGE};

#[cfg(test)]
mod tests;
