//! What became of a delivery attempt, sorted the way Postfix's
//! `smtp_trouble.c` sorts it: by scope (the host, this message, one
//! recipient) and class (try again later, or never). RFC 5321 §4.2.1 gives
//! the class of a reply; §4.2.5 and §3.3 tie replies to recipients.
//!
//! The texts are an API: bounce parsers and operators read them, so they stay
//! stable and Postfix-like ("said: 550 5.1.1 no such user (in reply to RCPT TO
//! command)", "conversation timed out while sending end of data -- message
//! may be sent more than once").

use std::fmt;

use super::reply::{EnhancedCode, Reply, ReplyCode};

/// Try again later, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Deferred: retried on the backoff schedule.
    Transient,
    /// Bounced.
    Permanent,
}

impl Class {
    /// 5xx is permanent; anything else that is a failure (4xx, or a reply of
    /// the wrong kind) is transient.
    pub fn of(code: ReplyCode) -> Class {
        if code.is_permanent() {
            Class::Permanent
        } else {
            Class::Transient
        }
    }
}

/// How much a failure covers (Postfix `smtp_trouble.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole host: every message for it is affected.
    Destination,
    /// This message, every recipient of it.
    Message,
    /// One recipient.
    Recipient,
}

/// The step of the dialogue a failure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The server's 220 greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO, after EHLO was refused.
    Helo,
    /// STARTTLS and the TLS handshake (RFC 3207); also the handshake that
    /// begins an implicit TLS connection (RFC 8314 §3.3).
    StartTls,
    /// AUTH and its SASL exchange (RFC 4954), and the checks before it
    /// (credentials only over TLS, a mechanism the server offers). A
    /// failure here never bounces mail: it is always transient.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA and the message body.
    Data,
    /// The final `.` after the body.
    DataEnd,
    /// A BDAT chunk of the body (RFC 3030); the reply to the last chunk is
    /// [`Stage::DataEnd`]'s.
    Bdat,
    /// RSET before a transaction on a reused connection.
    Rset,
    /// QUIT.
    Quit,
}

impl Stage {
    /// What a reply at this stage answered, as Postfix words it:
    /// `"in reply to RCPT TO command"`.
    pub fn context(self) -> &'static str {
        match self {
            Stage::Greeting => "in the initial greeting",
            Stage::Ehlo => "in reply to EHLO command",
            Stage::Helo => "in reply to HELO command",
            Stage::StartTls => "in reply to STARTTLS command",
            Stage::Auth => "in reply to AUTH command",
            Stage::Mail => "in reply to MAIL FROM command",
            Stage::Rcpt => "in reply to RCPT TO command",
            Stage::Data => "in reply to DATA command",
            Stage::DataEnd => "in reply to end of DATA command",
            Stage::Bdat => "in reply to BDAT command",
            Stage::Rset => "in reply to RSET command",
            Stage::Quit => "in reply to QUIT command",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::DataEnd => "end of DATA",
            Stage::Bdat => "BDAT",
            Stage::Rset => "RSET",
            Stage::Quit => "QUIT",
        })
    }
}

/// A failure: refused by a reply, or the conversation broke down.
///
/// A refusal is an outcome, not an `Err`: it is the normal result of asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What it covers.
    pub scope: Scope,
    /// Defer or bounce.
    pub class: Class,
    /// Where in the dialogue.
    pub stage: Stage,
    /// The server's reply, when a reply caused it.
    pub reply: Option<Reply>,
    /// The complete, stable description; also what `Display` prints.
    pub detail: String,
    /// The RFC 3463 status postman itself assigns when no reply carries one
    /// (a message over the server's SIZE: 5.3.4; one needing SMTPUTF8 from a
    /// server without it: 5.6.7).
    pub status: Option<EnhancedCode>,
}

impl Outcome {
    /// A refusal by `reply`: detail `"said: 550 5.1.1 no such user (in reply
    /// to RCPT TO command)"`.
    pub fn from_reply(class: Class, scope: Scope, stage: Stage, reply: Reply) -> Outcome {
        let detail = format!("said: {reply} ({})", stage.context());
        Outcome {
            scope,
            class,
            stage,
            reply: Some(reply),
            detail,
            status: None,
        }
    }

