//! `POST /oauth/token` (password grant, RFC 6749 §4.3) and `POST /oauth/revoke` (RFC 7009).

use bytes::Bytes;
use serde_json::json;
use warp::http::{Response, StatusCode};

use std::collections::HashMap;

use super::{
    authenticate_client, client_credentials, client_for, client_may, json_response, parse_form,
    registered_client, required, OauthError, OauthState,
};
use crate::auth::codes::{CodeError, Exchange};
use crate::auth::{AuthError, BareJid, IssuedToken, RefreshError, Scopes, TokenSpec};
use crate::config::ClientIdCheck;
use crate::store::records::{ClientGrant, TokenGrant, TokenKind};

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
    if s.has(crate::auth::scopes::ADMIN) {
        return Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "petrel:admin is issued by `petrel ctl oauth_issue_token` only",
        ));
    }
    Ok(s)
}

/// `POST /oauth/token`: every grant, from raw form to reply.
pub fn token_endpoint(
    state: &OauthState,
    authorization: Option<&str>,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let form = parse_form(body)?;
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| OauthError::invalid_request("grant_type is missing"))?;
    let creds = client_credentials(authorization, &form)?;
    match grant_type.as_str() {
        "password" if state.legacy_grants => password_grant(state, creds, &form, peer),
        "refresh_token" => refresh_grant(state, creds, &form, peer),
        "authorization_code" => code_grant(state, creds, &form, peer),
        super::DEVICE_GRANT => super::device::device_grant(state, creds, &form, peer),
        "client_credentials" => client_credentials_grant(state, creds, &form, peer),
        other => {
            // The client is still authenticated first when it tried to:
            // a wrong secret reads the same whatever the grant.
            if creds.as_ref().is_some_and(|c| c.secret.is_some()) {
                registered_client(state, creds, peer)?;
            }
            Err(OauthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other} is not supported here"),
            ))
        }
    }
}

/// The password grant (RFC 6749 §4.3). A client registered for it
/// (`oauth_client_id_check = db`) also gets a refresh token.
fn password_grant(
    state: &OauthState,
    creds: Option<super::ClientCredentials>,
    form: &HashMap<String, String>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let refresh = state.client_id_check == ClientIdCheck::Db;
    let client = authenticate_client(state, creds, peer)?;
    let username = form
        .get("username")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| OauthError::invalid_request("username is missing"))?;
    let password = form
        .get("password")
        .ok_or_else(|| OauthError::invalid_request("password is missing"))?;
    let scopes = state.scope(form.get("scope"))?;
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
    let issued = match state.auth.issue(TokenSpec {
        refresh: refresh && client.is_some(),
        ..TokenSpec::access(&jid, scopes, ttl, client.as_deref(), TokenGrant::Password)
    }) {
        Ok(t) => t,
        // A hosted-domain check failure reads as bad credentials: the account cannot exist.
        Err(AuthError::UnknownHost(_)) => return Err(invalid_grant("wrong username or password")),
        // A client id that was removed (with `oauth_client_id_check =
        // "allow"` the id need not be registered, but one just removed
        // gets no tokens).
        Err(AuthError::NoSuchClient(_)) => {
            return Err(OauthError::invalid_client("unknown client or wrong secret"))
        }
        Err(e) => return Err(internal(e)),
    };
    tracing::info!(owner = %jid, token_id = %issued.id, client = ?client, "issued a token (password grant)");
    Ok(token_response(&issued))
}

/// The client credentials grant (RFC 6749 §4.4): a token whose principal
/// is the client itself (see [`crate::auth::AuthCore::service_principal`]),
/// with no refresh token (§4.4.3: the client asks again).
fn client_credentials_grant(
    state: &OauthState,
    creds: Option<super::ClientCredentials>,
    form: &HashMap<String, String>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let (client_id, _) = client_for(state, creds, peer, "client_credentials")?;
    // A client's own token logs in over MQTT only: `mqtt` unless asked
    // otherwise, and never what would promise XMPP.
    let scopes = match form.get("scope").filter(|s| !s.trim().is_empty()) {
        None => Scopes::parse("mqtt").expect("a known scope"),
        Some(s) => {
            let scopes = state.scope(Some(s))?;
            if scopes.has("sasl_auth") || scopes.has("xmpp") {
                return Err(OauthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a client's own token logs in over MQTT only: ask for mqtt, not sasl_auth or xmpp",
                ));
            }
            scopes
        }
    };
    let ttl = parse_ttl(form.get("ttl"))?;
    let refuse = |e: AuthError| {
        OauthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            e.to_string(),
        )
    };
    let principal = state.auth.service_principal(&client_id).map_err(refuse)?;
    if !state.auth.may_get_tokens(&principal) {
        return Err(refuse(AuthError::AccessDenied(principal.to_string())));
    }
    let spec = TokenSpec::access(
        &principal,
        scopes,
        ttl,
        Some(&client_id),
        TokenGrant::ClientCredentials,
    );
    let issued = match state.auth.issue(spec) {
        Ok(t) => t,
        Err(e @ AuthError::ServiceNameTaken(_)) => return Err(refuse(e)),
        // Removed while this request was under way.
        Err(AuthError::NoSuchClient(_)) => {
            return Err(OauthError::invalid_client("unknown client or wrong secret"))
        }
        Err(e) => return Err(internal(e)),
    };
    tracing::info!(owner = %principal, token_id = %issued.id, client = %client_id, "issued a token (client credentials)");
    Ok(token_response(&issued))
}

