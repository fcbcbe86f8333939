//! A site's backoff on disk: `.OTHER_SERVERS/.sites/<site file>`. When no
//! server of a site (the MX hosts that domains share) could be reached,
//! every domain of the site waits; this file makes that survive a restart,
//! so that a restarted postman probes a dead provider once, not once per
//! domain. Written through `.sites/tmp/` and a rename, removed by the first
//! success and by `postman flush`.
//!
//! The format is `.backoff`'s with two more lines: the site's name, and the
//! domains that were routed to it when it was written (so that `postman
//! flush <domain>` finds the site of a domain without a DNS lookup):
//!
//! ```text
//! site: mx1.example,mx2.example
//! until: 1764250300
//! failures: 3
//! error: connect to mx1.example[192.0.2.1]:25: Connection refused
//! domains: a.example b.example
//! ```

use std::io;

use super::backoff::{parse_backoff, render_backoff, DomainBackoff};
use super::dirfd::QueueDir;
use super::state::one_line;
use super::statefile::fnv1a64;
use super::tmpfile::replace_synced;
use super::{Queue, TMP_DIR};

/// The folder of site backoffs under `.OTHER_SERVERS` (a dot name: never a
/// domain).
pub const SITES_DIR: &str = ".sites";

/// The most bytes of a site file read: room for a few thousand domain
/// names. Longer lists are cut when written.
pub const MAX_SITE_FILE: u64 = 64 * 1024;

/// The longest site name used as a file name as it is.
const MAX_PLAIN_NAME: usize = 200;

/// A site's backoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteBackoff {
    /// The site's name (`route::site_name`).
    pub site: String,
    pub backoff: DomainBackoff,
    /// The domains routed to it when it was written.
    pub domains: Vec<String>,
}

/// The file name of a site: its name when that is short and made of host
/// name characters (as every site name postman makes is), else a prefix
/// and a hash of the whole.
pub fn site_file_name(site: &str) -> String {
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ',' | ';' | '+' | '_');
    if !site.is_empty()
        && site.len() <= MAX_PLAIN_NAME
        && !site.starts_with('.')
        && site.chars().all(plain)
    {
        return site.to_owned();
    }
    let prefix: String = site
        .chars()
        .filter(|c| plain(*c))
        .take(64)
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned();
    format!("{prefix}~{:016x}", fnv1a64(site.as_bytes()))
}

/// Parses a site file (see the module documentation). Pure and total.
pub fn parse_site_backoff(bytes: &[u8]) -> io::Result<SiteBackoff> {
    let backoff =
        parse_backoff(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let text = String::from_utf8_lossy(bytes);
    let mut site = None;
    let mut domains = Vec::new();
    for line in text.lines() {
        match line.split_once(':') {
            Some(("site", value)) => site = Some(value.trim().to_owned()),
            Some(("domains", value)) => {
                domains = value.split_whitespace().map(str::to_owned).collect()
            }
            _ => {}
        }
    }
    let site = site.filter(|s| !s.is_empty()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no site: line in a site backoff",
        )
    })?;
    Ok(SiteBackoff {
        site,
        backoff,
        domains,
    })
}

/// The contents of a site file, within [`MAX_SITE_FILE`] (domains past
/// the room are left out).
pub fn render_site_backoff(site: &SiteBackoff) -> String {
    let mut text = format!(
        "site: {}\n{}domains:",
        one_line(&site.site),
        render_backoff(&site.backoff)
    );
    let room = MAX_SITE_FILE as usize - 1;
    for domain in &site.domains {
        if text.len() + 1 + domain.len() >= room {
            break;
        }
        text.push(' ');
        text.push_str(domain);
    }
    text.push('\n');
    text
}

fn sites_dir(queue: &Queue, create: bool) -> io::Result<Option<QueueDir>> {
    let remote = queue.remote()?;
    if create {
        return remote.dir_create(SITES_DIR).map(Some);
    }
    match remote.dir(SITES_DIR) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other.map(Some),
    }
}

/// Reads the backoff of `site`; `Ok(None)` when there is none.
pub fn read_site_backoff(queue: &Queue, site: &str) -> io::Result<Option<SiteBackoff>> {
    let Some(dir) = sites_dir(queue, false)? else {
        return Ok(None);
    };
    let Some(bytes) = dir.read_small(site_file_name(site), MAX_SITE_FILE)? else {
        return Ok(None);
    };
    parse_site_backoff(&bytes).map(Some)
}

