//! End to end: the operator commands against a real queue and a real
//! `run --once`.
//!
//! * `enqueue` splits recipients by domain and its bare-LF message goes out
//!   with CRLF; bad addresses are refused by name.
//! * `queue` lists (text, JSON, summary) what a real run deferred with its
//!   attempts and last error.
//! * `hold`, `release`, `delete`, `bounce` and `flush` change the queue so
//!   that the next `run --once` does what they said.
//! * `stats` summarises the JSON log of a real run.
//!
//! The same commands beside a running daemon, and `stats --follow`, are in
//! `ops_live.rs`.

mod common;

use std::path::Path;

use common::{message, on_the_wire, succeeded, Setup, DEADLINE};
use postman_integration::hostile::{unstuff, Script};
use postman_integration::postman::RunOutput;
use postman_integration::queue::{queue_file, unix_now};
use postman_integration::{postman, TestQueue};
use serde_json::Value;

fn failed(out: &RunOutput, what: &str) {
    assert!(
        !out.status.success(),
        "{what} must fail\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout,
        out.stderr
    );
}

/// The message bytes of a queue file (after its envelope block).
fn body_of(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let env = ::postman::queue::parse_envelope(&bytes)
        .unwrap_or_else(|e| panic!("{} is not a queue file: {e}", path.display()));
    bytes[env.body_offset as usize..].to_vec()
}

fn queue_path(queue: &TestQueue, id: &str) -> std::path::PathBuf {
    let (domain, name) = id.split_once('/').expect("domain/name");
    queue.domain_dir(domain).join(name)
}

#[test]
fn enqueue_writes_one_file_per_domain_and_prints_the_ids() {
    let s = Setup::polite();
    let dir = tempfile::tempdir().unwrap();
    let msg_path = dir.path().join("msg.eml");
    let msg = message("split", "one message, two domains\n");
    std::fs::write(&msg_path, &msg).unwrap();
    let out = s.postman(
        "enqueue",
        &[
            "--from",
            "alice@src.test",
            "--to",
            "x@d1.test",
            "--to",
            "<y@D2.test>",
            "--to",
            "z@d1.test",
            msg_path.to_str().unwrap(),
        ],
    );
    succeeded(&out);
    let ids: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(ids.len(), 2, "one queue id per domain: {:?}", out.stdout);
    assert!(
        ids[0].starts_with("d1.test/") && ids[1].starts_with("d2.test/"),
        "{ids:?}"
    );
    let pid_part = format!(".{}", ids[0].split_once('/').unwrap().1);
    assert!(
        pid_part.contains('P') && pid_part.contains('Q'),
        "maildir name: {pid_part}"
    );
    let want_rcpts: [&[&str]; 2] = [&["x@d1.test", "z@d1.test"], &["y@d2.test"]];
    for (id, want) in ids.iter().zip(want_rcpts) {
        let path = queue_path(&s.queue, id);
        let bytes = std::fs::read(&path).unwrap();
        let env = ::postman::queue::parse_envelope(&bytes).expect("a queue file");
        assert_eq!(env.sender, "alice@src.test", "{id}");
        assert_eq!(env.recipients, want, "{id}");
        let age = unix_now().abs_diff(
            env.arrival
                .expect("X-Postman-Date")
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        assert!(age < 60, "{id}: X-Postman-Date is now");
        assert_eq!(body_of(&path), msg, "{id}: the message as given");
    }
    assert!(s.queue.state().tmp.is_empty(), "nothing left in tmp/");
}

#[test]
fn enqueue_refuses_bad_addresses_naming_them_and_queues_nothing() {
    let s = Setup::polite();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--from", "a@src.test", "--to", "no-at-sign"],
            "no-at-sign",
        ),
        (
            &[
                "--from",
                "a@src.test",
                "--to",
                "x@d1.test",
                "--to",
                "a b@d1.test",
            ],
            "a b@d1.test",
        ),
        (
            &["--from", "a@@src.test", "--to", "x@d1.test"],
            "a@@src.test",
        ),
        (
            &["--from", "a@src.test", "--to", "x@-bad-.test"],
            "x@-bad-.test",
        ),
        (&["--from", "a@src.test", "--to", "<>"], "<>"),
    ];
    for (args, bad) in cases {
        let out = s.postman_with_input("enqueue", args, b"Subject: x\n\nx\n");
        failed(&out, &format!("enqueue {args:?}"));
        assert!(
            out.stderr.contains(&format!("{bad:?}")),
            "the error should quote {bad:?}: {}",
            out.stderr
        );
    }
    assert!(s.queue.state().is_empty(), "{:#?}", s.queue.state());
}

