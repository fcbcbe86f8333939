//! End to end: no mail lost (issue 3), the outcomes and the bounces.
//!
//! * Per-recipient outcomes of one transaction (250/450/550): each
//!   recipient is delivered exactly once, deferred with its retry state in
//!   the rewritten file, or bounced.
//! * The bounce is an RFC 3464 `multipart/report` that a real MIME parser
//!   (mail-parser) takes apart; a delay warning is sent once.
//! * A message past `delivery.max_queue_lifetime` (counted from
//!   `X-Postman-Date`) bounces as expired (4.4.7), whether its server
//!   defers it or cannot be reached.
//! * Bounces go into a local sender's Maildir, or are queued with the null
//!   sender for a remote one (and delivered); a bounce is never bounced.
//! * A file whose retry state cannot be read is quarantined.
//!
//! Restarts, crashes, two daemons and disk trouble are in `crash.rs`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    assert_outcome, local_config, message, on_the_wire, zones_for, LOCAL_DOMAIN, LOCAL_SENDER,
    STOP_WITHIN,
};
use mail_parser::{DateTime, MessageParser, MimeHeaders, PartType};
use postman_integration::hostile::{unstuff, Script};
use postman_integration::postman::deliveries;
use postman_integration::queue::{
    envelope_fields, field, field_secs, make_due, message_part, queue_file, set_envelope_field,
    unix_now,
};
use postman_integration::{
    postman, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};
use serde_json::Value;

/// A MAIL or RCPT command up to its path's `>`, without the ESMTP
/// parameters after it (`SIZE=…`, `NOTIFY=…`).
fn without_params(command: &str) -> &str {
    &command[..command.find('>').map_or(command.len(), |i| i + 1)]
}

/// A server that refuses every recipient with `reply` and, as real servers
/// do, the DATA that follows (RFC 2920 §3.1), so no empty body is sent.
fn refusing(reply: &str) -> Script {
    Script::polite()
        .answer("RCPT", reply)
        .answer("DATA", "554 5.5.1 no valid recipients")
}

/// Panics with the queue and the log unless `ok`.
fn check(ok: bool, what: &str, queue: &TestQueue, out: &RunOutput) {
    assert!(
        ok,
        "{what}\n--- queue ---\n{}\n--- stderr ---\n{}",
        queue.describe(),
        out.stderr
    );
}

/// The raw delivery records (with the `dsn` field the parsed ones lack).
fn delivery_records(out: &RunOutput) -> Vec<Value> {
    out.records()
        .into_iter()
        .filter(|r| r["msg"] == "delivery")
        .collect()
}

/// A bounce as mail-parser reads it.
struct Dsn {
    /// Top-level header fields, raw values trimmed.
    headers: Vec<(String, String)>,
    /// The human-readable part.
    text: String,
    /// The per-message fields of the `message/delivery-status` part.
    per_message: Vec<(String, String)>,
    /// The per-recipient field groups.
    recipients: Vec<Vec<(String, String)>>,
    /// The `text/rfc822-headers` part.
    original_headers: String,
}

impl Dsn {
    /// The per-recipient group for `address`.
    fn recipient(&self, address: &str) -> &[(String, String)] {
        let want = format!("rfc822; {address}");
        self.recipients
            .iter()
            .find(|g| field(g, "Final-Recipient") == Some(want.as_str()))
            .unwrap_or_else(|| panic!("no Final-Recipient {want:?} in {:#?}", self.recipients))
    }
}

