//! A running postman's view of its sites, for `postman queue summary`:
//! `.OTHER_SERVERS/.status`, rewritten by the dispatcher every few seconds
//! while something changes (and now and then regardless, so a reader can
//! tell a live view from one a stopped postman left). Written through a
//! temporary dot file and a rename, never synced: it is a hint, not a
//! record, and a crash costs nothing but the next snapshot.
//!
//! A header, then one block per site, each opened by its `site:` line:
//!
//! ```text
//! postman-status: 1
//! written: 1764250300
//! pid: 4242
//! running: yes
//!
//! site: mx1.example.com,mx2.example.com
//! hosts: mx1.example.com mx2.example.com
//! rule: example.com
//! domains: a.example b.example
//! connections: 3
//! limit: 5
//! max_connections: 20
//! message_interval_ms: 200
//! rate: rule
//! held: backoff
//! held_until: 1764250400
//! failures: 2
//! reason: connect to mx1.example.com[192.0.2.1]:25: Connection refused
//! ```
//!
//! Parsing is pure and total: unknown keys are ignored, a number that
//! does not parse counts as absent, and the file is read with a size
//! limit.

use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backoff::MAX_UNTIL;
use super::state::one_line;
use super::tmpfile::create_tmp;
use super::Queue;

/// The file under `.OTHER_SERVERS` (a dot name: never a domain).
pub const STATUS_FILE: &str = ".status";

/// The most bytes of the file read; a snapshot is cut to fit when written.
pub const MAX_STATUS_FILE: u64 = 4 << 20;

/// The most domains listed per site (the rest are counted).
pub const MAX_STATUS_DOMAINS: usize = 1000;

/// Why a site takes no connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// No server could be reached.
    Backoff,
    /// It throttled this client, which waits.
    Throttled,
    /// `postman suspend`.
    Operator,
}

impl HoldKind {
    /// The word in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Backoff => "backoff",
            HoldKind::Throttled => "throttled",
            HoldKind::Operator => "operator",
        }
    }

    fn parse(text: &str) -> Option<HoldKind> {
        [HoldKind::Backoff, HoldKind::Throttled, HoldKind::Operator]
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }
}

/// A site's hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub kind: HoldKind,
    /// When it ends; `None`: at `postman resume`.
    pub until: Option<SystemTime>,
    /// Failed rounds in a row (a backoff).
    pub failures: u32,
    /// Why, one line.
    pub reason: String,
}

/// Where a site's message rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    /// Its shaping rule's `max_message_rate` (slowed by throttling).
    Rule,
    /// Learned from the server's throttling.
    Learned,
}

/// One site as the dispatcher sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteStatus {
    /// Its name (`route::site_name`, and a TLS mode when kept apart).
    pub name: String,
    /// Its MX host names.
    pub hosts: Vec<String>,
    /// The suffix of the shaping rule that applies; `None`: the defaults.
    pub rule: Option<String>,
    /// The domains routed to it (at most [`MAX_STATUS_DOMAINS`]).
    pub domains: Vec<String>,
    /// Domains routed to it beyond those listed.
    pub more_domains: usize,
    /// Connections open now.
    pub connections: usize,
    /// Connections it may have now (slow start and feedback).
    pub limit: usize,
    /// Its rule's most.
    pub max_connections: usize,
    /// The least time between two messages now, if limited.
    pub message_interval: Option<Duration>,
    /// Where that comes from.
    pub rate: Option<RateSource>,
    /// Why it takes no connection now, if so.
    pub held: Option<Held>,
}

/// The snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// When it was written.
    pub written: SystemTime,
    /// The process that wrote it.
    pub pid: u32,
    /// `false`: written by a postman as it stopped.
    pub running: bool,
    pub sites: Vec<SiteStatus>,
    /// Sites left out for room.
    pub more_sites: usize,
}

/// Why `.status` was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// No `postman-status: 1` and `written:` header.
    #[error("not a status snapshot postman writes (no postman-status: 1 and written: header)")]
    NoHeader,
}

