//! Tests of configuration loading and validation. Each runs in a
//! `figment::Jail`: a temporary working directory and a restored environment.

use super::*;
use figment::Jail;

pub(super) const HOST: &str = "mx.example.org";

/// A self-signed root certificate (P-256, CN "postman test root", valid
/// until 2126), for `tls.ca_file`.
pub(super) const TEST_ROOT: &str = "-----BEGIN CERTIFICATE-----
MIIBkDCCATWgAwIBAgIUYBZXPt0pc/9nZvIlhmg1JjvyXOMwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRcG9zdG1hbiB0ZXN0IHJvb3QwIBcNMjYxMjA3MTA1ODM5WhgP
MjEyNjExMTMxMDU4MzlaMBwxGjAYBgNVBAMMEXBvc3RtYW4gdGVzdCByb290MFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEMD2gMVAM3+CwFPcJ6qVAe+3x7Qx+4OGj
h1AdphAq431lRRcFgrK6kyCdXsXcEdqh8UdZcsv/byrREuDeIFYrbqNTMFEwHQYD
VR0OBBYEFP+LG3kz6mAk1q7CUUoieel2tsddMB8GA1UdIwQYMBaAFP+LG3kz6mAk
1q7CUUoieel2tsddMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIh
ANf1tgTN9mtmhxcOv053VNF9aCGE+orMp7mRHM2IJEs4AiEA6FTeA5um6pKIQRxK
USsllhUpRGLs9WLfGJf5M+9O3Vg=
-----END CERTIFICATE-----
";

/// Runs `f` in a jail with no `POSTMAN_*` variables from the outside.
// Jail's API returns figment::Result, whose error is large; tests only.
#[allow(clippy::result_large_err)]
pub(super) fn jail(f: impl FnOnce(&mut Jail)) {
    Jail::expect_with(|jail| {
        jail.clear_env();
        f(jail);
        Ok(())
    });
}

/// Writes `config/postman.toml` in the jail.
pub(super) fn config_file(jail: &Jail, contents: &str) {
    jail.create_dir("config").expect("mkdir config");
    jail.create_file("config/postman.toml", contents)
        .expect("write config/postman.toml");
}

pub(super) fn load_default(flags: &Flags) -> Result<Loaded, ConfigError> {
    load(&ConfigFile::Default, flags, HOST)
}

pub(super) fn expect_err(result: Result<Loaded, ConfigError>, what: &str) -> ConfigError {
    match result {
        Ok(loaded) => panic!("{what}: loaded {:?}", loaded.settings),
        Err(e) => e,
    }
}

#[test]
fn defaults_without_a_file() {
    jail(|_| {
        let loaded = load_default(&Flags::default()).expect("defaults load");
        assert_eq!(loaded.settings, Settings::defaults(HOST), "settings");
        let c = loaded.config;
        assert_eq!(c.threads, 2, "threads");
        assert_eq!(c.hostname, HOST, "hostname");
        assert_eq!(c.server_port, 25, "server_port");
        assert!(!c.debug, "debug");
        assert_eq!(c.local_domains, [HOST], "local_domains default to hostname");
        assert_eq!(c.maildir, Path::new("/var/spool/postman"), "maildir");
        assert!(c.nameservers.is_empty(), "nameservers");
        assert_eq!(c.dns_timeout, Duration::from_secs(5), "dns_timeout");
        assert_eq!(c.dns_attempts, 2, "dns_attempts");
        assert_eq!(c.dnssec, DnssecMode::TrustAd, "dns.dnssec");
        assert_eq!(c.dnssec_probe.as_deref(), Some("."), "dns.dnssec_probe");
        assert_eq!(
            c.connect_timeout,
            Duration::from_secs(30),
            "connect_timeout"
        );
        let t = &c.timeouts;
        let secs = [
            t.greeting,
            t.ehlo,
            t.mail,
            t.rcpt,
            t.data,
            t.data_block,
            t.data_done,
            t.rset,
            t.quit,
        ]
        .map(|d| d.as_secs());
        assert_eq!(
            secs,
            [300, 300, 300, 300, 120, 180, 600, 20, 300],
            "smtp timeouts"
        );
        assert_eq!(c.max_connections, 500, "max_connections");
        assert_eq!(
            c.max_connections_per_domain, 20,
            "max_connections_per_domain"
        );
        assert_eq!(
            c.initial_connections_per_domain, 5,
            "initial_connections_per_domain, as Postfix"
        );
        assert_eq!(
            c.max_messages_per_connection, 100,
            "max_messages_per_connection"
        );
        assert_eq!(
            c.connection_cache_time,
            Duration::from_secs(2),
            "connection_cache_time, as Postfix"
        );
        assert_eq!(c.max_mx_addresses, 5, "max_mx_addresses, as Postfix");
        assert_eq!(c.retry_delay, Duration::from_secs(300), "retry_delay");
        assert_eq!(c.max_backoff, Duration::from_secs(4000), "max_backoff");
        assert_eq!(
            c.max_queue_lifetime,
            Duration::from_secs(432_000),
            "max_queue_lifetime: 5 days"
        );
        assert_eq!(c.delay_warning, None, "delay_warning off by default");
        assert_eq!(c.log_format, LogFormat::Term, "log_format");
        assert_eq!(
            c.metrics_interval,
            Duration::from_secs(60),
            "metrics_interval"
        );
        assert_eq!(
            c.rescan_interval,
            Duration::from_secs(60),
            "rescan_interval"
        );
        assert_eq!(c.disk_threads, 3, "disk_threads");
    });
}