/// Header fields of a block as mail-parser splits them: (name, raw value
/// trimmed, folding removed).
fn parsed_fields(block: &[u8]) -> Vec<(String, String)> {
    let mut with_end = block.to_vec();
    with_end.extend_from_slice(b"\r\n\r\n");
    let parsed = MessageParser::default()
        .parse_headers(&with_end[..])
        .unwrap_or_else(|| {
            panic!(
                "mail-parser finds no fields in {:?}",
                String::from_utf8_lossy(block)
            )
        });
    parsed
        .headers_raw()
        .map(|(name, value)| {
            let value = value.replace("\r\n", "").replace('\n', "");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// Parses a bounce with mail-parser and checks its MIME structure: a
/// `multipart/report; report-type=delivery-status` of exactly three parts,
/// `text/plain`, `message/delivery-status` and `text/rfc822-headers`.
fn parse_dsn(bytes: &[u8]) -> Dsn {
    let shown = String::from_utf8_lossy(bytes);
    let msg = MessageParser::default()
        .parse(bytes)
        .unwrap_or_else(|| panic!("mail-parser cannot parse the bounce:\n{shown}"));
    let ct = msg
        .content_type()
        .unwrap_or_else(|| panic!("the bounce has no Content-Type:\n{shown}"));
    assert_eq!(
        (ct.ctype(), ct.subtype()),
        ("multipart", Some("report")),
        "bounce Content-Type:\n{shown}"
    );
    assert_eq!(
        ct.attribute("report-type"),
        Some("delivery-status"),
        "report-type parameter:\n{shown}"
    );
    let PartType::Multipart(children) = &msg.root_part().body else {
        panic!("the bounce's root is not multipart:\n{shown}");
    };
    let parts: Vec<_> = children.iter().map(|&id| &msg.parts[id as usize]).collect();
    let types: Vec<String> = parts
        .iter()
        .map(|p| {
            p.content_type().map_or_else(
                || "(none)".to_owned(),
                |c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ],
        "the three parts of the report, in order:\n{shown}"
    );
    let status = parts[1].contents().to_vec();
    let status_text = String::from_utf8_lossy(&status).replace("\r\n", "\n");
    let mut groups = status_text
        .split("\n\n")
        .filter(|g| !g.trim().is_empty())
        .map(|g| parsed_fields(g.as_bytes()));
    let per_message = groups
        .next()
        .unwrap_or_else(|| panic!("empty delivery-status part:\n{shown}"));
    Dsn {
        headers: msg
            .headers_raw()
            .map(|(n, v)| (n.to_owned(), v.replace("\r\n", "").trim().to_owned()))
            .collect(),
        text: parts[0].text_contents().unwrap_or_default().to_owned(),
        per_message,
        recipients: groups.collect(),
        original_headers: parts[2].text_contents().unwrap_or_default().to_owned(),
    }
}

/// The bounces in the local Maildir of `user`, or a panic with the queue.
fn local_bounces(queue: &TestQueue, user: &str) -> Vec<Vec<u8>> {
    queue
        .maildir_messages(user)
        .into_iter()
        .map(|b| b.bytes)
        .collect()
}

#[test]
fn mixed_250_450_550_recipients_are_sent_once_deferred_and_bounced() {
    let net = TestNet::new();
    // The first connection accepts ok@, defers later@ and refuses gone@;
    // later connections accept everything.
    let server = HostileServer::start(
        net.addr(1),
        vec![
            Script::polite()
                .answer(
                    "RCPT TO:<later@mixed.test>",
                    "450 4.2.1 mailbox busy, try later",
                )
                .answer("RCPT TO:<gone@mixed.test>", "550 5.1.1 no such user here"),
            Script::polite(),
        ],
    );
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "mixed.test"));
    let queue = TestQueue::new();
    let m = message("mixed", "one message, three fates\n");
    let date = unix_now() - 60;
    let path = queue.add_raw(
        "mixed.test",
        "m1",
        &queue_file(
            LOCAL_SENDER,
            &["ok@mixed.test", "later@mixed.test", "gone@mixed.test"],
            date,
            &m,
            "\n",
        ),
    );
    let cfg = local_config(&queue, &net, &dns).write();

    let before = SystemTime::now();
    let out = postman!().run_once(&cfg);
    out.assert_success();
    let d = out.deliveries();
    assert_outcome(&out, &d, "ok@mixed.test", "sent", Some(250));
    assert_outcome(&out, &d, "later@mixed.test", "deferred", Some(450));
    assert_outcome(&out, &d, "gone@mixed.test", "bounced", Some(550));
    check(
        d.len() == 3,
        &format!("one record per recipient: {d:#?}"),
        &queue,
        &out,
    );
    assert_eq!(server.bodies().len(), 1, "one DATA for ok@");

    // The file is rewritten in place: only later@ is left, with its retry
    // state; the sender, the arrival date and the message are unchanged.
    let state = queue.state();
    check(
        state.queued_in("mixed.test") == ["m1"]
            && state.active.is_empty()
            && state.tmp.is_empty()
            && state.failed.is_empty(),
        "m1 should stay queued, alone, nothing claimed or left in tmp/",
        &queue,
        &out,
    );
    let fields = envelope_fields(&path);
    let shown = format!("{fields:#?}");
    let to: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("X-Postman-To"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        to,
        ["<later@mixed.test>"],
        "only later@ is pending: {shown}"
    );
    assert_eq!(
        field(&fields, "X-Postman-From"),
        Some("<alice@local.test>"),
        "{shown}"
    );
    assert_eq!(
        field_secs(&fields, "X-Postman-Date"),
        date,
        "arrival kept: {shown}"
    );
    assert_eq!(field(&fields, "X-Postman-Attempts"), Some("1"), "{shown}");
    let started = before.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let first = field_secs(&fields, "X-Postman-First-Attempt");
    let last = field_secs(&fields, "X-Postman-Last-Attempt");
    let next = field_secs(&fields, "X-Postman-Next-Attempt");
    assert!(
        first >= started && first == last && next > unix_now(),
        "attempt times (started {started}): {shown}"
    );
    let error = field(&fields, "X-Postman-Last-Error").unwrap_or_default();
    assert!(
        error.contains("450 4.2.1 mailbox busy"),
        "Last-Error should quote the 450: {shown}"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        String::from_utf8_lossy(message_part(&bytes)),
        String::from_utf8_lossy(&m),
        "the message after the envelope block is unchanged"
    );

    // gone@ (only) got its bounce, in the local sender's Maildir.
    let bounces = local_bounces(&queue, "alice");
    assert_eq!(bounces.len(), 1, "one bounce:\n{}", queue.describe());
    let dsn = parse_dsn(&bounces[0]);
    let finals: Vec<&str> = dsn
        .recipients
        .iter()
        .filter_map(|g| field(g, "Final-Recipient"))
        .collect();
    assert_eq!(finals, ["rfc822; gone@mixed.test"], "{:#?}", dsn.recipients);

    // Second run, against a server that accepts everything: only later@ is
    // sent; ok@ is never sent again, gone@ never tried again.
    make_due(&path);
    let out2 = postman!().run_once(&cfg);
    out2.assert_success();
    let d2 = out2.deliveries();
    let got: Vec<(&str, &str)> = d2
        .iter()
        .map(|d| (d.to.as_str(), d.status.as_str()))
        .collect();
    check(
        got == [("later@mixed.test", "sent")],
        &format!("second run should send later@ only: {got:?}"),
        &queue,
        &out2,
    );
    let conns = server.connections();
    assert_eq!(conns.len(), 2, "one connection per run");
    let second: Vec<String> = conns[1]
        .rcpts()
        .iter()
        .map(|c| without_params(c).to_owned())
        .collect();
    assert_eq!(
        second,
        ["RCPT TO:<later@mixed.test>"],
        "the second transaction names only the deferred recipient"
    );
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2, "one DATA per run");
    assert_eq!(
        String::from_utf8_lossy(&unstuff(&bodies[1])),
        String::from_utf8_lossy(&on_the_wire(&m)),
        "the retry sends the same message, byte for byte"
    );
    let ok_rcpts = server
        .commands()
        .iter()
        .filter(|c| c.contains("<ok@mixed.test>"))
        .count();
    assert_eq!(ok_rcpts, 1, "ok@ was sent once: {:#?}", server.commands());
    check(
        queue.state().is_empty(),
        "the queue should be empty",
        &queue,
        &out2,
    );
    assert_eq!(
        local_bounces(&queue, "alice").len(),
        1,
        "no second bounce:\n{}",
        queue.describe()
    );
}

#[test]
fn bounce_is_a_multipart_report_that_a_mime_parser_reads() {
    let net = TestNet::new();
    let _server = HostileServer::start(
        net.addr(1),
        vec![Script::polite()
            .answer(
                "RCPT TO:<nobody@dsn.test>",
                "550 5.1.1 <nobody@dsn.test>: no such user",
            )
            .answer(
                "RCPT TO:<blocked@dsn.test>",
                "553-5.7.1 relaying refused\n553 5.7.1 see the policy",
            )],
    );
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "dsn.test"));
    let queue = TestQueue::new();
    let original = "From: Alice <alice@local.test>\nTo: several@dsn.test\nSubject: quarterly figures\nMessage-ID: <figures@local.test>\nDate: Thu, 01 Jan 2026 10:00:00 +0000\n";
    let m = format!("{original}\nthe body is not returned\n");
    let arrival = unix_now() - 3600;
    queue.add_raw(
        "dsn.test",
        "m1",
        &queue_file(
            LOCAL_SENDER,
            &["nobody@dsn.test", "fine@dsn.test", "blocked@dsn.test"],
            arrival,
            m.as_bytes(),
            "\n",
        ),
    );
    let out = postman!().run_once(&local_config(&queue, &net, &dns).write());
    out.assert_success();
    let bounces = local_bounces(&queue, "alice");
    check(bounces.len() == 1, "exactly one bounce", &queue, &out);
    let raw = String::from_utf8_lossy(&bounces[0]).into_owned();
    let dsn = parse_dsn(&bounces[0]);

    // Top-level fields (RFC 3464 §2, RFC 3834 §5).
    let top = |name| field(&dsn.headers, name).unwrap_or_else(|| panic!("no {name}:\n{raw}"));
    assert_eq!(
        top("From"),
        "Mail Delivery System <MAILER-DAEMON@postman.test>",
        "{raw}"
    );
    assert_eq!(top("To"), "<alice@local.test>", "{raw}");
    assert_eq!(
        top("Subject"),
        "Undelivered Mail Returned to Sender",
        "{raw}"
    );
    assert_eq!(top("Auto-Submitted"), "auto-replied", "{raw}");
    assert_eq!(top("MIME-Version"), "1.0", "{raw}");
    assert!(top("Message-ID").ends_with("@postman.test>"), "{raw}");
    assert!(
        DateTime::parse_rfc822(top("Date")).is_some(),
        "Date:\n{raw}"
    );

    // The human-readable part names each failed recipient with the reply
    // (its lines are wrapped: compare with the white space collapsed).
    let text = dsn.text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "<nobody@dsn.test>",
        "550 5.1.1 <nobody@dsn.test>: no such user",
        "<blocked@dsn.test>",
        "relaying refused",
    ] {
        assert!(
            text.contains(want),
            "text part should name {want:?}:\n{}",
            dsn.text
        );
    }
    assert!(!dsn.text.contains("fine@dsn.test"), "{}", dsn.text);

    // message/delivery-status (RFC 3464 §2.2, §2.3).
    let pm = &dsn.per_message;
    assert_eq!(
        field(pm, "Reporting-MTA"),
        Some("dns; postman.test"),
        "{pm:#?}"
    );
    let arrival_date = field(pm, "Arrival-Date").unwrap_or_else(|| panic!("{pm:#?}"));
    let parsed = DateTime::parse_rfc822(arrival_date)
        .unwrap_or_else(|| panic!("Arrival-Date {arrival_date:?} is not an RFC 5322 date"));
    assert_eq!(
        parsed.to_timestamp(),
        arrival as i64,
        "Arrival-Date {arrival_date:?} is the X-Postman-Date"
    );
    assert_eq!(
        dsn.recipients.len(),
        2,
        "one group per failed recipient: {:#?}",
        dsn.recipients
    );
    for (address, status, reply) in [
        (
            "nobody@dsn.test",
            "5.1.1",
            "smtp; 550 5.1.1 <nobody@dsn.test>: no such user",
        ),
        (
            "blocked@dsn.test",
            "5.7.1",
            "smtp; 553 5.7.1 relaying refused see the policy",
        ),
    ] {
        let g = dsn.recipient(address);
        assert_eq!(field(g, "Action"), Some("failed"), "{address}: {g:#?}");
        assert_eq!(field(g, "Status"), Some(status), "{address}: {g:#?}");
        assert_eq!(
            field(g, "Remote-MTA"),
            Some("dns; mx.dsn.test"),
            "{address}: {g:#?}"
        );
        assert_eq!(
            field(g, "Diagnostic-Code"),
            Some(reply),
            "{address}: {g:#?}"
        );
    }

    // text/rfc822-headers: the original header section, not the body.
    let returned = dsn.original_headers.replace("\r\n", "\n");
    assert_eq!(
        returned.trim_end(),
        original.trim_end(),
        "returned headers:\n{raw}"
    );
    let headers = MessageParser::default()
        .parse_headers(dsn.original_headers.as_bytes())
        .expect("the returned headers parse");
    assert_eq!(headers.message_id(), Some("figures@local.test"));
    assert_eq!(headers.subject(), Some("quarterly figures"));
    assert!(!raw.contains("the body is not returned"), "{raw}");
}

