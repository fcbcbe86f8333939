use std::io::Read as _;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use mail_parser::MimeHeaders as _;
use serde_json::{json, Value};

use super::*;
use crate::dane::Tlsa;
use crate::mta_sts::Policy;
use crate::tls::StsProblem;

// ---- the TXT record ----

#[test]
fn records_that_ask_for_reports() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["v=TLSRPTv1; rua=mailto:reports@example.com"],
            &["mailto:reports@example.com"],
        ),
        (
            &["v=TLSRPTv1;rua=mailto:a@example.com,https://reports.example.com/tlsrpt"],
            &["mailto:a@example.com", "https://reports.example.com/tlsrpt"],
        ),
        // Spaces around the delimiters, a trailing `;`, an extension.
        (
            &["v=TLSRPTv1 ; rua=mailto:a@example.com , mailto:b@example.net ; ext=1;"],
            &["mailto:a@example.com", "mailto:b@example.net"],
        ),
        // Unsupported schemes are dropped, the rest kept in order.
        (
            &["v=TLSRPTv1; rua=ftp://x.example/,https://r.example/p?q=1,mailto:c@example.com"],
            &["https://r.example/p?q=1", "mailto:c@example.com"],
        ),
        // Other TXT records at the name do not count.
        (
            &[
                "v=spf1 -all",
                "v=TLSRPTv1; rua=mailto:a@example.com",
                "hello",
            ],
            &["mailto:a@example.com"],
        ),
        // Scheme case, percent-escapes and header fields of a mailto.
        (
            &["v=TLSRPTv1; rua=MAILTO:tls%2Breports@example.com?subject=x"],
            &["mailto:tls+reports@example.com"],
        ),
        (
            &["v=TLSRPTv1; rua=HTTPS://r.example/"],
            &["https://r.example/"],
        ),
    ];
    for (txt, want) in cases {
        let record = Record::from_txt(txt).unwrap_or_else(|e| panic!("{txt:?}: {e}"));
        let got: Vec<String> = record.rua.iter().map(ToString::to_string).collect();
        assert_eq!(got, *want, "{txt:?}");
    }
    let record = Record::from_txt(&["v=TLSRPTv1; rua=mailto:a@example.com,https://r.example/"])
        .expect("valid");
    assert_eq!(
        record.rua,
        [
            Rua::Mailto("a@example.com".into()),
            Rua::Https("https://r.example/".into())
        ]
    );
}

#[test]
fn records_that_ask_for_nothing() {
    let none = |r: Result<Record, RecordError>| r.err();
    let cases: &[(&[&str], RecordError)] = &[
        (&[], RecordError::None),
        (&["v=spf1 -all"], RecordError::None),
        // The version must be the whole first field.
        (
            &["v=TLSRPTv10; rua=mailto:a@example.com"],
            RecordError::None,
        ),
        (&["v=tlsrptv1; rua=mailto:a@example.com"], RecordError::None),
        (
            &[" v=TLSRPTv1; rua=mailto:a@example.com"],
            RecordError::None,
        ),
        (&["v=TLSRPTv1 rua=mailto:a@example.com"], RecordError::None),
        (
            &[
                "v=TLSRPTv1; rua=mailto:a@example.com",
                "v=TLSRPTv1; rua=mailto:b@example.com",
            ],
            RecordError::Several(2),
        ),
    ];
    for (txt, want) in cases {
        assert_eq!(none(Record::from_txt(txt)).as_ref(), Some(want), "{txt:?}");
    }
    let malformed = [
        "v=TLSRPTv1",
        "v=TLSRPTv1;",
        "v=TLSRPTv1; rua=",
        "v=TLSRPTv1; rua=mailto:a@example.com,",
        "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com",
        "v=TLSRPTv1; rua=mailto:a@example.com; junk",
        "v=TLSRPTv1; rua=mailto:a@example.com; -x=1",
        "v=TLSRPTv1; rua=mailto:a@ex ample.com",
    ];
    for txt in malformed {
        assert!(
            matches!(Record::from_txt(&[txt]), Err(RecordError::Malformed(_))),
            "{txt:?} must be malformed, got {:?}",
            Record::from_txt(&[txt])
        );
    }
    let unusable = [
        "v=TLSRPTv1; rua=http://r.example/",
        "v=TLSRPTv1; rua=mailto:no-at-sign",
        "v=TLSRPTv1; rua=mailto:a%zz@example.com",
        "v=TLSRPTv1; rua=https:///path-without-host",
        "v=TLSRPTv1; rua=tel:+1-555",
    ];
    for txt in unusable {
        assert!(
            matches!(Record::from_txt(&[txt]), Err(RecordError::NoUsableRua(_))),
            "{txt:?} names nothing usable, got {:?}",
            Record::from_txt(&[txt])
        );
    }
}

