//! Reading smtpd's log lines: what it accepted (and from whom, after which
//! AUTH), what AUTH attempts failed, what it refused, and each session's
//! commands and replies. The parsers take the log's text and return values,
//! so they are tested on Postfix's own lines (recorded from Postfix 3.7
//! with Cyrus SASL 2.1.28).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A message smtpd accepted, from its `<queue id>: client=…` line, which
/// it logs when the first recipient is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Postfix's queue id.
    pub queue_id: String,
    /// The client's address (the source address it connected from).
    pub client: IpAddr,
    /// How the client authenticated, if it did.
    pub sasl: Option<SaslLogin>,
}

/// A successful AUTH, as smtpd logs it with each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslLogin {
    /// `sasl_method=` (`PLAIN`, `LOGIN`, `SCRAM-SHA-256`).
    pub method: String,
    /// `sasl_username=`: the login name as Cyrus reports it.
    pub username: String,
}

/// A failed AUTH: `warning: unknown[ip]: SASL PLAIN authentication failed:
/// authentication failure, sasl_username=relay-user`. The client was
/// answered `535 5.7.8 Error: authentication failed: <reason>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The client's address.
    pub client: IpAddr,
    /// The mechanism tried.
    pub method: String,
    /// Cyrus' reason (`authentication failure`).
    pub reason: String,
    /// The login name the client gave, when Postfix logs one.
    pub username: Option<String>,
}

/// A command smtpd refused by its restrictions: `NOQUEUE: reject: RCPT
/// from unknown[ip]: 554 5.7.1 <rcpt>: Recipient address rejected: Access
/// denied; from=<…> to=<…> proto=ESMTP helo=<…>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The client's address.
    pub client: IpAddr,
    /// The command refused (`RCPT`, `MAIL`, …).
    pub command: String,
    /// The reply sent, e.g. `554 5.7.1 <x@dest.test>: Recipient address
    /// rejected: Access denied`.
    pub reply: String,
    /// The `from=<…>` address, without brackets.
    pub from: String,
    /// The `to=<…>` address, without brackets, if logged.
    pub to: Option<String>,
}

/// One SMTP session of one smtpd process, from `connect from` to
/// `disconnect from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The smtpd process (one process serves sessions one after another).
    pub pid: u32,
    /// The client's address.
    pub client: IpAddr,
    /// What was said, in order, as Postfix logs it verbosely: `< EHLO x`
    /// from the client, `> 250-…` from the server. Empty for a
    /// [`quiet`](super::PostfixOptions::quiet) instance.
    pub transcript: Vec<String>,
    /// How much of [`transcript`](Self::transcript) came before TLS was
    /// established (all of it if TLS never was; 0 with implicit TLS).
    pub before_tls: usize,
    /// The TLS the session used: `TLSv1.3 with cipher …`.
    pub tls: Option<String>,
    /// The closing summary, e.g. `ehlo=2 starttls=1 auth=0/1 mail=1
    /// rcpt=0/1 quit=1 commands=6/8`; `None` while the session lasts.
    pub summary: Option<String>,
}

impl Session {
    /// Without TLS, the whole transcript came before it.
    fn end(&mut self) {
        if self.tls.is_none() {
            self.before_tls = self.transcript.len();
        }
    }

    /// What the client sent before TLS (no AUTH may be among it).
    pub fn plaintext_commands(&self) -> Vec<&str> {
        self.transcript[..self.before_tls]
            .iter()
            .filter_map(|l| l.strip_prefix("< "))
            .collect()
    }

    /// Every command the client sent (AUTH's continuation lines included).
    pub fn commands(&self) -> Vec<&str> {
        self.transcript
            .iter()
            .filter_map(|l| l.strip_prefix("< "))
            .collect()
    }
}

/// smtpd's lines as (pid, message).
fn smtpd_lines(log: &str) -> impl Iterator<Item = (u32, &str)> {
    log.lines().filter_map(|line| {
        let (_, rest) = line.split_once(" postfix/smtpd[")?;
        let (pid, message) = rest.split_once("]: ")?;
        Some((pid.parse().ok()?, message))
    })
}