#[test]
fn a_message_past_its_queue_lifetime_bounces_as_expired_4_4_7() {
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), vec![refusing("451 4.3.0 try again later")]);
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "old.test"));
    let queue = TestQueue::new();
    // Arrived an hour ago, with a lifetime of ten minutes; the second one
    // is dated in RFC 5322 form, which the envelope allows too.
    let rfc5322 = queue_file(
        LOCAL_SENDER,
        &["v@old.test"],
        0,
        &message("old-rfc5322", "too late as well\n"),
        "\n",
    );
    let rfc5322 = String::from_utf8(rfc5322).unwrap().replace(
        "X-Postman-Date: 0\n",
        "X-Postman-Date: Thu, 01 Jan 2026 00:00:00 +0000\n",
    );
    queue.add_raw("old.test", "m2", rfc5322.as_bytes());
    queue.add_raw(
        "old.test",
        "m1",
        &queue_file(
            LOCAL_SENDER,
            &["u@old.test"],
            unix_now() - 3600,
            &message("old", "too late\n"),
            "\n",
        ),
    );
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.max_queue_lifetime = Some(600);
    let out = postman!().run_once(&cfg.write());
    out.assert_success();

    assert_eq!(server.count_commands("RCPT"), 2, "one last attempt each");
    let records = delivery_records(&out);
    let mut got: Vec<(String, String, String)> = records
        .iter()
        .map(|r| {
            (
                r["to"].to_string(),
                r["status"].to_string(),
                r["dsn"].to_string(),
            )
        })
        .collect();
    got.sort();
    let want = [
        (r#""u@old.test""#, r#""bounced""#, r#""4.4.7""#),
        (r#""v@old.test""#, r#""bounced""#, r#""4.4.7""#),
    ]
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
    check(
        got == want,
        &format!("one bounced record with dsn 4.4.7 each: {got:#?}"),
        &queue,
        &out,
    );
    check(
        queue.state().is_empty(),
        "the messages leave the queue",
        &queue,
        &out,
    );
    let bounces = local_bounces(&queue, "alice");
    check(
        bounces.len() == 2,
        "one bounce each to the sender",
        &queue,
        &out,
    );
    let dsns: Vec<Dsn> = bounces.iter().map(|b| parse_dsn(b)).collect();
    let dsn = dsns
        .iter()
        .find(|d| {
            d.recipients
                .iter()
                .any(|g| field(g, "Final-Recipient") == Some("rfc822; u@old.test"))
        })
        .unwrap_or_else(|| panic!("no bounce for u@old.test:\n{}", queue.describe()));
    let g = dsn.recipient("u@old.test");
    assert_eq!(field(g, "Action"), Some("failed"), "{g:#?}");
    assert_eq!(field(g, "Status"), Some("4.4.7"), "{g:#?}");
    let diagnostic = field(g, "Diagnostic-Code").unwrap_or_default();
    assert!(
        diagnostic.contains("451 4.3.0 try again later"),
        "the diagnostic should carry the last error: {g:#?}"
    );
}

#[test]
fn a_deferred_message_expires_on_its_first_attempt_after_the_lifetime() {
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), vec![refusing("450 4.2.0 still busy")]);
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "slowly.test"));
    let queue = TestQueue::new();
    let path = queue.add(
        "slowly.test",
        "m1",
        LOCAL_SENDER,
        &["u@slowly.test"],
        &message("slowly", "deferred, then expired\n"),
    );
    let arrival = field_secs(&envelope_fields(&path), "X-Postman-Date");
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.max_queue_lifetime = Some(3);
    cfg.min_backoff = 1;
    let cfg = cfg.write();

    let out = postman!().run_once(&cfg);
    out.assert_success();
    assert_outcome(
        &out,
        &out.deliveries(),
        "u@slowly.test",
        "deferred",
        Some(450),
    );
    let fields = envelope_fields(&path);
    assert_eq!(
        field_secs(&fields, "X-Postman-Date"),
        arrival,
        "the rewrite keeps the arrival: {fields:#?}"
    );
    assert!(
        field_secs(&fields, "X-Postman-Next-Attempt") <= arrival + 3,
        "the next attempt is no later than the expiry: {fields:#?}"
    );

    // Wait out the lifetime (counted from X-Postman-Date), then run again.
    while unix_now() < arrival + 4 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = postman!().run_once(&cfg);
    out.assert_success();
    assert_eq!(server.count_commands("RCPT"), 2, "a second attempt");
    let records = delivery_records(&out);
    check(
        records.len() == 1 && records[0]["status"] == "bounced" && records[0]["dsn"] == "4.4.7",
        &format!("expired on the second attempt: {records:#?}"),
        &queue,
        &out,
    );
    check(
        queue.state().is_empty(),
        "the message leaves the queue",
        &queue,
        &out,
    );
    let bounces = local_bounces(&queue, "alice");
    check(bounces.len() == 1, "one bounce", &queue, &out);
    let dsn = parse_dsn(&bounces[0]);
    assert_eq!(
        field(dsn.recipient("u@slowly.test"), "Status"),
        Some("4.4.7")
    );
}

