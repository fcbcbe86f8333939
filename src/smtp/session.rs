//! The SMTP client session, a sans-IO state machine in the manner of rustls
//! and quinn-proto: RFC 5321 §3.1–§3.3, §4.1.1, §4.3.2 (the reply codes each
//! command may get), §4.5.3.2 (timeouts), RFC 2920 (PIPELINING), RFC 1869
//! §4.7 (falling back from EHLO to HELO), RFC 3207 (STARTTLS: the session
//! asks its driver for the handshake and forgets what it knew before it),
//! RFC 8314 §3.3 (implicit TLS: the handshake comes before the greeting).
//! AUTH (RFC 4954), between the greeting phase and the first transaction,
//! is in [`authenticate`]; the transaction itself (MAIL parameters, DATA or
//! BDAT) in [`transaction`].
//!
//! It never touches a socket or a clock: bytes and instants come in as
//! arguments, bytes to send and [`Event`]s go out.

mod authenticate;
mod state;
#[cfg(test)]
mod tests;
mod transaction;

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use self::state::{State, Transaction};
use super::auth::AuthConfig;
use super::command::Command;
use super::data::DotStuffer;
use super::extensions::Extensions;
use super::loops::names_host;
use super::outcome::{Class, MessageResult, Outcome, RecipientResult, Scope, Stage};
use super::policy::{TlsInfo, TlsMode};
use super::reply::{Reply, ReplyCode, ReplyParser};
use crate::queue::params::{MsgParams, RcptParams};

/// While the output buffer holds this much, [`Session::wants_body`] is false.
pub const BODY_HIGH_WATER: usize = 64 * 1024;

/// A BDAT chunk goes out once this much body is buffered (RFC 3030 leaves
/// the size to the client; Exim uses a few kilobytes up to the whole body).
pub const BDAT_CHUNK: usize = 64 * 1024;

/// How long each wait may last (RFC 5321 §4.5.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// The 220 greeting.
    pub greeting: Duration,
    /// The reply to EHLO, and to HELO.
    pub ehlo: Duration,
    /// The reply to MAIL FROM.
    pub mail: Duration,
    /// The reply to each RCPT TO.
    pub rcpt: Duration,
    /// The reply to DATA.
    pub data: Duration,
    /// Progress while sending the body.
    pub data_block: Duration,
    /// The reply after the final dot.
    pub data_done: Duration,
    /// The reply to RSET.
    pub rset: Duration,
    /// The reply to QUIT.
    pub quit: Duration,
}

impl Default for Timeouts {
    /// RFC 5321 §4.5.3.2, and Postfix's `smtp_rset_timeout` for RSET.
    fn default() -> Timeouts {
        let secs = Duration::from_secs;
        Timeouts {
            greeting: secs(300),
            ehlo: secs(300),
            mail: secs(300),
            rcpt: secs(300),
            data: secs(120),
            data_block: secs(180),
            data_done: secs(600),
            rset: secs(20),
            quit: secs(300),
        }
    }
}

