//! End to end: the bounces (issue 3).
//!
//! * The bounce is an RFC 3464 `multipart/report` that a real MIME parser
//!   (mail-parser) takes apart; a delay warning is sent once.
//! * Bounces go into a local sender's Maildir, or are queued with the null
//!   sender for a remote one (and delivered); a bounce is never bounced.
//! * Double bounces: a bounce that can never be written, or a null-sender
//!   message refused for a recipient, leaves the message in `.failed`.
//!
//! Per-recipient outcomes, queue-lifetime expiry and quarantine are in
//! `durability.rs`; restarts, crashes, two daemons and disk trouble are in
//! `crash.rs`.

mod common;

use common::{
    assert_outcome, check_described as check, local_bounces, local_config, message, on_the_wire,
    parse_dsn, refusing, without_params, zones_for, LOCAL_DOMAIN, LOCAL_SENDER,
};
use mail_parser::{DateTime, MessageParser};
use postman_integration::hostile::{unstuff, Script};
use postman_integration::queue::{
    envelope_fields, field, field_secs, make_due, message_part, queue_file, unix_now,
};
use postman_integration::{
    postman, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};

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
        Some("bob@far.test"),
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
