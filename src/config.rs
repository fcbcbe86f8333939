//! Settings, in two stages (ripgrep's `LowArgs` then `HiArgs`): figment fills
//! [`Settings`], a serde mirror of `config/postman.toml`, from layers
//! (defaults < file < `POSTMAN_*` environment < command-line flags); then
//! validation turns it into [`Config`], the typed values the actors use.
//! Every error names the key and the layer it came from. SMTP timeouts
//! default to RFC 5321 §4.5.3.2.
//!
//! Environment variables: `POSTMAN_` then the key path with `__` between
//! the parts, e.g. `POSTMAN_APPLICATION__SERVER_PORT=2525`,
//! `POSTMAN_DELIVERY__RETRY__MIN_BACKOFF=60`,
//! `POSTMAN_DNS__NAMESERVERS='["192.0.2.53:53"]'`. Variables without `__`
//! (such as a `POSTMAN_CONFIG` the binary may read) are not settings and are
//! ignored; a misspelt setting is an error naming it.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::queue::valid_domain;
use crate::smtp::{IpPreference, Timeouts, TlsVerify};
use crate::tls::{Discovery, Level, LevelWord};

mod keys;
mod routing;
mod sites;
mod tlsrpt;
mod validate;
use keys::{describe_figment, origin};
pub use routing::{HopSetting, HopTable, PoolAddressSettings, PoolSettings, RoutingSettings};
pub use sites::{
    suffix_matches, Rate, RateError, SiteRules, SiteSettings, SiteShape, MAX_RATE_COUNT,
    MAX_RATE_PERIOD,
};
pub use tlsrpt::{DkimKey, Tlsrpt, TlsrptSettings};
use validate::Validator;

/// Where [`ConfigFile::Default`] looks, relative to the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "config/postman.toml";

/// The largest settings file read, in bytes. postman's own settings fit
/// in a few KB; the bound keeps a stray huge file (or a 10 MB bad line)
/// from being read, parsed and quoted whole in an error, at start-up and
/// on every SIGHUP.
pub const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Upper bound of `delivery.max_connections`: every connection lives in a
/// `select(2)` fd_set, which holds descriptors below FD_SETSIZE (1024); the
/// rest is headroom for the queue files, inotify, logs and wake-ups.
pub const MAX_CONNECTIONS: usize = 900;

/// Upper bound of `delivery.max_mx_addresses`: beyond it, one attempt at a
/// domain whose addresses all time out would hold a connection for hours.
pub const MAX_MX_ADDRESSES: usize = 1000;

/// Upper bound of every timeout, so `now + timeout` can never overflow.
const MAX_TIMEOUT_SECS: u64 = 3600;
/// Upper bound of the intervals and the retry delay: one week.
const MAX_INTERVAL_SECS: u64 = 7 * 24 * 3600;
/// Upper bound of `delivery.bounce_size_limit`: a failure notice is built
/// in memory, and mail systems refuse far smaller messages than 10 MiB
/// anyway.
pub const MAX_BOUNCE_SIZE_LIMIT: u64 = 10 * 1024 * 1024;

/// Upper bound of `delivery.max_queue_lifetime`: one year, far beyond any
/// sensible value, so `arrival + lifetime` can never overflow.
const MAX_LIFETIME_SECS: u64 = 365 * 24 * 3600;
/// Longest wait of an idle connection for more of its domain: servers
/// commonly drop a silent client after 5 minutes (RFC 5321 §4.5.3.2.7).
const MAX_CONNECTION_CACHE_SECS: u64 = 300;
/// Connections a site starts with (Postfix's
/// `initial_destination_concurrency`).
const DEFAULT_INITIAL_CONNECTIONS: usize = 5;

const DEFAULTS_NAME: &str = "built-in defaults";
const FLAGS_NAME: &str = "command-line flags";
const ENV_PREFIX: &str = "POSTMAN_";

/// Which configuration file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// [`DEFAULT_CONFIG_FILE`] in the working directory, skipped silently
    /// when missing (never searched for in parent directories: which file
    /// applies must not depend on where in a tree postman was started).
    Default,
    /// A file the user named: it must exist.
    Named(PathBuf),
}

