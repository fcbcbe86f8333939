//! The mechanisms against known vectors (RFC 7677 §3 for SCRAM-SHA-256,
//! RFC 4616 for PLAIN) and against every kind of bad server message.

use proptest::prelude::*;

use super::*;

fn credentials(user: &str, password: &str) -> Credentials {
    Credentials {
        user: user.into(),
        password: Secret::new(password.into()),
    }
}

/// RFC 7677 §3.
const RFC_CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
     p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn b64(text: &str) -> String {
    STANDARD.encode(text)
}

fn unb64(secret: &Secret) -> String {
    let bytes = STANDARD
        .decode(secret.expose())
        .unwrap_or_else(|e| panic!("response {:?} is not base64: {e}", secret.expose()));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("response is not UTF-8: {e}"))
}

/// A SCRAM exchange of the RFC's vector, begun.
fn rfc_scram() -> Exchange {
    let user = credentials("user", "pencil");
    let nonce = Nonce::new(RFC_CLIENT_NONCE).expect("the RFC's nonce is printable");
    Exchange::start(Mechanism::ScramSha256, &user, &nonce).0
}

#[test]
fn scram_sha_256_matches_rfc_7677() {
    let user = credentials("user", "pencil");
    let nonce = Nonce::new(RFC_CLIENT_NONCE).expect("the RFC's nonce is printable");
    let (mut exchange, initial) = Exchange::start(Mechanism::ScramSha256, &user, &nonce);
    let initial = initial.expect("SCRAM sends an initial response");
    assert_eq!(unb64(&initial), RFC_CLIENT_FIRST, "client-first-message");
    let response = exchange
        .respond(&b64(RFC_SERVER_FIRST))
        .expect("the RFC's server-first message is accepted");
    assert_eq!(unb64(&response), RFC_CLIENT_FINAL, "client-final-message");
    let last = exchange
        .respond(&b64(RFC_SERVER_FINAL))
        .expect("the RFC's server signature is accepted");
    assert_eq!(last.expose(), "", "the response to server-final is empty");
    assert_eq!(exchange.finish("2.7.0 Authentication successful"), Ok(()));
    assert_eq!(
        exchange.respond(&b64(RFC_SERVER_FINAL)).err(),
        Some(AuthError::TooManySteps {
            mechanism: Mechanism::ScramSha256
        }),
        "a third challenge"
    );
}

#[test]
fn scram_server_final_in_the_235_is_also_checked() {
    let mut exchange = rfc_scram();
    exchange
        .respond(&b64(RFC_SERVER_FIRST))
        .expect("server-first");
    let text = format!("2.7.0 {}", b64(RFC_SERVER_FINAL));
    assert_eq!(exchange.finish(&text), Ok(()), "v= with the 235");

    let mut exchange = rfc_scram();
    exchange
        .respond(&b64(RFC_SERVER_FIRST))
        .expect("server-first");
    assert_eq!(
        exchange.finish("2.7.0 Authentication successful"),
        Err(AuthError::Unproven),
        "235 without v="
    );

    let mut exchange = rfc_scram();
    assert_eq!(
        exchange.finish("2.7.0 ok"),
        Err(AuthError::Unproven),
        "235 to the initial response"
    );
}

#[test]
fn scram_refuses_a_server_that_does_not_know_the_password() {
    let wrong = "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let short = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl9";
    for (name, server_final, want) in [
        ("another signature", wrong, AuthError::SignatureMismatch),
        ("a shorter signature", short, AuthError::SignatureMismatch),
        (
            "the server's error",
            "e=invalid-proof",
            AuthError::ServerError {
                error: "invalid-proof".into(),
            },
        ),
        (
            "no v=",
            "x=1",
            AuthError::Malformed {
                what: "no v= with a base64 signature",
                message: "x=1".into(),
            },
        ),
        (
            "v= not base64",
            "v=!!",
            AuthError::Malformed {
                what: "no v= with a base64 signature",
                message: "v=!!".into(),
            },
        ),
    ] {
        let mut exchange = rfc_scram();
        exchange
            .respond(&b64(RFC_SERVER_FIRST))
            .expect("server-first");
        assert_eq!(
            exchange.respond(&b64(server_final)).err(),
            Some(want.clone()),
            "{name} in a 334"
        );
        let mut exchange = rfc_scram();
        exchange
            .respond(&b64(RFC_SERVER_FIRST))
            .expect("server-first");
        let got = exchange.finish(&b64(server_final));
        if server_final.starts_with("v=6") || server_final.starts_with("e=") {
            assert_eq!(got, Err(want), "{name} in the 235");
        } else {
            assert!(got.is_err(), "{name} in the 235: {got:?}");
        }
    }
}

