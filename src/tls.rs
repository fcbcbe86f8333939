//! Transport security for MX delivery: the levels an operator sets
//! ([`level`]), what DNSSEC/DANE and MTA-STS found out about a destination
//! ([`found`]), and the decision per MX host ([`mod@decide`]).

pub mod decide;
pub mod found;
pub mod identity;
pub mod level;
pub mod names;
pub mod site;

#[cfg(test)]
mod decide_tests;

pub use decide::{decide, Action, Applied, Check, Decision, Discovery, Refusal, POLICY_STATUS};
pub use found::{ActiveSts, DaneStatus, NoDane, StsProblem, StsStatus};
pub use identity::{ClientIdentity, IdentityError};
pub use level::{Level, LevelWord};
pub use names::reference_names;
pub use site::site_suffix;
