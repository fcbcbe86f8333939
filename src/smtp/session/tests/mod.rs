//! Session tests, without sockets or a real clock. Two harnesses:
//!
//! * [`Dialogue`] scripts one conversation step by step:
//!   `expect_command("MAIL FROM:<a@b>")`, `reply("250 ok")`, `advance(300s)`.
//! * [`run`] plays a [`Scenario`] against a fake server that answers every
//!   command with a default reply unless told otherwise, and sums up what
//!   was written and what events came out, for table-driven tests.

mod auth;
mod dialogue;
mod extensions;
mod failures;
mod params;
mod stages;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::*;

/// The one real instant the tests use: the fake clock's origin. Every other
/// instant is this plus a `Duration`, and nothing waits on the wall clock.
#[allow(clippy::disallowed_methods)] // the tests need one real Instant to start from
fn base() -> Instant {
    Instant::now()
}

fn config() -> SessionConfig {
    SessionConfig {
        helo_name: "client.test".into(),
        timeouts: Timeouts::default(),
        tls: TlsMode::Opportunistic,
        implicit_tls: false,
        own_names: Vec::new(),
        auth: None,
    }
}

/// Timeouts that differ from each other, so a test sees which one applied.
fn distinct_timeouts() -> Timeouts {
    let secs = Duration::from_secs;
    Timeouts {
        greeting: secs(11),
        ehlo: secs(12),
        mail: secs(13),
        rcpt: secs(14),
        data: secs(15),
        data_block: secs(16),
        data_done: secs(17),
        rset: secs(18),
        quit: secs(19),
    }
}

/// `"250-a\n250 b"` as the server sends it: CRLF after every line.
fn wire(text: &str) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn envelope(sender: &str, recipients: &[&str]) -> Envelope {
    Envelope::new(sender, recipients.iter().map(|r| (*r).to_owned()).collect())
}

/// A compact, comparable form of an outcome: `"Transient Recipient Rcpt 450"`.
fn outcome_summary(outcome: &Outcome) -> String {
    let code = outcome
        .reply
        .as_ref()
        .map_or("-".to_owned(), |r| r.code.to_string());
    format!(
        "{:?} {:?} {:?} {code}",
        outcome.class, outcome.scope, outcome.stage
    )
}

fn event_summary(event: &Event) -> String {
    match event {
        Event::Ready => "Ready".into(),
        Event::StartTls => "StartTls".into(),
        Event::MessageDone(result) => {
            let each: Vec<String> = result
                .recipients
                .iter()
                .map(|r| match &r.result {
                    Ok(reply) => format!("ok {}", reply.code),
                    Err(outcome) => outcome_summary(outcome),
                })
                .collect();
            let untried = if result.untried { "(untried)" } else { "" };
            format!("Done{untried}[{}]", each.join(", "))
        }
        Event::Closed(None) => "Closed".into(),
        Event::Closed(Some(outcome)) => format!("Closed({})", outcome_summary(outcome)),
    }
}

/// `done` as reported for a message the server never judged: its reused
/// connection ended before any reply but RSET's.
fn untried(done: String) -> String {
    done.replacen("Done[", "Done(untried)[", 1)
}

// ---- scripted dialogues ----------------------------------------------------

/// One conversation driven by hand, with a fake clock. Every assertion names
/// the transcript so far.
struct Dialogue {
    session: Session,
    now: Instant,
    events: VecDeque<Event>,
    log: Vec<String>,
}

impl Dialogue {
    fn new() -> Dialogue {
        Dialogue::with_config(config())
    }

    fn with_config(config: SessionConfig) -> Dialogue {
        let now = base();
        Dialogue {
            session: Session::new(config, now),
            now,
            events: VecDeque::new(),
            log: Vec::new(),
        }
    }

    /// Greeting and EHLO done, `Ready` consumed.
    fn handshake(pipelining: bool) -> Dialogue {
        let mut d = Dialogue::new();
        d.reply("220 mx.test ESMTP");
        d.expect_command("EHLO client.test");
        if pipelining {
            d.reply("250-mx.test\n250-PIPELINING\n250 8BITMIME");
        } else {
            d.reply("250-mx.test\n250 8BITMIME");
        }
        d.expect_ready();
        d
    }

