//! The sender's envelope parameters on the wire, against real peers:
//! Postfix's smtpd advertises DSN, and puts the message on hold so that
//! `postcat` shows the RET, ENVID, NOTIFY and ORCPT it received (RFC
//! 3461); with DSN hidden from its EHLO reply, it gets none of them.

mod common;

use std::time::Duration;

use common::{assert_outcome, config};
use postman_integration::postman::{Config, RunOutput};
use postman_integration::queue::unix_now;
use postman_integration::{postman, DnsServer, Postfix, PostfixOptions, TestNet, TestQueue, Zones};

const DOMAIN: &str = "dest.test";
const MX: &str = "mx.dest.test";
const WAIT: Duration = Duration::from_secs(10);

/// A queue file with every DSN parameter: RET and ENVID, one recipient
/// with NOTIFY and ORCPT, one with NOTIFY=NEVER, one with none.
fn dsn_queue_file() -> Vec<u8> {
    format!(
        "X-Postman-From: <a@src.test>\n\
         X-Postman-Date: {}\n\
         X-Postman-Ret: FULL\n\
         X-Postman-Envid: QQ314159+2Bx\n\
         X-Postman-To: <bob@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@dest.test\n\
         X-Postman-To: <carol@dest.test> NOTIFY=NEVER\n\
         X-Postman-To: <dave@dest.test>\n\
         \n\
         From: a@src.test\nTo: bob@dest.test\nSubject: dsn\nMessage-ID: <dsn@src.test>\n\nhi\n",
        unix_now()
    )
    .into_bytes()
}

/// Postfix for `dest.test` that holds every message it accepts (HOLD, an
/// access action: the message waits in its hold queue, envelope and
/// all), with `options`' other settings.
fn holding_postfix(net: &TestNet, options: PostfixOptions) -> Postfix {
    let mut options = options;
    options.extra.push(
        "smtpd_recipient_restrictions = check_recipient_access static:HOLD, permit_mynetworks, \
         reject"
            .into(),
    );
    Postfix::start(net.ip(1), net.port(), &[DOMAIN], &options)
}

fn run_once(queue: &TestQueue, net: &TestNet) -> (RunOutput, DnsServer) {
    let dns = DnsServer::start(Zones::new().mx(DOMAIN, 10, MX).a(MX, net.ipv4(1)));
    let cfg: Config = config(queue, net, &dns);
    let out = postman!().run_once(&cfg.write());
    out.assert_success();
    (out, dns)
}

/// The held message's envelope as `postcat -e` shows it.
fn held_envelope(postfix: &Postfix) -> String {
    let held = postfix.wait_for_held(1, WAIT);
    assert_eq!(
        held.len(),
        1,
        "Postfix holds the message:\n{}",
        postfix.log()
    );
    held.into_iter().next().unwrap_or_default()
}

/// Postfix's envelope records of a held message that name a DSN
/// parameter, in order (Postfix 3.7's `postcat -e`): `envelope_id` and
/// `dsn_orig_rcpt` decoded from xtext, `ret_flags` 1 = FULL, 2 = HDRS,
/// `notify_flags` 1 = NEVER, 2 = SUCCESS, 4 = FAILURE, 8 = DELAY
/// (`global/dsn_mask.h`).
fn dsn_records(envelope: &str) -> Vec<String> {
    let names = [
        "envelope_id=",
        "ret_flags=",
        "notify_flags=",
        "dsn_orig_rcpt=",
    ];
    envelope
        .lines()
        .filter_map(|line| {
            line.strip_prefix("named_attribute: ")
                .or_else(|| line.strip_prefix("recipient: ").map(|_| line))
        })
        .filter(|attr| attr.starts_with("recipient: ") || names.iter().any(|n| attr.starts_with(n)))
        .map(str::to_owned)
        .collect()
}

/// Runs the queue of one message with every DSN parameter against `postfix`;
/// every recipient is accepted.
fn deliver_dsn_message(net: &TestNet) -> RunOutput {
    let queue = TestQueue::new();
    queue.add_raw(DOMAIN, "m1", &dsn_queue_file());
    let (out, _dns) = run_once(&queue, net);
    let deliveries = out.deliveries();
    for to in ["bob@dest.test", "carol@dest.test", "dave@dest.test"] {
        assert_outcome(&out, &deliveries, to, "sent", Some(250));
    }
    out
}

#[test]
fn postfix_receives_the_dsn_parameters_as_queued() {
    let net = TestNet::new();
    let postfix = holding_postfix(&net, PostfixOptions::default());
    deliver_dsn_message(&net);
    let envelope = held_envelope(&postfix);
    // Postfix gives a recipient without ORCPT one of its own (RFC 3461
    // §5.2.1 allows it); NOTIFY is absent for dave, as queued.
    assert_eq!(
        dsn_records(&envelope),
        [
            "envelope_id=QQ314159+x",
            "ret_flags=1",
            "notify_flags=6",
            "dsn_orig_rcpt=rfc822;bob+x@dest.test",
            "recipient: bob@dest.test",
            "notify_flags=1",
            "dsn_orig_rcpt=rfc822;carol@dest.test",
            "recipient: carol@dest.test",
            "dsn_orig_rcpt=rfc822;dave@dest.test",
            "recipient: dave@dest.test",
        ],
        "the DSN parameters Postfix received:\n{envelope}"
    );
    // The commands themselves, as Postfix's verbose log has them.
    let log = postfix.log();
    for command in [
        " RET=FULL ENVID=QQ314159+2Bx\n",
        ": RCPT TO:<bob@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Bx@dest.test\n",
        ": RCPT TO:<carol@dest.test> NOTIFY=NEVER\n",
        ": RCPT TO:<dave@dest.test>\n",
    ] {
        assert!(log.contains(command), "Postfix got {command:?}:\n{log}");
    }
}

/// A server that does not advertise DSN gets no DSN parameter at all
/// (RFC 3461 §5.2): Postfix with DSN left out of its EHLO reply would
/// refuse them.
#[test]
fn a_server_without_dsn_gets_none() {
    let net = TestNet::new();
    let options = PostfixOptions {
        discard_ehlo_keywords: vec!["dsn".into()],
        ..PostfixOptions::default()
    };
    let postfix = holding_postfix(&net, options);
    deliver_dsn_message(&net);
    let envelope = held_envelope(&postfix);
    assert_eq!(
        dsn_records(&envelope),
        [
            "dsn_orig_rcpt=rfc822;bob@dest.test",
            "recipient: bob@dest.test",
            "dsn_orig_rcpt=rfc822;carol@dest.test",
            "recipient: carol@dest.test",
            "dsn_orig_rcpt=rfc822;dave@dest.test",
            "recipient: dave@dest.test",
        ],
        "only Postfix's own ORCPTs:\n{envelope}"
    );
    let log = postfix.log();
    for word in ["RET=", "ENVID=", "NOTIFY=", "ORCPT="] {
        assert!(!log.contains(word), "no {word} on the wire:\n{log}");
    }
    assert!(
        log.contains(": RCPT TO:<bob@dest.test>\n"),
        "a bare RCPT:\n{log}"
    );
}
