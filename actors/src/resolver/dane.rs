//! Whether and how a route looks for DANE (RFC 7672): the domain's TLS
//! level says whether it wants DANE (`tls.dane` for `may`, `encrypt` and
//! `mta-sts`; always for `dane` and `dane-only`); `dns.dnssec` and the
//! name servers say whether DNSSEC validation can be had (the AD bit is
//! trusted only from servers on this host, `postman::dane::lookup`); a
//! probe at start says whether those servers validate at all. A route
//! that wants DANE and can have it is looked up by [`SecureClient`];
//! every other route as before, its hosts saying why they have no DANE.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use postman::config::{Config, DnssecMode};
use postman::dane::lookup::{self, Unavailable};
use postman::route;
use postman::tls::{DaneStatus, Level, NoDane};
use slog::{info, warn, Logger};
use tokio::sync::OnceCell;

use super::secure::SecureClient;
use super::{DnsResolver, HighFdRuntime, ResolveRequest};

/// Where DANE's DNSSEC validation comes from for a route (what `postman
/// route` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaneSource {
    /// DANE is not looked for: the domain's TLS level does not use it, or
    /// its mail goes to a next hop.
    NotWanted,
    /// DANE is wanted but cannot be had, and why.
    Unavailable(Unavailable),
    /// The AD bit of these name servers (on this host) is trusted.
    TrustAd(Vec<SocketAddr>),
}

/// DANE for the resolver: which routes want it, and the means to look.
pub(super) struct Dane {
    means: Means,
    /// `tls.mode`, `tls.policy` and `tls.dane`: which domains want DANE.
    levels: Levels,
    /// The SMTP port, which names the TLSA records (`_25._tcp.<host>`).
    port: u16,
    log: Logger,
}

/// The TLS levels that say whether a domain wants DANE.
struct Levels {
    default: Level,
    policy: BTreeMap<String, Level>,
    dane: bool,
}

/// How DANE is looked for.
enum Means {
    /// Not at all: no level wants it.
    NotWanted,
    /// It cannot be had, and why (known at start).
    Unavailable(Unavailable),
    /// Through the AD bit of validating resolvers on this host; the
    /// probe's verdict, once it has run.
    TrustAd {
        client: SecureClient,
        probe: Option<String>,
        verdict: OnceCell<Result<(), Unavailable>>,
    },
}

impl Dane {
    /// Must run inside the runtime the lookups will run on. Says once
    /// when DANE is wanted but cannot be had.
    pub(super) fn new(config: &Config, provider: HighFdRuntime, log: Logger) -> Dane {
        let levels = Levels {
            default: config.tls_mode,
            policy: config.tls_policy.clone(),
            dane: config.tls_discovery.dane,
        };
        let wanted = |level: &Level| level.wants_dane(levels.dane);
        let means = if !wanted(&levels.default) && !levels.policy.values().any(wanted) {
            Means::NotWanted
        } else if config.dnssec == DnssecMode::Off {
            Means::Unavailable(Unavailable::Off)
        } else {
            let servers = if config.nameservers.is_empty() {
                system_nameservers()
            } else {
                config.nameservers.clone()
            };
            let ips: Vec<IpAddr> = servers.iter().map(SocketAddr::ip).collect();
            match lookup::trust_ad(&ips) {
                Err(why) => {
                    warn!(log, "DANE unavailable: no DNSSEC validation"; "why" => %why);
                    Means::Unavailable(why)
                }
                Ok(()) => Means::TrustAd {
                    client: SecureClient::new(
                        servers,
                        config.dns_timeout,
                        config.dns_attempts,
                        provider,
                    ),
                    probe: config.dnssec_probe.clone(),
                    verdict: OnceCell::new(),
                },
            }
        };
        Dane {
            means,
            levels,
            port: config.server_port,
            log,
        }
    }

