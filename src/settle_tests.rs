//! Tests of the settle plan: one table row per way an attempt can end, run
//! through the whole call order (plan, delay warning, bounce, end).

use std::time::{Duration, UNIX_EPOCH};

use super::*;

const MIN: u64 = 600;
const LIFETIME: u64 = 5 * 24 * 3600;
const WARN_AFTER: u64 = 4 * 3600;
const SENDER: &str = "s@src.test";

fn schedule() -> Schedule {
    Schedule {
        min: Duration::from_secs(MIN),
        max: Duration::from_secs(8 * MIN),
        lifetime: Duration::from_secs(LIFETIME),
        delay_warning: Some(Duration::from_secs(WARN_AFTER)),
    }
}

fn arrival() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A recipient's fate in a row.
#[derive(Clone, Copy)]
enum F {
    Ok,
    Defer,
    Again,
    Fail,
}

fn fate(recipient: &str, f: F) -> RecipientFate {
    let (fate, code, text) = match f {
        F::Ok => (
            Fate::Delivered { relayed: None },
            250,
            format!("250 2.0.0 ok {recipient}"),
        ),
        F::Defer => (Fate::Deferred, 451, format!("deferred {recipient}")),
        F::Again => (Fate::Again, 452, format!("too many {recipient}")),
        F::Fail => {
            let report = RecipientReport {
                address: recipient.to_owned(),
                orcpt: None,
                status: dsn::STATUS_PERMANENT,
                remote_mta: Some("mx.d.test".to_owned()),
                reply: Some("550 no".to_owned()),
                reason: format!("refused {recipient}"),
                last_attempt: None,
            };
            (Fate::Failed(report), 550, format!("refused {recipient}"))
        }
    };
    RecipientFate {
        recipient: recipient.to_owned(),
        fate,
        code: ReplyCode::new(code),
        status: None,
        text,
    }
}

/// The retry state in force before the attempt.
#[derive(Clone, Copy)]
enum Before {
    Fresh,
    /// Two failed attempts so far.
    Tried,
    /// The delay warning went out already.
    Warned,
}

fn state(before: Before) -> RetryState {
    let earlier = arrival() + Duration::from_secs(60);
    match before {
        Before::Fresh => RetryState::default(),
        Before::Tried => RetryState {
            attempts: 2,
            first_attempt: Some(earlier),
            last_attempt: Some(earlier),
            next_attempt: Some(earlier),
            last_error: Some("earlier".to_owned()),
            delay_warned: None,
            requiretls_refused: None,
        },
        Before::Warned => RetryState {
            delay_warned: Some(earlier),
            ..RetryState::default()
        },
    }
}

/// What the bounce asked for should be.
enum WantBounce {
    None,
    To(&'static [&'static str]),
    Null,
}

enum WantEnd {
    Remove,
    /// Set aside with a reason holding each of these.
    SetAside(&'static [&'static str]),
    Requeue(WantRequeue),
}

struct WantRequeue {
    pending: &'static [&'static str],
    finalized: bool,
    at_once: bool,
    copy_aside: bool,
    attempts: u32,
    /// Seconds from now to the next attempt.
    next_in: Option<u64>,
    last_error: Option<&'static str>,
    warned: bool,
}

struct Case {
    name: &'static str,
    fates: &'static [(&'static str, F)],
    sender: &'static str,
    /// Seconds since arrival at the end of the attempt.
    age: u64,
    before: Before,
    /// Whether writing the delay warning works.
    warning_written: bool,
    /// The bounce fails: `Some(permanent)`.
    bounce_error: Option<bool>,
    /// (recipient, record status) in order.
    logged: &'static [(&'static str, &'static str)],
    warning: &'static [&'static str],
    bounce: WantBounce,
    unwritten: Option<Unwritten>,
    end: WantEnd,
}

const BASE: Case = Case {
    name: "",
    fates: &[],
    sender: SENDER,
    age: 100,
    before: Before::Fresh,
    warning_written: true,
    bounce_error: None,
    logged: &[],
    warning: &[],
    bounce: WantBounce::None,
    unwritten: None,
    end: WantEnd::Remove,
};

