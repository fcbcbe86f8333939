//! The scheduler driven by hand: messages in, actions out, time passed in.

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::route::Host;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    id: String,
    domain: String,
}

impl Queued for Msg {
    fn id(&self) -> &str {
        &self.id
    }
    fn domain(&self) -> &str {
        &self.domain
    }
}

fn msg(domain: &str, n: usize) -> Msg {
    Msg {
        id: format!("{domain}-{n}"),
        domain: domain.to_owned(),
    }
}

type Conn = u32;

/// The fake clock's origin: every other instant is this plus a duration.
#[allow(clippy::disallowed_methods)] // the tests need one real Instant to start from
fn base() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn limits() -> Limits {
    Limits {
        max_connections: 100,
        max_connections_per_domain: 20,
        max_lookups: 10,
        schedule: Schedule {
            min: Duration::from_secs(60),
            max: Duration::from_secs(3600),
            lifetime: Duration::from_secs(5 * 86400),
            delay_warning: None,
        },
        keep_deferred: true,
    }
}

fn route(host: &str) -> Route {
    Route::new(vec![Host::new(
        host.to_owned(),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )])
}

/// A scheduler, its clock and what it asked for.
struct World {
    s: Scheduler<Msg, Conn>,
    now: Instant,
    shape: Shape,
    /// Every action, in order, since the last `take`.
    actions: Vec<Action<Msg, Conn>>,
}

impl World {
    fn new(shape: Shape) -> World {
        World {
            s: Scheduler::new(limits()),
            now: base(),
            shape,
            actions: Vec::new(),
        }
    }

    fn with_limits(mut self, limits: Limits) -> World {
        self.s.set_limits(limits);
        self
    }

