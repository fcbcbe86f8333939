//! `postman queue`: the queue as a readable list in the manner of
//! `postqueue -p`/`mailq` (one block per message, oldest first), or one JSON
//! object a line (`--json`, field names documented in the README and
//! stable), and `postman queue summary`: by site (`super::sites`), or with
//! `--by-domain` per-domain counts and an age histogram in the manner of
//! Postfix's qshape.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use postman::config::Config;
use postman::queue::admin::{self, Detail, DomainSummary, Entry, State, AGE_BUCKETS};
use postman::queue::params::RcptParams;
use postman::queue::{self, RetryState};
use serde_json::{json, Value};

use super::format::{age, count, date, opt_unix, size, unix};

/// What `postman queue` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every message.
    List,
    /// By site: counts, connections, limits, rates, holds.
    Summary,
    /// Per-domain counts and ages (qshape).
    DomainSummary,
}

/// Prints the queue of `config`: every message (`View::List`) or the
/// summary, of one domain or all, as text or JSON lines.
pub fn queue(config: &Config, view: View, domain: Option<&str>, json: bool) -> anyhow::Result<()> {
    let layout = super::open_queue(config, false)?;
    let domain = super::domain_arg(domain)?;
    let now = SystemTime::now();
    let entries = admin::list_queue(&layout, domain.as_deref(), now)?;
    let text = match view {
        View::List if json => entries
            .iter()
            .map(|e| format!("{}\n", entry_json(e, now)))
            .collect(),
        View::List => render_list(&entries, now),
        View::Summary | View::DomainSummary => {
            let domains = match &domain {
                Some(d) => vec![d.clone()],
                None => queue::list_domains(&layout).unwrap_or_default(),
            };
            let lines = admin::summarize(&layout, &entries, &domains, now);
            if view == View::Summary {
                return super::print(&by_site(&layout, &lines, json, now));
            }
            if json {
                lines
                    .iter()
                    .map(|l| format!("{}\n", summary_json(l)))
                    .collect()
            } else {
                render_summary(&lines, now)
            }
        }
    };
    super::print(&text)
}

/// The summary by site of `lines` (from `admin::summarize`, `TOTAL`
/// first), with what the queue's files say of sites.
fn by_site(layout: &queue::Queue, lines: &[DomainSummary], json: bool, now: SystemTime) -> String {
    let status = queue::read_status(layout).unwrap_or_else(|e| {
        super::complain(&format!("ignoring the status snapshot: {e}"));
        None
    });
    let site_files: Vec<queue::SiteBackoff> = match queue::list_site_backoffs(layout) {
        Ok(files) => files.found.into_iter().map(|(_, site)| site).collect(),
        Err(_) => Vec::new(),
    };
    let suspensions = queue::list_suspensions(layout, now)
        .map(|files| files.active)
        .unwrap_or_default();
    let (total, domains) = match lines.split_first() {
        Some((total, domains)) => (total.clone(), domains),
        None => (DomainSummary::default(), &[][..]),
    };
    let groups = admin::group_by_site(domains, status.as_ref(), &site_files, &suspensions, now);
    if json {
        super::sites::json_lines(&groups, status.as_ref(), &suspensions, now)
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        super::sites::render(&groups, &total, status.as_ref(), &suspensions, now)
    }
}

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// The text listing: a header, one block per message, a total line.
pub fn render_list(entries: &[Entry], now: SystemTime) -> String {
    if entries.is_empty() {
        return "The queue is empty.\n".to_owned();
    }
    let id_width = entries
        .iter()
        .map(|e| e.id().len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<id_width$}  {:<8}  {:>6}  {:>9}  SENDER / RECIPIENTS",
        "QUEUE ID", "STATE", "AGE", "SIZE"
    );
    let mut bytes = 0;
    let mut states = [0u64; 4];
    for e in entries {
        bytes += e.size;
        states[e.state as usize] += 1;
        let sender = match &e.detail {
            Ok(d) => format!("<{}>", d.sender),
            Err(_) => "?".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<id_width$}  {:<8}  {:>6}  {:>9}  {sender}",
            e.id(),
            e.state.as_str(),
            age(since(now, e.arrival)),
            size(e.size),
        );
        if let Some(owner) = &e.owner {
            let _ = writeln!(out, "    being delivered by {owner}");
        }
        match &e.detail {
            Ok(d) => {
                render_params(&mut out, d);
                for rcpt in &d.recipients {
                    match d.rcpt_params.get(rcpt) {
                        Some(params) => {
                            let _ = writeln!(out, "    to <{rcpt}> {}", rcpt_words(params));
                        }
                        None => {
                            let _ = writeln!(out, "    to <{rcpt}>");
                        }
                    }
                }
                render_retry(&mut out, &d.retry, now);
            }
            Err(why) => {
                let _ = writeln!(out, "    cannot read this file: {why}");
            }
        }
    }
    let [ready, deferred, active, held] = states;
    let _ = writeln!(
        out,
        "-- {} in {} ({ready} ready, {deferred} deferred, {active} active, {held} held)",
        size(bytes),
        count(entries.len() as u64, "message"),
    );
    out
}

