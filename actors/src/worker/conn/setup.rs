//! How a connection is made for its hop: the session's STARTTLS mode,
//! implicit TLS, EHLO name and SMTP AUTH credentials, and the local
//! address it leaves from.

use super::*;
use postman::routing::{Family, Source};
use postman::smtp::{AuthConfig, Nonce};

/// A SCRAM client nonce for one connection: 18 octets from the system's
/// secure generator (RFC 5802 §5.1 wants it unpredictable).
fn fresh_nonce() -> Nonce {
    let mut random = [0u8; 18];
    // SystemRandom reads getrandom(2); it fails only where that is missing,
    // and then the clock's nanoseconds are the best this host has.
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        random[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    Nonce::from_random(&random)
}

impl Conn {
    /// A session for the current address, under its hop's TLS mode (TLS
    /// from the first byte for `smtps:`), its EHLO name and, for a relay
    /// with a password-file entry, SMTP AUTH.
    pub(super) fn new_session(&self, shared: &Shared, now: Instant) -> Box<Session> {
        let mut config = shared.settings.session.clone();
        config.tls = if self.current.as_ref().is_some_and(|c| c.plaintext) {
            TlsMode::Disabled
        } else {
            self.tls_mode()
        };
        if let Some(hop) = self.current.as_ref().map(|c| &c.hop) {
            let routing = &shared.settings.routing;
            let source_name = self.source.as_ref().and_then(|(_, name)| name.as_deref());
            let hostname = shared.settings.session.helo_name.as_str();
            config.helo_name = routing.helo_name(hop, source_name, hostname).to_owned();
            config.implicit_tls = hop.next_hop.as_ref().is_some_and(|h| h.implicit_tls);
            config.auth = routing.credentials_for(hop).map(|credentials| AuthConfig {
                credentials: credentials.clone(),
                allow_plaintext: hop.plaintext_auth,
                nonce: fresh_nonce(),
            });
        }
        Box::new(Session::new(config, now))
    }

    /// The STARTTLS policy of the current address: its security decision's
    /// ([`ConnSettings::security`]).
    ///
    /// [`ConnSettings::security`]: super::super::shared::ConnSettings::security
    pub(super) fn tls_mode(&self) -> TlsMode {
        match self.current.as_ref().map(|c| &c.security.action) {
            Some(Action::Connect { starttls, .. }) => *starttls,
            Some(Action::Refuse(_)) | None => TlsMode::Disabled,
        }
    }

    /// The local address a connection to `target` leaves from: the hop's
    /// own, one of its pool's (taking turns by weight), else
    /// `routing.bind_address(6)`; only ever one of the target's family.
    pub(super) fn choose_source(
        &self,
        shared: &mut Shared,
        target: IpAddr,
    ) -> Option<(IpAddr, Option<String>)> {
        let family = Family::of(&target);
        let settings = &mut shared.settings;
        let own = match self.current.as_ref().map(|c| &c.hop.source) {
            Some(Source::Address(ip)) => Some((*ip, None)),
            Some(Source::Pool(name)) => settings
                .pickers
                .get_mut(name)
                .and_then(|picker| picker.pick_for(family))
                .map(|member| (member.ip, member.helo_name.clone())),
            Some(Source::Default) | None => None,
        };
        let default = match family {
            Family::Ipv4 => settings.routing.bind_address,
            Family::Ipv6 => settings.routing.bind_address6,
        };
        own.filter(|(ip, _)| Family::of(ip) == family)
            .or(default.map(|ip| (ip, None)))
    }
}