/// Queues m1 from `sender` to x@remote.test, whose server refuses it with
/// 550 5.1.1, and runs postman once with local.test local; the recipient
/// must be logged as bounced.
fn refused_with_local_domain(sender: &str, tag: &str) -> (TestQueue, RunOutput, HostileServer) {
    let net = TestNet::new();
    let server = HostileServer::start(net.addr(1), vec![refusing("550 5.1.1 unknown user")]);
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "remote.test"));
    let queue = TestQueue::new();
    queue.add(
        "remote.test",
        "m1",
        sender,
        &["x@remote.test"],
        &message(tag, "refused\n"),
    );
    let out = postman!().run_once(&local_config(&queue, &net, &dns).write());
    out.assert_success();
    assert_outcome(
        &out,
        &out.deliveries(),
        "x@remote.test",
        "bounced",
        Some(550),
    );
    (queue, out, server)
}

/// A local sender whose local part is no mailbox name (it starts with a
/// dot) can never get a bounce. Like a failure of the null sender, that is
/// a double bounce: the message goes to `.failed` for the postmaster, with
/// why, and the refused recipient is not sent the message again and again
/// until the queue lifetime ends.
#[test]
fn a_bounce_that_can_never_be_written_sets_the_message_aside() {
    let (queue, out, server) = refused_with_local_domain(".alice@local.test", "no-bounce");
    let state = queue.state();
    let Some(entry) = state.failed_entry("remote.test", "m1") else {
        panic!(
            "m1 should be in .failed\n{state:#?}\n--- stderr ---\n{}",
            out.stderr
        );
    };
    let reason = entry.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("<x@remote.test>") && reason.contains("no bounce could be written"),
        "the reason names the recipient and the bounce: {reason:?}"
    );
    check(
        state.queued_in("remote.test").is_empty(),
        "nothing stays queued to be sent again",
        &queue,
        &out,
    );
    assert!(
        out.records()
            .iter()
            .any(|r| r["msg"]
                == "the bounce can never reach the sender; the message is kept in .failed"),
        "an error record says so:\n{}",
        out.stderr
    );
    assert_eq!(server.count_commands("RCPT"), 1, "one attempt");
}

