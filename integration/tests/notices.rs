//! End to end: postman's own notifications follow the sender's DSN wishes
//! (RFC 3461) queued with the message, against real peers on loopback.
//!
//! * aiosmtpd, which does not advertise DSN, takes a `NOTIFY=SUCCESS`
//!   recipient: the local sender gets one "relayed" success notice (RFC
//!   3461 §5.2.2) with `Original-Envelope-Id` and `Original-Recipient`. A
//!   scripted server that advertises DSN gets the NOTIFY instead, and
//!   postman sends nothing.
//! * A scripted server refuses every recipient with 550: `NOTIFY=NEVER`
//!   (or a NOTIFY without FAILURE) means no bounce and no `.failed` copy;
//!   `NOTIFY=FAILURE` with `RET=FULL` returns the whole message, 8-bit body
//!   and all, unless it is over `delivery.bounce_size_limit`.
//! * A scripted server answering 451: the delay warning names only the
//!   recipients whose NOTIFY asks for delays (or who have none).
//!
//! Every notification is parsed by Python's own `email` package
//! (`integration/peers/parse_dsn.py`), a MIME parser postman's tests do not otherwise
//! use.

mod common;

use common::{assert_outcome, local_bounces, local_config, refusing, zones_for};
use postman_integration::python_dsn::{field as get, parse};
use postman_integration::smtp_sink::base64_decode;
use postman_integration::{
    postman, AiosmtpdSink, DnsServer, HostileServer, RunOutput, Script, TestNet, TestQueue, Zones,
};
use serde_json::Value;

/// A queue file from alice@local.test (her notices land in her Maildir)
/// with the message fields `params` and one `X-Postman-To` line each in
/// `to`, written by hand as a receiving server would.
fn queue_file(params: &[&str], to: &[&str], message: &[u8]) -> Vec<u8> {
    queue_file_dated(postman_integration::queue::unix_now(), params, to, message)
}

