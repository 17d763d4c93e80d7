//! OAuth 2 over HTTP (warp): the routes of RFC 6749, 7009 and 8414 that Petrel serves.
//!
//! - `POST /oauth/token` — the password, authorization code (PKCE) and
//!   refresh grants ([`token`]);
//! - `GET|POST /oauth/authorize` (and `/oauth/authorization_token`,
//!   ejabberd's path) — the sign-in and consent page of the code and
//!   implicit grants ([`authorize`]);
//! - `POST /oauth/revoke` — RFC 7009 revocation;
//! - `POST /oauth/introspect` — RFC 7662 introspection;
//! - `POST /oauth/device_authorization`, `GET|POST /oauth/device` — the
//!   RFC 8628 device grant and its verification page ([`device`]);
//! - `GET /.well-known/oauth-authorization-server` — RFC 8414 metadata.
//!
//! Handlers parse the request into plain values and call [`crate::auth::AuthCore`]
//! on a blocking thread (password hashing and store flushes block). Every error is
//! RFC 6749 §5.2 JSON with its proper status, never an empty reply.

pub mod api;
pub mod authorize;
pub mod device;
pub mod pages;
pub mod token;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::json;
use warp::http::{header, Response, StatusCode};
use warp::{Filter, Rejection};

use crate::auth::{scopes, AuthCore};
use crate::config::{ClientIdCheck, Config};
use crate::store::records::{ClientGrant, ClientRecord};

/// What the routes need: the auth core and the OAuth part of the configuration.
pub struct OauthState {
    pub auth: Arc<AuthCore>,
    pub client_id_check: ClientIdCheck,
    pub default_host: String,
    /// The RFC 8414 issuer (and base of the endpoint URLs in the metadata):
    /// `oauth_issuer`, or this listener's scheme, first host and port.
    /// Never taken from a request's Host header.
    pub issuer: String,
    /// The password and implicit grants are served (`oauth_legacy_grants`).
    pub legacy_grants: bool,
    /// `oauth_max_scope_length`.
    pub max_scope_length: usize,
}

impl OauthState {
    /// The state of a listener at `port`, TLS if `secure`.
    pub fn new(auth: Arc<AuthCore>, config: &Config, secure: bool, port: u16) -> Arc<OauthState> {
        let scheme = if secure { "https" } else { "http" };
        let issuer = config
            .oauth_issuer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}:{port}", config.default_host()));
        Arc::new(OauthState {
            auth,
            client_id_check: config.oauth_client_id_check,
            default_host: config.default_host().to_string(),
            issuer,
            legacy_grants: config.oauth_legacy_grants,
            max_scope_length: config.oauth_max_scope_length,
        })
    }

    /// A request's `scope` ([`token::parse_scope`]), at most
    /// `oauth_max_scope_length` bytes.
    pub fn scope(&self, v: Option<&String>) -> Result<crate::auth::Scopes, OauthError> {
        if v.is_some_and(|s| s.len() > self.max_scope_length) {
            return Err(OauthError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                format!("scope is over {} bytes", self.max_scope_length),
            ));
        }
        token::parse_scope(v)
    }
}

/// Largest form body accepted.
const MAX_FORM: u64 = 16 * 1024;

/// The address a request came from, put on it by the accept loop (the
/// login throttle's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIp(pub std::net::IpAddr);

/// An OAuth error reply (RFC 6749 §5.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// Seconds for a `Retry-After` header (a throttled request: 429).
    pub retry_after: Option<u64>,
}

impl OauthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        OauthError {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    /// Too many failed attempts from this address or for this account or
    /// client: 429 with `Retry-After`, and an RFC 6749 error body.
    pub fn throttled(wait: std::time::Duration) -> Self {
        let secs = wait.as_secs().max(1);
        OauthError {
            retry_after: Some(secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request",
                format!("too many failed attempts; try again in {secs} s"),
            )
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }

    pub fn server_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal error; see the server log",
        )
    }

    pub fn into_response(self) -> Response<Bytes> {
        let body = json!({"error": self.error, "error_description": self.description}).to_string();
        let mut b = Response::builder()
            .status(self.status)
            .header(header::CONTENT_TYPE, "application/json;charset=UTF-8")
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::PRAGMA, "no-cache");
        if self.status == StatusCode::UNAUTHORIZED {
            b = b.header(header::WWW_AUTHENTICATE, "Basic realm=\"petrel\"");
        }
        if let Some(s) = self.retry_after {
            b = b.header(header::RETRY_AFTER, s.to_string());
        }
        b.body(Bytes::from(body)).expect("static headers are valid")
    }
}

