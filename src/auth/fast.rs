//! XEP-0484 FAST tokens: what a client asks for in one SASL2 login to log
//! in with next time in a single round trip (`HT-SHA-256-*`, the Hashed
//! Token mechanisms of draft-schmaus-kitten-sasl-ht).
//!
//! A FAST token is a token of the auth core like any other: stored under the
//! SHA-256 of its text, listed by `oauth_list_tokens` (grant `fast`), revoked
//! by `oauth_revoke_token` and `/oauth/revoke`, and its end ends the sessions
//! that logged in with it. Two things differ:
//!
//! * The HT mechanisms prove knowledge of the token by an HMAC *keyed with
//!   the token*, so the server needs the token itself at login, not a hash.
//!   The store keeps neither: the token is HMAC-SHA-256(fast key, nonce),
//!   the record keeps the nonce, and the fast key is a file of its own
//!   (`<data_dir>/fast.key`, 0600), never in the store. A copy of the store
//!   alone yields no token.
//! * A token is bound to the account, the client installation (the SASL2
//!   `<user-agent id>`) and the mechanism it was asked for, and works with
//!   that mechanism only (never as a bearer token).
//!
//! Rotation (XEP-0484 §4.5): a login with a token that has less than half
//! its life left gets a new one; issuing a token for an installation
//! revokes its others except the one just used, and a login with a token
//! revokes the installation's older ones — so each installation holds at
//! most two: the one in use and the newer one it may not have received.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::scopes::{Protocol, Scopes};
use super::tokens::{Grant, LiveToken};
use super::{now, random_bytes, AuthCore, AuthError, BareJid};
use crate::store::records::{FastBinding, TokenGrant, TokenKind, TokenRecord};

/// The Hashed Token mechanisms served, by channel binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HtMechanism {
    /// `HT-SHA-256-NONE`: no channel binding.
    None,
    /// `HT-SHA-256-EXPR`: RFC 9266 `tls-exporter` (TLS 1.3).
    Exporter,
}

impl HtMechanism {
    pub const ALL: [HtMechanism; 2] = [HtMechanism::Exporter, HtMechanism::None];

    pub fn name(self) -> &'static str {
        match self {
            HtMechanism::None => "HT-SHA-256-NONE",
            HtMechanism::Exporter => "HT-SHA-256-EXPR",
        }
    }

    pub fn from_name(name: &str) -> Option<HtMechanism> {
        HtMechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether it needs channel-binding data from TLS.
    pub fn binds_channel(self) -> bool {
        self == HtMechanism::Exporter
    }
}

/// A FAST token as issued (its text exists only here).
#[derive(Clone)]
pub struct IssuedFast {
    pub token: String,
    pub id: String,
    pub expires_at: u64,
}

impl std::fmt::Debug for IssuedFast {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedFast")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A FAST login that succeeded.
pub struct FastLogin {
    pub grant: Grant,
    /// The server's half: HMAC(token, "Responder" ‖ channel binding), sent
    /// as the SASL2 additional data.
    pub responder: [u8; 32],
    /// The token has less than half its life left: give the client a new one.
    pub rotate: bool,
    /// The installation it is bound to.
    pub agent: String,
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Reads the fast key at `path`, or makes one (32 random bytes, 0600,
/// created whole or not at all, so a server and a `ctl` starting at once
/// agree on one key).
pub(crate) fn load_or_create_key(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let read = |p: &Path| -> std::io::Result<[u8; 32]> {
        let b = std::fs::read(p)?;
        <[u8; 32]>::try_from(b.as_slice()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a 32-byte key", p.display()),
            )
        })
    };
    match read(path) {
        Ok(k) => return Ok(k),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = random_bytes::<32>();
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(random_bytes::<8>())));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&key)?;
    f.sync_all()?;
    drop(f);
    // A hard link fails if the name exists: the first writer wins.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(e) => Err(e),
    }
}

/// The FAST part of the auth core's state.
pub(super) struct FastState {
    key_path: PathBuf,
    key: std::sync::OnceLock<[u8; 32]>,
    /// Serializes the first read (or creation) of the key in this process.
    key_init: std::sync::Mutex<()>,
    /// `fast_token_expire`: seconds a FAST token lives.
    pub(super) expire: u64,
    /// `fast_max_tokens`: FAST tokens one account may hold (its
    /// installations' together); the oldest go first.
    max_tokens: usize,
    /// Each account's FAST tokens by hash (the login's only search).
    by_account: dashmap::DashMap<BareJid, Vec<[u8; 32]>>,
}

