//! End to end: what an administrator sees of a running postman. Each actor's
//! `metrics` record with numbers that match what was sent, SIGHUP reloading
//! the settings and saying what changed, and `log.file` reopened on SIGUSR1
//! for log rotation.

mod common;

use std::time::{Duration, Instant};

use common::{config, message};
use nix::sys::signal::Signal;
use postman_integration::postman::parse_log;
use postman_integration::{postman, DnsServer, HostileServer, TestNet, TestQueue, Zones};
use serde_json::Value;

const STOP_WITHIN: Duration = Duration::from_secs(8);

/// The last `metrics` record of `actor` (and `worker`, for workers).
fn last_metrics<'a>(records: &'a [Value], actor: &str) -> Vec<&'a Value> {
    let mut by_worker = std::collections::BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r["msg"] == "metrics" && r["actor"] == actor)
    {
        by_worker.insert(r["worker"].as_u64().unwrap_or(0), r);
    }
    by_worker.into_values().collect()
}

fn sum(records: &[&Value], field: &str) -> u64 {
    records.iter().filter_map(|r| r[field].as_u64()).sum()
}

#[test]
fn metrics_records_count_what_was_sent() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(
        Zones::new()
            .mx("m.test", 10, "mx.m.test")
            .mx("n.test", 10, "mx.m.test")
            .a("mx.m.test", net.ipv4(1)),
    );
    let queue = TestQueue::new();
    for i in 0..12 {
        let domain = if i % 3 == 0 { "n.test" } else { "m.test" };
        queue.add(
            domain,
            &format!("q{i}"),
            "a@src.test",
            &[&format!("u{i}@{domain}"), &format!("v{i}@{domain}")],
            &message(&format!("q{i}"), "counted\n"),
        );
    }
    queue.add_raw("m.test", "broken", b"no envelope here\n");
    let mut cfg = config(&queue, &net, &dns);
    cfg.threads = 2;
    cfg.metrics_interval = 0;
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let records = out.records();

    let scanner = last_metrics(&records, "scanner");
    assert_eq!(scanner.len(), 1, "one final scanner record: {}", out.stderr);
    assert_eq!(scanner[0]["found"], 12, "scanner found: {}", scanner[0]);
    assert_eq!(
        scanner[0]["parse_errors"], 1,
        "the broken file: {}",
        scanner[0]
    );

    let dispatcher = last_metrics(&records, "dispatcher");
    assert_eq!(dispatcher.len(), 1, "{}", out.stderr);
    let d = dispatcher[0];
    assert_eq!(d["found"], 12, "dispatcher found: {d}");
    assert_eq!(d["finished"], 12, "dispatcher finished: {d}");
    assert_eq!(d["domains"], 2, "dispatcher domains: {d}");
    assert_eq!(d["dns_lookups"], 2, "one route lookup per domain: {d}");

    let workers = last_metrics(&records, "worker");
    assert_eq!(
        workers.len(),
        2,
        "a final record per worker: {}",
        out.stderr
    );
    assert_eq!(sum(&workers, "sent"), 24, "recipients sent, all workers");
    assert_eq!(
        sum(&workers, "transactions"),
        12,
        "one transaction a message"
    );
    assert_eq!(sum(&workers, "deferred") + sum(&workers, "bounced"), 0);
    assert_eq!(
        sum(&workers, "connections_opened") as usize,
        server.connection_count(),
        "connections opened, as the server counted them"
    );
    assert!(sum(&workers, "bytes_written") > 12 * 100, "bytes written");

    let logger = last_metrics(&records, "logger");
    assert_eq!(logger.len(), 1, "{}", out.stderr);
    // Records written by the drain thread when the record was made: the
    // count trails the stream a little, and never exceeds it.
    let written = logger[0]["records"].as_u64().unwrap_or(0);
    assert!(
        written > 0 && written as usize <= records.len(),
        "records written ({written}) should be within the {} lines logged: {}",
        records.len(),
        logger[0]
    );
    assert_eq!(logger[0]["dropped"], 0);
}