/// A JSON success reply with the no-store headers RFC 6749 §5.1 asks for.
pub fn json_response(value: serde_json::Value) -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json;charset=UTF-8")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::PRAGMA, "no-cache")
        .body(Bytes::from(value.to_string()))
        .expect("static headers are valid")
}

/// Parses a form body; a repeated parameter is an error (RFC 6749 §3.1).
pub fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OauthError> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(OauthError::invalid_request(format!(
                "parameter {k} is repeated"
            )));
        }
    }
    Ok(out)
}

/// Requires `application/x-www-form-urlencoded` (parameters may follow).
fn check_form_type(content_type: Option<&str>) -> Result<(), OauthError> {
    match content_type {
        Some(ct)
            if ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded") =>
        {
            Ok(())
        }
        _ => Err(OauthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        )),
    }
}

/// Client credentials as presented: HTTP Basic or form fields (never both).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub id: String,
    pub secret: Option<String>,
}

// Hand-written so that the secret never reaches a log.
impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn form_decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// RFC 6749 §2.3.1: Basic with form-encoded id and secret, or `client_id` /
/// `client_secret` in the body.
pub fn client_credentials(
    authorization: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<Option<ClientCredentials>, OauthError> {
    let basic = match authorization {
        Some(a) => {
            let (scheme, rest) = a.split_once(' ').unwrap_or((a, ""));
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OauthError::invalid_client(
                    "only HTTP Basic client authentication is supported",
                ));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OauthError::invalid_client("malformed Basic credentials"))?;
            let (id, secret) = raw
                .split_once(':')
                .ok_or_else(|| OauthError::invalid_client("malformed Basic credentials"))?;
            let id = form_decode(id)
                .ok_or_else(|| OauthError::invalid_client("malformed Basic credentials"))?;
            let secret = form_decode(secret)
                .ok_or_else(|| OauthError::invalid_client("malformed Basic credentials"))?;
            Some(ClientCredentials {
                id,
                secret: Some(secret),
            })
        }
        None => None,
    };
    let in_form = form.contains_key("client_secret");
    match (basic, form.get("client_id")) {
        (Some(_), _) if in_form => Err(OauthError::invalid_request(
            "client credentials given both in Basic and in the body",
        )),
        (Some(b), Some(id)) if *id != b.id => Err(OauthError::invalid_request(
            "client_id differs from the Basic credentials",
        )),
        (Some(b), _) => Ok(Some(b)),
        (None, Some(id)) => Ok(Some(ClientCredentials {
            id: id.clone(),
            secret: form.get("client_secret").cloned(),
        })),
        (None, None) if in_form => Err(OauthError::invalid_request(
            "client_secret without client_id",
        )),
        (None, None) => Ok(None),
    }
}

/// Applies `oauth_client_id_check` to a confidential-client request. Returns the
/// client id to record on the token (if any).
pub fn authenticate_client(
    state: &OauthState,
    creds: Option<ClientCredentials>,
    peer: Option<std::net::IpAddr>,
) -> Result<Option<String>, OauthError> {
    match state.client_id_check {
        ClientIdCheck::Deny => Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "this server issues no tokens through this endpoint (oauth_client_id_check = deny)",
        )),
        ClientIdCheck::Allow => Ok(creds.map(|c| c.id)),
        ClientIdCheck::Db => {
            let c = creds
                .ok_or_else(|| OauthError::invalid_client("client authentication is required"))?;
            let secret = c.secret.as_deref().unwrap_or("");
            let rec: Option<ClientRecord> = state
                .auth
                .authenticate_client(peer, &c.id, secret)
                .map_err(|e| match e {
                    crate::auth::AuthError::Throttled(wait) => OauthError::throttled(wait),
                    e => {
                        tracing::error!(error = %e, "client lookup failed");
                        OauthError::server_error()
                    }
                })?;
            match rec {
                Some(r) if r.grant == ClientGrant::Password => Ok(Some(c.id)),
                Some(_) => Err(OauthError::new(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    "this client may not use this grant type",
                )),
                None => Err(OauthError::invalid_client("unknown client or wrong secret")),
            }
        }
    }
}

