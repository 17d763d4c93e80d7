//! The authorization endpoint: one sign-in and consent page, plain HTML
//! that works without JavaScript, for two grants:
//!
//! - `response_type=code` (RFC 6749 §4.1) for public and confidential
//!   clients, with PKCE (RFC 7636, S256 only; required of public clients):
//!   the POST redirects with `?code=…&state=…&iss=…` (RFC 9207; `iss` in
//!   every response);
//! - `response_type=token`, the implicit grant (§4.2) for implicit
//!   clients, while `oauth_legacy_grants` is on: the token in the fragment.
//!
//! The page shows the client's name and the scopes asked; the user signs in
//! and allows, or denies (`error=access_denied`). Safety rules: the client
//! must be registered for the grant and `redirect_uri` must equal its
//! registered URI exactly, or an error page is shown and nothing redirects
//! (no open redirect). The form carries an anti-CSRF value signed with the
//! server key and bound to a cookie (double submit), valid for ten minutes.

use std::collections::HashMap;

use bytes::Bytes;
use warp::http::{Response, StatusCode};

use super::pages::{csrf_ok, error_page, escape, new_csrf, page, redirect, sign_in, SignInFailure};
use super::token::parse_ttl;
use super::{parse_form, OauthState};
use crate::auth::codes::{valid_pkce_value, CodeGrant};
use crate::auth::AuthError;
use crate::config::ClientIdCheck;
use crate::store::records::ClientGrant;

/// The parameters of an authorization request that travel through the form.
#[derive(Debug, Clone, Default)]
struct AuthRequest {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    ttl: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

impl AuthRequest {
    fn from_map(m: &HashMap<String, String>) -> AuthRequest {
        AuthRequest {
            response_type: m.get("response_type").cloned().unwrap_or_default(),
            client_id: m.get("client_id").cloned().unwrap_or_default(),
            redirect_uri: m.get("redirect_uri").cloned().unwrap_or_default(),
            scope: m.get("scope").cloned().unwrap_or_default(),
            state: m.get("state").cloned(),
            ttl: m.get("ttl").cloned(),
            code_challenge: m.get("code_challenge").cloned(),
            code_challenge_method: m.get("code_challenge_method").cloned(),
        }
    }

    fn is_code(&self) -> bool {
        self.response_type == "code"
    }

    /// What the anti-CSRF value is bound to.
    fn binding(&self) -> [&str; 4] {
        [
            &self.client_id,
            &self.redirect_uri,
            &self.response_type,
            self.code_challenge.as_deref().unwrap_or(""),
        ]
    }

    /// Where the form posts: the endpoint of its grant.
    fn action(&self) -> &'static str {
        if self.is_code() {
            "/oauth/authorize"
        } else {
            "/oauth/authorization_token"
        }
    }
}

/// The client a request names, as the page needs it.
struct Client {
    name: String,
    grant: ClientGrant,
}

/// Checks client and redirect URI. `Err` is the page to show (never a redirect).
#[allow(clippy::result_large_err)] // an error page is the normal outcome here, not a rare one
fn check_client(state: &OauthState, req: &AuthRequest) -> Result<Client, Response<Bytes>> {
    if state.client_id_check == ClientIdCheck::Deny && !req.is_code() {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "This server does not issue tokens to applications (oauth_client_id_check = deny).",
        ));
    }
    if req.client_id.is_empty() {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "The request names no client_id.",
        ));
    }
    let client = match state.auth.client(&req.client_id) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "client lookup");
            return Err(error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error.",
            ));
        }
    };
    // Any client with a redirect URI: one that may not use the grant it
    // asks for is told so at its redirect URI (`unauthorized_client`).
    let Some(client) = client.filter(|c| c.grant != ClientGrant::Password) else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Unknown application: no client is registered with this client_id for this kind of request.",
        ));
    };
    let registered = client.redirect_uri.unwrap_or_default();
    if !req.redirect_uri.is_empty() && req.redirect_uri != registered {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "The redirect_uri does not match the one registered for this application.",
        ));
    }
    Ok(Client {
        name: client.name,
        grant: client.grant,
    })
}