/// What a session needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The name given in EHLO/HELO. Control characters and spaces are
    /// dropped; an empty name becomes `localhost`.
    pub helo_name: String,
    /// Per-stage timeouts. STARTTLS and the TLS handshake use `ehlo`.
    pub timeouts: Timeouts,
    /// Whether STARTTLS is used: the destination's `tls.mode`, or
    /// [`TlsMode::Disabled`] when the driver cannot do TLS (or is retrying
    /// a host whose handshake failed, in plaintext). Ignored under
    /// `implicit_tls`.
    pub tls: TlsMode,
    /// Implicit TLS (RFC 8314 §3.3, `smtps`, port 465): the session asks
    /// for the TLS handshake before anything else ([`Event::StartTls`] at
    /// once), then waits for the greeting over TLS; the server's STARTTLS
    /// keyword is ignored. A failed handshake ends the session like any
    /// failure of the host: it is never retried in plaintext.
    pub implicit_tls: bool,
    /// SMTP AUTH before the first transaction, when set; `None` for MX
    /// delivery. Its `Debug` shows no password.
    pub auth: Option<AuthConfig>,
    /// This host's other names (`application.hostname`, every configured
    /// EHLO name): a server that greets with one of them is a mail loop as
    /// surely as one that greets with `helo_name`.
    pub own_names: Vec<String>,
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The sender, without angle brackets; `""` is the null sender `<>`.
    pub sender: String,
    /// The recipients, without angle brackets, sent exactly as given.
    pub recipients: Vec<String>,
    /// The message's size as [`BodyMeasure`](super::BodyMeasure) counts it,
    /// declared as `SIZE=` (RFC 1870) when known; a server that advertises
    /// a smaller limit is not sent the message at all.
    pub size: Option<u64>,
    /// The message holds 8-bit octets: `BODY=8BITMIME` when the server
    /// offers it (RFC 6152); sent as is otherwise, as Postfix does.
    pub eight_bit: bool,
    /// The sender's wishes for the whole message: `RET` and `ENVID` go on
    /// MAIL to a server that advertises DSN (RFC 3461 §4.3, §4.4);
    /// `REQUIRETLS` (RFC 8689) lets the message go only over verified TLS
    /// to a server that advertises it, and then goes on MAIL.
    pub params: MsgParams,
    /// Each recipient's DSN parameters (`NOTIFY`, `ORCPT`), by index into
    /// `recipients`; a missing entry or `None` is a recipient without any.
    /// Sent on RCPT only to a server that advertises DSN (RFC 3461 §4.1,
    /// §4.2).
    pub rcpt_params: Vec<Option<RcptParams>>,
}

impl Envelope {
    /// An envelope of unknown size and 7-bit content.
    pub fn new(sender: impl Into<String>, recipients: Vec<String>) -> Envelope {
        Envelope {
            sender: sender.into(),
            recipients,
            size: None,
            eight_bit: false,
            params: MsgParams::default(),
            rcpt_params: Vec::new(),
        }
    }

    /// The DSN parameters of the recipient at `index`, if it has any.
    pub fn recipient_params(&self, index: usize) -> Option<&RcptParams> {
        self.rcpt_params.get(index).and_then(Option::as_ref)
    }

    /// Some address is not ASCII: the message needs SMTPUTF8 (RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.sender.is_ascii() || self.recipients.iter().any(|r| !r.is_ascii())
    }
}

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Greeting and EHLO/HELO done (and STARTTLS, when used), or the
    /// previous transaction finished: call `start_message` or `quit`.
    Ready,
    /// The server accepted STARTTLS: wrap the connection in TLS (server
    /// name: the MX host), run the handshake, then call
    /// [`Session::tls_established`] or [`Session::tls_failed`]. Every byte
    /// from now on, both ways, goes through TLS.
    StartTls,
    /// Every recipient of the message given to `start_message` has its result.
    MessageDone(MessageResult),
    /// The session is over. `None` after QUIT (or when the caller abandoned
    /// it); `Some` when it ended by failure. During a transaction,
    /// `MessageDone` comes first, every recipient not yet final getting that
    /// outcome (always transient).
    Closed(Option<Outcome>),
}

/// The caller asked for something the session cannot do now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// `start_message` was called before `Event::Ready`.
    #[error("cannot start a message while {state}: wait for Event::Ready")]
    NotReady {
        /// What the session was doing.
        state: &'static str,
    },
    /// The envelope has no recipient.
    #[error("the envelope has no recipients: give at least one")]
    NoRecipients,
    /// The session has ended.
    #[error("the session is closed: open a new connection")]
    Closed,
}

/// Bytes waiting to be written: a buffer and how much of it is written.
/// Its `Debug` gives sizes only: the buffer may hold AUTH credentials.
#[derive(Default)]
struct Output {
    buf: Vec<u8>,
    pos: usize,
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Output")
            .field("pending", &self.pending().len())
            .finish()
    }
}

