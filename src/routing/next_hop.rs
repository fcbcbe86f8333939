//! A next hop as Postfix writes one (`relayhost`, `transport_maps`):
//! `host` (look up its MX records), `[host]` (its addresses only),
//! `[192.0.2.1]` or `[ipv6:2001:db8::1]` (no lookup), each with an optional
//! `:port`, after an optional `smtp:` or `smtps:` (implicit TLS, RFC 8314
//! §3.3).

use std::fmt;
use std::net::IpAddr;

use crate::queue::valid_domain;

/// Port of a next hop written without one: SMTP's, or submissions' for
/// implicit TLS (RFC 8314 §7.3).
pub const SMTP_PORT: u16 = 25;
/// See [`SMTP_PORT`].
pub const SUBMISSIONS_PORT: u16 = 465;

/// What a next hop names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `host`: deliver to the MX hosts of this name, as for a domain.
    Mx(String),
    /// `[host]`: this host itself, by its A/AAAA records.
    Host(String),
    /// `[192.0.2.1]`: this address, no lookup.
    Ip(IpAddr),
}

/// Where mail goes instead of a domain's own MX hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    pub target: Target,
    /// As written; [`NextHop::port`] gives the one used.
    pub explicit_port: Option<u16>,
    /// `smtps:`: TLS from the first byte instead of STARTTLS.
    pub implicit_tls: bool,
}

/// Why a next hop cannot be read. The text says what is wrong, for the
/// configuration error that names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NextHopError {
    #[error("empty next hop")]
    Empty,
    #[error("unknown transport {0:?} (smtp: or smtps:)")]
    Transport(String),
    #[error("no ']' after '['")]
    Unclosed,
    #[error("{0:?} after ']' (only :port may follow)")]
    Trailing(String),
    #[error("bad port {0:?} (1-65535, or smtp, submission, submissions)")]
    Port(String),
    #[error("{0:?} is not a host name or an IP address")]
    Host(String),
}

impl NextHop {
    /// Reads one next hop; host names are lower-cased.
    pub fn parse(text: &str) -> Result<NextHop, NextHopError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(NextHopError::Empty);
        }
        let (implicit_tls, rest) = match text.split_once(':') {
            Some((scheme, "")) if ["smtp", "smtps"].contains(&&*scheme.to_ascii_lowercase()) => {
                return Err(NextHopError::Empty)
            }
            Some((scheme, rest)) if !scheme.starts_with('[') && !rest.is_empty() => {
                match scheme.to_ascii_lowercase().as_str() {
                    "smtp" => (false, rest),
                    "smtps" => (true, rest),
                    // `host:port`: the part before ':' is no transport.
                    _ if rest.bytes().all(|b| b.is_ascii_digit())
                        || service_port(rest).is_some() =>
                    {
                        (false, text)
                    }
                    _ => return Err(NextHopError::Transport(scheme.into())),
                }
            }
            _ => (false, text),
        };
        let (target, port) = if let Some(inside) = rest.strip_prefix('[') {
            let (inside, after) = inside.split_once(']').ok_or(NextHopError::Unclosed)?;
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(port) => Some(parse_port(port)?),
                    None => return Err(NextHopError::Trailing(after.into())),
                },
            };
            (bracketed(inside)?, port)
        } else {
            let (host, port) = match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(parse_port(port)?)),
                None => (rest, None),
            };
            let target = match host.parse::<IpAddr>() {
                // An address needs no MX lookup, brackets or not.
                Ok(ip) => Target::Ip(ip),
                Err(_) => Target::Mx(host_name(host)?),
            };
            (target, port)
        };
        Ok(NextHop {
            target,
            explicit_port: port,
            implicit_tls,
        })
    }

    /// The port connected to.
    pub fn port(&self) -> u16 {
        self.explicit_port.unwrap_or(if self.implicit_tls {
            SUBMISSIONS_PORT
        } else {
            SMTP_PORT
        })
    }

    /// The next hop as a password file names it (Postfix's
    /// `smtp_sasl_password_maps` key): without the transport, port as
    /// written.
    pub fn key(&self) -> String {
        let mut key = match &self.target {
            Target::Mx(host) => host.clone(),
            Target::Host(host) => format!("[{host}]"),
            Target::Ip(IpAddr::V4(ip)) => format!("[{ip}]"),
            Target::Ip(IpAddr::V6(ip)) => format!("[ipv6:{ip}]"),
        };
        if let Some(port) = self.explicit_port {
            key.push_str(&format!(":{port}"));
        }
        key
    }

    /// The host name a certificate must show, when there is one.
    pub fn host_name(&self) -> Option<&str> {
        match &self.target {
            Target::Mx(host) | Target::Host(host) => Some(host),
            Target::Ip(_) => None,
        }
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.implicit_tls {
            f.write_str("smtps:")?;
        }
        f.write_str(&self.key())
    }
}

fn bracketed(inside: &str) -> Result<Target, NextHopError> {
    let literal = inside
        .strip_prefix("ipv6:")
        .or_else(|| inside.strip_prefix("IPv6:"))
        .unwrap_or(inside);
    match literal.parse::<IpAddr>() {
        Ok(ip) => Ok(Target::Ip(ip)),
        Err(_) if literal.len() != inside.len() => Err(NextHopError::Host(inside.into())),
        Err(_) => Ok(Target::Host(host_name(inside)?)),
    }
}

fn host_name(host: &str) -> Result<String, NextHopError> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if valid_domain(&name) {
        Ok(name)
    } else {
        Err(NextHopError::Host(host.into()))
    }
}