// ---- sessions and the journal ----

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().expect("test address"))
}

fn sts_policy() -> Policy {
    Policy::parse("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.backup.example.com\nmax_age: 86400\n")
        .expect("valid policy")
}

fn failure(kind: ResultType, mx: &str, receiving: &str) -> SessionResult {
    SessionResult::Failure(Failure {
        sending_mta_ip: ip("192.0.2.1"),
        receiving_mx_hostname: Some(mx.to_owned()),
        receiving_ip: ip(receiving),
        ..Failure::new(kind)
    })
}

fn session(at: u64, domain: &str, policy: Applied, result: SessionResult) -> Session {
    Session {
        at,
        policy_domain: domain.to_owned(),
        policy,
        result,
    }
}

/// 2026-12-07 12:00:00 UTC.
const NOON: u64 = 1_796_644_800;

#[test]
fn result_types_are_named_as_in_the_rfc() {
    let names: Vec<&str> = ResultType::ALL.iter().map(ResultType::as_str).collect();
    assert_eq!(
        names,
        [
            "starttls-not-supported",
            "certificate-host-mismatch",
            "certificate-expired",
            "certificate-not-trusted",
            "validation-failure",
            "tlsa-invalid",
            "dnssec-invalid",
            "dane-required",
            "sts-policy-fetch-error",
            "sts-policy-invalid",
            "sts-webpki-invalid",
        ]
    );
    for kind in ResultType::ALL {
        let json = serde_json::to_value(kind).expect("serializes");
        assert_eq!(json, Value::String(kind.as_str().into()), "{kind}");
    }
    let problems = [
        (
            StsProblem::Fetch("timeout".into()),
            ResultType::StsPolicyFetchError,
        ),
        (
            StsProblem::WebPki("expired".into()),
            ResultType::StsWebpkiInvalid,
        ),
        (
            StsProblem::Invalid("no mx".into()),
            ResultType::StsPolicyInvalid,
        ),
    ];
    for (problem, want) in problems {
        assert_eq!(ResultType::for_sts_problem(&problem), want, "{problem}");
    }
}

#[test]
fn policies_are_described_as_the_report_shows_them() {
    assert_eq!(
        Applied::sts(&sts_policy()),
        Applied::Sts {
            lines: vec![
                "version: STSv1".into(),
                "mode: enforce".into(),
                "mx: mx1.example.com".into(),
                "mx: *.backup.example.com".into(),
                "max_age: 86400".into(),
            ],
            mx: vec!["mx1.example.com".into(), "*.backup.example.com".into()],
        }
    );
    let records = [
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0x1f, 0x85, 0x0a, 0x00],
        },
        Tlsa {
            usage: 2,
            selector: 0,
            matching: 2,
            data: vec![0xab],
        },
    ];
    assert_eq!(
        Applied::tlsa(&records, "MX1.Example.com."),
        Applied::Tlsa {
            records: vec!["3 1 1 1F850A00".into(), "2 0 2 AB".into()],
            mx_host: "mx1.example.com".into(),
        }
    );
}

