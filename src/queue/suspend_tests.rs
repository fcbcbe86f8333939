use super::*;
use crate::queue::Layout;
use proptest::prelude::*;
use std::fs;

const NOW: u64 = 1_764_250_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn queue() -> (tempfile::TempDir, Queue) {
    let root = tempfile::tempdir().unwrap();
    let queue = Queue::create(Layout::new(root.path())).unwrap();
    (root, queue)
}

fn domain(name: &str) -> Target {
    Target::Domain(name.into())
}

fn site(name: &str) -> Target {
    Target::Site(name.into())
}

#[test]
fn durations_table() {
    let ok: &[(&str, u64)] = &[
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("2h", 7200),
        ("1d", 86_400),
        (" 3 ", 3),
        ("3650d", 3650 * 86_400),
    ];
    for (given, secs) in ok {
        assert_eq!(
            parse_duration(given),
            Ok(Duration::from_secs(*secs)),
            "{given:?}"
        );
    }
    let bad: &[(&str, SuspendError)] = &[
        ("", SuspendError::Duration("".into())),
        ("m", SuspendError::Duration("m".into())),
        ("1w", SuspendError::Duration("1w".into())),
        ("1.5h", SuspendError::Duration("1.5h".into())),
        ("-5", SuspendError::Duration("-5".into())),
        ("5 m", SuspendError::Duration("5 m".into())),
        ("1hm", SuspendError::Duration("1hm".into())),
        ("0", SuspendError::ZeroDuration),
        ("0d", SuspendError::ZeroDuration),
        ("3651d", SuspendError::TooLong("3651d".into())),
        (
            "99999999999999999999d",
            SuspendError::TooLong("99999999999999999999d".into()),
        ),
        (
            "18446744073709551615d",
            SuspendError::TooLong("18446744073709551615d".into()),
        ),
    ];
    for (given, want) in bad {
        assert_eq!(parse_duration(given).as_ref(), Err(want), "{given:?}");
    }
}

#[test]
fn file_names_table() {
    let cases: &[(&str, Option<Target>)] = &[
        ("domain:a.test", Some(domain("a.test"))),
        ("site:google.com", Some(site("google.com"))),
        ("site:mx.ctl.test", Some(site("mx.ctl.test"))),
        ("domain:A.test", None),
        ("domain:", None),
        ("domain:../x", None),
        ("host:a.test", None),
        ("a.test", None),
        ("site:a.test:b", None),
        ("site:a.test.", None),
    ];
    for (file, want) in cases {
        assert_eq!(Target::from_file_name(file), *want, "{file:?}");
        if let Some(target) = want {
            assert_eq!(target.file_name(), *file, "{target:?} back to its name");
        }
    }
    assert_eq!(site("google.com").to_string(), "site google.com");
    assert_eq!(domain("a.test").to_string(), "domain a.test");
}

#[test]
fn target_names_table() {
    let cases: &[(&str, Option<&str>)] = &[
        ("a.test", Some("a.test")),
        ("Google.COM.", Some("google.com")),
        (" mx.ctl.test ", Some("mx.ctl.test")),
        ("", None),
        (".", None),
        ("a..test", None),
        ("a/b", None),
        ("b\u{fc}cher.test", None),
        ("*.google.com", None),
    ];
    for (given, want) in cases {
        assert_eq!(target_name(given).as_deref(), *want, "{given:?}");
    }
}

