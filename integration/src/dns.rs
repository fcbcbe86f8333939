//! An in-process authoritative DNS server for the tests (hickory-server).
//!
//! Everything lives in one zone at the root (`.`, with its SOA), so every
//! name the test did not describe is answered authoritatively with NXDOMAIN
//! (RFC 1035 §4.1.1 RCODE 3). Names marked [`Zones::servfail`] answer
//! SERVFAIL (RCODE 2) and names marked [`Zones::silent`] are never answered
//! (the resolver times out). MX records follow RFC 5321 §5.1; a null MX is
//! `MX 0 .` (RFC 7505).
//!
//! Names marked [`Zones::secure`] are answered with the AD bit set, as a
//! validating resolver answers for a signed zone: to a postman that trusts
//! the AD bit of a resolver on loopback (`dns.dnssec = "trust-ad"`), this
//! server is such a resolver, which makes DANE's decisions testable
//! without signing anything. (The tests of real DNSSEC run NSD and
//! Unbound: `crate::dnssec`.)
//!
//! The server answers on UDP and TCP at the same `127.0.0.1:<port>`, runs on
//! its own thread with its own tokio runtime, and stops when dropped. It
//! keeps every question it was asked ([`DnsServer::queries`]), so a test
//! can count the lookups a run made.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TLSA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponse, MessageResponseBuilder, ZoneType,
};
use hickory_server::Server;

/// TTL of every record: short, the tests never wait for a cache to expire.
const TTL: u32 = 5;
/// Serial of the test zone; nothing transfers it.
const SERIAL: u32 = 1;
/// How long an idle TCP client may hold a connection to the server.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// A description of what the server knows.
///
/// Every name that is not mentioned does not exist (NXDOMAIN). A name that
/// only has children (`test.` when `d1.test.` has records) exists with no
/// records (NOERROR, no answers).
#[derive(Debug, Clone, Default)]
pub struct Zones {
    records: Vec<Record>,
    servfail: Vec<LowerName>,
    silent: Vec<LowerName>,
    secure: Vec<LowerName>,
    /// TTL of every record and of negative answers; [`TTL`] when unset.
    ttl: Option<u32>,
}

impl Zones {
    /// An empty description: every name is NXDOMAIN.
    pub fn new() -> Zones {
        Zones::default()
    }

    /// `domain MX pref target`.
    pub fn mx(mut self, domain: &str, pref: u16, target: &str) -> Zones {
        self.records.push(Record::from_rdata(
            fqdn(domain),
            TTL,
            RData::MX(MX::new(pref, fqdn(target))),
        ));
        self
    }

    /// The common test domain: `domain MX 10 mx.<domain>` and
    /// `mx.<domain> A ip`, one MX host at one address.
    pub fn mx_at(self, domain: &str, ip: Ipv4Addr) -> Zones {
        let host = format!("mx.{domain}");
        self.mx(domain, 10, &host).a(&host, ip)
    }

    /// `domain MX 10 host` for every one of `domains`: many domains whose
    /// mail goes to one MX host name, as a provider's customers' does
    /// (add the host's address with [`Zones::a`]).
    pub fn mx_shared<S: AsRef<str>>(self, domains: &[S], host: &str) -> Zones {
        domains
            .iter()
            .fold(self, |zones, domain| zones.mx(domain.as_ref(), 10, host))
    }

    /// `domain MX 0 .`: the domain accepts no mail (RFC 7505).
    pub fn null_mx(mut self, domain: &str) -> Zones {
        self.records.push(Record::from_rdata(
            fqdn(domain),
            TTL,
            RData::MX(MX::new(0, Name::root())),
        ));
        self
    }

    /// `name A ip` or `name AAAA ip`, by the address family.
    pub fn addr(self, name: &str, ip: IpAddr) -> Zones {
        match ip {
            IpAddr::V4(v4) => self.a(name, v4),
            IpAddr::V6(v6) => self.aaaa(name, v6),
        }
    }

    /// `name A ip`.
    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Zones {
        self.records
            .push(Record::from_rdata(fqdn(name), TTL, RData::A(A(ip))));
        self
    }

