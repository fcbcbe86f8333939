//! One mail transaction on a session: RSET, MAIL with its ESMTP parameters
//! (RFC 1870 SIZE, RFC 6152 BODY=8BITMIME, RFC 6531 SMTPUTF8), the RCPTs,
//! then the body after DATA (RFC 5321 §4.1.1.4) or in BDAT chunks (RFC 3030
//! CHUNKING), with the replies matched against the FIFO of pending
//! commands (RFC 2920 §3).
//!
//! What the server's extensions rule out is decided before anything is
//! sent: a message over the advertised SIZE, or one whose addresses need
//! SMTPUTF8 on a server without it, fails permanently without a MAIL. So
//! does, transiently, a message whose sender requires TLS (RFC 8689
//! REQUIRETLS) on a session without verified TLS or to a server that does
//! not advertise REQUIRETLS.

use std::mem;
use std::time::Instant;

use super::state::{Pending, State, Transaction};
use super::{Envelope, Session, SessionError, BDAT_CHUNK, BODY_HIGH_WATER};
use crate::queue::params::MAX_ORCPT;
use crate::smtp::command::{address_problem, Command, MailParams};
use crate::smtp::data::DotStuffer;
use crate::smtp::extensions::Extensions;
use crate::smtp::outcome::{Class, Outcome, Scope, Stage};
use crate::smtp::policy::TlsInfo;
use crate::smtp::reply::{EnhancedCode, Reply, ReplyCode};

impl Session {
    /// Begins a transaction. Only after [`Event::Ready`](super::Event::Ready).
    ///
    /// Fails permanently without being sent: addresses that would break
    /// the command line (control characters, an empty recipient), a message
    /// larger than the server's SIZE limit, a message whose addresses need
    /// SMTPUTF8 when the server does not offer it. When no recipient is
    /// left, `MessageDone` and `Ready` follow at once.
    ///
    /// MAIL declares `SIZE=` when the server has SIZE and the envelope a
    /// size, `BODY=8BITMIME` for an 8-bit message when the server has
    /// 8BITMIME (without it the message is sent as is), `SMTPUTF8` when an
    /// address needs it. To a server with DSN, MAIL carries the envelope's
    /// `RET` and `ENVID` and each RCPT its recipient's `NOTIFY` and
    /// `ORCPT`, as queued; to one without, none of them. The body goes in
    /// BDAT chunks when the server has CHUNKING.
    ///
    /// A message that requires TLS (`REQUIRETLS`, RFC 8689 §4.1) goes only
    /// over TLS whose certificate was verified, to a server that advertised
    /// REQUIRETLS after STARTTLS, with ` REQUIRETLS` on MAIL; otherwise
    /// every recipient fails transiently, before anything is sent, with
    /// status 5.7.10 (no verified TLS) or 5.7.30 (no REQUIRETLS).
    pub fn start_message(&mut self, envelope: Envelope, now: Instant) -> Result<(), SessionError> {
        let last = match &self.state {
            State::Ready { last } => *last,
            State::Closed { .. } => return Err(SessionError::Closed),
            other => {
                return Err(SessionError::NotReady {
                    state: other.describe(),
                })
            }
        };
        if envelope.recipients.is_empty() {
            return Err(SessionError::NoRecipients);
        }
        let mut txn = Transaction::new(envelope);
        refuse_bad_addresses(&mut txn);
        let none = Extensions::default();
        let extensions = self.extensions.as_ref().unwrap_or(&none);
        refuse_without_requiretls(&mut txn, extensions, self.tls.as_ref());
        refuse_by_extensions(&mut txn, extensions);
        if let Some((limit, refusal)) = &self.rcpt_limit {
            hold_over_limit(&mut txn, *limit, refusal);
        }
        let smtputf8 = txn.envelope.needs_smtputf8() && extensions.smtputf8;
        let dsn = extensions.dsn.then_some(&txn.envelope.params);
        txn.params = MailParams {
            size: extensions.size.and(txn.envelope.size),
            eight_bit: txn.envelope.eight_bit && extensions.eight_bit_mime,
            smtputf8,
            ret: dsn.and_then(|p| p.ret),
            envid: dsn.and_then(|p| p.envid.clone()),
            // Only reached with its conditions met: otherwise nothing is sent.
            requiretls: txn.envelope.params.requiretls,
        };
        dsn_recipients(&mut txn.envelope, extensions.dsn, smtputf8);
        txn.chunking = extensions.chunking;
        let pipelining = extensions.pipelining;
        let Some(first) = txn.next_rcpt(0) else {
            self.message_done(txn, None);
            self.ready(last);
            return Ok(());
        };
        self.transactions += 1;
        if mem::replace(&mut self.needs_rset, true) {
            self.send(&mut txn, Pending::Rset);
            txn.untried = true;
        }
        if pipelining || txn.pending.is_empty() {
            self.send(&mut txn, Pending::Mail);
        }
        if pipelining {
            let mut next = Some(first);
            while let Some(index) = next {
                self.send(&mut txn, Pending::Rcpt(index));
                next = txn.next_rcpt(index + 1);
            }
            // BDAT is not sent ahead: the first chunk waits for the RCPT
            // replies, so a message nobody accepted is never sent.
            if !txn.chunking {
                self.send(&mut txn, Pending::Data);
            }
        }
        self.enter(State::AwaitReplies(txn), now);
        Ok(())
    }

