//! The daily aggregate report (RFC 8460 §4): one UTC day's sessions to one
//! policy domain, counted per policy that applied, as the JSON of §4.4,
//! gzipped (§5.2) under the file name of §5.1.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;

use chrono::{DateTime, NaiveDate};
use serde::Serialize;

use super::session::{Applied, Failure, Session, SessionResult};

const SECONDS_PER_DAY: u64 = 86_400;

/// One UTC day: the span a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NaiveDate);

impl Day {
    /// The UTC day holding `secs` (seconds since the Unix epoch); `None`
    /// past the year 262143.
    pub fn of(secs: u64) -> Option<Day> {
        let secs = i64::try_from(secs).ok()?;
        DateTime::from_timestamp(secs, 0).map(|t| Day(t.date_naive()))
    }

    /// The day from a date.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        NaiveDate::from_ymd_opt(year, month, day).map(Day)
    }

    /// Its first second, since the Unix epoch (`None` before 1970).
    pub fn start(&self) -> Option<u64> {
        let start = self.0.and_hms_opt(0, 0, 0)?.and_utc().timestamp();
        u64::try_from(start).ok()
    }

    /// Its last second (the report's `end-datetime` is `23:59:59Z`, as in
    /// RFC 8460's example).
    pub fn end(&self) -> Option<u64> {
        Some(self.start()? + SECONDS_PER_DAY - 1)
    }

    /// The day after.
    pub fn next(&self) -> Option<Day> {
        self.0.succ_opt().map(Day)
    }

    /// Whether `secs` falls on this day.
    pub fn contains(&self, secs: u64) -> bool {
        Day::of(secs) == Some(*self)
    }
}

impl fmt::Display for Day {
    /// `YYYY-MM-DD`: also the journal file's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// Who reports: the settings that go into every report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitter {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`: an address or URI for questions about the reports.
    pub contact: String,
    /// The submitter's domain (§5.1 `sender`, §5.3 `TLS-Report-Submitter`;
    /// also the DKIM signing domain of mailed reports).
    pub domain: String,
    /// An optional unique id of this host among the organization's
    /// senders (§5.1 `unique-id`: letters and digits; others are dropped),
    /// so that reports from several hosts about one day do not collide.
    pub unique_id: Option<String>,
}

/// One policy domain's report for one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub day: Day,
    pub policy_domain: String,
    /// `report-id`, also `<report-id>` in the mail's Subject: a msg-id
    /// (`id-left@id-right`), the same on every attempt to send this
    /// report.
    pub report_id: String,
    /// The RFC 8460 §4.4 JSON.
    pub json: Vec<u8>,
}

impl Report {
    /// The §5.1 file name of the gzipped report.
    pub fn file_name(&self, submitter: &Submitter) -> String {
        let start = self.day.start().unwrap_or_default();
        let end = self.day.end().unwrap_or_default();
        file_name(
            &submitter.domain,
            &self.policy_domain,
            start,
            end,
            submitter.unique_id.as_deref(),
        )
    }

    /// The report gzipped (§5.2), as mailed or POSTed.
    pub fn gzip(&self) -> Vec<u8> {
        gzip(&self.json)
    }
}

/// `<sender>!<policy-domain>!<begin>!<end>[!<unique-id>].json.gz` (RFC
/// 8460 §5.1), timestamps in seconds since the Unix epoch. A unique id is
/// kept to its letters and digits and left out when none remain.
pub fn file_name(
    submitter: &str,
    policy_domain: &str,
    begin: u64,
    end: u64,
    unique_id: Option<&str>,
) -> String {
    let mut name = format!("{submitter}!{policy_domain}!{begin}!{end}");
    let unique: String = unique_id
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    if !unique.is_empty() {
        name.push('!');
        name.push_str(&unique);
    }
    name.push_str(".json.gz");
    name
}

/// `data` gzipped with flate2's default level.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail, nor can finishing the stream there.
    let _ = encoder.write_all(data);
    encoder.finish().unwrap_or_default()
}

