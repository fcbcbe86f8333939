use std::net::Ipv4Addr;

use super::*;

fn answer<T>(rcode: Rcode, authentic: bool, records: Vec<T>) -> Lookup<T> {
    Ok(Answer {
        rcode,
        authentic,
        records,
    })
}

fn tlsa(usage: u8, selector: u8, matching: u8, len: usize) -> Tlsa {
    Tlsa {
        usage,
        selector,
        matching,
        data: vec![0xab; len],
    }
}

#[test]
fn tlsa_answers_classify_per_rfc_7672() {
    let ee = tlsa(3, 1, 1, 32);
    let ta = tlsa(2, 0, 2, 64);
    let pkix = tlsa(1, 1, 1, 32);
    let short = tlsa(3, 1, 1, 20);
    let usable = |records: &[Tlsa]| DaneStatus::Usable(Arc::from(records.to_vec()));
    let cases: Vec<(&str, Lookup<Tlsa>, DaneStatus)> = vec![
        (
            "secure, one DANE-EE",
            answer(Rcode::NoError, true, vec![ee.clone()]),
            usable(std::slice::from_ref(&ee)),
        ),
        (
            "secure, DANE-TA and an unusable PKIX-EE: only the usable kept",
            answer(Rcode::NoError, true, vec![pkix.clone(), ta.clone()]),
            usable(std::slice::from_ref(&ta)),
        ),
        (
            "secure, only unusable records",
            answer(Rcode::NoError, true, vec![pkix.clone(), short.clone()]),
            DaneStatus::Unusable,
        ),
        (
            "insecure records",
            answer(Rcode::NoError, false, vec![ee.clone()]),
            DaneStatus::NotApplicable(NoDane::InsecureTlsa),
        ),
        (
            "secure NODATA",
            answer(Rcode::NoError, true, vec![]),
            DaneStatus::NotApplicable(NoDane::NoTlsa),
        ),
        (
            "insecure NODATA",
            answer(Rcode::NoError, false, vec![]),
            DaneStatus::NotApplicable(NoDane::NoTlsa),
        ),
        (
            "secure NXDOMAIN",
            answer(Rcode::NxDomain, true, vec![]),
            DaneStatus::NotApplicable(NoDane::NoTlsa),
        ),
        (
            "insecure NXDOMAIN",
            answer(Rcode::NxDomain, false, vec![]),
            DaneStatus::NotApplicable(NoDane::NoTlsa),
        ),
    ];
    for (what, lookup, expected) in cases {
        assert_eq!(classify_tlsa(lookup), expected, "{what}");
    }
}

#[test]
fn a_failed_tlsa_lookup_is_never_no_dane() {
    let cases: Vec<(&str, Lookup<Tlsa>, &str)> = vec![
        (
            "SERVFAIL",
            answer(Rcode::ServFail, false, vec![]),
            "SERVFAIL (",
        ),
        (
            "SERVFAIL with records",
            answer(Rcode::ServFail, false, vec![tlsa(3, 1, 1, 32)]),
            "SERVFAIL (",
        ),
        ("REFUSED", answer(Rcode::Other(5), false, vec![]), "rcode 5"),
        (
            "FORMERR, AD set",
            answer(Rcode::Other(1), true, vec![]),
            "rcode 1",
        ),
        (
            "timeout",
            Err("request timed out".to_owned()),
            "request timed out",
        ),
    ];
    for (what, lookup, why) in cases {
        let status = classify_tlsa(lookup);
        assert!(
            matches!(&status, DaneStatus::Failed(text) if text.starts_with(why)),
            "{what}: {status:?}"
        );
    }
}

#[test]
fn tlsa_is_looked_up_only_behind_a_secure_mx_and_host() {
    let cases = [
        (true, true, Ok(())),
        (false, true, Err(NoDane::InsecureMx)),
        (false, false, Err(NoDane::InsecureMx)),
        (true, false, Err(NoDane::InsecureHost)),
    ];
    for (mx, host, expected) in cases {
        assert_eq!(tlsa_wanted(mx, host), expected, "mx {mx}, host {host}");
    }
}

