//! Authorization codes (RFC 6749 §4.1) with PKCE (RFC 7636, S256 only).
//!
//! A code is 32 random bytes, base64url; only its SHA-256 is kept, in
//! memory (a code lives at most `oauth_code_expire` seconds, 60 by
//! default: a restart in between costs the user one more sign-in). A code
//! is bound to the client, the redirect URI and the PKCE challenge it was
//! asked with. It is spent by the first exchange that names its client;
//! presented again while remembered, it revokes every token the first
//! exchange gave (RFC 6749 §4.1.2, RFC 9700 §4.4).

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{now, random_bytes, AuthCore, AuthError, BareJid, IssuedToken, Scopes, TokenSpec};
use crate::store::records::TokenGrant;

/// What a code stands for, as the sign-in page granted it.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub owner: BareJid,
    pub client_id: String,
    /// The redirect URI of the request, `None` when it named none (the
    /// registered one was used): then the exchange must name none either.
    pub redirect_uri: Option<String>,
    pub scopes: Scopes,
    pub ttl: Option<u64>,
    /// The S256 challenge, if the client started with PKCE.
    pub challenge: Option<String>,
}

/// A code in the table: its grant, deadline, and whether it was spent.
pub(super) struct CodeEntry {
    grant: CodeGrant,
    expires_at: u64,
    family: [u8; 16],
    spent: bool,
}

/// What the token endpoint's exchange presents.
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    pub code: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub verifier: Option<&'a str>,
}

/// Why a code was not exchanged: `invalid_grant` for all but the last,
/// which is `invalid_request` (a malformed verifier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("unknown or expired authorization code")]
    Invalid,
    #[error("the authorization code was already used: the tokens it gave are revoked")]
    Replayed,
    #[error("the authorization code was issued to another client")]
    WrongClient,
    #[error("redirect_uri differs from the authorization request's")]
    WrongRedirect,
    #[error("code_verifier does not match the code_challenge")]
    WrongVerifier,
    #[error("code_verifier is required: the authorization request had a code_challenge")]
    VerifierMissing,
    #[error("code_verifier given, but the authorization request had no code_challenge")]
    VerifierUnexpected,
    #[error("the account may no longer get tokens")]
    AccountGone,
    #[error("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")]
    MalformedVerifier,
    /// The store failed (a server error, not the client's).
    #[error("internal error")]
    Internal,
}

