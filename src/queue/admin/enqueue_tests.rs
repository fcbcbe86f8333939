use super::*;
use crate::queue::admin::test_support::*;
use std::fs;

use crate::queue::admin::QueueId;
use crate::queue::parse_envelope;
use std::io;
use std::time::Duration;

#[test]
fn enqueue_writes_one_file_per_domain() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let rcpts: Vec<String> = [
        "x@d1.test",
        "y@D2.test",
        "z@d1.test",
        "x@d1.test",
        "w@d2.test.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let message = b"Subject: bare LF\n\nline one\nline two\n";
    let mut n = 0;
    let done = enqueue(
        &queue,
        "a@src.test",
        &rcpts,
        &SenderParams::default(),
        &mut &message[..],
        at(NOW),
        || {
            n += 1;
            format!("name{n}")
        },
    )
    .expect("enqueue");
    assert!(done.split.is_empty(), "nothing split");
    let got: Vec<String> = done.ids.iter().map(QueueId::to_string).collect();
    assert_eq!(
        got,
        ["d1.test/name1", "d2.test/name2"],
        "one id per domain, in domain order"
    );
    let want: [(&str, &str, &[&str]); 2] = [
        ("d1.test", "name1", &["x@d1.test", "z@d1.test"]),
        ("d2.test", "name2", &["y@d2.test", "w@d2.test"]),
    ];
    for (domain, name, to) in want {
        let bytes = fs::read(layout.message_path(domain, name)).unwrap();
        let env = parse_envelope(&bytes).expect("parses");
        assert_eq!(env.sender, "a@src.test", "{domain}");
        assert_eq!(
            env.recipients, to,
            "{domain}: grouped, deduplicated, domain lower-cased"
        );
        assert_eq!(env.arrival, Some(at(NOW)), "{domain}: dated now");
        assert_eq!(
            &bytes[env.body_offset as usize..],
            message,
            "{domain}: message as given"
        );
        assert!(
            fs::read_dir(layout.tmp_dir(domain))
                .unwrap()
                .next()
                .is_none(),
            "{domain}: tmp is empty"
        );
    }
}

#[test]
fn enqueue_failures_queue_nothing() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let names = || {
        let mut n = 0;
        move || {
            n += 1;
            format!("n{n}")
        }
    };
    let err = enqueue(
        &queue,
        "",
        &[],
        &SenderParams::default(),
        &mut &b"x"[..],
        at(NOW),
        names(),
    )
    .expect_err("no recipients");
    assert!(matches!(err, EnqueueError::NoRecipients), "{err}");
    let err = enqueue(
        &queue,
        "",
        &["x@Bad_Domain".into()],
        &SenderParams::default(),
        &mut &b"x"[..],
        at(NOW),
        names(),
    )
    .expect_err("bad domain");
    assert!(err.to_string().contains("x@Bad_Domain"), "{err}");

    // b.test's tmp is a file: its temporary file cannot be made, after
    // a.test's was written.
    fs::create_dir_all(layout.domain_dir("b.test")).unwrap();
    fs::write(layout.tmp_dir("b.test"), b"in the way").unwrap();
    let rcpts = vec!["x@a.test".to_owned(), "y@b.test".to_owned()];
    let err = enqueue(
        &queue,
        "",
        &rcpts,
        &SenderParams::default(),
        &mut &b"x"[..],
        at(NOW),
        names(),
    )
    .expect_err("tmp blocked");
    let text = err.to_string();
    assert!(
        text.contains("b.test") && text.contains("nothing was queued"),
        "{text}"
    );
    assert!(messages(&layout, "a.test").is_empty(), "a.test empty");
    assert!(
        fs::read_dir(layout.tmp_dir("a.test"))
            .unwrap()
            .next()
            .is_none(),
        "a.test's temporary file removed"
    );

    // A taken name is never replaced.
    let rcpts = vec!["x@a.test".to_owned()];
    queued(&layout, "a.test", "n1", b"precious");
    let err = enqueue(
        &queue,
        "",
        &rcpts,
        &SenderParams::default(),
        &mut &b"x"[..],
        at(NOW),
        names(),
    )
    .expect_err("name taken");
    assert!(
        matches!(&err, EnqueueError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
        "{err}"
    );
    assert_eq!(
        fs::read(layout.message_path("a.test", "n1")).unwrap(),
        b"precious"
    );
}

#[test]
fn unique_names_follow_the_maildir_pattern() {
    let now = at(NOW) + Duration::from_micros(42);
    let cases: &[(&str, &str)] = &[
        ("mx.example.org", "1764250000.000042P77Q3.mx.example.org"),
        ("a/b:c", "1764250000.000042P77Q3.a\\057b\\072c"),
        ("", "1764250000.000042P77Q3.localhost"),
    ];
    for (host, want) in cases {
        assert_eq!(unique_name(now, 77, 3, host), *want, "host {host:?}");
    }
}

