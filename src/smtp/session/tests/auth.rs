//! SMTP AUTH (RFC 4954) between the greeting phase and the first
//! transaction, and implicit TLS (RFC 8314 §3.3) as the session's start:
//! each mechanism's dialogue, every way AUTH fails (always transient, of
//! the host, at [`Stage::Auth`]), credentials never sent without TLS unless
//! allowed, and never in any text the session gives.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};

use super::*;
use crate::secret::{Credentials, Secret};
use crate::smtp::auth::Nonce;

const USER: &str = "relay-user";
const PASSWORD: &str = "Tr0ub4dor&3";

fn auth(user: &str, password: &str, allow_plaintext: bool) -> AuthConfig {
    AuthConfig {
        credentials: Credentials {
            user: user.into(),
            password: Secret::new(password.into()),
        },
        allow_plaintext,
        nonce: Nonce::new("fyko+d2lbbFgONRv9qkxdawL").expect("a printable nonce"),
    }
}

fn with_auth(auth: AuthConfig) -> SessionConfig {
    SessionConfig {
        auth: Some(auth),
        ..config()
    }
}

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

/// Greeting, EHLO, STARTTLS and the handshake, then the second EHLO
/// answered with `ehlo`.
fn through_tls(d: &mut Dialogue, ehlo: &str) {
    d.reply("220 relay.test ESMTP");
    d.expect_command("EHLO client.test");
    d.reply("250-relay.test\n250 STARTTLS");
    d.expect_command("STARTTLS");
    d.reply("220 2.0.0 go ahead");
    d.expect_event(&Event::StartTls);
    d.session.tls_established(tls_info(), d.now);
    d.expect_command("EHLO client.test");
    d.reply(ehlo);
}

/// After `Ready`, one message goes through: AUTH left the session usable.
fn one_message(d: &mut Dialogue) {
    d.start("s@a.test", &["r@b.test"]);
    d.expect_command("MAIL FROM:<s@a.test>");
    d.reply("250 ok");
    d.expect_command("RCPT TO:<r@b.test>");
    d.reply("250 ok");
    d.expect_command("DATA");
    d.reply("354 go");
    d.session.push_body(b"hi\r\n", d.now);
    d.session.finish_body(d.now);
    d.expect_output("hi\r\n.\r\n");
    d.reply("250 queued");
    let done = d.expect_done();
    assert!(done.all_delivered(), "{done:?} after {}", d.transcript());
    d.expect_ready();
}

#[test]
fn plain_after_starttls() {
    let mut d = Dialogue::with_config(with_auth(auth(USER, PASSWORD, false)));
    through_tls(&mut d, "250-relay.test\n250-AUTH LOGIN PLAIN\n250 8BITMIME");
    let initial = b64(&format!("\0{USER}\0{PASSWORD}"));
    d.expect_command(&format!("AUTH PLAIN {initial}"));
    d.expect_no_event();
    assert_eq!(d.session.describe(), "sending AUTH", "state");
    assert_eq!(
        d.session.poll_timeout(),
        Some(d.now + Timeouts::default().ehlo),
        "AUTH has the EHLO deadline"
    );
    d.reply("235 2.7.0 Authentication successful");
    d.expect_ready();
    d.expect_no_output();
    one_message(&mut d);
}

#[test]
fn login_answers_two_prompts() {
    let mut d = Dialogue::with_config(with_auth(auth(USER, PASSWORD, false)));
    through_tls(&mut d, "250-relay.test\n250 AUTH=LOGIN");
    d.expect_command("AUTH LOGIN");
    d.reply("334 VXNlcm5hbWU6");
    d.expect_command(&b64(USER));
    // The prompt's words do not matter.
    d.reply(&format!("334 {}", b64("Passwort:")));
    d.expect_command(&b64(PASSWORD));
    d.reply("235 2.7.0 ok");
    d.expect_ready();
    one_message(&mut d);
}

