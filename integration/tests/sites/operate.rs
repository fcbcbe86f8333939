//! See sites.rs. The operator's view and hand on sites beside a running
//! daemon: `postman flush` ends a site's backoff (the daemon sees the
//! file go and tries the site at once), and `postman queue summary` shows
//! the queue by site, from the snapshot the daemon keeps.

use std::time::{Duration, Instant};

use postman_integration::postman::SmtpTimeouts;
use postman_integration::postman::{ConfigFile, Daemon};
use postman_integration::{
    postman, BlackHole, DnsServer, HostileServer, RunOutput, Script, TestNet, TestQueue, Zones,
};
use serde_json::Value;

use super::common::{add_numbered, config, DEADLINE};
use super::named;

/// The MX host both domains share.
const MX: &str = "mx.flush.test";

/// `a.flush.test` and `b.flush.test` on one site whose host takes no
/// connection until [`Shared::serve`]; backoffs of an hour.
struct Shared {
    net: TestNet,
    _dns: DnsServer,
    queue: TestQueue,
    file: ConfigFile,
}

impl Shared {
    fn new() -> Shared {
        let net = TestNet::new();
        let dns = DnsServer::start(
            Zones::new()
                .mx("a.flush.test", 10, MX)
                .mx("b.flush.test", 10, MX)
                .a(MX, net.ipv4(1)),
        );
        let queue = TestQueue::new();
        let mut cfg = config(&queue, &net, &dns);
        cfg.min_backoff = 3600;
        let file = cfg.write();
        Shared {
            net,
            _dns: dns,
            queue,
            file,
        }
    }

    /// A polite server on the site's address from now on.
    fn serve(&self) -> HostileServer {
        HostileServer::polite(self.net.addr(1))
    }

    /// `postman <command> --config FILE <args>`; it must succeed.
    fn postman(&self, command: &str, args: &[&str]) -> RunOutput {
        let config = self.file.path().to_string_lossy().into_owned();
        let mut all = vec![command, "--config", &config];
        all.extend_from_slice(args);
        let out = postman!().run(&all, DEADLINE);
        out.assert_success();
        out
    }

    /// Waits until the daemon logged `msg`.
    fn wait_logged(&self, daemon: &Daemon, msg: &str) {
        assert!(
            daemon.wait_for(Duration::from_secs(10), |records| !named(records, msg)
                .is_empty()),
            "no {msg:?} record\n{}",
            daemon.log_text()
        );
    }
}

/// Message-IDs the server received whose tag starts with `tag`.
fn received(server: &HostileServer, tag: &str) -> usize {
    let prefix = format!("<{tag}");
    server
        .message_ids()
        .iter()
        .filter(|id| id.starts_with(&prefix))
        .count()
}