#[test]
fn sighup_reloads_the_settings_and_reports_what_changed() {
    let net = TestNet::new();
    let _server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("h.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let mut cfg = config(&queue, &net, &dns);
    let file = cfg.write();
    let mut daemon = postman!().spawn_daemon(&file);
    assert!(
        daemon.wait_for(Duration::from_secs(5), |r| r
            .iter()
            .any(|r| r["msg"] == "queue scanned")),
        "the daemon should start: {}",
        daemon.log_text()
    );

    cfg.max_connections_per_domain = 3;
    cfg.threads = 3;
    std::fs::write(file.path(), cfg.to_toml()).unwrap();
    daemon.signal(Signal::SIGHUP);
    let changed = |r: &[Value], key: &str| {
        r.iter()
            .any(|r| r["key"] == key && r["msg"].as_str().is_some_and(|m| m.starts_with("SIGHUP")))
    };
    assert!(
        daemon.wait_for(Duration::from_secs(5), |r| changed(
            r,
            "delivery.max_connections_per_domain"
        ) && changed(
            r,
            "application.threads"
        )),
        "SIGHUP should report both changes: {}",
        daemon.log_text()
    );
    let records = daemon.records();
    let threads = records
        .iter()
        .find(|r| r["key"] == "application.threads")
        .unwrap();
    assert!(
        threads["msg"].as_str().unwrap_or("").contains("restart"),
        "a thread count change needs a restart: {threads}"
    );

    // A broken file keeps the old settings and the daemon running.
    std::fs::write(file.path(), "[delivery]\nmax_connections = \"lots\"\n").unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_for(Duration::from_secs(5), |r| r
            .iter()
            .any(|r| r["msg"].as_str().unwrap_or("").contains("not valid"))),
        "an invalid reload is refused: {}",
        daemon.log_text()
    );
    // It still delivers.
    std::fs::write(file.path(), cfg.to_toml()).unwrap();
    queue.add(
        "h.test",
        "after-reload",
        "a@src.test",
        &["u@h.test"],
        &message("after-reload", "x\n"),
    );
    let sent = daemon.wait_for(Duration::from_secs(10), |r| {
        postman_integration::postman::deliveries(r)
            .iter()
            .any(|d| d.status == "sent")
    });
    assert!(
        sent,
        "still delivering after reloads: {}",
        daemon.log_text()
    );
    assert!(daemon.is_running(), "{}", daemon.log_text());
    daemon.terminate(STOP_WITHIN);
}

#[test]
fn log_file_is_reopened_on_sigusr1() {
    let net = TestNet::new();
    let _server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("r.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("postman.log");
    // The harness writes a [log] table: put the key into it.
    let text = config(&queue, &net, &dns).to_toml().replace(
        "[log]\nformat",
        &format!("[log]\nfile = {:?}\nformat", log.display().to_string()),
    );
    assert!(text.contains("file = "), "the config names the log file");
    let file = postman_integration::postman::ConfigFile::with_text(&text);
    let mut daemon = postman!().spawn_daemon(&file);

    let read =
        |path: &std::path::Path| parse_log(&std::fs::read_to_string(path).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&log).iter().any(|r| r["msg"] == "queue scanned") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        read(&log).iter().any(|r| r["msg"] == "queue scanned"),
        "the log goes to log.file; stderr: {}",
        daemon.log_text()
    );

    // logrotate: move the file away, then tell postman.
    let rotated = logs.path().join("postman.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    daemon.signal(Signal::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() && Instant::now() < deadline {
        // The reopen happens at the next record: the SIGUSR1 line itself.
        std::thread::sleep(Duration::from_millis(20));
    }
    queue.add(
        "r.test",
        "rotated",
        "a@src.test",
        &["u@r.test"],
        &message("rotated", "x\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read(&log).iter().any(|r| r["msg"] == "delivery") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        read(&log).iter().any(|r| r["msg"] == "delivery"),
        "new records go to the new file: {:?}",
        std::fs::read_to_string(&log)
    );
    assert!(
        !read(&rotated).iter().any(|r| r["msg"] == "delivery"),
        "the rotated file gets nothing new"
    );
    daemon.terminate(STOP_WITHIN);
}

/// A log that cannot be written (here `log.file` is /dev/full, as a full
/// disk under the log would be) is said so once on standard error and
/// stops nothing: every message is still delivered and the run ends
/// cleanly. (Its records are kept for a retry, and lost at the end.)
#[test]
fn a_log_that_cannot_be_written_stops_no_delivery() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("r.test", net.ipv4(1)));
    let queue = TestQueue::new();
    for i in 0..20 {
        queue.add(
            "r.test",
            &format!("m{i}"),
            "a@src.test",
            &["u@r.test"],
            &message(&format!("m{i}"), "logged nowhere\n"),
        );
    }
    let text = config(&queue, &net, &dns)
        .to_toml()
        .replace("[log]\nformat", "[log]\nfile = \"/dev/full\"\nformat");
    assert!(text.contains("/dev/full"), "the config names the log file");
    let file = postman_integration::postman::ConfigFile::with_text(&text);
    let out = postman!().run_once(&file);
    out.assert_success();
    assert_eq!(server.body_count(), 20, "every message delivered");
    assert!(queue.state().is_empty(), "{}", queue.describe());
    let complaints = out.stderr.matches("cannot write the log").count();
    assert_eq!(complaints, 1, "said once: {}", out.stderr);
}