    /// True in the body phase (after DATA got 354, or once a recipient of a
    /// CHUNKING transaction was accepted) while the output buffer holds less
    /// than [`BODY_HIGH_WATER`] bytes. Without PIPELINING, also false while
    /// a BDAT chunk awaits its reply; after a refused chunk, false for good.
    pub fn wants_body(&self) -> bool {
        let State::SendingBody(txn) = &self.state else {
            return false;
        };
        let pipelining = self.extensions.as_ref().is_some_and(|e| e.pipelining);
        self.out.pending().len() < BODY_HIGH_WATER
            && !txn.body_failed
            && (!txn.chunking || pipelining || txn.pending.is_empty())
    }

    /// True in the body phase after DATA (not BDAT) while all output is
    /// written and the body pushed so far, if any, ended with an LF. Then
    /// the caller may write the rest of a body that
    /// [`BodyMeasure::is_verbatim`](crate::smtp::BodyMeasure::is_verbatim)
    /// passed straight to the connection, from its own buffer, instead of
    /// through [`push_body`](Self::push_body): it needs no change, so the
    /// copy into the output buffer is saved. Each write is reported with
    /// [`body_written`](Self::body_written), and the body ends with
    /// [`finish_body`](Self::finish_body) as usual.
    pub fn takes_body_directly(&self) -> bool {
        let State::SendingBody(txn) = &self.state else {
            return false;
        };
        !txn.chunking
            && !txn.body_failed
            && self.out.pending().is_empty()
            && self.stuffer.between_lines()
    }

    /// `n` octets of the body were written straight to the connection
    /// (see [`takes_body_directly`](Self::takes_body_directly)): progress
    /// that pushes the data_block deadline back, as written output does.
    pub fn body_written(&mut self, n: usize) {
        if n > 0 && matches!(self.state, State::SendingBody(_)) {
            self.progress = true;
        }
    }

    /// The next chunk of the message, every line end sent as CRLF:
    /// dot-stuffed after DATA, framed in BDAT chunks of about
    /// [`BDAT_CHUNK`] octets with CHUNKING. Ignored outside the body phase.
    /// Re-arms the data_block timeout.
    pub fn push_body(&mut self, chunk: &[u8], now: Instant) {
        let State::SendingBody(txn) = &mut self.state else {
            return;
        };
        if txn.body_failed {
            return;
        }
        if txn.chunking {
            self.stuffer.push(chunk, &mut self.chunk);
            if self.chunk.len() >= BDAT_CHUNK {
                send_chunk(self.out.buf(), &mut self.chunk, txn, false);
            }
        } else {
            self.stuffer.push(chunk, self.out.buf());
        }
        self.arm(now);
    }

