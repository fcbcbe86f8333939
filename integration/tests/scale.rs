//! Scale and fairness of the actors: one I/O worker carries hundreds of
//! connections at once in its pselect loop, and a domain with a large
//! backlog does not delay a domain with a single message.

mod common;

use std::time::Duration;

use common::{check, config, message};
use postman_integration::hostile::Script;
use postman_integration::{postman, DnsServer, HostileServer, TestNet, TestQueue, Zones};
use serde_json::Value;

/// The number of domains (one message each, one connection each) in the
/// connection-scale test.
const DOMAINS: usize = 300;

#[test]
fn one_worker_carries_hundreds_of_connections_at_once() {
    let net = TestNet::new();
    // Every connection waits 1.5 s for its greeting, so all of them are
    // open at the same time inside the single worker.
    let server = HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .stall(1500)
            .greet("220 slow.test ESMTP")
            .then_polite()],
    );
    let mut zones = Zones::new().a("mx.scale.test", net.ipv4(1));
    for i in 0..DOMAINS {
        zones = zones.mx(&format!("d{i}.scale.test"), 10, "mx.scale.test");
    }
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    for i in 0..DOMAINS {
        let domain = format!("d{i}.scale.test");
        queue.add(
            &domain,
            &format!("m{i}"),
            "sender@src.test",
            &[&format!("user@{domain}")],
            &message(&format!("m{i}"), "hello\n"),
        );
    }
    let mut cfg = config(&queue, &net, &dns);
    cfg.threads = 1;
    cfg.max_connections = 400;
    cfg.timeouts.greeting = 20;
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
    out.assert_success();

    let sent = out
        .deliveries()
        .iter()
        .filter(|d| d.status == "sent")
        .count();
    check(
        sent == DOMAINS,
        "every message should be sent",
        &queue,
        &out,
    );
    assert_eq!(
        server.connection_count(),
        DOMAINS,
        "one connection per domain"
    );

    // The worker's last metrics record says how many connections it held
    // at once.
    let peak = out
        .records()
        .iter()
        .filter(|r| r["msg"] == "metrics" && r["actor"] == "worker")
        .filter_map(|r| r["peak_connections"].as_u64())
        .max()
        .unwrap_or(0);
    eprintln!("peak connections in one worker: {peak} of {DOMAINS}");
    check(
        peak >= 250,
        &format!("one worker should hold at least 250 connections at once, held {peak}"),
        &queue,
        &out,
    );
}

#[test]
fn a_large_backlog_does_not_delay_a_domain_with_one_message() {
    let net = TestNet::new();
    let big_server = HostileServer::polite(net.addr(1));
    let small_server = HostileServer::polite(net.addr(2));
    let dns = DnsServer::start(
        Zones::new()
            .mx("big.test", 10, "mx.big.test")
            .a("mx.big.test", net.ipv4(1))
            .mx("small.test", 10, "mx.small.test")
            .a("mx.small.test", net.ipv4(2)),
    );
    let queue = TestQueue::new();
    // The scanner lists "big.test" first, so a first-come-first-served
    // dispatcher would send all of these before the small domain's message.
    let backlog = 600;
    for i in 0..backlog {
        queue.add(
            "big.test",
            &format!("big{i:04}"),
            "sender@src.test",
            &["user@big.test"],
            &message(&format!("big{i}"), "bulk\n"),
        );
    }
    queue.add(
        "small.test",
        "small",
        "sender@src.test",
        &["user@small.test"],
        &message("small", "urgent\n"),
    );
    let mut cfg = config(&queue, &net, &dns);
    cfg.threads = 1;
    cfg.max_connections_per_domain = 2;
    cfg.max_messages_per_connection = 1000;
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(60));
    out.assert_success();

    let sent: Vec<Value> = out
        .records()
        .into_iter()
        .filter(|r| r["msg"] == "delivery" && r["status"] == "sent")
        .collect();
    check(
        sent.len() == backlog + 1,
        "every message should be sent",
        &queue,
        &out,
    );
    let position = sent
        .iter()
        .position(|r| r["domain"] == "small.test")
        .unwrap_or(usize::MAX);
    eprintln!(
        "small.test delivered as number {} of {}",
        position + 1,
        sent.len()
    );
    assert!(
        position < backlog / 10,
        "small.test should be delivered among the first {} records, was number {}",
        backlog / 10,
        position + 1
    );
    assert_eq!(
        small_server.connection_count(),
        1,
        "one connection to small.test"
    );
    assert!(
        big_server.connection_count() <= 2,
        "at most max_connections_per_domain connections to big.test, saw {}",
        big_server.connection_count()
    );
}
