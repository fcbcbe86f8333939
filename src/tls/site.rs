//! What keeps domains with different transport security apart in the
//! scheduler: a connection opened for one domain of a site carries mail of
//! every domain of that site, under the security decided for the first.
//! Two domains share connections only when a connection good for one is
//! good for the other.

use super::decide::Discovery;
use super::found::{DaneStatus, StsStatus};
use super::level::Level;
use crate::mta_sts::Mode;
use crate::route::Route;

/// The part of a site's name that the security of MX delivery to `domain`
/// adds (empty for a domain at `default` with nothing published, so that
/// today's site names stay): its own level, the domain itself for
/// `secure` (the certificate must name it), the MTA-STS policy in
/// `enforce` mode (its MX patterns, hashed), and `dane` when DANE decides
/// for some host (DNSSEC-signed MX records are the domain's, not the
/// host's).
pub fn site_suffix(
    level: Level,
    default: Level,
    discovery: Discovery,
    domain: &str,
    route: &Route,
) -> String {
    let mut suffix = String::new();
    if level != default {
        suffix.push_str(&format!(" tls={level}"));
    }
    if level == Level::Secure {
        suffix.push_str(&format!(" for={domain}"));
    }
    if level.wants_sts(discovery.mta_sts) {
        if let StsStatus::Policy(active) = &route.sts {
            if active.policy.mode == Mode::Enforce {
                let mut patterns: Vec<String> =
                    active.policy.mx.iter().map(ToString::to_string).collect();
                patterns.sort();
                suffix.push_str(&format!(" mta-sts={:08x}", fnv1a(&patterns.join(","))));
            }
        }
    }
    let decides = |dane: &DaneStatus| !matches!(dane, DaneStatus::NotApplicable(_));
    if level.wants_dane(discovery.dane) && route.hosts.iter().any(|h| decides(&h.dane)) {
        suffix.push_str(" dane");
    }
    suffix
}

/// FNV-1a, folded to 32 bits: a short, stable tag (not a defence: the
/// patterns are public).
fn fnv1a(text: &str) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash ^ (hash >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::mta_sts::Policy;
    use crate::route::Host;
    use crate::tls::found::{ActiveSts, NoDane};

    const ON: Discovery = Discovery {
        dane: true,
        mta_sts: true,
    };

    fn route(dane: DaneStatus, sts: Option<(&str, &str)>) -> Route {
        let mut host = Host::new("mx.d.test", vec!["192.0.2.1".parse().expect("an address")]);
        host.dane = dane;
        let mut route = Route::new(vec![host]);
        if let Some((mode, mx)) = sts {
            let text = format!("version: STSv1\nmode: {mode}\nmax_age: 600\n{mx}");
            route.sts = StsStatus::Policy(Arc::new(ActiveSts {
                id: "1".into(),
                policy: Policy::parse(&text).expect("a policy"),
            }));
        }
        route
    }

    #[test]
    fn domains_that_a_connection_could_not_serve_alike_are_apart() {
        let plain = route(DaneStatus::NotApplicable(NoDane::InsecureMx), None);
        let dane = route(DaneStatus::Unusable, None);
        let sts_a = route(
            DaneStatus::default(),
            Some(("enforce", "mx: mx.d.test\nmx: *.e.test\n")),
        );
        let sts_b = route(
            DaneStatus::default(),
            Some(("enforce", "mx: *.e.test\nmx: mx.d.test\n")),
        );
        let sts_c = route(DaneStatus::default(), Some(("enforce", "mx: mx.d.test\n")));
        let testing = route(DaneStatus::default(), Some(("testing", "mx: x.test\n")));
        let may = Level::May;
        let key =
            |level, discovery, domain, route| site_suffix(level, may, discovery, domain, route);
        assert_eq!(key(may, ON, "d.test", &plain), "");
        assert_eq!(
            key(may, ON, "d.test", &testing),
            "",
            "testing changes nothing"
        );
        assert_eq!(key(may, ON, "d.test", &dane), " dane");
        let off = Discovery {
            dane: false,
            mta_sts: false,
        };
        assert_eq!(key(may, off, "d.test", &dane), "", "DANE off");
        assert_eq!(key(may, off, "d.test", &sts_a), "", "MTA-STS off");
        let a = key(may, ON, "d.test", &sts_a);
        assert!(a.starts_with(" mta-sts="), "{a}");
        assert_eq!(
            a,
            key(may, ON, "e.test", &sts_b),
            "same patterns, any order"
        );
        assert_ne!(a, key(may, ON, "d.test", &sts_c), "other patterns");
        assert_eq!(key(Level::Verify, ON, "d.test", &dane), " tls=verify");
        assert_eq!(
            key(Level::Secure, ON, "d.test", &plain),
            " tls=secure for=d.test"
        );
    }
}