#[test]
fn recipients_beyond_one_block_are_split_over_several_messages() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    // 50,000 addresses of 25 octets: 1.3 MB of recipients for d1.test.
    let many: Vec<String> = (0..50_000)
        .map(|i| format!("user-number-{i:05}@d1.test"))
        .collect();
    let mut rcpts = many.clone();
    rcpts.push("x@d2.test".to_owned());
    let message: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut n = 0;
    let done = enqueue(
        &queue,
        "a@src.test",
        &rcpts,
        &SenderParams::default(),
        &mut &message[..],
        at(NOW),
        || {
            n += 1;
            format!("name{n}")
        },
    )
    .expect("enqueue");
    let got: Vec<String> = done.ids.iter().map(QueueId::to_string).collect();
    assert_eq!(
        got,
        ["d1.test/name1", "d1.test/name2", "d2.test/name3"],
        "two messages for d1.test, one for d2.test"
    );
    assert_eq!(
        done.split,
        [Split {
            domain: "d1.test".to_owned(),
            recipients: 50_000,
            files: 2
        }],
        "the split is reported"
    );
    let mut all = Vec::new();
    for id in &done.ids {
        let bytes = fs::read(layout.message_path(&id.domain, &id.name)).unwrap();
        let env = parse_envelope(&bytes).expect("every file reads back");
        assert!(
            env.body_offset as usize <= crate::queue::MAX_WRITTEN_BLOCK,
            "{id}"
        );
        assert_eq!(
            &bytes[env.body_offset as usize..],
            message,
            "{id}: same body"
        );
        all.extend(env.recipients);
    }
    all.pop();
    assert_eq!(all, many, "every recipient once, in order");
}

/// A reader that gives some bytes, then fails.
struct Broken(usize);

impl io::Read for Broken {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(b'x');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn a_message_that_cannot_be_read_queues_nothing() {
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let rcpts = vec!["x@a.test".to_owned(), "y@b.test".to_owned()];
    let err = enqueue(
        &queue,
        "",
        &rcpts,
        &SenderParams::default(),
        &mut Broken(100_000),
        at(NOW),
        || "n".to_owned(),
    )
    .expect_err("read fails");
    assert!(
        matches!(&err, EnqueueError::Read { source } if source.kind() == io::ErrorKind::BrokenPipe),
        "{err}"
    );
    for domain in ["a.test", "b.test"] {
        assert!(
            messages(&layout, domain).is_empty(),
            "{domain}: nothing queued"
        );
        let tmp = layout.tmp_dir(domain);
        assert!(
            !tmp.exists() || fs::read_dir(&tmp).unwrap().next().is_none(),
            "{domain}: tmp/ empty"
        );
    }
}

#[test]
fn enqueue_writes_the_senders_parameters_into_every_file() {
    use crate::queue::params::{MsgParams, Notify, Ret};
    let (_dir, queue) = setup();
    let layout = queue.layout().clone();
    let rcpts: Vec<String> = ["x@d1.test", "y@d2.test", "z@d1.test"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let notify = Notify::parse("success,failure").expect("test");
    let params = SenderParams {
        message: MsgParams {
            ret: Some(Ret::Hdrs),
            envid: Some(MsgParams::envid_from_text("order 42+x=y").expect("test")),
            requiretls: true,
        },
        notify: Some(notify),
    };
    let mut n = 0;
    let done = enqueue(
        &queue,
        "a@src.test",
        &rcpts,
        &params,
        &mut &b"Subject: x\n\nx\n"[..],
        at(NOW),
        || {
            n += 1;
            format!("name{n}")
        },
    )
    .expect("enqueue");
    assert_eq!(done.ids.len(), 2, "one file per domain");
    for (domain, name, to) in [
        ("d1.test", "name1", &["x@d1.test", "z@d1.test"][..]),
        ("d2.test", "name2", &["y@d2.test"][..]),
    ] {
        let bytes = fs::read(layout.message_path(domain, name)).unwrap();
        let env = parse_envelope(&bytes).expect("parses");
        assert_eq!(env.recipients, to, "{domain}");
        assert_eq!(
            env.params, params.message,
            "{domain}: RET, ENVID, REQUIRETLS"
        );
        assert_eq!(
            env.params.envid_printable().as_deref(),
            Some("order 42+x=y"),
            "{domain}: the ENVID typed comes back"
        );
        for rcpt in to {
            assert_eq!(
                env.recipient_params(rcpt).and_then(|p| p.notify),
                Some(notify),
                "{domain}: NOTIFY of {rcpt}"
            );
            assert_eq!(
                env.recipient_params(rcpt).and_then(|p| p.orcpt.clone()),
                None,
                "{domain}: no ORCPT is made up for {rcpt}"
            );
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains("X-Postman-Envid: order+2042+2Bx+3Dy\r\n"),
            "{domain}: ENVID in xtext:\n{text}"
        );
    }
}

#[test]
fn an_envelope_id_from_text_is_xtext_within_its_limit() {
    use crate::queue::params::MsgParams;
    let hundred = "x".repeat(100);
    for (text, want) in [
        ("QQ314159", Ok("QQ314159".to_owned())),
        ("a b+c=d", Ok("a+20b+2Bc+3Dd".to_owned())),
        ("é", Ok("+C3+A9".to_owned())),
        (hundred.as_str(), Ok(hundred.clone())),
        ("", Err("the envelope id is empty")),
    ] {
        assert_eq!(MsgParams::envid_from_text(text), want, "{text:?}");
    }
    assert!(
        MsgParams::envid_from_text(&"x".repeat(101)).is_err(),
        "101 characters"
    );
    assert!(
        MsgParams::envid_from_text(&" ".repeat(34)).is_err(),
        "34 spaces are 102 characters encoded"
    );
}
