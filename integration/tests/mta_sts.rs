//! End to end: MTA-STS discovery, fetch and cache (RFC 8461 §3), seen
//! through `postman route` and a daemon run. The `_mta-sts` TXT records
//! and `mta-sts.<domain>` addresses come from the in-process DNS server;
//! the policies from a Python HTTPS server on port 443 of a loopback
//! address, with a certificate from a test CA that postman trusts through
//! `tls.ca_file`. The cache lives under the test queue's root.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{check, config, message};
use postman_integration::certs::{TestCa, TestCert};
use postman_integration::mta_sts::{Behaviour, PolicyServer};
use postman_integration::{postman, DnsServer, HostileServer, TestNet, TestQueue, Zones};

const WAIT: Duration = Duration::from_secs(40);
const DOMAIN: &str = "d.test";
const POLICY: &str =
    "version: STSv1\nmode: enforce\nmx: mx.d.test\nmx: *.backup.d.test\nmax_age: 86400\n";

/// One test's queue, network, CA and policy server certificate.
struct Setup {
    queue: TestQueue,
    net: TestNet,
    ca: TestCa,
    cert: TestCert,
}

impl Setup {
    fn new() -> Setup {
        let ca = TestCa::new();
        let cert = ca.leaf(&["mta-sts.d.test"]);
        Setup {
            queue: TestQueue::new(),
            net: TestNet::new(),
            ca,
            cert,
        }
    }

    /// `d.test`'s MX, its `_mta-sts` TXT record with `id` (none when
    /// `None`), and `mta-sts.d.test` at `policy_ip`.
    fn zones(&self, id: Option<&str>, policy_ip: std::net::IpAddr) -> Zones {
        let zones = Zones::new()
            .mx_at(DOMAIN, self.net.ipv4(1))
            .addr("mta-sts.d.test", policy_ip);
        match id {
            Some(id) => zones.txt("_mta-sts.d.test", &format!("v=STSv1; id={id};")),
            None => zones,
        }
    }

    /// `postman route u@d.test` against `dns`; its output.
    fn route(&self, dns: &DnsServer) -> String {
        self.route_with(dns, "")
    }

    /// [`Setup::route`] with more `[tls]` settings.
    fn route_with(&self, dns: &DnsServer, tls: &str) -> String {
        let mut cfg = config(&self.queue, &self.net, dns);
        cfg.extra = format!(
            "[tls]\nmode = \"opportunistic\"\nca_file = \"{}\"\n{tls}",
            self.ca.cert_path().display()
        );
        let file = cfg.write();
        let path = file.path().to_str().expect("a UTF-8 path");
        let out = postman!().run(&["route", "--config", path, "u@d.test"], WAIT);
        out.assert_success();
        out.stdout
    }

    fn cache_file(&self) -> PathBuf {
        self.queue.root().join(".OTHER_SERVERS/.mta-sts/d.test")
    }

    fn cached(&self) -> Option<String> {
        std::fs::read_to_string(self.cache_file()).ok()
    }
}

/// The `mta-sts` line of a `postman route` output.
fn sts_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("mta-sts "))
        .unwrap_or_else(|| panic!("no mta-sts line in\n{out}"))
}

#[test]
fn a_policy_is_fetched_cached_and_kept_when_it_cannot_be_fetched_again() {
    let s = Setup::new();
    let server = PolicyServer::start(&s.cert, POLICY, Behaviour::Ok);
    let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
    let out = s.route(&dns);
    let line = sts_line(&out);
    assert!(
        line.contains("enforce (id 1, mx mx.d.test *.backup.d.test, max_age 86400), fetched now"),
        "{out}"
    );
    assert_eq!(
        server.wait_requests(1, WAIT),
        ["GET mta-sts.d.test /.well-known/mta-sts.txt"],
        "one request, for the policy host"
    );
    let cached = s.cached().expect("the policy is cached");
    assert!(cached.starts_with("id: 1\n"), "{cached}");
    assert!(cached.contains("mx: *.backup.d.test\n"), "{cached}");

    // The server gone: the same id is served from the cache, no fetch.
    let requests = server.requests().len();
    drop(server);
    let out = s.route(&dns);
    assert!(
        sts_line(&out)
            .contains("enforce (id 1, mx mx.d.test *.backup.d.test, max_age 86400), cached"),
        "{out}"
    );
    assert_eq!(requests, 1);

    // A new id whose fetch fails keeps the cached policy (RFC 8461 §3.3).
    let nothing = TestNet::new().ip(1);
    let dns = DnsServer::start(s.zones(Some("2"), nothing));
    let out = s.route(&dns);
    let line = sts_line(&out);
    assert!(line.contains("enforce (id 1,"), "{out}");
    assert!(line.contains("the fetch for id 2 failed"), "{out}");
    assert!(s.cached().expect("still cached").starts_with("id: 1\n"));

    // The TXT record removed: the cached policy still holds.
    let dns = DnsServer::start(s.zones(None, nothing));
    let out = s.route(&dns);
    assert!(sts_line(&out).contains("enforce (id 1,"), "{out}");
}

