//! The policy fetch's HTTP (RFC 8461 §3.3), sans-IO: the request to send
//! and the check of the response bytes as they arrive. The actor reads
//! the TLS stream and asks [`response`] after every read whether the
//! policy is whole, still coming, or refused.
//!
//! The request is HTTP/1.0 with `Connection: close`: a 1.0 response has no
//! chunked encoding (RFC 9112 §6.1), so the body is `Content-Length`
//! octets, or everything up to the end of the stream. A body cut short
//! still parses as a policy (with fewer `mx` lines), so the end is checked:
//! a declared length must be met exactly, and without one the stream must
//! end with TLS's close_notify, not a bare EOF an attacker can forge.

/// The path of the policy on `mta-sts.<domain>` (RFC 8461 §3.2).
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// The largest policy body taken (Postfix's resolver, pmsr's
/// `HARD_RESP_LIMIT`: 64 KiB; a real policy is a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// The largest status line and header block taken.
pub const MAX_HEAD: usize = 16 * 1024;

/// Headers looked at, at most; a response with more is refused.
const MAX_HEADERS: usize = 64;

/// The name of the host serving `domain`'s policy (RFC 8461 §3.3).
pub fn policy_host(domain: &str) -> String {
    format!("mta-sts.{}", domain.trim_end_matches('.'))
}

/// The GET request for `domain`'s policy.
pub fn request(domain: &str) -> Vec<u8> {
    format!(
        "GET {POLICY_PATH} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\
         User-Agent: postman\r\nAccept: text/plain\r\n\r\n",
        policy_host(domain)
    )
    .into_bytes()
}

/// How far the stream has got when [`response`] is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// More may come.
    Open,
    /// The server ended the stream with a TLS close_notify: what came is
    /// all it sent.
    Closed,
    /// The stream ended without close_notify (a reset, a bare FIN): the
    /// data may have been cut short by anyone on the path.
    Cut,
}

/// Why a response is not a policy body. All of them are RFC 8460's
/// `sts-policy-fetch-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The bytes are not an HTTP response.
    #[error("the response is not HTTP: {0}")]
    Malformed(String),
    /// The status line and headers are longer than [`MAX_HEAD`].
    #[error("the response header is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// A status other than 200; redirects are not followed (RFC 8461 §3.3).
    #[error("HTTP status {0} (only 200 is accepted, redirects are not followed)")]
    Status(u16),
    /// The media type is not `text/plain` (RFC 8461 §3.2), or none is given.
    #[error("media type {0:?} (text/plain expected)")]
    ContentType(String),
    /// The body is, or says it is, longer than [`MAX_BODY`].
    #[error("the policy is longer than {MAX_BODY} bytes")]
    TooLarge,
    /// `Content-Length` is not one number.
    #[error("bad Content-Length {0:?}")]
    BadLength(String),
    /// More body than `Content-Length` declared.
    #[error("the body is longer than its Content-Length {0}")]
    TooLong(usize),
    /// The stream ended before the declared length, or without close_notify
    /// where no length was declared: the policy may be cut short.
    #[error("the response was cut short ({got} bytes of body{})", declared_text(*.declared))]
    Truncated {
        /// Body octets received.
        got: usize,
        /// `Content-Length`, when given.
        declared: Option<usize>,
    },
}

fn declared_text(declared: Option<usize>) -> String {
    match declared {
        Some(n) => format!(", {n} declared"),
        None => ", no TLS close_notify".to_owned(),
    }
}

