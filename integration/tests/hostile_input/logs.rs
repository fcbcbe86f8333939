//! See hostile_input.rs: defect 14 (control characters from outside reach
//! the operator's terminal through the `term` log) and the parts of defect
//! 13 about the log and the settings (a record as large as a bad config
//! line; a `tls.ca_file` holding no certificate).

use std::path::Path;
use std::time::Duration;

use crate::common::{config, message, STOP_WITHIN};
use nix::sys::signal::Signal;
use postman_integration::postman::ConfigFile;
use postman_integration::{
    postman, Config, DnsServer, HostileServer, Script, TestNet, TestQueue, Zones,
};
use serde_json::Value;

/// The longest log line a test accepts: every text value of a record is
/// cut to 4 KiB, and the records these tests provoke have one long value.
const LINE_MAX: usize = 8 * 1024;

/// The config file for `cfg` with `log.format = "term"` (the default, which
/// the test config otherwise sets to JSON for its assertions).
fn term_config(cfg: &Config) -> ConfigFile {
    let json = cfg.to_toml();
    let term = json.replace("format = \"json\"", "format = \"term\"");
    assert_ne!(json, term, "the test config sets log.format");
    ConfigFile::with_text(&term)
}

/// A server's reply carrying ESC sequences, BEL, NUL, CR and a C1 control
/// (CSI, U+009B) reaches the `term` log escaped: none of those bytes is
/// written raw, and the escaped text is there to read. So does a queue
/// file name holding an ESC sequence.
#[test]
fn the_term_log_escapes_control_characters_from_outside() {
    let net = TestNet::new();
    let reply = "451 4.3.0 \x1b[31mred\x07bell\0nul\rcr\u{9b}2Jcsi";
    let _server = HostileServer::start(
        net.addr(1),
        vec![Script::new()
            .greet("220 hostile.test \x1b]0;pwned\x07 ready")
            .then_polite()
            .answer("RCPT", reply)],
    );
    let dns = DnsServer::start(Zones::new().mx_at("h.test", net.ipv4(1)));
    let queue = TestQueue::new();
    queue.add(
        "h.test",
        "m1",
        "a@src.test",
        &["u@h.test"],
        &message("esc1", "x\n"),
    );
    queue.add(
        "h.test",
        "name\x1b[2J\x07",
        "a@src.test",
        &["v@h.test"],
        &message("esc2", "x\n"),
    );
    let out = postman!().run_once(&term_config(&config(&queue, &net, &dns)));
    out.assert_success();
    let log = &out.stderr;
    for (raw, name) in [
        ('\x1b', "ESC"),
        ('\x07', "BEL"),
        ('\0', "NUL"),
        ('\r', "CR"),
        ('\u{9b}', "CSI (C1)"),
    ] {
        assert!(
            !log.contains(raw),
            "{name} written raw to the term log:\n{}",
            log.escape_debug()
        );
    }
    for escaped in [
        r"\x1b[31mred\x07bell\0nul\rcr\u{9b}2Jcsi",
        r"name\x1b[2J\x07",
    ] {
        assert!(
            log.contains(escaped),
            "the term log should show {escaped}:\n{log}"
        );
    }
}

/// The largest memory the process has held, from `/proc/<pid>/status`.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"))
}

/// The start of a long log, for a failure message.
fn head(text: &str) -> String {
    text.chars().take(2000).collect()
}

/// Whether a record says a reload was refused, naming `what` in its error.
fn refused(records: &[Value], what: &str) -> bool {
    records.iter().any(|r| {
        r["msg"].as_str().is_some_and(|m| m.contains("not valid"))
            && r["error"].as_str().is_some_and(|e| e.contains(what))
    })
}

