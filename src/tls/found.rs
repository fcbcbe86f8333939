//! What the resolver found out about a destination's transport security:
//! DANE TLSA records per MX host (RFC 7672) and the domain's MTA-STS
//! policy (RFC 8461). The actors look them up and hand them in on the
//! route; the per-host decision turns them and the configured level into what
//! a connection requires.

use std::fmt;
use std::sync::Arc;

use crate::dane::Tlsa;
use crate::mta_sts::Policy;

/// DANE for one MX host, as DNS answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneStatus {
    /// DANE does not apply to this host, and why.
    NotApplicable(NoDane),
    /// The host's TLSA RRset is DNSSEC-secure and has records usable for
    /// SMTP (DANE-TA or DANE-EE): TLS with a certificate that matches one
    /// of them is required (RFC 7672 §2.2).
    Usable(Arc<[Tlsa]>),
    /// The TLSA RRset is secure but every record is unusable for SMTP:
    /// TLS is still required, without authentication (RFC 7672 §2.2,
    /// Postfix's "can't authenticate" → `encrypt`).
    Unusable,
    /// The TLSA lookup failed (SERVFAIL, a bogus answer, a timeout): the
    /// host may have records that cannot be seen, so delivery to it waits
    /// rather than downgrade (RFC 7672 §2.2).
    Failed(String),
}

impl Default for DaneStatus {
    fn default() -> Self {
        DaneStatus::NotApplicable(NoDane::NotLooked)
    }
}

/// Why DANE does not apply to a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDane {
    /// Not looked up: DANE is off, or the host is a configured next hop.
    NotLooked,
    /// No validating resolver answers (`dns.dnssec` off, or the probe saw
    /// no authenticated answer).
    DnssecUnavailable,
    /// The domain's MX RRset is not DNSSEC-secure (RFC 7672 §2.2.1).
    InsecureMx,
    /// The host's address records are not DNSSEC-secure (RFC 7672 §2.2.2).
    InsecureHost,
    /// The host has no TLSA records (NXDOMAIN or NODATA, securely denied).
    NoTlsa,
    /// The TLSA records come from an unsigned zone.
    InsecureTlsa,
}

impl fmt::Display for NoDane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoDane::NotLooked => "not looked up",
            NoDane::DnssecUnavailable => "no DNSSEC validation",
            NoDane::InsecureMx => "MX records not DNSSEC-signed",
            NoDane::InsecureHost => "MX host address not DNSSEC-signed",
            NoDane::NoTlsa => "no TLSA records",
            NoDane::InsecureTlsa => "TLSA records not DNSSEC-signed",
        })
    }
}

/// A destination domain's MTA-STS policy, as far as it could be had.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StsStatus {
    /// Not looked up: MTA-STS is off, the domain goes to a configured next
    /// hop, or the route was made without it.
    #[default]
    NotLooked,
    /// The domain publishes no policy (no `_mta-sts` TXT record, none
    /// cached).
    NoPolicy,
    /// A policy applies: fetched now, or cached and not expired.
    Policy(Arc<ActiveSts>),
    /// The domain announces a policy but none could be had and none is
    /// cached: delivery goes on as without one (RFC 8461 §5), and TLS-RPT
    /// reports the problem.
    Unavailable(StsProblem),
}

/// A policy in force for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveSts {
    /// The `id` of the TXT record it was fetched under.
    pub id: String,
    pub policy: Policy,
}

/// Why a policy announced in DNS could not be had (RFC 8460 §4.3.3's
/// MTA-STS result types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsProblem {
    /// The HTTPS fetch failed: no address, no connection, a status other
    /// than 200, a timeout, a body over the limit (`sts-policy-fetch-error`).
    Fetch(String),
    /// The policy server's certificate is not valid for
    /// `mta-sts.<domain>` (`sts-webpki-invalid`).
    WebPki(String),
    /// The body is not a valid policy (`sts-policy-invalid`).
    Invalid(String),
}

impl fmt::Display for StsProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StsProblem::Fetch(why) => write!(f, "MTA-STS policy fetch failed: {why}"),
            StsProblem::WebPki(why) => write!(f, "MTA-STS policy server certificate: {why}"),
            StsProblem::Invalid(why) => write!(f, "MTA-STS policy invalid: {why}"),
        }
    }
}
