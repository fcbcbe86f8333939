//! What one delivery session to an MX host tells the TLS report (RFC 8460
//! §4.3): the policy that applied and whether TLS met it, or which check
//! failed. The workers make one [`Session`] per connection; the reporter
//! appends it to the day's journal as one JSON line ([`Session::to_line`])
//! and reads the journal back with [`decode`] to aggregate the day.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::dane::Tlsa;
use crate::mta_sts::Policy;
use crate::tls::StsProblem;

/// The result types of RFC 8460 §4.3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResultType {
    /// The server did not offer STARTTLS (§4.3.1).
    StarttlsNotSupported,
    /// The certificate names none of the names it had to (§4.3.1).
    CertificateHostMismatch,
    /// The certificate has expired (§4.3.1).
    CertificateExpired,
    /// The certificate does not chain to a trusted root (§4.3.1).
    CertificateNotTrusted,
    /// Any other failure to set up or validate TLS (§4.3.1); the
    /// failure reason code says more.
    ValidationFailure,
    /// None of the TLSA records were valid for the server (§4.3.2).
    TlsaInvalid,
    /// No valid TLSA records came back from the resolver: a SERVFAIL or a
    /// bogus answer (§4.3.2).
    DnssecInvalid,
    /// DANE applied but the server could not do it (§4.3.2).
    DaneRequired,
    /// The MTA-STS policy could not be fetched (§4.3.3).
    StsPolicyFetchError,
    /// The MTA-STS policy did not parse (§4.3.3).
    StsPolicyInvalid,
    /// The MTA-STS policy server's certificate was not valid (§4.3.3).
    StsWebpkiInvalid,
}

impl ResultType {
    /// Every result type, in the RFC's order.
    pub const ALL: [ResultType; 11] = [
        ResultType::StarttlsNotSupported,
        ResultType::CertificateHostMismatch,
        ResultType::CertificateExpired,
        ResultType::CertificateNotTrusted,
        ResultType::ValidationFailure,
        ResultType::TlsaInvalid,
        ResultType::DnssecInvalid,
        ResultType::DaneRequired,
        ResultType::StsPolicyFetchError,
        ResultType::StsPolicyInvalid,
        ResultType::StsWebpkiInvalid,
    ];

    /// The name the report uses.
    pub fn as_str(&self) -> &'static str {
        match self {
            ResultType::StarttlsNotSupported => "starttls-not-supported",
            ResultType::CertificateHostMismatch => "certificate-host-mismatch",
            ResultType::CertificateExpired => "certificate-expired",
            ResultType::CertificateNotTrusted => "certificate-not-trusted",
            ResultType::ValidationFailure => "validation-failure",
            ResultType::TlsaInvalid => "tlsa-invalid",
            ResultType::DnssecInvalid => "dnssec-invalid",
            ResultType::DaneRequired => "dane-required",
            ResultType::StsPolicyFetchError => "sts-policy-fetch-error",
            ResultType::StsPolicyInvalid => "sts-policy-invalid",
            ResultType::StsWebpkiInvalid => "sts-webpki-invalid",
        }
    }

    /// The result type of a policy that was announced but could not be had.
    pub fn for_sts_problem(problem: &StsProblem) -> ResultType {
        match problem {
            StsProblem::Fetch(_) => ResultType::StsPolicyFetchError,
            StsProblem::WebPki(_) => ResultType::StsWebpkiInvalid,
            StsProblem::Invalid(_) => ResultType::StsPolicyInvalid,
        }
    }
}

