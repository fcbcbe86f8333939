//! Tests of the site keys: `delivery.max_connections_per_site` and the
//! other defaults of every site, `[delivery.site."<suffix>"]` rules, their
//! errors (each naming the full key and the layer) and the old name
//! `delivery.initial_connections_per_domain`.

use super::routing_tests::file_error as error;
use super::tests::{config_file, expect_err, jail, load_default, HOST};
use super::*;
use crate::smtp::{Reply, Stage};

fn sites(text: &str) -> SiteRules {
    let mut rules = None;
    jail(|jail| {
        config_file(jail, text);
        let loaded = load_default(&Flags::default()).unwrap_or_else(|e| panic!("{text}\n{e}"));
        rules = Some(loaded.config.sites);
    });
    rules.expect("the jail ran")
}

#[test]
fn every_site_gets_the_defaults_without_rules() {
    let rules = sites("");
    assert_eq!(rules.defaults(), &SiteShape::default(), "built-in defaults");
    assert!(rules.rules().is_empty(), "no rule is built in");
    let d = rules.defaults();
    assert_eq!(
        d.max_connections, 20,
        "Postfix's default destination concurrency"
    );
    assert_eq!(d.initial_connections, 5, "initial_connections");
    assert_eq!(
        d.max_messages_per_connection, 100,
        "max_messages_per_connection"
    );
    assert_eq!(
        d.connection_cache_time,
        Duration::from_secs(2),
        "cache time"
    );
    assert_eq!(d.suspend_after_throttles, 5, "suspend_after_throttles");
    assert_eq!(
        d.throttle_suspend_time,
        Duration::from_secs(300),
        "suspend time"
    );
    assert_eq!(
        rules.shape_for(&["aspmx.l.google.com"]),
        *d,
        "no rule: the defaults for any host"
    );
}

#[test]
fn a_rule_takes_its_unset_keys_from_the_defaults() {
    let rules = sites(
        r#"
        [delivery]
        max_connections_per_site = 30
        initial_connections_per_site = 4
        max_messages_per_connection = 50
        connection_cache_time = 5
        suspend_after_throttles = 3
        throttle_suspend_time = 600
        throttle_patterns = ["slow down"]

        [delivery.site."Google.COM."]
        max_connections = 5
        max_message_rate = "300/m"
        throttle_patterns = ["unusual rate"]

        [delivery.site."yahoodns.net"]
        max_messages_per_connection = 20
        max_connection_rate = "10/s"
        suspend_after_throttles = 0
        initial_connections = 2
        connection_cache_time = 0
        throttle_suspend_time = 7200
        "#,
    );
    let d = rules.defaults();
    assert_eq!(
        (
            d.max_connections,
            d.initial_connections,
            d.max_messages_per_connection
        ),
        (30, 4, 50),
        "defaults from [delivery]"
    );
    let google = rules.shape_for(&["alt1.aspmx.l.google.com"]);
    assert_eq!(
        google.rule.as_deref(),
        Some("google.com"),
        "suffix lower-cased, dot dropped"
    );
    assert_eq!(google.max_connections, 5, "google max_connections");
    assert_eq!(
        google.initial_connections, 4,
        "google initial from the defaults"
    );
    assert_eq!(google.max_messages_per_connection, 50, "google inherits");
    assert_eq!(
        google.max_message_rate,
        Some("300/m".parse().expect("rate")),
        "rate"
    );
    assert_eq!(google.max_connection_rate, None, "google connection rate");
    assert_eq!(
        google.connection_cache_time,
        Duration::from_secs(5),
        "inherited"
    );
    assert_eq!(google.suspend_after_throttles, 3, "inherited");
    assert_eq!(
        google.throttle_suspend_time,
        Duration::from_secs(600),
        "inherited"
    );
    let patterns: Vec<&str> = google
        .throttle_patterns
        .iter()
        .map(regex::Regex::as_str)
        .collect();
    assert_eq!(
        patterns,
        ["slow down", "unusual rate"],
        "defaults' patterns, then the rule's"
    );

    let yahoo = rules.shape_for(&["mta5.am0.yahoodns.net"]);
    assert_eq!(yahoo.max_connections, 30, "yahoo max from the defaults");
    assert_eq!(yahoo.initial_connections, 2, "yahoo initial");
    assert_eq!(yahoo.max_messages_per_connection, 20, "yahoo messages");
    assert_eq!(
        yahoo.max_connection_rate,
        Some("10/s".parse().expect("rate")),
        "rate"
    );
    assert_eq!(yahoo.suspend_after_throttles, 0, "never suspended");
    assert_eq!(yahoo.connection_cache_time, Duration::ZERO, "cache time 0");
    assert_eq!(
        yahoo.throttle_suspend_time,
        Duration::from_secs(7200),
        "2 h"
    );

    // Patterns are case-insensitive, matched against the whole reply.
    let reply: Reply = "451 4.3.0 Please SLOW DOWN".parse().expect("reply");
    assert!(
        yahoo.is_throttle(Stage::Rcpt, &reply),
        "delivery.throttle_patterns"
    );
}