/// Settings given on the command line; `Some` overrides every other layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `application.maildir.path`.
    pub maildir: Option<PathBuf>,
    /// `application.threads`.
    pub threads: Option<usize>,
    /// `application.server_port`.
    pub server_port: Option<u16>,
    /// `application.hostname`.
    pub hostname: Option<String>,
    /// `application.debug`.
    pub debug: Option<bool>,
}

/// Both stages of a successful [`load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// What the layers said (the `check-config` command prints it as TOML).
    pub settings: Settings,
    /// The validated values.
    pub config: Config,
}

/// The whole configuration as written in `config/postman.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `[application]`
    pub application: ApplicationSettings,
    /// `[dns]`
    pub dns: DnsSettings,
    /// `[smtp]`
    pub smtp: SmtpSettings,
    /// `[delivery]`
    pub delivery: DeliverySettings,
    /// `[log]`
    pub log: LogSettings,
    /// `[queue]`
    pub queue: QueueSettings,
    /// `[tls]`
    pub tls: TlsSettings,
    /// `[tlsrpt]`: TLS reports (RFC 8460), off by default.
    #[serde(default)]
    pub tlsrpt: TlsrptSettings,
    /// `[routing]`: relays, transport entries, source addresses.
    #[serde(default)]
    pub routing: RoutingSettings,
}

/// `[application]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationSettings {
    /// Number of I/O worker threads (1–64).
    pub threads: usize,
    /// Name sent in EHLO/HELO; defaults to the machine's name.
    pub hostname: String,
    /// TCP port of the remote MX hosts.
    pub server_port: u16,
    /// Debug logging.
    pub debug: bool,
    /// Domains delivered locally (bounces to their senders go to the local
    /// Maildir); empty means `[hostname]`.
    pub local_domains: Vec<String>,
    /// `"ip:port"` where this host's own receiving server listens (Postfix's
    /// `inet_interfaces` and `proxy_interfaces`): never connected to, so
    /// an MX record pointing back here cannot make a mail loop. An
    /// unspecified ip (`"0.0.0.0:25"`) stands for every address of this
    /// host. Empty by default.
    pub local_listeners: Vec<String>,
    /// `[application.maildir]` (a table: stays last for TOML output).
    pub maildir: MaildirSettings,
}

/// `[application.maildir]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaildirSettings {
    /// Root of the queue.
    pub path: PathBuf,
}

/// `[dns]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// "ip:port" (or a bare ip, port 53); empty means the system's resolv.conf.
    pub nameservers: Vec<String>,
    /// Seconds per query.
    pub timeout: u64,
    /// Retries after a failed query, passed to the resolver's `attempts`
    /// (worst-case wait on a dead server: timeout × (attempts + 1)).
    pub attempts: usize,
    /// `any`, `ipv4` or `ipv6`: which addresses of an MX host are tried
    /// first; the other family is still tried when they fail.
    pub ip_preference: IpPreference,
    /// Where DNSSEC validation for DANE comes from: `trust-ad` or `off`.
    pub dnssec: DnssecMode,
    /// A name in a signed zone, queried for NS at start to see whether the
    /// name servers validate (`.` by default); empty: no probe.
    pub dnssec_probe: String,
}

/// `dns.dnssec`: where DNSSEC validation, which DANE needs, comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnssecMode {
    /// Trust the AD bit of a validating resolver on this host (Postfix's
    /// model): only when every name server is a loopback address.
    TrustAd,
    /// No DNSSEC: DANE never applies.
    Off,
}

/// `[smtp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// `[smtp.timeouts]`
    pub timeouts: SmtpTimeoutSettings,
}

/// `[smtp.timeouts]`, in seconds (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpTimeoutSettings {
    /// TCP connection established.
    pub connect: u64,
    /// The 220 greeting.
    pub greeting: u64,
    /// The reply to EHLO (and HELO).
    pub ehlo: u64,
    /// The reply to MAIL FROM.
    pub mail: u64,
    /// The reply to each RCPT TO.
    pub rcpt: u64,
    /// The 354 reply to DATA.
    pub data: u64,
    /// Each write of message data making progress.
    pub data_block: u64,
    /// The reply to the final dot.
    pub data_done: u64,
    /// The reply to RSET.
    pub rset: u64,
    /// The reply to QUIT.
    pub quit: u64,
}