#[test]
fn a_new_id_replaces_the_cached_policy() {
    let s = Setup::new();
    let first = PolicyServer::start(&s.cert, POLICY, Behaviour::Ok);
    let dns = DnsServer::start(s.zones(Some("1"), first.ip()));
    assert!(sts_line(&s.route(&dns)).contains("fetched now"));
    let testing = POLICY.replace("enforce", "testing");
    let second = PolicyServer::start(&s.cert, &testing, Behaviour::EofNotify);
    let dns = DnsServer::start(s.zones(Some("2"), second.ip()));
    let out = s.route(&dns);
    assert!(sts_line(&out).contains("testing (id 2,"), "{out}");
    assert!(sts_line(&out).contains("fetched now"), "{out}");
    assert!(s.cached().expect("cached").contains("mode: testing\n"));
}

#[test]
fn an_expired_policy_with_a_failing_fetch_is_unavailable() {
    let s = Setup::new();
    let dir = s.queue.root().join(".OTHER_SERVERS/.mta-sts");
    std::fs::create_dir_all(&dir).expect("create the cache folder");
    std::fs::write(
        s.cache_file(),
        format!("id: 1\nfetched: 1000\nexpires: 2000\n\n{POLICY}"),
    )
    .expect("write an expired cache entry");
    let nothing = TestNet::new().ip(1);
    let dns = DnsServer::start(s.zones(Some("1"), nothing));
    let out = s.route(&dns);
    let line = sts_line(&out);
    assert!(
        line.contains("unavailable (sts-policy-fetch-error)"),
        "{out}"
    );
    assert!(line.contains("cannot connect"), "{out}");
    // The route itself is there: an MTA-STS problem is no route error.
    assert!(out.contains("host       mx.d.test"), "{out}");
}

#[test]
fn a_damaged_cache_file_is_taken_as_absent() {
    let s = Setup::new();
    let dir = s.queue.root().join(".OTHER_SERVERS/.mta-sts");
    std::fs::create_dir_all(&dir).expect("create the cache folder");
    std::fs::write(s.cache_file(), "id: 1\ngarbage").expect("write a damaged entry");
    let server = PolicyServer::start(&s.cert, POLICY, Behaviour::Ok);
    let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
    let out = s.route(&dns);
    assert!(sts_line(&out).contains("fetched now"), "{out}");
    assert!(s
        .cached()
        .expect("rewritten")
        .starts_with("id: 1\nfetched: "));
}

#[test]
fn a_certificate_not_valid_for_the_policy_host_is_a_webpki_problem() {
    let s = Setup::new();
    let wrong_name = s.ca.leaf(&["www.d.test"]);
    let untrusted = TestCert::new(&["mta-sts.d.test"]);
    for cert in [&wrong_name, &untrusted] {
        let server = PolicyServer::start(cert, POLICY, Behaviour::Ok);
        let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
        let out = s.route(&dns);
        assert!(
            sts_line(&out).contains("unavailable (sts-webpki-invalid)"),
            "{out}"
        );
        assert!(
            server.requests().is_empty(),
            "no request over a refused TLS"
        );
        assert!(s.cached().is_none());
    }
}

#[test]
fn responses_that_are_not_a_whole_plain_policy_are_fetch_errors() {
    let s = Setup::new();
    let cases = [
        (Behaviour::Redirect, "HTTP status 301"),
        (Behaviour::NotFound, "HTTP status 404"),
        (Behaviour::Html, "media type \"text/html\""),
        (Behaviour::Oversized, "longer than 65536 bytes"),
        // The cut policy would still parse: only the missing close_notify
        // tells.
        (Behaviour::Truncated, "cut short"),
    ];
    for (behaviour, why) in cases {
        let server = PolicyServer::start(&s.cert, POLICY, behaviour);
        let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
        let out = s.route(&dns);
        let line = sts_line(&out);
        assert!(
            line.contains("unavailable (sts-policy-fetch-error)") && line.contains(why),
            "{behaviour:?}: {out}"
        );
        assert_eq!(
            server.wait_requests(1, WAIT).len(),
            1,
            "{behaviour:?}: asked once"
        );
        assert!(s.cached().is_none(), "{behaviour:?}: nothing cached");
    }
    let server = PolicyServer::start(
        &s.cert,
        "version: STSv1\nmode: enforce\nmax_age: 600\n",
        Behaviour::Ok,
    );
    let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
    let out = s.route(&dns);
    assert!(
        sts_line(&out).contains("unavailable (sts-policy-invalid)"),
        "{out}"
    );
}