#[test]
fn initial_connections_never_exceed_max() {
    let rules = sites(
        "[delivery]\nmax_connections_per_site = 3\ninitial_connections_per_site = 10\n\
         [delivery.site.\"a.test\"]\nmax_connections = 2\n\
         [delivery.site.\"b.test\"]\nmax_connections = 50\n",
    );
    assert_eq!(
        rules.defaults().initial_connections,
        3,
        "defaults: capped at max"
    );
    assert_eq!(
        rules.shape_for(&["a.test"]).initial_connections,
        2,
        "a.test"
    );
    assert_eq!(
        rules.shape_for(&["b.test"]).initial_connections,
        3,
        "b.test: the defaults' (capped) value"
    );
}

#[test]
fn the_old_initial_connections_key_still_works() {
    // (file, site default, Config.initial_connections_per_domain)
    let cases = [
        ("", 5, 5),
        ("[delivery]\ninitial_connections_per_domain = 8\n", 8, 8),
        ("[delivery]\ninitial_connections_per_site = 7\n", 7, 7),
        (
            "[delivery]\ninitial_connections_per_site = 7\ninitial_connections_per_domain = 7\n",
            7,
            7,
        ),
        // Set to the default explicitly, the new name still wins a conflict
        // (it is an error, below); unset, the old name is used.
        ("[delivery]\ninitial_connections_per_domain = 5\n", 5, 5),
        (
            "[delivery]\ninitial_connections_per_domain = 40\nmax_connections_per_site = 20\n",
            20,
            40,
        ),
    ];
    for (text, site, domain) in cases {
        jail(|jail| {
            config_file(jail, text);
            let config = load_default(&Flags::default())
                .unwrap_or_else(|e| panic!("{text}\n{e}"))
                .config;
            assert_eq!(config.sites.defaults().initial_connections, site, "{text}");
            assert_eq!(config.initial_connections_per_domain, domain, "{text}");
        });
    }
    let message =
        error("[delivery]\ninitial_connections_per_site = 5\ninitial_connections_per_domain = 8\n");
    assert!(
        message.contains(
            "invalid value for `delivery.initial_connections_per_domain` (8) in \
             config/postman.toml: it is the old name of delivery.initial_connections_per_site, \
             which is set to 5"
        ),
        "{message}"
    );
}

