//! The sender's envelope parameters on the wire, against real peers:
//! Postfix's smtpd advertises DSN, and puts the message on hold so that
//! `postcat` shows the RET, ENVID, NOTIFY and ORCPT it received (RFC
//! 3461); with DSN hidden from its EHLO reply, it gets none of them.
//! REQUIRETLS (RFC 8689) against the scripted server with STARTTLS and a
//! test certificate: delivered only over verified TLS to a server that
//! advertises it; otherwise deferred with 5.7.10 or 5.7.30, never a MAIL,
//! and bounced with that status once the message's lifetime is over.

mod common;

use std::time::Duration;

use common::{assert_outcome, config, local_bounces, local_config, parse_dsn, LOCAL_SENDER};
use postman_integration::postman::{Config, RunOutput};
use postman_integration::queue::{field, unix_now};
use postman_integration::{
    postman, DnsServer, HostileServer, Postfix, PostfixOptions, Script, TestCert, TestNet,
    TestQueue, Zones,
};

const DOMAIN: &str = "dest.test";
const MX: &str = "mx.dest.test";
const WAIT: Duration = Duration::from_secs(10);

/// A queue file with every DSN parameter: RET and ENVID, one recipient
/// with NOTIFY and ORCPT, one with NOTIFY=NEVER, one with none.
fn dsn_queue_file() -> Vec<u8> {
    format!(
        "X-Postman-From: <a@src.test>\n\
         X-Postman-Date: {}\n\
         X-Postman-Ret: FULL\n\
         X-Postman-Envid: QQ314159+2Bx\n\
         X-Postman-To: <bob@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@dest.test\n\
         X-Postman-To: <carol@dest.test> NOTIFY=NEVER\n\
         X-Postman-To: <dave@dest.test>\n\
         \n\
         From: a@src.test\nTo: bob@dest.test\nSubject: dsn\nMessage-ID: <dsn@src.test>\n\nhi\n",
        unix_now()
    )
    .into_bytes()
}

/// Postfix for `dest.test` that holds every message it accepts (HOLD, an
/// access action: the message waits in its hold queue, envelope and
/// all), with `options`' other settings.
fn holding_postfix(net: &TestNet, options: PostfixOptions) -> Postfix {
    let mut options = options;
    options.extra.push(
        "smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit_mynetworks, \
         reject"
            .into(),
    );
    Postfix::start(net.ip(1), net.port(), &[DOMAIN], &options)
}

fn run_once(queue: &TestQueue, net: &TestNet) -> (RunOutput, DnsServer) {
    let dns = DnsServer::start(Zones::new().mx(DOMAIN, 10, MX).a(MX, net.ipv4(1)));
    let cfg: Config = config(queue, net, &dns);
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    (out, dns)
}

/// The held message's envelope as `postcat -e` shows it.
fn held_envelope(postfix: &Postfix) -> String {
    let held = postfix.wait_for_held(1, WAIT);
    assert_eq!(
        held.len(),
        1,
        "Postfix holds the message:\n{}",
        postfix.log()
    );
    held.into_iter().next().unwrap_or_default()
}

/// Postfix's envelope records of a held message that name a DSN
/// parameter, in order (Postfix 3.7's `postcat -e`): `envelope_id` and
/// `dsn_orig_rcpt` decoded from xtext, `ret_flags` 1 = FULL, 2 = HDRS,
/// `notify_flags` 1 = NEVER, 2 = SUCCESS, 4 = FAILURE, 8 = DELAY
/// (`global/dsn_mask.h`).
fn dsn_records(envelope: &str) -> Vec<String> {
    let names = [
        "envelope_id=",
        "ret_flags=",
        "notify_flags=",
        "dsn_orig_rcpt=",
    ];
    envelope
        .lines()
        .filter_map(|line| {
            line.strip_prefix("named_attribute: ")
                .or_else(|| line.strip_prefix("recipient: ").map(|_| line))
        })
        .filter(|attr| attr.starts_with("recipient: ") || names.iter().any(|n| attr.starts_with(n)))
        .map(str::to_owned)
        .collect()
}