/// `until`, `since` and `reason` of a parsed file.
type Fields = (Option<u64>, Option<u64>, &'static str);

#[test]
fn contents_parse_table() {
    let t = || domain("a.test");
    let cases: &[(&str, Result<Fields, SuspendError>)] = &[
        (
            "until: 1764250300\nsince: 1764249400\nreason: dns move\n",
            Ok((Some(1_764_250_300), Some(1_764_249_400), "dns move")),
        ),
        ("until: none\n", Ok((None, None, ""))),
        ("until:none\r\nreason:  a  b \r\n", Ok((None, None, "a b"))),
        (
            "junk\nuntil: 5\nuntil: 6\nother: x\n",
            Ok((Some(6), None, "")),
        ),
        (
            "until: 7\nsince: garbage\nreason: x\u{7}y\n",
            Ok((Some(7), None, "x y")),
        ),
        ("", Err(SuspendError::NoUntil)),
        ("reason: only\n", Err(SuspendError::NoUntil)),
        ("until: soon\n", Err(SuspendError::NoUntil)),
        ("until: -1\n", Err(SuspendError::NoUntil)),
        ("until: 5\nuntil: x\n", Err(SuspendError::NoUntil)),
        (
            "until: 253402300800\n",
            Err(SuspendError::TooLate(253_402_300_800)),
        ),
        (
            "until: 18446744073709551615\n",
            Err(SuspendError::TooLate(u64::MAX)),
        ),
        (
            "until: 1\nsince: 18446744073709551615\n",
            Ok((Some(1), None, "")),
        ),
    ];
    for (text, want) in cases {
        let got = parse_suspension(t(), text.as_bytes());
        let want = want.clone().map(|(until, since, reason)| Suspension {
            target: t(),
            until: until.map(at),
            since: since.map(at),
            reason: reason.to_owned(),
        });
        assert_eq!(got, want, "{text:?}");
    }
    // Bytes that are not UTF-8 are read as well as they can be.
    let got = parse_suspension(t(), b"until: 9\nreason: \xff\xfe\n").unwrap();
    assert_eq!(got.until, Some(at(9)));
}

#[test]
fn until_is_rounded_up_to_the_second() {
    let cases = [
        (Duration::from_secs(NOW), NOW),
        (Duration::from_millis(NOW * 1000 + 1), NOW + 1),
        (Duration::new(NOW, 999_999_999), NOW + 1),
        (Duration::ZERO, 0),
    ];
    for (after_epoch, want) in cases {
        let s = Suspension {
            target: domain("a.test"),
            until: Some(UNIX_EPOCH + after_epoch),
            since: Some(UNIX_EPOCH + after_epoch),
            reason: String::new(),
        };
        let text = render_suspension(&s);
        assert!(
            text.starts_with(&format!("until: {want}\n")),
            "{after_epoch:?}: {text:?}"
        );
    }
}

proptest! {
    #[test]
    fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_suspension(domain("a.test"), &bytes);
    }

    #[test]
    fn a_rendered_suspension_reads_back(
        until in proptest::option::of(0..=MAX_UNTIL),
        since in proptest::option::of(0..=MAX_UNTIL),
        reason in "[ -~]{0,80}",
    ) {
        let s = Suspension {
            target: site("google.com"),
            until: until.map(at),
            since: since.map(at),
            reason: one_line(&reason),
        };
        let back = parse_suspension(site("google.com"), render_suspension(&s).as_bytes());
        prop_assert_eq!(back, Ok(s));
    }
}

