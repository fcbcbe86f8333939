//! End to end: the operator commands while postman runs.
//!
//! * Beside a running daemon: a message from `enqueue` is delivered at once
//!   (no rescan); `hold`, `release`, `delete`, `flush` and `bounce` take
//!   effect in the daemon's schedule.
//! * `stats --follow` reads a log that grows (partial lines kept until their
//!   end) and is rotated.
//!
//! The commands against a one-shot `run --once` are in `ops.rs`.

mod common;

use std::time::{Duration, Instant};

use common::{message, on_the_wire, succeeded, Setup};
use postman_integration::hostile::unstuff;
use postman_integration::postman;
use postman_integration::queue::unix_now;

/// Waits until `done()` or `timeout`.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[test]
fn a_message_enqueued_while_the_daemon_runs_is_delivered_at_once() {
    let mut s = Setup::polite();
    s.config.rescan_interval = 3600;
    s.rewrite_config();
    let mut daemon = postman!().spawn_daemon(&s.file);
    std::thread::sleep(Duration::from_millis(700));
    let msg = message("live", "enqueued beside a daemon\n");
    succeeded(&s.postman_with_input(
        "enqueue",
        &["--from", "a@src.test", "--to", "x@d1.test"],
        &msg,
    ));
    let delivered = wait_until(Duration::from_secs(10), || s.server.bodies().len() == 1);
    assert!(
        delivered,
        "picked up without a rescan (inotify)\n--- log ---\n{}",
        daemon.log_text()
    );
    assert_eq!(unstuff(&s.server.bodies()[0]), on_the_wire(&msg));
    daemon.terminate(Duration::from_secs(10));
}

/// A queue file from a@src.test to x@d1.test that was tried once and is
/// due again at `next` (unix seconds).
fn deferred_file(next: u64, id: &str) -> Vec<u8> {
    let mut bytes = format!(
        "X-Postman-From: <a@src.test>\nX-Postman-Date: {}\nX-Postman-To: <x@d1.test>\nX-Postman-Attempts: 1\nX-Postman-Next-Attempt: {next}\n\n",
        unix_now()
    )
    .into_bytes();
    bytes.extend_from_slice(&message(id, "x\n"));
    bytes
}

#[test]
fn hold_release_and_delete_beside_a_running_daemon() {
    let mut s = Setup::polite();
    s.config.rescan_interval = 3600;
    s.rewrite_config();
    // Due in a few seconds, so the daemon knows them and waits (long
    // enough for the commands to run first on a loaded machine).
    let next = unix_now() + 6;
    s.queue
        .add_raw("d1.test", "m1", &deferred_file(next, "held"));
    s.queue
        .add_raw("d1.test", "m2", &deferred_file(next, "deleted"));
    let mut daemon = postman!().spawn_daemon(&s.file);
    std::thread::sleep(Duration::from_millis(700));
    succeeded(&s.postman("hold", &["m1"]));
    succeeded(&s.postman("delete", &["m2"]));
    assert!(
        unix_now() < next,
        "the commands ran before the messages were due"
    );
    // Past their due time: the daemon would have sent them by now.
    while unix_now() <= next + 1 {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.server.bodies().is_empty(),
        "neither a held nor a deleted message is delivered\n{}",
        daemon.log_text()
    );
    succeeded(&s.postman("release", &["m1"]));
    let delivered = wait_until(Duration::from_secs(10), || s.server.bodies().len() == 1);
    assert!(
        delivered,
        "delivered after its release\n--- log ---\n{}",
        daemon.log_text()
    );
    let body = unstuff(&s.server.bodies()[0]);
    assert!(
        String::from_utf8_lossy(&body).contains("Subject: test held"),
        "the released message, not the deleted one"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.server.bodies().len(), 1, "m2 stays deleted");
    assert!(s.queue.state().is_empty(), "{:#?}", s.queue.state());
    daemon.terminate(Duration::from_secs(10));
}