/// A site backing off for an hour (its host refused every connection)
/// while a daemon runs: once its server is up, `postman flush --domain
/// a.flush.test` says it ended the site's backoff, and the daemon delivers
/// a.flush.test's 2 messages within 10 s, not in an hour; then `postman
/// flush` makes b.flush.test's messages due too (those tried in the failed
/// round keep their own retry time until then), and all 4 are delivered.
#[test]
fn flush_ends_a_site_backoff_in_a_running_daemon() {
    let s = Shared::new();
    let daemon = postman!().spawn_daemon(&s.file);
    add_numbered(&s.queue, "a.flush.test", 2, "a");
    add_numbered(&s.queue, "b.flush.test", 2, "b");
    s.wait_logged(&daemon, "site backing off");
    let server = s.serve();

    let flushed = s.postman("flush", &["--domain", "a.flush.test"]);
    assert!(
        flushed
            .stdout
            .contains(&format!("site {MX}: backoff ended (it was until ")),
        "flush says which site it lifted:\n{}",
        flushed.stdout
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while received(&server, "a") < 2 {
        assert!(
            Instant::now() < deadline,
            "{} of a.flush.test's 2 delivered within 10 s of the flush\n{}",
            received(&server, "a"),
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The log is written behind the deliveries: wait for the record.
    s.wait_logged(&daemon, "site backoff lifted");

    let second = s.postman("flush", &[]);
    assert!(
        server.wait_bodies(4, Duration::from_secs(10)),
        "{} of 4 delivered within 10 s of the second flush: {:?}\n\
         --- flush ---\n{}\n--- queue ---\n{}\n--- log ---\n{}",
        server.body_count(),
        server.message_ids(),
        second.stdout,
        s.queue.describe(),
        daemon.log_text()
    );
}

/// Three kinds of domain beside a running daemon: `a.sum.test` and
/// `b.sum.test` on `mx.sum.test`, whose server defers every recipient
/// (451) and whose rule paces it at 300/m; `c.sum.test` on
/// `mx.down.sum.test`, whose host refuses connections (the site backs
/// off); `d.sum.test`, suspended before its mail came, so its route was
/// never looked up.
struct Mixed {
    _server: HostileServer,
    _dns: DnsServer,
    queue: TestQueue,
    file: ConfigFile,
}

impl Mixed {
    fn new() -> Mixed {
        let net = TestNet::new();
        let server = HostileServer::start(
            net.addr(1),
            vec![Script::polite().answer("RCPT", "451 4.7.1 try again later")],
        );
        let dns = DnsServer::start(
            Zones::new()
                .mx("a.sum.test", 10, "mx.sum.test")
                .mx("b.sum.test", 10, "mx.sum.test")
                .mx("c.sum.test", 10, "mx.down.sum.test")
                .mx("d.sum.test", 10, "mx.sum.test")
                .a("mx.sum.test", net.ipv4(1))
                .a("mx.down.sum.test", net.ipv4(2)),
        );
        let queue = TestQueue::new();
        let mut cfg = config(&queue, &net, &dns);
        cfg.min_backoff = 3600;
        cfg.extra = "\n[delivery.site.\"mx.sum.test\"]\nmax_message_rate = \"300/m\"\n".into();
        Mixed {
            _server: server,
            _dns: dns,
            queue,
            file: cfg.write(),
        }
    }

    /// `postman queue summary --json`, parsed.
    fn summary_json(&self) -> Vec<Value> {
        let config = self.file.path().to_string_lossy().into_owned();
        let out = postman!().run(
            &["queue", "--config", &config, "summary", "--json"],
            DEADLINE,
        );
        out.assert_success();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The `site` line for `site` (`Value::Null`: the domains whose site is
/// not known).
fn site_line<'a>(lines: &'a [Value], site: &Value) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["kind"] == "site" && &l["site"] == site)
}

/// The names of a site line's domains.
fn domain_names(line: &Value) -> Vec<String> {
    line["domains"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .filter_map(|d| d["domain"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `postman queue summary` groups the queue by site from the daemon's
/// snapshot: `mx.sum.test` with its two domains, their 4 messages, its
/// limit and the rule's 300/m (5/s); `mx.down.sum.test` backing off after one
/// failed round; the suspended `d.sum.test` under "(site not known)";
/// the suspension listed. The text says the same, domain lines under their
/// site's line. Once the daemon stopped, the summary says the view is
/// what it left.
#[test]
fn queue_summary_groups_the_queue_by_site() {
    let m = Mixed::new();
    let config = m.file.path().to_string_lossy().into_owned();
    let out = postman!().run(
        &[
            "suspend",
            "--config",
            &config,
            "--domain",
            "d.sum.test",
            "--reason",
            "dns move",
        ],
        DEADLINE,
    );
    out.assert_success();
    let mut daemon = postman!().spawn_daemon(&m.file);
    for domain in ["a.sum.test", "b.sum.test", "c.sum.test", "d.sum.test"] {
        add_numbered(&m.queue, domain, 2, domain);
    }
    // The snapshot is rewritten every 2 s while it changes: poll for it.
    let deadline = Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let lines = m.summary_json();
        let shared = site_line(&lines, &Value::from("mx.sum.test")).map(domain_names);
        let down = site_line(&lines, &Value::from("mx.down.sum.test"));
        if shared.as_deref() == Some(&["a.sum.test".to_owned(), "b.sum.test".to_owned()][..])
            && down.is_some_and(|d| d["state"] == "backoff")
        {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "no summary by site within 15 s: {lines:#?}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = &lines[0];
    assert_eq!(status["kind"], "status");
    assert_eq!(status["running"], true, "{status}");
    let shared = site_line(&lines, &Value::from("mx.sum.test")).unwrap();
    assert_eq!(shared["total"], 4, "{shared}");
    assert_eq!(shared["hosts"], serde_json::json!(["mx.sum.test"]));
    // 300/m, in the largest unit that keeps the count whole or above 1.
    assert_eq!(shared["message_rate"], "5/s", "{shared}");
    assert_eq!(shared["rate_source"], "rule", "{shared}");
    assert_eq!(shared["max_connections"], 20, "{shared}");
    assert!(shared["limit"].as_u64().is_some_and(|l| l >= 1), "{shared}");
    assert_eq!(shared["state"], Value::Null, "{shared}");
    let down = site_line(&lines, &Value::from("mx.down.sum.test")).unwrap();
    assert_eq!(
        (down["total"].as_u64(), down["failures"].as_u64()),
        (Some(2), Some(1)),
        "{down}"
    );
    let unknown = site_line(&lines, &Value::Null).expect("the domains whose site is not known");
    assert_eq!(domain_names(unknown), ["d.sum.test"], "{unknown}");
    assert_eq!(unknown["domains"][0]["suspended"], true, "{unknown}");
    assert_eq!(unknown["domains"][0]["suspension_reason"], "dns move");
    let suspensions: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "suspension").collect();
    assert_eq!(suspensions.len(), 1, "{lines:#?}");
    assert_eq!(
        (&suspensions[0]["target"], &suspensions[0]["name"]),
        (&Value::from("domain"), &Value::from("d.sum.test"))
    );

    let text = postman!().run(&["queue", "--config", &config, "summary"], DEADLINE);
    text.assert_success();
    let rows: Vec<&str> = text.stdout.lines().collect();
    let at = |prefix: &str| {
        rows.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}:\n{}", text.stdout))
    };
    let site = at("mx.sum.test ");
    assert!(rows[site].contains("5/s"), "{}", rows[site]);
    let mut under: Vec<&str> = rows[site + 1..site + 3]
        .iter()
        .map(|l| l.trim_start())
        .collect();
    under.sort_unstable();
    assert!(
        under[0].starts_with("a.sum.test ") && under[1].starts_with("b.sum.test "),
        "its domains under it:\n{}",
        text.stdout
    );
    assert!(
        rows[at("mx.down.sum.test ")].contains("backing off until"),
        "{}",
        text.stdout
    );
    let unknown = at("(site not known)");
    assert!(
        rows[unknown + 1].trim_start().starts_with("d.sum.test ")
            && rows[unknown + 1]
                .contains("suspended by the operator until postman resume: dns move"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .starts_with("Sites as the running postman (pid "),
        "{}",
        text.stdout
    );

    daemon.terminate(Duration::from_secs(10));
    let after = postman!().run(&["queue", "--config", &config, "summary"], DEADLINE);
    assert!(
        after.stdout.contains("left them when it stopped"),
        "{}",
        after.stdout
    );
}

/// The `deferred` records that say a message waits for the operator's
/// suspension of `domain`.
fn held_records(daemon: &Daemon, domain: &str) -> usize {
    let reply = format!("delivery to domain {domain} suspended: by the operator");
    daemon
        .deliveries()
        .iter()
        .filter(|d| d.status == "deferred" && d.reply.starts_with(&reply))
        .count()
}

/// A flush does not lift the operator's suspension. `a.flush.test` has
/// one message delivered (its route is known from then on), is suspended,
/// and its next 2 messages wait (2 records say why); its route backoff on
/// disk (`.backoff`, as an earlier run left it) is removed by `postman
/// flush --domain a.flush.test`, which lifts the domain's backoff in the
/// daemon, and the suspension holds again at once: the messages wait anew
/// (2 more records), and the server, up all along, gets none of them.
#[test]
fn a_flush_does_not_lift_a_suspension() {
    let s = Shared::new();
    let server = s.serve();
    let daemon = postman!().spawn_daemon(&s.file);
    add_numbered(&s.queue, "a.flush.test", 1, "first");
    assert!(
        server.wait_bodies(1, Duration::from_secs(10)),
        "the first message\n{}",
        daemon.log_text()
    );
    s.postman("suspend", &["--domain", "a.flush.test"]);
    s.wait_logged(&daemon, "domain suspended by the operator");
    add_numbered(&s.queue, "a.flush.test", 2, "a");
    let wait_held = |n: usize| {
        assert!(
            daemon.wait_for(Duration::from_secs(10), |_| {
                held_records(&daemon, "a.flush.test") >= n
            }),
            "{} of {n} records of a message held by the suspension\n{}",
            held_records(&daemon, "a.flush.test"),
            daemon.log_text()
        );
    };
    wait_held(2);
    let backoff = s.queue.domain_dir("a.flush.test").join(".backoff");
    std::fs::write(
        &backoff,
        "until: 9999999999\nfailures: 1\nerror: dns timeout\n",
    )
    .expect("write .backoff");

    let flushed = s.postman("flush", &["--domain", "a.flush.test"]);
    assert!(
        flushed.stdout.contains("a.flush.test: backoff ended"),
        "{}",
        flushed.stdout
    );
    wait_held(4);
    assert_eq!(
        received(&server, "a"),
        0,
        "the suspended domain got nothing\n{}",
        daemon.log_text()
    );
    assert_eq!(s.queue.state().queued_in("a.flush.test").len(), 2);
}

/// A site suspended while a connection to it is in flight: the connection
/// (to a host that never greets) times out, the site's backoff would take
/// the suspension's place and end after a second, but the suspension holds
/// again at once: when the failed message comes due it waits for the
/// operator (a record says so) and no second connection is opened.
#[test]
fn a_failure_in_flight_does_not_end_a_site_suspension() {
    let net = TestNet::new();
    let hole = BlackHole::start(net.addr(1));
    let dns = DnsServer::start(
        Zones::new()
            .mx("a.hole.test", 10, "mx.hole.test")
            .a("mx.hole.test", net.ipv4(1)),
    );
    let queue = TestQueue::new();
    let mut cfg = config(&queue, &net, &dns);
    cfg.min_backoff = 1;
    cfg.timeouts = SmtpTimeouts::all(2);
    let file = cfg.write();
    let daemon = postman!().spawn_daemon(&file);
    add_numbered(&queue, "a.hole.test", 1, "a");
    let deadline = Instant::now() + Duration::from_secs(10);
    while hole.connection_count() < 1 {
        assert!(
            Instant::now() < deadline,
            "no connection\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = file.path().to_string_lossy().into_owned();
    postman!()
        .run(
            &["suspend", "--config", &config, "--site", "mx.hole.test"],
            DEADLINE,
        )
        .assert_success();
    let held = |records: &[Value]| {
        records.iter().any(|r| {
            r["msg"] == "delivery"
                && r["status"] == "deferred"
                && r["reply"].as_str().is_some_and(|t| {
                    t.starts_with("delivery to site mx.hole.test suspended: by the operator")
                })
        })
    };
    assert!(
        daemon.wait_for(Duration::from_secs(15), |records| {
            !named(records, "site backing off").is_empty() && held(records)
        }),
        "the failed message waits for the operator after the backoff\n{}",
        daemon.log_text()
    );
    assert_eq!(
        hole.connection_count(),
        1,
        "no second connection to a suspended site\n{}",
        daemon.log_text()
    );
}
