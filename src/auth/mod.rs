//! The auth core: the only code that knows how credentials work.
//!
//! Passwords become SCRAM-SHA-1 and SCRAM-SHA-256 keys ([`users`]); OAuth clients
//! keep a hashed secret ([`clients`]); tokens are random strings of which only a
//! SHA-256 hash is stored, cached in memory so a login costs no disk read
//! ([`tokens`]). XMPP SASL, MQTT CONNECT/AUTH and the OAuth HTTP routes call
//! [`AuthCore`]; none of them reads the stores' token trees itself.
//!
//! Methods that hash passwords or flush the store block: async callers run them
//! on `spawn_blocking`. Token checks ([`AuthCore::check_token`]) touch memory only.

pub mod clients;
pub mod codes;
pub mod device;
pub mod fast;
pub mod jid;
pub mod login;
pub mod refresh;
mod revoke;
pub mod sasl;
pub mod scopes;
pub mod scram;
mod shared;
pub mod throttle;
pub mod tokens;
pub mod users;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use rand::TryRngCore;

use crate::config::{Config, OauthAccess};
use crate::store::records::{self, StoredKey};
use crate::store::{Store, StoreError, Tree};

pub use jid::BareJid;
pub use login::{Credential, Login, LoginError, LoginRequest, LoginStep, PasswordCheck};
pub use refresh::RefreshError;
pub use scopes::{may, Action, Protocol, Scopes};
pub use tokens::{
    Grant, Introspection, IssuedRefresh, IssuedToken, TokenEnd, TokenError, TokenInfo, TokenSpec,
};

