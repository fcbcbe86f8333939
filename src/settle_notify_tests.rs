//! Tests of the settle plan against the sender's DSN wishes (RFC 3461):
//! every NOTIFY value against every way a recipient's attempt can end and
//! every RET, then the mixes where one recipient's wish must not change
//! another's notice.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::queue::params::{Notify, Orcpt};
use crate::smtp::Reply;

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

/// How a recipient's attempt ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// Accepted by a server that advertised DSN.
    DeliveredDsn,
    /// Accepted by a server without DSN: the report of a relayed notice.
    DeliveredNoDsn,
    /// Refused with a 5xx.
    Failed,
    /// Deferred when the delay warning is due.
    Delayed,
    /// Deferred past the queue lifetime.
    Expired,
}

impl Event {
    /// Seconds since arrival at the end of the attempt.
    fn age(self) -> u64 {
        match self {
            Event::Delayed => WARN_AFTER,
            Event::Expired => LIFETIME,
            _ => 100,
        }
    }
}

fn fate(recipient: &str, event: Event) -> RecipientFate {
    let now = arrival() + Duration::from_secs(event.age());
    let ok: Reply = "250 2.0.0 queued"
        .parse()
        .unwrap_or_else(|e| panic!("test reply: {e}"));
    let (fate, code) = match event {
        Event::DeliveredDsn => (Fate::Delivered { relayed: None }, 250),
        Event::DeliveredNoDsn => {
            let report = RecipientReport::relayed(
                recipient,
                &ok,
                "mx.d.test",
                "mx.d.test[192.0.2.1]:25",
                now,
            );
            (
                Fate::Delivered {
                    relayed: Some(report),
                },
                250,
            )
        }
        Event::Failed => (
            Fate::Failed(RecipientReport {
                address: recipient.to_owned(),
                orcpt: None,
                status: dsn::STATUS_PERMANENT,
                remote_mta: Some("mx.d.test".to_owned()),
                reply: Some("550 no".to_owned()),
                reason: format!("refused {recipient}"),
                last_attempt: Some(now),
            }),
            550,
        ),
        Event::Delayed | Event::Expired => (Fate::Deferred, 451),
    };
    RecipientFate {
        recipient: recipient.to_owned(),
        fate,
        code: ReplyCode::new(code),
        status: None,
        text: format!("{code} for {recipient}"),
    }
}

fn rcpt_params(notify: Option<&str>, orcpt: Option<&str>) -> RcptParams {
    RcptParams {
        notify: notify.map(|n| Notify::parse(n).unwrap_or_else(|e| panic!("NOTIFY={n}: {e}"))),
        orcpt: orcpt.map(|o| Orcpt::parse(o).unwrap_or_else(|e| panic!("ORCPT={o}: {e}"))),
    }
}

/// What one recipient's notices are after the whole call order.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    success: Vec<String>,
    warning: Vec<String>,
    bounced: Vec<String>,
    null_sender: bool,
    full: bool,
    /// The end: "remove", "aside" or "requeue <pending>".
    end: String,
    /// The `Original-Recipient` each notice's report carries.
    orcpts: Vec<Option<String>>,
}

fn run(
    fates: Vec<RecipientFate>,
    sender: &str,
    age: u64,
    params: &MsgParams,
    rcpts: &BTreeMap<String, RcptParams>,
    bounce_error: Option<bool>,
) -> Seen {
    let retry = RetryState::default();
    let message = Message {
        sender,
        arrival: arrival(),
        retry: &retry,
        params,
        rcpt_params: rcpts,
    };
    let now = arrival() + Duration::from_secs(age);
    let mut plan = plan(fates, message, &schedule(), now, 0.0);
    let mut seen = Seen {
        full: plan.returns_full(),
        ..Seen::default()
    };
    let names = |reports: &[RecipientReport]| -> Vec<String> {
        reports.iter().map(|r| r.address.clone()).collect()
    };
    seen.success = names(&plan.success);
    seen.orcpts
        .extend(plan.success.iter().map(|r| r.orcpt.clone()));
    if let Some(warning) = &plan.delay_warning {
        seen.warning = names(warning);
        seen.orcpts.extend(warning.iter().map(|r| r.orcpt.clone()));
        plan.warned();
    }
    match plan.bounce() {
        Bounce::None => {}
        Bounce::NullSender => seen.null_sender = true,
        Bounce::ToSender(reports) => {
            seen.bounced = names(reports);
            seen.orcpts.extend(reports.iter().map(|r| r.orcpt.clone()));
        }
    }
    if let (Bounce::ToSender(_), Some(permanent)) = (plan.bounce(), bounce_error) {
        plan.bounce_not_written(permanent, "disk trouble");
    }
    seen.end = match plan.end() {
        End::Remove => "remove".to_owned(),
        End::SetAside(_) => "aside".to_owned(),
        End::Requeue(r) => format!(
            "requeue {}{}",
            r.pending.join(","),
            if r.copy_aside.is_some() {
                " +aside"
            } else {
                ""
            }
        ),
    };
    seen
}

