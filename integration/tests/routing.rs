//! End to end: routing by DNS (RFC 5321 §5.1, RFC 7505). MX fallback when
//! the best host refuses, turns the client away or never greets; null MX and
//! NXDOMAIN are permanent; SERVFAIL and silence are temporary.

mod common;

use std::time::Duration;

use common::{add_numbered, assert_outcome, assert_relay, check, config, message};
use postman_integration::hostile::Script;
use postman_integration::{postman, DnsServer, HostileServer, TestNet, TestQueue, Zones};

/// Two MX hosts for `fallback.test`: mx1 (preference 10) at .1, mx2 (20)
/// at .2. Queues one message and runs postman once with a 1 s greeting
/// timeout; checks that mx2 got the message. Returns the mx1 server (if the
/// test started one) for further checks.
fn fallback_case(mx1_script: Option<Script>) -> Option<HostileServer> {
    let net = TestNet::new();
    let mx1 = mx1_script.map(|s| HostileServer::start(net.addr(1), vec![s]));
    let mx2 = HostileServer::polite(net.addr(2));
    let dns = DnsServer::start(
        Zones::new()
            .mx("fallback.test", 20, "mx2.fallback.test")
            .mx("fallback.test", 10, "mx1.fallback.test")
            .a("mx1.fallback.test", net.ipv4(1))
            .a("mx2.fallback.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    queue.add(
        "fallback.test",
        "m1",
        "a@src.test",
        &["u@fallback.test"],
        &message("fb", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.timeouts.greeting = 1;
    cfg.timeouts.connect = 1;

    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "mx2 should have taken the message",
        &queue,
        &out,
    );
    assert!(
        mx2.wait_idle(1, Duration::from_secs(5)),
        "mx2 connection did not finish"
    );
    assert_eq!(
        mx2.bodies().len(),
        1,
        "mx2 transcript: {:#?}",
        mx2.connections()
    );
    let d = assert_outcome(
        &out,
        &out.deliveries(),
        "u@fallback.test",
        "sent",
        Some(250),
    );
    assert_relay(&d, net.ip(2), net.port());
    assert!(
        out.elapsed < Duration::from_secs(15),
        "fallback took {:?}; the greeting timeout is 1 s",
        out.elapsed
    );
    mx1
}

#[test]
fn mx_fallback_when_first_mx_refuses_connections() {
    // Nothing listens on mx1's address: connection refused.
    fallback_case(None);
}

#[test]
fn mx_fallback_when_first_mx_greets_with_421() {
    let mx1 = fallback_case(Some(
        Script::new().greet("421 4.3.2 mx1 is too busy, try later"),
    ))
    .expect("mx1 started");
    assert_eq!(mx1.connection_count(), 1, "postman should try mx1 once");
    assert!(mx1.bodies().is_empty(), "mx1 must not receive the message");
}

#[test]
fn mx_fallback_when_first_mx_greets_with_554() {
    let mx1 = fallback_case(Some(
        Script::new().greet("554 5.3.2 mx1 does not serve you"),
    ))
    .expect("mx1 started");
    assert!(mx1.bodies().is_empty(), "mx1 must not receive the message");
}

#[test]
fn mx_fallback_when_first_mx_never_greets() {
    // Accepts, then says nothing for 20 s: past the 1 s greeting timeout.
    let mx1 = fallback_case(Some(Script::new().stall(20_000))).expect("mx1 started");
    assert_eq!(mx1.connection_count(), 1, "postman should try mx1 once");
}

#[test]
fn mx_fallback_skips_an_mx_host_without_address() {
    let net = TestNet::new();
    let mx2 = HostileServer::polite(net.addr(2));
    let dns = DnsServer::start(
        Zones::new()
            .mx("noaddr.test", 10, "ghost.noaddr.test") // NXDOMAIN
            .mx("noaddr.test", 20, "mx2.noaddr.test")
            .a("mx2.noaddr.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    queue.add(
        "noaddr.test",
        "m1",
        "a@src.test",
        &["u@noaddr.test"],
        &message("na", "x\n"),
    );
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "mx2 should have taken the message",
        &queue,
        &out,
    );
    assert_eq!(mx2.bodies().len(), 1);
}

#[test]
fn every_mx_unreachable_defers_and_keeps_the_message() {
    let net = TestNet::new();
    // Nothing listens on .1 or .2.
    let dns = DnsServer::start(
        Zones::new()
            .mx("down.test", 10, "mx1.down.test")
            .mx("down.test", 20, "mx2.down.test")
            .a("mx1.down.test", net.ipv4(1))
            .a("mx2.down.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    queue.add(
        "down.test",
        "m1",
        "a@src.test",
        &["u@down.test"],
        &message("down", "x\n"),
    );
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    let state = queue.state();
    check(
        state.is_queued("down.test", "m1"),
        "the message should stay queued",
        &queue,
        &out,
    );
    check(
        state.failed.is_empty(),
        "nothing should fail permanently",
        &queue,
        &out,
    );
    let d = assert_outcome(&out, &out.deliveries(), "u@down.test", "deferred", None);
    assert_eq!(d.queue_id, "m1");
}

#[test]
fn a_restart_keeps_an_unreachable_site_backing_off() {
    let net = TestNet::new();
    // The only MX ends every session before it answers EHLO (a 421
    // greeting would be a throttle: issue 17).
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::new().greet("220 busy.test ESMTP").close()],
    );
    let dns = DnsServer::start(Zones::new().mx_at("busy.test", net.ipv4(1)));
    let queue = TestQueue::new();
    for i in 0..3 {
        queue.add(
            "busy.test",
            &format!("m{i}"),
            "a@src.test",
            &["u@busy.test"],
            &message(&format!("busy{i}"), "x\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.min_backoff = 3600;
    let cfg = cfg.write();

    let first = postman!().run_once(&cfg);
    first.assert_success();
    let tried = server.connection_count();
    assert!(
        tried >= 1,
        "the first run should try the server: {}",
        first.stderr
    );
    // The site (its MX host) backs off, not the domain.
    let backoff = queue.root().join(".OTHER_SERVERS/.sites/mx.busy.test");
    let text = std::fs::read_to_string(&backoff)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", backoff.display(), first.stderr));
    assert!(
        text.contains("failures: 1")
            && text.contains("site: mx.busy.test")
            && text.contains("domains: busy.test"),
        "the backoff file should name the site, count the failure and list its domains: {text}"
    );

    // A new process: the domain is still backing off, nothing is tried.
    let second = postman!().run_once(&cfg);
    second.assert_success();
    assert_eq!(
        server.connection_count(),
        tried,
        "the restarted postman must not contact the backing-off domain: {}",
        second.stderr
    );
    for i in 0..3 {
        let name = format!("m{i}");
        check(
            queue.state().is_queued("busy.test", &name),
            &format!("{name} stays queued"),
            &queue,
            &second,
        );
    }

    // Each message that carried a failed attempt has its own schedule too.
    for i in 0..3 {
        let name = format!("m{i}");
        let path = queue.domain_dir("busy.test").join(&name);
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("X-Postman-Next-Attempt:") {
            assert!(
                text.contains("X-Postman-Last-Error:"),
                "{name}: the failed attempt is recorded on the file: {text}"
            );
            postman_integration::queue::make_due(&path);
        }
    }

    // Once the backoff is over (here: removed), the domain is tried again.
    std::fs::remove_file(&backoff).unwrap();
    let third = postman!().run_once(&cfg);
    third.assert_success();
    assert!(
        server.connection_count() > tried,
        "without the backoff the server is tried again: {}",
        third.stderr
    );
}

#[test]
fn null_mx_bounces_the_message_to_its_sender() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new().null_mx("nullmx.test"));
    let queue = TestQueue::new();
    queue.add(
        "nullmx.test",
        "m1",
        "a@src.test",
        &["u@nullmx.test"],
        &message("null", "x\n"),
    );
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    let state = queue.state();
    check(
        !state.is_queued("nullmx.test", "m1"),
        "m1 must leave the queue",
        &queue,
        &out,
    );
    let bounces = queue.bounces_to("a@src.test");
    check(bounces.len() == 1, "one bounce to the sender", &queue, &out);
    let text = bounces[0].text();
    assert!(
        text.to_ascii_lowercase().contains("null mx") && text.contains("Status: 5.1.10"),
        "the bounce should say null MX with status 5.1.10 (RFC 7505): {text}"
    );
    assert_outcome(&out, &out.deliveries(), "u@nullmx.test", "bounced", None);
}

#[test]
fn nxdomain_bounces_the_message_to_its_sender() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new().mx("other.test", 10, "mx.other.test"));
    let queue = TestQueue::new();
    queue.add(
        "nowhere.test",
        "m1",
        "a@src.test",
        &["u@nowhere.test"],
        &message("nx", "x\n"),
    );
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    let state = queue.state();
    check(
        !state.is_queued("nowhere.test", "m1"),
        "m1 must leave the queue",
        &queue,
        &out,
    );
    let bounces = queue.bounces_to("a@src.test");
    check(bounces.len() == 1, "one bounce to the sender", &queue, &out);
    let text = bounces[0].text();
    assert!(
        text.contains("does not exist") && text.contains("Status: 5.1.2"),
        "the bounce should say the domain does not exist, status 5.1.2: {text}"
    );
    assert_outcome(&out, &out.deliveries(), "u@nowhere.test", "bounced", None);
}

