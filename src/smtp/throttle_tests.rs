//! The classifier against the replies providers and servers really send.
//! Each text is quoted from where it was seen (a provider's postmaster page,
//! a server's source, a bounce posted by its recipient); IP addresses are
//! replaced by documentation addresses.

use super::*;

/// (where the text comes from, the stage it answered, the reply on the
/// wire, whether it is a throttle)
type Case = (&'static str, Stage, &'static str, bool);

const THROTTLES: &[Case] = &[
    (
        // Gmail, support.google.com/mail/answer/81126; multi-line as sent.
        "gmail 4.7.28 ip rate limited",
        Stage::Mail,
        "421-4.7.28 [192.0.2.7] Our system has detected an unusual rate of\r\n\
         421-4.7.28 unsolicited mail originating from your IP address. To protect our\r\n\
         421-4.7.28 users from spam, mail sent from your IP address has been temporarily\r\n\
         421 4.7.28 rate limited. Please visit https://support.google.com/mail/?p=UnsolicitedRateLimitError - gsmtp\r\n",
        true,
    ),
    (
        // Gmail's DKIM-domain variant (Gmail's 2024 sender messages).
        "gmail 4.7.28 dkim domain",
        Stage::DataEnd,
        "421 4.7.28 Gmail has detected an unusual rate of unsolicited mail originating \
         from your DKIM domain. To protect our users from spam, mail sent from your domain \
         has been temporarily rate limited. - gsmtp",
        true,
    ),
    (
        // Gmail with the generic 4.7.0: a throttle by its text.
        "gmail 4.7.0 low reputation, rate limited",
        Stage::Rcpt,
        "421-4.7.0 [192.0.2.7] Our system has detected that this message is\r\n\
         421-4.7.0 suspicious due to the very low reputation of the sending IP address.\r\n\
         421-4.7.0 To protect our users from spam, mail sent from your IP address has\r\n\
         421 4.7.0 been temporarily rate limited. - gsmtp\r\n",
        true,
    ),
    (
        // Gmail turning a connection away at EHLO: a 421 before any message.
        "gmail 421 at ehlo",
        Stage::Ehlo,
        "421 4.7.0 Try again later, closing connection. (EHLO) - gsmtp",
        true,
    ),
    (
        // Microsoft, postmaster.live.com (S775/S3114 variants).
        "microsoft 4.7.650",
        Stage::Mail,
        "451 4.7.650 The mail server [192.0.2.7] has been temporarily rate limited due to \
         IP reputation. For e-mail delivery information, see https://postmaster.live.com (S775)",
        true,
    ),
    (
        "microsoft 4.7.651",
        Stage::Rcpt,
        "451 4.7.651 The mail server [192.0.2.7] has been temporarily rate limited due to \
         IP reputation. For e-mail delivery information, see https://postmaster.live.com (S3114)",
        true,
    ),
    (
        // Microsoft 365, learn.microsoft.com: "451 4.7.500-699 (ASxxx)".
        "microsoft 4.7.500 server busy",
        Stage::Rcpt,
        "451 4.7.500 Server busy. Please try again later from [192.0.2.7]. (AS77712344)",
        true,
    ),
    (
        "microsoft 4.7.5xx access denied",
        Stage::Mail,
        "451 4.7.550 Access denied, please try again later (AS12345)",
        true,
    ),
    (
        // Exchange Online, smtpfieldmanual.com/spamfilter/exchangeonline.
        "exchange 4.3.2 concurrent connections per forest",
        Stage::Greeting,
        "421 4.3.2 The maximum number of concurrent connections per resource forest has \
         exceeded a limit, closing transmission channel. PRX8",
        true,
    ),
    (
        // The same, answered later in the dialogue: a throttle by its text.
        "exchange 4.3.2 at mail",
        Stage::Mail,
        "421 4.3.2 The maximum number of concurrent connections per resource forest has \
         exceeded a limit, closing transmission channel.",
        true,
    ),
    (
        // Outlook.com, KumoMTA community shaping.toml.
        "outlook max connections",
        Stage::Mail,
        "421 4.7.0 The mail server [192.0.2.7] has exceeded the maximum number of connections.",
        true,
    ),
    (
        "outlook max messages per connection",
        Stage::Mail,
        "421 4.7.0 The mail server [192.0.2.7] has exceeded maximum number of messages per \
         connection.",
        // A limit per connection: a new connection, not less mail.
        false,
    ),
    (
        // Exchange's submission throttle (4.4.2 is otherwise a lost connection).
        "exchange submission rate",
        Stage::Mail,
        "421 4.4.2 Message submission rate for this client has exceeded the configured limit",
        true,
    ),
    (
        // Older Outlook.com/Hotmail rate limits, KumoMTA shaping.toml.
        "outlook.com RP-001",
        Stage::Mail,
        "421 RP-001 (BAY004-MC1F36) Unfortunately, some messages from 192.0.2.7 weren't \
         sent. Please try again. We have limits for how many messages can be sent per hour \
         and per day.",
        true,
    ),
    (
        // Yahoo, bounce quoted at secuserve.zammad.com and smtpfieldmanual.com.
        "yahoo TSS04",
        Stage::Mail,
        "421 4.7.0 [TSS04] Messages from 192.0.2.7 temporarily deferred due to unexpected \
         volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        true,
    ),
    (
        // Yahoo, Postfix bounce posted on pastebin (2015).
        "yahoo TS01",
        Stage::Mail,
        "421 4.7.0 [TS01] Messages from 192.0.2.7 temporarily deferred due to user \
         complaints - 4.16.55.1; see http://postmaster.yahoo.com/421-ts01.html",
        true,
    ),
    (
        "yahoo TS02",
        Stage::Mail,
        "421 4.7.0 [TS02] Messages from 192.0.2.7 temporarily deferred due to user complaints",
        true,
    ),
    (
        // Yahoo, help.yahoo.com SLN3436: "we do not recommend attempting to
        // resend": suspending the site is the right answer.
        "yahoo TS03",
        Stage::Mail,
        "421 4.7.1 [TS03] All messages from 192.0.2.7 will be permanently deferred; Retrying \
         will NOT succeed. See https://help.yahoo.com/kb/postmaster/SLN3436.html",
        true,
    ),
    (
        // Yahoo without an enhanced code (KumoMTA community shaping.toml).
        "yahoo IPTS04",
        Stage::Greeting,
        "421 [IPTS04] Messages from 192.0.2.7 temporarily deferred due to unexpected volume \
         or user complaints",
        true,
    ),
    (
        "yahoo max message per connection",
        Stage::Mail,
        "421 Max message per connection reached, closing transmission channel",
        false,
    ),
    (
        // GMX / web.de: no enhanced codes, multi-line (postmaster.gmx.net).
        "web.de too many messages",
        Stage::Greeting,
        "421-web.de (mxweb113) Nemesis ESMTP Service not available\r\n\
         421-Service unavailable\r\n\
         421-Reject due to policy restrictions\r\n\
         421 Please try again later. Too many messages have been received in a short period \
         of time. Please try again in a few hours and reduce the sending rate.\r\n",
        true,
    ),
    (
        // Postfix smtpd.c, smtpd_client_connection_count_limit and _rate_limit.
        "postfix too many connections",
        Stage::Greeting,
        "421 4.7.0 mx.example.net Error: too many connections from 192.0.2.7",
        true,
    ),
    (
        // Postfix smtpd.c, smtpd_client_message_rate_limit.
        "postfix too much mail",
        Stage::Mail,
        "450 4.7.1 Error: too much mail from 192.0.2.7",
        true,
    ),
    (
        // Postfix smtpd.c, smtpd_client_recipient_rate_limit.
        "postfix too many recipients from",
        Stage::Rcpt,
        "450 4.7.1 Error: too many recipients from 192.0.2.7",
        true,
    ),
    (
        // Postfix smtpd.c, smtpd_client_new_tls_session_rate_limit.
        "postfix too many new tls sessions",
        Stage::StartTls,
        "421 4.7.0 mx.example.net Error: too many new TLS sessions from 192.0.2.7",
        true,
    ),
    (
        // Exim smtp_accept_max (the issue's own reproduction).
        "exim smtp_accept_max",
        Stage::Greeting,
        "421 Too many concurrent SMTP connections; please try again later.",
        true,
    ),
    (
        // The issue's scripted server, answered at MAIL.
        "too many concurrent at mail",
        Stage::Mail,
        "421 4.7.0 Too many concurrent SMTP connections",
        true,
    ),
    (
        // Sendmail's conncontrol/ratecontrol, via sisimai issue 465.
        "sendmail connection rate limit",
        Stage::Mail,
        "452 4.3.2 Connection rate limit exceeded.",
        true,
    ),
    (
        // Rackspace (G2), smtp.codes/rackspace.
        "rackspace concurrent from this client",
        Stage::Greeting,
        "421 Too many concurrent connections from this client (G2)",
        true,
    ),
    (
        "rackspace too many messages from untrusted ip",
        Stage::Rcpt,
        "451 4.7.1 Received too many messages from a new or untrusted IP (G28)",
        true,
    ),
    (
        // GoDaddy (IB007), smtp.codes/421.
        "godaddy too many sessions",
        Stage::Greeting,
        "421 Connection refused, too many sessions from 192.0.2.7. Please lower the number \
         of concurrent sessions. IB007",
        true,
    ),
    (
        // A shared host's per-mailbox sending limit, quoted in a public README.
        "hosting mailbox rate limit",
        Stage::Mail,
        "451 4.7.1 Mailbox rate limit reached, please try again later",
        true,
    ),
    (
        "generic throttled",
        Stage::Rcpt,
        "451 4.7.0 Message throttled, try again later",
        true,
    ),
    (
        "generic sending rate exceeded",
        Stage::DataEnd,
        "451 You have exceeded your sending rate, slow down",
        true,
    ),
    (
        // Any 421 to the greeting turns the connection away before a message.
        "bare 421 greeting",
        Stage::Greeting,
        "421 mx.example.net Service not available, closing transmission channel",
        true,
    ),
    (
        "bare 421 to helo",
        Stage::Helo,
        "421 Service not available",
        true,
    ),
];

