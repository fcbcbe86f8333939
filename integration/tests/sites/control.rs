//! See sites.rs. The operator suspends and resumes a domain or a whole
//! site (`postman suspend` / `postman resume`, with an optional duration),
//! beside a running daemon as the other queue commands are; `postman queue
//! summary` shows it.

use std::time::{Duration, Instant};

use postman_integration::postman::{ConfigFile, Daemon};
use postman_integration::{
    postman, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};

use super::common::{add_numbered, config, DEADLINE};

/// The site of both domains.
const SITE: &str = "mx.ctl.test";

/// What `postman suspend` / `resume` act on.
enum Target<'a> {
    Domain(&'a str),
    Site(&'a str),
}

/// `a.test` and `b.test` on one site, `mx.ctl.test`, a polite server, and
/// a daemon (started by [`Control::start`] after the suspension, when the
/// test wants it that way).
struct Control {
    server: HostileServer,
    _dns: DnsServer,
    queue: TestQueue,
    file: ConfigFile,
}

impl Control {
    fn new() -> Control {
        let net = TestNet::new();
        let server = HostileServer::polite(net.addr(1));
        let dns = DnsServer::start(
            Zones::new()
                .mx("a.test", 10, SITE)
                .mx("b.test", 10, SITE)
                .a(SITE, net.ipv4(1)),
        );
        let queue = TestQueue::new();
        let mut cfg = config(&queue, &net, &dns);
        cfg.min_backoff = 1;
        let file = cfg.write();
        Control {
            server,
            _dns: dns,
            queue,
            file,
        }
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

    /// `postman suspend` of `target`, for `seconds` when given.
    fn suspend(&self, target: Target<'_>, seconds: Option<u64>) -> RunOutput {
        let seconds = seconds.map(|s| s.to_string());
        let mut args = match target {
            Target::Domain(name) => vec!["--domain", name],
            Target::Site(name) => vec!["--site", name],
        };
        if let Some(s) = &seconds {
            args.extend(["--for", s.as_str()]);
        }
        self.postman("suspend", &args)
    }

    /// `postman resume` of `target`.
    fn resume(&self, target: Target<'_>) -> RunOutput {
        let args = match target {
            Target::Domain(name) => vec!["--domain", name],
            Target::Site(name) => vec!["--site", name],
        };
        self.postman("resume", &args)
    }

    fn start(&self) -> Daemon {
        postman!().spawn_daemon(&self.file)
    }

    /// Queues `n` messages for each domain.
    fn queue_both(&self, n: usize) {
        add_numbered(&self.queue, "a.test", n, "a");
        add_numbered(&self.queue, "b.test", n, "b");
    }

    /// The Message-IDs the server received for `tag`'s messages.
    fn received(&self, tag: &str) -> usize {
        let prefix = format!("<{tag}");
        self.server
            .message_ids()
            .iter()
            .filter(|id| id.starts_with(&prefix))
            .count()
    }

    /// Waits until the server received `n` of `tag`'s messages.
    fn wait_received(&self, tag: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.received(tag) < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

/// A domain suspended beside a running daemon gets nothing while the other
/// domain of its site is delivered (its 5 messages within 10 s, the
/// suspended one's 0); `queue summary` says it is suspended; `resume`
/// lets its 5 go out within 10 s.
#[test]
fn a_suspended_domain_waits_beside_its_site_until_resumed() {
    let c = Control::new();
    let daemon = c.start();
    c.suspend(Target::Domain("a.test"), None);
    c.queue_both(5);
    assert!(
        c.wait_received("b", 5, Duration::from_secs(10)),
        "b.test is not suspended: {} of 5\n{}",
        c.received("b"),
        daemon.log_text()
    );
    assert_eq!(
        c.received("a"),
        0,
        "nothing for the suspended a.test\n{}",
        daemon.log_text()
    );
    assert_eq!(c.queue.state().queued_in("a.test").len(), 5);
    let summary = c.postman("queue", &["summary"]);
    let line = summary
        .stdout
        .lines()
        .find(|l| l.contains("a.test"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("suspended"),
        "queue summary shows a.test suspended: {line:?}\n{}",
        summary.stdout
    );

    c.resume(Target::Domain("a.test"));
    assert!(
        c.wait_received("a", 5, Duration::from_secs(10)),
        "a.test resumed: {} of 5\n{}",
        c.received("a"),
        daemon.log_text()
    );
}

/// A site suspended for 3 s gets no connection for its domains until the
/// time is up (none in the first 2.5 s after the command), then all 10
/// messages within 15 s, without a resume; `run --once` during the
/// suspension leaves everything queued and exits.
#[test]
fn a_site_suspended_for_a_while_resumes_by_itself() {
    let c = Control::new();
    c.queue_both(5);
    let suspended_at = Instant::now();
    c.suspend(Target::Site(SITE), Some(3));
    let once = postman!().run_once(&c.file);
    once.assert_success();
    assert_eq!(
        c.server.connection_count(),
        0,
        "--once during the suspension"
    );
    assert_eq!(c.queue.state().queued_count(), 10);

    let daemon = c.start();
    assert!(
        c.server.wait_bodies(10, Duration::from_secs(15)),
        "{} of 10 delivered within 15 s\n{}",
        c.server.body_count(),
        daemon.log_text()
    );
    let first = c.server.body_times()[0];
    assert!(
        first.duration_since(suspended_at) >= Duration::from_millis(2500),
        "the first message went out {:?} after a 3 s suspension",
        first.duration_since(suspended_at)
    );
}

/// A site suspended without end gets nothing from a daemon that has
/// scanned its 6 messages (none in the second after the scan), and all 6
/// within 10 s of `resume`.
#[test]
fn a_suspended_site_goes_out_when_resumed() {
    let c = Control::new();
    c.queue_both(3);
    c.suspend(Target::Site(SITE), None);
    let daemon = c.start();
    assert!(
        daemon.wait_for(Duration::from_secs(10), |records| {
            records.iter().any(|r| r["msg"] == "queue scanned")
        }),
        "{}",
        daemon.log_text()
    );
    // Nothing to poll for: the point is that nothing happens.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.server.connection_count(), 0, "nothing while suspended");
    c.resume(Target::Site(SITE));
    assert!(
        c.server.wait_bodies(6, Duration::from_secs(10)),
        "{} of 6 after resume\n{}",
        c.server.body_count(),
        daemon.log_text()
    );
}
