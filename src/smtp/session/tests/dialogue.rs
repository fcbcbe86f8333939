//! Scripted dialogues: the exact bytes written, deadlines on a fake clock,
//! body back-pressure, caller mistakes, and the same transcript split at
//! every byte offset.

use proptest::prelude::*;

use super::*;

const S: Duration = Duration::from_secs(1);

fn results(done: &MessageResult) -> Vec<String> {
    done.recipients
        .iter()
        .map(|r| match &r.result {
            Ok(reply) => format!("{}: ok {reply}", r.recipient),
            Err(outcome) => format!("{}: {outcome}", r.recipient),
        })
        .collect()
}

#[test]
fn one_message_without_pipelining() {
    let mut d = Dialogue::new();
    d.expect_no_output();
    d.reply("220-mx.test ESMTP\n220 ready");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test hello\n250-SIZE 1000\n250 8BITMIME");
    d.expect_ready();
    let ext = d.session.extensions().cloned().unwrap_or_default();
    assert!(!ext.pipelining && ext.eight_bit_mime, "extensions: {ext:?}");
    assert_eq!(ext.size, Some(1000), "SIZE 1000");
    d.start("Some.One@Example.org", &["MixedCase@b.test", "r2@b.test"]);
    d.expect_command("MAIL FROM:<Some.One@Example.org>");
    d.reply("250 2.1.0 ok");
    d.expect_command("RCPT TO:<MixedCase@b.test>");
    d.reply("550-5.1.1 no such\n550 5.1.1 user");
    d.expect_command("RCPT TO:<r2@b.test>");
    d.reply("250 2.1.5 ok");
    d.expect_command("DATA");
    assert!(!d.session.wants_body(), "wants_body before 354");
    d.reply("354 go ahead");
    assert!(d.session.wants_body(), "wants_body after 354");
    d.expect_no_event();
    d.session.push_body(b"Subject: x\n\n.hidden\n", d.now);
    d.session.push_body(b"last line", d.now);
    d.session.finish_body(d.now);
    assert!(!d.session.wants_body(), "wants_body after finish_body");
    d.expect_output("Subject: x\r\n\r\n..hidden\r\nlast line\r\n.\r\n");
    d.expect_no_event();
    d.reply("250 2.0.0 queued as 1234");
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        [
            "MixedCase@b.test: said: 550 5.1.1 no such user (in reply to RCPT TO command)",
            "r2@b.test: ok 250 2.0.0 queued as 1234",
        ],
        "results"
    );
    d.expect_ready();
    assert_eq!(
        d.session.transactions(),
        1,
        "transactions after one message"
    );
    d.session.quit(d.now);
    d.expect_command("QUIT");
    d.reply("221 2.0.0 bye");
    assert_eq!(d.expect_closed(), None, "Closed after QUIT");
    d.expect_no_event();
}

/// RFC 5321 §4.5.3.1.10: after a 452 to RCPT for too many recipients, the
/// recipients not yet sent are not sent in this transaction (they would
/// hear the same); the accepted ones get the body, the others the 452, and
/// `send_again` marks them for a new transaction.
#[test]
fn recipients_over_the_limit_are_not_sent_without_pipelining() {
    let mut d = Dialogue::handshake(false);
    d.start(
        "a@s.test",
        &["r1@b.test", "r2@b.test", "r3@b.test", "r4@b.test"],
    );
    d.expect_command("MAIL FROM:<a@s.test>");
    d.reply("250 ok");
    d.expect_command("RCPT TO:<r1@b.test>");
    d.reply("250 ok");
    d.expect_command("RCPT TO:<r2@b.test>");
    d.reply("452 4.5.3 Too many recipients");
    d.expect_command("DATA");
    d.reply("354 go ahead");
    d.session.finish_body(d.now);
    d.expect_output(".\r\n");
    d.reply("250 2.0.0 queued");
    let done = d.expect_done();
    let over = "said: 452 4.5.3 Too many recipients (in reply to RCPT TO command)";
    assert_eq!(
        results(&done),
        [
            "r1@b.test: ok 250 2.0.0 queued".to_owned(),
            format!("r2@b.test: {over}"),
            format!("r3@b.test: {over}"),
            format!("r4@b.test: {over}"),
        ],
        "results"
    );
    assert_eq!(done.send_again(), [false, true, true, true], "send_again");
    d.expect_ready();
}

