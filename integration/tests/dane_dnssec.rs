//! End to end: DANE's DNS side against real DNSSEC. Zones signed with
//! ldns-signzone are served by NSD and validated by Unbound, which postman
//! trusts as its local validating resolver (`dns.dnssec = "trust-ad"`);
//! `postman route` shows what each MX host's TLSA lookup came to. The same
//! zones asked of NSD directly (no validator) leave DANE unavailable.
//! (`dane_dns.rs` covers the decisions faster, against a test server that
//! sets the AD bit.)

mod common;

use std::time::Duration;

use common::config;
use postman_integration::dnssec::{Dnssec, Signing, Zone};
use postman_integration::{postman, Config, DnsServer, TestNet, TestQueue, Zones};

const WAIT: Duration = Duration::from_secs(30);
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

/// The signed `test.` zone and its children, for SMTP servers on `net`.
fn zones(net: &TestNet) -> Vec<Zone> {
    let (port, ip) = (net.port(), net.ipv4(1));
    let test = Zone::new("test.", Signing::Signed)
        // A usable DANE-EE record.
        .mx("d1", "mx.d1")
        .a("mx.d1", ip)
        .tlsa("mx.d1", port, (3, 1, 1), &DIGEST)
        // No TLSA record: NXDOMAIN, proven by NSEC.
        .mx("d2", "mx.d2")
        .a("mx.d2", ip)
        // A TLSA record whose signature no longer verifies.
        .mx("d3", "mx.d3")
        .a("mx.d3", ip)
        .tlsa("mx.d3", port, (3, 1, 1), &DIGEST)
        .tamper("mx.d3", port)
        // A secure MX naming a host in the unsigned child.
        .mx("d4", "mx.plain.test.");
    let plain = Zone::new("plain.test.", Signing::Unsigned)
        .mx("@", "mx")
        .a("mx", ip)
        .tlsa("mx", port, (3, 1, 1), &DIGEST);
    let bogus = Zone::new("bogus.test.", Signing::Expired)
        .mx("@", "mx")
        .a("mx", ip)
        .tlsa("mx", port, (3, 1, 1), &DIGEST);
    vec![test, plain, bogus]
}

#[test]
fn tlsa_lookups_through_a_validating_resolver() {
    let net = TestNet::new();
    let dnssec = Dnssec::start(&zones(&net));
    let queue = TestQueue::new();
    // The in-process server only fills the config: Unbound is the one asked.
    let unused = DnsServer::start(Zones::new());
    let mut cfg = config(&queue, &net, &unused);
    cfg.nameservers = vec![dnssec.resolver()];
    cfg.dnssec_probe = Some("test".into());
    cfg.dns_timeout = 5;
    let trusted = format!("dnssec     the AD bit of {} is trusted", dnssec.resolver());
    let cases = [
        (
            "d1.test",
            "dane       1 usable TLSA record: TLS with a matching certificate is required",
        ),
        ("d2.test", "dane       none: no TLSA records"),
        (
            "d3.test",
            "dane       unknown, the mail waits: TLSA lookup failed: SERVFAIL",
        ),
        (
            "d4.test",
            "dane       none: MX host address not DNSSEC-signed",
        ),
        (
            "plain.test",
            "dane       none: MX records not DNSSEC-signed",
        ),
        (
            "bogus.test",
            "route      none now, the mail waits: MX lookup for bogus.test failed: SERVFAIL",
        ),
    ];
    for (domain, want) in cases {
        let report = route(&cfg, domain);
        assert!(
            report.contains(want) && report.contains(&trusted),
            "{domain}: {want:?} and {trusted:?} in\n{report}\nunbound:\n{}",
            dnssec.log("unbound")
        );
    }

    // NSD itself: right answers, but nobody vouches for them.
    cfg.nameservers = vec![dnssec.authority()];
    let report = route(&cfg, "d1.test");
    for want in [
        "dnssec     unavailable, so no DANE: the answer to the probe query (NS test.) \
         was not authenticated",
        "dane       none: no DNSSEC validation",
    ] {
        assert!(report.contains(want), "{want:?} in\n{report}");
    }
}