/// The day's reports, one per policy domain in name order, from the
/// sessions that fall on `day` (others are ignored: a journal is one day's
/// file, but a clock step may put a session on either side of midnight).
pub fn aggregate(day: Day, sessions: &[Session], submitter: &Submitter) -> Vec<Report> {
    // domain → policy → (successes, failure → count); BTreeMaps keep the
    // output the same for the same sessions in any order.
    type Counts<'a> = BTreeMap<&'a Applied, (u64, BTreeMap<&'a Failure, u64>)>;
    let mut domains: BTreeMap<String, Counts<'_>> = BTreeMap::new();
    for session in sessions.iter().filter(|s| day.contains(s.at)) {
        let domain = normalize(&session.policy_domain);
        let entry = domains
            .entry(domain)
            .or_default()
            .entry(&session.policy)
            .or_default();
        match &session.result {
            SessionResult::Success => entry.0 += 1,
            SessionResult::Failure(failure) => *entry.1.entry(failure).or_default() += 1,
        }
    }
    domains
        .into_iter()
        .map(|(domain, policies)| {
            let report_id = report_id(day, &domain, submitter);
            let body = Body {
                organization_name: &submitter.organization,
                date_range: DateRange {
                    start_datetime: rfc3339(day.start()),
                    end_datetime: rfc3339(day.end()),
                },
                contact_info: &submitter.contact,
                report_id: &report_id,
                policies: policies
                    .into_iter()
                    .map(|(applied, (successes, failures))| PolicyEntry {
                        policy: PolicyDesc::new(applied, &domain),
                        summary: Summary {
                            total_successful_session_count: successes,
                            total_failure_session_count: failures.values().sum(),
                        },
                        failure_details: failures
                            .into_iter()
                            .map(|(failure, count)| FailureDetail {
                                failure,
                                failed_session_count: count,
                            })
                            .collect(),
                    })
                    .collect(),
            };
            // These types serialize without error (string keys, no floats).
            let json = serde_json::to_vec_pretty(&body).unwrap_or_default();
            Report {
                day,
                policy_domain: domain,
                report_id,
                json,
            }
        })
        .collect()
}

/// A domain as reports name it: lower case, no trailing dot.
fn normalize(domain: &str) -> String {
    domain
        .strip_suffix('.')
        .unwrap_or(domain)
        .to_ascii_lowercase()
}

/// `<YYYYMMDD>.<policy-domain>[.<unique-id>]@<submitter>`: a msg-id
/// (RFC 5322 §3.6.4) that says what the report is, and is the same each
/// time the day's report is made again.
fn report_id(day: Day, policy_domain: &str, submitter: &Submitter) -> String {
    let mut left = format!("{}.{policy_domain}", day.0.format("%Y%m%d"));
    if let Some(unique) = submitter.unique_id.as_deref() {
        let unique: String = unique.chars().filter(char::is_ascii_alphanumeric).collect();
        if !unique.is_empty() {
            left.push('.');
            left.push_str(&unique);
        }
    }
    format!("{left}@{}", submitter.domain)
}

/// RFC 3339 `date-time` in UTC with `Z`.
fn rfc3339(secs: Option<u64>) -> String {
    let secs = secs.and_then(|s| i64::try_from(s).ok()).unwrap_or_default();
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The report of RFC 8460 §4.4, field for field.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Body<'a> {
    organization_name: &'a str,
    date_range: DateRange,
    contact_info: &'a str,
    report_id: &'a str,
    /// Always an array, even with one policy (§4).
    policies: Vec<PolicyEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct DateRange {
    start_datetime: String,
    end_datetime: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct PolicyEntry<'a> {
    policy: PolicyDesc<'a>,
    summary: Summary,
    failure_details: Vec<FailureDetail<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct PolicyDesc<'a> {
    policy_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy_string: Option<&'a [String]>,
    policy_domain: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mx_host: Option<Vec<&'a str>>,
}

impl<'a> PolicyDesc<'a> {
    /// `policy-string` and `mx-host` are JSON arrays of strings (§4.4; the
    /// STS `mx` patterns, or the one MX host of a TLSA policy), left out
    /// when there is nothing to say (no policy; a policy that could not
    /// be fetched).
    fn new(applied: &'a Applied, domain: &'a str) -> PolicyDesc<'a> {
        let (policy_string, mx_host) = match applied {
            Applied::Sts { lines, mx } => (
                (!lines.is_empty()).then_some(lines.as_slice()),
                (!mx.is_empty()).then(|| mx.iter().map(String::as_str).collect()),
            ),
            Applied::Tlsa { records, mx_host } => {
                (Some(records.as_slice()), Some(vec![mx_host.as_str()]))
            }
            Applied::NoPolicyFound => (None, None),
        };
        PolicyDesc {
            policy_type: applied.type_name(),
            policy_string,
            policy_domain: domain,
            mx_host,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Summary {
    total_successful_session_count: u64,
    total_failure_session_count: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct FailureDetail<'a> {
    #[serde(flatten)]
    failure: &'a Failure,
    failed_session_count: u64,
}
