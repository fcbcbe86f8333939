//! Sending a day's TLS reports: the journal read back and aggregated per
//! policy domain, each domain's `_smtp._tls` record looked up, and each
//! report mailed (DKIM-signed, queued like any message) or POSTed, with
//! what was sent noted so that nothing goes twice.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postman::config::{Config, Tlsrpt};
use postman::dkim::Signer;
use postman::mta_sts::http::End;
use postman::queue::admin::{self, SenderParams};
use postman::queue::dirfd::QueueDir;
use postman::queue::{Layout, Queue};
use postman::tlsrpt::outbox::{self, NO_RUA};
use postman::tlsrpt::{
    aggregate, decode, signed_mail, Day, Mail, Record, RecordError, Report, Rua,
};
use ring::rand::SystemRandom;
use rustls::ClientConfig;
use slog::{info, warn, Logger};

use crate::https::{exchange, Exchange};
use crate::resolver::BlockingLookups;

/// The largest journal read back (some hundred bytes a session: millions
/// of sessions).
const MAX_JOURNAL: u64 = 1 << 30;

/// How long one report POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(60);

/// What sends the reports: lookups, the queue for mailed ones, HTTPS for
/// posted ones.
pub struct Sender {
    lookups: BlockingLookups,
    queue: Queue,
    tlsrpt: Tlsrpt,
    hostname: String,
    ca_file: Option<PathBuf>,
    https: OnceLock<Result<Arc<ClientConfig>, String>>,
    serial: u64,
    log: Logger,
}

/// What became of one report destination.
pub struct Outcome {
    pub domain: String,
    pub destination: String,
    /// Sent, or why not.
    pub result: Result<(), String>,
}

impl Sender {
    pub fn new(config: &Config, tlsrpt: Tlsrpt, log: Logger) -> anyhow::Result<Sender> {
        let queue = Queue::open(Layout::new(config.maildir.clone()))?;
        Ok(Sender {
            lookups: BlockingLookups::new(config)?,
            queue,
            tlsrpt,
            hostname: config.hostname.clone(),
            ca_file: config.tls_ca_file.clone(),
            https: OnceLock::new(),
            serial: 0,
            log,
        })
    }