/// The registered client a request speaks for (the grants past the
/// legacy two: code, refresh, client credentials, device), authenticated as
/// its kind requires: a client with a secret must present it (throttled
/// like a password), a public client names itself and presents none.
pub fn registered_client(
    state: &OauthState,
    creds: Option<ClientCredentials>,
    peer: Option<std::net::IpAddr>,
) -> Result<(String, ClientRecord), OauthError> {
    let c = creds.ok_or_else(|| {
        OauthError::invalid_client(
            "client_id (and, for a confidential client, its secret) is required",
        )
    })?;
    let rec = state.auth.client(&c.id).map_err(|e| {
        tracing::error!(error = %e, "client lookup failed");
        OauthError::server_error()
    })?;
    match rec {
        Some(r) if r.secret.is_some() => {
            let secret = c.secret.as_deref().ok_or_else(|| {
                OauthError::invalid_client("this client must authenticate with its secret")
            })?;
            match state.auth.authenticate_client(peer, &c.id, secret) {
                Ok(Some(r)) => Ok((c.id, r)),
                Ok(None) => Err(OauthError::invalid_client("unknown client or wrong secret")),
                Err(crate::auth::AuthError::Throttled(wait)) => Err(OauthError::throttled(wait)),
                Err(e) => {
                    tracing::error!(error = %e, "client authentication failed");
                    Err(OauthError::server_error())
                }
            }
        }
        Some(_) if c.secret.is_some() => {
            Err(OauthError::invalid_client("a public client has no secret"))
        }
        Some(r) => Ok((c.id, r)),
        None => {
            if let Some(secret) = c.secret.as_deref() {
                // As slow as a wrong secret for a known client, and counted
                // by the throttle the same way.
                if let Err(crate::auth::AuthError::Throttled(wait)) =
                    state.auth.authenticate_client(peer, &c.id, secret)
                {
                    return Err(OauthError::throttled(wait));
                }
            }
            Err(OauthError::invalid_client("unknown client or wrong secret"))
        }
    }
}

/// [`registered_client`], which must also be allowed `grant_type`.
pub fn client_for(
    state: &OauthState,
    creds: Option<ClientCredentials>,
    peer: Option<std::net::IpAddr>,
    grant_type: &str,
) -> Result<(String, ClientRecord), OauthError> {
    let (id, client) = registered_client(state, creds, peer)?;
    if !client_may(client.grant, grant_type) {
        return Err(unauthorized_client(grant_type));
    }
    Ok((id, client))
}

/// A form parameter that must be present and not empty.
pub fn required<'a>(form: &'a HashMap<String, String>, key: &str) -> Result<&'a str, OauthError> {
    form.get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| OauthError::invalid_request(format!("{key} is missing")))
}

/// Whether a client of this kind may use `grant_type` at the token endpoint.
pub fn client_may(kind: ClientGrant, grant_type: &str) -> bool {
    matches!(
        (kind, grant_type),
        (
            ClientGrant::Password,
            "password" | "refresh_token" | "client_credentials"
        ) | (
            ClientGrant::Public,
            "authorization_code" | "refresh_token" | DEVICE_GRANT
        ) | (
            ClientGrant::Confidential,
            "authorization_code" | "refresh_token" | "client_credentials"
        )
    )
}

/// RFC 8628's grant type.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

pub fn unauthorized_client(grant_type: &str) -> OauthError {
    OauthError::new(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        format!("this client may not use the {grant_type} grant"),
    )
}

/// Runs blocking auth work off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("auth work does not panic")
}

