//! DNSSEC-aware route lookups for DANE (RFC 7672 §2.2) in `dns.dnssec =
//! "trust-ad"` mode: every query asks a validating resolver on this host
//! for DNSSEC (RD, AD and EDNS0 DO set, as Postfix's `RES_USE_DNSSEC`
//! does) and keeps the reply's code and AD bit, which hickory's `Resolver`
//! hides. The MX and address answers make the route as the plain lookups
//! do; then each host behind a secure MX RRset and secure addresses has its
//! TLSA records looked up, and [`postman::dane::lookup`] decides what they
//! come to.
//!
//! Queries go over UDP, and over TCP when the reply is truncated (DO makes
//! replies large). Their sockets come from the resolver's [`HighFdRuntime`]:
//! above `FD_SETSIZE`, like every other DNS socket.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use hickory_resolver::net::runtime::iocompat::AsyncIoTokioAsStd;
use hickory_resolver::net::tcp::TcpClientStream;
use hickory_resolver::net::udp::UdpClientStream;
use hickory_resolver::net::xfer::DnsExchange;
use hickory_resolver::net::DnsHandle as _;
use hickory_resolver::proto::op::{
    DnsRequest, DnsRequestOptions, DnsResponse, Edns, Message, Query, ResponseCode,
};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use postman::dane::lookup::{self, Answer, Lookup, Rcode};
use postman::dane::Tlsa;
use postman::route::{self, AddrAnswer};
use postman::tls::DaneStatus;

use super::{HighFdRuntime, MAX_ROUTE_LIFETIME};

/// The EDNS0 UDP payload size offered: the DNS flag day 2020 value, which
/// fits an unfragmented packet on any path; larger replies come over TCP.
const EDNS_PAYLOAD: u16 = 1232;

/// Asks validating name servers, and reports their AD bit.
#[derive(Clone)]
pub(super) struct SecureClient {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: usize,
    provider: HighFdRuntime,
}

/// A reply: its code, its AD bit, its answer records and their least TTL.
struct Reply {
    rcode: Rcode,
    authentic: bool,
    answers: Vec<Record>,
}

impl Reply {
    /// The answer with the records `pick` takes from it.
    fn answer<T>(self, pick: impl Fn(&RData) -> Option<T>) -> Answer<T> {
        Answer {
            rcode: self.rcode,
            authentic: self.authentic,
            records: self.answers.iter().filter_map(|r| pick(&r.data)).collect(),
        }
    }

    /// When the first of its answer records expires.
    fn valid_until(&self) -> Option<Instant> {
        let ttl = self.answers.iter().map(|r| r.ttl).min()?;
        Some(Instant::now() + Duration::from_secs(u64::from(ttl)).min(MAX_ROUTE_LIFETIME))
    }
}

impl SecureClient {
    /// Asks `servers` in turn, `attempts` more times after a failure, each
    /// query waiting at most `timeout`.
    pub(super) fn new(
        servers: Vec<SocketAddr>,
        timeout: Duration,
        attempts: usize,
        provider: HighFdRuntime,
    ) -> SecureClient {
        SecureClient {
            servers,
            timeout,
            attempts,
            provider,
        }
    }

    /// The name servers it asks.
    pub(super) fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// `name` (fully qualified) `kind`: the servers in turn, up to
    /// `attempts` more times after no answer; a SERVFAIL is asked again
    /// only of another server (the same one would say the same, and a
    /// validator's SERVFAIL is its verdict). The last failure otherwise.
    async fn query(&self, name: &str, kind: RecordType) -> Result<Reply, String> {
        let name = Name::from_ascii(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
        let mut last = Err("no name server to ask".to_owned());
        for attempt in 0..=self.attempts {
            let Some(server) = self.servers.get(attempt % self.servers.len().max(1)) else {
                break;
            };
            last = self.query_at(*server, &name, kind).await;
            match &last {
                Ok(reply) if reply.rcode == Rcode::ServFail && self.servers.len() > 1 => {}
                Ok(_) => break,
                Err(_) => {}
            }
        }
        last
    }

    /// One query to `server`: over UDP, again over TCP when truncated.
    async fn query_at(
        &self,
        server: SocketAddr,
        name: &Name,
        kind: RecordType,
    ) -> Result<Reply, String> {
        let udp = UdpClientStream::builder(server, self.provider.clone())
            .with_timeout(Some(self.timeout))
            .exchange();
        let response = send(&udp, request(name, kind)).await?;
        let response = if response.metadata.truncation {
            let tcp = TcpClientStream::<AsyncIoTokioAsStd<tokio::net::TcpStream>>::exchange(
                server,
                None,
                self.timeout,
                None,
                self.provider.clone(),
            )
            .await
            .map_err(|e| format!("TCP to {server}: {e}"))?;
            send(&tcp, request(name, kind)).await?
        } else {
            response
        };
        let metadata = &response.metadata;
        let rcode = match metadata.response_code {
            ResponseCode::NoError => Rcode::NoError,
            ResponseCode::NXDomain => Rcode::NxDomain,
            ResponseCode::ServFail => Rcode::ServFail,
            other => Rcode::Other(u16::from(other)),
        };
        let authentic = metadata.authentic_data;
        Ok(Reply {
            rcode,
            authentic,
            answers: response.into_message().answers,
        })
    }

    /// Whether the servers validate: the AD bit on `probe`'s NS records.
    pub(super) async fn probe(&self, probe: &str) -> Lookup<()> {
        self.query(probe, RecordType::NS)
            .await
            .map(|reply| reply.answer(|_| Some(())))
    }

    /// The MX records of `domain`, and when the first expires.
    async fn mx(&self, domain: &str) -> (Lookup<(u16, String)>, Option<Instant>) {
        match self.query(&fqdn(domain), RecordType::MX).await {
            Ok(reply) => {
                let until = reply.valid_until();
                let answer = reply.answer(|data| match data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                });
                (Ok(answer), until)
            }
            Err(why) => (Err(why), None),
        }
    }

