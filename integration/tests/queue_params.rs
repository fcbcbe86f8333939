//! End to end: the sender's DSN parameters (RFC 3461) and REQUIRETLS
//! (RFC 8689) in the queue, through the real `postman` binary.
//!
//! * A first attempt that delivers one recipient and defers others leaves
//!   a state file that still carries each deferred recipient's NOTIFY and
//!   ORCPT and the message's RET and ENVID; the next attempt delivers from
//!   it.
//! * `postman enqueue --notify --ret --envid --requiretls` writes them (the
//!   ENVID typed as text, queued as xtext), refuses a bad value naming its
//!   option, and `postman queue` and `--json` show them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{message, Setup};
use postman::queue::params::{MsgParams, RcptParams, Ret};
use postman::queue::{parse_envelope, Envelope};
use postman_integration::hostile::Script;
use postman_integration::queue::{make_due, state_file_of, unix_now};

/// A queue file as a receiving server writes one: LF line ends, the
/// message fields, one field per recipient with parameters, the others
/// in a list.
fn with_params(date: u64, to: &str) -> Vec<u8> {
    let mut file = format!(
        "X-Postman-From: <s@src.test>\n\
         X-Postman-Date: {date}\n\
         X-Postman-Ret: FULL\n\
         X-Postman-Envid: QQ314159+2Bx\n"
    );
    file.push_str(to);
    file.push_str("\n\n");
    let mut bytes = file.into_bytes();
    bytes.extend_from_slice(&message("params", "body\n"));
    bytes
}

/// The envelope in force of the queued file at `path`: its state file's
/// when it has one; with the state file's text.
fn in_force(path: &Path) -> (Envelope, String) {
    let state = state_file_of(path)
        .unwrap_or_else(|| panic!("{} has no state file of its own", path.display()));
    let bytes = std::fs::read(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()));
    let env = parse_envelope(&bytes)
        .unwrap_or_else(|e| panic!("the state file {} does not parse: {e}", state.display()));
    (env, String::from_utf8_lossy(&bytes).into_owned())
}

