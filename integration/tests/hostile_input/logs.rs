//! See hostile_input.rs: defect 14 (control characters from outside reach
//! the operator's terminal through the `term` log) and the parts of defect
//! 13 about the log and the settings (a record as large as a bad config
//! line; a `tls.ca_file` holding no certificate).

use crate::common::{config, message};
use postman_integration::postman::ConfigFile;
use postman_integration::{
    postman, Config, DnsServer, HostileServer, Script, TestNet, TestQueue, Zones,
};

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
