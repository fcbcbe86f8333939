//! The sender's envelope parameters on the wire: RFC 3461 DSN parameters
//! (RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT) only to a server that
//! advertises DSN, exactly as queued.

use super::*;
use crate::queue::params::{MsgParams, RcptParams, Ret};

fn rcpt_params(text: &str) -> RcptParams {
    RcptParams::parse(text).unwrap_or_else(|e| panic!("test parameters {text:?}: {e}"))
}

/// Three recipients: one with NOTIFY and ORCPT, one with NOTIFY=NEVER,
/// one without parameters; RET=HDRS and an ENVID.
fn dsn_envelope() -> Envelope {
    let mut env = envelope("s@a.test", &["a@b.test", "b@b.test", "c@b.test"]);
    env.params = MsgParams {
        ret: Some(Ret::Hdrs),
        envid: Some("QQ314159+2Bx".into()),
        requiretls: false,
    };
    env.rcpt_params = vec![
        Some(rcpt_params(
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@b.test",
        )),
        Some(rcpt_params("NOTIFY=NEVER")),
        None,
    ];
    env
}

/// Greeting and EHLO with `keywords` (lines separated by `\n`), `Ready`
/// consumed.
fn greeted(keywords: &str) -> Dialogue {
    let mut d = Dialogue::new();
    d.reply("220 mx.test ESMTP");
    d.expect_command("EHLO client.test");
    d.reply(&format!("250-mx.test\n{keywords}"));
    d.expect_ready();
    d
}

impl Dialogue {
    fn start_envelope(&mut self, envelope: Envelope) {
        self.log.push(format!("start {envelope:?}"));
        let result = self.session.start_message(envelope, self.now);
        assert_eq!(result, Ok(()), "start_message after {}", self.transcript());
        self.collect();
    }

    /// After DATA's 354: the body, its dot and the 250, then `MessageDone`.
    fn send_body(&mut self) -> MessageResult {
        self.session.push_body(b"Subject: t\n\nhi\n", self.now);
        self.session.finish_body(self.now);
        self.expect_output("Subject: t\r\n\r\nhi\r\n.\r\n");
        self.reply("250 2.0.0 queued");
        self.expect_done()
    }
}

const MAIL_DSN: &str = "MAIL FROM:<s@a.test> RET=HDRS ENVID=QQ314159+2Bx\r\n";
const RCPTS_DSN: &str = "RCPT TO:<a@b.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bx@b.test\r\n\
                         RCPT TO:<b@b.test> NOTIFY=NEVER\r\n\
                         RCPT TO:<c@b.test>\r\n";
const MAIL_PLAIN: &str = "MAIL FROM:<s@a.test>\r\n";
const RCPTS_PLAIN: &str = "RCPT TO:<a@b.test>\r\nRCPT TO:<b@b.test>\r\nRCPT TO:<c@b.test>\r\n";

/// With and without DSN advertised, with and without PIPELINING: the
/// parameters go exactly as queued to a DSN server, and nothing extra to
/// one without; `MessageResult::dsn` says which it was.
#[test]
fn dsn_parameters_go_only_to_servers_that_advertise_dsn() {
    let cases = [
        ("250-PIPELINING\n250 DSN", true, MAIL_DSN, RCPTS_DSN),
        ("250 DSN", true, MAIL_DSN, RCPTS_DSN),
        (
            "250-PIPELINING\n250 8BITMIME",
            false,
            MAIL_PLAIN,
            RCPTS_PLAIN,
        ),
        ("250 8BITMIME", false, MAIL_PLAIN, RCPTS_PLAIN),
    ];
    for (keywords, dsn, mail, rcpts) in cases {
        let mut d = greeted(keywords);
        d.start_envelope(dsn_envelope());
        if keywords.contains("PIPELINING") {
            d.expect_output(&format!("{mail}{rcpts}DATA\r\n"));
            d.reply("250 2.1.0 ok\n250 2.1.5 ok\n250 2.1.5 ok\n250 2.1.5 ok\n354 go");
        } else {
            d.expect_output(mail);
            d.reply("250 2.1.0 ok");
            for rcpt in rcpts.split_inclusive("\r\n") {
                d.expect_output(rcpt);
                d.reply("250 2.1.5 ok");
            }
            d.expect_command("DATA");
            d.reply("354 go");
        }
        let done = d.send_body();
        assert!(done.all_delivered(), "{keywords:?}: delivered: {done:?}");
        assert_eq!(done.dsn, dsn, "{keywords:?}: MessageResult::dsn");
    }
}