#[test]
fn scram_server_first_problems() {
    let nonce = "rOprNGfwEbeRWgbNEkqO";
    let salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    let malformed = |what: &'static str, message: &str| AuthError::Malformed {
        what,
        message: message.chars().take(QUOTE_LEN).collect(),
    };
    let owned = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let cases: Vec<(&str, AuthError)> = vec![
        ("", malformed("no r= nonce first", "")),
        (
            owned(format!("s={salt},r={nonce}x,i=4096")),
            malformed("no r= nonce first", &format!("s={salt},r={nonce}x,i=4096")),
        ),
        (
            owned(format!("m=ext,r={nonce}x,s={salt},i=4096")),
            malformed(
                "a mandatory extension postman does not know",
                &format!("m=ext,r={nonce}x,s={salt},i=4096"),
            ),
        ),
        (
            owned(format!("r={nonce}x,i=4096")),
            malformed("no s= salt after the nonce", &format!("r={nonce}x,i=4096")),
        ),
        (
            owned(format!("r={nonce}x,s={salt}")),
            malformed(
                "no i= iteration count after the salt",
                &format!("r={nonce}x,s={salt}"),
            ),
        ),
        (
            owned(format!("r={nonce}x,s=***,i=4096")),
            malformed(
                "the salt is not base64",
                &format!("r={nonce}x,s=***,i=4096"),
            ),
        ),
        (
            owned(format!("r={nonce}x,s=,i=4096")),
            malformed("the salt is not base64", &format!("r={nonce}x,s=,i=4096")),
        ),
        (
            owned(format!("r={nonce}x,s={salt},i=-1")),
            malformed(
                "the iteration count is not a number",
                &format!("r={nonce}x,s={salt},i=-1"),
            ),
        ),
        (
            owned(format!("r={nonce}x,s={salt},i=")),
            malformed(
                "the iteration count is not a number",
                &format!("r={nonce}x,s={salt},i="),
            ),
        ),
        (
            owned(format!("r={nonce}x,s={salt},i=0")),
            malformed(
                "the iteration count is zero",
                &format!("r={nonce}x,s={salt},i=0"),
            ),
        ),
        (
            owned(format!("r={nonce}x,s={salt},i=1000001")),
            AuthError::TooManyIterations {
                iterations: 1_000_001,
            },
        ),
        (
            owned(format!("r={nonce}x,s={salt},i=4294967296")),
            AuthError::TooManyIterations {
                iterations: 4_294_967_296,
            },
        ),
        (
            owned(format!("r={nonce}x,s={salt},i=99999999999999999999999")),
            AuthError::TooManyIterations {
                iterations: u64::MAX,
            },
        ),
        (
            owned(format!("r=other{nonce},s={salt},i=4096")),
            AuthError::NonceMismatch,
        ),
        (
            owned(format!("r={},s={salt},i=4096", &nonce[..5])),
            AuthError::NonceMismatch,
        ),
        (
            owned(format!("r={nonce}\u{e9},s={salt},i=4096")),
            malformed(
                "the nonce is not printable ASCII",
                &format!("r={nonce}\u{e9},s={salt},i=4096"),
            ),
        ),
    ];
    for (message, want) in cases {
        let mut exchange = rfc_scram();
        assert_eq!(
            exchange.respond(&b64(message)).err(),
            Some(want),
            "server-first {message:?}"
        );
    }
    // A cheap count is fine: the cap is against burning CPU, not a policy.
    let mut exchange = rfc_scram();
    let cheap = format!("r={nonce}x,s={salt},i=1");
    assert!(exchange.respond(&b64(&cheap)).is_ok(), "i=1");
    // Not base64, not UTF-8.
    let mut exchange = rfc_scram();
    assert_eq!(
        exchange.respond("r=abc").err(),
        Some(AuthError::NotBase64 {
            challenge: "r=abc".into()
        }),
        "raw text"
    );
    let mut exchange = rfc_scram();
    assert!(
        matches!(
            exchange.respond(&STANDARD.encode([0xff, 0xfe])),
            Err(AuthError::Malformed {
                what: "not UTF-8",
                ..
            })
        ),
        "binary"
    );
}

#[test]
fn plain_and_login() {
    let user = credentials("user@relay.test", "s3cret:pw");
    let nonce = Nonce::new("n").expect("a nonce");
    let (mut plain, initial) = Exchange::start(Mechanism::Plain, &user, &nonce);
    let initial = initial.expect("PLAIN sends an initial response");
    assert_eq!(unb64(&initial), "\0user@relay.test\0s3cret:pw", "PLAIN");
    // A server that ignores the initial response asks with an empty challenge.
    let again = plain.respond("").expect("empty challenge");
    assert_eq!(again, initial, "PLAIN after an empty challenge");
    assert_eq!(
        plain.respond("").err(),
        Some(AuthError::TooManySteps {
            mechanism: Mechanism::Plain
        }),
        "PLAIN has one step"
    );
    let (mut plain, _) = Exchange::start(Mechanism::Plain, &user, &nonce);
    assert!(
        plain.respond(&b64("what?")).is_err(),
        "PLAIN with a real challenge"
    );

    let (mut login, initial) = Exchange::start(Mechanism::Login, &user, &nonce);
    assert_eq!(initial, None, "LOGIN waits for its prompt");
    // The prompts' text does not matter, nor does their case or language.
    let first = login.respond(&b64("Benutzername:")).expect("step 1");
    assert_eq!(unb64(&first), "user@relay.test", "LOGIN user");
    let second = login.respond("UGFzc3dvcmQ6").expect("step 2");
    assert_eq!(unb64(&second), "s3cret:pw", "LOGIN password");
    assert_eq!(
        login.respond("UGFzc3dvcmQ6").err(),
        Some(AuthError::TooManySteps {
            mechanism: Mechanism::Login
        }),
        "LOGIN has two steps"
    );
    assert_eq!(login.finish("2.7.0 ok"), Ok(()));
    let (mut login, _) = Exchange::start(Mechanism::Login, &user, &nonce);
    assert_eq!(
        login.respond("VXNlcm5hbWU").err(),
        Some(AuthError::NotBase64 {
            challenge: "VXNlcm5hbWU".into()
        }),
        "unpadded base64"
    );
}