fn sample_sessions() -> Vec<Session> {
    let sts = Applied::sts(&sts_policy());
    let tlsa = Applied::tlsa(
        &[Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0xaa; 32],
        }],
        "mx.dane.example",
    );
    vec![
        session(NOON, "example.com", sts.clone(), SessionResult::Success),
        session(
            NOON + 1,
            "Example.COM.",
            sts.clone(),
            SessionResult::Success,
        ),
        session(
            NOON + 2,
            "example.com",
            sts.clone(),
            failure(
                ResultType::CertificateExpired,
                "mx1.example.com",
                "198.51.100.7",
            ),
        ),
        session(
            NOON + 3,
            "example.com",
            sts.clone(),
            failure(
                ResultType::CertificateExpired,
                "mx1.example.com",
                "198.51.100.7",
            ),
        ),
        session(
            NOON + 4,
            "example.com",
            sts,
            failure(
                ResultType::StarttlsNotSupported,
                "a.backup.example.com",
                "2001:db8::25",
            ),
        ),
        // The same domain under no policy (e.g. before it published one).
        session(
            NOON + 5,
            "example.com",
            Applied::NoPolicyFound,
            SessionResult::Success,
        ),
        session(
            NOON + 6,
            "dane.example",
            tlsa.clone(),
            SessionResult::Success,
        ),
        session(
            NOON + 7,
            "dane.example",
            tlsa,
            SessionResult::Failure(Failure {
                failure_reason_code: Some("no TLSA record matches".into()),
                ..Failure::new(ResultType::ValidationFailure)
            }),
        ),
        session(
            NOON + 8,
            "sts-down.example",
            Applied::sts_unavailable(),
            SessionResult::Failure(Failure::new(ResultType::StsPolicyFetchError)),
        ),
        // The day before and the day after: not in this day's report.
        session(
            NOON - 13 * 3600,
            "example.com",
            Applied::NoPolicyFound,
            SessionResult::Success,
        ),
        session(
            NOON + 12 * 3600,
            "example.com",
            Applied::NoPolicyFound,
            SessionResult::Success,
        ),
    ]
}

#[test]
fn journal_lines_read_back_the_same() {
    let sessions = sample_sessions();
    let mut journal = Vec::new();
    for s in &sessions {
        let line = s.to_line();
        assert_eq!(line.last(), Some(&b'\n'), "{s:?}");
        assert_eq!(
            line.iter().filter(|b| **b == b'\n').count(),
            1,
            "one line per session: {}",
            String::from_utf8_lossy(&line)
        );
        journal.extend(line);
    }
    let back = decode(&journal);
    assert_eq!(back.sessions, sessions);
    assert!(back.bad_lines.is_empty() && !back.torn, "{back:?}");
    assert_eq!(decode(b""), Journal::default());
}

#[test]
fn a_torn_last_line_is_ignored_and_a_bad_line_skipped() {
    let sessions = sample_sessions();
    let whole: Vec<u8> = sessions.iter().take(3).flat_map(Session::to_line).collect();
    // Cut anywhere inside the third line: the first two survive, no error.
    let second_end = sessions[0].to_line().len() + sessions[1].to_line().len();
    for cut in second_end + 1..whole.len() {
        let back = decode(&whole[..cut]);
        assert_eq!(back.sessions, sessions[..2], "cut at {cut}");
        assert!(back.torn, "cut at {cut}");
        assert!(back.bad_lines.is_empty(), "cut at {cut}: {back:?}");
    }
    // A writer that resumes after a torn line starts a new one: the torn
    // fragment is then a bad complete line, the sessions around it count.
    let mut resumed = whole[..second_end + 10].to_vec();
    resumed.push(b'\n');
    resumed.extend(sessions[3].to_line());
    let back = decode(&resumed);
    assert_eq!(
        back.sessions,
        [
            sessions[0].clone(),
            sessions[1].clone(),
            sessions[3].clone()
        ]
    );
    assert_eq!(back.bad_lines, [3]);
    assert!(!back.torn);
    // Blank lines are nothing; a line too long is bad without parsing.
    let mut odd = b"\n\n".to_vec();
    odd.extend(vec![b' '; MAX_LINE + 1]);
    odd.push(b'\n');
    odd.extend(sessions[0].to_line());
    let back = decode(&odd);
    assert_eq!(back.sessions, sessions[..1]);
    assert_eq!(back.bad_lines, [3]);
}

// ---- the daily report ----

fn submitter() -> Submitter {
    Submitter {
        organization: "Example Sender Inc.".into(),
        contact: "tlsrpt@sender.example".into(),
        domain: "sender.example".into(),
        unique_id: None,
    }
}

fn day() -> Day {
    Day::from_ymd(2026, 12, 7).expect("a date")
}

