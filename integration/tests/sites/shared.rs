//! See sites.rs. Many domains whose MX is one host name are one site: they
//! share its connections, so a server that limits its clients sees few
//! connections and refuses few, and every record names the site.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use postman_integration::{
    numbered_domains, postman, ClientLimits, DnsServer, HostileServer, Postfix, PostfixOptions,
    TestNet, TestQueue, Zones,
};

use super::common::{check, config};
use super::queue_each;

/// The second measurement: 40 domains × 10 messages on one MX host
/// whose Postfix serves 10 connections from one client at once and greets
/// the 11th with its own `421 4.7.0 … Error: too many connections`. Before
/// sites, one `run --once` opened up to `max_connections_per_domain` per
/// domain, met about 200 refusals and delivered 30 of the 400. Now one run
/// delivers all 400, and it accepts at most 20 connections (half the number
/// of domains): the domains share them. Postfix refuses the one connection
/// that probed for an 11th, and no more: the limit grows only once the
/// newest connection is greeted (under load the greeting is slow, and
/// growing meanwhile once sent six more at once).
#[test]
fn forty_domains_on_one_postfix_serving_ten_connections_go_out_in_one_run() {
    const PER_DOMAIN: usize = 10;
    let net = TestNet::new();
    let domains = numbered_domains("d", 40, "shared.test");
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let postfix = Postfix::start(
        net.ip(1),
        net.port(),
        &names,
        &PostfixOptions {
            limits: Some(ClientLimits::connections(10)),
            quiet: true,
            ..PostfixOptions::default()
        },
    );
    let dns = DnsServer::start(
        Zones::new()
            .mx_shared(&domains, "mx.shared.test")
            .a("mx.shared.test", net.ipv4(1)),
    );
    let queue = TestQueue::new();
    let total = queue_each(&queue, &domains, PER_DOMAIN);
    let mut cfg = config(&queue, &net, &dns);
    // Postman may open as many as it likes: the server is the limit.
    cfg.max_connections = 100;
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
    out.assert_success();

    let sent = out
        .deliveries()
        .iter()
        .filter(|d| d.status == "sent")
        .count();
    check(
        sent == total && queue.state().is_empty(),
        &format!("one run should deliver all {total} messages, sent {sent}"),
        &queue,
        &out,
    );
    let stored = postfix.wait_for_message_count(total, Duration::from_secs(30));
    assert_eq!(stored, total, "Postfix delivered every message once");
    let refused = postfix.refusals().connections();
    let accepted = postfix.connection_count() - refused;
    eprintln!("Postfix: {accepted} connections accepted, {refused} refused, for {total} messages");
    check(
        refused <= 2,
        &format!("Postfix refused {refused} connections; at most 2 expected"),
        &queue,
        &out,
    );
    check(
        accepted <= domains.len() / 2,
        &format!(
            "{accepted} connections for {} domains on one host; at most {} expected",
            domains.len(),
            domains.len() / 2
        ),
        &queue,
        &out,
    );
}

/// A thousand domains on one MX host, one message each: the site's
/// connections carry the messages of every domain, so the server sees at
/// most 50 connections (not one per domain), never more than the default
/// `delivery.max_connections_per_site` (20) at once.
#[test]
fn a_thousand_domains_on_one_host_share_a_few_connections() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let domains = numbered_domains("d", 1000, "many.test");
    let dns = DnsServer::start(
        Zones::new()
            .mx_shared(&domains, "mx.many.test")
            .a("mx.many.test", net.ipv4(1)),
    );
    let queue = TestQueue::new();
    let total = queue_each(&queue, &domains, 1);
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_connections = 100;
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
    out.assert_success();

    check(
        queue.state().is_empty() && server.body_count() == total,
        &format!(
            "all {total} delivered, the server received {}",
            server.body_count()
        ),
        &queue,
        &out,
    );
    let opened = server.connection_count();
    let peak = server.peak_connections();
    eprintln!("{opened} connections, {peak} at once, for {total} domains on one host");
    check(
        opened <= 50,
        &format!("{opened} connections for {total} domains on one host; at most 50 expected"),
        &queue,
        &out,
    );
    check(
        peak <= 20,
        &format!("{peak} connections at once; max_connections_per_site is 20"),
        &queue,
        &out,
    );
}

