//! Self-tests of the submission relay the routing tests deliver to:
//! Postfix's smtpd with Cyrus SASL (sasldb), STARTTLS required, relaying
//! for authenticated clients only, plus an implicit-TLS listener. A
//! scripted client (Python) drives it, so these prove the peer without
//! postman: the replies are Postfix's own, and its log says who sent what.

use std::net::IpAddr;
use std::time::Duration;

use postman_integration::net::free_port;
use postman_integration::postfix::{SaslLogin, Session};
use postman_integration::smtp_client::{ClientPlan, Step, Transcript};
use postman_integration::{Postfix, PostfixOptions, SaslUsers, TestCert, TestNet};

const RELAY: &str = "relay.test";
const DOMAIN: &str = "dest.test";
const USER: &str = "relay-user";
const PASSWORD: &str = "correct horse battery";
const WAIT: Duration = Duration::from_secs(10);

/// A relay on the test's first address for `users`, trusting nobody by
/// address.
fn relay(net: &TestNet, cert: &TestCert, users: SaslUsers, implicit_tls: bool) -> Postfix {
    Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            tls: Some((cert.cert_path().into(), cert.key_path().into())),
            sasl: Some(users),
            implicit_tls_port: implicit_tls.then(free_port),
            ..PostfixOptions::default()
        },
    )
}

fn client(postfix: &Postfix, cert: &TestCert, steps: Vec<Step>) -> ClientPlan {
    ClientPlan {
        steps,
        ..ClientPlan::new(postfix.addr(), cert.cert_path().into(), RELAY)
    }
}

/// MAIL, RCPT, DATA and QUIT for one message to `rcpt`.
fn message(rcpt: &str) -> Vec<Step> {
    vec![
        Step::command("MAIL FROM:<sender@src.test>"),
        Step::command(&format!("RCPT TO:<{rcpt}>")),
        Step::Data("Subject: relayed\r\n\r\nbody\r\n".into()),
        Step::Quit,
    ]
}

fn ehlo() -> Step {
    Step::Ehlo("client.test".into())
}