#[test]
fn flush_beside_a_running_daemon() {
    let mut s = Setup::polite();
    s.config.rescan_interval = 3600;
    s.rewrite_config();
    s.queue.add_raw(
        "d1.test",
        "m1",
        &deferred_file(unix_now() + 3600, "flushed"),
    );
    let mut daemon = postman!().spawn_daemon(&s.file);
    std::thread::sleep(Duration::from_millis(700));
    assert!(s.server.bodies().is_empty(), "not due yet");
    succeeded(&s.postman("flush", &[]));
    let delivered = wait_until(Duration::from_secs(10), || s.server.bodies().len() == 1);
    assert!(
        delivered,
        "delivered after the flush\n--- log ---\n{}",
        daemon.log_text()
    );
    daemon.terminate(Duration::from_secs(10));
}

#[test]
fn bounce_beside_a_running_daemon_delivers_the_notification() {
    let mut s = Setup::polite();
    s.config.rescan_interval = 3600;
    s.rewrite_config();
    let mut bytes = format!(
        "X-Postman-From: <alice@src.test>\nX-Postman-Date: {}\nX-Postman-To: <x@d1.test>\nX-Postman-Attempts: 1\nX-Postman-Next-Attempt: {}\n\n",
        unix_now(),
        unix_now() + 3600
    )
    .into_bytes();
    bytes.extend_from_slice(&message("bounced", "x\n"));
    s.queue.add_raw("d1.test", "m1", &bytes);
    let mut daemon = postman!().spawn_daemon(&s.file);
    std::thread::sleep(Duration::from_millis(700));
    succeeded(&s.postman("bounce", &["m1"]));
    let delivered = wait_until(Duration::from_secs(10), || s.server.bodies().len() == 1);
    assert!(
        delivered,
        "the notification is delivered\n--- log ---\n{}",
        daemon.log_text()
    );
    let dsn = String::from_utf8_lossy(&s.server.bodies()[0]).into_owned();
    assert!(
        dsn.contains("message bounced by the administrator"),
        "{dsn}"
    );
    daemon.terminate(Duration::from_secs(10));
}

#[test]
fn stats_follow_reads_a_growing_and_rotated_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("postman.log");
    let record = |n: u32| {
        format!(
            "{{\"msg\":\"delivery\",\"level\":\"INFO\",\"ts\":\"2025-11-27T13:00:{n:02}+00:00\",\"domain\":\"d1.test\",\"to\":\"x@d1.test\",\"status\":\"sent\",\"reply\":\"250 ok\"}}\n"
        )
    };
    std::fs::write(&log, record(1)).unwrap();
    let mut child = postman!()
        .command(&[
            "stats",
            "--follow",
            "--interval",
            "1",
            log.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start postman stats --follow");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(1500));
    // The file grows (a partial line is kept until its end arrives) ...
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let two = record(2) + &record(3);
        let (head, tail) = two.split_at(two.len() - 10);
        f.write_all(head.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        f.write_all(tail.as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    // ... and is rotated: renamed away, a new one started.
    std::fs::rename(&log, dir.path().join("postman.log.1")).unwrap();
    std::fs::write(&log, record(4)).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let _ = child.kill();
    let _ = child.wait();
    let text = reader.join().unwrap();
    let counts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Deliveries: "))
        .collect();
    assert!(
        counts
            .first()
            .is_some_and(|l| l.starts_with("Deliveries: 1 ")),
        "{text}"
    );
    assert!(
        counts.iter().any(|l| l.starts_with("Deliveries: 3 ")),
        "growth seen: {counts:?}"
    );
    assert!(
        counts
            .last()
            .is_some_and(|l| l.starts_with("Deliveries: 4 ")),
        "rotation followed: {counts:?}"
    );
    assert!(
        !text.contains("not JSON"),
        "a partial line is kept until its end arrives, never read half: {text}"
    );
}
