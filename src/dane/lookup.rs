//! What the DNS says about DANE for an MX host (RFC 7672 §2.2), pure: the
//! resolver hands in what a validating resolver answered (the response
//! code, its AD bit, the records) and gets back whether DANE can be had at
//! all, whether a host's TLSA records are worth a query, and what they
//! came to ([`DaneStatus`]).
//!
//! postman trusts the AD bit of a validating resolver on loopback, as
//! Postfix does (`smtp_dns_support_level = dnssec`): a resolver elsewhere
//! could be impersonated on the path, so its AD bit proves nothing.
//!
//! The rules, in RFC 7672's order:
//! * the MX RRset (or, for an implicit MX, the proof that there is none)
//!   must be secure, else no host of the domain gets DANE (§2.2.1);
//! * the host's address records must be secure, else its TLSA records
//!   are not even looked up (§2.2.2; Postfix's `tls_dane_resolve`), which
//!   keeps hosts whose servers mishandle TLSA queries deliverable;
//! * a TLSA lookup that fails is a failure, never "no DANE" (§2.2): the
//!   host may have records postman cannot see;
//! * no TLSA records (NXDOMAIN or NODATA, secure or not) and records from
//!   an unsigned zone are "no DANE".

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use super::Tlsa;
use crate::route::{AddrAnswer, MxAnswer};
use crate::tls::{DaneStatus, NoDane};

/// The response code of an answer, as far as DANE tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// NOERROR: records, or none of the asked type (NODATA).
    NoError,
    /// NXDOMAIN: the name does not exist.
    NxDomain,
    /// SERVFAIL: what a validating resolver answers for a bogus answer,
    /// and any resolver when the zone's servers fail.
    ServFail,
    /// Any other code (REFUSED, FORMERR, …), by its number.
    Other(u16),
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rcode::NoError => f.write_str("NOERROR"),
            Rcode::NxDomain => f.write_str("NXDOMAIN"),
            Rcode::ServFail => f.write_str("SERVFAIL"),
            Rcode::Other(code) => write!(f, "rcode {code}"),
        }
    }
}

/// One answer of a validating resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer<T> {
    /// Its response code.
    pub rcode: Rcode,
    /// The AD bit: the resolver validated the whole answer (RFC 4035
    /// §3.2.3), a denial included.
    pub authentic: bool,
    /// The records of the asked type (after any CNAME chain the resolver
    /// followed), RRSIGs left out.
    pub records: Vec<T>,
}

/// What one query came to: an answer, or none (a timeout, a socket
/// error, a reply that does not parse), and how.
pub type Lookup<T> = Result<Answer<T>, String>;

/// Why DANE is unavailable for every destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// `dns.dnssec = "off"`.
    Off,
    /// A name server is not on this host: its AD bit crossed a network
    /// and proves nothing.
    RemoteResolver(IpAddr),
    /// There is no name server to ask.
    NoResolver,
    /// The probe query was answered without the AD bit: the resolver does
    /// not validate (or the probe name is not signed).
    NotValidating {
        /// `dns.dnssec_probe`.
        probe: String,
    },
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Off => f.write_str("dns.dnssec is \"off\""),
            Unavailable::RemoteResolver(ip) => write!(
                f,
                "name server {ip} is not on this host, so its AD bit proves nothing \
                 (run a validating resolver such as Unbound on 127.0.0.1 and name it \
                 in dns.nameservers)"
            ),
            Unavailable::NoResolver => f.write_str("no name server is configured"),
            Unavailable::NotValidating { probe } => write!(
                f,
                "the answer to the probe query (NS {probe}) was not authenticated \
                 (no AD bit): the name server does not validate DNSSEC, or \
                 dns.dnssec_probe names an unsigned zone"
            ),
        }
    }
}

/// Whether the AD bit of these name servers can be trusted: only when
/// every one of them is on this host (a loopback address), so that no
/// network lies between the validator and postman (RFC 6698 §4.1 asks for
/// a secure channel to it; Postfix asks for the same).
pub fn trust_ad(nameservers: &[IpAddr]) -> Result<(), Unavailable> {
    if nameservers.is_empty() {
        return Err(Unavailable::NoResolver);
    }
    match nameservers
        .iter()
        .find(|ip| !ip.to_canonical().is_loopback())
    {
        Some(ip) => Err(Unavailable::RemoteResolver(*ip)),
        None => Ok(()),
    }
}