    fn tick(&mut self) {
        self.s.tick(self.now);
        while let Some(action) = self.s.poll_action() {
            self.actions.push(action);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.tick();
    }

    /// Queues `n` messages for each domain and answers each lookup with
    /// the site's MX host.
    fn queue(&mut self, domains: &[(&str, &str)], n: usize) {
        for (domain, _) in domains {
            for i in 0..n {
                self.s.found(msg(domain, i), None, self.now);
            }
        }
        loop {
            self.tick();
            let lookups: Vec<String> = self.take_lookups();
            if lookups.is_empty() {
                break;
            }
            for name in lookups {
                let host = domains
                    .iter()
                    .find(|(d, _)| *d == name)
                    .map_or("unknown.test", |(_, h)| h);
                self.resolve(&name, host, None);
            }
        }
    }

    fn resolve(&mut self, domain: &str, host: &str, persisted: Option<(u32, Option<Duration>)>) {
        let spec = SiteSpec {
            name: host.to_owned(),
            hosts: vec![host.to_owned()],
            shape: self.shape.clone(),
            persisted: persisted.map(|(f, left)| (f, left, "refused".to_owned())),
        };
        let until = self.now + Duration::from_secs(3600);
        self.s
            .resolved(domain, Ok((route(host), spec)), until, self.now);
    }

    fn take_lookups(&mut self) -> Vec<String> {
        let mut names = Vec::new();
        self.actions.retain(|a| match a {
            Action::Lookup { domain } => {
                names.push(domain.clone());
                false
            }
            _ => true,
        });
        names
    }

    /// The connections opened since the last take: (site, message).
    fn take_opens(&mut self) -> Vec<(SiteId, Msg)> {
        let mut opens = Vec::new();
        let mut rest = Vec::new();
        for action in self.actions.drain(..) {
            match action {
                Action::Open { site, job, .. } => opens.push((site, job)),
                other => rest.push(other),
            }
        }
        self.actions = rest;
        opens
    }

    /// Answers to waiting connections since the last take.
    fn take_nexts(&mut self) -> Vec<(Conn, Option<Msg>)> {
        let mut nexts = Vec::new();
        let mut rest = Vec::new();
        for action in self.actions.drain(..) {
            match action {
                Action::Next { conn, job } => nexts.push((conn, job)),
                other => rest.push(other),
            }
        }
        self.actions = rest;
        nexts
    }

    fn take_defers(&mut self) -> Vec<(Msg, Instant, String)> {
        let mut defers = Vec::new();
        let mut rest = Vec::new();
        for action in self.actions.drain(..) {
            match action {
                Action::Defer { msg, until, reason } => defers.push((msg, until, reason)),
                other => rest.push(other),
            }
        }
        self.actions = rest;
        defers
    }

    fn events(&self) -> Vec<&Event> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::Log(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The message finished (delivered) over `conn`, which asks for more.
    fn finish(&mut self, site: SiteId, conn: Conn, m: &Msg) {
        self.s.returned(&m.domain, &m.id, true, None, self.now);
        self.s.want_more(conn, site, Some(&m.domain), self.now);
        self.tick();
    }
}

fn one_site_shape(initial: usize, max: usize) -> Shape {
    Shape {
        initial_connections: initial,
        max_connections: max,
        ..Shape::default()
    }
}

#[test]
fn domains_on_one_mx_host_share_one_site_and_its_connections() {
    let mut limits = limits();
    limits.max_lookups = 100;
    let mut w = World::new(one_site_shape(5, 20)).with_limits(limits);
    let domains: Vec<String> = (0..50).map(|i| format!("d{i}.test")).collect();
    let pairs: Vec<(&str, &str)> = domains
        .iter()
        .map(|d| (d.as_str(), "mx.shared.test"))
        .collect();
    w.queue(&pairs, 2);
    let opens = w.take_opens();
    assert_eq!(
        opens.len(),
        5,
        "the site's initial connections, not one per domain"
    );
    assert!(opens.iter().all(|(site, _)| *site == opens[0].0));
    assert_eq!(w.s.totals().sites, 1);
    // Each connection carries the next message of any domain, domains
    // taking turns: the first 50 messages started are one of each domain.
    let mut started: Vec<Msg> = opens.iter().map(|(_, m)| m.clone()).collect();
    let site = opens[0].0;
    let mut conns: Vec<(Conn, Msg)> = opens
        .into_iter()
        .enumerate()
        .map(|(i, (_, m))| (i as Conn, m))
        .collect();
    let mut next_conn = conns.len() as Conn;
    while started.len() < 100 {
        let mut next = Vec::new();
        for (conn, m) in conns.drain(..) {
            w.finish(site, conn, &m);
            for (c, job) in w.take_nexts() {
                if let Some(job) = job {
                    started.push(job.clone());
                    next.push((c, job));
                }
            }
            // Feedback opened another connection.
            for (_, job) in w.take_opens() {
                started.push(job.clone());
                next.push((next_conn, job));
                next_conn += 1;
            }
        }
        assert!(!next.is_empty(), "connections got no more work");
        conns = next;
    }
    let first: std::collections::HashSet<&str> =
        started[..50].iter().map(|m| m.domain.as_str()).collect();
    assert_eq!(
        first.len(),
        50,
        "each domain had its turn before any had two"
    );
    assert!(
        next_conn <= 20,
        "feedback adds a few connections: {next_conn}"
    );
}

#[test]
fn sites_take_turns_so_a_small_site_is_served_at_once() {
    let mut w = World::new(one_site_shape(2, 20));
    w.queue(&[("big.test", "mx.big.test")], 100);
    w.queue(&[("small.test", "mx.small.test")], 1);
    let opens = w.take_opens();
    let small: Vec<_> = opens
        .iter()
        .filter(|(_, m)| m.domain == "small.test")
        .collect();
    assert_eq!(small.len(), 1);
    assert_eq!(
        opens.len(),
        3,
        "two for the big site (its initial limit), one for the small"
    );
}

#[test]
fn a_domain_has_no_more_messages_out_than_its_cap() {
    let mut limits = limits();
    limits.max_connections_per_domain = 3;
    let mut w = World::new(one_site_shape(10, 20)).with_limits(limits);
    w.queue(&[("one.test", "mx.test")], 20);
    assert_eq!(w.take_opens().len(), 3);
}

#[test]
fn a_down_site_is_probed_once_and_holds_every_domain_of_it() {
    let mut w = World::new(one_site_shape(1, 20));
    let pairs = [
        ("a.test", "mx.down.test"),
        ("b.test", "mx.down.test"),
        ("c.test", "mx.down.test"),
    ];
    w.queue(&pairs, 3);
    let opens = w.take_opens();
    assert_eq!(opens.len(), 1, "one probe for the site");
    let (site, job) = opens[0].clone();
    let failure = ConnectFailure {
        error: "connect to mx.down.test: Connection refused".into(),
        throttle: None,
        loops: false,
    };
    let after = w.s.connect_failed(job, &failure, w.now);
    w.s.closed(99, site, None, true);
    w.tick();
    let AfterFailure::Failed { until, .. } = after else {
        panic!("a lone failed connection is a failed attempt: {after:?}");
    };
    assert_eq!(until, w.now + Duration::from_secs(60));
    let defers = w.take_defers();
    assert_eq!(
        defers.len(),
        8,
        "every other ready message of the site waits"
    );
    assert!(defers
        .iter()
        .all(|(_, u, r)| *u == until && r.contains("Connection refused")));
    assert!(w
        .actions
        .iter()
        .any(|a| matches!(a, Action::SaveSiteBackoff { failures: 1, .. })));
    assert!(w
        .events()
        .iter()
        .any(|e| matches!(e, Event::BackingOff { failures: 1, .. })));
    assert!(w.take_opens().is_empty());
    // A new domain of the same site, found meanwhile, waits too.
    w.queue(&[("d.test", "mx.down.test")], 1);
    assert!(w.take_opens().is_empty());
    assert_eq!(w.take_defers().len(), 1);
}

#[test]
fn a_backoff_an_earlier_run_left_holds_a_new_site() {
    let mut w = World::new(one_site_shape(5, 20));
    w.s.found(msg("a.test", 0), None, w.now);
    w.tick();
    w.take_lookups();
    w.resolve(
        "a.test",
        "mx.test",
        Some((3, Some(Duration::from_secs(600)))),
    );
    w.tick();
    assert!(w.take_opens().is_empty());
    let defers = w.take_defers();
    assert_eq!(defers.len(), 1);
    assert_eq!(defers[0].1, w.now + Duration::from_secs(600));
    let site = w.s.site_id("mx.test").expect("site");
    assert_eq!(w.s.site(site).map(|s| (s.failures, s.limit)), Some((3, 1)));
}

#[test]
fn a_failure_beside_open_connections_cuts_the_limit_and_keeps_the_message() {
    let mut w = World::new(one_site_shape(4, 20));
    w.queue(&[("a.test", "mx.test")], 10);
    let opens = w.take_opens();
    assert_eq!(opens.len(), 4);
    let (site, job) = opens[3].clone();
    let failure = ConnectFailure {
        error: "421 too busy".into(),
        throttle: None,
        loops: false,
    };
    assert!(matches!(
        w.s.connect_failed(job, &failure, w.now),
        AfterFailure::Untried
    ));
    w.s.closed(3, site, None, true);
    w.tick();
    assert_eq!(w.s.site(site).map(|s| s.limit), Some(3));
    assert!(w.take_opens().is_empty(), "three open, limit three");
    assert_eq!(w.s.totals().ready, 7);
}

#[test]
fn a_throttle_sends_the_message_back_untried_and_brings_concurrency_down() {
    let shape = Shape {
        initial_connections: 8,
        suspend_after_throttles: 2,
        throttle_suspend_time: Duration::from_secs(300),
        ..Shape::default()
    };
    let mut w = World::new(shape);
    w.queue(&[("a.test", "mx.test"), ("b.test", "mx.test")], 10);
    let opens = w.take_opens();
    assert_eq!(opens.len(), 8);
    let site = opens[0].0;
    let reply = "421 4.7.0 Too many concurrent SMTP connections";
    let throttle = ConnectFailure {
        error: reply.into(),
        throttle: Some(reply.into()),
        loops: false,
    };
    // Two of the eight are turned away: the limit comes down to the six
    // others, and their messages are ready again, untried.
    for (i, (_, job)) in opens[6..].iter().cloned().enumerate() {
        assert!(matches!(
            w.s.connect_failed(job, &throttle, w.now),
            AfterFailure::Untried
        ));
        w.s.closed(6 + i as Conn, site, None, true);
    }
    w.tick();
    assert_eq!(w.s.site(site).map(|s| s.limit), Some(6));
    assert!(w
        .events()
        .iter()
        .any(|e| matches!(e, Event::Throttled { limit: 6, .. })));
    assert_eq!(
        w.s.totals().ready,
        14,
        "the throttled messages are ready again, untried"
    );
    assert!(w.take_defers().is_empty());
    assert!(w.take_opens().is_empty(), "six open, limit six");
    // The rest close; one alone is turned away twice in a row: the site is
    // suspended and its mail waits.
    for conn in 1..6 {
        w.s.closed(conn, site, None, true);
    }
    let (_, job) = opens[0].clone();
    w.actions.clear();
    w.s.connect_failed(job, &throttle, w.now);
    w.s.closed(0, site, None, true);
    w.tick();
    let first = w.take_defers();
    assert_eq!(first.len(), 15, "a pause after a lone throttle");
    assert!(first
        .iter()
        .all(|(_, u, _)| *u == w.now + FIRST_THROTTLE_PAUSE));
    for (msg, until, _) in first {
        w.s.defer(msg, until);
    }
    w.advance(FIRST_THROTTLE_PAUSE);
    let (_, job) = w.take_opens().pop().expect("a probe after the pause");
    w.s.connect_failed(job, &throttle, w.now);
    w.tick();
    assert!(w
        .events()
        .iter()
        .any(|e| matches!(e, Event::Suspended { .. })));
    let defers = w.take_defers();
    assert_eq!(defers.len(), 15);
    assert!(defers
        .iter()
        .all(|(_, u, _)| *u == w.now + Duration::from_secs(300)));
}

#[test]
fn a_message_rate_spaces_messages_over_all_connections_of_the_site() {
    let shape = Shape {
        initial_connections: 3,
        message_interval: Some(ms(100)),
        connection_cache_time: Duration::from_secs(2),
        ..Shape::default()
    };
    let mut w = World::new(shape);
    w.queue(&[("a.test", "mx.test"), ("b.test", "mx.test")], 20);
    // One connection now; the next may open only with the next turn.
    let opens = w.take_opens();
    assert_eq!(opens.len(), 1);
    let (site, first) = opens[0].clone();
    // It finishes at once and asks for more: it waits for the turn.
    w.finish(site, 0, &first);
    assert!(w.take_nexts().is_empty());
    let mut starts = vec![w.now];
    let start = w.now;
    for _ in 0..30 {
        w.advance(ms(10));
        for (conn, job) in w.take_nexts() {
            if let Some(job) = job {
                starts.push(w.now);
                w.finish(site, conn, &job);
            }
        }
        starts.extend(w.take_opens().iter().map(|_| w.now));
    }
    // 300 ms: the message at 0, 100, 200 and 300 ms.
    assert_eq!(
        starts.len(),
        4,
        "{:?}",
        starts.iter().map(|t| *t - start).collect::<Vec<_>>()
    );
    for pair in starts.windows(2) {
        assert!(pair[1] - pair[0] >= ms(100));
    }
}

#[test]
fn a_waiting_connection_takes_another_domains_mail_of_its_site() {
    let mut w = World::new(one_site_shape(1, 20));
    w.queue(&[("a.test", "mx.test")], 1);
    let (site, m) = w.take_opens()[0].clone();
    w.finish(site, 7, &m);
    assert!(w.take_nexts().is_empty(), "it waits");
    w.queue(&[("b.test", "mx.test")], 1);
    let nexts = w.take_nexts();
    assert_eq!(nexts.len(), 1);
    assert_eq!(nexts[0].0, 7);
    assert_eq!(
        nexts[0].1.as_ref().map(|m| m.domain.as_str()),
        Some("b.test")
    );
    assert!(w.take_opens().is_empty(), "no new connection for it");
    // Waited long enough: goodbye.
    w.finish(site, 7, &msg("b.test", 0));
    w.advance(Duration::from_secs(3));
    assert_eq!(w.take_nexts(), vec![(7, None)]);
}

#[test]
fn a_local_shortage_pauses_new_work_and_sends_waiting_connections_away() {
    let mut w = World::new(one_site_shape(2, 20));
    w.queue(&[("a.test", "mx.test")], 1);
    let (site, m) = w.take_opens()[0].clone();
    w.finish(site, 1, &m);
    w.queue(&[("b.test", "mx.test")], 0);
    w.s.found(msg("c.test", 0), None, w.now);
    assert!(w.s.pause(w.now));
    assert!(!w.s.pause(w.now), "one pause at a time");
    w.tick();
    assert_eq!(w.take_nexts(), vec![(1, None)]);
    assert!(
        w.take_lookups().is_empty(),
        "lookups wait for the pause too"
    );
    w.advance(LOCAL_LIMIT_PAUSE);
    assert_eq!(w.take_lookups(), vec!["c.test".to_owned()]);
}

#[test]
fn a_new_version_of_a_message_out_with_a_connection_is_dropped() {
    let mut w = World::new(one_site_shape(1, 20));
    w.queue(&[("a.test", "mx.test")], 2);
    let (_, m) = w.take_opens()[0].clone();
    assert!(!w.s.found(m.clone(), None, w.now));
    // A new version of a ready one replaces it.
    assert!(w.s.found(msg("a.test", 1), None, w.now));
    assert_eq!(w.s.totals().ready, 1);
}

#[test]
fn a_transient_route_failure_backs_the_domain_off_and_a_permanent_one_bounces() {
    let mut w = World::new(Shape::default());
    w.s.found(msg("a.test", 0), None, w.now);
    w.s.found(msg("b.test", 0), None, w.now);
    w.tick();
    w.take_lookups();
    let until = w.now + Duration::from_secs(3600);
    w.s.resolved(
        "a.test",
        Err(RouteError::MxLookupFailed {
            domain: "a.test".into(),
            why: "SERVFAIL".into(),
        }),
        until,
        w.now,
    );
    w.s.resolved(
        "b.test",
        Err(RouteError::NullMx {
            domain: "b.test".into(),
        }),
        until,
        w.now,
    );
    w.tick();
    let defers = w.take_defers();
    assert_eq!(defers.len(), 1);
    assert_eq!(defers[0].1, w.now + Duration::from_secs(60));
    assert!(w
        .actions
        .iter()
        .any(|a| matches!(a, Action::Bounce { msg, .. } if msg.domain == "b.test")));
    assert!(w
        .actions
        .iter()
        .any(|a| matches!(a, Action::SaveDomainBackoff { failures: 1, .. })));
    // The deferred message comes back when due and is looked up again.
    let (m, due, _) = defers[0].clone();
    w.s.defer(m, due);
    w.actions.clear();
    w.advance(Duration::from_secs(60));
    assert_eq!(w.take_lookups(), vec!["a.test".to_owned()]);
}

#[test]
fn a_site_at_its_limit_opens_after_a_connection_closes() {
    let mut w = World::new(one_site_shape(1, 1));
    w.queue(&[("a.test", "mx.test")], 3);
    let (site, _) = w.take_opens()[0].clone();
    w.tick();
    assert!(w.take_opens().is_empty());
    w.s.returned("a.test", "a.test-0", true, None, w.now);
    w.s.closed(0, site, Some("a.test"), true);
    w.tick();
    assert_eq!(w.take_opens().len(), 1);
}

#[test]
fn a_waiting_connection_keeps_its_slot_from_a_domain_at_its_cap() {
    let mut limits = limits();
    limits.max_connections = 2;
    limits.max_connections_per_domain = 1;
    let mut w = World::new(one_site_shape(5, 20)).with_limits(limits);
    w.queue(&[("idle.test", "mx.idle.test")], 1);
    w.queue(&[("slow.test", "mx.slow.test")], 1);
    let opens = w.take_opens();
    assert_eq!(opens.len(), 2);
    let (idle_site, idle_msg) = opens
        .iter()
        .find(|(_, m)| m.domain == "idle.test")
        .cloned()
        .unwrap();
    w.finish(idle_site, 1, &idle_msg);
    assert!(w.take_nexts().is_empty(), "idle.test's connection waits");
    // slow.test has one out and another ready: at its cap, so the waiting
    // connection keeps its slot.
    w.queue(&[("slow.test", "mx.slow.test")], 2);
    assert!(w.take_nexts().is_empty(), "{:?}", w.actions);
    assert!(w.take_opens().is_empty());
}

#[test]
fn a_connection_counts_against_its_domain_until_it_asks_for_more() {
    let mut limits = limits();
    limits.max_connections_per_domain = 1;
    let mut w = World::new(one_site_shape(5, 20)).with_limits(limits);
    w.queue(&[("a.test", "mx.test")], 3);
    let (site, m) = w.take_opens()[0].clone();
    assert!(w.take_opens().is_empty(), "one connection for the domain");
    // The message is back before its connection asks for more: no second
    // connection in between.
    w.s.returned(&m.domain, &m.id, true, None, w.now);
    w.tick();
    assert!(w.take_opens().is_empty(), "{:?}", w.actions);
    w.s.want_more(1, site, Some("a.test"), w.now);
    w.tick();
    let nexts = w.take_nexts();
    assert_eq!(nexts.len(), 1);
    // Given to a connection that closed meanwhile: back, and the domain
    // may have a connection again.
    let job = nexts[0].1.clone().expect("a message");
    w.s.closed(1, site, None, true);
    w.s.not_taken(job, w.now);
    w.tick();
    assert_eq!(w.take_opens().len(), 1);
}

#[test]
fn a_paced_site_opens_again_after_its_connection_said_goodbye() {
    let shape = Shape {
        initial_connections: 1,
        max_connections: 1,
        max_messages_per_connection: 3,
        message_interval: Some(ms(100)),
        ..Shape::default()
    };
    let mut w = World::new(shape);
    let domains: Vec<String> = (0..3).map(|i| format!("r{i}.test")).collect();
    let pairs: Vec<(&str, &str)> = domains
        .iter()
        .map(|d| (d.as_str(), "mx.rate.test"))
        .collect();
    w.queue(&pairs, 4);
    let (site, mut job) = w.take_opens().pop().expect("a connection");
    for _ in 0..2 {
        w.finish(site, 1, &job);
        let mut next = None;
        for _ in 0..20 {
            w.advance(ms(10));
            if let Some((_, Some(j))) = w.take_nexts().pop() {
                next = Some(j);
                break;
            }
        }
        job = next.expect("the next message within the pace");
    }
    // The third message was its last: it says goodbye.
    w.s.returned(&job.domain, &job.id, true, None, w.now);
    w.s.closed(1, site, Some(&job.domain), true);
    w.tick();
    let mut opened = false;
    for _ in 0..20 {
        w.advance(ms(10));
        if !w.take_opens().is_empty() {
            opened = true;
            break;
        }
    }
    assert!(opened, "a new connection within the pace: {:?}", w.actions);
}

#[test]
fn a_route_that_expires_is_looked_up_again_and_its_mail_goes_on() {
    let mut w = World::new(one_site_shape(1, 1));
    w.queue(&[("a.test", "mx.test")], 5);
    let (site, mut job) = w.take_opens().pop().expect("a connection");
    // The route's hour passes while the connection works.
    w.now += Duration::from_secs(3601);
    w.finish(site, 1, &job);
    let lookups = w.take_lookups();
    assert_eq!(lookups, vec!["a.test".to_owned()]);
    assert!(w.take_nexts().is_empty(), "it waits for the route");
    w.resolve("a.test", "mx.test", None);
    w.tick();
    let nexts = w.take_nexts();
    assert_eq!(nexts.len(), 1, "{:?}", w.actions);
    job = nexts[0].1.clone().expect("a message");
    assert_eq!(job.domain, "a.test");
}

#[test]
fn a_paced_site_with_short_routes_keeps_going() {
    let shape = Shape {
        max_messages_per_connection: 5,
        message_interval: Some(ms(100)),
        ..Shape::default()
    };
    let mut w = World::new(shape);
    let domains: Vec<String> = (0..10).map(|i| format!("r{i}.test")).collect();
    let mut started = 0;
    for d in &domains {
        for i in 0..40 {
            w.s.found(msg(d, i), None, w.now);
        }
    }
    // conn id -> (site, job, transactions)
    let mut conns: Vec<(Conn, SiteId, Msg, usize)> = Vec::new();
    let mut next_conn: Conn = 0;
    for _step in 0..3000 {
        w.advance(ms(10));
        for name in w.take_lookups() {
            let spec = SiteSpec {
                name: "mx.rate.test".into(),
                hosts: vec!["mx.rate.test".into()],
                shape: w.shape.clone(),
                persisted: None,
            };
            let until = w.now + Duration::from_secs(5);
            w.s.resolved(&name, Ok((route("mx.rate.test"), spec)), until, w.now);
        }
        w.tick();
        for (site, job) in w.take_opens() {
            started += 1;
            conns.push((next_conn, site, job, 1));
            next_conn += 1;
        }
        for (conn, job) in w.take_nexts() {
            if let Some(job) = job {
                started += 1;
                if let Some(c) = conns.iter_mut().find(|c| c.0 == conn) {
                    c.2 = job;
                    c.3 += 1;
                }
            } else {
                conns.retain(|c| c.0 != conn);
                let site = SiteId(0);
                w.s.closed(conn, site, None, true);
            }
        }
        // Every connection finishes its message at once.
        let busy: Vec<(Conn, SiteId, Msg, usize)> = std::mem::take(&mut conns);
        for (conn, site, job, n) in busy {
            w.s.returned(&job.domain, &job.id, true, None, w.now);
            if n >= 5 {
                w.s.closed(conn, site, Some(&job.domain), true);
            } else {
                w.s.want_more(conn, site, Some(&job.domain), w.now);
                conns.push((conn, site, job, n));
            }
        }
        w.tick();
    }
    // 30 s at 10/s.
    assert!(
        started >= 290,
        "{started} started in 30 s; {:?}",
        w.s.totals()
    );
}

#[test]
fn routes_that_expire_on_a_paced_turn_are_looked_up_at_once() {
    let shape = Shape {
        message_interval: Some(ms(100)),
        ..Shape::default()
    };
    let mut w = World::new(shape);
    w.s.found(msg("a.test", 0), None, w.now);
    w.s.found(msg("a.test", 1), None, w.now);
    w.tick();
    w.take_lookups();
    let spec = SiteSpec {
        name: "mx.test".into(),
        hosts: vec!["mx.test".into()],
        shape: w.shape.clone(),
        persisted: None,
    };
    // The route lasts 50 ms, less than the pace.
    let until = w.now + ms(50);
    w.s.resolved("a.test", Ok((route("mx.test"), spec)), until, w.now);
    w.tick();
    assert_eq!(w.take_opens().len(), 1);
    w.now += ms(100);
    w.tick();
    assert_eq!(
        w.take_lookups(),
        vec!["a.test".to_owned()],
        "{:?}",
        w.actions
    );
}

/// Delivers `m` over `conn`, which waits for more, then says goodbye and
/// closes.
fn deliver_and_close(w: &mut World, site: SiteId, conn: Conn, m: &Msg) {
    w.finish(site, conn, m);
    let wait = w.shape.connection_cache_time;
    w.advance(wait + ms(1));
    for (c, job) in w.take_nexts() {
        assert!(job.is_none(), "nothing more to send");
        w.s.closed(c, site, None, true);
    }
    w.tick();
}

#[test]
fn idle_domains_and_sites_are_forgotten_once_their_route_expires() {
    let mut w = World::new(one_site_shape(1, 1));
    w.queue(&[("a.test", "mx.test")], 1);
    let (site, job) = w.take_opens().pop().expect("a connection");
    deliver_and_close(&mut w, site, 1, &job);
    // The route is cached for its hour: both are kept however often the
    // scheduler looks.
    w.advance(FORGET_EVERY);
    w.advance(FORGET_EVERY);
    assert_eq!((w.s.totals().domains, w.s.totals().sites), (1, 1));
    assert_eq!(w.s.site_id("mx.test"), Some(site));
    // The hour is over: the next look forgets both.
    w.advance(Duration::from_secs(3600));
    assert_eq!((w.s.totals().domains, w.s.totals().sites), (0, 0));
    assert_eq!(w.s.site_id("mx.test"), None);
    assert!(w.s.site(site).is_none());
    // A late word about the old site finds nothing and harms nothing.
    w.s.closed(7, site, None, true);
    w.s.want_more(8, site, None, w.now);
    w.tick();
    assert_eq!(w.take_nexts(), vec![(8, None)]);
    // New mail for the domain is looked up again and gets a new site id:
    // an id is never given twice.
    w.queue(&[("a.test", "mx.test")], 1);
    let (new_site, job) = w.take_opens().pop().expect("a connection");
    assert_ne!(new_site, site);
    assert_eq!(job.domain, "a.test");
}

#[test]
fn what_still_matters_is_not_forgotten() {
    let mut w = World::new(one_site_shape(1, 1));
    // b.test has a message waiting for its retry time.
    w.queue(&[("a.test", "mx.a.test"), ("b.test", "mx.b.test")], 1);
    let opens = w.take_opens();
    let (site_a, job_a) = opens
        .iter()
        .find(|(_, m)| m.domain == "a.test")
        .cloned()
        .expect("a connection to a.test");
    let (site_b, job_b) = opens
        .iter()
        .find(|(_, m)| m.domain == "b.test")
        .cloned()
        .expect("a connection to b.test");
    deliver_and_close(&mut w, site_a, 1, &job_a);
    w.s.returned(&job_b.domain, &job_b.id, true, None, w.now);
    w.s.defer(job_b.clone(), w.now + Duration::from_secs(7200));
    w.s.closed(2, site_b, Some("b.test"), true);
    // a.test's site refused a connection and keeps its backoff.
    w.s.found(msg("a.test", 9), None, w.now);
    w.tick();
    let (site, job) = w.take_opens().pop().expect("a connection to a.test");
    assert_eq!(site, site_a);
    let failure = ConnectFailure {
        error: "connection refused".to_owned(),
        throttle: None,
        loops: false,
    };
    let after = w.s.connect_failed(job, &failure, w.now);
    assert!(matches!(after, AfterFailure::Failed { .. }));
    w.s.closed(3, site_a, None, true);
    w.advance(Duration::from_secs(3601));
    assert!(
        w.s.site(site_a).is_some_and(|s| s.failures > 0),
        "a site in backoff is remembered"
    );
    assert!(w.s.site(site_b).is_none(), "b.test's route expired");
    assert_eq!(
        w.s.totals().deferred,
        1,
        "a domain with a message waiting is kept"
    );
    // The message comes back at its time and is looked up again.
    w.advance(Duration::from_secs(3600));
    assert_eq!(w.take_lookups(), vec!["b.test".to_owned()]);
}

#[test]
fn expired_routes_are_looked_up_again_before_the_next_message() {
    let mut w = World::new(one_site_shape(1, 1));
    w.queue(&[("d.test", "mx.old.test")], 1);
    let opens = w.take_opens();
    assert_eq!(opens.len(), 1);
    let (site, m) = opens[0].clone();
    w.finish(site, 0, &m);
    w.take_nexts();
    w.s.expire_routes(w.now);
    w.s.found(msg("d.test", 7), None, w.now);
    w.tick();
    assert_eq!(
        w.take_lookups(),
        vec!["d.test".to_owned()],
        "{:#?}",
        w.actions
    );
    assert!(w.take_opens().is_empty(), "nothing starts on the old route");
    w.resolve("d.test", "mx.new.test", None);
    w.tick();
    let opens = w.take_opens();
    assert_eq!(opens.len(), 1, "{:#?}", w.actions);
    assert_ne!(opens[0].0, site, "the new route's site");
}
