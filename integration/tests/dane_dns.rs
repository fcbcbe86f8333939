//! End to end: what `postman route` finds of DANE (RFC 7672 §2.2) through
//! the AD bit of a resolver on loopback (`dns.dnssec = "trust-ad"`). The
//! in-process DNS server plays the validating resolver: names marked
//! secure are answered with the AD bit. Each case also counts the TLSA
//! queries, because a domain without DANE must not cost more than the
//! TLSA queries of its secure hosts, and an unsigned one nothing.
//! (`dane_dnssec.rs` does the same with real signatures: NSD and Unbound.)

mod common;

use std::time::Duration;

use common::{check, config, message};
use postman_integration::{postman, Config, DnsServer, HostileServer, TestNet, TestQueue, Zones};

const WAIT: Duration = Duration::from_secs(20);
/// SHA2-256 of some key: the digest's value does not matter to a lookup.
const DIGEST: [u8; 32] = [0x5a; 32];

/// `postman route u@<domain>`'s report.
fn route(cfg: &Config, domain: &str) -> String {
    let file = cfg.write();
    let path = file.path().to_str().expect("a UTF-8 path");
    let out = postman!().run(&["route", "--config", path, &format!("u@{domain}")], WAIT);
    out.assert_success();
    out.stdout
}

/// A config for `dns` with the probe at `d1.test`, which the cases sign.
fn dnssec_config(net: &TestNet, dns: &DnsServer) -> (TestQueue, Config) {
    let queue = TestQueue::new();
    let mut cfg = config(&queue, net, dns);
    cfg.dnssec_probe = Some("d1.test".into());
    (queue, cfg)
}

fn assert_has(report: &str, want: &str) {
    assert!(report.contains(want), "{want:?} in\n{report}");
}

#[test]
fn each_host_gets_the_dane_status_its_answers_make() {
    let net = TestNet::new();
    let port = net.port();
    let ip = net.ipv4(1);
    let zones = Zones::new()
        .secure("d1.test")
        // usable: secure MX, secure host, a DANE-EE record.
        .mx_at("usable.d1.test", ip)
        .tlsa("mx.usable.d1.test", port, (3, 1, 1), &DIGEST)
        // only a PKIX-EE record: TLS without authentication.
        .mx_at("pkix.d1.test", ip)
        .tlsa("mx.pkix.d1.test", port, (1, 1, 1), &DIGEST)
        // no TLSA record: NXDOMAIN, securely.
        .mx_at("none.d1.test", ip)
        // TLSA SERVFAIL: never "no DANE".
        .mx_at("broken.d1.test", ip)
        .tlsa("mx.broken.d1.test", port, (3, 1, 1), &DIGEST)
        .servfail(&format!("_{port}._tcp.mx.broken.d1.test"))
        // secure MX naming a host in an unsigned zone.
        .mx("outside.d1.test", 10, "mx.plain.test")
        .a("mx.plain.test", ip)
        .tlsa("mx.plain.test", port, (3, 1, 1), &DIGEST)
        // an unsigned domain whose host has (unsigned) TLSA records.
        .mx("plain.test", 10, "mx.plain.test");
    let dns = DnsServer::start(zones);
    let (_queue, cfg) = dnssec_config(&net, &dns);
    let cases = [
        (
            "usable.d1.test",
            "1 usable TLSA record: TLS with a matching certificate is required",
            1,
        ),
        (
            "pkix.d1.test",
            "TLSA records, none usable: TLS is required, without authentication",
            1,
        ),
        ("none.d1.test", "none: no TLSA records", 1),
        (
            "broken.d1.test",
            "unknown, the mail waits: TLSA lookup failed: SERVFAIL",
            1,
        ),
        (
            "outside.d1.test",
            "none: MX host address not DNSSEC-signed",
            0,
        ),
        ("plain.test", "none: MX records not DNSSEC-signed", 0),
    ];
    for (domain, want, tlsa_queries) in cases {
        let before = dns.count_queries("TLSA");
        let report = route(&cfg, domain);
        assert_has(&report, &format!("dane       {want}"));
        assert_has(
            &report,
            &format!("dnssec     the AD bit of {} is trusted", dns.addr()),
        );
        assert_eq!(
            dns.count_queries("TLSA") - before,
            tlsa_queries,
            "TLSA queries for {domain}:\n{report}"
        );
    }
}

