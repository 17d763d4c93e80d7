//! Record encodings: one version byte, then the postcard encoding of the record.
//!
//! A reader that meets a version it does not know reports the record as corrupt
//! instead of guessing; a new version adds a variant to the decode match.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::StoreError;

/// The version written today for every record kind.
pub const VERSION: u8 = 1;

pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    // postcard only fails on writer errors and unsupported types; a Vec never
    // fails, and every record type is plain data.
    out.extend(postcard::to_allocvec(record).expect("records are plain data"));
    out
}

pub fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|_| StoreError::Corrupt { tree })
        }
        _ => Err(StoreError::Corrupt { tree }),
    }
}

/// A stored protocol frame (an MQTT PUBLISH or PUBREL as the broker keeps
/// it for a retained message or a queued delivery).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFrame {
    pub frame: Vec<u8>,
}

/// A server-wide secret kept in the `Meta` tree.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    pub key: [u8; 32],
}

/// The store's layout version, in `Meta` under `layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub version: u32,
}

/// SCRAM keys for one hash function (RFC 5802): what a password becomes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredScram {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

// Hand-written: the keys are as good as the password to a guesser.
impl std::fmt::Debug for StoredScram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoredScram({} rounds, keys hidden)", self.iterations)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub scram_sha1: StoredScram,
    pub scram_sha256: StoredScram,
    pub created_at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientGrant {
    Password,
    Implicit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub name: String,
    pub grant: ClientGrant,
    pub redirect_uri: Option<String>,
    /// Hashed like a password; `None` for implicit clients, which have no secret.
    pub secret: Option<StoredScram>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Bare JID of the owner.
    pub owner: String,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub issued_at: u64,
    pub expires_at: u64,
    /// Kept until expiry so that a revoked token is reported as revoked.
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SCRAM keys are as good as a password to a guesser: never printed.
    #[test]
    fn scram_keys_are_not_printed() {
        let k = StoredScram {
            salt: vec![0xAB; 16],
            iterations: 4096,
            stored_key: vec![0xCD; 32],
            server_key: vec![0xEF; 32],
        };
        let shown = format!("{k:?} {k:#?}");
        for secret in ["cd", "CD", "205", "ef", "EF", "239"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("4096"), "{shown}");
    }

    #[test]
    fn round_trip_and_unknown_version() {
        let t = TokenRecord {
            owner: "a@x".into(),
            scopes: vec!["sasl_auth".into()],
            client_id: None,
            issued_at: 1,
            expires_at: 2,
            revoked: false,
        };
        let bytes = encode(&t);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<TokenRecord>("tokens", &bytes).unwrap(), t);
        let mut other = bytes.clone();
        other[0] = 99;
        assert!(decode::<TokenRecord>("tokens", &other).is_err());
        assert!(decode::<TokenRecord>("tokens", &[]).is_err());
        assert!(decode::<TokenRecord>("tokens", &bytes[..3]).is_err());
    }
}