/// After a server refused recipients past its limit, the next transaction
/// on the connection sends no more RCPTs than it accepted then: the rest
/// get the same refusal unasked and wait for the transaction after.
#[test]
fn a_learned_recipient_limit_holds_for_later_transactions() {
    let mut d = Dialogue::handshake(true);
    let rcpts: Vec<String> = (1..=5).map(|i| format!("r{i}@b.test")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    d.start("a@s.test", &rcpts);
    let mut want = String::from("MAIL FROM:<a@s.test>\r\n");
    for r in &rcpts {
        want.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    want.push_str("DATA\r\n");
    d.expect_output(&want);
    d.reply("250 ok\n250 ok\n250 ok\n452 4.5.3 Too many recipients\n452 4.5.3 Too many recipients\n452 4.5.3 Too many recipients\n354 go");
    d.session.finish_body(d.now);
    d.expect_output(".\r\n");
    d.reply("250 2.0.0 queued");
    let done = d.expect_done();
    assert_eq!(
        done.send_again(),
        [false, false, true, true, true],
        "send_again after the first transaction"
    );
    d.expect_ready();

    // The rest: only two of three go out, the third waits again.
    d.start("a@s.test", &["r3@b.test", "r4@b.test", "r5@b.test"]);
    d.expect_output(
        "RSET\r\nMAIL FROM:<a@s.test>\r\nRCPT TO:<r3@b.test>\r\nRCPT TO:<r4@b.test>\r\nDATA\r\n",
    );
    d.reply("250 ok\n250 ok\n250 ok\n250 ok\n354 go");
    d.session.finish_body(d.now);
    d.expect_output(".\r\n");
    d.reply("250 2.0.0 queued");
    let done = d.expect_done();
    let over = "said: 452 4.5.3 Too many recipients (in reply to RCPT TO command)";
    assert_eq!(
        results(&done),
        [
            "r3@b.test: ok 250 2.0.0 queued".to_owned(),
            "r4@b.test: ok 250 2.0.0 queued".to_owned(),
            format!("r5@b.test: {over}"),
        ],
        "results of the second transaction"
    );
    assert_eq!(done.send_again(), [false, false, true], "send_again");
    d.expect_ready();
}

/// Issue 22, defect 10: a server whose greeting or EHLO/HELO reply names
/// this host (the helo name) is this host: QUIT, and the session closes
/// with a loop, before any transaction.
#[test]
fn a_server_that_names_this_host_gets_no_message() {
    // (what, the server's replies with the command each one draws, stage)
    type Case = (&'static str, &'static [(&'static str, &'static str)], Stage);
    let cases: [Case; 3] = [
        (
            "greeting",
            &[("220 Client.Test. ESMTP", "QUIT")],
            Stage::Greeting,
        ),
        (
            "EHLO",
            &[
                ("220 mx.test ESMTP", "EHLO client.test"),
                ("250-client.test hello\n250 PIPELINING", "QUIT"),
            ],
            Stage::Ehlo,
        ),
        (
            "HELO",
            &[
                ("220 mx.test ESMTP", "EHLO client.test"),
                ("502 5.5.1 no EHLO", "HELO client.test"),
                ("250 CLIENT.TEST", "QUIT"),
            ],
            Stage::Helo,
        ),
    ];
    for (name, turns, stage) in cases {
        let mut d = Dialogue::new();
        for (reply, command) in turns {
            d.reply(reply);
            d.expect_command(command);
        }
        let outcome = d.expect_closed();
        let Some(outcome) = outcome else {
            panic!("{name}: closed without an outcome after {}", d.transcript());
        };
        assert!(outcome.is_loop(), "{name}: {outcome:?}");
        assert_eq!(
            (outcome.class, outcome.scope, outcome.stage),
            (Class::Transient, Scope::Destination, stage),
            "{name}: {outcome:?}"
        );
        assert_eq!(d.session.transactions(), 0, "{name}: no transaction");
    }
}

#[test]
fn pipelined_groups_and_rset() {
    let mut d = Dialogue::handshake(true);
    d.start("", &["a@b.test", "c@b.test", "e@b.test"]);
    d.expect_output(
        "MAIL FROM:<>\r\nRCPT TO:<a@b.test>\r\nRCPT TO:<c@b.test>\r\nRCPT TO:<e@b.test>\r\nDATA\r\n",
    );
    // Replies trickle in; each is matched to its command in order.
    d.reply("250 ok");
    d.reply("450 4.2.2 mailbox full\n250 ok");
    d.expect_no_event();
    d.reply("550 5.1.1 unknown\n354 go");
    d.session.push_body(b"hi", d.now);
    d.session.finish_body(d.now);
    d.expect_output("hi\r\n.\r\n");
    d.reply("250 2.0.0 done");
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        [
            "a@b.test: said: 450 4.2.2 mailbox full (in reply to RCPT TO command)",
            "c@b.test: ok 250 2.0.0 done",
            "e@b.test: said: 550 5.1.1 unknown (in reply to RCPT TO command)",
        ],
        "pipelined results"
    );
    d.expect_ready();
    d.start("s@a.test", &["x@b.test"]);
    d.expect_output("RSET\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<x@b.test>\r\nDATA\r\n");
    d.reply("250 reset\n250 ok\n250 ok\n354 go");
    d.session.finish_body(d.now);
    d.expect_output(".\r\n");
    d.reply("250 ok");
    assert!(d.expect_done().all_delivered(), "second message delivered");
    d.expect_ready();
    assert_eq!(
        d.session.transactions(),
        2,
        "transactions after two messages"
    );
}

#[test]
fn lone_dot_when_pipelined_data_is_accepted_without_recipients() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["a@b.test"]);
    d.take_output();
    d.reply("250 ok\n550 5.1.1 no\n354 go");
    assert!(!d.session.wants_body(), "no body for no recipient");
    d.expect_output(".\r\n");
    d.expect_no_event();
    d.reply("554 5.5.1 no valid recipients");
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        ["a@b.test: said: 550 5.1.1 no (in reply to RCPT TO command)"],
        "the recipient keeps its own failure"
    );
    d.expect_ready();
}

