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
    /// `oauth_add_client_password`: password and refresh grants,
    /// authenticated by its secret.
    Password,
    /// `oauth_add_client_implicit`: the implicit grant's sign-in page.
    Implicit,
    /// `oauth_add_client_public`: no secret; authorization code with PKCE
    /// (required) and the device grant, refresh tokens.
    Public,
    /// `oauth_add_client_confidential`: a secret and a redirect URI;
    /// authorization code and refresh grants.
    Confidential,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub name: String,
    pub grant: ClientGrant,
    pub redirect_uri: Option<String>,
    /// Hashed like a password; `None` for implicit and public clients,
    /// which have no secret.
    pub secret: Option<StoredScram>,
}

/// What a token is for: logging in (access) or getting new tokens (refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenKind {
    #[default]
    Access,
    Refresh,
}

/// How a token was obtained (shown in listings and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TokenGrant {
    /// `petrel ctl oauth_issue_token` (and tokens stored before grants were recorded).
    #[default]
    Ctl,
    Password,
    Implicit,
    AuthorizationCode,
    RefreshToken,
    DeviceCode,
    ClientCredentials,
    /// XEP-0484 FAST: a token a client asked for in its SASL2 login, for
    /// its next logins (`HT-SHA-256-*`).
    Fast,
}

impl TokenGrant {
    /// The RFC name of the grant (`ctl` for tokens issued by the admin).
    pub fn name(self) -> &'static str {
        match self {
            TokenGrant::Ctl => "ctl",
            TokenGrant::Password => "password",
            TokenGrant::Implicit => "implicit",
            TokenGrant::AuthorizationCode => "authorization_code",
            TokenGrant::RefreshToken => "refresh_token",
            TokenGrant::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            TokenGrant::ClientCredentials => "client_credentials",
            TokenGrant::Fast => "fast",
        }
    }
}

/// A token (stored version 2: version 1 lacked everything after `revoked`).
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
    pub kind: TokenKind,
    pub grant: TokenGrant,
    /// The tokens of one authorization (a refresh chain and the access
    /// tokens it gave) share a family: a replayed refresh token or
    /// authorization code revokes them all.
    pub family: Option<[u8; 16]>,
    /// A refresh token already exchanged for new ones: kept until its
    /// expiry, so that presenting it again is seen as a replay.
    pub rotated: bool,
    /// A XEP-0484 FAST token: what it is bound to and what derives its text.
    pub fast: Option<FastBinding>,
}

/// What binds a FAST token (XEP-0484) and lets the server derive its text
/// again (the `HT-*` mechanisms key an HMAC with the token itself, so the
/// server needs it at login; it keeps only this nonce, and the token is
/// HMAC(fast key, nonce) with a key kept outside the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastBinding {
    /// The SASL2 `<user-agent id>` of the client installation.
    pub agent: String,
    /// The mechanism the token was requested for (it works with no other).
    pub mechanism: String,
    pub nonce: [u8; 16],
    /// The expiry of the OAuth token whose login asked for it (inherited
    /// by its successors): a FAST token never outlives what got it.
    pub not_after: Option<u64>,
}

/// Version 2 of [`TokenRecord`], as stored before FAST tokens.
#[derive(Serialize, Deserialize)]
struct TokenRecordV2 {
    owner: String,
    scopes: Vec<String>,
    client_id: Option<String>,
    issued_at: u64,
    expires_at: u64,
    revoked: bool,
    kind: TokenKind,
    grant: TokenGrant,
    family: Option<[u8; 16]>,
    rotated: bool,
}

/// Version 1 of [`TokenRecord`], as stored before refresh tokens.
#[derive(Serialize, Deserialize)]
struct TokenRecordV1 {
    owner: String,
    scopes: Vec<String>,
    client_id: Option<String>,
    issued_at: u64,
    expires_at: u64,
    revoked: bool,
}

/// The version [`encode_token`] writes.
pub const TOKEN_VERSION: u8 = 3;

pub fn encode_token(record: &TokenRecord) -> Vec<u8> {
    let mut out = vec![TOKEN_VERSION];
    out.extend(postcard::to_allocvec(record).expect("records are plain data"));
    out
}

/// Reads a token record of either version.
pub fn decode_token(bytes: &[u8]) -> Result<TokenRecord, StoreError> {
    let corrupt = StoreError::Corrupt { tree: "tokens" };
    match bytes.split_first() {
        Some((&TOKEN_VERSION, rest)) => postcard::from_bytes(rest).map_err(|_| corrupt),
        Some((2, rest)) => {
            let v2: TokenRecordV2 = postcard::from_bytes(rest).map_err(|_| corrupt)?;
            Ok(TokenRecord {
                owner: v2.owner,
                scopes: v2.scopes,
                client_id: v2.client_id,
                issued_at: v2.issued_at,
                expires_at: v2.expires_at,
                revoked: v2.revoked,
                kind: v2.kind,
                grant: v2.grant,
                family: v2.family,
                rotated: v2.rotated,
                fast: None,
            })
        }
        Some((&VERSION, rest)) => {
            let v1: TokenRecordV1 = postcard::from_bytes(rest).map_err(|_| corrupt)?;
            Ok(TokenRecord {
                owner: v1.owner,
                scopes: v1.scopes,
                client_id: v1.client_id,
                issued_at: v1.issued_at,
                expires_at: v1.expires_at,
                revoked: v1.revoked,
                kind: TokenKind::Access,
                grant: TokenGrant::Ctl,
                family: None,
                rotated: false,
                fast: None,
            })
        }
        _ => Err(corrupt),
    }
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
        let u = UserRecord {
            scram_sha1: StoredScram {
                salt: vec![1],
                iterations: 2,
                stored_key: vec![3],
                server_key: vec![4],
            },
            scram_sha256: StoredScram {
                salt: vec![5],
                iterations: 6,
                stored_key: vec![7],
                server_key: vec![8],
            },
            created_at: 9,
        };
        let bytes = encode(&u);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<UserRecord>("users", &bytes).unwrap().created_at, 9);
        let mut other = bytes.clone();
        other[0] = 99;
        assert!(decode::<UserRecord>("users", &other).is_err());
        assert!(decode::<UserRecord>("users", &[]).is_err());
        assert!(decode::<UserRecord>("users", &bytes[..3]).is_err());
    }

    /// Tokens stored by an older Petrel (version 1) still read, as access
    /// tokens issued by the admin; version 2 round-trips.
    #[test]
    fn token_records_of_both_versions_read() {
        let v1 = TokenRecordV1 {
            owner: "a@x".into(),
            scopes: vec!["sasl_auth".into()],
            client_id: Some("app".into()),
            issued_at: 1,
            expires_at: 2,
            revoked: true,
        };
        let bytes = encode(&v1);
        let t = decode_token(&bytes).unwrap();
        assert_eq!(
            (
                t.owner.as_str(),
                t.client_id.as_deref(),
                t.expires_at,
                t.revoked
            ),
            ("a@x", Some("app"), 2, true)
        );
        assert_eq!(
            (t.kind, t.grant, t.family, t.rotated),
            (TokenKind::Access, TokenGrant::Ctl, None, false)
        );
        let t2 = TokenRecord {
            kind: TokenKind::Refresh,
            grant: TokenGrant::AuthorizationCode,
            family: Some([7; 16]),
            rotated: true,
            ..t
        };
        let bytes = encode_token(&t2);
        assert_eq!(bytes[0], TOKEN_VERSION);
        assert_eq!(decode_token(&bytes).unwrap(), t2);
        assert!(decode_token(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_token(&[99, 0]).is_err());
        assert!(decode_token(&[]).is_err());
    }
}
