//! An MTA-STS policy server for the tests (`peers/mta_sts_server.py`,
//! Python's http.server and ssl): HTTPS on port 443 of a loopback address
//! of its own, serving a policy, or misbehaving as [`Behaviour`] says. It
//! reports every connection and request, so a test can tell that postman
//! asked, or that it did not.
//!
//! Port 443 is fixed by the policy's URL (RFC 8461 §3.3), so each server
//! takes a fresh loopback address (a [`TestNet`] block) and binding it
//! needs root, as the Postfix tests do.

use std::io::{BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::certs::TestCert;
use crate::net::TestNet;
use crate::smtp_sink::python;

/// The server script.
pub const SERVER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/mta_sts_server.py");

/// How long the server may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The server's stdout lines after READY, as they come.
type Events = Arc<Mutex<Vec<String>>>;

/// What the server answers to the policy request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200, `text/plain; charset=utf-8`, Content-Length, the policy.
    Ok,
    /// 200, no Content-Length, the policy, then TLS close_notify.
    EofNotify,
    /// 301 to another host.
    Redirect,
    /// 404.
    NotFound,
    /// 200 with `text/html`.
    Html,
    /// 200 with a body over 64 KiB.
    Oversized,
    /// 200, no Content-Length, the policy less its last line, then a TCP
    /// close without close_notify.
    Truncated,
}

impl Behaviour {
    fn arg(self) -> &'static str {
        match self {
            Behaviour::Ok => "ok",
            Behaviour::EofNotify => "eof-notify",
            Behaviour::Redirect => "redirect",
            Behaviour::NotFound => "not-found",
            Behaviour::Html => "html",
            Behaviour::Oversized => "oversized",
            Behaviour::Truncated => "truncated",
        }
    }
}

/// A running policy server; stopped when dropped.
pub struct PolicyServer {
    child: Child,
    ip: IpAddr,
    events: Events,
    _policy: tempfile::NamedTempFile,
}

impl PolicyServer {
    /// Serves `policy` with `cert` (its chain file) on port 443 of a fresh
    /// loopback address.
    pub fn start(cert: &TestCert, policy: &str, behaviour: Behaviour) -> PolicyServer {
        let file = tempfile::NamedTempFile::new().expect("a policy file");
        std::fs::write(file.path(), policy).expect("write the policy file");
        // Another test binary may hold port 443 on the same block: try
        // a few.
        let mut last = String::new();
        for _ in 0..4 {
            let ip = TestNet::new().ip(1);
            match PolicyServer::try_start(ip, cert, file.path().to_path_buf(), behaviour) {
                Ok((child, events)) => {
                    return PolicyServer {
                        child,
                        ip,
                        events,
                        _policy: file,
                    }
                }
                Err(why) => last = why,
            }
        }
        panic!(
            "the MTA-STS policy server did not start: {last}\n(it binds port 443 on a \
             loopback address: the tests run as root)"
        );
    }

    fn try_start(
        ip: IpAddr,
        cert: &TestCert,
        policy: PathBuf,
        behaviour: Behaviour,
    ) -> Result<(Child, Events), String> {
        let mut child = Command::new(python())
            .arg(SERVER_SCRIPT)
            .args(["--host", &ip.to_string(), "--port", "443"])
            .arg("--cert")
            .arg(cert.chain_path())
            .arg("--key")
            .arg(cert.key_path())
            .arg("--policy")
            .arg(&policy)
            .args(["--behaviour", behaviour.arg()])
            // It leaves when its stdin closes: it dies with the test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", python()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let events: Events = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = Arc::clone(&events);
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for line in lines.map_while(Result::ok) {
                kept.lock().expect("events lock").push(line);
            }
        });
        let ready = rx.recv_timeout(START_TIMEOUT);
        if matches!(&ready, Ok(Some(Ok(line))) if line == "READY") {
            if let Some(mut stderr) = child.stderr.take() {
                std::thread::spawn(move || {
                    let mut sink = Vec::new();
                    let _ = stderr.read_to_end(&mut sink);
                });
            }
            return Ok((child, events));
        }
        let _ = child.kill();
        let _ = child.wait();
        let mut err = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        Err(format!("on {ip}:443: first line {ready:?}; stderr:\n{err}"))
    }

    /// The address it listens on (port 443): `mta-sts.<domain>`'s A record.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> usize {
        self.events().iter().filter(|e| *e == "CONNECT").count()
    }

    /// The requests so far, `GET <host> <path>` each. The server reports
    /// them on its own time: a test that expects one waits for it
    /// ([`PolicyServer::wait_requests`]).
    pub fn requests(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e.starts_with("GET "))
            .collect()
    }

    /// The TLS reports posted so far: host, path, content type and body,
    /// each.
    pub fn posts(&self) -> Vec<(String, String, String, Vec<u8>)> {
        self.events()
            .into_iter()
            .filter_map(|e| {
                let rest = e.strip_prefix("POST ")?;
                let mut words = rest.split(' ');
                let (host, path, media) = (words.next()?, words.next()?, words.next()?);
                let body = crate::smtp_sink::base64_decode(words.next().unwrap_or(""))?;
                Some((host.to_owned(), path.to_owned(), media.to_owned(), body))
            })
            .collect()
    }

    /// Waits until `n` requests came or `timeout` passed; returns them.
    pub fn wait_requests(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.requests();
            if got.len() >= n || Instant::now() >= deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().expect("events lock").clone()
    }
}

impl Drop for PolicyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
