//! End to end: postman delivers queued mail to real SMTP servers on loopback
//! (aiosmtpd, and the scripted server behaving politely), byte for byte,
//! and removes what it delivered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{assert_outcome, assert_relay, check, config, message, on_the_wire};
use postman_integration::hostile::Script;
use postman_integration::{
    postman, AiosmtpdSink, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};

/// Bodies that exercise transparency (RFC 5321 §4.5.2) and line-ending
/// normalisation: leading dots, a lone dot, bare LF, CRLF, no final newline,
/// 8-bit text and a long (but legal, < 998 octets) line.
fn tricky_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let long = "x".repeat(900);
    vec![
        ("plain", message("plain", "hello\nworld\n")),
        ("dots", message("dots", ".\n..\n...leading dots\n.\n. space\nend\n")),
        ("lone-dot-last", message("lone-dot-last", "before\n.\n")),
        (
            "crlf",
            b"From: a@src.test\r\nSubject: crlf\r\nMessage-ID: <crlf@src.test>\r\n\r\nline one\r\n.dot\r\n".to_vec(),
        ),
        ("no-final-newline", message("no-final-newline", "no newline at the end")),
        ("eight-bit", message("eight-bit", "gr\u{fc}\u{df}e aus K\u{f6}ln \u{2014} \u{1f4ec}\n")),
        ("long-line", message("long-line", &format!("{long}\n.{long}\n"))),
        ("empty-body", message("empty-body", "")),
    ]
}

/// Runs postman once with `cfg`; it must succeed and leave `queue` empty
/// (`what` says why, for the failure message).
fn run_until_empty(queue: &TestQueue, cfg: &postman_integration::Config, what: &str) -> RunOutput {
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(queue.state().is_empty(), what, queue, &out);
    out
}

