//! OAuth tokens: issue, check, list, revoke, expire.
//!
//! A token is 32 bytes from the OS CSPRNG, base64url without padding (43
//! characters, 256 bits). The store keeps only SHA-256(token) as the key of the
//! `Tokens` tree, plus an entry `expires_at ++ hash` in `TokenExpiry` that the
//! sweeper walks. Every live token is also held in memory, keyed by its hash, so a
//! login checks a token without touching disk. A token's *id*, which
//! `oauth_list_tokens` shows and `oauth_revoke_token` accepts, is the first 8
//! bytes of the hash in hex: it names the token without revealing it.
//!
//! Sessions learn that their token died through [`super::AuthEvents`]: a
//! revocation is announced at once, an expiry at its deadline — the expiry
//! task ([`AuthCore::run_expiry`]) sleeps until the earliest one, woken early
//! when a token that expires sooner is issued. Nothing polls the sessions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scopes::{Protocol, Scopes, SASL_AUTH};
use super::{now, random_bytes, AuthCore, AuthError, BareJid};
use crate::store::records::{self, TokenGrant, TokenKind, TokenRecord};
use crate::store::{StoreError, Tree};

pub(super) const ID_BYTES: usize = 8;

/// Why a token stopped working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenEnd {
    Expired,
    Revoked,
}

/// Why a presented token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("unknown token")]
    Unknown,
    #[error("token expired")]
    Expired,
    #[error("token revoked")]
    Revoked,
    #[error("token belongs to another user")]
    WrongOwner,
    #[error("token lacks scope {0}")]
    MissingScope(String),
    /// A client-credentials token, whose principal is a client, not an
    /// account, presented for an XMPP login.
    #[error("a client's own token (client credentials) has no XMPP account")]
    ServicePrincipal,
}

/// One token in memory: its record and whether it has ended.
pub struct LiveToken {
    pub(super) hash: [u8; 32],
    pub(super) record: TokenRecord,
    pub(super) owner: BareJid,
    scopes: Scopes,
    pub(super) revoked: AtomicBool,
    /// Set by the expiry task when the deadline passed.
    expired: AtomicBool,
    /// A refresh token exchanged once: set by the one exchange that wins.
    pub(super) rotated: AtomicBool,
}

impl LiveToken {
    pub(super) fn new(hash: [u8; 32], record: TokenRecord) -> Option<LiveToken> {
        let owner = BareJid::parse(&record.owner).ok()?;
        let scopes = Scopes::from_stored(record.scopes.clone());
        Some(LiveToken {
            hash,
            owner,
            scopes,
            revoked: AtomicBool::new(record.revoked),
            expired: AtomicBool::new(false),
            rotated: AtomicBool::new(record.rotated),
            record,
        })
    }

    pub fn id(&self) -> String {
        hex::encode(&self.hash[..ID_BYTES])
    }

    /// The id as a number: what sessions are indexed by.
    pub fn key(&self) -> u64 {
        key_of(&self.hash)
    }
}

fn key_of(hash: &[u8; 32]) -> u64 {
    u64::from_be_bytes(hash[..ID_BYTES].try_into().expect("8 bytes"))
}

/// What a successful token check returns: who, with which scopes, until when.
#[derive(Clone)]
pub struct Grant {
    live: Arc<LiveToken>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself; the id is safe to log.
        f.debug_struct("Grant")
            .field("id", &self.token_id())
            .field("owner", &self.live.record.owner)
            .finish()
    }
}

impl Grant {
    pub(super) fn of(live: Arc<LiveToken>) -> Grant {
        Grant { live }
    }

    pub(super) fn live(&self) -> &Arc<LiveToken> {
        &self.live
    }

    pub fn owner(&self) -> &BareJid {
        &self.live.owner
    }

    pub fn scopes(&self) -> &Scopes {
        &self.live.scopes
    }

    pub fn token_id(&self) -> String {
        self.live.id()
    }

    pub fn expires_at(&self) -> u64 {
        self.live.record.expires_at
    }

    /// The token's id as a number (the session registry's token index).
    pub fn key(&self) -> u64 {
        self.live.key()
    }