#[test]
fn helo_fallback_never_pipelines() {
    let mut d = Dialogue::new();
    d.reply("220 mx");
    d.expect_command("EHLO client.test");
    d.reply("502 5.5.2 what");
    d.expect_command("HELO client.test");
    d.reply("250 mx");
    d.expect_ready();
    assert_eq!(d.session.extensions(), None, "extensions after HELO");
    d.start("s@a.test", &["r@b.test"]);
    d.expect_command("MAIL FROM:<s@a.test>");
}

#[test]
fn helo_name_cannot_inject() {
    let mut d = Dialogue::with_config(SessionConfig {
        helo_name: "client.test\r\nRSET".into(),
        ..config()
    });
    d.reply("220 mx");
    d.expect_command("EHLO client.testRSET");
}

#[test]
fn deadlines_follow_the_fake_clock() {
    let mut d = Dialogue::new();
    let base = d.now;
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 300 * S),
        "greeting deadline"
    );
    d.advance(299 * S);
    d.expect_no_event();
    d.session.handle_timeout(base + 100 * S);
    d.collect();
    d.expect_no_event();
    d.reply("220 mx");
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 599 * S),
        "EHLO deadline from 299s"
    );
    d.take_output();
    d.reply("250-mx\n250 PIPELINING");
    d.expect_ready();
    assert_eq!(d.session.poll_timeout(), None, "no deadline while ready");
    d.advance(10 * S); // 309s
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 609 * S),
        "MAIL deadline"
    );
    d.advance(5 * S); // 314s
    d.reply("250 ok");
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 614 * S),
        "RCPT deadline re-armed"
    );
    d.reply("250 ok");
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 434 * S),
        "DATA deadline (120s)"
    );
    d.reply("354 go");
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 494 * S),
        "data_block deadline"
    );
    d.now += 100 * S; // 414s
    d.session.push_body(b"chunk", d.now);
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 594 * S),
        "push_body re-arms data_block"
    );
    d.take_output();
    // consume_output carries no clock: the deadline moves when it comes due.
    d.advance(180 * S); // 594s
    d.expect_no_event();
    assert_eq!(
        d.session.poll_timeout(),
        Some(base + 774 * S),
        "progress re-arms data_block"
    );
    d.advance(180 * S); // 774s, no progress since
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        ["r@b.test: conversation timed out while sending message body"],
        "body timeout"
    );
    assert!(
        d.expect_closed().is_some(),
        "Closed(Some) after the body timeout"
    );
}

