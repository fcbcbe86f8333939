//! From what a worker saw on one connection to an MX host, and the policy
//! it ran under, to the [`Session`] the TLS report counts (RFC 8460 §4.3).

use std::net::IpAddr;

use super::session::{Applied, Failure, ResultType, Session, SessionResult};
use crate::mta_sts::Mode;
use crate::tls::{Applied as Ran, DaneStatus, Decision, Refusal, StsStatus};

/// What TLS came to on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The host was not connected to: a policy ruled it out.
    Refused(Refusal),
    /// TLS was set up. `passed`: the certificate passed the check the
    /// policy asked for, or, where any certificate would do, the check of
    /// chain and MX name made for the record.
    Tls { passed: bool },
    /// The server did not offer STARTTLS.
    NoStarttls,
    /// The handshake failed.
    HandshakeFailed(HandshakeFailure),
}

/// Why a handshake failed, as far as TLS-RPT tells them apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The certificate names none of the names it had to.
    HostMismatch(String),
    /// It has expired (or is not valid yet).
    Expired(String),
    /// It does not chain to a trusted root.
    NotTrusted(String),
    /// It matches none of the host's TLSA records.
    Dane(String),
    /// Anything else: an alert, a protocol error, a closed connection.
    Other(String),
}

/// The connection the session was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection<'a> {
    /// When it ended, seconds since the Unix epoch.
    pub at: u64,
    /// The recipient domain: the policy domain.
    pub domain: &'a str,
    /// The MX host.
    pub host: &'a str,
    /// This host's address on it, if one was bound or known.
    pub local: Option<IpAddr>,
    /// The MX host's address, if connected.
    pub remote: Option<IpAddr>,
}

/// The session for the report: the policy it was held to (DANE's TLSA
/// records, the MTA-STS policy, or none), and whether TLS met it.
pub fn observe(
    conn: &Connection<'_>,
    decision: &Decision,
    sts: &StsStatus,
    dane: &DaneStatus,
    seen: Seen,
) -> Session {
    let policy = policy(conn.host, decision, sts, dane);
    let unavailable = match (&policy, sts) {
        (Applied::Sts { lines, .. }, StsStatus::Unavailable(problem)) if lines.is_empty() => {
            Some((ResultType::for_sts_problem(problem), problem.to_string()))
        }
        _ => None,
    };
    let failed = |result_type: ResultType, why: String| {
        SessionResult::Failure(Failure {
            result_type,
            sending_mta_ip: conn.local,
            receiving_mx_hostname: Some(conn.host.to_owned()),
            receiving_ip: conn.remote,
            additional_information: None,
            failure_reason_code: Some(why),
        })
    };
    let result = if let Some((result_type, why)) = unavailable {
        failed(result_type, why)
    } else {
        match seen {
            Seen::Refused(refusal) => {
                let result_type = match &refusal {
                    Refusal::TlsaLookupFailed { .. } => ResultType::DnssecInvalid,
                    Refusal::DaneRequired { .. } | Refusal::DaneUnusable { .. } => {
                        ResultType::DaneRequired
                    }
                    Refusal::NotInStsPolicy { .. } | Refusal::StsRequired { .. } => {
                        ResultType::ValidationFailure
                    }
                };
                failed(result_type, refusal.to_string())
            }
            Seen::Tls { passed } => {
                let checked = matches!(policy, Applied::Sts { .. } | Applied::Tlsa { .. });
                let listed = match (&policy, sts) {
                    (Applied::Sts { .. }, StsStatus::Policy(active)) => {
                        active.policy.matches(conn.host)
                    }
                    _ => true,
                };
                if !listed {
                    failed(
                        ResultType::ValidationFailure,
                        format!("{} is not an MX host of the MTA-STS policy", conn.host),
                    )
                } else if passed || !checked {
                    SessionResult::Success
                } else {
                    failed(
                        ResultType::CertificateNotTrusted,
                        "certificate not valid for the MX host name".to_owned(),
                    )
                }
            }
            Seen::NoStarttls => failed(
                ResultType::StarttlsNotSupported,
                "STARTTLS not offered".to_owned(),
            ),
            Seen::HandshakeFailed(failure) => {
                let (result_type, why) = match failure {
                    HandshakeFailure::HostMismatch(why) => {
                        (ResultType::CertificateHostMismatch, why)
                    }
                    HandshakeFailure::Expired(why) => (ResultType::CertificateExpired, why),
                    HandshakeFailure::NotTrusted(why) => (ResultType::CertificateNotTrusted, why),
                    HandshakeFailure::Dane(why) => (ResultType::TlsaInvalid, why),
                    HandshakeFailure::Other(why) => (ResultType::ValidationFailure, why),
                };
                failed(result_type, why)
            }
        }
    };
    Session {
        at: conn.at,
        policy_domain: conn.domain.to_owned(),
        policy,
        result,
    }
}