/// A config file rewritten with a 10 MB bad line, then SIGHUP: the daemon
/// keeps running with its old settings and says why, in a record of a few
/// KB, not one as large as the line, and its memory stays modest.
#[test]
fn a_huge_bad_config_line_on_sighup_is_logged_short() {
    let net = TestNet::new();
    let server = HostileServer::polite(net.addr(1));
    let dns = DnsServer::start(Zones::new().mx_at("h.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let cfg = config(&queue, &net, &dns);
    let file = cfg.write();
    let mut daemon = postman!().spawn_daemon(&file);
    assert!(
        daemon.wait_for(Duration::from_secs(10), |r| r
            .iter()
            .any(|r| r["msg"] == "queue scanned")),
        "the daemon should start: {}",
        daemon.log_text()
    );
    let good = cfg.to_toml();
    // 10 MB, then a line still long but of a size any file may hold.
    for (n, size) in [(1, 10 << 20), (2, 600 << 10)] {
        std::fs::write(
            file.path(),
            format!("{good}\nbad{n} = {}\n", "x".repeat(size)),
        )
        .unwrap();
        daemon.signal(Signal::SIGHUP);
        let logged = daemon.wait_for(Duration::from_secs(20), |r| {
            r.iter()
                .filter(|r| r["msg"].as_str().is_some_and(|m| m.contains("not valid")))
                .count()
                >= n
        });
        let text = daemon.log_text();
        let longest = text.lines().map(str::len).max().unwrap_or(0);
        assert!(
            logged,
            "the bad reload {n} should be logged: {}",
            head(&text)
        );
        assert!(
            longest <= LINE_MAX,
            "a log line of {longest} bytes after a {size}-byte bad line: {}…",
            head(&text)
        );
        assert!(daemon.is_running(), "the daemon keeps running");
    }
    let peak = peak_rss_kib(daemon.pid());
    // It still delivers, with its old settings.
    queue.add(
        "h.test",
        "after",
        "a@src.test",
        &["u@h.test"],
        &message("after-bad-reload", "x\n"),
    );
    assert!(
        server.wait_bodies(1, Duration::from_secs(10)),
        "still delivering after the refused reloads: {}",
        daemon.log_text()
    );
    assert!(daemon.terminate(STOP_WITHIN).is_some(), "stopped");
    // Reading the 10 MB file once is the least it costs; every copy of it
    // in an error or a record was another 10 to 60 MB.
    assert!(
        peak < 48 * 1024,
        "peak RSS {peak} KiB after reloading a 10 MB bad config file"
    );
}

/// A file of something other than certificates (here shaped like
/// /etc/passwd).
fn not_a_ca_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("passwd");
    std::fs::write(
        &path,
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    )
    .unwrap();
    path
}

fn with_ca_file(cfg: &Config, path: &Path) -> Config {
    let mut cfg = cfg.clone();
    cfg.extra = format!("[tls]\nca_file = {:?}\n", path.display().to_string());
    cfg
}

/// `tls.ca_file` naming a file with no certificate in it is a config
/// error naming the key and the file: `check-config` fails, `run` does
/// not start, and a reload keeps the old settings and logs why. A file of
/// certificates is still taken.
#[test]
fn a_ca_file_without_a_certificate_is_refused() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new());
    let queue = TestQueue::new();
    let dir = tempfile::tempdir().unwrap();
    let passwd = not_a_ca_file(dir.path());
    let cfg = config(&queue, &net, &dns);
    let bad = with_ca_file(&cfg, &passwd).write();
    let names_it =
        |text: &str| text.contains("tls.ca_file") && text.contains(&*passwd.to_string_lossy());

    let checked = postman!().check_config(&bad);
    assert!(
        !checked.status.success() && names_it(&checked.stderr),
        "check-config should refuse it, naming key and file: {}\n{}",
        checked.status,
        checked.stderr
    );
    let run = postman!().run_once(&bad);
    assert!(
        !run.status.success() && names_it(&run.stderr),
        "run should refuse to start, naming key and file: {}\n{}",
        run.status,
        run.stderr
    );

    let cert = postman_integration::certs::TestCert::new(&["mx.h.test"]);
    let good = with_ca_file(&cfg, cert.cert_path()).write();
    let checked = postman!().check_config(&good);
    assert!(
        checked.status.success(),
        "a file of certificates is taken: {}",
        checked.stderr
    );

    let mut daemon = postman!().spawn_daemon(&good);
    assert!(
        daemon.wait_for(Duration::from_secs(10), |r| r
            .iter()
            .any(|r| r["msg"] == "queue scanned")),
        "the daemon should start: {}",
        daemon.log_text()
    );
    std::fs::write(good.path(), with_ca_file(&cfg, &passwd).to_toml()).unwrap();
    daemon.signal(Signal::SIGHUP);
    assert!(
        daemon.wait_for(Duration::from_secs(10), |r| refused(r, "tls.ca_file")),
        "the reload should be refused, naming tls.ca_file: {}",
        daemon.log_text()
    );
    assert!(daemon.is_running(), "the daemon keeps running");
    assert!(daemon.terminate(STOP_WITHIN).is_some(), "stopped");
}

/// The operator commands print what came from outside (file names,
/// addresses, a server's last error) escaped too: `postman queue` and
/// `postman queue --json` write no ESC, BEL or C1 control raw, the text
/// stays readable, and the JSON still parses to the exact name.
#[test]
fn the_operator_commands_escape_control_characters_from_outside() {
    let net = TestNet::new();
    let dns = DnsServer::start(Zones::new().mx_at("h.test", net.ipv4(1)));
    let queue = TestQueue::new();
    let name = "m\x1b[2J\x07\u{9b}x";
    queue.add(
        "h.test",
        name,
        "a@src.test",
        &["u@h.test"],
        &message("esc3", "x\n"),
    );
    let file = config(&queue, &net, &dns).write();
    let config_path = file.path().display().to_string();
    let postman = postman!();
    let human = postman.run(
        &["queue", "--config", &config_path],
        Duration::from_secs(20),
    );
    human.assert_success();
    for raw in ['\x1b', '\x07', '\u{9b}'] {
        assert!(
            !human.stdout.contains(raw),
            "postman queue wrote {raw:?} raw:\n{:?}",
            human.stdout
        );
    }
    assert!(
        human.stdout.contains("m\\x1b[2J\\x07\\u009bx"),
        "the escaped name is shown:\n{}",
        human.stdout
    );
    let json = postman.run(
        &["queue", "--json", "--config", &config_path],
        Duration::from_secs(20),
    );
    json.assert_success();
    assert!(
        !json.stdout.contains('\u{9b}') && !json.stdout.contains('\x1b'),
        "postman queue --json wrote a control raw:\n{:?}",
        json.stdout
    );
    let ids: Vec<String> = json
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .flat_map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            match v {
                Value::Array(items) => items,
                other => vec![other],
            }
        })
        .filter_map(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert!(
        ids.iter().any(|id| id.contains(name)),
        "the JSON keeps the exact name: {ids:?}"
    );
}
