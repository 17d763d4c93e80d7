//! SCRAM key derivation (RFC 5802). Placeholder until the SASL exchange lands.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn hmac_sha1(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

impl ScramKeys {
    pub fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> ScramKeys {
        let (stored_key, server_key) = match hash {
            ScramHash::Sha1 => {
                let mut salted = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password.as_bytes(), salt, iterations, &mut salted);
                let client_key = hmac_sha1(&salted, b"Client Key");
                (
                    Sha1::digest(&client_key).to_vec(),
                    hmac_sha1(&salted, b"Server Key"),
                )
            }
            ScramHash::Sha256 => {
                let mut salted = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut salted);
                let client_key = hmac_sha256(&salted, b"Client Key");
                (
                    Sha256::digest(&client_key).to_vec(),
                    hmac_sha256(&salted, b"Server Key"),
                )
            }
        };
        ScramKeys {
            salt: salt.to_vec(),
            iterations,
            stored_key,
            server_key,
        }
    }

    pub fn verify_password(&self, hash: ScramHash, password: &str) -> bool {
        let other = ScramKeys::derive(hash, password, &self.salt, self.iterations);
        other.stored_key.ct_eq(&self.stored_key).into()
    }
}