/// The token endpoint's success body (RFC 6749 §5.1).
pub fn token_response(issued: &IssuedToken) -> Response<Bytes> {
    let mut body = json!({
        "access_token": issued.token,
        "token_type": "bearer",
        "scope": issued.scopes.to_string(),
        "expires_in": issued.expires_in,
    });
    if let Some(r) = &issued.refresh {
        body["refresh_token"] = json!(r.token);
    }
    json_response(body)
}

/// The refresh grant (RFC 6749 §6) with rotation (RFC 9700 §4.14.2).
fn refresh_grant(
    state: &OauthState,
    creds: Option<super::ClientCredentials>,
    form: &HashMap<String, String>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let (client_id, _) = client_for(state, creds, peer, "refresh_token")?;
    let token = required(form, "refresh_token")?;
    let scopes = match form.get("scope") {
        Some(s) if !s.trim().is_empty() => Some(state.scope(Some(s))?),
        _ => None,
    };
    match state.auth.refresh(token, &client_id, scopes) {
        Ok(issued) => {
            tracing::info!(owner = %issued.owner, token_id = %issued.id, client = %client_id, "issued a token (refresh grant)");
            Ok(token_response(&issued))
        }
        Err(RefreshError::ScopeTooWide) => Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            RefreshError::ScopeTooWide.to_string(),
        )),
        Err(RefreshError::Internal) => Err(OauthError::server_error()),
        Err(e) => Err(invalid_grant(e.to_string())),
    }
}

/// The authorization code grant (RFC 6749 §4.1.3) with PKCE (RFC 7636).
fn code_grant(
    state: &OauthState,
    creds: Option<super::ClientCredentials>,
    form: &HashMap<String, String>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let (client_id, client) = client_for(state, creds, peer, "authorization_code")?;
    let code = required(form, "code")?;
    let x = Exchange {
        code,
        client_id: &client_id,
        redirect_uri: form.get("redirect_uri").map(String::as_str),
        verifier: form.get("code_verifier").map(String::as_str),
    };
    match state
        .auth
        .exchange_code(x, client_may(client.grant, "refresh_token"))
    {
        Ok(issued) => {
            tracing::info!(owner = %issued.owner, token_id = %issued.id, client = %client_id, "issued a token (authorization code)");
            Ok(token_response(&issued))
        }
        Err(e @ CodeError::MalformedVerifier) => Err(OauthError::invalid_request(e.to_string())),
        Err(CodeError::Internal) => Err(OauthError::server_error()),
        Err(e) => Err(invalid_grant(e.to_string())),
    }
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
    let creds = client_credentials(authorization, &form)?;
    // Public and confidential clients authenticate as at the token
    // endpoint; password clients (and any client under
    // `oauth_client_id_check = allow`) as for the password grant.
    let kind = creds
        .as_ref()
        .and_then(|c| state.auth.client(&c.id).ok().flatten())
        .map(|r| r.grant);
    let client = match kind {
        Some(ClientGrant::Public | ClientGrant::Confidential) => {
            Some(registered_client(state, creds, peer)?.0)
        }
        _ => authenticate_client(state, creds, peer)?,
    };
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

/// `POST /oauth/introspect` (RFC 7662), for resource servers: a client
/// with a secret (password or confidential) authenticates; the answer for
/// any token it names is `{"active": false}` unless the token is live.
pub fn introspect(
    state: &OauthState,
    authorization: Option<&str>,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let form = parse_form(body)?;
    let (client_id, client) =
        registered_client(state, client_credentials(authorization, &form)?, peer)?;
    if client.secret.is_none() {
        return Err(OauthError::invalid_client(
            "introspection is for clients that authenticate with a secret",
        ));
    }
    let token = required(&form, "token")?;
    // A refresh token is active only to the client it was issued to: a
    // resource server must never take one for a bearer token.
    let Some(t) = state
        .auth
        .introspect(token)
        .filter(|t| t.kind == TokenKind::Access || t.client_id.as_deref() == Some(&client_id))
    else {
        return Ok(json_response(json!({ "active": false })));
    };
    tracing::debug!(client = %client_id, token_id = %t.id, "introspected a token");
    let username = t.owner.split('@').next().unwrap_or_default().to_string();
    let mut body = json!({
        "active": true,
        "scope": t.scopes.to_string(),
        "username": username,
        "sub": t.owner,
        "token_type": if t.kind == TokenKind::Refresh { "refresh_token" } else { "bearer" },
        "exp": t.expires_at,
        "iat": t.issued_at,
        "iss": state.issuer,
    });
    if let Some(c) = t.client_id {
        body["client_id"] = json!(c);
    }
    Ok(json_response(body))
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