fn requeue(pending: &'static [&'static str], finalized: bool) -> WantRequeue {
    WantRequeue {
        pending,
        finalized,
        at_once: false,
        copy_aside: false,
        attempts: 1,
        next_in: Some(MIN),
        last_error: None,
        warned: false,
    }
}

fn status_word(fate: &Fate) -> &'static str {
    match fate {
        Fate::Delivered { .. } => "sent",
        Fate::Deferred | Fate::Again => "deferred",
        Fate::Failed(_) => "bounced",
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "all delivered",
            fates: &[("a", F::Ok), ("b", F::Ok)],
            logged: &[("a", "sent"), ("b", "sent")],
            ..BASE
        },
        Case {
            name: "some deferred",
            fates: &[("a", F::Ok), ("b", F::Defer)],
            logged: &[("a", "sent"), ("b", "deferred")],
            end: WantEnd::Requeue(WantRequeue {
                last_error: Some("deferred b"),
                ..requeue(&["b"], true)
            }),
            ..BASE
        },
        Case {
            name: "all deferred: nothing final",
            fates: &[("a", F::Defer), ("b", F::Defer)],
            logged: &[("a", "deferred"), ("b", "deferred")],
            end: WantEnd::Requeue(WantRequeue {
                last_error: Some("deferred a"),
                ..requeue(&["a", "b"], false)
            }),
            ..BASE
        },
        Case {
            name: "deferred again: the backoff doubles",
            fates: &[("a", F::Defer)],
            before: Before::Tried,
            logged: &[("a", "deferred")],
            end: WantEnd::Requeue(WantRequeue {
                attempts: 3,
                next_in: Some(4 * MIN),
                ..requeue(&["a"], false)
            }),
            ..BASE
        },
        Case {
            name: "deferred near the deadline: the last attempt comes at it",
            fates: &[("a", F::Defer)],
            age: LIFETIME - 100,
            before: Before::Warned,
            logged: &[("a", "deferred")],
            end: WantEnd::Requeue(WantRequeue {
                next_in: Some(100),
                warned: true,
                ..requeue(&["a"], false)
            }),
            ..BASE
        },
        Case {
            name: "deferred past the lifetime: bounced",
            fates: &[("a", F::Ok), ("b", F::Defer)],
            age: LIFETIME,
            logged: &[("a", "sent"), ("b", "bounced")],
            bounce: WantBounce::To(&["b"]),
            ..BASE
        },
        Case {
            name: "deferred past the lifetime, from the null sender: set aside",
            fates: &[("a", F::Defer)],
            sender: "",
            age: LIFETIME + 1,
            logged: &[("a", "bounced")],
            bounce: WantBounce::Null,
            end: WantEnd::SetAside(&["<a>: gave up after 5.0 days in the queue"]),
            ..BASE
        },
        Case {
            name: "failed, bounce written",
            fates: &[("a", F::Ok), ("b", F::Fail)],
            logged: &[("a", "sent"), ("b", "bounced")],
            bounce: WantBounce::To(&["b"]),
            ..BASE
        },
        Case {
            name: "failed and deferred: the bounce makes it final",
            fates: &[("a", F::Fail), ("b", F::Defer)],
            logged: &[("a", "bounced"), ("b", "deferred")],
            bounce: WantBounce::To(&["a"]),
            end: WantEnd::Requeue(requeue(&["b"], true)),
            ..BASE
        },
        Case {
            name: "failed, from the null sender: set aside",
            fates: &[("a", F::Fail), ("b", F::Fail)],
            sender: "",
            logged: &[("a", "bounced"), ("b", "bounced")],
            bounce: WantBounce::Null,
            end: WantEnd::SetAside(&["<a>: refused a\n<b>: refused b"]),
            ..BASE
        },
        Case {
            name: "failed and deferred, from <>: a copy aside, the rest queued",
            fates: &[("a", F::Fail), ("b", F::Defer)],
            sender: "<>",
            logged: &[("a", "bounced"), ("b", "deferred")],
            bounce: WantBounce::Null,
            end: WantEnd::Requeue(WantRequeue {
                copy_aside: true,
                ..requeue(&["b"], true)
            }),
            ..BASE
        },
        Case {
            name: "bounce never writable: set aside, double bounce",
            fates: &[("a", F::Fail)],
            bounce_error: Some(true),
            logged: &[("a", "bounced")],
            bounce: WantBounce::To(&["a"]),
            unwritten: Some(Unwritten::Never),
            end: WantEnd::SetAside(&[
                "<a>: refused a\n",
                "no bounce could be written to <s@src.test>: disk trouble",
            ]),
            ..BASE
        },
        Case {
            name: "bounce not written past the lifetime: never",
            fates: &[("a", F::Fail), ("b", F::Defer)],
            age: LIFETIME,
            bounce_error: Some(false),
            logged: &[("a", "bounced"), ("b", "bounced")],
            bounce: WantBounce::To(&["a", "b"]),
            unwritten: Some(Unwritten::Never),
            end: WantEnd::SetAside(&["<b>: gave up", "no bounce could be written"]),
            ..BASE
        },
        Case {
            name: "bounce not written for now: the failed stay queued",
            fates: &[("a", F::Fail), ("b", F::Ok)],
            bounce_error: Some(false),
            logged: &[("a", "bounced"), ("b", "sent")],
            bounce: WantBounce::To(&["a"]),
            unwritten: Some(Unwritten::NotNow),
            end: WantEnd::Requeue(WantRequeue {
                last_error: Some("cannot write the bounce: disk trouble"),
                ..requeue(&["a"], true)
            }),
            ..BASE
        },
        Case {
            name: "bounce not written for now, alone: nothing final",
            fates: &[("a", F::Fail)],
            bounce_error: Some(false),
            logged: &[("a", "bounced")],
            bounce: WantBounce::To(&["a"]),
            unwritten: Some(Unwritten::NotNow),
            end: WantEnd::Requeue(requeue(&["a"], false)),
            ..BASE
        },
        Case {
            name: "bounce not written for now beside a deferral: its time stands",
            fates: &[("a", F::Fail), ("b", F::Defer)],
            before: Before::Tried,
            bounce_error: Some(false),
            logged: &[("a", "bounced"), ("b", "deferred")],
            bounce: WantBounce::To(&["a"]),
            unwritten: Some(Unwritten::NotNow),
            end: WantEnd::Requeue(WantRequeue {
                attempts: 3,
                next_in: Some(4 * MIN),
                last_error: Some("deferred b"),
                ..requeue(&["b", "a"], false)
            }),
            ..BASE
        },
        Case {
            name: "delay warning due and written",
            fates: &[("a", F::Defer), ("b", F::Ok)],
            age: WARN_AFTER,
            logged: &[("b", "sent"), ("a", "deferred")],
            warning: &["a"],
            end: WantEnd::Requeue(WantRequeue {
                warned: true,
                ..requeue(&["a"], true)
            }),
            ..BASE
        },
        Case {
            name: "delay warning due, not written: due again next time",
            fates: &[("a", F::Defer)],
            age: WARN_AFTER + 1,
            warning_written: false,
            logged: &[("a", "deferred")],
            warning: &["a"],
            end: WantEnd::Requeue(requeue(&["a"], false)),
            ..BASE
        },
        Case {
            name: "delay warning not due yet",
            fates: &[("a", F::Defer)],
            age: WARN_AFTER - 1,
            logged: &[("a", "deferred")],
            end: WantEnd::Requeue(requeue(&["a"], false)),
            ..BASE
        },
        Case {
            name: "delay warning sent already",
            fates: &[("a", F::Defer)],
            age: WARN_AFTER + 1,
            before: Before::Warned,
            logged: &[("a", "deferred")],
            end: WantEnd::Requeue(WantRequeue {
                warned: true,
                ..requeue(&["a"], false)
            }),
            ..BASE
        },
        Case {
            name: "delay warning never to the null sender",
            fates: &[("a", F::Defer)],
            sender: "",
            age: WARN_AFTER + 1,
            logged: &[("a", "deferred")],
            end: WantEnd::Requeue(requeue(&["a"], false)),
            ..BASE
        },
        Case {
            name: "over the server's limit: at once, no attempt, no record",
            fates: &[("a", F::Ok), ("b", F::Again), ("c", F::Again)],
            logged: &[("a", "sent")],
            end: WantEnd::Requeue(WantRequeue {
                at_once: true,
                attempts: 0,
                next_in: None,
                ..requeue(&["b", "c"], true)
            }),
            ..BASE
        },
        Case {
            name: "over the limit beside a deferral: waits with it",
            fates: &[("a", F::Ok), ("b", F::Again), ("c", F::Defer)],
            logged: &[("a", "sent"), ("b", "deferred"), ("c", "deferred")],
            end: WantEnd::Requeue(WantRequeue {
                last_error: Some("too many b"),
                ..requeue(&["b", "c"], true)
            }),
            ..BASE
        },
        Case {
            name: "over the limit beside a failure whose bounce waits",
            fates: &[("a", F::Again), ("b", F::Fail)],
            bounce_error: Some(false),
            logged: &[("b", "bounced")],
            bounce: WantBounce::To(&["b"]),
            unwritten: Some(Unwritten::NotNow),
            end: WantEnd::Requeue(requeue(&["a", "b"], false)),
            ..BASE
        },
        Case {
            name: "over the limit beside a deferral past the lifetime: bounced",
            fates: &[("a", F::Ok), ("b", F::Again), ("c", F::Defer)],
            age: LIFETIME,
            logged: &[("a", "sent"), ("b", "bounced"), ("c", "bounced")],
            bounce: WantBounce::To(&["b", "c"]),
            ..BASE
        },
    ]
}