    /// Whether `request`'s route wants DANE: MX delivery without TLS
    /// settings of a routing rule (which the worker takes as they are,
    /// `worker/shared.rs`), at a level that uses DANE.
    pub(super) fn wanted(&self, request: &ResolveRequest) -> bool {
        let hop = &request.decision.hop;
        let levels = &self.levels;
        let level = levels
            .policy
            .get(&request.domain)
            .copied()
            .unwrap_or(levels.default);
        hop.next_hop.is_none()
            && hop.tls.is_none()
            && hop.verify.is_none()
            && level.wants_dane(levels.dane)
    }

    /// Where DANE's validation comes from; the first call runs the probe
    /// (and logs its verdict), the others wait for it.
    pub(super) async fn source(&self) -> DaneSource {
        let (client, probe, verdict) = match &self.means {
            Means::NotWanted => return DaneSource::NotWanted,
            Means::Unavailable(why) => return DaneSource::Unavailable(why.clone()),
            Means::TrustAd {
                client,
                probe,
                verdict,
            } => (client, probe, verdict),
        };
        let verdict = verdict
            .get_or_init(|| async {
                let Some(probe) = probe else {
                    return Ok(());
                };
                let answer = client.probe(probe).await;
                let verdict = lookup::probe_result(probe, &answer);
                match (&answer, &verdict) {
                    (_, Err(why)) => {
                        warn!(self.log, "DANE unavailable: no DNSSEC validation"; "why" => %why);
                    }
                    (Err(e), Ok(())) => warn!(self.log,
                        "DNSSEC probe unanswered: trusting each answer's AD bit";
                        "probe" => probe.as_str(), "error" => e.as_str()),
                    (Ok(_), Ok(())) => info!(self.log, "DNSSEC validation works: DANE on";
                        "probe" => probe.as_str()),
                }
                verdict
            })
            .await;
        match verdict {
            Ok(()) => DaneSource::TrustAd(client.servers().to_vec()),
            Err(why) => DaneSource::Unavailable(why.clone()),
        }
    }

    /// Where DANE's validation comes from for `request`.
    pub(super) async fn source_for(&self, request: &ResolveRequest) -> DaneSource {
        if self.wanted(request) {
            self.source().await
        } else {
            DaneSource::NotWanted
        }
    }

    /// The MX route of `request.domain` with each host's DANE status:
    /// through the DNSSEC-aware client when DANE is wanted and can be
    /// had, else through `resolver` with every host saying why not.
    pub(super) async fn mx_route(
        &self,
        resolver: &DnsResolver,
        request: &ResolveRequest,
        valid_until: &mut Instant,
    ) -> (Result<route::Route, route::RouteError>, route::SiteName) {
        let (domain, max_hosts) = (request.domain.as_str(), request.max_hosts);
        let status = match (&self.means, self.source_for(request).await) {
            (Means::TrustAd { client, .. }, DaneSource::TrustAd(_)) => {
                return client
                    .mx_route(domain, max_hosts, self.port, valid_until)
                    .await;
            }
            (_, DaneSource::NotWanted) => DaneStatus::NotApplicable(NoDane::NotLooked),
            _ => DaneStatus::NotApplicable(NoDane::DnssecUnavailable),
        };
        let (found, site) = super::mx_route(resolver, domain, max_hosts, valid_until).await;
        let found = found.map(|mut route| {
            for host in &mut route.hosts {
                host.dane = status.clone();
            }
            route
        });
        (found, site)
    }
}

/// The name servers of the system's resolv.conf, as hickory reads it
/// (none when it cannot be read: the resolver then fails to build anyway).
fn system_nameservers() -> Vec<SocketAddr> {
    let Ok((config, _)) = hickory_resolver::system_conf::read_system_conf() else {
        return Vec::new();
    };
    let mut servers = Vec::new();
    for server in config.name_servers() {
        let port = server.connections.first().map_or(53, |c| c.port);
        let addr = SocketAddr::new(server.ip, port);
        if !servers.contains(&addr) {
            servers.push(addr);
        }
    }
    servers
}