/// `[delivery]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Open SMTP connections in all (1–900).
    pub max_connections: usize,
    /// Open SMTP connections to one domain.
    pub max_connections_per_domain: usize,
    /// Open SMTP connections to one site (the domains whose MX host names
    /// are the same), unless a rule says otherwise (Postfix's
    /// `default_destination_concurrency_limit`).
    pub max_connections_per_site: usize,
    /// Connections a site starts with (Postfix's
    /// `initial_destination_concurrency`); more as its deliveries succeed.
    pub initial_connections_per_site: usize,
    /// The old name of `initial_connections_per_site`, from when slow start
    /// was per domain: used when only it is set; unset by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_connections_per_domain: Option<usize>,
    /// Messages sent on one connection before it is closed.
    pub max_messages_per_connection: usize,
    /// Seconds a connection with nothing more to carry waits for another
    /// message of its domain before it says goodbye (Postfix's
    /// `smtp_connection_cache_time_limit`); 0 closes it at once.
    pub connection_cache_time: u64,
    /// Addresses tried in one delivery attempt, over all MX hosts in order
    /// (Postfix's `smtp_mx_address_limit`).
    pub max_mx_addresses: usize,
    /// Seconds after arrival (`X-Postman-Date`) before a message still
    /// deferred is bounced; 0 bounces after the first failed attempt.
    pub max_queue_lifetime: u64,
    /// Seconds after arrival at which one delay-warning DSN goes to the
    /// sender of a message still deferred; 0 turns warnings off.
    pub delay_warning: u64,
    /// The largest message, in bytes, a failure notice returns whole when
    /// its sender asked with `RET=FULL` (Postfix's `bounce_size_limit`);
    /// a larger one returns its headers only.
    pub bounce_size_limit: u64,
    /// Throttle replies in a row (no message delivered between) after
    /// which a site is suspended; 0 never suspends.
    pub suspend_after_throttles: u32,
    /// Seconds a site suspended for its throttles waits.
    pub throttle_suspend_time: u64,
    /// Regular expressions (case-insensitive) of replies that are
    /// throttles at every site, beside the built-in ones.
    pub throttle_patterns: Vec<String>,
    /// `[delivery.retry]` (a table: stays last for TOML output).
    pub retry: RetrySettings,
    /// `[delivery.site."<suffix>"]`: the rule for the sites whose MX host
    /// names end in the suffix (tables: last for TOML output).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub site: BTreeMap<String, SiteSettings>,
}

/// `[delivery.retry]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Seconds before a deferred message is tried again the first time;
    /// each further failure doubles the wait.
    pub min_backoff: u64,
    /// Seconds the doubling stops at (Postfix's `maximal_backoff_time`).
    pub max_backoff: u64,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `term` or `json`.
    pub format: LogFormat,
    /// Seconds between metrics records; 0 turns them off.
    pub metrics_interval: u64,
    /// Where the log goes: a file (reopened on SIGUSR1, for logrotate), or
    /// standard error when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// `[queue]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// Seconds between the safety-net rescans beside inotify.
    pub rescan_interval: u64,
    /// Threads per I/O worker that claim and read the next messages and
    /// settle queue files after delivery.
    pub disk_threads: usize,
}

/// `[tls]`: STARTTLS (RFC 3207).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The security level of MX delivery ([`LevelWord`]: `may`, `encrypt`,
    /// `dane`, `dane-only`, `mta-sts`, `verify`, `secure`, `none`, or the
    /// older `opportunistic`, `required`, `disabled`).
    pub mode: LevelWord,
    /// Honour DANE TLSA records where DNSSEC validation is available.
    #[serde(default = "yes")]
    pub dane: bool,
    /// Honour MTA-STS policies (RFC 8461).
    #[serde(default = "yes")]
    pub mta_sts: bool,
    /// `none` or `name`; unset: `none` where TLS is opportunistic, `name`
    /// where it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<TlsVerify>,
    /// PEM certificates trusted for `verify = "name"`, beside the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The certificate chain (PEM) shown to a server that asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// `[tls.policy]`: the level for one destination domain (a table: stays
    /// last for TOML output).
    #[serde(default)]
    pub policy: BTreeMap<String, LevelWord>,
}

fn yes() -> bool {
    true
}

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (slog-term).
    Term,
    /// One JSON object a line (slog-json).
    Json,
}