impl Output {
    /// Zeroes the whole buffer, spare capacity included, once everything
    /// in it is written: the AUTH lines it held leave no copy behind.
    fn wipe(&mut self) {
        if self.pending().is_empty() {
            self.buf.zeroize();
            self.pos = 0;
        }
    }

    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or_default()
    }

    /// Marks `n` bytes written (at most what is pending); returns how many.
    fn consume(&mut self, n: usize) -> usize {
        let n = n.min(self.buf.len() - self.pos);
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        n
    }

    /// The buffer to append to. The written prefix is dropped first once it
    /// outweighs the rest, so compaction costs O(1) per byte overall.
    fn buf(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 && self.pos >= self.buf.len() - self.pos {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }
}

/// One SMTP client connection's protocol state.
///
/// Call order:
///
/// 1. [`new`](Self::new) when the TCP connection is up.
/// 2. Feed it: [`handle_input`](Self::handle_input) with whatever was read
///    (any split), [`handle_eof`](Self::handle_eof) when the peer closed,
///    [`handle_timeout`](Self::handle_timeout) when
///    [`poll_timeout`](Self::poll_timeout) has passed.
/// 3. After every call, write [`pending_output`](Self::pending_output) and
///    report it with [`consume_output`](Self::consume_output), and drain
///    [`poll_event`](Self::poll_event).
/// 4. On [`Event::StartTls`], run the TLS handshake over the connection and
///    report it with [`tls_established`](Self::tls_established) or
///    [`tls_failed`](Self::tls_failed); from then on, feed and write the
///    decrypted stream. Under [`SessionConfig::implicit_tls`] this is the
///    first event, before any byte is read.
/// 5. On [`Event::Ready`], call [`start_message`](Self::start_message) or
///    [`quit`](Self::quit).
/// 6. While [`wants_body`](Self::wants_body), [`push_body`](Self::push_body)
///    the next chunk of the message; at its end,
///    [`finish_body`](Self::finish_body).
/// 7. On [`Event::Closed`] (or once [`is_closed`](Self::is_closed)), flush
///    the pending output and close the socket.
///
/// Replies are matched against a FIFO of sent commands; with PIPELINING
/// (RFC 2920) a transaction's RSET, MAIL, RCPTs and DATA go out in one
/// write, otherwise one command at a time. With CHUNKING (RFC 3030) the body
/// goes out in BDAT chunks instead of after DATA. Errors are sticky: once
/// closed, the session ignores input and yields nothing new.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    parser: ReplyParser,
    out: Output,
    stuffer: DotStuffer,
    /// The BDAT chunk being filled.
    chunk: Vec<u8>,
    events: VecDeque<Event>,
    deadline: Option<Instant>,
    /// Output was consumed while sending the body since the deadline was
    /// armed: `consume_output` carries no clock, so the data_block deadline
    /// is pushed back lazily, at the next `handle_timeout`.
    progress: bool,
    extensions: Option<Extensions>,
    /// The TLS the connection runs under, once the handshake is done.
    tls: Option<TlsInfo>,
    transactions: usize,
    /// A MAIL went out on this connection: the next transaction starts with RSET.
    needs_rset: bool,
    /// The server's limit of recipients per transaction, learned from its
    /// first "too many recipients" refusal (how many it had accepted), with
    /// that refusal: later transactions send no more RCPTs than that.
    rcpt_limit: Option<(usize, Outcome)>,
}

impl Session {
    /// Starts in `AwaitGreeting`, with deadline `now + timeouts.greeting`;
    /// under implicit TLS, in `AwaitTls` with [`Event::StartTls`] queued and
    /// the handshake's deadline (`timeouts.ehlo`).
    pub fn new(mut config: SessionConfig, now: Instant) -> Session {
        config.helo_name = clean_helo_name(&config.helo_name);
        let implicit_tls = config.implicit_tls;
        let mut session = Session {
            config,
            state: State::AwaitGreeting,
            parser: ReplyParser::new(),
            out: Output::default(),
            stuffer: DotStuffer::new(),
            chunk: Vec::new(),
            events: VecDeque::new(),
            deadline: None,
            progress: false,
            extensions: None,
            tls: None,
            transactions: 0,
            needs_rset: false,
            rcpt_limit: None,
        };
        if implicit_tls {
            session.state = State::AwaitTls;
            session.events.push_back(Event::StartTls);
        }
        session.arm(now);
        session
    }

