//! SASL negotiation glue (RFC 6120 §6): the mechanisms a c2s stream offers and
//! one exchange at a time, driven by the `<auth/>`, `<response/>` and
//! `<abort/>` elements.
//!
//! Like [`super::c2s::C2s`] it does no I/O: where a credential must be
//! checked it returns [`SaslOutcome::NeedAuth`] with an [`AuthRequest`]; the
//! connection task runs [`perform`] against the one auth core (off the async
//! threads, since password hashing and store reads block) and hands the
//! [`AuthReply`] back through [`Sasl::auth_reply`]. Payload parsing lives in
//! [`crate::auth::sasl`] and [`crate::auth::scram`].
//!
//! Identities: the user of PLAIN, X-OAUTH2 and SCRAM may be a localpart of the
//! stream's domain or a bare JID in it; an account of another domain is
//! refused even when this server hosts it, because the stream was opened to
//! one domain.
//!
//! PLAIN's password and the token mechanisms' tokens go to the auth core's
//! one login decision ([`crate::auth::login`]), the same MQTT uses: PLAIN's
//! password may be a token of that user with `sasl_auth` (for clients that
//! know no token mechanism); such a session then ends with its token like an
//! X-OAUTH2 one.

use std::fmt;

use crate::auth::fast::{FastLogin, HtMechanism};
use crate::auth::sasl::{self as payload, SaslError};
use crate::auth::scram::{ScramHash, ScramKeys, ScramServer};
use crate::auth::throttle::Ticket;
use crate::auth::{
    AuthCore, AuthError, BareJid, Credential, Grant, Login, LoginError, LoginRequest, LoginStep,
    Protocol,
};

/// The mechanisms offered, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ScramSha256,
    ScramSha1,
    Plain,
    XOauth2,
    OauthBearer,
}

impl Mechanism {
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
        Mechanism::XOauth2,
        Mechanism::OauthBearer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
            Mechanism::XOauth2 => "X-OAUTH2",
            Mechanism::OauthBearer => "OAUTHBEARER",
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// A credential check for the auth core.
pub enum AuthRequest {
    /// PLAIN (a password credential), X-OAUTH2 / OAUTHBEARER (a token): the
    /// auth core's login decision.
    Login(LoginRequest),
    /// SCRAM: the account's stored keys, or fake ones for `name` if there is
    /// no such account (so the exchange fails the same way as a bad password).
    ScramKeys {
        user: Option<BareJid>,
        name: String,
        hash: ScramHash,
        /// The client's address, for the throttle (the connection fills it in).
        peer: Option<std::net::IpAddr>,
    },
    /// XEP-0484 FAST: a Hashed Token proof for `user`'s tokens.
    Fast {
        user: BareJid,
        /// The login's `<user-agent id>`: the token must be bound to it.
        agent: Option<String>,
        mechanism: HtMechanism,
        proof: Vec<u8>,
        /// Channel-binding data (the connection fills it in for the
        /// mechanisms that bind; `None` if the connection has none).
        cb: Option<Vec<u8>>,
        peer: Option<std::net::IpAddr>,
    },
}

// Hand-written so that passwords and tokens never reach a log.
impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthRequest::Login(r) => write!(f, "{r:?}"),
            AuthRequest::ScramKeys { name, hash, .. } => {
                write!(f, "ScramKeys({name}, {})", hash.mechanism())
            }
            AuthRequest::Fast {
                user, mechanism, ..
            } => write!(f, "Fast({user}, {})", mechanism.name()),
        }
    }
}

/// The auth core's answer to an [`AuthRequest`].
pub enum AuthReply {
    Login(Result<Login, LoginError>),
    /// The keys, and the throttle's ticket for the check: settled when
    /// the client's proof is checked (dropped if it never comes).
    ScramKeys(Result<ScramKeys, AuthError>, Option<Ticket>),
    /// `Ok(None)`: no token of the account matched; `Err`: throttled.
    Fast(Result<Option<FastLogin>, std::time::Duration>),
}

