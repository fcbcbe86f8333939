//! STARTTLS for outbound connections (RFC 3207), with rustls driven
//! sans-IO from the worker's `pselect` loop: `read_tls` /
//! `process_new_packets` / `write_tls` over the non-blocking socket, never
//! a blocking handshake.
//!
//! * [`TlsPolicy`]: the settings (`tls.mode`, `tls.verify`, `tls.ca_file`,
//!   `tls.policy."domain"`) and the two rustls client configurations built
//!   from them once per worker.
//! * [`TlsStream`]: one connection's TLS state between the socket and the
//!   SMTP session: ciphertext in and out of the socket, plaintext in and out
//!   of the session.
//!
//! SNI and the certificate's name check use the MX host name, as RFC 7672
//! §3.2.2 has it for DANE and Postfix does for its `verify` level.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use postman::smtp::{Session, TlsInfo, TlsMode, TlsVerify};
use postman::tls::{Check, ClientIdentity, Discovery, Level};
use postman::tlsrpt::HandshakeFailure;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use socket2::Socket;

use super::verify::{DaneVerifier, NamesVerifier};

/// Why a connection's TLS could not start or went wrong. The texts go
/// into the session's outcome, and so into delivery records and bounces.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The MX host name is not a name a certificate can carry.
    #[error("{0:?} is not a valid TLS server name: {1}")]
    ServerName(String, rustls::pki_types::InvalidDnsNameError),
    /// Certificates are to be checked, but the configuration that checks
    /// them could not be built.
    #[error("cannot check certificates: {0}")]
    CannotCheck(Arc<RootsError>),
    /// rustls refused to start a client connection.
    #[error("cannot start TLS: {0}")]
    Start(rustls::Error),
    /// Reading the socket failed.
    #[error("read error: {0}")]
    Read(io::Error),
    /// The TLS layer failed: a bad record, an alert, a refused
    /// certificate.
    #[error("{0}")]
    Protocol(rustls::Error),
    /// Taking the decrypted octets failed.
    #[error("{0}")]
    Plaintext(io::Error),
    /// One of postman's own checks (DANE) refused the certificate: its
    /// reason, which rustls would print as a debug dump.
    #[error("invalid peer certificate: {0}")]
    Refused(String),
}

impl TlsError {
    /// What TLS-RPT calls this failure (RFC 8460 §4.3).
    pub fn handshake_failure(&self) -> HandshakeFailure {
        use rustls::CertificateError as C;
        let why = self.to_string();
        match self {
            TlsError::Refused(_) => HandshakeFailure::Dane(why),
            TlsError::Protocol(rustls::Error::InvalidCertificate(error)) => match error {
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    HandshakeFailure::HostMismatch(why)
                }
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => HandshakeFailure::Expired(why),
                C::UnknownIssuer | C::BadSignature | C::Revoked => {
                    HandshakeFailure::NotTrusted(why)
                }
                _ => HandshakeFailure::Other(why),
            },
            _ => HandshakeFailure::Other(why),
        }
    }

    fn from_rustls(error: rustls::Error) -> TlsError {
        match error {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                TlsError::Refused(other.to_string())
            }
            error => TlsError::Protocol(error),
        }
    }
}

/// Why the configuration that checks certificates (`verify = name`) could
/// not be built.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// rustls could not build the verifier from the roots.
    #[error("{0}")]
    Verifier(rustls::client::VerifierBuilderError),
    /// `tls.ca_file` could not be read as PEM.
    #[error("tls.ca_file {}: {error}", .path.display())]
    CaFile {
        path: PathBuf,
        error: rustls::pki_types::pem::Error,
    },
    /// `tls.ca_file` holds no certificate (validation refuses such a file;
    /// this is the file as it is now).
    #[error("tls.ca_file {}: holds no certificate", .path.display())]
    CaFileEmpty { path: PathBuf },
    /// A certificate of `tls.ca_file` is not a usable root.
    #[error("tls.ca_file {}: {error}", .path.display())]
    CaCert { path: PathBuf, error: rustls::Error },
    /// Neither the system nor `tls.ca_file` gave a trusted root: the
    /// system store's errors, and how many roots it had.
    #[error("no trusted roots ({})", no_roots(.errors, *.added))]
    NoRoots {
        errors: Vec<rustls_native_certs::Error>,
        added: usize,
    },
    /// rustls refused the protocol versions.
    #[error("{0}")]
    Versions(rustls::Error),
}

