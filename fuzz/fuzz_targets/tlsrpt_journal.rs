//! Fuzzes the TLS report journal's reader (`postman::tlsrpt::decode`):
//! the journal is postman's own file, but a crash tears its last line and
//! a full disk or another program may leave anything in it. Never a panic,
//! every session read back writes a line that reads back as itself, and a
//! day's aggregate of them is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postman::tlsrpt::{aggregate, decode, Day, Submitter};

fuzz_target!(|input: &[u8]| {
    let journal = decode(input);
    for session in &journal.sessions {
        let line = session.to_line();
        let again = decode(&line);
        assert_eq!(again.sessions.as_slice(), std::slice::from_ref(session));
        assert!(!again.torn && again.bad_lines.is_empty());
    }
    let Some(day) = journal.sessions.first().and_then(|s| Day::of(s.at)) else {
        return;
    };
    let submitter = Submitter {
        organization: "Example".into(),
        contact: "mailto:tlsrpt@example.org".into(),
        domain: "example.org".into(),
        unique_id: None,
    };
    for report in aggregate(day, &journal.sessions, &submitter) {
        let _: serde_json::Value =
            serde_json::from_slice(&report.json).expect("report JSON parses");
    }
});