/// Every delivery record carries the `site` its domain was delivered
/// through. A site is the list of MX host names in preference order
/// (sorted within a preference), whatever their addresses: two domains on
/// `mx.a.test` share one; `mx.b.test` at the same address is another; mx1
/// and mx2 at one preference are one site however DNS orders them, and
/// not the site of mx1 then mx2 (where every connection goes to mx1
/// first); mx2 then mx1 is another again; a domain without MX is its own
/// site: 6 sites for 8 domains.
#[test]
fn delivery_records_name_the_site() {
    let net = TestNet::new();
    let _server = HostileServer::polite(net.addr(1));
    let ip = net.ipv4(1);
    let dns = DnsServer::start(
        Zones::new()
            .mx("a1.test", 10, "mx.a.test")
            .mx("a2.test", 10, "mx.a.test")
            .mx("b1.test", 10, "mx.b.test")
            .mx("p1.test", 10, "mx1.p.test")
            .mx("p1.test", 10, "mx2.p.test")
            .mx("p2.test", 10, "mx2.p.test")
            .mx("p2.test", 10, "mx1.p.test")
            .mx("q1.test", 10, "mx1.p.test")
            .mx("q1.test", 20, "mx2.p.test")
            .mx("q2.test", 10, "mx2.p.test")
            .mx("q2.test", 20, "mx1.p.test")
            .a("mx.a.test", ip)
            .a("mx.b.test", ip)
            .a("mx1.p.test", ip)
            .a("mx2.p.test", ip)
            .a("bare.test", ip),
    );
    let domains: Vec<String> = ["a1", "a2", "b1", "p1", "p2", "q1", "q2", "bare"]
        .iter()
        .map(|d| format!("{d}.test"))
        .collect();
    let queue = TestQueue::new();
    queue_each(&queue, &domains, 2);
    let out = postman!().run_once(&config(&queue, &net, &dns).write());
    out.assert_success();

    let mut sites: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in out.deliveries() {
        assert_eq!(d.status, "sent", "{d:#?}\n{}", out.stderr);
        assert!(!d.site.is_empty(), "a record without a site: {d:#?}");
        sites.entry(d.domain.clone()).or_default().insert(d.site);
    }
    assert_eq!(
        sites.len(),
        domains.len(),
        "records for every domain: {sites:#?}"
    );
    let site = |domain: &str| -> String {
        let of = &sites[domain];
        assert_eq!(
            of.len(),
            1,
            "{domain} is delivered through one site: {of:?}"
        );
        of.iter().next().cloned().unwrap_or_default()
    };
    assert_eq!(
        site("a1.test"),
        site("a2.test"),
        "one MX host name, one site"
    );
    assert_ne!(site("a1.test"), site("b1.test"), "same address, other name");
    assert_eq!(
        site("p1.test"),
        site("p2.test"),
        "one preference, either order"
    );
    assert_ne!(
        site("p1.test"),
        site("q1.test"),
        "{{mx1, mx2}} at one preference is not mx1 then mx2"
    );
    assert_ne!(site("q1.test"), site("q2.test"), "preference order matters");
    assert!(site("a1.test").contains("mx.a.test"), "{}", site("a1.test"));
    assert!(
        site("bare.test").contains("bare.test"),
        "{}",
        site("bare.test")
    );
    let distinct: BTreeSet<String> = domains.iter().map(|d| site(d)).collect();
    assert_eq!(distinct.len(), 6, "six sites for eight domains: {sites:#?}");
}
