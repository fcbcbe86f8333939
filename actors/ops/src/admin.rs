//! `postman hold|release|delete|bounce QUEUE_ID…` (as Postfix's
//! `postsuper -h|-H|-d` and a manual bounce) and `postman flush [--domain
//! D]` (as `postqueue -f`): one line per message on standard output saying
//! what was done; what could not be done (a missing id, a message being
//! delivered right now) on standard error, and a non-zero exit after the
//! rest was processed.

use std::time::SystemTime;

use anyhow::Context as _;

use postman::config::Config;
use postman::queue::admin::{self, AdminError, BounceContext, Done, QueueId, QueueRef};
use postman::queue::{self, Placed, Queue};

use super::format::{count, date};

/// What each id-taking command does with one id.
type Action<'a> = dyn FnMut(&Queue, &QueueRef) -> Result<(QueueId, Done), AdminError> + 'a;

/// Runs `action` on every id in turn, printing what happened.
fn each(
    config: &Config,
    ids: &[String],
    create: bool,
    action: &mut Action<'_>,
) -> anyhow::Result<()> {
    let layout = super::open_queue(config, create)?;
    let mut failed = 0;
    for given in ids {
        let result = QueueRef::parse(given).and_then(|r| action(&layout, &r));
        match result {
            Ok((id, done)) => super::print(&format!("{id}: {}\n", describe(&done)))?,
            Err(e) => {
                failed += 1;
                super::complain(&e);
            }
        }
    }
    super::failures(failed, ids.len(), "queue ids")
}

/// What `done` says after the queue id.
pub fn describe(done: &Done) -> String {
    match done {
        Done::Held => "held".to_owned(),
        Done::AlreadyHeld => "already held".to_owned(),
        Done::Released => "released".to_owned(),
        Done::NotHeld => "not held, nothing to do".to_owned(),
        Done::Deleted { held: false } => "deleted".to_owned(),
        Done::Deleted { held: true } => "deleted (it was held)".to_owned(),
        Done::Bounced {
            sender,
            recipients,
            placed,
        } => {
            let place = match placed {
                Placed::Local(path) => format!("delivered to {}", path.display()),
                Placed::Remote(path) => format!("queued as {}", queue_id_of(path)),
            };
            format!(
                "bounced to <{sender}> ({} named in the notification, {place}), message removed",
                count(*recipients as u64, "recipient")
            )
        }
        Done::NullSenderDeleted => {
            "deleted without a bounce: it has the null sender, and a bounce is never bounced"
                .to_owned()
        }
        Done::UnreportedDeleted => {
            "deleted without a bounce: no recipient asked for failure notices (NOTIFY)".to_owned()
        }
    }
}

/// `domain/name` of a queued file's path.
fn queue_id_of(path: &std::path::Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let domain = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    match (domain, name) {
        (Some(domain), Some(name)) => format!("{domain}/{name}"),
        _ => path.display().to_string(),
    }
}

/// `postman hold QUEUE_ID…`.
pub fn hold(config: &Config, ids: &[String]) -> anyhow::Result<()> {
    each(config, ids, false, &mut |layout, r| admin::hold(layout, r))
}

/// `postman release QUEUE_ID…`.
pub fn release(config: &Config, ids: &[String]) -> anyhow::Result<()> {
    each(config, ids, false, &mut |layout, r| {
        admin::release(layout, r)
    })
}

/// `postman delete QUEUE_ID…`.
pub fn delete(config: &Config, ids: &[String]) -> anyhow::Result<()> {
    each(config, ids, false, &mut |layout, r| {
        admin::delete(layout, r)
    })
}

/// `postman bounce QUEUE_ID…`.
pub fn bounce(config: &Config, ids: &[String]) -> anyhow::Result<()> {
    let owner = postman::queue::owner::this_process();
    let pid = std::process::id();
    let mut serial = 0;
    each(config, ids, true, &mut |layout, r| {
        serial += 1;
        let now = SystemTime::now();
        let token = admin::unique_name(now, pid, serial, &config.hostname);
        let ctx = BounceContext {
            hostname: &config.hostname,
            local_domains: &config.local_domains,
            owner: &owner,
            now,
            token: &token,
            bounce_size_limit: config.bounce_size_limit,
        };
        admin::bounce(layout, r, &ctx)
    })
}

/// The lines saying which site backoffs a flush ended; counts the files
/// that could not be removed into `failed`.
fn lifted_sites(report: &admin::SiteFlush, failed: &mut u64) -> String {
    let mut out = String::new();
    for (_, site) in &report.lifted {
        let b = &site.backoff;
        out.push_str(&format!(
            "site {}: backoff ended (it was until {}, after {}: {})\n",
            site.site,
            date(b.until),
            count(u64::from(b.failures), "failed round"),
            b.error
        ));
    }
    for (file, why) in &report.unreadable {
        out.push_str(&format!(
            "site backoff {file}: removed, it could not be read ({why})\n"
        ));
    }
    for (file, e) in &report.errors {
        *failed += 1;
        super::complain(&format!("site backoff {file}: cannot remove it: {e}"));
    }
    out
}

