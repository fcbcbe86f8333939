//! xtext (RFC 3461 §4): how DSN parameters (ENVID, ORCPT) carry any octet
//! in printable ASCII. An `xchar` is any of `!` (33) to `~` (126) except
//! `+` and `=`; every other octet is `+` and two upper-case hex digits.

/// Whether `text` is well-formed xtext: xchars, and `+` only before two
/// upper-case hex digits.
pub fn is_valid(text: &str) -> bool {
    decode(text).is_some()
}

/// The octets `text` stands for; `None` when it is not xtext (a space, a
/// control or non-ASCII character, a bare `=`, a `+` not followed by two
/// upper-case hex digits).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => {
                let hi = bytes.get(i + 1).copied().and_then(upper_hex)?;
                let lo = bytes.get(i + 2).copied().and_then(upper_hex)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'=' => return None,
            33..=126 => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// `octets` as xtext: xchars as they are, the rest as `+HH`.
pub fn encode(octets: &[u8]) -> String {
    let mut out = String::with_capacity(octets.len());
    for &b in octets {
        match b {
            b'+' | b'=' => push_hex(&mut out, b),
            33..=126 => out.push(char::from(b)),
            _ => push_hex(&mut out, b),
        }
    }
    out
}

/// The decoded text for a human or a report, when it is printable ASCII;
/// otherwise the xtext itself (RFC 3464 §2.2.1 allows xtext there).
pub fn printable(text: &str) -> String {
    match decode(text) {
        Some(octets) if octets.iter().all(|b| (32..=126).contains(b)) => {
            String::from_utf8(octets).unwrap_or_else(|_| text.to_owned())
        }
        _ => text.to_owned(),
    }
}

fn push_hex(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('+');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3461_examples_decode() {
        assert_eq!(decode("QQ314159").as_deref(), Some(&b"QQ314159"[..]));
        assert_eq!(
            decode("a+2Bb+3Dc").as_deref(),
            Some(&b"a+b=c"[..]),
            "+ and = are always encoded"
        );
        assert_eq!(decode("").as_deref(), Some(&b""[..]));
    }

    #[test]
    fn malformed_xtext_is_refused() {
        for bad in [
            "a b", "a=b", "+", "+2", "+2b", "+G0", "a\tb", "é", "a\u{7f}", "+zz",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn encoding_quotes_plus_equals_space_controls_and_8bit() {
        assert_eq!(encode(b"a+b=c d\r\n"), "a+2Bb+3Dc+20d+0D+0A");
        assert_eq!(encode("é".as_bytes()), "+C3+A9");
        assert_eq!(encode(b"!~"), "!~");
    }

    #[test]
    fn every_octet_string_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        for chunk in all.chunks(7) {
            let text = encode(chunk);
            assert!(is_valid(&text), "{text}");
            assert_eq!(decode(&text).as_deref(), Some(chunk));
        }
        let text = encode(&all);
        assert_eq!(decode(&text), Some(all));
    }

    #[test]
    fn printable_shows_decoded_ascii_and_keeps_the_rest_encoded() {
        assert_eq!(printable("QQ+2B1"), "QQ+1");
        assert_eq!(printable("a+20b"), "a b");
        assert_eq!(printable("x+0Ay"), "x+0Ay");
        assert_eq!(printable("+C3+A9"), "+C3+A9");
    }
}