/// Runs a request against the auth core. Blocks (PBKDF2, store reads): call it
/// from `spawn_blocking` (the connection task runs token logins, which
/// only read memory, in place: see [`AuthCore::login_async`]).
pub fn perform(auth: &AuthCore, req: AuthRequest) -> AuthReply {
    match req {
        AuthRequest::Login(r) => AuthReply::Login(match auth.login(r) {
            LoginStep::Done(r) => r,
            LoginStep::CheckPassword(check) => auth.check_login_password(check),
        }),
        AuthRequest::ScramKeys {
            user,
            name,
            hash,
            peer,
        } => {
            let account = user
                .as_ref()
                .map_or_else(|| name.clone(), |u| u.to_string());
            let ticket = match auth.begin_check(peer, Some(&account)) {
                Ok(t) => t,
                Err(wait) => return AuthReply::ScramKeys(Err(AuthError::Throttled(wait)), None),
            };
            let keys = match user {
                Some(u) => auth.scram_keys(&u, hash),
                None => Ok(None),
            };
            AuthReply::ScramKeys(
                keys.map(|k| k.unwrap_or_else(|| auth.fake_scram(hash, &name))),
                Some(ticket),
            )
        }
        AuthRequest::Fast {
            user,
            agent,
            mechanism,
            proof,
            cb,
            peer,
        } => match (mechanism.binds_channel(), cb) {
            (true, None) => AuthReply::Fast(Ok(None)),
            (_, cb) => AuthReply::Fast(auth.check_fast(
                &user,
                agent.as_deref(),
                mechanism,
                cb.as_deref().unwrap_or_default(),
                &proof,
                peer,
            )),
        },
    }
}

/// What the exchange wants next.
#[derive(Debug)]
pub enum SaslOutcome {
    /// Send `<challenge/>` with this payload.
    Challenge(Vec<u8>),
    /// Check a credential, then call [`Sasl::auth_reply`].
    NeedAuth(AuthRequest),
    /// Send `<success/>` (with `data` as additional data) and restart the stream.
    Success {
        user: BareJid,
        grant: Option<Grant>,
        data: Option<Vec<u8>>,
        /// A FAST login: the installation its token is bound to, and
        /// whether the token is due for rotation.
        fast: Option<(String, bool)>,
    },
    /// Send `<failure/>` with this condition (and an optional explanation).
    Failure {
        error: SaslError,
        text: Option<&'static str>,
    },
    /// A SCRAM proof did not match: `<not-authorized/>`, and the login
    /// throttle must hear of it (the one credential check that ends here
    /// rather than in the auth core).
    ProofFailed { user: Option<BareJid> },
}

fn fail(error: SaslError) -> SaslOutcome {
    SaslOutcome::Failure { error, text: None }
}

enum State {
    Idle,
    /// `<auth/>` came without an initial response; we sent an empty challenge.
    AwaitInitial(Mechanism),
    AwaitPassword,
    AwaitToken {
        mech: Mechanism,
        user: Option<BareJid>,
    },
    AwaitScramKeys {
        scram: Box<ScramServer>,
        user: Option<BareJid>,
    },
    AwaitScramFinal {
        scram: Box<ScramServer>,
        user: Option<BareJid>,
        ticket: Option<Ticket>,
    },
    /// OAUTHBEARER sent its error challenge; the client must answer `%x01`.
    BearerFailed,
    /// A FAST proof is being checked.
    AwaitFast,
}

/// One stream's SASL negotiation.
pub struct Sasl {
    domain: String,
    state: State,
    /// Where the OAuth metadata is (RFC 8414), for OAUTHBEARER's error.
    metadata: Option<std::sync::Arc<str>>,
}

impl Sasl {
    /// A negotiation for a stream opened to `domain`.
    pub fn new(domain: &str) -> Sasl {
        Sasl {
            domain: domain.to_owned(),
            state: State::Idle,
            metadata: None,
        }
    }

    /// Names the RFC 8414 metadata document in OAUTHBEARER's error
    /// (XEP-0493: how a client with no token learns where to get one).
    pub fn with_metadata(mut self, url: Option<std::sync::Arc<str>>) -> Sasl {
        self.metadata = url;
        self
    }

    /// Whether an exchange is under way (an `<auth/>` now would be out of order).
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// `<auth mechanism=…>text</auth>`. `text` is `None` when the element was
    /// empty, i.e. the client sent no initial response.
    pub fn start(&mut self, mechanism: &str, text: Option<&str>) -> SaslOutcome {
        self.state = State::Idle;
        let Some(mech) = Mechanism::from_name(mechanism) else {
            return fail(SaslError::InvalidMechanism);
        };
        match text {
            None => {
                self.state = State::AwaitInitial(mech);
                SaslOutcome::Challenge(Vec::new())
            }
            Some(t) => match payload::decode_base64_payload(t) {
                Ok(data) => self.initial(mech, &data),
                Err(e) => fail(e),
            },
        }
    }

