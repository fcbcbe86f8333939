//! The edge behaviour of real servers, played by the scripted server:
//! replies split across reads, reply lines of the maximum length,
//! continuation lines with other codes, 421 at every step, 5xx to RSET, a
//! slow greeting, STARTTLS injection, a broken TLS server; and IPv6 with
//! `dns.ip_preference` (AAAA records at ::1).

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use super::common::{assert_outcome, config, message};
use super::{dns_for, run, tls_toml, DOMAIN, MX, WAIT};
use postman_integration::hostile::Script;
use postman_integration::postman::{Delivery, RunOutput};
use postman_integration::{
    postman, AiosmtpdSink, DnsServer, HostileServer, TestNet, TestQueue, Zones,
};

// ---- edge behaviour, scripted ----------------------------------------------------

/// A hostile server at the MX's address playing `scripts`, a queue with one
/// message `m1` for `r@dest.test`, and postman run once.
struct Edge {
    server: HostileServer,
    queue: TestQueue,
    out: RunOutput,
}

fn edge(scripts: Vec<Script>, extra: &str, messages: usize) -> Edge {
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), scripts);
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    for n in 1..=messages {
        let name = format!("m{n}");
        queue.add(
            DOMAIN,
            &name,
            "a@src.test",
            &["r@dest.test"],
            &message(&name, "x\n"),
        );
    }
    let out = run(&queue, &net, &dns, extra);
    server.wait_idle(1, WAIT);
    Edge { server, queue, out }
}

impl Edge {
    fn last(&self) -> Delivery {
        let deliveries = self.out.deliveries();
        deliveries
            .last()
            .cloned()
            .unwrap_or_else(|| panic!("no delivery record\n{}", self.out.stderr))
    }

    fn queued(&self, name: &str) -> bool {
        self.queue.state().whereabouts(DOMAIN, name) == "queued"
    }
}

#[test]
fn replies_split_across_reads_and_longest_lines() {
    // 512 octets (RFC 5321's limit) and 2048 (postman's cap), CRLF included.
    let line = |code: &str, len: usize| format!("{code} {}\r\n", "y".repeat(len - 6));
    let script = Script::new()
        .pipelining(false)
        .send_raw(b"22")
        .stall(100)
        .send_raw(b"0-hostile.test split\r")
        .stall(100)
        .send_raw(b"\n220 ready\r\n")
        .expect_raw("EHLO", b"250-hostile.test\r\n250-8BIT")
        .stall(100)
        .send_raw(b"MIME\r\n250 SIZE 100000\r\n")
        .expect_raw("MAIL", line("250", 512).as_bytes())
        .expect_raw("RCPT", line("250", 2048).as_bytes())
        .expect("DATA", "354 go")
        .body("250 2.0.0 accepted")
        .then_polite();
    let e = edge(vec![script], "", 1);
    let d = e.last();
    assert_eq!(
        (d.status.as_str(), d.code),
        ("sent", Some(250)),
        "{d:#?}\n{}",
        e.out.stderr
    );
    assert!(e.server.errors().is_empty(), "{:?}", e.server.errors());
    assert!(!e.queued("m1"), "delivered and removed");
}

#[test]
fn continuation_with_another_code_is_a_protocol_error() {
    let script = Script::new()
        .greet("220 hostile.test")
        .expect("EHLO", "250-hostile.test\n251 PIPELINING")
        .then_polite();
    let e = edge(vec![script], "", 1);
    let d = e.last();
    assert_eq!(d.status, "deferred", "{d:#?}");
    assert!(
        d.reply
            .contains("has code 251, but the reply started with 250"),
        "{d:#?}"
    );
    assert!(e.queued("m1"), "kept for a retry");
    assert_eq!(
        e.server.count_commands("MAIL"),
        0,
        "no transaction on a broken dialogue"
    );
}