/// The sender's message parameters, when any was given: `    return
/// headers only, envelope id "QQ+1", REQUIRETLS` (the id decoded when it
/// is printable, quoted so that its spaces show).
fn render_params(out: &mut String, d: &Detail) {
    let mut words = Vec::new();
    match d.params.ret {
        Some(queue::params::Ret::Full) => words.push("return full message".to_owned()),
        Some(queue::params::Ret::Hdrs) => words.push("return headers only".to_owned()),
        None => {}
    }
    if let Some(envid) = d.params.envid_printable() {
        words.push(format!("envelope id {envid:?}"));
    }
    if d.params.requiretls {
        words.push("REQUIRETLS".to_owned());
    }
    if !words.is_empty() {
        let _ = writeln!(out, "    {}", words.join(", "));
    }
}

/// A recipient's parameters for a human: `(notify NEVER, original
/// rfc822;a@d.test)`, the original address decoded when printable.
fn rcpt_words(params: &RcptParams) -> String {
    let mut words = Vec::new();
    if let Some(notify) = params.notify {
        words.push(format!("notify {notify}"));
    }
    if let Some(orcpt) = &params.orcpt {
        words.push(format!("original {}", orcpt.for_report()));
    }
    format!("({})", words.join(", "))
}

fn render_retry(out: &mut String, retry: &RetryState, now: SystemTime) {
    if retry.attempts == 0 && retry.next_attempt.is_none() {
        return;
    }
    let mut line = format!("    attempts {}", retry.attempts);
    if let Some(last) = retry.last_attempt {
        let _ = write!(
            line,
            ", last {} ({} ago)",
            date(last),
            age(since(now, last))
        );
    }
    match retry.next_attempt {
        Some(next) if next > now => {
            let _ = write!(
                line,
                ", next {} (in {})",
                date(next),
                age(next.duration_since(now).unwrap_or_default())
            );
        }
        Some(_) | None => line.push_str(", next now"),
    }
    let _ = writeln!(out, "{line}");
    if let Some(error) = &retry.last_error {
        let _ = writeln!(out, "    last error: {error}");
    }
}

