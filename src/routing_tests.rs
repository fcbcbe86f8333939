use super::*;

fn hop(via: Via, next_hop: &str) -> Arc<Hop> {
    Arc::new(Hop {
        via,
        next_hop: Some(NextHop::parse(next_hop).unwrap()),
        ..Hop::default()
    })
}

fn table() -> Routing {
    let mut routing = Routing {
        relayhost: Some(hop(Via::Relayhost, "[smtp.relay.test]:587")),
        fallback: vec![hop(Via::Fallback, "[backup.test]")],
        ..Routing::default()
    };
    let mx = Arc::new(Hop {
        via: Via::Transport,
        source: Source::Pool("direct".into()),
        ..Hop::default()
    });
    for (key, hop) in [
        ("internal.test", hop(Via::Transport, "[10.0.0.5]:25")),
        (".internal.test", hop(Via::Transport, "[10.0.0.6]")),
        (".corp.internal.test", hop(Via::Transport, "[10.0.0.7]")),
        ("direct.test", mx),
    ] {
        routing.transport.insert(Pattern::parse(key).unwrap(), hop);
    }
    routing.sender_relayhost.insert(
        Pattern::parse("bulk.example").unwrap(),
        hop(Via::SenderRelayhost, "[ses.test]:587"),
    );
    routing.sender_relayhost.insert(
        Pattern::parse(".news.example").unwrap(),
        hop(Via::SenderRelayhost, "[news-relay.test]"),
    );
    routing
}

#[test]
fn transport_then_sender_then_relayhost_then_mx() {
    let routing = table();
    // (sender, domain, where it goes, via, sender rule)
    let cases = [
        (
            "a@me.example",
            "internal.test",
            "[10.0.0.5]:25",
            Via::Transport,
            None,
        ),
        (
            "a@me.example",
            "INTERNAL.test.",
            "[10.0.0.5]:25",
            Via::Transport,
            None,
        ),
        (
            "a@me.example",
            "a.internal.test",
            "[10.0.0.6]",
            Via::Transport,
            None,
        ),
        (
            "a@me.example",
            "b.a.internal.test",
            "[10.0.0.6]",
            Via::Transport,
            None,
        ),
        // The closest parent wins.
        (
            "a@me.example",
            "x.corp.internal.test",
            "[10.0.0.7]",
            Via::Transport,
            None,
        ),
        (
            "a@me.example",
            "corp.internal.test",
            "[10.0.0.6]",
            Via::Transport,
            None,
        ),
        ("a@me.example", "direct.test", "mx", Via::Transport, None),
        // A transport entry beats the sender's relay, as in Postfix.
        (
            "a@bulk.example",
            "internal.test",
            "[10.0.0.5]:25",
            Via::Transport,
            None,
        ),
        (
            "a@bulk.example",
            "gmail.test",
            "[ses.test]:587",
            Via::SenderRelayhost,
            Some("bulk.example"),
        ),
        (
            "a@BULK.example",
            "gmail.test",
            "[ses.test]:587",
            Via::SenderRelayhost,
            Some("bulk.example"),
        ),
        (
            "a@x.news.example",
            "gmail.test",
            "[news-relay.test]",
            Via::SenderRelayhost,
            Some(".news.example"),
        ),
        (
            "a@news.example",
            "gmail.test",
            "[smtp.relay.test]:587",
            Via::Relayhost,
            None,
        ),
        (
            "",
            "gmail.test",
            "[smtp.relay.test]:587",
            Via::Relayhost,
            None,
        ),
        (
            "a@notinternal.test",
            "notinternal.test",
            "[smtp.relay.test]:587",
            Via::Relayhost,
            None,
        ),
    ];
    for (sender, domain, to, via, rule) in cases {
        let decision = routing.decide(sender, domain);
        assert_eq!(decision.hop.describe(), to, "{sender} → {domain}");
        assert_eq!(decision.hop.via, via, "{sender} → {domain}");
        assert_eq!(
            decision.sender_rule.map(|r| r.to_string()).as_deref(),
            rule,
            "{sender} → {domain}"
        );
    }
}

#[test]
fn without_a_relay_host_mx_delivery_gets_the_fallback_relays() {
    let mut routing = table();
    routing.relayhost = None;
    let decision = routing.decide("a@me.example", "gmail.test");
    assert_eq!(decision.hop.via, Via::Mx);
    assert_eq!(decision.hop.next_hop, None);
    assert_eq!(decision.fallback.len(), 1);
    assert_eq!(decision.fallback[0].describe(), "[backup.test]");
    // A transport "mx" entry is MX delivery too.
    assert_eq!(routing.decide("", "direct.test").fallback.len(), 1);
    // A relay is not given another relay behind it.
    assert!(routing.decide("", "internal.test").fallback.is_empty());
    assert!(table().decide("", "gmail.test").fallback.is_empty());
}

