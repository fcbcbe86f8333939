//! The `_smtp._tls.<domain>` TXT record (RFC 8460 §3): where a policy
//! domain wants its TLS reports sent. Read strictly: exactly one record
//! starting `v=TLSRPTv1`, else the domain takes no reports; a record whose
//! syntax is wrong is no record.

use std::fmt;

/// The version tag every TLSRPT record starts with.
const VERSION: &str = "v=TLSRPTv1";

/// Where reports go: the `rua` URIs postman can deliver to, in the
/// record's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub rua: Vec<Rua>,
}

/// One report destination (RFC 8460 §3 `tlsrpt-rua`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rua {
    /// `mailto:` (§5.3): the report is mailed to this address (the URI's
    /// address, percent-decoded, without `?` header fields).
    Mailto(String),
    /// `https:` (§5.4): the report is POSTed to this URI, as published.
    Https(String),
}

impl fmt::Display for Rua {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rua::Mailto(address) => write!(f, "mailto:{address}"),
            Rua::Https(uri) => f.write_str(uri),
        }
    }
}

/// Why the TXT answer asks for no reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No string starts with `v=TLSRPTv1`.
    #[error("no TXT record starts with v=TLSRPTv1")]
    None,
    /// More than one does (RFC 8460 §3: then there is none).
    #[error("{0} TXT records start with v=TLSRPTv1; exactly one is allowed")]
    Several(usize),
    /// The one record does not follow the syntax of RFC 8460 §3.
    #[error("malformed TLSRPT TXT record {0:?}")]
    Malformed(String),
    /// The record is well-formed but names no `mailto:` or `https:` URI.
    #[error("the TLSRPT record {0:?} names no mailto: or https: URI")]
    NoUsableRua(String),
}

impl Record {
    /// Reads the TXT strings of `_smtp._tls.<domain>` (each record's
    /// strings already joined): those not starting `v=TLSRPTv1` are
    /// discarded, and exactly one must remain (RFC 8460 §3).
    pub fn from_txt<S: AsRef<str>>(records: &[S]) -> Result<Record, RecordError> {
        let mut found = records.iter().map(AsRef::as_ref).filter(|r| is_tlsrpt(r));
        let (Some(only), None) = (found.next(), found.next()) else {
            let count = records.iter().filter(|r| is_tlsrpt(r.as_ref())).count();
            return Err(match count {
                0 => RecordError::None,
                n => RecordError::Several(n),
            });
        };
        let shown = || only.chars().take(120).collect::<String>();
        let uris = parse(only).ok_or_else(|| RecordError::Malformed(shown()))?;
        let rua: Vec<Rua> = uris.iter().filter_map(|u| Rua::parse(u)).collect();
        if rua.is_empty() {
            return Err(RecordError::NoUsableRua(shown()));
        }
        Ok(Record { rua })
    }
}

/// Whether a TXT string is a TLSRPT record: the version, then the end or
/// a field delimiter (so `v=TLSRPTv10` is not one).
fn is_tlsrpt(text: &str) -> bool {
    text.strip_prefix(VERSION).is_some_and(|rest| {
        rest.trim_start_matches([' ', '\t']).is_empty()
            || rest.trim_start_matches([' ', '\t']).starts_with(';')
    })
}

/// The `rua` URIs of a record, or `None` when its syntax is wrong:
/// `v=TLSRPTv1`, then `;`-separated fields (spaces allowed around `;`),
/// exactly one `rua`, extension fields `name=value` ignored.
fn parse(text: &str) -> Option<Vec<&str>> {
    let wsp = [' ', '\t'];
    let mut fields = text.split(';').map(|f| f.trim_matches(wsp));
    if fields.next()? != VERSION {
        return None;
    }
    let mut rua = None;
    for field in fields {
        if field.is_empty() {
            // Only the optional delimiter after the last field may leave
            // an empty one; `;;` is not in the grammar either, but
            // rejecting it would help nobody.
            continue;
        }
        let (name, value) = field.split_once('=')?;
        if name == "rua" {
            if rua.is_some() {
                return None;
            }
            let uris: Vec<&str> = value.split(',').map(|u| u.trim_matches(wsp)).collect();
            if uris
                .iter()
                .any(|u| u.is_empty() || !u.bytes().all(|b| b.is_ascii_graphic()))
            {
                return None;
            }
            rua = Some(uris);
            continue;
        }
        if !crate::mta_sts::policy::extension_ok(name, value) {
            return None;
        }
    }
    rua
}

impl Rua {
    /// A URI postman can deliver to, or `None` for other schemes and for a
    /// `mailto:` without a usable address.
    fn parse(uri: &str) -> Option<Rua> {
        let (scheme, rest) = uri.split_once(':')?;
        if scheme.eq_ignore_ascii_case("mailto") {
            let address = rest.split('?').next().unwrap_or_default();
            let address = percent_decode(address)?;
            let (local, domain) = address.rsplit_once('@')?;
            let ok = !local.is_empty()
                && !domain.is_empty()
                && address
                    .chars()
                    .all(|c| !c.is_control() && c != ' ' && c != ',');
            return ok.then_some(Rua::Mailto(address));
        }
        if scheme.eq_ignore_ascii_case("https") {
            let host = rest.strip_prefix("//")?.split(['/', '?', '#']).next()?;
            return (!host.is_empty()).then(|| Rua::Https(format!("https:{rest}")));
        }
        None
    }
}

/// `%XX` escapes decoded (RFC 3986 §2.1); `None` for a bad escape or a
/// result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
