//! End to end: DANE's DNS side against real DNSSEC. Zones signed with
//! ldns-signzone are served by NSD and validated by Unbound, which postman
//! trusts as its local validating resolver (`dns.dnssec = "trust-ad"`);
//! `postman route` shows what each MX host's TLSA lookup came to, and a
//! delivery run shows what it makes of them. The same zones asked of NSD
//! directly (no validator) leave DANE unavailable.
//! (`dane_dns.rs` covers the decisions faster, against a test server that
//! sets the AD bit.)

mod common;

use std::time::Duration;

use common::{assert_outcome, check, config, message};
use postman_integration::certs::TestCa;
use postman_integration::dnssec::{Dnssec, Signing, Zone};
use postman_integration::smtp_sink::SinkOptions;
use postman_integration::{postman, AiosmtpdSink, Config, DnsServer, TestNet, TestQueue, Zones};
use ring::digest;

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

/// Delivery through Unbound: a DANE-TA record in the signed zone that the
/// server's chain matches delivers with DANE; the same record made bogus
/// after signing defers (Unbound answers SERVFAIL); a domain in the
/// unsigned child is delivered opportunistically.
#[test]
fn delivery_through_a_validating_resolver() {
    let net = TestNet::new();
    let (port, ip) = (net.port(), net.ipv4(1));
    let ca = TestCa::new();
    let leaf = ca.leaf(&["mx.d1.test", "mx.d3.test", "mx.plain.test"]);
    let ta = digest::digest(&digest::SHA256, ca.spki());
    let test = Zone::new("test.", Signing::Signed)
        .mx("d1", "mx.d1")
        .a("mx.d1", ip)
        .tlsa("mx.d1", port, (2, 1, 1), ta.as_ref())
        .mx("d3", "mx.d3")
        .a("mx.d3", ip)
        .tlsa("mx.d3", port, (2, 1, 1), ta.as_ref())
        .tamper("mx.d3", port);
    let plain = Zone::new("plain.test.", Signing::Unsigned)
        .mx("@", "mx")
        .a("mx", ip);
    let dnssec = Dnssec::start(&[test, plain]);
    let dir = tempfile::tempdir().expect("a sink directory");
    let options = SinkOptions {
        tls: Some((leaf.chain_path().to_owned(), leaf.key_path().to_owned())),
        pipelining: true,
        client_ca: None,
    };
    let sink = AiosmtpdSink::start_with(net.ip(1), port, dir.path(), &options);
    let queue = TestQueue::new();
    for domain in ["d1.test", "d3.test", "plain.test"] {
        let id = domain.replace('.', "-");
        let to = format!("u@{domain}");
        queue.add(domain, &id, "a@src.test", &[&to], &message(&id, "x\n"));
    }
    let unused = DnsServer::start(Zones::new());
    let mut cfg = config(&queue, &net, &unused);
    cfg.nameservers = vec![dnssec.resolver()];
    cfg.dnssec_probe = Some("test".into());
    cfg.dns_timeout = 5;
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let deliveries = out.deliveries();
    let d = assert_outcome(&out, &deliveries, "u@d1.test", "sent", Some(250));
    assert!(
        d.tls.starts_with("dane TLSv1.") && d.tls.ends_with(" verified"),
        "{d:#?}"
    );
    let d = assert_outcome(&out, &deliveries, "u@plain.test", "sent", Some(250));
    assert!(d.tls.starts_with("opportunistic TLSv1."), "{d:#?}");
    let d = assert_outcome(&out, &deliveries, "u@d3.test", "deferred", None);
    assert!(
        d.reply.contains("TLSA lookup for") && d.reply.contains("SERVFAIL"),
        "a bogus TLSA record defers: {d:#?}"
    );
    check(
        sink.wait_for(2, WAIT).len() == 2,
        "two messages reach the server",
        &queue,
        &out,
    );
}