    /// `name AAAA ip`.
    pub fn aaaa(mut self, name: &str, ip: Ipv6Addr) -> Zones {
        self.records
            .push(Record::from_rdata(fqdn(name), TTL, RData::AAAA(AAAA(ip))));
        self
    }

    /// `name TXT text` (one string; a long one is split into 255-byte
    /// strings, which a reader joins).
    pub fn txt(mut self, name: &str, text: &str) -> Zones {
        let strings: Vec<&[u8]> = text.as_bytes().chunks(255).collect();
        self.records.push(Record::from_rdata(
            fqdn(name),
            TTL,
            RData::TXT(TXT::from_bytes(strings)),
        ));
        self
    }

    /// `name CNAME target`.
    pub fn cname(mut self, name: &str, target: &str) -> Zones {
        self.records.push(Record::from_rdata(
            fqdn(name),
            TTL,
            RData::CNAME(CNAME(fqdn(target))),
        ));
        self
    }

    /// Every record (and NXDOMAIN, through the SOA minimum) lives `ttl`
    /// seconds instead of the tests' short default: the benchmark's senders
    /// should cache as they would on the internet.
    pub fn ttl(mut self, ttl: u32) -> Zones {
        self.ttl = Some(ttl);
        self
    }

    /// Queries for `name` and every name below it answer SERVFAIL.
    pub fn servfail(mut self, name: &str) -> Zones {
        self.servfail.push(LowerName::new(&fqdn(name)));
        self
    }

    /// Answers for `name` and every name below it carry the AD bit, as a
    /// validating resolver's answers for a signed zone do (NXDOMAIN and
    /// NODATA included).
    pub fn secure(mut self, name: &str) -> Zones {
        self.secure.push(LowerName::new(&fqdn(name)));
        self
    }

    /// `_<port>._tcp.<host> TLSA usage selector matching data` (RFC 6698).
    pub fn tlsa(
        mut self,
        host: &str,
        port: u16,
        (usage, selector, matching): (u8, u8, u8),
        data: &[u8],
    ) -> Zones {
        let rdata = TLSA::new(
            CertUsage::from(usage),
            Selector::from(selector),
            Matching::from(matching),
            data.to_vec(),
        );
        self.records.push(Record::from_rdata(
            fqdn(&format!("_{port}._tcp.{host}")),
            TTL,
            RData::TLSA(rdata),
        ));
        self
    }

    /// Queries for `name` and every name below it are never answered.
    pub fn silent(mut self, name: &str) -> Zones {
        self.silent.push(LowerName::new(&fqdn(name)));
        self
    }

    fn catalog(&self) -> Catalog {
        let ttl = self.ttl.unwrap_or(TTL);
        let origin = Name::root();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            fqdn("ns.test"),
            fqdn("hostmaster.test"),
            SERIAL,
            3600,
            600,
            86400,
            ttl,
        );
        let inserted = zone.upsert_mut(
            Record::from_rdata(origin.clone(), ttl, RData::SOA(soa)),
            SERIAL,
        );
        assert!(inserted, "the test zone refused its SOA");
        for record in &self.records {
            let mut record = record.clone();
            record.ttl = ttl;
            let inserted = zone.upsert_mut(record.clone(), SERIAL);
            assert!(inserted, "the test zone refused {record}");
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(zone)]);
        catalog
    }
}

/// `n` domain names `<label>0.<parent>`, `<label>1.<parent>`, …
pub fn numbered_domains(label: &str, n: usize, parent: &str) -> Vec<String> {
    (0..n).map(|i| format!("{label}{i}.{parent}")).collect()
}

/// `name` as a fully qualified name; panics (a test bug) when it is not one.
fn fqdn(name: &str) -> Name {
    let mut parsed =
        Name::from_str(name).unwrap_or_else(|e| panic!("bad DNS name {name:?} in a test: {e}"));
    parsed.set_fqdn(true);
    parsed
}

/// One question the server was asked: the name (lower-case, fully
/// qualified, with its trailing dot) and the record type (`"MX"`, `"A"`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub name: String,
    pub kind: String,
}