    /// Ends the body: CRLF if it did not end with a line end, then `.` CRLF
    /// (or the last chunk, `BDAT <n> LAST`). Ignored outside the body phase
    /// and after a refused BDAT chunk.
    pub fn finish_body(&mut self, now: Instant) {
        match self.take_state() {
            State::SendingBody(mut txn) if txn.chunking => {
                if txn.body_failed {
                    // The session ends the message itself once the
                    // replies in flight are in.
                    self.state = State::SendingBody(txn);
                    return;
                }
                self.stuffer.end_line(&mut self.chunk);
                send_chunk(self.out.buf(), &mut self.chunk, &mut txn, true);
                // Do not keep a chunk's worth of memory per idle connection.
                self.chunk = Vec::new();
                self.enter(State::AwaitDataEnd(txn), now);
            }
            State::SendingBody(txn) => {
                self.stuffer.finish(self.out.buf());
                self.enter(State::AwaitDataEnd(txn), now);
            }
            state => self.state = state,
        }
    }

    pub(super) fn on_transaction_reply(
        &mut self,
        mut txn: Transaction,
        reply: Reply,
        now: Instant,
    ) {
        let Some(command) = txn.pending.pop_front() else {
            // AwaitReplies always has a command pending; should that ever
            // break, the reply is unsolicited.
            self.state = State::AwaitReplies(txn);
            self.out_of_turn(reply);
            return;
        };
        let code = reply.code;
        let stage = command.stage();
        // A 421 to the MAIL after RSET ends the session before the server
        // looked at the message (servers that limit messages per
        // connection say so there): still untried.
        let session_limit =
            code == ReplyCode::SERVICE_NOT_AVAILABLE && matches!(command, Pending::Mail);
        if !matches!(command, Pending::Rset) && !session_limit {
            txn.untried = false;
        }
        if code == ReplyCode::SERVICE_NOT_AVAILABLE {
            return self.refused(Some(txn), Scope::Destination, stage, reply);
        }
        match command {
            Pending::Rset if code.class() != 2 => {
                // The connection is in an unknown state: give it up. When
                // commands are still in flight, the server may be reading a
                // body after them; QUIT would only be text to it.
                let outcome =
                    Outcome::from_reply(Class::Transient, Scope::Destination, Stage::Rset, reply);
                let quit = txn.pending.is_empty();
                return self.end(Some(txn), Some(outcome), quit);
            }
            Pending::Rset => {}
            Pending::Mail => {
                if code.class() != 2 {
                    txn.mail_failed = true;
                    let outcome =
                        Outcome::from_reply(Class::of(code), Scope::Message, Stage::Mail, reply);
                    fill(&mut txn, &Err(outcome));
                }
            }
            Pending::Rcpt(index) => {
                if txn.mail_failed {
                    // Only draining the pipelined group: MAIL decided.
                } else if code.class() == 2 {
                    txn.accepted += 1;
                } else if let Some(slot) = txn.results.get_mut(index) {
                    let outcome =
                        Outcome::from_reply(Class::of(code), Scope::Recipient, Stage::Rcpt, reply);
                    if outcome.too_many_recipients() && txn.over_limit.is_none() {
                        txn.over_limit = Some(outcome.clone());
                        if self.rcpt_limit.is_none() && txn.accepted > 0 {
                            self.rcpt_limit = Some((txn.accepted, outcome.clone()));
                        }
                    }
                    *slot = Some(Err(outcome));
                }
            }
            Pending::Data => return self.on_data(txn, reply, now),
            // BDAT is never pending here: chunks are sent in the body phase.
            Pending::Bdat(_) => {}
        }
        if txn.pending.is_empty() {
            if let (Pending::Rcpt(index), Some(outcome)) = (command, txn.over_limit.clone()) {
                // Not pipelined: the RCPTs after this one are not sent yet,
                // and would only hear the same.
                let later = txn.results.iter_mut().skip(index + 1);
                later
                    .filter(|slot| slot.is_none())
                    .for_each(|slot| *slot = Some(Err(outcome.clone())));
            }
            match next_command(&txn, command) {
                Some(next) => self.send(&mut txn, next),
                None if txn.chunking && txn.sends_body() => {
                    self.stuffer = DotStuffer::line_ends_only();
                    self.chunk.clear();
                    return self.enter(State::SendingBody(txn), now);
                }
                None => return self.message_finished(txn, stage),
            }
        }
        self.enter(State::AwaitReplies(txn), now);
    }

