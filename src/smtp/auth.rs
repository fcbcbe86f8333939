//! SMTP AUTH's SASL mechanisms, client side (RFC 4954 §4, RFC 4422): PLAIN
//! (RFC 4616), LOGIN (draft-murchison-sasl-login-00) and SCRAM-SHA-256
//! (RFC 5802, RFC 7677), without channel binding (gs2 header `n,,`).
//!
//! Sans-IO like the session that drives it: the SCRAM client nonce is an
//! input ([`Nonce`]), drawn by the caller as time is. Each mechanism has a
//! fixed number of steps, so a server that keeps challenging is cut off;
//! every malformed challenge is an [`AuthError`], never a panic; and a
//! SCRAM server must prove it knows the password (its `v=`) before its
//! `235` is believed.
//!
//! SASLprep (RFC 4013), which SCRAM asks of the user name and password, is
//! done for the printable ASCII subset only, where it changes nothing:
//! credentials holding anything else make SCRAM unusable, and PLAIN or
//! LOGIN is chosen when offered (they send the octets as they are; the
//! server prepares them, RFC 4616 §2).
//!
//! Every line that carries credentials is a [`Secret`]: it formats as
//! `<redacted>`, and only the session's output buffer holds its octets.

use std::fmt;
use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use zeroize::Zeroizing;

use crate::secret::{Credentials, Secret};

/// The most PBKDF2 iterations a SCRAM server may ask for. RFC 7677 §4 asks
/// for at least 4096; servers use 4096 to a few tens of thousands. A
/// hostile server asking for more would burn this worker's CPU.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// How much of a server's challenge an error quotes.
const QUOTE_LEN: usize = 60;

/// A SASL mechanism postman can use, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (RFC 7677): the password never crosses the wire, and
    /// the server proves it knows it too.
    ScramSha256,
    /// PLAIN (RFC 4616): user and password in one line.
    Plain,
    /// LOGIN: user and password, each after a prompt.
    Login,
}

impl Mechanism {
    /// Every mechanism, best first.
    pub const PREFERENCE: [Mechanism; 3] =
        [Mechanism::ScramSha256, Mechanism::Plain, Mechanism::Login];

    /// The name in EHLO's AUTH keyword and in the AUTH command.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }

    /// Whether these credentials can go through this mechanism: SCRAM
    /// needs printable ASCII (see the module's note on SASLprep), PLAIN
    /// a user and a password without NUL (RFC 4616 §2, `1*SAFE`).
    pub fn can_send(self, credentials: &Credentials) -> bool {
        let user = credentials.user.as_str();
        let password = credentials.password.expose();
        match self {
            Mechanism::ScramSha256 => {
                let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
                !user.is_empty() && printable(user) && printable(password)
            }
            Mechanism::Plain => {
                !user.is_empty()
                    && !password.is_empty()
                    && !user.contains('\0')
                    && !password.contains('\0')
            }
            Mechanism::Login => true,
        }
    }

