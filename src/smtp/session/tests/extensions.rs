//! The ESMTP extensions the session acts on, each only when advertised:
//! STARTTLS (RFC 3207) under each policy, SIZE (RFC 1870), 8BITMIME
//! (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING (RFC 3030), and PIPELINING
//! (RFC 2920) combined with them. Two recipients, r1 and r2, unless a row
//! says otherwise.

use super::*;

struct Row {
    name: &'static str,
    scenario: Scenario,
    writes: &'static str,
    events: Vec<String>,
}

fn check(rows: Vec<Row>) -> Vec<Run> {
    rows.into_iter()
        .map(|row| {
            let got = run(&row.scenario);
            assert_eq!(got.writes, row.writes, "client writes for {}", row.name);
            assert_eq!(got.events, row.events, "events for {}", row.name);
            got
        })
        .collect()
}

fn ev(events: &[&str]) -> Vec<String> {
    events.iter().map(|e| (*e).to_owned()).collect()
}

/// The detail of the outcome of recipient `index`, or "ok".
fn detail(run: &Run, index: usize) -> String {
    match run.results.get(index) {
        Some(Ok(_)) => "ok".into(),
        Some(Err(outcome)) => outcome.detail.clone(),
        None => format!("no result for recipient {index} in {run:?}"),
    }
}

const OK: &[&str] = &["Ready", "Done[ok 250, ok 250]", "Ready", "Closed"];
const TLS_OK: &[&str] = &[
    "StartTls",
    "Ready",
    "Done[ok 250, ok 250]",
    "Ready",
    "Closed",
];

// ---- STARTTLS ----------------------------------------------------------------

#[test]
fn starttls_under_each_policy() {
    let offered = || Scenario::new(false).ehlo("250-PIPELINING\n250 STARTTLS");
    // After TLS the server advertises CHUNKING only: PIPELINING from before
    // the handshake must be forgotten (RFC 3207 §4.2).
    let changes = || {
        Scenario::new(false)
            .reply("EHLO", 1, "250-mx.test\n250-PIPELINING\n250 STARTTLS")
            .reply("EHLO", 2, "250-mx.test\n250 8BITMIME")
    };
    let runs = check(vec![
        Row {
            name: "opportunistic, offered: STARTTLS, then EHLO again",
            scenario: offered(),
            writes: "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT+DATA . QUIT",
            events: ev(TLS_OK),
        },
        Row {
            name: "only the extensions after TLS count",
            scenario: changes(),
            writes: "EHLO STARTTLS <tls> EHLO MAIL RCPT RCPT DATA . QUIT",
            events: ev(TLS_OK),
        },
        Row {
            name: "opportunistic, not offered: plaintext",
            scenario: Scenario::new(true),
            writes: "EHLO MAIL+RCPT+RCPT+DATA . QUIT",
            events: ev(OK),
        },
        Row {
            name: "disabled, offered: plaintext",
            scenario: offered().tls(TlsMode::Disabled),
            writes: "EHLO MAIL+RCPT+RCPT+DATA . QUIT",
            events: ev(OK),
        },
        Row {
            name: "required, offered",
            scenario: offered().tls(TlsMode::Required),
            writes: "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT+DATA . QUIT",
            events: ev(TLS_OK),
        },
        Row {
            name: "required, not offered: a transient failure of the host",
            scenario: Scenario::new(true).tls(TlsMode::Required),
            writes: "EHLO QUIT",
            events: ev(&["Closed(Transient Destination Ehlo -)"]),
        },
        Row {
            name: "required, HELO only: a transient failure of the host",
            scenario: Scenario::new(false)
                .tls(TlsMode::Required)
                .reply("EHLO", 1, "500 what"),
            writes: "EHLO HELO QUIT",
            events: ev(&["Closed(Transient Destination Helo -)"]),
        },
        Row {
            name: "opportunistic, STARTTLS refused: go on in plaintext",
            scenario: offered().reply("STARTTLS", 1, "454 4.7.0 TLS not available"),
            writes: "EHLO STARTTLS MAIL+RCPT+RCPT+DATA . QUIT",
            events: ev(OK),
        },
        Row {
            name: "required, STARTTLS refused with 5xx: still transient",
            scenario: offered()
                .tls(TlsMode::Required)
                .reply("STARTTLS", 1, "502 5.5.1 no"),
            writes: "EHLO STARTTLS QUIT",
            events: ev(&["Closed(Transient Destination StartTls 502)"]),
        },
        Row {
            name: "STARTTLS 421",
            scenario: offered().reply("STARTTLS", 1, "421 4.3.2 bye"),
            writes: "EHLO STARTTLS",
            events: ev(&["Closed(Transient Destination StartTls 421)"]),
        },
        Row {
            name: "handshake failed: closed without QUIT",
            scenario: offered().handshake(Err("invalid peer certificate: UnknownIssuer")),
            writes: "EHLO STARTTLS <tls>",
            events: ev(&["StartTls", "Closed(Transient Destination StartTls -)"]),
        },
        Row {
            name: "EHLO after TLS refused: HELO, over TLS",
            scenario: offered()
                .tls(TlsMode::Required)
                .reply("EHLO", 2, "502 5.5.1 no EHLO"),
            writes: "EHLO STARTTLS <tls> EHLO HELO MAIL RCPT RCPT DATA . QUIT",
            events: ev(TLS_OK),
        },
        Row {
            name: "STARTTLS offered again after TLS: not sent twice",
            scenario: offered().reply("EHLO", 2, "250-mx.test\n250 STARTTLS"),
            writes: "EHLO STARTTLS <tls> EHLO MAIL RCPT RCPT DATA . QUIT",
            events: ev(TLS_OK),
        },
    ]);
    assert_eq!(
        runs[0].tls,
        Some(tls_info()),
        "TLS info after the handshake"
    );
    assert_eq!(runs[2].tls, None, "no TLS info in plaintext");
    let details = [
        (
            5,
            "does not offer STARTTLS, but TLS is required for this destination",
        ),
        (8, "said: 502 5.5.1 no (in reply to STARTTLS command)"),
        (
            10,
            "TLS handshake failed: invalid peer certificate: UnknownIssuer",
        ),
    ];
    for (index, want) in details {
        let got = runs[index].closed.as_ref().map(|o| o.detail.as_str());
        assert_eq!(got, Some(want), "outcome detail of row {index}");
    }
}

