//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) for the XMPP
//! scenarios: client-first with a fresh nonce, the client proof, and the
//! check of the server's signature — a server that does not know the
//! password cannot complete a login.
//!
//! The hash, HMAC and PBKDF2 are the server side's own
//! ([`ScramHash`] in [`crate::auth::scram`]), so both sides compute
//! alike. Deriving the salted password is PBKDF2 with the server's
//! iteration count (4096 and more): a real client caches it per account, and
//! so does the generator ([`SaltedCache`]), or its own CPU would bound the
//! login rate instead of the server's. No channel binding (`n,,`), no
//! authzid, and the password is used as given (no SASLprep), as on the
//! server side.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::auth::scram::ScramHash;

/// Highest iteration count the client accepts from a server (PBKDF2 cost
/// is the client's; a hostile or misconfigured server must not stall it).
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Salted passwords a cache keeps (one per account and salt).
const CACHE_ENTRIES: usize = 100_000;

/// Why an exchange failed on the client side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed server-first message: {0}")]
    ServerFirst(&'static str),
    #[error("server nonce does not extend ours")]
    Nonce,
    #[error("iteration count {0} out of range 1..={MAX_ITERATIONS}")]
    Iterations(u64),
    #[error("server error: {0}")]
    ServerError(String),
    #[error("malformed server-final message")]
    ServerFinal,
    #[error("server signature mismatch")]
    Signature,
    #[error("exchange step out of order")]
    Order,
}

/// (password, salt, iterations) → SaltedPassword.
type SaltedMap = HashMap<(String, Vec<u8>, u32), Vec<u8>>;

/// Salted passwords by (password, salt, iterations), shared by the
/// logins of a run.
#[derive(Debug, Default)]
pub struct SaltedCache {
    map: Mutex<SaltedMap>,
}

impl SaltedCache {
    fn get_or_derive(&self, hash: ScramHash, password: &str, salt: &[u8], i: u32) -> Vec<u8> {
        let key = (password.to_owned(), salt.to_vec(), i);
        if let Some(v) = self.lock().get(&key) {
            return v.clone();
        }
        // Derived outside the lock: two logins racing both derive, fine.
        let v = hash.salted_password(password.as_bytes(), salt, i);
        let mut m = self.lock();
        if m.len() < CACHE_ENTRIES {
            m.insert(key, v.clone());
        }
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SaltedMap> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

enum State {
    Start,
    SentFirst { bare: String, nonce: String },
    SentFinal { server_signature: Vec<u8> },
    Done,
}

/// One client exchange: [`ScramClient::client_first`], then
/// [`ScramClient::client_final`] with the server-first message, then
/// [`ScramClient::verify_server_final`] with the server-final one.
pub struct ScramClient {
    hash: ScramHash,
    username: String,
    password: String,
    state: State,
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str) -> ScramClient {
        ScramClient {
            hash,
            username: username.to_owned(),
            password: password.to_owned(),
            state: State::Start,
        }
    }

    /// `n,,n=<user>,r=<nonce>` with a fresh random nonce.
    pub fn client_first(&mut self) -> Vec<u8> {
        let nonce = STANDARD.encode(crate::auth::random_bytes::<18>());
        self.client_first_with_nonce(nonce)
    }

    fn client_first_with_nonce(&mut self, nonce: String) -> Vec<u8> {
        let bare = format!("n={},r={nonce}", saslname(&self.username));
        let msg = format!("n,,{bare}").into_bytes();
        self.state = State::SentFirst { bare, nonce };
        msg
    }

    /// Answers the server-first message `r=…,s=…,i=…` with the
    /// client-final message `c=biws,r=…,p=<proof>`.
    pub fn client_final(
        &mut self,
        server_first: &[u8],
        cache: &SaltedCache,
    ) -> Result<Vec<u8>, ScramError> {
        let State::SentFirst { bare, nonce } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::Order);
        };
        let sf = std::str::from_utf8(server_first).map_err(|_| ScramError::ServerFirst("UTF-8"))?;
        if let Some(e) = sf.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let mut parts = sf.split(',');
        let mut field = |name: &'static str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .ok_or(ScramError::ServerFirst(name))
        };
        let (r, s, i) = (field("r=")?, field("s=")?, field("i=")?);
        if r.len() <= nonce.len() || !r.starts_with(&nonce) {
            return Err(ScramError::Nonce);
        }
        let salt = STANDARD
            .decode(s)
            .map_err(|_| ScramError::ServerFirst("salt is not base64"))?;
        let iterations: u64 = i.parse().map_err(|_| ScramError::ServerFirst("i="))?;
        if iterations == 0 || iterations > u64::from(MAX_ITERATIONS) {
            return Err(ScramError::Iterations(iterations));
        }
        let h = self.hash;
        let salted = cache.get_or_derive(h, &self.password, &salt, iterations as u32);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.digest(&client_key);
        // "biws" is base64 of the GS2 header "n,,".
        let without_proof = format!("c=biws,r={r}");
        let auth_message = format!("{bare},{sf},{without_proof}");
        let client_signature = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = h.hmac(&salted, b"Server Key");
        self.state = State::SentFinal {
            server_signature: h.hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// Checks the server-final message `v=<ServerSignature>`.
    pub fn verify_server_final(&mut self, server_final: &[u8]) -> Result<(), ScramError> {
        let State::SentFinal { server_signature } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Err(ScramError::Order);
        };
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::ServerFinal)?;
        if let Some(e) = text.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let v = text
            .split(',')
            .next()
            .and_then(|p| p.strip_prefix("v="))
            .ok_or(ScramError::ServerFinal)?;
        let got = STANDARD.decode(v).map_err(|_| ScramError::ServerFinal)?;
        if bool::from(got.ct_eq(&server_signature)) {
            Ok(())
        } else {
            Err(ScramError::Signature)
        }
    }

    /// Whether the client-final message went out and the server's
    /// signature is still to be checked.
    pub fn awaits_server_final(&self) -> bool {
        matches!(self.state, State::SentFinal { .. })
    }
}