/// The problems behind [`RootsError::NoRoots`], in one line.
fn no_roots(errors: &[rustls_native_certs::Error], added: usize) -> String {
    let mut problems: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    problems.push(format!("{added} system roots and no tls.ca_file"));
    problems.join("; ")
}

/// The TLS settings of a worker and the client configurations they need.
pub struct TlsPolicy {
    /// `tls.mode`.
    pub mode: Level,
    /// `tls.dane`, `tls.mta_sts`.
    pub discovery: Discovery,
    /// `tls.verify`; `None` when unset: `none` for opportunistic TLS,
    /// `name` when TLS is required. Only relays read it now.
    pub verify: Option<TlsVerify>,
    /// `tls.policy."domain"`: the level for one destination domain.
    pub per_domain: HashMap<String, Level>,
    /// Accepts any certificate (`verify = none`).
    anonymous: Arc<ClientConfig>,
    /// Checks the chain and the name (`verify = name`); `Err` says why it
    /// could not be built (no roots), and every handshake needing it fails.
    /// Built at start when a setting asks for it, else at the first TLS
    /// handshake (loading the system's roots takes some milliseconds, once
    /// a worker, and only where TLS is used at all).
    checked: OnceLock<Result<Checked, Arc<RootsError>>>,
    /// `tls.ca_file`, for building `checked` late.
    ca_file: Option<PathBuf>,
    /// The client certificate shown to servers that ask for one.
    client: Option<Arc<dyn ResolvesClientCert>>,
    provider: Arc<CryptoProvider>,
}

/// What checks certificates: the configuration that refuses a handshake
/// whose certificate fails, and its verifier, which a probing handshake
/// asks without failing (see [`TlsPolicy::connect`]).
pub(crate) struct Checked {
    pub(crate) config: Arc<ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
}

impl TlsPolicy {
    /// Builds the client configurations: system roots (rustls-native-certs)
    /// plus `ca_file` for name checks. Loading the roots is skipped when no
    /// setting can need them (`relays_check`: a `[routing]` next hop may).
    pub fn new(
        mode: Level,
        discovery: Discovery,
        verify: Option<TlsVerify>,
        ca_file: Option<PathBuf>,
        per_domain: HashMap<String, Level>,
        relays_check: bool,
    ) -> TlsPolicy {
        let provider = Arc::new(ring::default_provider());
        let checks = |level: &Level| matches!(level, Level::Verify | Level::Secure | Level::MtaSts);
        let needs_roots = relays_check
            || verify == Some(TlsVerify::Name)
            || checks(&mode)
            || per_domain.values().any(checks);
        let policy = TlsPolicy {
            mode,
            discovery,
            verify,
            per_domain,
            anonymous: Arc::new(anonymous_config(&provider)),
            checked: OnceLock::new(),
            ca_file,
            client: None,
            provider,
        };
        if needs_roots {
            policy.checked();
        }
        policy
    }

    /// Shows `identity` to every server that asks for a client
    /// certificate (`tls.client_cert`); refused when its key does not
    /// match the certificate or is of a kind rustls cannot sign with.
    pub fn use_client_identity(&mut self, identity: &ClientIdentity) -> Result<(), rustls::Error> {
        let resolver: Arc<dyn ResolvesClientCert> =
            Arc::new(SingleCertAndKey::from(certified(identity)?));
        let mut anonymous = (*self.anonymous).clone();
        anonymous.client_auth_cert_resolver = Arc::clone(&resolver);
        self.anonymous = Arc::new(anonymous);
        self.client = Some(resolver);
        // Built before the identity was known: built again at the next need.
        self.checked = OnceLock::new();
        Ok(())
    }

    /// The configuration that checks certificates, built at the first need.
    fn checked(&self) -> &Result<Checked, Arc<RootsError>> {
        self.checked.get_or_init(|| {
            let mut checked =
                checked_config(&self.provider, self.ca_file.clone()).map_err(Arc::new)?;
            if let Some(resolver) = &self.client {
                let mut config = (*checked.config).clone();
                config.client_auth_cert_resolver = Arc::clone(resolver);
                checked.config = Arc::new(config);
            }
            Ok(checked)
        })
    }