/// Runs `case` through the whole call order.
fn run(case: &Case) -> (Plan, Option<Unwritten>, End) {
    let fates = case.fates.iter().map(|&(r, f)| fate(r, f)).collect();
    let retry = state(case.before);
    let message = Message {
        sender: case.sender,
        arrival: arrival(),
        retry: &retry,
        params: &MsgParams::default(),
        rcpt_params: &BTreeMap::new(),
    };
    let now = arrival() + Duration::from_secs(case.age);
    let mut plan = plan(fates, message, &schedule(), now, 0.0);
    let seen = plan.clone();
    if plan.delay_warning.is_some() && case.warning_written {
        plan.warned();
    }
    let mut unwritten = None;
    if let (Bounce::ToSender(_), Some(permanent)) = (plan.bounce(), case.bounce_error) {
        unwritten = Some(plan.bounce_not_written(permanent, "disk trouble"));
    }
    (seen, unwritten, plan.end())
}

#[test]
fn every_way_an_attempt_ends() {
    for case in cases() {
        let name = case.name;
        let (plan, unwritten, end) = run(&case);
        let logged: Vec<(&str, &str)> = plan
            .logged
            .iter()
            .map(|f| (f.recipient.as_str(), status_word(&f.fate)))
            .collect();
        assert_eq!(logged, case.logged, "{name}: records");
        let warning: Vec<&str> = plan
            .delay_warning
            .iter()
            .flatten()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(warning, case.warning, "{name}: delay warning");
        match (plan.bounce(), &case.bounce) {
            (Bounce::None, WantBounce::None) | (Bounce::NullSender, WantBounce::Null) => {}
            (Bounce::ToSender(reports), WantBounce::To(want)) => {
                let got: Vec<&str> = reports.iter().map(|r| r.address.as_str()).collect();
                assert_eq!(got, *want, "{name}: bounced recipients");
            }
            (got, _) => panic!("{name}: unexpected bounce {got:?}"),
        }
        assert_eq!(unwritten, case.unwritten, "{name}: unwritten bounce");
        check_end(
            name,
            &end,
            &case.end,
            arrival() + Duration::from_secs(case.age),
        );
    }
}

