//! End to end: a hostile SMTP server refuses, stalls, drops and talks
//! nonsense at every step; postman defers what is temporary (4xx, timeouts,
//! lost connections, protocol errors: the file stays queued), fails what is
//! permanent (5xx: the sender gets a bounce and the file leaves the queue) and
//! quarantines what it cannot parse, without losing mail.

mod common;

use std::time::Duration;

use common::{add_numbered, assert_outcome, check, message, records_for};
use postman_integration::hostile::Script;
use postman_integration::{postman, RunOutput};

const DOMAIN: &str = common::HOSTILE_DOMAIN;

type Case = common::HostileCase;

impl Case {
    fn run(&self) -> RunOutput {
        let out = postman!().run_once(&self.config.write());
        out.assert_success();
        out
    }

    /// Queues `n` messages `m0`… with one recipient each (`u0@`…), their
    /// Message-IDs tagged with `tag`.
    fn add_numbered(&self, n: usize, tag: &str) {
        add_numbered(&self.queue, DOMAIN, n, tag);
    }

    /// Asserts the queue is empty, the server received each of the `n`
    /// messages exactly once, and every delivery record says sent.
    fn assert_each_sent_once(&self, n: usize, out: &RunOutput, name: &str) {
        check(
            self.queue.state().is_empty(),
            &format!("{name}: every message should be delivered in one run"),
            &self.queue,
            out,
        );
        let mut ids = self.server.message_ids();
        ids.sort();
        ids.dedup();
        assert_eq!(
            (ids.len(), self.server.body_count()),
            (n, n),
            "{name}: each message exactly once"
        );
        let deliveries = out.deliveries();
        assert!(
            deliveries.len() == n && deliveries.iter().all(|d| d.status == "sent"),
            "{name}: one record per message, nothing deferred: {deliveries:#?}"
        );
    }

    /// Asserts the message stayed queued (and is not set aside).
    fn assert_queued(&self, name: &str, out: &RunOutput) {
        let s = self.queue.state();
        check(
            s.is_queued(DOMAIN, name),
            &format!("{name} should stay queued"),
            &self.queue,
            out,
        );
        check(
            s.failed.is_empty(),
            "nothing should fail permanently",
            &self.queue,
            out,
        );
    }

    /// Asserts the message left the queue and its sender got one bounce
    /// (RFC 3464) that quotes the `code` reply.
    fn assert_failed(&self, name: &str, code: u16, out: &RunOutput) {
        let s = self.queue.state();
        check(
            !s.is_queued(DOMAIN, name),
            &format!("{name} must leave the queue"),
            &self.queue,
            out,
        );
        let bounces = self.queue.bounces_to("a@src.test");
        check(
            bounces.len() == 1,
            &format!("one bounce to a@src.test expected, found {}", bounces.len()),
            &self.queue,
            out,
        );
        let text = bounces[0].text();
        assert!(
            text.contains("report-type=delivery-status"),
            "the bounce is a delivery status notification: {text}"
        );
        assert!(
            text.contains(&format!("smtp; {code}")),
            "the bounce should quote the {code} reply as its Diagnostic-Code: {text}"
        );
    }
}

/// Greeting and EHLO as a polite server, without PIPELINING so that each
/// command waits for its reply and the script sees one at a time.
fn hello() -> Script {
    Script::new().pipelining(false).hello()
}

/// Runs a one-recipient message against `script` and checks its fate;
/// `bodies` is how many DATA bodies the server may have read (1 when the
/// refusal comes after the dot).
fn refusal(script: Script, code: u16, bodies: usize) {
    let case = Case::new(vec![script]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("m1", "x\n"),
    );
    let out = case.run();
    let status = if code >= 500 { "bounced" } else { "deferred" };
    let d = assert_outcome(
        &out,
        &out.deliveries(),
        "u@hostile.test",
        status,
        Some(code),
    );
    assert!(
        d.reply.contains(&code.to_string()),
        "reply should quote the server: {d:?}"
    );
    if code >= 500 {
        case.assert_failed("m1", code, &out);
    } else {
        case.assert_queued("m1", &out);
    }
    assert_eq!(
        case.server.bodies().len(),
        bodies,
        "{:#?}",
        case.server.connections()
    );
}

