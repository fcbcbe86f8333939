//! `postman route <address>`: where a recipient's mail would go, and how,
//! without sending anything: which setting chose the route, the next hop,
//! the site, the hosts and addresses (one DNS lookup, as the daemon would
//! make it), each host's DANE status and where its DNSSEC validation
//! comes from, the source address, the EHLO name, the TLS policy and
//! whether AUTH is used.

use std::fmt::Write as _;

use postman::config::Config;
use postman::route::{Route, RouteError, SiteName};
use postman::routing::{Hop, Source};
use postman::tls::{DaneStatus, StsProblem, StsStatus};

use crate::resolver::{self, DaneSource, ResolveRequest};

/// Prints what [`explain`] says of `recipient` (from `sender`).
pub fn route(config: &Config, recipient: &str, sender: &str) -> anyhow::Result<()> {
    let Some((_, domain)) = recipient.rsplit_once('@') else {
        anyhow::bail!("{recipient:?} is not an address: it has no '@'");
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let request = ResolveRequest {
        decision: config.routing.decide(sender, &domain),
        key: domain.clone(),
        domain: domain.clone(),
        max_hosts: config.max_mx_addresses,
    };
    // Cache problems go to standard error; the MTA-STS line says the rest.
    let log = slog::Logger::root(
        slog::Fuse(std::sync::Mutex::new(
            slog_term::FullFormat::new(slog_term::PlainSyncDecorator::new(std::io::stderr()))
                .build(),
        )),
        slog::o!(),
    );
    let found = resolver::lookup_once(config, &request, log)?;
    let mut out = explain(config, recipient, &request, &found.route, &found.site);
    if let Some(sts) = &found.sts {
        out.push_str(&mta_sts(sts));
    }
    out.push_str(&format!("{:<10} {}\n", "dnssec", dnssec(&found.dane)));
    print!("{out}");
    Ok(())
}

/// The `mta-sts` line: the policy in force and where it came from, or
/// why there is none.
pub fn mta_sts(found: &resolver::StsFound) -> String {
    let text = match &found.status {
        StsStatus::Policy(active) => {
            let mx: Vec<String> = active.policy.mx.iter().map(ToString::to_string).collect();
            format!(
                "{} (id {}, mx {}, max_age {}), {}",
                active.policy.mode.as_str(),
                active.id,
                if mx.is_empty() {
                    "none".to_owned()
                } else {
                    mx.join(" ")
                },
                active.policy.max_age,
                found.how
            )
        }
        StsStatus::Unavailable(problem) => {
            format!("unavailable ({}): {}", kind(problem), found.how)
        }
        StsStatus::NoPolicy | StsStatus::NotLooked => found.how.clone(),
    };
    format!("{:<10} {text}\n", "mta-sts")
}

/// RFC 8460's name for an MTA-STS problem.
fn kind(problem: &StsProblem) -> &'static str {
    match problem {
        StsProblem::Fetch(_) => "sts-policy-fetch-error",
        StsProblem::WebPki(_) => "sts-webpki-invalid",
        StsProblem::Invalid(_) => "sts-policy-invalid",
    }
}

/// The report, one `key  value` line each.
pub fn explain(
    config: &Config,
    recipient: &str,
    request: &ResolveRequest,
    route: &Result<Route, RouteError>,
    site: &SiteName,
) -> String {
    let hop = &request.decision.hop;
    let mut out = String::new();
    let mut line = |key: &str, value: &str| {
        let _ = writeln!(out, "{key:<10} {value}");
    };
    line("recipient", recipient);
    line("via", hop.via.as_str());
    line("next hop", &next_hop(hop, config.server_port));
    line("site", &site.name);
    match route {
        Ok(route) => {
            for host in &route.hosts {
                let addrs: Vec<String> = host.addrs.iter().map(ToString::to_string).collect();
                let via = match host.hop.via {
                    v if v == hop.via => String::new(),
                    v => format!(" (via {v})"),
                };
                line(
                    "host",
                    &format!("{} [{}]{via}", host.name, addrs.join(", ")),
                );
                line("dane", &dane(&host.dane));
                if host.hop.next_hop.is_none()
                    && host.hop.tls.is_none()
                    && host.hop.verify.is_none()
                {
                    let decision = postman::tls::decide(
                        config.level_for(&request.domain),
                        config.tls_discovery,
                        &request.domain,
                        &host.name,
                        &host.dane,
                        &route.sts,
                    );
                    line("security", &security(&decision));
                }
            }
        }
        Err(e) if e.is_permanent() => line("route", &format!("none, the mail bounces: {e}")),
        Err(e) => line("route", &format!("none now, the mail waits: {e}")),
    }
    line("source", &source(config, hop));
    line("ehlo", &ehlo(config, hop));
    line("tls", &tls(config, hop, &request.domain));
    line("auth", &auth(config, hop));
    for relay in &request.decision.fallback {
        line("fallback", &relay.describe());
    }
    out
}

