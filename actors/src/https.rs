//! One blocking HTTPS exchange (the MTA-STS policy fetch; the TLS-RPT
//! report POST later): connect to an address postman's own resolver found,
//! TLS with the given rustls configuration (WebPKI against the system roots
//! and `tls.ca_file`), send the request, read until the caller's check says
//! the response is whole. Every step is bounded by one deadline and the
//! reads by a size cap.
//!
//! It blocks, so it runs on the resolver runtime's blocking threads
//! (`spawn_blocking`), never on the dispatcher's or a worker's.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postman::mta_sts::http::End;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use socket2::{Domain, Protocol, Socket, Type};

use crate::descriptors::above_fd_setsize;

/// How long a connection attempt to one address may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where to connect and what to say.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The server's name: SNI and the name its certificate must carry.
    pub name: String,
    /// Its addresses, tried in order until one connects.
    pub addrs: Vec<IpAddr>,
    pub port: u16,
    /// The request, whole.
    pub request: Vec<u8>,
    /// The most response bytes read.
    pub max_response: usize,
    /// The whole exchange ends by then.
    pub deadline: Instant,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The server name cannot be a TLS name.
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    /// No address to connect to.
    #[error("{0} has no address")]
    NoAddress(String),
    /// No address took the connection; the last error.
    #[error("cannot connect to {addr}: {error}")]
    Connect { addr: SocketAddr, error: io::Error },
    /// The server's certificate was refused (not valid for the name, not
    /// from a trusted root, expired): RFC 8460's `sts-webpki-invalid`.
    #[error("certificate refused: {0}")]
    Certificate(rustls::Error),
    /// Another TLS failure (an alert, a bad record).
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// The deadline passed.
    #[error("timed out")]
    Timeout,
    /// Reading or writing the connection failed.
    #[error("{0}")]
    Io(io::Error),
    /// More than `max_response` bytes and still not whole.
    #[error("the response is longer than {0} bytes")]
    TooLong(usize),
}

/// Runs `exchange` with `config`: returns the response bytes and how the
/// stream stood when `whole` said they were enough (or the stream ended).
/// `whole(bytes, end)` is asked after every read.
pub fn exchange(
    exchange: &Exchange,
    config: Arc<ClientConfig>,
    mut whole: impl FnMut(&[u8], End) -> bool,
) -> Result<(Vec<u8>, End), HttpsError> {
    let server = ServerName::try_from(exchange.name.clone())
        .map_err(|_| HttpsError::ServerName(exchange.name.clone()))?;
    let tcp = connect(exchange)?;
    let conn = ClientConnection::new(config, server).map_err(HttpsError::Tls)?;
    let mut stream = StreamOwned::new(conn, tcp);
    let deadline = exchange.deadline;
    while stream.conn.is_handshaking() {
        arm(&stream.sock, deadline)?;
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(classify)?;
    }
    arm(&stream.sock, deadline)?;
    stream.write_all(&exchange.request).map_err(classify)?;
    stream.flush().map_err(classify)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        arm(&stream.sock, deadline)?;
        let end = match stream.read(&mut chunk) {
            Ok(0) => End::Closed,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                End::Open
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => End::Cut,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(e)),
        };
        if end != End::Open || whole(&buf, end) {
            return Ok((buf, end));
        }
        if buf.len() > exchange.max_response {
            return Err(HttpsError::TooLong(exchange.max_response));
        }
    }
}

/// A connection to the first address that takes one, on a descriptor
/// above `FD_SETSIZE` like the resolver's sockets (the low numbers are
/// the workers' `fd_set`s).
fn connect(exchange: &Exchange) -> Result<TcpStream, HttpsError> {
    let mut last = None;
    for ip in &exchange.addrs {
        let addr = SocketAddr::new(*ip, exchange.port);
        let left = exchange
            .deadline
            .saturating_duration_since(Instant::now())
            .min(CONNECT_TIMEOUT);
        if left.is_zero() {
            return Err(HttpsError::Timeout);
        }
        let attempt = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map(|socket| match above_fd_setsize(socket.as_fd()) {
                Some(high) => Socket::from(high),
                None => socket,
            })
            .and_then(|socket| socket.connect_timeout(&addr.into(), left).map(|()| socket));
        match attempt {
            Ok(socket) => return Ok(socket.into()),
            Err(error) => last = Some(HttpsError::Connect { addr, error }),
        }
    }
    Err(last.unwrap_or_else(|| HttpsError::NoAddress(exchange.name.clone())))
}

/// Bounds the next socket operation by what is left of the deadline.
fn arm(socket: &TcpStream, deadline: Instant) -> Result<(), HttpsError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(HttpsError::Timeout);
    }
    socket
        .set_read_timeout(Some(left))
        .and_then(|()| socket.set_write_timeout(Some(left)))
        .map_err(HttpsError::Io)
}

/// Sorts an I/O error of the TLS stream: rustls hands its own errors
/// inside `io::Error`, and a refused certificate is a kind of its own.
fn classify(error: io::Error) -> HttpsError {
    if matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        return HttpsError::Timeout;
    }
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match tls {
        Some(
            e @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::InvalidCertRevocationList(_)),
        ) => HttpsError::Certificate(e),
        Some(e) => HttpsError::Tls(e),
        None => HttpsError::Io(error),
    }
}