#[test]
fn service_closing_421_at_every_step() {
    let hello = || Script::new().pipelining(false).hello();
    let cases: Vec<(&str, Script)> = vec![
        ("greeting", Script::new().greet("421 4.3.2 busy").close()),
        (
            "EHLO",
            Script::new()
                .greet("220 hostile.test")
                .expect("EHLO", "421 4.3.2 bye")
                .close(),
        ),
        (
            "STARTTLS",
            Script::new()
                .greet("220 hostile.test")
                .expect("EHLO", "250-hostile.test\n250 STARTTLS")
                .expect("STARTTLS", "421 4.3.2 bye")
                .close(),
        ),
        ("MAIL", hello().expect("MAIL", "421 4.3.2 bye").close()),
        (
            "RCPT",
            hello()
                .default_reply()
                .expect("RCPT", "421 4.3.2 bye")
                .close(),
        ),
        (
            "DATA",
            hello()
                .default_reply()
                .default_reply()
                .expect("DATA", "421 4.3.2 bye")
                .close(),
        ),
        (
            "end of data",
            hello()
                .default_reply()
                .default_reply()
                .expect("DATA", "354 go")
                .body("421 4.3.2 bye")
                .close(),
        ),
    ];
    for (step, script) in cases {
        let e = edge(vec![script], "", 1);
        let d = e.last();
        assert_eq!(
            d.status, "deferred",
            "421 at {step}: {d:#?}\n{}",
            e.out.stderr
        );
        if matches!(step, "greeting" | "EHLO") {
            // Before any message, a 421 is the site turning this client
            // away (issue 17): the message waits untried, no attempt.
            assert_eq!(d.code, None, "421 at {step}: {d:#?}");
            assert!(
                d.reply.contains("throttled: 421 4.3.2"),
                "421 at {step}: {d:#?}"
            );
        } else {
            assert_eq!(d.code, Some(421), "421 at {step}: {d:#?}");
        }
        assert!(e.queued("m1"), "421 at {step}: kept for a retry");
        assert_eq!(
            e.server.count_commands("QUIT"),
            0,
            "421 at {step}: no QUIT to a server that is closing"
        );
    }
}

#[test]
fn rset_refused_closes_the_connection_and_the_message_goes_out_on_another() {
    let script = Script::new()
        .pipelining(false)
        .hello()
        .default_reply()
        .default_reply()
        .default_reply()
        .expect("RSET", "500 5.5.1 RSET not understood")
        .then_polite();
    let e = edge(vec![script, Script::polite()], "", 2);
    let deliveries = e.out.deliveries();
    // The refused RSET judged nothing of the second message: it goes back
    // untried and out on the next connection, not deferred.
    assert!(
        deliveries.len() == 2 && deliveries.iter().all(|d| d.status == "sent"),
        "{deliveries:#?}"
    );
    assert_eq!(e.server.connection_count(), 2, "a new connection for it");
    assert_eq!(
        e.out.count_records("goes back untried"),
        1,
        "{}",
        e.out.stderr
    );
    let first = &e.server.connections()[0];
    let after_rset: Vec<&String> = first
        .commands
        .iter()
        .skip_while(|c| !c.starts_with("RSET"))
        .skip(1)
        .collect();
    assert!(
        after_rset.iter().all(|c| c.starts_with("QUIT")),
        "nothing but QUIT after the refused RSET: {:?}",
        first.commands
    );
}

#[test]
fn slow_greeting_within_the_timeout_is_waited_for() {
    // The timeouts are 3 s; the greeting comes after 1.5 s.
    let script = Script::new()
        .stall(1500)
        .greet("220 hostile.test slow")
        .then_polite();
    let e = edge(vec![script], "", 1);
    let d = e.last();
    assert_eq!(
        (d.status.as_str(), d.code),
        ("sent", Some(250)),
        "{d:#?}\n{}",
        e.out.stderr
    );
}