/// The validated configuration the actors use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// I/O worker threads, 1–64.
    pub threads: usize,
    /// EHLO name: a valid host name or address literal.
    pub hostname: String,
    /// Remote SMTP port, non-zero.
    pub server_port: u16,
    /// Debug logging.
    pub debug: bool,
    /// Local domains, lower-case, never empty.
    pub local_domains: Vec<String>,
    /// Addresses of this host's own receiving server
    /// (`application.local_listeners`), never connected to.
    pub local_listeners: Vec<SocketAddr>,
    /// Queue root.
    pub maildir: PathBuf,
    /// Name servers; empty means the system's resolv.conf.
    pub nameservers: Vec<SocketAddr>,
    /// Per-query DNS timeout.
    pub dns_timeout: Duration,
    /// DNS retries after a failed query, 0–10.
    pub dns_attempts: usize,
    /// Where DNSSEC validation comes from (`dns.dnssec`).
    pub dnssec: DnssecMode,
    /// The name queried for NS at start to see whether the name servers
    /// validate, fully qualified with its trailing dot (`.` for the root);
    /// `None`: no probe (`dns.dnssec_probe = ""`).
    pub dnssec_probe: Option<String>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// SMTP command timeouts.
    pub timeouts: Timeouts,
    /// Open connections in all, 1–900 (FD_SETSIZE).
    pub max_connections: usize,
    /// Open connections to one domain, 1–`max_connections`.
    pub max_connections_per_domain: usize,
    /// Connections a destination starts with, 1–900: the same as
    /// `sites.defaults().initial_connections` (which slow start per site
    /// uses), kept until the dispatcher schedules by site. At most
    /// `max_connections_per_domain` of them are used. Each delivery adds
    /// 1/n to a domain's n allowed connections, up to
    /// `max_connections_per_domain`, and a connection that fails while
    /// others to the domain are open lowers n to those (Postfix's
    /// concurrency feedback).
    pub initial_connections_per_domain: usize,
    /// How each site is treated: the `delivery.*` defaults and the
    /// `[delivery.site."<suffix>"]` rules.
    pub sites: SiteRules,
    /// Messages on one connection, ≥ 1.
    pub max_messages_per_connection: usize,
    /// How long an idle connection waits for more of its domain
    /// (`delivery.connection_cache_time`), 0–300 s.
    pub connection_cache_time: Duration,
    /// Addresses tried in one delivery attempt, 1–1000.
    pub max_mx_addresses: usize,
    /// Delay before a deferred message is tried again the first time
    /// (`delivery.retry.min_backoff`), ≥ 1 s.
    pub retry_delay: Duration,
    /// Longest delay between two attempts (`delivery.retry.max_backoff`),
    /// ≥ `retry_delay`.
    pub max_backoff: Duration,
    /// How long after arrival a deferred message is bounced
    /// (`delivery.max_queue_lifetime`); zero: after its first failure.
    pub max_queue_lifetime: Duration,
    /// When after arrival one delay warning is sent
    /// (`delivery.delay_warning`); `None` when off, else shorter than
    /// `max_queue_lifetime`.
    pub delay_warning: Option<Duration>,
    /// The largest message returned whole in a failure notice
    /// (`delivery.bounce_size_limit`), 0–[`MAX_BOUNCE_SIZE_LIMIT`] bytes.
    pub bounce_size_limit: usize,
    /// Log record format.
    pub log_format: LogFormat,
    /// `log.file`: the log file, or `None` for standard error.
    pub log_file: Option<PathBuf>,
    /// Interval of metrics records; zero means off.
    pub metrics_interval: Duration,
    /// Interval of the safety-net queue rescan, ≥ 1 s.
    pub rescan_interval: Duration,
    /// Disk threads per I/O worker (claiming and reading the next messages;
    /// removing queue files, recording states and bouncing after delivery), 1–16.
    pub disk_threads: usize,
    /// Address family tried first.
    pub ip_preference: IpPreference,
    /// The security level of MX delivery (`tls.mode`); a relay's
    /// STARTTLS default ([`Level::starttls`]).
    pub tls_mode: Level,
    /// `tls.dane` and `tls.mta_sts`.
    pub tls_discovery: Discovery,
    /// Certificate checks (`tls.verify`); `None`: by mode.
    pub tls_verify: Option<TlsVerify>,
    /// Extra trusted roots (`tls.ca_file`), an existing file.
    pub tls_ca_file: Option<PathBuf>,
    /// The client certificate and key (`tls.client_cert`, `tls.client_key`).
    pub tls_client: Option<std::sync::Arc<crate::tls::ClientIdentity>>,
    /// Per-domain levels (`tls.policy`), keys lower-case A-label domains.
    pub tls_policy: BTreeMap<String, Level>,
    /// Where each domain's mail goes (`[routing]`).
    pub routing: crate::routing::Routing,
    /// TLS reports (`[tlsrpt]`); `None` when off.
    pub tlsrpt: Option<Tlsrpt>,
}

