//! What every record's text goes through before it is written, in one
//! place for every record and every value: its message, its values and
//! its loggers' values (`peer`, `queue_id`, …). Much of it comes from
//! outside (server replies, addresses, file names, settings, the texts of
//! errors that quote them), so:
//!
//! * each text is cut to [`LIMIT`] bytes, marked `… [cut: N bytes]` with
//!   its whole length: a 10 MB bad config line quoted by an error makes a
//!   record of a few KB, and is never copied whole into the record;
//! * in the `term` format, characters a terminal acts on are escaped as
//!   Rust writes them (`\x1b`, `\r`, `\0`, `\u{9b}`), so a reply holding
//!   ESC sequences, BEL or CR shows as text and cannot rewrite the
//!   operator's screen; ordinary text, UTF-8 included, is left as it is;
//! * in JSON, which escapes C0 controls itself, [`json_escape_tail`]
//!   writes the rest (DEL, the C1 controls that terminals also act on,
//!   the Unicode line separators and bidirectional overrides) as `\uXXXX`,
//!   so a JSON record stays valid JSON and means the same.
//!
//! The escaping is for the reader's safety, not a reversible encoding: a
//! backslash from outside stays a backslash. The JSON log is the exact one.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use postman::terminal::must_escape;
use slog::{Key, OwnedKV, OwnedKVList, Record, Serializer, KV};

/// The most bytes of one text a record carries.
pub(super) const LIMIT: usize = 4096;

/// Room kept for the marker of a cut text (`… [cut: N bytes]`, at most
/// 40 bytes for a 20-digit N).
const MARKER_ROOM: usize = 64;

/// How a text is written in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// `term`: cut, and what a terminal acts on escaped.
    Escape,
    /// JSON: cut; its serializer and [`json_escape_tail`] escape.
    Cut,
}

/// Whether `text` can be written as it is under `mode`.
fn plain(text: &str, mode: Mode) -> bool {
    mode == Mode::Cut
        || text.bytes().all(|b| (0x20..0x7f).contains(&b))
        || !text.chars().any(must_escape)
}

/// A text being cleaned as it is written, piece by piece: it keeps at most
/// [`LIMIT`] bytes, however long the text (a `Display` of a huge error is
/// never held whole), and counts the rest.
struct Text {
    mode: Mode,
    out: String,
    /// Bytes of the text seen, kept or not.
    seen: usize,
    /// The last place in `out`, at most `LIMIT - MARKER_ROOM`, between two
    /// characters (and so never inside an escape): where a cut falls.
    cut_at: usize,
    cut: bool,
}

impl Text {
    fn new(mode: Mode) -> Text {
        Text {
            mode,
            out: String::new(),
            seen: 0,
            cut_at: 0,
            cut: false,
        }
    }

    fn push(&mut self, c: char) {
        if self.mode == Mode::Cut || !must_escape(c) {
            self.out.push(c);
            return;
        }
        // Rust's escapes, as `escape_debug` writes them, but `\x..` for the
        // ASCII controls, as a reader of C or a shell expects.
        let _ = match c {
            '\0' => self.out.write_str("\\0"),
            '\t' => self.out.write_str("\\t"),
            '\n' => self.out.write_str("\\n"),
            '\r' => self.out.write_str("\\r"),
            c if c.is_ascii() => write!(self.out, "\\x{:02x}", u32::from(c)),
            c => write!(self.out, "\\u{{{:x}}}", u32::from(c)),
        };
    }

    fn finish(mut self) -> String {
        if self.cut {
            let _ = write!(self.out, "… [cut: {} bytes]", self.seen);
        }
        self.out
    }
}

impl fmt::Write for Text {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        self.seen += piece.len();
        if self.cut {
            return Ok(());
        }
        let keep = LIMIT - MARKER_ROOM;
        if self.out.len() + piece.len() <= keep && plain(piece, self.mode) {
            self.out.push_str(piece);
            self.cut_at = self.out.len();
            return Ok(());
        }
        for c in piece.chars() {
            if self.out.len() <= keep {
                self.cut_at = self.out.len();
            }
            self.push(c);
            if self.out.len() > LIMIT {
                self.out.truncate(self.cut_at);
                self.cut = true;
                break;
            }
        }
        Ok(())
    }
}

