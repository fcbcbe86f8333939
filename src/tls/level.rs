//! The security levels an operator sets for MX delivery (`tls.mode`, and
//! per destination `tls.policy."domain"`), named for what each guarantees,
//! as Postfix's `smtp_tls_security_level` names them, plus `mta-sts`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::smtp::{TlsMode, TlsVerify};

/// What a destination's connections must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Level {
    /// Never STARTTLS.
    None,
    /// STARTTLS when offered, any certificate, else plaintext. DANE and
    /// MTA-STS, where the domain publishes them, raise it.
    #[default]
    May,
    /// STARTTLS required, any certificate. DANE and MTA-STS raise it.
    Encrypt,
    /// `may`, with DANE looked for even when `tls.dane` is off: a host with
    /// usable TLSA records must match them.
    Dane,
    /// DANE or nothing: a host without usable, DNSSEC-signed TLSA records
    /// is not used.
    DaneOnly,
    /// MTA-STS or nothing: the domain must have a policy in `enforce`
    /// mode, and only its MX hosts are used, over TLS with a certificate
    /// valid for the MX host name. DANE still comes first where usable.
    MtaSts,
    /// STARTTLS required; the certificate must chain to a trusted root and
    /// name the MX host. No discovery.
    Verify,
    /// As `verify`, but the certificate must name the recipient domain or
    /// a host under it: an attacker who forges the MX records cannot name
    /// a host of their own. No discovery.
    Secure,
}

impl Level {
    /// The word in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::May => "may",
            Level::Encrypt => "encrypt",
            Level::Dane => "dane",
            Level::DaneOnly => "dane-only",
            Level::MtaSts => "mta-sts",
            Level::Verify => "verify",
            Level::Secure => "secure",
        }
    }

    /// Whether DANE TLSA records are looked up for the domain's MX hosts,
    /// given `tls.dane`.
    pub fn wants_dane(self, dane: bool) -> bool {
        match self {
            Level::Dane | Level::DaneOnly => true,
            Level::May | Level::Encrypt | Level::MtaSts => dane,
            Level::None | Level::Verify | Level::Secure => false,
        }
    }

    /// Whether the domain's MTA-STS policy is looked up, given
    /// `tls.mta_sts`.
    pub fn wants_sts(self, mta_sts: bool) -> bool {
        match self {
            Level::MtaSts => true,
            Level::May | Level::Encrypt | Level::Dane => mta_sts,
            Level::None | Level::DaneOnly | Level::Verify | Level::Secure => false,
        }
    }

    /// STARTTLS for a configured next hop that takes its TLS from this
    /// level (`tls.mode`): relays are not MX hosts, so neither DANE nor
    /// MTA-STS applies to them.
    pub fn starttls(self) -> TlsMode {
        match self {
            Level::None => TlsMode::Disabled,
            Level::May | Level::Dane => TlsMode::Opportunistic,
            Level::Encrypt | Level::DaneOnly | Level::MtaSts | Level::Verify | Level::Secure => {
                TlsMode::Required
            }
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level as written in the settings: a [`Level`]'s word, or one of the
/// words earlier versions took (`opportunistic`, `required`, `disabled`),
/// kept so that existing files keep their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LevelWord {
    None,
    May,
    Encrypt,
    Dane,
    DaneOnly,
    MtaSts,
    Verify,
    Secure,
    /// `may`.
    Opportunistic,
    /// `verify`, or `encrypt` with `tls.verify = "none"`: what `required`
    /// meant before the levels.
    Required,
    /// `none`.
    Disabled,
}

impl LevelWord {
    /// The level this word means, given `tls.verify` (which only the old
    /// word `required` reads).
    pub fn level(self, verify: Option<TlsVerify>) -> Level {
        match self {
            LevelWord::None | LevelWord::Disabled => Level::None,
            LevelWord::May | LevelWord::Opportunistic => Level::May,
            LevelWord::Encrypt => Level::Encrypt,
            LevelWord::Dane => Level::Dane,
            LevelWord::DaneOnly => Level::DaneOnly,
            LevelWord::MtaSts => Level::MtaSts,
            LevelWord::Verify => Level::Verify,
            LevelWord::Secure => Level::Secure,
            LevelWord::Required => match verify {
                Some(TlsVerify::None) => Level::Encrypt,
                Some(TlsVerify::Name) | None => Level::Verify,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_words_keep_their_meaning() {
        let cases = [
            (LevelWord::Opportunistic, None, Level::May),
            (LevelWord::Opportunistic, Some(TlsVerify::Name), Level::May),
            (LevelWord::Required, None, Level::Verify),
            (LevelWord::Required, Some(TlsVerify::Name), Level::Verify),
            (LevelWord::Required, Some(TlsVerify::None), Level::Encrypt),
            (LevelWord::Disabled, None, Level::None),
            (LevelWord::Encrypt, Some(TlsVerify::Name), Level::Encrypt),
        ];
        for (word, verify, want) in cases {
            assert_eq!(word.level(verify), want, "{word:?} with verify {verify:?}");
        }
    }

    #[test]
    fn words_parse_as_written() {
        #[derive(Deserialize)]
        struct T {
            mode: LevelWord,
        }
        for (text, want) in [
            ("dane-only", LevelWord::DaneOnly),
            ("mta-sts", LevelWord::MtaSts),
            ("secure", LevelWord::Secure),
            ("required", LevelWord::Required),
        ] {
            let t: T = toml::from_str(&format!("mode = {text:?}")).expect("parses");
            assert_eq!(t.mode, want, "{text}");
            let level = want.level(None);
            if want != LevelWord::Required {
                assert_eq!(level.as_str(), text, "the word names the level");
            }
        }
        assert!(toml::from_str::<T>("mode = \"dane_only\"").is_err());
    }

    #[test]
    fn discovery_follows_the_level_and_the_switches() {
        // (level, tls.dane, tls.mta_sts) -> (wants dane, wants sts)
        let cases = [
            (Level::May, true, true, true, true),
            (Level::May, false, false, false, false),
            (Level::Encrypt, true, false, true, false),
            (Level::Dane, false, true, true, true),
            (Level::DaneOnly, false, true, true, false),
            (Level::MtaSts, true, false, true, true),
            (Level::Verify, true, true, false, false),
            (Level::Secure, true, true, false, false),
            (Level::None, true, true, false, false),
        ];
        for (level, dane, sts, want_dane, want_sts) in cases {
            assert_eq!(level.wants_dane(dane), want_dane, "{level} dane={dane}");
            assert_eq!(level.wants_sts(sts), want_sts, "{level} mta_sts={sts}");
        }
    }
}
