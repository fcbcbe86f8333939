//! The decision for one MX host: from the destination's level and what
//! DNSSEC and MTA-STS found, what a connection to it must have, or why the
//! host may not be used at all.
//!
//! Precedence (RFC 8461 §2, RFC 7672 §2.2, Postfix's `smtp_tls_policy.c`):
//! `none`, `verify` and `secure` are taken as configured. Otherwise usable
//! DANE records decide; a failed TLSA lookup refuses the host rather than
//! downgrade; then an MTA-STS policy in `enforce` mode; then the level's
//! own floor. MTA-STS never overrides a failing DANE check: a DANE host's
//! certificate is judged by its TLSA records alone.

use std::fmt;
use std::sync::Arc;

use crate::dane::Tlsa;
use crate::mta_sts::Mode;
use crate::smtp::{EnhancedCode, TlsMode};

use super::found::{DaneStatus, NoDane, StsStatus};
use super::level::Level;

/// Which policy a connection runs under: the first word of the delivery
/// record's `tls` field, and TLS-RPT's policy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Applied {
    /// `none`: plaintext by configuration.
    Plaintext,
    /// `may` (or `dane` with nothing published): TLS when offered.
    Opportunistic,
    /// `encrypt`: TLS required, any certificate.
    Encrypt,
    /// The host's DANE TLSA records.
    Dane,
    /// The host has DNSSEC-signed TLSA records, none usable: TLS required,
    /// no authentication (RFC 7672 §2.2).
    DaneUnusable,
    /// The domain's MTA-STS policy in `enforce` mode.
    StsEnforce,
    /// The domain's MTA-STS policy in `testing` mode: delivered as without
    /// it, and reported.
    StsTesting,
    /// `verify`: a trusted certificate naming the MX host.
    Verify,
    /// `secure`: a trusted certificate naming the recipient domain.
    Secure,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Plaintext => "none",
            Applied::Opportunistic => "opportunistic",
            Applied::Encrypt => "encrypt",
            Applied::Dane => "dane",
            Applied::DaneUnusable => "dane-unusable",
            Applied::StsEnforce => "mta-sts-enforce",
            Applied::StsTesting => "mta-sts-testing",
            Applied::Verify => "verify",
            Applied::Secure => "secure",
        }
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the server's certificate is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Any certificate (it is still checked, for the record's
    /// `verified`, but a failure does not stop the session).
    Any,
    /// It must chain to a trusted root (the system's, `tls.ca_file`) and
    /// name one of `names`: a host name, or `.domain` for any host under
    /// that domain.
    Pkix { names: Vec<String> },
    /// It must match one of the TLSA records, with `names` as the
    /// reference identifiers of a DANE-TA match (RFC 7672 §3.2).
    Dane {
        tlsa: Arc<[Tlsa]>,
        names: Vec<String>,
    },
}

impl Check {
    /// The certificate must pass for the session to go on.
    pub fn enforced(&self) -> bool {
        !matches!(self, Check::Any)
    }
}

/// The status of a deferral when every host failed a TLS policy (a
/// refused host, a certificate that failed an enforced check): 4.7.5,
/// "Cryptographic failure", as Postfix gives.
pub const POLICY_STATUS: EnhancedCode = EnhancedCode {
    class: 4,
    subject: 7,
    detail: 5,
};

/// Why a host may not be used. Each is temporary (the records or the
/// policy may change), status 4.7.5 as Postfix gives for its TLS policy
/// failures; the texts go into the deferral reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The TLSA lookup failed: the host may have records that cannot be
    /// seen, so it is not used without them (RFC 7672 §2.2).
    #[error("TLSA lookup for {host} failed: {why}")]
    TlsaLookupFailed { host: String, why: String },
    /// `dane-only`, and the host has no usable DANE.
    #[error("{host}: DANE required, but {why}")]
    DaneRequired { host: String, why: NoDane },
    /// `dane-only`, and the host's TLSA records are all unusable.
    #[error("{host}: DANE required, but no TLSA record is usable for SMTP")]
    DaneUnusable { host: String },
    /// The domain's MTA-STS policy in `enforce` mode does not list the host.
    #[error("{host} is not an MX host of the MTA-STS policy (id {id})")]
    NotInStsPolicy { host: String, id: String },
    /// `mta-sts`, and the domain has no policy in `enforce` mode.
    #[error("MTA-STS required, but {why}")]
    StsRequired { why: String },
}

/// What a connection to one MX host must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Connect, with this STARTTLS policy and certificate check.
    Connect { starttls: TlsMode, check: Check },
    /// Do not connect to this host.
    Refuse(Refusal),
}

/// The decision for one MX host, and the policy it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub applied: Applied,
    pub action: Action,
}