/// MAIL's parameters in Postfix's order, each only with its extension.
#[test]
fn mail_parameters_keep_postfix_order() {
    let full = MsgParams {
        ret: Some(Ret::Full),
        envid: Some("id".into()),
        requiretls: false,
    };
    let cases = [
        (
            "250-SIZE 1000\n250-8BITMIME\n250-SMTPUTF8\n250 DSN",
            "MAIL FROM:<\u{fc}@a.test> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=id",
        ),
        (
            "250-SIZE 1000\n250-SMTPUTF8\n250 DSN",
            "MAIL FROM:<\u{fc}@a.test> SIZE=10 SMTPUTF8 RET=FULL ENVID=id",
        ),
        (
            "250-SIZE 1000\n250-8BITMIME\n250 SMTPUTF8",
            "MAIL FROM:<\u{fc}@a.test> SIZE=10 BODY=8BITMIME SMTPUTF8",
        ),
    ];
    for (keywords, want) in cases {
        let mut d = greeted(keywords);
        let mut env = envelope("\u{fc}@a.test", &["r@b.test"]);
        env.size = Some(10);
        env.eight_bit = true;
        env.params = full.clone();
        d.start_envelope(env);
        d.expect_command(want);
    }
}

/// A `utf-8` ORCPT (RFC 6533) goes as queued when the transaction uses
/// SMTPUTF8, in its `\x{HEX}` ASCII form otherwise; an `rfc822` one is
/// xtext and always goes as queued.
#[test]
fn utf8_orcpt_is_written_in_ascii_without_smtputf8() {
    let cases = [
        (
            "250-SMTPUTF8\n250 DSN",
            "\u{fc}@b.test",
            "utf-8;\u{fc}@b.test",
            "RCPT TO:<\u{fc}@b.test> ORCPT=utf-8;\u{fc}@b.test",
        ),
        (
            "250-SMTPUTF8\n250 DSN",
            "u@b.test",
            "utf-8;J\u{f6}rg\u{1f600}@b.test",
            "RCPT TO:<u@b.test> ORCPT=utf-8;J\\x{F6}rg\\x{1F600}@b.test",
        ),
        (
            "250 DSN",
            "u@b.test",
            "utf-8;\u{fc}@b.test",
            "RCPT TO:<u@b.test> ORCPT=utf-8;\\x{FC}@b.test",
        ),
        (
            "250 DSN",
            "u@b.test",
            "rfc822;u+2B1@b.test",
            "RCPT TO:<u@b.test> ORCPT=rfc822;u+2B1@b.test",
        ),
    ];
    for (keywords, recipient, orcpt, want) in cases {
        let mut d = greeted(keywords);
        let mut env = envelope("s@a.test", &[recipient]);
        env.rcpt_params = vec![Some(rcpt_params(&format!("ORCPT={orcpt}")))];
        d.start_envelope(env);
        let smtputf8 = if recipient.is_ascii() {
            ""
        } else {
            " SMTPUTF8"
        };
        d.expect_command(&format!("MAIL FROM:<s@a.test>{smtputf8}"));
        d.reply("250 2.1.0 ok");
        d.expect_command(want);
    }
}

/// An ORCPT whose ASCII form outgrows RFC 3461's 500 characters is left
/// out; its NOTIFY still goes.
#[test]
fn an_orcpt_too_long_in_ascii_is_left_out() {
    let long = "\u{fc}".repeat(100);
    let mut d = greeted("250 DSN");
    let mut env = envelope("s@a.test", &["u@b.test"]);
    env.rcpt_params = vec![Some(rcpt_params(&format!(
        "NOTIFY=NEVER ORCPT=utf-8;{long}@b.test"
    )))];
    d.start_envelope(env);
    d.expect_command("MAIL FROM:<s@a.test>");
    d.reply("250 2.1.0 ok");
    d.expect_command("RCPT TO:<u@b.test> NOTIFY=NEVER");
}

/// Fewer parameter entries than recipients: the rest have none.
#[test]
fn recipients_past_the_parameters_have_none() {
    let mut d = greeted("250-PIPELINING\n250 DSN");
    let mut env = envelope("s@a.test", &["a@b.test", "b@b.test"]);
    env.rcpt_params = vec![Some(rcpt_params("NOTIFY=DELAY"))];
    d.start_envelope(env);
    d.expect_output(
        "MAIL FROM:<s@a.test>\r\nRCPT TO:<a@b.test> NOTIFY=DELAY\r\nRCPT TO:<b@b.test>\r\n\
         DATA\r\n",
    );
}

// ---- REQUIRETLS (RFC 8689) ---------------------------------------------------

/// How the session to the server came about, for a REQUIRETLS message.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// The server offers no STARTTLS.
    Plain,
    /// STARTTLS refused with 454: the session goes on in plaintext.
    Refused,
    /// TLS, certificate not verified.
    Unverified,
    /// TLS, certificate and name verified.
    Verified,
}

/// A session over `link` whose last EHLO reply advertises `keywords`
/// (and STARTTLS before TLS), `Ready` consumed.
fn linked(link: Link, keywords: &str) -> Dialogue {
    let mut d = Dialogue::new();
    d.reply("220 mx.test ESMTP");
    d.expect_command("EHLO client.test");
    let verified = match link {
        Link::Plain => {
            d.reply(&format!("250-mx.test\n{keywords}"));
            d.expect_ready();
            return d;
        }
        Link::Refused => {
            d.reply(&format!("250-mx.test\n250-STARTTLS\n{keywords}"));
            d.expect_command("STARTTLS");
            d.reply("454 4.7.0 TLS not available");
            d.expect_ready();
            return d;
        }
        Link::Unverified => false,
        Link::Verified => true,
    };
    d.reply("250-mx.test\n250-STARTTLS\n250 8BITMIME");
    d.expect_command("STARTTLS");
    d.reply("220 2.0.0 go ahead");
    d.expect_event(&Event::StartTls);
    let info = TlsInfo {
        verified,
        ..tls_info()
    };
    d.session.tls_established(info, d.now);
    d.expect_command("EHLO client.test");
    d.reply(&format!("250-mx.test\n{keywords}"));
    d.expect_ready();
    d
}