/// The policy a session is reported under: DANE where it decided, the
/// MTA-STS policy where one applies (also in testing mode, and an
/// announced one that could not be had), else none.
fn policy(host: &str, decision: &Decision, sts: &StsStatus, dane: &DaneStatus) -> Applied {
    match decision.applied {
        Ran::Dane => {
            let records = match dane {
                DaneStatus::Usable(records) => &records[..],
                _ => &[],
            };
            return Applied::tlsa(records, host);
        }
        Ran::Plaintext | Ran::Verify | Ran::Secure => return Applied::NoPolicyFound,
        Ran::Opportunistic
        | Ran::Encrypt
        | Ran::DaneUnusable
        | Ran::StsEnforce
        | Ran::StsTesting => {}
    }
    match sts {
        StsStatus::Policy(active) if active.policy.mode != Mode::None => {
            Applied::sts(&active.policy)
        }
        StsStatus::Unavailable(_) => Applied::sts_unavailable(),
        StsStatus::Policy(_) | StsStatus::NoPolicy | StsStatus::NotLooked => Applied::NoPolicyFound,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dane::Tlsa;
    use crate::mta_sts::Policy;
    use crate::tls::{decide, ActiveSts, Discovery, Level, NoDane, StsProblem};

    const ON: Discovery = Discovery {
        dane: true,
        mta_sts: true,
    };

    fn sts(mode: &str) -> StsStatus {
        let text = format!("version: STSv1\nmode: {mode}\nmax_age: 600\nmx: mx1.d.test\n");
        StsStatus::Policy(Arc::new(ActiveSts {
            id: "1".into(),
            policy: Policy::parse(&text).expect("a policy"),
        }))
    }

    /// `policy-type result-type` (or `success`), for the table.
    fn summary(session: &Session) -> String {
        let result = match &session.result {
            SessionResult::Success => "success".to_owned(),
            SessionResult::Failure(f) => f.result_type.to_string(),
        };
        format!("{} {result}", session.policy.type_name())
    }

    #[test]
    fn each_way_a_session_ends_is_counted_under_its_policy() {
        let usable = DaneStatus::Usable(Arc::from(vec![Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![1; 32],
        }]));
        let none = DaneStatus::NotApplicable(NoDane::NoTlsa);
        let failed = DaneStatus::Failed("SERVFAIL".into());
        let enforce = sts("enforce");
        let testing = sts("testing");
        let unavailable = StsStatus::Unavailable(StsProblem::Fetch("refused".into()));
        let nothing = StsStatus::NoPolicy;
        let refused = |host: &str, dane: &DaneStatus, sts: &StsStatus| match decide(
            Level::May,
            ON,
            "d.test",
            host,
            dane,
            sts,
        )
        .action
        {
            crate::tls::Action::Refuse(r) => Seen::Refused(r),
            other => panic!("not refused: {other:?}"),
        };
        let mismatch = HandshakeFailure::HostMismatch("names other.test".into());
        let cases: Vec<(&str, &DaneStatus, &StsStatus, Seen, &str)> = vec![
            (
                "mx1.d.test",
                &usable,
                &enforce,
                Seen::Tls { passed: true },
                "tlsa success",
            ),
            (
                "mx1.d.test",
                &usable,
                &nothing,
                Seen::HandshakeFailed(HandshakeFailure::Dane("no match".into())),
                "tlsa tlsa-invalid",
            ),
            (
                "mx1.d.test",
                &failed,
                &nothing,
                refused("mx1.d.test", &failed, &nothing),
                "tlsa dnssec-invalid",
            ),
            (
                "mx1.d.test",
                &none,
                &enforce,
                Seen::Tls { passed: true },
                "sts success",
            ),
            (
                "mx1.d.test",
                &none,
                &enforce,
                Seen::HandshakeFailed(mismatch),
                "sts certificate-host-mismatch",
            ),
            (
                "mx1.d.test",
                &none,
                &enforce,
                Seen::NoStarttls,
                "sts starttls-not-supported",
            ),
            (
                "mx2.d.test",
                &none,
                &enforce,
                refused("mx2.d.test", &none, &enforce),
                "sts validation-failure",
            ),
            (
                "mx1.d.test",
                &none,
                &testing,
                Seen::Tls { passed: false },
                "sts certificate-not-trusted",
            ),
            (
                "mx2.d.test",
                &none,
                &testing,
                Seen::Tls { passed: true },
                "sts validation-failure",
            ),
            (
                "mx1.d.test",
                &none,
                &testing,
                Seen::Tls { passed: true },
                "sts success",
            ),
            (
                "mx1.d.test",
                &none,
                &unavailable,
                Seen::Tls { passed: true },
                "sts sts-policy-fetch-error",
            ),
            (
                "mx1.d.test",
                &none,
                &nothing,
                Seen::Tls { passed: false },
                "no-policy-found success",
            ),
            (
                "mx1.d.test",
                &none,
                &nothing,
                Seen::NoStarttls,
                "no-policy-found starttls-not-supported",
            ),
        ];
        for (host, dane, sts, seen, want) in cases {
            let decision = decide(Level::May, ON, "d.test", host, dane, sts);
            let conn = Connection {
                at: 1_765_152_000,
                domain: "d.test",
                host,
                local: None,
                remote: Some("192.0.2.1".parse().expect("an address")),
            };
            let session = observe(&conn, &decision, sts, dane, seen.clone());
            assert_eq!(summary(&session), want, "{host} {dane:?} {sts:?} {seen:?}");
            assert_eq!(session.policy_domain, "d.test");
            if let SessionResult::Failure(f) = &session.result {
                assert_eq!(f.receiving_mx_hostname.as_deref(), Some(host));
                assert!(f.failure_reason_code.is_some(), "{want}: says why");
            }
        }
    }
}
