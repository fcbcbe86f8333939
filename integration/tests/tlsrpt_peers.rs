//! TLS reports (RFC 8460) as postman's core makes them, judged by tools
//! that share no code with it: dkimpy verifies the DKIM signature of the
//! report mail (RFC 6376 with RSA, RFC 8463 with Ed25519), Python's
//! `email` package parses its MIME structure, and `jsonschema` checks the
//! gzipped report against a JSON Schema written from RFC 8460 §4.4
//! (`peers/tlsrpt-schema.json`); `peers/check_tlsrpt.py` does all three.
//! No DNS server is needed: the script hands dkimpy the key record.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use postman::dane::Tlsa;
use postman::dkim::{Signer, SigningKey, REPORT_HEADERS};
use postman::mta_sts::Policy;
use postman::tlsrpt::{
    aggregate, render_mail, signed_mail, Applied, Day, Failure, Mail, Report, ResultType, Session,
    SessionResult, Submitter,
};
use postman_integration::smtp_sink::python;
use ring::rand::SystemRandom;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/check_tlsrpt.py");
const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/tlsrpt-schema.json");
const RSA_KEY: &[u8] = include_bytes!("../../src/testdata/dkim-rsa2048.pem");
const ED25519_KEY: &[u8] = include_bytes!("../../src/testdata/dkim-ed25519.pem");

/// 2026-12-07 00:00:00 UTC.
const MIDNIGHT: u64 = 1_796_601_600;

/// What `check_tlsrpt.py` reports about `message`, whose signature's key
/// record is `dkim_txt`.
fn check(message: &[u8], dkim_txt: &str) -> Value {
    let mut child = Command::new(python())
        .args([SCRIPT, SCHEMA, dkim_txt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {SCRIPT} (scripts/test.sh installs dkimpy and jsonschema): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(message)
        .expect("message written to the script");
    let out = child.wait_with_output().expect("script ran");
    assert!(
        out.status.success(),
        "{SCRIPT} failed (scripts/test.sh installs dkimpy and jsonschema): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{SCRIPT} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn submitter() -> Submitter {
    Submitter {
        organization: "Postman Test Sender".into(),
        contact: "mailto:tlsrpt@sender.example".into(),
        domain: "sender.example".into(),
        unique_id: Some("mx1".into()),
    }
}

/// A day with successes and every kind of failure, under each kind of
/// policy, over three policy domains.
fn sessions() -> Vec<Session> {
    let sts = Applied::sts(
        &Policy::parse("version: STSv1\nmode: enforce\nmx: mx.example.com\nmx: *.example.net\nmax_age: 604800\n")
            .expect("valid policy"),
    );
    let tlsa = Applied::tlsa(
        &[Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0x5a; 32],
        }],
        "mx.dane.example",
    );
    let mut sessions = Vec::new();
    for (i, kind) in ResultType::ALL.into_iter().enumerate() {
        let (domain, policy) = match kind {
            ResultType::TlsaInvalid | ResultType::DnssecInvalid | ResultType::DaneRequired => {
                ("dane.example", tlsa.clone())
            }
            ResultType::StsPolicyFetchError
            | ResultType::StsPolicyInvalid
            | ResultType::StsWebpkiInvalid => ("broken-sts.example", Applied::sts_unavailable()),
            _ => ("example.com", sts.clone()),
        };
        let failure = Failure {
            sending_mta_ip: Some("192.0.2.10".parse().expect("ip")),
            receiving_mx_hostname: Some("mx.example.com".into()),
            receiving_ip: Some(
                if i % 2 == 0 {
                    "198.51.100.25"
                } else {
                    "2001:db8::25"
                }
                .parse()
                .expect("ip"),
            ),
            failure_reason_code: (kind == ResultType::ValidationFailure)
                .then(|| "bad signature".into()),
            ..Failure::new(kind)
        };
        for n in 0..=i as u64 {
            sessions.push(Session {
                at: MIDNIGHT + 3600 + n,
                policy_domain: domain.into(),
                policy: policy.clone(),
                result: SessionResult::Failure(failure.clone()),
            });
        }
        sessions.push(Session {
            at: MIDNIGHT + 7200,
            policy_domain: domain.into(),
            policy: policy.clone(),
            result: SessionResult::Success,
        });
    }
    sessions.push(Session {
        at: MIDNIGHT + 86_399,
        policy_domain: "example.com".into(),
        policy: Applied::NoPolicyFound,
        result: SessionResult::Success,
    });
    sessions
}

/// The mail of `report` to one mailto: rua, a day after the day.
fn mail<'a>(report: &'a Report, submitter: &'a Submitter) -> Mail<'a> {
    Mail {
        report,
        submitter,
        from: "tlsrpt@sender.example",
        to: "tls-reports@example.com",
        date: UNIX_EPOCH + Duration::from_secs(MIDNIGHT + 86_400 + 600),
        message_id: "tlsrpt-test-1",
    }
}

fn mail_for(report: &Report, submitter: &Submitter) -> Vec<u8> {
    render_mail(&mail(report, submitter))
}

fn header<'a>(seen: &'a Value, name: &str) -> Option<&'a str> {
    seen["headers"].as_array()?.iter().find_map(|pair| {
        let n = pair.get(0)?.as_str()?;
        n.eq_ignore_ascii_case(name)
            .then(|| pair.get(1)?.as_str())
            .flatten()
    })
}

