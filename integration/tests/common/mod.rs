//! Helpers shared by the end-to-end tests (each test file includes this
//! module; not every file uses every helper).
#![allow(dead_code)]

use std::net::IpAddr;

use postman_integration::postman::Delivery;
use postman_integration::{Config, DnsServer, RunOutput, TestNet, TestQueue};

/// A config for `queue`, SMTP servers on `net`'s port, DNS at `dns`.
pub fn config(queue: &TestQueue, net: &TestNet, dns: &DnsServer) -> Config {
    Config::new(queue.root(), net.port(), dns.addr())
}

/// A small RFC 5322 message with a unique Message-ID, LF line ends.
pub fn message(id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Sender <sender@src.test>\nTo: rcpt@dest.test\nSubject: test {id}\nMessage-ID: <{id}@src.test>\n\n{body}"
    )
    .into_bytes()
}

/// Queues `n` messages `m0`… for `domain` from a@src.test, one recipient
/// each (`u0@domain`…), their Message-IDs tagged with `tag`.
pub fn add_numbered(queue: &TestQueue, domain: &str, n: usize, tag: &str) {
    for i in 0..n {
        queue.add(
            domain,
            &format!("m{i}"),
            "a@src.test",
            &[&format!("u{i}@{domain}")],
            &message(&format!("{tag}{i}"), "x\n"),
        );
    }
}

/// What an SMTP server must receive for `message` once un-dot-stuffed:
/// every line ending in CRLF (bare LF becomes CRLF, RFC 5321 §2.3.8) and a
/// CRLF after the last line.
pub fn on_the_wire(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut prev = 0u8;
    for &b in message {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The delivery records for recipient `to`.
pub fn records_for<'a>(deliveries: &'a [Delivery], to: &str) -> Vec<&'a Delivery> {
    deliveries.iter().filter(|d| d.to == to).collect()
}

/// Asserts that the last delivery record for `to` has `status` and, when
/// given, `code`; returns it. The message names the whole log on failure.
pub fn assert_outcome(
    out: &RunOutput,
    deliveries: &[Delivery],
    to: &str,
    status: &str,
    code: Option<u16>,
) -> Delivery {
    let Some(d) = records_for(deliveries, to).into_iter().last() else {
        panic!(
            "no delivery record for {to}; records: {deliveries:#?}\n--- stderr ---\n{}",
            out.stderr
        );
    };
    assert_eq!(
        d.status, status,
        "status for {to}: {d:#?}\n--- stderr ---\n{}",
        out.stderr
    );
    if code.is_some() {
        assert_eq!(
            d.code, code,
            "code for {to}: {d:#?}\n--- stderr ---\n{}",
            out.stderr
        );
    }
    d.clone()
}

/// Asserts that `relay` names `ip` and `port` (`host[ip]:port`).
pub fn assert_relay(d: &Delivery, ip: IpAddr, port: u16) {
    let want = format!("[{ip}]:{port}");
    assert!(
        d.relay.ends_with(&want),
        "relay {:?} should end with {want:?}: {d:#?}",
        d.relay
    );
}

/// Panics with the queue state and log unless `ok`.
pub fn check(ok: bool, what: &str, queue: &TestQueue, out: &RunOutput) {
    assert!(
        ok,
        "{what}\n--- queue ---\n{:#?}\n--- stderr ---\n{}",
        queue.state(),
        out.stderr
    );
}

/// The domain whose senders have their mailboxes here
/// (`application.local_domains`): bounces to them go into `<root>/<user>/new/`.
pub const LOCAL_DOMAIN: &str = "local.test";
/// A sender with a local mailbox, `<root>/alice/`.
pub const LOCAL_SENDER: &str = "alice@local.test";
/// How long a daemon may take to stop.
pub const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(8);

/// The test config with [`LOCAL_DOMAIN`] local.
pub fn local_config(
    queue: &TestQueue,
    net: &TestNet,
    dns: &DnsServer,
) -> postman_integration::Config {
    let mut cfg = config(queue, net, dns);
    cfg.local_domains = Some(vec![LOCAL_DOMAIN.to_owned()]);
    cfg
}

/// DNS with `domain` served by `mx.<domain>` at `net`'s address `k`.
pub fn zones_for(
    zones: postman_integration::Zones,
    net: &TestNet,
    k: u8,
    domain: &str,
) -> postman_integration::Zones {
    let mx = format!("mx.{domain}");
    zones.mx(domain, 10, &mx).a(&mx, net.ipv4(k))
}
