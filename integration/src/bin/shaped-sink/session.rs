//! The server side of one SMTP connection (RFC 5321 §4.1, PIPELINING of
//! RFC 2920), sans-IO: fed the bytes the client sent, it appends its replies
//! to an output buffer and says when to close. What a site decides (its
//! rate, its greylist) and what an accepted message counts for come from a
//! [`Policy`].
//!
//! It keeps no message: a DATA body is only scanned for its end
//! (`CRLF.CRLF`), as smtp-sink does.

use std::time::Instant;

/// The site's side of a conversation.
pub trait Policy {
    /// A throttle reply for MAIL FROM at `now`, or None to accept it.
    fn mail(&self, now: Instant) -> Option<String>;
    /// A refusal (greylisting) of `recipient` from `sender`, or None.
    fn rcpt(&self, sender: &str, recipient: &str, now: Instant) -> Option<String>;
    /// A throttle reply for the final dot, or None to accept the message.
    fn data_end(&self, now: Instant) -> Option<String>;
    /// A message to `recipients` was accepted.
    fn accepted(&self, recipients: &[String], now: Instant);
}

/// The end of a DATA body: CRLF, dot, CRLF.
const TERMINATOR: &[u8] = b"\r\n.\r\n";
/// A command line longer than this is answered 500 and dropped (RFC 5321
/// §4.5.3.1.4 says 512 octets; smtp-sink allows 2048).
const MAX_LINE: usize = 2048;

#[derive(Debug, PartialEq, Eq)]
enum State {
    Command,
    /// In a DATA body; `matched` octets of [`TERMINATOR`] seen.
    Data {
        matched: usize,
    },
}

/// One connection's conversation.
pub struct Session {
    hostname: String,
    state: State,
    line: Vec<u8>,
    /// The line in progress ran over [`MAX_LINE`]: discard to its end.
    overlong: bool,
    sender: Option<String>,
    recipients: Vec<String>,
    out: Vec<u8>,
    close: bool,
}

impl Session {
    /// A session whose greeting is already in [`Session::output`].
    pub fn new(hostname: &str) -> Session {
        let mut s = Session {
            hostname: hostname.to_owned(),
            state: State::Command,
            line: Vec::new(),
            overlong: false,
            sender: None,
            recipients: Vec::new(),
            out: Vec::new(),
            close: false,
        };
        s.reply(&format!("220 {hostname} ESMTP shaped-sink"));
        s
    }

    /// Replies to send now; the caller sends and clears them.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Whether the connection ends once the output is sent.
    pub fn closing(&self) -> bool {
        self.close
    }

    /// Takes what the client sent.
    pub fn feed(&mut self, mut input: &[u8], policy: &dyn Policy, now: Instant) {
        while !input.is_empty() && !self.close {
            let used = match self.state {
                State::Data { matched } => self.data(input, matched, policy, now),
                State::Command => self.command_bytes(input, policy, now),
            };
            input = &input[used..];
        }
    }

    /// Scans a DATA body for its end; returns the octets used.
    fn data(
        &mut self,
        input: &[u8],
        mut matched: usize,
        policy: &dyn Policy,
        now: Instant,
    ) -> usize {
        for (i, &b) in input.iter().enumerate() {
            matched = if b == TERMINATOR[matched] {
                matched + 1
            } else {
                usize::from(b == b'\r')
            };
            if matched == TERMINATOR.len() {
                self.state = State::Command;
                self.end_of_data(policy, now);
                return i + 1;
            }
        }
        self.state = State::Data { matched };
        input.len()
    }

    fn end_of_data(&mut self, policy: &dyn Policy, now: Instant) {
        match policy.data_end(now) {
            Some(refusal) => self.refuse(&refusal),
            None => {
                policy.accepted(&self.recipients, now);
                self.reply("250 2.0.0 Ok: queued");
            }
        }
        self.sender = None;
        self.recipients.clear();
    }

    /// Gathers a command line; returns the octets used.
    fn command_bytes(&mut self, input: &[u8], policy: &dyn Policy, now: Instant) -> usize {
        let Some(end) = input.iter().position(|&b| b == b'\n') else {
            self.keep(input);
            return input.len();
        };
        self.keep(&input[..end]);
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if std::mem::take(&mut self.overlong) {
            self.reply("500 5.5.2 Error: line too long");
        } else {
            self.command(&String::from_utf8_lossy(&line), policy, now);
        }
        line.clear();
        self.line = line;
        end + 1
    }

    fn keep(&mut self, part: &[u8]) {
        if self.line.len() + part.len() > MAX_LINE {
            self.overlong = true;
            self.line.clear();
        } else if !self.overlong {
            self.line.extend_from_slice(part);
        }
    }