impl FastState {
    pub(super) fn new(config: &crate::config::Config) -> FastState {
        FastState {
            key_path: config.data_dir.join(FAST_KEY_FILE),
            key: std::sync::OnceLock::new(),
            key_init: std::sync::Mutex::new(()),
            expire: config.fast_token_expire,
            max_tokens: config.fast_max_tokens.max(1),
            by_account: dashmap::DashMap::new(),
        }
    }
}

/// The fast key's file name in the data directory.
pub const FAST_KEY_FILE: &str = "fast.key";

impl AuthCore {
    /// Reads (or makes) the fast key now. Blocking (a file): the server
    /// calls it at start, so that logins never wait on the file.
    pub fn prepare_fast_key(&self) -> Result<(), AuthError> {
        self.fast_key().map(|_| ())
    }

    /// The fast key, read or made on first use (so cores that never
    /// issue a FAST token never touch the data directory for it).
    fn fast_key(&self) -> Result<[u8; 32], AuthError> {
        if let Some(k) = self.fast.key.get() {
            return Ok(*k);
        }
        let _init = self.fast.key_init.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = self.fast.key.get() {
            return Ok(*k);
        }
        let k = load_or_create_key(&self.fast.key_path).map_err(|e| {
            tracing::error!(error = %e, path = %self.fast.key_path.display(), "the FAST key is unusable");
            AuthError::Unavailable(format!("FAST key: {e}"))
        })?;
        Ok(*self.fast.key.get_or_init(|| k))
    }

