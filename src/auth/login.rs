//! The one login decision. XMPP SASL (PLAIN, X-OAUTH2, OAUTHBEARER) and MQTT
//! (CONNECT's token or password, AUTH continuations and re-authentication)
//! hand the credential they were given to [`AuthCore::login`]; the rules
//! below are written here once and nowhere else:
//!
//! 1. A **token credential** (a token mechanism: X-OAUTH2, OAUTHBEARER, MQTT
//!    enhanced authentication) logs in if it names a live token — neither
//!    expired nor revoked — that carries `sasl_auth` and, when the client
//!    claimed an identity, belongs to that account.
//! 2. A **password credential** (XMPP PLAIN, an MQTT password) is first
//!    looked up as a token: if it is one, rule 1 decides, and a token that is
//!    expired, revoked, of another account or without `sasl_auth` is refused
//!    as such — never retried as a password.
//! 3. Only a password that is no token at all is checked as the password of
//!    the claimed account (a claim is then required). That check hashes
//!    (PBKDF2), so [`AuthCore::login`] hands it back as a [`PasswordCheck`]
//!    to run off the async threads with [`AuthCore::check_login_password`].
//!
//! SCRAM is a challenge-response exchange rather than a credential: its
//! keys and proof are checked by [`super::scram`], also inside the auth core.

use std::fmt;
use std::net::IpAddr;

use super::scopes::Protocol;
use super::tokens::{Grant, TokenError};
use super::{AuthCore, AuthError, BareJid};

/// What a client presented.
pub enum Credential {
    /// From a token mechanism.
    Token(String),
    /// From a password field: the account's password, or a token.
    Password(String),
}

/// A login attempt.
pub struct LoginRequest {
    /// The identity the client claimed (a username, an authcid), if any.
    pub claimed: Option<BareJid>,
    pub credential: Credential,
    /// Where the client connects from (the throttle's other key).
    pub peer: Option<IpAddr>,
    /// What the client logs into (a token must be scoped for it).
    pub protocol: Protocol,
}

/// Equal when they ask the same of the same account (never comparing the
/// secrets themselves).
impl PartialEq for LoginRequest {
    fn eq(&self, other: &Self) -> bool {
        self.claimed == other.claimed
            && self.peer == other.peer
            && self.protocol == other.protocol
            && matches!(
                (&self.credential, &other.credential),
                (Credential::Token(_), Credential::Token(_))
                    | (Credential::Password(_), Credential::Password(_))
            )
    }
}

impl Eq for LoginRequest {}

// Hand-written so that passwords and tokens never reach a log.
impl fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.credential {
            Credential::Token(_) => "token",
            Credential::Password(_) => "password",
        };
        write!(
            f,
            "LoginRequest({kind}, claimed={:?}, {:?})",
            self.claimed, self.protocol
        )
    }
}

/// A successful login: the account, and the token it used, if any (the
/// session then ends when the token does).
#[derive(Debug, Clone)]
pub struct Login {
    pub account: BareJid,
    pub grant: Option<Grant>,
}

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// A token that does not log in now (rules 1 and 2).
    #[error("{0}")]
    Token(TokenError),
    /// A password with no account claimed to check it against.
    #[error("a password needs a username")]
    NoUser,
    /// Wrong password, or no such account (indistinguishable, equally slow).
    #[error("wrong password")]
    BadPassword,
    /// The store failed: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// Too many failed attempts from this address or for this account:
    /// refused without looking, for this long.
    #[error("too many failed attempts; try again in {} s", .0.as_secs().max(1))]
    Throttled(std::time::Duration),
}

/// A password to check for a login, off the async threads.
pub struct PasswordCheck {
    pub account: BareJid,
    password: String,
    /// The check in flight, for the throttle.
    ticket: super::throttle::Ticket,
}

impl PartialEq for PasswordCheck {
    fn eq(&self, other: &Self) -> bool {
        self.account == other.account
    }
}

impl Eq for PasswordCheck {}

impl fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordCheck({})", self.account)
    }
}

/// Tells the throttle how a decided login went: a refusal of the secret
/// counts as a failure; a store failure counts neither way.
fn settle(ticket: super::throttle::Ticket, r: &Result<Login, LoginError>) {
    match r {
        Ok(_) => ticket.succeeded(),
        Err(LoginError::Unavailable(_) | LoginError::Throttled(_)) => drop(ticket),
        Err(_) => ticket.failed(),
    }
}

/// The first step of a login.
#[derive(Debug)]
pub enum LoginStep {
    /// Decided without hashing (tokens are checked in memory).
    Done(Result<Login, LoginError>),
    /// A password must be hashed: run [`AuthCore::check_login_password`]
    /// on a blocking thread.
    CheckPassword(PasswordCheck),
}

