//! Route lookups off the dispatcher's thread: MX, then A and AAAA for each MX
//! host, with hickory-resolver on one small tokio runtime. Answers come back
//! as [`DispatcherMsg::Resolved`] so the dispatcher loop never waits on DNS.
//!
//! The resolver's sockets must not take the descriptors the I/O workers'
//! `fd_set`s need: every UDP query has a socket of its own, and hundreds of
//! lookups at once used to push SMTP sockets past `FD_SETSIZE`. So at most
//! `MAX_CONCURRENT_LOOKUPS` (64) run at once, and every socket hickory opens is
//! moved to a descriptor at or above `FD_SETSIZE` (see `HighFdRuntime`).
//!
//! A lookup that fails while the process could not get a socket for its
//! queries (descriptors or socket buffers exhausted) says nothing about the
//! domain: it comes back as [`DispatcherMsg::LookupPutOff`], and the domain
//! is neither deferred nor backed off.
//!
//! For a domain whose TLS level wants DANE, with `dns.dnssec = "trust-ad"`
//! and name servers on this host, the MX route is looked up through a
//! DNSSEC-aware client that also finds each host's TLSA records (the
//! `dane` and `secure` modules); a configured next hop never gets DANE.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::Receiver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::runtime::{
    RuntimeProvider, TokioHandle, TokioRuntimeProvider, TokioTime,
};
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::Resolver;
use postman::config::Config;
use postman::route::{self, AddrAnswer, MxAnswer};
use postman::routing::{Decision, NextHop, Target};
use slog::{debug, Logger};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::Semaphore;

use crate::descriptors::{above_fd_setsize, short_of_resources};

mod blocking;
mod dane;
mod secure;
mod sts;

use crate::mailbox::Postbox;
use crate::messages::DispatcherMsg;
pub use blocking::BlockingLookups;
use dane::Dane;
pub use dane::DaneSource;
use sts::Sts;
pub use sts::{StsFound, StsSettings, POLICY_PORT};

/// Route lookups that run at once; the others (at most the dispatcher's
/// `MAX_LOOKUPS` in all) wait their turn, in the order they were asked for,
/// holding no socket. A lookup holds a socket per query in flight (the MX
/// query, then A and AAAA of every MX host together), so this bounds the
/// resolver's sockets and the load on the nameserver, while a thousand new
/// domains still take only about 16 rounds of a lookup each.
const MAX_CONCURRENT_LOOKUPS: usize = 64;

/// Threads for blocking work (MTA-STS policy fetches and cache files):
/// a few fetches at once are plenty, each takes a socket and up to 20 s.
const MAX_BLOCKING_THREADS: usize = 4;

/// How long hickory may take to open a TCP connection to a nameserver (its
/// own default).
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type DnsResolver = Resolver<HighFdRuntime>;

/// How long a route stays valid when the answers carry no usable TTL, and the
/// most we keep any route: an MX change is picked up within this time.
const MAX_ROUTE_LIFETIME: Duration = Duration::from_secs(3600);
/// The least we keep a route, so a zero TTL does not mean a lookup per message.
const MIN_ROUTE_LIFETIME: Duration = Duration::from_secs(5);

/// Asks for the route of one domain.
#[derive(Debug)]
pub struct ResolveRequest {
    /// The recipient domain, looked up.
    pub domain: String,
    /// What the scheduler queues its mail under (`routing::route_key`):
    /// the answer is for it.
    pub key: String,
    /// What `[routing]` says for it: MX delivery or a next hop.
    pub decision: Decision,
    /// `delivery.max_mx_addresses`: the addresses of at most this many MX
    /// hosts are looked up (see [`route::mx_hosts`]).
    pub max_hosts: usize,
}

