//! End to end, issue 17: postman delivers to sites, not domains. The
//! domains whose MX host names are the same share one site, and everything
//! about connections (their number, reuse, backoff, rate, throttling) is
//! the site's. Shown against real peers on loopback: many domains served by
//! one MX host name from the in-process DNS server, Postfix limiting its
//! clients through anvil (its own 421 and 450 replies), scripted servers
//! playing the providers' throttle replies, and hosts that take no mail.

mod common;

/// Many domains on one MX host: few connections, few refusals.
#[path = "sites/shared.rs"]
mod shared;

/// A down site and a black-holed site: probed once, backed off, no harm
/// to the others.
#[path = "sites/down.rs"]
mod down;

/// `max_message_rate`: the pace a site's server sees.
#[path = "sites/rate.rs"]
mod rate;

/// Throttle replies of the providers: not failures of the message.
#[path = "sites/throttle.rs"]
mod throttle;

/// `postman suspend` / `resume` of a domain or a site.
#[path = "sites/control.rs"]
mod control;

/// `postman flush` of a site's backoff and `postman queue summary` by
/// site, beside a running daemon.
#[path = "sites/operate.rs"]
mod operate;

use postman_integration::postman::Daemon;
use postman_integration::{postman, Config, TestQueue};
use serde_json::Value;

use common::add_numbered;

/// Queues `per_domain` messages for every one of `domains` (one recipient
/// each, Message-IDs tagged with the domain); returns how many in all.
pub fn queue_each(queue: &TestQueue, domains: &[String], per_domain: usize) -> usize {
    for domain in domains {
        add_numbered(queue, domain, per_domain, domain);
    }
    domains.len() * per_domain
}

/// Starts a daemon with `config` once `postman check-config` took it, so
/// that a setting postman does not know fails the test at once, saying
/// which, rather than after a wait for deliveries.
pub fn spawn_checked(config: &Config) -> Daemon {
    let file = config.write();
    let checked = postman!().check_config(&file);
    assert!(
        checked.status.success(),
        "postman check-config refused the test's settings: {}{}",
        checked.stdout,
        checked.stderr
    );
    postman!().spawn_daemon(&file)
}

/// The log records whose `msg` is exactly `msg`.
pub fn named<'a>(records: &'a [Value], msg: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["msg"] == msg).collect()
}

/// The records' `key` fields as text, one per record.
pub fn field_of(records: &[&Value], key: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| match &r[key] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        })
        .collect()
}
