//! Test support for postman's end-to-end tests: real peers on loopback.
//!
//! * [`net`]: a fresh block of loopback addresses and one free port per test,
//!   so parallel tests never collide (postman dials one port on every MX host).
//! * [`dns`]: an in-process authoritative DNS server (hickory-server) with
//!   MX / A / AAAA / null MX (RFC 7505) records, NXDOMAIN, SERVFAIL and
//!   silent names.
//! * [`dnssec`]: real DNSSEC: zones signed with ldns-signzone, served by
//!   NSD, validated by Unbound (for DANE).
//! * [`smtp_sink`]: aiosmtpd, a third-party SMTP server, as a child process
//!   that saves what it receives (optionally with STARTTLS and PIPELINING).
//! * [`postfix`]: a private instance of Postfix's smtpd, the other
//!   third-party server, with its log as evidence; also as a submission
//!   relay with SMTP AUTH (Cyrus SASL) and implicit TLS.
//! * [`smtp_client`]: a scripted SMTP client (Python) that proves a test
//!   server without postman: STARTTLS, implicit TLS, AUTH, a source address.
//! * [`blackhole`]: hosts that take no mail: a listener that never greets,
//!   one that resets every connection, a closed port.
//! * [`certs`]: self-signed certificates made at test time.
//! * [`hostile`]: a scripted SMTP server for fault injection.
//! * [`queue`]: write queue files in the on-disk format and list what remains.
//! * [`postman`](mod@postman): write configs, run the binary (`--once` or as a daemon) with
//!   a deadline, and parse its JSON log.

pub mod blackhole;
pub mod certs;
pub mod dns;
pub mod dnssec;
pub mod hostile;
pub mod mta_sts;
pub mod net;
pub mod postfix;
pub mod postman;
pub mod python_dsn;
pub mod queue;
pub mod smtp_client;
pub mod smtp_sink;

pub use blackhole::{BlackHole, ClosedPort};
pub use certs::TestCert;
pub use dns::{numbered_domains, DnsServer, Zones};
pub use hostile::{HostileServer, Script};
pub use net::TestNet;
pub use postfix::{ClientLimits, Postfix, PostfixOptions, Refusals, SaslUsers};
pub use postman::{Config, Daemon, Delivery, Postman, RunOutput};
pub use queue::{Bounce, QueueState, TestQueue};
pub use smtp_sink::{AiosmtpdSink, Received, SinkOptions};

/// Where the recorded queues are: `integration/recorded/`.
pub const RECORDED_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/recorded");

/// A [`Postman`] for the binary under test (built by postman-actors).
///
/// `CARGO_BIN_EXE_<name>` only exists while compiling the package's
/// integration tests, so the path has to be taken where this macro expands.
#[macro_export]
macro_rules! postman {
    () => {
        $crate::Postman::new(env!("CARGO_BIN_EXE_postman"))
    };
}
