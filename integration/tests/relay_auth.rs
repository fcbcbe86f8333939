//! End to end against a real submission relay: Postfix's smtpd with Cyrus
//! SASL (sasldb), STARTTLS required before AUTH and MAIL, relaying only for
//! authenticated clients (its own 535, 454 and 554 are the answers). A
//! relay host with AUTH after STARTTLS by every mechanism, a wrong
//! password (deferred, never bounced), implicit TLS, AUTH never sent in
//! plaintext, source addresses shared by weight, and the start-up checks.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{assert_outcome, check, config, message};
use postman_integration::net::free_port;
use postman_integration::{
    postman, Config, DnsServer, Postfix, PostfixOptions, RunOutput, SaslUsers, TestCert, TestNet,
    TestQueue, Zones,
};

const DOMAIN: &str = "dest.test";
const USER: &str = "relay-user";
const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(15);

struct Relay {
    net: TestNet,
    cert: TestCert,
    postfix: Postfix,
    dns: DnsServer,
    queue: TestQueue,
    /// Holds the password file.
    dir: tempfile::TempDir,
}

impl Relay {
    fn start(users: SaslUsers, implicit_tls: bool) -> Relay {
        let net = TestNet::new();
        let cert = TestCert::new(&[&net.ip(1).to_string()]);
        let postfix = Postfix::start(
            net.ip(1),
            net.port(),
            &[DOMAIN],
            &PostfixOptions {
                tls: Some((cert.cert_path().into(), cert.key_path().into())),
                sasl: Some(users),
                implicit_tls_port: implicit_tls.then(free_port),
                ..PostfixOptions::default()
            },
        );
        Relay {
            dns: DnsServer::start(Zones::new()),
            queue: TestQueue::new(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            net,
            cert,
            postfix,
        }
    }

    /// The password file with `line`, mode 0600.
    fn password_file(&self, line: &str) -> PathBuf {
        password_file(&self.dir, line, 0o600)
    }

    /// postman's settings: the test's relay as `relayhost` (its next hop
    /// `relayhost`), `password_file`, the relay's certificate trusted.
    fn config(&self, relayhost: &str, password_file: &std::path::Path, more: &str) -> Config {
        let mut cfg = config(&self.queue, &self.net, &self.dns);
        cfg.extra = format!(
            "[tls]\nca_file = {:?}\n[routing]\nrelayhost = {relayhost:?}\npassword_file = {:?}\n{more}",
            self.cert.cert_path(),
            password_file,
        );
        cfg
    }

    fn queue_one(&self, id: &str) {
        let to = format!("u-{id}@{DOMAIN}");
        self.queue
            .add(DOMAIN, id, "a@src.test", &[&to], &message(id, "relayed\n"));
    }
}

/// A password file in `dir` holding `line`, with `mode`.
fn password_file(dir: &tempfile::TempDir, line: &str, mode: u32) -> PathBuf {
    let path = dir.path().join("relay-passwords");
    std::fs::write(&path, format!("# relays\n{line}\n")).expect("write the password file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

/// Nothing postman printed holds the password, in clear or base64.
fn assert_no_secret(out: &RunOutput) {
    let base64_plain = "AHJlbGF5LXVzZXIAY29ycmVjdCBob3JzZSBiYXR0ZXJ5";
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains(PASSWORD),
            "the password is in the output:\n{text}"
        );
        assert!(
            !text.contains(base64_plain),
            "the password is in the output:\n{text}"
        );
    }
}

#[test]
fn a_relay_host_with_auth_after_starttls_by_every_mechanism() {
    for (mechanisms, method) in [
        (vec!["PLAIN", "LOGIN", "SCRAM-SHA-256"], "SCRAM-SHA-256"),
        (vec!["PLAIN"], "PLAIN"),
        (vec!["LOGIN"], "LOGIN"),
    ] {
        let relay = Relay::start(
            SaslUsers::new(&[(USER, PASSWORD)]).mechanisms(&mechanisms),
            false,
        );
        let hop = format!("[{}]:{}", relay.net.ip(1), relay.net.port());
        let file = relay.password_file(&format!("{hop}  {USER}:{PASSWORD}"));
        relay.queue_one("m1");
        let out = postman!().run_once(&relay.config(&hop, &file, "").write());
        out.assert_success();
        check(
            relay.queue.state().is_empty(),
            "relayed",
            &relay.queue,
            &out,
        );
        let d = assert_outcome(&out, &out.deliveries(), "u-m1@dest.test", "sent", Some(250));
        assert_eq!(d.via, "relayhost", "{d:#?}");
        assert!(
            d.tls.contains("verified"),
            "STARTTLS with the relay's name checked: {d:#?}"
        );
        let accepted = relay.postfix.accepted();
        assert_eq!(accepted.len(), 1, "{method}: {accepted:#?}");
        let login = accepted[0].sasl.as_ref().expect("authenticated");
        assert_eq!(
            (login.method.as_str(), login.username.as_str()),
            (method, USER)
        );
        for session in relay.postfix.sessions() {
            let plain = session.plaintext_commands();
            assert!(
                plain
                    .iter()
                    .all(|c| !c.to_ascii_uppercase().starts_with("AUTH")),
                "AUTH before TLS: {plain:?}"
            );
        }
        assert_no_secret(&out);
    }
}

/// The relay's name has two addresses: after its first refused the
/// password, the second is not tried with it.
#[test]
fn a_wrong_password_defers_and_never_bounces() {
    let mut relay = Relay::start(SaslUsers::new(&[(USER, PASSWORD)]), false);
    relay.dns = DnsServer::start(
        Zones::new()
            .a("smtp.relay.test", relay.net.ipv4(1))
            .a("smtp.relay.test", relay.net.ipv4(2)),
    );
    let hop = format!("[smtp.relay.test]:{}", relay.net.port());
    let file = relay.password_file(&format!("{hop}  {USER}:not-the-password"));
    relay.queue_one("m1");
    let mut cfg = relay.config(&hop, &file, "");
    cfg.ip_preference = "ipv4".into();
    // The certificate names the address, not this name: the test is
    // about AUTH, so the name is not checked here.
    cfg.extra = cfg.extra.replace(
        &format!("relayhost = {hop:?}"),
        &format!("relayhost = {{ nexthop = {hop:?}, verify = \"none\" }}"),
    );
    let out = postman!().run_once(&cfg.write());
    assert!(
        !out.stderr.contains(&format!("[{}]", relay.net.ipv4(2))),
        "the second address was tried: {}",
        out.stderr
    );
    out.assert_success();
    let d = assert_outcome(&out, &out.deliveries(), "u-m1@dest.test", "deferred", None);
    assert!(d.reply.contains("535"), "the relay's own answer: {d:#?}");
    assert!(d.dsn.starts_with("4."), "a temporary status: {d:#?}");
    assert!(
        relay.queue.state().is_queued(DOMAIN, "m1"),
        "it waits for a fixed password"
    );
    assert!(relay.queue.bounces_to("a@src.test").is_empty(), "no bounce");
    assert!(
        !relay.postfix.auth_failures().is_empty(),
        "Postfix saw the failed AUTH"
    );
    assert_eq!(relay.postfix.message_count(), 0);
    assert!(!out.stderr.contains("not-the-password"), "{}", out.stderr);
}

#[test]
fn implicit_tls_on_the_submissions_port() {
    let relay = Relay::start(SaslUsers::new(&[(USER, PASSWORD)]), true);
    let port = relay.postfix.implicit_tls_addr().expect("a port").port();
    let hop = format!("smtps:[{}]:{port}", relay.net.ip(1));
    let file = relay.password_file(&format!("[{}]:{port} {USER}:{PASSWORD}", relay.net.ip(1)));
    relay.queue_one("m1");
    let config = relay.config(&hop, &file, "").write();
    let path = config.path().to_str().expect("a UTF-8 path");
    // What the operator sees of it names the user, never the password.
    let route = postman!().run(&["route", "--config", path, "u@dest.test"], WAIT);
    route.assert_success();
    assert!(
        route.stdout.contains(&format!("auth       as {USER} ")),
        "{}",
        route.stdout
    );
    assert!(route.stdout.contains("implicit TLS"), "{}", route.stdout);
    assert_no_secret(&route);
    let checked = postman!().check_config(&config);
    checked.assert_success();
    assert!(
        checked.stdout.contains(&format!("(AUTH as {USER})")),
        "{}",
        checked.stdout
    );
    assert_no_secret(&checked);
    let out = postman!().run_once(&config);
    out.assert_success();
    check(
        relay.queue.state().is_empty(),
        "relayed",
        &relay.queue,
        &out,
    );
    let d = assert_outcome(&out, &out.deliveries(), "u-m1@dest.test", "sent", Some(250));
    assert!(d.relay.ends_with(&format!(":{port}")), "{d:#?}");
    let sessions = relay.postfix.sessions();
    assert!(
        sessions
            .iter()
            .any(|s| s.before_tls == 0 && s.tls.is_some()),
        "TLS from the first byte: {sessions:#?}"
    );
    assert_eq!(
        relay.postfix.accepted()[0]
            .sasl
            .as_ref()
            .map(|l| l.username.as_str()),
        Some(USER)
    );
}

/// A relay that offers AUTH without TLS (and no STARTTLS at all): the
/// password is never sent; the mail waits.
#[test]
fn auth_is_never_sent_in_plaintext() {
    let net = TestNet::new();
    let mut users = SaslUsers::new(&[(USER, PASSWORD)]);
    users.plaintext = true;
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            sasl: Some(users),
            ..PostfixOptions::default()
        },
    );
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let hop = format!("[{}]:{}", net.ip(1), net.port());
    let file = password_file(&dir, &format!("{hop} {USER}:{PASSWORD}"), 0o600);
    queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@dest.test"],
        &message("m1", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!("[routing]\nrelayhost = {hop:?}\npassword_file = {file:?}\n");
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let d = assert_outcome(&out, &out.deliveries(), "u@dest.test", "deferred", None);
    assert!(d.reply.to_ascii_lowercase().contains("tls"), "{d:#?}");
    for session in postfix.sessions() {
        assert!(
            session
                .commands()
                .iter()
                .all(|c| !c.to_ascii_uppercase().starts_with("AUTH")),
            "{:?}",
            session.commands()
        );
    }
    assert!(postfix.auth_failures().is_empty());
    assert!(queue.state().is_queued(DOMAIN, "m1"));
}