/// `postman flush [--domain D]`: makes every deferred message due now and
/// ends each domain's backoff, and the backoff of every site (of the sites
/// of D).
pub fn flush(config: &Config, domain: Option<&str>) -> anyhow::Result<()> {
    let layout = super::open_queue(config, false)?;
    let domain = super::domain_arg(domain)?;
    let domains = match &domain {
        Some(d) => vec![d.clone()],
        None => match queue::list_domains(&layout) {
            Ok(domains) => domains,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        },
    };
    let owner = postman::queue::owner::this_process();
    let (mut flushed, mut failed, mut out) = (0, 0, String::new());
    // The sites first: a running postman lifts them before it sees the
    // messages come back due.
    let sites = admin::flush_sites(&layout, domain.as_deref())
        .context("cannot read the site backoffs (.OTHER_SERVERS/.sites)")?;
    out.push_str(&lifted_sites(&sites, &mut failed));
    for d in &domains {
        if !queue::valid_domain(d) {
            continue;
        }
        let report = match admin::flush(&layout, d, &owner, SystemTime::now()) {
            Ok(report) => report,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && domain.is_some() => {
                if sites.lifted.is_empty() {
                    anyhow::bail!("no domain folder {d} in the queue")
                }
                continue;
            }
            Err(e) => {
                failed += 1;
                super::complain(&format!("{d}: cannot flush: {e}"));
                continue;
            }
        };
        flushed += report.flushed.len();
        for name in &report.flushed {
            out.push_str(&format!("{d}/{name}: due now\n"));
        }
        for name in &report.busy {
            out.push_str(&format!("{d}/{name}: being delivered, left alone\n"));
        }
        for (name, why) in &report.unreadable {
            out.push_str(&format!(
                "{d}/{name}: not flushed, cannot read it ({why}); postman run quarantines it\n"
            ));
        }
        for (name, why) in &report.errors {
            failed += 1;
            super::complain(&format!("{d}/{name}: {why}"));
        }
        if let Some(b) = &report.backoff_cleared {
            out.push_str(&format!(
                "{d}: backoff ended (it was until {}, after {}: {})\n",
                date(b.until),
                count(u64::from(b.failures), "failed round"),
                b.error
            ));
        }
    }
    out.push_str(&format!(
        "{} made due now\n",
        count(flushed as u64, "deferred message")
    ));
    super::print(&out)?;
    if failed > 0 {
        anyhow::bail!(
            "{} could not be flushed (see above)",
            count(failed, "message or domain")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn lifted_sites_say_what_ended() {
        use postman::queue::{DomainBackoff, SiteBackoff};
        use std::time::{Duration, UNIX_EPOCH};
        let report = admin::SiteFlush {
            lifted: vec![(
                "mx.test".into(),
                SiteBackoff {
                    site: "mx.test".into(),
                    backoff: DomainBackoff {
                        until: UNIX_EPOCH + Duration::from_secs(1_764_250_000),
                        failures: 1,
                        error: "connection refused".into(),
                    },
                    domains: vec!["a.test".into()],
                },
            )],
            unreadable: vec![("junk".into(), "no site: line".into())],
            errors: Vec::new(),
        };
        let mut failed = 0;
        assert_eq!(
            lifted_sites(&report, &mut failed),
            "site mx.test: backoff ended (it was until 2025-11-27 13:26:40 UTC, after 1 failed round: connection refused)\n\
             site backoff junk: removed, it could not be read (no site: line)\n"
        );
        assert_eq!(failed, 0);
    }

    #[test]
    fn descriptions_table() {
        let cases = [
            (Done::Held, "held"),
            (Done::AlreadyHeld, "already held"),
            (Done::Released, "released"),
            (Done::NotHeld, "not held, nothing to do"),
            (Done::Deleted { held: false }, "deleted"),
            (Done::Deleted { held: true }, "deleted (it was held)"),
            (
                Done::Bounced {
                    sender: "a@src.test".into(),
                    recipients: 2,
                    placed: Placed::Remote(PathBuf::from("/q/.OTHER_SERVERS/src.test/n1")),
                },
                "bounced to <a@src.test> (2 recipients named in the notification, queued as src.test/n1), message removed",
            ),
            (
                Done::NullSenderDeleted,
                "deleted without a bounce: it has the null sender, and a bounce is never bounced",
            ),
            (
                Done::UnreportedDeleted,
                "deleted without a bounce: no recipient asked for failure notices (NOTIFY)",
            ),
        ];
        for (done, want) in cases {
            assert_eq!(describe(&done), want, "{done:?}");
        }
    }
}