/// Checks the response bytes `buf` received so far, the stream being at
/// `end`: `Ok(Some(body))` when the policy body is whole, `Ok(None)` when
/// more must be read (only while [`End::Open`]), `Err` when the response is
/// refused (which may be known before its end: a 404 is not read further).
pub fn response(buf: &[u8], end: End) -> Result<Option<&[u8]>, FetchError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(FetchError::HeadTooLong)
        }
        Ok(httparse::Status::Partial) => {
            return match end {
                End::Open => Ok(None),
                End::Closed | End::Cut if buf.is_empty() => {
                    Err(FetchError::Malformed("no response".to_owned()))
                }
                End::Closed | End::Cut => Err(FetchError::Malformed(
                    "the stream ended inside the header".to_owned(),
                )),
            };
        }
        Err(e) => return Err(FetchError::Malformed(e.to_string())),
    };
    if head_len > MAX_HEAD {
        return Err(FetchError::HeadTooLong);
    }
    let status = parsed.code.unwrap_or(0);
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    let declared = head(parsed.headers)?;
    let body = &buf[head_len..];
    match declared {
        Some(n) if n > MAX_BODY => Err(FetchError::TooLarge),
        Some(n) if body.len() > n => Err(FetchError::TooLong(n)),
        Some(n) if body.len() == n => Ok(Some(body)),
        _ if body.len() > MAX_BODY => Err(FetchError::TooLarge),
        Some(_) | None if end == End::Open => Ok(None),
        None if end == End::Closed => Ok(Some(body)),
        declared => Err(FetchError::Truncated {
            got: body.len(),
            declared,
        }),
    }
}