/// Connections through a pool of 127.0.0.2 (weight 3) and 127.0.0.3
/// (weight 1): Postfix's log shows each client address as often as its
/// weight says, and each delivery record names its source.
#[test]
fn a_weighted_pool_of_source_addresses() {
    let net = TestNet::new();
    let postfix = Postfix::start(net.ip(1), net.port(), &[DOMAIN], &PostfixOptions::default());
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    for i in 0..8 {
        let id = format!("m{i}");
        let to = format!("u{i}@{DOMAIN}");
        queue.add(DOMAIN, &id, "a@src.test", &[&to], &message(&id, "x\n"));
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.threads = 1;
    cfg.max_messages_per_connection = 1;
    cfg.extra = format!(
        "[routing.source.pool]\naddresses = [{{ ip = \"127.0.0.2\", weight = 3, helo_name = \"two.example\" }}, \
         {{ ip = \"127.0.0.3\", helo_name = \"three.example\" }}]\n\
         [routing.transport]\n{DOMAIN:?} = {{ nexthop = \"[{}]:{}\", source = \"pool\" }}\n",
        net.ip(1),
        net.port()
    );
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(queue.state().is_empty(), "all delivered", &queue, &out);
    assert!(
        postfix.wait_until(WAIT, |p| p.accepted().len() == 8),
        "{:#?}",
        postfix.accepted()
    );
    let by_client = postfix.connections_by_client();
    let count = |ip: &str| {
        by_client
            .get(&ip.parse().expect("an address"))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(
        (count("127.0.0.2"), count("127.0.0.3")),
        (6, 2),
        "{by_client:?}"
    );
    let deliveries = out.deliveries();
    let sources: Vec<&str> = deliveries.iter().map(|d| d.source.as_str()).collect();
    assert_eq!(
        sources.iter().filter(|s| **s == "127.0.0.2").count(),
        6,
        "{sources:?}"
    );
    assert_eq!(
        sources.iter().filter(|s| **s == "127.0.0.3").count(),
        2,
        "{sources:?}"
    );
    for session in postfix.sessions() {
        let helo = if session.client.to_string() == "127.0.0.2" {
            "two.example"
        } else {
            "three.example"
        };
        assert!(
            session
                .commands()
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&format!("ehlo {helo}"))),
            "{} said {:?}",
            session.client,
            session.commands()
        );
    }
}

