//! See hostile_input.rs. Servers that talk out of turn (issue 22, defect
//! 1), loops back to ourselves and the slow `452` (defect 10), and the
//! 1,000-record MX set (defect 13, its first item).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use postman_integration::hostile::Script;
use postman_integration::postman::ConfigFile;
use postman_integration::queue::{queue_file, unix_now};
use postman_integration::{
    postman, DnsServer, HostileServer, RunOutput, TestNet, TestQueue, Zones,
};

use super::common::{check, config, message};

const DOMAIN: &str = super::common::HOSTILE_DOMAIN;

/// How long a `run --once` against a misbehaving server may take: a few
/// seconds of SMTP with 2 s timeouts, never the reconnect loop.
const WITHIN: Duration = Duration::from_secs(20);

type Case = super::common::HostileCase;

impl Case {
    fn run(&self) -> RunOutput {
        let out = postman!().run_once_within(&self.config.write(), WITHIN);
        out.assert_success();
        out
    }
}

// ---- defect 1: the reconnect storm -------------------------------------

/// A server whose EHLO reply comes in one write with more than the reply
/// (`bytes`), then closes. postman used to take the session for "not an
/// attempt" and send the message back untried at once: thousands of
/// connections a second, no record, no backoff, and `--once` never ended.
/// Now such a session is a failed connection: a deferral record per
/// recipient, the site backs off, the message stays queued. A 421 that
/// says the server is too busy is a throttle instead (issue 17): the
/// message waits untried and the site pauses, which stops a storm as well.
fn assert_no_storm(what: &str, after_ehlo: &[u8], quoted: &str, code: Option<u16>) {
    let throttle = quoted.starts_with("421");
    let case = Case::new(vec![Script::new()
        .greet("220 hostile.test ESMTP")
        .expect_raw("EHLO", after_ehlo)
        .close()]);
    case.queue.add(
        DOMAIN,
        "m1",
        "a@src.test",
        &["u1@hostile.test", "u2@hostile.test"],
        &message("storm", "x\n"),
    );
    let out = case.run();
    let connections = case.server.connection_count();
    check(
        (1..=3).contains(&connections),
        &format!("{what}: a handful of connections, not a storm: {connections}"),
        &case.queue,
        &out,
    );
    assert!(
        out.elapsed < Duration::from_secs(10),
        "{what}: run --once took {:?}",
        out.elapsed
    );
    assert_eq!(
        case.server.count_commands("MAIL"),
        0,
        "{what}: no transaction on a session that talked out of turn"
    );
    for to in ["u1@hostile.test", "u2@hostile.test"] {
        let records: Vec<_> = out
            .deliveries()
            .into_iter()
            .filter(|d| d.to == to)
            .collect();
        assert_eq!(
            records.len(),
            1,
            "{what}: one record for {to}: {records:#?}\n{}",
            out.stderr
        );
        assert_eq!(records[0].status, "deferred", "{what}: {records:#?}");
        assert!(
            records[0].reply.contains(quoted),
            "{what}: the record quotes the server ({quoted:?}): {records:#?}"
        );
        assert_eq!(
            records[0].code, code,
            "{what}: the record's code: {records:#?}"
        );
    }
    check(
        case.queue.state().is_queued(DOMAIN, "m1"),
        &format!("{what}: the message stays queued"),
        &case.queue,
        &out,
    );
    if throttle {
        check(
            out.count_records("site throttled") == 1,
            &format!("{what}: the site is throttled"),
            &case.queue,
            &out,
        );
        return;
    }
    let sites = case.queue.root().join(".OTHER_SERVERS/.sites");
    let backoffs = std::fs::read_dir(&sites).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .count()
    });
    check(
        backoffs == 1,
        &format!("{what}: the site backs off"),
        &case.queue,
        &out,
    );
}

#[test]
fn a_421_with_the_ehlo_reply_is_a_throttle_not_a_storm() {
    assert_no_storm(
        "421 after EHLO",
        b"250-hi\r\n250 PIPELINING\r\n421 4.7.0 too busy, closing\r\n",
        "421 4.7.0 too busy, closing",
        // A throttle: the message was not tried, the record has no code.
        None,
    );
}

#[test]
fn a_second_final_line_after_ehlo_is_a_failed_connection_not_a_storm() {
    assert_no_storm(
        "second final line",
        b"250-hi\r\n250 PIPELINING\r\n250 and another\r\n",
        "250 and another",
        None,
    );
}

#[test]
fn every_reply_at_once_is_a_failed_connection_not_a_storm() {
    assert_no_storm(
        "every reply at once",
        b"250-hi\r\n250 PIPELINING\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n\
          250 2.0.0 queued\r\n221 2.0.0 bye\r\n",
        "250 2.1.0 ok",
        None,
    );
}

// ---- defect 13, first item: MX fan-out ---------------------------------

