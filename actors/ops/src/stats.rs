//! `postman stats [LOGFILE|-] [--follow]`: a one-screen summary of a JSON
//! log stream (`log.format = "json"`): throughput over the stream's time
//! span and its last minute, delivery records by status, the deferral rate
//! of the domains deferred most, the commonest errors (reply texts with
//! addresses, hosts' addresses and ids masked, so that one cause is one
//! line), and the latest `metrics` record of each actor. Times come from
//! the records' `ts`, not the clock, so an old log reads the same as a live
//! one. With `--follow` the file is read as it grows (and reopened when
//! log rotation replaces it) and the summary printed again every few
//! seconds, until interrupted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal as _, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::{Map, Value};

/// The window of the "last minute" throughput, in seconds.
const RECENT: f64 = 60.0;
/// How many domains and errors are shown.
const TOP: usize = 10;
/// The longest error text shown, in characters.
const ERROR_WIDTH: usize = 110;
/// The width metrics lines are wrapped at.
const METRICS_WIDTH: usize = 100;
/// Fields of a metrics record that identify it rather than measure.
const METRICS_SKIP: [&str; 6] = ["msg", "level", "ts", "actor", "worker", "pid"];

/// How `postman stats` runs.
#[derive(Debug, Clone)]
pub struct StatsOptions {
    /// The log file; `None` or `-` reads standard input.
    pub input: Option<PathBuf>,
    /// Keep reading the file as it grows and print again every `interval`.
    pub follow: bool,
    /// Seconds between two summaries with `follow`.
    pub interval: Duration,
}

/// Runs `postman stats`.
pub fn stats(options: &StatsOptions) -> anyhow::Result<()> {
    let file = options.input.as_deref().filter(|p| *p != Path::new("-"));
    let mut stats = Stats::default();
    let Some(path) = file else {
        if options.follow {
            bail!("--follow needs a log file, not standard input");
        }
        stats
            .read(io::stdin().lock())
            .context("cannot read standard input")?;
        return super::print(&stats.render());
    };
    if !options.follow {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        stats
            .read(BufReader::new(file))
            .with_context(|| format!("cannot read {}", path.display()))?;
        return super::print(&stats.render());
    }
    follow(path, &mut stats, options.interval)
}

/// Reads `path` as it grows, printing the summary every `interval`.
fn follow(path: &Path, stats: &mut Stats, interval: Duration) -> anyhow::Result<()> {
    let open =
        |path: &Path| File::open(path).with_context(|| format!("cannot open {}", path.display()));
    let mut file = open(path)?;
    let mut offset = 0u64;
    let mut partial = Vec::new();
    let terminal = io::stdout().is_terminal();
    loop {
        // Log rotation: a truncated file is read again from its start, a
        // replaced one (another inode at the path) is reopened.
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < offset {
            offset = 0;
            partial.clear();
        }
        file.seek(SeekFrom::Start(offset))?;
        let mut chunk = Vec::new();
        offset += file.read_to_end(&mut chunk)? as u64;
        partial.extend_from_slice(&chunk);
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            let complete: Vec<u8> = partial.drain(..=end).collect();
            stats.read(&complete[..])?;
        }
        let mut text = String::new();
        if terminal {
            text.push_str("\x1b[H\x1b[2J");
        } else {
            text.push_str("----\n");
        }
        text.push_str(&stats.render());
        super::print(&text)?;
        std::thread::sleep(interval);
        let replaced = match (std::fs::metadata(path), file.metadata()) {
            (Ok(now), Ok(open)) => now.ino() != open.ino() || now.dev() != open.dev(),
            _ => false,
        };
        if replaced {
            if let Ok(new) = open(path) {
                // Finish the old file first: the writer may have added to
                // it before it reopened.
                let mut rest = Vec::new();
                file.seek(SeekFrom::Start(offset))?;
                file.read_to_end(&mut rest)?;
                partial.extend_from_slice(&rest);
                if !partial.is_empty() && !partial.ends_with(b"\n") {
                    partial.push(b'\n');
                }
                stats.read(&partial[..])?;
                partial.clear();
                file = new;
                offset = 0;
            }
        }
    }
}

/// Delivery records of one domain, by status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DomainCounts {
    sent: u64,
    deferred: u64,
    bounced: u64,
}