/// The server's side of SCRAM-SHA-256 (RFC 5802 §3), computed here from
/// the password: the proof the client must send for `auth_message`, and
/// the signature the server answers with. Both base64.
fn scram_server(
    password: &str,
    salt: &[u8],
    iterations: u32,
    auth_message: &str,
) -> (String, String) {
    let mut salted = [0u8; 32];
    let iterations = NonZeroU32::new(iterations).expect("a positive count");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let salted = hmac::Key::new(hmac::HMAC_SHA256, &salted);
    let client_key = hmac::sign(&salted, b"Client Key");
    let stored_key = digest::digest(&digest::SHA256, client_key.as_ref());
    let stored_key = hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref());
    let client_signature = hmac::sign(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key
        .as_ref()
        .iter()
        .zip(client_signature.as_ref())
        .map(|(k, s)| k ^ s)
        .collect();
    let server_key = hmac::sign(&salted, b"Server Key");
    let server_key = hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref());
    let server_signature = hmac::sign(&server_key, auth_message.as_bytes());
    (
        STANDARD.encode(proof),
        STANDARD.encode(server_signature.as_ref()),
    )
}

/// The test's server side reproduces RFC 7677 §3, so the dialogue below
/// checks the session against the RFC, not against itself.
#[test]
fn the_test_scram_server_matches_rfc_7677() {
    let auth_message = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
        r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
        c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let salt = STANDARD
        .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        .expect("the RFC's salt");
    let (proof, signature) = scram_server("pencil", &salt, 4096, auth_message);
    assert_eq!(proof, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
    assert_eq!(signature, "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

/// The whole SCRAM-SHA-256 exchange, the server's final message in a 334
/// (as Cyrus SASL behind Postfix sends it), its signature checked.
#[test]
fn scram_sha_256_full_exchange() {
    for (name, server_final_in_235) in [("in a 334", false), ("with the 235", true)] {
        let config = with_auth(auth("user", "pencil", false));
        let mut d = Dialogue::with_config(config);
        through_tls(&mut d, "250-relay.test\n250 AUTH PLAIN LOGIN SCRAM-SHA-256");
        let client_first_bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL";
        d.expect_command(&format!(
            "AUTH SCRAM-SHA-256 {}",
            b64(&format!("n,,{client_first_bare}"))
        ));
        let salt = b"salt of this test";
        let server_first = format!(
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s={},i=4096",
            STANDARD.encode(salt)
        );
        d.reply(&format!("334 {}", b64(&server_first)));
        let without_proof = "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let (proof, signature) = scram_server("pencil", salt, 4096, &auth_message);
        d.expect_command(&b64(&format!("{without_proof},p={proof}")));
        if server_final_in_235 {
            d.reply(&format!("235 2.7.0 {}", b64(&format!("v={signature}"))));
        } else {
            d.reply(&format!("334 {}", b64(&format!("v={signature}"))));
            d.expect_command("");
            d.expect_no_event();
            d.reply("235 2.7.0 Authentication successful");
        }
        d.expect_ready();
        assert_eq!(
            d.session.describe(),
            "waiting for the next message",
            "{name}"
        );
        one_message(&mut d);
    }
}

/// A server that does not know the password, or will not prove it, is not
/// believed, whatever it says next.
#[test]
fn scram_server_must_prove_itself() {
    let begin = || {
        let mut d = Dialogue::with_config(with_auth(auth("user", "pencil", false)));
        through_tls(&mut d, "250-relay.test\n250 AUTH SCRAM-SHA-256");
        d.take_output();
        let server_first = "r=fyko+d2lbbFgONRv9qkxdawLxyz,s=c2FsdA==,i=4096";
        d.reply(&format!("334 {}", b64(server_first)));
        d.take_output();
        d
    };
    let mut d = begin();
    let wrong = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
    d.reply(&format!("334 {}", b64(wrong)));
    d.expect_command("*");
    assert_eq!(d.session.describe(), "cancelling AUTH", "state after *");
    d.reply("501 5.7.0 Authentication aborted");
    d.expect_command("QUIT");
    let outcome = d.expect_closed().expect("an outcome");
    assert_eq!(
        outcome.detail,
        "failed SASL SCRAM-SHA-256 authentication: server signature mismatch"
    );
    assert_eq!(outcome_summary(&outcome), "Transient Destination Auth -");

    // 235 straight after the client's proof: no signature, no belief.
    let mut d = begin();
    d.reply("235 2.7.0 ok");
    d.expect_command("QUIT");
    let outcome = d.expect_closed().expect("an outcome");
    assert_eq!(
        outcome.detail,
        "failed SASL SCRAM-SHA-256 authentication: the server accepted the authentication \
         without proving it knows the password"
    );
    assert_eq!(outcome_summary(&outcome), "Transient Destination Auth -");
}

struct Row {
    name: &'static str,
    scenario: Scenario,
    writes: &'static str,
    events: Vec<String>,
    /// The outcome's detail and status, `""` and `None` for `Closed(None)`.
    detail: &'static str,
    status: Option<&'static str>,
}

fn check(rows: Vec<Row>) {
    for row in rows {
        let got = run(&row.scenario);
        assert_eq!(got.writes, row.writes, "client writes for {}", row.name);
        assert_eq!(got.events, row.events, "events for {}", row.name);
        let detail = got.closed.as_ref().map_or("", |o| o.detail.as_str());
        assert_eq!(detail, row.detail, "detail for {}", row.name);
        let status = got
            .closed
            .as_ref()
            .and_then(|o| o.status)
            .map(|s| s.to_string());
        assert_eq!(status.as_deref(), row.status, "status for {}", row.name);
        if let Some(outcome) = got.closed.as_ref().filter(|o| o.stage == Stage::Auth) {
            assert!(outcome.is_transient(), "{} is transient", row.name);
        }
    }
}

fn ev(events: &[&str]) -> Vec<String> {
    events.iter().map(|e| (*e).to_owned()).collect()
}

/// A relay offering STARTTLS, and `mechanisms` after it.
fn relay(mechanisms: &'static str) -> Scenario {
    let after: &'static str =
        Box::leak(format!("250-relay.test\n250 {mechanisms}").into_boxed_str());
    Scenario::new(false)
        .reply("EHLO", 1, "250-relay.test\n250 STARTTLS")
        .reply("EHLO", 2, after)
        .auth(auth(USER, PASSWORD, false))
}

const TLS_AUTH_OK: &[&str] = &[
    "StartTls",
    "Ready",
    "Done[ok 250, ok 250]",
    "Ready",
    "Closed",
];

/// Every refusal of AUTH defers: a 5xx too, never a bounce (Postfix's
/// `smtp_sasl_auth_soft_bounce`), with the status's class made 4.
#[test]
fn refusals_are_transient_failures_of_the_host() {
    let refused = |code: &str| {
        vec![
            "StartTls".to_owned(),
            format!("Closed(Transient Destination Auth {code})"),
        ]
    };
    check(vec![
        Row {
            name: "accepted",
            scenario: relay("AUTH PLAIN").reply("AUTH", 1, "235 2.7.0 ok"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH MAIL RCPT RCPT DATA . QUIT",
            events: ev(TLS_AUTH_OK),
            detail: "",
            status: None,
        },
        Row {
            name: "535 bad credentials",
            scenario: relay("AUTH PLAIN").reply(
                "AUTH",
                1,
                "535 5.7.8 Error: authentication failed: authentication failure",
            ),
            writes: "EHLO STARTTLS <tls> EHLO AUTH QUIT",
            events: refused("535"),
            detail: "said: 535 5.7.8 Error: authentication failed: authentication failure \
                     (in reply to AUTH command)",
            status: Some("4.7.8"),
        },
        Row {
            name: "454 temporary failure",
            scenario: relay("AUTH PLAIN").reply(
                "AUTH",
                1,
                "454 4.7.0 Temporary authentication failure",
            ),
            writes: "EHLO STARTTLS <tls> EHLO AUTH QUIT",
            events: refused("454"),
            detail: "said: 454 4.7.0 Temporary authentication failure (in reply to AUTH command)",
            status: Some("4.7.0"),
        },
        Row {
            name: "534 mechanism too weak",
            scenario: relay("AUTH PLAIN").reply("AUTH", 1, "534 5.7.9 too weak"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH QUIT",
            events: refused("534"),
            detail: "said: 534 5.7.9 too weak (in reply to AUTH command)",
            status: Some("4.7.9"),
        },
        Row {
            name: "538 encryption required",
            scenario: relay("AUTH PLAIN").reply("AUTH", 1, "538 5.7.11 Encryption required"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH QUIT",
            events: refused("538"),
            detail: "said: 538 5.7.11 Encryption required (in reply to AUTH command)",
            status: Some("4.7.11"),
        },
        Row {
            name: "504 without an enhanced code",
            scenario: relay("AUTH PLAIN").reply("AUTH", 1, "504 Unrecognized authentication type"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH QUIT",
            events: refused("504"),
            detail: "said: 504 Unrecognized authentication type (in reply to AUTH command)",
            status: Some("4.7.0"),
        },
        Row {
            name: "421: no QUIT",
            scenario: relay("AUTH PLAIN").reply("AUTH", 1, "421 4.3.2 shutting down"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH",
            events: refused("421"),
            detail: "said: 421 4.3.2 shutting down (in reply to AUTH command)",
            status: Some("4.3.2"),
        },
        Row {
            name: "LOGIN refused after the password",
            scenario: relay("AUTH LOGIN")
                .reply("AUTH", 1, "334 VXNlcm5hbWU6")
                .reply("?", 1, "334 UGFzc3dvcmQ6")
                .reply("?", 2, "535 5.7.8 no"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH ? ? QUIT",
            events: refused("535"),
            detail: "said: 535 5.7.8 no (in reply to AUTH command)",
            status: Some("4.7.8"),
        },
    ]);
}

/// A mechanism that cannot go on sends `*`, waits for the answer, and the
/// session ends with the mechanism's reason.
#[test]
fn mechanisms_give_up_cleanly() {
    let cancelled = ev(&["StartTls", "Closed(Transient Destination Auth -)"]);
    check(vec![
        Row {
            name: "a challenge that is not base64",
            scenario: relay("AUTH SCRAM-SHA-256")
                .reply("AUTH", 1, "334 r=not-base64!")
                .reply("?", 1, "501 5.7.0 Authentication aborted"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH ? QUIT",
            events: cancelled.clone(),
            detail: "failed SASL SCRAM-SHA-256 authentication: the server's challenge \
                     \"r=not-base64!\" is not base64",
            status: Some("4.7.0"),
        },
        Row {
            name: "334 for ever: LOGIN answers two, then cancels",
            scenario: relay("AUTH LOGIN")
                .reply("AUTH", 1, "334 VXNlcm5hbWU6")
                .reply("?", 1, "334 UGFzc3dvcmQ6")
                .reply("?", 2, "334 UGFzc3dvcmQ6")
                .reply("?", 3, "334 UGFzc3dvcmQ6"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH ? ? ? QUIT",
            events: cancelled.clone(),
            detail: "failed SASL LOGIN authentication: the server sent more challenges than \
                     LOGIN has steps",
            status: Some("4.7.0"),
        },
        Row {
            name: "a challenge to PLAIN's initial response",
            scenario: relay("AUTH PLAIN")
                .reply("AUTH", 1, "334 ")
                .reply("?", 1, "334 ")
                .reply("?", 2, "501 5.5.2 cancelled"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH ? ? QUIT",
            events: cancelled.clone(),
            detail: "failed SASL PLAIN authentication: the server sent more challenges than \
                     PLAIN has steps",
            status: Some("4.7.0"),
        },
        Row {
            name: "421 to the cancel: no QUIT",
            scenario: relay("AUTH SCRAM-SHA-256")
                .reply("AUTH", 1, "334 ***")
                .reply("?", 1, "421 4.3.2 bye"),
            writes: "EHLO STARTTLS <tls> EHLO AUTH ?",
            events: cancelled,
            detail: "failed SASL SCRAM-SHA-256 authentication: the server's challenge \"***\" \
                     is not base64",
            status: Some("4.7.0"),
        },
    ]);
}

/// Credentials are never sent without TLS unless the route allows it; a
/// server offering nothing usable is a failure of the host, before any
/// message (with credentials configured, mail sent unauthenticated would
/// only be refused as relaying).
#[test]
fn when_auth_is_not_sent() {
    let plaintext = Scenario::new(false).ehlo("250 AUTH PLAIN LOGIN");
    let no_tls = "was reached without TLS, and AUTH needs TLS: the credentials were not sent";
    let failed = ev(&["Closed(Transient Destination Auth -)"]);
    check(vec![
        Row {
            name: "no STARTTLS offered",
            scenario: plaintext.clone().auth(auth(USER, PASSWORD, false)),
            writes: "EHLO QUIT",
            events: failed.clone(),
            detail: no_tls,
            status: Some("4.7.10"),
        },
        Row {
            name: "STARTTLS refused",
            scenario: Scenario::new(false)
                .ehlo("250-STARTTLS\n250 AUTH PLAIN")
                .reply("STARTTLS", 1, "454 4.7.0 TLS not available")
                .auth(auth(USER, PASSWORD, false)),
            writes: "EHLO STARTTLS QUIT",
            events: failed.clone(),
            detail: no_tls,
            status: Some("4.7.10"),
        },
        Row {
            name: "TLS disabled for the destination",
            scenario: Scenario::new(false)
                .ehlo("250-STARTTLS\n250 AUTH PLAIN")
                .tls(TlsMode::Disabled)
                .auth(auth(USER, PASSWORD, false)),
            writes: "EHLO QUIT",
            events: failed.clone(),
            detail: no_tls,
            status: Some("4.7.10"),
        },
        Row {
            name: "plaintext allowed",
            scenario: plaintext.clone().auth(auth(USER, PASSWORD, true)).reply(
                "AUTH",
                1,
                "235 2.7.0 ok",
            ),
            writes: "EHLO AUTH MAIL RCPT RCPT DATA . QUIT",
            events: ev(&["Ready", "Done[ok 250, ok 250]", "Ready", "Closed"]),
            detail: "",
            status: None,
        },
        Row {
            name: "no credentials: no AUTH, even when offered",
            scenario: plaintext,
            writes: "EHLO MAIL RCPT RCPT DATA . QUIT",
            events: ev(&["Ready", "Done[ok 250, ok 250]", "Ready", "Closed"]),
            detail: "",
            status: None,
        },
        Row {
            name: "AUTH not offered",
            scenario: relay("8BITMIME"),
            writes: "EHLO STARTTLS <tls> EHLO QUIT",
            events: ev(&["StartTls", "Closed(Transient Destination Auth -)"]),
            detail: "does not offer AUTH, and this route has credentials to send",
            status: Some("4.7.0"),
        },
        Row {
            name: "no mechanism postman knows",
            scenario: relay("AUTH CRAM-MD5 XOAUTH2"),
            writes: "EHLO STARTTLS <tls> EHLO QUIT",
            events: ev(&["StartTls", "Closed(Transient Destination Auth -)"]),
            detail: "offers no AUTH mechanism postman uses (it offers CRAM-MD5 XOAUTH2; \
                     postman uses SCRAM-SHA-256 PLAIN LOGIN)",
            status: Some("4.7.0"),
        },
        Row {
            name: "SCRAM only, and a password SCRAM cannot prepare",
            scenario: relay("AUTH SCRAM-SHA-256").auth(auth(USER, "p\u{e4}sse", false)),
            writes: "EHLO STARTTLS <tls> EHLO QUIT",
            events: ev(&["StartTls", "Closed(Transient Destination Auth -)"]),
            detail: "offers no AUTH mechanism postman uses (it offers SCRAM-SHA-256; postman \
                     uses SCRAM-SHA-256 PLAIN LOGIN; SCRAM needs a user name and password of \
                     printable ASCII)",
            status: Some("4.7.0"),
        },
        Row {
            name: "HELO only, over TLS",
            scenario: Scenario::new(false)
                .reply("EHLO", 1, "250-relay.test\n250 STARTTLS")
                .reply("EHLO", 2, "502 5.5.1 no")
                .auth(auth(USER, PASSWORD, false)),
            writes: "EHLO STARTTLS <tls> EHLO HELO QUIT",
            events: ev(&["StartTls", "Closed(Transient Destination Auth -)"]),
            detail: "does not offer AUTH, and this route has credentials to send",
            status: Some("4.7.0"),
        },
        Row {
            name: "TLS required and not offered: that failure first",
            scenario: plaintext_required(),
            writes: "EHLO QUIT",
            events: ev(&["Closed(Transient Destination Ehlo -)"]),
            detail: "does not offer STARTTLS, but TLS is required for this destination",
            status: None,
        },
    ]);
}

fn plaintext_required() -> Scenario {
    Scenario::new(false)
        .ehlo("250 AUTH PLAIN")
        .tls(TlsMode::Required)
        .auth(auth(USER, PASSWORD, true))
}

/// The session breaking down while AUTH waits: like any other stage.
#[test]
fn breakdowns_while_authenticating() {
    let failed = ev(&["StartTls", "Closed(Transient Destination Auth -)"]);
    check(vec![
        Row {
            name: "EOF",
            scenario: relay("AUTH PLAIN").on("AUTH", 1, Act::Eof),
            writes: "EHLO STARTTLS <tls> EHLO AUTH",
            events: failed.clone(),
            detail: "lost connection while sending AUTH",
            status: None,
        },
        Row {
            name: "silence",
            scenario: relay("AUTH PLAIN").on("AUTH", 1, Act::Silent),
            writes: "EHLO STARTTLS <tls> EHLO AUTH",
            events: failed.clone(),
            detail: "conversation timed out while sending AUTH",
            status: None,
        },
        Row {
            name: "silence after the cancel",
            scenario: relay("AUTH LOGIN")
                .reply("AUTH", 1, "334 ?")
                .on("?", 1, Act::Silent),
            writes: "EHLO STARTTLS <tls> EHLO AUTH ?",
            events: failed,
            detail: "conversation timed out while cancelling AUTH",
            status: None,
        },
    ]);
    let silent = run(&relay("AUTH PLAIN").on("AUTH", 1, Act::Silent));
    assert_eq!(
        silent.waited,
        Some(distinct_timeouts().ehlo),
        "AUTH's timeout"
    );
}

/// The password, in clear or in any encoding the session sends, appears
/// only in the bytes for the socket: never in the `Debug` of the session,
/// of its events, or in an outcome's text.
#[test]
fn credentials_appear_only_in_the_output() {
    let password = "hunter2-Secret";
    let forbidden = [
        password.to_owned(),
        b64(password),
        b64(&format!("\0{USER}\0{password}")),
    ];
    let mut wire = String::new();
    let mut texts = Vec::new();
    let mut observe = |d: &mut Dialogue, texts: &mut Vec<String>| {
        texts.push(format!("{:?}", d.session));
        for event in &d.events {
            texts.push(format!("{event:?}"));
            if let Event::Closed(Some(outcome)) = event {
                texts.push(outcome.to_string());
            }
        }
        wire.push_str(&d.take_output());
        // The test's own transcript, less what it read from the output.
        let seen = d.log.iter().filter(|line| !line.starts_with("C: "));
        texts.push(seen.cloned().collect::<Vec<_>>().join(" | "));
    };
    for mechanisms in ["AUTH PLAIN", "AUTH LOGIN", "AUTH SCRAM-SHA-256"] {
        for accept in [true, false] {
            let mut d = Dialogue::with_config(with_auth(auth(USER, password, false)));
            let ehlo = format!("250-relay.test\n250 {mechanisms}");
            through_tls(&mut d, &ehlo);
            observe(&mut d, &mut texts);
            for challenge in ["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"] {
                if mechanisms == "AUTH LOGIN" {
                    d.reply(challenge);
                    observe(&mut d, &mut texts);
                }
            }
            if mechanisms == "AUTH SCRAM-SHA-256" {
                let first = "r=fyko+d2lbbFgONRv9qkxdawLabc,s=c2FsdA==,i=4096";
                d.reply(&format!("334 {}", b64(first)));
                observe(&mut d, &mut texts);
            }
            if accept && mechanisms != "AUTH SCRAM-SHA-256" {
                d.reply("235 2.7.0 ok");
            } else {
                d.reply("535 5.7.8 Error: authentication failed");
            }
            observe(&mut d, &mut texts);
            d.eof();
            observe(&mut d, &mut texts);
        }
    }
    for text in &texts {
        for secret in &forbidden {
            assert!(!text.contains(secret.as_str()), "{secret:?} in {text}");
        }
    }
    assert!(wire.contains(&forbidden[2]), "PLAIN went out: {wire}");
    assert!(wire.contains(&forbidden[1]), "LOGIN went out: {wire}");
}

// ---- implicit TLS -----------------------------------------------------------

fn implicit() -> SessionConfig {
    SessionConfig {
        implicit_tls: true,
        ..config()
    }
}

#[test]
fn implicit_tls_begins_with_the_handshake() {
    let mut d = Dialogue::with_config(implicit());
    d.collect();
    d.expect_event(&Event::StartTls);
    d.expect_no_output();
    assert!(d.session.awaits_tls(), "waits for the handshake at once");
    assert!(d.session.implicit_tls(), "says it is implicit");
    assert_eq!(d.session.describe(), "performing the TLS handshake");
    assert_eq!(
        d.session.poll_timeout(),
        Some(d.now + Timeouts::default().ehlo),
        "the handshake has the EHLO deadline"
    );
    d.session.tls_established(tls_info(), d.now);
    d.expect_no_output();
    assert_eq!(
        d.session.describe(),
        "receiving the initial server greeting"
    );
    assert_eq!(
        d.session.poll_timeout(),
        Some(d.now + Timeouts::default().greeting),
        "then the greeting's"
    );
    d.reply("220 relay.test ESMTP");
    d.expect_command("EHLO client.test");
    // STARTTLS means nothing inside TLS.
    d.reply("250-relay.test\n250-STARTTLS\n250 8BITMIME");
    d.expect_ready();
    assert_eq!(d.session.tls(), Some(&tls_info()), "runs under TLS");
    one_message(&mut d);
}

#[test]
fn implicit_tls_failures() {
    // The handshake fails: closed at once, no QUIT, no plaintext.
    let mut d = Dialogue::with_config(implicit());
    d.collect();
    d.expect_event(&Event::StartTls);
    d.session
        .tls_failed("received corrupt message of type InvalidContentType", d.now);
    d.collect();
    let outcome = d.expect_closed().expect("an outcome");
    assert_eq!(
        outcome.detail,
        "TLS handshake failed: received corrupt message of type InvalidContentType"
    );
    assert_eq!(
        outcome_summary(&outcome),
        "Transient Destination StartTls -"
    );
    d.expect_no_output();

    // Plaintext from a server that does not speak TLS on this port.
    let mut d = Dialogue::with_config(implicit());
    d.collect();
    d.expect_event(&Event::StartTls);
    d.reply("220 relay.test ESMTP");
    let outcome = d.expect_closed().expect("an outcome");
    assert_eq!(
        outcome.detail,
        "protocol error: plaintext data before the TLS handshake (is the port for implicit \
         TLS?): \"220 relay.test ESMTP\""
    );
    d.expect_no_output();

    // The handshake takes too long.
    let mut d = Dialogue::with_config(implicit());
    d.collect();
    d.advance(Timeouts::default().ehlo);
    d.expect_event(&Event::StartTls);
    let outcome = d.expect_closed().expect("an outcome");
    assert_eq!(
        outcome.detail,
        "conversation timed out while performing the TLS handshake"
    );
}

#[test]
fn implicit_tls_with_auth() {
    let tls_auth = ev(&[
        "StartTls",
        "Ready",
        "Done[ok 250, ok 250]",
        "Ready",
        "Closed",
    ]);
    check(vec![
        Row {
            name: "AUTH after the greeting and EHLO over TLS",
            scenario: Scenario::new(true)
                .implicit_tls()
                .ehlo("250-PIPELINING\n250-STARTTLS\n250 AUTH LOGIN PLAIN")
                .auth(auth(USER, PASSWORD, false))
                .reply("AUTH", 1, "235 2.7.0 ok"),
            writes: "<tls> EHLO AUTH MAIL+RCPT+RCPT+DATA . QUIT",
            events: tls_auth,
            detail: "",
            status: None,
        },
        Row {
            name: "handshake failed",
            scenario: Scenario::new(true)
                .implicit_tls()
                .handshake(Err("invalid peer certificate: UnknownIssuer"))
                .auth(auth(USER, PASSWORD, true)),
            writes: "<tls>",
            events: ev(&["StartTls", "Closed(Transient Destination StartTls -)"]),
            detail: "TLS handshake failed: invalid peer certificate: UnknownIssuer",
            status: None,
        },
        Row {
            name: "greeting refused over TLS",
            scenario: Scenario::new(true)
                .implicit_tls()
                .reply("greeting", 1, "554 5.7.1 go away"),
            writes: "<tls> QUIT",
            events: ev(&["StartTls", "Closed(Permanent Destination Greeting 554)"]),
            detail: "said: 554 5.7.1 go away (in the initial greeting)",
            status: None,
        },
    ]);
}
