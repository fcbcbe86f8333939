//! A scripted SMTP server (RFC 5321 §4) for fault injection.
//!
//! Each accepted connection plays a [`Script`]: the n-th connection plays the
//! n-th script given to [`HostileServer::start`], and later connections play
//! the last one. A script is a list of [`Step`]s: send any greeting (421,
//! 554, multi-line, garbage), expect a command by case-insensitive prefix and
//! answer anything (multi-line, malformed, over-long), answer like a polite
//! server, stall, read a DATA body up to `CRLF.CRLF`, close. When the steps
//! run out the server closes the connection.
//!
//! Everything the client sent is kept in a transcript per connection
//! (commands, bodies as sent on the wire, script violations) for assertions.
//! Connections are served concurrently, one thread each; dropping the server
//! stops the listener and shuts every connection down.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest command line the server reads before giving up on the client:
/// far above RFC 5321's 512 octets, small enough to bound memory.
const MAX_LINE: usize = 64 * 1024;
/// A connection the client leaves idle this long is dropped, so a forgotten
/// connection never keeps a thread alive for good.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One thing the server does on a connection.
#[derive(Debug, Clone)]
pub enum Step {
    /// Write these bytes as they are.
    Send(Vec<u8>),
    /// Read one command; it must start with `prefix` (ASCII case-insensitive),
    /// then write `reply`. A different command is recorded as a violation,
    /// answered `503` (`221` for QUIT) and the connection closed.
    Expect { prefix: String, reply: Vec<u8> },
    /// Read one command and answer as the polite server does (a DATA command
    /// includes reading its body and answering `250` after the dot).
    Default,
    /// Read a DATA body up to `CRLF.CRLF`, record it, then write `reply`.
    Body { reply: Vec<u8> },
    /// Sleep without reading or writing.
    Stall(Duration),
    /// Close the connection.
    Close,
    /// Answer every further command politely until QUIT or end of input.
    Polite,
}

/// What one connection does, step by step.
#[derive(Debug, Clone)]
pub struct Script {
    steps: Vec<Step>,
    pipelining: bool,
    overrides: Vec<(String, Vec<u8>)>,
    greylist: Vec<(String, Vec<u8>)>,
}

impl Default for Script {
    fn default() -> Self {
        Script::polite()
    }
}

