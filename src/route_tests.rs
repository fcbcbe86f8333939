//! Tests of the MX routing policy: host order, sites, routes, unusable
//! addresses and the kinds of route failure.

use super::*;

#[test]
fn domains_naming_the_same_mx_hosts_share_a_site_whatever_the_order() {
    let google = |order: &[(u16, &str)]| {
        site_name(
            "x.test",
            &MxAnswer::Records(order.iter().map(|(p, h)| (*p, h.to_string())).collect()),
        )
    };
    let a = google(&[
        (1, "ASPMX.L.GOOGLE.COM."),
        (5, "alt2.aspmx.l.google.com"),
        (5, "alt1.aspmx.l.google.com"),
    ]);
    let b = google(&[
        (5, "alt1.aspmx.l.google.com."),
        (1, "aspmx.l.google.com"),
        (5, "alt2.aspmx.l.google.com"),
    ]);
    assert_eq!(a, b);
    assert_eq!(
        a.name,
        "aspmx.l.google.com;alt1.aspmx.l.google.com,alt2.aspmx.l.google.com"
    );
    let ordered = google(&[(5, "alt1.aspmx.l.google.com"), (1, "aspmx.l.google.com")]);
    let reversed = google(&[(1, "alt1.aspmx.l.google.com"), (5, "aspmx.l.google.com")]);
    assert_ne!(ordered.name, reversed.name, "the preference order matters");
    let cases = [
        (MxAnswer::NoRecords, "x.test"),
        (MxAnswer::NxDomain, "x.test"),
        (MxAnswer::Records(vec![(0, ".".into())]), "x.test"),
        (
            MxAnswer::Records(vec![(10, "mx.test".into()), (0, ".".into())]),
            "mx.test",
        ),
    ];
    for (answer, want) in cases {
        assert_eq!(site_name("X.test.", &answer).name, want, "{answer:?}");
    }
    let many = MxAnswer::Records((0..20).map(|i| (10, format!("mx{i:02}.test"))).collect());
    let site = site_name("x.test", &many);
    assert_eq!(site.hosts.len(), 20);
    assert!(site.name.starts_with("mx00.test,mx01.test,"));
    assert!(site.name.ends_with("mx07.test;+12"), "{}", site.name);
}