    /// Bytes read from the server, in any split.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) {
        if self.is_closed() || bytes.is_empty() {
            return;
        }
        self.parser.push(bytes);
        loop {
            if self.is_closed() {
                return;
            }
            if !self.state.awaits_reply() {
                if !self.parser.has_buffered() {
                    return;
                }
                if matches!(self.state, State::AwaitTls) {
                    let seen = first_line(self.parser.buffered());
                    self.injection(&seen);
                    return;
                }
                // A whole reply out of turn may be the server's 421 before
                // it closes (RFC 5321 §3.8): keep its code for the record.
                match self.parser.next_reply() {
                    Ok(Some(reply)) => self.out_of_turn(reply),
                    _ => {
                        let seen = first_line(self.parser.buffered());
                        self.unsolicited(&seen);
                    }
                }
                return;
            }
            match self.parser.next_reply() {
                Ok(Some(reply)) => self.on_reply(reply, now),
                Ok(None) => return,
                Err(error) => {
                    let stage = self.state.stage();
                    let detail = format!("malformed reply ({error}) {}", stage.context());
                    self.fail(detail);
                    return;
                }
            }
        }
    }

    /// The server closed the connection.
    pub fn handle_eof(&mut self, _now: Instant) {
        match self.take_state() {
            state @ State::Closed { .. } => self.state = state,
            State::AwaitQuit => self.end(None, None, false),
            state => {
                self.state = state;
                let detail = format!("lost connection while {}", self.describe());
                self.fail(detail);
            }
        }
    }

    /// Fails the current wait if `now` is at or past [`poll_timeout`](Self::poll_timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.deadline {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        if self.progress && matches!(self.state, State::SendingBody(_)) {
            self.arm(now);
            return;
        }
        let detail = format!("conversation timed out while {}", self.describe());
        self.fail(detail);
    }

    /// The TLS handshake after [`Event::StartTls`] succeeded: EHLO goes out
    /// again, and only its answer counts (RFC 3207 §4.2: the client
    /// discards what it knew from the server before TLS). Under implicit
    /// TLS, the greeting comes next. Ignored unless the session is waiting
    /// for the handshake.
    pub fn tls_established(&mut self, info: TlsInfo, now: Instant) {
        if !matches!(self.state, State::AwaitTls) {
            return;
        }
        self.tls = Some(info);
        self.extensions = None;
        if self.config.implicit_tls {
            self.enter(State::AwaitGreeting, now);
            return;
        }
        Command::Ehlo(&self.config.helo_name).encode(self.out.buf());
        self.enter(State::AwaitEhlo, now);
    }

    /// The TLS handshake after [`Event::StartTls`] failed (`detail` says
    /// why): the session closes without QUIT, a transient failure of the
    /// host. Whether to try again in plaintext is the driver's policy,
    /// never under [`implicit_tls`](Self::implicit_tls). Ignored unless the
    /// session is waiting for the handshake.
    pub fn tls_failed(&mut self, detail: &str, _now: Instant) {
        if matches!(self.state, State::AwaitTls) {
            self.fail(format!("TLS handshake failed: {detail}"));
        }
    }

    /// Sends QUIT when ready; `Closed(None)` follows its reply or EOF.
    /// Anywhere else the session is abandoned at once, without QUIT: the
    /// message in flight gets a transient `MessageDone`, then `Closed(None)`.
    pub fn quit(&mut self, now: Instant) {
        match self.take_state() {
            State::Ready { .. } => {
                Command::Quit.encode(self.out.buf());
                self.enter(State::AwaitQuit, now);
            }
            state @ (State::AwaitQuit | State::Closed { .. }) => self.state = state,
            state => {
                let detail = format!("delivery abandoned while {}", state.describe());
                let outcome =
                    Outcome::without_reply(Class::Transient, Scope::Message, state.stage(), detail);
                if let Some(txn) = state.into_transaction() {
                    self.message_done(txn, Some(&outcome));
                }
                self.end(None, None, false);
            }
        }
    }

    /// Bytes to write to the socket.
    pub fn pending_output(&self) -> &[u8] {
        self.out.pending()
    }

    /// `n` bytes of [`pending_output`](Self::pending_output) were written.
    pub fn consume_output(&mut self, n: usize) {
        if self.out.consume(n) > 0 && matches!(self.state, State::SendingBody(_)) {
            self.progress = true;
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The deadline of the current wait; `None` when ready or closed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// After `Closed`: flush the pending output, then close the socket.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// What the session is doing, Postfix-style: "sending end of data --
    /// message may be sent more than once".
    pub fn describe(&self) -> &'static str {
        self.state.describe()
    }

    /// The EHLO keywords; `None` before EHLO succeeded, and after the HELO
    /// fallback.
    pub fn extensions(&self) -> Option<&Extensions> {
        self.extensions.as_ref()
    }

    /// True after the 220 reply to STARTTLS (or from the start, under
    /// implicit TLS), until the handshake is reported: stop reading
    /// plaintext from the socket.
    pub fn awaits_tls(&self) -> bool {
        matches!(self.state, State::AwaitTls)
    }

    /// The session runs over implicit TLS (RFC 8314): its handshake is
    /// the connection's first exchange, and a failed one is never retried
    /// in plaintext.
    pub fn implicit_tls(&self) -> bool {
        self.config.implicit_tls
    }

    /// The TLS the session runs under; `None` in plaintext.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// Transactions started on this connection (MAIL sent).
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    // ---- transitions -------------------------------------------------------

    fn on_reply(&mut self, reply: Reply, now: Instant) {
        match self.take_state() {
            State::AwaitGreeting => self.on_greeting(reply, now),
            State::AwaitEhlo => self.on_ehlo(reply, now),
            State::AwaitHelo => self.on_helo(reply, now),
            State::AwaitStartTls => self.on_starttls(reply, now),
            State::AwaitAuth(exchange) => self.on_auth(exchange, reply, now),
            State::AwaitAuthCancel { mechanism, error } => {
                self.on_auth_cancelled(mechanism, &error, reply)
            }
            State::AwaitReplies(txn) => self.on_transaction_reply(txn, reply, now),
            State::SendingBody(txn) if !txn.pending.is_empty() => {
                self.on_chunk_reply(txn, reply, now)
            }
            State::AwaitDataEnd(txn) => self.on_data_end(txn, reply, now),
            State::AwaitQuit => self.end(None, None, false),
            state @ (State::Ready { .. }
            | State::SendingBody(_)
            | State::AwaitTls
            | State::Closed { .. }) => {
                self.state = state;
                self.out_of_turn(reply);
            }
        }
    }

    /// The server names this host: by the EHLO name or any other of ours.
    fn names_us(&self, reply: &Reply) -> bool {
        names_host(reply, &self.config.helo_name)
            || self
                .config
                .own_names
                .iter()
                .any(|name| names_host(reply, name))
    }

    fn on_greeting(&mut self, reply: Reply, now: Instant) {
        if reply.code == ReplyCode::SERVICE_READY && self.names_us(&reply) {
            self.looped(Stage::Greeting, reply);
        } else if reply.code == ReplyCode::SERVICE_READY {
            Command::Ehlo(&self.config.helo_name).encode(self.out.buf());
            self.enter(State::AwaitEhlo, now);
        } else {
            self.refused(None, Scope::Destination, Stage::Greeting, reply);
        }
    }

    fn on_ehlo(&mut self, reply: Reply, now: Instant) {
        let code = reply.code;
        if code.class() == 2 && self.names_us(&reply) {
            self.looped(Stage::Ehlo, reply);
        } else if code.class() == 2 {
            let extensions = Extensions::from_ehlo(&reply);
            let offered = extensions.starttls;
            self.extensions = Some(extensions);
            if self.tls.is_some() {
                self.greeted(Stage::Ehlo, now);
            } else if offered && self.config.tls != TlsMode::Disabled {
                Command::StartTls.encode(self.out.buf());
                self.enter(State::AwaitStartTls, now);
            } else {
                self.ready_in_plaintext(Stage::Ehlo, now);
            }
        } else if code.is_permanent() {
            // RFC 5321 §3.2: a server that does not know EHLO may know HELO.
            Command::Helo(&self.config.helo_name).encode(self.out.buf());
            self.enter(State::AwaitHelo, now);
        } else {
            self.refused(None, Scope::Destination, Stage::Ehlo, reply);
        }
    }

    fn on_helo(&mut self, reply: Reply, now: Instant) {
        if reply.code.class() == 2 && self.names_us(&reply) {
            self.looped(Stage::Helo, reply);
        } else if reply.code.class() == 2 {
            self.extensions = None;
            if self.tls.is_some() {
                self.greeted(Stage::Helo, now);
            } else {
                self.ready_in_plaintext(Stage::Helo, now);
            }
        } else {
            self.refused(None, Scope::Destination, Stage::Helo, reply);
        }
    }

    fn on_starttls(&mut self, reply: Reply, now: Instant) {
        let code = reply.code;
        if code == ReplyCode::SERVICE_READY {
            if self.parser.has_buffered() {
                // RFC 3207 §5 and CVE-2011-0411: what came with the 220
                // was sent in plaintext and would be taken for TLS-protected.
                let seen = first_line(self.parser.buffered());
                self.state = State::AwaitTls;
                return self.injection(&seen);
            }
            self.enter(State::AwaitTls, now);
            self.events.push_back(Event::StartTls);
        } else if code == ReplyCode::SERVICE_NOT_AVAILABLE {
            self.refused(None, Scope::Destination, Stage::StartTls, reply);
        } else if self.config.tls == TlsMode::Required {
            // Whatever the code, a policy failure is worth another try.
            let outcome =
                Outcome::from_reply(Class::Transient, Scope::Destination, Stage::StartTls, reply);
            self.end(None, Some(outcome), true);
        } else {
            // RFC 3207 §4: after a refused STARTTLS the session goes on as
            // it was, in plaintext, with the extensions already known.
            self.greeted(Stage::StartTls, now);
        }
    }

    // ---- helpers -----------------------------------------------------------

    /// Moves the state out; the caller must put one back.
    fn take_state(&mut self) -> State {
        mem::replace(
            &mut self.state,
            State::Closed {
                last: Stage::Greeting,
            },
        )
    }

    /// Enters `state` and arms its deadline from `now`.
    fn enter(&mut self, state: State, now: Instant) {
        self.state = state;
        self.arm(now);
    }

    fn arm(&mut self, now: Instant) {
        self.progress = false;
        self.deadline = self
            .state
            .timeout(&self.config.timeouts)
            .and_then(|timeout| now.checked_add(timeout));
    }

    /// Ready without TLS: only when the policy allows it.
    fn ready_in_plaintext(&mut self, last: Stage, now: Instant) {
        if self.config.tls == TlsMode::Required {
            let detail = "does not offer STARTTLS, but TLS is required for this destination";
            let outcome =
                Outcome::without_reply(Class::Transient, Scope::Destination, last, detail);
            self.end(None, Some(outcome), true);
        } else {
            self.greeted(last, now);
        }
    }

    fn ready(&mut self, last: Stage) {
        self.state = State::Ready { last };
        self.deadline = None;
        self.events.push_back(Event::Ready);
    }

    /// A reply ended the session: 421 anywhere, or a refused greeting,
    /// EHLO/HELO. QUIT goes out except after 421 (the server is closing).
    fn refused(&mut self, txn: Option<Transaction>, scope: Scope, stage: Stage, reply: Reply) {
        let quit = reply.code != ReplyCode::SERVICE_NOT_AVAILABLE;
        let outcome = Outcome::from_reply(Class::of(reply.code), scope, stage, reply);
        self.end(txn, Some(outcome), quit);
    }

    /// The server named this host (RFC 5321 §6.3): no message for it. QUIT
    /// goes out; the session closes with [`Outcome::loops_back`].
    fn looped(&mut self, stage: Stage, reply: Reply) {
        let outcome = Outcome::loops_back(stage, reply, &self.config.helo_name);
        self.end(None, Some(outcome), true);
    }

    /// A transient failure of the host, in the current state: lost
    /// connection, timeout, protocol error.
    fn fail(&mut self, detail: String) {
        let state = self.take_state();
        let outcome =
            Outcome::without_reply(Class::Transient, Scope::Destination, state.stage(), detail);
        self.end(state.into_transaction(), Some(outcome), false);
    }

    /// A whole reply the session was not waiting for. A 421 is the
    /// server closing the session (RFC 5321 §3.8), and its reply is what
    /// the records quote; anything else is a protocol error.
    pub(super) fn out_of_turn(&mut self, reply: Reply) {
        if reply.code != ReplyCode::SERVICE_NOT_AVAILABLE {
            self.unsolicited(&reply.to_string());
            return;
        }
        let state = self.take_state();
        let stage = state.stage();
        self.refused(state.into_transaction(), Scope::Destination, stage, reply);
    }

    fn unsolicited(&mut self, seen: &str) {
        let detail = format!(
            "protocol error: unexpected data from the server while {}: {seen:?}",
            self.describe()
        );
        self.fail(detail);
    }

    /// Plaintext after the 220 to STARTTLS (RFC 3207 §5), or before the
    /// handshake of implicit TLS (a server that does not speak it there).
    fn injection(&mut self, seen: &str) {
        let detail = if self.config.implicit_tls {
            format!(
                "protocol error: plaintext data before the TLS handshake (is the port for \
                 implicit TLS?): {seen:?}"
            )
        } else {
            format!(
                "protocol error: plaintext data after the 220 reply to STARTTLS (possible \
                 command injection): {seen:?}"
            )
        };
        self.fail(detail);
    }

    /// Closes the session; the message in flight gets `MessageDone` first.
    fn end(&mut self, txn: Option<Transaction>, outcome: Option<Outcome>, quit: bool) {
        if let Some(txn) = txn {
            self.message_done(txn, outcome.as_ref());
        }
        if quit {
            Command::Quit.encode(self.out.buf());
        }
        let last = outcome.as_ref().map_or(Stage::Quit, |o| o.stage);
        self.state = State::Closed { last };
        self.deadline = None;
        self.events.push_back(Event::Closed(outcome));
    }

    fn message_finished(&mut self, txn: Transaction, last: Stage) {
        self.message_done(txn, None);
        self.ready(last);
    }

    /// Emits `MessageDone`; recipients not yet final get `failure`, made
    /// transient (the message was not refused, the session broke).
    fn message_done(&mut self, txn: Transaction, failure: Option<&Outcome>) {
        let untried = failure.is_some() && txn.untried;
        let unfinished = || match failure {
            Some(outcome) => Outcome {
                class: Class::Transient,
                ..outcome.clone()
            },
            // Unreachable by construction: every path fills each result.
            None => Outcome::without_reply(
                Class::Transient,
                Scope::Message,
                Stage::DataEnd,
                "no reply was received for this recipient",
            ),
        };
        let recipients = txn
            .envelope
            .recipients
            .into_iter()
            .zip(txn.results)
            .map(|(recipient, result)| RecipientResult {
                recipient,
                result: result.unwrap_or_else(|| Err(unfinished())),
            })
            .collect();
        self.events.push_back(Event::MessageDone(MessageResult {
            recipients,
            untried,
            dsn: self.extensions.as_ref().is_some_and(|e| e.dsn),
        }));
    }
}

fn clean_helo_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control() && !c.is_whitespace())
        .collect();
    if clean.is_empty() {
        "localhost".to_owned()
    } else {
        clean
    }
}

/// The first line of `bytes`, at most 80 octets, for a diagnostic.
fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line.get(..80).unwrap_or(line)).into_owned()
}