#[test]
fn no_txt_record_is_no_policy_and_no_https_connection() {
    let s = Setup::new();
    let server = PolicyServer::start(&s.cert, POLICY, Behaviour::Ok);
    let dns = DnsServer::start(s.zones(None, server.ip()));
    let out = s.route(&dns);
    assert_eq!(
        sts_line(&out),
        "mta-sts    no policy: no _mta-sts TXT record",
        "{out}"
    );
    assert_eq!(server.connections(), 0);
    assert_eq!(
        dns.count_queries("TXT"),
        1,
        "one TXT query: {:?}",
        dns.queries()
    );
}

#[test]
fn tls_mta_sts_false_looks_nothing_up() {
    let s = Setup::new();
    let server = PolicyServer::start(&s.cert, POLICY, Behaviour::Ok);
    let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
    let out = s.route_with(&dns, "mta_sts = false\n");
    assert_eq!(
        sts_line(&out),
        "mta-sts    off (tls.mta_sts = false)",
        "{out}"
    );
    assert_eq!(dns.count_queries("TXT"), 0);
    assert_eq!(server.connections(), 0);
    assert!(s.cached().is_none());
    // A domain whose level is mta-sts cannot do without its policy.
    let out = s.route_with(
        &dns,
        "mta_sts = false\n[tls.policy]\n\"d.test\" = \"mta-sts\"\n",
    );
    assert!(sts_line(&out).contains("enforce (id 1,"), "{out}");
    // A level a policy cannot change looks nothing up.
    let before = dns.count_queries("TXT");
    let out = s.route_with(&dns, "[tls.policy]\n\"d.test\" = \"verify\"\n");
    assert_eq!(
        sts_line(&out),
        "mta-sts    not used at level verify",
        "{out}"
    );
    assert_eq!(dns.count_queries("TXT"), before, "no TXT query at verify");
}

#[test]
fn the_txt_record_may_be_reached_through_a_cname() {
    let s = Setup::new();
    let server = PolicyServer::start(&s.cert, POLICY, Behaviour::Ok);
    let zones = s
        .zones(None, server.ip())
        .cname("_mta-sts.d.test", "_mta-sts.provider.test")
        .txt("_mta-sts.provider.test", "v=STSv1; id=7");
    let dns = DnsServer::start(zones);
    let out = s.route(&dns);
    assert!(sts_line(&out).contains("enforce (id 7,"), "{out}");
}

#[test]
fn the_daemon_fetches_and_caches_the_policy_and_still_delivers() {
    let s = Setup::new();
    let server = PolicyServer::start(
        &s.cert,
        &POLICY.replace("enforce", "testing"),
        Behaviour::Ok,
    );
    let mx = HostileServer::polite(s.net.addr(1));
    let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
    s.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@d.test"],
        &message("m1", "x\n"),
    );
    let mut cfg = config(&s.queue, &s.net, &dns);
    cfg.extra = format!(
        "[tls]\nmode = \"opportunistic\"\nca_file = \"{}\"\n",
        s.ca.cert_path().display()
    );
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(s.queue.state().is_empty(), "delivered", &s.queue, &out);
    assert_eq!(mx.body_count(), 1);
    assert_eq!(server.wait_requests(1, WAIT).len(), 1);
    let cached = s.cached().expect("the daemon cached the policy");
    assert!(cached.contains("mode: testing\n"), "{cached}");
}

/// Delivery under a policy (RFC 8461 §4, §5): which MX hosts are used and
/// what their certificates must be, with aiosmtpd offering STARTTLS with
/// certificates from the test CA, and the scripted server where a host
/// must never be spoken to.
mod delivery {
    use super::*;
    use postman_integration::postman::RunOutput;
    use postman_integration::{AiosmtpdSink, SinkOptions};

    /// A policy naming `mx` in `mode`.
    fn policy(mode: &str, mx: &str) -> String {
        format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: 86400\n")
    }

    /// aiosmtpd on the MX address, offering STARTTLS with `cert`.
    fn tls_sink(s: &Setup, cert: &TestCert, dir: &std::path::Path) -> AiosmtpdSink {
        let options = SinkOptions {
            tls: Some((
                cert.chain_path().to_path_buf(),
                cert.key_path().to_path_buf(),
            )),
            ..SinkOptions::default()
        };
        AiosmtpdSink::start_with(s.net.ip(1), s.net.port(), dir, &options)
    }

