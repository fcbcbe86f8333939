//! Running the postman binary under test: configs, `run --once` with a
//! deadline, the daemon, and its JSON log.
//!
//! The binary's path is only known inside the package's integration tests
//! (`CARGO_BIN_EXE_postman`), so [`Postman::new`] takes it and the
//! [`crate::postman!`] macro supplies it. Every run has a deadline: a hung
//! postman is killed and fails the test with its log, it never hangs CI.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default deadline of a `run --once`: every test keeps its timeouts at 1–3 s,
/// so a run that takes this long has hung.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// `smtp.timeouts.*`, in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpTimeouts {
    pub connect: u64,
    pub greeting: u64,
    pub ehlo: u64,
    pub mail: u64,
    pub rcpt: u64,
    pub data: u64,
    pub data_block: u64,
    pub data_done: u64,
    pub rset: u64,
    pub quit: u64,
}

impl SmtpTimeouts {
    /// Every timeout set to `secs`.
    pub fn all(secs: u64) -> SmtpTimeouts {
        SmtpTimeouts {
            connect: secs,
            greeting: secs,
            ehlo: secs,
            mail: secs,
            rcpt: secs,
            data: secs,
            data_block: secs,
            data_done: secs,
            rset: secs,
            quit: secs,
        }
    }
}

/// A postman configuration, written as TOML by [`Config::write`].
///
/// [`Config::new`] gives settings for fast tests: short timeouts, a single
/// DNS attempt, a backoff long enough that nothing deferred is retried
/// within one test.
#[derive(Debug, Clone)]
pub struct Config {
    /// `application.maildir.path`
    pub maildir: PathBuf,
    /// `application.server_port`
    pub server_port: u16,
    /// `application.hostname` (the EHLO name)
    pub hostname: String,
    /// `application.threads`
    pub threads: u32,
    /// `dns.nameservers`
    pub nameservers: Vec<SocketAddr>,
    /// `dns.timeout`, seconds
    pub dns_timeout: u64,
    /// `dns.attempts`
    pub dns_attempts: u32,
    /// `dns.ip_preference`: `any`, `ipv4` or `ipv6`.
    pub ip_preference: String,
    /// `smtp.timeouts.*`
    pub timeouts: SmtpTimeouts,
    /// `delivery.max_connections`
    pub max_connections: u32,
    /// `delivery.max_connections_per_domain`
    pub max_connections_per_domain: u32,
    /// `delivery.initial_connections_per_domain`
    pub initial_connections_per_domain: u32,
    /// `delivery.max_messages_per_connection`
    pub max_messages_per_connection: u32,
    /// `delivery.max_mx_addresses`
    pub max_mx_addresses: u32,
    /// `delivery.retry.min_backoff`, seconds
    pub min_backoff: u64,
    /// `delivery.retry.max_backoff`, seconds; `None` leaves postman's default.
    pub max_backoff: Option<u64>,
    /// `delivery.max_queue_lifetime`, seconds; `None` leaves postman's default.
    pub max_queue_lifetime: Option<u64>,
    /// `delivery.delay_warning`, seconds; `None` leaves postman's default.
    pub delay_warning: Option<u64>,
    /// `application.local_domains`; `None` leaves postman's default (the
    /// hostname, `postman.test`).
    pub local_domains: Option<Vec<String>>,
    /// `log.metrics_interval`, seconds
    pub metrics_interval: u64,
    /// `queue.rescan_interval`, seconds
    pub rescan_interval: u64,
    /// Raw TOML appended after the generated text (to test config errors).
    pub extra: String,
}