fn auth_line(t: &Transcript, n: usize) -> Option<&str> {
    t.lines(n)
        .iter()
        .map(|l| &l[4..])
        .find(|l| l.starts_with("AUTH"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

fn login(method: &str, username: &str) -> Option<SaslLogin> {
    Some(SaslLogin {
        method: method.into(),
        username: username.into(),
    })
}

/// The one session a test's client had.
fn only_session(postfix: &Postfix) -> Session {
    let sessions = postfix.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    sessions.into_iter().next().expect("one session")
}

/// STARTTLS comes first: before it EHLO offers no AUTH, and AUTH and MAIL
/// are refused with `530 5.7.0 Must issue a STARTTLS command first`; after it, AUTH PLAIN with the right password is `235`, the
/// message relays, and the log names the login (`sasl_username=`, the
/// plain user name: no realm added).
#[test]
fn starttls_then_auth_plain_relays_and_the_log_names_the_user() {
    let net = TestNet::new();
    let cert = TestCert::new(&[RELAY]);
    let postfix = relay(&net, &cert, SaslUsers::new(&[(USER, PASSWORD)]), false);
    let mut steps = vec![
        ehlo(),
        Step::auth("PLAIN", USER, PASSWORD),
        Step::command("MAIL FROM:<sender@src.test>"),
        Step::StartTls,
        ehlo(),
        Step::auth("PLAIN", USER, PASSWORD),
    ];
    steps.extend(message(&format!("bob@{DOMAIN}")));
    let t = client(&postfix, &cert, steps).run();
    assert_eq!(auth_line(&t, 0), None, "no AUTH before TLS: {t:#?}");
    assert!(t.lines(0).iter().any(|l| l == "250-STARTTLS"), "{t:#?}");
    assert_eq!(
        t.last(1),
        "530 5.7.0 Must issue a STARTTLS command first",
        "{t:#?}"
    );
    assert_eq!(
        t.last(2),
        "530 5.7.0 Must issue a STARTTLS command first",
        "{t:#?}"
    );
    assert_eq!(t.last(3), "220 2.0.0 Ready to start TLS", "{t:#?}");
    assert_eq!(
        auth_line(&t, 4),
        Some("AUTH PLAIN LOGIN SCRAM-SHA-256"),
        "{t:#?}"
    );
    assert_eq!(t.last(5), "235 2.7.0 Authentication successful", "{t:#?}");
    assert!(t.last(6).starts_with("250 2.1.0"), "{t:#?}");
    assert!(t.last(7).starts_with("250 2.1.5"), "{t:#?}");
    assert!(t.last(8).starts_with("250 2.0.0 Ok: queued as"), "{t:#?}");

    assert_eq!(
        postfix.wait_for_message_count(1, WAIT),
        1,
        "{}",
        postfix.log()
    );
    let accepted = postfix.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0].client, ip("127.0.0.1"));
    assert_eq!(accepted[0].sasl, login("PLAIN", USER));
    let delivered = String::from_utf8_lossy(&postfix.messages()[0]).into_owned();
    assert!(
        delivered.contains("(Authenticated sender: relay-user)"),
        "{delivered}"
    );
    let session = only_session(&postfix);
    let plaintext = session.plaintext_commands();
    assert_eq!(plaintext.len(), 4, "{session:#?}");
    assert_eq!(plaintext[0], "EHLO client.test");
    // Postfix's verbose log holds AUTH's argument: the password, in base64.
    assert!(plaintext[1].starts_with("AUTH PLAIN "), "{session:#?}");
    assert_eq!(plaintext[2..], ["MAIL FROM:<sender@src.test>", "STARTTLS"]);
    assert!(session.tls.is_some(), "{session:#?}");
}

/// A wrong password is `535 5.7.8`, logged as a SASL failure; a client
/// that does not authenticate (here from 127.0.0.2) may say MAIL but every
/// RCPT is `554 5.7.1 … Access denied`, loopback or not. A login with its
/// own realm (`ses@provider.test`) works as given.
#[test]
fn wrong_password_is_535_and_no_auth_is_554_from_any_address() {
    let net = TestNet::new();
    let cert = TestCert::new(&[RELAY]);
    let users = SaslUsers::new(&[(USER, PASSWORD), ("ses@provider.test", "other")]);
    let postfix = relay(&net, &cert, users, false);
    let rcpt = format!("carol@{DOMAIN}");

    let mut steps = vec![
        ehlo(),
        Step::StartTls,
        ehlo(),
        Step::auth("PLAIN", USER, "wrong"),
    ];
    steps.extend(message(&rcpt));
    let wrong = client(&postfix, &cert, steps).run();
    assert_eq!(
        wrong.last(3),
        "535 5.7.8 Error: authentication failed: authentication failure",
        "{wrong:#?}"
    );
    assert!(wrong.last(4).starts_with("250 "), "{wrong:#?}");
    let denied = format!("554 5.7.1 <{rcpt}>: Recipient address rejected: Access denied");
    assert_eq!(wrong.last(5), denied, "{wrong:#?}");

    let mut steps = vec![ehlo(), Step::StartTls, ehlo()];
    steps.extend(message(&rcpt));
    let anonymous = ClientPlan {
        source: Some(ip("127.0.0.2")),
        ..client(&postfix, &cert, steps)
    }
    .run();
    assert_eq!(anonymous.last(4), denied, "{anonymous:#?}");

    let mut steps = vec![
        ehlo(),
        Step::StartTls,
        ehlo(),
        Step::auth("LOGIN", "ses@provider.test", "other"),
    ];
    steps.extend(message(&rcpt));
    let realm = client(&postfix, &cert, steps).run();
    assert_eq!(
        realm.last(3),
        "235 2.7.0 Authentication successful",
        "{realm:#?}"
    );

    assert_eq!(
        postfix.wait_for_message_count(1, WAIT),
        1,
        "{}",
        postfix.log()
    );
    let failures = postfix.auth_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].client, ip("127.0.0.1"));
    assert_eq!(failures[0].method, "PLAIN");
    assert_eq!(failures[0].reason, "authentication failure");
    assert_eq!(failures[0].username.as_deref(), Some(USER));
    let rejections = postfix.rejections();
    let refused: Vec<(IpAddr, &str, &str)> = rejections
        .iter()
        .map(|r| (r.client, r.command.as_str(), r.reply.as_str()))
        .collect();
    assert_eq!(
        refused,
        vec![
            (ip("127.0.0.1"), "RCPT", denied.as_str()),
            (ip("127.0.0.2"), "RCPT", denied.as_str()),
        ]
    );
    let accepted = postfix.accepted();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0].sasl, login("LOGIN", "ses@provider.test"));
}