#[test]
fn which_suspension_holds_a_site_or_domain() {
    let s = |target: Target, until: Option<u64>, reason: &str| Suspension {
        target,
        until: until.map(at),
        since: None,
        reason: reason.into(),
    };
    let set = [
        s(site("google.com"), Some(NOW + 60), "short"),
        s(site("l.google.com"), Some(NOW + 600), "long"),
        s(site("mx.ctl.test"), None, "ctl"),
        s(site("ctl.test"), Some(NOW + 6000), "shorter than none"),
        s(domain("a.test"), Some(NOW + 60), "a"),
        s(domain("a.test"), None, "a for ever"),
        s(domain("google.com"), None, "the domain, not its MX"),
    ];
    let hosts = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let cases: &[(&[&str], Option<&str>)] = &[
        (
            &["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
            Some("long"),
        ),
        (&["smtp.google.com"], Some("short")),
        (&["GOOGLE.COM."], Some("short")),
        (&["notgoogle.com"], None),
        (&["google.com.evil.test"], None),
        (&["mx.ctl.test"], Some("ctl")),
        (&["other.ctl.test"], Some("shorter than none")),
        (&["a.test"], None),
        (&[], None),
    ];
    for (names, want) in cases {
        let got = holding_site(&set, &hosts(names)).map(|s| s.reason.as_str());
        assert_eq!(got, *want, "{names:?}");
    }
    let domains: &[(&str, Option<&str>)] = &[
        ("a.test", Some("a for ever")),
        ("google.com", Some("the domain, not its MX")),
        ("mx.ctl.test", None),
        ("b.test", None),
    ];
    for (name, want) in domains {
        let got = holding_domain(&set, name).map(|s| s.reason.as_str());
        assert_eq!(got, *want, "{name:?}");
    }
}

#[test]
fn written_suspensions_list_expire_and_go() {
    let (_root, queue) = queue();
    let now = at(NOW);
    let listed = list_suspensions(&queue, now).unwrap();
    assert!(listed.active.is_empty() && listed.expired.is_empty() && listed.bad.is_empty());
    let lasting = Suspension {
        target: site("google.com"),
        until: None,
        since: Some(at(NOW - 60)),
        reason: "provider block".into(),
    };
    let timed = Suspension {
        target: domain("a.test"),
        until: Some(at(NOW + 60)),
        since: None,
        reason: String::new(),
    };
    let over = Suspension {
        target: domain("b.test"),
        until: Some(at(NOW)),
        since: None,
        reason: "old".into(),
    };
    for s in [&lasting, &timed, &over] {
        write_suspension(&queue, s).unwrap();
    }
    let dir = queue.layout().remote_dir().join(SUSPEND_DIR);
    fs::write(dir.join("domain:c.test"), "until: x\n").unwrap();
    fs::write(dir.join("stray"), "until: none\n").unwrap();
    fs::write(dir.join(".hidden"), "until: none\n").unwrap();
    let listed = list_suspensions(&queue, now).unwrap();
    assert_eq!(listed.active, vec![timed.clone(), lasting.clone()]);
    assert_eq!(listed.expired, vec![over.clone()]);
    let mut bad: Vec<&str> = listed.bad.iter().map(|(n, _)| n.as_str()).collect();
    bad.sort_unstable();
    assert_eq!(bad, ["domain:c.test", "stray"]);
    assert_eq!(
        read_suspension(&queue, &timed.target).unwrap(),
        Some(timed.clone())
    );

    // Made anew between the listing and the removal: it stays.
    let renewed = Suspension {
        until: Some(at(NOW + 600)),
        ..over.clone()
    };
    write_suspension(&queue, &renewed).unwrap();
    assert_eq!(
        remove_expired(&queue, &listed.expired, now).unwrap(),
        vec![]
    );
    write_suspension(&queue, &over).unwrap();
    assert_eq!(
        remove_expired(&queue, &listed.expired, now).unwrap(),
        vec![over.clone()]
    );
    assert_eq!(read_suspension(&queue, &over.target).unwrap(), None);

    assert_eq!(
        remove_suspension(&queue, &lasting.target).unwrap(),
        Some(lasting.clone())
    );
    assert_eq!(remove_suspension(&queue, &lasting.target).unwrap(), None);
    assert_eq!(
        remove_suspension(&queue, &domain("c.test")).unwrap(),
        None,
        "an unreadable one goes, reported as none"
    );
    assert!(!dir.join("domain:c.test").exists());
}

#[test]
fn hostile_entries_are_refused_unread() {
    let (_root, queue) = queue();
    write_suspension(
        &queue,
        &Suspension {
            target: domain("a.test"),
            until: None,
            since: None,
            reason: String::new(),
        },
    )
    .unwrap();
    let dir = queue.layout().remote_dir().join(SUSPEND_DIR);
    std::os::unix::fs::symlink("/dev/zero", dir.join("domain:zero.test")).unwrap();
    fs::write(dir.join("domain:big.test"), vec![b'x'; 10_000]).unwrap();
    nix::unistd::mkfifo(&dir.join("domain:fifo.test"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    fs::create_dir(dir.join("domain:dir.test")).unwrap();
    let listed = list_suspensions(&queue, at(NOW)).unwrap();
    assert_eq!(listed.active.len(), 1, "{listed:?}");
    let mut bad: Vec<&str> = listed.bad.iter().map(|(n, _)| n.as_str()).collect();
    bad.sort_unstable();
    assert_eq!(
        bad,
        ["domain:big.test", "domain:fifo.test", "domain:zero.test"]
    );
    assert!(
        std::fs::metadata("/dev/zero").is_ok(),
        "a removal never follows the link"
    );
    remove_suspension(&queue, &domain("zero.test")).unwrap();
    assert!(std::fs::metadata("/dev/zero").is_ok());
}

#[test]
fn no_queue_folder_is_no_suspension() {
    let root = tempfile::tempdir().unwrap();
    let queue = Queue::open(Layout::new(root.path())).unwrap();
    let listed = list_suspensions(&queue, at(NOW)).unwrap();
    assert!(listed.active.is_empty() && listed.bad.is_empty());
    assert_eq!(remove_suspension(&queue, &domain("a.test")).unwrap(), None);
}

#[test]
fn a_linked_suspend_folder_is_never_entered() {
    let (_root, queue) = queue();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("domain:a.test"), "until: none\n").unwrap();
    std::os::unix::fs::symlink(
        outside.path(),
        queue.layout().remote_dir().join(SUSPEND_DIR),
    )
    .unwrap();
    let refused = list_suspensions(&queue, at(NOW)).unwrap_err();
    assert!(
        crate::queue::dirfd::refusal(&refused).is_some(),
        "refused as a link: {refused}"
    );
    assert!(read_suspension(&queue, &domain("a.test")).is_err());
    assert!(write_suspension(
        &queue,
        &Suspension {
            target: domain("b.test"),
            until: None,
            since: None,
            reason: String::new(),
        }
    )
    .is_err());
    assert!(remove_suspension(&queue, &domain("a.test")).is_err());
    let left: Vec<_> = fs::read_dir(outside.path()).unwrap().collect();
    assert_eq!(
        left.len(),
        1,
        "nothing written or removed outside the queue"
    );
}
