//! The client certificate postman shows a server that asks for one
//! (`tls.client_cert`, `tls.client_key`): read and parsed when the settings
//! are validated, so that a bad file stops the start and names its key.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key.
pub struct ClientIdentity {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The client's certificate first, then any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Why a client certificate or key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate file is not a file of PEM certificates.
    #[error("cannot read certificates from it: {0}")]
    Cert(String),
    /// It holds no certificate.
    #[error("holds no certificate (-----BEGIN CERTIFICATE----- block)")]
    NoCert,
    /// The first certificate does not parse as X.509.
    #[error("its first certificate is not a valid X.509 certificate: {0}")]
    BadCert(String),
    /// The key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[error("cannot read a private key from it: {0}")]
    Key(String),
}

impl ClientIdentity {
    /// Reads the chain and the key; the error says which file failed
    /// (`true`: the key file).
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
    ) -> Result<ClientIdentity, (bool, IdentityError)> {
        let chain = CertificateDer::pem_file_iter(cert_file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| (false, IdentityError::Cert(e.to_string())))?;
        let Some(first) = chain.first() else {
            return Err((false, IdentityError::NoCert));
        };
        webpki::EndEntityCert::try_from(first)
            .map_err(|e| (false, IdentityError::BadCert(e.to_string())))?;
        let key = PrivateKeyDer::from_pem_file(key_file)
            .map_err(|e| (true, IdentityError::Key(e.to_string())))?;
        Ok(ClientIdentity {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            chain,
            key,
        })
    }

    /// A copy of the private key, for a TLS library that takes it.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.chain == other.chain
            && self.key.secret_der() == other.key.secret_der()
    }
}

impl Eq for ClientIdentity {}

impl fmt::Debug for ClientIdentity {
    /// Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}