impl DomainCounts {
    fn total(&self) -> u64 {
        self.sent + self.deferred + self.bounced
    }
}

/// One group of similar errors.
#[derive(Debug, Default, Clone)]
struct ErrorGroup {
    deferred: u64,
    bounced: u64,
}

/// What has been read of a log stream so far.
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines read, and those that were not JSON objects.
    lines: u64,
    unparsed: u64,
    /// The first and last record time seen, unix seconds.
    first_ts: Option<f64>,
    last_ts: Option<f64>,
    /// Delivery records by status (`sent`, `deferred`, `bounced`, other).
    statuses: BTreeMap<String, u64>,
    /// Delivery records of the last [`RECENT`] seconds: (time, sent?).
    recent: VecDeque<(f64, bool)>,
    domains: HashMap<String, DomainCounts>,
    errors: HashMap<String, ErrorGroup>,
    /// The latest metrics record per actor (`dispatcher`, `worker 0`, …).
    metrics: BTreeMap<String, (Option<f64>, Map<String, Value>)>,
    /// Records at level ERRO or CRIT, and the latest one's message.
    logged_errors: u64,
    last_logged_error: Option<String>,
}

impl Stats {
    /// Reads every line of `input`.
    pub fn read(&mut self, input: impl BufRead) -> io::Result<()> {
        for line in input.split(b'\n') {
            let line = line?;
            self.feed(&String::from_utf8_lossy(&line));
        }
        Ok(())
    }

    /// Takes one line of the stream into account.
    pub fn feed(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        self.lines += 1;
        let Ok(Value::Object(record)) = serde_json::from_str::<Value>(line) else {
            self.unparsed += 1;
            return;
        };
        let ts = record.get("ts").and_then(Value::as_str).and_then(parse_ts);
        if let Some(ts) = ts {
            self.first_ts = Some(self.first_ts.map_or(ts, |f| f.min(ts)));
            self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
        }
        if matches!(
            record.get("level").and_then(Value::as_str),
            Some("ERRO" | "CRIT")
        ) {
            self.logged_errors += 1;
            self.last_logged_error = Some(describe_record(&record));
        }
        match record.get("msg").and_then(Value::as_str) {
            Some("delivery") => self.delivery(&record, ts),
            Some("metrics") => {
                let actor = actor_key(&record);
                let fields = record
                    .into_iter()
                    .filter(|(k, _)| !METRICS_SKIP.contains(&k.as_str()))
                    .collect();
                self.metrics.insert(actor, (ts, fields));
            }
            _ => {}
        }
    }

    fn delivery(&mut self, record: &Map<String, Value>, ts: Option<f64>) {
        let text = |key: &str| record.get(key).and_then(Value::as_str).unwrap_or("");
        let status = text("status");
        *self.statuses.entry(status.to_owned()).or_default() += 1;
        let domain = match text("domain") {
            "" => text("to").rsplit_once('@').map_or("?", |(_, d)| d),
            d => d,
        };
        let counts = self.domains.entry(domain.to_ascii_lowercase()).or_default();
        match status {
            "sent" => counts.sent += 1,
            "deferred" => counts.deferred += 1,
            "bounced" => counts.bounced += 1,
            _ => {}
        }
        if matches!(status, "deferred" | "bounced") {
            let group = self
                .errors
                .entry(normalize_reply(text("reply")))
                .or_default();
            if status == "deferred" {
                group.deferred += 1;
            } else {
                group.bounced += 1;
            }
        }
        if let Some(ts) = ts {
            self.recent.push_back((ts, status == "sent"));
            let cutoff = self.last_ts.unwrap_or(ts) - RECENT;
            while self.recent.front().is_some_and(|(t, _)| *t < cutoff) {
                self.recent.pop_front();
            }
        }
    }