/// One message as a JSON object (the `queue --json` fields). The DSN
/// values are as queued (xtext), but for `envid`, decoded when that gives
/// printable text (`envid_xtext` is the value as queued).
pub fn entry_json(e: &Entry, now: SystemTime) -> Value {
    let (sender, recipients, retry, error) = match &e.detail {
        Ok(d) => (
            json!(d.sender),
            json!(d.recipients),
            Some(&d.retry),
            Value::Null,
        ),
        Err(why) => (Value::Null, Value::Null, None, json!(why)),
    };
    let detail = e.detail.as_ref().ok();
    let params = detail.map(|d| &d.params);
    let rcpt_params: Option<serde_json::Map<String, Value>> = detail.map(|d| {
        d.rcpt_params
            .iter()
            .map(|(rcpt, p)| {
                let value = json!({
                    "notify": p.notify.map(|n| n.to_string()),
                    "orcpt": p.orcpt.as_ref().map(ToString::to_string),
                });
                (rcpt.clone(), value)
            })
            .collect()
    });
    json!({
        "id": e.id(),
        "domain": e.domain,
        "name": e.name,
        "state": e.state.as_str(),
        "owner": e.owner,
        "path": e.path.to_string_lossy(),
        "arrival": unix(e.arrival),
        "age": since(now, e.arrival).as_secs(),
        "size": e.size,
        "sender": sender,
        "recipients": recipients,
        "attempts": retry.map(|r| r.attempts),
        "first_attempt": opt_unix(retry.and_then(|r| r.first_attempt)),
        "last_attempt": opt_unix(retry.and_then(|r| r.last_attempt)),
        "next_attempt": opt_unix(retry.and_then(|r| r.next_attempt)),
        "last_error": retry.and_then(|r| r.last_error.clone()),
        "ret": params.and_then(|p| p.ret).map(|r| r.as_str()),
        "envid": params.and_then(|p| p.envid_printable()),
        "envid_xtext": params.and_then(|p| p.envid.clone()),
        "requiretls": params.map(|p| p.requiretls),
        "recipient_params": rcpt_params,
        "error": error,
    })
}

/// The age column headers: `5 10 … 1280 1280+` (upper bounds in minutes).
fn age_headers() -> Vec<String> {
    let mut headers: Vec<String> = AGE_BUCKETS.iter().map(u64::to_string).collect();
    headers.push(format!("{}+", AGE_BUCKETS[AGE_BUCKETS.len() - 1]));
    headers
}

/// The summary as text: states per domain, then the age histogram
/// (qshape's layout: `T` the total, then one column per age bucket, each
/// headed by its upper bound in minutes), then the domains backing off.
pub fn render_summary(lines: &[DomainSummary], now: SystemTime) -> String {
    let width = lines
        .iter()
        .map(|l| l.domain.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>6} {:>6} {:>8} {:>6} {:>6} {:>6} {:>11} {:>10}",
        "DOMAIN", "TOTAL", "READY", "DEFERRED", "ACTIVE", "HELD", "FAILED", "QUARANTINED", "SIZE"
    );
    for l in lines {
        let _ = writeln!(
            out,
            "{:<width$} {:>6} {:>6} {:>8} {:>6} {:>6} {:>6} {:>11} {:>10}",
            l.domain,
            l.total(),
            l.ready,
            l.deferred,
            l.active,
            l.held,
            l.failed,
            l.quarantined,
            size(l.bytes)
        );
    }
    let _ = writeln!(out, "\nAge in minutes (as Postfix's qshape):");
    let _ = write!(out, "{:<width$} {:>6}", "DOMAIN", "T");
    for header in age_headers() {
        let _ = write!(out, " {header:>5}");
    }
    out.push('\n');
    for l in lines {
        let _ = write!(out, "{:<width$} {:>6}", l.domain, l.total());
        for n in l.ages {
            let _ = write!(out, " {n:>5}");
        }
        out.push('\n');
    }
    let backing_off: Vec<&DomainSummary> = lines.iter().filter(|l| l.backoff.is_some()).collect();
    if !backing_off.is_empty() {
        let _ = writeln!(out, "\nDomains backing off (postman flush ends it):");
        for l in backing_off {
            if let Some(b) = &l.backoff {
                let _ = writeln!(
                    out,
                    "{:<width$} until {} (in {}), {}: {}",
                    l.domain,
                    date(b.until),
                    age(b.until.duration_since(now).unwrap_or_default()),
                    count(u64::from(b.failures), "failed round"),
                    b.error
                );
            }
        }
    }
    out
}