#[test]
fn servfail_defers_and_keeps_the_message() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new().servfail("broken.test"));
    let queue = TestQueue::new();
    queue.add(
        "broken.test",
        "m1",
        "a@src.test",
        &["u@broken.test"],
        &message("sf", "x\n"),
    );
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    let state = queue.state();
    check(
        state.is_queued("broken.test", "m1"),
        "SERVFAIL is temporary: m1 stays queued",
        &queue,
        &out,
    );
    check(
        state.failed.is_empty(),
        "nothing should fail permanently",
        &queue,
        &out,
    );
    let d = assert_outcome(&out, &out.deliveries(), "u@broken.test", "deferred", None);
    assert_eq!(d.relay, "none", "no host was reached: {d:?}");
}

#[test]
fn dns_timeout_defers_and_keeps_the_message() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new().silent("slow.test"));
    let queue = TestQueue::new();
    queue.add(
        "slow.test",
        "m1",
        "a@src.test",
        &["u@slow.test"],
        &message("slow", "x\n"),
    );
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();
    let state = queue.state();
    check(
        state.is_queued("slow.test", "m1"),
        "a DNS timeout is temporary: m1 stays queued",
        &queue,
        &out,
    );
    check(
        state.failed.is_empty(),
        "nothing should fail permanently",
        &queue,
        &out,
    );
    assert_outcome(&out, &out.deliveries(), "u@slow.test", "deferred", None);
    assert!(
        out.elapsed < Duration::from_secs(15),
        "dns.timeout = 1 s, attempts = 1, yet the run took {:?}",
        out.elapsed
    );
}