    fn on_data(&mut self, mut txn: Transaction, reply: Reply, now: Instant) {
        let code = reply.code;
        if code.class() == 3 {
            if txn.sends_body() {
                self.stuffer = DotStuffer::new();
                self.enter(State::SendingBody(txn), now);
            } else {
                // Pipelined DATA was accepted although no RCPT was: end the
                // empty message at once; its reply is ignored.
                self.out.buf().extend_from_slice(b".\r\n");
                self.enter(State::AwaitDataEnd(txn), now);
            }
            return;
        }
        if txn.sends_body() {
            let outcome = Outcome::from_reply(Class::of(code), Scope::Message, Stage::Data, reply);
            fill(&mut txn, &Err(outcome));
        }
        self.message_finished(txn, Stage::Data);
    }

    /// The reply to a BDAT chunk while the body is still being sent.
    pub(super) fn on_chunk_reply(&mut self, mut txn: Transaction, reply: Reply, now: Instant) {
        txn.pending.pop_front();
        if reply.code == ReplyCode::SERVICE_NOT_AVAILABLE {
            return self.refused(Some(txn), Scope::Destination, Stage::Bdat, reply);
        }
        chunk_answered(&mut txn, reply);
        if txn.body_failed && txn.pending.is_empty() {
            return self.message_finished(txn, Stage::Bdat);
        }
        self.enter(State::SendingBody(txn), now);
    }

    /// A reply after the body: to the final dot, or to a BDAT chunk (the
    /// one with LAST decides, unless an earlier chunk was refused).
    pub(super) fn on_data_end(&mut self, mut txn: Transaction, reply: Reply, now: Instant) {
        let command = txn.pending.pop_front();
        let stage = command.map_or(Stage::DataEnd, Pending::stage);
        let code = reply.code;
        if code == ReplyCode::SERVICE_NOT_AVAILABLE {
            return self.refused(Some(txn), Scope::Destination, stage, reply);
        }
        if command == Some(Pending::Bdat(false)) {
            chunk_answered(&mut txn, reply);
            return self.enter(State::AwaitDataEnd(txn), now);
        }
        if txn.sends_body() {
            let result = if code.class() == 2 {
                Ok(reply)
            } else {
                Err(Outcome::from_reply(
                    Class::of(code),
                    Scope::Message,
                    Stage::DataEnd,
                    reply,
                ))
            };
            fill(&mut txn, &result);
        }
        self.message_finished(txn, Stage::DataEnd);
    }

    fn send(&mut self, txn: &mut Transaction, command: Pending) {
        let out = self.out.buf();
        match command {
            Pending::Rset => Command::Rset.encode(out),
            Pending::Mail => Command::MailFrom(&txn.envelope.sender, &txn.params).encode(out),
            Pending::Rcpt(index) => {
                if let Some(recipient) = txn.envelope.recipients.get(index) {
                    let params = txn.envelope.recipient_params(index);
                    Command::RcptTo(recipient, params).encode(out);
                }
            }
            Pending::Data => Command::Data.encode(out),
            // Chunks carry data: they go out through `send_chunk`.
            Pending::Bdat(_) => return,
        }
        txn.pending.push_back(command);
    }
}

/// Writes `BDAT <n> [LAST]` and the chunk, and awaits its reply.
fn send_chunk(out: &mut Vec<u8>, chunk: &mut Vec<u8>, txn: &mut Transaction, last: bool) {
    Command::Bdat {
        size: chunk.len(),
        last,
    }
    .encode(out);
    out.extend_from_slice(chunk);
    chunk.clear();
    txn.pending.push_back(Pending::Bdat(last));
}

