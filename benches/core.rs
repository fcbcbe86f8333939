//! Micro-benchmarks of the core's hot pure functions (issue 6): the SMTP
//! session's per-message step (RFC 5321 §3.3 transaction with RFC 2920
//! PIPELINING), DATA dot-stuffing (RFC 5321 §4.5.2), measuring a body for
//! SIZE (RFC 1870) and 8BITMIME (RFC 6152), and the queue's envelope header
//! block parser. No sockets, no threads: what the I/O workers and the
//! scanner pay per message, apart from system calls.
//!
//! `cargo bench --bench core` for numbers; CI runs it in quick mode
//! (`cargo bench --bench core -- --warm-up-time 0.1 --measurement-time 0.2
//! --noplot`) so it keeps compiling and running.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use postman::queue::parse_envelope;
use postman::smtp::{
    BodyMeasure, DotStuffer, Envelope, Event, Session, SessionConfig, Timeouts, TlsMode,
};

/// A message body of about `size` bytes as postman reads it from a queue
/// file: 76-character lines ending in CRLF, every 20th line starting with a
/// dot (so stuffing has something to do).
fn body(size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 80);
    let mut line = 0;
    while out.len() < size {
        if line % 20 == 0 {
            out.push(b'.');
            out.extend_from_slice(&[b'x'; 75]);
        } else {
            out.extend_from_slice(&[b'x'; 76]);
        }
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out
}

fn dot_stuffing(c: &mut Criterion) {
    let mut group = c.benchmark_group("dot_stuffing");
    for (name, size) in [("2KB", 2 * 1024), ("100KB", 100 * 1024)] {
        let input = body(size);
        // LF-only input makes the stuffer write every line end itself.
        let lf: Vec<u8> = input.iter().copied().filter(|&b| b != b'\r').collect();
        group.throughput(Throughput::Bytes(input.len() as u64));
        let mut out = Vec::with_capacity(size * 2);
        group.bench_function(format!("crlf_{name}"), |b| {
            b.iter(|| {
                out.clear();
                let mut stuffer = DotStuffer::new();
                stuffer.push(black_box(&input), &mut out);
                stuffer.finish(&mut out);
                black_box(out.len())
            })
        });
        // BDAT: line ends only, no stuffing.
        group.bench_function(format!("bdat_crlf_{name}"), |b| {
            b.iter(|| {
                out.clear();
                let mut normaliser = DotStuffer::line_ends_only();
                normaliser.push(black_box(&input), &mut out);
                normaliser.end_line(&mut out);
                black_box(out.len())
            })
        });
        group.bench_function(format!("lf_{name}"), |b| {
            b.iter(|| {
                out.clear();
                let mut stuffer = DotStuffer::new();
                stuffer.push(black_box(&lf), &mut out);
                stuffer.finish(&mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// The pass over the body before MAIL FROM that gives SIZE= and BODY=.
fn body_measure(c: &mut Criterion) {
    let mut group = c.benchmark_group("body_measure");
    // Most bodies have no line-start dot, so the search for one runs to
    // the end; `body` has one every 20 lines.
    let no_dots = |size| {
        let mut input = body(size);
        input
            .iter_mut()
            .filter(|b| **b == b'.')
            .for_each(|b| *b = b'x');
        input
    };
    for (name, input) in [
        ("2KB", body(2 * 1024)),
        ("100KB", body(100 * 1024)),
        ("100KB_no_dots", no_dots(100 * 1024)),
    ] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut measure = BodyMeasure::new();
                measure.push(black_box(&input));
                black_box((measure.size(), measure.eight_bit()))
            })
        });
    }
    group.finish();
}

fn envelope_parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    let one = b"X-Postman-From: <alice@example.org>\r\n\
        X-Postman-Date: 1764250000\r\n\
        X-Postman-To: <bob@example.com>\r\n\
        \r\n\
        Subject: hello\r\n\r\nbody\r\n";
    let mut many = String::from(
        "X-Postman-From: <alice@example.org>\r\nX-Postman-Date: Thu, 27 Nov 2025 12:00:00 +0000\r\n",
    );
    for i in 0..50 {
        many.push_str(&format!(
            "X-Postman-To: <user{i}@example.com>, <other{i}@example.com>\r\n"
        ));
    }
    many.push_str("\r\nSubject: hello\r\n\r\nbody\r\n");
    for (name, block) in [
        ("1_recipient", &one[..]),
        ("100_recipients_rfc5322_date", many.as_bytes()),
    ] {
        parse_envelope(block).unwrap_or_else(|e| panic!("bench input {name} does not parse: {e}"));
        group.throughput(Throughput::Bytes(block.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse_envelope(black_box(block))));
    }
    group.finish();
}

const EHLO_REPLY: &[u8] = b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n\
    250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n";

fn config() -> SessionConfig {
    SessionConfig {
        helo_name: "bench.postman.test".into(),
        timeouts: Timeouts::default(),
        tls: TlsMode::Disabled,
        implicit_tls: false,
        own_names: Vec::new(),
        auth: None,
    }
}

/// Answers every command line in the session's output the way smtp-sink
/// does, and drains the output. Body lines (after a 354) are skipped up to
/// the final dot, which gets its 250.
#[derive(Default)]
struct Server {
    in_body: bool,
    replies: Vec<u8>,
}

impl Server {
    fn answer(&mut self, session: &mut Session, now: Instant) {
        loop {
            self.replies.clear();
            let out = session.pending_output();
            if out.is_empty() {
                return;
            }
            for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if self.in_body {
                    if line == b"." {
                        self.in_body = false;
                        self.replies
                            .extend_from_slice(b"250 2.0.0 Ok: queued as BENCH\r\n");
                    }
                    continue;
                }
                let verb = &line[..line.len().min(4)];
                let reply: &[u8] = match verb {
                    b"EHLO" => EHLO_REPLY,
                    b"DATA" => {
                        self.in_body = true;
                        b"354 End data with <CR><LF>.<CR><LF>\r\n"
                    }
                    b"QUIT" => b"221 2.0.0 Bye\r\n",
                    _ => b"250 2.1.0 Ok\r\n",
                };
                self.replies.extend_from_slice(reply);
            }
            let n = out.len();
            session.consume_output(n);
            if !self.replies.is_empty() {
                session.handle_input(&self.replies, now);
            }
        }
    }
}