fn requiretls_envelope() -> Envelope {
    let mut env = envelope("s@a.test", &["a@b.test", "b@b.test"]);
    env.params.requiretls = true;
    env
}

/// Each way a session may be, with and without REQUIRETLS advertised and
/// PIPELINING: only verified TLS to a server advertising REQUIRETLS gets
/// the message, with ` REQUIRETLS` on MAIL; otherwise nothing is sent and
/// every recipient fails transiently with 5.7.10 (no verified TLS) or
/// 5.7.30 (no REQUIRETLS).
#[test]
fn requiretls_goes_only_over_verified_tls_to_servers_that_advertise_it() {
    let no_tls = Some(Outcome::REQUIRETLS_NO_TLS);
    let unsupported = Some(Outcome::REQUIRETLS_UNSUPPORTED);
    let cases = [
        (Link::Plain, "250-PIPELINING\n250 REQUIRETLS", no_tls),
        (Link::Plain, "250 8BITMIME", no_tls),
        (Link::Refused, "250-PIPELINING\n250 REQUIRETLS", no_tls),
        (Link::Unverified, "250-PIPELINING\n250 REQUIRETLS", no_tls),
        (Link::Unverified, "250 REQUIRETLS", no_tls),
        (Link::Verified, "250-PIPELINING\n250 8BITMIME", unsupported),
        (Link::Verified, "250 8BITMIME", unsupported),
        (Link::Verified, "250-PIPELINING\n250 REQUIRETLS", None),
        (Link::Verified, "250 REQUIRETLS", None),
    ];
    for (link, keywords, refusal) in cases {
        let name = format!("{link:?} {keywords:?}");
        let mut d = linked(link, keywords);
        d.start_envelope(requiretls_envelope());
        let Some(status) = refusal else {
            let mail = "MAIL FROM:<s@a.test> REQUIRETLS\r\n";
            let rcpts = "RCPT TO:<a@b.test>\r\nRCPT TO:<b@b.test>\r\n";
            if keywords.contains("PIPELINING") {
                d.expect_output(&format!("{mail}{rcpts}DATA\r\n"));
                d.reply("250 ok\n250 ok\n250 ok\n354 go");
            } else {
                d.expect_output(mail);
                d.reply("250 ok");
                d.expect_command("RCPT TO:<a@b.test>");
                d.reply("250 ok");
                d.expect_command("RCPT TO:<b@b.test>");
                d.reply("250 ok");
                d.expect_command("DATA");
                d.reply("354 go");
            }
            let done = d.send_body();
            assert!(done.all_delivered(), "{name}: delivered: {done:?}");
            continue;
        };
        d.expect_no_output();
        let done = d.expect_done();
        assert!(!done.untried, "{name}: judged by postman itself");
        for r in &done.recipients {
            let Err(outcome) = &r.result else {
                panic!("{name}: {} refused: {done:?}", r.recipient);
            };
            assert_eq!(
                (outcome.class, outcome.scope, outcome.stage, outcome.status),
                (Class::Transient, Scope::Message, Stage::Mail, Some(status)),
                "{name}: {outcome:?}"
            );
            assert!(outcome.detail.contains("REQUIRETLS"), "{name}: {outcome}");
        }
        d.expect_ready();
        assert_eq!(d.session.transactions(), 0, "{name}: no transaction");
    }
}

/// A REQUIRETLS message refused by a session does not spoil it: the next
/// message goes out at once, without RSET (nothing was sent) and without
/// REQUIRETLS on its MAIL.
#[test]
fn a_refused_requiretls_message_leaves_the_session_usable() {
    let mut d = linked(Link::Unverified, "250-PIPELINING\n250 REQUIRETLS");
    d.start_envelope(requiretls_envelope());
    d.expect_no_output();
    d.expect_done();
    d.expect_ready();
    d.start("s@a.test", &["c@b.test"]);
    d.expect_output("MAIL FROM:<s@a.test>\r\nRCPT TO:<c@b.test>\r\nDATA\r\n");
}

/// With DSN too, MAIL carries everything in Postfix's order.
#[test]
fn requiretls_comes_last_on_mail() {
    let mut d = linked(Link::Verified, "250-SIZE 100\n250-DSN\n250 REQUIRETLS");
    let mut env = requiretls_envelope();
    env.size = Some(10);
    env.params.ret = Some(Ret::Hdrs);
    env.params.envid = Some("e".into());
    d.start_envelope(env);
    d.expect_command("MAIL FROM:<s@a.test> SIZE=10 RET=HDRS ENVID=e REQUIRETLS");
}