fn check_end(name: &str, end: &End, want: &WantEnd, now: SystemTime) {
    match (end, want) {
        (End::Remove, WantEnd::Remove) => {}
        (End::SetAside(reason), WantEnd::SetAside(parts)) => {
            for part in *parts {
                assert!(
                    reason.contains(part),
                    "{name}: reason {reason:?} lacks {part:?}"
                );
            }
        }
        (
            End::Requeue(got),
            WantEnd::Requeue(WantRequeue {
                pending,
                finalized,
                at_once,
                copy_aside,
                attempts,
                next_in,
                last_error,
                warned,
            }),
        ) => {
            assert_eq!(got.pending, *pending, "{name}: pending");
            assert_eq!(got.finalized, *finalized, "{name}: finalized");
            assert_eq!(got.at_once, *at_once, "{name}: at once");
            assert_eq!(got.copy_aside.is_some(), *copy_aside, "{name}: copy aside");
            assert_eq!(got.state.attempts, *attempts, "{name}: attempts");
            let next = next_in.map(|s| now + Duration::from_secs(s));
            assert_eq!(got.state.next_attempt, next, "{name}: next attempt");
            if let Some(error) = last_error {
                assert_eq!(
                    got.state.last_error.as_deref(),
                    Some(*error),
                    "{name}: last error"
                );
            }
            assert_eq!(got.state.delay_warned.is_some(), *warned, "{name}: warned");
        }
        (got, _) => panic!("{name}: unexpected end {got:?}"),
    }
}

