//! The second stage of the settings: [`Validator`] checks the bounds of
//! every value and parses what needs parsing (addresses, host names, the
//! TLS policy, the site rules), turning [`Settings`] into [`Config`]; each error names the
//! key and the layer it came from, and quotes at most a line's worth of the
//! bad value.

use super::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

mod routing;
mod sites;
mod tlsrpt;
use sites::SiteDefaults;

/// The most bytes of one line of bad input an error quotes.
const QUOTE_MAX: usize = 200;

/// `text` with every line longer than [`QUOTE_MAX`] cut at a character
/// boundary and marked `… [cut: N bytes]` with its length, as the log
/// marks a value it cuts.
pub(super) fn shorten(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * QUOTE_MAX));
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push('\n');
        }
        if line.len() <= QUOTE_MAX {
            out.push_str(line);
            continue;
        }
        let mut cut = QUOTE_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push_str(&line[..cut]);
        out.push_str(&format!("… [cut: {} bytes]", line.len()));
    }
    out
}

/// The second stage: bounds and parsing, each error naming key and layer.
pub(super) struct Validator<'a> {
    pub(super) figment: Option<&'a Figment>,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, value: impl Display, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            key: key.to_owned(),
            value: shorten(&value.to_string()),
            origin: origin(self.figment, key),
            reason: reason.into(),
        }
    }

    /// `value` within `min..=max`, or an error saying which bound and `why`.
    fn within<T: PartialOrd + Display + Copy>(
        &self,
        key: &str,
        value: T,
        (min, max): (T, T),
        why: &str,
    ) -> Result<T, ConfigError> {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        if value < min {
            return Err(self.invalid(key, value, format!("must be at least {min}{why}")));
        }
        if value > max {
            return Err(self.invalid(key, value, format!("must be at most {max}{why}")));
        }
        Ok(value)
    }

    fn seconds(&self, key: &str, value: u64, bounds: (u64, u64)) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(
            self.within(key, value, bounds, "seconds")?,
        ))
    }

    fn timeout(&self, key: &str, value: u64) -> Result<Duration, ConfigError> {
        self.seconds(key, value, (1, MAX_TIMEOUT_SECS))
    }

    pub(super) fn validate(&self, s: &Settings) -> Result<Config, ConfigError> {
        let app = &s.application;
        let threads = self.within("application.threads", app.threads, (1, 64), "")?;
        let hostname = self.hostname(&app.hostname)?;
        let server_port = self.within(
            "application.server_port",
            app.server_port,
            (1, u16::MAX),
            "",
        )?;
        let local_domains = self.local_domains(&app.local_domains, &hostname)?;
        let local_listeners = self.local_listeners(&app.local_listeners)?;
        if app.maildir.path.as_os_str().is_empty() {
            return Err(self.invalid("application.maildir.path", "\"\"", "must not be empty"));
        }
        let nameservers = self.nameservers(&s.dns.nameservers)?;
        let dns_timeout = self.seconds("dns.timeout", s.dns.timeout, (1, 60))?;
        let dns_attempts = self.within("dns.attempts", s.dns.attempts, (0, 10), "")?;
        let dnssec_probe = self.dnssec_probe(&s.dns.dnssec_probe)?;

        let t = &s.smtp.timeouts;
        let connect_timeout = self.timeout("smtp.timeouts.connect", t.connect)?;
        let timeouts = Timeouts {
            greeting: self.timeout("smtp.timeouts.greeting", t.greeting)?,
            ehlo: self.timeout("smtp.timeouts.ehlo", t.ehlo)?,
            mail: self.timeout("smtp.timeouts.mail", t.mail)?,
            rcpt: self.timeout("smtp.timeouts.rcpt", t.rcpt)?,
            data: self.timeout("smtp.timeouts.data", t.data)?,
            data_block: self.timeout("smtp.timeouts.data_block", t.data_block)?,
            data_done: self.timeout("smtp.timeouts.data_done", t.data_done)?,
            rset: self.timeout("smtp.timeouts.rset", t.rset)?,
            quit: self.timeout("smtp.timeouts.quit", t.quit)?,
        };

        let d = &s.delivery;
        let max_connections = self.within(
            "delivery.max_connections",
            d.max_connections,
            (1, MAX_CONNECTIONS),
            "select(2) handles descriptors below FD_SETSIZE 1024",
        )?;
        let max_connections_per_domain = self.within(
            "delivery.max_connections_per_domain",
            d.max_connections_per_domain,
            (1, max_connections),
            "no more than delivery.max_connections",
        )?;
        let initial_connections_per_domain = self.initial_connections(d)?;
        let max_messages_per_connection = self.within(
            "delivery.max_messages_per_connection",
            d.max_messages_per_connection,
            (1, usize::MAX),
            "",
        )?;
        let connection_cache_time = self.seconds(
            "delivery.connection_cache_time",
            d.connection_cache_time,
            (0, MAX_CONNECTION_CACHE_SECS),
        )?;
        let sites = self.sites(
            d,
            SiteDefaults {
                initial_connections: initial_connections_per_domain,
                max_messages_per_connection,
                connection_cache_time,
            },
        )?;
        let max_mx_addresses = self.within(
            "delivery.max_mx_addresses",
            d.max_mx_addresses,
            (1, MAX_MX_ADDRESSES),
            "",
        )?;
        let retry_delay = self.seconds(
            "delivery.retry.min_backoff",
            d.retry.min_backoff,
            (1, MAX_INTERVAL_SECS),
        )?;
        let max_backoff = self.within(
            "delivery.retry.max_backoff",
            d.retry.max_backoff,
            (retry_delay.as_secs(), MAX_INTERVAL_SECS),
            "seconds, no less than delivery.retry.min_backoff",
        )?;
        let max_queue_lifetime = self.seconds(
            "delivery.max_queue_lifetime",
            d.max_queue_lifetime,
            (0, MAX_LIFETIME_SECS),
        )?;
        let delay_warning = match d.delay_warning {
            0 => None,
            secs => Some(Duration::from_secs(self.within(
                "delivery.delay_warning",
                secs,
                (1, max_queue_lifetime.as_secs().saturating_sub(1)),
                "seconds, less than delivery.max_queue_lifetime, or 0 for no warning",
            )?)),
        };
        let bounce_size_limit = self.within(
            "delivery.bounce_size_limit",
            d.bounce_size_limit,
            (0, super::MAX_BOUNCE_SIZE_LIMIT),
            "bytes",
        )?;
        let metrics_interval = self.seconds(
            "log.metrics_interval",
            s.log.metrics_interval,
            (0, MAX_INTERVAL_SECS),
        )?;
        let disk_threads = self.within("queue.disk_threads", s.queue.disk_threads, (1, 16), "")?;
        let rescan_interval = self.seconds(
            "queue.rescan_interval",
            s.queue.rescan_interval,
            (1, MAX_INTERVAL_SECS),
        )?;
        let tls_ca_file = self.ca_file(s.tls.ca_file.as_deref())?;
        let tls_client = self.client_identity(&s.tls)?;
        let tls_policy = self.tls_policy(&s.tls.policy, s.tls.verify)?;
        let routing = self.routing(&s.routing)?;
        let tlsrpt = self.tlsrpt(&s.tlsrpt, &hostname)?;

        Ok(Config {
            routing,
            threads,
            hostname,
            server_port,
            debug: app.debug,
            local_domains,
            local_listeners,
            maildir: app.maildir.path.clone(),
            nameservers,
            dns_timeout,
            dns_attempts,
            dnssec: s.dns.dnssec,
            dnssec_probe,
            connect_timeout,
            timeouts,
            max_connections,
            max_connections_per_domain,
            initial_connections_per_domain,
            sites,
            max_messages_per_connection,
            connection_cache_time,
            max_mx_addresses,
            retry_delay,
            max_backoff: Duration::from_secs(max_backoff),
            max_queue_lifetime,
            delay_warning,
            // At most MAX_BOUNCE_SIZE_LIMIT: fits any usize postman builds for.
            bounce_size_limit: usize::try_from(bounce_size_limit).unwrap_or(usize::MAX),
            log_format: s.log.format,
            log_file: s.log.file.clone(),
            metrics_interval,
            rescan_interval,
            disk_threads,
            ip_preference: s.dns.ip_preference,
            tls_mode: s.tls.mode.level(s.tls.verify),
            tls_discovery: Discovery {
                dane: s.tls.dane,
                mta_sts: s.tls.mta_sts,
            },
            tls_verify: s.tls.verify,
            tls_ca_file,
            tls_client,
            tls_policy,
            tlsrpt,
        })
    }

    /// A readable file holding at least one PEM certificate, each one a
    /// root the workers can trust (read as their rustls reads it): a file
    /// of something else (`/etc/passwd`, a key) would leave `verify = name`
    /// with the system roots alone, silently.
    fn ca_file(&self, path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        const KEY: &str = "tls.ca_file";
        let Some(path) = path else {
            return Ok(None);
        };
        let refuse =
            |reason: String| Err(self.invalid(KEY, format!("{:?}", path.display()), reason));
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return refuse("must be a file of PEM certificates".to_owned()),
            Err(e) => return refuse(format!("cannot read it: {e}")),
        }
        let certificates = match CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        {
            Ok(certificates) => certificates,
            Err(e) => return refuse(shorten(&format!("is not a file of PEM certificates: {e}"))),
        };
        if certificates.is_empty() {
            return refuse(
                "holds no certificate: it must be a file of PEM certificates \
                 (-----BEGIN CERTIFICATE----- blocks), the roots to trust"
                    .to_owned(),
            );
        }
        for (n, certificate) in certificates.iter().enumerate() {
            if let Err(e) = webpki::anchor_from_trusted_cert(certificate) {
                return refuse(format!(
                    "certificate {} of {} cannot be a trusted root: {e}",
                    n + 1,
                    certificates.len()
                ));
            }
        }
        Ok(Some(path.to_path_buf()))
    }

    /// `tls.client_cert` and `tls.client_key`: both or neither, each a
    /// readable PEM file (whether the key matches the certificate is
    /// checked where the TLS library loads it, at start).
    fn client_identity(
        &self,
        tls: &TlsSettings,
    ) -> Result<Option<std::sync::Arc<crate::tls::ClientIdentity>>, ConfigError> {
        let (cert, key) = match (&tls.client_cert, &tls.client_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(cert), None) => {
                return Err(self.invalid(
                    "tls.client_cert",
                    format!("{:?}", cert.display()),
                    "needs tls.client_key, the file of its private key",
                ))
            }
            (None, Some(key)) => {
                return Err(self.invalid(
                    "tls.client_key",
                    format!("{:?}", key.display()),
                    "needs tls.client_cert, the file of its certificate",
                ))
            }
        };
        match crate::tls::ClientIdentity::load(cert, key) {
            Ok(identity) => Ok(Some(std::sync::Arc::new(identity))),
            Err((is_key, why)) => {
                let (name, path) = if is_key {
                    ("tls.client_key", key)
                } else {
                    ("tls.client_cert", cert)
                };
                Err(self.invalid(name, format!("{:?}", path.display()), why.to_string()))
            }
        }
    }

    fn tls_policy(
        &self,
        policy: &BTreeMap<String, LevelWord>,
        verify: Option<TlsVerify>,
    ) -> Result<BTreeMap<String, Level>, ConfigError> {
        policy
            .iter()
            .map(|(domain, word)| {
                let lower = domain.trim_end_matches('.').to_ascii_lowercase();
                if valid_domain(&lower) {
                    Ok((lower, word.level(verify)))
                } else {
                    Err(self.invalid(
                        "tls.policy",
                        format!("{domain:?}"),
                        "each key must be a domain name in A-label form (xn--… for IDNs), \
                         such as tls.policy.\"example.com\" = \"verify\"",
                    ))
                }
            })
            .collect()
    }

    fn hostname(&self, name: &str) -> Result<String, ConfigError> {
        const KEY: &str = "application.hostname";
        if name.is_empty() {
            return Err(self.invalid(
                KEY,
                "\"\"",
                "must not be empty: set it to this host's fully qualified name",
            ));
        }
        if !valid_hostname(name) {
            return Err(self.invalid(
                KEY,
                format!("{name:?}"),
                "must be a host name (letters, digits, hyphens, dots) or an address literal \
                 such as [192.0.2.1], as EHLO sends it (RFC 5321 §4.1.1.1)",
            ));
        }
        Ok(name.to_owned())
    }

    fn local_domains(
        &self,
        domains: &[String],
        hostname: &str,
    ) -> Result<Vec<String>, ConfigError> {
        if domains.is_empty() {
            return Ok(vec![hostname.to_ascii_lowercase()]);
        }
        domains
            .iter()
            .map(|domain| {
                let lower = domain.to_ascii_lowercase();
                if valid_domain(&lower) {
                    Ok(lower)
                } else {
                    Err(self.invalid(
                        "application.local_domains",
                        format!("{domain:?}"),
                        "each must be a domain name in A-label form (xn--… for IDNs), no trailing dot",
                    ))
                }
            })
            .collect()
    }

    fn local_listeners(&self, listeners: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
        listeners
            .iter()
            .map(|listener| match listener.trim().parse::<SocketAddr>() {
                Ok(addr) if addr.port() != 0 => Ok(addr),
                _ => Err(self.invalid(
                    "application.local_listeners",
                    format!("{listener:?}"),
                    "each must be an IP address and port where this host's own mail server \
                     listens, such as \"192.0.2.25:25\", \"[2001:db8::25]:25\" or \"0.0.0.0:25\" \
                     (every address of this host)",
                )),
            })
            .collect()
    }

    /// The probe name fully qualified (`.` is the root), or `None` for
    /// no probe.
    fn dnssec_probe(&self, name: &str) -> Result<Option<String>, ConfigError> {
        let name = name.trim();
        if name.is_empty() {
            return Ok(None);
        }
        let bare = name.trim_end_matches('.').to_ascii_lowercase();
        if bare.is_empty() {
            return Ok(Some(".".to_owned()));
        }
        if !valid_domain(&bare) {
            return Err(self.invalid(
                "dns.dnssec_probe",
                format!("{name:?}"),
                "must be a domain name in a DNSSEC-signed zone, such as \".\" (the root), \
                 or \"\" for no probe",
            ));
        }
        Ok(Some(format!("{bare}.")))
    }

    fn nameservers(&self, servers: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
        servers
            .iter()
            .map(|server| {
                let server_trimmed = server.trim();
                server_trimmed
                    .parse::<SocketAddr>()
                    .or_else(|_| {
                        server_trimmed
                            .parse::<IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        self.invalid(
                            "dns.nameservers",
                            format!("{server:?}"),
                            "each must be an IP address with an optional port, such as \
                             \"192.0.2.53:53\" or \"[2001:db8::53]:53\"",
                        )
                    })
            })
            .collect()
    }
}

/// A host name of LDH labels (any case, single label allowed) or an address
/// literal `[192.0.2.1]` / `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn valid_hostname(name: &str) -> bool {
    if let Some(literal) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return match literal.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => {
                literal[5..].parse::<std::net::Ipv6Addr>().is_ok()
            }
            _ => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
    }
    valid_domain(&name.to_ascii_lowercase())
}