fn report_json(report: &Report) -> Value {
    serde_json::from_slice(&report.json).expect("the report is JSON")
}

#[test]
fn days_are_utc_days() {
    let d = day();
    assert_eq!(d.to_string(), "2026-12-07");
    assert_eq!(d.start(), Some(1_796_601_600));
    assert_eq!(d.end(), Some(1_796_601_600 + 86_399));
    assert_eq!(Day::of(NOON), Some(d));
    assert_eq!(Day::of(1_796_601_600), Some(d));
    assert_eq!(
        Day::of(1_796_601_599).map(|d| d.to_string()).as_deref(),
        Some("2026-12-06")
    );
    assert_eq!(
        d.next().map(|d| d.to_string()).as_deref(),
        Some("2026-12-08")
    );
    assert!(d.contains(d.end().expect("end")) && !d.contains(d.end().expect("end") + 1));
}

#[test]
fn a_day_makes_one_report_per_policy_domain() {
    let reports = aggregate(day(), &sample_sessions(), &submitter());
    let domains: Vec<&str> = reports.iter().map(|r| r.policy_domain.as_str()).collect();
    assert_eq!(domains, ["dane.example", "example.com", "sts-down.example"]);

    let example = report_json(&reports[1]);
    assert_eq!(
        example,
        json!({
            "organization-name": "Example Sender Inc.",
            "date-range": {
                "start-datetime": "2026-12-07T00:00:00Z",
                "end-datetime": "2026-12-07T23:59:59Z"
            },
            "contact-info": "tlsrpt@sender.example",
            "report-id": "20261207.example.com@sender.example",
            "policies": [
                {
                    "policy": {
                        "policy-type": "sts",
                        "policy-string": [
                            "version: STSv1",
                            "mode: enforce",
                            "mx: mx1.example.com",
                            "mx: *.backup.example.com",
                            "max_age: 86400"
                        ],
                        "policy-domain": "example.com",
                        "mx-host": ["mx1.example.com", "*.backup.example.com"]
                    },
                    "summary": {
                        "total-successful-session-count": 2,
                        "total-failure-session-count": 3
                    },
                    "failure-details": [
                        {
                            "result-type": "starttls-not-supported",
                            "sending-mta-ip": "192.0.2.1",
                            "receiving-mx-hostname": "a.backup.example.com",
                            "receiving-ip": "2001:db8::25",
                            "failed-session-count": 1
                        },
                        {
                            "result-type": "certificate-expired",
                            "sending-mta-ip": "192.0.2.1",
                            "receiving-mx-hostname": "mx1.example.com",
                            "receiving-ip": "198.51.100.7",
                            "failed-session-count": 2
                        }
                    ]
                },
                {
                    "policy": {
                        "policy-type": "no-policy-found",
                        "policy-domain": "example.com"
                    },
                    "summary": {
                        "total-successful-session-count": 1,
                        "total-failure-session-count": 0
                    },
                    "failure-details": []
                }
            ]
        })
    );
    assert_eq!(reports[1].report_id, "20261207.example.com@sender.example");

    let dane = report_json(&reports[0]);
    assert_eq!(
        dane["policies"],
        json!([{
            "policy": {
                "policy-type": "tlsa",
                "policy-string": [format!("3 1 1 {}", "AA".repeat(32))],
                "policy-domain": "dane.example",
                "mx-host": ["mx.dane.example"]
            },
            "summary": {
                "total-successful-session-count": 1,
                "total-failure-session-count": 1
            },
            "failure-details": [{
                "result-type": "validation-failure",
                "failure-reason-code": "no TLSA record matches",
                "failed-session-count": 1
            }]
        }])
    );
    let down = report_json(&reports[2]);
    assert_eq!(
        down["policies"][0]["policy"],
        json!({"policy-type": "sts", "policy-domain": "sts-down.example"})
    );
}

#[test]
fn the_report_does_not_depend_on_session_order() {
    let sessions = sample_sessions();
    let forward = aggregate(day(), &sessions, &submitter());
    let mut reversed = sessions;
    reversed.reverse();
    assert_eq!(forward, aggregate(day(), &reversed, &submitter()));
    assert!(aggregate(day(), &[], &submitter()).is_empty());
}

