//! Serving connections: the accept loop, and the per-connection player that
//! runs a script's steps, reads commands and DATA bodies and writes replies.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tls::Io;
use super::{reply_bytes, starts_with_ci, ConnLog, Script, Shared, Step};

/// Longest command line the server reads before giving up on the client:
/// far above RFC 5321's 512 octets, small enough to bound memory.
const MAX_LINE: usize = 64 * 1024;
/// A connection the client leaves idle this long is dropped, so a forgotten
/// connection never keeps a thread alive for good.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn accept_loop(listener: TcpListener, scripts: Vec<Script>, shared: Arc<Shared>) {
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
                let from_now = shared.from_now.lock().unwrap().clone();
                let script =
                    from_now.unwrap_or_else(|| scripts[played.min(scripts.len() - 1)].clone());
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
                        reader: BufReader::new(Io::Plain(
                            stream.try_clone().expect("clone stream"),
                        )),
                        tcp: stream,
                        index,
                        shared: shared.clone(),
                        pipelining: script.pipelining,
                        overrides: script.overrides.clone(),
                        greylist: script.greylist.clone(),
                        rcpt_limit: script.rcpt_limit.clone(),
                        accepted_rcpts: 0,
                    };
                    conn.play(&script.steps);
                    let _ = conn.reader.get_mut().flush();
                    // Before the client can see the close and connect again.
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                    let _ = conn.tcp.shutdown(Shutdown::Both);
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
    /// The connection's bytes both ways (plaintext or TLS), read through
    /// a buffer, written through `get_mut`.
    reader: BufReader<Io>,
    /// The socket itself, to shut down.
    tcp: TcpStream,
    index: usize,
    shared: Arc<Shared>,
    pipelining: bool,
    overrides: Vec<(String, Vec<u8>)>,
    greylist: Vec<(String, Vec<u8>)>,
    /// See [`Script::max_recipients`].
    rcpt_limit: Option<(usize, Vec<u8>)>,
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
            Step::StartTls { config } => self.start_tls(config),
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

    /// Reads STARTTLS, answers 220 and wraps the connection in TLS; the
    /// client's handshake comes with its next command. Anything else is a
    /// violation, as for [`Step::Expect`]; plaintext sent after STARTTLS
    /// too (RFC 3207 §5).
    fn start_tls(&mut self, config: &Arc<rustls::ServerConfig>) -> Flow {
        let Some(command) = self.read_command() else {
            self.log(|l| l.errors.push("expected STARTTLS, got end of input".into()));
            return Flow::Stop;
        };
        if !command.eq_ignore_ascii_case("STARTTLS") {
            self.log(|l| l.errors.push(format!("expected STARTTLS, got {command:?}")));
            let _ = self.write(
                b"503 5.5.1 hostile script expected STARTTLS
",
            );
            return Flow::Stop;
        }
        if let Flow::Stop = self.write(
            b"220 2.0.0 ready to start TLS
",
        ) {
            return Flow::Stop;
        }
        if !self.reader.buffer().is_empty() {
            self.log(|l| l.errors.push("plaintext pipelined after STARTTLS".into()));
            return Flow::Stop;
        }
        match self.reader.get_mut().start_tls(config) {
            Ok(()) => {
                self.log(|l| l.tls = true);
                Flow::Continue
            }
            Err(e) => {
                self.log(|l| l.errors.push(format!("cannot start TLS: {e}")));
                Flow::Stop
            }
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
                if let Some((limit, reply)) = &self.rcpt_limit {
                    if self.accepted_rcpts >= *limit {
                        let reply = reply.clone();
                        return self.write(&reply);
                    }
                }
                self.accepted_rcpts += 1;
                let accepted = command.to_owned();
                self.log(|l| l.accepted_rcpts.push(accepted));
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
        let io = self.reader.get_mut();
        match io.write_all(bytes).and_then(|_| io.flush()) {
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
                        let at = Instant::now();
                        self.log(|l| {
                            l.bodies.push(body);
                            l.body_times.push(at);
                        });
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
