//! `postman suspend` and `postman resume` of a domain or a site (KumoMTA's
//! `kcli suspend` / `suspend-ready-q`; Postfix has only `defer_transports`
//! and `postsuper -h` per message). Each writes or removes one file under
//! `.OTHER_SERVERS/.suspend/` ([`postman::queue::write_suspension`]); a
//! running postman watches the folder and applies the change within a
//! second or two, and a later `run` reads it at its first scan. Both
//! commands remove the suspensions whose time is over, saying so.

use std::time::SystemTime;

use anyhow::{bail, Context as _};
use postman::config::{suffix_matches, Config};
use postman::queue::{self, Queue, Status, Suspension, Target};

use super::format::{age, date};

/// `--domain` or `--site`, as given.
#[derive(Debug, Clone, Copy)]
pub enum Given<'a> {
    Domain(&'a str),
    Site(&'a str),
}

/// The target `given` names, checked: a domain or a host-name suffix in
/// A-label form, lower-cased.
pub fn target(given: Given<'_>) -> anyhow::Result<Target> {
    let (flag, text) = match given {
        Given::Domain(text) => ("--domain", text),
        Given::Site(text) => ("--site", text),
    };
    let Some(name) = queue::target_name(text) else {
        bail!(
            "invalid {flag} {text:?}: expected a domain name in A-label form (xn--… for non-ASCII)"
        );
    };
    Ok(match given {
        Given::Domain(_) => Target::Domain(name),
        Given::Site(_) => Target::Site(name),
    })
}

/// `postman suspend (--domain D | --site SUFFIX) [--for DURATION] [--reason TEXT]`.
pub fn suspend(
    config: &Config,
    given: Given<'_>,
    duration: Option<&str>,
    reason: Option<&str>,
) -> anyhow::Result<()> {
    let target = target(given)?;
    let duration = duration
        .map(queue::parse_duration)
        .transpose()
        .context("invalid --for")?;
    let queue = super::open_queue(config, true)?;
    let now = SystemTime::now();
    let mut out = tidy(&queue, now)?;
    let was = queue::read_suspension(&queue, &target)
        .ok()
        .flatten()
        .filter(|s| s.lasts_at(now));
    let reason = reason.map(queue::one_line).unwrap_or_default();
    let suspension = Suspension {
        target,
        until: duration.map(|d| now + d),
        since: Some(now),
        reason,
    };
    queue::write_suspension(&queue, &suspension).with_context(|| {
        format!(
            "cannot write the suspension of {} under {}",
            suspension.target,
            queue.layout().remote_dir().display()
        )
    })?;
    out.push_str(&suspended(&suspension, was.as_ref(), now));
    if let Target::Site(suffix) = &suspension.target {
        let status = queue::read_status(&queue).ok().flatten();
        out.push_str(&site_note(suffix, status.as_ref()));
    }
    super::print(&out)
}

/// For `suspend --site`: the sites of postman's last snapshot that the
/// suffix holds, or that it holds none of them (a typo shows at once).
/// Nothing without a snapshot.
pub fn site_note(suffix: &str, status: Option<&Status>) -> String {
    let Some(status) = status else {
        return String::new();
    };
    let held: Vec<&str> = status
        .sites
        .iter()
        .filter(|site| site.hosts.iter().any(|host| suffix_matches(suffix, host)))
        .map(|site| site.name.as_str())
        .collect();
    match held.len() {
        0 => format!(
            "  no site postman knows has an MX host under {suffix} yet; it holds those it finds\n"
        ),
        n => format!(
            "  it holds {} postman knows: {}\n",
            if n == 1 {
                "1 site".to_owned()
            } else {
                format!("{n} sites")
            },
            held.join(", ")
        ),
    }
}

/// `postman resume (--domain D | --site SUFFIX)`.
pub fn resume(config: &Config, given: Given<'_>) -> anyhow::Result<()> {
    let target = target(given)?;
    let queue = super::open_queue(config, false)?;
    let now = SystemTime::now();
    let mut out = tidy(&queue, now)?;
    let was = queue::remove_suspension(&queue, &target)
        .with_context(|| format!("cannot remove the suspension of {target}"))?;
    let others = match queue::list_suspensions(&queue, now) {
        Ok(files) => files.active,
        Err(_) => Vec::new(),
    };
    out.push_str(&resumed(&target, was.as_ref(), &others, now));
    super::print(&out)
}

/// Removes the suspensions whose time is over; one line for each.
fn tidy(queue: &Queue, now: SystemTime) -> anyhow::Result<String> {
    let files = match queue::list_suspensions(queue, now) {
        Ok(files) => files,
        Err(e) => {
            super::complain(&format!("cannot list the suspensions: {e}"));
            return Ok(String::new());
        }
    };
    for (name, e) in &files.bad {
        super::complain(&format!(
            "{}: ignored: {e}",
            queue
                .layout()
                .remote_dir()
                .join(queue::SUSPEND_DIR)
                .join(name)
                .display()
        ));
    }
    let removed = queue::remove_expired(queue, &files.expired, now)
        .context("cannot remove a suspension whose time is over")?;
    Ok(removed.iter().map(ended).collect())
}

/// `until 2025-11-27 13:41:40 UTC (in 15m)` or `until postman resume`.
pub fn until_text(until: Option<SystemTime>, now: SystemTime) -> String {
    match until {
        Some(until) => format!(
            "until {} (in {})",
            date(until),
            age(until.duration_since(now).unwrap_or_default())
        ),
        None => "until postman resume".to_owned(),
    }
}

/// `: <reason>`, or nothing when none was given.
fn reason_text(s: &Suspension) -> String {
    if s.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", s.reason)
    }
}