/// The address in `name[addr]`, and what follows the `]`.
fn client(text: &str) -> Option<(IpAddr, &str)> {
    let (_, rest) = text.split_once('[')?;
    let (addr, rest) = rest.split_once(']')?;
    Some((addr.parse().ok()?, rest))
}

/// Every message accepted, in log order.
pub fn accepted(log: &str) -> Vec<Accepted> {
    smtpd_lines(log)
        .filter_map(|(_, message)| parse_accepted(message))
        .collect()
}

fn parse_accepted(message: &str) -> Option<Accepted> {
    let (queue_id, rest) = message.split_once(": client=")?;
    if queue_id.is_empty() || !queue_id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    let (client, rest) = client(rest)?;
    let fields: BTreeMap<&str, &str> = rest.split(", ").filter_map(|f| f.split_once('=')).collect();
    let sasl = match (fields.get("sasl_method"), fields.get("sasl_username")) {
        (Some(method), Some(username)) => Some(SaslLogin {
            method: (*method).to_owned(),
            username: (*username).to_owned(),
        }),
        _ => None,
    };
    Some(Accepted {
        queue_id: queue_id.to_owned(),
        client,
        sasl,
    })
}

/// Every failed AUTH, in log order.
pub fn auth_failures(log: &str) -> Vec<AuthFailure> {
    smtpd_lines(log)
        .filter_map(|(_, message)| parse_auth_failure(message))
        .collect()
}

fn parse_auth_failure(message: &str) -> Option<AuthFailure> {
    let rest = message.strip_prefix("warning: ")?;
    let (client, rest) = client(rest)?;
    let rest = rest.strip_prefix(": SASL ")?;
    let (method, rest) = rest.split_once(" authentication failed: ")?;
    let (reason, username) = match rest.split_once(", sasl_username=") {
        // Before a mechanism took a name (one not offered, say).
        Some((reason, "(unavailable)")) => (reason, None),
        Some((reason, user)) => (reason, Some(user.to_owned())),
        None => (rest, None),
    };
    Some(AuthFailure {
        client,
        method: method.to_owned(),
        reason: reason.to_owned(),
        username,
    })
}

/// Every refusal by a restriction, in log order.
pub fn rejections(log: &str) -> Vec<Rejection> {
    smtpd_lines(log)
        .filter_map(|(_, message)| parse_rejection(message))
        .collect()
}

fn parse_rejection(message: &str) -> Option<Rejection> {
    let (_, rest) = message.split_once(": reject: ")?;
    let (command, rest) = rest.split_once(" from ")?;
    let (client, rest) = client(rest)?;
    let rest = rest.strip_prefix(": ")?;
    let (reply, fields) = rest.rsplit_once("; from=<")?;
    let (from, fields) = fields.split_once("> ")?;
    let to = fields
        .strip_prefix("to=<")
        .and_then(|t| t.split_once('>'))
        .map(|(to, _)| to.to_owned());
    Some(Rejection {
        client,
        command: command.to_owned(),
        reply: reply.to_owned(),
        from: from.to_owned(),
        to,
    })
}

/// Every session, in the order they began.
pub fn sessions(log: &str) -> Vec<Session> {
    let mut all: Vec<Session> = Vec::new();
    // Each smtpd process's session in progress, as an index into `all`.
    let mut open: BTreeMap<u32, usize> = BTreeMap::new();
    for (pid, message) in smtpd_lines(log) {
        if let Some((client, _)) = message.strip_prefix("connect from ").and_then(client) {
            if let Some(old) = open.insert(pid, all.len()) {
                all[old].end();
            }
            all.push(Session {
                pid,
                client,
                transcript: Vec::new(),
                before_tls: 0,
                tls: None,
                summary: None,
            });
            continue;
        }
        let Some(&index) = open.get(&pid) else {
            continue;
        };
        let session = &mut all[index];
        if let Some(rest) = message.strip_prefix("disconnect from ") {
            session.summary = client(rest).map(|(_, s)| s.trim().to_owned());
            session.end();
            open.remove(&pid);
        } else if let Some((_, tls)) = message
            .split_once("TLS connection established from ")
            .and_then(|(_, rest)| client(rest))
        {
            session.before_tls = session.transcript.len();
            session.tls = Some(tls.trim_start_matches(": ").to_owned());
        } else if let Some(said) = said(message) {
            session.transcript.push(said);
        }
    }
    for index in open.into_values() {
        all[index].end();
    }
    all
}

