//! A scripted SMTP server (RFC 5321 §4) for fault injection.
//!
//! Each accepted connection plays a [`Script`]: the n-th connection plays the
//! n-th script given to [`HostileServer::start`], and later connections play
//! the last one. A script is a list of [`Step`]s: send any greeting (421,
//! 554, multi-line, garbage), expect a command by case-insensitive prefix and
//! answer anything (multi-line, malformed, over-long), answer like a polite
//! server, stall, read a DATA body up to `CRLF.CRLF`, start TLS after
//! STARTTLS with a test certificate, close. When the steps
//! run out the server closes the connection.
//!
//! Everything the client sent is kept in a transcript per connection
//! (commands, bodies as sent on the wire, script violations) for assertions.
//! Connections are served concurrently, one thread each; dropping the server
//! stops the listener and shuts every connection down.

mod conn;
mod script;
mod tls;

pub use script::{reply_bytes, Script, Step};

use std::collections::HashSet;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use conn::accept_loop;

/// What happened on one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnLog {
    /// Accept order, from 0.
    pub index: usize,
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// Command lines received, without their CRLF.
    pub commands: Vec<String>,
    /// DATA bodies as sent on the wire (still dot-stuffed), without the
    /// final `.` line; see [`unstuff`].
    pub bodies: Vec<Vec<u8>>,
    /// Script violations and I/O trouble, in words.
    pub errors: Vec<String>,
    /// Whether the client closed the connection (end of input seen).
    pub client_closed: bool,
    /// Whether the server is done with this connection.
    pub finished: bool,
    /// Turned away by the cap of [`HostileServer::start_capped`].
    pub capped: bool,
    /// The RCPT TO commands the polite answer accepted (`250`), in order.
    pub accepted_rcpts: Vec<String>,
    /// When each of [`ConnLog::bodies`] was read to its final dot.
    pub body_times: Vec<Instant>,
    /// TLS began after STARTTLS: the commands logged after `STARTTLS` came
    /// over it.
    pub tls: bool,
}

impl ConnLog {
    /// The RCPT TO commands of this connection, in order.
    pub fn rcpts(&self) -> Vec<String> {
        self.commands
            .iter()
            .filter(|c| starts_with_ci(c, "RCPT TO"))
            .cloned()
            .collect()
    }
}

struct Shared {
    stop: AtomicBool,
    logs: Mutex<Vec<ConnLog>>,
    streams: Mutex<Vec<TcpStream>>,
    /// Command lines already greylisted once (see [`Script::greylist`]).
    greylisted: Mutex<HashSet<String>>,
    /// Connections whose script is playing now.
    active: AtomicUsize,
    /// The most that played at once.
    peak: AtomicUsize,
    /// At most this many play at once; one more gets the reply and is
    /// closed (see [`HostileServer::start_capped`]).
    cap: Option<(usize, Vec<u8>)>,
    /// What every later connection plays, once [`HostileServer::play_from_now`]
    /// said so.
    from_now: Mutex<Option<Script>>,
}

/// A running scripted server; stops when dropped.
pub struct HostileServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl HostileServer {
    /// Listens on `addr`; connection n plays `scripts[n]` (the last script
    /// once they run out). Panics when `scripts` is empty or `addr` is taken.
    pub fn start(addr: SocketAddr, scripts: Vec<Script>) -> HostileServer {
        HostileServer::serve(addr, scripts, None)
    }

    /// [`HostileServer::start`], limiting connections per client as real
    /// servers do: while `cap` connections are playing their scripts, one
    /// more gets `refusal` as its greeting (`"421 4.7.0 too many
    /// connections"`) and is closed; it is logged with no commands and
    /// does not use up a script.
    pub fn start_capped(
        addr: SocketAddr,
        scripts: Vec<Script>,
        cap: usize,
        refusal: &str,
    ) -> HostileServer {
        HostileServer::serve(addr, scripts, Some((cap, reply_bytes(refusal))))
    }

    /// [`HostileServer::start`] over a narrow path: the server's receive
    /// buffer is a few KB and it announces a 536-octet MSS, so a client's
    /// send buffer stays small too (Linux sizes it from the MSS) and its
    /// writes block after some KB whenever the server stops reading. On
    /// plain loopback, with its 64 KB segments, a client's writes of up to
    /// a MB go through at once even to a server that reads nothing.
    pub fn start_narrow(addr: SocketAddr, scripts: Vec<Script>) -> HostileServer {
        let listener = narrow_listener(addr)
            .unwrap_or_else(|e| panic!("narrow hostile server on {addr}: {e}"));
        HostileServer::serve_on(listener, addr, scripts, None)
    }