#[test]
fn file_names_follow_section_5_1() {
    let reports = aggregate(day(), &sample_sessions(), &submitter());
    assert_eq!(
        reports[1].file_name(&submitter()),
        "sender.example!example.com!1796601600!1796687999.json.gz"
    );
    let cases = [
        (None, "s.example!d.example!1!2.json.gz"),
        (Some("mx01"), "s.example!d.example!1!2!mx01.json.gz"),
        (Some("mx-01.a"), "s.example!d.example!1!2!mx01a.json.gz"),
        (Some("--"), "s.example!d.example!1!2.json.gz"),
    ];
    for (unique, want) in cases {
        assert_eq!(
            file_name("s.example", "d.example", 1, 2, unique),
            want,
            "{unique:?}"
        );
    }
    let with_id = Submitter {
        unique_id: Some("mx-01".into()),
        ..submitter()
    };
    let report = &aggregate(day(), &sample_sessions(), &with_id)[1];
    assert_eq!(report.report_id, "20261207.example.com.mx01@sender.example");
    assert_eq!(
        report.file_name(&with_id),
        "sender.example!example.com!1796601600!1796687999!mx01.json.gz"
    );
}

#[test]
fn the_gzipped_report_unzips_to_the_json() {
    let reports = aggregate(day(), &sample_sessions(), &submitter());
    let gz = reports[1].gzip();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut back)
        .expect("valid gzip");
    assert_eq!(back, reports[1].json);
}

// ---- the mail ----

#[test]
fn the_mail_is_a_tlsrpt_multipart_report() {
    let submitter = submitter();
    let reports = aggregate(day(), &sample_sessions(), &submitter);
    let report = &reports[1];
    let mail = Mail {
        report,
        submitter: &submitter,
        from: "tlsrpt@sender.example",
        to: "reports@example.com",
        date: UNIX_EPOCH + Duration::from_secs(NOON + 86_400),
        message_id: "tlsrpt.20261207.1",
    };
    let bytes = render_mail(&mail);
    let text = String::from_utf8(bytes.clone()).expect("7-bit");
    for line in text.split("\r\n") {
        assert!(line.len() <= 998 && line.is_ascii(), "{line:?}");
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare line end in {line:?}"
        );
    }

    let message = mail_parser::MessageParser::default()
        .parse(&bytes)
        .expect("parses");
    let header = |name: &str| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} field in\n{text}"))
    };
    assert_eq!(header("TLS-Report-Domain"), "example.com");
    assert_eq!(header("TLS-Report-Submitter"), "sender.example");
    assert_eq!(header("TLS-Required"), "No");
    assert_eq!(header("From"), "<tlsrpt@sender.example>");
    assert_eq!(header("To"), "<reports@example.com>");
    assert_eq!(header("Message-ID"), "<tlsrpt.20261207.1@sender.example>");
    assert_eq!(header("Date"), "Tue, 8 Dec 2026 12:00:00 +0000");
    assert_eq!(
        message.subject(),
        Some("Report Domain: example.com Submitter: sender.example Report-ID: <20261207.example.com@sender.example>")
    );
    let content_type = message.content_type().expect("a content type");
    assert_eq!(content_type.ctype(), "multipart");
    assert_eq!(content_type.subtype(), Some("report"));
    assert_eq!(content_type.attribute("report-type"), Some("tlsrpt"));

    let body = message.body_text(0).expect("a text part");
    assert!(
        body.contains("aggregate TLS report") && body.contains("2026-12-07"),
        "{body}"
    );
    assert_eq!(message.attachment_count(), 1, "{text}");
    let attachment = message.attachment(0).expect("the report");
    let attachment_type = attachment.content_type().expect("typed");
    assert_eq!(
        (attachment_type.ctype(), attachment_type.subtype()),
        ("application", Some("tlsrpt+gzip"))
    );
    assert_eq!(
        attachment.attachment_name(),
        Some("sender.example!example.com!1796601600!1796687999.json.gz")
    );
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(attachment.contents())
        .read_to_end(&mut json)
        .expect("the attachment is gzip");
    assert_eq!(json, report.json);
}