fn form(
    state: &OauthState,
    req: &AuthRequest,
    app: &str,
    error: Option<&str>,
    username: &str,
    secure: bool,
) -> Response<Bytes> {
    let (csrf, cookie) = new_csrf(state, &req.binding(), secure);
    let hidden = |k: &str, v: &str| {
        format!(
            "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
            escape(v)
        )
    };
    let scope = if req.scope.trim().is_empty() {
        "sasl_auth"
    } else {
        req.scope.as_str()
    };
    let mut body = format!(
        "<p><strong>{}</strong> asks to act for you with: <span class=\"scope\">{}</span></p>",
        escape(app),
        escape(scope)
    );
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"error\">{}</p>", escape(e)));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"{}\">",
        req.action()
    ));
    for (k, v) in [
        ("response_type", &req.response_type),
        ("client_id", &req.client_id),
        ("redirect_uri", &req.redirect_uri),
        ("scope", &req.scope),
    ] {
        body.push_str(&hidden(k, v));
    }
    if let Some(s) = &req.state {
        body.push_str(&hidden("state", s));
    }
    if let Some(t) = &req.ttl {
        body.push_str(&hidden("ttl", t));
    }
    if let Some(c) = &req.code_challenge {
        body.push_str(&hidden("code_challenge", c));
    }
    if let Some(m) = &req.code_challenge_method {
        body.push_str(&hidden("code_challenge_method", m));
    }
    body.push_str(&hidden("csrf", &csrf));
    body.push_str(&format!(
        "<label for=\"username\">Account (user@domain)</label><input type=\"text\" id=\"username\" name=\"username\" value=\"{}\" autocomplete=\"username\" required>\
<label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\" name=\"decision\" value=\"allow\">Sign in and allow</button> \
<button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></form>",
        escape(username)
    ));
    let status = if error.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    // The browser follows the POST's redirect to the client: allowed.
    let target = origin_of(&registered_uri(state, req));
    page(status, "Sign in", &body, Some(cookie), target.as_deref())
}

/// The redirect carrying an authorization response (with `iss`, RFC
/// 9207): the query for the code grant, the fragment for the implicit
/// grant.
fn respond(
    state: &OauthState,
    req: &AuthRequest,
    uri: &str,
    params: &[(&str, &str)],
) -> Response<Bytes> {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        f.append_pair(k, v);
    }
    if let Some(s) = &req.state {
        f.append_pair("state", s);
    }
    // RFC 9207: who answers, for every response (mix-up defence).
    f.append_pair("iss", &state.issuer);
    if req.is_code() {
        let sep = if uri.contains('?') { '&' } else { '?' };
        redirect(format!("{uri}{sep}{}", f.finish()))
    } else {
        redirect(format!("{uri}#{}", f.finish()))
    }
}

/// Errors the client should hear about once the redirect URI is trusted
/// (§4.1.2.1, §4.2.2.1).
fn request_error(
    state: &OauthState,
    req: &AuthRequest,
    client: &Client,
    uri: &str,
) -> Option<Response<Bytes>> {
    let err = |code: &str, d: &str| {
        respond(
            state,
            req,
            uri,
            &[("error", code), ("error_description", d)],
        )
    };
    match req.response_type.as_str() {
        "code" => {}
        "token" if state.legacy_grants => {}
        _ => {
            return Some(err(
                "unsupported_response_type",
                if state.legacy_grants {
                    "response_type must be code (or token, for an implicit client)"
                } else {
                    "response_type must be code"
                },
            ))
        }
    }
    let fits = if req.is_code() {
        matches!(
            client.grant,
            ClientGrant::Public | ClientGrant::Confidential
        )
    } else {
        client.grant == ClientGrant::Implicit
    };
    if !fits {
        return Some(err(
            "unauthorized_client",
            "this client is not registered for this response_type",
        ));
    }
    if req.is_code() {
        match (&req.code_challenge, req.code_challenge_method.as_deref()) {
            (None, None) if client.grant == ClientGrant::Public => {
                return Some(err(
                    "invalid_request",
                    "PKCE is required of a public client: send code_challenge and code_challenge_method=S256",
                ))
            }
            (None, None) => {}
            (Some(c), Some("S256")) if valid_pkce_value(c) => {}
            (Some(_), Some("S256")) => {
                return Some(err(
                    "invalid_request",
                    "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
                ))
            }
            (None, Some(_)) => {
                return Some(err(
                    "invalid_request",
                    "code_challenge_method without code_challenge",
                ))
            }
            _ => {
                return Some(err(
                    "invalid_request",
                    "only code_challenge_method=S256 is supported",
                ))
            }
        }
    }
    if let Err(e) = state.scope(Some(&req.scope)) {
        return Some(err("invalid_scope", &e.description));
    }
    if let Err(e) = parse_ttl(req.ttl.as_ref()) {
        return Some(err("invalid_request", &e.description));
    }
    None
}

