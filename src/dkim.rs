//! DKIM signing (RFC 6376) of the messages postman writes itself: TLS
//! reports must carry a valid DKIM signature of the reporting domain, with
//! no `l=` tag, or receivers ignore them (RFC 8460 §3). Signs with
//! `rsa-sha256` or `ed25519-sha256` (RFC 8463), relaxed/relaxed
//! canonicalization (RFC 6376 §3.4.2, §3.4.4), on `ring`, the crypto
//! library rustls already builds. Signing only: postman verifies nothing.
//!
//! Pure: the time (`t=`) and the random source RSA blinding needs are
//! arguments.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest;
use ring::rand::SecureRandom;
use ring::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivateKeyDer;

/// Where a signature header's lines are folded (RFC 5322 §2.1.1's 78).
const FOLD_AT: usize = 78;

/// The header fields a report's signature covers, in this order, when the
/// message has them (RFC 6376 §5.4.1's list, plus RFC 8460 §5.3's report
/// fields, which it asks to be signed). Each is also signed once more
/// than it occurs, so that nobody can add another instance after signing
/// (RFC 6376 §5.4.2, "oversigning").
pub const REPORT_HEADERS: [&str; 11] = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "tls-report-domain",
    "tls-report-submitter",
    "tls-required",
    "auto-submitted",
];

/// A private key to sign with.
pub struct SigningKey(Key);

enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SigningKey({})", self.algorithm())
    }
}

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The file holds no PEM private key.
    #[error("no PEM private key found (expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)")]
    NoKey,
    /// An elliptic-curve (SEC1) key: DKIM signs with RSA or Ed25519 only.
    #[error("an EC private key cannot sign DKIM; use an RSA (2048 bits or more) or Ed25519 key")]
    Unsupported,
    /// The key is neither an RSA key ring accepts (2048 to 8192 bits) nor
    /// an Ed25519 key.
    #[error("the private key is not a usable RSA or Ed25519 key: {0}")]
    Rejected(String),
}

/// Why a message could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The message has no `From` field, which a signature must cover (RFC
    /// 6376 §5.4).
    #[error("the message has no From header field")]
    NoFrom,
    /// The domain or selector is not a plain DNS name.
    #[error("{0:?} is not a valid DKIM domain or selector")]
    BadName(String),
    /// The signing operation failed.
    #[error("the signing operation failed")]
    Crypto,
}

