//! Tests of rates and of matching site rules.

use super::*;
use crate::smtp::ReplyCode;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn rates_parse_and_print_back() {
    let cases: [(&str, u32, u64, &str); 9] = [
        ("20/s", 20, 1, "20/s"),
        ("300/m", 300, 60, "300/m"),
        ("5000/h", 5000, 3600, "5000/h"),
        ("10/5m", 10, 300, "10/5m"),
        ("1/60s", 1, 60, "1/m"),
        ("7/90s", 7, 90, "7/90s"),
        ("2/24h", 2, 86_400, "2/24h"),
        (" 20 / s ", 20, 1, "20/s"),
        ("1000000/s", 1_000_000, 1, "1000000/s"),
    ];
    for (text, count, per, shown) in cases {
        let rate: Rate = text
            .parse()
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"));
        assert_eq!(
            rate,
            Rate {
                count,
                per: secs(per)
            },
            "{text:?}"
        );
        assert_eq!(rate.to_string(), shown, "{text:?} printed");
        assert_eq!(shown.parse::<Rate>(), Ok(rate), "{shown:?} parsed back");
    }
}

#[test]
fn bad_rates_say_why() {
    let cases: [(&str, RateError); 13] = [
        ("20", RateError::Shape),
        ("", RateError::Shape),
        ("/s", RateError::Count),
        ("0/s", RateError::Count),
        ("-1/s", RateError::Count),
        ("+1/s", RateError::Count),
        ("1.5/s", RateError::Count),
        ("1000001/s", RateError::Count),
        ("20/d", RateError::Unit),
        ("20/sec", RateError::Unit),
        ("20/0m", RateError::Unit),
        ("20/", RateError::Unit),
        ("20/25h", RateError::Period),
    ];
    for (text, want) in cases {
        assert_eq!(text.parse::<Rate>(), Err(want), "{text:?}");
    }
}

#[test]
fn a_rate_spreads_its_events_evenly() {
    let cases = [
        ("20/s", Duration::from_millis(50)),
        ("300/m", Duration::from_millis(200)),
        ("5000/h", Duration::from_micros(720_000)),
        ("1/h", secs(3600)),
        ("3/s", Duration::from_nanos(333_333_333)),
    ];
    for (text, want) in cases {
        let rate: Rate = text.parse().expect("valid rate");
        assert_eq!(rate.interval(), want, "{text:?}");
    }
    let zero = Rate {
        count: 0,
        per: secs(1),
    };
    assert_eq!(
        zero.interval(),
        secs(1),
        "a zero count does not divide by zero"
    );
}

#[test]
fn suffixes_match_whole_labels() {
    let cases = [
        ("google.com", "aspmx.l.google.com", true),
        ("google.com", "google.com", true),
        ("google.com", "google.com.", true),
        ("google.com", "ASPMX.L.GOOGLE.COM", true),
        ("google.com", "notgoogle.com", false),
        ("google.com", "google.com.evil.test", false),
        ("google.com", "com", false),
        ("google.com", "", false),
        ("l.google.com", "alt1.aspmx.l.google.com", true),
        ("l.google.com", "aspmx.google.com", false),
        ("yahoodns.net", "mta5.am0.yahoodns.net", true),
        ("com", "mx.example.com", true),
    ];
    for (suffix, host, want) in cases {
        assert_eq!(
            suffix_matches(suffix, host),
            want,
            "{suffix:?} against {host:?}"
        );
    }
}

fn rule(suffix: &str, max_connections: usize) -> SiteShape {
    SiteShape {
        rule: Some(suffix.to_owned()),
        max_connections,
        ..SiteShape::default()
    }
}