impl AuthCore {
    /// The login decision (see the module docs). Never blocks. Refused
    /// without looking while the address (for a password, also the
    /// account) is throttled; every refusal counts towards the throttle.
    pub fn login(&self, req: LoginRequest) -> LoginStep {
        let LoginRequest {
            claimed,
            credential,
            peer,
            protocol,
        } = req;
        // Tokens cannot be guessed: a token is checked under the address's
        // brake only, so failures at an account (anyone's bad guesses) never
        // lock out the devices that hold its tokens.
        let ticket = match self.begin_check(peer, None) {
            Ok(t) => t,
            Err(wait) => return LoginStep::Done(Err(LoginError::Throttled(wait))),
        };
        let decided = match credential {
            Credential::Token(token) => self.token_login(&token, claimed.as_ref(), protocol),
            Credential::Password(secret) => {
                match self.token_login(&secret, claimed.as_ref(), protocol) {
                    Err(LoginError::Token(TokenError::Unknown)) => match claimed {
                        Some(account) => {
                            // A password: under the account's brake as well.
                            drop(ticket);
                            let name = account.to_string();
                            return match self.begin_check(peer, Some(&name)) {
                                Ok(ticket) => LoginStep::CheckPassword(PasswordCheck {
                                    account,
                                    password: secret,
                                    ticket,
                                }),
                                Err(wait) => LoginStep::Done(Err(LoginError::Throttled(wait))),
                            };
                        }
                        None => Err(LoginError::NoUser),
                    },
                    decided => decided,
                }
            }
        };
        settle(ticket, &decided);
        LoginStep::Done(decided)
    }

    /// Rule 1 alone, for a live session that presents a fresh token (MQTT
    /// re-authentication): the token's grant.
    pub fn token_login(
        &self,
        token: &str,
        claimed: Option<&BareJid>,
        protocol: Protocol,
    ) -> Result<Login, LoginError> {
        let grant = self
            .check_login_token(token.trim(), claimed, protocol)
            .map_err(LoginError::Token)?;
        Ok(Login {
            account: grant.owner().clone(),
            grant: Some(grant),
        })
    }

    /// The second step of a password login. Blocking (PBKDF2, a store read).
    pub fn check_login_password(&self, check: PasswordCheck) -> Result<Login, LoginError> {
        let r = match self.check_password(&check.account, &check.password) {
            Ok(()) => Ok(Login {
                account: check.account,
                grant: None,
            }),
            Err(AuthError::BadPassword) => Err(LoginError::BadPassword),
            Err(e) => Err(LoginError::Unavailable(e.to_string())),
        };
        settle(check.ticket, &r);
        r
    }

