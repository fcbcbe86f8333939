//! MX routing policy, pure: the actors do the DNS lookups and hand the
//! answers in. Preference order and implicit MX (RFC 5321 §5.1), null MX
//! (RFC 7505), the verdict when no host has an address, and the addresses
//! never connected to (loop protection).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::dsn;
use crate::routing::Hop;
use crate::smtp::{Class, EnhancedCode};
use crate::tls::{DaneStatus, StsStatus};

/// The answer to an MX query for a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records as (preference, exchange), in any order.
    Records(Vec<(u16, String)>),
    /// The name exists but has no MX record (NOERROR, empty answer).
    NoRecords,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The lookup failed (timeout, SERVFAIL, …); the text says how.
    Failed(String),
}

/// The answer to the A and AAAA queries for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrAnswer {
    /// The host's addresses, in the order to try them.
    Addrs(Vec<IpAddr>),
    /// The name exists but has no A or AAAA record.
    NoRecords,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The lookup failed (timeout, SERVFAIL, …); the text says how.
    Failed(String),
}

/// Why a domain has no route: each kind knows whether it bounces or
/// defers and its RFC 3463 status, so that the dispatcher never reads them
/// from the text, which is for logs and bounces only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain's MX records are only the null MX (RFC 7505): it
    /// accepts no mail.
    #[error("domain {domain} does not accept mail (null MX)")]
    NullMx {
        /// The recipient domain.
        domain: String,
    },
    /// The MX query answered NXDOMAIN: the domain does not exist.
    #[error("domain {domain} does not exist")]
    NoSuchDomain {
        /// The recipient domain.
        domain: String,
    },
    /// The domain has no MX record and no address of its own (RFC 5321
    /// §5.1: no implicit MX either).
    #[error("no MX and no A/AAAA record for {domain}")]
    NoMailHost {
        /// The recipient domain.
        domain: String,
    },
    /// The MX query failed (timeout, SERVFAIL, …).
    #[error("MX lookup for {domain} failed: {why}")]
    MxLookupFailed {
        /// The recipient domain.
        domain: String,
        /// The resolver's account of the failure.
        why: String,
    },
    /// No host has an address, and the address lookup of at least one of
    /// them failed.
    #[error("cannot resolve mail hosts for {domain} ({})", Unresolved::list(.hosts))]
    AddressLookupFailed {
        /// The recipient domain.
        domain: String,
        /// Every host, with why it has no address.
        hosts: Vec<Unresolved>,
    },
    /// The MX records name hosts none of which has an address: a
    /// misconfiguration that may be fixed, so not a bounce.
    #[error("no MX host of {domain} has an address ({})", Unresolved::list(.hosts))]
    NoMxAddress {
        /// The recipient domain.
        domain: String,
        /// Every host, with why it has no address.
        hosts: Vec<Unresolved>,
    },
    /// There was no host to look up at all.
    #[error("no MX host to try for {domain}")]
    NoHostToTry {
        /// The recipient domain.
        domain: String,
    },
    /// A configured next hop (relay host, transport entry) has no address
    /// now. Never permanent: the operator's relay being down or misnamed
    /// is no reason to bounce the sender's mail.
    #[error("relay {relay} for {domain} is unreachable: {why}")]
    RelayUnresolved {
        /// The recipient domain.
        domain: String,
        /// The next hop as written.
        relay: String,
        /// Why it has no address.
        why: String,
    },
}

impl RouteError {
    /// Bounce (the domain can never receive mail) or defer (it may later).
    pub fn class(&self) -> Class {
        match self {
            RouteError::NullMx { .. }
            | RouteError::NoSuchDomain { .. }
            | RouteError::NoMailHost { .. } => Class::Permanent,
            RouteError::MxLookupFailed { .. }
            | RouteError::AddressLookupFailed { .. }
            | RouteError::NoMxAddress { .. }
            | RouteError::NoHostToTry { .. }
            | RouteError::RelayUnresolved { .. } => Class::Transient,
        }
    }

    /// The domain can never receive mail: its messages bounce.
    pub fn is_permanent(&self) -> bool {
        self.class() == Class::Permanent
    }