/// `args` cleaned for `mode`; borrowed when it is a short plain literal.
pub(super) fn text<'a>(args: &fmt::Arguments<'a>, mode: Mode) -> Cow<'a, str> {
    if let Some(literal) = args.as_str() {
        if literal.len() <= LIMIT && plain(literal, mode) {
            return Cow::Borrowed(literal);
        }
    }
    let mut text = Text::new(mode);
    let _ = text.write_fmt(*args);
    Cow::Owned(text.finish())
}

/// `value` cleaned for `mode`; borrowed when nothing needs doing.
pub(super) fn str(value: &str, mode: Mode) -> Cow<'_, str> {
    if value.len() <= LIMIT && plain(value, mode) {
        return Cow::Borrowed(value);
    }
    let mut text = Text::new(mode);
    let _ = text.write_str(value);
    Cow::Owned(text.finish())
}

/// A record's values, cleaned as they are serialized.
pub(super) struct Cleaned<'a> {
    pub(super) kv: &'a dyn KV,
    pub(super) mode: Mode,
}

impl KV for Cleaned<'_> {
    fn serialize(&self, record: &Record<'_>, serializer: &mut dyn Serializer) -> slog::Result {
        self.kv.serialize(
            record,
            &mut CleanSerializer {
                inner: serializer,
                mode: self.mode,
            },
        )
    }
}

/// The loggers' values (`actor`, `peer`, `queue_id`, …), cleaned when the
/// drain thread formats them.
struct CleanedList {
    list: OwnedKVList,
    mode: Mode,
}

impl KV for CleanedList {
    fn serialize(&self, record: &Record<'_>, serializer: &mut dyn Serializer) -> slog::Result {
        Cleaned {
            kv: &self.list,
            mode: self.mode,
        }
        .serialize(record, serializer)
    }
}

/// `values` cleaned for `mode`.
pub(super) fn values(values: &OwnedKVList, mode: Mode) -> OwnedKVList {
    OwnedKVList::from(OwnedKV(CleanedList {
        list: values.clone(),
        mode,
    }))
}

/// Passes numbers and the like through as they are (JSON keeps their
/// types) and every text cleaned; what has no method here (errors, bytes,
/// nested values) comes through `emit_arguments` as text.
struct CleanSerializer<'a> {
    inner: &'a mut dyn Serializer,
    mode: Mode,
}

macro_rules! pass {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(&mut self, key: Key, value: $ty) -> slog::Result {
            self.inner.$method(key, value)
        })*
    };
}

impl Serializer for CleanSerializer<'_> {
    pass!(
        emit_usize: usize, emit_isize: isize, emit_bool: bool,
        emit_u8: u8, emit_i8: i8, emit_u16: u16, emit_i16: i16,
        emit_u32: u32, emit_i32: i32, emit_u64: u64, emit_i64: i64,
        emit_u128: u128, emit_i128: i128, emit_f32: f32, emit_f64: f64,
    );

    fn emit_unit(&mut self, key: Key) -> slog::Result {
        self.inner.emit_unit(key)
    }

    fn emit_none(&mut self, key: Key) -> slog::Result {
        self.inner.emit_none(key)
    }

    fn emit_char(&mut self, key: Key, value: char) -> slog::Result {
        self.emit_str(key, value.encode_utf8(&mut [0; 4]))
    }

    fn emit_str(&mut self, key: Key, value: &str) -> slog::Result {
        self.inner.emit_str(key, &str(value, self.mode))
    }

    fn emit_arguments(&mut self, key: Key, value: &fmt::Arguments<'_>) -> slog::Result {
        self.inner.emit_str(key, &text(value, self.mode))
    }
}