    /// A failure without a reply (timeout, lost connection, protocol error).
    pub fn without_reply(
        class: Class,
        scope: Scope,
        stage: Stage,
        detail: impl Into<String>,
    ) -> Outcome {
        Outcome {
            scope,
            class,
            stage,
            reply: None,
            detail: detail.into(),
            status: None,
        }
    }

    /// The server named this host in its greeting or its reply to
    /// EHLO/HELO (see [`names_host`](super::names_host)): handing it the
    /// message would bring it back. A transient failure of the server, with
    /// postman's status 4.4.6 (RFC 3463 X.4.6, routing loop detected).
    pub fn loops_back(stage: Stage, reply: Reply, hostname: &str) -> Outcome {
        let detail = format!(
            "names this host, {hostname}, {}: mail loops back to myself",
            stage.context()
        );
        Outcome {
            scope: Scope::Destination,
            class: Class::Transient,
            stage,
            reply: Some(reply),
            detail,
            status: Some(Outcome::LOOP),
        }
    }

    /// The status of [`Outcome::loops_back`].
    pub const LOOP: EnhancedCode = EnhancedCode {
        class: 4,
        subject: 4,
        detail: 6,
    };

    /// The status of a message that requires TLS (RFC 8689 REQUIRETLS) on
    /// a session without TLS, or whose certificate was not verified:
    /// 5.7.10, "Encryption Needed" (RFC 5248's registry), as Postfix has it.
    pub const REQUIRETLS_NO_TLS: EnhancedCode = EnhancedCode {
        class: 5,
        subject: 7,
        detail: 10,
    };

    /// The status of a message that requires TLS, over verified TLS to a
    /// server that does not advertise REQUIRETLS: 5.7.30 (RFC 8689 §5).
    pub const REQUIRETLS_UNSUPPORTED: EnhancedCode = EnhancedCode {
        class: 5,
        subject: 7,
        detail: 30,
    };

    /// This failure is a mail loop ([`Outcome::loops_back`]).
    pub fn is_loop(&self) -> bool {
        self.status == Some(Outcome::LOOP)
    }

    /// The same outcome with postman's own RFC 3463 `status`.
    pub fn with_status(self, status: EnhancedCode) -> Outcome {
        Outcome {
            status: Some(status),
            ..self
        }
    }

    /// Deferred, to be retried.
    pub fn is_transient(&self) -> bool {
        self.class == Class::Transient
    }

    /// Bounced.
    pub fn is_permanent(&self) -> bool {
        self.class == Class::Permanent
    }

    /// The server refused this RCPT only for its limit of recipients per
    /// transaction (RFC 5321 §4.5.3.1.10): any reply with the enhanced
    /// code X.5.3 ("too many recipients", RFC 3463), or a 452 without an
    /// enhanced code. A 452 with another enhanced code (4.2.2 mailbox full,
    /// 4.3.1 system storage) is about the recipient or the server, not the
    /// count; a bare 552 is "exceeded storage allocation" as often as the
    /// RFC 821 "too many recipients".
    pub fn too_many_recipients(&self) -> bool {
        let Some(reply) = self.reply.as_ref().filter(|_| self.stage == Stage::Rcpt) else {
            return false;
        };
        match reply.enhanced {
            Some(code) => code.subject == 5 && code.detail == 3,
            None => reply.code.get() == 452,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// One recipient's result: `Ok` with the reply after the final dot when
/// delivered, else why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientResult {
    /// The address, as in the envelope.
    pub recipient: String,
    /// Delivered (2xx after the final dot), or the failure.
    pub result: Result<Reply, Outcome>,
}

/// Every recipient's result, in envelope order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageResult {
    /// One per envelope recipient, same order.
    pub recipients: Vec<RecipientResult>,
    /// The server never judged the message: the transaction ran on a
    /// reused connection, which ended (lost, timed out, 421, RSET refused)
    /// before any reply but the one to RSET, or with a 421 to MAIL (a
    /// server's limit of messages per connection). The recipients carry that
    /// transient failure; a caller may instead try the message again on
    /// another connection without counting an attempt, as Postfix does
    /// when a cached connection turns out dead.
    pub untried: bool,
    /// The server advertised DSN when the transaction began: the DSN
    /// parameters went with the message, and a success notice is that
    /// server's to send (RFC 3461 §5.2.2).
    pub dsn: bool,
}

impl MessageResult {
    /// True when every recipient was delivered.
    pub fn all_delivered(&self) -> bool {
        self.recipients.iter().all(|r| r.result.is_ok())
    }

