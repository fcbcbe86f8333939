//! Tests of `[tlsrpt]`: off by default and unchecked while off; on, the
//! defaults it derives, and each error naming its key and file.

use super::routing_tests::file_error;
use super::tests::{config_file, jail, load_default, HOST};
use super::*;

const RSA_KEY: &str = include_str!("testdata/dkim-rsa2048.pem");
const ED25519_KEY: &str = include_str!("testdata/dkim-ed25519.pem");

/// The validated `[tlsrpt]` of a `config/postman.toml` that says `text`,
/// with the test keys beside it as `rsa.pem` and `ed.pem`.
fn tlsrpt(text: &str) -> Option<Tlsrpt> {
    let mut found = None;
    jail(|jail| {
        jail.create_file("rsa.pem", RSA_KEY).expect("write rsa.pem");
        jail.create_file("ed.pem", ED25519_KEY)
            .expect("write ed.pem");
        config_file(jail, text);
        let loaded = load_default(&Flags::default()).unwrap_or_else(|e| panic!("{text}\n{e}"));
        let printed = loaded.settings.to_toml().expect("settings print as TOML");
        let again: Settings = toml::from_str(&printed).unwrap_or_else(|e| panic!("{printed}\n{e}"));
        assert_eq!(again, loaded.settings, "{printed}");
        found = Some(loaded.config.tlsrpt);
    });
    found.expect("the jail ran")
}

#[test]
fn off_by_default_and_unchecked_while_off() {
    assert_eq!(Settings::defaults(HOST).tlsrpt, TlsrptSettings::default());
    assert!(!TlsrptSettings::default().enabled);
    assert_eq!(tlsrpt(""), None);
    // Settings prepared for later are not read while off.
    assert_eq!(
        tlsrpt(
            "[tlsrpt]\nenabled = false\ndkim_key = \"missing.pem\"\nfrom = \"not an address\"\n"
        ),
        None
    );
}

#[test]
fn on_with_the_least_settings() {
    let on = tlsrpt(
        "[tlsrpt]\nenabled = true\nfrom = \"tlsrpt@Sender.example\"\ndkim_key = \"rsa.pem\"\ndkim_selector = \"TLSRPT2026\"\n",
    )
    .expect("on");
    assert_eq!(
        on.submitter,
        crate::tlsrpt::Submitter {
            organization: "sender.example".into(),
            contact: "tlsrpt@Sender.example".into(),
            domain: "sender.example".into(),
            unique_id: Some("mx".into()),
        },
        "defaults from `from` and the hostname {HOST}"
    );
    assert_eq!(on.from, "tlsrpt@Sender.example");
    assert_eq!(on.dkim.selector, "tlsrpt2026");
    assert_eq!(on.dkim.key.algorithm(), "rsa-sha256");
    assert!(!format!("{on:?}").contains("PRIVATE"), "{on:?}");

    let full = tlsrpt(
        "[tlsrpt]\nenabled = true\norganization = \"Example Mail\"\ncontact = \"https://sender.example/tls\"\n\
         from = \"reports@mx.sender.example\"\ndkim_key = \"ed.pem\"\ndkim_selector = \"s1\"\n\
         dkim_domain = \"sender.example.\"\n",
    )
    .expect("on");
    assert_eq!(full.submitter.organization, "Example Mail");
    assert_eq!(full.submitter.contact, "https://sender.example/tls");
    assert_eq!(full.submitter.domain, "sender.example");
    assert_eq!(full.dkim.key.algorithm(), "ed25519-sha256");
}