/// Runs the queue of one message with every DSN parameter against `postfix`;
/// every recipient is accepted.
fn deliver_dsn_message(net: &TestNet) -> RunOutput {
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "m1", &dsn_queue_file());
    let (out, _dns) = run_once(&queue, net);
    let deliveries = out.deliveries();
    for to in ["bob@dest.test", "carol@dest.test", "dave@dest.test"] {
        assert_outcome(&out, &deliveries, to, "sent", Some(250));
    }
    out
}

#[test]
fn postfix_receives_the_dsn_parameters_as_queued() {
    let net = TestNet::new();
    let postfix = holding_postfix(&net, PostfixOptions::default());
    deliver_dsn_message(&net);
    let envelope = held_envelope(&postfix);
    // Postfix gives a recipient without ORCPT one of its own (RFC 3461
    // §5.2.1 allows it); NOTIFY is absent for dave, as queued.
    assert_eq!(
        dsn_records(&envelope),
        [
            "envelope_id=QQ314159+x",
            "ret_flags=1",
            "notify_flags=6",
            "dsn_orig_rcpt=rfc822;bob+x@dest.test",
            "recipient: bob@dest.test",
            "notify_flags=1",
            "dsn_orig_rcpt=rfc822;carol@dest.test",
            "recipient: carol@dest.test",
            "dsn_orig_rcpt=rfc822;dave@dest.test",
            "recipient: dave@dest.test",
        ],
        "the DSN parameters Postfix received:\n{envelope}"
    );
    // The commands themselves, as Postfix's verbose log has them.
    let log = postfix.log();
    for command in [
        " RET=FULL ENVID=QQ314159+2Bx\n",
        ": RCPT TO:<bob@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@dest.test\n",
        ": RCPT TO:<carol@dest.test> NOTIFY=NEVER\n",
        ": RCPT TO:<dave@dest.test>\n",
    ] {
        assert!(log.contains(command), "Postfix got {command:?}:\n{log}");
    }
}

/// A server that does not advertise DSN gets no DSN parameter at all
/// (RFC 3461 §5.2): Postfix with DSN left out of its EHLO reply would
/// refuse them.
#[test]
fn a_server_without_dsn_gets_none() {
    let net = TestNet::new();
    let options = PostfixOptions {
        discard_ehlo_keywords: vec!["dsn".into()],
        ..PostfixOptions::default()
    };
    let postfix = holding_postfix(&net, options);
    deliver_dsn_message(&net);
    let envelope = held_envelope(&postfix);
    assert_eq!(
        dsn_records(&envelope),
        [
            "dsn_orig_rcpt=rfc822;bob@dest.test",
            "recipient: bob@dest.test",
            "dsn_orig_rcpt=rfc822;carol@dest.test",
            "recipient: carol@dest.test",
            "dsn_orig_rcpt=rfc822;dave@dest.test",
            "recipient: dave@dest.test",
        ],
        "only Postfix's own ORCPTs:\n{envelope}"
    );
    let log = postfix.log();
    for word in ["RET=", "ENVID=", "NOTIFY=", "ORCPT="] {
        assert!(!log.contains(word), "no {word} on the wire:\n{log}");
    }
    assert!(
        log.contains(": RCPT TO:<bob@dest.test>\n"),
        "a bare RCPT:\n{log}"
    );
}

// ---- REQUIRETLS ----------------------------------------------------------------

/// A message from [`LOCAL_SENDER`] to `to` that requires TLS, queued
/// `age` seconds ago.
fn requiretls_file(to: &str, age: u64) -> Vec<u8> {
    queue_file(to, age, "X-Postman-Requiretls: yes\n")
}

/// A message from [`LOCAL_SENDER`] to `to`, queued `age` seconds ago, with
/// `extra` envelope fields.
fn queue_file(to: &str, age: u64, extra: &str) -> Vec<u8> {
    format!(
        "X-Postman-From: <{LOCAL_SENDER}>\n\
         X-Postman-Date: {}\n\
         {extra}\
         X-Postman-To: <{to}>\n\
         \n\
         From: {LOCAL_SENDER}\nTo: {to}\nSubject: secret\nMessage-ID: <{to}>\n\nhush\n",
        unix_now() - age
    )
    .into_bytes()
}

