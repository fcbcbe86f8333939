//! Transport security for MX delivery: what DNSSEC/DANE and MTA-STS
//! found out about a destination ([`found`]).

pub mod found;

pub use found::{ActiveSts, DaneStatus, NoDane, StsProblem, StsStatus};
