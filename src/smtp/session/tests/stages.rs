//! Every reply class at every stage, with and without PIPELINING: what the
//! client writes next and what events come out. Two recipients, r1 and r2.

use super::*;

struct Row {
    name: &'static str,
    scenario: Scenario,
    writes: &'static str,
    events: Vec<String>,
}

fn check(rows: Vec<Row>) {
    for row in rows {
        let got = run(&row.scenario);
        assert_eq!(got.writes, row.writes, "client writes for {}", row.name);
        assert_eq!(got.events, row.events, "events for {}", row.name);
    }
}

fn ev(events: &[&str]) -> Vec<String> {
    events.iter().map(|e| (*e).to_owned()).collect()
}

fn plain() -> Scenario {
    Scenario::new(false)
}

fn piped() -> Scenario {
    Scenario::new(true)
}

const OK: &[&str] = &["Ready", "Done[ok 250, ok 250]", "Ready", "Closed"];
const ALL: &str = "EHLO MAIL RCPT RCPT DATA . QUIT";
const ALL_PIPED: &str = "EHLO MAIL+RCPT+RCPT+DATA . QUIT";

#[test]
fn greeting() {
    check(vec![
        Row {
            name: "greeting 220",
            scenario: plain(),
            writes: ALL,
            events: ev(OK),
        },
        Row {
            name: "greeting 220 multi-line",
            scenario: plain().reply("greeting", 1, "220-mx.test\n220-more\n220 ready"),
            writes: ALL,
            events: ev(OK),
        },
        Row {
            name: "greeting 421",
            scenario: plain().reply("greeting", 1, "421 4.3.2 busy"),
            writes: "",
            events: ev(&["Closed(Transient Destination Greeting 421)"]),
        },
        Row {
            name: "greeting 554",
            scenario: plain().reply("greeting", 1, "554 5.7.1 go away"),
            writes: "QUIT",
            events: ev(&["Closed(Permanent Destination Greeting 554)"]),
        },
        Row {
            name: "greeting 450",
            scenario: plain().reply("greeting", 1, "450 later"),
            writes: "QUIT",
            events: ev(&["Closed(Transient Destination Greeting 450)"]),
        },
        Row {
            name: "greeting 250 (2xx but not 220)",
            scenario: plain().reply("greeting", 1, "250 hello"),
            writes: "QUIT",
            events: ev(&["Closed(Transient Destination Greeting 250)"]),
        },
    ]);
}

#[test]
fn ehlo_and_helo() {
    let helo_ok = "EHLO HELO MAIL RCPT RCPT DATA . QUIT";
    let mut rows = vec![
        Row {
            name: "EHLO 250 one line",
            scenario: plain().reply("EHLO", 1, "250 mx.test"),
            writes: ALL,
            events: ev(OK),
        },
        Row {
            name: "EHLO 421",
            scenario: plain().reply("EHLO", 1, "421 4.3.2 bye"),
            writes: "EHLO",
            events: ev(&["Closed(Transient Destination Ehlo 421)"]),
        },
        Row {
            name: "EHLO 450",
            scenario: plain().reply("EHLO", 1, "450 later"),
            writes: "EHLO QUIT",
            events: ev(&["Closed(Transient Destination Ehlo 450)"]),
        },
        Row {
            name: "EHLO 502, HELO 421",
            scenario: plain()
                .reply("EHLO", 1, "502 no")
                .reply("HELO", 1, "421 bye"),
            writes: "EHLO HELO",
            events: ev(&["Closed(Transient Destination Helo 421)"]),
        },
        Row {
            name: "EHLO 502, HELO 450",
            scenario: plain()
                .reply("EHLO", 1, "502 no")
                .reply("HELO", 1, "450 later"),
            writes: "EHLO HELO QUIT",
            events: ev(&["Closed(Transient Destination Helo 450)"]),
        },
        Row {
            name: "EHLO 502, HELO 550",
            scenario: plain()
                .reply("EHLO", 1, "502 no")
                .reply("HELO", 1, "550 no"),
            writes: "EHLO HELO QUIT",
            events: ev(&["Closed(Permanent Destination Helo 550)"]),
        },
        Row {
            name: "pipelined server, but HELO: one command at a time",
            scenario: piped().reply("EHLO", 1, "500 what"),
            writes: helo_ok,
            events: ev(OK),
        },
    ];
    for code in ["500 what", "502 not implemented", "504 no", "550 no"] {
        rows.push(Row {
            name: code,
            scenario: plain().reply("EHLO", 1, code),
            writes: helo_ok,
            events: ev(OK),
        });
    }
    check(rows);
}