/// A refused BDAT chunk fails the message (RFC 3030 §2: no more chunks
/// after a 4xx or 5xx); replies after the first refusal change nothing.
fn chunk_answered(txn: &mut Transaction, reply: Reply) {
    if reply.code.class() == 2 || txn.body_failed {
        return;
    }
    txn.body_failed = true;
    let outcome = Outcome::from_reply(Class::of(reply.code), Scope::Message, Stage::Bdat, reply);
    fill(txn, &Err(outcome));
}

/// Without PIPELINING: what to send after `after` was answered. `None`
/// ends the command phase: the body follows (BDAT) or the message is done.
fn next_command(txn: &Transaction, after: Pending) -> Option<Pending> {
    match after {
        Pending::Rset => Some(Pending::Mail),
        Pending::Mail if txn.mail_failed => None,
        Pending::Mail => txn.next_rcpt(0).map(Pending::Rcpt),
        Pending::Rcpt(index) => txn
            .next_rcpt(index + 1)
            .map(Pending::Rcpt)
            .or_else(|| (txn.sends_body() && !txn.chunking).then_some(Pending::Data)),
        Pending::Data | Pending::Bdat(_) => None,
    }
}

/// The server refused recipients past `limit` in an earlier transaction on
/// this connection: only the first `limit` still to be sent go out now; the
/// rest get that refusal unasked, so they go in the next transaction
/// ([`crate::smtp::MessageResult::send_again`]). Without this, every new
/// transaction of a 100,000-recipient message sent all the RCPTs still
/// pending again, and heard 452 for all but 100 of them.
fn hold_over_limit(txn: &mut Transaction, limit: usize, refusal: &Outcome) {
    txn.results
        .iter_mut()
        .filter(|slot| slot.is_none())
        .skip(limit)
        .for_each(|slot| *slot = Some(Err(refusal.clone())));
}

/// The recipients' DSN parameters as this server is to get them: none
/// without DSN (RFC 3461 §5.2: the parameters are not passed to a server
/// that does not advertise it); with DSN, a `utf-8` ORCPT written in its
/// ASCII form unless the transaction uses SMTPUTF8 (RFC 6533 §3). An ORCPT
/// that grows past RFC 3461 §4.2's 500 characters that way is left out
/// (it is optional; the server would refuse the RCPT for it), so the
/// command stays within the room RFC 3461 §5 adds to RCPT; the queue's
/// limits keep every other parameter within it.
fn dsn_recipients(envelope: &mut Envelope, dsn: bool, smtputf8: bool) {
    if !dsn {
        envelope.rcpt_params.clear();
        return;
    }
    if smtputf8 {
        return;
    }
    for params in envelope.rcpt_params.iter_mut().flatten() {
        let Some(orcpt) = params.orcpt.as_mut() else {
            continue;
        };
        if !orcpt.address.is_ascii() {
            orcpt.address = utf8_addr_xtext(&orcpt.address);
            if orcpt.to_string().len() > MAX_ORCPT {
                params.orcpt = None;
            }
        }
    }
}

/// RFC 6533 §3's `utf-8-addr-xtext` form of a `utf-8-addr-unitext`
/// address: each non-ASCII character as `\x{HEX}`, upper-case hex digits
/// without leading zeros.
fn utf8_addr_xtext(address: &str) -> String {
    let mut out = String::with_capacity(address.len() * 2);
    for c in address.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\x{{{:X}}}", u32::from(c)));
        }
    }
    out
}

/// Every recipient not yet final gets `result`.
pub(super) fn fill(txn: &mut Transaction, result: &Result<Reply, Outcome>) {
    for slot in txn.results.iter_mut().filter(|slot| slot.is_none()) {
        *slot = Some(result.clone());
    }
}

