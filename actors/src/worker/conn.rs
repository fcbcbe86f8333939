//! One outbound connection: walks the route's addresses until one server
//! greets and answers EHLO, then carries messages of its domain until the
//! dispatcher has no more, the per-connection limit is reached, or the
//! server fails. The SMTP conversation itself is the core's [`Session`];
//! when it asks for STARTTLS (RFC 3207) the socket is wrapped in a
//! [`TlsStream`], and under opportunistic TLS a failed handshake is tried
//! again on a new plaintext connection to the same address.
//!
//! A socket that cannot be had for a reason of this process's own (no
//! descriptor below `FD_SETSIZE`, the descriptor table or socket buffers
//! exhausted) is not the domain's failure: the message goes back untried
//! ([`DispatcherMsg::LocalLimit`]) instead of counting as a failed attempt.
//! A fresh connection that its server ends before the first transaction is
//! a failed address (see the dispatcher's `policy`); an address that is
//! this host's, or a server that names this host, is a mail loop. The bytes
//! themselves (socket, reads, writes, the body) are in [`wire`], STARTTLS
//! and its fallback in [`starttls`], how failures count in [`failure`].

mod failure;
mod report;
mod setup;
mod starttls;
mod wire;

use wire::{local_limit, open_socket, read_into};

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;

use nix::libc;
use postman::config::SiteShape;
use postman::schedule::SiteId;
use postman::smtp::{Event, MessageResult, Outcome, Reply, Session, TlsMode};
use slog::{debug, error, info, o, warn};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::finish::{finish_job, hand_back_job, throttle_of};
use super::hand_back::{hand_back, unclaim, Reason, Record};
use super::job::{Job, Preparation, Ready};
use super::prepare::{begin, start_job};
use super::shared::{ConnSettings, Shared};
use super::tls::{ReadEnd, TlsStream};
use crate::descriptors::FD_SETSIZE;
use crate::dispatcher::policy::{self, Carried, Ending, Verdict};
use crate::messages::{ConnId, DispatcherMsg, FileIdentity, PutOff, QueuedMessage};
use postman::route::{self, Route};
use postman::routing::Hop;
use postman::tls::{Action, DaneStatus, Decision, StsStatus};
use postman::tlsrpt::{HandshakeFailure, Seen};

enum State {
    /// Not connected: the next address is tried at the next drive.
    Idle,
    /// Non-blocking connect in progress.
    Connecting { socket: Socket, deadline: Instant },
    /// Connected; the session runs, over TLS once `tls` is set.
    /// The session is boxed: it is large and lives as long as the connection.
    Smtp {
        socket: Socket,
        session: Box<Session>,
        tls: Option<TlsStream>,
    },
    /// Nothing more to do: the slot is freed after [`Conn::finish`].
    Done,
}

/// One address to try, and under which name.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The MX host name: SNI and the certificate's name.
    pub host: String,
    pub addr: SocketAddr,
    /// A TLS handshake with this address failed under opportunistic TLS:
    /// this time, no STARTTLS.
    pub plaintext: bool,
    /// How it is reached: MX delivery or a next hop, and its settings.
    pub hop: Arc<Hop>,
    /// What a connection to it must have, or why it is not used.
    pub security: Arc<Decision>,
    /// What DANE and MTA-STS found for it, for the TLS report.
    pub found: Arc<Found>,
}

/// What the route said of a host's transport security.
#[derive(Debug)]
pub struct Found {
    pub sts: StsStatus,
    pub dane: DaneStatus,
}

/// The addresses a connection to `route` (for mail to `domain`, a route
/// key) tries, in order: every address of a host before the next host,
/// each host's in the family order of `dns.ip_preference`, at most
/// `max_mx_addresses` of them; and how many there were in all. A next
/// hop's port is its own; MX hosts are on `application.server_port`. A
/// host that its security decision refuses is listed once, by its first
/// address, so that the deferral says why it was not used.
pub fn candidates(
    route: &Route,
    domain: &str,
    settings: &ConnSettings,
) -> (VecDeque<Candidate>, usize) {
    let mut candidates = VecDeque::new();
    for host in &route.hosts {
        let mut addrs = host.addrs.clone();
        settings.ip_preference.order(&mut addrs);
        let port = host
            .hop
            .next_hop
            .as_ref()
            .map_or(settings.port, |h| h.port());
        let security = Arc::new(settings.security(domain, route, host));
        let found = Arc::new(Found {
            sts: route.sts.clone(),
            dane: host.dane.clone(),
        });
        if matches!(security.action, Action::Refuse(_)) {
            addrs.truncate(1);
        }
        candidates.extend(addrs.into_iter().map(|ip| Candidate {
            host: host.name.clone(),
            addr: SocketAddr::new(ip, port),
            plaintext: false,
            hop: Arc::clone(&host.hop),
            security: Arc::clone(&security),
            found: Arc::clone(&found),
        }));
    }
    let all = candidates.len();
    candidates.truncate(settings.max_mx_addresses);
    (candidates, all)
}