impl Decision {
    fn connect(applied: Applied, starttls: TlsMode, check: Check) -> Decision {
        Decision {
            applied,
            action: Action::Connect { starttls, check },
        }
    }

    fn refuse(applied: Applied, refusal: Refusal) -> Decision {
        Decision {
            applied,
            action: Action::Refuse(refusal),
        }
    }
}

/// What `tls.dane` and `tls.mta_sts` switch on for levels that discover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discovery {
    pub dane: bool,
    pub mta_sts: bool,
}

/// Decides for `host`, an MX host of `domain` (both lower-case A-labels),
/// at `level`, with what the resolver found about the host's TLSA records
/// and the domain's MTA-STS policy.
pub fn decide(
    level: Level,
    discovery: Discovery,
    domain: &str,
    host: &str,
    dane: &DaneStatus,
    sts: &StsStatus,
) -> Decision {
    use TlsMode::{Disabled, Opportunistic, Required};
    let pkix = |names: Vec<String>| Check::Pkix { names };
    match level {
        Level::None => return Decision::connect(Applied::Plaintext, Disabled, Check::Any),
        Level::Verify => {
            return Decision::connect(Applied::Verify, Required, pkix(vec![host.to_owned()]))
        }
        Level::Secure => {
            let names = vec![domain.to_owned(), format!(".{domain}")];
            return Decision::connect(Applied::Secure, Required, pkix(names));
        }
        Level::May | Level::Encrypt | Level::Dane | Level::DaneOnly | Level::MtaSts => {}
    }
    let mut unusable = false;
    if level.wants_dane(discovery.dane) {
        match dane {
            DaneStatus::Usable(tlsa) => {
                let check = Check::Dane {
                    tlsa: Arc::clone(tlsa),
                    names: vec![host.to_owned()],
                };
                return Decision::connect(Applied::Dane, Required, check);
            }
            DaneStatus::Failed(why) => {
                let refusal = Refusal::TlsaLookupFailed {
                    host: host.to_owned(),
                    why: why.clone(),
                };
                return Decision::refuse(Applied::Dane, refusal);
            }
            DaneStatus::Unusable if level == Level::DaneOnly => {
                let refusal = Refusal::DaneUnusable {
                    host: host.to_owned(),
                };
                return Decision::refuse(Applied::Dane, refusal);
            }
            DaneStatus::Unusable => unusable = true,
            DaneStatus::NotApplicable(why) if level == Level::DaneOnly => {
                let refusal = Refusal::DaneRequired {
                    host: host.to_owned(),
                    why: *why,
                };
                return Decision::refuse(Applied::Dane, refusal);
            }
            DaneStatus::NotApplicable(_) => {}
        }
    } else if level == Level::DaneOnly {
        // Unreachable through wants_dane, kept for a level added later.
        let refusal = Refusal::DaneRequired {
            host: host.to_owned(),
            why: NoDane::NotLooked,
        };
        return Decision::refuse(Applied::Dane, refusal);
    }
    let mut testing = false;
    if level.wants_sts(discovery.mta_sts) {
        match sts {
            StsStatus::Policy(active) if active.policy.mode == Mode::Enforce => {
                if active.policy.matches(host) {
                    let check = pkix(vec![host.to_owned()]);
                    return Decision::connect(Applied::StsEnforce, Required, check);
                }
                let refusal = Refusal::NotInStsPolicy {
                    host: host.to_owned(),
                    id: active.id.clone(),
                };
                return Decision::refuse(Applied::StsEnforce, refusal);
            }
            StsStatus::Policy(active) => testing = active.policy.mode == Mode::Testing,
            StsStatus::NotLooked | StsStatus::NoPolicy | StsStatus::Unavailable(_) => {}
        }
        if level == Level::MtaSts {
            let why = match sts {
                StsStatus::Policy(active) => {
                    format!(
                        "the domain's policy is in mode {}",
                        active.policy.mode.as_str()
                    )
                }
                StsStatus::Unavailable(problem) => problem.to_string(),
                StsStatus::NotLooked | StsStatus::NoPolicy => {
                    "the domain publishes no policy".to_owned()
                }
            };
            return Decision::refuse(Applied::StsEnforce, Refusal::StsRequired { why });
        }
    }
    if unusable {
        return Decision::connect(Applied::DaneUnusable, Required, Check::Any);
    }
    let applied = |floor| if testing { Applied::StsTesting } else { floor };
    match level {
        Level::Encrypt => Decision::connect(applied(Applied::Encrypt), Required, Check::Any),
        _ => Decision::connect(applied(Applied::Opportunistic), Opportunistic, Check::Any),
    }
}
