//! The conversation breaking down at every stage: the peer hangs up, goes
//! silent, or sends something that is not a reply. Each is a transient
//! failure of the host; the message in flight is finished first.

use super::*;

struct Row {
    name: &'static str,
    scenario: Scenario,
    writes: &'static str,
    events: Vec<String>,
    /// The detail of the outcome `Closed` carries (`""` for `Closed(None)`);
    /// one `*` matches anything.
    detail: String,
}

fn check(rows: Vec<Row>) -> Vec<Run> {
    let mut runs = Vec::new();
    for row in rows {
        let got = run(&row.scenario);
        assert_eq!(got.writes, row.writes, "client writes for {}", row.name);
        assert_eq!(got.events, row.events, "events for {}", row.name);
        let detail = got.closed.as_ref().map_or("", |o| o.detail.as_str());
        match row.detail.split_once('*') {
            Some((prefix, suffix)) => assert!(
                detail.starts_with(prefix) && detail.ends_with(suffix),
                "detail for {}: {detail:?} should match {:?}",
                row.name,
                row.detail
            ),
            None => assert_eq!(detail, row.detail, "detail for {}", row.name),
        }
        runs.push(got);
    }
    runs
}

fn ev(events: &[&str]) -> Vec<String> {
    events.iter().map(|e| (*e).to_owned()).collect()
}

fn plain() -> Scenario {
    Scenario::new(false)
}

fn piped() -> Scenario {
    Scenario::new(true)
}

/// The rows for one kind of breakdown, `act` at each stage in turn.
fn every_stage(act: Act, what: &str) -> Vec<Row> {
    let closed = |stage: &str| format!("Closed(Transient Destination {stage} -)");
    let done = |stage: &str| {
        format!("Done[Transient Destination {stage} -, Transient Destination {stage} -]")
    };
    let detail = |doing: &str| format!("{what} while {doing}");
    vec![
        Row {
            name: "at the greeting",
            scenario: plain().on("greeting", 1, act),
            writes: "",
            events: vec![closed("Greeting")],
            detail: detail("receiving the initial server greeting"),
        },
        Row {
            name: "at EHLO",
            scenario: plain().on("EHLO", 1, act),
            writes: "EHLO",
            events: vec![closed("Ehlo")],
            detail: detail("performing the EHLO handshake"),
        },
        Row {
            name: "at HELO",
            scenario: plain().reply("EHLO", 1, "502 no").on("HELO", 1, act),
            writes: "EHLO HELO",
            events: vec![closed("Helo")],
            detail: detail("performing the HELO handshake"),
        },
        Row {
            name: "at MAIL",
            scenario: plain().on("MAIL", 1, act),
            writes: "EHLO MAIL",
            events: vec!["Ready".into(), done("Mail"), closed("Mail")],
            detail: detail("sending MAIL FROM"),
        },
        Row {
            name: "at the second RCPT",
            scenario: plain().on("RCPT", 2, act),
            writes: "EHLO MAIL RCPT RCPT",
            events: vec!["Ready".into(), done("Rcpt"), closed("Rcpt")],
            detail: detail("sending RCPT TO"),
        },
        Row {
            name: "at DATA",
            scenario: plain().on("DATA", 1, act),
            writes: "EHLO MAIL RCPT RCPT DATA",
            events: vec!["Ready".into(), done("Data"), closed("Data")],
            detail: detail("sending DATA command"),
        },
        Row {
            name: "at end of data",
            scenario: plain().on(".", 1, act),
            writes: "EHLO MAIL RCPT RCPT DATA .",
            events: vec!["Ready".into(), done("DataEnd"), closed("DataEnd")],
            detail: detail("sending end of data -- message may be sent more than once"),
        },
        Row {
            name: "at RSET",
            scenario: plain().messages(2).on("RSET", 1, act),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET",
            events: vec![
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                untried(done("Rset")),
                closed("Rset"),
            ],
            detail: detail("sending RSET"),
        },
        Row {
            // No reply but RSET's yet: the server has judged nothing.
            name: "at the second message's MAIL",
            scenario: plain().messages(2).on("MAIL", 2, act),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET MAIL",
            events: vec![
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                untried(done("Mail")),
                closed("Mail"),
            ],
            detail: detail("sending MAIL FROM"),
        },
        Row {
            // MAIL was answered: the message was tried.
            name: "at the second message's RCPT",
            scenario: plain().messages(2).on("RCPT", 3, act),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET MAIL RCPT",
            events: vec![
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                done("Rcpt"),
                closed("Rcpt"),
            ],
            detail: detail("sending RCPT TO"),
        },
        Row {
            name: "piped, at RSET",
            scenario: piped().messages(2).on("RSET", 1, act),
            writes: "EHLO MAIL+RCPT+RCPT+DATA . RSET+MAIL+RCPT+RCPT+DATA",
            events: vec![
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                untried(done("Rset")),
                closed("Rset"),
            ],
            detail: detail("sending RSET"),
        },
        Row {
            name: "piped, at MAIL",
            scenario: piped().on("MAIL", 1, act),
            writes: "EHLO MAIL+RCPT+RCPT+DATA",
            events: vec!["Ready".into(), done("Mail"), closed("Mail")],
            detail: detail("sending MAIL FROM"),
        },
        Row {
            name: "piped, at the second RCPT after the first was refused",
            scenario: piped().reply("RCPT", 1, "550 no").on("RCPT", 2, act),
            writes: "EHLO MAIL+RCPT+RCPT+DATA",
            events: vec![
                "Ready".into(),
                "Done[Permanent Recipient Rcpt 550, Transient Destination Rcpt -]".into(),
                closed("Rcpt"),
            ],
            detail: detail("sending RCPT TO"),
        },
        Row {
            name: "piped, at DATA",
            scenario: piped().on("DATA", 1, act),
            writes: "EHLO MAIL+RCPT+RCPT+DATA",
            events: vec!["Ready".into(), done("Data"), closed("Data")],
            detail: detail("sending DATA command"),
        },
    ]
}