/// Every NOTIFY value (absent included) against every way an attempt ends
/// and every RET (absent, HDRS, FULL, FULL for a REQUIRETLS message): which
/// notice reports the recipient, whether the bounce returns the whole
/// message, what becomes of the file, and that ORCPT goes with the report.
#[test]
fn every_notify_and_ret_against_every_end() {
    // NOTIFY, then whether it asks for (success, failure, delay) notices:
    // spelt out here rather than asked of RcptParams.
    /// Whether it asks for (success, failure, delay) notices.
    type Wants = (bool, bool, bool);
    let notifies: &[(Option<&str>, Wants)] = &[
        (None, (false, true, true)),
        (Some("NEVER"), (false, false, false)),
        (Some("SUCCESS"), (true, false, false)),
        (Some("FAILURE"), (false, true, false)),
        (Some("DELAY"), (false, false, true)),
        (Some("SUCCESS,FAILURE"), (true, true, false)),
        (Some("FAILURE,DELAY"), (false, true, true)),
        (Some("SUCCESS,DELAY"), (true, false, true)),
        (Some("success,failure,delay"), (true, true, true)),
    ];
    // RET and REQUIRETLS, then whether a bounce returns the whole message.
    let rets: &[(Option<Ret>, bool, bool)] = &[
        (None, false, false),
        (Some(Ret::Hdrs), false, false),
        (Some(Ret::Full), false, true),
        (Some(Ret::Full), true, false),
        (Some(Ret::Hdrs), true, false),
    ];
    let events = [
        Event::DeliveredDsn,
        Event::DeliveredNoDsn,
        Event::Failed,
        Event::Delayed,
        Event::Expired,
    ];
    for &(notify, (success, failure, delay)) in notifies {
        for orcpt in [None, Some("rfc822;first+2Bx@d.test")] {
            let mut rcpts = BTreeMap::new();
            let given = rcpt_params(notify, orcpt);
            if !given.is_empty() {
                rcpts.insert("a@d.test".to_owned(), given);
            }
            for &(ret, requiretls, full) in rets {
                let params = MsgParams {
                    ret,
                    envid: Some("ID1".to_owned()),
                    requiretls,
                };
                for event in events {
                    let name = format!(
                        "NOTIFY={} ORCPT={orcpt:?} RET={ret:?} REQUIRETLS={requiretls} {event:?}",
                        notify.unwrap_or("(absent)")
                    );
                    let fates = vec![fate("a@d.test", event)];
                    let got = run(fates, SENDER, event.age(), &params, &rcpts, None);
                    let me = || vec!["a@d.test".to_owned()];
                    let mut want = Seen {
                        full,
                        end: "remove".to_owned(),
                        ..Seen::default()
                    };
                    match event {
                        Event::DeliveredDsn => {}
                        Event::DeliveredNoDsn if success => want.success = me(),
                        Event::DeliveredNoDsn => {}
                        Event::Failed | Event::Expired if failure => want.bounced = me(),
                        Event::Failed | Event::Expired => {}
                        Event::Delayed => {
                            if delay {
                                want.warning = me();
                            }
                            want.end = "requeue a@d.test".to_owned();
                        }
                    }
                    let reported = want.success.len() + want.warning.len() + want.bounced.len();
                    // for_report decodes the xtext.
                    let shown = orcpt.map(|_| "rfc822;first+x@d.test".to_owned());
                    want.orcpts = vec![shown; reported];
                    assert_eq!(got, want, "{name}");
                }
            }
        }
    }
}