/// [`blocking`] for work that hashes secrets: it waits for a place among
/// the hashes first, as a task (see [`AuthCore::hash_slot`]).
pub async fn hashing<T: Send + 'static>(
    state: &OauthState,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let slot = state.auth.hash_slot().await;
    blocking(move || {
        let _slot = slot;
        f()
    })
    .await
}

/// An endpoint taking a form: state, Authorization header, body, peer.
type FormHandler = fn(
    &OauthState,
    Option<&str>,
    &[u8],
    Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError>;

/// A sign-in page's form: state, Cookie header, body, TLS, peer.
type PageHandler =
    fn(&OauthState, Option<&str>, &[u8], bool, Option<std::net::IpAddr>) -> Response<Bytes>;

/// Every OAuth route. `secure` says whether this listener speaks TLS (for the
/// issuer URL in the metadata and the cookie's `Secure` flag).
pub fn routes(
    state: Arc<OauthState>,
    secure: bool,
) -> impl Filter<Extract = (Response<Bytes>,), Error = Infallible> + Clone {
    let with_state = {
        let s = state.clone();
        warp::any().map(move || s.clone())
    };
    let peer = warp::ext::optional::<PeerIp>().map(|p: Option<PeerIp>| p.map(|p| p.0));
    let form_body = warp::header::optional::<String>("content-type")
        .and(warp::body::content_length_limit(MAX_FORM))
        .and(warp::body::bytes());

    // The token and revocation endpoints: a form POST, client
    // authentication (hashing: under a hash slot), a JSON answer.
    let form_endpoint = |handler: FormHandler| {
        with_state
            .clone()
            .and(peer)
            .and(warp::header::optional::<String>("authorization"))
            .and(form_body)
            .then(
                move |state: Arc<OauthState>,
                      peer: Option<std::net::IpAddr>,
                      authz: Option<String>,
                      ct: Option<String>,
                      body: Bytes| async move {
                    if let Err(e) = check_form_type(ct.as_deref()) {
                        return e.into_response();
                    }
                    let s = state.clone();
                    hashing(&s, move || handler(&state, authz.as_deref(), &body, peer))
                        .await
                        .unwrap_or_else(OauthError::into_response)
                },
            )
    };
    // The sign-in pages' forms: a form POST with the anti-CSRF cookie,
    // a password check (under a hash slot), an HTML answer.
    let page_form = |handler: PageHandler| {
        with_state
            .clone()
            .and(peer)
            .and(warp::header::optional::<String>("cookie"))
            .and(form_body)
            .then(
                move |state: Arc<OauthState>,
                      peer: Option<std::net::IpAddr>,
                      cookie: Option<String>,
                      ct: Option<String>,
                      body: Bytes| async move {
                    if check_form_type(ct.as_deref()).is_err() {
                        return pages::error_page(
                            StatusCode::BAD_REQUEST,
                            "The form must be sent as application/x-www-form-urlencoded.",
                        );
                    }
                    let s = state.clone();
                    hashing(&s, move || {
                        handler(&state, cookie.as_deref(), &body, secure, peer)
                    })
                    .await
                },
            )
    };
    let token = warp::path!("oauth" / "token")
        .and(warp::post())
        .and(form_endpoint(token::token_endpoint));
    let revoke = warp::path!("oauth" / "revoke")
        .and(warp::post())
        .and(form_endpoint(token::revoke));
    let introspect = warp::path!("oauth" / "introspect")
        .and(warp::post())
        .and(form_endpoint(token::introspect));
    let device_authorization = warp::path!("oauth" / "device_authorization")
        .and(warp::post())
        .and(form_endpoint(device::authorization));
    let device_get = warp::path!("oauth" / "device")
        .and(warp::get())
        .and(with_state.clone())
        .and(peer)
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .then(
            move |state: Arc<OauthState>, peer: Option<std::net::IpAddr>, query: String| async move {
                blocking(move || device::show(&state, &query, secure, peer)).await
            },
        );
    let device_post = warp::path!("oauth" / "device")
        .and(warp::post())
        .and(page_form(device::submit));

    // The sign-in page, at the standard path and at ejabberd's.
    let page_path = warp::path!("oauth" / "authorize")
        .or(warp::path!("oauth" / "authorization_token"))
        .unify();
    let auth_page_get = page_path
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .then(move |state: Arc<OauthState>, query: String| async move {
            // The client lookup reads the store: off the async workers.
            blocking(move || authorize::show(&state, &query, secure)).await
        });

    let auth_page_post = page_path
        .and(warp::post())
        .and(page_form(authorize::submit));

    let metadata = warp::path!(".well-known" / "oauth-authorization-server")
        .and(warp::get())
        .and(with_state)
        .map(move |state: Arc<OauthState>| metadata(&state));

    token
        .or(revoke)
        .unify()
        .or(introspect)
        .unify()
        .or(device_authorization)
        .unify()
        .or(device_get)
        .unify()
        .or(device_post)
        .unify()
        .or(auth_page_get)
        .unify()
        .or(auth_page_post)
        .unify()
        .or(metadata)
        .unify()
        .recover(|r: Rejection| async move { Ok::<_, Infallible>(rejection_reply(r)) })
        .unify()
}

/// RFC 8414 metadata describing exactly what this listener serves.
fn metadata(state: &OauthState) -> Response<Bytes> {
    let issuer = &state.issuer;
    let auth_methods: Vec<&str> = match state.client_id_check {
        ClientIdCheck::Allow => vec!["none", "client_secret_basic", "client_secret_post"],
        // Public clients name themselves without a secret.
        _ => vec!["client_secret_basic", "client_secret_post", "none"],
    };
    let mut response_types = vec!["code"];
    let mut response_modes = vec!["query"];
    let mut grants = vec![
        "authorization_code",
        "refresh_token",
        DEVICE_GRANT,
        "client_credentials",
    ];
    if state.legacy_grants {
        response_types.push("token");
        response_modes.push("fragment");
        grants.extend(["password", "implicit"]);
    }
    json_response(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "device_authorization_endpoint": format!("{issuer}/oauth/device_authorization"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": scopes::SUPPORTED,
        "response_types_supported": response_types,
        "response_modes_supported": response_modes,
        "grant_types_supported": grants,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
    }))
}

