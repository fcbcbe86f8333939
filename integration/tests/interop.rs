//! Interoperability: postman against two real third-party SMTP servers on
//! loopback — Postfix's smtpd (a private instance per test) and Python's
//! aiosmtpd — each offering STARTTLS with a self-signed certificate made at
//! test time, in every TLS mode; the servers' own logs and handlers prove
//! that TLS, PIPELINING and BDAT were used. The edge behaviour of real
//! servers, played by the scripted server, and IPv6 are in [`edge`].

mod common;
#[path = "interop/edge.rs"]
mod edge;

use std::path::Path;
use std::time::Duration;

use common::{assert_outcome, check, config, message, on_the_wire};
use postman_integration::postman::{Config, RunOutput};
use postman_integration::{
    postman, AiosmtpdSink, DnsServer, Postfix, PostfixOptions, SinkOptions, TestCert, TestNet,
    TestQueue, Zones,
};

const DOMAIN: &str = "dest.test";
const MX: &str = "mx.dest.test";
const WAIT: Duration = Duration::from_secs(10);

/// DNS: `dest.test` has one MX, `mx.dest.test`, at the test's first address.
fn dns_for(net: &TestNet) -> DnsServer {
    DnsServer::start(Zones::new().mx(DOMAIN, 10, MX).a(MX, net.ipv4(1)))
}

/// The `[tls]` table: `mode`, and `verify` / `ca_file` when given.
fn tls_toml(mode: &str, verify: Option<&str>, ca_file: Option<&Path>) -> String {
    let mut text = format!("\n[tls]\nmode = \"{mode}\"\n");
    if let Some(verify) = verify {
        text.push_str(&format!("verify = \"{verify}\"\n"));
    }
    if let Some(path) = ca_file {
        text.push_str(&format!("ca_file = \"{}\"\n", path.display()));
    }
    text
}

/// Runs postman once, one connection per domain at a time (so the
/// server's per-session summary covers every message).
fn run(queue: &TestQueue, net: &TestNet, dns: &DnsServer, extra: &str) -> RunOutput {
    let mut cfg: Config = config(queue, net, dns);
    cfg.extra = extra.to_owned();
    cfg.max_connections_per_domain = 1;
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    out
}

/// `message` with LF line ends and a final LF: how Postfix stores it.
fn stored_by_postfix(message: &[u8]) -> Vec<u8> {
    let wire = on_the_wire(message);
    let mut out = Vec::with_capacity(wire.len());
    for (i, &b) in wire.iter().enumerate() {
        if b == b'\r' && wire.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// Whether `stored` (a Maildir file Postfix wrote) is `message`: the same
/// body byte for byte, and every header of `message` among its headers
/// (Postfix adds Return-Path, Received, a missing Date).
fn is_postfix_copy(stored: &[u8], message: &[u8]) -> bool {
    fn split(text: &[u8]) -> (&[u8], &[u8]) {
        match text.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&text[..at + 1], &text[at + 2..]),
            None => (text, &[]),
        }
    }
    let want = stored_by_postfix(message);
    let (want_head, want_body) = split(&want);
    let (got_head, got_body) = split(stored);
    let got_head = String::from_utf8_lossy(got_head);
    got_body == want_body
        && String::from_utf8_lossy(want_head)
            .lines()
            .all(|line| got_head.lines().any(|l| l == line))
}

/// A message of about `kb` kilobytes: several BDAT chunks.
fn big_message(id: &str, kb: usize) -> Vec<u8> {
    let mut body = String::new();
    for n in 0..(kb * 1024 / 64) {
        body.push_str(&format!("{n:06} {}\n", "x".repeat(56)));
    }
    body.push_str(".a line with a leading dot\n");
    message(id, &body)
}

fn server_tls(cert: &TestCert) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    Some((
        cert.cert_path().to_path_buf(),
        cert.key_path().to_path_buf(),
    ))
}

// ---- Postfix -----------------------------------------------------------------

/// Postfix's `disconnect from …` summary of the one session: `ehlo=2
/// starttls=1 mail=2 rcpt=4/5 bdat=5 rset=1 quit=1 commands=…`.
fn disconnect_line(log: &str) -> String {
    log.lines()
        .rfind(|l| l.contains("postfix/smtpd") && l.contains("disconnect from"))
        .unwrap_or_else(|| panic!("no disconnect line in the Postfix log:\n{log}"))
        .to_owned()
}