#[test]
fn eof_at_every_stage() {
    let mut rows = every_stage(Act::Eof, "lost connection");
    rows.push(Row {
        name: "at QUIT: a clean end",
        scenario: plain().on("QUIT", 1, Act::Eof),
        writes: "EHLO MAIL RCPT RCPT DATA . QUIT",
        events: ev(&["Ready", "Done[ok 250, ok 250]", "Ready", "Closed"]),
        detail: String::new(),
    });
    for got in check(rows) {
        assert_eq!(got.waited, None, "no timeout in {got:?}");
    }
}

#[test]
fn timeout_at_every_stage() {
    let mut rows = every_stage(Act::Silent, "conversation timed out");
    rows.push(Row {
        name: "at QUIT",
        scenario: plain().on("QUIT", 1, Act::Silent),
        writes: "EHLO MAIL RCPT RCPT DATA . QUIT",
        events: ev(&[
            "Ready",
            "Done[ok 250, ok 250]",
            "Ready",
            "Closed(Transient Destination Quit -)",
        ]),
        detail: "conversation timed out while sending QUIT".into(),
    });
    let t = distinct_timeouts();
    let waits = [
        t.greeting,
        t.ehlo,
        t.ehlo,
        t.mail,
        t.rcpt,
        t.data,
        t.data_done,
        t.rset,
        t.mail,
        t.rcpt,
        t.rset,
        t.mail,
        t.rcpt,
        t.data,
        t.quit,
    ];
    let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    let runs = check(rows);
    assert_eq!(runs.len(), waits.len(), "one wait per row");
    for ((got, want), name) in runs.iter().zip(waits).zip(names) {
        assert_eq!(got.waited, Some(want), "time waited {name}");
    }
}

