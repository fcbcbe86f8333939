//! `postman queue summary` by site: the per-domain counts of
//! [`super::summarize`] grouped under the site each domain's mail goes to,
//! with what holds each site. Pure: the caller reads the files (the
//! running postman's snapshot `.status`, the site backoffs in `.sites/`,
//! the suspensions in `.suspend/`) and passes the time.
//!
//! A domain's site is the one the snapshot says; else the one a site
//! backoff file names it under; else it is not known (no postman has
//! looked its route up), and the domain is listed under its own heading.
//! What holds a site is, first, an operator's suspension that matches its
//! host names; else the hold the snapshot shows; else its backoff file.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use super::DomainSummary;
use crate::queue::{
    holding_domain, holding_site, Held, HoldKind, SiteBackoff, SiteStatus, Status, Suspension,
};

/// One domain under its site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainLine {
    pub summary: DomainSummary,
    /// The operator's suspension of the domain, if one holds.
    pub suspension: Option<Suspension>,
}

/// What holds a site now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteHold {
    /// `postman suspend --site`.
    Suspended(Suspension),
    /// The running postman's hold (a backoff, a throttle, a suspension).
    Held(Held),
    /// The backoff on disk (no running postman says otherwise).
    Backoff(SiteBackoff),
}

/// One site with its domains, or the domains whose site is not known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteGroup {
    /// The site's name; `None` for the domains whose site is not known.
    pub site: Option<String>,
    /// Its MX host names.
    pub hosts: Vec<String>,
    /// The running postman's view of it.
    pub status: Option<SiteStatus>,
    /// What holds it now.
    pub hold: Option<SiteHold>,
    /// The sum of its domains (`domain` is the site's name).
    pub total: DomainSummary,
    /// Its domains with something queued, most messages first.
    pub domains: Vec<DomainLine>,
}

/// The host names in a site's name (`route::site_name`: `,` and `;`
/// between names, `;+<n>` for names left out, ` tls=<mode>` after), for a
/// site known only from its backoff file.
pub fn hosts_of_site_name(name: &str) -> Vec<String> {
    let names = name.split(' ').next().unwrap_or_default();
    names
        .split([',', ';'])
        .filter(|host| !host.is_empty() && !host.starts_with('+'))
        .map(str::to_owned)
        .collect()
}

fn group(site: Option<&str>, hosts: Vec<String>) -> SiteGroup {
    SiteGroup {
        site: site.map(str::to_owned),
        hosts,
        status: None,
        hold: None,
        total: DomainSummary {
            domain: site.unwrap_or_default().to_owned(),
            ..DomainSummary::default()
        },
        domains: Vec::new(),
    }
}

/// Groups `domains` (the per-domain lines of [`super::summarize`], without
/// its `TOTAL`) by site at `now`. Sites come most messages first, then by
/// name; a site is listed when it has a domain with something queued, an
/// open connection, or a hold; the domains whose site is not known come
/// last, in a group of their own.
pub fn group_by_site(
    domains: &[DomainSummary],
    status: Option<&Status>,
    site_files: &[SiteBackoff],
    suspensions: &[Suspension],
    now: SystemTime,
) -> Vec<SiteGroup> {
    let mut groups: BTreeMap<String, SiteGroup> = BTreeMap::new();
    let mut site_of: HashMap<&str, &str> = HashMap::new();
    for site in status.map_or(&[][..], |s| &s.sites[..]) {
        let mut g = group(Some(&site.name), site.hosts.clone());
        g.status = Some(site.clone());
        groups.insert(site.name.clone(), g);
        for domain in &site.domains {
            site_of.entry(domain).or_insert(&site.name);
        }
    }
    for file in site_files {
        let g = groups
            .entry(file.site.clone())
            .or_insert_with(|| group(Some(&file.site), hosts_of_site_name(&file.site)));
        if file.backoff.until > now {
            g.backoff_file(file);
        }
        for domain in &file.domains {
            site_of.entry(domain).or_insert(&file.site);
        }
    }
    let mut unknown = group(None, Vec::new());
    for line in domains {
        let target = match site_of.get(line.domain.as_str()) {
            Some(site) => groups.get_mut(*site).unwrap_or(&mut unknown),
            None => &mut unknown,
        };
        target.total.add_up(line);
        target.domains.push(DomainLine {
            summary: line.clone(),
            suspension: holding_domain(suspensions, &line.domain).cloned(),
        });
    }
    let mut out: Vec<SiteGroup> = groups
        .into_values()
        .map(|mut g| {
            g.settle_hold(suspensions, now);
            g
        })
        .filter(|g| {
            !g.domains.is_empty()
                || g.hold.is_some()
                || g.status.as_ref().is_some_and(|s| s.connections > 0)
        })
        .collect();
    out.sort_by(|a, b| {
        b.total
            .total()
            .cmp(&a.total.total())
            .then_with(|| a.site.cmp(&b.site))
    });
    if !unknown.domains.is_empty() {
        out.push(unknown);
    }
    for g in &mut out {
        g.domains.sort_by(|a, b| {
            b.summary
                .total()
                .cmp(&a.summary.total())
                .then_with(|| a.summary.domain.cmp(&b.summary.domain))
        });
    }
    out
}

impl SiteGroup {
    fn backoff_file(&mut self, file: &SiteBackoff) {
        self.hold = Some(SiteHold::Backoff(file.clone()));
    }

    /// The hold shown: the operator's, else the running postman's, else
    /// the backoff on disk.
    fn settle_hold(&mut self, suspensions: &[Suspension], now: SystemTime) {
        if let Some(s) = holding_site(suspensions, &self.hosts) {
            self.hold = Some(SiteHold::Suspended(s.clone()));
            return;
        }
        let held = self
            .status
            .as_ref()
            .and_then(|s| s.held.clone())
            // An operator's hold the files no longer hold was resumed
            // since the snapshot.
            .filter(|h| h.kind != HoldKind::Operator)
            .filter(|h| h.until.is_none_or(|until| until > now));
        if let Some(held) = held {
            self.hold = Some(SiteHold::Held(held));
        }
    }
}

#[cfg(test)]
#[path = "by_site_tests.rs"]
mod tests;
