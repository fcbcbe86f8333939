//! Validation of `[tlsrpt]` into [`Tlsrpt`]: nothing is checked while it
//! is off; on, the sender address, the DKIM domain and selector are
//! checked and the key file is read, so that a report can never go out
//! unsigned (RFC 8460 §3) and a bad file stops the start naming its key.

use std::sync::Arc;

use super::*;
use crate::config::tlsrpt::{DkimKey, Tlsrpt, TlsrptSettings};
use crate::dkim::SigningKey;
use crate::tlsrpt::Submitter;

/// The largest key file read: a PEM RSA key of 8192 bits is under 7 KB.
const MAX_KEY_FILE: u64 = 64 * 1024;

impl Validator<'_> {
    pub(super) fn tlsrpt(
        &self,
        t: &TlsrptSettings,
        hostname: &str,
    ) -> Result<Option<Tlsrpt>, ConfigError> {
        if !t.enabled {
            return Ok(None);
        }
        let needed = |key: &str, what: &str| {
            self.invalid(key, "unset", format!("tlsrpt.enabled = true needs {what}"))
        };
        let from = t
            .from
            .as_deref()
            .ok_or_else(|| needed("tlsrpt.from", "the reports' sender address"))?;
        let from_domain = match from.rsplit_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && local
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"@".contains(&b))
                    && valid_domain(&domain.to_ascii_lowercase()) =>
            {
                domain.to_ascii_lowercase()
            }
            _ => {
                return Err(self.invalid(
                    "tlsrpt.from",
                    format!("{from:?}"),
                    "must be a plain ASCII address, local@domain",
                ))
            }
        };
        let domain = match &t.dkim_domain {
            None => from_domain.clone(),
            Some(given) => {
                let domain = given.trim_end_matches('.').to_ascii_lowercase();
                if !valid_domain(&domain) {
                    return Err(self.invalid(
                        "tlsrpt.dkim_domain",
                        format!("{given:?}"),
                        "must be a domain name (A-labels)",
                    ));
                }
                domain
            }
        };
        // DMARC (relaxed alignment) and RFC 8460 §3 want the signature of
        // the reporting domain: From in it, or it under From's domain.
        let under = |a: &str, b: &str| a == b || a.ends_with(&format!(".{b}"));
        if !under(&from_domain, &domain) && !under(&domain, &from_domain) {
            return Err(self.invalid(
                "tlsrpt.from",
                format!("{from:?}"),
                format!(
                    "is not in the DKIM domain {domain:?} (tlsrpt.dkim_domain): receivers \
                     want the signing domain to match the sender's"
                ),
            ));
        }
        let selector = t
            .dkim_selector
            .as_deref()
            .ok_or_else(|| needed("tlsrpt.dkim_selector", "the DKIM selector of dkim_key"))?;
        if !valid_domain(&selector.to_ascii_lowercase()) {
            return Err(self.invalid(
                "tlsrpt.dkim_selector",
                format!("{selector:?}"),
                "must be one or more DNS labels (letters, digits, '-')",
            ));
        }
        let file = t.dkim_key.as_deref().ok_or_else(|| {
            needed(
                "tlsrpt.dkim_key",
                "a DKIM private key: receivers ignore unsigned reports (RFC 8460 §3)",
            )
        })?;
        let key = self.dkim_key(file)?;
        let organization = t.organization.clone().unwrap_or_else(|| domain.clone());
        let contact = t.contact.clone().unwrap_or_else(|| from.to_owned());
        for (key_name, value) in [
            ("tlsrpt.organization", &organization),
            ("tlsrpt.contact", &contact),
        ] {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                return Err(self.invalid(
                    key_name,
                    format!("{value:?}"),
                    "must be a non-empty line of text",
                ));
            }
        }
        Ok(Some(Tlsrpt {
            submitter: Submitter {
                organization,
                contact,
                domain,
                unique_id: hostname.split('.').next().map(str::to_owned),
            },
            from: from.to_owned(),
            dkim: DkimKey {
                file: file.to_path_buf(),
                selector: selector.to_ascii_lowercase(),
                key: Arc::new(key),
            },
        }))
    }

    /// The key file read and parsed, or an error naming `tlsrpt.dkim_key`
    /// and the file.
    fn dkim_key(&self, file: &Path) -> Result<SigningKey, ConfigError> {
        let refuse = |reason: String| {
            self.invalid("tlsrpt.dkim_key", format!("{:?}", file.display()), reason)
        };
        match std::fs::metadata(file) {
            Ok(meta) if meta.is_file() && meta.len() <= MAX_KEY_FILE => {}
            Ok(meta) if meta.is_file() => {
                return Err(refuse(format!(
                    "is {} bytes, more than a PEM private key: is it the right file?",
                    meta.len()
                )))
            }
            Ok(_) => return Err(refuse("must be a PEM private key file".to_owned())),
            Err(e) => return Err(refuse(format!("cannot read it: {e}"))),
        }
        let pem = std::fs::read(file).map_err(|e| refuse(format!("cannot read it: {e}")))?;
        SigningKey::from_pem(&pem).map_err(|e| refuse(e.to_string()))
    }
}
