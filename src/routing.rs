//! Where a recipient's mail goes, pure: the domain's MX hosts, or a next
//! hop the operator configured (Postfix's `relayhost`, `transport_maps`,
//! `sender_dependent_relayhost_maps`, `smtp_fallback_relay`).

mod next_hop;

pub use next_hop::{NextHop, NextHopError, Target, SMTP_PORT, SUBMISSIONS_PORT};
