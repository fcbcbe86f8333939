//! Text for an operator's terminal or a log viewer: the characters they
//! act on (controls, line separators, bidirectional overrides) rather than
//! show. The daemon's log escapes them in every record; the operator
//! commands escape them in what they print.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal or a log viewer raw: the C0 and
/// C1 controls and DEL, the Unicode line and paragraph separators, and the
/// bidirectional marks, embeddings, overrides and isolates, which reorder
/// what is shown around them.
pub fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` for an operator's terminal (what the operator commands print):
/// as the daemon's `term` log format escapes it, but line ends and tabs
/// are kept (the commands lay out their output with them) and nothing is
/// cut; the characters above ASCII become `\uXXXX`, as JSON writes them,
/// so that the escape means the same inside the strings of `--json`
/// output (where serde_json has escaped the ASCII ones already).
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    let keep = |c: char| c == '\n' || c == '\t' || !must_escape(c);
    if text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\n' || b == b'\t')
        || text.chars().all(keep)
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        let _ = match c {
            c if keep(c) => {
                out.push(c);
                Ok(())
            }
            '\0' => out.write_str("\\0"),
            '\r' => out.write_str("\\r"),
            c if c.is_ascii() => write!(out, "\\x{:02x}", u32::from(c)),
            // All of them are in the Basic Multilingual Plane.
            c => write!(out, "\\u{:04x}", u32::from(c)),
        };
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_keeps_layout_and_escapes_controls() {
        let cases = [
            ("plain\n\tindented\n", "plain\n\tindented\n"),
            ("caf\u{e9} \u{1f4ec}", "caf\u{e9} \u{1f4ec}"),
            ("m\u{1b}[2J\u{7}1\r\0", "m\\x1b[2J\\x071\\r\\0"),
            ("c1 \u{9b}31m rtl \u{202e}x", "c1 \\u009b31m rtl \\u202ex"),
        ];
        for (text, want) in cases {
            assert_eq!(for_terminal(text), want, "for_terminal({text:?})");
        }
        // Inside a JSON string the escape means the same character.
        let json = serde_json::to_string(&"a\u{9b}b").expect("json");
        let back: String = serde_json::from_str(&for_terminal(&json)).expect("still JSON");
        assert_eq!(back, "a\u{9b}b", "JSON round trip of {json:?}");
    }
}