fn rejection_reply(r: Rejection) -> Response<Bytes> {
    // The body checks first: they only run once a route's method matched,
    // so a POST to a path that also has a GET route is not answered 405.
    let (status, text) = if r.is_not_found() {
        (StatusCode::NOT_FOUND, "no such endpoint".to_string())
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_FORM} bytes"),
        )
    } else if r.find::<warp::reject::LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "Content-Length is required".to_string(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this endpoint".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, format!("{r:?}"))
    };
    let error = if status == StatusCode::NOT_FOUND {
        "not_found"
    } else {
        "invalid_request"
    };
    let mut e = OauthError::new(status, error, text).into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        e.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client secret never reaches a log through `Debug`.
    #[test]
    fn client_secrets_are_not_printed() {
        let c = ClientCredentials {
            id: "app".into(),
            secret: Some("s3cr3t-value".into()),
        };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("app"), "{shown}");
    }

    #[test]
    fn forms_refuse_repeats_and_basic_decodes_form_encoding() {
        assert!(parse_form(b"a=1&a=2").is_err());
        assert_eq!(parse_form(b"a=1&b=x+y").unwrap()["b"], "x y");
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("my%20app:s%3Acret")
        );
        let c = client_credentials(Some(&basic), &HashMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(
            c,
            ClientCredentials {
                id: "my app".into(),
                secret: Some("s:cret".into())
            }
        );
        let mut f = HashMap::new();
        f.insert("client_secret".to_string(), "x".to_string());
        assert!(
            client_credentials(Some(&basic), &f).is_err(),
            "both methods at once"
        );
        assert!(client_credentials(None, &f).is_err(), "secret without id");
        assert!(client_credentials(Some("Bearer x"), &HashMap::new()).is_err());
        assert!(client_credentials(Some("Basic !!!"), &HashMap::new()).is_err());
    }

    #[test]
    fn form_type_is_checked() {
        assert!(check_form_type(Some("application/x-www-form-urlencoded; charset=UTF-8")).is_ok());
        assert!(check_form_type(Some("application/json")).is_err());
        assert!(check_form_type(None).is_err());
    }
}
