//! The bytes of a connection: opening its socket, reading what the server
//! sent into the session, writing what the session has to send, and the
//! message body, fed through the session or written straight from its
//! file (`sendfile(2)`) when it needs no change.

use std::net::IpAddr;

use super::*;
use crate::bind::bind_source;

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

/// Creates a non-blocking socket, binds it to `source` when that is of
/// `addr`'s family, and starts connecting. Returns whether the connection
/// is already complete (loopback may finish at once).
///
/// A source of the other family is left out, not an error: as Postfix's
/// `smtp_bind_address` is for IPv4 and `smtp_bind_address6` for IPv6, an
/// IPv4 source says nothing about connections to IPv6 servers. A failed
/// bind is an `io::Error` of the bind's kind whose inner error is a
/// [`BindError`](crate::bind::BindError) ([`bind_error`](crate::bind::bind_error) finds it), for
/// the caller to tell a source address that is gone from the server's
/// failure.
pub(super) fn open_socket(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<(Socket, bool)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if socket.as_raw_fd() >= FD_SETSIZE {
        // Dropping the socket closes it: a descriptor that does not fit is
        // never connected.
        return Err(io::Error::other(BeyondSelect(socket.as_raw_fd())));
    }
    socket.set_nonblocking(true)?;
    // Commands and replies are small: send them at once.
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        bind_source(&socket, ip).map_err(|e| io::Error::new(e.source.kind(), e))?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bind::bind_error;
    use std::net::{Ipv4Addr, TcpListener};

    /// Connects to `listener` from `source` and returns the address its
    /// accept sees.
    fn peer_seen(listener: &TcpListener, source: Option<IpAddr>) -> SocketAddr {
        let addr = listener.local_addr().expect("listening");
        let (socket, _) = open_socket(addr, source).expect("connecting");
        // The handshake completes in the kernel; accept waits for it.
        let (_, peer) = listener.accept().expect("accepted");
        let local = socket.local_addr().expect("bound").as_socket();
        assert_eq!(
            local,
            Some(peer),
            "the socket's own address is the peer seen"
        );
        peer
    }

    #[test]
    fn connects_from_the_source_address() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a listener");
        let table = [
            (Some("127.0.0.2"), "127.0.0.2"),
            (Some("127.0.0.3"), "127.0.0.3"),
            (None, "127.0.0.1"),
        ];
        for (source, want) in table {
            let source = source.map(|s| s.parse().expect("an address"));
            let peer = peer_seen(&listener, source);
            assert_eq!(peer.ip().to_string(), want, "{source:?}");
            assert_ne!(peer.port(), 0);
        }
    }

    #[test]
    fn leaves_a_source_of_the_other_family_out() {
        let listener = match TcpListener::bind("[::1]:0") {
            Ok(listener) => listener,
            // A host without IPv6 has nothing to show here.
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => return,
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => return,
            Err(e) => panic!("listening on [::1]: {e}"),
        };
        let peer = peer_seen(&listener, Some("127.0.0.2".parse().expect("an address")));
        assert_eq!(peer.ip().to_string(), "::1");
    }

    #[test]
    fn a_failed_bind_says_so() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a listener");
        let addr = listener.local_addr().expect("listening");
        let source: IpAddr = "192.0.2.1".parse().expect("an address");
        let e = open_socket(addr, Some(source)).expect_err("192.0.2.1 is not this host's");
        assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable, "{e:?}");
        let bind = bind_error(&e).expect("a bind error");
        assert_eq!(bind.ip, source);
        assert!(bind.unavailable(), "{bind:?}");
        assert!(!local_limit(&e), "not a shortage of this process's: {e:?}");
        assert!(e.to_string().contains("192.0.2.1"), "{e}");
        // Nothing else failed: a plain socket has no bind error.
        let other = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert!(bind_error(&other).is_none());
    }
}
