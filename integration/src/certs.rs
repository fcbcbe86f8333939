//! Certificates made at test time (rcgen), for SMTP servers that offer
//! STARTTLS and HTTPS servers that serve MTA-STS policies: self-signed
//! leaves, or a test CA ([`TestCa`]) and leaves it signs; the PEM files a
//! server loads and the certificate a client may trust (`tls.ca_file`).

use std::path::{Path, PathBuf};

/// A certificate for some DNS names and its key, as PEM files in a
/// temporary directory (removed on drop).
pub struct TestCert {
    dir: tempfile::TempDir,
    cert: PathBuf,
    chain: PathBuf,
    key: PathBuf,
    spki: Vec<u8>,
}

/// A certificate authority made for one test: the root a client trusts
/// through `tls.ca_file`, and the leaves it signs.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    dir: tempfile::TempDir,
    cert: PathBuf,
    spki: Vec<u8>,
}

impl TestCa {
    /// A new CA (its own key, `CA:TRUE`, allowed to sign certificates).
    pub fn new() -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "postman test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("a CA key");
        let cert = params
            .self_signed(&key)
            .expect("a self-signed CA certificate");
        let pem = cert.pem();
        let dir = tempfile::Builder::new()
            .prefix("postman-ca-")
            .tempdir()
            .expect("create a temporary CA dir");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        make_readable(dir.path());
        make_readable(&path);
        TestCa {
            spki: rcgen::PublicKeyData::subject_public_key_info(&key),
            issuer: rcgen::Issuer::new(params, key),
            pem,
            dir,
            cert: path,
        }
    }

    /// A server certificate naming `names` (DNS names or IP addresses),
    /// signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> TestCert {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone())
            .unwrap_or_else(|e| panic!("parameters for {names:?}: {e}"));
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .unwrap_or_else(|e| panic!("sign a certificate for {names:?}: {e}"));
        let leaf = cert.pem();
        TestCert::write(&leaf, &format!("{leaf}{}", self.pem), &key)
    }

    /// The CA's SubjectPublicKeyInfo, DER: what a DANE-TA record with
    /// selector 1 (SPKI) digests.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The CA's certificate, PEM: what `tls.ca_file` names to trust it.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The directory holding it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCert {
    /// A self-signed certificate (not a CA: it is its own end entity, as on
    /// most MX hosts) naming `names`.
    pub fn new(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names.clone())
            .unwrap_or_else(|e| panic!("make a certificate for {names:?}: {e}"));
        TestCert::write(
            &certified.cert.pem(),
            &certified.cert.pem(),
            &certified.signing_key,
        )
    }

    /// Writes `cert.pem` (the leaf), `chain.pem` (leaf and issuer) and
    /// `key.pem` into a new temporary directory.
    fn write(leaf: &str, chain: &str, key: &rcgen::KeyPair) -> TestCert {
        let key_pem = key.serialize_pem();
        let key_pem = key_pem.as_str();
        let spki = rcgen::PublicKeyData::subject_public_key_info(key);
        let dir = tempfile::Builder::new()
            .prefix("postman-cert-")
            .tempdir()
            .expect("create a temporary certificate dir");
        let cert = dir.path().join("cert.pem");
        let full = dir.path().join("chain.pem");
        let key = dir.path().join("key.pem");
        for (path, text) in [(&cert, leaf), (&full, chain), (&key, key_pem)] {
            std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            // Servers may read these after dropping privileges.
            make_readable(path);
        }
        make_readable(dir.path());
        TestCert {
            dir,
            cert,
            chain: full,
            key,
            spki,
        }
    }

    /// The certificate's SubjectPublicKeyInfo, DER: what a DANE-EE record
    /// with selector 1 (SPKI) digests.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// The leaf and its issuer's certificate, PEM, in that order: what a
    /// server sends (the same as [`TestCert::cert_path`]'s for a
    /// self-signed one, twice).
    pub fn chain_path(&self) -> &Path {
        &self.chain
    }

    /// The certificate, PEM: what a client given `tls.ca_file` trusts.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    /// The private key, PEM (PKCS #8).
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// The directory holding both files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// chmod a+rX: test servers may run as another user.
pub fn make_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}