/// RFC 5802 §5.1 `saslname`: `=` and `,` escaped.
fn saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::sasl::SaslError;
    use crate::auth::scram::{ScramKeys, ScramServer};

    fn exchange(client_password: &str, server_password: &str, tamper: bool) -> Result<(), String> {
        let cache = SaltedCache::default();
        let keys = ScramKeys::derive(ScramHash::Sha256, server_password, b"pepper-salt", 4096);
        let mut server = ScramServer::new(ScramHash::Sha256);
        let mut client = ScramClient::new(ScramHash::Sha256, "user,1=x", client_password);
        let first = server
            .client_first(&client.client_first())
            .map_err(|e| e.to_string())?;
        assert_eq!(first.username, "user,1=x", "saslname escapes round-trip");
        let sf = server.server_first(&keys);
        let cf = client
            .client_final(&sf, &cache)
            .map_err(|e| e.to_string())?;
        assert!(client.awaits_server_final());
        let mut fin = server.client_final(&cf).map_err(|e| e.to_string())?;
        assert!(server.is_done());
        if tamper {
            fin = b"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_vec();
        }
        client.verify_server_final(&fin).map_err(|e| e.to_string())
    }

    #[test]
    fn against_petrels_server_side() {
        exchange("secret", "secret", false).unwrap();
        let e = exchange("wrong", "secret", false).unwrap_err();
        assert_eq!(e, SaslError::NotAuthorized.to_string());
        let e = exchange("secret", "secret", true).unwrap_err();
        assert_eq!(e, ScramError::Signature.to_string());
    }

    #[test]
    fn rfc7677_vector() {
        // RFC 7677 §3: user "user", password "pencil".
        let mut c = ScramClient::new(ScramHash::Sha256, "user", "pencil");
        let first = c.client_first_with_nonce("rOprNGfwEbeRWgbNEkqO".into());
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let sf = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let cf = c.client_final(sf, &SaltedCache::default()).unwrap();
        assert_eq!(
            String::from_utf8(cf).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server_final(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
    }

    #[test]
    fn refuses_bad_server_messages() {
        let cache = SaltedCache::default();
        let start = |c: &mut ScramClient| c.client_first_with_nonce("abc".into());
        let mut c = ScramClient::new(ScramHash::Sha256, "u", "p");
        start(&mut c);
        assert_eq!(
            c.client_final(b"r=xyzdef,s=AAAA,i=4096", &cache),
            Err(ScramError::Nonce)
        );
        start(&mut c);
        assert_eq!(
            c.client_final(b"r=abc,s=AAAA,i=4096", &cache),
            Err(ScramError::Nonce),
            "the server must add to the nonce"
        );
        start(&mut c);
        assert_eq!(
            c.client_final(b"r=abcdef,s=AAAA,i=99999999", &cache),
            Err(ScramError::Iterations(99_999_999))
        );
        start(&mut c);
        assert!(matches!(
            c.client_final(b"r=abcdef,i=4096", &cache),
            Err(ScramError::ServerFirst(_))
        ));
        start(&mut c);
        assert_eq!(
            c.client_final(b"e=unknown-user", &cache),
            Err(ScramError::ServerError("unknown-user".into()))
        );
        assert_eq!(c.verify_server_final(b"v=AAAA"), Err(ScramError::Order));
    }
}