#[test]
fn mail_from_451_defers() {
    refusal(
        hello()
            .expect("MAIL FROM", "451 4.3.0 try again later")
            .then_polite(),
        451,
        0,
    );
}

#[test]
fn mail_from_550_fails() {
    refusal(
        hello()
            .expect("MAIL FROM", "550 5.7.1 sender refused")
            .then_polite(),
        550,
        0,
    );
}

#[test]
fn rcpt_to_450_defers() {
    refusal(
        hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "450 4.2.0 mailbox busy")
            .then_polite(),
        450,
        0,
    );
}

#[test]
fn rcpt_to_550_fails() {
    refusal(
        hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "550 5.1.1 no such user")
            .then_polite(),
        550,
        0,
    );
}

#[test]
fn data_451_defers() {
    refusal(
        hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "250 ok")
            .expect("DATA", "451 4.3.0 not now")
            .then_polite(),
        451,
        0,
    );
}

#[test]
fn data_554_fails() {
    refusal(
        hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "250 ok")
            .expect("DATA", "554 5.5.1 no valid recipients")
            .then_polite(),
        554,
        0,
    );
}

#[test]
fn after_dot_452_defers() {
    refusal(
        hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "250 ok")
            .expect("DATA", "354 go ahead")
            .body("452 4.3.1 insufficient storage")
            .then_polite(),
        452,
        1,
    );
}

#[test]
fn after_dot_554_fails() {
    refusal(
        hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "250 ok")
            .expect("DATA", "354 go ahead")
            .body("554 5.6.0 content rejected")
            .then_polite(),
        554,
        1,
    );
}

#[test]
fn partial_rcpt_logs_each_recipient_separately() {
    let case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect("RCPT TO:<good@", "250 2.1.5 ok")
        .expect("RCPT TO:<bad@", "550 5.1.1 no such user bad")
        .expect("DATA", "354 go ahead")
        .body("250 2.0.0 queued")
        .then_polite()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["good@hostile.test", "bad@hostile.test"],
        &message("partial", "x\n"),
    );
    let out = case.run();
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "good@hostile.test", "sent", Some(250));
    let bad = assert_outcome(&out, &deliveries, "bad@hostile.test", "bounced", Some(550));
    assert!(
        bad.reply.contains("no such user bad"),
        "reply for bad@: {bad:?}"
    );
    assert_eq!(
        case.server.bodies().len(),
        1,
        "the accepted recipient gets the body once"
    );
    assert!(
        case.server.errors().is_empty(),
        "{:?}",
        case.server.errors()
    );
}

#[test]
fn every_recipient_refused_5xx_fails_the_message() {
    let case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect("RCPT TO", "550 5.1.1 no such user one")
        .expect("RCPT TO", "553 5.1.3 bad address two")
        .then_polite()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["one@hostile.test", "two@hostile.test"],
        &message("all5xx", "x\n"),
    );
    let out = case.run();
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "one@hostile.test", "bounced", Some(550));
    assert_outcome(&out, &deliveries, "two@hostile.test", "bounced", Some(553));
    case.assert_failed("m1", 550, &out);
    assert!(
        case.server.bodies().is_empty(),
        "no recipient left, so no DATA"
    );
}

#[test]
fn every_recipient_refused_4xx_keeps_the_message_queued() {
    let case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect("RCPT TO", "450 4.2.1 try one later")
        .expect("RCPT TO", "451 4.3.0 try two later")
        .then_polite()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["one@hostile.test", "two@hostile.test"],
        &message("all4xx", "x\n"),
    );
    let out = case.run();
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "one@hostile.test", "deferred", Some(450));
    assert_outcome(&out, &deliveries, "two@hostile.test", "deferred", Some(451));
    case.assert_queued("m1", &out);
}