    fn fast_text(key: &[u8; 32], nonce: &[u8; 16]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac(key, &[b"petrel fast", nonce]))
    }

    /// Notes a loaded or issued FAST token in the per-account index.
    pub(super) fn index_fast(&self, live: &LiveToken) {
        if live.record.fast.is_some() && !live.revoked.load(Ordering::Acquire) {
            let mut v = self.fast.by_account.entry(live.owner.clone()).or_default();
            if !v.contains(&live.hash) {
                v.push(live.hash);
            }
        }
    }

    /// The account's live FAST tokens (pruning the index of ended ones).
    fn fast_tokens(&self, owner: &BareJid) -> Vec<Arc<LiveToken>> {
        let Some(mut hashes) = self.fast.by_account.get_mut(owner) else {
            return Vec::new();
        };
        let t = now();
        let mut out = Vec::new();
        hashes.retain(|h| match self.tokens.get(h) {
            Some(live) if !live.revoked.load(Ordering::Acquire) && live.record.expires_at > t => {
                out.push(Arc::clone(live.value()));
                true
            }
            _ => false,
        });
        out
    }

    /// Issues a FAST token for `owner` on installation `agent`, for
    /// `mechanism`. It inherits from `parent` — the token of the login that
    /// asked, if any — its scopes (a token never grants more than what got
    /// it), its OAuth client and family (removing the client, or revoking
    /// the authorization, revokes it too) and its expiry as a limit (a FAST
    /// token never outlives the OAuth token it came from); a password
    /// login's token gets `sasl_auth` and `fast_token_expire`. The
    /// installation's other tokens are retired (they log in no more, but
    /// the sessions that used them go on), except the parent when
    /// `keep_parent` (the one in use stays valid until the new one is
    /// used); past `fast_max_tokens` the account's oldest are revoked.
    /// Durable on return; blocking (store barrier).
    pub fn issue_fast(
        &self,
        owner: &BareJid,
        agent: &str,
        mechanism: HtMechanism,
        parent: Option<&Grant>,
        keep_parent: bool,
    ) -> Result<IssuedFast, AuthError> {
        if !self.user_exists(owner)? {
            return Err(AuthError::NoSuchUser(owner.to_string()));
        }
        if !self.may_get_tokens(owner) {
            return Err(AuthError::AccessDenied(owner.to_string()));
        }
        let key = self.fast_key()?;
        let parent = parent.map(|g| Arc::clone(g.live()));
        let keep = parent.as_ref().filter(|_| keep_parent).map(|p| p.hash);
        let mut mine = self.fast_tokens(owner);
        for live in &mine {
            let same_agent = live.record.fast.as_ref().is_some_and(|f| f.agent == agent);
            if same_agent && Some(live.hash) != keep {
                self.retire_fast(live);
            }
        }
        mine.sort_by_key(|l| l.record.issued_at);
        let over = (mine.len() + 1).saturating_sub(self.fast.max_tokens);
        for live in mine.iter().take(over) {
            self.revoke_live(live);
        }
        let issued_at = now();
        let not_after = parent.as_ref().and_then(|p| match &p.record.fast {
            Some(f) => f.not_after,
            None => Some(p.record.expires_at),
        });
        let expires_at = issued_at
            .saturating_add(self.fast.expire)
            .min(not_after.unwrap_or(u64::MAX));
        let scopes = parent.as_ref().map_or_else(Scopes::sasl_auth, |p| {
            Scopes::from_stored(p.record.scopes.clone())
        });
        let client_id = parent.as_ref().and_then(|p| p.record.client_id.clone());
        let family = parent
            .as_ref()
            .and_then(|p| p.record.family)
            .unwrap_or_else(random_bytes::<16>);
        let nonce = random_bytes::<16>();
        let rec = TokenRecord {
            owner: owner.to_string(),
            scopes: scopes.into_vec(),
            client_id: client_id.clone(),
            issued_at,
            expires_at,
            revoked: false,
            kind: TokenKind::Access,
            grant: TokenGrant::Fast,
            family: Some(family),
            rotated: false,
            fast: Some(FastBinding {
                agent: agent.to_string(),
                mechanism: mechanism.name().to_string(),
                nonce,
                not_after,
            }),
        };
        let (token, live) = self.put_token_text(Self::fast_text(&key, &nonce), rec);
        self.store.barrier_blocking()?;
        let id = live.id();
        let live = self.track(live);
        self.index_fast(&live);
        // What ran while it was being stored could not see it: the account
        // deleted, the authorization revoked, the client removed.
        let gone = !self.user_exists(owner)?
            || self.revoked_families.contains_key(&family)
            || client_id.as_deref().is_some_and(|c| self.client_removed(c));
        if gone {
            self.revoke_live(&live);
            self.store.barrier_blocking()?;
            return Err(AuthError::FamilyRevoked);
        }
        Ok(IssuedFast {
            token,
            id,
            expires_at,
        })
    }

    /// A FAST login: `proof` must be HMAC(token, "Initiator" ‖ `cb`) for a
    /// live, unspent token of `owner` bound to `mechanism` and to the
    /// login's installation `agent`. Under the address's brake only, like
    /// every token (256 bits cannot be guessed; others' bad guesses at the
    /// account must not lock out its devices); a refusal counts. Retires
    /// the installation's tokens older than the one used (queued for the
    /// store, not waited for: nothing acknowledges it). `None` when no
    /// token matches (or the throttle refuses: `Err`). Does not block once
    /// the fast key is loaded.
    pub fn check_fast(
        &self,
        owner: &BareJid,
        agent: Option<&str>,
        mechanism: HtMechanism,
        cb: &[u8],
        proof: &[u8],
        peer: Option<std::net::IpAddr>,
    ) -> Result<Option<FastLogin>, std::time::Duration> {
        let ticket = self.begin_check(peer, None)?;
        let Ok(key) = self.fast_key() else {
            return Ok(None);
        };
        let mine = self.fast_tokens(owner);
        let mut found = None;
        // Every candidate is checked, in constant time each, whatever matched.
        for live in &mine {
            let Some(f) = live.record.fast.as_ref() else {
                continue;
            };
            let token = Self::fast_text(&key, &f.nonce);
            let expect = hmac(token.as_bytes(), &[b"Initiator", cb]);
            let ok = bool::from(expect.as_slice().ct_eq(proof))
                && f.mechanism == mechanism.name()
                && Some(f.agent.as_str()) == agent
                && !live.rotated.load(Ordering::Acquire);
            if ok && found.is_none() {
                found = Some((Arc::clone(live), token));
            }
        }
        let Some((live, token)) = found else {
            ticket.failed();
            return Ok(None);
        };
        let scopes_ok = Scopes::from_stored(live.record.scopes.clone()).logs_into(Protocol::Xmpp);
        if !scopes_ok {
            ticket.failed();
            return Ok(None);
        }
        ticket.succeeded();
        let binding = live.record.fast.clone().expect("a FAST token");
        // Older tokens of the installation are spent (XEP-0484 §4.5).
        // Older: issued in an earlier second, or in the same one but
        // before (the index keeps the order of issue).
        let pos = mine.iter().position(|l| l.hash == live.hash).unwrap_or(0);
        for (i, other) in mine.iter().enumerate() {
            let same = other
                .record
                .fast
                .as_ref()
                .is_some_and(|f| f.agent == binding.agent);
            let older = other.record.issued_at < live.record.issued_at
                || (other.record.issued_at == live.record.issued_at && i < pos);
            if same && other.hash != live.hash && older {
                self.retire_fast(other);
            }
        }
        // Due for rotation: past half its life, and a successor would live
        // longer (one capped by its OAuth token's expiry never would).
        let t = now();
        let left = live.record.expires_at.saturating_sub(t);
        let successor = t
            .saturating_add(self.fast.expire)
            .min(binding.not_after.unwrap_or(u64::MAX));
        Ok(Some(FastLogin {
            responder: hmac(token.as_bytes(), &[b"Responder", cb]),
            rotate: left < self.fast.expire / 2 && successor > live.record.expires_at,
            agent: binding.agent,
            grant: Grant::of(live),
        }))
    }

    /// A FAST token superseded by its installation's newer one: it logs in
    /// no more, but is not revoked — the sessions that used it go on (the
    /// same installation resuming one of them is what rotation is for),
    /// and `oauth_revoke_token` still ends them.
    fn retire_fast(&self, live: &LiveToken) {
        if live.rotated.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut rec = live.record.clone();
        rec.rotated = true;
        self.store.put(
            crate::store::Tree::Tokens,
            live.hash,
            crate::store::records::encode_token(&rec),
        );
    }

    /// Revokes the token of `grant`, durable on return: a FAST token the
    /// client invalidated (XEP-0484 §4.6).
    pub fn revoke_grant(&self, grant: &Grant) -> Result<bool, AuthError> {
        let live = grant.live();
        if live.revoked.load(Ordering::Acquire) {
            return Ok(false);
        }
        self.revoke_live(live);
        self.store.barrier_blocking()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::test_support::core;
    use crate::config::Config;

    fn proof(token: &str, cb: &[u8]) -> [u8; 32] {
        hmac(token.as_bytes(), &[b"Initiator", cb])
    }

    /// A FAST login of alice's installation `agent` with `token`, no
    /// channel binding.
    fn fast_login(auth: &AuthCore, agent: &str, token: &str) -> Option<FastLogin> {
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.check_fast(
            &alice,
            Some(agent),
            HtMechanism::None,
            b"",
            &proof(token, b""),
            None,
        )
        .unwrap()
    }

    #[test]
    fn issue_check_rotate_revoke() {
        let (auth, _d) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.register(&alice, "pw").unwrap();
        let t1 = auth
            .issue_fast(&alice, "ua-1", HtMechanism::None, None, false)
            .unwrap();
        // Not a bearer token.
        assert!(auth
            .check_login_token(&t1.token, None, Protocol::Xmpp)
            .is_err());
        let login = fast_login(&auth, "ua-1", &t1.token).expect("the token logs in");
        assert_eq!(login.agent, "ua-1");
        assert!(!login.rotate);
        assert_eq!(login.responder, hmac(t1.token.as_bytes(), &[b"Responder"]));
        // Another mechanism, another channel binding, another account: no.
        for (m, cb) in [(HtMechanism::Exporter, &b""[..]), (HtMechanism::None, b"x")] {
            assert!(auth
                .check_fast(&alice, Some("ua-1"), m, cb, &proof(&t1.token, b""), None)
                .unwrap()
                .is_none());
        }
        // A new token for the installation keeps the one in use...
        let t2 = auth
            .issue_fast(&alice, "ua-1", HtMechanism::None, Some(&login.grant), true)
            .unwrap();
        assert!(fast_login(&auth, "ua-1", &t1.token).is_some());
        // ...until the new one is used.
        assert!(fast_login(&auth, "ua-1", &t2.token).is_some());
        assert!(fast_login(&auth, "ua-1", &t1.token).is_none());
        // Listed, and revoked by id like any token.
        assert!(auth.list_tokens().iter().any(|t| t.id == t2.id));
        assert!(auth.revoke_token(&t2.id).unwrap());
        assert!(fast_login(&auth, "ua-1", &t2.token).is_none());
    }

    #[test]
    fn the_store_holds_no_token_and_the_key_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let (auth, dir) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.register(&alice, "pw").unwrap();
        let t = auth
            .issue_fast(&alice, "ua", HtMechanism::None, None, false)
            .unwrap();
        for (_, v) in auth
            .store()
            .scan_prefix_blocking(crate::store::Tree::Tokens, b"")
            .unwrap()
        {
            assert!(!v.windows(t.token.len()).any(|w| w == t.token.as_bytes()));
        }
        let meta = std::fs::metadata(dir.path().join(FAST_KEY_FILE)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
    }

    #[test]
    fn an_account_holds_at_most_fast_max_tokens() {
        let config = Config {
            fast_max_tokens: 2,
            ..Config::default()
        };
        let (auth, _d) = core(&config);
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.register(&alice, "pw").unwrap();
        let issued: Vec<IssuedFast> = (0..3)
            .map(|i| {
                auth.issue_fast(&alice, &format!("ua-{i}"), HtMechanism::None, None, false)
                    .unwrap()
            })
            .collect();
        let live = |(i, t): (usize, &IssuedFast)| {
            fast_login(&auth, &format!("ua-{i}"), &t.token).is_some()
        };
        assert_eq!(
            issued.iter().enumerate().map(live).collect::<Vec<_>>(),
            [false, true, true]
        );
    }

    /// Bound to its installation; the one it replaces is retired, not
    /// revoked: a session that used it is not ended (so it can be resumed).
    #[test]
    fn installation_binding_and_retirement() {
        let (auth, _d) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.register(&alice, "pw").unwrap();
        let t1 = auth
            .issue_fast(&alice, "ua-1", HtMechanism::None, None, false)
            .unwrap();
        let p1 = proof(&t1.token, b"");
        for agent in [None, Some("ua-2")] {
            assert!(auth
                .check_fast(&alice, agent, HtMechanism::None, b"", &p1, None)
                .unwrap()
                .is_none());
        }
        let first = fast_login(&auth, "ua-1", &t1.token).unwrap();
        let t2 = auth
            .issue_fast(&alice, "ua-1", HtMechanism::None, Some(&first.grant), true)
            .unwrap();
        fast_login(&auth, "ua-1", &t2.token).unwrap();
        assert!(fast_login(&auth, "ua-1", &t1.token).is_none());
        assert_eq!(
            first.grant.end(),
            None,
            "retired, not revoked: its session goes on"
        );
        // The admin can still end it (and its sessions).
        assert!(auth.revoke_token(&t1.id).unwrap());
        assert!(first.grant.end().is_some());
    }

    /// A FAST token asked for in an OAuth token's login inherits its scopes,
    /// client and family, and never outlives it (nor is rotated past it).
    #[test]
    fn a_token_from_an_oauth_login_never_outlives_it() {
        let (auth, _d) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.register(&alice, "pw").unwrap();
        let scopes = Scopes::parse("xmpp xmpp:roster:read").unwrap();
        let oauth = auth
            .issue_token(&alice, scopes.clone(), Some(600), None)
            .unwrap();
        let grant = auth
            .check_login_token(&oauth.token, None, Protocol::Xmpp)
            .unwrap();
        let t = auth
            .issue_fast(&alice, "ua", HtMechanism::None, Some(&grant), false)
            .unwrap();
        assert_eq!(t.expires_at, oauth.expires_at);
        let login = fast_login(&auth, "ua", &t.token).unwrap();
        assert_eq!(login.grant.scopes(), &scopes);
        assert!(!login.rotate, "a successor could not live longer");
        // Revoking the OAuth authorization revokes it.
        assert!(auth.revoke_token(&oauth.id).unwrap());
        assert_eq!(
            login.grant.end(),
            None,
            "an access token alone: its family stays"
        );
        let family = grant.live().record.family.unwrap();
        auth.revoke_family(&family);
        assert!(
            login.grant.end().is_some(),
            "the family's revocation reaches it"
        );
    }
}