#[test]
fn signed_reports_pass_dkimpy_python_email_and_the_rfc_schema() {
    let submitter = submitter();
    let day = Day::from_ymd(2026, 12, 7).expect("date");
    let reports = aggregate(day, &sessions(), &submitter);
    assert_eq!(reports.len(), 3, "one report per policy domain");
    for (key_pem, algorithm) in [(RSA_KEY, "rsa-sha256"), (ED25519_KEY, "ed25519-sha256")] {
        let key = SigningKey::from_pem(key_pem).expect("test key loads");
        let signer = Signer {
            domain: "sender.example",
            selector: "tlsrpt",
            key: &key,
        };
        for report in &reports {
            let what = format!("{algorithm}, {}", report.policy_domain);
            // What the reporter queues for a mailto: rua.
            let signed = signed_mail(&mail(report, &submitter), &signer, &SystemRandom::new())
                .expect("signs");
            let seen = check(&signed, &key.dns_record());
            assert_eq!(
                seen["dkim_tags"]["t"],
                (MIDNIGHT + 86_400 + 600).to_string(),
                "{what}: t= is the mail's date"
            );
            assert_eq!(
                seen["dkim"], true,
                "{what}: dkimpy rejects the signature: {seen}"
            );
            assert_eq!(seen["dkim_tags"]["a"], algorithm, "{what}");
            assert_eq!(seen["dkim_tags"]["d"], "sender.example", "{what}");
            assert!(
                seen["dkim_tags"].get("l").is_none(),
                "{what}: no l= (RFC 8460 §3)"
            );
            assert_eq!(seen["defects"], serde_json::json!([]), "{what}: {seen}");
            assert_eq!(seen["content_type"], "multipart/report", "{what}");
            assert_eq!(seen["report_type"], "tlsrpt", "{what}");
            assert_eq!(
                seen["parts"],
                serde_json::json!([
                    {"content_type": "text/plain", "filename": null},
                    {"content_type": "application/tlsrpt+gzip", "filename": report.file_name(&submitter)},
                ]),
                "{what}"
            );
            assert_eq!(
                header(&seen, "TLS-Report-Domain"),
                Some(report.policy_domain.as_str()),
                "{what}"
            );
            assert_eq!(
                header(&seen, "TLS-Report-Submitter"),
                Some("sender.example"),
                "{what}"
            );
            assert_eq!(header(&seen, "TLS-Required"), Some("No"), "{what}");
            assert_eq!(
                header(&seen, "Subject").map(str::to_owned),
                Some(format!(
                    "Report Domain: {} Submitter: sender.example Report-ID: <{}>",
                    report.policy_domain, report.report_id
                )),
                "{what}"
            );
            assert_eq!(
                seen["schema_errors"],
                serde_json::json!([]),
                "{what}: {}",
                seen["report"]
            );
            assert_eq!(seen["count_errors"], serde_json::json!([]), "{what}");
            let ours: Value = serde_json::from_slice(&report.json).expect("JSON");
            assert_eq!(seen["report"], ours, "{what}: the attachment is the report");
        }
    }
}

#[test]
fn the_checks_catch_a_tampered_mail_and_a_malformed_report() {
    let submitter = submitter();
    let day = Day::from_ymd(2026, 12, 7).expect("date");
    let reports = aggregate(day, &sessions(), &submitter);
    let key = SigningKey::from_pem(RSA_KEY).expect("test key loads");
    let signer = Signer {
        domain: "sender.example",
        selector: "tlsrpt",
        key: &key,
    };
    let signed = signer
        .sign(
            &mail_for(&reports[0], &submitter),
            &REPORT_HEADERS,
            MIDNIGHT,
            &SystemRandom::new(),
        )
        .expect("signs");
    let text = String::from_utf8(signed).expect("7-bit");
    let tampered = text.replace("TLS-Report-Domain: ", "TLS-Report-Domain: x");
    assert_eq!(check(tampered.as_bytes(), &key.dns_record())["dkim"], false);
    let other_key = SigningKey::from_pem(ED25519_KEY).expect("loads");
    assert_eq!(
        check(text.as_bytes(), &other_key.dns_record())["dkim"],
        false
    );

    // The schema is not vacuous: a report with `policies` as an object and
    // an unknown result type fails it.
    let bad = Report {
        json: br#"{"organization-name": "x", "date-range": {"start-datetime": "2026-12-07T00:00:00Z", "end-datetime": "2026-12-07"}, "contact-info": "c", "report-id": "r", "policies": {"policy": {}}}"#.to_vec(),
        ..reports[0].clone()
    };
    let seen = check(&mail_for(&bad, &submitter), "v=DKIM1; p=");
    let errors = seen["schema_errors"].as_array().expect("a list");
    assert!(
        errors.len() >= 2,
        "date and policies must both fail: {errors:?}"
    );
}