/// [`queue_file`] with the arrival `date` in Unix seconds.
fn queue_file_dated(date: u64, params: &[&str], to: &[&str], message: &[u8]) -> Vec<u8> {
    let mut out = format!("X-Postman-From: <alice@local.test>\nX-Postman-Date: {date}\n");
    for line in params.iter().chain(to) {
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    let mut out = out.into_bytes();
    out.extend_from_slice(message);
    out
}

/// The content types of the notification's parts.
fn part_types(dsn: &Value) -> Vec<String> {
    dsn["parts"]
        .as_array()
        .map(|parts| {
            parts
                .iter()
                .map(|p| p["content_type"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Checks what every notice shares: a defect-free multipart/report to
/// alice, with this subject and these parts.
fn check_report(dsn: &Value, subject: &str, parts: &[&str], raw: &[u8]) {
    let raw = String::from_utf8_lossy(raw);
    assert_eq!(
        dsn["defects"],
        serde_json::json!([]),
        "no MIME defects:\n{raw}"
    );
    assert_eq!(dsn["content_type"], "multipart/report", "{raw}");
    assert_eq!(dsn["report_type"], "delivery-status", "{raw}");
    assert_eq!(dsn["subject"], subject, "{raw}");
    // Python gives the address without its angle brackets.
    assert_eq!(dsn["to"], "alice@local.test", "{raw}");
    assert_eq!(part_types(dsn), parts, "part types:\n{raw}");
}

fn run(cfg: &postman_integration::Config) -> RunOutput {
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    out
}

/// aiosmtpd (no DSN in its EHLO reply) accepts every recipient: only the
/// one that asked with NOTIFY=SUCCESS is reported, as relayed, with the
/// ENVID and its ORCPT decoded from xtext.
#[test]
fn a_server_without_dsn_means_a_relayed_notice() {
    let net = TestNet::new();
    let sink_dir = tempfile::tempdir().expect("sink dir");
    let sink = AiosmtpdSink::start(net.ip(1), net.port(), sink_dir.path());
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "relay.test"));
    let queue = TestQueue::new();
    let message = b"From: Alice <alice@local.test>\nTo: ok@relay.test\nSubject: relayed\nMessage-ID: <relayed@local.test>\n\nthe body stays home\n";
    queue.add_raw(
        "relay.test",
        "m1",
        &queue_file(
            &["X-Postman-Envid: env+2D1", "X-Postman-Ret: FULL"],
            &[
                "X-Postman-To: <ok@relay.test> NOTIFY=SUCCESS ORCPT=rfc822;Orig+2Bok@relay.test",
                "X-Postman-To: <quiet@relay.test> NOTIFY=FAILURE,DELAY",
                "X-Postman-To: <plain@relay.test>",
            ],
            message,
        ),
    );
    let out = run(&local_config(&queue, &net, &dns));
    let got = sink.messages();
    assert_eq!(got.len(), 1, "aiosmtpd got the message:\n{}", out.stderr);
    assert_eq!(got[0].rcpt_tos.len(), 3, "{:?}", got[0].rcpt_tos);
    assert!(
        got[0]
            .mail_options
            .iter()
            .all(|o| !o.starts_with("RET=") && !o.starts_with("ENVID=")),
        "no DSN parameters to a server without DSN: {:?}",
        got[0].mail_options
    );
    let deliveries = out.deliveries();
    for to in ["ok@relay.test", "quiet@relay.test", "plain@relay.test"] {
        assert_outcome(&out, &deliveries, to, "sent", Some(250));
    }
    assert!(queue.state().is_empty(), "{}", queue.describe());

    let notices = local_bounces(&queue, "alice");
    assert_eq!(notices.len(), 1, "one success notice:\n{}", out.stderr);
    let dsn = parse(&notices[0]);
    let raw = String::from_utf8_lossy(&notices[0]);
    check_report(
        &dsn,
        "Successful Mail Delivery Report",
        &[
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers",
        ],
        &notices[0],
    );
    let text = dsn["text"].as_str().unwrap_or("");
    assert!(text.contains("successfully delivered"), "{text}");
    assert!(
        text.contains("<ok@relay.test>: delivery via mx.relay.test["),
        "{text}"
    );
    let pm = &dsn["per_message"];
    assert_eq!(get(pm, "Reporting-MTA"), Some("dns; postman.test"), "{raw}");
    assert_eq!(get(pm, "Original-Envelope-Id"), Some("env-1"), "{raw}");
    let rcpts = dsn["recipients"].as_array().cloned().unwrap_or_default();
    assert_eq!(rcpts.len(), 1, "only ok@relay.test asked:\n{raw}");
    let r = &rcpts[0];
    assert_eq!(
        get(r, "Original-Recipient"),
        Some("rfc822;Orig+ok@relay.test"),
        "{raw}"
    );
    assert_eq!(
        get(r, "Final-Recipient"),
        Some("rfc822; ok@relay.test"),
        "{raw}"
    );
    assert_eq!(get(r, "Action"), Some("relayed"), "{raw}");
    assert!(
        get(r, "Status").is_some_and(|s| s.starts_with("2.")),
        "{raw}"
    );
    assert_eq!(get(r, "Remote-MTA"), Some("dns; mx.relay.test"), "{raw}");
    // RET=FULL is for failures: a success notice returns headers only.
    let returned = &dsn["returned"];
    assert_eq!(returned["content_type"], "text/rfc822-headers", "{raw}");
    assert_eq!(
        get(&returned["headers"], "Subject"),
        Some("relayed"),
        "{raw}"
    );
}

/// A server that advertises DSN gets the NOTIFY on RCPT and reports the
/// success itself: postman sends no notice (RFC 3461 §5.2.2).
#[test]
fn a_server_with_dsn_reports_the_success_itself() {
    let net = TestNet::new();
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::polite().answer(
            "EHLO",
            "250-hostile.test\n250-PIPELINING\n250-8BITMIME\n250 DSN",
        )],
    );
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "dsn.test"));
    let queue = TestQueue::new();
    queue.add_raw(
        "dsn.test",
        "m1",
        &queue_file(
            &["X-Postman-Envid: env2"],
            &["X-Postman-To: <ok@dsn.test> NOTIFY=SUCCESS"],
            b"Subject: dsn server\n\nbody\n",
        ),
    );
    let out = run(&local_config(&queue, &net, &dns));
    assert_outcome(&out, &out.deliveries(), "ok@dsn.test", "sent", Some(250));
    let commands = server.commands();
    assert!(
        commands
            .iter()
            .any(|c| c.starts_with("RCPT TO:<ok@dsn.test>") && c.contains("NOTIFY=SUCCESS")),
        "the NOTIFY went to the server: {commands:#?}"
    );
    assert!(
        local_bounces(&queue, "alice").is_empty(),
        "no notice from postman:\n{}",
        out.stderr
    );
}