#[test]
fn errors_name_the_key_and_the_file() {
    let on = "[tlsrpt]\nenabled = true\n";
    let good = "from = \"t@sender.example\"\ndkim_key = \"rsa.pem\"\ndkim_selector = \"s\"\n";
    let cases: &[(String, &[&str])] = &[
        (
            format!("{on}dkim_key = \"rsa.pem\"\ndkim_selector = \"s\"\n"),
            &["`tlsrpt.from`", "needs the reports' sender address"],
        ),
        (
            format!("{on}from = \"t@sender.example\"\ndkim_selector = \"s\"\n"),
            &["`tlsrpt.dkim_key`", "receivers ignore unsigned reports"],
        ),
        (
            format!("{on}from = \"t@sender.example\"\ndkim_key = \"rsa.pem\"\n"),
            &["`tlsrpt.dkim_selector`", "needs the DKIM selector"],
        ),
        (
            format!("{on}from = \"t@sender.example\"\ndkim_key = \"missing.pem\"\ndkim_selector = \"s\"\n"),
            &["invalid value for `tlsrpt.dkim_key` (\"missing.pem\") in config/postman.toml: cannot read it"],
        ),
        (
            format!("{on}from = \"t@sender.example\"\ndkim_key = \"config/postman.toml\"\ndkim_selector = \"s\"\n"),
            &["`tlsrpt.dkim_key` (\"config/postman.toml\")", "no PEM private key"],
        ),
        (
            format!("{on}from = \"t@sender.example\"\ndkim_key = \"config\"\ndkim_selector = \"s\"\n"),
            &["`tlsrpt.dkim_key` (\"config\")", "must be a PEM private key file"],
        ),
        (
            format!("{on}from = \"nobody\"\ndkim_key = \"rsa.pem\"\ndkim_selector = \"s\"\n"),
            &["`tlsrpt.from` (\"nobody\")", "local@domain"],
        ),
        (
            format!("{on}from = \"a b@sender.example\"\ndkim_key = \"rsa.pem\"\ndkim_selector = \"s\"\n"),
            &["`tlsrpt.from`", "local@domain"],
        ),
        (
            format!("{on}{good}dkim_domain = \"other.example\"\n"),
            &["`tlsrpt.from` (\"t@sender.example\")", "not in the DKIM domain \"other.example\""],
        ),
        (
            format!("{on}{good}dkim_domain = \"bad domain\"\n"),
            &["`tlsrpt.dkim_domain` (\"bad domain\")", "A-labels"],
        ),
        (
            format!("{on}from = \"t@sender.example\"\ndkim_key = \"rsa.pem\"\ndkim_selector = \"a_b\"\n"),
            &["`tlsrpt.dkim_selector` (\"a_b\")", "DNS labels"],
        ),
        (
            format!("{on}{good}organization = \" \"\n"),
            &["`tlsrpt.organization`", "non-empty line"],
        ),
        (
            format!("{on}{good}contact = \"a\\nb\"\n"),
            &["`tlsrpt.contact`", "non-empty line"],
        ),
        (
            format!("{on}{good}dkim_algorithm = \"rsa\"\n"),
            &["unknown key `tlsrpt.dkim_algorithm`"],
        ),
    ];
    for (text, wants) in cases {
        let mut message = String::new();
        jail(|jail| {
            jail.create_file("rsa.pem", RSA_KEY).expect("write rsa.pem");
            config_file(jail, text);
            message = super::tests::expect_err(load_default(&Flags::default()), text).to_string();
        });
        for want in *wants {
            assert!(message.contains(want), "{text:?}: {message} lacks {want:?}");
        }
    }
    // The file error helper of the routing tests sees the same.
    assert!(file_error("[tlsrpt]\nenabled = 1\n").contains("`tlsrpt.enabled`"));
}

#[test]
fn the_environment_turns_it_on() {
    jail(|jail| {
        jail.create_file("ed.pem", ED25519_KEY)
            .expect("write ed.pem");
        jail.set_env("POSTMAN_TLSRPT__ENABLED", "true");
        jail.set_env("POSTMAN_TLSRPT__FROM", "r@sender.example");
        jail.set_env("POSTMAN_TLSRPT__DKIM_KEY", "ed.pem");
        jail.set_env("POSTMAN_TLSRPT__DKIM_SELECTOR", "s");
        let loaded = load_default(&Flags::default()).expect("loads");
        let on = loaded.config.tlsrpt.expect("on");
        assert_eq!(on.submitter.domain, "sender.example");
    });
}