/// The implicit-TLS listener (RFC 8314) does TLS before the greeting;
/// a relay offering only LOGIN says so, and LOGIN works there. The
/// certificate names the relay's address too (an IP SAN), so a client
/// that dials `[ip]:port` can verify it.
#[test]
fn implicit_tls_listener_greets_inside_tls_and_takes_login() {
    let net = TestNet::new();
    let address = net.ip(1).to_string();
    let cert = TestCert::new(&[RELAY, &address]);
    let users = SaslUsers::new(&[(USER, PASSWORD)]).mechanisms(&["LOGIN"]);
    let postfix = relay(&net, &cert, users, true);
    let smtps = postfix
        .implicit_tls_addr()
        .expect("an implicit-TLS listener");
    let mut steps = vec![ehlo(), Step::auth("LOGIN", USER, PASSWORD)];
    steps.extend(message(&format!("dave@{DOMAIN}")));
    let t = ClientPlan {
        connect: smtps,
        implicit_tls: true,
        server_name: address.clone(),
        ..client(&postfix, &cert, steps)
    }
    .run();
    assert_eq!(
        t.greeting.as_deref(),
        Some(&["220 postfix.test ESMTP Postfix".to_owned()][..]),
        "{t:#?}"
    );
    assert_eq!(auth_line(&t, 0), Some("AUTH LOGIN"), "{t:#?}");
    assert!(!t.lines(0).iter().any(|l| l.contains("STARTTLS")), "{t:#?}");
    assert_eq!(t.last(1), "235 2.7.0 Authentication successful", "{t:#?}");
    assert_eq!(
        postfix.wait_for_message_count(1, WAIT),
        1,
        "{}",
        postfix.log()
    );
    assert_eq!(postfix.accepted()[0].sasl, login("LOGIN", USER));
    let session = only_session(&postfix);
    assert_eq!(session.before_tls, 0, "{session:#?}");
    assert!(session.tls.is_some(), "{session:#?}");
}

/// Cyrus' SCRAM-SHA-256 plugin works from the sasldb's stored password:
/// a relay offering only it refuses PLAIN (`535 … no mechanism
/// available`, not 504), refuses a wrong proof with
/// `535`, takes the right one (the server's final message comes as a
/// `334` challenge answered with an empty line, then `235`).
#[test]
fn scram_sha_256_only_relay_takes_scram() {
    let net = TestNet::new();
    let cert = TestCert::new(&[RELAY]);
    let users = SaslUsers::new(&[(USER, PASSWORD)]).mechanisms(&["SCRAM-SHA-256"]);
    let postfix = relay(&net, &cert, users, false);
    let mut steps = vec![
        ehlo(),
        Step::StartTls,
        ehlo(),
        Step::auth("PLAIN", USER, PASSWORD),
        Step::auth("SCRAM-SHA-256", USER, "wrong"),
        Step::auth("SCRAM-SHA-256", USER, PASSWORD),
    ];
    steps.extend(message(&format!("erin@{DOMAIN}")));
    let t = client(&postfix, &cert, steps).run();
    assert_eq!(auth_line(&t, 2), Some("AUTH SCRAM-SHA-256"), "{t:#?}");
    assert_eq!(
        t.last(3),
        "535 5.7.8 Error: authentication failed: no mechanism available",
        "{t:#?}"
    );
    assert!(t.last(4).starts_with("535 5.7.8 "), "{t:#?}");
    let good = &t.steps[5].replies;
    assert_eq!(good.len(), 3, "334, 334 (server final), 235: {t:#?}");
    assert_eq!(t.last(5), "235 2.7.0 Authentication successful", "{t:#?}");
    assert_eq!(
        postfix.wait_for_message_count(1, WAIT),
        1,
        "{}",
        postfix.log()
    );
    assert_eq!(postfix.accepted()[0].sasl, login("SCRAM-SHA-256", USER));
}