#[test]
fn pipelined_partial_rcpt_delivers_to_the_accepted_recipient() {
    // PIPELINING advertised (RFC 2920): the replies come back in order.
    let case = Case::new(vec![Script::polite()
        .pipelining(true)
        .answer("RCPT TO:<bad@", "550 5.1.1 no such user bad")]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["good@hostile.test", "bad@hostile.test", "also@hostile.test"],
        &message("pipelined", "x\n"),
    );
    let out = case.run();
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "good@hostile.test", "sent", Some(250));
    assert_outcome(&out, &deliveries, "also@hostile.test", "sent", Some(250));
    assert_outcome(&out, &deliveries, "bad@hostile.test", "bounced", Some(550));
    assert_eq!(
        case.server.bodies().len(),
        1,
        "{:#?}",
        case.server.connections()
    );
}

#[test]
fn pipelined_every_rcpt_refused_fails_the_message() {
    // A real server answers a pipelined DATA with 554 when no RCPT succeeded.
    let case = Case::new(vec![Script::polite()
        .pipelining(true)
        .answer("RCPT", "550 5.1.1 no such user")
        .answer("DATA", "554 5.5.1 no valid recipients")]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["one@hostile.test", "two@hostile.test"],
        &message("pipelined-all", "x\n"),
    );
    let out = case.run();
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "one@hostile.test", "bounced", Some(550));
    assert_outcome(&out, &deliveries, "two@hostile.test", "bounced", Some(550));
    case.assert_failed("m1", 550, &out);
    assert!(
        case.server.bodies().is_empty(),
        "no body without a recipient"
    );
}

#[test]
fn multi_line_refusal_is_reported_whole() {
    let case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect(
            "RCPT TO",
            "550-5.1.1 first line of the refusal\n550 5.1.1 second line of the refusal",
        )
        .then_polite()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("ml", "x\n"),
    );
    let out = case.run();
    let d = assert_outcome(
        &out,
        &out.deliveries(),
        "u@hostile.test",
        "bounced",
        Some(550),
    );
    assert!(
        d.reply.contains("first line of the refusal")
            && d.reply.contains("second line of the refusal"),
        "both lines belong in the reply: {d:?}"
    );
    case.assert_failed("m1", 550, &out);
}

#[test]
fn malformed_reply_defers_without_losing_mail() {
    let case = Case::new(vec![hello()
        .expect_raw("MAIL FROM", b"25O sender ok?\r\n")
        .then_polite()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("mal", "x\n"),
    );
    let out = case.run();
    let d = assert_outcome(&out, &out.deliveries(), "u@hostile.test", "deferred", None);
    assert_eq!(d.code, None, "a malformed reply has no code: {d:?}");
    case.assert_queued("m1", &out);
}

#[test]
fn over_long_reply_defers_without_losing_mail() {
    let mut reply = b"250 ".to_vec();
    reply.extend(std::iter::repeat_n(b'x', 100_000));
    reply.extend_from_slice(b"\r\n");
    let case = Case::new(vec![hello().expect_raw("MAIL FROM", &reply).then_polite()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("long", "x\n"),
    );
    let out = case.run();
    assert_outcome(&out, &out.deliveries(), "u@hostile.test", "deferred", None);
    case.assert_queued("m1", &out);
}

/// A 421 greeting is the site turning this client away (issue 17: a
/// throttle), not a failure of the message: the message waits, untried,
/// with the reply in its deferral record, and the site waits a moment.
#[test]
fn greeting_421_is_a_throttle_and_the_message_waits_untried() {
    let case = Case::new(vec![Script::new().greet("421 4.3.2 service shutting down")]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("g421", "x\n"),
    );
    let out = case.run();
    let d = assert_outcome(&out, &out.deliveries(), "u@hostile.test", "deferred", None);
    assert!(
        d.reply
            .contains("throttled: 421 4.3.2 service shutting down"),
        "{d:#?}"
    );
    assert_eq!(out.count_records("site throttled"), 1, "{}", out.stderr);
    case.assert_queued("m1", &out);
    let file = std::fs::read_to_string(case.queue.domain_dir(DOMAIN).join("m1")).unwrap();
    assert!(
        !file.contains("X-Postman-Attempts"),
        "no attempt counted: {file}"
    );
    assert!(
        !case.queue.domain_dir(DOMAIN).join(".state/m1").exists(),
        "no retry state written"
    );
}

#[test]
fn stall_after_data_hits_data_done_timeout_and_defers() {
    let mut case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect("RCPT TO", "250 ok")
        .expect("DATA", "354 go ahead")
        .body_silently()
        .stall(30_000)]);
    case.config.timeouts.data_done = 1;
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("stall", "x\n"),
    );
    let out = case.run();
    assert_outcome(&out, &out.deliveries(), "u@hostile.test", "deferred", None);
    case.assert_queued("m1", &out);
    assert_eq!(
        case.server.bodies().len(),
        1,
        "the body was sent before the stall"
    );
    assert!(
        out.elapsed < Duration::from_secs(15),
        "data_done = 1 s, yet the run took {:?}",
        out.elapsed
    );
}