/// Every recipient is refused with 550. A message whose recipients asked
/// not to hear of failures gets no bounce and leaves no `.failed` copy;
/// RET=FULL returns the whole message (its 8-bit body labelled 8bit), but
/// only its headers once it is over `delivery.bounce_size_limit`.
#[test]
fn notify_and_ret_shape_the_bounce() {
    let net = TestNet::new();
    let _server = HostileServer::start(net.addr(1), vec![refusing("550 5.1.1 no such user")]);
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "fail.test"));
    let queue = TestQueue::new();
    queue.add_raw(
        "fail.test",
        "silent",
        &queue_file(
            &["X-Postman-Envid: silent", "X-Postman-Ret: FULL"],
            &[
                "X-Postman-To: <never@fail.test> NOTIFY=NEVER",
                "X-Postman-To: <other@fail.test> NOTIFY=SUCCESS,DELAY",
            ],
            b"Subject: silent\n\nnobody hears of this\n",
        ),
    );
    let body = "Grüße aus Köln, the whole body comes back\n".as_bytes();
    let mut full = b"From: Alice <alice@local.test>\nTo: fail@fail.test\nSubject: full\nMessage-ID: <full@local.test>\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n".to_vec();
    full.extend_from_slice(body);
    queue.add_raw(
        "fail.test",
        "full",
        &queue_file(
            &["X-Postman-Ret: FULL", "X-Postman-Envid: QQ314159+2Bfull"],
            &["X-Postman-To: <fail@fail.test> NOTIFY=FAILURE ORCPT=rfc822;First+2Bfail@fail.test"],
            &full,
        ),
    );
    let mut big = b"Subject: big\n\n".to_vec();
    big.extend(std::iter::repeat_n(b"0123456789abcdef0123456789abcdef\n", 64).flatten());
    queue.add_raw(
        "fail.test",
        "big",
        &queue_file(
            &["X-Postman-Ret: FULL", "X-Postman-Envid: big"],
            &["X-Postman-To: <big@fail.test>"],
            &big,
        ),
    );
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.bounce_size_limit = Some(1000);
    let out = run(&cfg);
    let deliveries = out.deliveries();
    for to in [
        "never@fail.test",
        "other@fail.test",
        "fail@fail.test",
        "big@fail.test",
    ] {
        assert_outcome(&out, &deliveries, to, "bounced", Some(550));
    }
    let state = queue.state();
    assert!(
        state.is_empty(),
        "nothing queued, nothing aside:\n{}",
        queue.describe()
    );
    assert!(
        state.failed_entry("fail.test", "silent").is_none(),
        "{}",
        queue.describe()
    );

    let mut by_envid = std::collections::BTreeMap::new();
    for notice in local_bounces(&queue, "alice") {
        let dsn = parse(&notice);
        let envid = get(&dsn["per_message"], "Original-Envelope-Id")
            .unwrap_or_else(|| panic!("no ENVID:\n{}", String::from_utf8_lossy(&notice)))
            .to_owned();
        by_envid.insert(envid, (dsn, notice));
    }
    let envids: Vec<&str> = by_envid.keys().map(String::as_str).collect();
    assert_eq!(
        envids,
        ["QQ314159+full", "big"],
        "one bounce each, none for silent"
    );

    let (dsn, raw) = &by_envid["QQ314159+full"];
    let text = String::from_utf8_lossy(raw);
    check_report(
        dsn,
        "Undelivered Mail Returned to Sender",
        &["text/plain", "message/delivery-status", "message/rfc822"],
        raw,
    );
    assert_eq!(
        dsn["cte"], "8bit",
        "an 8bit part makes the report 8bit:\n{text}"
    );
    assert_eq!(dsn["parts"][2]["cte"], "8bit", "{text}");
    let rcpts = dsn["recipients"].as_array().cloned().unwrap_or_default();
    assert_eq!(rcpts.len(), 1, "{text}");
    let r = &rcpts[0];
    assert_eq!(
        get(r, "Original-Recipient"),
        Some("rfc822;First+fail@fail.test"),
        "{text}"
    );
    assert_eq!(
        get(r, "Final-Recipient"),
        Some("rfc822; fail@fail.test"),
        "{text}"
    );
    assert_eq!(get(r, "Action"), Some("failed"), "{text}");
    assert_eq!(get(r, "Status"), Some("5.1.1"), "{text}");
    assert_eq!(
        get(r, "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 no such user"),
        "{text}"
    );
    let returned = &dsn["returned"];
    assert_eq!(get(&returned["headers"], "Subject"), Some("full"), "{text}");
    let got_body = returned["body_b64"]
        .as_str()
        .and_then(base64_decode)
        .unwrap_or_default();
    let want_body = String::from_utf8_lossy(body).replace('\n', "\r\n");
    assert_eq!(
        String::from_utf8_lossy(&got_body),
        want_body,
        "the whole body, octets kept:\n{text}"
    );

    let (dsn, raw) = &by_envid["big"];
    check_report(
        dsn,
        "Undelivered Mail Returned to Sender",
        &[
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers",
        ],
        raw,
    );
    assert_eq!(
        get(&dsn["returned"]["headers"], "Subject"),
        Some("big"),
        "over the limit: headers only"
    );
    let rcpts = dsn["recipients"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        get(&rcpts[0], "Original-Recipient"),
        None,
        "no ORCPT queued"
    );
}

