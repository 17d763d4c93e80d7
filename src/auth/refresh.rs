//! Refresh tokens (RFC 6749 §6) with rotation (RFC 9700 §4.14.2): each use
//! spends the token and gives a new pair in the same family; a spent one
//! presented again revokes the whole family. The tokens themselves are
//! [`super::tokens`]'; this is what is done with them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use subtle::ConstantTimeEq;

use super::tokens::{hash_token, LiveToken};
use super::{now, AuthCore, AuthError, IssuedToken, Scopes, TokenSpec};
use crate::store::records::{self, TokenGrant, TokenKind};
use crate::store::Tree;

/// Why a refresh token was not exchanged (all `invalid_grant` but the last).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("unknown, expired or revoked refresh token")]
    Invalid,
    #[error("the refresh token was issued to another client")]
    WrongClient,
    #[error("the refresh token was already used: every token of its authorization is revoked")]
    Replayed,
    #[error("the account may no longer get tokens")]
    AccountGone,
    #[error("the scope asked goes beyond the scope granted")]
    ScopeTooWide,
    /// The store failed; the refresh token was not spent.
    #[error("internal error")]
    Internal,
}

impl AuthCore {
    /// The refresh grant (RFC 6749 §6) with rotation: `token` must be a
    /// live refresh token issued to `client_id`; it is spent, and a new
    /// access token and refresh token of the same family come back. A
    /// refresh token presented a second time revokes its whole family
    /// (RFC 9700 §4.14.2) and every session holding one of its tokens ends.
    /// `scopes`, when given, must be within those granted.
    pub fn refresh(
        &self,
        token: &str,
        client_id: &str,
        scopes: Option<Scopes>,
    ) -> Result<IssuedToken, RefreshError> {
        let hash = hash_token(token);
        let live = self
            .tokens
            .get(&hash)
            .map(|e| Arc::clone(e.value()))
            .filter(|l| bool::from(l.hash.ct_eq(&hash)) && l.record.kind == TokenKind::Refresh)
            .ok_or(RefreshError::Invalid)?;
        if live.record.client_id.as_deref() != Some(client_id) {
            return Err(RefreshError::WrongClient);
        }
        if live.revoked.load(Ordering::Acquire) || now() >= live.record.expires_at {
            return Err(RefreshError::Invalid);
        }
        let granted = Scopes::from_stored(live.record.scopes.clone());
        let scopes = match scopes {
            Some(s) if !s.within(&granted) => return Err(RefreshError::ScopeTooWide),
            Some(s) => s,
            None => granted.clone(),
        };
        // Exactly one exchange spends the token; any other is a replay.
        if live
            .rotated
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            tracing::warn!(token_id = %live.id(), owner = %live.owner, client = client_id,
                "a spent refresh token was presented again: revoking its family");
            if let Some(f) = live.record.family {
                self.revoke_family(&f);
                let _ = self.store.barrier_blocking();
            }
            return Err(RefreshError::Replayed);
        }
        let mut rec = live.record.clone();
        rec.rotated = true;
        self.store
            .put(Tree::Tokens, live.hash, records::encode_token(&rec));
        if !self.may_get_tokens(&live.owner) {
            return Err(RefreshError::AccountGone);
        }
        let issued = self.issue(TokenSpec {
            owner: &live.owner,
            scopes,
            ttl: None,
            client_id: Some(client_id),
            grant: TokenGrant::RefreshToken,
            refresh: true,
            // The chain keeps what was granted; only this access token is
            // narrowed.
            refresh_scopes: Some(granted),
            family: live.record.family,
        });
        match issued {
            Ok(t) => Ok(t),
            Err(
                AuthError::NoSuchUser(_)
                | AuthError::UnknownHost(_)
                | AuthError::FamilyRevoked
                | AuthError::NoSuchClient(_),
            ) => Err(RefreshError::AccountGone),
            Err(e) => {
                tracing::error!(error = %e, "refresh failed");
                // Revoked meanwhile (a replay, a revocation): stays so.
                if live.revoked.load(Ordering::Acquire) {
                    return Err(RefreshError::Invalid);
                }
                // Not spent after all: the client may try again.
                rec.rotated = false;
                self.store
                    .put(Tree::Tokens, live.hash, records::encode_token(&rec));
                live.rotated.store(false, Ordering::Release);
                if live.revoked.load(Ordering::Acquire) {
                    // A revocation raced the undo: write it again.
                    rec.revoked = true;
                    self.store
                        .put(Tree::Tokens, live.hash, records::encode_token(&rec));
                }
                Err(RefreshError::Internal)
            }
        }
    }

    /// Revokes every live token of a family (announcing each to its
    /// sessions). The family is remembered as revoked for as long as a
    /// token of it could live, so that tokens being issued into it at this
    /// moment are revoked as soon as they are stored.
    pub fn revoke_family(&self, family: &[u8; 16]) -> usize {
        let until = now().saturating_add(self.oauth_expire.max(self.oauth_refresh_expire));
        self.revoked_families.insert(*family, until);
        let members: Vec<Arc<LiveToken>> = self
            .tokens
            .iter()
            .filter(|e| e.record.family.as_ref() == Some(family))
            .map(|e| Arc::clone(e.value()))
            .collect();
        let mut n = 0;
        for live in members {
            if !live.revoked.load(Ordering::Acquire) {
                self.revoke_live(&live);
                n += 1;
            }
        }
        n
    }
}
