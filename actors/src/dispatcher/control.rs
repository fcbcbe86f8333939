//! The operator's controls, carried out: suspensions of domains and sites
//! (`postman suspend` / `resume`, read by the scanner from
//! `.OTHER_SERVERS/.suspend/`) applied to the scheduler, and site backoffs
//! lifted when `postman flush` removed their file.
//!
//! A site suspension names a suffix of MX host names; it holds every known
//! site with a matching host, and every site that a route lookup finds
//! later ([`Dispatcher::operator_resolved`]). Where several hold one site,
//! the longest wins. What the scheduler might put in the place of an
//! operator's hold (a site's backoff after a failure in flight, a domain's
//! route backoff or its lifting) is undone at once: only `resume`, or the
//! end of its time, ends an operator's suspension.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};

use postman::queue::{self, holding_domain, holding_site, Suspension, Target};
use postman::schedule::SiteId;
use slog::info;

use super::Dispatcher;

/// How far away "until `postman resume`" is for the scheduler, which
/// knows only times: a hundred years.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// The operator's suspensions as applied.
#[derive(Default)]
pub(super) struct Operator {
    /// The suspensions that hold, as the scanner last read them.
    set: Vec<Suspension>,
    /// The suspension applied to each held site.
    sites: HashMap<SiteId, Suspension>,
}

impl Operator {
    /// The suspension applied to a site, if any.
    pub(super) fn site(&self, id: SiteId) -> Option<&Suspension> {
        self.sites.get(&id)
    }
}

/// The scheduler's time for a suspension's `until`.
fn instant(until: Option<SystemTime>, now: Instant, wall: SystemTime) -> Instant {
    let left = until.map_or(FOREVER, |until| {
        until.duration_since(wall).unwrap_or_default()
    });
    now.checked_add(left).unwrap_or(now)
}

/// What deferral records say about a suspension.
fn why(s: &Suspension) -> String {
    if s.reason.is_empty() {
        "by the operator".to_owned()
    } else {
        format!("by the operator: {}", s.reason)
    }
}

/// What deferral records say about a domain's suspension (a site's
/// reason is put in words by the scheduler: `delivery to site … suspended:
/// <why>`).
fn domain_why(domain: &str, s: &Suspension) -> String {
    format!("delivery to domain {domain} suspended: {}", why(s))
}

/// Seconds left, for the log (`None`: until resumed).
fn seconds(s: &Suspension, wall: SystemTime) -> Option<u64> {
    s.until
        .map(|until| until.duration_since(wall).unwrap_or_default().as_secs())
}

impl Dispatcher {
    /// The scanner read the suspensions anew: what changed is applied,
    /// and what ended releases the messages it held.
    pub(super) fn suspensions(&mut self, set: Vec<Suspension>, now: Instant) {
        let wall = SystemTime::now();
        let set: Vec<Suspension> = set.into_iter().filter(|s| s.lasts_at(wall)).collect();
        let old = std::mem::replace(&mut self.operator.set, set);
        let domains: BTreeSet<String> = old
            .iter()
            .chain(&self.operator.set)
            .filter_map(|s| match &s.target {
                Target::Domain(name) => Some(name.clone()),
                Target::Site(_) => None,
            })
            .collect();
        for name in domains {
            let before = holding_domain(&old, &name).cloned();
            let after = holding_domain(&self.operator.set, &name).cloned();
            if before == after {
                continue;
            }
            match after {
                Some(s) => {
                    info!(self.log, "domain suspended by the operator"; "domain" => &name,
                        "until_seconds" => seconds(&s, wall), "reason" => &s.reason);
                    for key in self.keys_of(&name) {
                        self.sched.suspend_domain(
                            &key,
                            Some(instant(s.until, now, wall)),
                            &domain_why(&name, &s),
                        );
                    }
                }
                None => {
                    let ended = before.is_some_and(|s| !s.lasts_at(wall));
                    info!(self.log, "domain resumed by the operator"; "domain" => &name,
                        "time_over" => ended);
                    for key in self.keys_of(&name) {
                        self.sched.suspend_domain(&key, None, "");
                    }
                    self.release_due(vec![name], now);
                }
            }
        }
        self.log_site_changes(&old, wall);
        let names: Vec<String> = self.sched.sites().map(|(s, _, _)| s.name.clone()).collect();
        for name in names {
            if let Some(id) = self.sched.site_id(&name) {
                self.settle_site(id, now, wall);
            }
        }
    }

    /// One line per site suspension that began, changed or ended, naming
    /// the known sites it holds.
    fn log_site_changes(&self, old: &[Suspension], wall: SystemTime) {
        let sites_of = |suffix: &str| -> String {
            let suffix = [Suspension {
                target: Target::Site(suffix.to_owned()),
                until: None,
                since: None,
                reason: String::new(),
            }];
            let names: Vec<&str> = self
                .sched
                .sites()
                .filter(|(site, _, _)| holding_site(&suffix, &site.hosts).is_some())
                .map(|(site, _, _)| site.name.as_str())
                .collect();
            names.join("; ")
        };
        for s in &self.operator.set {
            if let Target::Site(suffix) = &s.target {
                if !old.contains(s) {
                    info!(self.log, "site suspended by the operator"; "suffix" => suffix,
                        "sites" => sites_of(suffix), "until_seconds" => seconds(s, wall),
                        "reason" => &s.reason);
                }
            }
        }
        for s in old {
            if let Target::Site(suffix) = &s.target {
                if !self.operator.set.iter().any(|new| new.target == s.target) {
                    info!(self.log, "site resumed by the operator"; "suffix" => suffix,
                        "sites" => sites_of(suffix), "time_over" => !s.lasts_at(wall));
                }
            }
        }
    }