    fn command(&mut self, line: &str, policy: &dyn Policy, now: Instant) {
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                self.reset();
                let ehlo = format!(
                    "250-{}\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES",
                    self.hostname
                );
                self.reply(&ehlo);
            }
            "HELO" => {
                self.reset();
                let helo = format!("250 {}", self.hostname);
                self.reply(&helo);
            }
            "MAIL" if self.sender.is_some() => self.reply("503 5.5.1 Error: nested MAIL command"),
            "MAIL" => match policy.mail(now) {
                Some(refusal) => self.refuse(&refusal),
                None => {
                    self.sender = Some(address(line));
                    self.reply("250 2.1.0 Ok");
                }
            },
            "RCPT" => match &self.sender {
                None => self.reply("503 5.5.1 Error: need MAIL command"),
                Some(sender) => {
                    let recipient = address(line);
                    match policy.rcpt(sender, &recipient, now) {
                        Some(refusal) => self.refuse(&refusal),
                        None => {
                            self.recipients.push(recipient);
                            self.reply("250 2.1.5 Ok");
                        }
                    }
                }
            },
            "DATA" if self.recipients.is_empty() => {
                self.reset();
                self.reply("554 5.5.1 Error: no valid recipients");
            }
            "DATA" => {
                self.reply("354 End data with <CR><LF>.<CR><LF>");
                // The body starts at the beginning of a line.
                self.state = State::Data { matched: 2 };
            }
            "RSET" => {
                self.reset();
                self.reply("250 2.0.0 Ok");
            }
            "NOOP" => self.reply("250 2.0.0 Ok"),
            "QUIT" => {
                self.reply("221 2.0.0 Bye");
                self.close = true;
            }
            _ => self.reply("502 5.5.2 Error: command not recognized"),
        }
    }

    /// A refusal from the site; a 421 ends the connection (RFC 5321
    /// §3.8).
    fn refuse(&mut self, reply: &str) {
        self.reply(reply);
        if reply.starts_with("421") {
            self.close = true;
        }
    }

    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    fn reply(&mut self, text: &str) {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

/// The address of `MAIL FROM:<a@b> SIZE=1` or `RCPT TO:<a@b>`, without its
/// brackets; the text after the colon when there are none.
fn address(line: &str) -> String {
    let after = line
        .split_once(':')
        .map_or("", |(_, rest)| rest)
        .trim_start();
    match (after.find('<'), after.find('>')) {
        (Some(open), Some(close)) if open < close => after[open + 1..close].to_owned(),
        _ => after.split(' ').next().unwrap_or("").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Script {
        mail: Option<String>,
        grey: Option<String>,
        data_end: Option<String>,
        accepted: RefCell<Vec<Vec<String>>>,
    }

    impl Policy for Script {
        fn mail(&self, _: Instant) -> Option<String> {
            self.mail.clone()
        }
        fn rcpt(&self, _: &str, r: &str, _: Instant) -> Option<String> {
            self.grey.clone().filter(|_| r.starts_with("grey"))
        }
        fn data_end(&self, _: Instant) -> Option<String> {
            self.data_end.clone()
        }
        fn accepted(&self, r: &[String], _: Instant) {
            self.accepted.borrow_mut().push(r.to_vec());
        }
    }

    /// Feeds `input` split at `step` octets; returns the replies.
    fn run(policy: &Script, input: &[u8], step: usize) -> (String, bool) {
        let mut s = Session::new("sink.test");
        s.output().clear();
        for chunk in input.chunks(step) {
            s.feed(chunk, policy, Instant::now());
        }
        (
            String::from_utf8_lossy(s.output()).into_owned(),
            s.closing(),
        )
    }

    const PIPELINED: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@src.test> SIZE=10\r\nRCPT TO:<u1@d.test>\r\nDATA\r\n\
        Subject: x\r\n\r\n..dot\r\n.\r\nMAIL FROM:<a@src.test>\r\nRCPT TO:<u2@d.test>\r\nDATA\r\n.\r\nQUIT\r\n";

    #[test]
    fn pipelined_messages_are_accepted_whatever_the_split() {
        for step in 1..PIPELINED.len() {
            let policy = Script::default();
            let (out, closing) = run(&policy, PIPELINED, step);
            assert_eq!(
                out.matches("250 2.0.0 Ok: queued").count(),
                2,
                "step {step}: {out}"
            );
            assert!(out.ends_with("221 2.0.0 Bye\r\n") && closing);
            assert_eq!(
                *policy.accepted.borrow(),
                vec![vec!["u1@d.test".to_string()], vec!["u2@d.test".to_string()]]
            );
        }
    }

    #[test]
    fn a_421_throttle_at_mail_closes_and_a_450_does_not() {
        let policy = Script {
            mail: Some("421 4.7.0 [TSS04] deferred".into()),
            ..Script::default()
        };
        let (out, closing) = run(&policy, PIPELINED, 7);
        assert!(
            out.ends_with("421 4.7.0 [TSS04] deferred\r\n") && closing,
            "{out}"
        );
        let policy = Script {
            mail: Some("450 4.7.650 rate limited".into()),
            ..Script::default()
        };
        let (out, closing) = run(&policy, PIPELINED, 7);
        assert!(out.contains("554 5.5.1") && closing && policy.accepted.borrow().is_empty());
    }

    #[test]
    fn greylisted_recipient_leaves_data_without_recipients() {
        let policy = Script {
            grey: Some("450 4.2.0 greylisted".into()),
            ..Script::default()
        };
        let input = b"HELO c\r\nMAIL FROM:<a@s>\r\nRCPT TO:<grey@d>\r\nDATA\r\nQUIT\r\n";
        let (out, _) = run(&policy, input, 100);
        assert!(out.contains("450 4.2.0 greylisted\r\n554 5.5.1"), "{out}");
    }

    #[test]
    fn a_throttle_at_the_final_dot_refuses_the_message() {
        let policy = Script {
            data_end: Some("421 4.7.28 rate limited".into()),
            ..Script::default()
        };
        let (out, closing) = run(&policy, PIPELINED, 3);
        assert!(out.ends_with("354 End data with <CR><LF>.<CR><LF>\r\n421 4.7.28 rate limited\r\n"));
        assert!(closing && policy.accepted.borrow().is_empty());
    }

    #[test]
    fn overlong_lines_are_refused_and_skipped() {
        let mut input = vec![b'x'; 5000];
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let (out, _) = run(&Script::default(), &input, 1000);
        assert_eq!(out, "500 5.5.2 Error: line too long\r\n250 2.0.0 Ok\r\n");
    }
}
