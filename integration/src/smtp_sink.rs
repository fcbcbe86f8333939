//! aiosmtpd, a third-party SMTP server (RFC 5321), as a test peer.
//!
//! `peers/aiosmtpd_sink.py` runs aiosmtpd bound to one `ip:port` and saves
//! each accepted message as a JSON file; this module starts it as a child
//! process, reads what it saved and kills it on drop. A machine without
//! Python 3 or aiosmtpd fails the test with a message saying what to install:
//! an end-to-end test that silently skips proves nothing.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The sink script, found beside this crate's sources.
pub const SINK_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/aiosmtpd_sink.py");

/// How long the sink may take to start listening (Python start-up and the
/// aiosmtpd import take a few hundred milliseconds; CI machines are slow).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One message as aiosmtpd received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The MAIL FROM address, without angle brackets ("" for `<>`).
    pub mail_from: String,
    /// The accepted RCPT TO addresses, in order.
    pub rcpt_tos: Vec<String>,
    /// The client's `ip:port`.
    pub peer: String,
    /// The EHLO/HELO name the client gave.
    pub helo: String,
    /// The DATA content: un-dot-stuffed, CRLF line ends, ending with the CRLF
    /// of the last line, without the `.` terminator line.
    pub data: Vec<u8>,
    /// The MAIL parameters, upper-cased (`SIZE=123`, `BODY=8BITMIME`).
    pub mail_options: Vec<String>,
    /// The TLS the message came over, as Python's ssl module saw it:
    /// (`TLSv1.3`, cipher name); `None` in plaintext.
    pub tls: Option<(String, String)>,
    /// The DNS names of the client certificate the client showed (only
    /// asked for with [`SinkOptions::client_ca`]).
    pub client_names: Vec<String>,
    /// Input the server already held, unread, when it handled MAIL: the
    /// RCPT commands when the client pipelined them.
    pub after_mail: Vec<u8>,
}

/// How the sink runs.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Offer STARTTLS with this certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Require a client certificate issued by these roots (PEM).
    pub client_ca: Option<PathBuf>,
}

/// A running aiosmtpd; killed when dropped.
pub struct AiosmtpdSink {
    child: Child,
    dir: PathBuf,
    ip: IpAddr,
    port: u16,
}

/// The Python interpreter: `POSTMAN_TEST_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("POSTMAN_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

impl AiosmtpdSink {
    /// Starts aiosmtpd on `ip:port`, saving messages into `dir`, and waits
    /// until it listens. Panics, naming the fix, when it cannot start.
    pub fn start(ip: IpAddr, port: u16, dir: &Path) -> AiosmtpdSink {
        AiosmtpdSink::start_with(ip, port, dir, &SinkOptions::default())
    }

    /// [`start`](Self::start) with STARTTLS and PIPELINING as `options` say.
    pub fn start_with(ip: IpAddr, port: u16, dir: &Path, options: &SinkOptions) -> AiosmtpdSink {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|e| panic!("create sink dir {}: {e}", dir.display()));
        let python = python();
        let mut command = Command::new(&python);
        command
            .arg(SINK_SCRIPT)
            .arg("--host")
            .arg(ip.to_string())
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir);
        if let Some((cert, key)) = &options.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        if options.pipelining {
            command.arg("--pipelining");
        }
        if let Some(ca) = &options.client_ca {
            command.arg("--tls-client-ca").arg(ca);
        }
        let mut child = command
            // The sink leaves when its stdin closes, so it dies with us even
            // when a panic skips our Drop.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {python:?} for the aiosmtpd sink: {e}; the end-to-end tests need \
                     Python 3 with aiosmtpd (`python3 -m pip install aiosmtpd`, or run \
                     scripts/test.sh, which installs it)"
                )
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let started = Instant::now();
        let ready = rx.recv_timeout(START_TIMEOUT);
        let ok = matches!(&ready, Ok(Some(Ok(line))) if line.starts_with("READY"));
        if !ok {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = stderr.read_to_string(&mut err);
            }
            panic!(
                "aiosmtpd sink did not start on {ip}:{port} within {:?} (first stdout line: \
                 {ready:?}); stderr:\n{err}\nThe end-to-end tests need Python 3 with aiosmtpd: \
                 `python3 -m pip install aiosmtpd` (scripts/test.sh does it).",
                started.elapsed()
            );
        }
        // Drain stderr in the background (aiosmtpd logs every connection).
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                let mut sink = Vec::new();
                let _ = BufReader::new(stderr).read_to_end(&mut sink);
            });
        }
        AiosmtpdSink {
            child,
            dir: dir.to_path_buf(),
            ip,
            port,
        }
    }

    /// The address aiosmtpd listens on.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The port aiosmtpd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, in arrival order.
    pub fn messages(&self) -> Vec<Received> {
        read_dir_messages(&self.dir)
    }

    /// Waits until at least `n` messages have arrived or `timeout` passed;
    /// returns what arrived.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for AiosmtpdSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the `*.json` files the sink wrote in `dir`, sorted by name.
pub fn read_dir_messages(dir: &Path) -> Vec<Received> {
    let mut names: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => panic!("read sink dir {}: {e}", dir.display()),
    };
    names.sort();
    names.iter().map(|p| parse_received(p)).collect()
}

fn parse_received(path: &Path) -> Received {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read sink file {}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("sink file {} is not JSON: {e}", path.display()));
    let s = |key: &str| v[key].as_str().unwrap_or_default().to_string();
    Received {
        mail_from: s("mail_from"),
        rcpt_tos: v["rcpt_tos"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        peer: s("peer"),
        helo: s("helo"),
        data: base64_decode(&s("data_b64"))
            .unwrap_or_else(|| panic!("bad base64 in sink file {}", path.display())),
        mail_options: v["mail_options"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        tls: v["tls"].as_object().map(|tls| {
            let field = |key: &str| tls.get(key).and_then(|x| x.as_str()).unwrap_or_default();
            (field("version").to_owned(), field("cipher").to_owned())
        }),
        after_mail: base64_decode(&s("after_mail_b64")).unwrap_or_default(),
        client_names: v["tls"]["client_names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Standard base64 (RFC 4648 §4) with padding; `None` on bad input.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c)? << (18 - 6 * i);
        }
        let n = chunk.len() - 1;
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_every_padding() {
        for (text, want) in [
            ("", &b""[..]),
            ("YQ==", b"a"),
            ("YWI=", b"ab"),
            ("YWJj", b"abc"),
            ("YWJjZA==", b"abcd"),
            ("Lg0KLi4NCg==", b".\r\n..\r\n"),
        ] {
            assert_eq!(base64_decode(text).as_deref(), Some(want), "input {text:?}");
        }
        assert_eq!(base64_decode("Y"), None, "input \"Y\"");
        assert_eq!(base64_decode("Y!=="), None, "input \"Y!==\"");
    }
}