/// The count Postfix gives `command` in a disconnect line (`bdat=5`,
/// `rcpt=4/5` gives 4), 0 when absent.
fn command_count(line: &str, command: &str) -> u32 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{command}=")))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Pipelining, from Postfix's side: the verbose log shows each read from
/// the client (`vstream_buf_get_ready: fd N got M`) and each command
/// (`< client: MAIL FROM:…`). Returns, for the first `MAIL FROM:<sender>`,
/// the size of the read it came in and the commands up to the next read
/// from the same descriptor (what that one read held).
fn read_holding_mail(log: &str, sender: &str) -> (usize, Vec<String>) {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("postfix/smtpd"))
        .collect();
    let mail = format!(": MAIL FROM:<{sender}>");
    let at = lines
        .iter()
        .position(|l| l.contains(" < ") && l.contains(&mail))
        .unwrap_or_else(|| panic!("no {mail:?} in the Postfix log:\n{log}"));
    let read = |line: &str| -> Option<(String, usize)> {
        let rest = line.split("vstream_buf_get_ready: fd ").nth(1)?;
        let (fd, got) = rest.split_once(" got ")?;
        Some((fd.to_owned(), got.trim().parse().ok()?))
    };
    let (fd, size) = lines[..at]
        .iter()
        .rev()
        .find_map(|l| read(l))
        .unwrap_or_else(|| panic!("no read before {mail:?} in the Postfix log:\n{log}"));
    let mut commands = Vec::new();
    for line in &lines[at..] {
        if read(line).is_some_and(|(f, _)| f == fd) {
            break;
        }
        if let Some((_, command)) = line
            .split_once("]: < ")
            .and_then(|(_, c)| c.split_once(": "))
        {
            commands.push(command.to_owned());
        }
    }
    (size, commands)
}

#[test]
fn postfix_opportunistic_tls_pipelining_and_bdat() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            tls: server_tls(&cert),
            extra: vec![
                "smtpd_recipient_restrictions = check_recipient_access \
                 inline:{ {nobody@dest.test = 550 5.1.1 no such user} }, permit_mynetworks, reject"
                    .into(),
            ],
            ..PostfixOptions::default()
        },
    );
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    let small = message("small", ".leading dot\nsecond line\nno final newline");
    let big = big_message("big", 200);
    queue.add(
        DOMAIN,
        "1764250000.M1P1.src.test",
        "sender@src.test",
        &["bob@dest.test", "nobody@dest.test", "carol@dest.test"],
        &small,
    );
    queue.add(
        DOMAIN,
        "1764250000.M2P1.src.test",
        "big-sender@src.test",
        &["dave@dest.test"],
        &big,
    );
    // One connection for both messages: RSET between them.
    let out = run(&queue, &net, &dns, "");
    let deliveries = out.deliveries();
    for (to, status, code) in [
        ("bob@dest.test", "sent", 250),
        ("carol@dest.test", "sent", 250),
        ("dave@dest.test", "sent", 250),
        ("nobody@dest.test", "bounced", 550),
    ] {
        let d = assert_outcome(&out, &deliveries, to, status, Some(code));
        assert!(
            d.tls.starts_with("opportunistic TLSv1.3 TLS13_") && d.tls.ends_with(" unverified"),
            "the record for {to} says how TLS was used: {d:#?}"
        );
    }
    // One copy per accepted recipient: bob, carol, dave.
    let messages = postfix.wait_for_messages(3, WAIT);
    assert_eq!(messages.len(), 3, "Postfix delivered a copy per recipient");
    let log = postfix.log();
    // TLS: Postfix's own words.
    assert!(
        log.contains("Anonymous TLS connection established from")
            && log.contains("TLSv1.3 with cipher"),
        "Postfix logs the TLS session:\n{log}"
    );
    // STARTTLS, BDAT (no DATA), one connection for both messages.
    let summary = disconnect_line(&log);
    for (command, want) in [
        ("ehlo", 2),
        ("starttls", 1),
        ("mail", 2),
        ("rset", 1),
        ("data", 0),
    ] {
        assert_eq!(
            command_count(&summary, command),
            want,
            "{command} in {summary:?}"
        );
    }
    assert!(
        command_count(&summary, "bdat") >= 4,
        "the 200 KB message goes in several BDAT chunks: {summary:?}"
    );
    // PIPELINING: MAIL and every RCPT came in one read.
    let (size, commands) = read_holding_mail(&log, "sender@src.test");
    let size_param = format!("SIZE={}", on_the_wire(&small).len());
    assert_eq!(
        commands,
        [
            format!("MAIL FROM:<sender@src.test> {size_param}"),
            "RCPT TO:<bob@dest.test>".to_owned(),
            "RCPT TO:<nobody@dest.test>".to_owned(),
            "RCPT TO:<carol@dest.test>".to_owned(),
        ],
        "one read from the client held the whole pipelined group (SIZE declared):\n{log}"
    );
    let group: usize = commands.iter().map(|c| c.len() + 2).sum();
    assert_eq!(size, group, "the read was exactly the group");
    // Byte for byte, dots and all (BDAT: no stuffing), after Postfix's headers.
    for (msg, name) in [(&small, "small"), (&big, "big")] {
        assert!(
            messages.iter().any(|m| is_postfix_copy(m, msg)),
            "the {name} message arrived intact"
        );
    }
    for name in ["1764250000.M1P1.src.test", "1764250000.M2P1.src.test"] {
        let state = queue.state();
        check(
            state.whereabouts(DOMAIN, name) != "queued",
            "nothing left queued",
            &queue,
            &out,
        );
    }
}