fn records(list: &[(u16, &str)]) -> MxAnswer {
    MxAnswer::Records(list.iter().map(|(p, h)| (*p, h.to_string())).collect())
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn mx_hosts_table() {
    type Want = Result<Vec<&'static str>, RouteError>;
    let domain = || "d.test".to_owned();
    let cases: Vec<(&str, MxAnswer, Want)> = vec![
        (
            "preference order",
            records(&[(20, "mx2.d.test."), (10, "mx1.d.test."), (30, "mx3.d.test")]),
            Ok(vec!["mx1.d.test", "mx2.d.test", "mx3.d.test"]),
        ),
        (
            "lower-cased, trailing dot stripped, duplicates dropped",
            records(&[(10, "MX.D.Test."), (20, "mx.d.test"), (5, "Other.Test.")]),
            Ok(vec!["other.test", "mx.d.test"]),
        ),
        ("implicit MX", MxAnswer::NoRecords, Ok(vec!["d.test"])),
        (
            "empty records = implicit MX",
            records(&[]),
            Ok(vec!["d.test"]),
        ),
        (
            "null MX",
            records(&[(0, ".")]),
            Err(RouteError::NullMx { domain: domain() }),
        ),
        (
            "null MX as empty name",
            records(&[(0, "")]),
            Err(RouteError::NullMx { domain: domain() }),
        ),
        (
            "null MX with non-zero preference",
            records(&[(10, ".")]),
            Err(RouteError::NullMx { domain: domain() }),
        ),
        (
            "null MX beside real records is ignored",
            records(&[(0, "."), (10, "mx.d.test")]),
            Ok(vec!["mx.d.test"]),
        ),
        (
            "nxdomain",
            MxAnswer::NxDomain,
            Err(RouteError::NoSuchDomain { domain: domain() }),
        ),
        (
            "lookup failed",
            MxAnswer::Failed("timed out".into()),
            Err(RouteError::MxLookupFailed {
                domain: domain(),
                why: "timed out".into(),
            }),
        ),
    ];
    for (name, answer, want) in cases {
        let got = mx_hosts("D.Test.", answer.clone(), 7, 5);
        let want = want.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(got, want, "{name}: {answer:?}");
    }
}

#[test]
fn equal_preferences_shuffle_deterministically() {
    let answer = records(&[
        (10, "a.test"),
        (10, "b.test"),
        (10, "c.test"),
        (10, "d.test"),
        (20, "z.test"),
        (5, "first.test"),
    ]);
    let mut orders = std::collections::BTreeSet::new();
    for seed in 0..64 {
        let hosts = mx_hosts("x.test", answer.clone(), seed, 10).expect("hosts");
        let again = mx_hosts("x.test", answer.clone(), seed, 10).expect("hosts");
        assert_eq!(hosts, again, "seed {seed} gives the same order twice");
        assert_eq!(
            hosts[0], "first.test",
            "seed {seed}: lowest preference first"
        );
        assert_eq!(hosts[5], "z.test", "seed {seed}: highest preference last");
        let mut middle = hosts[1..5].to_vec();
        middle.sort();
        assert_eq!(
            middle,
            ["a.test", "b.test", "c.test", "d.test"],
            "seed {seed}"
        );
        orders.insert(hosts);
    }
    assert!(
        orders.len() > 10,
        "only {} orders from 64 seeds",
        orders.len()
    );
}

/// Issue 22, defect 13: only the first `limit` hosts are looked up,
/// however many records the domain has.
#[test]
fn mx_hosts_stop_at_the_limit() {
    let mut list: Vec<(u16, String)> = (0..1000)
        .map(|i| (10 + (i % 7) as u16, format!("mx{i}.d.test")))
        .collect();
    list.push((1, "first.d.test".into()));
    list.push((1, "FIRST.d.test.".into()));
    let answer = MxAnswer::Records(list);
    let cases = [(1, 1), (5, 5), (0, 1), (1000, 1000), (5000, 1001)];
    for (limit, want) in cases {
        let hosts = mx_hosts("d.test", answer.clone(), 3, limit).expect("hosts");
        assert_eq!(hosts.len(), want, "limit {limit}");
        assert_eq!(hosts[0], "first.d.test", "limit {limit}: preference first");
    }
    let hosts = mx_hosts("d.test", answer, 3, 5).expect("hosts");
    assert!(
        hosts[1..].iter().all(|h| h.starts_with("mx")),
        "the duplicate of the first host takes no place: {hosts:?}"
    );
}

#[test]
fn build_route_table() {
    let v4 = ip("192.0.2.1");
    let v6 = ip("2001:db8::1");
    let v4b = ip("192.0.2.2");
    type Want = Result<Vec<(&'static str, Vec<IpAddr>)>, RouteError>;
    let domain = || "d.test".to_owned();
    let unresolved = |host: &str, problem| Unresolved {
        host: host.to_owned(),
        problem,
    };
    type Case = (&'static str, Vec<(&'static str, AddrAnswer)>, bool, Want);
    let cases: Vec<Case> = vec![
        (
            "addresses keep their order, hosts their order",
            vec![
                ("mx1.d.test", AddrAnswer::Addrs(vec![v6, v4, v6])),
                ("MX2.d.test.", AddrAnswer::Addrs(vec![v4b])),
            ],
            false,
            Ok(vec![
                ("mx1.d.test", vec![v6, v4]),
                ("mx2.d.test", vec![v4b]),
            ]),
        ),
        (
            "hosts without addresses dropped",
            vec![
                ("mx1.d.test", AddrAnswer::NxDomain),
                ("mx2.d.test", AddrAnswer::Failed("servfail".into())),
                ("mx3.d.test", AddrAnswer::Addrs(vec![])),
                ("mx4.d.test", AddrAnswer::Addrs(vec![v4])),
            ],
            false,
            Ok(vec![("mx4.d.test", vec![v4])]),
        ),
        (
            "implicit MX, no such host",
            vec![("d.test", AddrAnswer::NxDomain)],
            true,
            Err(RouteError::NoMailHost { domain: domain() }),
        ),
        (
            "implicit MX, no address records",
            vec![("d.test", AddrAnswer::NoRecords)],
            true,
            Err(RouteError::NoMailHost { domain: domain() }),
        ),
        (
            "implicit MX, lookup failed",
            vec![("d.test", AddrAnswer::Failed("timed out".into()))],
            true,
            Err(RouteError::AddressLookupFailed {
                domain: domain(),
                hosts: vec![unresolved(
                    "d.test",
                    AddrProblem::Failed("timed out".into()),
                )],
            }),
        ),
        (
            "MX targets that do not resolve",
            vec![
                ("mx1.d.test", AddrAnswer::NxDomain),
                ("mx2.d.test", AddrAnswer::NoRecords),
            ],
            false,
            Err(RouteError::NoMxAddress {
                domain: domain(),
                hosts: vec![
                    unresolved("mx1.d.test", AddrProblem::NotFound),
                    unresolved("mx2.d.test", AddrProblem::NoRecords),
                ],
            }),
        ),
        (
            "MX targets, one failed",
            vec![
                ("mx1.d.test", AddrAnswer::NxDomain),
                ("mx2.d.test", AddrAnswer::Failed("refused".into())),
            ],
            false,
            Err(RouteError::AddressLookupFailed {
                domain: domain(),
                hosts: vec![
                    unresolved("mx1.d.test", AddrProblem::NotFound),
                    unresolved("mx2.d.test", AddrProblem::Failed("refused".into())),
                ],
            }),
        ),
        (
            "no hosts at all",
            vec![],
            false,
            Err(RouteError::NoHostToTry { domain: domain() }),
        ),
    ];
    for (name, hosts, implicit, want) in cases {
        let input: Vec<(String, AddrAnswer)> =
            hosts.into_iter().map(|(h, a)| (h.to_string(), a)).collect();
        let got = build_route("d.test", input.clone(), implicit).map(|r| {
            r.hosts
                .into_iter()
                .map(|h| (h.name, h.addrs))
                .collect::<Vec<_>>()
        });
        let want = want.map(|v| {
            v.into_iter()
                .map(|(h, a)| (h.to_string(), a))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, want, "{name}: {input:?} implicit={implicit}");
    }
}

/// Issue 22, defect 10: the addresses never connected to.
#[test]
fn unusable_addresses_table() {
    let sock = |s: &str| -> SocketAddr { s.parse().expect("test socket address") };
    let listeners = [
        sock("192.0.2.25:25"),
        sock("[2001:db8::25]:25"),
        sock("127.0.0.1:2525"),
    ];
    let wildcard = [sock("0.0.0.0:25")];
    let own = [ip("198.51.100.7")];
    type Case<'a> = (
        &'static str,
        &'static str,
        &'a [SocketAddr],
        Option<Unusable>,
    );
    let cases: Vec<Case> = vec![
        ("0.0.0.0", "0.0.0.0:25", &[], Some(Unusable::Unspecified)),
        ("::", "[::]:25", &[], Some(Unusable::Unspecified)),
        (
            "mapped 0.0.0.0",
            "[::ffff:0.0.0.0]:25",
            &[],
            Some(Unusable::Unspecified),
        ),
        (
            "multicast v4",
            "224.0.0.1:25",
            &[],
            Some(Unusable::Multicast),
        ),
        (
            "multicast v6",
            "[ff02::1]:25",
            &[],
            Some(Unusable::Multicast),
        ),
        (
            "broadcast",
            "255.255.255.255:25",
            &[],
            Some(Unusable::Broadcast),
        ),
        ("a remote host", "192.0.2.1:25", &listeners, None),
        ("loopback stays allowed", "127.0.0.1:25", &listeners, None),
        (
            "a listener",
            "192.0.2.25:25",
            &listeners,
            Some(Unusable::LocalListener),
        ),
        (
            "a listener, v6",
            "[2001:db8::25]:25",
            &listeners,
            Some(Unusable::LocalListener),
        ),
        (
            "a listener, mapped",
            "[::ffff:192.0.2.25]:25",
            &listeners,
            Some(Unusable::LocalListener),
        ),
        (
            "a loopback listener",
            "127.0.0.1:2525",
            &listeners,
            Some(Unusable::LocalListener),
        ),
        (
            "another port of a listener's address",
            "192.0.2.25:2525",
            &listeners,
            None,
        ),
        (
            "another loopback address",
            "127.0.0.2:2525",
            &listeners,
            None,
        ),
        (
            "wildcard listener: own address",
            "198.51.100.7:25",
            &wildcard,
            Some(Unusable::LocalListener),
        ),
        (
            "wildcard listener: loopback",
            "127.0.0.53:25",
            &wildcard,
            Some(Unusable::LocalListener),
        ),
        (
            "wildcard listener: a remote host",
            "192.0.2.1:25",
            &wildcard,
            None,
        ),
        (
            "wildcard listener: another port",
            "198.51.100.7:587",
            &wildcard,
            None,
        ),
    ];
    for (name, addr, listeners, want) in cases {
        assert_eq!(
            unusable_address(sock(addr), listeners, &own),
            want,
            "{name}: {addr}"
        );
    }
    assert!(Unusable::Unspecified.loops_back() && Unusable::LocalListener.loops_back());
    assert!(!Unusable::Multicast.loops_back() && !Unusable::Broadcast.loops_back());
}

/// Each kind of route failure with what the dispatcher does with it
/// (bounce or defer), the status the bounce reports and the text the
/// logs and bounces show, which may be reworded without changing the
/// other two.
#[test]
fn route_errors_know_their_class_status_and_text() {
    use crate::smtp::Class::{Permanent, Transient};
    let domain = || "d.test".to_owned();
    let hosts = || {
        vec![
            Unresolved {
                host: "mx1.d.test".into(),
                problem: AddrProblem::NotFound,
            },
            Unresolved {
                host: "mx2.d.test".into(),
                problem: AddrProblem::NoRecords,
            },
            Unresolved {
                host: "mx3.d.test".into(),
                problem: AddrProblem::Failed("SERVFAIL".into()),
            },
        ]
    };
    let cases = [
        (
            RouteError::NullMx { domain: domain() },
            Permanent,
            "5.1.10",
            "domain d.test does not accept mail (null MX)",
        ),
        (
            RouteError::NoSuchDomain { domain: domain() },
            Permanent,
            "5.1.2",
            "domain d.test does not exist",
        ),
        (
            RouteError::NoMailHost { domain: domain() },
            Permanent,
            "5.0.0",
            "no MX and no A/AAAA record for d.test",
        ),
        (
            RouteError::MxLookupFailed {
                domain: domain(),
                why: "timed out".into(),
            },
            Transient,
            "4.4.3",
            "MX lookup for d.test failed: timed out",
        ),
        (
            RouteError::AddressLookupFailed {
                domain: domain(),
                hosts: hosts(),
            },
            Transient,
            "4.4.3",
            "cannot resolve mail hosts for d.test (mx1.d.test: host not found; \
             mx2.d.test: no A/AAAA record; mx3.d.test: address lookup failed: SERVFAIL)",
        ),
        (
            RouteError::NoMxAddress {
                domain: domain(),
                hosts: hosts()[..2].to_vec(),
            },
            Transient,
            "4.4.4",
            "no MX host of d.test has an address (mx1.d.test: host not found; \
             mx2.d.test: no A/AAAA record)",
        ),
        (
            RouteError::NoHostToTry { domain: domain() },
            Transient,
            "4.4.4",
            "no MX host to try for d.test",
        ),
    ];
    for (error, class, status, text) in cases {
        assert_eq!(error.class(), class, "{error:?}");
        assert_eq!(error.is_permanent(), class == Permanent, "{error:?}");
        assert_eq!(error.status().to_string(), status, "{error:?}");
        assert_eq!(
            error.status().class,
            if class == Permanent { 5 } else { 4 },
            "the status agrees with the class: {error:?}"
        );
        assert_eq!(error.to_string(), text, "{error:?}");
    }
}