/// A domain whose MX set has 1,000 records: one attempt tries at most
/// `delivery.max_mx_addresses` addresses, so it must not look up more
/// hosts than that. postman used to ask for the A and AAAA records of all
/// 1,000 hosts (2,000 queries, 50 MB) for one message.
#[test]
fn a_thousand_mx_records_cause_at_most_max_mx_addresses_lookups() {
    const HOSTS: usize = 1000;
    const MAX_MX_ADDRESSES: usize = 5;
    let net = TestNet::new();
    // Nothing listens on .2: every address refuses at once.
    let mut zones = Zones::new();
    for i in 0..HOSTS {
        let host = format!("mx{i}.big.test");
        zones = zones.mx("big.test", 10, &host).a(&host, net.ipv4(2));
    }
    let dns = DnsServer::start(zones);
    let queue = TestQueue::new();
    let mut cfg = config(&queue, &net, &dns);
    cfg.max_mx_addresses = MAX_MX_ADDRESSES as u32;
    queue.add(
        "big.test",
        "m1",
        "a@src.test",
        &["u@big.test"],
        &message("fan-out", "x\n"),
    );
    let out = postman!().run_once_within(&cfg.write(), WITHIN);
    out.assert_success();
    let asked = dns.queries();
    let lookups: Vec<_> = asked
        .iter()
        .filter(|q| q.kind == "A" || q.kind == "AAAA")
        .collect();
    let hosts: std::collections::BTreeSet<&str> = lookups.iter().map(|q| q.name.as_str()).collect();
    check(
        hosts.len() <= MAX_MX_ADDRESSES && !hosts.is_empty(),
        &format!(
            "address lookups for at most {MAX_MX_ADDRESSES} hosts, got {} ({} queries)",
            hosts.len(),
            lookups.len()
        ),
        &queue,
        &out,
    );
    // A and AAAA per host, each perhaps again over TCP.
    assert!(
        lookups.len() <= 4 * MAX_MX_ADDRESSES,
        "{} address queries: {lookups:?}",
        lookups.len()
    );
    let records: Vec<_> = out.deliveries();
    assert!(
        records.len() == 1 && records[0].status == "deferred",
        "one deferral: {records:#?}"
    );
    check(
        queue.state().is_queued("big.test", "m1"),
        "the message stays queued",
        &queue,
        &out,
    );
}

// ---- defect 10: the slow 452 -------------------------------------------

/// A server that takes at most 3 recipients per transaction and answers
/// `452 4.5.3` to the others (RFC 5321 §4.5.3.1.10): the accepted ones are
/// delivered in that transaction and the rest go in new transactions at
/// once, in the same run, each recipient exactly once. postman used to
/// defer the rest for a whole backoff.
#[test]
fn recipients_over_the_servers_limit_go_in_a_new_transaction_at_once() {
    for pipelining in [true, false] {
        over_the_limit(pipelining);
    }
}

fn over_the_limit(pipelining: bool) {
    const LIMIT: usize = 3;
    const RECIPIENTS: usize = 10;
    let case = Case::new(vec![Script::polite()
        .pipelining(pipelining)
        .max_recipients(LIMIT, "452 4.5.3 Too many recipients")]);
    let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("u{i}@{DOMAIN}")).collect();
    let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
    case.queue
        .add(DOMAIN, "m1", "a@src.test", &to, &message("many", "x\n"));
    let out = case.run();
    check(
        case.queue.state().is_empty(),
        &format!("pipelining {pipelining}: every recipient delivered in one run"),
        &case.queue,
        &out,
    );
    let mut accepted: Vec<String> = case
        .server
        .accepted_rcpts()
        .iter()
        .map(|c| super::common::without_params(c).to_owned())
        .collect();
    accepted.sort();
    let mut want: Vec<String> = recipients
        .iter()
        .map(|r| format!("RCPT TO:<{r}>"))
        .collect();
    want.sort();
    assert_eq!(
        accepted, want,
        "pipelining {pipelining}: each recipient accepted exactly once"
    );
    assert_eq!(
        case.server.body_count(),
        RECIPIENTS.div_ceil(LIMIT),
        "pipelining {pipelining}: one body per transaction of at most {LIMIT}"
    );
    if !pipelining {
        // The first transaction finds the limit with one refused RCPT;
        // later ones on the connection send no more than it takes.
        assert_eq!(
            case.server.count_commands("RCPT"),
            RECIPIENTS + 1,
            "without pipelining, one refused RCPT in all"
        );
    }
    let deliveries = out.deliveries();
    for r in &recipients {
        let records: Vec<_> = deliveries.iter().filter(|d| &d.to == r).collect();
        assert!(
            records.len() == 1 && records[0].status == "sent",
            "pipelining {pipelining}: one sent record for {r}, nothing deferred: {records:#?}"
        );
    }
}

// ---- defect 10: loop protection ----------------------------------------

/// Postfix's words for a mail loop, which the deferral and the bounce use.
const LOOPS: &str = "mail for hostile.test loops back to myself";

/// One way the mail for `DOMAIN` could come back to this host: the DNS, the
/// scripted servers, and the `application.local_listeners` it needs.
struct Loop {
    zones: Zones,
    servers: Vec<HostileServer>,
    listeners: Vec<SocketAddr>,
}

