//! Running the postman binary under test: configs, `run --once` with a
//! deadline, the daemon, and its JSON log.
//!
//! The binary's path is only known inside the package's integration tests
//! (`CARGO_BIN_EXE_postman`), so [`Postman::new`] takes it and the
//! [`crate::postman!`] macro supplies it. Every run has a deadline: a hung
//! postman is killed and fails the test with its log, it never hangs CI.

mod config;
mod records;

pub use config::{Config, ConfigFile, SmtpTimeouts};
pub use records::{deliveries, parse_log, quarantines, Delivery, Quarantine};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default deadline of a `run --once`: every test keeps its timeouts at 1–3 s,
/// so a run that takes this long has hung.
pub const RUN_DEADLINE: Duration = Duration::from_secs(60);

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