#[test]
fn bounce_to_a_local_sender_is_written_into_its_maildir() {
    let (queue, out, _server) = refused_with_local_domain(LOCAL_SENDER, "local-bounce");

    let files = queue.all_files();
    check(
        files.len() == 1 && files[0].starts_with("alice/new/") && !files[0].contains(':'),
        &format!("the only file left should be the bounce in alice/new/: {files:#?}"),
        &queue,
        &out,
    );
    let bounce = std::fs::read(queue.root().join(&files[0])).unwrap();
    let dsn = parse_dsn(&bounce);
    assert_eq!(field(&dsn.headers, "To"), Some("<alice@local.test>"));
    assert_eq!(
        field(dsn.recipient("x@remote.test"), "Status"),
        Some("5.1.1")
    );
    assert!(
        !queue.domain_dir(LOCAL_DOMAIN).exists(),
        "nothing is queued for the local domain:\n{}",
        queue.describe()
    );
}

#[test]
fn bounce_to_a_remote_sender_is_queued_with_the_null_sender_and_delivered() {
    let net = TestNet::new();
    let refusing = HostileServer::start(net.addr(1), vec![refusing("550 5.1.1 unknown user")]);
    let senders_mx = HostileServer::polite(net.addr(2));
    let dns = DnsServer::start(zones_for(
        zones_for(Zones::new(), &net, 1, "remote.test"),
        &net,
        2,
        "far.test",
    ));
    let queue = TestQueue::new();
    queue.add(
        "remote.test",
        "m1",
        "bob@far.test",
        &["x@remote.test"],
        &message("remote-bounce", "refused\n"),
    );
    let cfg = local_config(&queue, &net, &dns).write();
    let out = postman!().run_once(&cfg);
    out.assert_success();
    assert_outcome(
        &out,
        &out.deliveries(),
        "x@remote.test",
        "bounced",
        Some(550),
    );
    assert_eq!(refusing.connection_count(), 1);

    let bounces = queue.bounces_to("bob@far.test");
    check(
        bounces.len() == 1,
        "one bounce queued for far.test from <>",
        &queue,
        &out,
    );
    let fields = envelope_fields(&bounces[0].path);
    assert_eq!(field(&fields, "X-Postman-From"), Some("<>"), "{fields:#?}");
    assert_eq!(
        field(&fields, "X-Postman-To"),
        Some("<bob@far.test>"),
        "{fields:#?}"
    );
    assert!(
        field_secs(&fields, "X-Postman-Date") >= unix_now() - 60,
        "{fields:#?}"
    );
    let dsn = parse_dsn(message_part(&bounces[0].bytes));
    assert_eq!(
        field(dsn.recipient("x@remote.test"), "Status"),
        Some("5.1.1")
    );
    assert!(
        queue.all_files().iter().all(|f| !f.starts_with("bob/")),
        "no local mailbox for a remote sender:\n{}",
        queue.describe()
    );

    // The next run delivers the bounce with MAIL FROM:<>.
    let out = postman!().run_once(&cfg);
    out.assert_success();
    assert_outcome(&out, &out.deliveries(), "bob@far.test", "sent", Some(250));
    let commands = senders_mx.commands();
    assert!(
        commands.iter().any(|c| without_params(c) == "MAIL FROM:<>")
            && commands
                .iter()
                .any(|c| without_params(c) == "RCPT TO:<bob@far.test>"),
        "the bounce goes out with the null sender: {commands:#?}"
    );
    let body = unstuff(&senders_mx.bodies()[0]);
    assert_eq!(
        body,
        on_the_wire(message_part(&bounces[0].bytes)),
        "the bounce is sent as queued"
    );
    check(queue.state().is_empty(), "nothing left", &queue, &out);
}