    /// The RFC 3463 status reported for the recipients.
    pub fn status(&self) -> EnhancedCode {
        match self {
            RouteError::NullMx { .. } => dsn::STATUS_NULL_MX,
            RouteError::NoSuchDomain { .. } => dsn::STATUS_NO_SUCH_DOMAIN,
            RouteError::NoMailHost { .. } => dsn::STATUS_PERMANENT,
            RouteError::MxLookupFailed { .. }
            | RouteError::AddressLookupFailed { .. }
            | RouteError::RelayUnresolved { .. } => dsn::STATUS_ROUTING_SERVER,
            RouteError::NoMxAddress { .. } | RouteError::NoHostToTry { .. } => {
                dsn::STATUS_UNROUTABLE
            }
        }
    }
}

/// A mail host without an address, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    /// Host name, lower-case, no trailing dot.
    pub host: String,
    /// What its address lookup answered.
    pub problem: AddrProblem,
}

/// Why a host has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrProblem {
    /// The name exists but has no A or AAAA record.
    NoRecords,
    /// The name does not exist (NXDOMAIN).
    NotFound,
    /// The lookup failed; the text says how.
    Failed(String),
}

impl Unresolved {
    /// `a: why; b: why`, for the error's text.
    fn list(hosts: &[Unresolved]) -> String {
        let all: Vec<String> = hosts.iter().map(Unresolved::to_string).collect();
        all.join("; ")
    }
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        match &self.problem {
            AddrProblem::NoRecords => write!(f, "{host}: no A/AAAA record"),
            AddrProblem::NotFound => write!(f, "{host}: host not found"),
            AddrProblem::Failed(why) => write!(f, "{host}: address lookup failed: {why}"),
        }
    }
}

/// One host to connect to, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name, lower-case, no trailing dot; for a next hop written as
    /// an address, the address.
    pub name: String,
    /// Addresses in the order the lookup gave them (never empty).
    pub addrs: Vec<IpAddr>,
    /// How it is reached: the domain's MX or a configured next hop, with
    /// the port, TLS, AUTH and source address that go with it.
    pub hop: Arc<Hop>,
    /// What DNSSEC said about its TLSA records (RFC 7672).
    pub dane: DaneStatus,
}

impl Host {
    /// A host reached by MX delivery with the default settings.
    pub fn new(name: impl Into<String>, addrs: Vec<IpAddr>) -> Host {
        Host {
            name: name.into(),
            addrs,
            hop: Arc::default(),
            dane: DaneStatus::default(),
        }
    }
}

/// Where to deliver a domain's mail: hosts in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Never empty; every address of a host comes before the next host.
    pub hosts: Vec<Host>,
    /// The domain's MTA-STS policy (RFC 8461).
    pub sts: StsStatus,
}

impl Route {
    /// The route through `hosts`, with no MTA-STS policy looked up.
    pub fn new(hosts: Vec<Host>) -> Route {
        Route {
            hosts,
            sts: StsStatus::default(),
        }
    }

    /// The route with every host reached by `hop`.
    pub fn by(mut self, hop: &Arc<Hop>) -> Route {
        for host in &mut self.hosts {
            host.hop = Arc::clone(hop);
        }
        self
    }
}

