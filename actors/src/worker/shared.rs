//! What a worker's connections share ([`Shared`]) and its counters
//! ([`Stats`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use postman::config::Config;
use postman::route::{Host, Route};
use postman::routing::{split_route_key, Routing, SourcePicker};
use postman::smtp::{IpPreference, SessionConfig, TlsMode, TlsVerify};
use postman::tls::{Action, Applied, Check, Decision};
use slog::{error, Logger};

use super::body;
use super::disk::Disk;
use super::hand_back::Ctx;
use super::tls::TlsPolicy;
use crate::mailbox::Postbox;
use crate::messages::DispatcherMsg;
use crate::settler::Settler;

/// Per-worker counters, written as a `metrics` record.
#[derive(Default)]
pub struct Stats {
    pub connections_opened: u64,
    pub connect_failures: u64,
    pub transactions: u64,
    /// Messages given back untried: their reused connection ended before
    /// the server judged them.
    pub untried: u64,
    /// TLS report sessions dropped because the reporter's mailbox was
    /// full (the report undercounts; delivery never waits for it).
    pub tls_reports_dropped: u64,
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub peak_connections: usize,
    pub blocked: Duration,
    pub working: Duration,
}

/// How a worker's connections are opened: the part of the configuration
/// they read, mapped in one place for the start and every SIGHUP. A new
/// mapping applies to connections and transactions that start from then
/// on; what runs keeps its settings.
pub struct ConnSettings {
    /// `tls` is set per connection from [`ConnSettings::tls`], and
    /// `helo_name` from the connection's hop.
    pub session: SessionConfig,
    /// `[routing]`: credentials, default source addresses and EHLO name.
    pub routing: Routing,
    /// The choice among each `[routing.source.<name>]` pool's addresses,
    /// per connection.
    pub pickers: HashMap<String, SourcePicker>,
    /// STARTTLS policy and the rustls client configurations.
    pub tls: TlsPolicy,
    /// Which address family of a host is tried first.
    pub ip_preference: IpPreference,
    pub connect_timeout: Duration,
    pub port: u16,
    /// Addresses one connection tries before it gives up.
    pub max_mx_addresses: usize,
    /// Where this host's own receiving server listens
    /// (`application.local_listeners`): never connected to.
    pub local_listeners: Vec<SocketAddr>,
    /// This host's interface addresses, which a listener on an unspecified
    /// address covers; read only when there is such a listener.
    pub own_addrs: Vec<IpAddr>,
}

impl ConnSettings {
    /// What a connection to `host` of `route` must have, for mail to the
    /// route key `key`: for MX delivery, the domain's level with what DANE
    /// and MTA-STS found ([`postman::tls::decide`]); for a next hop, or a
    /// routing rule with TLS settings of its own, those settings alone
    /// (neither DANE nor MTA-STS speaks for a relay).
    pub fn security(&self, key: &str, route: &Route, host: &Host) -> Decision {
        let domain = split_route_key(key).0.to_ascii_lowercase();
        let tls = &self.tls;
        let level = tls.mode_for(&domain);
        let hop = &host.hop;
        if hop.next_hop.is_none() && hop.tls.is_none() && hop.verify.is_none() {
            return postman::tls::decide(
                level,
                tls.discovery,
                &domain,
                &host.name,
                &host.dane,
                &route.sts,
            );
        }
        let authenticates = self.routing.credentials_for(hop).is_some();
        let starttls = hop.tls_mode(
            tls.default_mode().starttls(),
            level.starttls(),
            authenticates,
        );
        let verify = hop.verify.unwrap_or_else(|| tls.verify_for(starttls));
        let (applied, check) = match (starttls, verify) {
            (TlsMode::Disabled, _) => (Applied::Plaintext, Check::Any),
            (TlsMode::Opportunistic, TlsVerify::None) => (Applied::Opportunistic, Check::Any),
            (TlsMode::Required, TlsVerify::None) => (Applied::Encrypt, Check::Any),
            (TlsMode::Opportunistic | TlsMode::Required, TlsVerify::Name) => {
                let names = vec![host.name.clone()];
                (Applied::Verify, Check::Pkix { names })
            }
        };
        Decision {
            applied,
            action: Action::Connect { starttls, check },
        }
    }

    pub fn new(config: &Config, log: &Logger) -> ConnSettings {
        ConnSettings {
            session: SessionConfig {
                helo_name: config.hostname.clone(),
                timeouts: config.timeouts.clone(),
                tls: TlsMode::Disabled,
                // Per connection, from the route's next hop.
                implicit_tls: false,
                auth: None,
                own_names: config.routing.helo_names(&config.hostname),
            },
            tls: tls_policy(config, log),
            routing: config.routing.clone(),
            pickers: config
                .routing
                .pools
                .iter()
                .map(|(name, members)| (name.clone(), SourcePicker::new(members.clone())))
                .collect(),
            ip_preference: config.ip_preference,
            connect_timeout: config.connect_timeout,
            port: config.server_port,
            max_mx_addresses: config.max_mx_addresses,
            local_listeners: config.local_listeners.clone(),
            own_addrs: own_addrs(&config.local_listeners, log),
        }
    }
}