/// RFC 7636 §4.1: 43 to 128 unreserved characters. The same rule holds
/// for an S256 challenge (43 characters of base64url).
pub fn valid_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2, S256).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn hash_code(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

impl AuthCore {
    /// A new code for `grant`, or `None` when `oauth_max_pending_codes`
    /// codes are already waiting (the page answers "try again later").
    pub fn new_code(&self, grant: CodeGrant) -> Option<String> {
        let t = now();
        if self.codes.len() >= self.max_pending_codes {
            self.codes.retain(|_, e| e.expires_at > t);
            if self.codes.len() >= self.max_pending_codes {
                return None;
            }
        }
        let code = URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        self.codes.insert(
            hash_code(&code),
            CodeEntry {
                grant,
                expires_at: t.saturating_add(self.code_expire),
                family: random_bytes::<16>(),
                spent: false,
            },
        );
        Some(code)
    }

    /// How long a code lives.
    pub fn code_lifetime(&self) -> Duration {
        Duration::from_secs(self.code_expire)
    }

    /// The authorization code grant's exchange (RFC 6749 §4.1.3, RFC 7636
    /// §4.6). The client is authenticated by the caller. The code is spent
    /// by this call whatever the outcome once the client matches, so a
    /// wrong verifier cannot be retried.
    pub fn exchange_code(&self, x: Exchange<'_>, refresh: bool) -> Result<IssuedToken, CodeError> {
        if x.verifier.is_some_and(|v| !valid_pkce_value(v)) {
            return Err(CodeError::MalformedVerifier);
        }
        let t = now();
        let (grant, family) = {
            let mut e = self
                .codes
                .get_mut(&hash_code(x.code))
                .filter(|e| e.expires_at > t)
                .ok_or(CodeError::Invalid)?;
            if e.grant.client_id != x.client_id {
                return Err(CodeError::WrongClient);
            }
            if e.spent {
                let family = e.family;
                drop(e);
                // Forgotten after the first replay: more replays are cheap
                // unknown codes, not a scan and a flush each.
                self.codes.remove(&hash_code(x.code));
                let n = self.revoke_family(&family);
                let _ = self.store.barrier_blocking();
                tracing::warn!(
                    client = x.client_id,
                    revoked = n,
                    "an authorization code was presented twice: its tokens are revoked"
                );
                return Err(CodeError::Replayed);
            }
            e.spent = true;
            (e.grant.clone(), e.family)
        };
        if grant.redirect_uri.as_deref() != x.redirect_uri {
            return Err(CodeError::WrongRedirect);
        }
        match (&grant.challenge, x.verifier) {
            (Some(c), Some(v)) => {
                if !bool::from(s256(v).as_bytes().ct_eq(c.as_bytes())) {
                    return Err(CodeError::WrongVerifier);
                }
            }
            (Some(_), None) => return Err(CodeError::VerifierMissing),
            (None, Some(_)) => return Err(CodeError::VerifierUnexpected),
            (None, None) => {}
        }
        if !self.may_get_tokens(&grant.owner) {
            return Err(CodeError::AccountGone);
        }
        self.issue(TokenSpec {
            owner: &grant.owner,
            scopes: grant.scopes,
            ttl: grant.ttl,
            client_id: Some(x.client_id),
            grant: TokenGrant::AuthorizationCode,
            refresh,
            refresh_scopes: None,
            family: Some(family),
        })
        .map_err(|e| match e {
            AuthError::NoSuchUser(_)
            | AuthError::UnknownHost(_)
            | AuthError::FamilyRevoked
            | AuthError::NoSuchClient(_) => CodeError::AccountGone,
            e => {
                tracing::error!(error = %e, "code exchange failed");
                // The server failed, not the client: the code may be
                // exchanged again (if no replay came meanwhile).
                if let Some(mut c) = self.codes.get_mut(&hash_code(x.code)) {
                    c.spent = false;
                }
                CodeError::Internal
            }
        })
    }

    /// Forgets codes whose time is up (run by the expiry task).
    pub fn sweep_codes(&self, at: u64) {
        self.codes.retain(|_, e| e.expires_at > at);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::core;
    use super::*;
    use crate::auth::Protocol;
    use crate::config::Config;

    /// RFC 7636 appendix B's example.
    #[test]
    fn s256_matches_the_rfc_example() {
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert!(valid_pkce_value(v));
        assert_eq!(s256(v), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(!valid_pkce_value("short"));
        assert!(!valid_pkce_value(&"a".repeat(129)));
        assert!(!valid_pkce_value(&format!("{}+", "a".repeat(43))));
    }

    fn setup() -> (AuthCore, tempfile::TempDir, BareJid) {
        let (a, d) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        a.register(&alice, "pw").unwrap();
        (a, d, alice)
    }

    fn grant(alice: &BareJid, challenge: Option<&str>) -> CodeGrant {
        CodeGrant {
            owner: alice.clone(),
            client_id: "app".into(),
            redirect_uri: Some("https://app.example/cb".into()),
            scopes: Scopes::sasl_auth(),
            ttl: None,
            challenge: challenge.map(str::to_string),
        }
    }

    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

    fn exchange<'a>(code: &'a str, verifier: Option<&'a str>) -> Exchange<'a> {
        Exchange {
            code,
            client_id: "app",
            redirect_uri: Some("https://app.example/cb"),
            verifier,
        }
    }

    #[test]
    fn a_code_is_spent_once_and_a_replay_revokes_its_tokens() {
        let (a, _d, alice) = setup();
        let code = a.new_code(grant(&alice, Some(&s256(VERIFIER)))).unwrap();
        let t = a
            .exchange_code(exchange(&code, Some(VERIFIER)), true)
            .unwrap();
        assert!(a
            .check_login_token(&t.token, Some(&alice), Protocol::Mqtt)
            .is_ok());
        assert!(t.refresh.is_some());
        assert_eq!(
            a.exchange_code(exchange(&code, Some(VERIFIER)), true)
                .unwrap_err(),
            CodeError::Replayed
        );
        assert!(
            a.check_login_token(&t.token, None, Protocol::Mqtt).is_err(),
            "revoked"
        );
        assert_eq!(
            a.exchange_code(exchange(&code, Some(VERIFIER)), true)
                .unwrap_err(),
            CodeError::Invalid,
            "forgotten after the first replay"
        );
        let r = t.refresh.unwrap();
        assert!(a.refresh(&r.token, "app", None).is_err(), "refresh revoked");
    }

    #[test]
    fn pkce_binds_the_exchange() {
        let (a, _d, alice) = setup();
        let challenge = s256(VERIFIER);
        let other = "x".repeat(43);
        for (verifier, want) in [
            (None, CodeError::VerifierMissing),
            (Some(other.as_str()), CodeError::WrongVerifier),
        ] {
            let code = a.new_code(grant(&alice, Some(&challenge))).unwrap();
            assert_eq!(
                a.exchange_code(exchange(&code, verifier), false)
                    .unwrap_err(),
                want
            );
            // Spent by the failed attempt: the right verifier is too late.
            assert_eq!(
                a.exchange_code(exchange(&code, Some(VERIFIER)), false)
                    .unwrap_err(),
                CodeError::Replayed
            );
        }
        let code = a.new_code(grant(&alice, None)).unwrap();
        assert_eq!(
            a.exchange_code(exchange(&code, Some(VERIFIER)), false)
                .unwrap_err(),
            CodeError::VerifierUnexpected
        );
        let code = a.new_code(grant(&alice, None)).unwrap();
        let mut x = exchange(&code, None);
        x.client_id = "other";
        assert_eq!(
            a.exchange_code(x, false).unwrap_err(),
            CodeError::WrongClient
        );
        x.client_id = "app";
        x.redirect_uri = Some("https://evil.example/cb");
        assert_eq!(
            a.exchange_code(x, false).unwrap_err(),
            CodeError::WrongRedirect
        );
        assert_eq!(
            a.exchange_code(exchange("no-such-code", None), false)
                .unwrap_err(),
            CodeError::Invalid
        );
    }

    #[test]
    fn pending_codes_are_capped_and_expire() {
        let (a, _d) = core(&Config {
            oauth_max_pending_codes: 2,
            ..Config::default()
        });
        let alice = BareJid::parse("alice@localhost").unwrap();
        let c1 = a.new_code(grant(&alice, None)).unwrap();
        a.new_code(grant(&alice, None)).unwrap();
        assert!(a.new_code(grant(&alice, None)).is_none(), "cap");
        a.sweep_codes(now() + 3600);
        assert!(a.new_code(grant(&alice, None)).is_some(), "room again");
        assert_eq!(
            a.exchange_code(exchange(&c1, None), false).unwrap_err(),
            CodeError::Invalid
        );
    }
}