/// Checks the headers that matter and returns `Content-Length`, if any.
fn head(headers: &[httparse::Header<'_>]) -> Result<Option<usize>, FetchError> {
    let mut media = None;
    let mut length = None;
    for header in headers {
        let value = String::from_utf8_lossy(header.value);
        let value = value.trim_matches([' ', '\t']);
        if header.name.eq_ignore_ascii_case("content-type") {
            if media.is_some() {
                return Err(FetchError::ContentType("two Content-Type headers".into()));
            }
            media = Some(value.to_owned());
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| FetchError::BadLength(value.to_owned()))?;
            // Repeated with the same value is allowed (RFC 9110 §8.6).
            if length.is_some_and(|l| l != n) {
                return Err(FetchError::BadLength(value.to_owned()));
            }
            length = Some(n);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Not in an HTTP/1.0 exchange; its framing would not be ours.
            return Err(FetchError::Malformed(format!(
                "Transfer-Encoding {value:?} in answer to HTTP/1.0"
            )));
        }
    }
    let media = media.unwrap_or_default();
    let essence = media.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("text/plain") {
        return Err(FetchError::ContentType(media));
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(head: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\n{head}\r\n{body}").into_bytes()
    }

    const POLICY: &str = "version: STSv1\nmode: enforce\nmx: mx.d.test\nmax_age: 86400\n";

    #[test]
    fn the_request_asks_the_policy_host_for_the_policy_and_closes() {
        let text = String::from_utf8(request("d.test.")).unwrap();
        assert!(text.starts_with("GET /.well-known/mta-sts.txt HTTP/1.0\r\n"));
        assert!(text.contains("\r\nHost: mta-sts.d.test\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn a_response_is_a_policy_only_when_whole_and_as_asked() {
        let len = POLICY.len();
        let plain = format!("Content-Type: text/plain\r\nContent-Length: {len}\r\n");
        let charset =
            format!("content-type: Text/Plain; charset=utf-8\r\ncontent-length: {len}\r\n");
        let twice = format!("{plain}Content-Length: {len}\r\n");
        let no_length = "Content-Type: text/plain\r\n".to_owned();
        let big = "x".repeat(MAX_BODY + 1);
        use End::*;
        type Want = Result<Option<&'static str>, FetchError>;
        let whole: Want = Ok(Some(POLICY));
        let cases: Vec<(&str, Vec<u8>, End, Want)> = vec![
            ("length met", ok(&plain, POLICY), Open, whole.clone()),
            (
                "length met, then closed",
                ok(&plain, POLICY),
                Closed,
                whole.clone(),
            ),
            // Met exactly: a missing close_notify cuts nothing off.
            (
                "length met, then cut",
                ok(&plain, POLICY),
                Cut,
                whole.clone(),
            ),
            (
                "media type parameters",
                ok(&charset, POLICY),
                Open,
                whole.clone(),
            ),
            ("same length twice", ok(&twice, POLICY), Open, whole.clone()),
            (
                "no length, closed",
                ok(&no_length, POLICY),
                Closed,
                whole.clone(),
            ),
            ("no length, open", ok(&no_length, POLICY), Open, Ok(None)),
            (
                "no length, cut",
                ok(&no_length, POLICY),
                Cut,
                Err(FetchError::Truncated {
                    got: len,
                    declared: None,
                }),
            ),
            ("short, open", ok(&plain, &POLICY[..10]), Open, Ok(None)),
            (
                "short, closed",
                ok(&plain, &POLICY[..10]),
                Closed,
                Err(FetchError::Truncated {
                    got: 10,
                    declared: Some(len),
                }),
            ),
            (
                "longer than declared",
                ok(&plain, &format!("{POLICY}mx: evil.test\n")),
                Closed,
                Err(FetchError::TooLong(len)),
            ),
            (
                "head partial",
                b"HTTP/1.1 200 OK\r\nContent-Ty".to_vec(),
                Open,
                Ok(None),
            ),
            (
                "head cut",
                b"HTTP/1.1 200 OK\r\nContent-Ty".to_vec(),
                Cut,
                Err(FetchError::Malformed(
                    "the stream ended inside the header".into(),
                )),
            ),
            (
                "nothing",
                Vec::new(),
                Closed,
                Err(FetchError::Malformed("no response".into())),
            ),
            (
                "redirect",
                b"HTTP/1.1 301 Moved\r\nLocation: https://evil.test/\r\n\r\n".to_vec(),
                Open,
                Err(FetchError::Status(301)),
            ),
            (
                "not found",
                b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n\r\n".to_vec(),
                Open,
                Err(FetchError::Status(404)),
            ),
            (
                "html",
                ok(
                    &format!("Content-Type: text/html\r\nContent-Length: {len}\r\n"),
                    POLICY,
                ),
                Open,
                Err(FetchError::ContentType("text/html".into())),
            ),
            (
                "plain-ish",
                ok(
                    &format!("Content-Type: text/plainx\r\nContent-Length: {len}\r\n"),
                    POLICY,
                ),
                Open,
                Err(FetchError::ContentType("text/plainx".into())),
            ),
            (
                "no media type",
                ok(&format!("Content-Length: {len}\r\n"), POLICY),
                Open,
                Err(FetchError::ContentType(String::new())),
            ),
            (
                "declared too large",
                ok(
                    &format!(
                        "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                        MAX_BODY + 1
                    ),
                    "",
                ),
                Open,
                Err(FetchError::TooLarge),
            ),
            (
                "too large, undeclared",
                ok(&no_length, &big),
                Open,
                Err(FetchError::TooLarge),
            ),
            (
                "two lengths",
                ok(&format!("{plain}Content-Length: 3\r\n"), POLICY),
                Open,
                Err(FetchError::BadLength("3".into())),
            ),
            (
                "signed length",
                ok("Content-Type: text/plain\r\nContent-Length: +5\r\n", POLICY),
                Open,
                Err(FetchError::BadLength("+5".into())),
            ),
            (
                "chunked",
                ok(
                    "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n",
                    POLICY,
                ),
                Open,
                Err(FetchError::Malformed(
                    "Transfer-Encoding \"chunked\" in answer to HTTP/1.0".into(),
                )),
            ),
        ];
        for (name, bytes, end, want) in cases {
            let got = response(&bytes, end);
            let want = want.map(|body| body.map(str::as_bytes));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_whole_policy_is_found_wherever_the_reads_split_it() {
        let bytes = ok(
            &format!(
                "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                POLICY.len()
            ),
            POLICY,
        );
        for cut in 0..bytes.len() {
            assert_eq!(response(&bytes[..cut], End::Open), Ok(None), "at {cut}");
        }
        assert_eq!(response(&bytes, End::Open), Ok(Some(POLICY.as_bytes())));
    }

    #[test]
    fn an_endless_header_is_refused() {
        let mut bytes = b"HTTP/1.1 200 OK\r\nX-Padding: ".to_vec();
        bytes.resize(MAX_HEAD + 1, b'a');
        assert_eq!(response(&bytes, End::Open), Err(FetchError::HeadTooLong));
    }
}