    /// `<response>text</response>`.
    pub fn response(&mut self, text: &str) -> SaslOutcome {
        let data = match payload::decode_base64_payload(text) {
            Ok(d) => d,
            Err(e) => {
                self.state = State::Idle;
                return fail(e);
            }
        };
        match std::mem::replace(&mut self.state, State::Idle) {
            State::AwaitInitial(mech) => self.initial(mech, &data),
            State::AwaitScramFinal {
                mut scram,
                user,
                ticket,
            } => match scram.client_final(&data) {
                Ok(server_final) => match user {
                    Some(user) => {
                        if let Some(t) = ticket {
                            t.succeeded();
                        }
                        SaslOutcome::Success {
                            user,
                            grant: None,
                            data: Some(server_final),
                            fast: None,
                        }
                    }
                    // Fake keys cannot verify; this is unreachable in practice.
                    None => fail(SaslError::NotAuthorized),
                },
                // A malformed message checked no proof (the ticket is dropped).
                Err(SaslError::MalformedRequest(m)) => fail(SaslError::MalformedRequest(m)),
                Err(_) => {
                    if let Some(t) = ticket {
                        t.failed();
                    }
                    SaslOutcome::ProofFailed { user }
                }
            },
            State::BearerFailed => fail(SaslError::NotAuthorized),
            // A response while we wait for the auth core, or with no exchange.
            _ => fail(SaslError::MalformedRequest("unexpected response")),
        }
    }

    /// `<abort/>`.
    pub fn abort(&mut self) -> SaslOutcome {
        self.state = State::Idle;
        fail(SaslError::Aborted)
    }

    fn resolve(&self, user: &str) -> Option<BareJid> {
        BareJid::from_user(user, &self.domain)
            .ok()
            .filter(|j| j.domain() == self.domain)
    }

    fn initial(&mut self, mech: Mechanism, data: &[u8]) -> SaslOutcome {
        match mech {
            Mechanism::Plain => {
                let creds = match payload::parse_plain(data) {
                    Ok(c) => c,
                    Err(e) => return fail(e),
                };
                let Some(user) = self.resolve(&creds.authcid) else {
                    return fail(SaslError::NotAuthorized);
                };
                if let Some(a) = &creds.authzid {
                    if self.resolve(a).as_ref() != Some(&user) {
                        return fail(SaslError::InvalidAuthzid);
                    }
                }
                self.state = State::AwaitPassword;
                SaslOutcome::NeedAuth(AuthRequest::Login(LoginRequest {
                    claimed: Some(user),
                    credential: Credential::Password(creds.secret),
                    peer: None,
                    protocol: Protocol::Xmpp,
                }))
            }
            Mechanism::XOauth2 => {
                let creds = match payload::parse_plain(data) {
                    Ok(c) => c,
                    Err(e) => return fail(e),
                };
                let Some(user) = self.resolve(&creds.authcid) else {
                    return token_failure();
                };
                if let Some(a) = &creds.authzid {
                    if self.resolve(a).as_ref() != Some(&user) {
                        return token_failure();
                    }
                }
                self.state = State::AwaitToken {
                    mech,
                    user: Some(user.clone()),
                };
                SaslOutcome::NeedAuth(AuthRequest::Login(LoginRequest {
                    claimed: Some(user),
                    credential: Credential::Token(creds.secret),
                    peer: None,
                    protocol: Protocol::Xmpp,
                }))
            }
            Mechanism::OauthBearer => {
                let creds = match payload::parse_oauthbearer(data) {
                    Ok(c) => c,
                    Err(e) => return fail(e),
                };
                if creds.token.is_empty() {
                    // No token yet (XEP-0493): the error says where to get one.
                    return self.bearer_error();
                }
                let user = match &creds.authzid {
                    Some(a) => match self.resolve(a) {
                        Some(u) => Some(u),
                        None => return self.bearer_error(),
                    },
                    None => None,
                };
                self.state = State::AwaitToken {
                    mech,
                    user: user.clone(),
                };
                SaslOutcome::NeedAuth(AuthRequest::Login(LoginRequest {
                    claimed: user,
                    credential: Credential::Token(creds.token),
                    peer: None,
                    protocol: Protocol::Xmpp,
                }))
            }
            Mechanism::ScramSha1 | Mechanism::ScramSha256 => {
                let hash = ScramHash::from_mechanism(mech.name()).expect("a SCRAM mechanism");
                let mut scram = Box::new(ScramServer::new(hash));
                let first = match scram.client_first(data) {
                    Ok(f) => f,
                    Err(e) => return fail(e),
                };
                let user = self.resolve(&first.username);
                if let Some(a) = &first.authzid {
                    if user.is_none() || self.resolve(a) != user {
                        return fail(SaslError::InvalidAuthzid);
                    }
                }
                let name = match &user {
                    Some(u) => u.to_string(),
                    None => first.username.clone(),
                };
                self.state = State::AwaitScramKeys {
                    scram,
                    user: user.clone(),
                };
                SaslOutcome::NeedAuth(AuthRequest::ScramKeys {
                    user,
                    name,
                    hash,
                    peer: None,
                })
            }
        }
    }

