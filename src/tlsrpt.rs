//! SMTP TLS reporting (RFC 8460): the pure part. The `_smtp._tls` TXT
//! record that says where a domain wants its reports ([`Record`]), what
//! one delivery session tells the report ([`Session`], journaled one JSON
//! line each), the daily aggregate per policy domain ([`aggregate`], the
//! JSON of §4.4, gzipped under the file name of §5.1) and the report mail
//! of §5.3 ([`render_mail`]). The reporter actor does the lookups, the
//! journal files, the timer and the delivery; mailed reports are signed
//! with [`crate::dkim`] (§3: unsigned ones are ignored).

mod mail;
mod observe;
pub mod outbox;
mod record;
mod report;
mod session;

pub use mail::{render_mail, signed_mail, Mail};
pub use observe::{observe, Connection, HandshakeFailure, Seen};
pub use record::{Record, RecordError, Rua};
pub use report::{aggregate, file_name, gzip, Day, Report, Submitter};
pub use session::{
    decode, Applied, Failure, Journal, ResultType, Session, SessionResult, MAX_LINE,
};

#[cfg(test)]
mod tests;
