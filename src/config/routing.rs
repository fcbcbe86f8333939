//! `[routing]` as written: where mail goes besides the domains' MX hosts,
//! with which credentials and from which local address. Each key is named
//! after the Postfix setting an administrator knows (given beside it);
//! validation into [`crate::routing::Routing`] is in `validate/routing.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::smtp::{TlsMode, TlsVerify};

/// `[routing]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSettings {
    /// The next hop of every domain without a transport entry (Postfix's
    /// `relayhost`); unset or `""`: MX delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relayhost: Option<HopSetting>,
    /// Relays for mail that no MX host took in an attempt (Postfix's
    /// `smtp_fallback_relay`), tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_relay: Vec<HopSetting>,
    /// User names and passwords per next hop, one `[host]:port
    /// user:password` a line (Postfix's `smtp_sasl_password_maps`); must
    /// be readable by postman's user only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Local IPv4 address of outgoing connections (Postfix's
    /// `smtp_bind_address`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    /// Local IPv6 address of outgoing connections (Postfix's
    /// `smtp_bind_address6`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address6: Option<String>,
    /// EHLO name of outgoing connections (Postfix's `smtp_helo_name`);
    /// unset: `application.hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
    /// Next hop per recipient domain, `"example.com"` or `".example.com"`
    /// for its subdomains (Postfix's `transport_maps`); `"mx"` is MX
    /// delivery. A table stays last for TOML output.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transport: BTreeMap<String, HopSetting>,
    /// Next hop per sender domain (Postfix's
    /// `sender_dependent_relayhost_maps`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sender_relayhost: BTreeMap<String, HopSetting>,
    /// Named pools of local addresses, shared by weight (KumoMTA's egress
    /// pools); a hop's `source` names one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source: BTreeMap<String, PoolSettings>,
}

/// A next hop: the string alone (`"[smtp.example.net]:587"`, `"mx"`), or
/// a table with it and how to connect. Read by hand rather than as an
/// untagged enum, so that a bad key in the table is named in the error
/// instead of "did not match any variant".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum HopSetting {
    /// The next hop alone.
    NextHop(String),
    /// The next hop with its connection settings.
    Table(HopTable),
}

impl HopSetting {
    /// The next hop as written.
    pub fn nexthop(&self) -> &str {
        match self {
            HopSetting::NextHop(text) => text,
            HopSetting::Table(table) => &table.nexthop,
        }
    }
}

impl<'de> Deserialize<'de> for HopSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = HopSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a next hop such as \"[smtp.example.net]:587\", or a table with `nexthop`",
                )
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HopSetting, E> {
                Ok(HopSetting::NextHop(text.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<HopSetting, A::Error> {
                let table =
                    HopTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(HopSetting::Table(table))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// `{ nexthop = "...", ... }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopTable {
    /// `host`, `[host]`, `[ip]`, each with `:port`, after `smtp:` or
    /// `smtps:` (implicit TLS, RFC 8314); or `mx`.
    pub nexthop: String,
    /// STARTTLS: `opportunistic`, `required` or `disabled` (Postfix's
    /// `smtp_tls_policy_maps` level); unset: `required` when AUTH is used,
    /// else `tls.mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsMode>,
    /// `none` or `name`; unset: as `tls.verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<TlsVerify>,
    /// SMTP AUTH (Postfix's `smtp_sasl_auth_enable`): `true` needs an
    /// entry in the password file, `false` never; unset: when the file has
    /// one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<bool>,
    /// Allow AUTH without TLS (Postfix's `smtp_sasl_tls_security_options`
    /// without `noplaintext`); off by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub plaintext_auth: bool,
    /// A `[routing.source.<name>]` pool, or one local address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The EHLO name of these connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// `[routing.source.<name>]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    /// The pool's addresses; connections are shared by weight.
    pub addresses: Vec<PoolAddressSettings>,
}

/// One address of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolAddressSettings {
    /// A local IPv4 or IPv6 address.
    pub ip: String,
    /// Its share of connections, 1-1000 (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
    /// The EHLO name of connections from it (its PTR name, usually).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helo_name: Option<String>,
}

fn one() -> u32 {
    1
}

fn is_one(value: &u32) -> bool {
    *value == 1
}