#[test]
fn connection_dropped_after_rcpt_defers() {
    let case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect_silently("RCPT TO")
        .close()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("drop1", "x\n"),
    );
    let out = case.run();
    let d = assert_outcome(&out, &out.deliveries(), "u@hostile.test", "deferred", None);
    assert_eq!(d.code, None, "no reply came: {d:?}");
    case.assert_queued("m1", &out);
}

#[test]
fn connection_dropped_after_the_dot_defers() {
    let case = Case::new(vec![hello()
        .expect("MAIL FROM", "250 ok")
        .expect("RCPT TO", "250 ok")
        .expect("DATA", "354 go ahead")
        .body_silently()
        .close()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u@hostile.test"],
        &message("drop2", "x\n"),
    );
    let out = case.run();
    assert_outcome(&out, &out.deliveries(), "u@hostile.test", "deferred", None);
    case.assert_queued("m1", &out);
}

#[test]
fn malformed_queue_file_is_quarantined_and_the_rest_delivered() {
    let case = Case::new(vec![Script::polite()]);
    let q = &case.queue;
    q.add(
        DOMAIN,
        "good1",
        "a@src.test",
        &["u1@hostile.test"],
        &message("good1", "x\n"),
    );
    q.add_raw(
        DOMAIN,
        "bad1",
        b"this is not a queue file: no envelope block at all\n",
    );
    q.add_raw(
        DOMAIN,
        "bad2",
        b"X-Postman-From: <a@src.test>\nX-Postman-Date: 1764250000\n\nno X-Postman-To header\n",
    );
    q.add(
        DOMAIN,
        "good2",
        "a@src.test",
        &["u2@hostile.test"],
        &message("good2", "y\n"),
    );
    // A half-written file in tmp/ is never a queue entry.
    let tmp = q.domain_dir(DOMAIN).join("tmp").join("half");
    std::fs::write(&tmp, b"X-Postman-From: <a@src.test>\n").unwrap();

    let out = case.run();
    let s = q.state();
    for name in ["bad1", "bad2"] {
        let Some(entry) = s.quarantined_entry(DOMAIN, name) else {
            panic!(
                "{name} should be quarantined\n{s:#?}\n--- stderr ---\n{}",
                out.stderr
            );
        };
        assert!(
            entry
                .reason
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty()),
            "{name}.reason should say why: {entry:?}"
        );
        assert!(
            out.quarantines()
                .iter()
                .any(|r| r.queue_id == name && r.domain == DOMAIN),
            "a quarantined record for {name}: {:?}",
            out.quarantines()
        );
    }
    check(
        s.queued_in(DOMAIN).is_empty(),
        "good files delivered, bad ones moved",
        q,
        &out,
    );
    assert_eq!(
        case.server.bodies().len(),
        2,
        "both good messages delivered"
    );
    assert_eq!(
        std::fs::read(&tmp).ok().as_deref(),
        Some(&b"X-Postman-From: <a@src.test>\n"[..]),
        "tmp/half must be left alone"
    );
    let deliveries = out.deliveries();
    assert_outcome(&out, &deliveries, "u1@hostile.test", "sent", Some(250));
    assert_outcome(&out, &deliveries, "u2@hostile.test", "sent", Some(250));
    assert!(
        records_for(&deliveries, "").is_empty(),
        "no delivery record for quarantined files"
    );
}