/// One summary line as a JSON object.
pub fn summary_json(l: &DomainSummary) -> Value {
    let ages: serde_json::Map<String, Value> = age_headers()
        .into_iter()
        .zip(l.ages)
        .map(|(header, n)| (header, json!(n)))
        .collect();
    let backoff = l.backoff.as_ref();
    let mut line = super::sites::counts(l);
    line.insert("domain".into(), json!(l.domain));
    line.insert("ages".into(), Value::Object(ages));
    line.insert("backoff_until".into(), opt_unix(backoff.map(|b| b.until)));
    line.insert(
        "backoff_failures".into(),
        json!(backoff.map(|b| b.failures)),
    );
    line.insert("backoff_error".into(), json!(backoff.map(|b| &b.error)));
    Value::Object(line)
}

// `State` is indexed by its discriminant in `render_list`.
const _: () = assert!(
    State::Ready as usize == 0
        && State::Deferred as usize == 1
        && State::Active as usize == 2
        && State::Held as usize == 3
);

#[cfg(test)]
mod tests {
    use super::*;
    use postman::queue::admin::Detail;
    use std::path::PathBuf;
    use std::time::UNIX_EPOCH;

    const NOW: u64 = 1_764_250_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn entry(name: &str, state: State, detail: Result<Detail, String>) -> Entry {
        Entry {
            domain: "d1.test".into(),
            name: name.into(),
            state,
            owner: (state == State::Active).then(|| "host.1.2".to_owned()),
            path: PathBuf::from(format!("/q/.OTHER_SERVERS/d1.test/{name}")),
            size: 1536,
            arrival: at(NOW - 900),
            detail,
        }
    }

    fn deferred() -> Detail {
        Detail {
            sender: "alice@src.test".into(),
            recipients: vec!["x@d1.test".into(), "y@d1.test".into()],
            params: Default::default(),
            rcpt_params: Default::default(),
            retry: RetryState {
                attempts: 2,
                first_attempt: Some(at(NOW - 600)),
                last_attempt: Some(at(NOW - 60)),
                next_attempt: Some(at(NOW + 240)),
                last_error: Some("451 4.7.1 try later".into()),
                ..RetryState::default()
            },
        }
    }

