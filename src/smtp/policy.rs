//! How the client connects: the STARTTLS policy (RFC 3207, and RFC 7435's
//! opportunistic security), certificate checking, the address family to try
//! first, and what the log says about the TLS a session ran under.
//!
//! These are settings the session and the I/O worker share; the config
//! module reads them from `tls.*` and `dns.ip_preference`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// When STARTTLS is used (`tls.mode`, `tls.policy."domain"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// STARTTLS when the server offers it. A server that does not is used in
    /// plaintext; a failed handshake is retried on a new plaintext
    /// connection to the same address (Postfix's `may` level).
    #[default]
    Opportunistic,
    /// STARTTLS or nothing: a server that does not offer it, refuses it or
    /// fails the handshake is a temporary failure (Postfix's `encrypt`).
    Required,
    /// Never STARTTLS.
    Disabled,
}

impl TlsMode {
    /// The word used in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Opportunistic => "opportunistic",
            TlsMode::Required => "required",
            TlsMode::Disabled => "disabled",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the server's certificate is checked (`tls.verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsVerify {
    /// Any certificate is accepted: encryption against passive listeners
    /// only. The usual choice for opportunistic TLS, since most MX hosts
    /// have certificates that do not name them (RFC 7672 §1.3).
    #[default]
    None,
    /// The chain must lead to a trusted root (the system's, or
    /// `tls.ca_file`) and the certificate must name the MX host.
    Name,
}

impl TlsVerify {
    /// The word used in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVerify::None => "none",
            TlsVerify::Name => "name",
        }
    }
}

impl fmt::Display for TlsVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which address family is tried first (`dns.ip_preference`). Whatever is
/// preferred, the other family is still tried when the first fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPreference {
    /// The resolver's order.
    #[default]
    Any,
    /// IPv4 addresses of each host before its IPv6 addresses.
    Ipv4,
    /// IPv6 addresses of each host before its IPv4 addresses.
    Ipv6,
}

impl IpPreference {
    /// The word used in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            IpPreference::Any => "any",
            IpPreference::Ipv4 => "ipv4",
            IpPreference::Ipv6 => "ipv6",
        }
    }

    /// Reorders one host's addresses: the preferred family first, each
    /// family in its original order (a stable sort).
    pub fn order(self, addrs: &mut [IpAddr]) {
        let rank = |ip: &IpAddr| match (self, ip) {
            (IpPreference::Any, _) => 0,
            (IpPreference::Ipv4, IpAddr::V4(_)) | (IpPreference::Ipv6, IpAddr::V6(_)) => 0,
            (IpPreference::Ipv4 | IpPreference::Ipv6, _) => 1,
        };
        addrs.sort_by_key(rank);
    }
}

impl fmt::Display for IpPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TLS a session runs under, for the delivery log: Postfix's "Trusted
/// TLS connection established to mx\[ip\]:25: TLSv1.3 with cipher …".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub protocol: String,
    /// The cipher suite, IANA name: `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The certificate chain and the host name were checked and passed.
    pub verified: bool,
}

impl fmt::Display for TlsInfo {
    /// `TLSv1.3 TLS13_AES_256_GCM_SHA384 verified` (or `unverified`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let trust = if self.verified {
            "verified"
        } else {
            "unverified"
        };
        write!(f, "{} {} {trust}", self.protocol, self.cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_order() {
        let v4a: IpAddr = "192.0.2.1".parse().unwrap();
        let v4b: IpAddr = "192.0.2.2".parse().unwrap();
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        let input = [v6a, v4a, v6b, v4b];
        let cases = [
            (IpPreference::Any, [v6a, v4a, v6b, v4b]),
            (IpPreference::Ipv4, [v4a, v4b, v6a, v6b]),
            (IpPreference::Ipv6, [v6a, v6b, v4a, v4b]),
        ];
        for (preference, want) in cases {
            let mut got = input;
            preference.order(&mut got);
            assert_eq!(got, want, "order {input:?} by {preference}");
        }
    }

    #[test]
    fn words_round_trip() {
        #[derive(Deserialize)]
        struct T {
            mode: TlsMode,
            verify: TlsVerify,
            ip: IpPreference,
        }
        for (mode, verify, ip) in [
            (TlsMode::Opportunistic, TlsVerify::None, IpPreference::Any),
            (TlsMode::Required, TlsVerify::Name, IpPreference::Ipv4),
            (TlsMode::Disabled, TlsVerify::None, IpPreference::Ipv6),
        ] {
            let text = format!("mode = \"{mode}\"\nverify = \"{verify}\"\nip = \"{ip}\"\n");
            let t: T = toml::from_str(&text).unwrap_or_else(|e| panic!("parse {text:?}: {e}"));
            assert_eq!(
                (t.mode, t.verify, t.ip),
                (mode, verify, ip),
                "round trip of {text:?}"
            );
        }
    }

    #[test]
    fn tls_info_display() {
        let info = TlsInfo {
            protocol: "TLSv1.3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            verified: false,
        };
        assert_eq!(
            info.to_string(),
            "TLSv1.3 TLS13_AES_128_GCM_SHA256 unverified"
        );
        let info = TlsInfo {
            verified: true,
            ..info
        };
        assert_eq!(
            info.to_string(),
            "TLSv1.3 TLS13_AES_128_GCM_SHA256 verified"
        );
    }
}
