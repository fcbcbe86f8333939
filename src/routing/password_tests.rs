use super::*;

fn hop(text: &str) -> NextHop {
    NextHop::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// `(key looked up, user, password)` for each entry of `text`.
fn read(text: &str) -> Vec<(String, String, String)> {
    let map = PasswordMap::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    map.iter()
        .map(|(key, c)| (key.clone(), c.user.clone(), c.password.expose().to_owned()))
        .collect()
}

/// `(key, user, password)`.
type Entry<'a> = (&'a str, &'a str, &'a str);

fn entry(key: &str, user: &str, password: &str) -> (String, String, String) {
    (key.into(), user.into(), password.into())
}

#[test]
fn reads_entries_as_postfix_does() {
    let table: &[(&str, &[Entry])] = &[
        ("", &[]),
        ("# only a comment\n\n   \n\t# indented comment\n", &[]),
        (
            "[smtp.example.net]:587 relay-user:s3cret\n",
            &[("[smtp.example.net]:587", "relay-user", "s3cret")],
        ),
        // Key case and a trailing dot do not matter; the port does.
        (
            "[SMTP.Example.net.]:587\tu:p\n[smtp.example.net] v:q",
            &[
                ("[smtp.example.net]", "v", "q"),
                ("[smtp.example.net]:587", "u", "p"),
            ],
        ),
        // The password is all after the first ':', blanks and ':' too;
        // blanks around the value go.
        (
            "[h.example]   user:pa:ss word  \t",
            &[("[h.example]", "user", "pa:ss word")],
        ),
        // A user may hold blanks and '@', never ':'.
        (
            "[h.example] me@example.com:p w",
            &[("[h.example]", "me@example.com", "p w")],
        ),
        (
            "[h.example] John Smith:pw",
            &[("[h.example]", "John Smith", "pw")],
        ),
        // As smtp_sasl_glue.c splits: a blank after ':' is the password's.
        ("[h.example] user: pw", &[("[h.example]", "user", " pw")]),
        // Every form of next hop is a key, the transport left out.
        (
            "relay.example u:p\nrelay.example:2525 u:p\n[192.0.2.1]:26 u:p\n\
             [ipv6:2001:db8::1] u:p\nsmtps:[h.example] u:p",
            &[
                ("[192.0.2.1]:26", "u", "p"),
                ("[h.example]", "u", "p"),
                ("[ipv6:2001:db8::1]", "u", "p"),
                ("relay.example", "u", "p"),
                ("relay.example:2525", "u", "p"),
            ],
        ),
        // A line that starts with whitespace continues the entry, joined
        // without the newline (readlline(3)), across comments and blanks.
        (
            "[h.example]\n  user:pw\n# note\n\n\tmore\nnext.example u:p",
            &[
                ("[h.example]", "user", "pw\tmore"),
                ("next.example", "u", "p"),
            ],
        ),
        // CRLF line ends.
        (
            "[a.example] u:p\r\n[b.example]\r\n  v:q\r\n",
            &[("[a.example]", "u", "p"), ("[b.example]", "v", "q")],
        ),
    ];
    for (text, want) in table {
        let want: Vec<_> = want.iter().map(|(k, u, p)| entry(k, u, p)).collect();
        assert_eq!(read(text), want, "{text:?}");
    }
}

#[test]
fn looks_up_a_next_hop_by_its_key() {
    let map = PasswordMap::parse(
        "[smtp.example.net]:587 a:1\n[smtp.example.net] b:2\nrelay.example c:3\n",
    )
    .expect("a valid file");
    let table = [
        ("[SMTP.Example.net]:587", Some("a")),
        ("smtp:[smtp.example.net]:587", Some("a")),
        ("[smtp.example.net]", Some("b")),
        ("smtps:[smtp.example.net]", Some("b")),
        // As Postfix: the port is part of the key.
        ("[smtp.example.net]:465", None),
        ("smtp.example.net:587", None),
        ("relay.example", Some("c")),
        ("[relay.example]", None),
    ];
    for (text, want) in table {
        let got = map.get(&hop(text)).map(|c| c.user.as_str());
        assert_eq!(got, want, "{text}");
    }
    assert_eq!(map.len(), 3);
    assert!(!map.is_empty());
    assert!(PasswordMap::parse("# none\n").expect("empty").is_empty());
}