#[test]
fn starttls_exact_dialogue() {
    let mut d = Dialogue::new();
    d.reply("220 mx.test ESMTP");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250-PIPELINING\n250-SIZE 100\n250 STARTTLS");
    d.expect_command("STARTTLS");
    d.expect_no_event();
    assert_eq!(d.session.describe(), "sending STARTTLS", "state");
    d.reply("220 2.0.0 go ahead");
    d.expect_event(&Event::StartTls);
    d.expect_no_output();
    assert_eq!(
        d.session.describe(),
        "performing the TLS handshake",
        "state after 220"
    );
    assert_eq!(
        d.session.poll_timeout(),
        Some(d.now + Timeouts::default().ehlo),
        "the handshake has the EHLO deadline"
    );
    d.session.tls_established(tls_info(), d.now);
    assert!(
        d.session.extensions().is_none(),
        "extensions from before TLS are forgotten"
    );
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250 CHUNKING");
    d.expect_ready();
    let ext = d.session.extensions().cloned().unwrap_or_default();
    assert!(
        ext.chunking && !ext.pipelining && ext.size.is_none(),
        "only the second EHLO counts: {ext:?}"
    );
    assert_eq!(d.session.tls(), Some(&tls_info()), "TLS info");
    // Reports out of turn are ignored.
    d.session.tls_established(tls_info(), d.now);
    d.session.tls_failed("late", d.now);
    d.expect_no_output();
    d.expect_no_event();
}

#[test]
fn plaintext_after_the_220_to_starttls_is_an_injection() {
    // In the same read as the 220: no StartTls event at all.
    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250 STARTTLS");
    d.expect_command("STARTTLS");
    d.raw(b"220 go ahead\r\n250-injected\r\n");
    let outcome = d.expect_closed();
    assert_eq!(
        outcome.map(|o| o.detail),
        Some(
            "protocol error: plaintext data after the 220 reply to STARTTLS (possible command \
             injection): \"250-injected\""
                .into()
        ),
        "outcome for injected bytes"
    );
    d.expect_no_event();
    d.expect_no_output();

    // In a later read, before the handshake is reported.
    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250 STARTTLS");
    d.expect_command("STARTTLS");
    d.reply("220 go ahead");
    d.expect_event(&Event::StartTls);
    d.raw(b"2");
    let outcome = d.expect_closed();
    let detail = outcome.map(|o| o.detail).unwrap_or_default();
    assert!(
        detail.starts_with("protocol error: plaintext data after the 220 reply to STARTTLS"),
        "outcome for a late byte: {detail}"
    );
    // The session is closed: the handshake report changes nothing.
    d.session.tls_established(tls_info(), d.now);
    d.expect_no_output();
    d.expect_no_event();
}