impl fmt::Display for ResultType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy a session was held to (RFC 8460 §4.4 `policy`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Applied {
    /// The domain's MTA-STS policy: its lines and its `mx` patterns. Both
    /// are empty when the policy was announced but could not be had (the
    /// session then fails with an `sts-*` result type).
    Sts { lines: Vec<String>, mx: Vec<String> },
    /// The MX host's TLSA records in presentation form (RFC 6698 §2.2,
    /// `3 1 1 <HEX>`), and the host.
    Tlsa {
        records: Vec<String>,
        mx_host: String,
    },
    /// Neither applied.
    NoPolicyFound,
}

impl Applied {
    /// An MTA-STS policy, as the report shows it: the policy file's lines
    /// and its `mx` patterns.
    pub fn sts(policy: &Policy) -> Applied {
        Applied::Sts {
            lines: policy.to_string().lines().map(str::to_owned).collect(),
            mx: policy.mx.iter().map(ToString::to_string).collect(),
        }
    }

    /// An MTA-STS policy that was announced but could not be fetched or
    /// read.
    pub fn sts_unavailable() -> Applied {
        Applied::Sts {
            lines: Vec::new(),
            mx: Vec::new(),
        }
    }

    /// DANE with `records` for the MX host `mx_host` (trailing dot
    /// dropped, lower case).
    pub fn tlsa(records: &[Tlsa], mx_host: &str) -> Applied {
        let host = mx_host.strip_suffix('.').unwrap_or(mx_host);
        Applied::Tlsa {
            records: records.iter().map(presentation).collect(),
            mx_host: host.to_ascii_lowercase(),
        }
    }

    /// `policy-type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Applied::Sts { .. } => "sts",
            Applied::Tlsa { .. } => "tlsa",
            Applied::NoPolicyFound => "no-policy-found",
        }
    }
}

/// A TLSA record as a zone file writes its data: usage, selector,
/// matching type, and the data in upper-case hex (RFC 6698 §2.2).
fn presentation(tlsa: &Tlsa) -> String {
    use fmt::Write as _;
    let mut out = format!("{} {} {} ", tlsa.usage, tlsa.selector, tlsa.matching);
    for b in &tlsa.data {
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// Why one session failed (RFC 8460 §4.4 `failure-details`, one session).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Failure {
    pub result_type: ResultType,
    /// This host's address on the connection, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<IpAddr>,
    /// The MX host's name, when the failure concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    /// The MX host's address, when a connection was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<IpAddr>,
    /// A URI with more about the failure (`additional-information`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    /// A short error code or text (`failure-reason-code`), such as the TLS
    /// alert or the verifier's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

impl Failure {
    /// A failure of `result_type` with nothing else known yet.
    pub fn new(result_type: ResultType) -> Failure {
        Failure {
            result_type,
            sending_mta_ip: None,
            receiving_mx_hostname: None,
            receiving_ip: None,
            additional_information: None,
            failure_reason_code: None,
        }
    }
}

/// How a session went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionResult {
    /// TLS was set up as the policy asked.
    Success,
    /// It was not, and why.
    Failure(Failure),
}

/// One delivery session to an MX host, as TLS-RPT counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Session {
    /// When it ended (seconds since the Unix epoch, UTC): the day it is
    /// reported for.
    pub at: u64,
    /// The policy domain (the recipient domain; RFC 8460 §4.4): the
    /// report goes to this domain's `_smtp._tls` addresses.
    pub policy_domain: String,
    pub policy: Applied,
    pub result: SessionResult,
}

/// The longest journal line [`decode`] reads: a session is well under a
/// few kilobytes even with many TLSA records, so a longer line is not one.
pub const MAX_LINE: usize = 64 * 1024;

impl Session {
    /// The journal line: one JSON object and a line feed. Append it with a
    /// single `write` so that a crash leaves at most a torn last line.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string
        // keys, no floats, no custom serializers.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// A journal read back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Journal {
    /// The sessions of the complete lines that parsed, in order.
    pub sessions: Vec<Session>,
    /// Complete lines that did not parse (1-based line numbers): counted
    /// for the log, left out of the report.
    pub bad_lines: Vec<usize>,
    /// Whether the journal ended in a torn line (no line feed), which was
    /// ignored: a write cut short by a crash. The writer must start its
    /// next line on a fresh one (write a line feed first).
    pub torn: bool,
}

/// Reads a journal written with [`Session::to_line`]. A last line without
/// its line feed is a write a crash cut short and is ignored, not an
/// error; a complete line that does not parse is skipped and reported in
/// [`Journal::bad_lines`], so one bad line cannot lose a day's report.
pub fn decode(bytes: &[u8]) -> Journal {
    let mut journal = Journal::default();
    let mut lines = bytes.split(|b| *b == b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        if lines.peek().is_none() {
            // The part after the last line feed: empty for a whole
            // journal, else a torn line.
            journal.torn = !line.is_empty();
            break;
        }
        if line.is_empty() {
            continue;
        }
        match (line.len() <= MAX_LINE)
            .then(|| serde_json::from_slice::<Session>(line).ok())
            .flatten()
        {
            Some(session) => journal.sessions.push(session),
            None => journal.bad_lines.push(i + 1),
        }
    }
    journal
}
