//! Tests of `[tls]` and `dns.ip_preference`: the levels and the words of
//! earlier versions, the DANE and MTA-STS switches, `tls.ca_file`, the
//! client certificate, `tls.policy`, and the errors naming each key.

use super::tests::{config_file, expect_err, jail, load_default, HOST, TEST_ROOT};
use super::*;
use figment::Figment;

#[test]
fn tls_and_ip_preference_reach_the_config() {
    jail(|jail| {
        let defaults = load_default(&Flags::default()).expect("defaults").config;
        assert_eq!(defaults.tls_mode, Level::May, "tls.mode default");
        assert_eq!(defaults.tls_verify, None, "tls.verify default: by mode");
        assert_eq!(defaults.tls_ca_file, None, "tls.ca_file default");
        assert!(defaults.tls_policy.is_empty(), "tls.policy default");
        assert_eq!(defaults.ip_preference, IpPreference::Any, "ip_preference");

        jail.create_file("roots.pem", TEST_ROOT)
            .expect("write roots.pem");
        config_file(
            jail,
            "[dns]\nip_preference = \"ipv6\"\n\
             [tls]\nmode = \"required\"\nverify = \"none\"\nca_file = \"roots.pem\"\n\
             [tls.policy]\n\"Example.COM\" = \"disabled\"\n\"b.test\" = \"opportunistic\"\n\"c.test\" = \"dane-only\"\n",
        );
        let c = load_default(&Flags::default())
            .expect("tls settings")
            .config;
        assert_eq!(c.ip_preference, IpPreference::Ipv6, "dns.ip_preference");
        assert_eq!(c.tls_mode, Level::Encrypt, "tls.mode required, verify none");
        assert_eq!(c.tls_verify, Some(TlsVerify::None), "tls.verify");
        assert_eq!(
            c.tls_ca_file,
            Some(PathBuf::from("roots.pem")),
            "tls.ca_file"
        );
        let policy: Vec<(&str, Level)> =
            c.tls_policy.iter().map(|(d, m)| (d.as_str(), *m)).collect();
        assert_eq!(
            policy,
            [
                ("b.test", Level::May),
                ("c.test", Level::DaneOnly),
                ("example.com", Level::None)
            ],
            "tls.policy, keys lower-cased"
        );

        jail.set_env("POSTMAN_TLS__MODE", "disabled");
        jail.set_env("POSTMAN_DNS__IP_PREFERENCE", "ipv4");
        let c = load_default(&Flags::default())
            .expect("env overrides")
            .config;
        assert_eq!(c.tls_mode, Level::None, "tls.mode from env");
        assert_eq!(
            c.tls_discovery,
            Discovery {
                dane: true,
                mta_sts: true
            },
            "tls.dane and tls.mta_sts are on by default"
        );
        jail.set_env("POSTMAN_TLS__MTA_STS", "false");
        let c = load_default(&Flags::default()).expect("env").config;
        assert!(!c.tls_discovery.mta_sts, "tls.mta_sts from env");
        assert!(c.tls_discovery.dane, "tls.dane stays on");
        assert_eq!(
            c.ip_preference,
            IpPreference::Ipv4,
            "ip_preference from env"
        );
    });
}