/// Runs `setup` twice, each on a fresh queue: a message queued now must be
/// deferred as a loop (no MAIL reaches any server, the message stays), and
/// one past `delivery.max_queue_lifetime` must bounce with status 5.4.6 and
/// the loop's text. postman used to hand such messages over again and again.
fn assert_loop_refused(what: &str, setup: impl Fn(&TestNet) -> Loop) {
    for expired in [false, true] {
        let what = format!("{what} (expired: {expired})");
        let net = TestNet::new();
        let Loop {
            zones,
            servers,
            listeners,
        } = setup(&net);
        let dns = DnsServer::start(zones);
        let queue = TestQueue::new();
        let mut cfg = config(&queue, &net, &dns);
        cfg.timeouts = postman_integration::postman::SmtpTimeouts::all(2);
        let mut toml = cfg.to_toml();
        if !listeners.is_empty() {
            // The key is new: written only where a case needs it.
            let listed: Vec<String> = listeners.iter().map(|l| format!("\"{l}\"")).collect();
            let key = format!("[application]\nlocal_listeners = [{}]\n", listed.join(", "));
            toml = toml.replacen("[application]\n", &key, 1);
        }
        // Six days ago: past the default lifetime of five.
        let date = if expired {
            unix_now() - 6 * 86_400
        } else {
            unix_now()
        };
        let file = queue_file(
            "a@src.test",
            &["u@hostile.test"],
            date,
            &message("loop", "x\n"),
            "\n",
        );
        queue.add_raw(DOMAIN, "m1", &file);
        let out = postman!().run_once_within(&ConfigFile::with_text(&toml), WITHIN);
        out.assert_success();
        for server in &servers {
            assert_eq!(
                server.count_commands("MAIL"),
                0,
                "{what}: no transaction with {}: {:?}",
                server.addr(),
                server.commands()
            );
        }
        let records: Vec<_> = out.deliveries();
        assert_eq!(
            records.len(),
            1,
            "{what}: one record: {records:#?}\n{}",
            out.stderr
        );
        let record = &records[0];
        assert!(
            record.reply.contains(LOOPS),
            "{what}: the loop is the reason: {record:#?}"
        );
        if expired {
            assert_eq!(
                (record.status.as_str(), record.dsn.as_str()),
                ("bounced", "5.4.6"),
                "{what}"
            );
            let bounces = queue.bounces_to("a@src.test");
            check(
                bounces.len() == 1,
                &format!("{what}: one bounce"),
                &queue,
                &out,
            );
            let text = bounces[0].text();
            assert!(
                text.contains("Status: 5.4.6") && text.contains(LOOPS),
                "{what}: the bounce says 5.4.6 and why:\n{text}"
            );
            check(!queue.state().is_queued(DOMAIN, "m1"), &what, &queue, &out);
        } else {
            assert_eq!(
                (record.status.as_str(), record.dsn.as_str()),
                ("deferred", "4.4.6"),
                "{what}"
            );
            check(
                queue.state().is_queued(DOMAIN, "m1"),
                &format!("{what}: stays queued"),
                &queue,
                &out,
            );
        }
    }
}

#[test]
fn an_mx_at_the_unspecified_address_is_not_connected_to() {
    assert_loop_refused("MX at 0.0.0.0", |net| {
        // Connecting to 0.0.0.0 reaches this host: a server listening on
        // its loopback address at the test's port would get the message.
        let here = HostileServer::polite(SocketAddr::from((Ipv4Addr::LOCALHOST, net.port())));
        Loop {
            zones: Zones::new()
                .mx(DOMAIN, 10, "mx.hostile.test")
                .a("mx.hostile.test", Ipv4Addr::UNSPECIFIED),
            servers: vec![here],
            listeners: Vec::new(),
        }
    });
}

#[test]
fn an_mx_at_a_local_listener_is_not_connected_to() {
    assert_loop_refused("MX at a local listener", |net| {
        let listener = HostileServer::polite(net.addr(1));
        Loop {
            zones: Zones::new().mx_at(DOMAIN, net.ipv4(1)),
            listeners: vec![listener.addr()],
            servers: vec![listener],
        }
    });
}

#[test]
fn a_server_greeting_with_our_hostname_gets_no_message() {
    assert_loop_refused("greeting names postman", |net| Loop {
        zones: Zones::new().mx_at(DOMAIN, net.ipv4(1)),
        servers: vec![HostileServer::start(
            net.addr(1),
            vec![Script::new().greet("220 POSTMAN.test ESMTP").then_polite()],
        )],
        listeners: Vec::new(),
    });
}

#[test]
fn a_server_answering_ehlo_with_our_hostname_gets_no_message() {
    assert_loop_refused("EHLO reply names postman", |net| Loop {
        zones: Zones::new().mx_at(DOMAIN, net.ipv4(1)),
        servers: vec![HostileServer::start(
            net.addr(1),
            vec![Script::new()
                .greet("220 mx.hostile.test ESMTP")
                .expect("EHLO", "250-postman.test hello\n250 PIPELINING")
                .then_polite()],
        )],
        listeners: Vec::new(),
    });
}