#[test]
fn postfix_required_tls_with_a_name_check() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            tls: server_tls(&cert),
            ..PostfixOptions::default()
        },
    );
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    let msg = message("verified", "checked against tls.ca_file\n");
    queue.add(DOMAIN, "m1", "a@src.test", &["bob@dest.test"], &msg);
    let out = run(
        &queue,
        &net,
        &dns,
        &tls_toml("required", Some("name"), Some(cert.cert_path())),
    );
    let d = assert_outcome(&out, &out.deliveries(), "bob@dest.test", "sent", Some(250));
    assert!(
        d.tls.starts_with("verify TLSv1.3 ") && d.tls.ends_with(" verified"),
        "the record says the certificate was checked: {d:#?}"
    );
    let messages = postfix.wait_for_messages(1, WAIT);
    assert!(
        messages.first().is_some_and(|m| is_postfix_copy(m, &msg)),
        "Postfix delivered the message: {:?}",
        messages
            .iter()
            .map(|m| String::from_utf8_lossy(m))
            .collect::<Vec<_>>()
    );
    let log = postfix.log();
    assert!(
        log.contains("TLS connection established from"),
        "Postfix logs the TLS session:\n{log}"
    );
    assert_eq!(
        command_count(&disconnect_line(&log), "starttls"),
        1,
        "{log}"
    );
}

#[test]
fn postfix_with_tls_disabled_gets_plaintext() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            tls: server_tls(&cert),
            ..PostfixOptions::default()
        },
    );
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    let ascii = message("ascii", "plain\n");
    let utf8 = message("utf8", "gr\u{fc}\u{df}e\n");
    queue.add(DOMAIN, "m1", "a@src.test", &["bob@dest.test"], &ascii);
    queue.add(DOMAIN, "m2", "a@src.test", &["j\u{f6}rg@dest.test"], &utf8);
    let out = run(&queue, &net, &dns, &tls_toml("disabled", None, None));
    let deliveries = out.deliveries();
    for to in ["bob@dest.test", "j\u{f6}rg@dest.test"] {
        let d = assert_outcome(&out, &deliveries, to, "sent", Some(250));
        assert_eq!(d.tls, "none", "no TLS for {to}: {d:#?}");
    }
    assert_eq!(
        postfix.wait_for_messages(2, WAIT).len(),
        2,
        "both delivered"
    );
    let log = postfix.log();
    assert!(
        !log.contains("TLS connection established"),
        "no TLS although Postfix offers it:\n{log}"
    );
    assert_eq!(
        command_count(&disconnect_line(&log), "starttls"),
        0,
        "{log}"
    );
    // SMTPUTF8 and 8BITMIME, declared because Postfix offers them.
    let size = on_the_wire(&utf8).len();
    assert!(
        log.contains(&format!(
            "< unknown[127.0.0.1]: MAIL FROM:<a@src.test> SIZE={size} BODY=8BITMIME SMTPUTF8"
        )),
        "the internationalised, 8-bit message declares both:\n{log}"
    );
}