/// The TLS settings of a worker, with the client certificate when one is
/// set (checked at start and at each reload: see `egress::prepare`).
fn tls_policy(config: &Config, log: &Logger) -> TlsPolicy {
    let mut tls = TlsPolicy::new(
        config.tls_mode,
        config.tls_discovery,
        config.tls_verify,
        config.tls_ca_file.clone(),
        config.tls_policy.clone().into_iter().collect(),
        relays_check(&config.routing),
    );
    if let Some(identity) = &config.tls_client {
        if let Err(e) = tls.use_client_identity(identity) {
            error!(log, "client certificate not used"; "file" => %identity.cert_file.display(),
                "error" => %e);
        }
    }
    tls
}

/// Whether a next hop may check certificates: one that says `verify` or
/// `tls = "required"`, or a relay that may authenticate (required TLS,
/// so checked names, by default).
fn relays_check(routing: &Routing) -> bool {
    routing.hops().any(|hop| {
        hop.verify == Some(TlsVerify::Name)
            || hop.tls == Some(TlsMode::Required)
            || (hop.next_hop.is_some() && hop.auth != Some(false))
    })
}

/// The addresses of this host's interfaces, when some local listener is
/// on an unspecified address (`0.0.0.0:25`) and so stands for all of them;
/// empty otherwise. Read once, at start and at each SIGHUP: an address
/// added to an interface in between is not known until then.
fn own_addrs(listeners: &[SocketAddr], log: &Logger) -> Vec<IpAddr> {
    if !listeners.iter().any(|l| l.ip().is_unspecified()) {
        return Vec::new();
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(interfaces) => interfaces
            .filter_map(|i| i.address)
            .filter_map(|a| {
                let v4 = a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()));
                v4.or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
            })
            .collect(),
        Err(e) => {
            error!(log, "cannot list this host's addresses for application.local_listeners; only loopback counts as ours";
                "error" => %e);
            Vec::new()
        }
    }
}

/// What every connection of a worker shares: settings, the dispatcher's
/// mailbox, the log. Owned by the worker, lent to its connections.
pub struct Shared {
    pub worker: usize,
    /// How its connections are opened, from the configuration.
    pub settings: ConnSettings,
    /// Claims queue files, and settles messages when the disk thread's
    /// mailbox is full or a transaction never started.
    pub settler: Settler,
    /// Settles finished transactions off the `pselect` loop.
    pub disk: Disk,
    pub dispatcher: Postbox<DispatcherMsg>,
    /// Something was told to the dispatcher without waking it.
    pub(super) told: Cell<bool>,
    pub log: Logger,
    pub stats: Stats,
    /// Set on shutdown: when in-flight transactions must be abandoned.
    pub shutdown_deadline: Option<Instant>,
    pub read_buf: Vec<u8>,
    pub body_buf: Vec<u8>,
    /// Message bodies kept in memory between measuring and sending.
    pub body_budget: body::Budget,
    /// Their buffers, reused.
    pub body_pool: body::Pool,
    /// Where each MX session's TLS outcome goes for the TLS report
    /// (RFC 8460), when `tlsrpt.enabled`.
    pub tls_reports: Option<crossbeam_channel::Sender<postman::tlsrpt::Session>>,
}

impl Shared {
    /// What disposing of a message needs: queue, claim owner, log and
    /// dispatcher.
    /// What telling is done through it wakes the dispatcher once a turn,
    /// as [`Shared::tell`] does.
    pub fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.settler, &self.log, &self.dispatcher, Some(&self.told))
    }

    /// [`Shared::ctx`] and the memory for a body, together: preparing a
    /// message in the worker's own thread needs both.
    pub fn preparing(&mut self) -> (Ctx<'_>, body::Memory<'_>) {
        let ctx = Ctx::new(&self.settler, &self.log, &self.dispatcher, Some(&self.told));
        let memory = body::Memory {
            budget: &self.body_budget,
            pool: &mut self.body_pool,
            buf: &mut self.body_buf,
        };
        (ctx, memory)
    }

    /// Sends to the dispatcher, which is woken once for everything told in
    /// a turn of the loop ([`Shared::wake_dispatcher`], before `pselect`):
    /// a busy worker tells it several things a turn (outcomes, requests
    /// for more), and each wake-up of a sleeping thread costs a context
    /// switch. It never blocks on us, so a blocking send cannot deadlock;
    /// failure means it is gone, and the worker winds down.
    pub fn tell(&self, msg: DispatcherMsg) {
        self.ctx().tell(msg);
    }

    /// Wakes the dispatcher if it was told something since the last time.
    pub fn wake_dispatcher(&self) {
        if self.told.replace(false) {
            self.dispatcher.wake();
        }
    }
}