#[test]
fn happy_path_delivers_every_message_byte_for_byte_to_aiosmtpd() {
    let net = TestNet::new();
    let sink_dir1 = tempfile::tempdir().unwrap();
    let sink_dir2 = tempfile::tempdir().unwrap();
    let sink1 = AiosmtpdSink::start(net.ip(1), net.port(), sink_dir1.path());
    let sink2 = AiosmtpdSink::start(net.ip(2), net.port(), sink_dir2.path());
    let dns = DnsServer::start(
        Zones::new()
            .mx("d1.test", 10, "mx.d1.test")
            .mx("d2.test", 10, "mx.shared.test")
            .mx("d3.test", 5, "mx.d3.test")
            .a("mx.d1.test", net.ipv4(1))
            .a("mx.shared.test", net.ipv4(1))
            .a("mx.d3.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();

    // name -> (domain, sender, recipients, message)
    let mut expected: BTreeMap<String, (String, String, Vec<String>, Vec<u8>)> = BTreeMap::new();
    let domains = ["d1.test", "d2.test", "d3.test"];
    let mut n = 0;
    for (i, domain) in domains.iter().enumerate() {
        for (kind, body) in tricky_bodies() {
            n += 1;
            let name = format!("1764250000.M{n}P{i}.src.test");
            let rcpts: Vec<String> = (0..=(n % 3))
                .map(|r| format!("user{r}.{kind}@{domain}"))
                .collect();
            let rcpt_refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
            // Every eighth message is a bounce (null sender).
            let sender = if n % 8 == 0 {
                String::new()
            } else {
                format!("sender{n}@src.test")
            };
            // Unique body per file, so each received copy maps to one file.
            let mut msg = format!("X-Test-File: {name}\n").into_bytes();
            msg.extend_from_slice(&body);
            queue.add(domain, &name, &sender, &rcpt_refs, &msg);
            expected.insert(name, (domain.to_string(), sender, rcpts, msg));
        }
    }

    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();

    let state = queue.state();
    check(
        state.is_empty(),
        "every file should be delivered and removed",
        &queue,
        &out,
    );

    // Every file arrived: exact bytes, its sender, all its recipients.
    let mut received = sink1.wait_for(1, Duration::from_secs(5));
    received.extend(sink2.messages());
    let mut rcpts_seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &received {
        let name = expected
            .iter()
            .find(|(_, (_, _, _, msg))| on_the_wire(msg) == r.data)
            .map(|(name, _)| name.clone())
            .unwrap_or_else(|| {
                panic!(
                    "aiosmtpd received data matching no queued file:\n{}",
                    String::from_utf8_lossy(&r.data)
                )
            });
        let (_, sender, _, _) = &expected[&name];
        assert_eq!(&r.mail_from, sender, "MAIL FROM of {name}");
        assert_eq!(r.helo, "postman.test", "EHLO name used for {name}");
        rcpts_seen
            .entry(name)
            .or_default()
            .extend(r.rcpt_tos.iter().cloned());
    }
    for (name, (_, _, rcpts, _)) in &expected {
        let want: BTreeSet<String> = rcpts.iter().cloned().collect();
        assert_eq!(
            rcpts_seen.get(name),
            Some(&want),
            "recipients received for {name}"
        );
    }
    assert_eq!(
        sink2.messages().len(),
        tricky_bodies().len(),
        "d3.test mail goes to the second sink only"
    );

    // One `sent` record per recipient, naming the file, domain and relay.
    let deliveries = out.deliveries();
    for (name, (domain, _, rcpts, _)) in &expected {
        for rcpt in rcpts {
            let d = assert_outcome(&out, &deliveries, rcpt, "sent", Some(250));
            assert_eq!(&d.queue_id, name, "queue_id for {rcpt}");
            assert_eq!(&d.domain, domain, "domain for {rcpt}");
            let ip = if domain == "d3.test" {
                net.ip(2)
            } else {
                net.ip(1)
            };
            assert_relay(&d, ip, net.port());
            assert!(d.delay >= 0.0, "delay for {rcpt}: {d:?}");
        }
    }
    let sent = deliveries.iter().filter(|d| d.status == "sent").count();
    let want: usize = expected.values().map(|(_, _, r, _)| r.len()).sum();
    assert_eq!(sent, want, "exactly one sent record per recipient");
}

#[test]
fn implicit_mx_delivers_to_the_domains_own_address() {
    let net = TestNet::new();
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = AiosmtpdSink::start(net.ip(1), net.port(), sink_dir.path());
    // No MX at all: RFC 5321 §5.1 says use the domain's own A record.
    let dns = DnsServer::start(Zones::new().a("implicit.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let msg = message("implicit", "via the A record\n");
    queue.add(
        "implicit.test",
        "m1",
        "a@src.test",
        &["u@implicit.test"],
        &msg,
    );

    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "the message should be delivered",
        &queue,
        &out,
    );
    let got = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].data, on_the_wire(&msg));
    assert_eq!(got[0].rcpt_tos, ["u@implicit.test"]);
    let d = assert_outcome(
        &out,
        &out.deliveries(),
        "u@implicit.test",
        "sent",
        Some(250),
    );
    assert_relay(&d, net.ip(1), net.port());
}

#[test]
fn connection_reuse_sends_many_messages_over_one_connection_with_rset_between() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("reuse.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let count = 12;
    for i in 0..count {
        queue.add(
            "reuse.test",
            &format!("m{i:02}"),
            "a@src.test",
            &[&format!("u{i}@reuse.test")],
            &message(&format!("reuse{i}"), "hi\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 1;
    run_until_empty(&queue, &cfg, "all messages should be delivered");
    assert!(
        server.wait_idle(1, Duration::from_secs(5)),
        "server connections did not finish"
    );

    assert_eq!(
        server.connection_count(),
        1,
        "max_connections_per_domain = 1: {:#?}",
        server.connections()
    );
    assert_eq!(
        server.count_commands("MAIL FROM"),
        count,
        "{:#?}",
        server.commands()
    );
    assert_eq!(server.bodies().len(), count);
    for conn in server.connections() {
        assert_rset_between_transactions(&conn.commands);
    }
    assert!(server.errors().is_empty(), "{:?}", server.errors());
}

#[test]
fn max_messages_per_connection_opens_new_connections() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("cap.test", net.ipv4(1)));
    let queue = TestQueue::new();
    for i in 0..5 {
        queue.add(
            "cap.test",
            &format!("m{i}"),
            "a@src.test",
            &["u@cap.test"],
            &message(&format!("cap{i}"), "x\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 1;
    cfg.max_messages_per_connection = 2;
    run_until_empty(&queue, &cfg, "all messages should be delivered");
    assert!(
        server.wait_idle(3, Duration::from_secs(5)),
        "server connections did not finish"
    );
    let conns = server.connections();
    assert!(
        conns.len() >= 3,
        "5 messages at 2 a connection need 3 connections: {conns:#?}"
    );
    for c in &conns {
        let mails = c
            .commands
            .iter()
            .filter(|m| m.to_ascii_uppercase().starts_with("MAIL"))
            .count();
        assert!(
            mails <= 2,
            "connection {} carried {mails} messages: {:?}",
            c.index,
            c.commands
        );
    }
    assert_eq!(server.count_commands("MAIL FROM"), 5);
}

#[test]
fn multi_line_replies_at_every_step_are_understood() {
    let net = TestNet::new();
    let script = Script::new()
        .pipelining(false)
        .greet("220-mx.multi.test ESMTP\n220-this greeting\n220 spans three lines")
        .expect(
            "EHLO",
            "250-mx.multi.test\n250-8BITMIME\n250-SIZE 1000000\n250 HELP",
        )
        .expect("MAIL FROM", "250-sender\n250 2.1.0 ok")
        .expect("RCPT TO", "250-recipient\n250 2.1.5 ok")
        .expect("DATA", "354-go\n354 ahead")
        .body("250-queued\n250-as\n250 2.0.0 12345")
        .then_polite();
    let server = HostileServer::start(net.addr(1), vec![script]);
    let dns = DnsServer::start(Zones::new().mx_at("multi.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let msg = message("multi", "body\n");
    queue.add("multi.test", "m1", "a@src.test", &["u@multi.test"], &msg);

    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "the message should be delivered",
        &queue,
        &out,
    );
    assert!(server.errors().is_empty(), "{:?}", server.errors());
    assert_eq!(server.bodies().len(), 1);
    assert_eq!(
        postman_integration::hostile::unstuff(&server.bodies()[0]),
        on_the_wire(&msg)
    );
    assert_outcome(&out, &out.deliveries(), "u@multi.test", "sent", Some(250));
}

/// Between two transactions on one connection the client sends RSET: every
/// MAIL after the first is preceded by an RSET since the previous DATA.
fn assert_rset_between_transactions(commands: &[String]) {
    let upper: Vec<String> = commands.iter().map(|c| c.to_ascii_uppercase()).collect();
    let mut seen_transaction = false;
    let mut rset_since = false;
    for c in &upper {
        if c.starts_with("MAIL") {
            assert!(
                !seen_transaction || rset_since,
                "MAIL without RSET after the previous transaction: {commands:?}"
            );
            seen_transaction = true;
            rset_since = false;
        } else if c.starts_with("RSET") {
            rset_since = true;
        }
    }
}

/// Another process may replace a queue file between the scan and the
/// delivery (every writer renames a new file into place). The envelope is
/// read again unless the claimed file is the one the scanner read: here the
/// replacement has the same size and modification time, only another inode,
/// and its recipient is the one that gets the message.
#[test]
fn a_queue_file_replaced_after_the_scan_is_delivered_as_it_is_now() {
    let net = TestNet::new();
    // The greeting waits, so the file is replaced after the scan and
    // before the claim.
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .stall(1500)
            .greet("220 mx.chg.test ESMTP")
            .then_polite()],
    );
    let dns = DnsServer::start(Zones::new().mx_at("chg.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let body = message("chg", "x\n");
    let path = queue.add("chg.test", "m1", "a@src.test", &["u1@chg.test"], &body);
    let replacement = postman_integration::queue::queue_file(
        "a@src.test",
        &["u2@chg.test"],
        postman_integration::queue::unix_now(),
        &body,
        "\n",
    );
    let before = std::fs::metadata(&path).expect("stat");
    assert_eq!(before.len(), replacement.len() as u64, "same size");
    let replacer = {
        let path = path.clone();
        let tmp = queue.domain_dir("chg.test").join("tmp").join("m1.new");
        let mtime = before.modified().expect("mtime");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(&tmp, &replacement).expect("write the replacement");
            let file = std::fs::File::options()
                .write(true)
                .open(&tmp)
                .expect("open");
            file.set_modified(mtime).expect("same mtime");
            drop(file);
            std::fs::rename(&tmp, &path).expect("rename over");
        })
    };

    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    replacer.join().expect("replacer");
    out.assert_success();
    check(
        queue.state().is_empty(),
        "the message should be delivered",
        &queue,
        &out,
    );
    let rcpts: Vec<String> = server
        .connections()
        .iter()
        .flat_map(|c| c.rcpts())
        .collect();
    assert_eq!(
        rcpts,
        ["RCPT TO:<u2@chg.test>"],
        "the recipient of the file as it is now"
    );
    assert_outcome(&out, &out.deliveries(), "u2@chg.test", "sent", Some(250));
}

/// Bodies over the 1 MiB a worker keeps in memory are sent from their
/// queue files, a chunk at a time in the worker's loop; after delivery the
/// file's name goes while it is still open and a disk thread's close frees
/// it. Two of them on one connection arrive byte for byte and leave the
/// queue.
#[test]
fn bodies_over_a_mebibyte_are_sent_from_their_files_byte_for_byte() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("big.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let mut sent = Vec::new();
    for i in 0..2 {
        let mut body = String::new();
        for n in 0..24_000 {
            // Every 1,000th line starts with a dot, to be stuffed.
            let dot = if n % 1000 == 0 { "." } else { "" };
            body.push_str(&format!("{dot}{i}:{n:06} {}\n", "y".repeat(56)));
        }
        let msg = message(&format!("big{i}"), &body);
        assert!(
            msg.len() > 1024 * 1024 + 100_000,
            "over the in-memory limit"
        );
        queue.add(
            "big.test",
            &format!("m{i}"),
            "a@src.test",
            &[&format!("u{i}@big.test")],
            &msg,
        );
        sent.push(on_the_wire(&msg));
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 1;
    run_until_empty(&queue, &cfg, "both delivered and removed");
    let mut got: Vec<Vec<u8>> = server
        .bodies()
        .iter()
        .map(|b| postman_integration::hostile::unstuff(b))
        .collect();
    got.sort();
    sent.sort();
    assert!(got == sent, "both bodies arrive byte for byte");
    assert_eq!(server.connection_count(), 1, "one connection for both");
}

/// The MX of `wire.test`: a server over a narrow path that stalls `ms`
/// after its 354 to the first message, so the body's writes block
/// part-way, and answers politely from then on.
fn wire_test_server_stalling_after_354(net: &TestNet, ms: u64) -> (HostileServer, DnsServer) {
    let script = Script::new()
        .hello()
        .expect("MAIL", "250 ok")
        .expect("RCPT", "250 ok")
        .expect("DATA", "354 go")
        .stall(ms)
        .body("250 ok")
        .then_polite();
    let server = HostileServer::start_narrow(net.addr(1), vec![script]);
    let dns = DnsServer::start(Zones::new().mx_at("wire.test", net.ipv4(1)));
    (server, dns)
}

/// A message already in wire form: `lines` CRLF lines of 64 `z`s, `dots`
/// before and after them (12,000 lines are about 900 KB, kept in memory).
fn large_wire_message(lines: usize, dots: &str) -> String {
    let mut message = String::from("From: a@src.test\r\nSubject: large\r\n\r\n");
    for n in 0..lines {
        message.push_str(&format!("{n:06} {dots}{}{dots}\r\n", "z".repeat(64)));
    }
    message
}

/// A body already in wire form (CRLF line ends, no line-start dot) is
/// written straight from its file, skipping the stuffer, whether it was
/// kept in memory or is over a MiB. The large one meets a server that stops reading for a while
/// over a narrow path, so its writes block part-way and resume only when
/// the socket says it is writable again; a body that needs stuffing
/// follows on the same connection. All arrive byte for byte.
#[test]
fn bodies_already_in_wire_form_are_written_as_they_are() {
    let net = TestNet::new();
    let (server, dns) = wire_test_server_stalling_after_354(&net, 400);
    let queue = TestQueue::new();
    // Dots inside lines and at their ends stay as they are.
    let large = large_wire_message(12_000, ".");
    assert!(
        large.len() > 900_000 && large.len() < 1024 * 1024,
        "kept in memory"
    );
    // Over a MiB: sent from its file, and straight from it too.
    let larger = large_wire_message(20_000, ".");
    assert!(larger.len() > 1024 * 1024, "sent from the file");
    let bodies = [
        large.into_bytes(),
        larger.into_bytes(),
        b"From: a@src.test\r\nSubject: small\r\n\r\nhello\r\n".to_vec(),
        b"From: a@src.test\r\nSubject: stuffed\r\n\r\n.dot\nbare\n".to_vec(),
    ];
    for (i, body) in bodies.iter().enumerate() {
        queue.add(
            "wire.test",
            &format!("m{i}"),
            "a@src.test",
            &[&format!("u{i}@wire.test")],
            body,
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 1;
    // A blocked write must resume when the socket is writable, not when a
    // timeout next wakes the worker: with these timeouts that would take
    // 30 s at least, against well under a second.
    cfg.timeouts = postman_integration::postman::SmtpTimeouts::all(30);
    let started = std::time::Instant::now();
    run_until_empty(&queue, &cfg, "all delivered and removed");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let mut got: Vec<Vec<u8>> = server
        .bodies()
        .iter()
        .map(|b| postman_integration::hostile::unstuff(b))
        .collect();
    let mut sent: Vec<Vec<u8>> = bodies.iter().map(|b| on_the_wire(b)).collect();
    got.sort();
    sent.sort();
    assert!(got == sent, "every body arrives byte for byte");
    assert_eq!(server.connection_count(), 1, "one connection for all");
}

/// A body written straight from its file must be the file that was
/// measured. Here the claimed file is written in place while its body is
/// on the way (the server stalls after 354 over a narrow path, so the
/// writes block part-way): the connection breaks before the terminator, so
/// the server takes nothing, and the message stays queued as the file now
/// is, for its next attempt.
#[test]
fn a_queue_file_written_while_its_body_is_sent_is_not_finished() {
    let net = TestNet::new();
    let (server, dns) = wire_test_server_stalling_after_354(&net, 1500);
    let queue = TestQueue::new();
    let body = large_wire_message(12_000, "");
    queue.add(
        "wire.test",
        "m0",
        "a@src.test",
        &["u0@wire.test"],
        body.as_bytes(),
    );
    let cfg = config(&queue, &net, &dns);
    let active = queue.domain_dir("wire.test").join(".active");
    let out = std::thread::scope(|s| {
        let run = s.spawn(|| postman!().run_once(&cfg.write()));
        // DATA is in: the body is on its way, and cannot all be until the
        // server reads again.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while server.count_commands("DATA") == 0 {
            assert!(std::time::Instant::now() < deadline, "no DATA");
            std::thread::sleep(Duration::from_millis(5));
        }
        let claimed = std::fs::read_dir(&active)
            .expect("the claim folder")
            .filter_map(Result::ok)
            .map(|owner| owner.path().join("m0"))
            .find(|path| path.exists())
            .expect("the claimed file");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&claimed)
            .expect("open the claimed file");
        let at = std::fs::read(&claimed)
            .expect("read")
            .windows(8)
            .position(|w| w == b"zzzzzzzz")
            .expect("a run of z");
        std::os::unix::fs::FileExt::write_all_at(&file, b"CHANGED!", at as u64).expect("write");
        run.join().expect("postman run")
    });
    out.assert_success();
    assert_eq!(server.body_count(), 0, "no body finished");
    let logged: Vec<_> = out
        .records()
        .into_iter()
        .filter(|r| r["msg"] == "cannot finish sending the queue file; the message stays queued")
        .collect();
    assert_eq!(logged.len(), 1, "logged once");
    assert_eq!(
        logged[0]["problem"], "the queue file changed since it was measured",
        "why"
    );
    let state = queue.state();
    assert_eq!(
        state.queued_in("wire.test"),
        vec!["m0".to_owned()],
        "still queued"
    );
    let now = std::fs::read(queue.domain_dir("wire.test").join("m0")).expect("queued file");
    assert!(
        now.windows(8).any(|w| w == b"CHANGED!"),
        "as the file is now"
    );
}

/// A connection waiting for more of its domain gives its slot up at once
/// when another domain needs it, and a `--once` run with nothing left does
/// not wait for it: with a minute's wait and room for one connection, two
/// domains on one server are done in seconds, one connection each.
#[test]
fn a_waiting_connection_yields_its_slot_and_the_end_of_a_run() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(
        Zones::new()
            .mx_at("first.test", net.ipv4(1))
            .mx_at("second.test", net.ipv4(1)),
    );
    let queue = TestQueue::new();
    for domain in ["first.test", "second.test"] {
        let msg = message(domain, "one each\n");
        queue.add(domain, "m1", "a@src.test", &[&format!("u@{domain}")], &msg);
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections = 1;
    cfg.max_connections_per_domain = 1;
    cfg.connection_cache_time = 60;
    let started = std::time::Instant::now();
    run_until_empty(&queue, &cfg, "both delivered and removed");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(server.body_count(), 2);
    assert_eq!(server.connection_count(), 2, "{:?}", server.commands());
    assert_eq!(server.count_commands("QUIT"), 2, "{:?}", server.commands());
}