impl SigningKey {
    /// A key from a PEM file: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or
    /// Ed25519, as `openssl genpkey` writes) or PKCS#1 (`BEGIN RSA
    /// PRIVATE KEY`).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, KeyError> {
        let der = PrivateKeyDer::from_pem_slice(pem).map_err(|_| KeyError::NoKey)?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(pkcs8) => {
                let bytes = pkcs8.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(bytes) {
                    Ok(rsa) => Key::Rsa(rsa),
                    // OpenSSL writes Ed25519 keys as PKCS#8 v1 (no public
                    // key inside), which only this constructor takes.
                    Err(rsa_err) => match Ed25519KeyPair::from_pkcs8_maybe_unchecked(bytes) {
                        Ok(ed) => Key::Ed25519(ed),
                        Err(_) => return Err(KeyError::Rejected(rsa_err.to_string())),
                    },
                }
            }
            PrivateKeyDer::Pkcs1(pkcs1) => Key::Rsa(
                RsaKeyPair::from_der(pkcs1.secret_pkcs1_der())
                    .map_err(|e| KeyError::Rejected(e.to_string()))?,
            ),
            _ => return Err(KeyError::Unsupported),
        };
        Ok(SigningKey(key))
    }

    /// The `a=` tag's algorithm.
    pub fn algorithm(&self) -> &'static str {
        match &self.0 {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>` (RFC
    /// 6376 §3.6.1): `v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>`, or for
    /// Ed25519 the bare 32-octet key (RFC 8463 §4.2).
    pub fn dns_record(&self) -> String {
        match &self.0 {
            Key::Rsa(rsa) => {
                let spki = rsa_spki(rsa.public_key().as_ref());
                format!("v=DKIM1; k=rsa; p={}", STANDARD.encode(spki))
            }
            Key::Ed25519(ed) => format!(
                "v=DKIM1; k=ed25519; p={}",
                STANDARD.encode(ed.public_key().as_ref())
            ),
        }
    }

    fn sign(&self, data: &[u8], rng: &dyn SecureRandom) -> Result<Vec<u8>, SignError> {
        match &self.0 {
            Key::Rsa(rsa) => {
                let mut signature = vec![0; rsa.public().modulus_len()];
                rsa.sign(&RSA_PKCS1_SHA256, rng, data, &mut signature)
                    .map_err(|_| SignError::Crypto)?;
                Ok(signature)
            }
            // RFC 8463 §3: Ed25519 signs the SHA-256 hash of the data.
            Key::Ed25519(ed) => Ok(ed
                .sign(digest::digest(&digest::SHA256, data).as_ref())
                .as_ref()
                .to_vec()),
        }
    }
}

/// An RSAPublicKey wrapped in a SubjectPublicKeyInfo (RFC 5280 §4.1, RFC
/// 3279 §2.3.1), the form DKIM records carry.
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0];
    bit_string.extend_from_slice(rsa_public_key);
    let mut inner = ALGORITHM.to_vec();
    inner.extend(der(0x03, &bit_string));
    der(0x30, &inner)
}

/// One DER element: tag, definite length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Who signs: the `d=` domain and the `s=` selector, and the key.
#[derive(Debug)]
pub struct Signer<'a> {
    pub domain: &'a str,
    pub selector: &'a str,
    pub key: &'a SigningKey,
}

impl Signer<'_> {
    /// `message` (CRLF line ends, as postman writes) with a
    /// `DKIM-Signature` field prepended, relaxed/relaxed over `headers`
    /// (names, any case; see [`REPORT_HEADERS`]) and the whole body, made
    /// at `timestamp` (`t=`, seconds since the Unix epoch).
    pub fn sign(
        &self,
        message: &[u8],
        headers: &[&str],
        timestamp: u64,
        rng: &dyn SecureRandom,
    ) -> Result<Vec<u8>, SignError> {
        for name in [self.domain, self.selector] {
            if !is_dns_name(name) {
                return Err(SignError::BadName(name.to_owned()));
            }
        }
        let (fields, body) = split_message(message);
        if !fields
            .iter()
            .any(|f| field_name(f).eq_ignore_ascii_case("from"))
        {
            return Err(SignError::NoFrom);
        }
        let body_hash = digest::digest(&digest::SHA256, &relaxed_body(body));

        // Each name once per instance present, plus once more
        // (oversigning); instances are taken from the bottom up (§5.4.2).
        let mut signed: Vec<String> = Vec::new();
        let mut data = Vec::new();
        for name in headers {
            let name = name.to_ascii_lowercase();
            let instances: Vec<&[u8]> = fields
                .iter()
                .rev()
                .filter(|f| field_name(f).eq_ignore_ascii_case(&name))
                .copied()
                .collect();
            for field in &instances {
                data.extend(relaxed_header(field));
            }
            signed.extend(std::iter::repeat_n(name, instances.len() + 1));
        }

        let mut header = Folded::new("DKIM-Signature:");
        for tag in [
            "v=1;".to_owned(),
            format!("a={};", self.key.algorithm()),
            "c=relaxed/relaxed;".to_owned(),
            format!("d={};", self.domain),
            format!("s={};", self.selector),
            format!("t={timestamp};"),
        ] {
            header.push(&tag, " ");
        }
        for (i, name) in signed.iter().enumerate() {
            let (before, after) = if i == 0 { ("h=", " ") } else { ("", "") };
            let end = if i + 1 == signed.len() { ";" } else { ":" };
            header.push(&format!("{before}{name}{end}"), after);
        }
        header.push(&format!("bh={};", STANDARD.encode(body_hash)), " ");
        header.push("b=", " ");
        // The signature covers its own field with an empty b= (§3.7),
        // canonicalized like the others but without the final CRLF.
        let mut unsigned = relaxed_header(header.text.as_bytes());
        unsigned.truncate(unsigned.len().saturating_sub(2));
        data.extend(unsigned);

        let signature = STANDARD.encode(self.key.sign(&data, rng)?);
        for chunk in signature.as_bytes().chunks(64) {
            header.push(std::str::from_utf8(chunk).unwrap_or_default(), "");
        }
        let mut out = header.text.into_bytes();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(message);
        Ok(out)
    }
}

/// A header field being written, folded before a piece that would pass
/// [`FOLD_AT`].
struct Folded {
    text: String,
    column: usize,
}

impl Folded {
    fn new(start: &str) -> Folded {
        Folded {
            text: start.to_owned(),
            column: start.len(),
        }
    }

    /// Appends `piece` after `separator`, or on a new folded line.
    fn push(&mut self, piece: &str, separator: &str) {
        if self.column + separator.len() + piece.len() > FOLD_AT {
            self.text.push_str("\r\n ");
            self.column = 1;
        } else {
            self.text.push_str(separator);
            self.column += separator.len();
        }
        self.text.push_str(piece);
        self.column += piece.len();
    }
}

/// Letters, digits, `-` and `.`-separated labels.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The header fields (each with its continuation lines and final CRLF)
/// and the body after the empty line; no empty line means no body.
fn split_message(message: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    // Each field as (start, end) offsets into `message`.
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    let mut body = &message[message.len()..];
    while at < message.len() {
        let end = message[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(message.len(), |p| at + p + 2);
        let line = &message[at..end];
        if line == b"\r\n" {
            body = &message[end..];
            break;
        }
        match (line.first(), fields.last_mut()) {
            // A continuation line belongs to the field above it.
            (Some(b' ' | b'\t'), Some(last)) => last.1 = end,
            _ => fields.push((at, end)),
        }
        at = end;
    }
    let fields = fields.into_iter().map(|(s, e)| &message[s..e]).collect();
    (fields, body)
}

/// A field's name: the text before its colon, spaces trimmed.
fn field_name(field: &[u8]) -> &str {
    let name = field.split(|b| *b == b':').next().unwrap_or_default();
    std::str::from_utf8(name)
        .unwrap_or_default()
        .trim_matches([' ', '\t'])
}

/// RFC 6376 §3.4.2: the name in lower case, unfolded, runs of spaces and
/// tabs one space, none at the value's ends or around the colon; CRLF.
fn relaxed_header(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|b| *b == b':').unwrap_or(field.len());
    let name = field[..colon].to_ascii_lowercase();
    let mut out: Vec<u8> = name
        .into_iter()
        .filter(|b| !matches!(b, b' ' | b'\t'))
        .collect();
    out.push(b':');
    let value: Vec<u8> = field
        .get(colon + 1..)
        .unwrap_or_default()
        .iter()
        .copied()
        .filter(|b| !matches!(b, b'\r' | b'\n'))
        .collect();
    out.extend(collapse_spaces(&value).trim_ascii());
    out.extend_from_slice(b"\r\n");
    out
}

/// Runs of spaces and tabs replaced by one space.
fn collapse_spaces(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut in_space = false;
    for &b in text {
        if matches!(b, b' ' | b'\t') {
            if !in_space {
                out.push(b' ');
            }
            in_space = true;
        } else {
            out.push(b);
            in_space = false;
        }
    }
    out
}

/// RFC 6376 §3.4.4: spaces at line ends removed, other runs of spaces one
/// space, empty lines at the end removed, a CRLF after every line; an
/// empty body stays empty.
fn relaxed_body(body: &[u8]) -> Vec<u8> {
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    let mut lines: Vec<Vec<u8>> = if body.is_empty() {
        Vec::new()
    } else {
        split_crlf(body)
            .map(|line| {
                let mut line = collapse_spaces(line);
                while line.last() == Some(&b' ') {
                    line.pop();
                }
                line
            })
            .collect()
    };
    while lines.last().is_some_and(Vec::is_empty) {
        lines.pop();
    }
    let mut out = Vec::with_capacity(body.len() + 2);
    for line in lines {
        out.extend(line);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The lines of `text` between CRLFs (a bare CR or LF stays in its line).
fn split_crlf(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(2).position(|w| w == b"\r\n") {
            Some(p) => {
                rest = Some(&current[p + 2..]);
                Some(&current[..p])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
#[path = "dkim_tests.rs"]
mod tests;