/// `text` as SMTP reply bytes: each `\n`-separated line ends in CRLF.
/// `"250-a\n250 b"` and `"250-a\r\n250 b\r\n"` give the same bytes.
pub fn reply_bytes(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4);
    for line in text.trim_end_matches(['\r', '\n']).split('\n') {
        out.extend_from_slice(line.trim_end_matches('\r').as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

impl Script {
    /// No steps: the connection is closed as soon as it is accepted.
    pub fn new() -> Script {
        Script {
            steps: Vec::new(),
            pipelining: true,
            overrides: Vec::new(),
            greylist: Vec::new(),
        }
    }

    /// The polite server: `220` greeting, `250` to EHLO (advertising
    /// PIPELINING and 8BITMIME), MAIL, RCPT, RSET, NOOP, `354` to DATA,
    /// `250` after the dot, `221` to QUIT.
    pub fn polite() -> Script {
        Script::new()
            .greet("220 hostile.test ESMTP ready")
            .then_polite()
    }

    /// Whether the polite answer to EHLO advertises PIPELINING (default yes).
    pub fn pipelining(mut self, on: bool) -> Script {
        self.pipelining = on;
        self
    }

    /// Makes the polite answers ([`Step::Default`], [`Step::Polite`]) to
    /// commands starting with `prefix` (case-insensitive) be `reply` instead,
    /// for the whole connection: `Script::polite().answer("RCPT", "451 later")`
    /// refuses every recipient. An overridden DATA reads no body.
    pub fn answer(mut self, prefix: &str, reply: &str) -> Script {
        self.overrides
            .push((prefix.to_string(), reply_bytes(reply)));
        self
    }

    /// Greylisting: the first time the server (on any connection) receives
    /// a given command line starting with `prefix` (case-insensitive), the
    /// polite answer is `reply` instead; that same line is answered
    /// politely from then on. `Script::polite().greylist("RCPT TO:<grey",
    /// "451 4.7.1 greylisted")` defers each `grey…` recipient once. Like a
    /// real server, a script that greylists answers a DATA that follows no
    /// accepted recipient with `554 5.5.1 no valid recipients`.
    pub fn greylist(mut self, prefix: &str, reply: &str) -> Script {
        self.greylist.push((prefix.to_string(), reply_bytes(reply)));
        self
    }

    /// Appends a step.
    pub fn step(mut self, step: Step) -> Script {
        self.steps.push(step);
        self
    }

    /// Sends a greeting (or any reply) given as text, see [`reply_bytes`].
    pub fn greet(self, text: &str) -> Script {
        self.step(Step::Send(reply_bytes(text)))
    }

    /// Sends raw bytes (malformed replies, bare LF, no line end at all).
    pub fn send_raw(self, bytes: &[u8]) -> Script {
        self.step(Step::Send(bytes.to_vec()))
    }

    /// Expects a command starting with `prefix` and answers `reply` (text, see
    /// [`reply_bytes`]).
    pub fn expect(self, prefix: &str, reply: &str) -> Script {
        self.expect_raw(prefix, &reply_bytes(reply))
    }

    /// Expects a command starting with `prefix` and answers raw bytes.
    pub fn expect_raw(self, prefix: &str, reply: &[u8]) -> Script {
        self.step(Step::Expect {
            prefix: prefix.to_string(),
            reply: reply.to_vec(),
        })
    }

    /// Expects a command starting with `prefix` and answers nothing yet
    /// (follow with [`Script::stall`] or [`Script::close`]).
    pub fn expect_silently(self, prefix: &str) -> Script {
        self.expect_raw(prefix, b"")
    }

    /// Reads one command and answers it politely.
    pub fn default_reply(self) -> Script {
        self.step(Step::Default)
    }

    /// The polite greeting and EHLO: `220`, then `250` to EHLO/HELO.
    pub fn hello(self) -> Script {
        self.greet("220 hostile.test ESMTP ready").default_reply()
    }

    /// Reads a DATA body (after a `354` sent by an earlier step), records it
    /// and answers `reply`.
    pub fn body(self, reply: &str) -> Script {
        self.step(Step::Body {
            reply: reply_bytes(reply),
        })
    }

    /// Reads a DATA body and answers nothing (follow with a stall or close).
    pub fn body_silently(self) -> Script {
        self.step(Step::Body { reply: Vec::new() })
    }

    /// Sleeps `ms` milliseconds without reading or answering.
    pub fn stall(self, ms: u64) -> Script {
        self.step(Step::Stall(Duration::from_millis(ms)))
    }

    /// Closes the connection.
    pub fn close(self) -> Script {
        self.step(Step::Close)
    }

    /// Answers everything politely from here on.
    pub fn then_polite(self) -> Script {
        self.step(Step::Polite)
    }
}

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

    fn serve(
        addr: SocketAddr,
        scripts: Vec<Script>,
        cap: Option<(usize, Vec<u8>)>,
    ) -> HostileServer {
        assert!(
            !scripts.is_empty(),
            "a hostile server needs at least one script"
        );
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("hostile server bind {addr}: {e}"));
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

fn accept_loop(listener: TcpListener, scripts: Vec<Script>, shared: Arc<Shared>) {
    let mut workers = Vec::new();
    let mut played = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let capped = shared
                    .cap
                    .as_ref()
                    .filter(|(cap, _)| shared.active.load(Ordering::SeqCst) >= *cap);
                let index = {
                    let mut logs = shared.logs.lock().unwrap();
                    let index = logs.len();
                    logs.push(ConnLog {
                        index,
                        peer: Some(peer),
                        capped: capped.is_some(),
                        finished: capped.is_some(),
                        ..ConnLog::default()
                    });
                    logs.len() - 1
                };
                if let Some((_, refusal)) = capped {
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.write_all(refusal);
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                let script = scripts[played.min(scripts.len() - 1)].clone();
                played += 1;
                let active = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
                shared.peak.fetch_max(active, Ordering::SeqCst);
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
                let _ = stream.set_nodelay(true);
                if let Ok(clone) = stream.try_clone() {
                    shared.streams.lock().unwrap().push(clone);
                }
                let shared = shared.clone();
                workers.push(std::thread::spawn(move || {
                    let mut conn = Conn {
                        reader: BufReader::new(stream.try_clone().expect("clone stream")),
                        writer: stream,
                        index,
                        shared: shared.clone(),
                        pipelining: script.pipelining,
                        overrides: script.overrides.clone(),
                        greylist: script.greylist.clone(),
                        accepted_rcpts: 0,
                    };
                    conn.play(&script.steps);
                    let _ = conn.writer.flush();
                    // Before the client can see the close and connect again.
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                    let _ = conn.writer.shutdown(Shutdown::Both);
                    conn.log(|l| l.finished = true);
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// What reading a line gave.
enum Line {
    Text(Vec<u8>),
    Eof,
    Failed(String),
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    index: usize,
    shared: Arc<Shared>,
    pipelining: bool,
    overrides: Vec<(String, Vec<u8>)>,
    greylist: Vec<(String, Vec<u8>)>,
    /// Recipients accepted in the current transaction (polite answers).
    accepted_rcpts: usize,
}

/// Whether the connection goes on after a step.
enum Flow {
    Continue,
    Stop,
}

impl Conn {
    fn log(&self, f: impl FnOnce(&mut ConnLog)) {
        f(&mut self.shared.logs.lock().unwrap()[self.index]);
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst)
    }

    fn play(&mut self, steps: &[Step]) {
        for step in steps {
            if self.stopping() {
                return;
            }
            if let Flow::Stop = self.run(step) {
                return;
            }
        }
    }

    fn run(&mut self, step: &Step) -> Flow {
        match step {
            Step::Send(bytes) => self.write(bytes),
            Step::Expect { prefix, reply } => {
                let Some(command) = self.read_command() else {
                    self.log(|l| {
                        l.errors
                            .push(format!("expected {prefix}, got end of input"))
                    });
                    return Flow::Stop;
                };
                if starts_with_ci(&command, prefix) {
                    self.write(reply)
                } else {
                    self.log(|l| l.errors.push(format!("expected {prefix}, got {command:?}")));
                    let answer: &[u8] = if starts_with_ci(&command, "QUIT") {
                        b"221 2.0.0 bye\r\n"
                    } else {
                        b"503 5.5.1 hostile script expected another command\r\n"
                    };
                    let _ = self.write(answer);
                    Flow::Stop
                }
            }
            Step::Default => match self.read_command() {
                Some(command) => self.answer_politely(&command),
                None => Flow::Stop,
            },
            Step::Body { reply } => match self.read_body() {
                Some(()) => self.write(reply),
                None => Flow::Stop,
            },
            Step::Stall(d) => {
                let until = Instant::now() + *d;
                while Instant::now() < until && !self.stopping() {
                    std::thread::sleep(Duration::from_millis(5).min(until - Instant::now()));
                }
                Flow::Continue
            }
            Step::Close => Flow::Stop,
            Step::Polite => loop {
                let Some(command) = self.read_command() else {
                    return Flow::Stop;
                };
                if let Flow::Stop = self.answer_politely(&command) {
                    return Flow::Stop;
                }
            },
        }
    }

    fn answer_politely(&mut self, command: &str) -> Flow {
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        if verb == "MAIL" || verb == "RSET" {
            self.accepted_rcpts = 0;
        }
        let greylisted = self
            .greylist
            .iter()
            .find(|(prefix, _)| starts_with_ci(command, prefix))
            .filter(|_| {
                self.shared
                    .greylisted
                    .lock()
                    .unwrap()
                    .insert(command.to_owned())
            })
            .map(|(_, reply)| reply.clone());
        if let Some(reply) = greylisted {
            return self.write(&reply);
        }
        if let Some((_, reply)) = self
            .overrides
            .iter()
            .find(|(prefix, _)| starts_with_ci(command, prefix))
        {
            let reply = reply.clone();
            if verb == "RCPT" && reply.starts_with(b"2") {
                self.accepted_rcpts += 1;
            }
            let flow = self.write(&reply);
            return if starts_with_ci(command, "QUIT") {
                Flow::Stop
            } else {
                flow
            };
        }
        match verb.as_str() {
            "EHLO" => {
                let mut text = String::from("250-hostile.test greets you\n");
                if self.pipelining {
                    text.push_str("250-PIPELINING\n");
                }
                text.push_str("250-8BITMIME\n250 SIZE 10485760");
                self.write(&reply_bytes(&text))
            }
            "HELO" => self.write(b"250 hostile.test\r\n"),
            "MAIL" => self.write(b"250 2.1.0 sender ok\r\n"),
            "RCPT" => {
                self.accepted_rcpts += 1;
                self.write(b"250 2.1.5 recipient ok\r\n")
            }
            "RSET" => self.write(b"250 2.0.0 reset\r\n"),
            "NOOP" => self.write(b"250 2.0.0 ok\r\n"),
            // A greylisting server is a real one: with no recipient
            // accepted it refuses DATA (RFC 2920 §3.1), so the client sends
            // no body.
            "DATA" if !self.greylist.is_empty() && self.accepted_rcpts == 0 => {
                self.write(b"554 5.5.1 no valid recipients\r\n")
            }
            "DATA" => {
                self.accepted_rcpts = 0;
                if let Flow::Stop = self.write(b"354 end data with <CR><LF>.<CR><LF>\r\n") {
                    return Flow::Stop;
                }
                match self.read_body() {
                    Some(()) => self.write(b"250 2.0.0 queued\r\n"),
                    None => Flow::Stop,
                }
            }
            "QUIT" => {
                let _ = self.write(b"221 2.0.0 bye\r\n");
                Flow::Stop
            }
            _ => self.write(b"500 5.5.2 command not recognised\r\n"),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> Flow {
        if bytes.is_empty() {
            return Flow::Continue;
        }
        match self
            .writer
            .write_all(bytes)
            .and_then(|_| self.writer.flush())
        {
            Ok(()) => Flow::Continue,
            Err(e) => {
                if !self.stopping() {
                    self.log(|l| l.errors.push(format!("write failed: {e}")));
                }
                Flow::Stop
            }
        }
    }

    /// Reads one command line, records it and returns it without its CRLF.
    fn read_command(&mut self) -> Option<String> {
        match self.read_line() {
            Line::Text(mut bytes) => {
                while matches!(bytes.last(), Some(b'\n' | b'\r')) {
                    bytes.pop();
                }
                let command = String::from_utf8_lossy(&bytes).into_owned();
                self.log(|l| l.commands.push(command.clone()));
                Some(command)
            }
            Line::Eof => {
                self.log(|l| l.client_closed = true);
                None
            }
            Line::Failed(e) => {
                if !self.stopping() {
                    self.log(|l| l.errors.push(e));
                }
                None
            }
        }
    }

    /// Reads a DATA body up to the `.` line and records it (dot-stuffed, as
    /// on the wire). `None` when the input ended first.
    fn read_body(&mut self) -> Option<()> {
        let mut body = Vec::new();
        loop {
            match self.read_line() {
                Line::Text(line) => {
                    if line == b".\r\n" {
                        self.log(|l| l.bodies.push(body));
                        return Some(());
                    }
                    body.extend_from_slice(&line);
                }
                Line::Eof => {
                    self.log(|l| {
                        l.client_closed = true;
                        l.errors.push(format!(
                            "end of input inside DATA after {} bytes",
                            body.len()
                        ));
                    });
                    return None;
                }
                Line::Failed(e) => {
                    if !self.stopping() {
                        self.log(|l| l.errors.push(format!("{e} inside DATA")));
                    }
                    return None;
                }
            }
        }
    }

    /// One line including its LF (a final line without LF at end of input
    /// counts as end of input).
    fn read_line(&mut self) -> Line {
        let mut line = Vec::new();
        loop {
            let available = match self.reader.fill_buf() {
                Ok([]) => return Line::Eof,
                Ok(buf) => buf,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Line::Failed(format!("read failed: {e}")),
            };
            match available.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    line.extend_from_slice(&available[..=i]);
                    self.reader.consume(i + 1);
                    return Line::Text(line);
                }
                None => {
                    let n = available.len();
                    line.extend_from_slice(available);
                    self.reader.consume(n);
                    if line.len() > MAX_LINE {
                        return Line::Failed(format!("line longer than {MAX_LINE} bytes"));
                    }
                }
            }
        }
    }
}

fn starts_with_ci(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len()
        && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
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

    fn converse(addr: SocketAddr, lines: &[&str]) -> String {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for l in lines {
            s.write_all(l.as_bytes()).unwrap();
        }
        s.shutdown(Shutdown::Write).unwrap();
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

    #[test]
    fn reply_bytes_normalises_line_ends() {
        for (text, want) in [
            ("250 ok", "250 ok\r\n"),
            ("250 ok\r\n", "250 ok\r\n"),
            ("250-a\n250 b", "250-a\r\n250 b\r\n"),
            ("250-a\r\n250 b\n", "250-a\r\n250 b\r\n"),
        ] {
            assert_eq!(reply_bytes(text), want.as_bytes(), "input {text:?}");
        }
    }
}