/// The shipped file documents every setting at its default, and adds the
/// site rules for the large providers (see `config_sites_tests.rs`).
#[test]
fn shipped_config_file_loads_to_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/postman.toml");
    jail(|_| {
        let mut loaded = load(&ConfigFile::Named(path.clone()), &Flags::default(), HOST)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!loaded.settings.delivery.site.is_empty(), "provider rules");
        loaded.settings.delivery.site.clear();
        assert_eq!(
            loaded.settings,
            Settings::defaults(HOST),
            "{}",
            path.display()
        );
    });
}

#[test]
fn layers_apply_in_order() {
    jail(|jail| {
        config_file(
            jail,
            r#"
            [application]
            threads = 4
            server_port = 587
            hostname = "file.example.org"
            local_domains = ["Example.ORG", "other.test"]
            local_listeners = ["192.0.2.25:25", "[2001:db8::25]:25", "0.0.0.0:2525"]
            [application.maildir]
            path = "/srv/from-file"
            [log]
            format = "json"
            [dns]
            nameservers = ["192.0.2.53:5353", "2001:db8::53", "[2001:db8::54]:54", "192.0.2.1"]
            "#,
        );
        let file_only = load_default(&Flags::default()).expect("file layer");
        let c = &file_only.config;
        assert_eq!(c.threads, 4, "threads from file");
        assert_eq!(c.server_port, 587, "server_port from file");
        assert_eq!(c.hostname, "file.example.org", "hostname from file");
        assert_eq!(
            c.local_domains,
            ["example.org", "other.test"],
            "local_domains lower-cased"
        );
        assert_eq!(c.maildir, Path::new("/srv/from-file"), "maildir from file");
        let listeners: Vec<SocketAddr> = ["192.0.2.25:25", "[2001:db8::25]:25", "0.0.0.0:2525"]
            .iter()
            .map(|s| s.parse().expect("test address"))
            .collect();
        assert_eq!(c.local_listeners, listeners, "local_listeners from file");
        assert_eq!(c.log_format, LogFormat::Json, "log format from file");
        let want: Vec<SocketAddr> = [
            "192.0.2.53:5353",
            "[2001:db8::53]:53",
            "[2001:db8::54]:54",
            "192.0.2.1:53",
        ]
        .iter()
        .map(|s| s.parse().expect("test address"))
        .collect();
        assert_eq!(c.nameservers, want, "nameservers");

        jail.set_env("POSTMAN_APPLICATION__SERVER_PORT", 2525);
        jail.set_env("POSTMAN_APPLICATION__THREADS", 8);
        jail.set_env("POSTMAN_APPLICATION__MAILDIR__PATH", "/srv/from-env");
        jail.set_env("POSTMAN_DELIVERY__RETRY__MIN_BACKOFF", 60);
        jail.set_env("POSTMAN_CONFIG", "/not/a/setting.toml");
        jail.set_env("POSTMAN_LOG", "not a setting either");
        let with_env = load_default(&Flags::default()).expect("env layer");
        let c = &with_env.config;
        assert_eq!(c.server_port, 2525, "env beats file");
        assert_eq!(c.threads, 8, "env beats file");
        assert_eq!(c.maildir, Path::new("/srv/from-env"), "nested env key");
        assert_eq!(c.retry_delay, Duration::from_secs(60), "nested env key");
        assert_eq!(c.hostname, "file.example.org", "file value kept");

        let flags = Flags {
            maildir: Some("/srv/from-flag".into()),
            threads: Some(16),
            server_port: None,
            hostname: Some("flag.example.org".into()),
            debug: Some(true),
        };
        let with_flags = load_default(&flags).expect("flag layer");
        let c = &with_flags.config;
        assert_eq!(c.threads, 16, "flag beats env");
        assert_eq!(c.maildir, Path::new("/srv/from-flag"), "flag beats env");
        assert_eq!(c.hostname, "flag.example.org", "flag beats file");
        assert!(c.debug, "flag debug");
        assert_eq!(c.server_port, 2525, "unset flag leaves env value");
    });
}