#[test]
fn a_bounce_is_never_bounced() {
    let net = TestNet::new();
    let _server = HostileServer::start(net.addr(1), vec![refusing("550 5.1.1 unknown user")]);
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "nb.test"));
    let queue = TestQueue::new();
    let original = queue_file(
        "",
        &["x@nb.test"],
        unix_now(),
        &message("bounce-of-bounce", "a bounce that cannot be delivered\n"),
        "\n",
    );
    queue.add_raw("nb.test", "m1", &original);
    let out = postman!().run_once(&local_config(&queue, &net, &dns).write());
    out.assert_success();
    assert_outcome(&out, &out.deliveries(), "x@nb.test", "bounced", Some(550));

    let files = queue.all_files();
    check(
        files
            == [
                ".OTHER_SERVERS/nb.test/.failed/m1",
                ".OTHER_SERVERS/nb.test/.failed/m1.reason",
            ],
        &format!("only the failed copy and its reason, no DSN anywhere: {files:#?}"),
        &queue,
        &out,
    );
    let state = queue.state();
    let failed = state.failed_entry("nb.test", "m1").expect("failed entry");
    assert_eq!(
        failed.bytes, original,
        "the failed copy is the original file"
    );
    let reason = failed.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("x@nb.test") && reason.contains("550"),
        "the reason names the recipient and the reply: {reason:?}"
    );
    assert!(
        out.stderr.contains("no bounce is sent"),
        "the log says why no bounce was sent:\n{}",
        out.stderr
    );
}