const NOT_THROTTLES: &[Case] = &[
    (
        // Postgrey's default reply (postgrey.schweikert.ch).
        "postgrey greylisted",
        Stage::Rcpt,
        "450 4.2.0 <a@example.net>: Recipient address rejected: Greylisted, see \
         http://postgrey.schweikert.ch/help/example.net.html",
        false,
    ),
    (
        // milter-greylist's default reply.
        "milter-greylist",
        Stage::Rcpt,
        "451 4.7.1 Greylisting in action, please come back in 00:05:00",
        false,
    ),
    (
        // The usual greylisting text, rspamd and others.
        "please try again later",
        Stage::Rcpt,
        "451 4.7.1 Please try again later",
        false,
    ),
    (
        "try again later alone",
        Stage::Mail,
        "451 Try again later",
        false,
    ),
    (
        // Exchange Online's transient server error (PRX4): not a limit.
        "exchange temporary server error",
        Stage::DataEnd,
        "451 4.7.0 Temporary server error. Please try again later. PRX4",
        false,
    ),
    (
        // Gmail's per-recipient limit: one user, not this client.
        "gmail one user receiving too fast",
        Stage::Rcpt,
        "450-4.2.1 The user you are trying to contact is receiving mail at a rate that\r\n\
         450-4.2.1 prevents additional messages from being delivered. Please resend your\r\n\
         450 4.2.1 message at a later point. - gsmtp\r\n",
        false,
    ),
    (
        // Rackspace's per-mailbox limit (G30).
        "rackspace mailbox too much email",
        Stage::Rcpt,
        "450 4.2.1 <a@example.net>: Mailbox received too much email in a short period of \
         time (G30)",
        false,
    ),
    (
        // The per-transaction recipient limit the session handles.
        "too many recipients in a transaction",
        Stage::Rcpt,
        "452 4.5.3 Too many recipients",
        false,
    ),
    (
        "mailbox full",
        Stage::Rcpt,
        "452 4.2.2 The email account that you tried to reach is over quota. - gsmtp",
        false,
    ),
    (
        // 421 later in the dialogue, without throttle words.
        "gmail temporary system problem at data end",
        Stage::DataEnd,
        "421 4.7.0 Temporary System Problem.  Try again later (10). - gsmtp",
        false,
    ),
    (
        "421 at rcpt",
        Stage::Rcpt,
        "421 4.4.2 mx.example.net Error: timeout exceeded",
        false,
    ),
    (
        // 4.7.0 alone says nothing about limits.
        "4.7.0 alone",
        Stage::Mail,
        "451 4.7.0 Temporary local problem, please try later",
        false,
    ),
    (
        "450 greeting without words",
        Stage::Greeting,
        "450 4.3.0 mx.example.net not ready",
        false,
    ),
    // A 5xx is a verdict, whatever its words.
    (
        "gmail 5.7.1 unusual rate, blocked",
        Stage::DataEnd,
        "550-5.7.1 [192.0.2.7] Our system has detected an unusual rate of\r\n\
         550-5.7.1 unsolicited mail originating from your IP address. To protect our\r\n\
         550 5.7.1 users from spam, mail sent from your IP address has been blocked.\r\n",
        false,
    ),
    (
        "554 too many connections",
        Stage::Greeting,
        "554 5.7.1 Too many connections",
        false,
    ),
    (
        "qq.com 550 frequency limited",
        Stage::Mail,
        "550 Ip frequency limited [192.0.2.7]",
        false,
    ),
    (
        "microsoft 5.7.650",
        Stage::Mail,
        "550 5.7.650 The mail server [192.0.2.7] has been temporarily rate limited",
        false,
    ),
];

