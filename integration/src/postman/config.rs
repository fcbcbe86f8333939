//! Postman configurations for a test: the settings, their TOML text, and
//! the config file written into a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(doc)]
use super::Daemon;

/// `smtp.timeouts.*`, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTimeouts {
    pub connect: u64,
    pub greeting: u64,
    pub ehlo: u64,
    pub mail: u64,
    pub rcpt: u64,
    pub data: u64,
    pub data_block: u64,
    pub data_done: u64,
    pub rset: u64,
    pub quit: u64,
}

impl SmtpTimeouts {
    /// Every timeout set to `secs`.
    pub fn all(secs: u64) -> SmtpTimeouts {
        SmtpTimeouts {
            connect: secs,
            greeting: secs,
            ehlo: secs,
            mail: secs,
            rcpt: secs,
            data: secs,
            data_block: secs,
            data_done: secs,
            rset: secs,
            quit: secs,
        }
    }
}

/// A postman configuration, written as TOML by [`Config::write`].
///
/// [`Config::new`] gives settings for fast tests: short timeouts, a single
/// DNS attempt, a backoff long enough that nothing deferred is retried
/// within one test.
#[derive(Debug, Clone)]
pub struct Config {
    /// `application.maildir.path`
    pub maildir: PathBuf,
    /// `application.server_port`
    pub server_port: u16,
    /// `application.hostname` (the EHLO name)
    pub hostname: String,
    /// `application.threads`
    pub threads: u32,
    /// `dns.nameservers`
    pub nameservers: Vec<SocketAddr>,
    /// `dns.timeout`, seconds
    pub dns_timeout: u64,
    /// `dns.attempts`
    pub dns_attempts: u32,
    /// `dns.ip_preference`: `any`, `ipv4` or `ipv6`.
    pub ip_preference: String,
    /// `dns.dnssec`: `trust-ad` or `off`; `None` leaves postman's default.
    pub dnssec: Option<String>,
    /// `dns.dnssec_probe`; `None` leaves postman's default (`.`).
    pub dnssec_probe: Option<String>,
    /// `smtp.timeouts.*`
    pub timeouts: SmtpTimeouts,
    /// `delivery.max_connections`
    pub max_connections: u32,
    /// `delivery.max_connections_per_domain`
    pub max_connections_per_domain: u32,
    /// `delivery.initial_connections_per_domain`
    pub initial_connections_per_domain: u32,
    /// `delivery.max_messages_per_connection`
    pub max_messages_per_connection: u32,
    /// `delivery.max_connections_per_site`; `None` leaves postman's default.
    pub max_connections_per_site: Option<u32>,
    /// `delivery.connection_cache_time`, seconds
    pub connection_cache_time: u64,
    /// `delivery.max_mx_addresses`
    pub max_mx_addresses: u32,
    /// `delivery.retry.min_backoff`, seconds
    pub min_backoff: u64,
    /// `delivery.retry.max_backoff`, seconds; `None` leaves postman's default.
    pub max_backoff: Option<u64>,
    /// `delivery.max_queue_lifetime`, seconds; `None` leaves postman's default.
    pub max_queue_lifetime: Option<u64>,
    /// `delivery.delay_warning`, seconds; `None` leaves postman's default.
    pub delay_warning: Option<u64>,
    /// `delivery.bounce_size_limit`, bytes; `None` leaves postman's default.
    pub bounce_size_limit: Option<u64>,
    /// `application.local_domains`; `None` leaves postman's default (the
    /// hostname, `postman.test`).
    pub local_domains: Option<Vec<String>>,
    /// `log.metrics_interval`, seconds
    pub metrics_interval: u64,
    /// `queue.rescan_interval`, seconds
    pub rescan_interval: u64,
    /// Raw TOML appended after the generated text (to test config errors).
    pub extra: String,
}