    /// The best mechanism among those the server `offered` (upper-case
    /// names, as [`Extensions::auth`](super::Extensions::auth) has them)
    /// that can carry `credentials`.
    pub fn choose(offered: &[String], credentials: &Credentials) -> Option<Mechanism> {
        Mechanism::PREFERENCE
            .into_iter()
            .find(|m| offered.iter().any(|o| o == m.name()) && m.can_send(credentials))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The SCRAM client nonce (RFC 5802 §5.1 `c-nonce`): printable ASCII
/// without `,`. Draw it from a secure random source for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    /// The nonce made of `random` octets (18 or more, from a
    /// cryptographically secure generator), base64-encoded.
    pub fn from_random(random: &[u8]) -> Nonce {
        Nonce(STANDARD.encode(random))
    }

    /// `text` as the nonce, when it is one: not empty, printable ASCII,
    /// no `,`. For tests and known vectors.
    pub fn new(text: &str) -> Option<Nonce> {
        is_printable(text).then(|| Nonce(text.to_owned()))
    }

    /// The nonce as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the session needs to authenticate: SMTP AUTH to this next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Who to authenticate as. The password is a [`Secret`].
    pub credentials: Credentials,
    /// AUTH may go out on a connection without TLS. Off, a session that
    /// is not encrypted ends before AUTH, its credentials unsent.
    pub allow_plaintext: bool,
    /// The SCRAM client nonce for this connection.
    pub nonce: Nonce,
}

/// Why a mechanism gave up (then the session cancels the exchange with
/// `*`, RFC 4954 §4), or why a `235` is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The challenge of a 334 reply is not base64 (RFC 4954 §4).
    #[error("the server's challenge {challenge:?} is not base64")]
    NotBase64 {
        /// The start of the challenge.
        challenge: String,
    },
    /// The server challenged more often than the mechanism has steps.
    #[error("the server sent more challenges than {mechanism} has steps")]
    TooManySteps {
        /// The mechanism in use.
        mechanism: Mechanism,
    },
    /// A SCRAM server message does not follow RFC 5802 §7.
    #[error("malformed SCRAM message from the server ({what}): {message:?}")]
    Malformed {
        /// What is wrong with it.
        what: &'static str,
        /// The start of the message.
        message: String,
    },
    /// The server's SCRAM nonce does not begin with the client's
    /// (RFC 5802 §5.1): a replay, or not the exchange this client began.
    #[error("the server's SCRAM nonce does not begin with the client's")]
    NonceMismatch,
    /// The server asks for more PBKDF2 iterations than [`MAX_ITERATIONS`].
    #[error("the server asks for {iterations} PBKDF2 iterations, more than the {MAX_ITERATIONS} postman allows")]
    TooManyIterations {
        /// What it asked for.
        iterations: u64,
    },
    /// The server ended the SCRAM exchange with `e=` (RFC 5802 §7).
    #[error("the server reports SCRAM error {error:?}")]
    ServerError {
        /// The server's error value.
        error: String,
    },
    /// The server's `v=` is not the signature the password gives: it does
    /// not know the password, whatever its 235 says.
    #[error("server signature mismatch")]
    SignatureMismatch,
    /// The server said 235 before proving it knows the password.
    #[error("the server accepted the authentication without proving it knows the password")]
    Unproven,
}

/// One AUTH exchange in progress: which mechanism, and how far it got.
/// Its `Debug` names the mechanism and the step, never a key.
pub struct Exchange {
    mechanism: Mechanism,
    credentials: Credentials,
    /// Challenges answered so far.
    steps: usize,
    scram: Scram,
}

/// What SCRAM keeps between steps.
enum Scram {
    /// Not SCRAM, or done with.
    None,
    /// `client-first-message-bare`, for the AuthMessage, and the nonce
    /// the server's must begin with.
    AwaitFirst {
        client_first_bare: String,
        client_nonce: String,
    },
    /// The key that signs the server's proof, and what it signs.
    AwaitFinal {
        server_key: hmac::Key,
        auth_message: String,
    },
    /// The server's signature matched.
    Verified,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scram = match self.scram {
            Scram::None => "-",
            Scram::AwaitFirst { .. } => "awaiting server-first",
            Scram::AwaitFinal { .. } => "awaiting server-final",
            Scram::Verified => "server verified",
        };
        f.debug_struct("Exchange")
            .field("mechanism", &self.mechanism)
            .field("steps", &self.steps)
            .field("scram", &scram)
            .finish()
    }
}