/// A verbose `< name[addr]: command` or `> name[addr]: reply` line, as
/// `< command` or `> reply`.
fn said(message: &str) -> Option<String> {
    let (direction, rest) = match message.split_at_checked(2)? {
        ("< ", rest) => ('<', rest),
        ("> ", rest) => ('>', rest),
        _ => return None,
    };
    let (_, text) = client(rest)?;
    Some(format!("{direction} {}", text.strip_prefix(": ")?))
}

/// How many connections smtpd took from each client address.
pub fn connections_by_client(log: &str) -> BTreeMap<IpAddr, usize> {
    let mut counts = BTreeMap::new();
    for (_, message) in smtpd_lines(log) {
        if let Some((client, _)) = message.strip_prefix("connect from ").and_then(client) {
            *counts.entry(client).or_insert(0) += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as Postfix 3.7.11 with Cyrus SASL 2.1.28 wrote them (verbose
    /// logging, two smtpd processes interleaved, one implicit-TLS session).
    const LOG: &str = "\
Dec 07 19:52:12 postfix postfix/master[32214]: daemon started -- version 3.7.11, configuration /tmp/r/conf
Dec 07 19:52:22 postfix postfix/smtpd[375]: connect from unknown[127.0.0.1]
Dec 07 19:52:22 postfix postfix/smtpd[375]: < unknown[127.0.0.1]: ehlo client.test
Dec 07 19:52:22 postfix postfix/smtpd[375]: > unknown[127.0.0.1]: 250-STARTTLS
Dec 07 19:52:22 postfix postfix/smtpd[375]: < unknown[127.0.0.1]: STARTTLS
Dec 07 19:52:22 postfix postfix/smtpd[375]: > unknown[127.0.0.1]: 220 2.0.0 Ready to start TLS
Dec 07 19:52:22 postfix postfix/smtpd[375]: Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Dec 07 19:52:22 postfix postfix/smtpd[375]: < unknown[127.0.0.1]: ehlo client.test
Dec 07 19:52:22 postfix postfix/smtpd[375]: < unknown[127.0.0.1]: AUTH PLAIN AHJlbGF5LXVzZXIAczNjcmV0
Dec 07 19:52:22 postfix postfix/smtpd[375]: 9BCD498C1CF: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=relay-user
Dec 07 19:52:22 postfix postfix/cleanup[383]: 9BCD498C1CF: message-id=<20261207195222.9BCD498C1CF@postfix.test>
Dec 07 19:52:23 postfix postfix/smtpd[376]: connect from unknown[127.0.0.2]
Dec 07 19:52:23 postfix postfix/smtpd[375]: disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 auth=1 mail=1 rcpt=1 data=1 quit=1 commands=8
Dec 07 19:52:23 postfix postfix/smtpd[376]: warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: authentication failure, sasl_username=relay-user
Dec 07 19:52:23 postfix postfix/smtpd[376]: NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 <x@dest.test>: Recipient address rejected: Access denied; from=<a@src.test> to=<x@dest.test> proto=ESMTP helo=<client.test>
Dec 07 19:52:23 postfix postfix/smtpd[375]: connect from unknown[127.0.0.3]
Dec 07 19:52:23 postfix postfix/smtpd[375]: Anonymous TLS connection established from unknown[127.0.0.3]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Dec 07 19:52:23 postfix postfix/smtpd[375]: < unknown[127.0.0.3]: ehlo client.test
Dec 07 19:52:23 postfix postfix/smtpd[375]: 78B6298C151: client=unknown[127.0.0.3]
Dec 07 20:25:19 postfix postfix/smtpd[376]: warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: no mechanism available, sasl_username=(unavailable)
Dec 07 19:52:24 postfix postfix/smtpd[376]: disconnect from unknown[127.0.0.2] ehlo=2 starttls=1 auth=0/1 mail=1 rcpt=0/1 rset=1 quit=1 commands=6/8
";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn accepted_messages_name_the_client_and_the_login() {
        assert_eq!(
            accepted(LOG),
            vec![
                Accepted {
                    queue_id: "9BCD498C1CF".into(),
                    client: ip("127.0.0.1"),
                    sasl: Some(SaslLogin {
                        method: "PLAIN".into(),
                        username: "relay-user".into(),
                    }),
                },
                Accepted {
                    queue_id: "78B6298C151".into(),
                    client: ip("127.0.0.3"),
                    sasl: None,
                },
            ]
        );
    }

    #[test]
    fn auth_failures_and_rejections_are_read() {
        assert_eq!(
            auth_failures(LOG),
            vec![
                AuthFailure {
                    client: ip("127.0.0.2"),
                    method: "PLAIN".into(),
                    reason: "authentication failure".into(),
                    username: Some("relay-user".into()),
                },
                AuthFailure {
                    client: ip("127.0.0.2"),
                    method: "PLAIN".into(),
                    reason: "no mechanism available".into(),
                    username: None,
                },
            ]
        );
        assert_eq!(
            rejections(LOG),
            vec![Rejection {
                client: ip("127.0.0.2"),
                command: "RCPT".into(),
                reply: "554 5.7.1 <x@dest.test>: Recipient address rejected: Access denied".into(),
                from: "a@src.test".into(),
                to: Some("x@dest.test".into()),
            }]
        );
    }

    #[test]
    fn sessions_split_by_process_and_by_tls() {
        let sessions = sessions(LOG);
        let summary: Vec<(u32, IpAddr, usize, usize, bool)> = sessions
            .iter()
            .map(|s| {
                (
                    s.pid,
                    s.client,
                    s.transcript.len(),
                    s.before_tls,
                    s.summary.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (375, ip("127.0.0.1"), 6, 4, true),
                (376, ip("127.0.0.2"), 0, 0, true),
                (375, ip("127.0.0.3"), 1, 0, false),
            ]
        );
        assert_eq!(
            sessions[0].plaintext_commands(),
            vec!["ehlo client.test", "STARTTLS"]
        );
        assert_eq!(
            sessions[0].commands()[2..],
            ["ehlo client.test", "AUTH PLAIN AHJlbGF5LXVzZXIAczNjcmV0"]
        );
        assert_eq!(
            sessions[0].tls.as_deref(),
            Some("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")
        );
        assert_eq!(
            sessions[1].summary.as_deref(),
            Some("ehlo=2 starttls=1 auth=0/1 mail=1 rcpt=0/1 rset=1 quit=1 commands=6/8")
        );
        assert!(sessions[2].plaintext_commands().is_empty());
    }

    #[test]
    fn connections_are_counted_per_client() {
        let counts = connections_by_client(LOG);
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            vec![
                (ip("127.0.0.1"), 1),
                (ip("127.0.0.2"), 1),
                (ip("127.0.0.3"), 1)
            ]
        );
    }

    #[test]
    fn other_lines_are_not_mistaken() {
        for line in [
            "Dec 07 19:52:22 postfix postfix/cleanup[383]: 9BCD498C1CF: client=unknown[127.0.0.1]",
            "Dec 07 19:52:22 postfix postfix/smtpd[375]: xsasl_cyrus_server_first: sasl_method PLAIN",
            "Dec 07 19:52:22 postfix postfix/smtpd[375]: warning: SASL authentication failure: Password verification failed",
            "Dec 07 19:52:22 postfix postfix/smtpd[375]: generic_checks: name=reject status=2",
        ] {
            assert!(accepted(line).is_empty(), "{line}");
            assert!(auth_failures(line).is_empty(), "{line}");
            assert!(rejections(line).is_empty(), "{line}");
        }
    }
}