#[test]
fn named_file_is_used_and_must_exist() {
    jail(|jail| {
        jail.create_file("custom.toml", "[queue]\nrescan_interval = 5\n")
            .expect("write custom.toml");
        let path = jail.directory().join("custom.toml");
        let loaded = load(&ConfigFile::Named(path.clone()), &Flags::default(), HOST)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            loaded.config.rescan_interval,
            Duration::from_secs(5),
            "from {}",
            path.display()
        );

        let missing = jail.directory().join("missing.toml");
        let err = expect_err(
            load(&ConfigFile::Named(missing.clone()), &Flags::default(), HOST),
            "missing",
        );
        match &err {
            ConfigError::File { path, source } => {
                assert_eq!(path, &missing, "path in {err}");
                assert_eq!(source.kind(), io::ErrorKind::NotFound, "kind in {err}");
            }
            other => panic!("missing file: {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("missing.toml"), "{message}");
    });
}

#[test]
fn load_errors_name_key_and_source() {
    // (file contents, env, text the message must contain)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            "[application]\nthreds = 4\n",
            &[],
            &["unknown key `application.threds` in config/postman.toml (expected one of `threads`, `hostname`"],
        ),
        (
            "[aplication]\nthreads = 4\n",
            &[],
            &["aplication", "config/postman.toml", "unknown key"],
        ),
        (
            "[application]\nthreads = \"many\"\n",
            &[],
            &["`application.threads`", "config/postman.toml", "\"many\""],
        ),
        (
            "[log]\nformat = \"xml\"\n",
            &[],
            &["invalid value for `log.format` (\"xml\") in config/postman.toml: expected `term` or `json`"],
        ),
        (
            "[application]\nserver_port = 70000\n",
            &[],
            &["`application.server_port`", "config/postman.toml", "70000"],
        ),
        ("[application\nthreads = 4\n", &[], &["config/postman.toml", "TOML"]),
        (
            "",
            &[("POSTMAN_DELIVERY__MAX_CONECTIONS", "4")],
            &["max_conections", "POSTMAN_DELIVERY__MAX_CONECTIONS", "unknown key"],
        ),
        (
            "",
            &[("POSTMAN_APPLICATION__THREADS", "lots")],
            &["`application.threads`", "POSTMAN_APPLICATION__THREADS", "lots"],
        ),
    ];
    for (file, env, texts) in cases {
        jail(|jail| {
            config_file(jail, file);
            for (k, v) in *env {
                jail.set_env(k, v);
            }
            let err = expect_err(load_default(&Flags::default()), file);
            assert!(
                matches!(err, ConfigError::Load(_)),
                "{file:?} {env:?}: {err:?}"
            );
            let message = err.to_string();
            for text in *texts {
                assert!(
                    message.contains(text),
                    "{file:?} {env:?}: {message:?} lacks {text:?}"
                );
            }
        });
    }
}

