//! The reporter's files and schedule, pure: the journal of each UTC day
//! (`<day>.jsonl`), the deliveries of a day's reports made so far
//! (`<day>.sent`, one line per policy domain and destination), and when a
//! day is due and given up. The actor does the I/O.

use std::collections::BTreeSet;

use super::report::Day;

/// How long after a day's reports were due the reporter keeps trying a
/// destination that fails (RFC 8460 §5.5: redelivery "for up to 24
/// hours").
pub const RETRY_FOR: u64 = 24 * 60 * 60;

/// The spread of report times: each host reports within this long after
/// midnight, at an offset of its own, so that the world's senders do not
/// all report at 00:00 UTC.
pub const SPREAD: u64 = 60 * 60;

/// What `<day>.sent` says of a policy domain that publishes no report
/// address: nothing to send, nothing to retry.
pub const NO_RUA: &str = "-";

/// The journal of `day`.
pub fn journal_name(day: Day) -> String {
    format!("{day}.jsonl")
}

/// The deliveries of `day`'s reports made so far.
pub fn sent_name(day: Day) -> String {
    format!("{day}.sent")
}

/// The day a journal's file name is for: `YYYY-MM-DD.jsonl`.
pub fn journal_day(name: &str) -> Option<Day> {
    let date = name.strip_suffix(".jsonl")?;
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return None;
    }
    Day::from_ymd(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
}

/// This host's offset into [`SPREAD`], from its name (FNV-1a): the same
/// every day, different from host to host.
pub fn offset(host: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in host.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % SPREAD
}

/// When `day`'s reports are due: after its end, at this host's offset.
pub fn due_at(day: Day, offset: u64) -> Option<u64> {
    day.end().map(|end| end + offset)
}

/// What to do with a day's journal at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayState {
    /// Still being written, or not due yet.
    Wait,
    /// Due: send what is not sent.
    Send,
    /// Due for longer than [`RETRY_FOR`]: what is not sent now never will
    /// be; the journal is closed.
    GiveUp,
}

/// Where `day` stands at `now` (seconds since the epoch).
pub fn day_state(day: Day, now: u64, offset: u64) -> DayState {
    match due_at(day, offset) {
        Some(due) if now >= due + RETRY_FOR => DayState::GiveUp,
        Some(due) if now >= due => DayState::Send,
        _ => DayState::Wait,
    }
}

/// One line of `<day>.sent`: the policy domain and the destination (a
/// report URI, or [`NO_RUA`]).
pub fn sent_line(domain: &str, destination: &str) -> Vec<u8> {
    format!("{domain} {destination}\n").into_bytes()
}

/// The deliveries `<day>.sent` lists; a torn last line is not one.
pub fn sent_set(bytes: &[u8]) -> BTreeSet<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let whole = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    whole
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(domain, destination)| (domain.to_owned(), destination.to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        Day::from_ymd(2026, 12, 7).expect("a date")
    }

    #[test]
    fn journal_names_round_trip() {
        assert_eq!(journal_name(day()), "2026-12-07.jsonl");
        assert_eq!(journal_day("2026-12-07.jsonl"), Some(day()));
        for name in [
            "2026-12-07.sent",
            "2026-13-01.jsonl",
            "26-12-07.jsonl",
            "x.jsonl",
            ".jsonl",
        ] {
            assert_eq!(journal_day(name), None, "{name}");
        }
    }

    #[test]
    fn a_day_is_sent_after_its_end_and_given_up_a_day_later() {
        let end = day().end().expect("an end");
        let offset = 600;
        let cases = [
            (end - 1, DayState::Wait),
            (end + offset - 1, DayState::Wait),
            (end + offset, DayState::Send),
            (end + offset + RETRY_FOR - 1, DayState::Send),
            (end + offset + RETRY_FOR, DayState::GiveUp),
        ];
        for (now, want) in cases {
            assert_eq!(day_state(day(), now, offset), want, "at {now}");
        }
        assert!(offset_of_hosts_differ());
    }

    fn offset_of_hosts_differ() -> bool {
        let a = offset("mx1.example.org");
        a < SPREAD && a == offset("mx1.example.org") && a != offset("mx2.example.org")
    }

    #[test]
    fn the_sent_file_ignores_a_torn_line() {
        let mut bytes = sent_line("d.test", "mailto:r@d.test");
        bytes.extend(sent_line("e.test", NO_RUA));
        bytes.extend(b"f.test https://r.f.te");
        let set = sent_set(&bytes);
        assert_eq!(set.len(), 2);
        assert!(set.contains(&("d.test".into(), "mailto:r@d.test".into())));
        assert!(set.contains(&("e.test".into(), NO_RUA.into())));
    }
}
