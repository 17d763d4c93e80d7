//! `POST /oauth/token` (password grant, RFC 6749 §4.3) and `POST /oauth/revoke` (RFC 7009).

use bytes::Bytes;
use serde_json::json;
use warp::http::{Response, StatusCode};

use super::{
    authenticate_client, client_credentials, json_response, parse_form, OauthError, OauthState,
};
use crate::auth::{AuthError, BareJid, Scopes};

fn invalid_grant(d: impl Into<String>) -> OauthError {
    OauthError::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
}

fn internal(e: AuthError) -> OauthError {
    tracing::error!(error = %e, "token endpoint");
    OauthError::server_error()
}

/// Parses `ttl` (seconds); absent is `None`.
pub fn parse_ttl(v: Option<&String>) -> Result<Option<u64>, OauthError> {
    match v {
        None => Ok(None),
        Some(s) => match s.trim().parse::<u64>() {
            Ok(0) => Err(OauthError::invalid_request("ttl must be at least 1 second")),
            Ok(n) => Ok(Some(n)),
            Err(_) => Err(OauthError::invalid_request(
                "ttl must be a whole number of seconds",
            )),
        },
    }
}

/// Parses `scope`; absent or empty means `sasl_auth`.
pub fn parse_scope(v: Option<&String>) -> Result<Scopes, OauthError> {
    let s = match v {
        Some(s) if !s.trim().is_empty() => Scopes::parse(s).map_err(|e| {
            OauthError::new(StatusCode::BAD_REQUEST, "invalid_scope", e.to_string())
        })?,
        _ => Scopes::sasl_auth(),
    };
    Ok(s)
}

/// The whole password grant, from raw form to reply.
pub fn password_grant(
    state: &OauthState,
    authorization: Option<&str>,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let form = parse_form(body)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OauthError::invalid_request("grant_type is missing"))?;
    let client = authenticate_client(state, client_credentials(authorization, &form)?, peer)?;
    if grant_type != "password" {
        return Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type {grant_type} is not supported here; use password (or the implicit grant's sign-in page)"),
        ));
    }
    let username = form
        .get("username")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| OauthError::invalid_request("username is missing"))?;
    let password = form
        .get("password")
        .ok_or_else(|| OauthError::invalid_request("password is missing"))?;
    let scopes = parse_scope(form.get("scope"))?;
    let ttl = parse_ttl(form.get("ttl"))?;
    let jid = match BareJid::from_user(username, &state.default_host) {
        Ok(j) => j,
        Err(_) => return Err(invalid_grant("wrong username or password")),
    };
    match state.auth.check_password_from(peer, &jid, password) {
        Ok(()) => {}
        Err(AuthError::BadPassword) => return Err(invalid_grant("wrong username or password")),
        Err(AuthError::Throttled(wait)) => return Err(OauthError::throttled(wait)),
        Err(e) => return Err(internal(e)),
    }
    if !state.auth.may_get_tokens(&jid) {
        return Err(invalid_grant(format!(
            "the account {jid} may not get tokens (oauth_access)"
        )));
    }
    let issued = match state.auth.issue_token(&jid, scopes, ttl, client.as_deref()) {
        Ok(t) => t,
        // A hosted-domain check failure reads as bad credentials: the account cannot exist.
        Err(AuthError::UnknownHost(_)) => return Err(invalid_grant("wrong username or password")),
        Err(e) => return Err(internal(e)),
    };
    tracing::info!(owner = %jid, token_id = %issued.id, client = ?client, "issued a token (password grant)");
    Ok(json_response(json!({
        "access_token": issued.token,
        "token_type": "bearer",
        "scope": issued.scopes.to_string(),
        "expires_in": issued.expires_in,
    })))
}

/// RFC 7009: 200 whether or not the token existed; a token issued to another
/// client — or to none, by `petrel ctl`, revoked with `ctl` — is refused
/// (§2.1: the token must have been issued to the client asking).
pub fn revoke(
    state: &OauthState,
    authorization: Option<&str>,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let form = parse_form(body)?;
    let client = authenticate_client(state, client_credentials(authorization, &form)?, peer)?;
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OauthError::invalid_request("token is missing"))?;
    // §2.1: the hint may be ignored; we search all (one) token types anyway.
    if let Some(issued_to) = state.auth.token_client(token) {
        // A token issued to no client (by `ctl`) is revoked with `ctl`,
        // whoever asks here (without client authentication too).
        if issued_to.is_none() || issued_to != client {
            return Err(OauthError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                "the token was not issued to this client",
            ));
        }
    }
    match state.auth.revoke_token_text(token) {
        Ok(true) => tracing::info!(client = ?client, "revoked a token (RFC 7009)"),
        Ok(false) => {}
        Err(e) => return Err(internal(e)),
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("cache-control", "no-store")
        .body(Bytes::new())
        .expect("static headers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_scope_parsing() {
        assert_eq!(parse_ttl(None).unwrap(), None);
        assert_eq!(parse_ttl(Some(&"60".to_string())).unwrap(), Some(60));
        assert_eq!(
            parse_ttl(Some(&"soon".to_string())).unwrap_err().error,
            "invalid_request"
        );
        assert_eq!(
            parse_ttl(Some(&"0".to_string())).unwrap_err().error,
            "invalid_request"
        );
        assert_eq!(parse_scope(None).unwrap(), Scopes::sasl_auth());
        assert_eq!(
            parse_scope(Some(&"bogus".to_string())).unwrap_err().error,
            "invalid_scope"
        );
    }
}
