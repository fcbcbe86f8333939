//! STARTTLS for the scripted server (RFC 3207): a rustls server with a
//! [`TestCert`], and the connection's byte stream, plaintext or TLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::certs::TestCert;

/// The server side of TLS with `cert`'s certificate and key.
pub fn server_config(cert: &TestCert) -> Arc<ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert.cert_path())
        .and_then(|certs| certs.collect())
        .unwrap_or_else(|e| panic!("read {}: {e}", cert.cert_path().display()));
    let key = PrivateKeyDer::from_pem_file(cert.key_path())
        .unwrap_or_else(|e| panic!("read {}: {e}", cert.key_path().display()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap_or_else(|e| panic!("certificate of {}: {e}", cert.cert_path().display()));
    Arc::new(config)
}

/// A connection's bytes: plaintext, then TLS after STARTTLS.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
    /// Between the two, or after a failed switch.
    Gone,
}

impl Io {
    /// Wraps the plaintext stream in TLS (the handshake runs at the next
    /// read or write).
    pub(super) fn start_tls(&mut self, config: &Arc<ServerConfig>) -> io::Result<()> {
        let Io::Plain(tcp) = std::mem::replace(self, Io::Gone) else {
            return Err(io::Error::other(
                "STARTTLS on a stream that is not plaintext",
            ));
        };
        let conn = ServerConnection::new(Arc::clone(config)).map_err(io::Error::other)?;
        *self = Io::Tls(Box::new(StreamOwned::new(conn, tcp)));
        Ok(())
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the stream is gone")
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(tcp) => tcp.read(buf),
            Io::Tls(tls) => tls.read(buf),
            Io::Gone => Err(gone()),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(tcp) => tcp.write(buf),
            Io::Tls(tls) => tls.write(buf),
            Io::Gone => Err(gone()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(tcp) => tcp.flush(),
            Io::Tls(tls) => tls.flush(),
            Io::Gone => Err(gone()),
        }
    }
}
