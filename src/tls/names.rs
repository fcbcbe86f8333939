//! Reference names for the `secure` level: the certificate must name the
//! recipient domain or a host under it (Postfix's `nexthop, dot-nexthop`
//! match), so a forged MX record cannot send the mail to a host the
//! domain's owner did not name in a certificate.

use rustls_pki_types::CertificateDer;

/// The names to check `cert` against for `names` (each a host name, or
/// `.domain` for any host under the domain): the exact names as they are,
/// and for each `.domain` the certificate's own DNS names under it, a
/// wildcard given a concrete first label so that a name check accepts it.
/// A certificate that cannot be parsed gives the exact names alone (the
/// chain check then refuses it).
pub fn reference_names(cert: &CertificateDer<'_>, names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| !n.starts_with('.'))
        .cloned()
        .collect();
    let suffixes: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with('.'))
        .map(|n| n.to_ascii_lowercase())
        .collect();
    if suffixes.is_empty() {
        return out;
    }
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return out;
    };
    for san in ee.valid_dns_names() {
        let san = san.trim_end_matches('.').to_ascii_lowercase();
        let concrete = match san.strip_prefix("*.") {
            Some(rest) => format!("wildcard.{rest}"),
            None => san,
        };
        let under = suffixes
            .iter()
            .any(|suffix| concrete.ends_with(suffix.as_str()));
        if under && !out.contains(&concrete) {
            out.push(concrete);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(names: &[&str]) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let key = rcgen::KeyPair::generate().expect("a key");
        let params = rcgen::CertificateParams::new(names).expect("params");
        params
            .self_signed(&key)
            .expect("a certificate")
            .der()
            .clone()
    }

    #[test]
    fn hosts_under_the_domain_are_candidates() {
        let wanted = vec!["d.test".to_owned(), ".d.test".to_owned()];
        let cases: [(&[&str], &[&str]); 4] = [
            (&["mx1.d.test"], &["d.test", "mx1.d.test"]),
            (&["*.d.test", "other.test"], &["d.test", "wildcard.d.test"]),
            // Not under it: only the exact name, which the check refuses.
            (&["mx.notd.test", "d.test.evil"], &["d.test"]),
            (&["D.TEST"], &["d.test"]),
        ];
        for (sans, want) in cases {
            assert_eq!(reference_names(&cert(sans), &wanted), want, "{sans:?}");
        }
    }

    #[test]
    fn exact_names_need_no_certificate() {
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        let names = vec!["mx.d.test".to_owned(), ".d.test".to_owned()];
        assert_eq!(reference_names(&garbage, &names), ["mx.d.test"]);
    }
}
