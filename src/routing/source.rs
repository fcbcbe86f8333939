//! Source addresses: the local addresses a route's connections are bound
//! to (Postfix's `smtp_bind_address` and `smtp_bind_address6`, KumoMTA's
//! egress pools), each with a weight and the EHLO name that belongs to it,
//! and the choice among them for each new connection: nginx's smooth
//! weighted round-robin (`ngx_http_upstream_get_peer`), deterministic, so
//! a pool of weights 3:1 gives 6 and 2 of any 8 connections in a row, and
//! spreads them (`a a b a`, never `a a a b`). The members are the
//! settings' [`PoolMember`]s (`[routing.source.<name>]`).

use std::net::IpAddr;

use super::PoolMember;

/// An IP family, of a connection's target and of the addresses it may be
/// bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    /// The family of `ip`.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

/// Picks a pool's member for each new connection. Kept as long as the
/// route's site, so that the spread holds across its connections.
///
/// Total: a member of weight 0 is never picked, and a picker with nothing
/// to pick says `None`. The settings refuse both (`routing.source.*`
/// weights are 1-1000, a pool needs an address), and an address twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePicker {
    members: Vec<PoolMember>,
    /// nginx's `current_weight` of each member, by index.
    current: Vec<i64>,
}

impl SourcePicker {
    /// A picker over `members` (ties go to the first), starting the
    /// rotation afresh.
    pub fn new(members: Vec<PoolMember>) -> SourcePicker {
        let current = vec![0; members.len()];
        SourcePicker { members, current }
    }

    /// The members, as given.
    pub fn members(&self) -> &[PoolMember] {
        &self.members
    }

    /// Whether a connection to an address of `family` can be bound: some
    /// member of that family has a weight.
    pub fn serves(&self, family: Family) -> bool {
        self.members
            .iter()
            .any(|m| m.weight > 0 && Family::of(&m.ip) == family)
    }

    /// The member for the next connection, of either family.
    pub fn pick(&mut self) -> Option<&PoolMember> {
        let index = self.pick_among(|_| true)?;
        Some(&self.members[index])
    }

    /// The member for the next connection to an address of `family`;
    /// `None` when the pool has none of it (with a weight), and then the
    /// connection is not bound. Each family rotates on its own: picks of
    /// one leave the other's spread as it was.
    pub fn pick_for(&mut self, family: Family) -> Option<&PoolMember> {
        let index = self.pick_among(|m| Family::of(&m.ip) == family)?;
        Some(&self.members[index])
    }

    /// One step of the smooth weighted round-robin over the members that
    /// `eligible` keeps: each one's weight is added to its current weight,
    /// the highest (the first of equals) is picked, and the sum of their
    /// weights is taken off the picked one. Over any run of `sum` picks,
    /// each member is picked `weight` times.
    fn pick_among(&mut self, eligible: impl Fn(&PoolMember) -> bool) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, member) in self.members.iter().enumerate() {
            if member.weight == 0 || !eligible(member) {
                continue;
            }
            let weight = i64::from(member.weight);
            self.current[i] += weight;
            total += weight;
            if best.is_none_or(|b| self.current[i] > self.current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        self.current[best] -= total;
        Some(best)
    }
}

#[cfg(test)]
#[path = "source_tests.rs"]
mod tests;