/// Fails the addresses that cannot be sent, before anything is sent.
fn refuse_bad_addresses(txn: &mut Transaction) {
    let refuse = |scope, stage, detail| {
        Some(Err(Outcome::without_reply(
            Class::Permanent,
            scope,
            stage,
            detail,
        )))
    };
    let sender = &txn.envelope.sender;
    if let Some(problem) = address_problem(sender, true) {
        let detail = format!("invalid sender address {sender:?}: {problem}");
        let outcome = refuse(Scope::Message, Stage::Mail, detail);
        txn.results
            .iter_mut()
            .for_each(|slot| *slot = outcome.clone());
        return;
    }
    for (recipient, slot) in txn.envelope.recipients.iter().zip(&mut txn.results) {
        if let Some(problem) = address_problem(recipient, false) {
            let detail = format!("invalid recipient address {recipient:?}: {problem}");
            *slot = refuse(Scope::Recipient, Stage::Rcpt, detail);
        }
    }
}

/// Fails the whole message transiently, before MAIL, when its sender
/// requires TLS (RFC 8689 §4.1) and this session cannot honour it: no TLS,
/// or TLS whose certificate was not verified (5.7.10), or a server that did
/// not advertise REQUIRETLS over TLS (5.7.30, RFC 8689 §5). Transient: another
/// MX, or a later attempt, may do; once the message's lifetime is over it
/// bounces with that status. The texts follow the outcome's "host X …"
/// framing.
fn refuse_without_requiretls(
    txn: &mut Transaction,
    extensions: &Extensions,
    tls: Option<&TlsInfo>,
) {
    if !txn.envelope.params.requiretls {
        return;
    }
    let (detail, status) = match tls {
        None => (
            "was reached without TLS, but the sender requires verified TLS (REQUIRETLS, RFC \
             8689)",
            Outcome::REQUIRETLS_NO_TLS,
        ),
        Some(tls) if !tls.verified => (
            "was reached over TLS whose certificate was not verified, but the sender requires \
             verified TLS (REQUIRETLS, RFC 8689)",
            Outcome::REQUIRETLS_NO_TLS,
        ),
        // The extensions are those of the EHLO after TLS: the session forgets
        // the earlier ones (RFC 3207 §4.2).
        Some(_) if !extensions.requiretls => (
            "does not advertise REQUIRETLS, which the sender requires (RFC 8689)",
            Outcome::REQUIRETLS_UNSUPPORTED,
        ),
        Some(_) => return,
    };
    let outcome = Outcome::without_reply(Class::Transient, Scope::Message, Stage::Mail, detail)
        .with_status(status);
    fill(txn, &Err(outcome));
}

/// Fails the whole message, before MAIL, when the server's extensions rule
/// it out. The texts follow the outcome's "host X …" framing.
fn refuse_by_extensions(txn: &mut Transaction, extensions: &Extensions) {
    let envelope = &txn.envelope;
    let detail = if let (Some(limit @ 1..), Some(size)) = (extensions.size, envelope.size) {
        // RFC 1870 §6.1: SIZE 0 means no fixed limit.
        (size > limit).then(|| {
            (
                format!(
                    "accepts messages of at most {limit} octets (SIZE), but this message has \
                     {size} (RFC 1870)"
                ),
                // RFC 3463: message length exceeds administrative limit.
                EnhancedCode {
                    class: 5,
                    subject: 3,
                    detail: 4,
                },
            )
        })
    } else {
        None
    };
    let detail = detail.or_else(|| {
        if extensions.smtputf8 {
            return None;
        }
        let address = std::iter::once(&envelope.sender)
            .chain(&envelope.recipients)
            .find(|address| !address.is_ascii())?;
        Some((
            format!(
                "does not offer SMTPUTF8, which the internationalised address {address:?} needs \
                 (RFC 6531)"
            ),
            // RFC 6531 §3.6: non-ASCII addresses not permitted for the
            // recipient or the sender.
            EnhancedCode {
                class: 5,
                subject: 6,
                detail: 7,
            },
        ))
    });
    if let Some((detail, status)) = detail {
        let outcome = Outcome::without_reply(Class::Permanent, Scope::Message, Stage::Mail, detail)
            .with_status(status);
        fill(txn, &Err(outcome));
    }
}