fn reply(wire: &str) -> Reply {
    wire.parse()
        .unwrap_or_else(|e| panic!("{wire:?} should parse as a reply: {e}"))
}

#[test]
fn provider_replies_are_classified() {
    for &(source, stage, wire, want) in THROTTLES.iter().chain(NOT_THROTTLES) {
        let got = is_throttle(stage, &reply(wire), &[]);
        assert_eq!(got, want, "{source}: {wire:?} at {stage:?}");
    }
}

#[test]
fn a_421_is_a_throttle_only_before_any_message() {
    let bare = reply("421 Service not available, closing transmission channel");
    for (stage, want) in [
        (Stage::Greeting, true),
        (Stage::Ehlo, true),
        (Stage::Helo, true),
        (Stage::Mail, false),
        (Stage::Rcpt, false),
        (Stage::DataEnd, false),
        (Stage::Quit, false),
    ] {
        assert_eq!(
            is_throttle(stage, &bare, &[]),
            want,
            "bare 421 at {stage:?}"
        );
    }
}

#[test]
fn extra_patterns_match_the_whole_reply_as_one_line() {
    // Orange's French "too many connections", and a code-only pattern.
    let extra = [
        RegexBuilder::new("trop de connexions")
            .case_insensitive(true)
            .build()
            .expect("pattern"),
        Regex::new(r"^451 4\.3\.0 .*\(LIMIT\)").expect("pattern"),
    ];
    let cases = [
        ("421 mwinf5c42 ME Trop de connexions, veuillez verifier votre configuration. OFR_999 [999]", Stage::Mail, true),
        ("451 4.3.0 slow down (LIMIT)", Stage::DataEnd, true),
        ("451 4.3.0 slow down", Stage::DataEnd, false),
        // Never a 5xx, whatever the patterns say.
        ("550 5.7.1 Trop de connexions", Stage::Mail, false),
    ];
    for (wire, stage, want) in cases {
        assert_eq!(
            is_throttle(stage, &reply(wire), &extra),
            want,
            "{wire:?} with extra patterns"
        );
        if want {
            assert!(
                !is_throttle(stage, &reply(wire), &[]),
                "{wire:?} without them"
            );
        }
    }
}

#[test]
fn the_enhanced_code_may_come_without_words() {
    for (wire, want) in [
        ("421 4.7.28 -", true),
        ("451 4.7.500 -", true),
        ("451 4.7.699 -", true),
        ("451 4.7.499 -", false),
        ("451 4.7.700 -", false),
        ("451 4.7.0 -", false),
        ("451 4.7.1 -", false),
    ] {
        assert_eq!(
            is_throttle(Stage::Rcpt, &reply(wire), &[]),
            want,
            "{wire:?}"
        );
    }
}