#[test]
fn site_errors_name_the_full_key_and_the_file() {
    let cases: [(&str, &[&str]); 16] = [
        (
            "[delivery.site.\"google.com\"]\nmax_message_rate = \"20/d\"\n",
            &["invalid value for `delivery.site.\"google.com\".max_message_rate` (\"20/d\") \
               in config/postman.toml: the unit must be s, m or h"],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_connection_rate = \"fast\"\n",
            &["`delivery.site.\"google.com\".max_connection_rate` (\"fast\")", "such as \"20/s\""],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_message_rate = 20\n",
            &["`delivery.site.\"google.com\".max_message_rate`", "config/postman.toml", "string"],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_conections = 5\n",
            &["unknown key `delivery.site.\"google.com\".max_conections` in config/postman.toml",
              "`max_connections`"],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_connections = \"many\"\n",
            &["`delivery.site.\"google.com\".max_connections`", "config/postman.toml", "\"many\""],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_connections = 0\n",
            &["`delivery.site.\"google.com\".max_connections` (0) in config/postman.toml: \
               must be at least 1"],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_connections = 901\n",
            &["`delivery.site.\"google.com\".max_connections` (901)", "at most 900"],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_connections = 4\ninitial_connections = 6\n",
            &["`delivery.site.\"google.com\".initial_connections` (6) in config/postman.toml: \
               must be at most 4 (no more than the site's max_connections)"],
        ),
        (
            "[delivery.site.\"google.com\"]\nthrottle_patterns = [\"ok\", \"(unclosed\"]\n",
            &["invalid value for `delivery.site.\"google.com\".throttle_patterns` (\"(unclosed\") \
               in config/postman.toml: not a regular expression", "unclosed group"],
        ),
        (
            "[delivery.site.\"google.com\"]\nthrottle_patterns = [\"\"]\n",
            &["`delivery.site.\"google.com\".throttle_patterns` (\"\")", "matches every reply"],
        ),
        (
            "[delivery]\nthrottle_patterns = [\"a{99999}{99999}\"]\n",
            &["`delivery.throttle_patterns`", "not a regular expression", "size limit"],
        ),
        (
            "[delivery.site.\"not a domain\"]\nmax_connections = 1\n",
            &["invalid value for `delivery.site.\"not a domain\"` (\"not a domain\") in \
               config/postman.toml: each site rule must be named by a domain name"],
        ),
        (
            "[delivery.site.\".google.com\"]\nmax_connections = 1\n",
            &["`delivery.site.\".google.com\"`", "write \"google.com\""],
        ),
        (
            "[delivery.site.\"192.0.2.1\"]\nmax_connections = 1\n",
            &["`delivery.site.\"192.0.2.1\"`", "domain name"],
        ),
        (
            "[delivery.site.\"google.com\"]\nmax_connections = 1\n\
             [delivery.site.\"GOOGLE.com\"]\nmax_connections = 2\n",
            &["names the same suffix"],
        ),
        (
            "[delivery.site.\"google.com\"]\nthrottle_suspend_time = 0\n",
            &["`delivery.site.\"google.com\".throttle_suspend_time` (0)", "at least 1"],
        ),
    ];
    for (text, wants) in cases {
        let message = error(text);
        for want in wants {
            assert!(message.contains(want), "{text:?}: {message} lacks {want:?}");
        }
    }
}

#[test]
fn default_site_keys_are_bounded() {
    let cases: [(&str, &str); 5] = [
        (
            "max_connections_per_site = 0",
            "`delivery.max_connections_per_site` (0)",
        ),
        (
            "max_connections_per_site = 1000",
            "`delivery.max_connections_per_site` (1000)",
        ),
        (
            "initial_connections_per_site = 0",
            "`delivery.initial_connections_per_site` (0)",
        ),
        (
            "suspend_after_throttles = 1001",
            "`delivery.suspend_after_throttles` (1001)",
        ),
        (
            "throttle_suspend_time = 0",
            "`delivery.throttle_suspend_time` (0)",
        ),
    ];
    for (line, want) in cases {
        let message = error(&format!("[delivery]\n{line}\n"));
        assert!(message.contains(want), "{line}: {message}");
        assert!(message.contains("config/postman.toml"), "{line}: {message}");
    }
}

