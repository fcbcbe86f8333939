//! The two texts of MTA-STS (RFC 8461 §3): the `_mta-sts.<domain>` TXT
//! record that announces a policy and its id, and the policy file served at
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`. Both are read
//! strictly: a policy that does not parse is no policy (§3.2), and a typo
//! such as `nmx:` leaves no MX pattern, which is invalid, not "match
//! nothing".

use std::fmt;

/// The largest `max_age` (RFC 8461 §3.2: about one year).
pub const MAX_MAX_AGE: u64 = 31_557_600;

/// The longest policy id (RFC 8461 §3.1).
const MAX_ID: usize = 32;

/// What the policy asks of senders (RFC 8461 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deliver only over verified TLS to a matching MX host.
    Enforce,
    /// Deliver as before; report what would have failed.
    Testing,
    /// No policy (a domain withdrawing one).
    None,
}

impl Mode {
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// An `mx:` pattern: a host name, or `*.` and a name matching exactly one
/// more leftmost label (RFC 8461 §4.1). Kept lower-case, without a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxPattern {
    wildcard: bool,
    name: String,
}

impl MxPattern {
    fn parse(value: &str) -> Result<MxPattern, PolicyError> {
        let bad = || PolicyError::BadMx(value.to_owned());
        let (wildcard, name) = match value.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) || !name.contains('.') {
            return Err(bad());
        }
        Ok(MxPattern { wildcard, name })
    }

    /// Whether the MX host `host` (any case, trailing dot or not) matches.
    pub fn matches(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        if !self.wildcard {
            return host.eq_ignore_ascii_case(&self.name);
        }
        match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest.eq_ignore_ascii_case(&self.name),
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// Seconds a sender may cache the policy.
    pub max_age: u64,
    /// Hosts that may receive the domain's mail (empty only in mode none).
    pub mx: Vec<MxPattern>,
}

/// Why a policy file is not a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not printable ASCII text.
    #[error("the policy is not ASCII text")]
    NotAscii,
    /// A line that is not `key: value`.
    #[error("line {0} is not \"key: value\"")]
    NotAField(usize),
    /// A required field is missing.
    #[error("the policy has no {0} field")]
    Missing(&'static str),
    /// A field that may appear once appears again.
    #[error("the {0} field appears twice")]
    Duplicate(&'static str),
    /// `version` other than `STSv1`.
    #[error("unsupported version {0:?} (STSv1 expected)")]
    BadVersion(String),
    /// `mode` other than enforce, testing, none.
    #[error("unknown mode {0:?} (enforce, testing or none)")]
    BadMode(String),
    /// `max_age` not 1 to 10 digits within a year.
    #[error("max_age {0:?} is not a number of seconds up to 31557600")]
    BadMaxAge(String),
    /// An `mx` value that is not a host name or `*.` and one.
    #[error("mx {0:?} is not a host name pattern")]
    BadMx(String),
    /// Mode enforce or testing without any `mx` pattern.
    #[error("mode {0} needs at least one mx pattern")]
    NoMx(&'static str),
}

impl Policy {
    /// Reads a policy file (RFC 8461 §3.2): `key: value` lines ended by
    /// LF or CRLF; `version`, `mode` and `max_age` once each, `mx` any
    /// number of times; field names and the version and mode values are
    /// case-sensitive; unknown fields are ignored.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        if !text
            .bytes()
            .all(|b| b == b'\r' || b == b'\n' || b == b'\t' || (32..127).contains(&b))
        {
            return Err(PolicyError::NotAscii);
        }
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once(':').ok_or(PolicyError::NotAField(i + 1))?;
            let value = value.trim_matches([' ', '\t']);
            let once = |slot: &mut Option<String>, name| match slot {
                Some(_) => Err(PolicyError::Duplicate(name)),
                None => {
                    *slot = Some(value.to_owned());
                    Ok(())
                }
            };
            match key {
                "version" => once(&mut version, "version")?,
                "mode" => once(&mut mode, "mode")?,
                "max_age" => once(&mut max_age, "max_age")?,
                "mx" => mx.push(MxPattern::parse(value)?),
                _ => {}
            }
        }
        let version = version.ok_or(PolicyError::Missing("version"))?;
        if version != "STSv1" {
            return Err(PolicyError::BadVersion(version));
        }
        let mode = match mode.ok_or(PolicyError::Missing("mode"))?.as_str() {
            "enforce" => Mode::Enforce,
            "testing" => Mode::Testing,
            "none" => Mode::None,
            other => return Err(PolicyError::BadMode(other.to_owned())),
        };
        let max_age = max_age.ok_or(PolicyError::Missing("max_age"))?;
        let seconds = match max_age.len() {
            1..=10 if max_age.bytes().all(|b| b.is_ascii_digit()) => max_age.parse().ok(),
            _ => None,
        }
        .filter(|s| *s <= MAX_MAX_AGE)
        .ok_or(PolicyError::BadMaxAge(max_age))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::NoMx(mode.as_str()));
        }
        Ok(Policy {
            mode,
            max_age: seconds,
            mx,
        })
    }

    /// Whether the MX host `host` is one the policy names.
    pub fn matches(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

impl fmt::Display for Policy {
    /// The policy as a file of its own kind (LF line ends).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "version: STSv1")?;
        writeln!(f, "mode: {}", self.mode.as_str())?;
        for mx in &self.mx {
            writeln!(f, "mx: {mx}")?;
        }
        writeln!(f, "max_age: {}", self.max_age)
    }
}

/// The `_mta-sts` TXT record's content that matters: the policy id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
}

/// Why the TXT answer announces no policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// No string starting `v=STSv1;`.
    #[error("no TXT record starts with v=STSv1")]
    None,
    /// More than one such record (RFC 8461 §3.1: then there is none).
    #[error("{0} TXT records start with v=STSv1; exactly one is allowed")]
    Several(usize),
    /// The one record is malformed.
    #[error("malformed MTA-STS TXT record {0:?}")]
    Malformed(String),
}

impl Record {
    /// Reads the TXT strings of `_mta-sts.<domain>` (each record's strings
    /// already joined): those not starting `v=STSv1;` are discarded, and
    /// exactly one must remain (RFC 8461 §3.1).
    pub fn from_txt<S: AsRef<str>>(records: &[S]) -> Result<Record, RecordError> {
        let mut sts = records
            .iter()
            .map(AsRef::as_ref)
            .filter(|r| r.starts_with("v=STSv1;") || *r == "v=STSv1");
        let (Some(only), None) = (sts.next(), sts.next()) else {
            let count = records
                .iter()
                .filter(|r| r.as_ref().starts_with("v=STSv1"))
                .count();
            return Err(match count {
                0 => RecordError::None,
                n => RecordError::Several(n),
            });
        };
        Record::parse(only).ok_or_else(|| RecordError::Malformed(only.chars().take(80).collect()))
    }

    /// `v=STSv1; id=<1-32 alphanumerics>;` and extension fields, separated
    /// by `;` with optional spaces, `v` first.
    fn parse(text: &str) -> Option<Record> {
        let mut fields = text.split(';').map(|f| f.trim_matches([' ', '\t']));
        if fields.next()? != "v=STSv1" {
            return None;
        }
        let mut id = None;
        for field in fields {
            if field.is_empty() {
                continue;
            }
            let (name, value) = field.split_once('=')?;
            if !extension_ok(name, value) {
                return None;
            }
            if name == "id" {
                if id.is_some()
                    || value.len() > MAX_ID
                    || !value.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    return None;
                }
                id = Some(value.to_owned());
            }
        }
        id.map(|id| Record { id })
    }
}

/// A `name=value` field of a TXT record that this parser does not know:
/// the extension syntax RFC 8461 §3.1 (`sts-ext-name`, `sts-ext-value`)
/// and RFC 8460 §3 (`tlsrpt-ext-name`, `tlsrpt-ext-value`) share. A field
/// outside it makes the whole record invalid.
pub(crate) fn extension_ok(name: &str, value: &str) -> bool {
    let name_ok = name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let value_ok = !value.is_empty()
        && value
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'=' && b != b';');
    name_ok && value_ok
}
