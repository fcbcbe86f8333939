//! See sites.rs. A `[delivery.site."<suffix>"]` rule's `max_message_rate`
//! is what the site's server sees: the rate over the whole site, held
//! smoothly rather than in bursts. Against a Postfix that limits messages
//! or connections per client and time unit (anvil), a rule under its limit
//! meets no refusal, and without a rule its `450 4.7.1 … too much mail`
//! slows the site down.

use std::time::{Duration, Instant};

use postman_integration::{
    numbered_domains, postman, ClientLimits, Config, DnsServer, HostileServer, Postfix,
    PostfixOptions, TestNet, TestQueue, Zones,
};

use super::common::{check, config};
use super::{field_of, named, queue_each, spawn_checked};

/// The rule's rate, messages per second.
const RATE: usize = 10;
/// How long the rate is measured, from the first message the server
/// accepts.
const WINDOW: Duration = Duration::from_secs(30);

/// 400 messages for 10 domains on `mx.rate.test`, under a rule for the
/// suffix `rate.test` of 10 messages a second: over 30 s from the first
/// one, the server accepts 300 within 10 % (270–330; without the rule all
/// 400 arrive in a second or two), and no one-second window holds more than
/// 15 (1.5 × the rate): not in bursts.
#[test]
fn a_message_rate_rule_holds_within_ten_percent_without_bursts() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let domains = numbered_domains("r", 10, "rated.test");
    let dns = DnsServer::start(
        Zones::new()
            .mx_shared(&domains, "mx.rate.test")
            .a("mx.rate.test", net.ipv4(1)),
    );
    let queue = TestQueue::new();
    let total = queue_each(&queue, &domains, 40);
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!("\n[delivery.site.\"rate.test\"]\nmax_message_rate = \"{RATE}/s\"\n");
    let mut daemon = spawn_checked(&cfg);

    assert!(
        server.wait_bodies(1, Duration::from_secs(20)),
        "no message in 20 s\n{}",
        daemon.log_text()
    );
    let first = server.body_times()[0];
    let expected = RATE * WINDOW.as_secs() as usize;
    let most = expected + expected / 10;
    // Until the window is over, or it is already clear that it is too fast.
    while Instant::now() < first + WINDOW + Duration::from_millis(500)
        && server.body_count() <= most
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.terminate(super::common::STOP_WITHIN);
    let times = server.body_times();
    let in_window = times.iter().filter(|&&t| t < first + WINDOW).count();
    let fewest = expected - expected / 10;
    eprintln!(
        "{in_window} of {total} messages in the {WINDOW:?} from the first; {expected} is the rate"
    );
    assert!(
        (fewest..=most).contains(&in_window),
        "{in_window} messages accepted in {WINDOW:?} at {RATE}/s; {fewest}–{most} expected\n{}",
        daemon.log_text()
    );
    let burst = times
        .iter()
        .map(|&t| {
            times
                .iter()
                .filter(|&&u| u >= t && u < t + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        burst * 2 <= RATE * 3,
        "{burst} messages in one second at {RATE}/s; at most 1.5 × the rate expected"
    );
}

/// A Postfix for `domains` on `mx.limited.test`, limiting each client as
/// `limits` say, per second; DNS for it, the queue with `per_domain`
/// messages each, and a config for all of it.
struct LimitedPostfix {
    postfix: Postfix,
    _dns: DnsServer,
    queue: TestQueue,
    config: Config,
    total: usize,
}

impl LimitedPostfix {
    fn start(limits: ClientLimits, domains: usize, per_domain: usize) -> LimitedPostfix {
        let net = TestNet::new();
        let domains = numbered_domains("p", domains, "customers.test");
        let names: Vec<&str> = domains.iter().map(String::as_str).collect();
        let postfix = Postfix::start(
            net.ip(1),
            net.port(),
            &names,
            &PostfixOptions {
                limits: Some(limits),
                quiet: true,
                ..PostfixOptions::default()
            },
        );
        let dns = DnsServer::start(
            Zones::new()
                .mx_shared(&domains, "mx.limited.test")
                .a("mx.limited.test", net.ipv4(1)),
        );
        let queue = TestQueue::new();
        let total = queue_each(&queue, &domains, per_domain);
        let config = config(&queue, &net, &dns);
        LimitedPostfix {
            postfix,
            _dns: dns,
            queue,
            config,
            total,
        }
    }

    /// One `run --once` with `rule` as the site's rule; every message must
    /// be delivered, and Postfix must have stored them all.
    fn run_with_rule(&self, rule: &str) -> postman_integration::RunOutput {
        let mut cfg = self.config.clone();
        cfg.extra = format!("\n[delivery.site.\"limited.test\"]\n{rule}\n");
        let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
        out.assert_success();
        check(
            self.queue.state().is_empty(),
            &format!("all {} delivered in one run", self.total),
            &self.queue,
            &out,
        );
        let stored = self
            .postfix
            .wait_for_message_count(self.total, Duration::from_secs(30));
        assert_eq!(stored, self.total, "Postfix stored every message once");
        out
    }
}

/// Postfix takes at most 4 messages a second from a client
/// (`smtpd_client_message_rate_limit = 4`, `anvil_rate_time_unit = 1s`,
/// counted in fixed windows); a rule of 1 message a second for its site
/// meets no `450 4.7.1 Error: too much mail` in 8 messages (without it they
/// all go at once, and 4 would be refused). At 2 a second a loaded machine
/// could bunch five starts into one of anvil's windows.
#[test]
fn a_message_rate_rule_under_postfixs_limit_meets_no_refusal() {
    let site = LimitedPostfix::start(ClientLimits::message_rate(4, Duration::from_secs(1)), 4, 2);
    let out = site.run_with_rule("max_message_rate = \"1/s\"");
    let refusals = site.postfix.refusals();
    check(
        refusals.message_rate == 0,
        &format!("Postfix refused {refusals:?}; none expected"),
        &site.queue,
        &out,
    );
}

/// Postfix takes at most 4 new connections a second from a client
/// (`smtpd_client_connection_rate_limit = 4`); a rule of 2 connections a
/// second and one message per connection delivers 12 messages on 12
/// connections without one `421 4.7.0 … too many connections`.
#[test]
fn a_connection_rate_rule_under_postfixs_limit_meets_no_refusal() {
    let limits = ClientLimits {
        connections: 0,
        connection_rate: 4,
        message_rate: 0,
        time_unit: Duration::from_secs(1),
    };
    let site = LimitedPostfix::start(limits, 4, 3);
    let out = site.run_with_rule("max_connection_rate = \"2/s\"\nmax_messages_per_connection = 1");
    let refusals = site.postfix.refusals();
    check(
        refusals.connections() == 0,
        &format!("Postfix refused {refusals:?}; none expected"),
        &site.queue,
        &out,
    );
    let connections = site.postfix.connection_count();
    assert!(
        connections >= site.total,
        "one message per connection: {connections} connections for {} messages",
        site.total
    );
}

/// Without a rule, Postfix's own `450 4.7.1 Error: too much mail from
/// 127.0.0.1` (more than 10 messages a second) is a throttle: the site
/// slows down and a daemon delivers all 60 messages within 30 s, with at
/// most 20 refusals (were each refusal only a deferral, the 60 would meet
/// about 50, then 40, … on each retry), nothing bounced, and a `site
/// throttled` record quoting Postfix.
#[test]
fn postfixs_too_much_mail_slows_the_site_down() {
    let site = LimitedPostfix::start(
        ClientLimits::message_rate(10, Duration::from_secs(1)),
        6,
        10,
    );
    let mut cfg = site.config.clone();
    cfg.min_backoff = 1;
    cfg.max_backoff = Some(2);
    let mut daemon = spawn_checked(&cfg);
    let stored = site
        .postfix
        .wait_for_message_count(site.total, Duration::from_secs(30));
    daemon.terminate(super::common::STOP_WITHIN);
    let log = daemon.log_text();
    assert_eq!(stored, site.total, "Postfix stored all in 30 s\n{log}");
    let refusals = site.postfix.refusals();
    assert!(
        refusals.message_rate <= 20,
        "Postfix refused {} messages; at most 20 expected\n{log}",
        refusals.message_rate
    );
    let records = daemon.records();
    let throttled = named(&records, "site throttled");
    let replies = field_of(&throttled, "reply");
    assert!(
        replies.iter().any(|r| r.contains("too much mail from")),
        "a `site throttled` record quoting Postfix: {replies:?}\n{log}"
    );
    let bounced = daemon
        .deliveries()
        .iter()
        .filter(|d| d.status == "bounced")
        .count();
    assert_eq!(bounced, 0, "nothing bounced\n{log}");
}