#[test]
fn malformed_reply_at_every_stage() {
    let rows = vec![
        Row {
            name: "bad greeting code",
            scenario: plain().reply("greeting", 1, "+25 hello"),
            writes: "",
            events: ev(&["Closed(Transient Destination Greeting -)"]),
            detail: "malformed reply (reply line \"+25 hello\" does not start with a \
                     three-digit code 200-599 followed by ' ', '-' or the end of the line) \
                     in the initial greeting"
                .into(),
        },
        Row {
            name: "EHLO continuation with another code",
            scenario: plain().reply("EHLO", 1, "250-mx\n251 PIPELINING"),
            writes: "EHLO",
            events: ev(&["Closed(Transient Destination Ehlo -)"]),
            detail: "malformed reply (reply line \"251 PIPELINING\" has code 251, but the \
                     reply started with 250) in reply to EHLO command"
                .into(),
        },
        Row {
            name: "HELO code 600",
            scenario: plain().reply("EHLO", 1, "502 no").reply("HELO", 1, "600 x"),
            writes: "EHLO HELO",
            events: ev(&["Closed(Transient Destination Helo -)"]),
            detail: "malformed reply (*".into(),
        },
        Row {
            name: "MAIL code 99",
            scenario: plain().reply("MAIL", 1, "99 x"),
            writes: "EHLO MAIL",
            events: ev(&[
                "Ready",
                "Done[Transient Destination Mail -, Transient Destination Mail -]",
                "Closed(Transient Destination Mail -)",
            ]),
            detail: "malformed reply (reply line \"99 x\"*".into(),
        },
        Row {
            name: "piped RCPT with no separator",
            scenario: piped().reply("RCPT", 2, "250ok"),
            writes: "EHLO MAIL+RCPT+RCPT+DATA",
            events: ev(&[
                "Ready",
                "Done[Transient Destination Rcpt -, Transient Destination Rcpt -]",
                "Closed(Transient Destination Rcpt -)",
            ]),
            detail: "malformed reply (*) in reply to RCPT TO command".into(),
        },
        Row {
            name: "DATA empty line",
            scenario: plain().reply("DATA", 1, ""),
            writes: "EHLO MAIL RCPT RCPT DATA",
            events: ev(&[
                "Ready",
                "Done[Transient Destination Data -, Transient Destination Data -]",
                "Closed(Transient Destination Data -)",
            ]),
            detail: "malformed reply (*) in reply to DATA command".into(),
        },
        Row {
            name: "end of data garbage",
            scenario: plain().reply(".", 1, "ok thanks"),
            writes: "EHLO MAIL RCPT RCPT DATA .",
            events: ev(&[
                "Ready",
                "Done[Transient Destination DataEnd -, Transient Destination DataEnd -]",
                "Closed(Transient Destination DataEnd -)",
            ]),
            detail: "malformed reply (*) in reply to end of DATA command".into(),
        },
        Row {
            name: "RSET garbage",
            scenario: plain().messages(2).reply("RSET", 1, "2 5 0"),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET",
            events: ev(&[
                "Ready",
                "Done[ok 250, ok 250]",
                "Ready",
                "Done(untried)[Transient Destination Rset -, Transient Destination Rset -]",
                "Closed(Transient Destination Rset -)",
            ]),
            detail: "malformed reply (*) in reply to RSET command".into(),
        },
        Row {
            name: "QUIT garbage",
            scenario: plain().reply("QUIT", 1, "bye"),
            writes: "EHLO MAIL RCPT RCPT DATA . QUIT",
            events: ev(&[
                "Ready",
                "Done[ok 250, ok 250]",
                "Ready",
                "Closed(Transient Destination Quit -)",
            ]),
            detail: "malformed reply (*) in reply to QUIT command".into(),
        },
    ];
    check(rows);
}

#[test]
fn oversized_replies() {
    let mut long = format!("250 {}", "x".repeat(MAX_LINE_LEN_FOR_TESTS));
    let mut d = Dialogue::new();
    d.raw(long.as_bytes());
    let outcome = d.expect_closed();
    let outcome = outcome.unwrap_or_else(|| panic!("Closed(Some) for an endless greeting line"));
    assert_eq!(
        outcome_summary(&outcome),
        "Transient Destination Greeting -",
        "endless greeting line"
    );
    assert!(
        outcome.detail.contains("is longer than 2048 octets"),
        "detail for an endless greeting line: {}",
        outcome.detail
    );
    d.expect_no_output();

    let mut d = Dialogue::handshake(false);
    d.start("s@a.test", &["r@b.test"]);
    d.expect_command("MAIL FROM:<s@a.test>");
    long = "250-x\r\n".repeat(200);
    d.raw(long.as_bytes());
    d.expect_done();
    let outcome = d
        .expect_closed()
        .unwrap_or_else(|| panic!("Closed(Some) for 200 lines"));
    assert!(
        outcome.detail.contains("more than 128 lines"),
        "detail for a 200-line MAIL reply: {}",
        outcome.detail
    );
    d.expect_no_output();
}

const MAX_LINE_LEN_FOR_TESTS: usize = crate::smtp::MAX_LINE_LEN;

