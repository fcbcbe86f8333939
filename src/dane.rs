//! DANE for SMTP (RFC 7672): whether a server's certificate chain matches
//! the TLSA records its MX host published in a signed zone. Only DANE-TA
//! (2) and DANE-EE (3) records count for SMTP (RFC 7672 §3.1.3); PKIX-TA
//! and PKIX-EE records, unknown selectors and matching types, and digests of
//! the wrong length are unusable and ignored (RFC 7671 §4).
//!
//! * DANE-EE: the leaf certificate (or its public key) is the record; its
//!   names and validity dates do not matter (RFC 7672 §3.1.1).
//! * DANE-TA: a certificate of the chain the server sent is the record; the
//!   leaf must chain up to it (signatures, validity dates, server-auth key
//!   usage) and carry one of the reference names, the MX host name and the
//!   TLSA base domain (RFC 7672 §3.2.2). A TA given as a bare public key
//!   (selector 1, matching 0) that the server leaves out of its chain is
//!   not supported; RFC 7672 §3.1.2 asks servers to send the TA
//!   certificate.

pub mod lookup;

use ring::digest;
use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};

/// Certificate usage DANE-TA: a trust anchor of the chain.
pub const DANE_TA: u8 = 2;
/// Certificate usage DANE-EE: the server's own certificate.
pub const DANE_EE: u8 = 3;
/// Selector: the whole certificate.
pub const CERT: u8 = 0;
/// Selector: its SubjectPublicKeyInfo.
pub const SPKI: u8 = 1;
/// Matching type: the data itself.
pub const FULL: u8 = 0;
/// Matching type: its SHA2-256 digest.
pub const SHA2_256: u8 = 1;
/// Matching type: its SHA2-512 digest.
pub const SHA2_512: u8 = 2;

/// One TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub matching: u8,
    pub data: Vec<u8>,
}

/// How a chain matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// A DANE-EE record matched the leaf.
    EndEntity,
    /// A DANE-TA record matched the certificate `depth` places above the
    /// leaf, and the leaf verified up to it.
    TrustAnchor { depth: usize },
}

/// Why a chain did not match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DaneError {
    /// Every record is unusable for SMTP: DANE does not apply (RFC 7672
    /// §2.2: as if there were no TLSA records, but TLS is still required).
    #[error("no usable TLSA record")]
    NoUsableRecords,
    /// The server sent no certificate.
    #[error("the server presented no certificate")]
    NoCertificate,
    /// No record matched any certificate of the chain.
    #[error("no TLSA record matches the server's certificate chain")]
    NoMatch,
    /// A DANE-TA record matched, but the leaf does not verify up to it.
    #[error("the certificate does not verify up to the TLSA trust anchor: {0}")]
    Chain(webpki::Error),
    /// A DANE-TA record matched and the chain verified, but the leaf names
    /// none of the reference names.
    #[error("the certificate names none of {0}")]
    Name(String),
}

impl Tlsa {
    /// Whether the record counts for SMTP (RFC 7672 §3.1.3, RFC 7671 §4):
    /// DANE-TA or DANE-EE, a known selector and matching type, and a
    /// digest of the length its type makes.
    pub fn usable(&self) -> bool {
        let length_ok = match self.matching {
            FULL => !self.data.is_empty(),
            SHA2_256 => self.data.len() == 32,
            SHA2_512 => self.data.len() == 64,
            _ => false,
        };
        matches!(self.usage, DANE_TA | DANE_EE) && matches!(self.selector, CERT | SPKI) && length_ok
    }

    /// Whether the record is `cert` (or its public key, or their digest).
    fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        let spki;
        let selected: &[u8] = match self.selector {
            CERT => cert.as_ref(),
            SPKI => match webpki::EndEntityCert::try_from(cert) {
                Ok(parsed) => {
                    spki = parsed.subject_public_key_info();
                    spki.as_ref()
                }
                Err(_) => return false,
            },
            _ => return false,
        };
        match self.matching {
            FULL => selected == self.data.as_slice(),
            SHA2_256 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            SHA2_512 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// Checks the chain a server presented (`chain[0]` its own certificate)
/// against its TLSA `records` at `now`; `names` are the reference names
/// for DANE-TA (the MX host name, the TLSA base domain), and `algorithms`
/// the signature algorithms the TLS library verifies with.
pub fn verify(
    records: &[Tlsa],
    chain: &[CertificateDer<'_>],
    names: &[&str],
    now: UnixTime,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> Result<Matched, DaneError> {
    let usable: Vec<&Tlsa> = records.iter().filter(|r| r.usable()).collect();
    if usable.is_empty() {
        return Err(DaneError::NoUsableRecords);
    }
    let leaf = chain.first().ok_or(DaneError::NoCertificate)?;
    let is = |usage| usable.iter().filter(move |r| r.usage == usage);
    if is(DANE_EE).any(|r| r.matches(leaf)) {
        return Ok(Matched::EndEntity);
    }
    let mut failure = DaneError::NoMatch;
    for (depth, cert) in chain.iter().enumerate().skip(1) {
        if !is(DANE_TA).any(|r| r.matches(cert)) {
            continue;
        }
        match chain_to(leaf, &chain[1..depth], cert, names, now, algorithms) {
            Ok(()) => return Ok(Matched::TrustAnchor { depth }),
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

/// The leaf verifies up to `anchor` through `intermediates` and names one
/// of `names`.
fn chain_to(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    anchor: &CertificateDer<'_>,
    names: &[&str],
    now: UnixTime,
    algorithms: &[&dyn SignatureVerificationAlgorithm],
) -> Result<(), DaneError> {
    let anchor = webpki::anchor_from_trusted_cert(anchor).map_err(DaneError::Chain)?;
    let ee = webpki::EndEntityCert::try_from(leaf).map_err(DaneError::Chain)?;
    ee.verify_for_usage(
        algorithms,
        &[anchor],
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(DaneError::Chain)?;
    let named = names.iter().any(|name| {
        ServerName::try_from(*name).is_ok_and(|n| ee.verify_is_valid_for_subject_name(&n).is_ok())
    });
    if named {
        Ok(())
    } else {
        Err(DaneError::Name(names.join(", ")))
    }
}

#[cfg(test)]
#[path = "dane_tests.rs"]
mod tests;
