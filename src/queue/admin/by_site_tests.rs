use super::*;
use crate::queue::{DomainBackoff, HoldKind, Target};
use std::time::{Duration, UNIX_EPOCH};

const NOW: u64 = 1_764_250_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn line(domain: &str, ready: u64, deferred: u64) -> DomainSummary {
    DomainSummary {
        domain: domain.into(),
        ready,
        deferred,
        bytes: 100 * (ready + deferred),
        ..DomainSummary::default()
    }
}

fn site_status(name: &str, domains: &[&str], connections: usize, held: Option<Held>) -> SiteStatus {
    SiteStatus {
        name: name.into(),
        hosts: hosts_of_site_name(name),
        domains: strings(domains),
        connections,
        limit: 5,
        max_connections: 20,
        held,
        ..SiteStatus::default()
    }
}

fn backoff_file(site: &str, domains: &[&str], until: u64) -> SiteBackoff {
    SiteBackoff {
        site: site.into(),
        backoff: DomainBackoff {
            until: at(until),
            failures: 2,
            error: "connection refused".into(),
        },
        domains: strings(domains),
    }
}

fn suspension(target: Target, until: Option<u64>) -> Suspension {
    Suspension {
        target,
        until: until.map(at),
        since: None,
        reason: "dns move".into(),
    }
}

/// Each group as `site: domain domain …`, for comparing at a glance.
fn shape(groups: &[SiteGroup]) -> Vec<String> {
    groups
        .iter()
        .map(|g| {
            let names: Vec<&str> = g
                .domains
                .iter()
                .map(|d| d.summary.domain.as_str())
                .collect();
            format!(
                "{} ({}): {}",
                g.site.as_deref().unwrap_or("?"),
                g.total.total(),
                names.join(" ")
            )
        })
        .collect()
}

#[test]
fn host_names_from_site_names_table() {
    let cases: &[(&str, &[&str])] = &[
        ("mx.test", &["mx.test"]),
        ("a.test,b.test;c.test", &["a.test", "b.test", "c.test"]),
        ("a.test;b.test;+3", &["a.test", "b.test"]),
        ("mx.test tls=require", &["mx.test"]),
        ("", &[]),
    ];
    for (name, want) in cases {
        assert_eq!(hosts_of_site_name(name), strings(want), "{name:?}");
    }
}

#[test]
fn domains_go_under_the_site_the_snapshot_or_a_backoff_file_names() {
    let now = at(NOW);
    let status = Status {
        written: now,
        pid: 1,
        running: true,
        sites: vec![
            site_status("mx.shared.test", &["a.test", "b.test"], 2, None),
            // Nothing queued, nothing open, no hold: not listed.
            site_status("mx.idle.test", &["idle.test"], 0, None),
            // Open connections, nothing queued: listed.
            site_status("mx.busy.test", &["busy.test"], 3, None),
        ],
        more_sites: 0,
    };
    let files = [
        // The snapshot's word wins for a.test.
        backoff_file("mx.old.test", &["a.test", "down.test"], NOW + 60),
        // A past backoff still says where stale.test goes.
        backoff_file("mx.stale.test", &["stale.test"], NOW - 60),
    ];
    let domains = [
        line("a.test", 3, 1),
        line("b.test", 1, 0),
        line("down.test", 0, 2),
        line("stale.test", 1, 0),
        line("new.test", 7, 0),
        line("new2.test", 1, 0),
    ];
    let groups = group_by_site(&domains, Some(&status), &files, &[], now);
    assert_eq!(
        shape(&groups),
        [
            "mx.shared.test (5): a.test b.test",
            "mx.old.test (2): down.test",
            "mx.stale.test (1): stale.test",
            "mx.busy.test (0): ",
            "? (8): new.test new2.test",
        ]
    );
    assert_eq!(groups[0].total.ready, 4);
    assert_eq!(groups[0].total.bytes, 500);
    assert_eq!(groups[0].status.as_ref().map(|s| s.connections), Some(2));
    assert!(matches!(&groups[1].hold, Some(SiteHold::Backoff(b)) if b.site == "mx.old.test"));
    assert_eq!(groups[1].hosts, ["mx.old.test"]);
    assert_eq!(groups[2].hold, None, "its backoff is over");
    assert_eq!(groups[4].site, None);

    // No snapshot, no files: one group of unknown sites.
    let groups = group_by_site(&domains[..2], None, &[], &[], now);
    assert_eq!(shape(&groups), ["? (5): a.test b.test"]);
    assert!(group_by_site(&[], None, &[], &[], now).is_empty());
}

#[test]
fn the_operators_suspension_holds_first_then_the_daemons_hold_then_the_file() {
    let now = at(NOW);
    let throttled = Held {
        kind: HoldKind::Throttled,
        until: Some(at(NOW + 30)),
        failures: 0,
        reason: "throttled: 421 4.7.0 too many".into(),
    };
    let stale_operator = Held {
        kind: HoldKind::Operator,
        until: None,
        failures: 0,
        reason: "resumed since".into(),
    };
    let over = Held {
        until: Some(at(NOW - 1)),
        ..throttled.clone()
    };
    let status = Status {
        written: now,
        pid: 1,
        running: true,
        sites: vec![
            site_status(
                "aspmx.l.google.com,alt1.aspmx.l.google.com",
                &["g.test"],
                0,
                Some(throttled.clone()),
            ),
            site_status("mx.throttled.test", &["t.test"], 0, Some(throttled.clone())),
            site_status("mx.resumed.test", &["r.test"], 0, Some(stale_operator)),
            site_status("mx.over.test", &["o.test"], 0, Some(over)),
            site_status("mx.file.test", &["f.test"], 0, None),
        ],
        more_sites: 0,
    };
    let files = [backoff_file("mx.file.test", &["f.test"], NOW + 60)];
    let google = suspension(Target::Site("google.com".into()), None);
    let a_domain = suspension(Target::Domain("t.test".into()), Some(NOW + 60));
    let suspensions = [google.clone(), a_domain.clone()];
    let domains = [
        line("g.test", 5, 0),
        line("t.test", 4, 0),
        line("r.test", 3, 0),
        line("o.test", 2, 0),
        line("f.test", 1, 0),
    ];
    let groups = group_by_site(&domains, Some(&status), &files, &suspensions, now);
    let holds: Vec<(Option<&str>, Option<&SiteHold>)> = groups
        .iter()
        .map(|g| (g.site.as_deref(), g.hold.as_ref()))
        .collect();
    assert_eq!(
        holds,
        [
            (
                Some("aspmx.l.google.com,alt1.aspmx.l.google.com"),
                Some(&SiteHold::Suspended(google))
            ),
            (Some("mx.throttled.test"), Some(&SiteHold::Held(throttled))),
            (Some("mx.resumed.test"), None),
            (Some("mx.over.test"), None),
            (
                Some("mx.file.test"),
                Some(&SiteHold::Backoff(files[0].clone()))
            ),
        ]
    );
    assert_eq!(groups[1].domains[0].suspension, Some(a_domain));
    assert_eq!(groups[0].domains[0].suspension, None);
}
