//! Tests of `[routing]`: next hops in every place they may be written,
//! pools and addresses, and the errors (each naming the full key and the
//! layer it came from).

use self::file_error as error;
use super::tests::{config_file, expect_err, jail, load_default};
use super::*;
use crate::routing::{Routing, Source, Via};

/// The error of a `config/postman.toml` that says `text`, as shown.
pub(super) fn file_error(text: &str) -> String {
    let mut message = String::new();
    jail(|jail| {
        config_file(jail, text);
        message = expect_err(load_default(&Flags::default()), text).to_string();
    });
    message
}

fn routing(text: &str) -> Routing {
    let mut routing = None;
    jail(|jail| {
        config_file(jail, text);
        let loaded = load_default(&Flags::default()).unwrap_or_else(|e| panic!("{text}\n{e}"));
        // What check-config prints reads back as the same settings.
        let printed = loaded.settings.to_toml().expect("settings print as TOML");
        let again: Settings = toml::from_str(&printed).unwrap_or_else(|e| panic!("{printed}\n{e}"));
        assert_eq!(again, loaded.settings, "{printed}");
        routing = Some(loaded.config.routing);
    });
    routing.expect("the jail ran")
}

#[test]
fn no_routing_table_is_mx_delivery() {
    assert_eq!(routing(""), Routing::default());
    assert_eq!(routing("[routing]\nrelayhost = \"\"\n"), Routing::default());
}

#[test]
fn every_kind_of_entry_is_read() {
    let r = routing(
        r#"
[routing]
relayhost = "[smtp.relay.test]:587"
fallback_relay = ["[backup.test]", { nexthop = "smtps:[backup2.test]", auth = false }]
password_file = "/etc/postman/relay-passwords"
bind_address = "192.0.2.10"
bind_address6 = "2001:db8::10"
helo_name = "out.example.org"

[routing.transport]
"internal.test" = "[10.0.0.5]:25"
".Internal.Test" = { nexthop = "mx", source = "bulk" }
"source.test" = { nexthop = "[h.test]", source = "192.0.2.20" }
"partner.test" = { nexthop = "smtps:[mail.partner.test]", auth = true, verify = "name", helo_name = "p.example.org" }

[routing.source.bulk]
addresses = [ { ip = "192.0.2.11", weight = 3, helo_name = "bulk1.example.org" },
              { ip = "192.0.2.12" } ]
"#,
    );
    let relay = r.relayhost.as_ref().expect("relayhost");
    assert_eq!(relay.describe(), "[smtp.relay.test]:587");
    assert_eq!(relay.via, Via::Relayhost);
    assert_eq!(r.fallback.len(), 2);
    assert!(r.fallback.iter().all(|h| h.via == Via::Fallback));
    assert_eq!(r.fallback[1].describe(), "smtps:[backup2.test]");
    assert_eq!(r.fallback[1].auth, Some(false));
    assert_eq!(
        r.password_file.as_deref(),
        Some(Path::new("/etc/postman/relay-passwords"))
    );
    assert_eq!(r.bind_address, Some("192.0.2.10".parse().unwrap()));
    assert_eq!(r.bind_address6, Some("2001:db8::10".parse().unwrap()));
    assert_eq!(r.helo_name.as_deref(), Some("out.example.org"));

    let decision = r.decide("a@me.example", "internal.test");
    assert_eq!(decision.hop.describe(), "[10.0.0.5]:25");
    assert_eq!(decision.hop.via, Via::Transport);
    let below = r.decide("a@me.example", "x.internal.test");
    assert_eq!(below.hop.describe(), "mx", "a transport \"mx\" entry");
    assert_eq!(below.hop.source, Source::Pool("bulk".into()));
    let partner = r.decide("", "partner.test");
    assert_eq!(partner.hop.auth, Some(true));
    assert_eq!(partner.hop.verify, Some(TlsVerify::Name));
    assert_eq!(partner.hop.helo_name.as_deref(), Some("p.example.org"));
    let source = r.decide("", "source.test");
    assert_eq!(
        source.hop.source,
        Source::Address("192.0.2.20".parse().unwrap())
    );
    assert_eq!(
        r.decide("x@other.example", "gmail.test").hop.via,
        Via::Relayhost
    );

    let pool = &r.pools["bulk"];
    assert_eq!(pool.len(), 2);
    assert_eq!((pool[0].weight, pool[1].weight), (3, 1));
    assert_eq!(pool[0].helo_name.as_deref(), Some("bulk1.example.org"));
}