    /// Whether the token has ended: revoked, or expired (as the expiry task
    /// found at its deadline).
    pub fn end(&self) -> Option<TokenEnd> {
        if self.live.revoked.load(Ordering::Acquire) {
            Some(TokenEnd::Revoked)
        } else if self.live.expired.load(Ordering::Acquire) {
            Some(TokenEnd::Expired)
        } else {
            None
        }
    }
}

/// A freshly issued token: the only moment its text exists on the server.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub id: String,
    pub owner: BareJid,
    pub scopes: Scopes,
    pub expires_in: u64,
    pub expires_at: u64,
    /// The refresh token issued with it, if the client may have one.
    pub refresh: Option<IssuedRefresh>,
    /// The authorization the tokens belong to.
    pub family: [u8; 16],
}

/// A refresh token as issued (its text exists only here, like a token's).
#[derive(Clone)]
pub struct IssuedRefresh {
    pub token: String,
    pub id: String,
    pub expires_at: u64,
}

impl std::fmt::Debug for IssuedRefresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedRefresh")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What to issue: an access token for `owner` (and a refresh token when
/// `refresh`), in `family` or a new one.
#[derive(Debug, Clone)]
pub struct TokenSpec<'a> {
    pub owner: &'a BareJid,
    pub scopes: Scopes,
    /// Seconds asked for, capped at `oauth_expire`; absent: `oauth_expire`,
    /// or `oauth_expire_with_refresh` when a refresh token comes along and
    /// for a client's own (client credentials) token.
    pub ttl: Option<u64>,
    pub client_id: Option<&'a str>,
    pub grant: TokenGrant,
    pub refresh: bool,
    /// The refresh token's scopes when they differ from the access
    /// token's (a refresh that narrows: the chain keeps what was granted).
    pub refresh_scopes: Option<Scopes>,
    pub family: Option<[u8; 16]>,
}

impl<'a> TokenSpec<'a> {
    /// An access token alone, as the password grant and `ctl` issue it.
    pub fn access(
        owner: &'a BareJid,
        scopes: Scopes,
        ttl: Option<u64>,
        client_id: Option<&'a str>,
        grant: TokenGrant,
    ) -> TokenSpec<'a> {
        TokenSpec {
            owner,
            scopes,
            ttl,
            client_id,
            grant,
            refresh: false,
            refresh_scopes: None,
            family: None,
        }
    }
}

// Hand-written so that the token itself never reaches a log.
impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A token as `oauth_list_tokens` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub owner: String,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub expires_at: u64,
    pub revoked: bool,
    pub kind: TokenKind,
    pub grant: TokenGrant,
}

/// A live token as RFC 7662 introspection describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Introspection {
    pub owner: String,
    pub scopes: Scopes,
    pub client_id: Option<String>,
    pub issued_at: u64,
    pub expires_at: u64,
    pub kind: TokenKind,
    pub id: String,
}

pub(super) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn expiry_key(expires_at: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut k = expires_at.to_be_bytes().to_vec();
    k.extend_from_slice(hash);
    k
}