#[test]
fn mail() {
    let mut rows = Vec::new();
    for (scenario, writes_ok) in [(plain(), ALL), (piped(), ALL_PIPED)] {
        let p = scenario.pipelining;
        rows.extend([
            Row {
                name: if p { "piped MAIL 250" } else { "MAIL 250" },
                scenario: scenario.clone(),
                writes: writes_ok,
                events: ev(OK),
            },
            Row {
                name: if p { "piped MAIL 421" } else { "MAIL 421" },
                scenario: scenario.clone().reply("MAIL", 1, "421 4.3.2 bye"),
                writes: if p {
                    "EHLO MAIL+RCPT+RCPT+DATA"
                } else {
                    "EHLO MAIL"
                },
                events: ev(&[
                    "Ready",
                    "Done[Transient Destination Mail 421, Transient Destination Mail 421]",
                    "Closed(Transient Destination Mail 421)",
                ]),
            },
        ]);
        for (reply, done) in [
            (
                "451 4.3.0 later",
                "Done[Transient Message Mail 451, Transient Message Mail 451]",
            ),
            (
                "550 5.7.1 no",
                "Done[Permanent Message Mail 550, Permanent Message Mail 550]",
            ),
        ] {
            let events = ev(&["Ready", done, "Ready", "Closed"]);
            rows.push(Row {
                name: reply,
                // Realistic: RCPT and DATA after a refused MAIL get 503.
                scenario: scenario
                    .clone()
                    .reply("MAIL", 1, reply)
                    .reply("RCPT", 1, "503 5.5.1 need MAIL")
                    .reply("RCPT", 2, "503 5.5.1 need MAIL")
                    .reply("DATA", 1, "503 5.5.1 need RCPT"),
                writes: if p {
                    "EHLO MAIL+RCPT+RCPT+DATA QUIT"
                } else {
                    "EHLO MAIL QUIT"
                },
                events,
            });
        }
    }
    rows.push(Row {
        name: "piped MAIL 550, yet DATA 354: a lone dot ends it",
        scenario: piped().reply("MAIL", 1, "550 no"),
        writes: ALL_PIPED,
        events: ev(&[
            "Ready",
            "Done[Permanent Message Mail 550, Permanent Message Mail 550]",
            "Ready",
            "Closed",
        ]),
    });
    check(rows);
}