/// What [`lookup_once`] found.
pub struct Found {
    pub route: Result<route::Route, route::RouteError>,
    pub site: route::SiteName,
    /// The MTA-STS status and where it came from; `None` when not looked
    /// up (a configured next hop).
    pub sts: Option<StsFound>,
    /// Where DANE's DNSSEC validation came from.
    pub dane: DaneSource,
}

/// One route lookup, outside the daemon (`postman route`): what a
/// connection for `request` would try, and its site.
pub fn lookup_once(
    config: &Config,
    request: &ResolveRequest,
    log: Logger,
) -> anyhow::Result<Found> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the DNS runtime")?;
    let lookups = {
        let _enter = runtime.enter();
        Lookups::new(config, HighFdRuntime::default(), log)?
    };
    runtime.block_on(async {
        let dane = lookups.dane.source_for(request).await;
        let (route, site, _, sts) = resolve(&lookups, request).await;
        Ok(Found {
            route,
            site,
            sts,
            dane,
        })
    })
}

/// What route lookups use: hickory's resolver, MTA-STS policies, DANE.
struct Lookups {
    resolver: DnsResolver,
    sts: Arc<Sts>,
    dane: Dane,
}

impl Lookups {
    /// Must run inside the runtime the lookups will run on.
    fn new(config: &Config, provider: HighFdRuntime, log: Logger) -> anyhow::Result<Lookups> {
        let resolver = build_resolver(
            provider.clone(),
            &config.nameservers,
            config.dns_timeout,
            config.dns_attempts,
        )?;
        Ok(Lookups {
            resolver,
            sts: Arc::new(Sts::new(StsSettings::of(config), log.clone())),
            dane: Dane::new(config, provider, log),
        })
    }

    /// Starts DANE's probe, so that its verdict is logged at start; the
    /// first lookups wait for it. Must run inside the runtime.
    fn probe_now(self: &Arc<Self>) {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.dane.source().await });
    }
}

/// Starts the resolver thread. It ends when the request channel is closed
/// (the dispatcher dropped its sender) and the lookups in flight are done.
pub fn start(
    config: &Config,
    requests: Receiver<ResolveRequest>,
    answers: Postbox<DispatcherMsg>,
    log: Logger,
) -> anyhow::Result<JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("postman-dns")
        .enable_all()
        .build()
        .context("cannot start the DNS runtime")?;
    let provider = HighFdRuntime::default();
    let shortages = Arc::clone(&provider.shortages);
    let lookups = {
        // The resolver's connections bind to the runtime that first uses them,
        // so it is built and used inside this one runtime only.
        let _enter = runtime.enter();
        let lookups = Arc::new(Lookups::new(config, provider, log.clone())?);
        lookups.probe_now();
        lookups
    };
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT_LOOKUPS));
    let handle = std::thread::Builder::new()
        .name("postman-resolver".into())
        .spawn(move || {
            for request in requests.iter() {
                let lookups = Arc::clone(&lookups);
                let slots = Arc::clone(&slots);
                let answers = answers.clone();
                let log = log.clone();
                let shortages = Arc::clone(&shortages);
                // The task waits for a slot rather than this thread, so
                // that when the dispatcher stops, the loop ends at once and
                // the waiting lookups are dropped with the runtime.
                runtime.spawn(async move {
                    // Tokio's semaphore is fair: lookups start in the order
                    // they were asked for. It is never closed.
                    let Ok(_slot) = slots.acquire().await else {
                        return;
                    };
                    let started = Instant::now();
                    let shortages_before = shortages.load(Ordering::Relaxed);
                    let (route, site, valid_until, sts) = resolve(&lookups, &request).await;
                    let sts = sts.map_or_else(String::new, |found| found.how);
                    debug!(log, "route resolved"; "domain" => &request.key,
                        "ok" => route.is_ok(), "ms" => started.elapsed().as_millis() as u64,
                        "mta_sts" => sts);
                    // A failure while some query could not get a socket
                    // (this lookup's or another's) is the process's, not
                    // the domain's.
                    let msg = match route {
                        Err(error)
                            if !error.is_permanent()
                                && shortages.load(Ordering::Relaxed) != shortages_before =>
                        {
                            DispatcherMsg::LookupPutOff {
                                domain: request.key,
                                reason: error.to_string(),
                            }
                        }
                        route => DispatcherMsg::Resolved {
                            domain: request.key,
                            route,
                            site,
                            valid_until,
                        },
                    };
                    // The dispatcher never blocks on us, so a blocking send
                    // cannot deadlock; an error means it is gone.
                    let _ = answers.send(msg);
                });
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        })
        .context("cannot start the resolver thread")?;
    Ok(handle)
}