#[test]
fn validation_bounds() {
    // (file contents, key, text the message must contain); every key also
    // gets a passing boundary case in `validation_accepts_the_bounds`.
    let cases: &[(&str, &str, &str)] = &[
        ("[application]\nthreads = 0", "application.threads", "(0) in config/postman.toml: must be at least 1"),
        ("[application]\nthreads = 65", "application.threads", "must be at most 64"),
        ("[application]\nhostname = \"\"", "application.hostname", "must not be empty"),
        ("[application]\nhostname = \"bad host\"", "application.hostname", "(\"bad host\")"),
        ("[application]\nhostname = \"a..b\"", "application.hostname", "host name"),
        ("[application]\nhostname = \"[300.0.0.1]\"", "application.hostname", "address literal"),
        ("[application]\nserver_port = 0", "application.server_port", "must be at least 1"),
        ("[application]\nlocal_domains = [\"ok.test\", \"bad_one\"]", "application.local_domains", "\"bad_one\""),
        ("[application]\nlocal_domains = [\"trailing.dot.\"]", "application.local_domains", "A-label"),
        ("[application]\nlocal_listeners = [\"192.0.2.25\"]", "application.local_listeners", "(\"192.0.2.25\")"),
        ("[application]\nlocal_listeners = [\"mx.test:25\"]", "application.local_listeners", "IP address and port"),
        ("[application]\nlocal_listeners = [\"192.0.2.25:0\"]", "application.local_listeners", "\"192.0.2.25:0\""),
        ("[application.maildir]\npath = \"\"", "application.maildir.path", "must not be empty"),
        ("[dns]\nnameservers = [\"dns.example:53\"]", "dns.nameservers", "\"dns.example:53\""),
        ("[dns]\ntimeout = 0", "dns.timeout", "must be at least 1 (seconds)"),
        ("[dns]\ntimeout = 61", "dns.timeout", "must be at most 60"),
        ("[dns]\nattempts = 11", "dns.attempts", "must be at most 10"),
        ("[dns]\ndnssec_probe = \"bad name\"", "dns.dnssec_probe", "(\"bad name\")"),
        ("[dns]\ndnssec_probe = \"a..b\"", "dns.dnssec_probe", "signed zone"),
        ("[smtp.timeouts]\nconnect = 0", "smtp.timeouts.connect", "must be at least 1"),
        ("[smtp.timeouts]\ngreeting = 0", "smtp.timeouts.greeting", "must be at least 1"),
        ("[smtp.timeouts]\nehlo = 3601", "smtp.timeouts.ehlo", "must be at most 3600"),
        ("[smtp.timeouts]\nmail = 0", "smtp.timeouts.mail", "at least 1"),
        ("[smtp.timeouts]\nrcpt = 0", "smtp.timeouts.rcpt", "at least 1"),
        ("[smtp.timeouts]\ndata = 0", "smtp.timeouts.data", "at least 1"),
        ("[smtp.timeouts]\ndata_block = 0", "smtp.timeouts.data_block", "at least 1"),
        ("[smtp.timeouts]\ndata_done = 99999", "smtp.timeouts.data_done", "at most 3600"),
        ("[smtp.timeouts]\nrset = 0", "smtp.timeouts.rset", "at least 1"),
        ("[smtp.timeouts]\nquit = 0", "smtp.timeouts.quit", "at least 1"),
        (
            "[delivery]\nmax_connections = 1200",
            "delivery.max_connections",
            "invalid value for `delivery.max_connections` (1200) in config/postman.toml: must be at most 900 \
             (select(2) handles descriptors below FD_SETSIZE 1024)",
        ),
        ("[delivery]\nmax_connections = 0", "delivery.max_connections", "must be at least 1"),
        ("[delivery]\nmax_connections_per_domain = 0", "delivery.max_connections_per_domain", "at least 1"),
        (
            "[delivery]\nmax_connections = 10\nmax_connections_per_domain = 11",
            "delivery.max_connections_per_domain",
            "must be at most 10 (no more than delivery.max_connections)",
        ),
        ("[delivery]\ninitial_connections_per_domain = 0", "delivery.initial_connections_per_domain", "at least 1"),
        ("[delivery]\ninitial_connections_per_domain = 901", "delivery.initial_connections_per_domain", "at most 900"),
        ("[delivery]\nmax_messages_per_connection = 0", "delivery.max_messages_per_connection", "at least 1"),
        ("[delivery]\nconnection_cache_time = 301", "delivery.connection_cache_time", "at most 300"),
        ("[delivery]\nmax_mx_addresses = 0", "delivery.max_mx_addresses", "must be at least 1"),
        ("[delivery]\nmax_mx_addresses = 1001", "delivery.max_mx_addresses", "must be at most 1000"),
        ("[delivery.retry]\nmin_backoff = 0", "delivery.retry.min_backoff", "at least 1"),
        ("[delivery.retry]\nmin_backoff = 604801\nmax_backoff = 604801", "delivery.retry.min_backoff", "at most 604800"),
        (
            "[delivery.retry]\nmin_backoff = 600\nmax_backoff = 599",
            "delivery.retry.max_backoff",
            "must be at least 600 (seconds, no less than delivery.retry.min_backoff)",
        ),
        ("[delivery.retry]\nmax_backoff = 604801", "delivery.retry.max_backoff", "at most 604800"),
        ("[delivery]\nmax_queue_lifetime = 31536001", "delivery.max_queue_lifetime", "at most 31536000"),
        (
            "[delivery]\nmax_queue_lifetime = 3600\ndelay_warning = 3600",
            "delivery.delay_warning",
            "must be at most 3599 (seconds, less than delivery.max_queue_lifetime, or 0 for no warning)",
        ),
        ("[delivery]\nmax_queue_lifetime = 0\ndelay_warning = 1", "delivery.delay_warning", "must be at most 0"),
        ("[delivery]\nbounce_size_limit = 10485761", "delivery.bounce_size_limit", "at most 10485760"),
        ("[log]\nmetrics_interval = 99999999", "log.metrics_interval", "at most 604800"),
        ("[queue]\nrescan_interval = 0", "queue.rescan_interval", "must be at least 1 (seconds)"),
        ("[queue]\ndisk_threads = 0", "queue.disk_threads", "must be at least 1"),
        ("[queue]\ndisk_threads = 17", "queue.disk_threads", "must be at most 16"),
    ];
    for (file, key, text) in cases {
        jail(|jail| {
            config_file(jail, file);
            let err = expect_err(load_default(&Flags::default()), file);
            let message = err.to_string();
            match &err {
                ConfigError::Invalid {
                    key: got, origin, ..
                } => {
                    assert_eq!(got, key, "{file:?}: key in {message}");
                    assert_eq!(
                        origin, "config/postman.toml",
                        "{file:?}: origin in {message}"
                    );
                }
                other => panic!("{file:?}: {other:?}"),
            }
            assert!(
                message.contains(text),
                "{file:?}: {message:?} lacks {text:?}"
            );
            assert!(
                message.contains(&format!("`{key}`")),
                "{file:?}: {message:?} lacks the key"
            );
        });
    }
}

