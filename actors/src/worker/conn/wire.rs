//! The bytes of a connection: opening its socket, reading what the server
//! sent into the session, writing what the session has to send, and the
//! message body, fed through the session or written straight from its
//! file (`sendfile(2)`) when it needs no change.

use super::*;

impl Conn {
    /// The job's body goes on the wire as it is and the session takes it
    /// straight from the body's file now, with some of it left: neither
    /// the copy into the session's output nor the one into the socket is
    /// made. Not under TLS, which encrypts in postman; and only for a file
    /// whose identity was taken when it was measured, to check it against.
    pub(super) fn writes_body_directly(&self, session: &Session) -> bool {
        self.job.as_ref().is_some_and(|job| {
            job.msg.identity.is_some()
                && job.body.as_ref().is_some_and(|b| b.direct_part().is_some())
        }) && session.takes_body_directly()
    }

    /// Feeds the session body chunks while it wants them, or writes a
    /// verbatim body straight to the socket while the session takes it so.
    pub(super) fn feed_body(&mut self, shared: &mut Shared, now: Instant) -> bool {
        let direct = matches!(&self.state, State::Smtp { session, tls: None, .. }
            if !self.broken && self.writes_body_directly(session));
        if direct {
            return self.write_body_directly(shared, now);
        }
        let (State::Smtp { session, .. }, Some(job)) = (&mut self.state, &mut self.job) else {
            return false;
        };
        let mut fed = false;
        while session.wants_body() {
            let Some(body) = &mut job.body else {
                break;
            };
            match body.next(&mut shared.body_buf) {
                // The body stays with the job: its buffer goes back to the
                // pool when the job is settled.
                Ok([]) => session.finish_body(now),
                Ok(chunk) => session.push_body(chunk, now),
                Err(e) => {
                    // The dot was not sent, so closing now makes the server
                    // discard the partial message; it stays queued.
                    error!(shared.log, "cannot read queue file while sending it";
                        "queue_id" => &job.msg.id, "error" => %e);
                    job.body = None;
                    self.broken = true;
                    session.handle_eof(now);
                }
            }
            fed = true;
        }
        fed
    }

