//! Tests of the mailbox rules, table-driven.

use super::*;

#[test]
fn mailbox_problems() {
    let long_local = format!("{}@d.test", "a".repeat(65));
    // (address, the problem or None)
    let cases: &[(&str, Option<&str>)] = &[
        ("a@d.test", None),
        ("\"a,b\"@d.test", None),
        ("\"say \\\"hi\\\"\"@d.test", None),
        ("x@[192.0.2.1]", None),
        ("jöran@bücher.example", None),
        ("a.test", Some("no @")),
        ("@d.test", Some("empty local part")),
        ("a@", Some("empty domain")),
        (&long_local, Some("longer than 64 octets")),
        ("a\u{7}@d.test", Some("control character")),
        ("\u{3000}a@d.test", Some("white space")),
        ("a@d.test\u{a0}", Some("white space")),
        ("\"a\"b>,c\"@d.test", Some("unescaped")),
        ("\"a\\\"@d.test", Some("unescaped")),
        ("a b@d.test", Some("quote it")),
        ("a,b@d.test", Some("quote it")),
        ("a@d,test", Some("domain holds")),
    ];
    for (address, want) in cases {
        let got = mailbox_problem(address);
        match (got, want) {
            (None, None) => {}
            (Some(problem), Some(want)) => {
                assert!(
                    problem.contains(want),
                    "{address:?}: {problem:?}, want {want:?}"
                )
            }
            _ => panic!("{address:?}: {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn lists_split_outside_quotes_and_brackets() {
    let cases: &[(&str, &[&str])] = &[
        ("a@d,b@d", &["a@d", "b@d"]),
        ("<a@d>, <b@d>", &["<a@d>", " <b@d>"]),
        ("\"x,y\"@d,b@d", &["\"x,y\"@d", "b@d"]),
        ("\"x\\\",y\"@d", &["\"x\\\",y\"@d"]),
        ("<@a,@b:u@d>,c@d", &["<@a,@b:u@d>", "c@d"]),
        ("", &[""]),
    ];
    for (list, want) in cases {
        assert_eq!(split_list(list), *want, "{list:?}");
    }
}

#[test]
fn each_recipient_is_kept_once() {
    let many = vec!["u@d.test"; 500].join(", ");
    // (list, recipients kept, duplicates)
    let cases: &[(&str, &[&str], usize)] = &[
        ("a@d.test", &["a@d.test"], 0),
        (
            "a@d.test, A@D.TEST, a@D.test, <a@d.test.>, b@d.test, a@d.test",
            &["a@d.test", "A@D.TEST", "b@d.test"],
            3,
        ),
        (&many, &["u@d.test"], 499),
        (
            "jöran@bücher.example, jöran@xn--bcher-kva.example",
            &["jöran@bücher.example"],
            1,
        ),
        // Domains with no A-label form are not all the same domain (the
        // envelope fuzz target found two counted as one).
        (
            "x@\u{fffd}\u{fffd}, x@\u{fffd}\u{fffd}\u{fffd}, x@\u{fffd}\u{fffd}",
            &["x@\u{fffd}\u{fffd}", "x@\u{fffd}\u{fffd}\u{fffd}"],
            1,
        ),
    ];
    for (list, want, duplicates) in cases {
        let block = format!("X-Postman-From: <>\nX-Postman-To: {list}\n\n");
        let env = crate::queue::parse_envelope(block.as_bytes()).expect("parses");
        assert_eq!(env.recipients, *want, "{list}");
        assert_eq!(env.duplicates, *duplicates, "{list}");
    }
}