/// One recipient's wish never changes another's notice, the null sender
/// still gets none (its failures go aside for the postmaster whatever
/// NOTIFY says), and a recipient that asked for silence is final: never
/// kept for a bounce that could not be written, never copied aside.
#[test]
fn mixed_wishes() {
    struct Row {
        name: &'static str,
        /// (recipient, NOTIFY, event)
        rcpts: &'static [(&'static str, Option<&'static str>, Event)],
        sender: &'static str,
        age: u64,
        bounce_error: Option<bool>,
        success: &'static [&'static str],
        warning: &'static [&'static str],
        bounced: &'static [&'static str],
        null_sender: bool,
        end: &'static str,
    }
    const ROW: Row = Row {
        name: "",
        rcpts: &[],
        sender: SENDER,
        age: 100,
        bounce_error: None,
        success: &[],
        warning: &[],
        bounced: &[],
        null_sender: false,
        end: "remove",
    };
    let rows = [
        Row {
            name: "NEVER beside the default: only the default is bounced",
            rcpts: &[
                ("a", Some("NEVER"), Event::Failed),
                ("b", None, Event::Failed),
            ],
            bounced: &["b"],
            ..ROW
        },
        Row {
            name: "every failure silenced: no bounce, no copy aside",
            rcpts: &[
                ("a", Some("NEVER"), Event::Failed),
                ("b", Some("SUCCESS,DELAY"), Event::Failed),
            ],
            ..ROW
        },
        Row {
            name: "a silenced failure beside a deferral: final, no copy aside",
            rcpts: &[
                ("a", Some("NEVER"), Event::Failed),
                ("b", None, Event::Delayed),
            ],
            age: 100,
            end: "requeue b",
            ..ROW
        },
        Row {
            name: "the bounce cannot be written now: only its recipient waits",
            rcpts: &[
                ("a", Some("NEVER"), Event::Failed),
                ("b", None, Event::Failed),
            ],
            bounce_error: Some(false),
            bounced: &["b"],
            end: "requeue b",
            ..ROW
        },
        Row {
            name: "the bounce can never be written: aside for its recipient",
            rcpts: &[
                ("a", Some("NEVER"), Event::Failed),
                ("b", None, Event::Failed),
            ],
            bounce_error: Some(true),
            bounced: &["b"],
            end: "aside",
            ..ROW
        },
        Row {
            name: "from the null sender: aside whatever NOTIFY says",
            rcpts: &[("a", Some("NEVER"), Event::Failed)],
            sender: "",
            null_sender: true,
            end: "aside",
            ..ROW
        },
        Row {
            name: "from the null sender: no success notice",
            rcpts: &[("a", Some("SUCCESS"), Event::DeliveredNoDsn)],
            sender: "<>",
            ..ROW
        },
        Row {
            name: "the delay warning names only those who want it",
            rcpts: &[
                ("a", Some("NEVER"), Event::Delayed),
                ("b", Some("DELAY"), Event::Delayed),
                ("c", None, Event::Delayed),
                ("d", Some("FAILURE"), Event::Delayed),
            ],
            age: WARN_AFTER,
            warning: &["b", "c"],
            end: "requeue a,b,c,d",
            ..ROW
        },
        Row {
            name: "nobody wants the delay warning: none",
            rcpts: &[("a", Some("NEVER"), Event::Delayed)],
            age: WARN_AFTER,
            end: "requeue a",
            ..ROW
        },
        Row {
            name: "success and failure in one attempt: one notice each",
            rcpts: &[
                ("a", Some("SUCCESS"), Event::DeliveredNoDsn),
                ("b", Some("SUCCESS"), Event::DeliveredDsn),
                ("c", Some("SUCCESS,FAILURE"), Event::Failed),
                ("d", Some("SUCCESS"), Event::DeliveredNoDsn),
                ("e", None, Event::DeliveredNoDsn),
            ],
            success: &["a", "d"],
            bounced: &["c"],
            ..ROW
        },
        Row {
            name: "success beside a deferral: the delivered one is final",
            rcpts: &[
                ("a", Some("SUCCESS"), Event::DeliveredNoDsn),
                ("b", None, Event::Delayed),
            ],
            success: &["a"],
            end: "requeue b",
            ..ROW
        },
    ];
    for row in rows {
        let name = row.name;
        let mut rcpts = BTreeMap::new();
        let mut fates = Vec::new();
        for &(r, notify, event) in row.rcpts {
            if notify.is_some() {
                rcpts.insert(r.to_owned(), rcpt_params(notify, None));
            }
            fates.push(fate(r, event));
        }
        let got = run(
            fates,
            row.sender,
            row.age,
            &MsgParams::default(),
            &rcpts,
            row.bounce_error,
        );
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(got.success, owned(row.success), "{name}: success notice");
        assert_eq!(got.warning, owned(row.warning), "{name}: delay warning");
        assert_eq!(got.bounced, owned(row.bounced), "{name}: bounce");
        assert_eq!(got.null_sender, row.null_sender, "{name}: null sender");
        assert_eq!(got.end, row.end, "{name}: end");
    }
}

/// The success notice outside the plan (an attempt that delivered every
/// recipient, its file already removed) decides as the plan does.
#[test]
fn success_notice_without_a_plan() {
    let mut rcpts = BTreeMap::new();
    rcpts.insert(
        "a".to_owned(),
        rcpt_params(Some("SUCCESS"), Some("rfc822;A")),
    );
    rcpts.insert("b".to_owned(), rcpt_params(Some("FAILURE"), None));
    let fates = vec![
        fate("a", Event::DeliveredNoDsn),
        fate("b", Event::DeliveredNoDsn),
        fate("c", Event::DeliveredNoDsn),
    ];
    let retry = RetryState::default();
    let params = MsgParams::default();
    for (sender, want) in [(SENDER, vec![("a", Some("rfc822;A"))]), ("", vec![])] {
        let message = Message {
            sender,
            arrival: arrival(),
            retry: &retry,
            params: &params,
            rcpt_params: &rcpts,
        };
        let got: Vec<(String, Option<String>)> = success_notice(&fates, message)
            .into_iter()
            .map(|r| (r.address, r.orcpt))
            .collect();
        let want: Vec<(String, Option<String>)> = want
            .into_iter()
            .map(|(a, o)| (a.to_owned(), o.map(str::to_owned)))
            .collect();
        assert_eq!(got, want, "sender {sender:?}");
    }
}
