use super::*;
use crate::queue::{parse_envelope, EnvelopeError};

fn parse(block: &str) -> Result<crate::queue::Envelope, EnvelopeError> {
    parse_envelope(block.as_bytes())
}

#[test]
fn notify_reads_never_and_lists_in_any_case_and_writes_them_canonically() {
    assert_eq!(Notify::parse("never"), Ok(Notify::NEVER));
    let all = Notify::parse("delay,Success,FAILURE").unwrap();
    assert_eq!(
        all,
        Notify {
            success: true,
            failure: true,
            delay: true
        }
    );
    assert_eq!(all.to_string(), "SUCCESS,FAILURE,DELAY");
    assert_eq!(Notify::NEVER.to_string(), "NEVER");
    assert_eq!(Notify::parse("FAILURE").unwrap().to_string(), "FAILURE");
    for bad in [
        "",
        "NEVER,FAILURE",
        "FAILURE,NEVER",
        "SUCCESS,SUCCESS",
        "ALWAYS",
        "FAILURE,",
    ] {
        assert!(Notify::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn orcpt_needs_a_type_and_xtext_for_rfc822() {
    let o = Orcpt::parse("rfc822;a+2Bb@d.test").unwrap();
    assert_eq!(o.addr_type, "rfc822");
    assert_eq!(o.address, "a+2Bb@d.test");
    assert_eq!(o.to_string(), "rfc822;a+2Bb@d.test");
    assert_eq!(o.for_report(), "rfc822;a+b@d.test");
    let utf8 = Orcpt::parse("utf-8;用户@例子.test").unwrap();
    assert_eq!(utf8.for_report(), "utf-8;用户@例子.test");
    for bad in [
        "a@d.test",
        ";a@d.test",
        "rfc822;",
        "rfc 822;a@d.test",
        "rfc822;a=b@d.test",
        "rfc822;a+2b@d.test",
        "utf-8;a b@d.test",
    ] {
        assert!(Orcpt::parse(bad).is_err(), "{bad:?}");
    }
    let long = format!("rfc822;{}@d.test", "a".repeat(500));
    assert!(Orcpt::parse(&long).is_err());
}

#[test]
fn recipient_parameters_round_trip_through_their_text() {
    let p = RcptParams::parse("notify=success,failure  ORCPT=rfc822;a@d.test").unwrap();
    assert_eq!(
        p.to_string(),
        "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@d.test"
    );
    assert_eq!(RcptParams::parse(&p.to_string()), Ok(p));
    for bad in [
        "NOTIFY=NEVER NOTIFY=FAILURE",
        "ORCPT=rfc822;a@d ORCPT=rfc822;b@d",
        "RRVS=2030-01-01T00:00:00Z",
        "NOTIFY",
    ] {
        assert!(RcptParams::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn notify_decides_which_notices_are_wanted() {
    let with = |n| RcptParams {
        notify: Some(n),
        orcpt: None,
    };
    assert!(RcptParams::wants_failure(None));
    assert!(RcptParams::wants_delay(None));
    assert!(!RcptParams::wants_success(None));
    let never = with(Notify::NEVER);
    assert!(!RcptParams::wants_failure(Some(&never)));
    assert!(!RcptParams::wants_delay(Some(&never)));
    let success = with(Notify::parse("SUCCESS").unwrap());
    assert!(RcptParams::wants_success(Some(&success)));
    assert!(!RcptParams::wants_failure(Some(&success)));
    let orcpt_only = RcptParams {
        notify: None,
        orcpt: Some(Orcpt::parse("rfc822;x@y.test").unwrap()),
    };
    assert!(RcptParams::wants_failure(Some(&orcpt_only)));
}

#[test]
fn a_field_with_one_bracketed_recipient_and_parameters_is_read_whole() {
    assert_eq!(
        split_recipient_with_params("<a@d.test> NOTIFY=SUCCESS,FAILURE"),
        Some(("<a@d.test>", "NOTIFY=SUCCESS,FAILURE"))
    );
    assert_eq!(
        split_recipient_with_params(r#"<"x>y"@d.test>  ORCPT=rfc822;a,b@d"#),
        Some((r#"<"x>y"@d.test>"#, "ORCPT=rfc822;a,b@d"))
    );
    assert_eq!(split_recipient_with_params("<a@d.test>, <b@d.test>"), None);
    assert_eq!(split_recipient_with_params("<a@d.test> , <b@d.test>"), None);
    assert_eq!(split_recipient_with_params("<a@d.test>"), None);
    assert_eq!(split_recipient_with_params("a@d.test, b@d.test"), None);
}

const FULL: &str = "X-Postman-From: <s@src.test>\r\n\
    X-Postman-Date: 1767225600\r\n\
    X-Postman-Ret: HDRS\r\n\
    X-Postman-Envid: QQ314159+2Bx\r\n\
    X-Postman-Requiretls: yes\r\n\
    X-Postman-To: <a@d1.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@d1.test\r\n\
    X-Postman-To: <b@d1.test> NOTIFY=NEVER\r\n\
    X-Postman-To: <c@d1.test>, <d@d1.test>\r\n\
    \r\nbody";

#[test]
fn the_issues_example_reads_every_parameter() {
    let env = parse(FULL).unwrap();
    assert_eq!(
        env.recipients,
        ["a@d1.test", "b@d1.test", "c@d1.test", "d@d1.test"]
    );
    assert_eq!(env.params.ret, Some(Ret::Hdrs));
    assert_eq!(env.params.envid.as_deref(), Some("QQ314159+2Bx"));
    assert_eq!(env.params.envid_printable().as_deref(), Some("QQ314159+x"));
    assert!(env.params.requiretls);
    let a = env.recipient_params("a@d1.test").unwrap();
    assert_eq!(
        a.to_string(),
        "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@d1.test"
    );
    assert_eq!(
        env.recipient_params("b@d1.test").unwrap().notify,
        Some(Notify::NEVER)
    );
    assert_eq!(env.recipient_params("c@d1.test"), None);
    assert_eq!(env.rcpt_params.len(), 2);
    // The message parameters stay among the fields written back.
    assert_eq!(env.extra.len(), 3);
    assert_eq!(env.params.fields(), env.extra);
}

#[test]
fn a_file_without_parameters_has_none() {
    let env =
        parse("X-Postman-From: <s@src.test>\r\nX-Postman-To: a@d.test, b@d.test\r\n\r\n").unwrap();
    assert_eq!(env.params, MsgParams::default());
    assert!(env.rcpt_params.is_empty());
}

#[test]
fn a_duplicates_parameters_go_with_it_and_the_first_mention_keeps_its_own() {
    let env = parse(
        "X-Postman-From: <>\r\n\
         X-Postman-To: <a@d.test> NOTIFY=NEVER\r\n\
         X-Postman-To: <a@D.TEST> NOTIFY=SUCCESS\r\n\
         X-Postman-To: b@d.test\r\n\
         X-Postman-To: <b@d.test> NOTIFY=DELAY\r\n\r\n",
    )
    .unwrap();
    assert_eq!(env.recipients, ["a@d.test", "b@d.test"]);
    assert_eq!(env.duplicates, 2);
    assert_eq!(
        env.recipient_params("a@d.test").unwrap().notify,
        Some(Notify::NEVER)
    );
    assert_eq!(env.recipient_params("b@d.test"), None);
}

#[test]
fn malformed_parameters_are_errors_that_name_the_field_and_line() {
    let cases = [
        (
            "X-Postman-To: <a@d.test> NOTIFY=SOMETIMES",
            "X-Postman-To",
            2,
        ),
        ("X-Postman-To: <a@d.test> FOO=1", "X-Postman-To", 2),
        (
            "X-Postman-To: <a@d.test> ORCPT=rfc822;a b",
            "X-Postman-To",
            2,
        ),
        (
            "X-Postman-Ret: PARTIAL\r\nX-Postman-To: a@d.test",
            "X-Postman-Ret",
            2,
        ),
        (
            "X-Postman-Envid: a=b\r\nX-Postman-To: a@d.test",
            "X-Postman-Envid",
            2,
        ),
        (
            "X-Postman-Requiretls: no\r\nX-Postman-To: a@d.test",
            "X-Postman-Requiretls",
            2,
        ),
    ];
    for (fields, want_header, want_line) in cases {
        let block = format!("X-Postman-From: <>\r\n{fields}\r\n\r\n");
        match parse(&block) {
            Err(EnvelopeError::BadParam { header, line, .. }) => {
                assert_eq!((header, line), (want_header, want_line), "{fields}")
            }
            other => panic!("{fields}: {other:?}"),
        }
    }
    let long = format!(
        "X-Postman-From: <>\r\nX-Postman-Envid: {}\r\nX-Postman-To: a@d.test\r\n\r\n",
        "x".repeat(101)
    );
    assert!(matches!(parse(&long), Err(EnvelopeError::BadParam { .. })));
    let twice = "X-Postman-From: <>\r\nX-Postman-Ret: FULL\r\nx-postman-ret: HDRS\r\n\
                 X-Postman-To: a@d.test\r\n\r\n";
    assert!(matches!(
        parse(twice),
        Err(EnvelopeError::DuplicateParam {
            header: "X-Postman-Ret",
            first_line: 2,
            line: 3
        })
    ));
    let err = parse("X-Postman-From: <>\r\nX-Postman-To: <a@d.test> NOTIFY=NEVER,SUCCESS\r\n\r\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("X-Postman-To") && err.contains("line 2"),
        "{err}"
    );
}