fn build_resolver(
    provider: HighFdRuntime,
    nameservers: &[SocketAddr],
    timeout: Duration,
    attempts: usize,
) -> anyhow::Result<DnsResolver> {
    let mut builder = if nameservers.is_empty() {
        DnsResolver::builder(provider).context("cannot read the system resolver configuration")?
    } else {
        let servers = nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        DnsResolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider)
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = timeout;
    options.attempts = attempts;
    // Mail routing follows the DNS only; /etc/hosts is for local programs.
    options.use_hosts_file = ResolveHosts::Never;
    // Names are queried fully qualified: no search list.
    options.ndots = 0;
    builder.build().context("cannot build the DNS resolver")
}

/// Looks up the route `request.decision` names: the domain's MX hosts and
/// their addresses, or a configured next hop's; then the fallback relays
/// behind MX delivery. Also the site the connections belong to: the one the
/// MX records name, or one per next hop (`relay:[smtp.example.net]:587`),
/// whatever domains go there; either with the hop's settings that keep
/// connections apart.
///
/// For MX delivery, the domain's MTA-STS policy is looked up beside the MX
/// records and carried on the route (`Route::sts`); a problem with it is
/// part of the route, never a route error.
async fn resolve(
    lookups: &Lookups,
    request: &ResolveRequest,
) -> (
    Result<route::Route, route::RouteError>,
    route::SiteName,
    Instant,
    Option<StsFound>,
) {
    let (resolver, sts) = (&lookups.resolver, &lookups.sts);
    let mut valid_until = Instant::now() + MAX_ROUTE_LIFETIME;
    let hop = &request.decision.hop;
    let domain = request.domain.as_str();
    let mut sts_found = None;
    let (found, mut site) = match &hop.next_hop {
        None => {
            let ((found, site), policy) = tokio::join!(
                lookups.dane.mx_route(resolver, request, &mut valid_until),
                sts.lookup(resolver, domain)
            );
            let found = found.map(|mut route| {
                route.sts = policy.status.clone();
                route
            });
            sts_found = Some(policy);
            (found, site)
        }
        Some(next_hop) => {
            let found = hop_route(resolver, next_hop, request.max_hosts, &mut valid_until)
                .await
                .map_err(|why| route::RouteError::RelayUnresolved {
                    domain: domain.to_owned(),
                    relay: next_hop.to_string(),
                    why,
                });
            let site = route::SiteName {
                name: format!("relay:{next_hop}"),
                hosts: vec![next_hop
                    .host_name()
                    .map_or_else(|| next_hop.key(), str::to_owned)],
            };
            (found, site)
        }
    };
    site.name.push_str(&hop.site_suffix());
    let mut found = found.map(|route| route.by(hop));
    // Postfix's smtp_fallback_relay: after every MX host, and instead of
    // them while they cannot be found; never for a domain that does not
    // exist or accepts no mail.
    let fallback = &request.decision.fallback;
    if !fallback.is_empty() && found.as_ref().map_or_else(|e| !e.is_permanent(), |_| true) {
        let mut hosts = found
            .as_ref()
            .map_or_else(|_| Vec::new(), |r| r.hosts.clone());
        for relay in fallback {
            let Some(next_hop) = &relay.next_hop else {
                continue;
            };
            if let Ok(route) =
                hop_route(resolver, next_hop, request.max_hosts, &mut valid_until).await
            {
                hosts.extend(route.by(relay).hosts);
            }
        }
        if !hosts.is_empty() {
            let sts = found.as_ref().map(|r| r.sts.clone()).unwrap_or_default();
            found = Ok(route::Route { hosts, sts });
        }
    }
    (found, site, clamp(valid_until), sts_found)
}