    /// Writes a verbatim body straight from its file until the socket would
    /// block or only its tail is left, which then goes through the session
    /// with the terminator, from memory or read from the file (see
    /// [`Session::takes_body_directly`] and
    /// [`DIRECT_TAIL`](super::body::DIRECT_TAIL)). `sendfile(2)` hands the
    /// file's cached pages (the measuring pass just read them) to the
    /// socket, for less CPU than writing a copy kept in memory or reading
    /// and stuffing the file again here.
    ///
    /// What was measured is what must go: a file that ends early, or that
    /// is no longer the one measured once its part is written (its size,
    /// modification time or inode changed), breaks the connection before
    /// the terminator, so the server discards the message and it stays
    /// queued.
    fn write_body_directly(&mut self, shared: &mut Shared, now: Instant) -> bool {
        let (
            State::Smtp {
                socket, session, ..
            },
            Some(job),
        ) = (&mut self.state, &mut self.job)
        else {
            return false;
        };
        let Some(body) = &mut job.body else {
            return false;
        };
        let mut wrote = false;
        // When this part is written, the tail goes through the session,
        // with the terminator.
        while let Some(part) = body.direct_part() {
            let problem = match part.send(&*socket, &mut shared.body_buf) {
                Ok(n) => {
                    shared.stats.bytes_written += n as u64;
                    body.advance(n);
                    session.body_written(n);
                    wrote = true;
                    match body.direct_part() {
                        Some(_) => None,
                        None => changed_since_measured(body.file(), job.msg.identity.as_ref()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                Err(e) if would_block(&e) => return wrote,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Some(e.to_string()),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    Some(format!("cannot read the queue file: {e}"))
                }
                Err(e) => {
                    debug!(shared.log, "write failed"; "relay" => &self.relay, "error" => %e);
                    self.broken = true;
                    session.handle_eof(now);
                    return true;
                }
            };
            if let Some(problem) = problem {
                // The dot was not sent, so closing now makes the server
                // discard the partial message; it stays queued.
                error!(shared.log, "cannot finish sending the queue file; the message stays queued";
                    "queue_id" => &job.msg.id, "domain" => &job.msg.domain, "problem" => problem);
                job.body = None;
                self.broken = true;
                session.handle_eof(now);
                return true;
            }
        }
        wrote
    }

    /// Writes what the session has to send until the socket would block.
    pub(super) fn flush(&mut self, shared: &mut Shared, now: Instant) -> bool {
        let State::Smtp {
            socket,
            session,
            tls,
        } = &mut self.state
        else {
            return false;
        };
        if self.broken {
            return false;
        }
        if let Some(tls) = tls {
            let before = session.pending_output().len();
            return match tls.write(socket, session) {
                Ok(n) => {
                    shared.stats.bytes_written += n;
                    n > 0 || session.pending_output().len() != before
                }
                Err(e) => {
                    debug!(shared.log, "write failed"; "relay" => &self.relay, "error" => %e);
                    self.broken = true;
                    session.handle_eof(now);
                    true
                }
            };
        }
        let mut wrote = false;
        while !session.pending_output().is_empty() {
            match socket.send(session.pending_output()) {
                Ok(n) => {
                    shared.stats.bytes_written += n as u64;
                    session.consume_output(n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if would_block(&e) => break,
                Err(e) => {
                    debug!(shared.log, "write failed"; "relay" => &self.relay, "error" => %e);
                    self.broken = true;
                    session.handle_eof(now);
                    return true;
                }
            }
        }
        wrote
    }
}

/// The socket's descriptor is too high for an `fd_set`: the lower ones are
/// all taken. Inside an [`io::Error`], it marks a [`local_limit`].
#[derive(Debug, thiserror::Error)]
#[error("descriptor {0} is beyond select(2)'s FD_SETSIZE {FD_SETSIZE}")]
struct BeyondSelect(i32);

/// Whether a socket failed for want of a resource of this process or host
/// rather than because of the server: no descriptor below `FD_SETSIZE`, the
/// process's or the system's descriptor table full, no memory for socket
/// buffers. Such a failure says nothing about the domain.
pub(super) fn local_limit(e: &io::Error) -> bool {
    crate::descriptors::short_of_resources(e)
        || e.get_ref().is_some_and(|inner| inner.is::<BeyondSelect>())
}

/// Creates a non-blocking socket and starts connecting. Returns whether the
/// connection is already complete (loopback may finish at once).
pub(super) fn open_socket(addr: SocketAddr) -> io::Result<(Socket, bool)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if socket.as_raw_fd() >= FD_SETSIZE {
        // Dropping the socket closes it: a descriptor that does not fit is
        // never connected.
        return Err(io::Error::other(BeyondSelect(socket.as_raw_fd())));
    }
    socket.set_nonblocking(true)?;
    // Commands and replies are small: send them at once.
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => Ok((socket, true)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => Ok((socket, false)),
        Err(e) => Err(e),
    }
}

pub(super) fn read_into(
    socket: &mut Socket,
    session: &mut Session,
    shared: &mut Shared,
    now: Instant,
) {
    loop {
        match socket.read(&mut shared.read_buf) {
            Ok(0) => {
                session.handle_eof(now);
                return;
            }
            Ok(n) => {
                shared.stats.bytes_read += n as u64;
                session.handle_input(&shared.read_buf[..n], now);
                // After the 220 to STARTTLS, what the socket holds is TLS
                // (or an injection attempt, which fails the handshake).
                if session.is_closed() || session.awaits_tls() {
                    return;
                }
                // Less than asked for: the socket is drained, and the next
                // read would only say EAGAIN (pselect reports what comes
                // later).
                if n < shared.read_buf.len() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if would_block(&e) => return,
            Err(_) => {
                session.handle_eof(now);
                return;
            }
        }
    }
}

/// Why a file whose body is being written straight from it must not be
/// finished: it is no longer the file measured (`identity`), or cannot be
/// looked at. `None` when it still is.
fn changed_since_measured(file: &File, identity: Option<&FileIdentity>) -> Option<String> {
    match file.metadata() {
        Ok(m) if identity == Some(&FileIdentity::of(&m)) => None,
        Ok(_) => Some("the queue file changed since it was measured".to_owned()),
        Err(e) => Some(format!("cannot look at the queue file: {e}")),
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}