    fn deliveries(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// The summary, one screen of text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let span = match (self.first_ts, self.last_ts) {
            (Some(first), Some(last)) => last - first,
            _ => 0.0,
        };
        self.render_header(&mut out, span);
        self.render_throughput(&mut out, span);
        self.render_domains(&mut out);
        self.render_errors(&mut out);
        self.render_metrics(&mut out);
        out
    }

    /// What was read, and the span of time it covers.
    fn render_header(&self, out: &mut String, span: f64) {
        let _ = write!(
            out,
            "postman stats: {} read",
            super::format::count(self.lines, "line")
        );
        if self.unparsed > 0 {
            let _ = write!(out, " ({} not JSON, skipped)", self.unparsed);
        }
        if let (Some(first), Some(last)) = (self.first_ts, self.last_ts) {
            let _ = write!(
                out,
                ", {} to {} ({})",
                ts_text(first),
                ts_text(last),
                secs_text(span)
            );
        }
        out.push('\n');
    }

    /// Deliveries per second, over the whole span and the last minute, and
    /// the count of each status.
    fn render_throughput(&self, out: &mut String, span: f64) {
        let sent = self.statuses.get("sent").copied().unwrap_or(0);
        let total = self.deliveries();
        let _ = writeln!(
            out,
            "\nThroughput (delivery records: one per recipient and attempt)"
        );
        let _ = writeln!(out, "  {:<13} {:>10} {:>12}", "", "sent/s", "attempts/s");
        let per = |n: u64, secs: f64| n as f64 / secs.max(1.0);
        let _ = writeln!(
            out,
            "  {:<13} {:>10.2} {:>12.2}",
            "whole span",
            per(sent, span),
            per(total, span)
        );
        let recent_sent = self.recent.iter().filter(|(_, s)| *s).count() as u64;
        let window = span.min(RECENT);
        let _ = writeln!(
            out,
            "  {:<13} {:>10.2} {:>12.2}",
            "last minute",
            per(recent_sent, window),
            per(self.recent.len() as u64, window)
        );

        let _ = write!(out, "\nDeliveries: {total}");
        for status in ["sent", "deferred", "bounced"] {
            let _ = write!(
                out,
                "  {status} {}",
                self.statuses.get(status).copied().unwrap_or(0)
            );
        }
        for (status, n) in &self.statuses {
            if !matches!(status.as_str(), "sent" | "deferred" | "bounced") {
                let _ = write!(out, "  {status:?} {n}");
            }
        }
        out.push('\n');
    }

    /// The domains with the most deferrals.
    fn render_domains(&self, out: &mut String) {
        let mut domains: Vec<(&String, &DomainCounts)> = self
            .domains
            .iter()
            .filter(|(_, c)| c.deferred > 0)
            .collect();
        domains.sort_by(|a, b| b.1.deferred.cmp(&a.1.deferred).then_with(|| a.0.cmp(b.0)));
        if !domains.is_empty() {
            let width = domains
                .iter()
                .take(TOP)
                .map(|(d, _)| d.len())
                .max()
                .unwrap_or(6)
                .max(6);
            let _ = writeln!(out, "\nDeferral rate by domain (top {TOP})");
            let _ = writeln!(
                out,
                "  {:<width$} {:>9} {:>9} {:>7} {:>8} {:>7}",
                "DOMAIN", "ATTEMPTS", "DEFERRED", "RATE", "BOUNCED", "SENT"
            );
            for (domain, c) in domains.iter().take(TOP) {
                let rate = 100.0 * c.deferred as f64 / c.total().max(1) as f64;
                let _ = writeln!(
                    out,
                    "  {domain:<width$} {:>9} {:>9} {:>6.1}% {:>8} {:>7}",
                    c.total(),
                    c.deferred,
                    rate,
                    c.bounced,
                    c.sent
                );
            }
        }
    }

    /// The errors seen most.
    fn render_errors(&self, out: &mut String) {
        let mut errors: Vec<(&String, &ErrorGroup)> = self.errors.iter().collect();
        errors.sort_by(|a, b| {
            (b.1.deferred + b.1.bounced)
                .cmp(&(a.1.deferred + a.1.bounced))
                .then_with(|| a.0.cmp(b.0))
        });
        if !errors.is_empty() {
            let _ = writeln!(out, "\nTop errors (top {TOP}; deferred/bounced)");
            for (text, g) in errors.iter().take(TOP) {
                let _ = writeln!(
                    out,
                    "  {:>7} {:>6}/{:<6} {}",
                    g.deferred + g.bounced,
                    g.deferred,
                    g.bounced,
                    cut(text, ERROR_WIDTH)
                );
            }
        }
    }

    /// Each actor's latest metrics record, and the error records.
    fn render_metrics(&self, out: &mut String) {
        if !self.metrics.is_empty() {
            let _ = writeln!(out, "\nLatest metrics per actor");
            for (actor, (ts, fields)) in &self.metrics {
                let when = ts.map(ts_text).unwrap_or_else(|| "?".to_owned());
                let values: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        v => format!("{k}={v}"),
                    })
                    .collect();
                let _ = write!(out, "  {actor:<11} {when}");
                let mut width = METRICS_WIDTH;
                for value in values {
                    if width + 1 + value.len() > METRICS_WIDTH {
                        out.push_str("\n    ");
                        width = 4;
                    } else {
                        out.push(' ');
                        width += 1;
                    }
                    width += value.len();
                    out.push_str(&value);
                }
                out.push('\n');
            }
        }
        if self.logged_errors > 0 {
            let _ = writeln!(
                out,
                "\n{} logged; the latest: {}",
                super::format::count(self.logged_errors, "error record"),
                self.last_logged_error.as_deref().unwrap_or("?")
            );
        }
    }
}