/// A message deferred past `delivery.delay_warning`: the one warning names
/// only the recipients whose NOTIFY asks for delays (or who have none), and
/// a message whose recipients all declined gets none.
#[test]
fn the_delay_warning_names_those_who_asked() {
    let net = TestNet::new();
    let _server = HostileServer::start(
        net.addr(1),
        vec![Script::polite()
            .answer("RCPT", "451 4.2.0 try again later")
            .answer("DATA", "554 5.5.1 no valid recipients")],
    );
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "late.test"));
    let queue = TestQueue::new();
    let five_hours_ago = postman_integration::queue::unix_now() - 5 * 3600;
    queue.add_raw(
        "late.test",
        "asked",
        &queue_file_dated(
            five_hours_ago,
            &["X-Postman-Envid: late"],
            &[
                "X-Postman-To: <d@late.test> NOTIFY=DELAY ORCPT=rfc822;D+2Bx@late.test",
                "X-Postman-To: <n@late.test> NOTIFY=NEVER",
                "X-Postman-To: <f@late.test> NOTIFY=SUCCESS,FAILURE",
                "X-Postman-To: <x@late.test>",
            ],
            b"Subject: late\n\nbody\n",
        ),
    );
    queue.add_raw(
        "late.test",
        "declined",
        &queue_file_dated(
            five_hours_ago,
            &["X-Postman-Envid: declined"],
            &["X-Postman-To: <q@late.test> NOTIFY=FAILURE"],
            b"Subject: declined\n\nbody\n",
        ),
    );
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.delay_warning = Some(4 * 3600);
    let out = run(&cfg);
    let deliveries = out.deliveries();
    for to in [
        "d@late.test",
        "n@late.test",
        "f@late.test",
        "x@late.test",
        "q@late.test",
    ] {
        assert_outcome(&out, &deliveries, to, "deferred", Some(451));
    }
    let state = queue.state();
    assert!(
        state.is_queued("late.test", "asked") && state.is_queued("late.test", "declined"),
        "both stay queued:\n{}",
        queue.describe()
    );
    let notices = local_bounces(&queue, "alice");
    assert_eq!(
        notices.len(),
        1,
        "one warning, for \"asked\" only:\n{}",
        out.stderr
    );
    let dsn = parse(&notices[0]);
    let raw = String::from_utf8_lossy(&notices[0]);
    check_report(
        &dsn,
        "Delayed Mail (still being retried)",
        &[
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers",
        ],
        &notices[0],
    );
    assert_eq!(
        get(&dsn["per_message"], "Original-Envelope-Id"),
        Some("late"),
        "{raw}"
    );
    let rcpts = dsn["recipients"].as_array().cloned().unwrap_or_default();
    let finals: Vec<&str> = rcpts
        .iter()
        .filter_map(|r| get(r, "Final-Recipient"))
        .collect();
    assert_eq!(
        finals,
        ["rfc822; d@late.test", "rfc822; x@late.test"],
        "{raw}"
    );
    for r in &rcpts {
        assert_eq!(get(r, "Action"), Some("delayed"), "{raw}");
    }
    assert_eq!(
        get(&rcpts[0], "Original-Recipient"),
        Some("rfc822;D+x@late.test"),
        "{raw}"
    );
    assert_eq!(get(&rcpts[1], "Original-Recipient"), None, "{raw}");
}