    /// The reports of `day` as its journal has them now.
    fn reports(&self, dir: &QueueDir, day: Day) -> Vec<Report> {
        let bytes = match dir.read_small(outbox::journal_name(day), MAX_JOURNAL) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Vec::new(),
            Err(e) => {
                warn!(self.log, "cannot read the TLS report journal"; "day" => %day, "error" => %e);
                return Vec::new();
            }
        };
        let journal = decode(&bytes);
        if !journal.bad_lines.is_empty() {
            warn!(self.log, "TLS report journal lines left out"; "day" => %day,
                "lines" => format!("{:?}", journal.bad_lines));
        }
        aggregate(day, &journal.sessions, &self.tlsrpt.submitter)
    }

    /// Sends what is not sent yet of `day`'s reports. A day that is over
    /// has each destination noted when sent, and is closed when nothing is
    /// left; `early` (a day not over, sent by hand) notes nothing, so that
    /// the whole day's report still goes out after its end.
    pub fn send_day(&mut self, dir: &QueueDir, day: Day, early: bool) -> Vec<Outcome> {
        let sent_name = outbox::sent_name(day);
        let sent = match dir.read_small(&sent_name, MAX_JOURNAL) {
            Ok(bytes) => outbox::sent_set(&bytes.unwrap_or_default()),
            Err(e) => {
                warn!(self.log, "cannot read what TLS reports were sent"; "day" => %day,
                    "error" => %e);
                return Vec::new();
            }
        };
        let mut outcomes = Vec::new();
        let log = self.log.clone();
        let note = |domain: &str, destination: &str| {
            if early {
                return;
            }
            let noted = dir.open_append(&sent_name, 0o600).and_then(|mut file| {
                std::io::Write::write_all(&mut file, &outbox::sent_line(domain, destination))?;
                file.sync_data()
            });
            if let Err(e) = noted {
                warn!(log, "cannot note a TLS report as sent"; "day" => %day, "error" => %e);
            }
        };
        for report in self.reports(dir, day) {
            let domain = report.policy_domain.clone();
            if sent.contains(&(domain.clone(), NO_RUA.to_owned())) {
                continue;
            }
            let record = match self.record(&domain) {
                Ok(Ok(record)) => record,
                Err(why) => {
                    outcomes.push(Outcome {
                        domain,
                        destination: NO_RUA.to_owned(),
                        result: Err(why),
                    });
                    continue;
                }
                Ok(Err(why)) => {
                    info!(self.log, "no TLS report wanted"; "day" => %day, "domain" => &domain,
                        "reason" => %why);
                    note(&domain, NO_RUA);
                    continue;
                }
            };
            for rua in &record.rua {
                let destination = rua.to_string();
                if sent.contains(&(domain.clone(), destination.clone())) {
                    continue;
                }
                let result = match rua {
                    Rua::Mailto(address) => self.mail(&report, address),
                    Rua::Https(uri) => self.post(&report, uri),
                };
                match &result {
                    Ok(()) => {
                        info!(self.log, "TLS report sent"; "day" => %day, "domain" => &domain,
                            "to" => &destination, "report_id" => &report.report_id);
                        note(&domain, &destination);
                    }
                    Err(why) => warn!(self.log, "TLS report not sent; tried again later";
                        "day" => %day, "domain" => &domain, "to" => &destination,
                        "reason" => why),
                }
                outcomes.push(Outcome {
                    domain: domain.clone(),
                    destination,
                    result,
                });
            }
        }
        if !early && outcomes.iter().all(|o| o.result.is_ok()) {
            close_day(dir, day, &self.log);
        }
        outcomes
    }

    /// `domain`'s `_smtp._tls` record, or why it asks for no reports;
    /// `Err` when the lookup failed (tried again at the next tick).
    fn record(&self, domain: &str) -> Result<Result<Record, RecordError>, String> {
        let texts = self
            .lookups
            .txt(&format!("_smtp._tls.{domain}"))
            .map_err(|why| format!("_smtp._tls lookup failed: {why}"))?;
        Ok(Record::from_txt(&texts))
    }

    /// The policy domains of `day` whose reports are not all sent.
    pub fn pending(&self, dir: &QueueDir, day: Day) -> Vec<String> {
        let sent = dir
            .read_small(outbox::sent_name(day), MAX_JOURNAL)
            .ok()
            .flatten()
            .map(|bytes| outbox::sent_set(&bytes))
            .unwrap_or_default();
        self.reports(dir, day)
            .into_iter()
            .map(|r| r.policy_domain)
            .filter(|d| !sent.iter().any(|(domain, _)| domain == d))
            .collect()
    }

    /// Queues `report` to `address`, signed with the DKIM key.
    fn mail(&mut self, report: &Report, address: &str) -> Result<(), String> {
        let recipient = admin::parse_recipient(address).map_err(|e| e.to_string())?;
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.serial += 1;
        let token = format!("tlsrpt.{secs}.{}.{}", std::process::id(), self.serial);
        let mail = Mail {
            report,
            submitter: &self.tlsrpt.submitter,
            from: &self.tlsrpt.from,
            to: &recipient,
            date: now,
            message_id: &token,
        };
        let signer = Signer {
            domain: &self.tlsrpt.submitter.domain,
            selector: &self.tlsrpt.dkim.selector,
            key: &self.tlsrpt.dkim.key,
        };
        let signed = signed_mail(&mail, &signer, &SystemRandom::new())
            .map_err(|e| format!("cannot sign the report: {e}"))?;
        let pid = std::process::id();
        let (hostname, serial) = (&self.hostname, &mut self.serial);
        admin::enqueue(
            &self.queue,
            &self.tlsrpt.from,
            &[recipient],
            &SenderParams::default(),
            &mut signed.as_slice(),
            now,
            || {
                *serial += 1;
                admin::unique_name(SystemTime::now(), pid, *serial, hostname)
            },
        )
        .map(|_| ())
        .map_err(|e| format!("cannot queue the report: {e}"))
    }

    /// POSTs `report`, gzipped, to `uri` (RFC 8460 §5.4); a 2xx answer is
    /// success.
    fn post(&self, report: &Report, uri: &str) -> Result<(), String> {
        let (host, port, path) = split_https(uri).ok_or_else(|| format!("unusable URI {uri}"))?;
        let addrs = self.lookups.addrs(host)?;
        let config = self
            .https
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                crate::worker::tls::checked_config(&provider, self.ca_file.clone())
                    .map(|checked| checked.config)
                    .map_err(|e| e.to_string())
            })
            .clone()?;
        let body = report.gzip();
        let mut request = format!(
            "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: application/tlsrpt+gzip\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let (response, _) = exchange(
            &Exchange {
                name: host.to_owned(),
                addrs,
                port,
                request,
                max_response: 64 * 1024,
                deadline: Instant::now() + POST_TIMEOUT,
            },
            config,
            |bytes, end| end != End::Open || bytes.windows(2).any(|w| w == b"\r\n"),
        )
        .map_err(|e| e.to_string())?;
        match status(&response) {
            Some(code) if (200..300).contains(&code) => Ok(()),
            Some(code) => Err(format!("{uri} answered {code}")),
            None => Err(format!("{uri} gave no HTTP status line")),
        }
    }
}

/// The host, port and path of an `https:` URI; `None` for one with user
/// information or an address literal, which postman does not post to.
fn split_https(uri: &str) -> Option<(&str, u16, String)> {
    let rest = uri.strip_prefix("https://")?;
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) if rest[at..].starts_with('/') => (&rest[..at], rest[at..].to_owned()),
        Some(at) => (&rest[..at], format!("/{}", &rest[at..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() || authority.contains(['@', '[']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (authority, 443),
    };
    Some((host, port, path))
}

/// The status code of an HTTP response's first line.
fn status(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

/// `day` is done: its journal and the note of what was sent go.
pub fn close_day(dir: &QueueDir, day: Day, log: &Logger) {
    for name in [outbox::journal_name(day), outbox::sent_name(day)] {
        match dir.remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(log, "cannot remove a TLS report file"; "file" => &name, "error" => %e),
        }
    }
    info!(log, "TLS reports of the day done"; "day" => %day);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_uris_split_into_host_port_and_path() {
        let cases = [
            (
                "https://r.example/tlsrpt",
                Some(("r.example", 443, "/tlsrpt")),
            ),
            (
                "https://r.example:8443/a/b?x=1",
                Some(("r.example", 8443, "/a/b?x=1")),
            ),
            ("https://r.example", Some(("r.example", 443, "/"))),
            ("https://r.example?x", Some(("r.example", 443, "/?x"))),
            ("https://u@r.example/", None),
            ("https://[2001:db8::1]/", None),
            ("https://r.example:x/", None),
            ("http://r.example/", None),
        ];
        for (uri, want) in cases {
            let got = split_https(uri);
            let got = got.as_ref().map(|(h, p, path)| (*h, *p, path.as_str()));
            assert_eq!(got, want, "{uri}");
        }
    }

    #[test]
    fn only_a_status_line_gives_a_status() {
        assert_eq!(status(b"HTTP/1.1 201 Created\r\n\r\n"), Some(201));
        assert_eq!(status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(status(b"SSH-2.0\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 2000 x\r\n"), None);
    }
}