#[test]
fn an_enqueued_bare_lf_message_from_stdin_goes_out_with_crlf() {
    let s = Setup::polite();
    let msg =
        b"From: a@src.test\nTo: x@d1.test\nSubject: bare LF\n\nline one\n.leading dot\nlast line\n";
    let out = s.postman_with_input("enqueue", &["--from", "", "--to", "x@d1.test", "-"], msg);
    succeeded(&out);
    let id = out.stdout.trim();
    assert_eq!(
        body_of(&queue_path(&s.queue, id)),
        msg,
        "stored as is, bare LF kept"
    );

    let run = s.run_once();
    assert!(s.queue.state().is_empty(), "delivered: {}", run.stderr);
    let bodies = s.server.bodies();
    assert_eq!(bodies.len(), 1, "{:#?}", s.server.commands());
    let wire = &bodies[0];
    let bare_lf = wire
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || wire[i - 1] != b'\r'));
    assert!(
        !bare_lf,
        "no bare LF on the wire: {:?}",
        String::from_utf8_lossy(wire)
    );
    assert_eq!(
        unstuff(wire),
        on_the_wire(msg),
        "CRLF line ends, content unchanged"
    );
    assert!(
        s.server
            .commands()
            .iter()
            .any(|c| c == "MAIL FROM:<>" || c.starts_with("MAIL FROM:<> ")),
        "the null sender: {:?}",
        s.server.commands()
    );
}