/// The route to a configured next hop: its address, its host's addresses
/// (`[host]`), or the MX hosts of its name (`host`); why not, as text.
async fn hop_route(
    resolver: &DnsResolver,
    next_hop: &NextHop,
    max_hosts: usize,
    valid_until: &mut Instant,
) -> Result<route::Route, String> {
    match &next_hop.target {
        Target::Ip(ip) => Ok(route::Route::new(vec![route::Host::new(
            ip.to_string(),
            vec![*ip],
        )])),
        Target::Host(host) => {
            let answer = addresses(resolver, host, valid_until).await;
            route::build_route(host, vec![(host.clone(), answer)], false).map_err(|e| e.to_string())
        }
        Target::Mx(name) => mx_route(resolver, name, max_hosts, valid_until)
            .await
            .0
            .map_err(|e| e.to_string()),
    }
}

/// MX records of `domain`, then the addresses of the first `max_hosts`
/// hosts; and the site the MX records name.
async fn mx_route(
    resolver: &DnsResolver,
    domain: &str,
    max_hosts: usize,
    valid_until: &mut Instant,
) -> (Result<route::Route, route::RouteError>, route::SiteName) {
    let fqdn = format!("{}.", domain.trim_end_matches('.'));
    let answer = match resolver.mx_lookup(fqdn.as_str()).await {
        Ok(lookup) => {
            *valid_until = (*valid_until).min(lookup.valid_until());
            let records = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect::<Vec<_>>();
            if records.is_empty() {
                MxAnswer::NoRecords
            } else {
                MxAnswer::Records(records)
            }
        }
        Err(error) => classify_mx(&error),
    };
    let implicit = matches!(answer, MxAnswer::NoRecords);
    let site = route::site_name(domain, &answer);
    let hosts = match route::mx_hosts(domain, answer, seed(), max_hosts) {
        Ok(hosts) => hosts,
        Err(error) => return (Err(error), site),
    };
    let mut resolved = Vec::new();
    let lookups = hosts.into_iter().map(|host| async move {
        let mut until = Instant::now() + MAX_ROUTE_LIFETIME;
        let answer = addresses(resolver, &host, &mut until).await;
        (host, answer, until)
    });
    for (host, answer, until) in futures_util::future::join_all(lookups).await {
        *valid_until = (*valid_until).min(until);
        resolved.push((host, answer));
    }
    (route::build_route(domain, resolved, implicit), site)
}

/// The A and AAAA records of `host`, together.
async fn addresses(resolver: &DnsResolver, host: &str, valid_until: &mut Instant) -> AddrAnswer {
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    let (v4, v6) = tokio::join!(
        resolver.ipv4_lookup(fqdn.as_str()),
        resolver.ipv6_lookup(fqdn.as_str())
    );
    let mut addrs = Vec::new();
    let mut failures = Vec::new();
    for result in [v4, v6] {
        match result {
            Ok(lookup) => {
                *valid_until = (*valid_until).min(lookup.valid_until());
                addrs.extend(lookup.answers().iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                    _ => None,
                }));
            }
            Err(error) => failures.push(classify_addr(&error)),
        }
    }
    if !addrs.is_empty() {
        AddrAnswer::Addrs(addrs)
    } else if let Some(failed) = failures.iter().find(|f| matches!(f, AddrAnswer::Failed(_))) {
        failed.clone()
    } else if failures.iter().all(|f| matches!(f, AddrAnswer::NxDomain)) && !failures.is_empty() {
        AddrAnswer::NxDomain
    } else {
        AddrAnswer::NoRecords
    }
}