/// The catalog, with SERVFAIL and silence for the names that ask for it.
struct Handler {
    catalog: Catalog,
    servfail: Vec<LowerName>,
    silent: Vec<LowerName>,
    secure: Vec<LowerName>,
    /// Every question asked, in order (over UDP and TCP alike).
    asked: Arc<Mutex<Vec<Query>>>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let query = request.request_info().ok().map(|info| info.query.clone());
        if let Some(query) = &query {
            let asked = Query {
                name: query.name().to_string().to_ascii_lowercase(),
                kind: query.query_type().to_string(),
            };
            self.asked.lock().unwrap().push(asked);
        }
        let name = query.map(|q| q.name().clone());
        let under = |zones: &[LowerName]| {
            name.as_ref()
                .is_some_and(|n| zones.iter().any(|z| z.zone_of(n)))
        };
        if under(&self.silent) {
            // Say nothing: the client has to time out.
            let mut metadata =
                hickory_proto::op::Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            return ResponseInfo::from(hickory_proto::op::Header {
                metadata,
                counts: Default::default(),
            });
        }
        if under(&self.servfail) {
            let response = MessageResponseBuilder::new(&request.queries, None)
                .error_msg(&request.metadata, ResponseCode::ServFail);
            return match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(e) => panic!("test DNS server could not send SERVFAIL: {e}"),
            };
        }
        if under(&self.secure) {
            return self
                .catalog
                .handle_request::<_, T>(request, Authentic(response_handle))
                .await;
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Sends every response with the AD bit set.
#[derive(Clone)]
struct Authentic<R>(R);

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for Authentic<R> {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        response.metadata_mut().authentic_data = true;
        self.0.send_response(response).await
    }
}

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<Query>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zones` on UDP and TCP at `127.0.0.1:<a free port>`.
    pub fn start(zones: Zones) -> DnsServer {
        DnsServer::serve(zones, None)
    }

    /// Serves `zones` on UDP and TCP at `addr` (the benchmark's server on
    /// port 53 of its own network namespace, where the system resolver of
    /// a sender that cannot be given a port finds it). Panics when `addr`
    /// cannot be bound.
    pub fn start_at(zones: Zones, addr: SocketAddr) -> DnsServer {
        DnsServer::serve(zones, Some(addr))
    }

    fn serve(zones: Zones, at: Option<SocketAddr>) -> DnsServer {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let handler = Handler {
            catalog: zones.catalog(),
            servfail: zones.servfail.clone(),
            silent: zones.silent.clone(),
            secure: zones.secure.clone(),
            asked: Arc::clone(&asked),
        };
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<SocketAddr>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-dns".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the test DNS server");
                runtime.block_on(async move {
                    let (udp, tcp) = match at {
                        Some(addr) => bind_at(addr).await,
                        None => bind_pair().await,
                    };
                    let addr = udp.local_addr().expect("udp local_addr");
                    let mut server = Server::new(handler);
                    server.register_socket(udp);
                    server.register_listener(tcp, TCP_IDLE, 65535);
                    ready_tx.send(addr).expect("test waits for the DNS server");
                    let _ = stop_rx.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })
            .expect("spawn the test DNS server thread");
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("test DNS server did not start within 10 s");
        DnsServer {
            addr,
            asked,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Where the server answers (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every question asked so far, in order. A resolver that retries over
    /// TCP after a truncated UDP answer asks twice.
    pub fn queries(&self) -> Vec<Query> {
        self.asked.lock().unwrap().clone()
    }

    /// How many questions of record type `kind` (`"A"`, `"AAAA"`, `"MX"`,
    /// as hickory names them) were asked so far.
    pub fn count_queries(&self, kind: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|q| q.kind == kind)
            .count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener at `addr`.
async fn bind_at(addr: SocketAddr) -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    let udp = tokio::net::UdpSocket::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind DNS UDP {addr}: {e}"));
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind DNS TCP {addr}: {e}"));
    (udp, tcp)
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port.
async fn bind_pair() -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    for _ in 0..64 {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind UDP 127.0.0.1:0");
        let port = udp.local_addr().expect("udp local_addr").port();
        if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            return (udp, tcp);
        }
    }
    panic!("no port free on both UDP and TCP after 64 tries");
}