/// What `suspend` says it did.
pub fn suspended(s: &Suspension, was: Option<&Suspension>, now: SystemTime) -> String {
    let mut line = format!(
        "{}: suspended {}{}",
        s.target,
        until_text(s.until, now),
        reason_text(s)
    );
    if let Some(was) = was {
        line.push_str(&format!(
            " (it was suspended {}{})",
            until_text(was.until, now),
            reason_text(was)
        ));
    }
    line.push('\n');
    line
}

/// What `resume` says it did; `others` are the suspensions left, which may
/// still hold the target under another name.
pub fn resumed(
    target: &Target,
    was: Option<&Suspension>,
    others: &[Suspension],
    now: SystemTime,
) -> String {
    let mut line = match was {
        Some(was) => format!(
            "{target}: resumed (it was suspended {}{})",
            until_text(was.until, now),
            reason_text(was)
        ),
        None => format!("{target}: not suspended, nothing to do"),
    };
    if let Target::Site(name) = target {
        // A shorter suffix still holds this one's sites.
        for other in others {
            if let Target::Site(suffix) = &other.target {
                if suffix != name && suffix_matches(suffix, name) {
                    line.push_str(&format!(
                        "; still held by {} {} (postman resume --site {suffix})",
                        other.target,
                        until_text(other.until, now)
                    ));
                }
            }
        }
    }
    line.push('\n');
    line
}

/// The line for a suspension removed because its time was over.
fn ended(s: &Suspension) -> String {
    let when = s.until.map_or_else(|| "?".to_owned(), date);
    format!("{}: its suspension ended at {when}; removed\n", s.target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 1_764_250_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn suspension(target: Target, until: Option<u64>, reason: &str) -> Suspension {
        Suspension {
            target,
            until: until.map(at),
            since: Some(at(NOW)),
            reason: reason.into(),
        }
    }

    #[test]
    fn targets_are_checked_and_lower_cased() {
        let cases: &[(Given<'_>, Result<Target, &str>)] = &[
            (
                Given::Domain("A.Test."),
                Ok(Target::Domain("a.test".into())),
            ),
            (
                Given::Site("Google.com"),
                Ok(Target::Site("google.com".into())),
            ),
            (Given::Domain("a/b"), Err("invalid --domain \"a/b\"")),
            (Given::Site(""), Err("invalid --site \"\"")),
        ];
        for (given, want) in cases {
            match (target(*given), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{given:?}"),
                (Err(e), Err(want)) => {
                    assert!(e.to_string().starts_with(want), "{given:?}: {e}")
                }
                (got, want) => panic!("{given:?}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_site_suspension_says_which_known_sites_it_holds() {
        use postman::queue::SiteStatus;
        let site = |name: &str, hosts: &[&str]| SiteStatus {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..SiteStatus::default()
        };
        let status = Status {
            written: at(NOW),
            pid: 1,
            running: true,
            sites: vec![
                site(
                    "aspmx.l.google.com;alt1.aspmx.l.google.com",
                    &["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
                ),
                site("smtp.google.com", &["smtp.google.com"]),
                site("mx.other.test", &["mx.other.test"]),
            ],
            more_sites: 0,
        };
        let cases = [
            (
                "google.com",
                "  it holds 2 sites postman knows: aspmx.l.google.com;alt1.aspmx.l.google.com, smtp.google.com\n",
            ),
            ("mx.other.test", "  it holds 1 site postman knows: mx.other.test\n"),
            (
                "gogle.com",
                "  no site postman knows has an MX host under gogle.com yet; it holds those it finds\n",
            ),
        ];
        for (suffix, want) in cases {
            assert_eq!(site_note(suffix, Some(&status)), want, "{suffix}");
        }
        assert_eq!(site_note("google.com", None), "");
    }

    #[test]
    fn what_the_commands_say() {
        let now = at(NOW);
        let a = Target::Domain("a.test".into());
        let google = Target::Site("google.com".into());
        let timed = suspension(a.clone(), Some(NOW + 900), "dns move");
        let lasting = suspension(google.clone(), None, "");
        let cases = [
            (
                suspended(&timed, None, now),
                "domain a.test: suspended until 2025-11-27 13:41:40 UTC (in 15m): dns move\n",
            ),
            (
                suspended(&lasting, Some(&timed), now),
                "site google.com: suspended until postman resume (it was suspended until 2025-11-27 13:41:40 UTC (in 15m): dns move)\n",
            ),
            (
                resumed(&a, Some(&timed), &[], now),
                "domain a.test: resumed (it was suspended until 2025-11-27 13:41:40 UTC (in 15m): dns move)\n",
            ),
            (
                resumed(&a, None, std::slice::from_ref(&lasting), now),
                "domain a.test: not suspended, nothing to do\n",
            ),
            (
                resumed(
                    &Target::Site("aspmx.l.google.com".into()),
                    None,
                    &[lasting.clone(), timed.clone()],
                    now,
                ),
                "site aspmx.l.google.com: not suspended, nothing to do; still held by site google.com until postman resume (postman resume --site google.com)\n",
            ),
            (
                resumed(&google, None, std::slice::from_ref(&lasting), now),
                "site google.com: not suspended, nothing to do\n",
            ),
            (
                ended(&suspension(a.clone(), Some(NOW - 60), "x")),
                "domain a.test: its suspension ended at 2025-11-27 13:25:40 UTC; removed\n",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