    #[test]
    fn list_text_shows_attempts_errors_and_totals() {
        let entries = [
            entry("m1", State::Deferred, Ok(deferred())),
            entry("m2", State::Active, Ok(deferred())),
            entry("bad", State::Ready, Err("no empty line".into())),
        ];
        let text = render_list(&entries, at(NOW));
        for want in [
            "QUEUE ID",
            "d1.test/m1   deferred     15m    1.5 KiB  <alice@src.test>",
            "    to <x@d1.test>\n    to <y@d1.test>\n",
            "    attempts 2, last 2025-11-27 13:25:40 UTC (1m ago), next 2025-11-27 13:30:40 UTC (in 4m)\n",
            "    last error: 451 4.7.1 try later\n",
            "    being delivered by host.1.2\n",
            "d1.test/bad  ready",
            "    cannot read this file: no empty line\n",
            "-- 4.5 KiB in 3 messages (1 ready, 1 deferred, 1 active, 0 held)\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(render_list(&[], at(NOW)), "The queue is empty.\n");
    }

    #[test]
    fn json_fields_are_stable() {
        let v = entry_json(&entry("m1", State::Deferred, Ok(deferred())), at(NOW));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = vec![
            "id",
            "domain",
            "name",
            "state",
            "owner",
            "path",
            "arrival",
            "age",
            "size",
            "sender",
            "recipients",
            "attempts",
            "first_attempt",
            "last_attempt",
            "next_attempt",
            "last_error",
            "ret",
            "envid",
            "envid_xtext",
            "requiretls",
            "recipient_params",
            "error",
        ];
        want.sort_unstable();
        assert_eq!(keys, want, "field names");
        assert_eq!(v["id"], "d1.test/m1");
        assert_eq!(v["state"], "deferred");
        assert_eq!(v["age"], 900);
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["next_attempt"], NOW + 240);
        assert_eq!(v["last_error"], "451 4.7.1 try later");
        assert_eq!(v["recipients"], json!(["x@d1.test", "y@d1.test"]));
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["ret"], Value::Null, "no RET");
        assert_eq!(v["envid"], Value::Null, "no ENVID");
        assert_eq!(v["requiretls"], false);
        assert_eq!(v["recipient_params"], json!({}));
        let bad = entry_json(&entry("bad", State::Ready, Err("why".into())), at(NOW));
        assert_eq!(bad["error"], "why");
        assert_eq!(bad["sender"], Value::Null);
        assert_eq!(bad["attempts"], Value::Null);
        assert_eq!(bad["requiretls"], Value::Null);
        assert_eq!(bad["recipient_params"], Value::Null);
    }

    /// A message whose sender gave every parameter: RET=HDRS, an ENVID
    /// that decodes to "QQ+1 x", REQUIRETLS, and one recipient of two with
    /// NOTIFY and ORCPT.
    fn with_params() -> Detail {
        let params = postman::queue::params::MsgParams {
            ret: Some(postman::queue::params::Ret::Hdrs),
            envid: Some("QQ+2B1+20x".into()),
            requiretls: true,
        };
        let rcpt = RcptParams::parse("NOTIFY=SUCCESS,DELAY ORCPT=rfc822;Y+2Bz@d1.test")
            .expect("test parameters");
        Detail {
            params,
            rcpt_params: [("y@d1.test".to_owned(), rcpt)].into(),
            ..deferred()
        }
    }

    #[test]
    fn parameters_are_shown_decoded_for_people_and_as_queued_in_json() {
        let entries = [entry("m1", State::Deferred, Ok(with_params()))];
        let text = render_list(&entries, at(NOW));
        for want in [
            "    return headers only, envelope id \"QQ+1 x\", REQUIRETLS\n    to <x@d1.test>\n",
            "    to <y@d1.test> (notify SUCCESS,DELAY, original rfc822;Y+z@d1.test)\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let plain = render_list(&[entry("m2", State::Ready, Ok(deferred()))], at(NOW));
        assert!(
            !plain.contains("return") && !plain.contains("envelope id"),
            "nothing said of parameters not given:\n{plain}"
        );

        let v = entry_json(&entries[0], at(NOW));
        assert_eq!(v["ret"], "HDRS");
        assert_eq!(v["envid"], "QQ+1 x", "decoded");
        assert_eq!(v["envid_xtext"], "QQ+2B1+20x", "as queued");
        assert_eq!(v["requiretls"], true);
        assert_eq!(
            v["recipient_params"],
            json!({"y@d1.test": {"notify": "SUCCESS,DELAY", "orcpt": "rfc822;Y+2Bz@d1.test"}}),
            "only the recipient with parameters, values as queued"
        );
    }

    #[test]
    fn summary_text_has_counts_ages_and_backoffs() {
        let mut line = DomainSummary {
            domain: "d1.test".into(),
            ready: 2,
            deferred: 1,
            ages: [2, 0, 0, 0, 1, 0, 0, 0, 0, 0],
            bytes: 4096,
            backoff: Some(postman::queue::DomainBackoff {
                until: at(NOW + 120),
                failures: 3,
                error: "connection refused".into(),
            }),
            ..DomainSummary::default()
        };
        let total = DomainSummary {
            domain: "TOTAL".into(),
            backoff: None,
            ..line.clone()
        };
        line.quarantined = 1;
        let text = render_summary(&[total, line.clone()], at(NOW));
        for want in [
            "DOMAIN   TOTAL  READY DEFERRED ACTIVE   HELD FAILED QUARANTINED       SIZE\n",
            "TOTAL        3      2        1      0      0      0           0    4.0 KiB\n",
            "d1.test      3      2        1      0      0      0           1    4.0 KiB\n",
            "DOMAIN       T     5    10    20    40    80   160   320   640  1280 1280+\n",
            "d1.test      3     2     0     0     0     1     0     0     0     0     0\n",
            "d1.test until 2025-11-27 13:28:40 UTC (in 2m), 3 failed rounds: connection refused\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        let v = summary_json(&line);
        assert_eq!(v["ages"]["5"], 2);
        assert_eq!(v["ages"]["1280+"], 0);
        assert_eq!(v["total"], 3);
        assert_eq!(v["backoff_until"], NOW + 120);
    }
}