/// An expired recipient's record and report say why, with the last error
/// and status 4.4.7; its reply code stays.
#[test]
fn an_expired_recipient_says_why() {
    let retry = RetryState::default();
    let message = Message {
        sender: SENDER,
        arrival: arrival(),
        retry: &retry,
        params: &MsgParams::default(),
        rcpt_params: &BTreeMap::new(),
    };
    let now = arrival() + Duration::from_secs(LIFETIME);
    let plan = plan(vec![fate("a", F::Defer)], message, &schedule(), now, 0.0);
    let [record] = plan.logged.as_slice() else {
        panic!("one record expected: {:?}", plan.logged);
    };
    let reason = "gave up after 5.0 days in the queue; last error: deferred a";
    assert_eq!(record.text, format!("{reason}: deferred a"), "record text");
    assert_eq!(record.status, Some(dsn::STATUS_EXPIRED), "record status");
    assert_eq!(record.code, ReplyCode::new(451), "record code");
    let Bounce::ToSender([report]) = plan.bounce() else {
        panic!("one bounced recipient expected: {:?}", plan.bounce());
    };
    assert_eq!(report.reason, reason, "report reason");
    assert_eq!(report.status, dsn::STATUS_EXPIRED, "report status");
    assert_eq!(report.last_attempt, Some(now), "report last attempt");
}

/// A recipient deferred because no server could honour the sender's
/// REQUIRETLS expires with that status (RFC 8689 §5), not 4.4.7; any other
/// status of the last attempt gives 4.4.7.
#[test]
fn an_expired_requiretls_recipient_keeps_its_status() {
    let retry = RetryState::default();
    let message = Message {
        sender: SENDER,
        arrival: arrival(),
        retry: &retry,
        params: &MsgParams::default(),
        rcpt_params: &BTreeMap::new(),
    };
    let now = arrival() + Duration::from_secs(LIFETIME);
    let code = |class, subject, detail| EnhancedCode {
        class,
        subject,
        detail,
    };
    for (last, want) in [
        (Some(code(5, 7, 10)), code(5, 7, 10)),
        (Some(code(5, 7, 30)), code(5, 7, 30)),
        (Some(code(4, 7, 0)), dsn::STATUS_EXPIRED),
        (Some(code(4, 4, 1)), dsn::STATUS_EXPIRED),
        (None, dsn::STATUS_EXPIRED),
    ] {
        let deferred = RecipientFate {
            code: None,
            status: last,
            ..fate("a", F::Defer)
        };
        let plan = plan(vec![deferred], message, &schedule(), now, 0.0);
        let [record] = plan.logged.as_slice() else {
            panic!("{last:?}: one record expected: {:?}", plan.logged);
        };
        assert_eq!(record.status, Some(want), "{last:?}: record status");
        let Bounce::ToSender([report]) = plan.bounce() else {
            panic!(
                "{last:?}: one bounced recipient expected: {:?}",
                plan.bounce()
            );
        };
        assert_eq!(report.status, want, "{last:?}: report status");
    }
}