#[test]
fn end_of_data_timeout() {
    let mut d = Dialogue::handshake(false);
    d.start("s@a.test", &["r@b.test"]);
    for reply in ["250 ok", "250 ok", "354 go"] {
        d.take_output();
        d.reply(reply);
    }
    d.session.finish_body(d.now);
    d.take_output();
    d.advance(599 * S);
    d.expect_no_event();
    d.advance(S);
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        ["r@b.test: conversation timed out while sending end of data -- message may be sent more than once"],
        "end of data timeout"
    );
    let closed = d.expect_closed();
    assert_eq!(
        closed.map(|o| outcome_summary(&o)).as_deref(),
        Some("Transient Destination DataEnd -"),
        "Closed after the end of data timeout"
    );
}

#[test]
fn body_back_pressure() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    d.reply("250 ok\n250 ok\n354 go");
    assert!(d.session.wants_body(), "wants_body with an empty buffer");
    let chunk = vec![b'x'; 40 * 1024];
    d.session.push_body(&chunk, d.now);
    assert!(d.session.wants_body(), "wants_body at 40 KiB");
    d.session.push_body(&chunk, d.now);
    assert!(!d.session.wants_body(), "wants_body at 80 KiB");
    d.session.consume_output(10 * 1024);
    assert!(!d.session.wants_body(), "wants_body at 70 KiB");
    d.session.consume_output(10 * 1024);
    assert!(d.session.wants_body(), "wants_body at 60 KiB");
    let pending = d.session.pending_output().len();
    assert_eq!(pending, 60 * 1024, "pending after consuming 20 KiB of 80");
    d.session.consume_output(usize::MAX);
    assert_eq!(d.session.pending_output(), b"", "consume_output clamps");
    d.session.push_body(b".x", d.now);
    // The line of x's goes on: a dot inside it is not doubled.
    assert_eq!(
        d.session.pending_output(),
        b".x",
        "line continues after a drain"
    );
}

/// A verbatim body written by the caller straight to the connection: only
/// while everything before it is written and the body so far ended a
/// line, never with BDAT; its writes count as progress for data_block.
#[test]
fn a_verbatim_body_is_taken_directly_between_lines() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r@b.test"]);
    assert!(!d.session.takes_body_directly(), "not before 354");
    d.take_output();
    d.reply("250 ok\n250 ok\n354 go");
    assert!(d.session.takes_body_directly(), "after 354, all written");
    d.session.push_body(b"Subject: x\r\n", d.now);
    assert!(!d.session.takes_body_directly(), "output pending");
    d.take_output();
    assert!(d.session.takes_body_directly(), "between lines again");
    d.session.push_body(b"half a line", d.now);
    d.take_output();
    assert!(!d.session.takes_body_directly(), "inside a line");
    d.session.push_body(b"\r", d.now);
    d.take_output();
    assert!(
        !d.session.takes_body_directly(),
        "after a CR, whose LF the stuffer drops"
    );
    d.session.push_body(b"\n", d.now);
    d.expect_no_output();
    assert!(d.session.takes_body_directly(), "after the LF");

    // Writes of the caller's own keep the body from timing out.
    let armed = d.session.poll_timeout().expect("data_block deadline");
    d.session.body_written(4096);
    d.advance(armed - d.now);
    d.expect_no_event();
    assert!(
        d.session.poll_timeout() > Some(armed),
        "body_written re-arms data_block at the deadline"
    );
    d.session.finish_body(d.now);
    d.expect_output(".\r\n");
    assert!(!d.session.takes_body_directly(), "not after the body");
    d.reply("250 2.0.0 queued");
    d.expect_done();

    // With CHUNKING the body is framed: never written directly.
    let mut d = Dialogue::new();
    d.reply("220 mx.test ESMTP");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250-PIPELINING\n250 CHUNKING");
    d.expect_ready();
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    d.reply("250 ok\n250 ok");
    assert!(d.session.wants_body(), "BDAT body phase");
    assert!(!d.session.takes_body_directly(), "BDAT frames the body");
}