fn params(text: &str) -> RcptParams {
    RcptParams::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn a_partial_delivery_keeps_the_deferred_recipients_parameters() {
    let s = Setup::new(vec![Script::polite()
        .answer("RCPT TO:<b@", "451 4.2.1 mailbox busy")
        .answer("RCPT TO:<c@", "451 4.2.1 mailbox busy")]);
    let path = s.queue.add_raw(
        "d1.test",
        "m1",
        &with_params(
            unix_now(),
            "X-Postman-To: <a@d1.test> NOTIFY=FAILURE ORCPT=rfc822;a@d1.test\n\
             X-Postman-To: <b@d1.test> NOTIFY=NEVER ORCPT=rfc822;orig+2Bb@src.test\n\
             X-Postman-To: c@d1.test",
        ),
    );

    s.run_once();
    let accepted = s.server.accepted_rcpts();
    assert!(
        accepted.len() == 1 && accepted[0].contains("<a@d1.test>"),
        "only a accepted: {accepted:?}"
    );
    assert!(path.exists(), "the message stays queued for b and c");
    let (env, text) = in_force(&path);
    assert_eq!(
        env.recipients,
        ["b@d1.test", "c@d1.test"],
        "pending in {text}"
    );
    assert!(
        text.contains("X-Postman-To: <b@d1.test> NOTIFY=NEVER ORCPT=rfc822;orig+2Bb@src.test\r\n"),
        "b's parameters written back as queued:\n{text}"
    );
    let want: BTreeMap<String, RcptParams> = [(
        "b@d1.test".to_owned(),
        params("NOTIFY=NEVER ORCPT=rfc822;orig+2Bb@src.test"),
    )]
    .into();
    assert_eq!(env.rcpt_params, want, "parameters of the pending in {text}");
    assert_eq!(
        env.params,
        MsgParams {
            ret: Some(Ret::Full),
            envid: Some("QQ314159+2Bx".to_owned()),
            requiretls: false,
        },
        "RET and ENVID kept in {text}"
    );
    assert!(
        text.contains("X-Postman-Attempts: 1\r\n"),
        "the attempt is recorded beside them:\n{text}"
    );

    // The next attempt reads the state file and delivers the rest.
    s.server.play_from_now(Script::polite());
    make_due(&path);
    s.run_once();
    let accepted = s.server.accepted_rcpts();
    for rcpt in ["<b@d1.test>", "<c@d1.test>"] {
        assert!(
            accepted.iter().any(|a| a.contains(rcpt)),
            "{rcpt} delivered on the second attempt: {accepted:?}"
        );
    }
    assert!(!path.exists(), "nothing left to deliver");
}

#[test]
fn enqueue_takes_the_parameters_and_queue_shows_them() {
    let s = Setup::polite();
    let out = s.postman_with_input(
        "enqueue",
        &[
            "--from",
            "alice@src.test",
            "--to",
            "x@d1.test",
            "--to",
            "y@d1.test",
            "--notify",
            "success,DELAY",
            "--ret",
            "hdrs",
            "--envid",
            "order 42+x",
            "--requiretls",
            "-",
        ],
        &message("enq", "x\n"),
    );
    out.assert_success();
    let id = out.stdout.trim();
    let (domain, name) = id.split_once('/').expect("domain/name");
    let path = s.queue.domain_dir(domain).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let env = parse_envelope(&bytes).expect("the file parses");
    let text = String::from_utf8_lossy(&bytes[..env.body_offset as usize]).into_owned();
    assert_eq!(
        env.params,
        MsgParams {
            ret: Some(Ret::Hdrs),
            envid: Some("order+2042+2Bx".to_owned()),
            requiretls: true,
        },
        "message parameters in\n{text}"
    );
    for rcpt in ["x@d1.test", "y@d1.test"] {
        assert_eq!(
            env.recipient_params(rcpt),
            Some(&params("NOTIFY=SUCCESS,DELAY")),
            "{rcpt} in\n{text}"
        );
    }

    let listing = s.postman("queue", &[]);
    listing.assert_success();
    for want in [
        "    return headers only, envelope id \"order 42+x\", REQUIRETLS\n",
        "    to <x@d1.test> (notify SUCCESS,DELAY)\n",
    ] {
        assert!(
            listing.stdout.contains(want),
            "missing {want:?} in:\n{}",
            listing.stdout
        );
    }
    let json = s.listing();
    assert_eq!(json.len(), 1, "{json:?}");
    let m = &json[0];
    assert_eq!(m["ret"], "HDRS");
    assert_eq!(m["envid"], "order 42+x");
    assert_eq!(m["envid_xtext"], "order+2042+2Bx");
    assert_eq!(m["requiretls"], true);
    assert_eq!(
        m["recipient_params"]["y@d1.test"]["notify"],
        "SUCCESS,DELAY"
    );
    assert_eq!(
        m["recipient_params"]["y@d1.test"]["orcpt"],
        serde_json::Value::Null
    );
}

#[test]
fn enqueue_refuses_a_bad_parameter_naming_its_option() {
    let s = Setup::polite();
    for (option, value) in [
        ("--notify", "sometimes"),
        ("--notify", "never,success"),
        ("--ret", "all"),
        ("--envid", ""),
    ] {
        let out = s.postman_with_input(
            "enqueue",
            &[
                "--from",
                "a@src.test",
                "--to",
                "x@d1.test",
                option,
                value,
                "-",
            ],
            b"Subject: x\n\nx\n",
        );
        assert!(
            !out.status.success() && out.stderr.contains(option),
            "{option} {value:?} must fail naming the option\n--- stderr ---\n{}",
            out.stderr
        );
    }
    let long = "x".repeat(101);
    let out = s.postman_with_input(
        "enqueue",
        &[
            "--from",
            "a@src.test",
            "--to",
            "x@d1.test",
            "--envid",
            &long,
            "-",
        ],
        b"Subject: x\n\nx\n",
    );
    assert!(
        !out.status.success() && out.stderr.contains("100 characters"),
        "an ENVID over 100 characters\n--- stderr ---\n{}",
        out.stderr
    );
    assert!(
        s.queue.state().queued_count() == 0,
        "nothing queued: {:#?}",
        s.queue.state()
    );
}
