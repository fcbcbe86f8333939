//! See sites.rs. The providers' throttle replies — a `421` greeting, `421
//! 4.7.0 Too many concurrent SMTP connections`, Gmail's `4.7.28`, Yahoo's
//! `[TSS04]`, Microsoft's `4.7.650` — are not failures of the message: the
//! site's connections come down, nothing is bounced, and the mail goes out
//! once the server stops throttling; a site that keeps throttling is
//! suspended. The texts are the providers' own, as they are seen in the
//! wild, with loopback addresses.

use std::time::Duration;

use postman_integration::hostile::Script;
use postman_integration::postman::Daemon;
use postman_integration::{
    numbered_domains, Config, DnsServer, HostileServer, TestNet, TestQueue, Zones,
};
use serde_json::Value;

use super::common::{config, refusing};
use super::{field_of, named, queue_each, spawn_checked};

/// RFC 5321 §3.8's own 421 greeting: no enhanced code, no words about
/// limits, but a 421 greeting is a throttle all the same.
const GREETING_421: &str =
    "421 mx.throttle.test Service not available, closing transmission channel";
/// The common text of servers counting connections per client.
const TOO_MANY: &str = "421 4.7.0 Too many concurrent SMTP connections";
/// Gmail (answering RCPT).
const GMAIL: &str = "450-4.7.28 Gmail has detected an unusual rate of unsolicited mail originating
450-4.7.28 from your IP address. To protect our users from spam, mail sent from your IP
450 4.7.28 address has been temporarily rate limited. https://support.google.com/mail/?p=UnsolicitedRateLimitError - gsmtp";
/// Yahoo (answering MAIL, then closing).
const YAHOO: &str = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes";
/// Microsoft (answering RCPT).
const MICROSOFT: &str = "451 4.7.650 The mail server [127.0.0.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)";

/// Domains on the throttling site, and messages for each.
const DOMAINS: usize = 5;
const PER_DOMAIN: usize = 4;
/// Connections the site starts with and may have (its rule).
const SITE_CONNECTIONS: u64 = 4;
/// How long a throttled site may take to deliver everything.
const WITHIN: Duration = Duration::from_secs(30);

/// A daemon delivering 5 domains × 4 messages to one throttling site,
/// `mx.throttle.test`, whose rule lets it start with and keep 4
/// connections. The retry delay is 1–2 s, so that a deferral never hides
/// behind a long one.
struct Throttled {
    server: HostileServer,
    queue: TestQueue,
    daemon: Daemon,
    _dns: DnsServer,
}

impl Throttled {
    fn start(server: impl FnOnce(std::net::SocketAddr) -> HostileServer) -> Throttled {
        Throttled::start_with("", server)
    }

    /// [`Throttled::start`] with more keys (`rule`, TOML lines) in the
    /// site's rule.
    fn start_with(
        rule: &str,
        server: impl FnOnce(std::net::SocketAddr) -> HostileServer,
    ) -> Throttled {
        let net = TestNet::new();
        let server = server(net.addr(1));
        let domains = numbered_domains("t", DOMAINS, "customers.test");
        let dns = DnsServer::start(
            Zones::new()
                .mx_shared(&domains, "mx.throttle.test")
                .a("mx.throttle.test", net.ipv4(1)),
        );
        let queue = TestQueue::new();
        queue_each(&queue, &domains, PER_DOMAIN);
        let mut cfg: Config = config(&queue, &net, &dns);
        cfg.min_backoff = 1;
        cfg.max_backoff = Some(2);
        cfg.extra = format!(
            "\n[delivery.site.\"throttle.test\"]\ninitial_connections = {SITE_CONNECTIONS}\n\
             max_connections = {SITE_CONNECTIONS}\n{rule}\n"
        );
        let daemon = spawn_checked(&cfg);
        Throttled {
            server,
            queue,
            daemon,
            _dns: dns,
        }
    }

    /// The `site throttled` records so far.
    fn throttled(&self) -> Vec<Value> {
        named(&self.daemon.records(), "site throttled")
            .into_iter()
            .cloned()
            .collect()
    }

