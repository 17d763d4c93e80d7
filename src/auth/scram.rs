//! SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677): stored keys and the
//! server side of the exchange, without I/O.
//!
//! Accounts store [`ScramKeys`] (salt, iteration count, StoredKey,
//! ServerKey) rather than passwords. The XMPP layer drives a
//! [`ScramServer`] with the decoded SASL payloads:
//!
//! 1. `client_first` on the `<auth/>` initial response yields the username;
//! 2. the caller looks the account up and passes its keys to `server_first`,
//!    whose output goes into a `<challenge/>`. For an unknown user it passes
//!    [`ScramKeys::fake_for`] instead, so the exchange runs to the same
//!    `not-authorized` end and does not reveal which accounts exist;
//! 3. `client_final` on the `<response/>` checks the proof and yields the
//!    server-final message for `<success/>`.
//!
//! Passwords are used exactly as given (their UTF-8 bytes): SASLprep
//! normalization is not applied, so clients that do apply it will only
//! interoperate for passwords SASLprep leaves unchanged (all ASCII printable
//! passwords, for example).
//!
//! Only the `n` and `y` channel-binding flags are accepted: no `-PLUS`
//! mechanism is offered, and a server that offered one would have to reject
//! `y` (see `super::sasl::CbFlag`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::sasl::{decode_saslname, parse_gs2_header, SaslError, MAX_IDENTITY_LEN};

/// Iteration count suggested for new accounts (RFC 7677 asks for at least
/// 4096). [`ScramKeys::fake_for`] callers should pass the count that real
/// accounts use, since `i=` is visible to the client.
pub const DEFAULT_ITERATIONS: u32 = 10_000;
/// Salt length, in bytes, for new and fake keys.
pub const SALT_LEN: usize = 16;
/// Random bytes in the server nonce (base64 of 18 bytes is 24 characters).
const SERVER_NONCE_LEN: usize = 18;
/// Upper bound on the client nonce, so a peer cannot make us store and hash
/// arbitrary amounts of data.
const MAX_NONCE_LEN: usize = 512;

/// The hash function of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScramHash {
    /// SCRAM-SHA-1 (RFC 5802).
    Sha1,
    /// SCRAM-SHA-256 (RFC 7677).
    Sha256,
}

impl ScramHash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    /// The hash for a SASL mechanism name, if it is one of ours.
    pub fn from_mechanism(name: &str) -> Option<Self> {
        match name {
            "SCRAM-SHA-1" => Some(ScramHash::Sha1),
            "SCRAM-SHA-256" => Some(ScramHash::Sha256),
            _ => None,
        }
    }

    /// Output length of H and HMAC, in bytes.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
        }
    }

    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // new_from_slice cannot fail: HMAC takes keys of any length.
        match self {
            ScramHash::Sha1 => {
                let mut m = Hmac::<Sha1>::new_from_slice(key).expect("HMAC accepts any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub(crate) fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    pub(crate) fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

/// What the server stores per account and mechanism.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramKeys {
    /// PBKDF2 salt, sent to the client in `s=`.
    pub salt: Vec<u8>,
    /// PBKDF2 iteration count, sent to the client in `i=`.
    pub iterations: u32,
    /// H(ClientKey).
    pub stored_key: Vec<u8>,
    /// HMAC(SaltedPassword, "Server Key").
    pub server_key: Vec<u8>,
}

// Hand-written so key material never ends up in logs.
impl fmt::Debug for ScramKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramKeys")
            .field("salt", &STANDARD.encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

impl ScramKeys {
    /// Derives the stored keys from a password (RFC 5802 §3). The password
    /// is used as given, without SASLprep. `iterations` should be at least
    /// 4096.
    pub fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hash.salted_password(password.as_bytes(), salt, iterations);
        let client_key = hash.hmac(&salted, b"Client Key");
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key: hash.digest(&client_key),
            server_key: hash.hmac(&salted, b"Server Key"),
        }
    }

    /// Derives keys for a new password with a fresh random salt.
    pub fn generate(hash: ScramHash, password: &str, iterations: u32) -> Self {
        let mut salt = [0u8; SALT_LEN];
        fill_random(&mut salt);
        Self::derive(hash, password, &salt, iterations)
    }

    /// Checks a plaintext password (e.g. from PLAIN) against these keys, in
    /// constant time with respect to the key contents.
    pub fn verify_password(&self, hash: ScramHash, password: &str) -> bool {
        let other = Self::derive(hash, password, &self.salt, self.iterations);
        let stored = other.stored_key.ct_eq(&self.stored_key);
        let server = other.server_key.ct_eq(&self.server_key);
        (stored & server).into()
    }

    /// Stand-in keys for a user that does not exist, so the exchange with
    /// them is indistinguishable from a wrong password.
    ///
    /// They are deterministic per (`hash`, `username`, `server_secret`):
    /// asking twice for the same unknown user must show the same salt, as a
    /// real account would. `server_secret` must be a stable server-side
    /// secret (otherwise anyone could compute the fake salt), and
    /// `iterations` should be what real accounts use. No password can match
    /// them, short of a preimage of the random-looking StoredKey.
    pub fn fake_for(
        hash: ScramHash,
        username: &str,
        server_secret: &[u8],
        iterations: u32,
    ) -> Self {
        let derive = |label: &str, len: usize| {
            let mut data = Vec::with_capacity(label.len() + 1 + username.len());
            data.extend_from_slice(label.as_bytes());
            data.push(0);
            data.extend_from_slice(username.as_bytes());
            let mut out = ScramHash::Sha256.hmac(server_secret, &data);
            out.truncate(len);
            out
        };
        let n = hash.output_len();
        let tag = hash.mechanism();
        ScramKeys {
            salt: derive(&format!("{tag} fake salt"), SALT_LEN),
            iterations,
            stored_key: derive(&format!("{tag} fake stored key"), n),
            server_key: derive(&format!("{tag} fake server key"), n),
        }
    }
}

/// Fills `buf` from the operating system's CSPRNG. Falls back to the
/// thread-local generator (itself a CSPRNG seeded from the OS) rather than
/// panicking if the OS source reports an error.
fn fill_random(buf: &mut [u8]) {
    use rand::{RngCore as _, TryRngCore as _};
    if rand::rngs::OsRng.try_fill_bytes(buf).is_err() {
        rand::rng().fill_bytes(buf);
    }
}

/// Result of the client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// Decoded `n=` value.
    pub username: String,
    /// Decoded `a=` value of the GS2 header.
    pub authzid: Option<String>,
}

