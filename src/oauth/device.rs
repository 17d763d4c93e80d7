//! RFC 8628 over HTTP: `POST /oauth/device_authorization` (the device asks),
//! `GET|POST /oauth/device` (the verification page: the user enters or
//! confirms the code, sees which client asks for which scopes, signs in and
//! allows or denies), and the `device_code` grant at the token endpoint
//! ([`device_grant`]). Codes typed on the page are throttled per address
//! like passwords: a guesser meets the same back-off.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::json;
use warp::http::{Response, StatusCode};

use super::pages::{
    csrf_ok, error_page, escape, new_csrf, page, sign_in, throttled_page, SignInFailure,
};
use super::token::token_response;
use super::{
    client_credentials, client_for, client_may, json_response, parse_form, required, OauthError,
    OauthState, DEVICE_GRANT,
};
use crate::auth::device::{normalize_user_code, show_user_code, DeviceAsk, PollError};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `POST /oauth/device_authorization` (RFC 8628 §3.1, §3.2).
pub fn authorization(
    state: &OauthState,
    authorization: Option<&str>,
    body: &[u8],
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let form = parse_form(body)?;
    let (client_id, _) = client_for(
        state,
        client_credentials(authorization, &form)?,
        peer,
        DEVICE_GRANT,
    )?;
    let scopes = state.scope(form.get("scope"))?;
    let Some(start) = state.auth.new_device(&client_id, scopes, now_ms(), peer) else {
        return Err(OauthError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "too many device authorizations pending; try again later",
        ));
    };
    let uri = format!("{}/oauth/device", state.issuer);
    // Never the user code: whoever reads it could answer for the user.
    tracing::info!(client = %client_id, "device authorization started");
    Ok(json_response(json!({
        "device_code": start.device_code,
        "user_code": start.user_code,
        "verification_uri": uri,
        "verification_uri_complete": format!("{uri}?user_code={}", start.user_code),
        "expires_in": start.expires_in,
        "interval": start.interval,
    })))
}

/// The `urn:ietf:params:oauth:grant-type:device_code` grant (RFC 8628 §3.4).
pub fn device_grant(
    state: &OauthState,
    creds: Option<super::ClientCredentials>,
    form: &HashMap<String, String>,
    peer: Option<std::net::IpAddr>,
) -> Result<Response<Bytes>, OauthError> {
    let (client_id, client) = client_for(state, creds, peer, DEVICE_GRANT)?;
    let code = required(form, "device_code")?;
    let refresh = client_may(client.grant, "refresh_token");
    match state.auth.poll_device(code, &client_id, now_ms(), refresh) {
        Ok(issued) => {
            tracing::info!(owner = %issued.owner, token_id = %issued.id, client = %client_id, "issued a token (device grant)");
            Ok(token_response(&issued))
        }
        Err(PollError::Internal) => Err(OauthError::server_error()),
        Err(e) => Err(OauthError::new(
            StatusCode::BAD_REQUEST,
            e.code(),
            e.to_string(),
        )),
    }
}

/// The page where the code is typed (no code yet, or a wrong one).
fn entry_page(error: Option<&str>, typed: &str) -> Response<Bytes> {
    let mut body =
        String::from("<p>Enter the code your device shows to connect it to your account.</p>");
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"error\">{}</p>", escape(e)));
    }
    body.push_str(&format!(
        "<form method=\"get\" action=\"/oauth/device\"><label for=\"user_code\">Code</label>\
<input type=\"text\" id=\"user_code\" name=\"user_code\" value=\"{}\" autocomplete=\"off\" required>\
<button type=\"submit\">Continue</button></form>",
        escape(typed)
    ));
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    page(status, "Connect a device", &body, None, None)
}