    /// Both steps, for async callers: tokens at once, a password on a
    /// blocking thread.
    pub async fn login_async(
        self: &std::sync::Arc<Self>,
        req: LoginRequest,
    ) -> Result<Login, LoginError> {
        // A token issued on another node sharing the store.
        let (Credential::Token(t) | Credential::Password(t)) = &req.credential;
        self.fetch_token(t).await;
        match self.login(req) {
            LoginStep::Done(r) => r,
            LoginStep::CheckPassword(check) => {
                let auth = self.clone();
                let slot = self.hash_slot().await;
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    auth.check_login_password(check)
                })
                .await
                .unwrap_or_else(|e| Err(LoginError::Unavailable(e.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scopes::Scopes;
    use crate::auth::test_support::core;
    use crate::config::Config;

    fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    fn run(
        a: &AuthCore,
        claimed: Option<&str>,
        credential: Credential,
    ) -> Result<Login, LoginError> {
        match a.login(LoginRequest {
            claimed: claimed.map(jid),
            credential,
            peer: None,
            protocol: Protocol::Mqtt,
        }) {
            LoginStep::Done(r) => r,
            LoginStep::CheckPassword(c) => a.check_login_password(c),
        }
    }

    #[test]
    fn one_set_of_rules_for_tokens_and_passwords() {
        let (a, _d) = core(&Config::default());
        a.register(&jid("alice@localhost"), "wonderland").unwrap();
        a.register(&jid("bob@localhost"), "builder").unwrap();
        let t = a
            .issue_token(&jid("alice@localhost"), Scopes::sasl_auth(), None, None)
            .unwrap();
        let narrow = a
            .issue_token(
                &jid("alice@localhost"),
                Scopes::parse("xmpp:roster:read").unwrap(),
                None,
                None,
            )
            .unwrap();
        let tok = |s: &str| Credential::Token(s.to_string());
        let pw = |s: &str| Credential::Password(s.to_string());

        // Rule 1: tokens.
        let l = run(&a, None, tok(&t.token)).unwrap();
        assert_eq!(l.account, jid("alice@localhost"));
        assert!(l.grant.is_some());
        assert!(run(&a, Some("alice@localhost"), tok(&t.token)).is_ok());
        assert_eq!(
            run(&a, Some("bob@localhost"), tok(&t.token)).unwrap_err(),
            LoginError::Token(TokenError::WrongOwner)
        );
        assert_eq!(
            run(&a, None, tok("wonderland")).unwrap_err(),
            LoginError::Token(TokenError::Unknown),
            "a token mechanism never takes a password"
        );
        assert!(matches!(
            run(&a, None, tok(&narrow.token)).unwrap_err(),
            LoginError::Token(TokenError::MissingScope(_))
        ));

        // Rule 2: a password field holding a token.
        let l = run(&a, Some("alice@localhost"), pw(&t.token)).unwrap();
        assert!(l.grant.is_some(), "the session ends with the token");
        assert!(
            run(&a, None, pw(&t.token)).is_ok(),
            "the token names its owner"
        );
        assert_eq!(
            run(&a, Some("bob@localhost"), pw(&t.token)).unwrap_err(),
            LoginError::Token(TokenError::WrongOwner)
        );
        a.revoke_token(&t.token).unwrap();
        assert_eq!(
            run(&a, Some("alice@localhost"), pw(&t.token)).unwrap_err(),
            LoginError::Token(TokenError::Revoked),
            "a revoked token is refused as such, not tried as a password"
        );

        // Rule 3: passwords.
        let l = run(&a, Some("alice@localhost"), pw("wonderland")).unwrap();
        assert_eq!(
            (l.account, l.grant.is_none()),
            (jid("alice@localhost"), true)
        );
        assert_eq!(
            run(&a, Some("alice@localhost"), pw("builder")).unwrap_err(),
            LoginError::BadPassword
        );
        assert_eq!(
            run(&a, Some("nobody@localhost"), pw("x")).unwrap_err(),
            LoginError::BadPassword
        );
        assert_eq!(
            run(&a, None, pw("wonderland")).unwrap_err(),
            LoginError::NoUser
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let r = LoginRequest {
            claimed: Some(jid("a@localhost")),
            credential: Credential::Password("hunter2".into()),
            peer: None,
            protocol: Protocol::Xmpp,
        };
        assert!(!format!("{r:?}").contains("hunter2"));
        let (a, _d) = core(&Config::default());
        let LoginStep::CheckPassword(c) = a.login(r) else {
            panic!("a password check")
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// Guesses at an account's password lock the password out for a
    /// while, never the account's tokens (which cannot be guessed); a
    /// password check waiting for its hash holds a place in the allowance.
    #[test]
    fn password_guesses_do_not_lock_out_tokens() {
        let (a, _d) = core(&Config::default());
        a.register(&jid("alice@localhost"), "wonderland").unwrap();
        let t = a
            .issue_token(&jid("alice@localhost"), Scopes::sasl_auth(), None, None)
            .unwrap();
        let guess = |peer: &str| {
            a.login(LoginRequest {
                claimed: Some(jid("alice@localhost")),
                credential: Credential::Password("guess".into()),
                peer: Some(peer.parse().unwrap()),
                protocol: Protocol::Xmpp,
            })
        };
        // Six checks begun at once from six addresses: the sixth is
        // refused before any hashing (five failures allowed).
        let pending: Vec<PasswordCheck> = (1..=6)
            .map(|i| match guess(&format!("192.0.2.{i}")) {
                LoginStep::CheckPassword(c) => c,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(matches!(
            guess("192.0.2.7"),
            LoginStep::Done(Err(LoginError::Throttled(_)))
        ));
        for c in pending {
            assert_eq!(
                a.check_login_password(c).unwrap_err(),
                LoginError::BadPassword
            );
        }
        // Past the allowance each failure blocks the account for longer
        // (1, 2, 4 s): it is soon refused outright.
        let refused = (8..12).any(|i| match guess(&format!("192.0.2.{i}")) {
            LoginStep::CheckPassword(c) => {
                assert!(a.check_login_password(c).is_err());
                false
            }
            LoginStep::Done(r) => matches!(r, Err(LoginError::Throttled(_))),
        });
        assert!(refused);
        // The account's password is blocked (for a second or two); its
        // token still logs in, in a token mechanism and in the password field.
        assert!(run(
            &a,
            Some("alice@localhost"),
            Credential::Token(t.token.clone())
        )
        .is_ok());
        assert!(run(
            &a,
            Some("alice@localhost"),
            Credential::Password(t.token.clone())
        )
        .is_ok());
    }
}