/// The MX offers STARTTLS with `cert`; over TLS its EHLO reply has
/// `keywords` (lines `250-…` or `250 …`, the last one `250 …`).
fn tls_server(net: &TestNet, cert: &TestCert, keywords: &str) -> HostileServer {
    let script = Script::new()
        .greet("220 mx.dest.test ESMTP")
        .expect("EHLO", "250-mx.dest.test\n250-STARTTLS\n250 8BITMIME")
        .starttls(cert)
        .expect(
            "EHLO",
            &format!("250-mx.dest.test\n250-PIPELINING\n{keywords}"),
        )
        .then_polite();
    HostileServer::start(net.addr(1), vec![script])
}

/// Runs postman once over `queue` under opportunistic TLS (the default)
/// trusting `ca` (`tls.ca_file`), a queue lifetime of an hour and one
/// connection at a time.
fn run_trusting(queue: &TestQueue, net: &TestNet, ca: &TestCert) -> RunOutput {
    let dns = DnsServer::start(Zones::new().mx(DOMAIN, 10, MX).a(MX, net.ipv4(1)));
    let mut cfg = local_config(queue, net, &dns);
    cfg.max_queue_lifetime = Some(3600);
    cfg.max_connections_per_domain = 1;
    cfg.extra = format!("\n[tls]\nca_file = \"{}\"\n", ca.cert_path().display());
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    out
}

#[test]
fn requiretls_goes_over_verified_tls_to_a_server_that_advertises_it() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let server = tls_server(&net, &cert, "250-REQUIRETLS\n250 8BITMIME");
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "m1", &requiretls_file("r@dest.test", 0));
    let out = run_trusting(&queue, &net, &cert);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "sent", Some(250));
    assert!(d.tls.ends_with(" verified"), "verified TLS: {d:#?}");
    server.wait_idle(1, WAIT);
    let conns = server.connections();
    assert!(
        conns.iter().all(|c| c.tls),
        "TLS on every connection: {conns:#?}"
    );
    let mails: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert_eq!(
        mails,
        [format!("MAIL FROM:<{LOCAL_SENDER}> REQUIRETLS")],
        "REQUIRETLS on MAIL: {:?}",
        server.errors()
    );
    assert_eq!(server.body_count(), 1, "the message went");
}

/// A connection opened for ordinary mail has its certificate checked
/// too (under `verify = none`), so a REQUIRETLS message may ride on it.
#[test]
fn requiretls_goes_over_a_reused_verified_connection() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let server = tls_server(&net, &cert, "250-REQUIRETLS\n250 8BITMIME");
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "m1", &queue_file("plain@dest.test", 60, ""));
    queue.add_raw(DOMAIN, "m2", &requiretls_file("secret@dest.test", 0));
    let out = run_trusting(&queue, &net, &cert);
    let deliveries = out.deliveries();
    for to in ["plain@dest.test", "secret@dest.test"] {
        assert_outcome(&out, &deliveries, to, "sent", Some(250));
    }
    server.wait_idle(1, WAIT);
    assert_eq!(server.connection_count(), 1, "one connection for both");
    // The ordinary message first (it is older): its connection was not
    // opened for REQUIRETLS mail.
    let mails: Vec<String> = server
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("MAIL"))
        .collect();
    assert_eq!(
        mails,
        [
            format!("MAIL FROM:<{LOCAL_SENDER}>"),
            format!("MAIL FROM:<{LOCAL_SENDER}> REQUIRETLS"),
        ],
        "{:?}",
        server.errors()
    );
}

