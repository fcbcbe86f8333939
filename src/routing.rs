//! Where a recipient's mail goes, pure: the domain's MX hosts, or a next
//! hop the operator configured (Postfix's `relayhost`, `transport_maps`,
//! `sender_dependent_relayhost_maps`, `smtp_fallback_relay`), and from
//! which local address and under which EHLO name. The settings are read
//! in `config::routing`; the actors look up what [`Routing::decide`] says.

mod next_hop;
mod password;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use next_hop::{NextHop, NextHopError, Target, SMTP_PORT, SUBMISSIONS_PORT};
pub use password::{PasswordFileError, PasswordMap};
pub use source::{Family, SourcePicker};

use crate::secret::Credentials;
use crate::smtp::{TlsMode, TlsVerify};

/// Which setting sent a message where it went: in every delivery record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Via {
    /// The recipient domain's own MX hosts.
    #[default]
    Mx,
    /// A `[routing.transport]` entry.
    Transport,
    /// `routing.relayhost`.
    Relayhost,
    /// A `[routing.sender_relayhost]` entry.
    SenderRelayhost,
    /// `routing.fallback_relay`, after the MX hosts failed.
    Fallback,
}

impl Via {
    /// The word in records and in `postman route`.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Mx => "mx",
            Via::Transport => "transport",
            Via::Relayhost => "relayhost",
            Via::SenderRelayhost => "sender_relayhost",
            Via::Fallback => "fallback",
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which local address a connection leaves from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Source {
    /// `routing.bind_address` / `bind_address6` if set, else the kernel's
    /// choice.
    #[default]
    Default,
    /// This address.
    Address(IpAddr),
    /// A `[routing.source.<name>]` pool, shared by weight.
    Pool(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Address(ip) => write!(f, "{ip}"),
            Source::Pool(name) => write!(f, "pool {name}"),
        }
    }
}

/// How to reach the hosts of one route: the domain's MX or a next hop,
/// and the connection's settings that differ from the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Hop {
    /// Which setting chose it.
    pub via: Via,
    /// `None`: the domain's own MX hosts, on `application.server_port`.
    pub next_hop: Option<NextHop>,
    /// STARTTLS policy; `None`: `tls.mode` (the domain's `tls.policy` for
    /// MX delivery), or `required` where AUTH is used.
    pub tls: Option<TlsMode>,
    /// Certificate checks; `None`: as `tls.verify` says for the mode.
    pub verify: Option<TlsVerify>,
    /// SMTP AUTH: `Some(false)` never, `Some(true)` always (the password
    /// file must have the next hop), `None` when the password file has it.
    pub auth: Option<bool>,
    /// AUTH is allowed on an unencrypted connection (never by default).
    pub plaintext_auth: bool,
    pub source: Source,
    /// EHLO name; `None`: the source address's, `routing.helo_name`,
    /// `application.hostname`, the first set.
    pub helo_name: Option<String>,
}

impl Hop {
    /// Where a connection goes to, for logs and `postman route`: the next
    /// hop as written, or `mx`.
    pub fn describe(&self) -> String {
        match &self.next_hop {
            Some(hop) => hop.to_string(),
            None => "mx".into(),
        }
    }

    /// The STARTTLS policy of this hop's connections: its own `tls`; else
    /// `required` for a relay that is sent a password (an AUTH in the
    /// clear is never the default); else `tls.mode` (`default`) for a
    /// relay, and the recipient domain's `tls.policy` (`domain`) for MX
    /// delivery.
    pub fn tls_mode(&self, default: TlsMode, domain: TlsMode, authenticates: bool) -> TlsMode {
        match (self.tls, &self.next_hop) {
            (Some(mode), _) => mode,
            (None, Some(_)) if authenticates && !self.plaintext_auth => TlsMode::Required,
            (None, Some(_)) => default,
            (None, None) => domain,
        }
    }

    /// The part of a site's name that keeps connections of different
    /// hops apart: two domains share connections only when everything a
    /// connection is opened with is the same. Empty for MX delivery with
    /// the defaults, so that today's site names stay as they are.
    pub fn site_suffix(&self) -> String {
        let mut suffix = String::new();
        if let Some(tls) = self.tls {
            suffix.push_str(&format!(" tls={}", tls.as_str()));
        }
        if let Some(verify) = self.verify {
            suffix.push_str(&format!(" verify={}", verify.as_str()));
        }
        match self.auth {
            Some(true) => suffix.push_str(" auth"),
            Some(false) => suffix.push_str(" noauth"),
            None => {}
        }
        if self.plaintext_auth {
            suffix.push_str(" plaintext_auth");
        }
        if self.source != Source::Default {
            suffix.push_str(&format!(" src={}", self.source.key()));
        }
        if let Some(helo) = &self.helo_name {
            suffix.push_str(&format!(" helo={helo}"));
        }
        suffix
    }
}

