//! Validation of `[routing]` into [`Routing`]: every next hop parsed,
//! every pool and address checked, and each error naming the full key
//! (`routing.transport."example.com".source`) and the layer it came from.

use std::sync::Arc;

use super::*;
use crate::config::routing::{HopSetting, HopTable, PoolSettings, RoutingSettings};
use crate::routing::{Hop, NextHop, Pattern, PoolMember, Routing, Source, Via};

/// Largest weight of a pool address: shares finer than 1:1000 mean nothing
/// over the connections a site opens.
const MAX_WEIGHT: u32 = 1000;

impl Validator<'_> {
    pub(super) fn routing(&self, r: &RoutingSettings) -> Result<Routing, ConfigError> {
        let mut routing = Routing {
            password_file: self.password_file(r)?,
            bind_address: self.bind_address("routing.bind_address", &r.bind_address, false)?,
            bind_address6: self.bind_address("routing.bind_address6", &r.bind_address6, true)?,
            helo_name: match &r.helo_name {
                Some(name) => Some(self.helo_name("routing.helo_name", name)?),
                None => None,
            },
            ..Routing::default()
        };
        for (name, pool) in &r.source {
            let members = self.pool(name, pool)?;
            routing.pools.insert(name.clone(), members);
        }
        routing.relayhost = match &r.relayhost {
            Some(hop) if hop.nexthop().trim().is_empty() => None,
            Some(hop) => Some(self.relay("routing.relayhost", hop, Via::Relayhost, &routing)?),
            None => None,
        };
        for (n, hop) in r.fallback_relay.iter().enumerate() {
            let key = format!("routing.fallback_relay[{n}]");
            let hop = self.relay(&key, hop, Via::Fallback, &routing)?;
            routing.fallback.push(hop);
        }
        routing.transport =
            self.table("routing.transport", &r.transport, Via::Transport, &routing)?;
        routing.sender_relayhost = self.table(
            "routing.sender_relayhost",
            &r.sender_relayhost,
            Via::SenderRelayhost,
            &routing,
        )?;
        Ok(routing)
    }

    fn password_file(&self, r: &RoutingSettings) -> Result<Option<PathBuf>, ConfigError> {
        match &r.password_file {
            Some(path) if path.as_os_str().is_empty() => Ok(None),
            Some(path) if !path.is_absolute() => Err(self.invalid(
                "routing.password_file",
                path.display(),
                "must be an absolute path: a reload must not depend on the working directory",
            )),
            Some(path) => Ok(Some(path.clone())),
            None => Ok(None),
        }
    }

    fn bind_address(
        &self,
        key: &str,
        value: &Option<String>,
        v6: bool,
    ) -> Result<Option<IpAddr>, ConfigError> {
        let Some(text) = value.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Ok(None);
        };
        match text.trim().parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv6() == v6 && !ip.is_unspecified() && !ip.is_multicast() => {
                Ok(Some(ip))
            }
            _ => Err(self.invalid(
                key,
                format!("{text:?}"),
                if v6 {
                    "must be one local IPv6 address"
                } else {
                    "must be one local IPv4 address (IPv6 goes in routing.bind_address6)"
                },
            )),
        }
    }

    fn helo_name(&self, key: &str, name: &str) -> Result<String, ConfigError> {
        if valid_hostname(name) {
            Ok(name.to_owned())
        } else {
            Err(self.invalid(
                key,
                format!("{name:?}"),
                "must be a host name or an address literal such as [192.0.2.1], as EHLO \
                 sends it (RFC 5321 §4.1.1.1)",
            ))
        }
    }

    fn pool(&self, name: &str, pool: &PoolSettings) -> Result<Vec<PoolMember>, ConfigError> {
        let key = format!("routing.source.{name:?}");
        if Pattern::parse(name).is_none()
            && !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(self.invalid(
                &key,
                format!("{name:?}"),
                "a pool name is letters, digits, '-', '_' and '.'",
            ));
        }
        if pool.addresses.is_empty() {
            return Err(self.invalid(&format!("{key}.addresses"), "[]", "a pool needs an address"));
        }
        let mut members: Vec<PoolMember> = Vec::with_capacity(pool.addresses.len());
        for (n, address) in pool.addresses.iter().enumerate() {
            let key = format!("{key}.addresses[{n}]");
            let ip = match address.ip.trim().parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => ip,
                _ => {
                    return Err(self.invalid(
                        &format!("{key}.ip"),
                        format!("{:?}", address.ip),
                        "must be a local IPv4 or IPv6 address",
                    ))
                }
            };
            if members.iter().any(|m| m.ip == ip) {
                return Err(self.invalid(&format!("{key}.ip"), ip, "is in the pool twice"));
            }
            let weight = self.within(
                &format!("{key}.weight"),
                address.weight,
                (1, MAX_WEIGHT),
                "",
            )?;
            let helo_name = match &address.helo_name {
                Some(helo) => Some(self.helo_name(&format!("{key}.helo_name"), helo)?),
                None => None,
            };
            members.push(PoolMember {
                ip,
                weight,
                helo_name,
            });
        }
        Ok(members)
    }

    fn table(
        &self,
        key: &str,
        table: &BTreeMap<String, HopSetting>,
        via: Via,
        routing: &Routing,
    ) -> Result<BTreeMap<Pattern, Arc<Hop>>, ConfigError> {
        let mut out = BTreeMap::new();
        for (written, setting) in table {
            let key = format!("{key}.{written:?}");
            let Some(pattern) = Pattern::parse(written) else {
                return Err(self.invalid(
                    &key,
                    format!("{written:?}"),
                    "the key must be a domain (\"example.com\") or a dot and a domain for \
                     its subdomains (\".example.com\")",
                ));
            };
            let hop = self.hop(&key, setting, via, routing, true)?;
            if out.insert(pattern, hop).is_some() {
                return Err(self.invalid(
                    &key,
                    format!("{written:?}"),
                    "another key names the same domain (compared in lower case, without a \
                     final dot): merge the two",
                ));
            }
        }
        Ok(out)
    }

    fn relay(
        &self,
        key: &str,
        setting: &HopSetting,
        via: Via,
        routing: &Routing,
    ) -> Result<Arc<Hop>, ConfigError> {
        self.hop(key, setting, via, routing, false)
    }

    /// One next hop with its settings; `mx_allowed` where `"mx"` (MX
    /// delivery) may stand for it.
    fn hop(
        &self,
        key: &str,
        setting: &HopSetting,
        via: Via,
        routing: &Routing,
        mx_allowed: bool,
    ) -> Result<Arc<Hop>, ConfigError> {
        let plain;
        let table = match setting {
            HopSetting::Table(table) => table,
            HopSetting::NextHop(text) => {
                plain = HopTable {
                    nexthop: text.clone(),
                    ..HopTable::default()
                };
                &plain
            }
        };
        let nexthop_key = match setting {
            HopSetting::Table(_) => format!("{key}.nexthop"),
            HopSetting::NextHop(_) => key.to_owned(),
        };
        let next_hop = if table.nexthop.trim().eq_ignore_ascii_case("mx") {
            if !mx_allowed {
                return Err(self.invalid(
                    &nexthop_key,
                    "\"mx\"",
                    "must be a relay: leave it unset for MX delivery",
                ));
            }
            None
        } else {
            match NextHop::parse(&table.nexthop) {
                Ok(hop) => Some(hop),
                Err(e) => {
                    return Err(self.invalid(
                        &nexthop_key,
                        format!("{:?}", table.nexthop),
                        format!(
                            "{e}: write host (MX lookup), [host] or [ip], each with an \
                             optional :port, after an optional smtp: or smtps:, or \"mx\""
                        ),
                    ))
                }
            }
        };
        if next_hop.is_none() && (table.auth == Some(true) || table.plaintext_auth) {
            return Err(self.invalid(
                &format!("{key}.auth"),
                "true",
                "AUTH is for relays: a domain's own MX hosts do not know our password",
            ));
        }
        if table.auth == Some(true) && routing.password_file.is_none() {
            return Err(self.invalid(
                &format!("{key}.auth"),
                "true",
                "needs routing.password_file, with a line for this next hop",
            ));
        }
        let encrypted = next_hop.as_ref().is_some_and(|h| h.implicit_tls)
            || table.tls != Some(crate::smtp::TlsMode::Disabled);
        if table.auth == Some(true) && !encrypted && !table.plaintext_auth {
            return Err(self.invalid(
                &format!("{key}.tls"),
                "\"disabled\"",
                "AUTH would send the password in the clear: allow it with \
                 plaintext_auth = true, or use TLS",
            ));
        }
        let source = match &table.source {
            None => Source::Default,
            Some(text) => self.source(&format!("{key}.source"), text, routing)?,
        };
        let helo_name = match &table.helo_name {
            Some(name) => Some(self.helo_name(&format!("{key}.helo_name"), name)?),
            None => None,
        };
        Ok(Arc::new(Hop {
            via,
            next_hop,
            tls: table.tls,
            verify: table.verify,
            auth: table.auth,
            plaintext_auth: table.plaintext_auth,
            source,
            helo_name,
        }))
    }

    fn source(&self, key: &str, text: &str, routing: &Routing) -> Result<Source, ConfigError> {
        if routing.pools.contains_key(text) {
            return Ok(Source::Pool(text.to_owned()));
        }
        match text.trim().parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(Source::Address(ip)),
            _ => Err(self.invalid(
                key,
                format!("{text:?}"),
                "must name a [routing.source.<name>] pool or be one local address",
            )),
        }
    }
}