impl Config {
    /// The security level of MX delivery to `domain` (a lower-case
    /// A-label): its `tls.policy` entry, else `tls.mode`.
    pub fn level_for(&self, domain: &str) -> Level {
        self.tls_policy
            .get(domain)
            .copied()
            .unwrap_or(self.tls_mode)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file named by the user cannot be read.
    #[error("cannot read config file {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The configuration file is larger than [`MAX_CONFIG_FILE`].
    #[error(
        "config file {} is {size} bytes, more than the {limit} a settings file may hold: \
         is it the right file?",
        path.display()
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`MAX_CONFIG_FILE`].
        limit: u64,
    },
    /// A layer does not parse, or a key is unknown or has the wrong type.
    #[error("{}", describe_figment(.0))]
    Load(Box<figment::Error>),
    /// A value has the right type but is out of bounds.
    #[error("invalid value for `{key}` ({value}) in {origin}: {reason}")]
    Invalid {
        /// The key path, e.g. `delivery.max_connections`.
        key: String,
        /// The value, as given.
        value: String,
        /// The layer that gave it: a file, an environment variable, flags.
        origin: String,
        /// The rule it breaks, and what to do.
        reason: String,
    },
}

/// Loads and validates the configuration: defaults (with `default_hostname`,
/// usually the machine's name) < `file` < `POSTMAN_*` environment < `flags`.
pub fn load(
    file: &ConfigFile,
    flags: &Flags,
    default_hostname: &str,
) -> Result<Loaded, ConfigError> {
    let figment = layers(file, flags, default_hostname)?;
    let settings: Settings = figment
        .extract()
        .map_err(|e| ConfigError::Load(Box::new(e)))?;
    let config = Validator {
        figment: Some(&figment),
    }
    .validate(&settings)?;
    Ok(Loaded { settings, config })
}

/// The figment of all layers, for callers that want to inspect where a value
/// came from (`figment.find_metadata(key)`).
pub fn layers(
    file: &ConfigFile,
    flags: &Flags,
    default_hostname: &str,
) -> Result<Figment, ConfigError> {
    let defaults = Layer::new(DEFAULTS_NAME, &Settings::defaults(default_hostname))?;
    let file = match file {
        ConfigFile::Default if !Path::new(DEFAULT_CONFIG_FILE).is_file() => Toml::string(""),
        ConfigFile::Default => {
            let path = Path::new(DEFAULT_CONFIG_FILE);
            let meta = std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.to_owned(),
                source,
            })?;
            not_too_large(path, &meta)?;
            Toml::file_exact(path)
        }
        ConfigFile::Named(path) => {
            // file_exact would only say "No such file" without the path.
            let meta = std::fs::metadata(path).map_err(|source| ConfigError::File {
                path: path.clone(),
                source,
            })?;
            not_too_large(path, &meta)?;
            Toml::file_exact(path)
        }
    };
    let env = Env::prefixed(ENV_PREFIX)
        .filter(|key| key.as_str().contains("__"))
        .split("__");
    Ok(Figment::from(defaults)
        .merge(file)
        .merge(env)
        .merge(Layer::new(FLAGS_NAME, &FlagLayer::from(flags))?))
}

/// A settings file must be a regular file of at most [`MAX_CONFIG_FILE`]
/// bytes: a FIFO would block the read (and a reload) for ever, and a device
/// such as `/dev/zero` reports no size and never ends.
fn not_too_large(path: &Path, meta: &std::fs::Metadata) -> Result<(), ConfigError> {
    if !meta.is_file() {
        return Err(ConfigError::File {
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file (a FIFO, device or directory)",
            ),
        });
    }
    if meta.len() > MAX_CONFIG_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            limit: MAX_CONFIG_FILE,
        });
    }
    Ok(())
}