#[test]
fn handshake_timeout_and_eof() {
    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250 STARTTLS");
    d.expect_command("STARTTLS");
    d.reply("220 go ahead");
    d.expect_event(&Event::StartTls);
    d.advance(Timeouts::default().ehlo);
    let outcome = d.expect_closed();
    assert_eq!(
        outcome.map(|o| o.detail),
        Some("conversation timed out while performing the TLS handshake".into()),
        "handshake timeout"
    );

    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250 STARTTLS");
    d.expect_command("STARTTLS");
    d.eof();
    let outcome = d.expect_closed();
    assert_eq!(
        outcome.map(|o| o.detail),
        Some("lost connection while sending STARTTLS".into()),
        "EOF before the 220"
    );
}

// ---- SIZE, 8BITMIME, SMTPUTF8 --------------------------------------------------

#[test]
fn mail_parameters() {
    let cases: [(&str, Scenario, &str); 9] = [
        (
            "SIZE advertised: declared",
            Scenario::new(true).ehlo("250 SIZE 1000").sized(999, false),
            "MAIL FROM:<s@a.test> SIZE=999",
        ),
        (
            "SIZE 0 (no limit): declared",
            Scenario::new(true)
                .ehlo("250 SIZE 0")
                .sized(50_000_000, false),
            "MAIL FROM:<s@a.test> SIZE=50000000",
        ),
        (
            "SIZE exactly at the limit",
            Scenario::new(true).ehlo("250 SIZE 1000").sized(1000, false),
            "MAIL FROM:<s@a.test> SIZE=1000",
        ),
        (
            "SIZE not advertised: not declared",
            Scenario::new(true).ehlo("250 8BITMIME").sized(999, false),
            "MAIL FROM:<s@a.test>",
        ),
        (
            "size unknown: not declared",
            Scenario::new(true).ehlo("250 SIZE 1000"),
            "MAIL FROM:<s@a.test>",
        ),
        (
            "8-bit message, 8BITMIME advertised",
            Scenario::new(true).ehlo("250 8BITMIME").sized(10, true),
            "MAIL FROM:<s@a.test> BODY=8BITMIME",
        ),
        (
            "8-bit message, no 8BITMIME: sent as is",
            Scenario::new(true).ehlo("250 SIZE 100").sized(10, true),
            "MAIL FROM:<s@a.test> SIZE=10",
        ),
        (
            "7-bit message, 8BITMIME advertised: no BODY",
            Scenario::new(true).ehlo("250 8BITMIME").sized(10, false),
            "MAIL FROM:<s@a.test>",
        ),
        (
            "internationalised recipient, SMTPUTF8 advertised",
            Scenario::new(true)
                .ehlo("250-SIZE 100\n250-8BITMIME\n250 SMTPUTF8")
                .sized(10, true)
                .recipients(&["jörg@b.test", "r2@b.test"]),
            "MAIL FROM:<s@a.test> SIZE=10 BODY=8BITMIME SMTPUTF8",
        ),
    ];
    for (name, scenario, want) in cases {
        let got = run(&scenario);
        assert_eq!(got.mails, [want], "MAIL for {name}");
        assert_eq!(got.events, ev(OK), "events for {name}");
        assert_eq!(
            got.bodies,
            [BODY.to_vec()],
            "body for {name} (sent as is, dot-stuffing undone)"
        );
    }
}

