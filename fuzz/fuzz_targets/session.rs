//! Fuzzes the whole client session with arbitrary server bytes in any
//! split, under every extension (PIPELINING, CHUNKING, STARTTLS, SIZE,
//! AUTH), with and without implicit TLS and credentials: no panic; at most
//! one `Closed`, nothing after it; every reply code an outcome carries is
//! in 200–599; every `MessageDone` covers each recipient; the output buffer
//! stays bounded; AUTH never goes out without TLS unless allowed, and an
//! AUTH failure is never permanent; a closed session has no deadline.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use postman::secret::{Credentials, Secret};
use postman::smtp::{
    AuthConfig, Envelope, Event, Nonce, Session, SessionConfig, Stage, Timeouts, TlsInfo, TlsMode,
    BDAT_CHUNK, BODY_HIGH_WATER,
};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    // A second byte: bit 0 implicit TLS, bit 1 credentials, bit 2 AUTH
    // allowed without TLS.
    let Some((&modes, input)) = input.split_first() else {
        return;
    };
    let allow_plaintext = modes & 4 != 0;
    let auth = (modes & 2 != 0).then(|| AuthConfig {
        credentials: Credentials {
            user: "fuzz".into(),
            password: Secret::new("pencil".into()),
        },
        allow_plaintext,
        nonce: Nonce::from_random(b"fuzzing nonce....."),
    });
    let tls = match flags % 3 {
        0 => TlsMode::Opportunistic,
        1 => TlsMode::Required,
        _ => TlsMode::Disabled,
    };
    let chunk = usize::from(flags / 3 % 8) + 1;
    let start = Instant::now();
    let mut now = start;
    let config = SessionConfig {
        helo_name: "fuzz.test".into(),
        timeouts: Timeouts::default(),
        tls,
        implicit_tls: modes & 1 != 0,
        auth,
        // A server that names one of these is a mail loop.
        own_names: vec!["fuzz.test".into()],
    };
    let mut session = Session::new(config, now);
    let mut closed = false;
    let mut messages = 0;
    for piece in input.chunks(chunk) {
        session.handle_input(piece, now);
        while let Some(event) = session.poll_event() {
            assert!(!closed, "{event:?} after Closed");
            match event {
                Event::Ready if messages < 3 => {
                    messages += 1;
                    let mut envelope = Envelope::new(
                        "s@a.test",
                        vec!["r1@b.test".into(), "r\u{fc}@b.test".into()],
                    );
                    envelope.size = Some(100);
                    envelope.eight_bit = messages % 2 == 0;
                    let started = session.start_message(envelope, now);
                    assert!(started.is_ok() || session.is_closed(), "{started:?}");
                }
                Event::Ready => session.quit(now),
                Event::StartTls => {
                    let info = TlsInfo {
                        protocol: "TLSv1.3".into(),
                        cipher: "TLS13_AES_128_GCM_SHA256".into(),
                        verified: false,
                    };
                    if flags & 0x80 == 0 {
                        session.tls_established(info, now);
                    } else {
                        session.tls_failed("fuzzed failure", now);
                    }
                }
                Event::MessageDone(result) => {
                    assert_eq!(result.recipients.len(), 2, "one result per recipient");
                    for r in &result.recipients {
                        if let Err(outcome) = &r.result {
                            if let Some(reply) = &outcome.reply {
                                assert!((200..=599).contains(&reply.code.get()));
                            }
                        }
                    }
                }
                Event::Closed(outcome) => {
                    closed = true;
                    if let Some(outcome) = &outcome {
                        assert!(outcome.stage != Stage::Auth || outcome.is_transient());
                    }
                    if let Some(reply) = outcome.and_then(|o| o.reply) {
                        assert!((200..=599).contains(&reply.code.get()));
                    }
                }
            }
        }
        while session.wants_body() {
            session.push_body(b"line\n.dot\n", now);
            session.finish_body(now);
        }
        assert!(
            session.pending_output().len() <= BODY_HIGH_WATER + 2 * BDAT_CHUNK + 4096,
            "output unbounded: {}",
            session.pending_output().len()
        );
        if session.tls().is_none() && !allow_plaintext {
            let out = session.pending_output();
            assert!(!out.windows(5).any(|w| w == b"AUTH "), "AUTH without TLS");
        }
        let n = session.pending_output().len();
        session.consume_output(n);
        if flags & 0x40 != 0 {
            now += Duration::from_secs(61);
            session.handle_timeout(now);
        }
    }
    session.handle_eof(now);
    while let Some(event) = session.poll_event() {
        assert!(!closed, "{event:?} after Closed");
        if matches!(event, Event::Closed(_)) {
            closed = true;
        }
    }
    if session.is_closed() {
        assert_eq!(session.poll_timeout(), None, "deadline after Closed");
    }
});