impl Exchange {
    /// Begins `mechanism` (one that [`Mechanism::can_send`] these
    /// credentials): the exchange and the initial response the AUTH
    /// command carries (RFC 4954 §4), if any. LOGIN sends none and waits
    /// for its prompts.
    pub fn start(
        mechanism: Mechanism,
        credentials: &Credentials,
        nonce: &Nonce,
    ) -> (Exchange, Option<Secret>) {
        let mut exchange = Exchange {
            mechanism,
            credentials: credentials.clone(),
            steps: 0,
            scram: Scram::None,
        };
        let initial = match mechanism {
            Mechanism::Plain => Some(plain_response(credentials)),
            Mechanism::Login => None,
            Mechanism::ScramSha256 => {
                let client_first_bare =
                    format!("n={},r={}", sasl_name(&credentials.user), nonce.as_str());
                let response = Secret::new(STANDARD.encode(format!("n,,{client_first_bare}")));
                exchange.scram = Scram::AwaitFirst {
                    client_first_bare,
                    client_nonce: nonce.as_str().to_owned(),
                };
                Some(response)
            }
        };
        (exchange, initial)
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The answer to a `334` whose text is `challenge` (base64): the
    /// response line to send, base64 (possibly empty). An `Err` means the
    /// exchange cannot go on: cancel it with `*`.
    pub fn respond(&mut self, challenge: &str) -> Result<Secret, AuthError> {
        let credentials = &self.credentials;
        self.steps += 1;
        let challenge = challenge.trim();
        let decoded = STANDARD
            .decode(challenge)
            .map_err(|_| AuthError::NotBase64 {
                challenge: quote(challenge),
            })?;
        let too_many = AuthError::TooManySteps {
            mechanism: self.mechanism,
        };
        match (self.mechanism, self.steps) {
            // RFC 4616 has no challenge; RFC 4954 §4 lets a server send an
            // empty one anyway when the initial response was not taken.
            (Mechanism::Plain, 1) if decoded.is_empty() => Ok(plain_response(credentials)),
            // The prompts ("Username:", "Password:") are only prompts.
            (Mechanism::Login, 1) => Ok(Secret::new(STANDARD.encode(&credentials.user))),
            (Mechanism::Login, 2) => {
                Ok(Secret::new(STANDARD.encode(credentials.password.expose())))
            }
            (Mechanism::ScramSha256, 1 | 2) => self.scram_step(&decoded),
            _ => Err(too_many),
        }
    }

    /// The server said `235` with `text` (the reply's text after the
    /// enhanced code): `Ok` when the mechanism believes it. A SCRAM server
    /// must have proven itself by now, in a 334 or, leniently, as base64
    /// data in this reply (RFC 4422 "additional data with success").
    pub fn finish(&mut self, text: &str) -> Result<(), AuthError> {
        match &self.scram {
            Scram::None | Scram::Verified => Ok(()),
            Scram::AwaitFirst { .. } => Err(AuthError::Unproven),
            Scram::AwaitFinal { .. } => {
                let data = text
                    .split_ascii_whitespace()
                    .find_map(|word| STANDARD.decode(word).ok())
                    .filter(|data| data.starts_with(b"v=") || data.starts_with(b"e="))
                    .ok_or(AuthError::Unproven)?;
                self.server_final(&data)
            }
        }
    }

    fn scram_step(&mut self, message: &[u8]) -> Result<Secret, AuthError> {
        match std::mem::replace(&mut self.scram, Scram::None) {
            Scram::AwaitFirst {
                client_first_bare,
                client_nonce,
            } => {
                let message = scram_text(message)?;
                let first = server_first(message)?;
                if !first.nonce.starts_with(&client_nonce) {
                    return Err(AuthError::NonceMismatch);
                }
                let (response, server_key, auth_message) =
                    client_final(&client_first_bare, message, &first, &self.credentials);
                self.scram = Scram::AwaitFinal {
                    server_key,
                    auth_message,
                };
                Ok(response)
            }
            scram @ Scram::AwaitFinal { .. } => {
                self.scram = scram;
                self.server_final(message)?;
                // RFC 4954 §4: the server-final data came as a challenge;
                // the empty response lets the server send its 235.
                Ok(Secret::new(String::new()))
            }
            Scram::None | Scram::Verified => Err(AuthError::TooManySteps {
                mechanism: self.mechanism,
            }),
        }
    }

    /// Checks `server-final-message` (RFC 5802 §7): `v=` must be the
    /// signature the password gives.
    fn server_final(&mut self, message: &[u8]) -> Result<(), AuthError> {
        let Scram::AwaitFinal {
            server_key,
            auth_message,
        } = &self.scram
        else {
            return Err(AuthError::TooManySteps {
                mechanism: self.mechanism,
            });
        };
        let message = scram_text(message)?;
        let first = message.split(',').next().unwrap_or_default();
        if let Some(error) = first.strip_prefix("e=") {
            return Err(AuthError::ServerError {
                error: quote(error),
            });
        }
        let signature = first
            .strip_prefix("v=")
            .and_then(|v| STANDARD.decode(v).ok())
            .ok_or_else(|| malformed("no v= with a base64 signature", message))?;
        hmac::verify(server_key, auth_message.as_bytes(), &signature)
            .map_err(|_| AuthError::SignatureMismatch)?;
        self.scram = Scram::Verified;
        Ok(())
    }
}

/// `base64("" NUL user NUL password)`: no authorization identity.
fn plain_response(credentials: &Credentials) -> Secret {
    let mut message = Zeroizing::new(Vec::new());
    message.push(0);
    message.extend_from_slice(credentials.user.as_bytes());
    message.push(0);
    message.extend_from_slice(credentials.password.expose().as_bytes());
    Secret::new(STANDARD.encode(&*message))
}

/// RFC 5802 §5.1 `saslname`: `=` and `,` escaped.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// `printable` of RFC 5802 §7: `%x21-2B / %x2D-7E`, at least one.
fn is_printable(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b',')
}

