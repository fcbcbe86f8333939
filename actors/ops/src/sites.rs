//! `postman queue summary`: the queue by site (KumoMTA's `kcli
//! queue-summary` groups by site the same way), from the counts of the
//! queue files, the running postman's snapshot (`.OTHER_SERVERS/.status`:
//! connections, limit, rate, hold), the site backoffs on disk and the
//! operator's suspensions. The grouping is `queue::admin::group_by_site`;
//! here is what it looks like, as text or JSON lines.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use postman::queue::admin::{DomainSummary, SiteGroup, SiteHold};
use postman::queue::{rate_text, HoldKind, RateSource, Status, Suspension, Target};
use serde_json::{json, Value};

use super::control::until_text;
use super::format::{age, count, opt_unix, size};

/// A snapshot older than this, from a postman that did not say it
/// stopped, is not a live view: the daemon rewrites it at least every
/// 30 s.
pub const STALE: Duration = Duration::from_secs(90);

/// What the summary says of the snapshot it shows.
pub fn snapshot_note(status: Option<&Status>, now: SystemTime) -> String {
    let Some(status) = status else {
        return "No postman has recorded its sites here yet: domains are grouped by the site \
                backoffs on disk."
            .to_owned();
    };
    let ago = age(now.duration_since(status.written).unwrap_or_default());
    let pid = status.pid;
    if !status.running {
        format!("Sites as postman (pid {pid}) left them when it stopped, {ago} ago.")
    } else if now.duration_since(status.written).unwrap_or_default() > STALE {
        format!(
            "Sites as postman (pid {pid}) saw them {ago} ago; it has not updated them since: is it running?"
        )
    } else {
        format!("Sites as the running postman (pid {pid}) saw them {ago} ago.")
    }
}

/// `: reason`, or nothing.
fn reason(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// What holds a site, in words.
pub fn hold_text(hold: &SiteHold, now: SystemTime) -> String {
    match hold {
        SiteHold::Suspended(s) => suspended_text(s, now),
        SiteHold::Held(h) => {
            let until = until_text(h.until, now);
            match h.kind {
                HoldKind::Backoff => format!(
                    "backing off {until}, {}{}",
                    count(u64::from(h.failures), "failed round"),
                    reason(&h.reason)
                ),
                HoldKind::Throttled => format!("throttled, waits {until}{}", reason(&h.reason)),
                HoldKind::Operator => {
                    format!("suspended by the operator {until}{}", reason(&h.reason))
                }
            }
        }
        SiteHold::Backoff(b) => format!(
            "backing off {}, {}{}",
            until_text(Some(b.backoff.until), now),
            count(u64::from(b.backoff.failures), "failed round"),
            reason(&b.backoff.error)
        ),
    }
}

fn suspended_text(s: &Suspension, now: SystemTime) -> String {
    format!(
        "suspended by the operator {}{}",
        until_text(s.until, now),
        reason(&s.reason)
    )
}

/// The rate column: `300/m`, `2.5/s learned`, or `-`.
fn rate_column(group: &SiteGroup) -> String {
    let Some(status) = &group.status else {
        return String::new();
    };
    match (status.message_interval, status.rate) {
        (Some(interval), Some(RateSource::Learned)) => {
            format!("{} learned", rate_text(interval))
        }
        (Some(interval), _) => rate_text(interval),
        (None, _) => "-".to_owned(),
    }
}

/// The heading of the domains whose site is not known.
const UNKNOWN: &str = "(site not known)";

/// The most characters of a site's name in the table: a provider's five
/// MX host names are a hundred (`--json` has them whole).
const NAME_COLUMN: usize = 40;

/// A site's name for the table: cut to [`NAME_COLUMN`] characters.
fn column_name(group: &SiteGroup) -> String {
    let name = group.site.as_deref().unwrap_or(UNKNOWN);
    if name.chars().count() <= NAME_COLUMN {
        return name.to_owned();
    }
    let mut cut: String = name.chars().take(NAME_COLUMN - 1).collect();
    cut.push('…');
    cut
}

/// One line of the table: the name, the counts, then `rest`.
fn row(out: &mut String, width: usize, name: &str, l: &DomainSummary, rest: &str) {
    let _ = writeln!(
        out,
        "{name:<width$} {:>6} {:>6} {:>8} {:>6} {:>6} {:>9}{rest}",
        l.total(),
        l.ready,
        l.deferred,
        l.active,
        l.held,
        size(l.bytes)
    );
}

/// A site's line and its domains' lines.
fn site_rows(out: &mut String, width: usize, g: &SiteGroup, now: SystemTime) {
    let (conns, limit) = match &g.status {
        Some(s) => (
            s.connections.to_string(),
            format!("{}/{}", s.limit, s.max_connections),
        ),
        None => (String::new(), String::new()),
    };
    let state = g
        .hold
        .as_ref()
        .map(|h| hold_text(h, now))
        .unwrap_or_default();
    let rest = format!(" {conns:>5} {limit:>6} {:>14}  {state}", rate_column(g));
    row(out, width, &column_name(g), &g.total, rest.trim_end());
    for d in &g.domains {
        let state = match (&d.suspension, &d.summary.backoff) {
            (Some(s), _) => suspended_text(s, now),
            (None, Some(b)) => format!(
                "route backing off {}, {}{}",
                until_text(Some(b.until), now),
                count(u64::from(b.failures), "failed round"),
                reason(&b.error)
            ),
            (None, None) => String::new(),
        };
        let rest = format!(" {:>5} {:>6} {:>14}  {state}", "", "", "");
        let name = format!("  {}", d.summary.domain);
        row(out, width, &name, &d.summary, rest.trim_end());
    }
}

/// The text summary: a note on the snapshot, one line per site and one
/// per domain under it, then the operator's suspensions.
pub fn render(
    groups: &[SiteGroup],
    total: &DomainSummary,
    status: Option<&Status>,
    suspensions: &[Suspension],
    now: SystemTime,
) -> String {
    let width = groups
        .iter()
        .flat_map(|g| {
            let site = column_name(g).chars().count();
            g.domains
                .iter()
                .map(|d| d.summary.domain.len() + 2)
                .chain([site])
        })
        .max()
        .unwrap_or(0)
        .max(13);
    let mut out = format!("{}\n", snapshot_note(status, now));
    let _ = writeln!(
        out,
        "{:<width$} {:>6} {:>6} {:>8} {:>6} {:>6} {:>9} {:>5} {:>6} {:>14}  STATE",
        "SITE / DOMAIN",
        "TOTAL",
        "READY",
        "DEFERRED",
        "ACTIVE",
        "HELD",
        "SIZE",
        "CONNS",
        "LIMIT",
        "RATE"
    );
    row(&mut out, width, "TOTAL", total, "");
    for g in groups {
        site_rows(&mut out, width, g, now);
    }
    if let Some(more) = status.map(|s| s.more_sites).filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "({} left out of the snapshot for room)",
            count(more as u64, "site")
        );
    }
    if !suspensions.is_empty() {
        let _ = writeln!(out, "\nSuspended by the operator (postman resume ends it):");
        for s in suspensions {
            let until = until_text(s.until, now);
            let _ = writeln!(out, "{} {until}{}", s.target, reason(&s.reason));
        }
    }
    out
}