impl Config {
    /// Settings for a test: queue at `maildir`, SMTP servers on `port`,
    /// the test DNS server at `dns`.
    pub fn new(maildir: &Path, port: u16, dns: SocketAddr) -> Config {
        Config {
            maildir: maildir.to_path_buf(),
            server_port: port,
            hostname: "postman.test".to_string(),
            threads: 2,
            nameservers: vec![dns],
            dns_timeout: 1,
            dns_attempts: 1,
            ip_preference: "any".to_string(),
            timeouts: SmtpTimeouts::all(3),
            max_connections: 20,
            max_connections_per_domain: 4,
            initial_connections_per_domain: 5,
            max_messages_per_connection: 100,
            max_mx_addresses: 5,
            min_backoff: 300,
            max_backoff: None,
            max_queue_lifetime: None,
            delay_warning: None,
            local_domains: None,
            metrics_interval: 60,
            rescan_interval: 1,
            extra: String::new(),
        }
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        let t = &self.timeouts;
        let nameservers = self
            .nameservers
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        // Optional settings: a line each when set, nothing otherwise.
        let optional = |key: &str, value: Option<String>| {
            value.map_or_else(String::new, |v| format!("{key} = {v}\n"))
        };
        let local_domains = optional(
            "local_domains",
            self.local_domains.as_ref().map(|domains| {
                let list: Vec<String> = domains.iter().map(|d| toml_string(d)).collect();
                format!("[{}]", list.join(", "))
            }),
        );
        let lifetime = optional(
            "max_queue_lifetime",
            self.max_queue_lifetime.map(|s| s.to_string()),
        );
        let delay_warning = optional("delay_warning", self.delay_warning.map(|s| s.to_string()));
        let max_backoff = optional("max_backoff", self.max_backoff.map(|s| s.to_string()));
        format!(
            r#"# written by postman-integration for one test
[application]
server_port = {port}
hostname = {hostname}
threads = {threads}
{local_domains}
[application.maildir]
path = {maildir}

[dns]
nameservers = [{nameservers}]
timeout = {dns_timeout}
attempts = {dns_attempts}
ip_preference = {ip_preference}

[smtp.timeouts]
connect = {connect}
greeting = {greeting}
ehlo = {ehlo}
mail = {mail}
rcpt = {rcpt}
data = {data}
data_block = {data_block}
data_done = {data_done}
rset = {rset}
quit = {quit}

[delivery]
max_connections = {max_connections}
max_connections_per_domain = {max_per_domain}
initial_connections_per_domain = {initial_per_domain}
max_messages_per_connection = {max_per_conn}
max_mx_addresses = {max_mx_addresses}
{lifetime}{delay_warning}
[delivery.retry]
min_backoff = {min_backoff}
{max_backoff}
[log]
format = "json"
metrics_interval = {metrics_interval}

[queue]
rescan_interval = {rescan_interval}
{extra}"#,
            port = self.server_port,
            hostname = toml_string(&self.hostname),
            threads = self.threads,
            maildir = toml_string(&self.maildir.to_string_lossy()),
            dns_timeout = self.dns_timeout,
            dns_attempts = self.dns_attempts,
            ip_preference = toml_string(&self.ip_preference),
            connect = t.connect,
            greeting = t.greeting,
            ehlo = t.ehlo,
            mail = t.mail,
            rcpt = t.rcpt,
            data = t.data,
            data_block = t.data_block,
            data_done = t.data_done,
            rset = t.rset,
            quit = t.quit,
            max_connections = self.max_connections,
            max_per_domain = self.max_connections_per_domain,
            initial_per_domain = self.initial_connections_per_domain,
            max_per_conn = self.max_messages_per_connection,
            max_mx_addresses = self.max_mx_addresses,
            min_backoff = self.min_backoff,
            metrics_interval = self.metrics_interval,
            rescan_interval = self.rescan_interval,
            extra = self.extra,
        )
    }

    /// Writes the TOML into a new temporary directory.
    pub fn write(&self) -> ConfigFile {
        ConfigFile::with_text(&self.to_toml())
    }
}