#[test]
fn mx_answers_carry_their_security() {
    let records = vec![(10, "mx.d.test".to_owned())];
    type Case = (&'static str, Lookup<(u16, String)>, MxAnswer, bool);
    let cases: Vec<Case> = vec![
        (
            "secure records",
            answer(Rcode::NoError, true, records.clone()),
            MxAnswer::Records(records.clone()),
            true,
        ),
        (
            "insecure records",
            answer(Rcode::NoError, false, records.clone()),
            MxAnswer::Records(records.clone()),
            false,
        ),
        (
            "secure denial of MX: an implicit MX that can be secure",
            answer(Rcode::NoError, true, vec![]),
            MxAnswer::NoRecords,
            true,
        ),
        (
            "NXDOMAIN",
            answer(Rcode::NxDomain, true, vec![]),
            MxAnswer::NxDomain,
            true,
        ),
        (
            "SERVFAIL",
            answer(Rcode::ServFail, false, vec![]),
            MxAnswer::Failed("SERVFAIL from the name server".into()),
            false,
        ),
        (
            "no answer",
            Err("timed out".into()),
            MxAnswer::Failed("timed out".into()),
            false,
        ),
    ];
    for (what, lookup, mx, secure) in cases {
        assert_eq!(mx_answer(lookup), (mx, secure), "{what}");
    }
}

#[test]
fn address_answers_merge_a_and_aaaa() {
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let nodata = |ad| answer::<IpAddr>(Rcode::NoError, ad, vec![]);
    type Case = (&'static str, [Lookup<IpAddr>; 2], AddrAnswer, bool);
    let cases: Vec<Case> = vec![
        (
            "both secure",
            [
                answer(Rcode::NoError, true, vec![v4]),
                answer(Rcode::NoError, true, vec![v6]),
            ],
            AddrAnswer::Addrs(vec![v4, v6]),
            true,
        ),
        (
            "secure A, AAAA NODATA without AD (does not taint)",
            [answer(Rcode::NoError, true, vec![v4]), nodata(false)],
            AddrAnswer::Addrs(vec![v4]),
            true,
        ),
        (
            "secure A, insecure AAAA",
            [
                answer(Rcode::NoError, true, vec![v4]),
                answer(Rcode::NoError, false, vec![v6]),
            ],
            AddrAnswer::Addrs(vec![v4, v6]),
            false,
        ),
        (
            "secure A, AAAA SERVFAIL: the address stands",
            [
                answer(Rcode::NoError, true, vec![v4]),
                answer(Rcode::ServFail, false, vec![]),
            ],
            AddrAnswer::Addrs(vec![v4]),
            true,
        ),
        (
            "A timed out, AAAA NODATA",
            [Err("timed out".into()), nodata(true)],
            AddrAnswer::Failed("timed out".into()),
            false,
        ),
        (
            "both NXDOMAIN",
            [
                answer(Rcode::NxDomain, true, vec![]),
                answer(Rcode::NxDomain, true, vec![]),
            ],
            AddrAnswer::NxDomain,
            false,
        ),
        (
            "NODATA and NXDOMAIN",
            [nodata(true), answer(Rcode::NxDomain, true, vec![])],
            AddrAnswer::NoRecords,
            false,
        ),
    ];
    for (what, lookups, addrs, secure) in cases {
        assert_eq!(addr_answer(lookups), (addrs, secure), "{what}");
    }
}

#[test]
fn ad_is_trusted_only_from_this_host() {
    let lo4: IpAddr = "127.0.0.1".parse().unwrap();
    let lo8: IpAddr = "127.0.0.53".parse().unwrap();
    let lo6: IpAddr = "::1".parse().unwrap();
    let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
    let remote: IpAddr = "192.0.2.53".parse().unwrap();
    let cases = [
        (vec![lo4], Ok(())),
        (vec![lo8, lo6, mapped], Ok(())),
        (vec![lo4, remote], Err(Unavailable::RemoteResolver(remote))),
        (vec![remote], Err(Unavailable::RemoteResolver(remote))),
        (vec![], Err(Unavailable::NoResolver)),
    ];
    for (servers, expected) in cases {
        assert_eq!(trust_ad(&servers), expected, "{servers:?}");
    }
}

#[test]
fn only_an_unauthenticated_answer_to_the_probe_disables_dane() {
    let not_validating = Err(Unavailable::NotValidating { probe: ".".into() });
    let cases: Vec<(&str, Lookup<()>, Result<(), Unavailable>)> = vec![
        ("AD", answer(Rcode::NoError, true, vec![()]), Ok(())),
        (
            "no AD",
            answer(Rcode::NoError, false, vec![()]),
            not_validating.clone(),
        ),
        (
            "NXDOMAIN without AD",
            answer(Rcode::NxDomain, false, vec![]),
            not_validating,
        ),
        (
            "SERVFAIL: says nothing",
            answer(Rcode::ServFail, false, vec![]),
            Ok(()),
        ),
        ("no answer: says nothing", Err("timed out".into()), Ok(())),
    ];
    for (what, lookup, expected) in cases {
        assert_eq!(probe_result(".", &lookup), expected, "{what}");
    }
}