#[test]
fn postfix_without_pipelining_chunking_or_smtputf8() {
    let net = TestNet::new();
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            discard_ehlo_keywords: vec!["pipelining".into(), "chunking".into(), "smtputf8".into()],
            // Pipelining where Postfix did not offer it would be refused.
            extra: vec![
                "smtpd_data_restrictions = reject_unauth_pipelining".into(),
                "message_size_limit = 4000".into(),
            ],
            ..PostfixOptions::default()
        },
    );
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    let small = message("small", ".dot\nline\n");
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["bob@dest.test", "carol@dest.test"],
        &small,
    );
    queue.add(
        DOMAIN,
        "m2",
        "a@src.test",
        &["big@dest.test"],
        &big_message("big", 8),
    );
    queue.add(DOMAIN, "m3", "a@src.test", &["j\u{f6}rg@dest.test"], &small);
    let out = run(&queue, &net, &dns, "");
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "bob@dest.test", "sent", Some(250));
    assert_outcome(&out, &deliveries, "carol@dest.test", "sent", Some(250));
    let big = assert_outcome(&out, &deliveries, "big@dest.test", "bounced", None);
    assert!(
        big.reply
            .contains("accepts messages of at most 4000 octets (SIZE)"),
        "over the SIZE limit: bounced with a clear reason: {big:#?}"
    );
    let utf8 = assert_outcome(&out, &deliveries, "j\u{f6}rg@dest.test", "bounced", None);
    assert!(
        utf8.reply.contains("does not offer SMTPUTF8"),
        "SMTPUTF8 needed but not offered: bounced with a clear reason: {utf8:#?}"
    );
    assert_eq!(
        postfix.wait_for_messages(2, WAIT).len(),
        2,
        "only m1 arrives, a copy for bob and one for carol"
    );
    let log = postfix.log();
    assert!(
        !log.contains("improper command pipelining"),
        "no pipelining where Postfix did not offer it:\n{log}"
    );
    let summary = disconnect_line(&log);
    assert_eq!(
        command_count(&summary, "data"),
        1,
        "DATA, not BDAT: {summary}"
    );
    assert_eq!(command_count(&summary, "bdat"), 0, "{summary}");
    assert_eq!(
        command_count(&summary, "mail"),
        1,
        "the refused messages were never offered: {summary}"
    );
    let (_, commands) = read_holding_mail(&log, "a@src.test");
    assert_eq!(
        commands.len(),
        1,
        "MAIL alone in its read: {commands:?}\n{log}"
    );
}

// ---- aiosmtpd ------------------------------------------------------------------

fn sink(net: &TestNet, dir: &Path, cert: Option<&TestCert>) -> AiosmtpdSink {
    AiosmtpdSink::start_with(
        net.ip(1),
        net.port(),
        dir,
        &SinkOptions {
            tls: cert.and_then(server_tls),
            pipelining: true,
            client_ca: None,
        },
    )
}

#[test]
fn aiosmtpd_opportunistic_tls_with_pipelining() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&net, dir.path(), Some(&cert));
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    let msg = message("opportunistic", "8-bit: caf\u{e9}\n.leading dot\n");
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r1@dest.test", "r2@dest.test"],
        &msg,
    );
    let out = run(&queue, &net, &dns, "");
    let d = assert_outcome(&out, &out.deliveries(), "r1@dest.test", "sent", Some(250));
    assert!(d.tls.ends_with(" unverified"), "{d:#?}");
    let got = sink.wait_for(1, WAIT);
    assert_eq!(got.len(), 1, "one message");
    let r = &got[0];
    let tls = r.tls.clone().unwrap_or_default();
    assert!(tls.0.starts_with("TLSv1."), "aiosmtpd saw TLS: {r:#?}");
    assert_eq!(r.data, on_the_wire(&msg), "byte for byte");
    assert_eq!(r.rcpt_tos, ["r1@dest.test", "r2@dest.test"], "recipients");
    let size = format!("SIZE={}", on_the_wire(&msg).len());
    assert_eq!(
        r.mail_options,
        [size.as_str(), "BODY=8BITMIME"],
        "SIZE and BODY=8BITMIME declared"
    );
    let after = String::from_utf8_lossy(&r.after_mail);
    assert!(
        after.starts_with("RCPT TO:<r1@dest.test>\r\nRCPT TO:<r2@dest.test>\r\nDATA\r\n"),
        "pipelined: RCPTs and DATA were already buffered when MAIL was handled: {after:?}"
    );
}

