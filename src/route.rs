//! MX routing policy, pure: the actors do the DNS lookups and hand the
//! answers in. Preference order and implicit MX (RFC 5321 §5.1), null MX
//! (RFC 7505), the verdict when no host has an address, and the addresses
//! never connected to (loop protection).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

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

/// Why a domain has no route. The text is for logs and bounces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain can never receive mail: bounce.
    #[error("{0}")]
    Permanent(String),
    /// The domain may receive mail later: defer.
    #[error("{0}")]
    Transient(String),
}

/// One host to connect to, with its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Host name, lower-case, no trailing dot.
    pub name: String,
    /// Addresses in the order the lookup gave them (never empty).
    pub addrs: Vec<IpAddr>,
}

/// Where to deliver a domain's mail: hosts in the order to try them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Never empty; every address of a host comes before the next host.
    pub hosts: Vec<Host>,
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
        MxAnswer::NxDomain => {
            return Err(RouteError::Permanent(format!(
                "domain {domain} does not exist"
            )))
        }
        MxAnswer::Failed(why) => {
            return Err(RouteError::Transient(format!(
                "MX lookup for {domain} failed: {why}"
            )))
        }
    };
    for (_, host) in &mut records {
        *host = normalise(host);
    }
    records.retain(|(_, host)| !host.is_empty());
    if records.is_empty() {
        // RFC 7505 §3: a lone null MX says the domain accepts no mail. Several
        // null records and nothing else say the same, if less correctly.
        return Err(RouteError::Permanent(format!(
            "domain {domain} does not accept mail (null MX)"
        )));
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
        return Err(RouteError::Transient(format!(
            "no MX host to try for {domain}"
        )));
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
                route.push(Host {
                    name,
                    addrs: unique,
                });
            }
            AddrAnswer::Addrs(_) | AddrAnswer::NoRecords => {
                problems.push(format!("{name}: no A/AAAA record"))
            }
            AddrAnswer::NxDomain => problems.push(format!("{name}: host not found")),
            AddrAnswer::Failed(why) => {
                failed = true;
                problems.push(format!("{name}: address lookup failed: {why}"));
            }
        }
    }
    if !route.is_empty() {
        return Ok(Route { hosts: route });
    }
    let problems = problems.join("; ");
    Err(if failed {
        RouteError::Transient(format!(
            "cannot resolve mail hosts for {domain} ({problems})"
        ))
    } else if implicit {
        RouteError::Permanent(format!("no MX and no A/AAAA record for {domain}"))
    } else {
        RouteError::Transient(format!(
            "no MX host of {domain} has an address ({problems})"
        ))
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
mod tests {
    use super::*;

    #[test]
    fn domains_naming_the_same_mx_hosts_share_a_site_whatever_the_order() {
        let google = |order: &[(u16, &str)]| {
            site_name(
                "x.test",
                &MxAnswer::Records(order.iter().map(|(p, h)| (*p, h.to_string())).collect()),
            )
        };
        let a = google(&[
            (1, "ASPMX.L.GOOGLE.COM."),
            (5, "alt2.aspmx.l.google.com"),
            (5, "alt1.aspmx.l.google.com"),
        ]);
        let b = google(&[
            (5, "alt1.aspmx.l.google.com."),
            (1, "aspmx.l.google.com"),
            (5, "alt2.aspmx.l.google.com"),
        ]);
        assert_eq!(a, b);
        assert_eq!(
            a.name,
            "aspmx.l.google.com;alt1.aspmx.l.google.com,alt2.aspmx.l.google.com"
        );
        let ordered = google(&[(5, "alt1.aspmx.l.google.com"), (1, "aspmx.l.google.com")]);
        let reversed = google(&[(1, "alt1.aspmx.l.google.com"), (5, "aspmx.l.google.com")]);
        assert_ne!(ordered.name, reversed.name, "the preference order matters");
        let cases = [
            (MxAnswer::NoRecords, "x.test"),
            (MxAnswer::NxDomain, "x.test"),
            (MxAnswer::Records(vec![(0, ".".into())]), "x.test"),
            (
                MxAnswer::Records(vec![(10, "mx.test".into()), (0, ".".into())]),
                "mx.test",
            ),
        ];
        for (answer, want) in cases {
            assert_eq!(site_name("X.test.", &answer).name, want, "{answer:?}");
        }
        let many = MxAnswer::Records((0..20).map(|i| (10, format!("mx{i:02}.test"))).collect());
        let site = site_name("x.test", &many);
        assert_eq!(site.hosts.len(), 20);
        assert!(site.name.starts_with("mx00.test,mx01.test,"));
        assert!(site.name.ends_with("mx07.test;+12"), "{}", site.name);
    }

    fn records(list: &[(u16, &str)]) -> MxAnswer {
        MxAnswer::Records(list.iter().map(|(p, h)| (*p, h.to_string())).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn mx_hosts_table() {
        type Want = Result<Vec<&'static str>, (bool, &'static str)>; // (permanent, text)
        let cases: Vec<(&str, MxAnswer, Want)> = vec![
            (
                "preference order",
                records(&[(20, "mx2.d.test."), (10, "mx1.d.test."), (30, "mx3.d.test")]),
                Ok(vec!["mx1.d.test", "mx2.d.test", "mx3.d.test"]),
            ),
            (
                "lower-cased, trailing dot stripped, duplicates dropped",
                records(&[(10, "MX.D.Test."), (20, "mx.d.test"), (5, "Other.Test.")]),
                Ok(vec!["other.test", "mx.d.test"]),
            ),
            ("implicit MX", MxAnswer::NoRecords, Ok(vec!["d.test"])),
            (
                "empty records = implicit MX",
                records(&[]),
                Ok(vec!["d.test"]),
            ),
            (
                "null MX",
                records(&[(0, ".")]),
                Err((true, "domain d.test does not accept mail (null MX)")),
            ),
            (
                "null MX as empty name",
                records(&[(0, "")]),
                Err((true, "domain d.test does not accept mail (null MX)")),
            ),
            (
                "null MX with non-zero preference",
                records(&[(10, ".")]),
                Err((true, "domain d.test does not accept mail (null MX)")),
            ),
            (
                "null MX beside real records is ignored",
                records(&[(0, "."), (10, "mx.d.test")]),
                Ok(vec!["mx.d.test"]),
            ),
            (
                "nxdomain",
                MxAnswer::NxDomain,
                Err((true, "domain d.test does not exist")),
            ),
            (
                "lookup failed",
                MxAnswer::Failed("timed out".into()),
                Err((false, "MX lookup for d.test failed: timed out")),
            ),
        ];
        for (name, answer, want) in cases {
            let got = mx_hosts("D.Test.", answer.clone(), 7, 5);
            let got = got.map_err(|e| match e {
                RouteError::Permanent(t) => (true, t),
                RouteError::Transient(t) => (false, t),
            });
            let want = want
                .map(|v| v.into_iter().map(String::from).collect::<Vec<_>>())
                .map_err(|(p, t)| (p, t.to_string()));
            assert_eq!(got, want, "{name}: {answer:?}");
        }
    }

    #[test]
    fn equal_preferences_shuffle_deterministically() {
        let answer = records(&[
            (10, "a.test"),
            (10, "b.test"),
            (10, "c.test"),
            (10, "d.test"),
            (20, "z.test"),
            (5, "first.test"),
        ]);
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let hosts = mx_hosts("x.test", answer.clone(), seed, 10).expect("hosts");
            let again = mx_hosts("x.test", answer.clone(), seed, 10).expect("hosts");
            assert_eq!(hosts, again, "seed {seed} gives the same order twice");
            assert_eq!(
                hosts[0], "first.test",
                "seed {seed}: lowest preference first"
            );
            assert_eq!(hosts[5], "z.test", "seed {seed}: highest preference last");
            let mut middle = hosts[1..5].to_vec();
            middle.sort();
            assert_eq!(
                middle,
                ["a.test", "b.test", "c.test", "d.test"],
                "seed {seed}"
            );
            orders.insert(hosts);
        }
        assert!(
            orders.len() > 10,
            "only {} orders from 64 seeds",
            orders.len()
        );
    }

    /// Issue 22, defect 13: only the first `limit` hosts are looked up,
    /// however many records the domain has.
    #[test]
    fn mx_hosts_stop_at_the_limit() {
        let mut list: Vec<(u16, String)> = (0..1000)
            .map(|i| (10 + (i % 7) as u16, format!("mx{i}.d.test")))
            .collect();
        list.push((1, "first.d.test".into()));
        list.push((1, "FIRST.d.test.".into()));
        let answer = MxAnswer::Records(list);
        let cases = [(1, 1), (5, 5), (0, 1), (1000, 1000), (5000, 1001)];
        for (limit, want) in cases {
            let hosts = mx_hosts("d.test", answer.clone(), 3, limit).expect("hosts");
            assert_eq!(hosts.len(), want, "limit {limit}");
            assert_eq!(hosts[0], "first.d.test", "limit {limit}: preference first");
        }
        let hosts = mx_hosts("d.test", answer, 3, 5).expect("hosts");
        assert!(
            hosts[1..].iter().all(|h| h.starts_with("mx")),
            "the duplicate of the first host takes no place: {hosts:?}"
        );
    }

    #[test]
    fn build_route_table() {
        let v4 = ip("192.0.2.1");
        let v6 = ip("2001:db8::1");
        let v4b = ip("192.0.2.2");
        type Want = Result<Vec<(&'static str, Vec<IpAddr>)>, (bool, &'static str)>;
        type Case = (&'static str, Vec<(&'static str, AddrAnswer)>, bool, Want);
        let cases: Vec<Case> = vec![
            (
                "addresses keep their order, hosts their order",
                vec![
                    ("mx1.d.test", AddrAnswer::Addrs(vec![v6, v4, v6])),
                    ("MX2.d.test.", AddrAnswer::Addrs(vec![v4b])),
                ],
                false,
                Ok(vec![("mx1.d.test", vec![v6, v4]), ("mx2.d.test", vec![v4b])]),
            ),
            (
                "hosts without addresses dropped",
                vec![
                    ("mx1.d.test", AddrAnswer::NxDomain),
                    ("mx2.d.test", AddrAnswer::Failed("servfail".into())),
                    ("mx3.d.test", AddrAnswer::Addrs(vec![])),
                    ("mx4.d.test", AddrAnswer::Addrs(vec![v4])),
                ],
                false,
                Ok(vec![("mx4.d.test", vec![v4])]),
            ),
            (
                "implicit MX, no such host",
                vec![("d.test", AddrAnswer::NxDomain)],
                true,
                Err((true, "no MX and no A/AAAA record for d.test")),
            ),
            (
                "implicit MX, no address records",
                vec![("d.test", AddrAnswer::NoRecords)],
                true,
                Err((true, "no MX and no A/AAAA record for d.test")),
            ),
            (
                "implicit MX, lookup failed",
                vec![("d.test", AddrAnswer::Failed("timed out".into()))],
                true,
                Err((false, "cannot resolve mail hosts for d.test (d.test: address lookup failed: timed out)")),
            ),
            (
                "MX targets that do not resolve",
                vec![("mx1.d.test", AddrAnswer::NxDomain), ("mx2.d.test", AddrAnswer::NoRecords)],
                false,
                Err((false, "no MX host of d.test has an address (mx1.d.test: host not found; mx2.d.test: no A/AAAA record)")),
            ),
            (
                "MX targets, one failed",
                vec![("mx1.d.test", AddrAnswer::NxDomain), ("mx2.d.test", AddrAnswer::Failed("refused".into()))],
                false,
                Err((false, "cannot resolve mail hosts for d.test (mx1.d.test: host not found; mx2.d.test: address lookup failed: refused)")),
            ),
            ("no hosts at all", vec![], false, Err((false, "no MX host to try for d.test"))),
        ];
        for (name, hosts, implicit, want) in cases {
            let input: Vec<(String, AddrAnswer)> =
                hosts.into_iter().map(|(h, a)| (h.to_string(), a)).collect();
            let got = build_route("d.test", input.clone(), implicit)
                .map(|r| {
                    r.hosts
                        .into_iter()
                        .map(|h| (h.name, h.addrs))
                        .collect::<Vec<_>>()
                })
                .map_err(|e| match e {
                    RouteError::Permanent(t) => (true, t),
                    RouteError::Transient(t) => (false, t),
                });
            let want = want
                .map(|v| {
                    v.into_iter()
                        .map(|(h, a)| (h.to_string(), a))
                        .collect::<Vec<_>>()
                })
                .map_err(|(p, t)| (p, t.to_string()));
            assert_eq!(got, want, "{name}: {input:?} implicit={implicit}");
        }
    }

    /// Issue 22, defect 10: the addresses never connected to.
    #[test]
    fn unusable_addresses_table() {
        let sock = |s: &str| -> SocketAddr { s.parse().expect("test socket address") };
        let listeners = [
            sock("192.0.2.25:25"),
            sock("[2001:db8::25]:25"),
            sock("127.0.0.1:2525"),
        ];
        let wildcard = [sock("0.0.0.0:25")];
        let own = [ip("198.51.100.7")];
        type Case<'a> = (
            &'static str,
            &'static str,
            &'a [SocketAddr],
            Option<Unusable>,
        );
        let cases: Vec<Case> = vec![
            ("0.0.0.0", "0.0.0.0:25", &[], Some(Unusable::Unspecified)),
            ("::", "[::]:25", &[], Some(Unusable::Unspecified)),
            (
                "mapped 0.0.0.0",
                "[::ffff:0.0.0.0]:25",
                &[],
                Some(Unusable::Unspecified),
            ),
            (
                "multicast v4",
                "224.0.0.1:25",
                &[],
                Some(Unusable::Multicast),
            ),
            (
                "multicast v6",
                "[ff02::1]:25",
                &[],
                Some(Unusable::Multicast),
            ),
            (
                "broadcast",
                "255.255.255.255:25",
                &[],
                Some(Unusable::Broadcast),
            ),
            ("a remote host", "192.0.2.1:25", &listeners, None),
            ("loopback stays allowed", "127.0.0.1:25", &listeners, None),
            (
                "a listener",
                "192.0.2.25:25",
                &listeners,
                Some(Unusable::LocalListener),
            ),
            (
                "a listener, v6",
                "[2001:db8::25]:25",
                &listeners,
                Some(Unusable::LocalListener),
            ),
            (
                "a listener, mapped",
                "[::ffff:192.0.2.25]:25",
                &listeners,
                Some(Unusable::LocalListener),
            ),
            (
                "a loopback listener",
                "127.0.0.1:2525",
                &listeners,
                Some(Unusable::LocalListener),
            ),
            (
                "another port of a listener's address",
                "192.0.2.25:2525",
                &listeners,
                None,
            ),
            (
                "another loopback address",
                "127.0.0.2:2525",
                &listeners,
                None,
            ),
            (
                "wildcard listener: own address",
                "198.51.100.7:25",
                &wildcard,
                Some(Unusable::LocalListener),
            ),
            (
                "wildcard listener: loopback",
                "127.0.0.53:25",
                &wildcard,
                Some(Unusable::LocalListener),
            ),
            (
                "wildcard listener: a remote host",
                "192.0.2.1:25",
                &wildcard,
                None,
            ),
            (
                "wildcard listener: another port",
                "198.51.100.7:587",
                &wildcard,
                None,
            ),
        ];
        for (name, addr, listeners, want) in cases {
            assert_eq!(
                unusable_address(sock(addr), listeners, &own),
                want,
                "{name}: {addr}"
            );
        }
        assert!(Unusable::Unspecified.loops_back() && Unusable::LocalListener.loops_back());
        assert!(!Unusable::Multicast.loops_back() && !Unusable::Broadcast.loops_back());
    }

    #[test]
    fn route_error_displays_its_reason() {
        let e = RouteError::Permanent("domain d.test does not exist".into());
        assert_eq!(e.to_string(), "domain d.test does not exist", "{e:?}");
    }
}