#[test]
fn without_validation_no_tlsa_is_looked_up() {
    let net = TestNet::new();
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("usable.d1.test", net.ipv4(1))
        .tlsa("mx.usable.d1.test", net.port(), (3, 1, 1), &DIGEST);
    let dns = DnsServer::start(zones);
    let (_queue, base) = dnssec_config(&net, &dns);
    let remote = "192.0.2.53:53".parse().expect("an address");
    type Change = Box<dyn Fn(&mut Config)>;
    let cases: [(&str, Change, &str); 3] = [
        (
            "the probe is answered without AD",
            Box::new(|c| c.dnssec_probe = Some("unsigned.test".into())),
            "unavailable, so no DANE: the answer to the probe query (NS unsigned.test.) \
             was not authenticated",
        ),
        (
            "dns.dnssec is off",
            Box::new(|c| c.dnssec = Some("off".into())),
            "unavailable, so no DANE: dns.dnssec is \"off\"",
        ),
        (
            // The test server is asked alongside (hickory asks two at
            // once), so the route is still found.
            "a name server that is not on this host",
            Box::new(move |c| c.nameservers.push(remote)),
            "unavailable, so no DANE: name server 192.0.2.53 is not on this host",
        ),
    ];
    for (what, change, want) in cases {
        let mut cfg = base.clone();
        change(&mut cfg);
        let before = dns.count_queries("TLSA");
        let report = route(&cfg, "usable.d1.test");
        assert!(
            report.contains(&format!("dnssec     {want}")),
            "{what}: {want:?} in\n{report}"
        );
        assert!(
            report.contains("dane       none: no DNSSEC validation"),
            "{what}:\n{report}"
        );
        assert_eq!(dns.count_queries("TLSA"), before, "{what}: no TLSA query");
    }
}

#[test]
fn a_next_hop_never_gets_dane() {
    let net = TestNet::new();
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("usable.d1.test", net.ipv4(1))
        .tlsa("mx.usable.d1.test", net.port(), (3, 1, 1), &DIGEST);
    let dns = DnsServer::start(zones);
    let (_queue, mut cfg) = dnssec_config(&net, &dns);
    cfg.extra = format!(
        "[routing]\nrelayhost = \"[{}]:{}\"\n",
        net.ipv4(5),
        net.port()
    );
    let report = route(&cfg, "usable.d1.test");
    assert_has(&report, "dane       none: not looked up");
    assert_has(&report, "dnssec     not looked for");
    assert_eq!(dns.count_queries("TLSA"), 0, "no TLSA query:\n{report}");
}

/// `tls.dane = false` stops the lookups for the levels that only follow
/// it; a domain at the `dane` level still gets them.
#[test]
fn tls_dane_off_leaves_only_the_dane_levels() {
    let net = TestNet::new();
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("usable.d1.test", net.ipv4(1))
        .tlsa("mx.usable.d1.test", net.port(), (3, 1, 1), &DIGEST)
        .mx_at("strict.d1.test", net.ipv4(1))
        .tlsa("mx.strict.d1.test", net.port(), (3, 1, 1), &DIGEST);
    let dns = DnsServer::start(zones);
    let (_queue, mut cfg) = dnssec_config(&net, &dns);
    cfg.extra = "[tls]\ndane = false\n[tls.policy]\n\"strict.d1.test\" = \"dane\"\n".into();
    let report = route(&cfg, "usable.d1.test");
    assert_has(&report, "dane       none: not looked up");
    assert_has(&report, "dnssec     not looked for");
    assert_eq!(dns.count_queries("TLSA"), 0, "no TLSA query:\n{report}");
    let report = route(&cfg, "strict.d1.test");
    assert_has(&report, "dane       1 usable TLSA record");
    assert_eq!(dns.count_queries("TLSA"), 1, "one TLSA query:\n{report}");
}