#[test]
fn unsolicited_data_is_a_protocol_error() {
    // While idle: anything but a 421.
    let mut d = Dialogue::handshake(false);
    d.reply("250 still here");
    let outcome = d
        .expect_closed()
        .unwrap_or_else(|| panic!("Closed(Some) when idle"));
    assert_eq!(
        outcome_summary(&outcome),
        "Transient Destination Ehlo -",
        "250 while idle"
    );
    assert_eq!(
        outcome.detail,
        "protocol error: unexpected data from the server while waiting for the next message: \
         \"250 still here\"",
        "detail for 250 while idle"
    );

    // Glued to the last expected reply.
    let mut d = Dialogue::new();
    d.reply("220 mx");
    d.expect_command("EHLO client.test");
    d.reply("250 mx\n250 extra");
    d.expect_ready();
    let outcome = d
        .expect_closed()
        .unwrap_or_else(|| panic!("Closed(Some) for extra"));
    assert!(
        outcome.detail.contains("\"250 extra\""),
        "detail for an extra reply after EHLO: {}",
        outcome.detail
    );

    // While the body is being sent: the message is finished first.
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r1@b.test", "r2@b.test"]);
    d.take_output();
    d.reply("250 ok\n550 no\n250 ok\n354 go");
    assert!(
        d.session.wants_body(),
        "wants_body after 354: {}",
        d.transcript()
    );
    d.raw(b"5");
    let done = d.expect_done();
    let results = summaries(&done);
    assert_eq!(
        results,
        [
            "Permanent Recipient Rcpt 550",
            "Transient Destination Data -"
        ],
        "results after data during the body"
    );
    assert!(
        d.expect_closed().is_some(),
        "Closed(Some) for data during the body"
    );
    assert!(!d.session.wants_body(), "wants_body after the error");
}

/// A 421 out of turn is the server closing the session (RFC 5321 §3.8):
/// the outcome carries its reply, wherever it comes, and no QUIT follows.
#[test]
fn a_421_out_of_turn_is_the_server_closing() {
    // While idle, and glued to the EHLO reply in one read.
    for (what, greeting_and_ehlo, extra) in [
        ("idle", "250 mx", "421 4.4.2 idle too long"),
        (
            "glued",
            "250-mx\n250 PIPELINING\n421 4.4.2 idle too long",
            "",
        ),
    ] {
        let mut d = Dialogue::new();
        d.reply("220 mx");
        d.expect_command("EHLO client.test");
        d.reply(greeting_and_ehlo);
        d.expect_ready();
        if !extra.is_empty() {
            d.reply(extra);
        }
        let outcome = d
            .expect_closed()
            .unwrap_or_else(|| panic!("{what}: Closed(Some)"));
        assert_eq!(
            outcome_summary(&outcome),
            "Transient Destination Ehlo 421",
            "{what}: {outcome:?}"
        );
        let reply = outcome.reply.as_ref().map(ToString::to_string);
        assert_eq!(reply.as_deref(), Some("421 4.4.2 idle too long"), "{what}");
        d.expect_no_output();
    }

    // While the body is being sent: pending recipients get the 421.
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r1@b.test", "r2@b.test"]);
    d.take_output();
    d.reply("250 ok\n550 no\n250 ok\n354 go");
    d.reply("421 4.3.2 shutting down");
    let done = d.expect_done();
    let results = summaries(&done);
    assert_eq!(
        results,
        [
            "Permanent Recipient Rcpt 550",
            "Transient Destination Data 421"
        ],
        "results after a 421 during the body"
    );
    assert!(d.expect_closed().is_some(), "Closed(Some) after the 421");
    d.expect_no_output();
}

#[test]
fn errors_are_sticky() {
    let mut d = Dialogue::handshake(true);
    d.start("s@a.test", &["r@b.test"]);
    d.take_output();
    d.reply("250 ok\n+25 bad");
    d.expect_done();
    let first = d.expect_closed();
    assert!(first.is_some(), "Closed(Some) after \"+25 bad\"");
    let now = d.now;
    // Nothing revives it, nothing new comes out.
    d.reply("250 ok\n354 go");
    d.eof();
    d.advance(Duration::from_secs(10_000));
    d.session.quit(now);
    d.session.push_body(b"body", now);
    d.session.finish_body(now);
    d.collect();
    d.expect_no_event();
    d.expect_no_output();
    assert_eq!(
        d.session
            .start_message(envelope("s@a.test", &["r@b.test"]), now),
        Err(SessionError::Closed),
        "start_message after a protocol error"
    );
    assert_eq!(
        d.session.poll_timeout(),
        None,
        "poll_timeout after a protocol error"
    );
    assert!(d.session.is_closed(), "is_closed after a protocol error");
    assert!(!d.session.wants_body(), "wants_body after a protocol error");
}

/// Each recipient's result: `ok`, or its [`outcome_summary`].
fn summaries(done: &MessageResult) -> Vec<String> {
    done.recipients
        .iter()
        .map(|r| {
            r.result
                .as_ref()
                .map_or_else(outcome_summary, |_| "ok".into())
        })
        .collect()
}