impl Config {
    /// Settings for a test: queue at `maildir`, SMTP servers on `port`,
    /// the test DNS server at `dns`.
    pub fn new(maildir: &Path, port: u16, dns: SocketAddr) -> Config {
        Config {
            maildir: maildir.to_path_buf(),
            server_port: port,
            hostname: "postman.test".to_string(),
            threads: 2,
            nameservers: vec![dns],
            dns_timeout: 1,
            dns_attempts: 1,
            ip_preference: "any".to_string(),
            dnssec: None,
            dnssec_probe: None,
            timeouts: SmtpTimeouts::all(3),
            max_connections: 20,
            max_connections_per_domain: 4,
            initial_connections_per_domain: 5,
            max_messages_per_connection: 100,
            max_connections_per_site: None,
            connection_cache_time: 2,
            max_mx_addresses: 5,
            min_backoff: 300,
            max_backoff: None,
            max_queue_lifetime: None,
            delay_warning: None,
            bounce_size_limit: None,
            local_domains: None,
            metrics_interval: 60,
            rescan_interval: 1,
            extra: String::new(),
        }
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        let t = &self.timeouts;
        let nameservers = self
            .nameservers
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        // Optional settings: a line each when set, nothing otherwise.
        let optional = |key: &str, value: Option<String>| {
            value.map_or_else(String::new, |v| format!("{key} = {v}\n"))
        };
        let local_domains = optional(
            "local_domains",
            self.local_domains.as_ref().map(|domains| {
                let list: Vec<String> = domains.iter().map(|d| toml_string(d)).collect();
                format!("[{}]", list.join(", "))
            }),
        );
        let lifetime = optional(
            "max_queue_lifetime",
            self.max_queue_lifetime.map(|s| s.to_string()),
        );
        let delay_warning = optional("delay_warning", self.delay_warning.map(|s| s.to_string()));
        let bounce_size_limit = optional(
            "bounce_size_limit",
            self.bounce_size_limit.map(|n| n.to_string()),
        );
        let dnssec = optional("dnssec", self.dnssec.as_deref().map(toml_string))
            + &optional(
                "dnssec_probe",
                self.dnssec_probe.as_deref().map(toml_string),
            );
        let max_backoff = optional("max_backoff", self.max_backoff.map(|s| s.to_string()));
        let per_site = optional(
            "max_connections_per_site",
            self.max_connections_per_site.map(|n| n.to_string()),
        );
        format!(
            r#"# written by postman-integration for one test
[application]
server_port = {port}
hostname = {hostname}
threads = {threads}
{local_domains}
[application.maildir]
path = {maildir}

[dns]
nameservers = [{nameservers}]
timeout = {dns_timeout}
attempts = {dns_attempts}
ip_preference = {ip_preference}
{dnssec}
[smtp.timeouts]
connect = {connect}
greeting = {greeting}
ehlo = {ehlo}
mail = {mail}
rcpt = {rcpt}
data = {data}
data_block = {data_block}
data_done = {data_done}
rset = {rset}
quit = {quit}

[delivery]
max_connections = {max_connections}
max_connections_per_domain = {max_per_domain}
initial_connections_per_domain = {initial_per_domain}
max_messages_per_connection = {max_per_conn}
connection_cache_time = {connection_cache_time}
max_mx_addresses = {max_mx_addresses}
{lifetime}{delay_warning}{bounce_size_limit}{per_site}
[delivery.retry]
min_backoff = {min_backoff}
{max_backoff}
[log]
format = "json"
metrics_interval = {metrics_interval}

[queue]
rescan_interval = {rescan_interval}
{extra}"#,
            port = self.server_port,
            hostname = toml_string(&self.hostname),
            threads = self.threads,
            maildir = toml_string(&self.maildir.to_string_lossy()),
            dns_timeout = self.dns_timeout,
            dns_attempts = self.dns_attempts,
            ip_preference = toml_string(&self.ip_preference),
            connect = t.connect,
            greeting = t.greeting,
            ehlo = t.ehlo,
            mail = t.mail,
            rcpt = t.rcpt,
            data = t.data,
            data_block = t.data_block,
            data_done = t.data_done,
            rset = t.rset,
            quit = t.quit,
            max_connections = self.max_connections,
            max_per_domain = self.max_connections_per_domain,
            initial_per_domain = self.initial_connections_per_domain,
            max_per_conn = self.max_messages_per_connection,
            connection_cache_time = self.connection_cache_time,
            max_mx_addresses = self.max_mx_addresses,
            min_backoff = self.min_backoff,
            metrics_interval = self.metrics_interval,
            rescan_interval = self.rescan_interval,
            extra = self.extra,
        )
    }