#[test]
fn the_longest_matching_suffix_wins() {
    let rules = SiteRules::new(
        SiteShape::default(),
        vec![
            rule("google.com", 5),
            rule("l.google.com", 3),
            rule("outlook.com", 8),
            rule("protection.outlook.com", 6),
        ],
    );
    let cases: [(&[&str], Option<&str>, usize); 8] = [
        (
            &["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
            Some("l.google.com"),
            3,
        ),
        (&["smtp.google.com"], Some("google.com"), 5),
        // The longest suffix over all the hosts, wherever it matched.
        (
            &["smtp.google.com", "alt1.aspmx.l.google.com"],
            Some("l.google.com"),
            3,
        ),
        (
            &["example-com.mail.protection.outlook.com"],
            Some("protection.outlook.com"),
            6,
        ),
        (&["eur.olc.outlook.com"], Some("outlook.com"), 8),
        (&["mx.notgoogle.com"], None, 20),
        (&[], None, 20),
        (
            &["mx.example.net", "aspmx.l.google.com"],
            Some("l.google.com"),
            3,
        ),
    ];
    for (hosts, want_rule, want_max) in cases {
        let shape = rules.shape_for(hosts);
        assert_eq!(shape.rule.as_deref(), want_rule, "{hosts:?}");
        assert_eq!(shape.max_connections, want_max, "{hosts:?}");
    }
    let order: Vec<&str> = rules
        .rules()
        .iter()
        .filter_map(|r| r.rule.as_deref())
        .collect();
    assert_eq!(
        order,
        [
            "protection.outlook.com",
            "l.google.com",
            "outlook.com",
            "google.com"
        ],
        "rules are tried longest first"
    );
    assert_eq!(rules.defaults(), &SiteShape::default(), "defaults");
}

#[test]
fn a_rule_without_a_suffix_is_dropped() {
    let rules = SiteRules::new(SiteShape::default(), vec![SiteShape::default()]);
    assert!(rules.rules().is_empty(), "{:?}", rules.rules());
}

#[test]
fn a_shape_classifies_with_its_patterns() {
    let mut shape = SiteShape::default();
    let orange = Reply::new(
        ReplyCode::new(421).expect("code"),
        "mwinf5c42 ME Trop de connexions, veuillez verifier votre configuration.",
    );
    assert!(
        !shape.is_throttle(Stage::Mail, &orange),
        "without the pattern"
    );
    shape.throttle_patterns = vec![regex::RegexBuilder::new("trop de connexions")
        .case_insensitive(true)
        .build()
        .expect("pattern")];
    assert!(shape.is_throttle(Stage::Mail, &orange), "with the pattern");
}

#[test]
fn shapes_compare_patterns_as_written() {
    let with = |pattern: &str| SiteShape {
        throttle_patterns: vec![Regex::new(pattern).expect("pattern")],
        ..SiteShape::default()
    };
    assert_eq!(with("a+"), with("a+"), "same pattern");
    assert_ne!(with("a+"), with("a*"), "another pattern");
    assert_ne!(with("a+"), SiteShape::default(), "one pattern more");
}

#[test]
fn a_shape_prints_as_one_line_of_keys() {
    let shape = SiteShape {
        rule: Some("google.com".into()),
        max_connections: 10,
        max_message_rate: Some("300/m".parse().expect("rate")),
        throttle_patterns: vec![Regex::new(r#"slow "down""#).expect("pattern")],
        ..SiteShape::default()
    };
    assert_eq!(
        shape.to_string(),
        r#"max_connections=10 initial_connections=5 max_messages_per_connection=100 max_message_rate=300/m max_connection_rate=none connection_cache_time=2s suspend_after_throttles=5 throttle_suspend_time=300s throttle_patterns=["slow \"down\""]"#,
        "{shape:?}"
    );
}

proptest::proptest! {
    /// Every rate a rule can hold prints as text that parses back to it.
    #[test]
    fn a_rate_prints_as_text_that_parses_back(
        count in 1..=MAX_RATE_COUNT,
        period in 1..=MAX_RATE_PERIOD.as_secs(),
    ) {
        let rate = Rate { count, per: secs(period) };
        let text = rate.to_string();
        proptest::prop_assert_eq!(text.parse::<Rate>(), Ok(rate), "{}", text);
    }
}
