//! End to end: replay recorded queues (`integration/recorded/<case>/`, see
//! its README) and check what happens to every file against `expect.toml`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use common::on_the_wire;
use postman_integration::hostile::Script;
use postman_integration::queue::{copy_tree, unix_now};
use postman_integration::{
    postman, AiosmtpdSink, DnsServer, HostileServer, TestNet, TestQueue, Zones,
};
use serde::Deserialize;

/// The recorded queues, beside the support library (this test is compiled as
/// part of postman-actors, so its own manifest directory is elsewhere).
const RECORDED: &str = postman_integration::RECORDED_DIR;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    dns: Dns,
    message: Vec<Message>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Dns {
    #[serde(default)]
    mx: Vec<Mx>,
    #[serde(default)]
    a: Vec<A>,
    #[serde(default)]
    null_mx: Vec<String>,
    #[serde(default)]
    servfail: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mx {
    domain: String,
    pref: u16,
    host: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct A {
    name: String,
    peer: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    domain: String,
    name: String,
    outcome: String,
    reason_contains: Option<String>,
}

/// The named peers of the README, by host number on the test's block.
fn peer_host(peer: &str) -> u8 {
    match peer {
        "sink" => 1,
        "refused" => 2,
        "tempfail" => 3,
        "reject" => 4,
        other => panic!("unknown peer {other:?} in expect.toml (sink, refused, tempfail, reject)"),
    }
}

/// A queue file split into its recipients and its message.
struct QueueFile {
    sender: String,
    recipients: Vec<String>,
    message: Vec<u8>,
}

fn parse_queue_file(bytes: &[u8]) -> QueueFile {
    let mut sender = String::new();
    let mut recipients = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i + 1);
        let line = String::from_utf8_lossy(&bytes[pos..end]);
        let line = line.trim_end_matches(['\r', '\n']);
        pos = end;
        if line.is_empty() {
            break;
        }
        if let Some(value) = line.strip_prefix("X-Postman-From:") {
            sender = value
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
        }
        if let Some(value) = line.strip_prefix("X-Postman-To:") {
            recipients.extend(
                value
                    .split(',')
                    .map(|a| {
                        a.trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    })
                    .filter(|a| !a.is_empty()),
            );
        }
    }
    QueueFile {
        sender,
        recipients,
        message: bytes[pos..].to_vec(),
    }
}

/// Sets `X-Postman-Date` to now, keeping its form (unix seconds or RFC 5322).
fn refresh_date(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut pos = 0;
    let mut in_header = true;
    while pos < bytes.len() {
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |i| pos + i + 1);
        let line = &bytes[pos..end];
        pos = end;
        let text = String::from_utf8_lossy(line);
        let body = text.trim_end_matches(['\r', '\n']);
        if in_header && body.is_empty() {
            in_header = false;
        }
        match body.strip_prefix("X-Postman-Date:") {
            Some(value) if in_header => {
                let now = unix_now();
                let new = if value.trim().chars().all(|c| c.is_ascii_digit()) {
                    now.to_string()
                } else {
                    rfc5322_date(now)
                };
                out.extend_from_slice(format!("X-Postman-Date: {new}").as_bytes());
                out.extend_from_slice(&line[body.len()..]);
            }
            _ => out.extend_from_slice(line),
        }
    }
    out
}

/// `unix` seconds as an RFC 5322 §3.3 date in UTC.
fn rfc5322_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days.rem_euclid(7)) as usize],
        MONTHS[(month - 1) as usize],
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Every queued file of a recorded queue, as `(domain, name)`.
fn recorded_files(queue: &Path) -> BTreeSet<(String, String)> {
    let mut files = BTreeSet::new();
    let remote = queue.join(".OTHER_SERVERS");
    for domain in std::fs::read_dir(&remote).unwrap_or_else(|e| panic!("{}: {e}", remote.display()))
    {
        let domain = domain.unwrap();
        for file in std::fs::read_dir(domain.path()).unwrap() {
            let file = file.unwrap();
            if file.file_type().unwrap().is_file() {
                files.insert((
                    domain.file_name().to_string_lossy().into_owned(),
                    file.file_name().to_string_lossy().into_owned(),
                ));
            }
        }
    }
    files
}