fn scram_text(message: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(message).map_err(|_| AuthError::Malformed {
        what: "not UTF-8",
        message: quote(&String::from_utf8_lossy(message)),
    })
}

fn malformed(what: &'static str, message: &str) -> AuthError {
    AuthError::Malformed {
        what,
        message: quote(message),
    }
}

fn quote(text: &str) -> String {
    text.chars().take(QUOTE_LEN).collect()
}

/// What `server-first-message` (RFC 5802 §7) says: the combined nonce, the
/// salt and the iteration count.
struct ServerFirst<'a> {
    nonce: &'a str,
    salt: Vec<u8>,
    iterations: NonZeroU32,
}

fn server_first(message: &str) -> Result<ServerFirst<'_>, AuthError> {
    let mut attributes = message.split(',');
    let mut next = |name: &'static str, what: &'static str| {
        attributes
            .next()
            .and_then(|a| a.strip_prefix(name))
            .ok_or_else(|| malformed(what, message))
    };
    if message.starts_with("m=") {
        return Err(malformed(
            "a mandatory extension postman does not know",
            message,
        ));
    }
    let nonce = next("r=", "no r= nonce first")?;
    let salt = next("s=", "no s= salt after the nonce")?;
    let iterations = next("i=", "no i= iteration count after the salt")?;
    if !is_printable(nonce) {
        return Err(malformed("the nonce is not printable ASCII", message));
    }
    let salt = STANDARD
        .decode(salt)
        .ok()
        .filter(|salt| !salt.is_empty())
        .ok_or_else(|| malformed("the salt is not base64", message))?;
    if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("the iteration count is not a number", message));
    }
    // Digits only: the parse fails only beyond u64, which is too many anyway.
    let count = iterations.parse::<u64>().unwrap_or(u64::MAX);
    let iterations = u32::try_from(count)
        .ok()
        .filter(|&i| i <= MAX_ITERATIONS)
        .ok_or(AuthError::TooManyIterations { iterations: count })?;
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| malformed("the iteration count is zero", message))?;
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// RFC 5802 §3: the client-final-message for `server_first`, the key that
/// checks the server's signature, and the AuthMessage it signs.
fn client_final(
    client_first_bare: &str,
    server_first_message: &str,
    first: &ServerFirst<'_>,
    credentials: &Credentials,
) -> (Secret, hmac::Key, String) {
    let mut salted = Zeroizing::new([0u8; digest::SHA256_OUTPUT_LEN]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        first.iterations,
        &first.salt,
        credentials.password.expose().as_bytes(),
        &mut *salted,
    );
    let salted = hmac::Key::new(hmac::HMAC_SHA256, &*salted);
    let client_key = Zeroizing::new(hmac::sign(&salted, b"Client Key").as_ref().to_vec());
    let stored_key = digest::digest(&digest::SHA256, &client_key);
    // "biws" is base64("n,,"): no channel binding, no authzid.
    let without_proof = format!("c=biws,r={}", first.nonce);
    let auth_message = format!("{client_first_bare},{server_first_message},{without_proof}");
    let stored_key = hmac::Key::new(hmac::HMAC_SHA256, stored_key.as_ref());
    let signature = hmac::sign(&stored_key, auth_message.as_bytes());
    let proof: Zeroizing<Vec<u8>> = Zeroizing::new(
        client_key
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect(),
    );
    let server_key = hmac::sign(&salted, b"Server Key");
    let server_key = hmac::Key::new(hmac::HMAC_SHA256, server_key.as_ref());
    let message = Zeroizing::new(format!("{without_proof},p={}", STANDARD.encode(&*proof)));
    let response = Secret::new(STANDARD.encode(message.as_bytes()));
    (response, server_key, auth_message)
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