pub struct Conn {
    pub id: ConnId,
    /// The site it was opened for: after a message it may carry any
    /// domain's of the site.
    site: SiteId,
    /// The domain it was opened for: its TLS mode, and the name in logs
    /// about the connection itself.
    domain: String,
    /// Transactions it carries at most (the site's
    /// `max_messages_per_connection`).
    max_messages: usize,
    /// The site's shaping rule: which replies are throttles.
    shape: Arc<SiteShape>,
    /// The site's name, in every delivery record.
    site_name: Arc<str>,
    /// The domain of the message it was given last, until it asks for
    /// more or closes: the dispatcher counts the connection against it.
    holding: Option<String>,
    /// Addresses not tried yet, in route order: every address of a host
    /// before the next host.
    candidates: VecDeque<Candidate>,
    /// The address being tried.
    current: Option<Candidate>,
    /// `host[ip]:port` of the current server.
    relay: String,
    /// The local address the current connection is bound to, if any, and
    /// the EHLO name that belongs to it (a pool member's).
    source: Option<(IpAddr, Option<String>)>,
    /// The session asked for STARTTLS on the current connection.
    starting_tls: bool,
    state: State,
    /// The message in hand until a server is ready for it: the one this
    /// connection was opened for, or the one a fresh connection was about
    /// to carry when its server failed (it goes to the next address).
    first: Option<QueuedMessage>,
    job: Option<Job>,
    /// The current server greeted us and answered EHLO/HELO.
    established: bool,
    /// The dispatcher was told that a server of the domain took a
    /// transaction ([`DispatcherMsg::Established`]).
    proved: bool,
    /// Waiting for the next message: the dispatcher's answer to WantMore,
    /// or a disk thread's preparing of the message it gave.
    awaiting_next: bool,
    /// Why each address failed, for the deferral reason.
    failures: Vec<String>,
    /// How many of them failed because they loop back to this host: when
    /// all did, the message is deferred as a mail loop.
    loops: usize,
    /// The last reply a server gave before failing, and from where: the
    /// code and enhanced code of the deferral record.
    last_reply: Option<(String, Reply)>,
    /// That reply, when it said the site throttles this client
    /// (`smtp::throttle`, at the stage it answered).
    last_throttle: Option<String>,
    /// A transaction met a throttle reply: the connection says goodbye
    /// rather than carry more (the site goes on slower, over a new one).
    throttled: bool,
    /// The last server that failed after a session began, for the deferral
    /// record's relay when it gave no reply.
    last_server: Option<String>,
    /// A write failed: the peer is gone even if the session does not know yet.
    broken: bool,
    /// A TLS handshake with one of the addresses failed: a message that
    /// requires TLS (RFC 8689) is deferred with 5.7.10 when none is left.
    handshake_failed: bool,
    /// Why the current address's TLS handshake failed, for the TLS report.
    tls_failure: Option<HandshakeFailure>,
    /// How many of `failures` were a TLS policy's: a host it refused, or
    /// a certificate that failed an enforced check. When all were, the
    /// deferral's status is 4.7.5.
    policy_failures: usize,
    /// The logger of this session's delivery records, with its `tls`, and
    /// whether TLS was on when it was made: made once a session instead of
    /// once a message. A new session drops it.
    records_log: Option<(bool, slog::Logger)>,
}