/// MX hosts in the order to try them: preference ascending, equal
/// preferences shuffled deterministically from `seed` (RFC 5321 §5.1 asks
/// for randomisation among equals), names lower-cased without the trailing
/// dot, duplicates dropped, at most `limit` of them. `NoRecords` (or an
/// empty record list) gives the implicit MX, the domain itself. A null MX
/// (RFC 7505: the only record's exchange is ".") and NXDOMAIN are
/// permanent; a null MX record beside real ones is ignored; a failed
/// lookup is transient.
///
/// `limit` is `delivery.max_mx_addresses`: every host that resolves gives
/// at least one address and an attempt tries no more addresses than that,
/// so the hosts after the first `limit` would never be tried. Their address
/// lookups are not made either: a domain with a thousand MX records costs a
/// thousand queries otherwise (Postfix's `smtp_mx_address_limit` bounds the
/// same). A host that does not resolve still uses up its place.
pub fn mx_hosts(
    domain: &str,
    answer: MxAnswer,
    seed: u64,
    limit: usize,
) -> Result<Vec<String>, RouteError> {
    let domain = normalise(domain);
    let mut records = match answer {
        MxAnswer::Records(records) if !records.is_empty() => records,
        MxAnswer::Records(_) | MxAnswer::NoRecords => return Ok(vec![domain]),
        MxAnswer::NxDomain => return Err(RouteError::NoSuchDomain { domain }),
        MxAnswer::Failed(why) => return Err(RouteError::MxLookupFailed { domain, why }),
    };
    for (_, host) in &mut records {
        *host = normalise(host);
    }
    records.retain(|(_, host)| !host.is_empty());
    if records.is_empty() {
        // RFC 7505 §3: a lone null MX says the domain accepts no mail. Several
        // null records and nothing else say the same, if less correctly.
        return Err(RouteError::NullMx { domain });
    }
    records.sort_by_key(|(preference, _)| *preference);
    let mut rng = SplitMix64(seed);
    let mut start = 0;
    while start < records.len() {
        let preference = records[start].0;
        let end = start
            + records[start..]
                .iter()
                .take_while(|(p, _)| *p == preference)
                .count();
        shuffle(&mut records[start..end], &mut rng);
        start = end;
    }
    let limit = limit.max(1);
    let mut hosts: Vec<String> = Vec::with_capacity(records.len().min(limit));
    for (_, host) in records {
        if hosts.len() == limit {
            break;
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    Ok(hosts)
}

/// Where a domain's connections go: the site its MX records name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteName {
    /// The MX host names by preference, then by name (so that the shuffle
    /// among equals does not split a site): `,` between names of one
    /// preference, `;` before the next preference; at most
    /// [`SITE_NAME_HOSTS`] of them, then `;+<n>` for the rest. The domain
    /// itself for an implicit MX.
    pub name: String,
    /// Every host name of the records, in the same order (for shaping
    /// rules).
    pub hosts: Vec<String>,
}

/// Host names spelt out in a site name: enough for every provider's MX
/// set, short enough for a log field and a file name.
pub const SITE_NAME_HOSTS: usize = 8;

/// The site of a domain with these MX records: domains whose records name
/// the same hosts in the same preference order share one, whatever the
/// shuffle among equal preferences; a
/// domain without MX records (or an answer that gives no route) is a site
/// of its own. A null MX record beside real ones is ignored, as
/// [`mx_hosts`] does.
pub fn site_name(domain: &str, answer: &MxAnswer) -> SiteName {
    let mut records: Vec<(u16, String)> = match answer {
        MxAnswer::Records(records) => records
            .iter()
            .map(|(preference, host)| (*preference, normalise(host)))
            .filter(|(_, host)| !host.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    if records.is_empty() {
        let domain = normalise(domain);
        return SiteName {
            name: domain.clone(),
            hosts: vec![domain],
        };
    }
    records.sort();
    let mut hosts: Vec<String> = Vec::with_capacity(records.len());
    let mut name = String::new();
    let mut last_preference = None;
    for (preference, host) in records {
        if hosts.contains(&host) {
            continue;
        }
        if hosts.len() < SITE_NAME_HOSTS {
            if let Some(last) = last_preference {
                name.push(if last == preference { ',' } else { ';' });
            }
            name.push_str(&host);
        }
        last_preference = Some(preference);
        hosts.push(host);
    }
    if hosts.len() > SITE_NAME_HOSTS {
        name.push_str(&format!(";+{}", hosts.len() - SITE_NAME_HOSTS));
    }
    SiteName { name, hosts }
}

/// Builds the route from the hosts of [`mx_hosts`] (in its order) and the
/// address lookup of each. Hosts without addresses are dropped; a host's
/// addresses keep their order, without repeats. When no host has an address:
/// for an implicit MX (`implicit`: the MX query found none), NXDOMAIN or no
/// record is permanent (RFC 5321 §5.1: no MX and no A/AAAA); any failed lookup
/// is transient; MX targets that do not resolve are transient, a
/// misconfiguration that may be fixed.
pub fn build_route(
    domain: &str,
    hosts: Vec<(String, AddrAnswer)>,
    implicit: bool,
) -> Result<Route, RouteError> {
    let domain = normalise(domain);
    if hosts.is_empty() {
        return Err(RouteError::NoHostToTry { domain });
    }
    let mut route = Vec::new();
    let mut problems = Vec::new();
    let mut failed = false;
    for (name, answer) in hosts {
        let name = normalise(&name);
        match answer {
            AddrAnswer::Addrs(addrs) if !addrs.is_empty() => {
                let mut unique = Vec::with_capacity(addrs.len());
                for addr in addrs {
                    if !unique.contains(&addr) {
                        unique.push(addr);
                    }
                }
                route.push(Host::new(name, unique));
            }
            AddrAnswer::Addrs(_) | AddrAnswer::NoRecords => problems.push(Unresolved {
                host: name,
                problem: AddrProblem::NoRecords,
            }),
            AddrAnswer::NxDomain => problems.push(Unresolved {
                host: name,
                problem: AddrProblem::NotFound,
            }),
            AddrAnswer::Failed(why) => {
                failed = true;
                problems.push(Unresolved {
                    host: name,
                    problem: AddrProblem::Failed(why),
                });
            }
        }
    }
    if !route.is_empty() {
        return Ok(Route::new(route));
    }
    Err(if failed {
        RouteError::AddressLookupFailed {
            domain,
            hosts: problems,
        }
    } else if implicit {
        RouteError::NoMailHost { domain }
    } else {
        RouteError::NoMxAddress {
            domain,
            hosts: problems,
        }
    })
}

/// Why an address of an MX host is never connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `0.0.0.0` or `::`: connecting to it reaches this host itself.
    Unspecified,
    /// A multicast address: no SMTP server is there.
    Multicast,
    /// `255.255.255.255`: no SMTP server is there.
    Broadcast,
    /// Where this host's own receiving server listens
    /// (`application.local_listeners`).
    LocalListener,
}

impl Unusable {
    /// Connecting would hand the mail to this host again: a mail loop.
    pub fn loops_back(self) -> bool {
        matches!(self, Unusable::Unspecified | Unusable::LocalListener)
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unusable::Unspecified => "an unspecified address, which means this host",
            Unusable::Multicast => "a multicast address",
            Unusable::Broadcast => "the broadcast address",
            Unusable::LocalListener => {
                "where this host's own mail server listens (application.local_listeners)"
            }
        })
    }
}