/// The daemon routes through the same lookups: a domain in a signed zone
/// is delivered (the TLSA status rides on the route), its host's TLSA
/// records asked once, and the log says once that validation works; with
/// the default probe (`.`, unsigned here) it says once that it does not.
#[test]
fn the_daemon_logs_the_probe_and_routes_through_it() {
    let net = TestNet::new();
    let _mx = HostileServer::polite(net.addr(1));
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("usable.d1.test", net.ipv4(1));
    let dns = DnsServer::start(zones);
    let (queue, mut cfg) = dnssec_config(&net, &dns);
    for probe in [Some("d1.test"), None] {
        cfg.dnssec_probe = probe.map(str::to_owned);
        let before = dns.count_queries("TLSA");
        queue.add(
            "usable.d1.test",
            "m1",
            "a@src.test",
            &["u@usable.d1.test"],
            &message("m1", "x\n"),
        );
        let out = postman!().run_once(&cfg.write());
        out.assert_success();
        check(queue.state().is_empty(), "delivered", &queue, &out);
        let (works, unavailable, tlsa) = match probe {
            Some(_) => (1, 0, 1),
            None => (0, 1, 0),
        };
        let said = |text| out.count_records(text);
        assert_eq!(said("DNSSEC validation works"), works, "probe {probe:?}");
        assert_eq!(said("DANE unavailable"), unavailable, "probe {probe:?}");
        assert_eq!(dns.count_queries("TLSA") - before, tlsa, "probe {probe:?}");
    }
}

/// A reply too large for UDP (with DO set, replies grow) comes truncated,
/// and the DNSSEC-aware client asks again over TCP: the host's every
/// address reaches the route, and its A question is asked twice.
#[test]
fn a_truncated_reply_is_asked_again_over_tcp() {
    let net = TestNet::new();
    let mut zones = Zones::new()
        .secure("d1.test")
        .mx("big.d1.test", 10, "mx.big.d1.test");
    for k in 1..=120u8 {
        zones = zones.a("mx.big.d1.test", std::net::Ipv4Addr::new(127, 1, 2, k));
    }
    let dns = DnsServer::start(zones);
    let (_queue, cfg) = dnssec_config(&net, &dns);
    let report = route(&cfg, "big.d1.test");
    assert_has(&report, "127.1.2.1, ");
    assert_has(&report, ", 127.1.2.120]");
    assert_has(&report, "dane       none: no TLSA records");
    let asked_a = dns
        .queries()
        .iter()
        .filter(|q| q.kind == "A" && q.name == "mx.big.d1.test.")
        .count();
    assert_eq!(asked_a, 2, "over UDP, then over TCP:\n{report}");
}

/// A probe that gets no answer says nothing about validation: a warning,
/// and each answer's AD bit still decides.
#[test]
fn an_unanswered_probe_leaves_each_answer_to_say() {
    let net = TestNet::new();
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("usable.d1.test", net.ipv4(1))
        .tlsa("mx.usable.d1.test", net.port(), (3, 1, 1), &DIGEST)
        .silent("probe.test");
    let dns = DnsServer::start(zones);
    let (_queue, mut cfg) = dnssec_config(&net, &dns);
    cfg.dnssec_probe = Some("probe.test".into());
    cfg.dns_attempts = 0;
    let file = cfg.write();
    let path = file.path().to_str().expect("a UTF-8 path");
    let out = postman!().run(&["route", "--config", path, "u@usable.d1.test"], WAIT);
    out.assert_success();
    assert_has(&out.stdout, "dane       1 usable TLSA record");
    assert_has(&out.stdout, "dnssec     the AD bit of");
    assert_has(&out.stderr, "DNSSEC probe unanswered");
}