#[test]
fn validation_accepts_the_bounds() {
    let cases = [
        "[application]\nthreads = 1",
        "[application]\nthreads = 64",
        "[application]\nhostname = \"localhost\"",
        "[application]\nhostname = \"MX-1.Example.ORG\"",
        "[application]\nhostname = \"[192.0.2.1]\"",
        "[application]\nhostname = \"[IPv6:2001:db8::1]\"",
        "[application]\nserver_port = 65535",
        "[dns]\nattempts = 0\ntimeout = 60",
        "[smtp.timeouts]\nconnect = 1\ndata_done = 3600",
        "[delivery]\nmax_connections = 900\nmax_connections_per_domain = 900",
        "[delivery]\nmax_connections = 1\nmax_connections_per_domain = 1\nmax_messages_per_connection = 1",
        "[delivery]\nmax_mx_addresses = 1",
        "[delivery]\nmax_connections_per_domain = 2\ninitial_connections_per_domain = 900",
        "[delivery]\nmax_mx_addresses = 1000",
        "[delivery.retry]\nmin_backoff = 604800\nmax_backoff = 604800",
        "[delivery]\nmax_queue_lifetime = 0\ndelay_warning = 0",
        "[delivery]\nmax_queue_lifetime = 31536000\ndelay_warning = 31535999",
        "[delivery]\nmax_queue_lifetime = 2\ndelay_warning = 1",
        "[delivery]\nbounce_size_limit = 0\n[delivery.retry]\nmin_backoff = 1\nmax_backoff = 1",
        "[delivery]\nbounce_size_limit = 10485760",
        "[log]\nmetrics_interval = 0",
        "[queue]\nrescan_interval = 1",
        "[queue]\ndisk_threads = 1",
        "[queue]\ndisk_threads = 16",
    ];
    for file in cases {
        jail(|jail| {
            config_file(jail, file);
            load_default(&Flags::default()).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        });
    }
}

