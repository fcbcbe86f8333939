//! End to end: DANE decides delivery (RFC 7672). The in-process DNS
//! server plays the local validating resolver (the AD bit on `d1.test`);
//! aiosmtpd offers STARTTLS with a leaf certificate that a test CA signed,
//! sending the chain. A match delivers and the record's `tls` says `dane`;
//! a mismatch, a failed TLSA lookup and TLSA records for a host without
//! STARTTLS defer; an unsigned domain is delivered opportunistically, as
//! without DANE.

mod common;

use std::time::Duration;

use common::{assert_outcome, check, config, message};
use postman_integration::smtp_sink::SinkOptions;
use postman_integration::{postman, AiosmtpdSink, DnsServer, TestNet, TestQueue, Zones};
use ring::digest;

const WAIT: Duration = Duration::from_secs(20);

fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// A sink on `net`'s address `k`, with STARTTLS when `tls` names a
/// certificate chain and key.
fn sink(
    net: &TestNet,
    k: u8,
    dir: &std::path::Path,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> AiosmtpdSink {
    let options = SinkOptions {
        tls: tls.map(|(chain, key)| (chain.to_path_buf(), key.to_path_buf())),
        pipelining: true,
        client_ca: None,
    };
    AiosmtpdSink::start_with(net.ip(k), net.port(), dir, &options)
}

#[test]
fn dane_decides_each_delivery() {
    let net = TestNet::new();
    let port = net.port();
    let (tls_ip, plain_ip) = (net.ipv4(1), net.ipv4(2));
    let ca = postman_integration::certs::TestCa::new();
    let hosts = [
        "mx.ee.d1.test",
        "mx.ta.d1.test",
        "mx.bad.d1.test",
        "mx.fail.d1.test",
        "mx.plain.test",
    ];
    let leaf = ca.leaf(&hosts);
    let (tls_dir, plain_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_tls = sink(
        &net,
        1,
        tls_dir.path(),
        Some((leaf.chain_path(), leaf.key_path())),
    );
    let _without_tls = sink(&net, 2, plain_dir.path(), None);
    let ee = sha256(leaf.spki());
    let ta = sha256(ca.spki());
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("ee.d1.test", tls_ip)
        .tlsa("mx.ee.d1.test", port, (3, 1, 1), &ee)
        .mx_at("ta.d1.test", tls_ip)
        .tlsa("mx.ta.d1.test", port, (2, 1, 1), &ta)
        .mx_at("bad.d1.test", tls_ip)
        .tlsa("mx.bad.d1.test", port, (3, 1, 1), &[0x5a; 32])
        .mx_at("fail.d1.test", tls_ip)
        .tlsa("mx.fail.d1.test", port, (3, 1, 1), &ee)
        .servfail(&format!("_{port}._tcp.mx.fail.d1.test"))
        .mx_at("notls.d1.test", plain_ip)
        .tlsa("mx.notls.d1.test", port, (3, 1, 1), &ee)
        .mx_at("plain.test", tls_ip)
        .tlsa("mx.plain.test", port, (3, 1, 1), &[0x5a; 32]);
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    let domains = [
        "ee.d1.test",
        "ta.d1.test",
        "bad.d1.test",
        "fail.d1.test",
        "notls.d1.test",
        "plain.test",
    ];
    for domain in domains {
        let id = domain.replace('.', "-");
        queue.add(
            domain,
            &id,
            "a@src.test",
            &[&format!("u@{domain}")],
            &message(&id, "x\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.dnssec_probe = Some("d1.test".into());
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let deliveries = out.deliveries();
    for to in ["u@ee.d1.test", "u@ta.d1.test"] {
        let d = assert_outcome(&out, &deliveries, to, "sent", Some(250));
        assert!(
            d.tls.starts_with("dane TLSv1.") && d.tls.ends_with(" verified"),
            "{to}: {d:#?}"
        );
    }
    let d = assert_outcome(&out, &deliveries, "u@plain.test", "sent", Some(250));
    assert!(
        d.tls.starts_with("opportunistic TLSv1.") && d.tls.ends_with(" unverified"),
        "an unsigned domain is delivered as without DANE: {d:#?}"
    );
    for (to, why) in [
        (
            "u@bad.d1.test",
            "no TLSA record matches the server's certificate chain",
        ),
        ("u@fail.d1.test", "TLSA lookup for"),
        ("u@notls.d1.test", "does not offer STARTTLS"),
    ] {
        let d = assert_outcome(&out, &deliveries, to, "deferred", None);
        assert!(d.reply.contains(why), "{to}: {why:?} in {d:#?}");
    }
    let received = with_tls.wait_for(3, WAIT);
    check(
        received.len() == 3,
        "the matching and the unsigned domains reach the TLS server, nothing else",
        &queue,
        &out,
    );
    let queued: Vec<String> = queue.state().queued.keys().cloned().collect();
    check(
        queued == ["bad.d1.test", "fail.d1.test", "notls.d1.test"],
        "the three deferred messages stay queued",
        &queue,
        &out,
    );
}

/// DANE and MTA-STS on one domain (RFC 8461 §2): DANE decides. Both
/// domains publish an MTA-STS policy in enforce mode that lists their MX
/// host, whose certificate a trusted CA signed for its name, so MTA-STS
/// alone would deliver both. With matching TLSA records the record says
/// `dane`; with TLSA records that match nothing the message waits: a
/// valid MTA-STS check never overrides a failing DANE one.
#[test]
fn dane_takes_precedence_over_mta_sts_on_one_domain() {
    use postman_integration::mta_sts::{Behaviour, PolicyServer};
    let net = TestNet::new();
    let port = net.port();
    let ca = postman_integration::certs::TestCa::new();
    let leaf = ca.leaf(&["mx.both.d1.test", "mx.stsbad.d1.test"]);
    let dir = tempfile::tempdir().unwrap();
    let server = sink(
        &net,
        1,
        dir.path(),
        Some((leaf.chain_path(), leaf.key_path())),
    );
    let policy_cert = ca.leaf(&["mta-sts.both.d1.test", "mta-sts.stsbad.d1.test"]);
    let policy = "version: STSv1\nmode: enforce\nmx: mx.both.d1.test\nmx: mx.stsbad.d1.test\nmax_age: 86400\n";
    let policy_server = PolicyServer::start(&policy_cert, policy, Behaviour::Ok);
    let ip = net.ipv4(1);
    let zones = Zones::new()
        .secure("d1.test")
        .mx_at("both.d1.test", ip)
        .tlsa("mx.both.d1.test", port, (3, 1, 1), &sha256(leaf.spki()))
        .mx_at("stsbad.d1.test", ip)
        .tlsa("mx.stsbad.d1.test", port, (3, 1, 1), &[0x5a; 32]);
    let zones = ["both.d1.test", "stsbad.d1.test"]
        .iter()
        .fold(zones, |zones, domain| {
            zones
                .txt(&format!("_mta-sts.{domain}"), "v=STSv1; id=1")
                .addr(&format!("mta-sts.{domain}"), policy_server.ip())
        });
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    for domain in ["both.d1.test", "stsbad.d1.test"] {
        let id = domain.replace('.', "-");
        queue.add(
            domain,
            &id,
            "a@src.test",
            &[&format!("u@{domain}")],
            &message(&id, "x\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.dnssec_probe = Some("d1.test".into());
    cfg.extra = format!("\n[tls]\nca_file = \"{}\"\n", ca.cert_path().display());
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let deliveries = out.deliveries();
    let d = assert_outcome(&out, &deliveries, "u@both.d1.test", "sent", Some(250));
    assert!(
        d.tls.starts_with("dane TLSv1.") && d.tls.ends_with(" verified"),
        "{d:#?}"
    );
    let d = assert_outcome(&out, &deliveries, "u@stsbad.d1.test", "deferred", None);
    assert!(
        d.reply
            .contains("no TLSA record matches the server's certificate chain"),
        "DANE's failure, not MTA-STS's success: {d:#?}"
    );
    assert_eq!(d.dsn, "4.7.5", "{d:#?}");
    check(
        server.wait_for(1, WAIT).len() == 1,
        "only the DANE match reaches the server",
        &queue,
        &out,
    );
    assert!(
        !policy_server.requests().is_empty(),
        "the policies were fetched: MTA-STS applied too"
    );
}