    /// The level for `domain`: its `tls.policy` entry, else `tls.mode`.
    pub fn mode_for(&self, domain: &str) -> Level {
        self.per_domain
            .get(&domain.to_ascii_lowercase())
            .copied()
            .unwrap_or(self.mode)
    }

    /// `tls.mode`: the level of a destination with no policy of its own.
    pub fn default_mode(&self) -> Level {
        self.mode
    }

    /// How certificates are checked under `mode`.
    pub fn verify_for(&self, mode: TlsMode) -> TlsVerify {
        self.verify.unwrap_or(match mode {
            TlsMode::Required => TlsVerify::Name,
            TlsMode::Opportunistic | TlsMode::Disabled => TlsVerify::None,
        })
    }

    /// Starts a client handshake with `host` (the SNI name), judging the
    /// certificate as `check` says.
    ///
    /// Under [`Check::Any`] the certificate and its name are still checked
    /// as `verify = name` would check them, but a failure does not stop
    /// the handshake: it only leaves the session unverified (Postfix's
    /// "Untrusted" beside "Trusted" at its `may` level). A message that
    /// requires TLS (RFC 8689 REQUIRETLS) may then go over any connection
    /// whose certificate passed, a reused one included, and a session that
    /// did not pass refuses it while still carrying the others. Without
    /// roots to check against, the session is simply unverified. The other
    /// checks refuse the handshake when the certificate fails them.
    pub fn connect(&self, host: &str, check: &Check) -> Result<TlsStream, TlsError> {
        let name = host.trim_end_matches('.');
        let server_name = ServerName::try_from(name.to_owned())
            .map_err(|e| TlsError::ServerName(name.to_owned(), e))?;
        let mut passed = None;
        let with_verifier = |verifier: Arc<dyn ServerCertVerifier>| {
            let mut config = (*self.anonymous).clone();
            config.dangerous().set_certificate_verifier(verifier);
            Arc::new(config)
        };
        let config = match check {
            Check::Pkix { names } => match self.checked() {
                Ok(checked) if names.len() == 1 && names[0] == name => Arc::clone(&checked.config),
                Ok(checked) => with_verifier(Arc::new(NamesVerifier {
                    inner: Arc::clone(&checked.verifier),
                    names: names.clone(),
                })),
                Err(why) => return Err(TlsError::CannotCheck(Arc::clone(why))),
            },
            Check::Dane { tlsa, names } => with_verifier(Arc::new(DaneVerifier {
                tlsa: Arc::clone(tlsa),
                names: names.clone(),
                provider: Arc::clone(&self.provider),
            })),
            Check::Any => match self.checked() {
                Ok(checked) => {
                    let flag = Arc::new(AtomicBool::new(false));
                    passed = Some(Arc::clone(&flag));
                    with_verifier(Arc::new(Probe {
                        inner: Arc::clone(&checked.verifier),
                        passed: flag,
                    }))
                }
                Err(_) => Arc::clone(&self.anonymous),
            },
        };
        let conn = ClientConnection::new(config, server_name).map_err(TlsError::Start)?;
        Ok(TlsStream {
            conn: Box::new(conn),
            verified: check.enforced(),
            passed,
            handshaking: true,
        })
    }
}

/// The client certificate and key as rustls signs with them: checks that
/// the key is one it can use and that it matches the certificate.
pub fn certified(identity: &ClientIdentity) -> Result<CertifiedKey, rustls::Error> {
    CertifiedKey::from_der(
        identity.chain.clone(),
        identity.key(),
        &ring::default_provider(),
    )
}

fn anonymous_config(provider: &Arc<CryptoProvider>) -> ClientConfig {
    let mut config = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        // The ring provider supports the safe defaults; should that ever
        // change, TLS 1.3 alone is still safe.
        .unwrap_or_else(|_| {
            ClientConfig::builder_with_provider(Arc::clone(provider))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("ring supports TLS 1.3")
        })
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(Arc::clone(provider))))
        .with_no_client_auth();
    // A session ticket would let a later connection skip the certificate,
    // which buys nothing here and muddies the log's "verified".
    config.resumption = rustls::client::Resumption::disabled();
    config
}