/// A session after greeting and EHLO, ready for its first message.
fn ready_session(now: Instant, server: &mut Server) -> Session {
    let mut session = Session::new(config(), now);
    session.handle_input(b"220 sink.test ESMTP\r\n", now);
    server.answer(&mut session, now);
    match session.poll_event() {
        Some(Event::Ready) => session,
        other => panic!("the bench session is not ready after EHLO: {other:?}"),
    }
}

/// One message over a ready session: MAIL, RCPT, DATA pipelined, the body
/// in `chunk`-sized pieces as the worker pushes it, the final dot, 250.
fn one_message(
    session: &mut Session,
    server: &mut Server,
    envelope: &Envelope,
    body: &[u8],
    chunk: usize,
    now: Instant,
) -> usize {
    session
        .start_message(envelope.clone(), now)
        .expect("the bench session takes a message");
    server.answer(session, now);
    let mut sent = 0;
    while sent < body.len() {
        if !session.wants_body() {
            server.answer(session, now);
            assert!(
                session.wants_body(),
                "the bench session stopped wanting the body"
            );
        }
        let end = (sent + chunk).min(body.len());
        session.push_body(&body[sent..end], now);
        sent = end;
    }
    session.finish_body(now);
    server.answer(session, now);
    let mut done = 0;
    while let Some(event) = session.poll_event() {
        match event {
            Event::MessageDone(result) => {
                assert!(
                    result.recipients.iter().all(|r| r.result.is_ok()),
                    "the bench message was not accepted: {result:?}"
                );
                done += 1;
            }
            Event::Ready => {}
            other => panic!("unexpected event in the bench session: {other:?}"),
        }
    }
    assert_eq!(done, 1, "one MessageDone per bench message");
    done
}

fn session_step(c: &mut Criterion) {
    // The core takes instants as arguments; the bench needs one real one.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let envelope = Envelope::new("alice@example.org", vec!["bob@example.com".to_owned()]);
    let mut group = c.benchmark_group("session");

    group.throughput(Throughput::Elements(1));
    group.bench_function("connect_greeting_ehlo_quit", |b| {
        b.iter(|| {
            let mut server = Server::default();
            let mut session = ready_session(now, &mut server);
            session.quit(now);
            server.answer(&mut session, now);
            black_box(session.is_closed())
        })
    });

    for (name, size) in [("2KB", 2 * 1024), ("100KB", 100 * 1024)] {
        let body = body(size);
        group.throughput(Throughput::Elements(1));
        // The steady state: a long-lived connection, one more message on it
        // (RSET, MAIL, RCPT, DATA, the body in 64 KiB chunks, the dot).
        group.bench_function(format!("message_on_open_connection_{name}"), |b| {
            let mut server = Server::default();
            let mut session = ready_session(now, &mut server);
            b.iter(|| {
                one_message(
                    &mut session,
                    &mut server,
                    &envelope,
                    black_box(&body),
                    64 * 1024,
                    now,
                )
            })
        });
    }

    // A fresh session per message: what max_messages_per_connection = 1 costs.
    let small = body(2 * 1024);
    group.bench_function("new_connection_per_message_2KB", |b| {
        b.iter_batched(
            Server::default,
            |mut server| {
                let mut session = ready_session(now, &mut server);
                one_message(&mut session, &mut server, &envelope, &small, 64 * 1024, now);
                session.quit(now);
                server.answer(&mut session, now);
                black_box(session.is_closed())
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    session_step,
    dot_stuffing,
    body_measure,
    envelope_parsing
);
criterion_main!(benches);