    /// The A and AAAA records of `host`, together, whether they are
    /// secure, and when the first expires.
    async fn addresses(&self, host: &str) -> (AddrAnswer, bool, Option<Instant>) {
        let name = fqdn(host);
        let (v4, v6) = tokio::join!(
            self.query(&name, RecordType::A),
            self.query(&name, RecordType::AAAA)
        );
        let until = [&v4, &v6]
            .into_iter()
            .filter_map(|reply| reply.as_ref().ok()?.valid_until())
            .min();
        let address = |data: &RData| match data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        };
        let (answer, secure) = lookup::addr_answer([
            v4.map(|reply| reply.answer(address)),
            v6.map(|reply| reply.answer(address)),
        ]);
        (answer, secure, until)
    }

    /// The TLSA records of `host`'s SMTP server on `port`
    /// (`_<port>._tcp.<host>`, RFC 7672 §2.2.3 with the port delivery
    /// uses), and when the first expires: a changed record must reach
    /// the route as soon as a changed MX would.
    async fn tlsa(&self, host: &str, port: u16) -> (Lookup<Tlsa>, Option<Instant>) {
        let name = format!("_{port}._tcp.{}", fqdn(host));
        match self.query(&name, RecordType::TLSA).await {
            Ok(reply) => {
                let until = reply.valid_until();
                let answer = reply.answer(|data| match data {
                    RData::TLSA(tlsa) => Some(Tlsa {
                        usage: u8::from(tlsa.cert_usage),
                        selector: u8::from(tlsa.selector),
                        matching: u8::from(tlsa.matching),
                        data: tlsa.cert_data.clone(),
                    }),
                    _ => None,
                });
                (Ok(answer), until)
            }
            Err(why) => (Err(why), None),
        }
    }

    /// The route of `domain` with each host's DANE status (see the module
    /// comment), and the site the MX records name.
    pub(super) async fn mx_route(
        &self,
        domain: &str,
        max_hosts: usize,
        port: u16,
        valid_until: &mut Instant,
    ) -> (Result<route::Route, route::RouteError>, route::SiteName) {
        let (mx, until) = self.mx(domain).await;
        if let Some(until) = until {
            *valid_until = (*valid_until).min(until);
        }
        let (answer, mx_secure) = lookup::mx_answer(mx);
        let implicit = matches!(answer, route::MxAnswer::NoRecords);
        let site = route::site_name(domain, &answer);
        let hosts = match route::mx_hosts(domain, answer, super::seed(), max_hosts) {
            Ok(hosts) => hosts,
            Err(error) => return (Err(error), site),
        };
        let lookups = hosts.into_iter().map(|host| async move {
            let (answer, secure, until) = self.addresses(&host).await;
            (host, answer, secure, until)
        });
        let mut resolved = Vec::new();
        let mut secure_hosts = Vec::new();
        for (host, answer, secure, until) in futures_util::future::join_all(lookups).await {
            if let Some(until) = until {
                *valid_until = (*valid_until).min(until);
            }
            if secure {
                secure_hosts.push(host.clone());
            }
            resolved.push((host, answer));
        }
        let mut found = match route::build_route(domain, resolved, implicit) {
            Ok(found) => found,
            Err(error) => return (Err(error), site),
        };
        let statuses = found.hosts.iter().map(|host| {
            let wanted = lookup::tlsa_wanted(mx_secure, secure_hosts.contains(&host.name));
            async move {
                match wanted {
                    Err(why) => (DaneStatus::NotApplicable(why), None),
                    Ok(()) => {
                        let (answer, until) = self.tlsa(&host.name, port).await;
                        (lookup::classify_tlsa(answer), until)
                    }
                }
            }
        });
        let statuses = futures_util::future::join_all(statuses).await;
        for (host, (status, until)) in found.hosts.iter_mut().zip(statuses) {
            host.dane = status;
            if let Some(until) = until {
                *valid_until = (*valid_until).min(until);
            }
        }
        (Ok(found), site)
    }
}

/// The query message: recursion wanted, AD and DO set (RFC 6840 §5.7: a
/// validator sets AD only for a query that carries one of them).
fn request(name: &Name, kind: RecordType) -> DnsRequest {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.metadata.authentic_data = true;
    message.queries.push(Query::query(name.clone(), kind));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD).set_dnssec_ok(true);
    message.edns = Some(edns);
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.edns_set_dnssec_ok = true;
    options.edns_payload_len = EDNS_PAYLOAD;
    DnsRequest::new(message, options)
}

/// Sends `request` and waits for its reply (the exchange's own timeout
/// bounds the wait).
async fn send(
    exchange: &DnsExchange<HighFdRuntime>,
    request: DnsRequest,
) -> Result<DnsResponse, String> {
    match exchange.send(request).next().await {
        Some(Ok(response)) => Ok(response),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the query was dropped unanswered".to_owned()),
    }
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}