#[test]
fn refused_before_mail_by_the_servers_extensions() {
    let over = Scenario::new(true).ehlo("250 SIZE 1000").sized(1001, false);
    let utf8_recipient = Scenario::new(true)
        .ehlo("250 8BITMIME")
        .recipients(&["jörg@b.test", "r2@b.test"]);
    let runs = check(vec![
        Row {
            name: "over the SIZE limit: permanent, nothing sent",
            scenario: over.clone(),
            writes: "EHLO QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Message Mail -, Permanent Message Mail -]",
                "Ready",
                "Closed",
            ]),
        },
        Row {
            name: "internationalised address, no SMTPUTF8: permanent, nothing sent",
            scenario: utf8_recipient,
            writes: "EHLO QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Message Mail -, Permanent Message Mail -]",
                "Ready",
                "Closed",
            ]),
        },
        Row {
            name: "the next message on the connection is not held up",
            scenario: over.messages(2),
            writes: "EHLO QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Message Mail -, Permanent Message Mail -]",
                "Ready",
                "Done[Permanent Message Mail -, Permanent Message Mail -]",
                "Ready",
                "Closed",
            ]),
        },
    ]);
    assert_eq!(
        detail(&runs[0], 0),
        "accepts messages of at most 1000 octets (SIZE), but this message has 1001 (RFC 1870)",
        "SIZE detail"
    );
    assert_eq!(
        detail(&runs[1], 1),
        "does not offer SMTPUTF8, which the internationalised address \"jörg@b.test\" needs \
         (RFC 6531)",
        "SMTPUTF8 detail"
    );
    let status = |run: &Run, index: usize| match run.results.get(index) {
        Some(Err(outcome)) => outcome.status.map(|s| s.to_string()),
        _ => None,
    };
    assert_eq!(
        status(&runs[0], 0).as_deref(),
        Some("5.3.4"),
        "SIZE status (RFC 3463)"
    );
    assert_eq!(
        status(&runs[1], 1).as_deref(),
        Some("5.6.7"),
        "SMTPUTF8 status (RFC 6531)"
    );

    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("500 what");
    d.expect_command("HELO client.test");
    d.reply("250 mx.test");
    d.expect_ready();
    d.start("ünï@a.test", &["r@b.test"]);
    let done = d.expect_done();
    let got = done.recipients[0].result.clone().err().map(|o| o.detail);
    assert_eq!(
        got,
        Some(
            "does not offer SMTPUTF8, which the internationalised address \"ünï@a.test\" needs \
             (RFC 6531)"
                .into()
        ),
        "internationalised sender after HELO"
    );
    d.expect_ready();
    d.expect_no_output();
}

// ---- CHUNKING ------------------------------------------------------------------

/// A body with dots at line starts and bare line ends.
const RAW: &[u8] = b"Subject: t\n\n.leading dot\r\n..two\rlast";
/// `RAW` as BDAT sends it: line ends normalised, dots untouched, closed.
const RAW_BDAT: &[u8] = b"Subject: t\r\n\r\n.leading dot\r\n..two\r\nlast\r\n";

#[test]
fn chunking() {
    let chunked = |p: bool| {
        Scenario::new(p)
            .ehlo("250-PIPELINING\n250 CHUNKING")
            .body(RAW)
    };
    let plain_chunked = || Scenario::new(false).ehlo("250 CHUNKING").body(RAW);
    let runs = check(vec![
        Row {
            name: "pipelined: MAIL and RCPTs together, then BDAT LAST",
            scenario: chunked(true),
            writes: "EHLO MAIL+RCPT+RCPT BDAT QUIT",
            events: ev(OK),
        },
        Row {
            name: "without PIPELINING: one command at a time",
            scenario: plain_chunked(),
            writes: "EHLO MAIL RCPT RCPT BDAT QUIT",
            events: ev(OK),
        },
        Row {
            name: "some RCPTs refused: the others get the chunk",
            scenario: chunked(true).reply("RCPT", 1, "550 5.1.1 no such user"),
            writes: "EHLO MAIL+RCPT+RCPT BDAT QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Recipient Rcpt 550, ok 250]",
                "Ready",
                "Closed",
            ]),
        },
        Row {
            name: "every RCPT refused: no BDAT at all",
            scenario: chunked(true)
                .reply("RCPT", 1, "550 no")
                .reply("RCPT", 2, "450 later"),
            writes: "EHLO MAIL+RCPT+RCPT QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Recipient Rcpt 550, Transient Recipient Rcpt 450]",
                "Ready",
                "Closed",
            ]),
        },
        Row {
            name: "BDAT LAST refused",
            scenario: chunked(true).reply("BDAT", 1, "552 5.3.4 too big"),
            writes: "EHLO MAIL+RCPT+RCPT BDAT QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Message DataEnd 552, Permanent Message DataEnd 552]",
                "Ready",
                "Closed",
            ]),
        },
        Row {
            name: "BDAT LAST 421",
            scenario: chunked(true).reply("BDAT", 1, "421 4.3.2 bye"),
            writes: "EHLO MAIL+RCPT+RCPT BDAT",
            events: ev(&[
                "Ready",
                "Done[Transient Destination DataEnd 421, Transient Destination DataEnd 421]",
                "Closed(Transient Destination DataEnd 421)",
            ]),
        },
        Row {
            name: "second message: RSET first, then BDAT again",
            scenario: chunked(true).messages(2),
            writes: "EHLO MAIL+RCPT+RCPT BDAT RSET+MAIL+RCPT+RCPT BDAT QUIT",
            events: ev(&[
                "Ready",
                "Done[ok 250, ok 250]",
                "Ready",
                "Done[ok 250, ok 250]",
                "Ready",
                "Closed",
            ]),
        },
    ]);
    // How many bodies the server received, row by row: none when no RCPT
    // was accepted, two for two messages.
    let counts = [1, 1, 1, 0, 1, 1, 2];
    for (index, (got, count)) in runs.iter().zip(counts).enumerate() {
        assert_eq!(
            got.bodies,
            vec![RAW_BDAT.to_vec(); count],
            "bodies of chunking row {index}"
        );
    }
}