    fn transcript(&self) -> String {
        self.log.join(" | ")
    }

    fn collect(&mut self) {
        while let Some(event) = self.session.poll_event() {
            self.log.push(format!("E: {}", event_summary(&event)));
            self.events.push_back(event);
        }
    }

    /// The server sends `text` (lines separated by `\n`, CRLF added).
    fn reply(&mut self, text: &str) {
        self.raw(wire(text).as_bytes());
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.log
            .push(format!("S: {:?}", String::from_utf8_lossy(bytes)));
        self.session.handle_input(bytes, self.now);
        self.collect();
    }

    fn eof(&mut self) {
        self.log.push("S: <eof>".into());
        self.session.handle_eof(self.now);
        self.collect();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.log.push(format!("T: +{by:?}"));
        self.session.handle_timeout(self.now);
        self.collect();
    }

    fn start(&mut self, sender: &str, recipients: &[&str]) {
        self.log.push(format!("start {sender} -> {recipients:?}"));
        let result = self
            .session
            .start_message(envelope(sender, recipients), self.now);
        assert_eq!(result, Ok(()), "start_message after {}", self.transcript());
        self.collect();
    }

    fn take_output(&mut self) -> String {
        let out = String::from_utf8_lossy(self.session.pending_output()).into_owned();
        let n = self.session.pending_output().len();
        self.session.consume_output(n);
        self.log.push(format!("C: {out:?}"));
        out
    }

    /// Exactly this output is pending (a whole pipelined group, say).
    fn expect_output(&mut self, want: &str) {
        let before = self.transcript();
        let got = self.take_output();
        assert_eq!(got, want, "client output after {before}");
    }

    /// Exactly one command line is pending.
    fn expect_command(&mut self, line: &str) {
        self.expect_output(&format!("{line}\r\n"));
    }

    fn expect_no_output(&mut self) {
        let pending = String::from_utf8_lossy(self.session.pending_output()).into_owned();
        assert_eq!(pending, "", "no client output after {}", self.transcript());
    }

    fn next_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn expect_event(&mut self, want: &Event) {
        let got = self.next_event();
        assert_eq!(
            got.as_ref(),
            Some(want),
            "next event after {}",
            self.transcript()
        );
    }

    fn expect_ready(&mut self) {
        self.expect_event(&Event::Ready);
    }

    fn expect_no_event(&mut self) {
        let got = self.next_event();
        assert_eq!(got, None, "no event after {}", self.transcript());
    }

    fn expect_done(&mut self) -> MessageResult {
        match self.next_event() {
            Some(Event::MessageDone(result)) => result,
            other => panic!(
                "want MessageDone, got {other:?} after {}",
                self.transcript()
            ),
        }
    }

    fn expect_closed(&mut self) -> Option<Outcome> {
        match self.next_event() {
            Some(Event::Closed(outcome)) => {
                assert!(
                    self.session.is_closed(),
                    "is_closed after {}",
                    self.transcript()
                );
                outcome
            }
            other => panic!("want Closed, got {other:?} after {}", self.transcript()),
        }
    }
}

// ---- the fake server ---------------------------------------------------------

/// What the fake server does at one command.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Send this reply (lines separated by `\n`).
    Reply(&'static str),
    /// Close the connection instead of replying.
    Eof,
    /// Never answer again.
    Silent,
}