#[test]
fn choice_of_mechanism() {
    let ascii = credentials("user", "pass word!");
    let accented = credentials("user", "p\u{e4}ss");
    let control = credentials("user", "pass\tword");
    let nul = credentials("user", "pa\0ss");
    let offered =
        |names: &str| -> Vec<String> { names.split_whitespace().map(str::to_owned).collect() };
    let cases = [
        (
            "SCRAM-SHA-256 PLAIN LOGIN",
            &ascii,
            Some(Mechanism::ScramSha256),
        ),
        ("LOGIN PLAIN", &ascii, Some(Mechanism::Plain)),
        ("LOGIN CRAM-MD5", &ascii, Some(Mechanism::Login)),
        ("CRAM-MD5 XOAUTH2 SCRAM-SHA-1", &ascii, None),
        ("", &ascii, None),
        // SASLprep is done for printable ASCII only: SCRAM is skipped.
        ("SCRAM-SHA-256 PLAIN", &accented, Some(Mechanism::Plain)),
        ("SCRAM-SHA-256", &accented, None),
        ("SCRAM-SHA-256 LOGIN", &control, Some(Mechanism::Login)),
        ("SCRAM-SHA-256 PLAIN LOGIN", &nul, Some(Mechanism::Login)),
        ("PLAIN", &nul, None),
    ];
    for (names, credentials, want) in cases {
        assert_eq!(
            Mechanism::choose(&offered(names), credentials),
            want,
            "offered {names:?} for password {:?}",
            credentials.password.expose()
        );
    }
}

#[test]
fn user_names_are_escaped_for_scram() {
    let user = credentials("a=b,c", "pw");
    let nonce = Nonce::new("xyz").expect("a nonce");
    let (_, initial) = Exchange::start(Mechanism::ScramSha256, &user, &nonce);
    let initial = initial.expect("SCRAM sends an initial response");
    assert_eq!(unb64(&initial), "n,,n=a=3Db=2Cc,r=xyz");
}

#[test]
fn nonces() {
    assert_eq!(Nonce::new(""), None, "empty");
    assert_eq!(Nonce::new("a,b"), None, "comma");
    assert_eq!(Nonce::new("a b"), None, "space");
    assert_eq!(Nonce::new("\u{e9}"), None, "not ASCII");
    let random = Nonce::from_random(&[0xfb; 18]);
    assert_eq!(random.as_str(), "+/v7+/v7+/v7+/v7+/v7+/v7");
    assert_eq!(
        Nonce::new(random.as_str()),
        Some(random.clone()),
        "printable"
    );
}

#[test]
fn nothing_secret_in_debug() {
    let mut exchange = rfc_scram();
    let response = exchange
        .respond(&b64(RFC_SERVER_FIRST))
        .expect("server-first");
    let text = format!("{exchange:?} {response:?} {response}");
    assert!(!text.contains("pencil"), "{text}");
    assert!(!text.contains("dHzbZapW"), "{text}");
    assert!(!text.contains(&b64(RFC_CLIENT_FINAL)[..20]), "{text}");
}

proptest! {
    /// Whatever the server sends, in whatever order: no panic, and at most
    /// the mechanism's number of steps answered.
    #[test]
    fn any_challenges_end_cleanly(
        mechanism in prop_oneof![
            Just(Mechanism::ScramSha256), Just(Mechanism::Plain), Just(Mechanism::Login)
        ],
        challenges in prop::collection::vec(prop_oneof![
            any::<Vec<u8>>().prop_map(|b| STANDARD.encode(b)),
            ".*",
            Just(b64(RFC_SERVER_FIRST)),
            Just(b64(RFC_SERVER_FINAL)),
            "r=rOprNGfwEbeRWgbNEkqO[!-+-~]{0,8},s=[A-Za-z0-9+/]{0,8}={0,2},i=[0-9]{1,3}"
                .prop_map(|s| b64(&s)),
        ], 0..6),
        text in ".*",
    ) {
        let user = credentials("user", "pencil");
        let nonce = Nonce::new(RFC_CLIENT_NONCE).expect("nonce");
        let mut exchange = Exchange::start(mechanism, &user, &nonce).0;
        let mut answered = 0;
        for challenge in &challenges {
            match exchange.respond(challenge) {
                Ok(_) => answered += 1,
                Err(_) => break,
            }
        }
        prop_assert!(answered <= 2, "{} answered {} challenges", mechanism, answered);
        let _ = exchange.finish(&text);
    }
}