#[test]
fn tls_errors_name_the_key() {
    let cases: [(&str, &[&str]); 8] = [
        (
            "[tls]\nmode = \"sometimes\"\n",
            &["invalid value for `tls.mode` (\"sometimes\") in config/postman.toml: expected one of `none`, `may`, `encrypt`, `dane`, `dane-only`, `mta-sts`, `verify`, `secure`, `opportunistic`, `required`, `disabled`"],
        ),
        (
            "[tls]\nverify = \"chain\"\n",
            &["`tls.verify`", "\"chain\"", "expected `none` or `name`"],
        ),
        (
            "[dns]\nip_preference = \"ipv5\"\n",
            &["`dns.ip_preference`", "\"ipv5\"", "`any`, `ipv4`, `ipv6`"],
        ),
        (
            "[tls]\nca_file = \"missing.pem\"\n",
            &["invalid value for `tls.ca_file` (\"missing.pem\") in config/postman.toml: cannot read it"],
        ),
        (
            "[tls.policy]\n\"not a domain\" = \"required\"\n",
            &["invalid value for `tls.policy` (\"not a domain\")", "A-label"],
        ),
        (
            "[tls]\nclient_cert = \"c.pem\"\n",
            &["`tls.client_cert` (\"c.pem\")", "needs tls.client_key"],
        ),
        (
            "[tls]\nclient_cert = \"missing.pem\"\nclient_key = \"k.pem\"\n",
            &["`tls.client_cert` (\"missing.pem\")", "cannot read certificates"],
        ),
        (
            "[tls]\nmode = \"dane-only\"\nmta_sts = \"yes\"\n",
            &["`tls.mta_sts`"],
        ),
    ];
    for (text, wants) in cases {
        jail(|jail| {
            config_file(jail, text);
            let message = expect_err(load_default(&Flags::default()), text).to_string();
            for want in wants {
                assert!(message.contains(want), "{text:?}: {message} lacks {want:?}");
            }
        });
    }
}

#[test]
fn tls_settings_round_trip_through_toml() {
    let mut settings = Settings::defaults(HOST);
    settings.tls.verify = Some(TlsVerify::Name);
    settings.tls.ca_file = Some(PathBuf::from("/etc/roots.pem"));
    settings
        .tls
        .policy
        .insert("example.com".into(), LevelWord::Required);
    settings
        .tls
        .policy
        .insert("d.test".into(), LevelWord::DaneOnly);
    settings.tls.mta_sts = false;
    settings.dns.ip_preference = IpPreference::Ipv4;
    let text = settings.to_toml().expect("serializes");
    let back: Settings = Figment::from(Toml::string(&text))
        .extract()
        .unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert_eq!(back, settings, "round trip of\n{text}");
    assert!(
        text.contains("[tls.policy]\n\"d.test\" = \"dane-only\"\n\"example.com\" = \"required\""),
        "{text}"
    );
}

/// `tls.ca_file` must hold at least one PEM certificate that can be a
/// trusted root; anything else is an error naming the key and the file.
#[test]
fn a_ca_file_must_hold_certificates() {
    let key = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let cases: [(&str, &str, &str); 6] = [
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\n",
            "holds no certificate",
        ),
        ("empty.pem", "", "holds no certificate"),
        ("key.pem", key, "holds no certificate"),
        (
            "cut.pem",
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
            "is not a file of PEM certificates",
        ),
        (
            "garbage.pem",
            garbage,
            "certificate 1 of 1 cannot be a trusted root",
        ),
        (
            "second.pem",
            &format!("{TEST_ROOT}{garbage}"),
            "certificate 2 of 2",
        ),
    ];
    for (name, contents, want) in cases {
        jail(|jail| {
            jail.create_file(name, contents).expect("write the CA file");
            config_file(jail, &format!("[tls]\nca_file = \"{name}\"\n"));
            let message = expect_err(load_default(&Flags::default()), name).to_string();
            let names =
                format!("invalid value for `tls.ca_file` (\"{name}\") in config/postman.toml");
            assert!(message.starts_with(&names), "{name}: {message}");
            assert!(message.contains(want), "{name}: {message} lacks {want:?}");
        });
    }
    jail(|jail| {
        jail.create_file(
            "roots.pem",
            &format!("# comment\n{TEST_ROOT}{key}{TEST_ROOT}"),
        )
        .expect("write roots.pem");
        config_file(jail, "[tls]\nca_file = \"roots.pem\"\n");
        let c = load_default(&Flags::default())
            .expect("two roots and a key")
            .config;
        assert_eq!(c.tls_ca_file, Some(PathBuf::from("roots.pem")));
    });
}