/// Escapes, in the JSON record written into `buf` from `from` on, the
/// characters [`must_escape`] names that serde_json leaves raw (all but
/// the C0 controls, which it escapes), as JSON's `\uXXXX`. They can only
/// stand in strings, where the escape means the same character.
pub(super) fn json_escape_tail(buf: &mut Vec<u8>, from: usize) {
    let Some(tail) = buf.get(from..) else {
        return;
    };
    if tail.iter().all(|&b| b < 0x7f) {
        return;
    }
    let Ok(text) = std::str::from_utf8(tail) else {
        return;
    };
    let raw = |c: char| c >= '\u{7f}' && must_escape(c);
    if !text.chars().any(raw) {
        return;
    }
    let mut out = String::with_capacity(text.len() + 32);
    for c in text.chars() {
        if raw(c) {
            // All of them are in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    buf.truncate(from);
    buf.extend_from_slice(out.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_term_format_escapes_what_a_terminal_acts_on() {
        let cases = [
            ("250 2.0.0 Ok: queued", "250 2.0.0 Ok: queued"),
            ("Grüße, 東京 ✓ \\x1b", "Grüße, 東京 ✓ \\x1b"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            (
                "bell\x07 nul\0 cr\r lf\n tab\t del\x7f",
                "bell\\x07 nul\\0 cr\\r lf\\n tab\\t del\\x7f",
            ),
            ("csi\u{9b}2J nel\u{85}", "csi\\u{9b}2J nel\\u{85}"),
            (
                "ls\u{2028} rlo\u{202e}txt.exe",
                "ls\\u{2028} rlo\\u{202e}txt.exe",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(str(input, Mode::Escape), want, "{input:?}");
            assert_eq!(
                text(&format_args!("{input}"), Mode::Escape),
                want,
                "{input:?} as arguments"
            );
            assert_eq!(str(input, Mode::Cut), input, "{input:?} in JSON");
        }
    }

    #[test]
    fn a_long_text_is_cut_and_says_how_long_it_was() {
        for (mode, fill) in [
            (Mode::Escape, "x"),
            (Mode::Cut, "x"),
            (Mode::Escape, "é"),
            (Mode::Escape, "\x1b"),
            (Mode::Cut, "\u{9b}"),
            (Mode::Escape, "ab\u{9b}"),
        ] {
            let input = fill.repeat(10_000);
            let got = str(&input, mode);
            let label = format!("{fill:?} × 10000, {mode:?}");
            assert!(got.len() <= LIMIT, "{label}: {} bytes", got.len());
            assert!(
                got.len() > LIMIT - MARKER_ROOM - 10,
                "{label}: {} bytes",
                got.len()
            );
            let marker = format!("… [cut: {} bytes]", input.len());
            let kept = got
                .strip_suffix(&marker)
                .unwrap_or_else(|| panic!("{label}: {got}"));
            // A prefix of the escaped text, cut between two characters,
            // never inside an escape.
            let mut whole = String::new();
            let mut ends = vec![0];
            for c in input.chars() {
                whole.push_str(&str(c.encode_utf8(&mut [0; 4]), mode));
                ends.push(whole.len());
            }
            assert!(whole.starts_with(kept), "{label}");
            assert!(ends.contains(&kept.len()), "{label}: cut inside an escape");
        }
        // Up to the limit nothing is cut.
        let fits = "y".repeat(LIMIT);
        assert_eq!(str(&fits, Mode::Escape), fits);
        let over = "y".repeat(LIMIT + 1);
        assert!(str(&over, Mode::Escape).ends_with(&format!("[cut: {} bytes]", LIMIT + 1)));
    }

    /// A value formatted piece by piece (a `Display` writing many parts)
    /// is cut the same as one string, and holds no more than the limit.
    #[test]
    fn a_displayed_value_is_cut_as_it_is_written() {
        struct Many;
        impl fmt::Display for Many {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for n in 0..100_000 {
                    write!(f, "{n}\x07,")?;
                }
                Ok(())
            }
        }
        let whole = Many.to_string();
        let piecewise = text(&format_args!("{Many}"), Mode::Escape).into_owned();
        assert_eq!(piecewise, str(&whole, Mode::Escape));
        assert!(piecewise.ends_with(&format!("… [cut: {} bytes]", whole.len())));
    }

    #[test]
    fn json_escapes_what_serde_json_leaves_raw() {
        let cases: [(&str, &str); 4] = [
            ("{\"msg\":\"plain\"}\n", "{\"msg\":\"plain\"}\n"),
            (
                "{\"r\":\"é \u{9b}2J\u{7f}\"}\n",
                "{\"r\":\"é \\u009b2J\\u007f\"}\n",
            ),
            (
                "{\"r\":\"\u{2028}\u{202e}\"}\n",
                "{\"r\":\"\\u2028\\u202e\"}\n",
            ),
            ("{\"r\":\"東京\"}\n", "{\"r\":\"東京\"}\n"),
        ];
        for (record, want) in cases {
            let mut buf = b"earlier record\n".to_vec();
            let from = buf.len();
            buf.extend_from_slice(record.as_bytes());
            json_escape_tail(&mut buf, from);
            assert_eq!(
                String::from_utf8(buf).unwrap(),
                format!("earlier record\n{want}"),
                "{record:?}"
            );
            let value: serde_json::Value = serde_json::from_str(want).expect("valid JSON");
            let again: serde_json::Value = serde_json::from_str(record).expect("valid JSON");
            assert_eq!(value, again, "{record:?} means the same");
        }
    }
}
