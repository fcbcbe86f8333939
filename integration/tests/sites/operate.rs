//! See sites.rs. The operator's view and hand on sites beside a running
//! daemon: `postman flush` ends a site's backoff (the daemon sees the
//! file go and tries the site at once), and `postman queue summary` shows
//! the queue by site, from the snapshot the daemon keeps.

use std::time::{Duration, Instant};

use postman_integration::postman::{ConfigFile, Daemon};
use postman_integration::{
    postman, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};

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
    assert!(
        !named(&daemon.records(), "site backoff lifted").is_empty(),
        "the daemon says it lifted the site\n{}",
        daemon.log_text()
    );

    s.postman("flush", &[]);
    assert!(
        server.wait_bodies(4, Duration::from_secs(10)),
        "{} of 4 delivered within 10 s of the second flush\n{}",
        server.body_count(),
        daemon.log_text()
    );
}