/// Postfix's `smtp_mx_address_limit`: one attempt tries at most
/// `delivery.max_mx_addresses` addresses, over the MX hosts in preference
/// order, so a domain listing many addresses that all time out cannot hold
/// a connection for that many connect timeouts. The message is deferred;
/// the addresses left out wait for the next attempt.
#[test]
fn one_attempt_tries_at_most_max_mx_addresses() {
    let net = TestNet::new();
    // mx1 (preference 10) has four addresses, mx2 (20) three; every server
    // refuses service at the greeting (a 554: a 421 would be a throttle).
    let servers: Vec<HostileServer> = (1..=7)
        .map(|i| {
            HostileServer::start(
                net.addr(i),
                vec![Script::new().greet("554 5.3.2 no service")],
            )
        })
        .collect();
    let mut zones =
        Zones::new()
            .mx("many.test", 20, "mx2.many.test")
            .mx("many.test", 10, "mx1.many.test");
    for i in 1..=4 {
        zones = zones.a("mx1.many.test", net.ipv4(i));
    }
    for i in 5..=7 {
        zones = zones.a("mx2.many.test", net.ipv4(i));
    }
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    queue.add(
        "many.test",
        "m1",
        "a@src.test",
        &["u@many.test"],
        &message("many", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_mx_addresses = 5;

    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let counts: Vec<usize> = servers
        .iter()
        .map(HostileServer::connection_count)
        .collect();
    check(
        counts[..4] == [1, 1, 1, 1],
        &format!("every address of the preferred host is tried once: {counts:?}"),
        &queue,
        &out,
    );
    check(
        counts[4..].iter().sum::<usize>() == 1,
        &format!("then one address of mx2, five in all: {counts:?}"),
        &queue,
        &out,
    );
    check(
        queue.state().is_queued("many.test", "m1"),
        "the message waits for the next attempt",
        &queue,
        &out,
    );
    assert_outcome(
        &out,
        &out.deliveries(),
        "u@many.test",
        "deferred",
        Some(554),
    );
}

/// A server that takes at most two connections from us at once and greets
/// a third with 421, as servers limiting connections per client do. The
/// domain starts with five connections (`initial_connections_per_domain`);
/// each refused one lowers the domain's allowed connections to those still
/// open, and its message waits for them instead of being deferred. The
/// domain is never backed off, and every message goes out in one run.
#[test]
fn a_server_limiting_connections_per_client_lowers_concurrency_and_defers_nothing() {
    const MESSAGES: usize = 40;
    let net = TestNet::new();
    let server = HostileServer::start_capped(
        net.addr(1),
        vec![Script::polite()],
        2,
        "421 4.7.0 too many connections from your address",
    );
    let dns = DnsServer::start(Zones::new().mx_at("capped.test", net.ipv4(1)));
    let queue = TestQueue::new();
    add_numbered(&queue, "capped.test", MESSAGES, "cap");
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 10;
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "every message should be delivered in one run",
        &queue,
        &out,
    );
    let deliveries = out.deliveries();
    assert!(
        deliveries.len() == MESSAGES && deliveries.iter().all(|d| d.status == "sent"),
        "one record per message, nothing deferred: {deliveries:#?}"
    );
    assert_eq!(server.body_count(), MESSAGES, "each message once");
    let capped = server.connections().iter().filter(|c| c.capped).count();
    let throttles = out.max_metric("dispatcher", "throttles");
    check(
        capped >= 3 && throttles as usize == capped,
        &format!("the three connections over the cap at the start, and each later probe, are throttles: {capped} capped, {throttles} throttles"),
        &queue,
        &out,
    );
    assert!(
        !queue.domain_dir("capped.test").join(".backoff").exists(),
        "the domain is not backed off"
    );
}

/// Slow start: a domain begins with `initial_connections_per_domain`
/// connections and earns one more per that many deliveries. Starting from
/// one, with a server that takes half a second to greet, the first
/// connection delivers the six messages while at most two more are still
/// greeting; without slow start all six would have connected at once.
#[test]
fn a_domain_starts_with_few_connections_and_earns_more_by_delivering() {
    const MESSAGES: usize = 6;
    let net = TestNet::new();
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .stall(500)
            .greet("220 slow.test ESMTP")
            .then_polite()],
    );
    let dns = DnsServer::start(Zones::new().mx_at("slow.test", net.ipv4(1)));
    let queue = TestQueue::new();
    add_numbered(&queue, "slow.test", MESSAGES, "slow");
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 10;
    cfg.initial_connections_per_domain = 1;
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "every message should be delivered",
        &queue,
        &out,
    );
    assert_eq!(server.body_count(), MESSAGES, "each message once");
    let opened = server.connection_count();
    check(
        (1..=3).contains(&opened),
        &format!("one connection to start, one more after the first delivery and after two more: {opened} opened"),
        &queue,
        &out,
    );
}