fn replay(case_dir: &Path) {
    let case = case_dir.file_name().unwrap().to_string_lossy().into_owned();
    let expect_path = case_dir.join("expect.toml");
    let expect: Expect = toml::from_str(
        &std::fs::read_to_string(&expect_path)
            .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
    let recorded_queue = case_dir.join("queue");
    let listed: BTreeSet<(String, String)> = expect
        .message
        .iter()
        .map(|m| (m.domain.clone(), m.name.clone()))
        .collect();
    assert_eq!(
        recorded_files(&recorded_queue),
        listed,
        "case {case}: every recorded file needs exactly one [[message]] in expect.toml"
    );

    // Peers.
    let net = TestNet::new();
    let sink_dir = tempfile::tempdir().unwrap();
    let sink = AiosmtpdSink::start(net.ip(peer_host("sink")), net.port(), sink_dir.path());
    let _tempfail = HostileServer::start(
        net.addr(peer_host("tempfail")),
        vec![Script::polite().answer("RCPT", "451 4.2.0 recorded peer defers every recipient")],
    );
    let _reject = HostileServer::start(
        net.addr(peer_host("reject")),
        vec![Script::polite().answer("RCPT", "550 5.1.1 recorded peer refuses every recipient")],
    );

    // DNS.
    let mut zones = Zones::new();
    for mx in &expect.dns.mx {
        zones = zones.mx(&mx.domain, mx.pref, &mx.host);
    }
    for a in &expect.dns.a {
        let ip: Ipv4Addr = net.ipv4(peer_host(&a.peer));
        zones = zones.a(&a.name, ip);
    }
    for d in &expect.dns.null_mx {
        zones = zones.null_mx(d);
    }
    for d in &expect.dns.servfail {
        zones = zones.servfail(d);
    }
    let dns = DnsServer::start(zones);

    // The queue, dated now.
    let queue = TestQueue::new();
    copy_tree(&recorded_queue, queue.root());
    let mut originals: BTreeMap<(String, String), QueueFile> = BTreeMap::new();
    for (domain, name) in &listed {
        let path = queue.domain_dir(domain).join(name);
        let bytes = std::fs::read(&path).unwrap();
        originals.insert((domain.clone(), name.clone()), parse_queue_file(&bytes));
        std::fs::write(&path, refresh_date(&bytes)).unwrap();
        std::fs::create_dir_all(queue.domain_dir(domain).join("tmp")).unwrap();
    }

    let out = postman!().run_once(&common::config(&queue, &net, &dns).write());
    out.assert_success();
    let state = queue.state();
    let deliveries = out.deliveries();
    let received = sink.messages();
    let mut problems = Vec::new();
    for m in &expect.message {
        let key = (m.domain.clone(), m.name.clone());
        let file = &originals[&key];
        let whereabouts = state.whereabouts(&m.domain, &m.name);
        let want_place = match m.outcome.as_str() {
            "delivered" | "bounced" => "gone",
            "queued" => "queued",
            "failed" => "failed",
            "quarantined" => "quarantined",
            other => panic!("case {case}: unknown outcome {other:?} for {}", m.name),
        };
        if whereabouts != want_place {
            problems.push(format!(
                "{}/{}: expected {}, but it is {whereabouts}",
                m.domain, m.name, m.outcome
            ));
            continue;
        }
        let want_status = match m.outcome.as_str() {
            "delivered" => Some("sent"),
            "queued" => Some("deferred"),
            "failed" | "bounced" => Some("bounced"),
            _ => None,
        };
        if let Some(status) = want_status {
            for rcpt in &file.recipients {
                let last = deliveries
                    .iter()
                    .rfind(|d| &d.to == rcpt && d.queue_id == m.name);
                if last.map(|d| d.status.as_str()) != Some(status) {
                    problems.push(format!(
                        "{}/{}: {rcpt} should be logged {status}, last record {last:?}",
                        m.domain, m.name
                    ));
                }
            }
        }
        match m.outcome.as_str() {
            "delivered" => {
                let want = on_the_wire(&file.message);
                let copies: Vec<_> = received.iter().filter(|r| r.data == want).collect();
                let got: BTreeSet<&String> = copies.iter().flat_map(|r| &r.rcpt_tos).collect();
                let wanted: BTreeSet<&String> = file.recipients.iter().collect();
                if got != wanted {
                    problems.push(format!(
                        "{}/{}: the sink got the exact message for {got:?}, expected {wanted:?}",
                        m.domain, m.name
                    ));
                }
            }
            "bounced" => {
                // One DSN to the sender, naming this queue file.
                let sender = file.sender.as_str();
                let marker = format!("X-Postman-Queue-ID: {}", m.name);
                let mine: Vec<String> = queue
                    .bounces_to(sender)
                    .iter()
                    .map(|b| b.text())
                    .filter(|t| t.contains(&marker))
                    .collect();
                if mine.len() != 1 {
                    problems.push(format!(
                        "{}/{}: expected one bounce to <{sender}>, found {}",
                        m.domain,
                        m.name,
                        mine.len()
                    ));
                } else if let Some(want) = &m.reason_contains {
                    if !mine[0].to_lowercase().contains(&want.to_lowercase()) {
                        problems.push(format!(
                            "{}/{}: the bounce lacks {want:?}: {}",
                            m.domain, m.name, mine[0]
                        ));
                    }
                }
            }
            "failed" => {
                let entry = state.failed_entry(&m.domain, &m.name).unwrap();
                let reason = entry.reason.clone().unwrap_or_default();
                if reason.trim().is_empty() {
                    problems.push(format!("{}/{}: no .reason", m.domain, m.name));
                }
                if let Some(want) = &m.reason_contains {
                    if !reason.to_lowercase().contains(&want.to_lowercase()) {
                        problems.push(format!(
                            "{}/{}: reason {reason:?} lacks {want:?}",
                            m.domain, m.name
                        ));
                    }
                }
            }
            "quarantined" => {
                let entry = state.quarantined_entry(&m.domain, &m.name).unwrap();
                if entry.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                    problems.push(format!("{}/{}: no .reason", m.domain, m.name));
                }
                if !out.quarantines().iter().any(|q| q.queue_id == m.name) {
                    problems.push(format!(
                        "{}/{}: no quarantined log record",
                        m.domain, m.name
                    ));
                }
            }
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "case {case}:\n  {}\n--- queue ---\n{state:#?}\n--- stderr ---\n{}",
        problems.join("\n  "),
        out.stderr
    );
}

#[test]
fn recorded_queues_replay_as_expected() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(RECORDED)
        .unwrap_or_else(|e| panic!("{RECORDED}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("expect.toml").is_file())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no recorded cases under {RECORDED}");
    for case in &cases {
        replay(case);
    }
}

#[test]
fn replay_helpers_keep_the_date_form_and_split_the_file() {
    assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(1_764_251_201),
        "Thu, 27 Nov 2025 13:46:41 +0000"
    );
    let f = parse_queue_file(
        b"X-Postman-From: <a@b>\r\nX-Postman-To: <x@d>, <y@d>\r\n\r\nSubject: s\r\n\r\nbody",
    );
    assert_eq!(f.recipients, ["x@d", "y@d"]);
    assert_eq!(f.message, b"Subject: s\r\n\r\nbody");
    let r =
        refresh_date(b"X-Postman-Date: 17\r\nX-Postman-To: <x@d>\r\n\r\nX-Postman-Date: 17\r\n");
    let text = String::from_utf8(r).unwrap();
    assert!(text.starts_with("X-Postman-Date: "), "{text:?}");
    assert!(
        !text.starts_with("X-Postman-Date: 17\r\n"),
        "the envelope date is refreshed: {text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\nX-Postman-Date: 17\r\n"),
        "the message is untouched: {text:?}"
    );
}