/// `GET /oauth/authorize?…` and `GET /oauth/authorization_token?…`
pub fn show(state: &OauthState, query: &str, secure: bool) -> Response<Bytes> {
    let Ok(params) = parse_form(query.as_bytes()) else {
        return error_page(StatusCode::BAD_REQUEST, "A request parameter is repeated.");
    };
    let req = AuthRequest::from_map(&params);
    let client = match check_client(state, &req) {
        Ok(c) => c,
        Err(page) => return page,
    };
    let uri = registered_uri(state, &req);
    if let Some(r) = request_error(state, &req, &client, &uri) {
        return r;
    }
    form(state, &req, &client.name, None, "", secure)
}

/// `scheme://host[:port]` of an absolute http(s) URI.
fn origin_of(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && matches!(scheme, "http" | "https")).then(|| format!("{scheme}://{host}"))
}

fn registered_uri(state: &OauthState, req: &AuthRequest) -> String {
    if !req.redirect_uri.is_empty() {
        return req.redirect_uri.clone();
    }
    state
        .auth
        .client(&req.client_id)
        .ok()
        .flatten()
        .and_then(|c| c.redirect_uri)
        .unwrap_or_default()
}

/// The POST of the page: check, then redirect with a code or a token (or
/// `access_denied`).
pub fn submit(
    state: &OauthState,
    cookie: Option<&str>,
    body: &[u8],
    secure: bool,
    peer: Option<std::net::IpAddr>,
) -> Response<Bytes> {
    let Ok(params) = parse_form(body) else {
        return error_page(StatusCode::BAD_REQUEST, "A form field is repeated.");
    };
    let req = AuthRequest::from_map(&params);
    let client = match check_client(state, &req) {
        Ok(c) => c,
        Err(page) => return page,
    };
    let uri = registered_uri(state, &req);
    if !csrf_ok(
        state,
        params.get("csrf").map(String::as_str).unwrap_or(""),
        cookie,
        &req.binding(),
    ) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The sign-in form expired or did not come from this server. Go back and reload it.",
        );
    }
    if let Some(r) = request_error(state, &req, &client, &uri) {
        return r;
    }
    if params.get("decision").map(String::as_str) == Some("deny") {
        tracing::info!(client = %req.client_id, "authorization denied by the user");
        return respond(
            state,
            &req,
            &uri,
            &[
                ("error", "access_denied"),
                ("error_description", "the user denied the request"),
            ],
        );
    }
    let username = params.get("username").cloned().unwrap_or_default();
    let password = params.get("password").cloned().unwrap_or_default();
    let scopes = state
        .scope(Some(&req.scope))
        .expect("checked by request_error");
    let ttl = parse_ttl(req.ttl.as_ref()).expect("checked by request_error");
    let bad = || {
        form(
            state,
            &req,
            &client.name,
            Some("Wrong account or password."),
            &username,
            secure,
        )
    };
    let jid = match sign_in(state, peer, &username, &password) {
        Ok(j) => j,
        Err(SignInFailure::Wrong) => return bad(),
        Err(SignInFailure::Page(p)) => return *p,
    };
    if !state.auth.may_get_tokens(&jid) {
        return respond(
            state,
            &req,
            &uri,
            &[
                ("error", "access_denied"),
                ("error_description", "this account may not get tokens"),
            ],
        );
    }
    if req.is_code() {
        let code = state.auth.new_code(CodeGrant {
            owner: jid.clone(),
            client_id: req.client_id.clone(),
            redirect_uri: Some(req.redirect_uri.clone()).filter(|u| !u.is_empty()),
            scopes,
            ttl,
            challenge: req.code_challenge.clone(),
        });
        let Some(code) = code else {
            return respond(
                state,
                &req,
                &uri,
                &[
                    ("error", "temporarily_unavailable"),
                    (
                        "error_description",
                        "too many sign-ins in progress; try again",
                    ),
                ],
            );
        };
        tracing::info!(owner = %jid, client = %req.client_id, "issued an authorization code");
        return respond(state, &req, &uri, &[("code", &code)]);
    }
    let issued = match state.auth.issue(crate::auth::TokenSpec::access(
        &jid,
        scopes,
        ttl,
        Some(&req.client_id),
        crate::store::records::TokenGrant::Implicit,
    )) {
        Ok(t) => t,
        Err(AuthError::UnknownHost(_)) => return bad(),
        Err(e) => {
            tracing::error!(error = %e, "sign-in");
            return error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.");
        }
    };
    tracing::info!(owner = %jid, token_id = %issued.id, client = %req.client_id, "issued a token (implicit grant)");
    let expires_in = issued.expires_in.to_string();
    let scope = issued.scopes.to_string();
    respond(
        state,
        &req,
        &uri,
        &[
            ("access_token", issued.token.as_str()),
            ("token_type", "bearer"),
            ("expires_in", expires_in.as_str()),
            ("scope", scope.as_str()),
        ],
    )
}
