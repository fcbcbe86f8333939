use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

/// RFC 8461 §3.2's example.
const EXAMPLE: &str = "version: STSv1\nmode: enforce\nmx: mail.example.com\n\
                       mx: *.example.net\nmx: backupmx.example.com\nmax_age: 604800\n";

fn policy(text: &str) -> Policy {
    Policy::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn the_rfc_example_parses() {
    let p = policy(EXAMPLE);
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.max_age, 604_800);
    let mx: Vec<String> = p.mx.iter().map(ToString::to_string).collect();
    assert_eq!(
        mx,
        ["mail.example.com", "*.example.net", "backupmx.example.com"]
    );
    assert_eq!(Policy::parse(&p.to_string()), Ok(p));
}

#[test]
fn line_ends_spaces_field_order_and_unknown_fields_are_tolerated() {
    let p = policy(
        "mx:   MX1.Example.COM.  \r\nfuture_field: whatever=1\r\nmax_age:86400\r\n\
         mode:\ttesting\r\nversion: STSv1",
    );
    assert_eq!(p.mode, Mode::Testing);
    assert_eq!(p.max_age, 86_400);
    assert!(p.matches("mx1.example.com"));
    let none = policy("version: STSv1\nmode: none\nmax_age: 0\n");
    assert_eq!((none.mode, none.mx.len()), (Mode::None, 0));
}

#[test]
fn malformed_policies_are_no_policies() {
    let cases = [
        (
            "mode: enforce\nmx: a.test\nmax_age: 1\n",
            PolicyError::Missing("version"),
        ),
        (
            "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
            PolicyError::BadVersion("STSv2".into()),
        ),
        (
            "version: STSv1\nmx: a.test\nmax_age: 1\n",
            PolicyError::Missing("mode"),
        ),
        (
            "version: STSv1\nmode: Enforce\nmx: a.test\nmax_age: 1\n",
            PolicyError::BadMode("Enforce".into()),
        ),
        (
            "version: STSv1\nmode: enforce\nmode: testing\nmx: a.test\nmax_age: 1\n",
            PolicyError::Duplicate("mode"),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.test\n",
            PolicyError::Missing("max_age"),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n",
            PolicyError::BadMaxAge("31557601".into()),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 00000000001\n",
            PolicyError::BadMaxAge("00000000001".into()),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n",
            PolicyError::BadMaxAge("-1".into()),
        ),
        // A typo leaves no mx: invalid, not "no host matches".
        (
            "version: STSv1\nmode: enforce\nnmx: a.test\nmax_age: 1\n",
            PolicyError::NoMx("enforce"),
        ),
        (
            "version: STSv1\nmode: testing\nmax_age: 1\n",
            PolicyError::NoMx("testing"),
        ),
        (
            "version: STSv1\nmode: enforce\nmx a.test\nmax_age: 1\n",
            PolicyError::NotAField(3),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: a..test\nmax_age: 1\n",
            PolicyError::BadMx("a..test".into()),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: *.*.test\nmax_age: 1\n",
            PolicyError::BadMx("*.*.test".into()),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 1\n",
            PolicyError::BadMx("localhost".into()),
        ),
        (
            "version: STSv1\nmode: enforce\nmx: mx.tést\nmax_age: 1\n",
            PolicyError::NotAscii,
        ),
    ];
    for (text, want) in cases {
        assert_eq!(Policy::parse(text), Err(want), "{text:?}");
    }
}

#[test]
fn a_wildcard_matches_exactly_one_more_label() {
    let p = policy(EXAMPLE);
    for (host, want) in [
        ("mail.example.com", true),
        ("MAIL.EXAMPLE.COM.", true),
        ("mx1.example.net", true),
        ("Mx1.Example.Net.", true),
        ("example.net", false),
        ("a.b.example.net", false),
        (".example.net", false),
        ("mail.example.com.evil.test", false),
        ("other.example.com", false),
    ] {
        assert_eq!(p.matches(host), want, "{host}");
    }
}