impl Conn {
    pub fn new(
        site: SiteId,
        domain: String,
        candidates: VecDeque<Candidate>,
        first: QueuedMessage,
        max_messages: usize,
        shape: Arc<SiteShape>,
        site_name: Arc<str>,
    ) -> Conn {
        Conn {
            id: ConnId {
                index: 0,
                generation: 0,
            },
            site,
            holding: Some(domain.clone()),
            domain,
            max_messages,
            shape,
            site_name,
            candidates,
            current: None,
            relay: String::from("none"),
            starting_tls: false,
            state: State::Idle,
            first: Some(first),
            job: None,
            established: false,
            proved: false,
            awaiting_next: false,
            failures: Vec::new(),
            loops: 0,
            last_reply: None,
            last_throttle: None,
            throttled: false,
            last_server: None,
            broken: false,
            handshake_failed: false,
            policy_failures: 0,
            tls_failure: None,
            records_log: None,
            source: None,
        }
    }

    pub fn start(&mut self, shared: &mut Shared, now: Instant) {
        self.connect_next(shared, now);
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done)
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.state {
            State::Connecting { socket, .. } | State::Smtp { socket, .. } => Some(socket.as_fd()),
            State::Idle | State::Done => None,
        }
    }

    pub fn wants_read(&self) -> bool {
        match &self.state {
            State::Smtp { session, tls, .. } => {
                !session.is_closed() && tls.as_ref().is_none_or(TlsStream::wants_read)
            }
            _ => false,
        }
    }

    pub fn wants_write(&self) -> bool {
        match &self.state {
            State::Connecting { .. } => true,
            State::Smtp {
                session,
                tls: Some(tls),
                ..
            } => tls.wants_write(session),
            State::Smtp { session, .. } => {
                !session.pending_output().is_empty() || self.writes_body_directly(session)
            }
            State::Idle | State::Done => false,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Connecting { deadline, .. } => Some(*deadline),
            State::Smtp { session, .. } => session.poll_timeout(),
            State::Idle | State::Done => None,
        }
    }

    /// Starts a non-blocking connect to the next address, or gives up when
    /// none is left.
    fn connect_next(&mut self, shared: &mut Shared, now: Instant) {
        while let Some(candidate) = self.candidates.pop_front() {
            let addr = candidate.addr;
            self.relay = format!("{}[{}]:{}", candidate.host, addr.ip(), addr.port());
            if let Action::Refuse(why) = &candidate.security.action {
                // A TLS policy rules the host out: DANE or MTA-STS.
                warn!(shared.log, "MX host not used"; "domain" => &self.domain,
                    "relay" => &self.relay, "tls" => candidate.security.applied.as_str(),
                    "reason" => %why);
                let reason = format!("{} not used: {why}", candidate.host);
                let seen = Seen::Refused(why.clone());
                self.current = Some(candidate);
                self.report_tls(shared, seen);
                self.policy_failures += 1;
                self.address_failed(shared, reason);
                continue;
            }
            self.current = Some(candidate);
            self.starting_tls = false;
            self.tls_failure = None;
            self.established = false;
            self.broken = false;
            if let Some(why) = route::unusable_address(
                addr,
                &shared.settings.local_listeners,
                &shared.settings.own_addrs,
            ) {
                // Loop protection: this address is this host, or no host.
                warn!(shared.log, "address not connected to"; "domain" => &self.domain,
                    "relay" => &self.relay, "reason" => %why);
                if why.loops_back() {
                    self.loops += 1;
                }
                self.address_failed(shared, format!("{} is {why}", self.relay));
                continue;
            }
            shared.stats.connections_opened += 1;
            self.source = self.choose_source(shared, addr.ip());
            match open_socket(addr, self.source.as_ref().map(|(ip, _)| *ip)) {
                Err(e) if local_limit(&e) => {
                    let reason = format!("connect to {}: {e}", self.relay);
                    self.ended_early(Ending::LocalShortage, reason, shared);
                    return;
                }
                Ok((socket, true)) => {
                    self.records_log = None;
                    self.state = State::Smtp {
                        socket,
                        session: self.new_session(shared, now),
                        tls: None,
                    };
                    return;
                }
                Ok((socket, false)) => {
                    self.state = State::Connecting {
                        socket,
                        deadline: now + shared.settings.connect_timeout,
                    };
                    return;
                }
                Err(e) => self.address_failed(shared, format!("connect to {}: {e}", self.relay)),
            }
        }
        self.give_up(shared);
    }

    pub fn on_ready(&mut self, readable: bool, writable: bool, shared: &mut Shared, now: Instant) {
        match &mut self.state {
            State::Connecting { socket, .. } if writable => {
                let result = match socket.take_error() {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) | Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {
                        let State::Connecting { socket, .. } =
                            std::mem::replace(&mut self.state, State::Idle)
                        else {
                            return;
                        };
                        self.records_log = None;
                        self.state = State::Smtp {
                            socket,
                            session: self.new_session(shared, now),
                            tls: None,
                        };
                    }
                    Err(e) if local_limit(&e) => {
                        let reason = format!("connect to {}: {e}", self.relay);
                        self.ended_early(Ending::LocalShortage, reason, shared);
                    }
                    Err(e) => {
                        let reason = format!("connect to {}: {e}", self.relay);
                        self.address_failed(shared, reason);
                        self.connect_next(shared, now);
                    }
                }
            }
            State::Smtp {
                socket,
                session,
                tls: Some(tls),
            } if readable => {
                let (n, end) = tls.read(socket, session, &mut shared.read_buf, now);
                shared.stats.bytes_read += n;
                let handshaking = tls.is_handshaking();
                match end {
                    ReadEnd::WouldBlock => {}
                    ReadEnd::Eof if handshaking => {
                        let why = "the server closed the connection";
                        self.tls_failure = Some(HandshakeFailure::Other(why.to_owned()));
                        session.tls_failed(why, now);
                    }
                    ReadEnd::Eof => session.handle_eof(now),
                    ReadEnd::Failed(why) if handshaking => {
                        self.tls_failure = Some(why.handshake_failure());
                        session.tls_failed(&why.to_string(), now);
                    }
                    ReadEnd::Failed(why) => {
                        debug!(shared.log, "TLS failed"; "relay" => &self.relay, "error" => %why);
                        self.broken = true;
                        session.handle_eof(now);
                    }
                }
            }
            State::Smtp {
                socket, session, ..
            } if readable => {
                read_into(socket, session, shared, now);
            }
            _ => {}
        }
    }

    pub fn on_timeout(&mut self, shared: &mut Shared, now: Instant) {
        match &mut self.state {
            State::Connecting { deadline, .. } if *deadline <= now => {
                let reason = format!("connect to {}: timed out", self.relay);
                self.address_failed(shared, reason);
                self.connect_next(shared, now);
            }
            State::Smtp { session, .. } => session.handle_timeout(now),
            _ => {}
        }
    }

    /// The dispatcher's answer to WantMore.
    pub fn next(&mut self, job: Option<QueuedMessage>, shared: &mut Shared, now: Instant) {
        self.awaiting_next = false;
        if let Some(job) = &job {
            self.holding = Some(job.route_key().to_owned());
        }
        if self.between_servers() {
            // The fresh connection failed meanwhile: the message goes to
            // the next address (`drive` follows).
            self.first = job;
            return;
        }
        let State::Smtp { session, .. } = &mut self.state else {
            if let Some(job) = job {
                hand_back(&shared.ctx(), job, None, Reason::UNTRIED);
            }
            return;
        };
        match job {
            Some(msg) if shared.shutdown_deadline.is_none() => self.take(msg, shared, now),
            Some(msg) => {
                hand_back(&shared.ctx(), msg, None, Reason::UNTRIED);
                session.quit(now);
            }
            None => session.quit(now),
        }
    }

    /// The next message for this connection. Its disk work (claim, read,
    /// measure) goes to a disk thread, which answers through
    /// [`Conn::prepared`]; when none has room it is done here.
    fn take(&mut self, msg: QueuedMessage, shared: &mut Shared, now: Instant) {
        let preparation = Box::new(Preparation {
            conn: self.id,
            msg,
            relay: self.relay.clone(),
            buffer: shared.body_pool.lend(),
        });
        match shared.disk.try_prepare(preparation) {
            Ok(()) => self.awaiting_next = true,
            Err(preparation) => {
                let Preparation { msg, buffer, .. } = *preparation;
                if let Some(buffer) = buffer {
                    shared.body_pool.give(buffer);
                }
                let State::Smtp { session, .. } = &mut self.state else {
                    hand_back(&shared.ctx(), msg, None, Reason::UNTRIED);
                    return;
                };
                let (ctx, mut memory) = shared.preparing();
                self.job = start_job(session, msg, &ctx, &mut memory, &self.relay, now);
                if self.job.is_none() {
                    self.after_transaction(shared, now);
                }
            }
        }
    }

    /// A disk thread's answer to [`Conn::take`]: start the message, or, when
    /// it was disposed of, ask for another. If the server went away or
    /// postman is stopping meanwhile, the message goes back untried.
    pub fn prepared(&mut self, ready: Option<Ready>, shared: &mut Shared, now: Instant) {
        self.awaiting_next = false;
        if self.between_servers() {
            // The fresh connection failed while the message was prepared:
            // unclaimed, it goes to the next address (`drive` follows).
            self.first = ready.map(|ready| unclaim(&shared.ctx(), ready));
            return;
        }
        let State::Smtp { session, .. } = &mut self.state else {
            if let Some(ready) = ready {
                hand_back(
                    &shared.ctx(),
                    ready.msg,
                    Some(ready.claimed),
                    Reason::UNTRIED,
                );
            }
            return;
        };
        match ready {
            Some(ready) if shared.shutdown_deadline.is_none() && !session.is_closed() => {
                let (ctx, memory) = shared.preparing();
                self.job = begin(session, ready, &ctx, memory.pool, now);
                if self.job.is_some() {
                    return;
                }
            }
            Some(ready) => {
                hand_back(
                    &shared.ctx(),
                    ready.msg,
                    Some(ready.claimed),
                    Reason::UNTRIED,
                );
            }
            None => {}
        }
        self.after_transaction(shared, now);
    }

    /// SIGTERM: idle and not yet established connections close now; a
    /// transaction in flight may finish within the grace period.
    pub fn shutdown(&mut self, shared: &mut Shared, now: Instant) {
        if self.first.is_some() {
            self.ended_early(Ending::Stopping, "postman is stopping".to_owned(), shared);
            self.close();
            return;
        }
        if let State::Smtp { session, .. } = &mut self.state {
            if self.job.is_none() && !self.awaiting_next && !session.is_closed() {
                session.quit(now);
            }
        } else {
            self.close();
        }
    }

    /// The grace period is over: drop the connection. The message stays queued.
    pub fn abort(&mut self, shared: &mut Shared, reason: &str) {
        if let Some(job) = self.job.take() {
            let reason = reason.to_owned();
            let record = Some(Record {
                relay: &self.relay,
                reason,
            });
            hand_back_job(shared, job, Reason::Deferred { record });
        }
        if let Some(msg) = self.first.take() {
            hand_back(&shared.ctx(), msg, None, Reason::UNTRIED);
        }
        self.close();
    }

    fn close(&mut self) {
        self.state = State::Done;
    }

    /// A fresh connection's server failed and the message it was about to
    /// carry is still out (with a disk thread, or the dispatcher's answer
    /// to WantMore): when it is back, it goes to the next address.
    fn between_servers(&self) -> bool {
        matches!(self.state, State::Idle) && self.first.is_none()
    }

    /// Runs the session until it has nothing more to do right now: events,
    /// body chunks, socket writes.
    pub fn drive(&mut self, shared: &mut Shared, now: Instant) {
        self.pump(shared, now);
        // Each round takes an address (or ends the connection), so this ends.
        while matches!(self.state, State::Idle) && !self.awaiting_next {
            // With nothing in hand (the message the fresh connection was
            // about to carry was disposed of meanwhile), there is nothing
            // to connect for: `connect_next` ends the connection.
            self.connect_next(shared, now);
            // A connect that completed at once made a session, which may
            // have something to do before any byte is read (implicit TLS
            // asks for its handshake at once), and may even fail at it.
            self.pump(shared, now);
        }
        let closed = match &self.state {
            State::Smtp { session, tls, .. } => {
                let flushed = match tls {
                    Some(tls) => !tls.wants_write(session),
                    None => session.pending_output().is_empty(),
                };
                session.is_closed() && (flushed || self.broken)
            }
            _ => false,
        };
        if closed {
            self.state = State::Done;
        }
    }

    /// Events, body chunks and socket writes until none makes progress.
    fn pump(&mut self, shared: &mut Shared, now: Instant) {
        loop {
            let mut progress = false;
            while let Some(event) = self.poll_event() {
                progress = true;
                self.on_event(event, shared, now);
            }
            if self.feed_body(shared, now) {
                progress = true;
            }
            if self.flush(shared, now) {
                progress = true;
            }
            if !progress {
                break;
            }
        }
    }

    fn poll_event(&mut self) -> Option<Event> {
        match &mut self.state {
            State::Smtp { session, .. } => session.poll_event(),
            _ => None,
        }
    }

    fn on_event(&mut self, event: Event, shared: &mut Shared, now: Instant) {
        match event {
            Event::StartTls => self.start_tls(shared, now),
            Event::Ready => {
                if !self.established {
                    if self.session_closed() {
                        // What came with the reply ended the session: its
                        // Closed follows, and the message stays in hand.
                        return;
                    }
                    self.established = true;
                    self.report_established(shared);
                    if let Some(msg) = self.first.take() {
                        self.take(msg, shared, now);
                        return;
                    }
                }
                self.after_transaction(shared, now);
            }
            Event::MessageDone(result) => {
                if let Some(job) = self.job.take() {
                    let throttle = throttle_of(&result, &self.shape);
                    self.throttled |= throttle.is_some();
                    if result.untried {
                        info!(shared.log, "reused connection ended before the message was tried; it goes back untried";
                            "queue_id" => &job.msg.id, "domain" => &job.msg.domain, "relay" => &self.relay);
                        hand_back_job(shared, job, Reason::Untried { throttle });
                        return;
                    }
                    self.prove(&result, shared);
                    shared.stats.transactions += 1;
                    // Every record of this transaction says how TLS was
                    // used: `tls` rides on the logger while it is settled.
                    let records_log = self.records_log(shared);
                    let log = std::mem::replace(&mut shared.log, records_log);
                    finish_job(job, result, shared, &self.relay, throttle);
                    shared.log = log;
                }
            }
            Event::Closed(outcome) => {
                // A TLS session ends with close_notify (RFC 8446 §6.1),
                // written with the last of the output.
                if let State::Smtp { tls: Some(tls), .. } = &mut self.state {
                    if !tls.is_handshaking() {
                        tls.close();
                    }
                }
                // A job still held here never got its MessageDone (it
                // cannot happen with a well-behaved session): keep it queued.
                if let Some(job) = self.job.take() {
                    warn!(shared.log, "session closed without a result"; "queue_id" => &job.msg.id);
                    hand_back_job(shared, job, Reason::Deferred { record: None });
                }
                // `None`: ended by us, with QUIT or abandoned while stopping.
                if let Some(outcome) = outcome {
                    self.server_ended(outcome, shared);
                }
            }
        }
    }

    /// True when the current session has ended.
    fn session_closed(&self) -> bool {
        matches!(&self.state, State::Smtp { session, .. } if session.is_closed())
    }

    /// After a transaction's result: the first one the server judged (see
    /// [`MessageResult::judged`]) on this connection tells the dispatcher
    /// that the domain takes mail, which ends its backoff. A session ended
    /// by the server before that proves nothing.
    fn prove(&mut self, result: &MessageResult, shared: &Shared) {
        if !self.proved && result.judged() {
            self.proved = true;
            shared.tell(DispatcherMsg::Established { site: self.site });
        }
    }

    /// The connection is ready for another transaction: ask for one, or say
    /// goodbye.
    fn after_transaction(&mut self, shared: &mut Shared, now: Instant) {
        let State::Smtp { session, .. } = &mut self.state else {
            return;
        };
        if session.is_closed() {
            return;
        }
        if shared.shutdown_deadline.is_some()
            || self.throttled
            || session.transactions() >= self.max_messages
        {
            session.quit(now);
        } else if !self.awaiting_next {
            self.awaiting_next = true;
            shared.tell(DispatcherMsg::WantMore {
                worker: shared.worker,
                conn: self.id,
                site: self.site,
                held: self.holding.take(),
            });
        }
    }

    /// The slot is being freed: a message still in hand goes back (untried,
    /// or deferred when its transaction had begun), and the dispatcher
    /// hears that the connection closed.
    pub fn finish(&mut self, shared: &mut Shared) {
        if let Some(msg) = self.first.take() {
            hand_back(&shared.ctx(), msg, None, Reason::UNTRIED);
        }
        if let Some(job) = self.job.take() {
            hand_back_job(shared, job, Reason::Deferred { record: None });
        }
        shared.tell(DispatcherMsg::Closed {
            worker: shared.worker,
            conn: self.id,
            site: self.site,
            held: self.holding.take(),
            proved: self.proved,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postman::config::Settings;
    use postman::route::Host;
    use postman::smtp::IpPreference;

    fn settings(ip_preference: IpPreference, max_mx_addresses: usize) -> ConnSettings {
        let config = Settings::defaults("mx.example.org")
            .validate()
            .expect("valid settings");
        let log = slog::Logger::root(slog::Discard, o!());
        let mut settings = ConnSettings::new(&config, &log);
        settings.ip_preference = ip_preference;
        settings.max_mx_addresses = max_mx_addresses;
        settings.port = 2525;
        settings
    }

    /// Every address of a host before the next host; the preferred family
    /// first within each host only; at most `max_mx_addresses`.
    #[test]
    fn a_connection_tries_each_hosts_addresses_in_family_order() {
        let route = Route::new(vec![
            Host::new(
                "mx1.d.test",
                vec![
                    "2001:db8::1".parse().expect("an address"),
                    "192.0.2.1".parse().expect("an address"),
                ],
            ),
            Host::new(
                "mx2.d.test",
                vec![
                    "192.0.2.2".parse().expect("an address"),
                    "2001:db8::2".parse().expect("an address"),
                ],
            ),
        ]);
        let cases = [
            (IpPreference::Any, 10, "mx1.d.test [2001:db8::1]:2525, mx1.d.test 192.0.2.1:2525, mx2.d.test 192.0.2.2:2525, mx2.d.test [2001:db8::2]:2525", 4),
            (IpPreference::Ipv4, 10, "mx1.d.test 192.0.2.1:2525, mx1.d.test [2001:db8::1]:2525, mx2.d.test 192.0.2.2:2525, mx2.d.test [2001:db8::2]:2525", 4),
            (IpPreference::Ipv6, 10, "mx1.d.test [2001:db8::1]:2525, mx1.d.test 192.0.2.1:2525, mx2.d.test [2001:db8::2]:2525, mx2.d.test 192.0.2.2:2525", 4),
            (IpPreference::Ipv4, 3, "mx1.d.test 192.0.2.1:2525, mx1.d.test [2001:db8::1]:2525, mx2.d.test 192.0.2.2:2525", 4),
        ];
        for (preference, max, expected, all) in cases {
            let (candidates, total) = candidates(&route, "d.test", &settings(preference, max));
            let listed: Vec<String> = candidates
                .iter()
                .map(|c| {
                    assert!(!c.plaintext);
                    format!("{} {}", c.host, c.addr)
                })
                .collect();
            assert_eq!(listed.join(", "), expected, "{preference} {max}");
            assert_eq!(total, all, "{preference} {max}");
        }
    }
}

#[cfg(test)]
mod security_tests {
    use std::sync::Arc;

    use super::*;
    use postman::config::Settings;
    use postman::mta_sts::Policy;
    use postman::route::Host;
    use postman::tls::{ActiveSts, Applied, Check, StsStatus};

    /// Under an MTA-STS policy in enforce mode, a listed host is tried
    /// with a name check, and one not listed is kept once, refused, for
    /// the deferral's reason; a route key's rule part does not change the
    /// domain whose policy applies.
    #[test]
    fn each_host_carries_its_decision() {
        let config = Settings::defaults("mx.example.org")
            .validate()
            .expect("valid settings");
        let log = slog::Logger::root(slog::Discard, o!());
        let settings = ConnSettings::new(&config, &log);
        let addr = |a: &str| a.parse().expect("an address");
        let mut route = Route::new(vec![
            Host::new("mx1.d.test", vec![addr("192.0.2.1")]),
            Host::new("mx2.d.test", vec![addr("192.0.2.2"), addr("192.0.2.3")]),
        ]);
        let text = "version: STSv1\nmode: enforce\nmax_age: 600\nmx: mx1.d.test\n";
        route.sts = StsStatus::Policy(Arc::new(ActiveSts {
            id: "7".into(),
            policy: Policy::parse(text).expect("a policy"),
        }));
        let (candidates, all) = candidates(&route, "D.test", &settings);
        assert_eq!(all, 2, "the refused host once");
        let first = &candidates[0].security;
        assert_eq!(first.applied, Applied::StsEnforce);
        assert_eq!(
            first.action,
            Action::Connect {
                starttls: TlsMode::Required,
                check: Check::Pkix {
                    names: vec!["mx1.d.test".into()]
                }
            }
        );
        let Action::Refuse(why) = &candidates[1].security.action else {
            panic!("mx2 is not refused: {:?}", candidates[1]);
        };
        assert_eq!(
            why.to_string(),
            "mx2.d.test is not an MX host of the MTA-STS policy (id 7)"
        );
    }
}
