//! Helpers shared by the end-to-end tests (each test file includes this
//! module; not every file uses every helper).
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use postman_integration::postman::{ConfigFile, Delivery};
use postman_integration::queue::field;
use postman_integration::{
    postman, Config, DnsServer, HostileServer, RunOutput, Script, TestNet, TestQueue, Zones,
};
use serde_json::Value;

/// The domain of a [`HostileCase`].
pub const HOSTILE_DOMAIN: &str = "hostile.test";

/// One domain ([`HOSTILE_DOMAIN`]) whose single MX is a scripted server at
/// the net's `.1`, with SMTP timeouts of 2 s. Each test file adds its own
/// `run` and helpers in an `impl` of its own.
pub struct HostileCase {
    pub server: HostileServer,
    pub dns: DnsServer,
    pub queue: TestQueue,
    pub config: Config,
}

impl HostileCase {
    pub fn new(scripts: Vec<Script>) -> HostileCase {
        let net = TestNet::new();
        let server = HostileServer::start(net.addr(1), scripts);
        let dns = DnsServer::start(Zones::new().mx_at(HOSTILE_DOMAIN, net.ipv4(1)));
        let queue = TestQueue::new();
        let mut config = config(&queue, &net, &dns);
        config.timeouts = postman_integration::postman::SmtpTimeouts::all(2);
        HostileCase {
            server,
            dns,
            queue,
            config,
        }
    }
}

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

// Shared by durability.rs and bounces.rs.

/// A MAIL or RCPT command up to its path's `>`, without the ESMTP
/// parameters after it (`SIZE=…`, `NOTIFY=…`).
pub fn without_params(command: &str) -> &str {
    &command[..command.find('>').map_or(command.len(), |i| i + 1)]
}

/// A server that refuses every recipient with `reply` and, as real servers
/// do, the DATA that follows (RFC 2920 §3.1), so no empty body is sent.
pub fn refusing(reply: &str) -> Script {
    Script::polite()
        .answer("RCPT", reply)
        .answer("DATA", "554 5.5.1 no valid recipients")
}

/// Panics with the queue and the log unless `ok`. Like [`check`], but the
/// queue is shown with every file in it ([`TestQueue::describe`]).
pub fn check_described(ok: bool, what: &str, queue: &TestQueue, out: &RunOutput) {
    assert!(
        ok,
        "{what}\n--- queue ---\n{}\n--- stderr ---\n{}",
        queue.describe(),
        out.stderr
    );
}

/// A bounce as mail-parser reads it.
pub struct Dsn {
    /// Top-level header fields, raw values trimmed.
    pub headers: Vec<(String, String)>,
    /// The human-readable part.
    pub text: String,
    /// The per-message fields of the `message/delivery-status` part.
    pub per_message: Vec<(String, String)>,
    /// The per-recipient field groups.
    pub recipients: Vec<Vec<(String, String)>>,
    /// The `text/rfc822-headers` part.
    pub original_headers: String,
}

impl Dsn {
    /// The per-recipient group for `address`.
    pub fn recipient(&self, address: &str) -> &[(String, String)] {
        let want = format!("rfc822; {address}");
        self.recipients
            .iter()
            .find(|g| field(g, "Final-Recipient") == Some(want.as_str()))
            .unwrap_or_else(|| panic!("no Final-Recipient {want:?} in {:#?}", self.recipients))
    }
}