    /// RFC 7628 §3.2.2: a failed OAUTHBEARER gets an error challenge first.
    fn bearer_error(&mut self) -> SaslOutcome {
        self.state = State::BearerFailed;
        SaslOutcome::Challenge(
            payload::oauthbearer_failure_json_with(
                "invalid_token",
                Some("sasl_auth"),
                self.metadata.as_deref(),
            )
            .into_bytes(),
        )
    }

    /// The auth core's answer to the last [`SaslOutcome::NeedAuth`].
    pub fn auth_reply(&mut self, reply: AuthReply) -> SaslOutcome {
        match (std::mem::replace(&mut self.state, State::Idle), reply) {
            (State::AwaitPassword, AuthReply::Login(r)) => match r {
                Ok(l) => SaslOutcome::Success {
                    user: l.account,
                    grant: l.grant,
                    data: None,
                    fast: None,
                },
                Err(LoginError::Unavailable(_)) => fail(SaslError::TemporaryAuthFailure),
                Err(LoginError::Throttled(_)) => {
                    crate::metrics::metrics().logins_throttled.inc();
                    fail(SaslError::TemporaryAuthFailure)
                }
                Err(_) => fail(SaslError::NotAuthorized),
            },
            (State::AwaitToken { .. }, AuthReply::Login(Err(LoginError::Throttled(_)))) => {
                crate::metrics::metrics().logins_throttled.inc();
                fail(SaslError::TemporaryAuthFailure)
            }
            (State::AwaitToken { mech, user }, AuthReply::Login(r)) => {
                let ok = r.ok().and_then(|l| l.grant).filter(|g| {
                    g.owner().domain() == self.domain
                        && user.as_ref().is_none_or(|u| u == g.owner())
                });
                match (ok, mech) {
                    (Some(grant), _) => SaslOutcome::Success {
                        user: grant.owner().clone(),
                        grant: Some(grant),
                        data: None,
                        fast: None,
                    },
                    (None, Mechanism::OauthBearer) => self.bearer_error(),
                    (None, _) => token_failure(),
                }
            }
            (State::AwaitScramKeys { mut scram, user }, AuthReply::ScramKeys(r, ticket)) => match r
            {
                Ok(keys) => {
                    let first = scram.server_first(&keys);
                    self.state = State::AwaitScramFinal {
                        scram,
                        user,
                        ticket,
                    };
                    SaslOutcome::Challenge(first)
                }
                Err(_) => fail(SaslError::TemporaryAuthFailure),
            },
            (State::AwaitFast, AuthReply::Fast(r)) => match r {
                Ok(Some(login)) if login.grant.owner().domain() == self.domain => {
                    SaslOutcome::Success {
                        user: login.grant.owner().clone(),
                        data: Some(login.responder.to_vec()),
                        fast: Some((login.agent, login.rotate)),
                        grant: Some(login.grant),
                    }
                }
                Ok(_) => token_failure(),
                Err(_) => fail(SaslError::TemporaryAuthFailure),
            },
            _ => fail(SaslError::TemporaryAuthFailure),
        }
    }

    /// XEP-0484: a FAST login's initial response, `authcid NUL proof`
    /// (draft-schmaus-kitten-sasl-ht), checked in one round trip.
    pub fn start_fast(
        &mut self,
        mechanism: HtMechanism,
        text: Option<&str>,
        agent: Option<&str>,
    ) -> SaslOutcome {
        self.state = State::Idle;
        let data = match text.map(payload::decode_base64_payload) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return fail(e),
            None => {
                return fail(SaslError::MalformedRequest(
                    "FAST needs an initial response",
                ))
            }
        };
        let Some(nul) = data.iter().position(|&b| b == 0) else {
            return fail(SaslError::MalformedRequest("no NUL after the username"));
        };
        let (name, proof) = (&data[..nul], &data[nul + 1..]);
        let Some(user) = std::str::from_utf8(name).ok().and_then(|n| self.resolve(n)) else {
            return token_failure();
        };
        if proof.len() != 32 {
            return token_failure();
        }
        self.state = State::AwaitFast;
        SaslOutcome::NeedAuth(AuthRequest::Fast {
            user,
            agent: agent.map(str::to_owned),
            mechanism,
            proof: proof.to_vec(),
            cb: None,
            peer: None,
        })
    }
}