/// A body of `lines` lines of 100 octets: several BDAT chunks.
fn big_body(lines: usize) -> &'static [u8] {
    let mut body = Vec::with_capacity(lines * 100);
    for n in 0..lines {
        body.extend_from_slice(format!(".{n:097}\n").as_bytes());
    }
    Box::leak(body.into_boxed_slice())
}

/// `body` with every LF made CRLF (the big bodies have no CR).
fn crlf(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() * 102 / 100);
    for &b in body {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

#[test]
fn chunking_a_large_body() {
    // 1500 lines of 101 octets on the wire: 151,500 octets, three chunks.
    let body = big_body(1500);
    let piped = Scenario::new(true)
        .ehlo("250-PIPELINING\n250 CHUNKING")
        .body(body);
    let got = run(&piped);
    assert_eq!(got.events, ev(OK), "events, large body, pipelined");
    assert_eq!(got.bodies, [crlf(body)], "large body, pipelined");
    assert!(
        got.writes.matches("BDAT").count() >= 2,
        "several chunks: {}",
        got.writes
    );

    // Without PIPELINING each chunk waits for its reply: the test driver
    // pushes the whole body at once, so the session takes it in one chunk.
    let plain = Scenario::new(false).ehlo("250 CHUNKING").body(body);
    let got = run(&plain);
    assert_eq!(got.events, ev(OK), "events, large body, one at a time");
    assert_eq!(got.bodies, [crlf(body)], "large body, one at a time");
}

#[test]
fn chunk_refused_midway() {
    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250-PIPELINING\n250 CHUNKING");
    d.expect_ready();
    d.start("s@a.test", &["r1@b.test", "r2@b.test"]);
    d.expect_output("MAIL FROM:<s@a.test>\r\nRCPT TO:<r1@b.test>\r\nRCPT TO:<r2@b.test>\r\n");
    d.reply("250 ok\n250 ok");
    assert!(
        !d.session.wants_body(),
        "no body before the last RCPT reply"
    );
    d.reply("550 5.1.1 no such user");
    assert!(
        d.session.wants_body(),
        "body once r1 is accepted (r2 is not)"
    );
    d.expect_no_output();
    let part = vec![b'x'; BDAT_CHUNK];
    d.session.push_body(&part, d.now);
    let first = d.take_output();
    assert!(
        first.starts_with(&format!("BDAT {BDAT_CHUNK}\r\nxxx")),
        "first chunk: {:?}",
        &first[..20]
    );
    assert!(
        d.session.wants_body(),
        "pipelined: more body before the reply"
    );
    d.session.push_body(&part, d.now);
    let _second = d.take_output();
    d.reply("552 5.3.4 message too big");
    assert!(
        !d.session.wants_body(),
        "no more body after a refused chunk"
    );
    d.session.push_body(b"more", d.now);
    d.session.finish_body(d.now);
    d.expect_no_output();
    d.expect_no_event();
    // The second chunk's reply drains the pipeline; the message is done.
    d.reply("503 5.5.1 no transaction");
    let done = d.expect_done();
    let got: Vec<String> = done
        .recipients
        .iter()
        .map(|r| match &r.result {
            Ok(_) => "ok".into(),
            Err(outcome) => outcome.to_string(),
        })
        .collect();
    assert_eq!(
        got,
        [
            "said: 552 5.3.4 message too big (in reply to BDAT command)",
            "said: 550 5.1.1 no such user (in reply to RCPT TO command)",
        ],
        "results after a refused chunk"
    );
    d.expect_ready();
    // The next transaction starts with RSET.
    d.start("s@a.test", &["r3@b.test"]);
    d.expect_output("RSET\r\nMAIL FROM:<s@a.test>\r\nRCPT TO:<r3@b.test>\r\n");
}

#[test]
fn chunks_wait_for_replies_without_pipelining() {
    let mut d = Dialogue::new();
    d.reply("220 mx.test");
    d.expect_command("EHLO client.test");
    d.reply("250-mx.test\n250 CHUNKING");
    d.expect_ready();
    d.start("s@a.test", &["r1@b.test"]);
    d.expect_command("MAIL FROM:<s@a.test>");
    d.reply("250 ok");
    d.expect_command("RCPT TO:<r1@b.test>");
    d.reply("250 ok");
    assert!(d.session.wants_body(), "body after RCPT");
    d.session.push_body(&vec![b'.'; BDAT_CHUNK], d.now);
    let first = d.take_output();
    assert_eq!(
        first.len(),
        format!("BDAT {BDAT_CHUNK}\r\n").len() + BDAT_CHUNK,
        "one chunk, dots not stuffed"
    );
    assert!(!d.session.wants_body(), "waiting for the chunk's reply");
    d.advance(Timeouts::default().data_block / 2);
    d.reply("250 2.0.0 chunk ok");
    assert!(d.session.wants_body(), "more body after the reply");
    d.session.push_body(b"end", d.now);
    d.session.finish_body(d.now);
    d.expect_output("BDAT 5 LAST\r\nend\r\n");
    d.reply("250 2.0.0 queued");
    let done = d.expect_done();
    assert!(done.all_delivered(), "delivered: {done:?}");
    d.expect_ready();
}

// ---- 421 at every step, with every extension in use ----------------------------

#[test]
fn service_closing_at_every_step() {
    let full = || {
        Scenario::new(true)
            .ehlo("250-PIPELINING\n250-SIZE 1000\n250-CHUNKING\n250 STARTTLS")
            .sized(100, false)
            .messages(2)
    };
    let closed = |stage: &str| format!("Closed(Transient Destination {stage} 421)");
    let done = |stage: &str| {
        format!("Done[Transient Destination {stage} 421, Transient Destination {stage} 421]")
    };
    let cases: [(&str, &str, usize, &str, Vec<String>); 9] = [
        ("greeting", "greeting", 1, "", vec![closed("Greeting")]),
        ("EHLO", "EHLO", 1, "EHLO", vec![closed("Ehlo")]),
        (
            "STARTTLS",
            "STARTTLS",
            1,
            "EHLO STARTTLS",
            vec![closed("StartTls")],
        ),
        (
            "EHLO after TLS",
            "EHLO",
            2,
            "EHLO STARTTLS <tls> EHLO",
            vec!["StartTls".into(), closed("Ehlo")],
        ),
        (
            "MAIL",
            "MAIL",
            1,
            "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT",
            vec![
                "StartTls".into(),
                "Ready".into(),
                done("Mail"),
                closed("Mail"),
            ],
        ),
        (
            "BDAT",
            "BDAT",
            1,
            "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT BDAT",
            vec![
                "StartTls".into(),
                "Ready".into(),
                done("DataEnd"),
                closed("DataEnd"),
            ],
        ),
        (
            "RSET",
            "RSET",
            1,
            "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT BDAT RSET+MAIL+RCPT+RCPT",
            vec![
                "StartTls".into(),
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                untried(done("Rset")),
                closed("Rset"),
            ],
        ),
        (
            // A limit of messages per connection: the server never
            // looked at the message.
            "the second MAIL",
            "MAIL",
            2,
            "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT BDAT RSET+MAIL+RCPT+RCPT",
            vec![
                "StartTls".into(),
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                untried(done("Mail")),
                closed("Mail"),
            ],
        ),
        (
            // MAIL was accepted: the message was tried.
            "the second message's first RCPT",
            "RCPT",
            3,
            "EHLO STARTTLS <tls> EHLO MAIL+RCPT+RCPT BDAT RSET+MAIL+RCPT+RCPT",
            vec![
                "StartTls".into(),
                "Ready".into(),
                "Done[ok 250, ok 250]".into(),
                "Ready".into(),
                done("Rcpt"),
                closed("Rcpt"),
            ],
        ),
    ];
    for (name, key, nth, writes, events) in cases {
        let got = run(&full().reply(key, nth, "421 4.3.2 closing"));
        assert_eq!(got.writes, writes, "client writes for 421 at {name}");
        assert_eq!(got.events, events, "events for 421 at {name}");
    }
}