#[test]
fn exactly_one_sts_txt_record_announces_a_policy() {
    let id = |txt: &[&str]| Record::from_txt(txt).map(|r| r.id);
    assert_eq!(
        id(&["v=STSv1; id=20160831085700Z;"]),
        Ok("20160831085700Z".into())
    );
    assert_eq!(id(&["v=spf1 -all", "v=STSv1;id=abc"]), Ok("abc".into()));
    assert_eq!(id(&["v=STSv1; id=1; ext_a.b-c=v!x"]), Ok("1".into()));
    assert_eq!(id(&["v=spf1 -all"]), Err(RecordError::None));
    assert_eq!(id(&[]), Err(RecordError::None));
    assert_eq!(id(&["id=1; v=STSv1"]), Err(RecordError::None));
    assert_eq!(
        id(&["v=STSv1; id=1;", "v=STSv1; id=2;"]),
        Err(RecordError::Several(2))
    );
    for bad in [
        "v=STSv1;",
        "v=STSv1; id=",
        "v=STSv1; id=a-b",
        "v=STSv1; id=1; id=2",
        "v=STSv1; id=123456789012345678901234567890123",
        "v=STSv1; id=1; ext=a b",
        "v=STSv1; id=1; =x",
    ] {
        assert!(
            matches!(id(&[bad]), Err(RecordError::Malformed(_))),
            "{bad:?}"
        );
    }
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn cached(id: &str, fetched: SystemTime) -> Cached {
    Cached::new(id.into(), policy(EXAMPLE), fetched)
}

fn record(id: &str) -> TxtAnswer {
    TxtAnswer::Record(Record { id: id.into() })
}

#[test]
fn the_cache_decision_keeps_a_policy_an_attacker_would_make_it_forget() {
    let week = 604_800;
    let c = cached("a", at(0));
    let c = Some(&c);
    let failed = Some(at(100));
    let no = TxtAnswer::NoRecord;
    let fetch = |fallback| Plan::Fetch { fallback };
    let check = |name: &str, now, cached, txt: TxtAnswer, failed_at, want: Plan| {
        assert_eq!(decide(now, cached, &txt, failed_at), want, "{name}");
    };
    check("same id, fresh", at(60), c, record("a"), None, Plan::Use);
    check(
        "same id, day old",
        at(86_400),
        c,
        record("a"),
        None,
        Plan::Refresh,
    );
    let lately = Some(at(86_300));
    check(
        "same id, day old, failed lately",
        at(86_400),
        c,
        record("a"),
        lately,
        Plan::Use,
    );
    check("new id", at(60), c, record("b"), None, fetch(true));
    check(
        "new id, failed lately",
        at(160),
        c,
        record("b"),
        failed,
        Plan::Use,
    );
    check(
        "new id, failed long ago",
        at(400),
        c,
        record("b"),
        failed,
        fetch(true),
    );
    check("record removed", at(60), c, no.clone(), None, Plan::Use);
    check(
        "lookup failed",
        at(60),
        c,
        TxtAnswer::Failed,
        None,
        Plan::Use,
    );
    check(
        "expired, same id",
        at(week),
        c,
        record("a"),
        None,
        fetch(false),
    );
    check(
        "expired, record removed",
        at(week),
        c,
        no,
        None,
        Plan::NoPolicy,
    );
    check(
        "nothing cached",
        at(0),
        None,
        record("a"),
        None,
        fetch(false),
    );
    check(
        "nothing cached, failed lately",
        at(160),
        None,
        record("a"),
        failed,
        Plan::FailedLately,
    );
    check(
        "expired, failed lately",
        at(week),
        c,
        record("a"),
        Some(at(week - 10)),
        Plan::FailedLately,
    );
    check(
        "nothing cached, no record, failed lately",
        at(160),
        None,
        TxtAnswer::NoRecord,
        failed,
        Plan::NoPolicy,
    );
}

#[test]
fn a_cache_entry_reads_back_and_a_damaged_one_is_refused() {
    let c = cached("20160831085700Z", at(5));
    let text = c.encode();
    assert_eq!(Cached::decode(&text), Ok(c.clone()));
    assert!(text.starts_with("id: 20160831085700Z\nfetched: "));
    let damaged = [
        text.replace("id: ", "id:"),
        text.replace("fetched: ", "fetched: x"),
        text.replacen("\n\n", "\n", 1),
        text.replace("mode: enforce", "mode: bogus"),
        text.replace("id: 20160831085700Z", "id: a/../b"),
    ];
    for bad in damaged {
        assert!(Cached::decode(&bad).is_err(), "{bad:?}");
    }
}