#[test]
fn site_keys_come_from_the_environment_too() {
    jail(|jail| {
        config_file(
            jail,
            "[delivery.site.\"google.com\"]\nmax_connections = 5\n",
        );
        jail.set_env("POSTMAN_DELIVERY__MAX_CONNECTIONS_PER_SITE", 7);
        jail.set_env(
            "POSTMAN_DELIVERY__SITE",
            r#"{"yahoodns.net"={max_messages_per_connection=20,max_message_rate="5/s"}}"#,
        );
        let config = load_default(&Flags::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .config;
        let rules = &config.sites;
        assert_eq!(rules.defaults().max_connections, 7, "from the environment");
        let google = rules.shape_for(&["aspmx.l.google.com"]);
        assert_eq!(google.max_connections, 5, "the file's rule stays");
        let yahoo = rules.shape_for(&["mta7.am0.yahoodns.net"]);
        assert_eq!(yahoo.rule.as_deref(), Some("yahoodns.net"), "rule from env");
        assert_eq!(yahoo.max_messages_per_connection, 20, "yahoo from env");
        assert_eq!(yahoo.max_connections, 7, "yahoo inherits the env default");

        jail.set_env(
            "POSTMAN_DELIVERY__SITE",
            r#"{"yahoodns.net"={max_message_rate="5/x"}}"#,
        );
        let message = expect_err(load_default(&Flags::default()), "bad env rate").to_string();
        assert!(
            message.contains(
                "`delivery.site.\"yahoodns.net\".max_message_rate` (\"5/x\") in environment \
                 variable POSTMAN_DELIVERY__SITE"
            ),
            "{message}"
        );
    });
}

#[test]
fn site_settings_round_trip_through_toml() {
    let mut settings = Settings::defaults(HOST);
    settings.delivery.throttle_patterns = vec!["slow down".into()];
    settings.delivery.site.insert(
        "google.com".into(),
        SiteSettings {
            max_connections: Some(5),
            max_message_rate: Some("300/m".into()),
            throttle_patterns: vec![r"\[GL01\]".into()],
            ..SiteSettings::default()
        },
    );
    settings
        .delivery
        .site
        .insert("yahoodns.net".into(), SiteSettings::default());
    let text = settings.to_toml().expect("serializes");
    let back: Settings = Figment::from(Toml::string(&text))
        .extract()
        .unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert_eq!(back, settings, "round trip of\n{text}");
    assert!(text.contains("[delivery.site.\"google.com\"]\n"), "{text}");
    assert!(
        !text.contains("initial_connections_per_domain"),
        "unset alias: {text}"
    );
    settings
        .validate()
        .expect("the round-tripped settings validate");
}

/// The provider rules of `config/postman.toml` apply to the host names
/// those providers really use, and are below the defaults.
#[test]
fn the_shipped_rules_match_the_providers_hosts() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/postman.toml");
    let mut rules = None;
    jail(|_| {
        let loaded = load(&ConfigFile::Named(path.clone()), &Flags::default(), HOST)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        rules = Some(loaded.config.sites);
    });
    let rules = rules.expect("the jail ran");
    let cases: [(&[&str], Option<&str>); 13] = [
        (
            &["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
            Some("google.com"),
        ),
        (&["gmail-smtp-in.l.google.com"], Some("google.com")),
        (&["smtp.google.com"], Some("google.com")),
        (&["aspmx2.googlemail.com"], Some("googlemail.com")),
        (
            &["example-com.mail.protection.outlook.com"],
            Some("outlook.com"),
        ),
        (
            &["hotmail-com.olc.protection.outlook.com"],
            Some("outlook.com"),
        ),
        (&["example-com.r-v1.mx.microsoft"], Some("mx.microsoft")),
        (
            &["mta5.am0.yahoodns.net", "mta6.am0.yahoodns.net"],
            Some("yahoodns.net"),
        ),
        (
            &["mx01.mail.icloud.com", "mx02.mail.icloud.com"],
            Some("icloud.com"),
        ),
        (&["mx00.gmx.net", "mx01.gmx.net"], Some("gmx.net")),
        (&["mx-ha03.web.de"], Some("web.de")),
        (&["smtp-in.orange.fr"], Some("orange.fr")),
        (&["mx.example.net"], None),
    ];
    for (hosts, want) in cases {
        assert_eq!(rules.shape_for(hosts).rule.as_deref(), want, "{hosts:?}");
    }
    let defaults = rules.defaults();
    for rule in rules.rules() {
        let name = rule.rule.as_deref().unwrap_or("?");
        assert!(
            rule.max_connections < defaults.max_connections,
            "{name}: conservative"
        );
        assert!(
            rule.max_messages_per_connection <= defaults.max_messages_per_connection,
            "{name}: conservative"
        );
        assert!(
            rule.initial_connections <= rule.max_connections,
            "{name}: initial"
        );
    }
    let orange = rules.shape_for(&["smtp-in.orange.fr"]);
    let french: Reply =
        "421 mwinf5c79 ME Trop de connexions, veuillez verifier votre configuration."
            .parse()
            .expect("reply");
    assert!(
        orange.is_throttle(Stage::Greeting, &french),
        "orange, French only"
    );
    assert!(
        orange.is_throttle(Stage::Mail, &french),
        "orange, French only, at MAIL"
    );
}