    /// True when the server judged the message: some recipient was
    /// delivered, or refused for the message's or its own sake. A result
    /// where every recipient failed with the session (a lost connection, a
    /// timeout, a 421, a protocol error: [`Scope::Destination`]) shows
    /// nothing of whether the server takes mail.
    pub fn judged(&self) -> bool {
        self.recipients.iter().any(|r| match &r.result {
            Ok(_) => true,
            Err(outcome) => outcome.scope != Scope::Destination,
        })
    }

    /// Per recipient, in envelope order: whether it goes in a new
    /// transaction at once. RFC 5321 §4.5.3.1.10: a server's limit of
    /// recipients per transaction ([`Outcome::too_many_recipients`]) asks
    /// the client to send the rest in another transaction, not to wait for
    /// a retry. Only when this transaction delivered to some recipient
    /// (else a server whose limit is none at all, or a 452 for another
    /// reason, would be asked again for ever) and deferred none for another
    /// reason (then the message waits anyway, and they wait with it).
    pub fn send_again(&self) -> Vec<bool> {
        let over = |r: &RecipientResult| matches!(&r.result, Err(o) if o.too_many_recipients());
        let delivered = self.recipients.iter().any(|r| r.result.is_ok());
        let waits = self
            .recipients
            .iter()
            .any(|r| matches!(&r.result, Err(o) if o.is_transient() && !o.too_many_recipients()));
        let again = delivered && !waits;
        self.recipients.iter().map(|r| again && over(r)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Reply {
        text.parse()
            .unwrap_or_else(|e| panic!("test reply {text:?} does not parse: {e}"))
    }

    #[test]
    fn display_is_postfix_like() {
        let cases = [
            (
                Outcome::from_reply(
                    Class::Permanent,
                    Scope::Recipient,
                    Stage::Rcpt,
                    reply("550-5.1.1 no such\r\n550 5.1.1 user"),
                ),
                "said: 550 5.1.1 no such user (in reply to RCPT TO command)",
            ),
            (
                Outcome::from_reply(
                    Class::Transient,
                    Scope::Destination,
                    Stage::Greeting,
                    reply("421 busy"),
                ),
                "said: 421 busy (in the initial greeting)",
            ),
            (
                Outcome::from_reply(
                    Class::Transient,
                    Scope::Message,
                    Stage::DataEnd,
                    reply("451 4.3.0 try later"),
                ),
                "said: 451 4.3.0 try later (in reply to end of DATA command)",
            ),
            (
                Outcome::without_reply(
                    Class::Transient,
                    Scope::Destination,
                    Stage::Greeting,
                    "lost connection while receiving the initial server greeting",
                ),
                "lost connection while receiving the initial server greeting",
            ),
        ];
        for (outcome, want) in cases {
            assert_eq!(outcome.to_string(), want, "display of {outcome:?}");
        }
    }

    #[test]
    fn judged_when_some_recipient_is_not_a_failure_of_the_session() {
        let ok = || Ok(reply("250 2.0.0 queued"));
        let failed = |scope| {
            Err(Outcome::without_reply(
                Class::Transient,
                scope,
                Stage::Mail,
                "x",
            ))
        };
        type Case = (&'static str, Vec<Result<Reply, Outcome>>, bool);
        let cases: Vec<Case> = vec![
            ("delivered", vec![ok()], true),
            (
                "one refused, one delivered",
                vec![failed(Scope::Recipient), ok()],
                true,
            ),
            (
                "refused for the recipient",
                vec![failed(Scope::Recipient)],
                true,
            ),
            (
                "refused for the message",
                vec![failed(Scope::Message)],
                true,
            ),
            (
                "the session failed",
                vec![failed(Scope::Destination)],
                false,
            ),
            (
                "the session failed for every recipient",
                vec![failed(Scope::Destination), failed(Scope::Destination)],
                false,
            ),
        ];
        for (name, results, want) in cases {
            assert_eq!(message_result(results).judged(), want, "{name}");
        }
    }

    /// A message's result with these results, in order.
    fn message_result(results: Vec<Result<Reply, Outcome>>) -> MessageResult {
        MessageResult {
            recipients: results
                .into_iter()
                .map(|result| RecipientResult {
                    recipient: "a@d.test".into(),
                    result,
                })
                .collect(),
            untried: false,
            dsn: false,
        }
    }

    #[test]
    fn too_many_recipients_is_x_5_3_or_a_bare_452_to_rcpt() {
        let cases = [
            ("452 4.5.3 Too many recipients", Stage::Rcpt, true),
            ("452 Too many recipients", Stage::Rcpt, true),
            ("451 4.5.3 Too many recipients", Stage::Rcpt, true),
            ("552 5.5.3 Too many recipients", Stage::Rcpt, true),
            ("452 4.2.2 Mailbox full", Stage::Rcpt, false),
            ("452 4.3.1 Insufficient system storage", Stage::Rcpt, false),
            ("552 Requested mail action aborted", Stage::Rcpt, false),
            ("451 4.7.1 Greylisted", Stage::Rcpt, false),
            ("452 4.5.3 Too many recipients", Stage::Mail, false),
        ];
        for (text, stage, want) in cases {
            let reply = reply(text);
            let outcome =
                Outcome::from_reply(Class::of(reply.code), Scope::Recipient, stage, reply);
            assert_eq!(outcome.too_many_recipients(), want, "{text} to {stage}");
        }
        let lost = Outcome::without_reply(Class::Transient, Scope::Destination, Stage::Rcpt, "x");
        assert!(!lost.too_many_recipients(), "no reply");
    }

    /// Issue 22, defect 10: the recipients over the server's limit go in a
    /// new transaction at once, but only after progress and when nothing
    /// else makes the message wait.
    #[test]
    fn send_again_after_progress_when_nothing_else_waits() {
        let ok = || Ok(reply("250 2.0.0 queued"));
        let refused = |text: &str| {
            let reply = reply(text);
            Err(Outcome::from_reply(
                Class::of(reply.code),
                Scope::Recipient,
                Stage::Rcpt,
                reply,
            ))
        };
        let over = || refused("452 4.5.3 Too many recipients");
        type Case = (&'static str, Vec<Result<Reply, Outcome>>, Vec<bool>);
        let cases: Vec<Case> = vec![
            (
                "limit reached",
                vec![ok(), ok(), over(), over()],
                vec![false, false, true, true],
            ),
            (
                "nothing delivered",
                vec![over(), over()],
                vec![false, false],
            ),
            (
                "another recipient deferred",
                vec![ok(), refused("451 4.7.1 Greylisted"), over()],
                vec![false, false, false],
            ),
            (
                "another recipient bounced",
                vec![ok(), refused("550 5.1.1 No such user"), over()],
                vec![false, false, true],
            ),
            ("all delivered", vec![ok(), ok()], vec![false, false]),
        ];
        for (name, results, want) in cases {
            assert_eq!(message_result(results).send_again(), want, "{name}");
        }
    }

    #[test]
    fn class_of_codes() {
        let cases = [
            (250, Class::Transient),
            (354, Class::Transient),
            (421, Class::Transient),
            (451, Class::Transient),
            (500, Class::Permanent),
            (554, Class::Permanent),
        ];
        for (code, want) in cases {
            let code = ReplyCode::new(code).expect("test code in range");
            assert_eq!(Class::of(code), want, "class of {code}");
        }
    }
}