/// An attempt refused for REQUIRETLS is remembered in the retry state;
/// when a later attempt meets something else (a refused connection) and
/// the message then expires, the bounce still gives the REQUIRETLS status.
#[test]
fn a_requiretls_refusal_outlives_a_later_failure_of_another_kind() {
    let fresh = RetryState::default();
    let (params, rcpt_params) = (MsgParams::default(), BTreeMap::new());
    let message = |retry| Message {
        sender: SENDER,
        arrival: arrival(),
        retry,
        params: &params,
        rcpt_params: &rcpt_params,
    };
    let refused = RecipientFate {
        code: None,
        status: Some(Outcome::REQUIRETLS_UNSUPPORTED),
        ..fate("a", F::Defer)
    };
    let early = arrival() + Duration::from_secs(60);
    let first = plan(vec![refused], message(&fresh), &schedule(), early, 0.0);
    assert_eq!(
        first.state.requiretls_refused,
        Some(Outcome::REQUIRETLS_UNSUPPORTED)
    );
    let other = RecipientFate {
        code: None,
        status: Some(EnhancedCode {
            class: 4,
            subject: 4,
            detail: 1,
        }),
        ..fate("a", F::Defer)
    };
    let end = arrival() + Duration::from_secs(LIFETIME);
    let last = plan(
        vec![other.clone()],
        message(&first.state),
        &schedule(),
        end,
        0.0,
    );
    assert_eq!(
        last.state.requiretls_refused,
        Some(Outcome::REQUIRETLS_UNSUPPORTED),
        "kept"
    );
    let Bounce::ToSender([report]) = last.bounce() else {
        panic!("one bounced recipient expected: {:?}", last.bounce());
    };
    assert_eq!(report.status, Outcome::REQUIRETLS_UNSUPPORTED);
    // Without an earlier refusal the same end is an ordinary expiry.
    let plain = plan(vec![other], message(&fresh), &schedule(), end, 0.0);
    let Bounce::ToSender([report]) = plain.bounce() else {
        panic!("one bounced recipient expected: {:?}", plain.bounce());
    };
    assert_eq!(report.status, dsn::STATUS_EXPIRED);
}

/// The delay warning reports each deferred recipient as a transient
/// failure with its text, and the spread moves the next attempt earlier.
#[test]
fn delay_warning_reports_and_jitter() {
    let retry = RetryState::default();
    let message = Message {
        sender: SENDER,
        arrival: arrival(),
        retry: &retry,
        params: &MsgParams::default(),
        rcpt_params: &BTreeMap::new(),
    };
    let now = arrival() + Duration::from_secs(WARN_AFTER);
    let fates = vec![fate("a", F::Defer), fate("b", F::Again)];
    let plan = plan(fates, message, &schedule(), now, 0.5);
    let reports = plan.delay_warning.clone().unwrap_or_default();
    let got: Vec<(&str, &str, EnhancedCode)> = reports
        .iter()
        .map(|r| (r.address.as_str(), r.reason.as_str(), r.status))
        .collect();
    let want = [
        ("a", "deferred a", dsn::STATUS_TRANSIENT),
        ("b", "too many b", dsn::STATUS_TRANSIENT),
    ];
    assert_eq!(got, want, "delay warning reports");
    let End::Requeue(requeue) = plan.end() else {
        panic!("a deferred message stays queued");
    };
    // 600 s less 20 % of half of it.
    let next = now + Duration::from_secs(MIN - 60);
    assert_eq!(
        requeue.state.next_attempt,
        Some(next),
        "next attempt with jitter 0.5"
    );
}

/// When a message is due: its next attempt while ahead; once that has
/// passed, at once when scanned, but after the fallback when it was just
/// worked on (no newer time could be recorded).
#[test]
fn when_a_message_is_due_again() {
    let now = arrival();
    let fallback = Duration::from_secs(MIN);
    // (name, next attempt relative to now in seconds, until_due, until_due_again)
    let cases: &[(&str, Option<i64>, u64, u64)] = &[
        ("no next attempt", None, MIN, MIN),
        ("ahead", Some(30), 30, 30),
        ("now", Some(0), 0, MIN),
        ("past", Some(-30), 0, MIN),
    ];
    for &(name, next, due, again) in cases {
        let next_attempt = next.map(|s| match u64::try_from(s) {
            Ok(ahead) => now + Duration::from_secs(ahead),
            Err(_) => now - Duration::from_secs(s.unsigned_abs()),
        });
        let state = RetryState {
            next_attempt,
            ..RetryState::default()
        };
        let got = (
            until_due(&state, now, fallback),
            until_due_again(&state, now, fallback),
        );
        let want = (Duration::from_secs(due), Duration::from_secs(again));
        assert_eq!(got, want, "{name}: (until_due, until_due_again)");
    }
}