#[test]
fn what_cannot_be_used_stops_the_start_naming_it() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let open_file = password_file(&dir, &format!("[r.test]:587 {USER}:{PASSWORD}"), 0o644);
    let cases = [
        ("[routing]\nbind_address = \"192.0.2.1\"\n".to_owned(), "192.0.2.1"),
        (
            "[routing.source.p]\naddresses = [{ ip = \"192.0.2.7\" }]\n".to_owned(),
            "192.0.2.7",
        ),
        (
            format!("[routing]\nrelayhost = \"[r.test]:587\"\npassword_file = {open_file:?}\n"),
            "readable by others",
        ),
        (
            format!(
                "[routing]\nrelayhost = {{ nexthop = \"[other.test]:587\", auth = true }}\npassword_file = {:?}\n",
                dir.path().join("missing")
            ),
            "routing.password_file",
        ),
    ];
    for (extra, named) in cases {
        let mut cfg = config(&queue, &net, &dns);
        cfg.extra = extra;
        let out = postman!().run_once(&cfg.write());
        assert!(!out.status.success(), "{named}: {}", out.stderr);
        assert!(out.stderr.contains(named), "{named} in: {}", out.stderr);
        assert!(!out.stderr.contains(PASSWORD), "{}", out.stderr);
    }
}