#[test]
fn a_delay_warning_is_sent_once_while_the_message_is_retried() {
    let net = TestNet::new();
    let server = HostileServer::start(
        net.addr(1),
        vec![refusing("451 4.4.5 insufficient system storage")],
    );
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "delay.test"));
    let queue = TestQueue::new();
    // Queued two minutes ago; warn after one, give up after an hour.
    let arrival = unix_now() - 120;
    let path = queue.add_raw(
        "delay.test",
        "m1",
        &queue_file(
            LOCAL_SENDER,
            &["u@delay.test"],
            arrival,
            &message("delay", "slow\n"),
            "\n",
        ),
    );
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.max_queue_lifetime = Some(3600);
    cfg.delay_warning = Some(60);
    let cfg = cfg.write();

    let out = postman!().run_once(&cfg);
    out.assert_success();
    assert_outcome(
        &out,
        &out.deliveries(),
        "u@delay.test",
        "deferred",
        Some(451),
    );
    let warnings = local_bounces(&queue, "alice");
    check(warnings.len() == 1, "one delay warning", &queue, &out);
    let dsn = parse_dsn(&warnings[0]);
    assert_eq!(
        field(&dsn.headers, "Subject"),
        Some("Delayed Mail (still being retried)")
    );
    let g = dsn.recipient("u@delay.test");
    assert_eq!(field(g, "Action"), Some("delayed"), "{g:#?}");
    assert!(
        field(g, "Status").is_some_and(|s| s.starts_with("4.")),
        "{g:#?}"
    );
    let until = field(g, "Will-Retry-Until").unwrap_or_else(|| panic!("{g:#?}"));
    assert_eq!(
        DateTime::parse_rfc822(until).map(|d| d.to_timestamp()),
        Some(arrival as i64 + 3600),
        "Will-Retry-Until is the expiry: {g:#?}"
    );
    let fields = envelope_fields(&path);
    assert!(
        field(&fields, "X-Postman-Delay-Warned").is_some(),
        "the warning is recorded on disk: {fields:#?}"
    );

    // The next attempt fails too, and warns no more.
    make_due(&path);
    let out = postman!().run_once(&cfg);
    out.assert_success();
    assert_outcome(
        &out,
        &out.deliveries(),
        "u@delay.test",
        "deferred",
        Some(451),
    );
    assert_eq!(server.connection_count(), 2);
    check(
        local_bounces(&queue, "alice").len() == 1,
        "still one warning after the second attempt",
        &queue,
        &out,
    );
    check(
        queue.state().queued_in("delay.test") == ["m1"],
        "still queued",
        &queue,
        &out,
    );
}

