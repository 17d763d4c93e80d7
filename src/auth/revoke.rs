//! Revocation: one token (by text or id; a refresh token with its whole
//! authorization), and the sweeps that end every token of an account, of
//! a client, or of a client's own principal. Each revoked token is written
//! to the store and announced, so the sessions holding it end.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::tokens::{hash_token, LiveToken, TokenEnd};
use super::{now, AuthCore, AuthError, BareJid};
use crate::store::records::{self, TokenGrant, TokenKind};
use crate::store::Tree;

impl AuthCore {
    /// Revokes a token given by its text only (the HTTP revocation endpoint:
    /// ids are shown in listings and logs, so they must not act as the token).
    pub fn revoke_token_text(&self, token: &str) -> Result<bool, AuthError> {
        self.fetch_token_blocking(token);
        let live = self
            .tokens
            .get(&hash_token(token))
            .map(|e| Arc::clone(e.value()));
        self.revoke_found(live)
    }

    /// Revokes a token given by text or id. `Ok(false)`: no such live token
    /// (unknown, already revoked, or expired but not yet swept).
    pub fn revoke_token(&self, token_or_id: &str) -> Result<bool, AuthError> {
        self.fetch_token_blocking(token_or_id);
        self.revoke_found(self.find(token_or_id))
    }

    fn revoke_found(&self, live: Option<Arc<LiveToken>>) -> Result<bool, AuthError> {
        match live {
            Some(live)
                if !live.revoked.load(Ordering::Acquire) && now() < live.record.expires_at =>
            {
                self.revoke_with_family(&live);
                self.store.barrier_blocking()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Revokes a live token; a refresh token takes its whole family with
    /// it (RFC 7009 §2.1: the access tokens of the same authorization).
    fn revoke_with_family(&self, live: &LiveToken) {
        match live.record.family {
            Some(f) if live.record.kind == TokenKind::Refresh => {
                self.revoke_family(&f);
            }
            _ => self.revoke_live(live),
        }
    }

    pub(super) fn revoke_live(&self, live: &LiveToken) {
        tracing::info!(
            target: "petrel::audit",
            token = %live.id(),
            owner = %live.owner,
            grant = live.record.grant.name(),
            "token revoked"
        );
        crate::metrics::metrics().token_revoked(live.record.grant.name());
        let mut rec = live.record.clone();
        rec.revoked = true;
        self.store
            .put(Tree::Tokens, live.hash, records::encode_token(&rec));
        live.revoked.store(true, Ordering::Release);
        self.announce_token_end(live.key(), TokenEnd::Revoked);
    }

    /// Revokes every live token `which` picks (the caller waits for the
    /// store barrier).
    fn revoke_where(&self, which: impl Fn(&LiveToken) -> bool) {
        let picked: Vec<Arc<LiveToken>> = self
            .tokens
            .iter()
            .filter(|e| which(e.value()))
            .map(|e| Arc::clone(e.value()))
            .collect();
        for live in picked {
            self.revoke_live(&live);
        }
    }

    /// Revokes every token of an account (unregistered, or a new password).
    pub(super) fn revoke_owner(&self, owner: &BareJid) -> Result<(), AuthError> {
        self.revoke_where(|t| t.owner == *owner);
        Ok(())
    }

    /// Revokes the client-credentials tokens whose principal is `jid` (an
    /// account of that name now exists: no service may act as it).
    pub(super) fn revoke_principal(&self, jid: &BareJid) {
        self.revoke_where(|t| t.owner == *jid && t.record.grant == TokenGrant::ClientCredentials);
    }

    /// Revokes every token issued to client `id` (the client was removed:
    /// what it was given stops working), or only its own (client
    /// credentials) tokens when `own_only`.
    pub(super) fn revoke_client_tokens(&self, id: &str, own_only: bool) {
        self.revoke_where(|t| {
            t.record.client_id.as_deref() == Some(id)
                && (!own_only || t.record.grant == TokenGrant::ClientCredentials)
        });
    }
}