/// A TOML basic string (RFC-less, but TOML 1.0 §String escapes).
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config file in its own temporary directory, removed when the last
/// clone is dropped (a [`Daemon`] keeps one, so the file outlives a
/// `spawn_daemon(&config.write())` temporary).
#[derive(Clone)]
pub struct ConfigFile {
    _dir: Arc<tempfile::TempDir>,
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` as `postman.toml` in a new temporary directory.
    pub fn with_text(text: &str) -> ConfigFile {
        let dir = tempfile::Builder::new()
            .prefix("postman-config-")
            .tempdir()
            .expect("create a temporary config dir");
        let path = dir.path().join("postman.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        ConfigFile {
            _dir: Arc::new(dir),
            path,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The binary under test.
#[derive(Debug, Clone)]
pub struct Postman {
    bin: PathBuf,
}

/// What a finished run printed and how it ended.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunOutput {
    /// Every JSON object logged on stderr, in order.
    pub fn records(&self) -> Vec<Value> {
        parse_log(&self.stderr)
    }

    /// The per-recipient delivery records.
    pub fn deliveries(&self) -> Vec<Delivery> {
        deliveries(&self.records())
    }

    /// How many records have a `msg` containing `text`.
    pub fn count_records(&self, text: &str) -> usize {
        self.records()
            .iter()
            .filter(|r| r["msg"].as_str().is_some_and(|m| m.contains(text)))
            .count()
    }

    /// The largest `field` of `actor`'s `metrics` records (every worker's
    /// for `"worker"`), 0 when there is none.
    pub fn max_metric(&self, actor: &str, field: &str) -> u64 {
        self.records()
            .iter()
            .filter(|r| r["msg"] == "metrics" && r["actor"] == actor)
            .filter_map(|r| r[field].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// The quarantine records.
    pub fn quarantines(&self) -> Vec<Quarantine> {
        quarantines(&self.records())
    }

    /// Panics, with the log, unless the process exited 0.
    pub fn assert_success(&self) -> &RunOutput {
        assert!(
            self.status.success(),
            "postman exited with {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.elapsed,
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Postman {
    /// The binary at `bin` (see the [`crate::postman!`] macro).
    pub fn new(bin: impl Into<PathBuf>) -> Postman {
        Postman { bin: bin.into() }
    }

    /// The binary's path.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// Writes `config` into a temporary directory.
    pub fn write_config(config: &Config) -> ConfigFile {
        config.write()
    }

    /// A command for the binary with `args`, environment cleaned of
    /// `POSTMAN_*` variables (figment would layer them over the file).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("POSTMAN_") {
                cmd.env_remove(key);
            }
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs `postman run --config FILE --once` with [`RUN_DEADLINE`].
    pub fn run_once(&self, config: &ConfigFile) -> RunOutput {
        self.run_once_within(config, RUN_DEADLINE)
    }

    /// Runs `postman run --config FILE --once`; kills it and panics when it
    /// takes longer than `deadline`.
    pub fn run_once_within(&self, config: &ConfigFile, deadline: Duration) -> RunOutput {
        let path = config.path().to_string_lossy().into_owned();
        self.run(&["run", "--config", &path, "--once"], deadline)
    }

    /// Runs `postman check-config --config FILE`.
    pub fn check_config(&self, config: &ConfigFile) -> RunOutput {
        let path = config.path().to_string_lossy().into_owned();
        self.run(
            &["check-config", "--config", &path],
            Duration::from_secs(20),
        )
    }

    /// Runs the binary with `args`; kills it and panics (with what it
    /// printed) when it takes longer than `deadline`.
    pub fn run(&self, args: &[&str], deadline: Duration) -> RunOutput {
        let started = Instant::now();
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {args:?}: {e}", self.bin.display()));
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let status = wait_until(&mut child, started + deadline);
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            let out = stdout.join().unwrap_or_default();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "postman {args:?} did not exit within {deadline:?}: killed\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
            );
        };
        RunOutput {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    /// Runs the binary with `args` and `input` on its standard input; kills
    /// it and panics when it takes longer than `deadline` (see [`Postman::run`]).
    pub fn run_with_input(&self, args: &[&str], input: &[u8], deadline: Duration) -> RunOutput {
        use std::io::Write as _;
        let started = Instant::now();
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} {args:?}: {e}", self.bin.display()));
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let input = input.to_vec();
        // A writer thread, so a child that does not read cannot block the test.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let status = wait_until(&mut child, started + deadline);
        let _ = writer.join();
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("postman {args:?} did not exit within {deadline:?}: killed");
        };
        RunOutput {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
            elapsed: started.elapsed(),
        }
    }

    /// Starts `postman run --config FILE` as a daemon.
    pub fn spawn_daemon(&self, config: &ConfigFile) -> Daemon {
        let path = config.path().to_string_lossy().into_owned();
        let mut child = self
            .command(&["run", "--config", &path])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} as a daemon: {e}", self.bin.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let stderr = child.stderr.take().expect("piped stderr");
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    match line {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            })
        };
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        Daemon {
            child,
            _config: config.clone(),
            lines,
            reader: Some(reader),
            _stdout: Some(stdout),
            exited: None,
        }
    }
}

/// Reads a pipe to its end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` until `deadline`; `None` if it is still running.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("waiting for postman: {e}"),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `postman run` (no `--once`); killed when dropped.
pub struct Daemon {
    child: Child,
    _config: ConfigFile,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
    _stdout: Option<JoinHandle<String>>,
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stderr lines so far.
    pub fn log_text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Every JSON object logged so far.
    pub fn records(&self) -> Vec<Value> {
        parse_log(&self.log_text())
    }