impl Source {
    /// One word for site names.
    fn key(&self) -> String {
        match self {
            Source::Default => "default".into(),
            Source::Address(ip) => ip.to_string(),
            Source::Pool(name) => format!("pool:{name}"),
        }
    }
}

/// What `[routing]` says for one recipient domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The hop to try first: MX delivery or a next hop.
    pub hop: Arc<Hop>,
    /// For MX delivery: the relays tried after every MX host failed.
    pub fallback: Vec<Arc<Hop>>,
    /// The `[routing.sender_relayhost]` key that chose the hop: mail of
    /// one domain from senders of different rules goes apart.
    pub sender_rule: Option<Pattern>,
}

/// A `[routing.transport]` or `[routing.sender_relayhost]` key: a domain,
/// or `.domain` for every name under it (Postfix's `transport_maps` with
/// `parent_domain_matches_subdomains` off).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    /// This domain only.
    Exact(String),
    /// Every subdomain of this one, not the domain itself.
    Below(String),
}

impl Pattern {
    /// Reads a key; `None` when it is not a domain or `.domain` (lower-case
    /// A-labels, as the queue's folder names are).
    pub fn parse(key: &str) -> Option<Pattern> {
        let key = key.trim().trim_end_matches('.').to_ascii_lowercase();
        let (below, domain) = match key.strip_prefix('.') {
            Some(domain) => (true, domain.to_owned()),
            None => (false, key),
        };
        if !crate::queue::valid_domain(&domain) {
            return None;
        }
        Some(if below {
            Pattern::Below(domain)
        } else {
            Pattern::Exact(domain)
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(domain) => f.write_str(domain),
            Pattern::Below(domain) => write!(f, ".{domain}"),
        }
    }
}

/// The routing table, validated: what `[routing]` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Routing {
    /// `routing.relayhost`: every domain without a transport entry.
    pub relayhost: Option<Arc<Hop>>,
    /// `[routing.transport]`, by domain.
    pub transport: BTreeMap<Pattern, Arc<Hop>>,
    /// `[routing.sender_relayhost]`, by sender domain.
    pub sender_relayhost: BTreeMap<Pattern, Arc<Hop>>,
    /// `routing.fallback_relay`, in order.
    pub fallback: Vec<Arc<Hop>>,
    /// The connection settings of MX delivery with no transport entry.
    pub mx: Arc<Hop>,
    /// `routing.password_file`: read by the actors, which check who may
    /// read it.
    pub password_file: Option<PathBuf>,
    /// `routing.bind_address`: IPv4 connections leave from it.
    pub bind_address: Option<IpAddr>,
    /// `routing.bind_address6`: IPv6 connections leave from it.
    pub bind_address6: Option<IpAddr>,
    /// `routing.helo_name`: the EHLO name, before `application.hostname`.
    pub helo_name: Option<String>,
    /// `[routing.source.<name>]`: never empty, each of one family or both.
    pub pools: BTreeMap<String, Vec<PoolMember>>,
    /// What `password_file` holds, once the actors have read it (they
    /// check who may read the file); empty until then.
    pub credentials: Arc<PasswordMap>,
}

/// One local address of a `[routing.source.<name>]` pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    pub ip: IpAddr,
    /// Its share of the pool's connections, 1-1000.
    pub weight: u32,
    /// The EHLO name of connections from it.
    pub helo_name: Option<String>,
}

impl Routing {
    /// The hop for mail from `sender` to `domain`: the transport entry of
    /// the domain, else of its closest parent with a `.parent` entry; else
    /// the sender domain's relay host, found the same way; else the relay
    /// host; else the domain's MX. Postfix's order: `transport_maps`, then
    /// `sender_dependent_relayhost_maps`, then `relayhost`.
    pub fn decide(&self, sender: &str, domain: &str) -> Decision {
        let rule = if find(&self.transport, domain).is_some() {
            None
        } else {
            sender
                .rsplit_once('@')
                .and_then(|(_, sender_domain)| find(&self.sender_relayhost, sender_domain))
                .map(|(rule, _)| rule.clone())
        };
        self.decide_for(domain, rule.as_ref())
    }