#[test]
fn output_survives_partial_writes() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    d.reply("250 ok\n250 ok\n354 go");
    let mut written = Vec::new();
    for i in 0..200u32 {
        d.session.push_body(format!("line {i}\n").as_bytes(), d.now);
        let n = d.session.pending_output().len().min(7);
        written.extend_from_slice(&d.session.pending_output()[..n]);
        d.session.consume_output(n);
    }
    d.session.finish_body(d.now);
    written.extend_from_slice(d.session.pending_output());
    let want: String = (0..200)
        .map(|i| format!("line {i}\r\n"))
        .collect::<String>()
        + ".\r\n";
    assert_eq!(
        String::from_utf8_lossy(&written),
        want,
        "body written 7 bytes at a time"
    );
}

#[test]
fn caller_mistakes() {
    let now = base();
    let mut session = Session::new(config(), now);
    let env = envelope("s@a.test", &["r@b.test"]);
    assert_eq!(
        session.start_message(env.clone(), now),
        Err(SessionError::NotReady {
            state: "receiving the initial server greeting"
        }),
        "start_message before the greeting"
    );
    let mut d = Dialogue::handshake(false);
    assert_eq!(
        d.session.start_message(envelope("s@a.test", &[]), d.now),
        Err(SessionError::NoRecipients),
        "start_message without recipients"
    );
    d.session.push_body(b"ignored", d.now);
    d.session.finish_body(d.now);
    d.expect_no_output();
    d.start("s@a.test", &["r@b.test"]);
    assert_eq!(
        d.session.start_message(env, d.now),
        Err(SessionError::NotReady {
            state: "sending MAIL FROM"
        }),
        "start_message during a transaction"
    );
    d.expect_command("MAIL FROM:<s@a.test>");
}

#[test]
fn addresses_that_would_break_the_line_are_refused() {
    let mut d = Dialogue::handshake(true);
    d.start(
        "s@a.test",
        &["ok@b.test", "evil@b.test>\r\nRCPT TO:<x@y", ""],
    );
    d.expect_output("MAIL FROM:<s@a.test>\r\nRCPT TO:<ok@b.test>\r\nDATA\r\n");
    d.reply("250 ok\n250 ok\n354 go");
    d.session.finish_body(d.now);
    d.take_output();
    d.reply("250 ok");
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        [
            "ok@b.test: ok 250 ok",
            "evil@b.test>\r\nRCPT TO:<x@y: invalid recipient address \"evil@b.test>\\r\\nRCPT TO:<x@y\": it contains a control character",
            ": invalid recipient address \"\": it is empty",
        ],
        "results with bad recipients"
    );
    d.expect_ready();
    // A bad sender fails the whole message without a word to the server.
    d.start("s@a.test\n", &["ok@b.test"]);
    d.expect_no_output();
    let done = d.expect_done();
    assert_eq!(
        done.recipients[0]
            .result
            .as_ref()
            .err()
            .map(outcome_summary)
            .as_deref(),
        Some("Permanent Message Mail -"),
        "result with a bad sender"
    );
    d.expect_ready();
    assert_eq!(
        d.session.transactions(),
        1,
        "a message never sent is no transaction"
    );
    // The next real message still needs no RSET beyond the first's.
    d.start("s@a.test", &["ok@b.test"]);
    assert!(
        d.take_output().starts_with("RSET\r\n"),
        "RSET after the first transaction: {}",
        d.transcript()
    );
}

#[test]
fn quit_mid_transaction_abandons_it() {
    let mut d = Dialogue::handshake(false);
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    d.reply("250 ok");
    d.take_output();
    d.session.quit(d.now);
    d.collect();
    d.expect_no_output();
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        ["r@b.test: delivery abandoned while sending RCPT TO"],
        "results when abandoned"
    );
    assert_eq!(
        done.recipients[0].result.as_ref().err().map(|o| o.class),
        Some(Class::Transient),
        "class when abandoned"
    );
    assert_eq!(d.expect_closed(), None, "Closed when abandoned");
}

#[test]
fn eof_while_sending_the_body() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r1@b.test", "r2@b.test"]);
    d.take_output();
    d.reply("250 ok\n250 ok\n550 no\n354 go");
    d.session.push_body(b"part", d.now);
    d.eof();
    let done = d.expect_done();
    assert_eq!(
        results(&done),
        [
            "r1@b.test: lost connection while sending message body",
            "r2@b.test: said: 550 no (in reply to RCPT TO command)",
        ],
        "results after EOF in the body"
    );
    let closed = d.expect_closed().map(|o| outcome_summary(&o));
    assert_eq!(
        closed.as_deref(),
        Some("Transient Destination Data -"),
        "Closed after EOF in the body"
    );
}

