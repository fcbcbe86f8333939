//! What the scheduler can tell an observer in one pass (the dispatcher's
//! status snapshot for `postman queue summary`).

use super::*;

impl<M: Queued, C: Copy + Eq> Scheduler<M, C> {
    /// The domains whose route leads to each site, sorted: one pass over
    /// the domains, where [`Scheduler::domains_of`] is one per site.
    pub fn domains_by_site(&self) -> HashMap<SiteId, Vec<String>> {
        let mut by_site: HashMap<SiteId, Vec<String>> = HashMap::new();
        for (name, d) in &self.domains {
            if let RouteState::Known { site, .. } = &d.route {
                by_site.entry(*site).or_default().push(name.clone());
            }
        }
        for names in by_site.values_mut() {
            names.sort();
        }
        by_site
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Host;
    use std::net::{IpAddr, Ipv4Addr};

    struct Msg(String, String);

    impl Queued for Msg {
        fn id(&self) -> &str {
            &self.0
        }
        fn domain(&self) -> &str {
            &self.1
        }
    }

    #[test]
    fn domains_are_listed_by_the_site_their_route_leads_to() {
        #[allow(clippy::disallowed_methods)] // one real Instant to start from
        let now = Instant::now();
        let mut s: Scheduler<Msg, u32> = Scheduler::new(Limits {
            max_connections: 10,
            max_connections_per_domain: 10,
            max_lookups: 10,
            schedule: Schedule {
                min: Duration::from_secs(60),
                max: Duration::from_secs(3600),
                lifetime: Duration::from_secs(86_400),
                delay_warning: None,
            },
            keep_deferred: true,
        });
        let routes = [
            ("b.test", "mx.shared.test"),
            ("a.test", "mx.shared.test"),
            ("c.test", "mx.other.test"),
        ];
        for (domain, host) in routes {
            s.found(Msg("m1".into(), domain.into()), None, now);
            let route = Route::new(vec![Host::new(host, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)])]);
            let spec = SiteSpec {
                name: host.into(),
                hosts: vec![host.into()],
                shape: Shape::default(),
                persisted: None,
            };
            s.resolved(
                domain,
                Ok((route, spec)),
                now + Duration::from_secs(60),
                now,
            );
        }
        s.found(Msg("m1".into(), "unresolved.test".into()), None, now);
        let by_site = s.domains_by_site();
        let shared = s.site_id("mx.shared.test").unwrap();
        let other = s.site_id("mx.other.test").unwrap();
        assert_eq!(by_site.len(), 2, "{by_site:?}");
        assert_eq!(by_site[&shared], ["a.test", "b.test"]);
        assert_eq!(by_site[&other], ["c.test"]);
        assert_eq!(by_site[&shared], s.domains_of(shared), "as domains_of says");
    }
}
