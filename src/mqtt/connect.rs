//! CONNECT and enhanced authentication: who a new MQTT connection is.
//!
//! Every credential goes to the auth core; this file only decides which check a
//! CONNECT asks for (CONVENTIONS.md, "Token login"):
//! - Authentication Method `X-OAUTH2` with the token in Authentication Data:
//!   checked at once (what ejabberd and paho-mqtt do);
//! - the method without data: AUTH 0x18 carrying the method, and the client's
//!   AUTH 0x18 carries the token;
//! - any other method: CONNACK 0x8C;
//! - no method: the password goes to the auth core's one login decision
//!   ([`crate::auth::login`]): a token if it is one, else (with a username) the
//!   account's password; the username may be left out with a token and must
//!   name the token's owner when given.

use bytes::Bytes;

use super::codec::{reason, Auth, ConnAck, Connect, Packet, Properties, Version};
use crate::auth::{AuthCore, BareJid, Credential, LoginError, LoginRequest, Protocol};

pub const X_OAUTH2: &str = "X-OAUTH2";

/// The outcome of looking at a CONNECT's credentials.
pub enum Credentials {
    /// The auth core's login decision is needed (the connection's task
    /// adds the peer's address and asks it).
    Login(LoginRequest),
    /// Send AUTH 0x18 with the method and wait for the token.
    AskToken,
    /// No credentials, and anonymous clients are allowed.
    Anonymous,
    /// Refused with this CONNACK reason code.
    Refused(u8),
}

/// The CONNACK reason code for a refused login (3.1.1 return codes follow
/// from the codec's mapping): a token that does not log in is "not
/// authorized" (CONVENTIONS.md); a wrong password "bad user name or
/// password"; a store failure "server unavailable". The log says which.
pub fn refusal_code(e: &LoginError) -> u8 {
    tracing::info!(reason = %e, "MQTT login refused");
    let m = crate::metrics::metrics();
    match e {
        LoginError::Throttled(_) => {
            m.logins_throttled.inc();
        }
        LoginError::Token(_) => m.login("mqtt", "token", false),
        _ => m.login("mqtt", "password", false),
    }
    match e {
        LoginError::Token(_) | LoginError::NoUser => reason::NOT_AUTHORIZED,
        LoginError::BadPassword => reason::BAD_USER_NAME_OR_PASSWORD,
        LoginError::Unavailable(_) => reason::SERVER_UNAVAILABLE,
        // 3.1.1 reads it as 3, "server unavailable".
        LoginError::Throttled(_) => reason::QUOTA_EXCEEDED,
    }
}

/// The DISCONNECT reason code for a session kicked from outside.
pub fn kick_code(k: crate::session::Kick) -> u8 {
    use crate::session::Kick;
    match k {
        Kick::Replaced => reason::SESSION_TAKEN_OVER,
        Kick::TokenEnded(_) | Kick::AccountChanged => reason::NOT_AUTHORIZED,
        Kick::KeepAlive => reason::KEEP_ALIVE_TIMEOUT,
        Kick::SlowConsumer => reason::QUOTA_EXCEEDED,
        Kick::Shutdown => reason::SERVER_SHUTTING_DOWN,
    }
}

/// The username a client asserted, as an account (bare JID or localpart).
fn claimed(auth: &AuthCore, c: &Connect, default_host: &str) -> Result<Option<BareJid>, u8> {
    match c.username.as_deref() {
        None | Some("") => Ok(None),
        Some(u) => auth
            .resolve_user(u, default_host)
            .map(Some)
            .map_err(|_| reason::BAD_USER_NAME_OR_PASSWORD),
    }
}

/// Checks a token for a CONNECT (or its AUTH continuation).
pub fn check_token(auth: &AuthCore, c: &Connect, default_host: &str, token: &[u8]) -> Credentials {
    let Ok(claimed) = claimed(auth, c, default_host) else {
        return Credentials::Refused(reason::NOT_AUTHORIZED);
    };
    let Ok(token) = std::str::from_utf8(token) else {
        return Credentials::Refused(reason::NOT_AUTHORIZED);
    };
    Credentials::Login(LoginRequest {
        claimed,
        credential: Credential::Token(token.to_string()),
        peer: None,
        protocol: Protocol::Mqtt,
    })
}

/// Decides what a CONNECT's credentials call for.
pub fn examine(
    auth: &AuthCore,
    c: &Connect,
    default_host: &str,
    allow_anonymous: bool,
) -> Credentials {
    if let Some(method) = c.properties.authentication_method.as_deref() {
        if method != X_OAUTH2 {
            return Credentials::Refused(reason::BAD_AUTHENTICATION_METHOD);
        }
        return match &c.properties.authentication_data {
            Some(data) => check_token(auth, c, default_host, data),
            None => Credentials::AskToken,
        };
    }
    let Some(password) = c.password.as_ref() else {
        return if allow_anonymous && c.username.is_none() {
            Credentials::Anonymous
        } else {
            Credentials::Refused(reason::NOT_AUTHORIZED)
        };
    };
    let claimed = match claimed(auth, c, default_host) {
        Ok(c) => c,
        Err(code) => return Credentials::Refused(code),
    };
    let Ok(text) = std::str::from_utf8(password) else {
        return Credentials::Refused(reason::BAD_USER_NAME_OR_PASSWORD);
    };
    Credentials::Login(LoginRequest {
        claimed,
        credential: Credential::Password(text.to_string()),
        peer: None,
        protocol: Protocol::Mqtt,
    })
}

/// AUTH 0x18 asking for the token.
pub fn continue_auth() -> Packet {
    Packet::Auth(Auth {
        reason_code: reason::CONTINUE_AUTHENTICATION,
        properties: Properties {
            authentication_method: Some(X_OAUTH2.to_string()),
            ..Properties::default()
        },
    })
}

/// The token a client's AUTH carries, if it is a proper X-OAUTH2 continuation.
pub fn token_of(a: &Auth, expected_reason: u8) -> Result<Bytes, u8> {
    if a.reason_code != expected_reason
        || a.properties.authentication_method.as_deref() != Some(X_OAUTH2)
    {
        return Err(reason::PROTOCOL_ERROR);
    }
    a.properties
        .authentication_data
        .clone()
        .ok_or(reason::NOT_AUTHORIZED)
}

/// A refusal CONNACK (v5 reason codes; the codec maps them for 3.1.1).
pub fn refusal(code: u8, _version: Version) -> Packet {
    Packet::ConnAck(ConnAck {
        session_present: false,
        reason_code: code,
        properties: Properties::default(),
    })
}