/// Whether `addr` must not be connected to, and why: an unspecified,
/// multicast or broadcast address, or one of `local_listeners`, the
/// addresses where this host's own receiving server listens (Postfix's
/// `inet_interfaces` and `proxy_interfaces`). A listener on an unspecified
/// address (`0.0.0.0:25`, `[::]:25`) listens on every address of this
/// host: it covers, on its port, every loopback address and `own_addrs`
/// (the addresses of this host's interfaces). Loopback as such is allowed:
/// tests and local relays live there. An IPv4-mapped IPv6 address counts
/// as its IPv4 address.
pub fn unusable_address(
    addr: SocketAddr,
    local_listeners: &[SocketAddr],
    own_addrs: &[IpAddr],
) -> Option<Unusable> {
    let ip = addr.ip().to_canonical();
    if ip.is_unspecified() {
        return Some(Unusable::Unspecified);
    }
    if ip.is_multicast() {
        return Some(Unusable::Multicast);
    }
    if ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Some(Unusable::Broadcast);
    }
    let own = |ip: IpAddr| ip.is_loopback() || own_addrs.iter().any(|a| a.to_canonical() == ip);
    let listening = local_listeners.iter().any(|listener| {
        let at = listener.ip().to_canonical();
        listener.port() == addr.port() && (at == ip || (at.is_unspecified() && own(ip)))
    });
    listening.then_some(Unusable::LocalListener)
}

/// Lower-case, without the trailing dot of a fully qualified name.
fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed generator, enough
/// for spreading load among equal MX records.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..=max` for small `max` (modulo bias < 2^-50).
    fn below_or_equal(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
}

/// Fisher–Yates.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below_or_equal(i);
        items.swap(i, j);
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