    /// [`Routing::decide`] for mail to `domain` whose sender matched
    /// `rule` (the rule of a [`route_key`]); a rule no longer in the table
    /// counts as none.
    pub fn decide_for(&self, domain: &str, rule: Option<&Pattern>) -> Decision {
        let by_rule = || rule.and_then(|r| self.sender_relayhost.get_key_value(r));
        let (hop, sender_rule) = if let Some((_, hop)) = find(&self.transport, domain) {
            (Arc::clone(hop), None)
        } else if let Some((rule, hop)) = by_rule() {
            (Arc::clone(hop), Some(rule.clone()))
        } else {
            let hop = self.relayhost.as_ref().unwrap_or(&self.mx);
            (Arc::clone(hop), None)
        };
        let fallback = if hop.next_hop.is_none() {
            self.fallback.clone()
        } else {
            Vec::new()
        };
        Decision {
            hop,
            fallback,
            sender_rule,
        }
    }

    /// The credentials a connection through `hop` authenticates with:
    /// for a relay whose `auth` is not `false`, its password-file entry.
    pub fn credentials_for(&self, hop: &Hop) -> Option<&Credentials> {
        match (&hop.next_hop, hop.auth) {
            (Some(next_hop), Some(true) | None) => self.credentials.get(next_hop),
            _ => None,
        }
    }

    /// Every local address the table names: `bind_address(6)`, a hop's
    /// own `source`, every pool member (for the start-up check that each
    /// can be bound).
    pub fn source_addresses(&self) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = self
            .bind_address
            .into_iter()
            .chain(self.bind_address6)
            .collect();
        for hop in self.hops() {
            if let Source::Address(ip) = hop.source {
                addrs.push(ip);
            }
        }
        addrs.extend(self.pools.values().flatten().map(|m| m.ip));
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// The EHLO name of a connection through `hop` from a source address
    /// whose own name is `source_name` (a pool member's): the hop's, the
    /// source's, `routing.helo_name`, else `hostname`.
    pub fn helo_name<'a>(
        &'a self,
        hop: &'a Hop,
        source_name: Option<&'a str>,
        hostname: &'a str,
    ) -> &'a str {
        hop.helo_name
            .as_deref()
            .or(source_name)
            .or(self.helo_name.as_deref())
            .unwrap_or(hostname)
    }

    /// Every name this host may give in EHLO: `hostname`,
    /// `routing.helo_name`, each hop's and each pool member's.
    pub fn helo_names(&self, hostname: &str) -> Vec<String> {
        let mut names = vec![hostname.to_owned()];
        names.extend(self.helo_name.iter().cloned());
        names.extend(self.hops().filter_map(|hop| hop.helo_name.clone()));
        names.extend(
            self.pools
                .values()
                .flatten()
                .filter_map(|m| m.helo_name.clone()),
        );
        names.sort();
        names.dedup();
        names
    }

    /// Every hop the table names (for checking at start what they need:
    /// credentials, bindable addresses).
    pub fn hops(&self) -> impl Iterator<Item = &Arc<Hop>> {
        std::iter::once(&self.mx)
            .chain(self.relayhost.iter())
            .chain(self.transport.values())
            .chain(self.sender_relayhost.values())
            .chain(self.fallback.iter())
    }
}

/// The scheduler's key for mail to `domain` routed by a sender rule: the
/// domain alone when there is none, so that mail without per-sender
/// routing is queued exactly as before; else `"<domain> from <rule>"`
/// (a space is in no domain name), so that mail of one domain from senders
/// of different rules waits and connects apart.
pub fn route_key(domain: &str, rule: Option<&Pattern>) -> String {
    match rule {
        None => domain.to_owned(),
        Some(rule) => format!("{domain} from {rule}"),
    }
}

/// The domain and the sender rule of a [`route_key`].
pub fn split_route_key(key: &str) -> (&str, Option<Pattern>) {
    match key.split_once(" from ") {
        Some((domain, rule)) => (domain, Pattern::parse(rule)),
        None => (key, None),
    }
}

/// The exact entry of `domain`, else the `.parent` entry of its closest
/// parent.
fn find<'a>(
    table: &'a BTreeMap<Pattern, Arc<Hop>>,
    domain: &str,
) -> Option<(&'a Pattern, &'a Arc<Hop>)> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if table.is_empty() {
        return None;
    }
    if let Some(found) = table.get_key_value(&Pattern::Exact(domain.clone())) {
        return Some(found);
    }
    let mut rest = domain.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(found) = table.get_key_value(&Pattern::Below(parent.to_owned())) {
            return Some(found);
        }
        rest = parent;
    }
    None
}

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