#[test]
fn aiosmtpd_required_tls_verified_against_ca_file() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&net, dir.path(), Some(&cert));
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    let msg = message("required", "hello\n");
    queue.add(DOMAIN, "m1", "a@src.test", &["r@dest.test"], &msg);
    let out = run(
        &queue,
        &net,
        &dns,
        &tls_toml("required", None, Some(cert.cert_path())),
    );
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert!(
        d.tls.ends_with(" verified"),
        "required TLS checks names by default: {d:#?}"
    );
    let got = sink.wait_for(1, WAIT);
    assert!(got.first().is_some_and(|r| r.tls.is_some()), "{got:#?}");
}

#[test]
fn aiosmtpd_with_tls_disabled_gets_plaintext() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&net, dir.path(), Some(&cert));
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r@dest.test"],
        &message("m1", "x\n"),
    );
    let out = run(&queue, &net, &dns, &tls_toml("disabled", None, None));
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert_eq!(d.tls, "none", "{d:#?}");
    let got = sink.wait_for(1, WAIT);
    assert!(
        got.first().is_some_and(|r| r.tls.is_none()),
        "aiosmtpd saw plaintext: {got:#?}"
    );
}

#[test]
fn opportunistic_tls_keeps_encryption_when_the_certificate_names_another_host() {
    // `tls.verify = "name"` once made an opportunistic handshake fail on
    // such a certificate and the mail go in plaintext. The `may` level
    // keeps the encryption and records that the certificate did not pass
    // (a failed handshake still falls back to plaintext: see
    // interop/edge.rs).
    let net = TestNet::new();
    let cert = TestCert::new(&["other.test"]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&net, dir.path(), Some(&cert));
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r@dest.test"],
        &message("m1", "x\n"),
    );
    let out = run(
        &queue,
        &net,
        &dns,
        &tls_toml("opportunistic", Some("name"), Some(cert.cert_path())),
    );
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert!(
        d.tls.starts_with("opportunistic TLSv1.3 ") && d.tls.ends_with(" unverified"),
        "delivered over TLS, the certificate not passing: {d:#?}"
    );
    assert!(
        !out.stderr.contains("trying again without TLS"),
        "no plaintext retry:\n{}",
        out.stderr
    );
    let got = sink.wait_for(1, WAIT);
    assert!(got.first().is_some_and(|r| r.tls.is_some()), "{got:#?}");
}

#[test]
fn required_tls_failures_are_temporary() {
    // A certificate for another name, and a server without STARTTLS.
    let cases: [(Option<&str>, &str); 2] = [
        (
            Some("other.test"),
            "TLS handshake failed: invalid peer certificate",
        ),
        (
            None,
            "does not offer STARTTLS, but TLS is required for this destination",
        ),
    ];
    for (name, reason) in cases {
        let net = TestNet::new();
        let cert = TestCert::new(&[name.unwrap_or(MX)]);
        let dir = tempfile::tempdir().unwrap();
        let sink = sink(&net, dir.path(), name.map(|_| &cert));
        let dns = dns_for(&net);
        let queue = TestQueue::new();
        queue.add(
            DOMAIN,
            "m1",
            "a@src.test",
            &["r@dest.test"],
            &message("m1", "x\n"),
        );
        let out = run(
            &queue,
            &net,
            &dns,
            &tls_toml("required", None, Some(cert.cert_path())),
        );
        let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "deferred", None);
        assert!(d.reply.contains(reason), "{reason:?} in {d:#?}");
        assert!(sink.messages().is_empty(), "nothing sent in plaintext");
        check(
            queue.state().whereabouts(DOMAIN, "m1") == "queued",
            "the message stays queued",
            &queue,
            &out,
        );
    }
}