/// What the probe at start says: `Ok` when validation works or cannot be
/// told (no answer: each answer's AD bit still says what it says), the
/// reason when the resolver answered without authenticating.
pub fn probe_result<T>(probe: &str, lookup: &Lookup<T>) -> Result<(), Unavailable> {
    match lookup {
        Ok(answer)
            if !answer.authentic && matches!(answer.rcode, Rcode::NoError | Rcode::NxDomain) =>
        {
            Err(Unavailable::NotValidating {
                probe: probe.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// The MX answer a route is built from, and whether it is secure (the
/// records, or the proof that there are none, carried the AD bit).
pub fn mx_answer(lookup: Lookup<(u16, String)>) -> (MxAnswer, bool) {
    match lookup {
        Err(why) => (MxAnswer::Failed(why), false),
        Ok(answer) => {
            let secure = answer.authentic;
            let mx = match answer.rcode {
                Rcode::NoError if answer.records.is_empty() => MxAnswer::NoRecords,
                Rcode::NoError => MxAnswer::Records(answer.records),
                Rcode::NxDomain => MxAnswer::NxDomain,
                code => MxAnswer::Failed(format!("{code} from the name server")),
            };
            (mx, secure)
        }
    }
}

/// The address answer of a host from its A and AAAA lookups (as the
/// resolver merges them: any address wins; else a failure; else NXDOMAIN
/// when both say so; else no records), and whether it is secure: some
/// lookup gave addresses and every one that did was authenticated.
pub fn addr_answer(lookups: [Lookup<IpAddr>; 2]) -> (AddrAnswer, bool) {
    let mut addrs = Vec::new();
    let mut secure = true;
    let mut failed = None;
    let mut nx_domain = 0;
    for lookup in lookups {
        match lookup {
            Ok(answer) if answer.rcode == Rcode::NoError && !answer.records.is_empty() => {
                secure &= answer.authentic;
                addrs.extend(answer.records);
            }
            Ok(answer) => match answer.rcode {
                Rcode::NoError => {}
                Rcode::NxDomain => nx_domain += 1,
                code => failed = Some(format!("{code} from the name server")),
            },
            Err(why) => failed = Some(why),
        }
    }
    if !addrs.is_empty() {
        (AddrAnswer::Addrs(addrs), secure)
    } else if let Some(why) = failed {
        (AddrAnswer::Failed(why), false)
    } else if nx_domain == 2 {
        (AddrAnswer::NxDomain, false)
    } else {
        (AddrAnswer::NoRecords, false)
    }
}

/// Whether a host's TLSA records are worth a query: only when its
/// domain's MX RRset and its own address records are secure; else why
/// DANE does not apply to it.
pub fn tlsa_wanted(mx_secure: bool, host_secure: bool) -> Result<(), NoDane> {
    if !mx_secure {
        Err(NoDane::InsecureMx)
    } else if !host_secure {
        Err(NoDane::InsecureHost)
    } else {
        Ok(())
    }
}

/// What a host's TLSA lookup comes to (RFC 7672 §2.2): usable records of a
/// secure RRset (only those kept), a secure RRset with none usable, no
/// DANE (no records, or records from an unsigned zone), or a failure that
/// must not be taken for "no DANE" (with why, which the refusal quotes
/// after "TLSA lookup … failed: ").
pub fn classify_tlsa(lookup: Lookup<Tlsa>) -> DaneStatus {
    let answer = match lookup {
        Ok(answer) => answer,
        Err(why) => return DaneStatus::Failed(why),
    };
    match answer.rcode {
        Rcode::NoError if answer.records.is_empty() => DaneStatus::NotApplicable(NoDane::NoTlsa),
        Rcode::NoError if !answer.authentic => DaneStatus::NotApplicable(NoDane::InsecureTlsa),
        Rcode::NoError => {
            let usable: Vec<Tlsa> = answer.records.into_iter().filter(Tlsa::usable).collect();
            if usable.is_empty() {
                DaneStatus::Unusable
            } else {
                DaneStatus::Usable(Arc::from(usable))
            }
        }
        Rcode::NxDomain => DaneStatus::NotApplicable(NoDane::NoTlsa),
        Rcode::ServFail => DaneStatus::Failed(
            "SERVFAIL (the answer did not validate, or the zone's servers failed)".to_owned(),
        ),
        code @ Rcode::Other(_) => DaneStatus::Failed(code.to_string()),
    }
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