/// The next message of a connection is claimed and read on a disk thread
/// while the connection waits. A server that hangs up after every message
/// closes connections in that window: a message prepared for a connection
/// already gone goes back untried (no attempt recorded, no deferral) and
/// is sent on the next connection. Every message arrives once.
#[test]
fn a_server_that_hangs_up_after_each_message_loses_and_repeats_nothing() {
    const MESSAGES: usize = 12;
    let mut case = Case::new(vec![Script::new()
        .hello()
        .expect("MAIL", "250 2.1.0 ok")
        .expect("RCPT", "250 2.1.5 ok")
        .expect("DATA", "354 go ahead")
        .body("250 2.0.0 queued")
        .close()]);
    case.add_numbered(MESSAGES, "hangup");
    // One connection at a time, so each hang-up meets the next message.
    case.config.max_connections_per_domain = 1;
    let out = case.run();
    case.assert_each_sent_once(MESSAGES, &out, "hang-up after each message");
    let prepared: u64 = out
        .records()
        .iter()
        .filter(|r| r["msg"] == "worker stopped")
        .filter_map(|r| r["prepared_by_disk_thread"].as_u64())
        .sum();
    check(
        prepared > 0,
        "the disk threads should have prepared messages",
        &case.queue,
        &out,
    );
}

/// A reused connection that ends before the server answers anything but
/// RSET (it hangs up on RSET, or answers 421 to it or to the MAIL after it,
/// as servers that limit messages per connection do) has not tried the
/// message: it goes back untried, with nothing recorded, and goes out on a
/// new connection. Postfix likewise moves on from a dead cached connection
/// without deferring.
#[test]
fn a_reused_connection_that_ends_before_the_next_message_is_judged_defers_nothing() {
    const MESSAGES: usize = 6;
    let delivered = || {
        Script::new()
            .pipelining(false)
            .hello()
            .expect("MAIL", "250 2.1.0 ok")
            .expect("RCPT", "250 2.1.5 ok")
            .expect("DATA", "354 go ahead")
            .body("250 2.0.0 queued")
    };
    let cases = [
        (
            "hang-up on RSET",
            delivered().expect_silently("RSET").close(),
        ),
        (
            "421 to RSET",
            delivered()
                .expect("RSET", "421 4.7.0 too many messages on this connection")
                .close(),
        ),
        (
            // Exim's smtp_accept_max_per_connection answers so.
            "421 to the MAIL after RSET",
            delivered()
                .expect("RSET", "250 2.0.0 ok")
                .expect("MAIL", "421 4.7.0 too many messages in this connection")
                .close(),
        ),
    ];
    for (name, script) in cases {
        let mut case = Case::new(vec![script]);
        case.add_numbered(MESSAGES, "rset");
        case.config.max_connections_per_domain = 1;
        let out = case.run();
        case.assert_each_sent_once(MESSAGES, &out, name);
        let untried = out.count_records("goes back untried");
        assert!(
            out.max_metric("worker", "untried") > 0,
            "{name}: a worker counts them in its metrics"
        );
        check(
            untried > 0 && case.server.count_commands("RSET") == untried,
            &format!("{name}: each RSET should have sent a message back untried ({untried})"),
            &case.queue,
            &out,
        );
    }
}