    /// Waits until all 20 messages are delivered; panics with the log when
    /// they are not within [`WITHIN`].
    fn wait_delivered(&self) {
        let total = DOMAINS * PER_DOMAIN;
        let delivered = self.daemon.wait_for(WITHIN, |records| {
            named(records, "delivery")
                .iter()
                .filter(|r| r["status"] == "sent")
                .count()
                >= total
        });
        assert!(
            delivered,
            "not all {total} delivered in {WITHIN:?} ({} bodies received)\n{}",
            self.server.body_count(),
            self.daemon.log_text()
        );
    }

    /// Waits until every message is delivered, then checks what a
    /// throttle must and must not do: `code` (the reply's distinctive
    /// part) is in a `site throttled` record naming the site with a
    /// `limit` below the 4 connections it started with, every message
    /// reached the server exactly once, nothing bounced, and — when the
    /// throttle came in the greeting, before any message was tried
    /// (`untried`) — no message has a deferral record either.
    fn assert_handled(&mut self, code: &str, untried: bool) {
        let total = DOMAINS * PER_DOMAIN;
        self.wait_delivered();
        let log = self.daemon.log_text();
        let throttled = self.throttled();
        let ours: Vec<&Value> = throttled
            .iter()
            .filter(|r| r["reply"].as_str().is_some_and(|t| t.contains(code)))
            .collect();
        assert!(
            !ours.is_empty(),
            "no `site throttled` record with {code:?}\n{log}"
        );
        let sites = field_of(&ours, "site");
        assert!(
            sites.iter().all(|s| s.contains("mx.throttle.test")),
            "the records name the site: {sites:?}"
        );
        let limit = ours[0]["limit"].as_u64();
        assert!(
            limit.is_some_and(|l| l < SITE_CONNECTIONS),
            "the first throttle's limit {limit:?} should be below the {SITE_CONNECTIONS} \
             connections the site started with\n{log}"
        );
        let mut ids = self.server.message_ids();
        ids.sort();
        let received = ids.len();
        ids.dedup();
        assert_eq!(
            (received, ids.len()),
            (total, total),
            "every message received exactly once"
        );
        let deliveries = self.daemon.deliveries();
        let bounced = deliveries.iter().filter(|d| d.status == "bounced").count();
        assert_eq!(bounced, 0, "a throttle bounces nothing\n{log}");
        if untried {
            let deferred = deliveries.iter().filter(|d| d.status == "deferred").count();
            assert_eq!(
                deferred, 0,
                "a message the throttle came before goes back untried, without a deferral\n{log}"
            );
        }
        assert!(self.queue.state().is_empty(), "{:#?}", self.queue.state());
    }
}

#[test]
fn a_421_greeting_is_a_throttle() {
    let mut t = Throttled::start(|addr| {
        HostileServer::first_then_polite(addr, 2, Script::new().greet(GREETING_421))
    });
    t.assert_handled("421 mx.throttle.test Service not available", true);
}

/// The server takes 2 connections at once and greets the others with
/// `421 4.7.0 Too many concurrent SMTP connections`, for as long as
/// postman opens more: it stops throttling when the site's connections
/// have come down to 2. Of the 20 messages' connections, at most 5 are
/// refused.
#[test]
fn too_many_concurrent_connections_is_a_throttle() {
    let mut t = Throttled::start(|addr| {
        HostileServer::start_capped(addr, vec![Script::polite()], 2, TOO_MANY)
    });
    t.assert_handled(TOO_MANY, true);
    let capped = t.server.capped_count();
    assert!(
        capped <= 5,
        "{capped} connections over the server's 2 refused; at most 5 expected\n{}",
        t.daemon.log_text()
    );
}

#[test]
fn gmails_4_7_28_is_a_throttle() {
    let mut t = Throttled::start(|addr| HostileServer::first_then_polite(addr, 2, refusing(GMAIL)));
    t.assert_handled("4.7.28", false);
}