/// The port of a service name Postfix's documentation writes in next
/// hops (`[smtp.example.net]:submission`), as /etc/services has it.
fn service_port(name: &str) -> Option<u16> {
    match name.to_ascii_lowercase().as_str() {
        "smtp" => Some(25),
        "submission" => Some(587),
        "submissions" | "smtps" => Some(465),
        _ => None,
    }
}

fn parse_port(port: &str) -> Result<u16, NextHopError> {
    if let Some(port) = service_port(port) {
        return Ok(port);
    }
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port.parse::<u16>() {
        Ok(port) if digits && port != 0 => Ok(port),
        _ => Err(NextHopError::Port(port.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn hop(target: Target, port: Option<u16>, implicit_tls: bool) -> NextHop {
        NextHop {
            target,
            explicit_port: port,
            implicit_tls,
        }
    }

    #[test]
    fn reads_every_form_postfix_writes() {
        let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let v6 = IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap());
        let mx = |h: &str| Target::Mx(h.into());
        let host = |h: &str| Target::Host(h.into());
        let table = [
            (
                "relay.example",
                hop(mx("relay.example"), None, false),
                25,
                "relay.example",
            ),
            (
                "Relay.Example.",
                hop(mx("relay.example"), None, false),
                25,
                "relay.example",
            ),
            (
                "relay.example:2525",
                hop(mx("relay.example"), Some(2525), false),
                2525,
                "relay.example:2525",
            ),
            (
                "[smtp.example.net]:587",
                hop(host("smtp.example.net"), Some(587), false),
                587,
                "[smtp.example.net]:587",
            ),
            (
                "[smtp.example.net]",
                hop(host("smtp.example.net"), None, false),
                25,
                "[smtp.example.net]",
            ),
            (
                "smtp:[smtp.example.net]:587",
                hop(host("smtp.example.net"), Some(587), false),
                587,
                "[smtp.example.net]:587",
            ),
            (
                "smtps:[smtp.example.net]",
                hop(host("smtp.example.net"), None, true),
                465,
                "smtps:[smtp.example.net]",
            ),
            (
                "SMTPS:relay.example:4650",
                hop(mx("relay.example"), Some(4650), true),
                4650,
                "smtps:relay.example:4650",
            ),
            (
                "[192.0.2.1]",
                hop(Target::Ip(v4), None, false),
                25,
                "[192.0.2.1]",
            ),
            (
                "192.0.2.1:26",
                hop(Target::Ip(v4), Some(26), false),
                26,
                "[192.0.2.1]:26",
            ),
            (
                "[ipv6:2001:db8::1]:25",
                hop(Target::Ip(v6), Some(25), false),
                25,
                "[ipv6:2001:db8::1]:25",
            ),
            (
                "[2001:db8::1]",
                hop(Target::Ip(v6), None, false),
                25,
                "[ipv6:2001:db8::1]",
            ),
            (
                "  [relay.example]:587 ",
                hop(host("relay.example"), Some(587), false),
                587,
                "[relay.example]:587",
            ),
        ];
        for (text, want, port, shown) in table {
            let got = NextHop::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got, want, "{text}");
            assert_eq!(got.port(), port, "{text}");
            assert_eq!(got.to_string(), shown, "{text}");
            // What it shows reads back as itself.
            assert_eq!(NextHop::parse(shown), Ok(want), "{shown}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_next_hop() {
        let table = [
            ("", NextHopError::Empty),
            ("   ", NextHopError::Empty),
            ("lmtp:[h.example]", NextHopError::Transport("lmtp".into())),
            ("[h.example", NextHopError::Unclosed),
            ("[h.example]587", NextHopError::Trailing("587".into())),
            ("[h.example]:0", NextHopError::Port("0".into())),
            ("[h.example]:65536", NextHopError::Port("65536".into())),
            ("[h.example]:", NextHopError::Port("".into())),
            (
                "h.example:lmtp",
                NextHopError::Transport("h.example".into()),
            ),
            ("[h_x.example]", NextHopError::Host("h_x.example".into())),
            (
                "[ipv6:h.example]",
                NextHopError::Host("ipv6:h.example".into()),
            ),
            ("smtp:", NextHopError::Empty),
            ("SMTPS:", NextHopError::Empty),
            ("h.example:+25", NextHopError::Transport("h.example".into())),
            ("[h.example]:+25", NextHopError::Port("+25".into())),
            ("[]", NextHopError::Host("".into())),
            ("bad host", NextHopError::Host("bad host".into())),
        ];
        for (text, want) in table {
            assert_eq!(NextHop::parse(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn service_names_are_ports() {
        for (text, port) in [
            ("[smtp.example.net]:submission", 587),
            ("relay.example:smtp", 25),
            ("smtps:[h.example]:submissions", 465),
            ("[h.example]:SMTPS", 465),
        ] {
            let hop = NextHop::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(hop.port(), port, "{text}");
        }
        // One key, however the port was written.
        assert_eq!(
            NextHop::parse("[h.example]:submission").unwrap().key(),
            NextHop::parse("[h.example]:587").unwrap().key()
        );
    }

    #[test]
    fn the_password_key_leaves_out_the_transport() {
        let hop = NextHop::parse("smtps:[Mail.Example]:465").unwrap();
        assert_eq!(hop.key(), "[mail.example]:465");
        assert_eq!(hop.host_name(), Some("mail.example"));
        assert_eq!(NextHop::parse("[192.0.2.1]").unwrap().host_name(), None);
    }
}