/// PBKDF2 rounds for new SCRAM keys: RFC 7677's minimum, which is what clients expect.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// Errors of the account and client operations (token checks have [`TokenError`]).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("invalid JID: {0}")]
    BadJid(#[from] jid::JidError),
    #[error("host {0} is not served here")]
    UnknownHost(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    #[error("wrong password")]
    BadPassword,
    #[error("password must not be empty")]
    EmptyPassword,
    #[error("client {0} does not exist")]
    NoSuchClient(String),
    #[error("client id must be 1-255 printable characters without spaces")]
    BadClientId,
    #[error("redirect URI must be an absolute http(s) URI without a fragment")]
    BadRedirectUri,
    #[error("{0}")]
    BadScope(#[from] scopes::UnknownScope),
    #[error("{0} may not get tokens (oauth_access)")]
    AccessDenied(String),
    #[error("ttl must be at least 1 second")]
    BadTtl,
    #[error("too many failed attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(std::time::Duration),
    #[error("the authorization was revoked")]
    FamilyRevoked,
    /// The client id cannot name a principal (client credentials).
    #[error("client id {0} names no principal: it must be a valid JID localpart, or a JID of a hosted domain")]
    NoServiceName(String),
    /// An account holds the name of a client's principal.
    #[error("{0} is an account's name, so the client of that name gets no tokens of its own")]
    ServiceNameTaken(String),
    /// A client that may use client credentials holds an account's name.
    #[error("{jid} is the principal of the OAuth client {client}")]
    NameHeldByClient { jid: String, client: String },
    /// Something the operation needs is missing (the FAST key file).
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .expect("the OS random source works");
    b
}

/// Who hears that tokens ended and accounts changed: the session registry,
/// which ends the sessions concerned (in every protocol).
pub trait AuthEvents: Send + Sync {
    /// The token with this key was revoked or reached its expiry.
    fn token_ended(&self, key: u64, end: TokenEnd);
    /// The account was deleted or its password changed.
    fn account_changed(&self, account: &BareJid);
}

/// Passwords, clients, tokens and scopes over one store.
pub struct AuthCore {
    store: Store,
    hosts: Vec<String>,
    oauth_expire: u64,
    oauth_expire_with_refresh: u64,
    oauth_refresh_expire: u64,
    /// Authorization codes waiting for their exchange, by SHA-256.
    codes: DashMap<[u8; 32], codes::CodeEntry>,
    /// Token families revoked, until their tokens could no longer live.
    revoked_families: DashMap<[u8; 16], u64>,
    /// Clients being or having been removed (until re-added): a token
    /// issued to one while it was removed is revoked at once.
    removed_clients: DashMap<String, ()>,
    code_expire: u64,
    max_pending_codes: usize,
    /// Device authorizations (RFC 8628), by SHA-256 of the device code,
    /// and their user codes.
    devices: DashMap<[u8; 32], device::DeviceEntry>,
    user_codes: DashMap<String, [u8; 32]>,
    /// Pending device authorizations per address (IPv6 by its /64).
    device_peers: DashMap<std::net::IpAddr, u32>,
    max_devices_per_ip: u32,
    device_expire: u64,
    device_interval: u64,
    access: OauthAccess,
    /// Every live token by SHA-256 of its text: the login path's only lookup.
    tokens: DashMap<[u8; 32], Arc<tokens::LiveToken>>,
    /// Other nodes share the store: tokens they issued are looked up.
    shared_store: std::sync::atomic::AtomicBool,
    /// Every live token by expiry, for the expiry task's deadline.
    expiries: Mutex<BTreeSet<(u64, [u8; 32])>>,
    /// Wakes the expiry task when an earlier deadline arrives.
    expiry_changed: tokio::sync::Notify,
    /// Where token ends and account changes are announced.
    events: OnceLock<Arc<dyn AuthEvents>>,
    /// The brake on guessing, shared by every secret check.
    throttle: Arc<throttle::Throttle>,
    /// Bounds the password hashes running at once.
    hashing: throttle::HashGate,
    /// The same bound for async callers, taken before they hand a hash to
    /// a blocking thread: waiting logins wait as tasks, not as parked
    /// blocking threads (which the store and admin commands need too).
    hash_slots: Arc<tokio::sync::Semaphore>,
    /// A per-server random key (kept in the store): fake SCRAM salts for unknown
    /// users, and the key that signs anti-CSRF values of the sign-in page.
    server_key: [u8; 32],
    /// XEP-0484 FAST tokens: the key that derives them, their index.
    fast: fast::FastState,
}

impl AuthCore {
    /// Opens the auth core over `store`, loading every token into memory.
    /// Blocking (store reads): call it from `spawn_blocking` or outside a runtime.
    pub fn new(store: Store, config: &Config) -> Result<AuthCore, AuthError> {
        let server_key = match store.get_blocking(Tree::Meta, b"server_key")? {
            Some(k) if records::decode::<StoredKey>("meta", &k).is_ok() => {
                records::decode::<StoredKey>("meta", &k)?.key
            }
            // Missing, or unreadable (then logged): a new one. It only
            // salts fake SCRAM keys and signs sign-in forms in flight.
            found => {
                if found.is_some() {
                    tracing::error!("the stored server key is corrupt; making a new one");
                }
                let key = random_bytes::<32>();
                store.put(
                    Tree::Meta,
                    "server_key",
                    records::encode(&StoredKey { key }),
                );
                store.barrier_blocking()?;
                key
            }
        };
        let core = AuthCore {
            store,
            hosts: config.hosts.clone(),
            oauth_expire: config.oauth_expire,
            oauth_expire_with_refresh: config.oauth_expire_with_refresh,
            oauth_refresh_expire: config.oauth_refresh_expire,
            codes: DashMap::new(),
            revoked_families: DashMap::new(),
            removed_clients: DashMap::new(),
            code_expire: config.oauth_code_expire,
            max_pending_codes: config.oauth_max_pending_codes,
            devices: DashMap::new(),
            user_codes: DashMap::new(),
            device_peers: DashMap::new(),
            max_devices_per_ip: config.oauth_max_device_codes_per_ip,
            device_expire: config.oauth_device_code_expire,
            device_interval: config.oauth_device_interval,
            access: config.oauth_access.clone(),
            tokens: DashMap::new(),
            shared_store: Default::default(),
            expiries: Mutex::new(BTreeSet::new()),
            expiry_changed: tokio::sync::Notify::new(),
            events: OnceLock::new(),
            throttle: Arc::new(throttle::Throttle::new(throttle::ThrottleConfig {
                failures_allowed: config.login_failures_allowed,
                window: config.login_failure_window,
                backoff_max: config.login_backoff_max,
            })),
            hashing: throttle::HashGate::new(config.password_hash_concurrency),
            hash_slots: Arc::new(tokio::sync::Semaphore::new(
                config.password_hash_concurrency.max(1),
            )),
            server_key,
            fast: fast::FastState::new(config),
        };
        core.load_tokens()?;
        Ok(core)
    }

    /// Sets who hears token ends and account changes (once, at start).
    pub fn set_events(&self, events: Arc<dyn AuthEvents>) {
        let _ = self.events.set(events);
    }

    pub(crate) fn announce_token_end(&self, key: u64, end: TokenEnd) {
        if let Some(e) = self.events.get() {
            e.token_ended(key, end);
        }
    }

    pub(crate) fn announce_account_change(&self, account: &BareJid) {
        if let Some(e) = self.events.get() {
            e.account_changed(account);
        }
    }

    /// A place among the password hashes running at once, for async code
    /// about to run one on a blocking thread (see `password_hash_concurrency`).
    pub async fn hash_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.hash_slots
            .clone()
            .acquire_owned()
            .await
            .expect("the hash semaphore is never closed")
    }

    /// Begins a secret check by `peer` for `account` (see
    /// [`throttle::Throttle::begin`]); `Err(retry after)` when refused.
    pub fn begin_check(
        &self,
        peer: Option<std::net::IpAddr>,
        account: Option<&str>,
    ) -> Result<throttle::Ticket, std::time::Duration> {
        self.throttle.begin(peer, account, now())
    }

    /// Runs a password hash under the concurrency bound.
    pub(crate) fn hash<T>(&self, f: impl FnOnce() -> T) -> T {
        self.hashing.run(f)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    pub fn oauth_expire(&self) -> u64 {
        self.oauth_expire
    }

    pub fn server_key(&self) -> &[u8; 32] {
        &self.server_key
    }

    /// Resolves a user named by bare JID or by localpart of `default_domain`,
    /// refusing domains this server does not host.
    pub fn resolve_user(&self, user: &str, default_domain: &str) -> Result<BareJid, AuthError> {
        let jid = BareJid::from_user(user, default_domain)?;
        self.check_host(&jid)?;
        Ok(jid)
    }

    fn check_host(&self, jid: &BareJid) -> Result<(), AuthError> {
        if self.hosts.iter().any(|h| h == jid.domain()) {
            Ok(())
        } else {
            Err(AuthError::UnknownHost(jid.domain().to_string()))
        }
    }

    /// Whether `oauth_access` lets this account get tokens.
    pub fn may_get_tokens(&self, jid: &BareJid) -> bool {
        match &self.access {
            OauthAccess::All => true,
            OauthAccess::Only(list) => list.contains(&jid.to_string()),
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// An auth core over a fresh in-memory store (the guard keeps a temp
    /// dir for callers that want one beside it).
    pub fn core(config: &Config) -> (AuthCore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..config.clone()
        };
        (AuthCore::new(Store::memory(), &config).unwrap(), dir)
    }
}