#[test]
fn refuses_what_postfix_would_skip_or_misread() {
    use PasswordFileError as E;
    let table = [
        ("[h.example]", E::NoValue { line: 1 }),
        ("[h.example]   \t", E::NoValue { line: 1 }),
        ("# c\n\n[h.example]user:pw", E::NoValue { line: 3 }),
        ("[h.example] userpw", E::NoColon { line: 1 }),
        ("[h.example] :pw", E::EmptyUser { line: 1 }),
        ("[h.example] user:", E::EmptyPassword { line: 1 }),
        ("[h.example] user:   ", E::EmptyPassword { line: 1 }),
        (
            "a.example u:p\n[x u:p",
            E::Key {
                line: 2,
                key: "[x".into(),
                error: NextHopError::Unclosed,
            },
        ),
        (
            "[h.example]:0 u:p",
            E::Key {
                line: 1,
                key: "[h.example]:0".into(),
                error: NextHopError::Port("0".into()),
            },
        ),
        (
            "[h.example]:0 u:p",
            E::Key {
                line: 1,
                key: "[h.example]:0".into(),
                error: NextHopError::Port("0".into()),
            },
        ),
        (
            "lmtp:[h.example] u:p",
            E::Key {
                line: 1,
                key: "lmtp:[h.example]".into(),
                error: NextHopError::Transport("lmtp".into()),
            },
        ),
        (
            "h_x.example u:p",
            E::Key {
                line: 1,
                key: "h_x.example".into(),
                error: NextHopError::Host("h_x.example".into()),
            },
        ),
        (
            "user1@example.com u:p",
            E::SenderKey {
                line: 1,
                key: "user1@example.com".into(),
            },
        ),
        (
            "@example.com u:p",
            E::SenderKey {
                line: 1,
                key: "@example.com".into(),
            },
        ),
        // A key with a ':' no next hop has there may be a password.
        ("mary:secret [h.example]:587", E::HiddenKey { line: 1 }),
        ("[h.example]:secret u:p", E::HiddenKey { line: 1 }),
        ("smtp:sec_ret u:p", E::HiddenKey { line: 1 }),
        ("mary@x.example:secret u:p", E::HiddenKey { line: 1 }),
        ("mary:123456 [h.example]", E::HiddenKey { line: 1 }),
        (
            "[h.example]:587 a:1\n# again\n[H.example]:587 b:2",
            E::Duplicate {
                line: 3,
                key: "[h.example]:587".into(),
                first: 1,
            },
        ),
        (
            "smtp:relay.example u:p\nrelay.example. v:q",
            E::Duplicate {
                line: 2,
                key: "relay.example".into(),
                first: 1,
            },
        ),
        ("# c\n    [h.example] u:p", E::Continuation { line: 2 }),
        ("[h.example] u:p\0w", E::Nul { line: 1 }),
    ];
    for (text, want) in table {
        let got = PasswordMap::parse(text);
        assert_eq!(got, Err(want.clone()), "{text:?}");
        assert_eq!(want.line(), got.err().map_or(0, |e| e.line()), "{text:?}");
    }
}

#[test]
fn errors_say_the_line_and_what_is_wrong() {
    let table = [
        (
            "[h.example] userpw",
            "line 1: no ':' between user and password",
        ),
        (
            "a.example u:p\n\n\n[x u:p",
            "line 4: key \"[x\" is not a next hop: no ']' after '['",
        ),
        (
            "[h.example]:587 a:1\n\n\n\n[h.example]:587 b:2",
            "line 5: [h.example]:587 is given twice (first on line 1)",
        ),
        (
            "mary:secret [h.example]:587",
            "line 1: the key is not a next hop (is the line \"[host]:port user:password\"?)",
        ),
    ];
    for (text, want) in table {
        let got = PasswordMap::parse(text)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got, Err(want.to_owned()), "{text:?}");
    }
}

/// For every kind of error, a line whose user and password are known:
/// neither shows in the message, however the line is wrong.
#[test]
fn no_error_shows_a_user_or_password() {
    let user = "alice-user";
    let pw = "Tr0ub4dor&3";
    let table = [
        format!("[h.example]{user}:{pw}"),
        format!("{user}:{pw}"),
        format!("{user}:{pw} [h.example]:587"),
        format!("[h.example] {user}{pw}"),
        format!("[h.example] :{pw}"),
        format!("[h.example] {user}:"),
        format!("[x {user}:{pw}"),
        format!("[h.example]:{pw} {user}:{pw}"),
        format!("smtp:{pw} {user}:{pw}"),
        format!("{pw}@example.com:{pw} {user}:{pw}"),
        format!("{user}@{pw}:x {user}:{pw}"),
        format!("[h.example] {user}:{pw}\n[h.example] {user}:{pw}"),
        format!("  [h.example] {user}:{pw}"),
        format!("[h.example] {user}:{pw}\0"),
        format!("someone@example.com {user}:{pw}"),
        format!("h_x.example {user}:{pw}"),
    ];
    let mut kinds = std::collections::HashSet::new();
    for text in &table {
        let e = PasswordMap::parse(text).expect_err(text);
        let shown = format!("{e} {e:?}");
        for secret in [user, pw] {
            assert!(!shown.contains(secret), "{text:?} gave {shown}");
        }
        kinds.insert(std::mem::discriminant(&e));
    }
    assert_eq!(kinds.len(), 10, "every kind of error is covered");
}

#[test]
fn the_map_formats_without_passwords() {
    let map = PasswordMap::parse("[h.example]:587 relay-user:hunter2-pass").expect("valid");
    let shown = format!("{map:?} {map:#?}");
    assert!(!shown.contains("hunter2-pass"), "{shown}");
    assert!(shown.contains("relay-user"), "{shown}");
}