/// A conversation to play: which commands get which replies.
#[derive(Debug, Clone)]
struct Scenario {
    pipelining: bool,
    messages: usize,
    recipients: Vec<&'static str>,
    /// The session's STARTTLS policy.
    tls: TlsMode,
    /// What the driver reports after `StartTls`: `Err(detail)` fails it.
    handshake: Result<(), &'static str>,
    /// Implicit TLS: the handshake before the greeting.
    implicit_tls: bool,
    /// Credentials for AUTH.
    auth: Option<AuthConfig>,
    /// The envelope's `size` and `eight_bit`.
    size: Option<u64>,
    eight_bit: bool,
    body: &'static [u8],
    /// (command key, nth occurrence from 1, act); the last one given for a
    /// command and occurrence counts. Keys: "greeting", "EHLO",
    /// "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "." (end of data),
    /// "BDAT" (each chunk, answered once its octets are in), "RSET", "QUIT",
    /// "?" (any other line: the responses of an AUTH exchange, `*`).
    acts: Vec<(&'static str, usize, Act)>,
}

impl Scenario {
    fn new(pipelining: bool) -> Scenario {
        Scenario {
            pipelining,
            messages: 1,
            recipients: vec!["r1@b.test", "r2@b.test"],
            tls: TlsMode::Opportunistic,
            handshake: Ok(()),
            implicit_tls: false,
            auth: None,
            size: None,
            eight_bit: false,
            body: BODY,
            acts: Vec::new(),
        }
    }

    fn on(mut self, key: &'static str, nth: usize, act: Act) -> Scenario {
        self.acts.push((key, nth, act));
        self
    }

    fn reply(self, key: &'static str, nth: usize, text: &'static str) -> Scenario {
        self.on(key, nth, Act::Reply(text))
    }

    fn messages(mut self, messages: usize) -> Scenario {
        self.messages = messages;
        self
    }

    /// The EHLO reply (every EHLO) advertises these keywords.
    fn ehlo(self, keywords: &'static str) -> Scenario {
        let text: &'static str = Box::leak(format!("250-mx.test\n{keywords}").into_boxed_str());
        let mut scenario = self;
        for nth in 1..=4 {
            scenario = scenario.reply("EHLO", nth, text);
        }
        scenario
    }

    fn tls(mut self, mode: TlsMode) -> Scenario {
        self.tls = mode;
        self
    }

    fn handshake(mut self, result: Result<(), &'static str>) -> Scenario {
        self.handshake = result;
        self
    }

    fn implicit_tls(mut self) -> Scenario {
        self.implicit_tls = true;
        self
    }

    fn auth(mut self, auth: AuthConfig) -> Scenario {
        self.auth = Some(auth);
        self
    }

    fn sized(mut self, size: u64, eight_bit: bool) -> Scenario {
        self.size = Some(size);
        self.eight_bit = eight_bit;
        self
    }

    fn recipients(mut self, recipients: &[&'static str]) -> Scenario {
        self.recipients = recipients.to_vec();
        self
    }

    fn body(mut self, body: &'static [u8]) -> Scenario {
        self.body = body;
        self
    }
}

/// What the tests' driver reports after a good handshake.
fn tls_info() -> TlsInfo {
    TlsInfo {
        protocol: "TLSv1.3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        verified: false,
    }
}

struct Server {
    scenario: Scenario,
    seen: HashMap<&'static str, usize>,
    line: Vec<u8>,
    in_data: bool,
    body: Vec<u8>,
    bodies: Vec<Vec<u8>>,
    /// Per client write: the commands in it, joined by '+'.
    writes: Vec<String>,
    mute: bool,
    /// Octets of the current BDAT chunk still to come, and whether it is
    /// the LAST one.
    chunk_left: usize,
    chunk_last: bool,
    /// The MAIL commands as received, without CRLF.
    mails: Vec<String>,
}

impl Server {
    fn new(scenario: Scenario) -> Server {
        Server {
            scenario,
            seen: HashMap::new(),
            line: Vec::new(),
            in_data: false,
            body: Vec::new(),
            bodies: Vec::new(),
            writes: Vec::new(),
            mute: false,
            chunk_left: 0,
            chunk_last: false,
            mails: Vec::new(),
        }
    }