/// Header fields of a block as mail-parser splits them: (name, raw value
/// trimmed, folding removed).
fn parsed_fields(block: &[u8]) -> Vec<(String, String)> {
    let mut with_end = block.to_vec();
    with_end.extend_from_slice(b"\r\n\r\n");
    let parsed = MessageParser::default()
        .parse_headers(&with_end[..])
        .unwrap_or_else(|| {
            panic!(
                "mail-parser finds no fields in {:?}",
                String::from_utf8_lossy(block)
            )
        });
    parsed
        .headers_raw()
        .map(|(name, value)| {
            let value = value.replace("\r\n", "").replace('\n', "");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Parses a bounce with mail-parser and checks its MIME structure: a
/// `multipart/report; report-type=delivery-status` of exactly three parts,
/// `text/plain`, `message/delivery-status` and `text/rfc822-headers`.
pub fn parse_dsn(bytes: &[u8]) -> Dsn {
    let shown = String::from_utf8_lossy(bytes);
    let msg = MessageParser::default()
        .parse(bytes)
        .unwrap_or_else(|| panic!("mail-parser cannot parse the bounce:\n{shown}"));
    let ct = msg
        .content_type()
        .unwrap_or_else(|| panic!("the bounce has no Content-Type:\n{shown}"));
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "bounce Content-Type:\n{shown}"
    );
    assert_eq!(
        ct.attribute("report-type"),
        Some("delivery-status"),
        "report-type parameter:\n{shown}"
    );
    let PartType::Multipart(children) = &msg.root_part().body else {
        panic!("the bounce's root is not multipart:\n{shown}");
    };
    let parts: Vec<_> = children.iter().map(|&id| &msg.parts[id as usize]).collect();
    let types: Vec<String> = parts
        .iter()
        .map(|p| {
            p.content_type().map_or_else(
                || "(none)".to_owned(),
                |c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ],
        "the three parts of the report, in order:\n{shown}"
    );
    let status = parts[1].contents().to_vec();
    let status_text = String::from_utf8_lossy(&status).replace("\r\n", "\n");
    let mut groups = status_text
        .split("\n\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| parsed_fields(g.as_bytes()));
    let per_message = groups
        .next()
        .unwrap_or_else(|| panic!("empty delivery-status part:\n{shown}"));
    Dsn {
        headers: msg
            .headers_raw()
            .map(|(n, v)| (n.to_owned(), v.replace("\r\n", "").trim().to_owned()))
            .collect(),
        text: parts[0].text_contents().unwrap_or_default().to_owned(),
        per_message,
        recipients: groups.collect(),
        original_headers: parts[2].text_contents().unwrap_or_default().to_owned(),
    }
}

/// The bounces in the local Maildir of `user`, or a panic with the queue.
pub fn local_bounces(queue: &TestQueue, user: &str) -> Vec<Vec<u8>> {
    queue
        .maildir_messages(user)
        .into_iter()
        .map(|b| b.bytes)
        .collect()
}

// Shared by ops.rs and ops_live.rs: the operator commands.

/// How long an operator command may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// A queue, DNS for `d1.test` and `d2.test` (and `src.test`, the senders'
/// domain) pointing at one scripted server, and a config for all of it.
pub struct Setup {
    pub queue: TestQueue,
    pub server: HostileServer,
    _dns: DnsServer,
    pub config: Config,
    pub file: ConfigFile,
}

impl Setup {
    pub fn new(scripts: Vec<Script>) -> Setup {
        let net = TestNet::new();
        let server = HostileServer::start(net.addr(1), scripts);
        let dns = DnsServer::start(
            Zones::new()
                .mx("d1.test", 10, "mx.ops.test")
                .mx("d2.test", 10, "mx.ops.test")
                .mx("src.test", 10, "mx.ops.test")
                .a("mx.ops.test", net.ipv4(1)),
        );
        let queue = TestQueue::new();
        let config = config(&queue, &net, &dns);
        let file = config.write();
        Setup {
            queue,
            server,
            _dns: dns,
            config,
            file,
        }
    }

    pub fn polite() -> Setup {
        Setup::new(vec![Script::polite()])
    }

    /// Rewrites the config file after a change to `config`.
    pub fn rewrite_config(&mut self) {
        self.file = self.config.write();
    }

    /// `postman <command> --config FILE <args>`.
    pub fn postman(&self, command: &str, args: &[&str]) -> RunOutput {
        let config = self.file.path().to_string_lossy().into_owned();
        let mut all = vec![command, "--config", &config];
        all.extend_from_slice(args);
        postman!().run(&all, DEADLINE)
    }

    /// Like [`Setup::postman`], with `input` on standard input.
    pub fn postman_with_input(&self, command: &str, args: &[&str], input: &[u8]) -> RunOutput {
        let config = self.file.path().to_string_lossy().into_owned();
        let mut all = vec![command, "--config", &config];
        all.extend_from_slice(args);
        postman!().run_with_input(&all, input, DEADLINE)
    }

    pub fn run_once(&self) -> RunOutput {
        let out = postman!().run_once(&self.file);
        out.assert_success();
        out
    }

    /// The `queue --json` objects.
    pub fn listing(&self) -> Vec<Value> {
        let out = self.postman("queue", &["--json"]);
        out.assert_success();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }
}

/// Asserts that `out` succeeded; returns it.
pub fn succeeded(out: &RunOutput) -> &RunOutput {
    out.assert_success()
}
