//! End to end: `[routing]` (issue 19). Next hops beside MX delivery in
//! one run (relay host, transport entries per domain and subdomain, a
//! transport "mx" entry), an unreachable relay deferring, the fallback
//! relay taking what the MX hosts could not.

mod common;

use std::time::Duration;

use common::{assert_outcome, check, config, message};
use postman_integration::hostile::Script;
use postman_integration::{postman, DnsServer, HostileServer, TestNet, TestQueue, Zones};

#[test]
fn relay_host_and_transport_entries_beside_mx_delivery() {
    let net = TestNet::new();
    let mx = HostileServer::polite(net.addr(1));
    let relay = HostileServer::polite(net.addr(5));
    let internal = HostileServer::polite(net.addr(6));
    // Only direct.test is in the DNS: the others must never be looked up.
    let dns = DnsServer::start(Zones::new().mx_at("direct.test", net.ipv4(1)));
    let queue = TestQueue::new();
    for (domain, id) in [
        ("direct.test", "m-direct"),
        ("a.internal.test", "m-internal"),
        ("elsewhere.test", "m-relayed"),
    ] {
        queue.add(
            domain,
            id,
            "a@src.test",
            &[&format!("u@{domain}")],
            &message(id, "x\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!(
        "[routing]\nrelayhost = \"[{relay}]:{port}\"\n\
         [routing.transport]\n\"direct.test\" = \"mx\"\n\".internal.test\" = \"[{internal}]:{port}\"\n",
        relay = net.ipv4(5),
        internal = net.ipv4(6),
        port = net.port(),
    );
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "every message should be delivered",
        &queue,
        &out,
    );
    let deliveries = out.deliveries();
    let cases = [
        // A transport "mx" entry chose MX delivery.
        ("u@direct.test", &mx, 1, "transport"),
        ("u@a.internal.test", &internal, 6, "transport"),
        ("u@elsewhere.test", &relay, 5, "relayhost"),
    ];
    for (to, server, k, via) in cases {
        let d = assert_outcome(&out, &deliveries, to, "sent", Some(250));
        common::assert_relay(&d, net.ipv4(k).into(), net.port());
        assert_eq!(d.via, via, "{d:#?}");
        assert!(
            server.wait_idle(1, Duration::from_secs(5)),
            "{to}: the server did not finish"
        );
        let bodies = server.bodies();
        assert_eq!(bodies.len(), 1, "{to}: {:#?}", server.connections());
    }
    let relayed = deliveries
        .iter()
        .find(|d| d.to == "u@elsewhere.test")
        .expect("a record");
    assert!(
        relayed.site.starts_with("relay:["),
        "a relay is a site of its own: {relayed:#?}"
    );
}

#[test]
fn an_unreachable_relay_defers_and_never_bounces() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    queue.add(
        "far.test",
        "m1",
        "a@src.test",
        &["u@far.test"],
        &message("m1", "x\n"),
    );
    queue.add(
        "near.test",
        "m2",
        "a@src.test",
        &["u@near.test"],
        &message("m2", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.timeouts.connect = 1;
    // Nothing listens at .9; nohost.test does not exist in the DNS.
    cfg.extra = format!(
        "[routing.transport]\n\"far.test\" = \"[{}]:{}\"\n\"near.test\" = \"[nohost.test]\"\n",
        net.ipv4(9),
        net.port()
    );
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    let deliveries = out.deliveries();
    let far = assert_outcome(&out, &deliveries, "u@far.test", "deferred", None);
    assert_eq!(far.via, "transport", "{far:#?}");
    let near = assert_outcome(&out, &deliveries, "u@near.test", "deferred", None);
    assert!(
        near.reply.contains("relay [nohost.test]") && near.reply.contains("unreachable"),
        "the reason names the relay: {near:#?}"
    );
    assert_eq!(
        queue.state().queued_count(),
        2,
        "both wait for the next attempt"
    );
}

#[test]
fn the_fallback_relay_takes_what_the_mx_hosts_could_not() {
    let net = TestNet::new();
    let mx = HostileServer::start(
        net.addr(1),
        vec![Script::new().greet("421 4.3.2 not now").close()],
    );
    let fallback = HostileServer::polite(net.addr(7));
    let dns = DnsServer::start(Zones::new().mx_at("busy.test", net.ipv4(1)));
    let queue = TestQueue::new();
    queue.add(
        "busy.test",
        "m1",
        "a@src.test",
        &["u@busy.test"],
        &message("m1", "x\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!(
        "[routing]\nfallback_relay = [\"[{}]:{}\"]\n",
        net.ipv4(7),
        net.port()
    );
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    check(
        queue.state().is_empty(),
        "the fallback relay should take it",
        &queue,
        &out,
    );
    let d = assert_outcome(&out, &out.deliveries(), "u@busy.test", "sent", Some(250));
    common::assert_relay(&d, net.ipv4(7).into(), net.port());
    assert_eq!(d.via, "fallback", "{d:#?}");
    assert!(fallback.wait_idle(1, Duration::from_secs(5)));
    assert_eq!(fallback.bodies().len(), 1);
    assert!(!mx.connections().is_empty(), "the MX host was tried first");
}

#[test]
fn postman_route_says_where_mail_would_go_without_sending() {
    let net = TestNet::new();
    let mx = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("direct.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!(
        "[routing]\nrelayhost = \"smtps:[{}]:{}\"\nhelo_name = \"out.example.org\"\n\
         [routing.transport]\n\"direct.test\" = \"mx\"\n",
        net.ipv4(5),
        net.port()
    );
    let file = cfg.write();
    let path = file.path().to_str().expect("a UTF-8 path");
    let ask = |address: &str| {
        let out = postman!().run(
            &["route", "--config", path, address],
            Duration::from_secs(20),
        );
        out.assert_success();
        out.stdout
    };
    let relayed = ask("u@elsewhere.test");
    for want in [
        "via        relayhost",
        &format!(
            "next hop   smtps:[{}]:{} (port {}, implicit TLS)",
            net.ipv4(5),
            net.port(),
            net.port()
        ),
        &format!("site       relay:smtps:[{}]:{}", net.ipv4(5), net.port()),
        "ehlo       out.example.org",
    ] {
        assert!(relayed.contains(want), "{want:?} in\n{relayed}");
    }
    let direct = ask("u@direct.test");
    for want in [
        "via        transport",
        "next hop   the domain's MX hosts",
        &format!("host       mx.direct.test [{}]", net.ipv4(1)),
    ] {
        assert!(direct.contains(want), "{want:?} in\n{direct}");
    }
    assert!(mx.connections().is_empty(), "nothing is sent");
}

/// SIGHUP with a changed transport entry: the next message goes the new
/// way at once, not when the old route would have expired; a reload with
/// a bad entry is refused and the old table kept.
#[test]
fn a_reload_reroutes_at_once_and_refuses_a_bad_table() {
    use nix::sys::signal::Signal;
    let net = TestNet::new();
    let old = HostileServer::polite(net.addr(5));
    let new = HostileServer::polite(net.addr(6));
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    std::fs::create_dir_all(queue.domain_dir("moved.test").join("tmp")).unwrap();
    let mut cfg = config(&queue, &net, &dns);
    let transport = |k: u8| {
        format!(
            "[routing.transport]\n\"moved.test\" = \"[{}]:{}\"\n",
            net.ipv4(k),
            net.port()
        )
    };
    cfg.extra = transport(5);
    let file = cfg.write();
    let mut daemon = postman!().spawn_daemon(&file);
    queue.add(
        "moved.test",
        "m1",
        "a@src.test",
        &["u@moved.test"],
        &message("m1", "x\n"),
    );
    assert!(
        old.wait_bodies(1, Duration::from_secs(10)),
        "{}",
        daemon.log_text()
    );

    // A bad table is refused: the old one stays.
    cfg.extra = "[routing.transport]\n\"moved.test\" = \"[nowhere\"\n".into();
    std::fs::write(file.path(), cfg.to_toml()).unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_for(Duration::from_secs(5), |r| r.iter().any(|r| r["msg"]
            .as_str()
            .is_some_and(|m| m.contains("keeping the old"))
            || r["error"]
                .as_str()
                .is_some_and(|e| e.contains("routing.transport")))),
        "the refused reload is logged: {}",
        daemon.log_text()
    );
    queue.add(
        "moved.test",
        "m2",
        "a@src.test",
        &["u@moved.test"],
        &message("m2", "x\n"),
    );
    assert!(
        old.wait_bodies(2, Duration::from_secs(10)),
        "{}",
        daemon.log_text()
    );

    cfg.extra = transport(6);
    std::fs::write(file.path(), cfg.to_toml()).unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_for(Duration::from_secs(5), |r| r
            .iter()
            .any(|r| r["key"].as_str().is_some_and(|k| k.starts_with("routing")))),
        "the reload reports the change: {}",
        daemon.log_text()
    );
    queue.add(
        "moved.test",
        "m3",
        "a@src.test",
        &["u@moved.test"],
        &message("m3", "x\n"),
    );
    assert!(
        new.wait_bodies(1, Duration::from_secs(10)),
        "{}",
        daemon.log_text()
    );
    assert_eq!(old.bodies().len(), 2, "the old relay got nothing more");
    assert!(
        daemon.terminate(Duration::from_secs(10)).is_some(),
        "stopped"
    );
}

/// Mail of one domain from a sender with a `[routing.sender_relayhost]`
/// rule goes through that relay, the rest by MX, in the same run; a
/// transport entry still beats the sender's rule.
#[test]
fn a_sender_rule_routes_its_mail_apart() {
    let net = TestNet::new();
    let mx = HostileServer::polite(net.addr(1));
    let relay = HostileServer::polite(net.addr(5));
    let internal = HostileServer::polite(net.addr(6));
    let dns = DnsServer::start(Zones::new().mx_at("gmail.test", net.ipv4(1)));
    let queue = TestQueue::new();
    for (domain, id, sender) in [
        ("gmail.test", "m-bulk", "news@bulk.example"),
        ("gmail.test", "m-own", "alice@me.example"),
        ("gmail.test", "m-bulk2", "offers@x.bulk.example"),
        ("internal.test", "m-internal", "news@bulk.example"),
    ] {
        queue.add(
            domain,
            id,
            sender,
            &[&format!("u-{id}@{domain}")],
            &message(id, "x\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.extra = format!(
        "[routing.sender_relayhost]\n\"bulk.example\" = \"[{r}]:{port}\"\n\".bulk.example\" = \"[{r}]:{port}\"\n\
         [routing.transport]\n\"internal.test\" = \"[{i}]:{port}\"\n",
        r = net.ipv4(5),
        i = net.ipv4(6),
        port = net.port(),
    );
    let file = cfg.write();
    let out = postman!().run_once(&file);
    out.assert_success();
    check(
        queue.state().is_empty(),
        "every message should be delivered",
        &queue,
        &out,
    );
    let deliveries = out.deliveries();
    for (to, k, via) in [
        ("u-m-bulk@gmail.test", 5, "sender_relayhost"),
        ("u-m-bulk2@gmail.test", 5, "sender_relayhost"),
        ("u-m-own@gmail.test", 1, "mx"),
        ("u-m-internal@internal.test", 6, "transport"),
    ] {
        let d = assert_outcome(&out, &deliveries, to, "sent", Some(250));
        common::assert_relay(&d, net.ipv4(k).into(), net.port());
        assert_eq!(d.via, via, "{d:#?}");
    }
    assert!(relay.wait_idle(1, Duration::from_secs(5)));
    assert_eq!(relay.bodies().len(), 2, "{:#?}", relay.connections());
    assert_eq!(mx.bodies().len(), 1, "{:#?}", mx.connections());
    assert_eq!(internal.bodies().len(), 1, "{:#?}", internal.connections());

    let path = file.path().to_str().expect("a UTF-8 path");
    let said = postman!().run(
        &[
            "route",
            "--config",
            path,
            "--from",
            "x@bulk.example",
            "u@gmail.test",
        ],
        Duration::from_secs(20),
    );
    said.assert_success();
    assert!(
        said.stdout.contains("via        sender_relayhost"),
        "{}",
        said.stdout
    );
}