    /// Writes the TOML into a new temporary directory.
    pub fn write(&self) -> ConfigFile {
        ConfigFile::with_text(&self.to_toml())
    }
}

/// A TOML basic string (RFC-less, but TOML 1.0 §String escapes).
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config file in its own temporary directory, removed when the last
/// clone is dropped (a [`Daemon`] keeps one, so the file outlives a
/// `spawn_daemon(&config.write())` temporary).
#[derive(Clone)]
pub struct ConfigFile {
    _dir: Arc<tempfile::TempDir>,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` as `postman.toml` in a new temporary directory.
    pub fn with_text(text: &str) -> ConfigFile {
        let dir = tempfile::Builder::new()
            .prefix("postman-config-")
            .tempdir()
            .expect("create a temporary config dir");
        let path = dir.path().join("postman.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        ConfigFile {
            _dir: Arc::new(dir),
            path,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_toml_parses_and_has_every_contract_key() {
        let c = Config::new(
            Path::new("/tmp/q \"x\""),
            2525,
            "127.0.0.1:5353".parse().unwrap(),
        );
        let v: toml::Value = toml::from_str(&c.to_toml()).expect("generated TOML parses");
        assert_eq!(
            v["application"]["maildir"]["path"].as_str(),
            Some("/tmp/q \"x\"")
        );
        assert_eq!(v["application"]["server_port"].as_integer(), Some(2525));
        assert_eq!(v["dns"]["nameservers"][0].as_str(), Some("127.0.0.1:5353"));
        for key in [
            "connect",
            "greeting",
            "ehlo",
            "mail",
            "rcpt",
            "data",
            "data_block",
            "data_done",
            "rset",
            "quit",
        ] {
            assert_eq!(
                v["smtp"]["timeouts"][key].as_integer(),
                Some(3),
                "smtp.timeouts.{key}"
            );
        }
        assert_eq!(v["log"]["format"].as_str(), Some("json"));
        assert!(v["delivery"]["retry"]["min_backoff"].is_integer());
        assert!(v["queue"]["rescan_interval"].is_integer());
    }

    #[test]
    fn optional_settings_are_written_only_when_set() {
        let mut c = Config::new(Path::new("/q"), 2525, "127.0.0.1:5353".parse().unwrap());
        let v: toml::Value = toml::from_str(&c.to_toml()).expect("generated TOML parses");
        assert!(v["delivery"].get("max_queue_lifetime").is_none(), "{v}");
        assert!(v["application"].get("local_domains").is_none(), "{v}");
        assert!(
            v["delivery"].get("max_connections_per_site").is_none(),
            "{v}"
        );
        c.max_backoff = Some(7);
        c.max_queue_lifetime = Some(60);
        c.delay_warning = Some(30);
        c.local_domains = Some(vec!["local.test".into(), "other.test".into()]);
        c.max_connections_per_site = Some(3);
        let v: toml::Value = toml::from_str(&c.to_toml()).expect("generated TOML parses");
        assert_eq!(v["delivery"]["retry"]["max_backoff"].as_integer(), Some(7));
        assert_eq!(v["delivery"]["max_queue_lifetime"].as_integer(), Some(60));
        assert_eq!(v["delivery"]["delay_warning"].as_integer(), Some(30));
        assert_eq!(
            v["delivery"]["max_connections_per_site"].as_integer(),
            Some(3)
        );
        let domains: Vec<&str> = v["application"]["local_domains"]
            .as_array()
            .expect("local_domains is an array")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(domains, ["local.test", "other.test"]);
    }
}