/// `dispatcher`, `worker 0`, …, or `?` without an `actor` field.
fn actor_key(record: &Map<String, Value>) -> String {
    let actor = record.get("actor").and_then(Value::as_str).unwrap_or("?");
    match record.get("worker") {
        Some(Value::Number(n)) => format!("{actor} {n}"),
        Some(Value::String(s)) => format!("{actor} {s}"),
        _ => actor.to_owned(),
    }
}

/// `msg` and the `error` field of a record, for the latest logged error.
fn describe_record(record: &Map<String, Value>) -> String {
    let msg = record.get("msg").and_then(Value::as_str).unwrap_or("?");
    match record.get("error").and_then(Value::as_str) {
        Some(error) => cut(&format!("{msg}: {error}"), ERROR_WIDTH),
        None => msg.to_owned(),
    }
}

/// An RFC 3339 time (slog-json's `ts`) as unix seconds.
fn parse_ts(text: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0)
}

fn ts_text(ts: f64) -> String {
    match chrono::DateTime::from_timestamp(ts.floor() as i64, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("@{ts}"),
    }
}

fn secs_text(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        let whole = secs as u64;
        format!("{}m{}s", whole / 60, whole % 60)
    } else {
        super::format::age(Duration::from_secs(secs as u64))
    }
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A reply text with what varies between messages of one cause masked:
/// addresses (`<…>` and words with `@`) become `<*>`, bracketed IP
/// addresses `[*]`, and words that look like ids (six or more characters
/// holding a digit, other than status codes such as `4.7.1`) `*`.
pub fn normalize_reply(reply: &str) -> String {
    let mut words = Vec::new();
    for word in reply.split_whitespace() {
        words.push(mask_word(word));
    }
    let text = words.join(" ");
    if text.is_empty() {
        "(no reply text)".to_owned()
    } else {
        text
    }
}

fn mask_word(word: &str) -> String {
    // Keep leading and trailing punctuation around what is masked.
    let core_start = word.find(|c: char| c.is_alphanumeric() || "<[".contains(c));
    let Some(start) = core_start else {
        return word.to_owned();
    };
    let end = word
        .rfind(|c: char| c.is_alphanumeric() || ">]".contains(c))
        .map_or(word.len(), |e| {
            e + word[e..].chars().next().map_or(1, char::len_utf8)
        });
    let (head, core, tail) = (
        &word[..start],
        &word[start..end.max(start)],
        &word[end.max(start)..],
    );
    let masked = if core.contains('@') {
        "<*>".to_owned()
    } else if let Some(bracket) = core.find('[') {
        // host[192.0.2.1]:25 → host[*]:25
        match core[bracket..].find(']') {
            Some(close) => format!("{}[*]{}", &core[..bracket], &core[bracket + close + 1..]),
            None => core.to_owned(),
        }
    } else if looks_like_id(core) {
        "*".to_owned()
    } else {
        core.to_owned()
    };
    format!("{head}{masked}{tail}")
}