/// What a connection to one MX host must have, in words: the policy, then
/// STARTTLS and the certificate check, or why the host is not used.
fn security(decision: &postman::tls::Decision) -> String {
    use postman::smtp::TlsMode;
    use postman::tls::{Action, Check};
    match &decision.action {
        Action::Refuse(why) => format!("{}: not used: {why}", decision.applied),
        Action::Connect { starttls, check } => {
            let starttls = match starttls {
                TlsMode::Disabled => "no STARTTLS",
                TlsMode::Opportunistic => "STARTTLS when offered",
                TlsMode::Required => "STARTTLS required",
            };
            let check = match check {
                Check::Any => "any certificate".to_owned(),
                Check::Pkix { names } => {
                    format!("a trusted certificate for {}", names.join(" or "))
                }
                Check::Dane { tlsa, .. } => {
                    format!("a certificate matching {} TLSA records", tlsa.len())
                }
            };
            format!("{}: {starttls}, {check}", decision.applied)
        }
    }
}

/// The TLS a connection is made with: for MX delivery the domain's level
/// and whether DANE and MTA-STS are looked for; for a relay (or a rule
/// with TLS settings of its own) its STARTTLS policy.
fn tls(config: &Config, hop: &Hop, domain: &str) -> String {
    let level = config.level_for(domain);
    if hop.next_hop.is_none() && hop.tls.is_none() && hop.verify.is_none() {
        let on = |yes: bool| if yes { "on" } else { "off" };
        let discovery = config.tls_discovery;
        return format!(
            "{level} (dane {}, mta-sts {})",
            on(level.wants_dane(discovery.dane)),
            on(level.wants_sts(discovery.mta_sts))
        );
    }
    let authenticates = config.routing.credentials_for(hop).is_some();
    let default = config.tls_mode.starttls();
    hop.tls_mode(default, level.starttls(), authenticates)
        .as_str()
        .to_owned()
}

/// A host's DANE status, and what it makes delivery require.
fn dane(status: &DaneStatus) -> String {
    match status {
        DaneStatus::Usable(records) => format!(
            "{} usable TLSA record{}: TLS with a matching certificate is required",
            records.len(),
            if records.len() == 1 { "" } else { "s" }
        ),
        DaneStatus::Unusable => {
            "TLSA records, none usable: TLS is required, without authentication".into()
        }
        DaneStatus::NotApplicable(why) => format!("none: {why}"),
        DaneStatus::Failed(why) => format!("unknown, the mail waits: TLSA lookup failed: {why}"),
    }
}

/// Where DANE's DNSSEC validation comes from.
fn dnssec(source: &DaneSource) -> String {
    match source {
        DaneSource::NotWanted => {
            "not looked for: no DANE at this TLS level, or for a next hop".into()
        }
        DaneSource::Unavailable(why) => format!("unavailable, so no DANE: {why}"),
        DaneSource::TrustAd(servers) => {
            let servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
            format!(
                "the AD bit of {} is trusted (dns.dnssec = \"trust-ad\")",
                servers.join(", ")
            )
        }
    }
}

fn next_hop(hop: &Hop, mx_port: u16) -> String {
    match &hop.next_hop {
        None => format!("the domain's MX hosts, port {mx_port}"),
        Some(next) => {
            let tls = if next.implicit_tls {
                ", implicit TLS"
            } else {
                ""
            };
            format!("{next} (port {}{tls})", next.port())
        }
    }
}

fn source(config: &Config, hop: &Hop) -> String {
    let routing = &config.routing;
    match &hop.source {
        Source::Address(ip) => ip.to_string(),
        Source::Pool(name) => {
            let members: Vec<String> = routing
                .pools
                .get(name)
                .into_iter()
                .flatten()
                .map(|m| format!("{} weight {}", m.ip, m.weight))
                .collect();
            format!("pool {name}: {}", members.join(", "))
        }
        Source::Default => match (routing.bind_address, routing.bind_address6) {
            (None, None) => "the kernel's choice".into(),
            (v4, v6) => [v4, v6]
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        },
    }
}

fn ehlo(config: &Config, hop: &Hop) -> String {
    let routing = &config.routing;
    let name = |member: Option<&str>| routing.helo_name(hop, member, &config.hostname).to_owned();
    let members = match &hop.source {
        Source::Pool(pool) => routing.pools.get(pool).map_or(&[][..], Vec::as_slice),
        _ => &[],
    };
    let names: Vec<String> = members
        .iter()
        .map(|m| format!("{} from {}", name(m.helo_name.as_deref()), m.ip))
        .collect();
    if names.is_empty() || members.iter().all(|m| m.helo_name.is_none()) || hop.helo_name.is_some()
    {
        name(None)
    } else {
        names.join(", ")
    }
}

fn auth(config: &Config, hop: &Hop) -> String {
    let file = config
        .routing
        .password_file
        .as_deref()
        .map_or_else(String::new, |p| p.display().to_string());
    if let Some(credentials) = config.routing.credentials_for(hop) {
        return format!(
            "as {} (SCRAM-SHA-256, PLAIN or LOGIN, as offered), password from {file}",
            credentials.user
        );
    }
    match (&hop.next_hop, hop.auth) {
        (Some(next), None) if !file.is_empty() => {
            format!("none: {file} has no line for {}", next.key())
        }
        _ => "none".into(),
    }
}