#[test]
fn queue_lists_a_deferred_message_with_its_attempts_and_last_error() {
    let s = Setup::new(vec![
        Script::polite().answer("RCPT", "451 4.7.1 greylisted, come back later")
    ]);
    s.queue.add(
        "d1.test",
        "m1",
        "a@src.test",
        &["x@d1.test"],
        &message("m1", "x\n"),
    );
    s.run_once();
    s.queue.add(
        "d2.test",
        "m2",
        "b@src.test",
        &["y@d2.test"],
        &message("m2", "y\n"),
    );
    s.queue
        .add_raw("d2.test", "garbage", b"this is not a queue file\n");
    let held = s.queue.domain_dir("d2.test").join(".hold");
    std::fs::create_dir_all(&held).unwrap();
    let bytes = queue_file(
        "c@src.test",
        &["h@d2.test"],
        unix_now() - 7200,
        b"Subject: h\n\nh\n",
        "\n",
    );
    std::fs::write(held.join("h1"), bytes).unwrap();

    let text = s.postman("queue", &[]);
    succeeded(&text);
    for want in [
        "d1.test/m1",
        "deferred",
        "<a@src.test>",
        "    to <x@d1.test>",
        "    attempts 1, last ",
        "said: 451 4.7.1 greylisted, come back later",
        "d2.test/h1",
        "held",
        "d2.test/garbage",
        "cannot read this file: ",
        "(2 ready, 1 deferred, 0 active, 1 held)",
    ] {
        assert!(
            text.stdout.contains(want),
            "missing {want:?} in:\n{}",
            text.stdout
        );
    }
    let order: Vec<usize> = ["d2.test/h1", "d1.test/m1", "d2.test/m2"]
        .iter()
        .map(|id| text.stdout.find(id).unwrap_or(usize::MAX))
        .collect();
    assert!(
        order[0] < order[1] && order[1] < order[2],
        "oldest first:\n{}",
        text.stdout
    );

    let entries = s.listing();
    assert_eq!(entries.len(), 4, "{entries:#?}");
    let m1 = entries
        .iter()
        .find(|e| e["id"] == "d1.test/m1")
        .expect("m1 listed");
    assert_eq!(m1["state"], "deferred");
    assert_eq!(m1["domain"], "d1.test");
    assert_eq!(m1["name"], "m1");
    assert_eq!(m1["sender"], "a@src.test");
    assert_eq!(m1["recipients"], serde_json::json!(["x@d1.test"]));
    assert_eq!(m1["attempts"], 1);
    assert!(m1["next_attempt"].as_u64().unwrap() > unix_now(), "{m1}");
    assert!(
        m1["last_error"].as_str().unwrap().contains("451 4.7.1"),
        "{m1}"
    );
    assert!(m1["size"].as_u64().unwrap() > 0, "{m1}");
    let garbage = entries.iter().find(|e| e["name"] == "garbage").unwrap();
    assert!(garbage["error"].as_str().is_some(), "{garbage}");
    let h1 = entries.iter().find(|e| e["name"] == "h1").unwrap();
    assert_eq!(h1["state"], "held");
    assert!(h1["age"].as_u64().unwrap() >= 7200, "{h1}");

    let only = s.postman("queue", &["--domain", "D1.test", "--json"]);
    assert_eq!(
        succeeded(&only).stdout.lines().count(),
        1,
        "{}",
        only.stdout
    );

    let summary = s.postman("queue", &["summary", "--by-domain"]);
    succeeded(&summary);
    for want in ["DOMAIN", "DEFERRED", "TOTAL", "d1.test", "d2.test", "1280+"] {
        assert!(
            summary.stdout.contains(want),
            "missing {want:?} in:\n{}",
            summary.stdout
        );
    }
    let json = s.postman("queue", &["summary", "--by-domain", "--json"]);
    let lines: Vec<Value> = succeeded(&json)
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["domain"], "TOTAL");
    assert_eq!(lines[0]["total"], 4);
    assert_eq!(
        (lines[0]["deferred"].as_u64(), lines[0]["held"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        lines[0]["ages"]["160"], 1,
        "the held message is two hours old: {}",
        lines[0]
    );
}

#[test]
fn hold_release_and_delete_decide_what_the_next_run_delivers() {
    let s = Setup::polite();
    for name in ["m1", "m2", "m3"] {
        s.queue.add(
            "d1.test",
            name,
            "a@src.test",
            &["x@d1.test"],
            &message(name, "x\n"),
        );
    }
    let out = s.postman("hold", &["m1", "d1.test/m2", "nothere"]);
    failed(&out, "hold with a missing id");
    assert!(out.stdout.contains("d1.test/m1: held\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("d1.test/m2: held\n"),
        "the rest is processed: {}",
        out.stdout
    );
    assert!(
        out.stderr.contains("nothere: no such message"),
        "{}",
        out.stderr
    );
    assert_eq!(s.queue.state().queued_in("d1.test"), ["m3"], "m1, m2 held");

    s.run_once();
    assert_eq!(s.server.bodies().len(), 1, "only m3 is delivered");
    assert!(
        s.queue.domain_dir("d1.test").join(".hold/m1").exists(),
        "m1 still held"
    );

    succeeded(&s.postman("delete", &["m2"]));
    assert!(
        !s.queue.domain_dir("d1.test").join(".hold/m2").exists(),
        "held m2 deleted"
    );
    let out = s.postman("release", &["m1"]);
    assert_eq!(succeeded(&out).stdout, "d1.test/m1: released\n");
    assert_eq!(s.queue.state().queued_in("d1.test"), ["m1"]);
    s.run_once();
    assert_eq!(s.server.bodies().len(), 2, "m1 delivered after its release");
    assert!(s.queue.state().is_empty(), "{:#?}", s.queue.state());

    let out = s.postman("delete", &["m1"]);
    failed(&out, "deleting a delivered message");
    assert!(out.stderr.contains("m1: no such message"), "{}", out.stderr);
}

#[test]
fn bounce_notifies_the_sender_and_never_bounces_a_bounce() {
    let s = Setup::polite();
    s.queue.add(
        "d1.test",
        "m1",
        "alice@src.test",
        &["x@d1.test", "y@d1.test"],
        &message("m1", "x\n"),
    );
    s.queue
        .add("d1.test", "m2", "", &["z@d1.test"], &message("m2", "x\n"));
    let out = s.postman("bounce", &["m1", "d1.test/m2"]);
    succeeded(&out);
    assert!(
        out.stdout
            .contains("d1.test/m1: bounced to <alice@src.test> (2 recipients"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("d1.test/m2: deleted without a bounce"),
        "{}",
        out.stdout
    );
    assert!(s.queue.state().queued_in("d1.test").is_empty(), "both gone");
    let bounces = s.queue.bounces_to("alice@src.test");
    assert_eq!(bounces.len(), 1, "one DSN to alice");
    let text = bounces[0].text();
    for want in [
        "message bounced by the administrator",
        "Status: 5.0.0",
        "Action: failed",
        "Final-Recipient: rfc822; x@d1.test",
        "Final-Recipient: rfc822; y@d1.test",
        "Subject: test m1",
    ] {
        assert!(
            text.contains(want),
            "the DSN should contain {want:?}:\n{text}"
        );
    }
    // The DSN itself is delivered by the next run, from the null sender.
    s.run_once();
    assert!(s.queue.state().is_empty(), "{:#?}", s.queue.state());
    assert!(
        s.server
            .commands()
            .iter()
            .any(|c| c == "MAIL FROM:<>" || c.starts_with("MAIL FROM:<> ")),
        "{:?}",
        s.server.commands()
    );
}

#[test]
fn flush_makes_a_deferred_message_due_and_ends_the_backoff() {
    let s = Setup::new(vec![
        Script::polite().answer("RCPT", "451 4.7.1 try later"),
        Script::polite(),
    ]);
    s.queue.add(
        "d1.test",
        "m1",
        "a@src.test",
        &["x@d1.test"],
        &message("m1", "x\n"),
    );
    s.run_once();
    assert_eq!(s.server.connection_count(), 1);
    s.run_once();
    assert_eq!(s.server.connection_count(), 1, "not due: not tried again");
    let backoff = s.queue.domain_dir("d1.test").join(".backoff");
    std::fs::write(
        &backoff,
        format!(
            "until: {}\nfailures: 2\nerror: refused\n",
            unix_now() + 3600
        ),
    )
    .unwrap();

    let out = s.postman("flush", &["--domain", "d1.test"]);
    succeeded(&out);
    assert!(
        out.stdout.contains("d1.test/m1: due now\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("d1.test: backoff ended"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("1 deferred message made due now"),
        "{}",
        out.stdout
    );
    assert!(!backoff.exists(), "the backoff file is removed");
    let m1 = &s.listing()[0];
    assert_eq!(
        (m1["state"].as_str(), m1["attempts"].as_u64()),
        (Some("ready"), Some(1)),
        "{m1}"
    );

    let run = s.run_once();
    assert!(
        s.queue.state().is_empty(),
        "delivered after the flush: {}",
        run.stderr
    );
    // (With PIPELINING the refused attempt may have sent an empty DATA.)
    let bodies = s.server.bodies();
    assert_eq!(
        bodies.last().map(|b| unstuff(b)),
        Some(on_the_wire(&message("m1", "x\n"))),
        "{bodies:?}"
    );
}

#[test]
fn stats_summarises_the_json_log_of_a_real_run() {
    let s = Setup::new(vec![Script::polite()
        .answer("RCPT TO:<slow", "451 4.7.1 <slow@d2.test> greylisted")
        .answer("RCPT TO:<gone", "550 5.1.1 <gone@d1.test> no such user")]);
    s.queue.add(
        "d1.test",
        "m1",
        "a@src.test",
        &["x@d1.test", "gone@d1.test"],
        &message("m1", "x\n"),
    );
    s.queue.add(
        "d1.test",
        "m2",
        "a@src.test",
        &["y@d1.test"],
        &message("m2", "x\n"),
    );
    s.queue.add(
        "d2.test",
        "m3",
        "a@src.test",
        &["slow@d2.test", "z@d2.test"],
        &message("m3", "x\n"),
    );
    let run = s.run_once();
    let deliveries = run.deliveries();
    assert_eq!(deliveries.len(), 5, "{deliveries:#?}");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("postman.log");
    std::fs::write(&log, &run.stderr).unwrap();

    let out = postman!().run(&["stats", log.to_str().unwrap()], DEADLINE);
    succeeded(&out);
    for want in [
        "Throughput",
        "whole span",
        "last minute",
        "Deliveries: 5  sent 3  deferred 1  bounced 1\n",
        "Deferral rate by domain",
        "d2.test",
        "451 4.7.1 <*> greylisted",
        "550 5.1.1 <*> no such user",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in:\n{}\n--- log ---\n{}",
            out.stdout,
            run.stderr
        );
    }
    let d2 = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("d2.test"))
        .unwrap();
    let cols: Vec<&str> = d2.split_whitespace().collect();
    assert_eq!(
        cols[1..4],
        ["2", "1", "50.0%"],
        "d2.test: 2 attempts, 1 deferred: {d2}"
    );
    // Every actor writes a metrics record as it stops; the latest of each
    // is shown.
    for actor in ["dispatcher", "scanner", "worker 0"] {
        assert!(
            out.stdout.contains(&format!("\n  {actor:<11} ")),
            "metrics of {actor}:\n{}",
            out.stdout
        );
    }
    let piped = postman!().run_with_input(&["stats", "-"], run.stderr.as_bytes(), DEADLINE);
    assert_eq!(
        succeeded(&piped).stdout,
        out.stdout,
        "standard input reads the same"
    );
}