#[test]
fn per_domain_policy_overrides_the_mode() {
    // tls.mode is disabled, but dest.test requires TLS: a server without
    // STARTTLS gets nothing.
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&net, dir.path(), None);
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r@dest.test"],
        &message("m1", "x\n"),
    );
    let extra = format!(
        "{}[tls.policy]\n\"Dest.Test\" = \"required\"\n",
        tls_toml("disabled", None, None)
    );
    let out = run(&queue, &net, &dns, &extra);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "deferred", None);
    assert!(d.reply.contains("TLS is required"), "{d:#?}");
    assert!(sink.messages().is_empty(), "nothing sent");
}

#[test]
fn a_client_certificate_goes_to_a_server_that_asks_for_one() {
    // aiosmtpd wants a client certificate from the given roots; the
    // client's own self-signed certificate is that root.
    let net = TestNet::new();
    let server = TestCert::new(&[MX]);
    let client = TestCert::new(&["client.src.test"]);
    let dir = tempfile::tempdir().unwrap();
    let options = SinkOptions {
        tls: server_tls(&server),
        pipelining: true,
        client_ca: Some(client.cert_path().to_path_buf()),
    };
    let sink = AiosmtpdSink::start_with(net.ip(1), net.port(), dir.path(), &options);
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r@dest.test"],
        &message("m1", "x\n"),
    );
    let extra = format!(
        "{}client_cert = \"{}\"\nclient_key = \"{}\"\n",
        tls_toml("encrypt", None, None),
        client.cert_path().display(),
        client.key_path().display()
    );
    let out = run(&queue, &net, &dns, &extra);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert!(d.tls.starts_with("encrypt TLSv1.3 "), "{d:#?}");
    let got = sink.wait_for(1, WAIT);
    assert_eq!(
        got.first().map(|r| r.client_names.clone()),
        Some(vec!["client.src.test".to_owned()]),
        "the server saw the client certificate: {got:#?}"
    );

    // Without it, the server ends the session (under TLS 1.3 right after
    // the client finished its side of the handshake); TLS was required,
    // so the message waits rather than go in plaintext.
    queue.add(
        DOMAIN,
        "m2",
        "a@src.test",
        &["r2@dest.test"],
        &message("m2", "x\n"),
    );
    let out = run(&queue, &net, &dns, &tls_toml("encrypt", None, None));
    assert_outcome(&out, &out.deliveries(), "r2@dest.test", "deferred", None);
    assert_eq!(sink.messages().len(), 1, "nothing more arrived");
}

#[test]
fn a_domain_that_requires_mta_sts_without_a_policy_waits_with_4_7_5() {
    // tls.policy says mta-sts for dest.test, which publishes no policy:
    // its MX host is not connected to, and the deferral says why.
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let dir = tempfile::tempdir().unwrap();
    let sink = sink(&net, dir.path(), Some(&cert));
    let dns = dns_for(&net);
    let queue = TestQueue::new();
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["r@dest.test"],
        &message("m1", "x\n"),
    );
    let extra = format!(
        "{}[tls.policy]\n\"dest.test\" = \"mta-sts\"\n",
        tls_toml("may", None, Some(cert.cert_path()))
    );
    let out = run(&queue, &net, &dns, &extra);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "deferred", None);
    assert_eq!(d.dsn, "4.7.5", "{d:#?}");
    assert!(
        d.reply
            .contains("not used: MTA-STS required, but the domain publishes no policy"),
        "{d:#?}"
    );
    assert!(
        sink.messages().is_empty(),
        "never connected: {:?}",
        sink.messages()
    );

    // postman route says the same, host by host.
    let mut cfg: Config = config(&queue, &net, &dns);
    for (extra, want) in [
        (
            extra,
            "security   mta-sts-enforce: not used: MTA-STS required, but the domain publishes no policy",
        ),
        (
            tls_toml("encrypt", None, None),
            "security   encrypt: STARTTLS required, any certificate",
        ),
    ] {
        cfg.extra = extra;
        let file = cfg.write();
        let path = file.path().to_str().expect("a UTF-8 path");
        let out = postman!().run(&["route", "--config", path, "u@dest.test"], WAIT);
        out.assert_success();
        assert!(out.stdout.contains(want), "{want}:\n{}", out.stdout);
    }
}
