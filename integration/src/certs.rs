//! Self-signed certificates made at test time (rcgen), for SMTP servers
//! that offer STARTTLS: the PEM files a server loads and the certificate a
//! client may trust (`tls.ca_file`).

use std::path::{Path, PathBuf};

/// A certificate for some DNS names and its key, as PEM files in a
/// temporary directory (removed on drop).
pub struct TestCert {
    dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TestCert {
    /// A self-signed certificate (not a CA: it is its own end entity, as on
    /// most MX hosts) naming `names`.
    pub fn new(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names.clone())
            .unwrap_or_else(|e| panic!("make a certificate for {names:?}: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("postman-cert-")
            .tempdir()
            .expect("create a temporary certificate dir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", cert.display()));
        std::fs::write(&key, certified.signing_key.serialize_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", key.display()));
        // Servers may read these after dropping privileges.
        make_readable(dir.path());
        make_readable(&cert);
        make_readable(&key);
        TestCert { dir, cert, key }
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