impl AuthCore {
    pub(super) fn load_tokens(&self) -> Result<(), StoreError> {
        for (k, v) in self.store.scan_prefix_blocking(Tree::Tokens, b"")? {
            let Ok(hash) = <[u8; 32]>::try_from(k.as_slice()) else {
                continue;
            };
            // One unreadable record must not keep the server from starting:
            // skipped (that token no longer works) and logged.
            let rec: TokenRecord = match records::decode_token(&v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "skipping a stored token");
                    continue;
                }
            };
            // Re-create a missing expiry entry so the sweeper always finds it.
            self.store.put(
                Tree::TokenExpiry,
                expiry_key(rec.expires_at, &hash),
                Vec::new(),
            );
            if let Some(live) = LiveToken::new(hash, rec) {
                self.track_expiry(live.record.expires_at, hash);
                let live = Arc::new(live);
                self.index_fast(&live);
                self.tokens.insert(hash, live);
            }
        }
        Ok(())
    }

    /// Issues a token for `owner`, durable on return. `ttl` is capped at `oauth_expire`.
    pub fn issue_token(
        &self,
        owner: &BareJid,
        scopes: Scopes,
        ttl: Option<u64>,
        client_id: Option<&str>,
    ) -> Result<IssuedToken, AuthError> {
        self.issue(TokenSpec::access(
            owner,
            scopes,
            ttl,
            client_id,
            TokenGrant::Ctl,
        ))
    }

    /// Issues what `spec` asks for, durable on return: an access token,
    /// and a refresh token beside it when `spec.refresh`.
    pub fn issue(&self, spec: TokenSpec<'_>) -> Result<IssuedToken, AuthError> {
        let owner = spec.owner;
        self.check_host(owner)?;
        if spec.ttl == Some(0) {
            return Err(AuthError::BadTtl);
        }
        // Tokens only for accounts that exist; a client's own tokens only
        // for a name no account holds.
        let account = self.user_exists(owner)?;
        if spec.grant == TokenGrant::ClientCredentials {
            if account {
                return Err(AuthError::ServiceNameTaken(owner.to_string()));
            }
        } else if !account {
            return Err(AuthError::NoSuchUser(owner.to_string()));
        }
        // With a refresh token the default is short (it renews); a
        // lifetime asked for explicitly (`ttl`, ejabberd's) is granted up
        // to `oauth_expire` either way.
        // A client's own token is short too: the client simply asks again.
        let default = if spec.refresh || spec.grant == TokenGrant::ClientCredentials {
            self.oauth_expire.min(self.oauth_expire_with_refresh)
        } else {
            self.oauth_expire
        };
        let expires_in = spec.ttl.unwrap_or(default).min(self.oauth_expire);
        let family = spec.family.unwrap_or_else(random_bytes::<16>);
        let issued_at = now();
        let record = |kind, expires_at, scopes: &Scopes| TokenRecord {
            owner: owner.to_string(),
            scopes: scopes.clone().into_vec(),
            client_id: spec.client_id.map(str::to_string),
            issued_at,
            expires_at,
            revoked: false,
            kind,
            grant: spec.grant,
            family: Some(family),
            rotated: false,
            fast: None,
        };
        let (token, access) = self.put_token(record(
            TokenKind::Access,
            issued_at.saturating_add(expires_in),
            &spec.scopes,
        ));
        let refresh = if spec.refresh {
            let (token, live) = self.put_token(record(
                TokenKind::Refresh,
                issued_at.saturating_add(self.oauth_refresh_expire),
                spec.refresh_scopes.as_ref().unwrap_or(&spec.scopes),
            ));
            Some((token, live))
        } else {
            None
        };
        self.store.barrier_blocking()?;
        let expires_at = access.record.expires_at;
        let id = access.id();
        let mut tracked = vec![self.track(access)];
        let refresh = refresh.map(|(token, live)| {
            let r = IssuedRefresh {
                token,
                id: live.id(),
                expires_at: live.record.expires_at,
            };
            tracked.push(self.track(live));
            r
        });
        // A revocation of the family, a removal of the client, or (for a
        // client's own token) an account taking the principal's name, that
        // ran while these were being stored could not see them: they go
        // the same way now.
        let client_gone = spec.client_id.is_some_and(|c| self.client_removed(c));
        let name_taken = spec.grant == TokenGrant::ClientCredentials && self.user_exists(owner)?;
        if self.revoked_families.contains_key(&family) || client_gone || name_taken {
            for live in tracked {
                self.revoke_live(&live);
            }
            self.store.barrier_blocking()?;
            return Err(if client_gone {
                AuthError::NoSuchClient(spec.client_id.unwrap_or_default().to_string())
            } else if name_taken {
                AuthError::ServiceNameTaken(owner.to_string())
            } else {
                AuthError::FamilyRevoked
            });
        }
        Ok(IssuedToken {
            token,
            id,
            owner: owner.clone(),
            scopes: spec.scopes,
            expires_in,
            expires_at,
            refresh,
            family,
        })
    }

    /// A new random token with `rec`, queued for the store (the caller
    /// waits for the barrier, then [`Self::track`]s it).
    fn put_token(&self, rec: TokenRecord) -> (String, LiveToken) {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        self.put_token_text(token, rec)
    }

    /// [`Self::put_token`] for a token whose text the caller made.
    pub(super) fn put_token_text(&self, token: String, rec: TokenRecord) -> (String, LiveToken) {
        let hash = hash_token(&token);
        self.store
            .put(Tree::Tokens, hash, records::encode_token(&rec));
        self.store.put(
            Tree::TokenExpiry,
            expiry_key(rec.expires_at, &hash),
            Vec::new(),
        );
        (
            token,
            LiveToken::new(hash, rec).expect("owner is a valid JID"),
        )
    }

    /// Makes a stored token known to checks and to the expiry task, and
    /// writes its audit line (target `petrel::audit`: id, owner, kind,
    /// grant, client; never the token).
    pub(super) fn track(&self, live: LiveToken) -> Arc<LiveToken> {
        tracing::info!(
            target: "petrel::audit",
            token = %live.id(),
            owner = %live.owner,
            kind = ?live.record.kind,
            grant = live.record.grant.name(),
            client = live.record.client_id.as_deref().unwrap_or("-"),
            expires_at = live.record.expires_at,
            "token issued"
        );
        crate::metrics::metrics().token_issued(live.record.grant.name());
        let (expires_at, hash) = (live.record.expires_at, live.hash);
        let live = Arc::new(live);
        self.tokens.insert(hash, live.clone());
        self.track_expiry(expires_at, hash);
        live
    }

    /// The one token check both protocols call. `claimed` is the identity the client
    /// asserted, if any; it must be the token's owner. `scope` must be granted.
    pub fn check_token(
        &self,
        token: &str,
        claimed: Option<&BareJid>,
        scope: &str,
    ) -> Result<Grant, TokenError> {
        let live = self.live_token(token, claimed)?;
        if !live.scopes.has(scope) {
            return Err(TokenError::MissingScope(scope.to_string()));
        }
        Ok(Grant { live })
    }

    /// A login check over `protocol`: the token must carry `sasl_auth` or
    /// the protocol's own scope; a client's own token (client credentials)
    /// has no XMPP account and logs in over MQTT only.
    pub fn check_login_token(
        &self,
        token: &str,
        claimed: Option<&BareJid>,
        protocol: Protocol,
    ) -> Result<Grant, TokenError> {
        let live = self.live_token(token, claimed)?;
        if !live.scopes.logs_into(protocol) {
            let wanted = format!("{SASL_AUTH} or {}", protocol.name());
            return Err(TokenError::MissingScope(wanted));
        }
        if protocol == Protocol::Xmpp && live.record.grant == TokenGrant::ClientCredentials {
            return Err(TokenError::ServicePrincipal);
        }
        Ok(Grant { live })
    }

    /// A live access token: known, neither revoked nor expired, and
    /// `claimed`'s if a claim was made.
    fn live_token(
        &self,
        token: &str,
        claimed: Option<&BareJid>,
    ) -> Result<Arc<LiveToken>, TokenError> {
        let hash = hash_token(token);
        let live = self
            .tokens
            .get(&hash)
            .map(|e| Arc::clone(e.value()))
            .ok_or(TokenError::Unknown)?;
        // The map lookup is by hash, so its timing says nothing about the token's
        // text; this comparison makes the match itself constant-time as well.
        // A refresh token is for the token endpoint only, never a login.
        // A FAST token works with its own mechanism only (XEP-0484 §4).
        if !bool::from(live.hash.ct_eq(&hash))
            || live.record.kind == TokenKind::Refresh
            || live.record.fast.is_some()
        {
            return Err(TokenError::Unknown);
        }
        if live.revoked.load(Ordering::Acquire) {
            return Err(TokenError::Revoked);
        }
        if now() >= live.record.expires_at {
            return Err(TokenError::Expired);
        }
        if let Some(c) = claimed {
            if *c != live.owner {
                return Err(TokenError::WrongOwner);
            }
        }
        Ok(live)
    }

    /// Tokens that are neither expired nor revoked, oldest expiry first.
    pub fn list_tokens(&self) -> Vec<TokenInfo> {
        let t = now();
        let mut out: Vec<TokenInfo> = self
            .tokens
            .iter()
            .filter(|e| !e.revoked.load(Ordering::Acquire) && e.record.expires_at > t)
            .map(|e| TokenInfo {
                id: e.id(),
                owner: e.record.owner.clone(),
                scopes: e.record.scopes.clone(),
                client_id: e.record.client_id.clone(),
                expires_at: e.record.expires_at,
                revoked: false,
                kind: e.record.kind,
                grant: e.record.grant,
            })
            .collect();
        out.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        out
    }

    /// Finds the token named by its text or by its id.
    pub(super) fn find(&self, token_or_id: &str) -> Option<Arc<LiveToken>> {
        if token_or_id.len() == ID_BYTES * 2 {
            if let Ok(prefix) = hex::decode(token_or_id) {
                if let Some(e) = self
                    .tokens
                    .iter()
                    .find(|e| e.key()[..ID_BYTES] == prefix[..])
                {
                    return Some(Arc::clone(e.value()));
                }
            }
        }
        self.tokens
            .get(&hash_token(token_or_id))
            .map(|e| Arc::clone(e.value()))
    }

    /// RFC 7662: what a live token (given by its text) is, or `None` when
    /// it is unknown, expired, revoked or a spent refresh token.
    pub fn introspect(&self, token: &str) -> Option<Introspection> {
        let hash = hash_token(token);
        let live = self.tokens.get(&hash).map(|e| Arc::clone(e.value()))?;
        let alive = bool::from(live.hash.ct_eq(&hash))
            && !live.revoked.load(Ordering::Acquire)
            && !live.rotated.load(Ordering::Acquire)
            // A FAST token is no bearer token: nobody may take it as one.
            && live.record.fast.is_none()
            && now() < live.record.expires_at;
        alive.then(|| Introspection {
            owner: live.record.owner.clone(),
            scopes: Scopes::from_stored(live.record.scopes.clone()),
            client_id: live.record.client_id.clone(),
            issued_at: live.record.issued_at,
            expires_at: live.record.expires_at,
            kind: live.record.kind,
            id: live.id(),
        })
    }

    /// The client a token (given by its text) was issued to, if it is known here.
    pub fn token_client(&self, token: &str) -> Option<Option<String>> {
        self.tokens
            .get(&hash_token(token))
            .filter(|e| !e.revoked.load(Ordering::Acquire) && now() < e.record.expires_at)
            .map(|e| e.record.client_id.clone())
    }

    pub(super) fn track_expiry(&self, expires_at: u64, hash: [u8; 32]) {
        let earliest = {
            let mut q = self.expiries.lock().unwrap_or_else(|p| p.into_inner());
            q.insert((expires_at, hash));
            q.first() == Some(&(expires_at, hash))
        };
        if earliest {
            // The expiry task sleeps until an older deadline: wake it.
            self.expiry_changed.notify_one();
        }
    }

    /// The earliest expiry still to come (Unix seconds).
    fn next_expiry(&self) -> Option<u64> {
        self.expiries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|(t, _)| *t)
    }

    /// Ends every token whose time is up at `at` (Unix seconds): forgotten
    /// here and in the store, and announced to the sessions holding it.
    /// Returns how many. Never blocks (store writes are queued).
    pub fn sweep_expired(&self, at: u64) -> usize {
        let mut n = 0;
        loop {
            let due = {
                let mut q = self.expiries.lock().unwrap_or_else(|p| p.into_inner());
                match q.first() {
                    Some((t, _)) if *t <= at => q.pop_first(),
                    _ => None,
                }
            };
            let Some((expires_at, hash)) = due else {
                return n;
            };
            n += 1;
            self.store.delete(Tree::Tokens, hash);
            self.store
                .delete(Tree::TokenExpiry, expiry_key(expires_at, &hash));
            if let Some((_, live)) = self.tokens.remove(&hash) {
                live.expired.store(true, Ordering::Release);
                crate::metrics::metrics().tokens_expired.inc();
                if !live.revoked.load(Ordering::Acquire) {
                    self.announce_token_end(live.key(), TokenEnd::Expired);
                }
            }
        }
    }

    /// Ends tokens at their deadlines until `shutdown`: sleeps until the
    /// earliest one, woken early when a token that ends sooner is issued.
    pub async fn run_expiry(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let wake = self.expiry_changed.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let now = super::now();
            self.sweep_codes(now);
            self.revoked_families.retain(|_, until| *until > now);
            self.sweep_devices(now.saturating_mul(1000));
            let n = self.sweep_expired(now);
            if n > 0 {
                tracing::info!(count = n, "expired tokens");
            }
            let wait = match self.next_expiry() {
                // Whole seconds: a token expires at the start of its second.
                Some(t) => Duration::from_secs(t.saturating_sub(now).max(1)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