#[test]
fn an_empty_table_is_mx_delivery_as_before() {
    let routing = Routing::default();
    let decision = routing.decide("a@b.example", "gmail.test");
    assert_eq!(*decision.hop, Hop::default());
    assert_eq!(decision.hop.site_suffix(), "");
    assert!(decision.fallback.is_empty());
}

#[test]
fn patterns_are_domains_or_dot_domains() {
    assert_eq!(
        Pattern::parse("Example.COM."),
        Some(Pattern::Exact("example.com".into()))
    );
    assert_eq!(
        Pattern::parse(".example.com"),
        Some(Pattern::Below("example.com".into()))
    );
    for bad in [
        "",
        ".",
        "..example.com",
        "exa mple.com",
        "*.example.com",
        "ex_ample.com",
    ] {
        assert_eq!(Pattern::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn hops_that_connect_differently_never_share_a_site() {
    let plain = Hop::default();
    let variants = [
        Hop {
            tls: Some(TlsMode::Required),
            ..Hop::default()
        },
        Hop {
            verify: Some(TlsVerify::Name),
            ..Hop::default()
        },
        Hop {
            auth: Some(true),
            ..Hop::default()
        },
        Hop {
            auth: Some(false),
            ..Hop::default()
        },
        Hop {
            plaintext_auth: true,
            ..Hop::default()
        },
        Hop {
            source: Source::Pool("bulk".into()),
            ..Hop::default()
        },
        Hop {
            source: Source::Address("192.0.2.7".parse().unwrap()),
            ..Hop::default()
        },
        Hop {
            helo_name: Some("out1.example".into()),
            ..Hop::default()
        },
    ];
    let mut seen = vec![plain.site_suffix()];
    for hop in variants {
        let suffix = hop.site_suffix();
        assert!(!seen.contains(&suffix), "{hop:?} → {suffix:?}");
        seen.push(suffix);
    }
}

#[test]
fn the_tls_mode_of_a_hop() {
    use TlsMode::{Disabled, Opportunistic, Required};
    let relay = |tls, plaintext_auth| Hop {
        next_hop: Some(NextHop::parse("[r.test]:587").unwrap()),
        tls,
        plaintext_auth,
        ..Hop::default()
    };
    let mx = |tls| Hop {
        tls,
        ..Hop::default()
    };
    // (hop, tls.mode, the domain's policy, authenticates, mode)
    let cases = [
        (
            relay(None, false),
            Opportunistic,
            Disabled,
            false,
            Opportunistic,
        ),
        (relay(None, false), Opportunistic, Disabled, true, Required),
        (
            relay(None, true),
            Opportunistic,
            Disabled,
            true,
            Opportunistic,
        ),
        (
            relay(Some(Disabled), true),
            Required,
            Required,
            true,
            Disabled,
        ),
        (
            relay(Some(Opportunistic), false),
            Required,
            Required,
            true,
            Opportunistic,
        ),
        (mx(None), Opportunistic, Required, false, Required),
        (mx(None), Required, Disabled, false, Disabled),
        (mx(Some(Required)), Opportunistic, Disabled, false, Required),
    ];
    for (hop, default, domain, auth, want) in cases {
        assert_eq!(
            hop.tls_mode(default, domain, auth),
            want,
            "{hop:?} {default:?} {domain:?} {auth}"
        );
    }
}

#[test]
fn route_keys_keep_sender_rules_apart_and_read_back() {
    let routing = table();
    for (sender, domain, key) in [
        ("a@me.example", "gmail.test", "gmail.test"),
        (
            "a@bulk.example",
            "gmail.test",
            "gmail.test from bulk.example",
        ),
        (
            "a@x.news.example",
            "gmail.test",
            "gmail.test from .news.example",
        ),
        ("a@bulk.example", "internal.test", "internal.test"),
    ] {
        let decision = routing.decide(sender, domain);
        let got = route_key(domain, decision.sender_rule.as_ref());
        assert_eq!(got, key, "{sender} → {domain}");
        let (back, rule) = split_route_key(&got);
        assert_eq!(back, domain);
        assert_eq!(routing.decide_for(back, rule.as_ref()), decision, "{key}");
    }
}

#[test]
fn the_ehlo_name_of_a_connection() {
    let own = Hop {
        helo_name: Some("hop.example".into()),
        ..Hop::default()
    };
    let plain = Hop::default();
    let mut routing = Routing::default();
    // (hop, the source's name, routing.helo_name, the name)
    let cases = [
        (
            &own,
            Some("member.example"),
            Some("routing.example"),
            "hop.example",
        ),
        (
            &plain,
            Some("member.example"),
            Some("routing.example"),
            "member.example",
        ),
        (&plain, None, Some("routing.example"), "routing.example"),
        (&plain, None, None, "host.example"),
    ];
    for (hop, member, default, want) in cases {
        routing.helo_name = default.map(str::to_owned);
        assert_eq!(
            routing.helo_name(hop, member, "host.example"),
            want,
            "{hop:?} {member:?} {default:?}"
        );
    }
}
