//! EHLO keywords (RFC 5321 §4.1.1.1, §2.2.2): PIPELINING (RFC 2920), SIZE
//! (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), ENHANCEDSTATUSCODES
//! (RFC 2034), CHUNKING (RFC 3030), STARTTLS (RFC 3207), AUTH (RFC 4954
//! §3, and the pre-standard `AUTH=` form that Postfix also reads), DSN (RFC
//! 3461), REQUIRETLS (RFC 8689).

use super::reply::Reply;

/// What the server advertised in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING: commands may be sent in groups (RFC 2920).
    pub pipelining: bool,
    /// SIZE: `Some(limit)` when advertised; `Some(0)` means no fixed limit
    /// (RFC 1870 §4), which is also how a bare or unreadable SIZE is kept.
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eight_bit_mime: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// CHUNKING (BDAT).
    pub chunking: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// The SASL mechanisms of AUTH (RFC 4954 §3), upper-cased, each once,
    /// in the server's order; empty when AUTH is not advertised. Old
    /// servers (and Outlook-era clients) write `AUTH=LOGIN PLAIN`: it
    /// counts the same.
    pub auth: Vec<String>,
    /// DSN: the server takes RET, ENVID, NOTIFY and ORCPT and sends the
    /// notices itself from now on (RFC 3461 §4).
    pub dsn: bool,
    /// REQUIRETLS (RFC 8689 §4.1). It counts only in the EHLO reply after
    /// STARTTLS, which is the only one a session keeps once TLS is up.
    pub requiretls: bool,
    /// Every other keyword line, exactly as the server sent it.
    pub other: Vec<String>,
}

impl Extensions {
    /// Reads the keyword lines of a 250 EHLO reply. The first line is the
    /// server's name and greeting, not a keyword (RFC 5321 §4.1.1.1).
    /// Keywords are case-insensitive.
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut extensions = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                extensions.pipelining = true;
            } else if is("SIZE") {
                let limit = words.next().and_then(|n| n.parse().ok());
                extensions.size = Some(limit.unwrap_or(0));
            } else if is("8BITMIME") {
                extensions.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                extensions.smtputf8 = true;
            } else if is("ENHANCEDSTATUSCODES") {
                extensions.enhanced_status_codes = true;
            } else if is("CHUNKING") {
                extensions.chunking = true;
            } else if is("STARTTLS") {
                extensions.starttls = true;
            } else if is("DSN") {
                extensions.dsn = true;
            } else if is("REQUIRETLS") {
                extensions.requiretls = true;
            } else if is("AUTH") {
                extensions.add_auth(words);
            } else if let Some(first) = auth_equals(keyword) {
                extensions.add_auth(std::iter::once(first).chain(words));
            } else {
                extensions.other.push(line.clone());
            }
        }
        extensions
    }

    fn add_auth<'a>(&mut self, mechanisms: impl Iterator<Item = &'a str>) {
        for mechanism in mechanisms.filter(|m| !m.is_empty()) {
            let mechanism = mechanism.to_ascii_uppercase();
            if !self.auth.contains(&mechanism) {
                self.auth.push(mechanism);
            }
        }
    }
}

/// The first mechanism of a pre-standard `AUTH=LOGIN` keyword.
fn auth_equals(keyword: &str) -> Option<&str> {
    let (name, first) = keyword.split_at_checked(5)?;
    name.eq_ignore_ascii_case("AUTH=").then_some(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Extensions {
        let reply: Reply = text
            .parse()
            .unwrap_or_else(|e| panic!("test reply {text:?} does not parse: {e}"));
        Extensions::from_ehlo(&reply)
    }

    #[test]
    fn keywords() {
        let none = Extensions::default();
        let cases: Vec<(&str, Extensions)> = vec![
            ("250 mx.example", none.clone()),
            ("250 PIPELINING", none.clone()),
            (
                "250-mx.example hello\r\n250 PIPELINING",
                Extensions {
                    pipelining: true,
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250-pipelining\r\n250 size 1000",
                Extensions {
                    pipelining: true,
                    size: Some(1000),
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250 SIZE",
                Extensions {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250 SIZE 0",
                Extensions {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250 SIZE lots",
                Extensions {
                    size: Some(0),
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n\
                 250-CHUNKING\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-X-Foo=bar\r\n\
                 250-\r\n250-DSN\r\n250 requiretls",
                Extensions {
                    eight_bit_mime: true,
                    smtputf8: true,
                    enhanced_status_codes: true,
                    chunking: true,
                    starttls: true,
                    auth: vec!["PLAIN".into(), "LOGIN".into()],
                    dsn: true,
                    requiretls: true,
                    other: vec!["X-Foo=bar".into()],
                    ..none.clone()
                },
            ),
            (
                "250-mx\n250-PIPELINING   \n250 SIZE\t35882577",
                Extensions {
                    pipelining: true,
                    size: Some(35_882_577),
                    ..none.clone()
                },
            ),
            (
                "250-2.0.0 mx\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 8BITMIME",
                Extensions {
                    pipelining: true,
                    eight_bit_mime: true,
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250-auth login Plain  XOAUTH2\r\n250 AUTH=LOGIN PLAIN",
                Extensions {
                    auth: vec!["LOGIN".into(), "PLAIN".into(), "XOAUTH2".into()],
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250-AUTH=CRAM-MD5\r\n250-AUTH\r\n250 AUTHX PLAIN",
                Extensions {
                    auth: vec!["CRAM-MD5".into()],
                    other: vec!["AUTHX PLAIN".into()],
                    ..none.clone()
                },
            ),
            (
                "250-mx\r\n250 AUTH SCRAM-SHA-256 scram-sha-256",
                Extensions {
                    auth: vec!["SCRAM-SHA-256".into()],
                    ..none.clone()
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), want, "EHLO reply {text:?}");
        }
    }
}