fn unix(when: SystemTime) -> u64 {
    when.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn time(text: &str) -> Option<SystemTime> {
    let secs = text.parse::<u64>().ok().filter(|s| *s <= MAX_UNTIL)?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Renders one site's block.
fn render_site(out: &mut String, site: &SiteStatus) {
    out.push_str(&format!("\nsite: {}\n", one_line(&site.name)));
    out.push_str(&format!("hosts: {}\n", site.hosts.join(" ")));
    if let Some(rule) = &site.rule {
        out.push_str(&format!("rule: {}\n", one_line(rule)));
    }
    let listed = site.domains.len().min(MAX_STATUS_DOMAINS);
    out.push_str(&format!("domains: {}\n", site.domains[..listed].join(" ")));
    let more = site.more_domains + (site.domains.len() - listed);
    if more > 0 {
        out.push_str(&format!("more_domains: {more}\n"));
    }
    out.push_str(&format!(
        "connections: {}\nlimit: {}\nmax_connections: {}\n",
        site.connections, site.limit, site.max_connections
    ));
    if let Some(interval) = site.message_interval {
        out.push_str(&format!("message_interval_ms: {}\n", interval.as_millis()));
    }
    match site.rate {
        Some(RateSource::Rule) => out.push_str("rate: rule\n"),
        Some(RateSource::Learned) => out.push_str("rate: learned\n"),
        None => {}
    }
    if let Some(held) = &site.held {
        let until = held
            .until
            .map_or_else(|| "none".to_owned(), |t| unix(t).to_string());
        out.push_str(&format!(
            "held: {}\nheld_until: {until}\nfailures: {}\nreason: {}\n",
            held.kind.as_str(),
            held.failures,
            one_line(&held.reason)
        ));
    }
}

/// The contents of `.status`, at most [`MAX_STATUS_FILE`] bytes: the
/// sites that do not fit are left out and counted.
pub fn render_status(status: &Status) -> String {
    let mut out = format!(
        "postman-status: 1\nwritten: {}\npid: {}\nrunning: {}\n",
        unix(status.written),
        status.pid,
        if status.running { "yes" } else { "no" }
    );
    let room = MAX_STATUS_FILE as usize - 64;
    let mut left_out = status.more_sites;
    let mut block = String::new();
    for site in &status.sites {
        block.clear();
        render_site(&mut block, site);
        if out.len() + block.len() > room {
            left_out += 1;
            continue;
        }
        out.push_str(&block);
    }
    if left_out > 0 {
        // In the header's place would need a second pass; a reader takes
        // header keys wherever they are before the first site, and this
        // one after the last, so it is its own block.
        out.push_str(&format!("\nmore_sites: {left_out}\n"));
    }
    out
}

/// Parses `.status` (see the module documentation). Pure and total.
pub fn parse_status(bytes: &[u8]) -> Result<Status, StatusError> {
    let text = String::from_utf8_lossy(bytes);
    let mut version = false;
    let mut written = None;
    let mut status = Status {
        written: UNIX_EPOCH,
        pid: 0,
        running: false,
        sites: Vec::new(),
        more_sites: 0,
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key == "site" {
            status.sites.push(SiteStatus {
                name: one_line(value),
                ..SiteStatus::default()
            });
            continue;
        }
        if key == "more_sites" {
            status.more_sites = value.parse().unwrap_or(0);
            continue;
        }
        match status.sites.last_mut() {
            None => match key {
                "postman-status" => version = value == "1",
                "written" => written = time(value),
                "pid" => status.pid = value.parse().unwrap_or(0),
                "running" => status.running = value == "yes",
                _ => {}
            },
            Some(site) => site_key(site, key, value),
        }
    }
    match written {
        Some(written) if version => Ok(Status { written, ..status }),
        _ => Err(StatusError::NoHeader),
    }
}

/// One `key: value` line of a site's block.
fn site_key(site: &mut SiteStatus, key: &str, value: &str) {
    let held = || Held {
        kind: HoldKind::Backoff,
        until: None,
        failures: 0,
        reason: String::new(),
    };
    match key {
        "hosts" => site.hosts = words(value),
        "rule" => site.rule = Some(one_line(value)).filter(|r| !r.is_empty()),
        "domains" => site.domains = words(value),
        "more_domains" => site.more_domains = value.parse().unwrap_or(0),
        "connections" => site.connections = value.parse().unwrap_or(0),
        "limit" => site.limit = value.parse().unwrap_or(0),
        "max_connections" => site.max_connections = value.parse().unwrap_or(0),
        "message_interval_ms" => {
            site.message_interval = value.parse().ok().map(Duration::from_millis)
        }
        "rate" => {
            site.rate = match value {
                "rule" => Some(RateSource::Rule),
                "learned" => Some(RateSource::Learned),
                _ => None,
            }
        }
        "held" => {
            site.held = HoldKind::parse(value).map(|kind| Held {
                kind,
                ..site.held.take().unwrap_or_else(held)
            })
        }
        "held_until" => {
            if let Some(h) = &mut site.held {
                h.until = time(value);
            }
        }
        "failures" => {
            if let Some(h) = &mut site.held {
                h.failures = value.parse().unwrap_or(0);
            }
        }
        "reason" => {
            if let Some(h) = &mut site.held {
                h.reason = one_line(value);
            }
        }
        _ => {}
    }
}

/// A message interval as a rate for people: `20/s`, `2.5/s`, `300/m`,
/// `5000/h` (the largest unit that keeps the count at least 1).
pub fn rate_text(interval: Duration) -> String {
    let secs = interval.as_secs_f64();
    if secs <= 0.0 {
        return "unlimited".to_owned();
    }
    let (count, unit) = if secs <= 1.0 {
        (1.0 / secs, "s")
    } else if secs <= 60.0 {
        (60.0 / secs, "m")
    } else {
        (3600.0 / secs, "h")
    };
    let text = format!("{count:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}/{unit}")
}

/// Reads `.status`; `Ok(None)` when there is none.
pub fn read_status(queue: &Queue) -> io::Result<Option<Status>> {
    let remote = match queue.remote() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    let Some(bytes) = remote.read_small(STATUS_FILE, MAX_STATUS_FILE)? else {
        return Ok(None);
    };
    parse_status(&bytes)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes `.status` through a temporary dot file beside it and a rename
/// (not synced: see the module documentation).
pub fn write_status(queue: &Queue, text: &str) -> io::Result<()> {
    let remote = queue.remote()?;
    let (tmp, mut file) = create_tmp(remote, STATUS_FILE)?;
    let result = file
        .write_all(text.as_bytes())
        .and_then(|()| remote.rename(&tmp, remote, STATUS_FILE));
    if result.is_err() {
        let _ = remote.remove_file(&tmp);
    }
    result
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
