//! End to end: no mail lost (issue 3), the outcomes and the end of retrying.
//!
//! * Per-recipient outcomes of one transaction (250/450/550): each
//!   recipient is delivered exactly once, deferred with its retry state in
//!   the rewritten file, or bounced.
//! * A message past `delivery.max_queue_lifetime` (counted from
//!   `X-Postman-Date`) bounces as expired (4.4.7), whether its server
//!   defers it or cannot be reached.
//! * A file whose retry state cannot be read is quarantined.
//!
//! The bounces themselves (their format, where they go, delay warnings,
//! never bouncing a bounce) are in `bounces.rs`; restarts, crashes, two
//! daemons and disk trouble are in `crash.rs`.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    assert_outcome, check_described as check, local_bounces, local_config, message, on_the_wire,
    parse_dsn, refusing, without_params, zones_for, Dsn, LOCAL_SENDER, STOP_WITHIN,
};
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

/// The raw delivery records (with the `dsn` field the parsed ones lack).
fn delivery_records(out: &RunOutput) -> Vec<Value> {
    out.records()
        .into_iter()
        .filter(|r| r["msg"] == "delivery")
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
    assert_eq!(to, ["later@mixed.test"], "only later@ is pending: {shown}");
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