    /// Queues one message to u@d.test and runs postman once, `d.test`'s
    /// policy served as `policy`.
    fn deliver(s: &Setup, policy: &str) -> RunOutput {
        let server = PolicyServer::start(&s.cert, policy, Behaviour::Ok);
        let dns = DnsServer::start(s.zones(Some("1"), server.ip()));
        s.queue.add(
            DOMAIN,
            "m1",
            "a@src.test",
            &["u@d.test"],
            &message("m1", "x\n"),
        );
        let mut cfg = config(&s.queue, &s.net, &dns);
        cfg.extra = format!(
            "[tls]\nmode = \"opportunistic\"\nca_file = \"{}\"\n",
            s.ca.cert_path().display()
        );
        let out = postman!().run_once(&cfg.write());
        out.assert_success();
        assert_eq!(
            server.wait_requests(1, WAIT).len(),
            1,
            "the policy was fetched"
        );
        out
    }

    fn record(out: &RunOutput) -> postman_integration::Delivery {
        let deliveries = out.deliveries();
        deliveries
            .iter()
            .rev()
            .find(|d| d.to == "u@d.test")
            .cloned()
            .unwrap_or_else(|| panic!("no record for u@d.test: {deliveries:#?}\n{}", out.stderr))
    }

    #[test]
    fn enforce_with_a_listed_mx_and_a_valid_certificate_delivers_verified() {
        let s = Setup::new();
        let cert = s.ca.leaf(&["mx.d.test"]);
        let dir = tempfile::tempdir().expect("a sink dir");
        let sink = tls_sink(&s, &cert, dir.path());
        let out = deliver(&s, &policy("enforce", "mx.d.test"));
        let d = record(&out);
        assert_eq!(d.status, "sent", "{d:#?}\n{}", out.stderr);
        assert!(
            d.tls.starts_with("mta-sts-enforce TLSv1.") && d.tls.ends_with(" verified"),
            "{d:#?}"
        );
        let got = sink.wait_for(1, WAIT);
        assert!(got.first().is_some_and(|r| r.tls.is_some()), "{got:#?}");
    }

    #[test]
    fn enforce_never_connects_to_an_mx_the_policy_does_not_list() {
        let s = Setup::new();
        let mx = HostileServer::polite(s.net.addr(1));
        let out = deliver(&s, &policy("enforce", "other.d.test"));
        let d = record(&out);
        assert_eq!(d.status, "deferred", "{d:#?}\n{}", out.stderr);
        assert!(
            d.reply.contains("not an MX host of the MTA-STS policy"),
            "the deferral says which check failed: {d:#?}"
        );
        assert_eq!(mx.connection_count(), 0, "never connected to");
        assert!(s.queue.state().is_queued(DOMAIN, "m1"));
    }

    #[test]
    fn enforce_defers_a_certificate_not_valid_for_the_mx_name() {
        let s = Setup::new();
        let cert = s.ca.leaf(&["other.d.test"]);
        let dir = tempfile::tempdir().expect("a sink dir");
        let sink = tls_sink(&s, &cert, dir.path());
        let out = deliver(&s, &policy("enforce", "mx.d.test"));
        let d = record(&out);
        assert_eq!(d.status, "deferred", "{d:#?}\n{}", out.stderr);
        assert!(
            d.reply
                .contains("certificate not valid for name \"mx.d.test\""),
            "{d:#?}"
        );
        assert!(sink.messages().is_empty(), "nothing sent");
        assert!(s.queue.state().is_queued(DOMAIN, "m1"));
    }

    #[test]
    fn enforce_defers_when_starttls_is_stripped_and_never_sends_in_plaintext() {
        let s = Setup::new();
        // The scripted server offers no STARTTLS, as after an attacker
        // removed it from the EHLO reply.
        let mx = HostileServer::polite(s.net.addr(1));
        let out = deliver(&s, &policy("enforce", "mx.d.test"));
        let d = record(&out);
        assert_eq!(d.status, "deferred", "{d:#?}\n{}", out.stderr);
        assert!(d.reply.contains("does not offer STARTTLS"), "{d:#?}");
        assert!(
            !mx.commands()
                .iter()
                .any(|c| c.to_ascii_uppercase().starts_with("MAIL")),
            "no MAIL in plaintext: {:?}",
            mx.commands()
        );
        assert_eq!(mx.body_count(), 0);
        assert!(s.queue.state().is_queued(DOMAIN, "m1"));
    }

    #[test]
    fn testing_mode_delivers_as_before() {
        let s = Setup::new();
        // Not listed, and no STARTTLS: testing only reports.
        let mx = HostileServer::polite(s.net.addr(1));
        let out = deliver(&s, &policy("testing", "other.d.test"));
        let d = record(&out);
        assert_eq!(d.status, "sent", "{d:#?}\n{}", out.stderr);
        assert!(d.tls.starts_with("mta-sts-testing"), "{d:#?}");
        assert_eq!(mx.body_count(), 1);
        check(s.queue.state().is_empty(), "delivered", &s.queue, &out);
    }
}