    fn act(&mut self, key: &'static str) -> Act {
        let nth = self.seen.entry(key).or_insert(0);
        *nth += 1;
        let nth = *nth;
        let scripted = self
            .scenario
            .acts
            .iter()
            .rfind(|(k, n, _)| *k == key && *n == nth);
        if let Some((_, _, act)) = scripted {
            return *act;
        }
        Act::Reply(match key {
            "greeting" => "220 mx.test ESMTP",
            "EHLO" if self.scenario.pipelining => "250-mx.test\n250-PIPELINING\n250 8BITMIME",
            "EHLO" => "250-mx.test\n250 8BITMIME",
            "HELO" => "250 mx.test",
            "STARTTLS" => "220 2.0.0 ready to start TLS",
            "BDAT" => "250 2.0.0 chunk ok",
            "MAIL" | "RCPT" | "RSET" => "250 2.1.0 ok",
            "DATA" => "354 go ahead",
            "." => "250 2.0.0 queued",
            "QUIT" => "221 2.0.0 bye",
            _ => "500 5.5.1 what",
        })
    }

    /// Applies `act`; returns true when the server closed.
    fn perform(&mut self, act: Act, out: &mut Vec<u8>) -> bool {
        match act {
            Act::Reply(text) => {
                out.extend_from_slice(wire(text).as_bytes());
                if text.starts_with("354") {
                    self.in_data = true;
                }
                // A server that says 421 hangs up.
                if text.starts_with("421") {
                    self.mute = true;
                }
                false
            }
            Act::Eof => {
                self.mute = true;
                true
            }
            Act::Silent => {
                self.mute = true;
                false
            }
        }
    }

    fn greet(&mut self) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let act = self.act("greeting");
        let eof = self.perform(act, &mut out);
        (out, eof)
    }