enum State {
    Start,
    GotClientFirst {
        gs2_header: String,
        bare: String,
        client_nonce: String,
    },
    SentServerFirst {
        gs2_header: String,
        /// client-first-message-bare "," server-first-message
        auth_prefix: String,
        nonce: String,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    },
    Done,
    Failed,
}

/// Server side of one SCRAM exchange. See the module docs for the call
/// order; any error leaves it failed.
pub struct ScramServer {
    hash: ScramHash,
    state: State,
    #[cfg(test)]
    fixed_server_nonce: Option<String>,
}

impl ScramServer {
    /// A fresh exchange for the mechanism using `hash`.
    pub fn new(hash: ScramHash) -> Self {
        ScramServer {
            hash,
            state: State::Start,
            #[cfg(test)]
            fixed_server_nonce: None,
        }
    }

    /// The mechanism's hash.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// Whether the exchange completed successfully.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Uses a fixed server nonce instead of a random one (RFC test vectors).
    #[cfg(test)]
    pub(crate) fn with_server_nonce(mut self, nonce: &str) -> Self {
        self.fixed_server_nonce = Some(nonce.to_owned());
        self
    }

    /// Parses the client-first message:
    /// `gs2-header [m=…,] n=user,r=nonce[,ext…]`.
    pub fn client_first(&mut self, msg: &[u8]) -> Result<ClientFirst, SaslError> {
        if !matches!(self.state, State::Start) {
            self.state = State::Failed;
            return Err(SaslError::MalformedRequest(
                "unexpected client-first message",
            ));
        }
        let r = parse_client_first(msg);
        match r {
            Ok((first, state)) => {
                self.state = state;
                Ok(first)
            }
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    /// Builds the server-first message `r=<client+server nonce>,s=<salt>,i=<n>`
    /// from the account's keys (or [`ScramKeys::fake_for`] ones).
    ///
    /// # Panics
    /// If not called exactly once, right after a successful `client_first`:
    /// that is a bug in the caller, not something a peer can cause.
    pub fn server_first(&mut self, keys: &ScramKeys) -> Vec<u8> {
        let State::GotClientFirst {
            gs2_header,
            bare,
            client_nonce,
        } = std::mem::replace(&mut self.state, State::Failed)
        else {
            panic!("ScramServer::server_first called out of order");
        };
        let server_nonce = self.server_nonce();
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            STANDARD.encode(&keys.salt),
            keys.iterations
        );
        self.state = State::SentServerFirst {
            gs2_header,
            auth_prefix: format!("{bare},{server_first}"),
            nonce,
            stored_key: keys.stored_key.clone(),
            server_key: keys.server_key.clone(),
        };
        server_first.into_bytes()
    }

    fn server_nonce(&self) -> String {
        #[cfg(test)]
        if let Some(n) = &self.fixed_server_nonce {
            return n.clone();
        }
        let mut raw = [0u8; SERVER_NONCE_LEN];
        fill_random(&mut raw);
        // Standard base64 never contains ',' so it is a valid nonce.
        STANDARD.encode(raw)
    }

    /// Checks the client-final message `c=…,r=…[,ext…],p=…` and returns the
    /// server-final message `v=<ServerSignature>` to send with `<success/>`.
    /// A wrong proof, nonce or channel-binding echo is `not-authorized`.
    pub fn client_final(&mut self, msg: &[u8]) -> Result<Vec<u8>, SaslError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::SentServerFirst {
            gs2_header,
            auth_prefix,
            nonce,
            stored_key,
            server_key,
        } = state
        else {
            return Err(SaslError::MalformedRequest(
                "unexpected client-final message",
            ));
        };
        let msg = std::str::from_utf8(msg).map_err(|_| malformed("invalid UTF-8"))?;
        let (without_proof, proof) = msg.rsplit_once(",p=").ok_or(malformed("missing proof"))?;
        let mut attrs = without_proof.split(',');
        let cbind = attrs
            .next()
            .and_then(|a| a.strip_prefix("c="))
            .ok_or(malformed("expected c="))?;
        let got_nonce = attrs
            .next()
            .and_then(|a| a.strip_prefix("r="))
            .ok_or(malformed("expected r="))?;
        for ext in attrs {
            check_extension(ext)?;
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        if proof.len() != self.hash.output_len() {
            return Err(malformed("proof has the wrong length"));
        }
        let cbind = STANDARD
            .decode(cbind)
            .map_err(|_| malformed("channel binding is not base64"))?;
        // The client must echo its own GS2 header exactly (no CB data, as
        // only n and y are accepted): "biws" for n,, and "eSws" for y,,.
        if cbind != gs2_header.as_bytes() {
            return Err(SaslError::NotAuthorized);
        }
        if !bool::from(got_nonce.as_bytes().ct_eq(nonce.as_bytes())) {
            return Err(SaslError::NotAuthorized);
        }
        let auth_message = format!("{auth_prefix},{without_proof}");
        let client_signature = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let candidate = self.hash.digest(&client_key);
        if !bool::from(candidate.ct_eq(&stored_key)) {
            return Err(SaslError::NotAuthorized);
        }
        let server_signature = self.hash.hmac(&server_key, auth_message.as_bytes());
        self.state = State::Done;
        Ok(format!("v={}", STANDARD.encode(server_signature)).into_bytes())
    }
}

fn malformed(msg: &'static str) -> SaslError {
    SaslError::MalformedRequest(msg)
}

/// Parses a client-first message into its result and the next state.
fn parse_client_first(msg: &[u8]) -> Result<(ClientFirst, State), SaslError> {
    if msg.len() > 2 * MAX_IDENTITY_LEN + MAX_NONCE_LEN + 1024 {
        return Err(malformed("message too long"));
    }
    let msg = std::str::from_utf8(msg).map_err(|_| malformed("invalid UTF-8"))?;
    if msg.contains('\0') {
        return Err(malformed("NUL in message"));
    }
    let gs2 = parse_gs2_header(msg)?;
    let bare = &msg[gs2.len..];
    let mut attrs = bare.split(',');
    let first = attrs.next().unwrap_or_default();
    if first.starts_with("m=") {
        // RFC 5802 §5.1: reserved for mandatory extensions, none of which
        // we know, so the exchange must fail.
        return Err(malformed("unsupported mandatory extension"));
    }
    let username = first
        .strip_prefix("n=")
        .ok_or(malformed("expected n="))
        .and_then(decode_saslname)?;
    let client_nonce = attrs
        .next()
        .and_then(|a| a.strip_prefix("r="))
        .ok_or(malformed("expected r="))?;
    if client_nonce.is_empty()
        || client_nonce.len() > MAX_NONCE_LEN
        || !client_nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed("bad client nonce"));
    }
    for ext in attrs {
        check_extension(ext)?;
    }
    Ok((
        ClientFirst {
            username,
            authzid: gs2.authzid,
        },
        State::GotClientFirst {
            gs2_header: msg[..gs2.len].to_owned(),
            bare: bare.to_owned(),
            client_nonce: client_nonce.to_owned(),
        },
    ))
}

/// Optional extensions are `ALPHA "=" 1*value-char`; unknown ones are
/// ignored as RFC 5802 requires.
fn check_extension(ext: &str) -> Result<(), SaslError> {
    let b = ext.as_bytes();
    if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b'=' {
        Ok(())
    } else {
        Err(malformed("bad attribute"))
    }
}

#[cfg(test)]
mod tests;