#[test]
fn yahoos_tss04_is_a_throttle() {
    let yahoo = Script::new().hello().expect("MAIL", YAHOO).close();
    let mut t = Throttled::start(|addr| HostileServer::first_then_polite(addr, 2, yahoo));
    t.assert_handled("[TSS04]", false);
}

#[test]
fn microsofts_4_7_650_is_a_throttle() {
    let mut t =
        Throttled::start(|addr| HostileServer::first_then_polite(addr, 2, refusing(MICROSOFT)));
    t.assert_handled("4.7.650", false);
}

/// A server that throttles every connection until told to stop: after
/// `suspend_after_throttles` (3) throttles in a row the site is suspended
/// for `throttle_suspend_time` (5 s): a `site suspended` record naming it,
/// with a positive `until_seconds` and the reply as its reason, within 30
/// s; no connection in the 2 s after it (once the open ones closed);
/// nothing sent or bounced meanwhile, every message queued. When the
/// server then behaves, all 20 are delivered within 30 s of it: the
/// suspension ends by itself.
#[test]
fn a_site_that_keeps_throttling_is_suspended_then_resumes() {
    let t = Throttled::start_with(
        "suspend_after_throttles = 3\nthrottle_suspend_time = 5",
        |addr| HostileServer::start(addr, vec![Script::new().greet(TOO_MANY)]),
    );
    let suspended = t.daemon.wait_for(WITHIN, |records| {
        !named(records, "site suspended").is_empty()
    });
    let log = t.daemon.log_text();
    assert!(suspended, "no `site suspended` in {WITHIN:?}\n{log}");
    let records = t.daemon.records();
    let record = named(&records, "site suspended")[0].clone();
    assert!(
        record["site"]
            .as_str()
            .is_some_and(|s| s.contains("mx.throttle.test")),
        "{record}"
    );
    assert!(
        record["until_seconds"].as_u64().is_some_and(|s| s > 0),
        "{record}"
    );
    assert!(
        record["reason"]
            .as_str()
            .is_some_and(|s| s.contains("Too many concurrent")),
        "{record}"
    );
    let n = t.server.connection_count();
    assert!(
        t.server.wait_idle(n, Duration::from_secs(5)),
        "connections close"
    );
    let at_suspension = t.server.connection_count();
    // Nothing to poll for: the point is that nothing happens.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        t.server.connection_count(),
        at_suspension,
        "no connection while the site is suspended\n{}",
        t.daemon.log_text()
    );
    let deliveries = t.daemon.deliveries();
    assert!(
        deliveries
            .iter()
            .all(|d| d.status != "bounced" && d.status != "sent"),
        "{deliveries:#?}"
    );
    assert_eq!(t.queue.state().queued_count(), DOMAINS * PER_DOMAIN);

    t.server.play_from_now(Script::polite());
    t.wait_delivered();
}

/// A rule's `throttle_patterns` makes a reply no built-in knowledge calls
/// a throttle one: `451 4.3.2 slow down, friend` (to RCPT, on the first
/// two connections) is reported as `site throttled`, and handled as the
/// providers' replies are.
#[test]
fn a_rules_pattern_is_a_throttle() {
    let mut t = Throttled::start_with("throttle_patterns = [\"slow down, friend\"]", |addr| {
        HostileServer::first_then_polite(addr, 2, refusing("451 4.3.2 slow down, friend"))
    });
    t.assert_handled("slow down, friend", false);
}

/// Greylisting (`451 4.7.1 Greylisted, please try again later`, each
/// recipient once) is not a throttle: no `site throttled` record, and the
/// 20 messages are delivered on their retries.
#[test]
fn greylisting_is_not_a_throttle() {
    let t = Throttled::start(|addr| {
        HostileServer::start(
            addr,
            vec![Script::polite()
                .greylist("RCPT TO:<", "451 4.7.1 Greylisted, please try again later")],
        )
    });
    t.wait_delivered();
    let throttled = t.throttled();
    assert!(
        throttled.is_empty(),
        "greylisting taken for a throttle: {throttled:#?}"
    );
}