/// Only a server's answer earns a domain more connections. A server that
/// greets slowly, takes each message and hangs up before its final reply
/// answers nothing: with one connection to start, the domain stays at one,
/// each message deferred on a connection of its own. Counting such attempts
/// as deliveries would open a second connection after the first hang-up.
#[test]
fn connections_cut_off_before_the_answer_earn_no_more_connections() {
    const MESSAGES: usize = 4;
    let net = TestNet::new();
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .stall(200)
            .hello()
            .expect("MAIL FROM", "250 ok")
            .expect("RCPT TO", "250 ok")
            .expect("DATA", "354 go ahead")
            .body_silently()
            .close()],
    );
    let dns = DnsServer::start(Zones::new().mx_at("cutoff.test", net.ipv4(1)));
    let queue = TestQueue::new();
    add_numbered(&queue, "cutoff.test", MESSAGES, "cut");
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections_per_domain = 10;
    cfg.initial_connections_per_domain = 1;
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let deliveries = out.deliveries();
    check(
        deliveries.len() == MESSAGES && deliveries.iter().all(|d| d.status == "deferred"),
        &format!("each message tried once and deferred: {deliveries:#?}"),
        &queue,
        &out,
    );
    assert_eq!(server.connection_count(), MESSAGES, "one connection each");
    assert_eq!(
        server.peak_connections(),
        1,
        "no answer, no second connection"
    );
}