/// The sign-in and consent form for a pending code.
fn consent_page(
    state: &OauthState,
    code: &str,
    ask: &DeviceAsk,
    error: Option<&str>,
    username: &str,
    secure: bool,
) -> Response<Bytes> {
    let name = state
        .auth
        .client(&ask.client_id)
        .ok()
        .flatten()
        .map_or_else(|| ask.client_id.clone(), |c| c.name);
    let (csrf, cookie) = new_csrf(state, &["device", code], secure);
    let mut body = format!(
        "<p>The device showing <strong>{}</strong> — <strong>{}</strong> — asks to act for you with: <span class=\"scope\">{}</span></p>",
        escape(&show_user_code(code)),
        escape(&name),
        escape(&ask.scopes.to_string())
    );
    if let Some(e) = error {
        body.push_str(&format!("<p class=\"error\">{}</p>", escape(e)));
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/oauth/device\">\
<input type=\"hidden\" name=\"user_code\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
<label for=\"username\">Account (user@domain)</label><input type=\"text\" id=\"username\" name=\"username\" value=\"{}\" autocomplete=\"username\" required>\
<label for=\"password\">Password</label><input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\" name=\"decision\" value=\"allow\">Sign in and allow</button> \
<button type=\"submit\" name=\"decision\" value=\"deny\" formnovalidate>Deny</button></form>",
        escape(code),
        escape(&csrf),
        escape(username)
    ));
    let status = if error.is_some() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    page(status, "Connect a device", &body, Some(cookie), None)
}

/// Looks a typed code up, counting an unknown one as a failed guess from
/// `peer`. `Err` is the page to show.
#[allow(clippy::result_large_err)] // the page is the normal outcome of a miss
fn lookup(
    state: &OauthState,
    typed: &str,
    peer: Option<std::net::IpAddr>,
) -> Result<(String, DeviceAsk), Response<Bytes>> {
    let ticket = state.auth.begin_check(peer, None).map_err(throttled_page)?;
    let found = normalize_user_code(typed)
        .and_then(|c| state.auth.device_ask(&c, now_ms()).map(|a| (c, a)));
    match found {
        Some(f) => {
            drop(ticket);
            Ok(f)
        }
        None => {
            ticket.failed();
            Err(entry_page(
                Some(
                    "That code is unknown or has expired. Check it, or start again on the device.",
                ),
                typed,
            ))
        }
    }
}

/// `GET /oauth/device[?user_code=…]`.
pub fn show(
    state: &OauthState,
    query: &str,
    secure: bool,
    peer: Option<std::net::IpAddr>,
) -> Response<Bytes> {
    let Ok(params) = parse_form(query.as_bytes()) else {
        return error_page(StatusCode::BAD_REQUEST, "A request parameter is repeated.");
    };
    let Some(typed) = params.get("user_code").filter(|c| !c.trim().is_empty()) else {
        return entry_page(None, "");
    };
    match lookup(state, typed, peer) {
        Ok((code, ask)) => consent_page(state, &code, &ask, None, "", secure),
        Err(page) => page,
    }
}

/// `POST /oauth/device`: the user's answer.
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
    let typed = params.get("user_code").cloned().unwrap_or_default();
    let (code, ask) = match lookup(state, &typed, peer) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let csrf = params.get("csrf").map(String::as_str).unwrap_or("");
    if !csrf_ok(state, csrf, cookie, &["device", &code]) {
        return error_page(
            StatusCode::FORBIDDEN,
            "The form expired or did not come from this server. Go back and reload it.",
        );
    }
    let done = |title: &str, text: &str| {
        page(
            StatusCode::OK,
            title,
            &format!("<p>{}</p>", escape(text)),
            None,
            None,
        )
    };
    if params.get("decision").map(String::as_str) == Some("deny") {
        state.auth.device_answer(&code, None, now_ms());
        tracing::info!(client = %ask.client_id, "device authorization denied by the user");
        return done(
            "Device not connected",
            "You denied the request. The device will not be connected.",
        );
    }
    let username = params.get("username").cloned().unwrap_or_default();
    let password = params.get("password").cloned().unwrap_or_default();
    let jid = match sign_in(state, peer, &username, &password) {
        Ok(j) => j,
        Err(SignInFailure::Wrong) => {
            return consent_page(
                state,
                &code,
                &ask,
                Some("Wrong account or password."),
                &username,
                secure,
            )
        }
        Err(SignInFailure::Page(p)) => return *p,
    };
    if !state.auth.may_get_tokens(&jid) {
        state.auth.device_answer(&code, None, now_ms());
        return error_page(StatusCode::FORBIDDEN, "This account may not get tokens.");
    }
    if !state.auth.device_answer(&code, Some(jid.clone()), now_ms()) {
        return entry_page(
            Some("That code has expired. Start again on the device."),
            &typed,
        );
    }
    tracing::info!(owner = %jid, client = %ask.client_id, "device authorization allowed");
    done(
        "Device connected",
        &format!("The device is connected to {jid}. You may close this page."),
    )
}