fn token_failure() -> SaslOutcome {
    SaslOutcome::Failure {
        error: SaslError::NotAuthorized,
        text: Some("invalid, expired or revoked token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::scopes::Scopes;
    use crate::auth::test_support::core;
    use crate::config::Config;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    fn drive(auth: &AuthCore, sasl: &mut Sasl, mut out: SaslOutcome) -> SaslOutcome {
        while let SaslOutcome::NeedAuth(req) = out {
            out = sasl.auth_reply(perform(auth, req));
        }
        out
    }

    fn condition(o: &SaslOutcome) -> &'static str {
        match o {
            SaslOutcome::Failure { error, .. } => error.condition(),
            // What the stream sends for it (and the throttle hears of it).
            SaslOutcome::ProofFailed { .. } => "not-authorized",
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    /// An auth core with alice (password `pw`) and a sasl_auth token of hers.
    fn alice_with_token() -> (
        AuthCore,
        tempfile::TempDir,
        BareJid,
        crate::auth::tokens::IssuedToken,
    ) {
        let (auth, d) = core(&Config::default());
        let alice = BareJid::parse("alice@localhost").unwrap();
        auth.register(&alice, "pw").unwrap();
        let t = auth
            .issue_token(&alice, Scopes::sasl_auth(), None, None)
            .unwrap();
        (auth, d, alice, t)
    }

    #[test]
    fn plain_and_x_oauth2() {
        let (auth, _d, alice, t) = alice_with_token();
        let mut s = Sasl::new("localhost");
        let o = s.start("PLAIN", Some(&b64(b"\0alice\0pw")));
        assert!(matches!(
            drive(&auth, &mut s, o),
            SaslOutcome::Success { grant: None, .. }
        ));
        let as_password = format!("\0alice\0{}", t.token);
        let o = s.start("PLAIN", Some(&b64(as_password.as_bytes())));
        assert!(matches!(
            drive(&auth, &mut s, o),
            SaslOutcome::Success { grant: Some(_), .. }
        ));
        let bob_pw = format!("\0bob\0{}", t.token);
        let o = s.start("PLAIN", Some(&b64(bob_pw.as_bytes())));
        assert_eq!(condition(&drive(&auth, &mut s, o)), "not-authorized");
        let o = s.start("PLAIN", Some(&b64(b"\0alice\0nope")));
        assert_eq!(condition(&drive(&auth, &mut s, o)), "not-authorized");
        let o = s.start("PLAIN", Some(&b64(b"bob@localhost\0alice\0pw")));
        assert_eq!(condition(&o), "invalid-authzid");
        let o = s.start("PLAIN", Some("!!"));
        assert_eq!(condition(&o), "incorrect-encoding");
        let o = s.start("DIGEST-MD5", Some("=")); // not offered
        assert_eq!(condition(&o), "invalid-mechanism");

        let payload = format!("\0alice@localhost\0{}", t.token);
        let o = s.start("X-OAUTH2", Some(&b64(payload.as_bytes())));
        match drive(&auth, &mut s, o) {
            SaslOutcome::Success { user, grant, .. } => {
                assert_eq!(user, alice);
                assert!(grant.is_some());
            }
            other => panic!("{other:?}"),
        }
        let payload = format!("bob@localhost\0alice\0{}", t.token);
        let o = s.start("X-OAUTH2", Some(&b64(payload.as_bytes())));
        assert_eq!(condition(&drive(&auth, &mut s, o)), "not-authorized");
        let payload = format!("\0bob\0{}", t.token);
        let o = s.start("X-OAUTH2", Some(&b64(payload.as_bytes())));
        assert_eq!(condition(&drive(&auth, &mut s, o)), "not-authorized");
    }

    #[test]
    fn oauthbearer_error_dance() {
        let (auth, _d, _, t) = alice_with_token();
        let mut s = Sasl::new("localhost");
        let good = format!("n,,\x01auth=Bearer {}\x01\x01", t.token);
        let o = s.start("OAUTHBEARER", Some(&b64(good.as_bytes())));
        assert!(matches!(
            drive(&auth, &mut s, o),
            SaslOutcome::Success { .. }
        ));
        let bad = "n,a=alice@localhost,\x01auth=Bearer nope\x01\x01";
        let o = s.start("OAUTHBEARER", Some(&b64(bad.as_bytes())));
        match drive(&auth, &mut s, o) {
            SaslOutcome::Challenge(json) => {
                assert!(String::from_utf8(json).unwrap().contains("invalid_token"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(condition(&s.response(&b64(b"\x01"))), "not-authorized");
    }

    #[test]
    fn scram_unknown_user_fails_like_bad_password() {
        let (auth, _d) = core(&Config::default());
        let mut s = Sasl::new("localhost");
        let o = s.start("SCRAM-SHA-256", Some(&b64(b"n,,n=nobody,r=abcdef")));
        let SaslOutcome::Challenge(first) = drive(&auth, &mut s, o) else {
            panic!("expected a challenge")
        };
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap();
        let fin = format!("c=biws,{nonce},p={}", b64(&[0u8; 32]));
        assert_eq!(
            condition(&s.response(&b64(fin.as_bytes()))),
            "not-authorized"
        );
    }

    #[test]
    fn empty_auth_gets_an_empty_challenge() {
        let (auth, _d) = core(&Config::default());
        auth.register(&BareJid::parse("alice@localhost").unwrap(), "pw")
            .unwrap();
        let mut s = Sasl::new("localhost");
        assert!(matches!(s.start("PLAIN", None), SaslOutcome::Challenge(c) if c.is_empty()));
        let o = s.response(&b64(b"\0alice\0pw"));
        assert!(matches!(
            drive(&auth, &mut s, o),
            SaslOutcome::Success { .. }
        ));
        assert_eq!(condition(&s.abort()), "aborted");
    }

    /// SCRAM proofs go through the throttle: exchanges begun at once hold
    /// places in the allowance (the keys are handed out only within it),
    /// a wrong proof counts, a right one clears the account's count.
    #[test]
    fn scram_proofs_are_throttled() {
        use crate::auth::scram::ScramHash;
        use crate::loadgen::scram::{SaltedCache, ScramClient};
        let (auth, _d) = core(&Config::default());
        auth.register(&BareJid::parse("alice@localhost").unwrap(), "pw")
            .unwrap();
        let cache = SaltedCache::default();
        // Starts an exchange; the client's final message, or the outcome
        // if the keys were refused.
        let begin = |pw: &str| -> (Sasl, Result<Vec<u8>, SaslOutcome>) {
            let mut s = Sasl::new("localhost");
            let mut c = ScramClient::new(ScramHash::Sha256, "alice", pw);
            let o = s.start("SCRAM-SHA-256", Some(&b64(&c.client_first())));
            match drive(&auth, &mut s, o) {
                SaslOutcome::Challenge(first) => {
                    let fin = c.client_final(&first, &cache).unwrap();
                    (s, Ok(fin))
                }
                other => (s, Err(other)),
            }
        };
        let mut open: Vec<(Sasl, Vec<u8>)> = (0..6)
            .map(|_| match begin("wrong") {
                (s, Ok(fin)) => (s, fin),
                (_, Err(o)) => panic!("{o:?}"),
            })
            .collect();
        let (_, refused) = begin("pw");
        assert_eq!(
            condition(&refused.unwrap_err()),
            "temporary-auth-failure",
            "six exchanges in flight: the allowance"
        );
        // An exchange abandoned counts nothing; five wrong proofs count.
        drop(open.pop());
        for (mut s, fin) in open {
            assert_eq!(condition(&s.response(&b64(&fin))), "not-authorized");
        }
        // One more try after five failures: right, and the count is cleared.
        let (mut s, fin) = begin("pw");
        assert!(matches!(
            s.response(&b64(&fin.unwrap())),
            SaslOutcome::Success { .. }
        ));
        for _ in 0..5 {
            let (mut s, fin) = begin("wrong");
            assert_eq!(
                condition(&s.response(&b64(&fin.unwrap()))),
                "not-authorized"
            );
        }
        // Past the allowance each failure blocks the account, for longer
        // each time (1, 2, 4 s): the keys are soon refused.
        let refused = (0..4).find_map(|_| match begin("wrong") {
            (mut s, Ok(fin)) => {
                assert_eq!(condition(&s.response(&b64(&fin))), "not-authorized");
                None
            }
            (_, Err(o)) => Some(o),
        });
        assert_eq!(
            condition(&refused.expect("refused")),
            "temporary-auth-failure"
        );
    }
}