impl Settings {
    /// Every setting at its default; `hostname` is the caller's (the
    /// machine's name).
    pub fn defaults(hostname: &str) -> Settings {
        Settings {
            application: ApplicationSettings {
                threads: 2,
                hostname: hostname.to_owned(),
                server_port: 25,
                debug: false,
                local_domains: Vec::new(),
                local_listeners: Vec::new(),
                maildir: MaildirSettings {
                    path: PathBuf::from("/var/spool/postman"),
                },
            },
            dns: DnsSettings {
                nameservers: Vec::new(),
                timeout: 5,
                attempts: 2,
                ip_preference: IpPreference::Any,
                dnssec: DnssecMode::TrustAd,
                dnssec_probe: ".".to_owned(),
            },
            smtp: SmtpSettings {
                timeouts: SmtpTimeoutSettings {
                    connect: 30,
                    greeting: 300,
                    ehlo: 300,
                    mail: 300,
                    rcpt: 300,
                    data: 120,
                    data_block: 180,
                    data_done: 600,
                    rset: 20,
                    quit: 300,
                },
            },
            delivery: DeliverySettings {
                max_connections: 500,
                max_connections_per_domain: 20,
                max_connections_per_site: 20,
                initial_connections_per_site: DEFAULT_INITIAL_CONNECTIONS,
                initial_connections_per_domain: None,
                max_messages_per_connection: 100,
                connection_cache_time: 2,
                max_mx_addresses: 5,
                max_queue_lifetime: 5 * 24 * 3600,
                delay_warning: 0,
                bounce_size_limit: 50_000,
                suspend_after_throttles: 5,
                throttle_suspend_time: 300,
                throttle_patterns: Vec::new(),
                retry: RetrySettings {
                    min_backoff: 300,
                    max_backoff: 4000,
                },
                site: BTreeMap::new(),
            },
            log: LogSettings {
                format: LogFormat::Term,
                metrics_interval: 60,
                file: None,
            },
            queue: QueueSettings {
                rescan_interval: 60,
                disk_threads: 3,
            },
            tls: TlsSettings {
                mode: LevelWord::May,
                dane: true,
                mta_sts: true,
                verify: None,
                ca_file: None,
                client_cert: None,
                client_key: None,
                policy: BTreeMap::new(),
            },
            tlsrpt: TlsrptSettings::default(),
            routing: RoutingSettings::default(),
        }
    }

    /// Validates settings that did not come from [`load`] (errors then name
    /// the key but not its layer).
    pub fn validate(&self) -> Result<Config, ConfigError> {
        Validator { figment: None }.validate(self)
    }

    /// The settings as a TOML document (what `check-config` prints).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

/// A provider with a fixed name, for the defaults and the flags, so errors
/// say "built-in defaults" rather than a Rust type name.
struct Layer {
    name: &'static str,
    dict: Dict,
}

impl Layer {
    fn new(name: &'static str, value: &impl Serialize) -> Result<Layer, ConfigError> {
        let dict = Value::serialize(value)
            .map_err(|e| ConfigError::Load(Box::new(e)))?
            .into_dict()
            .unwrap_or_default();
        Ok(Layer { name, dict })
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The flags that are set, shaped like [`Settings`].
#[derive(Serialize)]
struct FlagLayer<'a> {
    application: FlagApplication<'a>,
}

#[derive(Serialize)]
struct FlagApplication<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    debug: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maildir: Option<FlagMaildir<'a>>,
}

#[derive(Serialize)]
struct FlagMaildir<'a> {
    path: &'a Path,
}

impl<'a> From<&'a Flags> for FlagLayer<'a> {
    fn from(flags: &'a Flags) -> Self {
        FlagLayer {
            application: FlagApplication {
                threads: flags.threads,
                hostname: flags.hostname.as_deref(),
                server_port: flags.server_port,
                debug: flags.debug,
                maildir: flags.maildir.as_deref().map(|path| FlagMaildir { path }),
            },
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "config_sites_tests.rs"]
mod sites_tests;

#[cfg(test)]
#[path = "config_routing_tests.rs"]
mod routing_tests;

#[cfg(test)]
#[path = "config_tlsrpt_tests.rs"]
mod tlsrpt_tests;

#[cfg(test)]
#[path = "config_tls_tests.rs"]
mod tls_tests;