#[test]
fn validation_names_env_and_flags() {
    jail(|jail| {
        jail.set_env("POSTMAN_DELIVERY__MAX_CONNECTIONS", 1200);
        let err = expect_err(load_default(&Flags::default()), "env max_connections");
        let message = err.to_string();
        assert!(
            message.contains(
                "in environment variable POSTMAN_DELIVERY__MAX_CONNECTIONS: must be at most 900"
            ),
            "{message}"
        );
    });
    jail(|_| {
        let flags = Flags {
            threads: Some(0),
            ..Flags::default()
        };
        let message = expect_err(load_default(&flags), "flag threads").to_string();
        assert!(message.contains("(0) in command-line flags"), "{message}");
    });
    jail(|_| {
        let flags = Flags {
            hostname: Some(String::new()),
            ..Flags::default()
        };
        let message = expect_err(load_default(&flags), "flag hostname").to_string();
        assert!(message.contains("`application.hostname`"), "{message}");
    });
    jail(|_| {
        let message = expect_err(
            load(&ConfigFile::Default, &Flags::default(), "bad name"),
            "default",
        )
        .to_string();
        assert!(message.contains("in built-in defaults"), "{message}");
    });
}

#[test]
fn retry_settings_reach_the_config() {
    jail(|jail| {
        config_file(
            jail,
            "[delivery]\nmax_queue_lifetime = 86400\ndelay_warning = 14400\n\
             [delivery.retry]\nmin_backoff = 60\nmax_backoff = 3600\n",
        );
        let c = load_default(&Flags::default())
            .expect("retry settings")
            .config;
        assert_eq!(c.retry_delay, Duration::from_secs(60), "min_backoff");
        assert_eq!(c.max_backoff, Duration::from_secs(3600), "max_backoff");
        assert_eq!(
            c.max_queue_lifetime,
            Duration::from_secs(86_400),
            "max_queue_lifetime"
        );
        assert_eq!(
            c.delay_warning,
            Some(Duration::from_secs(14_400)),
            "delay_warning"
        );
        jail.set_env("POSTMAN_DELIVERY__DELAY_WARNING", 0);
        jail.set_env("POSTMAN_DELIVERY__RETRY__MAX_BACKOFF", 120);
        let c = load_default(&Flags::default())
            .expect("env overrides")
            .config;
        assert_eq!(c.delay_warning, None, "0 from env turns warnings off");
        assert_eq!(
            c.max_backoff,
            Duration::from_secs(120),
            "max_backoff from env"
        );
    });
}

#[test]
fn validate_without_figment() {
    let mut settings = Settings::defaults(HOST);
    settings.application.threads = 0;
    let message = settings.validate().expect_err("threads 0").to_string();
    assert!(
        message.contains("`application.threads` (0) in the given settings"),
        "{message}"
    );
}

