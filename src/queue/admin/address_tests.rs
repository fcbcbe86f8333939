use super::*;

#[test]
fn mailboxes_table() {
    let long_local = format!("{}@d.test", "a".repeat(64));
    let too_long_local = format!("{}@d.test", "a".repeat(65));
    let long_label = format!("u@{}.test", "a".repeat(63));
    let too_long_label = format!("u@{}.test", "a".repeat(64));
    let too_long_total = format!("uuu@{}.test", vec!["a".repeat(61); 4].join("."));
    // (address, Ok or the start of the reason)
    let cases: &[(&str, Result<(), &str>)] = &[
        ("user@example.org", Ok(())),
        ("first.last@sub.example.org", Ok(())),
        ("a+tag@d.test", Ok(())),
        ("!#$%&'*+-/=?^_`{|}~@d.test", Ok(())),
        ("\"john doe\"@d.test", Ok(())),
        ("\"a@b\"@d.test", Ok(())),
        ("\"quote\\\"inside\"@d.test", Ok(())),
        ("\"\"@d.test", Ok(())),
        ("u@[192.0.2.1]", Ok(())),
        ("u@[IPv6:2001:db8::1]", Ok(())),
        ("u@[ipv6:::1]", Ok(())),
        ("u@[x-tag:content]", Ok(())),
        ("u@localhost", Ok(())),
        ("u@123.test", Ok(())),
        ("u@xn--bcher-kva.example", Ok(())),
        ("j\u{fc}rgen@d.test", Ok(())),
        ("u@D.TEST", Ok(())),
        (&long_local, Ok(())),
        (&long_label, Ok(())),
        ("user", Err("no @")),
        ("@d.test", Err("empty local part")),
        ("u@", Err("empty domain")),
        (".u@d.test", Err("empty atom")),
        ("u.@d.test", Err("empty atom")),
        ("a..b@d.test", Err("empty atom")),
        ("a b@d.test", Err("local part holds a space")),
        ("a,b@d.test", Err("local part holds a space")),
        ("a@b@d.test", Err("local part holds a space")),
        ("\"open@d.test", Err("unterminated quoted")),
        ("\"a\"b\"@d.test", Err("unescaped")),
        ("\"a\\\"@d.test", Err("unterminated quoted")),
        ("\"tab\there\"@d.test", Err("control character")),
        ("u@d..test", Err("empty label")),
        ("u@.d.test", Err("empty label")),
        ("u@d.test.", Err("domain ends with a dot")),
        ("u@-d.test", Err("domain label starts or ends")),
        ("u@d-.test", Err("domain label starts or ends")),
        ("u@d_x.test", Err("domain holds a character")),
        ("u@d test", Err("domain holds a character")),
        ("u@b\u{fc}cher.example", Err("non-ASCII domain")),
        ("u@[192.0.2.256]", Err("invalid address literal")),
        ("u@[192.0.2.1", Err("address literal without")),
        ("u@[IPv6:zz::1]", Err("invalid IPv6")),
        ("u@[tag:]", Err("invalid general")),
        ("u\r\n@d.test", Err("local part holds a space")),
        ("u@d.test\r\nRCPT TO:<x@y>", Err("local part holds a space")),
        ("u@d.test\r\nX", Err("domain holds a character")),
        (&too_long_local, Err("local part longer than 64")),
        (&too_long_label, Err("domain label longer than 63")),
        (&too_long_total, Err("longer than 254")),
    ];
    for (address, want) in cases {
        let got = check_mailbox(address);
        match (want, got) {
            (Ok(()), Ok(())) => {}
            (Err(start), Err(reason)) => assert!(
                reason.starts_with(start),
                "check_mailbox({address:?}) = {reason:?}, want a reason starting {start:?}"
            ),
            (want, got) => panic!("check_mailbox({address:?}) = {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn senders_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("", Some("")),
        ("<>", Some("")),
        ("a@d.test", Some("a@d.test")),
        ("<a@d.test>", Some("a@d.test")),
        ("a@D.Test", Some("a@D.Test")),
        ("a@[192.0.2.1]", Some("a@[192.0.2.1]")),
        ("<a@d.test", None),
        ("a@d.test>", None),
        ("<<>>", None),
        ("nobody", None),
    ];
    for (given, want) in cases {
        let got = parse_sender(given);
        assert_eq!(
            got.as_deref().ok(),
            *want,
            "parse_sender({given:?}) = {got:?}"
        );
    }
}

#[test]
fn recipients_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("b@d.test", Some("b@d.test")),
        ("<b@d.test>", Some("b@d.test")),
        ("Bob@D.Test", Some("Bob@d.test")),
        ("\"x y\"@d.test", Some("\"x y\"@d.test")),
        ("", None),
        ("<>", None),
        ("b@[192.0.2.1]", None),
        ("b@d.test.", None),
        ("b", None),
    ];
    for (given, want) in cases {
        let got = parse_recipient(given);
        assert_eq!(
            got.as_deref().ok(),
            *want,
            "parse_recipient({given:?}) = {got:?}"
        );
    }
}

#[test]
fn errors_name_the_role_and_quote_the_address() {
    let e = parse_recipient("bad address@d.test").expect_err("a space");
    let text = e.to_string();
    assert!(
        text.starts_with("invalid recipient address \"bad address@d.test\": local part"),
        "{text}"
    );
    let e = parse_sender("<x@y").expect_err("unbalanced");
    assert_eq!(
        e.to_string(),
        "invalid sender address \"<x@y\": unbalanced angle brackets"
    );
    let e = parse_recipient("b@[10.0.0.1]").expect_err("literal");
    assert!(
        e.to_string().contains("address literals cannot be queued"),
        "{e}"
    );
}

#[test]
fn accepted_addresses_render_into_an_envelope_that_parses_back() {
    for address in [
        "user@example.org",
        "\"john doe\"@d.test",
        "\"a@b\"@d.test",
        "\"quote\\\"inside, comma\"@d.test",
        "j\u{fc}rgen@d.test",
        "!#$%&'*+-/=?^_`{|}~@d.test",
    ] {
        let rcpt = parse_recipient(address).expect(address);
        let block = crate::queue::render_envelope(
            "",
            std::slice::from_ref(&rcpt),
            &Default::default(),
            None,
            &[],
        )
        .unwrap_or_else(|e| panic!("render {address:?}: {e}"));
        let env = crate::queue::parse_envelope(&block)
            .unwrap_or_else(|e| panic!("parse back {address:?}: {e}"));
        assert_eq!(env.recipients, [rcpt], "{address:?} round trip");
    }
}