#[test]
fn plaintext_after_starttls_220_fails_the_session() {
    let script = Script::new()
        .greet("220 hostile.test")
        .expect("EHLO", "250-hostile.test\n250 STARTTLS")
        .expect_raw(
            "STARTTLS",
            b"220 go ahead\r\n250-injected.test\r\n250 PIPELINING\r\n",
        )
        .stall(500)
        .close();
    let e = edge(vec![script], "", 1);
    let d = e.last();
    assert_eq!(d.status, "deferred", "{d:#?}");
    assert!(
        d.reply
            .contains("plaintext data after the 220 reply to STARTTLS"),
        "{d:#?}"
    );
    assert!(e.queued("m1"), "kept for a retry");
    assert_eq!(
        e.server.connection_count(),
        1,
        "no plaintext retry after an injection"
    );
    assert_eq!(e.server.count_commands("MAIL"), 0, "nothing sent");
}

#[test]
fn broken_tls_server_falls_back_to_plaintext_or_defers() {
    let broken = || {
        Script::new()
            .greet("220 hostile.test")
            .expect("EHLO", "250-hostile.test\n250 STARTTLS")
            .expect("STARTTLS", "220 go ahead")
            .stall(200)
            .send_raw(b"this is not TLS\r\n")
            .stall(500)
            .close()
    };
    // Opportunistic: a second connection, without STARTTLS, delivers.
    let e = edge(vec![broken(), Script::polite()], "", 1);
    let d = e.last();
    assert_eq!(
        (d.status.as_str(), d.tls.as_str()),
        ("sent", "opportunistic none"),
        "{d:#?}"
    );
    assert_eq!(e.server.connection_count(), 2, "one retry in plaintext");
    assert_eq!(
        e.server.connections()[1]
            .commands
            .iter()
            .filter(|c| c.starts_with("STARTTLS"))
            .count(),
        0,
        "the retry does not try STARTTLS again"
    );
    assert!(
        e.out.stderr.contains("trying again without TLS"),
        "{}",
        e.out.stderr
    );
    // Required: deferred, no plaintext.
    let e = edge(
        vec![broken(), Script::polite()],
        &tls_toml("required", Some("none"), None),
        1,
    );
    let d = e.last();
    assert_eq!(d.status, "deferred", "{d:#?}");
    assert!(d.reply.contains("TLS handshake failed"), "{d:#?}");
    assert_eq!(
        e.server.connection_count(),
        1,
        "no plaintext retry when TLS is required"
    );
}

// ---- IPv6 ----------------------------------------------------------------------

/// MX `mx.dest.test` with an A record at `v4` and an AAAA record at ::1.
fn dual_stack_dns(v4: std::net::Ipv4Addr) -> DnsServer {
    DnsServer::start(
        Zones::new()
            .mx(DOMAIN, 10, MX)
            .a(MX, v4)
            .aaaa(MX, Ipv6Addr::LOCALHOST),
    )
}

fn ip_preference_run(
    preference: &str,
    v4_listens: bool,
) -> (RunOutput, usize, Vec<postman_integration::Received>) {
    let net = TestNet::new();
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let dir = tempfile::tempdir().unwrap();
    let sink = AiosmtpdSink::start(v6, net.port(), dir.path());
    let v4 = v4_listens.then(|| HostileServer::polite(net.addr(1)));
    let dns = dual_stack_dns(net.ipv4(1));
    let queue = TestQueue::new();
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r@dest.test"],
        &message("m1", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.ip_preference = preference.to_owned();
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let got = sink.wait_for(1, Duration::from_secs(2));
    (out, v4.map_or(0, |s| s.connection_count()), got)
}

#[test]
fn ipv6_preference_tries_aaaa_first() {
    let (out, v4_connections, got) = ip_preference_run("ipv6", true);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert!(d.relay.starts_with("mx.dest.test[::1]:"), "{d:#?}");
    assert_eq!(v4_connections, 0, "the IPv4 address was not needed");
    assert_eq!(got.len(), 1, "delivered over IPv6");
}

#[test]
fn ipv4_preference_falls_back_to_ipv6() {
    // Nothing listens on the IPv4 address: refused, then ::1.
    let (out, _, got) = ip_preference_run("ipv4", false);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert!(d.relay.starts_with("mx.dest.test[::1]:"), "{d:#?}");
    assert_eq!(got.len(), 1, "delivered over IPv6 after IPv4 failed");
}
