//! Hosts that cannot take mail, as test peers: a black hole that accepts
//! connections and never greets (RFC 5321 §3.1: the client waits for the
//! 220 until its greeting timeout, §4.5.3.2.1), a down host whose port
//! resets every connection at once, and a closed port that refuses them.
//!
//! The first two count what they accepted, so a test can tell how many
//! times postman tried a site. A port that is merely free (bound, then
//! released) is racy as a "down" host: another test may bind it in the
//! meantime. [`BlackHole::resetting`] holds its listener for the whole
//! test and answers each connection with a TCP reset before any byte, which
//! the client sees a moment after connecting, as fast as a refusal; and
//! [`ClosedPort`] keeps the address bound without listening, so the kernel
//! refuses every connection (RST to the SYN) and no one else can listen
//! there meanwhile, but nothing can count those attempts. An unrouted
//! address is no substitute: it fails by connect timeout, seconds later.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the acceptor looks for new connections and closed ones.
const POLL: Duration = Duration::from_millis(5);

/// What a [`BlackHole`] does with a connection it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keep it open and silent until the client closes it.
    Hold,
    /// Reset it at once (SO_LINGER 0, then close).
    Reset,
}

struct Shared {
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// The held connections the client has not closed yet.
    held: Mutex<Vec<TcpStream>>,
    peak: AtomicUsize,
}

/// A listener that accepts every connection and never says a word (or
/// resets it); stops when dropped.
pub struct BlackHole {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl BlackHole {
    /// Listens on `addr`; every connection is accepted and held open in
    /// silence until the client gives up and closes it.
    pub fn start(addr: SocketAddr) -> BlackHole {
        BlackHole::serve(addr, Mode::Hold)
    }

    /// Listens on `addr`; every connection is accepted and reset at once:
    /// a host whose SMTP service is down, counted.
    pub fn resetting(addr: SocketAddr) -> BlackHole {
        BlackHole::serve(addr, Mode::Reset)
    }

    fn serve(addr: SocketAddr, mode: Mode) -> BlackHole {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("black hole bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on the black hole");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            held: Mutex::new(Vec::new()),
            peak: AtomicUsize::new(0),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("blackhole-{addr}"))
                .spawn(move || accept_loop(&listener, mode, &shared))
                .expect("spawn the black hole's acceptor")
        };
        BlackHole {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Held connections the client has not closed yet (as of the last
    /// sweep, a few milliseconds ago); always 0 for a resetting one.
    pub fn open_connections(&self) -> usize {
        self.shared.held.lock().unwrap().len()
    }

    /// The most held connections open at once.
    pub fn peak_connections(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Waits until `n` connections were accepted or `timeout` passed;
    /// returns whether they were.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.connection_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
        true
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, mode: Mode, shared: &Shared) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                match mode {
                    Mode::Reset => reset(stream),
                    Mode::Hold => {
                        let _ = stream.set_nonblocking(true);
                        let mut held = shared.held.lock().unwrap();
                        held.push(stream);
                        shared.peak.fetch_max(held.len(), Ordering::SeqCst);
                    }
                }
                // Take every connection already waiting before sweeping.
                continue;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {}
        }
        shared.held.lock().unwrap().retain(still_open);
        std::thread::sleep(POLL);
    }
}

/// Closes `stream` with a reset rather than a FIN: the client's next read
/// fails with "connection reset by peer".
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

/// Whether the client of a held, non-blocking connection has not closed
/// it: a peek that sees the end of input means it has. Bytes it sent
/// anyway (it should wait for the greeting) are left unread.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Err(_) => false,
    }
}

/// An address held bound but not listening: every connection to it is
/// refused by the kernel at once, and no other socket can listen there
/// while it lives. Attempts are not counted (the kernel answers them).
pub struct ClosedPort {
    addr: SocketAddr,
    _socket: socket2::Socket,
}

impl ClosedPort {
    /// Binds `addr` without listening.
    pub fn bind(addr: SocketAddr) -> ClosedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
            .unwrap_or_else(|e| panic!("socket for the closed port {addr}: {e}"));
        socket
            .bind(&addr.into())
            .unwrap_or_else(|e| panic!("bind the closed port {addr}: {e}"));
        ClosedPort {
            addr,
            _socket: socket,
        }
    }

    /// The refusing address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::TestNet;
    use std::io::Read;

    #[test]
    fn a_black_hole_holds_connections_silently_and_counts_them() {
        let net = TestNet::new();
        let hole = BlackHole::start(net.addr(1));
        let mut first = TcpStream::connect(net.addr(1)).expect("connect");
        let second = TcpStream::connect(net.addr(1)).expect("connect");
        assert!(
            hole.wait_connections(2, Duration::from_secs(5)),
            "two accepted"
        );
        first
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 16];
        let err = first.read(&mut buf).expect_err("no greeting ever");
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );
        assert_eq!(hole.open_connections(), 2, "both held");
        drop(second);
        let deadline = Instant::now() + Duration::from_secs(5);
        while hole.open_connections() != 1 && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert_eq!(hole.open_connections(), 1, "the closed one is let go");
        assert_eq!(hole.peak_connections(), 2);
        assert_eq!(hole.connection_count(), 2);
    }

    #[test]
    fn a_resetting_hole_resets_every_connection_and_counts_them() {
        let net = TestNet::new();
        let hole = BlackHole::resetting(net.addr(1));
        for n in 1..=3 {
            let mut s = TcpStream::connect(net.addr(1)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 16];
            let err = s.read(&mut buf).expect_err("reset, not a greeting");
            assert_eq!(
                err.kind(),
                ErrorKind::ConnectionReset,
                "connection {n}: {err}"
            );
            assert_eq!(hole.connection_count(), n);
        }
    }

    #[test]
    fn a_closed_port_refuses_at_once() {
        let net = TestNet::new();
        let port = ClosedPort::bind(net.addr(1));
        let started = Instant::now();
        let err = TcpStream::connect(port.addr()).expect_err("refused");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        // Nothing else can listen there while it is held.
        assert!(
            TcpListener::bind(port.addr()).is_err(),
            "the address is held"
        );
    }
}
