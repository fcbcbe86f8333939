//! Delivery status notifications (RFC 3464) parsed by Python's own `email`
//! package, a MIME parser independent of postman and of the Rust crates
//! its tests otherwise use: `peers/parse_dsn.py` reports what it saw as
//! JSON (see that script for the fields).

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::smtp_sink::python;

/// The helper script.
pub const PARSE_DSN_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers/parse_dsn.py");

/// `bytes` parsed by Python's `email` package
/// (`BytesParser(policy=email.policy.default)`), as `parse_dsn.py`
/// reports it. Panics, saying why, when Python cannot run it.
pub fn parse(bytes: &[u8]) -> Value {
    let mut child = Command::new(python())
        .arg(PARSE_DSN_SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PARSE_DSN_SCRIPT}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot give the DSN to {PARSE_DSN_SCRIPT}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{PARSE_DSN_SCRIPT}: {e}"));
    assert!(
        out.status.success(),
        "{PARSE_DSN_SCRIPT} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{PARSE_DSN_SCRIPT} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The value of the field `name` (case-insensitive) in a `[[name,
/// value], ...]` list of the report.
pub fn field<'a>(fields: &'a Value, name: &str) -> Option<&'a str> {
    fields.as_array()?.iter().find_map(|f| {
        let pair = f.as_array()?;
        let n = pair.first()?.as_str()?;
        if n.eq_ignore_ascii_case(name) {
            pair.get(1)?.as_str()
        } else {
            None
        }
    })
}