pub(crate) fn checked_config(
    provider: &Arc<CryptoProvider>,
    ca_file: Option<PathBuf>,
) -> Result<Checked, RootsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = match CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        {
            Ok(certs) => certs,
            Err(error) => return Err(RootsError::CaFile { path, error }),
        };
        if certs.is_empty() {
            return Err(RootsError::CaFileEmpty { path });
        }
        for cert in certs {
            if let Err(error) = roots.add(cert) {
                return Err(RootsError::CaCert { path, error });
            }
        }
    }
    if roots.is_empty() {
        return Err(RootsError::NoRoots {
            errors: native.errors,
            added,
        });
    }
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .build()
            .map_err(RootsError::Verifier)?;
    let mut config = ClientConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(RootsError::Versions)?
        .with_webpki_verifier(Arc::clone(&verifier))
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Checked {
        config: Arc::new(config),
        verifier,
    })
}

/// The check of `verify = none` (see [`TlsPolicy::connect`]): `inner`
/// decides, and `passed` records whether the certificate passed, but the
/// handshake goes on either way. The handshake's signatures are always
/// checked.
#[derive(Debug)]
struct Probe {
    inner: Arc<WebPkiServerVerifier>,
    passed: Arc<AtomicBool>,
}

impl ServerCertVerifier for Probe {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let checked = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        self.passed.store(checked.is_ok(), Ordering::Relaxed);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `verify = none`: the chain is not checked, but the handshake's
/// signatures still are (the server must hold the key of the certificate
/// it sent).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// What a read from a TLS connection came to.
#[derive(Debug)]
pub enum ReadEnd {
    /// The socket has nothing more for now.
    WouldBlock,
    /// The peer closed (close_notify, or the TCP connection).
    Eof,
    /// Reading failed, or the TLS layer did (a bad record, an alert, a
    /// refused certificate).
    Failed(TlsError),
}

/// One connection's TLS, between the socket and the session.
pub struct TlsStream {
    /// Boxed: a client connection is large and lives as long as the socket.
    conn: Box<ClientConnection>,
    /// The certificate was checked (`verify = name`).
    verified: bool,
    /// Under `verify = none`, the check's result (see
    /// [`TlsPolicy::connect`]): true once the certificate passed.
    passed: Option<Arc<AtomicBool>>,
    /// The handshake has not finished yet.
    handshaking: bool,
}

impl TlsStream {
    /// The handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// There is ciphertext to write: the handshake's, or the session's
    /// output once it is done.
    pub fn wants_write(&self, session: &Session) -> bool {
        self.conn.wants_write() || (!self.handshaking && !session.pending_output().is_empty())
    }

    /// rustls can take more ciphertext.
    pub fn wants_read(&self) -> bool {
        self.conn.wants_read()
    }