/// The site backoffs on disk: each with the file it is in, and the files
/// that cannot be read with why.
#[derive(Debug, Default)]
pub struct SiteFiles {
    pub found: Vec<(String, SiteBackoff)>,
    pub bad: Vec<(String, io::Error)>,
}

/// Every site backoff on disk ([`SiteFiles`]).
pub fn list_site_backoffs(queue: &Queue) -> io::Result<SiteFiles> {
    let mut files = SiteFiles::default();
    let Some(dir) = sites_dir(queue, false)? else {
        return Ok(files);
    };
    for entry in dir.entries()? {
        let name = entry.name.to_string_lossy().into_owned();
        if name.starts_with('.') || name == TMP_DIR {
            continue;
        }
        let read = dir
            .read_small(&name, MAX_SITE_FILE)
            .and_then(|bytes| match bytes {
                Some(bytes) => parse_site_backoff(&bytes).map(Some),
                None => Ok(None),
            });
        match read {
            Ok(Some(site)) => files.found.push((name, site)),
            Ok(None) => {}
            Err(e) => files.bad.push((name, e)),
        }
    }
    Ok(files)
}

/// Writes the backoff of `site.site` crash-safely.
pub fn write_site_backoff(queue: &Queue, site: &SiteBackoff) -> io::Result<()> {
    let Some(dir) = sites_dir(queue, true)? else {
        return Ok(());
    };
    let name = site_file_name(&site.site);
    let tmp_dir = dir.dir_create(TMP_DIR)?;
    replace_synced(&tmp_dir, &dir, &name, render_site_backoff(site).as_bytes())
}

/// Removes the backoff file of `site`; none is fine.
pub fn clear_site_backoff(queue: &Queue, site: &str) -> io::Result<()> {
    remove_site_file(queue, &site_file_name(site))
}

/// Removes a site file by its file name; none is fine.
pub fn remove_site_file(queue: &Queue, file: &str) -> io::Result<()> {
    let Some(dir) = sites_dir(queue, false)? else {
        return Ok(());
    };
    match dir.remove_file(file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Layout;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_site_backoff_reads_back_lists_and_clears() {
        let root = tempfile::tempdir().unwrap();
        let queue = Queue::create(Layout::new(root.path())).unwrap();
        let site = SiteBackoff {
            site: "mx1.test,mx2.test".into(),
            backoff: DomainBackoff {
                until: UNIX_EPOCH + Duration::from_secs(1_764_250_300),
                failures: 2,
                error: "refused".into(),
            },
            domains: vec!["a.test".into(), "b.test".into()],
        };
        assert_eq!(read_site_backoff(&queue, &site.site).unwrap(), None);
        write_site_backoff(&queue, &site).unwrap();
        assert_eq!(
            read_site_backoff(&queue, &site.site).unwrap(),
            Some(site.clone())
        );
        let files = list_site_backoffs(&queue).unwrap();
        assert!(files.bad.is_empty());
        assert_eq!(
            files.found,
            vec![("mx1.test,mx2.test".to_owned(), site.clone())]
        );
        clear_site_backoff(&queue, &site.site).unwrap();
        assert_eq!(read_site_backoff(&queue, &site.site).unwrap(), None);
        clear_site_backoff(&queue, &site.site).unwrap();
    }

    #[test]
    fn site_file_names_are_the_name_or_a_safe_hash() {
        let long = "m".repeat(300);
        let cases = [
            ("mx.test", "mx.test".to_owned()),
            (
                "a.test,b.test;c.test;+3",
                "a.test,b.test;c.test;+3".to_owned(),
            ),
            ("../etc", format!("etc~{:016x}", fnv1a64(b"../etc"))),
            ("", format!("~{:016x}", fnv1a64(b""))),
            (
                long.as_str(),
                format!("{}~{:016x}", "m".repeat(64), fnv1a64(long.as_bytes())),
            ),
        ];
        for (site, want) in cases {
            assert_eq!(site_file_name(site), want, "{site:?}");
        }
    }

    #[test]
    fn a_long_domain_list_is_cut_to_the_file_limit() {
        let site = SiteBackoff {
            site: "mx.test".into(),
            backoff: DomainBackoff {
                until: UNIX_EPOCH,
                failures: 1,
                error: String::new(),
            },
            domains: (0..10_000).map(|i| format!("domain-{i}.test")).collect(),
        };
        let text = render_site_backoff(&site);
        assert!(text.len() < MAX_SITE_FILE as usize);
        let read = parse_site_backoff(text.as_bytes()).unwrap();
        assert!(read.domains.len() > 1000 && read.domains.len() < 10_000);
        assert_eq!(read.domains[0], "domain-0.test");
    }
}