pub(super) fn counts(l: &DomainSummary) -> serde_json::Map<String, Value> {
    let value = json!({
        "total": l.total(),
        "ready": l.ready,
        "deferred": l.deferred,
        "active": l.active,
        "held": l.held,
        "failed": l.failed,
        "quarantined": l.quarantined,
        "size": l.bytes,
    });
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// `state`, `until`, `failures` and `reason` of a site's hold.
fn hold_fields(hold: Option<&SiteHold>) -> Value {
    let (state, until, failures, why) = match hold {
        None => (Value::Null, Value::Null, Value::Null, Value::Null),
        Some(SiteHold::Suspended(s)) => (
            json!("suspended"),
            opt_unix(s.until),
            Value::Null,
            json!(s.reason),
        ),
        Some(SiteHold::Held(h)) => {
            let state = match h.kind {
                HoldKind::Backoff => "backoff",
                HoldKind::Throttled => "throttled",
                HoldKind::Operator => "suspended",
            };
            (
                json!(state),
                opt_unix(h.until),
                json!(h.failures),
                json!(h.reason),
            )
        }
        Some(SiteHold::Backoff(b)) => (
            json!("backoff"),
            opt_unix(Some(b.backoff.until)),
            json!(b.backoff.failures),
            json!(b.backoff.error),
        ),
    };
    json!({"state": state, "until": until, "failures": failures, "reason": why})
}

/// The JSON lines: one `status` object, one `site` object per group (the
/// domains whose site is not known under `"site": null`), one
/// `suspension` object per suspension.
pub fn json_lines(
    groups: &[SiteGroup],
    status: Option<&Status>,
    suspensions: &[Suspension],
    now: SystemTime,
) -> Vec<Value> {
    let mut lines = vec![json!({
        "kind": "status",
        "snapshot": opt_unix(status.map(|s| s.written)),
        "age": status.map(|s| now.duration_since(s.written).unwrap_or_default().as_secs()),
        "running": status.map(|s| s.running),
        "pid": status.map(|s| s.pid),
    })];
    for g in groups {
        let mut line = counts(&g.total);
        let s = g.status.as_ref();
        let extra = json!({
            "kind": "site",
            "site": g.site,
            "hosts": g.hosts,
            "rule": s.and_then(|s| s.rule.clone()),
            "connections": s.map(|s| s.connections),
            "limit": s.map(|s| s.limit),
            "max_connections": s.map(|s| s.max_connections),
            "message_rate": s.and_then(|s| s.message_interval).map(rate_text),
            "rate_source": s.and_then(|s| s.rate).map(|r| match r {
                RateSource::Rule => "rule",
                RateSource::Learned => "learned",
            }),
            "domains": g.domains.iter().map(|d| {
                let mut domain = counts(&d.summary);
                domain.insert("domain".into(), json!(d.summary.domain));
                domain.insert("suspended".into(), json!(d.suspension.is_some()));
                domain.insert("suspended_until".into(), opt_unix(d.suspension.as_ref().and_then(|s| s.until)));
                domain.insert("suspension_reason".into(), json!(d.suspension.as_ref().map(|s| &s.reason)));
                domain.insert("backoff_until".into(), opt_unix(d.summary.backoff.as_ref().map(|b| b.until)));
                Value::Object(domain)
            }).collect::<Vec<_>>(),
        });
        for value in [extra, hold_fields(g.hold.as_ref())] {
            if let Value::Object(map) = value {
                line.extend(map);
            }
        }
        lines.push(Value::Object(line));
    }
    for s in suspensions {
        let kind = match s.target {
            Target::Domain(_) => "domain",
            Target::Site(_) => "site",
        };
        lines.push(json!({
            "kind": "suspension",
            "target": kind,
            "name": s.target.name(),
            "until": opt_unix(s.until),
            "since": opt_unix(s.since),
            "reason": s.reason,
        }));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use postman::queue::admin::DomainLine;
    use postman::queue::{DomainBackoff, Held, SiteBackoff, SiteStatus};
    use std::time::UNIX_EPOCH;

    const NOW: u64 = 1_764_250_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn line(domain: &str, ready: u64, deferred: u64) -> DomainSummary {
        DomainSummary {
            domain: domain.into(),
            ready,
            deferred,
            bytes: 1024 * (ready + deferred),
            ..DomainSummary::default()
        }
    }

    fn status(running: bool, written: u64) -> Status {
        Status {
            written: at(written),
            pid: 42,
            running,
            sites: Vec::new(),
            more_sites: 0,
        }
    }

    fn groups() -> (Vec<SiteGroup>, Suspension) {
        let a = Suspension {
            target: Target::Domain("a.test".into()),
            until: Some(at(NOW + 900)),
            since: None,
            reason: "dns move".into(),
        };
        let shared = SiteGroup {
            site: Some("mx.shared.test".into()),
            hosts: vec!["mx.shared.test".into()],
            status: Some(SiteStatus {
                name: "mx.shared.test".into(),
                connections: 2,
                limit: 5,
                max_connections: 20,
                message_interval: Some(Duration::from_millis(400)),
                rate: Some(RateSource::Learned),
                ..SiteStatus::default()
            }),
            hold: None,
            total: line("mx.shared.test", 3, 1),
            domains: vec![
                DomainLine {
                    summary: line("a.test", 2, 1),
                    suspension: Some(a.clone()),
                },
                DomainLine {
                    summary: line("b.test", 1, 0),
                    suspension: None,
                },
            ],
        };
        let down = SiteGroup {
            site: Some("mx.down.test".into()),
            hosts: vec!["mx.down.test".into()],
            status: None,
            hold: Some(SiteHold::Backoff(SiteBackoff {
                site: "mx.down.test".into(),
                backoff: DomainBackoff {
                    until: at(NOW + 120),
                    failures: 3,
                    error: "connection refused".into(),
                },
                domains: vec!["c.test".into()],
            })),
            total: line("mx.down.test", 0, 2),
            domains: vec![DomainLine {
                summary: line("c.test", 0, 2),
                suspension: None,
            }],
        };
        let unknown = SiteGroup {
            site: None,
            hosts: Vec::new(),
            status: None,
            hold: None,
            total: line("", 1, 0),
            domains: vec![DomainLine {
                summary: line("new.test", 1, 0),
                suspension: None,
            }],
        };
        (vec![shared, down, unknown], a)
    }

    #[test]
    fn notes_on_the_snapshot_table() {
        let now = at(NOW);
        let cases = [
            (None, "No postman has recorded its sites here yet: domains are grouped by the site backoffs on disk."),
            (Some(status(true, NOW - 2)), "Sites as the running postman (pid 42) saw them 2s ago."),
            (Some(status(true, NOW - 600)), "Sites as postman (pid 42) saw them 10m ago; it has not updated them since: is it running?"),
            (Some(status(false, NOW - 7200)), "Sites as postman (pid 42) left them when it stopped, 2h ago."),
        ];
        for (status, want) in cases {
            assert_eq!(snapshot_note(status.as_ref(), now), want);
        }
    }

    #[test]
    fn holds_in_words_table() {
        let now = at(NOW);
        let held = |kind, until: Option<u64>, failures, reason: &str| {
            SiteHold::Held(Held {
                kind,
                until: until.map(at),
                failures,
                reason: reason.into(),
            })
        };
        let cases = [
            (
                held(HoldKind::Backoff, Some(NOW + 60), 2, "refused"),
                "backing off until 2025-11-27 13:27:40 UTC (in 1m), 2 failed rounds: refused",
            ),
            (
                held(HoldKind::Throttled, Some(NOW + 10), 0, "throttled: 421 4.7.0 slow down"),
                "throttled, waits until 2025-11-27 13:26:50 UTC (in 10s): throttled: 421 4.7.0 slow down",
            ),
            (
                held(HoldKind::Operator, None, 0, ""),
                "suspended by the operator until postman resume",
            ),
            (
                SiteHold::Suspended(Suspension {
                    target: Target::Site("google.com".into()),
                    until: None,
                    since: None,
                    reason: "block".into(),
                }),
                "suspended by the operator until postman resume: block",
            ),
        ];
        for (hold, want) in cases {
            assert_eq!(hold_text(&hold, now), want, "{hold:?}");
        }
    }

    #[test]
    fn the_text_puts_domains_under_their_site() {
        let now = at(NOW);
        let (groups, a) = groups();
        let total = line("TOTAL", 4, 3);
        let text = render(&groups, &total, Some(&status(true, NOW - 1)), &[a], now);
        let want = "\
Sites as the running postman (pid 42) saw them 1s ago.
SITE / DOMAIN     TOTAL  READY DEFERRED ACTIVE   HELD      SIZE CONNS  LIMIT           RATE  STATE
TOTAL                 7      4        3      0      0   7.0 KiB
mx.shared.test        4      3        1      0      0   4.0 KiB     2   5/20  2.5/s learned
  a.test              3      2        1      0      0   3.0 KiB                              suspended by the operator until 2025-11-27 13:41:40 UTC (in 15m): dns move
  b.test              1      1        0      0      0   1.0 KiB
mx.down.test          2      0        2      0      0   2.0 KiB                              backing off until 2025-11-27 13:28:40 UTC (in 2m), 3 failed rounds: connection refused
  c.test              2      0        2      0      0   2.0 KiB
(site not known)      1      1        0      0      0   1.0 KiB
  new.test            1      1        0      0      0   1.0 KiB

Suspended by the operator (postman resume ends it):
domain a.test until 2025-11-27 13:41:40 UTC (in 15m): dns move
";
        assert_eq!(text, want, "\n{text}");
    }

    #[test]
    fn long_site_names_are_cut_in_the_table() {
        let (mut groups, _) = groups();
        let long = "aspmx.l.google.com;alt1.aspmx.l.google.com,alt2.aspmx.l.google.com";
        groups[0].site = Some(long.into());
        assert_eq!(
            column_name(&groups[0]),
            "aspmx.l.google.com;alt1.aspmx.l.google.…"
        );
        assert_eq!(column_name(&groups[1]), "mx.down.test");
        assert_eq!(column_name(&groups[2]), "(site not known)");
        let lines = json_lines(&groups, None, &[], at(NOW));
        assert_eq!(lines[1]["site"], long, "--json has it whole");
    }

    #[test]
    fn json_lines_have_stable_fields() {
        let now = at(NOW);
        let (groups, a) = groups();
        let lines = json_lines(&groups, Some(&status(true, NOW - 1)), &[a], now);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert_eq!(lines[0]["kind"], "status");
        assert_eq!(
            (lines[0]["age"].as_u64(), lines[0]["pid"].as_u64()),
            (Some(1), Some(42))
        );
        let keys = |v: &Value| -> Vec<String> {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(
            keys(&lines[1]),
            [
                "active",
                "connections",
                "deferred",
                "domains",
                "failed",
                "failures",
                "held",
                "hosts",
                "kind",
                "limit",
                "max_connections",
                "message_rate",
                "quarantined",
                "rate_source",
                "ready",
                "reason",
                "rule",
                "site",
                "size",
                "state",
                "total",
                "until"
            ]
        );
        assert_eq!(lines[1]["message_rate"], "2.5/s");
        assert_eq!(lines[1]["rate_source"], "learned");
        assert_eq!(lines[1]["domains"][0]["suspended_until"], NOW + 900);
        assert_eq!(lines[2]["state"], "backoff");
        assert_eq!(lines[2]["failures"], 3);
        assert_eq!(lines[2]["connections"], Value::Null);
        assert_eq!(lines[3]["site"], Value::Null);
        assert_eq!(lines[4]["kind"], "suspension");
        assert_eq!(lines[4]["target"], "domain");
        assert_eq!(lines[4]["until"], NOW + 900);
    }
}
