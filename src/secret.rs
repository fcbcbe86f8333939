//! Passwords, kept out of every text postman writes: a [`Secret`] formats
//! as `<redacted>` under both `Debug` and `Display`, has no `Serialize`
//! (so `check-config` cannot print it), and is wiped from memory when
//! dropped. Only the code that puts it on the wire calls
//! [`Secret::expose`].

use std::fmt;

use zeroize::Zeroizing;

/// A password or other credential.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps `value`; the caller's copy is moved in, not cloned.
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The value itself, for the SASL mechanism that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A user name and its password, for SMTP AUTH to one next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity (RFC 4422 `authcid`); not secret, and
    /// logged.
    pub user: String,
    pub password: Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_formats_its_value() {
        let credentials = Credentials {
            user: "relay-user".into(),
            password: Secret::new("hunter2-pass".into()),
        };
        let debug = format!("{credentials:?} {:#?}", credentials);
        let display = format!("{}", credentials.password);
        for text in [&debug, &display] {
            assert!(!text.contains("hunter2-pass"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
        assert!(debug.contains("relay-user"));
        assert_eq!(credentials.password.expose(), "hunter2-pass");
    }
}