/// Verified TLS, but no REQUIRETLS: deferred with 5.7.30 and nothing sent;
/// a message whose lifetime is over bounces with 5.7.30, not 4.4.7.
#[test]
fn requiretls_to_a_server_without_it_is_deferred_then_bounced_with_5_7_30() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let server = tls_server(&net, &cert, "250 8BITMIME");
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "fresh", &requiretls_file("fresh@dest.test", 0));
    queue.add_raw(DOMAIN, "old", &requiretls_file("old@dest.test", 7200));
    let out = run_trusting(&queue, &net, &cert);
    let deliveries = out.deliveries();
    let fresh = assert_outcome(&out, &deliveries, "fresh@dest.test", "deferred", None);
    assert_eq!(fresh.dsn, "5.7.30", "{fresh:#?}");
    assert!(fresh.reply.contains("REQUIRETLS"), "{fresh:#?}");
    let old = assert_outcome(&out, &deliveries, "old@dest.test", "bounced", None);
    assert_eq!(old.dsn, "5.7.30", "{old:#?}");
    assert_eq!(server.count_commands("MAIL"), 0, "{:?}", server.commands());
    assert_eq!(server.body_count(), 0);
    let bounces = local_bounces(&queue, "alice");
    assert_eq!(bounces.len(), 1, "one bounce, for the old message");
    let dsn = parse_dsn(&bounces[0]);
    let g = dsn.recipient("old@dest.test");
    assert_eq!(field(g, "Action"), Some("failed"), "{g:#?}");
    assert_eq!(field(g, "Status"), Some("5.7.30"), "{g:#?}");
}

/// A certificate `tls.ca_file` does not vouch for: the TLS session is not
/// verified, so the message is deferred with 5.7.10 and the server never
/// sees MAIL.
#[test]
fn requiretls_over_an_unverified_certificate_is_deferred_with_5_7_10() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let other = TestCert::new(&[MX]);
    let server = tls_server(&net, &cert, "250-REQUIRETLS\n250 8BITMIME");
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "m1", &requiretls_file("r@dest.test", 0));
    let out = run_trusting(&queue, &net, &other);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "deferred", None);
    assert_eq!(d.dsn, "5.7.10", "{d:#?}");
    assert!(d.tls.ends_with(" unverified"), "{d:#?}");
    server.wait_idle(1, WAIT);
    assert!(server.connections().iter().all(|c| c.tls), "TLS was up");
    assert_eq!(server.count_commands("MAIL"), 0, "{:?}", server.commands());
    assert!(queue.state().is_queued(DOMAIN, "m1"), "still queued");
}

/// Under `tls.mode = "required"` a certificate that fails its check fails
/// the handshake, for all mail; a REQUIRETLS message is then deferred with
/// 5.7.10 too, and bounces with it once its lifetime is over.
#[test]
fn requiretls_after_a_failed_handshake_bounces_with_5_7_10() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let other = TestCert::new(&[MX]);
    let server = tls_server(&net, &cert, "250-REQUIRETLS\n250 8BITMIME");
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "old", &requiretls_file("old@dest.test", 7200));
    let dns = DnsServer::start(Zones::new().mx(DOMAIN, 10, MX).a(MX, net.ipv4(1)));
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.max_queue_lifetime = Some(3600);
    cfg.extra = format!(
        "\n[tls]\nmode = \"required\"\nca_file = \"{}\"\n",
        other.cert_path().display()
    );
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let d = assert_outcome(&out, &out.deliveries(), "old@dest.test", "bounced", None);
    assert_eq!(d.dsn, "5.7.10", "{d:#?}");
    assert!(d.reply.contains("TLS handshake failed"), "{d:#?}");
    server.wait_idle(1, WAIT);
    assert_eq!(server.count_commands("MAIL"), 0, "{:?}", server.commands());
    let bounces = local_bounces(&queue, "alice");
    assert_eq!(bounces.len(), 1, "one bounce");
    let dsn = parse_dsn(&bounces[0]);
    let g = dsn.recipient("old@dest.test");
    assert_eq!(field(g, "Status"), Some("5.7.10"), "{g:#?}");
}

/// A server without STARTTLS never gets a REQUIRETLS message in plaintext.
#[test]
fn requiretls_never_goes_in_plaintext() {
    let net = TestNet::new();
    let cert = TestCert::new(&[MX]);
    let server = HostileServer::polite(net.addr(1));
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "m1", &requiretls_file("r@dest.test", 0));
    let out = run_trusting(&queue, &net, &cert);
    let d = assert_outcome(&out, &out.deliveries(), "r@dest.test", "deferred", None);
    assert_eq!(d.dsn, "5.7.10", "{d:#?}");
    server.wait_idle(1, WAIT);
    assert_eq!(server.count_commands("MAIL"), 0, "{:?}", server.commands());
    assert!(queue.state().is_queued(DOMAIN, "m1"), "still queued");
}
