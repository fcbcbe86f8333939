//! Mail loops (RFC 5321 §6.3): a server whose greeting or EHLO reply names
//! this host is this host, or relays back to it under our name (an MX
//! record pointing at ourselves, a port forwarded to our own listener).
//! Handing it the message would bring the message back; Postfix refuses
//! the same with `mail for <domain> loops back to myself`.

use super::reply::Reply;

/// Whether `reply` (the 220 greeting, or the 250 reply to EHLO or HELO)
/// names `hostname`: the first word of its first line is the server's name
/// (RFC 5321 §4.2, §4.1.1.1), compared without regard to case or a
/// trailing dot. An empty name names no one.
pub fn names_host(reply: &Reply, hostname: &str) -> bool {
    let wanted = hostname.trim_end_matches('.');
    let named = reply
        .lines
        .first()
        .and_then(|line| line.split_ascii_whitespace().next())
        .map(|word| word.trim_end_matches('.'));
    !wanted.is_empty() && named.is_some_and(|name| name.eq_ignore_ascii_case(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_host_table() {
        let cases = [
            ("220 postman.test ESMTP ready", "postman.test", true),
            ("220 POSTMAN.Test. ESMTP", "postman.test", true),
            ("220 postman.test", "Postman.Test.", true),
            (
                "220-postman.test ESMTP\n220 second line",
                "postman.test",
                true,
            ),
            (
                "250-postman.test greets you\n250 PIPELINING",
                "postman.test",
                true,
            ),
            ("250 [192.0.2.1] hello", "[192.0.2.1]", true),
            (
                "220 mx.other.test ESMTP postman.test",
                "postman.test",
                false,
            ),
            ("220 postman.test.example ESMTP", "postman.test", false),
            ("220 mail.postman.test ESMTP", "postman.test", false),
            ("250-mx.test\n250 postman.test", "postman.test", false),
            ("220", "postman.test", false),
            ("220 ", "", false),
        ];
        for (text, hostname, want) in cases {
            let reply: Reply = text
                .replace('\n', "\r\n")
                .parse()
                .unwrap_or_else(|e| panic!("test reply {text:?}: {e}"));
            assert_eq!(
                names_host(&reply, hostname),
                want,
                "{text:?} names {hostname:?}"
            );
        }
    }
}
