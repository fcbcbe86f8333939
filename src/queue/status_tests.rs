use super::*;
use crate::queue::Layout;
use proptest::prelude::*;

const NOW: u64 = 1_764_250_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn sample() -> Status {
    Status {
        written: at(NOW),
        pid: 4242,
        running: true,
        sites: vec![
            SiteStatus {
                name: "mx1.example.com,mx2.example.com".into(),
                hosts: strings(&["mx1.example.com", "mx2.example.com"]),
                rule: Some("example.com".into()),
                domains: strings(&["a.example", "b.example"]),
                more_domains: 0,
                connections: 3,
                limit: 5,
                max_connections: 20,
                message_interval: Some(Duration::from_millis(200)),
                rate: Some(RateSource::Rule),
                held: Some(Held {
                    kind: HoldKind::Backoff,
                    until: Some(at(NOW + 100)),
                    failures: 2,
                    reason: "connect to mx1.example.com[192.0.2.1]:25: Connection refused".into(),
                }),
            },
            SiteStatus {
                name: "mx.other.test tls=require".into(),
                hosts: strings(&["mx.other.test"]),
                domains: strings(&["c.test"]),
                limit: 1,
                max_connections: 20,
                held: Some(Held {
                    kind: HoldKind::Operator,
                    until: None,
                    failures: 0,
                    reason: "by the operator: dns move".into(),
                }),
                ..SiteStatus::default()
            },
            SiteStatus {
                name: "quiet.test".into(),
                hosts: strings(&["quiet.test"]),
                message_interval: Some(Duration::from_secs(12)),
                rate: Some(RateSource::Learned),
                ..SiteStatus::default()
            },
        ],
        more_sites: 0,
    }
}

#[test]
fn a_snapshot_renders_as_documented_and_reads_back() {
    let status = sample();
    let text = render_status(&status);
    assert!(
        text.starts_with(
            "postman-status: 1\nwritten: 1764250000\npid: 4242\nrunning: yes\n\n\
             site: mx1.example.com,mx2.example.com\nhosts: mx1.example.com mx2.example.com\n\
             rule: example.com\ndomains: a.example b.example\nconnections: 3\nlimit: 5\n\
             max_connections: 20\nmessage_interval_ms: 200\nrate: rule\nheld: backoff\n\
             held_until: 1764250100\nfailures: 2\n\
             reason: connect to mx1.example.com[192.0.2.1]:25: Connection refused\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("held: operator\nheld_until: none\n"),
        "{text}"
    );
    assert_eq!(parse_status(text.as_bytes()), Ok(status));
}

#[test]
fn hostile_snapshots_parse_without_panic_or_lies() {
    let cases: &[(&str, Result<usize, StatusError>)] = &[
        ("", Err(StatusError::NoHeader)),
        ("written: 5\n", Err(StatusError::NoHeader)),
        ("postman-status: 2\nwritten: 5\n", Err(StatusError::NoHeader)),
        (
            "postman-status: 1\nwritten: 99999999999999999999\n",
            Err(StatusError::NoHeader),
        ),
        ("postman-status: 1\nwritten: 5\n", Ok(0)),
        // A site before the header's end: its keys are the site's.
        (
            "postman-status: 1\nwritten: 5\nsite: x\nwritten: 7\nconnections: -1\nlimit: 99999999999999999999999\n",
            Ok(1),
        ),
        (
            "postman-status: 1\nwritten: 5\nheld_until: 5\nreason: x\nsite: a\nheld_until: 9\nsite: b\nheld: what\n",
            Ok(2),
        ),
    ];
    for (text, want) in cases {
        let got = parse_status(text.as_bytes()).map(|s| s.sites.len());
        assert_eq!(&got, want, "{text:?}");
    }
    let odd = parse_status(
        b"postman-status: 1\nwritten: 5\nsite: x\nwritten: 7\nconnections: -1\nheld_until: 3\n",
    )
    .unwrap();
    assert_eq!(odd.written, at(5), "a site's written: is not the header's");
    assert_eq!(odd.sites[0].connections, 0);
    assert_eq!(odd.sites[0].held, None, "no held: line, no hold");
}

proptest! {
    #[test]
    fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_status(&bytes);
    }

    #[test]
    fn any_lines_parse_without_panic(lines in proptest::collection::vec(
        "(site|hosts|domains|held|held_until|failures|reason|limit|written|postman-status|more_sites): [ -~]{0,20}",
        0..30,
    )) {
        // What parses renders as itself.
        let text = format!("postman-status: 1\nwritten: 5\n{}", lines.join("\n"));
        if let Ok(status) = parse_status(text.as_bytes()) {
            let again = parse_status(render_status(&status).as_bytes());
            prop_assert_eq!(again, Ok(status));
        }
    }
}

#[test]
fn a_huge_snapshot_is_cut_to_the_limit_and_says_so() {
    let domains: Vec<String> = (0..3000).map(|i| format!("domain-{i}.test")).collect();
    let site = |i: usize| SiteStatus {
        name: format!("mx{i}.test"),
        hosts: vec![format!("mx{i}.test")],
        domains: domains.clone(),
        ..SiteStatus::default()
    };
    let status = Status {
        sites: (0..400).map(site).collect(),
        ..sample()
    };
    let text = render_status(&status);
    assert!(text.len() as u64 <= MAX_STATUS_FILE, "{}", text.len());
    let back = parse_status(text.as_bytes()).unwrap();
    assert_eq!(back.sites[0].domains.len(), MAX_STATUS_DOMAINS);
    assert_eq!(back.sites[0].more_domains, 2000);
    assert!(back.sites.len() < 400 && back.sites.len() > 100);
    assert_eq!(back.more_sites, 400 - back.sites.len());
}

#[test]
fn rates_for_people_table() {
    let ms = Duration::from_millis;
    let cases = [
        (ms(50), "20/s"),
        (ms(400), "2.5/s"),
        (ms(1000), "1/s"),
        (ms(200), "5/s"),
        (ms(3000), "20/m"),
        (ms(60_000), "1/m"),
        (ms(720), "1.4/s"),
        (ms(72_000), "50/h"),
        (ms(7_200_000), "0.5/h"),
        (ms(0), "unlimited"),
    ];
    for (interval, want) in cases {
        assert_eq!(rate_text(interval), want, "{interval:?}");
    }
}

#[test]
fn written_status_reads_back_and_replaces_the_last() {
    let root = tempfile::tempdir().unwrap();
    let queue = Queue::create(Layout::new(root.path())).unwrap();
    assert_eq!(read_status(&queue).unwrap(), None);
    let mut status = sample();
    write_status(&queue, &render_status(&status)).unwrap();
    assert_eq!(read_status(&queue).unwrap(), Some(status.clone()));
    status.running = false;
    status.sites.truncate(1);
    write_status(&queue, &render_status(&status)).unwrap();
    assert_eq!(read_status(&queue).unwrap(), Some(status));
    let leftovers: Vec<String> = std::fs::read_dir(queue.layout().remote_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::write(queue.layout().remote_dir().join(STATUS_FILE), "garbage").unwrap();
    assert_eq!(
        read_status(&queue).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}