fn looks_like_id(word: &str) -> bool {
    let is_status = word.split('.').count() == 3
        && word
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    word.chars().count() >= 6 && word.bytes().any(|b| b.is_ascii_digit()) && !is_status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_reply_table() {
        let cases: &[(&str, &str)] = &[
            (
                "host mx1.d1.test[127.1.2.3]:2525 said: 451 4.7.1 <bob@d1.test>: try later (in reply to RCPT TO command)",
                "host mx1.d1.test[*]:2525 said: 451 4.7.1 <*>: try later (in reply to RCPT TO command)",
            ),
            (
                "550 5.1.1 user@d.test no such user",
                "550 5.1.1 <*> no such user",
            ),
            ("250 2.0.0 Ok: queued as 4F3A2B1C9D", "250 2.0.0 Ok: queued as *"),
            ("421 4.7.0 id=a1b2c3d4e5 rate limited", "421 4.7.0 * rate limited"),
            ("connect to [192.0.2.1]:25: Connection refused", "connect to [*]:25: Connection refused"),
            ("", "(no reply text)"),
            ("452 4.5.3 too many recipients", "452 4.5.3 too many recipients"),
        ];
        for (reply, want) in cases {
            assert_eq!(normalize_reply(reply), *want, "normalize_reply({reply:?})");
        }
    }

    fn line(ts: &str, status: &str, domain: &str, reply: &str) -> String {
        serde_json::json!({
            "msg": "delivery", "level": "INFO", "ts": ts, "queue_id": "q", "domain": domain,
            "to": format!("u@{domain}"), "relay": "none", "delay": 0.1, "status": status,
            "code": 0, "dsn": "4.0.0", "reply": reply,
        })
        .to_string()
    }

    #[test]
    fn a_stream_is_summarised() {
        let mut stats = Stats::default();
        let mut text = String::new();
        for i in 0..100 {
            let ts = format!("2025-11-27T13:{:02}:{:02}.000+00:00", i / 60, i % 60);
            text.push_str(&line(&ts, "sent", "ok.test", "250 ok"));
            text.push('\n');
        }
        for (i, who) in ["<a@slow.test>", "<b@slow.test>", "<c@slow.test>"]
            .iter()
            .enumerate()
        {
            let ts = format!("2025-11-27T13:01:{:02}.500+00:00", 40 + i);
            text.push_str(&line(
                &ts,
                "deferred",
                "slow.test",
                &format!("451 4.7.1 {who} greylisted"),
            ));
            text.push('\n');
        }
        text.push_str(&line(
            "2025-11-27T13:01:39.000+00:00",
            "bounced",
            "ok.test",
            "550 5.1.1 no such user",
        ));
        text.push('\n');
        text.push_str("not json\n");
        text.push_str(r#"{"msg":"metrics","level":"INFO","ts":"2025-11-27T13:01:00+00:00","actor":"worker","worker":1,"pid":7,"sent":99,"connections":2}"#);
        text.push('\n');
        text.push_str(r#"{"msg":"metrics","level":"INFO","ts":"2025-11-27T13:01:30+00:00","actor":"worker","worker":1,"pid":7,"sent":100,"connections":0}"#);
        text.push('\n');
        text.push_str(r#"{"msg":"cannot claim queue file","level":"ERRO","ts":"2025-11-27T13:01:30+00:00","error":"Permission denied"}"#);
        text.push('\n');
        stats.read(text.as_bytes()).unwrap();
        let out = stats.render();
        for want in [
            "postman stats: 108 lines read (1 not JSON, skipped), 2025-11-27 13:00:00 UTC to 2025-11-27 13:01:42 UTC (1m42s)",
            "  whole span          0.98         1.01\n",
            "Deliveries: 104  sent 100  deferred 3  bounced 1\n",
            "  slow.test         3         3  100.0%        0       0\n",
            "        3      3/0      451 4.7.1 <*> greylisted\n",
            "        1      0/1      550 5.1.1 no such user\n",
            "  worker 1    2025-11-27 13:01:30 UTC\n    connections=0 sent=100\n",
            "1 error record logged; the latest: cannot claim queue file: Permission denied\n",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        // The last minute, 13:00:42.5 to 13:01:42.5, holds sent records
        // 43..=99 (57), 3 deferred and 1 bounced.
        assert!(
            out.contains("  last minute         0.95         1.02\n"),
            "{out}"
        );
    }
}