    /// Gives the site the operator's hold the current set says, if it
    /// differs from the one it has: held, held anew, or resumed.
    fn settle_site(&mut self, id: SiteId, now: Instant, wall: SystemTime) {
        let Some(hosts) = self.sched.site(id).map(|s| s.hosts.clone()) else {
            return;
        };
        // One whose time is over holds nothing, though the scanner has
        // not removed it yet.
        let want = holding_site(&self.operator.set, &hosts)
            .filter(|s| s.lasts_at(wall))
            .cloned();
        if self.operator.sites.get(&id) == want.as_ref() {
            return;
        }
        match want {
            Some(s) => {
                let until = instant(s.until, now, wall);
                self.sched.suspend_site(id, Some(until), &why(&s), now);
                self.operator.sites.insert(id, s);
            }
            None => {
                self.operator.sites.remove(&id);
                self.sched.suspend_site(id, None, "", now);
                let domains = self.sched.domains_of(id);
                self.release_due(domains, now);
            }
        }
    }

    /// A route lookup finished for `domain`: a site seen for the first
    /// time takes the suspensions that match its hosts, and the domain's
    /// own suspension holds whatever the lookup did to its backoff.
    pub(super) fn operator_resolved(&mut self, domain: &str, new_site: Option<&str>, now: Instant) {
        let wall = SystemTime::now();
        if let Some(id) = new_site.and_then(|name| self.sched.site_id(name)) {
            self.settle_site(id, now, wall);
            if let Some(s) = self.operator.sites.get(&id) {
                let name = self.sched.site(id).map(|s| s.name.clone());
                info!(self.log, "site suspended by the operator"; "site" => name,
                    "suffix" => s.target.name(), "until_seconds" => seconds(s, wall),
                    "reason" => &s.reason);
            }
        }
        self.reassert_domain(domain, now);
    }

    /// The scheduler lifted or replaced the domain's hold (a route backoff
    /// began or ended): the operator's suspension holds again.
    pub(super) fn reassert_domain(&mut self, domain: &str, now: Instant) {
        let wall = SystemTime::now();
        let held = holding_domain(&self.operator.set, domain).filter(|s| s.lasts_at(wall));
        if let Some(s) = held.cloned() {
            let until = instant(s.until, now, wall);
            self.sched
                .suspend_domain(domain, Some(until), &domain_why(domain, &s));
        }
    }

    /// The site began a backoff (a connection in flight when it was
    /// suspended failed): the operator's suspension holds again.
    pub(super) fn reassert_site(&mut self, site: &str, now: Instant) {
        let Some(id) = self.sched.site_id(site) else {
            return;
        };
        let wall = SystemTime::now();
        let held = self.operator.sites.get(&id).filter(|s| s.lasts_at(wall));
        if let Some(s) = held.cloned() {
            let until = instant(s.until, now, wall);
            self.sched.suspend_site(id, Some(until), &why(&s), now);
        }
    }

    /// A site backoff file was removed (`postman flush`): the sites it was
    /// for end their backoff, and their domains' messages that only
    /// waited for it go now.
    pub(super) fn site_backoff_cleared(&mut self, file: &str, now: Instant) {
        let ids: Vec<SiteId> = self
            .sched
            .sites()
            .filter(|(site, _, _)| queue::site_file_name(&site.name) == file)
            .map(|(site, _, _)| site.name.clone())
            .collect::<Vec<_>>()
            .iter()
            .filter_map(|name| self.sched.site_id(name))
            .collect();
        for id in ids {
            if !self.sched.lift_site(id, now) {
                continue;
            }
            let name = self.sched.site(id).map(|s| s.name.clone());
            info!(self.log, "site backoff lifted"; "site" => name, "by" => "postman flush");
            let domains = self.sched.domains_of(id);
            self.release_due(domains, now);
        }
    }

    /// The messages of `domains` that wait in memory though their files
    /// say they are due (they waited for a hold that ended): ready now.
    pub(super) fn release_due(&mut self, domains: Vec<String>, now: Instant) {
        let wall = SystemTime::now();
        for name in domains {
            let due = self
                .sched
                .take_deferred(&name, |m| m.retry.next_attempt.is_none_or(|at| at <= wall));
            for msg in due {
                self.sched.enqueue(msg, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn suspension(until: Option<SystemTime>, reason: &str) -> Suspension {
        Suspension {
            target: Target::Domain("a.test".into()),
            until,
            since: None,
            reason: reason.into(),
        }
    }

    #[test]
    fn times_and_reasons_for_the_scheduler() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_764_250_000);
        let cases = [
            (
                Some(wall + Duration::from_secs(90)),
                now + Duration::from_secs(90),
            ),
            (Some(wall - Duration::from_secs(90)), now),
            (Some(wall), now),
            (None, now + FOREVER),
        ];
        for (until, want) in cases {
            assert_eq!(instant(until, now, wall), want, "{until:?}");
        }
        let s = suspension(Some(wall + Duration::from_secs(61)), "dns move");
        assert_eq!(why(&s), "by the operator: dns move");
        assert_eq!(
            domain_why("a.test", &s),
            "delivery to domain a.test suspended: by the operator: dns move"
        );
        assert_eq!(seconds(&s, wall), Some(61));
        let s = suspension(None, "");
        assert_eq!(why(&s), "by the operator");
        assert_eq!(seconds(&s, wall), None);
    }
}