#[test]
fn bad_entries_name_their_key() {
    let cases = [
        (
            "[routing]\nrelayhost = \"[smtp.relay.test\"\n",
            "`routing.relayhost`",
            "no ']' after '['",
        ),
        (
            "[routing]\nrelayhost = \"mx\"\n",
            "`routing.relayhost`",
            "must be a relay",
        ),
        (
            "[routing.transport]\n\"example.com\" = \"[h.test]:99999\"\n",
            "`routing.transport.\"example.com\"`",
            "bad port",
        ),
        (
            "[routing.transport]\n\"example.com\" = { nexthop = \"lmtp:[h.test]\" }\n",
            "`routing.transport.\"example.com\".nexthop`",
            "unknown transport",
        ),
        (
            "[routing.transport]\n\"*.example.com\" = \"[h.test]\"\n",
            "`routing.transport.\"*.example.com\"`",
            "the key must be a domain",
        ),
        (
            "[routing.transport]\n\"Example.com\" = \"[h.test]\"\n\"example.com.\" = \"[i.test]\"\n",
            "routing.transport.",
            "names the same domain",
        ),
        (
            "[routing.transport]\n\"example.com\" = { nexthop = \"[h.test]\", auth = true }\n",
            "`routing.transport.\"example.com\".auth`",
            "needs routing.password_file",
        ),
        (
            "[routing]\npassword_file = \"/p\"\n[routing.transport]\n\"example.com\" = { nexthop = \"[h.test]\", auth = true, tls = \"disabled\" }\n",
            "`routing.transport.\"example.com\".tls`",
            "plaintext_auth = true",
        ),
        (
            "[routing]\npassword_file = \"/p\"\n[routing.transport]\n\"example.com\" = { nexthop = \"mx\", auth = true }\n",
            "`routing.transport.\"example.com\".auth`",
            "AUTH is for relays",
        ),
        (
            "[routing]\npassword_file = \"relative/p\"\n",
            "`routing.password_file`",
            "absolute path",
        ),
        (
            "[routing]\nbind_address = \"2001:db8::1\"\n",
            "`routing.bind_address`",
            "IPv4",
        ),
        (
            "[routing]\nbind_address6 = \"192.0.2.1\"\n",
            "`routing.bind_address6`",
            "IPv6",
        ),
        (
            "[routing]\nhelo_name = \"bad name\"\n",
            "`routing.helo_name`",
            "host name",
        ),
        (
            "[routing.transport]\n\"example.com\" = { nexthop = \"[h.test]\", source = \"nopool\" }\n",
            "`routing.transport.\"example.com\".source`",
            "pool",
        ),
        (
            "[routing.source.bulk]\naddresses = []\n",
            "`routing.source.\"bulk\".addresses`",
            "needs an address",
        ),
        (
            "[routing.source.bulk]\naddresses = [{ ip = \"192.0.2.1\", weight = 0 }]\n",
            "`routing.source.\"bulk\".addresses[0].weight`",
            "at least 1",
        ),
        (
            "[routing.source.bulk]\naddresses = [{ ip = \"192.0.2.1\" }, { ip = \"192.0.2.1\" }]\n",
            "`routing.source.\"bulk\".addresses[1].ip`",
            "twice",
        ),
        (
            "[routing.source.bulk]\naddresses = [{ ip = \"h.test\" }]\n",
            "`routing.source.\"bulk\".addresses[0].ip`",
            "address",
        ),
        (
            "[routing.sender_relayhost]\n\"news.example\" = \"lmtp:[h.test]\"\n",
            "`routing.sender_relayhost.\"news.example\"`",
            "unknown transport",
        ),
    ];
    for (text, key, reason) in cases {
        let message = error(text);
        assert!(
            message.contains(key),
            "{text}\n→ {message}\n(wanted key {key})"
        );
        assert!(
            message.contains(reason),
            "{text}\n→ {message}\n(wanted {reason:?})"
        );
        assert!(
            message.contains("postman.toml"),
            "names the file: {message}"
        );
    }
}

#[test]
fn an_unknown_security_mode_is_a_load_error_naming_the_key() {
    let message = error(
        "[routing.transport]\n\"example.com\" = { nexthop = \"[h.test]\", tls = \"sometimes\" }\n",
    );
    assert!(message.contains("example.com"), "{message}");
    let message = error("[routing]\nrelayhost = { nexthop = \"[h.test]\", colour = \"red\" }\n");
    assert!(message.contains("relayhost"), "{message}");
}