#[test]
fn a_file_with_unreadable_retry_state_is_quarantined_and_the_rest_delivered() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "state.test"));
    let queue = TestQueue::new();
    let bad = queue.add(
        "state.test",
        "bad",
        LOCAL_SENDER,
        &["u@state.test"],
        &message("bad-state", "x\n"),
    );
    set_envelope_field(&bad, "X-Postman-Attempts", "many");
    let bad_bytes = std::fs::read(&bad).unwrap();
    queue.add(
        "state.test",
        "good",
        LOCAL_SENDER,
        &["v@state.test"],
        &message("good-state", "y\n"),
    );
    let out = postman!().run_once(&local_config(&queue, &net, &dns).write());
    out.assert_success();
    assert_outcome(&out, &out.deliveries(), "v@state.test", "sent", Some(250));
    check(
        out.deliveries().len() == 1,
        "only the good file is attempted",
        &queue,
        &out,
    );
    let state = queue.state();
    let entry = state.quarantined_entry("state.test", "bad");
    check(
        entry.is_some_and(|e| {
            e.bytes == bad_bytes
                && e.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("X-Postman-Attempts"))
        }),
        "the bad file is quarantined unchanged, its reason naming the field",
        &queue,
        &out,
    );
    assert_eq!(server.bodies().len(), 1);
}

#[test]
fn a_message_to_an_unreachable_host_expires_after_its_lifetime() {
    let net = TestNet::new();
    // mx.dead.test's address has no listener: every connection is refused.
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "dead.test"));
    let queue = TestQueue::new();
    queue.add_raw(
        "dead.test",
        "m1",
        &queue_file(
            LOCAL_SENDER,
            &["u@dead.test"],
            unix_now() - 3600,
            &message("dead", "nobody listens\n"),
            "\n",
        ),
    );
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.max_queue_lifetime = Some(600);
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let records = delivery_records(&out);
    check(
        records
            .iter()
            .any(|r| r["status"] == "bounced" && r["dsn"] == "4.4.7"),
        &format!(
            "an hour-old message with a 10-minute lifetime bounces as expired \
             after its connection fails: {records:#?}"
        ),
        &queue,
        &out,
    );
    check(
        queue.state().is_empty(),
        "the message leaves the queue",
        &queue,
        &out,
    );
    check(
        local_bounces(&queue, "alice").len() == 1,
        "one bounce to the sender",
        &queue,
        &out,
    );
}

#[test]
fn daemon_bounces_an_expired_message_to_an_unreachable_host() {
    let net = TestNet::new();
    // mx.dead.test's address has no listener: every connection is refused.
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "dead.test"));
    let queue = TestQueue::new();
    queue.add_raw(
        "dead.test",
        "m1",
        &queue_file(
            LOCAL_SENDER,
            &["u@dead.test"],
            unix_now() - 3600,
            &message("dead-daemon", "nobody listens\n"),
            "\n",
        ),
    );
    let mut cfg = local_config(&queue, &net, &dns);
    cfg.max_queue_lifetime = Some(600);
    cfg.min_backoff = 1;
    let mut daemon = postman!().spawn_daemon(&cfg.write());
    let bounced = daemon.wait_for(Duration::from_secs(6), |records| {
        deliveries(records).iter().any(|d| d.status == "bounced")
    });
    daemon.terminate(STOP_WITHIN);
    let seen: Vec<(String, String)> = deliveries(&daemon.records())
        .into_iter()
        .map(|d| (d.status, d.reply))
        .collect();
    assert!(
        bounced && queue.state().is_empty(),
        "a message past its lifetime must bounce, not be retried for ever: {seen:#?}\n{}",
        queue.describe()
    );
}

#[test]
fn a_null_sender_message_refused_for_one_of_its_recipients_keeps_a_failed_copy() {
    let net = TestNet::new();
    let _server = HostileServer::start(
        net.addr(1),
        vec![Script::polite()
            .answer("RCPT TO:<later@", "450 4.2.1 mailbox busy")
            .answer("RCPT TO:<gone@", "550 5.1.1 no such user")],
    );
    let dns = DnsServer::start(zones_for(Zones::new(), &net, 1, "nm.test"));
    let queue = TestQueue::new();
    queue.add(
        "nm.test",
        "m1",
        "",
        &["ok@nm.test", "later@nm.test", "gone@nm.test"],
        &message("null-mixed", "a bounce to three\n"),
    );
    let out = postman!().run_once(&local_config(&queue, &net, &dns).write());
    out.assert_success();
    let d = out.deliveries();
    assert_outcome(&out, &d, "gone@nm.test", "bounced", Some(550));
    assert_outcome(&out, &d, "later@nm.test", "deferred", Some(450));
    // The whole-message case keeps the file in .failed (see
    // a_bounce_is_never_bounced) and the log says so here too: gone@ must
    // not be left only in the log while later@ is still pending.
    let state = queue.state();
    let kept = state.failed.values().any(|f| {
        f.reason
            .as_deref()
            .is_some_and(|r| r.contains("gone@nm.test"))
    });
    check(
        kept,
        "a copy naming gone@ should be kept in nm.test/.failed, as the log claims",
        &queue,
        &out,
    );
}
