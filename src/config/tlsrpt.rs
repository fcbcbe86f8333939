//! `[tlsrpt]` as written, and what validation makes of it: whether postman
//! sends TLS reports (RFC 8460), who they say they are from, and the DKIM
//! key that signs them (§3: receivers ignore unsigned reports). Off by
//! default. Validation is in `validate/tlsrpt.rs`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::dkim::SigningKey;
use crate::tlsrpt::Submitter;

/// `[tlsrpt]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsrptSettings {
    /// Count TLS sessions per recipient domain and send each domain that
    /// asks (`_smtp._tls` TXT) a daily report.
    #[serde(default)]
    pub enabled: bool,
    /// The report's `organization-name`; unset: the DKIM domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The report's `contact-info` (an address or URI); unset: `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The `From` and envelope sender of mailed reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The DKIM private key (PEM: PKCS#8 RSA or Ed25519, or PKCS#1 RSA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim_key: Option<PathBuf>,
    /// The DKIM selector: the key is published at
    /// `<selector>._domainkey.<dkim_domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim_selector: Option<String>,
    /// The signing domain, also the reports' submitter; unset: the domain
    /// of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim_domain: Option<String>,
}

/// Validated `[tlsrpt]`, present only when enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsrpt {
    /// What every report says about its sender; `domain` is the DKIM
    /// domain (RFC 8460 §5.3: the submitter, the file name's sender and
    /// the signing domain are one), `unique_id` the first label of
    /// `application.hostname`, so that several hosts reporting for one
    /// domain do not send reports of the same id.
    pub submitter: Submitter,
    /// `tlsrpt.from`: an ASCII address in or under the DKIM domain.
    pub from: String,
    /// The signing key and its selector.
    pub dkim: DkimKey,
}

/// `tlsrpt.dkim_key`, loaded, and `tlsrpt.dkim_selector`.
#[derive(Clone)]
pub struct DkimKey {
    /// The key file, for messages.
    pub file: PathBuf,
    pub selector: String,
    pub key: Arc<SigningKey>,
}

impl PartialEq for DkimKey {
    fn eq(&self, other: &Self) -> bool {
        // One key has one public key record.
        self.file == other.file
            && self.selector == other.selector
            && self.key.dns_record() == other.key.dns_record()
    }
}

impl Eq for DkimKey {}

impl fmt::Debug for DkimKey {
    /// Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("file", &self.file)
            .field("selector", &self.selector)
            .field("algorithm", &self.key.algorithm())
            .finish_non_exhaustive()
    }
}