    /// The delivery records logged so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        deliveries(&self.records())
    }

    /// Polls until `done(records)` holds or `timeout` passes; returns
    /// whether it held.
    pub fn wait_for(&self, timeout: Duration, mut done: impl FnMut(&[Value]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.records()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` delivery records were logged (or `timeout`)
    /// and returns the delivery records.
    pub fn wait_for_deliveries(&self, n: usize, timeout: Duration) -> Vec<Delivery> {
        self.wait_for(timeout, |r| deliveries(r).len() >= n);
        self.deliveries()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            _ => true,
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap_or_else(|e| panic!("kill -{signal} {pid}: {e}"));
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit; `None` when the
    /// process was still running then (it is killed before returning).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.stop_with(nix::sys::signal::Signal::SIGTERM, timeout)
    }

    /// Sends `signal` and waits up to `timeout` for the exit; `None` when the
    /// process was still running then (it is killed before returning).
    pub fn stop_with(
        &mut self,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        self.signal(signal);
        let status = wait_until(&mut self.child, Instant::now() + timeout);
        match status {
            Some(s) => {
                self.exited = Some(s);
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
            }
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One JSON object per line; other lines (a panic message, say) are skipped.
pub fn parse_log(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect()
}

/// One `"msg":"delivery"` record: the fate of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub queue_id: String,
    pub domain: String,
    pub to: String,
    /// `host[ip]:port`, or `none`.
    pub relay: String,
    pub delay: f64,
    /// `sent`, `deferred` or `bounced`.
    pub status: String,
    /// The reply code; `None` when there was no reply (absent or 0).
    pub code: Option<u16>,
    pub reply: String,
    /// The enhanced status code (`dsn`).
    pub dsn: String,
    /// How TLS was used (`tls`): `none`, or protocol, cipher and
    /// `verified`/`unverified`; empty when the record has no such field.
    pub tls: String,
}

/// One `"msg":"quarantined"` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub queue_id: String,
    pub domain: String,
    pub reason: String,
}

fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The delivery records among `records`.
pub fn deliveries(records: &[Value]) -> Vec<Delivery> {
    records
        .iter()
        .filter(|r| r["msg"] == "delivery")
        .map(|r| Delivery {
            queue_id: text(r, "queue_id"),
            domain: text(r, "domain"),
            to: text(r, "to"),
            relay: text(r, "relay"),
            delay: match &r["delay"] {
                Value::Number(n) => n.as_f64().unwrap_or(-1.0),
                Value::String(s) => s.trim_end_matches('s').parse().unwrap_or(-1.0),
                _ => -1.0,
            },
            status: text(r, "status"),
            code: match &r["code"] {
                Value::Number(n) => n.as_u64().map(|c| c as u16),
                Value::String(s) => s.parse().ok(),
                _ => None,
            }
            .filter(|&c| c != 0),
            reply: text(r, "reply"),
            dsn: text(r, "dsn"),
            tls: text(r, "tls"),
        })
        .collect()
}

/// The quarantine records among `records`.
pub fn quarantines(records: &[Value]) -> Vec<Quarantine> {
    records
        .iter()
        .filter(|r| r["msg"] == "quarantined")
        .map(|r| Quarantine {
            queue_id: text(r, "queue_id"),
            domain: text(r, "domain"),
            reason: text(r, "reason"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_toml_parses_and_has_every_contract_key() {
        let c = Config::new(
            Path::new("/tmp/q \"x\""),
            2525,
            "127.0.0.1:5353".parse().unwrap(),
        );
        let v: toml::Value = toml::from_str(&c.to_toml()).expect("generated TOML parses");
        assert_eq!(
            v["application"]["maildir"]["path"].as_str(),
            Some("/tmp/q \"x\"")
        );
        assert_eq!(v["application"]["server_port"].as_integer(), Some(2525));
        assert_eq!(v["dns"]["nameservers"][0].as_str(), Some("127.0.0.1:5353"));
        for key in [
            "connect",
            "greeting",
            "ehlo",
            "mail",
            "rcpt",
            "data",
            "data_block",
            "data_done",
            "rset",
            "quit",
        ] {
            assert_eq!(
                v["smtp"]["timeouts"][key].as_integer(),
                Some(3),
                "smtp.timeouts.{key}"
            );
        }
        assert_eq!(v["log"]["format"].as_str(), Some("json"));
        assert!(v["delivery"]["retry"]["min_backoff"].is_integer());
        assert!(v["queue"]["rescan_interval"].is_integer());
    }

    #[test]
    fn optional_settings_are_written_only_when_set() {
        let mut c = Config::new(Path::new("/q"), 2525, "127.0.0.1:5353".parse().unwrap());
        let v: toml::Value = toml::from_str(&c.to_toml()).expect("generated TOML parses");
        assert!(v["delivery"].get("max_queue_lifetime").is_none(), "{v}");
        assert!(v["application"].get("local_domains").is_none(), "{v}");
        c.max_backoff = Some(7);
        c.max_queue_lifetime = Some(60);
        c.delay_warning = Some(30);
        c.local_domains = Some(vec!["local.test".into(), "other.test".into()]);
        let v: toml::Value = toml::from_str(&c.to_toml()).expect("generated TOML parses");
        assert_eq!(v["delivery"]["retry"]["max_backoff"].as_integer(), Some(7));
        assert_eq!(v["delivery"]["max_queue_lifetime"].as_integer(), Some(60));
        assert_eq!(v["delivery"]["delay_warning"].as_integer(), Some(30));
        let domains: Vec<&str> = v["application"]["local_domains"]
            .as_array()
            .expect("local_domains is an array")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(domains, ["local.test", "other.test"]);
    }

    #[test]
    fn log_lines_become_delivery_records() {
        let log = concat!(
            "not json\n",
            r#"{"msg":"delivery","queue_id":"q1","domain":"d.test","to":"a@d.test","relay":"mx[127.0.0.1]:25","delay":0.25,"status":"sent","code":250,"reply":"250 ok"}"#,
            "\n",
            r#"{"msg":"delivery","queue_id":"q2","domain":"d.test","to":"b@d.test","relay":"none","delay":1,"status":"deferred","code":0,"reply":"connection refused"}"#,
            "\n",
            r#"{"msg":"quarantined","queue_id":"bad","domain":"d.test","reason":"no X-Postman-To"}"#,
            "\n"
        );
        let records = parse_log(log);
        assert_eq!(records.len(), 3);
        let d = deliveries(&records);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].code, Some(250));
        assert_eq!(d[0].delay, 0.25);
        assert_eq!(d[1].code, None, "code 0 means no reply");
        assert_eq!(d[1].relay, "none");
        assert_eq!(quarantines(&records)[0].reason, "no X-Postman-To");
    }
}