/// hickory's tokio runtime, except that every socket it opens (a UDP socket
/// per query, a TCP connection when an answer is truncated) is moved to a
/// descriptor at or above `FD_SETSIZE`. Those numbers are the ones an I/O
/// worker can never use, and the daemon raises `RLIMIT_NOFILE` far above
/// them at start; the low ones are left for the SMTP sockets, however many
/// lookups are in flight.
///
/// It also counts the sockets it could not open for want of descriptors or
/// buffers (`shortages`), which hickory reports only as a failed query.
#[derive(Clone, Default)]
struct HighFdRuntime {
    tokio: TokioRuntimeProvider,
    shortages: Arc<AtomicU64>,
}

impl HighFdRuntime {
    /// Counts `e` when it is a shortage of this process's own.
    fn note<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result {
            if short_of_resources(e) {
                self.shortages.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }
}

impl RuntimeProvider for HighFdRuntime {
    type Handle = TokioHandle;
    type Timer = TokioTime;
    type Udp = tokio::net::UdpSocket;
    type Tcp = AsyncIoTokioAsStd<tokio::net::TcpStream>;

    fn create_handle(&self) -> Self::Handle {
        self.tokio.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        wait_for: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<Self::Tcp>>>> {
        let this = self.clone();
        Box::pin(async move {
            let socket = this.note(Socket::new(
                Domain::for_address(server_addr),
                Type::STREAM,
                Some(Protocol::TCP),
            ))?;
            let socket = Socket::from(above_select_range(socket.into()));
            socket.set_nonblocking(true)?;
            let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
            if let Some(bind_addr) = bind_addr {
                socket.bind(bind_addr)?;
            }
            socket.set_nodelay(true)?;
            let wait_for = wait_for.unwrap_or(TCP_CONNECT_TIMEOUT);
            match tokio::time::timeout(wait_for, socket.connect(server_addr)).await {
                Ok(stream) => Ok(AsyncIoTokioAsStd(stream?)),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TCP connect timed out",
                )),
            }
        })
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        _server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = io::Result<Self::Udp>>>> {
        let this = self.clone();
        Box::pin(async move {
            let socket = this.note(std::net::UdpSocket::bind(local_addr))?;
            let socket = std::net::UdpSocket::from(above_select_range(socket.into()));
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket)
        })
    }
}

/// The same open socket at a descriptor number at or above `FD_SETSIZE`
/// (close-on-exec, like the original); the original number is closed. When
/// there is no room up there (`RLIMIT_NOFILE` too low) the socket keeps its
/// number: it still works, it only competes with the SMTP sockets.
fn above_select_range(fd: OwnedFd) -> OwnedFd {
    // The old number is closed when `fd` is dropped here.
    above_fd_setsize(fd.as_fd()).unwrap_or(fd)
}

fn classify_mx(error: &NetError) -> MxAnswer {
    if error.is_nx_domain() {
        MxAnswer::NxDomain
    } else if error.is_no_records_found() {
        MxAnswer::NoRecords
    } else {
        MxAnswer::Failed(error.to_string())
    }
}

fn classify_addr(error: &NetError) -> AddrAnswer {
    if error.is_nx_domain() {
        AddrAnswer::NxDomain
    } else if error.is_no_records_found() {
        AddrAnswer::NoRecords
    } else {
        AddrAnswer::Failed(error.to_string())
    }
}

fn clamp(valid_until: Instant) -> Instant {
    let now = Instant::now();
    valid_until.clamp(now + MIN_ROUTE_LIFETIME, now + MAX_ROUTE_LIFETIME)
}

/// A seed for shuffling MX hosts of equal preference (RFC 5321 §5.1): the
/// clock's nanoseconds are random enough to spread load across them.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}
