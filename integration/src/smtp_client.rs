//! A scripted SMTP client (`peers/smtp_client.py`, Python's ssl and
//! hashlib) for proving a test server without postman: it connects
//! (optionally from a chosen source address, optionally with implicit
//! TLS), runs [`Step`]s (EHLO, STARTTLS, AUTH PLAIN / LOGIN /
//! SCRAM-SHA-256, any command, DATA, QUIT) and returns every reply.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;

use crate::smtp_sink::python;

/// The client script, found beside this crate's sources.
pub const CLIENT_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/smtp_client.py");

/// One thing the client does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `EHLO <name>`.
    Ehlo(String),
    /// `STARTTLS`, and the TLS handshake after a 220.
    StartTls,
    /// `AUTH` with this mechanism (`PLAIN`, `LOGIN`, `SCRAM-SHA-256`, or
    /// any other name, sent bare), login name and password.
    Auth(String, String, String),
    /// Any command line, sent as given.
    Command(String),
    /// `DATA`, then this content (dot-stuffed, CRLF) after a 354.
    Data(String),
    /// `QUIT`.
    Quit,
}

impl Step {
    /// [`Step::Auth`] from string slices.
    pub fn auth(mechanism: &str, user: &str, password: &str) -> Step {
        Step::Auth(mechanism.into(), user.into(), password.into())
    }

    /// [`Step::Command`] from a string slice.
    pub fn command(line: &str) -> Step {
        Step::Command(line.into())
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Step::Ehlo(name) => json!(["ehlo", name]),
            Step::StartTls => json!(["starttls"]),
            Step::Auth(mechanism, user, password) => json!(["auth", mechanism, user, password]),
            Step::Command(line) => json!(["cmd", line]),
            Step::Data(content) => json!(["data", content]),
            Step::Quit => json!(["quit"]),
        }
    }
}

/// Where and how the client connects.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// The server.
    pub connect: SocketAddr,
    /// Bind the client's socket to this local address first.
    pub source: Option<IpAddr>,
    /// TLS from the first byte (RFC 8314), not after STARTTLS.
    pub implicit_tls: bool,
    /// The certificate to trust (PEM); needed for any TLS.
    pub ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry.
    pub server_name: String,
    /// What to do, in order.
    pub steps: Vec<Step>,
}

impl ClientPlan {
    /// A plan for `connect` that trusts `ca_file` for `server_name`.
    pub fn new(connect: SocketAddr, ca_file: PathBuf, server_name: &str) -> ClientPlan {
        ClientPlan {
            connect,
            source: None,
            implicit_tls: false,
            ca_file: Some(ca_file),
            server_name: server_name.into(),
            steps: Vec::new(),
        }
    }

    /// Runs the plan; panics if the client itself fails (not when the
    /// server refuses: that is in the transcript).
    pub fn run(&self) -> Transcript {
        let plan = serde_json::json!({
            "connect": self.connect.to_string(),
            "source": self.source.map(|s| s.to_string()),
            "implicit_tls": self.implicit_tls,
            "cafile": self.ca_file,
            "server_name": self.server_name,
            "steps": self.steps.iter().map(Step::to_json).collect::<Vec<_>>(),
        });
        let python = python();
        let out = Command::new(&python)
            .arg(CLIENT_SCRIPT)
            .arg(plan.to_string())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {python:?} for the SMTP client: {e}"));
        if !out.status.success() {
            panic!(
                "the SMTP client failed ({}) on {plan}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "the SMTP client printed no transcript ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

/// What the server answered.
#[derive(Debug, Clone, Deserialize)]
pub struct Transcript {
    /// The greeting's lines.
    pub greeting: Option<Vec<String>>,
    /// Each step run, with its replies.
    pub steps: Vec<StepReplies>,
    /// Why the client stopped early: the server closed the connection.
    pub closed: Option<String>,
}

/// The replies to one step (AUTH may take several, e.g. `334` then `235`).
#[derive(Debug, Clone, Deserialize)]
pub struct StepReplies {
    /// The step's kind (`ehlo`, `starttls`, `auth`, `cmd`, `data`, `quit`).
    pub step: String,
    /// Each reply, as its lines.
    pub replies: Vec<Vec<String>>,
}

impl Transcript {
    /// The last line of the last reply to step `n` (0-based): for a
    /// one-line reply, the whole reply (`235 2.7.0 Authentication
    /// successful`).
    pub fn last(&self, n: usize) -> &str {
        self.steps
            .get(n)
            .and_then(|s| s.replies.last())
            .and_then(|r| r.last())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no reply to step {n}: {self:#?}"))
    }

    /// Every line of the last reply to step `n`.
    pub fn lines(&self, n: usize) -> &[String] {
        self.steps
            .get(n)
            .and_then(|s| s.replies.last())
            .unwrap_or_else(|| panic!("no reply to step {n}: {self:#?}"))
    }
}