    fn serve(
        addr: SocketAddr,
        scripts: Vec<Script>,
        cap: Option<(usize, Vec<u8>)>,
    ) -> HostileServer {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("hostile server bind {addr}: {e}"));
        HostileServer::serve_on(listener, addr, scripts, cap)
    }

    fn serve_on(
        listener: TcpListener,
        addr: SocketAddr,
        scripts: Vec<Script>,
        cap: Option<(usize, Vec<u8>)>,
    ) -> HostileServer {
        assert!(
            !scripts.is_empty(),
            "a hostile server needs at least one script"
        );
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on the listener");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            logs: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
            greylisted: Mutex::new(HashSet::new()),
            active: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            cap,
            from_now: Mutex::new(None),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("hostile-{addr}"))
                .spawn(move || accept_loop(listener, scripts, shared))
                .expect("spawn hostile acceptor")
        };
        HostileServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A server that plays `first` to its first `n` connections, then
    /// [`Script::polite`]: a provider that throttles for a while
    /// (`Script::new().greet("421 4.7.0 try later")`), then behaves.
    pub fn first_then_polite(addr: SocketAddr, n: usize, first: Script) -> HostileServer {
        let mut scripts = vec![first; n];
        scripts.push(Script::polite());
        HostileServer::start(addr, scripts)
    }

    /// From now on every new connection plays `script`, whatever the
    /// scripts given at the start said (a throttling server that stops
    /// throttling when the test decides). Connections already open go on
    /// with their own.
    pub fn play_from_now(&self, script: Script) {
        *self.shared.from_now.lock().unwrap() = Some(script);
    }

    /// A polite server on `addr` (every connection plays [`Script::polite`]).
    pub fn polite(addr: SocketAddr) -> HostileServer {
        HostileServer::start(addr, vec![Script::polite()])
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections were accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.logs.lock().unwrap().len()
    }

    /// The most connections whose scripts played at the same time.
    pub fn peak_connections(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Connections whose scripts are playing now.
    pub fn open_connections(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// How many connections the cap of [`HostileServer::start_capped`]
    /// turned away.
    pub fn capped_count(&self) -> usize {
        self.shared
            .logs
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.capped)
            .count()
    }

    /// When each DATA body was received, all connections, in time order.
    pub fn body_times(&self) -> Vec<Instant> {
        let logs = self.shared.logs.lock().unwrap();
        let mut times: Vec<Instant> = logs
            .iter()
            .flat_map(|c| c.body_times.iter().copied())
            .collect();
        times.sort();
        times
    }

    /// A snapshot of every connection's transcript, in accept order.
    pub fn connections(&self) -> Vec<ConnLog> {
        self.shared.logs.lock().unwrap().clone()
    }

    /// Every command received, all connections in accept order.
    pub fn commands(&self) -> Vec<String> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.commands)
            .collect()
    }

    /// Every DATA body received (as sent on the wire, dot-stuffed).
    pub fn bodies(&self) -> Vec<Vec<u8>> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.bodies)
            .collect()
    }

    /// The RCPT TO commands the polite answers accepted, all connections
    /// in accept order.
    pub fn accepted_rcpts(&self) -> Vec<String> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.accepted_rcpts)
            .collect()
    }

    /// How many DATA bodies were received, all connections.
    pub fn body_count(&self) -> usize {
        let logs = self.shared.logs.lock().unwrap();
        logs.iter().map(|c| c.bodies.len()).sum()
    }

    /// The `Message-ID` of every DATA body received, all connections in
    /// accept order (one entry per body; `""` for a body without one). A
    /// message received twice appears twice.
    pub fn message_ids(&self) -> Vec<String> {
        let logs = self.shared.logs.lock().unwrap();
        logs.iter()
            .flat_map(|c| c.bodies.iter())
            .map(|body| message_id(body).unwrap_or_default())
            .collect()
    }

    /// Every script violation, prefixed with its connection number.
    pub fn errors(&self) -> Vec<String> {
        self.connections()
            .into_iter()
            .flat_map(|c| {
                let i = c.index;
                c.errors
                    .into_iter()
                    .map(move |e| format!("connection {i}: {e}"))
            })
            .collect()
    }

    /// How many received commands start with `verb` (case-insensitive).
    pub fn count_commands(&self, verb: &str) -> usize {
        self.commands()
            .iter()
            .filter(|c| starts_with_ci(c, verb))
            .count()
    }

    /// Waits until the server has received `n` message bodies, or `timeout`
    /// passed. Returns whether it has.
    pub fn wait_bodies(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.body_count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Waits until `n` connections were accepted and every one of them is
    /// finished, or `timeout` passed. Returns whether that happened.
    pub fn wait_idle(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let logs = self.shared.logs.lock().unwrap();
                if logs.len() >= n && logs.iter().all(|c| c.finished) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A listener whose connections take data slowly (see
/// [`HostileServer::start_narrow`]); the options are set before `listen`
/// so that accepted connections inherit them and the SYN-ACK carries them.
fn narrow_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_recv_buffer_size(4096)?;
    socket.set_tcp_mss(536)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// The value of the `Message-ID` header field (RFC 5322 §3.6.4) of a body
/// as sent on the wire, trimmed; `None` when its header section has none.
pub fn message_id(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("Message-ID") {
                return Some(value.trim().to_owned());
            }
        }
    }
    None
}

/// Removes dot-stuffing (RFC 5321 §4.5.2) from a body as sent on the wire.
pub fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    let mut at_line_start = true;
    for &b in wire {
        if at_line_start && b == b'.' {
            at_line_start = false;
            continue;
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::TestNet;
    use std::io::Write;

    fn converse(addr: SocketAddr, lines: &[&str]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A server that greets with 421 closes at once: writing after
        // that, or shutting down what it already reset, may fail
        // (ENOTCONN, EPIPE) without losing what it said.
        for l in lines {
            if s.write_all(l.as_bytes()).is_err() {
                break;
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        out
    }

    #[test]
    fn polite_script_records_a_pipelined_transaction() {
        let net = TestNet::new();
        let server = HostileServer::polite(net.addr(1));
        let out = converse(
            net.addr(1),
            &[
                "EHLO me\r\n",
                "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n",
                "..dot\r\nline\r\n.\r\nQUIT\r\n",
            ],
        );
        assert!(
            server.wait_idle(1, Duration::from_secs(5)),
            "server did not finish"
        );
        assert!(out.starts_with("220 "), "greeting in {out:?}");
        assert!(out.contains("250-PIPELINING\r\n"), "EHLO reply in {out:?}");
        assert!(out.contains("354 "), "354 in {out:?}");
        assert!(
            out.ends_with("250 2.0.0 queued\r\n221 2.0.0 bye\r\n"),
            "tail of {out:?}"
        );
        assert_eq!(
            server.commands(),
            [
                "EHLO me",
                "MAIL FROM:<a@x.test>",
                "RCPT TO:<b@y.test>",
                "DATA",
                "QUIT"
            ]
        );
        assert_eq!(server.bodies(), vec![b"..dot\r\nline\r\n".to_vec()]);
        assert_eq!(unstuff(&server.bodies()[0]), b".dot\r\nline\r\n");
        assert!(server.errors().is_empty(), "{:?}", server.errors());
    }

    #[test]
    fn scripts_per_connection_and_violations() {
        let net = TestNet::new();
        let server = HostileServer::start(
            net.addr(1),
            vec![
                Script::new().greet("421-busy\n421 go away"),
                Script::new()
                    .greet("220 hi")
                    .expect("ehlo", "250 ok")
                    .expect("MAIL FROM", "550-no\n550 5.7.1 never"),
            ],
        );
        let first = converse(net.addr(1), &[]);
        assert_eq!(first, "421-busy\r\n421 go away\r\n");
        let second = converse(net.addr(1), &["EHLO me\r\n", "MAIL FROM:<>\r\n"]);
        assert_eq!(second, "220 hi\r\n250 ok\r\n550-no\r\n550 5.7.1 never\r\n");
        let third = converse(net.addr(1), &["EHLO me\r\n", "RCPT TO:<x@y>\r\n"]);
        assert!(
            third.ends_with("503 5.5.1 hostile script expected another command\r\n"),
            "{third:?}"
        );
        assert!(
            server.wait_idle(3, Duration::from_secs(5)),
            "server did not finish"
        );
        assert_eq!(server.connection_count(), 3);
        let errors = server.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("connection 2: expected MAIL FROM"),
            "{errors:?}"
        );
    }

    #[test]
    fn answer_overrides_polite_replies_for_the_whole_connection() {
        let net = TestNet::new();
        let server = HostileServer::start(
            net.addr(1),
            vec![Script::polite().answer("rcpt", "451 4.2.0 later")],
        );
        let out = converse(
            net.addr(1),
            &[
                "EHLO me\r\n",
                "MAIL FROM:<a@x.test>\r\n",
                "RCPT TO:<b@y.test>\r\n",
                "RCPT TO:<c@y.test>\r\n",
                "QUIT\r\n",
            ],
        );
        assert!(
            out.ends_with(
                "250 2.1.0 sender ok\r\n451 4.2.0 later\r\n451 4.2.0 later\r\n221 2.0.0 bye\r\n"
            ),
            "{out:?}"
        );
        assert!(
            server.wait_idle(1, Duration::from_secs(5)),
            "server did not finish"
        );
        assert_eq!(server.count_commands("rcpt to"), 2);
    }

    #[test]
    fn greylist_refuses_each_command_line_once_across_connections() {
        let net = TestNet::new();
        let _server = HostileServer::start(
            net.addr(1),
            vec![Script::polite().greylist("RCPT TO:<grey", "451 4.7.1 greylisted")],
        );
        let session = |rcpts: &[&str]| {
            let mut lines = vec![
                "EHLO me\r\n".to_owned(),
                "MAIL FROM:<a@x.test>\r\n".to_owned(),
            ];
            lines.extend(rcpts.iter().map(|r| format!("RCPT TO:<{r}>\r\n")));
            lines.push("QUIT\r\n".to_owned());
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            converse(net.addr(1), &lines)
        };
        let first = session(&["grey1@y.test", "white@y.test", "grey2@y.test"]);
        assert!(
            first.ends_with(
                "250 2.1.0 sender ok\r\n451 4.7.1 greylisted\r\n250 2.1.5 recipient ok\r\n\
                 451 4.7.1 greylisted\r\n221 2.0.0 bye\r\n"
            ),
            "{first:?}"
        );
        let refused = converse(
            net.addr(1),
            &[
                "EHLO me\r\n",
                "MAIL FROM:<a@x.test>\r\n",
                "RCPT TO:<grey9@y.test>\r\n",
                "DATA\r\n",
                "QUIT\r\n",
            ],
        );
        assert!(
            refused.ends_with(
                "451 4.7.1 greylisted\r\n554 5.5.1 no valid recipients\r\n221 2.0.0 bye\r\n"
            ),
            "{refused:?}"
        );
        let second = session(&["grey1@y.test", "grey3@y.test"]);
        assert!(
            second.ends_with(
                "250 2.1.0 sender ok\r\n250 2.1.5 recipient ok\r\n451 4.7.1 greylisted\r\n\
                 221 2.0.0 bye\r\n"
            ),
            "{second:?}"
        );
    }

    #[test]
    fn first_connections_throttle_then_the_server_behaves_or_is_told_to() {
        let net = TestNet::new();
        let throttle = "421 4.7.0 Too many concurrent SMTP connections";
        let server =
            HostileServer::first_then_polite(net.addr(1), 2, Script::new().greet(throttle));
        let greeting = |server: &HostileServer| {
            let out = converse(net.addr(1), &["QUIT\r\n"]);
            assert!(server.wait_idle(server.connection_count(), Duration::from_secs(5)));
            out
        };
        assert_eq!(greeting(&server), format!("{throttle}\r\n"), "connection 0");
        assert_eq!(greeting(&server), format!("{throttle}\r\n"), "connection 1");
        assert!(
            greeting(&server).starts_with("220 "),
            "connection 2 behaves"
        );
        server.play_from_now(Script::new().greet("421 4.7.0 [TSS04] deferred"));
        assert_eq!(
            greeting(&server),
            "421 4.7.0 [TSS04] deferred\r\n",
            "connection 3, after play_from_now"
        );
        assert_eq!(server.connection_count(), 4);
        assert_eq!(server.open_connections(), 0, "all finished");
    }

    #[test]
    fn body_times_are_kept_in_order() {
        let net = TestNet::new();
        let server = HostileServer::polite(net.addr(1));
        let before = Instant::now();
        let mut lines = vec!["EHLO me\r\n"];
        for _ in 0..3 {
            lines.extend(["MAIL FROM:<a@x.test>\r\n", "RCPT TO:<b@y.test>\r\n"]);
            lines.extend(["DATA\r\n", "x\r\n.\r\n"]);
        }
        lines.push("QUIT\r\n");
        converse(net.addr(1), &lines);
        assert!(server.wait_idle(1, Duration::from_secs(5)));
        let times = server.body_times();
        assert_eq!(times.len(), 3, "one time per body");
        assert!(times[0] >= before && times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn stall_delays_the_reply() {
        let net = TestNet::new();
        let _server = HostileServer::start(
            net.addr(1),
            vec![Script::new().stall(300).greet("220 late")],
        );
        let started = Instant::now();
        let out = converse(net.addr(1), &[]);
        assert_eq!(out, "220 late\r\n");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn message_ids_are_read_from_the_header_section() {
        for (body, want) in [
            (
                &b"Subject: a\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"[..],
                Some("<x@y>"),
            ),
            (b"message-id:   <lower@y>  \r\n\r\n", Some("<lower@y>")),
            (b"Subject: a\r\n\r\nMessage-ID: <in-body@y>\r\n", None),
            (b"", None),
        ] {
            assert_eq!(
                message_id(body).as_deref(),
                want,
                "input {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