#[test]
fn rcpt() {
    let mut rows = Vec::new();
    for (scenario, writes_ok) in [(plain(), ALL), (piped(), ALL_PIPED)] {
        let p = scenario.pipelining;
        let none_accepted = if p {
            "EHLO MAIL+RCPT+RCPT+DATA QUIT"
        } else {
            "EHLO MAIL RCPT RCPT QUIT"
        };
        rows.extend([
            Row {
                name: "RCPT 1 450",
                scenario: scenario.clone().reply("RCPT", 1, "450 4.2.0 full"),
                writes: writes_ok,
                events: ev(&[
                    "Ready",
                    "Done[Transient Recipient Rcpt 450, ok 250]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "RCPT 2 550",
                scenario: scenario.clone().reply("RCPT", 2, "550 5.1.1 no such user"),
                writes: writes_ok,
                events: ev(&[
                    "Ready",
                    "Done[ok 250, Permanent Recipient Rcpt 550]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "RCPT 1 421",
                scenario: scenario.clone().reply("RCPT", 1, "421 4.3.2 bye"),
                writes: if p {
                    "EHLO MAIL+RCPT+RCPT+DATA"
                } else {
                    "EHLO MAIL RCPT"
                },
                events: ev(&[
                    "Ready",
                    "Done[Transient Destination Rcpt 421, Transient Destination Rcpt 421]",
                    "Closed(Transient Destination Rcpt 421)",
                ]),
            },
            Row {
                name: "RCPT 1 550 then RCPT 2 421: r1 keeps its own failure",
                scenario: scenario
                    .clone()
                    .reply("RCPT", 1, "550 no")
                    .reply("RCPT", 2, "421 bye"),
                writes: if p {
                    "EHLO MAIL+RCPT+RCPT+DATA"
                } else {
                    "EHLO MAIL RCPT RCPT"
                },
                events: ev(&[
                    "Ready",
                    "Done[Permanent Recipient Rcpt 550, Transient Destination Rcpt 421]",
                    "Closed(Transient Destination Rcpt 421)",
                ]),
            },
            Row {
                name: "no recipient accepted: no DATA (or a refused one)",
                scenario: scenario
                    .clone()
                    .reply("RCPT", 1, "550 5.1.1 no")
                    .reply("RCPT", 2, "450 4.2.0 later")
                    .reply("DATA", 1, "554 5.5.1 no valid recipients"),
                writes: none_accepted,
                events: ev(&[
                    "Ready",
                    "Done[Permanent Recipient Rcpt 550, Transient Recipient Rcpt 450]",
                    "Ready",
                    "Closed",
                ]),
            },
        ]);
    }
    check(rows);
}

#[test]
fn data_and_end_of_data() {
    let mut rows = Vec::new();
    for (scenario, writes_ok) in [(plain(), ALL), (piped(), ALL_PIPED)] {
        let p = scenario.pipelining;
        let data_refused = if p {
            "EHLO MAIL+RCPT+RCPT+DATA QUIT"
        } else {
            "EHLO MAIL RCPT RCPT DATA QUIT"
        };
        let data_421 = if p {
            "EHLO MAIL+RCPT+RCPT+DATA"
        } else {
            "EHLO MAIL RCPT RCPT DATA"
        };
        let dot_421 = if p {
            "EHLO MAIL+RCPT+RCPT+DATA ."
        } else {
            "EHLO MAIL RCPT RCPT DATA ."
        };
        rows.extend([
            Row {
                name: "DATA 451",
                scenario: scenario.clone().reply("DATA", 1, "451 4.3.0 later"),
                writes: data_refused,
                events: ev(&[
                    "Ready",
                    "Done[Transient Message Data 451, Transient Message Data 451]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "DATA 554",
                scenario: scenario.clone().reply("DATA", 1, "554 5.3.4 no"),
                writes: data_refused,
                events: ev(&[
                    "Ready",
                    "Done[Permanent Message Data 554, Permanent Message Data 554]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "RCPT 1 550, DATA 554: each keeps its own",
                scenario: scenario
                    .clone()
                    .reply("RCPT", 1, "550 no")
                    .reply("DATA", 1, "554 no"),
                writes: data_refused,
                events: ev(&[
                    "Ready",
                    "Done[Permanent Recipient Rcpt 550, Permanent Message Data 554]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "DATA 421",
                scenario: scenario.clone().reply("DATA", 1, "421 bye"),
                writes: data_421,
                events: ev(&[
                    "Ready",
                    "Done[Transient Destination Data 421, Transient Destination Data 421]",
                    "Closed(Transient Destination Data 421)",
                ]),
            },
            Row {
                name: "end of data 250",
                scenario: scenario.clone(),
                writes: writes_ok,
                events: ev(OK),
            },
            Row {
                name: "end of data 451",
                scenario: scenario.clone().reply(".", 1, "451 4.3.0 later"),
                writes: writes_ok,
                events: ev(&[
                    "Ready",
                    "Done[Transient Message DataEnd 451, Transient Message DataEnd 451]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "end of data 554",
                scenario: scenario.clone().reply(".", 1, "554 5.7.1 spam"),
                writes: writes_ok,
                events: ev(&[
                    "Ready",
                    "Done[Permanent Message DataEnd 554, Permanent Message DataEnd 554]",
                    "Ready",
                    "Closed",
                ]),
            },
            Row {
                name: "end of data 421",
                scenario: scenario.clone().reply(".", 1, "421 bye"),
                writes: dot_421,
                events: ev(&[
                    "Ready",
                    "Done[Transient Destination DataEnd 421, Transient Destination DataEnd 421]",
                    "Closed(Transient Destination DataEnd 421)",
                ]),
            },
            Row {
                name: "RCPT 2 550, end of data 250",
                scenario: scenario.clone().reply("RCPT", 2, "550 no"),
                writes: writes_ok,
                events: ev(&[
                    "Ready",
                    "Done[ok 250, Permanent Recipient Rcpt 550]",
                    "Ready",
                    "Closed",
                ]),
            },
        ]);
    }
    check(rows);
}

#[test]
fn rset_between_messages() {
    const TWO_OK: &[&str] = &[
        "Ready",
        "Done[ok 250, ok 250]",
        "Ready",
        "Done[ok 250, ok 250]",
        "Ready",
        "Closed",
    ];
    let mut rows = vec![
        Row {
            name: "RSET 250",
            scenario: plain().messages(2),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET MAIL RCPT RCPT DATA . QUIT",
            events: ev(TWO_OK),
        },
        Row {
            name: "piped RSET 250",
            scenario: piped().messages(2),
            writes: "EHLO MAIL+RCPT+RCPT+DATA . RSET+MAIL+RCPT+RCPT+DATA . QUIT",
            events: ev(TWO_OK),
        },
        Row {
            name: "RSET after a message that sent no DATA",
            scenario: plain()
                .messages(2)
                .reply("RCPT", 1, "550 no")
                .reply("RCPT", 2, "550 no"),
            writes: "EHLO MAIL RCPT RCPT RSET MAIL RCPT RCPT DATA . QUIT",
            events: ev(&[
                "Ready",
                "Done[Permanent Recipient Rcpt 550, Permanent Recipient Rcpt 550]",
                "Ready",
                "Done[ok 250, ok 250]",
                "Ready",
                "Closed",
            ]),
        },
        Row {
            name: "RSET 421",
            scenario: plain().messages(2).reply("RSET", 1, "421 bye"),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET",
            events: ev(&[
                "Ready",
                "Done[ok 250, ok 250]",
                "Ready",
                "Done(untried)[Transient Destination Rset 421, Transient Destination Rset 421]",
                "Closed(Transient Destination Rset 421)",
            ]),
        },
    ];
    for (reply, code) in [("451 4.3.0 no", 451), ("554 5.5.1 no", 554)] {
        let done = format!(
            "Done(untried)[Transient Destination Rset {code}, Transient Destination Rset {code}]"
        );
        let closed = format!("Closed(Transient Destination Rset {code})");
        let events = ev(&["Ready", "Done[ok 250, ok 250]", "Ready", &done, &closed]);
        rows.push(Row {
            name: reply,
            scenario: plain().messages(2).reply("RSET", 1, reply),
            writes: "EHLO MAIL RCPT RCPT DATA . RSET QUIT",
            events: events.clone(),
        });
        rows.push(Row {
            name: "piped RSET refused: no QUIT behind a pipelined DATA",
            scenario: piped().messages(2).reply("RSET", 1, reply),
            writes: "EHLO MAIL+RCPT+RCPT+DATA . RSET+MAIL+RCPT+RCPT+DATA",
            events,
        });
    }
    check(rows);
}

#[test]
fn quit_replies_all_end_cleanly() {
    let mut rows = Vec::new();
    for reply in ["221 bye", "250 ok", "421 bye", "451 hmm", "554 no"] {
        rows.push(Row {
            name: reply,
            scenario: plain().reply("QUIT", 1, reply),
            writes: ALL,
            events: ev(OK),
        });
    }
    check(rows);
}

#[test]
fn bodies_arrive_intact() {
    for scenario in [plain().messages(2), piped().messages(2)] {
        let got = run(&scenario);
        assert_eq!(
            got.bodies,
            vec![BODY.to_vec(), BODY.to_vec()],
            "bodies with pipelining {}",
            scenario.pipelining
        );
    }
    let lone_dot = piped()
        .reply("RCPT", 1, "550 no")
        .reply("RCPT", 2, "550 no")
        .reply(".", 1, "554 5.5.1 empty");
    let got = run(&lone_dot);
    assert_eq!(
        got.writes, ALL_PIPED,
        "writes when no RCPT was accepted but DATA got 354"
    );
    assert_eq!(
        got.bodies,
        vec![Vec::<u8>::new()],
        "lone dot sends an empty body"
    );
    assert_eq!(
        got.events,
        [
            "Ready",
            "Done[Permanent Recipient Rcpt 550, Permanent Recipient Rcpt 550]",
            "Ready",
            "Closed"
        ],
        "events when no RCPT was accepted but DATA got 354"
    );
}