#[test]
fn smuggling_attempts_are_stuffed() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    d.reply("250 ok\n250 ok\n354 go");
    d.session.push_body(b"a\n.\nMAIL FROM:<x@y>\r\n", d.now);
    d.session.push_body(b"b\r\n.\r", d.now);
    d.session.push_body(b"RCPT TO:<z@y>\r", d.now);
    d.session.finish_body(d.now);
    d.expect_output("a\r\n..\r\nMAIL FROM:<x@y>\r\nb\r\n..\r\nRCPT TO:<z@y>\r\n.\r\n");
}

/// Plays the transcript below with the server bytes cut at `cuts` (and at
/// the turn boundaries); returns the events and everything written.
fn play(turns: &[&[u8]], cuts: &[usize]) -> (Vec<Event>, Vec<u8>) {
    let now = base();
    let mut session = Session::new(config(), now);
    let (mut events, mut written) = (Vec::new(), Vec::new());
    let mut offset = 0;
    let mut readies = 0;
    for turn in turns {
        let mut points: Vec<usize> = cuts
            .iter()
            .filter(|&&c| c > offset && c < offset + turn.len())
            .map(|&c| c - offset)
            .collect();
        points.push(turn.len());
        let mut from = 0;
        for at in points {
            session.handle_input(&turn[from..at], now);
            from = at;
            while let Some(event) = session.poll_event() {
                if event == Event::Ready {
                    readies += 1;
                    if readies == 1 {
                        let env = envelope("s@a.test", &["r1@b.test", "r2@b.test"]);
                        session
                            .start_message(env, now)
                            .expect("ready for a message");
                    } else {
                        session.quit(now);
                    }
                }
                events.push(event);
            }
            if session.wants_body() {
                session.push_body(b"body\n.\n", now);
                session.finish_body(now);
            }
            written.extend_from_slice(session.pending_output());
            let n = session.pending_output().len();
            session.consume_output(n);
        }
        offset += turn.len();
    }
    (events, written)
}

const TURNS: [&[u8]; 5] = [
    b"220-mx.test ESMTP\r\n220 ready\r\n",
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE\r\n250 ENHANCEDSTATUSCODES\r\n",
    b"250 2.1.0 ok\r\n550-5.1.1 no such\r\n550 5.1.1 user\r\n250 2.1.5 ok\r\n354 go\r\n",
    b"250 2.0.0 queued\n",
    b"221 bye\r\n",
];

#[test]
fn every_split_gives_the_same_events() {
    let (whole_events, whole_written) = play(&TURNS, &[]);
    assert_eq!(
        whole_events.iter().map(event_summary).collect::<Vec<_>>(),
        [
            "Ready",
            "Done[Permanent Recipient Rcpt 550, ok 250]",
            "Ready",
            "Closed"
        ],
        "events of the whole transcript"
    );
    assert_eq!(
        String::from_utf8_lossy(&whole_written),
        "EHLO client.test\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r1@b.test>\r\nRCPT TO:<r2@b.test>\r\n\
         DATA\r\nbody\r\n..\r\n.\r\nQUIT\r\n",
        "output for the whole transcript"
    );
    let total: usize = TURNS.iter().map(|t| t.len()).sum();
    for cut in 0..=total {
        let (events, written) = play(&TURNS, &[cut]);
        assert_eq!(
            events, whole_events,
            "events with the transcript cut at {cut}"
        );
        assert_eq!(
            written, whole_written,
            "output with the transcript cut at {cut}"
        );
    }
    let every: Vec<usize> = (0..=total).collect();
    let (events, written) = play(&TURNS, &every);
    assert_eq!(events, whole_events, "events one byte at a time");
    assert_eq!(written, whole_written, "output one byte at a time");
}