    /// One client write in; the replies and whether the server closed out.
    fn receive(&mut self, bytes: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let mut commands = Vec::new();
        let mut eof = false;
        for &b in bytes {
            if self.chunk_left > 0 {
                self.body.push(b);
                self.chunk_left -= 1;
                if self.chunk_left > 0 {
                    continue;
                }
                if self.chunk_last {
                    self.bodies.push(std::mem::take(&mut self.body));
                }
                if !self.mute {
                    let act = self.act("BDAT");
                    eof |= self.perform(act, &mut out);
                }
                continue;
            }
            self.line.push(b);
            if b != b'\n' {
                continue;
            }
            let line = std::mem::take(&mut self.line);
            if self.in_data {
                if line == b".\r\n" {
                    self.in_data = false;
                    self.bodies.push(std::mem::take(&mut self.body));
                    commands.push(".");
                } else {
                    let line = line.strip_prefix(b".").unwrap_or(&line);
                    self.body.extend_from_slice(line);
                    continue;
                }
            } else {
                let text = String::from_utf8_lossy(&line).into_owned();
                let verb = text
                    .split([' ', ':', '\r'])
                    .next()
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                if verb == "MAIL" {
                    self.mails.push(text.trim_end().to_owned());
                }
                if verb == "BDAT" {
                    let mut words = text.split_ascii_whitespace().skip(1);
                    self.chunk_left = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    self.chunk_last = words.next().is_some_and(|w| w == "LAST");
                    commands.push("BDAT");
                    if self.chunk_left == 0 {
                        if self.chunk_last {
                            self.bodies.push(std::mem::take(&mut self.body));
                        }
                        if !self.mute {
                            let act = self.act("BDAT");
                            eof |= self.perform(act, &mut out);
                        }
                    }
                    continue;
                }
                commands.push(match verb.as_str() {
                    "EHLO" => "EHLO",
                    "HELO" => "HELO",
                    "MAIL" => "MAIL",
                    "RCPT" => "RCPT",
                    "DATA" => "DATA",
                    "RSET" => "RSET",
                    "QUIT" => "QUIT",
                    "STARTTLS" => "STARTTLS",
                    "AUTH" => "AUTH",
                    _ => "?",
                });
            }
            let key = commands.last().copied().unwrap_or("?");
            if !self.mute {
                let act = self.act(key);
                eof |= self.perform(act, &mut out);
            }
        }
        // A write that leaves the server inside a body (not ended by a
        // dot) shows as "(body)": QUIT sent after a pipelined DATA got 354
        // would be one.
        if (self.in_data || self.chunk_left > 0) && !bytes.is_empty() && !self.body.is_empty() {
            commands.push("(body)");
        }
        if !commands.is_empty() {
            self.writes.push(commands.join("+"));
        }
        (out, eof)
    }
}

/// What a played scenario produced.
#[derive(Debug)]
struct Run {
    /// Client writes, in order, separated by spaces: `"EHLO MAIL+RCPT+DATA ."`.
    writes: String,
    events: Vec<String>,
    /// How long the session waited before it timed out, if it did.
    waited: Option<Duration>,
    /// The outcome `Closed` carried.
    closed: Option<Outcome>,
    bodies: Vec<Vec<u8>>,
    /// The MAIL commands the server received.
    mails: Vec<String>,
    /// The results of every `MessageDone`, recipient by recipient.
    results: Vec<Result<Reply, Outcome>>,
    /// The TLS the session reported at the end.
    tls: Option<TlsInfo>,
}

const BODY: &[u8] = b"Subject: t\r\n\r\nhello\r\n.dot\r\n";

fn run(scenario: &Scenario) -> Run {
    let mut now = base();
    let config = SessionConfig {
        timeouts: distinct_timeouts(),
        tls: scenario.tls,
        implicit_tls: scenario.implicit_tls,
        auth: scenario.auth.clone(),
        ..config()
    };
    let mut results = Vec::new();
    let mut session = Session::new(config, now);
    let mut server = Server::new(scenario.clone());
    let mut events = Vec::new();
    let mut waited = None;
    let mut closed = None;
    let mut sent = 0;
    // Under implicit TLS the server greets once the handshake is done.
    let mut greeted = false;
    let mut greet = |session: &mut Session, server: &mut Server, now| {
        if !std::mem::replace(&mut greeted, true) {
            let (bytes, eof) = server.greet();
            session.handle_input(&bytes, now);
            if eof {
                session.handle_eof(now);
            }
        }
    };
    if !scenario.implicit_tls {
        greet(&mut session, &mut server, now);
    }
    for _ in 0..10_000 {
        let mut progressed = false;
        while let Some(event) = session.poll_event() {
            progressed = true;
            events.push(event_summary(&event));
            match event {
                Event::StartTls => {
                    server.writes.push("<tls>".into());
                    match scenario.handshake {
                        Ok(()) => session.tls_established(tls_info(), now),
                        Err(detail) => session.tls_failed(detail, now),
                    }
                    if scenario.implicit_tls && !session.is_closed() {
                        greet(&mut session, &mut server, now);
                    }
                }
                Event::Ready if sent < scenario.messages => {
                    sent += 1;
                    let mut env = envelope("s@a.test", &scenario.recipients);
                    env.size = scenario.size;
                    env.eight_bit = scenario.eight_bit;
                    if let Err(e) = session.start_message(env, now) {
                        events.push(format!("start failed: {e}"));
                    }
                }
                Event::Ready => session.quit(now),
                Event::Closed(outcome) => closed = outcome,
                Event::MessageDone(done) => {
                    results.extend(done.recipients.into_iter().map(|r| r.result));
                }
            }
        }
        if session.wants_body() {
            session.push_body(scenario.body, now);
            session.finish_body(now);
            progressed = true;
        }
        let out = session.pending_output().to_vec();
        if !out.is_empty() {
            progressed = true;
            session.consume_output(out.len());
            let (replies, eof) = server.receive(&out);
            session.handle_input(&replies, now);
            if eof {
                session.handle_eof(now);
            }
        }
        if progressed {
            continue;
        }
        if session.is_closed() {
            break;
        }
        match session.poll_timeout() {
            Some(deadline) => {
                waited = Some(deadline.saturating_duration_since(now));
                now = deadline;
                session.handle_timeout(now);
            }
            None => break,
        }
    }
    Run {
        writes: server.writes.join(" "),
        events,
        waited,
        closed,
        bodies: server.bodies,
        mails: server.mails,
        results,
        tls: session.tls().cloned(),
    }
}
