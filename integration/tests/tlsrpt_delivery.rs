//! TLS reports end to end (RFC 8460): postman delivers to two domains that
//! ask for reports, one over TLS and one whose server offers no STARTTLS
//! though TLS is required; the worker's sessions reach the journal; `postman
//! tls-report` mails each domain its report through the queue; the next run
//! delivers the reports to the rua's server, an aiosmtpd sink, where a
//! real DKIM verifier (dkimpy), Python's email parser and the RFC's JSON
//! schema judge them.

#[path = "common/mod.rs"]
mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::postman::dkim::SigningKey;
use ::postman::tlsrpt::Day;
use common::{assert_outcome, config, message};
use postman_integration::smtp_sink::python;
use postman_integration::{
    postman, AiosmtpdSink, DnsServer, SinkOptions, TestCert, TestNet, TestQueue, Zones,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../integration/peers/check_tlsrpt.py"
);
const SCHEMA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../integration/peers/tlsrpt-schema.json"
);
const KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../src/testdata/dkim-ed25519.pem"
);

/// What `check_tlsrpt.py` says of `message`, signed under `dkim_txt`.
fn check(message: &[u8], dkim_txt: &str) -> Value {
    let mut child = Command::new(python())
        .args([SCRIPT, SCHEMA, dkim_txt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {SCRIPT} (scripts/test.sh installs dkimpy): {e}"));
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(message)
        .expect("message written");
    let out = child.wait_with_output().expect("script ran");
    assert!(
        out.status.success(),
        "{SCRIPT} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script prints JSON")
}

#[test]
fn a_day_of_sessions_is_reported_to_each_domain_signed_and_valid() {
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    // tls.test: STARTTLS offered. plain.test: no STARTTLS, TLS required.
    // rua.test: where both want their reports.
    let cert = TestCert::new(&["mx.tls.test"]);
    let tls_sink = AiosmtpdSink::start_with(
        net.ip(1),
        net.port(),
        &dir.path().join("tls"),
        &SinkOptions {
            tls: Some((cert.cert_path().into(), cert.key_path().into())),
            pipelining: true,
            client_ca: None,
        },
    );
    let _plain_sink = AiosmtpdSink::start(net.ip(2), net.port(), &dir.path().join("plain"));
    let rua_sink = AiosmtpdSink::start(net.ip(3), net.port(), &dir.path().join("rua"));
    let dns = DnsServer::start(
        Zones::new()
            .mx("tls.test", 10, "mx.tls.test")
            .a("mx.tls.test", net.ipv4(1))
            .mx("plain.test", 10, "mx.plain.test")
            .a("mx.plain.test", net.ipv4(2))
            .mx("rua.test", 10, "mx.rua.test")
            .a("mx.rua.test", net.ipv4(3))
            .txt(
                "_smtp._tls.tls.test",
                "v=TLSRPTv1; rua=mailto:reports@rua.test",
            )
            .txt(
                "_smtp._tls.plain.test",
                "v=TLSRPTv1;rua=mailto:reports@rua.test",
            ),
    );
    let queue = TestQueue::new();
    queue.add(
        "tls.test",
        "m1",
        "a@src.test",
        &["r@tls.test"],
        &message("m1", "x\n"),
    );
    queue.add(
        "plain.test",
        "m2",
        "a@src.test",
        &["r@plain.test"],
        &message("m2", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!(
        "\n[tls.policy]\n\"plain.test\" = \"encrypt\"\n\
         [tlsrpt]\nenabled = true\nfrom = \"tlsrpt@sender.test\"\n\
         dkim_key = \"{KEY}\"\ndkim_selector = \"s1\"\n"
    );
    let file = cfg.write();
    let out = postman!().run_once(&file);
    out.assert_success();
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "r@tls.test", "sent", Some(250));
    assert_outcome(&out, &deliveries, "r@plain.test", "deferred", None);
    assert_eq!(tls_sink.wait_for(1, WAIT).len(), 1);

    // The day's journal holds both sessions.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let today = Day::of(now).expect("a day").to_string();
    let journal = queue
        .root()
        .join(".OTHER_SERVERS/.tlsrpt")
        .join(format!("{today}.jsonl"));
    let lines = std::fs::read_to_string(&journal)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", journal.display(), out.stderr));
    assert_eq!(lines.lines().count(), 2, "{lines}");

    // Sent now, before the day is over.
    let path = file.path().to_str().expect("a UTF-8 path");
    let sent = postman!().run(&["tls-report", "--config", path, "--day", &today], WAIT);
    sent.assert_success();
    for domain in ["tls.test", "plain.test"] {
        assert!(
            sent.stdout
                .contains(&format!("{today} {domain} mailto:reports@rua.test sent")),
            "{}\n{}",
            sent.stdout,
            sent.stderr
        );
    }
    assert!(sent.stdout.contains("is not over"), "{}", sent.stdout);

    // The next run delivers the two report mails to rua.test.
    postman!().run_once(&file).assert_success();
    let reports = rua_sink.wait_for(2, WAIT);
    assert_eq!(reports.len(), 2, "{reports:#?}");
    let key = SigningKey::from_pem(&std::fs::read(KEY).unwrap()).expect("the key loads");
    let mut seen = Vec::new();
    for received in &reports {
        assert_eq!(received.mail_from, "tlsrpt@sender.test");
        assert_eq!(received.rcpt_tos, ["reports@rua.test"]);
        let judged = check(&received.data, &key.dns_record());
        assert_eq!(judged["dkim"], true, "DKIM verifies: {judged}");
        assert_eq!(
            judged["schema_errors"],
            Value::Array(Vec::new()),
            "{judged}"
        );
        assert_eq!(judged["count_errors"], Value::Array(Vec::new()), "{judged}");
        let report = &judged["report"];
        let policy = &report["policies"][0];
        seen.push((
            policy["policy"]["policy-domain"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            policy["summary"]["total-successful-session-count"].clone(),
            policy["summary"]["total-failure-session-count"].clone(),
            policy["failure-details"][0]["result-type"].clone(),
        ));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            (
                "plain.test".to_owned(),
                Value::from(0),
                Value::from(1),
                Value::from("starttls-not-supported")
            ),
            (
                "tls.test".to_owned(),
                Value::from(1),
                Value::from(0),
                Value::Null
            ),
        ]
    );
}

/// An `https:` destination (RFC 8460 §5.4): the report is POSTed gzipped,
/// as `application/tlsrpt+gzip`, to a server whose certificate a trusted
/// test CA signed, and answered 201.
#[test]
fn a_report_is_posted_to_an_https_destination() {
    use postman_integration::certs::TestCa;
    use postman_integration::mta_sts::{Behaviour, PolicyServer};
    let net = TestNet::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let web = ca.leaf(&["reports.rua.test"]);
    let collector = PolicyServer::start(&web, "unused\n", Behaviour::Ok);
    let _sink = AiosmtpdSink::start(net.ip(1), net.port(), &dir.path().join("mx"));
    let dns = DnsServer::start(
        Zones::new()
            .mx("posted.test", 10, "mx.posted.test")
            .a("mx.posted.test", net.ipv4(1))
            .addr("reports.rua.test", collector.ip())
            .txt(
                "_smtp._tls.posted.test",
                "v=TLSRPTv1; rua=https://reports.rua.test/v1/tlsrpt",
            ),
    );
    let queue = TestQueue::new();
    queue.add(
        "posted.test",
        "m1",
        "a@src.test",
        &["r@posted.test"],
        &message("m1", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!(
        "\n[tls]\nca_file = \"{}\"\n[tlsrpt]\nenabled = true\nfrom = \"tlsrpt@sender.test\"\n\
         dkim_key = \"{KEY}\"\ndkim_selector = \"s1\"\n",
        ca.cert_path().display()
    );
    let file = cfg.write();
    let out = postman!().run_once(&file);
    out.assert_success();
    assert_outcome(&out, &out.deliveries(), "r@posted.test", "sent", Some(250));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let today = Day::of(now).expect("a day").to_string();
    let path = file.path().to_str().expect("a UTF-8 path");
    let sent = postman!().run(&["tls-report", "--config", path, "--day", &today], WAIT);
    sent.assert_success();
    assert!(
        sent.stdout.contains(&format!(
            "{today} posted.test https://reports.rua.test/v1/tlsrpt sent"
        )),
        "{}\n{}",
        sent.stdout,
        sent.stderr
    );
    let posts = collector.posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (host, path, media, body) = &posts[0];
    assert_eq!(
        (host.as_str(), path.as_str()),
        ("reports.rua.test", "/v1/tlsrpt")
    );
    assert_eq!(media, "application/tlsrpt+gzip");
    let mut json = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(body.as_slice()),
        &mut json,
    )
    .expect("the body is gzip");
    let report: Value = serde_json::from_slice(&json).expect("the report is JSON");
    let policy = &report["policies"][0];
    assert_eq!(policy["policy"]["policy-domain"], "posted.test", "{report}");
    // Its MX host offers no STARTTLS: delivered in plaintext, counted.
    assert_eq!(
        policy["summary"]["total-failure-session-count"], 1,
        "{report}"
    );
    assert_eq!(
        policy["failure-details"][0]["result-type"], "starttls-not-supported",
        "{report}"
    );
}