proptest! {
    /// Whatever the server sends, in whatever pieces: no panic, at most one
    /// Closed and nothing after it, bounded output, replies in range.
    #[test]
    fn any_server_bytes_keep_the_invariants(
        pieces in prop::collection::vec(prop::collection::vec(prop_oneof![
            Just(b'2'), Just(b'5'), Just(b'0'), Just(b'4'), Just(b'3'),
            Just(b' '), Just(b'-'), Just(b'\r'), Just(b'\n'), any::<u8>()
        ], 0..40), 0..30),
        pipelining in any::<bool>(),
        chunking in any::<bool>(),
        starttls in any::<bool>(),
        credentials in prop_oneof![Just(None), any::<bool>().prop_map(Some)],
    ) {
        // With credentials (and whether they may go without TLS), and AUTH
        // offered: the pieces then answer AUTH and its exchange.
        let auth = credentials.map(|allow_plaintext| AuthConfig {
            credentials: crate::secret::Credentials {
                user: "u".into(),
                password: crate::secret::Secret::new("pencil".into()),
            },
            allow_plaintext,
            nonce: crate::smtp::auth::Nonce::new("nonce").expect("a nonce"),
        });
        let allow_plaintext = credentials.unwrap_or(true);
        let mut d = Dialogue::with_config(SessionConfig { auth, ..config() });
        d.reply("220 mx");
        let mut ehlo = String::from("250-mx");
        let offers_auth = credentials.is_some();
        for (on, keyword) in [
            (pipelining, "PIPELINING"),
            (chunking, "CHUNKING"),
            (starttls, "STARTTLS"),
            (offers_auth, "AUTH SCRAM-SHA-256 LOGIN PLAIN"),
        ] {
            if on {
                ehlo.push_str("\n250-");
                ehlo.push_str(keyword);
            }
        }
        ehlo.push_str("\n250 SIZE 100");
        d.reply(&ehlo);
        if starttls {
            d.reply("220 go ahead");
        }
        let mut closed = false;
        for piece in &pieces {
            while let Some(event) = d.next_event() {
                prop_assert!(!closed, "event {:?} after Closed, pieces {:?}", event, pieces);
                match event {
                    Event::Ready => {
                        let env = envelope("s@a.test", &["r1@b.test", "r2@b.test"]);
                        // Err only when a Closed is already queued behind Ready.
                        let started = d.session.start_message(env, d.now);
                        prop_assert!(started.is_ok() || d.session.is_closed(), "{:?}", started);
                    }
                    Event::Closed(outcome) => {
                        closed = true;
                        if let Some(outcome) = outcome.as_ref().filter(|o| o.stage == Stage::Auth) {
                            prop_assert!(outcome.is_transient(), "{:?}", outcome);
                        }
                        if let Some(reply) = outcome.and_then(|o| o.reply) {
                            prop_assert!((200..600).contains(&reply.code.get()));
                        }
                    }
                    Event::MessageDone(result) => {
                        prop_assert_eq!(result.recipients.len(), 2, "pieces {:?}", pieces);
                    }
                    Event::StartTls => d.session.tls_established(tls_info(), d.now),
                }
            }
            if d.session.wants_body() {
                d.session.push_body(b"x", d.now);
                d.session.finish_body(d.now);
            }
            prop_assert!(d.session.pending_output().len() < 4096, "pieces {:?}", pieces);
            let out = d.session.pending_output();
            prop_assert!(
                allow_plaintext || d.session.tls().is_some() || !out.windows(5).any(|w| w == b"AUTH "),
                "AUTH without TLS, pieces {:?}", pieces
            );
            if let Some(ext) = d.session.extensions() {
                prop_assert!(!ext.starttls || d.session.tls().is_none(), "STARTTLS believed after TLS");
            }
            d.take_output();
            d.raw(piece);
        }
        if d.session.is_closed() {
            prop_assert_eq!(d.session.poll_timeout(), None);
        }
    }
}

/// A connection from a pool address says EHLO with that address's name;
/// a server that greets with another of this host's names (its hostname)
/// is the same loop.
#[test]
fn a_server_greeting_with_another_of_our_names_is_a_loop() {
    let config = SessionConfig {
        helo_name: "bulk1.client.test".into(),
        own_names: vec!["client.test".into(), "bulk1.client.test".into()],
        ..config()
    };
    let mut d = Dialogue::with_config(config.clone());
    d.reply("220 client.test ESMTP");
    let outcome = d.expect_closed().expect("an outcome");
    assert!(outcome.is_loop(), "{outcome:?}");
    let mut d = Dialogue::with_config(config);
    d.reply("220 mx.test ESMTP");
    d.expect_command("EHLO bulk1.client.test");
}
