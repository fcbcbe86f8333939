//! End to end: the command line. `check-config` prints the effective
//! settings or names the bad key and file; `run --once` on an empty queue
//! exits 0 at once.

mod common;

use std::time::Duration;

use postman_integration::postman::ConfigFile;
use postman_integration::{postman, Config, DnsServer, TestNet, TestQueue, Zones};

fn base_config(queue: &TestQueue) -> Config {
    Config::new(queue.root(), 2525, "127.0.0.1:53".parse().unwrap())
}

#[test]
fn check_config_prints_the_effective_settings_as_toml() {
    let queue = TestQueue::new();
    let mut cfg = base_config(&queue);
    cfg.server_port = 2626;
    cfg.timeouts.greeting = 7;
    cfg.max_connections_per_domain = 3;
    let out = postman!().check_config(&cfg.write());
    out.assert_success();
    let v: toml::Value = toml::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check-config should print TOML: {e}\n--- stdout ---\n{}",
            out.stdout
        )
    });
    assert_eq!(
        v["application"]["server_port"].as_integer(),
        Some(2626),
        "{}",
        out.stdout
    );
    assert_eq!(
        v["application"]["maildir"]["path"].as_str(),
        Some(queue.root().to_str().unwrap()),
        "{}",
        out.stdout
    );
    assert_eq!(
        v["smtp"]["timeouts"]["greeting"].as_integer(),
        Some(7),
        "{}",
        out.stdout
    );
    assert_eq!(
        v["delivery"]["max_connections_per_domain"].as_integer(),
        Some(3),
        "{}",
        out.stdout
    );
    assert_eq!(v["log"]["format"].as_str(), Some("json"), "{}", out.stdout);
}

#[test]
fn check_config_rejects_an_unknown_key_naming_it_and_the_file() {
    let queue = TestQueue::new();
    let mut cfg = base_config(&queue);
    cfg.extra = "\n[smtp.tiemouts]\ngreeting = 5\n".to_string();
    let file = cfg.write();
    let out = postman!().check_config(&file);
    assert!(
        !out.status.success(),
        "an unknown key must fail:\n{}",
        out.stdout
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("tiemouts"),
        "the error should name the key: {said}"
    );
    assert!(
        said.contains(file.path().to_str().unwrap()),
        "the error should name the file {}: {said}",
        file.path().display()
    );
}

/// `check-config` prints the site rules as given, and how each site is
/// treated: the defaults, then every rule with its unset keys filled in,
/// longest suffix first, as comments that keep the output a settings file.
#[test]
fn check_config_shows_the_site_defaults_and_every_rule() {
    let queue = TestQueue::new();
    let mut cfg = base_config(&queue);
    cfg.extra = "\n[delivery.site.\"Google.com\"]\nmax_connections = 3\n\
                 max_message_rate = \"300/m\"\n\
                 [delivery.site.\"l.google.com\"]\nthrottle_patterns = [\"slow down\"]\n"
        .to_string();
    let out = postman!().check_config(&cfg.write());
    out.assert_success();
    let v: toml::Value = toml::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check-config should print TOML: {e}\n{}", out.stdout));
    assert_eq!(
        v["delivery"]["site"]["Google.com"]["max_connections"].as_integer(),
        Some(3),
        "{}",
        out.stdout
    );
    assert_eq!(
        v["delivery"]["max_connections_per_site"].as_integer(),
        Some(20),
        "{}",
        out.stdout
    );
    let shapes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| line.starts_with("# (defaults)") || line.starts_with("# \""))
        .collect();
    assert_eq!(shapes.len(), 3, "defaults and two rules: {}", out.stdout);
    assert!(
        shapes[0].starts_with("# (defaults) max_connections=20 initial_connections=5 "),
        "{}",
        out.stdout
    );
    assert!(
        shapes[1].starts_with("# \"l.google.com\" max_connections=20 ")
            && shapes[1].ends_with("throttle_patterns=[\"slow down\"]"),
        "the longest suffix first, its unset keys from the defaults: {}",
        out.stdout
    );
    assert!(
        shapes[2].starts_with("# \"google.com\" max_connections=3 initial_connections=3 ")
            && shapes[2].contains(" max_message_rate=300/m "),
        "the suffix lower-cased, initial capped at max: {}",
        out.stdout
    );
}

/// A bad value in a site rule is an error naming the full key and the file.
#[test]
fn check_config_names_a_bad_site_key_and_the_file() {
    let queue = TestQueue::new();
    let mut cfg = base_config(&queue);
    cfg.extra = "\n[delivery.site.\"yahoodns.net\"]\nmax_message_rate = \"20/d\"\n".to_string();
    let file = cfg.write();
    let out = postman!().check_config(&file);
    assert!(
        !out.status.success(),
        "a bad rate must fail:\n{}",
        out.stdout
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("`delivery.site.\"yahoodns.net\".max_message_rate` (\"20/d\")"),
        "the error should name the key: {said}"
    );
    assert!(
        said.contains(file.path().to_str().unwrap()),
        "the error should name the file {}: {said}",
        file.path().display()
    );
}

#[test]
fn check_config_rejects_a_badly_typed_value_naming_the_key() {
    let text = base_config(&TestQueue::new())
        .to_toml()
        .replace("server_port = 2525", "server_port = \"twenty-five\"");
    let file = ConfigFile::with_text(&text);
    let out = postman!().check_config(&file);
    assert!(
        !out.status.success(),
        "a string port must fail:\n{}",
        out.stdout
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("server_port"),
        "the error should name the key: {said}"
    );
}

#[test]
fn run_once_with_an_unknown_key_exits_non_zero() {
    let queue = TestQueue::new();
    let mut cfg = base_config(&queue);
    cfg.extra = "\n[bogus]\nkey = 1\n".to_string();
    let out = postman!().run_once(&cfg.write());
    assert!(
        !out.status.success(),
        "postman cannot work with a bad config: {}",
        out.stderr
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("bogus"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_once_on_an_empty_queue_exits_zero_promptly() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    let cfg = Config::new(queue.root(), net.port(), dns.addr());
    let out = postman!().run_once_within(&cfg.write(), Duration::from_secs(20));
    out.assert_success();
    assert!(
        out.elapsed < Duration::from_secs(10),
        "an empty queue took {:?}",
        out.elapsed
    );
    assert!(out.deliveries().is_empty(), "{:?}", out.deliveries());
}