#[test]
fn settings_round_trip_through_toml() {
    let mut settings = Settings::defaults(HOST);
    settings.dns.nameservers = vec!["192.0.2.53:53".into()];
    settings.application.local_domains = vec!["a.test".into()];
    settings.log.format = LogFormat::Json;
    let text = settings.to_toml().expect("serializes");
    let back: Settings = Figment::from(Toml::string(&text))
        .extract()
        .unwrap_or_else(|e| panic!("{text}\n{e}"));
    assert_eq!(back, settings, "round trip of\n{text}");
    assert!(text.contains("[application.maildir]"), "{text}");
    assert!(text.contains("format = \"json\""), "{text}");
}

/// A settings file over [`MAX_CONFIG_FILE`] is refused unread; a long bad
/// line in a smaller one is quoted in a line's worth, not whole.
#[test]
fn huge_config_files_and_lines_make_short_errors() {
    jail(|jail| {
        let size = MAX_CONFIG_FILE as usize + 1;
        config_file(jail, &format!("# {}\n", "x".repeat(size - 3)));
        let message = expect_err(load_default(&Flags::default()), "too large").to_string();
        assert_eq!(
            message,
            format!(
                "config file config/postman.toml is {size} bytes, more than the 1048576 a \
                 settings file may hold: is it the right file?"
            )
        );
    });
    for (text, what) in [
        (format!("bad = {}\n", "x".repeat(500_000)), "a bad line"),
        (format!("{} = 1\n", "k".repeat(500_000)), "an unknown key"),
        (
            format!("[application]\nhostname = \"{}\"\n", "é".repeat(250_000)),
            "a bad value",
        ),
    ] {
        jail(|jail| {
            config_file(jail, &text);
            let message = expect_err(load_default(&Flags::default()), what).to_string();
            assert!(
                message.len() < 2000,
                "{what}: {} bytes: {message}",
                message.len()
            );
            assert!(message.contains("… [cut: "), "{what}: {message}");
        });
    }
}

/// A settings file that is a FIFO or a device is refused before anything
/// reads it: the read would block (a FIFO) or never end (`/dev/zero`).
#[test]
fn special_config_files_are_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("postman.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    for path in [fifo, PathBuf::from("/dev/zero"), dir.path().to_path_buf()] {
        let err = expect_err(
            load(&ConfigFile::Named(path.clone()), &Flags::default(), HOST),
            &path.display().to_string(),
        );
        let message = err.to_string();
        assert!(
            matches!(&err, ConfigError::File { path: p, .. } if *p == path),
            "{}: {message}",
            path.display()
        );
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some("not a regular file (a FIFO, device or directory)"),
            "{}",
            path.display()
        );
    }
}

/// `dns.dnssec` takes its two modes by name, and the probe name is kept
/// fully qualified; an empty one means no probe.
#[test]
fn dnssec_settings_reach_the_config() {
    let cases: &[(&str, DnssecMode, Option<&str>)] = &[
        ("", DnssecMode::TrustAd, Some(".")),
        ("dnssec = \"off\"", DnssecMode::Off, Some(".")),
        (
            "dnssec = \"trust-ad\"\ndnssec_probe = \"Test\"",
            DnssecMode::TrustAd,
            Some("test."),
        ),
        (
            "dnssec_probe = \"d1.test.\"",
            DnssecMode::TrustAd,
            Some("d1.test."),
        ),
        ("dnssec_probe = \".\"", DnssecMode::TrustAd, Some(".")),
        ("dnssec_probe = \"\"", DnssecMode::TrustAd, None),
    ];
    for (text, mode, probe) in cases {
        let c: Config = Figment::from(figment::providers::Serialized::defaults(
            Settings::defaults(HOST),
        ))
        .merge(Toml::string(&format!("[dns]\n{text}\n")))
        .extract::<Settings>()
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .validate()
        .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.dnssec, *mode, "{text}");
        assert_eq!(c.dnssec_probe.as_deref(), *probe, "{text}");
    }
    let bad = Figment::from(figment::providers::Serialized::defaults(
        Settings::defaults(HOST),
    ))
    .merge(Toml::string("[dns]\ndnssec = \"validate\"\n"))
    .extract::<Settings>();
    assert!(bad.is_err(), "an unknown dns.dnssec mode is refused");
}