    /// Reads ciphertext until the socket would block, feeding the session
    /// the plaintext, and reports the end of the handshake to it. Returns
    /// the octets read from the socket and how the reading ended.
    pub fn read(
        &mut self,
        socket: &mut Socket,
        session: &mut Session,
        buf: &mut [u8],
        now: Instant,
    ) -> (u64, ReadEnd) {
        let mut total = 0u64;
        loop {
            let n = match self.conn.read_tls(&mut SocketIo(socket)) {
                Ok(0) => return (total, ReadEnd::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (total, ReadEnd::WouldBlock)
                }
                Err(e) => return (total, ReadEnd::Failed(TlsError::Read(e))),
            };
            total += n as u64;
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Tell the server why (an alert), if the socket takes it.
                    let _ = self.conn.write_tls(&mut SocketIo(socket));
                    return (total, ReadEnd::Failed(TlsError::from_rustls(e)));
                }
            };
            let closed = state.peer_has_closed();
            if self.handshaking && !self.conn.is_handshaking() {
                self.handshaking = false;
                session.tls_established(self.info(), now);
            }
            if let Some(end) = self.drain_plaintext(session, buf, now) {
                return (total, end);
            }
            if closed {
                return (total, ReadEnd::Eof);
            }
        }
    }

    /// Hands the session every decrypted octet.
    fn drain_plaintext(
        &mut self,
        session: &mut Session,
        buf: &mut [u8],
        now: Instant,
    ) -> Option<ReadEnd> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(0) => return Some(ReadEnd::Eof),
                Ok(n) => session.handle_input(&buf[..n], now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                // The TCP connection ended without close_notify.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Some(ReadEnd::Eof),
                Err(e) => return Some(ReadEnd::Failed(TlsError::Plaintext(e))),
            }
        }
    }

    /// Moves the session's output into TLS records and writes them until
    /// the socket would block. Returns the octets written to the socket.
    pub fn write(&mut self, socket: &mut Socket, session: &mut Session) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let mut progress = false;
            if !self.handshaking {
                while !session.pending_output().is_empty() {
                    // rustls takes plaintext up to its buffer limit.
                    let n = self.conn.writer().write(session.pending_output())?;
                    if n == 0 {
                        break;
                    }
                    session.consume_output(n);
                    progress = true;
                }
            }
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut SocketIo(socket)) {
                    Ok(n) => {
                        total += n as u64;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                    Err(e) => return Err(e),
                }
            }
            if !progress {
                return Ok(total);
            }
        }
    }

    /// Queues a close_notify (written by the next [`write`](Self::write)).
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    fn info(&self) -> TlsInfo {
        let protocol = match self.conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            Some(other) => format!("{other:?}"),
            None => "unknown".to_owned(),
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_owned(), |s| format!("{:?}", s.suite()));
        let passed = (self.passed.as_ref()).is_some_and(|p| p.load(Ordering::Relaxed));
        TlsInfo {
            protocol,
            cipher,
            verified: self.verified || passed,
        }
    }
}

/// `Read` and `Write` for a shared socket reference (socket2 implements
/// them for `&Socket`; rustls wants `&mut dyn Read`).
struct SocketIo<'a>(&'a Socket);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opportunistic() -> TlsPolicy {
        let discovery = Discovery {
            dane: true,
            mta_sts: true,
        };
        TlsPolicy::new(Level::May, discovery, None, None, HashMap::new(), false)
    }

    /// Why a handshake could not start is told in words that go into
    /// delivery records and bounces: they stay as they were when they
    /// were strings.
    #[test]
    fn a_handshake_that_cannot_start_says_why() {
        let policy = opportunistic();
        let error = policy
            .connect("mx d.test", &Check::Any)
            .err()
            .expect("refused");
        assert_eq!(
            error.to_string(),
            "\"mx d.test\" is not a valid TLS server name: invalid dns name",
        );
        assert!(policy.connect("mx.d.test.", &Check::Any).is_ok());
    }

    #[test]
    fn a_client_key_must_match_its_certificate() {
        use postman_integration::certs::TestCert;
        let a = TestCert::new(&["a.test"]);
        let b = TestCert::new(&["b.test"]);
        let matching = ClientIdentity::load(a.cert_path(), a.key_path()).expect("loads");
        let mut policy = opportunistic();
        assert!(policy.use_client_identity(&matching).is_ok());
        let crossed = ClientIdentity::load(a.cert_path(), b.key_path()).expect("loads");
        let error = certified(&crossed).expect_err("refused");
        assert!(error.to_string().contains("key"), "{error}");
        assert!(policy.use_client_identity(&crossed).is_err());
    }

    #[test]
    fn roots_that_cannot_be_had_say_why() {
        let path = PathBuf::from("/etc/postman/ca.pem");
        let cases = [
            (
                RootsError::CaFileEmpty { path: path.clone() },
                "tls.ca_file /etc/postman/ca.pem: holds no certificate",
            ),
            (
                RootsError::NoRoots {
                    errors: Vec::new(),
                    added: 0,
                },
                "no trusted roots (0 system roots and no tls.ca_file)",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
        let missing = TlsPolicy::new(
            Level::Verify,
            Discovery {
                dane: false,
                mta_sts: false,
            },
            None,
            Some(PathBuf::from("/nonexistent/ca.pem")),
            HashMap::new(),
            false,
        );
        let error = missing
            .connect(
                "mx.d.test",
                &Check::Pkix {
                    names: vec!["mx.d.test".into()],
                },
            )
            .err()
            .expect("no roots from a missing file");
        assert!(
            error
                .to_string()
                .starts_with("cannot check certificates: tls.ca_file /nonexistent/ca.pem: "),
            "{error}"
        );
    }
}