/// Clients bound to 127.0.0.2 and 127.0.0.3 are logged with those
/// addresses, per connection and per accepted message.
#[test]
fn source_addresses_are_logged_per_connection_and_message() {
    let net = TestNet::new();
    let cert = TestCert::new(&[RELAY]);
    let postfix = relay(&net, &cert, SaslUsers::new(&[(USER, PASSWORD)]), false);
    for source in ["127.0.0.2", "127.0.0.3", "127.0.0.2"] {
        let mut steps = vec![
            ehlo(),
            Step::StartTls,
            ehlo(),
            Step::auth("PLAIN", USER, PASSWORD),
        ];
        steps.extend(message(&format!("frank@{DOMAIN}")));
        let t = ClientPlan {
            source: Some(ip(source)),
            ..client(&postfix, &cert, steps)
        }
        .run();
        assert_eq!(t.last(3), "235 2.7.0 Authentication successful", "{t:#?}");
    }
    assert!(
        postfix.wait_until(WAIT, |p| p.message_count() == 3),
        "{}",
        postfix.log()
    );
    let clients: Vec<IpAddr> = postfix.accepted().iter().map(|a| a.client).collect();
    assert_eq!(clients, [ip("127.0.0.2"), ip("127.0.0.3"), ip("127.0.0.2")]);
    let by_client: Vec<(IpAddr, usize)> = postfix.connections_by_client().into_iter().collect();
    assert_eq!(by_client, [(ip("127.0.0.2"), 2), (ip("127.0.0.3"), 1)]);
}

/// For a route that explicitly allows it: AUTH offered and taken without
/// TLS (`SaslUsers::plaintext`, no certificate).
#[test]
fn plaintext_relay_offers_auth_without_tls() {
    let net = TestNet::new();
    let users = SaslUsers {
        plaintext: true,
        ..SaslUsers::new(&[(USER, PASSWORD)])
    };
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &[DOMAIN],
        &PostfixOptions {
            sasl: Some(users),
            ..PostfixOptions::default()
        },
    );
    let mut steps = vec![ehlo(), Step::auth("PLAIN", USER, PASSWORD)];
    steps.extend(message(&format!("gina@{DOMAIN}")));
    let t = ClientPlan {
        connect: postfix.addr(),
        source: None,
        implicit_tls: false,
        ca_file: None,
        server_name: RELAY.into(),
        steps,
    }
    .run();
    assert_eq!(
        auth_line(&t, 0),
        Some("AUTH PLAIN LOGIN SCRAM-SHA-256"),
        "{t:#?}"
    );
    assert!(!t.lines(0).iter().any(|l| l.contains("STARTTLS")), "{t:#?}");
    assert_eq!(t.last(1), "235 2.7.0 Authentication successful", "{t:#?}");
    assert_eq!(
        postfix.wait_for_message_count(1, WAIT),
        1,
        "{}",
        postfix.log()
    );
    assert_eq!(postfix.accepted()[0].sasl, login("PLAIN", USER));
    assert!(only_session(&postfix).tls.is_none());
}

/// A sasldb smtpd cannot read makes every AUTH a `454 4.7.0`: Postfix's
/// temporary failure, which a client must not treat as bad credentials.
#[test]
fn an_unreadable_sasldb_answers_454() {
    let net = TestNet::new();
    let cert = TestCert::new(&[RELAY]);
    let users = SaslUsers {
        broken_db: true,
        ..SaslUsers::new(&[(USER, PASSWORD)])
    };
    let postfix = relay(&net, &cert, users, false);
    let mut steps = vec![
        ehlo(),
        Step::StartTls,
        ehlo(),
        Step::auth("PLAIN", USER, PASSWORD),
    ];
    steps.extend(message(&format!("hank@{DOMAIN}")));
    let t = client(&postfix, &cert, steps).run();
    assert_eq!(
        t.last(3),
        "454 4.7.0 Temporary authentication failure: generic failure",
        "{t:#?}"
    );
    assert!(t.last(5).starts_with("554 5.7.1 "), "{t:#?}");
    let failures = postfix.auth_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].reason, "generic failure");
}
