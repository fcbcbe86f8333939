//! The rule for connections that end before the message they carry was
//! tried, kept pure (no clock, no I/O) so that it can be stated in tests.
//! The I/O worker asks [`judge`] when a connection ends with a message in
//! hand; what a site does when a connection failed on every address is the
//! scheduler's (`postman::schedule`).
//!
//! The rule: a connection that ends before a transaction for a reason of
//! the server (it closed, answered 421, sent unsolicited or extra lines or
//! a malformed reply, timed out, failed TLS) is a failed connection. Only a
//! *reused* connection (one that carried a transaction already) that ends
//! before the server judged the next message sends that message back
//! untried: the server has shown it takes mail, and servers that limit
//! messages or time per connection end sessions that way. A fresh
//! connection has shown nothing; were its end "not an attempt", a server
//! that talks out of turn would be connected to again at once, for ever.

/// What the connection had done when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// No transaction yet (greeted and answered EHLO, perhaps).
    Nothing,
    /// At least one transaction.
    Transactions,
}

/// Why the connection ended before the message was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The server: it closed the connection, answered 421, sent lines out
    /// of turn or a malformed reply, timed out, or failed the TLS handshake.
    Server,
    /// This process had no descriptor or socket buffer for it.
    LocalShortage,
    /// postman is stopping.
    Stopping,
}

/// How the message's attempt counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A failed connection: the next address of the route is tried; when
    /// none is left, every recipient gets a deferral record with the
    /// server's reply and the domain backs off.
    FailedConnection,
    /// Not an attempt: the message goes back untried, nothing recorded.
    Untried,
    /// Put off for a shortage of this process's own: untried, and new work
    /// pauses a moment.
    PutOff,
}

/// How a message counts whose connection ended before its transaction.
pub fn judge(carried: Carried, ending: Ending) -> Verdict {
    match (ending, carried) {
        (Ending::LocalShortage, _) => Verdict::PutOff,
        (Ending::Stopping, _) => Verdict::Untried,
        (Ending::Server, Carried::Transactions) => Verdict::Untried,
        (Ending::Server, Carried::Nothing) => Verdict::FailedConnection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22, defect 1: a session that ends without an attempt still
    /// counts. Every way a server can end a fresh connection is a failed
    /// connection (never "untried", which reconnected at once); only a
    /// reused connection sends its next message back untried.
    #[test]
    fn a_fresh_connection_ended_by_the_server_is_a_failed_connection() {
        let cases = [
            (Carried::Nothing, Ending::Server, Verdict::FailedConnection),
            (Carried::Transactions, Ending::Server, Verdict::Untried),
            (Carried::Nothing, Ending::LocalShortage, Verdict::PutOff),
            (
                Carried::Transactions,
                Ending::LocalShortage,
                Verdict::PutOff,
            ),
            (Carried::Nothing, Ending::Stopping, Verdict::Untried),
            (Carried::Transactions, Ending::Stopping, Verdict::Untried),
        ];
        for (carried, ending, want) in cases {
            assert_eq!(
                judge(carried, ending),
                want,
                "{carried:?} ended by {ending:?}"
            );
        }
    }
}
